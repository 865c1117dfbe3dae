/* sseload: single-threaded epoll SSE subscriber load generator.
 *
 *   cc -O2 -Wall -Wextra -o sseload scripts/sseload.c
 *   sseload --host 127.0.0.1 --port 8000 --path '/sse/events?types=system_status' \
 *           --conns N --duration S [--ramp CONNS_PER_S] [--idle] [--timeout S]
 *           [--sources K [--source-base 127.0.0.2]]
 *
 * Opens N streams (ramped), waits until every one has its response headers (or failed,
 * or --timeout seconds passed since it was started), prints "READY <open>" on stderr,
 * then runs --duration seconds and prints one JSON line on stdout.  Every dispatched SSE
 * event whose data holds "t":<CLOCK_REALTIME ns> counts as an event, latency = now - t.
 *   open          streams that got a 200 with headers (established)
 *   failed        streams that never got there (connect/IO error, non-200, timeout)
 *   closed_early  established streams that ended before the run did
 *   events_per_conn_min/max over established streams.  --idle: no latency histogram.
 *   reads         read() calls that returned data (with a server that writes each stream
 *                 once per fan-out round, about the number of writes it made)
 *   hist_ms       the latency histogram as [[ms, count], ...] (1 ms buckets, empty ones
 *                 left out; the last bucket, 10000, holds everything from 10 s up), so
 *                 the runs of several processes can be merged into exact percentiles.
 * --sources K: connection i binds source address base + (i mod K) before connecting
 * (IP_BIND_ADDRESS_NO_PORT, so the port is picked at connect time): each source address
 * has its own ~28,000 ephemeral ports towards one server address, which one address
 * alone would run out of beyond that many streams.  The descriptor limit is raised to
 * the hard limit (one descriptor per stream).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR_CAP 4096
#define LINE_MAX_CAP (1u << 20)
#define HIST_US 10000000 /* 10 s at 1 us; index HIST_US is the overflow bucket */

enum { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_HDR, ST_BODY, ST_DONE };
enum { CS_SIZE, CS_EXT, CS_SIZE_LF, CS_DATA, CS_DATA_CR, CS_DATA_LF, CS_END };

struct conn {
    int fd;
    uint8_t st, estab, chunked, cst, cdig, last_cr, has_data, has_t;
    uint32_t sent, hlen, llen, lcap;
    double started;
    char *hbuf, *line;
    uint64_t csize, events;
    int64_t t;
};

