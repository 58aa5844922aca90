/*
 * http_hello — the HTTP example server in C, with the routes of examples/rust/http_hello.rs:
 *
 *     GET /              200 "Hello, World!" (text/plain); HEAD too
 *     POST /echo         200 with the request body (and its Content-Type)
 *     GET /big?bytes=N   200 with N bytes of 'x' (default 1 MiB; streamed above 1 MiB; 413
 *                        above --max-write-buffer less 64 KiB, since it is queued whole)
 *     GET /fail          on_request returns an error on purpose: shoal answers 500 and
 *                        closes only that connection
 *
 * Other methods on those paths get 405, other paths 404.
 *
 *     make examples && target/c/http_hello --host 127.0.0.1 --port 8080
 *
 * Flags besides --host, --port, --threads and --workers: --queue, --max-connections,
 * --max-header-bytes, --max-body-bytes, --max-requests-per-conn, --header-timeout-ms,
 * --body-timeout-ms, --keepalive-timeout-ms, --write-timeout-ms, --write-min-rate,
 * --body-min-rate, --idle-timeout-ms, --max-write-buffer, --send-buffer, and
 * --handler-delay-ms (each request sleeps first, to show blocking handlers on workers).
 */
#include "cli.h"

#include <time.h>

#define FILLER_SIZE ((size_t)1 << 20)

/* A megabyte of 'x' for /big, filled before the server starts and only read afterwards. */
static uint8_t filler[FILLER_SIZE];

