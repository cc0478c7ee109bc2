import Glibc
import Foundation
@testable import Multiprocessing
import Testing

@Suite("Shared values, arrays and named shared memory")
struct SharedStateTests {
    @Test("Value: a child's writes are seen by the parent; withLock and atomics")
    func value() throws {
        let value = try MP.Value(1.5)
        let p = MP.Process { value.value = 2.5 }
        try p.start()
        try joinOrKill(p)
        #expect(value.value == 2.5)
        try value.withLock { $0 *= 2 }
        #expect(value.value == 5)

        let counter = try MP.Value(0)
        let adders = (0..<2).map { _ in MP.Process { for _ in 0..<50_000 { counter.add(1) } } }
        for adder in adders { try adder.start() }
        for adder in adders { try joinOrKill(adder) }
        #expect(counter.load() == 100_000)
        #expect(counter.compareExchange(expected: 100_000, desired: 7) == (true, 100_000))
        #expect(counter.compareExchange(expected: 1, desired: 8) == (false, 7))

        let small = try MP.Value(Int32(0))
        #expect(small.add(5) == 5)
        small.store(9)
        #expect(small.load() == 9)
        #expect(small.compareExchange(expected: 9, desired: 1).exchanged)
    }

    @Test("MP.Array: a shared RandomAccessCollection and MutableCollection")
    func array() throws {
        let array = try MP.Array([3, 1, 2])
        #expect(array.count == 3)
        #expect(Swift.Array(array) == [3, 1, 2])
        let p = MP.Process {
            for index in array.indices { array[index] *= 10 }
            try array.withLock { buffer in var elements = buffer; elements.sort() }
        }
        try p.start()
        try joinOrKill(p)
        #expect(array.snapshot == [10, 20, 30])
        #expect(array.reduce(0, +) == 60)
        #expect(array.firstIndex(of: 20) == 1)
        let zeros = try MP.Array(repeating: 0.0, count: 1000)
        #expect(zeros.allSatisfy { $0 == 0 })
        let empty = try MP.Array([Int]())
        #expect(empty.isEmpty)
        #expect(throws: MP.Error.self) { _ = try MP.Array(repeating: 0, count: -1) }
    }

    @Test("SharedMemory: create, attach by name from another process, owner-only, close, unlink")
    func namedSegment() throws {
        let shm = try MP.SharedMemory(create: true, size: 4096)
        defer { try? shm.unlink() }
        #expect(shm.size == 4096)
        var info = stat()
        #expect(stat("/dev/shm/" + shm.name, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        shm.buffer.storeBytes(of: 4242, as: Int.self)

        // An unrelated process (CPython) attaches by name and writes back.
        let name = shm.name
        let script = """
        from multiprocessing import shared_memory, resource_tracker
        s = shared_memory.SharedMemory(name='\(name)')
        resource_tracker.unregister(s._name, 'shared_memory')
        v = int.from_bytes(bytes(s.buf[:8]), 'little')
        s.buf[8:16] = (v + 1).to_bytes(8, 'little')
        s.close()
        """
        let python = Foundation.Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = ["python3", "-c", script]
        try python.run()
        python.waitUntilExit()
        #expect(python.terminationStatus == 0)
        #expect(shm.buffer.load(fromByteOffset: 8, as: Int.self) == 4243)

        let attached = try MP.SharedMemory(name: name)
        #expect(attached.size == 4096)
        #expect(attached.buffer.load(as: Int.self) == 4242)
        attached.close()
        #expect(attached.buffer.count == 0)
        try shm.unlink()
        #expect(throws: MP.Error.notFound(name)) { _ = try MP.SharedMemory(name: name) }
        #expect(throws: MP.Error.notFound(name)) { try shm.unlink() }
    }

    @Test("SharedMemory misuse: bad names, bad sizes, existing names")
    func namedSegmentMisuse() throws {
        #expect(throws: MP.Error.invalidName("a/b")) { _ = try MP.SharedMemory(name: "a/b", create: true, size: 1) }
        #expect(throws: MP.Error.invalidName("")) { _ = try MP.SharedMemory(name: "") }
        #expect(throws: MP.Error.invalidSize(0)) { _ = try MP.SharedMemory(create: true, size: 0) }
        let shm = try MP.SharedMemory(create: true, size: 16)
        defer { try? shm.unlink() }
        #expect(throws: MP.Error.alreadyExists(shm.name)) { _ = try MP.SharedMemory(name: shm.name, create: true, size: 16) }
    }

