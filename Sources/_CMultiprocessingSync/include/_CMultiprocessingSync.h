#ifndef CMP_SYNC_H
#define CMP_SYNC_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>

// The synchronisation algorithms of the library, in C because they need
// robust process-shared mutexes, futexes and atomics on shared memory.
// Only the Multiprocessing module imports this target.
//
// Building blocks for synchronization across processes. All state lives in
// shared memory (an anonymous MAP_SHARED mapping inherited across fork, or a
// named segment). Mutexes are robust: when their owner dies, the next locker
// gets EOWNERDEAD (the mutex already made consistent) instead of a deadlock.
// Waiting is done on futex words, so a process killed while waiting leaves no
// state behind.

/// Maps `size` bytes of zeroed memory shared with children forked later.
/// NULL with errno on failure.
void *cmp_shared_map(size_t size);
/// Unmaps what `cmp_shared_map` returned.
int cmp_shared_unmap(void *address, size_t size);
/// Maps the pages of `[address, address + size)` of a shared region into this
/// process's page table by reading one byte per page. A child does not
/// inherit its parent's page-table entries for shared memory, and a write
/// fault maps a single page while a read fault maps its neighbours too (the
/// kernel's fault-around, writable for shared memory): writing 8 MB of fresh
/// shared pages costs about 4 ms in a child on this VM, 1 ms after this.
void cmp_shared_prefault(const void *address, size_t size);
/// Sets (`wipe` = 1, MADV_WIPEONFORK) or clears (MADV_KEEPONFORK) the
/// wipe-on-fork mark on the whole pages inside `[address, address + size)`
/// of private memory: a child forked while it is set gets zero-filled pages
/// there, and the parent's pages are not write-protected by the fork.
/// Returns 0, 1 when the range holds no whole page (nothing done), or -1
/// with errno.
int cmp_wipe_on_fork(void *address, size_t size, int wipe);
/// Makes the whole pages inside `[address, address + size)` of private memory
/// present and writable (MADV_POPULATE_WRITE, Linux 5.14+) without touching
/// their contents: the page faults of a later write are taken here, in one
/// call. A hint: errors (an older kernel, memory freed meanwhile) are ignored.
void cmp_populate_writable(void *address, size_t size);

/// A process-shared, robust mutex. `recursive`: PTHREAD_MUTEX_RECURSIVE,
/// else PTHREAD_MUTEX_ERRORCHECK (relocking is EDEADLK, unlocking by a
/// non-owner is EPERM). Returns 0 or an error number.
int cmp_mutex_init(pthread_mutex_t *mutex, int recursive);
/// Locks; `timeout_ns` < 0 waits forever, 0 only tries. Returns 0, EOWNERDEAD
/// (the previous owner died holding it: the mutex is now consistent and held
/// by the caller), ETIMEDOUT / EBUSY, EDEADLK, or another error number.
int cmp_mutex_lock(pthread_mutex_t *mutex, int64_t timeout_ns);
/// Unlocks; 0, or EPERM when the caller does not hold it.
int cmp_mutex_unlock(pthread_mutex_t *mutex);

/// Sleeps while `*word == expected`, at most `timeout_ns` (< 0: no limit).
/// 0 when woken (or the value differed), ETIMEDOUT, or EINTR.
int cmp_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
/// Wakes up to `count` sleepers on `word`.
void cmp_futex_wake(uint32_t *word, int count);

/// Sequentially consistent atomics on shared memory.
uint32_t cmp_atomic_load_u32(const uint32_t *address);
uint32_t cmp_atomic_add_u32(uint32_t *address, uint32_t delta); // returns the new value
int64_t cmp_atomic_load_i64(const int64_t *address);
void cmp_atomic_store_i64(int64_t *address, int64_t value);
int64_t cmp_atomic_add_i64(int64_t *address, int64_t delta); // returns the new value
int cmp_atomic_cas_i64(int64_t *address, int64_t *expected, int64_t desired);
int32_t cmp_atomic_add_i32(int32_t *address, int32_t delta);
int32_t cmp_atomic_load_i32(const int32_t *address);
void cmp_atomic_store_i32(int32_t *address, int32_t value);
int cmp_atomic_cas_i32(int32_t *address, int32_t *expected, int32_t desired);
uint8_t cmp_atomic_load_u8(const uint8_t *address);
void cmp_atomic_store_u8(uint8_t *address, uint8_t value);

