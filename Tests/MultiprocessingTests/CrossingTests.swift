import Testing
@testable import Multiprocessing
import Glibc

/// Uses every library object it was given, from a spawned or forkserver child.
struct UseEveryObject: MP.NamedTask {
    var queue: MP.Queue<Int>
    var simple: MP.SimpleQueue<String>
    var joinable: MP.JoinableQueue<Int>
    var lock: MP.Lock
    var rlock: MP.RLock
    var semaphore: MP.Semaphore
    var bounded: MP.BoundedSemaphore
    var condition: MP.Condition
    var event: MP.Event
    var barrier: MP.Barrier
    var value: MP.Value<Int>
    var array: MP.Array<Double>
    var memory: MP.SharedMemory
    var connection: MP.Connection

    func run() throws {
        try queue.put(42)
        try simple.put("hello")
        try joinable.put(7)
        _ = try lock.withLock { try rlock.withLock { try rlock.withLock { 1 } } }
        try semaphore.release()
        try bounded.acquire()
        try value.withLock { $0 += 1 }
        array[0] = 2.5
        memory.buffer[0] = 9
        try condition.withLock { try condition.notifyAll() }
        try event.set()
        _ = try barrier.wait(timeout: 20)
        try connection.send("over the socket")
        guard try connection.recv(String.self) == "and back" else { throw MP.ExitRequest(3) }
        _ = try joinable.join(timeout: 20)
    }
}

struct HoldsBarrierWithAction: MP.NamedTask {
    var barrier: MP.Barrier
    func run() {}
}

struct Generic<T: Codable & Sendable>: MP.NamedTask {
    var value: T
    func run() {}
}

struct SameNameA: MP.NamedTask {
    static var name: String { "tests.same-name" }
    func run() {}
}

struct SameNameB: MP.NamedTask {
    static var name: String { "tests.same-name" }
    func run() {}
}

struct Returns: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x }
}

@Suite("Crossing: library objects in spawned and forkserver children; what cannot cross")
struct CrossingTests {
    @Test("every library object works in the child as in a forked one", arguments: launchedMethods)
    func everyObject(method: MP.StartMethod) throws {
        let (mine, theirs) = try MP.Pipe()
        let memory = try MP.SharedMemory(create: true, size: 64)
        defer { try? memory.unlink() }
        let task = UseEveryObject(
            queue: try MP.Queue(), simple: try MP.SimpleQueue(), joinable: try MP.JoinableQueue(),
            lock: try MP.Lock(), rlock: try MP.RLock(), semaphore: try MP.Semaphore(value: 0),
            bounded: try MP.BoundedSemaphore(value: 1), condition: try MP.Condition(), event: try MP.Event(),
            barrier: try MP.Barrier(parties: 2), value: try MP.Value(0), array: try MP.Array(repeating: 0, count: 4),
            memory: memory, connection: theirs)
        let p = MP.getContext(method).Process(target: task)
        try task.condition.acquire()
        try p.start()
        // The child's notify wakes this wait once it changed the value.
        #expect(try task.condition.wait(for: { task.value.value == 1 }, timeout: 20))
        try task.condition.release()
        #expect(try task.queue.get(timeout: 20) == 42)
        #expect(try task.simple.get(timeout: 20) == "hello")
        #expect(try task.joinable.get(timeout: 20) == 7)
        try task.joinable.taskDone()
        #expect(try task.semaphore.acquire(timeout: 20) == .acquired)
        #expect(try task.event.wait(timeout: 20))
        _ = try task.barrier.wait(timeout: 20)
        #expect(try mine.recv(String.self) == "over the socket")
        try mine.send("and back")
        try joinOrKill(p)
        #expect(p.exitCode == 0)
        #expect(task.array[0] == 2.5)
        #expect(memory.buffer[0] == 9)
        #expect(try task.bounded.acquire(blocking: false) == .timedOut, "the child holds the bounded semaphore's unit")
        #expect(try task.lock.acquire(blocking: false) == .acquired)
    }

    @Test("an async get in the parent is woken by a spawned child's put", arguments: launchedMethods)
    func asyncGetWokenAcrossSpawn(method: MP.StartMethod) async throws {
        let queue = try MP.Queue<Int>()
        let waiting = Task { try await queue.get() }
        let p = MP.getContext(method).Process(target: PutOne(queue: queue))
        try p.start()
        #expect(try await waiting.value == 1)
        try await p.join()
    }

