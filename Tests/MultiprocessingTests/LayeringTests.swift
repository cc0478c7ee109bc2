import Testing
import Foundation

// The public module's folders are concepts that depend on each other
// without loops (the targets below it are held by the compiler). This reads
// the sources: a folder depends on another when it names a type declared
// only there. Names declared in several folders, and Swift's own (Array,
// Error), are not evidence and are skipped.

@Suite("Layering")
struct LayeringTests {
    static let moduleRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/Multiprocessing")

    /// Source text without comments and string literals, by folder ("MP.swift" for top-level files).
    static func sources() throws -> [(folder: String, text: String)] {
        let files = FileManager.default.enumerator(at: moduleRoot, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        return try files.map { url in
            let relative = url.path.dropFirst(moduleRoot.path.count + 1)
            let folder = relative.contains("/") ? String(relative.prefix { $0 != "/" }) : String(relative)
            var text = try String(contentsOf: url, encoding: .utf8)
            text = text.replacingOccurrences(of: #"//[^\n]*"#, with: "", options: .regularExpression)
            text = text.replacingOccurrences(of: #""(?:[^"\\\n]|\\.)*""#, with: "\"\"", options: .regularExpression)
            return (folder, text)
        }
    }

    @Test("the module's folders depend on each other without loops")
    func noLoops() throws {
        let sources = try Self.sources()
        #expect(sources.count > 50, "read the module's sources")
        var declaredIn: [String: Set<String>] = [:]
        let declaration = try NSRegularExpression(pattern: #"\b(?:struct|class|enum|protocol|typealias|actor)\s+([A-Z]\w+)"#)
        for (folder, text) in sources {
            for match in declaration.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                declaredIn[String(text[Range(match.range(at: 1), in: text)!]), default: []].insert(folder)
            }
        }
        let swiftNames: Set<String> = ["Array", "Error", "Value", "Event", "Lock", "Condition", "Code", "State", "Kind",
                                       "Keys", "CodingKeys", "Signal", "Queue", "Pipe", "Item", "Failure", "Body", "Entry"]
        let owner = declaredIn.filter { $0.value.count == 1 && !swiftNames.contains($0.key) }.mapValues { $0.first! }
        var edges: [String: [String: String]] = [:] // folder -> folder it names -> one name as evidence
        for (folder, text) in sources {
            let words = Set(text.split { !($0.isLetter || $0.isNumber || $0 == "_") }.map(String.init))
            for word in words {
                if let other = owner[word], other != folder { edges[folder, default: [:]][other] = word }
            }
        }
        // Depth-first search for a cycle; report the first found with its evidence.
        var state: [String: Int] = [:] // 1: on the path, 2: done
        var path: [String] = []
        func visit(_ node: String) -> [String]? {
            state[node] = 1
            path.append(node)
            for next in (edges[node] ?? [:]).keys.sorted() {
                if state[next] == 1 { return Swift.Array(path[path.firstIndex(of: next)!...]) + [next] }
                if state[next] == nil, let cycle = visit(next) { return cycle }
            }
            path.removeLast()
            state[node] = 2
            return nil
        }
        for node in edges.keys.sorted() where state[node] == nil {
            if let cycle = visit(node) {
                let evidence = zip(cycle, cycle.dropFirst()).map { "\($0) -> \($1) (\(edges[$0]![$1]!))" }
                Issue.record("folders loop: \(evidence.joined(separator: ", "))")
                return
            }
        }
    }
}
