import MultiprocessingPlatform
extension MP {
    /// Python's `multiprocessing.pool.ThreadPool` (`multiprocessing.dummy.Pool`):
    /// the pool API on threads of this process, for I/O-bound work (a task
    /// that waits on a socket, a file, a subprocess) and for tests.
    ///
    /// ```swift
    /// try MP.ThreadPool.with(processes: 8) { pool in                   // with ThreadPool(8) as pool:
    ///     let pages = try pool.map(urls) { try fetch($0) }           //     pool.map(fetch, urls)
    /// }
    /// ```
    ///
    /// Tasks are `@Sendable` closures (nothing is encoded); they run on
    /// `processes` plain threads, so a task may block without holding up
    /// Swift concurrency's cooperative threads. Unlike a process pool,
    /// ``terminate()`` cannot stop a running task (a thread cannot be
    /// killed): it drops the queued ones (their results fail with
    /// ``MP/Error/Code/closed``) and running ones finish.
    public final class ThreadPool: @unchecked Sendable {
        /// The number of threads (Python's name).
        public let processes: Int
        @usableFromInline let core: ThreadPoolCore

        /// Python's `ThreadPool(processes, initializer, initargs)`.
        ///
        /// - Parameters:
        ///   - processes: the number of threads (default: ``MP/cpuCount()``).
        ///   - initializer: run once on each thread before its first task.
        public init(processes: Int? = nil, initializer: (@Sendable () throws -> Void)? = nil) throws(MP.Error) {
            let count = processes ?? MP.cpuCount()
            guard count >= 1 else { throw .invalidArgument("processes must be at least 1 (got \(count))") }
            self.processes = count
            core = ThreadPoolCore(initializer: initializer)
            try core.start(count)
        }

        /// Dropped: closed; the threads finish what was submitted, then end.
        deinit { core.close() }

        /// `with ThreadPool() as pool:`: terminated and joined afterwards.
        public static func with<T>(processes: Int? = nil, _ body: (ThreadPool) throws -> T) throws -> T {
            try Scoped.run(try ThreadPool(processes: processes), body) { pool in
                pool.terminate()
                try? pool.join()
            }
        }

        @usableFromInline
        func submit(_ job: @escaping @Sendable () -> Void, abandon: @escaping @Sendable (MP.Error) -> Void) {
            core.submit(ThreadPoolCore.Job(run: job, abandon: abandon))
        }

        /// Python's `apply_async(f, args, callback, error_callback)`.
        ///
        /// - Parameters:
        ///   - body: the task.
        ///   - callback: called with the result, on the pool's thread.
        ///   - errorCallback: called with the error, on the pool's thread.
        @discardableResult
        public func applyAsync<R: Sendable>(_ body: @escaping @Sendable () throws -> R,
                                            callback: (@Sendable (R) -> Void)? = nil,
                                            errorCallback: (@Sendable (MP.Error) -> Void)? = nil) -> AsyncResult<R> {
            let result = AsyncResult<R>(callback: callback, errorCallback: errorCallback)
            submit({
                do { result.resolve(.success(try body())) } catch {
                    result.resolve(.failure(.taskFailed(type: "\(type(of: error))", description: "\(error)")))
                }
            }, abandon: { result.resolve(.failure($0)) })
            return result
        }

        /// Python's `apply(f, args)`.
        public func apply<R: Sendable>(_ body: @escaping @Sendable () throws -> R) throws(MP.Error) -> R {
            try applyAsync(body).get()
        }

        /// `try await pool.apply { ... }`.
        public func apply<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws(MP.Error) -> R {
            try await applyAsync(body).value
        }

