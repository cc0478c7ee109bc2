// Raw C floors for mp-bench: what the library's operations cost with nothing
// on top, measured in the benchmark process itself.
#define _GNU_SOURCE
#include "_CMultiprocessingBench.h"
#include "_CMultiprocessingSync.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double cmp_bench_robust_mutex_ns(long iterations) {
    pthread_mutex_t *mutex = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mutex == MAP_FAILED) return -1;
    cmp_mutex_init(mutex, 0);
    double start = now_s();
    for (long i = 0; i < iterations; i++) {
        pthread_mutex_lock(mutex);
        pthread_mutex_unlock(mutex);
    }
    double elapsed = now_s() - start;
    munmap(mutex, 4096);
    return elapsed / iterations * 1e9;
}

static int write_all(int fd, const void *bytes, size_t length) {
    const char *at = bytes;
    while (length) {
        ssize_t n = write(fd, at, length);
        if (n < 0) return -1;
        at += n;
        length -= (size_t)n;
    }
    return 0;
}

// A child writes `count` frames of an 8-byte header and an 8-byte payload, one
// write each (as a framed send does); the parent reads with 64 KiB buffered
// reads and walks the frames.
double cmp_bench_socketpair_small_msgs_per_s(long count) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds)) return -1;
    double start = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        unsigned char frame[16] = {8, 0, 0, 0, 0, 0x4d, 0, 0};
        for (long i = 0; i < count; i++) {
            memcpy(frame + 8, &i, 8);
            if (write_all(fds[1], frame, sizeof frame)) _exit(1);
        }
        _exit(0);
    }
    close(fds[1]);
    unsigned char *buffer = malloc(1 << 16);
    size_t have = 0;
    long received = 0, sum = 0;
    while (received < count) {
        ssize_t n = read(fds[0], buffer + have, (1 << 16) - have);
        if (n <= 0) break;
        have += (size_t)n;
        size_t at = 0;
        while (have - at >= 16) {
            long value;
            memcpy(&value, buffer + at + 8, 8);
            sum += value;
            at += 16;
            received++;
        }
        memmove(buffer, buffer + at, have - at);
        have -= at;
    }
    double elapsed = now_s() - start;
    free(buffer);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return received == count ? count / elapsed : -1;
}

// A child writes `messages` messages of `size` bytes; the parent reads each
// into a buffer of its size. Megabytes (1e6 bytes) per second.
double cmp_bench_socketpair_bandwidth_MBps(long messages, long size) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds)) return -1;
    unsigned char *buffer = malloc((size_t)size);
    memset(buffer, 7, (size_t)size);
    double start = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        for (long i = 0; i < messages; i++)
            if (write_all(fds[1], buffer, (size_t)size)) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    long total = 0;
    for (long i = 0; i < messages; i++) {
        long got = 0;
        while (got < size) {
            ssize_t n = read(fds[0], buffer + got, (size_t)(size - got));
            if (n <= 0) goto done;
            got += n;
        }
        total += got;
    }
done:;
    double elapsed = now_s() - start;
    free(buffer);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return total == messages * size ? (double)total / 1e6 / elapsed : -1;
}

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
