import Glibc

extension MP {
    /// A POSIX signal: Python's `signal.SIGTERM` and friends.
    ///
    /// ```swift
    /// try MP.kill(MP.getpid(), .kill)   // os.kill(os.getpid(), 9)
    /// try MP.kill(pid, MP.Signal(rawValue: 9))
    /// ```
    public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let hangup = Signal(rawValue: SIGHUP)
        public static let interrupt = Signal(rawValue: SIGINT)
        public static let quit = Signal(rawValue: SIGQUIT)
        public static let illegalInstruction = Signal(rawValue: SIGILL)
        public static let trap = Signal(rawValue: SIGTRAP)
        public static let abort = Signal(rawValue: SIGABRT)
        public static let bus = Signal(rawValue: SIGBUS)
        public static let floatingPoint = Signal(rawValue: SIGFPE)
        public static let kill = Signal(rawValue: SIGKILL)
        public static let user1 = Signal(rawValue: SIGUSR1)
        public static let segmentationFault = Signal(rawValue: SIGSEGV)
        public static let user2 = Signal(rawValue: SIGUSR2)
        public static let pipe = Signal(rawValue: SIGPIPE)
        public static let alarm = Signal(rawValue: SIGALRM)
        public static let terminate = Signal(rawValue: SIGTERM)
        public static let child = Signal(rawValue: SIGCHLD)
        public static let `continue` = Signal(rawValue: SIGCONT)
        public static let stop = Signal(rawValue: SIGSTOP)
        public static let terminalStop = Signal(rawValue: SIGTSTP)

        private static let names: [Int32: String] = [
            SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
            SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
            SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
            SIGCHLD: "SIGCHLD", SIGCONT: "SIGCONT", SIGSTOP: "SIGSTOP", SIGTSTP: "SIGTSTP",
        ]

        /// `SIGKILL`, `SIGTERM`, ... or `signal N` for one without a name here.
        public var description: String { Self.names[rawValue] ?? "signal \(rawValue)" }
    }

    /// How a child ended (or changed state), decoded from a `wait` status.
    ///
    /// Python's `os.wait()` hands back the raw number (`256` for `exit(1)`);
    /// ``rawValue`` is that number, and the cases say what it means.
    public enum ExitStatus: Hashable, Sendable, CustomStringConvertible {
        /// Exited normally with this code.
        case exited(Int32)
        /// Killed by a signal.
        case signaled(Signal, coreDumped: Bool)
        /// Stopped by a signal (only with ``MP/WaitOptions/untraced``).
        case stopped(Signal)
        /// Continued by `SIGCONT` (only with ``MP/WaitOptions/continued``).
        case continued

        /// Decodes a raw `wait` status.
        public init(rawValue status: Int32) {
            let low = status & 0x7f
            if low == 0 {
                self = .exited((status >> 8) & 0xff)
            } else if status == 0xffff {
                self = .continued
            } else if low == 0x7f {
                self = .stopped(Signal(rawValue: (status >> 8) & 0xff))
            } else {
                self = .signaled(Signal(rawValue: low), coreDumped: status & 0x80 != 0)
            }
        }

        /// The raw status, as Python's `os.wait()` returns it (`exit(1)` is `256`).
        public var rawValue: Int32 {
            switch self {
            case .exited(let code): return (code & 0xff) << 8
            case .signaled(let signal, let core): return signal.rawValue | (core ? 0x80 : 0)
            case .stopped(let signal): return (signal.rawValue << 8) | 0x7f
            case .continued: return 0xffff
            }
        }

        /// Python's `Process.exitcode` convention: the exit code, or `-N` after signal N;
        /// nil for a stopped or continued child.
        public var exitCode: Int32? {
            switch self {
            case .exited(let code): return code
            case .signaled(let signal, _): return -signal.rawValue
            case .stopped, .continued: return nil
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): return "exited(\(code))"
            case .signaled(let signal, let core): return "signaled(\(signal)\(core ? ", core dumped" : ""))"
            case .stopped(let signal): return "stopped(\(signal))"
            case .continued: return "continued"
            }
        }
    }
}

extension MP.ExitStatus {
    /// "exited with 0", "was killed by SIGKILL": the log's wording.
    var logDescription: String {
        switch self {
        case .exited(let code): return "exited with \(code)"
        case .signaled(let signal, _): return "was killed by \(signal)"
        default: return "ended: \(self)"
        }
    }
}
