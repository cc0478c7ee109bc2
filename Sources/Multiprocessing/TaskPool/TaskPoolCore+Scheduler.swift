import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The scheduler (lock held): which idle worker takes which queued job,
/// the orders sent for it, and the completions handed out after unlocking.
extension TaskPoolCore {
    /// Gives queued jobs to the workers with room, least loaded first.
    func schedule() {
        while let job = queue.first {
            if job.finished { _ = queue.removeFirst(); continue }
            var chosen: PoolWorkerHandle?
            for worker in workers where !worker.dying && !worker.closedForWriting && !worker.retiring
                && worker.sent < (maxTasksPerChild ?? .max)
                && (job.timeout == nil ? worker.inFlight.count < worker.window : worker.inFlight.isEmpty) {
                if chosen == nil || worker.inFlight.count < chosen!.inFlight.count { chosen = worker }
            }
            guard let worker = chosen else { break }
            guard send(job, to: worker) else { break }
            _ = queue.removeFirst()
        }
        for worker in workers where worker.hasOutbound { _ = worker.flush() }
    }

    /// Writes `job`'s order into the worker's outbound bytes; false when it
    /// must wait (its shared block has to travel first and the socket is busy).
    func send(_ job: PoolJob, to worker: PoolWorkerHandle) -> Bool {
        if case .fixed(let arena, _, _, _) = job.body, !worker.knownBlocks.contains(arena.id) {
            _ = worker.flush()
            var frame = ByteWriter()
            let start = WorkerFrames.begin(&frame, WorkerFrames.OrderKind.block.rawValue)
            frame.write(arena.id)
            frame.write(UInt64(arena.block.size))
            WorkerFrames.finish(&frame, at: start)
            guard worker.sendNow(frame.bytes, descriptors: [arena.block.descriptor]) else { return false }
            worker.knownBlocks.insert(arena.id)
        }
        var writer = ByteWriter()
        writer.bytes = worker.outbound
        if !worker.knownTypes.contains(job.type) {
            let start = WorkerFrames.begin(&writer, WorkerFrames.OrderKind.define.rawValue)
            writer.write(job.type)
            writer.bytes += Swift.Array(typeNames[Int(job.type)].utf8)
            WorkerFrames.finish(&writer, at: start)
            worker.knownTypes.insert(job.type)
        }
        if let trace = job.trace {
            let start = WorkerFrames.begin(&writer, WorkerFrames.OrderKind.context.rawValue)
            writer.writeRaw(trace.encoded)
            WorkerFrames.finish(&writer, at: start)
        }
        let seq = worker.nextSeq
        worker.nextSeq += 1
        // Every order starts `[kind][u64 seq][u32 type]`.
        func order(_ kind: WorkerFrames.OrderKind, _ rest: (inout ByteWriter) -> Void) {
            let start = WorkerFrames.begin(&writer, kind.rawValue)
            writer.write(seq)
            writer.write(job.type)
            rest(&writer)
            WorkerFrames.finish(&writer, at: start)
        }
        switch job.body {
        case .task(let arguments):
            order(.task) { $0.writeRaw(arguments) }
        case .rawTask(let bytes):
            order(.rawTask) { $0.writeRaw(bytes) }
        case .chunk(let count, let items):
            order(.chunk) { writer in
                writer.write(UInt32(count))
                writer.writeRaw(items)
            }
        case .fixed(let arena, let tasks, let results, let count):
            order(.fixedChunk) { writer in
                writer.write(arena.id)
                writer.write(UInt64(tasks))
                writer.write(UInt64(results))
                writer.write(UInt32(count))
            }
        }
        worker.outbound = writer.bytes
        job.worker = worker
        job.seq = seq
        worker.inFlight.append(job)
        worker.sent += 1
        metrics.queueWait.recordNanoseconds(Deadline.now - job.created)
        if let timeout = job.timeout, worker.ready { worker.deadline = Deadline.after(validSeconds: timeout) }
        return true
    }

    /// Settles `job` once (the completion runs after the lock is released).
    func finish(_ job: PoolJob, _ outcome: PoolJob.Outcome) {
        guard !job.finished else { return }
        job.finished = true
        switch outcome {
        case .done: metrics.ended(job.items, failure: nil)
        case .failed(_, let error, _): metrics.ended(job.items, failure: error)
        }
        completions.append((job, outcome))
    }

    func unlockAndComplete() {
        let ready = completions
        completions = []
        let idle = workers.reduce(0) { $0 + ($1.inFlight.isEmpty && !$1.dying ? 1 : 0) }
        idleWorkers.store(idle, ordering: .relaxed)
        let busy = workers.count - idle
        lock.unlock()
        metrics.busy.record(busy)
        for (job, outcome) in ready { job.complete(outcome) }
    }

    func requestWake() {
        if !wakeSignalled {
            wakeSignalled = true
            Sys.poke(wakeWrite)
        }
    }

    func wake() { Sys.poke(wakeWrite) }
}
