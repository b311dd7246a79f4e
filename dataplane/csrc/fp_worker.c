/* The worker threads: C pthreads that never take the GIL. Every worker runs the same loop over its
 * own poll set; what it serves is what is in the set:
 *   --workers 1: one thread (fastpath-io), its set holds every TAP and the VXLAN socket(s);
 *   --workers 2: fastpath-tx (every TAP) and fastpath-rx (the VXLAN socket(s)).
 * One thread for both directions saves wake-ups on request/response traffic: writing a received
 * frame into a TAP runs the receiving namespace's stack inside our writev(), so a reply (ping, TCP
 * ACK) is often waiting in the TAP when the write returns, and the thread, already running,
 * forwards it at once.
 *
 * Adaptive polling (poll_us > 0; off by default, see below), as NAPI and DPDK's adaptive modes do,
 * only where it could pay: after a round that sent frames to the wire the worker keeps polling
 * without sleeping for poll_us, because the answer to a request may come back within it (the remote
 * host's round trip) and would then be picked up without waking this thread on an idle vCPU. The
 * window ends early when the round delivered frames into a TAP (the local application runs next and
 * wants this CPU) or when someone else wants the CPU (a sched_yield() that gave it away for longer
 * than FP_POLL_CONTENDED_NS: then it sleeps and does not poll again for FP_POLL_BACKOFF_NS). An idle
 * host never polls. Measured on a shared 2-vCPU machine it made the ping round trip slower, not
 * faster (docs/performance.md), so it is opt-in. spin_us > 0 is the older fixed window: poll that
 * long after any traffic, even on a busy CPU.
 *
 * QSBR: a worker is offline while it sleeps in epoll_wait and passes a quiescent point after each
 * round, so a table swap waits at most one round (fp_engine.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fp_engine.h"

#define FP_POLL_BATCH 64 /* events per epoll_wait */
#define FP_RX_ROUNDS 4   /* receive batches per ready socket before the TAPs get their turn */
#define FP_POLL_CONTENDED_NS 20000u    /* a yield away this long: another task wanted this CPU */
#define FP_POLL_BACKOFF_NS 100000000u  /* then no polling for this long */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void block_signals(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
}

/* Scheduling of a worker: best effort (no CAP_SYS_NICE or a cgroup without RT budget: keep going). */
static void worker_sched(const struct fp_engine *e, int cpu)
{
    block_signals();
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
            fprintf(stderr, "fastpath: cannot pin worker to CPU %d\n", cpu);
    }
    if (e->o.rt_prio > 0) {
        struct sched_param sp = {.sched_priority = e->o.rt_prio};
        if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp))
            fprintf(stderr, "fastpath: cannot use SCHED_FIFO %d, staying SCHED_OTHER\n", e->o.rt_prio);
        else
            return;
    }
    if (e->o.nice && setpriority(PRIO_PROCESS, (id_t)gettid(), e->o.nice))
        fprintf(stderr, "fastpath: cannot set nice %d\n", e->o.nice);
}

static void *worker_main(void *arg)
{
    struct fp_worker *w = arg;
    struct fp_engine *e = w->e;
    struct fp_qs *qs = &e->qs[w->slot];
    worker_sched(e, w->cpu);
    struct fp_tx *t = w->tx ? fp_tx_new() : NULL;
    struct fp_rx *r = w->rx ? fp_rx_new(e) : NULL;
    if ((w->tx && !t) || (w->rx && !r)) {
        fprintf(stderr, "fastpath: worker out of memory\n");
        fp_tx_free(t);
        fp_rx_free(r);
        return NULL;
    }
    struct epoll_event evs[FP_POLL_BATCH];
    const int fixed = e->o.spin_us > 0;
    /* the adaptive window waits for answers on the wire: only a worker that also receives them polls */
    const uint64_t window_ns = fixed ? (uint64_t)e->o.spin_us * 1000u : (w->rx && w->tx ? (uint64_t)e->o.poll_us * 1000u : 0);
    uint64_t spin_until = 0, no_poll_until = 0;
    while (!atomic_load(&e->stop)) {
        int spinning = spin_until && now_ns() < spin_until;
        if (!spinning)
            qs_offline(qs);
        int ne = epoll_wait(w->epfd, evs, FP_POLL_BATCH, spinning ? 0 : 500);
        if (!spinning)
            qs_online(qs);
        if (ne <= 0) {
            if (!spinning) {
                spin_until = 0;
            } else if (e->o.spin_yield) {
                /* poll politely: whoever else is runnable here (the app) goes first */
                uint64_t before = now_ns();
                sched_yield();
                uint64_t after = now_ns();
                if (!fixed && after - before > FP_POLL_CONTENDED_NS) {
                    spin_until = 0; /* the CPU is wanted: sleep, and do not poll for a while */
                    no_poll_until = after + FP_POLL_BACKOFF_NS;
                }
            }
            qs_quiescent(qs);
            continue;
        }
        const struct fp_cfg *cfg = atomic_load(&e->cfg);
        int sent = 0, delivered = 0;
        for (int i = 0; i < ne; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == EV_EVENTFD) {
                continue; /* stop(): left readable so that every worker sees it; the loop ends */
            } else if (tag == EV_RXSOCK || tag == EV_RXZSOCK || tag == EV_ESPSOCK) {
                /* a few batches, then the TAPs get their turn (they may hold replies by now) */
                int fd = tag == EV_RXSOCK ? e->rxfd : tag == EV_RXZSOCK ? e->rxzfd : e->espfd;
                for (int k = 0; r && k < FP_RX_ROUNDS; k++) {
                    int n = fp_rx_socket(e, r, fd);
                    if (n <= 0)
                        break;
                    delivered += n;
                    if (n < FP_RX_BATCH)
                        break;
                }
            } else if (t) {
                /* resolve by VNI under the grace period: the net may have been removed meanwhile */
                struct fp_net *net = fp_cfg_lookup(cfg, (uint32_t)tag);
                if (net)
                    sent += fp_tx_tap(e, t, net, 256);
            }
        }
        if (t)
            fp_tx_flush(e, t);
        if (window_ns) {
            uint64_t now = now_ns();
            if (fixed ? sent + delivered > 0 : sent > 0 && !delivered && now >= no_poll_until)
                spin_until = now + window_ns; /* a request went out: its answer may come back soon */
            else if (!fixed && delivered)
                spin_until = 0; /* the local application has work now: leave it the CPU */
        }
        qs_quiescent(qs);
    }
    qs_offline(qs);
    fp_tx_free(t);
    fp_rx_free(r);
    return NULL;
}

