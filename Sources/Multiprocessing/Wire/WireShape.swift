/// Which types the coder's casts (`as? WireOptional`, `is WireFastArray.Type`,
/// …) can skip, answered from the type's metadata without asking the runtime.
///
/// A conformance question the runtime has not answered before in a process
/// scans every conformance record of the program. The coder asks four about
/// every type it meets, and a child started by spawn or forkserver meets
/// the task's types for the first time: a named task's own struct cost a
/// fresh child four scans (a fifth of a forkserver child's processor time
/// in `mp-bench`, which links Foundation and NIO), and each of its nested
/// types four more. Only the standard library's optionals, arrays,
/// dictionaries and fixed-width numbers answer yes to any of them, so a
/// struct or an enum that is none of those is decided here by its
/// metadata's kind and nominal descriptor, which the ABI fixes
/// (docs/ABI/TypeMetadata.rst: the kind word, then the descriptor, for
/// every struct, enum and optional).
enum WireShape {
    /// The metadata kinds of a struct and of an enum other than `Optional` (0x202).
    private static let structKind: UInt = 0x200
    private static let enumKind: UInt = 0x201

    private static func words(_ type: Any.Type) -> UnsafePointer<UInt> {
        unsafeBitCast(type, to: UnsafePointer<UInt>.self)
    }

    /// The nominal type descriptor of a struct's or an enum's metadata.
    private static func descriptor(_ type: Any.Type) -> UInt { words(type)[1] }

    /// The generic types whose instances may answer yes (`Array` of
    /// numbers, `Dictionary`), by their descriptor, shared by every instance.
    private static let containers: (array: UInt, dictionary: UInt) = (descriptor([Int].self), descriptor([Int: Int].self))

    /// The fixed-width numbers (``WirePrimitive``) and the other types the
    /// fast paths name, by metadata address.
    private static let named: [UInt] = [
        Int.self, Int8.self, Int16.self, Int32.self, Int64.self, UInt.self, UInt8.self, UInt16.self, UInt32.self,
        UInt64.self, Float.self, Double.self, Int128.self, UInt128.self, Bool.self, String.self,
    ].map { UInt(bitPattern: unsafeBitCast($0 as Any.Type, to: Int.self)) }

    /// True when `T` is a struct or an enum that is not an optional, an
    /// array, a dictionary or one of the numbers: none of the coder's casts
    /// can succeed, so it skips them.
    static func isPlain<T>(_ type: T.Type) -> Bool {
        let metadata = words(T.self)
        let kind = metadata[0]
        guard kind == structKind || kind == enumKind else { return false }
        let descriptor = metadata[1]
        if descriptor == containers.array || descriptor == containers.dictionary { return false }
        return !named.contains(UInt(bitPattern: metadata))
    }
}
