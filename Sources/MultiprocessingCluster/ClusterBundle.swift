/// A row's payload and its result: several submissions (an `applyAsync`'s
/// task, a map's or an imap's chunk) of one task name travel in one row,
/// each with its own outcome.
///
/// Why: every row costs the database an insert, two updates and a delete,
/// and those, not the tasks, bounded a burst of tiny `applyAsync` calls
/// (about 4,000 rows/s on two cores). The pool packs what is waiting into
/// rows sized so that every worker slot still gets several rows (Python's
/// `map` chunk rule: work / (4 × processes)); a lost worker's row runs again
/// as a whole (at-least-once), a task that throws fails only its own part.
///
/// Payload: `u32 parts`, then per part `u32 items, u32 length, bytes` (the
/// part's tasks as the core encodes a chunk). Result: `u32 parts`, then per
/// part `u8 tag, u32 length, bytes`: tag 0 the chunk's encoded results, 1 a
/// thrown error (`type`, NUL, `description`), 2 an unrunnable part (why).
enum ClusterBundle {
    struct Part: Sendable {
        let items: Int
        let payload: [UInt8]
    }

    enum PartOutcome: Sendable, Equatable {
        case results([UInt8])
        case threw(type: String, description: String)
        case unrunnable(String)
    }

    struct Malformed: Error, CustomStringConvertible {
        let description: String
    }

    static func encode(_ parts: [Part]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + parts.reduce(0) { $0 + 8 + $1.payload.count })
        append(UInt32(parts.count), to: &bytes)
        for part in parts {
            append(UInt32(part.items), to: &bytes)
            append(UInt32(part.payload.count), to: &bytes)
            bytes.append(contentsOf: part.payload)
        }
        return bytes
    }

    static func decodeParts(_ bytes: [UInt8]) throws(Malformed) -> [Part] {
        var reader = Reader(bytes: bytes)
        let count = try reader.u32()
        var parts: [Part] = []
        parts.reserveCapacity(min(Int(count), bytes.count / 8))
        for _ in 0..<count {
            let items = Int(try reader.u32())
            parts.append(Part(items: items, payload: try reader.bytes(Int(try reader.u32()))))
        }
        try reader.end()
        return parts
    }

    static func encode(_ outcomes: [PartOutcome]) -> [UInt8] {
        var bytes: [UInt8] = []
        append(UInt32(outcomes.count), to: &bytes)
        for outcome in outcomes {
            let (tag, body): (UInt8, [UInt8])
            switch outcome {
            case .results(let results): (tag, body) = (0, results)
            case .threw(let type, let description): (tag, body) = (1, Array(type.utf8) + [0] + Array(description.utf8))
            case .unrunnable(let why): (tag, body) = (2, Array(why.utf8))
            }
            bytes.append(tag)
            append(UInt32(body.count), to: &bytes)
            bytes.append(contentsOf: body)
        }
        return bytes
    }

    static func decodeOutcomes(_ bytes: [UInt8]) throws(Malformed) -> [PartOutcome] {
        var reader = Reader(bytes: bytes)
        let count = try reader.u32()
        var outcomes: [PartOutcome] = []
        outcomes.reserveCapacity(min(Int(count), bytes.count / 5))
        for _ in 0..<count {
            let tag = try reader.u8()
            let body = try reader.bytes(Int(try reader.u32()))
            switch tag {
            case 0: outcomes.append(.results(body))
            case 1:
                let split = body.firstIndex(of: 0) ?? body.endIndex
                outcomes.append(.threw(type: String(decoding: body[..<split], as: UTF8.self),
                                       description: String(decoding: body[min(split + 1, body.endIndex)...], as: UTF8.self)))
            case 2: outcomes.append(.unrunnable(String(decoding: body, as: UTF8.self)))
            default: throw Malformed(description: "a part's outcome has the unknown tag \(tag)")
            }
        }
        try reader.end()
        return outcomes
    }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func u8() throws(Malformed) -> UInt8 {
            guard offset < bytes.count else { throw Malformed(description: "the row ends inside a part (at byte \(offset))") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func u32() throws(Malformed) -> UInt32 {
            guard bytes.count - offset >= 4 else { throw Malformed(description: "the row ends inside a length (at byte \(offset))") }
            defer { offset += 4 }
            return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
        }

        mutating func bytes(_ count: Int) throws(Malformed) -> [UInt8] {
            guard count <= bytes.count - offset else {
                throw Malformed(description: "a part claims \(count) bytes where \(bytes.count - offset) are left")
            }
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }

        func end() throws(Malformed) {
            guard offset == bytes.count else { throw Malformed(description: "\(bytes.count - offset) stray byte(s) after the last part") }
        }
    }
}
