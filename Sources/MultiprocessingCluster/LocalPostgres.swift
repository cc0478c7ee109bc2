import Foundation
import MultiprocessingPlatform

extension MP.Cluster {
    /// A throwaway PostgreSQL server: `initdb` into a new temporary folder,
    /// started on a Unix socket there (and on TCP when asked), removed by
    /// ``remove()``. For tests, benchmarks and trying the cluster on one
    /// machine; production runs a real server.
    ///
    /// Needs PostgreSQL's server programs (`initdb`, `pg_ctl`: Debian's
    /// `postgresql` package, found on `PATH` or in `/usr/lib/postgresql/*/bin`).
    /// PostgreSQL refuses to run as root: as root, the server runs as the
    /// `postgres` user (through `runuser`).
    public final class LocalPostgres: @unchecked Sendable {
        /// The folder that holds the data and the socket.
        public let directory: String
        /// The port (also the Unix socket's name: `.s.PGSQL.<port>`).
        public let port: Int
        /// The TCP address it listens on, if any.
        public let listenAddress: String?
        private let binaries: String
        private let asUser: String?
        /// Whether it serves TLS (given a certificate).
        public private(set) var tls = false

        /// Where the server programs are, or nil.
        public static var binDirectory: String? {
            let candidates = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
                + ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
                    .sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
            return candidates.first { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") && FileManager.default.isExecutableFile(atPath: "\($0)/pg_ctl") }
        }

        /// Whether one can be started on this machine.
        public static var isAvailable: Bool { binDirectory != nil && (getuid() != 0 || userExists("postgres")) }

        private static func userExists(_ name: String) -> Bool { getpwnam(name) != nil }

        /// Creates and starts a server.
        ///
        /// - Parameters:
        ///   - listenAddress: TCP addresses to listen on besides the Unix
        ///     socket, comma-separated (PostgreSQL's `listen_addresses`; nil: none).
        ///   - port: the port (nil: a free one).
        ///   - trustedNetworks: networks (CIDR, such as `10.1.2.0/24`) whose
        ///     clients connect without a password, besides the loopback ones
        ///     (a line `host all all <network> trust` each, in `pg_hba.conf`).
        ///   - certificateFile: a PEM certificate (chain) for TLS over TCP,
        ///     copied into the server's folder. Without it the server speaks no TLS.
        ///   - privateKeyFile: the certificate's PEM key, copied likewise;
        ///     given with `certificateFile` or not at all.
        public init(listenAddress: String? = nil, port: Int? = nil, trustedNetworks: [String] = [],
                    certificateFile: String? = nil, privateKeyFile: String? = nil) throws {
            guard (certificateFile == nil) == (privateKeyFile == nil) else {
                throw MP.Error.invalidArgument("certificateFile and privateKeyFile go together")
            }
            guard let binaries = Self.binDirectory else {
                throw MP.Error.database("PostgreSQL's server programs (initdb, pg_ctl) are not installed (Debian: apt-get install postgresql)")
            }
            self.binaries = binaries
            asUser = getuid() == 0 ? "postgres" : nil
            self.listenAddress = listenAddress
            self.port = port ?? Int.random(in: 20_000..<60_000)
            directory = "/tmp/mp-postgres-\(Sys.getpid)-\(UInt32.random(in: 0 ... .max))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o700])
            if let asUser {
                try run("/bin/chown", [asUser, directory], asUser: nil)
            }
            try run("\(binaries)/initdb", ["-D", "\(directory)/data", "-U", "mp", "-A", "trust", "--no-sync", "-E", "UTF8"])
            if let certificateFile, let privateKeyFile {
                for (source, name) in [(certificateFile, "server.crt"), (privateKeyFile, "server.key")] {
                    let target = "\(directory)/data/\(name)"
                    try FileManager.default.copyItem(atPath: source, toPath: target)
                    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: target)
                    if let asUser { try run("/bin/chown", [asUser, target], asUser: nil) }
                }
                tls = true
            }
            if !trustedNetworks.isEmpty {
                let lines = trustedNetworks.map { "host all all \($0) trust\n" }.joined()
                guard let handle = FileHandle(forWritingAtPath: "\(directory)/data/pg_hba.conf") else {
                    throw MP.Error.database("cannot open \(directory)/data/pg_hba.conf")
                }
                defer { try? handle.close() }
                try handle.seekToEnd()
                try handle.write(contentsOf: Data(lines.utf8))
            }
            try start()
        }

        deinit { remove() }

        /// The URL clients connect with (the Unix socket).
        public var url: String { "postgres://mp@localhost:\(port)/postgres?host=\(directory)" }

        /// The URL over TCP, to its first listen address (when it listens on one).
        public var tcpURL: String? { listenAddress.map { tcpURL(host: String($0.split(separator: ",").first ?? "")) } }

        /// The URL over TCP to `host` (one of its listen addresses, as another machine reaches it).
        public func tcpURL(host: String) -> String { "postgres://mp@\(host):\(port)/postgres" }

        /// Starts the server (after ``stop()``).
        public func start() throws {
            let options = "-k \(directory) -p \(port) -c listen_addresses='\(listenAddress ?? "")' -c fsync=off "
                + "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200" + (tls ? " -c ssl=on" : "")
            try run("\(binaries)/pg_ctl", ["-D", "\(directory)/data", "-o", options, "-l", "\(directory)/log", "-w", "-t", "60", "start"])
        }

        /// Stops the server (`pg_ctl stop -m fast`: connections are cut).
        public func stop() throws {
            try run("\(binaries)/pg_ctl", ["-D", "\(directory)/data", "-m", "fast", "-w", "-t", "60", "stop"])
        }

        /// Stops and starts it: every connection is cut, the data stays.
        public func restart() throws {
            try stop()
            try start()
        }

        /// Stops the server (immediately) and deletes its folder. Twice is harmless.
        public func remove() {
            guard FileManager.default.fileExists(atPath: directory) else { return }
            try? run("\(binaries)/pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "-t", "30", "stop"], quiet: true)
            try? FileManager.default.removeItem(atPath: directory)
        }

        private func run(_ program: String, _ arguments: [String], quiet: Bool = false) throws {
            try run(program, arguments, asUser: asUser, quiet: quiet)
        }

        /// Runs a command to its end (posix_spawn and waitpid on its pid: this
        /// library reaps its own children, and a server `pg_ctl` starts keeps
        /// no pipe of ours open); its output goes to a file, read on failure.
        private func run(_ program: String, _ arguments: [String], asUser: String?, quiet: Bool = false) throws {
            let argv = (asUser.map { ["/sbin/runuser", "-u", $0, "--", program] } ?? [program]) + arguments
            let outputPath = "/tmp/mp-postgres-command-\(Sys.getpid)-\(UInt32.random(in: 0 ... .max)).log"
            defer { Sys.unlink(outputPath) }
            let status: Int32
            do {
                status = try Sys.run(argv, outputPath: outputPath)
            } catch {
                throw MP.Error.database("cannot run \(argv[0]): \(error)")
            }
            guard Sys.exitedCleanly(status) else {
                if quiet { return }
                let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
                throw MP.Error.database("\((program as NSString).lastPathComponent) \(arguments.joined(separator: " ")) failed: \(text)")
            }
        }
    }
}
