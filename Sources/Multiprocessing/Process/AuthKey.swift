import MultiprocessingPlatform
/// The process's authentication key (Python's `current_process().authkey`):
/// 32 random bytes made in the main process, inherited by every child
/// (forked ones by memory, spawned and forkserver ones in their launch
/// message). A ``MP/Manager`` uses it when given no key, so its proxies work
/// in every process of the program, pool workers included.
enum ProcessAuthKey {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var key: [UInt8]?

    static var current: [UInt8] {
        get {
            lock.withLock {
                if let key { return key }
                let made = Sys.randomBytes(32)
                key = made
                return made
            }
        }
        set { lock.withLock { key = newValue } }
    }

    /// A launched child takes its parent's key.
    static func adopt(_ inherited: [UInt8]?) {
        guard let inherited else { return }
        lock.withLock { key = inherited }
    }
}

extension MP.Process {
    /// Python's `authkey`: the key of the process this code runs in (the
    /// main process makes one; children inherit it). Set it before starting
    /// children that must share another key; a ``MP/Manager`` made without
    /// `authkey:` uses it.
    public var authkey: [UInt8] {
        get { ProcessAuthKey.current }
        set { ProcessAuthKey.current = newValue }
    }
}
