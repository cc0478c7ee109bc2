/// What the cluster module (`MultiprocessingCluster`) needs from the core,
/// as SPI: a chunk of named tasks as bytes that another machine of the same
/// build runs by name, and their results as bytes. Not for applications.
@_spi(Cluster)
public enum _NamedTaskChunks {
    /// This build's identity (the executable's GNU build id): a cluster
    /// worker claims only the tasks of its own build.
    public static var build: String { BuildIdentity.current }

    /// Refuses a task type another process could not find by name.
    public static func check<T: MP.NamedTask>(_ type: T.Type) throws(MP.Error) {
        try TaskRegistry.shared.checkSendable(T.self)
    }

    /// A chunk of tasks of one type, encoded.
    public static func encode<T: MP.NamedTask>(_ tasks: [T]) throws(MP.Error) -> [UInt8] {
        try WireFormat.encode(tasks)
    }

    /// A chunk's results, decoded: the bytes ``run(name:payload:on:)`` returned.
    public static func decodeResults<T: MP.NamedTask>(_ type: T.Type, from bytes: [UInt8]) throws(MP.Error) -> [T.Result] {
        let parts = try WireFormat.decode([[UInt8]].self, from: bytes)
        var results: [T.Result] = []
        results.reserveCapacity(parts.count)
        for part in parts { results.append(try T._decodeResult(part)) }
        return results
    }

    /// How a chunk failed, as the cluster records it.
    public enum Failure: Swift.Error, Sendable {
        /// A task threw: its type and description (not retried unless asked).
        case taskFailed(type: String, description: String)
        /// The local worker process running it died (the chunk may be run again).
        case workerLost(String)
        /// The chunk cannot run in this build (unknown name, undecodable arguments, an unencodable result).
        case unrunnable(String)
        /// The local pool was terminated or the call cancelled.
        case cancelled
    }

    /// A chunk submitted to a local pool: ``whenReady(_:)`` hands over its
    /// results (encoded) or its failure, once it has them; ``cancel()``
    /// stops it (a running task's process is killed).
    public final class Submission: @unchecked Sendable {
        private let observe: (@escaping @Sendable (Result<[UInt8], Failure>) -> Void) -> Void
        private let cancelBody: () -> Void

        init(observe: @escaping (@escaping @Sendable (Result<[UInt8], Failure>) -> Void) -> Void, cancel: @escaping () -> Void) {
            self.observe = observe
            cancelBody = cancel
        }

        /// One that failed before it was submitted.
        convenience init(failed: Failure) {
            self.init(observe: { $0(.failure(failed)) }, cancel: {})
        }

        /// Calls `body` with the outcome once it is ready (at once if it is),
        /// on the local pool's thread: keep it short.
        public func whenReady(_ body: @escaping @Sendable (Result<[UInt8], Failure>) -> Void) { observe(body) }

        public func cancel() { cancelBody() }
    }

    /// Decodes the chunk of tasks named `name` and submits it to `pool`
    /// (one local worker process runs the whole chunk), without waiting.
    public static func submit(name: String, payload: [UInt8], on pool: MP.TaskPool) -> Submission {
        let type: any MP.NamedTask.Type
        do { type = try TaskRegistry.shared.task(named: name) } catch {
            return Submission(failed: .unrunnable("\(error)"))
        }
        return submit(type, payload: payload, on: pool)
    }

    private static func submit<T: MP.NamedTask>(_ type: T.Type, payload: [UInt8], on pool: MP.TaskPool) -> Submission {
        let tasks: [T]
        do { tasks = try WireFormat.decode([T].self, from: payload) } catch {
            return Submission(failed: .unrunnable("the arguments of \(T.name) do not decode: \(error)"))
        }
        if tasks.count == 1 {
            let result = pool.applyAsync(tasks[0])
            return Submission(observe: { body in result.whenReady { body(encoded(T.self, $0.map { [$0] })) } },
                              cancel: { result.cancel() })
        }
        let result = pool.mapAsync(tasks, chunksize: max(1, tasks.count))
        return Submission(observe: { body in result.whenReady { body(encoded(T.self, $0)) } },
                          cancel: { result.cancel() })
    }

    private static func encoded<T: MP.NamedTask>(_ type: T.Type, _ outcome: Result<[T.Result], MP.Error>) -> Result<[UInt8], Failure> {
        let results: [T.Result]
        switch outcome {
        case .success(let values): results = values
        case .failure(let error):
            switch error.code {
            case .taskFailed:
                let type = error.errorType ?? "Error"
                let prefix = "task failed: \(type): "
                let description = error.message.hasPrefix(prefix) ? String(error.message.dropFirst(prefix.count)) : error.message
                return .failure(.taskFailed(type: type, description: description))
            case .workerDied: return .failure(.workerLost(error.message))
            case .memoryLimit, .cpuLimit, .timeout:
                // The task's own doing, not the machine's: it would go over
                // its limit anywhere, so it fails as a task, not run again.
                return .failure(.taskFailed(type: "MP.Error", description: error.message))
            case .cancelled, .closed: return .failure(.cancelled)
            default: return .failure(.unrunnable("\(error)"))
            }
        }
        do {
            var parts: [[UInt8]] = []
            parts.reserveCapacity(results.count)
            for result in results { parts.append(try T._encodeResult(result)) }
            return .success(try WireFormat.encode(parts))
        } catch {
            return .failure(.unrunnable("a result of \(T.name) does not encode: \(error)"))
        }
    }
}
