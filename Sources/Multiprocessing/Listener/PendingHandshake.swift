import Glibc
import MultiprocessingPlatform

/// The listener's side of CPython's handshake (`deliver_challenge`, then
/// `answer_challenge`) for one accepted peer, driven without blocking: it
/// advances when the peer's socket is readable, so a peer that stays silent
/// or sends slowly holds up no other (``MP/Listener`` runs many at once).
///
/// What a peer that has not authenticated costs: its descriptor, this
/// value, and a buffer of at most one handshake frame (`Handshake.limit`
/// bytes). Each read takes only the bytes of the frame it is in, never the
/// application's first message behind the handshake.
struct PendingHandshake {
    enum Stage {
        /// Our challenge is sent; the peer's answer to it is awaited.
        case answer(challenge: [UInt8])
        /// Our welcome is sent; the peer's own challenge is awaited.
        case challenge
        /// Our answer is sent; the peer's verdict is awaited.
        case verdict
    }

    enum Step {
        case waiting
        case authenticated
        case failed(MP.Error)
    }

    let fd: Int32
    let peer: MP.Address
    let deadline: Deadline?
    private let handshake: Handshake
    private var stage: Stage
    private var header: [UInt8] = []
    private var body: [UInt8] = []
    private var length: Int?

    /// Sends the challenge to a newly accepted peer.
    init(fd: Int32, peer: MP.Address, key: [UInt8], legacyDigest: Bool, timeout: Double?) throws(MP.Error) {
        self.fd = fd
        self.peer = peer
        deadline = timeout.flatMap { Deadline.after(validSeconds: $0) }
        handshake = Handshake(fd: fd, key: key, legacyDigest: legacyDigest, deadline: deadline)
        let message = Handshake.newChallenge()
        stage = .answer(challenge: message)
        // A few hundred bytes into a new socket's empty buffer: never blocks.
        try handshake.write([Handshake.challenge + message])
    }

    /// Reads what the peer sent and acts on every whole frame.
    mutating func advance() -> Step {
        do {
            while let frame = try readFrame() {
                switch stage {
                case .answer(let challenge):
                    let valid: Bool
                    do {
                        valid = try handshake.isValid(frame, to: challenge)
                    } catch {
                        try? handshake.write([Handshake.failure])
                        throw error
                    }
                    guard valid else {
                        try? handshake.write([Handshake.failure])
                        throw MP.Error.authentication("digest received was wrong")
                    }
                    try handshake.write([Handshake.welcome])
                    stage = .challenge
                case .challenge:
                    try handshake.write([try handshake.response(to: frame)])
                    stage = .verdict
                case .verdict:
                    guard frame == Handshake.welcome else { throw MP.Error.authentication("digest sent was rejected") }
                    return .authenticated
                }
            }
            return .waiting
        } catch let error as MP.Error {
            return .failed(error)
        } catch {
            return .failed(.authentication("\(error)"))
        }
    }

    /// The next whole frame, or nil when the socket has nothing more now.
    private mutating func readFrame() throws(MP.Error) -> [UInt8]? {
        while true {
            let wanted: Int
            if let length {
                wanted = length - body.count
                if wanted == 0 {
                    defer { header = []; body = []; self.length = nil }
                    return body
                }
            } else if header.count < 4 || (header.count >= 4 && header.prefix(4) == [0xff, 0xff, 0xff, 0xff]) {
                wanted = (header.count < 4 ? 4 : 12) - header.count
            } else {
                wanted = 0
            }
            if wanted == 0 && length == nil {
                var claimed = Int(Int32(bigEndian: header.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
                if claimed == -1 {
                    let long = UInt64(bigEndian: header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt64.self) })
                    claimed = long > UInt64(Handshake.limit) ? Int.max : Int(long)
                }
                guard claimed >= 0, claimed <= Handshake.limit else {
                    throw .authentication("the peer sent a message of \(claimed) bytes during the handshake (at most \(Handshake.limit) are read)")
                }
                length = claimed
                continue
            }
            var chunk = [UInt8](repeating: 0, count: wanted)
            let fd = self.fd
            let result = chunk.withUnsafeMutableBytes { raw in
                Result { () throws(MP.OSError) -> Sys.Received in try Sys.receive(fd, into: raw.baseAddress!, count: wanted, blocking: false) }
            }
            let received: Sys.Received
            switch result {
            case .success(let value): received = value
            case .failure(let error): throw .system(error)
            }
            switch received {
            case .bytes(let n):
                if length == nil { header += chunk[..<n] } else { body += chunk[..<n] }
            case .wouldBlock: return nil
            case .endOfFile: throw .authentication(Handshake.peerClosed)
            }
        }
    }
}
