import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

/// Gathers the chunks of a map, in order or as they come.
///
/// Results of fixed-width types are written by the workers into shared memory
/// (see `gather`); a plain `map` copies each chunk from there into the array
/// it returns as the chunk arrives, so the copy overlaps the workers' compute.
@usableFromInline
final class ChunkCollector<R: Sendable>: @unchecked Sendable {
    @usableFromInline let ordered: Bool
    @usableFromInline let deliver: (([R]) -> Void)?
    @usableFromInline let finish: (consuming Result<[R], MP.Error>) -> Void
    @usableFromInline var chunks: [[R]?] = []
    @usableFromInline var nextToDeliver = 0
    @usableFromInline var arrivedCount = 0
    @usableFromInline var failed = false
    /// `imap`: the earliest failed chunk, thrown once every chunk before it is delivered.
    @usableFromInline var pendingFailure: (index: Int, error: MP.Error)?
    /// Results written by the workers into shared memory (fixed-width types).
    @usableFromInline var sharedResults: UnsafeMutableRawPointer?
    @usableFromInline var releaseShared: (@Sendable () -> Void)?
    /// Where a plain `map` gathers shared results.
    @usableFromInline var destination: ForkExcludedArray<R>?
    /// The map's ``MP/Progress``, counted per chunk.
    @usableFromInline var progress: MP.Progress?

    @inlinable
    init(ordered: Bool, deliver: (([R]) -> Void)? = nil, finish: @escaping (consuming Result<[R], MP.Error>) -> Void) {
        self.ordered = ordered
        self.deliver = deliver
        self.finish = finish
    }

    /// The results are in shared memory at `base` (`count` of them), not in
    /// the chunks' messages. Call before the chunks are submitted: a plain
    /// `map`'s array is allocated here, before the workers are forked.
    ///
    /// Returns a plain `map`'s array as a memory range, for
    /// `Sys.populateWritable` once the chunks are submitted.
    @inlinable
    func gather(from base: UnsafeMutableRawPointer, count: Int,
                release: @escaping @Sendable () -> Void) -> UnsafeMutableRawBufferPointer? {
        sharedResults = base
        releaseShared = release
        guard deliver == nil else { return nil }
        let destination = ForkExcludedArray<R>(count: count)
        self.destination = destination
        return destination.bytes
    }

    /// `outcome` is handed on, not kept (see `AsyncResult.resolve`).
    @inlinable
    func done(_ outcome: consuming Result<[R], MP.Error>) {
        releaseShared?()
        releaseShared = nil
        destination = nil
        finish(outcome)
    }

    @inlinable
    func expect(_ count: Int) {
        chunks = [[R]?](repeating: nil, count: count)
        if count == 0 { done(.success([])) }
    }

    /// Fixed-width results of one chunk (`imap`), copied out of shared memory in one `memcpy`.
    @inlinable
    static func copyOut(_ base: UnsafeMutableRawPointer, _ range: Range<Int>) -> [R] {
        let stride = MemoryLayout<R>.stride
        return [R](unsafeUninitializedCapacity: range.count) { buffer, initialized in
            UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: base + range.lowerBound * stride, byteCount: range.count * stride)
            initialized = range.count
        }
    }

    /// `imap`: delivers the chunks that are next in order; at a failed
    /// chunk, ends the stream with its error.
    @inlinable
    func deliverInOrder() {
        while nextToDeliver < chunks.count {
            if let failure = pendingFailure, failure.index == nextToDeliver {
                failed = true
                done(.failure(failure.error))
                return
            }
            guard let chunk = chunks[nextToDeliver] else { return }
            deliver?(chunk)
            chunks[nextToDeliver] = []
            nextToDeliver += 1
        }
    }

    /// Called on the pool's thread only. Inlinable, as the whole map path is:
    /// specialized, it costs no generic metadata lookups per chunk.
    @inlinable
    func arrived(_ index: Int, _ outcome: Result<[R], MP.Error>, range: Range<Int>) {
        if let progress {
            if case .failure = outcome { progress.advance(by: range.count, failed: range.count) } else { progress.advance(by: range.count) }
        }
        guard !failed else { return }
        switch outcome {
        case .failure(let error):
            if deliver != nil && ordered {
                // imap: the results before the failed chunk come first.
                if pendingFailure.map({ index < $0.index }) ?? true { pendingFailure = (index, error) }
                deliverInOrder()
                return
            }
            failed = true
            done(.failure(error))
        case .success(var values):
            arrivedCount += 1
            if let sharedResults {
                if let destination {
                    destination.copy(range, from: sharedResults)
                    if arrivedCount == chunks.count { done(.success(destination.take())) }
                    return
                }
                values = Self.copyOut(sharedResults, range)
            }
            if let deliver, !ordered {
                deliver(values)
            } else {
                chunks[index] = values
                if deliver != nil {
                    deliverInOrder()
                    if failed { return }
                }
            }
            if arrivedCount == chunks.count {
                var all: [R] = []
                if deliver == nil {
                    all.reserveCapacity(chunks.reduce(0) { $0 + ($1?.count ?? 0) })
                    for chunk in chunks { all.append(contentsOf: chunk!) } // bulk copies
                }
                done(.success(all))
            }
        }
    }
}

