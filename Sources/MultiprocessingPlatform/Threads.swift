import Glibc
import SystemPackage

/// Runs `body` on a new detached thread: the library's helper threads (the
/// epoll watcher, the forker, a pool's dispatcher, blocking waits behind async
/// calls) are plain pthreads, so they work in forked children, where Dispatch
/// and the concurrency pool's threads do not exist.
@discardableResult
package func startThread(_ body: @escaping @Sendable () -> Void) -> Result<Void, OSError> {
    final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    let result = pthread_create(&thread, nil, { context in
        Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
        return nil
    }, context)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        return .failure(OSError("pthread_create", errno: Errno(rawValue: result)))
    }
    pthread_detach(thread)
    return .success(())
}
