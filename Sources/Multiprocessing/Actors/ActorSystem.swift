import Distributed
import MultiprocessingPlatform

extension MP {
    /// A distributed actor that a host can make by its type: what
    /// ``MP/ActorHost/place(_:)`` needs (Ray's `@ray.remote` class).
    ///
    /// ```swift
    /// distributed actor Counter: MP.PlaceableActor {
    ///     typealias ActorSystem = MP.ActorSystem
    ///     var value = 0
    ///     init(actorSystem: MP.ActorSystem) { self.actorSystem = actorSystem }
    ///     distributed func increment() -> Int { value += 1; return value }
    /// }
    /// ```
    public protocol PlaceableActor: DistributedActor where ActorSystem == MP.ActorSystem {
        /// Makes the actor in its host; its starting state comes by its `distributed func`s.
        init(actorSystem: MP.ActorSystem)
    }

    /// Swift's `distributed actor`s in other processes of the program, or
    /// on other machines: Python's Ray actors, in the language.
    ///
    /// Actors live in hosts: a process the library starts
    /// (``MP/ActorHost/Placement/newProcess(_:)``, under fork, spawn or
    /// forkserver, which dies with the process that started it), or a
    /// program that serves on an address (``serveForever(address:authkey:)``,
    /// reached with ``MP/ActorHost/Placement/address(_:authkey:linkTimeout:)``). A
    /// reference to an actor is its ``MP/ActorID``; it crosses to other
    /// processes as any `Codable` value, and is called there the same way.
    ///
    /// ```swift
    /// let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
    /// let counter = try await host.place(Counter.self)
    /// print(try await counter.increment())   // 1, counted in the host
    /// ```
    ///
    /// Calls carry their arguments, results and errors in the library's wire
    /// format: a function that throws in the host throws
    /// ``MP/Error/Code/taskFailed`` here, with the error's type and
    /// description. Calls to one actor run one at a time, as Swift's actor
    /// rules say; calls to different actors of a host run at once.
    ///
    /// A host that dies fails every pending and later call to its actors at
    /// once with ``MP/Error/Code/disconnected``, saying how it ended. An
    /// actor stays while some process holds a reference to it (placed it,
    /// or resolved its id, and has not ``release(_:)``d it nor exited), as
    /// CPython's managers count their objects' references.
    public final class ActorSystem: DistributedActorSystem, @unchecked Sendable {
        public typealias ActorID = MP.ActorID
        public typealias InvocationEncoder = MP.ActorInvocationEncoder
        public typealias InvocationDecoder = MP.ActorInvocationDecoder
        public typealias ResultHandler = MP.ActorResultHandler
        public typealias SerializationRequirement = Codable

        /// A TCP link's timeout when none is given.
        static let defaultLinkTimeout = 30.0

        /// The system of this process: every actor of the library's uses it.
        public static let shared = ActorSystem()

        let lock = ForkSafeLock()
        /// Where this process hosts actors (set while it serves).
        var hostAddress: MP.Address? { lock.withLock { hosting } }
        private var hosting: MP.Address?
        private(set) var incarnation = UInt64.random(in: 1 ... .max)
        private var nextNumber: UInt64 = 1
        /// Every live actor made in this process, weakly.
        private var known: [UInt64: WeakActor] = [:]
        /// Actors some process holds, with who holds them (connection numbers;
        /// 0 is this process itself).
        private var retained: [UInt64: (actor: any DistributedActor, holders: Set<UInt64>)] = [:]
        private var links: [MP.Address: ActorLink] = [:]
        private var keys: [MP.Address: [UInt8]] = [:]
        private var timeouts: [MP.Address: Double] = [:]

        private init() {
            AfterFork.register { ActorSystem.shared.forgetInChild() }
        }

        /// A forked child hosts nothing and shares no link of its parent's.
        private func forgetInChild() {
            lock.withLock {
                for link in links.values { link.abandonInChild() }
                links = [:]
                hosting = nil
                incarnation = UInt64.random(in: 1 ... .max)
                known = [:]
                retained = [:]
            }
        }

        // MARK: placing

