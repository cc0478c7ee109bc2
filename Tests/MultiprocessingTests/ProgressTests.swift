import Glibc
@testable import Multiprocessing
import MultiprocessingPlatform
import Testing

/// Sleeps a little, so a map lasts long enough to report progress on the way.
struct SlowSquare: MP.NamedTask {
    var x: Int
    func run() -> Int {
        usleep(2_000)
        return x * x
    }
}

/// Throws for 7.
struct SquareButSeven: MP.NamedTask {
    struct Seven: Error {}
    var x: Int
    func run() throws -> Int {
        if x == 7 { throw Seven() }
        return x * x
    }
}

@Suite("Progress of long maps", .serialized)
struct ProgressTests {
    @Test("a task pool's map reports completed of total, rising, ending with every task", arguments: [MP.StartMethod.fork, .forkserver])
    func taskPoolMap(method: MP.StartMethod) async throws {
        let pool = try MP.TaskPool(processes: 2, startMethod: method)
        defer { try? finish(pool) }
        let squares = pool.mapAsync((0..<200).map { SlowSquare(x: $0) }, chunksize: 10)
        let progress = try #require(squares.progress)
        var readings: [MP.Progress.Snapshot] = []
        for await reading in progress.updates { readings.append(reading) }
        #expect(try squares.get(timeout: 60) == (0..<200).map { $0 * $0 })
        let last = try #require(readings.last)
        #expect(last.isFinished && last.completed == 200 && last.total == 200 && last.failed == 0)
        #expect(readings.count >= 3, "updates on the way: \(readings.map(\.completed))")
        #expect(readings.count <= 2 + Int(last.elapsedSeconds * 10) + 1, "at most ten a second")
        #expect(zip(readings, readings.dropFirst()).allSatisfy { $0.completed <= $1.completed })
        #expect(last.rate > 0 && last.estimatedSecondsLeft == 0 && last.fraction == 1)
        // A watcher that comes after the end gets the last reading at once.
        var late: [MP.Progress.Snapshot] = []
        for await reading in progress.updates { late.append(reading) }
        #expect(late.map(\.completed) == [200])
    }

    @Test("a failing map counts its failed tasks and still ends its progress")
    func failure() throws {
        let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
        defer { try? finish(pool) }
        let result = pool.mapAsync((0..<20).map { SquareButSeven(x: $0) }, chunksize: 5)
        #expect(throws: MP.Error.self) { try result.get(timeout: 60) }
        let reading = try #require(result.progress).snapshot
        #expect(reading.isFinished)
        // The chunk of 5 with the 7 in it failed, and counted as it arrived.
        #expect(reading.failed == 5, "\(reading)")
    }

    @Test("imap and the executor's map: the total is known once the input runs out")
    func imap() async throws {
        let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
        defer { try? finish(pool) }
        let results = pool.imap((0..<50).lazy.map { SlowSquare(x: $0) }, chunksize: 5, bufferSize: 2)
        var values: [Int] = []
        for try await value in results { values.append(value) }
        #expect(values == (0..<50).map { $0 * $0 })
        let reading = results.progress.snapshot
        #expect(reading.completed == 50 && reading.total == 50 && reading.isFinished)

        let executor = try MP.ProcessPoolExecutor(maxWorkers: 1)
        defer { executor.shutdown(wait: true) }
        let mapped = executor.map((0..<10).map { SlowSquare(x: $0) })
        var count = 0
        for try await _ in mapped { count += 1 }
        #expect(count == 10 && mapped.progress.snapshot.completed == 10)
    }

    @Test("the closure pool's and the thread pool's maps report progress too")
    func otherPools() throws {
        let pool = try MP.Pool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        let mapped = pool.mapAsync(Swift.Array(0..<1000), chunksize: 100) { $0 + 1 }
        #expect(try mapped.get(timeout: 60).count == 1000)
        #expect(mapped.progress?.snapshot.completed == 1000)
        #expect(mapped.progress?.snapshot.isFinished == true)

        let threads = try MP.ThreadPool(processes: 2)
        defer { threads.terminate(); try? threads.join() }
        let threaded = threads.mapAsync(0..<500, chunksize: 50) { $0 * 2 }
        #expect(try threaded.get(timeout: 60).count == 500)
        #expect(threaded.progress?.snapshot.completed == 500 && threaded.progress?.snapshot.total == 500)
        // A single task has no progress.
        #expect(pool.applyAsync { 1 }.progress == nil)
    }

