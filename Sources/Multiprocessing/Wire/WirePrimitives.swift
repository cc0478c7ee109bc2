import MultiprocessingPlatform

// The values the format writes as raw bytes, and the shapes it treats alike.

/// Fixed-width numbers written as raw little-endian bytes.
@usableFromInline
protocol WirePrimitive: BitwiseCopyable, Codable {}
extension Int: WirePrimitive {}
extension Int8: WirePrimitive {}
extension Int16: WirePrimitive {}
extension Int32: WirePrimitive {}
extension Int64: WirePrimitive {}
extension UInt: WirePrimitive {}
extension UInt8: WirePrimitive {}
extension UInt16: WirePrimitive {}
extension UInt32: WirePrimitive {}
extension UInt64: WirePrimitive {}
extension Float: WirePrimitive {}
extension Double: WirePrimitive {}
// Their Codable conformances call encode(_: Int128) on a container, which the
// standard library's default implementation refuses: as primitives they never
// reach a container.
extension Int128: WirePrimitive {}
extension UInt128: WirePrimitive {}

extension WirePrimitive {
    /// Opens an existential: writes `self` as its concrete type.
    func writeWire(into writer: inout ByteWriter) { writer.write(self) }
}

/// Arrays of fixed-width numbers travel as one block of bytes.
protocol WireFastArray {
    func writeBlock(into writer: inout ByteWriter)
    static func readBlock(from reader: inout ByteReader) throws(MP.Error) -> Self
}

extension Array: WireFastArray where Element: WirePrimitive {
    func writeBlock(into writer: inout ByteWriter) {
        writer.writeLength(count)
        if writer.overlong != nil { return } // refused: copy nothing
        withUnsafeBytes { writer.writeRaw($0) }
    }

    static func readBlock(from reader: inout ByteReader) throws(MP.Error) -> [Element] {
        let count = try reader.readLength()
        let size = MemoryLayout<Element>.stride
        guard count <= reader.remaining / size else {
            throw .malformed(type: "[\(Element.self)]", reason: "\(count) elements announced, \(reader.remaining) bytes left")
        }
        let block = try reader.readRaw(count * size)
        return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: block)
            initialized = count
        }
    }
}

/// Dictionaries travel as a count and key/value pairs: their own `Codable`
/// conformance needs the keys of a keyed container (`allKeys`), which a
/// positional format does not store.
protocol WireDictionary {
    func encodePairs(to encoder: BinaryEncoder) throws
    static func decodePairs(from decoder: BinaryDecoder) throws -> Self
}

extension Dictionary: WireDictionary where Key: Codable, Value: Codable {
    func encodePairs(to encoder: BinaryEncoder) throws {
        encoder.writer.writeLength(count)
        for (key, value) in self {
            try encoder.encodeValue(key)
            try encoder.encodeValue(value)
        }
    }

    static func decodePairs(from decoder: BinaryDecoder) throws -> [Key: Value] {
        let count = try decoder.reader.readLength()
        guard count <= decoder.reader.remaining else {
            throw MP.Error.malformed(type: "[\(Key.self): \(Value.self)]", reason: "\(count) entries announced, \(decoder.reader.remaining) bytes left")
        }
        // Grows with what is actually decoded: a claimed count reserves
        // nothing (a 60 MiB input could otherwise reserve gigabytes).
        var result: [Key: Value] = [:]
        for _ in 0..<count {
            let key = try decoder.decodeValue(Key.self)
            result[key] = try decoder.decodeValue(Value.self)
        }
        return result
    }
}

/// Optionals carry a presence byte wherever they appear.
protocol WireOptional {
    var wrappedValue: Any? { get }
    static var wrappedType: Any.Type { get }
    static func make(_ wrapped: Any?) -> Self
}

extension Optional: WireOptional {
    var wrappedValue: Any? { self.map { $0 as Any } }
    static var wrappedType: Any.Type { Wrapped.self }
    static func make(_ wrapped: Any?) -> Self { wrapped.map { $0 as! Wrapped } }
}
