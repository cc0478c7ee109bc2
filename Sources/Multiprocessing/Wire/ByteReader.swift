import MultiprocessingPlatform

/// A cursor over received bytes; every read checks what remains (see ``WireFormat``).
struct ByteReader {
    let base: UnsafeRawBufferPointer
    var offset = 0

    init(_ base: UnsafeRawBufferPointer) { self.base = base }

    var remaining: Int { base.count - offset }

    mutating func readRaw(_ count: Int) throws(MP.Error) -> UnsafeRawBufferPointer {
        guard count >= 0, count <= remaining else {
            throw .malformed(type: "message", reason: "needs \(count) more bytes at offset \(offset), \(remaining) left")
        }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: base[offset..<offset + count])
    }

    @inline(__always)
    mutating func read<T: WirePrimitive>(_ type: T.Type) throws(MP.Error) -> T {
        let raw = try readRaw(MemoryLayout<T>.size)
        return raw.loadUnaligned(as: T.self)
    }

    mutating func readByte() throws(MP.Error) -> UInt8 { try read(UInt8.self) }

    func peekByte() -> UInt8? { remaining > 0 ? base[offset] : nil }

    mutating func readLength() throws(MP.Error) -> Int { Int(try read(UInt32.self)) }

    mutating func readString() throws(MP.Error) -> String {
        let length = try readLength()
        let raw = try readRaw(length)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw .malformed(type: "String", reason: "invalid UTF-8 at offset \(offset - length)")
        }
        return string
    }

    mutating func readBool() throws(MP.Error) -> Bool {
        switch try readByte() {
        case 0: return false
        case 1: return true
        case let other: throw .malformed(type: "Bool", reason: "byte \(other) at offset \(offset - 1)")
        }
    }

    /// Reads values that need no container; nil if `T` is not one of them.
    mutating func readFast<T>(_ type: T.Type) throws(MP.Error) -> T? {
        if T.self == Int.self { return try read(Int.self) as? T }
        if T.self == String.self { return try readString() as? T }
        if T.self == Double.self { return try read(Double.self) as? T }
        if T.self == Bool.self { return try readBool() as? T }
        if WireShape.isPlain(T.self) { return nil }
        if let array = T.self as? WireFastArray.Type { return try array.readBlock(from: &self) as? T }
        if let primitive = T.self as? any WirePrimitive.Type { return try readPrimitive(primitive) as? T }
        return nil
    }

    private mutating func readPrimitive<P: WirePrimitive>(_ type: P.Type) throws(MP.Error) -> P { try read(P.self) }
}
