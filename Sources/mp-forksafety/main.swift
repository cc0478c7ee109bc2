import ArgumentParser
import Dispatch
import Foundation
import Multiprocessing

/// The work every child does: things that take other libraries' locks
/// (Foundation's formatters and encoders, malloc, stdio).
func childWork(_ seed: Int) throws {
    let data = try JSONEncoder().encode(["seed": seed, "double": seed * 2])
    _ = try JSONSerialization.jsonObject(with: data)
    _ = String(format: "%05d %@", seed, "child")
    _ = Date().description
    _ = ProcessInfo.processInfo.processIdentifier
    var blocks: [UnsafeMutableRawPointer] = []
    for size in stride(from: 16, to: 65536, by: 4096) { blocks.append(malloc(size)!) }
    blocks.forEach { free($0) }
    print("child", seed, to: &standardError)
}

/// The same work as a named task, for spawn and forkserver.
struct ChildWork: MP.NamedTask {
    var seed: Int
    func run() throws { try childWork(seed) }
}

nonisolated(unsafe) var standardError = FileHandleOutputStream()
struct FileHandleOutputStream: TextOutputStream {
    mutating func write(_ string: String) { FileHandle.standardError.write(Data(string.utf8)) }
}

/// Keeps every core busy in other libraries while children are started.
final class BusyThreads: @unchecked Sendable {
    private let stop = NSLock()
    private var stopped = false
    private var isStopped: Bool { stop.lock(); defer { stop.unlock() }; return stopped }

    func start() {
        // Foundation: formatters, JSON, NSLock-protected state.
        for i in 0..<2 {
            Thread.detachNewThread { [self] in
                let formatter = DateFormatter()
                formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
                while !isStopped {
                    _ = formatter.string(from: Date())
                    _ = try? JSONEncoder().encode([i, i + 1])
                    _ = String(format: "%d", i)
                }
            }
        }
        // Dispatch: global queues and concurrentPerform.
        DispatchQueue.global().async { [self] in
            while !isStopped { DispatchQueue.concurrentPerform(iterations: 4) { _ = [Int](repeating: $0, count: 100) } }
        }
        // Swift concurrency: tasks that allocate.
        Task.detached { [self] in
            while !isStopped {
                await withTaskGroup(of: Int.self) { group in
                    for i in 0..<8 { group.addTask { [Int](repeating: i, count: 256).reduce(0, +) } }
                    for await _ in group {}
                }
            }
        }
        // malloc and stdio from a plain thread.
        Thread.detachNewThread { [self] in
            while !isStopped {
                let block = malloc(Int.random(in: 16...100_000))
                free(block)
                print("", terminator: "")
                fflush(nil)
            }
        }
    }

    func finish() { stop.lock(); stopped = true; stop.unlock() }
}

/// `mp-forksafety`: starts children from a program whose threads are busy
/// in Foundation, Dispatch, Swift concurrency, malloc and stdio, under each
/// start method, and counts children that hang (not done within the timeout:
/// killed and counted). Bounded: at most `children * timeout` per method.
struct ForkSafety: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-forksafety",
        abstract: "Counts children that hang when started from a busy multithreaded program, per start method.")

    @Option(help: "Children per start method.")
    var children = 1000

    @Option(help: "Seconds a child may take before it counts as hung (and is killed).")
    var timeout = 5.0

    @Option(help: "Rows to run (repeatable): fork (closure processes), pool (closure pool tasks), spawn, forkserver.")
    var method: [String] = ["fork", "pool", "spawn", "forkserver"]

    func run() throws {
        // The children's own messages go nowhere; the report goes to stdout.
        let null = open("/dev/null", O_WRONLY)
        dup2(null, STDERR_FILENO)
        close(null)
        let busy = BusyThreads()
        busy.start()
        for name in method {
            let restartsBefore = MP.forkRestarts
            if name == "pool" {
                try poolRow(restartsBefore: restartsBefore)
                continue
            }
            guard let method = MP.StartMethod(rawValue: name) else { throw ValidationError("unknown start method \(name)") }
            var hung = 0, failed = 0
            let start = DispatchTime.now()
            for seed in 0..<children {
                let p: MP.Process
                if method == .fork {
                    p = MP.Process { try childWork(seed) }
                } else {
                    p = MP.getContext(method).Process(target: ChildWork(seed: seed))
                }
                try p.start()
                if try !p.join(timeout: timeout) {
                    hung += 1
                    try p.kill()
                    try p.join()
                } else if p.exitCode != 0 {
                    failed += 1
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            print("\(name): \(children) children, \(hung) hung (\(String(format: "%.2f", Double(hung) * 100 / Double(children)))%), \(failed) failed, \(MP.forkRestarts - restartsBefore) restarted by the fork watchdog, \(String(format: "%.2f", seconds * 1000 / Double(children))) ms per child")
        }
        busy.finish()
    }

    /// The closure pool: each task on a worker forked for its batch (one
    /// task a batch here, so a fork per task); a task not done within the
    /// timeout counts as hung, and its pool is terminated and made anew.
    func poolRow(restartsBefore: Int) throws {
        var hung = 0, failed = 0
        let start = DispatchTime.now()
        var pool = try MP.Pool(processes: 2)
        for seed in 0..<children {
            let result = pool.applyAsync { () throws -> Int in try childWork(seed); return seed }
            do {
                _ = try result.get(timeout: timeout)
            } catch .timeout {
                hung += 1
                pool.terminate()
                try? pool.join()
                pool = try MP.Pool(processes: 2)
            } catch {
                failed += 1
            }
        }
        pool.close()
        try pool.join()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        print("pool: \(children) tasks, \(hung) hung (\(String(format: "%.2f", Double(hung) * 100 / Double(children)))%), \(failed) failed, \(MP.forkRestarts - restartsBefore) restarted by the fork watchdog, \(String(format: "%.2f", seconds * 1000 / Double(children))) ms per task")
    }
}

ForkSafety.main()
