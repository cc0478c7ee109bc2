#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import SystemPackage

/// CPython's `forkserver`: a fresh copy of the program, started on first
/// use, that forks every child from a process which has only ever had one
/// thread, so no lock can be held by another thread at the fork.
///
/// The server is spawned with a flag its `.init_array` hook sees before
/// `main` runs (see ``EntryHook``): it never runs `main`, never starts a
/// thread, and keeps a small address space, which keeps its forks cheap. Each
/// child is created with `clone3(CLONE_PARENT)`: it is this process's own
/// child (pidfds, reaping, exit codes, `PR_SET_PDEATHSIG` work unchanged).
/// The control channel is an inherited socket pair; the server ends when this
/// process closes its end (its exit) and dies with it (`PR_SET_PDEATHSIG`).
enum ForkServer {
    static let flag = "--swift-multiprocessing-forkserver"
    static let request: [UInt8] = Swift.Array("MPFS".utf8)

    /// The server's loop, on the descriptor `socket`. Never returns.
    static func serve(socket: Int32, parent: pid_t, boundNow: Bool) -> Never {
        if !Sys.dieWithParent(parent) { Sys.exitImmediately(0) }
        // The loader bound every symbol at start (LD_BIND_NOW): a child's
        // first call of a function the server never called would otherwise
        // search every library, in every child. Not passed on to what the
        // children start.
        if boundNow { unsetenv("LD_BIND_NOW") }
        let prepared = cmp_forkserver_prepare()
        warmUp()
        reply(socket, prepared == 0 ? Sys.getpid : -prepared)
        if prepared != 0 { Sys.exitImmediately(0) }
        while true {
            let message: (bytes: [UInt8], descriptors: [Int32])
            do {
                message = try Sys.receive(socket, capacity: 16, maxDescriptors: Int(CMP_MAX_PASSED_DESCRIPTORS))
            } catch {
                Sys.exitImmediately(0)
            }
            if message.bytes.isEmpty { Sys.exitImmediately(0) } // the client is gone
            guard message.bytes == request, !message.descriptors.isEmpty else {
                for fd in message.descriptors { Sys.close(fd) }
                reply(socket, -EPROTO)
                continue
            }
            let pid = cmp_forkserver_clone()
            if pid == 0 {
                Sys.close(socket)
                LaunchedChild.run(descriptors: message.descriptors)
            }
            let error = errno
            for fd in message.descriptors { Sys.close(fd) }
            reply(socket, pid > 0 ? pid : -error)
        }
    }

    /// Done once here, inherited by every child instead of redone in each:
    /// the task registry, the build id, the child executors' lookups, the
    /// runtime's answers for decoding a launch message and each task type.
    private static func warmUp() {
        let registry = TaskRegistry.shared
        _ = BuildIdentity.current
        _ = ChildExecutors.isAvailable
        ChildExecutors.prepare
        _ = Runtime.shared
        let sample = LaunchInfo(build: "", task: "", arguments: [0], processName: "", identity: [1],
                                daemon: false, parentPid: 0, parentName: "", lineBuffered: false, authkey: [1])
        _ = try? WireFormat.decode(LaunchInfo.self, from: WireFormat.encode(sample))
        for task in registry.byName.values { warm(task) }
    }

    private static func warm<T: MP.NamedTask>(_ task: T.Type) { WireFormat.warmCaches(for: task) }

    private static func reply(_ socket: Int32, _ value: Int32) {
        var value = value
        let bytes = withUnsafeBytes(of: &value) { Swift.Array($0) }
        try? Sys.send(socket, bytes, descriptors: [])
    }
}

/// This process's side: the server, started on first use, restarted if it died.
final class ForkServerClient: @unchecked Sendable {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var current: ForkServerClient?
    private static let forgetInChild: Void = AfterFork.register {
        // A forked child must not share its parent's server: the server's
        // children would be the parent's. It starts its own on first use.
        if let inherited = ForkServerClient.current { Sys.close(inherited.socket) }
        ForkServerClient.current = nil
    }

    let socket: Int32
    let pid: pid_t

    private init(socket: Int32, pid: pid_t) {
        self.socket = socket
        self.pid = pid
    }

    /// How long a new server may take to say it is ready.
    static let startTimeout = 60.0

