/// The synchronisation objects a manager's server holds: Python's
/// `threading` primitives, owned per client thread, released when every
/// process of the owning client is gone (a holder that dies frees its locks).

/// Python's `threading.Lock` and `threading.RLock` behind a manager.
final class LockObject: ServerObject {
    private(set) var owner: LockOwner?
    private(set) var count = 0
    var recursive: Bool { kind == .rlock }

    override init(kind: ManagedKind, typeTag: String) { super.init(kind: kind, typeTag: typeTag) }

    /// Acquires for `call`'s owner; false at the call's timeout (or at once without blocking).
    func acquire(_ call: ServerCall) throws(MP.Error) -> Bool {
        if recursive && owner == call.owner {
            count += 1
            return true
        }
        guard try call.waitUntil({ owner == nil }) else { return false }
        owner = call.owner
        count = 1
        return true
    }

    func release(by caller: LockOwner) throws(MP.Error) {
        guard let owner else { throw .invalidUse("release of an unlocked \(kind.pythonName)") }
        if recursive {
            guard owner == caller else { throw .invalidUse("cannot release an RLock held by another thread") }
            count -= 1
            if count > 0 { return }
        }
        self.owner = nil
        count = 0
    }

    /// A condition's wait: releases entirely, returning the recursion count to restore.
    func releaseAll(by caller: LockOwner) throws(MP.Error) -> Int {
        guard owner == caller else { throw .invalidUse("cannot wait on a Condition whose lock this thread does not hold") }
        let saved = count
        owner = nil
        count = 0
        return saved
    }

    func restore(_ caller: LockOwner, count: Int) {
        owner = caller
        self.count = count
    }

    /// Releases `caller`'s hold if it still has one (an answer that was not delivered).
    func abandon(_ caller: LockOwner) {
        if owner == caller {
            owner = nil
            count = 0
        }
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .acquire:
            let acquired = try acquire(call)
            let caller = call.owner, waiter = call.waiter
            return ServerReply(ServerReply.with { $0.append(acquired) }.message, undo: acquired ? { [self] in
                abandon(caller)
                waiter.changed()
            } : nil)
        case .release:
            try release(by: call.owner)
            call.waiter.changed()
            return .ok
        case .lockStatus:
            return .with { $0.append(owner != nil); $0.append(owner == call.owner); $0.append(count) }
        default:
            return try super.handle(&call)
        }
    }

    override func sessionEnded(_ session: UInt64) -> Bool {
        guard owner?.session == session else { return false }
        owner = nil
        count = 0
        return true
    }
}

/// Python's `threading.Semaphore` and `BoundedSemaphore` behind a manager.
final class SemaphoreObject: ServerObject {
    private var value: Int
    private let bound: Int?

    init(kind: ManagedKind, typeTag: String, value: Int) {
        self.value = value
        bound = kind == .boundedSemaphore ? value : nil
        super.init(kind: kind, typeTag: typeTag)
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .acquire:
            let acquired = try call.waitUntil({ value > 0 })
            if acquired { value -= 1 }
            let waiter = call.waiter
            return ServerReply(ServerReply.with { $0.append(acquired) }.message, undo: acquired ? { [self] in
                value += 1
                waiter.changed()
            } : nil)
        case .release:
            let n = call.arguments.isAtEnd ? 1 : try call.arguments.int()
            guard n >= 1 else { throw .invalidArgument("n must be at least 1 (got \(n))") }
            if let bound, value + n > bound { throw .invalidUse("Semaphore released too many times") }
            value += n
            call.waiter.changed()
            return .ok
        case .lockStatus:
            return .with { $0.append(value) }
        default:
            return try super.handle(&call)
        }
    }
}

/// Python's `threading.Condition` behind a manager, on a manager lock.
final class ConditionObject: ServerObject {
    let lock: LockObject
    /// Waiting calls in arrival order; `notify` moves the first ones to `notified`.
    private var waiting: [UInt64] = []
    private var notified: Set<UInt64> = []
    private var nextTicket: UInt64 = 0

