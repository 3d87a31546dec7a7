/* cli_internal.h -- what the files of cli/ share: the exit statuses, the one
 * error printer, and the parsers more than one command uses. Not for other
 * modules: theirs is cli/cli.h. */
#ifndef RR_CLI_INTERNAL_H
#define RR_CLI_INTERNAL_H

#include "util/util.h"

struct store;

/* Exit statuses of every command. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,        /* refused by the server, or the command failed */
    CLI_EXIT_USAGE = 2,         /* bad arguments or input file */
    CLI_EXIT_CONN = 3,          /* no connection, connection lost, or timeout */
    CLI_EXIT_INTERRUPTED = 130, /* SIGINT or SIGTERM */
};

/* The database of `serve` and `keys` when --db is not given. */
#define CLI_DEFAULT_DB "./rrdeploy.db"

/* Print "rrdeploy: <fmt>" and a newline to stderr; return status, so that
 * `return cli__fail(CLI_EXIT_USAGE, ...)` reads naturally. */
int cli__fail(int status, const char *fmt, ...) RR_PRINTF(2, 3);

/* Parse a decimal integer in [min, max] (the whole of s). Returns 0, or
 * RR_E_INVAL and prints nothing. */
int cli__parse_long(const char *s, long min, long max, long *out /* OUT */);

/* Parse a positive duration: a number with an optional unit s, m, h, d or w
 * ("30d", "12h", "90m", "0.5s"; no unit means seconds) into seconds. Returns
 * 0, or RR_E_INVAL and prints nothing. */
int cli__parse_duration(const char *s, double *out /* OUT */);

/* Open the database at path. Returns 0 with *out owned by the caller
 * (store_close), or CLI_EXIT_FAILED with the reason printed. */
int cli__open_store(const char *path, struct store **out /* OUT */);

#endif
