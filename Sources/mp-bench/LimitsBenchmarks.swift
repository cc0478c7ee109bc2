import Glibc
import Multiprocessing

/// Touches `mebibytes` MiB: the page faults a memory cgroup charges.
struct BenchTouch: MP.NamedTask {
    var mebibytes: Int
    func run() -> Int {
        let bytes = [UInt8](repeating: 1, count: mebibytes << 20)
        return bytes.count
    }
}

/// What worker limits cost a task: a blocking `apply` on a warm worker
/// with no limits, with the per-task rlimit work (RLIMIT_CPU moved,
/// resident memory read for recycling, memory by RLIMIT_DATA), with a
/// memory cgroup per worker (where this process may make one), with a
/// soft time limit (the task runs in a Swift task of its own), and with
/// usage recorded; and a task that touches 64 MiB with and without a
/// cgroup charging its pages. All in alternating rounds.
enum LimitsBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 7
        let calls = quick ? 200 : 1_000
        let touches = quick ? 5 : 20
        let cgroups = (try? MP.WorkerLimits(memory: 512 << 20, memoryEnforcement: .cgroup).check()) != nil
        var variants: [(String, MP.WorkerLimits?, Bool)] = [
            ("none", nil, false),
            ("rlimits", MP.WorkerLimits(memory: 512 << 20, memoryEnforcement: .dataLimit, recycleAboveResidentMemory: 512 << 20, cpuTime: 60), false),
            ("soft", MP.WorkerLimits(softTimeLimit: 60), false),
            ("usage", nil, true),
        ]
        if cgroups {
            variants.append(("cgroup", MP.WorkerLimits(memory: 512 << 20, memoryEnforcement: .cgroup, recycleAboveResidentMemory: 512 << 20, cpuTime: 60), false))
        }
        var pools: [MP.TaskPool] = []
        defer { for pool in pools { pool.terminate(); try? pool.join() } }
        var contenders: [Contender] = []
        for (name, limits, usage) in variants {
            let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver, limits: limits, recordUsage: usage)
            pools.append(pool)
            contenders.append(Contender(name: "limits_apply_blocking_us_\(name)") {
                let start = now()
                for i in 0..<calls { guard try pool.apply(BenchIncrement(x: i)) == i + 1 else { throw BenchError("apply wrong") } }
                return (now() - start) / Double(calls) * 1e6
            })
            guard name == "none" || name == "cgroup" else { continue }
            contenders.append(Contender(name: "limits_touch_64mib_ms_\(name)") {
                let start = now()
                for _ in 0..<touches { guard try pool.apply(BenchTouch(mebibytes: 64)) == 64 << 20 else { throw BenchError("touch wrong") } }
                return (now() - start) / Double(touches) * 1e3
            })
        }
        if !cgroups { print("limits: no writable memory cgroup here; the cgroup figures are left out") }
        return try alternatingRounds(rounds, contenders)
    }
}
