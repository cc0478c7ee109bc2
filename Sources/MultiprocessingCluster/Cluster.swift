@_exported import Multiprocessing
import Foundation
import PostgresNIO
import NIOSSL
import Logging

extension MP {
    /// The named-task pool on many machines, with PostgreSQL as the engine:
    /// ``MP/ClusterPool`` on the submitting side, `runWorker(database:)`
    /// in every worker (your own program, in worker mode).
    public enum Cluster {}


}

/// A PostgreSQL URL as a client configuration: `postgres://user:password@host:port/database`,
/// with `?host=/socket/dir` for a Unix socket (libpq's convention), and over
/// TCP libpq's `sslmode` (`disable`, `prefer` (the default), `require`,
/// `verify-ca`, `verify-full`) and `sslrootcert` (the CA file to trust).
struct DatabaseAddress: Sendable {
    let configuration: PostgresClient.Configuration
    /// The same, for one direct connection (a first probe with a clear
    /// error); nil when given a client configuration over TCP (its TLS
    /// settings cannot be read back).
    let probeConfiguration: PostgresConnection.Configuration?
    let description: String
    /// Over TCP (not a Unix socket).
    let isTCP: Bool

    init(_ url: String) throws(MP.Error) {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? "") else {
            throw .invalidArgument("'\(url)' is not a postgres:// URL")
        }
        let user = components.user ?? "postgres"
        let password = components.password
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        let port = components.port ?? 5432
        let query = components.queryItems ?? []
        let socketDirectory = query.first { $0.name == "host" }?.value
        var configuration: PostgresClient.Configuration
        if let socketDirectory, socketDirectory.hasPrefix("/") {
            configuration = .init(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)", username: user, password: password,
                                  database: database.isEmpty ? nil : database)
            probeConfiguration = .init(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)", username: user, password: password,
                                       database: database.isEmpty ? nil : database)
            description = "\(socketDirectory) (port \(port))"
            isTCP = false
        } else {
            let host = components.host ?? "localhost"
            let tls = try Self.tls(mode: query.first { $0.name == "sslmode" }?.value ?? "prefer",
                                   rootCertificate: query.first { $0.name == "sslrootcert" }?.value)
            configuration = .init(host: host, port: port, username: user, password: password,
                                  database: database.isEmpty ? nil : database, tls: tls.client)
            var probe = PostgresConnection.Configuration(host: host, port: port, username: user, password: password,
                                                         database: database.isEmpty ? nil : database, tls: tls.connection)
            probe.options.connectTimeout = .seconds(5)
            probeConfiguration = probe
            description = "\(host):\(port)"
            isTCP = true
        }
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = 8
        self.configuration = configuration
    }

    /// A configuration as the caller made it (their TLS, timeouts, pool
    /// size). Over TCP there is no probe (its TLS settings cannot be read
    /// back): an unreachable database fails after the migration's bound.
    init(configuration: PostgresClient.Configuration) {
        self.configuration = configuration
        if let path = configuration.unixSocketPath {
            var probe = PostgresConnection.Configuration(unixSocketPath: path, username: configuration.username,
                                                         password: configuration.password, database: configuration.database)
            probe.options.connectTimeout = .seconds(5)
            probeConfiguration = probe
            description = path
            isTCP = false
        } else {
            probeConfiguration = nil
            description = "\(configuration.host ?? "localhost"):\(configuration.port ?? 5432)"
            isTCP = true
        }
    }

    /// libpq's `sslmode`: `prefer` and `require` encrypt without checking
    /// the certificate; `verify-ca` checks it against the trusted roots;
    /// `verify-full` also checks that it names the host.
    static func tls(mode: String, rootCertificate: String?) throws(MP.Error)
        -> (client: PostgresClient.Configuration.TLS, connection: PostgresConnection.Configuration.TLS) {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch mode {
        case "disable": return (.disable, .disable)
        case "prefer", "require": tls.certificateVerification = .none
        case "verify-ca": tls.certificateVerification = .noHostnameVerification
        case "verify-full": tls.certificateVerification = .fullVerification
        default:
            throw .invalidArgument("sslmode must be disable, prefer, require, verify-ca or verify-full (got '\(mode)')")
        }
        if let rootCertificate {
            guard FileManager.default.isReadableFile(atPath: rootCertificate) else {
                throw .invalidArgument("sslrootcert '\(rootCertificate)' is not a readable file")
            }
            tls.trustRoots = .file(rootCertificate)
        }
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: tls) } catch {
            throw .invalidArgument("the TLS settings do not load: \(error)")
        }
        return mode == "prefer" ? (.prefer(tls), .prefer(context)) : (.require(tls), .require(context))
    }
}
