#if canImport(Glibc)
import Glibc
#endif

/// What a forked ``MP/Process`` child does, from the fork to `_exit`.
enum ChildBootstrap {
    static func run(_ process: MP.Process, parentPid: Int32, daemon: Bool) -> Never {
        if daemon {
            // Die with the parent even if it is SIGKILLed. If the parent died
            // between fork and prctl, no signal will come: die the same way now.
            try? Sys.setParentDeathSignal(SIGKILL)
            if Sys.getppid != parentPid { Glibc.kill(Sys.getpid, SIGKILL) }
        }
        Runtime.shared.afterForkInChild(process: process)
        var code: Int32 = 0
        do {
            try process.run()
        } catch let request as MP.ExitRequest {
            code = request.code
        } catch {
            Runtime.reportUncaught(error, processName: process.name)
            code = 1
        }
        Runtime.shared.exitProcess(code)
    }
}
