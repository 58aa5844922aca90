/* HTTP servers through the C interface: routes reading method, path, query, version, headers
 * (by name and by index) and body; immediate, streamed and deferred responses (answered from
 * another pthread, with pipelined requests behind); a failing callback answered with 500;
 * a callback failing after its answer (the answer arrives, then the connection closes as a
 * handler failure);
 * invalid response headers refused; prepared header blocks (copied at creation, refused when
 * invalid, sent now and from a pthread); a deferred answer past the response timeout (503, the
 * late answer refused); HTTP stats. Runs inline and with workers. */
#include "testutil.h"

#include <stdatomic.h>

static atomic_int freed;
/* The response /hold deferred and kept. */
static _Atomic(shoal_deferred *) held;
/* Made once in main before any server runs, freed after the last one. */
static shoal_headers *prepared;

static shoal_header hdr(const char *name, const char *value) {
    shoal_header h = {name, strlen(name), value, strlen(value)};
    return h;
}

/* The running scenario's server, for the calls refused on an HTTP server. */
static shoal_server *current_srv;

static void *answer_later(void *p) {
    shoal_deferred *d = p;
    /* An HTTP server's connections belong to its layer: a resume from here would answer the
     * request pipelined behind this one first; raw writes and timers would break framing. */
    uint64_t id = shoal_deferred_conn_id(d);
    CHECK_STATUS(shoal_server_resume_input(current_srv, id), SHOAL_ERR_WRONG_KIND);
    CHECK(strstr(shoal_last_error(), "HTTP server") != NULL);
    CHECK_STATUS(shoal_server_write(current_srv, id, "x", 1), SHOAL_ERR_WRONG_KIND);
    CHECK_STATUS(shoal_server_set_timer(current_srv, id, 1, 1), SHOAL_ERR_WRONG_KIND);
    CHECK_STATUS(shoal_server_cancel_timer(current_srv, id, 1), SHOAL_ERR_WRONG_KIND);
    shoal_writer *w = NULL;
    CHECK_STATUS(shoal_server_paced_writer(current_srv, id, &w), SHOAL_ERR_WRONG_KIND);
    CHECK(w == NULL);
    uint64_t out = 0;
    CHECK_STATUS(shoal_server_connect(current_srv, "127.0.0.1:9", 11, &out), SHOAL_ERR_WRONG_KIND);
    sleep_ms(20);
    shoal_header h = hdr("X-From", "pthread");
    CHECK_OK(shoal_deferred_send(d, 200, &h, 1, "deferred", 8));
    CHECK_STATUS(shoal_deferred_send(d, 200, NULL, 0, NULL, 0), SHOAL_ERR_INVALID_RESPONSE);
    shoal_deferred_free(d);
    return NULL;
}

static void *answer_prepared_later(void *p) {
    shoal_deferred *d = p;
    sleep_ms(5);
    CHECK_STATUS(shoal_deferred_send_prepared(d, 200, NULL, NULL, 0), SHOAL_ERR_NULL);
    CHECK_OK(shoal_deferred_send_prepared(d, 201, prepared, "later", 5));
    CHECK_STATUS(shoal_deferred_send_prepared(d, 200, prepared, NULL, 0),
                 SHOAL_ERR_INVALID_RESPONSE);
    shoal_deferred_free(d);
    return NULL;
}

static void *stream_later(void *p) {
    shoal_deferred *d = p;
    shoal_chunked *c = NULL;
    CHECK_OK(shoal_deferred_start_chunked(d, 200, NULL, 0, &c));
    for (int i = 0; i < 3; i++) {
        sleep_ms(5);
        CHECK_OK(shoal_chunked_write(c, "part;", 5));
    }
    CHECK_OK(shoal_chunked_finish(c));
    shoal_chunked_free(c);
    shoal_deferred_free(d);
    return NULL;
}

