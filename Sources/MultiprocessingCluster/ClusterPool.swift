@_spi(Cluster) import Multiprocessing
import Foundation
import PostgresNIO
import Tracing

extension MP {
    /// Python's `Pool` for named tasks on many machines (Ray's
    /// `ray.util.multiprocessing.Pool`), with PostgreSQL as the engine: the
    /// workers are processes of the same build on any machine that reaches the
    /// database, each running `MP.Cluster.runWorker(database:)`.
    ///
    /// ```swift
    /// let pool = try await MP.ClusterPool(database: "postgres://app@db.internal/app")
    /// let squares = try await pool.map((0..<1000).map { Square(x: $0) }, chunksize: 100)
    /// pool.close(); try await pool.join()
    /// ```
    ///
    /// Semantics (see <doc:Semantics>): at-least-once
    /// execution, exactly-once results (a lease per claimed row, fenced
    /// completion); a lost worker's tasks run again after the lease, up to
    /// `maxAttempts`; a task that throws fails with its error's type and
    /// description (retried only with `retryErrors`); results come through
    /// LISTEN/NOTIFY with polling as the fallback; `terminate()` cancels
    /// queued and running tasks.
    public final class ClusterPool: @unchecked Sendable {
        let store: ClusterStore
        let id = UUID()
        let build = _NamedTaskChunks.build
        /// Attempts per task before a lost worker fails it.
        public let maxAttempts: Int
        /// Whether a task that throws is tried again (up to `maxAttempts`).
        public let retryErrors: Bool
        private let lock = NSLock()
        private var nextSeq: Int64 = 0
        /// The parts of each inserted row (by `seq`), in order.
        private var pending: [Int64: [Delivery]] = [:]
        /// Submitted, not yet in a row.
        private var unsent: [Unsent] = []
        /// Live worker slots of this build (refreshed every second): rows are
        /// sized so that each gets several.
        private var slots = 0
        private var rowsMade = 0
        /// Rows made so far (each one insert, however many tasks it carries).
        var insertedRows: Int { lock.locked { rowsMade } }
        private var state: State = .open
        private let flushBell = Bell()
        private let collectBell = Bell()
        private var loops: [Task<Void, Never>] = []
        private var drained: [CheckedContinuation<Void, Never>] = []

        enum State { case open, closed, terminated }

        typealias Delivery = (Result<[UInt8], MP.Error>) -> Void

        /// One submission: an `applyAsync`'s task or a map's chunk.
        struct Unsent {
            let task: String
            let part: ClusterBundle.Part
            let deliver: Delivery
            /// The trace's fields as header lines: only submissions of one trace share a row.
            let trace: String?
        }

        /// Connects to the database, creates the tables if missing, and
        /// starts delivering results.
        ///
        /// - Parameters:
        ///   - database: `postgres://user:password@host:port/database`, or with
        ///     `?host=/socket/directory` for a Unix socket; over TCP, libpq's
        ///     `sslmode` (`disable`, `prefer` (the default), `require`,
        ///     `verify-ca`, `verify-full`) and `sslrootcert` (a CA file).
        ///     Over TCP, not from a child forked from a Dispatch-using process
        ///     (NIO resolves addresses on Dispatch): that is refused.
        ///   - maxAttempts: how many times a task may run when its worker is
        ///     lost (SIGKILL, a dead machine, a cut link) before it fails.
        ///   - retryErrors: also retry a task that throws (Python does not);
        ///     the row it travels in (submissions packed together) runs again whole.
        public convenience init(database: String, maxAttempts: Int = 3, retryErrors: Bool = false) async throws(MP.Error) {
            try await self.init(address: DatabaseAddress(database), maxAttempts: maxAttempts, retryErrors: retryErrors)
        }

        /// The same, given postgres-nio's client configuration instead of a
        /// URL (your own TLS settings, timeouts, connection limits).
        public convenience init(database: PostgresClient.Configuration, maxAttempts: Int = 3,
                                retryErrors: Bool = false) async throws(MP.Error) {
            try await self.init(address: DatabaseAddress(configuration: database), maxAttempts: maxAttempts, retryErrors: retryErrors)
        }

