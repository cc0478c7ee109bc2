import Glibc
import MultiprocessingPlatform
import Tracing

/// A manager's server (Python's `multiprocessing.managers.Server`): holds
/// the shared objects and serves each authenticated connection on its own
/// thread, as CPython's does, so a call that waits (a queue's `get`, a
/// lock's `acquire`) holds up no other client.
///
/// One lock guards every object, so each call is atomic; waiting calls
/// sleep on its condition and recheck after every change. A waiting call
/// sends a keep-alive at the interval its client asked for (so the client
/// tells a long wait from a cut link) and notices its client's departure:
/// what it would have taken goes back (``ServerReply/undo``).
final class ManagerServer: @unchecked Sendable {
    let lock = ForkSafeLock()
    private var objects: [UInt64: ServerObject] = [:]
    private var names: [String: UInt64] = [:]
    private var nextId: UInt64 = 1
    /// Open connections per client process (its session).
    private var sessions: [UInt64: Int] = [:]
    private var connections: Set<Int32> = []
    private(set) var shuttingDown = false
    private let listener: MP.Listener
    private let maxMessageSize: Int
    private let handshakeTimeout: Double
    /// The tracer in effect where the server was made (bootstrapped, or a
    /// `withTracer` scope): its connection threads run outside that scope.
    private let tracer = InstrumentationSystem.tracer

    init(listener: MP.Listener, maxMessageSize: Int = MP.Connection.defaultMaxMessageSize, handshakeTimeout: Double = 10) {
        self.listener = listener
        self.maxMessageSize = maxMessageSize
        self.handshakeTimeout = handshakeTimeout
    }

    /// Accepts and serves connections until a client asks for shutdown (or
    /// ``stop()``); then closes the listener (removing its socket file) and
    /// ends every connection.
    func serveForever() {
        while !lock.withLock({ shuttingDown }) {
            let accepted: (Int32, MP.Address)?
            do {
                accepted = try listener.acceptSocket(until: nil)
            } catch {
                if lock.withLock({ shuttingDown }) { break }
                LibraryLog.log(.error, "manager: accept failed: \(error)")
                Sys.sleep(microseconds: 50_000) // a full descriptor table: let connections end
                continue
            }
            guard let (socket, _) = accepted else { continue }
            let started = startThread { [self] in serve(socket) }
            if case .failure(let error) = started {
                LibraryLog.log(.error, "manager: no thread for a connection: \(error)")
                Sys.close(socket)
            }
        }
        listener.close()
        lock.withLock {
            for fd in connections { Sys.shutdownBoth(fd) }
        }
    }

    /// Stops serving (a local shutdown).
    func stop() {
        lock.withLock {
            shuttingDown = true
            lock.broadcast()
        }
        listener.wakeAcceptors()
    }

    // MARK: one connection

