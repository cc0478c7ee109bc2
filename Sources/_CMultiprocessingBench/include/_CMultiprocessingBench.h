#ifndef CMP_BENCH_H
#define CMP_BENCH_H

// Benchmark floors for mp-bench: the raw C cost of what the library wraps.
// Only the mp-bench executable depends on this target; a user's binary
// contains none of it.

/// Mean microseconds of `fork()` + `_exit(0)` in the child + `waitpid` in the
/// parent, over `iterations`, called from the current process.
double cmp_bench_raw_fork_exit_wait_us(int iterations);
/// Mean nanoseconds of lock + unlock of a robust process-shared mutex.
double cmp_bench_robust_mutex_ns(long iterations);
/// Framed 16-byte messages per second from a child over a raw socketpair.
double cmp_bench_socketpair_small_msgs_per_s(long count);
/// Megabytes per second of `size`-byte messages from a child over a raw socketpair.
double cmp_bench_socketpair_bandwidth_MBps(long messages, long size);

#endif
