import Distributed
import Glibc
@testable import Multiprocessing
import MultiprocessingPlatform
import NetworkLab
import Testing

/// Serves actors on TCP at `host` in network namespace `namespace`, and says the port.
struct ServesActorsIn: MP.NamedTask {
    var namespace: String
    var host: String
    var key: [UInt8]
    var reports: MP.Queue<String>
    func run() throws {
        try NetworkLab.enter(namespace)
        let listener = try MP.Listener(address: .tcp(host: host, port: 0), authkey: key, backlog: 16)
        let server = ActorHostServer(listener: listener, system: .shared)
        guard case .tcp(_, let port) = listener.address else { return }
        try reports.put("\(port)")
        server.serveForever()
    }
}

/// From namespace `namespace`: a wrong key, then calls, then a call pending when the link is cut.
struct CallsActorsFrom: MP.NamedTask {
    var namespace: String
    var address: MP.Address
    var key: [UInt8]
    var reports: MP.Queue<String>
    func run() async throws {
        try NetworkLab.enter(namespace)
        do {
            _ = try MP.ActorSystem.shared.host(in: .address(address, authkey: Swift.Array("wrong".utf8), linkTimeout: 2))
            try reports.put("a wrong key was accepted")
        } catch {
            try reports.put(error.code == .authentication ? "wrong key refused" : "wrong key: \(error)")
        }
        let host = try MP.ActorSystem.shared.host(in: .address(address, authkey: key, linkTimeout: 2))
        let counter = try await host.place(TestCounter.self)
        try reports.put("counted \(try await counter.increment(by: 3))")
        try reports.put("waiting")
        let started = ContinuousClock.now
        do {
            _ = try await counter.nap(milliseconds: 60_000)
            try reports.put("the nap returned over a cut link")
        } catch let error as MP.Error {
            let seconds = Double((ContinuousClock.now - started).components.seconds)
            try reports.put("cut after \(seconds): \(error.code): \(error.message)")
        }
        do {
            _ = try await counter.read()
            try reports.put("a later call went through")
        } catch let error as MP.Error {
            try reports.put("later: \(error.code)")
        }
    }
}

@Suite("Actors across network namespaces", .serialized, .enabled(if: NetworkLab.available, "needs root and iproute2"))
struct ActorNetworkTests {
    @Test("a host in one namespace, a caller in another: a wrong key refused, calls served, a cut link fails the pending call within the timeout")
    func acrossNamespaces() throws {
        let lab = try NetworkLab(hub: "srv", machines: ["cli"])
        defer { lab.remove() }
        let key = Swift.Array("actor key".utf8)
        let reports = try MP.Queue<String>()
        let serverIP = lab.hubAddress(for: "cli")
        let server = MP.getContext(.fork).Process(daemon: true, target: ServesActorsIn(namespace: lab.namespace(of: "srv"), host: serverIP,
                                                                                        key: key, reports: reports))
        try server.start()
        defer {
            try? server.kill()
            try? joinOrKill(server)
        }
        let port = try #require(Int(try reports.get(timeout: 30)))
        let client = MP.getContext(.fork).Process(target: CallsActorsFrom(namespace: lab.namespace(of: "cli"),
                                                                           address: .tcp(host: serverIP, port: port),
                                                                           key: key, reports: reports))
        try client.start()
        defer {
            try? client.kill()
            try? joinOrKill(client)
        }
        #expect(try reports.get(timeout: 30) == "wrong key refused")
        #expect(try reports.get(timeout: 30) == "counted 3")
        #expect(try reports.get(timeout: 30) == "waiting")
        #expect(lab.cut("cli"))
        let cut = try reports.get(timeout: 30)
        #expect(cut.contains("timeout: the actor host at") && cut.contains("did not answer within the link timeout"), "\(cut)")
        if let seconds = Double(cut.dropFirst("cut after ".count).prefix { $0 != ":" }) {
            #expect(seconds < 8, "the cut is noticed within about the link timeout: \(seconds) s")
        }
        #expect(try reports.get(timeout: 30) == "later: timeout")
        try joinOrKill(client, within: 30)
    }
}
