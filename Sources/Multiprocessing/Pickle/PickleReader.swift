/// Reads CPython's pickles (protocols 2-5, as 3.8-3.14 write them) into
/// ``MP/PickleValue``s, and never runs anything.
///
/// A pickle is a program for a stack machine whose `GLOBAL`/`REDUCE`
/// opcodes call any function by name: `pickle.loads` of untrusted bytes runs
/// code. This reader executes only the opcodes that build the shared value
/// types, and, for those types' own reductions, exactly these globals:
/// `builtins.set`, `builtins.frozenset`, `builtins.bytearray` (and their
/// protocol-2 names in `__builtin__`), `collections.OrderedDict` and
/// `_codecs.encode` (protocol 2's bytes); each only with the arguments its
/// reduction has. Every other global, `BUILD`, `INST`, `OBJ`, `NEWOBJ`,
/// persistent ids, extension codes and out-of-band buffers are refused with
/// an error naming the opcode and the class.
///
/// Memory is bounded before it is allocated: a claimed length larger than
/// what remains is refused; the stack, the marks and the nesting are
/// bounded; shared references (`GET` of a memoized container) expand at most
/// to a bound proportional to the input, so a "billion laughs" pickle is
/// refused instead of exhausting memory.
struct PickleReader {
    /// Containers are references while the machine runs (a memoized list
    /// gets its items after it was memoized, as in CPython); values after.
    final class Node {
        enum Kind { case value(MP.PickleValue), list, tuple, dict, set, frozenset, global(String, String) }
        let kind: Kind
        var items: [Node] = []
        init(_ kind: Kind) { self.kind = kind }
        static func value(_ value: MP.PickleValue) -> Node { Node(.value(value)) }
    }

    private let bytes: [UInt8]
    private var position = 0
    private var stack: [Node] = []
    private var marks: [Int] = []
    private var memo: [Int: Node] = [:]
    private let maximumDepth: Int
    private var budget: Int

