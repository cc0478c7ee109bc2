import Synchronization
import Tracing
import MultiprocessingPlatform

/// One order of a ``MP/TaskPool``: a task, a chunk of a map, or a chunk of
/// fixed-width tasks in shared memory; queued in the parent, then held by
/// one worker until it reports.
@usableFromInline
final class PoolJob: @unchecked Sendable {
    enum Body {
        /// One task's encoded arguments.
        case task([UInt8])
        /// One fixed-width task's bytes (its result comes back as bytes too).
        case rawTask([UInt8])
        /// `count` tasks, each `[u32 length][arguments]`.
        case chunk(count: Int, [UInt8])
        /// `count` tasks stored bitwise in `arena` at `tasks`; results go to `results`.
        case fixed(arena: PoolArena, tasks: Int, results: Int, count: Int)
    }

    /// What became of the job. `before`: the results of a chunk's items that
    /// completed before the failed one (encoded; fixed-width ones are in shared memory).
    @usableFromInline
    enum Outcome {
        case done([UInt8])
        case failed(index: Int, MP.Error, before: [UInt8])
    }

    let type: UInt32
    let body: Body
    let timeout: Double?
    /// Its span, when it was submitted inside a trace: its fields go to the
    /// worker with the order, and it ends as the job completes.
    let trace: TaskSpan?
    private let completion: (Outcome) -> Void

    // Guarded by the pool's lock.
    var worker: PoolWorkerHandle?
    var seq: UInt64 = 0
    var finished = false
    /// What the order used, when the pool records it (set before it completes).
    var usage: MP.ResourceUsage?
    /// Where ``usage`` goes as the job completes (an `apply`'s result).
    var usageSink: ((MP.ResourceUsage) -> Void)?
    /// The worker that ran it and for how long (its own clock), for the span.
    var ranOn: Int32 = 0
    var runNanoseconds: UInt64 = 0

    /// Jobs alive in this process: the tests check that none leaks.
    static let alive = Atomic<Int>(0)

    /// The tasks it carries (a chunk's count).
    var items: Int {
        switch body {
        case .task, .rawTask: 1
        case .chunk(let count, _), .fixed(_, _, _, let count): count
        }
    }
    /// When it was made: its queue wait ends when a worker gets it.
    let created = Deadline.now

    init(type: UInt32, body: Body, timeout: Double?, trace: TaskSpan? = nil, completion: @escaping (Outcome) -> Void) {
        self.type = type
        self.body = body
        self.timeout = timeout
        self.trace = trace
        self.completion = completion
        Self.alive.add(1, ordering: .relaxed)
    }

    deinit { Self.alive.subtract(1, ordering: .relaxed) }

    /// Runs the completion (outside the pool's lock).
    func complete(_ outcome: Outcome) {
        if let usage, let usageSink { usageSink(usage) }
        if let trace { end(trace, outcome) }
        completion(outcome)
    }
}

extension PoolJob {
    private func end(_ trace: TaskSpan, _ outcome: Outcome) {
        let error: MP.Error? = if case .failed(_, let error, _) = outcome { error } else { nil }
        trace.end(error: error) { [self] attributes in
            attributes["mp.task.count"] = items
            if ranOn > 0 {
                attributes["mp.worker.pid"] = Int(ranOn)
                attributes["mp.task.run_seconds"] = Double(runNanoseconds) / 1e9
            }
            if let usage {
                attributes["mp.task.cpu_seconds"] = usage.userSeconds + usage.systemSeconds
            }
        }
    }
}

/// Shared memory that carries a fixed-width map's tasks and results.
final class PoolArena: @unchecked Sendable {
    let id: UInt64
    let block: SharedBlock
    var inUse = false

    init(id: UInt64, bytes: Int) throws(MP.Error) {
        self.id = id
        block = try SharedBlock(bytes: bytes)
    }
}

/// A FIFO of jobs with cheap removal at the front (a removed job is
/// released at once, not when the storage is next compacted).
struct JobQueue {
    private var items: [PoolJob?] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var first: PoolJob? { isEmpty ? nil : items[head] }

    mutating func append(_ job: PoolJob) { items.append(job) }

    mutating func removeFirst() -> PoolJob {
        let job = items[head]!
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return job
    }

    /// Puts jobs back at the front, in their order (a dead worker's unstarted orders).
    mutating func prepend(_ jobs: [PoolJob]) {
        guard !jobs.isEmpty else { return }
        items = jobs.map(Optional.some) + items[head...]
        head = 0
    }

    mutating func removeAll() -> [PoolJob] {
        defer { items = []; head = 0 }
        return items[head...].map { $0! }
    }
}
