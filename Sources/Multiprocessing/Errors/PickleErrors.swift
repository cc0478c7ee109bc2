// The pickle codec's kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// The pickle asks for something this codec never does: run code,
    /// make an instance of a class, look up a global outside the
    /// allow-list. Nothing was run.
    @usableFromInline
    static func refused(opcode: String, reason: String) -> MP.Error {
        MP.Error(.refused, "pickle refused at \(opcode): \(reason) (nothing was run)")
    }

    /// The bytes are not a well-formed pickle (truncated, a bad opcode, a
    /// length larger than what remains, a stack that does not add up).
    @usableFromInline
    static func malformed(_ why: String) -> MP.Error {
        MP.Error(.malformed, "malformed pickle: \(why)")
    }

    /// Nesting deeper than ``MP/PickleDecoder/maximumDepth``, or a value
    /// that expands past the decoder's bound (shared references).
    @usableFromInline
    static func tooLarge(_ why: String) -> MP.Error {
        MP.Error(.tooLarge, "pickle too large: \(why)")
    }

    /// The value does not have the shape the `Decodable` type asks for.
    @usableFromInline
    static func typeMismatch(path: String, expected: String, found: String) -> MP.Error {
        MP.Error(.typeMismatch, "at \(path.isEmpty ? "the top" : path): expected \(expected), found a Python \(found)")
    }

    /// A Python `int` does not fit the Swift integer type.
    @usableFromInline
    static func doesNotFit(path: String, type: String, value: String) -> MP.Error {
        MP.Error(.typeMismatch, "at \(path.isEmpty ? "the top" : path): the Python int \(value) does not fit \(type)")
    }

    /// A key the `Decodable` type needs is missing.
    @usableFromInline
    static func missingKey(path: String, key: String) -> MP.Error {
        MP.Error(.typeMismatch, "at \(path.isEmpty ? "the top" : path): no key '\(key)'")
    }

    /// A value this codec cannot write (a Swift type with no Python counterpart here).
    @usableFromInline
    static func unsupported(_ what: String) -> MP.Error {
        MP.Error(.refused, "cannot pickle: \(what)")
    }
}
