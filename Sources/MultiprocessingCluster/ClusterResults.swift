import Foundation

extension MP {
    /// The results of a cluster pool's `imap` or `imapUnordered`, as an
    /// `AsyncSequence`: the input is read lazily, with at most `bufferSize`
    /// chunks in flight; `imap` yields in input order, `imapUnordered` as
    /// chunks complete. A failed task ends the iteration with its error.
    public struct ClusterResults<Task: NamedTask>: AsyncSequence, Sendable where Task.Result: Sendable {
        public typealias Element = Task.Result
        public typealias Failure = any Swift.Error
        let state: ClusterResultsState<Task>

        init<S: Sequence & Sendable>(pool: ClusterPool, tasks: S, chunksize: Int, window: Int, ordered: Bool) where S.Element == Task {
            state = ClusterResultsState(pool: pool, tasks: tasks, chunksize: chunksize, window: window, ordered: ordered)
        }

        public struct AsyncIterator: AsyncIteratorProtocol {
            let state: ClusterResultsState<Task>
            public mutating func next() async throws -> Task.Result? { try await state.next() }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(state: state) }

        /// How far the results have come (see ``MP/Progress``); the total is
        /// known once the input has run out.
        public var progress: MP.Progress { state.progress }
    }
}

final class ClusterResultsState<Task: MP.NamedTask>: @unchecked Sendable where Task.Result: Sendable {
    private let lock = NSLock()
    private let pool: MP.ClusterPool
    private var input: AnyIterator<Task>
    private let chunksize: Int
    private let window: Int
    private let ordered: Bool
    private var submitted = 0
    private var inputDone = false
    private var nextToYield = 0
    private var arrived: [Int: Result<[Task.Result], MP.Error>] = [:]
    private var arrivalOrder: [Int] = []
    private var ready: [Task.Result] = []
    private var waiter: CheckedContinuation<Void, Never>?
    private var pulled = 0
    let progress = MP.Progress(total: nil)

    init<S: Sequence>(pool: MP.ClusterPool, tasks: S, chunksize: Int, window: Int, ordered: Bool) where S.Element == Task {
        self.pool = pool
        var iterator = tasks.makeIterator()
        input = AnyIterator { iterator.next() }
        self.chunksize = chunksize
        self.window = window
        self.ordered = ordered
    }

    /// Keeps `window` chunks in flight.
    private func refill() {
        while true {
            let chunk: [Task]? = lock.locked {
                guard !inputDone, submitted - nextToYield < window else { return nil }
                var chunk: [Task] = []
                while chunk.count < chunksize, let task = input.next() { chunk.append(task) }
                pulled += chunk.count
                if chunk.count < chunksize {
                    inputDone = true
                    progress.setTotal(pulled)
                }
                return chunk.isEmpty ? nil : chunk
            }
            guard let chunk else { return }
            let index = lock.locked { () -> Int in
                defer { submitted += 1 }
                return submitted
            }
            pool.submitChunk(chunk) { [weak self] outcome in self?.arrive(index, outcome) }
        }
    }

    private func arrive(_ index: Int, _ outcome: Result<[Task.Result], MP.Error>) {
        switch outcome {
        case .success(let values): progress.advance(by: values.count)
        case .failure: progress.advance(by: 1, failed: 1)
        }
        let waiter = lock.locked { () -> CheckedContinuation<Void, Never>? in
            arrived[index] = outcome
            arrivalOrder.append(index)
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume()
    }

    func next() async throws -> Task.Result? {
        while true {
            refill()
            let step: Result<Task.Result?, MP.Error>? = lock.locked {
                if !ready.isEmpty { return .success(ready.removeFirst()) }
                let index: Int?
                if ordered {
                    index = arrived[nextToYield] != nil ? nextToYield : nil
                } else {
                    index = arrivalOrder.first
                }
                if let index {
                    arrivalOrder.removeAll { $0 == index }
                    let outcome = arrived.removeValue(forKey: index)!
                    nextToYield += 1
                    switch outcome {
                    case .failure(let error):
                        progress.finish()
                        return .failure(error)
                    case .success(let values):
                        ready = values
                        return nil // loop: take the first of them
                    }
                }
                if inputDone && nextToYield == submitted {
                    progress.finish()
                    return .success(nil)
                }
                return nil
            }
            if let step { return try step.get() }
            let hasWork = lock.locked { !ready.isEmpty || (ordered ? arrived[nextToYield] != nil : !arrivalOrder.isEmpty) }
            if hasWork { continue }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = lock.locked { () -> Bool in
                    if ordered ? arrived[nextToYield] != nil : !arrivalOrder.isEmpty { return true }
                    waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }
}
