import Glibc
@testable import Multiprocessing
import Testing

@Suite("Pipe and Connection")
struct ConnectionTests {
    @Test("numbers and flags go as stack frames, byte for byte what the encoder writes, and come back as sent")
    func smallFrames() throws {
        func encoderFrame<T: Encodable>(_ value: T) throws -> [UInt8] {
            let payload = try WireFormat.encode(value)
            var frame = [UInt8](repeating: 0, count: MP.Connection.headerSize)
            let length = UInt32(payload.count)
            frame[0] = UInt8(truncatingIfNeeded: length)
            frame[1] = UInt8(truncatingIfNeeded: length >> 8)
            frame[2] = UInt8(truncatingIfNeeded: length >> 16)
            frame[3] = UInt8(truncatingIfNeeded: length >> 24)
            frame[4] = MP.Connection.Kind.codable.rawValue
            frame[5] = MP.Connection.magic
            let tag = WireFormat.typeTag(T.self)
            frame[6] = UInt8(truncatingIfNeeded: tag)
            frame[7] = UInt8(truncatingIfNeeded: tag >> 8)
            return frame + payload
        }
        func stackFrame<T: Encodable>(_ value: T) throws -> [UInt8] {
            let frame = try #require(MP.Connection.smallFrame(value))
            return try frame.withBytes { raw in [UInt8](raw) }
        }
        #expect(try stackFrame(-42) == encoderFrame(-42))
        #expect(try stackFrame(Int32(-7)) == encoderFrame(Int32(-7)))
        #expect(try stackFrame(UInt64.max) == encoderFrame(UInt64.max))
        #expect(try stackFrame(3.25) == encoderFrame(3.25))
        #expect(try stackFrame(Float(1.5)) == encoderFrame(Float(1.5)))
        #expect(try stackFrame(true) == encoderFrame(true))
        #expect(try stackFrame(false) == encoderFrame(false))
        #expect(MP.Connection.smallFrame("text") == nil && MP.Connection.smallFrame(Int?.some(1)) == nil)

        let (a, b) = try MP.Pipe()
        try a.send(Int.min)
        try a.send(Int32.max)
        try a.send(UInt.max)
        try a.send(-0.5)
        try a.send(Float.infinity)
        try a.send(true)
        try a.send("between")
        try a.send(Int?.some(5))
        #expect(try b.recv(Int.self) == Int.min)
        #expect(try b.recv(Int32.self) == Int32.max)
        #expect(try b.recv(UInt.self) == UInt.max)
        #expect(try b.recv(Double.self) == -0.5)
        #expect(try b.recv(Float.self) == Float.infinity)
        #expect(try b.recv(Bool.self) == true)
        #expect(try b.recv(String.self) == "between")
        #expect(try b.recv(Int?.self) == 5)
        // A number read as another type is refused, as through the encoder.
        try a.send(7)
        #expect(throws: MP.Error.self) { try b.recv(Double.self) }
    }

