import Testing
import Foundation
import PostgresNIO
import NetworkLab
@testable import MultiprocessingCluster
@_spi(Cluster) import Multiprocessing

/// A certificate authority and a server certificate it signed (for
/// `localhost` and 127.0.0.1), made by the `openssl` command in a temporary
/// folder.
struct TestCertificates {
    let folder: String
    var authority: String { "\(folder)/ca.crt" }
    var certificate: String { "\(folder)/server.crt" }
    var key: String { "\(folder)/server.key" }

    static var available: Bool { NetworkLab.run(["openssl", "version"], quiet: true) == 0 }

    init(name: String = "mp-test-ca") throws {
        folder = "/tmp/mp-tls-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: "\(folder)/san.ext", atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(folder)/ca.key", "-out", "\(folder)/ca.crt",
             "-days", "2", "-subj", "/CN=\(name)"],
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(folder)/server.key", "-out", "\(folder)/server.csr",
             "-subj", "/CN=localhost"],
            ["openssl", "x509", "-req", "-in", "\(folder)/server.csr", "-CA", "\(folder)/ca.crt", "-CAkey", "\(folder)/ca.key",
             "-CAcreateserial", "-out", "\(folder)/server.crt", "-days", "2", "-extfile", "\(folder)/san.ext"],
        ]
        for step in steps where NetworkLab.run(step, quiet: true) != 0 {
            remove()
            throw LabError(description: "certificate step failed: \(step.joined(separator: " "))")
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: folder) }
}

@Suite("Cluster over TLS", .serialized,
       .enabled(if: MP.Cluster.LocalPostgres.isAvailable && TestCertificates.available, "needs PostgreSQL's server programs and openssl"))
struct ClusterTLSTests {
    /// Whether the connection the pool's own store uses is encrypted.
    func encrypted(_ pool: MP.ClusterPool) async throws -> Bool {
        let rows = try await pool.store.client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", logger: ClusterStore.logger)
        for try await ssl in rows.decode(Bool.self) { return ssl }
        return false
    }

    @Test("sslmode: verify-full against the server's authority works and encrypts; disable does not; a stranger's authority is refused")
    func sslModes() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let db = try MP.Cluster.LocalPostgres(listenAddress: "127.0.0.1", certificateFile: certificates.certificate,
                                              privateKeyFile: certificates.key)
        defer { db.remove() }
        let worker = try startWorker(db.url) // through the Unix socket: a forked child cannot resolve TCP addresses
        defer { try? stopWorker(worker) }

        let verified = try await MP.ClusterPool(
            database: "postgres://mp@localhost:\(db.port)/postgres?sslmode=verify-full&sslrootcert=\(certificates.authority)")
        #expect(try await encrypted(verified))
        #expect(try await verified.apply(ClusterSquare(x: 12)) == 144)
        verified.close()
        try await verified.join()

        for mode in ["require", "prefer"] {
            let pool = try await MP.ClusterPool(database: "postgres://mp@127.0.0.1:\(db.port)/postgres?sslmode=\(mode)")
            #expect(try await encrypted(pool), "sslmode=\(mode)")
            pool.close()
            try await pool.join()
        }
        let plain = try await MP.ClusterPool(database: "postgres://mp@127.0.0.1:\(db.port)/postgres?sslmode=disable")
        #expect(try await encrypted(plain) == false)
        plain.close()
        try await plain.join()

        let stranger = try TestCertificates(name: "someone-else")
        defer { stranger.remove() }
        do {
            _ = try await MP.ClusterPool(database: "postgres://mp@localhost:\(db.port)/postgres?sslmode=verify-ca&sslrootcert=\(stranger.authority)")
            Issue.record("a certificate from an untrusted authority was accepted")
        } catch {
            guard error.code == .database else { Issue.record("unexpected \(error)"); return }
            #expect(error.message.contains("cannot connect"), "\(error)")
        }
    }

    @Test("bad TLS settings: an unknown sslmode, a missing root certificate")
    func badSettings() async throws {
        await #expect(throws: MP.Error.invalidArgument("sslmode must be disable, prefer, require, verify-ca or verify-full (got 'always')")) {
            _ = try await MP.ClusterPool(database: "postgres://mp@localhost/postgres?sslmode=always")
        }
        await #expect(throws: MP.Error.invalidArgument("sslrootcert '/nonexistent/ca.crt' is not a readable file")) {
            _ = try await MP.ClusterPool(database: "postgres://mp@localhost/postgres?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")
        }
        #expect(throws: MP.Error.invalidArgument("certificateFile and privateKeyFile go together")) {
            _ = try MP.Cluster.LocalPostgres(certificateFile: "/tmp/x.crt")
        }
    }
}
