extension MP {
    /// Decodes `Decodable` values from CPython's pickles (protocols 2-5,
    /// written by CPython 3.8-3.14), safely: nothing in the pickle is ever
    /// run or instantiated (see `refused`).
    ///
    /// A `dict` with `str` keys decodes as a struct or `[String: T]`; a
    /// `list`, `tuple`, `set` or `frozenset` as an array or a `Set`; `bytes`
    /// and `bytearray` as `[UInt8]`; `None` as `nil`; an `int` as any Swift
    /// integer it fits (an error of code ``MP/Error/Code/typeMismatch`` when it
    /// does not) or as a `Double`; a `float` as `Double` or `Float`. Decode
    /// ``PickleValue`` to take whatever came.
    ///
    /// ```swift
    /// struct Job: Codable { var job: Int; var args: [PickleValue] }
    /// let job = try MP.PickleDecoder().decode(Job.self, from: bytes)  // pickle.dumps({'job': 7, 'args': [1.5, 'x']})
    /// ```
    public struct PickleDecoder: Sendable {
        /// How deeply containers may nest (as the library's wire format allows).
        public static let maximumDepth = 512

        public init() {}

        /// The value `bytes` pickles, as `type`.
        public func decode<T: Decodable>(_ type: T.Type = T.self, from bytes: [UInt8]) throws(MP.Error) -> T {
            let value = try pickleValue(from: bytes)
            if T.self == PickleValue.self { return value as! T }
            do {
                return try PickleValueDecoding.decode(T.self, from: value, path: [])
            } catch let error as MP.Error {
                throw error
            } catch {
                throw .typeMismatch(path: "", expected: "\(T.self)", found: "\(error)")
            }
        }

        /// The value `bytes` pickles, as it came.
        public func pickleValue(from bytes: [UInt8]) throws(MP.Error) -> PickleValue {
            var reader = PickleReader(bytes, maximumDepth: Self.maximumDepth)
            return try reader.read()
        }
    }
}

/// The `Decoder` behind ``MP/PickleDecoder``: reads a value tree.
struct PickleValueDecoding: Decoder {
    let value: MP.PickleValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    /// The common scalars without a decoder, a container and a coding path
    /// each (arrays and dictionaries decode their elements through the
    /// generic method); nil: the general way (which also reports mismatches).
    @inline(__always)
    static func scalar<T: Decodable>(_ type: T.Type, _ value: MP.PickleValue) -> T? {
        switch value {
        case .float(let number) where T.self == Double.self: return (number as! T)
        case .int(let number) where T.self == Int.self: return Int(exactly: number).map { $0 as! T }
        case .int(let number) where T.self == Double.self: return (Double(number) as! T)
        case .string(let text) where T.self == String.self: return (text as! T)
        case .bool(let flag) where T.self == Bool.self: return (flag as! T)
        case .int(let number) where T.self == Int64.self: return (number as! T)
        default: return nil
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from value: MP.PickleValue, path: [any CodingKey]) throws -> T {
        if let scalar = scalar(T.self, value) { return scalar }
        if T.self == MP.PickleValue.self { return value as! T }
        if T.self == [UInt8].self {
            switch value {
            case .bytes(let raw), .bytearray(let raw): return raw as! T
            default: break // a list of small ints decodes as usual
            }
        }
        return try T(from: PickleValueDecoding(value: value, codingPath: path))
    }

    static func pathText(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue != nil && $0 is IndexKey ? $0.stringValue : "." + $0.stringValue }.joined()
            .trimmingPrefix(".").description
    }

    static func mismatch(_ expected: String, _ value: MP.PickleValue, _ path: [any CodingKey]) -> MP.Error {
        .typeMismatch(path: pathText(path), expected: expected, found: value.pythonType)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .dict(let entries) = value else { throw Self.mismatch("a dict", value, codingPath) }
        var byKey: [String: MP.PickleValue] = [:]
        for entry in entries {
            switch entry.key {
            case .string(let key): byKey[key] = entry.value
            case .int(let key): byKey[String(key)] = entry.value
            default: throw MP.Error.typeMismatch(path: Self.pathText(codingPath), expected: "a dict with str (or int) keys",
                                                       found: "dict with a \(entry.key.pythonType) key")
            }
        }
        return KeyedDecodingContainer(Keyed<Key>(entries: byKey, order: entries.map(\.key), codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        switch value {
        case .list(let items), .tuple(let items), .set(let items), .frozenset(let items):
            return Unkeyed(items: items, codingPath: codingPath)
        default: throw Self.mismatch("a list, tuple or set", value, codingPath)
        }
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(value: value, codingPath: codingPath) }

    private struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let entries: [String: MP.PickleValue]
        let order: [MP.PickleValue]
        let codingPath: [any CodingKey]

        var allKeys: [Key] {
            order.compactMap { key in
                switch key {
                case .string(let text): return Key(stringValue: text)
                case .int(let number): return Key(intValue: Int(number)) ?? Key(stringValue: String(number))
                default: return nil
                }
            }
        }

        func contains(_ key: Key) -> Bool { entries[key.stringValue] != nil }

        private func value(_ key: Key) throws -> MP.PickleValue {
            guard let value = entries[key.stringValue] else {
                throw MP.Error.missingKey(path: PickleValueDecoding.pathText(codingPath), key: key.stringValue)
            }
            return value
        }

        func decodeNil(forKey key: Key) throws -> Bool {
            if case .none? = entries[key.stringValue] { return true }
            return entries[key.stringValue] == nil
        }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            let value = try value(key)
            if let scalar = PickleValueDecoding.scalar(T.self, value) { return scalar }
            return try PickleValueDecoding.decode(T.self, from: value, path: codingPath + [key])
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try PickleValueDecoding(value: try value(key), codingPath: codingPath + [key]).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try PickleValueDecoding(value: try value(key), codingPath: codingPath + [key]).unkeyedContainer()
        }

        func superDecoder() throws -> any Decoder { try superDecoder(forKey: Key(stringValue: "super")!) }
        func superDecoder(forKey key: Key) throws -> any Decoder {
            PickleValueDecoding(value: try value(key), codingPath: codingPath + [key])
        }
    }

