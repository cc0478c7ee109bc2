
/// What a task sends back: its encoded result, or its error's type and text.
@usableFromInline
enum TaskOutcome {
    case success([UInt8])
    case failure(PoolErrorKind, String, String)

    @usableFromInline
    enum PoolErrorKind: UInt8 { case task = 1, initializer = 2, result = 3 }

    /// Frame: [Int64 index][UInt8 kind (0 success)] then the bytes, or type 0 text.
    func frame(index: Int) -> [UInt8] {
        var bytes = [UInt8]()
        withUnsafeBytes(of: Int64(index).littleEndian) { bytes.append(contentsOf: $0) }
        switch self {
        case .success(let payload):
            bytes.append(0)
            bytes.append(contentsOf: payload)
        case .failure(let kind, let type, let text):
            bytes.append(kind.rawValue)
            bytes.append(contentsOf: type.utf8)
            bytes.append(0)
            bytes.append(contentsOf: text.utf8)
        }
        return bytes
    }

    /// Frames one outcome of each kind, once per process, in the parent: the
    /// first `append(contentsOf:)` of a buffer asks the runtime for an
    /// associated type, under its conformance lock. A worker asking first
    /// could find that lock held forever, copied at the fork from another
    /// parent thread (a worker of the fault tests hung so).
    /// A worker's send goes through the same kind of first-time runtime
    /// work (generic metadata for `sendBytes`): one frame is sent and read
    /// back through a pipe of this process too.
    static let warmUp: Void = {
        let frames = [TaskOutcome.success([1]).frame(index: 0), TaskOutcome.failure(.task, "T", "e").frame(index: 0)]
        guard let (reader, writer) = try? MP.Pipe(duplex: false) else { return }
        for frame in frames {
            try? writer.sendBytes(frame)
            _ = try? reader.poll(timeout: 0)
            _ = try? reader.recvBytes()
        }
        writer.close()
        reader.close()
    }()

    static func parse(_ frame: [UInt8]) -> (Int, TaskOutcome)? {
        guard frame.count >= 9 else { return nil }
        let index = Int(frame.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }.littleEndian)
        let body = frame[9...]
        guard frame[8] != 0, let kind = PoolErrorKind(rawValue: frame[8]) else { return (index, .success(Array(body))) }
        let zero = body.firstIndex(of: 0) ?? body.endIndex
        let type = String(decoding: body[..<zero], as: UTF8.self)
        let text = zero < body.endIndex ? String(decoding: body[body.index(after: zero)...], as: UTF8.self) : ""
        return (index, .failure(kind, type, text))
    }

    @usableFromInline
    static func encode<R: Encodable>(_ value: R) -> TaskOutcome {
        do { return .success(try WireFormat.encode(value)) } catch { return .failure(.result, "\(R.self)", "\(error)") }
    }

    @usableFromInline
    static func decode<R: Decodable>(_ type: R.Type, _ bytes: [UInt8]) -> Result<R, MP.Error> {
        Result { () throws(MP.Error) -> R in try WireFormat.decode(R.self, from: bytes) }.mapError { .result($0) }
    }

    var poolError: MP.Error? {
        guard case .failure(let kind, let type, let text) = self else { return nil }
        switch kind {
        case .task: return .taskFailed(type: type, description: text)
        case .initializer: return .initializerFailed(type: type, description: text)
        case .result: return .result(.encodingFailed(type: type, reason: text))
        }
    }
}


/// What a task that returns nothing sends back: no bytes at all.
@usableFromInline
struct NoResult: Codable, Sendable {
    @usableFromInline init() {}
}
