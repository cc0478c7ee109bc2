/// The library's objects as named-task arguments: each encodes the
/// descriptors behind it into the start's table and is rebuilt around them
/// in the child (see ``DescriptorTable``). Outside a start they refuse to
/// encode with ``MP/Error/Code/cannotCross``.

extension MP.Lock: Codable {
    public func encode(to encoder: any Encoder) throws { try shared.encode(to: encoder, for: "MP.Lock") }
    public convenience init(from decoder: any Decoder) throws {
        self.init(shared: try SharedSyncState(from: decoder, for: "MP.Lock"))
    }
}

extension MP.RLock: Codable {
    public func encode(to encoder: any Encoder) throws { try shared.encode(to: encoder, for: "MP.RLock") }
    public convenience init(from decoder: any Decoder) throws {
        self.init(shared: try SharedSyncState(from: decoder, for: "MP.RLock"))
    }
}

extension MP.Semaphore: Codable {
    public func encode(to encoder: any Encoder) throws { try shared.encode(to: encoder, for: "\(type(of: self))") }
}

extension MP.Event: Codable {
    public func encode(to encoder: any Encoder) throws { try shared.encode(to: encoder, for: "MP.Event") }
    public convenience init(from decoder: any Decoder) throws {
        self.init(shared: try SharedSyncState(from: decoder, for: "MP.Event"))
    }
}

extension MP.Condition: Codable {
    private enum CodingKeys: String, CodingKey { case lock, rlock, state }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch underlying {
        case .lock(let lock): try container.encode(lock, forKey: .lock)
        case .rlock(let lock): try container.encode(lock, forKey: .rlock)
        }
        try container.encode(try shared.reference(in: encoder, for: "MP.Condition"), forKey: .state)
    }

    public convenience init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let underlying: Underlying
        if container.contains(.lock) {
            underlying = .lock(try container.decode(MP.Lock.self, forKey: .lock))
        } else {
            underlying = .rlock(try container.decode(MP.RLock.self, forKey: .rlock))
        }
        let reference = try container.decode(SharedBlock.Reference.self, forKey: .state)
        let state = try SharedSyncState(adopting: try SharedBlock(reference, from: decoder, for: "MP.Condition"))
        self.init(underlying: underlying, shared: state)
    }
}

extension MP.Barrier: Codable {
    public func encode(to encoder: any Encoder) throws {
        if action != nil {
            throw MP.Error.cannotCross("an MP.Barrier with an action cannot cross into a spawned process (a closure cannot cross exec); create it without an action, or use fork")
        }
        try CrossingBlock(shared.block, timeout: defaultTimeout).encode(to: encoder, for: "MP.Barrier")
    }

    public convenience init(from decoder: any Decoder) throws {
        let crossed = try CrossingBlock(from: decoder, for: "MP.Barrier")
        self.init(shared: try SharedSyncState(adopting: crossed.block), timeout: crossed.timeout)
    }
}

extension MP.Value: Codable {
    public func encode(to encoder: any Encoder) throws {
        try CrossingBlock(block, lock: lock).encode(to: encoder, for: "MP.Value<\(T.self)>")
    }

    public convenience init(from decoder: any Decoder) throws {
        let what = "MP.Value<\(T.self)>"
        let crossed = try CrossingBlock(from: decoder, for: what, minimumSize: MemoryLayout<T>.size)
        try self.init(block: crossed.block, lock: try crossed.requiredLock(for: what))
    }
}

extension MP.Array: Codable {
    public func encode(to encoder: any Encoder) throws {
        try CrossingBlock(block, count: count, lock: lock).encode(to: encoder, for: "MP.Array<\(Element.self)>")
    }

    public convenience init(from decoder: any Decoder) throws {
        let what = "MP.Array<\(Element.self)>"
        let crossed = try CrossingBlock(from: decoder, for: what)
        try self.init(block: crossed.block, count: try crossed.requiredCount(for: what), lock: try crossed.requiredLock(for: what))
    }
}

extension MP.RawValue: Codable {
    /// Crosses into a spawned or forkserver child as the memfd behind it (a named task's argument).
    public func encode(to encoder: any Encoder) throws {
        try CrossingBlock(block).encode(to: encoder, for: "MP.RawValue<\(T.self)>")
    }

    public convenience init(from decoder: any Decoder) throws {
        let what = "MP.RawValue<\(T.self)>"
        try self.init(block: try CrossingBlock(from: decoder, for: what, minimumSize: MemoryLayout<T>.size).block)
    }
}

extension MP.RawArray: Codable {
    /// Crosses into a spawned or forkserver child as the memfd behind it (a named task's argument).
    public func encode(to encoder: any Encoder) throws {
        try CrossingBlock(block, count: count).encode(to: encoder, for: "MP.RawArray<\(Element.self)>")
    }

    public convenience init(from decoder: any Decoder) throws {
        let what = "MP.RawArray<\(Element.self)>"
        let crossed = try CrossingBlock(from: decoder, for: what)
        try self.init(block: crossed.block, count: try crossed.requiredCount(for: what))
    }
}

extension MP.SharedMemory: Codable {
    /// Crosses by name, as in CPython (so it may also travel through a queue):
    /// the receiver attaches the segment.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }

    public convenience init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        try self.init(name: name)
    }
}

extension MP.Connection: Codable {
    private enum CodingKeys: String, CodingKey { case descriptor, readable, writable, maxMessageSize, framing }

    /// Encodes this end as a named task's argument: the child gets its own
    /// descriptor of the same socket. Data this end already read ahead stays here.
    public func encode(to encoder: any Encoder) throws {
        let table = try Crossing.table(encoder, for: "MP.Connection")
        guard fileno >= 0 else { throw MP.Error.cannotCross("a closed MP.Connection cannot cross into a process") }
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(try table.add(fileno, for: "MP.Connection"), forKey: .descriptor)
        try container.encode(isReadable, forKey: .readable)
        try container.encode(isWritable, forKey: .writable)
        try container.encode(maxMessageSize, forKey: .maxMessageSize)
        try container.encode(framing, forKey: .framing)
    }

    public convenience init(from decoder: any Decoder) throws {
        let received = try Crossing.received(decoder, for: "MP.Connection")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let fd = try received.adopt(try container.decode(Int.self, forKey: .descriptor), for: "MP.Connection")
        self.init(fd: fd, readable: try container.decode(Bool.self, forKey: .readable),
                  writable: try container.decode(Bool.self, forKey: .writable),
                  maxMessageSize: try container.decode(Int.self, forKey: .maxMessageSize),
                  framing: try container.decode(Framing.self, forKey: .framing))
    }
}
