import Glibc
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.managers.SharedMemoryManager`: segments and
    /// shareable lists made through it are unlinked at its ``shutdown()``,
    /// and also when the process that owns it dies (even by SIGKILL).
    ///
    /// ```swift
    /// try MP.SharedMemoryManager.with { smm in                 // with SharedMemoryManager() as smm:
    ///     let shm = try smm.SharedMemory(size: 4096)          //     shm = smm.SharedMemory(size=4096)
    ///     let list = try smm.ShareableList([1, 2, 3])         //     sl = smm.ShareableList([1, 2, 3])
    /// }                                                       // both unlinked here
    /// ```
    ///
    /// A small helper process (a spawned copy of the program, as CPython's
    /// manager is) keeps the names; it unlinks them when told to, or when it
    /// sees its owner gone (through the owner's pidfd).
    public final class SharedMemoryManager: @unchecked Sendable {
        private let lock = ForkSafeLock()
        private var channel: Int32
        private let keeper: pid_t
        private let owner = Sys.getpid

        /// Python's `SharedMemoryManager()` followed by `start()`.
        public init() throws(MP.Error) {
            let (readEnd, writeEnd): (Int32, Int32)
            do { (readEnd, writeEnd) = try Sys.pipe() } catch { throw .system(error) }
            do {
                keeper = try Sys.spawn("/proc/self/exe", arguments: [Runtime.programName, SegmentKeeper.flag, "3", String(Sys.getpid)],
                                       descriptors: [readEnd])
            } catch {
                Sys.close(readEnd)
                Sys.close(writeEnd)
                throw .system(error)
            }
            Sys.close(readEnd)
            channel = writeEnd
        }

        deinit { shutdown() }

        /// `with SharedMemoryManager() as smm:`: shut down afterwards, also when `body` throws.
        public static func with<T>(_ body: (SharedMemoryManager) throws -> T) throws -> T {
            try Scoped.run(try SharedMemoryManager(), body) { $0.shutdown() }
        }

        /// Python's `smm.SharedMemory(size)`: a new segment, unlinked at shutdown.
        public func SharedMemory(size: Int) throws(MP.Error) -> MP.SharedMemory {
            let segment = try MP.SharedMemory(create: true, size: size)
            try keep(segment.name)
            return segment
        }

        /// Python's `smm.ShareableList(sequence)`: a new list, unlinked at shutdown.
        public func ShareableList(_ items: [MP.ShareableList.Item]) throws(MP.Error) -> MP.ShareableList {
            let list = try MP.ShareableList(items)
            try keep(list.name)
            return list
        }

        /// Hands the name to the keeper (and takes it off the resource tracker's list: one owner).
        private func keep(_ name: String) throws(MP.Error) {
            try lock.withLock { () throws(MP.Error) in
                defer { ResourceTracker.unregister("/" + name) }
                guard channel >= 0 else {
                    // Made before the manager was found shut down: removed
                    // here, and off the tracker's list (it is not leaked).
                    try? Sys.sharedMemoryUnlink("/" + name)
                    throw .closed("the SharedMemoryManager is shut down")
                }
                Sys.writeBestEffort(channel, "KEEP /\(name)\n")
            }
        }

        /// Python's `shutdown()`: unlinks every segment made through this
        /// manager (attached processes keep their mappings) and ends the
        /// helper. Twice is harmless.
        public func shutdown() {
            let fd = lock.withLock { () -> Int32 in
                defer { channel = -1 }
                return channel
            }
            guard fd >= 0, Sys.getpid == owner else { return }
            Sys.writeBestEffort(fd, "SHUTDOWN\n")
            Sys.close(fd)
            var status: Int32 = 0
            _ = try? Sys.waitpid(keeper, &status, 0) // EINTR is retried there
        }
    }
}

/// The helper behind ``MP/SharedMemoryManager``: reads names to keep, and
/// unlinks them at `SHUTDOWN`, at end-of-file, or when its owner is gone.
enum SegmentKeeper {
    static let flag = "--swift-multiprocessing-segment-keeper"

    static func serve(_ readEnd: Int32, owner: pid_t) -> Never {
        Sys.closeAll(except: readEnd)
        Sys.ignore(signal: MP.Signal.interrupt.rawValue)
        Sys.ignore(signal: MP.Signal.terminate.rawValue)
        var kept: Set<String> = []
        let ownerFd = (try? Sys.pidfdOpen(owner)) ?? -1
        var input = PipeLines(readEnd)
        // Once the owner is gone, what it wrote is still read (its last
        // names may arrive after its death), without waiting for more.
        var ownerGone = false
        serving: while true {
            if ownerFd < 0 && Sys.getppid != owner { ownerGone = true }
            let watched = [readEnd] + (ownerFd >= 0 && !ownerGone ? [ownerFd] : [])
            let ready = (try? Sys.pollReadable(watched, until: ownerGone ? Deadline.after(validSeconds: 0) : nil)) ?? []
            if ready.contains(readEnd) {
                guard let lines = input.next() else { break }
                for line in lines {
                    if line == "SHUTDOWN" { break serving }
                    if line.hasPrefix("KEEP ") { kept.insert(String(line.dropFirst(5))) }
                }
            } else if ownerGone {
                break
            } else if ready.contains(ownerFd) {
                ownerGone = true
            }
        }
        for path in kept { try? Sys.sharedMemoryUnlink(path) }
        Sys.exitImmediately(0)
    }
}
