// uring-probe: does batching 64-byte loopback TCP sends through io_uring
// reduce CPU per message vs one send() syscall per message?
//
// Single thread, N connected 127.0.0.1 TCP pairs (nonblocking, TCP_NODELAY
// like the gateway; no buffer resizing). Each round: write one 64-byte message
// to each of the N writer sockets (fixed random permutation), then drain the
// N reader sockets. CPU (getrusage RUSAGE_SELF user+sys), a perf task-clock
// counter (same counter as `perf stat -e task-clock`), thread CPU clock and
// wall clock are accumulated around the write phase and, separately, around
// the read phase. Variants are interleaved within every repetition.
//
// usage: probe [-n pairs] [-r rounds] [-k reps] [-v variant,variant,...] [-q] [-R]
//   variants: a        send() syscall per message
//             bB       IORING_OP_SEND batches of B (plain fds)
//             cB       like bB with registered files (IOSQE_FIXED_FILE)
//             tB       like cB, ring with SINGLE_ISSUER|DEFER_TASKRUN
//             dB       write phase = send(); read phase = IORING_OP_RECV
//                      batches of B with registered files
//             a<x>     (e.g. a1, a2) extra copies of (a) = A/A noise control;
//                      ratios use the first 'a' listed
//   -R: rotate the variant order by one position every repetition
//   default: a,b8,b45,b128,b1000,c8,c45,c128,c1000,t45,t1000,d45,d1000
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#define MSG 64
#define RBUF 256
#define MAXV 32

static int N = 1000, ROUNDS = 1000, REPS = 5, QUIET = 0, ROTATE = 0;
static int *wfd, *rfd, *order;
static long *pending;            // bytes written to pair i not yet read
static char wbuf[MSG];
static char *rbufs;              // N * RBUF
static struct io_uring ring_def, ring_tuned;
static int perf_fd = -1;

static void die(const char *m) { perror(m); exit(1); }

static inline uint64_t ns_mono(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}
static inline uint64_t ns_thread(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}
static inline uint64_t ns_rusage(void) {
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}
static inline uint64_t ns_perf(void) {
    uint64_t v = 0;
    if (perf_fd >= 0 && read(perf_fd, &v, sizeof v) != sizeof v) v = 0;
    return v;
}

typedef struct { uint64_t ru, perf, thr, wall; } stamp_t;
static inline void stamp(stamp_t *s) {
    s->wall = ns_mono(); s->thr = ns_thread(); s->ru = ns_rusage(); s->perf = ns_perf();
}
static inline void acc(stamp_t *sum, const stamp_t *a, const stamp_t *b) {
    sum->ru += b->ru - a->ru; sum->perf += b->perf - a->perf;
    sum->thr += b->thr - a->thr; sum->wall += b->wall - a->wall;
}

// ---------------------------------------------------------------- setup
static void setup_pairs(void) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) die("socket");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (void *)&a, sizeof a)) die("bind");
    if (listen(lfd, 4096)) die("listen");
    socklen_t al = sizeof a;
    getsockname(lfd, (void *)&a, &al);
    wfd = calloc(N, sizeof *wfd); rfd = calloc(N, sizeof *rfd);
    order = calloc(N, sizeof *order); pending = calloc(N, sizeof *pending);
    rbufs = aligned_alloc(4096, (size_t)N * RBUF);
    int one = 1;
    for (int i = 0; i < N; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0) die("socket");
        if (connect(c, (void *)&a, sizeof a)) die("connect");
        int s = accept(lfd, NULL, NULL);
        if (s < 0) die("accept");
        // writer = accepted (server-side) socket, reader = client socket
        wfd[i] = s; rfd[i] = c;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
        fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    }
    close(lfd);
    srand(12345);
    for (int i = 0; i < N; i++) order[i] = i;
    for (int i = N - 1; i > 0; i--) { int j = rand() % (i + 1); int t = order[i]; order[i] = order[j]; order[j] = t; }
    memset(wbuf, 'x', MSG);
}

static void setup_ring(struct io_uring *r, unsigned flags) {
    struct io_uring_params p = { .flags = flags };
    int ret = io_uring_queue_init_params(1024, r, &p);
    if (ret < 0) { errno = -ret; die("io_uring_queue_init_params"); }
    int *tab = malloc(sizeof(int) * 2 * N);
    for (int i = 0; i < N; i++) { tab[i] = wfd[i]; tab[N + i] = rfd[i]; }
    ret = io_uring_register_files(r, tab, 2 * N);
    if (ret < 0) { errno = -ret; die("io_uring_register_files"); }
    free(tab);
}

