extension MP {
    /// Python's `multiprocessing.shared_memory.ShareableList`, in CPython's own
    /// layout: a CPython process attaches a list created here by its name and
    /// reads and writes the same values, and this side attaches CPython's.
    ///
    /// ```swift
    /// let list = try MP.ShareableList([1, 2.5, "hello", true, nil, .bytes([1, 2])])
    /// // python3: ShareableList(name=list.name)[2] == 'hello'
    /// try list.set(0, to: 42)
    /// ```
    ///
    /// The list has a fixed length and each slot a fixed size: 8 bytes for an
    /// integer (64-bit), a float (a `Double`), a boolean or `nil`; a string or
    /// bytes item gets its UTF-8 length rounded up to the next multiple of 8
    /// (at least one more byte), and a later one must fit there
    /// (``MP/Error/Code/tooLarge``). As in
    /// CPython, trailing zero bytes of a string or bytes item are not kept.
    ///
    /// The segment is created owner-only, registered with the resource
    /// tracker, and unlinked with ``unlink()`` (Python's `shm.unlink()`).
    /// No lock: concurrent writers of one slot need one of their own.
    public final class ShareableList: RandomAccessCollection, @unchecked Sendable, CustomStringConvertible {
        /// An item: the types CPython's `ShareableList` stores.
        public enum Item: Hashable, Sendable, CustomStringConvertible,
            ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
            ExpressibleByBooleanLiteral, ExpressibleByNilLiteral {
            case int(Int)
            case double(Double)
            case bool(Bool)
            case string(String)
            case bytes([UInt8])
            case none

            public init(integerLiteral value: Int) { self = .int(value) }
            public init(floatLiteral value: Double) { self = .double(value) }
            public init(stringLiteral value: String) { self = .string(value) }
            public init(booleanLiteral value: Bool) { self = .bool(value) }
            public init(nilLiteral: ()) { self = .none }

            public var description: String {
                switch self {
                case .int(let value): return String(value)
                case .double(let value): return String(value)
                case .bool(let value): return value ? "True" : "False"
                case .string(let value): return Self.pythonRepr(value.unicodeScalars.map(\.value))
                case .bytes(let value): return "b" + Self.pythonRepr(value.map(UInt32.init), bytes: true)
                case .none: return "None"
                }
            }

            /// CPython's `repr` of a `str` or `bytes`: single quotes unless the
            /// text holds a single quote and no double one; backslashes, the
            /// quote, `\t`, `\n`, `\r` escaped; other control characters (and,
            /// in bytes, everything from 0x7f) as `\xNN`.
            static func pythonRepr(_ scalars: [UInt32], bytes: Bool = false) -> String {
                let quote: UInt32 = scalars.contains(0x27) && !scalars.contains(0x22) ? 0x22 : 0x27
                var text = String(UnicodeScalar(UInt8(quote)))
                for scalar in scalars {
                    switch scalar {
                    case 0x5c: text += "\\\\"
                    case quote: text += "\\" + String(UnicodeScalar(UInt8(quote)))
                    case 0x09: text += "\\t"
                    case 0x0a: text += "\\n"
                    case 0x0d: text += "\\r"
                    case _ where scalar < 0x20 || scalar == 0x7f || (scalar >= 0x80 && scalar < (bytes ? 0x100 : 0xa1)):
                        let hex = String(scalar, radix: 16)
                        text += "\\x" + (hex.count < 2 ? "0" + hex : hex)
                    default: text.unicodeScalars.append(UnicodeScalar(scalar) ?? "?")
                    }
                }
                text += String(UnicodeScalar(UInt8(quote)))
                return text
            }

            /// CPython's struct format for the item in a slot of `capacity` bytes.
            func format(capacity: Int) -> String {
                switch self {
                case .int: return "q"
                case .double: return "d"
                case .bool: return "xxxxxxx?"
                case .none: return "xxxxxx?x"
                case .string, .bytes: return "\(capacity)s"
                }
            }

            /// CPython's back-transform code: 0 number or bool, 1 str, 2 bytes, 3 None.
            var code: Int8 {
                switch self {
                case .int, .double, .bool: return 0
                case .string: return 1
                case .bytes: return 2
                case .none: return 3
                }
            }

            var encoded: [UInt8]? {
                switch self {
                case .string(let value): return Swift.Array(value.utf8)
                case .bytes(let value): return value
                default: return nil
                }
            }
        }

        /// The segment holding the list.
        public let shm: SharedMemory
        public let count: Int
        private let offsets: [Int]

        /// Python's `ShareableList(sequence, name=name)`: a new segment holding `items`.
        public init(_ items: [Item], name: String? = nil) throws(MP.Error) {
            count = items.count
            var offsets = [0]
            for item in items {
                let slot = item.encoded.map { 8 * ($0.count / 8 + 1) } ?? 8
                offsets.append(offsets.last! + slot)
            }
            self.offsets = offsets
            let size = 8 + 8 * (count + 1) + offsets.last! + 8 * count + count
            shm = try SharedMemory(name: name, create: true, size: size)
            let base = shm.buffer
            base.storeBytes(of: Int64(count).littleEndian, toByteOffset: 0, as: Int64.self)
            for (index, offset) in offsets.enumerated() {
                base.storeBytes(of: Int64(offset).littleEndian, toByteOffset: 8 + 8 * index, as: Int64.self)
            }
            for (index, item) in items.enumerated() { write(item, at: index) }
        }

