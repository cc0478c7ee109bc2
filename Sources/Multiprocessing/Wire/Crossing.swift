import MultiprocessingPlatform
/// How library objects cross into a spawned or forkserver child.
///
/// CPython pickles a lock or a queue into a spawned child by duplicating its
/// descriptors; here an object encodes the descriptors behind it (a memfd for
/// shared memory, an eventfd, a socket) into the task's ``DescriptorTable``,
/// by index, and the child maps or adopts the descriptors it received
/// (inherited by `posix_spawn`, or passed to the forkserver with SCM_RIGHTS).
///
/// Outside a start (a value sent through a queue or a pipe) there is no
/// table, and such an object refuses to encode: CPython's rule that locks and
/// queues are shared "through inheritance" only.
final class DescriptorTable {
    /// The most descriptors one start carries: the kernel passes 253 in one
    /// message, one slot is the launch message's and one the forkserver's birth note.
    static let capacity = 251
    private(set) var descriptors: [Int32] = []

    /// The index of `fd` in the table, adding it once.
    func add(_ fd: Int32, for what: String) throws -> Int {
        if let index = descriptors.firstIndex(of: fd) { return index }
        guard descriptors.count < Self.capacity else {
            throw MP.Error.cannotCross("a task's arguments may hold at most \(Self.capacity) descriptors (\(what) would be one more)")
        }
        descriptors.append(fd)
        return descriptors.count - 1
    }
}

/// The child's side: the descriptors it received, in table order.
final class ReceivedDescriptors {
    let descriptors: [Int32]

    init(_ descriptors: [Int32]) { self.descriptors = descriptors }

    /// A duplicate of descriptor `index`, owned by the caller (close-on-exec).
    func adopt(_ index: Int, for what: String) throws -> Int32 {
        guard descriptors.indices.contains(index) else {
            throw MP.Error.cannotCross("\(what) refers to descriptor \(index), but the child received \(descriptors.count)")
        }
        return try Sys.duplicate(descriptors[index])
    }

    func closeAll() { for fd in descriptors { Sys.close(fd) } }
}

extension CodingUserInfoKey {
    static let descriptorTable = CodingUserInfoKey(rawValue: "swift-multiprocessing.descriptor-table")!
    static let receivedDescriptors = CodingUserInfoKey(rawValue: "swift-multiprocessing.received-descriptors")!
}

enum Crossing {
    /// The table of the start in progress, or a clear error naming `what`.
    static func table(_ encoder: any Encoder, for what: String) throws -> DescriptorTable {
        guard let table = encoder.userInfo[.descriptorTable] as? DescriptorTable else {
            throw MP.Error.cannotCross("\(what) can only cross into a process as a named task's argument when the process starts (share it by inheritance, as in Python); it cannot be sent through a queue, a pipe or a pool result")
        }
        return table
    }

    static func received(_ decoder: any Decoder, for what: String) throws -> ReceivedDescriptors {
        guard let received = decoder.userInfo[.receivedDescriptors] as? ReceivedDescriptors else {
            throw MP.Error.cannotCross("\(what) can only be received as a named task's argument in a started child")
        }
        return received
    }
}

/// Encodes a `Codable` value with the start's descriptor table (the named
/// task's arguments), or decodes one with the descriptors a child received.
extension WireFormat {
    /// The library's own error (an object that cannot cross, a wire
    /// failure) comes out as itself; any other failure as an encoding error.
    static func encode<T: Encodable>(_ value: T, descriptors: DescriptorTable) throws -> [UInt8] {
        let encoder = BinaryEncoder(writer: ByteWriter())
        encoder.userInfo[.descriptorTable] = descriptors
        do {
            try encoder.encodeValue(value)
        } catch let error as MP.Error {
            throw error
        } catch {
            throw MP.Error.encodingFailed(type: "\(T.self)", reason: "\(error)")
        }
        try encoder.writer.checkLengths(T.self)
        return encoder.writer.bytes
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], descriptors: ReceivedDescriptors) throws -> T {
        try bytes.withUnsafeBytes { raw in
            let decoder = BinaryDecoder(reader: ByteReader(raw))
            decoder.userInfo[.receivedDescriptors] = descriptors
            let value: T
            do {
                value = try decoder.decodeValue(T.self)
            } catch let error as MP.Error {
                throw error
            } catch {
                throw MP.Error.malformed(type: "\(T.self)", reason: "\(error)")
            }
            if decoder.reader.remaining != 0 {
                throw MP.Error.malformed(type: "\(T.self)", reason: "\(decoder.reader.remaining) bytes left over after the value")
            }
            return value
        }
    }
}
