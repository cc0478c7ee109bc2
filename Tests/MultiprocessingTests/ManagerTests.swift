import Testing
@testable import Multiprocessing
import Glibc
import MultiprocessingPlatform

// MP.Manager: a server process with shared objects behind proxies, used
// from forked, spawned and forkserver children, pool workers, and other
// "programs" that connect by address and key.

/// Writes into every kind of proxy it holds, from a child of any start method.
struct FillManagedObjects: MP.NamedTask {
    var dict: MP.DictProxy<String, Int>
    var list: MP.ListProxy<String>
    var namespace: MP.NamespaceProxy
    var value: MP.ValueProxy<Double>
    var array: MP.ArrayProxy<Int>
    var queue: MP.QueueProxy<String>
    var tag: String

    func run() throws {
        try dict.set(tag, 1)
        try list.append(tag)
        try namespace.set("who", tag)
        try value.set(2.5)
        try array.set(1, 7)
        try queue.put("\(tag) done")
    }
}

/// Adds 1 to a dict entry `times` times with `modify` (atomic, no lock).
struct IncrementEntry: MP.NamedTask {
    var dict: MP.DictProxy<String, Int>
    var times: Int
    func run() throws {
        for _ in 0..<times { try dict.modify("n") { $0 = ($0 ?? 0) + 1 } }
    }
}

/// A pool task that records its input through a dict proxy it received as an argument.
struct RecordInDict: MP.NamedTask {
    var dict: MP.DictProxy<Int, Int>
    var x: Int
    func run() throws -> Int {
        try dict.set(x, x * x)
        return x
    }
}

/// Another "program": connects by address and key, and finds a named dict.
struct ConnectAndWrite: MP.NamedTask {
    var path: String
    var key: [UInt8]
    func run() throws {
        let manager = try MP.Manager.connect(address: .unix(path), authkey: key)
        let shared: MP.DictProxy<String, String> = try manager.dict(named: "inbox")
        try shared.set("from", "another program")
    }
}

/// A registered type: served on the manager's process.
struct Tally: MP.ManagedObject {
    var total = 0
    enum Call: Codable, Sendable { case add(Int), read, fail }
    struct Refused: Error, CustomStringConvertible { var description: String { "refused on purpose" } }

    mutating func handle(_ call: Call) throws -> Int {
        switch call {
        case .add(let n): total += n; return total
        case .read: return total
        case .fail: throw Refused()
        }
    }
}

struct AddToTally: MP.NamedTask {
    var tally: MP.ObjectProxy<Tally>
    var times: Int
    func run() throws {
        for _ in 0..<times { try tally.call(.add(1)) }
    }
}

@Suite("Manager", .serialized)
struct ManagerTests {
    @Test("every proxy works from a forked, a spawned and a forkserver child", arguments: MP.StartMethod.allCases)
    func proxiesInChildren(method: MP.StartMethod) throws {
        try MP.Manager.with { manager in
            let dict: MP.DictProxy<String, Int> = try manager.dict()
            let list: MP.ListProxy<String> = try manager.list()
            let namespace = try manager.Namespace()
            let value = try manager.Value(0.0)
            let array = try manager.Array([0, 0, 0])
            let queue: MP.QueueProxy<String> = try manager.Queue()
            let task = FillManagedObjects(dict: dict, list: list, namespace: namespace, value: value, array: array,
                                          queue: queue, tag: method.rawValue)
            let child = MP.getContext(method).Process(target: task)
            try child.start()
            #expect(try queue.get(timeout: 20) == "\(method.rawValue) done")
            try joinOrKill(child)
            #expect(child.exitCode == 0)
            #expect(try dict[method.rawValue] == 1)
            #expect(try list.toArray() == [method.rawValue])
            #expect(try namespace.get("who", as: String.self) == method.rawValue)
            #expect(try value.value == 2.5)
            #expect(try array.toArray() == [0, 7, 0])
        }
    }

