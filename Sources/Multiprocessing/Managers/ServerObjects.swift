import MultiprocessingPlatform
/// The objects a manager's server holds. Type-agnostic: keys and values are
/// the bytes of their wire encoding, so one server serves every element type
/// (and any build of the library); only a registered type (``ManagedBox``)
/// runs the user's code. Every method runs with the server's lock held, so
/// each call is atomic.

/// Who holds a lock: a thread of a client process (Python's proxies own
/// locks per thread too).
struct LockOwner: Hashable {
    let session: UInt64
    let thread: UInt64
}

/// What one call asks for, as the server decoded it.
struct ServerCall {
    let op: ManagerOp
    let object: UInt64
    let owner: LockOwner
    let blocking: Bool
    /// The call's own timeout (a `get(timeout:)`), nil for none.
    let deadline: Deadline?
    var arguments: ManagerReader
    let waiter: ServerWaiter
}

/// What a call answers; `undo` puts back what the call took (a queue's item,
/// a lock) when its answer cannot be delivered, so a client that died
/// waiting loses nothing and holds nothing.
struct ServerReply {
    var message: ManagerMessage
    var undo: (() -> Void)?

    init(_ message: ManagerMessage, undo: (() -> Void)? = nil) {
        self.message = message
        self.undo = undo
    }

    static var ok: ServerReply { ServerReply(ManagerMessage(status: ManagerWire.ok)) }

    static func with(_ build: (inout ManagerMessage) -> Void) -> ServerReply {
        var message = ManagerMessage(status: ManagerWire.ok)
        build(&message)
        return ServerReply(message)
    }
}

/// The outcome of a blocking wait on the server.
enum WaitOutcome { case ready, timedOut, clientGone, shutDown }

/// Waits on the server's condition for a call (see ``ManagerServer/wait(for:until:)``).
protocol ServerWaiter: AnyObject {
    /// With the server's lock held: waits until `ready()`, the call's
    /// deadline, its client's departure, or the server's shutdown.
    func wait(_ call: ServerCall, until ready: () -> Bool) -> WaitOutcome
    /// With the server's lock held: wakes every waiting call to recheck.
    func changed()
}

class ServerObject {
    let kind: ManagedKind
    let typeTag: String

    init(kind: ManagedKind, typeTag: String) {
        self.kind = kind
        self.typeTag = typeTag
    }

    func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        throw .invalidUse("a manager \(kind.pythonName) has no operation \(call.op)")
    }

    /// The session's processes are all gone: release what they held.
    func sessionEnded(_ session: UInt64) -> Bool { false }
}

extension ServerCall {
    /// The wait for a blocking call, mapped to the errors a client sees;
    /// true when `ready` holds, false at the call's timeout.
    func waitUntil(_ ready: () -> Bool) throws(MP.Error) -> Bool {
        if ready() { return true }
        guard blocking else { return false }
        switch waiter.wait(self, until: ready) {
        case .ready: return true
        case .timedOut: return false
        case .clientGone: throw .disconnected("the client went away")
        case .shutDown: throw .shutDown
        }
    }
}

// MARK: - dict and namespace

/// Python's `dict` (and `Namespace`): insertion-ordered, as Python's is.
final class DictObject: ServerObject {
    private var entries: [[UInt8]: (order: UInt64, value: [UInt8])] = [:]
    private var nextOrder: UInt64 = 0

    init(kind: ManagedKind, typeTag: String, pairs: [[UInt8]]) {
        super.init(kind: kind, typeTag: typeTag)
        var index = 0
        while index + 1 < pairs.count {
            set(pairs[index], pairs[index + 1])
            index += 2
        }
    }

    private func set(_ key: [UInt8], _ value: [UInt8]) {
        if entries[key] != nil {
            entries[key]!.value = value
        } else {
            entries[key] = (nextOrder, value)
            nextOrder += 1
        }
    }

