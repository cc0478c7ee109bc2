import Distributed
import Glibc
import MultiprocessingPlatform

/// The serving side of a host: one thread per connection reads requests;
/// each call runs in a task of its own (the actor's executor orders the
/// calls to one actor), and its reply is sent when it is done.
final class ActorHostServer: @unchecked Sendable {
    private let listener: MP.Listener
    private let system: MP.ActorSystem
    private let counter = Atomic64()
    /// How long a connection's thread looks for the next request before it sleeps.
    static let spinNanoseconds: Int64 = 50_000
    /// At most this many requests are read before their calls run.
    static let batchLimit = 128

    init(listener: MP.Listener, system: MP.ActorSystem) {
        self.listener = listener
        self.system = system
        _ = system.startHosting(at: listener.address)
    }

    func serveForever() -> Never {
        while true {
            let connection: MP.Connection
            do {
                connection = try listener.accept()
            } catch {
                // A failed handshake costs that peer its connection, not the host.
                if error.code == .system { Sys.sleep(microseconds: 50_000) }
                continue
            }
            // A client gone silent (a cut link) lets its holds go within about this.
            if case .tcp = listener.address { Sys.setLinkTimeout(connection.fileno, seconds: MP.ActorSystem.defaultLinkTimeout) }
            let holder = counter.next()
            if case .failure = startThread({ [self] in serve(connection, holder: holder) }) { connection.close() }
        }
    }

    private func serve(_ connection: MP.Connection, holder: UInt64) {
        defer {
            system.dropAll(holder: holder)
            connection.close()
        }
        // The hello: the same build, or nothing.
        guard let hello = try? connection.recvBytes() else { return }
        var helloReply = ByteWriter()
        helloReply.write(UInt64(0))
        let build: String? = hello.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            guard (try? reader.readByte()) == ActorFrames.Request.hello.rawValue else { return nil }
            return try? reader.readString()
        }
        guard build == BuildIdentity.current else {
            helloReply.write(ActorFrames.Status.failed.rawValue)
            helloReply.write(MP.Error.Code.cannotCross.name)
            helloReply.write(build ?? "no hello")
            try? connection.sendBytes(helloReply.bytes)
            LibraryLog.log(.warning, "actor host: refused a client of another build (\(build ?? "no hello"))")
            return
        }
        helloReply.write(ActorFrames.Status.ok.rawValue)
        helloReply.write(system.incarnation)
        guard (try? connection.sendBytes(helloReply.bytes)) != nil else { return }

        let outbox = ReplyOutbox(connection)
        let send: @Sendable ([UInt8]) -> Void = { outbox.send($0) }
        // This thread runs the connection's calls too (their tasks prefer
        // its executor): a call that does not suspend is read, run and
        // answered here, with no hand-over to another thread.
        guard let executor = try? ConnectionExecutor() else { return }
        defer { executor.finish() }
        while true {
            executor.runPending()
            outbox.flush()
            guard var readable = try? connection.poll(timeout: 0) else { return }
            // A client's next call usually follows its reply at once: look
            // for it a while before sleeping (a wake-up costs more here).
            let spinUntil = Deadline.now + Self.spinNanoseconds
            while !readable && Deadline.now < spinUntil && !executor.hasJobs {
                guard let now = try? connection.poll(timeout: 0) else { return }
                readable = now
            }
            if !readable {
                guard executor.wait(for: connection.fileno) else { continue } // woken for jobs
            }
            // The requests that came together are read together; their
            // calls then run, and their replies leave in one send.
            var batch = 0
            repeat {
                guard let request = try? connection.recvBytes() else { return }
                let malformed: MP.Error? = request.withUnsafeBytes { raw in
                    var reader = ByteReader(raw)
                    do throws(MP.Error) {
                        try handle(&reader, holder: holder, executor: executor, send: send)
                        return nil
                    } catch {
                        return error
                    }
                }
                if let malformed {
                    LibraryLog.log(.warning, "actor host: a malformed request (\(malformed.message)); closing that connection")
                    return
                }
                batch += 1
            } while batch < Self.batchLimit && connection.hasBufferedMessage
        }
    }

    private func handle(_ reader: inout ByteReader, holder: UInt64, executor: ConnectionExecutor,
                        send: @escaping @Sendable ([UInt8]) -> Void) throws(MP.Error) {
        let kind = try reader.readByte()
        if kind == ActorFrames.Request.hold.rawValue {
            _ = system.hold(try reader.read(UInt64.self), holder: holder)
            return
        }
        let call = try reader.read(UInt64.self)
        func reply(_ status: ActorFrames.Status, _ body: (inout ByteWriter) -> Void = { _ in }) {
            var writer = ByteWriter()
            writer.write(call)
            writer.write(status.rawValue)
            body(&writer)
            send(writer.bytes)
        }
        func refuse(_ error: MP.Error) {
            reply(.failed) {
                $0.write(error.code.name)
                $0.write(error.message)
            }
        }
        switch ActorFrames.Request(rawValue: kind) {
        case .call?:
            let number = try reader.read(UInt64.self)
            let target = try reader.readString()
            var generics: [String] = []
            for _ in 0..<(try reader.read(UInt32.self)) { generics.append(try reader.readString()) }
            var arguments: [[UInt8]] = []
            for _ in 0..<(try reader.read(UInt32.self)) { arguments.append([UInt8](try reader.readRaw(try reader.readLength()))) }
            guard let actor = system.hosted(number) else {
                refuse(.noSuchActor(MP.ActorID(host: system.hostAddress, incarnation: system.incarnation, number: number),
                                    "released, or never placed here"))
                return
            }
            let system = self.system
            executor.began()
            Task(executorPreference: executor) {
                defer { executor.ended() }
                var decoder = MP.ActorInvocationDecoder(generics: generics, arguments: arguments)
                let handler = MP.ActorResultHandler()
                do {
                    try await system.executeDistributedTarget(on: actor, target: RemoteCallTarget(target),
                                                              invocationDecoder: &decoder, handler: handler)
                } catch let error as MP.Error {
                    handler.failed(error)
                } catch {
                    handler.failed(.malformed(type: "actor call", reason: "\(target): \(error)"))
                }
                var writer = ByteWriter()
                writer.write(call)
                writer.writeRaw(handler.reply)
                send(writer.bytes)
            }
        case .place?:
            let name = try reader.readString()
            guard let type = _typeByName(name) as? any MP.PlaceableActor.Type else {
                refuse(.typeMismatch("no placeable distributed actor type \(name) in the host's build"))
                return
            }
            let actor = type.init(actorSystem: system)
            system.hold(actor.id.number, holder: holder)
            reply(.ok) { $0.write(actor.id.number) }
        case .release?:
            system.drop(try reader.read(UInt64.self), holder: holder)
            reply(.ok)
        case .count?:
            reply(.ok) { $0.write(UInt64(system.retainedCount)) }
        case .hello?, .hold?, nil:
            throw .malformed(type: "actor request", reason: "kind \(kind) here")
        }
    }
}

