// The start-method setting's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// The start method was already set (Python's `RuntimeError('context has already been set')`).
    @usableFromInline
    static func alreadySet(_ method: some CustomStringConvertible) -> MP.Error {
        MP.Error(.invalidState, "the start method has already been set (to \(method)); pass force: true to change it")
    }
}
