#ifndef CMP_SHIMS_H
#define CMP_SHIMS_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

// The thin C shim of the platform layer: one wrapper per Linux call that
// Swift's Glibc module cannot reach (raw syscalls, prctl and fcntl's variadic
// forms, CMSG and CPU_SET macros, epoll_event's packed layout). Nothing else
// lives here: the runtime pieces that must be C are in _CMultiprocessingRuntime.
// Only MultiprocessingPlatform imports it, and wraps each function once (Sys).
//
// One convention: each function returns what the call returns, and -1 with
// errno set on failure (the void ones cannot fail).

// ---------------------------------------------------------------------------
// Linux calls.
// ---------------------------------------------------------------------------

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid` exits.
int cmp_pidfd_open(pid_t pid);
/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signal a process with no pid-reuse race.
int cmp_pidfd_send_signal(int pidfd, int sig);
/// `prctl(PR_SET_CHILD_SUBREAPER, on)`.
int cmp_set_child_subreaper(int on);
/// `prctl(PR_GET_CHILD_SUBREAPER)`: 1, 0, or -1 on error.
int cmp_get_child_subreaper(void);

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: no exec of this process or its children gains privileges.
int cmp_set_no_new_privs(void);
/// `unshare(CLONE_NEWNET)`, and where that is refused for want of privilege,
/// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (unprivileged user namespaces):
/// this process gets a network namespace of its own, with no interface up.
int cmp_unshare_network(void);
/// Whether `cmp_unshare_network` works here: tried in a forked child, which
/// only calls it and `_exit`s (async-signal-safe). 0, or the child's errno.
int cmp_probe_unshare_network(void);

/// `setvbuf(stdout, NULL, mode, 0)`: `_IOLBF` makes lines appear as printed, even into a pipe.
void cmp_stdout_set_buffering(int mode);
/// Closes every descriptor from 3 up except `keep` (for a helper process that must not hold others' pipes).
void cmp_close_all_except(int keep);
/// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE)`.
int cmp_eventfd_semaphore(void);
/// `pipe2(fds, O_CLOEXEC)`.
int cmp_pipe_cloexec(int fds[2]);
/// `sendmsg` through a pointer bound when the library is loaded: a child that
/// sends where its parent never did would otherwise resolve the symbol
/// (lazy binding: a lookup across every loaded library) in each child.
ssize_t cmp_sendmsg(int fd, const struct msghdr *message, int flags);
/// `epoll_create1(EPOLL_CLOEXEC)`.
int cmp_epoll_create(void);
/// Watches `fd` for readability, once (`EPOLLIN | EPOLLONESHOT`), tagged with `token`.
int cmp_epoll_add_readable_oneshot(int epfd, int fd, uint64_t token);
/// `epoll_ctl(EPOLL_CTL_MOD)`: watches `fd` (added one-shot) for one more readiness.
int cmp_epoll_rearm_readable_oneshot(int epfd, int fd, uint64_t token);
/// `epoll_ctl(EPOLL_CTL_DEL)`.
int cmp_epoll_remove(int epfd, int fd);
/// `epoll_wait`, reporting only the tokens of the ready descriptors.
int cmp_epoll_wait_tokens(int epfd, uint64_t *tokens, int capacity, int timeout_ms);

// ---------------------------------------------------------------------------
// Start methods: spawn, the forkserver, descriptors that cross.
// ---------------------------------------------------------------------------

/// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
#define CMP_MAX_PASSED_DESCRIPTORS 253

/// `posix_spawn(path, argv, envp)` (NULL `envp`: this process's `environ`) with `fds[i]` at descriptor `3 + i` in
/// the child and every other descriptor from 3 up closed; an empty signal
/// mask, and with `reset_signals` every disposition back to its default.
/// Every `fds[i]` must be at least `3 + count`. Returns 0, or -1 with errno set.
int cmp_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const int *fds, int count, int reset_signals);

/// The CPUs in this thread's affinity mask (`sched_getaffinity`, `CPU_COUNT_S`); -1 on failure.
int cmp_affinity_cpu_count(void);

/// `sched_setaffinity(pid)` to the `count` CPUs listed; 0 or -1 with errno.
int cmp_set_affinity(pid_t pid, const int *cpus, int count);

/// `sched_getaffinity(pid)`: up to `capacity` CPU numbers into `cpus`; their count, or -1 with errno.
int cmp_get_affinity(pid_t pid, int *cpus, int capacity);

/// `memfd_create(name, MFD_CLOEXEC)`.
int cmp_memfd(const char *name);

/// `fcntl(fd, F_DUPFD_CLOEXEC, minimum)`.
int cmp_dup_above(int fd, int minimum);

/// `sendmsg` of `bytes` with `fds` attached (SCM_RIGHTS), EINTR retried, no
/// SIGPIPE; `flags` adds to `MSG_NOSIGNAL` (`MSG_DONTWAIT`).
ssize_t cmp_send_with_descriptors(int socket, const void *bytes, size_t length, const int *fds, int count, int flags);

/// `recvmsg` into `bytes`; passed descriptors (close-on-exec) land in `fds`
/// and their number in `count`. Descriptors beyond `capacity` are closed.
/// `flags` adds to `MSG_CMSG_CLOEXEC` (`MSG_DONTWAIT`).
ssize_t cmp_receive_with_descriptors(int socket, void *bytes, size_t length, int *fds, int capacity, int *count, int flags);

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`; 1 when the parent is still `parent`
/// (0: it died before the call, and the signal will never come).
int cmp_die_with_parent(pid_t parent);

/// `accept4(listener, address, length, SOCK_CLOEXEC)` (Swift's Glibc module lacks accept4).
int cmp_accept4_cloexec(int listener, struct sockaddr *address, socklen_t *length);
/// `getrandom(buffer, count, 0)`: the count filled, or -1 with errno.
long cmp_getrandom(void *buffer, unsigned long count);

#endif
