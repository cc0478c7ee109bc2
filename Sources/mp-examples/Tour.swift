import Glibc
import Multiprocessing

// Each function is the line-for-line Swift translation of one program from the
// Python tutorials (shared/tutorials), with the Python original's lines as comments.

// MARK: 001 §2.1 / 000: dance and sing in two processes

func dance() {
    print("dance:", MP.getpid())                  // os.getpid()
    print("dance:", MP.currentProcess())          // multiprocessing.current_process()
    print("dance的父进程编号:", MP.getppid())      // os.getppid()
    for _ in 0..<5 {
        print("跳舞中...")
        Time.sleep(0.2)
    }
}

func sing() {
    print("sing:", MP.getpid())
    print("sing:", MP.currentProcess())
    print("sing的父进程编号:", MP.getppid())
    for _ in 0..<5 {
        print("唱歌中...")
        Time.sleep(0.2)
    }
}

func danceAndSing() throws {
    let danceProcess = MP.Process(name: "myprocess1", target: dance)   // Process(target=dance, name="myprocess1")
    let singProcess = MP.Process(target: sing)                          // Process(target=sing)
    try danceProcess.start()
    try singProcess.start()
    // The main process waits for its children at exit, as Python's does.
}

// MARK: 001 §2.2: a process that kills itself

func selfKill() throws {
    print("main:", MP.getpid())
    print("main:", MP.currentProcess())
    let danceProcess = MP.Process(name: "myprocess1") {
        print("dance:", MP.getpid())
        print("dance:", MP.currentProcess())
        for i in 0..<5 {
            print("跳舞中...\(i)")
            try MP.kill(MP.getpid(), .kill)                             // os.kill(os.getpid(), 9)
        }
    }
    try danceProcess.start()
    try danceProcess.join()
    print("exitcode:", danceProcess.exitCode!)                          // -9
}

// MARK: 000: a target with arguments

func task(count: Int) {
    for _ in 0..<count {
        print("running")
        Time.sleep(0.2)
    }
    print("over")                                                       // for ... else
}

func arguments() throws {
    let subProcess1 = MP.Process { task(count: 5) }                     // args=(5,)
    let subProcess2 = MP.Process { task(count: 3) }                     // kwargs={"count": 3}
    try subProcess1.start()
    try subProcess2.start()
}

// MARK: 003: a named process with args and kwargs, terminated

func processFun(_ args: Int..., kwargs: [String: String]) {
    for _ in 0..<10 {
        print("helloworld")
        print(args)
        print(kwargs)
        print("子进程pid:\(MP.getpid())")
        Time.sleep(0.1)
    }
}

func named() throws {
    let p = MP.Process(name: "test") { processFun(1, 2, kwargs: ["A": "a"]) }
    try p.start()
    print("父进程PID:\(MP.getpid())")
    print(p.name)
    Time.sleep(0.1)
    try p.terminate()
    try p.join()
    print(p.isAlive)
    print("父进程结束")
}

// MARK: 003: subclassing Process, arguments through init

final class ProcessFun: MP.Process, @unchecked Sendable {
    let args: [Int]
    let kwargs: [String: String]

    init(args: [Int], kwargs: [String: String]) {
        self.args = args
        self.kwargs = kwargs
        super.init()
    }

    override func run() throws {
        for _ in 0..<10 {
            print("helloworld")
            print(["args": args, "kwargs": kwargs] as KeyValuePairs<String, Any>)
            print("子进程pid:\(MP.getpid())")
            Time.sleep(0.1)
        }
    }
}

func subclass() throws {
    let p = ProcessFun(args: [1, 2], kwargs: ["A": "a"])
    try p.start()
    print("父进程PID:\(MP.getpid())")
    print(p.name)
    Time.sleep(0.1)
    try p.terminate()
    try p.join()
    print(p.isAlive)
    print("父进程结束")
}

// MARK: 002: join one after another versus started together

func func2(_ name: String, _ n: Int) {
    print(name)
    Time.sleep(Double(n))
    print("\(n)")
}

