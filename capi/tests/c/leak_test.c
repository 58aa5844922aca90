/* A server that serves 1,000 connections (with per-connection contexts and timers), then
 * stops and is freed: run under valgrind, nothing may leak. */
#include "testutil.h"

#include <stdatomic.h>

static atomic_int closes;

static int on_open(void *ud, shoal_conn *conn) {
    (void)ud;
    CHECK_OK(shoal_conn_set_context(conn, malloc(32)));
    CHECK_OK(shoal_conn_set_timer(conn, 60000, 1));
    return 0;
}

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    (void)ud;
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

static void on_close(void *ud, shoal_conn_id id, void *context, int reason, int os_error) {
    (void)ud;
    (void)id;
    (void)reason;
    (void)os_error;
    free(context);
    atomic_fetch_add(&closes, 1);
}

static void free_ud(void *ud) { free(ud); }

int main(void) {
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_open = on_open;
    h.on_data = on_data;
    h.on_close = on_close;
    shoal_config *cfg = test_config(2, 0);
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, malloc(64), free_ud, &srv));
    shoal_config_free(cfg);
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);
    char buf[16];
    for (int i = 0; i < 1000; i++) {
        int c = connect_to(port);
        send_str(c, "ping");
        recv_exact(c, buf, 4);
        close(c);
    }
    /* A few still open when the server stops. */
    int open_fds[5];
    for (int i = 0; i < 5; i++) {
        open_fds[i] = connect_to(port);
        send_str(open_fds[i], "ping");
        recv_exact(open_fds[i], buf, 4);
    }
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    for (int i = 0; i < 5; i++) {
        close(open_fds[i]);
    }
    CHECK(atomic_load(&closes) == 1005);
    CHECK_OK(shoal_server_free(srv));
    printf("leak_test ok\n");
    return 0;
}
