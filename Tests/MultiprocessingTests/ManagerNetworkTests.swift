import Testing
import NetworkLab
@testable import Multiprocessing
import Glibc
import MultiprocessingPlatform

@Suite("Manager across network namespaces", .serialized, .enabled(if: NetworkLab.available, "needs root and iproute2"))
struct ManagerNetworkTests {
    @Test("a manager in one namespace, a client in another: works, refuses a wrong key, times out when the link is cut")
    func acrossNamespaces() throws {
        let lab = try NetworkLab(hub: "srv", machines: ["cli"])
        defer { lab.remove() }
        let key = Array("cluster key".utf8)
        let reports = try MP.Queue<String>()
        let serverIP = lab.hubAddress(for: "cli"), serverNamespace = lab.namespace(of: "srv"), clientNamespace = lab.namespace(of: "cli")
        let owner = MP.Process {
            try NetworkLab.enter(serverNamespace)
            let manager = try MP.Manager(address: .tcp(host: serverIP, port: 0), authkey: key, startMethod: .fork)
            let _: MP.QueueProxy<String> = try manager.Queue(named: "jobs")
            guard case .tcp(_, let port) = manager.address else { return }
            try reports.put("\(port)")
            while true { pause() }
        }
        try owner.start()
        defer {
            try? owner.kill()
            try? joinOrKill(owner)
        }
        let port = try #require(Int(try reports.get(timeout: 30)))
        let client = MP.Process {
            try NetworkLab.enter(clientNamespace)
            let address = MP.Address.tcp(host: serverIP, port: port)
            do {
                _ = try MP.Manager.connect(address: address, authkey: Array("wrong".utf8), linkTimeout: 5)
                try reports.put("a wrong key was accepted")
            } catch {
                if isError(error, .authentication) { try reports.put("wrong key refused") } else { try reports.put("wrong key: \(error)") }
            }
            let manager = try MP.Manager.connect(address: address, authkey: key, linkTimeout: 1)
            let jobs: MP.QueueProxy<String> = try manager.Queue(named: "jobs")
            let shared: MP.DictProxy<String, Int> = try manager.dict(named: "d")
            try shared.set("x", 42)
            try reports.put("dict \(try shared["x"] ?? -1)")
            // Keep-alives: a wait longer than the link timeout on a live link is not a timeout.
            do {
                _ = try jobs.get(timeout: 2.5)
                try reports.put("long wait returned an item")
            } catch {
                try reports.put("long wait: \(error)")
            }
            try reports.put("waiting")
            let started = Deadline.now
            do {
                _ = try jobs.get()
                try reports.put("got an item after the cut")
            } catch {
                try reports.put("cut after \(Double(Deadline.now - started) / 1e9): \(error)")
            }
            // A new call over the cut link fails within the timeout too (connect included).
            do {
                try MP.Manager.connect(address: address, authkey: key, linkTimeout: 1).shutdown()
                try reports.put("connected over a cut link")
            } catch {
                try reports.put("reconnect: \(error)")
            }
        }
        try client.start()
        #expect(try reports.get(timeout: 30) == "wrong key refused")
        #expect(try reports.get(timeout: 30) == "dict 42")
        #expect(try reports.get(timeout: 30) == "long wait: the queue is empty")
        #expect(try reports.get(timeout: 30) == "waiting")
        #expect(lab.cut("cli"))
        let cut = try reports.get(timeout: 30)
        #expect(cut.contains("the manager did not answer within the link timeout"), "\(cut)")
        if let seconds = Double(cut.dropFirst("cut after ".count).prefix { $0 != ":" }) {
            #expect(seconds < 4, "the cut is noticed within about the link timeout: \(seconds) s")
        }
        let reconnect = try reports.get(timeout: 30)
        #expect(reconnect.hasPrefix("reconnect: the manager did not answer within the link timeout"), "\(reconnect)")
        try joinOrKill(client, within: 30)
        #expect(client.exitCode == 0)
    }
}