func joinSequential() throws {
    let startTime = Time.now()
    for i in 1...3 {
        let p = MP.Process { func2("hkw", i) }
        try p.start()
        try p.join()
    }
    print("main", formatted(Time.now() - startTime), "(about 1+2+3 s)")
}

func joinTogether() throws {
    let startTime = Time.now()
    var pList: [MP.Process] = []
    for i in 1...3 {
        let p = MP.Process { func2("hkw", i) }
        try p.start()
        pList.append(p)
    }
    for p in pList { try p.join() }
    print("main", formatted(Time.now() - startTime), "(about the longest, 3 s)")
}

// MARK: 002: processes do not share globals

nonisolated(unsafe) var name = "jon"

func globals() throws {
    let p = MP.Process {
        name = "lin"                                                    // global name; name = 'lin'
        print("func \(name)")
    }
    try p.start()
    try p.join()
    print("main \(name)")
}

// MARK: 002: PIDs, is_alive, terminate, daemon after start

func terminate() throws {
    let p = MP.Process {
        print("func---PID: \(MP.currentProcess().pid!)")
        print("func---PID: \(MP.getpid())")
        print("func---PPID: \(MP.getppid())")
        Time.sleep(10)
    }
    try p.start()
    print(p.isAlive)
    do {
        try p.setDaemon(true)                                           // p.daemon = True after start
    } catch {
        print("error:", error)                                          // AssertionError in Python
    }
    try p.terminate()
    try p.join()
    print(p.isAlive)
    print("exitcode:", p.exitCode!)                                     // -15
    print("main---PID: \(MP.getpid())")
    print("main---PPID: \(MP.getppid())")
}

// MARK: 001 §2.4: a daemon child is cut off when the main process ends

func daemon() throws {
    let subProcess = MP.Process {
        for _ in 0..<10 {
            print("任务执行中...")
            Time.sleep(0.2)
        }
    }
    try subProcess.setDaemon(true)
    try subProcess.start()
    Time.sleep(0.5)
    print("over")
    MP.exit(0)                                                          // exit()
}

// MARK: 003: os.fork and os.wait, the child ends with an uncaught error

func forkWait() throws {
    switch try MP.fork() {                                              // ret = os.fork()
    case .child:
        MP.runAndExit {
            print("我是子进程PID:\(MP.getpid()),父进程PPID:\(MP.getppid())")
            for _ in 0..<10 {
                print("我是子进程")
                Time.sleep(0.1)
            }
            throw PythonException("抛出异常状态")                        // raise Exception('抛出异常状态')
        }
    case .parent:
        print("我是父进程PID:\(MP.getpid()),父进程PPID:\(MP.getppid())")
        for _ in 0..<5 {
            print("父进程")
            Time.sleep(0.1)
        }
        print("父进程\"任务\"结束")
        let (pid, result) = try { let r = try MP.wait(); return (r.pid, r.status.rawValue) }()
        print("子进程结束,pid为\(pid),结束状态\(result)")
    }
}

// MARK: 002: orphan and zombie processes

func orphan() throws {
    // Become the subreaper, so the orphan is adopted by this program (not by
    // init) and can be reaped here: no process is left behind.
    try MP.setChildSubreaper(true)
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw PythonException("pipe failed") }
    let middle = MP.Process(name: "middle") {
        let gone = try { () throws -> (Int32, Int32) in
            var pair: [Int32] = [0, 0]
            guard pipe(&pair) == 0 else { throw PythonException("pipe failed") }
            return (pair[0], pair[1])
        }()
        switch try MP.fork() {
        case .child:
            close(gone.1)
            print("orphan \(MP.getpid()): my parent is \(MP.getppid())")
            var byte: UInt8 = 0
            _ = read(gone.0, &byte, 1)                                  // EOF: the middle process is gone
            print("orphan \(MP.getpid()): my parent has exited; my parent is now \(MP.getppid()) (the subreaper)")
            MP.exit(0)
        case .parent(let pid):
            close(gone.0)
            var orphanPid = pid
            _ = write(fds[1], &orphanPid, MemoryLayout<Int32>.size)
            print("middle \(MP.getpid()): started \(pid) and exits without waiting for it")
        }
    }
    try middle.start()
    close(fds[1])
    var orphanPid: Int32 = 0
    _ = read(fds[0], &orphanPid, MemoryLayout<Int32>.size)
    close(fds[0])
    try middle.join()
    print("main \(MP.getpid()): middle exited with \(middle.exitCode!)")
    let reaped = try MP.waitpid(orphanPid)!
    print("main: reaped the adopted orphan \(reaped.pid) with status \(reaped.status)")
}

