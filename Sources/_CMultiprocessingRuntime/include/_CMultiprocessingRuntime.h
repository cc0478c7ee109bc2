#ifndef CMP_RUNTIME_H
#define CMP_RUNTIME_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <pthread.h>

// The runtime pieces of swift-multiprocessing that must be C, each file
// saying why: the after-fork lock registry (an atfork handler), the steps of
// a forked child before Swift may run (no allocation, no lazy binding, an
// async-signal-safe crash handler), the child-side executor for Swift
// concurrency (the runtime's swiftcall hooks), named-task discovery (the
// Swift ABI's metadata sections), the forkserver's clone3 repair (glibc's
// private thread descriptor), and a launched child's start from .init_array.
//
// One convention, as in _CMultiprocessingShims: a function that can fail
// returns -1 with errno set.

// ---------------------------------------------------------------------------
// The after-fork registry (fork_registry.c).
// ---------------------------------------------------------------------------

/// A mutex and condition variable that every forked child re-initialises.
typedef struct cmp_fork_safe_mutex {
    pthread_mutex_t mutex;
    pthread_cond_t condition; // CLOCK_MONOTONIC
    struct cmp_fork_safe_mutex *previous, *next;
} cmp_fork_safe_mutex;

/// Initialises `lock` and links it into the registry (installing the atfork
/// handlers on first use).
void cmp_fork_safe_mutex_init(cmp_fork_safe_mutex *lock);
/// Unlinks `lock` and destroys it.
void cmp_fork_safe_mutex_destroy(cmp_fork_safe_mutex *lock);
/// The function a forked child runs after every registered lock is reset.
void cmp_fork_registry_set_child_handler(void (*handler)(void));
/// How many locks are registered (for tests).
long cmp_fork_registry_count(void);

/// Everything a freshly forked child does at the system level, in one place
/// (every page of code or data a child touches costs a page fault):
/// - with `daemon`, `PR_SET_PDEATHSIG(SIGKILL)`, and if `parent` is already
///   gone, death by SIGKILL right away (the signal would never come);
/// - an empty signal mask (the forking thread may have blocked SIGTERM);
/// - what the parent buffered in stdout and stderr is dropped (another thread
///   may have refilled the buffers between the parent's flush and the fork:
///   the parent prints that, the child must not print it again);
/// - the child executor's hooks (see below);
/// - once per line of descent, `on_exit(exit_guard)`, so that `exit(n)` in the
///   child runs the library's exit handling, not the parent's atexit handlers.
void cmp_child_after_fork(int daemon, pid_t parent, void (*exit_guard)(int status, void *arg));

/// In a child: a crash (SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT)
/// first writes `Process NAME (pid N) crashed with signal S` to stderr, then
/// goes on under the handler that was there before (the Swift runtime's
/// backtracer, or the default action). `name` must stay valid for the
/// child's life (the parent prepares it before the fork; it is not copied).
void cmp_child_name_crashes(const char *name);

/// The last step of a forked child: flush stdio, `_exit(code)`.
__attribute__((noreturn)) void cmp_child_exit(int code);


// ---------------------------------------------------------------------------
// Swift concurrency in a forked child.
//
// Threads do not survive fork, so the runtime's global executor (Dispatch on
// Linux) never runs another job in a child forked from a process that used it.
// `cmp_child_executor_install` points the runtime's enqueue hooks at a small
// child-local pool (worker threads, one serial main-actor thread, one timer
// thread), created lazily on first use. Call it right after fork in the child;
// calling it again in a grandchild resets the inherited (dead) pool. Only the
// hook pointers are written at fork; queues, threads and the Swift executors
// are set up on the first job.
// ---------------------------------------------------------------------------
/// Looks the runtime's hooks up (in the parent, once): 1 when found, 0 when
/// this runtime lacks them (concurrency then cannot run in a forked child).
int cmp_child_executor_resolve(void);
void cmp_child_executor_install(void);

