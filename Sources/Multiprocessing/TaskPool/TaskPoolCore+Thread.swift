import Glibc
import Synchronization
import _CMultiprocessingSync
import MultiprocessingPlatform

/// The pool's thread: one poll over the wake-up pipe and every worker's
/// channel and pidfd, with the earliest task deadline as its timeout.
extension TaskPoolCore {
    func serve() {
        while true {
            lock.lock()
            wakeSignalled = false
            takeInbox()
            if state == .terminated {
                takeInbox() // submissions are refused by now: nothing arrives after this
                terminateWorkers()
                unlockAndComplete()
                return
            }
            startDeferred()
            schedule()
            // Submissions are refused before the state changes: an empty
            // inbox now stays empty.
            let everythingDone = queue.isEmpty && dyingWorkers.isEmpty && workers.allSatisfy { $0.inFlight.isEmpty }
                && inboxLock.withLock { inbox.isEmpty }
            if state == .closed || broken != nil, everythingDone {
                for worker in workers where !worker.closedForWriting && !worker.hasOutbound {
                    worker.closedForWriting = true
                    Sys.shutdownWrite(worker.fd)
                }
                if state == .closed && workers.isEmpty && dyingWorkers.isEmpty {
                    unlockAndComplete()
                    return
                }
            }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let watched = workers + dyingWorkers
            for worker in watched {
                let events = Int16(POLLIN) | (worker.hasOutbound ? Int16(POLLOUT) : 0)
                fds.append(pollfd(fd: worker.fd, events: events, revents: 0))
                fds.append(pollfd(fd: worker.pidfd, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: worker.stderr.fd, events: Int16(POLLIN), revents: 0))
            }
            let deadline = (workers.compactMap(\.deadline) + [restartAt].compactMap { $0 }).min()
            unlockAndComplete()
            if (try? Sys.poll(&fds, until: deadline)) == nil { continue }
            lock.lock()
            if fds[0].revents != 0 { Sys.drain(wakeRead) }
            for (position, worker) in watched.enumerated() {
                let channel = fds[1 + 3 * position].revents
                let exited = fds[2 + 3 * position].revents != 0
                if fds[3 + 3 * position].revents != 0 || exited { worker.stderr.pump() }
                if channel & Int16(POLLOUT) != 0 { _ = worker.flush() }
                if channel & ~Int16(POLLOUT) != 0 || exited { readReports(worker) }
                if exited { retire(worker) }
            }
            for worker in workers {
                if let deadline = worker.deadline, deadline.hasPassed, let job = worker.inFlight.first, let timeout = job.timeout {
                    worker.deadline = nil
                    finish(job, .failed(index: 0, .taskTimeout(seconds: timeout), before: []))
                    worker.ending = "killed: its task ran past the time limit of \(timeout) s"
                    kill(worker)
                }
            }
            unlockAndComplete()
        }
    }
}
