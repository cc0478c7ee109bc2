import MultiprocessingPlatform

extension MP {
    /// An operating-system call failed: which call, and the `errno` it set
    /// (Python's `OSError`). Defined in the platform layer, whose every call
    /// throws it; an ``MP/Error`` of code ``MP/Error/Code/system`` carries it.
    public typealias OSError = MultiprocessingPlatform.OSError

    /// Every error the library throws: one type, whose ``code`` says what
    /// kind of failure it is, whose ``message`` names the process, object
    /// and call, and which carries the operating-system error behind it, if any.
    ///
    /// Catch one kind with its code, whichever object threw it:
    ///
    /// ```swift
    /// do {
    ///     let value = try queue.get(timeout: 1)
    /// } catch MP.Error.Code.empty {
    ///     print("nothing within a second")
    /// } catch {
    ///     switch error.code {
    ///     case .timeout, .cancelled: print("gave up: \(error)")
    ///     default: throw error
    ///     }
    /// }
    /// ```
    ///
    /// Codes are values, not enum cases: a new kind of failure in a later
    /// version does not break a `switch` over them (swift-subprocess's
    /// `SubprocessError` is the model). Python's exceptions map onto codes:
    /// `queue.Empty` is ``Code/empty``, `TimeoutError` ``Code/timeout``,
    /// `EOFError` ``Code/endOfFile``, `AuthenticationError`
    /// ``Code/authentication``, `BufferTooShort` ``Code/bufferTooShort``,
    /// `BrokenBarrierError` ``Code/brokenBarrier``, `OSError` ``Code/system``,
    /// `ValueError` and `AssertionError` on misuse ``Code/invalidArgument``
    /// or ``Code/invalidState``.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        /// What kind of failure an ``MP/Error`` is.
        public struct Code: Hashable, Sendable, CustomStringConvertible {
            /// The code's name, as `description` prints it.
            public let name: String

            /// A code of a layer built on this library (the cluster adds `.database`).
            public init(_ name: String) { self.name = name }

            public var description: String { name }

            /// Matches an error of this code: `catch MP.Error.Code.timeout { ... }`.
            public static func ~= (code: Code, error: any Swift.Error) -> Bool {
                (error as? MP.Error)?.code == code
            }

            /// A wait ran out of time (Python's `TimeoutError`; a pool's
            /// `get(timeout:)`, a task past its own timeout, a manager that
            /// does not answer, a connection's `recv(timeout:)`).
            public static let timeout = Code("timeout")
            /// An await was cancelled (its Swift task was), or a pool task was.
            public static let cancelled = Code("cancelled")
            /// The object was closed, shut down or terminated, and takes no more work.
            public static let closed = Code("closed")
            /// The peer closed its end: nothing more will come (Python's `EOFError`).
            public static let endOfFile = Code("endOfFile")
            /// The peer's end is closed: a send cannot arrive (Python's `BrokenPipeError`).
            public static let brokenPipe = Code("brokenPipe")
            /// A value passed in is out of its range: a negative timeout, a bad
            /// name or size (Python's `ValueError`).
            public static let invalidArgument = Code("invalidArgument")
            /// A call made in the wrong state or from the wrong place: joining
            /// before starting, starting twice, releasing a lock not held,
            /// using a pool from another process (Python's `AssertionError`,
            /// `ValueError` and `RuntimeError` on misuse).
            public static let invalidState = Code("invalidState")
            /// An operating-system call failed; ``MP/Error/underlying`` says which and why.
            public static let system = Code("system")
            /// A queue had nothing within the time given (Python's `queue.Empty`).
            public static let empty = Code("empty")
            /// A queue had no room within the time given (Python's `queue.Full`).
            public static let full = Code("full")
            /// A message or item is larger than the limit it must fit.
            public static let tooLarge = Code("tooLarge")
            /// Bytes received are not what they claim to be (a corrupt or cut stream, a bad pickle).
            public static let malformed = Code("malformed")
            /// A value arrived as another type than the one asked for.
            public static let typeMismatch = Code("typeMismatch")
            /// A value cannot be encoded to cross to another process.
            public static let encoding = Code("encoding")
            /// The pickle codec refuses what would run code, or what it does not support.
            public static let refused = Code("refused")
            /// The peer did not prove it knows the key, or refused ours (Python's `AuthenticationError`).
            public static let authentication = Code("authentication")
            /// An address cannot be used (a host that does not resolve, a bad path).
            public static let address = Code("address")
            /// The task (or a pool's initializer, or a managed object's method)
            /// threw in the process that ran it; ``MP/Error/errorType`` names its error's type.
            public static let taskFailed = Code("taskFailed")
            /// The process running the task died (a signal, a crash, `exit`), or was lost.
            public static let workerDied = Code("workerDied")
            /// A process could not be started (the forkserver died twice, no
            /// memory, a forked child stuck at the fork, no executor hooks).
            public static let startFailed = Code("startFailed")
            /// No named task by that name in this build, or two by one name.
            public static let unknownTask = Code("unknownTask")
            /// A task or object cannot cross into the child (a closure under
            /// spawn, arguments that do not decode, another build).
            public static let cannotCross = Code("cannotCross")
            /// No such shared memory segment, key or value (Python's
            /// `FileNotFoundError`, `KeyError`, `ValueError` of `list.index`).
            public static let notFound = Code("notFound")
            /// A shared memory segment of that name exists already (Python's `FileExistsError`).
            public static let alreadyExists = Code("alreadyExists")
            /// An index is outside the sequence (Python's `IndexError`).
            public static let indexOutOfRange = Code("indexOutOfRange")
            /// A barrier was aborted or reset, or a wait at it timed out (Python's `BrokenBarrierError`).
            public static let brokenBarrier = Code("brokenBarrier")
            /// The manager's process is gone, or the link to it is.
            public static let disconnected = Code("disconnected")
            /// `recvBytes(into:)` got a message longer than the buffer; ``MP/Error/bytes`` holds it whole (Python's `BufferTooShort`).
            public static let bufferTooShort = Code("bufferTooShort")
            /// A worker went over its memory limit (``MP/WorkerLimits/memory``):
            /// killed by the kernel in its memory cgroup, or refused memory under its rlimit.
            public static let memoryLimit = Code("memoryLimit")
            /// A task used more CPU time than ``MP/WorkerLimits/cpuTime`` (`SIGXCPU`).
            public static let cpuLimit = Code("cpuLimit")
            /// What was asked for cannot be done on this kernel or by this user
            /// (a memory cgroup, a network namespace): said when the pool or
            /// process is made, never skipped in silence.
            public static let unsupported = Code("unsupported")
        }