static struct conn *conns;
static int nconns, started, pending, nopen, nfailed, nclosed, ep, idle;
static uint64_t total_events, total_bytes, total_reads, hist_n, max_ns;
static uint32_t *hist;
static char req[2048];
static int reqlen;
static int64_t now_rt;
static char first_err[160];
static volatile sig_atomic_t stop;
static int nsources;
static uint32_t source_base; /* host order */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static void note_err(const char *what, int err) {
    if (!first_err[0])
        snprintf(first_err, sizeof first_err, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
}

static void conn_end(struct conn *c, const char *what, int err) {
    if (c->st == ST_DONE) return;
    if (c->estab) {
        nclosed++;
    } else {
        nfailed++;
        pending--;
        note_err(what, err);
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->st = ST_DONE;
    free(c->hbuf);
    free(c->line);
    c->hbuf = c->line = NULL;
    c->lcap = c->llen = 0;
}

static void record(int64_t t) {
    uint64_t d = now_rt > t ? (uint64_t)(now_rt - t) : 0;
    if (d > max_ns) max_ns = d;
    uint64_t us = d / 1000;
    hist[us < HIST_US ? us : HIST_US]++;
    hist_n++;
}

/* Finds "t" : <integer> in a data value. */
static int find_t(const char *s, size_t n, int64_t *out) {
    for (size_t i = 0; i + 3 < n; i++) {
        if (s[i] != '"' || s[i + 1] != 't' || s[i + 2] != '"') continue;
        size_t j = i + 3;
        while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
        if (j >= n || s[j] != ':') continue;
        j++;
        while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
        int neg = 0;
        if (j < n && s[j] == '-') { neg = 1; j++; }
        if (j >= n || s[j] < '0' || s[j] > '9') continue;
        int64_t v = 0;
        while (j < n && s[j] >= '0' && s[j] <= '9') v = v * 10 + (s[j++] - '0');
        if (j < n && (s[j] == '.' || s[j] == 'e' || s[j] == 'E')) continue; /* not an integer */
        *out = neg ? -v : v;
        return 1;
    }
    return 0;
}

static void sse_line(struct conn *c, const char *s, size_t n) {
    if (n == 0) { /* dispatch */
        if (c->has_data && c->has_t) {
            c->events++;
            total_events++;
            if (hist) record(c->t);
        }
        c->has_data = c->has_t = 0;
        return;
    }
    if (s[0] == ':') return; /* comment (heartbeat) */
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    if (flen != 4 || memcmp(s, "data", 4) != 0) return;
    c->has_data = 1;
    if (!colon || c->has_t) return;
    const char *v = colon + 1;
    size_t vlen = n - flen - 1;
    if (vlen && *v == ' ') { v++; vlen--; }
    if (find_t(v, vlen, &c->t)) c->has_t = 1;
}

static void line_append(struct conn *c, const char *p, size_t n) {
    if (c->llen + n > c->lcap && c->lcap < LINE_MAX_CAP) {
        uint32_t cap = c->lcap ? c->lcap : 256;
        while (cap < c->llen + n && cap < LINE_MAX_CAP) cap *= 2;
        char *nl = realloc(c->line, cap);
        if (!nl) return;
        c->line = nl;
        c->lcap = cap;
    }
    if (c->llen + n > c->lcap) n = c->lcap - c->llen; /* over-long line: truncate */
    memcpy(c->line + c->llen, p, n);
    c->llen += n;
}

/* Feeds decoded body bytes to the SSE line parser (CR, LF and CRLF line ends). */
static void sse_bytes(struct conn *c, const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (c->last_cr) {
            c->last_cr = 0;
            if (p[i] == '\n') { i++; continue; }
        }
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        if (j == n) { line_append(c, p + i, n - i); return; }
        if (c->llen) {
            line_append(c, p + i, j - i);
            sse_line(c, c->line, c->llen);
            c->llen = 0;
        } else {
            sse_line(c, p + i, j - i);
        }
        c->last_cr = p[j] == '\r';
        i = j + 1;
    }
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* Body bytes: de-chunk incrementally if needed. Returns -1 on error, 1 at stream end. */
static int body(struct conn *c, const char *p, size_t n) {
    if (!c->chunked) { sse_bytes(c, p, n); return 0; }
    size_t i = 0;
    while (i < n) {
        char ch;
        switch (c->cst) {
        case CS_SIZE:
        case CS_EXT:
        case CS_SIZE_LF:
            ch = p[i++];
            if (c->cst == CS_SIZE && hexval(ch) >= 0) {
                if (c->csize >> 40) return -1;
                c->csize = c->csize * 16 + hexval(ch);
                c->cdig = 1;
                break;
            }
            if (c->cst == CS_SIZE && (ch == ';' || ch == ' ' || ch == '\t')) { c->cst = CS_EXT; break; }
            if (c->cst != CS_SIZE_LF && ch == '\r') { c->cst = CS_SIZE_LF; break; }
            if (ch != '\n') {
                if (c->cst == CS_EXT) break;
                return -1;
            }
            if (!c->cdig) return -1;
            if (c->csize == 0) { c->cst = CS_END; return 1; }
            c->cst = CS_DATA;
            break;
        case CS_DATA: {
            size_t take = n - i < c->csize ? n - i : (size_t)c->csize;
            sse_bytes(c, p + i, take);
            i += take;
            c->csize -= take;
            if (c->csize == 0) c->cst = CS_DATA_CR;
            break;
        }
        case CS_DATA_CR:
        case CS_DATA_LF:
            ch = p[i++];
            if (ch == '\r' && c->cst == CS_DATA_CR) { c->cst = CS_DATA_LF; break; }
            if (ch != '\n') return -1;
            c->cst = CS_SIZE;
            c->cdig = 0;
            break;
        default:
            return 1;
        }
    }
    return 0;
}

/* Parses a complete header block in c->hbuf[0..end). Returns 0 if OK. */
static int parse_headers(struct conn *c, size_t end) {
    char *h = c->hbuf;
    h[end] = 0;
    if (strncmp(h, "HTTP/1.", 7) != 0 || strlen(h) < 12 || strncmp(h + 9, "200", 3) != 0) return -1;
    for (char *line = strchr(h, '\n'); line && *++line;) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line + 18, "chunked"))
            c->chunked = 1;
        line = eol;
    }
    return 0;
}

