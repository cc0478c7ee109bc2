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

    /// Why a pickle could not be read or a value could not be pickled.
    public enum PickleError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The pickle asks for something this codec never does: run code,
        /// make an instance of a class, look up a global outside the
        /// allow-list. Nothing was run.
        case refused(opcode: String, reason: String)
        /// The bytes are not a well-formed pickle (truncated, a bad opcode, a
        /// length larger than what remains, a stack that does not add up).
        case malformed(String)
        /// Nesting deeper than ``MP/PickleDecoder/maximumDepth``, or a value
        /// that expands past the decoder's bound (shared references).
        case tooLarge(String)
        /// The value does not have the shape the `Decodable` type asks for.
        case typeMismatch(path: String, expected: String, found: String)
        /// A Python `int` does not fit the Swift integer type.
        case doesNotFit(path: String, type: String, value: String)
        /// A key the `Decodable` type needs is missing.
        case missingKey(path: String, key: String)
        /// A value this codec cannot write (a Swift type with no Python counterpart here).
        case unsupported(String)

        public var description: String {
            switch self {
            case .refused(let opcode, let reason): return "pickle refused at \(opcode): \(reason) (nothing was run)"
            case .malformed(let why): return "malformed pickle: \(why)"
            case .tooLarge(let why): return "pickle too large: \(why)"
            case .typeMismatch(let path, let expected, let found): return "at \(path.isEmpty ? "the top" : path): expected \(expected), found a Python \(found)"
            case .doesNotFit(let path, let type, let value): return "at \(path.isEmpty ? "the top" : path): the Python int \(value) does not fit \(type)"
            case .missingKey(let path, let key): return "at \(path.isEmpty ? "the top" : path): no key '\(key)'"
            case .unsupported(let what): return "cannot pickle: \(what)"
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