    private struct Unkeyed: UnkeyedDecodingContainer {
        let items: [MP.PickleValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        private mutating func next() throws -> (MP.PickleValue, any CodingKey) {
            guard !isAtEnd else {
                throw MP.Error.typeMismatch(path: PickleValueDecoding.pathText(codingPath), expected: "more than \(items.count) items",
                                                  found: "sequence of \(items.count)")
            }
            defer { currentIndex += 1 }
            return (items[currentIndex], IndexKey(currentIndex))
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, case .none = items[currentIndex] else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            if !isAtEnd, let scalar = PickleValueDecoding.scalar(T.self, items[currentIndex]) {
                currentIndex += 1
                return scalar
            }
            let (value, key) = try next()
            return try PickleValueDecoding.decode(T.self, from: value, path: codingPath + [key])
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let (value, key) = try next()
            return try PickleValueDecoding(value: value, codingPath: codingPath + [key]).container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            let (value, key) = try next()
            return try PickleValueDecoding(value: value, codingPath: codingPath + [key]).unkeyedContainer()
        }

        mutating func superDecoder() throws -> any Decoder {
            let (value, key) = try next()
            return PickleValueDecoding(value: value, codingPath: codingPath + [key])
        }
    }

    private struct Single: SingleValueDecodingContainer {
        let value: MP.PickleValue
        let codingPath: [any CodingKey]

        func decodeNil() -> Bool { if case .none = value { return true } else { return false } }

        func decode(_ type: Bool.Type) throws -> Bool {
            guard case .bool(let flag) = value else { throw PickleValueDecoding.mismatch("a bool", value, codingPath) }
            return flag
        }

        func decode(_ type: String.Type) throws -> String {
            guard case .string(let text) = value else { throw PickleValueDecoding.mismatch("a str", value, codingPath) }
            return text
        }

        func decode(_ type: Double.Type) throws -> Double {
            switch value {
            case .float(let number): return number
            case .int(let number): return Double(number)
            default: throw PickleValueDecoding.mismatch("a float", value, codingPath)
            }
        }

        func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }

        private func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
            switch value {
            case .int(let number):
                guard let fitted = I(exactly: number) else {
                    throw MP.Error.doesNotFit(path: PickleValueDecoding.pathText(codingPath), type: "\(I.self)", value: String(number))
                }
                return fitted
            case .bigInt(let raw):
                // Fits only an unsigned 64-bit type, as 8 bytes plus a zero sign byte.
                if I.bitWidth == 64 && !I.isSigned && raw.count == 9 && raw[8] == 0 {
                    return I(truncatingIfNeeded: raw[..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
                }
                throw MP.Error.doesNotFit(path: PickleValueDecoding.pathText(codingPath), type: "\(I.self)", value: "of \(raw.count * 8) bits")
            default:
                throw PickleValueDecoding.mismatch("an int", value, codingPath)
            }
        }

        func decode(_ type: Int.Type) throws -> Int { try integer(Int.self) }
        func decode(_ type: Int8.Type) throws -> Int8 { try integer(Int8.self) }
        func decode(_ type: Int16.Type) throws -> Int16 { try integer(Int16.self) }
        func decode(_ type: Int32.Type) throws -> Int32 { try integer(Int32.self) }
        func decode(_ type: Int64.Type) throws -> Int64 { try integer(Int64.self) }
        func decode(_ type: UInt.Type) throws -> UInt { try integer(UInt.self) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(UInt8.self) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(UInt16.self) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(UInt32.self) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(UInt64.self) }

        func decode<T: Decodable>(_ type: T.Type) throws -> T { try PickleValueDecoding.decode(T.self, from: value, path: codingPath) }
    }
}
