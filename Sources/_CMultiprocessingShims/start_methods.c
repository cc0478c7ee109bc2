#define _GNU_SOURCE
#include "_CMultiprocessingShims.h"

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

// ------------------------------------------------------------------ spawn --

int cmp_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const int *fds, int count, int reset_signals) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int error = posix_spawn_file_actions_init(&actions);
    if (error) return error;
    error = posix_spawnattr_init(&attributes);
    if (error) { posix_spawn_file_actions_destroy(&actions); return error; }
    // The caller placed every descriptor at or above 3 + count, so these
    // dup2s never overwrite a source that is still to be copied.
    for (int i = 0; i < count && !error; i++) error = posix_spawn_file_actions_adddup2(&actions, fds[i], 3 + i);
    if (!error) error = posix_spawn_file_actions_addclosefrom_np(&actions, 3 + count);
    short flags = POSIX_SPAWN_SETSIGMASK;
    sigset_t empty;
    sigemptyset(&empty);
    if (!error) error = posix_spawnattr_setsigmask(&attributes, &empty);
    if (!error && reset_signals) {
        // Dispositions the parent set to "ignore" survive exec; a fresh program starts with defaults.
        sigset_t all;
        sigfillset(&all);
        flags |= POSIX_SPAWN_SETSIGDEF;
        error = posix_spawnattr_setsigdefault(&attributes, &all);
    }
    if (!error) error = posix_spawnattr_setflags(&attributes, flags);
    if (!error) error = posix_spawn(pid, path, &actions, &attributes, argv, envp ? envp : environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return error;
}

int cmp_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int cmp_dup_above(int fd, int minimum) { return fcntl(fd, F_DUPFD_CLOEXEC, minimum); }

// --------------------------------------------------- descriptors over a socket --

ssize_t cmp_send_with_descriptors(int socket, const void *bytes, size_t length, const int *fds, int count, int flags) {
    if (count < 0 || count > CMP_MAX_PASSED_DESCRIPTORS) { errno = EINVAL; return -1; }
    struct iovec part = {.iov_base = (void *)bytes, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * CMP_MAX_PASSED_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1};
    if (count > 0) {
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)count);
    }
    ssize_t sent;
    do { sent = sendmsg(socket, &message, MSG_NOSIGNAL | flags); } while (sent < 0 && errno == EINTR);
    return sent;
}

ssize_t cmp_receive_with_descriptors(int socket, void *bytes, size_t length, int *fds, int capacity, int *count, int flags) {
    struct iovec part = {.iov_base = bytes, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * CMP_MAX_PASSED_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    ssize_t received;
    do { received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC | flags); } while (received < 0 && errno == EINTR);
    *count = 0;
    if (received < 0) return received;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *passed = (int *)CMSG_DATA(header);
        for (int i = 0; i < n; i++) {
            if (*count < capacity) fds[(*count)++] = passed[i];
            else close(passed[i]); // more than asked for: never leak them
        }
    }
    if (message.msg_flags & MSG_CTRUNC) { errno = EMSGSIZE; for (int i = 0; i < *count; i++) close(fds[i]); *count = 0; return -1; }
    return received;
}

// ------------------------------------------------------------ the forkserver --
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
        if (found) return ENOTSUP; // ambiguous: do not guess
        found = &self[i];
    }
    if (!found) return ENOTSUP;
    glibc_tid_slot = found;
    if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_length) != 0) return errno;
    // One trial child (the server's own, without CLONE_PARENT) checks the repair.
    struct cmp_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_CHILD_SETTID;
    args.child_tid = (uint64_t)(uintptr_t)glibc_tid_slot;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) return errno;
    if (pid == 0) {
        syscall(SYS_set_robust_list, robust_head, robust_length);
        _exit(glibc_sees_new_tid() ? 0 : 1);
    }
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {}
    return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : ENOTSUP;
}

pid_t cmp_forkserver_clone(void) { return clone_parent(); }

int cmp_die_with_parent(pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    return getppid() == parent;
}

// ------------------------------------------- the main queue of a launched child --
//
// A launched child runs its task on the Swift concurrency runtime, and its
// main thread must serve the main queue (MainActor work) until the task ends.
// dispatch_main() cannot be used: it parks the main thread with pthread_exit,
// which unwinds through the loader's frames (the child runs from .init_array).
// Foundation's run loop serves the main queue on Linux through these two
// libdispatch entry points; they are looked up, and without them the thread
// only waits.

#include <dlfcn.h>
#include <poll.h>

void cmp_serve_main_queue_until(int done_fd) {
    int (*handle)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "_dispatch_get_main_queue_handle_4CF");
    void (*drain)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_dispatch_main_queue_callback_4CF");
    int main_fd = (handle && drain) ? handle() : -1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = done_fd, .events = POLLIN}, {.fd = main_fd, .events = POLLIN}};
        int ready = poll(fds, main_fd >= 0 ? 2 : 1, -1);
        if (ready < 0) continue; // EINTR
        if (fds[0].revents) return;
        if (main_fd >= 0 && fds[1].revents) {
            uint64_t count;
            ssize_t ignored = read(main_fd, &count, sizeof count);
            (void)ignored;
            drain(NULL);
        }
    }
}

// ------------------------------------------------ the constructors after ours --
//
// A launched child (or the forkserver) takes over from the library's
// .init_array hook and never returns to the C library, so the constructors
// placed after the hook in the same image would never run. In a program
// linked with -static-stdlib those are the runtime's, Dispatch's and
// Foundation's own (static archives are linked after the program's objects).
// Running them here gives the child what `main` would have found.

typedef void (*cmp_constructor)(int, char **, char **);
extern cmp_constructor __init_array_start[] __attribute__((weak, visibility("hidden")));
extern cmp_constructor __init_array_end[] __attribute__((weak, visibility("hidden")));

void cmp_run_constructors_after(const void *hook, int argc, char **argv, char **envp) {
    if (!__init_array_start || !__init_array_end) return;
    cmp_constructor *entry = __init_array_start;
    while (entry < __init_array_end && (const void *)*entry != hook) entry++;
    if (entry == __init_array_end) return; // not in this image's array: nothing is known to follow
    for (entry++; entry < __init_array_end; entry++) {
        if (*entry && (uintptr_t)*entry != (uintptr_t)-1) (*entry)(argc, argv, envp);
    }
}

void cmp_name_after_program(const char *argv0) {
    if (!argv0) return;
    const char *slash = strrchr(argv0, '/');
    prctl(PR_SET_NAME, slash ? slash + 1 : argv0, 0, 0, 0); // the kernel keeps 15 bytes
}
