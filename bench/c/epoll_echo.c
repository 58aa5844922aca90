/*
 * epoll_echo: the reference echo server of shoal's benchmarks.
 *
 * One thread, raw edge-triggered epoll, nothing else: the floor that an echo
 * server on this kernel can reach. Each readable connection is read into one
 * static 64 KiB buffer and written straight back; a short read is taken as
 * "drained" (no read that would only return EAGAIN), so an echoed message
 * costs one read and one write plus a share of epoll_pwait. Output is buffered
 * per connection only when a write comes up short.
 *
 *   epoll_echo --host 127.0.0.1 --port 0 [--threads N (ignored)]
 *
 * Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
 * Build: cc -O2 -Wall -Wextra -Werror -o epoll_echo epoll_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 1024

struct conn {
    char *pend;       /* bytes a short write left behind, or NULL */
    size_t pend_len;  /* how many of them are still to send */
    size_t pend_off;  /* where they start in pend */
    size_t pend_cap;
    int read_paused;  /* stopped reading until pend is flushed */
};

static char buf[BUF_SIZE];
static struct conn *conns; /* indexed by fd */
static int max_fds;
static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void close_conn(int fd) {
    struct conn *c = &conns[fd];
    free(c->pend);
    memset(c, 0, sizeof(*c));
    close(fd); /* also removes fd from the epoll set */
}

/* Keeps data[0..len) for later; returns -1 when out of memory. */
static int keep(struct conn *c, const char *data, size_t len) {
    if (c->pend_off > 0 && c->pend_len > 0)
        memmove(c->pend, c->pend + c->pend_off, c->pend_len);
    c->pend_off = 0;
    if (c->pend_len + len > c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap : 4096;
        while (cap < c->pend_len + len)
            cap *= 2;
        char *p = realloc(c->pend, cap);
        if (!p)
            return -1;
        c->pend = p;
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, data, len);
    c->pend_len += len;
    return 0;
}

/* Writes out pending output; 1 = all sent, 0 = still some, -1 = error. */
static int flush_pending(int fd, struct conn *c) {
    while (c->pend_len > 0) {
        ssize_t n = write(fd, c->pend + c->pend_off, c->pend_len);
        if (n > 0) {
            c->pend_off += (size_t)n;
            c->pend_len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            return -1;
        }
    }
    c->pend_off = 0;
    return 1;
}

/* Reads and echoes until drained; -1 when the connection must be closed. */
static int echo(int fd, struct conn *c, int rdhup) {
    for (;;) {
        ssize_t n = read(fd, buf, BUF_SIZE);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return -1;
            w = 0;
        }
        if (w < n) {
            if (keep(c, buf + w, (size_t)(n - w)) < 0)
                return -1;
            c->read_paused = 1; /* resume on EPOLLOUT once flushed */
            return 0;
        }
        if (n < BUF_SIZE && !rdhup)
            return 0; /* short read: the socket is drained */
    }
}

static void on_conn_event(int fd, uint32_t ev) {
    struct conn *c = &conns[fd];
    if (ev & (EPOLLERR | EPOLLHUP)) {
        close_conn(fd);
        return;
    }
    if ((ev & EPOLLOUT) && c->pend_len > 0) {
        int r = flush_pending(fd, c);
        if (r < 0) {
            close_conn(fd);
            return;
        }
        if (r == 0)
            return;
    }
    if ((ev & (EPOLLIN | EPOLLRDHUP)) || (c->read_paused && c->pend_len == 0)) {
        if (c->pend_len > 0)
            return; /* backpressure: read again once the output drains */
        c->read_paused = 0;
        if (echo(fd, c, (ev & EPOLLRDHUP) != 0) < 0)
            close_conn(fd);
    }
}

static void on_accept(int ep, int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                perror("accept4");
            return; /* EAGAIN, or EMFILE & co: try again on the next edge */
        }
        if (fd >= max_fds) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct epoll_event e = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
            .data.fd = fd,
        };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            perror("epoll_ctl");
            close(fd);
        }
    }
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s --host IPV4 --port PORT [--threads N]\n", argv0);
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    long port = -1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(argv[0]);
        if (strcmp(argv[i], "--host") == 0) {
            host = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0) {
            char *end;
            port = strtol(argv[++i], &end, 10);
            if (*end || port < 0 || port > 65535)
                usage(argv[0]);
        } else if (strcmp(argv[i], "--threads") == 0) {
            ++i; /* single-threaded by design */
        } else {
            usage(argv[0]);
        }
    }
    if (port < 0)
        usage(argv[0]);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("setrlimit");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    max_fds = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1 << 20) ? (1 << 20) : (int)rl.rlim_cur;
    conns = calloc((size_t)max_fds, sizeof(*conns));
    if (!conns)
        die("calloc");

    signal(SIGPIPE, SIG_IGN);
    /* SIGINT/SIGTERM stay blocked except inside epoll_pwait: no lost wakeup. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &block, &waitmask) < 0)
        die("sigprocmask");
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad --host %s (need an IPv4 address)\n", host);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    socklen_t alen = sizeof(addr);
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("getsockname");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event le = {.events = EPOLLIN | EPOLLET, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le) < 0)
        die("epoll_ctl");

    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
    printf("listening on %s:%u\n", ip, ntohs(addr.sin_port));
    fflush(stdout);

    static struct epoll_event events[MAX_EVENTS];
    while (!stop) {
        int n = epoll_pwait(ep, events, MAX_EVENTS, -1, &waitmask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_pwait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd)
                on_accept(ep, lfd);
            else
                on_conn_event(fd, events[i].events);
        }
    }
    return 0;
}
