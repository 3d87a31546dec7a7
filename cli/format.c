/* format.c -- text for people: server strings made safe for a terminal,
 * times, durations, JSON text made readable and tables with aligned columns.
 *
 * Design: functions over strings and numbers, no sockets and no JSON trees
 * (JSON is handled as text, so numbers and escapes show exactly as they
 * came), so the client commands decide what to show and this file only how.
 * Times are shown in the local zone (the TZ of the CLI) unless said UTC;
 * widths count UTF-8 code points, so a cell with accents still lines up.
 * Thread: main thread only (the tables print to stdout). */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_internal.h"
#include "util/util.h"

/* ---------------------------------------------------------------- text */

/* A copy of s fit for one table cell or line: control characters (and so
 * terminal escapes) become spaces. Returns a heap string (free()). */
char *cli__clean(const char *s)
{
    char *out = xstrdup(s ? s : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return out;
}

/* Display width: UTF-8 code points. */
static size_t width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

void cli__fmt_time(double t, bool offset, char *out, size_t n)
{
    time_t s = (time_t)floor(t);
    struct tm tm;
    if (!localtime_r(&s, &tm) ||
        strftime(out, n, offset ? "%Y-%m-%d %H:%M:%S %z" : "%Y-%m-%d %H:%M:%S",
                 &tm) == 0)
        snprintf(out, n, "-");
}

void cli__fmt_utc(double t, char *out, size_t n)
{
    time_t s = (time_t)floor(t);
    struct tm tm;
    if (!gmtime_r(&s, &tm) || strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, n, "-");
}

/* "in 4m", "5m ago", "now". */
void cli__fmt_rel(double t, double now, char *out, size_t n)
{
    double d = t - now, a = fabs(d);
    long v;
    char unit;
    if (a < 1) {
        snprintf(out, n, "now");
        return;
    }
    if (a < 60)
        v = (long)a, unit = 's';
    else if (a < 3600)
        v = (long)(a / 60), unit = 'm';
    else if (a < 86400)
        v = (long)(a / 3600), unit = 'h';
    else
        v = (long)(a / 86400), unit = 'd';
    snprintf(out, n, d > 0 ? "in %ld%c" : "%ld%c ago", v, unit);
}

void cli__fmt_dur(double s, char *out, size_t n)
{
    if (!(s >= 0))
        s = 0;
    long v = (long)s;
    if (s < 10)
        snprintf(out, n, "%.1fs", s);
    else if (s < 60)
        snprintf(out, n, "%lds", v);
    else if (s < 3600)
        snprintf(out, n, "%ldm%02lds", v / 60, v % 60);
    else if (s < 86400)
        snprintf(out, n, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else
        snprintf(out, n, "%ldd%02ldh", v / 86400, v / 3600 % 24);
}

/* ---------------------------------------------------------------- JSON text */

/* s[i] is the quote opening a JSON string: append the string, quotes and
 * escapes included, to out and return the index of its last byte (the
 * closing quote, or n - 1 if the text ends inside it). */
static size_t copy_string(struct buf *out, const char *s, size_t n, size_t i)
{
    size_t start = i++;
    for (; i < n; i++) {
        if (s[i] == '\\')
            i++; /* the escaped byte can't end the string */
        else if (s[i] == '"')
            break;
    }
    if (i >= n)
        i = n - 1;
    buf_append(out, s + start, i + 1 - start);
    return i;
}

/* Indent valid compact-or-not JSON text for people. Works on the text, so
 * numbers and escapes are shown exactly as stored. */
void cli__pretty_json(struct buf *out, const char *s, size_t n, int indent)
{
    int depth = 0;
#define NEWLINE()                                                              \
    do {                                                                       \
        buf_putc(out, '\n');                                                   \
        for (int k_ = 0; k_ < indent + 2 * depth; k_++)                        \
            buf_putc(out, ' ');                                                \
    } while (0)
    for (int k = 0; k < indent; k++)
        buf_putc(out, ' ');
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '"': i = copy_string(out, s, n, i); break;
        case '{':
        case '[': {
            size_t j = i + 1;
            while (j < n && strchr(" \t\r\n", s[j]))
                j++;
            buf_putc(out, ch);
            if (j < n && (s[j] == '}' || s[j] == ']')) {
                buf_putc(out, s[j]);
                i = j;
                break;
            }
            depth++;
            NEWLINE();
            break;
        }
        case '}':
        case ']':
            depth--;
            NEWLINE();
            buf_putc(out, ch);
            break;
        case ',':
            buf_putc(out, ch);
            NEWLINE();
            break;
        case ':': buf_puts(out, ": "); break;
        case ' ':
        case '\t':
        case '\r':
        case '\n': break;
        default: buf_putc(out, ch);
        }
    }
#undef NEWLINE
}

/* ---------------------------------------------------------------- tables */

void cli__table_init(struct cli_table *t, size_t ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
}

/* Append a row of t->ncols strings (copied, cleaned; NULL shows "-"). */
void cli__table_row(struct cli_table *t, ...)
{
    t->cells = xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *t->cells);
    t->colors = xrealloc(t->colors, (t->nrows + 1) * t->ncols * sizeof *t->colors);
    va_list ap;
    va_start(ap, t);
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + i] = cli__clean(s && *s ? s : "-");
        t->colors[t->nrows * t->ncols + i] = NULL;
    }
    va_end(ap);
    t->nrows++;
}

/* Colour cell col of the last row (when colour is on). */
void cli__table_color(struct cli_table *t, size_t col, const char *color)
{
    t->colors[(t->nrows - 1) * t->ncols + col] = color;
}

void cli__table_print(const struct cli_table *t)
{
    size_t *w = xcalloc(t->ncols, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            size_t n = width(t->cells[r * t->ncols + i]);
            if (n > w[i])
                w[i] = n;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            const char *color = t->colors[r * t->ncols + i];
            if (color)
                printf("%s%s%s", color, s, CLI_COLOR_RESET);
            else
                fputs(s, stdout);
            if (i + 1 < t->ncols)
                printf("%*s", (int)(w[i] - width(s) + 2), "");
        }
        putchar('\n');
    }
    free(w);
}

void cli__table_free(struct cli_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->colors);
    memset(t, 0, sizeof *t);
}
