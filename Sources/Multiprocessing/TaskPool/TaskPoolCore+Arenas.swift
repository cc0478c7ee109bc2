import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The arena cache: shared-memory blocks that carry a map's inputs and
/// results, reused across batches and released in the workers too.
extension TaskPoolCore {
    /// Shared memory of at least `bytes` for a fixed-width map; the pool
    /// keeps one between maps (the workers keep it mapped).
    func acquireArena(bytes: Int) throws(MP.Error) -> PoolArena {
        try lock.withLock { () throws(MP.Error) -> PoolArena in
            if let arena = cachedArena, !arena.inUse, arena.block.size >= bytes {
                arena.inUse = true
                return arena
            }
            let arena: PoolArena
            do { arena = try PoolArena(id: nextArenaId, bytes: bytes) } catch { throw .invalidArgument("no shared memory for the map: \(error)") }
            nextArenaId += 1
            arena.inUse = true
            if cachedArena.map({ !$0.inUse }) ?? true {
                if let old = cachedArena { forget(old) }
                cachedArena = arena
            }
            return arena
        }
    }

    func releaseArena(_ arena: PoolArena) {
        lock.withLock {
            arena.inUse = false
            if arena !== cachedArena { forget(arena) }
        }
        wake()
    }

    /// Tells the workers that mapped `arena` to unmap it.
    func forget(_ arena: PoolArena) {
        var frame = ByteWriter()
        let start = WorkerFrames.begin(&frame, WorkerFrames.OrderKind.release.rawValue)
        frame.write(arena.id)
        WorkerFrames.finish(&frame, at: start)
        for worker in workers where worker.knownBlocks.remove(arena.id) != nil {
            worker.outbound += frame.bytes
        }
    }
}