static int poll_add(int epfd, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data = {.u64 = tag}};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* The receive sockets join a poll set (the one worker's, or the receive worker's). */
static int poll_add_rx(struct fp_engine *e, int epfd)
{
    if (poll_add(epfd, e->rxfd, EV_RXSOCK) || (e->espfd >= 0 && poll_add(epfd, e->espfd, EV_ESPSOCK)))
        return -1;
    return e->rxzfd >= 0 ? poll_add(epfd, e->rxzfd, EV_RXZSOCK) : 0;
}

static void poll_del_rx(struct fp_engine *e, int epfd)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, e->rxfd, NULL);
    if (e->espfd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_DEL, e->espfd, NULL);
    if (e->rxzfd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_DEL, e->rxzfd, NULL);
}

static void join_workers(struct fp_engine *e)
{
    for (int i = 0; i < e->nworkers; i++)
        pthread_join(e->worker[i].thr, NULL);
    e->nworkers = 0;
    if (e->rx_epfd >= 0) {
        close(e->rx_epfd);
        e->rx_epfd = -1;
    } else {
        poll_del_rx(e, e->tap_epfd);
    }
}

int fp_engine_start(struct fp_engine *e)
{
    static const char *const names[2][FP_MAX_WORKERS] = {{"fastpath-io", ""}, {"fastpath-rx", "fastpath-tx"}};
    if (e->started)
        return 0;
    uint64_t v;
    while (read(e->evfd, &v, sizeof(v)) > 0) { /* a previous stop() */
    }
    atomic_store(&e->stop, 0);
    int two = e->o.workers != 1;
    int n = two ? 2 : 1;
    if (two) {
        /* the receive worker polls the sockets; the transmit worker, the TAPs; qs[TX] stays
         * offline with one worker */
        e->rx_epfd = epoll_create1(EPOLL_CLOEXEC);
        if (e->rx_epfd < 0 || poll_add(e->rx_epfd, e->evfd, EV_EVENTFD) || poll_add_rx(e, e->rx_epfd)) {
            if (e->rx_epfd >= 0)
                close(e->rx_epfd);
            e->rx_epfd = -1;
            return -1;
        }
        e->worker[FP_WORKER_RX] = (struct fp_worker){e, e->rx_epfd, FP_WORKER_RX, e->o.cpu_rx, 0, 1, 0};
        e->worker[FP_WORKER_TX] = (struct fp_worker){e, e->tap_epfd, FP_WORKER_TX, e->o.cpu_tx, 1, 0, 0};
    } else {
        if (poll_add_rx(e, e->tap_epfd)) {
            poll_del_rx(e, e->tap_epfd);
            return -1;
        }
        e->worker[FP_WORKER_RX] = (struct fp_worker){e, e->tap_epfd, FP_WORKER_RX, e->o.cpu_rx, 1, 1, 0};
    }
    e->started = 1;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&e->worker[i].thr, NULL, worker_main, &e->worker[i])) {
            atomic_store(&e->stop, 1);
            join_workers(e);
            e->started = 0;
            return -1;
        }
        e->nworkers = i + 1;
        pthread_setname_np(e->worker[i].thr, names[two][i]);
    }
    return 0;
}

void fp_engine_stop(struct fp_engine *e)
{
    if (!e->started)
        return;
    atomic_store(&e->stop, 1);
    uint64_t one = 1;
    if (write(e->evfd, &one, sizeof(one)) < 0) {
    }
    join_workers(e);
    e->started = 0;
}
