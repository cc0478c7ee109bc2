/// Python's `with` statement: the one implementation behind every scoped
/// `with` of the library (`MP.Pool.with`, `MP.Manager.with`, ...). The
/// resource is finished when `body` returns, throws, or (async) its task is
/// cancelled; a failure to finish after `body` threw never hides that error.
enum Scoped {
    /// Runs `body` with `resource`, then `finish(resource)` whatever happened.
    static func run<Resource, T>(_ resource: Resource, _ body: (Resource) throws -> T,
                                 finish: (Resource) -> Void) rethrows -> T {
        defer { finish(resource) }
        return try body(resource)
    }

    /// The async form: after a normal return, `finish`'s own error is thrown;
    /// after `body` threw, `body`'s error is.
    nonisolated(nonsending)
    static func run<Resource: Sendable, T>(_ resource: Resource, _ body: (Resource) async throws -> T,
                                 finish: (Resource) async throws -> Void) async throws -> T {
        let value: T
        do {
            value = try await body(resource)
        } catch {
            try? await finish(resource)
            throw error
        }
        try await finish(resource)
        return value
    }
}
