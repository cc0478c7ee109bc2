import Testing
@testable import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif

/// Two network namespaces joined by a veth pair, made and removed by the
/// test (`ip netns`, `ip link`): a manager in one, clients in the other, as
/// on two machines. Needs root and iproute2 (CI installs it).
final class NetworkLab: @unchecked Sendable {
    let serverNamespace: String
    let clientNamespace: String
    let serverLink: String
    let clientLink: String
    let serverIP: String
    let clientIP: String

    static let available: Bool = getuid() == 0 && run(["ip", "netns", "list"]) == 0

    init() throws {
        let tag = "\(getpid() % 100_000)"
        serverNamespace = "mp-srv-\(tag)"
        clientNamespace = "mp-cli-\(tag)"
        serverLink = "mps\(tag)"
        clientLink = "mpc\(tag)"
        let subnet = "10.231.\(Int(getpid()) % 200 + 20)"
        serverIP = "\(subnet).1"
        clientIP = "\(subnet).2"
        remove()
        let steps: [[String]] = [
            ["ip", "netns", "add", serverNamespace],
            ["ip", "netns", "add", clientNamespace],
            ["ip", "link", "add", serverLink, "type", "veth", "peer", "name", clientLink],
            ["ip", "link", "set", serverLink, "netns", serverNamespace],
            ["ip", "link", "set", clientLink, "netns", clientNamespace],
            ["ip", "-n", serverNamespace, "addr", "add", "\(serverIP)/24", "dev", serverLink],
            ["ip", "-n", clientNamespace, "addr", "add", "\(clientIP)/24", "dev", clientLink],
            ["ip", "-n", serverNamespace, "link", "set", serverLink, "up"],
            ["ip", "-n", clientNamespace, "link", "set", clientLink, "up"],
            ["ip", "-n", serverNamespace, "link", "set", "lo", "up"],
            ["ip", "-n", clientNamespace, "link", "set", "lo", "up"],
        ]
        for step in steps where Self.run(step) != 0 {
            remove()
            throw TestFailure("network setup failed at: \(step.joined(separator: " "))")
        }
    }

    /// Deleting the namespaces deletes the veth pair with them.
    func remove() {
        _ = Self.run(["ip", "netns", "del", serverNamespace], quiet: true)
        _ = Self.run(["ip", "netns", "del", clientNamespace], quiet: true)
    }

    /// Cuts the link at the server's end: the client's end stays up (no
    /// carrier), its routes stay, its packets go nowhere, as when a cable or
    /// a switch between two machines fails.
    func cut() -> Bool { Self.run(["ip", "-n", serverNamespace, "link", "set", serverLink, "down"]) == 0 }

    /// Moves the calling process (a child, before it starts any thread) into `namespace`.
    static func enter(_ namespace: String) throws {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else {
            throw TestFailure("no setns in the C library")
        }
        let setns = unsafeBitCast(symbol, to: SetNS.self)
        let fd = open("/var/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestFailure("cannot open the namespace \(namespace)") }
        defer { close(fd) }
        guard setns(fd, 0x4000_0000 /* CLONE_NEWNET */) == 0 else {
            throw TestFailure("setns(\(namespace)) failed: errno \(errno)")
        }
    }

    @discardableResult
    static func run(_ arguments: [String], quiet: Bool = false) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if quiet { posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0) }
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }
}

@Suite("Manager across network namespaces", .serialized, .enabled(if: NetworkLab.available, "needs root and iproute2"))
struct ManagerNetworkTests {
    @Test("a manager in one namespace, a client in another: works, refuses a wrong key, times out when the link is cut")
    func acrossNamespaces() throws {
        let lab = try NetworkLab()
        defer { lab.remove() }
        let key = Array("cluster key".utf8)
        let reports = try MP.Queue<String>()
        let serverIP = lab.serverIP, serverNamespace = lab.serverNamespace, clientNamespace = lab.clientNamespace
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
                if case MP.ManagerError.authentication = error { try reports.put("wrong key refused") } else { try reports.put("wrong key: \(error)") }
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
        #expect(try reports.get(timeout: 30) == "long wait: the queue is empty (queue.Empty)")
        #expect(try reports.get(timeout: 30) == "waiting")
        #expect(lab.cut())
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
