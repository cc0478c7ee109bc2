import Glibc
import MultiprocessingPlatform

/// CPython's resource tracker: a helper process that unlinks the named
/// segments this program created and did not unlink, once every process of
/// the program has exited (it sees end-of-file on its pipe, whose write end
/// every process holds).
///
/// Like CPython's, it is a fresh copy of the program (spawned, run from the
/// library's `.init_array` hook, see ``EntryHook``), not a fork: the first
/// segment may be created while other threads hold locks a fork would copy.
enum ResourceTracker {
    static let flag = "--swift-multiprocessing-resource-tracker"

    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var writeEnd: Int32 = -1
    nonisolated(unsafe) private static var trackerPid: pid_t = 0
    nonisolated(unsafe) private static var startedBy: pid_t = 0

    static var isActive: Bool { writeEnd >= 0 }

    static func register(_ path: String) { send("REGISTER \(path)\n") }
    static func unregister(_ path: String) { send("UNREGISTER \(path)\n") }

    /// A file to remove if the program ends without removing it (a manager's
    /// socket file, when its owner was SIGKILLed and took the manager along).
    static func registerFile(_ path: String) { register(filePrefix + path) }
    static func unregisterFile(_ path: String) { unregister(filePrefix + path) }
    static let filePrefix = "file:"

    private static func send(_ line: String) {
        lock.withLock {
            if writeEnd < 0 { start() }
            if writeEnd >= 0 { Sys.writeBestEffort(writeEnd, line) } // lines are short: one atomic pipe write
        }
    }

    /// The tracker's pid (0 before one was started), for tests.
    static var pid: pid_t { lock.withLock { trackerPid } }

    /// Forgets the inherited tracker so the next registration starts this
    /// process's own (a test that plays a separate program).
    static func detachForTesting() {
        lock.withLock {
            if writeEnd >= 0 { Sys.close(writeEnd) }
            writeEnd = -1
            trackerPid = 0
        }
    }

    private static func start() {
        guard let (readEnd, write) = try? Sys.pipe() else { return }
        let arguments = [Runtime.programName, flag, "3"]
        guard let pid = try? Sys.spawn("/proc/self/exe", arguments: arguments, descriptors: [readEnd],
                                       addedEnvironment: LibraryLog.environmentForChildren) else {
            Sys.close(readEnd)
            Sys.close(write)
            return
        }
        Sys.close(readEnd)
        writeEnd = write
        trackerPid = pid
        startedBy = Sys.getpid
        Sys.setInheritable(write) // children inherit it: their exit is part of "every process gone"
        Runtime.shared.atExit { ResourceTracker.finish() }
    }

    /// At the starting process's exit, after its children were ended: close
    /// our end and reap the tracker if it is done (it unlinks what is left).
    static func finish() {
        let (fd, pid, owner) = lock.withLock { (writeEnd, trackerPid, startedBy) }
        guard fd >= 0, owner == Sys.getpid else { return }
        Sys.close(fd)
        lock.withLock { writeEnd = -1 }
        if let pidfd = try? Sys.pidfdOpen(pid) {
            _ = try? Sys.pollReadable(pidfd, until: Deadline.after(validSeconds: 2))
            Sys.close(pidfd)
        }
        var status: Int32 = 0
        _ = try? Sys.waitpid(pid, &status, WNOHANG)
    }

    /// The tracker's life: read registrations until end-of-file, then unlink the rest.
    static func serve(_ readEnd: Int32) -> Never {
        Sys.closeAll(except: readEnd)
        Sys.ignore(signal: MP.Signal.interrupt.rawValue)
        Sys.ignore(signal: MP.Signal.terminate.rawValue)
        LibraryLog.adopt(Sys.environment(LibraryLog.environment))
        var registered: [String: Int] = [:]
        var input = PipeLines(readEnd)
        while let lines = input.next() {
            for line in lines {
                if line.hasPrefix("REGISTER ") {
                    registered[String(line.dropFirst(9)), default: 0] += 1
                } else if line.hasPrefix("UNREGISTER ") {
                    registered[String(line.dropFirst(11))] = nil
                }
            }
        }
        let files = registered.keys.filter { $0.hasPrefix(filePrefix) }
        for entry in files {
            // A socket file whose server died with its owner: nothing to report, only to remove.
            let path = String(entry.dropFirst(filePrefix.count))
            Sys.unlink(path)
            LibraryLog.log(.info, "resource tracker removed the file \(path)")
        }
        let segments = registered.keys.filter { !$0.hasPrefix(filePrefix) }
        if !segments.isEmpty {
            Sys.writeBestEffort(STDERR_FILENO, "resource tracker: \(segments.count) leaked shared memory segment(s) to clean up at shutdown\n")
            for path in segments {
                try? Sys.sharedMemoryUnlink(path)
                LibraryLog.log(.warning, "resource tracker unlinked the leaked shared memory segment \(path)")
            }
        }
        Sys.exitImmediately(0)
    }
}
