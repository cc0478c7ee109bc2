import Foundation
import MultiprocessingPlatform
import NIOCore
import NIOPosix
import PostgresNIO
import Logging

/// The cluster's tables and every query on them: the one place SQL lives.
///
/// One row is one chunk of named tasks (a map's chunk, or one task of
/// `apply`). A worker claims rows with `FOR UPDATE SKIP LOCKED` and a lease;
/// a result is recorded only by the lease's current holder and attempt
/// (fencing), so a late result from a worker that lost its lease is dropped.
final class ClusterStore: Sendable {
    let client: PostgresClient
    private let runner: Task<Void, Never>
    /// Its own event loop, made in the process that uses it: NIO's shared
    /// group is not fork-safe (a forked child inherits it without its
    /// threads, and every query there would wait for ever).
    private let group: MultiThreadedEventLoopGroup
    let address: DatabaseAddress

    static let doneChannel = "mp_cluster_done"

    /// The error type of a row that lost its worker while it carried several
    /// submissions: not a failure its tasks see, but a request to the pool's
    /// owner to run its parts again in two rows of half as many (so a task
    /// that kills every worker is alone in a row after a few rounds, and only
    /// then counts attempts toward ``MP/Error/Code/workerDied``).
    static let splitMarker = "MP.Error.split"

    /// A row's number of parts, in SQL: the payload's first `u32`, little-endian (1 for a malformed payload).
    static let partsSQL = """
        (CASE WHEN octet_length(payload) >= 4 THEN get_byte(payload, 0) + get_byte(payload, 1) * 256
              + get_byte(payload, 2) * 65536 + get_byte(payload, 3)::bigint * 16777216 ELSE 1 END)
        """

    /// A pool's notification payload: its id as PostgreSQL writes a uuid as
    /// text (lower case), so that SQL (`pool::text`) and Swift agree.
    static func payload(for pool: UUID) -> String { pool.uuidString.lowercased() }

    /// The largest result that travels in its notification (base64 makes
    /// 5,600 bytes 7,468, with newlines; a payload must stay under 8,000).
    static let resultInNotification = 5_600

    /// A done-notification's parts: the pool's id, and for a small result
    /// its row's `seq` and bytes.
    static func parseDone(_ payload: String) -> (pool: String, row: (seq: Int64, result: [UInt8])?) {
        let parts = payload.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let seq = Int64(parts[1]),
              let bytes = Data(base64Encoded: String(parts[2]), options: .ignoreUnknownCharacters) else {
            return (String(parts.first ?? ""), nil)
        }
        return (String(parts[0]), (seq, Array(bytes)))
    }
    static let newChannel = "mp_cluster_new"
    static let cancelChannel = "mp_cluster_cancel"

    convenience init(url: String) throws(MP.Error) {
        try self.init(address: DatabaseAddress(url))
    }

