import Glibc
import _CMultiprocessingRuntime
import SystemPackage
import MultiprocessingPlatform

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
    /// `warmUpAbove` is the layers above this one's share of ``warmUp()``
    /// (the library's own servers' first steps), run once before the first fork.
    static func serve(socket: Int32, parent: pid_t, boundNow: Bool, warmUpAbove: () -> Void) -> Never {
        if !Sys.dieWithParent(parent) { Sys.exitImmediately(0) }
        // The loader bound every symbol at start (LD_BIND_NOW): a child's
        // first call of a function the server never called would otherwise
        // search every library, in every child. Not passed on to what the
        // children start.
        if boundNow { Sys.unsetEnvironment("LD_BIND_NOW") }
        // A test's fault injection: die between a child's clone and the
        // reply, the window in which a client could start a task twice.
        let dieAfterClone = Sys.environment(faultVariable) == "die-after-clone"
        if dieAfterClone { Sys.unsetEnvironment(faultVariable) }
        let prepared: Int32
        do { try Sys.prepareCloneIntoParent(); prepared = 0 } catch { prepared = error.errno.rawValue }
        warmUp()
        warmUpAbove()
        reply(socket, prepared == 0 ? Sys.getpid : -prepared)
        if prepared != 0 { Sys.exitImmediately(0) }
        while true {
            let message: (bytes: [UInt8], descriptors: [Int32])
            do {
                guard let received = try Sys.receiveMessage(socket, capacity: 16, maxDescriptors: Sys.maxPassedDescriptors) else { continue }
                message = received
            } catch {
                Sys.exitImmediately(0)
            }
            if message.bytes.isEmpty { Sys.exitImmediately(0) } // the client is gone
            // [the birth note, the launch message, the task's objects...]
            guard message.bytes == request, message.descriptors.count >= 2 else {
                for fd in message.descriptors { Sys.close(fd) }
                reply(socket, -EPROTO)
                continue
            }
            let pid: pid_t
            do { pid = try Sys.cloneIntoParent() } catch {
                for fd in message.descriptors { Sys.close(fd) }
                reply(socket, -error.errno.rawValue)
                continue
            }
            if pid == 0 {
                Sys.close(socket)
                // The child tells the client its pid before it runs anything:
                // if this server dies before its reply, the client still
                // learns of the child (its own, by CLONE_PARENT) and adopts
                // it instead of launching the task again.
                // (A socket, sent to without SIGPIPE: the client may have
                // closed its end already, having had the server's reply.)
                let note = message.descriptors[0]
                var me = Sys.getpid
                try? Sys.sendAll(note, withUnsafeBytes(of: &me) { Swift.Array($0) })
                Sys.close(note)
                LaunchedChild.run(descriptors: Swift.Array(message.descriptors.dropFirst()))
            }
            if dieAfterClone { try? Sys.kill(Sys.getpid, SIGKILL) }
            for fd in message.descriptors { Sys.close(fd) }
            reply(socket, pid)
        }
    }

    /// The environment variable of the tests' fault injection (see ``serve(socket:parent:boundNow:)``).
    static let faultVariable = "SWIFT_MULTIPROCESSING_FORKSERVER_FAULT"

    /// Done once here, inherited by every child instead of redone in each:
    /// the task registry, the build id, the child executors' lookups, the
    /// runtime's answers for each task type. (A launch message asks the
    /// runtime nothing: it is read field by field.)
    private static func warmUp() {
        let registry = TaskRegistry.shared
        _ = BuildIdentity.current
        _ = ChildExecutors.isAvailable
        ChildExecutors.prepare
        _ = Runtime.shared
        for task in registry.byName.values { warm(task) }
    }

    private static func warm<T: MP.NamedTask>(_ task: T.Type) { WireFormat.warmCaches(for: task) }

    private static func reply(_ socket: Int32, _ value: Int32) {
        var value = value
        let bytes = withUnsafeBytes(of: &value) { Swift.Array($0) }
        try? Sys.sendAll(socket, bytes)
    }
}

/// This process's side: the server, started on first use, restarted if it died.
///
/// A server that dies is noticed at once (its pidfd becomes readable while a
/// start waits for it, and it is reaped from the process's descriptor
/// watcher when it dies between starts, so it never stays a zombie). A start
/// whose server died is retried once on a fresh server; a child the dead
/// server had already cloned is adopted through its birth note, so a task
/// starts at most once per start.
final class ForkServerClient: @unchecked Sendable {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var current: ForkServerClient?
    private static let forgetInChild: Void = AfterFork.register {
        // A forked child must not share its parent's server: the server's
        // children would be the parent's. It starts its own on first use.
        if let inherited = ForkServerClient.current {
            Sys.close(inherited.socket)
            Sys.close(inherited.pidfd)
        }
        ForkServerClient.current = nil
    }

