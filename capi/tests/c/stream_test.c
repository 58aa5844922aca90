/* Stream servers through the C interface: echo, per-connection context, a callback error
 * closing only its connection, timers, writes and stop from another thread, free_user_data
 * called exactly once, free refused while running, paced writers on two threads streaming
 * past max_write_buffer to a slow reader (and refused a wait on a server thread). Runs inline
 * and with workers. */
#include "testutil.h"

#include <stdatomic.h>

struct app {
    atomic_int opens;
    atomic_int closes;
    atomic_int contexts_freed;
    atomic_int failed_closes;
    atomic_int timers;
    atomic_int freed;
    atomic_ullong last_id;
    shoal_server *server;
};

struct per_conn {
    uint64_t bytes;
};

static int on_open(void *ud, shoal_conn *conn) {
    struct app *a = ud;
    struct per_conn *pc = calloc(1, sizeof *pc);
    CHECK(pc != NULL);
    CHECK_OK(shoal_conn_set_context(conn, pc));
    CHECK(shoal_conn_context(conn) == pc);
    char addr[64];
    size_t len = 0;
    CHECK_OK(shoal_conn_peer_addr(conn, addr, sizeof addr, &len));
    CHECK(len == strlen(addr) && strncmp(addr, "127.0.0.1:", 10) == 0);
    CHECK(shoal_conn_peer_addr(conn, addr, 4, &len) == SHOAL_ERR_INVALID_ARG);
    atomic_store(&a->last_id, shoal_conn_get_id(conn));
    atomic_fetch_add(&a->opens, 1);
    return 0;
}

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    struct app *a = ud;
    (void)a;
    struct per_conn *pc = shoal_conn_context(conn);
    pc->bytes += len;
    if (len >= 4 && memcmp(data, "fail", 4) == 0) {
        return -1; /* a callback error: this connection only */
    }
    if (len >= 5 && memcmp(data, "timer", 5) == 0) {
        CHECK_OK(shoal_conn_set_timer(conn, 30, 7));
        return (int64_t)len;
    }
    if (len >= 5 && memcmp(data, "pace?", 5) == 0) {
        /* A paced writer may be made here, but not waited on: this reactor could not flush. */
        shoal_writer *w = NULL;
        CHECK_OK(shoal_server_paced_writer(a->server, shoal_conn_get_id(conn), &w));
        CHECK_STATUS(shoal_writer_wait(w, 0), SHOAL_ERR_WRONG_THREAD);
        CHECK_OK(shoal_writer_write(w, "refused", 7));
        shoal_writer_free(w);
        return (int64_t)len;
    }
    if (len >= 4 && memcmp(data, "vec!", 4) == 0) {
        shoal_iovec iov[2] = {{"ve", 2}, {"ctored", 6}};
        CHECK_OK(shoal_conn_writev(conn, iov, 2));
        return (int64_t)len;
    }
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

static void on_timer(void *ud, shoal_conn *conn, uint64_t tag) {
    struct app *a = ud;
    CHECK(tag == 7);
    atomic_fetch_add(&a->timers, 1);
    CHECK_OK(shoal_conn_write(conn, "tick", 4));
}

static void on_close(void *ud, shoal_conn_id id, void *context, int reason, int os_error) {
    struct app *a = ud;
    (void)os_error;
    CHECK(id != 0);
    if (context != NULL) {
        free(context);
        atomic_fetch_add(&a->contexts_freed, 1);
    }
    if (reason == SHOAL_CLOSE_HANDLER_FAILED) {
        atomic_fetch_add(&a->failed_closes, 1);
    }
    CHECK(strcmp(shoal_close_reason_name(reason), "unknown") != 0);
    atomic_fetch_add(&a->closes, 1);
}

static void free_app(void *ud) {
    struct app *a = ud;
    atomic_fetch_add(&a->freed, 1);
}

struct writer_args {
    shoal_server *server;
    shoal_conn_id id;
};

static void *writer_thread(void *p) {
    struct writer_args *w = p;
    CHECK_OK(shoal_server_write(w->server, w->id, "from a thread", 13));
    CHECK_OK(shoal_server_set_timer(w->server, w->id, 10, 7));
    return NULL;
}

/* 20 pieces of 1 MiB, each after waiting for room. */
#define PIECE (1u << 20)
struct pacer_args {
    shoal_server *server;
    shoal_conn_id id;
    char fill;
    size_t most;
};

static void *paced_thread(void *p) {
    struct pacer_args *pa = p;
    shoal_writer *w = NULL;
    CHECK_STATUS(shoal_server_paced_writer(pa->server, pa->id, NULL), SHOAL_ERR_NULL);
    CHECK_OK(shoal_server_paced_writer(pa->server, pa->id, &w));
    char *piece = malloc(PIECE);
    CHECK(piece != NULL);
    memset(piece, pa->fill, PIECE);
    for (int i = 0; i < 20; i++) {
        CHECK_OK(shoal_writer_wait(w, 10000));
        size_t q = shoal_writer_queued(w);
        pa->most = q > pa->most ? q : pa->most;
        CHECK_OK(shoal_writer_write(w, piece, PIECE));
    }
    free(piece);
    shoal_writer_free(w);
    return NULL;
}

static void *stopper_thread(void *p) {
    sleep_ms(100);
    CHECK_OK(shoal_server_stop(p));
    return NULL;
}

