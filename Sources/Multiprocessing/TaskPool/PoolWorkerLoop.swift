import Glibc
import _CMultiprocessingSync
import MultiprocessingPlatform
import Tracing

/// Shared memory between a pool and one worker (64-bit slots): which order
/// runs, and which orders were cancelled before they started.
///
/// Cancelling an order the worker already holds is a Dekker handshake: the
/// worker stores the order it starts in ``running`` and then looks at its
/// cancel slot; the parent stores the order in the cancel slot and then looks
/// at ``running``. Both are sequentially consistent, so at least one of them
/// sees the other: the worker skips the order, or the parent sees it running
/// and kills the worker (or both, and the kill only costs a replacement).
enum WorkerControl {
    /// Orders one worker holds at most (the parent's window): cancel slots
    /// are per order number modulo this, so they never collide.
    static let window = 64
    /// Slot 0: the order running, ``idle``, or ``initializing``.
    static let running = 0
    static let idle: Int64 = 0
    static let initializing: Int64 = -1
    static func cancelSlot(_ seq: UInt64) -> Int { 1 + Int(seq % UInt64(window)) }
    static let bytes = (1 + window) * 8
}

/// A ``MP/TaskPool`` worker: a named task of the library that a worker
/// process runs for its whole life (started by any start method). It takes
/// orders from its channel, runs them in order, and reports each result.
struct PoolWorkerLoop: MP.NamedTask {
    static var name: String { "swift-multiprocessing.pool-worker" }

    var channel: MP.Connection
    var initializer: AnyNamedTask?
    /// Python's `maxtasksperchild`: the worker exits after this many orders.
    var maxTasks: Int?
    /// The limits a worker keeps per task, and whether it measures each.
    var rules = WorkerRules()

    func run() async throws {
        var worker = PoolWorkerRuntime(fd: channel.fileno, maxTasks: maxTasks ?? .max, rules: rules)
        await worker.serve(initializer: initializer?.task)
    }
}

/// What a pool worker does around each order, from the pool's
/// ``MP/WorkerLimits`` and `recordUsage` (the process-wide limits, memory,
/// network and privileges, are applied as the worker starts: ``LimitPlan``).
struct WorkerRules: Codable, Sendable {
    /// CPU seconds per order: `RLIMIT_CPU`'s soft limit, moved before each.
    var cpuTime: Double?
    /// Seconds after which the order's Swift `Task` is cancelled.
    var softTimeLimit: Double?
    /// Resident bytes above which the worker retires after an order.
    var recycleAbove: Int?
    /// Reports what each order used.
    var recordUsage = false

    var isEmpty: Bool { cpuTime == nil && softTimeLimit == nil && recycleAbove == nil && !recordUsage }
}

/// The worker's side of ``WorkerRules``: the /proc files it keeps open and
/// the measurements around one order.
struct WorkerGauges {
    let rules: WorkerRules
    private var statm: Int32 = -1
    private var status: Int32 = -1
    private var clearRefs: Int32 = -1
    private var cpuHard = Sys.unlimited
    private var before = Sys.Usage(userNanoseconds: 0, systemNanoseconds: 0, peakResidentBytes: 0)

    init(rules: WorkerRules) {
        self.rules = rules
        if rules.recycleAbove != nil { statm = (try? Sys.openReadOnly("/proc/self/statm")) ?? -1 }
        if rules.recordUsage {
            status = (try? Sys.openReadOnly("/proc/self/status")) ?? -1
            clearRefs = (try? Sys.openReadWrite("/proc/self/clear_refs")) ?? -1
        }
        if rules.cpuTime != nil {
            cpuHard = (try? Sys.limit(.cpuSeconds).hard) ?? Sys.unlimited
            // SIGXCPU's default action dumps core: a limit, not a crash.
            if let core = try? Sys.limit(.coreBytes) { try? Sys.setLimit(.coreBytes, soft: 0, hard: core.hard) }
            Sys.restoreDefault(signal: SIGXCPU)
        }
    }

