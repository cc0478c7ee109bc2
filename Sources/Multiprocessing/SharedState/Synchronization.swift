import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import SystemPackage
import MultiprocessingPlatform

extension MP {


    /// The outcome of acquiring a lock or semaphore.
    public enum Acquisition: Hashable, Sendable {
        /// Acquired.
        case acquired
        /// Acquired from a process or thread that died holding it: the data it
        /// protects may be half-updated. (CPython deadlocks here.)
        case acquiredAfterOwnerDied
        /// Not acquired: the timeout passed, or it was not available without blocking.
        case timedOut

        /// Whether the lock is now held.
        public var succeeded: Bool { self != .timedOut }
    }
}

/// Shared state of one primitive: a page of anonymous shared memory, inherited
/// by every child forked after creation.
final class SharedSyncState: @unchecked Sendable {
    let block: SharedBlock
    let state: UnsafeMutablePointer<cmp_sync_state>

    /// A lock dropped while this thread holds it is released first: a held
    /// robust mutex is linked into its holder's robust list (glibc walks it
    /// on every robust lock and unlock, the kernel at thread exit), and
    /// unmapping it would leave the list pointing at unmapped memory. (A
    /// recursive lock is released as many times as it is held.)
    deinit {
        while cmp_mutex_unlock(&state.pointee.mutex) == 0 {} // EPERM once this thread no longer holds it
    }

    /// The state of a primitive received by a spawned child (already initialised by its creator).
    init(adopting block: SharedBlock) throws {
        guard block.size >= MemoryLayout<cmp_sync_state>.size else {
            throw MP.Error.cannotCross("a synchronization primitive arrived in a block of \(block.size) bytes")
        }
        self.block = block
        state = block.base.bindMemory(to: cmp_sync_state.self, capacity: 1)
    }

    func reference(in encoder: any Encoder, for what: String) throws -> SharedBlock.Reference {
        try block.reference(in: encoder, for: what)
    }

    func encode(to encoder: any Encoder, for what: String) throws {
        try CrossingBlock(block).encode(to: encoder, for: what)
    }

    convenience init(from decoder: any Decoder, for what: String) throws {
        try self.init(adopting: try CrossingBlock(from: decoder, for: what).block)
    }

    init(recursive: Bool = false) throws(MP.Error) {
        block = try SharedBlock(bytes: MemoryLayout<cmp_sync_state>.size)
        state = block.base.bindMemory(to: cmp_sync_state.self, capacity: 1)
        if let error = Sys.failure("pthread_mutex_init", result: cmp_mutex_init(&state.pointee.mutex, recursive ? 1 : 0)) {
            throw .system(error)
        }
    }

    /// Locks the internal mutex. Every critical section below ends in single
    /// stores, so a holder that died leaves consistent state: carry on.
    @inline(__always)
    func lock() throws(MP.Error) {
        let result = cmp_mutex_lock(&state.pointee.mutex, -1)
        if result != 0 && result != EOWNERDEAD {
            throw .system(MP.OSError("pthread_mutex_lock", errno: Errno(rawValue: result)))
        }
    }

    @inline(__always)
    func unlock() { _ = cmp_mutex_unlock(&state.pointee.mutex) }

    /// With the lock held: bumps the sequence and wakes every sleeper.
    func notifyAll() {
        state.pointee.seq &+= 1
        if state.pointee.waiters > 0 { Sys.futexWake(&state.pointee.seq, Int32.max) }
    }

    /// With the lock held: releases it, sleeps until the sequence moves or the
    /// deadline passes, and locks again. Returns false when the deadline passed.
    func sleep(until deadline: Deadline?) throws(MP.Error) -> Bool {
        let seq = state.pointee.seq
        state.pointee.waiters += 1
        unlock()
        let timedOut = futexSleep(&state.pointee.seq, seq, until: deadline)
        try lock()
        state.pointee.waiters -= 1
        return !timedOut
    }
}

/// A deadline from a Python-style timeout (nil: none).
func deadline(after timeout: Double?) throws(MP.Error) -> Deadline? {
    try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
}

