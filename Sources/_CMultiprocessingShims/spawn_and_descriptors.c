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
    if (error) { errno = error; return -1; }
    error = posix_spawnattr_init(&attributes);
    if (error) { posix_spawn_file_actions_destroy(&actions); errno = error; return -1; }
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
    if (error) { errno = error; return -1; } // posix_spawn returns its error: one convention here
    return 0;
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

int cmp_die_with_parent(pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    return getppid() == parent;
}

