import Glibc
@testable import Multiprocessing
import Testing
import MultiprocessingPlatform

struct Inner: Codable, Equatable { var flag: Bool; var tags: Set<String> }
enum Shape: Codable, Equatable { case circle(radius: Double), square(Int), none }
final class Base: Codable { var id = 7 }
struct Everything: Codable, Equatable {
    var int: Int; var int8: Int8; var uint16: UInt16; var int32: Int32; var uint64: UInt64
    var double: Double; var float: Float; var bool: Bool; var string: String
    var optional: Int?; var missing: String?; var nested: Inner; var shapes: [Shape]
    var matrix: [[Double]]; var byName: [String: Int]; var byNumber: [Int: [String]]
    var optionals: [Int?]; var bytes: [UInt8]
}

/// Decodes its fields in another order than it encodes them: must fail loudly.
struct Swapped: Codable {
    var a: Int, b: Int
    enum CodingKeys: String, CodingKey { case a, b }
    init(a: Int, b: Int) { self.a = a; self.b = b }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        b = try c.decode(Int.self, forKey: .b)
        a = try c.decode(Int.self, forKey: .a)
    }
}

@Suite("The wire format")
struct WireFormatTests {
    static let sample = Everything(
        int: -42, int8: -8, uint16: 65_000, int32: .min, uint64: .max, double: .pi, float: 1.5, bool: true,
        string: "héllo, 世界", optional: 5, missing: nil, nested: Inner(flag: false, tags: ["x", "y"]),
        shapes: [.circle(radius: 2), .square(3), .none], matrix: [[1, 2], [], [3]],
        byName: ["a": 1, "b": 2], byNumber: [1: ["one"], 2: []], optionals: [1, nil, 3], bytes: [0, 255, 7])

    @Test("structs and enums skip the coder's casts; optionals, arrays, dictionaries and numbers do not")
    func shapes() {
        // Decided from the metadata: a fresh child meets these without a conformance scan.
        #expect(WireShape.isPlain(Everything.self))
        #expect(WireShape.isPlain(Inner.self))
        #expect(WireShape.isPlain(Shape.self))
        #expect(WireShape.isPlain(Set<String>.self))
        #expect(WireShape.isPlain(MP.Error.Code.self))
        // The coder's own shapes: its casts still run.
        for type: Any.Type in [Int?.self, Shape?.self, [Int].self, [Shape].self, [[Double]].self, [String: Int].self,
                               [Int: [String]].self, Int.self, Int8.self, UInt16.self, Int32.self, UInt64.self, UInt.self,
                               Float.self, Double.self, Int128.self, UInt128.self, Bool.self, String.self] {
            #expect(!isPlain(type), "\(type)")
        }
        // Neither a struct nor an enum: the casts decide.
        #expect(!WireShape.isPlain(Base.self))
        #expect(!WireShape.isPlain((Int, String).self))
    }

    private func isPlain(_ type: Any.Type) -> Bool {
        func open<T>(_ type: T.Type) -> Bool { WireShape.isPlain(type) }
        return _openExistential(type, do: open)
    }

    @Test("every kind of Codable value round-trips")
    func roundTrip() throws {
        let bytes = try WireFormat.encode(Self.sample)
        #expect(try WireFormat.decode(Everything.self, from: bytes) == Self.sample)
        #expect(try WireFormat.decode(Int?.self, from: WireFormat.encode(Int?.none)) == nil)
        #expect(try WireFormat.decode([Int].self, from: WireFormat.encode([Int](0..<1000))) == Swift.Array(0..<1000))
        #expect(try WireFormat.decode(String.self, from: WireFormat.encode("")) == "")
        #expect(try WireFormat.decode(Base.self, from: WireFormat.encode(Base())).id == 7)
        #expect(try WireFormat.encode(42).count == 8)
        // Optionals of fast-path types keep their presence byte.
        #expect(try WireFormat.decode(String?.self, from: WireFormat.encode(String?("x"))) == "x")
        #expect(try WireFormat.decode(String?.self, from: WireFormat.encode(String?.none)) == nil)
        #expect(try WireFormat.decode([Int]?.self, from: WireFormat.encode([Int]?([1, 2]))) == [1, 2])
        #expect(try WireFormat.decode(Int?.self, from: WireFormat.encode(Int?(3))) == 3)
    }

    @Test("fields decoded out of order fail with a clear error, not swapped values")
    func fieldOrder() throws {
        let bytes = try WireFormat.encode(Swapped(a: 1, b: 2))
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode(Swapped.self, from: bytes) }
    }

    @Test("wrong types, truncation and leftovers are clear errors")
    func malformed() throws {
        let bytes = try WireFormat.encode(Self.sample)
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode(Everything.self, from: Swift.Array(bytes.dropLast())) }
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode(Int.self, from: bytes) }
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode(Bool.self, from: [7]) }
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode(String.self, from: [3, 0, 0, 0, 0xff, 0xfe, 0xfd]) }
        // A huge announced length is refused before anything is allocated.
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode([Int].self, from: [0xff, 0xff, 0xff, 0xff]) }
        #expect(throws: MP.Error.self) { _ = try WireFormat.decode([String].self, from: [0xff, 0xff, 0xff, 0x7f, 1]) }
    }

    @Test("random and truncated bytes never crash, hang or over-allocate the decoder (bounded fuzz)")
    func fuzz() throws {
        var generator = SystemRandomNumberGenerator()
        let valid = try WireFormat.encode(Self.sample)
        let deadline = Deadline.after(validSeconds: 1.5)!
        var rounds = 0
        while !deadline.hasPassed {
            rounds += 1
            var bytes: [UInt8]
            switch rounds % 3 {
            case 0: bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            case 1: bytes = Swift.Array(valid.prefix(Int.random(in: 0..<valid.count, using: &generator)))
            default:
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            }
            _ = try? WireFormat.decode(Everything.self, from: bytes)
            _ = try? WireFormat.decode([String: [Int]].self, from: bytes)
            _ = try? WireFormat.decode([Shape?].self, from: bytes)
        }
        #expect(rounds > 100)
    }
}
