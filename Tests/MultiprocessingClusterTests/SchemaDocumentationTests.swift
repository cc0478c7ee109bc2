import Testing
import Foundation
@testable import MultiprocessingCluster

/// The catalog's Schema article prints the statements the cluster runs; this
/// keeps the page and the code from drifting apart.
@Suite struct SchemaDocumentationTests {
    @Test func theSchemaArticleShowsTheStatementsTheClusterRuns() throws {
        let article = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/MultiprocessingCluster/MultiprocessingCluster.docc/Schema.md")
        let text = try String(contentsOf: article, encoding: .utf8)
        let block = try #require(text.components(separatedBy: "```sql\n").last?.components(separatedBy: "```").first)
        let documented = block.split(separator: ";").map(Self.normalized).filter { !$0.isEmpty }
        let run = ClusterStore.schema.map(Self.normalized)
        #expect(documented == run)
    }

    /// One space between words, none at the ends.
    static func normalized<S: StringProtocol>(_ statement: S) -> String {
        statement.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
    }
}
