import Glibc
@testable import Multiprocessing
import Testing
import MultiprocessingPlatform

/// At the test process's exit, kills any child a failed test left running,
/// so the exit handling (which joins children) cannot wait forever. Registered
/// after the library's own exit handler, so it runs first.
private let leftoverChildrenAreKilledAtExit: Void = {
    atexit { for child in MP.activeChildren() { try? child.kill() } }
}()

/// Joins `process` within `seconds`. A child still running then is killed by
/// its pid, reaped, and the test fails: no test can hang or leave a child.
func joinOrKill(_ process: MP.Process, within seconds: Double = 20,
                sourceLocation: SourceLocation = #_sourceLocation) throws {
    leftoverChildrenAreKilledAtExit
    if try process.join(timeout: seconds) { return }
    Issue.record("process \(process.name) (pid \(process.pid ?? -1)) still running after \(seconds) s: killed", sourceLocation: sourceLocation)
    try process.kill()
    try process.join()
}

/// Waits for a raw child (from `MP.fork()`) within `seconds`, killing it on timeout.
func waitOrKill(_ pid: Int32, within seconds: Double = 20,
                sourceLocation: SourceLocation = #_sourceLocation) throws -> MP.ExitStatus {
    if let pidfd = try? Sys.pidfdOpen(pid) {
        defer { close(pidfd) }
        if try MP.wait(for: [pidfd], timeout: seconds).isEmpty {
            Issue.record("child \(pid) still running after \(seconds) s: killed", sourceLocation: sourceLocation)
            try MP.kill(pid, .kill)
        }
    }
    return try MP.waitpid(pid)!.status
}

/// A pipe for tests to pass facts from a child back to the parent.
final class TestPipe: @unchecked Sendable {
    private(set) var readEnd: Int32
    private(set) var writeEnd: Int32

    init() {
        (readEnd, writeEnd) = try! Sys.pipe()
    }

    deinit {
        closeRead()
        closeWrite()
    }

    func closeRead() { if readEnd >= 0 { close(readEnd); readEnd = -1 } }
    func closeWrite() { if writeEnd >= 0 { close(writeEnd); writeEnd = -1 } }

    func write(_ text: String) {
        var text = text
        text.withUTF8 { buffer in _ = Glibc.write(writeEnd, buffer.baseAddress, buffer.count) }
    }

    func write(_ value: Int32) {
        var value = value
        _ = Glibc.write(writeEnd, &value, 4)
    }

    /// Reads until EOF, within `seconds` (then fails and returns what came).
    func readAll(within seconds: Double = 20, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        closeWrite()
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            guard (try? MP.wait(for: [readEnd], timeout: seconds))?.isEmpty == false else {
                Issue.record("no EOF on the pipe within \(seconds) s", sourceLocation: sourceLocation)
                break
            }
            let count = read(readEnd, &buffer, buffer.count)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads one Int32 within `seconds`; nil on EOF or timeout.
    func readInt32(within seconds: Double = 20) -> Int32? {
        guard (try? MP.wait(for: [readEnd], timeout: seconds))?.isEmpty == false else { return nil }
        var value: Int32 = 0
        return read(readEnd, &value, 4) == 4 ? value : nil
    }

    /// Blocks the caller (a child) until the parent writes a byte or closes.
    /// The waiter first closes its own copy of the write end: if the test fails
    /// and drops the pipe, the child sees end-of-file and exits, instead of
    /// waiting forever (and holding up the test process's exit).
    func awaitSignal() {
        closeWrite()
        var byte: UInt8 = 0
        _ = read(readEnd, &byte, 1)
    }

    func signal() {
        var byte: UInt8 = 1
        _ = Glibc.write(writeEnd, &byte, 1)
    }
}

/// Open descriptors of this process.
func openDescriptorCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}

/// The state letter of `pid` in /proc (`Z` for a zombie), or nil if it is gone.
func processState(_ pid: Int32) -> Character? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let close = line.lastIndex(of: ")") else { return nil }
    return line[line.index(close, offsetBy: 2)]
}

/// Whether this process has any child, running or a zombie, other than the
/// library's helpers (which live as long as the program, by design): every
/// thread's `/proc/self/task/TID/children`.
func hasAnyChild(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    let others = childPids().subtracting(persistentHelpers())
    for pid in others {
        let command = ((try? String(contentsOfProcFile: "/proc/\(pid)/cmdline")) ?? "?").map { $0 == "\0" ? " " : $0 }.reduce(into: "") { $0.append($1) }
        Issue.record("child \(pid) (\(command), state \(processState(pid).map(String.init) ?? "gone")) is still here", sourceLocation: sourceLocation)
    }
    return !others.isEmpty
}


/// As a subreaper: waits for (and reaps) every child this process did not
/// start itself, killing any that is still running after `seconds`.
func reapAdoptedOrphans(within seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let ours = Set(MP.activeChildren().compactMap(\.pid)).union(persistentHelpers())
    for pid in childPids().subtracting(ours) {
        _ = try waitOrKill(pid, within: seconds, sourceLocation: sourceLocation)
    }
}

/// The library's helpers that live as long as the program: the forkserver and the resource tracker.
func persistentHelpers() -> Set<Int32> {
    Set([ForkServerClient.serverPid, ResourceTracker.pid == 0 ? nil : ResourceTracker.pid].compactMap { $0 })
}

func childPids() -> Set<Int32> {
    var pids = Set<Int32>()
    guard let dir = opendir("/proc/self/task") else { return pids }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard Int(tid) != nil, let file = fopen("/proc/self/task/\(tid)/children", "r") else { continue }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 65536)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            for field in line.split(whereSeparator: { $0 == " " || $0 == "\n" }) { if let pid = Int32(field) { pids.insert(pid) } }
        }
    }
    return pids
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Whether `error` is an `MP.Error` of `code` whose message contains each of `texts`.
func isError(_ error: any Error, _ code: MP.Error.Code, containing texts: String...) -> Bool {
    guard let error = error as? MP.Error, error.code == code else { return false }
    return texts.allSatisfy { error.message.contains($0) }
}
