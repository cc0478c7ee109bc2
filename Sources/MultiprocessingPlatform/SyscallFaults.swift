import Synchronization
import SystemPackage

/// The tests' seam into the one errno path (``Sys/check(_:retryOnInterrupt:_:)``
/// and ``Sys/checkAgain(_:_:)``): a test makes the next calls of one
/// operation fail with the errno it chooses (`EINTR`, `EAGAIN`, `ENOMEM`)
/// without the call being made, and checks what the library does with it.
/// swift-system's mocking is the model: the seam exists in debug builds
/// only; in a release build ``take(_:)`` is an empty inline function.
///
/// Operations are named as the errors name them: `"sendmsg"`, `"recv"`,
/// `"socketpair"`, `"epoll_ctl(EPOLL_CTL_ADD)"`, `"fork"`.
@usableFromInline
package enum SyscallFaults {
    #if DEBUG
    private static let armed = Atomic<Int>(0)
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var queued: [String: [Int32]] = [:]

    /// The next calls of `operation`, one per element, fail with these errnos
    /// (in order), from any thread; calls after them run normally.
    package static func inject(_ errors: [Errno], into operation: String) {
        lock.withLock {
            queued[operation, default: []] += errors.map(\.rawValue)
            armed.store(queued.values.reduce(0) { $0 + $1.count }, ordering: .releasing)
        }
    }

    /// How many injected failures of `operation` are still to come.
    package static func pending(_ operation: String) -> Int {
        lock.withLock { queued[operation]?.count ?? 0 }
    }

    /// Forgets every injected failure not yet taken.
    package static func clear() {
        lock.withLock {
            queued = [:]
            armed.store(0, ordering: .releasing)
        }
    }

    /// The errno to fail `operation` with instead of calling it; nil (one
    /// atomic load) when nothing is injected.
    @usableFromInline
    static func take(_ operation: String) -> Int32? {
        guard armed.load(ordering: .acquiring) > 0 else { return nil }
        return lock.withLock { () -> Int32? in
            guard var codes = queued[operation], !codes.isEmpty else { return nil }
            let code = codes.removeFirst()
            queued[operation] = codes.isEmpty ? nil : codes
            armed.subtract(1, ordering: .releasing)
            return code
        }
    }
    #else
    @inlinable
    static func take(_ operation: String) -> Int32? { nil }
    #endif
}
