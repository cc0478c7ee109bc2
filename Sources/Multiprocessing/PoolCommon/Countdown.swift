import MultiprocessingPlatform

/// Counts completions down to zero, from any thread.
final class Countdown: @unchecked Sendable {
    private let lock = ForkSafeLock()
    private var left: Int
    init(_ count: Int) { left = count }
    /// True for the call that reaches zero.
    func tick() -> Bool { lock.withLock { left -= 1; return left == 0 } }
}
