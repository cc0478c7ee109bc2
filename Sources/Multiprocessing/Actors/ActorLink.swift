import Glibc
import MultiprocessingPlatform

/// This process's connection to one actor host: calls go out from any task
/// (a send under a lock), one thread reads the replies and resumes their
/// callers. When the host or the link dies, every pending call fails at
/// once, and every later one too, with how it died.
final class ActorLink: @unchecked Sendable {
    let address: MP.Address
    let incarnation: UInt64
    private let connection: MP.Connection
    private let sendLock = ForkSafeLock()
    private let lock = ForkSafeLock()
    private var pending: [UInt64: CheckedContinuation<[UInt8], any Swift.Error>] = [:]
    private var nextCall: UInt64 = 1
    private var failure: MP.Error?
    /// How the host's process ended, when this process started it.
    var exitDescription: (@Sendable () -> String?)?

    /// Connects, authenticates, and checks that the host is this build.
    init(address: MP.Address, authkey: [UInt8], system: MP.ActorSystem) throws(MP.Error) {
        self.address = address
        let connection: MP.Connection
        do {
            connection = try MP.Client(address: address, authkey: authkey)
        } catch {
            if error.code == .authentication { throw error }
            throw .hostGone(address, "cannot connect: \(error.message)")
        }
        var hello = ByteWriter()
        hello.write(ActorFrames.Request.hello.rawValue)
        hello.write(BuildIdentity.current)
        let reply: [UInt8]
        do {
            try connection.sendBytes(hello.bytes)
            reply = try connection.recvBytes()
        } catch {
            connection.close()
            throw .hostGone(address, "the hello failed: \(error.message)")
        }
        var incarnation: UInt64 = 0
        let refused: MP.Error? = reply.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(MP.Error) {
                _ = try reader.read(UInt64.self)
                let status = try reader.readByte()
                if status == ActorFrames.Status.ok.rawValue {
                    incarnation = try reader.read(UInt64.self)
                    return nil
                }
                return try ActorWire.failure(status, &reader)
            } catch {
                return error
            }
        }
        if let refused {
            connection.close()
            if refused.code == .cannotCross { throw .otherBuild(address, theirs: refused.message) }
            throw refused
        }
        self.incarnation = incarnation
        self.connection = connection
        let started = startThread { [self] in readReplies() }
        if case .failure(let error) = started {
            connection.close()
            throw .hostGone(address, "no thread to read replies: \(error)")
        }
    }

    /// Sends a request and waits for its reply's payload (after the status byte).
    func request(_ kind: ActorFrames.Request, _ body: (inout ByteWriter) -> Void) async throws(MP.Error) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(kind.rawValue)
        let call = lock.withLock { () -> UInt64 in
            defer { nextCall += 1 }
            return nextCall
        }
        writer.write(call)
        body(&writer)
        let frame = writer.bytes
        do {
            return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Swift.Error>) in
                let failed = lock.withLock { () -> MP.Error? in
                    if let failure { return failure }
                    pending[call] = continuation
                    return nil
                }
                if let failed {
                    continuation.resume(throwing: failed)
                    return
                }
                do throws(MP.Error) {
                    try sendLock.withLock { () throws(MP.Error) in try connection.sendBytes(frame) }
                } catch {
                    // The reader sees the same end and fails the rest.
                    if let waiting = lock.withLock({ pending.removeValue(forKey: call) }) {
                        waiting.resume(throwing: MP.Error.hostGone(address, ending(error)))
                    }
                }
            }
        } catch let error as MP.Error {
            throw error
        } catch {
            throw .hostGone(address, "\(error)")
        }
    }

    /// Tells the host this process holds actor `number` (no reply; it
    /// arrives before any call sent after it).
    func hold(_ number: UInt64) throws(MP.Error) {
        if let failure = lock.withLock({ failure }) { throw failure }
        var writer = ByteWriter()
        writer.write(ActorFrames.Request.hold.rawValue)
        writer.write(number)
        do {
            try sendLock.withLock { () throws(MP.Error) in try connection.sendBytes(writer.bytes) }
        } catch {
            throw .hostGone(address, ending(error))
        }
    }

    private func readReplies() {
        while true {
            let reply: [UInt8]
            do {
                reply = try connection.recvBytes()
            } catch {
                fail(.hostGone(address, ending(error)))
                return
            }
            var call: UInt64 = 0
            let outcome: Result<[UInt8], MP.Error> = reply.withUnsafeBytes { raw in
                var reader = ByteReader(raw)
                do throws(MP.Error) {
                    call = try reader.read(UInt64.self)
                    let status = try reader.readByte()
                    if status == ActorFrames.Status.ok.rawValue {
                        return .success([UInt8](try reader.readRaw(reader.remaining)))
                    }
                    return .failure(try ActorWire.failure(status, &reader))
                } catch {
                    return .failure(error)
                }
            }
            guard let waiting = lock.withLock({ pending.removeValue(forKey: call) }) else {
                fail(.malformed(type: "actor reply", reason: "a reply to call \(call), which is not pending"))
                return
            }
            waiting.resume(with: outcome.mapError { $0 })
        }
    }

    /// What the end of the link says: how the host's process ended, when known.
    private func ending(_ error: MP.Error) -> String {
        if let how = exitDescription?() { return how }
        switch error.code {
        case .endOfFile, .brokenPipe: return "the connection closed (the host process ended or closed it)"
        default: return error.message
        }
    }

    private func fail(_ error: MP.Error) {
        let waiting = lock.withLock { () -> [CheckedContinuation<[UInt8], any Swift.Error>] in
            if failure == nil { failure = error }
            defer { pending = [:] }
            return Swift.Array(pending.values)
        }
        for continuation in waiting { continuation.resume(throwing: failure ?? error) }
        connection.close()
    }

    func close() { Sys.shutdownBoth(connection.fileno) }

    /// In a forked child: the parent's connection is not this process's; its descriptor is closed, nothing sent.
    func abandonInChild() {
        lock.withLock { failure = .hostGone(address, "a forked child does not share its parent's link") }
        connection.close()
    }
}
