import _CMultiprocessingRuntime
/// Runs async work from the synchronous start of a forked child.
enum ChildConcurrency {
    private final class Outcome: @unchecked Sendable {
        let done = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        var error: (any Swift.Error)?
        init() { done.initialize(to: 0) }
        deinit { done.deallocate() }
    }

    private struct UncheckedBody: @unchecked Sendable {
        let body: () async throws -> Void
    }

    /// Starts `body` as a detached task and runs the child executor's jobs
    /// on this thread until it ends (`cmp_child_executor_help_until`): a task
    /// that never blocks runs without a thread being started.
    ///
    /// Only for the child's initial thread, with the child executors installed.
    @inline(never)
    static func runBlocking(_ body: @escaping () async throws -> Void) throws {
        let outcome = Outcome()
        let work = UncheckedBody(body: body)
        cmp_child_executor_help_begin()
        Task.detached {
            do { try await work.body() } catch { outcome.error = error }
            cmp_child_executor_help_end(outcome.done)
        }
        cmp_child_executor_help_until(outcome.done)
        if let error = outcome.error { throw error }
    }
}
