import Foundation
import Multiprocessing
import MultiprocessingPlatform

/// Runs `operation`, or throws `MP.Error.Code.database` with `message`
/// after `seconds`. Unstructured on purpose: a query stuck on a connection
/// that never comes does not answer cancellation, and a task group would wait
/// for it; here the caller goes on and the stuck task is left to end or not.
/// One ticker per process checks every deadline (no timer per call: the
/// worker's loop runs this thousands of times a second).
func withDeadline<T: Sendable>(_ seconds: Double, _ message: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let gate = OnceGate()
    let watch = DeadlineWatch.current
    let work = TaskCell()
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Swift.Error>) in
        // The deadline first, so that the work (one task: it also removes
        // the deadline when it ends) has its id.
        let id = watch.add(after: seconds) {
            if gate.claim() {
                work.cancel()
                continuation.resume(throwing: MP.Error.database(message))
            }
        }
        work.set(Task {
            do {
                let value = try await operation()
                watch.remove(id)
                if gate.claim() { continuation.resume(returning: value) }
            } catch {
                watch.remove(id)
                if gate.claim() { continuation.resume(throwing: error) }
            }
        })
    }
}

/// The task a deadline cancels, set once it exists (the deadline may fire first).
final class TaskCell: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Never>?
    private var cancelled = false

    func set(_ task: Task<Void, Never>) {
        let cancel = lock.locked { () -> Bool in
            self.task = task
            return cancelled
        }
        if cancel { task.cancel() }
    }

    func cancel() {
        let task = lock.locked { () -> Task<Void, Never>? in
            cancelled = true
            return self.task
        }
        task?.cancel()
    }
}

/// The process's deadlines, checked four times a second by one task (made
/// again in a forked child, whose inherited ticker does not run).
final class DeadlineWatch: @unchecked Sendable {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var instance: (pid: Int32, watch: DeadlineWatch)?

    static var current: DeadlineWatch {
        lock.locked {
            if let instance, instance.pid == Sys.getpid { return instance.watch }
            let watch = DeadlineWatch()
            instance = (Sys.getpid, watch)
            return watch
        }
    }

    private let lock = NSLock()
    private var entries: [UInt64: (deadline: ContinuousClock.Instant, fire: @Sendable () -> Void)] = [:]
    private var next: UInt64 = 0

    private init() {
        Task { [weak self] in
            while let self {
                try? await Task.sleep(for: .milliseconds(250))
                self.tick()
            }
        }
    }

    func add(after seconds: Double, _ fire: @escaping @Sendable () -> Void) -> UInt64 {
        lock.locked {
            next += 1
            entries[next] = (.now + .milliseconds(Int(seconds * 1000)), fire)
            return next
        }
    }

    func remove(_ id: UInt64) { lock.locked { _ = entries.removeValue(forKey: id) } }

    private func tick() {
        let now = ContinuousClock.now
        let due = lock.locked { () -> [@Sendable () -> Void] in
            let ids = entries.filter { $0.value.deadline <= now }.map(\.key)
            return ids.compactMap { entries.removeValue(forKey: $0)?.fire }
        }
        for fire in due { fire() }
    }
}
