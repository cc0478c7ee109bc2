import Distributed
import MultiprocessingPlatform

final class BinaryDecoder: Decoder {
    var reader: ByteReader
    var codingPath: [any CodingKey] = []
    private var info: [CodingUserInfoKey: Any] = [:]
    /// What the decoding values may ask for; a distributed actor's reference
    /// finds this process's actor system here (made only when a value asks,
    /// so other decoding never makes it).
    var userInfo: [CodingUserInfoKey: Any] {
        get {
            guard info[.actorSystemKey] == nil, let actorSystem = Self.actorSystem else { return info }
            var all = info
            all[.actorSystemKey] = actorSystem()
            return all
        }
        set { info = newValue }
    }

    /// This process's actor system, set by the library's hook before `main`
    /// (the layer above this one, where the actors are).
    nonisolated(unsafe) static var actorSystem: (() -> Any)?

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
        if WireShape.isPlain(T.self) { return try T(from: self) }
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
