#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims

/// Listening and connecting stream sockets (``MP/Listener``, ``MP/Client(address:authkey:legacyDigest:handshakeTimeout:maxMessageSize:codec:)``):
/// the sockaddr work is in `listener.c`; here, one error path.
extension Sys {
    /// Why an address could not be used: a system call's errno, or a host name that does not resolve.
    package enum AddressFailure: Error {
        case system(OSError)
        case unresolved(String)
    }

    private static func socketResult(_ operation: String, _ result: Int32) throws(AddressFailure) -> Int32 {
        if result >= 0 { return result }
        if -result >= 1000 { throw .unresolved(String(cString: cmp_address_error(-result))) }
        throw .system(failure(operation, -result))
    }

    /// `socket` + `bind` + `listen` on a Unix path or abstract name; the file gets `mode`.
    package static func listenUnix(_ name: String, abstract: Bool, backlog: Int, mode: UInt32) throws(AddressFailure) -> Int32 {
        try socketResult("bind", cmp_listen_unix(name, abstract ? 1 : 0, Int32(backlog), mode))
    }

    /// `socket` + `connect` to a Unix path or abstract name.
    package static func connectUnix(_ name: String, abstract: Bool) throws(AddressFailure) -> Int32 {
        try socketResult("connect", cmp_connect_unix(name, abstract ? 1 : 0))
    }

    /// `getaddrinfo` + `socket` + `bind` + `listen` on TCP; the descriptor and the port it got.
    package static func listenTCP(host: String, port: Int, backlog: Int) throws(AddressFailure) -> (Int32, port: Int) {
        var bound: Int32 = 0
        let fd = try socketResult("bind", cmp_listen_tcp(host, Int32(port), Int32(backlog), &bound))
        return (fd, Int(bound))
    }

    /// `getaddrinfo` + `socket` + `connect` over TCP (IPv4 or IPv6).
    package static func connectTCP(host: String, port: Int) throws(AddressFailure) -> Int32 {
        try socketResult("connect", cmp_connect_tcp(host, Int32(port)))
    }

    /// ``connectTCP(host:port:)`` that fails with `ETIMEDOUT` after `timeout` seconds (a dead link).
    package static func connectTCP(host: String, port: Int, timeout: Double) throws(AddressFailure) -> Int32 {
        try socketResult("connect", cmp_connect_tcp_within(host, Int32(port), Int32(clamping: Int((timeout * 1000).rounded(.up)))))
    }

    /// `accept4` on a non-blocking listening socket: the connection and the
    /// peer's "host port" (TCP), or nil when none is waiting.
    package static func accept(_ listener: Int32) throws(OSError) -> (Int32, peer: String)? {
        var peer = [CChar](repeating: 0, count: 128)
        let fd = cmp_accept(listener, &peer, Int32(peer.count))
        if fd >= 0 { return (fd, String(decoding: peer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        if -fd == EAGAIN || -fd == EWOULDBLOCK || -fd == ECONNABORTED { return nil }
        throw failure("accept4", -fd)
    }

    /// `unlink(path)`, ignoring a file already gone.
    package static func unlink(_ path: String) {
        _ = Glibc.unlink(path)
    }
}

extension Sys {
    /// `count` bytes from the kernel's random source (`getrandom`), in one call for a challenge-sized request.
    package static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = bytes.withUnsafeMutableBytes { cmp_getrandom($0.baseAddress! + filled, UInt(count - filled)) }
            if got > 0 { filled += got } else if errno != EINTR { preconditionFailure("getrandom failed: errno \(errno)") }
        }
        return bytes
    }
}
