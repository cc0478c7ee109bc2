import MultiprocessingPlatform
// The limits' kinds of failure (``MP/WorkerLimits``), as MP.Error values.
extension MP.Error {
    /// A worker went over its memory cap; `how` says what the kernel did.
    static func memoryLimitExceeded(bytes: Int, enforcement: String, who: String, how: String) -> MP.Error {
        MP.Error(.memoryLimit, "memory limit of \(MP.WorkerLimits.describe(bytes: bytes)) exceeded (\(enforcement)): \(who) \(how)")
    }

    /// A task used more CPU time than its limit.
    static func cpuLimitExceeded(seconds: Double, who: String) -> MP.Error {
        MP.Error(.cpuLimit, "CPU time limit of \(seconds) s exceeded (RLIMIT_CPU): \(who) was killed by SIGXCPU")
    }

    /// A task ran past its hard time limit.
    static func timeLimitExceeded(seconds: Double, who: String) -> MP.Error {
        MP.Error(.timeout, "time limit of \(seconds) s exceeded: \(who) was killed")
    }

    /// A task reached its soft time limit, was cancelled, and threw.
    static func softTimeLimitReached(seconds: Double, type: String, description: String) -> MP.Error {
        MP.Error(.timeout, "soft time limit of \(seconds) s reached: the task was cancelled and threw \(type): \(description)",
                 errorType: type)
    }

    /// A limit this kernel or user cannot enforce.
    static func limitUnsupported(_ what: String, _ why: String, underlying: MP.OSError? = nil) -> MP.Error {
        MP.Error(.unsupported, "\(what) cannot be enforced here: \(why)", underlying: underlying)
    }

    /// A worker could not put its limits in place as it started.
    static func limitsNotApplied(_ why: String, underlying: MP.OSError? = nil) -> MP.Error {
        MP.Error(.startFailed, "the process could not apply its limits: \(why)", underlying: underlying)
    }
}
