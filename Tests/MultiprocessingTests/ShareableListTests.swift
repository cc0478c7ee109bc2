import Testing
@testable import Multiprocessing
import Glibc

/// Attaches a ShareableList by name in CPython, prints it, writes into it.
let pythonAttach = """
import sys
from multiprocessing import shared_memory, resource_tracker
sl = shared_memory.ShareableList(name=sys.argv[1])
print(repr(list(sl)), flush=True)
sl[0] = 'py'
sl[1] = 2**62
sl[3] = None
sl[4] = 0.25
sl[5] = False
sl.shm.close()
# The segment is the Swift side's: CPython's tracker must not unlink it at exit.
resource_tracker.unregister('/' + sys.argv[1], 'shared_memory')
"""

/// Creates a ShareableList in CPython, prints its name, waits for a line, prints it again.
let pythonCreate = """
import sys
from multiprocessing import shared_memory
sl = shared_memory.ShareableList([7, -1.5, 'héllo', b'ab\\x00c', True, None, 'x' * 20])
print(sl.shm.name, flush=True)
sys.stdin.readline()
print(repr(list(sl)), flush=True)
sl.shm.close()
sl.shm.unlink()
"""

@Suite("ShareableList in CPython's layout", .serialized, .enabled(if: python3Available, "python3 is not installed"))
struct ShareableListTests {
    @Test("items print as CPython's repr prints them (escapes, quotes, two hex digits)")
    func reprLikeCPython() {
        typealias Item = MP.ShareableList.Item
        let cases: [(Item, String)] = [
            (.bytes([0, 1]), #"b'\x00\x01'"#), (.bytes(Array("it's".utf8)), #"b"it's""#),
            (.bytes(Array("'\"".utf8)), #"b'\'"'"#), (.bytes([0x5c]), #"b'\\'"#),
            (.bytes([0xff, 0x7f, 0x0a]), #"b'\xff\x7f\n'"#), (.string("a'b"), #""a'b""#),
            (.string("tab\t"), #"'tab\t'"#), (.string("\u{85}é"), #"'\x85é'"#),
        ]
        for (item, python) in cases { #expect(item.description == python) }
    }

    @Test("a list made here is read and written by CPython")
    func cpythonAttachesOurs() throws {
        let list = try MP.ShareableList(["hello", 42, 3.5, true, nil, .bytes([1, 2, 3])])
        defer { try? list.unlink() }
        #expect(list.format == "8sqdxxxxxxx?xxxxxx?x8s")
        guard let peer = PythonPeer(pythonAttach, [list.name]) else { return }
        #expect(peer.line() == "['hello', 42, 3.5, True, None, b'\\x01\\x02\\x03']")
        #expect(peer.finish() == 0)
        #expect(Array(list) == ["py", .int(1 << 62), 3.5, nil, 0.25, false])
    }

    @Test("a list made by CPython is read and written here")
    func weAttachCPythons() throws {
        guard let peer = PythonPeerWithInput(pythonCreate) else { return }
        let name = try #require(peer.line())
        let list = try MP.ShareableList(name: name)
        #expect(Array(list) == [7, -1.5, "héllo", .bytes([0x61, 0x62, 0, 0x63]), true, nil, .string(String(repeating: "x", count: 20))])
        try list.set(0, to: "seven")
        try list.set(2, to: 1.25)
        try list.set(-1, to: .bytes(Array("short".utf8)))
        #expect(throws: MP.Error.itemTooLarge(index: 2, size: 9, capacity: 8)) { try list.set(2, to: "123456789") }
        #expect(throws: MP.Error.indexOutOfRange(7, count: 7)) { try list.set(7, to: 1) }
        peer.send("go\n")
        #expect(peer.line() == "['seven', -1.5, 1.25, b'ab\\x00c', True, None, b'short']")
        #expect(peer.finish() == 0)
    }

    @Test("limits and malformed segments are clear errors")
    func limits() throws {
        let list = try MP.ShareableList([1, "abc"])
        defer { try? list.unlink() }
        #expect(throws: MP.Error.itemTooLarge(index: 1, size: 9, capacity: 8)) { try list.set(1, to: "abcdefghi") }
        try list.set(1, to: "abcdefgh")
        #expect(list[1] == "abcdefgh")
        #expect(try list.item(at: -2) == 1)
        #expect(list.count(of: 1) == 1 && list.index(of: "abcdefgh") == 1 && list.index(of: 9) == nil)
        let plain = try MP.SharedMemory(create: true, size: 64)
        defer { try? plain.unlink() }
        plain.buffer.storeBytes(of: Int64(1_000_000), as: Int64.self)
        #expect(throws: MP.Error.self) { try MP.ShareableList(name: plain.name) }
        let empty = try MP.ShareableList([])
        defer { try? empty.unlink() }
        #expect(empty.isEmpty)
    }
}

/// A Python peer whose standard input the test writes to.
final class PythonPeerWithInput {
    private let peer: PythonPeer
    private let input: Int32

    init?(_ script: String) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return nil }
        // The child reads fds[0] as its stdin: dup it onto 0 around the spawn.
        let saved = dup(STDIN_FILENO)
        dup2(fds[0], STDIN_FILENO)
        let started = PythonPeer(script, [])
        dup2(saved, STDIN_FILENO)
        close(saved)
        close(fds[0])
        guard let started else { close(fds[1]); return nil }
        peer = started
        input = fds[1]
    }

    func line(within seconds: Double = 20) -> String? { peer.line(within: seconds) }

    func send(_ text: String) {
        var bytes = Array(text.utf8)
        _ = write(input, &bytes, bytes.count)
    }

    func finish() -> Int32 {
        close(input)
        return peer.finish()
    }
}

@Suite("SharedMemoryManager", .serialized)
struct SharedMemoryManagerTests {
    @Test("segments and lists made through it are unlinked at shutdown")
    func shutdownUnlinks() throws {
        var names: [String] = []
        try MP.SharedMemoryManager.with { smm in
            let shm = try smm.SharedMemory(size: 128)
            let list = try smm.ShareableList([1, "two"])
            names = [shm.name, list.name]
            #expect(try MP.ShareableList(name: list.name)[1] == "two")
        }
        for name in names { #expect(throws: MP.Error.notFound(name)) { try MP.SharedMemory(name: name) } }
        #expect(!hasAnyChild())
        let manager = try MP.SharedMemoryManager()
        manager.shutdown()
        #expect(throws: MP.Error.closed("the SharedMemoryManager is shut down")) { try manager.SharedMemory(size: 8) }
    }

    @Test("they are unlinked when the owner is SIGKILLed")
    func ownerDeath() throws {
        try asSubreaper {
            let report = TestPipe()
            let owner = MP.Process {
                let smm = try MP.SharedMemoryManager()
                let shm = try smm.SharedMemory(size: 64)
                report.write(shm.name + "\n")
                try MP.kill(MP.getpid(), .kill)
            }
            try owner.start()
            let text = report.readAll()
            try joinOrKill(owner)
            let name = try #require(text.split(separator: "\n").first.map(String.init))
            // The keeper sees its owner gone, unlinks, exits; it comes back to us (subreaper).
            try reapAdoptedOrphans()
            #expect(throws: MP.Error.notFound(name)) { try MP.SharedMemory(name: name) }
        }
    }
}
