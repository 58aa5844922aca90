/*
 * epoll_http: the reference HTTP server of shoal's HTTP benchmark.
 *
 * The practical limit of one core: one thread, raw edge-triggered epoll,
 * nonblocking sockets from accept4, TCP_NODELAY, keep-alive, and nothing an
 * HTTP server does beyond framing. A request is whatever ends with
 * "\r\n\r\n" and starts with "GET " (no bodies: this is a reference, not a
 * real server; any other method closes the connection). Every complete
 * request appends the same fixed response, with a Date header formatted at
 * most once per second, to an output batch:
 *
 *   HTTP/1.1 200 OK\r\nServer: epoll\r\nContent-Type: text/plain\r\n
 *   Content-Length: 13\r\nDate: <IMF-fixdate>\r\n\r\nHello, World!
 *
 * A readable connection is read until drained (a short read counts as
 * drained, as in epoll_echo.c), and the batch is written once at the end:
 * 16 pipelined requests that arrive in one read get 16 responses in one
 * write. Output is kept per connection only when a write comes up short;
 * reading pauses until it is flushed. Partial requests are carried over.
 *
 *   epoll_http --host 127.0.0.1 --port 0 [--threads N (ignored)]
 *
 * Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
 * Build: cc -O2 -Wall -Wextra -Werror -o epoll_http epoll_http.c
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
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define OUT_SIZE (1024 * 1024) /* flushed early if a batch gets this big */
#define MAX_HEAD (16 * 1024)   /* longest request head we carry over */
#define MAX_EVENTS 1024

#define RESP_HEAD                                                              \
    "HTTP/1.1 200 OK\r\nServer: epoll\r\nContent-Type: text/plain\r\n"         \
    "Content-Length: 13\r\nDate: "
#define DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define RESP_TAIL "\r\n\r\nHello, World!"
#define RESP_LEN (sizeof(RESP_HEAD) - 1 + DATE_LEN + sizeof(RESP_TAIL) - 1)

struct bytes {
    char *p;
    size_t len; /* bytes in use, from off */
    size_t off;
    size_t cap;
};

struct conn {
    struct bytes in;  /* the start of a request that has not ended yet */
    struct bytes out; /* output a short write left behind */
    int read_paused;  /* stopped reading until out is flushed */
};

static char rbuf[BUF_SIZE];
static char obuf[OUT_SIZE]; /* the batch being built, for one connection */
static size_t olen;
static char response[RESP_LEN + 1];
static time_t response_sec = -1;
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

/* Reformats the Date header when the second has changed. */
static void refresh_date(void) {
    time_t now = time(NULL);
    if (now == response_sec)
        return;
    response_sec = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    char date[DATE_LEN + 1];
    if (strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm) != DATE_LEN)
        memset(date, 'X', DATE_LEN); /* years past 9999 */
    memcpy(response, RESP_HEAD, sizeof(RESP_HEAD) - 1);
    memcpy(response + sizeof(RESP_HEAD) - 1, date, DATE_LEN);
    memcpy(response + sizeof(RESP_HEAD) - 1 + DATE_LEN, RESP_TAIL, sizeof(RESP_TAIL) - 1);
}

static void close_conn(int fd) {
    struct conn *c = &conns[fd];
    free(c->in.p);
    free(c->out.p);
    memset(c, 0, sizeof(*c));
    close(fd); /* also removes fd from the epoll set */
}

/* Appends data[0..len) to b; -1 when out of memory. */
static int append(struct bytes *b, const char *data, size_t len) {
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len);
        b->off = 0;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* Writes out c->out; 1 = all sent, 0 = still some, -1 = error. */
static int flush_pending(int fd, struct conn *c) {
    while (c->out.len > 0) {
        ssize_t n = write(fd, c->out.p + c->out.off, c->out.len);
        if (n > 0) {
            c->out.off += (size_t)n;
            c->out.len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            return -1;
        }
    }
    c->out.off = 0;
    return 1;
}

