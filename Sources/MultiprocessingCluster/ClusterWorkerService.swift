import Multiprocessing
import ServiceLifecycle
import Synchronization

extension MP.Cluster {
    /// A cluster worker (what `MP.Cluster.runWorker(database:)` runs) as a
    /// swift-service-lifecycle `Service`, to run in a `ServiceGroup` beside
    /// an HTTP server or the task pool's service (`MP.TaskPoolService`).
    ///
    /// On graceful shutdown (the group's SIGTERM) it stops as a worker does
    /// on SIGTERM: it claims nothing more, lets running tasks finish for up
    /// to one lease, hands the rest back (their attempt not counted) and
    /// returns. On cancellation it stops at once: its local processes are
    /// killed, and their tasks run elsewhere once their lease passes. It
    /// installs no signal handler of its own; the group has them.
    public struct WorkerService: Service {
        private let address: DatabaseAddress
        private let concurrency: Int
        private let startMethod: MP.StartMethod?
        private let lease: Double
        private let limits: MP.WorkerLimits?

        /// The same parameters as `MP.Cluster.runWorker(database:concurrency:startMethod:lease:limits:)`,
        /// checked here.
        public init(database: String, concurrency: Int? = nil, startMethod: MP.StartMethod? = nil, lease: Double = 10,
                    limits: MP.WorkerLimits? = nil) throws(MP.Error) {
            guard lease >= 1 else { throw .invalidArgument("lease must be at least 1 s (got \(lease))") }
            let processes = concurrency ?? MP.processCpuCount()
            guard processes >= 1 else { throw .invalidArgument("concurrency must be at least 1 (got \(processes))") }
            if let limits { try limits.check() }
            address = try DatabaseAddress(database)
            self.concurrency = processes
            self.startMethod = startMethod
            self.lease = lease
            self.limits = limits
        }

        public func run() async throws {
            let worker = try ClusterWorker(address: address, processes: concurrency, startMethod: startMethod, lease: lease, limits: limits)
            try await withTaskCancellationHandler {
                try await withGracefulShutdownHandler {
                    try await worker.run(handlesSignals: false)
                } onGracefulShutdown: {
                    worker.stopHere.store(true, ordering: .sequentiallyConsistent)
                }
            } onCancel: {
                worker.stopHere.store(true, ordering: .sequentiallyConsistent)
                worker.pool.terminate()
            }
        }
    }
}
