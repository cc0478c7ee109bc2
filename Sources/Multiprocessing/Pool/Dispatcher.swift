import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The pool's thread and the state it shares with the ``MP/Pool`` handle:
/// submitted tasks, the pool's state, the wake-up pipe. The thread holds
/// this object, not the handle, so a pool the program drops is closed
/// (its workers finish what was submitted, then its thread and
/// descriptors go away) instead of living until the program exits.
final class PoolDispatcher: @unchecked Sendable {
    let processes: Int
    let initializer: (() throws -> Void)?
    let maxTasksPerChild: Int?
    let lock = ForkSafeLock()
    private var pending: [TaskRecord] = []
    /// Whether the thread has been woken for `pending` and has not yet
    /// taken it: later submissions join the batch without a syscall.
    private var wakeSignalled = false
    private(set) var state = State.running
    private let wakeRead: Int32
    private let wakeWrite: Int32
    let finished = OneShotEvent()

    enum State { case running, closed, terminated }

    init(processes: Int, initializer: (() throws -> Void)?, maxTasksPerChild: Int?) throws(MP.OSError) {
        self.processes = processes
        self.initializer = initializer
        self.maxTasksPerChild = maxTasksPerChild
        (wakeRead, wakeWrite) = try Sys.pipe()
        TaskOutcome.warmUp
    }

    func start() throws(MP.OSError) {
        try startThread { [self] in dispatch() }.get()
    }

    deinit {
        Sys.close(wakeRead)
        Sys.close(wakeWrite)
    }

    func submit(_ records: [TaskRecord]) throws(MP.Error) {
        let needsWake = try lock.withLock { () throws(MP.Error) -> Bool in
            switch state {
            case .running: pending += records
            case .closed: throw .poolClosed
            case .terminated: throw .terminated
            }
            defer { wakeSignalled = true }
            return !wakeSignalled
        }
        if needsWake { wake() }
    }

    func close() {
        lock.withLock { if state == .running { state = .closed } }
        wake()
    }

    func terminate() {
        lock.withLock { state = .terminated }
        wake()
    }

    private func wake() { Sys.poke(wakeWrite) }

    /// The pool's thread: forks workers for each batch (batches overlap,
    /// sharing the `processes` worker slots, oldest first), collects
    /// results, and replaces workers that exit before their batch is done.
    private func dispatch() {
        var generations: [Generation] = []
        var draining: [PoolWorker] = []
        while true {
            // A new batch forms only when a worker slot is free: while every
            // worker is busy, submissions gather into one batch (a few forks
            // for thousands of tiny tasks, not a few each).
            let busy = generations.reduce(0) { $0 + $1.workers.count }
            let (state, batch) = lock.withLock { () -> (State, [TaskRecord]) in
                if self.state == .terminated || busy < processes {
                    defer { pending = []; wakeSignalled = false }
                    return (self.state, pending)
                }
                return (self.state, [])
            }
            if state == .terminated {
                let everyone = generations.flatMap(\.workers) + draining
                LibraryLog.log(.info, "pool terminated: \(everyone.count) worker(s) killed")
                for worker in everyone { try? worker.process.kill() }
                for worker in everyone { reap(worker) }
                for generation in generations {
                    for index in generation.tasks.indices { generation.settle(index, .failure(.terminated)) }
                }
                for var record in batch { record.complete(.failure(.terminated)) }
                finished.set()
                return
            }
            if !batch.isEmpty {
                do {
                    generations.append(try Generation(tasks: batch, slots: processes))
                } catch {
                    let failure: MP.Error = error.code == .system ? error : .invalidArgument(error.description)
                    for var record in batch { record.complete(.failure(failure)) }
                }
            }
            topUp(generations)
            if generations.isEmpty && state == .closed && lock.withLock({ pending.isEmpty }) {
                for worker in draining { reap(worker) }
                finished.set()
                return
            }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let watched = generations.flatMap { generation in generation.workers.map { ($0, Optional(generation)) } }
                + draining.map { ($0, Generation?.none) }
            for (worker, _) in watched {
                fds.append(pollfd(fd: worker.results.fileno, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: worker.pidfd, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: worker.stderr.fd, events: Int16(POLLIN), revents: 0))
            }
            if (try? Sys.poll(&fds, until: nil)) == nil { continue }
            if fds[0].revents != 0 { Sys.drain(wakeRead) }
            for (position, (worker, generation)) in watched.enumerated() {
                let resultReady = fds[1 + 3 * position].revents != 0
                let exited = fds[2 + 3 * position].revents != 0
                if fds[3 + 3 * position].revents != 0 || exited { worker.stderr.pump() }
                if resultReady || exited { drain(worker, into: generation) }
                if exited {
                    reap(worker)
                    if let generation {
                        retire(worker, from: generation)
                    } else {
                        draining.removeAll { $0.pidfd == worker.pidfd }
                    }
                }
            }
            for generation in generations where generation.finished {
                draining += generation.workers
                generation.workers = []
            }
            generations.removeAll { $0.finished }
        }
    }

