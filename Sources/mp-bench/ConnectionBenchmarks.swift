#if canImport(Glibc)
import Glibc
#endif
import Multiprocessing

/// Issue 11's figures: authenticated connections, beside CPython's.
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
        if let output = runPython(pythonScript(connections: connections, rounds: rounds)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: [:])
        }
        return metrics
    }

    /// CPython's Listener in a separate process (as ours), its Client here.
    static func pythonScript(connections: Int, rounds: Int) -> String {
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
        """
    }
}
