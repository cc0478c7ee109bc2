#ifndef CMP_SHIMS_H
#define CMP_SHIMS_H

#include <stdint.h>
#include <sys/types.h>
#include <pthread.h>
#include <sys/socket.h>

// The thin C shim of the Multiprocessing module: the Linux calls Swift's
// Glibc module cannot reach (prctl, raw syscalls, variadic calls), the
// after-fork registry and the child-side executor. Only the Multiprocessing
// module imports it; the Swift side wraps each call once (Platform/).
// Each call returns what the kernel returns: -1 with errno set on failure.

// ---------------------------------------------------------------------------
// The after-fork registry (fork_registry.c).
// ---------------------------------------------------------------------------

/// A mutex and condition variable that every forked child re-initialises.
typedef struct cmp_fork_safe_mutex {
    pthread_mutex_t mutex;
    pthread_cond_t condition; // CLOCK_MONOTONIC
    struct cmp_fork_safe_mutex *previous, *next;
} cmp_fork_safe_mutex;

/// Initialises `lock` and links it into the registry (installing the atfork
/// handlers on first use).
void cmp_fork_safe_mutex_init(cmp_fork_safe_mutex *lock);
/// Unlinks `lock` and destroys it.
void cmp_fork_safe_mutex_destroy(cmp_fork_safe_mutex *lock);
/// The function a forked child runs after every registered lock is reset.
void cmp_fork_registry_set_child_handler(void (*handler)(void));
/// How many locks are registered (for tests).
long cmp_fork_registry_count(void);

// ---------------------------------------------------------------------------
// Linux calls.
// ---------------------------------------------------------------------------

/// Everything a freshly forked child does at the system level, in one place
/// (every page of code or data a child touches costs a page fault):
/// - with `daemon`, `PR_SET_PDEATHSIG(SIGKILL)`, and if `parent` is already
///   gone, death by SIGKILL right away (the signal would never come);
/// - an empty signal mask (the forking thread may have blocked SIGTERM);
/// - what the parent buffered in stdout and stderr is dropped (another thread
///   may have refilled the buffers between the parent's flush and the fork:
///   the parent prints that, the child must not print it again);
/// - the child executor's hooks (see below);
/// - once per line of descent, `on_exit(exit_guard)`, so that `exit(n)` in the
///   child runs the library's exit handling, not the parent's atexit handlers.
void cmp_child_after_fork(int daemon, pid_t parent, void (*exit_guard)(int status, void *arg));

/// In a child: a crash (SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT)
/// first writes `Process NAME (pid N) crashed with signal S` to stderr, then
/// goes on under the handler that was there before (the Swift runtime's
/// backtracer, or the default action). `name` must stay valid for the
/// child's life (the parent prepares it before the fork; it is not copied).
void cmp_child_name_crashes(const char *name);

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
/// Looks the runtime's hooks up (in the parent, once): 1 when found, 0 when
/// this runtime lacks them (concurrency then cannot run in a forked child).
int cmp_child_executor_resolve(void);
void cmp_child_executor_install(void);

/// The waiting thread runs global jobs while it waits: `help_begin` before
/// the work is enqueued, `help_until(done)` to run jobs until `*done`, and
/// `help_end(done)` (from the work's end) to set it and wake the helper.
void cmp_child_executor_help_begin(void);
void cmp_child_executor_help_until(int *done);
void cmp_child_executor_help_end(int *done);
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
// Start methods: spawn, the forkserver, descriptors that cross.
// ---------------------------------------------------------------------------

/// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
#define CMP_MAX_PASSED_DESCRIPTORS 253

/// `posix_spawn(path, argv, envp)` (NULL `envp`: this process's `environ`) with `fds[i]` at descriptor `3 + i` in
/// the child and every other descriptor from 3 up closed; an empty signal
/// mask, and with `reset_signals` every disposition back to its default.
/// Every `fds[i]` must be at least `3 + count`. Returns 0 or an errno.
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

/// In the forkserver, before its first child: finds where glibc keeps the
/// thread id and the robust-mutex list, and checks with one trial child that a
/// raw `clone3` child can be repaired. Returns 0 or an errno (ENOTSUP).
int cmp_forkserver_prepare(void);

/// `clone3(CLONE_PARENT)`: a child of the server's parent (the client), with
/// glibc's thread id and robust list repaired. Returns like `fork`.
pid_t cmp_forkserver_clone(void);

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`; 1 when the parent is still `parent`
/// (0: it died before the call, and the signal will never come).
int cmp_die_with_parent(pid_t parent);

/// Names the process (its `comm`, as `ps` and `top` show it) after `argv0`'s
/// last path component: a process executed from `/proc/self/exe` is named "exe".
void cmp_name_after_program(const char *argv0);

/// Runs the constructors that follow `hook` in this image's `.init_array`
/// (they would never run: the caller never returns to the C library).
void cmp_run_constructors_after(const void *hook, int argc, char **argv, char **envp);

/// In a launched child's main thread: serves libdispatch's main queue
/// (MainActor work) until `done_fd` is readable.
void cmp_serve_main_queue_until(int done_fd);

// ---------------------------------------------------------------------------
// Named tasks and build identity.
// ---------------------------------------------------------------------------

/// Calls `found` with the type metadata of every non-generic type, in every
/// loaded image, that conforms to `Multiprocessing.MP.NamedTask`, and
/// `skipped` with the name of every generic one. Returns -1 when the Swift
/// runtime cannot enumerate its metadata sections.
int cmp_discover_named_tasks(void (*found)(const void *metadata, void *context),
                             void (*skipped)(const char *type_name, void *context), void *context);

/// The executable's GNU build id (its `NT_GNU_BUILD_ID` note), up to
/// `capacity` bytes; 0 when it has none.
size_t cmp_executable_build_id(uint8_t *out, size_t capacity);


// ---- listening and connecting sockets (listener.c) ----

/// A listening Unix stream socket at `name` (a path, or an abstract-namespace
/// name when `abstract`), bound with the permission bits `mode`; -errno.
int cmp_listen_unix(const char *name, int abstract, int backlog, unsigned int mode);
/// A stream socket connected to the Unix socket `name`; -errno.
int cmp_connect_unix(const char *name, int abstract);
/// A listening TCP socket on `host` (empty: every address) and `port` (0: any);
/// the port it got in `bound_port`. -errno, or -(1000 + EAI code) for a name that does not resolve.
int cmp_listen_tcp(const char *host, int port, int backlog, int *bound_port);
/// A TCP stream socket connected to `host`:`port` (IPv4 or IPv6); -errno or -(1000 + EAI code).
int cmp_connect_tcp(const char *host, int port);
/// `cmp_connect_tcp` that fails with `ETIMEDOUT` after `timeout_ms` (negative: no limit of ours).
int cmp_connect_tcp_within(const char *host, int port, int timeout_ms);
/// The text of a getaddrinfo failure returned as -(1000 + code) by the calls above (pass the positive 1000 + code).
const char *cmp_address_error(int code);
/// `getrandom(buffer, count, 0)`: the count filled, or -1 with errno.
long cmp_getrandom(void *buffer, unsigned long count);
/// `accept4(listener, SOCK_CLOEXEC)`, EINTR retried; the peer's "host port" in `peer` for TCP. -errno.
int cmp_accept(int listener, char *peer, int peer_capacity);

#endif