    @Test("the resource tracker unlinks a segment whose creator was SIGKILLed")
    func trackerCleansUp() throws {
        try asSubreaper {
            let report = TestPipe()
            // The tracker's warning goes to its program's stderr: here a pipe
            // the test reads, so the run's own output stays clean.
            let warnings = TestPipe()
            // A child plays a separate program with its own tracker; it dies
            // by SIGKILL right after creating a segment, never unlinking it.
            guard case .parent(let program) = try MP.fork() else {
                dup2(warnings.writeEnd, STDERR_FILENO)
                warnings.closeRead()
                warnings.closeWrite()
                ResourceTracker.detachForTesting()
                let shm = try! MP.SharedMemory(create: true, size: 128)
                report.write("\(shm.name) \(ResourceTracker.pid)")
                report.closeWrite()
                _ = try? MP.kill(MP.getpid(), .kill)
                MP.exit(1)
            }
            let words = report.readAll().split(separator: " ")
            #expect(try waitOrKill(program) == .signaled(.kill, coreDumped: false))
            let name = try #require(words.first.map(String.init))
            let tracker = try #require(words.last.flatMap { Int32($0) })
            // The tracker, orphaned to us, sees end-of-file, unlinks and exits.
            #expect(try waitOrKill(tracker, within: 20) == .exited(0))
            #expect(throws: MP.Error.notFound(name)) { _ = try MP.SharedMemory(name: name) }
            #expect(warnings.readAll().contains("resource tracker: 1 leaked shared memory segment(s) to clean up at shutdown"))
        }
    }
}

@Suite("RawValue, RawArray, recvBytes(into:)")
struct RawSharedStateTests {
    @Test("RawValue and RawArray are shared with a forked child, without a lock")
    func rawShared() throws {
        let value = try MP.RawValue(0)
        let array = try MP.RawArray(repeating: 0.0, count: 4)
        let child = MP.Process {
            value.value = 42
            for index in array.indices { array[index] = Double(index) * 1.5 }
        }
        try child.start()
        try joinOrKill(child)
        #expect(value.value == 42)
        #expect(array.snapshot == [0, 1.5, 3, 4.5])
        #expect(try MP.RawArray([1, 2, 3]).reduce(0, +) == 6)
        #expect(throws: MP.Error.invalidArgument("array count must be >= 0 (got -1)")) { try MP.RawArray(repeating: 0, count: -1) }
    }

    @Test("RawValue and RawArray cross into a spawned child as a named task's arguments")
    func rawCrossing() throws {
        let value = try MP.RawValue(Int64(0))
        let array = try MP.RawArray(repeating: Int32(0), count: 3)
        let child = MP.getContext(.spawn).Process(target: FillRaw(value: value, array: array))
        try child.start()
        try joinOrKill(child)
        #expect(child.exitCode == 0)
        #expect(value.value == 7)
        #expect(array.snapshot == [1, 2, 3])
    }

    @Test("recvBytes(into:) fills a buffer at an offset; a short buffer gets BufferTooShort with the whole message")
    func receiveInto() throws {
        let (a, b) = try MP.Pipe()
        try b.sendBytes(Array("hello".utf8))
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try a.recvBytes(into: &buffer, offset: 2) == 5)
        #expect(buffer == [0, 0] + Array("hello".utf8) + [0])
        try b.sendBytes(Array("too long for it".utf8))
        #expect(throws: MP.Error.bufferTooShort(Array("too long for it".utf8))) { try a.recvBytes(into: &buffer) }
        #expect(throws: MP.Error.invalidArgument("offset 9 is outside the buffer of 8 bytes")) { try a.recvBytes(into: &buffer, offset: 9) }
    }
}

struct FillRaw: MP.NamedTask {
    var value: MP.RawValue<Int64>
    var array: MP.RawArray<Int32>
    func run() {
        value.value = 7
        for index in array.indices { array[index] = Int32(index + 1) }
    }
}
