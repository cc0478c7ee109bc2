import Glibc
@testable import Multiprocessing
import Testing

private final class Node: Codable {
    let next: Node?
    init(next: Node?) { self.next = next }
}

private struct Wide: Codable, Equatable {
    var signed: Int128
    var unsigned: UInt128
    var list: [Int128]
    var optional: UInt128?
}

/// Runs `body` in a child within `seconds`: a trap (SIGILL), a crash or a hang
/// fails the test instead of taking the test process down with it.
private func inChild(within seconds: Double = 20, sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: @escaping () throws -> Void) throws {
    let p = MP.Process(target: body)
    try p.start()
    try joinOrKill(p, within: seconds, sourceLocation: sourceLocation)
    #expect(p.exitCode == 0, "the scenario ended with \(String(describing: p.exitStatus))", sourceLocation: sourceLocation)
}

@Suite("Bad input and absurd arguments: a clear error, never a trap, a hang or corruption")
struct BadInputTests {
    @Test("Int128 and UInt128 cross the wire, alone and inside other values")
    func wideIntegers() throws {
        let value = Wide(signed: .min + 3, unsigned: .max - 5, list: [1, -(1 << 100), .max], optional: 1 << 90)
        #expect(try MP.decode(Wide.self, from: MP.encode(value)) == value)
        #expect(try MP.decode(Int128.self, from: MP.encode(Int128.min)) == .min)
        let (a, b) = try MP.Pipe()
        try a.send(value)
        #expect(try b.recv(Wide.self) == value)
    }

    @Test("a length over 4 GiB is refused, never cut to 32 bits")
    func lengthsOver32Bits() throws {
        let count = (1 << 32) + 8
        // Untouched pages: the refusal must come before anything is copied.
        let huge = [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        #expect {
            _ = try MP.encode(huge)
        } throws: { error in
            (error as? MP.Error).map { "\($0)".contains("32-bit lengths") } ?? false
        }
        let queue = try MP.Queue<[UInt8]>(capacityBytes: 1 << 16)
        #expect(throws: MP.Error.self) { try queue.put(huge) }
        #expect(queue.qsize == 0, "nothing was put")
        var writer = ByteWriter()
        writer.writeLength(Int(UInt32.max) + 2)
        #expect(throws: MP.Error.self) { try writer.checkLengths([Int].self) }
    }

    @Test("10,000 levels of nesting are refused on both sides, without overflowing the stack")
    func deepNesting() throws {
        var bytes: [UInt8] = []
        for _ in 0..<10_000 { bytes += [4] + Swift.Array("next".utf8) + [1] }
        bytes += [4] + Swift.Array("next".utf8) + [0]
        let decoded = Result { try MP.decode(Node.self, from: bytes) }
        guard case .failure(let error) = decoded else { Issue.record("decoded 10,000 levels"); return }
        #expect("\(error)".contains("nested deeper than 512"))
        var chain: Node? = nil
        for _ in 0..<10_000 { chain = Node(next: chain) }
        #expect(throws: MP.Error.self) { try MP.encode(chain!) }
        // What the limit allows still round-trips.
        var shallow: Node? = nil
        for _ in 0..<100 { shallow = Node(next: shallow) }
        #expect(try MP.decode(Node.self, from: MP.encode(shallow!)).next != nil)
    }

    @Test("a dictionary's claimed count reserves nothing: memory grows with what is decoded")
    func dictionaryClaimedCount() throws {
        // 60 MiB of input claiming 60 million entries, decoded under an address-space
        // limit a 4 GiB reservation would break (the allocation would trap).
        try inChild(within: 60) {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
            let mapped = Self.mappedBytes()
            limit.rlim_cur = rlim_t(mapped + (1 << 30))
            guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { MP.exit(3) }
            var bytes = [UInt8](repeating: 0xAB, count: 60 << 20)
            withUnsafeBytes(of: UInt32(60_000_000).littleEndian) { for i in 0..<4 { bytes[i] = $0[i] } }
            do {
                _ = try MP.decode([Int: Int].self, from: bytes)
                MP.exit(2)
            } catch {}
        }
    }

    /// The process's mapped address space (VmSize), in bytes.
    static func mappedBytes() -> Int {
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(fd, &buffer, buffer.count)
        let text = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
        let pages = Int(text.split(separator: " ").first ?? "") ?? 0
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test("absurd sizes throw instead of trapping")
    func absurdSizes() throws {
        #expect(throws: MP.Error.self) { _ = try MP.Queue<Int>(capacityBytes: Int.max) }
        #expect(throws: MP.Error.self) { _ = try MP.Queue<Int>(capacityBytes: -1) }
        #expect(throws: MP.Error.self) { _ = try MP.Queue<Int>(maxsize: -1) }
        #expect(throws: MP.Error.self) { _ = try MP.Array(repeating: 0, count: Int.max / 4) }
        #expect(throws: MP.Error.self) { _ = try MP.Array(repeating: UInt8(0), count: Int.max) }
    }

    @Test("a shared-memory name with a NUL byte is refused, not cut")
    func nulInSharedMemoryName() throws {
        #expect(throws: MP.Error.invalidName("a\u{0}b")) {
            _ = try MP.SharedMemory(name: "a\u{0}b", create: true, size: 16)
        }
    }

    @Test("infinite and huge timeouts wait without limit; negative and NaN ones are refused")
    func infiniteTimeouts() throws {
        let queue = try MP.Queue<Int>()
        let joinable = try MP.JoinableQueue<Int>()
        let event = try MP.Event()
        let semaphore = try MP.Semaphore(value: 0)
        let lock = try MP.Lock()
        let condition = try MP.Condition(lock: lock)
        let ready = try MP.Value(Int32(0))
        try inChild {
            let producer = MP.Process {
                try queue.put(1)
                try queue.put(2)
                try event.set()
                try semaphore.release()
                try lock.withLock { ready.store(1); try condition.notifyAll() }
            }
            try lock.acquire()
            try producer.start()
            // The producer is blocked on the lock until this wait releases it.
            _ = try condition.wait(timeout: .infinity)
            try lock.release()
            guard try queue.get(timeout: .infinity) == 1, try queue.get(timeout: 1e300) == 2 else { MP.exit(2) }
            guard try event.wait(timeout: .infinity), try semaphore.acquire(timeout: 1e300) == .acquired else { MP.exit(3) }
            guard try lock.acquire(timeout: .infinity) == .acquired else { MP.exit(4) }
            try lock.release()
            guard try joinable.join(timeout: .infinity) else { MP.exit(5) }
            guard try MP.Barrier(parties: 1, timeout: .infinity).wait() == 0 else { MP.exit(6) }
            guard try producer.join(timeout: .infinity) else { MP.exit(7) }
            guard try MP.wait(for: [], timeout: 1e300).isEmpty else { MP.exit(8) }
        }
        #expect(throws: MP.Error.negativeTimeout(-1)) { try queue.get(timeout: -1) }
        #expect(throws: MP.Error.self) { try event.wait(timeout: .nan) }
        #expect(throws: MP.Error.self) { _ = try MP.Barrier(parties: 2, timeout: -1) }
        #expect(throws: MP.Error.self) { _ = try MP.Pipe().0.poll(timeout: -.infinity) }
    }
}
