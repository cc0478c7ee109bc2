extension MP {
    /// A type of yours whose values a ``MP/Manager`` holds and serves:
    /// Python's `BaseManager.register(typeid, callable)`.
    ///
    /// The value lives in the manager's process; a ``MP/ObjectProxy`` in any
    /// process sends it a ``Call`` and gets its ``Reply``. Each call runs
    /// alone (atomic with every other call on the manager), so a
    /// read-modify-write needs no lock:
    ///
    /// ```swift
    /// struct Counter: MP.ManagedObject {
    ///     var count = 0
    ///     enum Call: Codable { case add(Int), read }
    ///     mutating func handle(_ call: Call) throws -> Int {
    ///         switch call {
    ///         case .add(let n): count += n; return count
    ///         case .read: return count
    ///         }
    ///     }
    /// }
    ///
    /// let counter = try manager.register(Counter())      // Python: manager.Counter()
    /// try counter.call(.add(5))                          // from any process
    /// ```
    ///
    /// Like a named task, the type is found by ``name`` in the manager's
    /// process, which must run the same build (a manager started by
    /// ``MP/Manager/init(address:authkey:startMethod:linkTimeout:)`` does;
    /// so does ``MP/Manager/serveForever(address:authkey:)`` in a copy of
    /// your program). It must not be generic. An error ``handle(_:)`` throws
    /// reaches the caller as ``MP/Error/Code/taskFailed``.
    public protocol ManagedObject: Codable, SendableMetatype {
        /// What a proxy asks for (often an enum of the type's methods).
        associatedtype Call: Codable & Sendable
        /// What a call answers.
        associatedtype Reply: Codable & Sendable

        /// The name a manager knows the type by; by default its qualified name.
        static var name: String { get }

        /// Serves one call, on the manager's process, alone.
        mutating func handle(_ call: Call) throws -> Reply
    }
}

extension MP.ManagedObject {
    public static var name: String { _typeName(Self.self, qualified: true) }
}

/// A registered type's value on the server, made from its encoding.
func makeManagedBox(_ type: any MP.ManagedObject.Type, from bytes: [UInt8]) throws(MP.Error) -> ServerObject {
    func open<T: MP.ManagedObject>(_: T.Type) throws(MP.Error) -> ServerObject {
        do { return ManagedBox<T>(try WireFormat.decode(T.self, from: bytes)) } catch { throw .wire(error) }
    }
    return try open(type)
}

/// A registered type's value on the server.
final class ManagedBox<Object: MP.ManagedObject>: ServerObject {
    private var object: Object

    init(_ object: Object) {
        self.object = object
        super.init(kind: .object, typeTag: Object.name)
    }


    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        guard call.op == .objectCall else { return try super.handle(&call) }
        let request = try call.arguments.decode(Object.Call.self)
        let reply: Object.Reply
        do {
            reply = try object.handle(request)
        } catch {
            throw .remote(type: String(reflecting: type(of: error)), description: "\(error)")
        }
        var message = ManagerMessage(status: ManagerWire.ok)
        try message.appendEncoded(reply)
        return ServerReply(message)
    }
}