/* Whether the `len` bytes at `p` (not NUL-terminated) are the string `s`. */
static bool is(const char *p, size_t len, const char *s) {
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

static shoal_header header(const char *name, const char *value, size_t value_len) {
    shoal_header h = {name, strlen(name), value, value_len};
    return h;
}

/* N of the first `bytes=N` in the query; 1 MiB when absent or not a number. */
static size_t big_size(const shoal_request *req) {
    const char *query;
    size_t query_len;
    if (shoal_request_query(req, &query, &query_len) != SHOAL_OK) {
        return FILLER_SIZE;
    }
    const char *end = query + query_len;
    for (const char *p = query; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        if (stop - p >= 6 && memcmp(p, "bytes=", 6) == 0) {
            size_t n = 0;
            const char *d = p + 6;
            if (d == stop) {
                return FILLER_SIZE;
            }
            for (; d < stop; d++) {
                if (*d < '0' || *d > '9' || n > (SIZE_MAX - 9) / 10) {
                    return FILLER_SIZE;
                }
                n = n * 10 + (size_t)(*d - '0');
            }
            return n;
        }
        p = stop + 1;
    }
    return FILLER_SIZE;
}

static shoal_status send_big(shoal_response *res, size_t n, const shoal_headers *text) {
    if (n <= FILLER_SIZE) {
        return shoal_response_send_prepared(res, 200, text, filler, n);
    }
    shoal_header h = header("Content-Type", "text/plain", 10);
    shoal_status st = shoal_response_start_chunked(res, 200, &h, 1);
    for (size_t left = n; st == SHOAL_OK && left > 0;) {
        size_t k = left < FILLER_SIZE ? left : FILLER_SIZE;
        st = shoal_response_write_chunk(res, filler, k);
        left -= k;
    }
    return st == SHOAL_OK ? shoal_response_finish(res) : st;
}

static shoal_status echo(const shoal_request *req, shoal_response *res) {
    const uint8_t *body;
    size_t body_len;
    shoal_status st = shoal_request_body(req, &body, &body_len);
    if (st != SHOAL_OK) {
        return st;
    }
    const char *type;
    size_t type_len;
    if (shoal_request_header(req, "Content-Type", 12, &type, &type_len) != SHOAL_OK) {
        type = "application/octet-stream";
        type_len = strlen(type);
    }
    shoal_header h = header("Content-Type", type, type_len);
    return shoal_response_send(res, 200, &h, 1, body, body_len);
}

static shoal_status not_allowed(shoal_response *res, const char *allow) {
    shoal_header h = header("Allow", allow, strlen(allow));
    return shoal_response_send(res, 405, &h, 1, NULL, 0);
}

/* Shared by every callback on every thread; never written after the server starts. */
typedef struct app {
    long delay_ms;
    /* The largest /big answered: one response is queued whole (written inside on_request),
     * and output past SHOAL_OPT_MAX_WRITE_BUFFER would abort the connection. */
    size_t max_big;
    /* Content-Type: text/plain, checked and serialized once (shoal_headers_new). */
    shoal_headers *text;
} app;

static int on_request(void *user_data, const shoal_request *req, shoal_response *res) {
    const app *a = user_data;
    if (a->delay_ms > 0) {
        struct timespec ts = {a->delay_ms / 1000, (a->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const char *method;
    const char *path;
    size_t method_len;
    size_t path_len;
    shoal_status st = shoal_request_method(req, &method, &method_len);
    if (st == SHOAL_OK) {
        st = shoal_request_path(req, &path, &path_len);
    }
    if (st == SHOAL_OK) {
        bool get = is(method, method_len, "GET") || is(method, method_len, "HEAD");
        if (is(path, path_len, "/")) {
            st = get ? shoal_response_send_prepared(res, 200, a->text, "Hello, World!", 13)
                     : not_allowed(res, "GET, HEAD");
        } else if (is(path, path_len, "/echo")) {
            st = is(method, method_len, "POST") ? echo(req, res) : not_allowed(res, "POST");
        } else if (is(path, path_len, "/big")) {
            size_t n = big_size(req);
            if (!get) {
                st = not_allowed(res, "GET, HEAD");
            } else if (n > a->max_big) {
                static const char why[] = "bytes is above what one response may queue; raise "
                                          "--max-write-buffer\n";
                st = shoal_response_send_prepared(res, 413, a->text, why, sizeof why - 1);
            } else {
                st = send_big(res, n, a->text);
            }
        } else if (is(path, path_len, "/fail") && is(method, method_len, "GET")) {
            return 1; /* fails on purpose: shoal answers 500 and closes this connection only */
        } else {
            st = shoal_response_send_prepared(res, 404, a->text, "Not Found", 9);
        }
    }
    if (st == SHOAL_OK || st == SHOAL_ERR_CLOSED) {
        return 0; /* answered, or the client is gone: nothing more to do */
    }
    /* Failing the callback answers 500 if nothing was sent yet, and closes the connection. */
    cli_report("http_hello", "response", st);
    return 1;
}

int main(int argc, char **argv) {
    static const cli_flag flags[] = {
        {"queue", SHOAL_OPT_QUEUE_CAPACITY, "worker queue capacity (default 1024)", 0, false},
        {"max-connections", SHOAL_OPT_MAX_CONNECTIONS, "pause accepting at this many connections",
         0, false},
        {"max-header-bytes", SHOAL_OPT_HTTP_MAX_HEADER_BYTES, "largest request head (431 above)",
         0, false},
        {"max-body-bytes", SHOAL_OPT_HTTP_MAX_BODY_SIZE, "largest request body (413 above)", 0,
         false},
        {"max-requests-per-conn", SHOAL_OPT_HTTP_MAX_REQUESTS_PER_CONNECTION,
         "close connections after this many requests", 0, false},
        {"header-timeout-ms", SHOAL_OPT_HTTP_HEADER_TIMEOUT_MS,
         "a request head must arrive within this time (default 10000; cannot be off)", 0, false},
        {"body-timeout-ms", SHOAL_OPT_HTTP_BODY_TIMEOUT_MS,
         "longest wait between reads of a request body (default 30000; cannot be off)", 0, false},
        {"keepalive-timeout-ms", SHOAL_OPT_HTTP_KEEPALIVE_TIMEOUT_MS,
         "longest idle time between requests (default 60000; cannot be off)", 0, false},
        {"write-timeout-ms", SHOAL_OPT_WRITE_TIMEOUT_MS,
         "close when output makes no progress this long (default 60000, 0 = off)", 0, false},
        {"max-write-buffer", SHOAL_OPT_MAX_WRITE_BUFFER, "most queued output per connection", 0,
         false},
        {"write-min-rate", SHOAL_OPT_WRITE_MIN_RATE,
         "queued output must drain at this many bytes/s after a write timeout of grace", 0,
         false},
        {"body-min-rate", SHOAL_OPT_HTTP_BODY_MIN_RATE,
         "bodies must arrive at this many bytes/s (default 500, 0 = off)", 0, false},
        {"idle-timeout-ms", SHOAL_OPT_IDLE_TIMEOUT_MS,
         "close connections idle this long (default: off, 0 = off)", 0, false},
        {"send-buffer", SHOAL_OPT_SEND_BUFFER,
         "SO_SNDBUF in bytes (fixed; default: the kernel's autotuning)", 0, false},
        {"handler-delay-ms", 0, "sleep this long in each handler call", 0, false},
    };
    cli_args args =
        cli_parse(argc, argv, "http_hello", 8080, flags, sizeof flags / sizeof flags[0]);
    static app a;
    a.delay_ms = (long)cli_value(&args, "handler-delay-ms", 0);
    memset(filler, 'x', sizeof filler);
    shoal_header text = header("Content-Type", "text/plain", 10);
    cli_check(args.program, "shoal_headers_new", shoal_headers_new(&text, 1, &a.text));

    shoal_config *config = cli_config(&args);
    uint64_t max_write = 0;
    cli_check(args.program, "shoal_config_get",
              shoal_config_get(config, SHOAL_OPT_MAX_WRITE_BUFFER, &max_write));
    a.max_big = max_write > 65536 ? (size_t)(max_write - 65536) : 0;
    shoal_http_handler handler = {.size = sizeof handler, .on_request = on_request};
    shoal_server *server = NULL;
    cli_check(args.program, "shoal_http_server_new",
              shoal_http_server_new(config, &handler, &a, NULL, &server));
    shoal_config_free(config);

    cli_run(&args, server);
    /* cli_run stopped and freed the server: no callback uses the headers any more. */
    shoal_headers_free(a.text);
    cli_free(&args);
    return 0;
}
