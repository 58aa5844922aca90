/* Stale handles under AddressSanitizer: write, close, abort, timers and deferred responses on
 * connections that closed, including after their slot was reused by a newer connection, from
 * a callback on the reactor (or worker) thread and from other pthreads racing with connection
 * churn. Every call must return SHOAL_ERR_CLOSED, the sanitizers must stay quiet, and no byte
 * may reach the newer connection. Runs inline and with workers. */
#include "testutil.h"

#include <stdatomic.h>

#define MAX_IDS 4096

static shoal_server *the_server;
static atomic_ullong ids[MAX_IDS];
static atomic_int opened;
static atomic_int closed_count;
static atomic_int stale_checked;

static int on_open(void *ud, shoal_conn *conn) {
    (void)ud;
    int i = atomic_fetch_add(&opened, 1);
    if (i < MAX_IDS) {
        atomic_store(&ids[i], shoal_conn_get_id(conn));
    }
    return 0;
}

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    (void)ud;
    if (len == 4 && memcmp(data, "poke", 4) == 0) {
        /* From this callback's thread: every handle of connection 0 (long closed) fails. */
        shoal_conn_id old = atomic_load(&ids[0]);
        CHECK_STATUS(shoal_server_write(the_server, old, "stale", 5), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_server_close(the_server, old), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_server_abort(the_server, old), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_server_set_timer(the_server, old, 1, 7), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_server_cancel_timer(the_server, old, 7), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_server_resume_input(the_server, old), SHOAL_ERR_CLOSED);
        CHECK_STATUS(shoal_conn_write_to(conn, old, "stale", 5), SHOAL_ERR_CLOSED);
        CHECK(shoal_server_is_live(the_server, old) == 0);
        atomic_fetch_add(&stale_checked, 1);
    }
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

static void on_close(void *ud, shoal_conn_id id, void *context, int reason, int os_error) {
    (void)ud;
    (void)id;
    (void)context;
    (void)reason;
    (void)os_error;
    atomic_fetch_add(&closed_count, 1);
}

static atomic_int stop_racers;
static atomic_long stale_calls;

/* Hammers every id seen so far that is closed: each call must fail with SHOAL_ERR_CLOSED, or
 * succeed only while that connection is still live. */
static void *racer(void *p) {
    (void)p;
    while (!atomic_load(&stop_racers)) {
        int n = atomic_load(&opened);
        for (int i = 0; i < n && i < MAX_IDS; i++) {
            shoal_conn_id id = atomic_load(&ids[i]);
            if (id == 0 || shoal_server_is_live(the_server, id)) {
                continue;
            }
            CHECK_STATUS(shoal_server_write(the_server, id, "STALE!", 6), SHOAL_ERR_CLOSED);
            CHECK_STATUS(shoal_server_close(the_server, id), SHOAL_ERR_CLOSED);
            CHECK_STATUS(shoal_server_set_timer(the_server, id, 1, 1), SHOAL_ERR_CLOSED);
            atomic_fetch_add(&stale_calls, 3);
        }
    }
    return NULL;
}