func zombie() throws {
    let p = MP.Process(name: "zombie") { print("child \(MP.getpid()): done") }
    try p.start()
    _ = try MP.wait(for: [p.sentinel])                                  // exited, not reaped
    print("after exit, before join: state \(processState(p.pid!)) (Z: zombie)")
    try p.join()                                                        // reaps
    print("after join: state \(processState(p.pid!)) (gone)")
}

func processState(_ pid: Int32) -> String {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return "-" }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "-" }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let close = line.lastIndex(of: ")") else { return "?" }
    return String(line[line.index(close, offsetBy: 2)])
}

// MARK: 002 互斥锁: four processes, one shared counter, with and without the lock

func mutex() throws {
    let counter = try MP.Value(0)                                       // Value('i', 0)
    let lock = try MP.Lock()                                            // Lock()
    func run(locked: Bool) throws -> Int {
        counter.value = 0
        let workers = (0..<4).map { _ in
            MP.Process {
                for _ in 0..<100_000 {
                    if locked {
                        try lock.withLock { counter.value += 1 }        // with lock: v.value += 1
                    } else {
                        counter.value += 1                              // v.value += 1: read, then write
                    }
                }
            }
        }
        for worker in workers { try worker.start() }
        for worker in workers { try worker.join() }
        return counter.value
    }
    print("without the lock: \(try run(locked: false)) (4 x 100000 increments, some lost)")
    print("with the lock:    \(try run(locked: true))")
}

// MARK: a producer and a consumer on a queue

func producerConsumer() throws {
    let queue = try MP.Queue<String?>()                                 // Queue()
    let producer = MP.Process(name: "producer") {
        for i in 1...5 {
            try queue.put("包子\(i)")
            print("\(MP.currentProcess().name) 生产了 包子\(i)")
            Time.sleep(0.05)
        }
        try queue.put(nil)                                              // q.put(None): no more
    }
    let consumer = MP.Process(name: "consumer") {
        while let item = try queue.get() {
            print("\(MP.currentProcess().name) 消费了 \(item)")
        }
    }
    try producer.start()
    try consumer.start()
    try producer.join()
    try consumer.join()
}

// MARK: a pipe ping-pong

func pingPong() throws {
    let (parentEnd, childEnd) = try MP.Pipe()                           // Pipe()
    let player = MP.Process {
        parentEnd.close()
        for _ in 0..<3 {
            let ball = try childEnd.recv(Int.self)
            print("child  received ping \(ball), sends pong \(ball + 1)")
            try childEnd.send(ball + 1)
        }
    }
    try player.start()
    childEnd.close()
    var ball = 0
    for _ in 0..<3 {
        print("parent sends ping \(ball)")
        try parentEnd.send(ball)
        ball = try parentEnd.recv(Int.self) + 1
    }
    try player.join()
    do {
        _ = try parentEnd.recv(Int.self)
    } catch {
        print("parent: \(error)")                                      // EOFError
    }
}

// MARK: 003 Pool: apply_async, apply, close and join

func test(_ num: Int) -> Int {
    print("开始执行任务\(num)")
    Time.sleep(0.1)
    print("结束执行任务\(num)")
    return num * num
}

func poolApplyAsync() throws {
    let pool = try MP.Pool(processes: 4)                                // pool = Pool(4)
    var results: [MP.AsyncResult<Int>] = []
    for i in 0..<10 {
        results.append(pool.applyAsync { test(i) })                     // pool.apply_async(test, (i, ))
    }
    pool.close()                                                        // pool.close()
    try pool.join()                                                     // pool.join()
    print("results:", try results.map { try $0.get() })
}

