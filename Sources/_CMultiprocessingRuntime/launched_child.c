// What a launched child (spawned, or cloned by the forkserver) needs of C:
// it starts from the library's `.init_array` hook and never returns to the
// C library, so the constructors after the hook, the process name and the
// main queue are its own to set up. C because they walk the loader's arrays
// and libdispatch's private entry points, which Swift cannot name.
#define _GNU_SOURCE
#include "_CMultiprocessingRuntime.h"

#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

// ------------------------------------------- the main queue of a launched child --
//
// A launched child runs its task on the Swift concurrency runtime, and its
// main thread must serve the main queue (MainActor work) until the task ends.
// dispatch_main() cannot be used: it parks the main thread with pthread_exit,
// which unwinds through the loader's frames (the child runs from .init_array).
// Foundation's run loop serves the main queue on Linux through these two
// libdispatch entry points; they are looked up, and without them the thread
// only waits.

#include <dlfcn.h>
#include <poll.h>

void cmp_serve_main_queue_until(int done_fd) {
    int (*handle)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "_dispatch_get_main_queue_handle_4CF");
    void (*drain)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_dispatch_main_queue_callback_4CF");
    int main_fd = (handle && drain) ? handle() : -1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = done_fd, .events = POLLIN}, {.fd = main_fd, .events = POLLIN}};
        int ready = poll(fds, main_fd >= 0 ? 2 : 1, -1);
        if (ready < 0) continue; // EINTR
        if (fds[0].revents) return;
        if (main_fd >= 0 && fds[1].revents) {
            uint64_t count;
            ssize_t ignored = read(main_fd, &count, sizeof count);
            (void)ignored;
            drain(NULL);
        }
    }
}

// ------------------------------------------------ the constructors after ours --
//
// A launched child (or the forkserver) takes over from the library's
// .init_array hook and never returns to the C library, so the constructors
// placed after the hook in the same image would never run. In a program
// linked with -static-stdlib those are the runtime's, Dispatch's and
// Foundation's own (static archives are linked after the program's objects).
// Running them here gives the child what `main` would have found.

typedef void (*cmp_constructor)(int, char **, char **);
extern cmp_constructor __init_array_start[] __attribute__((weak, visibility("hidden")));
extern cmp_constructor __init_array_end[] __attribute__((weak, visibility("hidden")));

void cmp_run_constructors_after(const void *hook, int argc, char **argv, char **envp) {
    if (!__init_array_start || !__init_array_end) return;
    cmp_constructor *entry = __init_array_start;
    while (entry < __init_array_end && (const void *)*entry != hook) entry++;
    if (entry == __init_array_end) return; // not in this image's array: nothing is known to follow
    for (entry++; entry < __init_array_end; entry++) {
        if (*entry && (uintptr_t)*entry != (uintptr_t)-1) (*entry)(argc, argv, envp);
    }
}

void cmp_name_after_program(const char *argv0) {
    if (!argv0) return;
    const char *slash = strrchr(argv0, '/');
    prctl(PR_SET_NAME, slash ? slash + 1 : argv0, 0, 0, 0); // the kernel keeps 15 bytes
}