/// The calling thread's kernel id, cached per thread (cleared in a forked child).
int32_t cmp_current_tid(void);

/// Shared state of a lock-like primitive (lock, semaphore, event, condition, barrier).
typedef struct {
    pthread_mutex_t mutex;
    uint32_t seq;       // futex word, bumped on every change a waiter may care about
    uint32_t waiters;   // sleepers (approximate: a killed sleeper stays counted)
    int32_t owner_tid;  // Lock/RLock: who holds it (0: nobody)
    int32_t depth;      // RLock: recursion depth of the owner
    int64_t value;      // semaphore count, event flag, barrier count
    int64_t limit;      // bounded semaphore maximum, barrier parties
    int64_t generation; // barrier
    int64_t reset_generation;
    int64_t broken;     // barrier
} cmp_sync_state;

/// Shared state of a queue: a byte ring of length-prefixed messages.
/// Messages become visible by a single store to `tail` and leave by a single
/// store to `head`, so a process killed mid-operation leaves no half message.
typedef struct {
    pthread_mutex_t mutex;
    uint32_t items_seq;   // bumped when a message is published
    uint32_t space_seq;   // bumped when a message is consumed
    uint32_t get_waiters;
    uint32_t put_waiters;
    uint64_t head;        // byte offset of the oldest message (monotonic)
    uint64_t tail;        // byte offset after the newest message (monotonic)
    uint64_t count;       // messages between head and tail
    uint64_t capacity;    // bytes in the ring
    uint64_t max_items;   // 0: unbounded
    int64_t unfinished;   // JoinableQueue: puts minus task_done
    uint32_t unfinished_seq;
    uint32_t async_waiters; // tasks awaiting an item through the queue's eventfd
    uint32_t pad[2];
} cmp_ring;

enum { CMP_RING_OK = 0, CMP_RING_FULL = 1, CMP_RING_EMPTY = 2, CMP_RING_TOO_LARGE = 3, CMP_RING_TIMEOUT = 4 };

/// Initialises a ring of `capacity` bytes (a multiple of 8) placed right after the header.
int cmp_ring_init(cmp_ring *ring, uint64_t capacity, uint64_t max_items);
/// Puts a message. `timeout_ns` < 0 blocks without limit, 0 never blocks.
/// Returns CMP_RING_OK, CMP_RING_FULL (timed out or not blocking),
/// CMP_RING_TOO_LARGE (can never fit), or a negated error number.
/// `*owner_died` is set when a previous holder died and the ring was repaired.
/// `event_fd` is this process's descriptor of the queue's eventfd (semaphore
/// mode), written once per put while tasks await an item; -1 for none. (The
/// number differs per process: a spawned child received its own.)
int cmp_ring_put(cmp_ring *ring, const void *bytes, uint32_t length, int64_t timeout_ns, int *owner_died, int event_fd);
/// Takes the oldest message. On CMP_RING_OK, `*out` is a malloc'd copy
/// (free it) of `*length` bytes. Returns CMP_RING_OK, CMP_RING_EMPTY (timed
/// out or not blocking), or a negated error number.
int cmp_ring_get(cmp_ring *ring, void **out, uint32_t *length, int64_t timeout_ns, int *owner_died);
/// Frees a copy `cmp_ring_get` returned.
void cmp_ring_free_copy(void *copy);
/// Like `cmp_ring_get`, but copies into `buffer` (of `capacity` bytes). When
/// the oldest message is larger, returns CMP_RING_TOO_LARGE with `*length`
/// set to its size and leaves it in the ring.
int cmp_ring_get_into(cmp_ring *ring, void *buffer, uint32_t capacity, uint32_t *length, int64_t timeout_ns, int *owner_died);
/// Message count, under the lock (repairing if needed).
uint64_t cmp_ring_count(cmp_ring *ring);
/// JoinableQueue: one task done. Returns 0, or -1 when called more times than items were put.
int cmp_ring_task_done(cmp_ring *ring);
/// JoinableQueue: waits until every put item is marked done. 0, or ETIMEDOUT.
int cmp_ring_join(cmp_ring *ring, int64_t timeout_ns);

#endif