/// Sleeps on a futex word while it holds `expected`, until `deadline`.
/// Returns whether the deadline passed (a wake-up or a changed word: false).
func futexSleep(_ word: UnsafeMutablePointer<UInt32>, _ expected: UInt32, until deadline: Deadline?) -> Bool {
    Sys.futexSleep(word, expected, until: deadline)
}

/// Locks a robust mutex with a Python-style timeout.
func acquireMutex(_ mutex: UnsafeMutablePointer<pthread_mutex_t>, blocking: Bool, timeout: Double?) throws(MP.Error) -> MP.Acquisition {
    let until = try deadline(after: timeout)
    let nanoseconds: Int64 = !blocking ? 0 : until.cTimeoutNanoseconds
    switch cmp_mutex_lock(mutex, nanoseconds) {
    case 0: return .acquired
    case EOWNERDEAD: return .acquiredAfterOwnerDied
    case ETIMEDOUT, EBUSY: return .timedOut
    case EDEADLK: throw .wouldDeadlock
    case let error: throw .system(MP.OSError("pthread_mutex_lock", errno: Errno(rawValue: error)))
    }
}

extension MP {
    /// Python's `multiprocessing.Lock`, robust: shared with every child forked
    /// after its creation.
    ///
    /// If its holder dies (SIGKILL, a crash), the next `acquire` succeeds with
    /// ``MP/Acquisition/acquiredAfterOwnerDied`` instead of deadlocking.
    /// Releasing a lock this thread does not hold throws
    /// ``MP/Error/Code/invalidState``; acquiring it twice throws
    /// ``MP/Error/Code/invalidState``. Ownership is per thread.
    public final class Lock: @unchecked Sendable {
        let shared: SharedSyncState

        public init() throws(MP.Error) { shared = try SharedSyncState() }
        init(shared: SharedSyncState) { self.shared = shared }

        /// Python's `acquire(block, timeout)`.
        @discardableResult
        public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Acquisition {
            try acquireMutex(&shared.state.pointee.mutex, blocking: blocking, timeout: timeout)
        }

        /// Python's `release()`.
        public func release() throws(MP.Error) {
            if cmp_mutex_unlock(&shared.state.pointee.mutex) != 0 { throw .notOwner("this thread does not hold the lock") }
        }

        /// Python's `with lock:`: runs `body` holding the lock (also after a dead owner).
        @discardableResult
        public func withLock<R>(_ body: () throws -> R) throws -> R {
            try acquire()
            defer { try? release() }
            return try body()
        }
    }

    /// Python's `multiprocessing.RLock`: a robust lock its holder may acquire again.
    public final class RLock: @unchecked Sendable {
        let shared: SharedSyncState

        public init() throws(MP.Error) { shared = try SharedSyncState(recursive: true) }
        init(shared: SharedSyncState) { self.shared = shared }

        /// Python's `acquire(block, timeout)`.
        @discardableResult
        public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Acquisition {
            let outcome = try acquireMutex(&shared.state.pointee.mutex, blocking: blocking, timeout: timeout)
            if outcome == .acquiredAfterOwnerDied { shared.state.pointee.depth = 0 }
            if outcome.succeeded { shared.state.pointee.depth += 1 }
            return outcome
        }

        /// Python's `release()`: one level.
        public func release() throws(MP.Error) {
            let depth = shared.state.pointee.depth
            if cmp_mutex_unlock(&shared.state.pointee.mutex) != 0 { throw .notOwner("this thread does not hold the lock") }
            shared.state.pointee.depth = depth - 1 // still the owner's field until the last level
        }

        @discardableResult
        public func withLock<R>(_ body: () throws -> R) throws -> R {
            try acquire()
            defer { try? release() }
            return try body()
        }

        /// Releases every level; returns the depth to restore.
        func releaseAll() throws(MP.Error) -> Int32 {
            let depth = shared.state.pointee.depth
            guard depth > 0 else { throw .notOwner("this thread does not hold the lock") }
            for _ in 0..<depth { try release() }
            return depth
        }

