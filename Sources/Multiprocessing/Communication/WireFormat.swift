import MultiprocessingPlatform
/// The one binary format for every value that crosses a process boundary.
///
/// Not self-describing: both sides know the type. Fixed-width little-endian
/// numbers, length-prefixed strings and arrays, and arrays of fixed-width
/// numbers as one block of raw bytes. Keyed fields are written in order, each
/// as its key's name and a presence byte, then the value: a decoder that reads
/// fields in another order (or another type) fails with a clear
/// ``MP/Error``, and `allKeys` can name the next field, which is how enums
/// with associated values decode. Unkeyed elements carry a presence byte.
/// Every length is checked against the bytes that remain before anything is
/// allocated.
@usableFromInline
enum WireFormat {
    static func encode<T: Encodable>(_ value: T) throws(MP.Error) -> [UInt8] {
        var writer = ByteWriter()
        try encode(value, into: &writer)
        return writer.bytes
    }

    static func encode<T: Encodable>(_ value: T, into writer: inout ByteWriter) throws(MP.Error) {
        if writer.writeFast(value) {
            try writer.checkLengths(T.self)
            return
        }
        let encoder = BinaryEncoder(writer: writer)
        do {
            try encoder.encodeValue(value)
        } catch let error as MP.Error {
            throw error
        } catch {
            throw .encodingFailed(type: "\(T.self)", reason: "\(error)")
        }
        writer = encoder.writer
        try writer.checkLengths(T.self)
    }

    /// How deeply values may nest (containers within containers), on both
    /// sides: deeper input would overflow the stack of a recursive decoder.
    /// JSONDecoder stops near 512 as well.
    static let maximumDepth = 512

    static func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws(MP.Error) -> T {
        var reader = ByteReader(bytes)
        let value: T
        do {
            value = try BinaryDecoder.decodeValue(T.self, from: &reader)
        } catch let error as MP.Error {
            throw error
        } catch {
            throw .malformed(type: "\(T.self)", reason: "\(error)")
        }
        if reader.remaining != 0 {
            throw .malformed(type: "\(T.self)", reason: "\(reader.remaining) bytes left over after the value")
        }
        return value
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(MP.Error) -> T {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(MP.Error) -> T in try decode(type, from: buffer) }
        }
        return try result.get()
    }
}

extension WireFormat {
    /// Answers, once, the runtime's conformance questions the coder asks about
    /// `T` at its top level. A fresh process answers each by scanning every
    /// conformance record of the program (milliseconds in a program linking
    /// Foundation); the forkserver asks before its first fork, so its
    /// children inherit the answers.
    @usableFromInline
    static func warmCaches<T>(for type: T.Type) {
        _ = T.self is WireFastArray.Type
        _ = T.self is any WirePrimitive.Type
        _ = T.self is WireOptional.Type
        _ = T.self is WireDictionary.Type
        _ = T.self is any Encodable.Type
    }
}

extension WireFormat {
    static let tagLock = ForkSafeLock()
    /// A forked child starts with an empty cache: a thread of the parent may
    /// have been inserting at the fork, and the dictionary be mid-update.
    nonisolated(unsafe) private static var tags: [ObjectIdentifier: UInt16] = {
        AfterFork.register { WireFormat.tags = [:] }
        return [:]
    }()

    /// A 16-bit fingerprint of a type's full name, carried in each frame so a
    /// receiver asking for another type gets a clear error, not reinterpreted bytes.
    static func typeTag<T>(_ type: T.Type) -> UInt16 {
        let id = ObjectIdentifier(type)
        if let tag = tagLock.withLock({ tags[id] }) { return tag }
        var hash: UInt32 = 2_166_136_261
        var name = String(reflecting: type)
        name.withUTF8 { for byte in $0 { hash = (hash ^ UInt32(byte)) &* 16_777_619 } }
        let tag = UInt16(truncatingIfNeeded: hash ^ (hash >> 16)) | 1 // never 0: 0 means raw bytes
        tagLock.withLock { tags[id] = tag }
        return tag
    }
}

extension MP {
    /// Encodes `value` in the library's binary wire format (what `send`, `put`
    /// and the pool use), for storing or sending it yourself.
    public static func encode<T: Encodable>(_ value: T) throws(MP.Error) -> [UInt8] { try WireFormat.encode(value) }

