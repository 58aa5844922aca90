/*
 * cli.h — the conventions every C example server follows (as examples/rust/common/cli.rs is
 * for the Rust ones), header-only so each example stays one translation unit:
 *
 *  - flags `--host H` (default 127.0.0.1), `--port P` (0 picks a free port), `--threads N`
 *    (reactors; default: one per CPU), `--workers N` (0 = callbacks inline, the default), plus
 *    each program's own numeric flags, most of which set one SHOAL_OPT_* directly; `--name V`
 *    and `--name=V` both work, `--help` lists them, a bad flag exits with status 2;
 *  - every shoal_status is checked: a failure prints shoal's error and exits with status 1;
 *  - SIGINT and SIGTERM stop the server gracefully (shoal_server_stop() is async-signal-safe);
 *  - once accepting, one flushed stdout line `listening on HOST:PORT` with the real port.
 */
#ifndef SHOAL_EXAMPLE_CLI_H
#define SHOAL_EXAMPLE_CLI_H

/* sigaction() and nanosleep() are POSIX: ask for them under a strict -std=c11 too. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <shoal.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A numeric flag: `option` is the SHOAL_OPT_* it sets, or 0 for one the program reads
 * itself (cli_value()). `value` and `given` are filled in by cli_parse(). */
typedef struct cli_flag {
    const char *name; /* without the leading "--" */
    shoal_option option;
    const char *help;
    uint64_t value;
    bool given;
} cli_flag;

/* The parsed command line. */
typedef struct cli_args {
    const char *program;
    const char *host;
    uint64_t port;
    cli_flag *flags; /* the common flags first, then the program's */
    size_t count;
} cli_args;

/* Prints a failed call's error and shoal's detailed message for it to stderr. */
static inline void cli_report(const char *program, const char *what, shoal_status status) {
    /* The message is only valid until the next shoal call on this thread: copy it first. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", shoal_last_error());
    fprintf(stderr, "%s: %s failed: %s (%s)%s%s\n", program, what, shoal_err_name(status),
            shoal_strerror(status), detail[0] != '\0' ? ": " : "", detail);
}

/* Exits with status 1, reporting the error, unless `status` is SHOAL_OK. */
static inline void cli_check(const char *program, const char *what, shoal_status status) {
    if (status != SHOAL_OK) {
        cli_report(program, what, status);
        exit(1);
    }
}

static inline void cli_usage(FILE *out, const cli_args *args) {
    fprintf(out, "usage: %s [flags]\n  --%-24s %s\n  --%-24s %s\n", args->program, "host",
            "address to bind (default 127.0.0.1)", "port", "port to bind, 0 picks a free one");
    for (size_t i = 0; i < args->count; i++) {
        fprintf(out, "  --%-24s %s\n", args->flags[i].name, args->flags[i].help);
    }
}

static inline uint64_t cli_number(const cli_args *args, const char *name, const char *text) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno == ERANGE) {
        fprintf(stderr, "%s: --%s expects a number, got \"%s\"\n", args->program, name, text);
        exit(2);
    }
    return (uint64_t)v;
}

/* Parses argv against `flags` (the program's own, `count` of them, copied) and the common
 * --host, --port, --threads and --workers. Exits on --help (0) or a bad flag (2). Free the
 * result with cli_free(). */
static inline cli_args cli_parse(int argc, char **argv, const char *program,
                                 uint64_t default_port, const cli_flag *flags, size_t count) {
    static const cli_flag common[] = {
        {"threads", SHOAL_OPT_THREADS, "reactor threads (default: number of CPUs)", 0, false},
        {"workers", SHOAL_OPT_WORKERS, "run callbacks on N worker threads (0 = inline, default)",
         0, false},
    };
    size_t ncommon = sizeof common / sizeof common[0];
    cli_args args = {program, "127.0.0.1", default_port, NULL, ncommon + count};
    args.flags = calloc(args.count, sizeof *args.flags);
    if (args.flags == NULL) {
        fprintf(stderr, "%s: out of memory\n", program);
        exit(1);
    }
    memcpy(args.flags, common, sizeof common);
    if (count > 0) {
        memcpy(args.flags + ncommon, flags, count * sizeof *flags);
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli_usage(stdout, &args);
            free(args.flags);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument \"%s\"\n", program, arg);
            cli_usage(stderr, &args);
            exit(2);
        }
        char name[64];
        const char *value;
        const char *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (name_len >= sizeof name) {
            name_len = sizeof name - 1;
        }
        memcpy(name, arg + 2, name_len);
        name[name_len] = '\0';
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "%s: --%s needs a value\n", program, name);
            exit(2);
        }
        if (strcmp(name, "host") == 0) {
            args.host = value;
            continue;
        }
        if (strcmp(name, "port") == 0) {
            args.port = cli_number(&args, name, value);
            if (args.port > 65535) {
                fprintf(stderr, "%s: --port %s is not a port\n", program, value);
                exit(2);
            }
            continue;
        }
        cli_flag *f = NULL;
        for (size_t k = 0; k < args.count; k++) {
            if (strcmp(args.flags[k].name, name) == 0) {
                f = &args.flags[k];
            }
        }
        if (f == NULL) {
            fprintf(stderr, "%s: unknown flag --%s\n", program, name);
            cli_usage(stderr, &args);
            exit(2);
        }
        f->value = cli_number(&args, name, value);
        f->given = true;
    }
    return args;
}

