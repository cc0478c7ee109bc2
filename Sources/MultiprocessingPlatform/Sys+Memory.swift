import Glibc
import _CMultiprocessingSync
import SystemPackage

/// Memory and shared memory: anonymous shared mappings, named segments.
extension Sys {
    /// The page size (`sysconf(_SC_PAGESIZE)`).
    package static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// `mmap(MAP_SHARED | MAP_ANONYMOUS)` of `size` zeroed bytes, inherited by children forked later.
    package static func mapShared(_ size: Int) throws(OSError) -> UnsafeMutableRawPointer {
        guard let address = cmp_shared_map(size) else { throw failure("mmap", errno) }
        return address
    }

    /// Maps the pages of a shared region into this process's page table by
    /// reading one byte per page (`cmp_shared_prefault`): one read fault maps
    /// neighbours too, a write fault one page.
    package static func prefaultShared(_ address: UnsafeRawPointer, _ size: Int) {
        cmp_shared_prefault(address, size)
    }

    /// What `madvise` did with a range.
    @usableFromInline
    package enum Advice { case applied, noWholePage, refused }

    /// `madvise(MADV_WIPEONFORK)` (or, without `wipe`, `MADV_KEEPONFORK`) on
    /// the whole pages inside the range.
    @inlinable
    package static func setWipeOnFork(_ address: UnsafeMutableRawPointer?, _ size: Int, wipe: Bool) -> Advice {
        switch cmp_wipe_on_fork(address, size, wipe ? 1 : 0) {
        case 0: return .applied
        case 1: return .noWholePage
        default: return .refused
        }
    }

    /// `madvise(MADV_POPULATE_WRITE)`: the write faults of the range taken
    /// now, in one call. A hint: an older kernel's refusal is ignored.
    @inlinable
    package static func populateWritable(_ address: UnsafeMutableRawPointer?, _ size: Int) {
        cmp_populate_writable(address, size)
    }

    /// `futex(FUTEX_WAIT)` on a word of shared memory: sleeps while `*word`
    /// holds `expected`, until `deadline` (nil: no limit). Returns whether the
    /// deadline passed; a wake-up, a changed word or a signal return false
    /// (the caller looks at the word again).
    package static func futexSleep(_ word: UnsafeMutablePointer<UInt32>, _ expected: UInt32, until deadline: Deadline?) -> Bool {
        if let deadline, deadline.hasPassed { return true }
        return cmp_futex_wait(word, expected, deadline.cTimeoutNanoseconds) == ETIMEDOUT
    }

    /// `futex(FUTEX_WAKE)`: wakes up to `count` sleepers on `word`.
    package static func futexWake(_ word: UnsafeMutablePointer<UInt32>, _ count: Int32) {
        cmp_futex_wake(word, count)
    }

    /// `munmap`.
    package static func unmap(_ address: UnsafeMutableRawPointer, _ size: Int) {
        _ = cmp_shared_unmap(address, size)
    }

    /// `shm_open(path, flags, mode)`; `EEXIST` and `ENOENT` come back as the errno for the caller to name.
    package static func sharedMemoryOpen(_ path: String, flags: Int32, mode: mode_t) throws(OSError) -> Int32 {
        try check("shm_open") { shm_open(path, flags, mode) }
    }

    /// `shm_unlink(path)`.
    package static func sharedMemoryUnlink(_ path: String) throws(OSError) {
        _ = try check("shm_unlink") { shm_unlink(path) }
    }

    /// `ftruncate(fd, size)`.
    package static func truncate(_ fd: Int32, to size: Int) throws(OSError) {
        _ = try check("ftruncate") { ftruncate(fd, off_t(size)) }
    }

    /// The size of the file behind `fd` (`fstat`).
    package static func fileSize(_ fd: Int32) throws(OSError) -> Int {
        var info = stat()
        _ = try check("fstat") { fstat(fd, &info) }
        return Int(info.st_size)
    }

    /// `mmap(PROT_READ | PROT_WRITE, MAP_SHARED)` of `size` bytes of `fd`.
    package static func mapShared(_ fd: Int32, size: Int) throws(OSError) -> UnsafeMutableRawPointer {
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let address, address != MAP_FAILED else { throw failure("mmap", errno) }
        return address
    }

    /// Raises the soft `RLIMIT_NOFILE` to the hard limit (`setrlimit`); failures are ignored.
    package static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
