/* bench_dap.c -- request throughput and latency of `rrdeploy serve` over
 * WebSocket, against a bare libwebsockets echo baseline.
 *
 * Purpose: print, in one run, requests/s and latency p50/p99/max for
 * rrext_deploy_status (one deployment), rrext_deploy_list (a user with 100
 * deployments) and durable rrext_deploy_add, the same generator against
 * bench_dap_echo (the limit of lws + loopback TCP on this machine), a check
 * that the generator is not the limit, one connection with one request in
 * flight (machine idle and kept awake), a paced phase at half the measured
 * status peak, and an fsync baseline, with PASS/MISS for the request path's
 * targets. Numbers only; not a test.
 *
 * Design:
 *  - Driver: starts a fresh `rrdeploy serve --listen 127.0.0.1:0 --db
 *    TMP/bench.db --port-file ...` (the binary next to the build's bench
 *    directory, or --rrdeploy PATH), reads the bootstrap admin key from its
 *    stderr (the line after "shown only this once"), creates the data over
 *    DAP with that key (100 deployments of user admin), and one key per add
 *    connection with `rrdeploy keys create` (one user each, so the 10,000
 *    deployments-per-user limit is never near). Then it starts
 *    bench_dap_echo with replies as large as the server's real status and
 *    list replies, runs the phases, stops both servers and removes TMP.
 *  - Generator: G threads (-g, default 1), each with its own epoll and a
 *    round-robin share of the connections; non-blocking sockets and a
 *    hand-written RFC 6455 client (masked text frames out; unmasked, possibly
 *    fragmented frames in; pings answered). Requests are prebuilt per kind
 *    (only the seq's digits, and an add's counter, are written per request)
 *    and masked 8 bytes at a time with a fresh key per frame; replies take a
 *    short path for the layout both servers write. N connections, each
 *    authenticated once. Closed loop: K requests in flight per connection, a
 *    new one sent as each reply arrives (all requests made ready by one read
 *    leave in one write). Replies are matched by request_seq (a
 *    per-connection ring of send times), so out-of-order replies would be
 *    fine. Paced: an open-loop schedule at a fixed total rate (each thread
 *    its share, staggered), round-robin over the connections, driven by a
 *    timerfd; latency is from the moment the request is written, and the
 *    sender's own lag behind the schedule is reported separately.
 *  - Measurement: each phase has a warm-up (not counted), then a window;
 *    requests/s = replies received in the window / window; latency over
 *    those replies. In-flight requests are drained between phases. Every
 *    reply must say "success":true. CPU of the server and of the generator
 *    (all its threads) come from /proc/PID/stat and getrusage(RUSAGE_SELF)
 *    over the window, per request and as a share of one core; context
 *    switches from /proc/PID/status.
 *  - Repetition: the closed-loop phases run R times (default 5),
 *    interleaved (the echo with 1 and 2 generator threads in alternating
 *    order, status, echo-list, list, then one connection with one request in
 *    flight for the echo and status, idle and with the machine kept awake:
 *    servers and generator sharing CPU 0, the other CPUs spinning), then paced (echo, status) and adds, and the
 *    medians are reported. The machine is small and shared: the generator
 *    and the server compete for the same cores, which the output says.
 *  - fsync baseline: the median time of one tiny committed transaction in a
 *    WAL database with synchronous=FULL, in the same directory.
 *
 * Thread: the main thread drives and samples; generator threads run each
 * phase; child processes for the servers, the CLI and the spinners. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "bench/common/bench_util.h"

extern char **environ;

#define RING 4096                 /* send-time slots per connection (power of 2) */
#define PACED_CAP 1024            /* in flight per connection in the paced phase */
#define PACED_TICK_NS 250000u     /* shortest paced timer period */
#define READ_CHUNK (256 * 1024)
#define SYNC_TIMEOUT_MS 30000
#define DRAIN_TIMEOUT_S 30.0
#define LIST_DEPLOYMENTS 100
#define MAX_REPS 16
#define MAX_GEN 16               /* generator threads */
#define FSYNC_SAMPLES 100

/* ================================================================ helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static char tmpdir[512];
static pid_t server_pid, echo_pid;
static pid_t spin_pids[64];
static int nspin;
static char server_stderr[600];
static bool keep_dir;

static void cleanup(void)
{
    for (int i = 0; i < nspin; i++)
        kill(spin_pids[i], SIGKILL);
    for (int i = 0; i < nspin; i++)
        waitpid(spin_pids[i], NULL, 0);
    nspin = 0;
    if (server_pid > 0)
        kill(server_pid, SIGKILL);
    if (echo_pid > 0)
        kill(echo_pid, SIGKILL);
    if (server_pid > 0)
        waitpid(server_pid, NULL, 0);
    if (echo_pid > 0)
        waitpid(echo_pid, NULL, 0);
    server_pid = echo_pid = 0;
    if (tmpdir[0] && !keep_dir) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_dap: could not remove %s\n", tmpdir);
        tmpdir[0] = '\0';
    }
}

static atomic_flag dying = ATOMIC_FLAG_INIT;

static void die(const char *fmt, ...)
{
    if (atomic_flag_test_and_set(&dying))
        for (;;)
            pause(); /* another thread is already on its way out */
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_dap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (server_stderr[0]) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", server_stderr);
        fputs("bench_dap: last lines of the server's stderr:\n", stderr);
        if (system(cmd) != 0)
            fputs("(could not show them)\n", stderr);
    }
    cleanup();
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die("out of memory");
    return q;
}

/* Nearest-rank percentile of sorted v[0..n). */
static uint64_t pct_sorted(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(p * (double)n);
    return v[k ? k - 1 : 0];
}

/* ================================================================ /proc */

struct proc_sample {
    double cpu_s;      /* utime + stime */
    long long vcsw;    /* voluntary context switches: the loop slept */
    long long ivcsw;   /* involuntary: preempted */
};

static void sample_pid(pid_t pid, struct proc_sample *out)
{
    memset(out, 0, sizeof *out);
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        char *p = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        /* fields after ") ": state(3) ... utime(14) stime(15) */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                        &ut, &st) == 2)
            out->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f) {
        while (fgets(buf, sizeof buf, f)) {
            if (strncmp(buf, "voluntary_ctxt_switches:", 24) == 0)
                out->vcsw = atoll(buf + 24);
            else if (strncmp(buf, "nonvoluntary_ctxt_switches:", 27) == 0)
                out->ivcsw = atoll(buf + 27);
        }
        fclose(f);
    }
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* ================================================================ processes */

/* Spawn argv with stdin /dev/null, stdout to out_fd (or /dev/null if -1) and
 * stderr to err_path (or inherited if NULL). */
static pid_t spawn(char *const argv[], int out_fd, const char *err_path)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (err_path)
        posix_spawn_file_actions_addopen(&fa, 2, err_path,
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("cannot start %s: %s", argv[0], strerror(rc));
    return pid;
}

/* --pin: the servers on CPU 0, the generator on CPU 1, so that a reply's
 * wake-up of the generator never preempts the server on its own core. */
static bool pin;

static void pin_to(pid_t pid, int cpu)
{
    if (!pin)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(pid, sizeof set, &set) != 0)
        die("sched_setaffinity(%d, cpu %d): %s", (int)pid, cpu, strerror(errno));
}

/* Every thread of pid (0: this process) allowed on the CPUs of set only.
 * Threads started later inherit their creator's. Best effort: a thread may
 * end meanwhile. */
static void affinity_all(pid_t pid, const cpu_set_t *set)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", pid ? (int)pid : (int)getpid());
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            (void)sched_setaffinity((pid_t)atoi(e->d_name), sizeof *set, set);
    closedir(d);
}

/* "Machine kept awake", as for a latency measurement on a VM: the two
 * servers and the generator share CPU 0, so a request and its reply hand
 * the core back and forth without ever leaving it idle or waking another
 * CPU, and every other CPU is kept busy by a spinning process (normal
 * priority, pinned), so no virtual CPU halts and the machine's other jobs
 * stay off CPU 0 as far as the scheduler allows. A cross-CPU wake-up costs
 * tens of microseconds in this kind of guest, far more than the request
 * itself: with the pair spread over two CPUs the p50 measures the
 * hypervisor. The spinners are separate processes, so their CPU time is
 * nobody's in the columns. */
static void spin_start(void)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    affinity_all(server_pid, &one);
    affinity_all(echo_pid, &one);
    affinity_all(0, &one);
    for (int i = 1; i < ncpu && nspin < (int)(sizeof spin_pids / sizeof *spin_pids); i++) {
        pid_t p = fork();
        if (p < 0)
            die("fork: %s", strerror(errno));
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;)
                __asm__ volatile("" ::: "memory");
        }
        spin_pids[nspin++] = p;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(i, &set);
        sched_setaffinity(p, sizeof set, &set); /* best effort */
    }
}

static void spin_stop(void)
{
    for (int i = 0; i < nspin; i++)
        kill(spin_pids[i], SIGKILL);
    for (int i = 0; i < nspin; i++)
        waitpid(spin_pids[i], NULL, 0);
    nspin = 0;
    cpu_set_t all, srv, gen;
    CPU_ZERO(&all);
    for (long i = 0; i < sysconf(_SC_NPROCESSORS_ONLN) && i < CPU_SETSIZE; i++)
        CPU_SET(i, &all);
    srv = gen = all;
    if (pin) { /* back to --pin's layout */
        CPU_ZERO(&srv);
        CPU_SET(0, &srv);
        CPU_ZERO(&gen);
        CPU_SET(1, &gen);
    }
    affinity_all(server_pid, &srv);
    affinity_all(echo_pid, &srv);
    affinity_all(0, &gen);
}

