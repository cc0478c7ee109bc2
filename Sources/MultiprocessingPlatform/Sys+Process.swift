import Glibc
import _CMultiprocessingShims
import _CMultiprocessingRuntime

/// Processes and signals beyond `fork`/`waitpid`/`kill` (in `Syscall.swift`).
extension Sys {
    /// `exit(code)`: the C library's exit (atexit handlers, stdio flushed).
    package static func exitNormally(_ code: Int32) -> Never { Glibc.exit(code) }

    /// `_exit(code)`: no atexit handlers, no stdio flush (a helper process).
    package static func exitImmediately(_ code: Int32) -> Never { Glibc._exit(code) }

    /// `atexit(handler)`: runs at the normal exit of this process.
    package static func atExit(_ handler: @escaping @convention(c) () -> Void) { _ = Glibc.atexit(handler) }

    /// Waits for signals for ever (`pause` in a loop): a test's stalled child.
    package static func pauseForever() -> Never {
        while true { _ = Glibc.pause() }
    }

    /// In the forkserver, before its first child (`cmp_forkserver_prepare`):
    /// learns where glibc keeps the thread id and robust list, checking each
    /// candidate with a trial clone, so that a raw child can be repaired.
    /// `ENOTSUP`: it cannot.
    package static func prepareCloneIntoParent() throws(OSError) {
        _ = try check("clone3 (forkserver preparation)") { cmp_forkserver_prepare() }
    }

    /// The calling thread's thread-id candidates (`cmp_forkserver_tid_candidates`),
    /// among its descriptor's first `words` words, and which of `decoys`
    /// followed by them a trial clone accepts (`cmp_forkserver_pick_tid_slot`):
    /// the forkserver's preparation, testable from any thread.
    package static func pickThreadIDSlot(words: Int32, decoys: [UnsafeMutablePointer<pid_t>]) throws(OSError)
        -> (candidates: Int, picked: Int) {
        var found = [UnsafeMutablePointer<pid_t>?](repeating: nil, count: 8)
        let count = Int(cmp_forkserver_tid_candidates(&found, 8, words))
        var slots = decoys.map { Optional($0) } + found[..<count]
        let picked = try check("clone3 (trial)") { cmp_forkserver_pick_tid_slot(&slots, Int32(slots.count)) }
        return (count, Int(picked))
    }

    /// `clone3(CLONE_PARENT)` in the forkserver (`cmp_forkserver_clone`):
    /// a child of the server's own parent, with glibc's thread id and robust
    /// list repaired. Returns like `fork`: 0 in the child, its pid in the server.
    package static func cloneIntoParent() throws(OSError) -> pid_t {
        try check("clone3") { cmp_forkserver_clone() }
    }

    /// A copy of `text` as a C string that lives as long as the process (for
    /// C code that keeps the pointer: a child's crash label).
    package static func permanentCString(_ text: String) -> UnsafeMutablePointer<CChar> {
        let bytes = Swift.Array(text.utf8CString)
        let copy = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        copy.initialize(from: bytes, count: bytes.count)
        return copy
    }

    /// Whether the C string `text` starts with `prefix` (no copy of `text`:
    /// the entry hook looks at every program's first argument).
    package static func cString(_ text: UnsafePointer<CChar>, hasPrefix prefix: StaticString) -> Bool {
        Glibc.strncmp(text, UnsafeRawPointer(prefix.utf8Start).assumingMemoryBound(to: CChar.self), prefix.utf8CodeUnitCount) == 0
    }

    /// `usleep`: only for the fallback poll where a kernel has no pidfds.
    package static func sleep(microseconds: UInt32) { _ = Glibc.usleep(microseconds) }

    /// Ignores `signal` in this process (`signal(sig, SIG_IGN)`).
    package static func ignore(signal number: Int32) { _ = Glibc.signal(number, SIG_IGN) }

    /// Installs `handler` for `signal` (`signal(2)`); returns the handler it
    /// replaced, for ``restoreHandler(_:for:)``.
    package static func handle(signal number: Int32, with handler: @escaping @convention(c) (Int32) -> Void) -> sighandler_t? {
        Glibc.signal(number, handler)
    }

    /// Puts back a handler ``handle(signal:with:)`` returned.
    package static func restoreHandler(_ previous: sighandler_t?, for number: Int32) {
        _ = Glibc.signal(number, previous)
    }

    /// The online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`).
    package static var onlineCPUs: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// `sched_setaffinity(pid, cpus)`.
    package static func setAffinity(_ pid: pid_t, _ cpus: [Int32]) throws(OSError) {
        _ = try check("sched_setaffinity") { cmp_set_affinity(pid, cpus, Int32(cpus.count)) }
    }

    /// `sched_getaffinity(pid)`: the CPU numbers, ascending.
    package static func affinity(_ pid: pid_t) throws(OSError) -> [Int32] {
        var cpus = [Int32](repeating: 0, count: 1 << 16)
        let count = try check("sched_getaffinity") { cmp_get_affinity(pid, &cpus, Int32(cpus.count)) }
        return Swift.Array(cpus[..<Int(count)])
    }

    /// The CPUs this thread may run on (`sched_getaffinity`); nil on failure.
    package static var affinityCPUs: Int? {
        let count = Int(cmp_affinity_cpu_count())
        return count > 0 ? count : nil
    }

    /// The CPU quota of this process's cgroup (v2 `cpu.max`, the tightest
    /// along its path), rounded up to whole CPUs; nil without a limit.
    package static var cgroupCPUQuota: Int? {
        guard let membership = readSmallFile("/proc/self/cgroup"),
              let line = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else { return nil }
        var path = String(line.dropFirst(3))
        var tightest: Int?
        while true {
            let file = "/sys/fs/cgroup" + (path == "/" ? "" : path) + "/cpu.max"
            if let text = readSmallFile(file) {
                let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
                if fields.count == 2, let quota = Double(fields[0]), let period = Double(fields[1]), period > 0 {
                    let cpus = max(1, Int((quota / period).rounded(.up)))
                    tightest = min(tightest ?? cpus, cpus)
                }
            }
            guard path != "/", let slash = path.lastIndex(of: "/") else { break }
            path = slash == path.startIndex ? "/" : String(path[..<slash])
        }
        return tightest
    }

    /// A small text file's contents (a /proc or /sys file); nil if unreadable.
    package static func readSmallFile(_ path: String) -> String? {
        guard let fd = try? openReadOnly(path) else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { readSome(fd, into: $0) }
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
