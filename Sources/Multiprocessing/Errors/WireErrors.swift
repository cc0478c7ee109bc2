// The wire format's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    @usableFromInline
    static func encodingFailed(type: String, reason: String) -> MP.Error {
        MP.Error(.encoding, "cannot encode \(type): \(reason)")
    }

    @usableFromInline
    static func malformed(type: String, reason: String) -> MP.Error {
        MP.Error(.malformed, "bytes do not decode as \(type): \(reason)")
    }
}
