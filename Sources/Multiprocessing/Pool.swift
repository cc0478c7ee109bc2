#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import _CMultiprocessingSync
import SystemPackage

extension MP {
    /// Why a pool task or operation failed.
    public enum PoolError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The task threw: the original error's type name and description.
        case taskFailed(type: String, description: String)
        /// The worker running the task died (a signal, a crash, `fatalError`, `exit`).
        case workerDied(String)
        /// The pool's initializer threw in a worker: no task of that batch ran.
        case initializerFailed(type: String, description: String)
        /// `get(timeout:)` ran out of time (the task goes on).
        case timeout
        /// `successful` was asked before the result was ready.
        case notReady
        /// `terminate()` ended the pool before the task finished.
        case terminated
        /// The pool was closed: it takes no more tasks.
        case closed
        /// The pool belongs to another process (a forked copy cannot be used).
        case notOwner
        case invalidArgument(String)
        /// The result could not cross the process boundary.
        case result(WireError)
        case system(OSError)

        public var description: String {
            switch self {
            case .taskFailed(let type, let description): return "task failed: \(type): \(description)"
            case .workerDied(let how): return "the worker running the task died: \(how)"
            case .initializerFailed(let type, let description): return "the pool initializer failed: \(type): \(description)"
            case .timeout: return "timed out waiting for the result"
            case .notReady: return "the result is not ready"
            case .terminated: return "the pool was terminated"
            case .closed: return "the pool is closed"
            case .notOwner: return "this pool was created by another process"
            case .invalidArgument(let what): return what
            case .result(let error): return "the result could not be sent back: \(error)"
            case .system(let error): return error.description
            }
        }
    }

    /// Python's `AsyncResult`: the future of one `applyAsync` or `mapAsync`.
    public final class AsyncResult<Value: Sendable>: @unchecked Sendable {
        private let lock = ForkSafeLock()
        private var outcome: Result<Value, PoolError>?
        private var continuations: [CheckedContinuation<Result<Value, PoolError>, Never>] = []
        private var resolving = false
        private let onSuccess: (@Sendable (Value) -> Void)?
        private let onFailure: (@Sendable (PoolError) -> Void)?

        @usableFromInline
        init(callback: (@Sendable (Value) -> Void)?, errorCallback: (@Sendable (PoolError) -> Void)?) {
            onSuccess = callback
            onFailure = errorCallback
        }

        /// Python's `ready()`.
        public var ready: Bool { lock.withLock { outcome != nil } }

        /// Python's `successful()`: throws ``MP/PoolError/notReady`` before the result is ready.
        public var successful: Bool {
            get throws(PoolError) {
                guard let outcome = lock.withLock({ outcome }) else { throw .notReady }
                if case .success = outcome { return true }
                return false
            }
        }

        /// Python's `wait(timeout)`: whether the result is ready. A negative
        /// timeout waits not at all, as in Python; `nil` or `.infinity`, without limit.
        @discardableResult
        public func wait(timeout: Double? = nil) -> Bool {
            wait(until: timeout.flatMap { Deadline.after(validSeconds: $0 >= 0 ? $0 : 0) })
        }

        private func wait(until: Deadline?) -> Bool {
            lock.withLock {
                while outcome == nil {
                    if let until, until.hasPassed { return false }
                    lock.wait(until: until)
                }
                return true
            }
        }

        /// Python's `get(timeout)`: the value, or the task's error; ``MP/PoolError/timeout`` on timeout.
        public func get(timeout: Double? = nil) throws(PoolError) -> Value {
            let until = try Deadline.after(timeout) { PoolError.invalidArgument("timeout must not be negative (got \($0))") }
            guard wait(until: until) else { throw .timeout }
            return try lock.withLock { outcome! }.get()
        }

        /// `get()` for a result only its caller can see (a blocking `map`
        /// creates it and returns its value): the value is handed over, not
        /// kept, so the array is freed as soon as the caller drops it, even
        /// while the pool's thread still holds this object. The next map can
        /// then reuse its pages, which are writable (see `ForkExcludedArray`).
        @usableFromInline
        func take() throws(PoolError) -> Value {
            wait()
            let result = lock.withLock { () -> Result<Value, PoolError> in
                defer { outcome = .failure(.notReady) } // handed over
                return outcome!
            }
            return try result.get()
        }

        /// `try await result.value`: suspends until the result is ready.
        public var value: Value {
            get async throws(PoolError) {
                let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, PoolError>, Never>) in
                    let ready: Result<Value, PoolError>? = lock.withLock {
                        if let outcome { return outcome }
                        continuations.append(continuation)
                        return nil
                    }
                    if let ready { continuation.resume(returning: ready) }
                }
                return try result.get()
            }
        }

        /// Settles the result once; later calls are ignored. As in CPython, the
        /// callback runs first, then the result becomes ready: a `get()` that
        /// returns has seen its callback run.
        ///
        /// `result` is consumed: once a waiter wakes, the only references to
        /// the value are this object's and the waiter's (the resolving thread
        /// keeps none), so a map's array freed by the caller goes back to the
        /// allocator right away, and the next map can reuse its pages.
        @usableFromInline
        func resolve(_ result: consuming Result<Value, PoolError>) {
            let first = lock.withLock { () -> Bool in
                guard outcome == nil, !resolving else { return false }
                resolving = true
                return true
            }
            guard first else { return }
            switch copy result {
            case .success(let value): onSuccess?(value)
            case .failure(let error): onFailure?(error)
            }
            lock.lock()
            outcome = consume result
            lock.broadcast()
            let waiting = continuations
            continuations = []
            let resumeWith = waiting.isEmpty ? nil : outcome
            lock.unlock()
            if let resumeWith { for continuation in waiting { continuation.resume(returning: resumeWith) } }
        }
    }
}

