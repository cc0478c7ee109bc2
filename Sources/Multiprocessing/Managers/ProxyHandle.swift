import MultiprocessingPlatform
/// What every proxy holds: its manager's link and its object's id.
///
/// A proxy is `Codable`, so it crosses into a child as a named task's
/// argument, travels through a queue, or goes to a pool's worker, as a
/// Python proxy pickles. The key travels only into a child being started
/// (the descriptor table of a start is present); anywhere else the receiver
/// uses the key it already has for that address (its own ``MP/Manager``, a
/// proxy it received) or its process's ``MP/Process/authkey``, which every
/// child of the program inherits.
struct ProxyHandle: Sendable, Codable, Hashable {
    let link: ManagerLink
    let id: UInt64
    let kind: ManagedKind

    init(link: ManagerLink, id: UInt64, kind: ManagedKind) {
        self.link = link
        self.id = id
        self.kind = kind
    }

    private enum CodingKeys: String, CodingKey { case address, id, kind, authkey, linkTimeout }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(link.address, forKey: .address)
        try container.encode(id, forKey: .id)
        try container.encode(kind.rawValue, forKey: .kind)
        try container.encodeIfPresent(link.linkTimeout, forKey: .linkTimeout)
        // Always written (present or not): the wire format's keyed containers are positional.
        try container.encodeIfPresent(encoder.userInfo[.descriptorTable] != nil ? link.authkey : nil, forKey: .authkey)
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let address = try container.decode(MP.Address.self, forKey: .address)
        id = try container.decode(UInt64.self, forKey: .id)
        guard let kind = ManagedKind(rawValue: try container.decode(UInt8.self, forKey: .kind)) else {
            throw MP.Error.malformed(type: "a manager proxy", reason: "unknown kind")
        }
        self.kind = kind
        let linkTimeout = try container.decodeIfPresent(Double.self, forKey: .linkTimeout)
        if let key = try container.decodeIfPresent([UInt8].self, forKey: .authkey) {
            link = ManagerLink.link(address: address, authkey: key, linkTimeout: linkTimeout)
        } else if let known = ManagerLink.known(address) {
            link = known
        } else {
            link = ManagerLink.link(address: address, authkey: ProcessAuthKey.current, linkTimeout: linkTimeout)
        }
    }

    static func == (a: ProxyHandle, b: ProxyHandle) -> Bool { a.link.address == b.link.address && a.id == b.id }
    func hash(into hasher: inout Hasher) {
        hasher.combine(link.address)
        hasher.combine(id)
    }

    @discardableResult
    func call(_ op: ManagerOp, blocking: Bool = true, timeout: Double? = nil, cancellation: CallCancellation? = nil,
              _ build: (inout ManagerMessage) throws(MP.Error) -> Void = { _ in }) throws(MP.Error) -> ManagerReader {
        try link.call(op, object: id, blocking: blocking, timeout: timeout, cancellation: cancellation, build)
    }

    /// Runs a blocking call on a thread of its own, so an `await` from any
    /// actor blocks none; cancelling the awaiting task ends the call (its
    /// connection is closed: what the server took for it goes back).
    func async<T: Sendable>(_ body: @escaping @Sendable (CallCancellation) throws(MP.Error) -> T) async throws(MP.Error) -> T {
        let cancellation = CallCancellation()
        let result: Result<T, MP.Error> = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, MP.Error>, Never>) in
                let started = startThread {
                    continuation.resume(returning: Result { () throws(MP.Error) in try body(cancellation) })
                }
                if case .failure(let error) = started { continuation.resume(returning: .failure(.system(error))) }
            }
        } onCancel: {
            cancellation.cancel()
        }
        return try result.get()
    }

    var description: String { "<\(kind.pythonName) proxy, object \(id) of the manager at \(link.address)>" }
}

extension ManagerReader {
    /// The next argument decoded as `T`.
    mutating func value<T: Decodable>(_ type: T.Type = T.self) throws(MP.Error) -> T { try decode(T.self) }

    /// The next argument decoded as `T`, or nil when the reply has none.
    mutating func optionalValue<T: Decodable>(_ type: T.Type = T.self) throws(MP.Error) -> T? {
        isAtEnd ? nil : try decode(T.self)
    }

    /// Every remaining argument decoded as `T`.
    mutating func values<T: Decodable>(_ type: T.Type = T.self) throws(MP.Error) -> [T] {
        var all: [T] = []
        while !isAtEnd { all.append(try decode(T.self)) }
        return all
    }
}

func encoded<T: Encodable>(_ value: T) throws(MP.Error) -> [UInt8] {
    do { return try WireFormat.encode(value) } catch { throw .wire(error) }
}

func decoded<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(MP.Error) -> T {
    do { return try WireFormat.decode(T.self, from: bytes) } catch { throw .wire(error) }
}
