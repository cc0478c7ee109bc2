/// How a pool worker's death is said in the error of the task it was
/// running: its name, pid, and the signal or exit code. Both pools say it alike.
enum WorkerDeath {
    static func describe(of process: MP.Process) -> String {
        switch process.exitStatus {
        case .signaled(let signal, _)?: return "\(process.name) (pid \(process.pid ?? -1)) was killed by \(signal)"
        case .exited(let code)?: return "\(process.name) (pid \(process.pid ?? -1)) exited with \(code)"
        default: return "\(process.name): unknown status"
        }
    }
}