    @Test("a dict proxy behaves as Python's dict, insertion-ordered")
    func dictSemantics() throws {
        try MP.Manager.with { manager in
            let d: MP.DictProxy<String, Int> = try manager.dict(["a": 1])
            try d.set("b", 2)
            try d.set("c", 3)
            try d.set("a", 10) // keeps its place
            #expect(try d.keys() == ["a", "b", "c"])
            #expect(try d.values() == [10, 2, 3])
            #expect(try d.count == 3)
            #expect(try d.contains("b"))
            #expect(try d.pop("b") == 2)
            #expect(try d.pop("b") == nil)
            #expect(try d["zz"] == nil)
            #expect(try d.get("zz", default: 5) == 5)
            #expect(try d.setDefault("a", 99) == 10)
            #expect(try d.setDefault("n", 1) == 1)
            try d.update(["x": 7])
            try d.update(["y": 8]) // (a Swift dictionary's own order is arbitrary)
            #expect(try d.copy() == ["a": 10, "c": 3, "n": 1, "x": 7, "y": 8])
            #expect(try d.keys() == ["a", "c", "n", "x", "y"])
            #expect(try d.popItem()! == ("y", 8))
            try d.modify("c") { $0 = nil } // nil removes
            #expect(try !d.contains("c"))
            try d.clear()
            #expect(try d.count == 0)
            #expect(try d.popItem() == nil)
        }
    }

    @Test("modify is atomic: two processes incrementing 300 times each make 600")
    func atomicModify() throws {
        try MP.Manager.with { manager in
            let d: MP.DictProxy<String, Int> = try manager.dict()
            let children = (0..<2).map { _ in MP.getContext(.forkserver).Process(target: IncrementEntry(dict: d, times: 300)) }
            for child in children { try child.start() }
            for child in children { try joinOrKill(child, within: 60) }
            #expect(children.allSatisfy { $0.exitCode == 0 })
            #expect(try d["n"] == 600)
        }
    }

    @Test("lists, values and arrays: Python's indexing, errors for what Python refuses")
    func listsValuesArrays() throws {
        try MP.Manager.with { manager in
            let l: MP.ListProxy<Int> = try manager.list([1, 2, 3])
            try l.append(4)
            try l.extend([5, 6])
            try l.insert(0, at: 0)
            try l.insert(99, at: 100) // past the end: appended, as in Python
            #expect(try l.toArray() == [0, 1, 2, 3, 4, 5, 6, 99])
            #expect(try l[-1] == 99)
            #expect(try l.pop() == 99)
            #expect(try l.pop(0) == 0)
            try l.set(0, 10)
            try l.modify(1) { $0 *= 100 }
            #expect(try l.toArray() == [10, 200, 3, 4, 5, 6])
            #expect(try l.firstIndex(of: 4) == 3)
            #expect(try l.firstIndex(of: 77) == nil)
            try l.remove(4)
            #expect(throws: MP.Error.valueNotFound) { try l.remove(4) }
            try l.insert(4, at: 3)
            #expect(throws: MP.Error.indexOutOfRange(index: 6, count: 6)) { try l.get(6) }
            #expect(throws: MP.Error.indexOutOfRange(index: -7, count: 6)) { try l.set(-7, 0) }
            let empty: MP.ListProxy<Int> = try manager.list()
            #expect(throws: MP.Error.indexOutOfRange(index: -1, count: 0)) { try empty.pop() }

            let v = try manager.Value(41)
            #expect(try v.modify { $0 += 1; return $0 } == 42)
            #expect(try v.get() == 42)

            let a = try manager.Array([1.0, 2.0])
            #expect(try a.count == 2)
            try a.modify(0) { $0 = 1.5 }
            #expect(try a.toArray() == [1.5, 2.0])
            #expect(throws: MP.Error.indexOutOfRange(index: 2, count: 2)) { try a.get(2) }

            let ns = try manager.Namespace()
            try ns.set("x", 1)
            try ns.set("name", "bob")
            #expect(try ns.get("x", as: Int.self) == 1)
            #expect(try ns.names() == ["x", "name"])
            #expect(try ns.delete("x"))
            #expect(try !ns.delete("x"))
            #expect(try ns.get("x", as: Int.self) == nil)
        }
    }