/* Wait for a port file written by pid; returns the port. */
static int wait_port(pid_t pid, const char *port_file, const char *what)
{
    uint64_t deadline = now_ns() + 30 * 1000000000ull;
    for (;;) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            char line[32] = "";
            bool got = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            if (got && strchr(line, '\n'))
                return atoi(line);
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            die("%s exited before listening (status %d)", what, st);
        if (now_ns() > deadline)
            die("%s did not write its port file within 30 s", what);
        usleep(10000);
    }
}

/* SIGTERM, wait up to 15 s, then SIGKILL. Returns the wait status. */
static int stop_child(pid_t *pid)
{
    int st = -1;
    if (*pid <= 0)
        return st;
    kill(*pid, SIGTERM);
    uint64_t deadline = now_ns() + 15 * 1000000000ull;
    while (waitpid(*pid, &st, WNOHANG) == 0) {
        if (now_ns() > deadline) {
            kill(*pid, SIGKILL);
            waitpid(*pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    *pid = 0;
    return st;
}

/* The bootstrap admin key: the line after the one saying "shown only this
 * once" on the server's stderr. */
static void read_admin_key(const char *path, char *key, size_t keysz)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read %s", path);
    char line[1024];
    bool next = false;
    key[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (next) {
            size_t n = strlen(line);
            if (n >= keysz)
                die("the admin key line is too long");
            memcpy(key, line, n + 1);
            break;
        }
        if (strstr(line, "shown only this once"))
            next = true;
    }
    fclose(f);
    if (!key[0])
        die("no bootstrap admin key on the server's stderr");
}

/* `rrdeploy keys create --db DB --user USER`: the key it prints. */
static void create_key(const char *bin, const char *db, const char *user, char *key,
                       size_t keysz)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    char *argv[] = {(char *)bin, "keys", "create", "--db", (char *)db, "--user",
                    (char *)user, "--label", "bench_dap", NULL};
    pid_t pid = spawn(argv, fds[1], "/dev/null");
    close(fds[1]);
    char out[256];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    out[strcspn(out, "\r\n")] = '\0';
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strncmp(out, "rrk_", 4) != 0)
        die("keys create --user %s failed", user);
    snprintf(key, keysz, "%s", out);
}

/* ================================================================ WebSocket client */

struct conn {
    int fd;
    unsigned char *rx;          /* owned: bytes read */
    size_t rx_len, rx_off, rx_cap;
    unsigned char *msg;         /* owned: fragmented message being assembled */
    size_t msg_len, msg_cap;
    bool in_frag;
    unsigned char *tx;          /* owned: bytes to write */
    size_t tx_len, tx_off, tx_cap;
    bool want_out;              /* EPOLLOUT wanted (registered when in an epoll) */
    int ep;                     /* the phase's epoll it is in, or -1 */
    bool dirty;                 /* on the flush list */
    int64_t seq;                /* last request seq sent */
    int inflight;
    uint64_t sent_ns[RING];     /* by seq & (RING-1); 0 = nothing pending */
    uint64_t rng;               /* xorshift state for this connection's masks */
    int id;
};

static void tx_reserve(struct conn *c, size_t more)
{
    if (c->tx_off > 0 && c->tx_off == c->tx_len)
        c->tx_off = c->tx_len = 0;
    if (c->tx_len + more > c->tx_cap) {
        if (c->tx_off > 0) {
            memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
            c->tx_len -= c->tx_off;
            c->tx_off = 0;
        }
        if (c->tx_len + more > c->tx_cap) {
            c->tx_cap = (c->tx_len + more) * 2;
            c->tx = xrealloc(c->tx, c->tx_cap);
        }
    }
}

/* A fresh masking key: xorshift64 per connection (never zero). */
static inline uint32_t conn_mask(struct conn *c)
{
    uint64_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->rng = x;
    uint32_t m = (uint32_t)(x >> 16);
    return m ? m : 0x9e3779b9u;
}

/* XOR p[0..len) with the 4-byte key mk (in memory order), 8 bytes at a time. */
static inline void ws_mask(unsigned char *p, size_t len, uint32_t mk)
{
    unsigned char mb[8];
    memcpy(mb, &mk, 4);
    memcpy(mb + 4, &mk, 4);
    uint64_t m64;
    memcpy(&m64, mb, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m64;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] ^= mb[i & 3];
}

/* Reserve and write the header of one masked frame (FIN set) with opcode op
 * and a payload of len bytes; returns where the payload goes (to be written,
 * then masked with *mk). */
static inline unsigned char *ws_head(struct conn *c, int op, size_t len, uint32_t *mk)
{
    tx_reserve(c, len + 14);
    unsigned char *h = c->tx + c->tx_len;
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | op);
    if (len < 126) {
        h[1] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    *mk = conn_mask(c);
    memcpy(h + hl, mk, 4);
    hl += 4;
    c->tx_len += hl + len;
    return h + hl;
}

/* Append one masked frame (FIN set) with opcode op to the write buffer. */
static void ws_frame(struct conn *c, int op, const void *payload, size_t len)
{
    uint32_t mk;
    unsigned char *p = ws_head(c, op, len, &mk);
    memcpy(p, payload, len);
    ws_mask(p, len, mk);
}

