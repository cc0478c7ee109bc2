import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

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
    /// ``MP/Error/Code/taskFailed``. A worker killed mid-task
    /// (SIGKILL, a crash, `fatalError`) fails that task with
    /// ``MP/Error/Code/workerDied``, naming the signal or exit code; a
    /// replacement worker finishes the batch and the pool stays usable
    /// (CPython's `Pool` hangs there). In `map`, a dead worker fails its chunk
    /// and so the whole `map` (it throws `workerDied`); `imap` delivers the
    /// results before that chunk and then throws. Workers are daemonic: they
    /// die with the pool's process, even a SIGKILLed one.
    ///
    /// The initializer runs once in each worker before its first task, and a
    /// worker exits after `maxTasksPerChild` tasks (a fresh one takes over).
    /// A pool belongs to the process that created it. Close or terminate it
    /// (or use `MP.Pool.with { pool in ... }`); a pool
    /// the program drops is closed: its workers finish what was submitted,
    /// then its thread and descriptors go away.
    public final class Pool: @unchecked Sendable {
        /// The number of worker processes.
        public let processes: Int
        let dispatcher: PoolDispatcher
        private let lock = ForkSafeLock()
        /// Shared memory for fixed-width map results, kept between maps: its
        /// pages stay mapped in this process, so reading what the workers
        /// wrote costs no page faults. One map holds it at a time.
        private var arena: SharedBlock?
        private var arenaInUse = false
        private let owner = Sys.getpid

        /// - Parameters:
        ///   - processes: the number of workers (default: ``MP/cpuCount()``).
        ///   - initializer: run once in each worker before its first task.
        ///   - maxTasksPerChild: a worker exits after this many tasks.
        public init(processes: Int? = nil, initializer: (() throws -> Void)? = nil, maxTasksPerChild: Int? = nil) throws(MP.Error) {
            let count = processes ?? MP.cpuCount()
            guard count >= 1 else { throw .invalidArgument("processes must be at least 1 (got \(count))") }
            if let maxTasksPerChild, maxTasksPerChild < 1 {
                throw .invalidArgument("maxTasksPerChild must be at least 1 (got \(maxTasksPerChild))")
            }
            self.processes = count
            do {
                dispatcher = try PoolDispatcher(processes: count, initializer: initializer, maxTasksPerChild: maxTasksPerChild)
                try dispatcher.start()
            } catch {
                throw .system(error)
            }
        }

        /// Dropped: no more tasks; the submitted ones finish (their results
        /// may still be awaited), then the pool's thread ends.
        deinit {
            if Sys.getpid == owner { dispatcher.close() }
        }

        /// `try await MP.Pool.with { pool in ... }`: the scoped pool for async
        /// code; terminated and joined afterwards, also when `body` throws or
        /// its task is cancelled. The join waits on the pool's own thread, not
        /// on the caller's.
        public static func with<T>(processes: Int? = nil, initializer: (() throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
                                   _ body: (Pool) async throws -> T) async throws -> T {
            let pool = try Pool(processes: processes, initializer: initializer, maxTasksPerChild: maxTasksPerChild)
            return try await Scoped.run(pool, body) { pool in
                pool.terminate()
                try await pool.join()
            }
        }

        /// A pool for the duration of `body`, terminated afterwards (Python's `with Pool() as pool:`).
        public static func with<T>(processes: Int? = nil, initializer: (() throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
                                   _ body: (Pool) throws -> T) throws -> T {
            try Scoped.run(try Pool(processes: processes, initializer: initializer, maxTasksPerChild: maxTasksPerChild), body) { pool in
                pool.terminate()
                try? pool.join()
            }
        }

        // MARK: submitting

        @usableFromInline
        func submit(_ records: [TaskRecord]) throws(MP.Error) {
            guard Sys.getpid == owner else { throw .notOwner }
            try dispatcher.submit(records)
        }

        /// Python's `apply_async(f, args, callback=, error_callback=)`: runs `body` in a worker.
        /// Submitting to a closed pool gives a result that fails with ``MP/Error/Code/closed``.
        ///
        /// The callbacks run on the pool's thread, as Python's run on its result
        /// thread: they must return quickly and must not wait on this pool.
        @discardableResult
        public func applyAsync<R: Codable & Sendable>(_ body: @escaping () throws -> R,
                                                     callback: (@Sendable (R) -> Void)? = nil,
                                                     errorCallback: (@Sendable (MP.Error) -> Void)? = nil) -> AsyncResult<R> {
            let result = AsyncResult<R>(callback: callback, errorCallback: errorCallback)
            let record = TaskRecord.encoding(body) { _, outcome in
                result.resolve(outcome.flatMap { bytes in
                    Result { () throws(MP.Error) -> R in try WireFormat.decode(R.self, from: bytes) }.mapError { .result($0) }
                })
            }
            do { try submit([record]) } catch { result.resolve(.failure(error)) }
            return result
        }

        /// Python's `apply(f, args)`: runs `body` in a worker and waits for its result.
        public func apply<R: Codable & Sendable>(_ body: @escaping () throws -> R) throws(MP.Error) -> R {
            try applyAsync(body).get()
        }

        /// `try await pool.apply { ... }`.
        public func apply<R: Codable & Sendable>(_ body: sending @escaping () throws -> R) async throws(MP.Error) -> R {
            try await applyAsync(body).value
        }

        /// Python's `map_async(f, iterable, chunksize)`: the results in order, as one future.
        ///
        /// Inlinable: the loop that calls `transform` is specialized in the
        /// caller's module, so a tiny transform runs at native speed in the workers.
        @inlinable
        public func mapAsync<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                              callback: (@Sendable ([R]) -> Void)? = nil,
                                                                              errorCallback: (@Sendable (MP.Error) -> Void)? = nil,
                                                                              _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            startMap(items, chunksize: chunksize, callback: callback, errorCallback: errorCallback, callerWaits: false, transform)
        }

        /// Submits a map. `callerWaits`: the calling thread will only wait for
        /// the result, so it may take the page faults of the result array
        /// meanwhile (never done for `mapAsync` or `await`, whose caller goes on).
        @inlinable
        func startMap<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int?,
                                                                       callback: (@Sendable ([R]) -> Void)?,
                                                                       errorCallback: (@Sendable (MP.Error) -> Void)?, callerWaits: Bool,
                                                                       _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            let result = AsyncResult<[R]>(callback: callback, errorCallback: errorCallback, progress: MP.Progress(total: items.count))
            let collector = ChunkCollector<R>(ordered: true) { (outcome: consuming Result<[R], MP.Error>) in result.resolve(outcome) }
            collector.progress = result.progress
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
                                                                  errorCallback: (@Sendable (MP.Error) -> Void)? = nil,
                                                                  _ transform: @escaping (C.Element) throws -> R) -> AsyncResult<[R]> {
            mapAsync(Swift.Array(items), chunksize: chunksize, callback: callback, errorCallback: errorCallback, transform)
        }

        /// Python's `map(f, iterable, chunksize)`: the results in order. Throws
        /// the first failed chunk's error.
        @inlinable
        public func map<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                             _ transform: @escaping (C.Element) throws -> R) throws(MP.Error) -> [R] {
            try map(Swift.Array(items), chunksize: chunksize, transform)
        }

        @inlinable
        public func map<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                         _ transform: @escaping (C.Element) throws -> R) throws(MP.Error) -> [R] {
            try startMap(items, chunksize: chunksize, callback: nil, errorCallback: nil, callerWaits: true, transform).take()
        }

        /// `try await pool.map(items) { ... }`.
        @inlinable
        public func map<C: RandomAccessCollection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                                         _ transform: sending @escaping (C.Element) throws -> R) async throws(MP.Error) -> [R] {
            try await mapAsync(items, chunksize: chunksize, transform).value
        }

        /// `try await pool.map(items) { ... }` for any collection.
        @inlinable
        public func map<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = nil,
                                                             _ transform: sending @escaping (C.Element) throws -> R) async throws(MP.Error) -> [R] {
            try await mapAsync(Swift.Array(items), chunksize: chunksize, transform).value
        }

        // MARK: tasks that return nothing

        /// `applyAsync` of a task that returns nothing: the result is `()` once it ran.
        @discardableResult
        public func applyAsync(_ body: @escaping () throws -> Void,
                               callback: (@Sendable () -> Void)? = nil,
                               errorCallback: (@Sendable (MP.Error) -> Void)? = nil) -> AsyncResult<Void> {
            var onSuccess: (@Sendable (()) -> Void)?
            if let callback { onSuccess = { (_: ()) in callback() } }
            let result = AsyncResult<Void>(callback: onSuccess, errorCallback: errorCallback)
            let run: () throws -> NoResult = { try body(); return NoResult() }
            let record = TaskRecord.encoding(run) { (_: Int, outcome: Result<[UInt8], MP.Error>) in
                let done: Result<Void, MP.Error> = outcome.map { _ in () }
                result.resolve(done)
            }
            do throws(MP.Error) { try submit([record]) } catch { result.resolve(Result<Void, MP.Error>.failure(error)) }
            return result
        }

        /// `apply` of a task that returns nothing.
        public func apply(_ body: @escaping () throws -> Void) throws(MP.Error) {
            try applyAsync(body).get()
        }

        /// `try await pool.apply { ... }` of a task that returns nothing.
        public func apply(_ body: sending @escaping () throws -> Void) async throws(MP.Error) {
            try await applyAsync(body).value
        }

        /// `map` of a transform that returns nothing: runs it on every element.
        @inlinable
        public func map<C: Collection>(_ items: C, chunksize: Int? = nil,
                                       _ transform: @escaping (C.Element) throws -> Void) throws(MP.Error) {
            _ = try map(Swift.Array(items), chunksize: chunksize) { (item: C.Element) throws -> NoResult in try transform(item); return NoResult() }
        }

        /// `try await pool.map(items) { ... }` of a transform that returns nothing.
        @inlinable
        public func map<C: Collection>(_ items: C, chunksize: Int? = nil,
                                       _ transform: sending @escaping (C.Element) throws -> Void) async throws(MP.Error) {
            _ = try await mapAsync(Swift.Array(items), chunksize: chunksize) { (item: C.Element) throws -> NoResult in try transform(item); return NoResult() }.value
        }

        /// Python's `starmap(f, [(a, b), ...])`.
        @inlinable
        public func starmap<A, B, R: Codable & Sendable>(_ items: some Collection<(A, B)>, chunksize: Int? = nil,
                                                        _ transform: @escaping (A, B) throws -> R) throws(MP.Error) -> [R] {
            try map(Swift.Array(items), chunksize: chunksize) { try transform($0.0, $0.1) }
        }

        /// Python's `imap(f, iterable, chunksize)`: results in order, as they become available.
        @inlinable
        public func imap<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = 1,
                                                              _ transform: @escaping (C.Element) throws -> R) -> AsyncThrowingStream<R, any Swift.Error> {
            stream(Swift.Array(items), chunksize: chunksize, ordered: true, transform)
        }

        /// Python's `imap_unordered(f, iterable, chunksize)`: results as they complete.
        @inlinable
        public func imapUnordered<C: Collection, R: Codable & Sendable>(_ items: C, chunksize: Int? = 1,
                                                                       _ transform: @escaping (C.Element) throws -> R) -> AsyncThrowingStream<R, any Swift.Error> {
            stream(Swift.Array(items), chunksize: chunksize, ordered: false, transform)
        }

        @inlinable
        func stream<Element, R: Codable & Sendable>(_ items: [Element], chunksize: Int?, ordered: Bool,
                                                    _ transform: @escaping (Element) throws -> R) -> AsyncThrowingStream<R, any Swift.Error> {
            let (stream, continuation) = AsyncThrowingStream<R, any Swift.Error>.makeStream()
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
                                                                           _ transform: @escaping (C.Element) throws -> R) throws(MP.Error) {
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
            // The runtime's answers about the results' type, asked before the
            // workers' fork (see `TaskRecord.encoding`).
            WireFormat.warmCaches(for: [R].self)
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
                    return .failure(.task, _typeName(type(of: error), qualified: false), "\(error)")
                }
                return TaskOutcome.encode(results)
            }
            let complete: (Int, Result<[UInt8], MP.Error>) -> Void = { chunk, outcome in
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
            if prefaultResults, let destination { Sys.populateWritable(destination.baseAddress, destination.count) }
        }

        /// Shared memory of at least `bytes` for a map's results, and how to give it back.
        /// One region is kept and reused: its pages stay allocated and mapped
        /// here between maps. A new one is not populated up front: its pages
        /// are allocated by the workers as they write (in parallel), and this
        /// process maps them with cheap read faults while copying.
        @usableFromInline
        func claimResultBlock(bytes: Int) throws(MP.Error) -> (SharedBlock, release: @Sendable () -> Void) {
            let reused = lock.withLock { () -> SharedBlock? in
                guard !arenaInUse, let arena, arena.size >= bytes else { return nil }
                arenaInUse = true
                return arena
            }
            let giveBack: @Sendable () -> Void = { [self] in lock.withLock { arenaInUse = false } }
            if let reused { return (reused, giveBack) }
            let block: SharedBlock
            do {
                block = try SharedBlock(bytes: bytes, shareable: false)
            } catch {
                throw error.code == .system ? error : .invalidArgument(error.description)
            }
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
        public func close() { dispatcher.close() }

        /// Python's `terminate()`: kills the workers now; unfinished tasks fail with ``MP/Error/Code/closed``.
        public func terminate() { dispatcher.terminate() }

        /// Python's `join()`: waits for the workers to exit, after `close()` or `terminate()`.
        public func join() throws(MP.Error) {
            try checkJoinable()
            dispatcher.finished.wait()
        }

        /// `join(timeout:)`, which CPython's pool lacks: waits at most `timeout`
        /// seconds for the workers to exit, after `close()` or `terminate()`.
        /// - Returns: whether they have (a negative timeout waits not at all,
        ///   as ``MP/AsyncResult/wait(timeout:)``; nil or `.infinity`, without limit).
        @discardableResult
        public func join(timeout: Double?) throws(MP.Error) -> Bool {
            try checkJoinable()
            return dispatcher.finished.wait(until: timeout.flatMap { Deadline.after(validSeconds: $0 >= 0 ? $0 : 0) })
        }

        /// `try await pool.join()`: waits for the workers to exit, after
        /// `close()` or `terminate()`, blocking no thread.
        public func join() async throws(MP.Error) {
            try checkJoinable()
            await dispatcher.finished.wait()
        }

        private func checkJoinable() throws(MP.Error) {
            guard Sys.getpid == owner else { throw .notOwner }
            guard dispatcher.lock.withLock({ dispatcher.state != .running }) else { throw .invalidArgument("join() needs close() or terminate() first") }
        }

    }
}