        /// Python's `map_async(f, iterable)`: the results in order, as one future (the first failure fails it).
        ///
        /// - Parameters:
        ///   - items: the inputs.
        ///   - chunksize: items per task (default as Python's).
        ///   - transform: the function.
        /// Inlinable: the loop over a chunk is specialized in the caller.
        @inlinable
        public func mapAsync<S: Sequence, R: Sendable>(_ items: S, chunksize: Int? = nil,
                                                       _ transform: @escaping @Sendable (S.Element) throws -> R) -> AsyncResult<[R]>
            where S.Element: Sendable {
            let all = Swift.Array(items)
            let result = AsyncResult<[R]>(callback: nil, errorCallback: nil, progress: MP.Progress(total: all.count))
            if let chunksize, chunksize < 1 {
                result.resolve(.failure(.invalidArgument("chunksize must be at least 1 (got \(chunksize))")))
                return result
            }
            guard !all.isEmpty else {
                result.resolve(.success([]))
                return result
            }
            let size = chunksize ?? Swift.max(1, (all.count + processes * 4 - 1) / (processes * 4))
            let ranges = stride(from: 0, to: all.count, by: size).map { $0..<Swift.min($0 + size, all.count) }
            let gather = Gather<R>(chunks: ranges.count) { result.resolve($0) }
            for (index, range) in ranges.enumerated() {
                submit({
                    do {
                        let values = try all[range].map(transform)
                        result.progress?.advance(by: range.count)
                        gather.arrived(index, .success(values))
                    } catch {
                        result.progress?.advance(by: range.count, failed: range.count)
                        gather.arrived(index, .failure(.taskFailed(type: "\(type(of: error))", description: "\(error)")))
                    }
                }, abandon: { gather.arrived(index, .failure($0)) })
            }
            return result
        }

        /// Python's `map(f, iterable, chunksize)`.
        @inlinable
        public func map<S: Sequence, R: Sendable>(_ items: S, chunksize: Int? = nil,
                                                  _ transform: @escaping @Sendable (S.Element) throws -> R) throws(MP.Error) -> [R]
            where S.Element: Sendable {
            try mapAsync(items, chunksize: chunksize, transform).get()
        }

        /// `try await pool.map(items) { ... }`.
        public func map<S: Sequence, R: Sendable>(_ items: S, chunksize: Int? = nil,
                                                  _ transform: @escaping @Sendable (S.Element) throws -> R) async throws(MP.Error) -> [R]
            where S.Element: Sendable {
            try await mapAsync(items, chunksize: chunksize, transform).value
        }

        /// Python's `starmap(f, [(a, b), ...])`.
        public func starmap<A: Sendable, B: Sendable, R: Sendable>(_ items: some Sequence<(A, B)>,
                                                                  _ transform: @escaping @Sendable (A, B) throws -> R) throws(MP.Error) -> [R] {
            try map(items.map { Pair(first: $0.0, second: $0.1) }) { try transform($0.first, $0.second) }
        }

        /// Python's `imap_unordered(f, iterable)`: results as they complete.
        public func imapUnordered<S: Sequence, R: Sendable>(_ items: S, _ transform: @escaping @Sendable (S.Element) throws -> R)
            -> AsyncThrowingStream<R, any Swift.Error> where S.Element: Sendable {
            let (stream, continuation) = AsyncThrowingStream<R, any Swift.Error>.makeStream()
            let all = Swift.Array(items)
            let left = Countdown(all.count)
            if all.isEmpty { continuation.finish() }
            for item in all {
                submit({
                    do { continuation.yield(try transform(item)) } catch {
                        continuation.finish(throwing: MP.Error.taskFailed(type: "\(type(of: error))", description: "\(error)"))
                    }
                    if left.tick() { continuation.finish() }
                }, abandon: { continuation.finish(throwing: $0) })
            }
            return stream
        }

        /// Python's `imap(f, iterable)`: results in order.
        public func imap<S: Sequence, R: Sendable>(_ items: S, _ transform: @escaping @Sendable (S.Element) throws -> R)
            -> AsyncThrowingStream<R, any Swift.Error> where S.Element: Sendable {
            let (stream, continuation) = AsyncThrowingStream<R, any Swift.Error>.makeStream()
            let futures = items.map { item in applyAsync { try transform(item) } }
            Task.detached {
                for future in futures {
                    do { continuation.yield(try await future.value) } catch {
                        continuation.finish(throwing: error)
                        return
                    }
                }
                continuation.finish()
            }
            return stream
        }

        /// Python's `close()`: no more tasks; the threads finish the submitted ones.
        public func close() { core.close() }

        /// Python's `terminate()`: drops the queued tasks (their results fail
        /// with ``MP/Error/Code/closed``); running ones finish (a thread cannot be killed).
        public func terminate() { core.terminate() }

        /// Python's `join()`, after `close()` or `terminate()`.
        public func join() throws(MP.Error) {
            try core.checkJoinable()
            core.finished.wait()
        }

