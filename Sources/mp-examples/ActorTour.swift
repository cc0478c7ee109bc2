import Distributed
import Dispatch
import Glibc
import Multiprocessing

// Ray's actors, in the language: a `@ray.remote` class is a `distributed
// actor`, `Counter.remote()` is `host.place(Counter.self)`, and
// `counter.increment.remote()` with `ray.get` is `try await counter.increment()`.
// A counter and a bank account live in host processes; worker processes of a
// pool call them through references passed as their tasks' arguments; then
// the bank's host is killed on purpose.

distributed actor Counter: MP.PlaceableActor {                       // @ray.remote class Counter:
    typealias ActorSystem = MP.ActorSystem
    var count = 0
    init(actorSystem: MP.ActorSystem) { self.actorSystem = actorSystem }
    distributed func increment() -> Int {                            //     def increment(self): ...
        count += 1
        return count
    }
    distributed func read() -> Int { count }
}

distributed actor BankAccount: MP.PlaceableActor {
    typealias ActorSystem = MP.ActorSystem
    struct InsufficientFunds: Error, CustomStringConvertible {
        let balance: Int
        let asked: Int
        var description: String { "balance \(balance), \(asked) asked" }
    }

    var balance = 0
    init(actorSystem: MP.ActorSystem) { self.actorSystem = actorSystem }
    distributed func deposit(_ amount: Int) -> Int {
        balance += amount
        return balance
    }
    distributed func withdraw(_ amount: Int) throws -> Int {
        guard amount <= balance else { throw InsufficientFunds(balance: balance, asked: amount) }
        balance -= amount
        return balance
    }
    distributed func read() -> Int { balance }
}

/// A customer in a worker process: ten visits, ten deposits of 10.
struct Customer: MP.NamedTask {
    var visits: Counter
    var account: BankAccount
    func run() async throws -> Int {
        for _ in 0..<10 {
            _ = try await visits.increment()
            _ = try await account.deposit(10)
        }
        return Int(getpid())
    }
}

func actorsAcrossProcesses() throws {
    try waitFor {
        let system = MP.ActorSystem.shared
        let front = try system.host(in: .newProcess(.forkserver))    // a process for actors
        let bank = try system.host(in: .newProcess(.forkserver))
        let visits = try await front.place(Counter.self)             // visits = Counter.remote()
        let account = try await bank.place(BankAccount.self)
        let pool = try MP.TaskPool(processes: 4, startMethod: .forkserver)
        let customers = (0..<4).map { _ in Customer(visits: visits, account: account) }
        let pids = try await pool.map(customers, chunksize: 1)
        print("customers served:", pids.count, "- all in other processes:", pids.allSatisfy { $0 != Int(getpid()) })
        print("visits:", try await visits.read())                   // ray.get(visits.read.remote())
        print("balance:", try await account.read())
        do {
            _ = try await account.withdraw(1_000)
        } catch {
            print("withdraw 1000:", (error as? MP.Error)?.message ?? "\(error)")
        }
        kill(bank.pid!, SIGKILL)                                     // the bank's host dies
        do {
            _ = try await account.read()
        } catch let error as MP.Error {
            print("after the bank's host was killed: \(error.code)")
        }
        print("the counter's host lives on: visits", try await visits.increment())
        pool.close()
        try await pool.join()
        front.shutdown()
        bank.shutdown()
    }
}

/// Runs an async body to its end from this example's synchronous entry.
func waitFor(_ body: @escaping @Sendable () async throws -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var failure: (any Error)?
    Task {
        do { try await body() } catch { failure = error }
        done.signal()
    }
    done.wait()
    if let failure { throw failure }
}
