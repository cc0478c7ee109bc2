import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

/// One submitted task: what a worker runs, and what the parent does with its outcome.
@usableFromInline
struct TaskRecord: @unchecked Sendable {
    /// Runs the task (in a worker), given `argument`: a map's chunks share one
    /// closure, and each record holds its chunk's index.
    let run: (Int) -> TaskOutcome
    let argument: Int
    /// A quiet task's success carries nothing (its result is already in
    /// shared memory): the worker marks it done in the batch's shared block
    /// instead of sending a message, and reports progress at most every
    /// `Generation.reportInterval` (see `Generation.settleCompleted`).
    let quiet: Bool
    /// Called once, on the pool's thread, then released: it holds the
    /// caller's result (a map's array), which must not outlive the caller's
    /// use because a batch outlives its tasks until its workers are reaped.
    private var onComplete: ((Int, Result<[UInt8], MP.Error>) -> Void)?

    @usableFromInline
    init(quiet: Bool = false, argument: Int = 0, run: @escaping (Int) -> TaskOutcome,
         complete: @escaping (Int, Result<[UInt8], MP.Error>) -> Void) {
        self.quiet = quiet
        self.argument = argument
        self.run = run
        self.onComplete = complete
    }

    /// In a worker.
    func execute() -> TaskOutcome { run(argument) }

    mutating func complete(_ result: Result<[UInt8], MP.Error>) {
        let body = onComplete
        onComplete = nil
        body?(argument, result)
    }

    /// Runs `body` and encodes its result (in a worker).
    static func encoding<R: Encodable>(_ body: @escaping () throws -> R, complete: @escaping (Int, Result<[UInt8], MP.Error>) -> Void) -> TaskRecord {
        // Asked here, in the parent, the runtime's conformance questions about
        // R are answered before the workers' fork: a worker that asked them
        // first would take the runtime's conformance lock, which another
        // thread of the parent may have held at the fork (seen: a worker hung).
        WireFormat.warmCaches(for: R.self)
        return TaskRecord(run: { _ in
            let value: R
            do { value = try body() } catch { return .failure(.task, _typeName(type(of: error), qualified: false), "\(error)") }
            do { return .success(try WireFormat.encode(value)) } catch { return .failure(.result, "\(R.self)", "\(error)") }
        }, complete: complete)
    }
}

/// A batch of tasks and the workers forked for it. The workers inherit the
/// batch (closures, captured inputs) from the parent at fork: nothing but
/// results is ever serialized. They take task indices from a shared counter,
/// and each records the index it is running, so the task of a worker that
/// dies can be failed and the rest handed to a replacement.
final class Generation: @unchecked Sendable {
    private(set) var tasks: [TaskRecord]
    /// A robust mutex over the claims; the Int64 next index; an Int64 per
    /// worker slot: the task it runs (``idle``, ``initializing``); a byte per
    /// task: 1 once a quiet task has succeeded.
    let shared: SharedBlock
    let slots: Int
    let hasQuietTasks: Bool
    var workers: [PoolWorker] = []
    var settled: [Bool]
    var settledCount = 0
    var initializerFailure: MP.Error?
    /// Every task below this index is settled (the parent's scan of the done bytes starts here).
    private var scanFrom = 0

    /// A worker running quiet tasks reports progress at most this often (seconds):
    /// 20,000 one-item chunks cost a few hundred messages, not 20,000, and a
    /// chunk that runs longer than this is still reported when it ends.
    static let reportIntervalNanoseconds: Int64 = 200_000
    /// The index of a progress frame (quiet tasks are done: scan their bytes).
    static let progressIndex = -2

    /// A slot's value while its worker runs no task.
    static let idle: Int64 = -1
    /// A slot's value while its worker runs the pool's initializer: a worker
    /// that dies then failed its initializer (crash, `exit`, signal).
    static let initializing: Int64 = -4
    private static let mutexBytes = 64

    init(tasks: [TaskRecord], slots: Int) throws(MP.Error) {
        self.tasks = tasks
        self.slots = slots
        hasQuietTasks = tasks.contains { $0.quiet }
        shared = try SharedBlock(bytes: Self.mutexBytes + 8 * (1 + slots) + tasks.count, shareable: false)
        settled = [Bool](repeating: false, count: tasks.count)
        let error = cmp_mutex_init(mutex, 0)
        if error != 0 { throw .system(MP.OSError("pthread_mutex_init", errno: .init(rawValue: error))) }
        next.pointee = 0
        for index in 0..<slots { slot(index).pointee = Self.idle }
    }

    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { shared.base.assumingMemoryBound(to: pthread_mutex_t.self) }
    private var next: UnsafeMutablePointer<Int64> { (shared.base + Self.mutexBytes).assumingMemoryBound(to: Int64.self) }
    func slot(_ index: Int) -> UnsafeMutablePointer<Int64> { next + 1 + index }
    private func doneByte(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        (shared.base + Self.mutexBytes + 8 * (1 + slots)).assumingMemoryBound(to: UInt8.self) + index
    }
    var exhausted: Bool { cmp_atomic_load_i64(next) >= tasks.count }

