extension MP {
    /// A value in the subset of Python's that both languages share, as
    /// CPython's `pickle` writes it: what ``MP/PickleDecoder`` reads before it
    /// becomes your `Decodable` type, and what ``MP/PickleEncoder`` writes.
    ///
    /// Decode into `PickleValue` itself to look at a pickle whose shape you
    /// do not know; encode one to send exactly the Python value you mean (a
    /// `tuple`, a `frozenset`, a dictionary with integer keys).
    public indirect enum PickleValue: Hashable, Sendable, CustomStringConvertible {
        /// `None`.
        case none
        case bool(Bool)
        /// An `int` that fits 64 bits.
        case int(Int64)
        /// An `int` beyond 64 bits: its two's-complement bytes, least significant first (pickle's `LONG` form).
        case bigInt([UInt8])
        case float(Double)
        case string(String)
        case bytes([UInt8])
        case bytearray([UInt8])
        case list([PickleValue])
        case tuple([PickleValue])
        /// A `dict`, in insertion order.
        case dict([DictEntry])
        case set([PickleValue])
        case frozenset([PickleValue])

        /// One key and value of a ``dict(_:)``.
        public struct DictEntry: Hashable, Sendable {
            public var key: PickleValue
            public var value: PickleValue
            public init(_ key: PickleValue, _ value: PickleValue) {
                self.key = key
                self.value = value
            }
        }

        /// The Python type's name (`int`, `dict`, ...), for error messages.
        public var pythonType: String {
            switch self {
            case .none: "NoneType"
            case .bool: "bool"
            case .int, .bigInt: "int"
            case .float: "float"
            case .string: "str"
            case .bytes: "bytes"
            case .bytearray: "bytearray"
            case .list: "list"
            case .tuple: "tuple"
            case .dict: "dict"
            case .set: "set"
            case .frozenset: "frozenset"
            }
        }

        /// Roughly Python's `repr`.
        public var description: String {
            switch self {
            case .none: return "None"
            case .bool(let value): return value ? "True" : "False"
            case .int(let value): return String(value)
            case .bigInt(let bytes): return "<int of \(bytes.count) bytes>"
            case .float(let value): return value.isNaN ? "nan" : value.isInfinite ? (value < 0 ? "-inf" : "inf") : String(value)
            case .string(let value): return MP.ShareableList.Item.pythonRepr(value.unicodeScalars.map(\.value))
            case .bytes(let value): return "b" + MP.ShareableList.Item.pythonRepr(value.map(UInt32.init), bytes: true)
            case .bytearray(let value): return "bytearray(b" + MP.ShareableList.Item.pythonRepr(value.map(UInt32.init), bytes: true) + ")"
            case .list(let items): return "[" + items.map(\.description).joined(separator: ", ") + "]"
            case .tuple(let items): return "(" + items.map(\.description).joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
            case .dict(let entries): return "{" + entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
            case .set(let items): return items.isEmpty ? "set()" : "{" + items.map(\.description).joined(separator: ", ") + "}"
            case .frozenset(let items): return "frozenset({" + items.map(\.description).joined(separator: ", ") + "})"
            }
        }
    }


}

/// A ``MP/PickleValue`` inside a `Codable` type (`var args: [MP.PickleValue]`)
/// takes whatever the pickle holds there. It is coded only by the pickle
/// codec; other coders refuse it.
extension MP.PickleValue: Codable {
    public init(from decoder: any Decoder) throws {
        guard let pickle = decoder as? PickleValueDecoding else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "MP.PickleValue is decoded only by MP.PickleDecoder"))
        }
        self = pickle.value
    }

    public func encode(to encoder: any Encoder) throws {
        guard let pickle = encoder as? PickleValueEncoding else {
            throw EncodingError.invalidValue(self, .init(codingPath: encoder.codingPath, debugDescription: "MP.PickleValue is encoded only by MP.PickleEncoder"))
        }
        pickle.slot.set(self)
    }
}
