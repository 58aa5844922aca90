/*
 * echo — every byte a client sends comes back to it.
 *
 *     make examples && target/c/echo --host 127.0.0.1 --port 9000 --threads 2
 *
 * The smallest stream server: one on_data callback that queues the input for writing and
 * reports all of it consumed. Flags besides --host, --port, --threads and --workers:
 * --idle-timeout-ms, --read-timeout-ms, --write-timeout-ms, --max-connections, --reuse-port,
 * --queue, --handler-timeout-ms, and --handler-delay-ms (each on_data sleeps first, to show
 * blocking callbacks on workers).
 */
#include "cli.h"

#include <time.h>

static int64_t on_data(void *user_data, shoal_conn *conn, const uint8_t *data, size_t len) {
    const long *delay_ms = user_data;
    if (*delay_ms > 0) {
        struct timespec ts = {*delay_ms / 1000, (*delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* A failed write (output past SHOAL_OPT_MAX_WRITE_BUFFER, or the connection already
     * closing) closes the connection by itself: nothing to do but drop the bytes. */
    (void)shoal_conn_write(conn, data, len);
    return (int64_t)len;
}

int main(int argc, char **argv) {
    static const cli_flag flags[] = {
        {"idle-timeout-ms", SHOAL_OPT_IDLE_TIMEOUT_MS,
         "close connections idle this long (0 = never)", 0, false},
        {"read-timeout-ms", SHOAL_OPT_READ_TIMEOUT_MS,
         "close when a partial message waits this long", 0, false},
        {"write-timeout-ms", SHOAL_OPT_WRITE_TIMEOUT_MS,
         "close when output makes no progress this long", 0, false},
        {"max-connections", SHOAL_OPT_MAX_CONNECTIONS,
         "pause accepting at this many connections", 0, false},
        {"reuse-port", SHOAL_OPT_REUSE_PORT,
         "1 = one listener per reactor (default), 0 = one shared", 0, false},
        {"queue", SHOAL_OPT_QUEUE_CAPACITY, "worker queue capacity (default 1024)", 0, false},
        {"handler-timeout-ms", SHOAL_OPT_HANDLER_TIMEOUT_MS,
         "close connections whose callback runs longer (workers)", 0, false},
        {"handler-delay-ms", 0, "sleep this long in each on_data before echoing", 0, false},
    };
    cli_args args = cli_parse(argc, argv, "echo", 9000, flags, sizeof flags / sizeof flags[0]);
    /* Read by every callback on every thread, never written after the server starts. */
    static long delay_ms;
    delay_ms = (long)cli_value(&args, "handler-delay-ms", 0);

    shoal_config *config = cli_config(&args);
    shoal_handler handler = {.size = sizeof handler, .on_data = on_data};
    shoal_server *server = NULL;
    cli_check(args.program, "shoal_server_new",
              shoal_server_new(config, &handler, &delay_ms, NULL, &server));
    shoal_config_free(config);

    cli_run(&args, server);
    cli_free(&args);
    return 0;
}
