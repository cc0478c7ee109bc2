import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The state of a ``MP/TaskPool`` and its thread. The thread holds this
/// object, not the handle, so a pool the program drops is closed (its
/// workers finish what was submitted) instead of living until exit.
///
/// Everything is guarded by `lock`. Submitting threads queue jobs and, when
/// a worker has room, write the order to it themselves (a blocking `apply`
/// to an idle worker costs the worker's round trip and one wake-up of this
/// thread, which reads the report). The thread polls the workers' channels,
/// pidfds and stderr pipes, and the deadline of any timed order.
final class TaskPoolCore: @unchecked Sendable {
    let processes: Int
    let method: MP.StartMethod
    let initializer: AnyNamedTask?
    let maxTasksPerChild: Int?
    let lock = ForkSafeLock()
    let finished = OneShotEvent()

    enum State { case running, closed, terminated }
    private(set) var state = State.running
    /// Set when a worker's initializer failed: every later task fails with it.
    private(set) var broken: MP.Error?
    private var queue = JobQueue()
    private(set) var workers: [PoolWorkerHandle] = []
    /// Workers the pool killed (a timeout, a cancellation), until they are reaped;
    /// their replacements are already in `workers`.
    private var dyingWorkers: [PoolWorkerHandle] = []
    private var typeIndex: [String: UInt32] = [:]
    private var typeNames: [String] = []
    private var cachedArena: PoolArena?
    private var nextArenaId: UInt64 = 1
    private var started = 0
    /// Workers in a row that failed by their own hand before taking an order
    /// (they exited or crashed): at three the pool stops trying.
    private var failedStarts = 0
    /// Workers in a row lost before they were ready for a reason outside
    /// them (a signal such as SIGKILL from another process, a start that
    /// failed): replaced with a bounded exponential backoff, never counted
    /// against the pool.
    private var outsideLosses = 0
    /// Replacements waiting for their backoff to pass.
    private var pendingStarts = 0
    private var restartAt: Deadline?
    /// The longest wait between replacements while starts keep being lost.
    static let maxRestartBackoff = 1.0
    /// Completions decided under the lock, run after it is released.
    private var completions: [(PoolJob, PoolJob.Outcome)] = []
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private var wakeSignalled = false
    /// Workers holding no order: kept by whoever holds `lock`, read without
    /// it as a hint of whether a submission should send at once.
    private let idleWorkers = Atomic<Int>(0)
    /// Submissions while every worker is busy: a short lock of their own,
    /// so submitting threads do not wait on the pool's thread, which takes
    /// them in batches.
    private let inboxLock = ForkSafeLock()
    private var inbox: [PoolJob] = []
    private var inboxRefusal: MP.Error?
    private var inboxWakeSignalled = false

    init(processes: Int, method: MP.StartMethod, initializer: AnyNamedTask?, maxTasksPerChild: Int?) throws(MP.OSError) {
        self.processes = processes
        self.method = method
        self.initializer = initializer
        self.maxTasksPerChild = maxTasksPerChild
        (wakeRead, wakeWrite) = try Sys.pipe()
    }

    deinit {
        Sys.close(wakeRead)
        Sys.close(wakeWrite)
    }

    /// Starts the workers and the thread.
    func start() throws(MP.Error) {
        lock.lock()
        do {
            for _ in 0..<processes { workers.append(try startWorker()) }
        } catch {
            let started = workers
            workers = []
            unlockAndComplete()
            for worker in started { try? worker.process.kill(); try? worker.process.join() }
            throw error
        }
        unlockAndComplete()
        // The thread lets go of the pool before it reports the end, so a
        // joined pool the program drops is gone (its descriptors closed).
        let holder = Holder(self)
        let finished = self.finished
        if case .failure(let error) = startThread({
            holder.core?.serve()
            holder.core = nil
            finished.set()
        }) {
            terminate()
            throw .system(error)
        }
    }

