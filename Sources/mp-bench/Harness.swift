import Glibc

/// One measured figure. Counterparts carry the same base name with the suffix
/// `_python` (CPython in the same run) or `_c` (the raw C floor).
struct Metric: Codable {
    let name: String
    let value: Double
    /// Whether a larger value is better (throughput) or worse (latency).
    let higherIsBetter: Bool
    /// The lowest and highest round, when the value is a median of alternating rounds.
    var low: Double? = nil
    var high: Double? = nil
    var rounds: Int? = nil
}

/// A peer process that measures one round of a named figure each time it
/// is asked (a line on its standard input; it prints `name value`), so that
/// this library's rounds and the peer's can alternate in one run: ours,
/// CPython's, ours, ... Machines here drift by 2-10x between minutes; only
/// alternating rounds give a ratio that the next run confirms. The peer is a
/// CPython script, or a small Swift helper of the package.
final class PeerRounds {
    private let pid: pid_t
    private let input: Int32
    private let output: UnsafeMutablePointer<FILE>
    /// The script's file, removed at ``finish()``: CPython's spawn and
    /// forkserver children import the main module by its path.
    private let script: String?

    /// Starts `script` under python3, which prints `ready` when it can measure; nil when python3 is missing or fails.
    convenience init?(python script: String) {
        guard let path = writeScript(script) else { return nil }
        self.init(arguments: ["python3", path], script: path)
    }

    /// Starts `arguments` (found on PATH when the first has no slash), which
    /// prints `ready` when it can measure; nil when it cannot be started or fails.
    init?(arguments: [String], script: String? = nil) {
        self.script = script
        var toChild: [Int32] = [-1, -1], fromChild: [Int32] = [-1, -1]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else { if let script { unlink(script) }; return nil }
        // Close-on-exec: the peer gets only its standard input and output.
        for fd in toChild + fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let child = spawnPeer(arguments, stdin: toChild[0], stdout: fromChild[1])
        close(toChild[0])
        close(fromChild[1])
        guard let child, let stream = fdopen(fromChild[0], "r") else {
            close(toChild[1]); close(fromChild[0])
            if let script { unlink(script) }
            return nil
        }
        pid = child
        input = toChild[1]
        output = stream
        guard readLine() == "ready" else { finish(); return nil }
    }

    private func readLine() -> String? {
        var buffer = [CChar](repeating: 0, count: 512)
        guard fgets(&buffer, Int32(buffer.count), output) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// One round of `name`, measured by CPython now; nil if it failed.
    func measure(_ name: String) -> Double? {
        let line = Array((name + "\n").utf8)
        guard write(input, line, line.count) == line.count, let answer = readLine() else { return nil }
        let parts = answer.split(separator: " ")
        guard parts.count == 2, parts[0] == name else { return nil }
        return Double(parts[1])
    }

    /// Ends the peer (end-of-file on its input), reaps it, removes its script.
    func finish() {
        close(input)
        fclose(output)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if let script { unlink(script) }
    }
}

/// `rounds` alternating rounds of ours and CPython's `name`: the two
/// contenders of ``alternatingRounds(_:_:)``.
func alternating(_ name: String, rounds: Int, higherIsBetter: Bool = false, python: PeerRounds?,
                 _ ours: @escaping () throws -> Double) throws -> [Metric] {
    try alternatingRounds(rounds, [
        Contender(name: name, higherIsBetter: higherIsBetter, round: ours),
        Contender(name: name + "_python", higherIsBetter: higherIsBetter) { python?.measure(name) },
    ])
}

/// One figure measured in alternating rounds: its name, whether higher is
/// better, and one round (nil: this side could not measure; dropped).
struct Contender {
    let name: String
    var higherIsBetter = false
    let round: () throws -> Double?
}

/// `rounds` rounds in which every contender measures once, in turn (after
/// one warm-up round): each figure's median with its lowest and highest
/// round. Ratios printed are ratios of medians of rounds that saw the same
/// machine, minute by minute.
func alternatingRounds(_ rounds: Int, _ contenders: [Contender]) throws -> [Metric] {
    for contender in contenders { _ = try contender.round() }
    var values = [[Double]](repeating: [], count: contenders.count)
    for _ in 0..<rounds {
        for (index, contender) in contenders.enumerated() {
            if let value = try contender.round() { values[index].append(value) }
        }
    }
    return zip(contenders, values).compactMap { contender, values in
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return Metric(name: contender.name, value: sorted[sorted.count / 2], higherIsBetter: contender.higherIsBetter,
                      low: sorted.first, high: sorted.last, rounds: sorted.count)
    }
}

/// Seconds on the monotonic clock.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `script` in a new file under /tmp (CPython's spawn and forkserver
/// children import the main module by its path); its path.
func writeScript(_ script: String) -> String? {
    var template = Array("/tmp/mp-bench-XXXXXX.py".utf8CString)
    let file = mkstemps(&template, 3)
    guard file >= 0 else { return nil }
    let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let bytes = Array(script.utf8)
    defer { close(file) }
    guard write(file, bytes, bytes.count) == bytes.count else { unlink(path); return nil }
    return path
}

/// `arguments` (the first found on PATH) with its standard input and output on the given descriptors; its pid.
func spawnPeer(_ arguments: [String], stdin: Int32?, stdout: Int32) -> pid_t? {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, STDIN_FILENO) }
    posix_spawn_file_actions_adddup2(&actions, stdout, STDOUT_FILENO)
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    return posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ) == 0 ? pid : nil
}

