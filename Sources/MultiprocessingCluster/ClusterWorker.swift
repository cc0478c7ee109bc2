import CoreMetrics
@_spi(Cluster) import Multiprocessing
import Foundation
import MultiprocessingPlatform
import PostgresNIO
import Synchronization
import Tracing

extension MP.Cluster {
    /// Serves the cluster's tasks: your own program in worker mode, on any
    /// machine that reaches the database (for example behind a command-line
    /// flag: `if CommandLine.arguments.contains("--worker") { try await MP.Cluster.runWorker(database: url) }`).
    ///
    /// It claims rows of its own build (`FOR UPDATE SKIP LOCKED`, a lease
    /// each), runs them on a local ``MP/TaskPool`` of `concurrency`
    /// processes, renews the leases while they run, and records results
    /// fenced by lease holder and attempt. It stops running a task its pool
    /// cancelled, and gives up a task whose lease it lost.
    ///
    /// SIGTERM (or ``stopWorkers()`` in this process) stops it gracefully:
    /// it claims nothing more, lets running tasks finish for up to one lease,
    /// hands the rest back (their attempt not counted), and returns.
    ///
    /// - Parameters:
    ///   - database: the PostgreSQL URL (as for ``MP/ClusterPool``).
    ///   - concurrency: local worker processes (default: the CPUs this process may use).
    ///   - startMethod: how they start (nil: the program's start method).
    ///   - lease: seconds a claimed task is this worker's without renewal; a
    ///     dead worker's tasks run elsewhere after it. At least 1.
    ///   - limits: what each local worker process may use (``MP/WorkerLimits``).
    ///     A task that goes over a limit fails as a task (it would anywhere):
    ///     its error names the limit, and it is not run again unless the pool
    ///     retries errors.
    public static func runWorker(database: String, concurrency: Int? = nil, startMethod: MP.StartMethod? = nil,
                                 lease: Double = 10, limits: MP.WorkerLimits? = nil) async throws(MP.Error) {
        try await runWorker(address: DatabaseAddress(database), concurrency: concurrency, startMethod: startMethod, lease: lease,
                            limits: limits)
    }

    /// The same, given postgres-nio's client configuration instead of a URL.
    public static func runWorker(database: PostgresClient.Configuration, concurrency: Int? = nil,
                                 startMethod: MP.StartMethod? = nil, lease: Double = 10,
                                 limits: MP.WorkerLimits? = nil) async throws(MP.Error) {
        try await runWorker(address: DatabaseAddress(configuration: database), concurrency: concurrency,
                            startMethod: startMethod, lease: lease, limits: limits)
    }

    static func runWorker(address: DatabaseAddress, concurrency: Int?, startMethod: MP.StartMethod?,
                          lease: Double, limits: MP.WorkerLimits? = nil) async throws(MP.Error) {
        guard lease >= 1 else { throw .invalidArgument("lease must be at least 1 s (got \(lease))") }
        let processes = concurrency ?? MP.processCpuCount()
        guard processes >= 1 else { throw .invalidArgument("concurrency must be at least 1 (got \(processes))") }
        let worker = try ClusterWorker(address: address, processes: processes, startMethod: startMethod, lease: lease, limits: limits)
        try await worker.run()
    }

    /// Asks every `runWorker(database:)` of this process to stop as on SIGTERM.
    public static func stopWorkers() { ClusterWorker.stopRequested.store(true, ordering: .sequentiallyConsistent) }
}

final class ClusterWorker: @unchecked Sendable {
    static let stopRequested = Atomic<Bool>(false)

    let store: ClusterStore
    let pool: MP.TaskPool
    let info: ClusterStore.WorkerInfo
    var owner: String { info.id }
    let build = _NamedTaskChunks.build
    let processes: Int
    let lease: Double
    /// The tracer in effect where the worker was started: a traced row runs
    /// in a consumer span of it, a child of the pool's span.
    private let tracer = InstrumentationSystem.tracer
    private let lock = NSLock()
    private var running: [Int64: (claim: ClusterStore.Claimed, submissions: [_NamedTaskChunks.Submission])] = [:]
    private var outcomes: [ClusterStore.Outcome] = []
    /// Rung by a notification (new rows, a cancelled pool) and by a finished row.
    private let wake = Bell()
    private var throughput = RowRate()
    /// Results dropped because their lease had passed on (shown in `mp_cluster_workers`).
    private var lateResults = 0
    /// Tasks finished and failed, for the last minute's figures in `mp_cluster_workers`.
    private var tally = TaskTally()
    /// Its swift-metrics counters and timer.
    let metrics = WorkerMetrics()

