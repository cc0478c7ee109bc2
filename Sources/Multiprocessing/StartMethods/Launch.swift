import Glibc
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
    let check: () throws(MP.Error) -> Void
    let encode: (DescriptorTable) throws -> [UInt8]
    let runHere: () async throws -> Void

    init<T: MP.NamedTask>(_ task: T) {
        name = T.name
        check = { () throws(MP.Error) in try TaskRegistry.shared.checkSendable(T.self) }
        encode = { table in try WireFormat.encode(task, descriptors: table) }
        runHere = { _ = try await task.run() }
    }
}

/// The launch message of a spawned or forkserver child, ready to pass: a
/// memfd holding the ``LaunchInfo`` (the child's descriptor 3), then the
/// descriptors of the objects its task holds.
struct LaunchMessage {
    let descriptors: [Int32]
    private let launchFile: Int32

    init(_ process: MP.Process, daemon: Bool, method: MP.StartMethod) throws(MP.Error) {
        let table = DescriptorTable()
        guard let info = try process.launchInfo(daemon: daemon, objects: table) else {
            throw .needsFork(process: process.name, method: method)
        }
        try self.init(info, objects: table.descriptors, method: method)
    }

    init(_ info: LaunchInfo, objects: [Int32], method: MP.StartMethod) throws(MP.Error) {
        let message: [UInt8]
        do { message = try WireFormat.encode(info) } catch { throw .cannotCross("the launch message does not encode: \(error)") }
        do {
            launchFile = try Sys.memoryFile("mp-launch")
        } catch {
            throw .startFailed(method: method, reason: error.description)
        }
        do {
            try Sys.writeAll(launchFile, message, at: 0)
        } catch {
            Sys.close(launchFile)
            throw .startFailed(method: method, reason: error.description)
        }
        descriptors = [launchFile] + objects
    }

    /// Closes the launch file (the child has its own copy).
    func close() { Sys.close(launchFile) }
}

/// The spawn of ``SpawnPopen``: `posix_spawn` of `/proc/self/exe`, which
/// runs the task from its `.init_array` hook and never reaches `main`.
enum Spawner {
    static let flag = "--swift-multiprocessing-spawn"

    static func spawn(_ descriptors: [Int32], daemon: Bool) throws(MP.Error) -> pid_t {
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
