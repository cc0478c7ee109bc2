import Testing
@testable import Multiprocessing
import Glibc
import MultiprocessingPlatform

/// A value whose encoding fails.
struct Unencodable: Codable, Sendable {
    init() {}
    init(from decoder: any Decoder) throws { self.init() }
    func encode(to encoder: any Encoder) throws {
        throw EncodingError.invalidValue(0, .init(codingPath: [], debugDescription: "never encodes"))
    }
}

/// Waits up to `seconds` for `pid` (any process, not only a child) to end.
func waitForExit(of pid: Int32, within seconds: Double) -> Bool {
    guard let pidfd = try? Sys.pidfdOpen(pid) else { return true } // already gone
    defer { close(pidfd) }
    return (try? Sys.pollReadable(pidfd, until: Deadline.after(validSeconds: seconds))) == true
}

@Suite("Manager faults and bad input", .serialized)
struct ManagerFaultTests {
    @Test("a manager that dies fails the pending call and every later one at once, naming how it ended")
    func managerDeath() async throws {
        let manager = try MP.Manager()
        let q: MP.QueueProxy<Int> = try manager.Queue()
        let reports = try MP.Queue<String>()
        let waiter = MP.Process {
            do {
                _ = try q.get()
                try reports.put("returned")
            } catch {
                try reports.put("\(error)")
            }
        }
        try waiter.start()
        let pending = Task { try await q.get() }
        let serverPid = try #require(manager.pid)
        try MP.kill(serverPid, .kill)
        let started = Deadline.now
        let inChild = try reports.get(timeout: 10)
        let inParent = await pending.result
        #expect(Double(Deadline.now - started) / 1e9 < 5, "the failures are prompt")
        try joinOrKill(waiter)
        // Waiting on the server or still connecting when it died: both fail the same way.
        #expect(inChild.hasPrefix("the manager is gone"), "\(inChild)")
        switch inParent {
        case .success: Issue.record("a get from a dead manager returned")
        case .failure(let error):
            if !isError(error, .disconnected) { Issue.record("unexpected \(error)") }
        }
        do {
            try q.putNowait(1)
            Issue.record("a call to a dead manager succeeded")
        } catch let error {
            guard error.code == .disconnected else { Issue.record("unexpected \(error)"); return }
            #expect(error.message.contains("SIGKILL") || error.message.contains("signal 9"), "names how it ended: \(error)")
        }
        manager.shutdown()
        #expect(throws: MP.Error.shutDown) { try q.putNowait(2) }
    }

    @Test("the manager dies with its SIGKILLed owner and its socket file is removed")
    func diesWithOwner() throws {
        let path = "/tmp/mp-manager-owner-\(getpid()).sock"
        let facts = try MP.Queue<[Int32]>()
        let owner = MP.Process {
            ResourceTracker.detachForTesting() // this "program" has its own tracker
            let manager = try MP.Manager(address: .unix(path))
            try facts.put([manager.pid ?? -1, ResourceTracker.pid])
            while true { pause() }
        }
        try owner.start()
        let pids = try facts.get(timeout: 30)
        let (server, tracker) = (pids[0], pids[1])
        #expect(server > 0 && tracker > 0)
        var status = stat()
        #expect(stat(path, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600, "owner-only socket file")
        try owner.kill()
        try joinOrKill(owner)
        #expect(waitForExit(of: server, within: 10), "the server died with its owner")
        #expect(waitForExit(of: tracker, within: 10), "the tracker finished")
        #expect(access(path, F_OK) != 0, "the socket file was removed")
        try reapAdoptedOrphans()
    }

