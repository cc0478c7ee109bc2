// The system-level steps of a forked child, and naming its crash. C because
// they run in the child before any Swift code may (no allocation, no lock,
// no lazily bound symbol) and because a signal handler must be
// async-signal-safe.
#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef _Bool (*bool_fn)(void);

// Whether libdispatch started threads: looked up, so there is no link dependency.
int cmp_dispatch_is_multithreaded(void) {
    bool_fn forked = (bool_fn)dlsym(RTLD_DEFAULT, "_dispatch_is_fork_of_multithreaded_parent");
    bool_fn threaded = (bool_fn)dlsym(RTLD_DEFAULT, "_dispatch_is_multithreaded");
    return (forked && forked()) || (threaded && threaded()) ? 1 : 0;
}

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