    /// Before an order: the CPU limit moved to what is used plus the
    /// order's allowance; the peak-memory mark reset (`clear_refs` 5).
    mutating func begin() {
        guard !rules.isEmpty else { return }
        if rules.cpuTime != nil || rules.recordUsage { before = Sys.usage }
        if let cpu = rules.cpuTime {
            let used = Double(before.userNanoseconds + before.systemNanoseconds) / 1e9
            let soft = min(UInt64((used + cpu).rounded(.up)), cpuHard)
            try? Sys.setLimit(.cpuSeconds, soft: soft, hard: cpuHard)
        }
        if clearRefs >= 0 { _ = Sys.writeFromStart(clearRefs, "5") }
    }

    /// After an order: what it used (when recorded).
    func used() -> Sys.Usage? {
        guard rules.recordUsage else { return nil }
        let after = Sys.usage
        let peak = status >= 0 ? Self.field("VmHWM:", of: status) : nil
        return Sys.Usage(userNanoseconds: after.userNanoseconds &- before.userNanoseconds,
                         systemNanoseconds: after.systemNanoseconds &- before.systemNanoseconds,
                         peakResidentBytes: peak ?? after.peakResidentBytes)
    }

    /// The resident bytes now, when over the recycling threshold.
    func overRecyclingThreshold() -> UInt64? {
        guard let limit = rules.recycleAbove, statm >= 0 else { return nil }
        // statm: `size resident shared ...`, in pages.
        guard let pages = Self.number(in: statm, after: " ") else { return nil }
        let resident = pages * UInt64(Sys.pageSize)
        return resident > UInt64(limit) ? resident : nil
    }

    /// A `kB` field of /proc/self/status, in bytes.
    private static func field(_ name: StaticString, of fd: Int32) -> UInt64? {
        number(in: fd, after: name).map { $0 * 1024 }
    }

    /// The decimal number after the first `marker` in a small /proc file,
    /// read and scanned as bytes (a `String` split into lines costs tens of
    /// microseconds a task).
    private static func number(in fd: Int32, after marker: StaticString) -> UInt64? {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer -> UInt64? in
            guard let count = Sys.readFromStart(fd, into: UnsafeMutableRawBufferPointer(buffer)), count > 0 else { return nil }
            let bytes = UnsafeBufferPointer(rebasing: buffer[..<count])
            let pattern = UnsafeBufferPointer(start: marker.utf8Start, count: marker.utf8CodeUnitCount)
            var at = 0
            while at + pattern.count <= bytes.count {
                if bytes[at] == pattern[0] && zip(bytes[at..<at + pattern.count], pattern).allSatisfy({ $0 == $1 }) { break }
                at += 1
            }
            guard at + pattern.count <= bytes.count else { return nil }
            at += pattern.count
            while at < bytes.count && (bytes[at] == 32 || bytes[at] == 9) { at += 1 }
            var value: UInt64 = 0
            var digits = 0
            while at < bytes.count, bytes[at] >= 48, bytes[at] <= 57 {
                value = value * 10 + UInt64(bytes[at] - 48)
                at += 1
                digits += 1
            }
            return digits > 0 ? value : nil
        }
    }
}

/// A value handed to the soft time limit's task: the worker waits for that
/// task, so only one of them touches it at a time.
private struct Handed<T>: @unchecked Sendable {
    var value: T
}

/// The worker's side of the channel.
struct PoolWorkerRuntime {
    let fd: Int32
    let maxTasks: Int
    private var input = InputBuffer(capacity: 64 << 10)
    private var output = ByteWriter()
    private var passed: [Int32] = []
    private var control: SharedBlock?
    private var types: [Int: Result<any MP.NamedTask.Type, MP.Error>] = [:]
    private var blocks: [UInt64: SharedBlock] = [:]
    private var handled = 0
    private var lastFlush: Int64 = Deadline.now

    /// Flush the reports at least this often while orders keep coming.
    private static let flushInterval: Int64 = 1_000_000
    private static let flushBytes = 256 << 10

    private var gauges: WorkerGauges
    /// Over the recycling threshold: no more orders.
    private var retiring = false
    /// The trace context of the next order (a ``WorkerFrames/OrderKind/context`` order).
    private var traceHeaders: MP.TraceHeaders?

    init(fd: Int32, maxTasks: Int, rules: WorkerRules) {
        self.fd = fd
        self.maxTasks = maxTasks
        self.gauges = WorkerGauges(rules: rules)
    }

