import Multiprocessing

// `mp-spawn-small COUNT`: the spawn figure of a small program, one that
// imports only Multiprocessing (mp-bench itself maps Foundation, NIO and
// postgres-nio, whose loading is most of its own spawn). A peer of mp-bench's
// alternating rounds: it prints `ready`, then for each line it reads (a
// figure's name) starts and joins COUNT empty named tasks under spawn and
// prints `name microseconds-per-start`.

struct Empty: MP.NamedTask {
    func run() {}
}

let clock = ContinuousClock()
let discovery = clock.measure { _ = MP.namedTaskNames() }   // once per process, as in every spawned child
let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 20 : 20
let spawn = MP.getContext(.spawn)

func startJoin() throws {
    let p = spawn.Process(target: Empty())
    try p.start()
    try p.join()
    guard p.exitCode == 0 else { throw MP.Error(.startFailed, "a spawned empty task exited with \(p.exitCode ?? -1)") }
}

func microseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
}

MP.setLineBufferedOutput()
for _ in 0..<3 { try startJoin() }
print("ready")
while let name = readLine() {
    switch name {
    case "named_task_discovery_small_us":
        print(name, microseconds(discovery))
    default:
        let elapsed = try clock.measure { for _ in 0..<count { try startJoin() } }
        print(name, microseconds(elapsed) / Double(count))
    }
}