    private func serve(_ socket: Int32) {
        do {
            try Handshake.authenticate(socket, key: listener.authenticationKey, legacyDigest: false, timeout: handshakeTimeout,
                                       side: .listener)
        } catch {
            LibraryLog.log(.warning, "manager: a connection was refused: \(error)")
            return // closed by the handshake
        }
        let connection = ServerConnection(server: self, channel: ManagerChannel(fd: socket, maxMessageSize: maxMessageSize))
        let registered = lock.withLock { () -> Bool in
            guard !shuttingDown else { return false }
            connections.insert(socket)
            return true
        }
        guard registered else { return }
        var session: UInt64?
        defer {
            lock.withLock {
                connections.remove(socket)
                if let session { endConnection(of: session) }
            }
        }
        while true {
            let request: [UInt8]
            do {
                request = try connection.channel.receive(until: nil, spinNanoseconds: 50_000)
            } catch {
                return // the client closed, or the server is shutting down
            }
            guard request.count >= ManagerWire.headerSize, let op = ManagerOp(rawValue: request[0]) else {
                LibraryLog.log(.warning, "manager: a malformed request (\(request.count) bytes); closing that connection")
                return
            }
            var reader = ManagerReader(request, from: ManagerWire.headerSize)
            let flags = request[1]
            var trace: TaskSpan?
            if flags & ManagerWire.tracedFlag != 0 {
                // The caller's span: this call is served in a child of it.
                guard let fields = try? reader.bytesArgument(), let headers = TaskSpan.decode(fields) else {
                    LibraryLog.log(.warning, "manager: a traced request without trace fields; closing that connection")
                    return
                }
                trace = TaskSpan.begin("manager \(op)", kind: .server, in: headers.context(using: tracer), tracer: tracer)
            }
            let callSession = reader.integer(at: 16, as: UInt64.self)
            if session == nil {
                session = callSession
                lock.withLock { sessions[callSession, default: 0] += 1 }
            }
            var deadline: Deadline?
            if flags & ManagerWire.timeoutFlag != 0 {
                let nanoseconds = reader.integer(at: 32, as: Int64.self)
                deadline = nanoseconds == .max ? nil : Deadline.after(validSeconds: Double(nanoseconds) / 1e9)
            }
            connection.keepAliveNanoseconds = Int64(reader.integer(at: 4, as: UInt32.self)) * 1_000_000
            let call = ServerCall(op: op, object: reader.integer(at: 8, as: UInt64.self),
                                  owner: LockOwner(session: session!, thread: reader.integer(at: 24, as: UInt64.self)),
                                  blocking: flags & ManagerWire.blockingFlag != 0, deadline: deadline, arguments: reader,
                                  waiter: connection)
            if op == .acknowledge { continue } // a late one: nothing to forget
            let reply = trace.map { trace in
                ServiceContext.withValue(trace.context) { lock.withLock { dispatch(call) } }
            } ?? lock.withLock { dispatch(call) }
            if let trace {
                let bytes = reply.message.bytes
                trace.end(error: bytes.count > 4 && bytes[4] == ManagerWire.fault ? ManagerLink.fault(Swift.Array(bytes[4...])) : nil)
            }
            var message = reply.message
            if reply.undo != nil { message.requireAcknowledgement() }
            // What the call took is committed only when the client says it has
            // the reply: a client that dies with the reply unread (or in its
            // socket buffer) leaves the item in the queue, the lock free.
            var delivered = (try? connection.channel.send(message.framed())) != nil
            if delivered && reply.undo != nil {
                delivered = (try? connection.channel.receive(until: nil, spinNanoseconds: 50_000))
                    .map { $0.first == ManagerOp.acknowledge.rawValue } ?? false
            }
            if !delivered {
                if let undo = reply.undo {
                    lock.withLock {
                        undo()
                        lock.broadcast()
                    }
                }
                return
            }
            if op == .shutdown {
                stop()
                return
            }
        }
    }

    /// With the lock held: one connection of `session` ended; when it was the
    /// last, the locks its threads held are released.
    private func endConnection(of session: UInt64) {
        let left = (sessions[session] ?? 1) - 1
        if left > 0 {
            sessions[session] = left
            return
        }
        sessions[session] = nil
        var released = 0
        for object in objects.values where object.sessionEnded(session) { released += 1 }
        if released > 0 {
            LibraryLog.log(.info, "manager: released \(released) lock(s) held by a client that is gone")
            lock.broadcast()
        }
    }

    // MARK: calls

    /// With the lock held: runs one call.
    private func dispatch(_ call: ServerCall) -> ServerReply {
        var call = call
        do {
            if shuttingDown && call.op != .shutdown { throw MP.Error.shutDown }
            switch call.op {
            case .ping, .shutdown:
                return .ok
            case .create:
                return try create(&call)
            case .lookup:
                let name = try call.arguments.string()
                guard let id = names[name], let object = objects[id] else { throw MP.Error.keyNotFound(name) }
                return .with { $0.append(Int(id)); $0.append(Int(object.kind.rawValue)); $0.append(object.typeTag) }
            default:
                guard let object = objects[call.object] else {
                    throw MP.Error.invalidUse("this manager holds no object \(call.object) (was it restarted?)")
                }
                return try object.handle(&call)
            }
        } catch {
            return ServerReply(Self.fault(error))
        }
    }