    /// Runs `body` holding the claims' robust mutex. A worker killed inside
    /// leaves the mutex to the next locker (EOWNERDEAD), which first repairs
    /// what the dead worker left half-done (``repairClaims()``).
    private func withClaims<T>(_ body: () -> T) -> T {
        if cmp_mutex_lock(mutex, -1) == EOWNERDEAD { repairClaims() }
        defer { _ = cmp_mutex_unlock(mutex) }
        return body()
    }

    /// A slot's value while its worker is recording a claim of `task`.
    private static func pending(_ task: Int64) -> Int64 { -(task + 16) }

    /// With the mutex held, after its holder died: a claim the dead worker
    /// was recording took effect if the next index had moved past it (the
    /// task is its, and fails with it); otherwise it never happened. Decided
    /// before anyone can claim again, so never confused with a later claim.
    private func repairClaims() {
        for index in 0..<slots {
            let held = slot(index).pointee
            guard held <= Self.pending(0) else { continue }
            let task = -held - 16
            slot(index).pointee = next.pointee > task ? task : Self.idle
        }
    }

    /// Tests only: called in a worker inside `claim`, holding the claims'
    /// mutex, before (false) and after (true) the next index moves, to kill
    /// the worker at the worst moments.
    nonisolated(unsafe) static var claimHook: ((Int, Bool) -> Void)?

    /// In a worker: claims the next task for `slot`, or nil when every task
    /// is claimed. The slot says "claiming" while the next index moves, then
    /// names the task.
    func claim(slot index: Int) -> Int? {
        withClaims { () -> Int? in
            let task = next.pointee
            guard task < tasks.count else { return nil }
            cmp_atomic_store_i64(slot(index), Self.pending(task))
            Generation.claimHook?(Int(task), false)
            cmp_atomic_store_i64(next, task + 1)
            Generation.claimHook?(Int(task), true)
            cmp_atomic_store_i64(slot(index), task)
            return Int(task)
        }
    }

    /// In the parent, once the worker of `index` has exited: what its slot
    /// held (a task it claimed and did not finish, ``initializing``, or
    /// ``idle``); the slot is cleared.
    func vacate(slot index: Int) -> Int64 {
        withClaims {
            let held = slot(index).pointee
            slot(index).pointee = Self.idle
            return held
        }
    }

    /// In the parent: fails every task not claimed yet (no worker can be started for them).
    func failUnclaimed(_ error: MP.Error) {
        let from = withClaims { () -> Int in
            defer { next.pointee = Int64(tasks.count) }
            return Int(min(next.pointee, Int64(tasks.count)))
        }
        for index in from..<tasks.count { settle(index, .failure(error)) }
    }
    var finished: Bool { settledCount == tasks.count }

    /// In a worker: quiet task `index` succeeded (its results are written).
    func markDone(_ index: Int) { cmp_atomic_store_u8(doneByte(index), 1) }

    /// In the parent: settles the quiet tasks marked done since the last scan.
    /// Called after every message from a worker and before a dead worker's
    /// running task is failed (a task marked done just before its worker died
    /// succeeded).
    func settleCompleted() {
        guard hasQuietTasks else { return }
        let claimed = min(tasks.count, Int(cmp_atomic_load_i64(next)))
        var frontier: Int?
        for index in scanFrom..<max(scanFrom, claimed) where !settled[index] {
            if tasks[index].quiet && cmp_atomic_load_u8(doneByte(index)) == 1 {
                settle(index, .success([]))
            } else if frontier == nil {
                frontier = index
            }
        }
        scanFrom = frontier ?? max(scanFrom, claimed)
    }

    /// Settles task `index` once.
    func settle(_ index: Int, _ result: Result<[UInt8], MP.Error>) {
        guard index >= 0, index < tasks.count, !settled[index] else { return }
        settled[index] = true
        settledCount += 1
        tasks[index].complete(result)
    }
}

struct PoolWorker {
    let process: MP.Process
    let results: MP.Connection
    let pidfd: Int32
    let slot: Int
    let stderr: WorkerStderr
}
