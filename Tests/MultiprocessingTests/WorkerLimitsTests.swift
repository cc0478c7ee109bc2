import Glibc
@testable import Multiprocessing
import MultiprocessingPlatform
import Testing

// Workers under limits, on the real kernel: memory cgroups (v1 here, as root)
// and RLIMIT_DATA, RLIMIT_CPU, soft and hard time limits, a network
// namespace, and what each task and worker used.

/// Allocates and touches `mebibytes` MiB; returns how many bytes it held.
struct Allocate: MP.NamedTask {
    var mebibytes: Int
    func run() -> Int {
        let bytes = [UInt8](repeating: 1, count: mebibytes << 20)
        return bytes.withUnsafeBytes { $0.count &+ Int($0[$0.count / 2]) - 1 }
    }
}

/// Memory a worker keeps between tasks (a leak).
nonisolated(unsafe) var leaked: [[UInt8]] = []

/// Leaks `mebibytes` MiB into the worker's globals; returns the worker's pid.
struct Leak: MP.NamedTask {
    var mebibytes: Int
    func run() -> Int32 {
        leaked.append([UInt8](repeating: 1, count: mebibytes << 20))
        return getpid()
    }
}

/// Burns CPU until `seconds` of it are used (bounded by twice that in wall time... and 30 s).
struct Spin: MP.NamedTask {
    var seconds: Double
    func run() -> Double {
        let start = Sys.usage
        let wallEnd = Deadline.after(validSeconds: 30)!
        var x = 0.0
        while !wallEnd.hasPassed {
            for i in 0..<100_000 { x += Double(i).squareRoot() }
            let now = Sys.usage
            if Double(now.userNanoseconds + now.systemNanoseconds - start.userNanoseconds - start.systemNanoseconds) / 1e9 >= seconds { break }
        }
        return x > 0 ? seconds : 0
    }
}

/// Sleeps cooperatively; when cancelled, writes `marker` and rethrows.
struct Cooperative: MP.NamedTask {
    var marker: String
    func run() async throws -> Int {
        do {
            for _ in 0..<3000 { try await Task.sleep(for: .milliseconds(10)) }
            return 0
        } catch {
            let fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = write(fd, "cleaned up", 10)
            close(fd)
            throw error
        }
    }
}

/// Ignores cancellation: spins for `seconds` of wall time.
struct Stubborn: MP.NamedTask {
    var seconds: Double
    func run() async -> Int {
        let end = Deadline.after(validSeconds: seconds)!
        var spins = 0
        while !end.hasPassed { spins &+= 1 }
        return spins
    }
}

/// Connects to 127.0.0.1:`port`; 0 on success, else the errno.
struct ConnectLoopback: MP.NamedTask {
    var port: UInt16
    func run() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0 ? 0 : errno
    }
}

enum LimitConditions {
    /// Whether this process may make memory cgroups (root with v1's memory
    /// hierarchy writable here; v2 only with the controller delegated).
    static let memoryCgroups: Bool = (try? MemoryCgroup.parent(given: nil).get()) != nil
    static let networkNamespaces: Bool = Sys.probeUnshareNetwork() == nil

    /// The cgroups this process made and has not removed.
    static var leftoverCgroups: [String] {
        guard case .success(let parent) = MemoryCgroup.parent(given: nil) else { return [] }
        return Sys.listDirectory(parent.directory).filter { $0.hasPrefix("swift-mp-\(getpid())-") }
    }
}

