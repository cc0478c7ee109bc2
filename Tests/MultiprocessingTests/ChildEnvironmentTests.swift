import Glibc
import Dispatch
import Foundation
import Multiprocessing
import Testing

nonisolated(unsafe) var sharedLookingGlobal = "parent"
nonisolated(unsafe) var atexitReportFD: Int32 = -1
nonisolated(unsafe) var atexitOwnerPid: Int32 = 0

@Suite("What a child sees")
struct ChildEnvironmentTests {
    @Test("globals are copies: the child's change does not reach the parent")
    func globalsAreIsolated() throws {
        sharedLookingGlobal = "parent"
        let p = MP.Process {
            sharedLookingGlobal = "child"
            MP.exit(sharedLookingGlobal == "child" ? 42 : 1)
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
        #expect(sharedLookingGlobal == "parent")
    }

    @Test("stdio is flushed before fork: buffered output is written once, not again by the child")
    func stdioFlushedBeforeFork() throws {
        let path = "/tmp/mp-flush-\(MP.getpid()).txt"
        defer { unlink(path) }
        let file = try #require(fopen(path, "w"))
        fputs("buffered-line\n", file) // sits in the FILE buffer
        let p = MP.Process { fputs("child-line\n", file) } // the child flushes its own stdio on exit
        try p.start()
        try joinOrKill(p)
        fclose(file)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.components(separatedBy: "buffered-line").count - 1 == 1)
        #expect(text.contains("child-line"))
    }

    @Test("a child's exit(n) never runs the parent's atexit handlers")
    func noParentAtexitInChild() throws {
        let report = TestPipe()
        atexitReportFD = report.writeEnd
        atexitOwnerPid = MP.getpid()
        // Runs for real at the test process's exit; writes only if run elsewhere.
        atexit {
            if getpid() != atexitOwnerPid {
                var byte: UInt8 = 1
                _ = write(atexitReportFD, &byte, 1)
            }
        }
        let viaExit = MP.Process { exit(0) }
        let viaReturn = MP.Process {}
        let raw = try MP.fork()
        if case .child = raw { exit(0) }
        guard case .parent(let rawPid) = raw else { return }
        try viaExit.start()
        try viaReturn.start()
        try joinOrKill(viaExit)
        try joinOrKill(viaReturn)
        #expect(try waitOrKill(rawPid) == .exited(0))
        let text = report.readAll()
        atexitReportFD = -1
        #expect(text.isEmpty, "a parent atexit handler ran in a child")
        #expect(viaExit.exitCode == 0 && viaReturn.exitCode == 0)
    }

