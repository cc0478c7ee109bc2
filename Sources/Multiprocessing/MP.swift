/// Python's `multiprocessing` and `os` process calls, in Swift, on Linux.
///
/// `MP` is a caseless namespace, the Swift spelling of
/// `import multiprocessing as mp`: `MP.Process`, `MP.currentProcess()`,
/// `MP.fork()`, `MP.wait()`. Keeping the Python names inside a namespace lets a
/// file import both Foundation (which has its own `Process` and `Pipe`) and
/// `Multiprocessing` and still name every type unqualified-ambiguity free.
///
/// ```swift
/// import Multiprocessing
///
/// let p = MP.Process(name: "worker") { print("hello from", MP.getpid()) }
/// try p.start()
/// try p.join()
/// print(p.exitCode!)   // 0
/// ```
public enum MP {}