    @Test("a library object sent through a queue or a pipe is refused with a clear error")
    func objectOutsideAStart() throws {
        let queue = try MP.Queue<MP.Lock>()
        #expect {
            try queue.put(try MP.Lock())
        } throws: { error in
            "\(error)".contains("inheritance")
        }
        let (a, _) = try MP.Pipe()
        #expect { try a.send(try MP.Event()) } throws: { "\($0)".contains("inheritance") }
    }

    @Test("a barrier with an action cannot cross; the start says why and nothing is started", arguments: launchedMethods)
    func barrierWithAction(method: MP.StartMethod) throws {
        let barrier = try MP.Barrier(parties: 1, action: {})
        let p = MP.getContext(method).Process(target: HoldsBarrierWithAction(barrier: barrier))
        #expect { try p.start() } throws: { isError($0, .cannotCross, containing: "action") }
        #expect(p.pid == nil)
        #expect(MP.activeChildren().isEmpty)
    }

    @Test("a closure target under spawn or forkserver is refused: .needsFork", arguments: launchedMethods)
    func closureNeedsFork(method: MP.StartMethod) throws {
        let p = MP.getContext(method).Process {}
        #expect(throws: MP.Error.task(.needsFork(process: p.name, method: method))) { try p.start() }
        #expect(p.pid == nil)
    }

    @Test("a generic task and two tasks with one name are refused before anything starts", arguments: launchedMethods)
    func undiscoverableTasks(method: MP.StartMethod) throws {
        let generic = MP.getContext(method).Process(target: Generic(value: 1))
        #expect { try generic.start() } throws: { isError($0, .unknownTask, containing: "Generic", "generic") }
        let duplicate = MP.getContext(method).Process(target: SameNameA())
        #expect { try duplicate.start() } throws: { isError($0, .unknownTask, containing: "named task 'tests.same-name' is declared by more than one type", "SameNameA", "SameNameB") }
    }

    @Test("the registry finds the test's tasks by their names, with Void and Codable results")
    func registry() throws {
        let registry = TaskRegistry.shared
        #expect(try registry.task(named: Returns.name) == Returns.self)
        #expect(Returns.name == "MultiprocessingTests.Returns")
        #expect(try Returns._decodeResult(Returns._encodeResult(Returns(x: 3).run())) == 9)
        #expect(throws: MP.Error.unknownTask("no.such.task")) { try registry.task(named: "no.such.task") }
        #expect(registry.generic.contains("Generic"))
    }

    @Test("a launch message reads back as written, with and without its optional fields; a damaged one is refused")
    func launchMessageForm() throws {
        let full = LaunchInfo(build: "b", task: "t", arguments: [1, 2, 3], processName: "p", identity: [1, -2, 3],
                              daemon: true, parentPid: 42, parentName: "MainProcess", lineBuffered: true,
                              logLevel: "debug", authkey: [9, 8])
        let bare = LaunchInfo(build: "", task: "", arguments: [], processName: "", identity: [],
                              daemon: false, parentPid: 0, parentName: "", lineBuffered: false)
        for info in [full, bare] {
            let back = try LaunchInfo(decoding: info.encoded)
            #expect(back.build == info.build && back.task == info.task && back.arguments == info.arguments)
            #expect(back.processName == info.processName && back.identity == info.identity && back.daemon == info.daemon)
            #expect(back.parentPid == info.parentPid && back.parentName == info.parentName && back.lineBuffered == info.lineBuffered)
            #expect(back.logLevel == info.logLevel && back.authkey == info.authkey)
        }
        let bytes = full.encoded
        #expect(throws: MP.Error.self) { try LaunchInfo(decoding: Array(bytes.dropLast())) }
        #expect(throws: MP.Error.self) { try LaunchInfo(decoding: bytes + [0]) }
        #expect(throws: MP.Error.self) { try LaunchInfo(decoding: [0xff, 0xff, 0xff, 0xff] + bytes.dropFirst(4)) }
        #expect(throws: MP.Error.self) { try LaunchInfo(decoding: []) }
    }

    @Test("a child refuses an unknown name, another build's task, and arguments of the wrong type", arguments: launchedMethods)
    func childRefusals(method: MP.StartMethod) throws {
        let good = LaunchInfo(build: BuildIdentity.current, task: ExitWith.name, arguments: try WireFormat.encode(ExitWith(code: 3)),
                              processName: "refusal", identity: [99], daemon: false, parentPid: MP.getpid(), parentName: "MainProcess", lineBuffered: false)
        var unknown = good; unknown.task = "no.such.task"
        var otherBuild = good; otherBuild.build = "0123abcd"
        var wrongArguments = good; wrongArguments.arguments = try WireFormat.encode("not an ExitWith")
        // In this process, the same checks the child runs, with their errors:
        #expect(throws: MP.Error.unknownTask("no.such.task")) { try LaunchedChild.resolve(unknown, ReceivedDescriptors([])) }
        #expect(throws: MP.Error.buildMismatch(expected: BuildIdentity.current, found: "0123abcd")) {
            try LaunchedChild.resolve(otherBuild, ReceivedDescriptors([]))
        }
        #expect { try LaunchedChild.resolve(wrongArguments, ReceivedDescriptors([])) } throws: {
            isError($0, .cannotCross, containing: "the arguments of named task '\(ExitWith.name)' do not decode")
        }
        // And in a real child: the good one runs, each bad one exits with 1.
        for (info, code) in [(good, 3), (unknown, 1), (otherBuild, 1), (wrongArguments, 1)] as [(LaunchInfo, Int32)] {
            let message = try LaunchMessage(info, objects: [], method: method)
            defer { message.close() }
            let pid = method == .spawn ? try SpawnPopen.launch(message, daemon: false) : try ForkServerPopen.launch(message, daemon: false)
            #expect(try waitOrKill(pid) == .exited(code))
        }
    }

    @Test("a lock dropped while held is released: the thread's robust list stays valid")
    func droppedHeldLock() throws {
        for _ in 0..<3 {
            let lock = try MP.Lock()
            let rlock = try MP.RLock()
            try lock.acquire()
            try rlock.acquire()
            try rlock.acquire()
        }
        // Every robust lock operation walks this thread's list: with an
        // unmapped entry this crashed.
        let other = try MP.Lock()
        #expect(try other.acquire(blocking: false) == .acquired)
        try other.release()
    }

    @Test("a build identity is the executable's build id")
    func buildIdentity() {
        #expect(BuildIdentity.current.count >= 16)
        #expect(!BuildIdentity.current.hasPrefix("file-"), "Swift links a GNU build id into every Linux binary")
    }
}