    enum Order {
        case define(Int, String)
        case task(seq: UInt64, type: Int, arguments: [UInt8])
        case rawTask(seq: UInt64, type: Int, bytes: [UInt8])
        case chunk(seq: UInt64, type: Int, count: Int, items: [UInt8])
        case block(id: UInt64, size: Int)
        case fixedChunk(seq: UInt64, type: Int, block: UInt64, tasks: Int, results: Int, count: Int)
        case release(UInt64)
        case hello(controlSize: Int)
        case context(MP.TraceHeaders?)
    }

    mutating func serve(initializer: (any MP.NamedTask)?) async {
        // The first order is the hello: the control block and the stderr pipe.
        guard case .hello(let size)? = nextOrders(blocking: true)?.first, passed.count >= 2 else {
            Runtime.reportUncaught(MP.Error.invalidArgument("the pool worker got no hello"), processName: nil)
            return
        }
        let controlFd = passed.removeFirst(), stderrFd = passed.removeFirst()
        do { control = try SharedBlock(adopting: controlFd, size: size) } catch { return }
        try? Sys.dup2(stderrFd, STDERR_FILENO)
        Sys.close(stderrFd)
        if let initializer {
            store(WorkerControl.running, WorkerControl.initializing)
            do {
                _ = try await initializer.run()
            } catch {
                var writer = output
                let start = WorkerFrames.begin(&writer, WorkerFrames.ReportKind.initializerFailed.rawValue)
                writer.write("\(type(of: error))")
                writer.write("\(error)")
                WorkerFrames.finish(&writer, at: start)
                output = writer
                flush()
                return
            }
        }
        store(WorkerControl.running, WorkerControl.idle)
        report(.ready) { _ in }
        flush()
        var pending: [Order] = []
        while handled < maxTasks && !retiring {
            if pending.isEmpty {
                // Nothing parsed: take what has arrived; block only after the
                // reports so far are sent.
                if let orders = nextOrders(blocking: false), !orders.isEmpty {
                    pending = orders
                } else {
                    flush()
                    guard let orders = nextOrders(blocking: true) else { break } // the pool closed the channel
                    pending = orders
                }
            }
            let order = pending.removeFirst()
            await handle(order)
            if output.bytes.count >= Self.flushBytes || Deadline.now - lastFlush >= Self.flushInterval { flush() }
        }
        flush()
        for fd in passed { Sys.close(fd) }
    }

    /// Reads once and parses the complete orders; nil at end-of-file (or a broken stream).
    private mutating func nextOrders(blocking: Bool) -> [Order]? {
        while true {
            var orders: [Order] = []
            do {
                try input.frames { body in orders.append(try Self.parse(body)) }
            } catch {
                Runtime.reportUncaught(error, processName: nil)
                return nil
            }
            if !orders.isEmpty { return orders }
            var received = Sys.Received.wouldBlock
            let fd = self.fd
            var passed = self.passed
            do {
                _ = try input.fill { buffer in
                    received = try Sys.receiveSome(fd, into: buffer, descriptors: &passed, blocking: blocking)
                    if case .bytes(let count) = received { return count }
                    return 0
                }
            } catch {
                return nil
            }
            self.passed = passed
            switch received {
            case .bytes: continue
            case .endOfFile: return nil
            case .wouldBlock: return []
            }
        }
    }

