import Foundation

extension MP {
    /// Python's `AsyncResult` for a task of a ``MP/ClusterPool``: the result
    /// of one `applyAsync`, or of a map's whole set of chunks.
    public final class ClusterResult<Value: Sendable>: @unchecked Sendable {
        private let condition = NSCondition()
        private var outcome: Result<Value, MP.Error>?
        private var waiters: [CheckedContinuation<Result<Value, MP.Error>, Never>] = []

        /// How far a map has come (see ``MP/Progress``); nil for a single task.
        public let progress: MP.Progress?

        init(progress: MP.Progress? = nil) { self.progress = progress }

        func resolve(_ result: Result<Value, MP.Error>) {
            progress?.finish()
            condition.lock()
            guard outcome == nil else {
                condition.unlock()
                return
            }
            outcome = result
            let resumed = waiters
            waiters = []
            condition.broadcast()
            condition.unlock()
            for waiter in resumed { waiter.resume(returning: result) }
        }

        /// Python's `ready()`.
        public var ready: Bool {
            condition.lock()
            defer { condition.unlock() }
            return outcome != nil
        }

        /// Python's `get(timeout)`: the value, or the task's error;
        /// ``MP/Error/Code/timeout`` when the timeout passed first.
        public func get(timeout: Double? = nil) throws(MP.Error) -> Value {
            if let timeout, !(timeout >= 0) { throw .invalidArgument("timeout must be nil or at least 0 (got \(timeout))") }
            let deadline = timeout.map { Date().addingTimeInterval($0) }
            condition.lock()
            defer { condition.unlock() }
            while outcome == nil {
                if let deadline {
                    if !condition.wait(until: deadline) && outcome == nil { throw .timeout }
                } else {
                    condition.wait()
                }
            }
            return try outcome!.get()
        }

        /// Python's `wait(timeout)`: whether it is ready.
        @discardableResult
        public func wait(timeout: Double? = nil) -> Bool {
            do { _ = try get(timeout: timeout) } catch { if error == .timeout { return false } }
            return true
        }

        /// `try await result.value`: waits without blocking a thread.
        public var value: Value {
            get async throws(MP.Error) {
                let result: Result<Value, MP.Error> = await withCheckedContinuation { continuation in
                    condition.lock()
                    if let outcome {
                        condition.unlock()
                        continuation.resume(returning: outcome)
                    } else {
                        waiters.append(continuation)
                        condition.unlock()
                    }
                }
                return try result.get()
            }
        }
    }
}

/// Wakes a waiting loop early (a notification); a wait ends at its timeout otherwise.
final class Bell: @unchecked Sendable {
    private let lock = NSLock()
    private var rung = false
    private var waiter: CheckedContinuation<Void, Never>?

    func ring() {
        lock.lock()
        rung = true
        let waiter = self.waiter
        self.waiter = nil
        lock.unlock()
        waiter?.resume()
    }

    /// Returns when rung (or at once if rung since the last wait), or after `timeout`.
    func wait(timeout: Duration) async {
        let timer = Task { [weak self] in
            do {
                try await Task.sleep(for: timeout)
                self?.ring()
            } catch {} // cancelled: the wait already ended
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if rung {
                rung = false
                lock.unlock()
                continuation.resume()
            } else {
                waiter = continuation
                lock.unlock()
            }
        }
        lock.locked { rung = false }
        timer.cancel()
    }
}

extension NSLocking {
    /// `withLock` with typed throws (Foundation's is untyped).
    func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
