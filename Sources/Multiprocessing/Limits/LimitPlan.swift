import Glibc
import Synchronization
import MultiprocessingPlatform

/// The limits as a child applies them to itself, first thing, before its
/// task (or a pool worker's initializer) runs. It crosses into the child
/// with the task, so it works alike under fork, spawn and forkserver.
struct LimitPlan: Codable, Sendable, Hashable {
    var memory: Int?
    /// The cgroup the child joins (memory by cgroup).
    var cgroup: MemoryCgroup?
    /// Memory by `RLIMIT_DATA`.
    var dataLimit = false
    /// CPU seconds for the whole process (a named-task process). A pool
    /// worker moves its limit before each task instead (``PoolWorkerRuntime``).
    var cpuTime: Double?
    /// A process's soft and hard time limits; a pool's are per task (the
    /// worker cancels, the pool kills).
    var softTimeLimit: Double?
    var timeLimit: Double?
    var network = true
    var noNewPrivileges = false

    /// In the child: joins the cgroup, sets the rlimits, drops privileges
    /// and the network, arms the hard time limit.
    func apply() throws(MP.Error) {
        try cgroup?.join()
        do throws(MP.OSError) {
            if let memory, dataLimit {
                try Sys.setLimit(.dataBytes, soft: UInt64(memory), hard: UInt64(memory))
            }
            if let cpuTime {
                // SIGXCPU at the soft limit; SIGKILL a second later, should the task ignore it.
                let seconds = UInt64(cpuTime.rounded(.up))
                try Sys.setLimit(.cpuSeconds, soft: seconds, hard: seconds + 1)
                // SIGXCPU's default action dumps core: a limit, not a crash.
                try Sys.setLimit(.coreBytes, soft: 0, hard: (try Sys.limit(.coreBytes)).hard)
                Sys.restoreDefault(signal: SIGXCPU)
            }
            if noNewPrivileges { try Sys.setNoNewPrivileges() }
            if !network { try Sys.unshareNetwork() }
            if let timeLimit {
                Sys.restoreDefault(signal: SIGALRM)
                try Sys.alarm(after: timeLimit)
            }
        } catch {
            throw .limitsNotApplied("\(error)", underlying: error)
        }
    }
}

/// A named task run under limits: what a named-task ``MP/Process`` with
/// limits runs in its child, under every start method.
struct LimitedTask: MP.NamedTask {
    static var name: String { "swift-multiprocessing.limited-task" }

    var plan: LimitPlan
    var task: AnyNamedTask

    func run() async throws {
        try plan.apply()
        let task = self.task
        if let soft = plan.softTimeLimit {
            let (result, fired) = await SoftTimeLimit.run(after: soft) { _ = try await task.task.run() }
            if case .failure(let error) = result {
                if fired { throw MP.Error.softTimeLimitReached(seconds: soft, type: "\(type(of: error))", description: "\(error)") }
                throw error
            }
        } else {
            _ = try await task.task.run()
        }
    }
}

/// Billiard's soft time limit, in Swift's terms: at the limit the task's
/// `Task` is cancelled; cooperative code sees it and can clean up and throw.
enum SoftTimeLimit {
    private final class Fired: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Runs `body` in a task of its own, cancelled after `seconds`; what it
    /// came to, and whether the limit fired before it ended.
    static func run<R: Sendable>(after seconds: Double, _ body: @escaping @Sendable () async throws -> R) async -> (Result<R, any Error>, fired: Bool) {
        let work = Task { try await body() }
        let fired = Fired()
        let watchdog = Task {
            try? await Task.sleep(for: .seconds(seconds))
            guard !Task.isCancelled else { return }
            fired.value.store(true, ordering: .sequentiallyConsistent)
            work.cancel()
        }
        let result = await work.result
        watchdog.cancel()
        return (result, fired.value.load(ordering: .sequentiallyConsistent))
    }
}

/// The parent's side of one process's limits: the plan it sends, the cgroup
/// it made (removed once the process is reaped), and the verdict on how the
/// process ended.
final class LimitSession: @unchecked Sendable {
    let limits: MP.WorkerLimits
    let plan: LimitPlan
    private let removed = Atomic<Bool>(false)

    /// How memory is enforced, once resolved (nil: no memory limit).
    var memoryEnforcement: MP.WorkerLimits.MemoryEnforcement? {
        guard plan.memory != nil else { return nil }
        return plan.cgroup != nil ? .cgroup : .dataLimit
    }