    private final class Holder: @unchecked Sendable {
        var core: TaskPoolCore?
        init(_ core: TaskPoolCore) { self.core = core }
    }

    // MARK: workers

    private var workerPrefix: String {
        switch method {
        case .fork: "ForkPoolWorker"
        case .spawn: "SpawnPoolWorker"
        case .forkserver: "ForkServerPoolWorker"
        }
    }

    /// A new worker, greeted (its control block and stderr pipe sent). Called with the lock held.
    private func startWorker() throws(MP.Error) -> PoolWorkerHandle {
        do {
            let (parentEnd, childEnd) = try MP.Pipe(duplex: true)
            let control = try SharedBlock(bytes: WorkerControl.bytes)
            let (errorsRead, errorsWrite) = try Sys.pipe()
            defer { Sys.close(errorsWrite) }
            let stderr = WorkerStderr(fd: errorsRead)
            started += 1
            let loop = PoolWorkerLoop(channel: childEnd, initializer: initializer, maxTasks: maxTasksPerChild)
            let process = MP.getContext(method).Process(name: "\(workerPrefix)-\(started)", daemon: true, target: loop)
            do {
                try process.start()
            } catch {
                parentEnd.close()
                childEnd.close()
                throw MP.Error.cannotStartWorker(error.description)
            }
            childEnd.close()
            try Sys.setNonBlocking(parentEnd.fileno)
            let worker = try PoolWorkerHandle(process: process, channel: parentEnd, control: control, stderr: stderr)
            var hello = ByteWriter()
            let start = WorkerFrames.begin(&hello, WorkerFrames.OrderKind.hello.rawValue)
            hello.write(UInt64(control.size))
            WorkerFrames.finish(&hello, at: start)
            if !worker.sendNow(hello.bytes, descriptors: [control.descriptor, errorsWrite]) {
                try? process.kill()
                try? process.join()
                throw MP.Error.cannotStartWorker("the new worker \(process.name) did not take its first message")
            }
            return worker
        } catch {
            if let error = error as? MP.Error, error.code == .startFailed { throw error }
            throw .cannotStartWorker("\(error)")
        }
    }

    var workerPids: [Int32] { lock.withLock { workers.map(\.pid) } }

    // MARK: submitting

    /// The index workers know `name` by.
    func typeNumber(_ name: String) -> UInt32 {
        lock.withLock {
            if let index = typeIndex[name] { return index }
            let index = UInt32(typeNames.count)
            typeNames.append(name)
            typeIndex[name] = index
            return index
        }
    }

    /// Queues `jobs` and sends what the workers have room for. A closed,
    /// terminated or broken pool fails them.
    func submit(_ jobs: [PoolJob]) {
        if idleWorkers.load(ordering: .relaxed) > 0 {
            submitNow(jobs)
            return
        }
        var needsWake = false
        let refusal = inboxLock.withLock { () -> MP.Error? in
            if let inboxRefusal { return inboxRefusal }
            inbox += jobs
            if !inboxWakeSignalled {
                inboxWakeSignalled = true
                needsWake = true
            }
            return nil
        }
        if let refusal {
            for job in jobs {
                job.finished = true
                job.complete(.failed(index: 0, refusal, before: []))
            }
        }
        if needsWake { Sys.poke(wakeWrite) }
    }

    /// An idle worker gets the order now, from this thread: a lone `apply`
    /// costs the worker's round trip and one wake-up of the pool's thread.
    private func submitNow(_ jobs: [PoolJob]) {
        lock.lock()
        let refusal: MP.Error? = switch state {
        case .running: broken
        case .closed: .poolClosed
        case .terminated: .terminated
        }
        if let refusal {
            for job in jobs { finish(job, .failed(index: 0, refusal, before: [])) }
        } else {
            for job in jobs { queue.append(job) }
            schedule()
            if !queue.isEmpty || workers.contains(where: { $0.hasOutbound || $0.deadline != nil }) { requestWake() }
        }
        unlockAndComplete()
    }

