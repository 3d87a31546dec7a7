/* main.c -- the rrdeploy binary: `serve` (the daemon) and `keys` (API key
 * administration on the database file, also while the server runs).
 *
 * Design: thin argument parsing over the modules; every failure prints one
 * clear line to stderr and exits non-zero. Thread: main thread only. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dap/dap.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "util/util.h"

#define DEFAULT_DB "./rrdeploy.db"

static void usage(FILE *f)
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
          "  --port-file PATH      write the listening port here once ready\n"
          "  --exec CMD            run each pipeline with /bin/sh -c CMD (JSON on stdin)\n"
          "  --run-timeout DUR     stop a run after this long (default 1h)\n"
          "  --max-runs N          runs at once; more wait their turn (default 64)\n"
          "  --keep-runs N         ledger rows kept per deployment (default 100)\n"
          "  --shutdown-grace DUR  on SIGTERM, let runs finish this long (default 30s)\n"
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
          "as user 'local' with both permissions.\n",
          f);
}

static int die(const char *fmt, ...) RR_PRINTF(1, 2);
static int die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("rrdeploy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* Parse a decimal integer in [min, max]. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return RR_E_INVAL;
    *out = v;
    return 0;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT". */
static int parse_listen(const char *s, char *host, size_t hostsz, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *p = colon ? colon + 1 : s;
    long v;
    if (parse_long(p, 0, 65535, &v))
        return RR_E_INVAL;
    *port = (int)v;
    if (!colon || colon == s) {
        snprintf(host, hostsz, "127.0.0.1");
        return 0;
    }
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && n >= 2 && s[n - 1] == ']')
        s++, n -= 2;
    if (n == 0 || n >= hostsz)
        return RR_E_INVAL;
    memcpy(host, s, n);
    host[n] = '\0';
    return 0;
}

/* "30d", "12h", "90m", "45s", "2w" into seconds. */
static int parse_duration(const char *s, double *out)
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

static int open_store(const char *path, struct store **st)
{
    struct err e = {0};
    if (store_open(path, st, &e) != 0)
        return die("cannot open database %s: %s", path, e.msg);
    return 0;
}

/* ---------------------------------------------------------------- serve */

/* Every connection and run costs descriptors; the usual soft limit of 1024
 * would cap the server near a thousand clients. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536
                                                                       : rl.rlim_max;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("cannot raise the open-file limit: %s", strerror(errno));
}

/* First start on an empty database: create the admin key and show it once,
 * straight to stderr, never through the logger. */
