import MultiprocessingPlatform

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
        if WireShape.isPlain(T.self) { return try value.encode(to: self) }
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
