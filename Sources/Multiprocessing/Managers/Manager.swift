import MultiprocessingPlatform
extension MP {
    /// Python's `multiprocessing.Manager()` (a started `SyncManager`): a
    /// server process that holds shared objects, and proxies to them that
    /// work in every process of the program and in other programs or
    /// machines that have the address and the key.
    ///
    /// ```swift
    /// let manager = try MP.Manager()                        // manager = Manager()
    /// let scores: MP.DictProxy<String, Int> = try manager.dict()
    /// let p = MP.Process { try scores.set("bob", 3) }      // d['bob'] = 3, in a child
    /// try p.start(); try p.join()
    /// print(try scores["bob"] as Any)                       // Optional(3)
    /// manager.shutdown()
    /// ```
    ///
    /// What it promises, beyond CPython's:
    /// - Each proxy call is atomic on the server; `modify` gives an atomic
    ///   read-modify-write (a compare-and-set loop) without a lock.
    /// - A manager that dies makes every pending and later call fail at once
    ///   with ``MP/Error/Code/disconnected`` (naming how its process
    ///   ended); no call hangs. Over TCP, `linkTimeout` bounds the silence of
    ///   a cut link (the server sends keep-alives while a call waits).
    /// - The manager's process dies with its owner, also a SIGKILLed one, and
    ///   its Unix socket file is removed (by the resource tracker if need be).
    /// - Locks held by a process that dies are released; a queue item taken
    ///   for a client that died before receiving it goes back first in line.
    /// - Locally it listens on an owner-only Unix socket; TCP only when asked,
    ///   and only with a key.
    ///
    /// Objects live until the manager shuts down (CPython frees one when its
    /// last proxy goes): make long-lived objects, or give them a `named:`
    /// so that every process finds the same one.
    public final class Manager: @unchecked Sendable {
        /// Where the server listens: give it to ``connect(address:authkey:linkTimeout:)``.
        public let address: Address
        /// The key clients authenticate with (Python's `authkey`).
        public let authkey: [UInt8]
        /// How long a call may hear nothing from the server before it fails
        /// with ``MP/Error/Code/timeout``; nil: no limit.
        public let linkTimeout: Double?
        let link: ManagerLink
        private let process: Process?
        private let owner = Sys.getpid
        private let lock = ForkSafeLock()
        private var stopped = false

        /// Starts a manager's server process (Python's `Manager()`, or
        /// `SyncManager(address, authkey)` and `start()`).
        ///
        /// - Parameters:
        ///   - address: where it listens; nil: a new owner-only Unix socket
        ///     file in `/tmp`. `.tcp(host:port:)` requires `authkey`.
        ///   - authkey: the key; nil: this process's ``MP/Process/authkey``
        ///     (which every child inherits), as in Python.
        ///   - startMethod: how the server process starts (nil: the program's
        ///     start method). Under spawn and forkserver it is a fresh copy of
        ///     the program, so no lock of the caller's threads is copied.
        ///   - linkTimeout: see ``linkTimeout``; nil: 30 s over TCP, no limit
        ///     over a Unix socket (a dead manager is seen at once there).
        /// - Throws: ``MP/Error/Code/invalidArgument`` (TCP without a
        ///   key), ``MP/Error/Code/disconnected`` (the server could not
        ///   listen or did not start).
        public init(address: Address? = nil, authkey: [UInt8]? = nil, startMethod: StartMethod? = nil,
                    linkTimeout: Double? = nil) throws(MP.Error) {
            if case .tcp = address, authkey == nil {
                throw .invalidArgument("a manager listens on TCP only with an explicit authkey (anyone who can reach the port could use it)")
            }
            if let authkey, authkey.isEmpty { throw .invalidArgument("authkey must not be empty") }
            if let linkTimeout, !(linkTimeout > 0) { throw .invalidArgument("linkTimeout must be nil or above 0 (got \(linkTimeout))") }
            let key = authkey ?? ProcessAuthKey.current
            let requested = address ?? .unix("/tmp/mp-manager-\(Sys.getpid)-\(UInt64.random(in: 0 ... .max)).sock")
            let (process, bound) = try ServingProcess.start(
                name: "SyncManager-\(Manager.counter.next())", method: startMethod,
                makeTask: { ManagerServerTask(address: requested, authkey: key, report: $0) },
                failure: { MP.Error.disconnected("\(requested): \($0)") })
            self.address = bound
            self.authkey = key
            self.linkTimeout = linkTimeout ?? Self.defaultLinkTimeout(for: self.address)
            self.process = process
            link = ManagerLink.link(address: self.address, authkey: key, linkTimeout: self.linkTimeout)
            link.exitDescription = { [weak process] in
                guard let process else { return nil }
                _ = try? process.join(timeout: 0.5)
                return process.exitStatus.map { "ended: \($0)" }
            }
        }