    /// Decodes bytes made by ``MP/encode(_:)``.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(MP.Error) -> T {
        try WireFormat.decode(type, from: bytes)
    }


}

// MARK: - bytes

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
        if let array = T.self as? WireFastArray.Type { return try array.readBlock(from: &self) as? T }
        if let primitive = T.self as? any WirePrimitive.Type { return try readPrimitive(primitive) as? T }
        return nil
    }

    private mutating func readPrimitive<P: WirePrimitive>(_ type: P.Type) throws(MP.Error) -> P { try read(P.self) }
}

// MARK: - keys

enum Tag {
    static let present: UInt8 = 1

    /// A keyed field's header: the key's name (at most 255 UTF-8 bytes) and a presence byte.
    static func write(_ key: some CodingKey, present: Bool, into writer: inout ByteWriter) {
        var name = key.stringValue
        name.withUTF8 { utf8 in
            let count = min(utf8.count, 255)
            writer.bytes.append(UInt8(count))
            writer.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[..<count]))
        }
        writer.bytes.append(present ? 1 : 0)
    }

    /// The name of the keyed field at the reader's position, without moving it.
    static func peekName(_ reader: ByteReader) -> String? {
        guard let count = reader.peekByte().map(Int.init), reader.remaining > count + 1 else { return nil }
        let start = reader.offset + 1
        return String(validating: UnsafeRawBufferPointer(rebasing: reader.base[start..<start + count]), as: UTF8.self)
    }

    /// Whether the field at the reader's position is named `key`.
    static func matches(_ key: some CodingKey, _ reader: ByteReader) -> Bool {
        guard let count = reader.peekByte().map(Int.init), reader.remaining > count + 1 else { return false }
        var name = key.stringValue
        return name.withUTF8 { utf8 in
            let expected = min(utf8.count, 255)
            guard expected == count else { return false }
            return UnsafeRawBufferPointer(rebasing: reader.base[(reader.offset + 1)..<(reader.offset + 1 + count)])
                .elementsEqual(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[..<expected]))
        }
    }
}

// MARK: - encoder

final class BinaryEncoder: Encoder {
    var writer: ByteWriter
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]

    init(writer: ByteWriter) { self.writer = writer }

    var depth = 0

    /// Any nested value: optionals get a presence byte, fast types skip containers.
    func encodeValue<T: Encodable>(_ value: T) throws {
        depth += 1
        defer { depth -= 1 }
        if depth > WireFormat.maximumDepth {
            throw MP.Error.encodingFailed(type: "\(T.self)", reason: "nested deeper than \(WireFormat.maximumDepth) levels")
        }
        if let optional = value as? WireOptional {
            guard let wrapped = optional.wrappedValue else {
                writer.bytes.append(0)
                return
            }
            writer.bytes.append(Tag.present)
            try (wrapped as! any Encodable).encodeWire(using: self)
            return
        }
        if writer.writeFast(value) { return }
        if let dictionary = value as? WireDictionary { return try dictionary.encodePairs(to: self) }
        try value.encode(to: self)
    }


    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(KeyedWriter<Key>(encoder: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        UnkeyedWriter(encoder: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleWriter(encoder: self) }
}

struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: BinaryEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }

    mutating func encodeNil(forKey key: Key) throws {
        Tag.write(key, present: false, into: &encoder.writer)
    }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { try encodeField(value, key) }

    // The standard library's defaults for these refuse ("not implemented"):
    // 128-bit integers are primitives here, like the other integers.
    mutating func encode(_ value: Int128, forKey key: Key) throws { try encodeField(value, key) }
    mutating func encode(_ value: UInt128, forKey key: Key) throws { try encodeField(value, key) }

    private func encodeField<T: Encodable>(_ value: T, _ key: Key) throws {
        Tag.write(key, present: true, into: &encoder.writer)
        try encoder.encodeValue(value)
    }

    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws {
        guard let value else { return try encodeNil(forKey: key) }
        try encode(value, forKey: key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        Tag.write(key, present: true, into: &encoder.writer)
        return encoder.container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        Tag.write(key, present: true, into: &encoder.writer)
        return encoder.unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder { encoder }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        Tag.write(key, present: true, into: &encoder.writer)
        return encoder
    }
}