static void setup_perf(void) {
    struct perf_event_attr pa = { .type = PERF_TYPE_SOFTWARE, .size = sizeof pa,
                                  .config = PERF_COUNT_SW_TASK_CLOCK, .inherit = 1 };
    perf_fd = syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0);
    if (perf_fd < 0) fprintf(stderr, "perf_event_open failed (%s); perf column = 0\n", strerror(errno));
}

// ---------------------------------------------------------------- counters
static uint64_t n_send_err, n_cqe_bad, n_submitted, n_inline, n_waits, n_late, n_recv_sys, n_recv_uring;

// ---------------------------------------------------------------- write phase
static void write_sys(void) {
    for (int k = 0; k < N; k++) {
        int i = order[k];
        ssize_t r = send(wfd[i], wbuf, MSG, MSG_DONTWAIT);
        if (r != MSG) n_send_err++; else pending[i] += MSG;
    }
}

static void write_uring(struct io_uring *ring, int B, int fixed) {
    for (int k0 = 0; k0 < N; k0 += B) {
        int cnt = N - k0 < B ? N - k0 : B;
        for (int j = 0; j < cnt; j++) {
            int i = order[k0 + j];
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (!sqe) { fprintf(stderr, "no sqe\n"); exit(1); }
            io_uring_prep_send(sqe, fixed ? i : wfd[i], wbuf, MSG, MSG_DONTWAIT);
            if (fixed) sqe->flags |= IOSQE_FIXED_FILE;
            sqe->user_data = (uint64_t)i;
        }
        int s = io_uring_submit(ring);   // one io_uring_enter, min_complete = 0
        if (s != cnt) { fprintf(stderr, "submit %d != %d\n", s, cnt); exit(1); }
        n_submitted += cnt;
        n_inline += io_uring_cq_ready(ring);
        int got = 0;
        while (got < cnt) {
            if (io_uring_cq_ready(ring) == 0) {
                struct io_uring_cqe *w;
                n_waits++;
                int ret = io_uring_wait_cqe(ring, &w);
                if (ret < 0) { errno = -ret; die("wait_cqe"); }
            }
            struct io_uring_cqe *cqe; unsigned head, seen = 0;
            io_uring_for_each_cqe(ring, head, cqe) {
                int i = (int)cqe->user_data;
                if (cqe->res != MSG) n_cqe_bad++; else pending[i] += MSG;
                seen++;
            }
            io_uring_cq_advance(ring, seen);
            got += seen;
        }
    }
}

// ---------------------------------------------------------------- read phase
// Drain: recv until all bytes written to that pair have been read (a further
// recv would return EAGAIN; we skip that provably-empty call). If a recv
// returns EAGAIN with bytes still pending, they are left for the next round
// (counted in n_late).
static void read_sys(void) {
    for (int k = 0; k < N; k++) {
        int i = order[k];
        while (pending[i] > 0) {
            ssize_t r = recv(rfd[i], rbufs + (size_t)i * RBUF, RBUF, MSG_DONTWAIT);
            n_recv_sys++;
            if (r > 0) pending[i] -= r;
            else { n_late++; break; }
        }
    }
}

static void read_uring(struct io_uring *ring, int B) {
    for (int k0 = 0; k0 < N; k0 += B) {
        int cnt = N - k0 < B ? N - k0 : B;
        for (int j = 0; j < cnt; j++) {
            int i = order[k0 + j];
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            io_uring_prep_recv(sqe, N + i, rbufs + (size_t)i * RBUF, RBUF, MSG_DONTWAIT);
            sqe->flags |= IOSQE_FIXED_FILE;
            sqe->user_data = (uint64_t)i;
        }
        int s = io_uring_submit(ring);
        if (s != cnt) { fprintf(stderr, "submit %d != %d\n", s, cnt); exit(1); }
        n_recv_uring += cnt;
        int got = 0;
        while (got < cnt) {
            if (io_uring_cq_ready(ring) == 0) {
                struct io_uring_cqe *w; n_waits++;
                int ret = io_uring_wait_cqe(ring, &w);
                if (ret < 0) { errno = -ret; die("wait_cqe"); }
            }
            struct io_uring_cqe *cqe; unsigned head, seen = 0;
            io_uring_for_each_cqe(ring, head, cqe) {
                int i = (int)cqe->user_data;
                if (cqe->res > 0) pending[i] -= cqe->res; else n_late++;
                seen++;
            }
            io_uring_cq_advance(ring, seen);
            got += seen;
        }
    }
    read_sys(); // mop up anything left (normally nothing -> no syscalls)
}

