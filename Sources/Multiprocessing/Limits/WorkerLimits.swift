import Glibc
import MultiprocessingPlatform

extension MP {
    /// What a worker process may use: memory, CPU time, wall-clock time,
    /// the network, privileges. Given to ``MP/TaskPool``, ``MP/ProcessPoolExecutor``,
    /// a named-task ``MP/Process`` (under any start method) and the cluster
    /// worker's local pool.
    ///
    /// ```swift
    /// let limits = MP.WorkerLimits(memory: 256 << 20,       // 256 MiB per worker
    ///                               cpuTime: 10,             // CPU seconds per task
    ///                               softTimeLimit: 5,        // cancel the task's Swift Task
    ///                               timeLimit: 30,           // kill and replace the worker
    ///                               network: false)          // no network in the workers
    /// let pool = try MP.TaskPool(processes: 4, limits: limits)
    /// ```
    ///
    /// Each limit is enforced by the kernel or by the pool, never on trust:
    ///
    /// | Limit | Enforced by | A task over it fails with |
    /// |---|---|---|
    /// | ``memory`` | a memory cgroup per worker (`memory.max`, v1's `memory.limit_in_bytes`), else `RLIMIT_DATA` | ``MP/Error/Code/memoryLimit`` |
    /// | ``recycleAboveResidentMemory`` | the worker, after each task (pools) | nothing fails: the worker is replaced |
    /// | ``cpuTime`` | `RLIMIT_CPU`, moved before each task | ``MP/Error/Code/cpuLimit`` |
    /// | ``softTimeLimit`` | the worker cancels the task's Swift `Task` | ``MP/Error/Code/timeout`` if it throws |
    /// | ``timeLimit`` | the pool kills the worker (a process: `SIGALRM`) | ``MP/Error/Code/timeout`` |
    /// | ``network`` `false` | a network namespace of its own (`unshare`) | (connections fail) |
    /// | ``noNewPrivileges`` | `PR_SET_NO_NEW_PRIVS` | (no exec gains privileges) |
    ///
    /// A limit the kernel or the user cannot have (no writable memory cgroup
    /// when ``MemoryEnforcement/cgroup`` is asked for, no network namespaces)
    /// throws ``MP/Error/Code/unsupported`` when the pool or process is made:
    /// nothing is skipped in silence.
    public struct WorkerLimits: Sendable, Hashable, Codable {
        /// How ``memory`` is enforced.
        public enum MemoryEnforcement: String, Sendable, Hashable, Codable {
            /// A memory cgroup where this process may make one, else `RLIMIT_DATA`.
            case automatic
            /// A memory cgroup per worker, or ``MP/Error/Code/unsupported``.
            /// The cgroup caps resident memory (and swap, where accounted):
            /// a worker over it is killed by the kernel's OOM killer, and the
            /// cgroup's `memory.events` (v1: `memory.oom_control`) tells that
            /// kill apart from any other `SIGKILL`.
            case cgroup
            /// `RLIMIT_DATA`: the private writable memory a worker maps (its
            /// heap, its thread stacks), counted when mapped, not when
            /// touched. An allocation past it fails and the worker ends with
            /// Swift's "failed to allocate" fatal error. Not a resident-memory
            /// limit: memory mapped but never touched counts, and shared
            /// memory does not.
            case dataLimit
        }

        /// The most memory a worker may use, in bytes (`256 << 20` is 256 MiB).
        public var memory: Int?
        /// How ``memory`` is enforced (default ``MemoryEnforcement/automatic``).
        public var memoryEnforcement: MemoryEnforcement
        /// A cgroup directory delegated to this program (cgroup v2 with the
        /// memory controller in its `cgroup.subtree_control`, or a v1 memory
        /// directory) under which each worker gets its own cgroup. Default:
        /// this process's own cgroup, which cgroup v2 allows only at the root.
        public var cgroupParent: String?
        /// Pools: after a task, a worker whose resident memory is above this
        /// many bytes exits and is replaced before it takes another task
        /// (Celery's `worker_max_memory_per_child`). No task fails for it.
        public var recycleAboveResidentMemory: Int?
        /// CPU seconds (user and system) a task may use; over it the worker
        /// gets `SIGXCPU` and the task fails with ``MP/Error/Code/cpuLimit``.
        /// The kernel counts whole seconds.
        public var cpuTime: Double?
        /// Seconds after which the task's Swift `Task` is cancelled:
        /// cooperative code (`Task.checkCancellation()`, `Task.sleep`) can
        /// clean up and throw `CancellationError`; code that ignores it runs
        /// on until ``timeLimit`` (billiard's soft time limit).
        public var softTimeLimit: Double?
        /// Seconds a task may run before its worker is killed (and, in a
        /// pool, replaced): the default `timeout:` of every task.
        public var timeLimit: Double?
        /// `false`: the workers run in a network namespace of their own, with
        /// no interface up: no connection leaves them, not even to loopback.
        /// Pipes, queues and the pool's own channel still work (they are
        /// socket pairs and inherited descriptors, not addresses).
        public var network: Bool
        /// `PR_SET_NO_NEW_PRIVS`: nothing the worker executes gains
        /// privileges (setuid programs, file capabilities).
        public var noNewPrivileges: Bool

