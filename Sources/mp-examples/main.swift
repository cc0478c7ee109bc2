import Glibc
import ArgumentParser
import Multiprocessing

/// `mp-examples`: the Python tutorial programs, translated.
struct ExamplesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-examples",
        abstract: "Runs the Swift translations of the Python multiprocessing tutorial programs.",
        discussion: "With no argument, runs every program in order, each as its own program under a heading."
    )

    @Argument(help: "'list' to list the programs, or the name of one program to run.")
    var program: String?

    func validate() throws {
        if let program, program != "list", !examples.contains(where: { $0.name == program }) {
            throw ValidationError("unknown program '\(program)'; 'mp-examples list' lists them")
        }
    }

    func run() throws {
        switch program {
        case "list"?:
            for example in examples { print(example.name.padding(16), example.title) }
        case let name?:
            try examples.first { $0.name == name }!.run()
        case nil:
            try runTour()
        }
    }

    /// Runs each program as a separate process of this executable, so each has
    /// its own main process and its own exit, as a Python script would.
    func runTour() throws {
        var failed: [String] = []
        for example in examples {
            print("=== \(example.name): \(example.title)")
            let status = try runSelf(example.name)
            print("--- \(example.name) exited with \(status)\n")
            if status != .exited(0) { failed.append(example.name) }
        }
        if !failed.isEmpty { throw ValidationError("programs failed: \(failed.joined(separator: ", "))") }
    }

    func runSelf(_ name: String) throws -> MP.ExitStatus {
        fflush(nil)
        var pid: pid_t = 0
        let arguments = [CommandLine.arguments[0], name]
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let result = posix_spawn(&pid, "/proc/self/exe", nil, nil, &argv, environ)
        guard result == 0 else { throw ValidationError("posix_spawn failed: \(result)") }
        return try MP.waitpid(pid)!.status
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

// Lines appear as they are printed, also into a pipe, so the processes' output interleaves.
MP.setLineBufferedOutput()
ExamplesCommand.main()
