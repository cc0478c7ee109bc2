import Glibc
import _CMultiprocessingShims

/// Listening and connecting stream sockets (``MP/Listener``, `MP.Client`):
/// Unix paths, the Linux abstract namespace, and TCP over IPv4 and IPv6
/// through `getaddrinfo`. Every TCP socket of ours sends at once
/// (`TCP_NODELAY`): the handshake and the request/reply traffic on top of it
/// are small messages the peer answers, where Nagle's algorithm against
/// delayed ACKs costs about 40 ms a turn.
extension Sys {
    /// Why an address could not be used: a system call's errno, or a host name that does not resolve.
    package enum AddressFailure: Error {
        case system(OSError)
        case unresolved(String)
    }

    /// `socket(family, type | SOCK_CLOEXEC, protocol)`.
    package static func socket(_ family: Int32, _ type: Int32, _ protocolNumber: Int32 = 0) throws(OSError) -> Int32 {
        try check("socket") { Glibc.socket(family, type | Int32(SOCK_CLOEXEC.rawValue), protocolNumber) }
    }

    /// `setsockopt(fd, level, option, &value)` for an `int` option.
    package static func setOption(_ fd: Int32, _ level: Int32, _ option: Int32, _ value: Int32) throws(OSError) {
        var value = value
        _ = try check("setsockopt") { setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// A TCP socket that notices a silent peer (a cut link, a dead machine)
    /// within about `seconds`: `SO_KEEPALIVE` with `TCP_KEEPIDLE` a third of
    /// it and `TCP_KEEPINTVL` a sixth (probes the kernel answers, whatever the
    /// peer's threads do), and `TCP_USER_TIMEOUT` for data sent and not
    /// acknowledged. A read or write then fails with `ETIMEDOUT`.
    /// Not a TCP socket: nothing is set.
    package static func setLinkTimeout(_ fd: Int32, seconds: Double) {
        let idle = Int32(max(1, (seconds / 3).rounded(.up)))
        let interval = Int32(max(1, (seconds / 6).rounded(.up)))
        guard (try? setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1)) != nil else { return }
        _ = try? setOption(fd, Int32(IPPROTO_TCP), 4 /* TCP_KEEPIDLE */, idle)
        _ = try? setOption(fd, Int32(IPPROTO_TCP), 5 /* TCP_KEEPINTVL */, interval)
        _ = try? setOption(fd, Int32(IPPROTO_TCP), 6 /* TCP_KEEPCNT */, 3)
        _ = try? setOption(fd, Int32(IPPROTO_TCP), 18 /* TCP_USER_TIMEOUT */, Int32(clamping: Int(seconds * 1000)))
    }

    /// A `sockaddr_un` for a path, or for an abstract name (a leading NUL byte).
    private static func unixAddress(_ name: String, abstract: Bool) throws(OSError) -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Swift.Array(name.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count + 1 <= capacity else { throw OSError("bind", errno: .fileNameTooLong) }
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            let start = abstract ? 1 : 0 // an abstract name follows a NUL byte
            UnsafeMutableRawBufferPointer(rebasing: path[start..<start + bytes.count]).copyBytes(from: bytes)
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        // An abstract name is exactly its bytes; a path ends with its NUL.
        return (address, socklen_t(offset + 1 + bytes.count))
    }

    /// `bind(fd, address)`, whatever the address's type.
    private static func bind<Address>(_ fd: Int32, _ address: Address, _ length: socklen_t) throws(OSError) {
        var address = address
        _ = try check("bind") {
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) } }
        }
    }

    /// `socket` + `bind` + `listen` on a Unix path or abstract name; the socket
    /// file is created with `mode` from the start (`umask` around `bind`): no
    /// window in which another user could connect.
    package static func listenUnix(_ name: String, abstract: Bool, backlog: Int, mode: UInt32) throws(AddressFailure) -> Int32 {
        do throws(OSError) {
            let (address, length) = try unixAddress(name, abstract: abstract)
            let fd = try socket(AF_UNIX, Int32(SOCK_STREAM.rawValue))
            do throws(OSError) {
                let previous = umask(0o777 & ~mode_t(mode))
                defer { umask(previous) }
                try bind(fd, address, length)
                _ = try check("listen") { Glibc.listen(fd, Int32(backlog)) }
            } catch {
                close(fd)
                throw error
            }
            return fd
        } catch {
            throw .system(error)
        }
    }

    /// `socket` + `connect` to a Unix path or abstract name.
    package static func connectUnix(_ name: String, abstract: Bool) throws(AddressFailure) -> Int32 {
        do throws(OSError) {
            let (address, length) = try unixAddress(name, abstract: abstract)
            let fd = try socket(AF_UNIX, Int32(SOCK_STREAM.rawValue))
            do throws(OSError) {
                var copy = address
                _ = try check("connect") {
                    withUnsafePointer(to: &copy) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) } }
                }
            } catch {
                close(fd)
                throw error
            }
            return fd
        } catch {
            throw .system(error)
        }
    }

    /// One address `getaddrinfo` found, copied out of its list.
    private struct Candidate {
        var family: Int32
        var type: Int32
        var protocolNumber: Int32
        var address: sockaddr_storage
        var length: socklen_t
    }

    /// `getaddrinfo(host, port)` for stream sockets (empty host with
    /// `passive`: every local address).
    private static func resolve(_ host: String, _ port: Int, passive: Bool) throws(AddressFailure) -> [Candidate] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = host.isEmpty
            ? getaddrinfo(nil, String(port), &hints, &list)
            : getaddrinfo(host, String(port), &hints, &list)
        if status == EAI_SYSTEM { throw .system(failure("getaddrinfo", errno)) }
        if status != 0 { throw .unresolved(String(cString: gai_strerror(status))) }
        defer { freeaddrinfo(list) }
        var found: [Candidate] = []
        var entry = list
        while let info = entry?.pointee {
            var storage = sockaddr_storage()
            let length = min(Int(info.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
            if let source = info.ai_addr {
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: source, count: length)) }
            }
            found.append(Candidate(family: info.ai_family, type: info.ai_socktype, protocolNumber: info.ai_protocol,
                                   address: storage, length: socklen_t(length)))
            entry = info.ai_next
        }
        return found
    }

    /// The port of a bound IPv4 or IPv6 socket (`getsockname`).
    private static func boundPort(_ fd: Int32) throws(OSError) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try check("getsockname") {
            withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        }
        return port(of: storage)
    }

    private static func port(of storage: sockaddr_storage) -> Int {
        let family = Int32(storage.ss_family)
        return withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET: return Int(UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self)))
            case AF_INET6: return Int(UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self)))
            default: return 0
            }
        }
    }

    /// Each address `getaddrinfo` gives for `host` and `port`, in turn: a
    /// socket made for it and handed to `setUp`; the first that `setUp`
    /// accepts is the answer, the others are closed. When none is, the last
    /// failure (or `noAddress` when there was no address) is thrown.
    private static func firstSocket<T>(_ host: String, _ port: Int, passive: Bool, noAddress: OSError,
                                       _ setUp: (Int32, Candidate) throws(OSError) -> T) throws(AddressFailure) -> T {
        var lastError = noAddress
        for candidate in try resolve(host, port, passive: passive) {
            do throws(OSError) {
                let fd = try socket(candidate.family, candidate.type, candidate.protocolNumber)
                do throws(OSError) {
                    return try setUp(fd, candidate)
                } catch {
                    close(fd)
                    throw error
                }
            } catch {
                lastError = error
            }
        }
        throw .system(lastError)
    }

    /// `getaddrinfo` + `socket` + `bind` + `listen` on TCP (`SO_REUSEADDR`, as
    /// CPython's `SocketListener`): the descriptor and the port it got.
    package static func listenTCP(host: String, port: Int, backlog: Int) throws(AddressFailure) -> (Int32, port: Int) {
        try firstSocket(host, port, passive: true, noAddress: OSError("bind", errno: .addressNotAvailable)) { (fd, candidate) throws(OSError) in
            try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            try bind(fd, candidate.address, candidate.length)
            _ = try check("listen") { Glibc.listen(fd, Int32(backlog)) }
            return (fd, try boundPort(fd))
        }
    }

    /// `getaddrinfo` + `socket` + `connect` over TCP (IPv4 or IPv6), each
    /// address in turn; with a `timeout` (seconds), each `connect` gives up
    /// with `ETIMEDOUT` after it (a dead link takes the kernel minutes).
    package static func connectTCP(host: String, port: Int, timeout: Double? = nil) throws(AddressFailure) -> Int32 {
        try firstSocket(host, port, passive: false, noAddress: OSError("connect", errno: .connectionRefused)) { (fd, candidate) throws(OSError) in
            try connect(fd, candidate.address, candidate.length, timeout: timeout)
            try setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            return fd
        }
    }

    /// `connect`, within `timeout` seconds when given: a non-blocking connect,
    /// then `poll` for writability and `SO_ERROR`.
    private static func connect(_ fd: Int32, _ address: sockaddr_storage, _ length: socklen_t, timeout: Double?) throws(OSError) {
        var address = address
        func attempt() -> Int32 {
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) } }
        }
        guard let timeout else {
            _ = try check("connect") { attempt() }
            return
        }
        let flags = try check("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        _ = try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        if attempt() < 0 {
            let code = errno
            guard code == EINPROGRESS || code == EINTR else { throw failure("connect", code) }
            let deadline = Deadline.after(validSeconds: max(0, timeout))
            var entry = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            if try poll(&entry, until: deadline) == 0 { throw OSError("connect", errno: .timedOut) }
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            _ = try check("getsockopt(SO_ERROR)") { getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) }
            if error != 0 { throw failure("connect", error) }
        }
        _ = try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags) }
    }

    /// `accept4(listener, SOCK_CLOEXEC)` on a non-blocking listening socket:
    /// the connection and, for TCP, the peer's "host port" (and `TCP_NODELAY`
    /// set); nil when none is waiting or the peer gave up first.
    package static func accept(_ listener: Int32) throws(OSError) -> (Int32, peer: String)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd: Int32
        do throws(OSError) {
            let accepted = try checkAgain("accept4") {
                withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { cmp_accept4_cloexec(listener, $0, &length) }
                }
            }
            guard let accepted else { return nil }
            fd = accepted
        } catch where error.errno == .connectionAbort {
            return nil
        }
        let family = Int32(storage.ss_family)
        guard family == AF_INET || family == AF_INET6 else { return (fd, "") }
        try? setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
            }
        }
        guard named == 0 else { return (fd, "") }
        let hostText = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (fd, "\(hostText) \(port(of: storage))")
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