static int feed(struct conn *c, const char *p, size_t n) {
    if (c->st == ST_BODY) return body(c, p, n);
    size_t room = HDR_CAP - 1 - c->hlen, take = n < room ? n : room, from = c->hlen > 3 ? c->hlen - 3 : 0;
    memcpy(c->hbuf + c->hlen, p, take);
    c->hlen += take;
    for (size_t i = from; i < c->hlen; i++) {
        size_t end = 0;
        if (c->hbuf[i] == '\n' && i >= 1 && c->hbuf[i - 1] == '\n') end = i + 1;
        else if (c->hbuf[i] == '\n' && i >= 2 && c->hbuf[i - 1] == '\r' && c->hbuf[i - 2] == '\n') end = i + 1;
        if (!end) continue;
        size_t rest = c->hlen - end; /* body bytes that came with the headers */
        if (parse_headers(c, end) != 0) return -2;
        free(c->hbuf);
        c->hbuf = NULL;
        c->st = ST_BODY;
        c->estab = 1;
        pending--;
        nopen++;
        return body(c, p + (take - rest), rest + (n - take));
    }
    return c->hlen >= HDR_CAP - 1 ? -2 : 0;
}

static struct addrinfo *addr;

static void start_conn(struct conn *c) {
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->started = mono();
    pending++;
    c->st = ST_CONNECTING;
    if (c->fd < 0) { conn_end(c, "socket", errno); return; }
    if (nsources) {
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(source_base + (uint32_t)((c - conns) % nsources))};
        int one = 1;
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) { conn_end(c, "bind", errno); return; }
    }
    if (!(c->hbuf = malloc(HDR_CAP))) { conn_end(c, "malloc", ENOMEM); return; }
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        conn_end(c, "connect", errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) conn_end(c, "epoll_ctl", errno);
}

static void handle(struct conn *c, uint32_t events) {
    static char buf[65536];
    if (c->st == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { conn_end(c, "connect", err); return; }
        if (!(events & EPOLLOUT)) return;
        c->st = ST_SENDING;
    }
    if (c->st == ST_SENDING) {
        ssize_t w = send(c->fd, req + c->sent, reqlen - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) conn_end(c, "send", errno);
            return;
        }
        if ((c->sent += w) < (uint32_t)reqlen) return;
        c->st = ST_HDR;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    for (int k = 0; k < 8 && c->st != ST_DONE; k++) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r == 0) { conn_end(c, "connection closed", 0); return; }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) conn_end(c, "read", errno);
            return;
        }
        total_bytes += r;
        total_reads++;
        now_rt = realtime_ns();
        int rc = feed(c, buf, r);
        if (rc == -2) { conn_end(c, "bad response (status != 200 or headers)", 0); return; }
        if (rc == -1) { conn_end(c, "bad chunked encoding", 0); return; }
        if (rc == 1) { conn_end(c, "stream ended", 0); return; }
        if ((size_t)r < sizeof buf) return;
    }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

static double pct_ms(double p) {
    if (!hist_n) return 0;
    uint64_t target = (uint64_t)(p * hist_n + 0.999999), cum = 0;
    if (target < 1) target = 1;
    for (uint32_t i = 0; i <= HIST_US; i++)
        if ((cum += hist[i]) >= target) return i == HIST_US ? max_ns / 1e6 : i / 1000.0;
    return max_ns / 1e6;
}