        func reacquire(depth: Int32) throws(MP.Error) {
            for _ in 0..<depth { try acquire() }
        }
    }

    /// Python's `multiprocessing.Semaphore`.
    ///
    /// A semaphore has no owner, so a holder that dies keeps its unit (as in
    /// CPython); the internal state stays consistent.
    public class Semaphore: @unchecked Sendable {
        let shared: SharedSyncState

        /// - Parameter value: the initial count (Python's default is 1).
        public init(value: Int = 1) throws(MP.Error) {
            guard value >= 0 else { throw .invalidArgument("semaphore initial value must be >= 0 (got \(value))") }
            shared = try SharedSyncState()
            shared.state.pointee.value = Int64(value)
            shared.state.pointee.limit = Int64.max
        }

        /// Decodes a semaphore passed to a spawned or forkserver child (see ``MP/StartMethod``).
        public required init(from decoder: any Decoder) throws {
            shared = try SharedSyncState(from: decoder, for: "MP.Semaphore")
        }

        /// Python's `acquire(block, timeout)`.
        @discardableResult
        public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Acquisition {
            let until = try deadline(after: blocking ? timeout : 0)
            try shared.lock()
            defer { shared.unlock() }
            while shared.state.pointee.value == 0 {
                if !blocking { return .timedOut }
                if try !shared.sleep(until: until), shared.state.pointee.value == 0 { return .timedOut }
            }
            shared.state.pointee.value -= 1
            return .acquired
        }

        /// Python's `release()`.
        public func release() throws(MP.Error) {
            try shared.lock()
            defer { shared.unlock() }
            if shared.state.pointee.value >= shared.state.pointee.limit {
                throw .overReleased(limit: Int(shared.state.pointee.limit))
            }
            shared.state.pointee.value += 1
            shared.notifyAll()
        }

        /// Python's `get_value()`.
        public var value: Int {
            (try? shared.lock()).map { _ in defer { shared.unlock() }; return Int(shared.state.pointee.value) } ?? 0
        }

        @discardableResult
        public func withLock<R>(_ body: () throws -> R) throws -> R {
            try acquire()
            defer { try? release() }
            return try body()
        }
    }

    /// Python's `multiprocessing.BoundedSemaphore`: releasing above the initial value throws.
    public final class BoundedSemaphore: Semaphore, @unchecked Sendable {
        public override init(value: Int = 1) throws(MP.Error) {
            try super.init(value: value)
            shared.state.pointee.limit = Int64(value)
        }

        public required init(from decoder: any Decoder) throws {
            try super.init(from: decoder)
        }
    }

    /// Python's `multiprocessing.Event`.
    public final class Event: @unchecked Sendable {
        let shared: SharedSyncState

        public init() throws(MP.Error) { shared = try SharedSyncState() }
        init(shared: SharedSyncState) { self.shared = shared }

        /// Python's `is_set()`.
        public var isSet: Bool { cmp_atomic_load_i64(&shared.state.pointee.value) != 0 }

        /// Python's `set()`: wakes every waiter.
        public func set() throws(MP.Error) {
            try shared.lock()
            defer { shared.unlock() }
            cmp_atomic_store_i64(&shared.state.pointee.value, 1)
            shared.notifyAll()
        }

        /// Python's `clear()`.
        public func clear() throws(MP.Error) {
            try shared.lock()
            defer { shared.unlock() }
            cmp_atomic_store_i64(&shared.state.pointee.value, 0)
        }

        /// Python's `wait(timeout)`: whether the flag is set.
        @discardableResult
        public func wait(timeout: Double? = nil) throws(MP.Error) -> Bool {
            let until = try deadline(after: timeout)
            try shared.lock()
            defer { shared.unlock() }
            while shared.state.pointee.value == 0 {
                if try !shared.sleep(until: until) { return shared.state.pointee.value != 0 }
            }
            return true
        }
    }

