import Glibc
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
    @inlinable
    package static func send(_ fd: Int32, _ message: inout msghdr) throws(OSError) -> Int {
        try check("sendmsg") { cmp_sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
    }

    /// `send(fd, buffer, count, MSG_NOSIGNAL)`: one buffer and no descriptors,
    /// a shorter path through the kernel than `sendmsg` for a small message.
    /// The bytes sent; a closed peer is `EPIPE` or `ECONNRESET` in the thrown error.
    @inlinable
    package static func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(OSError) -> Int {
        try check("send") { Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }

    /// What one `recv` found.
    @usableFromInline
    package enum Received {
        case bytes(Int)
        /// The peer closed its end (or reset the connection).
        case endOfFile
        /// Nothing yet (only without blocking).
        case wouldBlock
    }

    /// `recv(fd, buffer, count, blocking ? 0 : MSG_DONTWAIT)`.
    @inlinable
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

/// Messages that carry descriptors (`SCM_RIGHTS`): a pool's worker channel,
/// the forkserver's requests and birth notes. One send and one receive
/// primitive; the rest is built on them.
extension Sys {
    /// `sendmsg(fd, bytes, MSG_NOSIGNAL)` with `descriptors` attached, blocking
    /// or not: the count sent, nil when the socket is full (`EAGAIN`, only
    /// without blocking). A closed peer throws (`EPIPE`, `ECONNRESET`), never SIGPIPE.
    package static func sendSome(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, descriptors: [Int32] = [], blocking: Bool = false) throws(OSError) -> Int? {
        try checkAgain("sendmsg") {
            cmp_send_with_descriptors(fd, bytes.baseAddress, bytes.count, descriptors, Int32(descriptors.count), blocking ? 0 : Int32(MSG_DONTWAIT))
        }
    }

    /// Sends all of `bytes` (and `descriptors`, with the first part), blocking
    /// while the socket is full: a worker's reports, a forkserver request.
    package static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, descriptors: [Int32] = []) throws(OSError) {
        var offset = 0
        var attached = descriptors
        repeat {
            let part = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            offset += try sendSome(fd, part, descriptors: attached, blocking: true) ?? 0
            attached = []
        } while offset < bytes.count
    }

    /// ``sendAll(_:_:descriptors:)`` of an array.
    package static func sendAll(_ fd: Int32, _ bytes: [UInt8], descriptors: [Int32] = []) throws(OSError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(OSError) in try sendAll(fd, raw, descriptors: descriptors) } }.get()
    }

    /// `recvmsg(fd, buffer)`, blocking or not: the bytes read, with up to
    /// `maxDescriptors` descriptors that came with them (close-on-exec)
    /// appended to `descriptors`; any beyond are closed, never leaked. A
    /// reset connection is end-of-file.
    package static func receiveSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, descriptors: inout [Int32],
                                    maxDescriptors: Int = 4, blocking: Bool) throws(OSError) -> Received {
        let flags = blocking ? 0 : Int32(MSG_DONTWAIT)
        // The passed descriptors land on the stack: this is every report a
        // pool worker sends, so no allocation per receive.
        let outcome = withUnsafeTemporaryAllocation(of: Int32.self, capacity: max(1, maxDescriptors)) { fds in
            var count: Int32 = 0
            let result = Result { () throws(OSError) -> Int? in
                try checkAgain("recvmsg") {
                    cmp_receive_with_descriptors(fd, buffer.baseAddress, buffer.count, fds.baseAddress, Int32(maxDescriptors), &count, flags)
                }
            }
            descriptors += fds[..<Int(count)]
            return result
        }
        let received: Int?
        switch outcome {
        case .success(let value): received = value
        case .failure(let error) where error.errno == .connectionReset: return .endOfFile
        case .failure(let error): throw error
        }
        guard let received else { return .wouldBlock }
        return received == 0 ? .endOfFile : .bytes(received)
    }

    /// One message of at most `capacity` bytes with its descriptors (a
    /// `SOCK_SEQPACKET` socket's unit); empty bytes at end-of-file, nil when
    /// nothing is waiting (only without blocking).
    package static func receiveMessage(_ fd: Int32, capacity: Int, maxDescriptors: Int, blocking: Bool = true) throws(OSError) -> (bytes: [UInt8], descriptors: [Int32])? {
        var bytes = [UInt8](repeating: 0, count: capacity)
        var descriptors: [Int32] = []
        let received = try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(OSError) -> Received in
                try receiveSome(fd, into: raw, descriptors: &descriptors, maxDescriptors: maxDescriptors, blocking: blocking)
            }
        }.get()
        switch received {
        case .bytes(let count): return (Swift.Array(bytes[..<count]), descriptors)
        case .endOfFile: return ([], descriptors)
        case .wouldBlock: return nil
        }
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
