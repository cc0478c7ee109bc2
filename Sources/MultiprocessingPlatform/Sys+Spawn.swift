import Glibc
import _CMultiprocessingShims
import SystemPackage

/// Starting programs and moving descriptors: what the spawn and forkserver
/// start methods need.
extension Sys {
    /// `posix_spawn(path, argv, envp)` with `descriptors[i]` at `3 + i` in
    /// the child and every other descriptor from 3 up closed (`cmp_spawn`);
    /// the environment is this process's plus `addedEnvironment` (`NAME=value`).
    package static func spawn(_ path: String, arguments: [String], descriptors: [Int32], addedEnvironment: [String] = [], resetSignals: Bool = true) throws(OSError) -> pid_t {
        // Every source above the target range first, so no dup2 overwrites a later source.
        let floor = Int32(3 + descriptors.count)
        var lifted: [Int32] = []
        defer { for fd in lifted { close(fd) } }
        for fd in descriptors {
            let copy = cmp_dup_above(fd, floor)
            if copy < 0 { throw failure("fcntl(F_DUPFD_CLOEXEC)", errno) }
            lifted.append(copy)
        }
        var cArguments = arguments.map { strdup($0) }
        cArguments.append(nil)
        defer { for argument in cArguments { free(argument) } }
        var cEnvironment: [UnsafeMutablePointer<CChar>?] = []
        if !addedEnvironment.isEmpty {
            var entry = environ
            while let variable = entry.pointee { cEnvironment.append(strdup(variable)); entry += 1 }
            cEnvironment += addedEnvironment.map { strdup($0) }
            cEnvironment.append(nil)
        }
        defer { for variable in cEnvironment { free(variable) } }
        var pid: pid_t = 0
        _ = try check("posix_spawn") {
            cEnvironment.isEmpty
                ? cmp_spawn(&pid, path, cArguments, nil, lifted, Int32(lifted.count), resetSignals ? 1 : 0)
                : cmp_spawn(&pid, path, cArguments, cEnvironment, lifted, Int32(lifted.count), resetSignals ? 1 : 0)
        }
        return pid
    }

    /// Runs `arguments[0]` (a path) to its end: `posix_spawn` with standard
    /// input from `/dev/null` and standard output and error into the file
    /// `outputPath` (created or truncated), then `waitpid` on its pid (never
    /// a wait for any child: the library reaps its own). Returns the raw wait
    /// status. For helper commands (`initdb`, `pg_ctl`) whose output is read
    /// only when they fail, and which may leave a server running that must
    /// hold no pipe of ours.
    package static func run(_ arguments: [String], outputPath: String) throws(OSError) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO)
        var cArguments = arguments.map { strdup($0) }
        cArguments.append(nil)
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let error = posix_spawn(&pid, arguments[0], &actions, nil, cArguments, environ)
        if error != 0 { throw failure("posix_spawn", error) }
        var status: Int32 = 0
        _ = try waitpid(pid, &status, 0)
        return status
    }

    /// Whether a raw wait status is a normal exit with code 0.
    package static func exitedCleanly(_ status: Int32) -> Bool {
        (status & 0x7f) == 0 && (status >> 8) & 0xff == 0
    }

    /// `memfd_create(name, MFD_CLOEXEC)`.
    package static func memoryFile(_ name: String) throws(OSError) -> Int32 {
        try check("memfd_create") { cmp_memfd(name) }
    }

    /// `open(path, O_RDONLY | O_CLOEXEC)`.
    package static func openReadOnly(_ path: String) throws(OSError) -> Int32 {
        try check("open") { open(path, O_RDONLY | O_CLOEXEC) }
    }

    /// `dup(fd)` with close-on-exec (`F_DUPFD_CLOEXEC`).
    package static func duplicate(_ fd: Int32) throws(OSError) -> Int32 {
        try check("fcntl(F_DUPFD_CLOEXEC)") { cmp_dup_above(fd, 0) }
    }

    /// Writes all of `bytes` to `fd` at `offset` onwards (`pwrite`, EINTR retried).
    package static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws(OSError) {
        var written = 0
        while written < bytes.count {
            let done = written
            let result = bytes.withUnsafeBytes { raw in
                pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw failure("pwrite", errno)
            }
            written += result
        }
    }

    /// All bytes of the file behind `fd`, from offset 0 (`pread`, EINTR retried).
    package static func readWholeFile(_ fd: Int32) throws(OSError) -> [UInt8] {
        let size = try fileSize(fd)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let start = done
            let count = bytes.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress! + start, raw.count - start, off_t(start))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("pread", errno)
            }
            if count == 0 { break }
            done += count
        }
        return Swift.Array(bytes[..<done])
    }

    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`; true when the parent is still `parent`.
    package static func dieWithParent(_ parent: pid_t) -> Bool {
        cmp_die_with_parent(parent) == 1
    }
}
