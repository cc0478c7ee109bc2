import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

extension MP {
    /// Python's `AsyncResult`: the future of one `applyAsync` or `mapAsync`.
    public final class AsyncResult<Value: Sendable>: @unchecked Sendable {
        private let lock = ForkSafeLock()
        private var outcome: Result<Value, MP.Error>?
        private var continuations: [CheckedContinuation<Result<Value, MP.Error>, Never>] = []
        private var resolving = false
        private let onSuccess: (@Sendable (Value) -> Void)?
        private let onFailure: (@Sendable (MP.Error) -> Void)?
        private var canceller: (@Sendable () -> Void)?
        private var observers: [@Sendable (Result<Value, MP.Error>) -> Void] = []
        private var recordedUsage: MP.ResourceUsage?

        /// How far a map has come (its tasks completed of the total, the
        /// rate, an estimate of the time left; a bar on a terminal): see
        /// ``MP/Progress``. Nil for a single task.
        public let progress: MP.Progress?

        /// What the task used in its worker (CPU time, peak resident memory),
        /// once it has completed, when its ``MP/TaskPool`` records usage
        /// (`recordUsage: true`); nil otherwise.
        public var usage: MP.ResourceUsage? { lock.withLock { recordedUsage } }

        func setUsage(_ usage: MP.ResourceUsage) { lock.withLock { recordedUsage = usage } }

        @usableFromInline
        init(callback: (@Sendable (Value) -> Void)?, errorCallback: (@Sendable (MP.Error) -> Void)?, progress: MP.Progress? = nil) {
            onSuccess = callback
            onFailure = errorCallback
            self.progress = progress
        }

        /// How a queued task is cancelled without stopping a running one
        /// (``MP/ProcessPoolExecutor/shutdown(wait:cancelFutures:)``).
        private var queuedCanceller: (@Sendable () -> Bool)?

        func setQueuedCanceller(_ cancel: @escaping @Sendable () -> Bool) {
            lock.withLock { queuedCanceller = cancel }
        }

        /// Cancels the task if no worker holds it yet; whether it did.
        func cancelIfQueued() -> Bool {
            let cancel = lock.withLock { outcome == nil && !resolving ? queuedCanceller : nil }
            return cancel?() ?? false
        }

        /// How ``cancel()`` stops the work (a ``MP/TaskPool`` removes or kills its tasks).
        func setCanceller(_ cancel: @escaping @Sendable () -> Void) {
            lock.withLock { canceller = cancel }
        }

        /// Cancels the task (Python's futures have `cancel()`; its `AsyncResult`
        /// has none): the result fails with ``MP/Error/Code/cancelled``.
        ///
        /// In a ``MP/TaskPool``, a task still queued never runs, and a running
        /// one is stopped: its worker is killed and replaced. In a closure
        /// ``MP/Pool`` the result is cancelled but the closure still runs (its
        /// batch's workers cannot stop one task). Nothing happens once the
        /// result is ready. Cancelling the Swift task that awaits ``value``
        /// cancels the result too.
        public func cancel() {
            let cancel = lock.withLock { outcome == nil && !resolving ? canceller : nil }
            if let cancel { cancel() } else { resolve(.failure(.cancelled)) }
        }

        /// Calls `body` with the outcome once it is ready (at once if it is):
        /// Python's `Future.add_done_callback`. It runs on the pool's thread
        /// (or the caller's, when already ready): keep it short.
        public func whenReady(_ body: @escaping @Sendable (Result<Value, MP.Error>) -> Void) {
            let ready: Result<Value, MP.Error>? = lock.withLock {
                if let outcome, !resolving { return outcome }
                observers.append(body)
                return nil
            }
            if let ready { body(ready) }
        }

        /// Python's `ready()`.
        public var ready: Bool { lock.withLock { outcome != nil } }

        /// Python's `successful()`: throws ``MP/Error/Code/invalidState`` before the result is ready.
        public var successful: Bool {
            get throws(MP.Error) {
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

        /// Python's `get(timeout)`: the value, or the task's error; ``MP/Error/Code/timeout`` on timeout.
        public func get(timeout: Double? = nil) throws(MP.Error) -> Value {
            let until = try Deadline.after(timeout) { MP.Error.invalidArgument("timeout must not be negative (got \($0))") }
            guard wait(until: until) else { throw .resultTimeout }
            return try lock.withLock { outcome! }.get()
        }

        /// `get()` for a result only its caller can see (a blocking `map`
        /// creates it and returns its value): the value is handed over, not
        /// kept, so the array is freed as soon as the caller drops it, even
        /// while the pool's thread still holds this object. The next map can
        /// then reuse its pages, which are writable (see `ForkExcludedArray`).
        @usableFromInline
        func take() throws(MP.Error) -> Value {
            wait()
            let result = lock.withLock { () -> Result<Value, MP.Error> in
                defer { outcome = .failure(.notReady) } // handed over
                return outcome!
            }
            return try result.get()
        }

        /// `try await result.value`: suspends until the result is ready.
        public var value: Value {
            get async throws(MP.Error) {
                let result = await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, MP.Error>, Never>) in
                        let ready: Result<Value, MP.Error>? = lock.withLock {
                            if let outcome { return outcome }
                            continuations.append(continuation)
                            return nil
                        }
                        if let ready { continuation.resume(returning: ready) }
                    }
                } onCancel: {
                    cancel()
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
        func resolve(_ result: consuming Result<Value, MP.Error>) {
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
            progress?.finish()
            lock.lock()
            outcome = consume result
            canceller = nil // it holds the pool's job, which holds this result
            queuedCanceller = nil
            resolving = false
            lock.broadcast()
            let waiting = continuations
            continuations = []
            let watching = observers
            observers = []
            let resumeWith = waiting.isEmpty && watching.isEmpty ? nil : outcome
            lock.unlock()
            if let resumeWith {
                for continuation in waiting { continuation.resume(returning: resumeWith) }
                for observer in watching { observer(resumeWith) }
            }
        }
    }
}

// MARK: - tasks and generations
