import Glibc
import MultiprocessingPlatform

extension MP {
    /// How far a map has come: tasks completed of the total, the rate, and
    /// an estimate of the time left. Every map of the pools has one
    /// (``MP/AsyncResult/progress``, ``MP/TaskResults/progress``): watch it
    /// as an `AsyncSequence` (``updates``), read it (``snapshot``), or show
    /// a bar on standard error (`showBar()`), Python's tqdm around `imap`
    /// or mpire's `progress_bar=True`:
    ///
    /// ```swift
    /// let squares = pool.mapAsync((0..<100_000).map { Square(x: $0) }, chunksize: 1_000)
    /// squares.progress?.showBar()                // a terminal's stderr only; gone when done
    /// for await step in squares.progress!.updates {
    ///     print(step.completed, "of", step.total ?? 0, step.estimatedSecondsLeft ?? 0)
    /// }
    /// ```
    ///
    /// It counts as results arrive, by chunk (a chunk is the unit a worker
    /// reports); an update is sent at most ten times a second and once at
    /// the end. Nothing is measured or sent unless somebody watches: a map
    /// nobody watches pays one locked addition per chunk.
    public final class Progress: @unchecked Sendable {
        /// One reading.
        public struct Snapshot: Sendable, Hashable, CustomStringConvertible {
            /// Tasks completed (failed ones included).
            public var completed: Int
            /// Of those, the ones that failed.
            public var failed: Int
            /// All the tasks, once known (an `imap` of a lazy sequence knows
            /// it when the input runs out).
            public var total: Int?
            /// Seconds since the map started.
            public var elapsedSeconds: Double
            /// Whether the map has ended (every result in, or it failed or was cancelled).
            public var isFinished: Bool

            /// Tasks a second, over the whole map so far.
            public var rate: Double { elapsedSeconds > 0 ? Double(completed) / elapsedSeconds : 0 }
            /// `completed / total`, once the total is known.
            public var fraction: Double? { total.map { $0 == 0 ? 1 : Double(completed) / Double($0) } }
            /// Seconds left at the rate so far, once there is a rate and a total.
            public var estimatedSecondsLeft: Double? {
                guard let total, rate > 0 else { return nil }
                return Double(max(0, total - completed)) / rate
            }

            public var description: String {
                let of = total.map { " of \($0)" } ?? ""
                let left = estimatedSecondsLeft.map { ", \(Progress.clock($0)) left" } ?? ""
                return "\(completed)\(of) (\(Int(rate.rounded()))/s\(left))" + (failed > 0 ? ", \(failed) failed" : "")
            }
        }

        private let lock = ForkSafeLock()
        private let start = Deadline.now
        private var completed = 0
        private var failed = 0
        private var total: Int?
        private var finished = false
        private var watchers: [Int: AsyncStream<Snapshot>.Continuation] = [:]
        private var nextWatcher = 0
        private var lastSent: Int64 = 0
        private var bar: TerminalBar?

        /// The least time between two updates, in nanoseconds (ten a second).
        static let interval: Int64 = 100_000_000

        /// A progress of your own work, `total` tasks (nil: not known yet):
        /// report with ``advance(by:failed:)`` and end with ``finish()``.
        public init(total: Int?) { self.total = total }

        /// The reading now.
        public var snapshot: Snapshot { lock.withLock { unlockedSnapshot } }

        private var unlockedSnapshot: Snapshot {
            Snapshot(completed: completed, failed: failed, total: total,
                     elapsedSeconds: Double(Deadline.now - start) / 1e9, isFinished: finished)
        }

        /// The readings from now on, at most ten a second, ending with the
        /// last one when the map ends. Each iteration has its own stream.
        public var updates: AsyncStream<Snapshot> {
            let (stream, continuation) = AsyncStream<Snapshot>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let (now, done, key) = lock.withLock { () -> (Snapshot, Bool, Int) in
                let key = nextWatcher
                nextWatcher += 1
                if !finished { watchers[key] = continuation }
                return (unlockedSnapshot, finished, key)
            }
            continuation.yield(now)
            if done {
                continuation.finish()
            } else {
                continuation.onTermination = { [weak self] _ in self?.lock.withLock { _ = self?.watchers.removeValue(forKey: key) } }
            }
            return stream
        }

