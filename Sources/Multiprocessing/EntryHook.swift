import Glibc
import _CMultiprocessingRuntime
import MultiprocessingPlatform

/// The library's hook before `main`: a function pointer in `.init_array`,
/// which the dynamic loader calls with `argc` and `argv` in every process of
/// the program, before `main` and while the process has one thread.
///
/// In an ordinary run it compares one argument and returns. In a process the
/// library started with a flag, it never returns:
/// - `PROGRAM --swift-multiprocessing-spawn N`: a spawned child; descriptors
///   3..<3+N are its launch message and its objects (``LaunchedChild``);
/// - `PROGRAM --swift-multiprocessing-forkserver PID bound|inherited`: the
///   forkserver, on descriptor 3 (``ForkServer``);
/// - `PROGRAM --swift-multiprocessing-resource-tracker 3`: the resource
///   tracker, reading descriptor 3 (``ResourceTracker``);
/// - `PROGRAM --swift-multiprocessing-segment-keeper 3 OWNER`: the helper of
///   a ``MP/SharedMemoryManager`` (``SegmentKeeper``).
///
/// It sits at the top of the module, above every layer: the one place that
/// names every kind of process the library starts from a fresh program.
///
/// So a user's program needs no line in `main` for either start method, and
/// a program that never uses them pays one string comparison at startup.
enum EntryHook {
    typealias Arguments = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?

    static func run(_ argc: Int32, _ argv: Arguments, _ envp: Arguments) {
        PopenTypes.resolve = { $0.popen } // the start methods, for every process's start()
        BinaryDecoder.actorSystem = { MP.ActorSystem.shared } // for actor references among decoded values
        guard argc >= 3, let argv, let flag = argv[1], let value = argv[2] else { return }
        guard Sys.cString(flag, hasPrefix: "--swift-multiprocessing-") else { return }
        // This process never returns to the C library: first the constructors
        // that would have run after this hook (with -static-stdlib, those of
        // the runtime, Dispatch and Foundation).
        cmp_run_constructors_after(unsafeBitCast(multiprocessingEntryHook, to: UnsafeRawPointer.self), argc, argv, envp)
        cmp_name_after_program(argv[0])
        let name = String(cString: flag)
        let number = Int32(String(cString: value)) ?? -1
        switch name {
        case Spawner.flag where number >= 1 && number <= 253:
            LaunchedChild.run(descriptors: (0..<number).map { 3 + $0 })
        case ResourceTracker.flag where number == 3:
            ResourceTracker.serve(3)
        case SegmentKeeper.flag where number == 3 && argc >= 4:
            SegmentKeeper.serve(3, owner: argv[3].flatMap { pid_t(String(cString: $0)) } ?? 0)
        case ForkServer.flag where number > 0:
            let boundNow = argc >= 4 && argv[3].map { String(cString: $0) == "bound" } == true
            ForkServer.serve(socket: 3, parent: number, boundNow: boundNow) {
                // The library's own servers, started under forkserver by default.
                ServingProcess.warmUp { ActorHostTask(address: .unix(""), authkey: [], report: $0) }
                ServingProcess.warmUp { ManagerServerTask(address: .unix(""), authkey: [], report: $0) }
            }
        default:
            return
        }
    }
}

@section(".init_array") @used
let multiprocessingEntryHook: @convention(c) (Int32, EntryHook.Arguments, EntryHook.Arguments) -> Void = { argc, argv, envp in
    EntryHook.run(argc, argv, envp)
}
