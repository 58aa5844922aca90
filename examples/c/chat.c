/*
 * chat — a broadcast chat: every complete line (ending in \n) a client sends goes to every
 * other connected client, not back to the sender. A new client first gets one line,
 * `* welcome: N other(s) here`, once it can be reached by the others.
 *
 *     make examples && target/c/chat --host 127.0.0.1 --port 9001
 *     nc 127.0.0.1 9001        (in several terminals)
 *
 * What it shows:
 *  - per-connection state: a line buffer for the start of a line whose end has not arrived,
 *    stored with shoal_conn_set_context() and freed in on_close, which gets it back;
 *  - state shared by all connections: a registry of the connected ids. Callbacks of
 *    different connections run at the same time on different threads (reactors, or workers
 *    with --workers N), so it is protected by a mutex;
 *  - writes to other connections by id: one may close at any moment, so SHOAL_ERR_CLOSED
 *    from such a write is expected and ignored.
 *
 * Flags besides --host, --port, --threads and --workers: --max-connections,
 * --idle-timeout-ms, --max-write-buffer (a client that stops reading is dropped there).
 */
#include "cli.h"

#include <pthread.h>

/* Longest line accepted; a client sending a longer one is told so and disconnected. */
#define MAX_LINE ((size_t)64 * 1024)

/* Every connected client's id (the server's user data). */
typedef struct registry {
    pthread_mutex_t lock;
    shoal_conn_id *ids;
    size_t count;
    size_t cap;
} registry;

/* One client's state (its connection's context). Only its own connection's callbacks touch
 * it, and those never run concurrently. */
typedef struct client {
    char *partial; /* the start of an unfinished line */
    size_t len;
    size_t cap;
    shoal_conn_id *peers; /* scratch space for the ids a line goes to */
    size_t peers_cap;
} client;

/* `p` (an array of `*cap` elements of `size` bytes) reallocated to hold at least `want`
 * (`*cap` updated); NULL without memory, `p` then unchanged. */
static void *grow(void *p, size_t *cap, size_t want, size_t size) {
    size_t n = *cap > 0 ? *cap : 16;
    while (n < want) {
        n *= 2;
    }
    void *q = realloc(p, n * size);
    if (q != NULL) {
        *cap = n;
    }
    return q;
}

/* Makes room for `more` bytes after the unfinished line. */
static bool partial_reserve(client *c, size_t more) {
    if (c->len + more <= c->cap) {
        return true;
    }
    char *p = grow(c->partial, &c->cap, c->len + more, 1);
    if (p == NULL) {
        return false;
    }
    c->partial = p;
    return true;
}

/* Adds `id`; `*others` gets how many clients were there before. */
static bool registry_add(registry *reg, shoal_conn_id id, size_t *others) {
    bool ok = true;
    pthread_mutex_lock(&reg->lock);
    if (reg->count == reg->cap) {
        shoal_conn_id *ids = grow(reg->ids, &reg->cap, reg->count + 1, sizeof *ids);
        ok = ids != NULL;
        if (ok) {
            reg->ids = ids;
        }
    }
    if (ok) {
        *others = reg->count;
        reg->ids[reg->count++] = id;
    }
    pthread_mutex_unlock(&reg->lock);
    return ok;
}

static void registry_remove(registry *reg, shoal_conn_id id) {
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->count; i++) {
        if (reg->ids[i] == id) {
            reg->ids[i] = reg->ids[--reg->count];
            break;
        }
    }
    pthread_mutex_unlock(&reg->lock);
}

/* Copies every id but `self` into c->peers; returns how many, or -1 without memory. The
 * writes happen after the lock is released: shoal calls never run under our lock. */
