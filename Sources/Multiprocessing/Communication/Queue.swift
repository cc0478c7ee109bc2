import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import SystemPackage
import MultiprocessingPlatform

extension MP {


    /// Python's `multiprocessing.Queue`: multi-producer, multi-consumer, for
    /// processes forked after its creation.
    ///
    /// Items are `Codable` values, encoded into a ring buffer in shared memory;
    /// `put` returns once the item is in the queue, so a process that exits
    /// right after `put` loses nothing (CPython's feeder thread can). An item
    /// becomes visible, and leaves, by a single store under a robust lock: a
    /// producer or consumer SIGKILLed mid-operation leaves no half item, loses
    /// or duplicates nothing, and does not block the others.
    public class Queue<Element: Codable>: Codable, @unchecked Sendable {
        let block: SharedBlock
        let ring: UnsafeMutablePointer<cmp_ring>
        /// Wakes tasks awaiting an item (see `get() async`); inherited by forked children.
        let eventFD: Int32

        /// Takes the ring's lock and keeps it (tests: a holder that dies inside the critical section).
        func lockRingForTesting() { _ = cmp_mutex_lock(&ring.pointee.mutex, -1) }
        private var isClosed = false
        /// The ring's size in bytes: the largest encoded item is a little less.
        public let capacityBytes: Int
        /// Fixed-width numbers travel as their raw bytes. Decided once: the
        /// queue's methods run unspecialized, and a conformance check per item
        /// costs more than the item.
        private let elementIsPrimitive = Element.self is any WirePrimitive.Type

        /// - Parameters:
        ///   - maxsize: Python's `maxsize`: the most items at once; 0 for no limit.
        ///   - capacityBytes: the shared buffer (pages are only used as filled).
        public init(maxsize: Int = 0, capacityBytes: Int = 8 << 20) throws(MP.Error) {
            guard maxsize >= 0 else { throw .invalidArgument("maxsize must be >= 0 (got \(maxsize))") }
            // A message's length is 32 bits in the ring.
            guard capacityBytes >= 0, capacityBytes <= Int(UInt32.max) else {
                throw .invalidArgument("capacityBytes must be between 0 and \(UInt32.max) (got \(capacityBytes))")
            }
            let capacity = max(64, (capacityBytes + 7) / 8 * 8)
            do {
                block = try SharedBlock(bytes: MemoryLayout<cmp_ring>.stride + capacity)
            } catch {
                throw error.code == .system ? error : .invalidArgument(error.description)
            }
            ring = block.base.bindMemory(to: cmp_ring.self, capacity: 1)
            let error = cmp_ring_init(ring, UInt64(capacity), UInt64(maxsize))
            if error != 0 { throw .system(OSError("pthread_mutex_init", errno: Errno(rawValue: error))) }
            do { eventFD = try Sys.eventSemaphore() } catch { throw .system(error) }
            self.capacityBytes = capacity
        }

        /// Decodes a queue passed to a spawned or forkserver child (see ``MP/StartMethod``).
        public required init(from decoder: any Decoder) throws {
            let what = "\(type(of: self))"
            let crossed = try CrossingBlock(from: decoder, for: what)
            guard let capacity = crossed.count, capacity > 0, crossed.block.size >= MemoryLayout<cmp_ring>.stride + capacity,
                  let event = crossed.event else {
                throw MP.Error.cannotCross("\(what) arrived with a ring of \(crossed.count ?? 0) bytes in a block of \(crossed.block.size)")
            }
            block = crossed.block
            ring = block.base.bindMemory(to: cmp_ring.self, capacity: 1)
            eventFD = event
            capacityBytes = capacity
        }

        /// Encodes the queue as a named task's argument (see ``MP/StartMethod``).
        public func encode(to encoder: any Encoder) throws {
            try CrossingBlock(block, count: capacityBytes, event: eventFD).encode(to: encoder, for: "\(type(of: self))")
        }

        /// Python's `put(item, block, timeout)`: waits for room unless `blocking` is false.
        public func put(_ item: Element, blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) {
            let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
            guard !isClosed else { throw .queueClosed }
            let nanoseconds: Int64 = !blocking ? 0 : deadline.cTimeoutNanoseconds
            if elementIsPrimitive {
                // A fixed-width number's bytes are its wire format: no encoder, no allocation.
                var item = item
                let result = withUnsafeBytes(of: &item) { raw in putEncoded(raw, nanoseconds) }
                return try check(result, size: MemoryLayout<Element>.size)
            }
            var writer = ByteWriter()
            do { try WireFormat.encode(item, into: &writer) } catch { throw .encoding(error) }
            let result = writer.bytes.withUnsafeBytes { raw in putEncoded(raw, nanoseconds) }
            try check(result, size: writer.bytes.count)
        }

        private func putEncoded(_ raw: UnsafeRawBufferPointer, _ nanoseconds: Int64) -> Int32 {
            // Never cut a length to 32 bits: what cannot fit is refused whole.
            guard raw.count <= capacityBytes else { return Int32(CMP_RING_TOO_LARGE) }
            var ownerDied: Int32 = 0
            return cmp_ring_put(ring, raw.baseAddress, UInt32(truncatingIfNeeded: raw.count), nanoseconds, &ownerDied, eventFD)
        }