    @Test("queues: between processes, timeouts, bounds, JoinableQueue's taskDone and join")
    func queues() throws {
        try MP.Manager.with { manager in
            let q: MP.QueueProxy<Int> = try manager.Queue(maxsize: 2)
            try q.put(1)
            try q.putNowait(2)
            #expect(try q.full())
            #expect(throws: MP.Error.full) { try q.putNowait(3) }
            #expect(throws: MP.Error.full) { try q.put(3, timeout: 0.05) }
            #expect(try q.qsize() == 2)
            #expect(try q.get() == 1)
            #expect(try q.getNowait() == 2)
            #expect(try q.empty())
            #expect(throws: MP.Error.empty) { try q.getNowait() }
            #expect(throws: MP.Error.empty) { try q.get(timeout: 0.05) }
            #expect(throws: MP.Error.invalidUse("taskDone() belongs to a JoinableQueue")) { try q.taskDone() }

            let jobs: MP.QueueProxy<Int> = try manager.JoinableQueue()
            for n in 0..<5 { try jobs.put(n) }
            #expect(try !jobs.join(timeout: 0.05))
            let worker = MP.Process {
                for _ in 0..<5 {
                    _ = try jobs.get()
                    try jobs.taskDone()
                }
            }
            try worker.start()
            #expect(try jobs.join(timeout: 20))
            try joinOrKill(worker)
            #expect(throws: MP.Error.invalidUse("taskDone() called too many times")) { try jobs.taskDone() }
        }
    }

    @Test("locks, semaphores, conditions, events and barriers across processes")
    func synchronisation() throws {
        try MP.Manager.with { manager in
            let lock = try manager.Lock()
            #expect(try lock.acquire())
            #expect(try lock.locked())
            #expect(try !lock.acquire(block: false))
            #expect(try !lock.acquire(timeout: 0.05))
            try lock.release()
            #expect(throws: MP.Error.invalidUse("release of an unlocked Lock")) { try lock.release() }

            let rlock = try manager.RLock()
            #expect(try rlock.acquire())
            #expect(try rlock.acquire()) // reentrant on this thread
            let otherThread = try MP.Manager.runOnThread { try rlock.acquire(timeout: 0.05) }
            #expect(otherThread == false)
            #expect(throws: MP.Error.invalidUse("cannot release an RLock held by another thread")) {
                try MP.Manager.runOnThread { try rlock.release() }
            }
            try rlock.release()
            try rlock.release()
            #expect(try !rlock.locked())

            let bounded = try manager.BoundedSemaphore(2)
            #expect(try bounded.acquire())
            #expect(try bounded.value() == 1)
            try bounded.release()
            #expect(throws: MP.Error.invalidUse("Semaphore released too many times")) { try bounded.release() }
            let semaphore = try manager.Semaphore(0)
            #expect(try !semaphore.acquire(timeout: 0.05))
            try semaphore.release(3)
            #expect(try semaphore.value() == 3)

            let condition = try manager.Condition()
            let ready = try manager.Value(false)
            let event = try manager.Event()
            let barrier = try manager.Barrier(3)
            let children = (0..<2).map { _ in
                MP.Process {
                    try condition.withLock {
                        try condition.wait(for: { try ready.get() }, timeout: 20)
                    }
                    try event.wait(timeout: 20)
                    _ = try barrier.wait(timeout: 20)
                }
            }
            for child in children { try child.start() }
            try condition.withLock {
                try ready.set(true)
                try condition.notifyAll()
            }
            #expect(throws: MP.Error.invalidUse("cannot notify on a Condition whose lock this thread does not hold")) {
                try condition.notify()
            }
            try event.set()
            #expect(try event.isSet())
            let index = try barrier.wait(timeout: 20)
            #expect((0..<3).contains(index))
            for child in children { try joinOrKill(child) }
            #expect(children.allSatisfy { $0.exitCode == 0 })

