#if canImport(Glibc)
import Glibc
#endif

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
    /// With an `authkey`, each accepted connection is authenticated before
    /// `accept` returns it (``MP/ConnectionError/authentication(_:)`` on a
    /// wrong key, which closes that connection; the listener goes on). SHA-256
    /// is asked for; a CPython 3.11 peer (HMAC-MD5, the `python3` of many
    /// systems) is accepted only with `legacyDigest: true`.
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
        private let owner = Sys.getpid

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
        public init(address: Address? = nil, authkey: [UInt8]? = nil, backlog: Int = 1, legacyDigest: Bool = false,
                    handshakeTimeout: Double? = 10, permissions: UInt32 = 0o600,
                    maxMessageSize: Int = Connection.defaultMaxMessageSize) throws(ConnectionError) {
            if let handshakeTimeout, !(handshakeTimeout >= 0) { throw .negativeTimeout(handshakeTimeout) }
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
        }

        deinit { close() }

        /// `with Listener(...) as listener:`: closed afterwards, also when `body` throws.
        public static func with<T>(address: Address? = nil, authkey: [UInt8]? = nil, backlog: Int = 1, legacyDigest: Bool = false,
                                   _ body: (Listener) throws -> T) throws -> T {
            let listener = try Listener(address: address, authkey: authkey, backlog: backlog, legacyDigest: legacyDigest)
            defer { listener.close() }
            return try body(listener)
        }

        /// Python's `last_accepted`: the peer of the last accepted connection
        /// (for TCP its host and port; for a Unix socket, the listener's address, as the peer has none).
        public var lastAccepted: Address? { lock.withLock { accepted } }

        /// Python's `close()`: stops listening and removes the socket file. Twice is harmless.
        public func close() {
            lock.withLock {
                guard fd >= 0 else { return }
                Sys.close(fd)
                fd = -1
                if case .unix(let path) = address, Sys.getpid == owner { Sys.unlink(path) }
            }
        }

        /// Python's `accept()`: waits for a connection and authenticates it.
        public func accept() throws(ConnectionError) -> Connection {
            while true {
                let listening = try listeningDescriptor()
                do {
                    _ = try Sys.pollReadable(listening, until: nil)
                } catch {
                    throw .system(error)
                }
                if let connection = try acceptReady() { return connection }
            }
        }

        /// `try await listener.accept()`: waits without blocking a thread (the
        /// handshake itself, bounded by `handshakeTimeout`, runs on the caller).
        public func accept() async throws(ConnectionError) -> Connection {
            while true {
                let listening = try listeningDescriptor()
                try await FDWatcher.readable(listening, cancelled: ConnectionError.cancelled, system: { .system($0) })
                if let connection = try acceptReady() { return connection }
            }
        }

        /// The next connection's socket, not yet authenticated, or nil when
        /// none came by `deadline` (a server authenticates each connection on
        /// its own thread, so a slow peer holds up no other).
        func acceptSocket(until deadline: Deadline?) throws(ConnectionError) -> (Int32, Address)? {
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

        private func listeningDescriptor() throws(ConnectionError) -> Int32 {
            let fd = lock.withLock { self.fd }
            guard fd >= 0 else { throw .closed }
            return fd
        }

        /// Accepts a waiting connection, if one is, and authenticates it.
        private func acceptReady() throws(ConnectionError) -> Connection? {
            let listening = try listeningDescriptor()
            let taken: (Int32, peer: String)?
            do { taken = try Sys.accept(listening) } catch { throw .system(error) }
            guard let (socket, peer) = taken else { return nil }
            let parts = peer.split(separator: " ")
            let peerAddress: Address = parts.count == 2 ? .tcp(host: String(parts[0]), port: Int(parts[1]) ?? 0) : address
            let connection = try Handshake.authenticated(socket, key: authkey, legacyDigest: legacyDigest, timeout: handshakeTimeout,
                                                         maxMessageSize: maxMessageSize, side: .listener)
            lock.withLock { accepted = peerAddress }
            return connection
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
    /// - Throws: ``MP/ConnectionError/authentication(_:)`` (a wrong key, a
    ///   refused digest), ``MP/ConnectionError/timeout``, ``MP/ConnectionError/address(_:)``,
    ///   ``MP/ConnectionError/system(_:)`` (`connect` refused, ...).
    public static func Client(address: Address, authkey: [UInt8]? = nil, legacyDigest: Bool = false, handshakeTimeout: Double? = 10,
                              maxMessageSize: Int = Connection.defaultMaxMessageSize) throws(ConnectionError) -> Connection {
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
        return try Handshake.authenticated(fd, key: authkey, legacyDigest: legacyDigest, timeout: handshakeTimeout,
                                           maxMessageSize: maxMessageSize, side: .client)
    }
}