        private init(connectingTo address: Address, authkey: [UInt8], linkTimeout: Double?) {
            self.address = address
            self.authkey = authkey
            self.linkTimeout = linkTimeout
            process = nil
            link = ManagerLink.link(address: address, authkey: authkey, linkTimeout: linkTimeout)
        }

        static func defaultLinkTimeout(for address: Address) -> Double? {
            if case .tcp = address { return 30 }
            return nil
        }

        private static let counter = Counter()

        private static func osError(_ error: MP.Error) -> OSError {
            if let os = error.underlying { return os }
            return OSError("socketpair", errno: .ioError)
        }

        /// Python's `BaseManager(address, authkey).connect()`: a manager
        /// already running (started by another process or program, or served
        /// by ``serveForever(address:authkey:)``). Checks the address and the
        /// key at once.
        public static func connect(address: Address, authkey: [UInt8]? = nil, linkTimeout: Double? = nil) throws(MP.Error) -> Manager {
            if let linkTimeout, !(linkTimeout > 0) { throw .invalidArgument("linkTimeout must be nil or above 0 (got \(linkTimeout))") }
            let manager = Manager(connectingTo: address, authkey: authkey ?? ProcessAuthKey.current,
                                  linkTimeout: linkTimeout ?? defaultLinkTimeout(for: address))
            _ = try manager.link.call(.ping, object: 0)
            return manager
        }

        /// Python's `manager.get_server().serve_forever()`: serves in this
        /// process until a client calls ``shutdown()`` (a program that is only
        /// a manager, for other programs or machines).
        public static func serveForever(address: Address, authkey: [UInt8]) throws(MP.Error) {
            if authkey.isEmpty { throw .invalidArgument("authkey must not be empty") }
            let listener: Listener
            do { listener = try Listener(address: address, authkey: authkey, backlog: 64) } catch {
                throw .disconnected("the manager could not listen on \(address): \(error)")
            }
            ManagerServer(listener: listener).serveForever()
        }

        /// Python's `manager.get_server()`: a manager server to run in this
        /// process, listening already; ``Server/serveForever()`` serves until
        /// ``Server/stop()`` or a client's ``shutdown()``.
        public static func server(address: Address, authkey: [UInt8]) throws(MP.Error) -> Server {
            if authkey.isEmpty { throw .invalidArgument("authkey must not be empty") }
            let listener: Listener
            do { listener = try Listener(address: address, authkey: authkey, backlog: 64) } catch {
                throw .disconnected("the manager could not listen on \(address): \(error)")
            }
            return Server(ManagerServer(listener: listener), address: listener.address)
        }

        /// A manager server in this process (Python's `Server`): what
        /// ``serveForever(address:authkey:)`` runs, with a way to stop it.
        public final class Server: Sendable {
            private let server: ManagerServer
            /// Where it listens (a TCP port of 0 resolved).
            public let address: Address

            init(_ server: ManagerServer, address: Address) {
                self.server = server
                self.address = address
            }

            /// Serves, blocking this thread, until ``stop()`` or a client's
            /// shutdown; then closes the listener and every connection.
            public func serveForever() { server.serveForever() }

            /// Serves on a thread of its own and suspends, blocking no
            /// thread, until ``stop()`` or a client's shutdown.
            public func serve() async throws(MP.Error) {
                let server = self.server
                let result: Result<Void, MP.Error> = await withCheckedContinuation { continuation in
                    let started = startThread {
                        server.serveForever()
                        continuation.resume(returning: .success(()))
                    }
                    if case .failure(let error) = started { continuation.resume(returning: .failure(.system(error))) }
                }
                try result.get()
            }

            /// Stops serving: ``serveForever()`` returns; the objects' clients
            /// get ``MP/Error/Code/disconnected``.
            public func stop() { server.stop() }
        }

        /// `try MP.Manager.with { manager in ... }`: Python's `with Manager() as manager:`.
        /// Shut down afterwards, also when `body` throws.
        public static func with<T>(address: Address? = nil, authkey: [UInt8]? = nil, startMethod: StartMethod? = nil,
                                   linkTimeout: Double? = nil, _ body: (Manager) throws -> T) throws -> T {
            try Scoped.run(try Manager(address: address, authkey: authkey, startMethod: startMethod, linkTimeout: linkTimeout), body) { $0.shutdown() }
        }

