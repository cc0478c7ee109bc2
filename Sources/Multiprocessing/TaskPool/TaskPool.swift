import Glibc
import MultiprocessingPlatform
import Tracing

extension MP {
    /// Python's `multiprocessing.Pool` for named tasks: persistent workers,
    /// started by any start method.
    ///
    /// ```swift
    /// struct Square: MP.NamedTask {
    ///     var x: Int
    ///     func run() -> Int { x * x }
    /// }
    ///
    /// try MP.TaskPool.with(processes: 4) { pool in                  // with Pool(4) as pool:
    ///     let r = pool.applyAsync(Square(x: 7))                      //   r = pool.apply_async(square, (7,))
    ///     print(try r.get(timeout: 10))                              //   print(r.get(timeout=10))
    ///     print(try pool.map((0..<10).map { Square(x: $0) }))        //   print(pool.map(square, range(10)))
    /// }
    /// ```
    ///
    /// **Workers** start once, by ``startMethod`` (spawn, forkserver or fork;
    /// by default ``MP/getStartMethod()``), and stay until ``close()`` or
    /// ``terminate()``: the initializer (a named task) runs once in each
    /// worker before its first task; what a task leaves in a worker's globals
    /// is there for the next task on that worker; after `maxTasksPerChild`
    /// tasks a worker exits and a fresh one takes its place. Tasks travel by
    /// name with `Codable` arguments (``MP/NamedTask``); many small tasks
    /// travel in batches. Maps of fixed-width tasks and results (bitwise-
    /// copyable types: no strings, arrays or classes) travel through shared
    /// memory, not through `Codable`.
    ///
    /// **Beyond CPython.** A task given a `timeout:` that runs longer fails
    /// with ``MP/Error/Code/timeout``: its worker is killed and
    /// replaced, and the other tasks go on. ``MP/AsyncResult/cancel()`` (or
    /// cancelling the Swift task that awaits a result) removes a queued task
    /// or stops a running one the same way. A worker that dies mid-task fails
    /// that task with ``MP/Error/Code/workerDied`` (the signal or exit
    /// code, and the crash message when there is one); its unstarted tasks
    /// go to other workers and the pool stays usable. ``imap(_:chunksize:bufferSize:timeout:)``
    /// reads its input lazily, so it works over an endless sequence.
    ///
    /// Compared with the closure ``MP/Pool``: that one forks workers per batch
    /// of closures, which see everything the parent had when they were forked
    /// and send nothing but results; it is the fastest way to map a closure
    /// over a big collection under fork. This one runs named tasks under any
    /// start method, keeps its workers (and their state) between tasks, and
    /// answers a lone `apply` in one round trip to a warm worker. The *Pools*
    /// article compares the two with measured figures.
    ///
    /// A pool belongs to the process that created it. Workers are daemonic:
    /// they die with the pool's process, even a SIGKILLed one. A pool the
    /// program drops is closed: its workers finish what was submitted.
    public final class TaskPool: @unchecked Sendable {
        /// The number of worker processes.
        public let processes: Int
        /// How the workers start.
        public let startMethod: StartMethod
        let core: TaskPoolCore
        private let owner = Sys.getpid
        private let typeLock = ForkSafeLock()
        private var types: [ObjectIdentifier: UInt32] = [:]

