extension MP {
    /// Python's `DictProxy` (`manager.dict()`): a dictionary on a manager's
    /// server. Each call is one atomic round trip; ``modify(_:_:)`` is an
    /// atomic read-modify-write. Insertion-ordered, as Python's dict is.
    ///
    /// Keys are compared by their wire encoding: use keys whose encoding is
    /// deterministic (numbers, strings, structs and enums of them; not
    /// `Set` or `Dictionary`, whose order varies per process).
    public struct DictProxy<Key: Codable & Hashable & Sendable, Value: Codable & Sendable>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `d.get(key)`: nil when absent.
        public func get(_ key: Key) throws(MP.Error) -> Value? {
            var reply = try handle.call(.dictGet) { (message) throws(MP.Error) in try message.appendEncoded(key) }
            return try reply.optionalValue(Value.self)
        }

        /// Python's `d.get(key, default)`.
        public func get(_ key: Key, default defaultValue: Value) throws(MP.Error) -> Value {
            try get(key) ?? defaultValue
        }

        /// `try d["bob"]`: Python's `d.get("bob")` (nil when absent; Python's
        /// `d["bob"]` raises `KeyError` instead).
        public subscript(key: Key) -> Value? {
            get throws(MP.Error) { try get(key) }
        }

        /// Python's `d[key] = value`.
        public func set(_ key: Key, _ value: Value) throws(MP.Error) {
            try handle.call(.dictSet) { (message) throws(MP.Error) in
                try message.appendEncoded(key)
                try message.appendEncoded(value)
            }
        }

        /// Python's `d.pop(key, None)`: removes and returns the value, nil when absent.
        @discardableResult
        public func pop(_ key: Key) throws(MP.Error) -> Value? {
            var reply = try handle.call(.dictPop) { (message) throws(MP.Error) in try message.appendEncoded(key) }
            return try reply.optionalValue(Value.self)
        }

        /// Python's `key in d`.
        public func contains(_ key: Key) throws(MP.Error) -> Bool {
            var reply = try handle.call(.dictContains) { (message) throws(MP.Error) in try message.appendEncoded(key) }
            return try reply.bool()
        }

        /// Python's `len(d)`.
        public var count: Int { get throws(MP.Error) { var reply = try handle.call(.dictCount); return try reply.int() } }

        /// Python's `list(d.keys())`, in insertion order.
        public func keys() throws(MP.Error) -> [Key] { var reply = try handle.call(.dictKeys); return try reply.values(Key.self) }

        /// Python's `list(d.values())`, in insertion order.
        public func values() throws(MP.Error) -> [Value] { var reply = try handle.call(.dictValues); return try reply.values(Value.self) }

        /// Python's `list(d.items())`, in insertion order.
        public func items() throws(MP.Error) -> [(key: Key, value: Value)] {
            var reply = try handle.call(.dictItems)
            var items: [(key: Key, value: Value)] = []
            while !reply.isAtEnd { items.append((try reply.value(Key.self), try reply.value(Value.self))) }
            return items
        }

        /// Python's `d.copy()`: the whole dictionary, in one round trip.
        public func copy() throws(MP.Error) -> [Key: Value] {
            Dictionary(try items(), uniquingKeysWith: { _, last in last })
        }

        /// Python's `d.update(other)`, atomically.
        public func update(_ other: [Key: Value]) throws(MP.Error) {
            try handle.call(.dictUpdate) { (message) throws(MP.Error) in
                for (key, value) in other {
                    try message.appendEncoded(key)
                    try message.appendEncoded(value)
                }
            }
        }

        /// Python's `d.setdefault(key, value)`: the value now stored.
        @discardableResult
        public func setDefault(_ key: Key, _ value: Value) throws(MP.Error) -> Value {
            var reply = try handle.call(.dictSetDefault) { (message) throws(MP.Error) in
                try message.appendEncoded(key)
                try message.appendEncoded(value)
            }
            return try reply.value(Value.self)
        }

        /// Python's `d.clear()`.
        public func clear() throws(MP.Error) { try handle.call(.dictClear) }

        /// Python's `d.popitem()`: removes and returns the last inserted
        /// pair; nil when empty (Python raises `KeyError`).
        public func popItem() throws(MP.Error) -> (key: Key, value: Value)? {
            do {
                var reply = try handle.call(.dictPopItem)
                return (try reply.value(Key.self), try reply.value(Value.self))
            } catch where error.code == .notFound {
                return nil
            }
        }

