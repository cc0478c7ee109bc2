import Distributed
import Glibc
@testable import Multiprocessing
import MultiprocessingPlatform
import Testing

/// A counter that lives in a host process.
distributed actor TestCounter: MP.PlaceableActor {
    typealias ActorSystem = MP.ActorSystem
    struct Refused: Error, CustomStringConvertible {
        var why: String
        var description: String { "refused: \(why)" }
    }

    var value = 0
    init(actorSystem: MP.ActorSystem) { self.actorSystem = actorSystem }

    distributed func increment(by step: Int = 1) -> Int {
        value += step
        return value
    }
    distributed func read() -> Int { value }
    distributed func host() -> Int32 { getpid() }
    distributed func fail(_ why: String) throws -> Int { throw Refused(why: why) }
    distributed func nap(milliseconds: Int) async throws -> Int {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return milliseconds
    }
    /// A second actor, made in the host by this one: its reference crosses back.
    distributed func sibling() -> TestCounter { TestCounter(actorSystem: actorSystem) }
    /// Takes a value that cannot be encoded (the call must fail before it leaves).
    distributed func take(_ value: ActorArgumentUnencodable) -> Int { 0 }
    /// Calls another actor (perhaps in another host) from the host.
    distributed func add(from other: TestCounter) async throws -> Int {
        value += try await other.read()
        return value
    }
}

/// A value whose encoding fails.
struct ActorArgumentUnencodable: Codable, Sendable {
    struct Refused: Error {}
    init() {}
    init(from decoder: any Decoder) throws { throw Refused() }
    func encode(to encoder: any Encoder) throws { throw Refused() }
}

/// Increments a counter `times` times from a pool worker.
struct IncrementCounter: MP.NamedTask {
    var counter: TestCounter
    var times: Int
    func run() async throws -> Int {
        var last = 0
        for _ in 0..<times { last = try await counter.increment() }
        return last
    }
}

/// Places a counter on a host of its own and says the host's pid, then waits to be killed.
struct OwnsAHost: MP.NamedTask {
    var report: MP.Connection
    func run() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        let counter = try await host.place(TestCounter.self)
        try report.send(try await counter.host())
        while true { try await Task.sleep(for: .seconds(60)) }
    }
}

/// Serves actors on TCP with a key, and says where.
struct ServesActors: MP.NamedTask {
    var key: [UInt8]
    var report: MP.Connection
    func run() throws {
        let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: key, backlog: 16)
        let server = ActorHostServer(listener: listener, system: .shared)
        try report.send(listener.address)
        server.serveForever()
    }
}

/// Waits (bounded) until `condition` holds.
func eventually(within seconds: Double = 20, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return false
}

/// A connection to `host` that has sent its hello as build `build`, and the hello's reply.
func rawConnection(to host: MP.ActorHost, build: String = BuildIdentity.current) throws -> (connection: MP.Connection, reply: [UInt8]) {
    let connection = try MP.Client(address: host.address, authkey: MP.currentProcess().authkey)
    var hello = ByteWriter()
    hello.write(ActorFrames.Request.hello.rawValue)
    hello.write(build)
    try connection.sendBytes(hello.bytes)
    return (connection, try connection.recvBytes())
}

/// The error a host's reply carries.
func replyError(_ reply: [UInt8]) throws -> MP.Error {
    try reply.withUnsafeBytes { raw in
        var reader = ByteReader(raw)
        _ = try reader.read(UInt64.self)
        return try ActorWire.failure(try reader.readByte(), &reader)
    }
}