// ---------------------------------------------------------------- variants
typedef struct {
    char name[16]; char kind; int B;
    stamp_t w[64], r[64];                    // per rep: write / read phase sums
    uint64_t submitted[64], inl[64], waits[64], errs[64];
} var_t;
static var_t V[MAXV]; static int NV;

static void run_variant(var_t *v, int rep, int rounds) {
    uint64_t s0 = n_submitted, i0 = n_inline, w0 = n_waits, e0 = n_send_err + n_cqe_bad;
    stamp_t a, b, c;
    struct io_uring *ring = v->kind == 't' ? &ring_tuned : &ring_def;
    for (int r = 0; r < rounds; r++) {
        stamp(&a);
        switch (v->kind) {
        case 'a': case 'd': write_sys(); break;
        case 'b': write_uring(ring, v->B, 0); break;
        case 'c': case 't': write_uring(ring, v->B, 1); break;
        }
        stamp(&b);
        if (v->kind == 'd') read_uring(ring, v->B); else read_sys();
        stamp(&c);
        if (rep >= 0) { acc(&v->w[rep], &a, &b); acc(&v->r[rep], &b, &c); }
    }
    if (rep >= 0) {
        v->submitted[rep] = n_submitted - s0; v->inl[rep] = n_inline - i0;
        v->waits[rep] = n_waits - w0; v->errs[rep] = n_send_err + n_cqe_bad - e0;
    }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y);
}
static double median(double *x, int n) {
    double t[64]; memcpy(t, x, n * sizeof *x); qsort(t, n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}
static double dmin(double *x, int n) { double m = x[0]; for (int i = 1; i < n; i++) if (x[i] < m) m = x[i]; return m; }
static double dmax(double *x, int n) { double m = x[0]; for (int i = 1; i < n; i++) if (x[i] > m) m = x[i]; return m; }

static int count_threads(void) {
    DIR *d = opendir("/proc/self/task"); int n = 0; struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d); return n;
}

