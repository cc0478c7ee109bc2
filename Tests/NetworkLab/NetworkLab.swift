import Glibc

/// Machines on a network, for tests: network namespaces made and removed by
/// the test (`ip netns`, `ip link`), each joined to a hub namespace by its
/// own veth pair and subnet, as computers cabled to a server. A process (or
/// a thread) that enters a machine's namespace sees only that machine's
/// link; cutting it is a failed cable. Needs root and iproute2 (CI
/// installs it).
public final class NetworkLab: Sendable {
    /// The hub's name, as given.
    public let hub: String
    private let tag: String
    private let links: [String: Link]

    private struct Link: Sendable {
        let index: Int
        let hubEnd: String
        let machineEnd: String
        let hubAddress: String
        let machineAddress: String
    }

    /// Whether this process may make namespaces (root, and `ip` works).
    public static let available: Bool = getuid() == 0 && run(["ip", "netns", "list"]) == 0

    /// Makes the hub and each machine, each machine linked to the hub.
    public init(hub: String, machines: [String]) throws {
        self.hub = hub
        tag = "\(getpid() % 100_000)"
        var links: [String: Link] = [:]
        let subnet = Int(getpid()) % 200 + 20
        for (index, name) in machines.enumerated() {
            links[name] = Link(index: index, hubEnd: "mph\(index)-\(tag)", machineEnd: "mpm\(index)-\(tag)",
                               hubAddress: "10.\(231 + index).\(subnet).1", machineAddress: "10.\(231 + index).\(subnet).2")
        }
        self.links = links
        remove()
        var steps: [[String]] = [["ip", "netns", "add", namespace(of: hub)], ["ip", "-n", namespace(of: hub), "link", "set", "lo", "up"]]
        for name in machines {
            let link = links[name]!
            let machine = namespace(of: name), hubSpace = namespace(of: hub)
            steps += [
                ["ip", "netns", "add", machine],
                ["ip", "link", "add", link.hubEnd, "type", "veth", "peer", "name", link.machineEnd],
                ["ip", "link", "set", link.hubEnd, "netns", hubSpace],
                ["ip", "link", "set", link.machineEnd, "netns", machine],
                ["ip", "-n", hubSpace, "addr", "add", "\(link.hubAddress)/24", "dev", link.hubEnd],
                ["ip", "-n", machine, "addr", "add", "\(link.machineAddress)/24", "dev", link.machineEnd],
                ["ip", "-n", hubSpace, "link", "set", link.hubEnd, "up"],
                ["ip", "-n", machine, "link", "set", link.machineEnd, "up"],
                ["ip", "-n", machine, "link", "set", "lo", "up"],
            ]
        }
        for step in steps where Self.run(step) != 0 {
            remove()
            throw LabError(description: "network setup failed at: \(step.joined(separator: " "))")
        }
    }

    /// The namespace of the hub or of a machine.
    public func namespace(of name: String) -> String { "mp-\(name)-\(tag)" }

    /// A machine's address.
    public func address(of machine: String) -> String { links[machine]!.machineAddress }

    /// The hub's address on a machine's link (what that machine connects to).
    public func hubAddress(for machine: String) -> String { links[machine]!.hubAddress }

    /// Every address of the hub, comma-separated (a server's listen list).
    public var hubAddresses: String { links.values.sorted { $0.index < $1.index }.map(\.hubAddress).joined(separator: ",") }

    /// Deleting the namespaces deletes their veth pairs with them. Twice is harmless.
    public func remove() {
        for name in [hub] + links.keys.sorted() { _ = Self.run(["ip", "netns", "del", namespace(of: name)], quiet: true) }
    }

    /// Cuts a machine's cable at the hub's end: the machine's end stays up
    /// (no carrier), its routes stay, its packets go nowhere, as when a cable
    /// or a switch between two machines fails.
    @discardableResult
    public func cut(_ machine: String) -> Bool {
        Self.run(["ip", "-n", namespace(of: hub), "link", "set", links[machine]!.hubEnd, "down"]) == 0
    }

    /// Mends a cut cable.
    @discardableResult
    public func mend(_ machine: String) -> Bool {
        Self.run(["ip", "-n", namespace(of: hub), "link", "set", links[machine]!.hubEnd, "up"]) == 0
    }

    /// Moves the calling thread into `namespace` (`setns`, which moves one
    /// thread). Called first thing in a forked child, while it has one
    /// thread, it moves the process: every thread it starts later is there too.
    public static func enter(_ namespace: String) throws {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else {
            throw LabError(description: "no setns in the C library")
        }
        let setns = unsafeBitCast(symbol, to: SetNS.self)
        let fd = open("/var/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LabError(description: "cannot open the namespace \(namespace)") }
        defer { close(fd) }
        guard setns(fd, 0x4000_0000 /* CLONE_NEWNET */) == 0 else {
            throw LabError(description: "setns(\(namespace)) failed: errno \(errno)")
        }
    }

    /// Runs `body` on a new thread inside `namespace` and returns its
    /// result: the programs it starts (a database server) live there.
    public static func inside<T: Sendable>(_ namespace: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        let context = Unmanaged.passRetained(Thunk {
            box.result = Result {
                try enter(namespace)
                return try body()
            }
        }).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { raw in
            let thunk = Unmanaged<Thunk>.fromOpaque(raw!).takeRetainedValue()
            thunk.body()
            return nil
        }, context) == 0 else {
            Unmanaged<Thunk>.fromOpaque(context).release()
            throw LabError(description: "cannot start a thread")
        }
        pthread_join(thread, nil)
        return try box.result!.get()
    }

    private final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }

    private final class Thunk {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Runs a command to its end; its exit status (-1 when it did not exit).
    @discardableResult
    public static func run(_ arguments: [String], quiet: Bool = false) -> Int32 {
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

/// A lab step that failed.
public struct LabError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}
