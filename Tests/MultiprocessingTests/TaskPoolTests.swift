import Testing
@testable import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif

// Named tasks for the task pool's tests: every worker (spawned, forkserver or
// forked) finds them by name in the test binary.

struct Square: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x }
}

struct Shout: MP.NamedTask {
    var text: String
    func run() -> String { text.uppercased() + "!" }
}

struct Add: MP.NamedTask {
    var a: Int
    var b: Int
    func run() -> Int { a + b }
}

struct WhoRuns: MP.NamedTask {
    func run() -> Int32 { MP.getpid() }
}

/// What a task leaves in a worker's globals is there for the next task on that worker.
nonisolated(unsafe) var tasksRunHere = 0

struct CountHere: MP.NamedTask {
    struct Seen: Codable, Hashable { var pid: Int32; var count: Int }
    func run() -> Seen {
        tasksRunHere += 1
        return Seen(pid: MP.getpid(), count: tasksRunHere)
    }
}

/// The pool's initializer: reports its worker's pid through a queue that crossed into the worker.
struct ReportStart: MP.NamedTask {
    var started: MP.Queue<Int32>
    func run() throws {
        tasksRunHere = 1000
        try started.put(MP.getpid())
    }
}

struct FailingInitializer: MP.NamedTask {
    struct Refused: Error, CustomStringConvertible { var description: String { "no database" } }
    func run() throws { throw Refused() }
}

struct Boom: MP.NamedTask {
    struct Failure: Error, CustomStringConvertible {
        var value: Int
        var description: String { "boom at \(value)" }
    }
    var value: Int
    func run() throws -> Int {
        if value == 13 { throw Failure(value: value) }
        return value
    }
}

struct Nap: MP.NamedTask {
    var seconds: Double
    func run() -> Int32 {
        usleep(UInt32(seconds * 1_000_000))
        return MP.getpid()
    }
}

/// Dies the way it is told to, mid-task.
struct DieMidTask: MP.NamedTask {
    enum How: String, Codable { case sigkill, fatal, exit }
    var how: How
    func run() -> Int {
        switch how {
        case .sigkill: kill(getpid(), SIGKILL)
        case .fatal: fatalError("the task gave up")
        case .exit: exit(3)
        }
        return 0
    }
}

/// A result whose encoding throws.
struct Unsendable: Codable, Sendable {
    struct Refused: Error {}
    init() {}
    init(from decoder: any Decoder) throws { throw Refused() }
    func encode(to encoder: any Encoder) throws { throw Refused() }
}

struct ReturnsUnencodable: MP.NamedTask {
    func run() -> Unsendable { Unsendable() }
}

struct HoldsQueue: MP.NamedTask {
    var queue: MP.Queue<Int>
    func run() {}
}

/// Marks a shared value when it starts, then sleeps.
struct MarkThenNap: MP.NamedTask {
    var started: MP.Event
    var seconds: Double
    func run() throws -> Int {
        try started.set()
        usleep(UInt32(seconds * 1_000_000))
        return 1
    }
}

/// Bounded test helper: terminates and joins a pool, failing the test if it takes too long.
func finish(_ pool: MP.TaskPool, sourceLocation: SourceLocation = #_sourceLocation) throws {
    pool.terminate()
    if try !pool.join(timeout: 20) {
        Issue.record("the pool did not finish within 20 s", sourceLocation: sourceLocation)
        for pid in pool.workerPids { kill(pid, SIGKILL) }
    }
}

@Suite("Task pool", .serialized)
struct TaskPoolTests {
    @Test("apply, applyAsync and map under every start method", arguments: MP.StartMethod.allCases)
    func basics(method: MP.StartMethod) throws {
        let pool = try MP.TaskPool(processes: 2, startMethod: method)
        defer { try? finish(pool) }
        #expect(try pool.apply(Square(x: 7)) == 49)
        #expect(try pool.apply(Shout(text: "hi")) == "HI!")
        let r = pool.applyAsync(Square(x: 9))
        #expect(try r.get(timeout: 20) == 81)
        #expect(r.ready)
        #expect(try r.successful)
        #expect(try pool.map((0..<1000).map { Square(x: $0) }) == (0..<1000).map { $0 * $0 })
        #expect(try pool.map(["a", "b", "c"]) { Shout(text: $0) } == ["A!", "B!", "C!"])
        #expect(try pool.starmap([(1, 2), (3, 4)], Add.init) == [3, 7])
        #expect(try pool.mapAsync([Square(x: 2)]).get(timeout: 20) == [4])
        #expect(try pool.starmapAsync([(5, 5)], Add.init).get(timeout: 20) == [10])
    }

    @Test("the async forms, from the main actor")
    @MainActor
    func asyncForms() async throws {
        try await MP.TaskPool.with(processes: 2) { pool in
            #expect(try await pool.apply(Square(x: 3)) == 9)
            #expect(try await pool.map(0..<5) { Square(x: $0) } == [0, 1, 4, 9, 16])
            #expect(try await pool.starmap([(1, 1)], Add.init) == [2])
            #expect(try await pool.applyAsync(Shout(text: "a")).value == "A!")
            var seen: [Int] = []
            for try await value in pool.imap((0..<20).map { Square(x: $0) }) { seen.append(value) }
            #expect(seen == (0..<20).map { $0 * $0 })
        }
    }
}
