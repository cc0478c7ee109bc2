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
///
/// A task's path reads in one direction through the files of this type:
/// here it is submitted (or queued in the inbox); `+Scheduler` picks a
/// worker and writes the order; `+Thread` polls; `+Reports` reads the
/// worker's frames and completes the task; `+Supervisor` starts, retires
/// and replaces workers; `+Arenas` keeps the shared blocks a map uses.
final class TaskPoolCore: @unchecked Sendable {
    let processes: Int
    let method: MP.StartMethod
    let initializer: AnyNamedTask?
    let maxTasksPerChild: Int?
    /// The workers' limits (``MP/WorkerLimits``); each worker gets its own cgroup.
    let limits: MP.WorkerLimits?
    /// What each worker keeps per order (CPU limit, soft time limit,
    /// recycling, usage), sent to it as it starts.
    let rules: WorkerRules
    /// Its swift-metrics counters, timers and gauge.
    let metrics = PoolMetrics(pool: "task_pool")
    let lock = ForkSafeLock()
    let finished = OneShotEvent()

    enum State { case running, closed, terminated }
    var state = State.running
    /// Set when a worker's initializer failed: every later task fails with it.
    var broken: MP.Error?
    var queue = JobQueue()
    var workers: [PoolWorkerHandle] = []
    /// Workers the pool killed (a timeout, a cancellation), until they are reaped;
    /// their replacements are already in `workers`.
    var dyingWorkers: [PoolWorkerHandle] = []
    var typeIndex: [String: UInt32] = [:]
    var typeNames: [String] = []
    var cachedArena: PoolArena?
    var nextArenaId: UInt64 = 1
    var started = 0
    /// Workers in a row that failed by their own hand before taking an order
    /// (they exited or crashed): at three the pool stops trying.
    var failedStarts = 0
    /// Workers in a row lost before they were ready for a reason outside
    /// them (a signal such as SIGKILL from another process, a start that
    /// failed): replaced with a bounded exponential backoff, never counted
    /// against the pool.
    var outsideLosses = 0
    /// Replacements waiting for their backoff to pass.
    var pendingStarts = 0
    var restartAt: Deadline?
    /// The longest wait between replacements while starts keep being lost.
    static let maxRestartBackoff = 1.0
    /// Completions decided under the lock, run after it is released.
    var completions: [(PoolJob, PoolJob.Outcome)] = []
    let wakeRead: Int32
    let wakeWrite: Int32
    var wakeSignalled = false
    /// Workers holding no order: kept by whoever holds `lock`, read without
    /// it as a hint of whether a submission should send at once.
    let idleWorkers = Atomic<Int>(0)
    /// Submissions while every worker is busy: a short lock of their own,
    /// so submitting threads do not wait on the pool's thread, which takes
    /// them in batches.
    let inboxLock = ForkSafeLock()
    var inbox: [PoolJob] = []
    var inboxRefusal: MP.Error?
    var inboxWakeSignalled = false

    /// Workers replaced because their resident memory passed the recycling threshold.
    var recycledWorkers = 0
    /// Workers that have exited, and what they used (the latest ``pastWorkerLimit``).
    var pastWorkers: [MP.WorkerUsage] = []
    static let pastWorkerLimit = 256

    init(processes: Int, method: MP.StartMethod, initializer: AnyNamedTask?, maxTasksPerChild: Int?,
         limits: MP.WorkerLimits? = nil, recordUsage: Bool = false) throws(MP.OSError) {
        self.processes = processes
        self.method = method
        self.initializer = initializer
        self.maxTasksPerChild = maxTasksPerChild
        self.limits = limits
        self.rules = WorkerRules(cpuTime: limits?.cpuTime, softTimeLimit: limits?.softTimeLimit,
                                 recycleAbove: limits?.recycleAboveResidentMemory, recordUsage: recordUsage)
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



    var workerPids: [Int32] { lock.withLock { workers.map(\.pid) } }

    /// The memory enforcement the workers get (the first worker's says it for all).
    var memoryEnforcement: MP.WorkerLimits.MemoryEnforcement? {
        lock.withLock { workers.first?.process.memoryEnforcement ?? dyingWorkers.first?.process.memoryEnforcement }
    }

    var workerUsage: [MP.WorkerUsage] {
        let (live, past) = lock.withLock { (workers.map { ($0.process.name, $0.pid, $0.ordersDone, $0.ending, $0.peakReported) }, pastWorkers) }
        return past + live.map { name, pid, tasks, ending, peak in
            var usage = Sys.usage(of: pid).map(MP.ResourceUsage.init) ?? MP.ResourceUsage(userSeconds: 0, systemSeconds: 0, peakResidentBytes: 0)
            usage.peakResidentBytes = max(usage.peakResidentBytes, peak)
            return MP.WorkerUsage(name: name, pid: pid, tasks: tasks, usage: usage, isAlive: true, ending: ending)
        }
    }

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
        metrics.submitted.increment(by: jobs.count == 1 ? jobs[0].items : jobs.reduce(0) { $0 + $1.items })
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
    func submitNow(_ jobs: [PoolJob]) {
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
    func takeInbox() {
        let jobs = inboxLock.withLock { () -> [PoolJob] in
            inboxWakeSignalled = false
            defer { inbox = [] }
            return inbox
        }
        for job in jobs { queue.append(job) }
    }

    func refuseSubmissions(_ error: MP.Error) {
        inboxLock.withLock { if inboxRefusal == nil || error == .terminated { inboxRefusal = error } }
    }

    /// Cancels a job: a queued one never runs; a held one is skipped by its
    /// worker, or, if it may be running, its worker is killed (and replaced).
    func cancel(_ job: PoolJob) {
        lock.lock()
        if !job.finished {
            finish(job, .failed(index: 0, .cancelled, before: []))
            if let worker = job.worker, !worker.dying {
                if worker.inFlight.first === job || worker.cancel(job.seq) {
                    worker.ending = "killed: its task was cancelled"
                    kill(worker)
                }
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

    // MARK: scheduling (lock held)








}
