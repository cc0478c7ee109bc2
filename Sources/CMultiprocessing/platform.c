#define _GNU_SOURCE
#include "CMultiprocessing.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
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

int cmp_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int cmp_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0); }

int cmp_get_child_subreaper(void) {
    int value = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &value, 0, 0, 0) != 0) return -1;
    return value;
}

pid_t cmp_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int cmp_on_exit(void (*handler)(int status, void *arg)) { return on_exit(handler, NULL); }

double cmp_bench_raw_fork_exit_wait_us(int iterations) {
    if (iterations <= 0) return 0;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < iterations; i++) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid < 0) return -1;
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    return ns / 1000.0 / iterations;
}

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

int cmp_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int cmp_epoll_wait_tokens(int epfd, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epfd, events, capacity, timeout_ms);
    for (int i = 0; i < count; i++) tokens[i] = events[i].data.u64;
    return count;
}

int cmp_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

void cmp_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