        /// Python's `ShareableList(name=name)`: attaches an existing list (CPython's or this library's).
        public init(name: String) throws(MP.Error) {
            shm = try SharedMemory(name: name)
            let base = shm.buffer
            guard base.count >= 16 else { throw .notAShareableList("the segment has \(base.count) bytes") }
            let count = Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 0, as: Int64.self)))
            guard count >= 0, count <= (base.count - 16) / 25 else { throw .notAShareableList("it claims \(count) items in \(base.count) bytes") }
            var offsets: [Int] = []
            for index in 0...count {
                offsets.append(Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 + 8 * index, as: Int64.self))))
            }
            let dataStart = (count + 2) * 8
            guard offsets.first == 0, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 + 8 <= $1 }),
                  dataStart + offsets.last! + 9 * count <= base.count else {
                throw .notAShareableList("its item offsets do not fit the segment")
            }
            self.count = count
            self.offsets = offsets
        }

        /// The segment's name (Python's `sl.shm.name`).
        public var name: String { shm.name }

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        private var dataStart: Int { (count + 2) * 8 }
        private var formatsStart: Int { dataStart + offsets[count] }
        private var codesStart: Int { formatsStart + 8 * count }

        /// Python's `sl[i]`.
        public subscript(position: Int) -> Item {
            precondition(position >= 0 && position < count, "ShareableList index \(position) out of range 0..<\(count)")
            return read(at: position)
        }

        /// Python's `sl[i]` with a negative index counting from the end; throws for one out of range.
        public func item(at position: Int) throws(MP.Error) -> Item {
            let index = position < 0 ? position + count : position
            guard index >= 0 && index < count else { throw .indexOutOfRange(position, count: count) }
            return read(at: index)
        }

        /// Python's `sl[i] = value`: a string or bytes item must fit the slot.
        public func set(_ position: Int, to item: Item) throws(MP.Error) {
            let index = position < 0 ? position + count : position
            guard index >= 0 && index < count else { throw .indexOutOfRange(position, count: count) }
            let capacity = offsets[index + 1] - offsets[index]
            if let encoded = item.encoded, encoded.count > capacity {
                throw .itemTooLarge(index: index, size: encoded.count, capacity: capacity)
            }
            write(item, at: index)
        }

        /// Python's `sl.format`: the struct formats of the items.
        public var format: String { (0..<count).map { storedFormat(at: $0) }.joined() }

        /// Python's `sl.count(value)`.
        public func count(of item: Item) -> Int { reduce(0) { $0 + ($1 == item ? 1 : 0) } }

        /// Python's `sl.index(value)`: nil when absent (Python raises `ValueError`).
        public func index(of item: Item) -> Int? { firstIndex(of: item) }

        /// Python's `sl.shm.unlink()`.
        public func unlink() throws(MP.Error) { try shm.unlink() }

        public var description: String { "ShareableList([" + map(\.description).joined(separator: ", ") + "], name='\(name)')" }

        // MARK: CPython's layout

        private func storedFormat(at index: Int) -> String {
            let raw = UnsafeRawBufferPointer(rebasing: shm.buffer[(formatsStart + 8 * index)..<(formatsStart + 8 * index + 8)])
            return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }

        private func read(at index: Int) -> Item {
            let base = shm.buffer
            let offset = dataStart + offsets[index]
            let code = base.load(fromByteOffset: codesStart + index, as: Int8.self)
            let format = storedFormat(at: index)
            switch (code, format) {
            case (3, _): return .none
            case (0, "q"): return .int(Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: Int64.self))))
            case (0, "d"): return .double(base.loadUnaligned(fromByteOffset: offset, as: Double.self))
            case (0, "xxxxxxx?"): return .bool(base[offset + 7] != 0)
            case (1, _), (2, _):
                let length = Int(format.dropLast()) ?? 0
                var bytes = Swift.Array(UnsafeRawBufferPointer(rebasing: base[offset..<(offset + Swift.min(length, offsets[index + 1] - offsets[index]))]))
                while bytes.last == 0 { bytes.removeLast() }
                return code == 1 ? .string(String(decoding: bytes, as: UTF8.self)) : .bytes(bytes)
            default: return .none
            }
        }

        private func write(_ item: Item, at index: Int) {
            let base = shm.buffer
            let offset = dataStart + offsets[index]
            let capacity = offsets[index + 1] - offsets[index]
            // CPython keeps a string slot's format when a string or bytes item replaces it.
            let format = item.format(capacity: capacity)
            var formatBytes = [UInt8](repeating: 0, count: 8)
            for (position, byte) in format.utf8.prefix(8).enumerated() { formatBytes[position] = byte }
            for (position, byte) in formatBytes.enumerated() { base[formatsStart + 8 * index + position] = byte }
            base.storeBytes(of: item.code, toByteOffset: codesStart + index, as: Int8.self)
            switch item {
            case .int(let value): base.storeBytes(of: Int64(value).littleEndian, toByteOffset: offset, as: Int64.self)
            case .double(let value): base.storeBytes(of: value, toByteOffset: offset, as: Double.self)
            case .bool(let value):
                for position in 0..<7 { base[offset + position] = 0 }
                base[offset + 7] = value ? 1 : 0
            case .none:
                for position in 0..<8 { base[offset + position] = 0 }
            case .string, .bytes:
                let encoded = item.encoded!
                for position in 0..<capacity { base[offset + position] = position < encoded.count ? encoded[position] : 0 }
            }
        }
    }
}