/* Writes the batch in obuf once; what does not fit is kept in c->out. */
static int flush_batch(int fd, struct conn *c) {
    size_t done = 0;
    while (done < olen) {
        ssize_t n = write(fd, obuf + done, olen - done);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            olen = 0;
            return -1;
        }
    }
    int r = done < olen ? append(&c->out, obuf + done, olen - done) : 0;
    olen = 0;
    return r;
}

/* One response into the batch (or behind the output already pending). */
static int respond(int fd, struct conn *c) {
    if (c->out.len > 0)
        return append(&c->out, response, RESP_LEN);
    if (olen + RESP_LEN > OUT_SIZE && flush_batch(fd, c) < 0)
        return -1;
    if (c->out.len > 0)
        return append(&c->out, response, RESP_LEN);
    memcpy(obuf + olen, response, RESP_LEN);
    olen += RESP_LEN;
    return 0;
}

/* Answers every complete request in data[0..len); returns how many bytes
 * they took, or -1 when the connection must be closed. */
static ssize_t answer(int fd, struct conn *c, const char *data, size_t len) {
    size_t pos = 0;
    for (;;) {
        const char *end = memmem(data + pos, len - pos, "\r\n\r\n", 4);
        if (!end)
            return (ssize_t)pos;
        if (len - pos < 4 || memcmp(data + pos, "GET ", 4) != 0)
            return -1; /* not a GET: no body framing here */
        if (respond(fd, c) < 0)
            return -1;
        pos = (size_t)(end - data) + 4;
    }
}

/* Takes in n freshly read bytes; -1 when the connection must be closed. */
static int take(int fd, struct conn *c, size_t n) {
    if (c->in.len == 0) {
        ssize_t used = answer(fd, c, rbuf, n);
        if (used < 0)
            return -1;
        if ((size_t)used < n && append(&c->in, rbuf + used, n - (size_t)used) < 0)
            return -1;
    } else {
        if (append(&c->in, rbuf, n) < 0)
            return -1;
        ssize_t used = answer(fd, c, c->in.p + c->in.off, c->in.len);
        if (used < 0)
            return -1;
        c->in.off += (size_t)used;
        c->in.len -= (size_t)used;
        if (c->in.len == 0)
            c->in.off = 0;
    }
    return c->in.len > MAX_HEAD ? -1 : 0;
}

/* Reads until drained, answering as it goes, then writes the batch once;
 * -1 when the connection must be closed. */
static int serve(int fd, struct conn *c, int rdhup) {
    int eof = 0;
    for (;;) {
        ssize_t n = read(fd, rbuf, BUF_SIZE);
        if (n == 0) {
            eof = 1;
            break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            olen = 0;
            return -1;
        }
        if (take(fd, c, (size_t)n) < 0) {
            eof = 1; /* answer what came before, then close */
            break;
        }
        if (c->out.len > 0)
            break; /* backpressure: resume on EPOLLOUT once flushed */
        if (n < BUF_SIZE && !rdhup)
            break; /* short read: the socket is drained */
    }
    if (olen > 0 && flush_batch(fd, c) < 0)
        return -1;
    if (eof)
        return -1;
    if (c->out.len > 0)
        c->read_paused = 1;
    return 0;
}

static void on_conn_event(int fd, uint32_t ev) {
    struct conn *c = &conns[fd];
    if (ev & (EPOLLERR | EPOLLHUP)) {
        close_conn(fd);
        return;
    }
    if ((ev & EPOLLOUT) && c->out.len > 0) {
        int r = flush_pending(fd, c);
        if (r < 0) {
            close_conn(fd);
            return;
        }
        if (r == 0)
            return;
    }
    if ((ev & (EPOLLIN | EPOLLRDHUP)) || (c->read_paused && c->out.len == 0)) {
        if (c->out.len > 0)
            return; /* backpressure: read again once the output drains */
        c->read_paused = 0;
        if (serve(fd, c, (ev & EPOLLRDHUP) != 0) < 0)
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
        refresh_date(); /* one time() per wakeup, one strftime per second */
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
