#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import SystemPackage

/// Sockets: the connected pairs behind ``MP/Pipe(duplex:maxMessageSize:)``.
extension Sys {
    /// `socketpair(AF_UNIX, type | SOCK_CLOEXEC)`: a byte stream by default;
    /// `SOCK_SEQPACKET` keeps message boundaries (the forkserver's channel).
    static func socketPair(_ type: __socket_type = SOCK_STREAM) throws(MP.OSError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try check("socketpair") { socketpair(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return (fds[0], fds[1])
    }

    /// `sendmsg(fd, message, MSG_NOSIGNAL)`: the bytes sent. A closed peer is
    /// `EPIPE` or `ECONNRESET` in the thrown error (no SIGPIPE).
    static func send(_ fd: Int32, _ message: inout msghdr) throws(MP.OSError) -> Int {
        try check("sendmsg") { cmp_sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
    }

    /// What one `recv` found.
    enum Received {
        case bytes(Int)
        /// The peer closed its end (or reset the connection).
        case endOfFile
        /// Nothing yet (only without blocking).
        case wouldBlock
    }

    /// `recv(fd, buffer, count, blocking ? 0 : MSG_DONTWAIT)`.
    static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, blocking: Bool = true) throws(MP.OSError) -> Received {
        do {
            guard let received = try checkAgain("recv", { Glibc.recv(fd, buffer, count, blocking ? 0 : Int32(MSG_DONTWAIT)) }) else {
                return .wouldBlock
            }
            return received == 0 ? .endOfFile : .bytes(received)
        } catch where error.errno == .connectionReset {
            return .endOfFile
        }
    }
}
