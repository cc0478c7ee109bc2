import MultiprocessingPlatform
extension MP {
    /// Python's proxy of `manager.Lock()` and `manager.RLock()`. A lock is
    /// held by a thread of a process; when every process of a client is
    /// gone, the locks its threads held are released (the next `acquire`
    /// succeeds instead of waiting forever).
    public struct LockProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `acquire(blocking, timeout)`: true when acquired.
        @discardableResult
        public func acquire(block: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.acquire, blocking: block, timeout: timeout)
            return try reply.bool()
        }

        /// Python's `release()`; releasing a lock not held throws ``MP/Error/Code/invalidState``.
        public func release() throws(MP.Error) { try handle.call(.release) }

        /// `with lock:`.
        @discardableResult
        public func withLock<T>(_ body: () throws -> T) throws -> T {
            try acquire()
            defer { try? release() }
            return try body()
        }

        /// Python's `locked()`.
        public func locked() throws(MP.Error) -> Bool {
            var reply = try handle.call(.lockStatus)
            return try reply.bool()
        }

        public var description: String { handle.description }
    }

    /// Python's proxy of `manager.Semaphore()` and `manager.BoundedSemaphore()`.
    public struct SemaphoreProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `acquire(blocking, timeout)`: true when acquired.
        @discardableResult
        public func acquire(block: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.acquire, blocking: block, timeout: timeout)
            return try reply.bool()
        }

        /// Python's `release(n)`; a bounded semaphore released above its
        /// initial value throws ``MP/Error/Code/invalidState``.
        public func release(_ n: Int = 1) throws(MP.Error) { try handle.call(.release) { $0.append(n) } }

        /// `with semaphore:`.
        @discardableResult
        public func withLock<T>(_ body: () throws -> T) throws -> T {
            try acquire()
            defer { try? release() }
            return try body()
        }

        /// The current value (Python's `_value`).
        public func value() throws(MP.Error) -> Int {
            var reply = try handle.call(.lockStatus)
            return try reply.int()
        }

        public var description: String { handle.description }
    }

    /// Python's proxy of `manager.Condition()`: `wait` releases its lock
    /// and takes it back before returning, as in Python.
    public struct ConditionProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Acquires the condition's lock.
        @discardableResult
        public func acquire(block: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.acquire, blocking: block, timeout: timeout)
            return try reply.bool()
        }

        /// Releases the condition's lock.
        public func release() throws(MP.Error) { try handle.call(.release) }

        /// `with condition:`.
        @discardableResult
        public func withLock<T>(_ body: () throws -> T) throws -> T {
            try acquire()
            defer { try? release() }
            return try body()
        }

        /// Python's `wait(timeout)`, with the lock held: false when the timeout passed first.
        @discardableResult
        public func wait(timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.conditionWait, timeout: timeout)
            return try reply.bool()
        }

        /// Python's `wait_for(predicate, timeout)`: the predicate's last value.
        @discardableResult
        public func wait(for predicate: () throws -> Bool, timeout: Double? = nil) throws -> Bool {
            let deadline = try Deadline.after(timeout, invalid: { MP.Error.invalidArgument("timeout must be nil or at least 0 (got \($0))") })
            while true {
                if try predicate() { return true }
                let left = deadline.map { $0.remainingSeconds }
                if let left, left <= 0 { return false }
                try wait(timeout: left)
            }
        }

        /// Python's `notify(n)`, with the lock held.
        public func notify(_ n: Int = 1) throws(MP.Error) { try handle.call(.conditionNotify) { $0.append(n) } }

        /// Python's `notify_all()`, with the lock held.
        public func notifyAll() throws(MP.Error) { try handle.call(.conditionNotify) { $0.append(-1) } }

        public var description: String { handle.description }
    }

    /// Python's proxy of `manager.Event()`.
    public struct EventProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `set()`: wakes every waiter.
        public func set() throws(MP.Error) { try handle.call(.eventSet) }

        /// Python's `clear()`.
        public func clear() throws(MP.Error) { try handle.call(.eventClear) }

        /// Python's `is_set()`.
        public func isSet() throws(MP.Error) -> Bool { var reply = try handle.call(.eventIsSet); return try reply.bool() }

        /// Python's `wait(timeout)`: the flag when it returns.
        @discardableResult
        public func wait(timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.eventWait, timeout: timeout)
            return try reply.bool()
        }

        /// `try await event.wait()` without blocking an actor.
        @discardableResult
        public func wait(timeout: Double? = nil) async throws(MP.Error) -> Bool {
            let handle = self.handle
            return try await handle.async { (cancellation) throws(MP.Error) in
                var reply = try handle.call(.eventWait, timeout: timeout, cancellation: cancellation)
                return try reply.bool()
            }
        }

        public var description: String { handle.description }
    }

    /// Python's proxy of `manager.Barrier(parties)`.
    public struct BarrierProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `wait(timeout)`: this party's arrival index (0 for the
        /// first). A timeout breaks the barrier, as in Python:
        /// ``MP/Error/Code/brokenBarrier`` here and for every waiter.
        @discardableResult
        public func wait(timeout: Double? = nil) throws(MP.Error) -> Int {
            var reply = try handle.call(.barrierWait, timeout: timeout)
            return try reply.int()
        }

        /// Python's `reset()`: waiting parties get ``MP/Error/Code/brokenBarrier``; the barrier is whole again.
        public func reset() throws(MP.Error) { try handle.call(.barrierReset) }

        /// Python's `abort()`: broken until `reset()`.
        public func abort() throws(MP.Error) { try handle.call(.barrierAbort) }

        private func status() throws(MP.Error) -> (parties: Int, waiting: Int, broken: Bool) {
            var reply = try handle.call(.barrierStatus)
            return (try reply.int(), try reply.int(), try reply.bool())
        }

        /// Python's `parties`.
        public var parties: Int { get throws(MP.Error) { try status().parties } }
        /// Python's `n_waiting`.
        public var nWaiting: Int { get throws(MP.Error) { try status().waiting } }
        /// Python's `broken`.
        public var broken: Bool { get throws(MP.Error) { try status().broken } }

        public var description: String { handle.description }
    }

    /// The proxy of a ``MP/ManagedObject`` served by a manager (Python's
    /// proxy of a registered type): `call(_:)` runs one of its calls on
    /// the server, alone. Extend it with your type's methods:
    ///
    /// ```swift
    /// extension MP.ObjectProxy where Object == Counter {
    ///     func add(_ n: Int) throws -> Int { try call(.add(n)) }
    /// }
    /// ```
    public struct ObjectProxy<Object: ManagedObject>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Sends `call` to the object; its reply, or the error its
        /// `handle` threw as ``MP/Error/Code/taskFailed``.
        @discardableResult
        public func call(_ call: Object.Call) throws(MP.Error) -> Object.Reply {
            var reply = try handle.call(.objectCall) { (message) throws(MP.Error) in try message.appendEncoded(call) }
            return try reply.value(Object.Reply.self)
        }

        /// `try await proxy.call(...)` without blocking an actor.
        @discardableResult
        public func call(_ call: Object.Call) async throws(MP.Error) -> Object.Reply {
            let handle = self.handle
            return try await handle.async { (cancellation) throws(MP.Error) in
                var reply = try handle.call(.objectCall, cancellation: cancellation) { (message) throws(MP.Error) in
                    try message.appendEncoded(call)
                }
                return try reply.value(Object.Reply.self)
            }
        }

        public var description: String { handle.description }
    }
}
