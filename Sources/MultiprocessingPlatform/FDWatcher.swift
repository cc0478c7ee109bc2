import Glibc
import _CMultiprocessingShims
import _CMultiprocessingSync
import SystemPackage

/// Async readiness of file descriptors, for `await`ing without blocking a thread.
///
/// One epoll thread per process, started on first use. Each wait watches a
/// duplicate of the caller's descriptor, so several tasks may wait on the same
/// descriptor (two tasks joining one process). In a forked child the thread
/// is gone, so the child drops the inherited instance (an ``AfterFork``
/// handler) and starts its own when needed. Dispatch is not used, so it works in forked children too.
package final class FDWatcher: @unchecked Sendable {
    private enum Phase {
        case created
        case cancelled
        case registered(fd: Int32, continuation: CheckedContinuation<Void, any Error>)
        case callback(fd: Int32, handler: @Sendable () -> Void)
    }

    private let epfd: Int32
    private let lock = ForkSafeLock()
    private var phases: [UInt64: Phase] = [:]
    private var nextToken: UInt64 = 0

    private static let sharedLock = ForkSafeLock()
    nonisolated(unsafe) private static var shared: FDWatcher?
    private static let forgetInChild: Void = AfterFork.register { FDWatcher.abandonAfterFork() }

    /// This process's watcher, started on first use. A forked child starts
    /// its own: the parent's thread and waiters do not exist there.
    package static func current() throws(OSError) -> FDWatcher {
        forgetInChild
        return try sharedLock.withLock { () throws(OSError) -> FDWatcher in
            if let shared { return shared }
            let started = try FDWatcher()
            shared = started
            return started
        }
    }

    /// In a forked child (single-threaded, in the after-fork handlers): the
    /// inherited watcher's thread is gone; its epoll set is closed and forgotten.
    private static func abandonAfterFork() {
        if let shared { Sys.close(shared.epfd) }
        shared = nil
    }

    package init() throws(OSError) {
        epfd = try Sys.epollCreate()
        do {
            try startThread { [self] in serve() }.get()
        } catch {
            Sys.close(epfd)
            throw error
        }
    }

    private func serve() -> Never {
        let capacity = 64
        let tokens = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: capacity)
        while true {
            // Only EINTR (0 here) can end a wait on a valid set; anything else is a bug.
            let count = try! Sys.epollWait(epfd, tokens: tokens, timeoutMilliseconds: -1)
            var ready: [CheckedContinuation<Void, any Error>] = []
            var handlers: [@Sendable () -> Void] = []
            lock.withLock {
                for index in 0..<Int(count) {
                    let token = tokens[index]
                    switch phases.removeValue(forKey: token) {
                    case .registered(let fd, let continuation)?:
                        try? Sys.epollRemove(epfd, fd)
                        Sys.close(fd)
                        ready.append(continuation)
                    case .callback(let fd, let handler)?:
                        try? Sys.epollRemove(epfd, fd)
                        Sys.close(fd)
                        handlers.append(handler)
                    default:
                        continue
                    }
                }
            }
            for continuation in ready { continuation.resume() }
            for handler in handlers { handler() }
        }
    }

    /// Why an await for readiness ended without it.
    package enum WaitError: Error {
        case cancelled
        case system(OSError)
    }

    /// The one way the library awaits a descriptor: suspends until `fd` is
    /// readable, on this process's epoll thread.
    package static func readable(_ fd: Int32) async throws(WaitError) {
        do {
            try await current().waitReadable(fd)
        } catch let error as OSError {
            throw .system(error)
        } catch {
            throw .cancelled
        }
    }

    /// ``readable(_:)`` with its two failures in the caller's error type.
    package static func readable<E: Error>(_ fd: Int32, cancelled: E, system: (OSError) -> E) async throws(E) {
        do {
            try await readable(fd)
        } catch {
            switch error {
            case .cancelled: throw cancelled
            case .system(let os): throw system(os)
            }
        }
    }

    /// Calls `handler` on this process's epoll thread once `fd` is readable
    /// (a pidfd: the process ended). The handler must be short and must not
    /// wait for anything: every await of the process shares the thread.
    package func whenReadable(_ fd: Int32, _ handler: @escaping @Sendable () -> Void) throws(OSError) {
        try lock.withLock { () throws(OSError) in
            nextToken += 1
            let copy = try Sys.duplicate(fd)
            do throws(OSError) {
                try Sys.epollAddReadableOnce(epfd, copy, token: nextToken)
            } catch {
                Sys.close(copy)
                throw error
            }
            phases[nextToken] = .callback(fd: copy, handler: handler)
        }
    }

    /// Suspends until `fd` is readable. Throws `CancellationError` when the task
    /// is cancelled, `OSError` when the descriptor cannot be watched.
    package func waitReadable(_ fd: Int32) async throws {
        let token = lock.withLock { () -> UInt64 in
            nextToken += 1
            phases[nextToken] = .created
            return nextToken
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let failure: (any Error)? = lock.withLock {
                    if case .cancelled? = phases[token] {
                        phases[token] = nil
                        return CancellationError()
                    }
                    do {
                        let copy = try Sys.duplicate(fd)
                        do {
                            try Sys.epollAddReadableOnce(epfd, copy, token: token)
                        } catch {
                            Sys.close(copy)
                            throw error
                        }
                        phases[token] = .registered(fd: copy, continuation: continuation)
                        return nil
                    } catch {
                        phases[token] = nil
                        return error
                    }
                }
                if let failure { continuation.resume(throwing: failure) }
            }
        } onCancel: {
            let continuation = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
                switch phases[token] {
                case .created?:
                    phases[token] = .cancelled
                    return nil
                case .registered(let fd, let continuation)?:
                    phases[token] = nil
                    try? Sys.epollRemove(epfd, fd)
                    Sys.close(fd)
                    return continuation
                default:
                    return nil
                }
            }
            continuation?.resume(throwing: CancellationError())
        }
    }
}
