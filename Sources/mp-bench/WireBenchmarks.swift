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
        let figures = try interleavedMedians(rounds, [{
            let start = now()
            for _ in 0..<iterations {
                let bytes = try MP.encode(sample)
                guard try MP.decode(Message.self, from: bytes).id == 42 else { throw BenchError("wire round trip broke") }
            }
            return (now() - start) / Double(iterations) * 1e9
        }, {
            let start = now()
            for _ in 0..<iterations {
                let data = try encoder.encode(sample)
                guard try decoder.decode(Message.self, from: data).id == 42 else { throw BenchError("JSON round trip broke") }
            }
            return (now() - start) / Double(iterations) * 1e9
        }])
        return [Metric(name: "wire_roundtrip_ns", value: figures[0], higherIsBetter: false),
                Metric(name: "wire_roundtrip_ns_json", value: figures[1], higherIsBetter: false)]
    }
}
