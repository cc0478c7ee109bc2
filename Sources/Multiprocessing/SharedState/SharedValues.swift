import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import SystemPackage

extension MP {
    /// Python's `multiprocessing.Value`: one `BitwiseCopyable` value in shared
    /// memory, with a robust ``MP/RLock``.
    ///
    /// `value` reads and writes under the lock; a read-modify-write needs
    /// `withLock` (as `v.value += 1` does in Python) or, for integers, the
    /// atomic operations.
    /// ```swift
    /// let counter = try MP.Value(0)
    /// try counter.withLock { $0 += 1 }
    /// counter.add(1)                        // atomic, no lock
    /// ```
    public final class Value<T: BitwiseCopyable>: @unchecked Sendable {
        let block: SharedBlock
        let pointer: UnsafeMutablePointer<T>
        /// Python's `get_lock()`.
        public let lock: RLock

        public init(_ value: T) throws(MP.Error) {
            block = try SharedBlock(bytes: MemoryLayout<T>.size)
            pointer = block.base.bindMemory(to: T.self, capacity: 1)
            pointer.initialize(to: value)
            lock = try RLock()
        }

        init(block: SharedBlock, lock: RLock) throws {
            guard block.size >= MemoryLayout<T>.size else {
                throw MP.Error.cannotCross("an MP.Value<\(T.self)> arrived in a block of \(block.size) bytes")
            }
            self.block = block
            pointer = block.base.bindMemory(to: T.self, capacity: 1)
            self.lock = lock
        }

        /// Python's `value`: read or written under the lock.
        ///
        /// The lock is a robust recursive mutex in memory this object owns: it
        /// cannot fail to lock (a holder that died hands it over). Should it
        /// ever fail, this stops the program with the reason rather than read
        /// or write without it; ``get()`` and ``set(_:)`` throw instead.
        public var value: T {
            get {
                do { return try get() } catch { preconditionFailure("MP.Value could not take its lock to read: \(error)") }
            }
            set {
                do { try set(newValue) } catch { preconditionFailure("MP.Value could not take its lock to write: \(error)") }
            }
        }

        /// Reads the value under the lock.
        public func get() throws(MP.Error) -> T {
            try lock.acquire()
            defer { try? lock.release() }
            return pointer.pointee
        }

        /// Writes the value under the lock.
        public func set(_ newValue: T) throws(MP.Error) {
            try lock.acquire()
            defer { try? lock.release() }
            pointer.pointee = newValue
        }

        /// Runs `body` on the value, holding the lock.
        @discardableResult
        public func withLock<R>(_ body: (inout T) throws -> R) throws -> R {
            try lock.withLock { try body(&pointer.pointee) }
        }
    }

    /// Python's `multiprocessing.Array` (`MP.Array`, not Swift's): a fixed-size
    /// array of `BitwiseCopyable` elements in shared memory, with a robust
    /// ``MP/RLock``. A `RandomAccessCollection` and `MutableCollection`.
    ///
    /// Elements are read and written directly (machine-word elements never
    /// tear); hold the lock through `withLock` for updates that span more.
    public final class Array<Element: BitwiseCopyable>: RandomAccessCollection, MutableCollection, @unchecked Sendable {
        let storage: SharedElements<Element>
        var block: SharedBlock { storage.block }
        /// Python's `get_lock()`.
        public let lock: RLock
        public var count: Int { storage.count }

        init(block: SharedBlock, count: Int, lock: RLock) throws {
            storage = try SharedElements(block: block, count: count, what: "MP.Array")
            self.lock = lock
        }

        /// An array of `count` copies of `repeating`.
        public init(repeating value: Element, count: Int) throws(MP.Error) {
            storage = try SharedElements(repeating: value, count: count)
            lock = try RLock()
        }

