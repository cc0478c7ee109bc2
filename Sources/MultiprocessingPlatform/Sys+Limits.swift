import Glibc
import _CMultiprocessingShims

/// Resource limits, resource usage, namespaces and the small files of
/// `/proc` and cgroups: what a worker's limits are made of.
extension Sys {
    /// The resources ``setLimit(_:soft:hard:)`` sets (`RLIMIT_*`).
    package enum Resource {
        case cpuSeconds, dataBytes, addressSpaceBytes, coreBytes

        var raw: __rlimit_resource_t {
            switch self {
            case .cpuSeconds: __rlimit_resource_t(RLIMIT_CPU.rawValue)
            case .dataBytes: __rlimit_resource_t(RLIMIT_DATA.rawValue)
            case .addressSpaceBytes: __rlimit_resource_t(RLIMIT_AS.rawValue)
            case .coreBytes: __rlimit_resource_t(RLIMIT_CORE.rawValue)
            }
        }
    }

    /// `RLIM_INFINITY` as a value of ``limit(_:)``.
    package static let unlimited = UInt64.max

    /// `getrlimit(resource)`: the soft and hard limits.
    package static func limit(_ resource: Resource) throws(OSError) -> (soft: UInt64, hard: UInt64) {
        var value = rlimit()
        _ = try check("getrlimit") { getrlimit(resource.raw, &value) }
        return (UInt64(value.rlim_cur), UInt64(value.rlim_max))
    }

    /// `setrlimit(resource, {soft, hard})`.
    package static func setLimit(_ resource: Resource, soft: UInt64, hard: UInt64) throws(OSError) {
        var value = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
        _ = try check("setrlimit") { setrlimit(resource.raw, &value) }
    }

    /// What a process used, from `getrusage` or `wait4`.
    package struct Usage: Sendable, Hashable {
        package var userNanoseconds: UInt64
        package var systemNanoseconds: UInt64
        /// `ru_maxrss`, in bytes (the kernel counts KiB).
        package var peakResidentBytes: UInt64

        package init(userNanoseconds: UInt64, systemNanoseconds: UInt64, peakResidentBytes: UInt64) {
            self.userNanoseconds = userNanoseconds
            self.systemNanoseconds = systemNanoseconds
            self.peakResidentBytes = peakResidentBytes
        }

        init(_ raw: rusage) {
            func nanoseconds(_ time: timeval) -> UInt64 { UInt64(max(0, time.tv_sec)) * 1_000_000_000 + UInt64(max(0, time.tv_usec)) * 1000 }
            self.init(userNanoseconds: nanoseconds(raw.ru_utime), systemNanoseconds: nanoseconds(raw.ru_stime),
                      peakResidentBytes: UInt64(max(0, raw.ru_maxrss)) * 1024)
        }
    }

    /// `getrusage(RUSAGE_SELF)`: what this process has used so far.
    package static var usage: Usage {
        var raw = rusage()
        _ = getrusage(RUSAGE_SELF.rawValue, &raw) // cannot fail with these arguments
        return Usage(raw)
    }