    /// Moves the inbox into the queue (lock held).
    private func takeInbox() {
        let jobs = inboxLock.withLock { () -> [PoolJob] in
            inboxWakeSignalled = false
            defer { inbox = [] }
            return inbox
        }
        for job in jobs { queue.append(job) }
    }

    private func refuseSubmissions(_ error: MP.Error) {
        inboxLock.withLock { if inboxRefusal == nil || error == .terminated { inboxRefusal = error } }
    }

    /// Cancels a job: a queued one never runs; a held one is skipped by its
    /// worker, or, if it may be running, its worker is killed (and replaced).
    func cancel(_ job: PoolJob) {
        lock.lock()
        if !job.finished {
            finish(job, .failed(index: 0, .cancelled, before: []))
            if let worker = job.worker, !worker.dying {
                if worker.inFlight.first === job || worker.cancel(job.seq) { kill(worker) }
            }
            requestWake()
        }
        unlockAndComplete()
    }

    /// Cancels a job only if it has not started (queued, or held by a
    /// worker behind the order it runs); whether it did.
    func cancelIfQueued(_ job: PoolJob) -> Bool {
        lock.lock()
        takeInbox()
        var cancelled = false
        if !job.finished {
            if let worker = job.worker {
                // Held: the worker skips it, unless it may have started it
                // (then it runs on; should the worker skip it after all, its
                // report settles it as cancelled).
                cancelled = !worker.dying && worker.inFlight.first !== job && !worker.cancel(job.seq)
            } else {
                cancelled = true
            }
            if cancelled { finish(job, .failed(index: 0, .cancelled, before: [])) }
        }
        unlockAndComplete()
        return cancelled
    }

    func close() {
        refuseSubmissions(.poolClosed)
        lock.withLock { if state == .running { state = .closed } }
        wake()
    }

    func terminate() {
        refuseSubmissions(.terminated)
        lock.withLock { state = .terminated }
        wake()
    }

    // MARK: arenas

    /// Shared memory of at least `bytes` for a fixed-width map; the pool
    /// keeps one between maps (the workers keep it mapped).
    func acquireArena(bytes: Int) throws(MP.Error) -> PoolArena {
        try lock.withLock { () throws(MP.Error) -> PoolArena in
            if let arena = cachedArena, !arena.inUse, arena.block.size >= bytes {
                arena.inUse = true
                return arena
            }
            let arena: PoolArena
            do { arena = try PoolArena(id: nextArenaId, bytes: bytes) } catch { throw .invalidArgument("no shared memory for the map: \(error)") }
            nextArenaId += 1
            arena.inUse = true
            if cachedArena.map({ !$0.inUse }) ?? true {
                if let old = cachedArena { forget(old) }
                cachedArena = arena
            }
            return arena
        }
    }

    func releaseArena(_ arena: PoolArena) {
        lock.withLock {
            arena.inUse = false
            if arena !== cachedArena { forget(arena) }
        }
        wake()
    }

    /// Tells the workers that mapped `arena` to unmap it.
    private func forget(_ arena: PoolArena) {
        var frame = ByteWriter()
        let start = WorkerFrames.begin(&frame, WorkerFrames.OrderKind.release.rawValue)
        frame.write(arena.id)
        WorkerFrames.finish(&frame, at: start)
        for worker in workers where worker.knownBlocks.remove(arena.id) != nil {
            worker.outbound += frame.bytes
        }
    }

    // MARK: scheduling (lock held)

    /// Gives queued jobs to the workers with room, least loaded first.
    private func schedule() {
        while let job = queue.first {
            if job.finished { _ = queue.removeFirst(); continue }
            var chosen: PoolWorkerHandle?
            for worker in workers where !worker.dying && !worker.closedForWriting
                && worker.sent < (maxTasksPerChild ?? .max)
                && (job.timeout == nil ? worker.inFlight.count < worker.window : worker.inFlight.isEmpty) {
                if chosen == nil || worker.inFlight.count < chosen!.inFlight.count { chosen = worker }
            }
            guard let worker = chosen else { break }
            guard send(job, to: worker) else { break }
            _ = queue.removeFirst()
        }
        for worker in workers where worker.hasOutbound { _ = worker.flush() }
    }

