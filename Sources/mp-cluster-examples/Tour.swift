import Multiprocessing
import MultiprocessingCluster

// MARK: the named-task pool on many machines, through PostgreSQL
//
// Ray's drop-in `ray.util.multiprocessing.Pool`, here with PostgreSQL as the
// engine. On real machines, each worker machine runs this same program in
// worker mode (`mp-cluster-examples worker postgres://...`) and the pool's
// owner runs `MP.ClusterPool(database:)`. The tour plays both sides on this
// machine: a throwaway PostgreSQL, two worker processes, one pool.

struct Cube: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x * x }
}

/// The pool's side: apply, map and imap on the cluster.
func usePool(database url: String) async throws {
    let pool = try await MP.ClusterPool(database: url)              // pool = Pool(...) on the cluster
    print("apply:", try await pool.apply(Cube(x: 3)))               // pool.apply(cube, (3,))
    let cubes = try await pool.map((1...10).map { Cube(x: $0) }, chunksize: 3)
    print("map:", cubes)                                            // pool.map(cube, range(1, 11), 3)
    var firstFive: [Int] = []
    for try await cube in pool.imap((1...5).map { Cube(x: $0) }) { firstFive.append(cube) }
    print("imap:", firstFive)
    pool.close()
    try await pool.join()
}

/// Both sides on this machine: a throwaway server, two workers, one pool.
func tour() async throws {
    guard MP.Cluster.LocalPostgres.isAvailable else {
        print("PostgreSQL's server programs (initdb, pg_ctl) are not installed: this tour needs them")
        print("(Debian: apt-get install postgresql; a real cluster needs only a reachable server)")
        return
    }
    let database = try MP.Cluster.LocalPostgres()                  // a throwaway server in /tmp
    defer { database.remove() }
    let url = database.url
    let workers = try (1...2).map { n in                           // on real machines: other hosts
        let worker = MP.Process(name: "cluster-worker-\(n)") {
            try await MP.Cluster.runWorker(database: url, concurrency: 2, startMethod: .forkserver)
        }
        try worker.start()
        return worker
    }
    try await usePool(database: url)
    for worker in workers {
        try worker.terminate()                                      // SIGTERM: a graceful stop
        try await worker.join()
        print(worker.name, "stopped with", worker.exitCode ?? -1)
    }
}
