import Glibc
import _CMultiprocessingShims
import _CMultiprocessingRuntime

/// A mutex (with a condition variable) that every forked child resets.
///
/// A lock held by another thread at the moment of `fork` stays held forever in
/// the child, because that thread does not exist there. Every `ForkSafeLock`
/// links itself into the after-fork registry (`fork_registry.c`) when created
/// and unlinks itself when destroyed; an atfork handler re-initialises all of
/// them in every forked child, whoever forked, before anything else runs
/// there. So no library lock needs to be listed anywhere: creating one is
/// registering it (CPython's `util.register_after_fork`, for locks).
///
/// What a lock protects may have been mid-update at the fork; state that
/// cannot be trusted then registers a reset with ``AfterFork/register(_:)``.
@usableFromInline
package final class ForkSafeLock: @unchecked Sendable {
    @usableFromInline let storage: UnsafeMutablePointer<cmp_fork_safe_mutex>

    package init() {
        storage = .allocate(capacity: 1)
        cmp_fork_safe_mutex_init(storage)
    }

    deinit {
        cmp_fork_safe_mutex_destroy(storage)
        storage.deallocate()
    }

    @inlinable var mutex: UnsafeMutablePointer<pthread_mutex_t> {
        UnsafeMutableRawPointer(storage).assumingMemoryBound(to: pthread_mutex_t.self)
    }

    private var condition: UnsafeMutablePointer<pthread_cond_t> {
        withUnsafeMutablePointer(to: &storage.pointee.condition) { $0 }
    }

    @inlinable package func lock() { pthread_mutex_lock(mutex) }
    @inlinable package func unlock() { pthread_mutex_unlock(mutex) }

    @inlinable
    package func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// With the lock held: waits for a broadcast.
    package func wait() { pthread_cond_wait(condition, mutex) }

    /// With the lock held: waits for a broadcast until `deadline` (nil: forever).
    package func wait(until deadline: Deadline?) {
        guard let deadline else { return wait() }
        var until = deadline.absoluteTimespec
        pthread_cond_timedwait(condition, mutex, &until)
    }

    package func broadcast() { pthread_cond_broadcast(condition) }
}

/// Per-process state that a forked child must reset (CPython's
/// `util.register_after_fork`). Handlers run in every forked child, on its
/// only thread, after every ``ForkSafeLock`` has been reset, in the order
/// they were registered.
package enum AfterFork {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var handlers: [@Sendable () -> Void] = []

    private static let installed: Void = {
        cmp_fork_registry_set_child_handler { AfterFork.runInChild() }
    }()

    /// Registers `handler` to run in every child forked from now on.
    package static func register(_ handler: @escaping @Sendable () -> Void) {
        installed
        lock.withLock {
            handlers.append(handler)
            // Walks the array here once, as `runInChild` will: the runtime
            // then has the witness tables that walk needs (unspecialized, in
            // a debug build). A child that had to build them itself would
            // take the runtime's lock, which another thread of the parent
            // may have held at the fork: a child was seen hung exactly there.
            for handler in handlers { _ = handler }
        }
    }

    /// How many ``ForkSafeLock``s exist (each is in the registry).
    package static var registeredLockCount: Int { cmp_fork_registry_count() }

    private static func runInChild() {
        for handler in handlers { handler() }
    }
}

/// A one-shot flag a thread can block on, or a task await (Dispatch-free:
/// usable in a forked child).
package final class OneShotEvent: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var isSet = false
    private var continuations: [CheckedContinuation<Void, Never>] = []

    package init() {}

    package func set() {
        let waiting = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            isSet = true
            lock.broadcast()
            defer { continuations = [] }
            return continuations
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Suspends until the flag is set, blocking no thread.
    package func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if isSet { return true }
                continuations.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    package func wait() {
        lock.withLock {
            while !isSet { lock.wait() }
        }
    }

    /// Blocks until the flag is set or `deadline` passes (nil: no limit); whether it is set.
    package func wait(until deadline: Deadline?) -> Bool {
        lock.withLock {
            while !isSet {
                if let deadline, deadline.hasPassed { return false }
                lock.wait(until: deadline)
            }
            return true
        }
    }
}
