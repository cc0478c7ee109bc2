extension MP {
    /// Encodes `Encodable` values as CPython's `pickle.dumps(value, protocol=4)`
    /// (or 5) would write the Python value they correspond to: a keyed type
    /// (a struct, `[String: T]`) a `dict` with `str` keys, an array a `list`,
    /// a `Set` a `set`, `[UInt8]` `bytes`, `nil` `None`, integers `int` (of
    /// any size), `Double`/`Float` `float`, `String` `str`, `Bool` `bool`.
    /// A ``PickleValue`` is written as it is (a `tuple`, a `frozenset`, ...).
    ///
    /// ```swift
    /// struct Job: Codable { var job: Int; var args: [String] }
    /// let bytes = try MP.PickleEncoder().encode(Job(job: 7, args: ["x"]))  // pickle.loads: {'job': 7, 'args': ['x']}
    /// ```
    public struct PickleEncoder: Sendable {
        /// The pickle protocol written: 4 (CPython 3.8+ reads it) or 5.
        public var protocolVersion: Int

        public init(protocolVersion: Int = 4) {
            self.protocolVersion = protocolVersion
        }

        /// The pickle of `value`.
        public func encode<T: Encodable>(_ value: T) throws(MP.Error) -> [UInt8] {
            guard protocolVersion == 4 || protocolVersion == 5 else { throw .unsupported("protocol \(protocolVersion) (4 and 5 are written)") }
            var writer = PickleWriter(version: protocolVersion)
            return writer.write(try pickleValue(of: value))
        }

        /// The ``PickleValue`` that `value` pickles as.
        public func pickleValue<T: Encodable>(of value: T) throws(MP.Error) -> PickleValue {
            do {
                return try PickleValueEncoding.value(of: value, path: [])
            } catch let error as MP.Error {
                throw error
            } catch {
                throw .unsupported("\(error)")
            }
        }
    }
}

/// `Set`s pickle as Python sets (Codable alone would make them lists).
protocol PickleSetEncodable { func pickleElements() -> [any Encodable] }
extension Set: PickleSetEncodable where Element: Encodable {
    func pickleElements() -> [any Encodable] { Swift.Array(self) }
}

/// The `Encoder` behind ``MP/PickleEncoder``: builds a value tree.
final class PickleValueEncoding: Encoder {
    /// What a container is building: filled in as the value encodes itself
    /// (children appended in place; a key written twice is written twice,
    /// and the last wins when Python or this decoder reads it, as in a dict).
    final class Slot {
        enum Kind { case empty, value, keyed, unkeyed }
        var kind = Kind.empty
        var value = MP.PickleValue.none
        var keys: [String] = []
        var children: [Slot] = []

        func set(_ value: MP.PickleValue) {
            kind = .value
            self.value = value
        }

        func resolved() -> MP.PickleValue {
            switch kind {
            case .empty: return .dict([])
            case .value: return value
            case .keyed: return .dict(zip(keys, children).map { .init(.string($0), $1.resolved()) })
            case .unkeyed: return .list(children.map { $0.resolved() })
            }
        }
    }

    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    let slot: Slot

    init(path: [any CodingKey], slot: Slot) {
        codingPath = path
        self.slot = slot
    }

    static func value<T: Encodable>(of value: T, path: [any CodingKey]) throws -> MP.PickleValue {
        if let direct = try special(value, path: path) { return direct }
        let slot = Slot()
        try value.encode(to: PickleValueEncoding(path: path, slot: slot))
        return slot.resolved()
    }

    /// Values whose pickle is not what their `Codable` conformance says, and
    /// the common scalars (without an encoder and a container each: arrays
    /// and dictionaries encode their elements through the generic method).
    @inline(__always)
    private static func scalar<T: Encodable>(_ value: T) -> MP.PickleValue? {
        if T.self == Double.self { return .float(value as! Double) }
        if T.self == Int.self { return .int(Int64(value as! Int)) }
        if T.self == String.self { return .string(value as! String) }
        if T.self == Bool.self { return .bool(value as! Bool) }
        if T.self == Int64.self { return .int(value as! Int64) }
        if T.self == Int32.self { return .int(Int64(value as! Int32)) }
        if T.self == Float.self { return .float(Double(value as! Float)) }
        return nil
    }

