import SystemPackage

/// An operating-system call failed: which call, and the `errno` it set.
///
/// Python raises `OSError` with the same two facts. The library spells it
/// `MP.OSError`; it is defined here, in the platform layer, because every
/// wrapper in `Sys` throws it.
public struct OSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The call that failed, e.g. `"fork"` or `"waitpid"`.
    public let operation: String
    /// The error number the call reported.
    public let errno: Errno

    public init(_ operation: String, errno: Errno) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "\(operation) failed: \(errno) (errno \(errno.rawValue))"
    }
}