static int bootstrap_admin(struct store *st)
{
    int64_t n;
    if (store_key_count(st, &n) != 0)
        return die("cannot read keys from the database");
    if (n > 0)
        return 0;
    char key[STORE_KEY_TEXT_MAX];
    struct store_key k;
    if (store_key_create(st, "admin", "bootstrap", STORE_PERM_ALL, 0,
                         time_now_real(), key, &k) != 0)
        return die("cannot create the first admin key");
    fprintf(stderr,
            "rrdeploy: first start: created user 'admin' with key %s "
            "(task.control,task.monitor). The key is shown only this once:\n"
            "%s\n",
            k.id, key);
    fflush(stderr);
    memset(key, 0, sizeof key);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"db", required_argument, NULL, 'd'},
        {"timezone", required_argument, NULL, 'z'},
        {"auth-timeout", required_argument, NULL, 'a'},
        {"port-file", required_argument, NULL, 'p'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"exec", required_argument, NULL, 'x'},
        {"run-timeout", required_argument, NULL, 't'},
        {"max-runs", required_argument, NULL, 'm'},
        {"keep-runs", required_argument, NULL, 'k'},
        {"shutdown-grace", required_argument, NULL, 'g'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
#ifdef RRDEPLOY_TEST_HOOKS
        {"test-clock", optional_argument, NULL, 'T'},
#endif
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dap_config cfg;
    dap_config_defaults(&cfg);
    const char *db = DEFAULT_DB;
    char host[256] = "127.0.0.1";
    enum log_level lvl = LOG_INFO;
    enum log_format fmt = LOG_FORMAT_TEXT;
    int c;
    long v;
    struct err e = {0};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (parse_listen(optarg, host, sizeof host, &cfg.port))
                return die("--listen: expected HOST:PORT, got '%s'", optarg);
            cfg.listen_host = host;
            break;
        case 'd': db = optarg; break;
        case 'z':
            if (cronx_zone_check(optarg, &e))
                return die("--timezone: %s", e.msg);
            cfg.default_zone = optarg;
            break;
        case 'a':
            if (parse_long(optarg, 1, 86400, &v))
                return die("--auth-timeout: expected seconds, got '%s'", optarg);
            cfg.auth_timeout_s = (int)v;
            break;
        case 'p': cfg.port_file = optarg; break;
        case 'L':
            if (log_level_parse(optarg, &lvl))
                return die("--log-level: expected debug|info|warn|error");
            break;
        case 'F':
            if (log_format_parse(optarg, &fmt))
                return die("--log-format: expected text|json");
            break;
        case 'x':
            if (!*optarg)
                return die("--exec: empty command");
            cfg.exec_cmd = optarg;
            break;
        case 't':
            if (parse_duration(optarg, &cfg.run_timeout_s))
                return die("--run-timeout: expected a duration like 1h, 90m "
                           "or 0.5s, got '%s'", optarg);
            break;
        case 'm':
            if (parse_long(optarg, 1, 4096, &v))
                return die("--max-runs: expected 1-4096, got '%s'", optarg);
            cfg.max_runs = (int)v;
            break;
        case 'k':
            if (parse_long(optarg, 1, 1000000, &v))
                return die("--keep-runs: expected 1-1000000, got '%s'", optarg);
            cfg.keep_runs = v;
            break;
        case 'g':
            if (parse_duration(optarg, &cfg.shutdown_grace_s))
                return die("--shutdown-grace: expected a duration like 30s, "
                           "got '%s'", optarg);
            break;
        case 'C': cfg.tls_cert = optarg; break;
        case 'K': cfg.tls_key = optarg; break;
#ifdef RRDEPLOY_TEST_HOOKS
        case 'T': {
            cfg.test_clock = true;
            char *end;
            if (optarg && (cfg.test_clock_start = strtod(optarg, &end), *end))
                return die("--test-clock: expected Unix seconds");
            break;
        }
#endif
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        return die("serve: unexpected argument '%s'", argv[optind]);
    if (!cfg.tls_cert != !cfg.tls_key)
        return die("--tls-cert and --tls-key go together");
    if (cfg.tls_cert && (access(cfg.tls_cert, R_OK) || access(cfg.tls_key, R_OK)))
        return die("cannot read %s", access(cfg.tls_cert, R_OK) ? cfg.tls_cert
                                                               : cfg.tls_key);
    log_configure(lvl, fmt);

    raise_fd_limit();
    const char *dev = getenv("ROCKETRIDE_APIKEY");
    if (dev && *dev) {
        cfg.dev_key = dev;
        log_info("ROCKETRIDE_APIKEY is set: it authenticates as user 'local'");
    }

    struct store *st;
    if (open_store(db, &st))
        return 1;
    if (bootstrap_admin(st)) {
        store_close(st);
        return 1;
    }
    log_info("rrdeploy %s, database %s", RRDEPLOY_VERSION, db);
    int rc = dap_serve(&cfg, st);
    store_close(st);
    return rc ? 1 : 0;
}

/* ---------------------------------------------------------------- keys */

static void format_time(double t, char *out, size_t n)
{
    if (t == 0) {
        snprintf(out, n, "-");
        return;
    }
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int print_key_text(const struct store_key *k, void *ud)
{
    (void)ud;
    char perms[64], created[32], expires[32], revoked[32];
    store_perms_format(k->perms, perms, sizeof perms);
    format_time(k->created_at, created, sizeof created);
    format_time(k->expires_at, expires, sizeof expires);
    format_time(k->revoked_at, revoked, sizeof revoked);
    printf("%-20s %-16s %-26s %-21s %-21s %-21s %s\n", k->id, k->user, perms,
           created, expires, revoked, k->label);
    return 0;
}

static int print_key_json(const struct store_key *k, void *ud)
{
    (void)ud;
    char perms[64];
    store_perms_format(k->perms, perms, sizeof perms);
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "{\"id\":");
    buf_json_cstr(&b, k->id);
    buf_puts(&b, ",\"user\":");
    buf_json_cstr(&b, k->user);
    buf_puts(&b, ",\"label\":");
    buf_json_cstr(&b, k->label);
    buf_puts(&b, ",\"perms\":");
    buf_json_cstr(&b, perms);
    buf_puts(&b, ",\"created_at\":");
    buf_json_time(&b, k->created_at);
    buf_puts(&b, ",\"expires_at\":");
    if (k->expires_at)
        buf_json_time(&b, k->expires_at);
    else
        buf_puts(&b, "null");
    buf_puts(&b, ",\"revoked_at\":");
    if (k->revoked_at)
        buf_json_time(&b, k->revoked_at);
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}");
    puts(buf_cstr(&b));
    buf_free(&b);
    return 0;
}

