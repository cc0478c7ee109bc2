import Glibc

/// The one place a Python-style timeout (seconds, `nil` for no limit) becomes
/// a point on the monotonic clock.
///
/// - `nil` and `+infinity` mean no limit (``after(_:invalid:)`` returns nil);
/// - a negative timeout or NaN is refused with the caller's error;
/// - a timeout too large for the clock (over about 292 years) is a wait
///   without limit in all but name, and is treated as one: never a trap.
@usableFromInline
package struct Deadline: Sendable, Comparable {
    /// `CLOCK_MONOTONIC`, in nanoseconds.
    @usableFromInline package let nanoseconds: Int64

    @inlinable package init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    @inlinable package static func < (a: Deadline, b: Deadline) -> Bool { a.nanoseconds < b.nanoseconds }

    /// The current monotonic time, in nanoseconds.
    @inlinable package static var now: Int64 {
        var ts = Glibc.timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// The deadline `timeout` seconds from now; nil for no limit. Throws
    /// `invalid(timeout)` for a negative timeout or NaN.
    @inlinable package static func after<E: Error>(_ timeout: Double?, invalid: (Double) -> E) throws(E) -> Deadline? {
        guard let timeout else { return nil }
        guard timeout >= 0 else { throw invalid(timeout) } // also NaN
        if timeout == .infinity { return nil }
        return after(validSeconds: timeout)
    }

    /// The deadline `seconds` from now, for a timeout already validated; nil
    /// when it lies beyond the clock's range (no limit).
    @inlinable package static func after(validSeconds seconds: Double) -> Deadline? {
        let start = now
        let room = Double(Int64.max - start) / 1e9
        guard seconds < room else { return nil }
        return Deadline(nanoseconds: start + Int64(max(0, seconds) * 1e9))
    }

    /// Nanoseconds left, never negative.
    @inlinable package var remainingNanoseconds: Int64 { max(0, nanoseconds - Deadline.now) }

    /// Seconds left, never negative.
    @inlinable package var remainingSeconds: Double { Double(remainingNanoseconds) / 1e9 }

    @inlinable package var hasPassed: Bool { Deadline.now >= nanoseconds }

    /// Milliseconds left for `poll`/`epoll_wait`, rounded up, at most `Int32.max`.
    @inlinable package var remainingMilliseconds: Int32 {
        let left = remainingNanoseconds
        return Int32(clamping: left / 1_000_000 + (left % 1_000_000 == 0 ? 0 : 1))
    }

    /// An absolute `timespec` on `CLOCK_MONOTONIC` (for condition variables).
    @inlinable package var absoluteTimespec: Glibc.timespec {
        Glibc.timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}

extension Optional where Wrapped == Deadline {
    /// The C convention of the synchronisation layer: -1 waits without limit,
    /// otherwise the nanoseconds left (0: only try).
    @inlinable package var cTimeoutNanoseconds: Int64 {
        guard let deadline = self else { return -1 }
        return deadline.remainingNanoseconds
    }
}
