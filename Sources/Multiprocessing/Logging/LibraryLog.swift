import Glibc
import Logging
import Synchronization
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.get_logger()`: the library's logger, for its
    /// lifecycle events (a process started, a process exited with its
    /// status, a pool worker replaced, a pool terminated, a segment unlinked
    /// by the resource tracker). Silent until ``logToStderr(level:)`` or
    /// ``setLogger(_:)``.
    public static func getLogger() -> Logger { LibraryLog.logger }

    /// Python's `multiprocessing.log_to_stderr(level)`: the library's events at
    /// `level` and above go to standard error as `[INFO/MainProcess] message`,
    /// Python's format. The writer takes no lock (one `write` per line), so a
    /// forked child that logs can never wait on a lock copied at the fork.
    /// Spawned and forkserver children, and the resource tracker, inherit the level.
    @discardableResult
    public static func logToStderr(level: Logger.Level = .info) -> Logger {
        LibraryLog.configure(level: level, custom: nil)
        return LibraryLog.logger
    }

    /// Sends the library's events to your own `Logger` (any swift-log backend).
    /// In a forked child the events go to standard error instead (at the
    /// logger's level): a backend's lock may have been held by another thread
    /// at the fork. `nil` silences them again.
    public static func setLogger(_ logger: Logger?) {
        LibraryLog.configure(level: logger?.logLevel, custom: logger)
    }
}

/// The library's logging: a level (nil: silent) read without a lock on every
/// event, and the logger events go to.
enum LibraryLog {
    /// `Logger.Level` raw order, or -1 when silent.
    private static let level = Atomic<Int>(-1)
    /// The current process's name, for each line (Python's `[INFO/Process-1]`):
    /// set by the process layer when it starts, a hook rather than a
    /// reference, since processes log.
    nonisolated(unsafe) static var processName: @Sendable () -> String = { "MainProcess" }
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var custom: Logger?
    static let environment = "SWIFT_MULTIPROCESSING_LOG"

    private static let levels: [Logger.Level] = [.trace, .debug, .info, .notice, .warning, .error, .critical]

    /// The library's own logger, writing to stderr without a lock.
    static var logger: Logger {
        var logger = Logger(label: "multiprocessing") { _ in StderrHandler() }
        logger.logLevel = currentLevel ?? .critical
        return logger
    }

    static var currentLevel: Logger.Level? {
        let raw = level.load(ordering: .relaxed)
        return raw >= 0 ? levels[raw] : nil
    }

    static func configure(level newLevel: Logger.Level?, custom newCustom: Logger?) {
        lock.withLock { custom = newCustom }
        level.store(newLevel.flatMap { levels.firstIndex(of: $0) } ?? -1, ordering: .relaxed)
        installed
    }

    /// A forked child drops a custom backend (its locks were copied as they were).
    private static let installed: Void = AfterFork.register { LibraryLog.forgetCustomAfterFork() }

    private static func forgetCustomAfterFork() { custom = nil }

    /// A launched child (or the tracker) starts at the level its parent passed.
    static func adopt(_ name: String?) {
        guard let name, let chosen = Logger.Level(rawValue: name) else { return }
        configure(level: chosen, custom: nil)
    }

    /// The level to pass to a spawned process: `SWIFT_MULTIPROCESSING_LOG=info`.
    static var environmentForChildren: [String] {
        currentLevel.map { ["\(environment)=\($0.rawValue)"] } ?? []
    }

    /// Logs `message` if the level allows: through the custom logger in the
    /// process that set it, else the lock-free stderr writer.
    static func log(_ eventLevel: Logger.Level, _ message: @autoclosure () -> String) {
        let raw = level.load(ordering: .relaxed)
        guard raw >= 0, let index = levels.firstIndex(of: eventLevel), index >= raw else { return }
        let text = message()
        if let custom = lock.withLock({ custom }) {
            custom.log(level: eventLevel, "\(text)")
        } else {
            StderrHandler.write(eventLevel, text)
        }
    }
}

/// Python's `[LEVEL/ProcessName] message` on stderr, one `write` per line.
struct StderrHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        Self.write(event.level, "\(event.message)")
    }

    static func write(_ level: Logger.Level, _ message: String) {
        let name: String
        switch level {
        case .trace: name = "SUBDEBUG"
        case .debug: name = "DEBUG"
        case .info, .notice: name = "INFO"
        case .warning: name = "WARNING"
        case .error: name = "ERROR"
        case .critical: name = "CRITICAL"
        }
        Sys.writeBestEffort(STDERR_FILENO, "[\(name)/\(LibraryLog.processName())] \(message)\n")
    }
}