static int cmd_keys(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"user", required_argument, NULL, 'u'},
        {"label", required_argument, NULL, 'l'},
        {"perms", required_argument, NULL, 'p'},
        {"expires", required_argument, NULL, 'e'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return die("keys: expected create, list or revoke");
    const char *sub = argv[1];
    const char *db = DEFAULT_DB, *user = NULL, *label = NULL;
    unsigned perms = STORE_PERM_ALL;
    double expires = 0;
    bool json = false;
    struct err e = {0};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'u': user = optarg; break;
        case 'l': label = optarg; break;
        case 'p':
            if (store_perms_parse(optarg, &perms, &e))
                return die("--perms: %s", e.msg);
            break;
        case 'e':
            if (parse_duration(optarg, &expires))
                return die("--expires: expected a duration like 30d, 12h or "
                           "90m, got '%s'", optarg);
            break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }

    struct store *st;
    int rc = 0;
    if (strcmp(sub, "create") == 0) {
        if (!user)
            return die("keys create: --user NAME is required");
        if (store_user_validate(user, &e) || (label && store_label_validate(label, &e)))
            return die("keys create: %s", e.msg);
        if (optind < argc)
            return die("keys create: unexpected argument '%s'", argv[optind]);
        if (open_store(db, &st))
            return 1;
        double now = time_now_real();
        char key[STORE_KEY_TEXT_MAX];
        struct store_key k;
        if (store_key_create(st, user, label, perms, expires ? now + expires : 0,
                             now, key, &k) != 0) {
            rc = die("keys create: could not create the key");
        } else {
            char p[64];
            store_perms_format(k.perms, p, sizeof p);
            fprintf(stderr, "created key %s for user '%s' (%s); it is shown "
                            "only once:\n", k.id, k.user, p);
            printf("%s\n", key);
        }
        memset(key, 0, sizeof key);
    } else if (strcmp(sub, "list") == 0) {
        if (optind < argc)
            return die("keys list: unexpected argument '%s'", argv[optind]);
        if (open_store(db, &st))
            return 1;
        if (!json)
            printf("%-20s %-16s %-26s %-21s %-21s %-21s %s\n", "ID", "USER",
                   "PERMS", "CREATED", "EXPIRES", "REVOKED", "LABEL");
        if (store_key_list(st, json ? print_key_json : print_key_text, NULL))
            rc = die("keys list: cannot read keys");
    } else if (strcmp(sub, "revoke") == 0) {
        if (optind + 1 != argc)
            return die("keys revoke: expected exactly one key id or key");
        if (open_store(db, &st))
            return 1;
        struct store_key k;
        int r = store_key_revoke(st, argv[optind], time_now_real(), &k);
        if (r == RR_E_NOTFOUND)
            rc = die("keys revoke: no such key: %s",
                     strncmp(argv[optind], "rrk_", 4) == 0 ? "(the key given)"
                                                          : argv[optind]);
        else if (r)
            rc = die("keys revoke: %s", err_str(r));
        else
            fprintf(stderr, "revoked key %s of user '%s'\n", k.id, k.user);
    } else {
        return die("keys: unknown subcommand '%s' (create, list, revoke)", sub);
    }
    store_close(st);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return cmd_keys(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("rrdeploy %s\n", RRDEPLOY_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 && argc > 2 && cli_is_client_command(argv[2])) {
        char *sub[] = {argv[2], (char *)"--help", NULL};
        return cli_run_client(2, sub); /* `rrdeploy help add` = `rrdeploy add --help` */
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (cli_is_client_command(cmd))
        return cli_run_client(argc - 1, argv + 1);
    fprintf(stderr, "rrdeploy: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
