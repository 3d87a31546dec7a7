/* serve.c -- `rrdeploy serve`: the daemon's options, then the server.
 *
 * Design: parse the options into a struct runner_config, check what can be
 * checked before start-up (the time zone, the TLS files), configure the log,
 * raise the open-file limit, open the database (creating the first admin key
 * on an empty one) and hand over to the daemon (runner_serve) until a stop
 * signal.
 * Thread: main thread; runner_serve() runs the event loop on it. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "runner/runner.h"
#include "scheduler/cron.h"
#include "store/store.h"
#include "util/util.h"

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT". */
static int parse_listen(const char *s, char *host, size_t hostsz, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *p = colon ? colon + 1 : s;
    long v;
    if (cli__parse_long(p, 0, 65535, &v))
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
        return cli__fail(CLI_EXIT_FAILED,
                         "cannot read keys from the database");
    if (n > 0)
        return 0;
    char key[STORE_KEY_TEXT_MAX];
    struct store_key k;
    if (store_key_create(st, "admin", "bootstrap", STORE_PERM_ALL, 0,
                         time_now_real(), key, &k) != 0)
        return cli__fail(CLI_EXIT_FAILED, "cannot create the first admin key");
    fprintf(stderr,
            "rrdeploy: first start: created user 'admin' with key %s "
            "(task.control,task.monitor). The key is shown only this once:\n"
            "%s\n",
            k.id, key);
    fflush(stderr);
    memset(key, 0, sizeof key);
    return 0;
}

/* Everything `serve` is told on its command line. */
struct serve_args {
    struct runner_config cfg;
    const char *db;
    char host[256];
    enum log_level lvl;
    enum log_format fmt;
};

/* Parse argv into a; -1 to go on, else the exit status to return (help,
 * usage, an invalid option, with its message printed). */
static int parse_serve_args(int argc, char **argv, struct serve_args *a)
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
        {"max-unauth-per-address", required_argument, NULL, 'U'},
#ifdef RRDEPLOY_TEST_HOOKS
        {"test-clock", optional_argument, NULL, 'T'},
#endif
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct runner_config *cfg = &a->cfg;
    int c;
    long v;
    struct err e = {0};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (parse_listen(optarg, a->host, sizeof a->host, &cfg->dap.port))
                return cli__fail(CLI_EXIT_FAILED,
                                 "--listen: expected HOST:PORT, got '%s'",
                                 optarg);
            cfg->dap.listen_host = a->host;
            break;
        case 'd': a->db = optarg; break;
        case 'z':
            if (cronx_zone_check(optarg, &e))
                return cli__fail(CLI_EXIT_FAILED, "--timezone: %s", e.msg);
            cfg->default_zone = optarg;
            break;
        case 'a':
            if (cli__parse_long_opt("--auth-timeout", optarg, 1, 86400,
                                    "seconds", &v))
                return CLI_EXIT_FAILED;
            cfg->dap.auth_timeout_s = (int)v;
            break;
        case 'p': cfg->port_file = optarg; break;
        case 'L':
            if (log_level_parse(optarg, &a->lvl))
                return cli__fail(CLI_EXIT_FAILED,
                                 "--log-level: expected debug|info|warn|error");
            break;
        case 'F':
            if (log_format_parse(optarg, &a->fmt))
                return cli__fail(CLI_EXIT_FAILED,
                                 "--log-format: expected text|json");
            break;
        case 'x':
            if (!*optarg)
                return cli__fail(CLI_EXIT_FAILED, "--exec: empty command");
            cfg->exec_cmd = optarg;
            break;
        case 't':
            if (cli__parse_duration_opt("--run-timeout", optarg,
                                        "a duration like 1h, 90m or 0.5s",
                                        &cfg->run_timeout_s))
                return CLI_EXIT_FAILED;
            break;
        case 'm':
            if (cli__parse_long_opt("--max-runs", optarg, 1, 4096, "1-4096",
                                    &v))
                return CLI_EXIT_FAILED;
            cfg->max_runs = (int)v;
            break;
        case 'k':
            if (cli__parse_long_opt("--keep-runs", optarg, 1, 1000000,
                                    "1-1000000", &v))
                return CLI_EXIT_FAILED;
            cfg->keep_runs = v;
            break;
        case 'g':
            if (cli__parse_duration_opt("--shutdown-grace", optarg,
                                        "a duration like 30s",
                                        &cfg->shutdown_grace_s))
                return CLI_EXIT_FAILED;
            break;
        case 'U':
            if (cli__parse_long_opt("--max-unauth-per-address", optarg, 0,
                                    100000, "0-100000", &v))
                return CLI_EXIT_FAILED;
            cfg->dap.max_unauth_per_address = (int)v;
            break;
        case 'C': cfg->dap.tls_cert = optarg; break;
        case 'K': cfg->dap.tls_key = optarg; break;
#ifdef RRDEPLOY_TEST_HOOKS
        case 'T': {
            cfg->test_clock = true;
            char *end;
            if (optarg && (cfg->test_clock_start = strtod(optarg, &end), *end))
                return cli__fail(CLI_EXIT_FAILED,
                                 "--test-clock: expected Unix seconds");
            break;
        }
#endif
        case 'h': cli_print_usage(stdout); return CLI_EXIT_OK;
        default: cli_print_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli__fail(CLI_EXIT_FAILED, "serve: unexpected argument '%s'",
                         argv[optind]);
    if (!cfg->dap.tls_cert != !cfg->dap.tls_key)
        return cli__fail(CLI_EXIT_FAILED,
                         "--tls-cert and --tls-key go together");
    if (cfg->dap.tls_cert &&
        (access(cfg->dap.tls_cert, R_OK) || access(cfg->dap.tls_key, R_OK)))
        return cli__fail(CLI_EXIT_FAILED, "cannot read %s",
                         access(cfg->dap.tls_cert, R_OK) ? cfg->dap.tls_cert
                                                         : cfg->dap.tls_key);
    return -1;
}

int cli_run_serve(int argc, char **argv)
{
    struct serve_args a = {.db = CLI_DEFAULT_DB, .host = "127.0.0.1",
                           .lvl = LOG_INFO, .fmt = LOG_FORMAT_TEXT};
    runner_config_defaults(&a.cfg);
    int rc = parse_serve_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    log_configure(a.lvl, a.fmt);

    raise_fd_limit();
    const char *dev = getenv("ROCKETRIDE_APIKEY");
    if (dev && *dev) {
        a.cfg.dap.dev_key = dev;
        log_info("ROCKETRIDE_APIKEY is set: it authenticates as user 'local'");
    }
    struct err e = {0};
    if (dap_config_check(&a.cfg.dap, &e))
        return cli__fail(CLI_EXIT_FAILED, "%s", e.msg);

    struct store *st;
    if (cli__open_store(a.db, &st))
        return CLI_EXIT_FAILED;
    if (bootstrap_admin(st)) {
        store_close(st);
        return CLI_EXIT_FAILED;
    }
    log_info("rrdeploy %s, database %s", RRDEPLOY_VERSION, a.db);
    rc = runner_serve(&a.cfg, st);
    store_close(st);
    return rc ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}
