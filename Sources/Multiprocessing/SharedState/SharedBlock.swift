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
