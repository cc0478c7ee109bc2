import Testing
import Foundation
import PostgresNIO
import NetworkLab
@testable import MultiprocessingCluster
@_spi(Cluster) import Multiprocessing

// The cluster as three machines: PostgreSQL in one network namespace (the
// hub), a worker in each of two others, each cabled to the hub by its own
// veth pair and reaching the database over TCP. The pool's owner sits on the
// database's machine (its Unix socket). The test makes and removes all of it.

/// One cluster network: the namespaces, the database inside the hub's, and
/// a worker per machine.
final class ClusterLab: @unchecked Sendable {
    let network: NetworkLab
    let database: MP.Cluster.LocalPostgres
    /// The database through its Unix socket, for the test's own looks.
    let store: ClusterStore
    private(set) var workers: [String: MP.Process] = [:]

    init() throws {
        network = try NetworkLab(hub: "db", machines: ["w1", "w2"])
        do {
            let network = network
            database = try NetworkLab.inside(network.namespace(of: "db")) {
                try MP.Cluster.LocalPostgres(listenAddress: network.hubAddresses,
                                             trustedNetworks: ["w1", "w2"].map { "\(network.address(of: $0))/32" })
            }
            store = try ClusterStore(url: database.url)
        } catch {
            network.remove()
            throw error
        }
    }

    /// Starts a worker on each machine and waits until both have reached
    /// the database over their links (their rows in `mp_cluster_workers`).
    func startWorkers() async throws {
        for machine in ["w1", "w2"] { _ = try startWorker(on: machine) }
        try await database.untilSlots(store, 2)
    }

    /// Starts `machine`'s worker: a process of this program, forked by the
    /// forkserver (a fresh process: NIO resolves TCP addresses on Dispatch,
    /// which a child forked from this Dispatch-using test process lacks),
    /// that moves into the machine's namespace while it has one thread.
    func startWorker(on machine: String, lease: Double = 2) throws -> MP.Process {
        let task = NamespacedWorker(namespace: network.namespace(of: machine),
                                    database: database.tcpURL(host: network.hubAddress(for: machine)), lease: lease)
        let worker = MP.getContext(.forkserver).Process(name: "cluster-worker-\(machine)", target: task)
        try worker.start()
        workers[machine] = worker
        return worker
    }

    /// The machine whose worker has `pid`.
    func machine(of pid: Int32) -> String? { workers.first { $0.value.pid == pid }?.key }

    func remove() {
        for worker in workers.values { try? stopWorker(worker) }
        store.shutdown()
        database.remove()
        network.remove()
    }
}

/// A cluster worker on a machine of the lab: it enters the machine's
/// network namespace first (synchronously, on the process's only thread, so
/// every thread it starts is there too), then serves.
struct NamespacedWorker: MP.NamedTask {
    var namespace: String
    var database: String
    var lease: Double

    func run() throws {
        try NetworkLab.enter(namespace)
        let (database, lease) = (database, lease)
        try waitFor { try await MP.Cluster.runWorker(database: database, concurrency: 1, startMethod: .forkserver, lease: lease) }
    }
}

/// Runs async work from a synchronous process target and waits for it.
func waitFor(_ body: @escaping @Sendable () async throws -> Void) throws {
    final class Outcome: @unchecked Sendable {
        let condition = NSCondition()
        var result: Result<Void, any Error>?

        func set(_ result: Result<Void, any Error>) {
            condition.lock()
            self.result = result
            condition.signal()
            condition.unlock()
        }
    }
    let outcome = Outcome()
    Task {
        do { outcome.set(.success(try await body())) } catch { outcome.set(.failure(error)) }
    }
    outcome.condition.lock()
    while outcome.result == nil { outcome.condition.wait() }
    outcome.condition.unlock()
    try outcome.result!.get()
}

@Suite("Cluster across network namespaces", .serialized,
       .enabled(if: NetworkLab.available && MP.Cluster.LocalPostgres.isAvailable, "needs root, iproute2 and PostgreSQL's server programs"))
struct ClusterNetworkTests {
    @Test("a worker machine's process SIGKILLed mid-task: the task completes on the other machine after one lease")
    func workerKilledAcrossMachines() async throws {
        let lab = try ClusterLab()
        defer { lab.remove() }
        try await lab.startWorkers()
        let pool = try await MP.ClusterPool(database: lab.database.url)
        let marker = "/tmp/mp-cluster-net-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { unlink(marker) }
        let result = pool.applyAsync(HangsFirstTime(marker: marker))
        let holder = try await lab.database.leaseHolder(lab.store, pool: pool.id)
        let victim = try #require(lab.machine(of: holder), "the lease holder \(holder) is one of the workers")
        let killed = try #require(lab.workers[victim])
        try killed.kill()
        try await killed.join()
        let start = ContinuousClock.now
        #expect(try await result.value == 7)
        let recovery = ContinuousClock.now - start
        #expect(recovery < .seconds(10), "recovered after the 2 s lease: \(recovery)")
        pool.close()
        try await pool.join()
    }

    @Test("a cut link: the task runs again on the other machine, and the cut worker's late result is refused")
    func linkCut() async throws {
        let lab = try ClusterLab()
        defer { lab.remove() }
        try await lab.startWorkers()
        let pool = try await MP.ClusterPool(database: lab.database.url)
        let result = pool.applyAsync(WhoRuns(milliseconds: 3_000))
        let holder = try await lab.database.leaseHolder(lab.store, pool: pool.id)
        let cut = try #require(lab.machine(of: holder))
        #expect(lab.network.cut(cut))
        // Its lease expires; the other machine runs the task and its result is the one delivered.
        let other = try #require(lab.workers.first { $0.key != cut }?.value.pid)
        #expect(try await result.value == other, "the result comes from the machine still linked")
        // The cut worker finished too (3 s); linked again, it records late and is refused.
        #expect(lab.network.mend(cut))
        var late: [String] = []
        for _ in 0..<600 where late.first.map({ Int($0) ?? 0 }) ?? 0 < 1 {
            late = try await lab.database.query(lab.store, "SELECT late_results::text FROM mp_cluster_workers WHERE pid = \(holder)")
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(late == ["1"], "the cut worker's late result was refused once")
        pool.close()
        try await pool.join()
    }

    @Test("the database restarted mid-map: workers on other machines reconnect; nothing lost, nothing twice")
    func databaseRestartAcrossMachines() async throws {
        let lab = try ClusterLab()
        defer { lab.remove() }
        try await lab.startWorkers()
        let pool = try await MP.ClusterPool(database: lab.database.url)
        let mapped = pool.mapAsync((0..<60).map { Slow(x: $0, milliseconds: 50) }, chunksize: 2)
        try await Task.sleep(for: .milliseconds(300))
        let database = lab.database
        try NetworkLab.inside(lab.network.namespace(of: "db")) { try database.restart() }
        #expect(try await mapped.value == Array(0..<60))
        #expect(try await pool.apply(ClusterSquare(x: 6)) == 36)
        pool.close()
        try await pool.join()
    }
}

extension MP.Cluster.LocalPostgres {
    /// The pid of the worker holding the pool's running row (its lease owner is `host:pid:…`).
    func leaseHolder(_ store: ClusterStore, pool: UUID) async throws -> Int32 {
        for _ in 0..<400 {
            let owners = try await query(store, """
                SELECT lease_owner FROM mp_cluster_tasks WHERE pool = '\(pool.uuidString)' AND state = 'running'
                """)
            if let owner = owners.first, let pid = Int32(owner.split(separator: ":").dropFirst().first ?? "") { return pid }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LabError(description: "no worker claimed the pool's task within 20 s")
    }
}
