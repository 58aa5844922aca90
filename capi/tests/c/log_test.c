/* The log callback: records arrive with their level, target and message; a callback may turn
 * logging off (or replace itself) from inside (the "log the first error, then stop" pattern),
 * and the server keeps serving and stops normally; a shoal_set_log_callback() made outside
 * any callback returns only once every thread has left the callback it replaced, so the old
 * user data may be freed then. A watchdog fails the test if anything hangs. */
#include "testutil.h"

#include <signal.h>
#include <stdatomic.h>

static void watchdog(int sig) {
    (void)sig;
    static const char msg[] = "log_test: timed out (a deadlock?)\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(1);
}

struct log_state {
    atomic_int calls;
    atomic_int warnings;
    atomic_int inside;
    atomic_int done;
    int slow; /* sleep inside the callback (ms) */
    int turn_off; /* call shoal_set_log_callback(NULL, ...) from inside */
};

static void on_log(void *ud, int level, const char *target, size_t target_len,
                   const char *message, size_t message_len) {
    struct log_state *ls = ud;
    CHECK(level >= SHOAL_LOG_ERROR && level <= SHOAL_LOG_TRACE);
    CHECK(target != NULL && target_len > 0);
    CHECK(message != NULL && message_len > 0);
    atomic_fetch_add(&ls->calls, 1);
    if (level == SHOAL_LOG_WARN) {
        atomic_fetch_add(&ls->warnings, 1);
    }
    atomic_store(&ls->inside, 1);
    if (ls->turn_off) {
        /* From inside the callback: must not wait for itself. */
        CHECK_OK(shoal_set_log_callback(NULL, NULL, SHOAL_LOG_OFF));
    }
    if (ls->slow > 0) {
        sleep_ms(ls->slow);
    }
    atomic_store(&ls->done, 1);
}

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    (void)ud;
    if (len >= 4 && memcmp(data, "fail", 4) == 0) {
        return -1; /* fails the connection, with a warning logged */
    }
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

/* Fails one connection (a warning is logged on a server thread). */
static void fail_one(uint16_t port) {
    int c = connect_to(port);
    send_str(c, "fail");
    CHECK(closed_by_peer(c));
    close(c);
}

static void scenario(uint64_t workers) {
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_data = on_data;
    shoal_config *cfg = test_config(1, workers);
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);

    /* 1. The callback turns logging off from inside: the first warning only. */
    struct log_state first;
    memset(&first, 0, sizeof first);
    first.turn_off = 1;
    CHECK_OK(shoal_set_log_callback(on_log, &first, SHOAL_LOG_WARN));
    fail_one(port);
    for (int i = 0; i < 500 && atomic_load(&first.done) == 0; i++) {
        sleep_ms(10);
    }
    CHECK(atomic_load(&first.done) == 1);
    fail_one(port);
    /* The server still serves. */
    int c = connect_to(port);
    char buf[8];
    send_str(c, "ping");
    recv_exact(c, buf, 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    close(c);
    CHECK(atomic_load(&first.calls) == 1);
    CHECK(atomic_load(&first.warnings) == 1);

    /* 2. Replaced from outside while another thread is inside the old callback: the call
     * returns only after that thread left it, so the old user data may go away then. */
    struct log_state *slow = calloc(1, sizeof *slow);
    CHECK(slow != NULL);
    slow->slow = 200;
    CHECK_OK(shoal_set_log_callback(on_log, slow, SHOAL_LOG_WARN));
    int f = connect_to(port);
    send_str(f, "fail");
    for (int i = 0; i < 500 && atomic_load(&slow->inside) == 0; i++) {
        sleep_ms(10);
    }
    CHECK(atomic_load(&slow->inside) == 1);
    CHECK_OK(shoal_set_log_callback(NULL, NULL, SHOAL_LOG_OFF));
    CHECK(atomic_load(&slow->done) == 1);
    free(slow);
    CHECK(closed_by_peer(f));
    close(f);

    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    CHECK_OK(shoal_server_free(srv));
}

int main(void) {
    signal(SIGALRM, watchdog);
    alarm(60);
    scenario(0);
    scenario(2);
    printf("log_test ok\n");
    return 0;
}
