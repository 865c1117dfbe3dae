/* ssepub: fixed-rate HTTP/1.1 keep-alive publisher for SSE hubs.
 *
 *   cc -O2 -Wall -Wextra -o ssepub scripts/ssepub.c
 *   ssepub --host 127.0.0.1 --port 8000 --path /sse/publish --rate R --duration S
 *          [--conns K=4] [--batch B=1] [--format trio|raw] [--type system_status] [--max]
 *
 * Every event's data is {"t":<CLOCK_REALTIME ns at send>,"seq":<n>}.  trio wraps it as
 * {"event_type":TYPE,"data":DATA}, or {"events":[...]} when B > 1; raw posts DATA itself.
 * One request in flight per connection.  A 1 ms tick sends whatever events are due
 * (R events/s in requests of B) on idle connections; --max sends whenever one is idle.
 * After --duration it stops sending, waits up to 5 s for in-flight responses and prints
 * one JSON line.  errors = non-2xx responses + requests lost to connection failures +
 * failed connects.  achieved_rate = ok_events / duration_s.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 16384
enum { PC_DOWN, PC_CONNECTING, PC_IDLE, PC_SENDING, PC_WAITING };
enum { R_HDR, R_CL, R_CHUNK, R_CLOSE };
enum { CS_SIZE, CS_EXT, CS_SIZE_LF, CS_DATA, CS_DATA_CR, CS_DATA_LF, CS_TR_START, CS_TR_LINE, CS_TR_LF, CS_DONE };

struct pc {
    int fd, st, rst, cst, status, keepalive, inflight;
    size_t wlen, woff, rlen, remain;
    double retry_at;
    char *wbuf;
    char rbuf[RBUF];
};

static struct pc *pcs;
static int nconn = 4, batch = 1, raw, maxmode, ep;
static const char *host = "127.0.0.1", *port, *path = "/sse/publish", *etype = "system_status";
static uint64_t sent_events, ok_events, errors, seq, status_counts[1000];
static struct addrinfo *addr;
static char *body;
static size_t body_cap;
static char first_err[160];
static volatile sig_atomic_t stop;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static void note_err(const char *what, int err) {
    if (!first_err[0])
        snprintf(first_err, sizeof first_err, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
}

static void pc_connect(struct pc *c);

/* Drops the connection; a request in flight is lost (an error). Reconnects at once
 * unless the connection itself failed, then after 100 ms. */
static void pc_down(struct pc *c, const char *what, int err, int failed) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->inflight || failed) {
        errors++;
        note_err(what, err);
    }
    c->inflight = 0;
    c->st = PC_DOWN;
    c->retry_at = failed ? mono() + 0.1 : 0;
    if (!failed) pc_connect(c);
}

static void pc_connect(struct pc *c) {
    c->rlen = 0;
    c->rst = R_HDR;
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { pc_down(c, "socket", errno, 1); return; }
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        pc_down(c, "connect", errno, 1);
        return;
    }
    c->st = PC_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void want_out(struct pc *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void pc_flush(struct pc *c) {
    while (c->woff < c->wlen) {
        ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                if (c->st != PC_SENDING) want_out(c, 1);
                c->st = PC_SENDING;
                return;
            }
            pc_down(c, "send", errno, 0);
            return;
        }
        c->woff += w;
    }
    if (c->st == PC_SENDING) want_out(c, 0);
    c->st = PC_WAITING;
}

static void send_request(struct pc *c, int n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long t = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    size_t len = 0;
    if (!raw && batch > 1) len += snprintf(body + len, body_cap - len, "{\"events\":[");
    for (int i = 0; i < n; i++) {
        if (i) body[len++] = ',';
        if (raw)
            len += snprintf(body + len, body_cap - len, "{\"t\":%lld,\"seq\":%llu}", t,
                            (unsigned long long)++seq);
        else
            len += snprintf(body + len, body_cap - len, "{\"event_type\":\"%s\",\"data\":{\"t\":%lld,\"seq\":%llu}}",
                            etype, t, (unsigned long long)++seq);
    }
    if (!raw && batch > 1) len += snprintf(body + len, body_cap - len, "]}");
    int h = sprintf(c->wbuf, "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n", path, host, port, len);
    memcpy(c->wbuf + h, body, len);
    c->wlen = h + len;
    c->woff = 0;
    c->inflight = n;
    c->status = 0;
    sent_events += n;
    pc_flush(c);
}

