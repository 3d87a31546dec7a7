/* serve.c -- `rrdeploy serve`: the daemon's options, then the server.
 *
 * Design: parse the options into a struct runner_config, check what can be
 * checked before start-up (the time zone, the TLS files, runs' environment),
 * configure the log, raise the open-file limit, open the database (creating
 * the first admin key on an empty one, shown on stderr or written to
 * --admin-key-file) and hand over to the daemon (runner_serve) until a stop
 * signal.
 * Thread: main thread; runner_serve() runs the event loop on it. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli/cli_internal.h"
#include "dap/client.h"
#include "runner/executor.h"
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

/* ------------------------------------------------------------ admin key */

/* Write all n bytes of p to fd. 0, or -errno. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path, so that the new name is durable too.
 * 0, or -errno. */
static int sync_parent(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else
        slash[slash == dir ? 1 : 0] = '\0';
    int rc = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* The key and a newline into the new file fd (closed here), on disk when
 * this returns 0; else -errno. */
static int key_file_write(int fd, const char *path, const char *key)
{
    int rc = fchmod(fd, 0600) == 0 ? 0 : -errno; /* whatever the umask */
    if (rc == 0)
        rc = write_all(fd, key, strlen(key));
    if (rc == 0)
        rc = write_all(fd, "\n", 1);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0)
        rc = sync_parent(path);
    return rc;
}

/* The admin key goes to a new file at path, and nowhere else. The key is
 * created in a store batch committed only once the file is on disk: on any
 * failure the file is removed and the batch never commits (closing the
 * store, as the caller then does, rolls it back), so the database is still
 * empty and the next start tries again. */
static int bootstrap_admin_to_file(struct store *st, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return cli__fail(CLI_EXIT_FAILED,
                         "--admin-key-file: %s already exists and is never "
                         "overwritten: save the key it holds and delete it, "
                         "or name another file",
                         path);
    if (fd < 0)
        return cli__fail(CLI_EXIT_FAILED, "--admin-key-file: cannot create "
                         "%s: %s", path, strerror(errno));
    char key[STORE_KEY_TEXT_MAX];
    struct store_key k;
    if (store_batch_begin(st) != 0 ||
        store_key_create(st, "admin", "bootstrap", STORE_PERM_ALL, 0,
                         time_now_real(), key, &k) != 0) {
        close(fd);
        unlink(path);
        return cli__fail(CLI_EXIT_FAILED, "cannot create the first admin key");
    }
    int rc = key_file_write(fd, path, key);
    sodium_memzero(key, sizeof key);
    if (rc != 0) {
        unlink(path);
        return cli__fail(CLI_EXIT_FAILED, "--admin-key-file: cannot write "
                         "%s: %s", path, strerror(-rc));
    }
    if (store_batch_commit(st) != 0) {
        unlink(path);
        return cli__fail(CLI_EXIT_FAILED,
                         "cannot save the first admin key in the database");
    }
    fprintf(stderr,
            "rrdeploy: first start: created user 'admin' with key %s "
            "(task.control,task.monitor). The key is in %s (mode 0600) and "
            "shown nowhere else: read it once, then delete the file.\n",
            k.id, path);
    fflush(stderr);
    return 0;
}

/* First start on an empty database: create the admin key and show it once,
 * straight to stderr, never through the logger; or, with key_file, write it
 * to that new file instead. */
static int bootstrap_admin(struct store *st, const char *key_file)
{
    int64_t n;
    if (store_key_count(st, &n) != 0)
        return cli__fail(CLI_EXIT_FAILED,
                         "cannot read keys from the database");
    if (n > 0)
        return 0;
    if (key_file)
        return bootstrap_admin_to_file(st, key_file);
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
    sodium_memzero(key, sizeof key);
    return 0;
}

/* ------------------------------------------------------------ options */

/* Everything `serve` is told on its command line. */
struct serve_args {
    struct runner_config cfg;
    const char *db;
    char host[256];
    enum log_level lvl;
    enum log_format fmt;
    /* Runs' environment and the first admin key (parse_run_option): */
    const char **run_env, **pass_env; /* owned arrays of argv strings */
    const char *admin_key_file;
};

/* Options with no letter of their own, kept apart from the others. */
enum {
    OPT_RUN_ENV = 256,
    OPT_PASS_ENV,
    OPT_OUTPUT_MAX,
    OPT_ADMIN_KEY_FILE,
    OPT_ENGINE,
    OPT_ENGINE_KEY_FILE,
    OPT_SECRET_FILE,
    OPT_REPLY_CACHE,
};

/* A size in bytes: digits, then optionally K (KiB) or M (MiB). 0 and *out
 * if it is at most max, else RR_E_INVAL. */
static int parse_size(const char *s, size_t max, size_t *out /* OUT */)
{
    if (*s < '0' || *s > '9')
        return RR_E_INVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10), mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024 * 1024, end++;
    if (errno || *end || v > max / mul)
        return RR_E_INVAL;
    *out = (size_t)(v * mul);
    return 0;
}

/* --run-env, --pass-env, --output-max, --reply-cache and --admin-key-file. 0, or
 * CLI_EXIT_FAILED with the reason printed. */
