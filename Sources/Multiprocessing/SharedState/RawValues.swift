extension MP {
    /// Python's `multiprocessing.RawValue` (and `Value(..., lock=False)`): a
    /// `BitwiseCopyable` value in shared memory, with no lock. Reads and
    /// writes of machine-word values never tear; anything more needs a lock
    /// of its own (or ``MP/Value``, which has one).
    public final class RawValue<T: BitwiseCopyable>: @unchecked Sendable {
        let block: SharedBlock
        private let pointer: UnsafeMutablePointer<T>

        /// Shared memory holding `value`.
        public init(_ value: T) throws(MP.Error) {
            block = try SharedBlock(bytes: MemoryLayout<T>.size)
            pointer = block.base.bindMemory(to: T.self, capacity: 1)
            pointer.initialize(to: value)
        }

        init(block: SharedBlock) throws {
            guard block.size >= MemoryLayout<T>.size else {
                throw MP.Error.cannotCross("an MP.RawValue<\(T.self)> arrived in a block of \(block.size) bytes")
            }
            self.block = block
            pointer = block.base.bindMemory(to: T.self, capacity: 1)
        }

        /// Python's `value`: read and written directly, with no lock.
        public var value: T {
            get { pointer.pointee }
            set { pointer.pointee = newValue }
        }
    }

    /// Python's `multiprocessing.RawArray` (and `Array(..., lock=False)`): a
    /// fixed-size array of `BitwiseCopyable` elements in shared memory, with
    /// no lock. A `RandomAccessCollection` and `MutableCollection`.
    public final class RawArray<Element: BitwiseCopyable>: RandomAccessCollection, MutableCollection, @unchecked Sendable {
        let storage: SharedElements<Element>
        var block: SharedBlock { storage.block }
        public var count: Int { storage.count }

        init(block: SharedBlock, count: Int) throws {
            storage = try SharedElements(block: block, count: count, what: "MP.RawArray")
        }

        /// Python's `RawArray(typecode, size)`: `count` copies of `repeating`.
        public init(repeating value: Element, count: Int) throws(MP.Error) {
            storage = try SharedElements(repeating: value, count: count)
        }

        /// Python's `RawArray(typecode, sequence)`.
        public init(_ values: some Collection<Element>) throws(MP.Error) {
            storage = try SharedElements(values)
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        public subscript(position: Int) -> Element {
            get { storage[position, "MP.RawArray"] }
            set { storage[position, "MP.RawArray"] = newValue }
        }

        /// A copy of the elements as a Swift array.
        public var snapshot: [Element] { storage.snapshot }
    }
}
