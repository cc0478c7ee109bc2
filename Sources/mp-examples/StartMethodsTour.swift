import Multiprocessing

// MARK: 001 §2.1 under spawn and forkserver: the same program with named tasks
//
// Under spawn and forkserver a child is not a copy of `main`: it runs a named
// task, found by name, with its stored properties as arguments. A named task
// is one declaration; `dance()` and `sing()` are the tour's functions above.

struct Dance: MP.NamedTask {                                            // def dance(): ...
    func run() { dance() }
}

struct Sing: MP.NamedTask {                                             // def sing(): ...
    func run() { sing() }
}

func danceAndSingUnderEachMethod() throws {
    for method in [MP.StartMethod.spawn, .forkserver] {
        let ctx = MP.getContext(method)                                 // ctx = mp.get_context('spawn')
        print("start method:", ctx.getStartMethod())                    // ctx.get_start_method()
        let danceProcess = ctx.Process(name: "myprocess1", target: Dance())  // ctx.Process(target=dance, name="myprocess1")
        let singProcess = ctx.Process(target: Sing())                   // ctx.Process(target=sing)
        try danceProcess.start()
        try singProcess.start()
        try danceProcess.join()
        try singProcess.join()
    }
}

// MARK: the producer and the consumer, under forkserver: the queue crosses as an argument

struct Produce: MP.NamedTask {                                          // def produce(q): ...
    var queue: MP.Queue<String?>
    func run() throws {
        for i in 1...5 {
            try queue.put("包子\(i)")
            print("\(MP.currentProcess().name) 生产了 包子\(i)")
        }
        try queue.put(nil)
    }
}

struct Consume: MP.NamedTask {                                          // def consume(q): ...
    var queue: MP.Queue<String?>
    func run() throws {
        while let item = try queue.get() {
            print("\(MP.currentProcess().name) 消费了 \(item)")
        }
    }
}

func producerConsumerForkserver() throws {
    try MP.setStartMethod(.forkserver)                                  // mp.set_start_method('forkserver')
    print("start method:", MP.getStartMethod())
    let queue = try MP.Queue<String?>()
    let producer = MP.Process(name: "producer", target: Produce(queue: queue))   // Process(target=produce, args=(q,))
    let consumer = MP.Process(name: "consumer", target: Consume(queue: queue))
    try producer.start()
    try consumer.start()
    try producer.join()
    try consumer.join()
}

// MARK: 003 Pool(4) with apply_async of 10 tasks, as named tasks under forkserver
//
// The persistent-worker pool (`MP.TaskPool`): four workers start once, by the
// forkserver, and each runs several of the ten tasks, as CPython's pool does.

struct Test: MP.NamedTask {                                             // def test(num): ...
    var num: Int
    func run() -> Int { test(num) }
}

func poolApplyAsyncNamed() throws {
    let pool = try MP.getContext(.forkserver).TaskPool(processes: 4)   // pool = get_context('forkserver').Pool(4)
    var results: [MP.AsyncResult<Int>] = []
    for i in 0..<10 {
        results.append(pool.applyAsync(Test(num: i)))                   // pool.apply_async(test, (i, ))
    }
    pool.close()                                                        // pool.close()
    try pool.join()                                                     // pool.join()
    print("results:", try results.map { try $0.get() })
}
