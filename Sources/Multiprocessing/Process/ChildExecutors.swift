import _CMultiprocessingRuntime
import _CMultiprocessingSync
#if compiler(>=6.3)
@_spi(ExperimentalCustomExecutors) @_spi(ExperimentalScheduling) import _Concurrency
#endif

/// Swift concurrency in a forked child.
///
/// Threads do not survive `fork`. The runtime's default executors on Linux are
/// Dispatch-based, and Dispatch is dead in a child forked from a process that
/// used it. Two mechanisms together give the child working executors backed by
/// child-local threads (see `child_executor.c`):
///
/// - the runtime's enqueue hooks (`swift_task_enqueueGlobal_hook` and friends)
///   catch jobs the C++ runtime enqueues directly;
/// - since Swift 6.2 `Task.sleep` and main-actor scheduling go through the
///   executor objects (`Task.defaultExecutor`, `MainActor.executor`) instead,
///   whose delayed enqueue calls into Dispatch without consulting the hooks.
///   The runtime's executor-factory entry point replaces both with the
///   child-local executors below.
enum ChildExecutors {
    /// Whether this runtime has the hooks the child executors need. Looked up
    /// at run time (as NIO takes over the global executor), within the
    /// compiler versions this code was written against: a toolchain outside
    /// them, or a runtime without the hooks, runs no Swift concurrency in a
    /// forked child, and says so (``MP/Error/Code/startFailed``),
    /// instead of failing to link or to run.
    static let isAvailable: Bool = {
        #if compiler(>=6.0) && compiler(<7.0)
        return cmp_child_executor_resolve() == 1
        #else
        return false
        #endif
    }()

    /// Registers the Swift half of the set-up; call once, in the parent, before forking.
    static let prepare: Void = {
        guard isAvailable else { return }
        cmp_child_executor_set_swift_setup {
            #if compiler(>=6.3)
            _ = Task.defaultExecutor // runs the runtime's one-time default creation first
            _createExecutors(factory: ChildExecutorFactory.self)
            #endif
        }
    }()

}

#if compiler(>=6.3)
private struct ChildExecutorFactory: ExecutorFactory {
    static var mainExecutor: any MainExecutor { ChildMainExecutor.shared }
    static var defaultExecutor: any TaskExecutor { ChildTaskExecutor.shared }
}

/// Nanoseconds until `instant`, or of `delay`, for the clocks whose durations are `Duration`.
private func nanoseconds<D: DurationProtocol>(of delay: D) -> UInt64 {
    guard let duration = delay as? Duration else { return 0 }
    let (seconds, attoseconds) = duration.components
    if seconds < 0 { return 0 }
    return UInt64(seconds) &* 1_000_000_000 &+ UInt64(max(0, attoseconds) / 1_000_000_000)
}

private func rawJob(_ job: consuming ExecutorJob) -> UnsafeMutableRawPointer {
    unsafeBitCast(UnownedJob(job), to: UnsafeMutableRawPointer.self)
}

/// A child executor that can also run jobs later (`Task.sleep`): `schedule`
/// hands a job to the child's timer thread.
private protocol ChildScheduling: SchedulingExecutor {
    func schedule(_ job: UnsafeMutableRawPointer, afterNanoseconds delay: UInt64)
}

extension ChildScheduling {
    func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        schedule(rawJob(job), afterNanoseconds: nanoseconds(of: delay))
    }

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, at instant: C.Instant, tolerance: C.Duration?, clock: C) {
        schedule(rawJob(job), afterNanoseconds: nanoseconds(of: clock.now.duration(to: instant)))
    }
}

private final class ChildTaskExecutor: TaskExecutor, ChildScheduling, @unchecked Sendable {
    static let shared = ChildTaskExecutor()

    func enqueue(_ job: consuming ExecutorJob) {
        cmp_child_executor_enqueue(rawJob(job))
    }

    func schedule(_ job: UnsafeMutableRawPointer, afterNanoseconds delay: UInt64) {
        cmp_child_executor_enqueue_after(job, delay)
    }
}

private final class ChildMainExecutor: MainExecutor, ChildScheduling, @unchecked Sendable {
    static let shared = ChildMainExecutor()

    func enqueue(_ job: consuming ExecutorJob) {
        cmp_child_executor_enqueue_main(rawJob(job))
    }

    /// The timer fires on the pool's timer thread, which hands the job to the main thread.
    func schedule(_ job: UnsafeMutableRawPointer, afterNanoseconds delay: UInt64) {
        cmp_child_executor_enqueue_main_after(job, delay)
    }

    func checkIsolated() {
        precondition(cmp_child_executor_on_main_thread() == 1, "not on the main actor's thread in this child process")
    }

    func run() throws {}
    func stop() {}
}
#endif
