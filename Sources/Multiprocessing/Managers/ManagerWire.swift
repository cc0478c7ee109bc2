import MultiprocessingPlatform
/// The manager's request-reply protocol, inside CPython's framing (a
/// big-endian `i32` length per message) on a socket that passed CPython's
/// authentication handshake.
///
/// A request: a 40-byte header, then arguments, each `[u32 length][bytes]`
/// (little-endian), most of them values in the library's wire format:
///
/// | offset | field |
/// |---|---|
/// | 0 | operation (``ManagerOp``) |
/// | 1 | flags: bit 0 blocking, bit 1 has a timeout, bit 2 traced (the first argument is the caller's trace fields) |
/// | 4 | keep-alive interval the client wants while the call waits (ms; 0: none) |
/// | 8 | object id |
/// | 16 | the calling process's session id |
/// | 24 | the calling thread's id (lock ownership) |
/// | 32 | the call's timeout (ns) |
///
/// A reply starts with a status byte: ``ManagerWire/ok`` and arguments
/// from offset 4, ``ManagerWire/fault`` and a ``ManagerWire/Fault`` code, or
/// ``ManagerWire/keepAlive`` (sent while a blocking call waits, so the
/// client can tell a long wait from a dead link).
enum ManagerWire {
    static let headerSize = 40
    static let ok: UInt8 = 0
    static let fault: UInt8 = 1
    static let keepAlive: UInt8 = 2

    /// A reply's byte 2: the client must acknowledge it (``ManagerOp/acknowledge``)
    /// before the server forgets how to undo it.
    static let needsAcknowledgement: UInt8 = 1

    static let blockingFlag: UInt8 = 1
    static let timeoutFlag: UInt8 = 2
    /// The call was made inside a trace: its first argument is the client
    /// span's fields as header lines (``MP/TraceHeaders``).
    static let tracedFlag: UInt8 = 4

    /// The one fault of a fault reply: the server's ``MP/Error`` whole (its
    /// code's name, its message, its error type or an empty string).
    enum Fault: UInt8 {
        case error = 1
    }
}

/// The operations a manager serves, by object kind.
enum ManagerOp: UInt8 {
    // the manager
    case create = 1, shutdown, ping, lookup,
         /// The client received a reply that took something (a queue's item, a
         /// lock): the server may forget how to put it back. No reply.
         acknowledge
    // dict and namespace
    case dictGet = 10, dictSet, dictPop, dictContains, dictCount, dictKeys, dictValues, dictItems, dictClear, dictUpdate,
         dictSetDefault, dictReplace, dictPopItem
    // list and array
    case listAppend = 30, listExtend, listInsert, listGet, listSet, listPop, listCount, listAll, listClear, listIndex,
         listRemove, listReplace
    // value
    case valueGet = 50, valueSet, valueReplace
    // queue
    case queuePut = 60, queueGet, queueSize, queueTaskDone, queueJoin, queueMaxSize
    // locks and semaphores
    case acquire = 70, release, lockStatus
    // condition
    case conditionWait = 80, conditionNotify
    // event
    case eventSet = 90, eventClear, eventIsSet, eventWait
    // barrier
    case barrierWait = 100, barrierReset, barrierAbort, barrierStatus
    // a registered type
    case objectCall = 110
}

/// The kinds of object a manager holds.
enum ManagedKind: UInt8 {
    case dict = 1, list, namespace, queue, joinableQueue, lock, rlock, semaphore, boundedSemaphore, condition, event,
         barrier, value, array, object

    var pythonName: String {
        switch self {
        case .dict: return "dict"
        case .list: return "list"
        case .namespace: return "Namespace"
        case .queue: return "Queue"
        case .joinableQueue: return "JoinableQueue"
        case .lock: return "Lock"
        case .rlock: return "RLock"
        case .semaphore: return "Semaphore"
        case .boundedSemaphore: return "BoundedSemaphore"
        case .condition: return "Condition"
        case .event: return "Event"
        case .barrier: return "Barrier"
        case .value: return "Value"
        case .array: return "Array"
        case .object: return "registered object"
        }
    }
}

/// Builds one message: four bytes for CPython's length, then the payload.
struct ManagerMessage {
    private(set) var bytes: [UInt8]

