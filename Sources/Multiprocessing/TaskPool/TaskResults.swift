import MultiprocessingPlatform
import Tracing
extension MP {
    /// The results of ``MP/TaskPool/imap(_:chunksize:bufferSize:timeout:)``
    /// or ``MP/TaskPool/imapUnordered(_:chunksize:bufferSize:timeout:)``:
    /// Python's `IMapIterator`, read with `next()` (blocking) or `for try await`.
    ///
    /// The input is read lazily: at most `bufferSize` chunks are submitted and
    /// not yet consumed, and more are taken from the input only as results
    /// are consumed, so an endless input works. A failed chunk throws its
    /// error where its results would be (after the results of its items that
    /// completed); reading on continues with the next chunk, as in Python.
    /// Dropping the results, calling ``cancel()`` or cancelling the task that
    /// iterates them cancels what is still in flight.
    public final class TaskResults<Value: Sendable>: AsyncSequence, @unchecked Sendable {
        public typealias Element = Value

        private let lock = ForkSafeLock()
        private let ordered: Bool
        private let bufferSize: Int
        private let core: TaskPoolCore
        private var pull: (() throws(MP.Error) -> PoolJob.Body?)?
        private var type: UInt32 = 0
        private var timeout: Double?
        private var decode: (([UInt8]) -> Result<[Value], MP.Error>)?
        private var submitted = 0
        private var exhausted = false
        private var inFlight: [Int: PoolJob] = [:]
        /// Arrived chunks: values, then possibly an error.
        private var arrived: [Int: ([Value], MP.Error?)] = [:]
        private var arrivalOrder: [Int] = []
        private var nextIndex = 0
        private var current: [Value] = []
        private var currentPosition = 0
        private var currentError: MP.Error?
        private var failure: MP.Error?
        private var waiters: [CheckedContinuation<Void, Never>] = []
        /// Tasks read from the input so far: the total once it runs out.
        private var pulledItems = 0
        private var trace: (context: ServiceContext, name: String)?

        /// How far the results have come (see ``MP/Progress``): counted as
        /// chunks arrive; the total is known once the input has run out.
        public let progress = MP.Progress(total: nil)

        init(ordered: Bool, bufferSize: Int, core: TaskPoolCore) {
            self.ordered = ordered
            self.bufferSize = bufferSize
            self.core = core
        }

        deinit {
            for job in inFlight.values { core.cancel(job) }
        }

        func start(next: @escaping () throws(MP.Error) -> PoolJob.Body?, type: UInt32, timeout: Double?,
                   decode: @escaping ([UInt8]) -> Result<[Value], MP.Error>, spanName: @autoclosure () -> String) {
            // Chunks are submitted as results are taken, perhaps from
            // another task: the trace is the one the map was started in.
            if let context = ServiceContext.current { trace = (context, spanName()) }
            lock.withLock {
                self.pull = next
                self.type = type
                self.timeout = timeout ?? core.limits?.timeLimit
                self.decode = decode
            }
            topUp()
        }

        /// Ends the results with `error` (an invalid argument found before anything was submitted).
        func fail(_ error: MP.Error) {
            lock.withLock {
                failure = error
                exhausted = true
            }
        }

        /// Cancels what is in flight and reads no more input; `next()` then
        /// throws ``MP/Error/Code/cancelled``.
        public func cancel() {
            let jobs = lock.withLock { () -> [PoolJob] in
                if failure == nil { failure = .cancelled }
                exhausted = true
                current = []
                currentPosition = 0
                currentError = nil
                arrived = [:]
                arrivalOrder = []
                defer { inFlight = [:] }
                return Swift.Array(inFlight.values)
            }
            for job in jobs { core.cancel(job) }
            progress.finish()
            wakeWaiters()
        }

        /// Submits chunks until `bufferSize` are in flight or the input ends.
        private func topUp() {
            var jobs: [PoolJob] = []
            lock.withLock {
                while !exhausted, inFlight.count + arrived.count < bufferSize, let pull {
                    let body: PoolJob.Body?
                    do throws(MP.Error) {
                        body = try pull()
                    } catch {
                        // A task that cannot be sent: its place in the results fails.
                        arrive(submitted, [], error)
                        submitted += 1
                        continue
                    }
                    guard let body else {
                        exhausted = true
                        self.pull = nil
                        progress.setTotal(pulledItems)
                        break
                    }
                    switch body {
                    case .task, .rawTask: pulledItems += 1
                    case .chunk(let count, _), .fixed(_, _, _, let count): pulledItems += count
                    }
                    let index = submitted
                    submitted += 1
                    let decode = self.decode!
                    let span = trace.flatMap { TaskSpan.begin($0.name, kind: .client, in: $0.context) }
                    let job = PoolJob(type: type, body: body, timeout: timeout, trace: span) { [weak self] outcome in
                        guard let self else { return }
                        switch outcome {
                        case .done(let payload):
                            switch decode(payload) {
                            case .success(let values): self.settle(index, values, nil)
                            case .failure(let error): self.settle(index, [], error)
                            }
                        case .failed(_, let error, let before):
                            self.settle(index, (try? decode(before).get()) ?? [], error)
                        }
                    }
                    inFlight[index] = job
                    jobs.append(job)
                }
            }
            if !jobs.isEmpty { core.submit(jobs) }
        }