    init(typeTag: String, lock: LockObject) {
        self.lock = lock
        super.init(kind: .condition, typeTag: typeTag)
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .acquire, .release, .lockStatus:
            return try lock.handle(&call)
        case .conditionWait:
            return try wait(call)
        case .conditionNotify:
            let n = try call.arguments.int()
            guard lock.owner == call.owner else { throw .invalidUse("cannot notify on a Condition whose lock this thread does not hold") }
            let woken = n < 0 ? waiting.count : min(n, waiting.count)
            for ticket in waiting.prefix(woken) { notified.insert(ticket) }
            waiting.removeFirst(woken)
            call.waiter.changed()
            return .ok
        default:
            return try super.handle(&call)
        }
    }

    /// Python's `Condition.wait`: releases the lock, waits for a notify
    /// (or the timeout), and takes the lock back, however long that takes.
    private func wait(_ call: ServerCall) throws(MP.Error) -> ServerReply {
        let saved = try lock.releaseAll(by: call.owner)
        call.waiter.changed()
        let ticket = nextTicket
        nextTicket += 1
        waiting.append(ticket)
        let outcome = Result { () throws(MP.Error) -> Bool in try call.waitUntil({ notified.contains(ticket) }) }
        waiting.removeAll { $0 == ticket }
        notified.remove(ticket)
        let wasNotified = try outcome.get()
        let again = ServerCall(op: .acquire, object: call.object, owner: call.owner, blocking: true, deadline: nil,
                               arguments: call.arguments, waiter: call.waiter)
        let lock = self.lock
        guard try again.waitUntil({ lock.owner == nil }) else { throw .invalidUse("the lock could not be reacquired") }
        lock.restore(call.owner, count: saved)
        let caller = call.owner, waiter = call.waiter
        return ServerReply(ServerReply.with { $0.append(wasNotified) }.message, undo: {
            lock.abandon(caller)
            waiter.changed()
        })
    }

    override func sessionEnded(_ session: UInt64) -> Bool { lock.sessionEnded(session) }
}

/// Python's `threading.Barrier` behind a manager.
final class BarrierObject: ServerObject {
    private let parties: Int
    private var arrived = 0
    private var generation: UInt64 = 0
    private var broken = false
    /// How each generation that ended ended (true: passed), kept while its waiters leave.
    private var outcomes: [UInt64: (passed: Bool, leaving: Int)] = [:]

    init(typeTag: String, parties: Int) {
        self.parties = parties
        super.init(kind: .barrier, typeTag: typeTag)
    }

    private func end(passed: Bool) {
        if arrived > 0 { outcomes[generation] = (passed, arrived) }
        generation += 1
        arrived = 0
    }

    private func leave(_ generation: UInt64) -> Bool {
        guard let outcome = outcomes[generation] else { return false }
        if outcome.leaving <= 1 { outcomes[generation] = nil } else { outcomes[generation]!.leaving -= 1 }
        return outcome.passed
    }

    override func handle(_ call: inout ServerCall) throws(MP.Error) -> ServerReply {
        switch call.op {
        case .barrierWait:
            if broken { throw .brokenBarrier }
            let index = arrived
            let mine = generation
            arrived += 1
            if arrived == parties {
                end(passed: true)
                _ = leave(mine)
                call.waiter.changed()
                return .with { $0.append(index) }
            }
            let ended: Bool
            do {
                ended = try call.waitUntil({ outcomes[mine] != nil })
            } catch {
                // The waiter left (its client is gone): the others cannot pass.
                if outcomes[mine] == nil { broken = true; end(passed: false); call.waiter.changed() }
                _ = leave(mine)
                throw error
            }
            if !ended { // Python's Barrier breaks when a wait times out
                broken = true
                end(passed: false)
                call.waiter.changed()
            }
            guard leave(mine) else { throw .brokenBarrier }
            return .with { $0.append(index) }
        case .barrierAbort:
            broken = true
            end(passed: false)
            call.waiter.changed()
            return .ok
        case .barrierReset:
            end(passed: false)
            broken = false
            call.waiter.changed()
            return .ok
        case .barrierStatus:
            return .with { $0.append(parties); $0.append(arrived); $0.append(broken) }
        default:
            return try super.handle(&call)
        }
    }
}
