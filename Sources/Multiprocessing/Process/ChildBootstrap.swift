#if canImport(Glibc)
import Glibc
#endif
import _CMultiprocessingShims
import _CMultiprocessingSync

/// What a forked ``MP/Process`` child does, from the fork to `_exit`.
enum ChildBootstrap {
    /// `crashLabel`: the process's name as a C string, made by the parent
    /// before the fork (building it in the child would cost page faults).
    static func run(_ process: MP.Process, parentPid: Int32, daemon: Bool, crashLabel: [CChar]) -> Never {
        // A daemon dies with its parent, even a SIGKILLed one (PR_SET_PDEATHSIG);
        // signal mask, concurrency hooks and the exit guard are reset here too.
        cmp_child_after_fork(daemon ? 1 : 0, parentPid, Runtime.exitGuard)
        Runtime.shared.afterForkInChild(process: process, parentPid: parentPid)
        // A crash (fatalError, an index out of range) says which process it was.
        crashLabel.withUnsafeBufferPointer { cmp_child_name_crashes($0.baseAddress) } // the array lives until _exit
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