        /// Starts a host, or connects to one that serves elsewhere.
        ///
        /// - Throws: ``MP/Error/Code/disconnected`` when the host did not start
        ///   or cannot be reached, ``MP/Error/Code/authentication`` for a
        ///   wrong key, ``MP/Error/Code/cannotCross`` for a host of another build.
        public func host(in placement: ActorHost.Placement) throws(MP.Error) -> ActorHost {
            switch placement {
            case .newProcess(let method):
                return try ActorHost.start(method, system: self)
            case .address(let address, let authkey, let linkTimeout):
                let key = authkey ?? ProcessAuthKey.current
                if let authkey, authkey.isEmpty { throw .invalidArgument("authkey must not be empty") }
                if let linkTimeout, !(linkTimeout > 0) { throw .invalidArgument("linkTimeout must be nil or above 0 (got \(linkTimeout))") }
                lock.withLock {
                    keys[address] = key
                    timeouts[address] = linkTimeout
                }
                let link = try link(for: address)
                return ActorHost(address: address, process: nil, link: link)
            }
        }

        /// Runs a host in this process until it is killed: actors are placed
        /// in it from other processes or machines, which reach it with
        /// ``MP/ActorHost/Placement/address(_:authkey:linkTimeout:)`` (Python's
        /// `serve_forever` of a manager's server). A host on TCP needs a key.
        public static func serveForever(address: MP.Address, authkey: [UInt8]) throws(MP.Error) -> Never {
            if authkey.isEmpty { throw .invalidArgument("authkey must not be empty") }
            let listener = try MP.Listener(address: address, authkey: authkey, backlog: 128)
            ActorHostServer(listener: listener, system: shared).serveForever()
        }

        /// Says that this process holds `actor` no more: when no process does,
        /// its host lets it go (Ray's `ray.kill`, or a handle going out of scope).
        /// Calls to it from here fail afterwards; an actor of this process is released locally.
        public func release<Act: DistributedActor>(_ actor: Act) async throws(MP.Error) where Act.ActorSystem == ActorSystem {
            let id = actor.id
            if isLocal(id) {
                drop(id.number, holder: 0)
                return
            }
            guard let address = id.host else { return }
            let link = try link(for: address)
            _ = try await link.request(.release) { $0.write(id.number) }
        }

        // MARK: DistributedActorSystem

        public func resolve<Act>(id: ActorID, as actorType: Act.Type) throws -> Act? where Act: DistributedActor, Act.ID == ActorID {
            if isLocal(id) {
                guard let actor = lock.withLock({ retained[id.number]?.actor ?? known[id.number]?.actor }) else {
                    throw MP.Error.noSuchActor(id, "it was released or never made in this process")
                }
                guard let typed = actor as? Act else {
                    throw MP.Error.typeMismatch("actor \(id) is a \(type(of: actor)), not a \(Act.self)")
                }
                return typed
            }
            guard let address = id.host else {
                throw MP.Error.noSuchActor(id, "it was made in a process that hosts no actors, so it cannot be reached from another one")
            }
            let link = try link(for: address)
            guard link.incarnation == id.incarnation else {
                throw MP.Error.noSuchActor(id, "its host at \(address) was restarted (incarnation \(String(link.incarnation, radix: 16)) now)")
            }
            try link.hold(id.number)
            return nil
        }

        public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
            lock.withLock {
                defer { nextNumber += 1 }
                return ActorID(host: hosting, incarnation: incarnation, number: nextNumber)
            }
        }

        public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID {
            lock.withLock { known[actor.id.number] = WeakActor(actor) }
        }

        public func resignID(_ id: ActorID) {
            lock.withLock {
                known[id.number] = nil
                retained[id.number] = nil
            }
        }

        public func makeInvocationEncoder() -> InvocationEncoder { InvocationEncoder() }

        public func remoteCall<Act, Err, Res>(on actor: Act, target: RemoteCallTarget, invocation: inout InvocationEncoder,
                                              throwing: Err.Type, returning: Res.Type) async throws -> Res
            where Act: DistributedActor, Act.ID == ActorID, Err: Swift.Error, Res: Codable {
            let payload = try await call(actor.id, target, &invocation)
            return try ActorWire.decode(Res.self, from: payload)
        }

        public func remoteCallVoid<Act, Err>(on actor: Act, target: RemoteCallTarget, invocation: inout InvocationEncoder,
                                             throwing: Err.Type) async throws
            where Act: DistributedActor, Act.ID == ActorID, Err: Swift.Error {
            _ = try await call(actor.id, target, &invocation)
        }