        /// Limits; every one is off unless given.
        public init(memory: Int? = nil, memoryEnforcement: MemoryEnforcement = .automatic, cgroupParent: String? = nil,
                    recycleAboveResidentMemory: Int? = nil, cpuTime: Double? = nil, softTimeLimit: Double? = nil,
                    timeLimit: Double? = nil, network: Bool = true, noNewPrivileges: Bool = false) {
            self.memory = memory
            self.memoryEnforcement = memoryEnforcement
            self.cgroupParent = cgroupParent
            self.recycleAboveResidentMemory = recycleAboveResidentMemory
            self.cpuTime = cpuTime
            self.softTimeLimit = softTimeLimit
            self.timeLimit = timeLimit
            self.network = network
            self.noNewPrivileges = noNewPrivileges
        }

        /// Checks the limits against this kernel and user without starting
        /// anything (pools and processes do it as they are made): a value
        /// out of range throws ``MP/Error/Code/invalidArgument``, a limit
        /// that cannot be enforced here ``MP/Error/Code/unsupported``.
        public func check() throws(MP.Error) { try LimitSession.check(self) }

        /// Throws ``MP/Error/Code/invalidArgument`` for a value out of range.
        func validate() throws(MP.Error) {
            func positive(_ value: Double?, _ name: String) throws(MP.Error) {
                if let value, !(value > 0 && value.isFinite) { throw .invalidArgument("\(name) must be a positive number of seconds (got \(value))") }
            }
            if let memory, memory < 1 << 20 { throw .invalidArgument("memory must be at least 1 MiB (got \(memory) bytes)") }
            if let recycle = recycleAboveResidentMemory, recycle < 1 << 20 {
                throw .invalidArgument("recycleAboveResidentMemory must be at least 1 MiB (got \(recycle) bytes)")
            }
            try positive(cpuTime, "cpuTime")
            try positive(softTimeLimit, "softTimeLimit")
            try positive(timeLimit, "timeLimit")
            if let soft = softTimeLimit, let hard = timeLimit, soft >= hard {
                throw .invalidArgument("softTimeLimit (\(soft) s) must be below timeLimit (\(hard) s)")
            }
            if memory == nil && (memoryEnforcement != .automatic || cgroupParent != nil) {
                throw .invalidArgument("memoryEnforcement and cgroupParent need a memory limit")
            }
        }

        /// `268435456` as `256 MiB`.
        static func describe(bytes: Int) -> String {
            if bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
            if bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
            if bytes >= 1 << 20 { return "\((Double(bytes) / Double(1 << 20) * 10).rounded() / 10) MiB" }
            return "\(bytes) bytes"
        }
    }

    /// What a task or a process used: CPU time and peak resident memory,
    /// from the kernel (`getrusage`, `wait4`, `/proc`).
    public struct ResourceUsage: Sendable, Hashable, Codable, CustomStringConvertible {
        /// CPU seconds in user mode.
        public var userSeconds: Double
        /// CPU seconds in the kernel on its behalf.
        public var systemSeconds: Double
        /// The most resident memory at once, in bytes (`ru_maxrss`, `VmHWM`).
        public var peakResidentBytes: Int

        /// User and system CPU seconds.
        public var cpuSeconds: Double { userSeconds + systemSeconds }

        public init(userSeconds: Double, systemSeconds: Double, peakResidentBytes: Int) {
            self.userSeconds = userSeconds
            self.systemSeconds = systemSeconds
            self.peakResidentBytes = peakResidentBytes
        }

        init(_ usage: Sys.Usage) {
            self.init(userSeconds: Double(usage.userNanoseconds) / 1e9, systemSeconds: Double(usage.systemNanoseconds) / 1e9,
                      peakResidentBytes: Int(usage.peakResidentBytes))
        }

        public var description: String {
            func rounded(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }
            return "cpu \(rounded(cpuSeconds)) s (user \(rounded(userSeconds)), system \(rounded(systemSeconds))), peak resident \(WorkerLimits.describe(bytes: peakResidentBytes))"
        }
    }

    /// One worker of a pool, and what it used (``MP/TaskPool/workerUsage``).
    public struct WorkerUsage: Sendable, Hashable, CustomStringConvertible {
        /// The worker's process name (`ForkServerPoolWorker-3`).
        public var name: String
        /// Its process id.
        public var pid: Int32
        /// Orders it finished (a map's chunk counts as one).
        public var tasks: Int
        /// What it used: so far (from `/proc`) for a live worker, in all
        /// (from `wait4`) for one that has exited.
        public var usage: ResourceUsage
        /// Whether it still serves the pool.
        public var isAlive: Bool
        /// How it ended: nil while alive; else "exited with 0", "killed by
        /// SIGKILL", "replaced: resident memory 300 MiB over 200 MiB", ...
        public var ending: String?

        public var description: String {
            "\(name) (pid \(pid)): \(tasks) task(s), \(usage)" + (ending.map { "; \($0)" } ?? "")
        }
    }
}
