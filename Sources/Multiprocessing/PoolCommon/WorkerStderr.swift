import Glibc
import MultiprocessingPlatform

/// A worker's stderr, passed through to the pool process's stderr by the
/// pool's thread, which keeps the last `Fatal error:` line: a worker that
/// crashes fails its task with the crash's message, not only its signal.
final class WorkerStderr {
    let fd: Int32
    private(set) var fatalLine: String?
    private var partial: [UInt8] = []

    init(fd: Int32) { self.fd = fd }
    deinit { Sys.close(fd) }

    /// Forwards what is waiting (without blocking) and remembers the crash message.
    func pump() {
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while (try? Sys.pollReadable(fd, until: Deadline.after(validSeconds: 0))) == true {
            let count = buffer.withUnsafeMutableBytes { Sys.readSome(fd, into: $0) }
            guard count > 0 else { return }
            buffer.withUnsafeBytes { Sys.writeBestEffort(STDERR_FILENO, UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            scan(buffer[..<count])
        }
    }

    /// Swift's `Fatal error: …` or `File.swift:12: Fatal error: …`; not a
    /// backtrace's register dump, whose bytes may spell the same words.
    static func isFatalErrorLine(_ line: String) -> Bool {
        guard let range = line.firstRange(of: "Fatal error") else { return false }
        let prefix = line[..<range.lowerBound]
        return prefix.isEmpty || (prefix.hasSuffix(": ") && !prefix.dropLast().contains(" "))
    }

    private func scan(_ bytes: ArraySlice<UInt8>) {
        partial += bytes
        while let newline = partial.firstIndex(of: 10) {
            let line = String(decoding: partial[..<newline], as: UTF8.self)
            if Self.isFatalErrorLine(line) { fatalLine = line }
            partial.removeSubrange(...newline)
        }
        if partial.count > 4096 { partial.removeFirst(partial.count - 4096) }
    }
}
