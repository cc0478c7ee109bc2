import Testing
@testable import Multiprocessing
import MultiprocessingPlatform
import Glibc

// The pickle codec: against every CPython of this machine (the system's
// python3 and pyenv's 3.8-3.13), both directions, through real Listener and
// Client pairs; refusals of everything that would run code; a fuzz run.

/// CPython interpreters to try: pyenv's 3.8-3.13 where present, else the system's python3.
let pythonInterpreters: [String] = {
    let root = (getenv("PYENV_ROOT").map { String(cString: $0) }) ?? ((getenv("HOME").map { String(cString: $0) } ?? "/root") + "/.pyenv")
    let found = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"].compactMap { minor -> String? in
        guard let dir = opendir(root + "/versions") else { return nil }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(minor + "."), access(root + "/versions/\(name)/bin/python3", X_OK) == 0 { return root + "/versions/\(name)/bin/python3" }
        }
        return nil
    }
    return found.isEmpty && python3Available ? ["python3"] : found
}()

/// Every shared type, as Python writes it (NaN aside: it equals nothing).
let sharedObjectPython = """
import collections
SHARED = [1, 2]
OBJ = {"shared": [SHARED, SHARED], "none": None, "t": True, "f": False, "small": 7, "neg": -300, "big": 2**100, "nbig": -(2**70),
       "i64": 2**63 - 1, "float": 1.5, "inf": float("inf"), "str": "h\\u00e9llo \\U0001F600", "empty": "",
       "bytes": b"\\x00\\xff'", "ba": bytearray(b"ab"), "list": [1, [2, 3], []], "tuple": (1, "x"),
       "dict": {"a": {"b": []}}, "set": {1, 2}, "fs": frozenset({"x"}), "od": collections.OrderedDict(z=1)}
"""

/// The same value here.
let sharedObjectSwift: MP.PickleValue = .dict([
    .init(.string("shared"), .list([.list([.int(1), .int(2)]), .list([.int(1), .int(2)])])),
    .init(.string("none"), .none), .init(.string("t"), .bool(true)), .init(.string("f"), .bool(false)),
    .init(.string("small"), .int(7)), .init(.string("neg"), .int(-300)),
    .init(.string("big"), .bigInt([UInt8](repeating: 0, count: 12) + [0x10])),
    .init(.string("nbig"), .bigInt([UInt8](repeating: 0, count: 8) + [0xc0])),
    .init(.string("i64"), .int(Int64.max)), .init(.string("float"), .float(1.5)), .init(.string("inf"), .float(.infinity)),
    .init(.string("str"), .string("héllo 😀")), .init(.string("empty"), .string("")),
    .init(.string("bytes"), .bytes([0, 0xff, 0x27])), .init(.string("ba"), .bytearray([0x61, 0x62])),
    .init(.string("list"), .list([.int(1), .list([.int(2), .int(3)]), .list([])])),
    .init(.string("tuple"), .tuple([.int(1), .string("x")])),
    .init(.string("dict"), .dict([.init(.string("a"), .dict([.init(.string("b"), .list([]))]))])),
    .init(.string("set"), .set([.int(1), .int(2)])), .init(.string("fs"), .frozenset([.string("x")])),
    .init(.string("od"), .dict([.init(.string("z"), .int(1))])),
])

/// A job as a Swift type: what a CPython peer's dict decodes into.
struct PickledJob: Codable, Equatable {
    var job: Int
    var args: [MP.PickleValue]
    var tags: Set<String>
    var data: [UInt8]
    var score: Double?
    var limits: [String: Int64]
}

let samplePickledJob = PickledJob(job: 7, args: [.float(1.5), .string("x")], tags: ["a", "b"], data: [1, 2, 255], score: nil,
                                  limits: ["memory": 1 << 40, "cpu": -1])

@Suite("Pickle codec")
struct PickleCodecTests {
    @Test("every shared type round-trips through the encoder and the decoder, protocols 4 and 5")
    func roundTrip() throws {
        for version in [4, 5] {
            let bytes = try MP.PickleEncoder(protocolVersion: version).encode(sharedObjectSwift)
            #expect(try MP.PickleDecoder().decode(MP.PickleValue.self, from: bytes) == sharedObjectSwift)
            let job = try MP.PickleEncoder(protocolVersion: version).encode(samplePickledJob)
            #expect(try MP.PickleDecoder().decode(PickledJob.self, from: job) == samplePickledJob)
        }
        let nan = try MP.PickleDecoder().pickleValue(from: try MP.PickleEncoder().encode(Double.nan))
        guard case .float(let value) = nan else { Issue.record("NaN came back as \(nan)"); return }
        #expect(value.isNaN)
        #expect(try MP.PickleDecoder().decode(UInt64.self, from: try MP.PickleEncoder().encode(UInt64.max)) == .max)
        #expect(try MP.PickleDecoder().decode([Int].self, from: try MP.PickleEncoder().encode([Int]())) == [])
    }