    init(address: DatabaseAddress, processes: Int, startMethod: MP.StartMethod?, lease: Double,
         limits: MP.WorkerLimits? = nil) throws(MP.Error) {
        if let limits { try limits.check() }
        store = try ClusterStore(address: address)
        do {
            pool = try MP.TaskPool(processes: processes, startMethod: startMethod, limits: limits)
        } catch {
            throw .database("cannot start the local worker processes: \(error)")
        }
        self.processes = processes
        self.lease = lease
        let host = ProcessInfo.processInfo.hostName
        info = .init(id: "\(host):\(Sys.getpid):\(UUID().uuidString.prefix(8))", build: build, host: host, pid: Sys.getpid,
                     concurrency: Int32(processes), lease: lease)
    }

    /// Asks this worker alone to stop as on SIGTERM (a service's graceful shutdown).
    let stopHere = Atomic<Bool>(false)

    private var stopping: Bool {
        Self.stopRequested.load(ordering: .sequentiallyConsistent) || stopHere.load(ordering: .sequentiallyConsistent)
    }

    /// `handlesSignals`: SIGTERM stops it (a worker program); a service leaves
    /// signals to its `ServiceGroup`.
    func run(handlesSignals: Bool = true) async throws(MP.Error) {
        Self.stopRequested.store(false, ordering: .sequentiallyConsistent)
        let terminate = MP.Signal.terminate.rawValue
        let previous = handlesSignals
            ? Sys.handle(signal: terminate) { _ in ClusterWorker.stopRequested.store(true, ordering: .sequentiallyConsistent) }
            : nil
        defer {
            if handlesSignals { Sys.restoreHandler(previous, for: terminate) }
            pool.terminate()
            try? pool.join()
            store.shutdown()
        }
        do {
            try await store.migrate()
            try await store.beat(info, lateResults: lock.locked { lateResults })
        } catch {
            if let error = error as? MP.Error { throw error }
            throw .database("cannot prepare the cluster's tables at \(store.address.description): \(String(reflecting: error))")
        }
        let listener = Task { [store, wake, self] in
            await store.listen([ClusterStore.newChannel, ClusterStore.cancelChannel]) { channel, _ in
                if channel == ClusterStore.newChannel { self.rowsMayWait.store(true, ordering: .sequentiallyConsistent) }
                wake.ring()
            }
        }
        defer { listener.cancel() }
        while !stopping {
            do {
                // Bounded: a query that waits for a connection for ever (the
                // database away) must not keep the worker from its stop signal.
                try await withDeadline(max(10, lease * 2), "a database call took longer than \(Int(max(10, lease * 2))) s") {
                    try await self.iterate()
                }
            } catch {
                // The database is away (restarting, a cut link): keep running what
                // we hold, record it when it is back (if our leases still hold).
                MP.getLogger().warning("cluster worker: database error: \(String(reflecting: error))")
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        await stopGracefully()
    }

    private var lastRenewal = ContinuousClock.now
    /// Set by a new-rows notification (and by listening again after a lost
    /// connection, which may have missed one) and by a claim that got all it
    /// asked for; cleared by the claim it causes. Without it, every turn of
    /// the loop claimed (after each recorded result, each wake-up), and the
    /// claim a notification asked for could wait behind one that found nothing.
    private let rowsMayWait = Atomic<Bool>(true)
    /// Claims also every 250 ms without a notification: a notification sent
    /// while the listening connection was away is lost, and a row retried
    /// with backoff becomes claimable with none.
    private var lastClaim = ContinuousClock.now
    private var lastReap = ContinuousClock.now
    private var lastSweep = ContinuousClock.now

    /// Rows to hold at once: one per local process, plus what arrives while
    /// a claim travels (Little's law: completion rate × about 50 ms). Long
    /// tasks hold one row per process, so idle workers elsewhere find the
    /// rest; tiny ones keep the local processes busy across the round trips.
    private var targetRows: Int {
        let rate = lock.locked { throughput.current }
        return processes + min(processes * 16, Int((rate * 0.05).rounded()))
    }

    /// One turn of the loop: record what finished, renew leases, reap expired
    /// ones, claim what fits, or wait for a notification, a finished row, or a poll.
    private func iterate() async throws {
        try await flushOutcomes()
        var maybeMore = false
        if ContinuousClock.now - lastRenewal >= .milliseconds(Int(lease * 1000 / 3)) {
            try await renewLeases()
            let (late, lastMinute) = lock.locked { (lateResults, tally.lastMinute()) }
            try await store.beat(info, lateResults: late, lastMinute: lastMinute)
            lastRenewal = .now
        }
        if ContinuousClock.now - lastReap >= .seconds(1) {
            try await store.reapExpired()
            lastReap = .now
        }
        if ContinuousClock.now - lastSweep >= .seconds(30) {
            try await store.sweep()
            lastSweep = .now
        }
        let room = targetRows - lock.locked { running.count }
        if room > 0, claimDue() {
            let asked = ContinuousClock.now
            let claimed: [ClusterStore.Claimed]
            do {
                claimed = try await store.claim(owner: owner, build: build, limit: room, lease: lease)
            } catch {
                rowsMayWait.store(true, ordering: .sequentiallyConsistent) // to be claimed when the database is back
                throw error
            }
            metrics.databaseRoundTrip.recordNanoseconds(WorkerMetrics.nanoseconds(since: asked))
            metrics.rowsClaimed.increment(by: claimed.count)
            start(claimed)
            // Fewer than asked: the queue is empty; claiming again at once
            // would only delay recording what is about to finish.
            maybeMore = claimed.count == room
            if maybeMore { rowsMayWait.store(true, ordering: .sequentiallyConsistent) }
        }
        if !maybeMore {
            let busy = lock.locked { !running.isEmpty || !outcomes.isEmpty }
            await wake.wait(timeout: busy ? .milliseconds(50) : .milliseconds(250))
        }
    }

    /// Whether to claim now (a notification, a full claim, or the poll), and
    /// if so, marks it done: a notification from now on asks again.
    private func claimDue() -> Bool {
        let asked = rowsMayWait.exchange(false, ordering: .sequentiallyConsistent)
        guard asked || ContinuousClock.now - lastClaim >= .milliseconds(250) else { return false }
        lastClaim = .now
        return true
    }

    /// Submits each claimed row's parts to the local pool; the last part to
    /// be ready finishes the row (a lost lease cancels a row's parts).
    private func start(_ claims: [ClusterStore.Claimed]) {
        guard !claims.isEmpty else { return }
        var started: [(ClusterStore.Claimed, [_NamedTaskChunks.Submission])] = []
        var spans: [Int64: TaskSpan] = [:]
        for claim in claims {
            do {
                let parts = try ClusterBundle.decodeParts(claim.payload)
                let submit = { [pool] in parts.map { _NamedTaskChunks.submit(name: claim.task, payload: $0.payload, on: pool) } }
                if let headers = claim.trace.flatMap(MP.TraceHeaders.init(headerLines:)),
                   let span = TaskSpan.begin("cluster \(claim.task)", kind: .consumer, in: headers.context(using: tracer), tracer: tracer) {
                    // The local pool's spans and the worker processes' context are children of this one.
                    spans[claim.id] = span
                    started.append((claim, ServiceContext.withValue(span.context) { submit() }))
                } else {
                    started.append((claim, submit()))
                }
            } catch {
                lock.locked {
                    running[claim.id] = (claim, [])
                    outcomes.append(.init(id: claim.id, attempt: claim.attempt, result: nil,
                                          failure: (.unrunnable, "MP.Error.unrunnable", "the row is malformed: \(error)")))
                }
            }
        }
        lock.locked { for (claim, submissions) in started { running[claim.id] = (claim, submissions) } }
        // Each row's outcome is made when its last part is ready, on the
        // local pool's thread: no thread waits (a thread made per claim put
        // its creation and one more hand-off on every row's path).
        for (claim, submissions) in started {
            let parts = PartsGathered(count: submissions.count)
            let finished: @Sendable ([Result<[UInt8], _NamedTaskChunks.Failure>]) -> Void = { [self, span = spans[claim.id], owner] all in
                let outcome = Self.outcome(of: claim, all)
                span?.end(error: outcome?.failure.map { MP.Error.taskFailed(type: $0.type, description: $0.description) }) {
                    $0["mp.task.count"] = claim.items
                    $0["mp.cluster.attempt"] = Int(claim.attempt)
                    $0["mp.cluster.worker"] = owner
                }
                finish(claim.id, outcome)
            }
            if submissions.isEmpty { finished([]) }
            for (index, submission) in submissions.enumerated() {
                submission.whenReady { outcome in
                    if let all = parts.add(outcome, at: index) { finished(all) }
                }
            }
        }
    }

    /// A row's outcome from its parts': the parts' results and errors (each
    /// part its own); the whole row again when a local process died (or, with
    /// `retryErrors`, a part threw and attempts are left); nil when cancelled.
    private static func outcome(of claim: ClusterStore.Claimed, _ outcomes: [Result<[UInt8], _NamedTaskChunks.Failure>]) -> ClusterStore.Outcome? {
        var parts: [ClusterBundle.PartOutcome] = []
        var lost: String?
        var cancelled = false
        for outcome in outcomes {
            switch outcome {
            case .success(let results): parts.append(.results(results))
            case .failure(.taskFailed(let type, let description)): parts.append(.threw(type: type, description: description))
            case .failure(.unrunnable(let why)): parts.append(.unrunnable(why))
            case .failure(.workerLost(let how)): lost = lost ?? how
            case .failure(.cancelled): cancelled = true
            }
        }
        if cancelled { return nil }
        if let lost {
            return .init(id: claim.id, attempt: claim.attempt, result: nil,
                         failure: (.lost, "MP.Error.workerLost", "a worker process died running it: \(lost)"))
        }
        if claim.retryErrors, claim.attempt < claim.maxAttempts {
            for case .threw(let type, let description) in parts {
                return .init(id: claim.id, attempt: claim.attempt, result: nil, failure: (.threw, type, description))
            }
        }
        let errors = parts.reduce(Int32(0)) { count, part in
            if case .threw = part { return count + 1 }
            return count
        }
        return .init(id: claim.id, attempt: claim.attempt, result: ClusterBundle.encode(parts), failure: nil, errors: errors)
    }

    private func finish(_ id: Int64, _ outcome: ClusterStore.Outcome?) {
        lock.locked {
            guard running[id] != nil else { return }
            if let outcome { outcomes.append(outcome) } else { running[id] = nil }
        }
        wake.ring()
    }

    /// Records finished rows in one batch; a late one (its lease lost) is dropped.
    ///
    /// Recording does not also claim, though one round trip could carry
    /// both: the claim would delay the commit, and with it the notification
    /// that hands the pool its result (0.1-0.2 ms of a lone `apply`, measured);
    /// the claim after it is off that path.
    private func flushOutcomes() async throws {
        let batch = lock.locked { () -> [ClusterStore.Outcome] in
            defer { outcomes.removeAll() }
            return outcomes
        }
        guard !batch.isEmpty else { return }
        do {
            let asked = ContinuousClock.now
            let recorded = try await store.record(batch, owner: owner)
            metrics.databaseRoundTrip.recordNanoseconds(WorkerMetrics.nanoseconds(since: asked))
            let late = batch.count - recorded.count
            if late > 0 { MP.getLogger().info("cluster worker: \(late) late result(s) dropped: their lease had passed to another attempt") }
            lock.locked {
                for outcome in batch where recorded.contains(outcome.id) {
                    let items = running[outcome.id]?.claim.items ?? 1
                    switch outcome.failure?.kind {
                    case nil: tally.add(finished: items, failed: Int(outcome.errors))
                    case .threw?, .unrunnable?: tally.add(finished: items, failed: items)
                    case .lost?: break // runs again
                    }
                }
                for outcome in batch { running[outcome.id] = nil }
                throughput.add(batch.count)
                lateResults += late
                metrics.lateResults.increment(by: late)
            }
        } catch {
            lock.locked { outcomes.insert(contentsOf: batch, at: 0) } // try again when the database is back
            throw error
        }
    }

    /// Extends the leases of running rows; stops those it no longer holds
    /// (cancelled by their pool, or expired and claimed again elsewhere).
    private func renewLeases() async throws {
        let ids = lock.locked { running.filter { entry in !outcomes.contains { $0.id == entry.key } }.map(\.key) }
        let asked = ContinuousClock.now
        let held = try await store.renew(owner: owner, ids: ids, lease: lease)
        metrics.databaseRoundTrip.recordNanoseconds(WorkerMetrics.nanoseconds(since: asked))
        metrics.leasesRenewed.increment(by: held.count)
        let lost = lock.locked { () -> [_NamedTaskChunks.Submission] in
            var submissions: [_NamedTaskChunks.Submission] = []
            for id in ids where !held.contains(id) {
                if let entry = running.removeValue(forKey: id) { submissions += entry.submissions }
            }
            return submissions
        }
        for submission in lost { submission.cancel() } // the task pool kills the local process running it
    }

    /// SIGTERM: no more claims; running rows may finish within one lease; the rest go back.
    private func stopGracefully() async {
        let deadline = ContinuousClock.now + .seconds(lease)
        let bound = max(5, lease)
        while ContinuousClock.now < deadline {
            _ = try? await withDeadline(bound, "") { try await self.flushOutcomes() }
            if lock.locked({ running.isEmpty }) { break }
            _ = try? await withDeadline(bound, "") { try await self.renewLeases() }
            await wake.wait(timeout: .milliseconds(100))
        }
        _ = try? await withDeadline(bound, "") { try await self.flushOutcomes() }
        let left = lock.locked { () -> [(Int64, [_NamedTaskChunks.Submission])] in
            defer { running.removeAll() }
            return running.map { ($0.key, $0.value.submissions) }
        }
        for (_, submissions) in left { for submission in submissions { submission.cancel() } }
        let ids = left.map(\.0)
        _ = try? await withDeadline(bound, "") { try await self.store.handBack(owner: self.owner, ids: ids) }
        _ = try? await withDeadline(bound, "") { try await self.store.leave(self.owner) }
    }
}

/// The outcomes of a row's parts as they become ready, in any order, on
/// the local pool's threads.
final class PartsGathered: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [Result<[UInt8], _NamedTaskChunks.Failure>?]
    private var left: Int

    init(count: Int) {
        outcomes = Array(repeating: nil, count: count)
        left = count
    }

    /// All of them, to the caller that adds the last.
    func add(_ outcome: Result<[UInt8], _NamedTaskChunks.Failure>, at index: Int) -> [Result<[UInt8], _NamedTaskChunks.Failure>]? {
        lock.locked {
            outcomes[index] = outcome
            left -= 1
            return left == 0 ? outcomes.map { $0! } : nil
        }
    }
}

/// Rows recorded per second, smoothed over half-second windows (it decays
/// while nothing is recorded).
/// Tasks finished and failed, and how many over the last minute: the
/// running totals with a sample at each heartbeat, the oldest within a
/// minute subtracted.
struct TaskTally {
    private var finished = 0
    private var failed = 0
    private var samples: [(at: ContinuousClock.Instant, finished: Int, failed: Int)] = [(.now, 0, 0)]