        /// Python's `Pool(processes, initializer, initargs, maxtasksperchild)`.
        ///
        /// - Parameters:
        ///   - processes: the number of workers (default: ``MP/cpuCount()``).
        ///   - startMethod: how workers start (default: ``MP/getStartMethod()``).
        ///   - initializer: a named task run once in each worker before its
        ///     first task (its stored properties are Python's `initargs`; it
        ///     may hold a queue, a lock or a value, which cross into each
        ///     worker). If it throws (or its worker dies in it), every task
        ///     not yet running fails with ``MP/Error/Code/taskFailed``.
        ///   - maxTasksPerChild: a worker exits after this many tasks (a map's
        ///     chunk counts as one, as in Python) and a fresh one replaces it.
        ///   - limits: what each worker may use (memory, CPU time per task,
        ///     soft and hard time limits, recycling by memory, no network):
        ///     see ``MP/WorkerLimits``. A task whose worker goes over a limit
        ///     fails with ``MP/Error/Code/memoryLimit``, ``MP/Error/Code/cpuLimit``
        ///     or ``MP/Error/Code/timeout``; the worker is replaced and the
        ///     other tasks go on.
        ///   - recordUsage: each task's CPU time and peak resident memory
        ///     are measured in its worker and kept on its result
        ///     (``MP/AsyncResult/usage``); costs a few microseconds a task.
        /// - Throws: ``MP/Error/Code/invalidArgument``, ``MP/Error/Code/cannotCross``
        ///   (an initializer that cannot be sent), ``MP/Error/Code/startFailed``,
        ///   ``MP/Error/Code/unsupported`` (a limit this kernel or user cannot enforce).
        public init(processes: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                    maxTasksPerChild: Int? = nil, limits: WorkerLimits? = nil, recordUsage: Bool = false) throws(MP.Error) {
            let count = processes ?? MP.cpuCount()
            guard count >= 1 else { throw .invalidArgument("processes must be at least 1 (got \(count))") }
            if let maxTasksPerChild, maxTasksPerChild < 1 {
                throw .invalidArgument("maxTasksPerChild must be at least 1 (got \(maxTasksPerChild))")
            }
            let method = startMethod ?? MP.getStartMethod()
            if let initializer, method != .fork {
                func check<T: NamedTask>(_ task: T) throws(MP.Error) { try TaskRegistry.shared.checkSendable(T.self) }
                do { try check(initializer) } catch { throw .unsendableTask(error) }
            }
            if let limits { try LimitSession.check(limits) }
            self.processes = count
            self.startMethod = method
            do {
                core = try TaskPoolCore(processes: count, method: method, initializer: initializer.map(AnyNamedTask.init),
                                        maxTasksPerChild: maxTasksPerChild, limits: limits, recordUsage: recordUsage)
            } catch {
                throw .system(error)
            }
            try core.start()
        }

        /// Dropped: no more tasks; the submitted ones finish, then the workers exit.
        deinit {
            if Sys.getpid == owner { core.close() }
        }

        /// `try MP.TaskPool.with(processes: 4) { pool in ... }`: Python's
        /// `with Pool(4) as pool:`. The pool is terminated and joined
        /// afterwards, also when `body` throws.
        public static func with<T>(processes: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                                   maxTasksPerChild: Int? = nil, limits: WorkerLimits? = nil, recordUsage: Bool = false,
                                   _ body: (TaskPool) throws -> T) throws -> T {
            let pool = try TaskPool(processes: processes, startMethod: startMethod, initializer: initializer, maxTasksPerChild: maxTasksPerChild,
                                    limits: limits, recordUsage: recordUsage)
            return try Scoped.run(pool, body) { pool in
                pool.terminate()
                try? pool.join()
            }
        }

        /// The scoped pool for async code: terminated and joined afterwards,
        /// also when `body` throws or its task is cancelled. The join blocks no thread.
        nonisolated(nonsending)
        public static func with<T>(processes: Int? = nil, startMethod: StartMethod? = nil, initializer: (any NamedTask)? = nil,
                                   maxTasksPerChild: Int? = nil, limits: WorkerLimits? = nil, recordUsage: Bool = false,
                                   _ body: (TaskPool) async throws -> T) async throws -> T {
            let pool = try TaskPool(processes: processes, startMethod: startMethod, initializer: initializer, maxTasksPerChild: maxTasksPerChild,
                                    limits: limits, recordUsage: recordUsage)
            return try await Scoped.run(pool, body) { pool in
                pool.terminate()
                try await pool.join()
            }
        }

        /// The process ids of the current workers (Python's `[p.pid for p in pool._pool]`).
        public var workerPids: [Int32] { core.workerPids }

        /// The workers' limits, as given.
        public var limits: WorkerLimits? { core.limits }

        /// How the workers' memory limit is enforced here: a memory cgroup
        /// per worker, or `RLIMIT_DATA`; nil without a memory limit.
        public var memoryEnforcement: WorkerLimits.MemoryEnforcement? { core.memoryEnforcement }

