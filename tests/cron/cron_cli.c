/* cron_cli.c -- line-oriented driver for the cron engine (test helper).
 *
 * Purpose: let a script (the croniter differential test, the bench companion,
 * a human) query scheduler/ in one process. Design: one request per stdin
 * line, one answer per stdout line, flushed, so a driver can pipeline:
 *   next<TAB>expr<TAB>zone<TAB>from<TAB>count  ->  "OK t1 t2 ..." | "ERR reason"
 *   local<TAB>expr<TAB>zone<TAB>from<TAB>count ->  "OK iso1 iso2 ..." (local ISO)
 *   warn<TAB>expr<TAB>zone<TAB>from<TAB>count  ->  "OK w1|w2|..." (preview warnings)
 *   resolved<TAB>expr<TAB>zone<TAB>from<TAB>count -> "OK text" (H resolved)
 * An optional sixth field is the hash id for H, in hex (its bytes are
 * hashed with cronx_seed); without it H is rejected. zone "-" means the default (UTC).
 * Times are Unix seconds.
 * Thread: single-threaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/cron.h"

#define LINE_MAX_LEN 4096
#define COUNT_MAX 1000

static char *field(char **p)
{
    char *s = *p;
    if (!s)
        return NULL;
    char *tab = strchr(s, '\t');
    if (tab) {
        *tab = '\0';
        *p = tab + 1;
    } else {
        *p = NULL;
    }
    return s;
}

static void answer(const char *cmd, const char *expr, const char *zone,
                   long long from, int count, const char *id)
{
    struct cronx *c = NULL;
    struct err e = {0};
    char resolved[CRONX_RESOLVED_MAX];
    const char *z = strcmp(zone, "-") == 0 ? NULL : zone;
    unsigned char bytes[LINE_MAX_LEN / 2];
    size_t n = 0;
    for (const char *q = id; q && q[0] && q[1] && n < sizeof bytes; q += 2) {
        unsigned v;
        if (sscanf(q, "%2x", &v) != 1)
            break;
        bytes[n++] = (unsigned char)v;
    }
    int rc = id ? cronx_parse_seeded(expr, z, cronx_seed(bytes, n),
                                     resolved, sizeof resolved, &c, &e)
                : cronx_parse(expr, z, &c, &e);
    if (rc != 0) {
        printf("ERR %s\n", e.msg);
        return;
    }
    if (strcmp(cmd, "resolved") == 0) {
        printf("OK %s\n", id ? resolved : expr);
        cronx_free(c);
        return;
    }
    static int64_t at[COUNT_MAX];
    struct cronx_preview pv;
    cronx_preview(c, from, count, at, &pv);
    fputs("OK", stdout);
    if (strcmp(cmd, "warn") == 0) {
        for (int i = 0; i < pv.nwarnings; i++)
            printf("%c%s", i ? '|' : ' ', pv.warnings[i]);
    } else {
        for (int i = 0; i < pv.count; i++) {
            if (strcmp(cmd, "local") == 0) {
                char buf[CRONX_LOCAL_MAX];
                cronx_format_local(c, at[i], buf);
                printf(" %s", buf);
            } else {
                printf(" %lld", (long long)at[i]);
            }
        }
    }
    putchar('\n');
    cronx_free(c);
}

int main(void)
{
    static char line[LINE_MAX_LEN];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        char *cmd = field(&p), *expr = field(&p), *zone = field(&p);
        char *from = field(&p), *count = field(&p), *id = field(&p);
        if (!cmd || !expr || !zone || !from || !count) {
            printf("ERR bad request\n");
        } else {
            int n = atoi(count);
            if (n < 0)
                n = 0;
            if (n > COUNT_MAX)
                n = COUNT_MAX;
            answer(cmd, expr, zone, strtoll(from, NULL, 10), n, id);
        }
        if (fflush(stdout) != 0)
            return 1;
    }
    return 0;
}
