import SystemPackage
import MultiprocessingPlatform

extension MP {
    /// An operating-system call failed: which call, and the `errno` it set
    /// (Python's `OSError`). Defined in the platform layer, whose every call throws it.
    public typealias OSError = MultiprocessingPlatform.OSError

    /// Misuse of a ``MP/Process`` (Python's `AssertionError` and `ValueError`),
    /// or an operating-system failure while managing it.
    public enum ProcessError: Error, Hashable, Sendable, CustomStringConvertible {
        /// `start()` was called on a process that was already started.
        case alreadyStarted(name: String)
        /// The operation needs a started process (`join` before `start`, say).
        case notStarted(name: String)
        /// A process tried to join itself.
        case joinSelf(name: String)
        /// The operation came from a process that is not this one's parent.
        case notParent(name: String)
        /// The process object was closed with `close()`.
        case closed(name: String)
        /// `close()` was called while the process is still running.
        case stillRunning(name: String)
        /// A timeout was negative.
        case negativeTimeout(Double)
        /// `daemon` was changed after `start()`.
        case daemonAfterStart(name: String)
        /// A daemonic process tried to start a child (as in Python, daemons have no children).
        case daemonCannotHaveChildren(name: String)
        /// An async wait was cancelled.
        case cancelled
        /// An `async` target cannot run in a forked child: this Swift runtime
        /// lacks the executor hooks the child's executors need (see the README).
        case concurrencyUnavailable(name: String)
        /// A named task could not be sent or started (or a closure under a method other than fork).
        case task(TaskError)
        /// A forked child did not get past the after-fork phase within
        /// ``MP/forkStartTimeout``, three times in a row (each was killed).
        case startTimedOut(name: String, seconds: Double)
        /// An operating-system call failed.
        case system(OSError)

        public var description: String {
            switch self {
            case .task(let error): return error.description
            case .alreadyStarted(let name): return "cannot start a process twice: '\(name)' was already started"
            case .notStarted(let name): return "can only join a started process: '\(name)' was not started"
            case .joinSelf(let name): return "a process cannot join itself ('\(name)')"
            case .notParent(let name): return "can only join, test or signal a child process: '\(name)' was not started by this process"
            case .closed(let name): return "process object '\(name)' is closed"
            case .stillRunning(let name): return "cannot close process '\(name)' while it is still running; join or terminate it first"
            case .negativeTimeout(let value): return "timeout must not be negative (got \(value))"
            case .daemonAfterStart(let name): return "cannot set daemon on '\(name)': process has already started"
            case .daemonCannotHaveChildren(let name): return "daemonic process '\(name)' is not allowed to have children"
            case .cancelled: return "the wait was cancelled"
            case .concurrencyUnavailable(let name): return "cannot start '\(name)': its target is async, and this Swift runtime has no executor hooks to run Swift concurrency in a forked child"
            case .startTimedOut(let name, let seconds): return "cannot start '\(name)': three forked children in a row did not get past the after-fork phase within \(seconds) s (each stuck on a lock another thread held at the fork, and killed); a named task under forkserver avoids the hazard"
            case .system(let error): return error.description
            }
        }
    }
}
