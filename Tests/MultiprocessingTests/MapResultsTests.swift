import Glibc
@testable import Multiprocessing
import Testing

/// The address ranges of this process's mappings marked wipe-on-fork
/// (`wf` among the `VmFlags` of /proc/self/smaps).
/// The ranges marked `MADV_WIPEONFORK` that were not marked at `baseline`:
/// other libraries in this test process mark pages too (BoringSSL's fork
/// detection, once TLS or its random numbers were used), and stay marked.
func wipeOnForkRanges(besides baseline: [ClosedRange<UInt>]) -> [ClosedRange<UInt>] {
    wipeOnForkRanges().filter { !baseline.contains($0) }
}

func wipeOnForkRanges() -> [ClosedRange<UInt>] {
    guard let file = fopen("/proc/self/smaps", "r") else {
        Issue.record("cannot read /proc/self/smaps")
        return []
    }
    defer { fclose(file) }
    var flagLines = 0 // an empty answer must come from a parse that saw the flags
    defer { if flagLines == 0 { Issue.record("no VmFlags line in /proc/self/smaps") } }
    var ranges: [ClosedRange<UInt>] = []
    var current: ClosedRange<UInt>?
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fields = text.split(separator: " ", omittingEmptySubsequences: true)
        if let first = fields.first, first.contains("-"), !first.hasSuffix(":") {
            let bounds = first.split(separator: "-")
            if bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16) {
                current = low...(high - 1)
            }
        } else if text.hasPrefix("VmFlags:") {
            flagLines += 1
            if fields.contains(where: { $0.trimmingSuffix() == "wf" }), let current { ranges.append(current) }
        }
    }
    return ranges
}

private extension Substring {
    func trimmingSuffix() -> Substring { self.hasSuffix("\n") ? self.dropLast() : self }
}

@Suite("Map results")
struct MapResultsTests {
    @Test("a map's array is left out of forks while it is filled, and forks normally once handed out")
    func forkExclusion() throws {
        let others = wipeOnForkRanges()
        let count = 1 << 20 // 8 MB
        let pattern = (0..<count).map { $0 &* 7 &+ 1 }
        let middle = count / 2
        let excluded = ForkExcludedArray<Int>(count: count)
        pattern.withUnsafeBytes { excluded.copy(0..<count, from: UnsafeMutableRawPointer(mutating: $0.baseAddress!)) }
        let address = UInt(bitPattern: excluded.bytes.baseAddress! + middle * 8)
        #expect(wipeOnForkRanges().contains { $0.contains(address) })

        // A child forked now sees zeros there, not the parent's data.
        let bytes = excluded.bytes
        let during = MP.Process { exit(bytes.load(fromByteOffset: middle * 8, as: Int.self) == 0 ? 0 : 1) }
        try during.start()
        try joinOrKill(during)
        #expect(during.exitCode == 0)

        let array = excluded.take()
        #expect(array == pattern)
        #expect(wipeOnForkRanges(besides: others).isEmpty)
        let after = MP.Process { exit(array[middle] == pattern[middle] && array.last == pattern.last ? 0 : 1) }
        try after.start()
        try joinOrKill(after)
        #expect(after.exitCode == 0)
    }

    @Test("no memory stays marked after a map succeeds, fails, is terminated or is refused; children see a returned array whole")
    func noMarkLeft() throws {
        let others = wipeOnForkRanges()
        try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> Void in
            let squares = try pool.map(0..<1_000_000) { $0 * $0 }
            #expect(wipeOnForkRanges(besides: others).isEmpty)
            #expect(throws: MP.Error.taskFailed(type: "PoolBoom", description: "boom")) {
                _ = try pool.map(0..<1_000_000) { (x: Int) throws -> Int in if x == 999_999 { throw PoolBoom() }; return x }
            }
            #expect(wipeOnForkRanges(besides: others).isEmpty)
            let child = MP.Process { exit(squares[777_777] == 777_777 * 777_777 && squares[999_999] == 999_999 * 999_999 ? 0 : 1) }
            try child.start()
            try joinOrKill(child)
            #expect(child.exitCode == 0)
        }
        let pool = try MP.Pool(processes: 2)
        let gate = TestPipe()
        let pending = pool.mapAsync(0..<1_000_000, chunksize: 500_000) { (x: Int) -> Double in
            if x == 0 { gate.awaitSignal() }
            return Double(x)
        }
        #expect(!wipeOnForkRanges(besides: others).isEmpty, "marked while the map runs")
        pool.terminate()
        try pool.join()
        #expect(throws: MP.Error.terminated) { _ = try pending.get(timeout: 20) }
        #expect(wipeOnForkRanges(besides: others).isEmpty)
        // Refused before any worker exists: the array allocated for it is unmarked too.
        #expect(throws: MP.Error.terminated) { _ = try pool.map(0..<1_000_000) { $0 } }
        #expect(wipeOnForkRanges(besides: others).isEmpty)
    }
}
