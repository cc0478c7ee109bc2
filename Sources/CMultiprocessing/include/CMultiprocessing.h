#ifndef C_MULTIPROCESSING_H
#define C_MULTIPROCESSING_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include "CMPSync.h"

// ---------------------------------------------------------------------------
// Linux calls Swift's Glibc module does not expose (prctl, raw syscalls).
// Each returns what the kernel returns: -1 with errno set on failure.
// ---------------------------------------------------------------------------

/// Everything a freshly forked child does at the system level, in one place
/// (every page of code or data a child touches costs a page fault):
/// - with `daemon`, `PR_SET_PDEATHSIG(SIGKILL)`, and if `parent` is already
///   gone, death by SIGKILL right away (the signal would never come);
/// - an empty signal mask (the forking thread may have blocked SIGTERM);
/// - the child executor's hooks (see below);
/// - once per line of descent, `on_exit(exit_guard)`, so that `exit(n)` in the
///   child runs the library's exit handling, not the parent's atexit handlers.
void cmp_child_after_fork(int daemon, pid_t parent, void (*exit_guard)(int status, void *arg));

/// The last step of a forked child: flush stdio, `_exit(code)`.
__attribute__((noreturn)) void cmp_child_exit(int code);

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid` exits.
int cmp_pidfd_open(pid_t pid);
/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signal a process with no pid-reuse race.
int cmp_pidfd_send_signal(int pidfd, int sig);
/// `prctl(PR_SET_CHILD_SUBREAPER, on)`.
int cmp_set_child_subreaper(int on);
/// `prctl(PR_GET_CHILD_SUBREAPER)`: 1, 0, or -1 on error.
int cmp_get_child_subreaper(void);
/// The calling thread's kernel id.
pid_t cmp_gettid(void);

/// Makes stdout line-buffered (Python's `-u` spirit: lines appear as printed, even into a pipe).
void cmp_stdout_line_buffered(void);
/// Closes every descriptor from 3 up except `keep` (for a helper process that must not hold others' pipes).
void cmp_close_all_except(int keep);
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
/// `epoll_ctl(EPOLL_CTL_DEL)`.
int cmp_epoll_remove(int epfd, int fd);
/// `epoll_wait`, reporting only the tokens of the ready descriptors.
int cmp_epoll_wait_tokens(int epfd, uint64_t *tokens, int capacity, int timeout_ms);

// ---------------------------------------------------------------------------
// Swift concurrency in a forked child.
//
// Threads do not survive fork, so the runtime's global executor (Dispatch on
// Linux) never runs another job in a child forked from a process that used it.
// `cmp_child_executor_install` points the runtime's enqueue hooks at a small
// child-local pool (worker threads, one serial main-actor thread, one timer
// thread), created lazily on first use. Call it right after fork in the child;
// calling it again in a grandchild resets the inherited (dead) pool. Only the
// hook pointers are written at fork; queues, threads and the Swift executors
// are set up on the first job.
// ---------------------------------------------------------------------------
void cmp_child_executor_install(void);
/// A function run once in each child, on the first job, before it is queued:
/// the Swift side replaces the runtime's default executors there.
void cmp_child_executor_set_swift_setup(void (*function)(void));
/// Enqueue a job (a Swift `UnownedJob`) on the child pool, on the child's
/// main-actor thread, or on the child pool after `delay_ns` nanoseconds.
/// The Swift executors installed in the child forward here.
void cmp_child_executor_enqueue(void *job);
void cmp_child_executor_enqueue_main(void *job);
void cmp_child_executor_enqueue_after(void *job, uint64_t delay_ns);
void cmp_child_executor_enqueue_main_after(void *job, uint64_t delay_ns);
/// Whether the calling thread is the child's main-actor thread.
int cmp_child_executor_on_main_thread(void);
/// Whether libdispatch is loaded and had started its worker threads in this
/// process (or, after fork, in the parent it was copied from: the flag is
/// inherited). Looked up at run time, so there is no link dependency.
int cmp_dispatch_is_multithreaded(void);

// ---------------------------------------------------------------------------
// Benchmark floors: the raw C cost of what the library wraps.
// ---------------------------------------------------------------------------

/// Mean microseconds of `fork()` + `_exit(0)` in the child + `waitpid` in the
/// parent, over `iterations`, called from the current process.
double cmp_bench_raw_fork_exit_wait_us(int iterations);
/// Mean nanoseconds of lock + unlock of a robust process-shared mutex.
double cmp_bench_robust_mutex_ns(long iterations);
/// Framed 16-byte messages per second from a child over a raw socketpair.
double cmp_bench_socketpair_small_msgs_per_s(long count);
/// Megabytes per second of `size`-byte messages from a child over a raw socketpair.
double cmp_bench_socketpair_bandwidth_MBps(long messages, long size);

#endif