        /// Workers replaced because their resident memory passed
        /// ``MP/WorkerLimits/recycleAboveResidentMemory`` after a task.
        public var recycledWorkers: Int { core.lock.withLock { core.recycledWorkers } }

        /// Every worker, live and exited (the latest 256 of those), with the
        /// tasks it ran and what it used: so far for a live one (from
        /// `/proc`), in all for one that has exited (from `wait4`), with how
        /// it ended. mpire's "worker insights": data to size limits from.
        public var workerUsage: [WorkerUsage] { core.workerUsage }

        // MARK: submitting

        /// The number the workers know `T` by; checks once that another process finds `T` by name.
        private func typeNumber<T: NamedTask>(_ type: T.Type) throws(MP.Error) -> UInt32 {
            guard Sys.getpid == owner else { throw .notOwner }
            if let known = typeLock.withLock({ types[ObjectIdentifier(T.self)] }) { return known }
            do { try TaskRegistry.shared.checkSendable(T.self) } catch { throw .unsendableTask(error) }
            let number = core.typeNumber(T.name)
            typeLock.withLock { types[ObjectIdentifier(T.self)] = number }
            return number
        }

        static func encode<T: NamedTask>(_ task: T) throws(MP.Error) -> [UInt8] {
            do {
                return try WireFormat.encode(task)
            } catch {
                // A library object among the arguments says so itself.
                if error.code == .cannotCross { throw .unsendableTask(error) }
                throw .unsendableTask(.badArguments(task: T.name, reason: error.description))
            }
        }

        /// The bytes of a fixed-width value.
        static func bytes<T>(of value: T) -> [UInt8] {
            withUnsafeBytes(of: value) { [UInt8]($0) }
        }

        /// A fixed-width value from its bytes.
        static func value<R>(_ type: R.Type, from bytes: [UInt8]) -> Result<R, MP.Error> {
            guard bytes.count == MemoryLayout<R>.size else {
                return .failure(.result(.malformed(type: "\(R.self)", reason: "\(bytes.count) bytes for a value of \(MemoryLayout<R>.size)")))
            }
            let storage = UnsafeMutablePointer<R>.allocate(capacity: 1)
            defer { storage.deallocate() }
            bytes.withUnsafeBytes { if let base = $0.baseAddress { UnsafeMutableRawPointer(storage).copyMemory(from: base, byteCount: $0.count) } }
            return .success(storage.move())
        }

        private static func validate(_ timeout: Double?) throws(MP.Error) {
            if let timeout, !(timeout > 0) { throw .invalidArgument("timeout must be positive (got \(timeout))") }
        }