        private func settle(_ index: Int, _ values: [Value], _ error: MP.Error?) {
            let counted = lock.withLock { () -> Bool in
                guard inFlight.removeValue(forKey: index) != nil else { return false }
                arrive(index, values, error)
                return true
            }
            if counted { progress.advance(by: values.count + (error == nil ? 0 : 1), failed: error == nil ? 0 : 1) }
            wakeWaiters()
        }

        private func arrive(_ index: Int, _ values: [Value], _ error: MP.Error?) {
            arrived[index] = (values, error)
            arrivalOrder.append(index)
        }

        private func wakeWaiters() {
            let waiting = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
                lock.broadcast()
                defer { waiters = [] }
                return waiters
            }
            for waiter in waiting { waiter.resume() }
        }

        private enum Step {
            case value(Value)
            case failure(MP.Error)
            case end
            case wait
        }

        /// The next step without waiting (lock held).
        private func step() -> Step {
            while true {
                if currentPosition < current.count {
                    defer { currentPosition += 1 }
                    return .value(current[currentPosition])
                }
                if let error = currentError {
                    currentError = nil
                    return .failure(error)
                }
                let index: Int?
                if ordered {
                    index = arrived[nextIndex] != nil ? nextIndex : nil
                } else {
                    index = arrivalOrder.isEmpty ? nil : arrivalOrder.removeFirst()
                }
                if let index, let (values, error) = arrived.removeValue(forKey: index) {
                    if ordered { nextIndex += 1; arrivalOrder.removeAll { $0 == index } }
                    current = values
                    currentPosition = 0
                    currentError = error
                    continue
                }
                if let failure { return .failure(failure) }
                if exhausted && inFlight.isEmpty && arrived.isEmpty { return .end }
                return .wait
            }
        }

        /// Whether ``step()`` would wait (lock held); unlike it, takes nothing.
        private var mustWait: Bool {
            if currentPosition < current.count || currentError != nil || failure != nil { return false }
            if ordered ? arrived[nextIndex] != nil : !arrivalOrder.isEmpty { return false }
            return !(exhausted && inFlight.isEmpty && arrived.isEmpty)
        }

        /// Python's `next(it)`: the next result, waiting for it; nil at the end.
        public func next() throws(MP.Error) -> Value? {
            while true {
                topUp()
                lock.lock()
                let step = self.step()
                if case .wait = step { lock.wait() }
                lock.unlock()
                switch step {
                case .value(let value): return value
                case .failure(let error): throw error
                case .end: progress.finish(); return nil
                case .wait: continue
                }
            }
        }

        /// Python's `next(it, timeout)`: ``MP/Error/Code/timeout`` when no result comes in time.
        public func next(timeout: Double) throws(MP.Error) -> Value? {
            let deadline = try Deadline.after(timeout) { MP.Error.invalidArgument("timeout must not be negative (got \($0))") }
            while true {
                topUp()
                lock.lock()
                let step = self.step()
                if case .wait = step { lock.wait(until: deadline) }
                lock.unlock()
                switch step {
                case .value(let value): return value
                case .failure(let error): throw error
                case .end: progress.finish(); return nil
                case .wait: if let deadline, deadline.hasPassed { throw .resultTimeout }
                }
            }
        }

        /// All remaining results, in order of delivery (throws the first failure).
        public func collect() throws(MP.Error) -> [Value] {
            var values: [Value] = []
            while let value = try next() { values.append(value) }
            return values
        }

        func nextAsync() async throws(MP.Error) -> Value? {
            while true {
                if Task.isCancelled { cancel() }
                topUp()
                let step = lock.withLock { self.step() }
                switch step {
                case .value(let value): return value
                case .failure(let error): throw error
                case .end: progress.finish(); return nil
                case .wait:
                    await withTaskCancellationHandler {
                        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                            let ready = lock.withLock { () -> Bool in
                                guard mustWait else { return true }
                                waiters.append(continuation)
                                return false
                            }
                            if ready { continuation.resume() }
                        }
                    } onCancel: {
                        cancel()
                    }
                }
            }
        }

        public struct AsyncIterator: AsyncIteratorProtocol {
            let results: TaskResults<Value>
            public mutating func next() async throws -> Value? { try await results.nextAsync() }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(results: self) }
    }
}
