import Glibc
@testable import Multiprocessing
import Testing

@Suite("Locks, semaphores, conditions, events, barriers")
struct SynchronizationTests {
    @Test("four processes increment a shared counter: exactly 400,000 with the lock")
    func mutualExclusion() throws {
        let lock = try MP.Lock()
        let counter = try MP.Value(0)
        let workers = (0..<4).map { _ in
            MP.Process { for _ in 0..<100_000 { try lock.withLock { counter.store(counter.load() + 1) } } }
        }
        for worker in workers { try worker.start() }
        for worker in workers { try joinOrKill(worker) }
        #expect(workers.allSatisfy { $0.exitCode == 0 })
        #expect(counter.load() == 400_000)
    }

    @Test("Lock: timeouts, non-blocking attempts, release errors, self-deadlock detection")
    func lockSemantics() throws {
        let lock = try MP.Lock()
        #expect(try lock.acquire() == .acquired)
        #expect(throws: MP.Error.wouldDeadlock) { try lock.acquire() }
        let holder = TestPipe()
        let report = TestPipe()
        let p = MP.Process {
            // Another process: the lock is taken.
            let nonBlocking = try lock.acquire(blocking: false)
            let timed = try lock.acquire(timeout: 0.05)
            report.write("\(nonBlocking) \(timed)")
            report.closeWrite()
            holder.awaitSignal()
        }
        try p.start()
        #expect(report.readAll() == "timedOut timedOut")
        try lock.release()
        #expect(throws: MP.Error.notOwner("this thread does not hold the lock")) { try lock.release() }
        #expect(throws: MP.Error.negativeTimeout(-1)) { try lock.acquire(timeout: -1) }
        holder.signal()
        try joinOrKill(p)
    }

    @Test("a lock whose holder died is handed over with .acquiredAfterOwnerDied, not a deadlock")
    func ownerDeath() throws {
        let lock = try MP.Lock()
        let rlock = try MP.RLock()
        let p = MP.Process {
            try lock.acquire()
            try rlock.acquire()
            try rlock.acquire()
            try MP.kill(MP.getpid(), .kill) // dies holding both
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == -9)
        #expect(try lock.acquire(timeout: 5) == .acquiredAfterOwnerDied)
        try lock.release()
        #expect(try lock.acquire(timeout: 5) == .acquired)
        try lock.release()
        #expect(try rlock.acquire(timeout: 5) == .acquiredAfterOwnerDied)
        try rlock.release()
        #expect(throws: MP.Error.self) { try rlock.release() }
    }

    @Test("RLock nests for its owner; another process waits")
    func rlockRecursion() throws {
        let rlock = try MP.RLock()
        try rlock.acquire()
        try rlock.acquire()
        let report = TestPipe()
        let p = MP.Process { report.write("\(try rlock.acquire(timeout: 0.05))") }
        try p.start()
        #expect(report.readAll() == "timedOut")
        try joinOrKill(p)
        try rlock.release()
        try rlock.release()
        #expect(throws: MP.Error.self) { try rlock.release() }
        let q = MP.Process { MP.exit(try rlock.acquire(timeout: 5) == .acquired ? 42 : 1) }
        try q.start()
        try joinOrKill(q)
        #expect(q.exitCode == 42)
    }

    @Test("Semaphore counts across processes; BoundedSemaphore refuses over-release")
    func semaphores() throws {
        let semaphore = try MP.Semaphore(value: 2)
        #expect(try semaphore.acquire() == .acquired)
        #expect(try semaphore.acquire() == .acquired)
        #expect(try semaphore.acquire(blocking: false) == .timedOut)
        #expect(try semaphore.acquire(timeout: 0.02) == .timedOut)
        let p = MP.Process { try semaphore.release() }
        try p.start()
        #expect(try semaphore.acquire(timeout: 10) == .acquired)
        try joinOrKill(p)
        try semaphore.release()
        try semaphore.release()
        try semaphore.release() // unbounded: above the initial value is fine, as in Python
        #expect(semaphore.value == 3)
        #expect(throws: MP.Error.invalidArgument("semaphore initial value must be >= 0 (got -1)")) { _ = try MP.Semaphore(value: -1) }

        let bounded = try MP.BoundedSemaphore(value: 1)
        try bounded.acquire()
        try bounded.release()
        #expect(throws: MP.Error.overReleased(limit: 1)) { try bounded.release() }
    }

