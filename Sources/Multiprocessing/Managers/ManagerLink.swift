import Glibc
import MultiprocessingPlatform
import Tracing

/// One process's connections to one manager, shared by every proxy of
/// that manager in the process.
///
/// A call takes an idle connection (or opens one: connect and CPython's
/// handshake), sends its request, reads the reply, and gives the
/// connection back. So a thread blocked in a queue's `get` holds up no
/// other thread, as with Python's per-thread proxy connections. A forked
/// child closes its copies of its parent's connections and opens its own
/// (it is a new client: its own session, its own locks).
final class ManagerLink: @unchecked Sendable {
    let address: MP.Address
    let authkey: [UInt8]
    let linkTimeout: Double?
    let maxMessageSize: Int
    private let lock = ForkSafeLock()
    private var idle: [ManagerChannel] = []
    /// Descriptors of connections in use (closed in a forked child).
    private var busy: Set<Int32> = []
    private var shutDown = false
    /// Describes how the manager's process ended, when this process started it.
    var exitDescription: (@Sendable () -> String?)?

    init(address: MP.Address, authkey: [UInt8], linkTimeout: Double?, maxMessageSize: Int = MP.Connection.defaultMaxMessageSize) {
        self.address = address
        self.authkey = authkey
        self.linkTimeout = linkTimeout
        self.maxMessageSize = maxMessageSize
    }

    // MARK: the process's links

    private static let registryLock = ForkSafeLock()
    nonisolated(unsafe) private static var links: [MP.Address: ManagerLink] = [:]
    private static let forkHandler: Void = {
        // Walks the collections once here, as the child will: the runtime then
        // has their metadata, which a child would otherwise build under a lock
        // another thread of the parent may have held at the fork.
        forgetConnectionsInChild(warmingUp: true)
        AfterFork.register { ManagerLink.forgetConnectionsInChild(warmingUp: false) }
    }()

    /// The link this process uses for the manager at `address`; the key
    /// given last wins (a proxy that crossed into a child brings its key).
    static func link(address: MP.Address, authkey: [UInt8], linkTimeout: Double?) -> ManagerLink {
        forkHandler
        return registryLock.withLock {
            if let existing = links[address], existing.authkey == authkey, existing.linkTimeout == linkTimeout,
               !existing.isShutDown {
                return existing
            }
            let link = ManagerLink(address: address, authkey: authkey, linkTimeout: linkTimeout)
            links[address] = link
            return link
        }
    }

    /// The link known for `address`, if this process has one.
    static func known(_ address: MP.Address) -> ManagerLink? {
        registryLock.withLock { links[address] }
    }

    private static func forgetConnectionsInChild(warmingUp: Bool) {
        for link in links.values {
            for channel in link.idle where !warmingUp { channel.abandon() }
            for fd in link.busy where !warmingUp { Sys.close(fd) }
            if warmingUp { continue }
            link.idle.removeAll()
            link.busy.removeAll()
        }
    }

    var isShutDown: Bool { lock.withLock { shutDown } }

    /// After the manager's shutdown: every later call fails with ``MP/Error/Code/closed``.
    func markShutDown() {
        let dropped = lock.withLock { () -> [ManagerChannel] in
            shutDown = true
            defer { idle.removeAll() }
            return idle
        }
        _ = dropped
    }

    // MARK: calls

    /// The keep-alive interval the server sends while a call waits: a third
    /// of the link timeout, so two may be lost before the client gives up.
    private var keepAliveMillis: UInt32 {
        guard let linkTimeout else { return 0 }
        return UInt32(clamping: max(1, Int(linkTimeout * 1000 / 3)))
    }

    /// Sends a request and returns the reply's arguments, or throws the
    /// server's fault, a lost connection, or a silent link.
    /// Inside a trace the call gets a client span, whose fields go with it.
    func call(_ op: ManagerOp, object: UInt64, blocking: Bool = true, timeout: Double? = nil,
              cancellation: CallCancellation? = nil,
              _ build: (inout ManagerMessage) throws(MP.Error) -> Void = { _ in }) throws(MP.Error) -> ManagerReader {
        guard let trace = TaskSpan.begin("manager \(op)", kind: .client) else {
            return try exchange(op, object: object, blocking: blocking, timeout: timeout, cancellation: cancellation, trace: nil, build)
        }
        do {
            let reply = try exchange(op, object: object, blocking: blocking, timeout: timeout, cancellation: cancellation,
                                     trace: trace, build)
            trace.end()
            return reply
        } catch {
            trace.end(error: error)
            throw error
        }
    }

