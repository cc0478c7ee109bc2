// The after-fork registry: every lock the library creates, reset in every
// forked child (CPython's `util.register_after_fork`, for locks).
//
// A lock held by another thread at the moment of fork stays held forever in
// the child, since that thread does not exist there. Each `ForkSafeLock`
// links itself into one list when created and unlinks itself when destroyed;
// an atfork child handler re-initialises every lock on the list, then runs
// the library's per-process resets (one Swift entry point). The list's own
// mutex is held across the fork (the prepare handler), so the child never
// sees it half-linked.
#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <pthread.h>
#include <time.h>

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static cmp_fork_safe_mutex *registry_head;
static void (*child_handler)(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void init_pair(cmp_fork_safe_mutex *lock) {
    pthread_mutex_init(&lock->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lock->condition, &attr);
    pthread_condattr_destroy(&attr);
}

static void prepare(void) { pthread_mutex_lock(&registry_mutex); }
static void parent(void) { pthread_mutex_unlock(&registry_mutex); }

static void child(void) {
    pthread_mutex_init(&registry_mutex, NULL);
    for (cmp_fork_safe_mutex *lock = registry_head; lock; lock = lock->next) init_pair(lock);
    if (child_handler) child_handler();
}

static void install(void) { pthread_atfork(prepare, parent, child); }

void cmp_fork_safe_mutex_init(cmp_fork_safe_mutex *lock) {
    pthread_once(&atfork_once, install);
    init_pair(lock);
    pthread_mutex_lock(&registry_mutex);
    lock->previous = NULL;
    lock->next = registry_head;
    if (registry_head) registry_head->previous = lock;
    registry_head = lock;
    pthread_mutex_unlock(&registry_mutex);
}

void cmp_fork_safe_mutex_destroy(cmp_fork_safe_mutex *lock) {
    pthread_mutex_lock(&registry_mutex);
    if (lock->previous) lock->previous->next = lock->next; else registry_head = lock->next;
    if (lock->next) lock->next->previous = lock->previous;
    pthread_mutex_unlock(&registry_mutex);
    pthread_cond_destroy(&lock->condition);
    pthread_mutex_destroy(&lock->mutex);
}

void cmp_fork_registry_set_child_handler(void (*handler)(void)) {
    pthread_once(&atfork_once, install);
    child_handler = handler;
}

long cmp_fork_registry_count(void) {
    long count = 0;
    pthread_mutex_lock(&registry_mutex);
    for (cmp_fork_safe_mutex *lock = registry_head; lock; lock = lock->next) count++;
    pthread_mutex_unlock(&registry_mutex);
    return count;
}
