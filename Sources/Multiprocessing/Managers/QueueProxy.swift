extension MP {
    /// Python's proxy of `manager.Queue()` and `manager.JoinableQueue()`: a
    /// `queue.Queue` on the server, shared by every process that holds the
    /// proxy. An item taken for a process that died (or cancelled) before
    /// receiving it goes back to the front of the queue.
    public struct QueueProxy<Element: Codable & Sendable>: Sendable, Codable, Hashable, CustomStringConvertible {
        let handle: ProxyHandle

        /// Python's `q.put(item, block, timeout)`: waits for room in a bounded
        /// queue; ``MP/Error/Code/full`` when none came.
        public func put(_ item: Element, block: Bool = true, timeout: Double? = nil) throws(MP.Error) {
            try put(item, block: block, timeout: timeout, cancellation: nil)
        }

        func put(_ item: Element, block: Bool, timeout: Double?, cancellation: CallCancellation?) throws(MP.Error) {
            try handle.call(.queuePut, blocking: block, timeout: timeout, cancellation: cancellation) { (message) throws(MP.Error) in
                try message.appendEncoded(item)
            }
        }

        /// Python's `q.put_nowait(item)`.
        public func putNowait(_ item: Element) throws(MP.Error) { try put(item, block: false) }

        /// Python's `q.get(block, timeout)`; ``MP/Error/Code/empty`` when nothing came.
        public func get(block: Bool = true, timeout: Double? = nil) throws(MP.Error) -> Element {
            try get(block: block, timeout: timeout, cancellation: nil)
        }

        func get(block: Bool, timeout: Double?, cancellation: CallCancellation?) throws(MP.Error) -> Element {
            var reply = try handle.call(.queueGet, blocking: block, timeout: timeout, cancellation: cancellation)
            return try reply.value(Element.self)
        }

        /// Python's `q.get_nowait()`.
        public func getNowait() throws(MP.Error) -> Element { try get(block: false) }

        /// `try await q.get()`: waits on a thread of its own, never an
        /// actor's; cancelling the task ends the wait (nothing is lost).
        public func get(timeout: Double? = nil) async throws(MP.Error) -> Element {
            let handle = self.handle
            return try await handle.async { (cancellation) throws(MP.Error) in
                try QueueProxy(handle: handle).get(block: true, timeout: timeout, cancellation: cancellation)
            }
        }

        /// `try await q.put(item)`: waits for room without blocking an actor.
        public func put(_ item: Element, timeout: Double? = nil) async throws(MP.Error) {
            let handle = self.handle
            try await handle.async { (cancellation) throws(MP.Error) in
                try QueueProxy(handle: handle).put(item, block: true, timeout: timeout, cancellation: cancellation)
            }
        }

        /// Python's `q.qsize()`.
        public func qsize() throws(MP.Error) -> Int { var reply = try handle.call(.queueSize); return try reply.int() }

        /// Python's `q.empty()`.
        public func empty() throws(MP.Error) -> Bool { try qsize() == 0 }

        /// Python's `q.full()`.
        public func full() throws(MP.Error) -> Bool {
            var reply = try handle.call(.queueMaxSize)
            let maxsize = try reply.int()
            guard maxsize > 0 else { return false }
            return try qsize() >= maxsize
        }

        /// Python's `q.task_done()` (a `JoinableQueue`; otherwise ``MP/Error/Code/invalidState``).
        public func taskDone() throws(MP.Error) { try handle.call(.queueTaskDone) }

        /// Python's `q.join()`: waits until every item put has been marked
        /// done (a `JoinableQueue`); false when `timeout` passed first.
        @discardableResult
        public func join(timeout: Double? = nil) throws(MP.Error) -> Bool {
            var reply = try handle.call(.queueJoin, timeout: timeout)
            return try reply.bool()
        }

        /// `try await q.join()` without blocking an actor.
        public func join() async throws(MP.Error) {
            let handle = self.handle
            _ = try await handle.async { (cancellation) throws(MP.Error) in
                var reply = try handle.call(.queueJoin, cancellation: cancellation)
                return try reply.bool()
            }
        }

        public var description: String { handle.description }
    }
}
