#if canImport(Glibc)
import Glibc
#endif

/// The jobs of one `map`, and how their results come together.
///
/// Fixed-width tasks and results (`_isPOD`: bitwise-copyable, no references)
/// are copied into a shared arena in one `memcpy`; each worker runs its
/// chunk in place (``MP/NamedTask/_runFixedWidth(_:_:_:_:)``, specialized
/// per task type) and writes the results next to them, which come back in
/// one `memcpy`. Both ends are the same build, so the layout is the same.
/// Other maps send each chunk's tasks encoded, and decode its results.
final class MapSubmission<T: MP.NamedTask>: @unchecked Sendable {
    private(set) var jobs: [PoolJob] = []
    private let lock = ForkSafeLock()
    private var chunks: [[T.Result]?] = []
    private var remaining = 0
    private var settled = 0
    private var failed = false
    private let result: MP.AsyncResult<[T.Result]>
    private var arena: PoolArena?
    private var resultsOffset = 0
    private var count = 0
    private weak var core: TaskPoolCore?

    static var isFixedWidth: Bool { _isPOD(T.self) && _isPOD(T.Result.self) }

    init(_ tasks: [T], type: UInt32, chunksize: Int, timeout: Double?, pool: MP.TaskPool,
         into result: MP.AsyncResult<[T.Result]>) throws(MP.PoolError) {
        self.result = result
        self.core = pool.core
        count = tasks.count
        guard !tasks.isEmpty else {
            result.resolve(.success([]))
            return
        }
        let ranges = stride(from: 0, to: tasks.count, by: chunksize).map { $0..<min($0 + chunksize, tasks.count) }
        chunks = [[T.Result]?](repeating: nil, count: ranges.count)
        remaining = ranges.count
        if Self.isFixedWidth {
            let taskBytes = tasks.count * MemoryLayout<T>.stride
            resultsOffset = (taskBytes + 63) / 64 * 64
            let arena = try pool.core.acquireArena(bytes: resultsOffset + tasks.count * MemoryLayout<T.Result>.stride)
            self.arena = arena
            tasks.withUnsafeBytes { raw in arena.block.base.copyMemory(from: raw.baseAddress!, byteCount: taskBytes) }
            for (index, range) in ranges.enumerated() {
                let body = PoolJob.Body.fixed(arena: arena, tasks: range.lowerBound * MemoryLayout<T>.stride,
                                              results: resultsOffset + range.lowerBound * MemoryLayout<T.Result>.stride,
                                              count: range.count)
                jobs.append(PoolJob(type: type, body: body, timeout: timeout) { [self] outcome in arrived(index, range, outcome) })
            }
        } else {
            for (index, range) in ranges.enumerated() {
                var items = ByteWriter()
                for task in tasks[range] {
                    let encoded = try MP.TaskPool.encode(task)
                    items.writeLength(encoded.count)
                    items.writeRaw(encoded.withUnsafeBytes { $0 })
                }
                let body = PoolJob.Body.chunk(count: range.count, items.bytes)
                jobs.append(PoolJob(type: type, body: body, timeout: timeout) { [self] outcome in arrived(index, range, outcome) })
            }
        }
    }

    private func arrived(_ index: Int, _ range: Range<Int>, _ outcome: PoolJob.Outcome) {
        var failure: MP.PoolError?
        var complete = false
        var releaseArena: PoolArena?
        lock.withLock {
            settled += 1
            if settled == chunks.count { releaseArena = arena }
            guard !failed else { return }
            switch outcome {
            case .failed(_, let error, _):
                failed = true
                failure = error
            case .done(let payload):
                if arena == nil {
                    switch Self.decodeChunk(payload) {
                    case .success(let values): chunks[index] = values
                    case .failure(let error): failed = true; failure = error; return
                    }
                }
                remaining -= 1
                complete = remaining == 0
            }
        }
        if let failure { result.resolve(.failure(failure)) }
        if complete {
            if let arena {
                let values = [T.Result](unsafeUninitializedCapacity: count) { buffer, initialized in
                    if count > 0 {
                        UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: arena.block.base + resultsOffset,
                                                                                 byteCount: count * MemoryLayout<T.Result>.stride)
                    }
                    initialized = count
                }
                result.resolve(.success(values))
            } else {
                let values = lock.withLock { () -> [T.Result] in
                    var values: [T.Result] = []
                    values.reserveCapacity(count)
                    for chunk in chunks { values += chunk! }
                    chunks = []
                    return values
                }
                result.resolve(.success(values))
            }
        }
        // The arena is reused only once every chunk has settled: a failed
        // map's other chunks may still be writing into it.
        if let releaseArena { core?.releaseArena(releaseArena) }
    }

    /// A chunk's results (or those before its failed item): each `[u32 length][result]`.
    static func decodeChunk(_ payload: [UInt8]) -> Result<[T.Result], MP.PoolError> {
        payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(MP.WireError) {
                var values: [T.Result] = []
                while reader.remaining > 0 {
                    let length = try reader.readLength()
                    values.append(try T._decodeResult([UInt8](try reader.readRaw(length))))
                }
                return .success(values)
            } catch {
                return .failure(.result(error))
            }
        }
    }
}