static void response_done(struct pc *c) {
    status_counts[c->status]++;
    if (c->status >= 200 && c->status < 300) ok_events += c->inflight;
    else {
        errors++;
        if (!first_err[0]) snprintf(first_err, sizeof first_err, "HTTP status %d", c->status);
    }
    c->inflight = 0;
    c->rst = R_HDR;
    if (!c->keepalive) pc_down(c, "close", 0, 0);
    else c->st = PC_IDLE;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Consumes one chunked body from p[0..n); returns bytes used, -1 on error; c->cst == CS_DONE at end. */
static long chunked(struct pc *c, const char *p, size_t n) {
    size_t i = 0;
    while (i < n && c->cst != CS_DONE) {
        if (c->cst == CS_DATA) {
            size_t take = n - i < c->remain ? n - i : c->remain;
            i += take;
            if ((c->remain -= take) == 0) c->cst = CS_DATA_CR;
            continue;
        }
        char ch = p[i++];
        switch (c->cst) {
        case CS_SIZE:
            if (hexval(ch) >= 0) { c->remain = c->remain * 16 + hexval(ch); break; }
            if (ch == ';' || ch == ' ' || ch == '\t') { c->cst = CS_EXT; break; }
            /* fallthrough */
        case CS_EXT:
            if (ch == '\r') { c->cst = CS_SIZE_LF; break; }
            /* fallthrough */
        case CS_SIZE_LF:
            if (ch != '\n') {
                if (c->cst == CS_EXT) break;
                return -1;
            }
            c->cst = c->remain ? CS_DATA : CS_TR_START;
            break;
        case CS_DATA_CR:
            if (ch == '\r') { c->cst = CS_DATA_LF; break; }
            /* fallthrough */
        case CS_DATA_LF:
            if (ch != '\n') return -1;
            c->cst = CS_SIZE;
            break;
        case CS_TR_START:
            c->cst = ch == '\r' ? CS_TR_LF : ch == '\n' ? CS_DONE : CS_TR_LINE;
            break;
        case CS_TR_LINE:
            if (ch == '\n') c->cst = CS_TR_START;
            break;
        case CS_TR_LF:
            if (ch != '\n') return -1;
            c->cst = CS_DONE;
            break;
        }
    }
    return (long)i;
}

/* Parses as much of c->rbuf as possible. Returns -1 on a protocol error. */
static int parse(struct pc *c) {
    while (c->rlen && c->st != PC_DOWN) {
        size_t used = 0;
        if (c->st == PC_IDLE) return -1; /* bytes nobody asked for */
        if (c->rst == R_HDR) {
            char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
            if (!end) return c->rlen == RBUF ? -1 : 0;
            *end = 0;
            used = end + 4 - c->rbuf;
            if (strncmp(c->rbuf, "HTTP/1.", 7) != 0 || c->rlen < 12) return -1;
            c->status = atoi(c->rbuf + 9);
            if (c->status < 100 || c->status > 999) return -1;
            c->keepalive = c->rbuf[7] == '1';
            long cl = -1;
            int chunk = 0;
            for (char *line = strstr(c->rbuf, "\r\n"); line; line = strstr(line, "\r\n")) {
                line += 2;
                if (!strncasecmp(line, "content-length:", 15)) cl = atol(line + 15);
                else if (!strncasecmp(line, "transfer-encoding:", 18)) chunk = 1;
                else if (!strncasecmp(line, "connection:", 11)) {
                    char *v = line + 11, *e = strstr(v, "\r\n");
                    if (e) *e = 0;
                    if (strcasestr(v, "close")) c->keepalive = 0;
                    if (strcasestr(v, "keep-alive")) c->keepalive = 1;
                    if (e) *e = '\r';
                }
            }
            memmove(c->rbuf, c->rbuf + used, c->rlen -= used);
            if (c->status < 200) continue; /* 100 Continue etc: another header block follows */
            if (c->status == 204 || c->status == 304 || cl == 0) { response_done(c); continue; }
            if (chunk) { c->rst = R_CHUNK; c->cst = CS_SIZE; c->remain = 0; }
            else if (cl > 0) { c->rst = R_CL; c->remain = cl; }
            else { c->rst = R_CLOSE; c->keepalive = 0; }
            continue;
        }
        if (c->rst == R_CL) {
            used = c->rlen < c->remain ? c->rlen : c->remain;
            c->remain -= used;
        } else if (c->rst == R_CHUNK) {
            long u = chunked(c, c->rbuf, c->rlen);
            if (u < 0) return -1;
            used = u;
        } else {
            used = c->rlen; /* until close */
        }
        memmove(c->rbuf, c->rbuf + used, c->rlen -= used);
        if ((c->rst == R_CL && c->remain == 0) || (c->rst == R_CHUNK && c->cst == CS_DONE)) response_done(c);
    }
    return 0;
}

static void handle(struct pc *c, uint32_t events) {
    if (c->st == PC_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { pc_down(c, "connect", err, 1); return; }
        if (!(events & EPOLLOUT)) return;
        c->st = PC_IDLE;
        want_out(c, 0);
        return;
    }
    if (c->st == PC_SENDING && (events & EPOLLOUT)) pc_flush(c);
    if (c->st == PC_DOWN || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (r == 0) {
            if (c->st == PC_WAITING && c->rst == R_CLOSE) response_done(c);
            pc_down(c, "connection closed", 0, 0);
            return;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) pc_down(c, "read", errno, 0);
            return;
        }
        c->rlen += r;
        if (parse(c) < 0) { pc_down(c, "bad response", 0, 0); return; }
        if (c->st == PC_DOWN || c->rlen < RBUF) return;
    }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

static void usage(void) {
    fprintf(stderr, "usage: ssepub --host H --port P --path PATH (--rate R | --max) --duration S "
                    "[--conns K] [--batch B] [--format trio|raw] [--type TYPE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    double rate = 0, duration = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--max")) { maxmode = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--conns")) nconn = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--type")) etype = v;
        else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "raw")) raw = 1;
            else if (strcmp(v, "trio")) usage();
        } else usage();
    }
    if (!port || duration < 0 || nconn < 1 || batch < 1 || (!maxmode && rate <= 0)) usage();
    if (raw && batch > 1) { fprintf(stderr, "ssepub: --format raw posts one event per request (--batch 1)\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &addr);
    if (gai) { fprintf(stderr, "ssepub: %s: %s\n", host, gai_strerror(gai)); return 1; }
    body_cap = 64 + (size_t)batch * (strlen(etype) + 96);
    body = malloc(body_cap);
    pcs = calloc(nconn, sizeof *pcs);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!body || !pcs || ep < 0) { perror("ssepub"); return 1; }
    for (int i = 0; i < nconn; i++) {
        pcs[i].fd = -1;
        if (!(pcs[i].wbuf = malloc(body_cap + strlen(path) + strlen(host) + strlen(port) + 192))) { perror("ssepub"); return 1; }
        pc_connect(&pcs[i]);
    }

    uint64_t total = maxmode ? UINT64_MAX : (uint64_t)(rate * duration + 0.5);
    struct epoll_event evs[256];
    double t0 = mono(), tend = t0 + duration, now = t0, send_end = 0;
    int rr = 0;
    while (!stop) {
        now = mono();
        int sending = !send_end; /* one last pass after tend sends what fell due before it */
        double ts = now < tend ? now : tend;
        int busy = 0;
        for (int i = 0; i < nconn; i++) {
            struct pc *c = &pcs[i];
            if (c->st == PC_DOWN && c->retry_at && now >= c->retry_at) pc_connect(c);
            busy |= c->inflight > 0;
        }
        if (!sending && (!busy || now > tend + 5)) break;
        while (sending && sent_events < total) {
            /* request k is due at k*B/R seconds: the first goes out at once */
            uint64_t due = maxmode ? UINT64_MAX : ((uint64_t)((ts - t0) * rate / batch) + 1) * batch;
            if (due > total) due = total;
            if (sent_events >= due) break;
            struct pc *c = NULL;
            for (int k = 0; k < nconn && !c; k++, rr = (rr + 1) % nconn)
                if (pcs[rr].st == PC_IDLE) c = &pcs[rr];
            if (!c) break;
            uint64_t n = total - sent_events < (uint64_t)batch ? total - sent_events : (uint64_t)batch;
            send_request(c, (int)n);
        }
        if (!send_end && now >= tend) send_end = now;
        int n = epoll_wait(ep, evs, 256, 1);
        for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    }
    if (!send_end) send_end = mono();
    double dur = send_end - t0;
    for (int i = 0; i < nconn; i++) errors += pcs[i].inflight > 0; /* never answered */
    if (first_err[0]) fprintf(stderr, "ssepub: first error: %s\n", first_err);
    if (maxmode) printf("{\"target_rate\": null");
    else printf("{\"target_rate\": %g", rate);
    printf(", \"sent_events\": %llu, \"ok_events\": %llu, \"errors\": %llu, \"achieved_rate\": %.1f, "
           "\"duration_s\": %.3f, \"status_counts\": {",
           (unsigned long long)sent_events, (unsigned long long)ok_events, (unsigned long long)errors,
           dur > 0 ? ok_events / dur : 0.0, dur);
    const char *sep = "";
    for (int s = 0; s < 1000; s++)
        if (status_counts[s]) { printf("%s\"%d\": %llu", sep, s, (unsigned long long)status_counts[s]); sep = ", "; }
    printf("}}\n");
    return 0;
}
