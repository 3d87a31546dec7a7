/* cli_internal.h -- what the files of cli/ share: the exit statuses, the one
 * error printer, the parsers more than one command uses (cli.c), and text
 * for people: tables, times and JSON (format.c). Not for other modules:
 * theirs is cli/cli.h. */
#ifndef RR_CLI_INTERNAL_H
#define RR_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "util/util.h"

struct store;

/* Exit statuses of every command. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,         /* refused by the server, or it failed */
    CLI_EXIT_USAGE = 2,          /* bad arguments or input file */
    CLI_EXIT_CONN = 3,           /* no connection, connection lost, timeout */
    CLI_EXIT_INTERRUPTED = 130,  /* SIGINT or SIGTERM */
};

/* The database of `serve` and `keys` when --db is not given. */
#define CLI_DEFAULT_DB "./rrdeploy.db"

/* Print "rrdeploy: <fmt>" and a newline to stderr; return status, so that
 * `return cli__fail(CLI_EXIT_USAGE, ...)` reads naturally. */
int cli__fail(int status, const char *fmt, ...) RR_PRINTF(2, 3);

/* Parse a decimal integer in [min, max] (the whole of s). Returns 0, or
 * RR_E_INVAL and prints nothing. */
int cli__parse_long(const char *s, long min, long max, long *out /* OUT */);

/* The same for s, the value of option opt, saying what was wrong: returns 0,
 * or prints "<opt>: expected <expected>, got '<s>'" and returns RR_E_INVAL. */
int cli__parse_long_opt(const char *opt, const char *s, long min, long max,
                        const char *expected, long *out /* OUT */);

/* Parse a positive duration: a number with an optional unit s, m, h, d or w
 * ("30d", "12h", "90m", "0.5s"; no unit means seconds) into seconds. Returns
 * 0, or RR_E_INVAL and prints nothing. */
int cli__parse_duration(const char *s, double *out /* OUT */);

/* The same for s, the value of option opt, saying what was wrong: returns 0,
 * or prints "<opt>: expected <expected>, got '<s>'" and returns RR_E_INVAL. */
int cli__parse_duration_opt(const char *opt, const char *s,
                            const char *expected, double *out /* OUT */);

/* Open the database at path. Returns 0 with *out owned by the caller
 * (store_close), or CLI_EXIT_FAILED with the reason printed. */
int cli__open_store(const char *path, struct store **out /* OUT */);

/* ---------------------------------------------------------------- format.c */

#define CLI_COLOR_GREEN "\033[32m"
#define CLI_COLOR_YELLOW "\033[33m"
#define CLI_COLOR_RED "\033[31m"
#define CLI_COLOR_RESET "\033[0m"

/* A copy of s (NULL reads as "") fit for one table cell or line: control
 * characters, and so terminal escapes, become spaces. Owned: free(). */
char *cli__clean(const char *s);

/* Write a time into out (n bytes); "-" when it cannot be shown.
 * cli__fmt_time: local time "2026-01-01 09:00:00", with offset " +0100" after.
 * cli__fmt_utc: UTC, ISO 8601 "2026-01-01T08:00:00Z".
 * cli__fmt_rel: t relative to now, "in 4m", "5m ago" or "now".
 * cli__fmt_dur: a duration of s seconds, "0.1s", "42s", "3m05s", "2h10m",
 * "1d04h" (negative shows as 0). */
void cli__fmt_time(double t, bool offset, char *out, size_t n);
void cli__fmt_utc(double t, char *out, size_t n);
void cli__fmt_rel(double t, double now, char *out, size_t n);
void cli__fmt_dur(double s, char *out, size_t n);

/* Append the JSON text s (n bytes, valid JSON) to out, indented by 2 per
 * level and indent spaces on every line. Works on the text, so numbers and
 * escapes show exactly as they came. */
void cli__pretty_json(struct buf *out, const char *s, size_t n, int indent);


/* Rows of cells printed with aligned columns; row 0 is the header. */
struct cli_table {
    size_t ncols, nrows;
    char **cells;          /* owned, nrows * ncols */
    const char **colors;   /* static strings, parallel to cells */
};

/* Start an empty table of ncols columns (nothing to free yet). */
void cli__table_init(struct cli_table *t, size_t ncols);

/* Append a row of t->ncols const char * (copied through cli__clean; NULL or
 * "" shows "-"); arguments after the first ncols are ignored. */
void cli__table_row(struct cli_table *t, ...);

/* Colour cell col of the last row; color is a CLI_COLOR_* or NULL. */
void cli__table_color(struct cli_table *t, size_t col, const char *color);

/* Print t to stdout, columns two spaces apart, colours reset after each
 * coloured cell. */
void cli__table_print(const struct cli_table *t);

/* Free what t owns; t may be initialised again. */
void cli__table_free(struct cli_table *t);

#endif
