import MultiprocessingPlatform
// A manager's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// The manager cannot be reached or went away mid-call (Python's
    /// `EOFError`, `ConnectionRefusedError`): every pending and later call
    /// fails with this, promptly.
    @usableFromInline
    static func disconnected(_ why: String) -> MP.Error {
        MP.Error(.disconnected, "the manager is gone: \(why)")
    }

    /// The link was silent for longer than the manager's `linkTimeout`
    /// (a cut network link, a frozen manager): the call's outcome is unknown.
    @usableFromInline
    static func timeout(seconds: Double) -> MP.Error {
        MP.Error(.timeout, "the manager did not answer within the link timeout (\(seconds) s): the link is down or the manager is frozen")
    }

    /// The authentication handshake failed (Python's `AuthenticationError`).
    @usableFromInline
    static func managerAuthentication(_ why: String) -> MP.Error {
        MP.Error(.authentication, "authentication with the manager failed: \(why)")
    }

    /// A registered object's method threw on the server (Python's
    /// `RemoteError`): the error's type and description there.
    @usableFromInline
    static func remote(type: String, description: String) -> MP.Error {
        MP.Error(.taskFailed, "the managed object's method threw \(type): \(description)", errorType: type)
    }

    /// Python's `IndexError`: an index outside a list or array.
    @usableFromInline
    static func indexOutOfRange(index: Int, count: Int) -> MP.Error {
        MP.Error(.indexOutOfRange, "index \(index) is out of range for \(count) element(s)")
    }

    /// Python's `KeyError` where a key must exist.
    @usableFromInline
    static func keyNotFound(_ key: String) -> MP.Error {
        MP.Error(.notFound, "no such key: \(key)")
    }

    /// Python's `ValueError` for a value a list does not hold (`index`, `remove`).
    @usableFromInline
    static var valueNotFound: MP.Error { MP.Error(.notFound, "the value is not in the list") }

    /// Python's `RuntimeError`/`ValueError` of a lock, semaphore or
    /// condition used wrongly (a release of a lock not held, a bounded
    /// semaphore released too often, `taskDone` called too many times).
    @usableFromInline
    static func invalidUse(_ why: String) -> MP.Error {
        MP.Error(.invalidState, why)
    }

    /// A named object exists with another kind or element type, or the
    /// server does not know a registered type.
    @usableFromInline
    static func typeMismatch(_ why: String) -> MP.Error {
        MP.Error(.typeMismatch, why)
    }

    /// A value that did not encode or decode in the wire format.
    @usableFromInline
    static func wire(_ error: MP.Error) -> MP.Error {
        error
    }

    /// The manager was shut down.
    @usableFromInline
    static var shutDown: MP.Error { MP.Error(.closed, "the manager was shut down") }
}
