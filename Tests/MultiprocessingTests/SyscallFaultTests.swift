import Testing
@testable import Multiprocessing
import MultiprocessingPlatform
import SystemPackage
import Glibc

// The library's handling of failing system calls, through the platform
// layer's seam (SyscallFaults): EINTR is retried, EAGAIN is "nothing yet"
// and waited on, ENOMEM is a clear error that loses nothing and leaves the
// object usable.

@Suite("System calls that fail", .serialized)
struct SyscallFaultTests {
    init() { SyscallFaults.clear() }

    @Test("EINTR on send, sendmsg and recv is retried: the message arrives whole")
    func interruptedSendAndReceive() throws {
        defer { SyscallFaults.clear() }
        let (left, right) = try MP.Pipe()
        // A value's frame is one buffer: it goes by send.
        SyscallFaults.inject([.interrupted, .interrupted], into: "send")
        SyscallFaults.inject([.interrupted, .interrupted, .interrupted], into: "recv")
        try left.send(["interrupted": [1, 2, 3]])
        #expect(try right.recv([String: [Int]].self) == ["interrupted": [1, 2, 3]])
        #expect(SyscallFaults.pending("send") == 0, "the send did not go through the errno path")
        #expect(SyscallFaults.pending("recv") == 0, "the receive did not go through the errno path")
        // Bytes go as a header and the caller's buffer together: by sendmsg.
        SyscallFaults.inject([.interrupted, .interrupted], into: "sendmsg")
        try left.sendBytes([7, 8, 9])
        #expect(try right.recvBytes() == [7, 8, 9])
        #expect(SyscallFaults.pending("sendmsg") == 0, "sendmsg did not go through the errno path")
    }

    @Test("EAGAIN on accept4 is 'nobody yet': accept waits on and returns the connection")
    func acceptWouldBlock() throws {
        defer { SyscallFaults.clear() }
        let address = MP.Address.abstract("mp-fault-accept-\(getpid())")
        let listener = try MP.Listener(address: address)
        defer { listener.close() }
        let client = try MP.Client(address: address)
        SyscallFaults.inject([.resourceTemporarilyUnavailable], into: "accept4")
        let server = try listener.accept()
        #expect(SyscallFaults.pending("accept4") == 0)
        try client.send("after EAGAIN")
        #expect(try server.recv(String.self) == "after EAGAIN")
    }

    @Test("ENOMEM on socketpair: Pipe() throws an error naming the call, and the next Pipe() works")
    func pipeOutOfMemory() throws {
        defer { SyscallFaults.clear() }
        let before = openDescriptorCount()
        SyscallFaults.inject([.noMemory], into: "socketpair")
        #expect {
            _ = try MP.Pipe()
        } throws: { error in
            guard let failure = error as? MP.Error, failure.code == .system, let os = failure.underlying else { return false }
            return os.operation == "socketpair" && os.errno == .noMemory
                && "\(error)".contains("socketpair failed: Cannot allocate memory")
        }
        #expect(openDescriptorCount() == before, "a failed Pipe() left descriptors open")
        let (left, right) = try MP.Pipe()
        try left.send(1)
        #expect(try right.recv(Int.self) == 1)
    }

    @Test("ENOMEM on fork: start() throws it, the object can be started again, and nothing is left behind")
    func forkOutOfMemory() throws {
        defer { SyscallFaults.clear() }
        let process = MP.Process { }
        SyscallFaults.inject([.noMemory], into: "fork")
        #expect {
            try process.start()
        } throws: { error in
            guard let failure = error as? MP.Error, failure.code == .system, let os = failure.underlying else { return false }
            return os.operation == "fork" && os.errno == .noMemory
        }
        #expect(process.pid == nil)
        #expect(!hasAnyChild())
        try process.start()
        try joinOrKill(process)
        #expect(process.exitCode == 0)
    }

    @Test("ENOMEM when an await registers with epoll: join() throws it; the child is still joined and reaped")
    func awaitOutOfMemory() async throws {
        defer { SyscallFaults.clear() }
        let gate = TestPipe()
        let process = MP.Process { gate.awaitSignal() }
        try process.start()
        SyscallFaults.inject([.noMemory], into: "epoll_ctl(EPOLL_CTL_ADD)")
        await #expect {
            try await process.join()
        } throws: { error in
            guard let failure = error as? MP.Error, failure.code == .system, let os = failure.underlying else { return false }
            return os.operation == "epoll_ctl(EPOLL_CTL_ADD)" && os.errno == .noMemory
        }
        gate.signal()
        try joinOrKill(process)
        #expect(process.exitCode == 0)
        #expect(!hasAnyChild())
    }
}
