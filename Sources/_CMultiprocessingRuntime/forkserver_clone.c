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

// In the child of a test clone: does glibc see the new thread id?
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

int cmp_forkserver_prepare(void) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    pid_t *self = (pid_t *)pthread_self();
    pid_t *found = NULL;
    for (int i = 0; i < 1024; i++) {
        if (self[i] != tid) continue;
        if (found) { errno = ENOTSUP; return -1; } // ambiguous: do not guess
        found = &self[i];
    }
    if (!found) { errno = ENOTSUP; return -1; }
    glibc_tid_slot = found;
    if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_length) != 0) return -1;
    // One trial child (the server's own, without CLONE_PARENT) checks the repair.
    struct cmp_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_CHILD_SETTID;
    args.child_tid = (uint64_t)(uintptr_t)glibc_tid_slot;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) return -1;
    if (pid == 0) {
        syscall(SYS_set_robust_list, robust_head, robust_length);
        _exit(glibc_sees_new_tid() ? 0 : 1);
    }
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    errno = ENOTSUP;
    return -1;
}

pid_t cmp_forkserver_clone(void) { return clone_parent(); }

