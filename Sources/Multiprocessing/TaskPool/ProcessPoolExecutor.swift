import MultiprocessingPlatform
extension MP {
    /// Python's `concurrent.futures.ProcessPoolExecutor`, for named tasks, on
    /// a ``MP/TaskPool``.
    ///
    /// ```swift
    /// try await MP.ProcessPoolExecutor.with(maxWorkers: 4) { executor in    // with ProcessPoolExecutor(4) as ex:
    ///     let futures = (0..<10).map { executor.submit(Square(x: $0)) }       //     fs = [ex.submit(square, i) ...]
    ///     for try await future in MP.asCompleted(futures) {                   //     for f in as_completed(fs):
    ///         print(try future.result())                                      //         print(f.result())
    ///     }
    /// }
    /// ```
    ///
    /// Unlike CPython's, a worker that dies (a crash, SIGKILL, `exit`) breaks
    /// nothing: the future of the task it ran fails with
    /// ``MP/Error/Code/workerDied``, a new worker takes its place, and the
    /// executor goes on (CPython's raises `BrokenProcessPool` for every
    /// pending future and refuses new ones).
    public final class ProcessPoolExecutor: @unchecked Sendable {
        /// The pool behind the executor.
        public let pool: TaskPool
        private let lock = ForkSafeLock()
        private var pending: [ObjectIdentifier: @Sendable () -> Bool] = [:]
        private var isShutDown = false

        /// Python's `ProcessPoolExecutor(max_workers, mp_context, initializer, initargs, max_tasks_per_child)`.
        ///
        /// - Parameters:
        ///   - maxWorkers: the number of worker processes (default: ``MP/cpuCount()``).
        ///   - startMethod: how workers start (Python's `mp_context`; default ``MP/getStartMethod()``).
        ///   - initializer: a named task run once in each worker.
        ///   - maxTasksPerChild: a worker is replaced after this many tasks.
        ///   - limits: what each worker may use (see ``MP/WorkerLimits``).
        ///   - recordUsage: each task's CPU time and peak memory are kept on its result.
        public init(maxWorkers: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                    maxTasksPerChild: Int? = nil, limits: WorkerLimits? = nil, recordUsage: Bool = false) throws(MP.Error) {
            pool = try TaskPool(processes: maxWorkers, startMethod: startMethod, initializer: initializer, maxTasksPerChild: maxTasksPerChild,
                                limits: limits, recordUsage: recordUsage)
        }

        deinit { pool.close() }

        /// `with ProcessPoolExecutor() as ex:`: shut down (waiting) afterwards, also when `body` throws.
        public static func with<T>(maxWorkers: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                                   _ body: (ProcessPoolExecutor) throws -> T) throws -> T {
            try Scoped.run(try ProcessPoolExecutor(maxWorkers: maxWorkers, startMethod: startMethod, initializer: initializer), body) {
                $0.shutdown(wait: true)
            }
        }

        /// The scoped executor for async code; the wait for the workers blocks no thread.
        nonisolated(nonsending)
        public static func with<T>(maxWorkers: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                                   _ body: (ProcessPoolExecutor) async throws -> T) async throws -> T {
            let executor = try ProcessPoolExecutor(maxWorkers: maxWorkers, startMethod: startMethod, initializer: initializer)
            // Not Scoped.run: a body that threw cancels the futures still waiting, as Python's `with` does not wait for them.
            do {
                let value = try await body(executor)
                executor.shutdown(wait: false)
                try? await executor.pool.join()
                return value
            } catch {
                executor.shutdown(wait: false, cancelFutures: true)
                try? await executor.pool.join()
                throw error
            }
        }

        /// Python's `submit(fn, *args)`: the task's future. After ``shutdown(wait:cancelFutures:)``
        /// the future fails with ``MP/Error/Code/closed`` (Python raises `RuntimeError`).
        ///
        /// - Parameter task: the named task; its stored properties are the arguments.
        @discardableResult
        public func submit<T: NamedTask>(_ task: T) -> Future<T.Result> {
            let result = pool.applyAsync(task)
            let future = Future(result)
            let key = ObjectIdentifier(future)
            lock.withLock { pending[key] = { [weak future] in future?.cancelIfQueued() ?? false } }
            result.whenReady { [weak self] _ in self?.lock.withLock { _ = self?.pending.removeValue(forKey: key) } }
            return future
        }

        /// Python's `map(fn, *iterables, timeout, chunksize)`: the results in
        /// order, read lazily from `tasks`.
        ///
        /// - Parameters:
        ///   - tasks: the tasks, one per item.
        ///   - chunksize: tasks per message to a worker.
        public func map<S: Sequence>(_ tasks: S, chunksize: Int = 1) -> TaskResults<S.Element.Result> where S.Element: NamedTask {
            pool.imap(tasks, chunksize: chunksize)
        }

