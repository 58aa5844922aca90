/* Error paths: NULL arguments, bad options and addresses, stale and foreign ids (including a
 * reused slot: a stale id must never reach the newer connection), status names, close reason
 * names, run/stop/free ordering, and waiting on a server from its own callback. */
#include "testutil.h"

#include <stdatomic.h>
#include <stddef.h>

static atomic_ullong ids[8];
static atomic_int opened;

static int on_open(void *ud, shoal_conn *conn) {
    (void)ud;
    int i = atomic_fetch_add(&opened, 1);
    if (i < 8) {
        atomic_store(&ids[i], shoal_conn_get_id(conn));
    }
    return 0;
}

static shoal_server *the_server;
static atomic_int own_thread_checked;

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    (void)ud;
    if (len == 4 && memcmp(data, "wait", 4) == 0) {
        /* Each of these would wait for this very thread: refused, the server unharmed. */
        CHECK_STATUS(shoal_server_wait(the_server), SHOAL_ERR_WRONG_THREAD);
        CHECK(strstr(shoal_last_error(), "own callbacks") != NULL);
        CHECK_STATUS(shoal_server_run(the_server), SHOAL_ERR_WRONG_THREAD);
        CHECK_STATUS(shoal_server_free(the_server), SHOAL_ERR_WRONG_THREAD);
        atomic_store(&own_thread_checked, 1);
    }
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

/* A call from a pthread key destructor, which glibc runs after the thread's other
 * thread-locals are gone: it still gets its status (no message to keep), never an abort. */
static pthread_key_t exit_key;
static atomic_int exit_status = 1;

static void at_thread_exit(void *srv) {
    atomic_store(&exit_status, shoal_server_close(srv, UINT64_MAX));
    (void)shoal_last_error();
}

static void *thread_with_exit_call(void *srv) {
    /* An earlier error on this thread gives it a message to tear down. */
    CHECK_STATUS(shoal_server_close(srv, UINT64_MAX - 2), SHOAL_ERR_CLOSED);
    CHECK(pthread_setspecific(exit_key, srv) == 0);
    return NULL;
}