/// The waiting thread runs global jobs while it waits: `help_begin` before
/// the work is enqueued, `help_until(done)` to run jobs until `*done`, and
/// `help_end(done)` (from the work's end) to set it and wake the helper.
void cmp_child_executor_help_begin(void);
void cmp_child_executor_help_until(int *done);
void cmp_child_executor_help_end(int *done);
/// A function run once in each child, on the first job, before it is queued:
/// the Swift side replaces the runtime's default executors there.
void cmp_child_executor_set_swift_setup(void (*function)(void));
/// Enqueue a job (a Swift `UnownedJob`) on the child pool, on the child's
/// main-actor thread, or on the child pool after `delay_ns` nanoseconds.
/// The Swift executors installed in the child forward here.
void cmp_child_executor_enqueue(void *job);
void cmp_child_executor_enqueue_main(void *job);
void cmp_child_executor_enqueue_after(void *job, uint64_t delay_ns);
void cmp_child_executor_enqueue_main_after(void *job, uint64_t delay_ns);
/// Whether the calling thread is the child's main-actor thread.
int cmp_child_executor_on_main_thread(void);
/// Whether libdispatch is loaded and had started its worker threads in this
/// process (or, after fork, in the parent it was copied from: the flag is
/// inherited). Looked up at run time, so there is no link dependency.
int cmp_dispatch_is_multithreaded(void);


// ---------------------------------------------------------------------------
// The forkserver and launched children.
// ---------------------------------------------------------------------------

/// In the forkserver, before its first child: finds where glibc keeps the
/// thread id and the robust-mutex list, checking each candidate with a trial
/// child, so that a raw `clone3` child can be repaired. Returns 0, or -1 with
/// errno set (ENOTSUP: no candidate works with this glibc).
int cmp_forkserver_prepare(void);

/// The words among the first `words` of the calling thread's descriptor that
/// hold its thread id (at most `capacity`, into `slots`); their count.
int cmp_forkserver_tid_candidates(pid_t **slots, int capacity, int words);

/// The index of the first of `slots` that a trial child shows is glibc's
/// thread id; -1 with errno set (ENOTSUP: none is, or clone3's error).
int cmp_forkserver_pick_tid_slot(pid_t *const *slots, int count);

/// `clone3(CLONE_PARENT)`: a child of the server's parent (the client), with
/// glibc's thread id and robust list repaired. Returns like `fork`.
pid_t cmp_forkserver_clone(void);

/// Names the process (its `comm`, as `ps` and `top` show it) after `argv0`'s
/// last path component: a process executed from `/proc/self/exe` is named "exe".
void cmp_name_after_program(const char *argv0);

/// Runs the constructors that follow `hook` in this image's `.init_array`
/// (they would never run: the caller never returns to the C library).
void cmp_run_constructors_after(const void *hook, int argc, char **argv, char **envp);

/// In a launched child's main thread: serves libdispatch's main queue
/// (MainActor work) until `done_fd` is readable.
void cmp_serve_main_queue_until(int done_fd);


// ---------------------------------------------------------------------------
// Named tasks and build identity.
// ---------------------------------------------------------------------------

/// Which of the library's found-by-name protocols a conformance is to.
typedef enum { cmp_protocol_named_task = 0, cmp_protocol_managed_object = 1 } cmp_found_protocol;

/// Calls `found` with the type metadata of every non-generic type, in every
/// loaded image, that conforms to `Multiprocessing.MP.NamedTask` or
/// `MP.ManagedObject`, with the conformance's witness table
/// (`swift_getWitnessTable`; null when the runtime lacks it) and which
/// protocol it is; and `skipped` with the name of every generic one. Returns
/// 0, or -1 with errno ENOTSUP when the Swift runtime cannot enumerate its
/// metadata sections.
int cmp_discover_named_tasks(void (*found)(const void *metadata, const void *witness_table,
                                           cmp_found_protocol protocol, void *context),
                             void (*skipped)(const char *type_name, void *context), void *context);

/// The executable's GNU build id (its `NT_GNU_BUILD_ID` note), up to
/// `capacity` bytes; 0 when it has none.
size_t cmp_executable_build_id(uint8_t *out, size_t capacity);


#endif