/// The array a `map` of fixed-width results returns, allocated before the
/// workers are forked and left out of their copy of memory until it is
/// handed out.
///
/// Why: `fork` write-protects every private page of the parent, so the first
/// write to each page afterwards is a page fault. Filling an 8 MB array after
/// the workers' fork cost about 3 ms on a 2-core VM, six times the copy
/// itself. Pages marked `MADV_WIPEONFORK` are not shared with a child (a
/// child forked meanwhile sees zeros there, never the parent's data, and
/// nothing it writes reaches the parent), so their page-table entries stay
/// writable. The mark is removed before the array is handed out or freed,
/// so the memory is ordinary heap again afterwards.
///
/// Only for the trivial, fixed-width `WirePrimitive` types: the elements are
/// uninitialized until `copy` fills them, and every bit pattern is a value.
@usableFromInline
final class ForkExcludedArray<R> {
    @usableFromInline var array: [R]
    /// Whether the mark is set on the array's pages (it is a hint: without it,
    /// or when the kernel refuses it, the array is filled with page faults).
    @usableFromInline var marked: Bool

    /// The array's elements, as memory (valid while the array is not handed out).
    @usableFromInline let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    init(count: Int) {
        array = [R](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        bytes = array.withUnsafeMutableBytes { $0 }
        marked = Sys.setWipeOnFork(bytes.baseAddress, bytes.count, wipe: true) == .applied
    }

    /// Copies the results at `range` from the workers' shared memory.
    @inlinable
    func copy(_ range: Range<Int>, from shared: UnsafeMutableRawPointer) {
        let stride = MemoryLayout<R>.stride
        // Through `bytes`: the array is not handed out yet, so it has no other
        // owner (and no access check or uniqueness test per chunk is needed).
        (bytes.baseAddress! + range.lowerBound * stride).copyMemory(from: shared + range.lowerBound * stride,
                                                                    byteCount: range.count * stride)
    }

    /// Removes the mark; `false` if the kernel refused (the pages would then
    /// stay zeroed in every later child, wherever the heap reuses them).
    @inlinable
    func unmark() -> Bool {
        guard marked else { return true }
        marked = false
        return array.withUnsafeMutableBytes { Sys.setWipeOnFork($0.baseAddress, $0.count, wipe: false) } != .refused
    }

    /// The filled array, unmarked.
    @inlinable
    func take() -> [R] {
        if unmark() { return array }
        // Never free memory that still has the mark: keep it, and return a copy.
        let copy = array.withUnsafeBufferPointer { [R]($0) }
        _ = Unmanaged.passRetained(ArrayBox(array))
        return copy
    }

    deinit {
        if !unmark() { _ = Unmanaged.passRetained(ArrayBox(array)) }
    }
}

/// Holds an array that must never be freed (see `ForkExcludedArray.take`).
@usableFromInline
final class ArrayBox<R> {
    @usableFromInline let array: [R]
    @usableFromInline init(_ array: [R]) { self.array = array }
}
