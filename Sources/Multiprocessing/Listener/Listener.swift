import Glibc
import _CMultiprocessingRuntime
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.connection.Listener`: accepts connections
    /// that a CPython process (3.8 to 3.14) or this library can make with
    /// `Client`, authenticated with CPython's own handshake.
    ///
    /// ```swift
    /// let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 6000), authkey: Array("secret".utf8))
    /// let connection = try listener.accept()          // conn = listener.accept()
    /// let bytes = try connection.recvBytes()          // conn.recv_bytes()
    /// try connection.sendBytes(Array("ok".utf8))      // conn.send_bytes(b'ok')
    /// ```
    ///
    /// The connections speak CPython's framing: ``MP/Connection/sendBytes(_:)``
    /// and ``MP/Connection/recvBytes(maxLength:)`` exchange exactly what
    /// CPython's `send_bytes`/`recv_bytes` do; `send` and `recv` carry
    /// `Codable` values in this library's
    /// wire format inside such frames (nothing received is ever unpickled or run).
    ///
    /// With an `authkey`, `accept` returns the next *authenticated*
    /// connection. Handshakes run concurrently, each bounded by
    /// `handshakeTimeout`, at most `maxPendingHandshakes` at a time: a peer
    /// that stays silent, sends garbage or claims a huge frame costs one
    /// descriptor and a few hundred bytes and holds up no other peer (CPython
    /// authenticates inline, so one silent peer blocks its `accept` for the
    /// whole timeout). A peer that fails (a wrong key, a refused digest, a
    /// timeout) is closed, counted in ``refusedHandshakes`` and logged;
    /// `accept` goes on to the next. SHA-256 is asked for; a CPython 3.11 peer
    /// (HMAC-MD5, the `python3` of many systems) is accepted only with
    /// `legacyDigest: true`.
    public final class Listener: @unchecked Sendable {
        /// Where it listens (a TCP port 0 is replaced by the port it got).
        public let address: Address
        private let lock = ForkSafeLock()
        private var fd: Int32
        private var accepted: Address?
        private let authkey: [UInt8]?
        private let legacyDigest: Bool
        private let handshakeTimeout: Double?
        private let maxMessageSize: Int
        private let maxPending: Int
        private let codec: Connection.Codec
        private let owner = Sys.getpid
        /// The handshakes under way, by descriptor, and the epoll set that
        /// watches them with the listening socket (made on first accept, anew
        /// in a forked child, which drops the parent's).
        private var pending: [Int32: PendingHandshake] = [:]
        private var ready: [(Connection, Address)] = []
        private var epfd: Int32 = -1
        /// In the epoll set: given at `close()`, so every waiter wakes (the
        /// listening socket's own hang-up can vanish from the set when it is closed).
        private var closing: Int32 = -1
        private var epollOwner: pid_t = 0
        /// Whether the listening socket is armed in the epoll set: not while
        /// `maxPendingHandshakes` are under way (it would be ready, and
        /// waking, for ever), again when one ends.
        private var listeningArmed = false
        private var refused = 0
        /// The epoll tokens of the listening socket and of `closing` (the others are descriptors).
        private static let listeningToken = UInt64.max
        private static let closingToken = UInt64.max - 1

        /// Python's `Listener(address, family, backlog, authkey)`.
        ///
        /// - Parameters:
        ///   - address: where to listen; nil: a new owner-only Unix socket file in `/tmp`.
        ///   - authkey: the shared secret; nil: no authentication (as in Python).
        ///   - backlog: connections the kernel queues before `accept`.
        ///   - legacyDigest: also accept HMAC-MD5, the only digest of CPython 3.11 and older.
        ///   - handshakeTimeout: seconds a connecting peer has to authenticate (nil: no limit).
        ///   - permissions: the Unix socket file's mode (default owner-only, `0o600`).
        ///   - maxMessageSize: the largest message the connections send or accept.
        ///   - maxPendingHandshakes: peers authenticated at once; more wait in the kernel's backlog.
        ///   - codec: how the accepted connections' `send`/`recv` encode values
        ///     (`.pickle` for CPython peers' `send(obj)`/`recv()`).
        public init(address: Address? = nil, authkey: [UInt8]? = nil, backlog: Int = 1, legacyDigest: Bool = false,
                    handshakeTimeout: Double? = 10, permissions: UInt32 = 0o600,
                    maxMessageSize: Int = Connection.defaultMaxMessageSize,
                    maxPendingHandshakes: Int = 1024, codec: Connection.Codec = .native) throws(MP.Error) {
            if let handshakeTimeout, !(handshakeTimeout >= 0) { throw .negativeTimeout(handshakeTimeout) }
            guard maxPendingHandshakes >= 1 else { throw .invalidArgument("maxPendingHandshakes must be at least 1, not \(maxPendingHandshakes)") }
            let address = address ?? .unix("/tmp/mp-listener-\(Sys.getpid)-\(UInt64.random(in: 0 ... .max)).sock")
            do throws(Sys.AddressFailure) {
                switch address {
                case .unix(let path):
                    fd = try Sys.listenUnix(path, abstract: false, backlog: max(1, backlog), mode: permissions)
                    self.address = address
                case .abstract(let name):
                    fd = try Sys.listenUnix(name, abstract: true, backlog: max(1, backlog), mode: permissions)
                    self.address = address
                case .tcp(let host, let port):
                    guard (0...65535).contains(port) else { throw Sys.AddressFailure.unresolved("port \(port) is outside 0...65535") }
                    let (socket, bound) = try Sys.listenTCP(host: host, port: port, backlog: max(1, backlog))
                    fd = socket
                    self.address = .tcp(host: host, port: bound)
                }
            } catch {
                switch error {
                case .system(let os): throw .system(os)
                case .unresolved(let why): throw .address("\(address): \(why)")
                }
            }
            do { try Sys.setNonBlocking(fd) } catch { Sys.close(fd); throw .system(error) }
            self.authkey = authkey
            self.legacyDigest = legacyDigest
            self.handshakeTimeout = handshakeTimeout
            self.maxMessageSize = maxMessageSize
            self.maxPending = maxPendingHandshakes
            self.codec = codec
        }

        deinit {
            close()
            if epollOwner == Sys.getpid {
                Sys.close(epfd)
                Sys.close(closing)
            }
        }

        /// `with Listener(...) as listener:`: closed afterwards, also when `body` throws.
        public static func with<T>(address: Address? = nil, authkey: [UInt8]? = nil, backlog: Int = 1, legacyDigest: Bool = false,
                                   _ body: (Listener) throws -> T) throws -> T {
            try Scoped.run(try Listener(address: address, authkey: authkey, backlog: backlog, legacyDigest: legacyDigest), body) { $0.close() }
        }

        /// Python's `last_accepted`: the peer of the last accepted connection
        /// (for TCP its host and port; for a Unix socket, the listener's address, as the peer has none).
        public var lastAccepted: Address? { lock.withLock { accepted } }

        /// Peers whose handshake failed (a wrong key, a refused digest, garbage, a timeout) since the listener was made.
        public var refusedHandshakes: Int { lock.withLock { refused } }

        /// Python's `close()`: stops listening, closes the handshakes under
        /// way, and removes the socket file; a thread or task waiting in
        /// `accept()` throws ``MP/Error/Code/closed``. Twice is harmless.
        public func close() {
            lock.withLock {
                guard fd >= 0 else { return }
                // Wakes every thread and task waiting in accept; they find it
                // closed. (The epoll set and `closing` stay open until deinit:
                // a waiter may be about to wait on them.)
                if epollOwner == Sys.getpid { Sys.giveEvent(closing) }
                Sys.close(fd)
                fd = -1
                dropHandshakes()
                if case .unix(let path) = address, Sys.getpid == owner { Sys.unlink(path) }
            }
        }

        /// Python's `accept()`: waits for the next authenticated connection.
        public func accept() throws(MP.Error) -> Connection {
            while true {
                let (watched, deadline) = try step()
                if let connection = watched.connection { return connection }
                do { _ = try Sys.pollReadable(watched.epfd, until: deadline) } catch { throw .system(error) }
            }
        }

        /// `try await listener.accept()`: waits without blocking a thread; the
        /// handshakes advance whenever a peer's bytes arrive.
        public func accept() async throws(MP.Error) -> Connection {
            while true {
                let (watched, deadline) = try step()
                if let connection = watched.connection { return connection }
                guard let deadline else {
                    try await FDWatcher.readable(watched.epfd, cancelled: MP.Error.cancelled, system: { .system($0) })
                    continue
                }
                // Readiness, or the first handshake's deadline (to close it).
                let epfd = watched.epfd
                let outcome: MP.Error? = await withTaskGroup(of: MP.Error?.self) { group in
                    group.addTask {
                        do throws(MP.Error) {
                            try await FDWatcher.readable(epfd, cancelled: MP.Error.cancelled, system: { .system($0) })
                        } catch {
                            return error
                        }
                        return nil
                    }
                    group.addTask {
                        let nanoseconds = max(0, deadline.nanoseconds - Deadline.now)
                        do { try await Task.sleep(nanoseconds: UInt64(nanoseconds)) } catch { return .cancelled }
                        return nil
                    }
                    let first = await group.next() ?? nil
                    group.cancelAll()
                    return first
                }
                if let outcome, outcome != .cancelled || Task.isCancelled { throw outcome }
            }
        }

        /// One round without waiting: accepts waiting peers (sending each its
        /// challenge), advances the handshakes whose peers sent something,
        /// closes those past their deadline. Returns an authenticated
        /// connection if one is ready, else what to wait on and until when.
        private func step() throws(MP.Error) -> (watched: (connection: Connection?, epfd: Int32), deadline: Deadline?) {
            try lock.withLock { () throws(MP.Error) -> (watched: (connection: Connection?, epfd: Int32), deadline: Deadline?) in
                guard fd >= 0 else { throw .connectionClosed }
                if epollOwner != Sys.getpid { try makeEpoll() }
                var tokens = [UInt64](repeating: 0, count: 64)
                let count: Int
                do throws(OSError) {
                    count = try tokens.withUnsafeMutableBufferPointer { (buffer) throws(OSError) -> Int in
                        try Sys.epollWait(epfd, tokens: buffer, timeoutMilliseconds: 0)
                    }
                } catch {
                    throw .system(error)
                }
                for token in tokens.prefix(count) {
                    if token == Self.listeningToken {
                        listeningArmed = false
                        try acceptWaiting()
                        armListening()
                    } else if token == Self.closingToken {
                        continue
                    } else {
                        advance(Int32(truncatingIfNeeded: token))
                    }
                }
                var earliest: Deadline?
                for (peer, handshake) in pending {
                    guard let deadline = handshake.deadline else { continue }
                    if deadline.hasPassed {
                        refuse(peer, handshake.peer, .timeout)
                    } else if earliest.map({ deadline < $0 }) ?? true {
                        earliest = deadline
                    }
                }
                if !ready.isEmpty {
                    let (connection, peer) = ready.removeFirst()
                    connection.codec = codec
                    accepted = peer
                    return ((connection, epfd), nil)
                }
                return ((nil, epfd), earliest)
            }
        }

        /// A new epoll set holding the listening socket (lock held). In a
        /// forked child the parent's handshakes are dropped: they are the parent's.
        private func makeEpoll() throws(MP.Error) {
            if epollOwner != 0 {
                for descriptor in pending.keys { Sys.close(descriptor) }
                pending = [:]
                ready = []
                Sys.close(epfd)
                Sys.close(closing)
            }
            do {
                epfd = try Sys.epollCreate()
                closing = try Sys.eventSemaphore()
                epollOwner = Sys.getpid
                listeningArmed = true
                try Sys.epollAddReadableOnce(epfd, fd, token: Self.listeningToken)
                try Sys.epollAddReadableOnce(epfd, closing, token: Self.closingToken)
            } catch {
                throw .system(error)
            }
        }

        /// Watches `descriptor` (in the set) for one more readiness. It cannot
        /// fail for a descriptor the set holds; if the kernel refuses
        /// (`ENOMEM`), the next `step()` finds its handshake past the deadline.
        private func rearm(_ descriptor: Int32, _ token: UInt64) {
            try? Sys.epollRearmReadableOnce(epfd, descriptor, token: token)
        }

        /// Watches the listening socket again if there is room for another handshake (lock held).
        private func armListening() {
            guard !listeningArmed, pending.count < maxPending, fd >= 0 else { return }
            listeningArmed = true
            rearm(fd, Self.listeningToken)
        }

        /// Accepts every waiting peer while there is room (lock held).
        private func acceptWaiting() throws(MP.Error) {
            while pending.count < maxPending {
                let taken: (Int32, peer: String)?
                do { taken = try Sys.accept(fd) } catch {
                    // Out of descriptors: the handshakes under way go on; the rest wait in the backlog.
                    if error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem { return }
                    throw .system(error)
                }
                guard let (socket, text) = taken else { return }
                let parts = text.split(separator: " ")
                let peer: Address = parts.count == 2 ? .tcp(host: String(parts[0]), port: Int(parts[1]) ?? 0) : address
                guard let authkey else {
                    ready.append((Connection(fd: socket, readable: true, writable: true, maxMessageSize: maxMessageSize, framing: .python), peer))
                    continue
                }
                do {
                    // The socket stays blocking for the connection; the
                    // handshake reads with MSG_DONTWAIT.
                    let handshake = try PendingHandshake(fd: socket, peer: peer, key: authkey, legacyDigest: legacyDigest, timeout: handshakeTimeout)
                    do { try Sys.epollAddReadableOnce(epfd, socket, token: UInt64(socket)) } catch { throw MP.Error.system(error) }
                    pending[socket] = handshake
                } catch let error as MP.Error {
                    refused += 1
                    Sys.close(socket)
                    LibraryLog.log(.info, "listener \(address): handshake with \(peer) refused: \(error)")
                } catch {
                    refused += 1
                    Sys.close(socket)
                }
            }
        }

        /// Advances the handshake on `descriptor` (lock held).
        private func advance(_ descriptor: Int32) {
            guard var handshake = pending[descriptor] else { return }
            switch handshake.advance() {
            case .waiting:
                pending[descriptor] = handshake
                rearm(descriptor, UInt64(descriptor))
            case .authenticated:
                pending[descriptor] = nil
                try? Sys.epollRemove(epfd, descriptor)
                armListening()
                ready.append((Connection(fd: descriptor, readable: true, writable: true, maxMessageSize: maxMessageSize, framing: .python), handshake.peer))
            case .failed(let error):
                refuse(descriptor, handshake.peer, error)
            }
        }

        private func refuse(_ descriptor: Int32, _ peer: Address, _ error: MP.Error) {
            pending[descriptor] = nil
            try? Sys.epollRemove(epfd, descriptor)
            Sys.close(descriptor)
            armListening()
            refused += 1
            LibraryLog.log(.info, "listener \(address): handshake with \(peer) refused: \(error)")
        }

        /// Closes every handshake under way and the epoll set (lock held).
        private func dropHandshakes() {
            guard epollOwner == Sys.getpid else { return }
            for descriptor in pending.keys { Sys.close(descriptor) }
            pending = [:]
            for (connection, _) in ready { connection.close() }
            ready = []
        }

        /// The next connection's socket, not yet authenticated, or nil when
        /// none came by `deadline` (a server authenticates each connection on
        /// its own thread, so a slow peer holds up no other).
        func acceptSocket(until deadline: Deadline?) throws(MP.Error) -> (Int32, Address)? {
            let listening = try listeningDescriptor()
            do {
                guard try Sys.pollReadable(listening, until: deadline) else { return nil }
                guard let (socket, peer) = try Sys.accept(listening) else { return nil }
                let parts = peer.split(separator: " ")
                return (socket, parts.count == 2 ? .tcp(host: String(parts[0]), port: Int(parts[1]) ?? 0) : address)
            } catch {
                throw .system(error)
            }
        }

        var authenticationKey: [UInt8]? { authkey }

        /// Wakes a thread waiting in ``acceptSocket(until:)`` (a server that stops).
        func wakeAcceptors() {
            lock.withLock { if fd >= 0 { Sys.shutdownBoth(fd) } }
        }

        private func listeningDescriptor() throws(MP.Error) -> Int32 {
            let fd = lock.withLock { self.fd }
            guard fd >= 0 else { throw .connectionClosed }
            return fd
        }
    }

    /// Python's `multiprocessing.connection.Client(address, authkey)`: a
    /// connection to a ``MP/Listener`` (of this library or of CPython),
    /// authenticated with CPython's handshake when `authkey` is given.
    ///
    /// - Parameters:
    ///   - address: the listener's address.
    ///   - authkey: the shared secret; nil: no authentication.
    ///   - legacyDigest: also accept HMAC-MD5, the only digest of CPython 3.11 and older.
    ///   - handshakeTimeout: seconds the listener has to authenticate (nil: no limit).
    ///   - maxMessageSize: the largest message the connection sends or accepts.
    ///   - codec: how `send`/`recv` encode values (`.pickle` for a CPython peer's `send(obj)`/`recv()`).
    /// - Throws: ``MP/Error/Code/authentication`` (a wrong key, a
    ///   refused digest), ``MP/Error/Code/timeout``, ``MP/Error/Code/address``,
    ///   ``MP/Error/Code/system`` (`connect` refused, ...).
    public static func Client(address: Address, authkey: [UInt8]? = nil, legacyDigest: Bool = false, handshakeTimeout: Double? = 10,
                              maxMessageSize: Int = Connection.defaultMaxMessageSize,
                              codec: Connection.Codec = .native) throws(MP.Error) -> Connection {
        if let handshakeTimeout, !(handshakeTimeout >= 0) { throw .negativeTimeout(handshakeTimeout) }
        let fd: Int32
        do throws(Sys.AddressFailure) {
            fd = try address.connectedSocket()
        } catch {
            switch error {
            case .system(let os): throw .system(os)
            case .unresolved(let why): throw .address("\(address): \(why)")
            }
        }
        let connection = try Handshake.authenticated(fd, key: authkey, legacyDigest: legacyDigest, timeout: handshakeTimeout,
                                                     maxMessageSize: maxMessageSize, side: .client)
        connection.codec = codec
        return connection
    }
}
