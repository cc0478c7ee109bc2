/// Runs async work from the synchronous start of a forked child.
enum ChildConcurrency {
    private final class Outcome: @unchecked Sendable {
        let done = OneShotEvent()
        var error: (any Error)?
    }

    private struct UncheckedBody: @unchecked Sendable {
        let body: () async throws -> Void
    }

    /// Starts `body` as a detached task and blocks this thread until it ends.
    ///
    /// Only for a thread the executor does not need: the forked child's
    /// initial thread, whose jobs run on the child-local executor's threads.
    @inline(never)
    static func runBlocking(_ body: @escaping () async throws -> Void) throws {
        let outcome = Outcome()
        let work = UncheckedBody(body: body)
        Task.detached {
            do { try await work.body() } catch { outcome.error = error }
            outcome.done.set()
        }
        outcome.done.wait()
        if let error = outcome.error { throw error }
    }
}