    /// Writes `job`'s order into the worker's outbound bytes; false when it
    /// must wait (its shared block has to travel first and the socket is busy).
    private func send(_ job: PoolJob, to worker: PoolWorkerHandle) -> Bool {
        if case .fixed(let arena, _, _, _) = job.body, !worker.knownBlocks.contains(arena.id) {
            _ = worker.flush()
            var frame = ByteWriter()
            let start = WorkerFrames.begin(&frame, WorkerFrames.OrderKind.block.rawValue)
            frame.write(arena.id)
            frame.write(UInt64(arena.block.size))
            WorkerFrames.finish(&frame, at: start)
            guard worker.sendNow(frame.bytes, descriptors: [arena.block.descriptor]) else { return false }
            worker.knownBlocks.insert(arena.id)
        }
        var writer = ByteWriter()
        writer.bytes = worker.outbound
        if !worker.knownTypes.contains(job.type) {
            let start = WorkerFrames.begin(&writer, WorkerFrames.OrderKind.define.rawValue)
            writer.write(job.type)
            writer.bytes += Swift.Array(typeNames[Int(job.type)].utf8)
            WorkerFrames.finish(&writer, at: start)
            worker.knownTypes.insert(job.type)
        }
        let seq = worker.nextSeq
        worker.nextSeq += 1
        // Every order starts `[kind][u64 seq][u32 type]`.
        func order(_ kind: WorkerFrames.OrderKind, _ rest: (inout ByteWriter) -> Void) {
            let start = WorkerFrames.begin(&writer, kind.rawValue)
            writer.write(seq)
            writer.write(job.type)
            rest(&writer)
            WorkerFrames.finish(&writer, at: start)
        }
        switch job.body {
        case .task(let arguments):
            order(.task) { $0.writeRaw(arguments) }
        case .rawTask(let bytes):
            order(.rawTask) { $0.writeRaw(bytes) }
        case .chunk(let count, let items):
            order(.chunk) { writer in
                writer.write(UInt32(count))
                writer.writeRaw(items)
            }
        case .fixed(let arena, let tasks, let results, let count):
            order(.fixedChunk) { writer in
                writer.write(arena.id)
                writer.write(UInt64(tasks))
                writer.write(UInt64(results))
                writer.write(UInt32(count))
            }
        }
        worker.outbound = writer.bytes
        job.worker = worker
        job.seq = seq
        worker.inFlight.append(job)
        worker.sent += 1
        if let timeout = job.timeout, worker.ready { worker.deadline = Deadline.after(validSeconds: timeout) }
        return true
    }

    /// Settles `job` once (the completion runs after the lock is released).
    private func finish(_ job: PoolJob, _ outcome: PoolJob.Outcome) {
        guard !job.finished else { return }
        job.finished = true
        completions.append((job, outcome))
    }

    private func unlockAndComplete() {
        let ready = completions
        completions = []
        idleWorkers.store(workers.reduce(0) { $0 + ($1.inFlight.isEmpty && !$1.dying ? 1 : 0) }, ordering: .relaxed)
        lock.unlock()
        for (job, outcome) in ready { job.complete(outcome) }
    }

    /// Kills a worker and starts its replacement at once (while it dies).
    private func kill(_ worker: PoolWorkerHandle) {
        guard !worker.dying else { return }
        worker.dying = true
        try? worker.process.kill()
        guard let index = workers.firstIndex(where: { $0 === worker }) else { return }
        workers.remove(at: index)
        dyingWorkers.append(worker)
        if state != .terminated, broken == nil {
            replace("\(worker.process.name) (pid \(worker.pid)) killed (a timeout or a cancellation)")
        }
    }

