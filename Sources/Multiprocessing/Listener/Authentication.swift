import Glibc
import Crypto
import MultiprocessingPlatform

/// CPython's connection handshake (`deliver_challenge`, `answer_challenge`
/// in `Lib/multiprocessing/connection.py`), byte for byte, on a socket
/// before it becomes a ``MP/Connection``.
///
/// CPython 3.12+ sends `#CHALLENGE#{sha256}` and 40 random bytes and answers
/// `{sha256}` followed by the HMAC of the whole challenge message; 3.11 and
/// older send 20 bytes with no prefix and answer a bare HMAC-MD5 (16
/// bytes). SHA-256 is what this side asks for; MD5 is accepted, in either
/// direction, only with `legacyDigest`.
///
/// Before it is authenticated a peer gets nothing: every message is read
/// exactly (never past the handshake), at most 256 bytes (a larger claimed
/// length is refused before anything is allocated), all within `deadline`.
struct Handshake {
    let fd: Int32
    let key: [UInt8]
    let legacyDigest: Bool
    let deadline: Deadline?

    static let challenge = Array("#CHALLENGE#".utf8)
    static let welcome = Array("#WELCOME#".utf8)
    static let failure = Array("#FAILURE#".utf8)
    /// CPython 3.12's challenge length (3.11 and older: 20).
    static let messageLength = 40
    static let legacyLengths = [20, 16]
    static let limit = 256
    /// How long a read spins on the socket before it sleeps in `poll`.
    static let spinNanoseconds: Int64 = 50_000

    enum Digest: String {
        case md5, sha256, sha384

        func mac(_ message: [UInt8], key: [UInt8]) -> [UInt8] {
            let key = SymmetricKey(data: key)
            switch self {
            case .md5: return Array(HMAC<Insecure.MD5>.authenticationCode(for: message, using: key))
            case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
            case .sha384: return Array(HMAC<SHA384>.authenticationCode(for: message, using: key))
            }
        }

