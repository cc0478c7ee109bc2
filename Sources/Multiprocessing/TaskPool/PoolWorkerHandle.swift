import Glibc
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The parent's side of one ``MP/TaskPool`` worker: its process, its
/// channel (non-blocking here), its control block, the orders it holds.
/// Guarded by the pool's lock.
final class PoolWorkerHandle {
    let process: MP.Process
    let pidfd: Int32
    let channel: MP.Connection
    var fd: Int32 { channel.fileno }
    let control: SharedBlock
    let stderr: WorkerStderr

    var input = InputBuffer(capacity: 64 << 10)
    var outbound: [UInt8] = []
    var outboundOffset = 0
    /// The orders sent and not yet reported, oldest (running) first.
    var inFlight: [PoolJob] = []
    var nextSeq: UInt64 = 1
    var knownTypes: Set<UInt32> = []
    var knownBlocks: Set<UInt64> = []
    /// Orders sent (Python's `maxtasksperchild` counts them).
    var sent = 0
    var ready = false
    /// Mean run time of its recent orders (ns); nil before the first report.
    var meanNanoseconds: Double?
    /// When the timed order it holds runs out.
    var deadline: Deadline?
    /// Killed by the pool (a timeout, a cancellation, terminate): takes no more orders.
    var dying = false
    var closedForWriting = false
    /// Over the recycling threshold: takes no more orders and is about to exit.
    var retiring = false
    /// Orders it reported.
    var ordersDone = 0
    /// How it ended, when the pool knows better than its exit status.
    var ending: String?
    /// The highest per-order peak it reported (recording usage resets the
    /// kernel's mark before each order, so its own peak is since the last one).
    var peakReported = 0

    init(process: MP.Process, channel: MP.Connection, control: SharedBlock, stderr: WorkerStderr) throws(MP.Error) {
        self.process = process
        self.pidfd = try process.sentinel
        self.channel = channel
        self.control = control
        self.stderr = stderr
    }

    var pid: Int32 { process.pid ?? -1 }

    var hasOutbound: Bool { outboundOffset < outbound.count }

    private var slots: UnsafeMutablePointer<Int64> { control.base.assumingMemoryBound(to: Int64.self) }

    /// The order the worker is running (``WorkerControl/idle``, ``WorkerControl/initializing``, or a seq).
    var running: Int64 { cmp_atomic_load_i64(slots + WorkerControl.running) }

    /// Asks the worker to skip `seq`; true when it may already run it (the caller kills it).
    func cancel(_ seq: UInt64) -> Bool {
        cmp_atomic_store_i64(slots + WorkerControl.cancelSlot(seq), Int64(bitPattern: seq))
        return running == Int64(bitPattern: seq)
    }

    /// Orders it may hold: many short ones (so their messages and reports
    /// travel in batches), few long ones (so a slow order does not hold up
    /// the ones queued behind it while another worker is idle).
    var window: Int {
        if deadline != nil || inFlight.contains(where: { $0.timeout != nil }) { return 1 }
        guard let mean = meanNanoseconds else { return 2 }
        if mean < 50_000 { return WorkerControl.window }
        if mean < 1_000_000 { return 8 }
        return 2
    }

    func noteRunTime(_ nanoseconds: UInt64) {
        let value = Double(nanoseconds)
        meanNanoseconds = meanNanoseconds.map { $0 * 0.75 + value * 0.25 } ?? value
    }

    /// Writes what it can without blocking; false when the worker's socket is gone.
    func flush() -> Bool {
        while hasOutbound {
            let fd = self.fd, offset = outboundOffset
            let result = outbound.withUnsafeBytes { raw in
                Result { () throws(MP.OSError) -> Int? in try Sys.sendSome(fd, UnsafeRawBufferPointer(rebasing: raw[offset...])) }
            }
            switch result {
            case .success(let count?): outboundOffset += count
            case .success(nil): return true
            case .failure: outbound = []; outboundOffset = 0; return false
            }
        }
        outbound.removeAll(keepingCapacity: true)
        outboundOffset = 0
        return true
    }

    /// Sends a frame with descriptors attached, only when nothing is waiting
    /// before it (descriptors travel with the bytes of their own `sendmsg`).
    /// False: not now (the socket is busy), try later.
    func sendNow(_ frame: [UInt8], descriptors: [Int32]) -> Bool {
        guard !hasOutbound else { return false }
        let fd = self.fd
        let sent = frame.withUnsafeBytes { raw in try? Sys.sendSome(fd, raw, descriptors: descriptors) }
        guard let count = sent else { return false }
        if count < frame.count { outbound = Swift.Array(frame[count...]); outboundOffset = 0 }
        return true
    }
}
