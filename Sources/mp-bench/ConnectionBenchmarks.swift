import Glibc
import Multiprocessing

/// Issue 11's figures: authenticated connections and a manager's dict, beside CPython's.
enum ConnectionBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 5 : 9
        let connections = quick ? 100 : 300
        // CPython's TCP connections wait for delayed ACKs (no TCP_NODELAY):
        // about 44 ms each, so fewer of them make a round.
        let tcpConnections = quick ? 10 : 30
        let pairs = quick ? 2_000 : 10_000
        let key = Array("benchmark key".utf8)
        let unix = try MP.Listener(authkey: key, backlog: 64)
        let tcp = try MP.Listener(address: .tcp(host: "127.0.0.1", port: 0), authkey: key, backlog: 64)
        // Server processes accept (and authenticate) until their listener closes.
        let servers = [unix, tcp].map { listener in
            MP.Process(name: "mp-bench-listener") {
                while let connection = try? listener.accept() { connection.close() }
            }
        }
        for server in servers { try server.start() }
        let manager = try MP.Manager()
        let python = PeerRounds(python: pythonScript(connections: connections, tcpConnections: tcpConnections, pairs: pairs))
        defer {
            python?.finish()
            manager.shutdown()
            unix.close()
            tcp.close()
            for server in servers {
                try? server.kill()
                try? server.join()
            }
        }
        func connect(_ listener: MP.Listener, _ count: Int) throws -> Double {
            let start = now()
            for _ in 0..<count { try MP.Client(address: listener.address, authkey: key).close() }
            return (now() - start) / Double(count) * 1e6
        }
        var metrics: [Metric] = []
        metrics += try alternating("listener_connect_auth_us", rounds: rounds, python: python) { try connect(unix, connections) }
        metrics += try alternating("listener_connect_auth_tcp_us", rounds: rounds, python: python) { try connect(tcp, tcpConnections) }
        let dict: MP.DictProxy<String, Int> = try manager.dict()
        metrics += try alternating("manager_dict_setget_us", rounds: rounds, python: python) {
            let start = now()
            for i in 0..<pairs {
                try dict.set("k", i)
                _ = try dict["k"]
            }
            return (now() - start) / Double(pairs) * 1e6
        }
        return metrics
    }

    /// CPython's Listeners (a Unix socket and TCP) in processes of their own,
    /// as ours, its Client here; a set and a get through its manager's dict;
    /// one round of a figure each time its name arrives on standard input.
    static func pythonScript(connections: Int, tcpConnections: Int, pairs: Int) -> String {
        """
        import multiprocessing as mp, time, os, sys, tempfile
        from multiprocessing.connection import Listener, Client
        key = b'benchmark key'
        def serve(address, addresses):
            with Listener(address, authkey=key, backlog=64) as listener:
                addresses.put(listener.address)
                while True:
                    try:
                        listener.accept().close()
                    except Exception:
                        pass
        def connect(address, count):
            s = time.perf_counter()
            for _ in range(count): Client(address, authkey=key).close()
            return (time.perf_counter() - s) / count * 1e6
        if __name__ == '__main__':
            ctx = mp.get_context('fork')
            addresses = ctx.Queue()
            servers = [ctx.Process(target=serve, args=(a, addresses), daemon=True)
                       for a in (os.path.join(tempfile.mkdtemp(), 'listener'), ('127.0.0.1', 0))]
            for s in servers: s.start()
            found = [addresses.get(), addresses.get()]
            unix = next(a for a in found if isinstance(a, str))
            tcp = next(a for a in found if not isinstance(a, str))
            manager = mp.Manager()
            d = manager.dict()
            def setget():
                s = time.perf_counter()
                for i in range(\(pairs)):
                    d['k'] = i
                    d['k']
                return (time.perf_counter() - s) / \(pairs) * 1e6
            rounds = {
                'listener_connect_auth_us': lambda: connect(unix, \(connections)),
                'listener_connect_auth_tcp_us': lambda: connect(tcp, \(tcpConnections)),
                'manager_dict_setget_us': setget,
            }
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                if name not in rounds: break
                print(name, rounds[name](), flush=True)
            for s in servers: s.terminate()
            manager.shutdown()
        """
    }
}