        init(address: DatabaseAddress, maxAttempts: Int, retryErrors: Bool) async throws(MP.Error) {
            guard maxAttempts >= 1 else { throw .invalidArgument("maxAttempts must be at least 1 (got \(maxAttempts))") }
            store = try ClusterStore(address: address)
            self.maxAttempts = maxAttempts
            self.retryErrors = retryErrors
            do {
                try await store.migrate()
                try await store.openPool(id, build: build)
                slots = try await store.slots(build: build)
            } catch {
                store.shutdown()
                if let error = error as? MP.Error { throw error }
                throw .database("cannot prepare the cluster's tables at \(store.address.description): \(String(reflecting: error))")
            }
            loops = [
                Task { [weak self] in await self?.flushLoop() },
                Task { [weak self] in await self?.collectLoop() },
                Task { [store, id, collectBell] in
                    await store.listen([ClusterStore.doneChannel]) { [weak self] _, payload in
                        let (pool, row) = ClusterStore.parseDone(payload)
                        guard payload.isEmpty || pool == ClusterStore.payload(for: id) else { return }
                        // A small result comes in its notification: delivered
                        // now, its row forgotten by the next polling round
                        // (off the round trip); otherwise a round looks now.
                        if let row {
                            self?.deliverNotified(seq: row.seq, result: row.result)
                        } else {
                            collectBell.ring()
                        }
                    }
                },
            ]
        }

        deinit {
            for loop in loops { loop.cancel() }
            store.shutdown()
        }

        // MARK: submitting

        /// Queues one submission (a part of some row); `deliver` gets its
        /// chunk's encoded results (or how it failed).
        ///
        /// Inside a trace the submission gets a producer span, ended as its
        /// results arrive; its fields go in the row for the worker.
        private func submit(task: String, payload: [UInt8], items: Int, _ deliver: @escaping Delivery) throws(MP.Error) {
            var deliver = deliver
            let span = TaskSpan.begin("cluster \(task)", kind: .producer)
            if let span {
                deliver = { [deliver] outcome in
                    let error: MP.Error? = if case .failure(let error) = outcome { error } else { nil }
                    span.end(error: error) { $0["mp.task.count"] = items }
                    deliver(outcome)
                }
            }
            do {
                try lock.locked { () throws(MP.Error) in
                    guard state == .open else { throw state == .closed ? .closed : .cancelled }
                    unsent.append(Unsent(task: task, part: .init(items: items, payload: payload), deliver: deliver,
                                         trace: span.map(\.headers.description)))
                }
            } catch {
                span?.end(error: error)
                throw error
            }
            flushBell.ring()
        }

        /// Packs what waits into rows of one task name each, of about
        /// `items / (4 × slots)` tasks (Python's `map` chunk rule), at most
        /// 128, never splitting a submission; with no live worker known, one
        /// submission per row. Registers the rows' parts under new `seq`s.
        private func takeRows() -> [ClusterStore.NewRow] {
            lock.locked {
                guard !unsent.isEmpty else { return [] }
                let waiting = unsent
                unsent.removeAll()
                let total = waiting.reduce(0) { $0 + $1.part.items }
                let target = slots > 0 ? min(128, max(1, total / (4 * slots))) : 1
                var rows: [ClusterStore.NewRow] = []
                var index = 0
                while index < waiting.count {
                    let task = waiting[index].task
                    let trace = waiting[index].trace
                    var parts: [ClusterBundle.Part] = []
                    var deliveries: [Delivery] = []
                    var items = 0
                    while index < waiting.count, waiting[index].task == task, waiting[index].trace == trace,
                          parts.isEmpty || items + waiting[index].part.items <= target {
                        parts.append(waiting[index].part)
                        deliveries.append(waiting[index].deliver)
                        items += waiting[index].part.items
                        index += 1
                    }
                    let seq = nextSeq
                    nextSeq += 1
                    rowsMade += 1
                    pending[seq] = deliveries
                    rows.append(ClusterStore.NewRow(seq: seq, task: task, payload: ClusterBundle.encode(parts), items: Int32(items),
                                                    maxAttempts: Int32(maxAttempts), retryErrors: retryErrors, trace: trace))
                }
                return rows
            }
        }

