import MultiprocessingPlatform

/// What a serving child tells its starter over a one-way pipe.
enum ServingReady: Codable {
    case listening(MP.Address)
    case failed(String)
}

/// A daemon child that listens for a server of the library (a manager's,
/// an actor host's) and says where, or why it could not: the starter waits
/// for that (at most 60 s), so a child that dies or hangs before it listens
/// is a clear error, never a hang.
enum ServingProcess {
    /// Starts the task `makeTask(report)` makes as a daemon process named
    /// `name`; returns it with the address it listens on. `failure` words
    /// each error for its kind of server ("the manager …").
    static func start<T: MP.NamedTask>(name: String, method: MP.StartMethod?,
                                       makeTask: (MP.Connection) -> T,
                                       failure: (String) -> MP.Error) throws(MP.Error) -> (MP.Process, MP.Address) {
        let (ready, report): (MP.Connection, MP.Connection)
        do { (ready, report) = try MP.Pipe(duplex: false) } catch { throw failure("no pipe for its report: \(error.message)") }
        let process = MP.getContext(method).Process(name: name, daemon: true, target: makeTask(report))
        do {
            try process.start()
        } catch {
            throw failure("its process did not start: \(error.message)")
        }
        report.close()
        defer { ready.close() }
        let outcome: ServingReady
        do {
            guard try ready.poll(timeout: 60) else {
                try? process.kill()
                _ = try? process.join(timeout: 5)
                throw failure("its process did not report within 60 s")
            }
            outcome = try ready.recv(ServingReady.self)
        } catch {
            if let error = error as? MP.Error, error.code == .disconnected { throw error }
            _ = try? process.join(timeout: 5)
            throw failure("its process ended before it listened (\(process.exitStatus.map { "\($0)" } ?? "still running"))")
        }
        switch outcome {
        case .failed(let why):
            _ = try? process.join(timeout: 5)
            throw failure("it could not listen: \(why)")
        case .listening(let bound):
            if case .unix(let path) = bound { ResourceTracker.registerFile(path) }
            return (process, bound)
        }
    }

    /// In the child: listens at `address` and reports where, or reports why
    /// not (nil). SIGINT is ignored, as CPython's manager does: a ^C in the
    /// terminal reaches the starter, which stops its servers.
    static func listen(at address: MP.Address, authkey: [UInt8], report: MP.Connection) throws -> MP.Listener? {
        let listener: MP.Listener
        do {
            listener = try MP.Listener(address: address, authkey: authkey, backlog: 128)
        } catch {
            try report.send(ServingReady.failed("\(error)"))
            return nil
        }
        Sys.ignore(signal: MP.Signal.interrupt.rawValue)
        return listener
    }

    /// In the forkserver, before its first fork: what a serving child of
    /// `make`'s kind does first (its task decoded, its report encoded and
    /// framed), done once on a sample so that every child inherits the
    /// runtime's answers instead of asking them itself: each is a scan of
    /// every conformance record of the program (a millisecond of a
    /// forkserver child's start in a program linking Foundation).
    static func warmUp<T: MP.NamedTask>(_ make: (MP.Connection) -> T) {
        guard let (one, other) = try? MP.Pipe(duplex: false) else { return }
        // The sample's decoder must not make this process's actor system:
        // each child makes its own (its incarnation is its own).
        let actorSystem = BinaryDecoder.actorSystem
        BinaryDecoder.actorSystem = nil
        defer {
            BinaryDecoder.actorSystem = actorSystem
            one.close()
            other.close()
        }
        let table = DescriptorTable()
        if let bytes = try? WireFormat.encode(make(other), descriptors: table) {
            _ = try? WireFormat.decode(T.self, from: bytes, descriptors: ReceivedDescriptors(table.descriptors))
        }
        for sample in [ServingReady.listening(.unix("")), .listening(.tcp(host: "", port: 0)), .failed("")] {
            _ = try? WireFormat.decode(ServingReady.self, from: WireFormat.encode(sample))
        }
        _ = WireFormat.typeTag(ServingReady.self)
    }

    /// In the child, once it serves: says where.
    static func ready(_ listener: MP.Listener, report: MP.Connection) throws {
        try report.send(ServingReady.listening(listener.address))
        report.close()
    }
}
