#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import SystemPackage

/// Sockets: the connected pairs behind ``MP/Pipe(duplex:maxMessageSize:)``.
extension Sys {
    /// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)` (a byte stream), or
    /// with `keepingMessages`, `SOCK_SEQPACKET`: message boundaries kept (the forkserver's channel).
    package static func socketPair(keepingMessages: Bool = false) throws(OSError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let type = keepingMessages ? SOCK_SEQPACKET : SOCK_STREAM
        _ = try check("socketpair") { socketpair(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return (fds[0], fds[1])
    }

    /// The most descriptors one message carries (the kernel's `SCM_MAX_FD`).
    package static var maxPassedDescriptors: Int { Int(CMP_MAX_PASSED_DESCRIPTORS) }

    /// `sendmsg(fd, message, MSG_NOSIGNAL)`: the bytes sent. A closed peer is
    /// `EPIPE` or `ECONNRESET` in the thrown error (no SIGPIPE).
    package static func send(_ fd: Int32, _ message: inout msghdr) throws(OSError) -> Int {
        try check("sendmsg") { cmp_sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
    }

    /// What one `recv` found.
    package enum Received {
        case bytes(Int)
        /// The peer closed its end (or reset the connection).
        case endOfFile
        /// Nothing yet (only without blocking).
        case wouldBlock
    }

    /// `recv(fd, buffer, count, blocking ? 0 : MSG_DONTWAIT)`.
    package static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, blocking: Bool = true) throws(OSError) -> Received {
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

/// A pool's worker channel: a stream socket whose messages may carry
/// descriptors, written without blocking on the parent's side.
extension Sys {
    /// `sendmsg(fd, bytes, MSG_NOSIGNAL | MSG_DONTWAIT)` with `descriptors`
    /// attached (SCM_RIGHTS): the count sent, nil when the socket is full
    /// (`EAGAIN`). A closed peer throws (`EPIPE`, `ECONNRESET`).
    package static func sendSome(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, descriptors: [Int32] = []) throws(OSError) -> Int? {
        try checkAgain("sendmsg") {
            cmp_send_with_descriptors(fd, bytes.baseAddress, bytes.count, descriptors, Int32(descriptors.count), Int32(MSG_DONTWAIT))
        }
    }

    /// Sends all of `bytes`, blocking while the socket is full (a worker's reports).
    package static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(OSError) {
        var offset = 0
        while offset < bytes.count {
            let part = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            offset += try check("sendmsg") { cmp_send_with_descriptors(fd, part.baseAddress, part.count, nil, 0, 0) }
        }
    }

    /// `recvmsg(fd, buffer)`, blocking or not: the bytes read, with the
    /// descriptors that came with them (close-on-exec) appended to `descriptors`.
    package static func receiveSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, descriptors: inout [Int32],
                            blocking: Bool) throws(OSError) -> Received {
        var passed: (Int32, Int32, Int32, Int32) = (-1, -1, -1, -1)
        var count: Int32 = 0
        let flags = blocking ? 0 : Int32(MSG_DONTWAIT)
        let received: Int?
        do {
            received = try withUnsafeMutableBytes(of: &passed) { (fds) throws(OSError) -> Int? in
                try checkAgain("recvmsg") {
                    cmp_receive_with_descriptors(fd, buffer.baseAddress, buffer.count, fds.baseAddress!.assumingMemoryBound(to: Int32.self), 4, &count, flags)
                }
            }
        } catch where error.errno == .connectionReset {
            return .endOfFile
        }
        withUnsafeBytes(of: passed) { fds in
            for index in 0..<Int(count) { descriptors.append(fds.load(fromByteOffset: index * 4, as: Int32.self)) }
        }
        guard let received else { return .wouldBlock }
        return received == 0 ? .endOfFile : .bytes(received)
    }

    /// `fcntl(fd, F_SETFL, O_NONBLOCK)`: this end's reads and writes never block.
    package static func setNonBlocking(_ fd: Int32) throws(OSError) {
        let flags = try check("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        _ = try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// `shutdown(fd, SHUT_WR)`: the peer reads end-of-file once it has read
    /// what was sent, whoever else holds the socket.
    package static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// `shutdown(fd, SHUT_RDWR)`: a thread blocked reading or writing `fd`
    /// returns at once (end-of-file), and the peer sees the connection end.
    package static func shutdownBoth(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// `poll(fd, POLLRDHUP, 0)`: whether the peer closed its end (or the
    /// connection failed), without reading anything.
    package static func peerHungUp(_ fd: Int32) -> Bool {
        let rdhup: Int32 = 0x2000 // POLLRDHUP (Linux), which Glibc's module does not export
        var entry = pollfd(fd: fd, events: Int16(rdhup), revents: 0)
        guard Glibc.poll(&entry, 1, 0) > 0 else { return false }
        return Int32(entry.revents) & (rdhup | POLLHUP | POLLERR | POLLNVAL) != 0
    }
}