static long registry_others(registry *reg, shoal_conn_id self, client *c) {
    long n = 0;
    pthread_mutex_lock(&reg->lock);
    if (reg->count > c->peers_cap) {
        shoal_conn_id *peers = grow(c->peers, &c->peers_cap, reg->count, sizeof *peers);
        if (peers == NULL) {
            n = -1;
        } else {
            c->peers = peers;
        }
    }
    for (size_t i = 0; n >= 0 && i < reg->count; i++) {
        if (reg->ids[i] != self) {
            c->peers[n++] = reg->ids[i];
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return n;
}

static void registry_free(void *user_data) {
    registry *reg = user_data;
    pthread_mutex_destroy(&reg->lock);
    free(reg->ids);
    free(reg);
}

static void client_free(client *c) {
    if (c != NULL) {
        free(c->partial);
        free(c->peers);
        free(c);
    }
}

/* Sends `len` bytes (whole lines) to every client but the sender. */
static bool broadcast(registry *reg, shoal_conn *from, client *c, const void *msg, size_t len) {
    long n = registry_others(reg, shoal_conn_get_id(from), c);
    for (long i = 0; i < n; i++) {
        shoal_status st = shoal_conn_write_to(from, c->peers[i], msg, len);
        /* CLOSED: that client left meanwhile. WRITE_OVERFLOW: it stopped reading and is
         * being dropped. STOPPED: the server is shutting down. None concerns the sender. */
        if (st != SHOAL_OK && st != SHOAL_ERR_CLOSED && st != SHOAL_ERR_WRITE_OVERFLOW &&
            st != SHOAL_ERR_STOPPED) {
            cli_report("chat", "shoal_conn_write_to", st);
        }
    }
    return n >= 0;
}

static int on_open(void *user_data, shoal_conn *conn) {
    registry *reg = user_data;
    client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1; /* fails the connection; on_close still runs (with a NULL context) */
    }
    shoal_status st = shoal_conn_set_context(conn, c);
    if (st != SHOAL_OK) {
        client_free(c);
        return -1;
    }
    size_t others;
    if (!registry_add(reg, shoal_conn_get_id(conn), &others)) {
        return -1;
    }
    char hello[64];
    int n = snprintf(hello, sizeof hello, "* welcome: %zu other(s) here\n", others);
    (void)shoal_conn_write(conn, hello, (size_t)n);
    return 0;
}

static int64_t on_data(void *user_data, shoal_conn *conn, const uint8_t *data, size_t len) {
    registry *reg = user_data;
    client *c = shoal_conn_context(conn);
    if (c == NULL) {
        return -1; /* not reached: on_open set it, or failed and no input is delivered */
    }
    /* Everything up to the last \n is complete lines; the rest starts the next line. */
    size_t complete = len;
    while (complete > 0 && data[complete - 1] != '\n') {
        complete--;
    }
    /* Every line, finished or not, is held to MAX_LINE (the first continues what was
     * buffered). */
    size_t run = c->len;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            run = 0;
        } else if (++run > MAX_LINE) {
            static const char msg[] = "* line too long\n";
            (void)shoal_conn_write(conn, msg, sizeof msg - 1);
            /* A lingering close: a plain close with unread input would make the kernel
             * reset the connection, possibly before the client reads why. */
            (void)shoal_conn_shutdown(conn);
            return (int64_t)len;
        }
    }
    if (complete > 0) {
        bool ok;
        if (c->len == 0) {
            ok = broadcast(reg, conn, c, data, complete); /* straight from shoal's buffer */
        } else {
            if (!partial_reserve(c, complete)) {
                return -1;
            }
            memcpy(c->partial + c->len, data, complete);
            ok = broadcast(reg, conn, c, c->partial, c->len + complete);
            c->len = 0;
        }
        if (!ok) {
            return -1; /* out of memory: fail this connection */
        }
    }
    size_t rest = len - complete;
    if (rest > 0) {
        if (!partial_reserve(c, rest)) {
            return -1;
        }
        memcpy(c->partial + c->len, data + complete, rest);
        c->len += rest;
    }
    return (int64_t)len;
}

static void on_close(void *user_data, shoal_conn_id id, void *context, int reason,
                     int os_error) {
    (void)reason;
    (void)os_error;
    registry_remove(user_data, id);
    client_free(context);
}

int main(int argc, char **argv) {
    static const cli_flag flags[] = {
        {"max-connections", SHOAL_OPT_MAX_CONNECTIONS, "pause accepting at this many connections",
         0, false},
        {"idle-timeout-ms", SHOAL_OPT_IDLE_TIMEOUT_MS,
         "close connections idle this long (0 = never)", 0, false},
        {"max-write-buffer", SHOAL_OPT_MAX_WRITE_BUFFER,
         "most output queued for a client before it is dropped", 0, false},
    };
    cli_args args = cli_parse(argc, argv, "chat", 9001, flags, sizeof flags / sizeof flags[0]);

    registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL || pthread_mutex_init(&reg->lock, NULL) != 0) {
        fprintf(stderr, "chat: cannot create the registry\n");
        return 1;
    }
    shoal_config *config = cli_config(&args);
    shoal_handler handler = {
        .size = sizeof handler,
        .on_open = on_open,
        .on_data = on_data,
        .on_close = on_close,
    };
    shoal_server *server = NULL;
    /* On success the server owns `reg` and frees it with registry_free after the last
     * callback; on failure it stays ours (and the process exits). */
    cli_check(args.program, "shoal_server_new",
              shoal_server_new(config, &handler, reg, registry_free, &server));
    shoal_config_free(config);

    cli_run(&args, server);
    cli_free(&args);
    return 0;
}
