import Glibc
import _CMultiprocessingShims

/// `epoll`: the readiness sets of the descriptor watcher and the listener.
/// Each descriptor is watched for readability once (`EPOLLONESHOT`) and
/// tagged with a caller's token.
extension Sys {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    package static func epollCreate() throws(OSError) -> Int32 {
        try check("epoll_create1") { cmp_epoll_create() }
    }

    /// `epoll_ctl(EPOLL_CTL_ADD)` of `fd` for one readiness (`EPOLLIN | EPOLLONESHOT`), tagged `token`.
    package static func epollAddReadableOnce(_ epfd: Int32, _ fd: Int32, token: UInt64) throws(OSError) {
        _ = try check("epoll_ctl(EPOLL_CTL_ADD)") { cmp_epoll_add_readable_oneshot(epfd, fd, token) }
    }

    /// `epoll_ctl(EPOLL_CTL_MOD)`: watches `fd` (added one-shot) for one more readiness.
    package static func epollRearmReadableOnce(_ epfd: Int32, _ fd: Int32, token: UInt64) throws(OSError) {
        _ = try check("epoll_ctl(EPOLL_CTL_MOD)") { cmp_epoll_rearm_readable_oneshot(epfd, fd, token) }
    }

    /// `epoll_ctl(EPOLL_CTL_DEL)`. A descriptor that is not in the set
    /// (`ENOENT`: it fired and was dropped already) is not an error.
    package static func epollRemove(_ epfd: Int32, _ fd: Int32) throws(OSError) {
        if cmp_epoll_remove(epfd, fd) == 0 { return }
        let code = errno
        if code == ENOENT { return }
        throw failure("epoll_ctl(EPOLL_CTL_DEL)", code)
    }

    /// `epoll_wait` into `tokens` (the ready descriptors' tokens), waiting at
    /// most `timeoutMilliseconds` (-1: no limit, 0: only look). Returns how
    /// many are ready; a signal ends the wait early with 0 (the caller looks again).
    package static func epollWait(_ epfd: Int32, tokens: UnsafeMutableBufferPointer<UInt64>, timeoutMilliseconds: Int32) throws(OSError) -> Int {
        let count = cmp_epoll_wait_tokens(epfd, tokens.baseAddress, Int32(tokens.count), timeoutMilliseconds)
        if count >= 0 { return Int(count) }
        let code = errno
        if code == EINTR { return 0 }
        throw failure("epoll_wait", code)
    }
}

/// The process environment: read and changed only here.
extension Sys {
    /// `getenv(name)`; nil when unset.
    package static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// `unsetenv(name)`.
    package static func unsetEnvironment(_ name: String) {
        _ = Glibc.unsetenv(name)
    }
}