        func verify(_ mac: [UInt8], _ message: [UInt8], key: [UInt8]) -> Bool {
            let key = SymmetricKey(data: key)
            switch self {
            case .md5: return HMAC<Insecure.MD5>.isValidAuthenticationCode(mac, authenticating: message, using: key)
            case .sha256: return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: message, using: key)
            case .sha384: return HMAC<SHA384>.isValidAuthenticationCode(mac, authenticating: message, using: key)
            }
        }
    }

    static let peerClosed = "the peer closed the connection during the handshake"

    static let legacyRefused = "the peer uses HMAC-MD5 without a digest prefix (CPython 3.11 or older); pass legacyDigest: true to accept it"

    /// CPython's `_get_digest_name_and_payload`: a 16- or 20-byte message is
    /// the legacy protocol (MD5); anything else must start `{name}`.
    func digestAndPayload(_ message: [UInt8]) throws(MP.Error) -> (Digest, [UInt8]) {
        if Self.legacyLengths.contains(message.count) {
            guard legacyDigest else { throw .authentication(Self.legacyRefused) }
            return (.md5, message)
        }
        if message.first == UInt8(ascii: "{"), let close = message.prefix(12).firstIndex(of: UInt8(ascii: "}")) {
            let name = String(decoding: message[1..<close], as: UTF8.self)
            guard let digest = Digest(rawValue: name) else {
                throw .authentication("the peer asks for the digest '\(name)', which this side does not support (sha256, sha384, and md5 with legacyDigest)")
            }
            if digest == .md5 && !legacyDigest { throw .authentication(Self.legacyRefused) }
            return (digest, Array(message[(close + 1)...]))
        }
        throw .authentication("unsupported message length (\(message.count) bytes), missing digest prefix, or unsupported digest")
    }

    enum Side { case listener, client }

    /// A connected socket as a CPython-framed ``MP/Connection``, authenticated
    /// first when there is a key; the socket is closed if that fails.
    static func authenticated(_ fd: Int32, key: [UInt8]?, legacyDigest: Bool, timeout: Double?, maxMessageSize: Int,
                              side: Side) throws(MP.Error) -> MP.Connection {
        try authenticate(fd, key: key, legacyDigest: legacyDigest, timeout: timeout, side: side)
        return MP.Connection(fd: fd, readable: true, writable: true, maxMessageSize: maxMessageSize, framing: .python)
    }

    /// Authenticates a connected socket when there is a key; closes it if that fails.
    static func authenticate(_ fd: Int32, key: [UInt8]?, legacyDigest: Bool, timeout: Double?, side: Side) throws(MP.Error) {
        if let key {
            let handshake = Handshake(fd: fd, key: key, legacyDigest: legacyDigest,
                                      deadline: timeout.flatMap { Deadline.after(validSeconds: $0) })
            do {
                switch side {
                case .listener: try handshake.listenerHandshake()
                case .client: try handshake.clientHandshake()
                }
            } catch {
                Sys.close(fd)
                throw error
            }
        }
    }

    /// CPython's `deliver_challenge`: sends a challenge and checks the answer.
    func deliverChallenge() throws(MP.Error) {
        let message = Self.newChallenge()
        try write([Self.challenge + message])
        try checkResponse(to: message)
    }

    /// CPython's `answer_challenge`: answers the peer's challenge and reads its verdict.
    func answerChallenge() throws(MP.Error) {
        try write([try response(to: try read())])
        guard try read() == Self.welcome else { throw .authentication("digest sent was rejected") }
    }

    /// The client's side: `answer_challenge`, then `deliver_challenge`, with
    /// this side's challenge sent together with its answer instead of after
    /// the peer's welcome. The bytes and their order are CPython's (a CPython
    /// listener reads the answer, sends its welcome, then finds the
    /// challenge waiting); one round trip fewer.
    func clientHandshake() throws(MP.Error) {
        let answer = try response(to: try read())
        let message = Self.newChallenge()
        try write([answer, Self.challenge + message])
        guard try read() == Self.welcome else { throw .authentication("digest sent was rejected") }
        try checkResponse(to: message)
    }

    /// The listener's side: `deliver_challenge`, then `answer_challenge`.
    func listenerHandshake() throws(MP.Error) {
        try deliverChallenge()
        try answerChallenge()
    }

    static func newChallenge() -> [UInt8] {
        Array("{sha256}".utf8) + Sys.randomBytes(messageLength)
    }

    /// Reads the peer's answer to `message`, and sends the verdict.
    private func checkResponse(to message: [UInt8]) throws(MP.Error) {
        let response = try read()
        let valid: Bool
        do {
            let (digest, mac) = try digestAndPayload(response)
            valid = digest.verify(mac, message, key: key)
        } catch {
            try? write([Self.failure])
            throw error
        }
        guard valid else {
            try? write([Self.failure])
            throw .authentication("digest received was wrong")
        }
        try write([Self.welcome])
    }

    /// Whether `response` is the right answer to `message` (thrown: a digest this side refuses).
    func isValid(_ response: [UInt8], to message: [UInt8]) throws(MP.Error) -> Bool {
        let (digest, mac) = try digestAndPayload(response)
        return digest.verify(mac, message, key: key)
    }

    /// CPython's `_create_response` for a challenge message.
    func response(to message: [UInt8]) throws(MP.Error) -> [UInt8] {
        guard message.starts(with: Self.challenge) else {
            throw .authentication("protocol error: expected a challenge, got \(message.count) bytes")
        }
        let payload = Array(message.dropFirst(Self.challenge.count))
        guard payload.count >= 20 else { throw .authentication("challenge too short: \(payload.count) bytes") }
        let (digest, _) = try digestAndPayload(payload)
        let mac = digest.mac(payload, key: key)
        return Self.legacyLengths.contains(payload.count) ? mac : Array("{\(digest.rawValue)}".utf8) + mac
    }

    // MARK: exact reads and writes on the raw socket

    /// One CPython frame of at most ``limit`` bytes.
    private func read() throws(MP.Error) -> [UInt8] {
        let header = try readExactly(4)
        var length = Int(Int32(bigEndian: header.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
        if length == -1 {
            let long = UInt64(bigEndian: try readExactly(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            length = long > UInt64(Int.max) ? Int.max : Int(long)
        }
        guard length >= 0, length <= Self.limit else {
            throw .authentication("the peer sent a message of \(length) bytes during the handshake (at most \(Self.limit) are read)")
        }
        return try readExactly(length)
    }

    private func readExactly(_ count: Int) throws(MP.Error) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        var spinUntil = Deadline.now + Self.spinNanoseconds
        while got < count {
            // The peer answers within microseconds when it runs on another
            // core: spinning that long costs less than sleeping and being
            // woken (two cross-CPU wake-ups per message on a VM).
            if Deadline.now >= spinUntil {
                let ready: Bool
                do { ready = try Sys.pollReadable(fd, until: deadline) } catch { throw .system(error) }
                guard ready else { throw .timeout }
                spinUntil = Deadline.now + Self.spinNanoseconds
            }
            let received: Sys.Received
            let fd = self.fd, offset = got
            let result = bytes.withUnsafeMutableBytes { raw in
                Result { () throws(MP.OSError) -> Sys.Received in
                    try Sys.receive(fd, into: raw.baseAddress! + offset, count: count - offset, blocking: false)
                }
            }
            switch result {
            case .success(let value): received = value
            case .failure(let error): throw .system(error)
            }
            switch received {
            case .bytes(let n): got += n
            case .wouldBlock: continue
            case .endOfFile: throw .authentication(Handshake.peerClosed)
            }
        }
        return bytes
    }

    /// Writes CPython frames, all in one `sendmsg`.
    func write(_ payloads: [[UInt8]]) throws(MP.Error) {
        var frame: [UInt8] = []
        for payload in payloads { frame += withUnsafeBytes(of: Int32(payload.count).bigEndian) { Array($0) } + payload }
        let fd = self.fd
        let result = frame.withUnsafeBytes { raw in Result { () throws(MP.OSError) in try Sys.sendAll(fd, raw) } }
        if case .failure(let error) = result {
            throw error.errno == .brokenPipe || error.errno == .connectionReset
                ? .authentication(Handshake.peerClosed) : .system(error)
        }
    }
}