        /// Python's `shutdown(wait, cancel_futures)`: takes no more tasks;
        /// with `cancelFutures`, the futures not yet running are cancelled;
        /// with `wait`, returns when the workers have exited.
        public func shutdown(wait: Bool = true, cancelFutures: Bool = false) {
            let cancels = lock.withLock { () -> [@Sendable () -> Bool] in
                isShutDown = true
                return cancelFutures ? Swift.Array(pending.values) : []
            }
            for cancel in cancels { _ = cancel() }
            pool.close()
            if wait { try? pool.join() }
        }
    }

    /// Python's `concurrent.futures.Future`: the result of one submitted task.
    public final class Future<Value: Sendable>: @unchecked Sendable {
        let result: AsyncResult<Value>

        init(_ result: AsyncResult<Value>) { self.result = result }

        /// Python's `result(timeout)`: the value, or the task's error;
        /// ``MP/Error/Code/timeout`` when it is not ready in time.
        public func result(timeout: Double? = nil) throws(MP.Error) -> Value { try result.get(timeout: timeout) }

        /// `try await future.value`: suspends until the result is ready; cancelling the waiting task cancels the future.
        public var value: Value { get async throws(MP.Error) { try await result.value } }

        /// Python's `exception(timeout)`: the task's error, or nil if it succeeded.
        public func exception(timeout: Double? = nil) throws(MP.Error) -> MP.Error? {
            do {
                _ = try result.get(timeout: timeout)
                return nil
            } catch {
                // The wait's own timeout is thrown; the task's failure (even its own timeout) is the answer.
                if error == .resultTimeout { throw error }
                return error
            }
        }

        /// Python's `done()`.
        public var done: Bool { result.ready }

        /// Python's `cancelled()`.
        public var cancelled: Bool {
            guard result.ready, case .cancelled? = try? exception(timeout: 0) else { return false }
            return true
        }

        /// Python's `cancel()`: whether the future is now cancelled. Python's
        /// cancels only a task that has not started; this one also stops a
        /// running task (its worker is killed and replaced). False once done.
        @discardableResult
        public func cancel() -> Bool {
            if result.ready { return cancelled }
            result.cancel()
            return cancelled
        }

        /// Cancels the task only if no worker holds it yet (``ProcessPoolExecutor/shutdown(wait:cancelFutures:)``).
        func cancelIfQueued() -> Bool { result.cancelIfQueued() }

        /// Python's `add_done_callback(fn)`: `body` gets this future once it is done (at once if it is).
        public func addDoneCallback(_ body: @escaping @Sendable (Future<Value>) -> Void) {
            result.whenReady { [self] _ in body(self) }
        }
    }

    /// Python's `concurrent.futures.as_completed(fs, timeout)`: the futures
    /// in the order they complete. With a timeout, the sequence throws
    /// ``MP/Error/Code/timeout`` if they are not all done in time.
    ///
    /// - Parameters:
    ///   - futures: the futures to watch.
    ///   - timeout: seconds to wait for all of them (nil: no limit).
    public static func asCompleted<Value>(_ futures: [Future<Value>], timeout: Double? = nil) -> AsyncThrowingStream<Future<Value>, any Swift.Error> {
        let (stream, continuation) = AsyncThrowingStream<Future<Value>, any Swift.Error>.makeStream()
        guard !futures.isEmpty else {
            continuation.finish()
            return stream
        }
        let remaining = Countdown(futures.count)
        // The timer ends with the last future (it does not sleep on).
        let timer: Task<Void, Never>? = timeout.map { seconds in
            Task.detached {
                do {
                    try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                    continuation.finish(throwing: MP.Error.resultTimeout)
                } catch {}
            }
        }
        for future in futures {
            future.addDoneCallback { done in
                continuation.yield(done)
                if remaining.tick() {
                    continuation.finish()
                    timer?.cancel()
                }
            }
        }
        return stream
    }

    /// What Python's `concurrent.futures.wait` waits for.
    public enum ReturnWhen: Sendable {
        case firstCompleted, firstException, allCompleted
    }

    /// Python's `concurrent.futures.wait(fs, timeout, return_when)`: the
    /// futures done and not done when the condition is met or the time is up.
    ///
    /// - Parameters:
    ///   - futures: the futures to wait for.
    ///   - timeout: seconds to wait at most (nil: no limit).
    ///   - returnWhen: what ends the wait (default: all completed).
    public static func wait<Value>(_ futures: [Future<Value>], timeout: Double? = nil, returnWhen: ReturnWhen = .allCompleted)
        -> (done: [Future<Value>], notDone: [Future<Value>]) {
        let signal = OneShotEvent()
        @Sendable func satisfied() -> Bool {
            switch returnWhen {
            case .allCompleted: return futures.allSatisfy(\.done)
            case .firstCompleted: return futures.isEmpty || futures.contains(where: \.done)
            case .firstException:
                return futures.allSatisfy(\.done) || futures.contains { $0.done && (try? $0.exception(timeout: 0)) != nil }
            }
        }
        for future in futures { future.addDoneCallback { _ in if satisfied() { signal.set() } } }
        if !satisfied() {
            _ = signal.wait(until: timeout.flatMap { Deadline.after(validSeconds: max(0, $0)) })
        }
        return (futures.filter(\.done), futures.filter { !$0.done })
    }
}
