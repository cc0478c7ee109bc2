import Glibc
import _CMultiprocessingSync
import MultiprocessingPlatform

/// A block of shared memory: inherited by children forked after its
/// creation and, when `shareable`, passed to spawned and forkserver children
/// as the memfd behind it (``reference(in:for:)``).
///
/// The memfd costs a descriptor per object (CPython's named semaphores cost
/// a file in `/dev/shm` each); the first one raises this process's soft
/// descriptor limit to its hard limit (`RLIMIT_NOFILE`), as Go's runtime
/// does, so a program with thousands of locks does not run out.
@usableFromInline
final class SharedBlock: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    let size: Int
    /// The memfd behind the block; -1 for a private (fork-only) block.
    let descriptor: Int32

    /// - Parameter shareable: backed by a memfd that can cross into a spawned
    ///   child; false for the library's own fork-only blocks (the pool's).
    @usableFromInline
    init(bytes: Int, shareable: Bool = true) throws(MP.Error) {
        let page = Sys.pageSize
        guard bytes >= 0, bytes <= Int.max - page else {
            throw .invalidArgument("cannot map \(bytes) bytes of shared memory")
        }
        size = max(page, (bytes + page - 1) / page * page)
        guard shareable else {
            do { base = try Sys.mapShared(size) } catch { throw .system(error) }
            descriptor = -1
            return
        }
        _ = Self.raisedDescriptorLimit
        let fd: Int32
        do {
            fd = try Sys.memoryFile("swift-multiprocessing")
            try Sys.truncate(fd, to: size)
            base = try Sys.mapShared(fd, size: size)
        } catch {
            throw .system(error)
        }
        descriptor = fd
    }

    /// Maps the memfd `fd` (adopted: closed with the block).
    init(adopting fd: Int32, size: Int) throws {
        let actual = try Sys.fileSize(fd)
        guard size > 0, actual >= size else {
            Sys.close(fd)
            throw MP.Error.cannotCross("a shared block of \(size) bytes arrived as a file of \(actual) bytes")
        }
        do { base = try Sys.mapShared(fd, size: size) } catch { Sys.close(fd); throw error }
        self.size = size
        descriptor = fd
    }

    private static let raisedDescriptorLimit: Void = Sys.raiseDescriptorLimit()

    /// Maps `bytes` bytes from `offset` into this process's page table before
    /// they are written: cheaper than a write fault per page (see `Sys.prefaultShared`).
    @usableFromInline
    func prefault(offset: Int, bytes: Int) {
        precondition(offset >= 0 && bytes >= 0 && offset + bytes <= size, "prefault range outside the block")
        Sys.prefaultShared(base + offset, bytes)
    }

    deinit {
        Sys.unmap(base, size)
        if descriptor >= 0 { Sys.close(descriptor) }
    }

    /// How a block travels into a spawned child: its memfd's index in the
    /// start's descriptor table, and its size.
    struct Reference: Codable {
        var descriptor: Int
        var size: Int
    }

    func reference(in encoder: any Encoder, for what: String) throws -> Reference {
        let table = try Crossing.table(encoder, for: what)
        guard descriptor >= 0 else { throw MP.Error.cannotCross("\(what) lives in fork-only memory and cannot cross into a spawned process") }
        return Reference(descriptor: try table.add(descriptor, for: what), size: size)
    }

    convenience init(_ reference: Reference, from decoder: any Decoder, for what: String) throws {
        let received = try Crossing.received(decoder, for: what)
        try self.init(adopting: try received.adopt(reference.descriptor, for: what), size: reference.size)
    }
}

/// The one way an object in shared memory crosses into a spawned or
/// forkserver child as a named task's argument: its block (the memfd behind
/// it), and what each object adds (an element count, its lock, an eventfd,
/// a default timeout). Every such object's `Codable` is this, and nothing else.
struct CrossingBlock {
    private enum Keys: String, CodingKey { case block, count, lock, event, timeout }

    var block: SharedBlock
    var count: Int?
    var lock: MP.RLock?
    /// A descriptor that crosses with the block (a queue's eventfd); in the child, its own copy.
    var event: Int32?
    var timeout: Double?

    init(_ block: SharedBlock, count: Int? = nil, lock: MP.RLock? = nil, event: Int32? = nil, timeout: Double? = nil) {
        self.block = block
        self.count = count
        self.lock = lock
        self.event = event
        self.timeout = timeout
    }

    func encode(to encoder: any Encoder, for what: String) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(try block.reference(in: encoder, for: what), forKey: .block)
        try container.encodeIfPresent(count, forKey: .count)
        try container.encodeIfPresent(lock, forKey: .lock)
        try container.encodeIfPresent(try event.map { try Crossing.table(encoder, for: what).add($0, for: what) }, forKey: .event)
        try container.encodeIfPresent(timeout, forKey: .timeout)
    }

    /// Decodes what ``encode(to:for:)`` wrote, requiring at least `minimumSize` bytes of block.
    init(from decoder: any Decoder, for what: String, minimumSize: Int = 0) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        let reference = try container.decode(SharedBlock.Reference.self, forKey: .block)
        guard reference.size >= minimumSize else {
            throw MP.Error.cannotCross("\(what) arrived in a block of \(reference.size) bytes, under the \(minimumSize) it needs")
        }
        block = try SharedBlock(reference, from: decoder, for: what)
        count = try container.decodeIfPresent(Int.self, forKey: .count)
        lock = try container.decodeIfPresent(MP.RLock.self, forKey: .lock)
        event = try container.decodeIfPresent(Int.self, forKey: .event).map { try Crossing.received(decoder, for: what).adopt($0, for: what) }
        timeout = try container.decodeIfPresent(Double.self, forKey: .timeout)
    }

    /// The count, which this object must have sent.
    func requiredCount(for what: String) throws -> Int {
        guard let count, count >= 0 else { throw MP.Error.cannotCross("\(what) arrived without its element count") }
        return count
    }

    /// The lock, which this object must have sent.
    func requiredLock(for what: String) throws -> MP.RLock {
        guard let lock else { throw MP.Error.cannotCross("\(what) arrived without its lock") }
        return lock
    }
}