    private func create(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        guard let kind = ManagedKind(rawValue: UInt8(truncatingIfNeeded: try call.arguments.int())) else {
            throw .invalidArgument("an unknown kind of managed object")
        }
        let typeTag = try call.arguments.string()
        let name = try call.arguments.string()
        if !name.isEmpty, let id = names[name], let existing = objects[id] {
            guard existing.kind == kind, existing.typeTag == typeTag else {
                throw .typeMismatch("the manager's object '\(name)' is a \(existing.kind.pythonName) of \(existing.typeTag), not a \(kind.pythonName) of \(typeTag)")
            }
            return .with { $0.append(Int(id)) }
        }
        let object: ServerObject
        switch kind {
        case .dict, .namespace:
            object = DictObject(kind: kind, typeTag: typeTag, pairs: try call.arguments.rest())
        case .list, .array:
            object = ListObject(kind: kind, typeTag: typeTag, items: try call.arguments.rest())
        case .value:
            object = ValueObject(typeTag: typeTag, value: try call.arguments.bytesArgument())
        case .queue, .joinableQueue:
            object = QueueObject(kind: kind, typeTag: typeTag, maxSize: try call.arguments.int())
        case .lock, .rlock:
            object = LockObject(kind: kind, typeTag: typeTag)
        case .semaphore, .boundedSemaphore:
            let value = try call.arguments.int()
            guard value >= 0 else { throw .invalidArgument("a semaphore's initial value must be at least 0 (got \(value))") }
            object = SemaphoreObject(kind: kind, typeTag: typeTag, value: value)
        case .condition:
            let lockId = UInt64(try call.arguments.int())
            let lock: LockObject
            if lockId == 0 {
                lock = LockObject(kind: .rlock, typeTag: "")
            } else {
                guard let given = objects[lockId] as? LockObject else {
                    throw .invalidArgument("a Condition's lock must be a Lock or RLock of the same manager")
                }
                lock = given
            }
            object = ConditionObject(typeTag: typeTag, lock: lock)
        case .event:
            object = EventObject(typeTag: typeTag)
        case .barrier:
            let parties = try call.arguments.int()
            guard parties >= 1 else { throw .invalidArgument("a Barrier needs at least 1 party (got \(parties))") }
            object = BarrierObject(typeTag: typeTag, parties: parties)
        case .object:
            let type = try ManagedObjectRegistry.shared.managedObject(named: typeTag)
            object = try makeManagedBox(type, from: try call.arguments.bytesArgument())
        }
        let id = nextId
        nextId += 1
        objects[id] = object
        if !name.isEmpty { names[name] = id }
        return .with { $0.append(Int(id)) }
    }

    /// A fault reply carrying `error` (any error a managed object's method
    /// threw becomes ``MP/Error/Code/taskFailed`` with its type's name).
    static func fault(_ error: any Swift.Error) -> ManagerMessage {
        let failure = error as? MP.Error ?? .remote(type: String(reflecting: type(of: error)), description: "\(error)")
        var message = ManagerMessage(status: ManagerWire.fault, code: ManagerWire.Fault.error.rawValue)
        message.append(failure.code.name)
        message.append(failure.message)
        message.append(failure.errorType ?? "")
        return message
    }
}

/// One connection's side of the waits its calls make.
final class ServerConnection: ServerWaiter {
    unowned let server: ManagerServer
    let channel: ManagerChannel
    /// The keep-alive interval the current call's client asked for (0: none).
    var keepAliveNanoseconds: Int64 = 0
    /// How often a waiting call checks that its client is still there.
    static let presenceCheckNanoseconds: Int64 = 500_000_000

    init(server: ManagerServer, channel: ManagerChannel) {
        self.server = server
        self.channel = channel
    }

    func wait(_ call: ServerCall, until ready: () -> Bool) -> WaitOutcome {
        let lock = server.lock
        var lastSign = Deadline.now
        while !ready() {
            if server.shuttingDown { return .shutDown }
            if let deadline = call.deadline, deadline.hasPassed { return .timedOut }
            let interval = keepAliveNanoseconds > 0 ? min(keepAliveNanoseconds, Self.presenceCheckNanoseconds) : Self.presenceCheckNanoseconds
            let now = Deadline.now
            if now - lastSign >= interval {
                lastSign = now
                lock.unlock()
                var gone = channel.peerHungUp
                if !gone && keepAliveNanoseconds > 0 {
                    var message = ManagerMessage(status: ManagerWire.keepAlive)
                    gone = (try? channel.send(message.framed())) == nil
                }
                lock.lock()
                if gone { return .clientGone }
                continue
            }
            var wake = Deadline(nanoseconds: lastSign + interval)
            if let deadline = call.deadline, deadline < wake { wake = deadline }
            lock.wait(until: wake)
        }
        return .ready
    }

    func changed() { server.lock.broadcast() }
}
