extension MP {
    /// Where a distributed actor of ``MP/ActorSystem`` lives: its host's
    /// address, the host process's incarnation, and its number there.
    ///
    /// An id crosses to other processes as any `Codable` value does (a task's
    /// argument, a queue's item, a manager's value, another actor's
    /// argument); the actor it names is resolved there. A host that was
    /// restarted at the same address has another incarnation, so an old id
    /// does not reach a new actor.
    public struct ActorID: Sendable, Hashable, Codable, CustomStringConvertible {
        /// The host's address (a Unix socket or TCP); nil for an actor made in
        /// a process that hosts none (it cannot be called from elsewhere).
        public let host: MP.Address?
        /// A random number of the host process.
        public let incarnation: UInt64
        /// The actor's number in its host.
        public let number: UInt64

        package init(host: MP.Address?, incarnation: UInt64, number: UInt64) {
            self.host = host
            self.incarnation = incarnation
            self.number = number
        }

        private enum CodingKeys: String, CodingKey { case host, incarnation, number }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            host = try container.decodeIfPresent(MP.Address.self, forKey: .host)
            incarnation = try container.decode(UInt64.self, forKey: .incarnation)
            number = try container.decode(UInt64.self, forKey: .number)
        }

        /// Encodes the id; an id of an actor this process hosts is held for
        /// the trip (as CPython's managers incref a pickled proxy's object),
        /// until the process that decodes it holds it itself.
        public func encode(to encoder: any Encoder) throws {
            MP.ActorSystem.shared.holdInFlight(self)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(host, forKey: .host)
            try container.encode(incarnation, forKey: .incarnation)
            try container.encode(number, forKey: .number)
        }

        public var description: String {
            "#\(number) at \(host.map { "\($0)" } ?? "this process") (incarnation \(String(incarnation, radix: 16)))"
        }
    }
}