// MARK: - tasks and generations

/// What a task sends back: its encoded result, or its error's type and text.
@usableFromInline
enum TaskOutcome {
    case success([UInt8])
    case failure(PoolErrorKind, String, String)

    @usableFromInline
    enum PoolErrorKind: UInt8 { case task = 1, initializer = 2, result = 3 }

    /// Frame: [Int64 index][UInt8 kind (0 success)] then the bytes, or type 0 text.
    func frame(index: Int) -> [UInt8] {
        var bytes = [UInt8]()
        withUnsafeBytes(of: Int64(index).littleEndian) { bytes.append(contentsOf: $0) }
        switch self {
        case .success(let payload):
            bytes.append(0)
            bytes.append(contentsOf: payload)
        case .failure(let kind, let type, let text):
            bytes.append(kind.rawValue)
            bytes.append(contentsOf: type.utf8)
            bytes.append(0)
            bytes.append(contentsOf: text.utf8)
        }
        return bytes
    }

    static func parse(_ frame: [UInt8]) -> (Int, TaskOutcome)? {
        guard frame.count >= 9 else { return nil }
        let index = Int(frame.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }.littleEndian)
        let body = frame[9...]
        guard frame[8] != 0, let kind = PoolErrorKind(rawValue: frame[8]) else { return (index, .success(Array(body))) }
        let zero = body.firstIndex(of: 0) ?? body.endIndex
        let type = String(decoding: body[..<zero], as: UTF8.self)
        let text = zero < body.endIndex ? String(decoding: body[body.index(after: zero)...], as: UTF8.self) : ""
        return (index, .failure(kind, type, text))
    }

    @usableFromInline
    static func encode<R: Encodable>(_ value: R) -> TaskOutcome {
        do { return .success(try WireFormat.encode(value)) } catch { return .failure(.result, "\(R.self)", "\(error)") }
    }

    @usableFromInline
    static func decode<R: Decodable>(_ type: R.Type, _ bytes: [UInt8]) -> Result<R, MP.PoolError> {
        Result { () throws(MP.WireError) -> R in try WireFormat.decode(R.self, from: bytes) }.mapError { .result($0) }
    }

    var poolError: MP.PoolError? {
        guard case .failure(let kind, let type, let text) = self else { return nil }
        switch kind {
        case .task: return .taskFailed(type: type, description: text)
        case .initializer: return .initializerFailed(type: type, description: text)
        case .result: return .result(.encodingFailed(type: type, reason: text))
        }
    }
}

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
    private var onComplete: ((Int, Result<[UInt8], MP.PoolError>) -> Void)?

    @usableFromInline
    init(quiet: Bool = false, argument: Int = 0, run: @escaping (Int) -> TaskOutcome,
         complete: @escaping (Int, Result<[UInt8], MP.PoolError>) -> Void) {
        self.quiet = quiet
        self.argument = argument
        self.run = run
        self.onComplete = complete
    }

    /// In a worker.
    func execute() -> TaskOutcome { run(argument) }

    mutating func complete(_ result: Result<[UInt8], MP.PoolError>) {
        let body = onComplete
        onComplete = nil
        body?(argument, result)
    }

    /// Runs `body` and encodes its result (in a worker).
    static func encoding<R: Encodable>(_ body: @escaping () throws -> R, complete: @escaping (Int, Result<[UInt8], MP.PoolError>) -> Void) -> TaskRecord {
        TaskRecord(run: { _ in
            let value: R
            do { value = try body() } catch { return .failure(.task, "\(type(of: error))", "\(error)") }
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
    /// Int64 next index; an Int64 per worker slot: the task it runs (-1: none);
    /// a byte per task: 1 once a quiet task has succeeded.
    let shared: SharedBlock
    let slots: Int
    let hasQuietTasks: Bool
    var workers: [PoolWorker] = []
    var settled: [Bool]
    var settledCount = 0
    var initializerFailure: MP.PoolError?
    /// Every task below this index is settled (the parent's scan of the done bytes starts here).
    private var scanFrom = 0

    /// A worker running quiet tasks reports progress at most this often (seconds):
    /// 20,000 one-item chunks cost a few hundred messages, not 20,000, and a
    /// chunk that runs longer than this is still reported when it ends.
    static let reportIntervalNanoseconds: Int64 = 200_000
    /// The index of a progress frame (quiet tasks are done: scan their bytes).
    static let progressIndex = -2

    init(tasks: [TaskRecord], slots: Int) throws(MP.SyncError) {
        self.tasks = tasks
        self.slots = slots
        hasQuietTasks = tasks.contains { $0.quiet }
        shared = try SharedBlock(bytes: 8 * (1 + slots) + tasks.count)
        settled = [Bool](repeating: false, count: tasks.count)
        let words = shared.base.assumingMemoryBound(to: Int64.self)
        words[0] = 0
        for slot in 0..<slots { words[1 + slot] = -1 }
    }

    var next: UnsafeMutablePointer<Int64> { shared.base.assumingMemoryBound(to: Int64.self) }
    func slot(_ index: Int) -> UnsafeMutablePointer<Int64> { next + 1 + index }
    private func doneByte(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        (shared.base + 8 * (1 + slots)).assumingMemoryBound(to: UInt8.self) + index
    }
    var exhausted: Bool { cmp_atomic_load_i64(next) >= tasks.count }
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
    func settle(_ index: Int, _ result: Result<[UInt8], MP.PoolError>) {
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
}

extension MP {
    /// Python's `multiprocessing.Pool`, for closures.
    ///
    /// ```swift
    /// let pool = try MP.Pool(processes: 4)
    /// let squares = try pool.map(0..<1_000) { $0 * $0 }
    /// let answer = pool.applyAsync { test(7) }      // pool.apply_async(test, (7,))
    /// print(try answer.get(timeout: 10))
    /// pool.close(); try pool.join()
    /// ```
    ///
    /// **Tasks are closures.** Swift closures cannot be serialized, but a
    /// forked process inherits every closure and every value that existed when
    /// it was forked. Submitted tasks gather into a batch; the pool forks its
    /// workers for each batch, and they run the batch's closures by index from
    /// a shared counter. Inputs are never serialized (a `map` over a million
    /// items sends none of them); only results come back, `Codable`, in the
    /// library's wire format. Tasks submitted while a batch runs form the next
    /// batch: thousands of tiny `applyAsync` calls cost a few forks, not a
    /// round trip each.
    ///
    /// **Failures.** A task that throws fails its own result with
    /// ``MP/PoolError/taskFailed(type:description:)``. A worker killed mid-task
    /// (SIGKILL, a crash, `fatalError`) fails that task with
    /// ``MP/PoolError/workerDied(_:)``, naming the signal or exit code; a
    /// replacement worker finishes the batch and the pool stays usable
    /// (CPython's `Pool` hangs there). In `map`, a dead worker fails its chunk
    /// and so the whole `map` (it throws `workerDied`); `imap` delivers the
    /// results before that chunk and then throws. Workers are daemonic: they
    /// die with the pool's process, even a SIGKILLed one.
    ///
    /// The initializer runs once in each worker before its first task, and a
    /// worker exits after `maxTasksPerChild` tasks (a fresh one takes over).
    /// A pool belongs to the process that created it. Close or terminate it
    /// (or use ``with(processes:initializer:maxTasksPerChild:_:)``): until then
    /// it keeps its thread, as Python's keeps its handler threads.
    public final class Pool: @unchecked Sendable {
        /// The number of worker processes.
        public let processes: Int
        let initializer: (() throws -> Void)?
        let maxTasksPerChild: Int?
        private let lock = ForkSafeLock()
        private var pending: [TaskRecord] = []
        /// Whether the dispatcher has been woken for `pending` and has not yet
        /// taken it: later submissions join the batch without a syscall.
        private var wakeSignalled = false
        /// Shared memory for fixed-width map results, kept between maps: its
        /// pages stay mapped in this process, so reading what the workers
        /// wrote costs no page faults. One map holds it at a time.
        private var arena: SharedBlock?
        private var arenaInUse = false
        private var state = State.running
        private let wakeRead: Int32
        private let wakeWrite: Int32
        private let finished = OneShotEvent()
        private let owner = Sys.getpid

        enum State { case running, closed, terminated }

        /// - Parameters:
        ///   - processes: the number of workers (default: ``MP/cpuCount()``).
        ///   - initializer: run once in each worker before its first task.
        ///   - maxTasksPerChild: a worker exits after this many tasks.
        public init(processes: Int? = nil, initializer: (() throws -> Void)? = nil, maxTasksPerChild: Int? = nil) throws(PoolError) {
            let count = processes ?? MP.cpuCount()
            guard count >= 1 else { throw .invalidArgument("processes must be at least 1 (got \(count))") }
            if let maxTasksPerChild, maxTasksPerChild < 1 {
                throw .invalidArgument("maxTasksPerChild must be at least 1 (got \(maxTasksPerChild))")
            }
            self.processes = count
            self.initializer = initializer
            self.maxTasksPerChild = maxTasksPerChild
            do {
                (wakeRead, wakeWrite) = try Sys.pipe()
            } catch {
                throw .system(error)
            }
            if case .failure(let error) = startThread({ [self] in dispatch() }) {
                Sys.close(wakeRead)
                Sys.close(wakeWrite)
                throw .system(error)
            }
        }

        deinit {
            Sys.close(wakeRead)
            Sys.close(wakeWrite)
        }

        /// A pool for the duration of `body`, terminated afterwards (Python's `with Pool() as pool:`).
        public static func with<T>(processes: Int? = nil, initializer: (() throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
                                   _ body: (Pool) throws -> T) throws -> T {
            let pool = try Pool(processes: processes, initializer: initializer, maxTasksPerChild: maxTasksPerChild)
            defer {
                pool.terminate()
                try? pool.join()
            }
            return try body(pool)
        }

        // MARK: submitting

        @usableFromInline
        func submit(_ records: [TaskRecord]) throws(PoolError) {
            guard Sys.getpid == owner else { throw .notOwner }
            let needsWake = try lock.withLock { () throws(PoolError) -> Bool in
                switch state {
                case .running: pending += records
                case .closed: throw .closed
                case .terminated: throw .terminated
                }
                defer { wakeSignalled = true }
                return !wakeSignalled
            }
            if needsWake { wake() }
        }

        private func wake() {
            var byte: UInt8 = 1
            _ = Glibc.write(wakeWrite, &byte, 1)
        }

        /// Python's `apply_async(f, args, callback=, error_callback=)`: runs `body` in a worker.
        /// Submitting to a closed pool gives a result that fails with ``MP/PoolError/closed``.
        ///
        /// The callbacks run on the pool's thread, as Python's run on its result
        /// thread: they must return quickly and must not wait on this pool.
        @discardableResult
        public func applyAsync<R: Codable & Sendable>(_ body: @escaping () throws -> R,
                                                     callback: (@Sendable (R) -> Void)? = nil,
                                                     errorCallback: (@Sendable (PoolError) -> Void)? = nil) -> AsyncResult<R> {
            let result = AsyncResult<R>(callback: callback, errorCallback: errorCallback)
            let record = TaskRecord.encoding(body) { _, outcome in
                result.resolve(outcome.flatMap { bytes in
                    Result { () throws(WireError) -> R in try WireFormat.decode(R.self, from: bytes) }.mapError { .result($0) }
                })
            }
            do { try submit([record]) } catch { result.resolve(.failure(error)) }
            return result
        }

        /// Python's `apply(f, args)`: runs `body` in a worker and waits for its result.
        public func apply<R: Codable & Sendable>(_ body: @escaping () throws -> R) throws(PoolError) -> R {
            try applyAsync(body).get()
        }

        /// `try await pool.apply { ... }`.
        public func apply<R: Codable & Sendable>(_ body: @escaping () throws -> R) async throws(PoolError) -> R {
            try await applyAsync(body).value
        }

        /// Python's `map_async(f, iterable, chunksize)`: the results in order, as one future.
        ///
        /// Inlinable: the loop that calls `transform` is specialized in the
        /// caller's module, so a tiny transform runs at native speed in the workers.
        @inlinable
        public func mapAsync<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                              callback: (@Sendable ([R]) -> Void)? = nil,
                                                                              errorCallback: (@Sendable (PoolError) -> Void)? = nil,
                                                                              _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            startMap(items, chunksize: chunksize, callback: callback, errorCallback: errorCallback, callerWaits: false, transform)
        }

        /// Submits a map. `callerWaits`: the calling thread will only wait for
        /// the result, so it may take the page faults of the result array
        /// meanwhile (never done for `mapAsync` or `await`, whose caller goes on).
        @inlinable
        func startMap<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int?,
                                                                       callback: (@Sendable ([R]) -> Void)?,
                                                                       errorCallback: (@Sendable (PoolError) -> Void)?, callerWaits: Bool,
                                                                       _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            let result = AsyncResult<[R]>(callback: callback, errorCallback: errorCallback)
            let collector = ChunkCollector<R>(ordered: true) { (outcome: consuming Result<[R], PoolError>) in result.resolve(outcome) }
            do {
                try submitChunks(items, chunksize: chunksize, collector: collector, prefaultResults: callerWaits, transform)
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// `mapAsync` for any collection (its elements are gathered into an array first).
        @inlinable
        public func mapAsync<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                  callback: (@Sendable ([R]) -> Void)? = nil,
                                                                  errorCallback: (@Sendable (PoolError) -> Void)? = nil,
                                                                  _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            mapAsync(Swift.Array(items), chunksize: chunksize, callback: callback, errorCallback: errorCallback, transform)
        }

        /// Python's `map(f, iterable, chunksize)`: the results in order. Throws
        /// the first failed chunk's error.
        @inlinable
        public func map<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                             _ transform: @escaping (C.Element) throws -> R) throws(PoolError) -> [R] {
            try map(Swift.Array(items), chunksize: chunksize, transform)
        }

        @inlinable
        public func map<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                         _ transform: @escaping (C.Element) throws -> R) throws(PoolError) -> [R] {
            try startMap(items, chunksize: chunksize, callback: nil, errorCallback: nil, callerWaits: true, transform).take()
        }

        /// `try await pool.map(items) { ... }`.
        @inlinable
        public func map<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                         _ transform: @escaping (C.Element) throws -> R) async throws(PoolError) -> [R] {
            try await mapAsync(items, chunksize: chunksize, transform).value
        }

        /// Python's `starmap(f, [(a, b), ...])`.
        @inlinable
        public func starmap<A, B, R: Codable & Sendable>(_ items: some Collection<(A, B)>, chunksize: Int? = nil,
                                                        _ transform: @escaping (A, B) throws -> R) throws(PoolError) -> [R] {
            try map(Swift.Array(items), chunksize: chunksize) { try transform($0.0, $0.1) }
        }

        /// Python's `imap(f, iterable, chunksize)`: results in order, as they become available.
        @inlinable
        public func imap<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = 1,
                                                              _ transform: @escaping (C.Element) throws -> R) -> AsyncThrowingStream<R, any Error> {
            stream(Swift.Array(items), chunksize: chunksize, ordered: true, transform)
        }

        /// Python's `imap_unordered(f, iterable, chunksize)`: results as they complete.
        @inlinable
        public func imapUnordered<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = 1,
                                                                       _ transform: @escaping (C.Element) throws -> R) -> AsyncThrowingStream<R, any Error> {
            stream(Swift.Array(items), chunksize: chunksize, ordered: false, transform)
        }

        @inlinable
        func stream<Element, R: Codable & Sendable>(_ items: [Element], chunksize: Int?, ordered: Bool,
                                                    _ transform: @escaping (Element) throws -> R) -> AsyncThrowingStream<R, any Error> {
            let (stream, continuation) = AsyncThrowingStream<R, any Error>.makeStream()
            let collector = ChunkCollector<R>(ordered: ordered, deliver: { chunk in for value in chunk { continuation.yield(value) } }) { outcome in
                switch outcome {
                case .success: continuation.finish()
                case .failure(let error): continuation.finish(throwing: error)
                }
            }
            do { try submitChunks(items, chunksize: chunksize, collector: collector, transform) } catch { continuation.finish(throwing: error) }
            return stream
        }

        /// Splits `items` into chunks (index ranges: the workers inherit `items`)
        /// and submits one task per chunk.
        @inlinable
        func submitChunks<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int?, collector: ChunkCollector<R>,
                                                                           prefaultResults: Bool = false,
                                                                           _ transform: @escaping (C.Element) throws -> R) throws(PoolError) {
            if let chunksize, chunksize < 1 { throw .invalidArgument("chunksize must be at least 1 (got \(chunksize))") }
            let count = items.count
            // Python's default: about four chunks per worker.
            let size = chunksize ?? max(1, (count + processes * 4 - 1) / (processes * 4))
            let chunks = (count + size - 1) / size
            collector.expect(chunks)
            if chunks == 0 { return }
            var records: [TaskRecord] = []
            records.reserveCapacity(chunks)
            // Fixed-width results go straight into shared memory mapped before
            // the workers are forked: no encoding, no copy through a socket.
            let shared: SharedBlock?
            var destination: UnsafeMutableRawBufferPointer?
            if R.self is any WirePrimitive.Type {
                let (block, release) = try claimResultBlock(bytes: max(1, count * MemoryLayout<R>.stride))
                shared = block
                destination = collector.gather(from: block.base, count: count, release: release)
            } else {
                shared = nil
            }
            // One closure pair for all the chunks (a record holds its chunk's
            // index): building 20,000 one-item chunks used to take longer than
            // running them, with two closure contexts allocated per chunk.
            let run: (Int) -> TaskOutcome = { chunk in
                let lower = chunk * size, upper = min(lower + size, count)
                var index = items.index(items.startIndex, offsetBy: lower)
                if let shared {
                    let out = shared.base.assumingMemoryBound(to: R.self)
                    shared.prefault(offset: lower * MemoryLayout<R>.stride, bytes: (upper - lower) * MemoryLayout<R>.stride)
                    do {
                        for position in lower..<upper {
                            (out + position).initialize(to: try transform(items[index]))
                            items.formIndex(after: &index)
                        }
                    } catch {
                        return .failure(.task, "\(type(of: error))", "\(error)")
                    }
                    return .success([])
                }
                var results: [R] = []
                results.reserveCapacity(upper - lower)
                do {
                    for _ in lower..<upper {
                        results.append(try transform(items[index]))
                        items.formIndex(after: &index)
                    }
                } catch {
                    return .failure(.task, "\(type(of: error))", "\(error)")
                }
                return TaskOutcome.encode(results)
            }
            let complete: (Int, Result<[UInt8], PoolError>) -> Void = { chunk, outcome in
                let lower = chunk * size, upper = min(lower + size, count)
                if shared != nil {
                    collector.arrived(chunk, outcome.map { _ in [] }, range: lower..<upper)
                } else {
                    collector.arrived(chunk, outcome.flatMap { bytes in TaskOutcome.decode([R].self, bytes) }, range: lower..<upper)
                }
            }
            for chunk in 0..<chunks {
                records.append(TaskRecord(quiet: shared != nil, argument: chunk, run: run, complete: complete))
            }
            try submit(records)
            // While the workers are forked and run, take the page faults of
            // the array the results are copied into (its pages are new, or
            // write-protected by an earlier fork): the copies then run at
            // memory speed. A hint on memory; harmless if the map is over.
            if prefaultResults, let destination { cmp_populate_writable(destination.baseAddress, destination.count) }
        }

        /// Shared memory of at least `bytes` for a map's results, and how to give it back.
        /// One region is kept and reused: its pages stay allocated and mapped
        /// here between maps. A new one is not populated up front: its pages
        /// are allocated by the workers as they write (in parallel), and this
        /// process maps them with cheap read faults while copying.
        @usableFromInline
        func claimResultBlock(bytes: Int) throws(PoolError) -> (SharedBlock, release: @Sendable () -> Void) {
            let reused = lock.withLock { () -> SharedBlock? in
                guard !arenaInUse, let arena, arena.size >= bytes else { return nil }
                arenaInUse = true
                return arena
            }
            let giveBack: @Sendable () -> Void = { [self] in lock.withLock { arenaInUse = false } }
            if let reused { return (reused, giveBack) }
            let block: SharedBlock
            do { block = try SharedBlock(bytes: bytes) } catch { throw .system(OSError("mmap", errno: .noMemory)) }
            let keep = lock.withLock { () -> Bool in
                guard !arenaInUse else { return false }
                arena = block // the larger one replaces the smaller
                arenaInUse = true
                return true
            }
            let nothing: @Sendable () -> Void = {}
            return (block, keep ? giveBack : nothing)
        }

        // MARK: lifecycle

        /// Python's `close()`: no more tasks; the workers finish the submitted ones.
        public func close() {
            lock.withLock { if state == .running { state = .closed } }
            wake()
        }

        /// Python's `terminate()`: kills the workers now; unfinished tasks fail with ``MP/PoolError/terminated``.
        public func terminate() {
            lock.withLock { state = .terminated }
            wake()
        }

        /// Python's `join()`: waits for the workers to exit, after `close()` or `terminate()`.
        public func join() throws(PoolError) {
            guard Sys.getpid == owner else { throw .notOwner }
            guard lock.withLock({ state != .running }) else { throw .invalidArgument("join() needs close() or terminate() first") }
            finished.wait()
        }

        // MARK: the dispatcher

        /// The pool's thread: forks workers for each batch (batches overlap,
        /// sharing the `processes` worker slots, oldest first), collects
        /// results, and replaces workers that exit before their batch is done.
        private func dispatch() {
            var generations: [Generation] = []
            var draining: [PoolWorker] = []
            while true {
                // A new batch forms only when a worker slot is free: while every
                // worker is busy, submissions gather into one batch (a few forks
                // for thousands of tiny tasks, not a few each).
                let busy = generations.reduce(0) { $0 + $1.workers.count }
                let (state, batch) = lock.withLock { () -> (State, [TaskRecord]) in
                    if self.state == .terminated || busy < processes {
                        defer { pending = []; wakeSignalled = false }
                        return (self.state, pending)
                    }
                    return (self.state, [])
                }
                if state == .terminated {
                    let everyone = generations.flatMap(\.workers) + draining
                    for worker in everyone { try? worker.process.kill() }
                    for worker in everyone { reap(worker) }
                    for generation in generations {
                        for index in generation.tasks.indices { generation.settle(index, .failure(.terminated)) }
                    }
                    for var record in batch { record.complete(.failure(.terminated)) }
                    finished.set()
                    return
                }
                if !batch.isEmpty {
                    do {
                        generations.append(try Generation(tasks: batch, slots: processes))
                    } catch {
                        for var record in batch { record.complete(.failure(.system(OSError("mmap", errno: .noMemory)))) }
                    }
                }
                topUp(generations)
                if generations.isEmpty && state == .closed && lock.withLock({ pending.isEmpty }) {
                    for worker in draining { reap(worker) }
                    finished.set()
                    return
                }
                var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
                let watched = generations.flatMap { generation in generation.workers.map { ($0, Optional(generation)) } }
                    + draining.map { ($0, Generation?.none) }
                for (worker, _) in watched {
                    fds.append(pollfd(fd: worker.results.fileno, events: Int16(POLLIN), revents: 0))
                    fds.append(pollfd(fd: worker.pidfd, events: Int16(POLLIN), revents: 0))
                }
                if Glibc.poll(&fds, nfds_t(fds.count), -1) < 0 { continue }
                if fds[0].revents != 0 {
                    var scratch = [UInt8](repeating: 0, count: 256)
                    _ = Glibc.read(wakeRead, &scratch, scratch.count)
                }
                for (position, (worker, generation)) in watched.enumerated() {
                    let resultReady = fds[1 + 2 * position].revents != 0
                    let exited = fds[2 + 2 * position].revents != 0
                    if resultReady || exited { drain(worker, into: generation) }
                    if exited {
                        reap(worker)
                        if let generation {
                            retire(worker, from: generation)
                        } else {
                            draining.removeAll { $0.pidfd == worker.pidfd }
                        }
                    }
                }
                for generation in generations where generation.finished {
                    draining += generation.workers
                    generation.workers = []
                }
                generations.removeAll { $0.finished }
            }
        }

        /// Forks workers for the batches, oldest first, up to `processes` in all.
        private func topUp(_ generations: [Generation]) {
            var total = generations.reduce(0) { $0 + $1.workers.count }
            for generation in generations {
                if let failure = generation.initializerFailure {
                    for index in generation.tasks.indices { generation.settle(index, .failure(failure)) }
                    continue
                }
                while total < processes, generation.workers.count < generation.tasks.count, !generation.exhausted {
                    let used = Set(generation.workers.map(\.slot))
                    guard let slot = (0..<processes).first(where: { !used.contains($0) }) else { break }
                    guard let worker = try? fork(slot: slot, for: generation) else { return }
                    generation.workers.append(worker)
                    total += 1
                }
            }
        }

        private func fork(slot: Int, for generation: Generation) throws -> PoolWorker {
            let (parentEnd, childEnd) = try MP.Pipe(duplex: false)
            let initializer = self.initializer
            let limit = maxTasksPerChild ?? Int.max
            let wakeRead = self.wakeRead, wakeWrite = self.wakeWrite
            let process = MP.Process(name: "PoolWorker-\(slot + 1)", daemon: true) {
                parentEnd.close()
                Sys.close(wakeRead)
                Sys.close(wakeWrite)
                if let initializer {
                    do { try initializer() } catch {
                        try childEnd.sendBytes(TaskOutcome.failure(.initializer, "\(type(of: error))", "\(error)").frame(index: -1))
                        return
                    }
                }
                var done = 0
                var lastReport = Deadline.now
                var unreported = false
                while done < limit {
                    let index = Int(cmp_atomic_add_i64(generation.next, 1) - 1)
                    if index >= generation.tasks.count { break }
                    cmp_atomic_store_i64(generation.slot(slot), Int64(index))
                    let record = generation.tasks[index]
                    let outcome = record.execute()
                    if record.quiet, case .success = outcome {
                        generation.markDone(index)
                        let now = Deadline.now
                        unreported = now - lastReport < Generation.reportIntervalNanoseconds
                        if !unreported {
                            try childEnd.sendBytes(TaskOutcome.success([]).frame(index: Generation.progressIndex))
                            lastReport = now
                        }
                    } else {
                        try childEnd.sendBytes(outcome.frame(index: index))
                    }
                    cmp_atomic_store_i64(generation.slot(slot), -1)
                    done += 1
                }
                if unreported { try childEnd.sendBytes(TaskOutcome.success([]).frame(index: Generation.progressIndex)) }
            }
            try process.start(forkOnCurrentThread: true) // this thread outlives its workers
            childEnd.close()
            return PoolWorker(process: process, results: parentEnd, pidfd: try process.sentinel, slot: slot)
        }

        /// Reads every result the worker has sent.
        private func drain(_ worker: PoolWorker, into generation: Generation?) {
            defer { generation?.settleCompleted() }
            while (try? worker.results.poll(timeout: 0)) == true {
                guard let frame = try? worker.results.recvBytes(), let (index, outcome) = TaskOutcome.parse(frame) else { return }
                guard let generation, index != Generation.progressIndex else { continue }
                if index < 0 {
                    generation.initializerFailure = outcome.poolError
                    continue
                }
                if let error = outcome.poolError {
                    generation.settle(index, .failure(error))
                } else if case .success(let bytes) = outcome {
                    generation.settle(index, .success(bytes))
                }
            }
        }

        private func reap(_ worker: PoolWorker) {
            try? worker.process.join()
            worker.results.close()
        }

        /// A worker of a running batch exited: fail the task it was running
        /// (if it died mid-task); a replacement is forked by the next `topUp`.
        private func retire(_ worker: PoolWorker, from generation: Generation) {
            generation.workers.removeAll { $0.pidfd == worker.pidfd }
            let running = Int(cmp_atomic_load_i64(generation.slot(worker.slot)))
            cmp_atomic_store_i64(generation.slot(worker.slot), -1)
            if running >= 0 {
                let how: String
                switch worker.process.exitStatus {
                case .signaled(let signal, _)?: how = "killed by \(signal)"
                case .exited(let code)?: how = "exited with \(code)"
                default: how = "unknown status"
                }
                generation.settle(running, .failure(.workerDied(how)))
            }
        }
    }
}

extension Collection {
    /// A parallel `map` over worker processes, in one call: a pool for the
    /// duration of the call, `processes` workers (default: the CPU count).
    /// The elements are inherited by the workers, never serialized; the
    /// results come back `Codable`.
    ///
    /// Inlinable, as `MP.Pool.map` is: unspecialized, the workers' loop
    /// would go through generic witnesses per element (10 times slower).
    @inlinable
    public func parallelMap<R: Codable & Sendable>(processes: Int? = nil, chunksize: Int? = nil,
                                                   _ transform: @escaping (Element) throws -> R) throws -> [R] {
        try MP.Pool.with(processes: processes) { pool in try pool.map(self, chunksize: chunksize, transform) }
    }
}

extension RandomAccessCollection {
    /// `parallelMap` for a random-access collection: the workers index it in
    /// place (any other collection is first gathered into an array).
    @inlinable
    public func parallelMap<R: Codable & Sendable>(processes: Int? = nil, chunksize: Int? = nil,
                                                   _ transform: @escaping (Element) throws -> R) throws -> [R] {
        try MP.Pool.with(processes: processes) { pool in try pool.map(self, chunksize: chunksize, transform) }
    }
}
