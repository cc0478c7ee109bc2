import MultiprocessingPlatform

/// Any named task, with its name: a pool's initializer, which may hold
/// library objects (a queue, a lock) that cross into the worker as it starts.
struct AnyNamedTask: Codable, @unchecked Sendable {
    let task: any MP.NamedTask

    init(_ task: any MP.NamedTask) { self.task = task }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(type(of: task).name)
        try container.encode(task)
    }

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        let name = try container.decode(String.self)
        let type = try TaskRegistry.shared.task(named: name)
        func open<T: MP.NamedTask>(_ type: T.Type) throws -> any MP.NamedTask { try container.decode(T.self) }
        task = try open(type)
    }
}