    private static func parse(_ body: UnsafeRawBufferPointer) throws -> Order {
        var reader = ByteReader(body)
        let kind = try reader.readByte()
        switch WorkerFrames.OrderKind(rawValue: kind) {
        case .define:
            let index = Int(try reader.read(UInt32.self))
            return .define(index, String(decoding: try reader.readRaw(reader.remaining), as: UTF8.self))
        case .task:
            let seq = try reader.read(UInt64.self)
            let type = Int(try reader.read(UInt32.self))
            return .task(seq: seq, type: type, arguments: [UInt8](try reader.readRaw(reader.remaining)))
        case .rawTask:
            let seq = try reader.read(UInt64.self)
            let type = Int(try reader.read(UInt32.self))
            return .rawTask(seq: seq, type: type, bytes: [UInt8](try reader.readRaw(reader.remaining)))
        case .chunk:
            let seq = try reader.read(UInt64.self)
            let type = Int(try reader.read(UInt32.self))
            let count = Int(try reader.read(UInt32.self))
            return .chunk(seq: seq, type: type, count: count, items: [UInt8](try reader.readRaw(reader.remaining)))
        case .block:
            return .block(id: try reader.read(UInt64.self), size: Int(try reader.read(UInt64.self)))
        case .fixedChunk:
            return .fixedChunk(seq: try reader.read(UInt64.self), type: Int(try reader.read(UInt32.self)),
                               block: try reader.read(UInt64.self), tasks: Int(try reader.read(UInt64.self)),
                               results: Int(try reader.read(UInt64.self)), count: Int(try reader.read(UInt32.self)))
        case .release:
            return .release(try reader.read(UInt64.self))
        case .hello:
            return .hello(controlSize: Int(try reader.read(UInt64.self)))
        case .context:
            return .context(TaskSpan.decode(try reader.readRaw(reader.remaining)))
        case nil:
            throw MP.Error.malformed(type: "pool order", reason: "unknown kind \(kind)")
        }
    }

    private mutating func handle(_ order: Order) async {
        switch order {
        case .define(let index, let name):
            types[index] = Result { () throws(MP.Error) in try TaskRegistry.shared.task(named: name) }
        case .hello:
            break
        case .context(let headers):
            traceHeaders = headers
        case .block(let id, let size):
            guard !passed.isEmpty else { return }
            let fd = passed.removeFirst()
            blocks[id] = try? SharedBlock(adopting: fd, size: size)
        case .release(let id):
            blocks[id] = nil
        case .task(let seq, let type, let arguments):
            await runOrder(seq) { await $0.runOne(type, arguments) }
        case .rawTask(let seq, let type, let bytes):
            await runOrder(seq) { await $0.runRaw(type, bytes) }
        case .chunk(let seq, let type, let count, let items):
            await runOrder(seq) { await $0.runChunk(type, count, items) }
        case .fixedChunk(let seq, let type, let block, let tasks, let results, let count):
            await runOrder(seq) { await $0.runFixed(type, block, tasks, results, count) }
        }
    }

    /// Runs order `seq` unless it was cancelled, and reports what it came to.
    private mutating func runOrder(_ seq: UInt64, _ body: (Self) async -> Outcome) async {
        handled += 1
        // A context order goes with the order after it, run or skipped.
        let headers = traceHeaders
        traceHeaders = nil
        guard begin(seq) else { return }
        let start = Deadline.now
        gauges.begin()
        var outcome: Outcome
        if let headers {
            // Submitted inside a trace: the task runs in its span's context.
            let worker = self
            outcome = await ServiceContext.withValue(headers.context) { await worker.runMeasured(body) }
        } else {
            outcome = await runMeasured(body)
        }
        store(WorkerControl.running, WorkerControl.idle)
        if let usage = gauges.used() {
            report(.usage) { writer in
                writer.write(seq)
                writer.write(usage.userNanoseconds)
                writer.write(usage.systemNanoseconds)
                writer.write(usage.peakResidentBytes)
            }
        }
        report(seq, start, outcome)
        if let resident = gauges.overRecyclingThreshold() {
            retiring = true
            report(.recycling) { $0.write(resident) }
        }
    }

    private func runMeasured(_ body: (Self) async -> Outcome) async -> Outcome {
        if let soft = gauges.rules.softTimeLimit {
            return await withoutActuallyEscaping(body) { body in await runUnderSoftLimit(soft, body) }
        }
        return await body(self)
    }

    /// Runs an order in a task of its own, cancelled at the soft limit; a
    /// failure after the limit fired says so. (The worker waits for that
    /// task, so the body does not outlive this call.)
    private func runUnderSoftLimit(_ soft: Double, _ body: @escaping (Self) async -> Outcome) async -> Outcome {
        let handed = Handed(value: (self, body))
        let (result, fired) = await SoftTimeLimit.run(after: soft) { Handed(value: await handed.value.1(handed.value.0)) }
        var outcome: Outcome
        switch result {
        case .success(let done): outcome = done.value
        case .failure(let error): outcome = .failed(index: 0, why: .threw, type: "\(type(of: error))", description: "\(error)", before: [])
        }
        if fired, case .failed(let index, .threw, let type, let description, let before) = outcome {
            outcome = .failed(index: index, why: .softTimeLimit, type: type, description: description, before: before)
        }
        return outcome
    }

