#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import _CMultiprocessingSync
import SystemPackage

extension MP {
    /// Why a shared-memory operation failed.
    public enum SharedMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
        case invalidName(String)
        case invalidSize(Int)
        case alreadyExists(String)
        case notFound(String)
        case closed(String)
        case system(OSError)

        public var description: String {
            switch self {
            case .invalidName(let name): return "invalid shared memory name '\(name)': 1 to 200 characters, no '/' after the first"
            case .invalidSize(let size): return "'size' must be a positive number (got \(size))"
            case .alreadyExists(let name): return "shared memory '\(name)' already exists"
            case .notFound(let name): return "no shared memory named '\(name)'"
            case .closed(let name): return "shared memory '\(name)' is closed"
            case .system(let error): return error.description
            }
        }
    }

    /// Python's `multiprocessing.shared_memory.SharedMemory`: a named segment
    /// (in `/dev/shm`) that an unrelated process can attach by name.
    ///
    /// Created owner-only (mode 0600) unless `permissions` says otherwise. The
    /// creator registers it with the resource tracker, a helper process that
    /// unlinks segments still registered when every process of this program
    /// is gone (a creator killed before `unlink()` leaks nothing).
    /// ```swift
    /// let shm = try MP.SharedMemory(create: true, size: 4096)
    /// shm.buffer.storeBytes(of: 42, as: Int.self)
    /// let other = try MP.SharedMemory(name: shm.name)   // anywhere, by name
    /// ```
    public final class SharedMemory: @unchecked Sendable {
        /// The name to attach with (without the leading `/`, like Python's).
        public let name: String
        /// The size in bytes.
        public let size: Int
        private var mapping: UnsafeMutableRawBufferPointer?

        /// - Parameters:
        ///   - name: the segment's name; with `create` and no name, a unique one is chosen.
        ///   - create: create a new segment (fails if the name exists) rather than attach.
        ///   - size: the size when creating.
        ///   - permissions: the mode when creating (owner-only by default).
        public init(name: String? = nil, create: Bool = false, size: Int = 0, permissions: mode_t = 0o600) throws(SharedMemoryError) {
            let chosen = name ?? (create ? Self.uniqueName() : "")
            guard Self.isValid(chosen) else { throw .invalidName(chosen) }
            if create && size <= 0 { throw .invalidSize(size) }
            let path = "/" + chosen
            let flags = create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR
            let fd = shm_open(path, flags, permissions)
            if fd < 0 {
                switch errno {
                case EEXIST: throw .alreadyExists(chosen)
                case ENOENT: throw .notFound(chosen)
                case let code: throw .system(OSError("shm_open", errno: Errno(rawValue: code)))
                }
            }
            defer { Sys.close(fd) }
            var length = size
            if create {
                if ftruncate(fd, off_t(size)) != 0 {
                    let code = errno
                    shm_unlink(path)
                    throw .system(OSError("ftruncate", errno: Errno(rawValue: code)))
                }
            } else {
                var info = stat()
                guard fstat(fd, &info) == 0 else { throw .system(OSError("fstat", errno: Errno(rawValue: errno))) }
                length = Int(info.st_size)
            }
            let address = length == 0 ? nil : mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if address == MAP_FAILED {
                let code = errno
                if create { shm_unlink(path) }
                throw .system(OSError("mmap", errno: Errno(rawValue: code)))
            }
            self.name = chosen
            self.size = length
            mapping = UnsafeMutableRawBufferPointer(start: address, count: length)
            if create { ResourceTracker.register(path) }
        }

        deinit { close() }

        /// Python's `buf`: the segment's bytes in this process (empty once closed).
        public var buffer: UnsafeMutableRawBufferPointer { mapping ?? UnsafeMutableRawBufferPointer(start: nil, count: 0) }

        /// Python's `close()`: unmaps the segment from this process; it goes on existing.
        public func close() {
            if let mapping, let base = mapping.baseAddress { munmap(base, mapping.count) }
            mapping = nil
        }

        /// Python's `unlink()`: removes the name; attached processes keep their mapping.
        public func unlink() throws(SharedMemoryError) {
            if shm_unlink("/" + name) != 0 {
                if errno == ENOENT { throw .notFound(name) }
                throw .system(OSError("shm_unlink", errno: Errno(rawValue: errno)))
            }
            ResourceTracker.unregister("/" + name)
        }

        static func isValid(_ name: String) -> Bool {
            !name.isEmpty && name.utf8.count <= 200 && !name.contains("/") && !name.utf8.contains(0) && name != "." && name != ".."
        }

        private static func uniqueName() -> String {
            "mp_\(Sys.getpid)_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        }
    }
}

/// CPython's resource tracker: a helper process that unlinks the named
/// segments this program created and did not unlink, once every process of
/// the program has exited (it sees end-of-file on its pipe, whose write end
/// every process holds).
enum ResourceTracker {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var writeEnd: Int32 = -1
    nonisolated(unsafe) private static var trackerPid: pid_t = 0
    nonisolated(unsafe) private static var startedBy: pid_t = 0

    static var isActive: Bool { writeEnd >= 0 }

    static func register(_ path: String) { send("REGISTER \(path)\n") }
    static func unregister(_ path: String) { send("UNREGISTER \(path)\n") }

    private static func send(_ line: String) {
        lock.withLock {
            if writeEnd < 0 { start() }
            if writeEnd >= 0 { Sys.writeAll(writeEnd, line) } // lines are short: one atomic pipe write
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

    /// In a forked child: the inherited lock may be held by a dead thread.

    private static func start() {
        guard let (readEnd, write) = try? Sys.pipe() else { return }
        guard let pid = try? Sys.fork() else {
            Sys.close(readEnd)
            Sys.close(write)
            return
        }
        if pid == 0 { serve(readEnd) }
        Sys.close(readEnd)
        writeEnd = write
        trackerPid = pid
        startedBy = Sys.getpid
        _ = fcntl(write, F_SETFD, 0) // children inherit it: their exit is part of "every process gone"
        Runtime.shared.installExitHandling()
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
        _ = Glibc.waitpid(pid, &status, WNOHANG)
    }

    /// The tracker's life: read registrations until end-of-file, then unlink the rest.
    private static func serve(_ readEnd: Int32) -> Never {
        cmp_close_all_except(readEnd)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        var registered: [String: Int] = [:]
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(readEnd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if line.hasPrefix("REGISTER ") {
                    registered[String(line.dropFirst(9)), default: 0] += 1
                } else if line.hasPrefix("UNREGISTER ") {
                    registered[String(line.dropFirst(11))] = nil
                }
            }
        }
        if !registered.isEmpty {
            Sys.writeAll(STDERR_FILENO, "resource tracker: \(registered.count) leaked shared memory segment(s) to clean up at shutdown\n")
            for path in registered.keys { shm_unlink(path) }
        }
        _exit(0)
    }
}