        /// Whether the threads ended within `timeout` seconds, after `close()` or `terminate()`.
        public func join(timeout: Double?) throws(MP.Error) -> Bool {
            try core.checkJoinable()
            let deadline = try Deadline.after(timeout) { MP.Error.invalidArgument("timeout must not be negative (got \($0))") }
            return core.finished.wait(until: deadline)
        }

        /// `try await pool.join()`: blocks no thread.
        public func join() async throws(MP.Error) {
            try core.checkJoinable()
            await core.finished.wait()
        }
    }

    /// Python's `multiprocessing.dummy`: the pool API on threads.
    public enum Dummy {
        /// `multiprocessing.dummy.Pool`.
        public typealias Pool = ThreadPool
    }
}

/// Two values as one `Sendable` item.
struct Pair<A: Sendable, B: Sendable>: Sendable {
    let first: A
    let second: B
}

/// The chunks of a thread pool's map, in order.
@usableFromInline
final class Gather<R: Sendable>: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var chunks: [[R]?]
    private var remaining: Int
    private var done = false
    private let finish: (Result<[R], MP.Error>) -> Void

    @usableFromInline
    init(chunks: Int, finish: @escaping (Result<[R], MP.Error>) -> Void) {
        self.chunks = [[R]?](repeating: nil, count: chunks)
        remaining = chunks
        self.finish = finish
    }

    @usableFromInline
    func arrived(_ index: Int, _ outcome: Result<[R], MP.Error>) {
        let result: Result<[R], MP.Error>? = lock.withLock {
            guard !done else { return nil }
            switch outcome {
            case .failure(let error):
                done = true
                return .failure(error)
            case .success(let values):
                chunks[index] = values
                remaining -= 1
                guard remaining == 0 else { return nil }
                done = true
                return .success(chunks.flatMap { $0! })
            }
        }
        if let result { finish(result) }
    }
}

/// A thread pool's queue and threads; the threads hold this, not the pool,
/// so a pool the program drops is closed.
@usableFromInline
final class ThreadPoolCore: @unchecked Sendable {
    struct Job {
        let run: @Sendable () -> Void
        let abandon: @Sendable (MP.Error) -> Void
    }

    enum State { case running, closed, terminated }

    private let lock = ForkSafeLock()
    private var queue: [Job?] = []
    private var head = 0
    private var state = State.running
    private var threads = 0
    let finished = OneShotEvent()
    private let initializer: (@Sendable () throws -> Void)?

    init(initializer: (@Sendable () throws -> Void)?) { self.initializer = initializer }

    func start(_ count: Int) throws(MP.Error) {
        for _ in 0..<count {
            lock.withLock { threads += 1 }
            if case .failure(let error) = startThread({ [self] in work() }) {
                lock.withLock { threads -= 1 }
                terminate()
                throw .system(error)
            }
        }
    }

    func submit(_ job: Job) {
        let refusal: MP.Error? = lock.withLock {
            switch state {
            case .running:
                queue.append(job)
                lock.broadcast()
                return nil
            case .closed: return .poolClosed
            case .terminated: return .terminated
            }
        }
        if let refusal { job.abandon(refusal) }
    }

    private func work() {
        if let initializer { try? initializer() }
        while true {
            let next: Job? = lock.withLock {
                while head == queue.count && state == .running { lock.wait() }
                guard state != .terminated, head < queue.count else { return nil }
                defer {
                    queue[head] = nil
                    head += 1
                    if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
                }
                return queue[head]
            }
            guard let next else { break }
            next.run()
        }
        let last = lock.withLock { () -> Bool in
            threads -= 1
            return threads == 0
        }
        if last { finished.set() }
    }

    func close() {
        lock.withLock {
            if state == .running { state = .closed }
            lock.broadcast()
        }
    }

    func terminate() {
        let dropped = lock.withLock { () -> [Job] in
            state = .terminated
            defer { queue.removeAll(); head = 0 }
            lock.broadcast()
            return queue[head...].compactMap { $0 }
        }
        for job in dropped { job.abandon(.terminated) }
    }

    func checkJoinable() throws(MP.Error) {
        if lock.withLock({ state == .running }) {
            throw .invalidArgument("join() needs close() or terminate() first (the pool is still running)")
        }
    }
}
