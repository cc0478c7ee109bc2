import Multiprocessing
import ServiceLifecycle

extension MP {
    /// A ``MP/TaskPool`` as a swift-service-lifecycle `Service`: run it in a
    /// `ServiceGroup` beside an HTTP server, and it stops with the group.
    ///
    /// ```swift
    /// let pool = try MP.TaskPool(processes: 4)
    /// let group = ServiceGroup(services: [MP.TaskPoolService(pool), httpServer],
    ///                          gracefulShutdownSignals: [.sigterm], logger: logger)
    /// try await group.run()
    /// ```
    ///
    /// The pool serves from the moment it is made; the service is its
    /// lifetime. On graceful shutdown (SIGTERM to the group) it takes no
    /// more tasks (``MP/TaskPool/close()``) and lets the submitted ones
    /// finish for up to ``shutdownGrace`` seconds; what is still running
    /// then is terminated. On cancellation it terminates at once. Either way
    /// every worker has exited when ``run()`` returns.
    public struct TaskPoolService: Service {
        /// The pool.
        public let pool: MP.TaskPool
        /// Seconds the submitted tasks may take to finish after a graceful shutdown.
        public let shutdownGrace: Double

        public init(_ pool: MP.TaskPool, shutdownGrace: Double = 30) {
            self.pool = pool
            self.shutdownGrace = max(0, shutdownGrace)
        }

        public func run() async throws {
            let pool = self.pool
            do {
                try await gracefulShutdown()
            } catch {
                // Cancelled: at once.
                pool.terminate()
                try? await pool.join()
                return
            }
            pool.close()
            let grace = shutdownGrace
            await withTaskCancellationHandler {
                await withTaskGroup(of: Bool.self) { group in
                    group.addTask { (try? await pool.join()) != nil }
                    group.addTask {
                        try? await Task.sleep(for: .seconds(grace))
                        return false
                    }
                    let joined = await group.next() ?? false
                    if !joined { pool.terminate() }
                    group.cancelAll()
                }
            } onCancel: {
                pool.terminate()
            }
            try? await pool.join()
        }
    }

    /// A manager's server (``MP/Manager/server(address:authkey:)``) as a
    /// swift-service-lifecycle `Service`: it serves other processes and
    /// machines until graceful shutdown or cancellation, then stops, closing
    /// its listener and connections.
    public struct ManagerService: Service {
        /// The server.
        public let server: MP.Manager.Server

        public init(_ server: MP.Manager.Server) { self.server = server }

        public func run() async throws {
            let server = self.server
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await server.serve()
            } onCancelOrGracefulShutdown: {
                server.stop()
            }
        }
    }
}