int main(void) {
    /* Status codes are described. */
    const shoal_status codes[] = {SHOAL_OK, SHOAL_ERR_CLOSED, SHOAL_ERR_STOPPED, SHOAL_ERR_NULL,
                                  SHOAL_ERR_BUSY, SHOAL_ERR_INVALID_ARG, SHOAL_ERR_PANIC, -22};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        CHECK(shoal_strerror(codes[i]) != NULL && shoal_strerror(codes[i])[0] != 0);
        CHECK(shoal_err_name(codes[i]) != NULL);
    }
    CHECK(strcmp(shoal_err_name(SHOAL_ERR_CLOSED), "SHOAL_ERR_CLOSED") == 0);
    CHECK(strcmp(shoal_err_name(SHOAL_ERR_WRONG_THREAD), "SHOAL_ERR_WRONG_THREAD") == 0);
    CHECK(strcmp(shoal_err_name(-22), "ERRNO") == 0);
    /* -errno is described by the C library, and the text lives for the whole program: a
     * later call (for an unknown number the C library formats into a reused buffer) leaves
     * an earlier one as it was. */
    CHECK(strcmp(shoal_strerror(-ECONNRESET), "Connection reset by peer") == 0);
    const char *unknown = shoal_strerror(-4000);
    char copy[64];
    snprintf(copy, sizeof copy, "%s", unknown);
    CHECK(strstr(copy, "4000") != NULL);
    CHECK(strstr(shoal_strerror(-4001), "4001") != NULL);
    CHECK(strcmp(unknown, copy) == 0);
    CHECK(shoal_strerror(-4000) == unknown);
    CHECK(strcmp(shoal_close_reason_name(SHOAL_CLOSE_IDLE_TIMEOUT), "idle_timeout") == 0);
    CHECK(strcmp(shoal_close_reason_name(99), "unknown") == 0);
    CHECK(strcmp(shoal_version(), SHOAL_VERSION_STRING) == 0);

    /* NULL arguments are refused, never dereferenced. */
    CHECK_STATUS(shoal_config_set(NULL, SHOAL_OPT_THREADS, 1), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_new(NULL, NULL, NULL, NULL, NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_write(NULL, 1, "x", 1), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_start(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_conn_write(NULL, "x", 1), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_conn_close(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_response_send(NULL, 200, NULL, 0, NULL, 0), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_deferred_send(NULL, 200, NULL, 0, NULL, 0), SHOAL_ERR_NULL);
    CHECK(shoal_conn_get_id(NULL) == 0);
    CHECK(shoal_conn_context(NULL) == NULL);
    CHECK_OK(shoal_server_free(NULL));
    shoal_config_free(NULL);
    CHECK(strstr(shoal_last_error(), "NULL") != NULL);

    /* Bad options and addresses. */
    shoal_config *cfg = test_config(1, 0);
    CHECK_STATUS(shoal_config_set(cfg, 9999, 1), SHOAL_ERR_INVALID_ARG);
    uint64_t v = 0;
    CHECK_OK(shoal_config_get(cfg, SHOAL_OPT_THREADS, &v));
    CHECK(v == 1);
    CHECK_STATUS(shoal_config_set_addr(cfg, "nonsense", 8), SHOAL_ERR_INVALID_ARG);
    CHECK_STATUS(shoal_config_set_addr(cfg, NULL, 5), SHOAL_ERR_NULL);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_THREADS, 0));
    CHECK_STATUS(shoal_config_validate(cfg), SHOAL_ERR_INVALID_CONFIG);
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_open = on_open;
    h.on_data = on_data;
    shoal_server *srv = NULL;
    CHECK_STATUS(shoal_server_new(cfg, &h, NULL, NULL, &srv), SHOAL_ERR_INVALID_CONFIG);
    CHECK(srv == NULL);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_THREADS, 1));
    /* A handler timeout needs workers: refused inline, where nothing could enforce it. */
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_HANDLER_TIMEOUT_MS, 100));
    CHECK_STATUS(shoal_config_validate(cfg), SHOAL_ERR_INVALID_CONFIG);
    CHECK(strstr(shoal_last_error(), "handler_timeout") != NULL);
    CHECK_STATUS(shoal_server_new(cfg, &h, NULL, NULL, &srv), SHOAL_ERR_INVALID_CONFIG);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_HANDLER_TIMEOUT_MS, 0));
    CHECK_OK(shoal_config_validate(cfg));
    h.on_data = NULL;
    CHECK_STATUS(shoal_server_new(cfg, &h, NULL, NULL, &srv), SHOAL_ERR_INVALID_ARG);
    h.on_data = on_data;
    h.size = 1;
    CHECK_STATUS(shoal_server_new(cfg, &h, NULL, NULL, &srv), SHOAL_ERR_INVALID_ARG);
    /* A size ending inside on_data leaves it out whole, never half a pointer. */
    h.size = offsetof(shoal_handler, on_data) + 4;
    CHECK_STATUS(shoal_server_new(cfg, &h, NULL, NULL, &srv), SHOAL_ERR_INVALID_ARG);
    CHECK(strstr(shoal_last_error(), "on_data") != NULL);
    CHECK(srv == NULL);
    h.size = sizeof h;
    CHECK_OK(shoal_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    /* Every error return sets its own message, never leaving an older one in place. */
    CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_wait(srv), SHOAL_ERR_NOT_STARTED);
    CHECK(strstr(shoal_last_error(), "never started") != NULL);
    shoal_http_stats hs;
    hs.size = sizeof hs;
    CHECK_STATUS(shoal_server_http_stats(srv, &hs), SHOAL_ERR_WRONG_KIND);
    CHECK(strstr(shoal_last_error(), "not an HTTP server") != NULL);
    CHECK_OK(shoal_server_start(srv));
    CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_start(srv), SHOAL_ERR_ALREADY_STARTED);
    CHECK(strstr(shoal_last_error(), "already started") != NULL);
    uint16_t port = shoal_server_port(srv);

    /* Stale ids: a closed connection's id, then its slot reused by a new connection. */
    int a = connect_to(port);
    while (atomic_load(&opened) < 1) {
        sleep_ms(1);
    }
    shoal_conn_id old = atomic_load(&ids[0]);
    CHECK(shoal_server_is_live(srv, old) == 1);
    close(a);
    while (shoal_server_is_live(srv, old)) {
        sleep_ms(1);
    }
    CHECK_STATUS(shoal_server_stop(NULL), SHOAL_ERR_NULL);
    CHECK_STATUS(shoal_server_write(srv, old, "x", 1), SHOAL_ERR_CLOSED);
    CHECK(strstr(shoal_last_error(), "stale") != NULL);
    CHECK_STATUS(shoal_server_close(srv, old), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_server_abort(srv, old), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_server_set_timer(srv, old, 1, 1), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_server_resume_input(srv, old), SHOAL_ERR_CLOSED);
    int b = connect_to(port);
    while (atomic_load(&opened) < 2) {
        sleep_ms(1);
    }
    shoal_conn_id fresh = atomic_load(&ids[1]);
    CHECK(fresh != old);
    CHECK((fresh & 0xffffff) == (old & 0xffffff)); /* same slot, new generation */
    CHECK_STATUS(shoal_server_write(srv, old, "stale!", 6), SHOAL_ERR_CLOSED);
    /* Foreign and made-up ids. */
    CHECK_STATUS(shoal_server_write(srv, 0, "x", 1), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_server_write(srv, UINT64_MAX, "x", 1), SHOAL_ERR_CLOSED);
    CHECK_STATUS(shoal_server_write(srv, fresh ^ (1ull << 24), "x", 1), SHOAL_ERR_CLOSED);
    /* The newer connection got nothing of the stale writes: its first bytes are its own echo. */
    send_str(b, "mine");
    char buf[8];
    recv_exact(b, buf, 4);
    CHECK(memcmp(buf, "mine", 4) == 0);
    CHECK_OK(shoal_server_write(srv, fresh, "ok", 2));
    recv_exact(b, buf, 2);
    CHECK(memcmp(buf, "ok", 2) == 0);

    /* Waiting for the server from its own callback is refused, and it keeps serving. */
    the_server = srv;
    send_str(b, "wait");
    recv_exact(b, buf, 4);
    CHECK(memcmp(buf, "wait", 4) == 0);
    CHECK(atomic_load(&own_thread_checked) == 1);

    CHECK(pthread_key_create(&exit_key, at_thread_exit) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, thread_with_exit_call, srv) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(atomic_load(&exit_status) == SHOAL_ERR_CLOSED);

    /* Outbound connect to a closed port reports on_close, and bad addresses are refused. */
    shoal_conn_id out_id = 0;
    CHECK_STATUS(shoal_server_connect(srv, "x", 1, &out_id), SHOAL_ERR_INVALID_ARG);

    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_stop(srv)); /* idempotent */
    CHECK_OK(shoal_server_wait(srv));
    close(b);
    CHECK_STATUS(shoal_server_connect(srv, "127.0.0.1:1", 11, &out_id), SHOAL_ERR_STOPPED);
    CHECK_OK(shoal_server_free(srv));
    printf("errors_test ok\n");
    return 0;
}
