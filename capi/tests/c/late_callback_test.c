/* Freeing a server while a worker callback outlives the shutdown grace: shoal_server_wait()
 * may return while it still runs, but shoal_server_free() refuses (SHOAL_ERR_BUSY, nothing
 * freed) until it has returned, so the callback's own shoal_server_write() on the server never
 * touches freed memory (AddressSanitizer would report it), and free_user_data runs exactly
 * once, inside the successful free, after the connection's on_close (run on the worker once the
 * callback returns). Also: freeing a stopping server that was never waited for
 * waits for it first, while callbacks still use the server. A watchdog fails the test if
 * anything hangs. */
#include "testutil.h"

#include <signal.h>
#include <stdatomic.h>

static void watchdog(int sig) {
    (void)sig;
    static const char msg[] = "late_callback_test: timed out\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(1);
}

struct app {
    shoal_server *srv;
    atomic_int entered;
    atomic_int finished;
    atomic_int freed;
    atomic_int closes;
    atomic_int write_status;
    int sleep_ms;
};

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    struct app *a = ud;
    shoal_conn_id id = shoal_conn_get_id(conn);
    atomic_store(&a->entered, 1);
    sleep_ms(a->sleep_ms);
    /* Long after the grace period: the connection is gone, the server must not be. */
    atomic_store(&a->write_status, shoal_server_write(a->srv, id, data, len));
    shoal_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_OK(shoal_server_stats(a->srv, &st));
    atomic_store(&a->finished, 1);
    return (int64_t)len;
}

static void on_close(void *ud, shoal_conn_id id, void *context, int reason, int os_error) {
    struct app *a = ud;
    (void)context;
    (void)reason;
    (void)os_error;
    /* A callback during the join inside shoal_server_free() still sees a whole server. */
    CHECK(shoal_server_is_live(a->srv, id) == 0);
    shoal_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_OK(shoal_server_stats(a->srv, &st));
    atomic_fetch_add(&a->closes, 1);
}

static void free_app(void *ud) {
    struct app *a = ud;
    /* After the last callback. */
    CHECK(atomic_load(&a->finished) == 1);
    CHECK(atomic_load(&a->closes) == 1);
    atomic_fetch_add(&a->freed, 1);
}

static shoal_server *make(struct app *a, uint64_t workers, uint64_t grace_ms) {
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_data = on_data;
    h.on_close = on_close;
    shoal_config *cfg = test_config(1, workers);
    CHECK_OK(shoal_config_set(cfg, SHOAL_OPT_SHUTDOWN_GRACE_MS, grace_ms));
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, a, free_app, &srv));
    shoal_config_free(cfg);
    a->srv = srv;
    CHECK_OK(shoal_server_start(srv));
    return srv;
}

/* A callback still running after stop + wait: free refuses until it returns. */
static void callback_outlives_the_grace(void) {
    struct app *a = calloc(1, sizeof *a);
    CHECK(a != NULL);
    a->sleep_ms = 300;
    shoal_server *srv = make(a, 1, 20);
    int c = connect_to(shoal_server_port(srv));
    send_str(c, "late");
    while (atomic_load(&a->entered) == 0) {
        sleep_ms(1);
    }
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    int busy = 0;
    for (;;) {
        int running = atomic_load(&a->finished) == 0;
        shoal_status s = shoal_server_free(srv);
        if (s == SHOAL_OK) {
            break;
        }
        CHECK_STATUS(s, SHOAL_ERR_BUSY);
        CHECK(strstr(shoal_last_error(), "callback") != NULL);
        CHECK(atomic_load(&a->freed) == 0);
        busy += running;
        sleep_ms(5);
    }
    /* free returned OK only after the callback finished and the connection's on_close ran
     * (once, on the worker, after the engine had gone), and freed the user data then. */
    CHECK(atomic_load(&a->finished) == 1);
    CHECK(busy > 0);
    CHECK(atomic_load(&a->closes) == 1);
    CHECK(atomic_load(&a->freed) == 1);
    shoal_status w = atomic_load(&a->write_status);
    CHECK(w == SHOAL_ERR_CLOSED || w == SHOAL_ERR_STOPPED);
    close(c);
    free(a);
}

/* Free of a server that is stopping but was never waited for: it waits, and the callbacks
 * that run meanwhile (the slow on_data, then on_close) use the server safely. */
static void free_without_wait(uint64_t workers) {
    struct app *a = calloc(1, sizeof *a);
    CHECK(a != NULL);
    a->sleep_ms = 100;
    shoal_server *srv = make(a, workers, 2000);
    int c = connect_to(shoal_server_port(srv));
    send_str(c, "slow");
    while (atomic_load(&a->entered) == 0) {
        sleep_ms(1);
    }
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_free(srv));
    CHECK(atomic_load(&a->finished) == 1);
    CHECK(atomic_load(&a->closes) == 1);
    CHECK(atomic_load(&a->freed) == 1);
    close(c);
    free(a);
}

int main(void) {
    signal(SIGALRM, watchdog);
    alarm(60);
    callback_outlives_the_grace();
    free_without_wait(0);
    free_without_wait(2);
    printf("late_callback_test ok\n");
    return 0;
}
