import MultiprocessingPlatform
extension MP {
    /// Where a ``MP/Listener`` listens and a ``MP/Client(address:authkey:legacyDigest:handshakeTimeout:maxMessageSize:codec:)``
    /// connects: Python's `address` (a path, a `'\0name'`, or a `(host, port)` tuple).
    public enum Address: Sendable, Hashable, Codable, CustomStringConvertible {
        /// A Unix socket file (Python's `'/tmp/x.sock'`); a listener creates it owner-only and removes it when closed.
        case unix(String)
        /// A Linux abstract-namespace Unix socket (Python's `'\0name'`): no file, gone with its listener.
        case abstract(String)
        /// TCP over IPv4 or IPv6 (Python's `('host', port)`): a name or a numeric address; port 0 picks a free one.
        case tcp(host: String, port: Int)

        public var description: String {
            switch self {
            case .unix(let path): return path
            case .abstract(let name): return "\\0" + name
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            }
        }

        /// A socket connected to this address (`connect` on a Unix path, an
        /// abstract name, or TCP, giving up after `timeout` seconds over TCP;
        /// nil: the kernel's own limit).
        func connectedSocket(timeout: Double? = nil) throws(Sys.AddressFailure) -> Int32 {
            switch self {
            case .unix(let path): return try Sys.connectUnix(path, abstract: false)
            case .abstract(let name): return try Sys.connectUnix(name, abstract: true)
            case .tcp(let host, let port):
                guard (1...65535).contains(port) else { throw Sys.AddressFailure.unresolved("port \(port) is outside 1...65535") }
                if let timeout { return try Sys.connectTCP(host: host, port: port, timeout: timeout) }
                return try Sys.connectTCP(host: host, port: port)
            }
        }
    }
}
