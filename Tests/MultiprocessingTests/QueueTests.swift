import Glibc
@testable import Multiprocessing
import Testing
import MultiprocessingPlatform

struct Job: Codable, Equatable, Sendable { var id: Int; var name: String; var payload: [Double] }

@Suite("Queues")
struct QueueTests {
    @Test("FIFO order across processes, for Codable items of any size")
    func fifo() throws {
        let queue = try MP.Queue<Job>()
        let jobs = (0..<200).map { Job(id: $0, name: "job \($0)", payload: Swift.Array(repeating: Double($0), count: $0 % 3 == 0 ? 100 : 1)) }
        let producer = MP.Process { for job in jobs { try queue.put(job) } }
        try producer.start()
        var received: [Job] = []
        for _ in jobs { received.append(try queue.get(timeout: 20)) }
        try joinOrKill(producer)
        #expect(received == jobs)
        #expect(queue.isEmpty)
    }

    @Test("many producers, many consumers: every item exactly once")
    func manyToMany() throws {
        let queue = try MP.Queue<Int>(maxsize: 64)
        let results = try MP.Queue<[Int]>()
        let producers = (0..<3).map { p in MP.Process { for i in 0..<5_000 { try queue.put(p * 100_000 + i) } } }
        let consumers = (0..<2).map { _ in
            MP.Process {
                var got: [Int] = []
                while true {
                    let item = try queue.get(timeout: 20)
                    if item < 0 { break }
                    got.append(item)
                }
                try results.put(got)
            }
        }
        for process in producers + consumers { try process.start() }
        for producer in producers { try joinOrKill(producer) }
        for _ in consumers { try queue.put(-1) }
        var all: [Int] = []
        for _ in consumers { all += try results.get(timeout: 20) }
        for consumer in consumers { try joinOrKill(consumer) }
        #expect(all.count == 15_000)
        #expect(Set(all) == Set((0..<3).flatMap { p in (0..<5_000).map { p * 100_000 + $0 } }))
    }

    @Test("timeouts, non-blocking calls, maxsize, sizes and close")
    func boundaries() throws {
        let queue = try MP.Queue<Int>(maxsize: 2)
        #expect(throws: MP.Error.empty) { _ = try queue.getNowait() }
        #expect(throws: MP.Error.empty) { _ = try queue.get(timeout: 0.02) }
        try queue.putNowait(1)
        try queue.put(2)
        #expect(queue.qsize == 2)
        #expect(queue.isFull)
        #expect(throws: MP.Error.full) { try queue.putNowait(3) }
        #expect(throws: MP.Error.full) { try queue.put(3, timeout: 0.02) }
        #expect(throws: MP.Error.negativeTimeout(-1)) { try queue.put(3, timeout: -1) }
        #expect(throws: MP.Error.negativeTimeout(-1)) { _ = try queue.get(timeout: -1) }
        #expect(try queue.get() == 1)
        #expect(!queue.isFull)
        queue.close()
        #expect(throws: MP.Error.queueClosed) { _ = try queue.get() }
        #expect(throws: MP.Error.queueClosed) { try queue.put(1) }

        let small = try MP.Queue<[UInt8]>(capacityBytes: 1024)
        #expect(throws: MP.Error.self) { try small.put([UInt8](repeating: 0, count: 4096)) }
        try small.put([1, 2, 3]) // still usable
        #expect(try small.get() == [1, 2, 3])
    }

    @Test("a process that exits right after put loses nothing")
    func exitRightAfterPut() throws {
        let queue = try MP.Queue<Int>()
        let producer = MP.Process {
            for i in 0..<1_000 { try queue.put(i) }
            _exit(0) // no flush, no goodbye
        }
        try producer.start()
        try joinOrKill(producer)
        var received: [Int] = []
        while let item = try? queue.getNowait() { received.append(item) }
        #expect(received == Swift.Array(0..<1_000))
    }

    @Test("a producer SIGKILLed while putting: a gap-free prefix of its items, others intact, queue usable")
    func producerKilled() throws {
        let queue = try MP.Queue<Int>(maxsize: 1_000)
        let victim = MP.Process { var i = 0; while true { try queue.put(i); i += 1 } }
        let survivor = MP.Process { for i in 0..<20_000 { try queue.put(1_000_000 + i) } }
        try victim.start()
        try survivor.start()
        var fromVictim: [Int] = []
        var fromSurvivor: [Int] = []
        func take() throws -> Bool {
            guard let item = try? queue.get(timeout: 0.5) else { return false }
            if item >= 1_000_000 { fromSurvivor.append(item) } else { fromVictim.append(item) }
            return true
        }
        for _ in 0..<5_000 { _ = try take() }
        try victim.kill() // anywhere: inside put, holding the lock, between puts
        try joinOrKill(victim)
        while fromSurvivor.count < 20_000, try take() {}
        while try take() {}
        try joinOrKill(survivor)
        #expect(fromSurvivor == Swift.Array(1_000_000..<1_020_000))
        #expect(fromVictim == Swift.Array(0..<fromVictim.count), "the victim's items form a gap-free prefix, no duplicates")
        try queue.put(7)
        #expect(try queue.get(timeout: 5) == 7)
    }

