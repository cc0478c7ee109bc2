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
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>


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

int cmp_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

int cmp_unshare_network(void) {
    if (unshare(CLONE_NEWNET) == 0) return 0;
    if (errno != EPERM) return -1;
    return unshare(CLONE_NEWUSER | CLONE_NEWNET);
}

int cmp_probe_unshare_network(void) {
    pid_t child = fork();
    if (child < 0) return errno;
    if (child == 0) _exit(cmp_unshare_network() == 0 ? 0 : (errno & 0xff));
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) return errno;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : EPERM;
}

int cmp_get_child_subreaper(void) {
    int value = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &value, 0, 0, 0) != 0) return -1;
    return value;
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

// `sendmsg` through a pointer the dynamic linker fills in at load time: a
// child that sends where its parent never did would otherwise bind the
// symbol lazily (a lookup across every loaded library) in each child.
static ssize_t (*const volatile sendmsg_fn)(int, const struct msghdr *, int) = sendmsg;

ssize_t cmp_sendmsg(int fd, const struct msghdr *message, int flags) { return sendmsg_fn(fd, message, flags); }

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

#include <sys/random.h>

long cmp_getrandom(void *buffer, unsigned long count) { return (long)getrandom(buffer, count, 0); }

int cmp_accept4_cloexec(int listener, struct sockaddr *address, socklen_t *length) {
    return accept4(listener, address, length, SOCK_CLOEXEC);
}