static void set_events(struct conn *c, bool out)
{
    if (c->want_out == out)
        return;
    c->want_out = out;
    if (c->ep < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(c->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* Write what can be written now; the rest waits for EPOLLOUT. */
static void conn_flush(struct conn *c)
{
    while (c->tx_off < c->tx_len) {
        ssize_t n = write(c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off);
        if (n > 0) {
            c->tx_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, true);
            return;
        } else {
            die("connection %d: write: %s", c->id, n < 0 ? strerror(errno) : "EOF");
        }
    }
    c->tx_off = c->tx_len = 0;
    set_events(c, false);
}

/* Read what is available. Returns 0, or dies on EOF/error. */
static void conn_read(struct conn *c)
{
    if (c->rx_off > 0) {
        memmove(c->rx, c->rx + c->rx_off, c->rx_len - c->rx_off);
        c->rx_len -= c->rx_off;
        c->rx_off = 0;
    }
    for (;;) {
        if (c->rx_cap - c->rx_len < READ_CHUNK) {
            c->rx_cap = c->rx_len + READ_CHUNK * 2;
            c->rx = xrealloc(c->rx, c->rx_cap);
        }
        size_t room = c->rx_cap - c->rx_len;
        ssize_t n = read(c->fd, c->rx + c->rx_len, room);
        if (n > 0) {
            c->rx_len += (size_t)n;
            if ((size_t)n < room)
                return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            die("connection %d closed by the server%s%s", c->id, n < 0 ? ": " : "",
                n < 0 ? strerror(errno) : "");
        }
    }
}

/* The next complete data message in rx (valid until the next conn_read).
 * Returns 1 with *m and *n set, 0 when more bytes are needed. Pings are answered
 * (queued in tx); a close frame is fatal. */
static inline int conn_next(struct conn *c, const unsigned char **m, size_t *n)
{
    for (;;) {
        size_t avail = c->rx_len - c->rx_off;
        const unsigned char *p = c->rx + c->rx_off;
        if (avail < 2)
            return 0;
        bool fin = p[0] & 0x80;
        int op = p[0] & 0x0f;
        uint64_t plen = p[1] & 0x7f;
        size_t hl = 2;
        if (p[1] & 0x80)
            die("connection %d: the server sent a masked frame", c->id);
        if (plen == 126) {
            if (avail < 4)
                return 0;
            plen = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10)
                return 0;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | p[2 + i];
            hl = 10;
        }
        if (avail < hl + plen)
            return 0;
        const unsigned char *pl = p + hl;
        c->rx_off += hl + (size_t)plen;
        switch (op) {
        case 0x8:
            die("connection %d: the server closed it (close frame, code %d)", c->id,
                plen >= 2 ? (pl[0] << 8 | pl[1]) : 0);
        case 0x9:
            ws_frame(c, 0xA, pl, (size_t)plen);
            continue;
        case 0xA:
            continue;
        case 0x1:
        case 0x2:
            if (fin && !c->in_frag) {
                *m = pl;
                *n = (size_t)plen;
                return 1;
            }
            c->msg_len = 0;
            c->in_frag = true;
            /* fall through */
        case 0x0:
            if (c->msg_len + plen > c->msg_cap) {
                c->msg_cap = (c->msg_len + (size_t)plen) * 2;
                c->msg = xrealloc(c->msg, c->msg_cap);
            }
            memcpy(c->msg + c->msg_len, pl, (size_t)plen);
            c->msg_len += (size_t)plen;
            if (fin) {
                c->in_frag = false;
                *m = c->msg;
                *n = c->msg_len;
                return 1;
            }
            continue;
        default:
            die("connection %d: unexpected opcode %d", c->id, op);
        }
    }
}

/* request_seq of a response (-1 if the message has none). */
static int64_t reply_seq(const unsigned char *m, size_t n)
{
    static const char key[] = "\"request_seq\":";
    size_t kl = sizeof key - 1, lim = n < 512 ? n : 512;
    for (size_t i = 0; i + kl < lim; i++) {
        if (m[i] != '"' || memcmp(m + i, key, kl) != 0)
            continue;
        int64_t v = 0;
        for (size_t j = i + kl; j < n && m[j] >= '0' && m[j] <= '9'; j++)
            v = v * 10 + (m[j] - '0');
        return v;
    }
    return -1;
}

static bool reply_ok(const unsigned char *m, size_t n)
{
    static const char key[] = ",\"success\":true";
    size_t kl = sizeof key - 1, lim = n < 512 ? n : 512;
    for (size_t i = 0; i + kl <= lim; i++)
        if (m[i] == ',' && memcmp(m + i, key, kl) == 0)
            return true;
    return false;
}

/* request_seq of a reply (-1: not a response, e.g. an event) and whether it
 * says "success":true. Fast path for the layout both servers write,
 *   {"type":"response","seq":S,"request_seq":R,"command":"C","success":true
 * anything else goes through the general scans above. */
static inline int64_t parse_reply(const unsigned char *m, size_t n, bool *ok)
{
    static const char h1[] = "{\"type\":\"response\",\"seq\":";
    static const char h2[] = ",\"request_seq\":";
    static const char h3[] = ",\"command\":\"";
    static const char h4[] = ",\"success\":true";
    enum { L1 = sizeof h1 - 1, L2 = sizeof h2 - 1, L3 = sizeof h3 - 1, L4 = sizeof h4 - 1 };
    if (n > L1 + L2 + L3 + L4 + 3 && memcmp(m, h1, L1) == 0) {
        size_t i = L1;
        while (i < n && (unsigned)(m[i] - '0') < 10u)
            i++;
        if (i + L2 < n && memcmp(m + i, h2, L2) == 0) {
            size_t j = i + L2, d = j;
            int64_t v = 0;
            while (j < n && (unsigned)(m[j] - '0') < 10u)
                v = v * 10 + (m[j++] - '0');
            if (j > d && j + L3 < n && memcmp(m + j, h3, L3) == 0) {
                const unsigned char *e = memchr(m + j + L3, '"', n - j - L3);
                if (e && (size_t)(e + 1 - m) + L4 <= n && memcmp(e + 1, h4, L4) == 0) {
                    *ok = true;
                    return v;
                }
                *ok = reply_ok(m, n);
                return v;
            }
        }
    }
    int64_t v = reply_seq(m, n);
    *ok = v >= 0 && reply_ok(m, n);
    return v;
}

static struct conn *conn_open(int port, int id)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect to port %d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /task/service HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "User-Agent: bench_dap\r\n\r\n",
                     port);
    if (write(fd, req, (size_t)n) != n)
        die("handshake write failed");
    struct conn *c = xrealloc(NULL, sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->id = id;
    c->rng = 0x2545F4914F6CDD1Dull ^ ((uint64_t)(id + 2) * 0x9E3779B97F4A7C15ull);
    c->rx_cap = READ_CHUNK * 2;
    c->rx = xrealloc(NULL, c->rx_cap);
    /* Read the 101 response; what follows it stays in rx. */
    for (;;) {
        ssize_t r = read(fd, c->rx + c->rx_len, c->rx_cap - c->rx_len - 1);
        if (r <= 0)
            die("handshake: connection closed");
        c->rx_len += (size_t)r;
        c->rx[c->rx_len] = '\0';
        char *end = strstr((char *)c->rx, "\r\n\r\n");
        if (!end)
            continue;
        if (strncmp((char *)c->rx, "HTTP/1.1 101", 12) != 0)
            die("handshake refused: %.60s", (char *)c->rx);
        c->rx_off = (size_t)(end + 4 - (char *)c->rx);
        break;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->ep = -1;
    return c;
}

static void conn_close(struct conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->rx);
    free(c->msg);
    free(c->tx);
    free(c);
}

/* Send one request (the formatted JSON text, whose seq must be `want`) and
 * wait for its reply. Returns the reply text (owned; free it). */
