import CoreMetrics
import MultiprocessingPlatform

/// A task pool's metrics, through swift-metrics: no backend is chosen here,
/// and with none bootstrapped every call is the no-op handler's.
///
/// | label | kind | dimensions |
/// |---|---|---|
/// | `mp_tasks_submitted_total` | counter | `pool` |
/// | `mp_tasks_completed_total` | counter | `pool` |
/// | `mp_tasks_failed_total` | counter | `pool`, `reason`: `error`, `worker_died`, `timeout`, `memory`, `cpu`, `cancelled`, `terminated`, `other` |
/// | `mp_task_duration_seconds` | timer | `pool` (the run time in the worker) |
/// | `mp_task_queue_wait_seconds` | timer | `pool` (submitted to sent to a worker) |
/// | `mp_workers_started_total` | counter | `pool` |
/// | `mp_workers_replaced_total` | counter | `pool` |
/// | `mp_workers_busy` | gauge | `pool` |
///
/// A map's chunk counts its tasks.
final class PoolMetrics: Sendable {
    /// Tests only: the factory new pools use instead of the bootstrapped one.
    nonisolated(unsafe) static var factoryForTesting: (any MetricsFactory)?

    let submitted: CoreMetrics.Counter
    let completed: CoreMetrics.Counter
    let failed: [String: CoreMetrics.Counter]
    let duration: CoreMetrics.Timer
    let queueWait: CoreMetrics.Timer
    let workersStarted: CoreMetrics.Counter
    let workersReplaced: CoreMetrics.Counter
    let busy: CoreMetrics.Gauge

    static let reasons = ["error", "worker_died", "timeout", "memory", "cpu", "cancelled", "terminated", "other"]

    init(pool: String) {
        let factory = Self.factoryForTesting ?? MetricsSystem.factory
        let dimensions = [("pool", pool)]
        submitted = CoreMetrics.Counter(label: "mp_tasks_submitted_total", dimensions: dimensions, factory: factory)
        completed = CoreMetrics.Counter(label: "mp_tasks_completed_total", dimensions: dimensions, factory: factory)
        var failed: [String: CoreMetrics.Counter] = [:]
        for reason in Self.reasons {
            failed[reason] = CoreMetrics.Counter(label: "mp_tasks_failed_total", dimensions: dimensions + [("reason", reason)], factory: factory)
        }
        self.failed = failed
        duration = CoreMetrics.Timer(label: "mp_task_duration_seconds", dimensions: dimensions, factory: factory)
        queueWait = CoreMetrics.Timer(label: "mp_task_queue_wait_seconds", dimensions: dimensions, factory: factory)
        workersStarted = CoreMetrics.Counter(label: "mp_workers_started_total", dimensions: dimensions, factory: factory)
        workersReplaced = CoreMetrics.Counter(label: "mp_workers_replaced_total", dimensions: dimensions, factory: factory)
        busy = CoreMetrics.Gauge(label: "mp_workers_busy", dimensions: dimensions, factory: factory)
    }

    /// The reason dimension of a failure.
    static func reason(_ error: MP.Error) -> String {
        switch error.code {
        case .taskFailed: "error"
        case .workerDied: "worker_died"
        case .timeout: "timeout"
        case .memoryLimit: "memory"
        case .cpuLimit: "cpu"
        case .cancelled: "cancelled"
        case .closed where error.message == MP.Error.terminated.message: "terminated"
        default: "other"
        }
    }

    /// `count` tasks ended as `outcome` says.
    func ended(_ count: Int, failure: MP.Error?) {
        if let failure {
            failed[Self.reason(failure)]?.increment(by: count)
        } else {
            completed.increment(by: count)
        }
    }
}
