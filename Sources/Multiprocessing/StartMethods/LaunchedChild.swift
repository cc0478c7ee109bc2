import Glibc
import _CMultiprocessingRuntime
import MultiprocessingPlatform

/// A spawned or forkserver child, from its first instruction to its exit:
/// reads its launch message, becomes the process it was told to be, runs the
/// named task, and exits with Python's codes (0; 1 after an uncaught error;
/// the code of ``MP/ExitRequest``).
enum LaunchedChild {
    /// `descriptors[0]`: the launch message; the rest: the task's objects.
    static func run(descriptors: [Int32]) -> Never {
        guard let launchFile = descriptors.first else { fail("no launch message was passed") }
        let info: LaunchInfo
        do {
            info = try LaunchInfo(decoding: try Sys.readWholeFile(launchFile))
        } catch {
            fail("the launch message is unreadable: \(error)")
        }
        Sys.close(launchFile)
        // A daemon dies with its parent; if the parent is already gone, now.
        if info.daemon && !Sys.dieWithParent(info.parentPid) { try? Sys.kill(Sys.getpid, SIGKILL) }
        if info.lineBuffered { MP.setLineBufferedOutput() }
        LibraryLog.adopt(info.logLevel)
        ProcessAuthKey.adopt(info.authkey)
        let process = MP.Process(launchedAs: info.processName, identity: info.identity, daemon: info.daemon, parentPid: info.parentPid)
        Runtime.shared.becomeLaunchedChild(process: process, parentPid: info.parentPid, parentName: info.parentName)
        crashLabel = Sys.permanentCString(info.processName)
        cmp_child_name_crashes(crashLabel)
        let objects = ReceivedDescriptors(Swift.Array(descriptors.dropFirst()))
        let task: any MP.NamedTask
        do {
            task = try resolve(info, objects)
        } catch {
            objects.closeAll()
            Runtime.reportUncaught(error, processName: info.processName)
            Runtime.shared.exitProcess(1)
        }
        objects.closeAll()
        Runtime.shared.exitProcess(run(task, processName: info.processName))
    }

    /// Runs the task to its end; returns the exit code.
    ///
    /// With the child executors (the runtime's hooks, as in a forked child)
    /// the task's jobs run on child-local threads started on demand: a child
    /// that runs one short task starts one thread, where the runtime's
    /// Dispatch-based executor would start three with 8 MiB stacks (a third
    /// of a forkserver child's life in a measurement). Dispatch itself works
    /// here as in any fresh program. Without the hooks, the task runs on the
    /// default executor while the main thread serves the main queue.
    private static func run(_ task: any MP.NamedTask, processName: String) -> Int32 {
        let outcome = Outcome(task: task)
        let body = { () async in
            do {
                _ = try await outcome.task.run()
            } catch let request as MP.ExitRequest {
                outcome.code = request.code
            } catch {
                Runtime.reportUncaught(error, processName: processName)
                outcome.code = 1
            }
        }
        if ChildExecutors.isAvailable {
            ChildExecutors.prepare
            cmp_child_executor_install()
            try? ChildConcurrency.runBlocking(body)
            return outcome.code
        }
        let done: Int32
        do { done = try Sys.eventSemaphore() } catch { fail("no eventfd: \(error)") }
        Task.detached {
            await body()
            Sys.giveEvent(done)
        }
        cmp_serve_main_queue_until(done)
        return outcome.code
    }

    private final class Outcome: @unchecked Sendable {
        let task: any MP.NamedTask
        var code: Int32 = 0
        init(task: any MP.NamedTask) { self.task = task }
    }

    nonisolated(unsafe) private static var crashLabel: UnsafeMutablePointer<CChar>?

    /// The task `info` names, with its arguments: what a child checks before running anything.
    static func resolve(_ info: LaunchInfo, _ objects: ReceivedDescriptors) throws -> any MP.NamedTask {
        guard info.build == BuildIdentity.current else {
            throw MP.Error.buildMismatch(expected: BuildIdentity.current, found: info.build)
        }
        let type = try TaskRegistry.shared.task(named: info.task)
        return try decodeTask(type, info, objects)
    }

    private static func decodeTask<T: MP.NamedTask>(_ type: T.Type, _ info: LaunchInfo, _ objects: ReceivedDescriptors) throws -> any MP.NamedTask {
        do {
            return try WireFormat.decode(T.self, from: info.arguments, descriptors: objects)
        } catch {
            // An object that cannot cross says so itself; anything else is the arguments' fault.
            if let error = error as? MP.Error, error.code == .cannotCross { throw error }
            throw MP.Error.badArguments(task: info.task, reason: "\(error)")
        }
    }

    private static func fail(_ reason: String) -> Never {
        Sys.writeBestEffort(STDERR_FILENO, "swift-multiprocessing child \(Sys.getpid): \(reason)\n")
        Sys.exitImmediately(1)
    }
}