    /// Python's `multiprocessing.Condition`, over a ``MP/Lock`` or (the default) an ``MP/RLock``.
    ///
    /// `notify(n)` may wake more than `n` waiters; as with any condition,
    /// re-check the predicate after waking (``wait(for:timeout:)`` does).
    public final class Condition: @unchecked Sendable {
        enum Underlying { case lock(Lock), rlock(RLock) }
        let underlying: Underlying
        let shared: SharedSyncState

        /// A condition over a new ``MP/RLock``, or over `lock`.
        public init(lock: RLock? = nil) throws(MP.Error) {
            if let lock { underlying = .rlock(lock) } else { underlying = .rlock(try RLock()) }
            shared = try SharedSyncState()
        }

        /// A condition over `lock`.
        public init(lock: Lock) throws(MP.Error) {
            underlying = .lock(lock)
            shared = try SharedSyncState()
        }

        init(underlying: Underlying, shared: SharedSyncState) {
            self.underlying = underlying
            self.shared = shared
        }

        @discardableResult
        public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Acquisition {
            switch underlying {
            case .lock(let lock): return try lock.acquire(blocking: blocking, timeout: timeout)
            case .rlock(let lock): return try lock.acquire(blocking: blocking, timeout: timeout)
            }
        }

        public func release() throws(MP.Error) {
            switch underlying {
            case .lock(let lock): try lock.release()
            case .rlock(let lock): try lock.release()
            }
        }

        @discardableResult
        public func withLock<R>(_ body: () throws -> R) throws -> R {
            try acquire()
            defer { try? release() }
            return try body()
        }

        /// Python's `wait(timeout)`: releases the lock, waits for a notify, re-acquires.
        /// Returns false on timeout. The caller must hold the lock.
        @discardableResult
        public func wait(timeout: Double? = nil) throws(MP.Error) -> Bool {
            let until = try deadline(after: timeout)
            let seq = cmp_atomic_load_u32(&shared.state.pointee.seq)
            _ = cmp_atomic_add_u32(&shared.state.pointee.waiters, 1)
            defer { _ = cmp_atomic_add_u32(&shared.state.pointee.waiters, UInt32.max) }
            var depth: Int32 = 1
            switch underlying {
            case .lock(let lock): try lock.release()
            case .rlock(let lock): depth = try lock.releaseAll()
            }
            let timedOut = futexSleep(&shared.state.pointee.seq, seq, until: until)
            switch underlying {
            case .lock(let lock): try lock.acquire()
            case .rlock(let lock): try lock.reacquire(depth: depth)
            }
            return !timedOut
        }

        /// Python's `wait_for(predicate, timeout)`: the predicate's last value.
        public func wait(for predicate: () throws -> Bool, timeout: Double? = nil) throws -> Bool {
            let until = try deadline(after: timeout)
            while true {
                if try predicate() { return true }
                var left: Double?
                if let until {
                    if until.hasPassed { return try predicate() }
                    left = until.remainingSeconds
                }
                try wait(timeout: left)
            }
        }

        /// Python's `notify(n)`. The caller must hold the lock.
        public func notify(_ count: Int = 1) throws(MP.Error) {
            guard count >= 0 else { throw .invalidArgument("notify count must be >= 0") }
            try checkOwned()
            _ = cmp_atomic_add_u32(&shared.state.pointee.seq, 1)
            if cmp_atomic_load_u32(&shared.state.pointee.waiters) > 0 {
                Sys.futexWake(&shared.state.pointee.seq, Int32(clamping: count))
            }
        }

        /// Python's `notify_all()`. The caller must hold the lock.
        public func notifyAll() throws(MP.Error) { try notify(Int(Int32.max)) }

        /// Ownership check: a non-blocking acquire by the owner reports
        /// `wouldDeadlock` (Lock) or nests (RLock).
        private func checkOwned() throws(MP.Error) {
            switch underlying {
            case .lock(let lock):
                do throws(MP.Error) {
                    if try lock.acquire(blocking: false).succeeded {
                        try lock.release()
                        throw .notOwner("notify on a condition whose lock is not held")
                    }
                    throw .notOwner("notify on a condition whose lock is held by another thread")
                } catch .wouldDeadlock {
                    return
                }
            case .rlock(let lock):
                if lock.shared.state.pointee.depth == 0 { throw .notOwner("notify on a condition whose lock is not held") }
                guard try lock.acquire(blocking: false).succeeded else {
                    throw .notOwner("notify on a condition whose lock is held by another thread")
                }
                try lock.release()
            }
        }
    }