    init(_ bytes: [UInt8], maximumDepth: Int) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        // Shared references may repeat a container; the value tree may hold
        // at most this many nodes (plenty for any honest pickle of this size).
        budget = max(1 << 16, bytes.count * 8)
    }

    static let stackLimit = 1 << 20

    mutating func read() throws(MP.Error) -> MP.PickleValue {
        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80: // PROTO
                let version = try byte()
                guard version <= 5 else { throw .malformed("protocol \(version) is newer than 5") }
            case 0x95: // FRAME: a hint only; its length must be there
                let length = try uint64()
                guard length <= UInt64(bytes.count - position) else { throw .malformed("a frame of \(length) bytes where \(bytes.count - position) remain") }
            case 0x2e: // STOP
                guard stack.count == 1, marks.isEmpty else { throw .malformed("STOP with \(stack.count) values on the stack and \(marks.count) open marks") }
                var visiting = Set<ObjectIdentifier>()
                return try value(of: stack[0], depth: 0, visiting: &visiting)
            case 0x4e: try push(.value(.none)) // N
            case 0x88: try push(.value(.bool(true)))
            case 0x89: try push(.value(.bool(false)))
            case 0x4a: try push(.value(.int(Int64(Int32(bitPattern: try uint32()))))) // BININT
            case 0x4b: try push(.value(.int(Int64(try byte())))) // BININT1
            case 0x4d: try push(.value(.int(Int64(try uint16())))) // BININT2
            case 0x8a: try push(.value(Self.integer(try take(Int(try byte()))))) // LONG1
            case 0x8b: // LONG4
                let length = Int32(bitPattern: try uint32())
                guard length >= 0 else { throw .malformed("LONG4 with a negative length") }
                try push(.value(Self.integer(try take(Int(length)))))
            case 0x47: // BINFLOAT, big-endian
                try push(.value(.float(Double(bitPattern: try take(8).reduce(0) { $0 << 8 | UInt64($1) }))))
            case 0x49, 0x4c, 0x46, 0x53, 0x56, 0x70, 0x67, 0x54, 0x55:
                    // INT, LONG, FLOAT, STRING, UNICODE, PUT, GET and the protocol-1
                // strings: forms no protocol 2+ pickler writes.
                throw .refused(opcode: Self.name(opcode), reason: "a protocol 0/1 opcode; pickles of protocol 2 to 5 are read")
            case 0x58: try push(.value(.string(try text(Int(try uint32()))))) // BINUNICODE
            case 0x8c: try push(.value(.string(try text(Int(try byte()))))) // SHORT_BINUNICODE
            case 0x8d: try push(.value(.string(try text(try length64())))) // BINUNICODE8
            case 0x42: try push(.value(.bytes(try take(Int(try uint32()))))) // BINBYTES
            case 0x43: try push(.value(.bytes(try take(Int(try byte()))))) // SHORT_BINBYTES
            case 0x8e: try push(.value(.bytes(try take(try length64())))) // BINBYTES8
            case 0x96: try push(.value(.bytearray(try take(try length64())))) // BYTEARRAY8
            case 0x5d: try push(Node(.list)) // EMPTY_LIST
            case 0x7d: try push(Node(.dict)) // EMPTY_DICT
            case 0x29: try push(Node(.tuple)) // EMPTY_TUPLE
            case 0x8f: try push(Node(.set)) // EMPTY_SET
            case 0x28: // MARK
                guard marks.count < maximumDepth * 4 else { throw .tooLarge("more than \(maximumDepth * 4) open marks") }
                marks.append(stack.count)
            case 0x61: // APPEND
                let item = try pop()
                try container(for: "APPEND", .list).items.append(item)
            case 0x65: // APPENDS
                let items = try popMark()
                try container(for: "APPENDS", .list).items += items
            case 0x73: // SETITEM
                let value = try pop(), key = try pop()
                try container(for: "SETITEM", .dict).items += [key, value]
            case 0x75: // SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw .malformed("SETITEMS with an odd number of items") }
                try container(for: "SETITEMS", .dict).items += items
            case 0x90: // ADDITEMS
                let items = try popMark()
                try container(for: "ADDITEMS", .set).items += items
            case 0x74: // TUPLE
                let node = Node(.tuple)
                node.items = try popMark()
                try push(node)
            case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
                let count = Int(opcode - 0x84)
                guard stack.count - (marks.last ?? 0) >= count else { throw .malformed("\(Self.name(opcode)) on a stack of \(stack.count)") }
                let node = Node(.tuple)
                node.items = Swift.Array(stack.suffix(count))
                stack.removeLast(count)
                try push(node)
            case 0x91: // FROZENSET
                let node = Node(.frozenset)
                node.items = try popMark()
                try push(node)
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: // DUP
                guard let top = stack.last else { throw .malformed("DUP on an empty stack") }
                try push(top)
            case 0x94: // MEMOIZE
                guard let top = stack.last else { throw .malformed("MEMOIZE on an empty stack") }
                memo[memo.count] = top
            case 0x71: try put(Int(try byte())) // BINPUT
            case 0x72: try put(Int(try uint32())) // LONG_BINPUT
            case 0x68: try get(Int(try byte())) // BINGET
            case 0x6a: try get(Int(try uint32())) // LONG_BINGET
            case 0x63: // GLOBAL: "module\nname\n"
                let module = try line(), name = try line()
                try push(Node(.global(try Self.allowed(module, name, opcode: "GLOBAL"), name)))
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .value(.string(let moduleName)) = module.kind, case .value(.string(let globalName)) = name.kind else {
                    throw .malformed("STACK_GLOBAL without two strings")
                }
                try push(Node(.global(try Self.allowed(moduleName, globalName, opcode: "STACK_GLOBAL"), globalName)))
            case 0x52: // REDUCE
                let arguments = try pop(), callable = try pop()
                try push(try reduce(callable, arguments))
            case 0x62, 0x69, 0x6f, 0x81, 0x92, 0x50, 0x51, 0x82, 0x83, 0x84, 0x97, 0x98:
                throw .refused(opcode: Self.name(opcode), reason: Self.refusal(opcode, stack.last))
            default:
                throw .malformed("unknown opcode 0x\(String(opcode, radix: 16)) at byte \(position - 1)")
            }
        }
    }

    // MARK: the allow-list

    /// The globals a shared type's reduction names; anything else is refused here, before it is used.
    private static func allowed(_ module: String, _ name: String, opcode: String) throws(MP.Error) -> String {
        switch (module, name) {
        case ("builtins", "set"), ("__builtin__", "set"), ("builtins", "frozenset"), ("__builtin__", "frozenset"),
             ("builtins", "bytearray"), ("__builtin__", "bytearray"), ("collections", "OrderedDict"), ("_codecs", "encode"):
            return module
        default:
            throw .refused(opcode: opcode, reason: "the global \(module).\(name) is not one of the shared types' (a class instance, a function: never looked up or called)")
        }
    }

    /// The only calls made: a shared type's own reduction, with exactly its arguments.
    private func reduce(_ callable: Node, _ arguments: Node) throws(MP.Error) -> Node {
        guard case .global(let module, let name) = callable.kind else { throw .refused(opcode: "REDUCE", reason: "a call of something that is not an allowed global") }
        guard case .tuple = arguments.kind else { throw .malformed("REDUCE without an argument tuple") }
        let args = arguments.items
        func values(_ node: Node) throws(MP.Error) -> [Node] {
            switch node.kind {
            case .list, .tuple, .set, .frozenset: return node.items
            default: throw .refused(opcode: "REDUCE", reason: "\(module).\(name) with an argument that is not a list, tuple or set")
            }
        }
        switch name {
        case "set", "frozenset":
            let node = Node(name == "set" ? .set : .frozenset)
            if args.count == 1 { node.items = try values(args[0]) } else if !args.isEmpty { break }
            return node
        case "bytearray":
            if args.isEmpty { return .value(.bytearray([])) }
            if args.count == 1, case .value(.bytes(let bytes)) = args[0].kind { return .value(.bytearray(bytes)) }
        case "OrderedDict":
            if args.isEmpty { return Node(.dict) }
        case "encode": // _codecs.encode(str, 'latin1'): protocol 2's bytes
            if args.count == 2, case .value(.string(let text)) = args[0].kind, case .value(.string(let codec)) = args[1].kind,
               codec == "latin1" || codec == "latin-1" {
                var out: [UInt8] = []
                for scalar in text.unicodeScalars {
                    guard scalar.value < 256 else { throw .malformed("_codecs.encode of a character beyond latin-1") }
                    out.append(UInt8(scalar.value))
                }
                return .value(.bytes(out))
            }
        default: break
        }
        throw .refused(opcode: "REDUCE", reason: "\(module).\(name) with arguments its reduction never has")
    }

    private static func refusal(_ opcode: UInt8, _ top: Node?) -> String {
        var subject = ""
        if let top, case .global(let module, let name) = top.kind { subject = " of \(module).\(name)" }
        switch opcode {
        case 0x62: return "BUILD sets an object's state\(subject): objects are never made"
        case 0x69, 0x6f, 0x81, 0x92: return "it makes an instance of a class\(subject)"
        case 0x51, 0x50: return "persistent ids name objects outside the pickle"
        case 0x82, 0x83, 0x84: return "extension codes name registered classes"
        default: return "out-of-band buffers are not read"
        }
    }

    // MARK: the machine

    private mutating func push(_ node: Node) throws(MP.Error) {
        guard stack.count < Self.stackLimit else { throw .tooLarge("more than \(Self.stackLimit) values on the stack") }
        stack.append(node)
    }

    private mutating func pop() throws(MP.Error) -> Node {
        guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw .malformed("a value taken from an empty stack (or across a mark)") }
        stack.removeLast()
        return top
    }

    private mutating func popMark() throws(MP.Error) -> [Node] {
        guard let mark = marks.popLast() else { throw .malformed("no MARK") }
        let items = Swift.Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private func container(for opcode: String, _ expected: Node.Kind) throws(MP.Error) -> Node {
        guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw .malformed("\(opcode) with nothing to add to") }
        switch (top.kind, expected) {
        case (.list, .list), (.dict, .dict), (.set, .set): return top
        default: throw .malformed("\(opcode) on something that is not a \(expected)")
        }
    }

    private mutating func put(_ index: Int) throws(MP.Error) {
        guard let top = stack.last else { throw .malformed("PUT on an empty stack") }
        guard index <= memo.count + Self.stackLimit else { throw .tooLarge("memo index \(index)") }
        memo[index] = top
    }

    private mutating func get(_ index: Int) throws(MP.Error) {
        guard let node = memo[index] else { throw .malformed("GET of memo \(index), never put") }
        try push(node)
    }

    // MARK: values

    private mutating func value(of node: Node, depth: Int, visiting: inout Set<ObjectIdentifier>) throws(MP.Error) -> MP.PickleValue {
        budget -= 1
        guard budget >= 0 else { throw .tooLarge("its shared references expand past \(max(1 << 16, bytes.count * 8)) values") }
        guard depth <= maximumDepth else { throw .tooLarge("nested deeper than \(maximumDepth)") }
        if case .value(let value) = node.kind { return value }
        let id = ObjectIdentifier(node)
        guard visiting.insert(id).inserted else { throw .refused(opcode: "GET", reason: "a container that contains itself (recursive values have no Swift counterpart)") }
        defer { visiting.remove(id) }
        var items: [MP.PickleValue] = []
        items.reserveCapacity(node.items.count)
        for item in node.items { items.append(try value(of: item, depth: depth + 1, visiting: &visiting)) }
        switch node.kind {
        case .list: return .list(items)
        case .tuple: return .tuple(items)
        case .set: return .set(items)
        case .frozenset: return .frozenset(items)
        case .dict: return .dict(stride(from: 0, to: items.count, by: 2).map { .init(items[$0], items[$0 + 1]) })
        case .global, .value: throw .malformed("a global left as a value")
        }
    }

    /// pickle's `LONG`: two's complement, least significant byte first.
    static func integer(_ bytes: [UInt8]) -> MP.PickleValue {
        if bytes.isEmpty { return .int(0) }
        if bytes.count <= 8 {
            var value: UInt64 = 0
            for (index, byte) in bytes.enumerated() { value |= UInt64(byte) << (8 * index) }
            if bytes.count < 8 && bytes.last! & 0x80 != 0 { value |= ~0 << (8 * bytes.count) }
            return .int(Int64(bitPattern: value))
        }
        // Wider, but maybe a sign extension of a 64-bit value.
        let sign: UInt8 = bytes.last! & 0x80 != 0 ? 0xff : 0
        if bytes[8...].allSatisfy({ $0 == sign }) && (bytes[7] & 0x80 != 0) == (sign == 0xff) {
            return integer(Swift.Array(bytes[..<8]))
        }
        return .bigInt(bytes)
    }

    // MARK: bytes

    private mutating func byte() throws(MP.Error) -> UInt8 {
        guard position < bytes.count else { throw .malformed("it ends at byte \(position) without STOP") }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func take(_ count: Int) throws(MP.Error) -> [UInt8] {
        guard count >= 0, count <= bytes.count - position else {
            throw .malformed("a length of \(count) bytes where \(bytes.count - position) remain")
        }
        defer { position += count }
        return Swift.Array(bytes[position..<position + count])
    }

    private mutating func uint16() throws(MP.Error) -> UInt16 {
        let raw = try take(2)
        return UInt16(raw[0]) | UInt16(raw[1]) << 8
    }

    private mutating func uint32() throws(MP.Error) -> UInt32 {
        try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    private mutating func uint64() throws(MP.Error) -> UInt64 {
        try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    private mutating func length64() throws(MP.Error) -> Int {
        let length = try uint64()
        guard length <= UInt64(bytes.count - position) else { throw .malformed("a length of \(length) bytes where \(bytes.count - position) remain") }
        return Int(length)
    }

    private mutating func text(_ count: Int) throws(MP.Error) -> String {
        let raw = try take(count)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw .malformed("a string that is not UTF-8 (a lone surrogate has no Swift counterpart)")
        }
        return text
    }

    private mutating func line() throws(MP.Error) -> String {
        guard let end = bytes[position...].prefix(256).firstIndex(of: 0x0a) else { throw .malformed("GLOBAL without a newline within 256 bytes") }
        defer { position = end + 1 }
        return String(decoding: bytes[position..<end], as: UTF8.self)
    }

    static func name(_ opcode: UInt8) -> String {
        let names: [UInt8: String] = [
            0x62: "BUILD", 0x69: "INST", 0x6f: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x50: "PERSID", 0x51: "BINPERSID",
            0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER", 0x49: "INT", 0x4c: "LONG",
            0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE", 0x70: "PUT", 0x67: "GET", 0x54: "BINSTRING",
            0x55: "SHORT_BINSTRING", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
        ]
        return names[opcode] ?? "0x" + String(opcode, radix: 16)
    }
}