    private func requestWake() {
        if !wakeSignalled {
            wakeSignalled = true
            Sys.poke(wakeWrite)
        }
    }

    private func wake() { Sys.poke(wakeWrite) }

    // MARK: the thread

    private func serve() {
        while true {
            lock.lock()
            wakeSignalled = false
            takeInbox()
            if state == .terminated {
                takeInbox() // submissions are refused by now: nothing arrives after this
                terminateWorkers()
                unlockAndComplete()
                return
            }
            startDeferred()
            schedule()
            // Submissions are refused before the state changes: an empty
            // inbox now stays empty.
            let everythingDone = queue.isEmpty && dyingWorkers.isEmpty && workers.allSatisfy { $0.inFlight.isEmpty }
                && inboxLock.withLock { inbox.isEmpty }
            if state == .closed || broken != nil, everythingDone {
                for worker in workers where !worker.closedForWriting && !worker.hasOutbound {
                    worker.closedForWriting = true
                    Sys.shutdownWrite(worker.fd)
                }
                if state == .closed && workers.isEmpty && dyingWorkers.isEmpty {
                    unlockAndComplete()
                    return
                }
            }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let watched = workers + dyingWorkers
            for worker in watched {
                let events = Int16(POLLIN) | (worker.hasOutbound ? Int16(POLLOUT) : 0)
                fds.append(pollfd(fd: worker.fd, events: events, revents: 0))
                fds.append(pollfd(fd: worker.pidfd, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: worker.stderr.fd, events: Int16(POLLIN), revents: 0))
            }
            let deadline = (workers.compactMap(\.deadline) + [restartAt].compactMap { $0 }).min()
            unlockAndComplete()
            if (try? Sys.poll(&fds, until: deadline)) == nil { continue }
            lock.lock()
            if fds[0].revents != 0 { Sys.drain(wakeRead) }
            for (position, worker) in watched.enumerated() {
                let channel = fds[1 + 3 * position].revents
                let exited = fds[2 + 3 * position].revents != 0
                if fds[3 + 3 * position].revents != 0 || exited { worker.stderr.pump() }
                if channel & Int16(POLLOUT) != 0 { _ = worker.flush() }
                if channel & ~Int16(POLLOUT) != 0 || exited { readReports(worker) }
                if exited { retire(worker) }
            }
            for worker in workers {
                if let deadline = worker.deadline, deadline.hasPassed, let job = worker.inFlight.first, let timeout = job.timeout {
                    worker.deadline = nil
                    finish(job, .failed(index: 0, .taskTimeout(seconds: timeout), before: []))
                    kill(worker)
                }
            }
            unlockAndComplete()
        }
    }

    /// Reads and handles every report waiting on the worker's channel.
    private func readReports(_ worker: PoolWorkerHandle) {
        let fd = worker.fd
        while true {
            var descriptors: [Int32] = []
            var received = Sys.Received.wouldBlock
            _ = try? worker.input.fill { buffer in
                received = try Sys.receiveSome(fd, into: buffer, descriptors: &descriptors, blocking: false)
                if case .bytes(let count) = received { return count }
                return 0
            }
            for fd in descriptors { Sys.close(fd) } // a worker sends none
            do {
                try worker.input.frames { body in try handle(body, from: worker) }
            } catch {
                // A worker that breaks the protocol is stopped like a dead one.
                kill(worker)
                return
            }
            guard case .bytes = received else { return }
        }
    }

