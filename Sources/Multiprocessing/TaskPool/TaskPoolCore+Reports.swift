import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The report reader: a worker's frames (results, progress, type
/// definitions, errors) parsed and applied; a malformed one breaks the pool.
extension TaskPoolCore {
    /// Reads and handles every report waiting on the worker's channel.
    func readReports(_ worker: PoolWorkerHandle) {
        let fd = worker.fd
        while true {
            var descriptors: [Int32] = []
            var received = Sys.Received.wouldBlock
            _ = try? worker.input.fill { buffer in
                received = try Sys.receiveSome(fd, into: buffer, descriptors: &descriptors, blocking: false)
                if case .bytes(let count) = received { return count }
                return 0
            }
            for fd in descriptors { Sys.close(fd) } // a worker sends none
            do {
                try worker.input.frames { body in try handle(body, from: worker) }
            } catch {
                // A worker that breaks the protocol is stopped like a dead one.
                kill(worker)
                return
            }
            guard case .bytes = received else { return }
        }
    }

    func handle(_ body: UnsafeRawBufferPointer, from worker: PoolWorkerHandle) throws {
        var reader = ByteReader(body)
        let kind = try reader.readByte()
        switch WorkerFrames.ReportKind(rawValue: kind) {
        case .ready:
            worker.ready = true
            if let timeout = worker.inFlight.first?.timeout { worker.deadline = Deadline.after(validSeconds: timeout) }
        case .initializerFailed:
            let type = try reader.readString()
            let description = try reader.readString()
            breakPool(.initializerFailed(type: type, description: description))
        case .done, .failed:
            let seq = try reader.read(UInt64.self)
            let elapsed = try reader.read(UInt64.self)
            guard let job = worker.inFlight.first, job.seq == seq else {
                throw MP.Error.malformed(type: "pool report", reason: "report for order \(seq) out of turn")
            }
            worker.inFlight.removeFirst()
            job.worker = nil
            if job.trace != nil {
                job.ranOn = worker.pid
                job.runNanoseconds = elapsed
            }
            worker.deadline = nil
            worker.noteRunTime(elapsed)
            metrics.duration.recordNanoseconds(Int64(clamping: elapsed))
            worker.ordersDone += 1
            if kind == WorkerFrames.ReportKind.done.rawValue {
                finish(job, .done([UInt8](try reader.readRaw(reader.remaining))))
            } else {
                let index = Int(try reader.read(UInt32.self))
                let why = WorkerFrames.Failure(rawValue: try reader.readByte())
                let type = try reader.readString()
                let description = try reader.readString()
                let before = [UInt8](try reader.readRaw(reader.remaining))
                let error: MP.Error = switch why {
                case .result?: .result(.encodingFailed(type: type, reason: description))
                case .softTimeLimit?: .softTimeLimitReached(seconds: limits?.softTimeLimit ?? 0, type: type, description: description)
                default: .taskFailed(type: type, description: description)
                }
                finish(job, .failed(index: index, error, before: before))
            }
            if let next = worker.inFlight.first, let timeout = next.timeout, worker.ready {
                worker.deadline = Deadline.after(validSeconds: timeout)
            }
        case .skipped:
            let seq = try reader.read(UInt64.self)
            guard let job = worker.inFlight.first, job.seq == seq else {
                throw MP.Error.malformed(type: "pool report", reason: "skip of order \(seq) out of turn")
            }
            worker.inFlight.removeFirst()
            job.worker = nil
            finish(job, .failed(index: 0, .cancelled, before: []))
        case .usage:
            let seq = try reader.read(UInt64.self)
            let usage = Sys.Usage(userNanoseconds: try reader.read(UInt64.self), systemNanoseconds: try reader.read(UInt64.self),
                                  peakResidentBytes: try reader.read(UInt64.self))
            if let job = worker.inFlight.first, job.seq == seq { job.usage = MP.ResourceUsage(usage) }
            worker.peakReported = max(worker.peakReported, Int(usage.peakResidentBytes))
        case .recycling:
            let resident = try reader.read(UInt64.self)
            worker.retiring = true
            recycledWorkers += 1
            worker.ending = "replaced: resident memory \(MP.WorkerLimits.describe(bytes: Int(resident))) over the recycling threshold of \(MP.WorkerLimits.describe(bytes: limits?.recycleAboveResidentMemory ?? 0))"
        case nil:
            throw MP.Error.malformed(type: "pool report", reason: "unknown kind \(kind)")
        }
    }

    /// An initializer failed: no more tasks run (CPython starts new workers
    /// forever there); queued and later ones fail with its error.
    func breakPool(_ error: MP.Error) {
        guard broken == nil else { return }
        broken = error
        refuseSubmissions(error)
        takeInbox()
        for job in queue.removeAll() { finish(job, .failed(index: 0, error, before: [])) }
    }
}
