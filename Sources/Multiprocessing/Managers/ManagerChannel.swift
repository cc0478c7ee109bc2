import Glibc
import MultiprocessingPlatform

/// One authenticated connection between a manager and a client, carrying
/// CPython-framed messages (a big-endian `i32` length, or `-1` and a `u64`).
///
/// Reads never block the socket: a read first spins briefly (the other side
/// usually answers within microseconds from another core, and spinning costs
/// less than sleeping and being woken), then sleeps in `poll` until its
/// deadline. Writes block (messages are small, and a full socket means a
/// slow peer, which the reader's deadline catches).
final class ManagerChannel: @unchecked Sendable {
    enum Failure: Swift.Error {
        /// The peer closed the connection (or reset it).
        case closed
        /// Nothing arrived before the deadline.
        case timeout
        /// The peer announced a message over the limit.
        case tooLarge(Int)
        case system(MP.OSError)
    }

    private(set) var fd: Int32
    let maxMessageSize: Int
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    init(fd: Int32, maxMessageSize: Int) {
        self.fd = fd
        self.maxMessageSize = maxMessageSize
        buffer = [UInt8](repeating: 0, count: 16 << 10)
    }

    deinit { if fd >= 0 { Sys.close(fd) } }

    /// Closes the descriptor now (a forked child's copy of its parent's
    /// connection: the parent's connection stays open).
    func abandon() {
        if fd >= 0 { Sys.close(fd) }
        fd = -1
    }

    /// Sends one framed message (built by ``ManagerMessage/framed()``).
    func send(_ frame: [UInt8]) throws(Failure) {
        let fd = self.fd
        let result = frame.withUnsafeBytes { raw in Result { () throws(MP.OSError) in try Sys.sendAll(fd, raw) } }
        if case .failure(let error) = result {
            throw error.errno == .brokenPipe || error.errno == .connectionReset ? .closed : .system(error)
        }
    }

    /// The next message's payload; throws ``Failure/timeout`` when none
    /// arrived by `deadline` (nil: no limit).
    func receive(until deadline: Deadline?, spinNanoseconds: Int64 = 30_000) throws(Failure) -> [UInt8] {
        let spinUntil = spinNanoseconds > 0 ? Deadline.now + spinNanoseconds : 0
        while true {
            if let message = try takeMessage() { return message }
            if end == buffer.count {
                if start > 0 {
                    buffer.withUnsafeMutableBytes { raw in
                        raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
                    }
                    end -= start
                    start = 0
                } else {
                    buffer.append(contentsOf: repeatElement(0, count: buffer.count))
                }
            }
            let fd = self.fd, offset = end, room = buffer.count - end
            let result = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(MP.OSError) -> Sys.Received in
                    try Sys.receive(fd, into: raw.baseAddress! + offset, count: room, blocking: false)
                }
            }
            switch result {
            case .success(.bytes(let count)):
                end += count
                continue
            case .success(.endOfFile): throw .closed
            case .success(.wouldBlock): break
            case .failure(let error): throw .system(error)
            }
            if Deadline.now < spinUntil { continue }
            let ready: Bool
            do { ready = try Sys.pollReadable(fd, until: deadline) } catch { throw .system(error) }
            if !ready { throw .timeout }
        }
    }

    /// A whole message from the buffer, if one is there.
    private func takeMessage() throws(Failure) -> [UInt8]? {
        let available = end - start
        guard available >= 4 else { return nil }
        var header = 4
        var length = Int(Int32(bigEndian: buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: start, as: Int32.self) }))
        if length == -1 {
            guard available >= 12 else { return nil }
            let long = UInt64(bigEndian: buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: start + 4, as: UInt64.self) })
            length = long > UInt64(Int.max) ? Int.max : Int(long)
            header = 12
        }
        guard length >= 0, length <= maxMessageSize else { throw .tooLarge(length) }
        if available < header + length {
            if buffer.count < header + length {
                // Make room for the whole message once, instead of doubling step by step.
                let kept = Array(buffer[start..<end])
                buffer = [UInt8](repeating: 0, count: header + length)
                buffer.replaceSubrange(0..<kept.count, with: kept)
                end = kept.count
                start = 0
            }
            return nil
        }
        let message = Array(buffer[(start + header)..<(start + header + length)])
        start += header + length
        if start == end {
            start = 0
            end = 0
        }
        return message
    }

    /// Whether the peer closed its end (a waiting call's client went away).
    var peerHungUp: Bool { Sys.peerHungUp(fd) }

    /// Ends the connection for both sides, whoever holds the descriptor (an
    /// async call's cancellation; the reading thread sees end-of-file).
    func shutdown() { Sys.shutdownBoth(fd) }
}