    @Test("a Python int that does not fit, a wrong shape, a missing key: clear errors naming where")
    func typedErrors() throws {
        let big = try MP.PickleEncoder().encode(MP.PickleValue.bigInt([UInt8](repeating: 0, count: 12) + [0x10]))
        #expect(throws: MP.Error.doesNotFit(path: "", type: "Int", value: "of 104 bits")) { try MP.PickleDecoder().decode(Int.self, from: big) }
        let small = try MP.PickleEncoder().encode(["x": 300])
        #expect(throws: MP.Error.doesNotFit(path: "x", type: "UInt8", value: "300")) { try MP.PickleDecoder().decode([String: UInt8].self, from: small) }
        #expect(throws: MP.Error.typeMismatch(path: "x", expected: "a str", found: "int")) { try MP.PickleDecoder().decode([String: String].self, from: small) }
        #expect(throws: MP.Error.missingKey(path: "", key: "job")) { try MP.PickleDecoder().decode(PickledJob.self, from: small) }
        #expect(throws: MP.Error.unsupported("protocol 3 (4 and 5 are written)")) { try MP.PickleEncoder(protocolVersion: 3).encode(1) }
    }

    @Test("a billion-laughs pickle, deep nesting, a huge claimed length, a recursive list: refused, nothing allocated")
    func bombs() throws {
        // EMPTY_LIST MEMOIZE, then 30 levels of a list holding the previous one ten times.
        var laughs: [UInt8] = [0x80, 0x04, 0x5d, 0x94, 0x30] // EMPTY_LIST, MEMOIZE (memo 0), POP
        for level in 0..<30 {
            laughs += [0x28] + [UInt8](repeating: 0, count: 10).flatMap { _ in [0x6a] + withUnsafeBytes(of: UInt32(level).littleEndian) { Array($0) } }
            laughs += [0x74, 0x94] // TUPLE, MEMOIZE (memo level + 1)
            if level < 29 { laughs.append(0x30) } // POP
        }
        laughs.append(0x2e)
        #expect(throws: MP.Error.self) { _ = try MP.PickleDecoder().pickleValue(from: laughs) }
        do { _ = try MP.PickleDecoder().pickleValue(from: laughs) } catch {
            guard case .tooLarge = error else { Issue.record("unexpected \(error)"); return }
        }
        let deep: [UInt8] = [0x80, 0x04] + [UInt8](repeating: 0x5d, count: 600) + [UInt8](repeating: 0x61, count: 599) + [0x2e]
        #expect(throws: MP.Error.tooLarge("nested deeper than 512")) { _ = try MP.PickleDecoder().pickleValue(from: deep) }
        let claim: [UInt8] = [0x80, 0x04, 0x8e] + withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Array($0) } + [0x2e]
        #expect(throws: MP.Error.malformed("a length of 1099511627776 bytes where 1 remain")) { _ = try MP.PickleDecoder().pickleValue(from: claim) }
        let recursive: [UInt8] = [0x80, 0x04, 0x5d, 0x94, 0x68, 0x00, 0x61, 0x2e] // l = []; l.append(l)
        #expect(throws: MP.Error.self) { _ = try MP.PickleDecoder().pickleValue(from: recursive) }
    }

    @Test("fuzz: random bytes, every truncation and byte flips of real pickles: no crash, no hang, only PickleErrors")
    func fuzz() throws {
        var generator = SystemRandomNumberGenerator()
        var inputs: [[UInt8]] = []
        for _ in 0..<20_000 { inputs.append((0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }) }
        let seeds = try [4, 5].map { try MP.PickleEncoder(protocolVersion: $0).encode(sharedObjectSwift) }
            + [try MP.PickleEncoder().encode(samplePickledJob)]
        for seed in seeds {
            for length in 0..<seed.count { inputs.append(Array(seed[..<length])) }
            for _ in 0..<3_000 {
                var flipped = seed
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    flipped[Int.random(in: 0..<flipped.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                inputs.append(flipped)
            }
        }
        let began = Deadline.now
        var refused = 0
        for input in inputs {
            do { _ = try MP.PickleDecoder().pickleValue(from: input) } catch { refused += 1 }
        }
        #expect(refused > inputs.count / 2)
        #expect(Double(Deadline.now - began) / 1e9 < 60, "\(inputs.count) inputs took too long")
    }
}

/// Prints `hex` of `pickle.dumps(OBJ, protocol=p)` for p in 2..5, then the refused objects' pickles.
let cpythonPickles = sharedObjectPython + "\n" + """
import pickle, sys, os, dataclasses, datetime
for p in (2, 3, 4, 5):
    print(pickle.dumps(OBJ, protocol=p).hex())
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[1],))
@dataclasses.dataclass
class Point:
    x: int
print(pickle.dumps(Evil(), protocol=4).hex())
print(pickle.dumps(Point(1), protocol=4).hex())
print(pickle.dumps(datetime.datetime(2020, 1, 1), protocol=4).hex())
print(pickle.dumps(Point(1), protocol=2).hex())
print(pickle.dumps([float("nan"), float("-inf")], protocol=4).hex())
"""

/// Reads our pickle (hex, argv[1]) and says whether it equals OBJ.
let cpythonLoads = sharedObjectPython + "\n" + """
import pickle, sys
value = pickle.loads(bytes.fromhex(sys.argv[1]))
import math
special = pickle.loads(bytes.fromhex(sys.argv[2]))
assert math.isnan(special[0]) and special[1] == float("-inf"), special
print("equal" if value == OBJ and type(value["ba"]) is bytearray and type(value["fs"]) is frozenset and type(value["tuple"]) is tuple else "differs " + repr(value))
"""

/// A CPython Listener: receives one object, answers with a reply built from it; or a Client doing the same the other way.
let cpythonPeerScript = """
import sys
from multiprocessing.connection import Listener, Client
key = b'secret'
def reply(conn):
    job = conn.recv()
    conn.send({"job": job["job"] + 1, "args": job["args"] + ["from python"], "tags": set(job["tags"]) | {"py"},
               "data": bytes(job["data"]) + b"!", "score": 0.5, "limits": job["limits"]})
    try:
        conn.recv()
    except EOFError:
        pass
if sys.argv[1] == 'listen':
    with Listener(('127.0.0.1', 0), authkey=key) as listener:
        print(listener.address[1], flush=True)
        with listener.accept() as conn:
            reply(conn)
    print("served", flush=True)
else:
    with Client(('127.0.0.1', int(sys.argv[2])), authkey=key) as conn:
        conn.send({"job": 7, "args": [1.5, "x"], "tags": {"a", "b"}, "data": b"\\x01\\x02\\xff", "score": None,
                   "limits": {"memory": 2**40, "cpu": -1}})
        answer = conn.recv()
        print("answer", answer["job"], answer["data"].hex(), sorted(answer["tags"]), flush=True)
"""

@Suite("Pickle codec against real CPython peers", .serialized, .enabled(if: !pythonInterpreters.isEmpty, "no python3"))
struct PickleInteropTests {
    @Test("CPython's pickles of every shared type, protocols 2-5, decode the same; classes and calls are refused, nothing runs",
          arguments: pythonInterpreters)
    func decodesCPython(python: String) throws {
        let marker = "/tmp/mp-pickle-marker-\(getpid())"
        guard let peer = PythonPeer(cpythonPickles, [marker], python: python) else { return }
        var lines: [String] = []
        while let line = peer.line() { lines.append(line) }
        #expect(peer.finish() == 0)
        try #require(lines.count == 9, "\(python) printed \(lines.count) lines")
        for (index, line) in lines.prefix(4).enumerated() {
            let value = try MP.PickleDecoder().pickleValue(from: hexBytes(line))
            #expect(value == sharedObjectSwift, "protocol \(index + 2) from \(python)")
        }
        let refusals = ["posix.system", "__main__.Point", "datetime.datetime", "__main__.Point"]
        for (line, name) in zip(lines[4..<8], refusals) {
            do {
                _ = try MP.PickleDecoder().pickleValue(from: hexBytes(line))
                Issue.record("a pickle of \(name) decoded")
            } catch {
                guard error.code == .refused else { Issue.record("unexpected \(error)"); continue }
                #expect(error.message.contains(name), "\(error)")
            }
        }
        #expect(access(marker, F_OK) != 0, "nothing ran")
        let special = try MP.PickleDecoder().decode([Double].self, from: hexBytes(lines[8]))
        #expect(special.count == 2 && special[0].isNaN && special[1] == -.infinity)
        // CPython's own pickles, bytes flipped: no crash, no hang, only PickleErrors or values.
        var generator = SystemRandomNumberGenerator()
        for line in lines.prefix(8) {
            let seed = hexBytes(line)
            for _ in 0..<1_000 {
                var flipped = seed
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    flipped[Int.random(in: 0..<flipped.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                _ = try? MP.PickleDecoder().pickleValue(from: flipped)
            }
        }
    }

    @Test("our pickles of every shared type load equal in CPython", arguments: pythonInterpreters)
    func cpythonLoadsOurs(python: String) throws {
        for version in [4, 5] {
            let bytes = try MP.PickleEncoder(protocolVersion: version).encode(sharedObjectSwift)
            let special = try MP.PickleEncoder(protocolVersion: version).encode([Double.nan, -.infinity])
            guard let peer = PythonPeer(cpythonLoads, [bytes, special].map { $0.map { String(format: "%02x", $0) }.joined() }, python: python) else { return }
            let line = peer.line()
            // Protocol 5 is read by CPython 3.8 and later.
            #expect(line == "equal", "\(python), protocol \(version): \(line ?? "nothing")")
            #expect(peer.finish() == 0)
        }
    }

    @Test("a Swift Client with the pickle codec talks to CPython's Listener: a struct out, a dict back", arguments: pythonInterpreters)
    func swiftClientCPythonListener(python: String) throws {
        guard let peer = PythonPeer(cpythonPeerScript, ["listen"], python: python) else { return }
        let port = try #require(peer.line().flatMap { Int($0) })
        let connection = try MP.Client(address: .tcp(host: "127.0.0.1", port: port), authkey: Array("secret".utf8), legacyDigest: true, codec: .pickle)
        try connection.send(samplePickledJob)
        let answer = try connection.recv(PickledJob.self)
        #expect(answer.job == 8)
        #expect(answer.args == [.float(1.5), .string("x"), .string("from python")])
        #expect(answer.tags == ["a", "b", "py"])
        #expect(answer.data == [1, 2, 255, 0x21])
        #expect(answer.score == 0.5)
        #expect(answer.limits == samplePickledJob.limits)
        connection.close()
        #expect(peer.line() == "served")
        #expect(peer.finish() == 0)
    }

    @Test("CPython's Client talks to a Swift Listener with the pickle codec; a refused object is consumed and the connection goes on",
          arguments: pythonInterpreters)
    func cpythonClientSwiftListener(python: String) throws {
        let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: Array("secret".utf8), legacyDigest: true, codec: .pickle)
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.address, let peer = PythonPeer(cpythonPeerScript, ["connect", String(port)], python: python) else { return }
        let connection = try listener.accept()
        let job = try connection.recv(PickledJob.self)
        #expect(job == PickledJob(job: 7, args: [.float(1.5), .string("x")], tags: ["a", "b"], data: [1, 2, 255], score: nil,
                                  limits: ["memory": 1 << 40, "cpu": -1]))
        var reply = job
        reply.job += 1
        reply.data.append(0x21)
        reply.tags.insert("swift")
        try connection.send(reply)
        #expect(peer.line() == "answer 8 0102ff21 ['a', 'b', 'swift']")
        #expect(peer.finish() == 0)
    }

    @Test("64 MiB of bytes from CPython, and huge ints both ways")
    func largeValues() throws {
        let script = """
        import sys
        from multiprocessing.connection import Client
        with Client(('127.0.0.1', int(sys.argv[1])), authkey=b'secret') as conn:
            conn.send(bytes(range(256)) * (64 * 4096))
            conn.send(2**200 + 1)
            n = conn.recv()
            print("ok" if n == -(2**64) else "wrong %r" % n, flush=True)
        """
        let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: Array("secret".utf8), legacyDigest: true,
                                       maxMessageSize: 128 << 20, codec: .pickle)
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.address, let peer = PythonPeer(script, [String(port)], python: pythonInterpreters.last!) else { return }
        let connection = try listener.accept()
        let bytes = try connection.recv([UInt8].self)
        #expect(bytes.count == 64 << 20)
        #expect(bytes[1000] == UInt8(1000 % 256))
        let huge = try connection.recv(MP.PickleValue.self)
        guard case .bigInt(let raw) = huge else { Issue.record("2**200 + 1 came as \(huge)"); return }
        #expect(raw.count == 26 && raw[0] == 1 && raw[25] == 1)
        #expect(throws: MP.Error.self) { _ = try MP.PickleDecoder().decode(Int64.self, from: MP.PickleEncoder().encode(huge)) }
        // -(2**64): two's complement, least significant first.
        try connection.send(MP.PickleValue.bigInt([UInt8](repeating: 0, count: 8) + [0xff]))
        #expect(peer.line() == "ok")
        #expect(peer.finish() == 0)
    }
}

func hexBytes(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex, let next = text.index(index, offsetBy: 2, limitedBy: text.endIndex) {
        if let byte = UInt8(text[index..<next], radix: 16) { bytes.append(byte) }
        index = next
    }
    return bytes
}
