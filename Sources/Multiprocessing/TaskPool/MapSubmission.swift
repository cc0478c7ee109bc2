import Glibc
import _CMultiprocessingSync
import MultiprocessingPlatform
import Tracing

/// The jobs of one `map`, and how their results come together.
///
/// Fixed-width tasks and results (`_isPOD`: bitwise-copyable, no references)
/// are copied into a shared arena in one `memcpy`; each worker runs its
/// chunk in place (`NamedTask._runFixedWidth`, specialized
/// per task type) and writes the results next to them, which come back in
/// one `memcpy`. Both ends are the same build, so the layout is the same.
/// Other maps send each chunk's tasks encoded, and decode its results.
final class MapSubmission<T: MP.NamedTask>: @unchecked Sendable {
    private(set) var jobs: [PoolJob] = []

    /// The jobs not yet settled together (empty once all have): what a cancel stops.
    var pendingJobs: [PoolJob] { lock.withLock { jobs } }
    private let lock = ForkSafeLock()
    private var chunks: [[T.Result]?] = []
    private var remaining = 0
    private var settled = 0
    private var failed = false
    private let result: MP.AsyncResult<[T.Result]>
    private var arena: PoolArena?
    private var resultsOffset = 0
    private var count = 0
    private var chunkCount = 0
    private var chunkSize = 1
    /// A fixed-width map's results, written in place as chunks arrive.
    private var destination: [T.Result] = []
    private var destinationBytes: UnsafeMutableRawBufferPointer?
    private var callerWaits = false
    /// The trace the map was submitted in: each chunk gets a span in it.
    private let trace = ServiceContext.current
    private weak var core: TaskPoolCore?

    static var isFixedWidth: Bool { _isPOD(T.self) && _isPOD(T.Result.self) }

