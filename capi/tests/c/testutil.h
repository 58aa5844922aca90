/* Helpers for the C tests: checks that exit with a message, and blocking loopback clients. */
#ifndef SHOAL_TESTUTIL_H
#define SHOAL_TESTUTIL_H

#include "shoal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define CHECK_STATUS(expr, want)                                                         \
    do {                                                                                 \
        shoal_status s_ = (expr);                                                        \
        if (s_ != (want)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d %s (%s), wanted %s\n", __FILE__,      \
                    __LINE__, #expr, s_, shoal_err_name(s_), shoal_last_error(), #want); \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, SHOAL_OK)

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A blocking client connected to 127.0.0.1:port, with a 5 s receive timeout. */
static inline int connect_to(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    struct timeval tv = {5, 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    int one = 1;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    return fd;
}

static inline void send_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        CHECK(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static inline void send_str(int fd, const char *s) { send_all(fd, s, strlen(s)); }

/* Reads exactly len bytes (fails the test on timeout or end of stream). */
static inline void recv_exact(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0) {
            fprintf(stderr, "recv_exact: %s with %zu bytes missing\n",
                    n == 0 ? "end of stream" : strerror(errno), len);
            exit(1);
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until end of stream (or a reset or timeout); returns the bytes read, NUL-terminated. */
static inline size_t recv_until_close(int fd, char *buf, size_t cap) {
    size_t got = 0;
    for (;;) {
        CHECK(got + 1 < cap);
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    buf[got] = 0;
    return got;
}

/* Whether the peer closed (end of stream or reset) within the receive timeout. */
static inline int closed_by_peer(int fd) {
    char b;
    ssize_t n = recv(fd, &b, 1, 0);
    return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
}

/* A configuration on 127.0.0.1, a free port, `threads` reactors and `workers` workers. */
static inline shoal_config *test_config(uint64_t threads, uint64_t workers) {
    shoal_config *c = shoal_config_new();
    CHECK(c != NULL);
    const char *addr = "127.0.0.1:0";
    CHECK_OK(shoal_config_set_addr(c, addr, strlen(addr)));
    CHECK_OK(shoal_config_set(c, SHOAL_OPT_THREADS, threads));
    CHECK_OK(shoal_config_set(c, SHOAL_OPT_WORKERS, workers));
    CHECK_OK(shoal_config_set(c, SHOAL_OPT_SHUTDOWN_GRACE_MS, 2000));
    return c;
}

#endif