    /// `pool`: a pool worker's session (its CPU and time limits are per task,
    /// kept by the worker loop and the pool, not the process).
    init(_ limits: MP.WorkerLimits, pool: Bool) throws(MP.Error) {
        try Self.check(limits)
        var plan = LimitPlan()
        plan.memory = limits.memory
        if let memory = limits.memory {
            switch Self.memoryParent(limits) {
            case .success(let parent?): plan.cgroup = try MemoryCgroup.make(under: parent, bytes: memory)
            case .success(nil): plan.dataLimit = true
            case .failure(let error): throw error
            }
        }
        if !pool {
            plan.cpuTime = limits.cpuTime
            plan.softTimeLimit = limits.softTimeLimit
            plan.timeLimit = limits.timeLimit
        }
        plan.network = limits.network
        plan.noNewPrivileges = limits.noNewPrivileges
        self.limits = limits
        self.plan = plan
    }

    deinit { finish() }

    /// Where a memory cgroup goes: nil for `RLIMIT_DATA`.
    private static func memoryParent(_ limits: MP.WorkerLimits) -> Result<MemoryCgroup.Parent?, MP.Error> {
        switch limits.memoryEnforcement {
        case .dataLimit: return .success(nil)
        case .cgroup: return MemoryCgroup.parent(given: limits.cgroupParent).map { $0 }
        case .automatic:
            if let found = try? MemoryCgroup.parent(given: limits.cgroupParent).get() { return .success(found) }
            // A parent the user named and that does not work is an error, not a fallback.
            if limits.cgroupParent != nil { return MemoryCgroup.parent(given: limits.cgroupParent).map { $0 } }
            return .success(nil)
        }
    }

    private static let networkProbe = Mutex<MP.OSError??>(nil)

    /// Refuses, before anything starts, what this kernel or user cannot do.
    static func check(_ limits: MP.WorkerLimits) throws(MP.Error) {
        try limits.validate()
        if limits.memory != nil && limits.memoryEnforcement == .cgroup {
            if case .failure(let error) = MemoryCgroup.parent(given: limits.cgroupParent) { throw error }
        }
        if !limits.network {
            let refusal = networkProbe.withLock { cached in
                if let cached { return cached }
                let probed = Sys.probeUnshareNetwork()
                cached = .some(probed)
                return probed
            }
            if let refusal {
                throw .limitUnsupported("network: false", "this user may not make a network namespace (\(refusal)); run as root, or allow unprivileged user namespaces", underlying: refusal)
            }
        }
        if let memory = limits.memory, limits.memoryEnforcement == .dataLimit {
            let hard = (try? Sys.limit(.dataBytes).hard) ?? Sys.unlimited
            if hard != Sys.unlimited && UInt64(memory) > hard {
                throw .limitUnsupported("memory of \(MP.WorkerLimits.describe(bytes: memory))", "RLIMIT_DATA's hard limit here is \(hard) bytes")
            }
        }
        if let cpu = limits.cpuTime {
            let hard = (try? Sys.limit(.cpuSeconds).hard) ?? Sys.unlimited
            if hard != Sys.unlimited && UInt64(cpu.rounded(.up)) + 1 > hard {
                throw .limitUnsupported("cpuTime of \(cpu) s", "RLIMIT_CPU's hard limit here is \(hard) s")
            }
        }
    }

    /// Why the process ended, if a limit ended it: `signal` it died of,
    /// `fatalLine` its last "Fatal error" line (when the caller read its stderr).
    func verdict(signal: Int32?, fatalLine: String?, usage: MP.ResourceUsage?, who: String) -> MP.Error? {
        if let memory = plan.memory {
            if let cgroup = plan.cgroup, signal == SIGKILL, cgroup.oomKills > 0 {
                return .memoryLimitExceeded(bytes: memory, enforcement: cgroup.enforcement, who: who,
                                            how: "was killed by the kernel's OOM killer")
            }
            if plan.dataLimit, let fatalLine, fatalLine.contains("failed to allocate") || fatalLine.contains("allocate memory") {
                return .memoryLimitExceeded(bytes: memory, enforcement: "RLIMIT_DATA", who: who, how: "could not allocate (\(fatalLine))")
            }
        }
        if let cpu = limits.cpuTime {
            // The kernel's SIGKILL at the hard limit counts only for a whole
            // process's limit (a pool worker's is per task, with no hard limit).
            let overHard = plan.cpuTime != nil && signal == SIGKILL && (usage?.cpuSeconds ?? 0) >= cpu.rounded(.up)
            if signal == SIGXCPU || overHard { return .cpuLimitExceeded(seconds: cpu, who: who) }
        }
        if let seconds = plan.timeLimit, signal == SIGALRM {
            return .timeLimitExceeded(seconds: seconds, who: who)
        }
        return nil
    }

    /// Removes the cgroup (after the process is reaped); idempotent.
    func finish() {
        guard !removed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        plan.cgroup?.remove()
    }
}