    private func exchange(_ op: ManagerOp, object: UInt64, blocking: Bool, timeout: Double?, cancellation: CallCancellation?,
                          trace: TaskSpan?, _ build: (inout ManagerMessage) throws(MP.Error) -> Void) throws(MP.Error) -> ManagerReader {
        if let timeout, !(timeout >= 0) { throw .invalidArgument("timeout must be nil or at least 0 (got \(timeout))") }
        var message = ManagerMessage(op, object: object, session: ClientIdentity.session, thread: ClientIdentity.thread,
                                     blocking: blocking, timeoutSeconds: timeout, keepAliveMillis: keepAliveMillis)
        if let trace { message.trace(trace.encoded) }
        try build(&message)
        let frame = message.framed()
        guard frame.count - 4 <= maxMessageSize else {
            throw .invalidArgument("a request of \(frame.count - 4) bytes is over the manager's message limit (\(maxMessageSize) bytes)")
        }
        let channel = try takeChannel()
        if let cancellation, !cancellation.attach(channel) {
            giveBack(channel, reusable: true)
            throw .cancelled
        }
        var reusable = false
        defer {
            cancellation?.detach()
            giveBack(channel, reusable: reusable)
        }
        let reply: [UInt8]
        do {
            try channel.send(frame)
            while true {
                let received = try channel.receive(until: linkTimeout.flatMap { Deadline.after(validSeconds: $0) })
                guard received.first == ManagerWire.keepAlive else {
                    reply = received
                    break
                }
            }
        } catch {
            if cancellation?.isCancelled == true { throw .cancelled }
            throw failure(error)
        }
        guard reply.count >= 4 else { throw .wire(.malformed(type: "manager reply", reason: "\(reply.count) bytes")) }
        if reply[2] == ManagerWire.needsAcknowledgement {
            // Until this arrives the server can still put back what it took for
            // us; if it cannot be sent, the server will, so the value is not ours.
            var acknowledgement = ManagerMessage(.acknowledge, object: object, session: ClientIdentity.session,
                                                 thread: ClientIdentity.thread)
            do { try channel.send(acknowledgement.framed()) } catch { throw failure(error) }
        }
        reusable = true
        if reply[0] == ManagerWire.ok { return ManagerReader(reply, from: 4) }
        throw Self.fault(reply)
    }

    private func failure(_ error: ManagerChannel.Failure) -> MP.Error {
        switch error {
        case .closed:
            if isShutDown { return .shutDown }
            let how = exitDescription?() ?? nil
            return .disconnected("the manager at \(address) closed the connection" + (how.map { " (its process \($0))" } ?? ""))
        case .timeout: return .timeout(seconds: linkTimeout ?? 0)
        case .tooLarge(let size): return .wire(.malformed(type: "manager reply", reason: "a reply of \(size) bytes is over the limit"))
        case .system(let error): return .system(error)
        }
    }

    /// Decodes a fault reply into the error the server threw.
    static func fault(_ reply: [UInt8]) -> MP.Error {
        var reader = ManagerReader(reply, from: 4)
        guard ManagerWire.Fault(rawValue: reply[1]) == .error else { return .invalidUse("the manager sent an unknown fault \(reply[1])") }
        do {
            let code = try reader.string()
            let message = try reader.string()
            let errorType = try reader.string()
            return MP.Error(MP.Error.Code(code), message, errorType: errorType.isEmpty ? nil : errorType)
        } catch {
            return error
        }
    }

    // MARK: connections

    private func takeChannel() throws(MP.Error) -> ManagerChannel {
        let reused = try lock.withLock { () throws(MP.Error) -> ManagerChannel? in
            if shutDown { throw .shutDown }
            guard let channel = idle.popLast() else { return nil }
            busy.insert(channel.fd)
            return channel
        }
        if let reused { return reused }
        let channel = try connect()
        lock.withLock { _ = busy.insert(channel.fd) }
        return channel
    }

    private func giveBack(_ channel: ManagerChannel, reusable: Bool) {
        lock.withLock {
            busy.remove(channel.fd)
            if reusable && !shutDown && channel.fd >= 0 { idle.append(channel) }
        }
    }

    /// A new authenticated connection.
    func connect() throws(MP.Error) -> ManagerChannel {
        let fd: Int32
        do throws(Sys.AddressFailure) {
            fd = try address.connectedSocket(timeout: linkTimeout)
        } catch {
            switch error {
            case .system(let os) where os.errno == .timedOut: throw .timeout(seconds: linkTimeout ?? 0)
            case .system(let os):
                if isShutDown { throw .shutDown }
                let how = exitDescription?() ?? nil
                throw .disconnected("cannot connect to the manager at \(address): \(os)" + (how.map { " (its process \($0))" } ?? ""))
            case .unresolved(let why): throw .invalidArgument("\(address): \(why)")
            }
        }
        do {
            try Handshake.authenticate(fd, key: authkey, legacyDigest: false, timeout: linkTimeout ?? 10, side: .client)
        } catch {
            if error == .authentication(Handshake.peerClosed) {
                throw .disconnected("the manager at \(address) closed the connection during authentication")
            }
            switch error.code {
            case .authentication:
                let prefix = "authentication failed: "
                throw .managerAuthentication(error.message.hasPrefix(prefix) ? String(error.message.dropFirst(prefix.count)) : error.message)
            case .timeout: throw .timeout(seconds: linkTimeout ?? 10)
            default: throw .disconnected("the manager at \(address) ended the connection during authentication: \(error)")
            }
        }
        return ManagerChannel(fd: fd, maxMessageSize: maxMessageSize)
    }
}

/// Who is calling: the process's session (a random id, new in every
/// process, forked ones too) and the thread (lock ownership).
enum ClientIdentity {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var current: (pid: Int32, session: UInt64) = (0, 0)

    static var session: UInt64 {
        let pid = Sys.getpid
        return lock.withLock {
            if current.pid != pid { current = (pid, UInt64.random(in: 1 ... .max)) }
            return current.session
        }
    }

    static var thread: UInt64 { UInt64(UInt32(bitPattern: Sys.gettid)) }
}

/// Lets an async call's cancellation end the connection its thread waits on.
final class CallCancellation: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var channel: ManagerChannel?
    private(set) var isCancelled = false

    /// False when already cancelled.
    func attach(_ channel: ManagerChannel) -> Bool {
        lock.withLock {
            if isCancelled { return false }
            self.channel = channel
            return true
        }
    }

    func detach() { lock.withLock { channel = nil } }

    func cancel() {
        lock.withLock {
            isCancelled = true
            channel?.shutdown()
        }
    }
}