    private func handle(_ body: UnsafeRawBufferPointer, from worker: PoolWorkerHandle) throws {
        var reader = ByteReader(body)
        let kind = try reader.readByte()
        switch WorkerFrames.ReportKind(rawValue: kind) {
        case .ready:
            worker.ready = true
            if let timeout = worker.inFlight.first?.timeout { worker.deadline = Deadline.after(validSeconds: timeout) }
        case .initializerFailed:
            let type = try reader.readString()
            let description = try reader.readString()
            breakPool(.initializerFailed(type: type, description: description))
        case .done, .failed:
            let seq = try reader.read(UInt64.self)
            let elapsed = try reader.read(UInt64.self)
            guard let job = worker.inFlight.first, job.seq == seq else {
                throw MP.Error.malformed(type: "pool report", reason: "report for order \(seq) out of turn")
            }
            worker.inFlight.removeFirst()
            job.worker = nil
            worker.deadline = nil
            worker.noteRunTime(elapsed)
            if kind == WorkerFrames.ReportKind.done.rawValue {
                finish(job, .done([UInt8](try reader.readRaw(reader.remaining))))
            } else {
                let index = Int(try reader.read(UInt32.self))
                let why = WorkerFrames.Failure(rawValue: try reader.readByte())
                let type = try reader.readString()
                let description = try reader.readString()
                let before = [UInt8](try reader.readRaw(reader.remaining))
                let error: MP.Error = switch why {
                case .result?: .result(.encodingFailed(type: type, reason: description))
                default: .taskFailed(type: type, description: description)
                }
                finish(job, .failed(index: index, error, before: before))
            }
            if let next = worker.inFlight.first, let timeout = next.timeout, worker.ready {
                worker.deadline = Deadline.after(validSeconds: timeout)
            }
        case .skipped:
            let seq = try reader.read(UInt64.self)
            guard let job = worker.inFlight.first, job.seq == seq else {
                throw MP.Error.malformed(type: "pool report", reason: "skip of order \(seq) out of turn")
            }
            worker.inFlight.removeFirst()
            job.worker = nil
            finish(job, .failed(index: 0, .cancelled, before: []))
        case nil:
            throw MP.Error.malformed(type: "pool report", reason: "unknown kind \(kind)")
        }
    }

    /// An initializer failed: no more tasks run (CPython starts new workers
    /// forever there); queued and later ones fail with its error.
    private func breakPool(_ error: MP.Error) {
        guard broken == nil else { return }
        broken = error
        refuseSubmissions(error)
        takeInbox()
        for job in queue.removeAll() { finish(job, .failed(index: 0, error, before: [])) }
    }

    /// A worker exited: its reports are read; the order it was running fails
    /// (unless the pool killed it for that order, which then already failed);
    /// the orders it had not started go back to the front of the queue; a
    /// replacement starts while there is work for it.
    private func retire(_ worker: PoolWorkerHandle) {
        readReports(worker)
        worker.stderr.pump()
        try? worker.process.join()
        let how = worker.dying ? "\(worker.process.name) (pid \(worker.pid)) was stopped" : Self.describeDeath(of: worker.process)
        let wasServing = workers.contains { $0 === worker }
        workers.removeAll { $0 === worker }
        dyingWorkers.removeAll { $0 === worker }
        let running = worker.running
        let lostFromOutside = !worker.ready && !worker.dying && Self.killedFromOutside(worker.process)
        if worker.ready || worker.dying {
            failedStarts = 0
            outsideLosses = 0
        } else if lostFromOutside {
            // Killed by another process before it was ready: not the
            // program's fault; replaced after a backoff (below).
            outsideLosses += 1
        } else if running != WorkerControl.initializing {
            // Dying before it could take an order (its program fails at
            // start): a few in a row and the pool stops trying.
            failedStarts += 1
            if failedStarts >= 3 {
                breakPool(.cannotStartWorker("\(failedStarts) workers in a row exited before taking a task; the last: \(Self.describeDeath(of: worker.process))"))
            }
        }
        var unstarted: [PoolJob] = []
        for job in worker.inFlight {
            job.worker = nil
            if job.finished { continue }
            if running == Int64(bitPattern: job.seq) {
                var how = Self.describeDeath(of: worker.process)
                if let fatal = worker.stderr.fatalLine { how += " (\(fatal))" }
                finish(job, .failed(index: 0, .workerDied(how), before: []))
            } else {
                unstarted.append(job)
            }
        }
        worker.inFlight = []
        if running == WorkerControl.initializing && broken == nil && !lostFromOutside {
            var how = Self.describeDeath(of: worker.process)
            if let fatal = worker.stderr.fatalLine { how += " (\(fatal))" }
            breakPool(.initializerFailed(type: "workerDied", description: "the worker died in the initializer: \(how)"))
        }
        if broken != nil {
            for job in unstarted { finish(job, .failed(index: 0, broken!, before: [])) }
        } else {
            queue.prepend(unstarted)
        }
        worker.channel.close()
        try? worker.process.close()
        guard state != .terminated, broken == nil, wasServing else {
            LibraryLog.log(.info, "pool worker \(how)")
            return
        }
        if state == .running || !queue.isEmpty {
            if outsideLosses > 1 {
                LibraryLog.log(.info, "pool worker \(how) before it was ready (\(outsideLosses) in a row); replaced after a backoff")
                deferStart()
            } else {
                replace(how)
            }
        }
    }