    mutating func add(finished: Int, failed: Int) {
        self.finished += finished
        self.failed += failed
    }

    mutating func lastMinute() -> (finished: Int, failed: Int) {
        let now = ContinuousClock.now
        samples.append((now, finished, failed))
        while samples.count > 1 && now - samples[1].at >= .seconds(60) { samples.removeFirst() }
        let base = samples.first { now - $0.at <= .seconds(60) } ?? samples[0]
        return (finished - base.finished, failed - base.failed)
    }
}

struct RowRate {
    private var perSecond: Double = 0
    private var count = 0
    private var since = ContinuousClock.now

    var current: Double {
        mutating get {
            add(0)
            return perSecond
        }
    }

    mutating func add(_ rows: Int) {
        count += rows
        let elapsed = ContinuousClock.now - since
        guard elapsed >= .milliseconds(500) else { return }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        perSecond = perSecond == 0 ? Double(count) / seconds : 0.5 * perSecond + 0.5 * Double(count) / seconds
        count = 0
        since = .now
    }
}

/// A cluster worker's metrics, through swift-metrics (silent with no backend):
///
/// | label | kind |
/// |---|---|
/// | `mp_cluster_rows_claimed_total` | counter |
/// | `mp_cluster_leases_renewed_total` | counter (rows whose lease was extended) |
/// | `mp_cluster_late_results_total` | counter (results dropped: the lease had passed on) |
/// | `mp_cluster_database_roundtrip_seconds` | timer (each claim, record and renewal) |
struct WorkerMetrics: Sendable {
    /// Tests only: the factory new workers use instead of the bootstrapped one.
    nonisolated(unsafe) static var factoryForTesting: (any MetricsFactory)?

    let rowsClaimed: CoreMetrics.Counter
    let leasesRenewed: CoreMetrics.Counter
    let lateResults: CoreMetrics.Counter
    let databaseRoundTrip: CoreMetrics.Timer

    init() {
        let factory = Self.factoryForTesting ?? MetricsSystem.factory
        rowsClaimed = CoreMetrics.Counter(label: "mp_cluster_rows_claimed_total", factory: factory)
        leasesRenewed = CoreMetrics.Counter(label: "mp_cluster_leases_renewed_total", factory: factory)
        lateResults = CoreMetrics.Counter(label: "mp_cluster_late_results_total", factory: factory)
        databaseRoundTrip = CoreMetrics.Timer(label: "mp_cluster_database_roundtrip_seconds", factory: factory)
    }

    static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }
}