    private var ordered: [(key: [UInt8], value: [UInt8])] {
        entries.sorted { $0.value.order < $1.value.order }.map { ($0.key, $0.value.value) }
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .dictGet:
            let key = try call.arguments.bytesArgument()
            return .with { if let value = entries[key]?.value { $0.append(value) } }
        case .dictSet:
            let key = try call.arguments.bytesArgument()
            set(key, try call.arguments.bytesArgument())
            return .ok
        case .dictPop:
            let key = try call.arguments.bytesArgument()
            let removed = entries.removeValue(forKey: key)
            return .with { if let removed { $0.append(removed.value) } }
        case .dictContains:
            let key = try call.arguments.bytesArgument()
            return .with { $0.append(entries[key] != nil) }
        case .dictCount:
            return .with { $0.append(entries.count) }
        case .dictKeys:
            return .with { for entry in ordered { $0.append(entry.key) } }
        case .dictValues:
            return .with { for entry in ordered { $0.append(entry.value) } }
        case .dictItems:
            return .with { for entry in ordered { $0.append(entry.key); $0.append(entry.value) } }
        case .dictClear:
            entries.removeAll()
            return .ok
        case .dictPopItem:
            // Python's popitem(): the last inserted pair.
            guard let last = entries.max(by: { $0.value.order < $1.value.order }) else { throw .keyNotFound("popitem(): the dictionary is empty") }
            entries[last.key] = nil
            return .with { $0.append(last.key); $0.append(last.value.value) }
        case .dictUpdate:
            let pairs = try call.arguments.rest()
            var index = 0
            while index + 1 < pairs.count {
                set(pairs[index], pairs[index + 1])
                index += 2
            }
            return .ok
        case .dictSetDefault:
            let key = try call.arguments.bytesArgument()
            let value = try call.arguments.bytesArgument()
            if entries[key] == nil { set(key, value) }
            return .with { $0.append(entries[key]!.value) }
        case .dictReplace:
            // Compare-and-set: the client's read-modify-write (`modify`) is atomic.
            let key = try call.arguments.bytesArgument()
            let expectedPresent = try call.arguments.bool()
            let expected = try call.arguments.bytesArgument()
            let present = try call.arguments.bool()
            let new = try call.arguments.bytesArgument()
            let current = entries[key]?.value
            guard current == (expectedPresent ? expected : nil) else {
                return .with { $0.append(false); if let current { $0.append(current) } }
            }
            if present { set(key, new) } else { entries[key] = nil }
            return .with { $0.append(true) }
        default:
            return try super.handle(&call)
        }
    }
}

// MARK: - list and array

/// Python's `list`, and a manager's `Array` (the same, with a fixed length).
final class ListObject: ServerObject {
    private var items: [[UInt8]]

    init(kind: ManagedKind, typeTag: String, items: [[UInt8]]) {
        self.items = items
        super.init(kind: kind, typeTag: typeTag)
    }

    private func position(_ index: Int, inserting: Bool = false) throws(MP.Error) -> Int {
        let resolved = index < 0 ? items.count + index : index
        let limit = inserting ? items.count : items.count - 1
        guard resolved >= 0, resolved <= limit else { throw .indexOutOfRange(index: index, count: items.count) }
        return resolved
    }

    private func growable(_ op: ManagerOp) throws(MP.Error) {
        if kind == .array { throw .invalidUse("a manager Array has a fixed length (\(op) is a list's operation)") }
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .listAppend:
            try growable(call.op)
            items.append(try call.arguments.bytesArgument())
            return .ok
        case .listExtend:
            try growable(call.op)
            items.append(contentsOf: try call.arguments.rest())
            return .ok
        case .listInsert:
            try growable(call.op)
            let index = try call.arguments.int()
            let value = try call.arguments.bytesArgument()
            // Python's insert clamps the index to the list.
            let resolved = index < 0 ? max(0, items.count + index) : min(index, items.count)
            items.insert(value, at: resolved)
            return .ok
        case .listGet:
            let index = try position(try call.arguments.int())
            return .with { $0.append(items[index]) }
        case .listSet:
            let index = try position(try call.arguments.int())
            items[index] = try call.arguments.bytesArgument()
            return .ok
        case .listPop:
            try growable(call.op)
            let index = try position(try call.arguments.int())
            let removed = items.remove(at: index)
            return .with { $0.append(removed) }
        case .listCount:
            return .with { $0.append(items.count) }
        case .listAll:
            return .with { for item in items { $0.append(item) } }
        case .listClear:
            try growable(call.op)
            items.removeAll()
            return .ok
        case .listIndex:
            let value = try call.arguments.bytesArgument()
            guard let index = items.firstIndex(of: value) else { throw .valueNotFound }
            return .with { $0.append(index) }
        case .listRemove:
            try growable(call.op)
            let value = try call.arguments.bytesArgument()
            guard let index = items.firstIndex(of: value) else { throw .valueNotFound }
            items.remove(at: index)
            return .ok
        case .listReplace:
            let index = try position(try call.arguments.int())
            let expected = try call.arguments.bytesArgument()
            let new = try call.arguments.bytesArgument()
            guard items[index] == expected else { return .with { $0.append(false); $0.append(items[index]) } }
            items[index] = new
            return .with { $0.append(true) }
        default:
            return try super.handle(&call)
        }
    }
}