@Suite("Worker limits", .serialized)
struct WorkerLimitsTests {
    @Test("a task over the memory cgroup's cap fails with the memory error; the other 99 finish",
          .enabled(if: LimitConditions.memoryCgroups, "needs a writable memory cgroup (root, cgroup v1 memory or delegated v2)"),
          arguments: MP.StartMethod.allCases)
    func memoryCgroup(method: MP.StartMethod) throws {
        let limits = MP.WorkerLimits(memory: 64 << 20, memoryEnforcement: .cgroup)
        do {
            let pool = try MP.TaskPool(processes: 2, startMethod: method, limits: limits)
            defer { try? finish(pool) }
            #expect(pool.memoryEnforcement == .cgroup)
            let results = (0..<100).map { pool.applyAsync(Allocate(mebibytes: $0 == 37 ? 256 : 1), timeout: 60) }
            for (index, result) in results.enumerated() {
                if index == 37 {
                    let error = #expect(throws: MP.Error.self) { try result.get(timeout: 60) }
                    #expect(error?.code == .memoryLimit)
                    #expect(error?.message.contains("memory limit of 64 MiB exceeded (cgroup v1 memory.limit_in_bytes)") == true
                            || error?.message.contains("memory limit of 64 MiB exceeded (cgroup v2 memory.max)") == true, "\(String(describing: error))")
                    #expect(error?.message.contains("PoolWorker-") == true)
                    #expect(error?.message.contains("OOM killer") == true)
                } else {
                    #expect(try result.get(timeout: 60) == 1 << 20)
                }
            }
            #expect(pool.workerUsage.contains { !$0.isAlive && $0.ending?.contains("memory limit") == true })
        }
        #expect(LimitConditions.leftoverCgroups.isEmpty, "cgroups left: \(LimitConditions.leftoverCgroups)")
    }

    @Test("under RLIMIT_DATA an allocation past the cap fails its task with the memory error", arguments: MP.StartMethod.allCases)
    func memoryDataLimit(method: MP.StartMethod) throws {
        let limits = MP.WorkerLimits(memory: 256 << 20, memoryEnforcement: .dataLimit)
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, limits: limits)
            defer { try? finish(pool) }
            #expect(pool.memoryEnforcement == .dataLimit)
            let big = pool.applyAsync(Allocate(mebibytes: 1024), timeout: 60)
            let after = pool.applyAsync(Allocate(mebibytes: 8), timeout: 60)
            let error = #expect(throws: MP.Error.self) { try big.get(timeout: 60) }
            #expect(error?.code == .memoryLimit)
            #expect(error?.message.contains("memory limit of 256 MiB exceeded (RLIMIT_DATA)") == true, "\(String(describing: error))")
            #expect(try after.get(timeout: 60) == 8 << 20)
        }
    }

    @Test("an initializer over the memory cap breaks the pool with the limit's error, instead of restarting for ever",
          arguments: [MP.StartMethod.fork, .forkserver])
    func initializerOverTheCap(method: MP.StartMethod) throws {
        for enforcement in [MP.WorkerLimits.MemoryEnforcement.automatic, .dataLimit] {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, initializer: Allocate(mebibytes: 1024),
                                       limits: MP.WorkerLimits(memory: 256 << 20, memoryEnforcement: enforcement))
            defer { try? finish(pool) }
            let error = #expect(throws: MP.Error.self) { try pool.apply(Allocate(mebibytes: 1), timeout: 60) }
            #expect(error?.code == .taskFailed)
            #expect(error?.message.contains("the worker died in the initializer: memory limit of 256 MiB exceeded") == true,
                    "\(enforcement): \(String(describing: error))")
        }
    }

    @Test("a worker over the recycling threshold is replaced after its task; no task fails", arguments: MP.StartMethod.allCases)
    func recycling(method: MP.StartMethod) throws {
        // A forked worker starts with the test process's pages: the
        // threshold sits above what a fresh worker holds, whatever that is.
        let baseline: Int
        do {
            let probe = try MP.TaskPool(processes: 1, startMethod: method)
            defer { try? finish(probe) }
            let pid = try probe.apply(Leak(mebibytes: 1), timeout: 60)
            baseline = try #require(Self.residentBytes(of: pid))
        }
        let threshold = (baseline >> 20 + 64) << 20
        let limits = MP.WorkerLimits(recycleAboveResidentMemory: threshold)
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, limits: limits)
            defer { try? finish(pool) }
            let first = try pool.apply(Leak(mebibytes: 8), timeout: 60)
            let second = try pool.apply(Leak(mebibytes: 8), timeout: 60)
            #expect(first == second, "a small worker is kept")
            let grown = try pool.apply(Leak(mebibytes: 160), timeout: 60)
            #expect(grown == second)
            // Queued behind the one that grew: runs in the replacement, and does not fail.
            let next = try pool.apply(Leak(mebibytes: 1), timeout: 60)
            #expect(next != grown)
            #expect(pool.recycledWorkers == 1)
            let replaced = pool.workerUsage.first { $0.pid == grown }
            #expect(replaced?.isAlive == false)
            #expect(replaced?.ending?.contains("over the recycling threshold of \(threshold >> 20) MiB") == true, "\(String(describing: replaced))")
            #expect((replaced?.usage.peakResidentBytes ?? 0) > 160 << 20)
        }
    }

    /// `VmRSS` of a live process, in bytes.
    static func residentBytes(of pid: Int32) -> Int? {
        guard let status = Sys.readSmallFile("/proc/\(pid)/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }.map { $0 * 1024 }
    }

    @Test("a task over its CPU time fails with the CPU error; the worker is replaced", arguments: MP.StartMethod.allCases)
    func cpuTime(method: MP.StartMethod) throws {
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, limits: MP.WorkerLimits(cpuTime: 1))
            defer { try? finish(pool) }
            #expect(try pool.apply(Spin(seconds: 0.3), timeout: 60) == 0.3)
            // Per task: the allowance moves, so a second short task is fine too.
            #expect(try pool.apply(Spin(seconds: 0.3), timeout: 60) == 0.3)
            let error = #expect(throws: MP.Error.self) { try pool.apply(Spin(seconds: 5), timeout: 60) }
            #expect(error?.code == .cpuLimit)
            #expect(error?.message.hasPrefix("CPU time limit of 1.0 s exceeded (RLIMIT_CPU): ") == true, "\(String(describing: error))")
            #expect(try pool.apply(Spin(seconds: 0.1), timeout: 60) == 0.1)
        }
    }

    @Test("the soft limit cancels a cooperative task, which cleans up; the hard limit kills one that ignores it",
          arguments: MP.StartMethod.allCases)
    func softAndHardTimeLimits(method: MP.StartMethod) throws {
        let marker = "/tmp/mp-soft-limit-\(getpid())-\(method.rawValue)"
        unlink(marker)
        defer { unlink(marker) }
        let limits = MP.WorkerLimits(softTimeLimit: 0.3, timeLimit: 3)
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, limits: limits)
            defer { try? finish(pool) }
            let soft = #expect(throws: MP.Error.self) { try pool.apply(Cooperative(marker: marker)) }
            #expect(soft?.code == .timeout)
            #expect(soft?.message.hasPrefix("soft time limit of 0.3 s reached: the task was cancelled and threw CancellationError") == true,
                    "\(String(describing: soft))")
            #expect(Sys.readSmallFile(marker) == "cleaned up")
            let start = Deadline.now
            let hard = #expect(throws: MP.Error.self) { try pool.apply(Stubborn(seconds: 30)) }
            #expect(hard?.code == .timeout)
            #expect(hard?.message.contains("timeout of 3.0 s") == true, "\(String(describing: hard))")
            #expect(Double(Deadline.now - start) / 1e9 < 10)
            #expect(try pool.apply(Allocate(mebibytes: 1)) == 1 << 20)
        }
    }

    @Test("a no-network worker cannot reach a loopback listener that a normal worker can",
          .enabled(if: LimitConditions.networkNamespaces, "this user may not make network namespaces"),
          arguments: MP.StartMethod.allCases)
    func noNetwork(method: MP.StartMethod) throws {
        let listener = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0))
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.address else { Issue.record("not a TCP address"); return }
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method)
            defer { try? finish(pool) }
            #expect(try pool.apply(ConnectLoopback(port: UInt16(port)), timeout: 30) == 0)
        }
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, limits: MP.WorkerLimits(network: false, noNewPrivileges: true))
            defer { try? finish(pool) }
            let code = try pool.apply(ConnectLoopback(port: UInt16(port)), timeout: 30)
            #expect(code == ENETUNREACH, "connect gave errno \(code)")
        }
    }

    @Test("each task's CPU time and peak memory, and each worker's, are readable", arguments: [MP.StartMethod.fork, .forkserver])
    func usage(method: MP.StartMethod) throws {
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method, recordUsage: true)
            defer { try? finish(pool) }
            let spin = pool.applyAsync(Spin(seconds: 0.3))
            _ = try spin.get(timeout: 60)
            let cpu = try #require(spin.usage)
            #expect(cpu.cpuSeconds >= 0.25 && cpu.cpuSeconds < 5, "\(cpu)")
            let big = pool.applyAsync(Allocate(mebibytes: 100))
            _ = try big.get(timeout: 60)
            let memory = try #require(big.usage)
            #expect(memory.peakResidentBytes >= 100 << 20, "\(memory)")
            // The peak is per task: a small task after a big one reports a small peak.
            let small = pool.applyAsync(Allocate(mebibytes: 1))
            _ = try small.get(timeout: 60)
            let smallPeak = try #require(small.usage).peakResidentBytes
            #expect(smallPeak < memory.peakResidentBytes - 50 << 20, "\(smallPeak) after \(memory.peakResidentBytes)")
            let worker = try #require(pool.workerUsage.first { $0.isAlive })
            #expect(worker.tasks == 3)
            #expect(worker.usage.cpuSeconds >= 0.25)
            #expect(worker.usage.peakResidentBytes >= 100 << 20)
        }
        // Without recordUsage, results carry none.
        do {
            let pool = try MP.TaskPool(processes: 1, startMethod: method)
            defer { try? finish(pool) }
            let result = pool.applyAsync(Allocate(mebibytes: 1))
            _ = try result.get(timeout: 60)
            #expect(result.usage == nil)
        }
    }

    @Test("a named-task process under limits: its verdict and what it used", arguments: MP.StartMethod.allCases)
    func process(method: MP.StartMethod) throws {
        let spinner = try MP.getContext(method).Process(target: Spin(seconds: 10), limits: MP.WorkerLimits(cpuTime: 1))
        try spinner.start()
        try joinOrKill(spinner, within: 30)
        #expect(spinner.exitCode == -SIGXCPU)
        #expect(spinner.limitExceeded?.code == .cpuLimit)
        #expect((spinner.resourceUsage?.cpuSeconds ?? 0) >= 0.9)

        let sleeper = try MP.getContext(method).Process(target: Stubborn(seconds: 30), limits: MP.WorkerLimits(timeLimit: 0.5))
        try sleeper.start()
        try joinOrKill(sleeper, within: 30)
        #expect(sleeper.limitExceeded?.code == .timeout)
        #expect(sleeper.limitExceeded?.message.hasPrefix("time limit of 0.5 s exceeded") == true)

        let fine = try MP.getContext(method).Process(target: Allocate(mebibytes: 1), limits: MP.WorkerLimits(cpuTime: 5, timeLimit: 20))
        try fine.start()
        try joinOrKill(fine, within: 30)
        #expect(fine.exitCode == 0)
        #expect(fine.limitExceeded == nil)
    }

    @Test("a named-task process over its memory cgroup is said to be, and its cgroup is removed",
          .enabled(if: LimitConditions.memoryCgroups, "needs a writable memory cgroup"),
          arguments: MP.StartMethod.allCases)
    func processMemory(method: MP.StartMethod) throws {
        let process = try MP.getContext(method).Process(target: Allocate(mebibytes: 256), limits: MP.WorkerLimits(memory: 32 << 20))
        #expect(process.memoryEnforcement == .cgroup)
        try process.start()
        try joinOrKill(process, within: 30)
        #expect(process.exitCode == -SIGKILL)
        #expect(process.limitExceeded?.code == .memoryLimit)
        #expect(process.limitExceeded?.message.contains("memory limit of 32 MiB exceeded") == true)
        #expect(LimitConditions.leftoverCgroups.isEmpty)
    }

    @Test("the executor's workers take the same limits")
    func executor() throws {
        let executor = try MP.ProcessPoolExecutor(maxWorkers: 1, limits: MP.WorkerLimits(cpuTime: 1, timeLimit: 5), recordUsage: true)
        defer { executor.shutdown(wait: true, cancelFutures: true) }
        let spin = executor.submit(Spin(seconds: 5))
        let error = #expect(throws: MP.Error.self) { try spin.result(timeout: 60) }
        #expect(error?.code == .cpuLimit)
        let fine = executor.submit(Allocate(mebibytes: 2))
        #expect(try fine.result(timeout: 60) == 2 << 20)
        #expect(executor.pool.workerUsage.contains { !$0.isAlive && $0.ending?.contains("CPU time limit of 1.0 s exceeded") == true })
    }

    @Test("a limit out of range, or one the kernel refuses, is a clear error at creation")
    func refused() throws {
        func code(_ limits: MP.WorkerLimits) -> MP.Error? {
            #expect(throws: MP.Error.self) { try MP.TaskPool(processes: 1, limits: limits) }
        }
        #expect(code(MP.WorkerLimits(memory: 1000))?.message == "memory must be at least 1 MiB (got 1000 bytes)")
        #expect(code(MP.WorkerLimits(cpuTime: 0))?.code == .invalidArgument)
        #expect(code(MP.WorkerLimits(softTimeLimit: 5, timeLimit: 2))?.message == "softTimeLimit (5.0 s) must be below timeLimit (2.0 s)")
        #expect(code(MP.WorkerLimits(memoryEnforcement: .cgroup))?.message == "memoryEnforcement and cgroupParent need a memory limit")
        let missing = code(MP.WorkerLimits(memory: 64 << 20, memoryEnforcement: .cgroup, cgroupParent: "/nonexistent/cgroup"))
        #expect(missing?.code == .unsupported)
        #expect(missing?.message == "a memory cgroup under /nonexistent/cgroup cannot be enforced here: it is not a cgroup directory with the memory controller")
        // The same refusals from a process, and from a check without starting anything.
        #expect(throws: MP.Error.self) { try MP.Process(target: Allocate(mebibytes: 1), limits: MP.WorkerLimits(timeLimit: -1)) }
        #expect(throws: MP.Error.self) { try MP.WorkerLimits(memory: 64 << 20, memoryEnforcement: .cgroup, cgroupParent: "/tmp").check() }
        if !LimitConditions.networkNamespaces {
            #expect(code(MP.WorkerLimits(network: false))?.code == .unsupported)
        }
    }
}