int main(int argc, char **argv) {
    const char *vlist = "a,b8,b45,b128,b1000,c8,c45,c128,c1000,t45,t1000,d45,d1000";
    int opt;
    while ((opt = getopt(argc, argv, "n:r:k:v:qR")) != -1) {
        switch (opt) {
        case 'n': N = atoi(optarg); break;
        case 'r': ROUNDS = atoi(optarg); break;
        case 'k': REPS = atoi(optarg); break;
        case 'v': vlist = optarg; break;
        case 'q': QUIET = 1; break;
        case 'R': ROTATE = 1; break;
        default: fprintf(stderr, "usage: %s [-n pairs] [-r rounds] [-k reps] [-v list] [-q] [-R]\n", argv[0]); return 2;
        }
    }
    char *vl = strdup(vlist);
    for (char *t = strtok(vl, ","); t && NV < MAXV; t = strtok(NULL, ",")) {
        var_t *v = &V[NV++]; memset(v, 0, sizeof *v);
        snprintf(v->name, sizeof v->name, "%s", t);
        v->kind = t[0]; v->B = t[1] ? atoi(t + 1) : 1;
        if (!strchr("abctd", v->kind) || v->B < 1 || v->B > 1024) { fprintf(stderr, "bad variant %s\n", t); return 2; }
    }
    setup_pairs();
    setup_ring(&ring_def, 0);
    setup_ring(&ring_tuned, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    setup_perf();
    if (!QUIET) fprintf(stderr, "pairs=%d rounds=%d reps=%d variants=%s\n", N, ROUNDS, REPS, vlist);

    // reference: null syscall cost in this process (getppid), 3 x 1M calls, min
    double nullns = 1e9;
    for (int t = 0; t < 3; t++) {
        uint64_t t0 = ns_thread();
        for (int i = 0; i < 1000000; i++) syscall(SYS_getppid);
        double d = (ns_thread() - t0) / 1e6; if (d < nullns) nullns = d;
    }

    // warm-up: every variant briefly, not recorded
    for (int v = 0; v < NV; v++) run_variant(&V[v], -1, 50);

    for (int rep = 0; rep < REPS; rep++) {
        for (int vi = 0; vi < NV; vi++) {
            int v = ROTATE ? (vi + rep) % NV : vi;   // -R: rotate start position each rep
            run_variant(&V[v], rep, ROUNDS);
            if (!QUIET) {
                double msgs = (double)ROUNDS * N;
                fprintf(stderr, "rep %d %-6s write: ru %.0f perf %.0f thr %.0f wall %.0f ns/msg | read: ru %.0f ns/msg\n",
                        rep, V[v].name, V[v].w[rep].ru / msgs, V[v].w[rep].perf / msgs,
                        V[v].w[rep].thr / msgs, V[v].w[rep].wall / msgs, V[v].r[rep].ru / msgs);
            }
        }
    }

    double msgs = (double)ROUNDS * N;
    // baseline per rep: variant 'a' (first occurrence)
    int ia = -1; for (int v = 0; v < NV; v++) if (V[v].kind == 'a') { ia = v; break; }
    printf("# pairs=%d rounds=%d reps=%d msgs/variant/rep=%.0f  threads_at_end=%d  null_syscall(getppid)=%.0f ns\n", N, ROUNDS, REPS, msgs, count_threads(), nullns);
    printf("# WRITE phase, ns CPU per message (getrusage user+sys); ratio = per-rep ratio to (a) of the same rep\n");
    printf("%-6s %9s %9s %9s | %7s %7s %7s | %9s %9s %9s | %8s %8s\n", "var", "ru_med", "ru_min", "ru_max",
           "ratio", "r_min", "r_max", "perf_med", "thr_med", "wall_med", "inline%", "errs");
    for (int v = 0; v < NV; v++) {
        double ru[64], pf[64], th[64], wl[64], ra[64]; uint64_t sub = 0, inl = 0, err = 0;
        for (int r = 0; r < REPS; r++) {
            ru[r] = V[v].w[r].ru / msgs; pf[r] = V[v].w[r].perf / msgs; th[r] = V[v].w[r].thr / msgs; wl[r] = V[v].w[r].wall / msgs;
            ra[r] = ia >= 0 ? (double)V[v].w[r].ru / V[ia].w[r].ru : 0;
            sub += V[v].submitted[r]; inl += V[v].inl[r]; err += V[v].errs[r];
        }
        char inls[16] = "-";
        if (sub) snprintf(inls, sizeof inls, "%.2f", 100.0 * inl / sub);
        printf("%-6s %9.0f %9.0f %9.0f | %7.3f %7.3f %7.3f | %9.0f %9.0f %9.0f | %8s %8llu\n", V[v].name,
               median(ru, REPS), dmin(ru, REPS), dmax(ru, REPS), median(ra, REPS), dmin(ra, REPS), dmax(ra, REPS),
               median(pf, REPS), median(th, REPS), median(wl, REPS), inls, (unsigned long long)err);
    }
    printf("# READ phase, ns CPU per message (getrusage); ratio to (a)'s read phase (recv() per socket) of the same rep\n");
    printf("%-6s %9s %9s %9s | %7s %7s %7s | %9s %9s\n", "var", "ru_med", "ru_min", "ru_max", "ratio", "r_min", "r_max", "perf_med", "wall_med");
    for (int v = 0; v < NV; v++) {
        double ru[64], pf[64], wl[64], ra[64];
        for (int r = 0; r < REPS; r++) {
            ru[r] = V[v].r[r].ru / msgs; pf[r] = V[v].r[r].perf / msgs; wl[r] = V[v].r[r].wall / msgs;
            ra[r] = ia >= 0 ? (double)V[v].r[r].ru / V[ia].r[r].ru : 0;
        }
        printf("%-6s %9.0f %9.0f %9.0f | %7.3f %7.3f %7.3f | %9.0f %9.0f\n", V[v].name, median(ru, REPS), dmin(ru, REPS),
               dmax(ru, REPS), median(ra, REPS), dmin(ra, REPS), dmax(ra, REPS), median(pf, REPS), median(wl, REPS));
    }
    printf("# totals: send_err=%llu cqe_bad=%llu io_uring_submitted=%llu inline_at_submit=%llu extra_waits=%llu late_reads=%llu recv_sys=%llu recv_uring=%llu\n",
           (unsigned long long)n_send_err, (unsigned long long)n_cqe_bad, (unsigned long long)n_submitted,
           (unsigned long long)n_inline, (unsigned long long)n_waits, (unsigned long long)n_late,
           (unsigned long long)n_recv_sys, (unsigned long long)n_recv_uring);
    return 0;
}
