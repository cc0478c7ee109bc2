import MultiprocessingPlatform

/// The bytes of a value being encoded (see ``WireFormat``).
struct ByteWriter {
    var bytes: [UInt8] = []
    /// The first length too large for the format's 32-bit lengths: the
    /// encoding fails (``checkLengths(_:)``) instead of writing a cut length.
    var overlong: Int?

    init() { bytes.reserveCapacity(64) }

    @inline(__always)
    mutating func writeRaw(_ buffer: UnsafeRawBufferPointer) { bytes.append(contentsOf: buffer) }

    mutating func writeRaw(_ bytes: [UInt8]) { self.bytes += bytes }

    @inline(__always)
    mutating func write<T: WirePrimitive>(_ value: T) {
        withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
    }

    mutating func writeLength(_ length: Int) {
        if length > Int(UInt32.max), overlong == nil { overlong = length }
        write(UInt32(truncatingIfNeeded: length))
    }

    /// Throws if a length did not fit the format.
    func checkLengths<T>(_ type: T.Type) throws(MP.Error) {
        if let overlong {
            throw .encodingFailed(type: "\(T.self)", reason: "a length of \(overlong) does not fit the wire format's 32-bit lengths (at most \(UInt32.max))")
        }
    }

    mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            writeLength(utf8.count)
            if overlong == nil { bytes.append(contentsOf: utf8) }
        }
    }

    /// Writes values that need no container; false if `value` is not one of them.
    /// Matches the exact static type: a cast (`as String`) would also match an
    /// `Optional<String>` and drop its presence byte.
    mutating func writeFast<T>(_ value: T) -> Bool {
        if T.self == Int.self { write(value as! Int) }
        else if T.self == String.self { write(value as! String) }
        else if T.self == Double.self { write(value as! Double) }
        else if T.self == Bool.self { bytes.append((value as! Bool) ? 1 : 0) }
        else if WireShape.isPlain(T.self) { return false }
        else if T.self is WireFastArray.Type { (value as! WireFastArray).writeBlock(into: &self) }
        else if T.self is any WirePrimitive.Type { (value as! any WirePrimitive).writeWire(into: &self) }
        else { return false }
        return true
    }

    /// Overwrites a length written earlier at `offset`.
    mutating func patchLength(_ length: Int, at offset: Int) {
        if length > Int(UInt32.max), overlong == nil { overlong = length }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: length)) { raw in
            for index in 0..<4 { bytes[offset + index] = raw[index] }
        }
    }
}
