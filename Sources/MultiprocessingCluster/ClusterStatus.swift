import Foundation
import Multiprocessing
import PostgresNIO

extension MP.Cluster {
    /// A snapshot of a cluster, read from its tables: who serves, what waits,
    /// runs and failed, and how fast work went over the last minute. What
    /// `mp-cluster status` prints (``rendered()``).
    public struct Status: Sendable, CustomStringConvertible {
        /// A live or silent worker (a row of `mp_cluster_workers`).
        public struct Worker: Sendable, Hashable {
            public var id: String
            public var host: String
            public var pid: Int32
            /// The build it runs: it claims only tasks of that build.
            public var build: String
            /// Its local worker processes.
            public var concurrency: Int
            /// Its lease, in seconds; silent for three of them, it counts as gone.
            public var lease: Double
            /// Results it computed after its lease had passed on (dropped).
            public var lateResults: Int
            /// Seconds since its last heartbeat.
            public var silentSeconds: Double
            /// Seconds since it started.
            public var upSeconds: Double
            /// Tasks it finished in its last minute, and how many of them failed.
            public var finishedLastMinute: Int
            public var failedLastMinute: Int
            /// Whether its heartbeat is within three leases.
            public var isLive: Bool { silentSeconds <= 3 * lease }
        }

        /// The rows (and the tasks they carry) in one state: `queued`,
        /// `running`, `done`, `failed` or `cancelled`.
        public struct Rows: Sendable, Hashable {
            public var state: String
            public var rows: Int
            public var tasks: Int
        }

        /// Every worker in the table, live first.
        public var workers: [Worker]
        /// Rows and tasks by state (only the states that have rows).
        public var rows: [Rows]
        /// Open pools.
        public var pools: Int
        /// Tasks the live workers finished in their last minute (each
        /// worker sends its figure with its heartbeat).
        public var tasksLastMinute: Int
        /// Of those, the tasks that failed (threw, or could not run here).
        public var failedTasksLastMinute: Int
        /// Rows failed whole that are still in the table (a worker lost on
        /// every attempt, a row this build cannot run).
        public var failedRows: Int
        /// Rows tried more than once (a worker died or lost its lease).
        public var retriedRows: Int
        /// Running rows whose lease has passed: their worker is gone or cut off.
        public var expiredLeases: Int
        /// How long the oldest queued row has waited, in seconds.
        public var oldestQueuedSeconds: Double?

        /// The tasks in `state`.
        public func tasks(_ state: String) -> Int { rows.first { $0.state == state }?.tasks ?? 0 }

        /// The snapshot as a few aligned lines of text.
        public func rendered() -> String {
            func seconds(_ value: Double) -> String {
                if value < 10 { return String(format: "%.1f s", value) }
                if value < 3600 { return "\(Int(value)) s" }
                return String(format: "%.1f h", value / 3600)
            }
            let live = workers.filter(\.isLive)
            var lines: [String] = []
            lines.append("workers: \(live.count) live (\(live.reduce(0) { $0 + $1.concurrency }) processes), \(workers.count - live.count) silent; pools: \(pools) open")
            if !workers.isEmpty {
                let header = ["host", "pid", "build", "procs", "heartbeat", "up", "late", "state"]
                var table = [header]
                for worker in workers {
                    table.append([worker.host, "\(worker.pid)", String(worker.build.prefix(12)), "\(worker.concurrency)",
                                  seconds(worker.silentSeconds) + " ago", seconds(worker.upSeconds), "\(worker.lateResults)",
                                  worker.isLive ? "live" : "silent"])
                }
                let widths = header.indices.map { column in table.map { $0[column].count }.max() ?? 0 }
                for row in table {
                    lines.append("  " + row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                        .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
                }
            }
            let order = ["queued", "running", "done", "failed", "cancelled"]
            let states = order.map { state in
                let entry = rows.first { $0.state == state }
                return "\(state) \(entry?.tasks ?? 0) (\(entry?.rows ?? 0) rows)"
            }
            lines.append("tasks: " + states.joined(separator: ", "))
            var minute = "last minute: \(tasksLastMinute) tasks finished (\(String(format: "%.1f", Double(tasksLastMinute) / 60))/s), "
            minute += "\(failedTasksLastMinute) of them failed"
            lines.append(minute)
            var health = "oldest queued: " + (oldestQueuedSeconds.map(seconds) ?? "none")
            health += "; retried rows: \(retriedRows); expired leases: \(expiredLeases)"
            lines.append(health)
            return lines.joined(separator: "\n")
        }

        public var description: String { rendered() }
    }