        /// What kind of failure this is.
        public let code: Code
        /// What failed, naming the process, object and call: the error's `description`.
        public let message: String
        /// The operating-system error behind a ``Code/system`` failure (and
        /// behind some others: a start that failed on a call).
        public let underlying: OSError?
        /// For ``Code/taskFailed``: the type name of the error the task threw
        /// in its process (a Python exception's class name, for a manager's method).
        public let errorType: String?
        /// For ``Code/bufferTooShort``: the message that did not fit, whole.
        public let bytes: [UInt8]?

        /// An error of `code` saying `message`.
        public init(_ code: Code, _ message: String, underlying: OSError? = nil, errorType: String? = nil, bytes: [UInt8]? = nil) {
            self.code = code
            self.message = message
            self.underlying = underlying
            self.errorType = errorType
            self.bytes = bytes
        }

        public var description: String { message }
    }
}

// The kinds every concept shares, one spelling each.
extension MP.Error {
    /// An operating-system call failed.
    @usableFromInline
    static func system(_ error: MP.OSError) -> MP.Error {
        MP.Error(.system, error.description, underlying: error)
    }

    /// An await was cancelled.
    @usableFromInline
    static var cancelled: MP.Error { MP.Error(.cancelled, "the wait was cancelled") }

    /// A timeout was negative (or NaN).
    @usableFromInline
    static func negativeTimeout(_ value: Double) -> MP.Error {
        MP.Error(.invalidArgument, "timeout must not be negative (got \(value))")
    }

    /// A value passed in is out of its range; `what` says which and why.
    @usableFromInline
    static func invalidArgument(_ what: String) -> MP.Error {
        MP.Error(.invalidArgument, what)
    }

    /// A queue (local or managed) had nothing within the time given.
    @usableFromInline
    static var empty: MP.Error { MP.Error(.empty, "the queue is empty") }

    /// A queue (local or managed) had no room within the time given.
    @usableFromInline
    static var full: MP.Error { MP.Error(.full, "the queue is full") }

    /// A barrier (local or managed) was aborted or reset, or a wait at it timed out.
    @usableFromInline
    static var brokenBarrier: MP.Error { MP.Error(.brokenBarrier, "the barrier is broken (aborted, reset, or a wait timed out)") }

    /// A value did not encode (the wire format's error, passed on as it is).
    @usableFromInline
    static func encoding(_ error: MP.Error) -> MP.Error { error }

    /// A message did not decode (the wire format's error, passed on as it is).
    @usableFromInline
    static func decoding(_ error: MP.Error) -> MP.Error { error }
}
