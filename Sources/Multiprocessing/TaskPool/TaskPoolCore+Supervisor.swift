import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The worker supervisor: starting a worker (greeted with its control block
/// and stderr pipe), killing, retiring and replacing it, the backoff after
/// workers killed from outside, and how a worker's death is said.
extension TaskPoolCore {
    var workerPrefix: String {
        switch method {
        case .fork: "ForkPoolWorker"
        case .spawn: "SpawnPoolWorker"
        case .forkserver: "ForkServerPoolWorker"
        }
    }

    /// A new worker, greeted (its control block and stderr pipe sent). Called with the lock held.
    func startWorker() throws(MP.Error) -> PoolWorkerHandle {
        do {
            let (parentEnd, childEnd) = try MP.Pipe(duplex: true)
            let control = try SharedBlock(bytes: WorkerControl.bytes)
            let (errorsRead, errorsWrite) = try Sys.pipe()
            defer { Sys.close(errorsWrite) }
            let stderr = WorkerStderr(fd: errorsRead)
            started += 1
            let loop = PoolWorkerLoop(channel: childEnd, initializer: initializer, maxTasks: maxTasksPerChild, rules: rules)
            let name = "\(workerPrefix)-\(started)"
            let process: MP.Process
            if let limits {
                do {
                    process = try MP.Process(name: name, daemon: true, target: loop, startMethod: method, limits: limits, pool: true)
                } catch {
                    parentEnd.close()
                    childEnd.close()
                    throw error
                }
            } else {
                process = MP.getContext(method).Process(name: name, daemon: true, target: loop)
            }
            do {
                try process.start()
            } catch {
                parentEnd.close()
                childEnd.close()
                throw MP.Error.cannotStartWorker(error.description)
            }
            childEnd.close()
            metrics.workersStarted.increment()
            try Sys.setNonBlocking(parentEnd.fileno)
            let worker = try PoolWorkerHandle(process: process, channel: parentEnd, control: control, stderr: stderr)
            var hello = ByteWriter()
            let start = WorkerFrames.begin(&hello, WorkerFrames.OrderKind.hello.rawValue)
            hello.write(UInt64(control.size))
            WorkerFrames.finish(&hello, at: start)
            if !worker.sendNow(hello.bytes, descriptors: [control.descriptor, errorsWrite]) {
                try? process.kill()
                try? process.join()
                throw MP.Error.cannotStartWorker("the new worker \(process.name) did not take its first message")
            }
            return worker
        } catch {
            if let error = error as? MP.Error, error.code == .startFailed || error.code == .unsupported { throw error }
            throw .cannotStartWorker("\(error)")
        }
    }

    /// Kills a worker and starts its replacement at once (while it dies).
    func kill(_ worker: PoolWorkerHandle) {
        guard !worker.dying else { return }
        worker.dying = true
        try? worker.process.kill()
        guard let index = workers.firstIndex(where: { $0 === worker }) else { return }
        workers.remove(at: index)
        dyingWorkers.append(worker)
        if state != .terminated, broken == nil {
            replace("\(worker.process.name) (pid \(worker.pid)) killed (a timeout or a cancellation)")
        }
    }

    /// A worker exited: its reports are read; the order it was running fails
    /// (unless the pool killed it for that order, which then already failed);
    /// the orders it had not started go back to the front of the queue; a
    /// replacement starts while there is work for it.
    func retire(_ worker: PoolWorkerHandle) {
        readReports(worker)
        worker.stderr.pump()
        try? worker.process.join()
        let how = worker.dying ? "\(worker.process.name) (pid \(worker.pid)) was stopped" : WorkerDeath.describe(of: worker.process)
        let verdict = limitVerdict(worker)
        recordPast(worker, ending: worker.ending ?? verdict?.message ?? how)
        let wasServing = workers.contains { $0 === worker }
        workers.removeAll { $0 === worker }
        dyingWorkers.removeAll { $0 === worker }
        let running = worker.running
        // A worker its own limit ended (its cgroup's OOM killer sends SIGKILL
        // too) was not lost from outside: replacing it would only repeat it.
        let lostFromOutside = !worker.ready && !worker.dying && verdict == nil && Self.killedFromOutside(worker.process)
        if worker.ready || worker.dying {
            failedStarts = 0
            outsideLosses = 0
        } else if lostFromOutside {
            // Killed by another process before it was ready: not the
            // program's fault; replaced after a backoff (below).
            outsideLosses += 1
        } else if running != WorkerControl.initializing {
            // Dying before it could take an order (its program fails at
            // start): a few in a row and the pool stops trying.
            failedStarts += 1
            if failedStarts >= 3 {
                breakPool(.cannotStartWorker("\(failedStarts) workers in a row exited before taking a task; the last: \(WorkerDeath.describe(of: worker.process))"))
            }
        }
        var unstarted: [PoolJob] = []
        for job in worker.inFlight {
            job.worker = nil
            if job.finished { continue }
            if running == Int64(bitPattern: job.seq) {
                var how = WorkerDeath.describe(of: worker.process)
                if let fatal = worker.stderr.fatalLine { how += " (\(fatal))" }
                finish(job, .failed(index: 0, verdict ?? .workerDied(how), before: []))
            } else {
                unstarted.append(job)
            }
        }
        worker.inFlight = []
        if running == WorkerControl.initializing && broken == nil && !lostFromOutside {
            var how = verdict?.message ?? WorkerDeath.describe(of: worker.process)
            if verdict == nil, let fatal = worker.stderr.fatalLine { how += " (\(fatal))" }
            breakPool(.initializerFailed(type: verdict == nil ? "workerDied" : "MP.Error", description: "the worker died in the initializer: \(how)"))
        }
        if broken != nil {
            for job in unstarted { finish(job, .failed(index: 0, broken!, before: [])) }
        } else {
            queue.prepend(unstarted)
        }
        worker.channel.close()
        try? worker.process.close()
        guard state != .terminated, broken == nil, wasServing else {
            LibraryLog.log(.info, "pool worker \(how)")
            return
        }
        if state == .running || !queue.isEmpty {
            if outsideLosses > 1 {
                LibraryLog.log(.info, "pool worker \(how) before it was ready (\(outsideLosses) in a row); replaced after a backoff")
                deferStart()
            } else {
                replace(how)
            }
        }
    }

    /// The limit that ended a worker, if one did: the process's own verdict
    /// (its cgroup's OOM kill, `SIGXCPU`), or, under `RLIMIT_DATA`, the
    /// allocation failure its stderr told of.
    func limitVerdict(_ worker: PoolWorkerHandle) -> MP.Error? {
        guard let session = worker.process.limitSession else { return nil }
        if let verdict = worker.process.limitExceeded { return verdict }
        var signal: Int32?
        if case .signaled(let number, _)? = worker.process.exitStatus { signal = number.rawValue }
        return session.verdict(signal: signal, fatalLine: worker.stderr.fatalLine, usage: worker.process.resourceUsage,
                               who: "\(worker.process.name) (pid \(worker.pid))")
    }

    /// Keeps what an exited worker used (``MP/TaskPool/workerUsage``).
    func recordPast(_ worker: PoolWorkerHandle, ending: String) {
        var usage = worker.process.resourceUsage ?? MP.ResourceUsage(userSeconds: 0, systemSeconds: 0, peakResidentBytes: 0)
        usage.peakResidentBytes = max(usage.peakResidentBytes, worker.peakReported)
        pastWorkers.append(MP.WorkerUsage(name: worker.process.name, pid: worker.pid, tasks: worker.ordersDone, usage: usage,
                                          isAlive: false, ending: ending))
        if pastWorkers.count > Self.pastWorkerLimit { pastWorkers.removeFirst(pastWorkers.count - Self.pastWorkerLimit) }
    }

    /// Starts one replacement now; a start that fails is retried after a backoff.
    func replace(_ how: String) {
        do {
            let replacement = try startWorker()
            workers.append(replacement)
            metrics.workersReplaced.increment()
            LibraryLog.log(.info, "pool worker \(how); replaced by \(replacement.process.name) (pid \(replacement.pid))")
        } catch {
            // No replacement (a process limit, no memory, a start method's
            // helper killed): retried with a backoff; with no worker left
            // after several tries, the queued tasks fail with the reason.
            outsideLosses += 1
            if workers.isEmpty && outsideLosses > 5 {
                for job in queue.removeAll() { finish(job, .failed(index: 0, error, before: [])) }
            }
            deferStart()
        }
    }

    /// One more replacement, after the backoff of `outsideLosses`: 10 ms,
    /// doubling, at most ``maxRestartBackoff``.
    func deferStart() {
        pendingStarts += 1
        let backoff = min(Self.maxRestartBackoff, 0.005 * Double(1 << min(outsideLosses, 16)))
        let at = Deadline.after(validSeconds: backoff)!
        if restartAt.map({ at < $0 }) ?? true { restartAt = at }
    }

    /// Starts the replacements whose backoff has passed (lock held).
    func startDeferred() {
        guard let at = restartAt, at.hasPassed else { return }
        restartAt = nil
        let count = pendingStarts
        pendingStarts = 0
        guard state != .terminated, broken == nil, state == .running || !queue.isEmpty else { return }
        for _ in 0..<count where workers.count < processes { replace("lost before it was ready") }
    }

    /// Whether a worker was ended by a signal from outside (another
    /// process's SIGKILL or SIGTERM, the kernel's OOM killer) rather than by
    /// its own hand (an exit, or a crash: SIGSEGV, SIGABRT, SIGILL, ...).
    static func killedFromOutside(_ process: MP.Process) -> Bool {
        guard case .signaled(let signal, _)? = process.exitStatus else { return false }
        return ![SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGPIPE, SIGXCPU, SIGXFSZ].contains(signal.rawValue)
    }

    func terminateWorkers() {
        workers += dyingWorkers
        dyingWorkers = []
        LibraryLog.log(.info, "task pool terminated: \(workers.count) worker(s) killed")
        for worker in workers { try? worker.process.kill() }
        for worker in workers {
            try? worker.process.join()
            recordPast(worker, ending: worker.ending ?? "terminated with the pool")
            for job in worker.inFlight { finish(job, .failed(index: 0, .terminated, before: [])) }
            worker.channel.close()
            try? worker.process.close()
        }
        workers = []
        for job in queue.removeAll() { finish(job, .failed(index: 0, .terminated, before: [])) }
    }

}
