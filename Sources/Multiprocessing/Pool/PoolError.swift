import MultiprocessingPlatform
extension MP {
    /// Why a pool task or operation failed.
    public enum PoolError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The task threw: the original error's type name and description.
        case taskFailed(type: String, description: String)
        /// The worker running the task died (a signal, a crash, `fatalError`, `exit`).
        case workerDied(String)
        /// The pool's initializer threw in a worker: no task of that batch ran.
        case initializerFailed(type: String, description: String)
        /// No worker could be started for the task (a daemonic process may not
        /// have children; a process limit; no memory): CPython raises there.
        case cannotStartWorker(String)
        /// `get(timeout:)` ran out of time (the task goes on).
        case timeout
        /// The task ran longer than its `timeout:`; its worker was killed and
        /// replaced (``MP/TaskPool`` only).
        case taskTimeout(seconds: Double)
        /// The task was cancelled (``MP/AsyncResult/cancel()``, or the Swift
        /// task awaiting it was cancelled) before it finished.
        case cancelled
        /// `successful` was asked before the result was ready.
        case notReady
        /// `terminate()` ended the pool before the task finished.
        case terminated
        /// The pool was closed: it takes no more tasks.
        case closed
        /// The pool belongs to another process (a forked copy cannot be used).
        case notOwner
        case invalidArgument(String)
        /// The result could not cross the process boundary.
        case result(WireError)
        /// The named task cannot be sent to a worker (its type cannot be
        /// found by name, or its arguments do not encode: a library object
        /// such as a queue crosses only at a worker's start, as Python's
        /// rule of sharing "through inheritance").
        case task(TaskError)
        case system(OSError)

        public var description: String {
            switch self {
            case .taskFailed(let type, let description): return "task failed: \(type): \(description)"
            case .workerDied(let how): return "the worker running the task died: \(how)"
            case .initializerFailed(let type, let description): return "the pool initializer failed: \(type): \(description)"
            case .cannotStartWorker(let why): return "no worker could be started for the task: \(why)"
            case .timeout: return "timed out waiting for the result"
            case .taskTimeout(let seconds): return "the task ran longer than its timeout of \(seconds) s; its worker was killed and replaced"
            case .cancelled: return "the task was cancelled"
            case .notReady: return "the result is not ready"
            case .terminated: return "the pool was terminated"
            case .closed: return "the pool is closed"
            case .notOwner: return "this pool was created by another process"
            case .invalidArgument(let what): return what
            case .result(let error): return "the result could not be sent back: \(error)"
            case .task(let error): return "the task cannot be sent to a worker: \(error)"
            case .system(let error): return error.description
            }
        }
    }
}
