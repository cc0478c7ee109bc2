/// Writes ``MP/PickleValue``s as CPython's pickler does for protocol 4 or 5:
/// one frame, the compact opcodes, items in batches of 1,000. No memo is
/// written (a value tree shares nothing), which every unpickler accepts.
struct PickleWriter {
    private(set) var bytes: [UInt8] = []
    let version: UInt8

    init(version: Int) {
        self.version = UInt8(version)
    }

    mutating func write(_ value: MP.PickleValue) -> [UInt8] {
        var body = PickleWriter(version: Int(version))
        body.value(value)
        body.bytes.append(0x2e) // STOP
        bytes = [0x80, version, 0x95] // PROTO, FRAME
        append64(UInt64(body.bytes.count))
        bytes += body.bytes
        return bytes
    }

    private mutating func value(_ value: MP.PickleValue) {
        switch value {
        case .none: bytes.append(0x4e)
        case .bool(let flag): bytes.append(flag ? 0x88 : 0x89)
        case .int(let number):
            if number >= 0 && number < 256 {
                bytes += [0x4b, UInt8(number)]
            } else if number >= 0 && number < 65536 {
                bytes += [0x4d, UInt8(number & 0xff), UInt8(number >> 8)]
            } else if let small = Int32(exactly: number) {
                bytes.append(0x4a)
                append32(UInt32(bitPattern: small))
            } else {
                long(Self.twosComplement(number))
            }
        case .bigInt(let raw): long(raw)
        case .float(let number):
            bytes.append(0x47)
            let bits = number.bitPattern
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        case .string(let text):
            let utf8 = Swift.Array(text.utf8)
            if utf8.count < 256 {
                bytes += [0x8c, UInt8(utf8.count)]
            } else if utf8.count <= Int(UInt32.max) {
                bytes.append(0x58)
                append32(UInt32(utf8.count))
            } else {
                bytes.append(0x8d)
                append64(UInt64(utf8.count))
            }
            bytes += utf8
        case .bytes(let raw): binaryBytes(raw)
        case .bytearray(let raw):
            if version >= 5 {
                bytes.append(0x96)
                append64(UInt64(raw.count))
                bytes += raw
            } else {
                self.value(.string("builtins"))
                self.value(.string("bytearray"))
                bytes.append(0x93) // STACK_GLOBAL
                binaryBytes(raw)
                bytes += [0x85, 0x52] // TUPLE1, REDUCE
            }
        case .list(let items):
            bytes.append(0x5d)
            batches(items, one: 0x61, many: 0x65)
        case .tuple(let items):
            switch items.count {
            case 0: bytes.append(0x29)
            case 1...3:
                for item in items { self.value(item) }
                bytes.append(0x84 + UInt8(items.count))
            default:
                bytes.append(0x28)
                for item in items { self.value(item) }
                bytes.append(0x74)
            }
        case .dict(let entries):
            bytes.append(0x7d)
            var start = 0
            while start < entries.count {
                let batch = entries[start..<min(start + 1000, entries.count)]
                if batch.count == 1 {
                    self.value(batch.first!.key); self.value(batch.first!.value); bytes.append(0x73)
                } else {
                    bytes.append(0x28)
                    for entry in batch { self.value(entry.key); self.value(entry.value) }
                    bytes.append(0x75)
                }
                start += 1000
            }
        case .set(let items):
            bytes.append(0x8f)
            var start = 0
            while start < items.count {
                bytes.append(0x28)
                for item in items[start..<min(start + 1000, items.count)] { self.value(item) }
                bytes.append(0x90)
                start += 1000
            }
        case .frozenset(let items):
            bytes.append(0x28)
            for item in items { self.value(item) }
            bytes.append(0x91)
        }
    }

    private mutating func batches(_ items: [MP.PickleValue], one: UInt8, many: UInt8) {
        var start = 0
        while start < items.count {
            let batch = items[start..<min(start + 1000, items.count)]
            if batch.count == 1 {
                value(batch.first!); bytes.append(one)
            } else {
                bytes.append(0x28)
                for item in batch { value(item) }
                bytes.append(many)
            }
            start += 1000
        }
    }

    private mutating func binaryBytes(_ raw: [UInt8]) {
        if raw.count < 256 {
            bytes += [0x43, UInt8(raw.count)]
        } else if raw.count <= Int(UInt32.max) {
            bytes.append(0x42)
            append32(UInt32(raw.count))
        } else {
            bytes.append(0x8e)
            append64(UInt64(raw.count))
        }
        bytes += raw
    }

    private mutating func long(_ raw: [UInt8]) {
        if raw.count < 256 {
            bytes += [0x8a, UInt8(raw.count)]
        } else {
            bytes.append(0x8b)
            append32(UInt32(raw.count))
        }
        bytes += raw
    }

    /// The shortest two's-complement bytes of `number`, least significant first.
    static func twosComplement(_ number: Int64) -> [UInt8] {
        var raw = withUnsafeBytes(of: number.littleEndian) { Swift.Array($0) }
        let sign: UInt8 = number < 0 ? 0xff : 0
        while raw.count > 1 && raw.last == sign && (raw[raw.count - 2] & 0x80 != 0) == (sign == 0xff) { raw.removeLast() }
        return raw
    }

    private mutating func append32(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
    private mutating func append64(_ value: UInt64) { for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
}