/* A 40 MiB body, twice SHOAL_OPT_MAX_WRITE_BUFFER, paced with shoal_chunked_wait(). */
#define PACED_PIECES 40
static uint8_t piece[1 << 20];
static atomic_int paced_done;
static atomic_size_t paced_most;

struct paced {
    shoal_deferred *d;
    shoal_chunked *c;
};

static void *stream_paced(void *p) {
    struct paced *job = p;
    for (int i = 0; i < PACED_PIECES; i++) {
        CHECK_OK(shoal_chunked_wait(job->c, 10000));
        size_t q = shoal_chunked_queued(job->c);
        if (q > atomic_load(&paced_most)) {
            atomic_store(&paced_most, q);
        }
        CHECK_OK(shoal_chunked_write(job->c, piece, sizeof piece));
    }
    CHECK_OK(shoal_chunked_finish(job->c));
    shoal_chunked_free(job->c);
    shoal_deferred_free(job->d);
    free(job);
    atomic_store(&paced_done, 1);
    return NULL;
}

static int equals(const char *p, size_t n, const char *s) {
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static int on_request(void *ud, const shoal_request *req, shoal_response *res) {
    (void)ud;
    const char *path;
    size_t path_len;
    CHECK_OK(shoal_request_path(req, &path, &path_len));
    const char *method;
    size_t method_len;
    CHECK_OK(shoal_request_method(req, &method, &method_len));
    shoal_header text = hdr("Content-Type", "text/plain");
    if (equals(path, path_len, "/")) {
        const char *q;
        size_t q_len;
        CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
        CHECK_STATUS(shoal_request_query(req, &q, &q_len), SHOAL_ERR_NOT_FOUND);
        CHECK(strstr(shoal_last_error(), "no query") != NULL);
        return shoal_response_send(res, 200, &text, 1, "Hello, World!", 13);
    }
    if (equals(path, path_len, "/echo")) {
        const uint8_t *body;
        size_t body_len;
        CHECK_OK(shoal_request_body(req, &body, &body_len));
        return shoal_response_send(res, 200, &text, 1, body, body_len);
    }
    if (equals(path, path_len, "/inspect")) {
        /* method query version header(by name) header_count header_at(0) */
        const char *q;
        size_t q_len;
        CHECK_OK(shoal_request_query(req, &q, &q_len));
        const char *v;
        size_t v_len;
        CHECK_OK(shoal_request_header(req, "x-test", 6, &v, &v_len));
        CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
        CHECK_STATUS(shoal_request_header(req, "absent", 6, &v, &v_len), SHOAL_ERR_NOT_FOUND);
        CHECK(strstr(shoal_last_error(), "no header field") != NULL);
        const char *n0;
        size_t n0_len;
        const char *v0;
        size_t v0_len;
        /* A NULL output fails before any output is written. */
        const char *untouched = "untouched";
        n0 = untouched;
        CHECK_STATUS(shoal_request_header_at(req, 0, &n0, &n0_len, NULL, &v0_len), SHOAL_ERR_NULL);
        CHECK(n0 == untouched);
        CHECK_OK(shoal_request_header_at(req, 0, &n0, &n0_len, &v0, &v0_len));
        CHECK_STATUS(shoal_request_header_at(req, 99, &n0, &n0_len, &v0, &v0_len),
                     SHOAL_ERR_NOT_FOUND);
        CHECK(strstr(shoal_last_error(), "past the request's last header field") != NULL);
        char out[256];
        int n = snprintf(out, sizeof out, "%.*s %.*s %d %.*s %zu %.*s", (int)method_len, method,
                         (int)q_len, q, shoal_request_version(req), (int)v_len, v,
                         shoal_request_header_count(req), (int)n0_len, n0);
        return shoal_response_send(res, 200, &text, 1, out, (size_t)n);
    }
    if (equals(path, path_len, "/prepared")) {
        CHECK_STATUS(shoal_response_send_prepared(res, 200, NULL, "x", 1), SHOAL_ERR_NULL);
        CHECK_STATUS(shoal_response_send_prepared(NULL, 200, prepared, "x", 1), SHOAL_ERR_NULL);
        CHECK_STATUS(shoal_response_send_prepared(res, 99, prepared, "x", 1),
                     SHOAL_ERR_INVALID_RESPONSE);
        return shoal_response_send_prepared(res, 200, prepared, "prepared", 8);
    }
    if (equals(path, path_len, "/defer-prepared")) {
        shoal_deferred *d = NULL;
        CHECK_OK(shoal_response_defer(res, &d));
        pthread_t t;
        CHECK(pthread_create(&t, NULL, answer_prepared_later, d) == 0);
        CHECK(pthread_detach(t) == 0);
        return 0;
    }
    if (equals(path, path_len, "/defer") || equals(path, path_len, "/defer-stream")) {
        shoal_deferred *d = NULL;
        CHECK_OK(shoal_response_defer(res, &d));
        CHECK(shoal_deferred_conn_id(d) == shoal_response_conn_id(res));
        pthread_t t;
        CHECK(pthread_create(&t, NULL, path_len == 6 ? answer_later : stream_later, d) == 0);
        CHECK(pthread_detach(t) == 0);
        return 0;
    }
    if (equals(path, path_len, "/paced")) {
        struct paced *job = calloc(1, sizeof *job);
        CHECK(job != NULL);
        CHECK_OK(shoal_response_defer(res, &job->d));
        CHECK_OK(shoal_deferred_start_chunked(job->d, 200, &text, 1, &job->c));
        /* Here, on the server's own thread, a wait could never end: refused. */
        CHECK_STATUS(shoal_chunked_wait(job->c, 0), SHOAL_ERR_WRONG_THREAD);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, stream_paced, job) == 0);
        CHECK(pthread_detach(t) == 0);
        return 0;
    }
    if (equals(path, path_len, "/stream")) {
        CHECK_OK(shoal_response_start_chunked(res, 200, &text, 1));
        CHECK_OK(shoal_response_write_chunk(res, "a", 1));
        CHECK_OK(shoal_response_write_chunk(res, "bc", 2));
        return shoal_response_finish(res);
    }
    if (equals(path, path_len, "/bad-header")) {
        shoal_header evil = hdr("X-Evil", "a\r\nSet-Cookie: owned");
        CHECK_STATUS(shoal_response_send(res, 200, &evil, 1, NULL, 0),
                     SHOAL_ERR_INVALID_RESPONSE);
        return shoal_response_send(res, 400, &text, 1, "refused", 7);
    }
    if (equals(path, path_len, "/many")) {
        /* More fields than the binding borrows on the stack (16): the heap path. */
        static const char *const names[20] = {"X-A", "X-B", "X-C", "X-D", "X-E", "X-F", "X-G",
                                              "X-H", "X-I", "X-J", "X-K", "X-L", "X-M", "X-N",
                                              "X-O", "X-P", "X-Q", "X-R", "X-S", "X-T"};
        shoal_header many[20];
        for (int i = 0; i < 20; i++) {
            many[i] = hdr(names[i], "v");
        }
        shoal_header holey[2] = {text, {NULL, 4, "v", 1}};
        CHECK_STATUS(shoal_response_send(res, 200, NULL, 2, NULL, 0), SHOAL_ERR_NULL);
        CHECK_STATUS(shoal_response_send(res, 200, holey, 2, NULL, 0), SHOAL_ERR_NULL);
        return shoal_response_send(res, 200, many, 20, "many", 4);
    }
    if (equals(path, path_len, "/hold")) {
        /* Deferred and kept past the response timeout. */
        shoal_deferred *d = NULL;
        CHECK_OK(shoal_response_defer(res, &d));
        atomic_store(&held, d);
        return 0;
    }
    if (equals(path, path_len, "/fail")) {
        return 1; /* unanswered and failing: the server answers 500 and closes */
    }
    if (equals(path, path_len, "/sent-then-fail")) {
        /* Answered, then failing: the answer goes out, then the connection closes. */
        CHECK_OK(shoal_response_send(res, 200, &text, 1, "sent", 4));
        return 1;
    }
    return shoal_response_send(res, 404, &text, 1, "no", 2);
}

