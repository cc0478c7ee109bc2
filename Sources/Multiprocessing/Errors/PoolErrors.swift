import MultiprocessingPlatform
// The pools' kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// The task threw: the original error's type name and description.
    @usableFromInline
    static func taskFailed(type: String, description: String) -> MP.Error {
        MP.Error(.taskFailed, "task failed: \(type): \(description)", errorType: type)
    }

    /// The worker running the task died (a signal, a crash, `fatalError`, `exit`).
    @usableFromInline
    static func workerDied(_ how: String) -> MP.Error {
        MP.Error(.workerDied, "the worker running the task died: \(how)")
    }

    /// The pool's initializer threw in a worker: no task of that batch ran.
    @usableFromInline
    static func initializerFailed(type: String, description: String) -> MP.Error {
        MP.Error(.taskFailed, "the pool initializer failed: \(type): \(description)", errorType: type)
    }

    /// No worker could be started for the task (a daemonic process may not
    /// have children; a process limit; no memory): CPython raises there.
    @usableFromInline
    static func cannotStartWorker(_ why: String) -> MP.Error {
        MP.Error(.startFailed, "no worker could be started for the task: \(why)")
    }

    /// `get(timeout:)` ran out of time (the task goes on).
    @usableFromInline
    static var resultTimeout: MP.Error { MP.Error(.timeout, "timed out waiting for the result") }

    /// The task ran longer than its `timeout:`; its worker was killed and
    /// replaced (``MP/TaskPool`` only).
    @usableFromInline
    static func taskTimeout(seconds: Double) -> MP.Error {
        MP.Error(.timeout, "the task ran longer than its timeout of \(seconds) s; its worker was killed and replaced")
    }

    /// `successful` was asked before the result was ready.
    @usableFromInline
    static var notReady: MP.Error { MP.Error(.invalidState, "the result is not ready") }

    /// `terminate()` ended the pool before the task finished.
    @usableFromInline
    static var terminated: MP.Error { MP.Error(.closed, "the pool was terminated") }

    /// The pool was closed: it takes no more tasks.
    @usableFromInline
    static var poolClosed: MP.Error { MP.Error(.closed, "the pool is closed") }

    /// The pool belongs to another process (a forked copy cannot be used).
    @usableFromInline
    static var notOwner: MP.Error { MP.Error(.invalidState, "this pool was created by another process") }

    /// The result could not cross the process boundary.
    @usableFromInline
    static func result(_ error: MP.Error) -> MP.Error {
        MP.Error(.encoding, "the result could not be sent back: \(error)")
    }

    /// The named task cannot be sent to a worker (its type cannot be
    /// found by name, or its arguments do not encode: a library object
    /// such as a queue crosses only at a worker's start, as Python's
    /// rule of sharing "through inheritance").
    @usableFromInline
    static func unsendableTask(_ error: MP.Error) -> MP.Error {
        MP.Error(error.code, "the task cannot be sent to a worker: \(error)", underlying: error.underlying)
    }
}