// MARK: - value

/// A manager's `Value`: one value, read and written whole.
final class ValueObject: ServerObject {
    private var value: [UInt8]

    init(typeTag: String, value: [UInt8]) {
        self.value = value
        super.init(kind: .value, typeTag: typeTag)
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .valueGet:
            return .with { $0.append(value) }
        case .valueSet:
            value = try call.arguments.bytesArgument()
            return .ok
        case .valueReplace:
            let expected = try call.arguments.bytesArgument()
            let new = try call.arguments.bytesArgument()
            guard value == expected else { return .with { $0.append(false); $0.append(value) } }
            value = new
            return .with { $0.append(true) }
        default:
            return try super.handle(&call)
        }
    }
}

// MARK: - queue

/// Python's `queue.Queue` behind a manager (and `JoinableQueue`'s counting).
final class QueueObject: ServerObject {
    private var items: [[UInt8]] = []
    private var head = 0
    private let maxSize: Int
    private var unfinished = 0

    init(kind: ManagedKind, typeTag: String, maxSize: Int) {
        self.maxSize = maxSize
        super.init(kind: kind, typeTag: typeTag)
    }

    private var count: Int { items.count - head }
    private var isFull: Bool { maxSize > 0 && count >= maxSize }

    private func takeFirst() -> [UInt8] {
        let item = items[head]
        items[head] = []
        head += 1
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    private func putBack(_ item: [UInt8]) {
        if head > 0 {
            head -= 1
            items[head] = item
        } else {
            items.insert(item, at: 0)
        }
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .queuePut:
            let item = try call.arguments.bytesArgument()
            guard try call.waitUntil({ !isFull }) else { throw .full }
            items.append(item)
            if kind == .joinableQueue { unfinished += 1 }
            call.waiter.changed()
            return .ok
        case .queueGet:
            guard try call.waitUntil({ count > 0 }) else { throw .empty }
            let item = takeFirst()
            call.waiter.changed()
            let waiter = call.waiter
            // Not delivered (the client died or cancelled): the item goes back first in line.
            return ServerReply(ServerReply.with { $0.append(item) }.message, undo: { [self] in
                putBack(item)
                waiter.changed()
            })
        case .queueSize:
            return .with { $0.append(count) }
        case .queueMaxSize:
            return .with { $0.append(maxSize) }
        case .queueTaskDone:
            guard kind == .joinableQueue else { throw .invalidUse("taskDone() belongs to a JoinableQueue") }
            guard unfinished > 0 else { throw .invalidUse("taskDone() called too many times") }
            unfinished -= 1
            if unfinished == 0 { call.waiter.changed() }
            return .ok
        case .queueJoin:
            guard kind == .joinableQueue else { throw .invalidUse("join() belongs to a JoinableQueue") }
            return .with { [result = try call.waitUntil({ unfinished == 0 })] in $0.append(result) }
        default:
            return try super.handle(&call)
        }
    }
}

// MARK: - event

/// Python's `threading.Event` behind a manager.
final class EventObject: ServerObject {
    private var flag = false

    init(typeTag: String) { super.init(kind: .event, typeTag: typeTag) }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .eventSet:
            flag = true
            call.waiter.changed()
            return .ok
        case .eventClear:
            flag = false
            return .ok
        case .eventIsSet:
            return .with { $0.append(flag) }
        case .eventWait:
            let result = try call.waitUntil({ flag })
            return .with { $0.append(result) }
        default:
            return try super.handle(&call)
        }
    }
}