static char *call(struct conn *c, int64_t want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *call(struct conn *c, int64_t want, const char *fmt, ...)
{
    char body[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof body)
        die("request too long");
    ws_frame(c, 0x1, body, (size_t)n);
    uint64_t deadline = now_ns() + (uint64_t)SYNC_TIMEOUT_MS * 1000000u;
    for (;;) {
        conn_flush(c);
        const unsigned char *m;
        size_t mn;
        while (conn_next(c, &m, &mn)) {
            if (reply_seq(m, mn) != want)
                continue;
            char *out = xrealloc(NULL, mn + 1);
            memcpy(out, m, mn);
            out[mn] = '\0';
            return out;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN | (c->want_out ? POLLOUT : 0)};
        if (now_ns() > deadline)
            die("connection %d: no reply within %d s", c->id, SYNC_TIMEOUT_MS / 1000);
        if (poll(&pfd, 1, 1000) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            conn_read(c);
    }
}

#define REQ_HEAD "{\"type\":\"request\",\"seq\":%lld,"

static void conn_auth(struct conn *c, const char *key)
{
    c->seq++;
    char *r = call(c, c->seq, REQ_HEAD "\"command\":\"auth\",\"arguments\":{\"auth\":\"%s\","
                      "\"clientName\":\"bench_dap\",\"clientVersion\":\"1\"}}",
                   (long long)c->seq, key);
    if (!reply_ok((unsigned char *)r, strlen(r)))
        die("auth failed: %.200s", r);
    free(r);
}

/* ================================================================ requests */

enum req_kind { REQ_STATUS, REQ_LIST, REQ_ADD };

/* The pipeline of every deployment: a webhook source feeding a response
 * component, as RocketRide's own examples do; %s is the project id. */
#define PIPELINE_FMT                                                                 \
    "{\"project_id\":\"%s\",\"components\":[{\"id\":\"webhook_1\",\"provider\":"     \
    "\"webhook\",\"config\":{\"mode\":\"Source\",\"type\":\"webhook\",\"hideForm\":" \
    "true}},{\"id\":\"response_1\",\"provider\":\"response\",\"config\":{},"         \
    "\"input\":[{\"lane\":\"text\",\"from\":\"webhook_1\"}]}],\"source\":"           \
    "\"webhook_1\"}"

static _Atomic long long add_counter;
static int run_id; /* distinguishes project ids of this run's adds */

/* Requests are prebuilt per kind: REQ_PREFIX, the seq's digits, then a; for
 * adds also a counter's digits and b (the project id is add-RUN-COUNTER). */
#define REQ_PREFIX "{\"type\":\"request\",\"seq\":"
struct req_tmpl {
    char *a, *b;
    size_t alen, blen;
    bool counter;
};
static struct req_tmpl tmpl[3];

static void build_templates(void)
{
    static const char *const a[2] = {
        ",\"command\":\"rrext_deploy_status\",\"arguments\":{\"projectId\":\"bench-000\"}}",
        ",\"command\":\"rrext_deploy_list\",\"arguments\":{}}",
    };
    for (int k = 0; k < 2; k++) {
        tmpl[k].alen = strlen(a[k]);
        tmpl[k].a = xrealloc(NULL, tmpl[k].alen + 1);
        memcpy(tmpl[k].a, a[k], tmpl[k].alen + 1);
    }
    char pid[32], add[2048];
    snprintf(pid, sizeof pid, "add-%d-\x01", run_id);
    int n = snprintf(add, sizeof add,
                     ",\"command\":\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                     PIPELINE_FMT ",\"schedule\":\"manual\"}}", pid);
    if (n < 0 || (size_t)n >= sizeof add)
        die("add request too long");
    char *cut = strchr(add, '\x01');
    struct req_tmpl *t = &tmpl[REQ_ADD];
    t->counter = true;
    t->alen = (size_t)(cut - add);
    t->a = xrealloc(NULL, t->alen + 1);
    memcpy(t->a, add, t->alen);
    t->blen = strlen(cut + 1);
    t->b = xrealloc(NULL, t->blen + 1);
    memcpy(t->b, cut + 1, t->blen + 1);
}

static inline size_t u64_digits(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static inline void u64_put(unsigned char *d, uint64_t v, size_t n)
{
    while (n) {
        d[--n] = (unsigned char)('0' + v % 10);
        v /= 10;
    }
}

/* Append the masked frame of a request of this kind with this seq. */
static inline void put_request(struct conn *c, enum req_kind kind, int64_t seq)
{
    const struct req_tmpl *t = &tmpl[kind];
    size_t sd = u64_digits((uint64_t)seq), cd = 0;
    uint64_t ctr = 0;
    if (t->counter) {
        ctr = (uint64_t)(atomic_fetch_add(&add_counter, 1) + 1);
        cd = u64_digits(ctr);
    }
    size_t pl = sizeof REQ_PREFIX - 1, len = pl + sd + t->alen + cd + t->blen;
    uint32_t mk;
    unsigned char *p = ws_head(c, 0x1, len, &mk), *q = p;
    memcpy(q, REQ_PREFIX, pl);
    q += pl;
    u64_put(q, (uint64_t)seq, sd);
    q += sd;
    memcpy(q, t->a, t->alen);
    q += t->alen;
    if (cd) {
        u64_put(q, ctr, cd);
        memcpy(q + cd, t->b, t->blen);
    }
    ws_mask(p, len, mk);
}

/* ================================================================ load phases */

struct phase {
    const char *name;
    const char *perf_out;  /* non-NULL: `perf record` the server's window here */
    struct conn **conns;
    int nconns;
    int threads;           /* generator threads (at most nconns are used) */
    enum req_kind kind;
    int inflight;          /* closed loop: K per connection; 0 = paced */
    double rate;           /* paced: requests/s in total */
    double warm_s, measure_s;
    pid_t pid;             /* the server measured */
};

struct result {
    double rps;
    double p50_ms, p99_ms, max_ms;
    double srv_cpu_us, gen_cpu_us; /* per request */
    double srv_pct, gen_pct;       /* CPU seconds per window second, x100 */
    double srv_vcsw, srv_ivcsw;    /* per request */
    double lag_p99_ms;             /* paced: sender behind schedule */
    uint64_t n, errors, dropped;
    size_t reply_bytes;            /* size of the last reply */
    char first_error[200];
};

struct lat {
    uint64_t *v;
    size_t n, cap;
};

static inline void lat_add(struct lat *l, uint64_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = x;
}

static void lat_merge(struct lat *into, struct lat *from)
{
    if (into->n + from->n > into->cap) {
        into->cap = into->n + from->n;
        into->v = xrealloc(into->v, into->cap * sizeof *into->v);
    }
    if (from->n)
        memcpy(into->v + into->n, from->v, from->n * sizeof *from->v);
    into->n += from->n;
    free(from->v);
    memset(from, 0, sizeof *from);
}

/* One generator thread's share of a phase: its connections, its epoll, its
 * flush list, and what it measured. */
struct gen {
    const struct phase *ph;
    struct conn **conns;
    int nconns;
    struct conn **flush;
    int nflush;
    int epfd;
    uint64_t t0, t_warm, t_end;
    uint64_t first_due, interval; /* paced: this thread's schedule */
    FILE *trace;
    struct lat lat, lag;
    uint64_t errors, dropped;
    size_t reply_bytes;
    char first_error[200];
    pthread_t th;
};

static inline void mark_dirty(struct gen *g, struct conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        g->flush[g->nflush++] = c;
    }
}

static void flush_dirty(struct gen *g)
{
    for (int i = 0; i < g->nflush; i++) {
        g->flush[i]->dirty = false;
        conn_flush(g->flush[i]);
    }
    g->nflush = 0;
}

static inline void send_one(struct gen *g, struct conn *c, enum req_kind kind, uint64_t t)
{
    int64_t seq = ++c->seq;
    uint64_t *slot = &c->sent_ns[seq & (RING - 1)];
    if (*slot != 0)
        die("connection %d: more than %d requests in flight", c->id, RING);
    *slot = t;
    c->inflight++;
    put_request(c, kind, seq);
    mark_dirty(g, c);
}

/* `perf record` (software cpu-clock: this VM has no hardware counters) of
 * pid into out, until perf_stop. For "where the time goes"; perf's own CPU
 * then competes with the phase. */
static const char *perf_bin = "perf";

static pid_t perf_start(pid_t pid, const char *out)
{
    char pids[32];
    snprintf(pids, sizeof pids, "%d", (int)pid);
    char *argv[] = {(char *)perf_bin, "record", "-q", "-e", "cpu-clock", "-F", "1999",
                    "-g", "-p", pids, "-o", (char *)out, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t p;
    int rc = posix_spawnp(&p, perf_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "bench_dap: cannot run perf: %s\n", strerror(rc));
        return 0;
    }
    usleep(200000); /* let it attach */
    return p;
}

static void perf_stop(pid_t p)
{
    if (p <= 0)
        return;
    kill(p, SIGINT);
    waitpid(p, NULL, 0);
}

/* One generator thread: sends and reads until t_end, then drains. Replies
 * read in [t_warm, t_end] are counted. */
static void *gen_main(void *arg)
{
    struct gen *g = arg;
    const struct phase *ph = g->ph;
    bool paced = ph->inflight == 0;
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g->epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < g->nconns; i++) {
        struct conn *c = g->conns[i];
        struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0),
                                 .data.ptr = c};
        if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            die("epoll_ctl: %s", strerror(errno));
        c->ep = g->epfd;
    }
    int tfd = -1;
    uint64_t sched_i = 0, next_due = g->first_due;
    if (paced) {
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (tfd < 0)
            die("timerfd_create: %s", strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, tfd, &ev);
    } else {
        uint64_t t = now_ns();
        for (int i = 0; i < g->nconns; i++)
            for (int k = 0; k < ph->inflight; k++)
                send_one(g, g->conns[i], ph->kind, t);
        flush_dirty(g);
    }

    const uint64_t t_warm = g->t_warm, t_end = g->t_end;
    int pending = paced ? 0 : g->nconns * ph->inflight;
    struct epoll_event evs[256];
    bool sending = true;
    uint64_t drain_deadline = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (sending && now >= t_end) {
            sending = false;
            drain_deadline = now + (uint64_t)(DRAIN_TIMEOUT_S * 1e9);
        }
        if (!sending && pending == 0)
            break;
        if (!sending && now > drain_deadline)
            die("%s: %d replies still missing %.0f s after the phase", ph->name,
                pending, DRAIN_TIMEOUT_S);
        if (paced && sending) {
            bool in_window = now >= t_warm;
            while (next_due <= now) {
                struct conn *c = g->conns[sched_i % (uint64_t)g->nconns];
                if (c->inflight >= PACED_CAP) {
                    g->dropped++;
                } else {
                    send_one(g, c, ph->kind, now);
                    pending++;
                    if (in_window)
                        lat_add(&g->lag, now - next_due);
                }
                sched_i++;
                next_due = g->first_due + sched_i * g->interval;
            }
            flush_dirty(g);
            /* At most one timer wake-up per PACED_TICK_NS: the generator's
             * CPU is the server's competitor. Requests leave in the first
             * wake-up at or after their due time; latency counts from then. */
            uint64_t wake = next_due > now + PACED_TICK_NS ? next_due : now + PACED_TICK_NS;
            struct itimerspec its = {0};
            its.it_value.tv_sec = (time_t)(wake / 1000000000u);
            its.it_value.tv_nsec = (long)(wake % 1000000000u);
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        uint64_t until = sending ? t_end : drain_deadline;
        int timeout_ms = until > now ? (int)((until - now) / 1000000u) + 1 : 0;
        int n = epoll_wait(g->epfd, evs, 256, timeout_ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        uint64_t tr = now_ns();
        bool count = tr >= t_warm && tr <= t_end;
        bool resend = !paced && sending && tr < t_end;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) { /* the timer */
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN)
                    die("timerfd read: %s", strerror(errno));
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                conn_flush(c);
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            conn_read(c);
            const unsigned char *m;
            size_t mn;
            while (conn_next(c, &m, &mn)) {
                bool ok;
                int64_t rs = parse_reply(m, mn, &ok);
                if (rs < 0)
                    continue; /* an event: not ours */
                uint64_t *slot = &c->sent_ns[rs & (RING - 1)];
                if (*slot == 0)
                    die("%s: reply to request_seq %lld that is not pending", ph->name,
                        (long long)rs);
                uint64_t sent = *slot;
                *slot = 0;
                c->inflight--;
                pending--;
                g->reply_bytes = mn;
                if (!ok && !g->errors++)
                    snprintf(g->first_error, sizeof g->first_error, "%.*s",
                             (int)(mn < 190 ? mn : 190), (const char *)m);
                if (count) {
                    lat_add(&g->lat, tr - sent);
                    if (g->trace)
                        fprintf(g->trace, "%.6f %.3f %d\n", (double)(sent - g->t0) / 1e9,
                                (double)(tr - sent) / 1e6, c->id);
                }
                if (resend) {
                    send_one(g, c, ph->kind, tr);
                    pending++;
                }
            }
            if (c->tx_len > c->tx_off)
                mark_dirty(g, c);
        }
        flush_dirty(g);
    }
    if (tfd >= 0)
        close(tfd);
    close(g->epfd);
    for (int i = 0; i < g->nconns; i++)
        g->conns[i]->ep = -1;
    return NULL;
}

/* Every benchmark connection, for keep_alive. */
static struct conn **all_conns;
static int n_all_conns;

/* Between phases a connection is in no epoll, and the server pings one idle
 * for 30 s and hangs up on one without valid traffic for 90 s: before each
 * phase, answer the pings that have come on every connection. Anything else
 * that came (an event) is dropped. */
