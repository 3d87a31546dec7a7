/* keys.c -- `rrdeploy keys create|list|revoke`: API key administration on
 * the database file, also while the server runs (SQLite WAL).
 *
 * Design: options first, then one store call per subcommand. A new key is
 * printed once on stdout (the message about it on stderr, so scripts can
 * capture the key alone) and wiped from memory after. A key given to
 * `revoke` in place of its id is never echoed back.
 * Thread: main thread only. */
#include "cli/cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_internal.h"
#include "store/store.h"
#include "util/util.h"

/* A key's time in UTC, ISO 8601; 0 (never) shows "-". */
static void format_time(double t, char *out, size_t n)
{
    if (t == 0)
        snprintf(out, n, "-");
    else
        cli__fmt_utc(t, out, n);
}

/* store_key_list() callbacks: one key as a table row, or as a JSON line. */
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

/* The options of `keys`, parsed. */
struct keys_opts {
    const char *db;            /* borrowed from argv, like the strings below */
    const char *user, *label;  /* create: NULL when not given */
    unsigned perms;            /* create: STORE_PERM_* */
    double expires;            /* create: seconds from now; 0 = never */
    bool json;                 /* list */
};

/* `keys create`: args are the arguments left after the options (none). */
static int keys_create(const struct keys_opts *o, int nargs, char **args)
{
    struct err e = {0};
    if (!o->user)
        return cli__fail(CLI_EXIT_FAILED,
                         "keys create: --user NAME is required");
    if (store_user_validate(o->user, &e) ||
        (o->label && store_label_validate(o->label, &e)))
        return cli__fail(CLI_EXIT_FAILED, "keys create: %s", e.msg);
    if (nargs > 0)
        return cli__fail(CLI_EXIT_FAILED,
                         "keys create: unexpected argument '%s'", args[0]);
    struct store *st;
    if (cli__open_store(o->db, &st))
        return CLI_EXIT_FAILED;
    int rc = CLI_EXIT_OK;
    double now = time_now_real();
    char key[STORE_KEY_TEXT_MAX];
    struct store_key k;
    double expires_at = o->expires ? now + o->expires : 0;
    if (store_key_create(st, o->user, o->label, o->perms, expires_at, now, key,
                         &k) != 0) {
        rc = cli__fail(CLI_EXIT_FAILED,
                       "keys create: could not create the key");
    } else {
        char p[64];
        store_perms_format(k.perms, p, sizeof p);
        fprintf(stderr, "created key %s for user '%s' (%s); it is shown "
                        "only once:\n", k.id, k.user, p);
        printf("%s\n", key);
    }
    memset(key, 0, sizeof key);
    store_close(st);
    return rc;
}

/* `keys list`: a table, or one JSON object per line with --json. */
static int keys_list(const struct keys_opts *o, int nargs, char **args)
{
    if (nargs > 0)
        return cli__fail(CLI_EXIT_FAILED, "keys list: unexpected argument '%s'",
                         args[0]);
    struct store *st;
    if (cli__open_store(o->db, &st))
        return CLI_EXIT_FAILED;
    int rc = CLI_EXIT_OK;
    if (!o->json)
        printf("%-20s %-16s %-26s %-21s %-21s %-21s %s\n", "ID", "USER",
               "PERMS", "CREATED", "EXPIRES", "REVOKED", "LABEL");
    if (store_key_list(st, o->json ? print_key_json : print_key_text, NULL))
        rc = cli__fail(CLI_EXIT_FAILED, "keys list: cannot read keys");
    store_close(st);
    return rc;
}

/* `keys revoke ID|KEY`. A key given in place of its id is never echoed. */
static int keys_revoke(const struct keys_opts *o, int nargs, char **args)
{
    if (nargs != 1)
        return cli__fail(CLI_EXIT_FAILED,
                         "keys revoke: expected exactly one key id or key");
    struct store *st;
    if (cli__open_store(o->db, &st))
        return CLI_EXIT_FAILED;
    int rc = CLI_EXIT_OK;
    struct store_key k;
    int r = store_key_revoke(st, args[0], time_now_real(), &k);
    if (r == RR_E_NOTFOUND)
        rc = cli__fail(CLI_EXIT_FAILED, "keys revoke: no such key: %s",
                       strncmp(args[0], "rrk_", 4) == 0 ? "(the key given)"
                                                       : args[0]);
    else if (r)
        rc = cli__fail(CLI_EXIT_FAILED, "keys revoke: %s", err_str(r));
    else
        fprintf(stderr, "revoked key %s of user '%s'\n", k.id, k.user);
    store_close(st);
    return rc;
}

int cli_run_keys(int argc, char **argv)
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
        return cli__fail(CLI_EXIT_FAILED,
                         "keys: expected create, list or revoke");
    const char *sub = argv[1];
    struct keys_opts o = {.db = CLI_DEFAULT_DB, .perms = STORE_PERM_ALL};
    struct err e = {0};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db = optarg; break;
        case 'u': o.user = optarg; break;
        case 'l': o.label = optarg; break;
        case 'p':
            if (store_perms_parse(optarg, &o.perms, &e))
                return cli__fail(CLI_EXIT_FAILED, "--perms: %s", e.msg);
            break;
        case 'e':
            if (cli__parse_duration_opt("--expires", optarg,
                                        "a duration like 30d, 12h or 90m",
                                        &o.expires))
                return CLI_EXIT_FAILED;
            break;
        case 'j': o.json = true; break;
        case 'h': cli_print_usage(stdout); return CLI_EXIT_OK;
        default: cli_print_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (strcmp(sub, "create") == 0)
        return keys_create(&o, nargs, args);
    if (strcmp(sub, "list") == 0)
        return keys_list(&o, nargs, args);
    if (strcmp(sub, "revoke") == 0)
        return keys_revoke(&o, nargs, args);
    return cli__fail(CLI_EXIT_FAILED,
                     "keys: unknown subcommand '%s' (create, list, revoke)",
                     sub);
}