    /// `wait4(pid, &status, options, &usage)`: `waitpid` that also returns
    /// what the child used (nil while it runs, under `WNOHANG`).
    package static func wait4(_ pid: pid_t, _ status: inout Int32, _ options: Int32) throws(OSError) -> (pid: pid_t, usage: Usage) {
        var raw = rusage()
        let reaped = try check("wait4") { Glibc.wait4(pid, &status, options, &raw) }
        return (reaped, Usage(raw))
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    package static func setNoNewPrivileges() throws(OSError) {
        _ = try check("prctl(PR_SET_NO_NEW_PRIVS)") { cmp_set_no_new_privs() }
    }

    /// `unshare(CLONE_NEWNET)` (as root), else `unshare(CLONE_NEWUSER | CLONE_NEWNET)`:
    /// a network namespace of this process's own, with no interface up.
    package static func unshareNetwork() throws(OSError) {
        _ = try check("unshare(CLONE_NEWNET)") { cmp_unshare_network() }
    }

    /// Whether ``unshareNetwork()`` works for this user on this kernel,
    /// tried in a forked child that does nothing else; nil, or why not.
    package static func probeUnshareNetwork() -> OSError? {
        let code = cmp_probe_unshare_network()
        return code == 0 ? nil : OSError("unshare(CLONE_NEWNET)", errno: .init(rawValue: code))
    }

    /// `mkdir(path, 0755)`.
    package static func makeDirectory(_ path: String) throws(OSError) {
        _ = try check("mkdir \(path)") { mkdir(path, 0o755) }
    }

    /// `rmdir(path)`.
    package static func removeDirectory(_ path: String) throws(OSError) {
        _ = try check("rmdir \(path)") { rmdir(path) }
    }

    /// `access(path, W_OK)`.
    package static func isWritable(_ path: String) -> Bool { access(path, W_OK) == 0 }

    /// Writes `text` to an existing file in one `write` (a cgroup or /proc
    /// control file, where each write is one command).
    package static func writeControlFile(_ path: String, _ text: String) throws(OSError) {
        let fd = try check("open \(path)") { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        let bytes = Swift.Array(text.utf8)
        let written = try check("write \(path)") { bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        if written != bytes.count { throw OSError("write \(path)", errno: .ioError) }
    }

    /// `open(path, O_RDWR)`: a /proc file kept open to be read or written again.
    package static func openReadWrite(_ path: String) throws(OSError) -> Int32 {
        try check("open \(path)") { open(path, O_RDWR | O_CLOEXEC) }
    }

    /// `pread(fd, buffer, 0)` of a small /proc file kept open; nil on failure.
    package static func readFromStart(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let count = pread(fd, buffer.baseAddress, buffer.count, 0)
        return count < 0 ? nil : count
    }

    /// `pwrite(fd, text, 0)` to a /proc control file kept open.
    package static func writeFromStart(_ fd: Int32, _ text: StaticString) -> Bool {
        pwrite(fd, text.utf8Start, text.utf8CodeUnitCount, 0) == text.utf8CodeUnitCount
    }

    /// `setitimer(ITIMER_REAL)`: `SIGALRM` after `seconds` (whose default
    /// action ends the process).
    package static func alarm(after seconds: Double) throws(OSError) {
        let whole = Int(seconds)
        var timer = itimerval(it_interval: timeval(), it_value: timeval(tv_sec: whole, tv_usec: Int((seconds - Double(whole)) * 1e6)))
        if timer.it_value.tv_sec == 0 && timer.it_value.tv_usec == 0 { timer.it_value.tv_usec = 1 }
        _ = try check("setitimer") { setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &timer, nil) }
    }

    /// `signal(sig, SIG_DFL)`.
    package static func restoreDefault(signal number: Int32) { _ = Glibc.signal(number, SIG_DFL) }
}

extension Sys {
    /// The names in a directory (`opendir`/`readdir`), without `.` and `..`; empty if unreadable.
    package static func listDirectory(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Whether a process `pid` exists (`kill(pid, 0)`; `EPERM` counts as existing).
    package static func processExists(_ pid: pid_t) -> Bool {
        Glibc.kill(pid, 0) == 0 || errno == EPERM
    }
}

extension Sys {
    /// What a live process has used so far: CPU from `/proc/<pid>/stat`
    /// (fields 14 and 15, in clock ticks), peak resident memory from
    /// `/proc/<pid>/status` (`VmHWM`). Nil once it is gone.
    package static func usage(of pid: pid_t) -> Usage? {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let status = readSmallFile("/proc/\(pid)/status"),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After the command's closing parenthesis: field 3 (state) onwards.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        let ticks = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        var peak: UInt64 = 0
        if let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kib = line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap({ UInt64($0) }) {
            peak = kib * 1024
        }
        return Usage(userNanoseconds: user * 1_000_000_000 / ticks, systemNanoseconds: system * 1_000_000_000 / ticks, peakResidentBytes: peak)
    }
}

extension Sys {
    /// `isatty(fd)`.
    package static func isTerminal(_ fd: Int32) -> Bool { isatty(fd) == 1 }
}