static void keep_alive(void)
{
    for (int i = 0; i < n_all_conns; i++) {
        struct conn *c = all_conns[i];
        conn_read(c);
        const unsigned char *m;
        size_t mn;
        while (conn_next(c, &m, &mn))
            ;
        conn_flush(c);
    }
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Run one phase: the connections dealt round-robin to the generator threads
 * (each with its share of the closed loop, or of the paced rate); this
 * thread only samples the CPU counters at the window's edges. */
static void run_phase(const struct phase *ph, struct result *res)
{
    memset(res, 0, sizeof *res);
    keep_alive();
    bool paced = ph->inflight == 0;
    int ng = ph->threads < 1 ? 1 : ph->threads;
    if (ng > ph->nconns)
        ng = ph->nconns;
    if (ng > MAX_GEN)
        ng = MAX_GEN;
    struct gen gens[MAX_GEN];
    memset(gens, 0, sizeof gens);
    /* BENCH_DAP_TRACE=FILE: append "send-time latency-ms connection" for every
     * measured reply of paced phases (a diagnostic for stalls). */
    FILE *trace = NULL;
    if (paced && getenv("BENCH_DAP_TRACE")) {
        trace = fopen(getenv("BENCH_DAP_TRACE"), "a");
        if (trace)
            fprintf(trace, "# %s\n", ph->name);
    }
    uint64_t t0 = now_ns();
    uint64_t t_warm = t0 + (uint64_t)(ph->warm_s * 1e9);
    uint64_t t_end = t_warm + (uint64_t)(ph->measure_s * 1e9);
    uint64_t interval = paced ? (uint64_t)(1e9 * ng / ph->rate) : 0;
    for (int t = 0; t < ng; t++) {
        struct gen *g = &gens[t];
        g->ph = ph;
        g->conns = xrealloc(NULL, sizeof *g->conns * (size_t)ph->nconns);
        g->flush = xrealloc(NULL, sizeof *g->flush * (size_t)ph->nconns);
        for (int i = t; i < ph->nconns; i += ng)
            g->conns[g->nconns++] = ph->conns[i];
        g->t0 = t0;
        g->t_warm = t_warm;
        g->t_end = t_end;
        g->interval = interval;
        g->first_due = t0 + interval * (uint64_t)t / (uint64_t)ng; /* staggered */
        g->trace = trace;
        int rc = pthread_create(&g->th, NULL, gen_main, g);
        if (rc != 0)
            die("pthread_create: %s", strerror(rc));
    }

    struct proc_sample ps0, ps1;
    sleep_until(t_warm);
    pid_t perf_pid = ph->perf_out ? perf_start(ph->pid, ph->perf_out) : 0;
    sample_pid(ph->pid, &ps0);
    double gen0 = self_cpu_s();
    uint64_t w0 = now_ns();
    sleep_until(t_end);
    sample_pid(ph->pid, &ps1);
    double gen1 = self_cpu_s();
    uint64_t w1 = now_ns();
    perf_stop(perf_pid);

    struct lat lat = {0}, lag = {0};
    for (int t = 0; t < ng; t++) {
        struct gen *g = &gens[t];
        pthread_join(g->th, NULL);
        lat_merge(&lat, &g->lat);
        lat_merge(&lag, &g->lag);
        if (g->errors && !res->errors)
            memcpy(res->first_error, g->first_error, sizeof res->first_error);
        res->errors += g->errors;
        res->dropped += g->dropped;
        if (g->reply_bytes)
            res->reply_bytes = g->reply_bytes;
        free(g->conns);
        free(g->flush);
    }
    if (trace)
        fclose(trace);

    double win = (double)(w1 - w0) / 1e9;
    res->srv_pct = win > 0 ? (ps1.cpu_s - ps0.cpu_s) / win * 100 : 0;
    res->gen_pct = win > 0 ? (gen1 - gen0) / win * 100 : 0;
    res->n = lat.n;
    res->rps = (double)lat.n / ph->measure_s;
    if (lat.n) {
        qsort(lat.v, lat.n, sizeof *lat.v, bench_cmp_u64);
        res->p50_ms = (double)pct_sorted(lat.v, lat.n, 0.50) / 1e6;
        res->p99_ms = (double)pct_sorted(lat.v, lat.n, 0.99) / 1e6;
        res->max_ms = (double)lat.v[lat.n - 1] / 1e6;
        res->srv_cpu_us = (ps1.cpu_s - ps0.cpu_s) * 1e6 / (double)lat.n;
        res->gen_cpu_us = (gen1 - gen0) * 1e6 / (double)lat.n;
        res->srv_vcsw = (double)(ps1.vcsw - ps0.vcsw) / (double)lat.n;
        res->srv_ivcsw = (double)(ps1.ivcsw - ps0.ivcsw) / (double)lat.n;
    }
    if (lag.n) {
        qsort(lag.v, lag.n, sizeof *lag.v, bench_cmp_u64);
        res->lag_p99_ms = (double)pct_sorted(lag.v, lag.n, 0.99) / 1e6;
    }
    free(lat.v);
    free(lag.v);
}

/* ================================================================ baselines */

/* Median and p99 seconds of one tiny committed transaction (WAL,
 * synchronous=FULL), the cost every durable add pays at least once. */
static void fsync_baseline(const char *dir, double *med, double *p99, double *med10k)
{
    char path[600];
    snprintf(path, sizeof path, "%s/fsync.db", dir);
    unlink(path);
    char side[620];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("sqlite3_open %s", path);
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                         "CREATE TABLE t(x INTEGER)", NULL, NULL, NULL) != SQLITE_OK)
        die("fsync baseline: %s", sqlite3_errmsg(db));
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?)", -1, &st, NULL) != SQLITE_OK)
        die("fsync baseline: %s", sqlite3_errmsg(db));
    double v[FSYNC_SAMPLES];
    for (int i = 0; i < FSYNC_SAMPLES; i++) {
        uint64_t t = now_ns();
        sqlite3_bind_int(st, 1, i);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("fsync baseline: %s", sqlite3_errmsg(db));
        sqlite3_reset(st);
        v[i] = (double)(now_ns() - t) / 1e9;
    }
    sqlite3_finalize(st);
    qsort(v, FSYNC_SAMPLES, sizeof *v, bench_cmp_double);
    *med = v[FSYNC_SAMPLES / 2];
    *p99 = v[(int)ceil(0.99 * FSYNC_SAMPLES) - 1];
    /* The same with a 10 KB row: 3-4 pages, about what one add puts in the
     * WAL (its row and index entries). */
    static char blob[10000];
    if (sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?)", -1, &st, NULL) != SQLITE_OK)
        die("fsync baseline: %s", sqlite3_errmsg(db));
    for (int i = 0; i < FSYNC_SAMPLES; i++) {
        blob[i % sizeof blob] = (char)i;
        uint64_t t = now_ns();
        sqlite3_bind_blob(st, 1, blob, sizeof blob, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("fsync baseline: %s", sqlite3_errmsg(db));
        sqlite3_reset(st);
        v[i] = (double)(now_ns() - t) / 1e9;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    qsort(v, FSYNC_SAMPLES, sizeof *v, bench_cmp_double);
    *med10k = v[FSYNC_SAMPLES / 2];
}

/* ================================================================ report */

static const char *verdict(bool ok)
{
    return ok ? "PASS" : "MISS";
}

static void print_row(const char *name, const struct result *r)
{
    printf("  %-36s %8.0f %7.3f %7.3f %7.1f %6.1f %6.1f %5.0f %5.0f %5.2f %5.2f%s\n", name,
           r->rps, r->p50_ms, r->p99_ms, r->max_ms, r->srv_cpu_us, r->gen_cpu_us,
           r->srv_pct, r->gen_pct, r->srv_vcsw, r->srv_ivcsw, r->errors ? "  ERRORS" : "");
    if (r->errors)
        printf("    %llu failed replies; first: %s\n", (unsigned long long)r->errors,
               r->first_error);
}

static void print_header(void)
{
    printf("  %-36s %8s %7s %7s %7s %6s %6s %5s %5s\n", "", "", "p50", "p99", "max", "srv",
           "gen", "srv", "gen");
    printf("  %-36s %8s %7s %7s %7s %6s %6s %5s %5s %5s %5s\n", "phase", "req/s", "ms",
           "ms", "ms", "us/rq", "us/rq", "%cpu", "%cpu", "vcsw", "ivcsw");
}

/* Median of each column over reps. */
static void median_result(const struct result *rs, int n, struct result *out)
{
    double v[MAX_REPS] = {0};
    memset(out, 0, sizeof *out);
#define MED(field)                                                             \
    do {                                                                       \
        for (int i_ = 0; i_ < n; i_++)                                         \
            v[i_] = rs[i_].field;                                              \
        out->field = bench_median(v, (size_t)n);                               \
    } while (0)
    MED(rps);
    MED(p50_ms);
    MED(p99_ms);
    MED(max_ms);
    MED(srv_cpu_us);
    MED(gen_cpu_us);
    MED(srv_pct);
    MED(gen_pct);
    MED(srv_vcsw);
    MED(srv_ivcsw);
    MED(lag_p99_ms);
#undef MED
    for (int i = 0; i < n; i++) {
        out->errors += rs[i].errors;
        out->dropped += rs[i].dropped;
        if (rs[i].errors && !out->first_error[0])
            memcpy(out->first_error, rs[i].first_error, sizeof out->first_error);
    }
}

/* ================================================================ main */

/* Close every connection and stop both servers; did rrdeploy exit cleanly? */
static bool stop_all(struct conn **rd, struct conn **wr, struct conn **ec, int nconns)
{
    n_all_conns = 0;
    for (int i = 0; i < nconns; i++) {
        conn_close(rd[i]);
        conn_close(wr[i]);
        conn_close(ec[i]);
    }
    free(rd);
    free(wr);
    free(ec);
    free(all_conns);
    all_conns = NULL;
    int sst = stop_child(&server_pid);
    stop_child(&echo_pid);
    return WIFEXITED(sst) && WEXITSTATUS(sst) == 0;
}

/* --serve-arg: more arguments for `rrdeploy serve` (e.g. --reply-cache 0). */
#define MAX_SERVE_ARGS 8
static char *serve_args[MAX_SERVE_ARGS];
static int nserve_args;

static void usage(void)
{
    fputs("usage: bench_dap [-n conns] [-k inflight] [-g threads] [-t seconds] [-w warmup]\n"
          "                 [-r reps] [-p paced-seconds] [--rrdeploy PATH] [--echo PATH]\n"
          "                 [-d dir] [--keep] [--perf DIR] [--pin] [--paced-only RATE]\n"
          "                 [--serve-arg ARG]...\n"
          "  defaults: -n 64 -k 8 -g 1 -t 3 -w 1 -r 5 -p 3; rrdeploy and bench_dap_echo\n"
          "  are looked for next to this binary (build/bench/dap/../../rrdeploy).\n"
          "  -g: generator threads; the connections are dealt round-robin to them.\n"
          "  --perf DIR: `perf record -g` the server during the first status, list,\n"
          "  paced and add windows into DIR/perf.<phase>.data (perturbs those numbers).\n"
          "  --pin: servers on CPU 0, generator on CPU 1 (default: the scheduler decides).\n"
          "  --paced-only RATE: only the paced status and echo phases, at RATE req/s\n"
          "  (a diagnostic: no closed-loop peak, no adds, no targets).\n"
          "  --serve-arg ARG: pass ARG to `rrdeploy serve` (repeatable), e.g.\n"
          "  --serve-arg --reply-cache --serve-arg 0 to render every reply.\n",
          stderr);
    exit(2);
}

static void machine_line(void)
{
    char cpu[128];
    bench_cpu_model(cpu, sizeof cpu);
    double load[3] = {0};
    if (getloadavg(load, 3) < 0)
        load[0] = NAN;
    char date[32];
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime(&t));
    printf("machine: %ld CPUs (%s), load average %.2f before the run, %s\n",
           sysconf(_SC_NPROCESSORS_ONLN), cpu, load[0], date);
}

