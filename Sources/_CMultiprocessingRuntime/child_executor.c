// A child-local executor for Swift concurrency after fork().
//
// The Swift runtime calls these hooks (swiftcall convention) instead of its
// default global executor. Jobs are kept in malloc'd FIFO nodes, so nothing
// here depends on the layout of the runtime's Job type.
#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct SwiftJob SwiftJob;
typedef struct {
    void *identity;
    uintptr_t implementation;
} CMPSerialExecutorRef;

#define SWIFTCC __attribute__((swiftcall))

typedef SWIFTCC void (*enqueue_original)(SwiftJob *);
typedef SWIFTCC void (*enqueue_delay_original)(unsigned long long, SwiftJob *);
typedef SWIFTCC void (*enqueue_deadline_original)(long long, long long, long long, long long, int, SwiftJob *);
typedef SWIFTCC void (*enqueue_hook)(SwiftJob *, enqueue_original);
typedef SWIFTCC void (*enqueue_delay_hook)(unsigned long long, SwiftJob *, enqueue_delay_original);
typedef SWIFTCC void (*enqueue_deadline_hook)(long long, long long, long long, long long, int, SwiftJob *,
                                              enqueue_deadline_original);

// The runtime's entry points and hook variables, looked up at run time (as
// NIO takes over the global executor): a runtime without them makes
// `cmp_child_executor_resolve` return 0, and the library says so, instead of
// the program failing to link. Resolved once, in the parent: a lookup in
// every child would cost a search across every loaded library.
static struct {
    SWIFTCC void (*job_run)(SwiftJob *, CMPSerialExecutorRef);
    SWIFTCC CMPSerialExecutorRef (*main_executor)(void);
    enqueue_hook *global;
    enqueue_hook *main;
    enqueue_delay_hook *delay;
    enqueue_deadline_hook *deadline;
} runtime;

// Threads a child's global queue may start: the CPUs online, at least 2.
static int max_workers = 2;

int cmp_child_executor_resolve(void) {
    if (runtime.job_run) return 1;
    void *job_run = dlsym(RTLD_DEFAULT, "swift_job_run");
    void *main_executor = dlsym(RTLD_DEFAULT, "swift_task_getMainExecutor");
    void *global = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobal_hook");
    void *main = dlsym(RTLD_DEFAULT, "swift_task_enqueueMainExecutor_hook");
    void *delay = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDelay_hook");
    void *deadline = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDeadline_hook");
    if (!job_run || !main_executor || !global || !main || !delay || !deadline) return 0;
    // Counted here, in the parent (or the forkserver) that resolves once,
    // not in each child's set-up: reading sysfs was an open, a read and a
    // close in every child.
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    max_workers = cpus < 2 ? 2 : (int)cpus;
    runtime.main_executor = (SWIFTCC CMPSerialExecutorRef (*)(void))main_executor;
    runtime.global = global;
    runtime.main = main;
    runtime.delay = delay;
    runtime.deadline = deadline;
    runtime.job_run = (SWIFTCC void (*)(SwiftJob *, CMPSerialExecutorRef))job_run; // last: marks resolved
    return 1;
}

// ----------------------------------------------------------------- queues --

typedef struct Node {
    SwiftJob *job;
    struct Node *next;
} Node;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    Node *head, *tail;
    int threads;   // started worker threads
    int idle;      // workers waiting for a job
} JobQueue;

// A delayed job. Kept in a binary min-heap by (deadline, order): a cancelled
// `Task.sleep` leaves its job here until the deadline, so a process that
// waits with timeouts thousands of times a second holds thousands of them,
// and a sorted list made every insertion walk them all (the cluster worker
// spent a third of its time there).
typedef struct {
    uint64_t deadline_ns; // CLOCK_MONOTONIC
    uint64_t order;       // insertion order: equal deadlines run first-in, first-out
    SwiftJob *job;
    bool to_main;         // due jobs go to the main-actor thread
} Timer;

static JobQueue global_queue;
static JobQueue main_queue;
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    Timer *heap;
    size_t count, capacity;
    uint64_t next_order;
    bool started;
} timers;
// Set in the child by cmp_child_executor_install; the queues and the Swift
// executors are set up on the first job (most children never use concurrency,
// and every page a child writes is a copy-on-write fault).
static void (*swift_setup)(void);

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void queue_init(JobQueue *q) {
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->ready, NULL);
    q->head = q->tail = NULL; // inherited jobs belong to the parent's tasks: dropped
    q->threads = q->idle = 0;
}

static void *worker_main(void *arg);

