/* cli.c -- the parts of the command line every command shares: the
 * top-level usage text, the error printer, the integer and duration parsers
 * and opening the database.
 *
 * Design: main.c dispatches on the command name to serve.c, keys.c or
 * client.c; they report every failure as one "rrdeploy: ..." line through
 * cli__fail() and return an exit status (cli_internal.h), never exit().
 * Thread: main thread only. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"
#include "store/store.h"
#include "util/util.h"

void cli_print_usage(FILE *f)
{
    fputs("usage: rrdeploy <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve                 run the deployment server\n"
          "  keys create           create an API key (printed once)\n"
          "  keys list             list API keys\n"
          "  keys revoke ID|KEY    revoke an API key\n"
          "  version               print the version\n"
          "\n"
          "client commands (talk to a running server; COMMAND --help for more):\n"
          "  add FILE [--schedule S]       deploy a pipeline (JSON, .pipe, - = stdin)\n"
          "  list                          list your deployments\n"
          "  status ID                     show one deployment\n"
          "  update ID [--schedule S] [--pipeline FILE] [--pause|--resume]\n"
          "                                change, pause or resume a deployment\n"
          "  remove ID                     remove a deployment\n"
          "  run ID [--wait] [--idempotency-key K]\n"
          "                                start a run now (--wait: until it ends)\n"
          "  cancel ID                     stop the running run\n"
          "  runs ID [--limit N]           recent runs, newest first\n"
          "  watch [ID]                    print events until interrupted\n"
          "  preview SCHEDULE [--count N] [--from TIME]\n"
          "                                next fire times of a schedule\n"
          "\n"
          "client options:\n"
          "  --url URL             server (default $ROCKETRIDE_URI, else\n"
          "                        ws://127.0.0.1:5565)\n"
          "  --key KEY             API key (default $ROCKETRIDE_APIKEY)\n"
          "  --timeout SECS        give up after SECS (default 30)\n"
          "  --json                print the server's JSON, one line per answer\n"
          "\n"
          "serve options:\n"
          "  --listen HOST:PORT    address to listen on (default 127.0.0.1:5565)\n"
          "  --db PATH             database file (default ./rrdeploy.db)\n"
          "  --timezone ZONE       default zone for schedules (default UTC)\n"
          "  --auth-timeout SECS   close sockets not authenticated in time (30)\n"
          "  --max-unauth-per-address N\n"
          "                        unauthenticated connections per client\n"
          "                        address (10; 0 = no cap)\n"
          "  --port-file PATH      write the listening port here once ready\n"
          "  --exec CMD            run each pipeline with /bin/sh -c CMD (JSON on stdin)\n"
          "  --engine URL          run each pipeline on a RocketRide engine (ws://HOST:PORT,\n"
          "                        wss://, http(s)://); clients may sign in with their\n"
          "                        RocketRide API key (docs/engine.md)\n"
          "  --engine-key-file F   service credential for deployments added with local keys\n"
          "  --secret-file F       seals owners' credentials (default DB.secret, 0600)\n"
          "  --run-timeout DUR     stop a run after this long (default 1h)\n"
          "  --max-runs N          runs at once; more wait their turn (default 64)\n"
          "  --keep-runs N         ledger rows kept per deployment (default 100)\n"
          "  --shutdown-grace DUR  on SIGTERM, let runs finish this long (default 30s)\n"
          "  --starting-deadline DUR  after a restart, start runs decided before it\n"
          "                        up to this late; later ones are missed (60s)\n"
          "  --output-max SIZE     output kept per run, bytes or K/M, 0-16M (default 64K)\n"
          "  --reply-cache SIZE    status and list replies kept while nothing changes,\n"
          "                        bytes or K/M (default 64M; 0 renders every reply)\n"
          "  --run-env NAME=VALUE  set NAME in every run's environment (repeatable)\n"
          "  --pass-env NAME       give runs NAME from the server's environment\n"
          "                        (repeatable; runs get no other variable of it\n"
          "                        but PATH, LANG, LC_*, TZ)\n"
          "  --admin-key-file PATH on the first start, write the admin key to this\n"
          "                        new file (mode 0600) instead of stderr\n"
          "  --tls-cert PEM        serve wss:// and https:// with this certificate\n"
          "  --tls-key PEM         ... and this private key\n"
          "  --log-level LEVEL     debug|info|warn|error (default info)\n"
          "  --log-format FORMAT   text|json (default text)\n"
          "\n"
          "keys options:\n"
          "  --db PATH             database file (default ./rrdeploy.db)\n"
          "  --user NAME           (create) owner of the key\n"
          "  --label TEXT          (create) a note to recognise the key by\n"
          "  --perms LIST          (create) task.control,task.monitor (default both)\n"
          "  --expires DURATION    (create) e.g. 30d, 12h, 90m (default never)\n"
          "  --json                (list) one JSON object per line\n"
          "\n"
          "Environment: ROCKETRIDE_APIKEY, when set for `serve`, also authenticates\n"
          "as user 'local' with both permissions; runs never see it.\n",
          f);
}

int cli__fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("rrdeploy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return status;
}

int cli__parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return RR_E_INVAL;
    *out = v;
    return 0;
}

int cli__parse_long_opt(const char *opt, const char *s, long min, long max,
                        const char *expected, long *out)
{
    if (cli__parse_long(s, min, max, out) == 0)
        return 0;
    cli__fail(CLI_EXIT_FAILED, "%s: expected %s, got '%s'", opt, expected, s);
    return RR_E_INVAL;
}

int cli__parse_duration(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v <= 0)
        return RR_E_INVAL;
    double mul;
    if (!*end || strcmp(end, "s") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60;
    else if (strcmp(end, "h") == 0)
        mul = 3600;
    else if (strcmp(end, "d") == 0)
        mul = 86400;
    else if (strcmp(end, "w") == 0)
        mul = 7 * 86400;
    else
        return RR_E_INVAL;
    *out = v * mul;
    return 0;
}

int cli__parse_duration_opt(const char *opt, const char *s,
                            const char *expected, double *out)
{
    if (cli__parse_duration(s, out) == 0)
        return 0;
    cli__fail(CLI_EXIT_FAILED, "%s: expected %s, got '%s'", opt, expected, s);
    return RR_E_INVAL;
}

int cli__open_store(const char *path, struct store **out)
{
    struct err e = {0};
    if (store_open(path, out, &e) != 0)
        return cli__fail(CLI_EXIT_FAILED, "cannot open database %s: %s", path,
                         e.msg);
    return 0;
}
