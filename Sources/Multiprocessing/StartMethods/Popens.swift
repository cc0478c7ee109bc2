import Glibc
import MultiprocessingPlatform

extension MP.StartMethod {
    /// The `Popen` type of this method (registered as ``PopenTypes/resolve``).
    var popen: any Popen.Type {
        switch self {
        case .fork: return ForkPopen.self
        case .spawn: return SpawnPopen.self
        case .forkserver: return ForkServerPopen.self
        }
    }
}

/// CPython's `popen_fork`: the child is a copy of this process and runs the
/// process object's target (a closure, a subclass's `run()`, a named task).
struct ForkPopen: Popen {
    static let method = MP.StartMethod.fork
    let pid: pid_t
    let sentinel: Int32

    static func check(_ process: MP.Process) throws(MP.Error) {
        if process.needsChildExecutors && !ChildExecutors.isAvailable {
            throw .concurrencyUnavailable(name: process.name)
        }
        try process.checkNamedTask()
    }

    static func launch(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t {
        try ForkWatchdog.fork(process, request)
    }
}

/// A start method whose child is a fresh program told what to run by a
/// ``LaunchMessage``: spawn and forkserver, which differ only in who makes
/// the child.
protocol LaunchingPopen: Popen {
    /// Starts a child that reads `message`; its pid.
    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t
}

extension LaunchingPopen {
    static func check(_ process: MP.Process) throws(MP.Error) { try process.checkLaunchable(method) }

    static func launch(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t {
        do {
            let message = try LaunchMessage(process, daemon: request.daemon, method: method)
            defer { message.close() }
            return try launch(message, daemon: request.daemon)
        } catch {
            throw .task(error)
        }
    }
}

/// CPython's `popen_spawn_posix`: `posix_spawn` of `/proc/self/exe`, which
/// runs the named task from the library's `.init_array` hook.
struct SpawnPopen: LaunchingPopen {
    static let method = MP.StartMethod.spawn
    let pid: pid_t
    let sentinel: Int32

    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t {
        try Spawner.spawn(message.descriptors, daemon: daemon)
    }
}

/// CPython's `popen_forkserver`: the forkserver (a fresh, single-threaded
/// copy of the program) clones the child, which runs the named task.
struct ForkServerPopen: LaunchingPopen {
    static let method = MP.StartMethod.forkserver
    let pid: pid_t
    let sentinel: Int32

    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t {
        try ForkServerClient.launch(message.descriptors)
    }
}