        /// An atomic read-modify-write of one entry (Python needs a lock
        /// around `d[k] = d[k] + 1`): `body` gets the current value (nil
        /// when absent) and may change it (nil removes the entry). It runs
        /// again if another process changed the entry meanwhile, so keep it
        /// free of side effects.
        ///
        /// ```swift
        /// try counts.modify("hits") { $0 = ($0 ?? 0) + 1 }
        /// ```
        @discardableResult
        public func modify<R>(_ key: Key, _ body: (inout Value?) throws -> R) throws -> R {
            let keyBytes = try encoded(key)
            var reply = try handle.call(.dictGet) { $0.append(keyBytes) }
            var current: [UInt8]? = reply.isAtEnd ? nil : try reply.bytesArgument()
            while true {
                var value = try current.map { (bytes) throws(MP.Error) in try decoded(Value.self, bytes) }
                let result = try body(&value)
                let new = try value.map { (value) throws(MP.Error) in try encoded(value) }
                var answer = try handle.call(.dictReplace) { [current] message in
                    message.append(keyBytes)
                    message.append(current != nil)
                    message.append(current ?? [])
                    message.append(new != nil)
                    message.append(new ?? [])
                }
                if try answer.bool() { return result }
                current = answer.isAtEnd ? nil : try answer.bytesArgument()
            }
        }

