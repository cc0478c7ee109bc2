// The synchronisation primitives' kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// Releasing (or waiting on a condition of) a lock this thread does not hold.
    @usableFromInline
    static func notOwner(_ what: String) -> MP.Error {
        MP.Error(.invalidState, "cannot release un-acquired lock: \(what)")
    }

    /// Acquiring a non-recursive lock this thread already holds (Python would hang).
    @usableFromInline
    static var wouldDeadlock: MP.Error { MP.Error(.invalidState, "this thread already holds the lock: acquiring it again would deadlock") }

    /// A bounded semaphore released more times than acquired.
    @usableFromInline
    static func overReleased(limit: Int) -> MP.Error {
        MP.Error(.invalidState, "semaphore released too many times (bound \(limit))")
    }
}
