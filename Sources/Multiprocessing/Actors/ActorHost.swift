import Distributed
import MultiprocessingPlatform

extension MP {
    /// A process that hosts distributed actors of ``MP/ActorSystem``: one the
    /// library started, or one that serves elsewhere.
    public final class ActorHost: Sendable {
        /// Where a host is.
        public enum Placement: Sendable {
            /// A new process started by `method` (the default start method
            /// when nil), which dies with this process (it is a daemon):
            /// Ray's actor in a worker process.
            case newProcess(MP.StartMethod? = nil)
            /// A host that serves at `address` (``MP/ActorSystem/serveForever(address:authkey:)``),
            /// perhaps on another machine; `authkey` nil: this process's key.
            /// Over TCP, calls fail with ``MP/Error/Code/timeout`` when the
            /// link is silent for about `linkTimeout` seconds (a cut cable, a
            /// dead machine: kernel keep-alives, whatever the host's threads do);
            /// nil: 30 s.
            case address(MP.Address, authkey: [UInt8]? = nil, linkTimeout: Double? = nil)
        }

        /// Where its actors are reached.
        public let address: MP.Address
        private let process: MP.Process?
        private let link: ActorLink

        init(address: MP.Address, process: MP.Process?, link: ActorLink) {
            self.address = address
            self.process = process
            self.link = link
        }

        /// The host's process id, when this process started it.
        public var pid: Int32? { process?.pid }

        /// Makes an actor of type `Act` in the host (its `init(actorSystem:)`
        /// runs there) and returns a reference to it; this process holds it.
        ///
        /// - Throws: ``MP/Error/Code/typeMismatch`` when the host's build has
        ///   no such type, ``MP/Error/Code/disconnected`` when the host is gone.
        public func place<Act: PlaceableActor>(_ type: Act.Type) async throws(MP.Error) -> Act {
            guard let name = _mangledTypeName(Act.self) else {
                throw .invalidArgument("\(Act.self) has no mangled name: it cannot be placed by name")
            }
            let payload = try await link.request(.place) { $0.write(name) }
            let number = try ActorWire.number(payload)
            let id = MP.ActorID(host: address, incarnation: link.incarnation, number: number)
            do {
                return try Act.resolve(id: id, using: .shared)
            } catch let error as MP.Error {
                throw error
            } catch {
                throw .noSuchActor(id, "\(error)")
            }
        }

        /// How many of the host's actors some process holds (they go when none does).
        public func actorCount() async throws(MP.Error) -> Int {
            let payload = try await link.request(.count) { _ in }
            return Int(try ActorWire.number(payload))
        }

        /// Stops a host this process started (SIGTERM, then SIGKILL after
        /// `timeout` seconds); its actors go with it and calls to them fail.
        /// A host that serves elsewhere is not stopped from here.
        public func shutdown(timeout: Double = 5) {
            guard let process else { return }
            if process.isAlive {
                try? process.terminate()
                if (try? process.join(timeout: timeout)) != true {
                    try? process.kill()
                    _ = try? process.join(timeout: timeout)
                }
            }
            link.end("it was shut down")
            ActorSystem.shared.forget(link)
        }

        /// Starts a host process and connects to it.
        static func start(_ method: MP.StartMethod?, system: ActorSystem) throws(MP.Error) -> ActorHost {
            let requested = MP.Address.unix("/tmp/mp-actors-\(Sys.getpid)-\(UInt64.random(in: 0 ... .max)).sock")
            let key = ProcessAuthKey.current
            let (process, address) = try ServingProcess.start(name: "ActorHost-\(counter.next())", method: method,
                                                              makeTask: { ActorHostTask(address: requested, authkey: key, report: $0) },
                                                              failure: { MP.Error.hostGone(requested, $0) })
            let link: ActorLink
            do {
                link = try ActorLink(address: address, authkey: key, linkTimeout: nil, system: system)
            } catch {
                try? process.kill()
                _ = try? process.join(timeout: 5)
                throw error
            }
            link.exitDescription = { [weak process] in
                guard let process else { return nil }
                _ = try? process.join(timeout: 0.5)
                return process.exitStatus.map { "its process \(process.pid.map(String.init) ?? "?") ended: \($0)" }
            }
            system.adopt(link)
            return ActorHost(address: address, process: process, link: link)
        }

        private static let counter = Counter()
    }
}

/// A host process's body: listens, says where, and serves until killed (or
/// its owner dies: it is a daemon).
struct ActorHostTask: MP.NamedTask {
    static var name: String { "swift-multiprocessing.actor-host" }
    var address: MP.Address
    var authkey: [UInt8]
    var report: MP.Connection

    func run() throws {
        guard let listener = try ServingProcess.listen(at: address, authkey: authkey, report: report) else { return }
        let server = ActorHostServer(listener: listener, system: .shared)
        try ServingProcess.ready(listener, report: report)
        server.serveForever()
    }
}
