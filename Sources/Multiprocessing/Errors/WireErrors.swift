// The MP.Error kinds, as MP.Error values (each keeps its message).
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