    private static func special<T: Encodable>(_ value: T, path: [any CodingKey]) throws -> MP.PickleValue? {
        if let scalar = scalar(value) { return scalar }
        if T.self == MP.PickleValue.self { return value as? MP.PickleValue }
        // (By type: `as? [UInt8]` would also take an empty array of any element type.)
        if type(of: value) == [UInt8].self, let bytes = value as? [UInt8] { return .bytes(bytes) }
        if let set = value as? any PickleSetEncodable {
            return .set(try set.pickleElements().map { try Self.value(of: $0, path: path) })
        }
        if let number = value as? UInt64, number > UInt64(Int64.max) {
            return .bigInt(withUnsafeBytes(of: number.littleEndian) { Swift.Array($0) } + [0])
        }
        if let number = value as? UInt, number > UInt(Int64.max) {
            return .bigInt(withUnsafeBytes(of: UInt64(number).littleEndian) { Swift.Array($0) } + [0])
        }
        return nil
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if slot.kind != .keyed { slot.kind = .keyed; slot.keys = []; slot.children = [] }
        return KeyedEncodingContainer(Keyed<Key>(encoding: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if slot.kind != .unkeyed { slot.kind = .unkeyed; slot.children = [] }
        return Unkeyed(encoding: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { Single(encoding: self) }

    fileprivate func store(_ value: MP.PickleValue) { slot.set(value) }

    fileprivate func encodeChild<T: Encodable>(_ value: T, key: @autoclosure () -> any CodingKey) throws -> Slot {
        let child = Slot()
        if let scalar = Self.scalar(value) {
            child.set(scalar)
            return child
        }
        let path = codingPath + [key()]
        if let direct = try Self.special(value, path: path) {
            child.set(direct)
        } else {
            try value.encode(to: PickleValueEncoding(path: path, slot: child))
        }
        return child
    }

    private struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let encoding: PickleValueEncoding
        var codingPath: [any CodingKey] { encoding.codingPath }

        private func add(_ key: Key, _ slot: Slot) {
            encoding.slot.keys.append(key.stringValue)
            encoding.slot.children.append(slot)
        }

        private func add(_ key: Key, _ value: MP.PickleValue) {
            let slot = Slot()
            slot.set(value)
            add(key, slot)
        }

        mutating func encodeNil(forKey key: Key) throws { add(key, .none) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { add(key, .bool(value)) }
        mutating func encode(_ value: String, forKey key: Key) throws { add(key, .string(value)) }
        mutating func encode(_ value: Double, forKey key: Key) throws { add(key, .float(value)) }
        mutating func encode(_ value: Float, forKey key: Key) throws { add(key, .float(Double(value))) }
        mutating func encode(_ value: Int, forKey key: Key) throws { add(key, .int(Int64(value))) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { add(key, .int(Int64(value))) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { add(key, .int(Int64(value))) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { add(key, .int(Int64(value))) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { add(key, .int(value)) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { add(key, try encoding.encodeChild(value, key: key)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let slot = Slot()
            add(key, slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let slot = Slot()
            add(key, slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            let slot = Slot()
            add(key, slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot)
        }
    }

    private struct Unkeyed: UnkeyedEncodingContainer {
        let encoding: PickleValueEncoding
        var codingPath: [any CodingKey] { encoding.codingPath }
        var count: Int { encoding.slot.children.count }

        private func add(_ slot: Slot) { encoding.slot.children.append(slot) }

        private func add(_ value: MP.PickleValue) {
            let slot = Slot()
            slot.set(value)
            add(slot)
        }

        private var nextKey: any CodingKey { IndexKey(count) }

        mutating func encodeNil() throws { add(.none) }
        mutating func encode(_ value: Bool) throws { add(.bool(value)) }
        mutating func encode(_ value: String) throws { add(.string(value)) }
        mutating func encode(_ value: Double) throws { add(.float(value)) }
        mutating func encode(_ value: Float) throws { add(.float(Double(value))) }
        mutating func encode(_ value: Int) throws { add(.int(Int64(value))) }
        mutating func encode(_ value: Int64) throws { add(.int(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws { add(try encoding.encodeChild(value, key: nextKey)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let slot = Slot()
            let key = nextKey
            add(slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let slot = Slot()
            let key = nextKey
            add(slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            let slot = Slot()
            let key = nextKey
            add(slot)
            return PickleValueEncoding(path: codingPath + [key], slot: slot)
        }
    }

    private struct Single: SingleValueEncodingContainer {
        let encoding: PickleValueEncoding
        var codingPath: [any CodingKey] { encoding.codingPath }

        mutating func encodeNil() throws { encoding.store(.none) }
        mutating func encode(_ value: Bool) throws { encoding.store(.bool(value)) }
        mutating func encode(_ value: String) throws { encoding.store(.string(value)) }
        mutating func encode(_ value: Double) throws { encoding.store(.float(value)) }
        mutating func encode(_ value: Float) throws { encoding.store(.float(Double(value))) }
        mutating func encode(_ value: Int) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: Int8) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: Int16) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: Int32) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: Int64) throws { encoding.store(.int(value)) }
        mutating func encode(_ value: UInt) throws { encoding.store(try PickleValueEncoding.value(of: value, path: codingPath)) }
        mutating func encode(_ value: UInt8) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: UInt16) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: UInt32) throws { encoding.store(.int(Int64(value))) }
        mutating func encode(_ value: UInt64) throws {
            encoding.store(value > UInt64(Int64.max) ? .bigInt(withUnsafeBytes(of: value.littleEndian) { Swift.Array($0) } + [0]) : .int(Int64(value)))
        }
        mutating func encode<T: Encodable>(_ value: T) throws { encoding.store(try PickleValueEncoding.value(of: value, path: codingPath)) }
    }
}

/// An array position as a coding key (in coding paths and error messages).
struct IndexKey: CodingKey {
    let intValue: Int?
    var stringValue: String { "[\(intValue ?? 0)]" }
    init(_ index: Int) { intValue = index }
    init?(stringValue: String) { return nil }
    init?(intValue: Int) { self.intValue = intValue }
}