@Suite("Actors across processes", .serialized)
struct ActorTests {
    @Test("placed, called, its state kept across calls, in another process", arguments: MP.StartMethod.allCases)
    func placeAndCall(method: MP.StartMethod) async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(method))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        #expect(try await counter.increment() == 1)
        #expect(try await counter.increment(by: 41) == 42)
        #expect(try await counter.read() == 42)
        let pid = try await counter.host()
        #expect(pid == host.pid && pid != getpid())
        // A reference made in the host comes back and is called here.
        let sibling = try await counter.sibling()
        #expect(sibling.id.host == host.address && sibling.id.number != counter.id.number)
        #expect(try await sibling.increment(by: 5) == 5)
        #expect(try await counter.add(from: sibling) == 47)
    }

    @Test("callers in several pool workers: the actor's total is exact; the reference crossed as a task's argument",
          arguments: MP.StartMethod.allCases)
    func concurrentCallers(method: MP.StartMethod) async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        let pool = try MP.TaskPool(processes: 3, startMethod: method)
        defer { try? finish(pool) }
        let lasts = try await pool.map((0..<6).map { _ in IncrementCounter(counter: counter, times: 50) }, chunksize: 1)
        #expect(lasts.count == 6 && lasts.max() == 300)
        #expect(try await counter.read() == 300)
    }

    @Test("calls to different actors of a host run at once; calls to one actor one at a time")
    func concurrency() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let a = try await host.place(TestCounter.self)
        let b = try await host.place(TestCounter.self)
        let clock = ContinuousClock()
        let apart = try await clock.measure {
            async let first = a.nap(milliseconds: 300)
            async let second = b.nap(milliseconds: 300)
            _ = try await (first, second)
        }
        #expect(apart < .milliseconds(550), "two actors' naps took \(apart)")
        // One actor: its calls are ordered, but an async one suspends, so others may run meanwhile (actor reentrancy).
        async let naps = a.nap(milliseconds: 200)
        var increments: [Int] = []
        for _ in 0..<5 { increments.append(try await a.increment()) }
        _ = try await naps
        #expect(increments == [1, 2, 3, 4, 5])
    }

    @Test("an error thrown in the host crosses with its type and description")
    func errors() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        do {
            _ = try await counter.fail("on purpose")
            Issue.record("no error")
        } catch let error as MP.Error {
            #expect(error.code == .taskFailed)
            #expect(error.errorType == String(reflecting: TestCounter.Refused.self))
            #expect(error.message.contains("refused: on purpose"))
        }
        #expect(try await counter.increment() == 1) // the actor is intact
    }

    @Test("a host SIGKILLed mid-call: the pending call fails at once, saying so; later calls too")
    func hostKilled() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        let pid = try #require(host.pid)
        let pending = Task { try await counter.nap(milliseconds: 60_000) }
        #expect(try await eventually { try await counter.read() == 0 }) // the host serves; the nap is in it
        kill(pid, SIGKILL)
        let clock = ContinuousClock()
        let started = clock.now
        let outcome = await pending.result
        #expect(clock.now - started < .seconds(5))
        guard case .failure(let error as MP.Error) = outcome else { Issue.record("the call did not fail: \(outcome)"); return }
        #expect(error.code == .disconnected)
        #expect(error.message.contains("SIGKILL") || error.message.contains("signal 9"), "\(error)")
        await #expect(throws: MP.Error.self) { try await counter.read() }
    }

    @Test("the owner SIGKILLed: its host dies with it")
    func ownerKilled() async throws {
        let (ready, report) = try MP.Pipe(duplex: false)
        let owner = MP.getContext(.forkserver).Process(target: OwnsAHost(report: report))
        try owner.start()
        report.close()
        #expect(try ready.poll(timeout: 30))
        let hostPid = try await ready.recv(Int32.self)
        #expect(Sys.processExists(hostPid))
        try owner.kill()
        try joinOrKill(owner)
        #expect(try await eventually { !Sys.processExists(hostPid) })
    }

    @Test("references: the host keeps what some process holds; released, and with its holders gone, the count is zero")
    func references() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let kept = try await host.place(TestCounter.self)
        let dropped = try await host.place(TestCounter.self)
        #expect(try await host.actorCount() == 2)
        try await MP.ActorSystem.shared.release(dropped)
        #expect(try await host.actorCount() == 1)
        await #expect(throws: MP.Error.self) { try await dropped.read() }
        // A pool worker resolves it (a second holder); its exit drops that hold.
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        #expect(try await pool.apply(IncrementCounter(counter: kept, times: 3)) == 3)
        try finish(pool)
        try await MP.ActorSystem.shared.release(kept)
        #expect(try await eventually { try await host.actorCount() == 0 })
    }

    @Test("a forged id is refused: another number, another incarnation, an address with no host")
    func forged() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        let otherNumber = MP.ActorID(host: counter.id.host, incarnation: counter.id.incarnation, number: 999)
        let unknown = try TestCounter.resolve(id: otherNumber, using: .shared)
        do {
            _ = try await unknown.read()
            Issue.record("a forged number was served")
        } catch let error as MP.Error {
            #expect(error.code == .notFound)
        }
        let otherIncarnation = MP.ActorID(host: counter.id.host, incarnation: counter.id.incarnation &+ 1, number: counter.id.number)
        #expect(throws: MP.Error.self) { _ = try TestCounter.resolve(id: otherIncarnation, using: .shared) }
        let nowhere = MP.ActorID(host: .unix("/tmp/mp-no-such-host-\(getpid()).sock"), incarnation: 1, number: 1)
        #expect(throws: MP.Error.self) { _ = try TestCounter.resolve(id: nowhere, using: .shared) }
        let unhosted = MP.ActorID(host: nil, incarnation: 1, number: 1)
        #expect(throws: MP.Error.self) { _ = try TestCounter.resolve(id: unhosted, using: .shared) }
    }

    @Test("a client of another build is refused at its hello")
    func otherBuild() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let (connection, reply) = try rawConnection(to: host, build: "0123456789abcdef-another-build")
        defer { connection.close() }
        #expect(try replyError(reply).code == .cannotCross)
        #expect(throws: MP.Error.self) { _ = try connection.recvBytes() } // and the host closed it
    }

    @Test("a cancelled call stops waiting at once; the actor serves the next call")
    func cancelled() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        let napping = Task { try await counter.nap(milliseconds: 60_000) }
        #expect(try await eventually { try await counter.read() == 0 })
        napping.cancel()
        let clock = ContinuousClock()
        let started = clock.now
        let outcome = await napping.result
        #expect(clock.now - started < .seconds(5))
        guard case .failure(let error as MP.Error) = outcome else { Issue.record("not cancelled: \(outcome)"); return }
        #expect(error.code == .cancelled)
        #expect(try await counter.increment() == 1)
    }

    @Test("misuse: an argument that cannot be encoded fails the call before it leaves; a bogus type is not placed; a malformed request costs only its connection")
    func misuse() async throws {
        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try await host.place(TestCounter.self)
        do {
            _ = try await counter.take(ActorArgumentUnencodable())
            Issue.record("an unencodable argument was sent")
        } catch let error as MP.Error {
            #expect(error.code == .encoding, "\(error)")
        }
        #expect(try await counter.increment() == 1)

        let placing = try rawConnection(to: host).connection
        defer { placing.close() }
        var place = ByteWriter()
        place.write(ActorFrames.Request.place.rawValue)
        place.write(UInt64(1))
        place.write("9NoSuchType0aB")
        try placing.sendBytes(place.bytes)
        #expect(try replyError(try placing.recvBytes()).code == .typeMismatch)

        let garbled = try rawConnection(to: host).connection
        defer { garbled.close() }
        try garbled.sendBytes([99, 1, 2, 3])
        #expect(throws: MP.Error.self) { _ = try garbled.recvBytes() } // the host closed it
        try garbled.close()
        #expect(try await counter.increment() == 2) // and serves everyone else
        #expect(try await host.actorCount() == 1)
    }

    @Test("a host on TCP: a wrong key refused; with the key, actors placed and called over the network")
    func tcp() async throws {
        let key = Swift.Array("actors over tcp".utf8)
        let (ready, report) = try MP.Pipe(duplex: false)
        let server = MP.getContext(.forkserver).Process(daemon: true, target: ServesActors(key: key, report: report))
        try server.start()
        defer { try? server.kill(); try? joinOrKill(server) }
        report.close()
        #expect(try ready.poll(timeout: 30))
        let address = try await ready.recv(MP.Address.self)
        do {
            _ = try MP.ActorSystem.shared.host(in: .address(address, authkey: Swift.Array("wrong".utf8)))
            Issue.record("a wrong key was let in")
        } catch {
            #expect(error.code == .authentication)
        }
        let host = try MP.ActorSystem.shared.host(in: .address(address, authkey: key))
        #expect(host.pid == nil)
        let counter = try await host.place(TestCounter.self)
        #expect(try await counter.increment(by: 7) == 7)
        #expect(try await counter.host() == server.pid)
    }
}
