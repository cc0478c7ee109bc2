import Testing
@testable import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif

struct ExitWith: MP.NamedTask {
    var code: Int32
    func run() throws { throw MP.ExitRequest(code) }
}

@Suite("Start methods")
struct StartMethodTests {
    @Test("a named task's exit code comes back under every method", arguments: MP.StartMethod.allCases)
    func exitCode(method: MP.StartMethod) throws {
        let p = MP.getContext(method).Process(target: ExitWith(code: 7))
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 7)
    }
}
