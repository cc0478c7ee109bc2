import Glibc
import _CMultiprocessingShims
import _CMultiprocessingSync
import SystemPackage

/// The one thin layer over raw system calls, grouped by family in the
/// `Sys+*.swift` files beside this one (processes, descriptors and polling,
/// sockets, memory and shared memory, signals). Nothing outside `Platform/`
/// calls libc directly.
///
/// One rule for `errno`, here:
/// - `EINTR` is retried (a timed wait resumes with the time left);
/// - `EAGAIN`/`EWOULDBLOCK` is a value, not an error, where a call can
///   legitimately find nothing to do (``checkAgain(_:_:)``);
/// - `EBADF` and `EFAULT` are programming errors (a descriptor or pointer
///   the library got wrong): they stop the program with the call's name;
/// - anything else throws ``MP/OSError`` with the call's name and its errno.
@usableFromInline
package enum Sys {
    /// Runs `body`; a `-1` result throws `OSError(operation, errno)`.
    /// `EINTR` is retried unless `retryOnInterrupt` is false.
    @inlinable
    package static func check<T: FixedWidthInteger>(
        _ operation: String, retryOnInterrupt: Bool = true, _ body: () -> T
    ) throws(OSError) -> T {
        switch attempt(operation, retryOnInterrupt: retryOnInterrupt, body) {
        case .success(let result): return result
        case .failure(let code): throw failure(operation, code)
        }
    }

    /// Like ``check(_:retryOnInterrupt:_:)``, but `EAGAIN`/`EWOULDBLOCK` is nil.
    @inlinable
    package static func checkAgain<T: FixedWidthInteger>(_ operation: String, _ body: () -> T) throws(OSError) -> T? {
        switch attempt(operation, retryOnInterrupt: true, body) {
        case .success(let result): return result
        case .failure(let code) where code == EAGAIN || code == EWOULDBLOCK: return nil
        case .failure(let code): throw failure(operation, code)
        }
    }

    /// The one loop of the errno rule: the call's result, or its errno
    /// (`EINTR` retried when asked; the tests' injected failures come in here).
    @usableFromInline
    enum Attempt<T> { case success(T), failure(Int32) }

    @inlinable
    static func attempt<T: FixedWidthInteger>(_ operation: String, retryOnInterrupt: Bool, _ body: () -> T) -> Attempt<T> {
        while true {
            let code: Int32
            if let injected = SyscallFaults.take(operation) {
                code = injected
            } else {
                let result = body()
                if result != -1 { return .success(result) }
                code = errno
            }
            if code == EINTR && retryOnInterrupt { continue }
            return .failure(code)
        }
    }

    /// The error for a failed call: `EBADF`/`EFAULT` stop the program (a bug
    /// in the library, not a condition to handle).
    @usableFromInline
    package static func failure(_ operation: String, _ code: Int32) -> OSError {
        precondition(code != EBADF && code != EFAULT,
                     "\(operation) failed with \(Errno(rawValue: code)): a bad descriptor or address is a bug in swift-multiprocessing")
        return OSError(operation, errno: Errno(rawValue: code))
    }

    /// A result code (pthreads return the error instead of setting errno) as an error; nil for 0.
    package static func failure(_ operation: String, result: Int32) -> OSError? {
        result == 0 ? nil : failure(operation, result)
    }

    // MARK: processes

    package static func fork() throws(OSError) -> pid_t { try check("fork") { Glibc.fork() } }

    /// `waitpid`; returns 0 with `WNOHANG` when nothing has changed.
    package static func waitpid(_ pid: pid_t, _ status: inout Int32, _ options: Int32) throws(OSError) -> pid_t {
        try check("waitpid") { Glibc.waitpid(pid, &status, options) }
    }

    package static func kill(_ pid: pid_t, _ signal: Int32) throws(OSError) {
        _ = try check("kill") { Glibc.kill(pid, signal) }
    }

    package static func pidfdOpen(_ pid: pid_t) throws(OSError) -> Int32 {
        try check("pidfd_open") { cmp_pidfd_open(pid) }
    }

    package static func pidfdSendSignal(_ pidfd: Int32, _ signal: Int32) throws(OSError) {
        _ = try check("pidfd_send_signal") { cmp_pidfd_send_signal(pidfd, signal) }
    }

    package static func setChildSubreaper(_ on: Bool) throws(OSError) {
        _ = try check("prctl(PR_SET_CHILD_SUBREAPER)") { cmp_set_child_subreaper(on ? 1 : 0) }
    }

    package static func isChildSubreaper() throws(OSError) -> Bool {
        try check("prctl(PR_GET_CHILD_SUBREAPER)") { cmp_get_child_subreaper() } == 1
    }

    @inlinable package static var getpid: pid_t { Glibc.getpid() }
    package static var getppid: pid_t { Glibc.getppid() }
    /// The calling thread's kernel id (cached per thread by the synchronisation layer, reset in a forked child).
    @inlinable package static var gettid: pid_t { cmp_current_tid() }

    // MARK: descriptors

    /// `close(fd)`, never retried (Linux closes the descriptor even when
    /// close reports `EINTR`). NIO's rule: `EBADF` is a bug (a descriptor
    /// closed twice may by then be someone else's), and stops the program;
    /// `EIO` and the like are dropped (the descriptor is gone either way).
    package static func close(_ fd: Int32) {
        if Glibc.close(fd) == 0 { return }
        let code = errno
        precondition(code != EBADF, "close(\(fd)) failed with EBADF: a descriptor closed twice is a bug in swift-multiprocessing")
    }

    /// Waits until at least one of `fds` is readable (or at end-of-file) or
    /// `deadline` passes (nil: forever); returns the ready ones. A signal
    /// interrupting the wait resumes it with the time that is left.
    package static func pollReadable(_ fds: [Int32], until deadline: Deadline?) throws(OSError) -> [Int32] {
        var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while true {
            if try poll(&entries, until: deadline) > 0 { return entries.filter { $0.revents != 0 }.map(\.fd) }
            if let deadline, deadline.hasPassed { return [] } // else woken early by rounding: wait on
        }
    }

    /// Waits until `fd` is readable or `deadline` (nil = forever) passes.
    /// Returns whether it became readable.
    package static func pollReadable(_ fd: Int32, until deadline: Deadline?) throws(OSError) -> Bool {
        try !pollReadable([fd], until: deadline).isEmpty
    }

    /// `poll` until one of `fds` has an event or `deadline` passes; returns the
    /// count ready (0 at the deadline). A signal resumes the wait with the time left.
    @discardableResult
    package static func poll(_ fds: inout [pollfd], until deadline: Deadline?) throws(OSError) -> Int {
        while true {
            let ready = Glibc.poll(&fds, nfds_t(fds.count), deadline?.remainingMilliseconds ?? -1)
            if ready >= 0 { return Int(ready) }
            let code = errno
            if code != EINTR { throw failure("poll", code) }
        }
    }

    /// Reads and drops what is waiting on a non-blocking-enough descriptor
    /// (a wake-up pipe): one `read` of up to 256 bytes.
    package static func drain(_ fd: Int32) {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        _ = withUnsafeMutableBytes(of: &scratch) { Glibc.read(fd, $0.baseAddress, $0.count) }
    }

    /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE)`: each `read`
    /// takes one count.
    package static func eventSemaphore() throws(OSError) -> Int32 {
        try check("eventfd") { cmp_eventfd_semaphore() }
    }

    /// Adds one count to an eventfd (an 8-byte write).
    @inlinable
    package static func giveEvent(_ fd: Int32) {
        var one: UInt64 = 1
        while Glibc.write(fd, &one, 8) < 0 && errno == EINTR {}
    }

    /// Takes one count from an eventfd semaphore; false when it has none (`EAGAIN`).
    @inlinable
    package static func takeEvent(_ fd: Int32) -> Bool {
        var value: UInt64 = 0
        while true {
            if Glibc.read(fd, &value, 8) == 8 { return true }
            if errno != EINTR { return false }
        }
    }

    package static func pipe() throws(OSError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try check("pipe2") { cmp_pipe_cloexec(&fds) }
        return (fds[0], fds[1])
    }

    /// Clears `FD_CLOEXEC` on `fd`: children that exec keep it too.
    package static func setInheritable(_ fd: Int32) {
        _ = try? check("fcntl(F_SETFD)") { fcntl(fd, F_SETFD, 0) }
    }

    /// Closes every descriptor from 3 up except `keep` (`close_range`).
    package static func closeAll(except keep: Int32) { cmp_close_all_except(keep) }

    /// Writes one byte to a wake-up pipe; a full pipe already wakes its reader.
    @inlinable
    package static func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = try? checkAgain("write") { Glibc.write(fd, &byte, 1) }
    }

    /// `dup2(from, to)`.
    package static func dup2(_ from: Int32, _ to: Int32) throws(OSError) {
        _ = try check("dup2") { Glibc.dup2(from, to) }
    }

    /// One `read` into `buffer`: the count read, 0 at end of file or on a
    /// failure other than `EINTR` (for pass-through pipes whose errors end
    /// the stream).
    package static func readSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        (try? FileDescriptor(rawValue: fd).read(into: buffer, retryOnInterrupt: true)) ?? 0
    }

    /// Writes all of `bytes` to `fd` (standard error, a helper's pipe) on a
    /// best-effort basis: a diagnostic or a line to a helper that has gone
    /// has nowhere else to go, so a failure is dropped by design.
    package static func writeBestEffort(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
        _ = try? FileDescriptor(rawValue: fd).writeAll(bytes)
    }

    /// ``writeBestEffort(_:_:)`` of a string's UTF-8.
    package static func writeBestEffort(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { writeBestEffort(fd, UnsafeRawBufferPointer($0)) }
    }

    /// `setvbuf(stdout, NULL, mode, 0)`: `_IOLBF`, `_IOFBF` or `_IONBF`.
    package static func setStdoutBuffering(_ mode: Int32) { cmp_stdout_set_buffering(mode) }

    /// Flushes every C stdio stream (Swift's `print` writes through stdout's buffer).
    package static func flushStdio() { _ = fflush(nil) }
}

/// The lines a helper process reads from its pipe (the resource tracker, a
/// shared-memory manager's keeper): one `read`, then the complete lines.
package struct PipeLines {
    package let fd: Int32
    private var pending: [UInt8] = []
    private var buffer = [UInt8](repeating: 0, count: 4096)

    package init(_ fd: Int32) { self.fd = fd }

    /// Reads once (blocking) and returns the complete lines; nil at end-of-file.
    package mutating func next() -> [String]? {
        let fd = self.fd
        let count = buffer.withUnsafeMutableBytes { Sys.readSome(fd, into: $0) }
        if count <= 0 { return nil }
        pending += buffer[0..<count]
        var lines: [String] = []
        while let newline = pending.firstIndex(of: 10) {
            lines.append(String(decoding: pending[..<newline], as: UTF8.self))
            pending.removeSubrange(...newline)
        }
        return lines
    }
}
