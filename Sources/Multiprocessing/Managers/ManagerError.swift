import MultiprocessingPlatform
extension MP {
    /// What a ``MP/Manager`` or one of its proxies throws.
    ///
    /// The cases name what Python raises in the same situation (`EOFError`
    /// or `ConnectionRefusedError` for a manager that is gone, `KeyError`,
    /// `IndexError`, `queue.Empty`, `threading.BrokenBarrierError`, a
    /// method's own exception re-raised as `RemoteError`).
    public enum ManagerError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The manager cannot be reached or went away mid-call (Python's
        /// `EOFError`, `ConnectionRefusedError`): every pending and later call
        /// fails with this, promptly.
        case disconnected(String)
        /// The link was silent for longer than the manager's `linkTimeout`
        /// (a cut network link, a frozen manager): the call's outcome is unknown.
        case timeout(seconds: Double)
        /// The authentication handshake failed (Python's `AuthenticationError`).
        case authentication(String)
        /// A registered object's method threw on the server (Python's
        /// `RemoteError`): the error's type and description there.
        case remote(type: String, description: String)
        /// Python's `queue.Empty`: nothing to get within the timeout, or without blocking.
        case empty
        /// Python's `queue.Full`: no room within the timeout, or without blocking.
        case full
        /// Python's `IndexError`: an index outside a list or array.
        case indexOutOfRange(index: Int, count: Int)
        /// Python's `KeyError` where a key must exist.
        case keyNotFound(String)
        /// Python's `ValueError` for a value a list does not hold (`index`, `remove`).
        case valueNotFound
        /// Python's `threading.BrokenBarrierError`: the barrier was aborted,
        /// reset, or a wait on it timed out.
        case brokenBarrier
        /// Python's `RuntimeError`/`ValueError` of a lock, semaphore or
        /// condition used wrongly (a release of a lock not held, a bounded
        /// semaphore released too often, `taskDone` called too many times).
        case invalidUse(String)
        /// A named object exists with another kind or element type, or the
        /// server does not know a registered type.
        case typeMismatch(String)
        /// An argument outside its domain (a negative timeout, a zero-party barrier).
        case invalidArgument(String)
        /// A value that did not encode or decode in the wire format.
        case wire(WireError)
        /// The manager was shut down.
        case shutDown
        /// The async call's task was cancelled (its connection is closed; a
        /// queue item the server had taken for it goes back to the queue).
        case cancelled
        /// A system call failed.
        case system(OSError)

        public var description: String {
            switch self {
            case .disconnected(let why): return "the manager is gone: \(why)"
            case .timeout(let seconds): return "the manager did not answer within the link timeout (\(seconds) s): the link is down or the manager is frozen"
            case .authentication(let why): return "authentication with the manager failed: \(why)"
            case .remote(let type, let description): return "the managed object's method threw \(type): \(description)"
            case .empty: return "the queue is empty (queue.Empty)"
            case .full: return "the queue is full (queue.Full)"
            case .indexOutOfRange(let index, let count): return "index \(index) is out of range for \(count) element(s)"
            case .keyNotFound(let key): return "no such key: \(key)"
            case .valueNotFound: return "the value is not in the list"
            case .brokenBarrier: return "the barrier is broken (aborted, reset, or a wait timed out)"
            case .invalidUse(let why): return why
            case .typeMismatch(let why): return why
            case .invalidArgument(let why): return "invalid argument: \(why)"
            case .wire(let error): return error.description
            case .shutDown: return "the manager was shut down"
            case .cancelled: return "the call was cancelled"
            case .system(let error): return error.description
            }
        }
    }
}