    /// What an order came to: the payload of a `done`, or a failure at an item.
    enum Outcome {
        case done([UInt8])
        case failed(index: Int, why: WorkerFrames.Failure, type: String, description: String, before: [UInt8])
    }

    private func resolve(_ type: Int) -> Result<any MP.NamedTask.Type, MP.Error> {
        types[type] ?? .failure(.unknownTask("#\(type) (never defined)"))
    }

    private func runOne(_ type: Int, _ arguments: [UInt8]) async -> Outcome {
        switch resolve(type) {
        case .failure(let error): return .failed(index: 0, why: .task, type: "MP.Error", description: error.description, before: [])
        case .success(let type):
            let items = ChunkItems(single: arguments)
            return await Self.run(type, items)
        }
    }

    private func runChunk(_ type: Int, _ count: Int, _ bytes: [UInt8]) async -> Outcome {
        switch resolve(type) {
        case .failure(let error): return .failed(index: 0, why: .task, type: "MP.Error", description: error.description, before: [])
        case .success(let type):
            guard let items = ChunkItems(count: count, bytes) else {
                return .failed(index: 0, why: .task, type: "MP.Error", description: "a malformed chunk", before: [])
            }
            return await Self.run(type, items)
        }
    }

    /// The items of a task or a chunk: each one task's encoded arguments.
    struct ChunkItems {
        let single: Bool
        let items: [ArraySlice<UInt8>]

        init(single arguments: [UInt8]) {
            self.single = true
            items = [arguments[...]]
        }

        init?(count: Int, _ bytes: [UInt8]) {
            single = false
            var items: [ArraySlice<UInt8>] = []
            items.reserveCapacity(count)
            var offset = 0
            for _ in 0..<count {
                guard bytes.count - offset >= 4 else { return nil }
                let length = bytes.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
                offset += 4
                guard bytes.count - offset >= length else { return nil }
                items.append(bytes[offset..<offset + length])
                offset += length
            }
            self.items = items
        }
    }

    /// Runs the items in order; a chunk's results are each `[u32 length][result]`, a single task's is bare.
    private static func run<T: MP.NamedTask>(_ type: T.Type, _ chunk: ChunkItems) async -> Outcome {
        var results = ByteWriter()
        for (index, item) in chunk.items.enumerated() {
            let task: T
            do {
                task = try item.withUnsafeBytes { raw in try WireFormat.decode(T.self, from: raw) }
            } catch {
                return .failed(index: index, why: .task, type: "MP.Error",
                               description: MP.Error.badArguments(task: T.name, reason: "\(error)").description, before: results.bytes)
            }
            let value: T.Result
            do {
                value = try await task.run()
            } catch {
                return .failed(index: index, why: .threw, type: "\(Swift.type(of: error))", description: "\(error)", before: results.bytes)
            }
            do {
                let encoded = try T._encodeResult(value)
                if chunk.single { return .done(encoded) }
                results.writeLength(encoded.count)
                results.writeRaw(encoded)
            } catch {
                return .failed(index: index, why: .result, type: "MP.Error", description: error.description, before: results.bytes)
            }
        }
        return .done(results.bytes)
    }

    /// A fixed-width task: its bytes in, its result's bytes out, through the
    /// task type's specialized loop (no `Codable` on either side).
    private func runRaw(_ type: Int, _ bytes: [UInt8]) async -> Outcome {
        switch resolve(type) {
        case .failure(let error): return .failed(index: 0, why: .task, type: "MP.Error", description: error.description, before: [])
        case .success(let type): return await Self.runRaw(type, bytes)
        }
    }