    @Test("the bar: drawn only on a terminal, redrawn a few times a second, erased at the end")
    func bar() throws {
        // Not a terminal (a pipe): no bar.
        let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
        defer { try? finish(pool) }
        if !Sys.isTerminal(STDERR_FILENO) {
            let result = pool.mapAsync((0..<10).map { SlowSquare(x: $0) })
            #expect(result.progress?.showBar() == false)
            _ = try result.get(timeout: 60)
        }
        // A pseudo-terminal as stderr, in a forked child that maps with a bar.
        // glibc's pseudo-terminal calls, which Swift's Glibc module leaves out (they need _XOPEN_SOURCE).
        typealias OpenPT = @convention(c) (Int32) -> Int32
        typealias PTName = @convention(c) (Int32) -> UnsafeMutablePointer<CChar>?
        func libc<T>(_ name: String, _ type: T.Type) throws -> T { unsafeBitCast(try #require(dlsym(nil, name)), to: type) }
        let master = try libc("posix_openpt", OpenPT.self)(O_RDWR | O_NOCTTY)
        try #require(master >= 0)
        defer { close(master) }
        #expect(try libc("grantpt", OpenPT.self)(master) == 0 && libc("unlockpt", OpenPT.self)(master) == 0)
        let slavePath = String(cString: try #require(try libc("ptsname", PTName.self)(master)))
        let child = MP.Process(name: "bar") {
            let slave = open(slavePath, O_RDWR | O_NOCTTY)
            dup2(slave, STDERR_FILENO)
            let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
            let result = pool.mapAsync((0..<300).map { SlowSquare(x: $0) }, chunksize: 5)
            guard result.progress?.showBar() == true else { throw MP.ExitRequest(3) }
            _ = try result.get(timeout: 60)
            pool.terminate()
            try pool.join()
        }
        try child.start()
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        // Bounded: a child that never ends is killed by joinOrKill below.
        let readUntil = Deadline.after(validSeconds: 60)!
        while !readUntil.hasPassed, child.isAlive || (try? Sys.pollReadable(master, until: .after(validSeconds: 0.2))) == true {
            if (try? Sys.pollReadable(master, until: .after(validSeconds: 0.2))) == true {
                let count = buffer.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                output += buffer[..<count]
            }
        }
        try joinOrKill(child, within: 60)
        #expect(child.exitCode == 0)
        let text = String(decoding: output, as: UTF8.self)
        let redraws = text.components(separatedBy: "\r\u{1B}[K")
        #expect(text.contains("[") && text.contains("%") && text.contains("of 300"), "\(text.suffix(300))")
        #expect(redraws.count >= 3, "\(redraws.count) redraws")
        #expect(text.hasSuffix("\r\u{1B}[K"), "erased at the end")
        #expect(!text.contains("\n"), "one line, redrawn in place")
    }
}

@Suite("Progress of any stream")
struct TrackedProgressTests {
    @Test("the closure pool's imap, counted as it is consumed (tqdm around imap)")
    func closurePoolImap() async throws {
        let pool = try MP.Pool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        let progress = MP.Progress(total: 100)
        var values: [Int] = []
        for try await value in pool.imap(Swift.Array(0..<100), chunksize: 10, { $0 * 2 }).tracked(by: progress) { values.append(value) }
        #expect(values == (0..<100).map { $0 * 2 })
        let reading = progress.snapshot
        #expect(reading.completed == 100 && reading.total == 100 && reading.isFinished && reading.failed == 0)
    }

    @Test("a failing stream counts its failure and ends the progress")
    func failing() async throws {
        struct Bad: Error {}
        let (stream, continuation) = AsyncThrowingStream<Int, any Error>.makeStream()
        continuation.yield(1)
        continuation.finish(throwing: Bad())
        let progress = MP.Progress(total: nil)
        await #expect(throws: Bad.self) { for try await _ in stream.tracked(by: progress) {} }
        #expect(progress.snapshot.completed == 2 && progress.snapshot.failed == 1 && progress.snapshot.isFinished)
    }
}