static void free_ud(void *ud) {
    (void)ud;
    atomic_fetch_add(&freed, 1);
}

/* Sends a request and reads one response with a Content-Length or chunked body into buf. */
static size_t exchange(int fd, const char *req, char *buf, size_t cap) {
    send_str(fd, req);
    size_t got = 0;
    for (;;) {
        CHECK(got + 1 < cap);
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        CHECK(n > 0);
        got += (size_t)n;
        buf[got] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            continue;
        }
        char *cl = strstr(buf, "Content-Length: ");
        if (cl != NULL && cl < end) {
            size_t want = (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10);
            if (got >= want) {
                return got;
            }
        } else if (strstr(end, "\r\n0\r\n\r\n") != NULL) {
            return got;
        }
    }
}

static void scenario(uint64_t workers) {
    memset(piece, 'p', sizeof piece);
    shoal_http_handler h = {sizeof h, on_request};
    shoal_config *cfg = test_config(2, workers);
    shoal_server *srv = NULL;
    CHECK_OK(shoal_http_server_new(cfg, &h, NULL, free_ud, &srv));
    shoal_config_free(cfg);
    current_srv = srv;
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);
    int c = connect_to(port);
    char buf[8192];

    exchange(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(buf, "\r\n\r\nHello, World!") != NULL);

    exchange(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde", buf, sizeof buf);
    CHECK(strstr(buf, "\r\n\r\nabcde") != NULL);
    exchange(c,
             "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
             buf, sizeof buf);
    CHECK(strstr(buf, "\r\n\r\nabcde") != NULL);

    exchange(c, "GET /inspect?k=v HTTP/1.1\r\nX-Test: yes\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strstr(buf, "\r\n\r\nGET k=v 11 yes 2 X-Test") != NULL);

    exchange(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strstr(buf, "Transfer-Encoding: chunked") != NULL);
    CHECK(strstr(buf, "\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n") != NULL);

    exchange(c, "GET /bad-header HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
    CHECK(strstr(buf, "Set-Cookie") == NULL);

    exchange(c, "GET /prepared HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    const char *ok_head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Prep: yes\r\n";
    CHECK(strncmp(buf, ok_head, strlen(ok_head)) == 0);
    CHECK(strstr(buf, "\r\nContent-Length: 8\r\n") != NULL);
    CHECK(strstr(buf, "\r\n\r\nprepared") != NULL);
    exchange(c, "GET /defer-prepared HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    const char *later_head = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Prep: yes\r\n";
    CHECK(strncmp(buf, later_head, strlen(later_head)) == 0);
    CHECK(strstr(buf, "\r\n\r\nlater") != NULL);

    exchange(c, "GET /many HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(buf, "\r\nX-A: v\r\n") != NULL);
    CHECK(strstr(buf, "\r\nX-T: v\r\n") != NULL);
    CHECK(strstr(buf, "\r\n\r\nmany") != NULL);

    /* A deferred response answered from a pthread, with two pipelined requests behind. */
    send_str(c,
             "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n"
             "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nlast");
    size_t got = 0;
    while (got < 3 || strstr(buf, "last") == NULL) {
        ssize_t n = recv(c, buf + got, sizeof buf - 1 - got, 0);
        CHECK(n > 0);
        got += (size_t)n;
        buf[got] = 0;
    }
    char *d = strstr(buf, "deferred");
    char *hello = strstr(buf, "Hello, World!");
    char *last = strstr(buf, "last");
    CHECK(d != NULL && hello != NULL && last != NULL);
    CHECK(d < hello && hello < last);
    CHECK(strstr(buf, "X-From: pthread") != NULL);

    exchange(c, "GET /defer-stream HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strstr(buf, "part;") != NULL);

    /* A paced body twice max_write_buffer reaches a client that waits before reading. */
    atomic_store(&paced_done, 0);
    atomic_store(&paced_most, 0);
    int pc = connect_to(port);
    send_str(pc, "GET /paced HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(500);
    size_t total = 0;
    char tail[8] = {0};
    for (;;) {
        char big[65536];
        ssize_t n = recv(pc, big, sizeof big, 0);
        CHECK(n > 0);
        total += (size_t)n;
        if ((size_t)n >= 7) {
            memcpy(tail, big + n - 7, 7);
        } else {
            memmove(tail, tail + n, (size_t)(7 - n));
            memcpy(tail + 7 - n, big, (size_t)n);
        }
        if (memcmp(tail, "\r\n0\r\n\r\n", 7) == 0) {
            break;
        }
    }
    CHECK(total > (size_t)PACED_PIECES << 20);
    while (!atomic_load(&paced_done)) {
        sleep_ms(1);
    }
    CHECK(atomic_load(&paced_most) <= (size_t)1 << 20);
    close(pc);

    /* A failing callback: 500, and only that connection closes. */
    int f = connect_to(port);
    send_str(f, "GET /fail HTTP/1.1\r\nHost: t\r\n\r\n");
    recv_until_close(f, buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 500", 12) == 0);
    close(f);
    exchange(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);

    /* A callback failing after it answered: the answer arrives, then the connection closes,
     * counted as a handler failure (reason SHOAL_CLOSE_HANDLER_FAILED). */
    shoal_stats before;
    memset(&before, 0, sizeof before);
    before.size = sizeof before;
    CHECK_OK(shoal_server_stats(srv, &before));
    shoal_http_stats hs_before;
    memset(&hs_before, 0, sizeof hs_before);
    hs_before.size = sizeof hs_before;
    CHECK_OK(shoal_server_http_stats(srv, &hs_before));
    int sf = connect_to(port);
    send_str(sf, "GET /sent-then-fail HTTP/1.1\r\nHost: t\r\n\r\n");
    recv_until_close(sf, buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(buf, "\r\n\r\nsent") != NULL);
    close(sf);
    shoal_stats after;
    shoal_http_stats hs_after;
    for (int i = 0;; i++) {
        memset(&after, 0, sizeof after);
        after.size = sizeof after;
        CHECK_OK(shoal_server_stats(srv, &after));
        memset(&hs_after, 0, sizeof hs_after);
        hs_after.size = sizeof hs_after;
        CHECK_OK(shoal_server_http_stats(srv, &hs_after));
        if ((after.closed[SHOAL_CLOSE_HANDLER_FAILED] >
                 before.closed[SHOAL_CLOSE_HANDLER_FAILED] &&
             hs_after.handler_failures > hs_before.handler_failures) ||
            i == 500) {
            break;
        }
        sleep_ms(10);
    }
    CHECK(after.closed[SHOAL_CLOSE_HANDLER_FAILED] >=
          before.closed[SHOAL_CLOSE_HANDLER_FAILED] + 1);
    CHECK(after.handler_failures >= before.handler_failures + 1);
    CHECK(hs_after.handler_failures >= hs_before.handler_failures + 1);

    /* A malformed request gets a clean 400. */
    int m = connect_to(port);
    send_str(m, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    recv_until_close(m, buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
    close(m);

    shoal_http_stats hs;
    memset(&hs, 0, sizeof hs);
    hs.size = sizeof hs;
    CHECK_OK(shoal_server_http_stats(srv, &hs));
    CHECK(hs.requests >= 12);
    CHECK(hs.parse_errors == 1);
    CHECK(hs.deferred == 4);
    CHECK(hs.responses[4] >= 1);

    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    close(c);
    CHECK(atomic_load(&freed) == 0);
    CHECK_OK(shoal_server_free(srv));
    CHECK(atomic_load(&freed) == 1);
    atomic_store(&freed, 0);
}

/* SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS: a deferred answer still missing after it gets a 503 from
 * the server, and the late answer is refused. */
static void response_timeout(uint64_t workers) {
    shoal_http_handler h = {sizeof h, on_request};
    shoal_config *cfg = test_config(1, workers);
    uint64_t v = 1;
    CHECK_OK(shoal_config_get(cfg, SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS, &v));
    CHECK(v == 0);
    /* An HTTP server closes a client that stops reading, by default after 60 s. */
    CHECK_OK(shoal_config_get(cfg, SHOAL_OPT_WRITE_TIMEOUT_MS, &v));
    CHECK(v == 60000);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS, 200));
    CHECK_OK(shoal_config_get(cfg, SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS, &v));
    CHECK(v == 200);
    shoal_server *srv = NULL;
    CHECK_OK(shoal_http_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    CHECK_OK(shoal_server_start(srv));
    atomic_store(&held, NULL);
    int c = connect_to(shoal_server_port(srv));
    send_str(c, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    char buf[4096];
    recv_until_close(c, buf, sizeof buf);
    close(c);
    CHECK(strncmp(buf, "HTTP/1.1 503", 12) == 0);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    CHECK(strstr(buf, "Hello, World!") == NULL); /* the request behind it was not served */
    shoal_deferred *d = atomic_load(&held);
    CHECK(d != NULL);
    CHECK_STATUS(shoal_deferred_send(d, 200, NULL, 0, "late", 4), SHOAL_ERR_CLOSED);
    shoal_deferred_free(d);
    shoal_http_stats hs;
    memset(&hs, 0, sizeof hs);
    hs.size = sizeof hs;
    CHECK_OK(shoal_server_http_stats(srv, &hs));
    CHECK(hs.response_timeouts == 1);
    CHECK(hs.handler_failures == 0);
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    CHECK_OK(shoal_server_free(srv));
}

/* Prepared header blocks: refused like shoal_response_send() refuses, and copied. */
static void prepare_headers(void) {
    shoal_headers *untouched = (shoal_headers *)&freed;
    shoal_headers *out = untouched;
    shoal_header evil = hdr("X-Evil", "a\r\nSet-Cookie: owned");
    CHECK_STATUS(shoal_headers_new(&evil, 1, &out), SHOAL_ERR_INVALID_RESPONSE);
    shoal_header framing = hdr("Content-Length", "5");
    CHECK_STATUS(shoal_headers_new(&framing, 1, &out), SHOAL_ERR_INVALID_RESPONSE);
    shoal_header unnamed = {NULL, 3, "v", 1};
    CHECK_STATUS(shoal_headers_new(&unnamed, 1, &out), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_headers_new(NULL, 1, &out), SHOAL_ERR_NULL);
    CHECK(out == untouched);
    char name[16];
    char value[16];
    snprintf(name, sizeof name, "X-Prep");
    snprintf(value, sizeof value, "yes");
    shoal_header fields[2] = {hdr("Content-Type", "text/plain"), hdr(name, value)};
    CHECK_STATUS(shoal_headers_new(fields, 2, NULL), SHOAL_ERR_NULL);
    CHECK_OK(shoal_headers_new(fields, 2, &prepared));
    /* The block is a copy: the caller's buffers may change or go away. */
    memset(name, 'z', sizeof name);
    memset(value, 'z', sizeof value);
    shoal_headers_free(NULL);
}

int main(void) {
    prepare_headers();
    scenario(0);
    scenario(2);
    response_timeout(0);
    response_timeout(2);
    shoal_headers_free(prepared);
    printf("http_test ok\n");
    return 0;
}