    /// A request header for `op` on `object`.
    init(_ op: ManagerOp, object: UInt64, session: UInt64, thread: UInt64, blocking: Bool = true, timeout: Deadline? = nil,
         timeoutSeconds: Double? = nil, keepAliveMillis: UInt32 = 0) {
        bytes = [UInt8](repeating: 0, count: 4 + ManagerWire.headerSize)
        bytes.reserveCapacity(128)
        bytes[4] = op.rawValue
        var flags: UInt8 = blocking ? ManagerWire.blockingFlag : 0
        var nanoseconds: Int64 = 0
        if let timeoutSeconds {
            flags |= ManagerWire.timeoutFlag
            nanoseconds = timeoutSeconds >= 9e9 ? Int64.max : Int64(max(0, timeoutSeconds) * 1e9)
        }
        bytes[5] = flags
        store(keepAliveMillis, at: 8)
        store(object, at: 12)
        store(session, at: 20)
        store(thread, at: 28)
        store(UInt64(bitPattern: nanoseconds), at: 36)
    }

    /// A reply with `status` (and, for a fault, its code).
    init(status: UInt8, code: UInt8 = 0) {
        bytes = [0, 0, 0, 0, status, code, 0, 0]
    }

    private mutating func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for (index, byte) in raw.enumerated() { bytes[offset + index] = byte }
        }
    }

    /// Marks a request as traced and puts the fields first among its arguments.
    mutating func trace(_ fields: [UInt8]) {
        bytes[5] |= ManagerWire.tracedFlag
        append(fields)
    }

    /// Marks a reply as one the client must acknowledge.
    mutating func requireAcknowledgement() { bytes[6] = ManagerWire.needsAcknowledgement }

    mutating func append(_ argument: some Collection<UInt8>) {
        withUnsafeBytes(of: UInt32(argument.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: argument)
    }

    mutating func append(_ value: Int) { append(withUnsafeBytes(of: Int64(value).littleEndian) { Array($0) }) }
    mutating func append(_ value: String) { append(Array(value.utf8)) }
    mutating func append(_ value: Bool) { append([value ? 1 : 0]) }

    mutating func appendEncoded<T: Encodable>(_ value: T) throws(MP.Error) {
        do { append(try WireFormat.encode(value)) } catch { throw .wire(error) }
    }

    /// The finished frame: CPython's big-endian length in front.
    mutating func framed() -> [UInt8] {
        let length = UInt32(bytes.count - 4).bigEndian
        withUnsafeBytes(of: length) { raw in for index in 0..<4 { bytes[index] = raw[index] } }
        return bytes
    }
}

/// Reads a message's arguments.
struct ManagerReader {
    let bytes: [UInt8]
    var offset: Int

    init(_ bytes: [UInt8], from offset: Int) {
        self.bytes = bytes
        self.offset = offset
    }

    var isAtEnd: Bool { offset >= bytes.count }

    func integer<T: FixedWidthInteger>(at position: Int, as: T.Type) -> T {
        bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: T.self)) }
    }

    mutating func next() throws(MP.Error) -> ArraySlice<UInt8> {
        guard offset + 4 <= bytes.count else { throw .wire(.malformed(type: "manager message", reason: "an argument is missing")) }
        let length = Int(integer(at: offset, as: UInt32.self))
        guard offset + 4 + length <= bytes.count else {
            throw .wire(.malformed(type: "manager message", reason: "an argument of \(length) bytes overruns the message"))
        }
        defer { offset += 4 + length }
        return bytes[(offset + 4)..<(offset + 4 + length)]
    }

    mutating func bytesArgument() throws(MP.Error) -> [UInt8] { Array(try next()) }

    mutating func int() throws(MP.Error) -> Int {
        let slice = try next()
        guard slice.count == 8 else { throw .wire(.malformed(type: "manager message", reason: "an integer of \(slice.count) bytes")) }
        return Int(Int64(littleEndian: slice.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }))
    }

    mutating func string() throws(MP.Error) -> String { String(decoding: try next(), as: UTF8.self) }

    mutating func bool() throws(MP.Error) -> Bool { try next().first == 1 }

    mutating func decode<T: Decodable>(_ type: T.Type) throws(MP.Error) -> T {
        let slice = try next()
        let result = slice.withUnsafeBytes { raw in
            Result { () throws(MP.Error) -> T in try WireFormat.decode(T.self, from: raw) }
        }
        do { return try result.get() } catch { throw .wire(error) }
    }

    mutating func rest() throws(MP.Error) -> [[UInt8]] {
        var all: [[UInt8]] = []
        while !isAtEnd { all.append(try bytesArgument()) }
        return all
    }
}