    /// Reads a snapshot of the cluster behind `database` (a PostgreSQL URL, as
    /// for ``MP/ClusterPool``). Reads only: a database with no cluster in it
    /// is an error, not a place to create one.
    ///
    /// - Throws: ``MP/Error/Code/database`` when the database cannot be
    ///   reached or holds no cluster tables; ``MP/Error/Code/invalidArgument``
    ///   for a malformed URL.
    public static func status(database: String) async throws(MP.Error) -> Status {
        let store = try ClusterStore(address: DatabaseAddress(database))
        defer { store.shutdown() }
        let place = store.address.description
        do {
            return try await withDeadline(15, "cannot reach PostgreSQL at \(place) within 15 s") { try await store.status() }
        } catch {
            if let error = error as? MP.Error { throw error }
            if let error = error as? PSQLError, error.serverInfo?[.sqlState] == "42P01" {
                throw .database("no swift-multiprocessing cluster at \(place) (no mp_cluster_* tables)")
            }
            throw .database("reading the cluster's status at \(place): \(ClusterStore.reason(error))")
        }
    }
}

extension ClusterStore {
    /// The queries behind ``MP/Cluster/status(database:)``: one round trip each, read-only.
    func status() async throws -> MP.Cluster.Status {
        var workers: [MP.Cluster.Status.Worker] = []
        let workerRows = try await client.query("""
            SELECT id, host, pid, build, concurrency, lease, late_results,
                   extract(epoch FROM now() - heartbeat)::double precision,
                   extract(epoch FROM now() - started_at)::double precision, finished_last_minute, failed_last_minute
            FROM mp_cluster_workers ORDER BY heartbeat DESC, host, pid
            """, logger: Self.logger)
        var finished = 0, failed = 0
        for try await (id, host, pid, build, concurrency, lease, late, silent, up, done, failures)
            in workerRows.decode((String, String, Int32, String, Int32, Double, Int64, Double, Double, Int64, Int64).self) {
            let worker = MP.Cluster.Status.Worker(id: id, host: host, pid: pid, build: build, concurrency: Int(concurrency), lease: lease,
                                                  lateResults: Int(late), silentSeconds: max(0, silent), upSeconds: max(0, up),
                                                  finishedLastMinute: Int(done), failedLastMinute: Int(failures))
            workers.append(worker)
            if worker.isLive {
                finished += Int(done)
                failed += Int(failures)
            }
        }
        workers.sort { ($0.isLive ? 0 : 1, -$0.upSeconds) < ($1.isLive ? 0 : 1, -$1.upSeconds) }
        var rows: [MP.Cluster.Status.Rows] = []
        let stateRows = try await client.query("""
            SELECT state, count(*)::bigint, coalesce(sum(items), 0)::bigint FROM mp_cluster_tasks GROUP BY state ORDER BY state
            """, logger: Self.logger)
        for try await (state, count, items) in stateRows.decode((String, Int64, Int64).self) {
            rows.append(.init(state: state, rows: Int(count), tasks: Int(items)))
        }
        let summary = try await client.query("""
            SELECT
              (SELECT count(*) FROM mp_cluster_pools WHERE state = 'open')::bigint,
              (SELECT count(*) FROM mp_cluster_tasks WHERE attempt > 1)::bigint,
              (SELECT count(*) FROM mp_cluster_tasks WHERE state = 'running' AND lease_expires < now())::bigint,
              (SELECT extract(epoch FROM now() - min(created_at)) FROM mp_cluster_tasks WHERE state = 'queued')::double precision
            """, logger: Self.logger)
        var status = MP.Cluster.Status(workers: workers, rows: rows, pools: 0, tasksLastMinute: finished,
                                       failedTasksLastMinute: failed, failedRows: rows.first { $0.state == "failed" }?.rows ?? 0,
                                       retriedRows: 0, expiredLeases: 0, oldestQueuedSeconds: nil)
        for try await (pools, retried, expired, oldest) in summary.decode((Int64, Int64, Int64, Double?).self) {
            status.pools = Int(pools)
            status.retriedRows = Int(retried)
            status.expiredLeases = Int(expired)
            status.oldestQueuedSeconds = oldest.map { max(0, $0) }
        }
        return status
    }
}