static void scenario(uint64_t workers) {
    struct app a;
    memset(&a, 0, sizeof a);
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_open = on_open;
    h.on_data = on_data;
    h.on_timer = on_timer;
    h.on_close = on_close;
    shoal_config *cfg = test_config(2, workers);
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, &a, free_app, &srv));
    shoal_config_free(cfg);
    a.server = srv;
    CHECK_OK(shoal_server_start(srv));
    CHECK_STATUS(shoal_server_start(srv), SHOAL_ERR_ALREADY_STARTED);
    uint16_t port = shoal_server_port(srv);
    CHECK(port != 0);

    /* Echo, several messages, and a vectored write. */
    int c1 = connect_to(port);
    char buf[64];
    for (int i = 0; i < 50; i++) {
        send_str(c1, "hello");
        recv_exact(c1, buf, 5);
        CHECK(memcmp(buf, "hello", 5) == 0);
    }
    send_str(c1, "vec!");
    recv_exact(c1, buf, 8);
    CHECK(memcmp(buf, "vectored", 8) == 0);

    /* A callback error closes only its own connection. */
    int c2 = connect_to(port);
    send_str(c2, "fail");
    CHECK(closed_by_peer(c2));
    close(c2);
    send_str(c1, "still");
    recv_exact(c1, buf, 5);
    CHECK(memcmp(buf, "still", 5) == 0);

    /* Timers from the callback and from another thread; writes from another thread. */
    send_str(c1, "timer");
    recv_exact(c1, buf, 4);
    CHECK(memcmp(buf, "tick", 4) == 0);
    while (atomic_load(&a.opens) < 2) {
        sleep_ms(1);
    }
    struct writer_args w = {srv, 0};
    int c3 = connect_to(port);
    while (atomic_load(&a.opens) < 3) {
        sleep_ms(1);
    }
    w.id = atomic_load(&a.last_id);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer_thread, &w) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    recv_exact(c3, buf, 13);
    CHECK(memcmp(buf, "from a thread", 13) == 0);
    recv_exact(c3, buf, 4);
    CHECK(memcmp(buf, "tick", 4) == 0);
    CHECK(atomic_load(&a.timers) >= 2);

    /* A paced writer on a callback's thread: made, written with, never waited on. */
    send_str(c3, "pace?");
    recv_exact(c3, buf, 7);
    CHECK(memcmp(buf, "refused", 7) == 0);
    /* 40 MiB from two threads, twice SHOAL_OPT_MAX_WRITE_BUFFER, to a client that waits half
     * a second before reading: each piece arrives whole. */
    struct pacer_args pa[2] = {{srv, w.id, 'a', 0}, {srv, w.id, 'b', 0}};
    pthread_t pt[2];
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&pt[i], NULL, paced_thread, &pa[i]) == 0);
    }
    sleep_ms(500);
    char *big = malloc(40 * (size_t)PIECE);
    CHECK(big != NULL);
    recv_exact(c3, big, 40 * (size_t)PIECE);
    size_t as = 0;
    for (size_t p = 0; p < 40; p++) {
        for (size_t i = 1; i < PIECE; i++) {
            CHECK(big[p * PIECE + i] == big[p * PIECE]);
        }
        as += big[p * PIECE] == 'a';
    }
    CHECK(as == 20);
    free(big);
    shoal_config *defaults = shoal_config_new();
    uint64_t low = 0;
    CHECK_OK(shoal_config_get(defaults, SHOAL_OPT_WRITE_LOW_WATERMARK, &low));
    shoal_config_free(defaults);
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_join(pt[i], NULL) == 0);
        /* Queued when a producer went on: the low watermark, plus the other's piece. */
        CHECK(pa[i].most <= low + PIECE);
    }
    shoal_writer *kept = NULL;
    CHECK_OK(shoal_server_paced_writer(srv, w.id, &kept));

    /* Stats through a sized struct. */
    shoal_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_OK(shoal_server_stats(srv, &st));
    CHECK(st.accepted == 3);
    CHECK(st.handler_failures == 1);
    CHECK(st.closed[SHOAL_CLOSE_HANDLER_FAILED] == 1);

    /* Free while running is refused; stop from another thread ends run/wait. */
    CHECK_STATUS(shoal_server_free(srv), SHOAL_ERR_BUSY);
    CHECK(pthread_create(&t, NULL, stopper_thread, srv) == 0);
    CHECK_OK(shoal_server_wait(srv));
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(closed_by_peer(c1));
    CHECK(closed_by_peer(c3));
    close(c1);
    close(c3);
    /* After the server stopped every id is stale. */
    CHECK_STATUS(shoal_server_write(srv, w.id, "x", 1), SHOAL_ERR_CLOSED);
    CHECK(atomic_load(&a.closes) == 3);
    CHECK(atomic_load(&a.contexts_freed) == 3);
    CHECK(atomic_load(&a.failed_closes) == 1);
    CHECK(atomic_load(&a.freed) == 0);
    CHECK_OK(shoal_server_free(srv));
    CHECK(atomic_load(&a.freed) == 1); /* exactly once, after the last callback */
    /* A writer outlives its server: its calls fail cleanly. */
    CHECK_STATUS(shoal_writer_write(kept, "x", 1), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_writer_wait(kept, 10), SHOAL_ERR_CLOSED);
    shoal_writer_free(kept);
    shoal_writer_free(NULL);
}

/* A minimum write rate alone: its grace period is the default write timeout, for a stream
 * server as for an HTTP one, and validation agrees with server creation. */
static void write_min_rate_alone(void) {
    shoal_config *cfg = test_config(1, 0);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_WRITE_MIN_RATE, 1000));
    CHECK_OK(shoal_config_validate(cfg));
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_data = on_data;
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, NULL, NULL, &srv));
    CHECK_OK(shoal_server_free(srv));
    shoal_config_free(cfg);
}

int main(void) {
    write_min_rate_alone();
    scenario(0);
    scenario(3);
    printf("stream_test ok\n");
    return 0;
}
