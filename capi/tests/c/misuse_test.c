/* A C program misusing the API, under AddressSanitizer: callback pointers kept past their
 * callback (used from another connection's callback and from another thread), lengths that
 * are really negative ssize_t values, and a free_user_data that reads its server. Every
 * misuse must return an error, reach no connection, and leave the sanitizers quiet. Runs
 * inline and with workers. */
#include "testutil.h"

#include <stdatomic.h>

static shoal_server *the_server;
static shoal_conn *kept_conn;
static const shoal_request *kept_req;
static shoal_response *kept_res;
static atomic_int checked;
static atomic_ullong user_id;

static int64_t on_data(void *ud, shoal_conn *conn, const uint8_t *data, size_t len) {
    (void)ud;
    if (len == 4 && memcmp(data, "keep", 4) == 0) {
        kept_conn = conn;
    } else if (len == 3 && memcmp(data, "use", 3) == 0) {
        atomic_store(&user_id, shoal_conn_get_id(conn));
        /* Another connection's callback: the kept pointer names no live callback object. */
        CHECK_STATUS(shoal_conn_write(kept_conn, "LEAK", 4), SHOAL_ERR_WRONG_THREAD);
        CHECK_STATUS(shoal_conn_close(kept_conn), SHOAL_ERR_WRONG_THREAD);
        CHECK(shoal_conn_get_id(kept_conn) == 0);
        CHECK(strstr(shoal_last_error(), "running callback") != NULL);
        /* A negative length passed as size_t is refused, and the connection stays as it was. */
        CHECK_STATUS(shoal_conn_write(conn, "x", (size_t)-1), SHOAL_ERR_INVALID_ARG);
        shoal_iovec iov[2] = {{"a", 1}, {"b", (size_t)-2}};
        CHECK_STATUS(shoal_conn_writev(conn, iov, 2), SHOAL_ERR_INVALID_ARG);
        atomic_fetch_add(&checked, 1);
    }
    CHECK_OK(shoal_conn_write(conn, data, len));
    return (int64_t)len;
}