    /// Python's `multiprocessing.Barrier`.
    public final class Barrier: @unchecked Sendable {
        let shared: SharedSyncState
        let action: (() throws -> Void)?
        let defaultTimeout: Double?

        /// - Parameters:
        ///   - parties: how many must call `wait()` to pass.
        ///   - action: run once per passing, by the last to arrive.
        ///   - timeout: the default for `wait()`.
        public init(parties: Int, action: (() throws -> Void)? = nil, timeout: Double? = nil) throws(MP.Error) {
            guard parties >= 1 else { throw .invalidArgument("a barrier needs at least 1 party (got \(parties))") }
            _ = try deadline(after: timeout) // refuses a negative timeout now, not at the first wait
            shared = try SharedSyncState()
            shared.state.pointee.limit = Int64(parties)
            shared.state.pointee.reset_generation = -1
            self.action = action
            defaultTimeout = timeout
        }

        init(shared: SharedSyncState, timeout: Double?) {
            self.shared = shared
            self.action = nil
            defaultTimeout = timeout
        }

        /// Python's `parties`.
        public var parties: Int { Int(shared.state.pointee.limit) }

        /// Python's `n_waiting`.
        public var waiting: Int { (try? locked { Int(shared.state.pointee.value) }) ?? 0 }

        /// Python's `broken`.
        public var isBroken: Bool { (try? locked { shared.state.pointee.broken != 0 }) ?? true }

        private func locked<R>(_ body: () throws(MP.Error) -> R) throws(MP.Error) -> R {
            try shared.lock()
            defer { shared.unlock() }
            return try body()
        }

        /// Python's `wait(timeout)`: blocks until every party arrives; returns
        /// this arrival's index (0 ..< parties). Throws
        /// ``MP/Error/Code/brokenBarrier`` if the barrier is or becomes broken.
        @discardableResult
        public func wait(timeout: Double? = nil) throws -> Int {
            let until = try deadline(after: timeout ?? defaultTimeout)
            try shared.lock()
            defer { shared.unlock() }
            let s = shared.state
            if s.pointee.broken != 0 { throw MP.Error.brokenBarrier }
            let generation = s.pointee.generation
            let index = Int(s.pointee.value)
            s.pointee.value += 1
            if s.pointee.value == s.pointee.limit {
                do {
                    try action?()
                } catch {
                    breakBarrier()
                    throw error
                }
                s.pointee.value = 0
                s.pointee.generation += 1
                shared.notifyAll()
                return index
            }
            while true {
                let woke = try shared.sleep(until: until)
                if s.pointee.generation != generation {
                    if s.pointee.reset_generation == generation { throw MP.Error.brokenBarrier }
                    return index
                }
                if s.pointee.broken != 0 { throw MP.Error.brokenBarrier }
                if !woke {
                    breakBarrier()
                    throw MP.Error.brokenBarrier
                }
            }
        }

        /// With the lock held.
        private func breakBarrier() {
            shared.state.pointee.broken = 1
            shared.notifyAll()
        }

        /// Python's `abort()`: breaks the barrier; waiters and later callers throw.
        public func abort() throws(MP.Error) {
            try locked { breakBarrier() }
        }

        /// Python's `reset()`: current waiters throw ``MP/Error/Code/brokenBarrier``;
        /// the barrier is empty and whole again.
        public func reset() throws(MP.Error) {
            try locked {
                let s = shared.state
                if s.pointee.value > 0 { s.pointee.reset_generation = s.pointee.generation }
                s.pointee.generation += 1
                s.pointee.value = 0
                s.pointee.broken = 0
                shared.notifyAll()
            }
        }
    }
}
