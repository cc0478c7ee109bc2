// A queue's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// This handle was closed with `close()`.
    @usableFromInline
    static var queueClosed: MP.Error { MP.Error(.closed, "the queue is closed") }

    /// The encoded item can never fit in the queue's buffer.
    @usableFromInline
    static func itemTooLarge(size: Int, capacity: Int) -> MP.Error {
        MP.Error(.tooLarge, "an item of \(size) encoded bytes can never fit in this queue's \(capacity)-byte buffer (raise capacityBytes)")
    }

    /// `taskDone()` called more times than items were put.
    @usableFromInline
    static var taskDoneTooOften: MP.Error { MP.Error(.invalidState, "task_done() called too many times") }
}