        /// An array holding `values`.
        public init(_ values: some Collection<Element>) throws(MP.Error) {
            storage = try SharedElements(values)
            lock = try RLock()
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        public subscript(position: Int) -> Element {
            get { storage[position, "MP.Array"] }
            set { storage[position, "MP.Array"] = newValue }
        }

        /// Runs `body` on the elements, holding the lock.
        @discardableResult
        public func withLock<R>(_ body: (UnsafeMutableBufferPointer<Element>) throws -> R) throws -> R {
            try lock.withLock { try body(UnsafeMutableBufferPointer(start: storage.elements, count: count)) }
        }

        /// A copy of the elements as a Swift array.
        public var snapshot: [Element] { storage.snapshot }
    }
}

extension MP.Value where T == Int {
    /// Atomically adds `delta`; returns the new value. No lock.
    @discardableResult
    public func add(_ delta: Int) -> Int {
        Int(cmp_atomic_add_i64(UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: Int64.self), Int64(delta)))
    }

    /// Atomic load.
    public func load() -> Int { Int(cmp_atomic_load_i64(UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: Int64.self))) }

    /// Atomic store.
    public func store(_ value: Int) { cmp_atomic_store_i64(UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: Int64.self), Int64(value)) }

    /// Atomic compare-and-exchange: stores `desired` if the value is `expected`.
    /// Returns whether it did, and the value found.
    public func compareExchange(expected: Int, desired: Int) -> (exchanged: Bool, original: Int) {
        var seen = Int64(expected)
        let done = cmp_atomic_cas_i64(UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: Int64.self), &seen, Int64(desired)) != 0
        return (done, Int(seen))
    }
}

extension MP.Value where T == Int32 {
    /// Atomically adds `delta`; returns the new value. No lock.
    @discardableResult
    public func add(_ delta: Int32) -> Int32 { cmp_atomic_add_i32(pointer, delta) }
    public func load() -> Int32 { cmp_atomic_load_i32(pointer) }
    public func store(_ value: Int32) { cmp_atomic_store_i32(pointer, value) }
    public func compareExchange(expected: Int32, desired: Int32) -> (exchanged: Bool, original: Int32) {
        var seen = expected
        let done = cmp_atomic_cas_i32(pointer, &seen, desired) != 0
        return (done, seen)
    }
}

/// The elements of an ``MP/Array`` or ``MP/RawArray``: `count` values in a shared block.
struct SharedElements<Element: BitwiseCopyable> {
    let block: SharedBlock
    let elements: UnsafeMutablePointer<Element>
    let count: Int

    private init(count: Int) throws(MP.Error) {
        guard count >= 0 else { throw .invalidArgument("array count must be >= 0 (got \(count))") }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Element>.stride)
        guard !overflow else { throw .invalidArgument("an array of \(count) \(Element.self) elements does not fit in memory") }
        block = try SharedBlock(bytes: bytes)
        elements = block.base.bindMemory(to: Element.self, capacity: count)
        self.count = count
    }

    init(repeating value: Element, count: Int) throws(MP.Error) {
        try self.init(count: count)
        elements.initialize(repeating: value, count: count)
    }

    init(_ values: some Collection<Element>) throws(MP.Error) {
        try self.init(count: values.count)
        for (index, value) in values.enumerated() { (elements + index).initialize(to: value) }
    }

    /// Elements that crossed into this process as `block`.
    init(block: SharedBlock, count: Int, what: String) throws {
        guard count >= 0, block.size / Swift.max(1, MemoryLayout<Element>.stride) >= count else {
            throw MP.Error.cannotCross("an \(what) of \(count) \(Element.self) arrived in a block of \(block.size) bytes")
        }
        self.block = block
        elements = block.base.bindMemory(to: Element.self, capacity: count)
        self.count = count
    }

    subscript(position: Int, what: String) -> Element {
        get {
            precondition(position >= 0 && position < count, "\(what) index \(position) out of range 0..<\(count)")
            return elements[position]
        }
        nonmutating set {
            precondition(position >= 0 && position < count, "\(what) index \(position) out of range 0..<\(count)")
            elements[position] = newValue
        }
    }

    var snapshot: [Element] { Swift.Array(UnsafeBufferPointer(start: elements, count: count)) }
}
