#if canImport(Glibc)
import Glibc
#endif
import MultiprocessingPlatform

/// What a spawned or forkserver child is told: which task, with which
/// arguments, as which process. Written by the parent into a memfd that
/// becomes the child's first passed descriptor (descriptor 3 after spawn).
struct LaunchInfo: Codable {
    var build: String
    var task: String
    var arguments: [UInt8]
    var processName: String
    var identity: [Int]
    var daemon: Bool
    var parentPid: Int32
    var parentName: String
    /// The parent asked for line-buffered stdout (``MP/setLineBufferedOutput()``).
    var lineBuffered: Bool
    /// The parent's library log level (``MP/logToStderr(level:)``), if it logs.
    var logLevel: String?
    /// The parent's ``ProcessAuthKey`` (Python's `authkey`, inherited).
    var authkey: [UInt8]?
}

/// A named task as a process target: its name, its checks, its encoding, and
/// how to run it in a forked child (no encoding needed there).
struct NamedTaskTarget: @unchecked Sendable {
    let name: String
    let check: () throws(MP.TaskError) -> Void
    let encode: (DescriptorTable) throws -> [UInt8]
    let runHere: () async throws -> Void

    init<T: MP.NamedTask>(_ task: T) {
        name = T.name
        check = { () throws(MP.TaskError) in try TaskRegistry.shared.checkSendable(T.self) }
        encode = { table in try WireFormat.encode(task, descriptors: table) }
        runHere = { _ = try await task.run() }
    }
}

/// Starting a child under spawn or forkserver (CPython's `popen_spawn_posix`
/// and `popen_forkserver`): the launch message, its descriptors, the method.
enum Launcher {
    /// Starts `info`'s child with `method` and returns its pid. The child is
    /// this process's own child under both methods.
    static func launch(_ info: LaunchInfo, objects: [Int32], method: MP.StartMethod, daemon: Bool) throws(MP.TaskError) -> pid_t {
        let message: [UInt8]
        do { message = try WireFormat.encode(info) } catch { throw .cannotCross("the launch message does not encode: \(error)") }
        let launchFile: Int32
        do {
            launchFile = try Sys.memoryFile("mp-launch")
            try Sys.writeAll(launchFile, message, at: 0)
        } catch {
            throw .startFailed(method: method, reason: error.description)
        }
        defer { Sys.close(launchFile) }
        let descriptors = [launchFile] + objects
        switch method {
        case .spawn: return try Spawner.spawn(descriptors, daemon: daemon)
        case .forkserver: return try ForkServerClient.launch(descriptors)
        case .fork: preconditionFailure("a fork is not launched")
        }
    }
}

/// CPython's `popen_spawn_posix`: `posix_spawn` of `/proc/self/exe`, which
/// runs the task from its `.init_array` hook and never reaches `main`.
enum Spawner {
    static let flag = "--swift-multiprocessing-spawn"

    static func spawn(_ descriptors: [Int32], daemon: Bool) throws(MP.TaskError) -> pid_t {
        let arguments = [programName, flag, String(descriptors.count)]
        let start = { () throws(MP.OSError) -> pid_t in
            try Sys.spawn("/proc/self/exe", arguments: arguments, descriptors: descriptors)
        }
        do {
            // PR_SET_PDEATHSIG follows the thread that created the child: a
            // daemon's creator must live as long as the process.
            if daemon && Sys.gettid != Sys.getpid {
                return try ForkerThread.shared().perform(start)
            }
            return try start()
        } catch {
            throw .startFailed(method: .spawn, reason: error.description)
        }
    }

    /// `argv[0]` of this process, for the child's command line (`ps` shows it).
    static let programName: String = CommandLine.arguments.first ?? "swift-multiprocessing"
}