    /// Starts a child from `descriptors` (the launch message first); returns its pid.
    static func launch(_ descriptors: [Int32]) throws(MP.TaskError) -> pid_t {
        _ = forgetInChild
        _ = shutDownAtExit
        return try lock.withLock { () throws(MP.TaskError) -> pid_t in
            for attempt in 0..<2 {
                let server: ForkServerClient
                if let running = current { server = running } else { server = try start() }
                current = server
                switch server.request(descriptors) {
                case .started(let pid): return pid
                case .failed(let error):
                    throw .startFailed(method: .forkserver, reason: MP.OSError("clone3", errno: .init(rawValue: error)).description)
                case .gone: break
                }
                // The server died (killed, or crashed): reap it, start another, once.
                server.retire()
                current = nil
                if attempt == 1 { break }
            }
            throw .startFailed(method: .forkserver, reason: "the forkserver died twice in a row")
        }
    }

    /// At this process's normal exit (after its children were ended): the
    /// server sees end-of-file, exits, and is reaped here, so it never
    /// outlives its client as an orphan. (A child's exit calls ``shutDown()``
    /// itself: `Runtime.exitProcess`.)
    private static let shutDownAtExit: Void = Runtime.shared.atExit { ForkServerClient.shutDown() }

    /// Whether this process ever started a server: a constant-initialised
    /// flag, so a forked child that never did touches nothing else at exit.
    nonisolated(unsafe) private static var everStarted = false

    /// Closes this process's channel to its server, if it started one, and reaps it.
    static func shutDown() {
        guard everStarted else { return }
        let server = lock.withLock { () -> ForkServerClient? in
            defer { current = nil }
            return current
        }
        guard let server else { return }
        Sys.close(server.socket)
        var status: Int32 = 0
        _ = try? Sys.waitpid(server.pid, &status, 0)
    }

    /// The server's pid, for tests (nil before the first forkserver start).
    static var serverPid: pid_t? { lock.withLock { current?.pid } }

    private static func start() throws(MP.TaskError) -> ForkServerClient {
        let ours: Int32, theirs: Int32
        do { (ours, theirs) = try Sys.socketPair(SOCK_SEQPACKET) } catch { throw .startFailed(method: .forkserver, reason: error.description) }
        defer { Sys.close(theirs) }
        let bindNow = getenv("LD_BIND_NOW") == nil
        let arguments = [Spawner.programName, ForkServer.flag, String(Sys.getpid), bindNow ? "bound" : "inherited"]
        let pid: pid_t
        do {
            // Spawned by the thread that lives as long as the process: its
            // children (ours, by CLONE_PARENT) take it as their parent thread,
            // which is what PR_SET_PDEATHSIG follows.
            pid = try ForkerThread.shared().perform { () throws(MP.OSError) -> pid_t in
                try Sys.spawn("/proc/self/exe", arguments: arguments, descriptors: [theirs],
                              addedEnvironment: bindNow ? ["LD_BIND_NOW=1"] : [])
            }
        } catch {
            Sys.close(ours)
            throw .startFailed(method: .forkserver, reason: error.description)
        }
        everStarted = true
        let server = ForkServerClient(socket: ours, pid: pid)
        let ready: Bool
        do { ready = try Sys.pollReadable(ours, until: .after(validSeconds: startTimeout)) } catch { ready = false }
        guard ready, let status = server.readReply() else {
            server.retire()
            throw .startFailed(method: .forkserver, reason: "the server did not start within \(startTimeout) s")
        }
        guard status > 0 else {
            server.retire()
            let reason = status == -ENOTSUP
                ? "this C library's thread descriptor could not be repaired after clone3 (glibc is required)"
                : "errno \(-status) while preparing"
            throw .startFailed(method: .forkserver, reason: reason)
        }
        return server
    }

    private enum Outcome { case started(pid_t), failed(Int32), gone }

    /// One request and its reply.
    private func request(_ descriptors: [Int32]) -> Outcome {
        do { try Sys.send(socket, ForkServer.request, descriptors: descriptors) } catch { return .gone }
        guard let value = readReply() else { return .gone }
        return value > 0 ? .started(value) : .failed(-value)
    }

    private func readReply() -> Int32? {
        guard let message = try? Sys.receive(socket, capacity: 4, maxDescriptors: 0), message.bytes.count == 4 else { return nil }
        return message.bytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
    }

    /// Ends and reaps a server that failed.
    private func retire() {
        Sys.close(socket)
        try? Sys.kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = try? Sys.waitpid(pid, &status, 0)
    }
}