    init(address: DatabaseAddress) throws(MP.Error) {
        self.address = address
        // NIO resolves a TCP address on Dispatch, whose threads a child forked
        // from a Dispatch-using parent lacks: every connection would time out.
        if address.isTCP && !MP.isDispatchUsable {
            throw .invalidArgument("""
                this process was forked from one that used Dispatch, and NIO resolves TCP addresses on Dispatch: \
                connect to \(address.description) from a process started by spawn or forkserver (a named task, or \
                your program in worker mode), or through a Unix socket (?host=/socket/directory)
                """)
        }
        // PostgresNIO logs every failed connection attempt at `info`; the
        // cluster reports what matters itself (MP.getLogger()).
        let quiet = Logger(label: "swift-multiprocessing.cluster.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = PostgresClient(configuration: address.configuration, eventLoopGroup: group, backgroundLogger: quiet)
        self.client = client
        runner = Task { await client.run() }
    }

    deinit {
        runner.cancel()
        group.shutdownGracefully { _ in }
    }

    func shutdown() { runner.cancel() }

    /// Creates the tables if missing, once across concurrent callers; fails
    /// after `timeout` seconds when the database cannot be reached (the
    /// client would otherwise retry for ever).
    func migrate(timeout: Double = 15) async throws {
        // One direct connection first: its error is the real one (refused, no
        // such socket, a wrong password), where the pool would retry quietly.
        do {
            if let probeConfiguration = address.probeConfiguration {
                let probe = try await PostgresConnection.connect(on: group.next(), configuration: probeConfiguration, id: 0,
                                                                 logger: Self.logger)
                try await probe.close()
            }
        } catch {
            throw MP.Error.database("cannot connect to PostgreSQL at \(address.description): \(Self.reason(error))")
        }
        try await withDeadline(timeout, "cannot reach PostgreSQL at \(address.description) within \(Int(timeout)) s") {
            try await self.createTables()
        }
    }

    private func createTables() async throws {
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: Self.logger)
            do {
                try await connection.query("SELECT pg_advisory_xact_lock(7166001)", logger: Self.logger)
                for statement in Self.schema { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: Self.logger) }
                try await connection.query("COMMIT", logger: Self.logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: Self.logger)
                throw error
            }
        }
    }

    /// A PostgreSQL error's useful part (its server message, or the socket error).
    static func reason(_ error: any Swift.Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return "\(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }

    static let logger = Logger(label: "swift-multiprocessing.cluster.sql", factory: { _ in SwiftLogNoOpLogHandler() })

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS mp_cluster_pools (
            id        uuid PRIMARY KEY,
            build     text NOT NULL,
            heartbeat timestamptz NOT NULL DEFAULT now(),
            state     text NOT NULL DEFAULT 'open'
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS mp_cluster_tasks (
            id            bigserial PRIMARY KEY,
            pool          uuid        NOT NULL,
            seq           bigint      NOT NULL,
            build         text        NOT NULL,
            task          text        NOT NULL,
            payload       bytea       NOT NULL,
            items         integer     NOT NULL,
            state         text        NOT NULL DEFAULT 'queued',
            attempt       integer     NOT NULL DEFAULT 0,
            max_attempts  integer     NOT NULL,
            retry_errors  boolean     NOT NULL DEFAULT false,
            lease_owner   text,
            lease_expires timestamptz,
            not_before    timestamptz NOT NULL DEFAULT now(),
            result        bytea,
            error_type    text,
            error         text,
            created_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            UNIQUE (pool, seq),
            CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled'))
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS mp_cluster_workers (
            id           text PRIMARY KEY,
            build        text NOT NULL,
            host         text NOT NULL,
            pid          integer NOT NULL,
            concurrency  integer NOT NULL,
            lease        double precision NOT NULL,
            late_results bigint NOT NULL DEFAULT 0,
            started_at   timestamptz NOT NULL DEFAULT now(),
            heartbeat    timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX IF NOT EXISTS mp_cluster_tasks_claim ON mp_cluster_tasks (build, id) WHERE state = 'queued'",
        "CREATE INDEX IF NOT EXISTS mp_cluster_tasks_lease ON mp_cluster_tasks (lease_expires) WHERE state = 'running'",
        "CREATE INDEX IF NOT EXISTS mp_cluster_tasks_finished ON mp_cluster_tasks (pool) WHERE state IN ('done', 'failed', 'cancelled')",
        // The tasks of a done row that threw (its parts keep each error for
        // the pool): what the status view counts as failures. Added to the
        // tables of earlier versions too.
        "ALTER TABLE mp_cluster_tasks ADD COLUMN IF NOT EXISTS errors integer NOT NULL DEFAULT 0",
        // Each worker's tasks finished and failed over its last minute, sent
        // with its heartbeat (a pool deletes rows as it takes their results,
        // so the rows cannot say it).
        "ALTER TABLE mp_cluster_workers ADD COLUMN IF NOT EXISTS finished_last_minute bigint NOT NULL DEFAULT 0",
        "ALTER TABLE mp_cluster_workers ADD COLUMN IF NOT EXISTS failed_last_minute bigint NOT NULL DEFAULT 0",
        // The trace the row's tasks were submitted in, as header lines (W3C
        // `traceparent`, `tracestate` with an OpenTelemetry tracer); NULL outside a trace.
        "ALTER TABLE mp_cluster_tasks ADD COLUMN IF NOT EXISTS trace text",
    ]

    // MARK: prepared statements

    /// The statements of every task's path (insert, claim, record, collect,
    /// forget), prepared once per connection: parsing and planning them
    /// again on every call was most of each round trip's time on the server
    /// (0.3-0.4 ms of a claim's, measured with `log_min_duration_statement`).
    /// Each names itself: the protocol's default name is
    /// `String(reflecting: Self.self)`, made again on every call (a third of
    /// the pool's thread time in a profile of `apply`).
    protocol PreparedStatement: PostgresPreparedStatement {}

    /// A statement whose rows carry nothing the caller reads.
    protocol PreparedCommand: PreparedStatement where Row == Void {}

    /// Runs `statement` on a connection of the pool, its rows read to the end.
    @discardableResult
    func run<Statement: PreparedStatement>(_ statement: Statement) async throws -> [Statement.Row] {
        var rows: [Statement.Row] = []
        for try await row in try await client.execute(statement, logger: Self.logger) { rows.append(row) }
        return rows
    }

    // MARK: the owner's side

    func openPool(_ pool: UUID, build: String) async throws {
        try await client.query("INSERT INTO mp_cluster_pools (id, build) VALUES (\(pool), \(build))", logger: Self.logger)
    }

    func heartbeat(_ pool: UUID) async throws {
        try await client.query("UPDATE mp_cluster_pools SET heartbeat = now() WHERE id = \(pool)", logger: Self.logger)
    }

    struct NewRow: Sendable {
        let seq: Int64
        let task: String
        let payload: [UInt8]
        let items: Int32
        let maxAttempts: Int32
        let retryErrors: Bool
        /// ``MP/TraceHeaders`` as header lines; nil outside a trace.
        var trace: String? = nil
    }

    /// Inserts rows (in statements of at most 5,000), then wakes idle workers.
    func insert(_ rows: [NewRow], pool: UUID, build: String) async throws {
        for batch in stride(from: 0, to: rows.count, by: 5_000).map({ rows[$0..<min($0 + 5_000, rows.count)] }) {
            try await run(Insert(pool: pool, build: build, rows: batch))
        }
    }

    /// One round trip: the insert, and the notification that wakes idle
    /// workers. Idempotent: a batch whose answer was lost (a restart) is sent again.
    struct Insert: PreparedCommand {
        static let name = "mp_cluster_insert"
        static let sql = """
            WITH inserted AS (
                INSERT INTO mp_cluster_tasks (pool, build, seq, task, payload, items, max_attempts, retry_errors, trace)
                SELECT $1, $2, s, t, p, i, m, r, NULLIF(tr, '')
                FROM unnest($3::bigint[], $4::text[], $5::bytea[], $6::int[], $7::int[], $8::bool[], $9::text[]) AS u(s, t, p, i, m, r, tr)
                ON CONFLICT (pool, seq) DO NOTHING)
            SELECT pg_notify('\(ClusterStore.newChannel)', '')::text
            """
        let pool: UUID
        let build: String
        let rows: ArraySlice<NewRow>

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 9)
            bindings.append(pool)
            bindings.append(build)
            bindings.append(rows.map(\.seq))
            bindings.append(rows.map(\.task))
            bindings.append(rows.map { ByteBuffer(bytes: $0.payload) })
            bindings.append(rows.map(\.items))
            bindings.append(rows.map(\.maxAttempts))
            bindings.append(rows.map(\.retryErrors))
            bindings.append(rows.map { $0.trace ?? "" })
            return bindings
        }
    }

    struct Finished: Sendable {
        let seq: Int64
        let state: String
        let result: [UInt8]?
        let errorType: String?
        let error: String?
        let attempt: Int32
    }

    /// The pool's finished rows (not removed: see ``forget(_:pool:)``).
    func finished(_ pool: UUID) async throws -> [Finished] {
        try await run(FinishedRows(pool: pool))
    }

    struct FinishedRows: PreparedStatement {
        static let name = "mp_cluster_finished"
        static let sql = """
            SELECT seq, state, result, error_type, error, attempt FROM mp_cluster_tasks
            WHERE pool = $1 AND state IN ('done', 'failed', 'cancelled')
            """
        let pool: UUID

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(pool)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Finished {
            let (seq, state, result, errorType, error, attempt) = try row.decode((Int64, String, ByteBuffer?, String?, String?, Int32).self)
            return Finished(seq: seq, state: state, result: result.map { Array(buffer: $0) }, errorType: errorType, error: error,
                            attempt: attempt)
        }
    }

    /// The task name and payload of one of `pool`'s rows (a lost row its owner splits).
    func row(pool: UUID, seq: Int64) async throws -> (task: String, payload: [UInt8], trace: String?)? {
        let rows = try await client.query("SELECT task, payload, trace FROM mp_cluster_tasks WHERE pool = \(pool) AND seq = \(seq)",
                                          logger: Self.logger)
        for try await (task, payload, trace) in rows.decode((String, ByteBuffer, String?).self) {
            return (task, Array(buffer: payload), trace)
        }
        return nil
    }

    /// Removes rows whose outcome the owner has taken.
    func forget(_ seqs: [Int64], pool: UUID) async throws {
        try await run(Forget(pool: pool, seqs: seqs))
    }

    struct Forget: PreparedCommand {
        static let name = "mp_cluster_forget"
        static let sql = "DELETE FROM mp_cluster_tasks WHERE pool = $1 AND seq = ANY($2::bigint[])"
        let pool: UUID
        let seqs: [Int64]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 2)
            bindings.append(pool)
            bindings.append(seqs)
            return bindings
        }
    }

    /// Cancels the pool's queued and running rows; workers running them stop.
    func cancelAll(_ pool: UUID) async throws {
        try await client.query("""
            UPDATE mp_cluster_tasks SET state = 'cancelled', lease_owner = NULL, lease_expires = NULL, finished_at = now()
            WHERE pool = \(pool) AND state IN ('queued', 'running')
            """, logger: Self.logger)
        try await client.query("SELECT pg_notify(\(Self.cancelChannel), \(Self.payload(for: pool)))", logger: Self.logger)
    }

    func closePool(_ pool: UUID) async throws {
        try await client.query("DELETE FROM mp_cluster_tasks WHERE pool = \(pool)", logger: Self.logger)
        try await client.query("DELETE FROM mp_cluster_pools WHERE id = \(pool)", logger: Self.logger)
    }

    /// The worker slots (local processes) of live workers of `build`: the
    /// pool sizes its rows so that each slot gets several.
    func slots(build: String) async throws -> Int {
        let rows = try await client.query("""
            SELECT coalesce(sum(concurrency), 0)::bigint FROM mp_cluster_workers
            WHERE build = \(build) AND heartbeat > now() - make_interval(secs => 3 * lease)
            """, logger: Self.logger)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    // MARK: the workers' side

    struct WorkerInfo: Sendable {
        let id: String
        let build: String
        let host: String
        let pid: Int32
        let concurrency: Int32
        let lease: Double
    }

    /// Says (again) that this worker is alive, with the late results it
    /// dropped so far: its row in `mp_cluster_workers`.
    /// A worker's heartbeat, with what it finished and what failed over its last minute.
    func beat(_ worker: WorkerInfo, lateResults: Int, lastMinute: (finished: Int, failed: Int) = (0, 0)) async throws {
        try await client.query("""
            INSERT INTO mp_cluster_workers (id, build, host, pid, concurrency, lease, late_results, finished_last_minute, failed_last_minute)
            VALUES (\(worker.id), \(worker.build), \(worker.host), \(worker.pid), \(worker.concurrency), \(worker.lease), \(Int64(lateResults)),
                    \(Int64(lastMinute.finished)), \(Int64(lastMinute.failed)))
            ON CONFLICT (id) DO UPDATE SET heartbeat = now(), late_results = excluded.late_results,
                finished_last_minute = excluded.finished_last_minute, failed_last_minute = excluded.failed_last_minute
            """, logger: Self.logger)
    }

    /// A worker stopping gracefully leaves the table.
    func leave(_ worker: String) async throws {
        try await client.query("DELETE FROM mp_cluster_workers WHERE id = \(worker)", logger: Self.logger)
    }

    struct Claimed: Sendable {
        let id: Int64
        let attempt: Int32
        let task: String
        let payload: [UInt8]
        let pool: UUID
        let maxAttempts: Int32
        let retryErrors: Bool
        /// The tasks the row carries.
        var items = 1
        /// The trace it was submitted in (header lines), or nil.
        var trace: String? = nil
    }

    /// Claims up to `limit` queued rows of `build` for `owner`, leased for `lease` seconds.
    func claim(owner: String, build: String, limit: Int, lease: Double) async throws -> [Claimed] {
        try await run(Claim(owner: owner, build: build, limit: Int64(limit), lease: lease)).sorted { $0.id < $1.id }
    }

    struct Claim: PreparedStatement {
        static let name = "mp_cluster_claim"
        static let sql = """
            UPDATE mp_cluster_tasks t
            SET state = 'running', attempt = t.attempt + 1, lease_owner = $1,
                lease_expires = now() + make_interval(secs => $2)
            FROM (SELECT id FROM mp_cluster_tasks
                  WHERE state = 'queued' AND build = $3 AND not_before <= now()
                  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) c
            WHERE t.id = c.id
            RETURNING t.id, t.attempt, t.task, t.payload, t.pool, t.max_attempts, t.retry_errors, t.items, t.trace
            """
        let owner: String
        let build: String
        let limit: Int64
        let lease: Double

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 4)
            bindings.append(owner)
            bindings.append(lease)
            bindings.append(build)
            bindings.append(limit)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Claimed {
            let (id, attempt, task, payload, pool, maxAttempts, retryErrors, items, trace)
                = try row.decode((Int64, Int32, String, ByteBuffer, UUID, Int32, Bool, Int32, String?).self)
            return Claimed(id: id, attempt: attempt, task: task, payload: Array(buffer: payload), pool: pool,
                           maxAttempts: maxAttempts, retryErrors: retryErrors, items: Int(items), trace: trace)
        }
    }

    /// Extends the leases `owner` still holds among `ids`; the ones it holds.
    func renew(owner: String, ids: [Int64], lease: Double) async throws -> Set<Int64> {
        guard !ids.isEmpty else { return [] }
        let rows = try await client.query("""
            UPDATE mp_cluster_tasks SET lease_expires = now() + make_interval(secs => \(lease))
            WHERE lease_owner = \(owner) AND state = 'running' AND id = ANY(\(ids))
            RETURNING id
            """, logger: Self.logger)
        var held = Set<Int64>()
        for try await id in rows.decode(Int64.self) { held.insert(id) }
        return held
    }

    struct Outcome: Sendable {
        let id: Int64
        let attempt: Int32
        /// nil: the results; otherwise how it failed.
        let result: [UInt8]?
        let failure: (kind: FailureKind, type: String, description: String)?
        /// Of a done row: its tasks that threw.
        var errors: Int32 = 0
    }

    enum FailureKind: Sendable { case threw, lost, unrunnable }

    /// Records outcomes, fenced by lease holder and attempt: the ids recorded
    /// (the others were late: their lease had passed to another attempt).
    func record(_ outcomes: [Outcome], owner: String) async throws -> Set<Int64> {
        var recorded = Set<Int64>()
        var pools = Set<UUID>()
        let done = outcomes.filter { $0.failure == nil }
        if !done.isEmpty {
            recorded.formUnion(try await run(RecordDone(owner: owner, outcomes: done)))
        }
        for outcome in outcomes {
            guard let failure = outcome.failure else { continue }
            // A task that threw fails at once unless its pool asked for retries;
            // a lost worker retries with backoff up to the maximum.
            // A lost row of several parts goes back to its owner to be split.
            let retry = failure.kind == .lost
            let rows = try await client.query("""
                UPDATE mp_cluster_tasks SET
                    state = CASE WHEN \(retry) AND \(unescaped: Self.partsSQL) > 1 THEN 'failed'
                                 WHEN (\(retry) OR (retry_errors AND \(failure.kind == .threw))) AND attempt < max_attempts
                                 THEN 'queued' ELSE 'failed' END,
                    error_type = CASE WHEN \(retry) AND \(unescaped: Self.partsSQL) > 1 THEN \(Self.splitMarker) ELSE \(failure.type) END,
                    error = \(failure.description),
                    not_before = now() + make_interval(secs => least(30, 0.1 * power(2, attempt))),
                    lease_owner = NULL, lease_expires = NULL,
                    finished_at = now()
                WHERE id = \(outcome.id) AND attempt = \(outcome.attempt) AND lease_owner = \(owner) AND state = 'running'
                RETURNING pool, state
                """, logger: Self.logger)
            for try await (pool, state) in rows.decode((UUID, String).self) {
                recorded.insert(outcome.id)
                if state == "failed" { pools.insert(pool) }
            }
        }
        for pool in pools {
            try await client.query("SELECT pg_notify(\(Self.doneChannel), \(Self.payload(for: pool)))", logger: Self.logger)
        }
        return recorded
    }

    /// One round trip: the fenced update of done rows, and a notification
    /// to each pool concerned; the ids recorded. A small result travels in
    /// its notification (`pool:seq:base64`, under PostgreSQL's 8,000-byte
    /// limit), so the owner delivers it without a query; a larger one is
    /// announced by the pool's id alone (PostgreSQL sends one per distinct payload).
    struct RecordDone: PreparedStatement {
        static let name = "mp_cluster_record_done"
        static let sql = """
            WITH recorded AS (
                UPDATE mp_cluster_tasks t SET state = 'done', result = v.result, errors = v.errors, finished_at = now(),
                    lease_owner = NULL, lease_expires = NULL
                FROM unnest($1::bigint[], $2::int[], $3::bytea[], $4::int[]) AS v(id, attempt, result, errors)
                WHERE t.id = v.id AND t.attempt = v.attempt AND t.lease_owner = $5 AND t.state = 'running'
                RETURNING t.id, t.pool, t.seq, t.result)
            SELECT id, pg_notify('\(ClusterStore.doneChannel)', pool::text || CASE WHEN octet_length(result) <= \(ClusterStore.resultInNotification)
                THEN ':' || seq || ':' || encode(result, 'base64') ELSE '' END)::text FROM recorded
            """
        let owner: String
        let outcomes: [Outcome]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 5)
            bindings.append(outcomes.map(\.id))
            bindings.append(outcomes.map(\.attempt))
            bindings.append(outcomes.map { ByteBuffer(bytes: $0.result ?? []) })
            bindings.append(outcomes.map(\.errors))
            bindings.append(owner)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode((Int64, String).self).0 }
    }

    /// Hands back what `owner` holds (a worker stopping gracefully): queued
    /// again, the attempt not counted.
    func handBack(owner: String, ids: [Int64]) async throws {
        guard !ids.isEmpty else { return }
        try await client.query("""
            UPDATE mp_cluster_tasks SET state = 'queued', attempt = attempt - 1, lease_owner = NULL, lease_expires = NULL
            WHERE lease_owner = \(owner) AND state = 'running' AND id = ANY(\(ids))
            """, logger: Self.logger)
        try await client.query("SELECT pg_notify(\(Self.newChannel), '')", logger: Self.logger)
    }

    /// Rows whose lease expired (their worker or machine died, or lost the
    /// database): queued again with backoff, or failed after the last attempt.
    @discardableResult
    func reapExpired() async throws -> Int {
        // A row of several parts goes back to its owner to be split; a row
        // of one is queued again, its attempt counted, or fails after the last.
        let rows = try await client.query("""
            UPDATE mp_cluster_tasks t SET
                state = CASE WHEN e.parts > 1 OR t.attempt >= t.max_attempts THEN 'failed' ELSE 'queued' END,
                error_type = CASE WHEN e.parts > 1 THEN \(Self.splitMarker)
                                  WHEN t.attempt >= t.max_attempts THEN 'MP.Error.workerLost' END,
                error = CASE WHEN e.parts > 1 THEN 'its lease expired while it held ' || e.parts || ' submissions'
                             WHEN t.attempt >= t.max_attempts
                             THEN 'its lease expired on each of ' || t.attempt || ' attempts (the worker or its machine died, or lost the database)' END,
                not_before = now() + make_interval(secs => least(30, 0.1 * power(2, t.attempt))),
                lease_owner = NULL, lease_expires = NULL
            FROM (SELECT id, \(unescaped: Self.partsSQL) AS parts FROM mp_cluster_tasks
                  WHERE state = 'running' AND lease_expires < now() FOR UPDATE SKIP LOCKED) e
            WHERE t.id = e.id
            RETURNING t.pool, t.state
            """, logger: Self.logger)
        var count = 0
        var failedPools = Set<UUID>()
        for try await (pool, state) in rows.decode((UUID, String).self) {
            count += 1
            if state == "failed" { failedPools.insert(pool) }
        }
        for pool in failedPools {
            try await client.query("SELECT pg_notify(\(Self.doneChannel), \(Self.payload(for: pool)))", logger: Self.logger)
        }
        if count > 0 { try await client.query("SELECT pg_notify(\(Self.newChannel), '')", logger: Self.logger) }
        try await forgetSilentWorkers()
        return count
    }

    /// Removes the registrations of workers silent for three of their leases
    /// (killed, their machine gone): every live worker and every pool does
    /// it with its reaping, so the table shows who serves now.
    func forgetSilentWorkers() async throws {
        try await client.query("DELETE FROM mp_cluster_workers WHERE heartbeat < now() - make_interval(secs => 3 * lease)",
                               logger: Self.logger)
    }

    /// Housekeeping, now and then: removes the rows of pools whose owner
    /// stopped beating (it died without `join`).
    func sweep() async throws {
        try await client.query("""
            DELETE FROM mp_cluster_tasks WHERE pool IN
                (SELECT id FROM mp_cluster_pools WHERE heartbeat < now() - interval '10 minutes')
            """, logger: Self.logger)
        try await client.query("DELETE FROM mp_cluster_pools WHERE heartbeat < now() - interval '10 minutes'", logger: Self.logger)
    }

    /// Runs `body(channel, payload)` for every notification on `channels`
    /// until cancelled, reconnecting after a lost connection (notifications
    /// sent meanwhile are lost: callers also poll; `body(channel, "")` after
    /// each (re)connection says "look now").
    ///
    /// One connection listens on all of a process's channels: PostgreSQL
    /// wakes every listening connection of the database on every `NOTIFY`,
    /// whatever its channels.
    ///
    /// `body` runs on the connection's event loop as each notification is
    /// read, with no task between (a task resumed per notification was a
    /// thread hand-off on every cluster task's path, twice): keep it short,
    /// and never wait there. (The "look now" calls come from the listening task.)
    func listen(_ channels: [String], _ body: @escaping @Sendable (_ channel: String, _ payload: String) -> Void) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    let contexts = channels.map { channel in
                        connection.addListener(channel: channel) { _, notification in body(channel, notification.payload) }
                    }
                    defer { for context in contexts { context.stop() } }
                    for channel in channels {
                        try await connection.query(PostgresQuery(unsafeSQL: "LISTEN \"\(channel)\""), logger: Self.logger)
                    }
                    for channel in channels { body(channel, "") } // (re)connected: whatever was missed, look now
                    // Until the connection closes (a restart, a cut link) or the caller cancels.
                    let ended = connection.eventLoop.makePromise(of: Void.self)
                    connection.closeFuture.whenComplete { _ in ended.succeed() }
                    await withTaskCancellationHandler {
                        _ = try? await ended.futureResult.get()
                    } onCancel: {
                        ended.succeed()
                    }
                    if Task.isCancelled {
                        // The connection goes back to the pool: it stops listening.
                        _ = try? await connection.query("UNLISTEN *", logger: Self.logger)
                        return
                    }
                    throw MP.Error.database("the listening connection closed")
                }
            } catch {
                if Task.isCancelled { return }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}

extension ClusterStore.PreparedCommand {
    func decodeRow(_ row: PostgresRow) throws {}
}