/* Nothing more arrives on fd within 100 ms. */
static void quiet(int fd) {
    struct timeval tv = {0, 100000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char b;
    CHECK(recv(fd, &b, 1, 0) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void stream_case(uint64_t workers) {
    atomic_store(&checked, 0);
    shoal_config *cfg = test_config(1, workers);
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_data = on_data;
    shoal_server *srv = NULL;
    CHECK_OK(shoal_server_new(cfg, &h, NULL, NULL, &srv));
    shoal_config_free(cfg);
    the_server = srv;
    CHECK_OK(shoal_server_start(srv));
    uint16_t port = shoal_server_port(srv);
    char got[8];

    int a = connect_to(port);
    send_str(a, "keep");
    recv_exact(a, got, 4);
    int b = connect_to(port);
    send_str(b, "use");
    recv_exact(b, got, 3);
    CHECK(memcmp(got, "use", 3) == 0);
    CHECK(atomic_load(&checked) == 1);
    /* From this thread, which runs no callback, too. */
    CHECK_STATUS(shoal_conn_write(kept_conn, "LEAK", 4), SHOAL_ERR_WRONG_THREAD);
    shoal_conn_id id = atomic_load(&user_id);
    CHECK_STATUS(shoal_server_write(srv, id, "x", (size_t)-1), SHOAL_ERR_INVALID_ARG);
    CHECK(shoal_server_is_live(srv, id) == 1);
    quiet(a);
    quiet(b);
    close(a);
    close(b);
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    CHECK_OK(shoal_server_free(srv));
    printf("misuse_test stream (workers %llu) ok\n", (unsigned long long)workers);
}

static int on_request(void *ud, const shoal_request *req, shoal_response *res) {
    (void)ud;
    const char *path;
    size_t len;
    CHECK_OK(shoal_request_path(req, &path, &len));
    if (len == 5 && memcmp(path, "/keep", 5) == 0) {
        kept_req = req;
        kept_res = res;
        return shoal_response_send(res, 200, NULL, 0, "kept", 4);
    }
    CHECK_STATUS(shoal_response_send(kept_res, 200, NULL, 0, "LEAK", 4), SHOAL_ERR_WRONG_THREAD);
    CHECK_STATUS(shoal_request_path(kept_req, &path, &len), SHOAL_ERR_WRONG_THREAD);
    CHECK(shoal_request_header_count(kept_req) == 0);
    /* Absurd lengths: nothing is sent and the response can still be given. */
    CHECK_STATUS(shoal_response_send(res, 200, NULL, 0, "x", (size_t)-1), SHOAL_ERR_INVALID_ARG);
    shoal_header bad = {"X-A", 3, "v", (size_t)-1};
    CHECK_STATUS(shoal_response_send(res, 200, &bad, 1, "x", 1), SHOAL_ERR_INVALID_ARG);
    CHECK_STATUS(shoal_response_send(res, 200, &bad, (size_t)-1, "x", 1), SHOAL_ERR_INVALID_ARG);
    atomic_fetch_add(&checked, 1);
    return shoal_response_send(res, 200, NULL, 0, "used", 4);
}

static void http_case(uint64_t workers) {
    atomic_store(&checked, 0);
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
    send_str(a, "GET /keep HTTP/1.1\r\nHost: t\r\n\r\n");
    char buf[4096];
    ssize_t n = recv(a, buf, sizeof buf - 1, 0);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strstr(buf, "kept") != NULL);
    int b = connect_to(port);
    send_str(b, "GET /use HTTP/1.1\r\nHost: t\r\n\r\n");
    n = recv(b, buf, sizeof buf - 1, 0);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strstr(buf, "200 OK") != NULL && strstr(buf, "used") != NULL);
    CHECK(strstr(buf, "LEAK") == NULL);
    CHECK(atomic_load(&checked) == 1);
    CHECK_STATUS(shoal_response_send(kept_res, 200, NULL, 0, "LEAK", 4), SHOAL_ERR_WRONG_THREAD);
    quiet(a);
    quiet(b);
    close(a);
    close(b);
    CHECK_OK(shoal_server_stop(srv));
    CHECK_OK(shoal_server_wait(srv));
    CHECK_OK(shoal_server_free(srv));
    printf("misuse_test http (workers %llu) ok\n", (unsigned long long)workers);
}

/* free_user_data that reads its server, as a program printing final counters would. */
struct app {
    shoal_server *srv;
    int started;
    int freed;
    uint64_t accepted;
};

static void app_free(void *p) {
    struct app *app = p;
    shoal_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_OK(shoal_server_stats(app->srv, &st));
    app->accepted = st.accepted;
    CHECK(shoal_server_port(app->srv) != 0);
    if (app->started) {
        CHECK_STATUS(shoal_server_start(app->srv), SHOAL_ERR_ALREADY_STARTED);
    } else {
        CHECK_STATUS(shoal_server_start(app->srv), SHOAL_ERR_BUSY);
        CHECK_STATUS(shoal_server_run(app->srv), SHOAL_ERR_BUSY);
    }
    CHECK_STATUS(shoal_server_free(app->srv), SHOAL_ERR_BUSY);
    CHECK(strstr(shoal_last_error(), "being freed") != NULL);
    app->freed++;
}

static void free_case(int start) {
    struct app app = {NULL, start, 0, 0};
    shoal_config *cfg = test_config(1, 0);
    shoal_handler h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.on_data = on_data;
    CHECK_OK(shoal_server_new(cfg, &h, &app, app_free, &app.srv));
    shoal_config_free(cfg);
    if (start) {
        CHECK_OK(shoal_server_start(app.srv));
        int fd = connect_to(shoal_server_port(app.srv));
        shoal_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        do {
            sleep_ms(1);
            CHECK_OK(shoal_server_stats(app.srv, &st));
        } while (st.accepted < 1);
        close(fd);
        CHECK_OK(shoal_server_stop(app.srv));
        CHECK_OK(shoal_server_wait(app.srv));
    }
    CHECK_OK(shoal_server_free(app.srv));
    CHECK(app.freed == 1);
    CHECK(app.accepted == (start ? 1u : 0u));
    printf("misuse_test free_user_data (started %d) ok\n", start);
}

int main(void) {
    stream_case(0);
    stream_case(2);
    http_case(0);
    http_case(2);
    free_case(0);
    free_case(1);
    return 0;
}
