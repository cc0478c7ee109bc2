import MultiprocessingPlatform
import _CMultiprocessingSync

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
        // The common case, a connection or queue sending one type over and
        // over, takes no lock: a direct-mapped table of atomic words, each a
        // type's metadata address and its tag. An entry is one word, so a
        // reader sees a whole one or none; a fork copies it as it is.
        let address = UInt64(UInt(bitPattern: id))
        let slot = tagSlots + Int(truncatingIfNeeded: (address >> 4) & UInt64(tagSlotCount - 1))
        let cacheable = address >> 48 == 0
        if cacheable {
            let entry = UInt64(bitPattern: cmp_atomic_load_i64(slot))
            if entry >> 16 == address { return UInt16(truncatingIfNeeded: entry) }
        }
        let tag = slowTypeTag(type, id)
        if cacheable { cmp_atomic_store_i64(slot, Int64(bitPattern: address << 16 | UInt64(tag))) }
        return tag
    }

    private static let tagSlotCount = 256
    nonisolated(unsafe) private static let tagSlots: UnsafeMutablePointer<Int64> = {
        let slots = UnsafeMutablePointer<Int64>.allocate(capacity: tagSlotCount)
        slots.initialize(repeating: 0, count: tagSlotCount)
        return slots
    }()

    /// The tag from the dictionary, or computed from the type's name.
    private static func slowTypeTag<T>(_ type: T.Type, _ id: ObjectIdentifier) -> UInt16 {
        if let tag = tagLock.withLock({ tags[id] }) { return tag }
        var hash: UInt32 = 2_166_136_261
        // The runtime's name of the type, as `String(reflecting:)` prints
        // it, without going through printing: that asks the runtime whether
        // the metatype conforms to a handful of protocols, each a scan of
        // every conformance record in a fresh process (0.9 ms of a
        // forkserver child's first message, in a program linking Foundation).
        var name = _typeName(type, qualified: true)
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
