#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// ------------------------------------------------------------ the forkserver --
//
// C because it reads glibc's private thread descriptor and calls clone3,
// which glibc does not wrap, and because the child runs before Swift may.
//
// The server is a fresh, single-threaded copy of the program. It creates each
// child with clone3(CLONE_PARENT), so the child is the *client's* child: the
// client reaps it, opens its pidfd, signals it. A raw clone bypasses glibc's
// fork(), which in the child stores the new thread id in the thread
// descriptor and registers the robust-mutex list with the kernel; robust
// process-shared mutexes (every library lock) depend on both. The server
// learns where glibc keeps them before its first clone; the child has the
// kernel write its tid there (CLONE_CHILD_SETTID) and registers the list again.

static pid_t *glibc_tid_slot;
static void *robust_head;
static size_t robust_length;

#ifndef CLONE_PARENT
#define CLONE_PARENT 0x00008000
#endif

struct cmp_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static pid_t clone_parent(void) {
    struct cmp_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT | CLONE_CHILD_SETTID;
    args.child_tid = (uint64_t)(uintptr_t)glibc_tid_slot;
    args.exit_signal = 0; // CLONE_PARENT takes the parent's exit signal: SIGCHLD to the client
    long result = syscall(SYS_clone3, &args, sizeof args);
    if (result == 0) syscall(SYS_set_robust_list, robust_head, robust_length);
    return (pid_t)result;
}

// In the child of a trial clone: does glibc see the new thread id?
static int glibc_sees_new_tid(void) {
    pthread_mutexattr_t attributes;
    pthread_mutex_t mutex;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&mutex, &attributes);
    pthread_mutex_lock(&mutex);
    int owner = mutex.__data.__owner;
    pthread_mutex_unlock(&mutex);
    void *head = NULL;
    size_t length = 0;
    syscall(SYS_get_robust_list, 0, &head, &length);
    return owner == (int)syscall(SYS_gettid) && head == robust_head;
}

int cmp_forkserver_tid_candidates(pid_t **slots, int capacity, int words) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    pid_t *self = (pid_t *)pthread_self();
    int count = 0;
    for (int i = 0; i < words && count < capacity; i++) {
        if (self[i] == tid) slots[count++] = &self[i];
    }
    return count;
}

// Whether `slot` is where glibc keeps the thread id: a trial child (this
// process's own, without CLONE_PARENT) has the kernel write its tid there and
// checks that glibc then sees it. A wrong slot may hold anything else, so the
// child may crash: it does so quietly (no crash report, no core), and the
// slot is refused. Returns 1, 0, or -1 with errno set (clone3 failed).
static int tid_slot_works(pid_t *slot) {
    struct cmp_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_CHILD_SETTID;
    args.child_tid = (uint64_t)(uintptr_t)slot;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) return -1;
    if (pid == 0) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP};
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
        syscall(SYS_set_robust_list, robust_head, robust_length);
        _exit(glibc_sees_new_tid() ? 0 : 1);
    }
    int status = 0;
    pid_t waited;
    do { waited = waitpid((pid_t)pid, &status, 0); } while (waited < 0 && errno == EINTR);
    // Not waited for here (another waiter took it): no answer, so no slot.
    return waited == (pid_t)pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int cmp_forkserver_pick_tid_slot(pid_t *const *slots, int count) {
    if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_length) != 0) return -1;
    for (int i = 0; i < count; i++) {
        int works = tid_slot_works(slots[i]);
        if (works < 0) return -1;
        if (works) return i;
    }
    errno = ENOTSUP;
    return -1;
}

int cmp_forkserver_prepare(void) {
    // The descriptor's words that hold the thread id: usually one, but
    // whatever lies after glibc's own fields may hold the same number by
    // chance (a new user's program met one), so each is tried.
    pid_t *slots[8];
    int count = cmp_forkserver_tid_candidates(slots, 8, 1024);
    int picked = cmp_forkserver_pick_tid_slot(slots, count);
    if (picked < 0) return -1;
    glibc_tid_slot = slots[picked];
    return 0;
}

pid_t cmp_forkserver_clone(void) { return clone_parent(); }