        public var description: String { handle.description }
    }

    /// Python's `ListProxy` (`manager.list()`): a list on a manager's server.
    /// Negative indices count from the end, as in Python.
    public struct ListProxy<Element: Codable & Sendable>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `l.append(x)`.
        public func append(_ element: Element) throws(MP.Error) {
            try handle.call(.listAppend) { (message) throws(MP.Error) in try message.appendEncoded(element) }
        }

        /// Python's `l.extend(xs)`, atomically.
        public func extend(_ elements: some Sequence<Element>) throws(MP.Error) {
            try handle.call(.listExtend) { (message) throws(MP.Error) in
                for element in elements { try message.appendEncoded(element) }
            }
        }

        /// Python's `l.insert(i, x)` (an index past either end inserts there).
        public func insert(_ element: Element, at index: Int) throws(MP.Error) {
            try handle.call(.listInsert) { (message) throws(MP.Error) in
                message.append(index)
                try message.appendEncoded(element)
            }
        }

        /// Python's `l[i]`; ``MP/Error/Code/indexOutOfRange`` outside it.
        public func get(_ index: Int) throws(MP.Error) -> Element {
            var reply = try handle.call(.listGet) { $0.append(index) }
            return try reply.value(Element.self)
        }

        /// `try l[i]`: Python's `l[i]`.
        public subscript(index: Int) -> Element { get throws(MP.Error) { try get(index) } }

        /// Python's `l[i] = x`.
        public func set(_ index: Int, _ element: Element) throws(MP.Error) {
            try handle.call(.listSet) { (message) throws(MP.Error) in
                message.append(index)
                try message.appendEncoded(element)
            }
        }

        /// Python's `l.pop(i)` (the last by default).
        @discardableResult
        public func pop(_ index: Int = -1) throws(MP.Error) -> Element {
            var reply = try handle.call(.listPop) { $0.append(index) }
            return try reply.value(Element.self)
        }

        /// Python's `len(l)`.
        public var count: Int { get throws(MP.Error) { var reply = try handle.call(.listCount); return try reply.int() } }

        /// Python's `l[:]`: every element, in one round trip.
        public func toArray() throws(MP.Error) -> [Element] {
            var reply = try handle.call(.listAll)
            return try reply.values(Element.self)
        }

        /// Python's `l.clear()`.
        public func clear() throws(MP.Error) { try handle.call(.listClear) }

        /// Python's `l.index(x)`: the first position of an equal element
        /// (compared by encoding), nil when none (Python raises `ValueError`).
        public func firstIndex(of element: Element) throws(MP.Error) -> Int? where Element: Equatable {
            do {
                var reply = try handle.call(.listIndex) { (message) throws(MP.Error) in try message.appendEncoded(element) }
                return try reply.int()
            } catch .valueNotFound {
                return nil
            }
        }

        /// Python's `l.remove(x)`: removes the first equal element; ``MP/Error/Code/notFound`` when none.
        public func remove(_ element: Element) throws(MP.Error) where Element: Equatable {
            try handle.call(.listRemove) { (message) throws(MP.Error) in try message.appendEncoded(element) }
        }

        /// An atomic read-modify-write of one element (see ``MP/DictProxy/modify(_:_:)``).
        @discardableResult
        public func modify<R>(_ index: Int, _ body: (inout Element) throws -> R) throws -> R {
            var reply = try handle.call(.listGet) { $0.append(index) }
            return try compareAndSet(Element.self, from: try reply.bytesArgument(), body) { (current, new) throws(MP.Error) in
                try handle.call(.listReplace) { message in
                    message.append(index)
                    message.append(current)
                    message.append(new)
                }
            }
        }

        public var description: String { handle.description }
    }

    /// Python's `Namespace` proxy (`manager.Namespace()`): named attributes,
    /// each of its own `Codable` type. Python's `ns.x = 1` is `ns.set("x", 1)`,
    /// `ns.x` is `ns.get("x", as: Int.self)`.
    public struct NamespaceProxy: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `ns.name`: nil when it has no such attribute.
        public func get<T: Decodable>(_ name: String, as type: T.Type = T.self) throws(MP.Error) -> T? {
            var reply = try handle.call(.dictGet) { (message) throws(MP.Error) in try message.appendEncoded(name) }
            return try reply.optionalValue(T.self)
        }

        /// Python's `ns.name = value`.
        public func set<T: Encodable>(_ name: String, _ value: T) throws(MP.Error) {
            try handle.call(.dictSet) { (message) throws(MP.Error) in
                try message.appendEncoded(name)
                try message.appendEncoded(value)
            }
        }

        /// Python's `del ns.name`; false when it had none.
        @discardableResult
        public func delete(_ name: String) throws(MP.Error) -> Bool {
            var reply = try handle.call(.dictPop) { (message) throws(MP.Error) in try message.appendEncoded(name) }
            return !reply.isAtEnd && (try? reply.next()) != nil
        }

        /// The attributes' names (Python's `vars(ns)`), in the order they were first set.
        public func names() throws(MP.Error) -> [String] {
            var reply = try handle.call(.dictKeys)
            return try reply.values(String.self)
        }

        public var description: String { handle.description }
    }

    /// Python's `ValueProxy` (`manager.Value(typecode, value)`): one value
    /// of any `Codable` type on the server.
    public struct ValueProxy<T: Codable & Sendable>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `v.value` (and `v.get()`).
        public func get() throws(MP.Error) -> T {
            var reply = try handle.call(.valueGet)
            return try reply.value(T.self)
        }

        /// Python's `v.value = x` (and `v.set(x)`).
        public func set(_ value: T) throws(MP.Error) {
            try handle.call(.valueSet) { (message) throws(MP.Error) in try message.appendEncoded(value) }
        }

        /// `try v.value`: Python's `v.value`.
        public var value: T { get throws(MP.Error) { try get() } }

        /// An atomic read-modify-write (Python needs a lock around `v.value += 1`).
        @discardableResult
        public func modify<R>(_ body: (inout T) throws -> R) throws -> R {
            var reply = try handle.call(.valueGet)
            return try compareAndSet(T.self, from: try reply.bytesArgument(), body) { (current, new) throws(MP.Error) in
                try handle.call(.valueReplace) { message in
                    message.append(current)
                    message.append(new)
                }
            }
        }

        public var description: String { handle.description }
    }

    /// Python's `ArrayProxy` (`manager.Array(typecode, sequence)`): a
    /// fixed-length array on the server.
    public struct ArrayProxy<Element: Codable & Sendable>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle
        /// The same operations as a list's, on an object the server keeps at a fixed length.
        private var list: ListProxy<Element> { ListProxy(handle: handle) }

        /// Python's `len(a)`.
        public var count: Int { get throws(MP.Error) { try list.count } }

        /// Python's `a[i]`.
        public func get(_ index: Int) throws(MP.Error) -> Element { try list.get(index) }

        /// `try a[i]`.
        public subscript(index: Int) -> Element { get throws(MP.Error) { try get(index) } }

        /// Python's `a[i] = x`.
        public func set(_ index: Int, _ element: Element) throws(MP.Error) { try list.set(index, element) }

        /// Python's `a[:]`.
        public func toArray() throws(MP.Error) -> [Element] { try list.toArray() }

        /// An atomic read-modify-write of one element.
        @discardableResult
        public func modify<R>(_ index: Int, _ body: (inout Element) throws -> R) throws -> R {
            try list.modify(index, body)
        }

        public var description: String { handle.description }
    }
}

/// The client's side of an atomic read-modify-write: decode the current
/// bytes, let `body` change the value, and ask the server to swap them
/// (`replace`) only if they are still the ones read; on a lost race, again
/// with the bytes the server answered.
func compareAndSet<T: Codable, R>(_ type: T.Type, from bytes: [UInt8], _ body: (inout T) throws -> R,
                                  replace: ([UInt8], [UInt8]) throws(MP.Error) -> ManagerReader) throws -> R {
    var current = bytes
    while true {
        var value = try decoded(T.self, current)
        let result = try body(&value)
        var answer = try replace(current, try encoded(value))
        if try answer.bool() { return result }
        current = try answer.bytesArgument()
    }
}