    let socket: Int32
    let pid: pid_t
    /// Readable when the server has ended: every wait for it watches this too.
    let pidfd: Int32
    private let reapLock = ForkSafeLock()
    /// The server's wait status, once it was reaped (it is waited for once, here).
    private var endStatus: Int32?

    private init(socket: Int32, pid: pid_t, pidfd: Int32) {
        self.socket = socket
        self.pid = pid
        self.pidfd = pidfd
    }

    /// How long a new server may take to say it is ready.
    static let startTimeout = 60.0
    /// How long a start waits for the birth note of a child its dead server may have cloned.
    static let birthNoteTimeout = 5.0

    /// Tests only: called with a new server's pid right after it is spawned,
    /// before the start waits for it to be ready.
    nonisolated(unsafe) static var afterSpawnForTesting: (@Sendable (pid_t) -> Void)?

    /// Starts a child from `descriptors` (the launch message first); returns its pid.
    static func launch(_ descriptors: [Int32]) throws(MP.Error) -> pid_t {
        _ = forgetInChild
        _ = shutDownAtExit
        return try lock.withLock { () throws(MP.Error) -> pid_t in
            var deaths: [String] = []
            for _ in 0..<2 {
                let server: ForkServerClient
                if let running = current {
                    server = running
                } else {
                    switch try start() {
                    case .ready(let started): server = started
                    case .died(let how):
                        deaths.append("\(how) before it was ready")
                        continue
                    }
                    current = server
                }
                switch server.request(descriptors) {
                case .started(let pid): return pid
                case .failed(let error):
                    throw .startFailed(method: MP.StartMethod.forkserver, reason: MP.OSError("clone3", errno: .init(rawValue: error)).description)
                case .gone(let how, let adopted):
                    current = nil
                    if let adopted {
                        LibraryLog.log(.info, "forkserver \(how) after it started pid \(adopted); that child is adopted")
                        return adopted
                    }
                    deaths.append("\(how) during a start")
                }
            }
            throw .startFailed(method: MP.StartMethod.forkserver, reason: "the forkserver died twice in a row: " + deaths.joined(separator: "; "))
        }
    }

