import Testing
import Logging
@testable import Multiprocessing
import Glibc
import MultiprocessingPlatform

/// A swift-log backend that keeps the messages, holding a lock while it does
/// (a lock a fork can copy held).
final class Collected: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var lines: [String] = []
    init() { pthread_mutex_init(&mutex, nil) }
    func add(_ line: String, hold microseconds: UInt32 = 0) {
        pthread_mutex_lock(&mutex)
        lines.append(line)
        if microseconds > 0 { usleep(microseconds) }
        pthread_mutex_unlock(&mutex)
    }
    var all: [String] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return lines
    }
}

struct CollectingHandler: LogHandler {
    let sink: Collected
    var hold: UInt32 = 0
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { sink.add("\(event.level): \(event.message)", hold: hold) }
}

@Suite("Logging (get_logger, log_to_stderr)", .serialized)
struct LoggingTests {
    @Test("a process's start and exit reach the user's logger")
    func customLogger() throws {
        let sink = Collected()
        var logger = Logger(label: "test") { _ in CollectingHandler(sink: sink) }
        logger.logLevel = .info
        MP.setLogger(logger)
        defer { MP.setLogger(nil) }
        let child = MP.Process(name: "logged") { MP.exit(3) }
        try child.start()
        try joinOrKill(child)
        let lines = sink.all
        #expect(lines.contains { $0.hasPrefix("info: started logged (pid \(child.pid!), fork)") })
        #expect(lines.contains("info: logged (pid \(child.pid!)) exited with 3"))
    }

    @Test("silent by default; log_to_stderr writes Python's format, also from spawned children")
    func stderrFormat() throws {
        let output = TestPipe()
        let child = MP.Process(name: "logger-host") {
            try Sys.dup2(output.writeEnd, STDERR_FILENO)
            let quiet = MP.Process(name: "quiet") {}
            try quiet.start()
            try quiet.join()
            MP.logToStderr(level: .info)
            let loud = MP.Process(name: "loud") { MP.exit(2) }
            try loud.start()
            try loud.join()
            let spawned = MP.getContext(.spawn).Process(name: "spawned", target: StartGrandchild())
            try spawned.start()
            try spawned.join()
        }
        try child.start()
        try joinOrKill(child)
        let text = output.readAll()
        #expect(!text.contains("quiet"))
        #expect(text.contains("[INFO/logger-host] started loud (pid "))
        #expect(text.contains("[INFO/logger-host] loud (pid ") && text.contains(") exited with 2"))
        #expect(text.contains("[INFO/spawned] started grandchild (pid "), "a spawned child inherits the level: \(text)")
    }

    @Test("pool events: a worker replaced, a pool terminated")
    func poolEvents() throws {
        let sink = Collected()
        var logger = Logger(label: "test") { _ in CollectingHandler(sink: sink) }
        logger.logLevel = .info
        MP.setLogger(logger)
        defer { MP.setLogger(nil) }
        let pool = try MP.TaskPool(processes: 1)
        #expect(throws: MP.Error.self) { try pool.apply(DieMidTask(how: .sigkill)) }
        #expect(try pool.apply(Square(x: 2)) == 4)
        pool.terminate()
        #expect(try pool.join(timeout: 20))
        let lines = sink.all
        #expect(lines.contains { $0.contains("was killed by SIGKILL; replaced by ForkServerPoolWorker-2") }, "\(lines.joined(separator: " | "))")
        #expect(lines.contains("info: task pool terminated: 1 worker(s) killed"))
    }

    @Test("a forked child never waits on the user's logger's lock (copied held at the fork)")
    func forkSafe() throws {
        let sink = Collected()
        var logger = Logger(label: "busy") { _ in CollectingHandler(sink: sink, hold: 200) }
        logger.logLevel = .info
        MP.setLogger(logger)
        defer { MP.setLogger(nil) }
        // Another thread keeps the backend's lock held most of the time.
        let stop = StartFlag()
        let busy = TestThread { while !stop.wait(0) { logger.info("busy") } }
        defer { stop.set(); busy.join() }
        for round in 0..<20 {
            let child = MP.Process(name: "round-\(round)") {
                // Logs (a grandchild's start and exit): through the stderr
                // writer here, never the backend whose lock was copied.
                let grandchild = MP.Process(name: "grandchild-\(round)") {}
                try grandchild.start()
                try grandchild.join()
            }
            try child.start()
            try joinOrKill(child, within: 10)
            #expect(child.exitCode == 0)
        }
    }
}

struct StartGrandchild: MP.NamedTask {
    func run() throws {
        let grandchild = MP.Process(name: "grandchild") {}
        try grandchild.start()
        try grandchild.join()
    }
}

/// A plain thread for tests.
final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { context in
            let me = Unmanaged<TestThread>.fromOpaque(context!).takeRetainedValue()
            me.body()
            return nil
        }, context)
    }
    func join() { pthread_join(thread, nil) }
}