func format(_ value: Double) -> String {
    if value >= 1000 { return String(Int(value.rounded())) }
    let scaled = (value * 100).rounded() / 100
    return String(scaled)
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// Prints the table: each base metric with its counterparts and the ratios,
/// expressed so that a ratio above 1 means this library is ahead.
func printTable(_ metrics: [Metric]) {
    let byName = Dictionary(metrics.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    let suffixes = ["_python", "_c", "_fasterfifo", "_json", "_ray"]
    let bases = metrics.filter { metric in !suffixes.contains { metric.name.hasSuffix($0) } }
    print(pad("metric", 34), pad("swift", 12), pad("python", 12), pad("c", 12), pad("vs python", 12), "vs c")
    for metric in bases {
        let python = byName[metric.name + "_python"]
        let c = byName[metric.name + "_c"]
        func ratio(_ other: Metric?) -> String {
            guard let other, other.value > 0, metric.value > 0 else { return "-" }
            let advantage = metric.higherIsBetter ? metric.value / other.value : other.value / metric.value
            return format(advantage) + "x"
        }
        print(pad(metric.name, 34), pad(format(metric.value), 12), pad(python.map { format($0.value) } ?? "-", 12),
              pad(c.map { format($0.value) } ?? "-", 12), pad(ratio(python), 12), ratio(c))
    }
    print("(ratios: how many times better this library is; below 1 means behind)")
    for metric in bases {
        guard let low = metric.low, let high = metric.high, let rounds = metric.rounds else { continue }
        // Rounds alternate with a peer's when there is one (CPython, C, ...).
        let peered = byName.keys.contains { $0.hasPrefix(metric.name + "_") }
        var line = "\(metric.name): median of \(rounds)\(peered ? " alternating" : "") rounds \(format(metric.value)) (\(format(low))-\(format(high)))"
        if let python = byName[metric.name + "_python"], let pythonLow = python.low, let pythonHigh = python.high {
            line += ", CPython \(format(python.value)) (\(format(pythonLow))-\(format(pythonHigh)))"
        }
        print(line)
    }
    for metric in bases {
        if let other = byName[metric.name + "_fasterfifo"] {
            print("\(metric.name): faster-fifo \(format(other.value)), this library \(format(metric.value / other.value))x faster-fifo")
        }
        if let other = byName[metric.name + "_ray"], other.value > 0, metric.value > 0 {
            let advantage = metric.higherIsBetter ? metric.value / other.value : other.value / metric.value
            print("\(metric.name): Ray \(format(other.value)), this library \(format(advantage))x Ray")
        }
        if let other = byName[metric.name + "_json"] {
            print("\(metric.name): JSONEncoder+JSONDecoder \(format(other.value)), this library \(format(other.value / metric.value))x faster")
        }
    }
}

/// Writes `{"metric_name": number, ...}`.
func writeJSON(_ metrics: [Metric], to path: String) throws {
    let body = metrics.map { "  \"\($0.name)\": \($0.value)" }.joined(separator: ",\n")
    let text = "{\n" + body + "\n}\n"
    guard let file = fopen(path, "w") else { throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    fputs(text, file)
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