/// Writes a count up front and patches it as elements arrive.
struct UnkeyedWriter: UnkeyedEncodingContainer {
    let encoder: BinaryEncoder
    let countOffset: Int
    var count = 0
    var codingPath: [any CodingKey] { encoder.codingPath }

    init(encoder: BinaryEncoder) {
        self.encoder = encoder
        countOffset = encoder.writer.bytes.count
        encoder.writer.writeLength(0)
    }

    private mutating func appended() {
        count += 1
        encoder.writer.patchLength(count, at: countOffset)
    }

    mutating func encodeNil() throws {
        encoder.writer.bytes.append(0)
        appended()
    }

    mutating func encode<T: Encodable>(_ value: T) throws { try encodeElement(value) }

    mutating func encode(_ value: Int128) throws { try encodeElement(value) }
    mutating func encode(_ value: UInt128) throws { try encodeElement(value) }

    private mutating func encodeElement<T: Encodable>(_ value: T) throws {
        encoder.writer.bytes.append(Tag.present)
        try encoder.encodeValue(value)
        appended()
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        encoder.writer.bytes.append(Tag.present)
        appended()
        return encoder.container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        encoder.writer.bytes.append(Tag.present)
        appended()
        return encoder.unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        encoder.writer.bytes.append(Tag.present)
        appended()
        return encoder
    }
}

struct SingleWriter: SingleValueEncodingContainer {
    let encoder: BinaryEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }

    mutating func encodeNil() throws { encoder.writer.bytes.append(0) }
    mutating func encode<T: Encodable>(_ value: T) throws { try encoder.encodeValue(value) }
    mutating func encode(_ value: Int128) throws { try encoder.encodeValue(value) }
    mutating func encode(_ value: UInt128) throws { try encoder.encodeValue(value) }
}

// MARK: - decoder

final class BinaryDecoder: Decoder {
    var reader: ByteReader
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]

    init(reader: ByteReader) { self.reader = reader }

    static func decodeValue<T: Decodable>(_ type: T.Type, from reader: inout ByteReader) throws -> T {
        if let value = try reader.readFast(T.self) { return value }
        let decoder = BinaryDecoder(reader: reader)
        let value = try decoder.decodeValue(T.self)
        reader = decoder.reader
        return value
    }

    var depth = 0

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        depth += 1
        defer { depth -= 1 }
        if depth > WireFormat.maximumDepth {
            throw MP.Error.malformed(type: "\(T.self)", reason: "nested deeper than \(WireFormat.maximumDepth) levels")
        }
        if let optional = T.self as? WireOptional.Type {
            switch try reader.readByte() {
            case 0: return optional.make(nil) as! T
            case Tag.present:
                let wrappedType = optional.wrappedType as! any Decodable.Type
                return optional.make(try wrappedType.decodeWire(using: self)) as! T
            case let other:
                throw MP.Error.malformed(type: "\(T.self)", reason: "presence byte \(other) at offset \(reader.offset - 1)")
            }
        }
        if let value = try reader.readFast(T.self) { return value }
        if let dictionary = T.self as? WireDictionary.Type { return try dictionary.decodePairs(from: self) as! T }
        return try T(from: self)
    }


    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(KeyedReader<Key>(decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer { try UnkeyedReader(decoder: self) }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleReader(decoder: self) }
}

extension Encodable {
    /// Opens an existential: encodes `self` with its concrete type.
    func encodeWire(using encoder: BinaryEncoder) throws { try encoder.encodeValue(self) }
}

extension Decodable {
    static func decodeWire(using decoder: BinaryDecoder) throws -> Any { try decoder.decodeValue(Self.self) }
}