    @Test("Event: set wakes waiters in other processes; wait times out; clear")
    func event() throws {
        let event = try MP.Event()
        #expect(!event.isSet)
        #expect(try event.wait(timeout: 0.02) == false)
        let waiters = (0..<3).map { _ in MP.Process { MP.exit(try event.wait(timeout: 20) ? 42 : 1) } }
        for waiter in waiters { try waiter.start() }
        try event.set()
        for waiter in waiters { try joinOrKill(waiter) }
        #expect(waiters.allSatisfy { $0.exitCode == 42 })
        #expect(event.isSet)
        try event.clear()
        #expect(!event.isSet)
    }

    @Test("Condition: wait and notify across processes, wait_for, timeout, ownership errors")
    func condition() throws {
        let condition = try MP.Condition()
        let ready = try MP.Value(0)
        let consumer = MP.Process {
            try condition.withLock {
                let ok = try condition.wait(for: { ready.load() == 1 }, timeout: 20)
                MP.exit(ok ? 42 : 1)
            }
        }
        try consumer.start()
        try condition.withLock {
            ready.store(1)
            try condition.notifyAll()
        }
        try joinOrKill(consumer)
        #expect(consumer.exitCode == 42)
        let waited = try condition.withLock { try condition.wait(timeout: 0.02) }
        #expect(waited == false)
        #expect(throws: MP.Error.self) { try condition.notify() }
        #expect(throws: MP.Error.self) { try condition.wait(timeout: 0.01) }

        let plain = try MP.Condition(lock: MP.Lock())
        try plain.withLock { try plain.notify(1) }
        #expect(throws: MP.Error.self) { try plain.notify() }
    }

    @Test("Barrier: every party passes with a distinct index, the action runs once")
    func barrierPasses() throws {
        let runs = try MP.Value(0)
        let barrier = try MP.Barrier(parties: 3, action: { runs.add(1) })
        let parties = (0..<2).map { _ in MP.Process { MP.exit(Int32(try barrier.wait(timeout: 20))) } }
        for party in parties { try party.start() }
        let mine = try barrier.wait(timeout: 20)
        for party in parties { try joinOrKill(party) }
        let indices = Set(parties.map { Int($0.exitCode!) } + [mine])
        #expect(indices == [0, 1, 2])
        #expect(runs.load() == 1)
        #expect(barrier.parties == 3)
        #expect(!barrier.isBroken)
    }

    @Test("Barrier: abort and timeouts break it for everyone; reset mends it")
    func barrierBreaks() throws {
        let barrier = try MP.Barrier(parties: 3)
        let waiter = MP.Process {
            do { try barrier.wait(timeout: 20); MP.exit(1) } catch { MP.exit(isError(error, .brokenBarrier) ? 42 : 2) }
        }
        try waiter.start()
        while barrier.waiting < 1 { sched_yield() }
        try barrier.abort()
        try joinOrKill(waiter)
        #expect(waiter.exitCode == 42)
        #expect(barrier.isBroken)
        #expect(throws: MP.Error.brokenBarrier) { try barrier.wait() }
        try barrier.reset()
        #expect(!barrier.isBroken)
        #expect(throws: MP.Error.brokenBarrier) { try barrier.wait(timeout: 0.05) } // 1 of 3: times out
        #expect(barrier.isBroken)
        #expect(throws: MP.Error.invalidArgument("a barrier needs at least 1 party (got 0)")) { _ = try MP.Barrier(parties: 0) }
    }

    @Test("Barrier: reset while a party waits makes that party throw brokenBarrier")
    func barrierReset() throws {
        let barrier = try MP.Barrier(parties: 2)
        let waiter = MP.Process {
            do { try barrier.wait(timeout: 20); MP.exit(1) } catch { MP.exit(isError(error, .brokenBarrier) ? 42 : 2) }
        }
        try waiter.start()
        while barrier.waiting < 1 { sched_yield() }
        try barrier.reset()
        try joinOrKill(waiter)
        #expect(waiter.exitCode == 42)
        #expect(!barrier.isBroken)
    }
}
