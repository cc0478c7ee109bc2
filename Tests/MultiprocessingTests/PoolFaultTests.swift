import Glibc
@testable import Multiprocessing
import Testing
import MultiprocessingPlatform

/// What a main-actor caller writes (`@main struct App { static func main() async throws }`):
/// it must compile in Swift 6 mode and work.
@MainActor
private func mainActorCaller(_ pool: MP.Pool) async throws -> ([Int], Int, [Int]) {
    final class NotSendable { var offset = 1 }
    let captured = NotSendable()
    let squares = try await pool.map(0..<20) { $0 * $0 + captured.offset - 1 }
    let answer = try await pool.apply { 6 * 7 }
    var streamed: [Int] = []
    for try await r in pool.imap(0..<5, { $0 + 1 }) { streamed.append(r) }
    try await pool.apply { print("", terminator: "") }     // returns nothing
    try await pool.map(0..<3) { _ in }                      // returns nothing
    return (squares, answer, streamed)
}

@Suite("Pool faults: nothing lost, nothing hangs, every failure named")
struct PoolFaultTests {
    @Test("the pool is usable from the main actor, with async forms and tasks that return nothing")
    func mainActorAndVoid() async throws {
        let (squares, answer, streamed) = try await MP.Pool.with(processes: 2) { pool in try await mainActorCaller(pool) }
        #expect(squares == (0..<20).map { $0 * $0 })
        #expect(answer == 42)
        #expect(streamed == [1, 2, 3, 4, 5])
        try MP.Pool.with(processes: 2) { pool in
            let counter = try MP.Value(0)
            try pool.apply { _ = counter.add(1) }
            pool.applyAsync { _ = counter.add(10) }.wait()
            try pool.map(0..<5) { _ in _ = counter.add(100) }
            #expect(counter.load() == 511)
        }
    }

    @Test("a worker killed at the start of its task: that task fails, the next one runs, close + join return")
    func killedRightAfterClaim() throws {
        // The worker claims task 0 and dies as it starts it; the record in its
        // slot must tell the parent which task died with it. (Deaths inside
        // the claim itself are the next test's.)
        let pool = try MP.Pool(processes: 1)
        let lost = pool.applyAsync { () -> Int in kill(getpid(), SIGKILL); return 0 }
        let after = pool.applyAsync { 5 }
        #expect(performing: { _ = try lost.get(timeout: 20) }, throws: diedOf("was killed by SIGKILL"))
        #expect(try after.get(timeout: 20) == 5)
        pool.close()
        try pool.join()
    }

    @Test("a worker killed inside a claim, before or after recording it, holding the claims' lock: nothing lost, no hang")
    func killedInsideClaim() throws {
        defer { Generation.claimHook = nil }
        for afterRecording in [false, true] {
            // Inherited by the workers forked from now on; one worker dies.
            let once = try MP.Value(Int32(0))
            Generation.claimHook = { task, recorded in
                if task == 2 && recorded == afterRecording && MP.currentProcess().name.hasPrefix("PoolWorker"),
                   once.compareExchange(expected: 0, desired: 1).exchanged {
                    kill(getpid(), SIGKILL)
                }
            }
            let pool = try MP.Pool(processes: 2)
            // One batch: task indices are the chunks' (0..<6).
            let mapped = pool.mapAsync(0..<6, chunksize: 1) { $0 * 10 }
            if afterRecording {
                // The dead worker had claimed task 2: it fails with it.
                #expect(performing: { _ = try mapped.get(timeout: 20) }, throws: diedOf("was killed by SIGKILL"))
            } else {
                // Killed before its claim took effect: the task was never
                // claimed, and another worker runs it.
                #expect(try mapped.get(timeout: 20) == [0, 10, 20, 30, 40, 50])
            }
            #expect(once.load() == 1, "the hook killed a worker")
            pool.close()
            try pool.join()
        }
    }

    @Test("many random kills mid-batch: every task settles, close + join never hang")
    func randomKills() throws {
        let pool = try MP.Pool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        let results = (0..<300).map { i in
            pool.applyAsync { () -> Int in
                if i % 7 == 3 { kill(getpid(), SIGKILL) }
                return i
            }
        }
        for (i, result) in results.enumerated() {
            if i % 7 == 3 {
                #expect(throws: MP.Error.self) { _ = try result.get(timeout: 30) }
            } else {
                #expect(try result.get(timeout: 30) == i)
            }
        }
        pool.close()
        let joined = pool.applyAsync { 0 } // refused: closed
        #expect(throws: MP.Error.poolClosed) { _ = try joined.get(timeout: 5) }
    }