        private func encode<T: NamedTask>(_ tasks: [T]) throws(MP.Error) -> [UInt8] {
            do { try _NamedTaskChunks.check(T.self) } catch { throw .task("\(error)") }
            do { return try _NamedTaskChunks.encode(tasks) } catch { throw .task("the task's arguments do not encode: \(error)") }
        }

        /// Python's `apply_async(f, args)`: runs `task` on some worker.
        public func applyAsync<T: NamedTask>(_ task: T) -> ClusterResult<T.Result> where T.Result: Sendable {
            let result = ClusterResult<T.Result>()
            do {
                try submit(task: T.name, payload: try encode([task]), items: 1) { outcome in
                    result.resolve(outcome.flatMap { bytes in
                        Result { () throws(MP.Error) in
                            do {
                                guard let first = try _NamedTaskChunks.decodeResults(T.self, from: bytes).first else {
                                    throw MP.Error.unrunnable("a worker returned no result")
                                }
                                return first
                            } catch {
                                if let error = error as? MP.Error, error.code == .unknownTask { throw error }
                                throw .unrunnable("the result does not decode: \(error)")
                            }
                        }
                    })
                }
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// Python's `apply(f, args)`: blocks until `task` ran on some worker.
        public func apply<T: NamedTask>(_ task: T, timeout: Double? = nil) throws(MP.Error) -> T.Result where T.Result: Sendable {
            try applyAsync(task).get(timeout: timeout)
        }

        /// `try await pool.apply(task)`.
        public func apply<T: NamedTask>(_ task: T) async throws(MP.Error) -> T.Result where T.Result: Sendable {
            try await applyAsync(task).value
        }

        /// Python's `map_async(f, iterable, chunksize)`: one row per chunk (a
        /// million tiny items with chunks of 10,000 are 100 rows).
        public func mapAsync<T: NamedTask>(_ tasks: [T], chunksize: Int? = nil) -> ClusterResult<[T.Result]> where T.Result: Sendable {
            let result = ClusterResult<[T.Result]>(progress: MP.Progress(total: tasks.count))
            let size = chunksize ?? max(1, tasks.count / 64 + (tasks.count % 64 == 0 ? 0 : 1))
            guard size >= 1 else {
                result.resolve(.failure(.invalidArgument("chunksize must be at least 1 (got \(size))")))
                return result
            }
            let chunks = stride(from: 0, to: tasks.count, by: size).map { Swift.Array(tasks[$0..<min($0 + size, tasks.count)]) }
            if chunks.isEmpty {
                result.resolve(.success([]))
                return result
            }
            let collected = MapCollector<T>(chunks: chunks.count) { result.resolve($0) }
            do {
                for (index, chunk) in chunks.enumerated() {
                    let items = chunk.count
                    try submit(task: T.name, payload: try encode(chunk), items: items) { outcome in
                        if case .failure = outcome { result.progress?.advance(by: items, failed: items) } else { result.progress?.advance(by: items) }
                        collected.deliver(index, outcome)
                    }
                }
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// Python's `map(f, iterable, chunksize)`: every result, in order.
        public func map<T: NamedTask>(_ tasks: [T], chunksize: Int? = nil, timeout: Double? = nil) throws(MP.Error) -> [T.Result] where T.Result: Sendable {
            try mapAsync(tasks, chunksize: chunksize).get(timeout: timeout)
        }

        /// `try await pool.map(tasks)`.
        public func map<T: NamedTask>(_ tasks: [T], chunksize: Int? = nil) async throws(MP.Error) -> [T.Result] where T.Result: Sendable {
            try await mapAsync(tasks, chunksize: chunksize).value
        }

        /// Python's `starmap`: `pool.starmap(pairs, Add.init)`.
        public func starmap<each A, T: NamedTask>(_ arguments: [(repeat each A)], _ make: (repeat each A) -> T,
                                                   chunksize: Int? = nil) async throws(MP.Error) -> [T.Result] where T.Result: Sendable {
            try await map(arguments.map { make(repeat each $0) }, chunksize: chunksize)
        }

        /// Python's `imap`: results in order, as they come; at most
        /// `bufferSize` chunks in flight (the input is read lazily).
        public func imap<S: Sequence>(_ tasks: S, chunksize: Int = 1, bufferSize: Int = 64) -> ClusterResults<S.Element>
            where S.Element: NamedTask, S.Element.Result: Sendable, S: Sendable {
            ClusterResults(pool: self, tasks: tasks, chunksize: max(1, chunksize), window: max(1, bufferSize), ordered: true)
        }

        /// Python's `imap_unordered`: results as they complete.
        public func imapUnordered<S: Sequence>(_ tasks: S, chunksize: Int = 1, bufferSize: Int = 64) -> ClusterResults<S.Element>
            where S.Element: NamedTask, S.Element.Result: Sendable, S: Sendable {
            ClusterResults(pool: self, tasks: tasks, chunksize: max(1, chunksize), window: max(1, bufferSize), ordered: false)
        }

        /// Submits one chunk for ``ClusterResults``.
        func submitChunk<T: NamedTask>(_ chunk: [T], _ deliver: @escaping (Result<[T.Result], MP.Error>) -> Void) where T.Result: Sendable {
            do {
                try submit(task: T.name, payload: try encode(chunk), items: chunk.count) { outcome in
                    deliver(outcome.flatMap { bytes in
                        Result { () throws(MP.Error) in
                            do { return try _NamedTaskChunks.decodeResults(T.self, from: bytes) } catch {
                                throw .unrunnable("the results do not decode: \(error)")
                            }
                        }
                    })
                }
            } catch {
                deliver(.failure(error))
            }
        }

        // MARK: closing

        /// Python's `close()`: no more tasks; the submitted ones complete.
        public func close() {
            lock.locked { if state == .open { state = .closed } }
        }

        /// Python's `terminate()`: queued tasks are cancelled, running ones
        /// told to stop (their workers kill the local processes running
        /// them); every pending result fails with ``MP/Error/Code/cancelled``.
        public func terminate() async {
            let dropped = lock.locked { () -> [Delivery] in
                state = .terminated
                defer {
                    unsent.removeAll()
                    pending.removeAll()
                }
                return unsent.map(\.deliver) + pending.values.flatMap { $0 }
            }
            try? await store.cancelAll(id)
            for deliver in dropped { deliver(.failure(.cancelled)) }
            finishIfDrained()
        }

        /// Python's `join()`: after `close()` (or `terminate()`), waits until
        /// every submitted task has its result, then removes the pool's rows.
        public func join() async throws(MP.Error) {
            let open = lock.locked { state == .open }
            if open { throw .invalidArgument("join() needs close() or terminate() first, as in Python") }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = lock.locked { () -> Bool in
                    if pending.isEmpty && unsent.isEmpty { return true }
                    drained.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
            for loop in loops { loop.cancel() }
            try? await store.closePool(id)
        }

        private func finishIfDrained() {
            let waiting = lock.locked { () -> [CheckedContinuation<Void, Never>] in
                guard pending.isEmpty && unsent.isEmpty else { return [] }
                defer { drained.removeAll() }
                return drained
            }
            for continuation in waiting { continuation.resume() }
        }

        // MARK: the loops

        /// Inserts what was submitted, in batches; retries while the database is away.
        private func flushLoop() async {
            var retry: [ClusterStore.NewRow] = []
            while !Task.isCancelled {
                if lock.locked({ state == .terminated }) { retry.removeAll() }
                // Several waiting and no worker known yet: look before packing
                // (the workers may have come up since the pool last looked).
                if retry.isEmpty && lock.locked({ slots == 0 && unsent.count > 1 }) {
                    _ = try? await withDeadline(10, "looking for workers took longer than 10 s") { [self] in try await refreshSlots() }
                }
                let batch = retry.isEmpty ? takeRows() : retry
                if batch.isEmpty {
                    await flushBell.wait(timeout: .seconds(1))
                    continue
                }
                do {
                    try await withDeadline(10, "inserting took longer than 10 s") { [store, id, build] in
                        try await store.insert(batch, pool: id, build: build)
                    }
                    retry.removeAll()
                } catch {
                    // The database is away (restarting): keep the rows and try
                    // again (an insert is all or none, and idempotent by seq).
                    retry = batch
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
        }

        private var lastBeat = ContinuousClock.now
        private var lastReap = ContinuousClock.now

        /// Delivers finished rows: on a notification, and by polling (a
        /// notification sent while the listening connection was away is lost).
        /// Each round is bounded: a query waiting for a connection for ever
        /// (the database away) is abandoned and tried again.
        private func collectLoop() async {
            while !Task.isCancelled {
                do {
                    try await withDeadline(10, "collecting took longer than 10 s") { [self] in try await self.collectOnce() }
                } catch {
                    try? await Task.sleep(for: .milliseconds(200))
                    continue
                }
                let idle = lock.locked { pending.isEmpty }
                await collectBell.wait(timeout: idle ? .seconds(1) : .milliseconds(250))
            }
        }

        private func collectOnce() async throws {
            // While no worker is known, look before delivering: the first
            // ones to come up are seen by the time their first result is.
            if lock.locked({ slots == 0 }) { try await refreshSlots() }
            let finished = try await store.finished(id)
            if !finished.isEmpty { try await deliver(finished) }
            if ContinuousClock.now - lastBeat > .seconds(5) {
                try await store.heartbeat(id)
                lastBeat = .now
            }
            if ContinuousClock.now - lastReap > .seconds(1) {
                try await store.reapExpired()
                try await refreshSlots()
                lastReap = .now
            }
        }

        private func refreshSlots() async throws {
            let live = try await store.slots(build: build)
            lock.locked { slots = live }
        }

        private func deliver(_ finished: [ClusterStore.Finished]) async throws {
            let lost = finished.filter { $0.state == "failed" && $0.errorType == ClusterStore.splitMarker }
            if !lost.isEmpty { try await split(lost) }
            var deliveries: [(Delivery, Result<[UInt8], MP.Error>)] = []
            lock.locked {
                for row in finished where !(row.state == "failed" && row.errorType == ClusterStore.splitMarker) {
                    guard let parts = pending.removeValue(forKey: row.seq) else { continue } // already delivered
                    let outcomes = Self.outcomes(of: row, parts: parts.count)
                    for (deliver, outcome) in zip(parts, outcomes) { deliveries.append((deliver, outcome)) }
                }
            }
            for (deliver, outcome) in deliveries { deliver(outcome) }
            finishIfDrained()
            // After delivering (off the round trip): a row seen again because
            // this failed is skipped above and forgotten then.
            try await store.forget(finished.map(\.seq), pool: id)
        }

        /// Rows that lost their worker while they carried several
        /// submissions: each is inserted again as two rows of half its parts
        /// (new `seq`s, attempts from zero: none of its tasks is known to be
        /// at fault until it is alone in a row). The old row is forgotten by
        /// the caller once the halves are in.
        private func split(_ rows: [ClusterStore.Finished]) async throws {
            var halves: [ClusterStore.NewRow] = []
            var undo: [(Int64, [Delivery], [Int64])] = []
            for row in rows {
                let stored = try await store.row(pool: id, seq: row.seq)
                let parts = stored.flatMap { try? ClusterBundle.decodeParts($0.payload) } ?? []
                let made = lock.locked { () -> [ClusterStore.NewRow] in
                    guard let deliveries = pending[row.seq], let stored, parts.count > 1, deliveries.count == parts.count else { return [] }
                    pending[row.seq] = nil
                    var made: [ClusterStore.NewRow] = []
                    let middle = parts.count / 2
                    for range in [0..<middle, middle..<parts.count] {
                        let seq = nextSeq
                        nextSeq += 1
                        rowsMade += 1
                        pending[seq] = Swift.Array(deliveries[range])
                        made.append(ClusterStore.NewRow(seq: seq, task: stored.task, payload: ClusterBundle.encode(Swift.Array(parts[range])),
                                                        items: Int32(parts[range].reduce(0) { $0 + $1.items }),
                                                        maxAttempts: Int32(maxAttempts), retryErrors: retryErrors,
                                                        trace: stored.trace))
                    }
                    undo.append((row.seq, deliveries, made.map(\.seq)))
                    return made
                }
                halves += made
            }
            guard !halves.isEmpty else { return }
            do {
                try await store.insert(halves, pool: id, build: build)
            } catch {
                // Not in: the lost rows stay as they were, to be split at the next look.
                lock.locked {
                    for (seq, deliveries, made) in undo {
                        for new in made { pending[new] = nil }
                        pending[seq] = deliveries
                    }
                }
                throw error
            }
        }

        /// Delivers a done row whose result came in its notification (once:
        /// the row's parts leave `pending` here or in ``deliver(_:)``).
        private func deliverNotified(seq: Int64, result: [UInt8]) {
            let row = ClusterStore.Finished(seq: seq, state: "done", result: result, errorType: nil, error: nil, attempt: 0)
            let deliveries = lock.locked { () -> [(Delivery, Result<[UInt8], MP.Error>)] in
                guard let parts = pending.removeValue(forKey: seq) else { return [] }
                return Swift.Array(zip(parts, Self.outcomes(of: row, parts: parts.count)))
            }
            for (deliver, outcome) in deliveries { deliver(outcome) }
            if !deliveries.isEmpty { finishIfDrained() }
        }

        /// Each part's outcome: its own results or error in a done row; the
        /// row's failure for every part of a failed or cancelled one.
        static func outcomes(of row: ClusterStore.Finished, parts: Int) -> [Result<[UInt8], MP.Error>] {
            let failure: MP.Error
            switch row.state {
            case "done":
                do {
                    let outcomes = try ClusterBundle.decodeOutcomes(row.result ?? [])
                    guard outcomes.count == parts else {
                        throw ClusterBundle.Malformed(description: "\(outcomes.count) outcome(s) for \(parts) part(s)")
                    }
                    return outcomes.map { outcome in
                        switch outcome {
                        case .results(let bytes): .success(bytes)
                        case .threw(let type, let description): .failure(.taskFailed(type: type, description: description))
                        case .unrunnable(let why): .failure(.unrunnable(why))
                        }
                    }
                } catch {
                    failure = .unrunnable("the row's result is malformed: \(error)")
                }
            case "cancelled": failure = .cancelled
            default:
                let type = row.errorType ?? "error"
                let description = row.error ?? ""
                if type == "MP.Error.workerLost" {
                    failure = .workerLost(attempts: Int(row.attempt), reason: description)
                } else if type == "MP.Error.unrunnable" {
                    failure = .unrunnable(description)
                } else {
                    failure = .taskFailed(type: type, description: description)
                }
            }
            return Swift.Array(repeating: .failure(failure), count: parts)
        }
    }
}

/// Gathers a map's chunks in order; the first failure fails the map.
final class MapCollector<T: MP.NamedTask>: @unchecked Sendable where T.Result: Sendable {
    private let lock = NSLock()
    private var parts: [[T.Result]?]
    private var left: Int
    private var finished = false
    private let done: (Result<[T.Result], MP.Error>) -> Void

    init(chunks: Int, done: @escaping (Result<[T.Result], MP.Error>) -> Void) {
        parts = Array(repeating: nil, count: chunks)
        left = chunks
        self.done = done
    }

    func deliver(_ index: Int, _ outcome: Result<[UInt8], MP.Error>) {
        let decoded: Result<[T.Result], MP.Error> = outcome.flatMap { bytes in
            Result { () throws(MP.Error) in
                do { return try _NamedTaskChunks.decodeResults(T.self, from: bytes) } catch {
                    throw .unrunnable("the results do not decode: \(error)")
                }
            }
        }
        let final: Result<[T.Result], MP.Error>? = lock.locked {
            guard !finished else { return nil }
            switch decoded {
            case .failure(let error):
                finished = true
                return .failure(error)
            case .success(let values):
                parts[index] = values
                left -= 1
                guard left == 0 else { return nil }
                finished = true
                return .success(parts.flatMap { $0! })
            }
        }
        if let final { done(final) }
    }
}
