import Glibc
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.Process`, started with the fork start method.
    ///
    /// Give it a closure (captures replace Python's `args` and `kwargs`), or
    /// subclass it and override ``run()``:
    ///
    /// ```swift
    /// let p = MP.Process(name: "counter") { task(count: 5) }
    /// try p.start()
    /// try p.join()              // or: try await p.join()
    /// print(p.exitCode!)        // 0; n after exit(n); -N after signal N
    ///
    /// final class Worker: MP.Process {
    ///     override func run() throws { print("hello from", MP.getpid()) }
    /// }
    /// ```
    ///
    /// In the child, stdio was flushed before the fork, globals are copies,
    /// Swift concurrency works (a child-local executor is installed), and the
    /// child leaves with `_exit` after flushing its own stdio and ending its
    /// own children, so the parent's `atexit` handlers never run there. A
    /// target that throws prints the error with the process name to stderr and
    /// exits with 1; throwing ``MP/ExitRequest`` exits with its code.
    ///
    /// Dispatch does not work in a child forked from a process that had used it
    /// (see ``MP/isDispatchUsable``).
    ///
    /// Every started child is reaped, by `join()`, ``isAlive``,
    /// ``MP/activeChildren()`` or the exit handling: when the main process
    /// exits normally it terminates its daemonic children and joins the others,
    /// as CPython does. Daemonic children also die when their parent dies
    /// abnormally (`SIGKILL`), through `PR_SET_PDEATHSIG`.
    open class Process: @unchecked Sendable, CustomStringConvertible {

        enum State {
            case initial
            case starting
            case running(any Popen)
            /// `status` is nil when somebody else reaped the child without telling us.
            case finished(any Popen, status: ExitStatus?)
            case closed
        }

        private let lock = ForkSafeLock()
        private var state: State = .initial
        private var explicitName: String?
        private var isDaemon: Bool
        // Two optionals rather than an enum with closure payloads: switching
        // over such an enum instantiates type metadata at run time, which a
        // child would redo (demangling, allocating) on every start.
        private let syncTarget: (() throws -> Void)?
        private let asyncTarget: (() async throws -> Void)?
        /// A named task: runs under any start method.
        let namedTask: NamedTaskTarget?
        /// The method asked for by a context; nil: the program's.
        private let requestedMethod: StartMethod?
        private let isMain: Bool
        /// Python's `_identity`: `[1]` for `Process-1`, `[1, 2]` for `Process-1:2`.
        let identity: [Int]
        /// Python's `_parent_pid`: the process that created this object.
        let creatorPid: Int32
        /// The limits of a named task given them: the cgroup made for it, the verdict on its end.
        let limitSession: LimitSession?
        /// What the child used, from `wait4`, once reaped.
        private var endUsage: Sys.Usage?
        /// The limit that ended the child, decided when it was reaped.
        private var verdict: MP.Error?

        /// A process that runs `target`.
        /// - Parameters:
        ///   - name: Python's `name`; default `Process-N` (`ClassName-N` for subclasses, `SpawnProcess-N`
        ///     and the like from a context of a given method, `-N:M` in a child).
        ///   - daemon: Python's `daemon`; default false.
        ///   - target: what the child runs (captures replace Python's `args` and `kwargs`).
        public convenience init(name: String? = nil, daemon: Bool = false, target: @escaping () throws -> Void) {
            self.init(name: name, daemon: daemon, target: target, startMethod: nil)
        }

        convenience init(name: String?, daemon: Bool, target: @escaping () throws -> Void, startMethod: StartMethod?) {
            self.init(explicitName: name, daemon: daemon, sync: target, async: nil, task: nil, method: startMethod)
        }

        /// A process that runs an async `target` (Swift concurrency works in the child).
        public convenience init(name: String? = nil, daemon: Bool = false, target: @escaping () async throws -> Void) {
            self.init(name: name, daemon: daemon, target: target, startMethod: nil)
        }

        convenience init(name: String?, daemon: Bool, target: @escaping () async throws -> Void, startMethod: StartMethod?) {
            self.init(explicitName: name, daemon: daemon, sync: nil, async: target, task: nil, method: startMethod)
        }

        /// A process that runs the named task `target` (Python's `target` with
        /// its `args`: the task's stored properties), under the program's
        /// start method (``MP/getStartMethod()``; by default
        /// ``MP/StartMethod/forkserver``), or a context's
        /// (``MP/Context/Process(name:daemon:target:)-(_,_,T)``).
        public convenience init<T: NamedTask>(name: String? = nil, daemon: Bool = false, target: T) {
            self.init(name: name, daemon: daemon, target: target, startMethod: nil)
        }

        convenience init<T: NamedTask>(name: String?, daemon: Bool, target: T, startMethod: StartMethod?) {
            self.init(explicitName: name, daemon: daemon, sync: nil, async: nil, task: NamedTaskTarget(target), method: startMethod)
        }

        /// A process that runs the named task `target` under `limits`
        /// (memory, CPU time, time limits, no network; see ``MP/WorkerLimits``),
        /// under the program's start method or, through a context's
        /// `Process(name:daemon:target:limits:)`, any other.
        ///
        /// The child applies the limits to itself before the task runs.
        /// Once it has ended, ``limitExceeded`` says which limit ended it,
        /// and ``resourceUsage`` what it used.
        ///
        /// - Throws: ``MP/Error/Code/invalidArgument`` for a limit out of
        ///   range; ``MP/Error/Code/unsupported`` for one this kernel or user
        ///   cannot enforce (no writable memory cgroup when
        ///   ``MP/WorkerLimits/MemoryEnforcement/cgroup`` is asked for, no
        ///   network namespaces).
        public convenience init<T: NamedTask>(name: String? = nil, daemon: Bool = false, target: T, limits: WorkerLimits) throws(MP.Error) {
            try self.init(name: name, daemon: daemon, target: target, startMethod: nil, limits: limits)
        }

        convenience init<T: NamedTask>(name: String?, daemon: Bool, target: T, startMethod: StartMethod?, limits: WorkerLimits,
                                       pool: Bool = false) throws(MP.Error) {
            let session = try LimitSession(limits, pool: pool)
            self.init(explicitName: name, daemon: daemon, sync: nil, async: nil,
                      task: NamedTaskTarget(LimitedTask(plan: session.plan, task: AnyNamedTask(target))), method: startMethod,
                      limits: session)
        }

        /// A process whose work is its ``run()`` method: for subclasses (fork only).
        public init(name: String? = nil, daemon: Bool = false) {
            self.explicitName = name
            self.isDaemon = daemon
            self.syncTarget = nil
            self.asyncTarget = nil
            self.namedTask = nil
            self.requestedMethod = nil
            self.isMain = false
            self.identity = Runtime.shared.nextIdentity()
            self.creatorPid = Sys.getpid
            self.limitSession = nil
        }

        /// Every other initializer ends here. `identity` nil: the next one of this process.
        private init(explicitName: String?, daemon: Bool, sync: (() throws -> Void)?, async: (() async throws -> Void)?,
                     task: NamedTaskTarget?, method: StartMethod?, isMain: Bool = false, identity: [Int]? = nil,
                     creatorPid: Int32 = Sys.getpid, limits: LimitSession? = nil) {
            self.explicitName = explicitName
            self.isDaemon = daemon
            self.syncTarget = sync
            self.asyncTarget = async
            self.namedTask = task
            self.requestedMethod = method
            self.isMain = isMain
            self.identity = identity ?? Runtime.shared.nextIdentity()
            self.creatorPid = creatorPid
            self.limitSession = limits
        }

        /// The main process object.
        convenience init(mainProcess: ()) {
            self.init(explicitName: "MainProcess", daemon: false, sync: nil, async: nil, task: nil, method: nil,
                      isMain: true, identity: [], creatorPid: 0)
        }

        /// The current process in a spawned or forkserver child (or, in one,
        /// its parent's description).
        convenience init(launchedAs name: String, identity: [Int], daemon: Bool, parentPid: Int32) {
            self.init(explicitName: name, daemon: daemon, sync: nil, async: nil, task: nil, method: nil,
                      identity: identity, creatorPid: parentPid)
        }

        deinit {
            switch state {
            case .running(let popen), .finished(let popen, _): popen.close()
            default: break
            }
        }

        /// What the child runs: the target given at creation. Override it in a subclass.
        open func run() throws {
            if let syncTarget {
                try syncTarget()
            } else if let asyncTarget {
                try ChildConcurrency.runBlocking(asyncTarget)
            } else if let namedTask {
                try ChildConcurrency.runBlocking(namedTask.runHere)
            }
        }

        /// The start method this process starts with: a context's, else the
        /// program's; a closure or a subclass forks unless a non-fork method
        /// was asked for (then `start()` refuses it).
        public var startMethod: StartMethod {
            if let requestedMethod { return requestedMethod }
            if namedTask != nil { return MP.getStartMethod() }
            return StartMethodSetting.shared.explicit ?? .fork
        }

        // MARK: properties

        /// Python's `name`.
        public var name: String {
            get { lock.withLock { unlockedName } }
            set { lock.withLock { explicitName = newValue } }
        }

        private var unlockedName: String {
            if let explicitName { return explicitName }
            return "\(className)-" + identity.map(String.init).joined(separator: ":")
        }

        /// CPython's class name for the default name: a subclass's own; a
        /// process made by a context of a given method is that context's
        /// class (`ForkProcess`, `SpawnProcess`, `ForkServerProcess`), as
        /// `get_context('spawn').Process` is in Python; otherwise `Process`.
        private var className: String {
            guard type(of: self) == Process.self, let requestedMethod else { return "\(type(of: self))" }
            switch requestedMethod {
            case .fork: return "ForkProcess"
            case .spawn: return "SpawnProcess"
            case .forkserver: return "ForkServerProcess"
            }
        }

        /// Python's `daemon`: a daemonic process is terminated when its parent
        /// exits, and may not start children of its own. Set it with
        /// ``setDaemon(_:)`` or at creation.
        public var daemon: Bool { lock.withLock { isDaemon } }

        /// Python's `p.daemon = flag`; throws ``MP/Error/Code/invalidState`` after `start()`.
        public func setDaemon(_ flag: Bool) throws(MP.Error) {
            try lock.withLock { () throws(MP.Error) in
                guard case .initial = state, !isCurrent else { throw .daemonAfterStart(name: unlockedName) }
                isDaemon = flag
            }
        }

        private var isCurrent: Bool { isMain || self === Runtime.shared.current }

        /// Python's `pid`: nil before `start()` (and after `close()`).
        public var pid: Int32? {
            if isCurrent { return Sys.getpid }
            return startedPid
        }

        var startedPid: Int32? {
            lock.withLock {
                switch state {
                case .running(let popen), .finished(let popen, _): return popen.pid
                default: return nil
                }
            }
        }

        /// Python's `exitcode`: nil while running or before start; the exit code;
        /// or `-N` after death by signal N.
        public var exitCode: Int32? {
            if !isCurrent && creatorPid == Sys.getpid { reap(blocking: false) }
            return lock.withLock {
                if case .finished(_, let status) = state { return status?.exitCode }
                return nil
            }
        }

        /// How the child ended, decoded; nil while running or before start.
        public var exitStatus: ExitStatus? {
            _ = exitCode
            return lock.withLock {
                if case .finished(_, let status) = state { return status }
                return nil
            }
        }

        /// For a process made with ``MP/WorkerLimits``: the limit that ended
        /// it (``MP/Error/Code/memoryLimit`` when its memory cgroup's OOM
        /// killer took it, ``MP/Error/Code/cpuLimit`` on `SIGXCPU`,
        /// ``MP/Error/Code/timeout`` past its time limit); nil while it runs,
        /// when it ended otherwise, or without limits. Under
        /// ``MP/WorkerLimits/MemoryEnforcement/dataLimit`` a failed
        /// allocation ends the child with Swift's fatal error on its stderr,
        /// which a process does not read: the pools do, and say so.
        public var limitExceeded: MP.Error? {
            _ = exitCode
            return lock.withLock { verdict }
        }

        /// What the child used (CPU time, peak resident memory), from
        /// `wait4`, once it has ended and been reaped; nil before.
        public var resourceUsage: ResourceUsage? {
            _ = exitCode
            return lock.withLock { endUsage.map(ResourceUsage.init) }
        }

        /// How its ``MP/WorkerLimits/memory`` is enforced: a memory cgroup, or
        /// `RLIMIT_DATA`; nil without a memory limit.
        public var memoryEnforcement: WorkerLimits.MemoryEnforcement? { limitSession?.memoryEnforcement }

        /// Python's `is_alive()`: reaps the child if it has finished.
        public var isAlive: Bool { pollAlive() }

        func pollAlive() -> Bool {
            if isCurrent { return true }
            guard creatorPid == Sys.getpid else { return false }
            reap(blocking: false)
            return lock.withLock {
                if case .running = state { return true }
                return false
            }
        }

        /// Python's `sentinel`: a pidfd that becomes readable when the child
        /// ends, for `poll`/`epoll` (and ``MP/wait(for:timeout:)``).
        public var sentinel: Int32 {
            get throws(MP.Error) {
                try lock.withLock { () throws(MP.Error) -> Int32 in
                    switch state {
                    case .initial, .starting: throw .notStarted(name: unlockedName)
                    case .closed: throw .closed(name: unlockedName)
                    case .running(let popen), .finished(let popen, _): return popen.sentinel
                    }
                }
            }
        }

        // MARK: lifecycle

        /// Python's `start()`: forks the child, which runs ``run()``.
        public func start() throws(MP.Error) { try start(forkOnCurrentThread: false) }

        /// `forkOnCurrentThread`: the caller vouches that this thread lives as
        /// long as the child may (the pool's own thread), so a daemon needs no
        /// hand-off to the forker thread.
        ///
        /// The start method's ``Popen`` checks and launches; what follows a
        /// start (the state, the registry of children, the log) is written
        /// once, here.
        func start(forkOnCurrentThread: Bool) throws(MP.Error) {
            let runtime = Runtime.shared
            try runtime.checkMayStartChildren()
            let popenType = PopenTypes.forMethod(startMethod)
            try popenType.check(self)
            let daemon = try lock.withLock { () throws(MP.Error) -> Bool in
                switch state {
                case .initial:
                    if isCurrent { throw .alreadyStarted(name: unlockedName) }
                    if creatorPid != Sys.getpid { throw .notParent(name: unlockedName) }
                    state = .starting
                    return isDaemon
                case .closed: throw .closed(name: unlockedName)
                default: throw .alreadyStarted(name: unlockedName)
                }
            }
            runtime.reapFinishedChildren()
            let popen: any Popen
            do {
                popen = try popenType.start(self, StartRequest(daemon: daemon, forkOnCurrentThread: forkOnCurrentThread))
            } catch {
                lock.withLock { state = .initial }
                throw error
            }
            lock.withLock { state = .running(popen) }
            runtime.register(self)
            LibraryLog.log(.info, "started \(name) (pid \(popen.pid), \(popenType.method))")
        }

        /// Whether the child runs Swift concurrency (an async target or a
        /// named task): under fork it needs the child executors.
        var needsChildExecutors: Bool { asyncTarget != nil || namedTask != nil }

        /// The named task's own checks (registered, sendable), if it is one.
        func checkNamedTask() throws(MP.Error) {
            if let namedTask { do { try namedTask.check() } catch { throw .task(error) } }
        }

        /// Spawn and forkserver start only named tasks (a closure cannot cross into a fresh program).
        func checkLaunchable(_ method: StartMethod) throws(MP.Error) {
            guard namedTask != nil else { throw .task(.needsFork(process: name, method: method)) }
            try checkNamedTask()
        }

        /// Python's `join()`: blocks until the child ends, then reaps it.
        public func join() throws(MP.Error) {
            _ = try join(timeout: nil)
        }

        /// Python's `join(timeout)`: waits at most `timeout` seconds.
        /// - Returns: whether the child has ended (Python returns None; check `exitCode`).
        @discardableResult
        public func join(timeout: Double?) throws(MP.Error) -> Bool {
            let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
            guard let popen = try joinable() else { return true }
            if popen.sentinel >= 0 {
                let ended: Bool
                do { ended = try popen.wait(until: deadline) } catch { throw .system(error) }
                if !ended { return false }
                reap(blocking: true)
                return true
            }
            // No pidfd (a kernel without pidfd_open): poll the status.
            while true {
                reap(blocking: deadline == nil)
                if !pollAlive() { return true }
                if let deadline, deadline.hasPassed { return false }
                Sys.sleep(microseconds: 1000)
            }
        }

        /// `try await p.join()`: suspends, without blocking a thread, until the child ends.
        public func join() async throws(MP.Error) {
            guard let popen = try joinable() else { return }
            do {
                try await popen.wait()
            } catch {
                switch error {
                case .cancelled: throw .cancelled
                case .system(let os): throw .system(os)
                }
            }
            reap(blocking: true)
        }

        /// The child to wait for, or nil when already reaped; throws on misuse.
        private func joinable() throws(MP.Error) -> (any Popen)? {
            try lock.withLock { () throws(MP.Error) -> (any Popen)? in
                if isCurrent { throw .joinSelf(name: unlockedName) }
                if creatorPid != Sys.getpid { throw .notParent(name: unlockedName) }
                switch state {
                case .initial, .starting: throw .notStarted(name: unlockedName)
                case .closed: throw .closed(name: unlockedName)
                case .finished: return nil
                case .running(let popen): return popen
                }
            }
        }

        /// Python's `terminate()`: sends SIGTERM. A no-op once the child has ended.
        public func terminate() throws(MP.Error) { try send(.terminate) }

        /// Python 3.14's `interrupt()`: sends SIGINT (a Swift child ends with
        /// `-2` unless it handles the signal). A no-op once the child has ended.
        public func interrupt() throws(MP.Error) { try send(.interrupt) }

        /// Python's `kill()`: sends SIGKILL. A no-op once the child has ended.
        public func kill() throws(MP.Error) { try send(.kill) }

        /// Sends `signal` to the running child (through its pidfd: no pid-reuse race).
        public func send(_ signal: Signal) throws(MP.Error) {
            try lock.withLock { () throws(MP.Error) in
                if isCurrent { throw .notParent(name: unlockedName) }
                if creatorPid != Sys.getpid { throw .notParent(name: unlockedName) }
                switch state {
                case .initial, .starting: throw .notStarted(name: unlockedName)
                case .closed: throw .closed(name: unlockedName)
                case .finished: return
                case .running(let popen):
                    do throws(OSError) { try popen.send(signal) } catch { throw .system(error) }
                }
            }
        }

        /// Python's `close()`: releases the pidfd. Throws if the child still runs;
        /// afterwards most operations throw ``MP/Error/Code/closed``.
        public func close() throws(MP.Error) {
            if !isCurrent && creatorPid == Sys.getpid { reap(blocking: false) }
            try lock.withLock { () throws(MP.Error) in
                switch state {
                case .running: throw .stillRunning(name: unlockedName)
                case .finished(let popen, _):
                    popen.close()
                    state = .closed
                case .initial: state = .closed
                case .starting: throw .stillRunning(name: unlockedName)
                case .closed: return
                }
            }
        }

        // MARK: reaping

        /// Reaps the child if it has ended (or, `blocking`, when it ends).
        func reap(blocking: Bool) {
            var finished = false
            var logged: (pid: Int32, status: ExitStatus)?
            lock.withLock {
                guard case .running(let popen) = state else { return }
                do {
                    if let (status, usage) = try popen.poll(blocking: blocking) {
                        state = .finished(popen, status: status)
                        endUsage = usage
                        finished = true
                        logged = (popen.pid, status)
                    }
                } catch {
                    // ECHILD: reaped behind our back; MP.wait() hands us the status if it did.
                    state = .finished(popen, status: nil)
                    finished = true
                }
            }
            if finished {
                judgeLimits()
                Runtime.shared.unregister(self)
            }
            if let logged { LibraryLog.log(.info, "\(name) (pid \(logged.pid)) \(logged.status.logDescription)") }
        }

        /// Once reaped: which limit ended the child, if one did; its cgroup goes.
        private func judgeLimits() {
            guard let limitSession else { return }
            let (status, usage, pid) = lock.withLock { () -> (ExitStatus?, Sys.Usage?, Int32?) in
                if case .finished(let popen, let status) = state { return (status, endUsage, popen.pid) }
                return (nil, endUsage, nil)
            }
            var signal: Int32?
            if case .signaled(let number, _)? = status { signal = number.rawValue }
            let found = limitSession.verdict(signal: signal, fatalLine: nil, usage: usage.map(ResourceUsage.init),
                                             who: "\(name) (pid \(pid ?? -1))")
            limitSession.finish()
            lock.withLock { verdict = found }
        }

        /// A raw `MP.wait()`/`MP.waitpid()` reaped this child.
        func recordReaped(status: ExitStatus) {
            let reaped = lock.withLock { () -> Int32? in
                switch state {
                case .running(let popen), .finished(let popen, nil):
                    state = .finished(popen, status: status)
                    return popen.pid
                default: return nil
                }
            }
            judgeLimits()
            Runtime.shared.unregister(self)
            if let reaped { LibraryLog.log(.info, "\(name) (pid \(reaped)) \(status.logDescription)") }
        }

        // MARK: fork support

        /// In a forked child: the parent's view of this sibling is meaningless here.
        func closeInheritedDescriptor() {
            if case .running(let popen) = state { popen.close() }
            if case .finished(let popen, _) = state { popen.close() }
            state = .closed
        }


        // MARK: description

        /// Reads like Python's repr: `<Process name='worker' pid=4242 parent=4200 started daemon>`.
        public var description: String {
            if isMain { return "<_MainProcess name='\(name)' parent=None started>" }
            let code = isCurrent ? nil : exitCode
            return lock.withLock {
                var info = ["\(type(of: self))", "name='\(unlockedName)'"]
                let status: String
                switch state {
                case _ where isCurrent: status = "started"
                case _ where creatorPid != Sys.getpid: status = "unknown"
                case .closed: status = "closed"
                case .initial, .starting: status = "initial"
                case .running(let popen): info.append("pid=\(popen.pid)"); status = "started"
                case .finished(let popen, _): info.append("pid=\(popen.pid)"); status = "stopped"
                }
                info.append("parent=\(creatorPid)")
                info.append(status)
                if status == "stopped", let code {
                    info.append("exitcode=\(code < 0 ? Signal(rawValue: -code).description : String(code))")
                }
                if isDaemon { info.append("daemon") }
                return "<" + info.joined(separator: " ") + ">"
            }
        }
    }
}

extension Runtime {
    /// CPython's `_cleanup()` at `start()`: reap children that have finished.
    func reapFinishedChildren() { _ = activeChildren() }
}
