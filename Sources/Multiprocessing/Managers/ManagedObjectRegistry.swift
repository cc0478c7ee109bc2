/// The ``MP/ManagedObject`` types of this program, by name: what a manager's
/// server creates when a client asks for a type by its name. Indexed from
/// the types the named tasks' conformance walk found (``TaskRegistry``),
/// which looks for both protocols in one pass.
struct ManagedObjectRegistry: Sendable {
    private var byName: [String: any MP.ManagedObject.Type] = [:]
    private var duplicates: [String: [String]] = [:]
    private let isAvailable: Bool

    static let shared = ManagedObjectRegistry(TaskRegistry.shared)

    init(_ tasks: TaskRegistry) {
        isAvailable = tasks.isAvailable
        for type in tasks.discovered.types {
            guard let object = type as? any MP.ManagedObject.Type else { continue }
            let name = object.name
            if let existing = byName[name], existing != object {
                duplicates[name, default: [_typeName(existing, qualified: true)]].append(_typeName(object, qualified: true))
            } else {
                byName[name] = object
            }
        }
    }

    /// The registered type a manager's server creates for `name`.
    func managedObject(named name: String) throws(MP.Error) -> any MP.ManagedObject.Type {
        if let types = duplicates[name] {
            throw .typeMismatch("two MP.ManagedObject types are named '\(name)' (\(types.joined(separator: ", "))): give one its own name")
        }
        guard let object = byName[name] else {
            if !isAvailable { throw .typeMismatch("the manager cannot find '\(name)': \(TaskRegistry.unavailable)") }
            throw .typeMismatch("the manager's program has no MP.ManagedObject named '\(name)' (a manager serves the types of its own build)")
        }
        return object
    }
}
