import Glibc
import MultiprocessingPlatform

extension MP {
    /// Flushes every C stdio stream. Swift's `print` writes through stdout's
    /// buffer, which is line-buffered on a terminal and block-buffered into a
    /// pipe or a file: a child's output may sit in its buffer until it exits
    /// (the library flushes at a child's exit and before every fork).
    /// Python's `sys.stdout.flush()`.
    public static func flushOutput() { Sys.flushStdio() }

    /// Makes stdout line-buffered even into a pipe or a file, so each line
    /// appears as it is printed (Python's `python -u`, for lines). Call it
    /// first in `main`, before anything is printed. Forked children inherit
    /// it; spawned and forkserver children are told to do the same.
    public static func setLineBufferedOutput() {
        OutputMode.lineBuffered = true
        Sys.setStdoutBuffering(_IOLBF)
    }
}

/// Whether this program asked for line-buffered stdout (passed to launched children).
enum OutputMode {
    private static let lock = ForkSafeLock()
    nonisolated(unsafe) private static var isLineBuffered = false

    static var lineBuffered: Bool {
        get { lock.withLock { isLineBuffered } }
        set { lock.withLock { isLineBuffered = newValue } }
    }
}