    /// At this process's normal exit (after its children were ended): the
    /// server sees end-of-file, exits, and is reaped here, so it never
    /// outlives its client as an orphan. (A child's exit calls ``shutDown()``
    /// itself: `Runtime.exitProcess`.)
    private static let shutDownAtExit: Void = {
        Runtime.shared.atExit { ForkServerClient.shutDown() }
        Runtime.shared.atChildExit { ForkServerClient.shutDown() }
    }()

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
        _ = server.reap(blocking: true)
        Sys.close(server.pidfd)
    }

    /// The server's pid, for tests (nil before the first forkserver start).
    static var serverPid: pid_t? { lock.withLock { current?.pid } }

    private enum Started { case ready(ForkServerClient), died(String) }

    /// A new server, ready; `.died` when it ended before saying so (the caller retries once).
    private static func start() throws(MP.Error) -> Started {
        let ours: Int32, theirs: Int32
        do { (ours, theirs) = try Sys.socketPair(keepingMessages: true) } catch { throw .startFailed(method: MP.StartMethod.forkserver, reason: error.description) }
        let bindNow = Sys.environment("LD_BIND_NOW") == nil
        let arguments = [Spawner.programName, ForkServer.flag, String(Sys.getpid), bindNow ? "bound" : "inherited"]
        let pid: pid_t, pidfd: Int32
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
            Sys.close(theirs)
            throw .startFailed(method: MP.StartMethod.forkserver, reason: error.description)
        }
        // The server holds the only other end now: its death is end-of-file here.
        Sys.close(theirs)
        everStarted = true
        do {
            pidfd = try Sys.pidfdOpen(pid)
        } catch {
            Sys.close(ours)
            try? Sys.kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = try? Sys.waitpid(pid, &status, 0)
            throw .startFailed(method: MP.StartMethod.forkserver, reason: error.description)
        }
        let server = ForkServerClient(socket: ours, pid: pid, pidfd: pidfd)
        afterSpawnForTesting?(pid)
        switch server.awaitReply(until: .after(validSeconds: startTimeout)) {
        case .value(let status) where status > 0:
            server.watchForDeath()
            return .ready(server)
        case .value(let status):
            _ = server.retire()
            let reason = status == -ENOTSUP
                ? "this C library's thread descriptor could not be repaired after clone3 (glibc is required)"
                : "errno \(-status) while preparing"
            throw .startFailed(method: MP.StartMethod.forkserver, reason: reason)
        case .timedOut:
            _ = server.retire()
            throw .startFailed(method: MP.StartMethod.forkserver, reason: "the server (pid \(pid)) did not say it was ready within \(startTimeout) s")
        case .gone:
            return .died(server.retire())
        }
    }

    /// Reaps the server from the descriptor watcher when it dies between starts.
    private func watchForDeath() {
        do {
            try FDWatcher.current().whenReadable(pidfd) { [weak self] in _ = self?.reap(blocking: false) }
        } catch {
            LibraryLog.log(.warning, "the forkserver (pid \(pid)) is not watched (\(error)): if it dies, it is reaped at the next start")
        }
    }

    private enum Outcome { case started(pid_t), failed(Int32), gone(String, adopted: pid_t?) }

    /// One request and its reply. The child's birth note travels first: if
    /// the server dies before replying, the note says whether it had cloned
    /// the child (then adopted) or not (then the caller launches again).
    private func request(_ descriptors: [Int32]) -> Outcome {
        let note: (read: Int32, write: Int32)
        do { note = try Sys.socketPair(keepingMessages: true) } catch { return .failed(error.errno.rawValue) }
        defer { Sys.close(note.read) }
        do {
            try Sys.sendAll(socket, ForkServer.request, descriptors: [note.write] + descriptors)
        } catch {
            Sys.close(note.write)
            return .gone(retire(), adopted: nil)
        }
        Sys.close(note.write)
        switch awaitReply(until: nil) {
        case .value(let value): return value > 0 ? .started(value) : .failed(-value)
        case .timedOut, .gone:
            // Reaped first: after that its clone either happened (the child
            // holds the note's only write end) or never will.
            let how = retire()
            return .gone(how, adopted: Self.readBirthNote(note.read))
        }
    }

    /// The pid a cloned child wrote, or nil at end-of-file (no child).
    private static func readBirthNote(_ fd: Int32) -> pid_t? {
        guard (try? Sys.pollReadable(fd, until: .after(validSeconds: birthNoteTimeout))) == true,
              let message = try? Sys.receiveMessage(fd, capacity: 4, maxDescriptors: 0, blocking: false),
              message.bytes.count == MemoryLayout<pid_t>.size else { return nil }
        let pid = message.bytes.withUnsafeBytes { $0.loadUnaligned(as: pid_t.self) }
        return pid > 0 ? pid : nil
    }

    private enum Reply { case value(Int32), timedOut, gone }

    /// The server's next reply; `.gone` once it has ended (its pidfd) or
    /// closed its end, whichever is seen first, with nothing left to read.
    private func awaitReply(until deadline: Deadline?) -> Reply {
        while true {
            let ready: [Int32]
            do { ready = try Sys.pollReadable([socket, pidfd], until: deadline) } catch { return .gone }
            if ready.isEmpty { return .timedOut }
            // A reply sent just before the end is still queued: read it
            // first. Nothing queued (EAGAIN) or end-of-file: it has ended.
            guard let message = try? Sys.receiveMessage(socket, capacity: 4, maxDescriptors: 0, blocking: false),
                  !message.bytes.isEmpty else { return .gone }
            if message.bytes.count == 4 { return .value(message.bytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }) }
        }
    }

    /// Waits for (or, not blocking, collects) the server's end; its wait status.
    private func reap(blocking: Bool) -> Int32? {
        reapLock.withLock {
            if endStatus == nil {
                var status: Int32 = 0
                if let reaped = try? Sys.waitpid(pid, &status, blocking ? 0 : WNOHANG), reaped == pid { endStatus = status }
            }
            return endStatus
        }
    }

    /// Ends and reaps a server that failed; how it ended, for the error message.
    private func retire() -> String {
        Sys.close(socket)
        try? Sys.pidfdSendSignal(pidfd, SIGKILL)
        let status = reap(blocking: true)
        Sys.close(pidfd)
        return "the forkserver (pid \(pid)) " + (status.map { Self.describe(MP.ExitStatus(rawValue: $0)) } ?? "ended")
    }

    private static func describe(_ status: MP.ExitStatus) -> String {
        switch status {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal, _): "was killed by \(signal)"
        default: "ended (\(status))"
        }
    }
}
