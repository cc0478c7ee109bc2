// Listening and connecting stream sockets for MP.Listener and MP.Client:
// the sockaddr plumbing (Unix paths, the Linux abstract namespace, TCP over
// IPv4 and IPv6 through getaddrinfo) that Swift's Glibc module makes awkward.
// Each returns a close-on-exec descriptor, or -errno; getaddrinfo failures
// are -(1000 + its EAI_ code's absolute value) (see cmp_address_error).
#define _GNU_SOURCE
#include <poll.h>
#include <fcntl.h>
#include "_CMultiprocessingShims.h"
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

// Every TCP socket of ours sends at once (TCP_NODELAY): the handshake and
// the request/reply traffic on top of it are small messages answered by the
// peer, where Nagle's algorithm against delayed ACKs costs about 40 ms a turn.
static void send_at_once(int fd) {
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

static int unix_address(const char *name, int abstract, struct sockaddr_un *address, socklen_t *length) {
    size_t size = strlen(name);
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (abstract) {
        if (size + 1 > sizeof address->sun_path) return -ENAMETOOLONG;
        memcpy(address->sun_path + 1, name, size); // sun_path[0] stays '\0'
        *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + size);
    } else {
        if (size + 1 > sizeof address->sun_path) return -ENAMETOOLONG;
        memcpy(address->sun_path, name, size);
        *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + size + 1);
    }
    return 0;
}

int cmp_listen_unix(const char *name, int abstract, int backlog, unsigned int mode) {
    struct sockaddr_un address;
    socklen_t length;
    int status = unix_address(name, abstract, &address, &length);
    if (status < 0) return status;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    // The socket file is created owner-only (or `mode`) from the start: no
    // window in which another user could connect.
    mode_t previous = umask(0777 & ~mode);
    int bound = bind(fd, (struct sockaddr *)&address, length);
    int error = errno;
    umask(previous);
    if (bound < 0 || listen(fd, backlog) < 0) {
        if (bound >= 0) error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int cmp_connect_unix(const char *name, int abstract) {
    struct sockaddr_un address;
    socklen_t length;
    int status = unix_address(name, abstract, &address, &length);
    if (status < 0) return status;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int connected;
    do { connected = connect(fd, (struct sockaddr *)&address, length); } while (connected < 0 && errno == EINTR);
    if (connected < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

static int resolve(const char *host, int port, int passive, struct addrinfo **results) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    int status = getaddrinfo(host[0] ? host : NULL, service, &hints, results);
    if (status == EAI_SYSTEM) return -errno;
    if (status != 0) return -(1000 + (status < 0 ? -status : status));
    return 0;
}

int cmp_listen_tcp(const char *host, int port, int backlog, int *bound_port) {
    struct addrinfo *results;
    int status = resolve(host, port, 1, &results);
    if (status < 0) return status;
    int error = EADDRNOTAVAIL;
    int fd = -1;
    for (struct addrinfo *candidate = results; candidate; candidate = candidate->ai_next) {
        fd = socket(candidate->ai_family, candidate->ai_socktype | SOCK_CLOEXEC, candidate->ai_protocol);
        if (fd < 0) { error = errno; continue; }
        int yes = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes); // as CPython's SocketListener
        if (bind(fd, candidate->ai_addr, candidate->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
        error = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(results);
    if (fd < 0) return -error;
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    if (getsockname(fd, (struct sockaddr *)&address, &length) == 0) {
        if (address.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&address)->sin_port);
        if (address.ss_family == AF_INET6) *bound_port = ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
    }
    return fd;
}

// connect() that gives up after `timeout_ms` (negative: the kernel's own
// limit, minutes over a dead link): a non-blocking connect, then poll.
static int connect_within(int fd, const struct sockaddr *address, socklen_t length, int timeout_ms) {
    if (timeout_ms < 0) {
        int connected;
        do { connected = connect(fd, address, length); } while (connected < 0 && errno == EINTR);
        return connected;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -1;
    int connected = connect(fd, address, length);
    if (connected < 0 && (errno == EINPROGRESS || errno == EINTR)) {
        struct pollfd entry = {fd, POLLOUT, 0};
        int ready;
        do { ready = poll(&entry, 1, timeout_ms); } while (ready < 0 && errno == EINTR);
        if (ready == 0) { errno = ETIMEDOUT; return -1; }
        if (ready < 0) return -1;
        int error = 0;
        socklen_t size = sizeof error;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0) return -1;
        if (error != 0) { errno = error; return -1; }
        connected = 0;
    }
    if (connected < 0) return -1;
    return fcntl(fd, F_SETFL, flags) < 0 ? -1 : 0;
}

int cmp_connect_tcp(const char *host, int port) { return cmp_connect_tcp_within(host, port, -1); }

int cmp_connect_tcp_within(const char *host, int port, int timeout_ms) {
    struct addrinfo *results;
    int status = resolve(host, port, 0, &results);
    if (status < 0) return status;
    int error = ECONNREFUSED;
    int fd = -1;
    for (struct addrinfo *candidate = results; candidate; candidate = candidate->ai_next) {
        fd = socket(candidate->ai_family, candidate->ai_socktype | SOCK_CLOEXEC, candidate->ai_protocol);
        if (fd < 0) { error = errno; continue; }
        if (connect_within(fd, candidate->ai_addr, candidate->ai_addrlen, timeout_ms) == 0) { send_at_once(fd); break; }
        error = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(results);
    return fd < 0 ? -error : fd;
}

const char *cmp_address_error(int code) {
    return gai_strerror(-(code - 1000)); // glibc's EAI_ codes are negative
}

int cmp_accept(int listener, char *peer, int peer_capacity) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd;
    do { fd = accept4(listener, (struct sockaddr *)&address, &length, SOCK_CLOEXEC); } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -errno;
    peer[0] = 0;
    if (address.ss_family == AF_INET || address.ss_family == AF_INET6) {
        send_at_once(fd);
        char host[NI_MAXHOST], service[NI_MAXSERV];
        if (getnameinfo((struct sockaddr *)&address, length, host, sizeof host, service, sizeof service,
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            snprintf(peer, (size_t)peer_capacity, "%s %s", host, service);
        }
    }
    return fd;
}

#include <sys/random.h>

long cmp_getrandom(void *buffer, unsigned long count) {
    return (long)getrandom(buffer, count, 0);
}