        /// The scoped manager for async code.
        nonisolated(nonsending)
        public static func with<T>(address: Address? = nil, authkey: [UInt8]? = nil, startMethod: StartMethod? = nil,
                                   linkTimeout: Double? = nil, _ body: (Manager) async throws -> T) async throws -> T {
            let manager = try Manager(address: address, authkey: authkey, startMethod: startMethod, linkTimeout: linkTimeout)
            return try await Scoped.run(manager, body) { $0.shutdown() }
        }

        deinit {
            if process != nil && Sys.getpid == owner { shutdown() }
        }

        /// The server's pid, when this process started it.
        public var pid: Int32? { process?.pid }

        /// Python's `shutdown()`. For the manager this process started: stops
        /// its server (pending calls everywhere fail with
        /// ``MP/Error/Code/closed`` or ``MP/Error/Code/disconnected``),
        /// waits for its process (killing it after 2 s) and removes its
        /// socket file. For a connected one: asks that server to stop.
        /// Later calls through this manager's proxies in this process throw
        /// ``MP/Error/Code/closed``. Twice is harmless.
        public func shutdown() {
            let first = lock.withLock { () -> Bool in
                defer { stopped = true }
                return !stopped
            }
            guard first else { return }
            guard let process else {
                _ = try? link.call(.shutdown, object: 0)
                link.markShutDown()
                return
            }
            guard Sys.getpid == owner else { return }
            _ = try? link.call(.shutdown, object: 0)
            link.markShutDown()
            if (try? process.join(timeout: 2)) != true {
                try? process.kill()
                try? process.join()
            }
            if case .unix(let path) = address {
                Sys.unlink(path) // already gone unless the server was killed
                ResourceTracker.unregisterFile(path)
            }
        }

        // MARK: making objects

        func create(_ kind: ManagedKind, typeTag: String, named name: String?,
                    _ fill: (inout ManagerMessage) throws(MP.Error) -> Void = { _ in }) throws(MP.Error) -> ProxyHandle {
            if let name, name.isEmpty { throw .invalidArgument("a name must not be empty") }
            var reply = try link.call(.create, object: 0) { (message) throws(MP.Error) in
                message.append(Int(kind.rawValue))
                message.append(typeTag)
                message.append(name ?? "")
                try fill(&message)
            }
            return ProxyHandle(link: link, id: UInt64(try reply.int()), kind: kind)
        }

        static func tag<T>(_ type: T.Type) -> String { _typeName(T.self, qualified: true) }

        /// Python's `manager.dict()`: a dictionary on the server. With
        /// `named:`, the one of that name (made with `initial` if new): how
        /// other processes and programs find it.
        public func dict<Key: Codable & Hashable & Sendable, Value: Codable & Sendable>(
            _ initial: [Key: Value] = [:], named name: String? = nil
        ) throws(MP.Error) -> DictProxy<Key, Value> {
            DictProxy(handle: try create(.dict, typeTag: "\(Self.tag(Key.self)): \(Self.tag(Value.self))", named: name) { (message) throws(MP.Error) in
                for (key, value) in initial {
                    try message.appendEncoded(key)
                    try message.appendEncoded(value)
                }
            })
        }

        /// Python's `manager.list()`.
        public func list<Element: Codable & Sendable>(_ initial: [Element] = [], named name: String? = nil) throws(MP.Error) -> ListProxy<Element> {
            ListProxy(handle: try create(.list, typeTag: Self.tag(Element.self), named: name) { (message) throws(MP.Error) in
                for element in initial { try message.appendEncoded(element) }
            })
        }

        /// Python's `manager.Namespace()`: named attributes of any `Codable` type.
        public func Namespace(named name: String? = nil) throws(MP.Error) -> NamespaceProxy {
            NamespaceProxy(handle: try create(.namespace, typeTag: "Namespace", named: name))
        }

        /// Python's `manager.Queue(maxsize)`: `maxsize` 0 or less is unbounded.
        public func Queue<Element: Codable & Sendable>(maxsize: Int = 0, named name: String? = nil) throws(MP.Error) -> QueueProxy<Element> {
            QueueProxy(handle: try create(.queue, typeTag: Self.tag(Element.self), named: name) { $0.append(max(0, maxsize)) })
        }

        /// Python's `manager.JoinableQueue(maxsize)`: a queue with `taskDone` and `join`.
        public func JoinableQueue<Element: Codable & Sendable>(maxsize: Int = 0, named name: String? = nil) throws(MP.Error) -> QueueProxy<Element> {
            QueueProxy(handle: try create(.joinableQueue, typeTag: Self.tag(Element.self), named: name) { $0.append(max(0, maxsize)) })
        }