/// One connection's replies: those made on its thread (a call that ran
/// there, most of them) wait for the end of the batch and leave together;
/// one made on another thread leaves at once.
final class ReplyOutbox: @unchecked Sendable {
    private let connection: MP.Connection
    private let thread = Sys.gettid
    /// Touched only on the connection's thread.
    private var waiting: [[UInt8]] = []

    /// Made on the connection's thread.
    init(_ connection: MP.Connection) { self.connection = connection }

    func send(_ reply: [UInt8]) {
        if Sys.gettid == thread {
            waiting.append(reply)
        } else {
            // A client gone mid-call: its reader sees the end; nothing to do here.
            _ = try? connection.sendBytes(reply)
        }
    }

    /// On the connection's thread: sends what waits.
    func flush() {
        guard !waiting.isEmpty else { return }
        _ = try? connection.sendBytes(batch: waiting)
        waiting.removeAll(keepingCapacity: true)
    }
}

/// A task executor that is one connection's thread: jobs enqueued from any
/// thread wait in a queue that thread runs between reads; a wake-up pipe
/// stops its wait for the socket when a job comes from elsewhere.
final class ConnectionExecutor: TaskExecutor, @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var jobs: [UnownedJob] = []
    private var sleeping = false
    /// Calls whose tasks have not ended: the thread runs until none is left.
    private var alive = 0
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init() throws(OSError) {
        (wakeRead, wakeWrite) = try Sys.pipe()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let wake = lock.withLock { () -> Bool in
            jobs.append(job)
            defer { sleeping = false }
            return sleeping
        }
        if wake { Sys.poke(wakeWrite) }
    }

    var hasJobs: Bool { lock.withLock { !jobs.isEmpty } }

    /// Runs the jobs queued so far (and those they queue).
    func runPending() {
        while true {
            let ready = lock.withLock { () -> [UnownedJob] in
                defer { jobs = [] }
                return jobs
            }
            if ready.isEmpty { return }
            for job in ready { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
    }

    /// Waits until `fd` is readable (true) or a job arrives (false).
    func wait(for fd: Int32) -> Bool {
        let idle = lock.withLock { () -> Bool in
            if !jobs.isEmpty { return false }
            sleeping = true
            return true
        }
        guard idle else { return false }
        let ready = (try? Sys.pollReadable([fd, wakeRead], until: nil)) ?? [fd]
        lock.withLock { sleeping = false }
        if ready.contains(wakeRead) { Sys.drain(wakeRead) }
        return ready.contains(fd)
    }

    func began() { lock.withLock { alive += 1 } }

    func ended() {
        let wake = lock.withLock { () -> Bool in
            alive -= 1
            defer { sleeping = false }
            return sleeping
        }
        if wake { Sys.poke(wakeWrite) }
    }

    /// The connection ended: runs its calls' tasks to their end (their
    /// replies go nowhere), then closes.
    func finish() {
        while true {
            runPending()
            let waiting = lock.withLock { () -> Bool in
                if alive == 0 || !jobs.isEmpty { return false }
                sleeping = true
                return true
            }
            if lock.withLock({ alive == 0 && jobs.isEmpty }) { break }
            if waiting {
                _ = try? Sys.pollReadable(wakeRead, until: nil)
                lock.withLock { sleeping = false }
                Sys.drain(wakeRead)
            }
        }
        Sys.close(wakeRead)
        Sys.close(wakeWrite)
    }
}

/// Connection numbers of a host (0 is the host process itself).
private final class Atomic64: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var value: UInt64 = 0
    func next() -> UInt64 { lock.withLock { value += 1; return value } }
}