    @Test("a holder killed inside the critical section: the item it published counts, the queue works on")
    func killedHoldingTheLock() throws {
        let queue = try MP.Queue<Int>()
        for i in 0..<10 { try queue.put(i) }
        // A producer dies after publishing an item but before counting it.
        let producer = MP.Process {
            let ring = queue.ring
            queue.lockRingForTesting()
            var header: UInt32 = 8
            var value = 10
            let data = UnsafeMutableRawPointer(ring + 1)
            let at = Int(ring.pointee.tail % ring.pointee.capacity)
            data.advanced(by: at).copyMemory(from: &header, byteCount: 4)
            data.advanced(by: at + 4).copyMemory(from: &value, byteCount: 8)
            ring.pointee.tail += 16
            try MP.kill(MP.getpid(), .kill)
        }
        // A consumer dies holding the lock before taking anything.
        let consumer = MP.Process {
            queue.lockRingForTesting()
            try MP.kill(MP.getpid(), .kill)
        }
        try producer.start()
        try joinOrKill(producer)
        try consumer.start()
        try joinOrKill(consumer)
        #expect(producer.exitCode == -9 && consumer.exitCode == -9)
        #expect(queue.qsize == 11)
        var received: [Int] = []
        while let item = try? queue.get(timeout: 0.2) { received.append(item) }
        #expect(received == Swift.Array(0...10))
    }

    @Test("JoinableQueue: join waits for every taskDone; taskDone too often is an error")
    func joinable() throws {
        let queue = try MP.JoinableQueue<Int>()
        for i in 0..<10 { try queue.put(i) }
        #expect(try queue.join(timeout: 0.02) == false)
        let worker = MP.Process {
            for _ in 0..<10 {
                _ = try queue.get(timeout: 20)
                try queue.taskDone()
            }
        }
        try worker.start()
        #expect(try queue.join(timeout: 20))
        try joinOrKill(worker)
        #expect(throws: MP.Error.taskDoneTooOften) { try queue.taskDone() }
    }

    @Test("SimpleQueue puts and gets")
    func simple() throws {
        let queue = try MP.SimpleQueue<String>()
        let p = MP.Process { try queue.put("from child") }
        try p.start()
        #expect(try queue.get(timeout: 20) == "from child")
        try joinOrKill(p)
        #expect(queue.isEmpty)
    }

    @Test("async get waits for an item without blocking the pool; cancellation ends it")
    func asyncGet() async throws {
        let queue = try MP.Queue<Int>()
        let p = MP.Process { try queue.put(42) }
        try p.start()
        #expect(try await queue.get() == 42)
        try await p.join()
        let waiter = Task { try await queue.get() }
        waiter.cancel()
        await #expect(throws: MP.Error.cancelled) { _ = try await waiter.value }
    }

    @Test("30 tasks awaiting get use no thread each and are woken by puts from another process")
    func manyAsyncWaiters() async throws {
        func threads() -> Int {
            let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").first { $0.hasPrefix("Threads:") }.flatMap { Int($0.dropFirst(8).filter(\.isNumber)) } ?? -1
        }
        let queue = try MP.Queue<Int>()
        let gate = try MP.Event()
        let before = threads()
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<30 { group.addTask { try await queue.get() } }
            // Every waiter has looked at the empty queue once it counts as one.
            let deadline = Deadline.after(validSeconds: 20)!
            while queue.ring.pointee.async_waiters < 30 && !deadline.hasPassed { await Task.yield() }
            #expect(queue.ring.pointee.async_waiters == 30)
            #expect(threads() <= before + 2, "no thread per waiter (at most the epoll thread)")
            let producer = MP.Process {
                try gate.wait(timeout: 20)
                for i in 0..<30 { try queue.put(i) }
            }
            try producer.start()
            try gate.set()
            var got: [Int] = []
            for try await value in group { got.append(value) }
            #expect(got.sorted() == Swift.Array(0..<30))
            try joinOrKill(producer)
        }
    }
}

@Suite("No leaks")
struct LeakTests {
    @Test("1,000 create/destroy cycles leave no descriptor, mapping or shared-memory segment behind")
    func cycles() throws {
        func mappings() -> Int { (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8))?.split(separator: "\n").count ?? -1 }
        func segments() -> Int { (try? FileManagerLite.count("/dev/shm")) ?? -1 }
        for _ in 0..<10 { try cycle() } // warm up lazily created state
        let (fds, maps, shm) = (openDescriptorCount(), mappings(), segments())
        for _ in 0..<1_000 { try cycle() }
        // A leak would add about 1,000. The counts may also drop: an earlier
        // test's pool thread can end during the loop (its stack is unmapped).
        #expect(openDescriptorCount() <= fds)
        #expect(mappings() <= maps)
        #expect(segments() == shm)
    }

    private func cycle() throws {
        let queue = try MP.Queue<Int>(capacityBytes: 4096)
        try queue.put(1)
        _ = try queue.get()
        let lock = try MP.Lock()
        try lock.acquire()
        try lock.release()
        let (a, b) = try MP.Pipe()
        try a.send(1)
        _ = try b.recv(Int.self)
        let value = try MP.Value(1)
        value.add(1)
        let shm = try MP.SharedMemory(create: true, size: 64)
        try shm.unlink()
        shm.close()
    }
}

import Foundation
enum FileManagerLite {
    static func count(_ path: String) throws -> Int { try FileManager.default.contentsOfDirectory(atPath: path).count }
}
