import Foundation
import Multiprocessing

/// `wire_roundtrip_ns`: encode and decode one structured message, against
/// Foundation's JSONEncoder/JSONDecoder (`_json`) in the same run.
enum WireBenchmarks {
    struct Message: Codable, Equatable {
        var id: Int
        var name: String
        var payload: [Double]
        var tags: [String: Int]
        var note: String?
        var done: Bool
    }

    static let sample = Message(id: 42, name: "result of task 42", payload: (0..<16).map(Double.init),
                                tags: ["attempt": 1, "worker": 3], note: nil, done: true)

    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 20_000 : 100_000
        let rounds = quick ? 3 : 5
        let encoder = JSONEncoder()
        let decoder = JSONDecoder()
        var metrics = try alternatingRounds(rounds, [Contender(name: "wire_roundtrip_ns") {
            let start = now()
            for _ in 0..<iterations {
                let bytes = try MP.encode(sample)
                guard try MP.decode(Message.self, from: bytes).id == 42 else { throw BenchError("wire round trip broke") }
            }
            return (now() - start) / Double(iterations) * 1e9
        }, Contender(name: "wire_roundtrip_ns_json") {
            let start = now()
            for _ in 0..<iterations {
                let data = try encoder.encode(sample)
                guard try decoder.decode(Message.self, from: data).id == 42 else { throw BenchError("JSON round trip broke") }
            }
            return (now() - start) / Double(iterations) * 1e9
        }])

        metrics += try pickleRoundTrip(quick: quick)
        return metrics
    }

    /// `pickle_roundtrip_ns`: the same message as a pickle (``MP/PickleEncoder``,
    /// ``MP/PickleDecoder``) beside CPython's `pickle.loads(pickle.dumps(d))`
    /// of the equal dict, in alternating rounds.
    static func pickleRoundTrip(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 10_000 : 50_000
        let encoder = MP.PickleEncoder(), decoder = MP.PickleDecoder()
        let python = PeerRounds(python: """
            import pickle, sys, time
            d = {'id': 42, 'name': 'result of task 42', 'payload': [float(i) for i in range(16)],
                 'tags': {'attempt': 1, 'worker': 3}, 'note': None, 'done': True}
            def once():
                s = time.perf_counter()
                for _ in range(\(iterations)):
                    if pickle.loads(pickle.dumps(d, protocol=4))['id'] != 42: raise SystemExit('broke')
                return (time.perf_counter() - s) / \(iterations) * 1e9
            print('ready', flush=True)
            for line in sys.stdin:
                if line.strip() != 'pickle_roundtrip_ns': break
                print('pickle_roundtrip_ns', once(), flush=True)
            """)
        defer { python?.finish() }
        return try alternating("pickle_roundtrip_ns", rounds: quick ? 5 : 9, python: python) {
            let start = now()
            for _ in 0..<iterations {
                let bytes = try encoder.encode(sample)
                guard try decoder.decode(Message.self, from: bytes).id == 42 else { throw BenchError("pickle round trip broke") }
            }
            return (now() - start) / Double(iterations) * 1e9
        }
    }
}