        /// Draws a bar on standard error, redrawn at most ten times a second
        /// on its own line (`\r`, then the line cleared) and erased when the
        /// map ends. Only when standard error is a terminal (never into a
        /// file or a pipe); whether it is shown. Lines the program prints to
        /// the same terminal meanwhile share the bar's line until its next redraw.
        @discardableResult
        public func showBar(width: Int = 30) -> Bool {
            guard Sys.isTerminal(STDERR_FILENO) else { return false }
            let now = lock.withLock { () -> Snapshot? in
                guard !finished, bar == nil else { return nil }
                bar = TerminalBar(width: max(10, width))
                return unlockedSnapshot
            }
            guard let now else { return false }
            bar?.draw(now)
            return true
        }

        // MARK: reporting (the pools do it for their maps)

        /// The total became known (or changed).
        public func setTotal(_ value: Int) {
            lock.withLock { total = value }
        }

        /// `count` more tasks completed, `failed` of them failed.
        public func advance(by count: Int, failed failures: Int = 0) {
            lock.lock()
            completed += count
            failed += failures
            guard !watchers.isEmpty || bar != nil else { lock.unlock(); return }
            let now = Deadline.now
            let due = now - lastSent >= Self.interval || (total.map { completed >= $0 } ?? false)
            guard due else { lock.unlock(); return }
            lastSent = now
            let reading = unlockedSnapshot
            let watching = Swift.Array(watchers.values)
            let bar = self.bar
            lock.unlock()
            for watcher in watching { watcher.yield(reading) }
            bar?.draw(reading)
        }

        /// The work ended: a last reading to every watcher, the bar erased.
        /// Twice is harmless.
        public func finish() {
            let (reading, watching, bar) = lock.withLock { () -> (Snapshot?, [AsyncStream<Snapshot>.Continuation], TerminalBar?) in
                guard !finished else { return (nil, [], nil) }
                finished = true
                defer {
                    watchers = [:]
                    self.bar = nil
                }
                return (unlockedSnapshot, Swift.Array(watchers.values), self.bar)
            }
            guard let reading else { return }
            for watcher in watching {
                watcher.yield(reading)
                watcher.finish()
            }
            bar?.erase()
        }

        /// `75` as `1:15`, `4000` as `1:06:40`.
        static func clock(_ seconds: Double) -> String {
            let whole = Int(seconds.rounded())
            let (hours, minutes, rest) = (whole / 3600, whole / 60 % 60, whole % 60)
            func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
            return hours > 0 ? "\(hours):\(two(minutes)):\(two(rest))" : "\(minutes):\(two(rest))"
        }
    }
}

/// The bar itself: one line of standard error, written whole each time.
private struct TerminalBar {
    let width: Int

    func draw(_ reading: MP.Progress.Snapshot) {
        var line = "\r\u{1B}[K"
        if let fraction = reading.fraction {
            let filled = min(width, Int((fraction * Double(width)).rounded(.down)))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
            line += "\(Int((fraction * 100).rounded(.down)))% "
        }
        line += reading.description
        Sys.writeBestEffort(STDERR_FILENO, line)
    }

    func erase() { Sys.writeBestEffort(STDERR_FILENO, "\r\u{1B}[K") }
}

extension MP {
    /// A sequence counted into a ``MP/Progress`` as it is consumed: Python's
    /// `tqdm(pool.imap(f, xs), total=len(xs))`, for the streams that carry no
    /// progress of their own (the closure pool's and the thread pool's
    /// `imap`, or any `AsyncSequence`). Made by `tracked(by:)`.
    public struct TrackedSequence<Base: AsyncSequence>: AsyncSequence {
        public typealias Element = Base.Element
        let base: Base
        let progress: Progress

        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: Base.AsyncIterator
            let progress: Progress

            public mutating func next() async throws -> Base.Element? {
                do {
                    guard let element = try await base.next() else {
                        progress.finish()
                        return nil
                    }
                    progress.advance(by: 1)
                    return element
                } catch {
                    progress.advance(by: 1, failed: 1)
                    progress.finish()
                    throw error
                }
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), progress: progress) }
    }
}

extension AsyncSequence {
    /// This sequence, counted into `progress` as it is consumed (one per
    /// element; the progress ends with the sequence):
    ///
    /// ```swift
    /// let progress = MP.Progress(total: items.count)
    /// progress.showBar()
    /// let squares = pool.imap(items, chunksize: 100) { $0 * $0 }
    /// for try await value in squares.tracked(by: progress) { use(value) }
    /// ```
    public func tracked(by progress: MP.Progress) -> MP.TrackedSequence<Self> {
        MP.TrackedSequence(base: self, progress: progress)
    }
}