int main(int argc, char **argv)
{
    int nconns = 64, inflight = 8, reps = 5, threads = 1;
    double measure_s = 3, warm_s = 1, paced_s = 3;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char rr_bin[600] = "", echo_bin[600] = "";
    const char *perf_dir = NULL;
    double paced_only = 0; /* > 0: only the paced phases, at this rate */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keep") == 0)
            keep_dir = true;
        else if (strcmp(argv[i], "--pin") == 0)
            pin = true;
        else if (i + 1 < argc && strcmp(argv[i], "--serve-arg") == 0) {
            if (nserve_args == MAX_SERVE_ARGS)
                usage();
            serve_args[nserve_args++] = argv[++i];
        }
        else if (i + 1 < argc && strcmp(argv[i], "-n") == 0)
            nconns = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-g") == 0)
            threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-k") == 0)
            inflight = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-t") == 0)
            measure_s = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-w") == 0)
            warm_s = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-r") == 0)
            reps = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0)
            paced_s = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0)
            base = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--perf") == 0)
            perf_dir = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--paced-only") == 0) {
            if ((paced_only = atof(argv[++i])) <= 0)
                usage();
        }
        else if (i + 1 < argc && strcmp(argv[i], "--rrdeploy") == 0)
            snprintf(rr_bin, sizeof rr_bin, "%s", argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--echo") == 0)
            snprintf(echo_bin, sizeof echo_bin, "%s", argv[++i]);
        else
            usage();
    }
    if (nconns < 1 || inflight < 1 || inflight > RING / 2 || reps < 1 ||
        reps > MAX_REPS || threads < 1 || threads > MAX_GEN || measure_s <= 0 || warm_s < 0 || paced_s <= 0)
        usage();
    if (!rr_bin[0] || !echo_bin[0]) {
        char self[512];
        ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
        if (sl <= 0)
            die("readlink /proc/self/exe");
        self[sl] = '\0';
        *strrchr(self, '/') = '\0';
        if (!rr_bin[0])
            snprintf(rr_bin, sizeof rr_bin, "%s/../../rrdeploy", self);
        if (!echo_bin[0])
            snprintf(echo_bin, sizeof echo_bin, "%s/bench_dap_echo", self);
    }
    if (access(rr_bin, X_OK) != 0 || access(echo_bin, X_OK) != 0)
        die("need %s and %s (build the rrdeploy and bench_dap_echo targets)", rr_bin,
            echo_bin);
    signal(SIGPIPE, SIG_IGN);
    unsetenv("ROCKETRIDE_APIKEY");
    run_id = (int)getpid();
    build_templates();

    snprintf(tmpdir, sizeof tmpdir, "%s/bench_dap.XXXXXX", base);
    if (!mkdtemp(tmpdir))
        die("mkdtemp %s: %s", tmpdir, strerror(errno));

    printf("bench_dap: rrdeploy serve over WebSocket vs a bare lws echo server\n");
    machine_line();
    printf("note: the generator (%d thread%s), the server (1 service thread) and the echo\n"
           "      server share these CPUs with each other and with other jobs; numbers are\n"
           "      medians of %d interleaved repetitions.\n",
           threads, threads == 1 ? "" : "s", reps);
    printf("load: N=%d connections, K=%d requests in flight each, %.0f s windows after "
           "%.0f s warm-up%s\n\n", nconns, inflight, measure_s, warm_s,
           pin ? "; --pin: servers on CPU 0, generator on CPU 1" : "");
    fflush(stdout);

    /* ---- the server */
    char db[600], port_file[600], echo_port_file[600], echo_err[600];
    snprintf(db, sizeof db, "%s/bench.db", tmpdir);
    snprintf(port_file, sizeof port_file, "%s/port", tmpdir);
    snprintf(server_stderr, sizeof server_stderr, "%s/server.stderr", tmpdir);
    snprintf(echo_port_file, sizeof echo_port_file, "%s/echo.port", tmpdir);
    snprintf(echo_err, sizeof echo_err, "%s/echo.stderr", tmpdir);
    {
        char *sargv[16 + MAX_SERVE_ARGS] = {rr_bin, "serve", "--listen", "127.0.0.1:0",
                                            "--db", db, "--port-file", port_file};
        for (int i = 0; i < nserve_args; i++)
            sargv[8 + i] = serve_args[i];
        server_pid = spawn(sargv, -1, server_stderr);
    }
    int port = wait_port(server_pid, port_file, "rrdeploy serve");
    pin_to(server_pid, 0); /* all its threads exist by now (checkpointer, runner) */
    if (pin) {
        char taskdir[64];
        snprintf(taskdir, sizeof taskdir, "/proc/%d/task", (int)server_pid);
        char cmd[160];
        snprintf(cmd, sizeof cmd, "ls %s", taskdir);
        FILE *tl = popen(cmd, "r");
        char tid[32];
        while (tl && fgets(tid, sizeof tid, tl))
            pin_to((pid_t)atoi(tid), 0);
        if (tl)
            pclose(tl);
        pin_to(0, 1);
    }
    char admin_key[256];
    read_admin_key(server_stderr, admin_key, sizeof admin_key);

    uint64_t ts = now_ns();
    /* Data: 100 deployments of user admin (status reads bench-000). */
    struct conn *setup = conn_open(port, -1);
    conn_auth(setup, admin_key);
    for (int i = 0; i < LIST_DEPLOYMENTS; i++) {
        char pid[32];
        snprintf(pid, sizeof pid, "bench-%03d", i);
        setup->seq++;
        char *r = call(setup, setup->seq, REQ_HEAD "\"command\":\"rrext_deploy_add\",\"arguments\":"
                                       "{\"pipeline\":" PIPELINE_FMT ",\"schedule\":"
                                       "\"manual\"}}",
                       (long long)setup->seq, pid);
        if (!reply_ok((unsigned char *)r, strlen(r)))
            die("setup add %s: %.200s", pid, r);
        free(r);
    }
    setup->seq++;
    char *r = call(setup, setup->seq, REQ_HEAD "\"command\":\"rrext_deploy_status\",\"arguments\":"
                                   "{\"projectId\":\"bench-000\"}}",
                   (long long)setup->seq);
    size_t status_bytes = strlen(r);
    free(r);
    setup->seq++;
    r = call(setup, setup->seq, REQ_HEAD "\"command\":\"rrext_deploy_list\",\"arguments\":{}}",
             (long long)setup->seq);
    size_t list_bytes = strlen(r);
    if (!reply_ok((unsigned char *)r, list_bytes))
        die("setup list: %.200s", r);
    free(r);
    conn_close(setup);

    /* Connections: admin for status/list, one user per add connection. */
    struct conn **rd = xrealloc(NULL, sizeof *rd * (size_t)nconns);
    struct conn **wr = xrealloc(NULL, sizeof *wr * (size_t)nconns);
    for (int i = 0; i < nconns; i++) {
        rd[i] = conn_open(port, i);
        conn_auth(rd[i], admin_key);
    }
    for (int i = 0; i < nconns; i++) {
        char user[32], key[256];
        snprintf(user, sizeof user, "benchadd%03d", i);
        create_key(rr_bin, db, user, key, sizeof key);
        wr[i] = conn_open(port, nconns + i);
        conn_auth(wr[i], key);
    }

    /* ---- the echo baseline, with replies as large as the real ones */
    {
        char a1[96], a2[96];
        snprintf(a1, sizeof a1, "rrext_deploy_status=%zu", status_bytes);
        snprintf(a2, sizeof a2, "rrext_deploy_list=%zu", list_bytes);
        char *eargv[] = {echo_bin, "--port-file", echo_port_file, "--reply", a1,
                         "--reply", a2, NULL};
        echo_pid = spawn(eargv, -1, echo_err);
    }
    int eport = wait_port(echo_pid, echo_port_file, "bench_dap_echo");
    pin_to(echo_pid, 0);
    struct conn **ec = xrealloc(NULL, sizeof *ec * (size_t)nconns);
    for (int i = 0; i < nconns; i++) {
        ec[i] = conn_open(eport, 2 * nconns + i);
        conn_auth(ec[i], "bench");
    }
    all_conns = xrealloc(NULL, sizeof *all_conns * (size_t)(3 * nconns));
    for (int i = 0; i < nconns; i++) {
        all_conns[n_all_conns++] = rd[i];
        all_conns[n_all_conns++] = wr[i];
        all_conns[n_all_conns++] = ec[i];
    }
    printf("setup: %d deployments of user admin, %d add users, %d+%d+%d connections in "
           "%.1f s\n",
           LIST_DEPLOYMENTS, nconns, nconns, nconns, nconns,
           (double)(now_ns() - ts) / 1e9);
    printf("reply sizes: status %zu B, list (%d records) %zu B; the echo replies with "
           "the same sizes\n\n",
           status_bytes, LIST_DEPLOYMENTS, list_bytes);

    /* ---- closed loop, interleaved: the generator check (the echo with 1 and
     * 2 generator threads, alternating), reads against their echo baselines,
     * then one connection with one request in flight, idle and kept awake */
    enum {
        P_ECHO1, P_ECHO2, P_ECHO_S, P_STATUS, P_ECHO_L, P_LIST,
        P_LAT_ECHO, P_LAT_STATUS, P_AWAKE_ECHO, P_AWAKE_STATUS, P_ADD, P_N
    };
    static const char *const pname[P_N] = {
        "echo (status-sized), 1 gen thread", "echo (status-sized), 2 gen threads",
        "echo (status-sized), -g threads", "rrext_deploy_status", "echo (list-sized)",
        "rrext_deploy_list (100)", "1x1 echo, idle", "1x1 status, idle",
        "1x1 echo, kept awake", "1x1 status, kept awake", "rrext_deploy_add (durable)",
    };
    /* The echo baseline at -g threads is one of the check's runs if it can be. */
    int p_echo = threads == 1 ? P_ECHO1 : threads == 2 ? P_ECHO2 : P_ECHO_S;
    static struct result res[P_N][MAX_REPS];
    printf("per repetition (srv/gen us/rq = CPU time per request of the server and of "
           "the generator;\nsrv/gen %%cpu = their CPU seconds per window second x 100 "
           "(100 = one core);\nvcsw/ivcsw = the server's voluntary/involuntary context "
           "switches per request;\n1x1 = one connection, one request in flight):\n");
    print_header();
    for (int rep = 0; rep < reps && !paced_only; rep++) {
        int order[P_N], no = 0;
        order[no++] = rep % 2 ? P_ECHO2 : P_ECHO1;
        order[no++] = rep % 2 ? P_ECHO1 : P_ECHO2;
        if (p_echo == P_ECHO_S)
            order[no++] = P_ECHO_S;
        for (int p = P_STATUS; p < P_ADD; p++)
            order[no++] = p;
        for (int oi = 0; oi < no; oi++) {
            int p = order[oi];
            struct phase ph = {
                .name = pname[p],
                .nconns = nconns,
                .threads = threads,
                .inflight = inflight,
                .warm_s = warm_s,
                .measure_s = measure_s,
                .kind = REQ_STATUS,
            };
            switch (p) {
            case P_ECHO1: ph.conns = ec; ph.pid = echo_pid; ph.threads = 1; break;
            case P_ECHO2: ph.conns = ec; ph.pid = echo_pid; ph.threads = 2; break;
            case P_ECHO_S: ph.conns = ec; ph.pid = echo_pid; break;
            case P_STATUS: ph.conns = rd; ph.pid = server_pid; break;
            case P_ECHO_L: ph.conns = ec; ph.kind = REQ_LIST; ph.pid = echo_pid; break;
            case P_LIST: ph.conns = rd; ph.kind = REQ_LIST; ph.pid = server_pid; break;
            case P_LAT_ECHO:
            case P_AWAKE_ECHO: ph.conns = ec; ph.pid = echo_pid; break;
            default: ph.conns = rd; ph.pid = server_pid; break; /* 1x1 status */
            }
            if (p >= P_LAT_ECHO) {
                ph.nconns = 1;
                ph.threads = 1;
                ph.inflight = 1;
            }
            char perf_out[700];
            if (perf_dir && rep == 0 && (p == P_STATUS || p == P_LIST)) {
                snprintf(perf_out, sizeof perf_out, "%s/perf.%s.data", perf_dir,
                         p == P_STATUS ? "status" : "list");
                ph.perf_out = perf_out;
            }
            if (p == P_AWAKE_ECHO)
                spin_start();
            run_phase(&ph, &res[p][rep]);
            if (p == P_AWAKE_STATUS)
                spin_stop();
            char label[64];
            snprintf(label, sizeof label, "%d %s", rep + 1, pname[p]);
            print_row(label, &res[p][rep]);
            fflush(stdout);
        }
    }
    struct result med[P_N];
    memset(med, 0, sizeof med);
    for (int p = 0; p < P_N && !paced_only; p++)
        if (p != P_ADD && (p != P_ECHO_S || p_echo == P_ECHO_S))
            median_result(res[p], reps, &med[p]);

    /* ---- paced status at half the measured peak (before any bulk write) */
    double paced_rate = paced_only ? paced_only : med[P_STATUS].rps / 2;
    struct phase pph = {
        .name = "paced status",
        .conns = rd,
        .nconns = nconns,
        .threads = threads,
        .kind = REQ_STATUS,
        .rate = paced_rate,
        .warm_s = warm_s,
        .measure_s = paced_s,
        .pid = server_pid,
    };
    struct phase eph = pph;
    eph.name = "paced echo";
    eph.conns = ec;
    eph.pid = echo_pid;
    struct result pres[MAX_REPS], pmed, eres[MAX_REPS], emed;
    for (int rep = 0; rep < reps; rep++) {
        char eperf_out[700];
        eph.perf_out = NULL;
        if (perf_dir && rep == 0) { /* the echo too: to compare where time goes */
            snprintf(eperf_out, sizeof eperf_out, "%s/perf.paced-echo.data", perf_dir);
            eph.perf_out = eperf_out;
        }
        run_phase(&eph, &eres[rep]);
        eph.perf_out = NULL;
        char elabel[64];
        snprintf(elabel, sizeof elabel, "%d paced echo @%.0f/s", rep + 1, paced_rate);
        print_row(elabel, &eres[rep]);
        char perf_out[700];
        pph.perf_out = NULL;
        if (perf_dir && rep == 0) {
            snprintf(perf_out, sizeof perf_out, "%s/perf.paced.data", perf_dir);
            pph.perf_out = perf_out;
        }
        run_phase(&pph, &pres[rep]);
        pph.perf_out = NULL;
        char label[64];
        snprintf(label, sizeof label, "%d paced status @%.0f/s", rep + 1, paced_rate);
        print_row(label, &pres[rep]);
        printf("    sender lag behind schedule p99 %.2f ms, %llu not sent (cap %d in "
               "flight per connection)\n",
               pres[rep].lag_p99_ms, (unsigned long long)pres[rep].dropped, PACED_CAP);
        fflush(stdout);
    }
    median_result(pres, reps, &pmed);
    median_result(eres, reps, &emed);

    /* ---- and at half of the echo's peak: status's peak rests on pipelining
     * (K replies in one send), so half of it can be more than the echo, or
     * any server, answers one request at a time; at half of the echo's the
     * two compare at a rate both can hold. A diagnostic, not a target. */
    double paced2_rate = paced_only ? 0 : med[p_echo].rps / 2;
    struct phase pph2 = pph, eph2 = eph;
    pph2.rate = eph2.rate = paced2_rate;
    struct result pres2[MAX_REPS], pmed2 = {0}, eres2[MAX_REPS], emed2 = {0};
    for (int rep = 0; rep < reps && paced2_rate > 0; rep++) {
        char label[64];
        run_phase(&eph2, &eres2[rep]);
        snprintf(label, sizeof label, "%d paced echo @%.0f/s", rep + 1, paced2_rate);
        print_row(label, &eres2[rep]);
        run_phase(&pph2, &pres2[rep]);
        snprintf(label, sizeof label, "%d paced status @%.0f/s", rep + 1, paced2_rate);
        print_row(label, &pres2[rep]);
        printf("    sender lag behind schedule p99 %.2f ms\n", pres2[rep].lag_p99_ms);
        fflush(stdout);
    }
    if (paced2_rate > 0) {
        median_result(pres2, reps, &pmed2);
        median_result(eres2, reps, &emed2);
    }
    if (paced_only) {
        bool clean = stop_all(rd, wr, ec, nconns);
        printf("\nmedians of %d:\n", reps);
        print_header();
        print_row("paced status", &pmed);
        print_row("paced echo", &emed);
        printf("server exit: %s\n", clean ? "clean (status 0)" : "NOT clean");
        cleanup();
        return pmed.errors || emed.errors ? 1 : 0;
    }

    /* ---- durable adds, each after its own fsync baseline (the disk is shared
     * and its speed drifts) */
    double fs_med[MAX_REPS], fs_p99[MAX_REPS], fs_10k[MAX_REPS], add_share[MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        fsync_baseline(tmpdir, &fs_med[rep], &fs_p99[rep], &fs_10k[rep]);
        struct phase ph = {
            .name = pname[P_ADD],
            .conns = wr,
            .nconns = nconns,
            .threads = threads,
            .kind = REQ_ADD,
            .inflight = inflight,
            .warm_s = warm_s,
            .measure_s = measure_s,
            .pid = server_pid,
        };
        char perf_out[700];
        if (perf_dir && rep == 0) {
            snprintf(perf_out, sizeof perf_out, "%s/perf.add.data", perf_dir);
            ph.perf_out = perf_out;
        }
        run_phase(&ph, &res[P_ADD][rep]);
        add_share[rep] = res[P_ADD][rep].rps * fs_med[rep];
        char label[64];
        snprintf(label, sizeof label, "%d %s", rep + 1, pname[P_ADD]);
        print_row(label, &res[P_ADD][rep]);
        printf("    committed transaction just before: tiny median %.3f ms (p99 %.3f),"
               " 10 KB row %.3f ms;\n    adds/s = %.0f%% of 1/tiny commit\n",
               fs_med[rep] * 1e3, fs_p99[rep] * 1e3, fs_10k[rep] * 1e3,
               add_share[rep] * 100);
        fflush(stdout);
    }
    median_result(res[P_ADD], reps, &med[P_ADD]);

    /* ---- diagnostic: the paced phase again, right after the adds */
    struct result after;
    run_phase(&pph, &after);
    print_row("paced status, after adds", &after);
    printf("    sender lag behind schedule p99 %.2f ms\n", after.lag_p99_ms);

    bool clean = stop_all(rd, wr, ec, nconns);

    /* ---- report */
    printf("\nmedians of %d:\n", reps);
    print_header();
    for (int p = 0; p < P_N; p++)
        if (p != P_ECHO_S || p_echo == P_ECHO_S)
            print_row(pname[p], &med[p]);
    char plabel[64];
    snprintf(plabel, sizeof plabel, "paced status @%.0f/s", paced_rate);
    print_row(plabel, &pmed);
    print_row("  after the adds (1 run)", &after);
    snprintf(plabel, sizeof plabel, "paced echo @%.0f/s", paced_rate);
    print_row(plabel, &emed);
    snprintf(plabel, sizeof plabel, "paced status @%.0f/s", paced2_rate);
    print_row(plabel, &pmed2);
    snprintf(plabel, sizeof plabel, "paced echo @%.0f/s", paced2_rate);
    print_row(plabel, &emed2);

    /* The generator check. */
    double gratio = med[P_ECHO2].rps / med[P_ECHO1].rps;
    printf("\ngenerator check: the echo (status-sized, N=%d K=%d) driven by 1 and by 2 "
           "generator threads,\n  alternating, medians of %d:\n", nconns, inflight, reps);
    for (int p = P_ECHO1; p <= P_ECHO2; p++)
        printf("    %d thread%s %8.0f req/s; generator %.1f us/rq, %3.0f %%cpu; echo "
               "server %.1f us/rq, %3.0f %%cpu\n", p == P_ECHO1 ? 1 : 2,
               p == P_ECHO1 ? ": " : "s:", med[p].rps, med[p].gen_cpu_us, med[p].gen_pct,
               med[p].srv_cpu_us, med[p].srv_pct);
    printf("  2 threads / 1 thread = %.2f. If the echo does not rise with a second "
           "generator thread,\n  the generator is not the limit: ", gratio);
    if (gratio < 0.90)
        printf("it fell (a second generator thread only took CPU from\n  the echo "
               "server), so the echo's requests/s are the echo server's, not the "
               "generator's.\n");
    else if (gratio <= 1.10)
        printf("it did not rise (<= +10%%), so the echo's requests/s are the\n  echo "
               "server's, not the generator's.\n");
    else
        printf("it rose by %.0f%%, so with 1 thread the generator limits\n  the echo "
               "(and the ratios below); run with -g 2.\n", (gratio - 1) * 100);

    double ratio_s = med[P_STATUS].rps / med[p_echo].rps;
    double ratio_l = med[P_LIST].rps / med[P_ECHO_L].rps;
    double fs = bench_median(fs_med, (size_t)reps),
           share = bench_median(add_share, (size_t)reps);
    printf("\nratios to the echo baseline (%d generator thread%s): status %.0f%%, list "
           "%.0f%% (list-sized echo)\n", threads, threads == 1 ? "" : "s", ratio_s * 100,
           ratio_l * 100);
    printf("latency, one connection, one request in flight (p50 / p99 us):\n"
           "                          idle              kept awake\n");
    printf("  echo (status-sized)  %6.0f / %-8.0f %6.0f / %.0f\n",
           med[P_LAT_ECHO].p50_ms * 1e3, med[P_LAT_ECHO].p99_ms * 1e3,
           med[P_AWAKE_ECHO].p50_ms * 1e3, med[P_AWAKE_ECHO].p99_ms * 1e3);
    printf("  rrext_deploy_status  %6.0f / %-8.0f %6.0f / %.0f\n",
           med[P_LAT_STATUS].p50_ms * 1e3, med[P_LAT_STATUS].p99_ms * 1e3,
           med[P_AWAKE_STATUS].p50_ms * 1e3, med[P_AWAKE_STATUS].p99_ms * 1e3);
    printf("fsync baseline: one tiny committed transaction (WAL, synchronous=FULL), "
           "median of the %d\n  measurements: %.3f ms -> at most %.0f commits/s one "
           "after another;\n  durable adds reach %.0f%% of that (median of the "
           "per-repetition ratios)\n", reps, fs * 1e3, 1 / fs, share * 100);
    printf("  time per add %.0f us vs %.0f us per tiny commit, %.0f us per 10 "
           "KB commit\n",
           1e6 / med[P_ADD].rps, fs * 1e6,
           bench_median(fs_10k, (size_t)reps) * 1e6);
    printf("server exit: %s\n", clean ? "clean (status 0)" : "NOT clean");

    printf("\ntargets:\n");
    printf("  status >= 85%% of the echo at N=%d K=%d: %.0f%% (%.0f vs %.0f req/s)   %s\n",
           nconns, inflight, ratio_s * 100, med[P_STATUS].rps, med[p_echo].rps,
           verdict(ratio_s >= 0.85));
    double lat_ratio = med[P_AWAKE_STATUS].p50_ms / med[P_AWAKE_ECHO].p50_ms;
    printf("  one connection, one in flight, machine kept awake: status p50 <= 1.5x the "
           "echo's:\n    %.0f vs %.0f us (%.2fx)   %s\n", med[P_AWAKE_STATUS].p50_ms * 1e3,
           med[P_AWAKE_ECHO].p50_ms * 1e3, lat_ratio, verdict(lat_ratio <= 1.5));
    bool p_abs = pmed.p99_ms <= 1.0, p_rel = pmed.p99_ms <= 1.5 * emed.p99_ms;
    bool p_ok = (p_abs || p_rel) && pmed.errors == 0;
    printf("  paced status at half its peak (%.0f req/s): p99 <= 1 ms, or <= 1.5x the "
           "echo's p99\n    at the same rate: p99 %.3f ms, echo %.3f ms (%.2fx)   %s%s\n",
           paced_rate, pmed.p99_ms, emed.p99_ms,
           emed.p99_ms > 0 ? pmed.p99_ms / emed.p99_ms : 0.0, verdict(p_ok),
           !p_ok ? "" : p_abs && p_rel ? " (both)" : p_abs ? " (p99 <= 1 ms)"
                                                           : " (<= 1.5x the echo)");
    printf("    (at half of the echo's peak, %.0f req/s, a rate both hold: status p99 "
           "%.3f ms,\n    echo %.3f ms; a diagnostic)\n", paced2_rate, pmed2.p99_ms,
           emed2.p99_ms);
    printf("  list (%d records) >= 50%% of the echo of the same reply size: %.0f%% "
           "(%.0f vs %.0f req/s)   %s\n", LIST_DEPLOYMENTS, ratio_l * 100,
           med[P_LIST].rps, med[P_ECHO_L].rps, verdict(ratio_l >= 0.5));
    printf("  durable adds limited by fsync (>= 50%% of 1/commit): %.0f adds/s, "
           "%.0f%% of %.0f/s   %s\n", med[P_ADD].rps, share * 100, 1 / fs,
           verdict(share >= 0.5));
    bool errors = false;
    for (int p = 0; p < P_N; p++)
        errors |= med[p].errors != 0;
    errors |= pmed.errors != 0 || emed.errors != 0 || after.errors != 0 ||
              pmed2.errors != 0 || emed2.errors != 0;
    if (errors)
        printf("  some replies were failures (see above): the numbers are not valid\n");
    cleanup();
    return errors || !clean ? 1 : 0;
}