struct KeyedReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: BinaryDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    /// The next field's key: fields are read in order, so this is the only
    /// one known (exactly what an enum's decoding asks for).
    var allKeys: [Key] { Tag.peekName(decoder.reader).flatMap { Key(stringValue: $0) }.map { [$0] } ?? [] }

    func contains(_ key: Key) -> Bool { Tag.matches(key, decoder.reader) }

    /// Reads the field's header: whether it is present, after checking it is this key's.
    private func readTag(_ key: Key) throws -> Bool {
        let offset = decoder.reader.offset
        guard Tag.matches(key, decoder.reader) else {
            let found = Tag.peekName(decoder.reader).map { "'\($0)'" } ?? "no field"
            throw MP.Error.malformed(type: "field '\(key.stringValue)'",
                                         reason: "found \(found) at offset \(offset) (fields decoded out of order, or another type)")
        }
        decoder.reader.offset += 1 + Int(decoder.reader.peekByte()!)
        switch try decoder.reader.readByte() {
        case 0: return false
        case 1: return true
        case let other: throw MP.Error.malformed(type: "field '\(key.stringValue)'", reason: "presence byte \(other)")
        }
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard Tag.matches(key, decoder.reader) else {
            throw MP.Error.malformed(type: "field '\(key.stringValue)'", reason: "missing or out of order at offset \(decoder.reader.offset)")
        }
        let presence = decoder.reader.offset + 1 + Int(decoder.reader.peekByte()!)
        guard presence < decoder.reader.base.count, decoder.reader.base[presence] == 0 else { return false }
        decoder.reader.offset = presence + 1
        return true
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decodeRequired(type, forKey: key) }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? { try decodeOptional(type, forKey: key) }

    func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 { try decodeRequired(type, forKey: key) }
    func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 { try decodeRequired(type, forKey: key) }
    func decodeIfPresent(_ type: Int128.Type, forKey key: Key) throws -> Int128? { try decodeOptional(type, forKey: key) }
    func decodeIfPresent(_ type: UInt128.Type, forKey key: Key) throws -> UInt128? { try decodeOptional(type, forKey: key) }

    private func decodeOptional<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard try readTag(key) else { return nil }
        return try decoder.decodeValue(T.self)
    }

    private func decodeRequired<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        guard try readTag(key) else {
            throw MP.Error.malformed(type: "field '\(key.stringValue)'", reason: "absent (nil) but \(T.self) is required")
        }
        return try decoder.decodeValue(T.self)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        _ = try readTag(key)
        return try decoder.container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        _ = try readTag(key)
        return try decoder.unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder {
        _ = try readTag(key)
        return decoder
    }
}

struct UnkeyedReader: UnkeyedDecodingContainer {
    let decoder: BinaryDecoder
    let total: Int
    var currentIndex = 0
    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { total }
    var isAtEnd: Bool { currentIndex >= total }

    init(decoder: BinaryDecoder) throws {
        self.decoder = decoder
        total = try decoder.reader.readLength()
        // Every element takes at least its tag byte: a count beyond that is corrupt.
        guard total <= decoder.reader.remaining else {
            throw MP.Error.malformed(type: "sequence", reason: "\(total) elements announced, \(decoder.reader.remaining) bytes left")
        }
    }

    private mutating func next() throws -> Bool {
        guard !isAtEnd else {
            throw MP.Error.malformed(type: "sequence", reason: "read past its \(total) elements")
        }
        currentIndex += 1
        switch try decoder.reader.readByte() {
        case 0: return false
        case Tag.present: return true
        case let other: throw MP.Error.malformed(type: "sequence element", reason: "tag \(other) at offset \(decoder.reader.offset - 1)")
        }
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, decoder.reader.peekByte() == 0 else { return false }
        currentIndex += 1
        decoder.reader.offset += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeElement(type) }

    mutating func decode(_ type: Int128.Type) throws -> Int128 { try decodeElement(type) }
    mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try decodeElement(type) }

    private mutating func decodeElement<T: Decodable>(_ type: T.Type) throws -> T {
        guard try next() else {
            throw MP.Error.malformed(type: "\(T.self)", reason: "element \(currentIndex - 1) is nil")
        }
        return try decoder.decodeValue(T.self)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        _ = try next()
        return try decoder.container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        _ = try next()
        return try decoder.unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        _ = try next()
        return decoder
    }
}

struct SingleReader: SingleValueDecodingContainer {
    let decoder: BinaryDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    func decodeNil() -> Bool {
        guard decoder.reader.peekByte() == 0 else { return false }
        decoder.reader.offset += 1
        return true
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(T.self) }
    func decode(_ type: Int128.Type) throws -> Int128 { try decoder.decodeValue(type) }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try decoder.decodeValue(type) }
}
