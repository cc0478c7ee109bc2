/// The messages between a ``MP/TaskPool`` and its workers, on one stream
/// socket per worker: `[UInt32 body length][body]`, the body starting with a
/// kind byte. Both ends are this build, so the layout is private to it.
///
/// Parent to worker: ``Order``. Worker to parent: ``Report``. A worker runs
/// its orders in the order they arrive; the parent knows which one runs
/// (the oldest unanswered), which is what a timeout, a cancellation or a
/// death is charged to.
enum WorkerFrames {
    /// The largest frame either side accepts (a task's arguments, a chunk of
    /// results): a corrupt length cannot make the reader allocate more.
    static let maxBody = Int(UInt32.max) - 16

    enum OrderKind: UInt8 {
        /// `[u32 index][name]`: the task type later orders refer to by index.
        case define = 1
        /// `[u64 seq][u32 type][arguments]`: one task.
        case task = 2
        /// `[u64 seq][u32 type][u32 count]` then `count` × `[u32 length][arguments]`.
        case chunk = 3
        /// `[u64 id][u64 size]`, with the block's memfd attached: shared memory for fixed-width maps.
        case block = 4
        /// `[u64 seq][u32 type][u64 block][u64 tasks offset][u64 results offset][u32 count]`.
        case fixedChunk = 5
        /// `[u64 id]`: the block is no longer used.
        case release = 6
        /// `[u64 size]`, with the control block and the stderr pipe attached: the first order.
        case hello = 7
        /// `[u64 seq][u32 type][the task's bytes]`: one fixed-width task, its result sent back as its bytes.
        case rawTask = 8
        /// `[trace header lines]`: the next order runs in this trace context (``MP/TraceHeaders``).
        case context = 9
    }

    enum ReportKind: UInt8 {
        /// The initializer ran (or there is none): the worker takes tasks.
        case ready = 1
        /// `[type][description]`: the initializer threw; the worker exits.
        case initializerFailed = 2
        /// `[u64 seq][u64 elapsed ns][payload]`: the order's results.
        case done = 3
        /// `[u64 seq][u64 elapsed ns][u32 index][u8 why][type][description][payload of the results before index]`.
        case failed = 4
        /// `[u64 seq]`: cancelled before it started.
        case skipped = 5
        /// `[u64 seq][u64 user ns][u64 system ns][u64 peak resident bytes]`:
        /// what the order used (``TaskPoolCore/recordUsage``), before its `done` or `failed`.
        case usage = 6
        /// `[u64 resident bytes]`: over the recycling threshold; the worker
        /// takes no more orders and exits once this report is sent.
        case recycling = 7
    }

    /// Why an order failed (``ReportKind/failed``).
    enum Failure: UInt8 {
        case threw = 0
        /// The result could not be encoded.
        case result = 1
        /// The task type is unknown or its arguments do not decode.
        case task = 2
        /// The task threw after its soft time limit cancelled it.
        case softTimeLimit = 3
    }

    /// Starts a frame; ``finish(_:at:)`` writes its length.
    static func begin(_ writer: inout ByteWriter, _ kind: UInt8) -> Int {
        let start = writer.bytes.count
        writer.write(UInt32(0))
        writer.write(kind)
        return start
    }

    static func finish(_ writer: inout ByteWriter, at start: Int) {
        writer.patchLength(writer.bytes.count - start - 4, at: start)
    }

    /// The complete frames at the front of `buffer`: calls `body` with each
    /// frame's body; returns the bytes consumed. A length over ``maxBody``
    /// is a corrupt stream.
    static func parse(_ buffer: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var offset = 0
        while buffer.count - offset >= 4 {
            let length = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            guard length >= 1, length <= maxBody else { throw MP.Error.malformed(type: "pool frame", reason: "a frame of \(length) bytes") }
            guard buffer.count - offset - 4 >= length else { break }
            try body(UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + 4 + length)]))
            offset += 4 + length
        }
        return offset
    }

    /// The length a frame needs to be complete, when the front of `buffer` is its start.
    static func pendingLength(_ buffer: UnsafeRawBufferPointer) -> Int? {
        guard buffer.count >= 4 else { return nil }
        return 4 + Int(buffer.loadUnaligned(as: UInt32.self))
    }
}

/// A growable byte buffer read from the front: the unparsed input of one side.
struct InputBuffer {
    private(set) var storage: [UInt8]
    private(set) var start = 0
    private(set) var end = 0

    init(capacity: Int) { storage = [UInt8](repeating: 0, count: capacity) }

    var isEmpty: Bool { start == end }

    /// Room for at least `minimum` more bytes at the end (moving or growing the storage).
    mutating func reserve(_ minimum: Int) {
        if storage.count - end >= minimum { return }
        if start > 0 {
            storage.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
            }
            end -= start
            start = 0
        }
        if storage.count - end < minimum {
            storage += [UInt8](repeating: 0, count: max(minimum - (storage.count - end), storage.count))
        }
    }

    /// Fills the free space with `read` (which returns the count it wrote, 0 at the end).
    mutating func fill(_ read: (UnsafeMutableRawBufferPointer) throws -> Int) rethrows -> Int {
        reserve(4096)
        let end = self.end
        let count = try storage.withUnsafeMutableBytes { raw in
            try read(UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
        }
        self.end += count
        return count
    }

    /// Parses the complete frames; keeps a partial one (and makes room for all of it).
    mutating func frames(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let (start, end) = (self.start, self.end)
        let used = try storage.withUnsafeBytes { raw in
            try WorkerFrames.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]), body)
        }
        self.start += used
        if self.start == self.end { self.start = 0; self.end = 0; return }
        let pending = storage.withUnsafeBytes { raw in
            WorkerFrames.pendingLength(UnsafeRawBufferPointer(rebasing: raw[self.start..<self.end]))
        }
        if let pending, pending > self.end - self.start { reserve(pending - (self.end - self.start)) }
    }
}