        private func check(_ result: Int32, size: Int) throws(MP.Error) {
            switch result {
            case Int32(CMP_RING_OK): return
            case Int32(CMP_RING_FULL): throw .full
            case Int32(CMP_RING_TOO_LARGE): throw .itemTooLarge(size: size, capacity: capacityBytes)
            default: throw .system(OSError("cmp_ring_put", errno: Errno(rawValue: -result)))
            }
        }

        /// Python's `put_nowait(item)`.
        public func putNowait(_ item: Element) throws(MP.Error) { try put(item, blocking: false) }

        /// Python's `get(block, timeout)`: waits for an item unless `blocking` is false.
        public func get(blocking: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Element {
            let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
            guard !isClosed else { throw .queueClosed }
            let nanoseconds: Int64 = !blocking ? 0 : deadline.cTimeoutNanoseconds
            // Small items are copied to the stack and decoded from there; a larger
            // one is fetched again into a buffer of its size. No generic wrapper
            // (Optional, Result) is built per item: unspecialized, each would
            // cost a metadata lookup.
            var storage = StackBuffer()
            return try withUnsafeMutableBytes(of: &storage) { (buffer) throws(MP.Error) -> Element in
                var length: UInt32 = 0
                var ownerDied: Int32 = 0
                let result = cmp_ring_get_into(ring, buffer.baseAddress, UInt32(buffer.count), &length, nanoseconds, &ownerDied)
                if result != Int32(CMP_RING_TOO_LARGE) {
                    try check(get: result)
                    return try decode(UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(length)))
                }
                var bytes: UnsafeMutableRawPointer?
                try check(get: cmp_ring_get(ring, &bytes, &length, nanoseconds, &ownerDied))
                defer { cmp_ring_free_copy(bytes) }
                return try decode(UnsafeRawBufferPointer(start: bytes, count: Int(length)))
            }
        }

        private func check(get result: Int32) throws(MP.Error) {
            switch result {
            case Int32(CMP_RING_OK): return
            case Int32(CMP_RING_EMPTY): throw .empty
            default: throw .system(OSError("cmp_ring_get", errno: Errno(rawValue: -result)))
            }
        }

        private func decode(_ raw: UnsafeRawBufferPointer) throws(MP.Error) -> Element {
            if elementIsPrimitive {
                guard raw.count == MemoryLayout<Element>.size else {
                    throw .decoding(.malformed(type: "\(Element.self)", reason: "\(raw.count) bytes"))
                }
                return raw.loadUnaligned(as: Element.self)
            }
            do { return try WireFormat.decode(Element.self, from: raw) } catch { throw .decoding(error) }
        }

        /// Python's `get_nowait()`.
        public func getNowait() throws(MP.Error) -> Element { try get(blocking: false) }

        /// Python's `qsize()`.
        public var qsize: Int { Int(cmp_ring_count(ring)) }
        /// Python's `empty()`.
        public var isEmpty: Bool { qsize == 0 }
        /// Python's `full()`.
        public var isFull: Bool {
            let limit = ring.pointee.max_items
            return limit > 0 && UInt64(qsize) >= limit
        }

        /// Python's `close()`: this handle puts and gets no more (others are unaffected).
        public func close() { isClosed = true }

        deinit { Sys.close(eventFD) }
    }

    /// Python's `multiprocessing.SimpleQueue`: an unbounded ``MP/Queue`` with `put`, `get`, `empty`.
    public final class SimpleQueue<Element: Codable>: Queue<Element>, @unchecked Sendable {
        public init(capacityBytes: Int = 8 << 20) throws(MP.Error) {
            try super.init(maxsize: 0, capacityBytes: capacityBytes)
        }

        public required init(from decoder: any Decoder) throws {
            try super.init(from: decoder)
        }
    }

    /// Python's `multiprocessing.JoinableQueue`: a ``MP/Queue`` whose consumers
    /// call `taskDone()` per item, so producers can `join()` until all are done.
    public final class JoinableQueue<Element: Codable>: Queue<Element>, @unchecked Sendable {
        /// Python's `task_done()`.
        public func taskDone() throws(MP.Error) {
            if cmp_ring_task_done(ring) != 0 { throw .taskDoneTooOften }
        }

        /// Python's `join()`: waits until every item put was marked done.
        /// Returns false on timeout.
        @discardableResult
        public func join(timeout: Double? = nil) throws(MP.Error) -> Bool {
            let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
            return cmp_ring_join(ring, deadline.cTimeoutNanoseconds) == 0
        }
    }
}

extension MP.Queue where Element: Sendable {
        /// `try await queue.get()`: suspends, blocking no thread, until an item
        /// arrives. A put wakes it directly: while tasks await, each put counts
        /// up the queue's eventfd, which the process's epoll thread watches.
        /// Cancellation ends the wait with ``MP/Error/Code/cancelled``.
        public func get() async throws(MP.Error) -> Element {
            while true {
                do { return try getNowait() } catch .empty {} catch { throw error }
                // Counted as a waiter before looking again, so a put that
                // finds no waiter has left its item for this look.
                _ = cmp_atomic_add_u32(&ring.pointee.async_waiters, 1)
                defer { _ = cmp_atomic_add_u32(&ring.pointee.async_waiters, UInt32.max) }
                do { return try getNowait() } catch .empty {} catch { throw error }
                try await FDWatcher.readable(eventFD, cancelled: MP.Error.cancelled, system: { .system($0) })
                _ = Sys.takeEvent(eventFD) // one put's count; another waiter may have taken it
            }
        }
}