        private func call(_ id: ActorID, _ target: RemoteCallTarget, _ invocation: inout InvocationEncoder) async throws(MP.Error) -> [UInt8] {
            if let failure = invocation.failure { throw failure }
            guard let address = id.host else { throw MP.Error.noSuchActor(id, "it was made in a process that hosts no actors") }
            let link = try link(for: address)
            let invocation = invocation
            return try await link.request(.call) { writer in
                writer.write(id.number)
                writer.write(target.identifier)
                writer.write(UInt32(invocation.generics.count))
                for name in invocation.generics { writer.write(name) }
                writer.write(UInt32(invocation.arguments.count))
                for argument in invocation.arguments {
                    writer.writeLength(argument.count)
                    writer.writeRaw(argument)
                }
            }
        }

        // MARK: this process as a host

        func isLocal(_ id: ActorID) -> Bool {
            lock.withLock { id.incarnation == incarnation && (id.host == nil || id.host == hosting) }
        }

        /// Makes this process a host at `address` (its actors' ids name it from now on).
        func startHosting(at address: MP.Address) -> UInt64 {
            lock.withLock {
                hosting = address
                return incarnation
            }
        }

        /// A hosted actor by number (a call's target).
        func hosted(_ number: UInt64) -> (any DistributedActor)? {
            lock.withLock { retained[number]?.actor ?? known[number]?.actor }
        }

        /// The holder of a reference on its way to another process.
        static let inFlight: UInt64 = 0

        /// Holds a hosted actor whose id is being sent away (a result, an
        /// argument), so it outlives the trip.
        func holdInFlight(_ id: ActorID) {
            guard hostAddress != nil, isLocal(id) else { return }
            hold(id.number, holder: Self.inFlight)
        }

        /// `holder` holds actor `number`: kept alive while any holder does.
        /// A connection's hold takes over a reference in flight. False when there is none.
        @discardableResult
        func hold(_ number: UInt64, holder: UInt64) -> Bool {
            lock.withLock {
                if retained[number] != nil {
                    retained[number]!.holders.insert(holder)
                    if holder != Self.inFlight { retained[number]!.holders.remove(Self.inFlight) }
                    return true
                }
                guard let actor = known[number]?.actor else { return false }
                retained[number] = (actor, [holder])
                return true
            }
        }

        /// `holder` holds actor `number` no more; the last one lets it go.
        func drop(_ number: UInt64, holder: UInt64) {
            let released: (any DistributedActor)? = lock.withLock {
                guard var entry = retained[number] else { return nil }
                entry.holders.remove(holder)
                if entry.holders.isEmpty {
                    retained[number] = nil
                    return entry.actor
                }
                retained[number] = entry
                return nil
            }
            _ = released // its last reference goes here, outside the lock
        }

        /// A connection ended: what it held is dropped.
        func dropAll(holder: UInt64) {
            let released: [any DistributedActor] = lock.withLock {
                var gone: [any DistributedActor] = []
                for (number, var entry) in retained where entry.holders.contains(holder) {
                    entry.holders.remove(holder)
                    if entry.holders.isEmpty {
                        retained[number] = nil
                        gone.append(entry.actor)
                    } else {
                        retained[number] = entry
                    }
                }
                return gone
            }
            _ = released
        }

        /// Actors alive in this process that some process holds.
        var retainedCount: Int { lock.withLock { retained.count } }

        // MARK: links

        /// The link to the host at `address`, connected on first use; a dead
        /// one stays, so later calls fail at once with how it died.
        func link(for address: MP.Address) throws(MP.Error) -> ActorLink {
            if let existing = lock.withLock({ links[address] }) { return existing }
            let (key, timeout) = lock.withLock { (keys[address] ?? ProcessAuthKey.current, timeouts[address] ?? ActorSystem.defaultLinkTimeout) }
            let made = try ActorLink(address: address, authkey: key, linkTimeout: timeout, system: self)
            return lock.withLock {
                if let raced = links[address] {
                    made.close()
                    return raced
                }
                links[address] = made
                return made
            }
        }

        /// Drops a link that ended on purpose (a host shut down): its
        /// connection closes with it; a later call connects anew, and fails
        /// if nothing serves there.
        func forget(_ link: ActorLink) {
            lock.withLock { if links[link.address] === link { links[link.address] = nil } }
        }

        func adopt(_ link: ActorLink) {
            lock.withLock { links[link.address] = link }
        }
    }
}

/// A weak reference to a local actor (the system must not keep an actor no one holds).
struct WeakActor {
    weak var object: AnyObject?
    init(_ actor: some DistributedActor) { object = actor }
    var actor: (any DistributedActor)? { object as? any DistributedActor }
}
