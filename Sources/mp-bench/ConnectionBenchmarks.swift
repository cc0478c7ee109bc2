#if canImport(Glibc)
import Glibc
#endif
import Multiprocessing

/// Issue 11's figures: authenticated connections and a manager's dict, beside CPython's.
enum ConnectionBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 7
        let connections = quick ? 100 : 500
        let key = Array("benchmark key".utf8)
        let listener = try MP.Listener(authkey: key, backlog: 64)
        // A server process accepts (and authenticates) until the listener closes.
        let server = MP.Process(name: "mp-bench-listener") {
            while let connection = try? listener.accept() { connection.close() }
        }
        try server.start()
        defer {
            listener.close()
            try? server.kill()
            try? server.join()
        }
        var metrics: [Metric] = []
        metrics.append(Metric(name: "listener_connect_auth_us", value: try medianOf(rounds, warmup: 1) {
            let start = now()
            for _ in 0..<connections {
                let connection = try MP.Client(address: listener.address, authkey: key)
                connection.close()
            }
            return (now() - start) / Double(connections) * 1e6
        }, higherIsBetter: false))
        metrics.append(Metric(name: "manager_dict_setget_us", value: try managerDictSetGet(rounds: rounds, pairs: quick ? 2_000 : 10_000),
                              higherIsBetter: false))
        if let output = runPython(pythonScript(connections: connections, rounds: rounds, pairs: quick ? 2_000 : 10_000)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: [:])
        }
        return metrics
    }

    /// A child sets then gets one small item through a dict proxy: the
    /// median time of one set-and-get, in µs (CPython's `Manager().dict()` alike).
    static func managerDictSetGet(rounds: Int, pairs: Int) throws -> Double {
        let manager = try MP.Manager()
        defer { manager.shutdown() }
        let dict: MP.DictProxy<String, Int> = try manager.dict()
        let result = try MP.Queue<Double>()
        let child = MP.Process(name: "mp-bench-manager-client") {
            func once() throws -> Double {
                let start = now()
                for i in 0..<pairs {
                    try dict.set("k", i)
                    _ = try dict["k"]
                }
                return (now() - start) / Double(pairs) * 1e6
            }
            _ = try once()
            var samples: [Double] = []
            for _ in 0..<rounds { samples.append(try once()) }
            try result.put(samples.sorted()[samples.count / 2])
        }
        try child.start()
        let median = try result.get(timeout: 300)
        try child.join()
        return median
    }

    /// CPython's Listener in a separate process (as ours), its Client here;
    /// its manager's dict from a child, as ours.
    static func pythonScript(connections: Int, rounds: Int, pairs: Int) -> String {
        """
        import multiprocessing as mp, statistics, time, os, tempfile
        from multiprocessing.connection import Listener, Client
        key = b'benchmark key'
        def serve(address):
            with Listener(address, authkey=key, backlog=64) as listener:
                while True:
                    try:
                        listener.accept().close()
                    except Exception:
                        pass
        def dict_client(d, results):
            def once():
                s = time.perf_counter()
                for i in range(\(pairs)):
                    d['k'] = i
                    d['k']
                return (time.perf_counter() - s) / \(pairs) * 1e6
            once()
            results.put(statistics.median([once() for _ in range(\(rounds))]))
        if __name__ == '__main__':
            address = os.path.join(tempfile.mkdtemp(), 'listener')
            server = mp.get_context('fork').Process(target=serve, args=(address,), daemon=True)
            server.start()
            while not os.path.exists(address): time.sleep(0.01)
            def connect():
                s = time.perf_counter()
                for _ in range(\(connections)): Client(address, authkey=key).close()
                return (time.perf_counter() - s) / \(connections) * 1e6
            connect()
            print('listener_connect_auth_us', statistics.median([connect() for _ in range(\(rounds))]), flush=True)
            server.terminate()
            with mp.Manager() as manager:
                d = manager.dict()
                results = mp.Queue()
                client = mp.get_context('fork').Process(target=dict_client, args=(d, results))
                client.start()
                print('manager_dict_setget_us', results.get(), flush=True)
                client.join()
        """
    }
}
