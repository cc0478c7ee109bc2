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

/// The launch message of a spawned or forkserver child, ready to pass: a
/// memfd holding the ``LaunchInfo`` (the child's descriptor 3), then the
/// descriptors of the objects its task holds.
struct LaunchMessage {
    let descriptors: [Int32]
    private let launchFile: Int32

    init(_ process: MP.Process, daemon: Bool, method: MP.StartMethod) throws(MP.Error) {
        let table = DescriptorTable()
        guard let namedTask = process.namedTask else { throw .needsFork(process: process.name, method: method) }
        let arguments: [UInt8]
        do {
            arguments = try namedTask.encode(table)
        } catch {
            if let error = error as? MP.Error, error.code == .cannotCross { throw error }
            throw .cannotCross("the arguments of named task '\(namedTask.name)' do not encode: \(error)")
        }
        let info = LaunchInfo(
            build: BuildIdentity.current, task: namedTask.name, arguments: arguments,
            processName: process.name, identity: process.identity, daemon: daemon,
            parentPid: Sys.getpid, parentName: Runtime.shared.current.name,
            lineBuffered: OutputMode.lineBuffered, logLevel: LibraryLog.currentLevel?.rawValue,
            authkey: ProcessAuthKey.current)
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
            throw .startFailed(method: MP.StartMethod.spawn, reason: error.description)
        }
    }

    static var programName: String { Runtime.programName }
}