        /// Python's `apply_async(f, args, callback=, error_callback=)`: runs
        /// `task` in a worker. The callbacks run on the pool's thread, as
        /// Python's run on its result thread: they must return quickly and
        /// must not wait on this pool.
        ///
        /// - Parameters:
        ///   - task: the named task; its stored properties are the arguments.
        ///   - timeout: seconds the task may run; a task that runs longer
        ///     fails with ``MP/Error/Code/timeout`` and its worker
        ///     is killed and replaced. The clock starts when a worker starts
        ///     the task, not while it waits in the queue.
        ///   - callback: called with the result (Python's `callback`).
        ///   - errorCallback: called with the error (Python's `error_callback`).
        @discardableResult
        public func applyAsync<T: NamedTask>(_ task: T, timeout: Double? = nil,
                                             callback: (@Sendable (T.Result) -> Void)? = nil,
                                             errorCallback: (@Sendable (MP.Error) -> Void)? = nil) -> AsyncResult<T.Result> {
            let result = AsyncResult<T.Result>(callback: callback, errorCallback: errorCallback)
            do throws(MP.Error) {
                try Self.validate(timeout)
                let type = try typeNumber(T.self)
                // A fixed-width task and result travel as their bytes (both
                // ends are this build): no `Codable` on either side.
                let raw = _isPOD(T.self) && _isPOD(T.Result.self)
                let body: PoolJob.Body = raw ? .rawTask(Self.bytes(of: task)) : .task(try Self.encode(task))
                let job = PoolJob(type: type, body: body, timeout: timeout ?? core.limits?.timeLimit,
                                  trace: TaskSpan.begin("task \(T.name)", kind: .client)) { outcome in
                    switch outcome {
                    case .done(let bytes) where raw:
                        result.resolve(Self.value(T.Result.self, from: bytes))
                    case .done(let bytes):
                        result.resolve(Result { () throws(MP.Error) -> T.Result in try T._decodeResult(bytes) }.mapError { .result($0) })
                    case .failed(_, let error, _):
                        result.resolve(.failure(error))
                    }
                }
                if core.rules.recordUsage { job.usageSink = { [result] in result.setUsage($0) } }
                result.setCanceller { [core] in core.cancel(job) }
                result.setQueuedCanceller { [core] in core.cancelIfQueued(job) }
                core.submit([job])
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// Python's `apply(f, args)`: runs `task` in a worker and waits for its result.
        public func apply<T: NamedTask>(_ task: T, timeout: Double? = nil) throws(MP.Error) -> T.Result {
            try applyAsync(task, timeout: timeout).get()
        }

        /// `try await pool.apply(task)`: blocks no thread; cancelling the
        /// awaiting task cancels the pool's task (see ``MP/AsyncResult/cancel()``).
        public func apply<T: NamedTask>(_ task: T, timeout: Double? = nil) async throws(MP.Error) -> T.Result {
            try await applyAsync(task, timeout: timeout).value
        }

        // MARK: maps

        /// Python's `map_async(f, iterable, chunksize)`: every task's result,
        /// in order, as one future. The first failed chunk fails it.
        ///
        /// - Parameters:
        ///   - tasks: the tasks, one per item (Python's iterable of arguments).
        ///   - chunksize: tasks per message to a worker (default as Python's:
        ///     the count over four times the workers, rounded up).
        ///   - timeout: seconds each chunk may run (with `chunksize: 1`, each task).
        ///   - callback: called with the results (Python's `callback`).
        ///   - errorCallback: called with the error (Python's `error_callback`).
        public func mapAsync<S: Sequence>(_ tasks: S, chunksize: Int? = nil, timeout: Double? = nil,
                                          callback: (@Sendable ([S.Element.Result]) -> Void)? = nil,
                                          errorCallback: (@Sendable (MP.Error) -> Void)? = nil)
            -> AsyncResult<[S.Element.Result]> where S.Element: NamedTask {
            let result = AsyncResult<[S.Element.Result]>(callback: callback, errorCallback: errorCallback, progress: MP.Progress(total: nil))
            do throws(MP.Error) {
                try Self.validate(timeout)
                if let chunksize, chunksize < 1 { throw MP.Error.invalidArgument("chunksize must be at least 1 (got \(chunksize))") }
                let type = try typeNumber(S.Element.self)
                let all = tasks as? [S.Element] ?? Swift.Array(tasks)
                let size = chunksize ?? defaultChunksize(all.count)
                let map: MapSubmission<S.Element>
                if MapSubmission<S.Element>.isFixedWidth {
                    var offset = 0
                    map = try MapSubmission(fixedWidth: all.count, fill: { address, count in
                        all.withUnsafeBytes { raw in
                            address.copyMemory(from: raw.baseAddress! + offset * MemoryLayout<S.Element>.stride,
                                               byteCount: count * MemoryLayout<S.Element>.stride)
                        }
                        offset += count
                    }, type: type, chunksize: size, timeout: timeout, pool: self, into: result, callerWaits: false)
                } else {
                    map = try MapSubmission(encoding: all, type: type, chunksize: size, timeout: timeout, pool: self, into: result)
                    core.submit(map.jobs)
                }
                result.setCanceller { [core] in for job in map.pendingJobs { core.cancel(job) } }
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// Python's `map(f, iterable, chunksize)`: every task's result, in
        /// order. Throws the first failed chunk's error.
        public func map<S: Sequence>(_ tasks: S, chunksize: Int? = nil, timeout: Double? = nil) throws(MP.Error) -> [S.Element.Result]
            where S.Element: NamedTask {
            try mapAsync(tasks, chunksize: chunksize, timeout: timeout).get()
        }

        /// `try await pool.map(tasks)`.
        public func map<S: Sequence>(_ tasks: S, chunksize: Int? = nil, timeout: Double? = nil) async throws(MP.Error) -> [S.Element.Result]
            where S.Element: NamedTask {
            try await mapAsync(tasks, chunksize: chunksize, timeout: timeout).value
        }

        /// Python's `map(f, iterable)` spelled with the task's initializer:
        /// `pool.map(0..<100) { Square(x: $0) }`.
        ///
        /// Inlinable: fixed-width tasks are made straight into the shared
        /// memory the workers read, by a loop specialized in the caller.
        @inlinable
        public func map<C: Collection, T: NamedTask>(_ items: C, chunksize: Int? = nil, timeout: Double? = nil,
                                                     _ task: (C.Element) throws -> T) throws(MP.Error) -> [T.Result] {
            guard _isPOD(T.self) && _isPOD(T.Result.self) else {
                return try map(Self.tasks(items, task), chunksize: chunksize, timeout: timeout)
            }
            var next = items.startIndex
            return try mapFixedWidth(count: items.count, chunksize: chunksize, timeout: timeout, callerWaits: true, T.self) { base, count in
                let tasks = base.bindMemory(to: T.self, capacity: count)
                for index in 0..<count {
                    (tasks + index).initialize(to: try task(items[next]))
                    items.formIndex(after: &next)
                }
            }.get()
        }

        /// `try await pool.map(0..<100) { Square(x: $0) }`.
        @inlinable
        nonisolated(nonsending)
        public func map<C: Collection, T: NamedTask>(_ items: C, chunksize: Int? = nil, timeout: Double? = nil,
                                                     _ task: (C.Element) throws -> T) async throws(MP.Error) -> [T.Result] {
            guard _isPOD(T.self) && _isPOD(T.Result.self) else {
                return try await map(Self.tasks(items, task), chunksize: chunksize, timeout: timeout)
            }
            var next = items.startIndex
            return try await mapFixedWidth(count: items.count, chunksize: chunksize, timeout: timeout, callerWaits: false, T.self) { base, count in
                let tasks = base.bindMemory(to: T.self, capacity: count)
                for index in 0..<count {
                    (tasks + index).initialize(to: try task(items[next]))
                    items.formIndex(after: &next)
                }
            }.value
        }

        /// `map` for a sequence that is not a collection.
        @inlinable
        public func map<S: Sequence, T: NamedTask>(_ items: S, chunksize: Int? = nil, timeout: Double? = nil,
                                                   _ task: (S.Element) throws -> T) throws(MP.Error) -> [T.Result] {
            try map(Self.tasks(items, task), chunksize: chunksize, timeout: timeout)
        }

        /// `try await pool.map(sequence) { ... }` for a sequence that is not a collection.
        @inlinable
        nonisolated(nonsending)
        public func map<S: Sequence, T: NamedTask>(_ items: S, chunksize: Int? = nil, timeout: Double? = nil,
                                                   _ task: (S.Element) throws -> T) async throws(MP.Error) -> [T.Result] {
            try await map(Self.tasks(items, task), chunksize: chunksize, timeout: timeout)
        }

        /// A map of `count` fixed-width tasks that `fill` writes into shared memory.
        @usableFromInline
        func mapFixedWidth<T: NamedTask>(count: Int, chunksize: Int?, timeout: Double?, callerWaits: Bool, _ taskType: T.Type,
                                         fill: (UnsafeMutableRawPointer, Int) throws -> Void) -> AsyncResult<[T.Result]> {
            let result = AsyncResult<[T.Result]>(callback: nil, errorCallback: nil, progress: MP.Progress(total: count))
            do throws(MP.Error) {
                try Self.validate(timeout)
                if let chunksize, chunksize < 1 { throw MP.Error.invalidArgument("chunksize must be at least 1 (got \(chunksize))") }
                let type = try typeNumber(T.self)
                let map = try MapSubmission<T>(fixedWidth: count, fill: fill, type: type, chunksize: chunksize ?? defaultChunksize(count),
                                               timeout: timeout, pool: self, into: result, callerWaits: callerWaits)
                result.setCanceller { [core] in for job in map.pendingJobs { core.cancel(job) } }
                map.submitted()
            } catch {
                result.resolve(.failure(error))
            }
            return result
        }

        /// Python's `starmap(f, [(a, b), ...])`: each tuple's elements are the
        /// task's arguments. `pool.starmap([(1, 2), (3, 4)], Add.init)`.
        @inlinable
        public func starmap<each A, T: NamedTask>(_ items: some Sequence<(repeat each A)>, chunksize: Int? = nil, timeout: Double? = nil,
                                                  _ task: (repeat each A) throws -> T) throws(MP.Error) -> [T.Result] {
            try map(Self.starTasks(items, task), chunksize: chunksize, timeout: timeout)
        }

        /// Python's `starmap_async`.
        @inlinable
        public func starmapAsync<each A, T: NamedTask>(_ items: some Sequence<(repeat each A)>, chunksize: Int? = nil, timeout: Double? = nil,
                                                       callback: (@Sendable ([T.Result]) -> Void)? = nil,
                                                       errorCallback: (@Sendable (MP.Error) -> Void)? = nil,
                                                       _ task: (repeat each A) throws -> T) -> AsyncResult<[T.Result]> {
            do throws(MP.Error) {
                return mapAsync(try Self.starTasks(items, task), chunksize: chunksize,
                                timeout: timeout, callback: callback, errorCallback: errorCallback)
            } catch {
                let result = AsyncResult<[T.Result]>(callback: callback, errorCallback: errorCallback)
                result.resolve(.failure(error))
                return result
            }
        }

        /// `try await pool.starmap(pairs, Add.init)`.
        @inlinable
        nonisolated(nonsending)
        public func starmap<each A, T: NamedTask>(_ items: some Sequence<(repeat each A)>, chunksize: Int? = nil, timeout: Double? = nil,
                                                  _ task: (repeat each A) throws -> T) async throws(MP.Error) -> [T.Result] {
            try await map(Self.starTasks(items, task), chunksize: chunksize, timeout: timeout)
        }

        /// The tasks for `items`; an error thrown while making them fails the map.
        @inlinable
        static func tasks<S: Sequence, T>(_ items: S, _ task: (S.Element) throws -> T) throws(MP.Error) -> [T] {
            do {
                return try items.map(task)
            } catch {
                throw .invalidArgument("making the map's tasks failed: \(type(of: error)): \(error)")
            }
        }

        /// The tasks for tuples of arguments.
        @inlinable
        static func starTasks<each A, T>(_ items: some Sequence<(repeat each A)>, _ task: (repeat each A) throws -> T) throws(MP.Error) -> [T] {
            var tasks: [T] = []
            tasks.reserveCapacity(items.underestimatedCount)
            do {
                for arguments in items { tasks.append(try task(repeat each arguments)) }
            } catch {
                throw .invalidArgument("making the map's tasks failed: \(type(of: error)): \(error)")
            }
            return tasks
        }

        func defaultChunksize(_ count: Int) -> Int {
            let (size, extra) = count.quotientAndRemainder(dividingBy: processes * 4)
            return max(1, size + (extra > 0 ? 1 : 0))
        }

        /// Python's `imap(f, iterable, chunksize)`: results in order, as they
        /// become available; read from `tasks` lazily.
        ///
        /// - Parameters:
        ///   - tasks: the tasks, read as results are consumed (may be endless).
        ///   - chunksize: tasks per message to a worker (default 1, as Python's).
        ///   - bufferSize: chunks submitted and not yet consumed, at most
        ///     (CPython 3.14's `buffersize`); the input is read only as results
        ///     are consumed, so `tasks` may be endless. Default: 32 per worker.
        ///   - timeout: seconds each chunk may run.
        public func imap<S: Sequence>(_ tasks: S, chunksize: Int = 1, bufferSize: Int? = nil, timeout: Double? = nil)
            -> TaskResults<S.Element.Result> where S.Element: NamedTask {
            stream(tasks, ordered: true, chunksize: chunksize, bufferSize: bufferSize, timeout: timeout)
        }

        /// Python's `imap_unordered(f, iterable, chunksize)`: results as they complete; read from `tasks` lazily.
        public func imapUnordered<S: Sequence>(_ tasks: S, chunksize: Int = 1, bufferSize: Int? = nil, timeout: Double? = nil)
            -> TaskResults<S.Element.Result> where S.Element: NamedTask {
            stream(tasks, ordered: false, chunksize: chunksize, bufferSize: bufferSize, timeout: timeout)
        }

        private func stream<S: Sequence>(_ tasks: S, ordered: Bool, chunksize: Int, bufferSize: Int?, timeout: Double?)
            -> TaskResults<S.Element.Result> where S.Element: NamedTask {
            typealias T = S.Element
            let results = TaskResults<T.Result>(ordered: ordered, bufferSize: bufferSize ?? processes * 32, core: core)
            do throws(MP.Error) {
                try Self.validate(timeout)
                guard chunksize >= 1 else { throw MP.Error.invalidArgument("chunksize must be at least 1 (got \(chunksize))") }
                if let bufferSize, bufferSize < 1 { throw MP.Error.invalidArgument("bufferSize must be at least 1 (got \(bufferSize))") }
                let type = try typeNumber(T.self)
                var iterator = tasks.makeIterator()
                results.start(next: { () throws(MP.Error) -> PoolJob.Body? in
                    var items = ByteWriter()
                    var count = 0
                    while count < chunksize, let task = iterator.next() {
                        let encoded = try Self.encode(task)
                        items.writeLength(encoded.count)
                        items.writeRaw(encoded)
                        count += 1
                    }
                    return count == 0 ? nil : .chunk(count: count, items.bytes)
                }, type: type, timeout: timeout, decode: MapSubmission<T>.decodeChunk, spanName: "imap \(T.name)")
            } catch {
                results.fail(error)
            }
            return results
        }

        // MARK: lifecycle

        /// Python's `close()`: no more tasks; the workers finish the submitted ones, then exit.
        public func close() { core.close() }

        /// Python's `terminate()`: kills the workers now; unfinished tasks fail with ``MP/Error/Code/closed``.
        public func terminate() { core.terminate() }

        /// Python's `join()`: waits for the workers to exit, after `close()` or
        /// `terminate()` (before either, throws ``MP/Error/Code/invalidArgument``, as Python raises).
        public func join() throws(MP.Error) {
            try checkJoinable()
            core.finished.wait()
        }

        /// `join(timeout:)`, which CPython's pool lacks: whether the workers
        /// exited within `timeout` seconds (nil: no limit).
        public func join(timeout: Double?) throws(MP.Error) -> Bool {
            try checkJoinable()
            let deadline = try Deadline.after(timeout) { MP.Error.invalidArgument("timeout must not be negative (got \($0))") }
            return core.finished.wait(until: deadline)
        }

        /// `try await pool.join()`: blocks no thread.
        public func join() async throws(MP.Error) {
            try checkJoinable()
            await core.finished.wait()
        }

        private func checkJoinable() throws(MP.Error) {
            guard Sys.getpid == owner else { throw .notOwner }
            if core.lock.withLock({ core.state == .running }) {
                throw .invalidArgument("join() needs close() or terminate() first (the pool is still running)")
            }
        }
    }
}

extension MP.Context {
    /// Python's `ctx.Pool(processes)`: a ``MP/TaskPool`` whose workers start by this context's method.
    public func TaskPool(processes: Int? = nil, initializer: (any MP.NamedTask)? = nil,
                         maxTasksPerChild: Int? = nil, limits: MP.WorkerLimits? = nil,
                         recordUsage: Bool = false) throws(MP.Error) -> MP.TaskPool {
        try MP.TaskPool(processes: processes, startMethod: startMethod, initializer: initializer, maxTasksPerChild: maxTasksPerChild,
                        limits: limits, recordUsage: recordUsage)
    }
}
