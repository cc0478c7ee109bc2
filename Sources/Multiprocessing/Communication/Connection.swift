import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import Synchronization
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.Pipe(duplex)`: two connected ends.
    ///
    /// With `duplex` (the default) both ends send and receive; otherwise the
    /// first end only receives and the second only sends, as in Python.
    /// ```swift
    /// let (parentEnd, childEnd) = try MP.Pipe()
    /// let p = MP.Process { try childEnd.send(["hello", "world"]) }
    /// try p.start()
    /// print(try parentEnd.recv([String].self))
    /// ```
    /// - Parameters:
    ///   - duplex: both ends send and receive (a socketpair either way).
    ///   - maxMessageSize: frames larger than this are refused on both
    ///   sides with ``MP/Error/Code/tooLarge``.
    public static func Pipe(duplex: Bool = true, maxMessageSize: Int = Connection.defaultMaxMessageSize)
        throws(MP.Error) -> (Connection, Connection) {
        var fds: [Int32] = [-1, -1]
        do {
            (fds[0], fds[1]) = try Sys.socketPair()
        } catch {
            throw .system(error)
        }
        if !duplex {
            _ = shutdown(fds[0], Int32(SHUT_WR))
            _ = shutdown(fds[1], Int32(SHUT_RD))
        }
        return (Connection(fd: fds[0], readable: true, writable: duplex, maxMessageSize: maxMessageSize),
                Connection(fd: fds[1], readable: duplex, writable: true, maxMessageSize: maxMessageSize))
    }



    /// One end of a ``MP/Pipe(duplex:maxMessageSize:)``: Python's `Connection`.
    ///
    /// Messages are length-framed: `send` and `recv` move `Codable` values in
    /// the library's binary format, `sendBytes`/`recvBytes` move raw bytes, and
    /// `sendBitwise`/`recvBitwise` copy a `BitwiseCopyable` value's bytes with
    /// no encoding at all. Each method checks that the frame was sent by its
    /// counterpart. One connection may be used from several threads; frames
    /// never interleave. After a fork both processes hold both ends: close the
    /// ones a process does not use, so end-of-file can be seen.
    public final class Connection: @unchecked Sendable {
        /// 64 MiB.
        public static let defaultMaxMessageSize = 64 << 20

        enum Kind: UInt8 {
            case codable = 0, bytes = 1, bitwise = 2
            var method: String {
                switch self {
                case .codable: return "send(_:)/recv(_:)"
                case .bytes: return "sendBytes(_:)/recvBytes()"
                case .bitwise: return "sendBitwise(_:)/recvBitwise(_:)"
                }
            }
        }

        static let headerSize = 8
        static let magic: UInt8 = 0x4d

        /// How frames are delimited on the stream.
        enum Framing: UInt8, Codable {
            /// This library's pipes: `[u32 length][kind][magic][u16 type]`, little-endian.
            case native = 0
            /// CPython's `Connection` (what ``MP/Listener`` and ``MP/Client``
            /// speak): `[i32 length]`, big-endian, or `-1` and a `u64` length;
            /// a value sent with `send`/`sendBitwise` starts its payload with
            /// `[magic][kind][u16 type]`, a `sendBytes` payload is bare.
            case python = 1
        }

        let framing: Framing

        /// How `send` and `recv` encode `Codable` values.
        public enum Codec: UInt8, Sendable {
            /// This library's wire format (the default between Swift processes).
            case native = 0
            /// Python's pickle (protocol 4), as CPython's `conn.send(obj)` and
            /// `conn.recv()` speak it: ``MP/PickleEncoder`` and the safe
            /// ``MP/PickleDecoder``, one message per value.
            case pickle = 1
        }

        private let codecState = Atomic<UInt8>(Codec.native.rawValue)

        /// How `send` and `recv` encode values on this connection; settable at
        /// any time (both ends must agree): `.pickle` to talk to CPython's
        /// `send`/`recv`, `.native` (the default) between Swift processes.
        public var codec: Codec {
            get { Codec(rawValue: codecState.load(ordering: .relaxed)) ?? .native }
            set { codecState.store(newValue.rawValue, ordering: .relaxed) }
        }

        /// The header length of the frame at `start` (12 for CPython's long form).
        private var header = Connection.headerSize

        private var fd: Int32
        /// The largest frame this end sends or accepts.
        public let maxMessageSize: Int
        private let readable: Bool
        private let writable: Bool
        let sendLock = ForkSafeLock()
        let recvLock = ForkSafeLock()
        private var buffer: [UInt8] = []
        private var start = 0
        private var end = 0
        private var sawEOF = false
        /// After a large frame, the next header is read alone, so that frame's
        /// payload goes straight to its destination instead of through the buffer.
        private var lastFrameWasLarge = false

        init(fd: Int32, readable: Bool, writable: Bool, maxMessageSize: Int, framing: Framing = .native) {
            self.fd = fd
            self.readable = readable
            self.writable = writable
            self.maxMessageSize = maxMessageSize
            self.framing = framing
            header = framing == .native ? Self.headerSize : 4
        }

        deinit { if fd >= 0 { Sys.close(fd) } }

        /// Python's `readable`: whether this end receives.
        public var isReadable: Bool { readable }
        /// Python's `writable`: whether this end sends.
        public var isWritable: Bool { writable }

        /// Python's `fileno()`; -1 once closed.
        public var fileno: Int32 { fd }

        /// Python's `closed`.
        public var isClosed: Bool { fd < 0 }

        /// Python's `close()`. Closing twice is harmless.
        public func close() {
            sendLock.withLock {
                recvLock.withLock {
                    if fd >= 0 { Sys.close(fd) }
                    fd = -1
                }
            }
        }

        // MARK: sending

        /// Python's `send(obj)`: sends a `Codable` value (in the connection's ``codec``).
        public func send<T: Encodable>(_ value: T) throws(MP.Error) {
            if codec == .pickle {
                let bytes: [UInt8]
                do { bytes = try PickleEncoder().encode(value) } catch { throw .pickle(error) }
                return try sendBytes(bytes)
            }
            if framing == .native, let frame = Self.smallFrame(value) {
                // A number or a flag: its frame is built on the stack and sent with one `send`.
                return try frame.withBytes { raw throws(MP.Error) in
                    try checkSendable(raw.count - Self.headerSize)
                    try sendLock.withLock { () throws(MP.Error) in try writeAll(raw, UnsafeRawBufferPointer(start: nil, count: 0)) }
                }
            }
            var writer = ByteWriter()
            writer.bytes.append(contentsOf: repeatElement(0, count: Self.headerSize))
            do { try WireFormat.encode(value, into: &writer) } catch { throw .encoding(error) }
            if framing == .python {
                let result = writer.bytes.withUnsafeBytes { raw in
                    Result { () throws(MP.Error) in
                        try sendPayload(UnsafeRawBufferPointer(rebasing: raw[Self.headerSize...]), kind: .codable, type: WireFormat.typeTag(T.self))
                    }
                }
                return try result.get()
            }
            try sendFrame(&writer.bytes, kind: .codable, type: WireFormat.typeTag(T.self))
        }

        /// Python's `send_bytes(buf)`.
        public func sendBytes(_ bytes: some Collection<UInt8>) throws(MP.Error) {
            let payloadSize = bytes.count
            if let result = bytes.withContiguousStorageIfAvailable({ buffer -> Result<Void, MP.Error> in
                Result { () throws(MP.Error) in try sendPayload(UnsafeRawBufferPointer(buffer), kind: .bytes, type: 0) }
            }) {
                return try result.get()
            }
            if framing == .python {
                let contiguous = [UInt8](bytes)
                let result = contiguous.withUnsafeBytes { raw in
                    Result { () throws(MP.Error) in try sendPayload(raw, kind: .bytes, type: 0) }
                }
                return try result.get()
            }
            var frame = [UInt8](repeating: 0, count: Self.headerSize)
            frame.reserveCapacity(Self.headerSize + payloadSize)
            frame.append(contentsOf: bytes)
            try sendFrame(&frame, kind: .bytes, type: 0)
        }

        /// Sends several messages of bytes at once: each arrives as one
        /// `recvBytes`, in order, but they leave in one buffer, so a peer
        /// that is asleep is woken once for all of them (a server answering
        /// the calls it read together).
        package func sendBytes(batch messages: [[UInt8]]) throws(MP.Error) {
            if messages.count == 1 { return try sendBytes(messages[0]) }
            var size = 0
            for message in messages {
                try checkSendable(message.count)
                size += message.count + 12
            }
            var frames = [UInt8]()
            frames.reserveCapacity(size)
            var header: (UInt64, UInt64) = (0, 0)
            for message in messages {
                let length = withUnsafeMutableBytes(of: &header) { raw -> Int in
                    if framing == .python { return Self.writePythonHeader(into: raw, payloadSize: message.count, kind: .bytes, type: 0) }
                    Self.writeHeader(into: raw, payloadSize: message.count, kind: .bytes, type: 0)
                    return Self.headerSize
                }
                withUnsafeBytes(of: &header) { frames.append(contentsOf: $0[..<length]) }
                frames.append(contentsOf: message)
            }
            let result = frames.withUnsafeBytes { raw in
                Result { () throws(MP.Error) in
                    try sendLock.withLock { () throws(MP.Error) in try writeAll(raw, UnsafeRawBufferPointer(start: nil, count: 0)) }
                }
            }
            try result.get()
        }

        /// Sends the bytes of a `BitwiseCopyable` value as they are in memory: no encoding.
        public func sendBitwise<T: BitwiseCopyable>(_ value: T) throws(MP.Error) {
            var value = value
            let result = withUnsafeBytes(of: &value) { raw in
                Result { () throws(MP.Error) in try sendPayload(raw, kind: .bitwise, type: WireFormat.typeTag(T.self)) }
            }
            try result.get()
        }

        /// Sends a frame whose first `headerSize` bytes are reserved for the header.
        private func sendFrame(_ frame: inout [UInt8], kind: Kind, type: UInt16) throws(MP.Error) {
            let payloadSize = frame.count - Self.headerSize
            try checkSendable(payloadSize)
            Self.writeHeader(into: &frame, payloadSize: payloadSize, kind: kind, type: type)
            let result = frame.withUnsafeBytes { raw in
                Result { () throws(MP.Error) in
                    try sendLock.withLock { () throws(MP.Error) in try writeAll(raw, UnsafeRawBufferPointer(start: nil, count: 0)) }
                }
            }
            try result.get()
        }

        /// Sends header and payload with one `sendmsg`, without copying the payload.
        private func sendPayload(_ payload: UnsafeRawBufferPointer, kind: Kind, type: UInt16) throws(MP.Error) {
            if framing == .python { return try sendPythonFrame(payload, kind: kind, type: type) }
            try checkSendable(payload.count)
            var header: UInt64 = 0 // headerSize bytes, on the stack
            assert(MemoryLayout.size(ofValue: header) == Self.headerSize)
            withUnsafeMutableBytes(of: &header) { Self.writeHeader(into: $0, payloadSize: payload.count, kind: kind, type: type) }
            let result = withUnsafeBytes(of: &header) { raw in
                Result { () throws(MP.Error) in try sendLock.withLock { () throws(MP.Error) in try writeAll(raw, payload) } }
            }
            try result.get()
        }

        private func checkSendable(_ payloadSize: Int) throws(MP.Error) {
            guard writable else { throw .wrongDirection("this end of a one-way pipe only receives") }
            guard payloadSize <= maxMessageSize, framing == .python || payloadSize <= Int(UInt32.max) else {
                throw .messageTooLarge(size: payloadSize, limit: maxMessageSize)
            }
        }

        /// CPython's `_send_bytes`: a big-endian `i32` length, or `-1` and a
        /// `u64` length over `Int32.max`; then, for a value (not bytes), this
        /// library's `[magic][kind][u16 type]`; then the payload. One `sendmsg`.
        private func sendPythonFrame(_ payload: UnsafeRawBufferPointer, kind: Kind, type: UInt16) throws(MP.Error) {
            let prefix = kind == .bytes ? 0 : 4
            try checkSendable(payload.count + prefix)
            var header: (UInt64, UInt64) = (0, 0) // at most 12 + 4 bytes, on the stack
            let length = withUnsafeMutableBytes(of: &header) { raw in
                Self.writePythonHeader(into: raw, payloadSize: payload.count + prefix, kind: kind, type: type)
            }
            let result = withUnsafeBytes(of: &header) { raw in
                Result { () throws(MP.Error) in
                    try sendLock.withLock { () throws(MP.Error) in try writeAll(UnsafeRawBufferPointer(rebasing: raw[..<length]), payload) }
                }
            }
            try result.get()
        }

        /// Writes CPython's frame header (and a value's prefix) into `raw`; returns its length.
        static func writePythonHeader(into raw: UnsafeMutableRawBufferPointer, payloadSize: Int, kind: Kind, type: UInt16) -> Int {
            var offset: Int
            if payloadSize > Int(Int32.max) {
                raw.storeBytes(of: Int32(-1).bigEndian, toByteOffset: 0, as: Int32.self)
                raw.storeBytes(of: UInt64(payloadSize).bigEndian, toByteOffset: 4, as: UInt64.self)
                offset = 12
            } else {
                raw.storeBytes(of: Int32(payloadSize).bigEndian, toByteOffset: 0, as: Int32.self)
                offset = 4
            }
            if kind != .bytes {
                raw[offset] = magic
                raw[offset + 1] = kind.rawValue
                raw[offset + 2] = UInt8(truncatingIfNeeded: type)
                raw[offset + 3] = UInt8(truncatingIfNeeded: type >> 8)
                offset += 4
            }
            return offset
        }

        /// A frame of at most 16 bytes on the stack: the header and a fixed-width number's bytes.
        struct SmallFrame {
            var storage: (UInt64, UInt64) = (0, 0)
            var count: Int

            func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(MP.Error) -> R) throws(MP.Error) -> R {
                var storage = storage
                let count = count
                return try withUnsafeBytes(of: &storage) { raw in
                    Result { () throws(MP.Error) in try body(UnsafeRawBufferPointer(rebasing: raw[..<count])) }
                }.get()
            }
        }

        /// The whole frame of a value whose wire form is its own bytes (the
        /// integers, `Double`, `Float`, `Bool`), nil for any other value.
        /// The same bytes `send` would write through the encoder.
        static func smallFrame<T: Encodable>(_ value: T) -> SmallFrame? {
            let size: Int
            if T.self == Int.self || T.self == UInt.self || T.self == Int64.self || T.self == UInt64.self || T.self == Double.self {
                size = 8
            } else if T.self == Int32.self || T.self == UInt32.self || T.self == Float.self {
                size = 4
            } else if T.self == Bool.self {
                size = 1
            } else {
                return nil
            }
            var frame = SmallFrame(count: headerSize + size)
            withUnsafeMutableBytes(of: &frame.storage) { raw in
                writeHeader(into: raw, payloadSize: size, kind: .codable, type: WireFormat.typeTag(T.self))
                if T.self == Bool.self {
                    raw[headerSize] = (value as! Bool) ? 1 : 0
                } else {
                    withUnsafeBytes(of: value) { UnsafeMutableRawBufferPointer(rebasing: raw[headerSize..<(headerSize + size)]).copyMemory(from: $0) }
                }
            }
            return frame
        }

        /// Header: UInt32 payload length, kind, magic, UInt16 type fingerprint (little-endian).
        private static func writeHeader(into frame: inout [UInt8], payloadSize: Int, kind: Kind, type: UInt16) {
            frame.withUnsafeMutableBytes { writeHeader(into: $0, payloadSize: payloadSize, kind: kind, type: type) }
        }

        private static func writeHeader(into frame: UnsafeMutableRawBufferPointer, payloadSize: Int, kind: Kind, type: UInt16) {
            let length = UInt32(payloadSize)
            frame[0] = UInt8(truncatingIfNeeded: length)
            frame[1] = UInt8(truncatingIfNeeded: length >> 8)
            frame[2] = UInt8(truncatingIfNeeded: length >> 16)
            frame[3] = UInt8(truncatingIfNeeded: length >> 24)
            frame[4] = kind.rawValue
            frame[5] = magic
            frame[6] = UInt8(truncatingIfNeeded: type)
            frame[7] = UInt8(truncatingIfNeeded: type >> 8)
        }

        /// With the send lock held: writes every byte of `first`, then of
        /// `second`, with as few `sendmsg` calls as the socket allows (one
        /// buffer alone goes by `send`, as a C loop's `write` would). No
        /// arrays: a child's first send instantiates no generic metadata.
        private func writeAll(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(MP.Error) {
            guard fd >= 0 else { throw .connectionClosed }
            if second.isEmpty {
                var offset = 0
                while offset < first.count {
                    switch Result(catching: { () throws(OSError) in try Sys.send(fd, UnsafeRawBufferPointer(rebasing: first[offset...])) }) {
                    case .success(let sent): offset += sent
                    case .failure(let error) where error.errno == .brokenPipe || error.errno == .connectionReset: throw .brokenPipe
                    case .failure(let error): throw .system(error)
                    }
                }
                return
            }
            var vectors = (iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
                           iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count))
            var remaining = first.count + second.count
            while remaining > 0 {
                let outcome = withUnsafeMutableBytes(of: &vectors) { raw -> Result<Int, OSError> in
                    let pair = raw.baseAddress!.assumingMemoryBound(to: iovec.self)
                    let skip = pair[0].iov_len == 0 ? 1 : 0 // the first part is done
                    var message = msghdr()
                    message.msg_iov = pair + skip
                    message.msg_iovlen = 2 - skip
                    return Result { () throws(OSError) -> Int in try Sys.send(fd, &message) }
                }
                let sent: Int
                switch outcome {
                case .success(let count): sent = count
                case .failure(let error) where error.errno == .brokenPipe || error.errno == .connectionReset: throw .brokenPipe
                case .failure(let error): throw .system(error)
                }
                remaining -= sent
                let fromFirst = min(sent, vectors.0.iov_len)
                vectors.0.iov_base = vectors.0.iov_base.map { $0 + fromFirst }
                vectors.0.iov_len -= fromFirst
                let fromSecond = sent - fromFirst
                vectors.1.iov_base = vectors.1.iov_base.map { $0 + fromSecond }
                vectors.1.iov_len -= fromSecond
            }
        }

        // MARK: receiving

        private static func unpickle<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(MP.Error) -> T {
            do { return try PickleDecoder().decode(T.self, from: bytes) } catch { throw .pickle(error) }
        }

        /// Python's `recv()`: receives a `Codable` value (in the connection's ``codec``). Blocks until a message arrives.
        public func recv<T: Decodable>(_ type: T.Type = T.self) throws(MP.Error) -> T {
            if codec == .pickle { return try Self.unpickle(T.self, try recvBytes()) }
            return try recvLock.withLock { () throws(MP.Error) -> T in
                let (size, kind) = try nextFrameBlocking()
                return try consume(size, kind, as: T.self)
            }
        }

        /// Python's `recv_bytes(maxlength)`. A large message is read straight
        /// into the returned array, not through the connection's buffer.
        public func recvBytes(maxLength: Int? = nil) throws(MP.Error) -> [UInt8] {
            try recvLock.withLock { () throws(MP.Error) -> [UInt8] in
                guard let (size, kind) = try nextFrame(blocking: true, wholePayload: false) else { return [] }
                start += header
                guard kind == .bytes else {
                    try discard(size, blocking: true)
                    throw .kindMismatch(sent: kind.method, expected: Kind.bytes.method)
                }
                if let maxLength, size > maxLength {
                    try discard(size, blocking: true)
                    throw .messageTooLarge(size: size, limit: maxLength)
                }
                lastFrameWasLarge = size >= 32 << 10
                return try takePayload(size)
            }
        }

        /// Python's `recv_bytes_into(buffer, offset)`: receives one message into
        /// `buffer` from `offset`; returns its length. A message longer than
        /// the room left throws ``MP/Error/Code/bufferTooShort``
        /// carrying the whole message, as CPython's `BufferTooShort` does.
        public func recvBytes(into buffer: UnsafeMutableRawBufferPointer, offset: Int = 0) throws(MP.Error) -> Int {
            guard offset >= 0, offset <= buffer.count else {
                throw .invalidArgument("offset \(offset) is outside the buffer of \(buffer.count) bytes")
            }
            let message = try recvBytes()
            guard message.count <= buffer.count - offset else { throw .bufferTooShort(message) }
            if !message.isEmpty {
                message.withUnsafeBytes { (buffer.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
            return message.count
        }

        /// `recvBytes(into:offset:)` for an array (its length is the room; it is not grown).
        public func recvBytes(into array: inout [UInt8], offset: Int = 0) throws(MP.Error) -> Int {
            let result = array.withUnsafeMutableBytes { raw in
                Result { () throws(MP.Error) -> Int in try recvBytes(into: raw, offset: offset) }
            }
            return try result.get()
        }

        /// The next `size` bytes: what is buffered, then the rest read directly.
        private func takePayload(_ size: Int) throws(MP.Error) -> [UInt8] {
            let fromBuffer = min(size, buffered)
            var failure: MP.Error?
            let bytes = [UInt8](unsafeUninitializedCapacity: size) { destination, initialized in
                buffer.withUnsafeBytes { source in
                    UnsafeMutableRawBufferPointer(destination).copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<start + fromBuffer]))
                }
                var got = fromBuffer
                while got < size {
                    switch Result(catching: { () throws(OSError) in try Sys.receive(fd, into: destination.baseAddress! + got, count: size - got) }) {
                    case .success(.bytes(let received)):
                        got += received
                        continue
                    case .failure(let error):
                        failure = .system(error)
                    default:
                        sawEOF = true
                        failure = .truncatedFrame(expected: size + header, received: got + header)
                    }
                    break
                }
                initialized = failure == nil ? size : 0
            }
            start += fromBuffer
            if let failure { throw failure }
            return bytes
        }

        /// Receives a value sent with ``sendBitwise(_:)``.
        public func recvBitwise<T: BitwiseCopyable>(_ type: T.Type = T.self) throws(MP.Error) -> T {
            try recvLock.withLock { () throws(MP.Error) -> T in
                let (size, kind) = try nextFrameBlocking()
                return try consumeBitwise(size, kind, as: T.self)
            }
        }

        /// Whether a whole message is already buffered, asked without a
        /// syscall: a server reads what arrived together before it answers.
        package var hasBufferedMessage: Bool {
            recvLock.withLock {
                guard readable, fd >= 0 else { return false }
                guard buffered >= (framing == .native ? Self.headerSize : 4) else { return false }
                if framing == .python && pythonLength() == -1 && buffered < 12 { return false }
                // A header that does not parse: the next receive says what is wrong.
                guard let (size, _) = try? parseHeader() else { return true }
                return buffered >= header + size
            }
        }

        /// Python's `poll(timeout)`: whether a message (or end-of-file) can be
        /// received without blocking, waiting up to `timeout` seconds (nil: forever).
        public func poll(timeout: Double? = 0) throws(MP.Error) -> Bool {
            let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
            return try recvLock.withLock { () throws(MP.Error) -> Bool in
                guard readable else { throw .wrongDirection("this end of a one-way pipe only sends") }
                guard fd >= 0 else { throw .connectionClosed }
                if end > start || sawEOF { return true }
                do throws(OSError) { return try Sys.pollReadable(fd, until: deadline) } catch { throw .system(error) }
            }
        }

        /// `try await connection.recv(T.self)`: suspends, blocking no thread, until a message arrives.
        public func recv<T: Decodable>(_ type: T.Type = T.self) async throws(MP.Error) -> T {
            if codec == .pickle {
                while true {
                    if try poll(timeout: 0) { return try Self.unpickle(T.self, try recvBytes()) }
                    guard fd >= 0 else { throw .connectionClosed }
                    try await FDWatcher.readable(fd, cancelled: MP.Error.cancelled, system: { .system($0) })
                }
            }
            while true {
                if let value = try recvLock.withLock({ () throws(MP.Error) -> T? in
                    guard let (size, kind) = try nextFrame(blocking: false) else { return nil }
                    return try consume(size, kind, as: T.self)
                }) {
                    return value
                }
                guard fd >= 0 else { throw .connectionClosed }
                try await FDWatcher.readable(fd, cancelled: MP.Error.cancelled, system: { .system($0) })
            }
        }

        /// `for try await message in connection.messages(of: T.self)`: every
        /// message until the peer closes its end.
        public func messages<T: Decodable>(of type: T.Type) -> Messages<T> { Messages(connection: self) }

        /// The messages of a connection, as an `AsyncSequence` that ends at end-of-file.
        public struct Messages<T: Decodable>: AsyncSequence {
            public typealias Element = T
            let connection: Connection

            public struct AsyncIterator: AsyncIteratorProtocol {
                let connection: Connection
                var finished = false

                public mutating func next() async throws -> T? {
                    if finished { return nil }
                    do {
                        return try await connection.recv(T.self)
                    } catch .endOfFile {
                        finished = true
                        return nil
                    }
                }
            }

            public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(connection: connection) }
        }

        // MARK: framing

        private var buffered: Int { end - start }

        /// With the receive lock held: makes the next whole frame available in
        /// the buffer and returns its payload size and kind. `blocking: false`
        /// returns nil when that would need to wait.
        private func nextFrame(blocking: Bool, wholePayload: Bool = true) throws(MP.Error) -> (Int, Kind)? {
            guard readable else { throw .wrongDirection("this end of a one-way pipe only sends") }
            guard fd >= 0 else { throw .connectionClosed }
            while true {
                let minimum = framing == .native ? Self.headerSize : 4
                if buffered < minimum {
                    guard try fill(minimum: minimum, blocking: blocking) else { return nil }
                }
                if framing == .python && pythonLength() == -1 && buffered < 12 {
                    guard try fill(minimum: 12, blocking: blocking) else { return nil }
                }
                let (size, kind) = try parseHeader()
                if size > maxMessageSize {
                    start += header
                    try discard(size, blocking: true)
                    throw .messageTooLarge(size: size, limit: maxMessageSize)
                }
                if wholePayload && buffered < header + size {
                    guard try fill(minimum: header + size, blocking: blocking) else { return nil }
                }
                return (size, kind)
            }
        }

        private func nextFrameBlocking() throws(MP.Error) -> (Int, Kind) {
            try nextFrame(blocking: true)!
        }

        /// The `i32` at the start of a CPython frame.
        private func pythonLength() -> Int32 {
            buffer.withUnsafeBytes { Int32(bigEndian: $0.loadUnaligned(fromByteOffset: start, as: Int32.self)) }
        }

        /// A CPython frame's payload length, and its kind: a payload that
        /// starts with `[magic][kind][u16 type]` of a value is that value;
        /// any other is bytes (what a CPython peer sends).
        private func parsePythonHeader() throws(MP.Error) -> (Int, Kind) {
            let length = pythonLength()
            let size: Int
            if length == -1 {
                let long = buffer.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: start + 4, as: UInt64.self)) }
                guard long <= UInt64(Int.max / 2) else { throw .corruptStream("a frame claims \(long) bytes") }
                size = Int(long)
                header = 12
            } else {
                guard length >= 0 else { throw .corruptStream("a frame claims \(length) bytes") }
                size = Int(length)
                header = 4
            }
            return (size, .bytes)
        }

        /// For a CPython frame whose payload is buffered: the value's kind and type, when it carries one.
        private func pythonValuePrefix(_ size: Int) -> (Kind, UInt16)? {
            guard size >= 4, buffered >= header + 4 else { return nil }
            let b = buffer, at = start + header
            guard b[at] == Self.magic, let kind = Kind(rawValue: b[at + 1]), kind != .bytes else { return nil }
            return (kind, UInt16(b[at + 2]) | UInt16(b[at + 3]) << 8)
        }

        private func parseHeader() throws(MP.Error) -> (Int, Kind) {
            if framing == .python { return try parsePythonHeader() }
            let b = buffer
            let size = Int(b[start]) | Int(b[start + 1]) << 8 | Int(b[start + 2]) << 16 | Int(b[start + 3]) << 24
            guard b[start + 5] == Self.magic, let kind = Kind(rawValue: b[start + 4]), (kind == .bytes) == (frameType == 0) else {
                throw .corruptStream("bytes at the start of a frame are not a frame header")
            }
            return (size, kind)
        }

        /// The type fingerprint of the frame at `start`.
        private var frameType: UInt16 { UInt16(buffer[start + 6]) | UInt16(buffer[start + 7]) << 8 }

        /// Reads until `minimum` bytes are buffered. Returns false when not
        /// blocking and no more bytes are ready. Throws at end-of-file.
        private func fill(minimum: Int, blocking: Bool) throws(MP.Error) -> Bool {
            if buffer.count - start < minimum {
                // Compact, and grow to hold the whole frame (bounded by maxMessageSize).
                // Uninitialized: bytes past `end` are only ever written by `recv` before
                // they are read, and zeroing 64 KB faulted 16 pages for every new connection.
                let capacity = max(minimum, 64 << 10, buffer.count)
                var grown = [UInt8](unsafeUninitializedCapacity: capacity) { _, count in count = capacity }
                grown.withUnsafeMutableBytes { destination in
                    buffer.withUnsafeBytes { source in
                        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<end]))
                    }
                }
                end -= start
                start = 0
                buffer = grown
            } else if buffer.count - end < minimum - buffered {
                buffer.withUnsafeMutableBytes { raw in
                    raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
                }
                end -= start
                start = 0
            }
            while buffered < minimum {
                if sawEOF { return try endOfStream(expecting: minimum) }
                let wanted = lastFrameWasLarge ? minimum - buffered : Int.max
                let received = buffer.withUnsafeMutableBytes { raw in
                    Result { () throws(OSError) in
                        try Sys.receive(fd, into: raw.baseAddress! + end, count: min(raw.count - end, wanted), blocking: blocking)
                    }
                }
                switch received {
                case .success(.bytes(let count)): end += count
                case .success(.endOfFile): sawEOF = true
                case .success(.wouldBlock): return false
                case .failure(let error): throw .system(error)
                }
            }
            return true
        }

        private func endOfStream(expecting minimum: Int) throws(MP.Error) -> Bool {
            if buffered == 0 { throw .endOfFile }
            let expected = buffered >= (framing == .native ? Self.headerSize : 4) ? (try parseHeader().0) + header : minimum
            let received = buffered
            start = end
            throw .truncatedFrame(expected: expected, received: received)
        }

        /// Skips `count` payload bytes of an oversized frame without storing them.
        private func discard(_ count: Int, blocking: Bool) throws(MP.Error) {
            var left = count
            let fromBuffer = min(left, buffered)
            start += fromBuffer
            left -= fromBuffer
            var scratch = [UInt8](repeating: 0, count: 64 << 10)
            while left > 0 {
                let received = scratch.withUnsafeMutableBytes { raw in
                    Result { () throws(OSError) in try Sys.receive(fd, into: raw.baseAddress!, count: min(raw.count, left)) }
                }
                if case .success(.bytes(let count)) = received { left -= count; continue }
                if case .failure(let error) = received { throw .system(error) }
                sawEOF = true
                throw .truncatedFrame(expected: count + header, received: count - left + header)
            }
        }

        /// The kind, type and payload range of the buffered frame at `start`
        /// (a CPython frame's value prefix is not part of its payload).
        private func frameContents(_ size: Int, _ kind: Kind) -> (kind: Kind, type: UInt16, payload: Range<Int>) {
            let first = start + header
            if framing == .python {
                if let (kind, type) = pythonValuePrefix(size) { return (kind, type, (first + 4)..<(first + size)) }
                return (.bytes, 0, first..<(first + size))
            }
            return (kind, frameType, first..<(first + size))
        }

        private func consume<T: Decodable>(_ size: Int, _ kind: Kind, as type: T.Type) throws(MP.Error) -> T {
            defer { start += header + size }
            let (kind, frameType, range) = frameContents(size, kind)
            guard kind == .codable else { throw .kindMismatch(sent: kind.method, expected: Kind.codable.method) }
            guard frameType == WireFormat.typeTag(T.self) else { throw .typeMismatch(expected: "\(T.self)") }
            let result = buffer.withUnsafeBytes { raw in
                Result { () throws(MP.Error) -> T in
                    try WireFormat.decode(T.self, from: UnsafeRawBufferPointer(rebasing: raw[range]))
                }
            }
            do { return try result.get() } catch { throw .decoding(error) }
        }

        private func consumeBitwise<T: BitwiseCopyable>(_ size: Int, _ kind: Kind, as type: T.Type) throws(MP.Error) -> T {
            defer { start += header + size }
            let (kind, frameType, range) = frameContents(size, kind)
            guard kind == .bitwise else { throw .kindMismatch(sent: kind.method, expected: Kind.bitwise.method) }
            guard frameType == WireFormat.typeTag(T.self) else { throw .typeMismatch(expected: "\(T.self)") }
            guard range.count == MemoryLayout<T>.size else {
                throw .decoding(.malformed(type: "\(T.self)", reason: "\(range.count) bytes, \(T.self) has \(MemoryLayout<T>.size)"))
            }
            return buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: range.lowerBound, as: T.self) }
        }
    }
}
