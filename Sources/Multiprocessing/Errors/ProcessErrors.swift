// A process object's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// `start()` was called on a process that was already started.
    @usableFromInline
    static func alreadyStarted(name: String) -> MP.Error {
        MP.Error(.invalidState, "cannot start a process twice: '\(name)' was already started")
    }

    /// The operation needs a started process (`join` before `start`, say).
    @usableFromInline
    static func notStarted(name: String) -> MP.Error {
        MP.Error(.invalidState, "can only join a started process: '\(name)' was not started")
    }

    /// A process tried to join itself.
    @usableFromInline
    static func joinSelf(name: String) -> MP.Error {
        MP.Error(.invalidState, "a process cannot join itself ('\(name)')")
    }

    /// The operation came from a process that is not this one's parent.
    @usableFromInline
    static func notParent(name: String) -> MP.Error {
        MP.Error(.invalidState, "can only join, test or signal a child process: '\(name)' was not started by this process")
    }

    /// The process object was closed with `close()`.
    @usableFromInline
    static func closed(name: String) -> MP.Error {
        MP.Error(.closed, "process object '\(name)' is closed")
    }

    /// `close()` was called while the process is still running.
    @usableFromInline
    static func stillRunning(name: String) -> MP.Error {
        MP.Error(.invalidState, "cannot close process '\(name)' while it is still running; join or terminate it first")
    }

    /// `daemon` was changed after `start()`.
    @usableFromInline
    static func daemonAfterStart(name: String) -> MP.Error {
        MP.Error(.invalidState, "cannot set daemon on '\(name)': process has already started")
    }

    /// A daemonic process tried to start a child (as in Python, daemons have no children).
    @usableFromInline
    static func daemonCannotHaveChildren(name: String) -> MP.Error {
        MP.Error(.invalidState, "daemonic process '\(name)' is not allowed to have children")
    }

    /// An `async` target cannot run in a forked child: this Swift runtime
    /// lacks the executor hooks the child's executors need (see the *What a
    /// child gets* article).
    @usableFromInline
    static func concurrencyUnavailable(name: String) -> MP.Error {
        MP.Error(.startFailed, "cannot start '\(name)': its target is async, and this Swift runtime has no executor hooks to run Swift concurrency in a forked child")
    }

    /// A named task could not be sent or started (or a closure under a method other than fork).
    @usableFromInline
    static func task(_ error: MP.Error) -> MP.Error {
        error
    }

    /// A forked child did not get past the after-fork phase within
    /// ``MP/forkStartTimeout``, three times in a row (each was killed).
    @usableFromInline
    static func startTimedOut(name: String, seconds: Double) -> MP.Error {
        MP.Error(.startFailed, "cannot start '\(name)': three forked children in a row did not get past the after-fork phase within \(seconds) s (each stuck on a lock another thread held at the fork, and killed); a named task under forkserver avoids the hazard")
    }
}