static void stream_case(uint64_t workers) {
    atomic_store(&opened, 0);
    atomic_store(&closed_count, 0);
    atomic_store(&stale_checked, 0);
    atomic_store(&stop_racers, 0);
    atomic_store(&stale_calls, 0);
    memset(ids, 0, sizeof ids);
    shoal_config *cfg = test_config(1, workers);
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_open = on_open;
    h.on_data = on_data;
    h.on_close = on_close;
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    the_server = srv;
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);

    /* Connection 0 opens and closes: its id is stale from now on. */
    int first = connect_to(port);
    while (atomic_load(&opened) < 1) {
        sleep_ms(1);
    }
    close(first);
    while (atomic_load(&closed_count) < 1) {
        sleep_ms(1);
    }

    pthread_t racers[3];
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_create(&racers[i], NULL, racer, NULL) == 0);
    }
    /* Churn: 300 connections, each reusing a slot of an earlier one, each must receive only
     * its own echo while the racers write "STALE!" to every closed id. */
    for (int k = 0; k < 300; k++) {
        int fd = connect_to(port);
        char msg[16];
        int n = snprintf(msg, sizeof msg, "conn-%04d", k);
        send_all(fd, msg, (size_t)n);
        char got[16];
        recv_exact(fd, got, (size_t)n);
        CHECK(memcmp(got, msg, (size_t)n) == 0);
        if (k % 50 == 0) {
            send_str(fd, "poke");
            recv_exact(fd, got, 4);
            CHECK(memcmp(got, "poke", 4) == 0);
        }
        /* Nothing else arrives: no stale byte reached this connection. */
        struct timeval tv = {0, 20000};
        CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
        char extra;
        CHECK(recv(fd, &extra, 1, 0) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        close(fd);
    }
    atomic_store(&stop_racers, 1);
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_join(racers[i], NULL) == 0);
    }
    CHECK(atomic_load(&stale_checked) == 6);
    CHECK(atomic_load(&stale_calls) > 0);
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    /* After the server stopped: every id is stale, and calls report it. */
    CHECK_STATUS(shoal_server_write(srv, atomic_load(&ids[1]), "x", 1), SHOAL_ERR_CLOSED);
    CHECK_OK(shoal_server_free(srv));
    printf("stale_test stream (workers %llu): %ld stale calls refused\n",
           (unsigned long long)workers, atomic_load(&stale_calls));
}

/* HTTP: deferred responses whose connection went away. */
static shoal_deferred *held;
static atomic_int deferred_ready;

static int on_request(void *ud, const shoal_request *req, shoal_response *res) {
    (void)ud;
    const char *path;
    size_t len;
    CHECK_OK(shoal_request_path(req, &path, &len));
    if (len == 6 && memcmp(path, "/defer", 6) == 0) {
        CHECK_OK(shoal_response_defer(res, &held));
        atomic_store(&deferred_ready, 1);
        return 0;
    }
    return shoal_response_send(res, 200, NULL, 0, "fresh", 5);
}

static void http_case(uint64_t workers) {
    atomic_store(&deferred_ready, 0);
    shoal_config *cfg = test_config(1, workers);
    shoal_http_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_request = on_request;
    shoal_server *srv = NULL;
    CHECK_OK(shoal_http_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);

    int a = connect_to(port);
    send_str(a, "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n");
    while (!atomic_load(&deferred_ready)) {
        sleep_ms(1);
    }
    shoal_conn_id old = shoal_deferred_conn_id(held);
    /* The connection goes away (aborted from this thread) before the answer. */
    CHECK_OK(shoal_server_abort(srv, old));
    while (shoal_server_is_live(srv, old)) {
        sleep_ms(1);
    }
    close(a);
    /* A new connection takes the same slot. */
    int b = connect_to(port);
    send_str(b, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    char buf[4096];
    ssize_t n = recv(b, buf, sizeof buf - 1, 0);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strstr(buf, "fresh") != NULL);
    /* The stale deferred response fails, in full and streamed, and reaches nobody. */
    CHECK_STATUS(shoal_deferred_send(held, 200, NULL, 0, "late", 4), SHOAL_ERR_CLOSED);
    shoal_chunked *c = NULL;
    shoal_status st = shoal_deferred_start_chunked(held, 200, NULL, 0, &c);
    CHECK(st == SHOAL_ERR_CLOSED || st == SHOAL_ERR_INVALID_RESPONSE);
    CHECK(c == NULL);
    shoal_deferred_free(held);
    struct timeval tv = {0, 100000};
    CHECK(setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    CHECK(recv(b, buf, 1, 0) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    close(b);
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    CHECK_OK(shoal_server_free(srv));
    printf("stale_test http (workers %llu) ok\n", (unsigned long long)workers);
}

int main(void) {
    stream_case(0);
    stream_case(2);
    http_case(0);
    http_case(2);
    return 0;
}
