// Shared memory's (segments and ShareableList) kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    @usableFromInline
    static func invalidName(_ name: String) -> MP.Error {
        MP.Error(.invalidArgument, "invalid shared memory name '\(name)': 1 to 200 characters, no '/' after the first")
    }

    @usableFromInline
    static func invalidSize(_ size: Int) -> MP.Error {
        MP.Error(.invalidArgument, "'size' must be a positive number (got \(size))")
    }

    @usableFromInline
    static func alreadyExists(_ name: String) -> MP.Error {
        MP.Error(.alreadyExists, "shared memory '\(name)' already exists")
    }

    @usableFromInline
    static func notFound(_ name: String) -> MP.Error {
        MP.Error(.notFound, "no shared memory named '\(name)'")
    }

    @usableFromInline
    static func closed(_ name: String) -> MP.Error {
        MP.Error(.closed, "shared memory '\(name)' is closed")
    }

    /// A ``MP/ShareableList`` position outside `0..<count` (Python's `IndexError`).
    @usableFromInline
    static func indexOutOfRange(_ index: Int, count: Int) -> MP.Error {
        MP.Error(.indexOutOfRange, "index \(index) out of range 0..<\(count)")
    }

    /// A string or bytes item longer than its slot (Python's `ValueError: bytes/str item exceeds available storage`).
    @usableFromInline
    static func itemTooLarge(index: Int, size: Int, capacity: Int) -> MP.Error {
        MP.Error(.tooLarge, "item \(index) of \(size) bytes exceeds its storage of \(capacity) bytes (a ShareableList's slots keep the size they were created with)")
    }

    /// The segment does not hold a ``MP/ShareableList`` in CPython's layout.
    @usableFromInline
    static func notAShareableList(_ why: String) -> MP.Error {
        MP.Error(.typeMismatch, "not a ShareableList: \(why)")
    }
}
