#define _GNU_SOURCE
#include "_CMultiprocessingShims.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

typedef _Bool (*bool_fn)(void);

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int cmp_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int cmp_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int cmp_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0); }

int cmp_get_child_subreaper(void) {
    int value = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &value, 0, 0, 0) != 0) return -1;
    return value;
}

pid_t cmp_gettid(void) { return (pid_t)syscall(SYS_gettid); }


int cmp_dispatch_is_multithreaded(void) {
    bool_fn forked = (bool_fn)dlsym(RTLD_DEFAULT, "_dispatch_is_fork_of_multithreaded_parent");
    bool_fn threaded = (bool_fn)dlsym(RTLD_DEFAULT, "_dispatch_is_multithreaded");
    return (forked && forked()) || (threaded && threaded()) ? 1 : 0;
}

int cmp_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cmp_epoll_add_readable_oneshot(int epfd, int fd, uint64_t token) {
    struct epoll_event event = {.events = EPOLLIN | EPOLLONESHOT, .data = {.u64 = token}};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int cmp_epoll_rearm_readable_oneshot(int epfd, int fd, uint64_t token) {
    struct epoll_event event = {.events = EPOLLIN | EPOLLONESHOT, .data = {.u64 = token}};
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event);
}

int cmp_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int cmp_epoll_wait_tokens(int epfd, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epfd, events, capacity, timeout_ms);
    for (int i = 0; i < count; i++) tokens[i] = events[i].data.u64;
    return count;
}

int cmp_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cmp_eventfd_semaphore(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE); }

void cmp_stdout_set_buffering(int mode) { setvbuf(stdout, NULL, mode, 0); }

// The child path calls libc through pointers the dynamic linker fills in at
// load time. A direct call goes through a lazily bound PLT entry, and a
// function the parent never called (_exit, prctl, on_exit, ...) would be bound
// anew, symbol lookup and all, in every child: a quarter of a child's page
// faults in a measurement of an empty target.
static int (*const volatile prctl_fn)(int, ...) = prctl;
static pid_t (*const volatile getppid_fn)(void) = getppid;
static pid_t (*const volatile getpid_fn)(void) = getpid;
static int (*const volatile kill_fn)(pid_t, int) = kill;
static int (*const volatile sigmask_fn)(int, const sigset_t *, sigset_t *) = pthread_sigmask;
static int (*const volatile on_exit_fn)(void (*)(int, void *), void *) = on_exit;
static int (*const volatile fflush_fn)(FILE *) = fflush;
static int (*const volatile sigaction_fn)(int, const struct sigaction *, struct sigaction *) = sigaction;
static void (*const volatile fpurge_fn)(FILE *) = __fpurge;
static void (*const volatile exit_fn)(int) = _exit;
// Children send (results, queue items) where their parent often only receives.
static ssize_t (*const volatile sendmsg_fn)(int, const struct msghdr *, int) = sendmsg;

ssize_t cmp_sendmsg(int fd, const struct msghdr *message, int flags) { return sendmsg_fn(fd, message, flags); }

static int exit_guard_installed; // inherited: a grandchild already has the guard

void cmp_child_after_fork(int daemon, pid_t parent, void (*exit_guard)(int status, void *arg)) {
    if (daemon) {
        prctl_fn(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid_fn() != parent) kill_fn(getpid_fn(), SIGKILL);
    }
    sigset_t empty;
    memset(&empty, 0, sizeof empty);
    sigmask_fn(SIG_SETMASK, &empty, NULL);
    fpurge_fn(stdout);
    fpurge_fn(stderr);
    cmp_child_executor_install();
    if (!exit_guard_installed && exit_guard) {
        exit_guard_installed = 1;
        on_exit_fn(exit_guard, NULL);
    }
}

// ------------------------------------------------------- naming a crash --

// The parent prepared the name before the fork: the child only keeps its
// address (every page a child writes is a page fault).
static const char *crash_name = "";
static const int crash_signals[] = {SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT};
#define CRASH_SIGNALS (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction previous_actions[CRASH_SIGNALS];
static int crash_handlers_installed; // inherited: a grandchild only renames