    @Test("Swift concurrency works in the child: Task {}, task groups, Task.sleep, the main actor")
    func concurrencyInChild() async throws {
        // The parent uses Swift concurrency (this test) and Dispatch before forking.
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume() }
        }
        let p = MP.Process {
            let unstructured = Task { 20 }
            let grouped = await withTaskGroup(of: Int.self) { group in
                for value in 1...4 { group.addTask { value } }
                return await group.reduce(0, +)
            }
            let clock = ContinuousClock()
            let before = clock.now
            try await Task.sleep(for: .milliseconds(30))
            let slept = clock.now - before >= .milliseconds(30)
            let onMain = await MainActor.run { 2 }
            let total = await unstructured.value + grouped + onMain + (slept ? 10 : 0)
            MP.exit(Int32(total)) // 20 + 10 + 2 + 10
        }
        try p.start()
        try await p.join()
        #expect(p.exitCode == 42)
    }

    @Test("a child's timers: thousands of sleeps, most cancelled, each wakes at or after its deadline and none is lost")
    func manyTimersInChild() async throws {
        let p = MP.Process {
            let clock = ContinuousClock()
            // Cancelled sleeps stay queued until their deadline (the runtime's
            // way): 5,000 of them must not slow the ones that wake.
            let cancelled = (0..<5_000).map { i in Task { try? await Task.sleep(for: .milliseconds(200 + i % 300)) } }
            for task in cancelled { task.cancel() }
            let start = clock.now
            let early = await withTaskGroup(of: Bool.self) { group in
                for i in 0..<2_000 {
                    let delay = Duration.milliseconds(1 + (i * 7919) % 50)
                    group.addTask {
                        let before = clock.now
                        try? await Task.sleep(for: delay)
                        return clock.now - before < delay
                    }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            let elapsed = clock.now - start
            for task in cancelled { await task.value }
            MP.exit(early == 0 && elapsed < .seconds(5) ? 42 : 1)
        }
        try p.start()
        try joinOrKill(p, within: 30)
        #expect(p.exitCode == 42)
    }

    @Test("a sync target can still run async work through a Task it waits for")
    func syncTargetWithTask() throws {
        let p = MP.Process {
            let result = TestPipe()
            Task.detached {
                let sum = await withTaskGroup(of: Int32.self) { group in
                    for value in Int32(1)...6 { group.addTask { value } }
                    return await group.reduce(0, +)
                }
                result.write(sum)
            }
            MP.exit(result.readInt32(within: 10) ?? -1) // 21
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 21)
    }

    @Test("Dispatch is detected as unusable in a child of a parent that used it")
    func dispatchDetection() async throws {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume() }
        }
        #expect(MP.isDispatchUsable)
        let p = MP.Process { MP.exit(MP.isDispatchUsable ? 1 : 42) }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
    }

    @Test("currentProcess and parentProcess in the parent and in the child")
    func currentAndParent() throws {
        let main = MP.currentProcess()
        #expect(main.name == "MainProcess")
        #expect(main.pid == MP.getpid())
        #expect(main.description == "<_MainProcess name='MainProcess' parent=None started>")
        #expect(main.isAlive)
        #expect(MP.parentProcess() == nil)
        let parentPid = MP.getpid()
        let report = TestPipe()
        let p = MP.Process(name: "myprocess1") {
            let me = MP.currentProcess()
            report.write("\(me.name)|\(me.pid == MP.getpid())|\(me.description)|")
            report.write("\(MP.parentProcess()?.name ?? "nil")|\(MP.parentProcess()?.pid == parentPid)|\(MP.parentProcess()?.isAlive == true)")
        }
        try p.start()
        let text = report.readAll()
        try joinOrKill(p)
        #expect(text == "myprocess1|true|<Process name='myprocess1' parent=\(parentPid) started>|MainProcess|true|true")
    }

    @Test("descriptions read like Python's repr")
    func descriptions() throws {
        let p = MP.Process(name: "worker") { MP.exit(0) }
        let parent = MP.getpid()
        #expect(p.description == "<Process name='worker' parent=\(parent) initial>")
        let gate = TestPipe()
        let d = MP.Process(name: "d", daemon: true) { gate.awaitSignal() }
        try d.start()
        #expect(d.description == "<Process name='d' pid=\(d.pid!) parent=\(parent) started daemon>")
        try d.terminate()
        try joinOrKill(d)
        #expect(d.description == "<Process name='d' pid=\(d.pid!) parent=\(parent) stopped exitcode=SIGTERM daemon>")
        try p.start()
        try joinOrKill(p)
        #expect(p.description == "<Process name='worker' pid=\(p.pid!) parent=\(parent) stopped exitcode=0>")
    }

    @Test("default names: Process-N, ClassName-N for subclasses, Process-N:M in a child")
    func names() throws {
        final class Sub: MP.Process, @unchecked Sendable {}
        let a = MP.Process {}
        let b = MP.Process {}
        let numberA = try #require(Int(a.name.dropFirst("Process-".count)))
        #expect(a.name.hasPrefix("Process-"))
        #expect(b.name == "Process-\(numberA + 1)")
        let sub = Sub()
        #expect(sub.name == "Sub-\(numberA + 2)")
        sub.name = "renamed"
        #expect(sub.name == "renamed")
        let report = TestPipe()
        let parent = MP.Process {
            let first = MP.Process {}
            let second = MP.Process {}
            report.write("\(first.name) \(second.name)")
        }
        try parent.start()
        let text = report.readAll()
        try joinOrKill(parent)
        let n = parent.name.dropFirst("Process-".count)
        #expect(text == "Process-\(n):1 Process-\(n):2")
    }

    @Test("a subclass's run() is what the child runs, with its init arguments")
    func subclassRun() throws {
        final class Adder: MP.Process, @unchecked Sendable {
            let a: Int32, b: Int32
            init(_ a: Int32, _ b: Int32) { self.a = a; self.b = b; super.init() }
            override func run() throws { MP.exit(a + b) }
        }
        let p = Adder(40, 2)
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
    }
}