static void spawn_worker(JobQueue *q) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);
    if (pthread_create(&thread, &attr, worker_main, q) == 0) q->threads++;
    pthread_attr_destroy(&attr);
}

static inline void ensure_setup(void);

static void push(JobQueue *q, SwiftJob *job, int limit) {
    ensure_setup();
    Node *node = malloc(sizeof(Node));
    if (!node) abort();
    node->job = job;
    node->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->tail) q->tail->next = node; else q->head = node;
    q->tail = node;
    if (q->idle > 0) pthread_cond_signal(&q->ready);
    else if (q->threads < limit) spawn_worker(q);
    pthread_mutex_unlock(&q->lock);
}

static __thread bool on_main_thread;

static void *worker_main(void *arg) {
    JobQueue *q = arg;
    bool is_main = (q == &main_queue);
    on_main_thread = is_main;
    CMPSerialExecutorRef executor = {0, 0};
    if (is_main) executor = runtime.main_executor();
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (!q->head) {
            q->idle++;
            pthread_cond_wait(&q->ready, &q->lock);
            q->idle--;
        }
        Node *node = q->head;
        q->head = node->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->lock);
        SwiftJob *job = node->job;
        free(node);
        runtime.job_run(job, executor);
    }
    return NULL;
}

// ------------------------------------------------------------------ timers --

static bool timer_before(const Timer *a, const Timer *b) {
    return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->order < b->order);
}

// Both with timers.lock held.
static void heap_push(Timer timer) {
    if (timers.count == timers.capacity) {
        size_t capacity = timers.capacity ? timers.capacity * 2 : 64;
        Timer *grown = realloc(timers.heap, capacity * sizeof(Timer));
        if (!grown) abort();
        timers.heap = grown;
        timers.capacity = capacity;
    }
    size_t i = timers.count++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(&timer, &timers.heap[parent])) break;
        timers.heap[i] = timers.heap[parent];
        i = parent;
    }
    timers.heap[i] = timer;
}

static Timer heap_pop(void) {
    Timer first = timers.heap[0];
    Timer last = timers.heap[--timers.count];
    size_t i = 0, n = timers.count;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && timer_before(&timers.heap[child + 1], &timers.heap[child])) child++;
        if (!timer_before(&timers.heap[child], &last)) break;
        timers.heap[i] = timers.heap[child];
        i = child;
    }
    if (n > 0) timers.heap[i] = last;
    return first;
}

static void *timer_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&timers.lock);
    for (;;) {
        if (timers.count == 0) {
            pthread_cond_wait(&timers.changed, &timers.lock);
            continue;
        }
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        uint64_t first = timers.heap[0].deadline_ns;
        if (first <= now) {
            Timer due = heap_pop();
            pthread_mutex_unlock(&timers.lock);
            if (due.to_main) push(&main_queue, due.job, 1);
            else push(&global_queue, due.job, max_workers);
            pthread_mutex_lock(&timers.lock);
            continue;
        }
        struct timespec until = {(time_t)(first / 1000000000ull), (long)(first % 1000000000ull)};
        pthread_cond_timedwait(&timers.changed, &timers.lock, &until);
    }
    return NULL;
}

static void schedule(SwiftJob *job, uint64_t deadline_ns, bool to_main) {
    ensure_setup();
    pthread_mutex_lock(&timers.lock);
    Timer timer = {deadline_ns, timers.next_order++, job, to_main};
    // The timer thread sleeps until the earliest deadline: wake it only when
    // this one comes first.
    bool earliest = timers.count == 0 || timer_before(&timer, &timers.heap[0]);
    heap_push(timer);
    if (!timers.started) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, timer_main, NULL) == 0) timers.started = true;
        pthread_attr_destroy(&attr);
    }
    if (earliest) pthread_cond_signal(&timers.changed);
    pthread_mutex_unlock(&timers.lock);
}

// ------------------------------------------------------------------- hooks --

static SWIFTCC void hook_enqueue_global(SwiftJob *job, enqueue_original original) {
    (void)original;
    push(&global_queue, job, max_workers);
}

static SWIFTCC void hook_enqueue_main(SwiftJob *job, enqueue_original original) {
    (void)original;
    push(&main_queue, job, 1); // one thread: the main actor stays serial
}

static SWIFTCC void hook_enqueue_delay(unsigned long long delay, SwiftJob *job, enqueue_delay_original original) {
    (void)original;
    schedule(job, now_ns(CLOCK_MONOTONIC) + delay, false);
}