    @Test("a batch leaves in one buffer and arrives as its messages, in either framing; one too large sends nothing")
    func batches() throws {
        for framing in [MP.Connection.Framing.native, .python] {
            var fds: [Int32] = [-1, -1]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
            let a = MP.Connection(fd: fds[0], readable: true, writable: true, maxMessageSize: 1 << 20, framing: framing)
            let b = MP.Connection(fd: fds[1], readable: true, writable: true, maxMessageSize: 1 << 20, framing: framing)
            #expect(!b.hasBufferedMessage)
            let messages: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 7, count: 70_000), [9]]
            try a.sendBytes(batch: messages)
            for message in messages { #expect(try b.recvBytes() == message) }
            try a.sendBytes(batch: [[4], [5, 5]])
            #expect(try b.recvBytes() == [4])
            // The second came in the same read: it is known to be there without a syscall.
            #expect(b.hasBufferedMessage)
            #expect(try b.recvBytes() == [5, 5])
            #expect(!b.hasBufferedMessage)

            let small = MP.Connection(fd: dup(fds[0]), readable: true, writable: true, maxMessageSize: 8, framing: framing)
            #expect(throws: MP.Error.self) { try small.sendBytes(batch: [[1], Array(repeating: 0, count: 9)]) }
            try small.sendBytes(batch: [[5], [6]])
            #expect(try b.recvBytes() == [5]) // nothing of the refused batch went
            #expect(try b.recvBytes() == [6])
            small.close()
            a.close()
            b.close()
        }
    }

    @Test("ping-pong of Codable values between processes; end-of-file when the peer is gone")
    func pingPong() throws {
        let (parentEnd, childEnd) = try MP.Pipe()
        let p = MP.Process {
            parentEnd.close()
            while true {
                let value = try childEnd.recv(Int.self)
                if value < 0 { return }
                try childEnd.send(value + 1)
            }
        }
        try p.start()
        childEnd.close()
        var value = 0
        for _ in 0..<1000 {
            try parentEnd.send(value)
            value = try parentEnd.recv(Int.self)
        }
        #expect(value == 1000)
        try parentEnd.send(-1)
        #expect(throws: MP.Error.endOfFile) { _ = try parentEnd.recv(Int.self) }
        try joinOrKill(p)
        #expect(throws: MP.Error.brokenPipe) { try parentEnd.send(1) }
    }

    @Test("bytes, bitwise values, structured values, and kind/type mismatches")
    func kinds() throws {
        let (a, b) = try MP.Pipe()
        try a.sendBytes([1, 2, 3])
        #expect(try b.recvBytes() == [1, 2, 3])
        try a.sendBitwise(SIMD4<Float>(1, 2, 3, 4))
        #expect(try b.recvBitwise(SIMD4<Float>.self) == SIMD4(1, 2, 3, 4))
        try a.send(WireFormatTests.sample)
        #expect(try b.recv(Everything.self) == WireFormatTests.sample)
        try a.send("text")
        #expect(throws: MP.Error.typeMismatch(expected: "Int")) { _ = try b.recv(Int.self) }
        try a.sendBytes([9])
        #expect(throws: MP.Error.self) { _ = try b.recv(Int.self) }
        try a.send(5)
        #expect(throws: MP.Error.self) { _ = try b.recvBytes() }
        try a.sendBytes([UInt8](repeating: 1, count: 100))
        #expect(throws: MP.Error.messageTooLarge(size: 100, limit: 10)) { _ = try b.recvBytes(maxLength: 10) }
        try a.send(6)
        #expect(try b.recv(Int.self) == 6) // every failure consumed its message: still in step
    }

    @Test("an oversized frame is refused by the sender, skipped by the receiver")
    func sizeLimits() throws {
        let (small, _) = try MP.Pipe(maxMessageSize: 16)
        #expect(throws: MP.Error.messageTooLarge(size: 100, limit: 16)) { try small.sendBytes([UInt8](repeating: 0, count: 100)) }
        // A peer with a larger limit sends a big frame: this end skips it and goes on.
        let (big, strict) = try MP.Pipe(maxMessageSize: 1 << 20)
        let receiver = try rewrap(strict, maxMessageSize: 1024)
        let sender = MP.Process {
            try big.sendBytes([UInt8](repeating: 7, count: 200_000))
            try big.send(77)
        }
        try sender.start()
        #expect(throws: MP.Error.messageTooLarge(size: 200_000, limit: 1024)) { _ = try receiver.recvBytes() }
        #expect(try receiver.recv(Int.self) == 77)
        try joinOrKill(sender)
    }

    @Test("one-way pipes: each end in its own direction; poll with timeouts")
    func simplexAndPoll() throws {
        let (reader, writer) = try MP.Pipe(duplex: false)
        #expect(throws: MP.Error.self) { try reader.send(1) }
        #expect(throws: MP.Error.self) { _ = try writer.recv(Int.self) }
        #expect(try reader.poll() == false)
        #expect(try reader.poll(timeout: 0.02) == false)
        #expect(throws: MP.Error.negativeTimeout(-1)) { _ = try reader.poll(timeout: -1) }
        let p = MP.Process { try writer.send(3) }
        try p.start()
        #expect(try reader.poll(timeout: 20))
        #expect(try reader.recv(Int.self) == 3)
        try joinOrKill(p)
        reader.close()
        reader.close()
        #expect(reader.isClosed)
        #expect(throws: MP.Error.connectionClosed) { _ = try reader.recv(Int.self) }
    }

    @Test("truncated frames and garbage on the wire are clear errors, never a hang")
    func malformedStreams() throws {
        let (a, b) = try MP.Pipe()
        // Half a frame, then the writer goes away.
        let header: [UInt8] = [100, 0, 0, 0, 1, 0x4d, 0, 0]
        _ = header.withUnsafeBytes { write(a.fileno, $0.baseAddress, 8) }
        _ = [UInt8](repeating: 1, count: 10).withUnsafeBytes { write(a.fileno, $0.baseAddress, 10) }
        a.close()
        #expect(throws: MP.Error.truncatedFrame(expected: 108, received: 18)) { _ = try b.recvBytes() }
        #expect(throws: MP.Error.endOfFile) { _ = try b.recvBytes() }

        let (c, d) = try MP.Pipe()
        _ = [UInt8](repeating: 0xAB, count: 32).withUnsafeBytes { write(c.fileno, $0.baseAddress, 32) }
        #expect(throws: MP.Error.self) { _ = try d.recv(Int.self) }

        // Random bytes for a bounded time: every outcome is a thrown error or a value.
        var generator = SystemRandomNumberGenerator()
        let deadline = MonotonicClockForTests.now() + 1
        while MonotonicClockForTests.now() < deadline {
            let (x, y) = try MP.Pipe()
            let noise = (0..<Int.random(in: 1..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = noise.withUnsafeBytes { write(x.fileno, $0.baseAddress, noise.count) }
            x.close()
            for _ in 0..<4 { _ = try? y.recv(Everything.self) }
        }
    }

    @Test("async recv and the messages sequence")
    func asyncMessages() async throws {
        let (reader, writer) = try MP.Pipe(duplex: false)
        let p = MP.Process { for i in 0..<100 { try writer.send(i) } }
        try p.start()
        writer.close()
        var received: [Int] = []
        for try await value in reader.messages(of: Int.self) { received.append(value) }
        #expect(received == Swift.Array(0..<100))
        try await p.join()
        let (r2, w2) = try MP.Pipe()
        async let value = r2.recv(String.self)
        try w2.send("later")
        #expect(try await value == "later")
    }

    @Test("a 1 MiB message crosses intact")
    func largeMessages() throws {
        let (reader, writer) = try MP.Pipe(duplex: false)
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let p = MP.Process { for _ in 0..<3 { try writer.sendBytes(payload) } }
        try p.start()
        writer.close()
        for _ in 0..<3 { #expect(try reader.recvBytes() == payload) }
        try joinOrKill(p)
    }
}

/// A connection on the same descriptor with another size limit (dup'd).
func rewrap(_ connection: MP.Connection, maxMessageSize: Int) throws -> MP.Connection {
    let (fresh, spare) = try MP.Pipe(maxMessageSize: maxMessageSize)
    spare.close()
    dup2(connection.fileno, fresh.fileno)
    return fresh
}

enum MonotonicClockForTests {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
