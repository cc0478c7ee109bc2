import Multiprocessing

extension MP.Error.Code {
    /// The cluster's database refused or failed a query where a call cannot go on.
    public static let database = MP.Error.Code("database")
}

// The cluster's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// A task threw: its type and description, as recorded by the worker.
    static func taskFailed(type: String, description: String) -> MP.Error {
        MP.Error(.taskFailed, "task failed: \(type): \(description)", errorType: type)
    }

    /// The task's worker (or its machine) was lost on every attempt.
    static func workerLost(attempts: Int, reason: String) -> MP.Error {
        MP.Error(.workerDied, "the task's worker was lost \(attempts) time(s): \(reason)")
    }

    /// The task cannot run on the workers of this build (unknown name,
    /// undecodable arguments, an unencodable result).
    static func unrunnable(_ why: String) -> MP.Error {
        MP.Error(.unknownTask, "the task cannot run on the workers: \(why)")
    }

    /// The pool was terminated, or the call cancelled.
    static var cancelled: MP.Error { MP.Error(.cancelled, "the task was cancelled (the pool was terminated)") }

    /// The pool is closed: no more tasks.
    static var closed: MP.Error { MP.Error(.closed, "the pool is closed") }

    /// The result did not come within the timeout.
    static var timeout: MP.Error { MP.Error(.timeout, "timed out waiting for the result") }

    /// The database refused or failed a query (the pool reconnects; this
    /// is thrown only where a call cannot go on).
    static func database(_ why: String) -> MP.Error {
        MP.Error(.database, "database: \(why)")
    }

    /// A task type that another process cannot find by name, or a value that does not encode.
    static func task(_ why: String) -> MP.Error {
        MP.Error(.taskFailed, why)
    }

    /// An argument outside its domain.
    static func invalidArgument(_ why: String) -> MP.Error {
        MP.Error(.invalidArgument, "invalid argument: \(why)")
    }
}
