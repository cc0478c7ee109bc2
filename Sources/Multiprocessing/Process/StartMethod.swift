import MultiprocessingPlatform
extension MP {
    /// How a child process is created: Python's three start methods.
    ///
    /// | Method | What the child is | A start costs (this repository's machine) | What crosses |
    /// |---|---|---|---|
    /// | ``fork`` | a copy of the calling process | ~0.5 ms | everything: closures, globals, objects |
    /// | ``spawn`` | a fresh copy of the program running only the task | ~9 ms with Foundation loaded (~5 ms with `-static-stdlib`) | a ``MP/NamedTask`` and the library objects it holds |
    /// | ``forkserver`` | a fork of a fresh, single-threaded copy of the program | ~1 ms after a one-time spawn | the same as spawn |
    ///
    /// A fork copies every lock of the calling process in whatever state
    /// another thread left it; the library resets its own, but no library can
    /// reset another's (Foundation's, a logging library's, a C library's).
    /// Spawn and forkserver children start from a program that has never had
    /// a second thread, so nothing can be held there. Named tasks default to
    /// ``forkserver``; closures can only fork. The *Start methods and named
    /// tasks* article has the measurements behind the default.
    public enum StartMethod: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
        case fork
        case spawn
        case forkserver

        public var description: String { rawValue }
    }



    /// The start method named tasks use when none was set: ``StartMethod/forkserver``.
    public static let defaultStartMethod: StartMethod = .forkserver

    /// Python's `set_start_method(method, force=False)`: once per program.
    ///
    /// After ``StartMethod/spawn`` or ``StartMethod/forkserver`` is set, a
    /// process with a closure target refuses to start
    /// (``MP/Error/Code/cannotCross``): the program asked never
    /// to fork itself.
    public static func setStartMethod(_ method: StartMethod, force: Bool = false) throws(MP.Error) {
        try StartMethodSetting.shared.set(method, force: force)
    }

    /// Python's `get_start_method()`: the method set, or the default.
    ///
    /// Unlike Python, asking does not fix the method: a later
    /// ``setStartMethod(_:force:)`` still succeeds.
    public static func getStartMethod() -> StartMethod { StartMethodSetting.shared.explicit ?? defaultStartMethod }

    /// Python's `get_start_method(allow_none=True)`: nil while none was set.
    public static func getStartMethod(allowNone: Bool) -> StartMethod? {
        allowNone ? StartMethodSetting.shared.explicit : getStartMethod()
    }

    /// Python's `get_all_start_methods()`: the default first.
    public static func allStartMethods() -> [StartMethod] {
        [defaultStartMethod] + StartMethod.allCases.filter { $0 != defaultStartMethod }
    }

    /// Python's `get_context(method)`: a context whose processes start with
    /// `method` (nil: the method set, or the default).
    public static func getContext(_ method: StartMethod? = nil) -> Context {
        Context(startMethod: method ?? getStartMethod())
    }

    /// Python's context object: the module's API with one start method.
    ///
    /// ```swift
    /// let ctx = MP.getContext(.spawn)
    /// let p = ctx.Process(target: Greet(name: "bob"))
    /// ```
    ///
    /// Queues, locks, values and the other objects work under every method
    /// (they cross into spawned and forkserver children as a task's stored
    /// properties), so create them directly: `MP.Queue<Int>()`.
    public struct Context: Sendable, Hashable, CustomStringConvertible {
        /// The start method of this context's processes.
        public let startMethod: StartMethod

        /// Python's `ctx.get_start_method()`.
        public func getStartMethod() -> StartMethod { startMethod }

        /// Python's `ctx.Process(target=f, args=...)`, for a named task.
        public func Process<T: NamedTask>(name: String? = nil, daemon: Bool = false, target: T) -> MP.Process {
            MP.Process(name: name, daemon: daemon, target: target, startMethod: startMethod)
        }

        /// A named task under `limits`, started by this context's method
        /// (see ``MP/Process/init(name:daemon:target:limits:)``).
        public func Process<T: NamedTask>(name: String? = nil, daemon: Bool = false, target: T,
                                          limits: WorkerLimits) throws(MP.Error) -> MP.Process {
            try MP.Process(name: name, daemon: daemon, target: target, startMethod: startMethod, limits: limits)
        }

        /// Python's `ctx.Process(target=f)` with a closure: starts only under ``StartMethod/fork``.
        public func Process(name: String? = nil, daemon: Bool = false, target: @escaping () throws -> Void) -> MP.Process {
            MP.Process(name: name, daemon: daemon, target: target, startMethod: startMethod)
        }

        /// An async closure target: starts only under ``StartMethod/fork``.
        public func Process(name: String? = nil, daemon: Bool = false, target: @escaping () async throws -> Void) -> MP.Process {
            MP.Process(name: name, daemon: daemon, target: target, startMethod: startMethod)
        }

        public var description: String { "<\(startMethod.rawValue) context>" }
    }
}

/// The program's start method: unset, or set once.
final class StartMethodSetting: @unchecked Sendable {
    static let shared = StartMethodSetting()
    private let lock = ForkSafeLock()
    private var method: MP.StartMethod?

    var explicit: MP.StartMethod? { lock.withLock { method } }

    func set(_ new: MP.StartMethod, force: Bool) throws(MP.Error) {
        try lock.withLock { () throws(MP.Error) in
            if let method, !force { throw .alreadySet(method) }
            method = new
        }
    }

    /// Forgets the setting (tests only: a program sets it once).
    func resetForTesting() { lock.withLock { method = nil } }
}
