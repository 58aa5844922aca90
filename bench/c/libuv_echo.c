/*
 * libuv_echo: the libuv peer of shoal's echo benchmark.
 *
 * An echo server as libuv's own documentation writes one, on one uv_loop:
 * uv_listen, uv_accept into a malloc'ed uv_tcp_t per connection, uv_read_start,
 * and every chunk written straight back. The read callback's buffer is one
 * static 64 KiB block (the loop is single-threaded and the bytes are written
 * before the next read), and the write is tried at once with uv_try_write; only
 * what the socket did not take is copied into a uv_write_t request. So an echoed
 * message costs one read and one write, as in the epoll reference.
 *
 *   libuv_echo --host 127.0.0.1 --port 0 [--threads N (ignored)]
 *
 * Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
 * Build: cc -O2 -Wall -Wextra -Werror -o libuv_echo libuv_echo.c -luv
 * (Debian: libuv1-dev).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#define BUF_SIZE (64 * 1024)

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static char read_buf[BUF_SIZE];
static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_int, sig_term;

static void on_close(uv_handle_t *handle) { free(handle); }

static void alloc_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)handle;
    (void)suggested;
    *buf = uv_buf_init(read_buf, BUF_SIZE);
}

static void on_write(uv_write_t *req, int status) {
    write_req_t *wr = (write_req_t *)req;
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
    free(wr->buf.base);
    free(wr);
}

static void on_read(uv_stream_t *client, ssize_t nread, const uv_buf_t *buf) {
    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)client))
            uv_close((uv_handle_t *)client, on_close);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    uv_buf_t out = uv_buf_init(buf->base, (unsigned int)nread);
    int sent = uv_try_write(client, &out, 1);
    if (sent == nread)
        return;
    if (sent < 0 && sent != UV_EAGAIN) {
        if (!uv_is_closing((uv_handle_t *)client))
            uv_close((uv_handle_t *)client, on_close);
        return;
    }
    if (sent < 0)
        sent = 0;
    /* The rest goes through a write request, which owns a copy of it. */
    size_t rest = (size_t)nread - (size_t)sent;
    write_req_t *wr = malloc(sizeof(*wr));
    char *copy = malloc(rest);
    if (!wr || !copy) {
        free(wr);
        free(copy);
        uv_close((uv_handle_t *)client, on_close);
        return;
    }
    memcpy(copy, buf->base + sent, rest);
    wr->buf = uv_buf_init(copy, (unsigned int)rest);
    if (uv_write(&wr->req, client, &wr->buf, 1, on_write) < 0) {
        free(copy);
        free(wr);
        uv_close((uv_handle_t *)client, on_close);
    }
}

static void on_connection(uv_stream_t *srv, int status) {
    if (status < 0) {
        fprintf(stderr, "libuv_echo: connection error: %s\n", uv_strerror(status));
        return;
    }
    uv_tcp_t *client = malloc(sizeof(*client));
    if (!client)
        return;
    uv_tcp_init(loop, client);
    if (uv_accept(srv, (uv_stream_t *)client) != 0) {
        uv_close((uv_handle_t *)client, on_close);
        return;
    }
    uv_tcp_nodelay(client, 1);
    uv_read_start((uv_stream_t *)client, alloc_buffer, on_read);
}

static void on_signal(uv_signal_t *handle, int signum) {
    (void)handle;
    (void)signum;
    uv_stop(loop);
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

    loop = uv_default_loop();
    struct sockaddr_in addr;
    int r = uv_ip4_addr(host, (int)port, &addr);
    if (r) {
        fprintf(stderr, "libuv_echo: bad --host %s: %s\n", host, uv_strerror(r));
        return 2;
    }
    uv_tcp_init(loop, &server);
    if ((r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&server, 4096, on_connection)) != 0) {
        fprintf(stderr, "libuv_echo: listen on %s:%ld: %s\n", host, port, uv_strerror(r));
        return 1;
    }
    int alen = sizeof(addr);
    if ((r = uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &alen)) != 0) {
        fprintf(stderr, "libuv_echo: getsockname: %s\n", uv_strerror(r));
        return 1;
    }
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);

    char ip[INET_ADDRSTRLEN];
    uv_ip4_name(&addr, ip, sizeof(ip));
    printf("listening on %s:%u\n", ip, ntohs(addr.sin_port));
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
