extension MP {
    /// A function of the program that any process of the same build can run
    /// by name: under the spawn and forkserver start methods, in a pool's
    /// workers, and (with the cluster) on other machines.
    ///
    /// A named task is a `Codable` value whose stored properties are its
    /// arguments (Python's `args` and `kwargs`) and whose ``run()`` is its
    /// body. Declaring the type is all it takes; no registration, no line in
    /// `main`:
    ///
    /// ```swift
    /// struct Greet: MP.NamedTask {
    ///     var name: String
    ///     func run() { print("Hello,", name, "from", MP.getpid()) }
    /// }
    ///
    /// let p = MP.getContext(.spawn).Process(target: Greet(name: "bob"))
    /// try p.start()
    /// try p.join()
    /// ```
    ///
    /// A child finds the type by ``name`` among the program's conformances to
    /// this protocol (the Swift runtime's metadata: see the *Start methods and
    /// named tasks* article); the arguments travel in the library's wire format.
    /// ``run()`` may be `async` and may throw; its result (`Void` included)
    /// must be `Codable` for a pool to return it.
    ///
    /// - The type must not be generic (a child cannot name its generic arguments).
    /// - ``name`` defaults to the type's qualified name (`MyApp.Greet`); give
    ///   your own when it must outlive a rename. Names are unique per program:
    ///   two types with one name are refused on use (``MP/Error/Code/unknownTask``).
    /// - A child runs only the task: `main` does not run there, and globals
    ///   start from their initial values (the forkserver's children are forks
    ///   of a fresh copy of the program, not of `main`).
    /// - Library objects (``MP/Queue``, ``MP/Lock``, ``MP/Value``, a
    ///   ``MP/Connection`` end, ...) may be stored properties: they cross into
    ///   the child (see ``MP/StartMethod``).
    public protocol NamedTask: Codable, Sendable {
        /// What ``run()`` returns: `Codable`, or `Void`.
        associatedtype Result: Sendable

        /// The name processes know this task by; by default the type's
        /// qualified name. Keep it stable: children and other machines find
        /// the task by it.
        static var name: String { get }

        /// The task's body, run in the child with the arguments the value holds.
        func run() async throws -> Result

        /// The result's wire encoding (provided: for a `Codable` result, or `Void`).
        static func _encodeResult(_ result: Result) throws(MP.Error) -> [UInt8]
        /// The result's wire decoding (provided: for a `Codable` result, or `Void`).
        static func _decodeResult(_ bytes: [UInt8]) throws(MP.Error) -> Result

        /// A pool worker's loop over a chunk of fixed-width tasks (provided):
        /// runs the `count` tasks stored bitwise at `tasks` and stores each
        /// result bitwise at `results`, counting them in `completed`.
        static func _runFixedWidth(_ tasks: UnsafeRawPointer, _ results: UnsafeMutableRawPointer, _ count: Int,
                                   _ completed: UnsafeMutablePointer<Int>) async throws
    }
}

extension MP.NamedTask {
    public static var name: String { _typeName(Self.self, qualified: true) }

    /// Inlinable, so each task type's witness is this loop specialized for
    /// it: a chunk of a million `x * x` tasks runs at native speed in the
    /// worker, with no per-item decoding, witness call or allocation.
    @inlinable
    public static func _runFixedWidth(_ tasks: UnsafeRawPointer, _ results: UnsafeMutableRawPointer, _ count: Int,
                                      _ completed: UnsafeMutablePointer<Int>) async throws {
        let taskStride = MemoryLayout<Self>.stride
        let resultStride = MemoryLayout<Result>.stride
        while completed.pointee < count {
            let index = completed.pointee
            let task = tasks.load(fromByteOffset: index * taskStride, as: Self.self)
            let result = try await task.run()
            (results + index * resultStride).initializeMemory(as: Result.self, repeating: result, count: 1)
            completed.pointee = index + 1
        }
    }
}

extension MP.NamedTask where Result: Codable {
    public static func _encodeResult(_ result: Result) throws(MP.Error) -> [UInt8] { try WireFormat.encode(result) }
    public static func _decodeResult(_ bytes: [UInt8]) throws(MP.Error) -> Result { try WireFormat.decode(Result.self, from: bytes) }
}

extension MP.NamedTask where Result == Void {
    public static func _encodeResult(_ result: Void) throws(MP.Error) -> [UInt8] { [] }
    public static func _decodeResult(_ bytes: [UInt8]) throws(MP.Error) -> Void {}
}