    /// A map of `count` fixed-width tasks that `fill` writes into shared memory.
    /// `callerWaits`: the calling thread only waits for the result, so it
    /// maps the result array's pages meanwhile (the copies into it then take
    /// no page faults on the pool's thread).
    ///
    /// `fill(address, n)` writes the next `n` tasks at `address`. Each chunk
    /// is submitted as soon as it is written, so the workers start while
    /// the rest is being written.
    init(fixedWidth count: Int, fill: (UnsafeMutableRawPointer, Int) throws -> Void, type: UInt32, chunksize: Int, timeout: Double?,
         pool: MP.TaskPool, into result: MP.AsyncResult<[T.Result]>, callerWaits: Bool) throws(MP.Error) {
        precondition(Self.isFixedWidth)
        self.result = result
        self.core = pool.core
        self.count = count
        chunkSize = chunksize
        result.progress?.setTotal(count)
        guard count > 0 else {
            result.resolve(.success([]))
            return
        }
        let ranges = Self.ranges(count, chunksize)
        remaining = ranges.count
        chunkCount = ranges.count
        let taskBytes = count * MemoryLayout<T>.stride
        resultsOffset = (taskBytes + 63) / 64 * 64
        let arena = try pool.core.acquireArena(bytes: resultsOffset + count * MemoryLayout<T.Result>.stride)
        self.arena = arena
        destination = [T.Result](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        // Its storage, kept while this object holds the only reference to
        // the array (as `ForkExcludedArray` does): chunks are copied in
        // through it, then the array is handed out whole.
        destinationBytes = destination.withUnsafeMutableBytes { $0 }
        self.callerWaits = callerWaits
        for (index, range) in ranges.enumerated() {
            do {
                try fill(arena.block.base + range.lowerBound * MemoryLayout<T>.stride, range.count)
            } catch {
                // Chunks already submitted run; the map fails with the error.
                let failure = MP.Error.invalidArgument("making the map's tasks failed: \(Swift.type(of: error)): \(error)")
                let unsubmitted = ranges.count - index
                let allSettled = lock.withLock { () -> Bool in
                    failed = true
                    settled += unsubmitted
                    if settled == chunkCount { jobs = [] }
                    return settled == chunkCount
                }
                if allSettled { pool.core.releaseArena(arena) }
                throw failure
            }
            let body = PoolJob.Body.fixed(arena: arena, tasks: range.lowerBound * MemoryLayout<T>.stride,
                                          results: resultsOffset + range.lowerBound * MemoryLayout<T.Result>.stride,
                                          count: range.count)
            let job = PoolJob(type: type, body: body, timeout: timeout ?? pool.core.limits?.timeLimit,
                              trace: trace.flatMap { TaskSpan.begin("map \(T.name)", kind: .client, in: $0) }) { [self] outcome in arrived(range, outcome) }
            lock.withLock { jobs.append(job) }
            pool.core.submit([job])
        }
    }

    /// A map of encoded tasks.
    init(encoding tasks: [T], type: UInt32, chunksize: Int, timeout: Double?, pool: MP.TaskPool,
         into result: MP.AsyncResult<[T.Result]>) throws(MP.Error) {
        self.result = result
        self.core = pool.core
        count = tasks.count
        chunkSize = chunksize
        result.progress?.setTotal(count)
        guard !tasks.isEmpty else {
            result.resolve(.success([]))
            return
        }
        let ranges = Self.ranges(count, chunksize)
        chunks = [[T.Result]?](repeating: nil, count: ranges.count)
        remaining = ranges.count
        chunkCount = ranges.count
        for (index, range) in ranges.enumerated() {
            var items = ByteWriter()
            for task in tasks[range] {
                let encoded = try MP.TaskPool.encode(task)
                items.writeLength(encoded.count)
                items.writeRaw(encoded)
            }
            let body = PoolJob.Body.chunk(count: range.count, items.bytes)
            jobs.append(PoolJob(type: type, body: body, timeout: timeout ?? pool.core.limits?.timeLimit,
                                trace: trace.flatMap { TaskSpan.begin("map \(T.name)", kind: .client, in: $0) }) { [self] outcome in arrivedEncoded(index, outcome) })
        }
    }

    private static func ranges(_ count: Int, _ chunksize: Int) -> [Range<Int>] {
        stride(from: 0, to: count, by: chunksize).map { $0..<min($0 + chunksize, count) }
    }

    /// Submitted: a waiting caller maps the result array's pages meanwhile.
    func submitted() {
        if callerWaits, let destinationBytes, destinationBytes.count > 0 {
            Sys.populateWritable(destinationBytes.baseAddress, destinationBytes.count)
        }
    }

    /// A fixed-width chunk: its results are copied out of shared memory as it arrives.
    private func arrived(_ range: Range<Int>, _ outcome: PoolJob.Outcome) {
        var failure: MP.Error?
        var values: [T.Result]?
        var releaseArena: PoolArena?
        if case .done = outcome, let arena, let destinationBytes {
            let stride = MemoryLayout<T.Result>.stride
            (destinationBytes.baseAddress! + range.lowerBound * stride)
                .copyMemory(from: arena.block.base + resultsOffset + range.lowerBound * stride, byteCount: range.count * stride)
        }
        lock.withLock {
            settled += 1
            if settled == chunkCount {
                releaseArena = arena
                jobs = [] // each holds this map
            }
            guard !failed else { return }
            switch outcome {
            case .failed(_, let error, _):
                failed = true
                failure = error
            case .done:
                remaining -= 1
                if remaining == 0 {
                    values = destination
                    destination = []
                    destinationBytes = nil
                }
            }
        }
        if case .failed = outcome { result.progress?.advance(by: range.count, failed: range.count) } else { result.progress?.advance(by: range.count) }
        if let failure { result.resolve(.failure(failure)) }
        if let values { result.resolve(.success(values)) }
        // The arena is reused only once every chunk has settled: a failed
        // map's other chunks may still be writing into it.
        if let releaseArena { core?.releaseArena(releaseArena) }
    }

    private func arrivedEncoded(_ index: Int, _ outcome: PoolJob.Outcome) {
        var failure: MP.Error?
        var values: [T.Result]?
        lock.withLock {
            settled += 1
            if settled == chunkCount { jobs = [] } // each holds this map
            guard !failed else { return }
            switch outcome {
            case .failed(_, let error, _):
                failed = true
                failure = error
            case .done(let payload):
                switch Self.decodeChunk(payload) {
                case .success(let decoded): chunks[index] = decoded
                case .failure(let error): failed = true; failure = error; return
                }
                remaining -= 1
                if remaining == 0 {
                    var all: [T.Result] = []
                    all.reserveCapacity(count)
                    for chunk in chunks { all += chunk! }
                    chunks = []
                    values = all
                }
            }
        }
        let items = max(0, min(chunkSize, count - index * chunkSize))
        if case .failed = outcome { result.progress?.advance(by: items, failed: items) } else { result.progress?.advance(by: items) }
        if let failure { result.resolve(.failure(failure)) }
        if let values { result.resolve(.success(values)) }
    }

    /// A chunk's results (or those before its failed item): each `[u32 length][result]`.
    static func decodeChunk(_ payload: [UInt8]) -> Result<[T.Result], MP.Error> {
        payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(MP.Error) {
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