static int parse_run_option(int c, const char *arg, struct serve_args *a)
{
    struct runner_config *cfg = &a->cfg;
    struct err e = {0};
    if (c == OPT_RUN_ENV || c == OPT_PASS_ENV) {
        bool set = c == OPT_RUN_ENV;
        if (exec_env_check(arg, set, &e))
            return cli__fail(CLI_EXIT_FAILED, "%s: %s",
                             set ? "--run-env" : "--pass-env", e.msg);
        const char ***list = set ? &a->run_env : &a->pass_env;
        size_t *n = set ? &cfg->nrun_env : &cfg->npass_env;
        *list = xrealloc(*list, (*n + 1) * sizeof **list);
        (*list)[(*n)++] = arg;
        cfg->run_env = a->run_env;
        cfg->pass_env = a->pass_env;
    } else if (c == OPT_OUTPUT_MAX) {
        if (parse_size(arg, EXEC_OUTPUT_LIMIT, &cfg->output_max))
            return cli__fail(CLI_EXIT_FAILED,
                             "--output-max: expected bytes from 0 to 16M "
                             "(e.g. 65536, 64K, 1M), got '%s'",
                             arg);
    } else if (c == OPT_REPLY_CACHE) {
        if (parse_size(arg, (size_t)1 << 40, &cfg->dap.reply_cache))
            return cli__fail(CLI_EXIT_FAILED,
                             "--reply-cache: expected bytes (e.g. 0, 16M, 64M), got '%s'",
                             arg);
    } else if (c == OPT_ADMIN_KEY_FILE) {
        if (!*arg)
            return cli__fail(CLI_EXIT_FAILED, "--admin-key-file: empty path");
        a->admin_key_file = arg;
    } else if (c == OPT_ENGINE) {
        struct dap_url u;
        if (dap_url_parse(arg, &u, &e))
            return cli__fail(CLI_EXIT_FAILED, "--engine: %s", e.msg);
        cfg->engine_url = arg;
    } else if (c == OPT_ENGINE_KEY_FILE || c == OPT_SECRET_FILE) {
        if (!*arg)
            return cli__fail(CLI_EXIT_FAILED, "%s: empty path",
                             c == OPT_SECRET_FILE ? "--secret-file"
                                                  : "--engine-key-file");
        *(c == OPT_SECRET_FILE ? &cfg->secret_file : &cfg->engine_key_file) = arg;
    }
    return 0;
}

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
        {"starting-deadline", required_argument, NULL, 'D'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"run-env", required_argument, NULL, OPT_RUN_ENV},
        {"pass-env", required_argument, NULL, OPT_PASS_ENV},
        {"output-max", required_argument, NULL, OPT_OUTPUT_MAX},
        {"reply-cache", required_argument, NULL, OPT_REPLY_CACHE},
        {"admin-key-file", required_argument, NULL, OPT_ADMIN_KEY_FILE},
        {"engine", required_argument, NULL, OPT_ENGINE},
        {"engine-key-file", required_argument, NULL, OPT_ENGINE_KEY_FILE},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
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
        case 'D':
            if (cli__parse_duration_opt("--starting-deadline", optarg,
                                        "a duration like 60s or 5m",
                                        &cfg->starting_deadline_s))
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
        case OPT_RUN_ENV:
        case OPT_PASS_ENV:
        case OPT_OUTPUT_MAX:
        case OPT_REPLY_CACHE:
        case OPT_ADMIN_KEY_FILE:
        case OPT_ENGINE:
        case OPT_ENGINE_KEY_FILE:
        case OPT_SECRET_FILE:
            if (parse_run_option(c, optarg, a))
                return CLI_EXIT_FAILED;
            break;
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
    if (cfg->engine_url && cfg->exec_cmd)
        return cli__fail(CLI_EXIT_FAILED, "--engine and --exec are two ways of "
                         "running pipelines: give one of them");
    if (!cfg->engine_url && (cfg->engine_key_file || cfg->secret_file))
        return cli__fail(CLI_EXIT_FAILED, "%s needs --engine",
                         cfg->engine_key_file ? "--engine-key-file" : "--secret-file");
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

/* Serve with the options of a until a stop signal; the exit status. */
static int serve(struct serve_args *a)
{
    log_configure(a->lvl, a->fmt);

    raise_fd_limit();
    const char *dev = getenv("ROCKETRIDE_APIKEY");
    if (dev && *dev) {
        a->cfg.dap.dev_key = dev;
        log_info("ROCKETRIDE_APIKEY is set: it authenticates as user 'local'");
    }
    struct err e = {0};
    if (dap_config_check(&a->cfg.dap, &e))
        return cli__fail(CLI_EXIT_FAILED, "%s", e.msg);

    struct store *st;
    if (cli__open_store(a->db, &st))
        return CLI_EXIT_FAILED;
    if (bootstrap_admin(st, a->admin_key_file)) {
        store_close(st);
        return CLI_EXIT_FAILED;
    }
    log_info("rrdeploy %s, database %s", RRDEPLOY_VERSION, a->db);
    char *secret = NULL;
    if (a->cfg.engine_url && !a->cfg.secret_file) { /* beside the database */
        struct buf b;
        buf_init(&b, 0);
        buf_printf(&b, "%s.secret", a->db);
        a->cfg.secret_file = secret = buf_take(&b, NULL);
    }
    int rc = runner_serve(&a->cfg, st);
    free(secret);
    store_close(st);
    return rc ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}

int cli_run_serve(int argc, char **argv)
{
    struct serve_args a = {.db = CLI_DEFAULT_DB, .host = "127.0.0.1",
                           .lvl = LOG_INFO, .fmt = LOG_FORMAT_TEXT};
    runner_config_defaults(&a.cfg);
    int rc = parse_serve_args(argc, argv, &a);
    if (rc < 0)
        rc = serve(&a);
    free(a.run_env);
    free(a.pass_env);
    return rc;
}
