// This file imports Foundation and Multiprocessing together, as user code
// does: Foundation's `Process` and `Pipe` stay unambiguous, ours live in `MP`.
import Foundation
import Multiprocessing
import Testing

@Suite("Naming next to Foundation")
struct NamingTests {
    @Test("Foundation's Process and Pipe stay unqualified; ours are MP.Process")
    func foundationAndMultiprocessingTogether() throws {
        let foundationProcess = Process()
        let foundationPipe = Pipe()
        #expect(type(of: foundationProcess) == Foundation.Process.self)
        #expect(type(of: foundationPipe) == Foundation.Pipe.self)

        let ours = MP.Process(name: "with-foundation") {}
        try ours.start()
        try joinOrKill(ours)
        #expect(ours.exitCode == 0)
        #expect(MP.currentProcess().name == "MainProcess")
    }
}
