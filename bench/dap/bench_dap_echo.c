/* bench_dap_echo.c -- the baseline for bench_dap: a minimal libwebsockets
 * server that answers every text message at once with a reply of the size a
 * real response would have.
 *
 * Purpose: measure what the stack alone (this lws build, the kernel's
 * loopback TCP, one service thread, the same 2 cores) delivers with the same
 * load generator, so that rrdeploy's requests/s can be quoted as a fraction
 * of it. Nothing here touches JSON parsing, SQLite or the scheduler.
 *
 * Design: the shape of the lws v4.1 minimal examples and of dap/server.c --
 * one protocol on /task/service with a 64 KiB rx buffer, no subprotocol;
 * fragments are assembled, then the reply is built and queued per session,
 * and written from SERVER_WRITEABLE, one frame per callback. A reply is
 *   {"type":"response","seq":S,"request_seq":R,"command":C,"success":true,
 *    "body":{"pad":"xxx..."}}
 * padded to the size given for C with --reply CMD=BYTES (default
 * --size BYTES, 512), R being the request's "seq" found by a plain scan.
 *
 * Usage: bench_dap_echo --port-file FILE [--size BYTES] [--reply CMD=BYTES]...
 * Listens on 127.0.0.1 on a kernel-picked port, writes it to FILE, and runs
 * until SIGTERM/SIGINT.
 *
 * Thread: one service thread. */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPLY_KINDS 8
#define MAX_MESSAGE (1024 * 1024)

struct reply_kind {
    char command[64];
    size_t size;
};

static struct reply_kind kinds[MAX_REPLY_KINDS];
static int nkinds;
static size_t default_size = 512;
static volatile sig_atomic_t stop;

struct reply {
    struct reply *next;
    size_t len;
    unsigned char *mem; /* owned; LWS_PRE headroom, then len bytes */
};

/* Per session; lws allocates it zeroed. */
struct pss {
    struct reply *head, *tail; /* owned queue */
    long long seq;             /* server seq */
    unsigned char *rx;         /* owned: message being assembled */
    size_t rx_len, rx_cap;
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fputs("bench_dap_echo: out of memory\n", stderr);
        abort();
    }
    return q;
}

/* The integer after "key": in s[0..n), or 0. */
static long long find_int(const char *s, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < n; i++) {
        if (memcmp(s + i, key, kl) != 0)
            continue;
        long long v = 0;
        for (size_t j = i + kl; j < n && s[j] >= '0' && s[j] <= '9'; j++)
            v = v * 10 + (s[j] - '0');
        return v;
    }
    return 0;
}

/* Copy the string value of "command" into out (empty if absent). */
static void find_command(const char *s, size_t n, char *out, size_t outsz)
{
    static const char key[] = "\"command\":\"";
    size_t kl = sizeof key - 1;
    out[0] = '\0';
    for (size_t i = 0; i + kl < n; i++) {
        if (memcmp(s + i, key, kl) != 0)
            continue;
        size_t j = i + kl, k = 0;
        while (j < n && s[j] != '"' && k + 1 < outsz)
            out[k++] = s[j++];
        out[k] = '\0';
        return;
    }
}

static size_t size_for(const char *command)
{
    for (int i = 0; i < nkinds; i++)
        if (strcmp(kinds[i].command, command) == 0)
            return kinds[i].size;
    return default_size;
}

static void on_message(struct lws *wsi, struct pss *p)
{
    const char *text = (const char *)p->rx;
    char command[64];
    find_command(text, p->rx_len, command, sizeof command);
    long long rseq = find_int(text, p->rx_len, "\"seq\":");
    size_t want = size_for(command);

    char head[256];
    int hn = snprintf(head, sizeof head,
                      "{\"type\":\"response\",\"seq\":%lld,\"request_seq\":%lld,"
                      "\"command\":\"%s\",\"success\":true,\"body\":{\"pad\":\"",
                      ++p->seq, rseq, command);
    if (hn < 0 || (size_t)hn >= sizeof head)
        hn = 0;
    static const char tail[] = "\"}}";
    size_t len = (size_t)hn + sizeof tail - 1;
    if (want > len)
        len = want;
    struct reply *r = xrealloc(NULL, sizeof *r);
    r->next = NULL;
    r->len = len;
    r->mem = xrealloc(NULL, LWS_PRE + len);
    unsigned char *d = r->mem + LWS_PRE;
    memcpy(d, head, (size_t)hn);
    size_t pad = len - (size_t)hn - (sizeof tail - 1);
    memset(d + hn, 'x', pad);
    memcpy(d + (size_t)hn + pad, tail, sizeof tail - 1);
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    lws_callback_on_writable(wsi);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct pss *p = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[256];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 ||
            strcmp(uri, "/task/service") != 0)
            return 1;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        memset(p, 0, sizeof *p);
        break;
    case LWS_CALLBACK_RECEIVE:
        if (lws_is_first_fragment(wsi))
            p->rx_len = 0;
        if (p->rx_len + len > MAX_MESSAGE)
            return -1;
        if (p->rx_len + len > p->rx_cap) {
            p->rx_cap = (p->rx_len + len) * 2;
            p->rx = xrealloc(p->rx, p->rx_cap);
        }
        memcpy(p->rx + p->rx_len, in, len);
        p->rx_len += len;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
            on_message(wsi, p);
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        struct reply *r = p->head;
        if (!r)
            break;
        if (lws_write(wsi, r->mem + LWS_PRE, r->len, LWS_WRITE_TEXT) < (int)r->len)
            return -1;
        p->head = r->next;
        if (!p->head)
            p->tail = NULL;
        free(r->mem);
        free(r);
        if (p->head)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        while (p->head) {
            struct reply *r = p->head;
            p->head = r->next;
            free(r->mem);
            free(r);
        }
        p->tail = NULL;
        free(p->rx);
        p->rx = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"bench-dap-echo", callback, sizeof(struct pss), 64 * 1024, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(void)
{
    fputs("usage: bench_dap_echo --port-file FILE [--size BYTES] "
          "[--reply CMD=BYTES]...\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
            port_file = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--size") == 0) {
            default_size = strtoul(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--reply") == 0) {
            const char *a = argv[++i], *eq = strchr(a, '=');
            if (!eq || nkinds == MAX_REPLY_KINDS ||
                (size_t)(eq - a) >= sizeof kinds[0].command)
                usage();
            memcpy(kinds[nkinds].command, a, (size_t)(eq - a));
            kinds[nkinds].command[eq - a] = '\0';
            kinds[nkinds].size = strtoul(eq + 1, NULL, 10);
            nkinds++;
        } else {
            usage();
        }
    }
    if (!port_file)
        usage();

    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = 0;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fputs("bench_dap_echo: cannot create the lws context\n", stderr);
        return 1;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : -1;
    FILE *f = fopen(port_file, "w");
    int ok = f && port > 0 && fprintf(f, "%d\n", port) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "bench_dap_echo: cannot write %s\n", port_file);
        lws_context_destroy(ctx);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    while (!stop)
        if (lws_service(ctx, 0) < 0)
            break;
    lws_context_destroy(ctx);
    return 0;
}
