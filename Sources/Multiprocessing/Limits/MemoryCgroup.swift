import Glibc
import Synchronization
import MultiprocessingPlatform

/// One worker's memory cgroup: a directory the parent makes, with the cap
/// written in it, which the child joins as its first act, and which the
/// parent reads (was the worker OOM-killed?) and removes after reaping it.
struct MemoryCgroup: Codable, Sendable, Hashable {
    enum Version: String, Codable, Sendable { case v1, v2 }

    let directory: String
    let version: Version

    /// What the README and errors call it.
    var enforcement: String {
        switch version {
        case .v1: "cgroup v1 memory.limit_in_bytes"
        case .v2: "cgroup v2 memory.max"
        }
    }

    /// Where this process may make memory cgroups, found once: the parent
    /// given, or this process's own cgroup (v2 only at the root, where the
    /// memory controller can be handed down; v1 wherever it is writable).
    struct Parent: Sendable {
        let directory: String
        let version: Version
    }

    private static let discovered = Mutex<Result<Parent, MP.Error>?>(nil)
    private static let counter = Atomic<Int>(0)

    static func parent(given: String?) -> Result<Parent, MP.Error> {
        if let given { return inspect(given) }
        return discovered.withLock { cached in
            if let cached { return cached }
            let found = discover()
            cached = found
            if case .success(let parent) = found { sweepStale(in: parent.directory) }
            return found
        }
    }

    /// A delegated directory: v2 if it hands the memory controller down, v1 if it is a memory cgroup.
    private static func inspect(_ directory: String) -> Result<Parent, MP.Error> {
        let what = "a memory cgroup under \(directory)"
        if let controllers = Sys.readSmallFile(directory + "/cgroup.subtree_control") {
            guard controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory") else {
                return .failure(.limitUnsupported(what, "its cgroup.subtree_control does not enable the memory controller"))
            }
            guard Sys.isWritable(directory) else { return .failure(.limitUnsupported(what, "the directory is not writable by this user")) }
            return .success(Parent(directory: directory, version: .v2))
        }
        if Sys.readSmallFile(directory + "/memory.limit_in_bytes") != nil {
            guard Sys.isWritable(directory) else { return .failure(.limitUnsupported(what, "the directory is not writable by this user")) }
            return .success(Parent(directory: directory, version: .v1))
        }
        return .failure(.limitUnsupported(what, "it is not a cgroup directory with the memory controller"))
    }

    /// This process's cgroup, under the v2 mount or the v1 memory mount.
    private static func discover() -> Result<Parent, MP.Error> {
        let what = "a memory cgroup"
        guard let membership = Sys.readSmallFile("/proc/self/cgroup"), let mounts = Sys.readSmallFile("/proc/self/mountinfo") else {
            return .failure(.limitUnsupported(what, "/proc/self/cgroup or /proc/self/mountinfo is unreadable"))
        }
        var v2Mount: String?, v1Mount: String?
        for line in mounts.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let before = halves[0].split(separator: " "), after = halves[1].split(separator: " ")
            guard before.count >= 5, after.count >= 3 else { continue }
            if after[0] == "cgroup2" { v2Mount = v2Mount ?? String(before[4]) }
            if after[0] == "cgroup", after[2].split(separator: ",").contains("memory") { v1Mount = v1Mount ?? String(before[4]) }
        }
        var reasons: [String] = []
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = fields[2] == "/" ? "" : String(fields[2])
            if fields[1].isEmpty, let v2Mount {
                switch inspect(v2Mount + path) {
                case .success(let parent): return .success(parent)
                case .failure(let error): reasons.append("cgroup v2: " + error.message)
                }
            } else if fields[1].split(separator: ",").contains("memory"), let v1Mount {
                switch inspect(v1Mount + path) {
                case .success(let parent): return .success(parent)
                case .failure(let error): reasons.append("cgroup v1: " + error.message)
                }
            }
        }
        if reasons.isEmpty { reasons.append("no cgroup with the memory controller is mounted") }
        return .failure(.limitUnsupported(what, reasons.joined(separator: "; ")))
    }

    /// Removes the empty cgroups of processes that died without removing
    /// theirs (`swift-mp-<pid>-<n>` whose pid is gone).
    private static func sweepStale(in directory: String) {
        for name in Sys.listDirectory(directory) where name.hasPrefix("swift-mp-") {
            let parts = name.split(separator: "-")
            guard parts.count == 4, let pid = Int32(parts[2]), !Sys.processExists(pid) else { continue }
            try? Sys.removeDirectory(directory + "/" + name)
        }
    }

    /// Makes a cgroup capped at `bytes` under `parent`.
    static func make(under parent: Parent, bytes: Int) throws(MP.Error) -> MemoryCgroup {
        let name = "swift-mp-\(Sys.getpid)-\(counter.add(1, ordering: .relaxed).newValue)"
        let group = MemoryCgroup(directory: parent.directory + "/" + name, version: parent.version)
        do {
            try Sys.makeDirectory(group.directory)
        } catch {
            throw .limitUnsupported("a memory cgroup under \(parent.directory)", "\(error)", underlying: error)
        }
        do throws(MP.OSError) {
            switch parent.version {
            case .v1:
                try Sys.writeControlFile(group.directory + "/memory.limit_in_bytes", "\(bytes)")
                // Where swap is accounted, memory and swap together: the cap
                // is not dodged by swapping (the file is absent otherwise).
                try? Sys.writeControlFile(group.directory + "/memory.memsw.limit_in_bytes", "\(bytes)")
            case .v2:
                try Sys.writeControlFile(group.directory + "/memory.max", "\(bytes)")
                try? Sys.writeControlFile(group.directory + "/memory.swap.max", "0")
            }
        } catch {
            group.remove()
            throw .limitUnsupported("a memory cap in \(group.directory)", "\(error)", underlying: error)
        }
        return group
    }

    /// In the child: moves this process into the cgroup.
    func join() throws(MP.Error) {
        do {
            try Sys.writeControlFile(directory + "/cgroup.procs", "\(Sys.getpid)")
        } catch {
            throw .limitsNotApplied("joining \(directory): \(error)", underlying: error)
        }
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    var oomKills: Int {
        let file = version == .v1 ? "/memory.oom_control" : "/memory.events"
        guard let text = Sys.readSmallFile(directory + file) else { return 0 }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == "oom_kill", let count = Int(fields[1]) { return count }
        }
        return 0
    }

    /// Removes the directory (once its processes are gone; a v1 cgroup hands its charges up).
    func remove() { try? Sys.removeDirectory(directory) }
}
