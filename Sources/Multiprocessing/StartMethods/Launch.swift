import Glibc
import MultiprocessingPlatform

/// What a spawned or forkserver child is told: which task, with which
/// arguments, as which process. Written by the parent into a memfd that
/// becomes the child's first passed descriptor (descriptor 3 after spawn).
struct LaunchInfo {
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

extension LaunchInfo {
    /// The launch message's bytes, written field by field with the wire's
    /// primitives rather than through `Codable`: a fresh process's first
    /// decoding of a type asks the runtime about each field's type, each
    /// question a scan of every conformance record of the program, and a
    /// spawned child reads this before anything else.
    var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.write(build)
        writer.write(task)
        writer.writeLength(arguments.count)
        writer.writeRaw(arguments)
        writer.write(processName)
        writer.writeLength(identity.count)
        for number in identity { writer.write(number) }
        writer.write(UInt8(daemon ? 1 : 0))
        writer.write(parentPid)
        writer.write(parentName)
        writer.write(UInt8(lineBuffered ? 1 : 0))
        writer.write(UInt8(logLevel == nil ? 0 : 1))
        if let logLevel { writer.write(logLevel) }
        writer.write(UInt8(authkey == nil ? 0 : 1))
        if let authkey {
            writer.writeLength(authkey.count)
            writer.writeRaw(authkey)
        }
        return writer.bytes
    }

    /// Reads ``encoded``; every length is checked against what remains.
    init(decoding bytes: [UInt8]) throws(MP.Error) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(MP.Error) -> LaunchInfo in
                var reader = ByteReader(raw)
                let build = try reader.readString()
                let task = try reader.readString()
                let arguments = [UInt8](try reader.readRaw(try reader.readLength()))
                let processName = try reader.readString()
                var identity: [Int] = []
                for _ in 0..<(try reader.readLength()) { identity.append(try reader.read(Int.self)) }
                let daemon = try reader.readBool()
                let parentPid = try reader.read(Int32.self)
                let parentName = try reader.readString()
                let lineBuffered = try reader.readBool()
                let logLevel = try reader.readBool() ? try reader.readString() : nil
                let authkey = try reader.readBool() ? [UInt8](try reader.readRaw(try reader.readLength())) : nil
                guard reader.remaining == 0 else {
                    throw .malformed(type: "launch message", reason: "\(reader.remaining) bytes left over")
                }
                return LaunchInfo(build: build, task: task, arguments: arguments, processName: processName,
                                  identity: identity, daemon: daemon, parentPid: parentPid, parentName: parentName,
                                  lineBuffered: lineBuffered, logLevel: logLevel, authkey: authkey)
            }
        }
        self = try result.get()
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
        let message = info.encoded
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