    private static func runRaw<T: MP.NamedTask>(_ type: T.Type, _ bytes: [UInt8]) async -> Outcome {
        guard bytes.count == MemoryLayout<T>.size else {
            return .failed(index: 0, why: .task, type: "MP.Error",
                           description: "\(bytes.count) bytes for a task of \(MemoryLayout<T>.size)", before: [])
        }
        let task = UnsafeMutableRawPointer.allocate(byteCount: max(1, MemoryLayout<T>.stride), alignment: 16)
        let result = UnsafeMutableRawPointer.allocate(byteCount: max(1, MemoryLayout<T.Result>.stride), alignment: 16)
        defer {
            task.deallocate()
            result.deallocate()
        }
        bytes.withUnsafeBytes { if let base = $0.baseAddress { task.copyMemory(from: base, byteCount: $0.count) } }
        var completed = 0
        do {
            try await T._runFixedWidth(task, result, 1, &completed)
        } catch {
            return .failed(index: 0, why: .threw, type: "\(Swift.type(of: error))", description: "\(error)", before: [])
        }
        return .done([UInt8](UnsafeRawBufferPointer(start: result, count: MemoryLayout<T.Result>.size)))
    }

    private func runFixed(_ type: Int, _ block: UInt64, _ tasks: Int, _ results: Int, _ count: Int) async -> Outcome {
        guard case .success(let type) = resolve(type) else {
            return .failed(index: 0, why: .task, type: "MP.Error", description: "unknown task type #\(type)", before: [])
        }
        guard let shared = blocks[block] else {
            return .failed(index: 0, why: .task, type: "MP.Error", description: "shared block \(block) never arrived", before: [])
        }
        var completed = 0
        do {
            try await type._runFixedWidth(UnsafeRawPointer(shared.base + tasks), shared.base + results, count, &completed)
            return .done([])
        } catch {
            return .failed(index: completed, why: .threw, type: "\(Swift.type(of: error))", description: "\(error)", before: [])
        }
    }

    // MARK: control block

    private func store(_ slot: Int, _ value: Int64) {
        guard let control else { return }
        cmp_atomic_store_i64(control.base.assumingMemoryBound(to: Int64.self) + slot, value)
    }

    private func load(_ slot: Int) -> Int64 {
        guard let control else { return 0 }
        return cmp_atomic_load_i64(control.base.assumingMemoryBound(to: Int64.self) + slot)
    }

    /// Marks `seq` running unless it was cancelled; a cancelled one is reported skipped.
    private mutating func begin(_ seq: UInt64) -> Bool {
        store(WorkerControl.running, Int64(bitPattern: seq))
        if load(WorkerControl.cancelSlot(seq)) == Int64(bitPattern: seq) {
            store(WorkerControl.running, WorkerControl.idle)
            report(.skipped) { $0.write(seq) }
            return false
        }
        return true
    }

    // MARK: reports

    private mutating func report(_ kind: WorkerFrames.ReportKind, _ body: (inout ByteWriter) -> Void) {
        let start = WorkerFrames.begin(&output, kind.rawValue)
        body(&output)
        WorkerFrames.finish(&output, at: start)
    }

    private mutating func report(_ seq: UInt64, _ start: Int64, _ outcome: Outcome) {
        let mark = output.bytes.count
        let elapsed = UInt64(max(0, Deadline.now - start))
        switch outcome {
        case .done(let payload):
            report(.done) { writer in
                writer.write(seq)
                writer.write(elapsed)
                writer.writeRaw(payload)
            }
        case .failed(let index, let why, let type, let description, let before):
            report(.failed) { writer in
                writer.write(seq)
                writer.write(elapsed)
                writer.write(UInt32(index))
                writer.write(why.rawValue)
                writer.write(type)
                writer.write(description)
                writer.writeRaw(before)
            }
        }
        if output.bytes.count > WorkerFrames.maxBody {
            // A result too large for one frame: fail that order instead.
            output.bytes.removeSubrange(mark...)
            report(.failed) { writer in
                writer.write(seq); writer.write(elapsed); writer.write(UInt32(0)); writer.write(WorkerFrames.Failure.result.rawValue)
                writer.write("MP.Error"); writer.write("the encoded results are over the pool's frame limit of \(WorkerFrames.maxBody) bytes")
            }
        }
    }

    private mutating func flush() {
        lastFlush = Deadline.now
        guard !output.bytes.isEmpty else { return }
        let fd = self.fd
        _ = output.bytes.withUnsafeBytes { raw in try? Sys.sendAll(fd, raw) }
        output.bytes.removeAll(keepingCapacity: true)
    }
}
