#if canImport(Glibc)
import Glibc
#endif

/// A mutex (with a condition variable) that a forked child can reset.
///
/// A lock held by another thread at the moment of `fork` stays held forever in
/// the child, because that thread does not exist there. The library's own
/// locks are re-initialised in the child right after fork, which is safe
/// because the child has a single thread at that point.
final class ForkSafeLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        Self.initialize(mutex, condition)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    private static func initialize(_ mutex: UnsafeMutablePointer<pthread_mutex_t>, _ condition: UnsafeMutablePointer<pthread_cond_t>) {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attr)
        pthread_condattr_destroy(&attr)
    }

    /// Only in a freshly forked child, before any other thread exists.
    func reinitializeAfterFork() { Self.initialize(mutex, condition) }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// With the lock held: waits for a broadcast.
    func wait() { pthread_cond_wait(condition, mutex) }

    /// With the lock held: waits for a broadcast, at most `seconds`.
    func wait(seconds: Double) {
        var until = timespec()
        clock_gettime(CLOCK_MONOTONIC, &until)
        let total = Double(until.tv_nsec) + max(0, seconds) * 1e9
        until.tv_sec += Int(total / 1e9)
        until.tv_nsec = Int(total.truncatingRemainder(dividingBy: 1e9))
        pthread_cond_timedwait(condition, mutex, &until)
    }
    func broadcast() { pthread_cond_broadcast(condition) }
}

/// A one-shot flag a thread can block on (Dispatch-free: usable in a forked child).
final class OneShotEvent: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var isSet = false

    func set() {
        lock.withLock {
            isSet = true
            lock.broadcast()
        }
    }

    func wait() {
        lock.withLock {
            while !isSet { lock.wait() }
        }
    }
}
