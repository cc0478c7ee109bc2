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
    private var pending: [UInt64: Waiter] = [:]
    /// Someone (a caller, or the link's thread) is reading replies.
    private var reading = false
    private var nextCall: UInt64 = 1
    private var failure: MP.Error?
    /// How the host's process ended, when this process started it.
    var exitDescription: (@Sendable () -> String?)?

    /// How long a TCP link may be silent before its calls fail (nil on a Unix socket).
    let linkTimeout: Double?

    /// Connects, authenticates, and checks that the host is this build.
    init(address: MP.Address, authkey: [UInt8], linkTimeout: Double?, system: MP.ActorSystem) throws(MP.Error) {
        self.address = address
        self.linkTimeout = linkTimeout
        let connection: MP.Connection
        do {
            connection = try MP.Client(address: address, authkey: authkey)
        } catch {
            if error.code == .authentication { throw error }
            throw .hostGone(address, "cannot connect: \(error.message)")
        }
        if case .tcp = address, let linkTimeout { Sys.setLinkTimeout(connection.fileno, seconds: linkTimeout) }
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
            if refused.code == .cannotCross { throw .otherBuild(address, theirs: refused.message, ours: BuildIdentity.current) }
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

    /// A call's place until its reply is handed over.
    private enum Waiter {
        /// Its caller is reading for it, or about to suspend.
        case waiting
        case suspended(CheckedContinuation<[UInt8], any Swift.Error>)
        case arrived(Result<[UInt8], MP.Error>)
    }

    /// How long a caller reads for its own reply before it suspends and
    /// leaves the reading to the link's thread: a quick call costs no
    /// hand-over between threads, a slow one holds no thread.
    private static let readWindow: Int64 = 300_000

    /// Sends a request and waits for its reply's payload (after the status byte).
    func request(_ kind: ActorFrames.Request, _ body: (inout ByteWriter) -> Void) async throws(MP.Error) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(kind.rawValue)
        let call: UInt64 = try lock.withLock { () throws(MP.Error) -> UInt64 in
            if let failure { throw failure }
            defer { nextCall += 1 }
            pending[nextCall] = .waiting
            return nextCall
        }
        writer.write(call)
        body(&writer)
        do {
            try sendLock.withLock { () throws(MP.Error) in try connection.sendBytes(writer.bytes) }
        } catch {
            lock.withLock { _ = pending.removeValue(forKey: call) }
            throw .hostGone(address, ending(error))
        }
        if let quick = readOwnReply(call) { return try quick.get() }
        do {
            // A cancelled caller stops waiting (the host still runs the call;
            // its reply, when it comes, is dropped).
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Swift.Error>) in
                    let arrived = lock.withLock { () -> Result<[UInt8], MP.Error>? in
                        if case .arrived(let outcome)? = pending[call] {
                            pending[call] = nil
                            return outcome
                        }
                        if pending[call] == nil { return .failure(failure ?? .cancelled) }
                        pending[call] = .suspended(continuation)
                        return nil
                    }
                    if let arrived { continuation.resume(with: arrived.mapError { $0 }) }
                }
            } onCancel: {
                let waiting = lock.withLock { () -> CheckedContinuation<[UInt8], any Swift.Error>? in
                    switch pending[call] {
                    case .suspended(let continuation)?:
                        pending[call] = nil
                        return continuation
                    case .waiting?:
                        pending[call] = nil // the caller finds it gone as it suspends
                        return nil
                    case .arrived?, nil:
                        return nil
                    }
                }
                waiting?.resume(throwing: MP.Error.cancelled)
            }
        } catch let error as MP.Error {
            throw error
        } catch {
            throw .hostGone(address, "\(error)")
        }
    }

    /// Reads replies on the caller's thread, for at most ``readWindow``,
    /// when no one else reads and this is the only call waiting; nil when
    /// its reply did not come (the link's thread reads from then on).
    private func readOwnReply(_ call: UInt64) -> Result<[UInt8], MP.Error>? {
        let mine = lock.withLock { () -> Bool in
            guard !reading, pending.count == 1 else {
                // Others wait too: the link's thread reads for all (waking it
                // if it sleeps with no one reading).
                if !reading { lock.broadcast() }
                return false
            }
            reading = true
            return true
        }
        guard mine else { return nil }
        let until = Deadline.now + Self.readWindow
        let spinUntil = Deadline.now + ActorHostServer.spinNanoseconds
        // Alone no more (another call went out): this thread is one of the
        // few that run tasks, so it stops waiting here and the link's
        // thread reads for all.
        func joined() -> Bool { lock.withLock { pending.count > 1 } }
        while true {
            var ready: Bool
            do {
                // A quick reply is looked for without sleeping, then waited for.
                ready = try connection.poll(timeout: 0)
                while !ready && Deadline.now < spinUntil {
                    if joined() { break }
                    ready = try connection.poll(timeout: 0)
                }
                if !ready && !joined() { ready = try connection.poll(timeout: max(0, Double(until - Deadline.now) / 1e9)) }
            } catch {
                ready = true // the read below meets the same failure
            }
            if !ready { break }
            guard let frame = readFrame() else { return lock.withLock { takeArrived(call) } }
            if frame.call == call {
                lock.withLock {
                    pending[call] = nil
                    reading = false
                    if !pending.isEmpty { lock.broadcast() }
                }
                return frame.outcome
            }
            deliver(frame)
            if joined() { break }
        }
        lock.withLock {
            reading = false
            lock.broadcast() // the link's thread reads for the call now
        }
        return nil
    }

    /// With the lock held: a reply that arrived meanwhile, taken.
    private func takeArrived(_ call: UInt64) -> Result<[UInt8], MP.Error>? {
        reading = false
        if case .arrived(let outcome)? = pending[call] {
            pending[call] = nil
            return outcome
        }
        return nil
    }

    private struct Frame {
        let call: UInt64
        let outcome: Result<[UInt8], MP.Error>
    }

    /// Reads one reply; nil when the link ended (every pending call then failed).
    private func readFrame() -> Frame? {
        let reply: [UInt8]
        do {
            reply = try connection.recvBytes()
        } catch {
            if error.underlying?.errno == .timedOut, let linkTimeout {
                fail(MP.Error(.timeout, "the actor host at \(address) did not answer within the link timeout (\(linkTimeout) s): the link is down or the host is gone"))
            } else {
                fail(.hostGone(address, ending(error)))
            }
            return nil
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
        return Frame(call: call, outcome: outcome)
    }

    /// Hands a reply to its call: resumes a suspended caller, or leaves it for one about to suspend.
    private func deliver(_ frame: Frame) {
        let resume = lock.withLock { () -> CheckedContinuation<[UInt8], any Swift.Error>? in
            switch pending[frame.call] {
            case .suspended(let continuation)?:
                pending[frame.call] = nil
                return continuation
            case .waiting?:
                pending[frame.call] = .arrived(frame.outcome)
                return nil
            case .arrived?, nil:
                return nil // not ours to take: dropped (a reply repeated by a broken host)
            }
        }
        resume?.resume(with: frame.outcome.mapError { $0 })
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

    /// The link's thread: reads while calls wait and no caller reads for its own.
    private func readReplies() {
        while true {
            lock.lock()
            while failure == nil && (reading || pending.isEmpty) { lock.wait() }
            if failure != nil {
                lock.unlock()
                return
            }
            reading = true
            lock.unlock()
            guard let frame = readFrame() else { return }
            lock.withLock { reading = false }
            deliver(frame)
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
        let (waiting, final) = lock.withLock { () -> ([CheckedContinuation<[UInt8], any Swift.Error>], MP.Error) in
            if self.failure == nil { self.failure = error }
            let failure = self.failure!
            var waiting: [CheckedContinuation<[UInt8], any Swift.Error>] = []
            for (call, waiter) in pending {
                switch waiter {
                case .suspended(let continuation):
                    waiting.append(continuation)
                    pending[call] = nil
                case .waiting, .arrived:
                    // Its caller is still on its way: it finds the failure.
                    pending[call] = .arrived(.failure(failure))
                }
            }
            reading = false
            lock.broadcast()
            return (waiting, failure)
        }
        for continuation in waiting { continuation.resume(throwing: final) }
        Sys.shutdownBoth(connection.fileno)
    }

    func close() { Sys.shutdownBoth(connection.fileno) }

    /// Ends the link: pending and later calls fail with `why`; its thread exits.
    func end(_ why: String) { fail(.hostGone(address, why)) }

    /// In a forked child: the parent's connection is not this process's;
    /// its descriptor is closed, nothing sent. (No thread reads here.)
    func abandonInChild() {
        failure = .hostGone(address, "a forked child does not share its parent's link")
        pending = [:]
        connection.close()
    }
}