static SWIFTCC void hook_enqueue_deadline(long long sec, long long nsec, long long tsec, long long tnsec, int clock,
                                          SwiftJob *job, enqueue_deadline_original original) {
    (void)tsec; (void)tnsec; (void)original;
    // The runtime's clock ids: 1 continuous (CLOCK_BOOTTIME on Linux), 2 suspending (CLOCK_MONOTONIC).
    clockid_t source = clock == 1 ? CLOCK_BOOTTIME : CLOCK_MONOTONIC;
    int64_t deadline = (int64_t)sec * 1000000000ll + (int64_t)nsec;
    int64_t remaining = deadline - (int64_t)now_ns(source);
    if (remaining < 0) remaining = 0;
    schedule(job, now_ns(CLOCK_MONOTONIC) + (uint64_t)remaining, false);
}

static void setup(void) {
    queue_init(&global_queue);
    queue_init(&main_queue);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&timers.lock, NULL);
    pthread_cond_init(&timers.changed, &attr);
    pthread_condattr_destroy(&attr);
    // An inherited heap holds the parent's tasks' jobs: dropped (its memory
    // is the parent's copy, not ours to free).
    timers.heap = NULL;
    timers.count = timers.capacity = 0;
    timers.next_order = 0;
    timers.started = false;
    if (swift_setup) swift_setup();
}

// Set up once per process: `installed_for` is the pid that installed the
// hooks, `set_up_for` the pid whose queues exist. A second install in the
// same process (a library fork path that runs again) must not re-initialise
// queues, timers and condition variables that threads are waiting on.
static pid_t installed_for;
static pid_t set_up_for;
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;

static inline void ensure_setup(void) {
    if (__atomic_load_n(&set_up_for, __ATOMIC_ACQUIRE) == installed_for) return;
    pthread_mutex_lock(&setup_lock);
    if (__atomic_load_n(&set_up_for, __ATOMIC_RELAXED) != installed_for) {
        setup();
        __atomic_store_n(&set_up_for, installed_for, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&setup_lock);
}

void cmp_child_executor_set_swift_setup(void (*function)(void)) { swift_setup = function; }

void cmp_child_executor_install(void) {
    pid_t me = getpid();
    if (installed_for != me) { // a grandchild sets up anew; a second install here changes nothing
        pthread_mutex_init(&setup_lock, NULL);
        installed_for = me;
    }
    if (!runtime.job_run) return; // not resolved: the parent was told
    *runtime.global = hook_enqueue_global;
    *runtime.main = hook_enqueue_main;
    *runtime.delay = hook_enqueue_delay;
    *runtime.deadline = hook_enqueue_deadline;
}


void cmp_child_executor_enqueue(void *job) { push(&global_queue, job, max_workers); }
void cmp_child_executor_enqueue_main(void *job) { push(&main_queue, job, 1); }
void cmp_child_executor_enqueue_after(void *job, uint64_t delay_ns) {
    schedule(job, now_ns(CLOCK_MONOTONIC) + delay_ns, false);
}
void cmp_child_executor_enqueue_main_after(void *job, uint64_t delay_ns) {
    schedule(job, now_ns(CLOCK_MONOTONIC) + delay_ns, true);
}
int cmp_child_executor_on_main_thread(void) { return on_main_thread ? 1 : 0; }

// ------------------------------------------------- the waiting thread helps --
//
// The thread that starts a child's async work and waits for it (the child's
// main thread) runs the global queue's jobs itself while it waits, as one
// more worker: a child whose task never blocks runs it without starting a
// thread (a thread's start and exit were a third of a short child's life).
// It counts as idle from `help_begin`, so the task's first job wakes it
// instead of starting a worker.

void cmp_child_executor_help_begin(void) {
    ensure_setup();
    pthread_mutex_lock(&global_queue.lock);
    global_queue.idle++;
    pthread_mutex_unlock(&global_queue.lock);
}

void cmp_child_executor_help_until(int *done) {
    JobQueue *q = &global_queue;
    CMPSerialExecutorRef executor = {0, 0};
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (__atomic_load_n(done, __ATOMIC_ACQUIRE)) break;
        if (q->head) {
            Node *node = q->head;
            q->head = node->next;
            if (!q->head) q->tail = NULL;
            q->idle--;
            pthread_mutex_unlock(&q->lock);
            SwiftJob *job = node->job;
            free(node);
            runtime.job_run(job, executor);
            pthread_mutex_lock(&q->lock);
            q->idle++;
            continue;
        }
        pthread_cond_wait(&q->ready, &q->lock);
    }
    q->idle--;
    pthread_mutex_unlock(&q->lock);
}

void cmp_child_executor_help_end(int *done) {
    pthread_mutex_lock(&global_queue.lock);
    __atomic_store_n(done, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&global_queue.ready);
    pthread_mutex_unlock(&global_queue.lock);
}