/* The value of flag `name` if it was given, else `fallback`. */
static inline uint64_t cli_value(const cli_args *args, const char *name, uint64_t fallback) {
    for (size_t i = 0; i < args->count; i++) {
        if (strcmp(args->flags[i].name, name) == 0 && args->flags[i].given) {
            return args->flags[i].value;
        }
    }
    return fallback;
}

/* A configuration listening on --host:--port with every given flag that names an option set. */
static inline shoal_config *cli_config(const cli_args *args) {
    shoal_config *config = shoal_config_new();
    if (config == NULL) {
        fprintf(stderr, "%s: out of memory\n", args->program);
        exit(1);
    }
    char addr[128];
    const char *fmt = strchr(args->host, ':') != NULL ? "[%s]:%llu" : "%s:%llu";
    int n = snprintf(addr, sizeof addr, fmt, args->host, (unsigned long long)args->port);
    if (n < 0 || (size_t)n >= sizeof addr) {
        fprintf(stderr, "%s: --host %s is too long\n", args->program, args->host);
        exit(2);
    }
    cli_check(args->program, "shoal_config_set_addr",
              shoal_config_set_addr(config, addr, (size_t)n));
    for (size_t i = 0; i < args->count; i++) {
        const cli_flag *f = &args->flags[i];
        if (f->given && f->option != 0) {
            cli_check(args->program, f->name, shoal_config_set(config, f->option, f->value));
        }
    }
    return config;
}

static inline void cli_free(cli_args *args) {
    free(args->flags);
    args->flags = NULL;
}

/* The server SIGINT and SIGTERM stop. An atomic pointer: a signal handler may read it. */
static _Atomic(shoal_server *) cli_signal_target;

static inline void cli_on_signal(int sig) {
    (void)sig;
    int saved = errno;
    shoal_server *server = atomic_load(&cli_signal_target);
    if (server != NULL) {
        shoal_server_stop(server); /* async-signal-safe; idempotent */
    }
    errno = saved;
}

static inline void cli_set_signals(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* From now on SIGINT and SIGTERM stop `server`. */
static inline void cli_stop_on_signals(shoal_server *server) {
    atomic_store(&cli_signal_target, server);
    cli_set_signals(cli_on_signal);
}

/* After shoal_server_run() returned, before shoal_server_free(): later signals are ignored
 * (only this thread is left, so no handler is still running) and the pointer is forgotten. */
static inline void cli_forget_signals(void) {
    cli_set_signals(SIG_IGN);
    atomic_store(&cli_signal_target, NULL);
}

/* Prints `listening on HOST:PORT` (the real port), flushed. */
static inline void cli_announce(const cli_args *args, const shoal_server *server) {
    char addr[128];
    cli_check(args->program, "shoal_server_local_addr",
              shoal_server_local_addr(server, addr, sizeof addr, NULL));
    printf("listening on %s\n", addr);
    fflush(stdout);
}

/* Runs `server` until SIGINT or SIGTERM has stopped it and every connection is closed, then
 * frees it (which frees its user data). */
static inline void cli_run(const cli_args *args, shoal_server *server) {
    cli_stop_on_signals(server);
    cli_announce(args, server);
    cli_check(args->program, "shoal_server_run", shoal_server_run(server));
    cli_forget_signals();
    /* SHOAL_ERR_BUSY: a worker's callback outlived the shutdown grace and still runs; the
     * server is freed once it returns. Meanwhile a second Ctrl-C ends the process as usual
     * (the server is no longer reachable from a signal handler). */
    cli_set_signals(SIG_DFL);
    shoal_status st;
    while ((st = shoal_server_free(server)) == SHOAL_ERR_BUSY) {
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    cli_check(args->program, "shoal_server_free", st);
}

#endif
