#if canImport(Glibc)
import Glibc
#endif

/// Processes and signals beyond `fork`/`waitpid`/`kill` (in `Syscall.swift`).
extension Sys {
    /// `exit(code)`: the C library's exit (atexit handlers, stdio flushed).
    static func exitNormally(_ code: Int32) -> Never { Glibc.exit(code) }

    /// `_exit(code)`: no atexit handlers, no stdio flush (a helper process).
    static func exitImmediately(_ code: Int32) -> Never { Glibc._exit(code) }

    /// `atexit(handler)`: runs at the normal exit of this process.
    static func atExit(_ handler: @escaping @convention(c) () -> Void) { _ = Glibc.atexit(handler) }

    /// `usleep`: only for the fallback poll where a kernel has no pidfds.
    static func sleep(microseconds: UInt32) { _ = Glibc.usleep(microseconds) }

    /// Ignores `signal` in this process (`signal(sig, SIG_IGN)`).
    static func ignore(_ signal: MP.Signal) { _ = Glibc.signal(signal.rawValue, SIG_IGN) }

    /// The online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`).
    static var onlineCPUs: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}