static void usage(void) {
    fprintf(stderr, "usage: sseload --host H --port P --path PATH --conns N --duration S "
                    "[--ramp CONNS_PER_S] [--idle] [--timeout S] [--sources K [--source-base ADDR]]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = NULL, *path = "/sse/events", *source = "127.0.0.2";
    double duration = -1, ramp = 2000, timeout = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--idle")) { idle = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--ramp")) ramp = atof(v);
        else if (!strcmp(a, "--timeout")) timeout = atof(v);
        else if (!strcmp(a, "--sources")) nsources = atoi(v);
        else if (!strcmp(a, "--source-base")) source = v;
        else usage();
    }
    if (!port || nconns <= 0 || duration < 0 || ramp <= 0 || nsources < 0) usage();
    struct in_addr base;
    if (inet_pton(AF_INET, source, &base) != 1) { fprintf(stderr, "sseload: bad --source-base %s\n", source); return 2; }
    source_base = ntohl(base.s_addr);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct addrinfo hints = {.ai_family = nsources ? AF_INET : AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &addr);
    if (gai) { fprintf(stderr, "sseload: %s: %s\n", host, gai_strerror(gai)); return 1; }
    reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n"
                      "Cache-Control: no-cache\r\n\r\n", path, host, port);
    if (reqlen >= (int)sizeof req) { fprintf(stderr, "sseload: path too long\n"); return 2; }
    conns = calloc(nconns, sizeof *conns);
    if (!idle) hist = calloc(HIST_US + 1, sizeof *hist); /* untouched pages cost no RSS */
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || (!idle && !hist) || ep < 0) { perror("sseload"); return 1; }

    struct epoll_event evs[1024];
    double t0 = mono(), trun = 0, last_scan = t0, now = t0;
    int running = 0;
    while (!stop) {
        now = mono();
        if (started < nconns) {
            long target = (long)((now - t0) * ramp) + 1;
            while (started < nconns && started < target) start_conn(&conns[started++]);
        }
        if (!running && started == nconns && now - last_scan >= 0.2) {
            last_scan = now;
            for (int i = 0; i < nconns && pending; i++) {
                struct conn *c = &conns[i];
                if (c->st != ST_BODY && c->st != ST_DONE && now - c->started > timeout)
                    conn_end(c, "timeout waiting for headers", ETIMEDOUT);
            }
        }
        if (!running && started == nconns && pending == 0) {
            running = 1;
            trun = now;
            fprintf(stderr, "READY %d\n", nopen);
            fflush(stderr);
        }
        if (running && now - trun >= duration) break;
        int wait_ms = started < nconns ? 1 : running ? (int)((trun + duration - now) * 1000) + 1 : 50;
        if (wait_ms > 100) wait_ms = 100;
        int n = epoll_wait(ep, evs, 1024, wait_ms);
        for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    }
    now = mono();
    uint64_t emin = 0, emax = 0;
    int first = 1;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (!c->estab) continue;
        if (first || c->events < emin) emin = c->events;
        if (c->events > emax) emax = c->events;
        first = 0;
    }
    if (first_err[0]) fprintf(stderr, "sseload: %d failed, first error: %s\n", nfailed, first_err);
    printf("{\"conns\": %d, \"open\": %d, \"failed\": %d, \"closed_early\": %d, \"events\": %llu, "
           "\"events_per_conn_min\": %llu, \"events_per_conn_max\": %llu, \"bytes\": %llu, "
           "\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}, \"duration_s\": %.3f, "
           "\"sources\": %d, \"nofile\": %llu, \"reads\": %llu, \"hist_ms\": [",
           nconns, nopen, nfailed, nclosed, (unsigned long long)total_events, (unsigned long long)emin,
           (unsigned long long)emax, (unsigned long long)total_bytes, pct_ms(0.50), pct_ms(0.90), pct_ms(0.99),
           max_ns / 1e6, running ? now - trun : 0.0, nsources,
           getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur : 0ULL,
           (unsigned long long)total_reads);
    if (hist) { /* 1 ms buckets of the 1 us histogram; [10000, n] = 10 s and more */
        const char *sep = "";
        for (uint32_t ms = 0; ms <= HIST_US / 1000; ms++) {
            uint64_t n = 0;
            uint32_t hi = ms == HIST_US / 1000 ? HIST_US + 1 : (ms + 1) * 1000;
            for (uint32_t i = ms * 1000; i < hi; i++) n += hist[i];
            if (n) { printf("%s[%u, %llu]", sep, ms, (unsigned long long)n); sep = ", "; }
        }
    }
    printf("]}\n");
    fflush(stdout);
    return 0;
}
