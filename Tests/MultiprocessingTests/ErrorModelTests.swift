import Testing
import Multiprocessing
import Glibc

// The one error model, through the public API only (no @testable): a user
// catches a kind of failure by its code, whichever object threw it.

@Suite("One error model", .serialized)
struct ErrorModelTests {
    @Test("an empty queue is caught by its code, as the README shows")
    func readmeCatch() throws {
        let queue = try MP.Queue<Int>()
        var caught = ""
        do {
            let item = try queue.get(timeout: 0.01)
            caught = "item \(item)"
        } catch MP.Error.Code.empty {
            caught = "empty"                                 // Python's queue.Empty
        } catch {
            switch error.code {
            case .timeout, .cancelled: caught = "gave up: \(error)"
            default: throw error
            }
        }
        #expect(caught == "empty")
    }

    @Test("one pattern catches a kind whichever object threw it: a pool's timeout, a managed and a local queue's empty")
    func anyTimeout() throws {
        func kind(_ body: () throws -> Void) -> String {
            do {
                try body()
                return "no error"
            } catch MP.Error.Code.timeout {
                return "timeout"
            } catch MP.Error.Code.empty {
                return "empty"
            } catch {
                return "other: \(error)"
            }
        }
        let pool = try MP.Pool(processes: 1)
        defer { pool.terminate(); try? pool.join() }
        let slow = pool.applyAsync { () -> Int in _ = usleep(5_000_000); return 1 }
        #expect(kind { _ = try slow.get(timeout: 0.01) } == "timeout")
        let manager = try MP.Manager()
        defer { manager.shutdown() }
        let remote: MP.QueueProxy<Int> = try manager.Queue()
        #expect(kind { _ = try remote.get(timeout: 0.01) } == "empty")
        let local = try MP.Queue<Int>()
        #expect(kind { _ = try local.get(timeout: 0.01) } == "empty")
    }

    @Test("the kinds are values: a switch over codes needs a default, and a layer above may add its own")
    func codesAreValues() throws {
        let (reader, writer) = try MP.Pipe()
        writer.close()
        do {
            _ = try reader.recv(Int.self)
            Issue.record("a receive from a closed peer returned")
        } catch {
            let summary: String
            switch error.code {
            case .endOfFile: summary = "end of file"
            case .closed: summary = "closed"
            default: summary = "other"
            }
            #expect(summary == "end of file")
            #expect(error.message == "\(error)")
            #expect(error.underlying == nil)
        }
        let custom = MP.Error.Code("myLayer.overloaded")
        let error = MP.Error(custom, "the service is overloaded")
        #expect(error.code == custom && error.code != .timeout)
        #expect("\(error)" == "the service is overloaded")
    }

    @Test("a failed system call carries its OSError; a task's error carries its type")
    func payloads() throws {
        #expect {
            _ = try MP.SharedMemory(name: "mp-no-such-segment-\(MP.getpid())")
        } throws: { error in
            guard let error = error as? MP.Error else { return false }
            return error.code == .notFound && error.message.contains("mp-no-such-segment")
        }
        struct Refusal: Error, CustomStringConvertible { var description: String { "refused on purpose" } }
        let pool = try MP.Pool(processes: 1)
        defer { pool.terminate(); try? pool.join() }
        #expect {
            _ = try pool.apply { () throws -> Int in throw Refusal() }
        } throws: { error in
            guard let error = error as? MP.Error else { return false }
            return error.code == .taskFailed && error.errorType == "Refusal" && error.message.contains("refused on purpose")
        }
    }
}
