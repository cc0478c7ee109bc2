import Multiprocessing

// MARK: a manager's dict shared between worker processes
//
// Python:
//
//     def count(words, d, total, lock):
//         for w in words:
//             with lock:                      # d[w] = d.get(w, 0) + 1 is not atomic
//                 d[w] = d.get(w, 0) + 1
//         total.value += len(words)          # (racy in Python without the lock)
//
//     with Manager() as manager:
//         d = manager.dict(); total = manager.Value('i', 0); lock = manager.Lock()
//         workers = [Process(target=count, args=(chunk, d, total, lock)) for chunk in chunks]
//         ...
//
// In Swift the workers are named tasks (they run under forkserver here);
// the proxies are their stored properties. `modify` is an atomic
// read-modify-write on the server, so no lock is needed.

struct CountWords: MP.NamedTask {
    var words: [String]
    var counts: MP.DictProxy<String, Int>
    var total: MP.ValueProxy<Int>

    func run() throws {
        for word in words {
            try counts.modify(word) { $0 = ($0 ?? 0) + 1 }    // with lock: d[w] = d.get(w, 0) + 1
        }
        try total.modify { $0 += words.count }              // with lock: total.value += len(words)
        print(MP.currentProcess().name, "counted", words.count, "words")
    }
}

func managerDict() throws {
    let text = "the quick brown fox jumps over the lazy dog the fox the dog".split(separator: " ").map(String.init)
    try MP.Manager.with { manager in                                    // with Manager() as manager:
        let counts: MP.DictProxy<String, Int> = try manager.dict()      //     d = manager.dict()
        let total = try manager.Value(0)                                //     total = manager.Value('i', 0)
        let chunks = stride(from: 0, to: text.count, by: 3).map { Array(text[$0..<min($0 + 3, text.count)]) }
        let workers = chunks.enumerated().map { index, chunk in
            MP.getContext(.forkserver).Process(name: "worker-\(index)", target: CountWords(words: chunk, counts: counts, total: total))
        }
        for worker in workers { try worker.start() }
        for worker in workers { try worker.join() }
        let sorted = try counts.items().sorted { ($1.value, $0.key) < ($0.value, $1.key) }
        print("counts:", sorted.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        print("total:", try total.value, "of", text.count)
    }
}
