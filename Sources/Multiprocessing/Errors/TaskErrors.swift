// Named tasks' kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// No ``MP/NamedTask`` type of this build has this name.
    @usableFromInline
    static func unknownTask(_ name: String) -> MP.Error {
        MP.Error(.unknownTask, "no named task '\(name)' in this build (declare a type conforming to MP.NamedTask with that name)")
    }

    /// Two types claim one name; the task is refused rather than guessed.
    @usableFromInline
    static func duplicateName(_ name: String, types: [String]) -> MP.Error {
        MP.Error(.unknownTask, "named task '\(name)' is declared by more than one type: \(types.sorted().joined(separator: ", ")); give each a unique `static var name`")
    }

    /// The type cannot be found by name in another process (a generic type).
    @usableFromInline
    static func notDiscoverable(type: String, reason: String) -> MP.Error {
        MP.Error(.unknownTask, "\(type) cannot run as a named task: \(reason)")
    }

    /// The arguments did not decode as the task's type (another build, or a corrupt message).
    @usableFromInline
    static func badArguments(task: String, reason: String) -> MP.Error {
        MP.Error(.cannotCross, "the arguments of named task '\(task)' do not decode: \(reason)")
    }

    /// The message came from a different build of the program: the wire
    /// format is positional, so its bytes cannot be trusted to mean the same.
    @usableFromInline
    static func buildMismatch(expected: String, found: String) -> MP.Error {
        MP.Error(.cannotCross, "the task comes from another build of the program (its build \(found), this build \(expected)); run the same executable on both sides")
    }

    /// A value that cannot cross into another process (a closure, a
    /// library object outside a start, too many descriptors).
    @usableFromInline
    static func cannotCross(_ what: String) -> MP.Error {
        MP.Error(.cannotCross, what)
    }

    /// A closure target (or a ``MP/Process`` subclass's `run()`) under a
    /// start method other than fork: only a fork carries a closure.
    @usableFromInline
    static func needsFork(process: String, method: some CustomStringConvertible) -> MP.Error {
        MP.Error(.cannotCross, "process '\(process)' runs a closure, which only the fork start method can carry, not \(method); declare an MP.NamedTask and pass it as the target")
    }

    /// The start method failed to start a child.
    @usableFromInline
    static func startFailed(method: some CustomStringConvertible, reason: String) -> MP.Error {
        MP.Error(.startFailed, "the \(method) start method could not start a process: \(reason)")
    }
}