func poolApply() throws {
    let pool = try MP.Pool(processes: 4)                                // pool = Pool(4)
    for i in 0..<10 {
        _ = try pool.apply { test(i) }                                  // pool.apply(test, (i, )): blocks
    }
    pool.close()
    try pool.join()
}

func poolMap() throws {
    let squares = try MP.Pool.with(processes: 4) { pool in              // with Pool(4) as pool:
        try pool.map(0..<10) { $0 * $0 }                                //     pool.map(f, range(10))
    }
    print(squares)
    print(try (0..<10).parallelMap { $0 + 1 })                          // the one-call form
}

// MARK: the tour

let examples: [Example] = [
    Example(name: "dance-sing", title: "dance and sing in two processes (001 §2.1, 000)", run: danceAndSing),
    Example(name: "self-kill", title: "a process kills itself with SIGKILL (001 §2.2)", run: selfKill),
    Example(name: "arguments", title: "a target with arguments (000)", run: arguments),
    Example(name: "named", title: "a named process, terminated (003)", run: named),
    Example(name: "subclass", title: "subclassing Process with run() (003)", run: subclass),
    Example(name: "join-sequential", title: "start and join one after another (002)", run: joinSequential),
    Example(name: "join-together", title: "start all, then join all (002)", run: joinTogether),
    Example(name: "globals", title: "processes do not share globals (002)", run: globals),
    Example(name: "terminate", title: "is_alive, terminate, daemon after start (002)", run: terminate),
    Example(name: "daemon", title: "a daemon child is cut off when the main process ends (001 §2.4)", run: daemon),
    Example(name: "fork-wait", title: "os.fork and os.wait, the child raises (003)", run: forkWait),
    Example(name: "orphan", title: "an orphan is adopted when its parent exits (002, 003)", run: orphan),
    Example(name: "zombie", title: "a zombie: exited, not yet reaped (002, 003)", run: zombie),
    Example(name: "mutex", title: "four processes increment one counter, without and with a lock (002)", run: mutex),
    Example(name: "producer-consumer", title: "a producer and a consumer on a queue", run: producerConsumer),
    Example(name: "ping-pong", title: "a pipe ping-pong between two processes", run: pingPong),
    Example(name: "pool-apply-async", title: "apply_async of 10 tasks on a pool of 4, close, join (003)", run: poolApplyAsync),
    Example(name: "pool-apply", title: "blocking apply: strictly one after another (003)", run: poolApply),
    Example(name: "pool-map", title: "map over a pool, scoped, and parallelMap", run: poolMap),
    Example(name: "start-methods", title: "dance and sing under spawn and forkserver, with named tasks and get_context (001 §2.1)", run: danceAndSingUnderEachMethod),
    Example(name: "queue-forkserver", title: "producer and consumer under set_start_method('forkserver'): the queue crosses", run: producerConsumerForkserver),
    Example(name: "pool-named", title: "Pool(4) with apply_async of 10 named tasks under forkserver: persistent workers (003)", run: poolApplyAsyncNamed),
    Example(name: "listener-python", title: "a Swift Listener and a CPython Client exchange messages, authenticated", run: listenerWithPython),
    Example(name: "pickle-python", title: "a CPython peer sends a job as a dict; Swift answers with a struct (the safe pickle codec)", run: pickleWithPython),
    Example(name: "manager-dict", title: "a Manager's dict and Value shared by worker processes, updated atomically", run: managerDict),
    Example(name: "progress", title: "a long map with a progress bar (tqdm around imap, mpire's progress_bar)", run: progressOfAMap),
    Example(name: "contained", title: "a pool contains a task that leaks memory and one that loops for ever; the rest completes", run: containedWork),
    Example(name: "actors", title: "a counter and a bank account as distributed actors in host processes, called from pool workers; one host killed (Ray's actors)", run: actorsAcrossProcesses),
]