    /// Starts one replacement now; a start that fails is retried after a backoff.
    private func replace(_ how: String) {
        do {
            let replacement = try startWorker()
            workers.append(replacement)
            LibraryLog.log(.info, "pool worker \(how); replaced by \(replacement.process.name) (pid \(replacement.pid))")
        } catch {
            // No replacement (a process limit, no memory, a start method's
            // helper killed): retried with a backoff; with no worker left
            // after several tries, the queued tasks fail with the reason.
            outsideLosses += 1
            if workers.isEmpty && outsideLosses > 5 {
                for job in queue.removeAll() { finish(job, .failed(index: 0, error, before: [])) }
            }
            deferStart()
        }
    }

    /// One more replacement, after the backoff of `outsideLosses`: 10 ms,
    /// doubling, at most ``maxRestartBackoff``.
    private func deferStart() {
        pendingStarts += 1
        let backoff = min(Self.maxRestartBackoff, 0.005 * Double(1 << min(outsideLosses, 16)))
        let at = Deadline.after(validSeconds: backoff)!
        if restartAt.map({ at < $0 }) ?? true { restartAt = at }
    }

    /// Starts the replacements whose backoff has passed (lock held).
    private func startDeferred() {
        guard let at = restartAt, at.hasPassed else { return }
        restartAt = nil
        let count = pendingStarts
        pendingStarts = 0
        guard state != .terminated, broken == nil, state == .running || !queue.isEmpty else { return }
        for _ in 0..<count where workers.count < processes { replace("lost before it was ready") }
    }

    /// Whether a worker was ended by a signal from outside (another
    /// process's SIGKILL or SIGTERM, the kernel's OOM killer) rather than by
    /// its own hand (an exit, or a crash: SIGSEGV, SIGABRT, SIGILL, ...).
    static func killedFromOutside(_ process: MP.Process) -> Bool {
        guard case .signaled(let signal, _)? = process.exitStatus else { return false }
        return ![SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGPIPE, SIGXCPU, SIGXFSZ].contains(signal.rawValue)
    }

    private func terminateWorkers() {
        workers += dyingWorkers
        dyingWorkers = []
        LibraryLog.log(.info, "task pool terminated: \(workers.count) worker(s) killed")
        for worker in workers { try? worker.process.kill() }
        for worker in workers {
            try? worker.process.join()
            for job in worker.inFlight { finish(job, .failed(index: 0, .terminated, before: [])) }
            worker.channel.close()
            try? worker.process.close()
        }
        workers = []
        for job in queue.removeAll() { finish(job, .failed(index: 0, .terminated, before: [])) }
    }

    static func describeDeath(of process: MP.Process) -> String {
        PoolDispatcher.describeDeath(of: process)
    }
}
