import _CMultiprocessingRuntime

/// The named tasks of this program, by name: every non-generic type that
/// conforms to ``MP/NamedTask``, found in the Swift runtime's conformance
/// records of every loaded image (`cmp_discover_named_tasks`).
///
/// Built once per process, on first use (a forkserver builds it before its
/// first fork, so its children inherit it).
struct TaskRegistry: Sendable {
    private(set) var byName: [String: any MP.NamedTask.Type] = [:]
    private(set) var duplicates: [String: [String]] = [:]
    private(set) var generic: Set<String> = []
    private(set) var isAvailable = true
    /// Every type the walk found, for the layers above to index their own
    /// protocols' types (a manager's ``MP/ManagedObject`` types).
    private(set) var discovered = DiscoveredTypes()

    /// The found types, as metatypes (immutable once the walk is done).
    struct DiscoveredTypes: @unchecked Sendable {
        var types: [Any.Type] = []
    }

    static let shared = TaskRegistry.discover()

    private final class Collector {
        var registry = TaskRegistry()
    }

    private static func discover() -> TaskRegistry {
        let collector = Collector()
        let context = Unmanaged.passRetained(collector)
        defer { context.release() }
        let status = cmp_discover_named_tasks({ metadata, witnessTable, protocolFound, context in
            let collector = Unmanaged<Collector>.fromOpaque(context!).takeUnretainedValue()
            let type = unsafeBitCast(metadata, to: Any.Type.self)
            collector.registry.discovered.types.append(type)
            guard protocolFound == cmp_protocol_named_task else { return }
            if let task = TaskRegistry.namedTask(metadata: metadata!, witnessTable: witnessTable) { collector.registry.add(task) }
        }, { name, context in
            let collector = Unmanaged<Collector>.fromOpaque(context!).takeUnretainedValue()
            if let name { collector.registry.generic.insert(String(cString: name)) }
        }, context.toOpaque())
        if status != 0 { collector.registry.isAvailable = false }
        return collector.registry
    }

    /// The type as `any MP.NamedTask.Type`, made from the conformance the walk
    /// found: an existential metatype is the type's metadata and the
    /// conformance's witness table, so no dynamic cast is needed. A cast would
    /// make the runtime search every conformance record of every image, once
    /// per type: most of a big program's discovery, and so of its spawns.
    private static func namedTask(metadata: UnsafeRawPointer, witnessTable: UnsafeRawPointer?) -> (any MP.NamedTask.Type)? {
        let type = unsafeBitCast(metadata, to: Any.Type.self)
        guard let witnessTable else { return type as? any MP.NamedTask.Type }
        let task = unsafeBitCast((metadata, witnessTable), to: (any MP.NamedTask.Type).self)
        assert(task == type as? any MP.NamedTask.Type, "the witness table of \(type)'s NamedTask conformance is not the runtime's")
        return task
    }

    private mutating func add(_ task: any MP.NamedTask.Type) {
        let name = task.name
        let typeName = _typeName(task, qualified: true)
        if let existing = byName[name], existing != task {
            duplicates[name, default: [_typeName(existing, qualified: true)]].append(typeName)
        } else if duplicates[name] != nil {
            duplicates[name]!.append(typeName)
        } else {
            byName[name] = task
        }
    }

    /// The type a child runs for `name`.
    func task(named name: String) throws(MP.Error) -> any MP.NamedTask.Type {
        if let types = duplicates[name] { throw .duplicateName(name, types: types) }
        guard let task = byName[name] else {
            if !isAvailable { throw .notDiscoverable(type: name, reason: Self.unavailable) }
            throw .unknownTask(name)
        }
        return task
    }

    /// The parent's check before sending `T`: another process of this build
    /// will find exactly `T` under `T.name`.
    func checkSendable<T: MP.NamedTask>(_ type: T.Type) throws(MP.Error) {
        let found: any MP.NamedTask.Type
        do {
            found = try task(named: T.name)
        } catch {
            // Another type by this name is the caller's error, said as it is.
            guard error == .unknownTask(T.name) else { throw error }
            let typeName = _typeName(T.self, qualified: true)
            let reason = typeName.contains("<")
                ? "a generic type cannot be found by name in another process; declare a non-generic type"
                : "its conformance was not found in the program's metadata"
            throw .notDiscoverable(type: typeName, reason: reason)
        }
        if found != T.self {
            throw .duplicateName(T.name, types: [_typeName(found, qualified: true), _typeName(T.self, qualified: true)])
        }
    }

    static let unavailable = "this Swift runtime cannot enumerate its metadata sections (swift_enumerateAllMetadataSections is missing)"
}

extension MP {
    /// The names of the named tasks this build knows, sorted: what a spawned
    /// or forkserver child (or another machine's worker) can run. Found once
    /// per process, on first use, in the Swift runtime's conformance records.
    public static func namedTaskNames() -> [String] {
        TaskRegistry.shared.byName.keys.sorted()
    }
}
