#define _GNU_SOURCE
#include "_CMultiprocessingSync.h"

#include <pthread.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void *cmp_shared_map(size_t size) {
    void *address = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return address == MAP_FAILED ? NULL : address;
}

int cmp_shared_unmap(void *address, size_t size) { return munmap(address, size); }

static uintptr_t page_size(void) {
    static uintptr_t page;
    if (page == 0) page = (uintptr_t)sysconf(_SC_PAGESIZE);
    return page;
}

/// The whole pages inside [address, address + size): false when there are none.
static int whole_pages(const void *address, size_t size, uintptr_t *start, uintptr_t *end) {
    uintptr_t page = page_size();
    *start = ((uintptr_t)address + page - 1) & ~(page - 1);
    *end = ((uintptr_t)address + size) & ~(page - 1);
    return *end > *start;
}

void cmp_shared_prefault(const void *address, size_t size) {
    const volatile char *bytes = address;
    for (size_t offset = 0; offset < size; offset += page_size()) (void)bytes[offset];
    if (size > 0) (void)bytes[size - 1];
}

int cmp_wipe_on_fork(void *address, size_t size, int wipe) {
    uintptr_t start, end;
    if (!whole_pages(address, size, &start, &end)) return 1;
    return madvise((void *)start, end - start, wipe ? MADV_WIPEONFORK : MADV_KEEPONFORK);
}

void cmp_populate_writable(void *address, size_t size) {
    uintptr_t start, end;
    if (!whole_pages(address, size, &start, &end)) return;
    // In slices: each call holds the address space's lock for reading, and a
    // fork (which takes it for writing) waits for at most one slice.
    const uintptr_t slice = 256u << 10;
    for (uintptr_t at = start; at < end; at += slice) {
        if (madvise((void *)at, (end - at < slice ? end - at : slice), MADV_POPULATE_WRITE) != 0) return;
    }
}

int cmp_mutex_init(pthread_mutex_t *mutex, int recursive) {
    pthread_mutexattr_t attr;
    int error = pthread_mutexattr_init(&attr);
    if (error) return error;
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&attr, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    error = pthread_mutex_init(mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    return error;
}

static struct timespec deadline_after(int64_t timeout_ns) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = now.tv_nsec + timeout_ns % 1000000000;
    struct timespec until = {now.tv_sec + (time_t)(timeout_ns / 1000000000) + (time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    return until;
}

int cmp_mutex_lock(pthread_mutex_t *mutex, int64_t timeout_ns) {
    int result;
    if (timeout_ns < 0) {
        result = pthread_mutex_lock(mutex);
    } else if (timeout_ns == 0) {
        result = pthread_mutex_trylock(mutex);
    } else {
        struct timespec until = deadline_after(timeout_ns);
        result = pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, &until);
    }
    if (result == EOWNERDEAD) pthread_mutex_consistent(mutex);
    return result;
}

int cmp_mutex_unlock(pthread_mutex_t *mutex) { return pthread_mutex_unlock(mutex); }

int cmp_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec relative, *timeout = NULL;
    if (timeout_ns >= 0) {
        relative.tv_sec = (time_t)(timeout_ns / 1000000000);
        relative.tv_nsec = (long)(timeout_ns % 1000000000);
        timeout = &relative;
    }
    // Not FUTEX_PRIVATE: the word lives in memory shared between processes.
    long result = syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, NULL, 0);
    if (result == 0) return 0;
    if (errno == EAGAIN) return 0;
    return errno;
}

void cmp_futex_wake(uint32_t *word, int count) { syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0); }