    @Test("a pool that cannot start workers fails its tasks with a clear error (a pool inside a daemon)")
    func cannotFork() throws {
        let report = TestPipe()
        let daemon = MP.Process(daemon: true) {
            let pool = try MP.Pool(processes: 2)
            let result = pool.applyAsync { 1 }
            do {
                _ = try result.get(timeout: 10)
                report.write("ran")
            } catch let error as MP.Error {
                if error.code == .startFailed, error.message.contains("daemonic") { report.write("refused") } else { report.write("\(error)") }
            }
            pool.terminate()
        }
        try daemon.start()
        let text = report.readAll(within: 20)
        try joinOrKill(daemon)
        #expect(text == "refused")
    }

    @Test("an initializer that crashes fails the tasks instead of respawning workers forever")
    func crashingInitializer() throws {
        for how in ["exit", "signal"] {
            let pool = try MP.Pool(processes: 2, initializer: { if how == "exit" { exit(7) } else { kill(getpid(), SIGKILL) } })
            defer { pool.terminate(); try? pool.join() }
            let result = pool.applyAsync { 1 }
            #expect(performing: { _ = try result.get(timeout: 20) }, throws: { error in
                guard let error = error as? MP.Error, error.message.hasPrefix("the pool initializer failed") else { return false }
                return error.errorType == "workerDied" && error.message.contains(how == "exit" ? "exited with 7" : "SIGKILL")
            })
        }
    }

    @Test("a result over the message limit fails that task with the reason; the worker survives")
    func oversizeResult() throws {
        try MP.Pool.with(processes: 1) { (pool: MP.Pool) throws -> Void in
            let big = pool.applyAsync { [UInt8](repeating: 1, count: MP.Connection.defaultMaxMessageSize + 1) }
            #expect(performing: { _ = try big.get(timeout: 30) }, throws: { error in
                isError(error, .encoding, containing: "the result could not be sent back", "over the pool's message limit")
            })
            #expect(try pool.apply { 3 } == 3)
        }
    }

    @Test("imap yields every result before a failed chunk, then throws")
    func imapPrefix() async throws {
        let pool = try MP.Pool(processes: 2)
        let gate = try MP.Event()
        var received: [Int] = []
        do {
            // Task 0 finishes after task 1 has killed its worker.
            for try await value in pool.imap(0..<4, { (i: Int) -> Int in
                if i == 0 { _ = try gate.wait(timeout: 20) }
                if i == 1 { try gate.set(); kill(getpid(), SIGKILL) }
                return i
            }) { received.append(value) }
            Issue.record("imap finished although a worker died")
        } catch {
            let matched = diedOf("was killed by SIGKILL")(error)
            #expect(matched, "\(error)")
        }
        #expect(received == [0])
        pool.terminate()
        try await pool.join()
    }

    @Test("a dropped pool is closed: its thread and descriptors go away once its tasks finish")
    func droppedPool() throws {
        func threads() -> Int { (try? String(contentsOfProcFile: "/proc/self/status"))?.split(separator: "\n")
            .first { $0.hasPrefix("Threads:") }.flatMap { Int($0.dropFirst(8).trimmingCharacters()) } ?? -1 }
        _ = try MP.Pool(processes: 1).apply { 1 } // warm up whatever is started once
        let fds = openDescriptorCount()
        let before = threads()
        var result: MP.AsyncResult<Int>?
        do {
            let pool = try MP.Pool(processes: 2)
            result = pool.applyAsync { 21 * 2 }
        }
        #expect(try result!.get(timeout: 20) == 42, "a dropped pool still finishes what was submitted")
        let deadline = Deadline.after(validSeconds: 20)!
        while (threads() > before || openDescriptorCount() > fds) && !deadline.hasPassed { usleep(1000) }
        #expect(threads() <= before)
        #expect(openDescriptorCount() <= fds)
    }
}

extension String {
    init(contentsOfProcFile path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TestFailure("cannot open \(path)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        self = String(decoding: bytes, as: UTF8.self)
    }

    func trimmingCharacters() -> String { String(self.drop { $0 == " " || $0 == "\t" }) }
}

private extension Substring {
    func trimmingCharacters() -> String { String(self.drop { $0 == " " || $0 == "\t" }) }
}
