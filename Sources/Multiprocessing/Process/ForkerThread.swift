import Glibc
import MultiprocessingPlatform

/// A thread that lives as long as the process and forks on request.
///
/// Linux delivers `PR_SET_PDEATHSIG` when the *thread* that forked the child
/// exits, not the process. A daemonic child forked from a short-lived thread (a
/// Dispatch or Swift-concurrency worker) would die with that thread; forking
/// it from this thread ties its life to the process instead.
final class ForkerThread: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var request: (() -> Void)?
    private var completed = 0
    private var submitted = 0

    static func shared() throws(MP.OSError) -> ForkerThread { try Runtime.shared.forkerThread() }

    init() throws(MP.OSError) { try launch() }

    private func launch() throws(MP.OSError) {
        try startThread { [self] in serve() }.get()
    }

    private func serve() -> Never {
        while true {
            let work: () -> Void = lock.withLock {
                while request == nil { lock.wait() }
                defer { request = nil }
                return request!
            }
            work()
            lock.withLock {
                completed += 1
                lock.broadcast()
            }
        }
    }

    /// Runs `body` on this thread and returns what it returned.
    func perform<T>(_ body: @escaping () throws(MP.OSError) -> T) throws(MP.OSError) -> T {
        let box = UnsafeMutablePointer<Result<T, MP.OSError>?>.allocate(capacity: 1)
        box.initialize(to: nil)
        defer { box.deinitialize(count: 1); box.deallocate() }
        let ticket = lock.withLock { () -> Int in
            while request != nil || completed != submitted { lock.wait() }
            submitted += 1
            request = { box.pointee = Result { () throws(MP.OSError) -> T in try body() } }
            lock.broadcast()
            return submitted
        }
        lock.withLock {
            while completed < ticket { lock.wait() }
            lock.broadcast()
        }
        return try box.pointee!.get()
    }

    /// Forks on this thread; the child runs `child`. Returns the child's pid.
    func fork(_ child: @escaping () -> Never) throws(MP.OSError) -> pid_t {
        try perform { () throws(MP.OSError) -> pid_t in
            let pid = try Runtime.forkFlushingStdio()
            if pid == 0 { child() }
            return pid
        }
    }
}