    @Test("wrong key, no manager, bad arguments: clear errors")
    func badInput() throws {
        let path = "/tmp/mp-manager-bad-\(getpid()).sock"
        try MP.Manager.with(address: .unix(path), authkey: Array("right".utf8)) { manager in
            #expect(throws: MP.Error.self) { _ = try MP.Manager.connect(address: .unix(path), authkey: Array("wrong".utf8)) }
            do {
                _ = try MP.Manager.connect(address: .unix(path), authkey: Array("wrong".utf8))
            } catch let error as MP.Error {
                guard case .authentication = error else { Issue.record("unexpected \(error)"); return }
            }
            // The server goes on after refusing.
            let d: MP.DictProxy<Int, Int> = try manager.dict()
            try d.set(1, 1)
            #expect(try d[1] == 1)

            let q: MP.QueueProxy<Int> = try manager.Queue()
            #expect(throws: MP.Error.invalidArgument("timeout must be nil or at least 0 (got -1.0)")) { try q.get(timeout: -1) }
            #expect(throws: MP.Error.invalidArgument("timeout must be nil or at least 0 (got nan)")) { try q.get(timeout: .nan) }
            #expect(throws: MP.Error.invalidArgument("a Barrier needs at least 1 party (got 0)")) { try manager.Barrier(0) }
            #expect(throws: MP.Error.invalidArgument("a semaphore's initial value must be at least 0 (got -1)")) {
                try manager.Semaphore(-1)
            }
            #expect(throws: MP.Error.invalidArgument("a name must not be empty")) { let _: MP.ListProxy<Int> = try manager.list(named: "") }
            let condition = try manager.Condition()
            #expect(throws: MP.Error.invalidUse("cannot wait on a Condition whose lock this thread does not hold")) {
                try condition.wait(timeout: 1)
            }
            let unencodable: MP.ListProxy<Unencodable> = try manager.list()
            #expect(throws: MP.Error.self) { try unencodable.append(Unencodable()) }
            #expect(try unencodable.count == 0)
            // A value of another type under a known name is a decoding error, not a crash.
            let asStrings: MP.DictProxy<Int, String> = MP.DictProxy(handle: d.handle)
            #expect(throws: MP.Error.self) { _ = try asStrings[1] }

            try MP.Manager.with { other in
                let foreign = try other.Lock()
                #expect(throws: MP.Error.invalidArgument("the Condition's lock belongs to another manager")) {
                    try manager.Condition(foreign)
                }
            }
            // A second manager on the same path cannot listen.
            #expect(throws: MP.Error.self) { _ = try MP.Manager(address: .unix(path)) }
        }
        #expect(throws: MP.Error.self) { _ = try MP.Manager.connect(address: .unix(path), authkey: Array("right".utf8)) }
        do {
            _ = try MP.Manager.connect(address: .unix(path), authkey: Array("right".utf8))
        } catch {
            guard case .disconnected = error else { Issue.record("unexpected \(error)"); return }
        }
        #expect(throws: MP.Error.invalidArgument("a manager listens on TCP only with an explicit authkey (anyone who can reach the port could use it)")) {
            _ = try MP.Manager(address: .tcp(host: "127.0.0.1", port: 0))
        }
        #expect(throws: MP.Error.invalidArgument("authkey must not be empty")) { _ = try MP.Manager(authkey: []) }
        #expect(throws: MP.Error.invalidArgument("linkTimeout must be nil or above 0 (got 0.0)")) { _ = try MP.Manager(linkTimeout: 0) }
    }

    @Test("garbage after the handshake closes only that connection; an oversized claim is refused")
    func garbageClient() throws {
        let key = Array("k".utf8)
        try MP.Manager.with(address: .abstract("mp-manager-garbage-\(getpid())"), authkey: key) { manager in
            let d: MP.DictProxy<String, Int> = try manager.dict(named: "d")
            for junk: [UInt8] in [[0, 0, 0, 3, 1, 2, 3], [0x7f, 0xff, 0xff, 0xff, 0], [0, 0, 0, 40] + [UInt8](repeating: 0xEE, count: 40)] {
                let connection = try MP.Client(address: manager.address, authkey: key)
                let fd = connection.fileno
                _ = junk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                // The server closes it: end-of-file (or a reset) within the bound.
                #expect(try connection.poll(timeout: 10))
                var byte: UInt8 = 0
                #expect(Glibc.recv(fd, &byte, 1, 0) <= 0)
            }
            try d.set("still", 1)
            #expect(try d["still"] == 1)
        }
    }

    @Test("serveForever: a manager program served in a child, stopped by a client's shutdown")
    func serveForever() throws {
        let key = Array("serve".utf8)
        let path = "/tmp/mp-manager-serve-\(getpid()).sock"
        let server = MP.Process { try MP.Manager.serveForever(address: .unix(path), authkey: key) }
        try server.start()
        var manager: MP.Manager?
        for _ in 0..<200 where manager == nil { // until it listens (bounded)
            manager = try? MP.Manager.connect(address: .unix(path), authkey: key)
            if manager == nil { _ = try? Sys.pollReadable([], until: Deadline.after(validSeconds: 0.01)) }
        }
        let client = try #require(manager)
        let list: MP.ListProxy<Int> = try client.list(named: "numbers")
        try list.extend([1, 2, 3])
        #expect(try list.toArray() == [1, 2, 3])
        client.shutdown()
        try joinOrKill(server)
        #expect(server.exitCode == 0)
        #expect(access(path, F_OK) != 0)
    }
}
