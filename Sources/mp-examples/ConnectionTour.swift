import Glibc
import Multiprocessing

// MARK: a Swift program and a CPython program talk through a Listener
//
// The Swift side listens (multiprocessing.connection.Listener); a CPython
// program connects with multiprocessing.connection.Client, authenticates
// with the same key, and the two exchange messages with send_bytes and
// recv_bytes. CPython 3.11 authenticates with HMAC-MD5, so the listener
// accepts that digest explicitly (3.12 and later use SHA-256 by default).

let pythonTalker = """
import sys
from multiprocessing.connection import Client
with Client(('127.0.0.1', int(sys.argv[1])), authkey=b'tour secret') as conn:
    for word in ['hello', 'from', 'cpython']:
        conn.send_bytes(word.encode())
        print('python got', conn.recv_bytes().decode(), flush=True)
    conn.send_bytes(b'bye')
"""

func listenerWithPython() throws {
    let authkey = Array("tour secret".utf8)
    let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: authkey, legacyDigest: true)  // Listener(('127.0.0.1', 0), authkey=...)
    defer { listener.close() }
    guard case .tcp(_, let port) = listener.address else { return }
    let talker: Int32?
    if let python = startPython(pythonTalker, arguments: [String(port)]) {
        print("listening on port", port, "- CPython connects")
        talker = python
    } else {
        print("python3 is not installed: a Swift client takes its place")
        let client = MP.Process(name: "swift-client") {
            let conn = try MP.Client(address: .tcp(host: "127.0.0.1", port: port), authkey: authkey, legacyDigest: true)
            for word in ["hello", "from", "swift"] {
                try conn.sendBytes(Array(word.utf8))
                print("client got", String(decoding: try conn.recvBytes(), as: UTF8.self))
            }
            try conn.sendBytes(Array("bye".utf8))
        }
        try client.start()
        defer { try? client.join() }
        talker = nil
        try serve(listener)
        return
    }
    try serve(listener)
    if let talker {
        var status: Int32 = 0
        while waitpid(talker, &status, 0) < 0 && errno == EINTR {}
        print("CPython exited with", (status >> 8) & 0xff)
    }
}

private func serve(_ listener: MP.Listener) throws {
    let conn = try listener.accept()                                    // conn = listener.accept()
    print("accepted a connection from", listener.lastAccepted.map { "\($0)" } ?? "?")  // listener.last_accepted
    while true {
        let word = String(decoding: try conn.recvBytes(), as: UTF8.self)   // conn.recv_bytes()
        if word == "bye" { break }
        print("swift got", word)
        try conn.sendBytes(Array(word.uppercased().utf8))               // conn.send_bytes(...)
    }
    conn.close()
}

/// Starts `python3 -c script args...`; nil when python3 is not there.
private func startPython(_ script: String, arguments: [String]) -> Int32? {
    let argv = (["python3", "-c", script] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    MP.flushOutput()
    guard posix_spawnp(&pid, "python3", nil, nil, argv, environ) == 0 else { return nil }
    return pid
}

// MARK: values, not bytes: a CPython job as a dict, a Swift answer as a struct
//
// With `codec: .pickle` a connection's send/recv speak what CPython's
// conn.send(obj)/conn.recv() speak: pickle. The decoder is safe: it builds
// only the shared value types (None, bool, int, float, str, bytes, list,
// tuple, dict, set) and refuses anything that would run code.

let pythonJobSender = """
import sys
from multiprocessing.connection import Client
with Client(('127.0.0.1', int(sys.argv[1])), authkey=b'tour secret') as conn:
    conn.send({'job': 7, 'args': [1.5, 2.5], 'tags': {'urgent'}})
    answer = conn.recv()
    print('python got', answer, flush=True)
"""

/// What CPython sends: a dict with these keys.
struct TourJob: Codable {
    var job: Int
    var args: [Double]
    var tags: Set<String>
}

/// What Swift answers: CPython receives it as a dict.
struct TourAnswer: Codable {
    var job: Int
    var sum: Double
    var worker: String
}

func pickleWithPython() throws {
    let authkey = Array("tour secret".utf8)
    let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: authkey, legacyDigest: true, codec: .pickle)
    defer { listener.close() }
    guard case .tcp(_, let port) = listener.address else { return }
    guard let python = startPython(pythonJobSender, arguments: [String(port)]) else {
        print("python3 is not installed: this example needs a CPython peer, skipped")
        return
    }
    let conn = try listener.accept()
    let job = try conn.recv(TourJob.self)                                    // job = conn.recv()
    print("swift got job", job.job, "args", job.args, "tags", job.tags.sorted())
    try conn.send(TourAnswer(job: job.job, sum: job.args.reduce(0, +), worker: "swift"))  // conn.send({...})
    var status: Int32 = 0
    while waitpid(python, &status, 0) < 0 && errno == EINTR {}
    print("CPython exited with", (status >> 8) & 0xff)
}
