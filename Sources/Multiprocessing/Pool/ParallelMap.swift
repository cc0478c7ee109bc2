
extension Collection {
    /// A parallel `map` over worker processes, in one call: a pool for the
    /// duration of the call, `processes` workers (default: the CPU count).
    /// The elements are inherited by the workers, never serialized; the
    /// results come back `Codable`.
    ///
    /// Inlinable, as `MP.Pool.map` is: unspecialized, the workers' loop
    /// would go through generic witnesses per element (10 times slower).
    @inlinable
    public func parallelMap<R: Codable & Sendable>(processes: Int? = nil, chunksize: Int? = nil,
                                                   _ transform: @escaping (Element) throws -> R) throws -> [R] {
        try MP.Pool.with(processes: processes) { pool in try pool.map(self, chunksize: chunksize, transform) }
    }
}

extension RandomAccessCollection {
    /// `parallelMap` for a random-access collection: the workers index it in
    /// place (any other collection is first gathered into an array).
    @inlinable
    public func parallelMap<R: Codable & Sendable>(processes: Int? = nil, chunksize: Int? = nil,
                                                   _ transform: @escaping (Element) throws -> R) throws -> [R] {
        try MP.Pool.with(processes: processes) { pool in try pool.map(self, chunksize: chunksize, transform) }
    }
}