    /// Forks workers for the batches, oldest first, up to `processes` in all.
    private func topUp(_ generations: [Generation]) {
        var total = generations.reduce(0) { $0 + $1.workers.count }
        for generation in generations {
            if let failure = generation.initializerFailure {
                for index in generation.tasks.indices { generation.settle(index, .failure(failure)) }
                continue
            }
            while total < processes, generation.workers.count < generation.tasks.count, !generation.exhausted {
                let used = Set(generation.workers.map(\.slot))
                guard let slot = (0..<processes).first(where: { !used.contains($0) }) else { break }
                let worker: PoolWorker
                do {
                    worker = try fork(slot: slot, for: generation)
                } catch {
                    // No worker can be started (a daemonic process, a process
                    // limit, no memory): CPython raises; hanging would be worse.
                    // The batch's running workers finish what they claimed.
                    generation.failUnclaimed(.cannotStartWorker("\(error)"))
                    break
                }
                generation.workers.append(worker)
                total += 1
            }
        }
    }

    private func fork(slot: Int, for generation: Generation) throws -> PoolWorker {
        let (parentEnd, childEnd) = try MP.Pipe(duplex: false)
        let (errorsRead, errorsWrite) = try Sys.pipe()
        let errors = WorkerStderr(fd: errorsRead)
        defer { Sys.close(errorsWrite) }
        let initializer = self.initializer
        let limit = maxTasksPerChild ?? Int.max
        let wakeRead = self.wakeRead, wakeWrite = self.wakeWrite
        let process = MP.Process(name: "PoolWorker-\(slot + 1)", daemon: true) {
            parentEnd.close()
            Sys.close(wakeRead)
            Sys.close(wakeWrite)
            Sys.close(errorsRead)
            try Sys.dup2(errorsWrite, STDERR_FILENO)
            Sys.close(errorsWrite)
            if let initializer {
                // A worker that dies before clearing this mark crashed in the initializer.
                cmp_atomic_store_i64(generation.slot(slot), Generation.initializing)
                do { try initializer() } catch {
                    try childEnd.sendBytes(TaskOutcome.failure(.initializer, "\(type(of: error))", "\(error)").frame(index: -1))
                    return
                }
                cmp_atomic_store_i64(generation.slot(slot), Generation.idle)
            }
            var done = 0
            var lastReport = Deadline.now
            var unreported = false
            while done < limit, let index = generation.claim(slot: slot) {
                let record = generation.tasks[index]
                let outcome = record.execute()
                if record.quiet, case .success = outcome {
                    generation.markDone(index)
                    let now = Deadline.now
                    unreported = now - lastReport < Generation.reportIntervalNanoseconds
                    if !unreported {
                        try childEnd.sendBytes(TaskOutcome.success([]).frame(index: Generation.progressIndex))
                        lastReport = now
                    }
                } else {
                    try PoolDispatcher.send(outcome, index: index, on: childEnd)
                }
                cmp_atomic_store_i64(generation.slot(slot), Generation.idle)
                done += 1
            }
            if unreported { try childEnd.sendBytes(TaskOutcome.success([]).frame(index: Generation.progressIndex)) }
        }
        try process.start(forkOnCurrentThread: true) // this thread outlives its workers
        childEnd.close()
        return PoolWorker(process: process, results: parentEnd, pidfd: try process.sentinel, slot: slot, stderr: errors)
    }

    /// In a worker: sends a task's outcome. One the connection refuses (a
    /// result over its message limit) fails that task with the reason,
    /// instead of killing the worker with it.
    private static func send(_ outcome: TaskOutcome, index: Int, on connection: MP.Connection) throws {
        do throws(MP.Error) {
            try connection.sendBytes(outcome.frame(index: index))
        } catch {
            guard error.code == .tooLarge else { throw error }
            let reason = "the encoded result is over the pool's message limit: \(error.message)"
            try connection.sendBytes(TaskOutcome.failure(.result, "result", reason).frame(index: index))
        }
    }

    /// Reads every result the worker has sent.
    private func drain(_ worker: PoolWorker, into generation: Generation?) {
        defer { generation?.settleCompleted() }
        while (try? worker.results.poll(timeout: 0)) == true {
            guard let frame = try? worker.results.recvBytes(), let (index, outcome) = TaskOutcome.parse(frame) else { return }
            guard let generation, index != Generation.progressIndex else { continue }
            if index < 0 {
                generation.initializerFailure = outcome.poolError
                continue
            }
            if let error = outcome.poolError {
                generation.settle(index, .failure(error))
            } else if case .success(let bytes) = outcome {
                generation.settle(index, .success(bytes))
            }
        }
    }

    private func reap(_ worker: PoolWorker) {
        try? worker.process.join()
        worker.results.close()
    }

    /// A worker of a running batch exited: fail the task it was running
    /// (if it died mid-task); a replacement is forked by the next `topUp`.
    /// A worker that died in the initializer fails the batch, as a throwing
    /// initializer does (CPython starts new workers forever there).
    private func retire(_ worker: PoolWorker, from generation: Generation) {
        generation.workers.removeAll { $0.pidfd == worker.pidfd }
        let held = generation.vacate(slot: worker.slot)
        guard held >= 0 || held == Generation.initializing else { return }
        worker.stderr.pump()
        var how = WorkerDeath.describe(of: worker.process)
        if let fatal = worker.stderr.fatalLine { how += " (\(fatal))" }
        if held == Generation.initializing {
            if generation.initializerFailure == nil {
                generation.initializerFailure = .initializerFailed(type: "workerDied", description: "the worker died in the initializer: \(how)")
            }
        } else {
            generation.settle(Int(held), .failure(.workerDied(how)))
        }
        LibraryLog.log(.info, "pool worker \(how) mid-task; a replacement finishes its batch")
    }
}
