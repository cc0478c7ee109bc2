import Glibc
import Multiprocessing

// Containing work: a pool whose workers have a memory cap and a time limit.
// One task leaks memory without end, one loops for ever; both are stopped,
// their workers replaced, and every other task completes.

/// An ordinary task.
struct Cube: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x * x }
}

/// Leaks memory, 16 MiB at a time, touching every page, until something stops it.
struct LeakWithoutEnd: MP.NamedTask {
    func run() -> Int {
        var kept: [[UInt8]] = []
        while true { kept.append([UInt8](repeating: 1, count: 16 << 20)) }
    }
}

/// Loops for ever, deaf to cancellation.
struct LoopForever: MP.NamedTask {
    func run() -> Int {
        var spins = 0
        while true { spins &+= 1 }
    }
}

func containedWork() throws {
    let limits = MP.WorkerLimits(memory: 128 << 20,   // a memory cgroup per worker where allowed, else RLIMIT_DATA
                                 timeLimit: 2)         // a task running 2 s is killed with its worker
    let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver, limits: limits)
    let leak = pool.applyAsync(LeakWithoutEnd())
    let loop = pool.applyAsync(LoopForever())
    let cubes = (1...8).map { pool.applyAsync(Cube(x: $0)) }
    for (name, result) in [("leak", leak), ("loop", loop)] {
        do {
            _ = try result.get()
        } catch {
            print("\(name): \(error.code), the worker was replaced")
        }
    }
    print("cubes:", try cubes.map { try $0.get() })
    pool.close()
    try pool.join()
    let replaced = pool.workerUsage.filter { !$0.isAlive && $0.ending?.contains("limit") == true }.count
    print("workers replaced for a limit:", replaced)
}

/// A task that takes a little while.
struct SlowCube: MP.NamedTask {
    var x: Int
    func run() -> Int {
        usleep(5_000)
        return x * x * x
    }
}

/// tqdm around `imap`, or mpire's `progress_bar=True`: a long map with a bar
/// on the terminal (stderr, and only when it is one).
func progressOfAMap() throws {
    try MP.TaskPool.with(processes: 2, startMethod: .forkserver) { pool in
        let cubes = pool.mapAsync((1...400).map { SlowCube(x: $0) }, chunksize: 4)
        let progress = cubes.progress!
        progress.showBar()                                   // drawn only on a terminal; erased when done
        let values = try cubes.get()
        let last = progress.snapshot                         // or: for await reading in progress.updates
        print("done: \(last.completed) of \(last.total!) tasks, \(last.failed) failed; sum \(values.reduce(0, +))")
    }
}