static size_t append(char *out, size_t at, size_t capacity, const char *text, size_t length) {
    for (size_t i = 0; i < length && at < capacity; i++) out[at++] = text[i];
    return at;
}

static size_t append_number(char *out, size_t at, size_t capacity, long value) {
    char digits[24];
    size_t count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value > 0 && count < sizeof digits);
    while (count > 0 && at < capacity) out[at++] = digits[--count];
    return at;
}

// Async-signal-safe: formats into a stack buffer and writes it once, then
// hands the signal to whoever handled it before (the Swift runtime's
// backtracer, or the default action), so the crash goes on as it would have.
static void name_the_crash(int signal) {
    char line[320];
    size_t at = append(line, 0, sizeof line, "Process ", 8);
    at = append(line, at, sizeof line, crash_name, strlen(crash_name));
    at = append(line, at, sizeof line, " (pid ", 6);
    at = append_number(line, at, sizeof line, (long)getpid_fn());
    at = append(line, at, sizeof line, ") crashed with signal ", 22);
    at = append_number(line, at, sizeof line, signal);
    at = append(line, at, sizeof line, "\n", 1);
    ssize_t ignored = write(STDERR_FILENO, line, at);
    (void)ignored;
    for (size_t i = 0; i < CRASH_SIGNALS; i++) {
        if (crash_signals[i] == signal) sigaction(signal, &previous_actions[i], NULL);
    }
    // A synchronous fault happens again on return, now under the previous
    // action; abort() and raise() need the signal sent again.
    if (signal == SIGABRT || signal == SIGTRAP) raise(signal);
}

void cmp_child_name_crashes(const char *name) {
    crash_name = name;
    if (crash_handlers_installed) return;
    crash_handlers_installed = 1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = name_the_crash;
    action.sa_flags = SA_RESETHAND | SA_NODEFER;
    for (size_t i = 0; i < CRASH_SIGNALS; i++) sigaction_fn(crash_signals[i], &action, &previous_actions[i]);
}

void cmp_child_exit(int code) {
    fflush_fn(NULL);
    exit_fn(code);
    __builtin_unreachable();
}

void cmp_close_all_except(int keep) {
    if (keep > 3) syscall(SYS_close_range, 3, keep - 1, 0);
    syscall(SYS_close_range, keep + 1, ~0U, 0);
}

#include <sched.h>

int cmp_affinity_cpu_count(void) {
    for (int cpus = 1024; cpus <= (1 << 20); cpus *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)cpus);
        if (!set) return -1;
        size_t size = CPU_ALLOC_SIZE((size_t)cpus);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count;
        }
        CPU_FREE(set);
        if (errno != EINVAL) return -1; // EINVAL: the kernel's mask is larger
    }
    return -1;
}

int cmp_set_affinity(pid_t pid, const int *cpus, int count) {
    int highest = 0;
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0) { errno = EINVAL; return -1; }
        if (cpus[i] > highest) highest = cpus[i];
    }
    cpu_set_t *set = CPU_ALLOC((size_t)highest + 1);
    if (!set) return -1;
    size_t size = CPU_ALLOC_SIZE((size_t)highest + 1);
    CPU_ZERO_S(size, set);
    for (int i = 0; i < count; i++) CPU_SET_S((size_t)cpus[i], size, set);
    int result = sched_setaffinity(pid, size, set);
    CPU_FREE(set);
    return result;
}

int cmp_get_affinity(pid_t pid, int *cpus, int capacity) {
    for (int max = 1024; max <= (1 << 20); max *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)max);
        if (!set) return -1;
        size_t size = CPU_ALLOC_SIZE((size_t)max);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(pid, size, set) == 0) {
            int count = 0;
            for (int cpu = 0; cpu < max && count < capacity; cpu++) {
                if (CPU_ISSET_S((size_t)cpu, size, set)) cpus[count++] = cpu;
            }
            CPU_FREE(set);
            return count;
        }
        CPU_FREE(set);
        if (errno != EINVAL) return -1;
    }
    return -1;
}