uint32_t cmp_atomic_load_u32(const uint32_t *a) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
uint32_t cmp_atomic_add_u32(uint32_t *a, uint32_t d) { return __atomic_add_fetch(a, d, __ATOMIC_SEQ_CST); }
int64_t cmp_atomic_load_i64(const int64_t *a) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
void cmp_atomic_store_i64(int64_t *a, int64_t v) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
int64_t cmp_atomic_add_i64(int64_t *a, int64_t d) { return __atomic_add_fetch(a, d, __ATOMIC_SEQ_CST); }
int cmp_atomic_cas_i64(int64_t *a, int64_t *e, int64_t d) {
    return __atomic_compare_exchange_n(a, e, d, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
int32_t cmp_atomic_add_i32(int32_t *a, int32_t d) { return __atomic_add_fetch(a, d, __ATOMIC_SEQ_CST); }
int32_t cmp_atomic_load_i32(const int32_t *a) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
void cmp_atomic_store_i32(int32_t *a, int32_t v) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
uint8_t cmp_atomic_load_u8(const uint8_t *a) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
void cmp_atomic_store_u8(uint8_t *a, uint8_t v) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
int cmp_atomic_cas_i32(int32_t *a, int32_t *e, int32_t d) {
    return __atomic_compare_exchange_n(a, e, d, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

// The forking thread is the child's only thread, under a new kernel id: the
// cache is cleared in every forked child (an atfork handler, registered on
// the first miss, so a program that never asks pays nothing).
static __thread int32_t cached_tid;
static void reset_tid_cache(void) { cached_tid = 0; }
static void register_tid_reset(void) { pthread_atfork(NULL, NULL, reset_tid_cache); }
static pthread_once_t tid_reset_once = PTHREAD_ONCE_INIT;
int32_t cmp_current_tid(void) {
    if (!cached_tid) {
        pthread_once(&tid_reset_once, register_tid_reset);
        cached_tid = (int32_t)syscall(SYS_gettid);
    }
    return cached_tid;
}

// ------------------------------------------------------------------- ring --

#define RECORD_HEADER 4u
static inline uint64_t record_size(uint32_t length) { return (RECORD_HEADER + (uint64_t)length + 7u) & ~7ull; }
static inline unsigned char *ring_data(cmp_ring *ring) { return (unsigned char *)(ring + 1); }

static void ring_copy_in(cmp_ring *ring, uint64_t offset, const void *bytes, uint64_t length) {
    uint64_t at = offset % ring->capacity, first = ring->capacity - at;
    if (first >= length) {
        memcpy(ring_data(ring) + at, bytes, length);
    } else {
        memcpy(ring_data(ring) + at, bytes, first);
        memcpy(ring_data(ring), (const unsigned char *)bytes + first, length - first);
    }
}

static void ring_copy_out(cmp_ring *ring, uint64_t offset, void *bytes, uint64_t length) {
    uint64_t at = offset % ring->capacity, first = ring->capacity - at;
    if (first >= length) {
        memcpy(bytes, ring_data(ring) + at, length);
    } else {
        memcpy(bytes, ring_data(ring) + at, first);
        memcpy((unsigned char *)bytes + first, ring_data(ring), length - first);
    }
}

// After a holder died: the single-store protocol keeps head and tail valid;
// recount the messages between them (count is a second store), and if the
// ring does not parse (it cannot, by construction), empty it rather than crash.
static void ring_repair(cmp_ring *ring) {
    uint64_t count = 0, at = ring->head;
    int ok = ring->tail >= ring->head && ring->tail - ring->head <= ring->capacity;
    while (ok && at < ring->tail) {
        uint32_t length;
        ring_copy_out(ring, at, &length, RECORD_HEADER);
        uint64_t size = record_size(length);
        if (size > ring->tail - at) { ok = 0; break; }
        at += size;
        count++;
    }
    if (!ok) {
        ring->head = ring->tail;
        count = 0;
    }
    ring->count = count;
    __atomic_add_fetch(&ring->items_seq, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&ring->space_seq, 1, __ATOMIC_SEQ_CST);
}

static int ring_lock(cmp_ring *ring, int *owner_died) {
    int result = cmp_mutex_lock(&ring->mutex, -1);
    if (result == EOWNERDEAD) {
        ring_repair(ring);
        if (owner_died) *owner_died = 1;
        return 0;
    }
    return result;
}

static int64_t remaining_ns(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 + (deadline->tv_nsec - now.tv_nsec);
    return left < 0 ? 0 : left;
}

int cmp_ring_init(cmp_ring *ring, uint64_t capacity, uint64_t max_items) {
    memset(ring, 0, sizeof *ring);
    ring->capacity = capacity;
    ring->max_items = max_items;
    return cmp_mutex_init(&ring->mutex, 0);
}

// Spins briefly before sleeping: a waiting consumer of a busy producer saves
// the futex round trip (and the producer its wake-up call).
#define SPINS 200

// Waits, with the lock held on entry and on return, until `*seq_word` moves:
// spins on the word without the lock first (a busy peer publishes within
// microseconds), and only then counts itself a sleeper and sleeps on the
// futex. The publisher bumps the word and then reads the sleeper count, both
// sequentially consistent, so a sleeper is never missed.
static int ring_wait(cmp_ring *ring, uint32_t *seq_word, uint32_t *waiters, int64_t timeout_ns,
                     const struct timespec *deadline, int *owner_died, int *timed_out) {
    uint32_t seq = __atomic_load_n(seq_word, __ATOMIC_SEQ_CST);
    cmp_mutex_unlock(&ring->mutex);
    int moved = 0;
    for (int spin = 0; spin < SPINS; spin++) {
        if (__atomic_load_n(seq_word, __ATOMIC_SEQ_CST) != seq) { moved = 1; break; }
        __builtin_ia32_pause();
    }
    *timed_out = 0;
    if (!moved) {
        int64_t left = timeout_ns < 0 ? -1 : remaining_ns(deadline);
        if (timeout_ns >= 0 && left == 0) {
            *timed_out = 1;
        } else {
            __atomic_add_fetch(waiters, 1, __ATOMIC_SEQ_CST);
            cmp_futex_wait(seq_word, seq, left);
            __atomic_sub_fetch(waiters, 1, __ATOMIC_SEQ_CST);
        }
    }
    int error = ring_lock(ring, owner_died);
    return error ? -error : 0;
}

static inline int ring_has_no_room(cmp_ring *ring, uint64_t size) {
    return ring->capacity - (ring->tail - ring->head) < size || (ring->max_items && ring->count >= ring->max_items);
}

int cmp_ring_put(cmp_ring *ring, const void *bytes, uint32_t length, int64_t timeout_ns, int *owner_died, int event_fd) {
    uint64_t size = record_size(length);
    if (size > ring->capacity) return CMP_RING_TOO_LARGE;
    struct timespec deadline;
    if (timeout_ns > 0) deadline = deadline_after(timeout_ns);
    int error = ring_lock(ring, owner_died);
    if (error) return -error;
    while (ring_has_no_room(ring, size)) {
        if (timeout_ns == 0) { cmp_mutex_unlock(&ring->mutex); return CMP_RING_FULL; }
        int timed_out;
        error = ring_wait(ring, &ring->space_seq, &ring->put_waiters, timeout_ns, &deadline, owner_died, &timed_out);
        if (error) return error;
        if (timed_out && ring_has_no_room(ring, size)) { cmp_mutex_unlock(&ring->mutex); return CMP_RING_FULL; }
    }
    ring_copy_in(ring, ring->tail, &length, RECORD_HEADER);
    ring_copy_in(ring, ring->tail + RECORD_HEADER, bytes, length);
    __atomic_store_n(&ring->tail, ring->tail + size, __ATOMIC_RELEASE); // publish
    ring->count++;
    ring->unfinished++;
    __atomic_add_fetch(&ring->items_seq, 1, __ATOMIC_SEQ_CST);
    int wake = __atomic_load_n(&ring->get_waiters, __ATOMIC_SEQ_CST) > 0;
    int notify = __atomic_load_n(&ring->async_waiters, __ATOMIC_SEQ_CST) > 0;
    cmp_mutex_unlock(&ring->mutex);
    if (wake) cmp_futex_wake(&ring->items_seq, INT_MAX);
    if (notify && event_fd >= 0) {
        // Tasks awaiting an item watch the eventfd from an epoll thread: one
        // count per item; a waiter takes one and tries to get.
        uint64_t one = 1;
        ssize_t ignored = write(event_fd, &one, sizeof one);
        (void)ignored;
    }
    return CMP_RING_OK;
}

// Waits for a message; on success returns with the lock held.
static int ring_wait_item(cmp_ring *ring, int64_t timeout_ns, int *owner_died) {
    struct timespec deadline;
    if (timeout_ns > 0) deadline = deadline_after(timeout_ns);
    int error = ring_lock(ring, owner_died);
    if (error) return -error;
    while (ring->count == 0) {
        if (timeout_ns == 0) { cmp_mutex_unlock(&ring->mutex); return CMP_RING_EMPTY; }
        int timed_out;
        error = ring_wait(ring, &ring->items_seq, &ring->get_waiters, timeout_ns, &deadline, owner_died, &timed_out);
        if (error) return error;
        if (timed_out && ring->count == 0) { cmp_mutex_unlock(&ring->mutex); return CMP_RING_EMPTY; }
    }
    return CMP_RING_OK;
}

// With the lock held: drops the oldest message (a single store) and unlocks.
// Blocked producers are woken when free space crosses half the ring, when the
// ring empties, or when a maxsize queue is half free: one wake-up for many
// items, not a futex round trip per item.
static void ring_consume(cmp_ring *ring, uint32_t length) {
    uint64_t half = ring->capacity / 2, size = record_size(length);
    uint64_t free_before = ring->capacity - (ring->tail - ring->head);
    __atomic_store_n(&ring->head, ring->head + size, __ATOMIC_RELEASE); // consume
    ring->count--;
    __atomic_add_fetch(&ring->space_seq, 1, __ATOMIC_SEQ_CST);
    int wake = 0;
    if (__atomic_load_n(&ring->put_waiters, __ATOMIC_SEQ_CST) > 0) {
        uint64_t free_after = free_before + size;
        wake = ring->count == 0 || (free_before < half && free_after >= half) ||
               (ring->max_items && ring->count <= ring->max_items / 2);
    }
    cmp_mutex_unlock(&ring->mutex);
    if (wake) cmp_futex_wake(&ring->space_seq, INT_MAX);
}

void cmp_ring_free_copy(void *copy) { free(copy); }

int cmp_ring_get(cmp_ring *ring, void **out, uint32_t *length, int64_t timeout_ns, int *owner_died) {
    int result = ring_wait_item(ring, timeout_ns, owner_died);
    if (result != CMP_RING_OK) return result;
    uint32_t size32;
    ring_copy_out(ring, ring->head, &size32, RECORD_HEADER);
    void *copy = malloc(size32 ? size32 : 1);
    if (!copy) { cmp_mutex_unlock(&ring->mutex); return -ENOMEM; }
    ring_copy_out(ring, ring->head + RECORD_HEADER, copy, size32);
    ring_consume(ring, size32);
    *out = copy;
    *length = size32;
    return CMP_RING_OK;
}

int cmp_ring_get_into(cmp_ring *ring, void *buffer, uint32_t capacity, uint32_t *length, int64_t timeout_ns, int *owner_died) {
    int result = ring_wait_item(ring, timeout_ns, owner_died);
    if (result != CMP_RING_OK) return result;
    uint32_t size32;
    ring_copy_out(ring, ring->head, &size32, RECORD_HEADER);
    *length = size32;
    if (size32 > capacity) { cmp_mutex_unlock(&ring->mutex); return CMP_RING_TOO_LARGE; }
    ring_copy_out(ring, ring->head + RECORD_HEADER, buffer, size32);
    ring_consume(ring, size32);
    return CMP_RING_OK;
}

uint64_t cmp_ring_count(cmp_ring *ring) {
    if (ring_lock(ring, NULL)) return 0;
    uint64_t count = ring->count;
    cmp_mutex_unlock(&ring->mutex);
    return count;
}

int cmp_ring_task_done(cmp_ring *ring) {
    if (ring_lock(ring, NULL)) return -1;
    if (ring->unfinished <= 0) { cmp_mutex_unlock(&ring->mutex); return -1; }
    ring->unfinished--;
    int all_done = ring->unfinished == 0;
    if (all_done) __atomic_add_fetch(&ring->unfinished_seq, 1, __ATOMIC_SEQ_CST);
    cmp_mutex_unlock(&ring->mutex);
    if (all_done) cmp_futex_wake(&ring->unfinished_seq, INT_MAX);
    return 0;
}

int cmp_ring_join(cmp_ring *ring, int64_t timeout_ns) {
    struct timespec deadline;
    if (timeout_ns > 0) deadline = deadline_after(timeout_ns);
    for (;;) {
        uint32_t seq = __atomic_load_n(&ring->unfinished_seq, __ATOMIC_SEQ_CST);
        if (ring_lock(ring, NULL)) return EINVAL;
        int64_t unfinished = ring->unfinished;
        cmp_mutex_unlock(&ring->mutex);
        if (unfinished <= 0) return 0;
        int64_t left = timeout_ns < 0 ? -1 : remaining_ns(&deadline);
        if (timeout_ns >= 0 && left == 0) return ETIMEDOUT;
        cmp_futex_wait(&ring->unfinished_seq, seq, left);
    }
}