        /// Python's `manager.Lock()`.
        public func Lock(named name: String? = nil) throws(MP.Error) -> LockProxy {
            LockProxy(handle: try create(.lock, typeTag: "Lock", named: name))
        }

        /// Python's `manager.RLock()`: reentrant per thread.
        public func RLock(named name: String? = nil) throws(MP.Error) -> LockProxy {
            LockProxy(handle: try create(.rlock, typeTag: "RLock", named: name))
        }

        /// Python's `manager.Semaphore(value)`.
        public func Semaphore(_ value: Int = 1, named name: String? = nil) throws(MP.Error) -> SemaphoreProxy {
            SemaphoreProxy(handle: try create(.semaphore, typeTag: "Semaphore", named: name) { $0.append(value) })
        }

        /// Python's `manager.BoundedSemaphore(value)`: releasing above `value` throws.
        public func BoundedSemaphore(_ value: Int = 1, named name: String? = nil) throws(MP.Error) -> SemaphoreProxy {
            SemaphoreProxy(handle: try create(.boundedSemaphore, typeTag: "BoundedSemaphore", named: name) { $0.append(value) })
        }

        /// Python's `manager.Condition(lock)`: on `lock` (a Lock or RLock of
        /// this manager), or on a new RLock.
        public func Condition(_ lock: LockProxy? = nil, named name: String? = nil) throws(MP.Error) -> ConditionProxy {
            if let lock, lock.handle.link !== link { throw .invalidArgument("the Condition's lock belongs to another manager") }
            return ConditionProxy(handle: try create(.condition, typeTag: "Condition", named: name) { $0.append(Int(lock?.handle.id ?? 0)) })
        }

        /// Python's `manager.Event()`.
        public func Event(named name: String? = nil) throws(MP.Error) -> EventProxy {
            EventProxy(handle: try create(.event, typeTag: "Event", named: name))
        }

        /// Python's `manager.Barrier(parties)`.
        public func Barrier(_ parties: Int, named name: String? = nil) throws(MP.Error) -> BarrierProxy {
            BarrierProxy(handle: try create(.barrier, typeTag: "Barrier", named: name) { $0.append(parties) })
        }

        /// Python's `manager.Value(typecode, value)`: one value of any `Codable` type.
        public func Value<T: Codable & Sendable>(_ initial: T, named name: String? = nil) throws(MP.Error) -> ValueProxy<T> {
            ValueProxy(handle: try create(.value, typeTag: Self.tag(T.self), named: name) { (message) throws(MP.Error) in
                try message.appendEncoded(initial)
            })
        }

        /// Python's `manager.Array(typecode, sequence)`: a fixed-length array.
        public func Array<Element: Codable & Sendable>(_ initial: [Element], named name: String? = nil) throws(MP.Error) -> ArrayProxy<Element> {
            ArrayProxy(handle: try create(.array, typeTag: Self.tag(Element.self), named: name) { (message) throws(MP.Error) in
                for element in initial { try message.appendEncoded(element) }
            })
        }

        /// Python's `BaseManager.register(typeid, callable)` and
        /// `manager.typeid()`: serves `object` (a ``MP/ManagedObject``) on
        /// the server; the proxy calls its methods there.
        public func register<Object: ManagedObject>(_ object: Object, named name: String? = nil) throws(MP.Error) -> ObjectProxy<Object> {
            if _typeName(Object.self, qualified: true).contains("<") {
                throw .typeMismatch("a generic MP.ManagedObject cannot be found by name in the manager's process; declare a non-generic type")
            }
            return ObjectProxy(handle: try create(.object, typeTag: Object.name, named: name) { (message) throws(MP.Error) in
                try message.appendEncoded(object)
            })
        }
    }
}

extension MP.Context {
    /// Python's `ctx.Manager()`: a manager whose server starts by this context's method.
    public func Manager(address: MP.Address? = nil, authkey: [UInt8]? = nil, linkTimeout: Double? = nil) throws(MP.Error) -> MP.Manager {
        try MP.Manager(address: address, authkey: authkey, startMethod: startMethod, linkTimeout: linkTimeout)
    }
}

/// A thread-safe counter (server process names).
final class Counter: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var value = 0
    func next() -> Int { lock.withLock { value += 1; return value } }
}

/// The manager's server process: the library's own named task.
struct ManagerServerTask: MP.NamedTask {
    static var name: String { "swift-multiprocessing.manager-server" }
    var address: MP.Address
    var authkey: [UInt8]
    var report: MP.Connection

    func run() throws {
        guard let listener = try ServingProcess.listen(at: address, authkey: authkey, report: report) else { return }
        try ServingProcess.ready(listener, report: report)
        ManagerServer(listener: listener).serveForever()
    }
}