            let lonely = try manager.Barrier(2)
            #expect(throws: MP.Error.brokenBarrier) { try lonely.wait(timeout: 0.05) }
            #expect(try lonely.broken)
            #expect(throws: MP.Error.brokenBarrier) { try lonely.wait() }
            try lonely.reset()
            #expect(try !lonely.broken)
            #expect(try lonely.parties == 2)
        }
    }

    @Test("a lock held by a process that is SIGKILLed is released for the next holder")
    func lockOfDeadHolderIsReleased() throws {
        try MP.Manager.with { manager in
            let lock = try manager.Lock()
            let held = try manager.Event()
            let holder = MP.Process {
                try lock.acquire()
                try held.set()
                while true { pause() }
            }
            try holder.start()
            #expect(try held.wait(timeout: 20))
            #expect(try !lock.acquire(block: false))
            try holder.kill()
            try joinOrKill(holder)
            #expect(try lock.acquire(timeout: 10))
        }
    }

    @Test("a queue item taken for a client that died or cancelled goes back to the queue")
    func nothingLostWhenWaiterLeaves() async throws {
        try await MP.Manager.with { manager in
            let q: MP.QueueProxy<String> = try manager.Queue()
            let waiting = try manager.Event()
            // A child blocked in get is SIGKILLed; whether the server hands it the
            // item before or after it sees the death, the item must come back.
            let taker = MP.Process {
                try waiting.set()
                _ = try q.get()
            }
            try taker.start()
            #expect(try await waiting.wait(timeout: 20))
            try taker.kill()
            try q.putNowait("kept")
            try joinOrKill(taker)
            #expect(try q.get(block: true, timeout: 5) == "kept")

            // The same for an async get whose task is cancelled.
            let cancelled = Task { try await q.get() }
            cancelled.cancel()
            let outcome = await cancelled.result
            #expect(throws: MP.Error.cancelled) { try outcome.get() }
            try q.putNowait("kept again")
            #expect(try q.get(block: true, timeout: 5) == "kept again")
            #expect(try q.qsize() == 0)
        }
    }

    @Test("async proxies: a queue's get and an event's wait from the main actor")
    @MainActor
    func asyncFromMainActor() async throws {
        try await MP.Manager.with { manager in
            let q: MP.QueueProxy<Int> = try manager.Queue()
            let event = try manager.Event()
            let producer = MP.Process {
                try q.put(5)
                try event.set()
            }
            try producer.start()
            let got = try await q.get(timeout: 20)
            let set = try await event.wait(timeout: 20)
            #expect(got == 5)
            #expect(set)
            try await producer.join()
        }
    }

    @Test("a registered type runs on the server, atomically; its errors come back with type and description")
    func registeredType() throws {
        try MP.Manager.with { manager in
            let tally = try manager.register(Tally())
            let children = (0..<2).map { _ in MP.getContext(.spawn).Process(target: AddToTally(tally: tally, times: 100)) }
            for child in children { try child.start() }
            for child in children { try joinOrKill(child, within: 60) }
            #expect(try tally.call(.read) == 200)
            #expect(throws: MP.Error.remote(type: "MultiprocessingTests.Tally.Refused", description: "refused on purpose")) {
                try tally.call(.fail)
            }
            #expect(try tally.call(.add(1)) == 201) // the object is intact
        }
    }

    @Test("a pool's workers use a proxy passed as a task argument")
    func proxyInPoolWorkers() throws {
        try MP.Manager.with { manager in
            let squares: MP.DictProxy<Int, Int> = try manager.dict()
            let results = try MP.TaskPool.with(processes: 2) { pool in
                try pool.map((1...20).map { RecordInDict(dict: squares, x: $0) })
            }
            #expect(results == Array(1...20))
            #expect(try squares.count == 20)
            #expect(try squares[7] == 49)
        }
    }

    @Test("another program connects by address and key and finds a named object")
    func connectByName() throws {
        let key = Array("a key for this test".utf8)
        let path = "/tmp/mp-manager-test-\(getpid()).sock"
        try MP.Manager.with(address: .unix(path), authkey: key) { manager in
            let inbox: MP.DictProxy<String, String> = try manager.dict(named: "inbox")
            let other = MP.getContext(.spawn).Process(target: ConnectAndWrite(path: path, key: key))
            try other.start()
            try joinOrKill(other, within: 60)
            #expect(other.exitCode == 0)
            #expect(try inbox["from"] == "another program")
            // The same name as another kind or element type is refused.
            #expect(throws: MP.Error.self) { let _: MP.ListProxy<String> = try manager.list(named: "inbox") }
            #expect(throws: MP.Error.self) { let _: MP.DictProxy<String, Int> = try manager.dict(named: "inbox") }
        }
        #expect(access(path, F_OK) != 0, "the socket file is removed at shutdown")
    }
}

extension MP.Manager {
    /// Runs `body` on another thread and waits for it (a second thread of this process).
    static func runOnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        _ = startThread {
            let result = Result { try body() }
            box.lock.withLock {
                box.result = result
                box.lock.broadcast()
            }
        }
        let result = box.lock.withLock {
            while box.result == nil { box.lock.wait() }
            return box.result!
        }
        return try result.get()
    }
}

final class ResultBox<T>: @unchecked Sendable {
    let lock = ForkSafeLock()
    var result: Result<T, any Error>?
}
