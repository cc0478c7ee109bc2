import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import SystemPackage
import MultiprocessingPlatform

extension MP {


    /// Python's `multiprocessing.shared_memory.SharedMemory`: a named segment
    /// (in `/dev/shm`) that an unrelated process can attach by name.
    ///
    /// Created owner-only (mode 0600) unless `permissions` says otherwise. The
    /// creator registers it with the resource tracker, a helper process that
    /// unlinks segments still registered when every process of this program
    /// is gone (a creator killed before `unlink()` leaks nothing).
    /// ```swift
    /// let shm = try MP.SharedMemory(create: true, size: 4096)
    /// shm.buffer.storeBytes(of: 42, as: Int.self)
    /// let other = try MP.SharedMemory(name: shm.name)   // anywhere, by name
    /// ```
    public final class SharedMemory: @unchecked Sendable {
        /// The name to attach with (without the leading `/`, like Python's).
        public let name: String
        /// The size in bytes.
        public let size: Int
        private var mapping: UnsafeMutableRawBufferPointer?

        /// - Parameters:
        ///   - name: the segment's name; with `create` and no name, a unique one is chosen.
        ///   - create: create a new segment (fails if the name exists) rather than attach.
        ///   - size: the size when creating.
        ///   - permissions: the mode when creating (owner-only by default).
        public init(name: String? = nil, create: Bool = false, size: Int = 0, permissions: mode_t = 0o600) throws(MP.Error) {
            let chosen = name ?? (create ? Self.uniqueName() : "")
            guard Self.isValid(chosen) else { throw .invalidName(chosen) }
            if create && size <= 0 { throw .invalidSize(size) }
            let path = "/" + chosen
            let flags = create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR
            let fd: Int32
            do {
                fd = try Sys.sharedMemoryOpen(path, flags: flags, mode: permissions)
            } catch {
                switch error.errno {
                case .fileExists: throw .alreadyExists(chosen)
                case .noSuchFileOrDirectory: throw .notFound(chosen)
                default: throw .system(error)
                }
            }
            defer { Sys.close(fd) }
            let length: Int
            let address: UnsafeMutableRawPointer?
            do {
                if create { try Sys.truncate(fd, to: size) }
                length = create ? size : try Sys.fileSize(fd)
                address = length == 0 ? nil : try Sys.mapShared(fd, size: length)
            } catch {
                if create { try? Sys.sharedMemoryUnlink(path) }
                throw .system(error)
            }
            self.name = chosen
            self.size = length
            mapping = UnsafeMutableRawBufferPointer(start: address, count: length)
            if create { ResourceTracker.register(path) }
        }

        deinit { close() }

        /// Python's `buf`: the segment's bytes in this process (empty once closed).
        public var buffer: UnsafeMutableRawBufferPointer { mapping ?? UnsafeMutableRawBufferPointer(start: nil, count: 0) }

        /// Python's `close()`: unmaps the segment from this process; it goes on existing.
        public func close() {
            if let mapping, let base = mapping.baseAddress { Sys.unmap(base, mapping.count) }
            mapping = nil
        }

        /// Python's `unlink()`: removes the name; attached processes keep their mapping.
        public func unlink() throws(MP.Error) {
            do {
                try Sys.sharedMemoryUnlink("/" + name)
            } catch {
                if error.errno == .noSuchFileOrDirectory { throw .notFound(name) }
                throw .system(error)
            }
            ResourceTracker.unregister("/" + name)
        }

        static func isValid(_ name: String) -> Bool {
            !name.isEmpty && name.utf8.count <= 200 && !name.contains("/") && !name.utf8.contains(0) && name != "." && name != ".."
        }

        private static func uniqueName() -> String {
            "mp_\(Sys.getpid)_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        }
    }
}
