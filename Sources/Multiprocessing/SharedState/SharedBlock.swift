#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingSync

/// A block of anonymous shared memory, inherited by children forked after its creation.
@usableFromInline
final class SharedBlock: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    let size: Int

    @usableFromInline
    init(bytes: Int) throws(MP.SyncError) {
        let page = Sys.pageSize
        guard bytes >= 0, bytes <= Int.max - page else {
            throw .invalidArgument("cannot map \(bytes) bytes of shared memory")
        }
        size = max(page, (bytes + page - 1) / page * page)
        do { base = try Sys.mapShared(size) } catch { throw .system(error) }
    }

    /// Maps `bytes` bytes from `offset` into this process's page table before
    /// they are written: cheaper than a write fault per page (see `cmp_shared_prefault`).
    @usableFromInline
    func prefault(offset: Int, bytes: Int) {
        precondition(offset >= 0 && bytes >= 0 && offset + bytes <= size, "prefault range outside the block")
        cmp_shared_prefault(base + offset, bytes)
    }

    deinit { Sys.unmap(base, size) }
}
