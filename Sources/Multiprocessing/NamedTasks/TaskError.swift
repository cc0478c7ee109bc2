extension MP {
    /// Why a named task could not be sent, found or started.
    public enum TaskError: Error, Hashable, Sendable, CustomStringConvertible {
        /// No ``MP/NamedTask`` type of this build has this name.
        case unknownTask(String)
        /// Two types claim one name; the task is refused rather than guessed.
        case duplicateName(String, types: [String])
        /// The type cannot be found by name in another process (a generic type).
        case notDiscoverable(type: String, reason: String)
        /// The arguments did not decode as the task's type (another build, or a corrupt message).
        case badArguments(task: String, reason: String)
        /// The message came from a different build of the program: the wire
        /// format is positional, so its bytes cannot be trusted to mean the same.
        case buildMismatch(expected: String, found: String)
        /// A value that cannot cross into another process (a closure, a
        /// library object outside a start, too many descriptors).
        case cannotCross(String)
        /// A closure target (or a ``MP/Process`` subclass's `run()`) under a
        /// start method other than fork: only a fork carries a closure.
        case needsFork(process: String, method: StartMethod)
        /// The start method failed to start a child.
        case startFailed(method: StartMethod, reason: String)

        public var description: String {
            switch self {
            case .unknownTask(let name):
                return "no named task '\(name)' in this build (declare a type conforming to MP.NamedTask with that name)"
            case .duplicateName(let name, let types):
                return "named task '\(name)' is declared by more than one type: \(types.sorted().joined(separator: ", ")); give each a unique `static var name`"
            case .notDiscoverable(let type, let reason):
                return "\(type) cannot run as a named task: \(reason)"
            case .badArguments(let task, let reason):
                return "the arguments of named task '\(task)' do not decode: \(reason)"
            case .buildMismatch(let expected, let found):
                return "the task comes from another build of the program (its build \(found), this build \(expected)); run the same executable on both sides"
            case .cannotCross(let what):
                return what
            case .needsFork(let process, let method):
                return "process '\(process)' runs a closure, which only the fork start method can carry, not \(method); declare an MP.NamedTask and pass it as the target"
            case .startFailed(let method, let reason):
                return "the \(method) start method could not start a process: \(reason)"
            }
        }
    }
}
