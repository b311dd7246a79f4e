/* The fast path's I/O: TAP devices, UDP sockets, two worker threads that never touch Python.
 *
 *   tx thread: epoll over every network's TAP -> read frame (+virtio_net_hdr) -> ARP suppression /
 *              FDB lookup / flood list -> TSO split + inner checksums -> VXLAN -> sendmmsg, with UDP GSO
 *              (one sendmsg carries up to 64 equal-sized VXLAN packets).
 *   rx thread: recvmmsg on the one VXLAN socket (UDP GRO trains) -> validate header, VNI and sender
 *              -> coalesce in-order TCP segments -> one writev per frame/super-frame into the TAP.
 *
 * Table updates never stop the workers: the control side builds a new immutable table, swaps the
 * pointer, waits for a grace period (each worker passes a quiescent point or is blocked in a syscall;
 * QSBR as in userspace RCU) and frees the old one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fp.h"

/* Big enough that a burst of 64 KiB GRO trains (one TCP stream at full speed while this worker
 * is descheduled) fits: at 1 MiB the socket dropped ~0.2 % of them and TCP retransmitted. */
#define FP_RCVBUF_DEFAULT (4 << 20)

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif

const char *const fp_net_counter_names[FP_NC_MAX] = {
    "rx_packets", "rx_bytes", "rx_coalesced", "rx_tap_writes",
    "rx_drop_bad_sender", "rx_drop_malformed", "rx_csum_bad", "rx_tap_errors",
    "tx_packets", "tx_bytes", "tx_tap_reads", "tx_tso_frames", "tx_flooded",
    "tx_arp_suppressed", "tx_drop_no_dest", "tx_drop_malformed", "tx_errors",
    "tx_local", "rx_drop_local_source",
};
const char *const fp_global_counter_names[FP_GC_MAX] = {
    "rx_datagrams", "rx_segments", "rx_drop_unknown_vni", "rx_drop_malformed",
    "rx_drop_truncated", "rx_errors", "recvmmsg_calls", "sendmmsg_calls",
    "tx_gso_sends", "tx_errors", "rx_outer_csum_zero",
};

struct fp_net {
    _Atomic uint64_t c[32] __attribute__((aligned(64))); /* rx counters in line 0, tx in lines 1-2 */
    uint32_t vni;
    int fd;
    int vnet; /* FP_TAP_* capabilities, 0 without a virtio_net_hdr */
    int persist;
    uint32_t mtu;
    unsigned offload;
    uint8_t vxhdr[8];
    _Atomic(struct fp_tables *) tables;
};

struct fp_cfg {
    uint32_t n, mask;
    struct fp_net **slots; /* open addressing by VNI */
    struct fp_net **list;
};

struct fp_qs {
    _Atomic uint64_t count;
    _Atomic int online;
    char pad[64 - sizeof(uint64_t) - sizeof(int)];
};

struct fp_engine {
    struct fp_engine_opts o;
    int rxfd;   /* datagrams with a non-zero outer UDP checksum (with steering), else all of them */
    int rxzfd;  /* with steering: datagrams without an outer UDP checksum; -1 without steering */
    int ntx;
    int txfd[64];
    uint16_t txport[64];
    int udp_gso, udp_gro;
    int epfd, evfd;
    _Atomic(struct fp_cfg *) cfg;
    _Atomic(struct fp_ipset *) peers;
    _Atomic int stop;
    int started;
    pthread_t rx_thr, tx_thr;
    struct fp_qs qs[2] __attribute__((aligned(64)));
    _Atomic uint64_t g[16] __attribute__((aligned(64)));
    pthread_mutex_t ctl;
};

static inline void cnt(_Atomic uint64_t *c, uint64_t v)
{
    /* single writer per counter: a relaxed load+store is enough and costs a plain add */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

static void seterr(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, strerror(errno));
}

/* ------------------------------------------------------------------ QSBR grace periods */

static inline void qs_online(struct fp_qs *q) { atomic_store(&q->online, 1); }
static inline void qs_offline(struct fp_qs *q) { atomic_store(&q->online, 0); }
static inline void qs_quiescent(struct fp_qs *q) { atomic_fetch_add(&q->count, 1); }

static void synchronize(struct fp_engine *e)
{
    if (!e->started)
        return;
    for (int i = 0; i < 2; i++) {
        uint64_t snap = atomic_load(&e->qs[i].count);
        while (atomic_load(&e->qs[i].online) && atomic_load(&e->qs[i].count) == snap && !atomic_load(&e->stop)) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* ------------------------------------------------------------------ network config */

static inline uint32_t vni_hash(uint32_t v) { return v * 2654435761u; }

static struct fp_net *cfg_lookup(const struct fp_cfg *c, uint32_t vni)
{
    if (!c || !c->n)
        return NULL;
    for (uint32_t i = vni_hash(vni) & c->mask;; i = (i + 1) & c->mask) {
        struct fp_net *x = c->slots[i];
        if (!x)
            return NULL;
        if (x->vni == vni)
            return x;
    }
}

static void cfg_free(struct fp_cfg *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->list);
    free(c);
}

/* A new config: `old` plus `add` (may be NULL) minus the network `drop_vni` (if drop). */
static struct fp_cfg *cfg_build(const struct fp_cfg *old, struct fp_net *add, int drop, uint32_t drop_vni)
{
    uint32_t n = old ? old->n : 0;
    struct fp_cfg *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    uint32_t cap = 8;
    while (cap < 2 * (n + 1))
        cap <<= 1;
    c->slots = calloc(cap, sizeof(*c->slots));
    c->list = calloc(n + 1, sizeof(*c->list));
    if (!c->slots || !c->list) {
        cfg_free(c);
        return NULL;
    }
    c->mask = cap - 1;
    for (uint32_t k = 0; k <= n; k++) {
        struct fp_net *x = k < n ? old->list[k] : add;
        if (!x || (drop && x->vni == drop_vni))
            continue;
        c->list[c->n++] = x;
        uint32_t i = vni_hash(x->vni) & c->mask;
        while (c->slots[i])
            i = (i + 1) & c->mask;
        c->slots[i] = x;
    }
    return c;
}

/* ------------------------------------------------------------------ TAP */

int fp_setns_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        seterr(err, errlen, path);
        return -1;
    }
    int r = setns(fd, CLONE_NEWNET);
    if (r)
        seterr(err, errlen, "setns");
    close(fd);
    return r;
}

static int tap_configure(int fd, const char *name, int mtu, struct fp_tap_info *out, char *err, size_t errlen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        seterr(err, errlen, "socket");
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    int rc = -1;
    if (mtu > 0) {
        ifr.ifr_mtu = mtu;
        if (ioctl(s, SIOCSIFMTU, &ifr)) {
            seterr(err, errlen, "set MTU");
            goto out;
        }
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr)) {
        seterr(err, errlen, "get flags");
        goto out;
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr)) {
        seterr(err, errlen, "set up");
        goto out;
    }
    if (ioctl(s, SIOCGIFMTU, &ifr)) {
        seterr(err, errlen, "get MTU");
        goto out;
    }
    out->mtu = ifr.ifr_mtu;
    if (ioctl(s, SIOCGIFINDEX, &ifr)) {
        seterr(err, errlen, "ifindex");
        goto out;
    }
    out->ifindex = ifr.ifr_ifindex;
    rc = 0;
out:
    close(s);
    (void)fd;
    return rc;
}

int fp_tap_open(const char *netns_path, const char *name, int mtu, int persist, struct fp_tap_info *out, char *err,
                size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    if (strlen(name) == 0 || strlen(name) >= IFNAMSIZ) {
        snprintf(err, errlen, "TAP name %s must be 1..15 characters", name);
        return -1;
    }
    int self = -1, fd = -1, rc = -1;
    if (netns_path && *netns_path) {
        self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0) {
            seterr(err, errlen, "open own netns");
            return -1;
        }
        if (fp_setns_path(netns_path, err, errlen)) {
            close(self);
            return -1;
        }
    }
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        seterr(err, errlen, "/dev/net/tun");
        goto out;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) == 0) {
        out->vnet_hdr = 1;
    } else {
        /* fallback: no virtio_net_hdr, hence no offloads */
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (ioctl(fd, TUNSETIFF, &ifr)) {
            seterr(err, errlen, "TUNSETIFF");
            goto out;
        }
    }
    if (out->vnet_hdr) {
        int sz = FP_VNET_HLEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz)) {
            seterr(err, errlen, "TUNSETVNETHDRSZ");
            goto out;
        }
        /* Probe from most to least capable: CSUM, TSO and (kernel >= 6.2) USO, so that TCP and UDP
         * GSO frames (an application's UDP_SEGMENT sends, or UDP GRO on a container's veth) reach
         * us whole and are split here, right before encapsulation. */
        static const unsigned tries[] = {
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
            TUN_F_CSUM | TUN_F_TSO4,
            TUN_F_CSUM,
            0,
        };
        for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
            if (ioctl(fd, TUNSETOFFLOAD, tries[i]) == 0) {
                out->offload = tries[i];
                break;
            }
        }
    }
    if (persist && ioctl(fd, TUNSETPERSIST, 1)) {
        seterr(err, errlen, "TUNSETPERSIST");
        goto out;
    }
    if (tap_configure(fd, ifr.ifr_name, mtu, out, err, errlen))
        goto out;
    out->fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        if (persist)
            ioctl(fd, TUNSETPERSIST, 0);
        close(fd);
    }
    if (self >= 0) {
        if (setns(self, CLONE_NEWNET)) {
            /* cannot happen short of a kernel bug; never keep running in the wrong namespace */
            perror("fastpath: setns back to own namespace");
            abort();
        }
        close(self);
    }
    return rc;
}

int fp_tap_delete(int fd)
{
    ioctl(fd, TUNSETPERSIST, 0);
    return close(fd);
}

/* ------------------------------------------------------------------ engine setup */

static int set_int(int fd, int level, int opt, int v) { return setsockopt(fd, level, opt, &v, sizeof(v)); }

/* One receive socket on the VXLAN port: big buffer, UDP GRO, a timeout to notice stop(). */
static int rx_open_one(struct fp_engine *e, const struct sockaddr_in *sa, int *out, int reuseport, char *err,
                       size_t errlen)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        seterr(err, errlen, "socket");
        return -1;
    }
    set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (reuseport && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1)) {
        close(fd);
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
        char what[64];
        snprintf(what, sizeof(what), "bind UDP port %u", ntohs(sa->sin_port));
        seterr(err, errlen, what);
        close(fd);
        return -1;
    }
    /* Big enough to absorb bursts between two recvmmsg() calls, small enough that an overload
     * drops instead of queueing: 64 MiB here once held seconds of 64-byte frames after a flood,
     * and every later packet (a ping) waited behind them; 4 MiB holds tens of milliseconds.
     * The kernel doubles the value. */
    int rcvbuf = e->o.rcvbuf > 0 ? e->o.rcvbuf : FP_RCVBUF_DEFAULT;
    if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf))
        set_int(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf);
    struct timeval tv = {0, 200000}; /* wake up to notice stop() */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int gro = e->o.gro && set_int(fd, SOL_UDP, UDP_GRO, 1) == 0;
    e->udp_gro = gro;
    *out = fd;
    return 0;
}

/* Outer checksum steering: two receive sockets in one SO_REUSEPORT group and a classic BPF program
 * that picks the socket by the outer UDP checksum field: zero -> socket 0 (rxzfd), non-zero ->
 * socket 1 (rxfd). A datagram on rxfd had a checksum over every byte of the VXLAN payload, and
 * the kernel verified it (or the sender's own kernel computes it: CHECKSUM_PARTIAL over veth)
 * before the socket got it, so its inner frames need no second software pass. Socket 0 joins the
 * group first: until socket 1 exists, or if the program cannot read the header, everything goes
 * to socket 0, which is the safe side (inner checksums verified as before).
 * Returns -1 (nothing left open) when the kernel cannot do it, or when the port is taken: the
 * caller then opens one plain socket and reports the real bind error. */
static int rx_open_steered(struct fp_engine *e, const struct sockaddr_in *sa)
{
    /* A plain bind first (no SO_REUSEADDR): if anyone holds the port, never join their group. */
    int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -1;
    int busy = bind(probe, (const struct sockaddr *)sa, sizeof(*sa));
    close(probe);
    if (busy)
        return -1;
    /* A = outer IPv4 header length; A = UDP checksum; return A != 0 */
    static const struct sock_filter prog[] = {
        {BPF_LDX | BPF_B | BPF_MSH, 0, 0, (uint32_t)SKF_NET_OFF},
        {BPF_LD | BPF_H | BPF_IND, 0, 0, (uint32_t)(SKF_NET_OFF + 6)},
        {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0},
        {BPF_RET | BPF_K, 0, 0, 0},
        {BPF_RET | BPF_K, 0, 0, 1},
    };
    struct sock_fprog fp = {sizeof(prog) / sizeof(prog[0]), (struct sock_filter *)prog};
    if (rx_open_one(e, sa, &e->rxzfd, 1, NULL, 0))
        goto fail;
    if (setsockopt(e->rxzfd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof(fp)))
        goto fail;
    if (rx_open_one(e, sa, &e->rxfd, 1, NULL, 0))
        goto fail;
    return 0;
fail:
    if (e->rxzfd >= 0)
        close(e->rxzfd);
    e->rxzfd = -1;
    e->rxfd = -1;
    return -1;
}

struct fp_engine *fp_engine_create(const struct fp_engine_opts *o, char *err, size_t errlen)
{
    struct fp_engine *e;
    if (posix_memalign((void **)&e, 64, sizeof(*e)))
        return NULL;
    memset(e, 0, sizeof(*e));
    e->o = *o;
    e->rxfd = e->rxzfd = e->epfd = e->evfd = -1;
    pthread_mutex_init(&e->ctl, NULL);
    if (e->o.ntx < 1)
        e->o.ntx = 1;
    if (e->o.ntx > 64)
        e->o.ntx = 64;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(o->port), .sin_addr = {o->bind_addr}};
    if (o->trust_outer && o->verify_csum && rx_open_steered(e, &sa) == 0) {
        /* datagrams with and without an outer UDP checksum arrive on different sockets */
    } else if (rx_open_one(e, &sa, &e->rxfd, 0, err, errlen)) {
        goto fail;
    }
    /* Transmit sockets: each bound to an ephemeral port the kernel picks from
     * net.ipv4.ip_local_port_range; a flow hash picks the socket, hence the outer source port. */
    static const struct sock_filter drop_all[] = {{BPF_RET | BPF_K, 0, 0, 0}};
    struct sock_fprog prog = {1, (struct sock_filter *)drop_all};
    e->udp_gso = o->gso;
    for (int i = 0; i < e->o.ntx; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            seterr(err, errlen, "socket");
            goto fail;
        }
        e->txfd[i] = fd;
        e->ntx = i + 1;
        struct sockaddr_in s2 = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {o->bind_addr}};
        if (bind(fd, (struct sockaddr *)&s2, sizeof(s2))) {
            seterr(err, errlen, "bind transmit socket");
            goto fail;
        }
        socklen_t sl = sizeof(s2);
        getsockname(fd, (struct sockaddr *)&s2, &sl);
        e->txport[i] = ntohs(s2.sin_port);
        if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20))
            set_int(fd, SOL_SOCKET, SO_SNDBUF, 4 << 20);
        set_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT); /* outer DF=0 like kernel VXLAN */
        setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)); /* never queue replies */
        if (e->udp_gso && set_int(fd, SOL_UDP, UDP_SEGMENT, 0))
            e->udp_gso = 0;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->epfd < 0 || e->evfd < 0) {
        seterr(err, errlen, "epoll/eventfd");
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data = {.u64 = UINT64_MAX}}; /* EV_EVENTFD */
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev);
    atomic_store(&e->cfg, cfg_build(NULL, NULL, 0, 0));
    atomic_store(&e->peers, fp_ipset_new(0));
    return e;
fail:
    fp_engine_destroy(e);
    return NULL;
}

void fp_engine_offloads(struct fp_engine *e, struct fp_offloads *out)
{
    memset(out, 0, sizeof(*out));
    out->udp_gso = e->udp_gso;
    out->udp_gro = e->udp_gro;
    out->outer_csum_steering = e->rxzfd >= 0;
    out->csum_avx2 = fp_csum_impl();
    out->ntx = e->ntx;
    for (int i = 0; i < e->ntx; i++)
        out->tx_ports[i] = e->txport[i];
}

/* ------------------------------------------------------------------ tx: TAP -> UDP */

#define TX_BUFSZ (FP_VNET_HLEN + 65536 + 256) /* room one TAP read needs: a whole TSO frame */
/* TAP reads are packed into one arena (64-byte aligned), so a batch holds ~60 TSO frames or
 * TX_PEND small ones: with many interleaved flows, bigger batches mean longer GSO trains per
 * (socket, VTEP) and fewer sendmmsg calls. */
#define TX_ARENA (64 * TX_BUFSZ)
#define TX_PEND 256
#define TX_GROUP_SLOTS 512 /* > TX_PEND: open addressing never fills */
#define TX_MAXMSG 256
#define TX_MAXIOV 4096
#define TX_SCRATCH (256 * 1024)

struct txmeta {
    struct fp_net *net;
    int sock;
    uint32_t vtep;
    uint32_t segsize, lastlen, nseg, bytes;
    int mergeable;
    int iov_end;
};

struct txq {
    struct mmsghdr mm[TX_MAXMSG];
    struct sockaddr_in sa[TX_MAXMSG];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } cm[TX_MAXMSG];
    struct txmeta meta[TX_MAXMSG];
    struct iovec iov[TX_MAXIOV];
    int niov, nmsg;
    uint8_t scratch[TX_SCRATCH];
    size_t sused;
    /* Small unicast frames wait here until the batch is sent, so that frames of many interleaved
     * flows still leave as one UDP GSO send per (socket, VTEP) instead of one syscall each.
     * Frames of one group are chained in arrival order (next), groups in order of first arrival. */
    struct txpend {
        struct fp_net *net;
        const uint8_t *f;
        uint32_t len, vtep;
        int sock;
        int next; /* next frame of the same group, -1: last */
    } pend[TX_PEND];
    int npend;
    int heads[TX_PEND], nheads;
    struct txgroup {
        uint32_t gen, vtep;
        int sock, tail;
    } group[TX_GROUP_SLOTS];
    uint32_t gen; /* group[] entries of older generations are empty */
};

static void set_gso(struct txq *q, int i, uint16_t segsize)
{
    struct msghdr *m = &q->mm[i].msg_hdr;
    m->msg_control = q->cm[i].buf;
    m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segsize, sizeof(segsize));
}

/* A GSO message whose send failed: send its segments one by one (each is exactly two iovecs). */
static void send_split(struct fp_engine *e, struct txq *q, int i)
{
    struct msghdr m = q->mm[i].msg_hdr;
    m.msg_control = NULL;
    m.msg_controllen = 0;
    struct iovec *base = m.msg_iov;
    size_t n = m.msg_iovlen;
    for (size_t k = 0; k + 1 < n; k += 2) {
        m.msg_iov = base + k;
        m.msg_iovlen = 2;
        if (sendmsg(e->txfd[q->meta[i].sock], &m, 0) < 0)
            cnt(&q->meta[i].net->c[FP_NC_TX_ERRORS], 1);
    }
}

static void q_flush(struct fp_engine *e, struct txq *q)
{
    int i = 0;
    while (i < q->nmsg) {
        int s = q->meta[i].sock, j = i + 1;
        while (j < q->nmsg && q->meta[j].sock == s)
            j++;
        int k = i;
        while (k < j) {
            int r = sendmmsg(e->txfd[s], &q->mm[k], (unsigned)(j - k), 0);
            cnt(&e->g[FP_GC_SENDMMSG_CALLS], 1);
            if (r > 0) {
                k += r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            int err = errno;
            if (q->meta[k].nseg > 1) {
                if (err == EIO) /* the route's device cannot do UDP checksum offload: no GSO */
                    e->udp_gso = 0;
                send_split(e, q, k);
            } else {
                cnt(&q->meta[k].net->c[FP_NC_TX_ERRORS], 1);
                cnt(&e->g[FP_GC_TX_ERRORS], 1);
            }
            k++;
        }
        i = j;
    }
    q->nmsg = 0;
}

/* Make room for `iovs` iovecs and `scratch` header bytes; may send everything pending. */
static void q_reserve(struct fp_engine *e, struct txq *q, int iovs, size_t scratch)
{
    if (q->niov + iovs > TX_MAXIOV || q->sused + scratch > TX_SCRATCH) {
        q_flush(e, q);
        q->niov = 0;
        q->sused = 0;
    }
}

/* Queue one message to `vtep` over iov[first .. first+niov): nseg segments of segsize bytes (the
 * last may be shorter: lastlen). Small frames to the same destination merge into one GSO send. */
static void q_msg(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, uint32_t vtep, int first,
                  int niov, uint32_t nseg, uint32_t segsize, uint32_t lastlen, uint32_t bytes, int mergeable)
{
    if (mergeable && e->udp_gso && q->nmsg > 0) {
        struct txmeta *m = &q->meta[q->nmsg - 1];
        if (m->mergeable && m->sock == sock && m->vtep == vtep && m->iov_end == first &&
            m->lastlen == m->segsize && bytes <= m->segsize && m->nseg < FP_MAX_GSO_SEGS &&
            m->bytes + bytes <= FP_MAX_GSO_BYTES) {
            int i = q->nmsg - 1;
            q->mm[i].msg_hdr.msg_iovlen += niov;
            m->iov_end = first + niov;
            m->nseg++;
            m->lastlen = bytes;
            m->bytes += bytes;
            if (m->nseg == 2)
                set_gso(q, i, (uint16_t)m->segsize);
            return;
        }
    }
    if (q->nmsg == TX_MAXMSG)
        q_flush(e, q); /* iov/scratch stay in place: messages of this frame may still point there */
    int i = q->nmsg++;
    struct msghdr *h = &q->mm[i].msg_hdr;
    q->sa[i].sin_family = AF_INET;
    q->sa[i].sin_port = htons(e->o.port);
    q->sa[i].sin_addr.s_addr = vtep;
    h->msg_name = &q->sa[i];
    h->msg_namelen = sizeof(q->sa[i]);
    h->msg_iov = &q->iov[first];
    h->msg_iovlen = niov;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    struct txmeta *m = &q->meta[i];
    m->net = net;
    m->sock = sock;
    m->vtep = vtep;
    m->segsize = segsize;
    m->lastlen = lastlen;
    m->nseg = nseg;
    m->bytes = bytes;
    m->mergeable = mergeable;
    m->iov_end = first + niov;
    if (nseg > 1) {
        set_gso(q, i, (uint16_t)segsize);
        cnt(&e->g[FP_GC_TX_GSO_SENDS], 1);
    }
}

static void q_small(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, uint32_t vtep,
                    const uint8_t *f, size_t len, int mergeable)
{
    q_reserve(e, q, 2, 0);
    int first = q->niov;
    q->iov[q->niov].iov_base = net->vxhdr;
    q->iov[q->niov++].iov_len = FP_VXLAN_HLEN;
    q->iov[q->niov].iov_base = (void *)f;
    q->iov[q->niov++].iov_len = len;
    uint32_t bytes = (uint32_t)(FP_VXLAN_HLEN + len);
    q_msg(e, q, net, sock, vtep, first, 2, 1, bytes, bytes, bytes, mergeable);
}

/* Park a small unicast frame: it joins the chain of its (socket, VTEP) group. */
static void q_pend_add(struct txq *q, struct fp_net *net, const uint8_t *f, uint32_t len, uint32_t vtep, int sock)
{
    if (q->npend == 0 && ++q->gen == 0) { /* generation wrapped: really empty the table once */
        memset(q->group, 0, sizeof(q->group));
        q->gen = 1;
    }
    int i = q->npend++;
    q->pend[i] = (struct txpend){net, f, len, vtep, sock, -1};
    uint32_t h = (vtep * 2654435761u ^ (uint32_t)sock * 40503u) % TX_GROUP_SLOTS;
    for (;; h = (h + 1) % TX_GROUP_SLOTS) {
        struct txgroup *g = &q->group[h];
        if (g->gen != q->gen) {
            *g = (struct txgroup){q->gen, vtep, sock, i};
            q->heads[q->nheads++] = i;
            return;
        }
        if (g->vtep == vtep && g->sock == sock) {
            q->pend[g->tail].next = i;
            g->tail = i;
            return;
        }
    }
}

/* Queue the waiting small frames group by group; a flow always maps to one socket, so each flow
 * keeps its order. Called before anything else is queued and before sending. */
static void q_pend_emit(struct fp_engine *e, struct txq *q)
{
    int nheads = q->nheads;
    q->npend = 0;
    q->nheads = 0;
    for (int h = 0; h < nheads; h++)
        for (int i = q->heads[h]; i >= 0; i = q->pend[i].next) {
            struct txpend *p = &q->pend[i];
            q_small(e, q, p->net, p->sock, p->vtep, p->f, p->len, 1);
        }
}

static void tap_write_arp(struct fp_net *net, const uint8_t *reply, size_t len)
{
    static const struct fp_vnet_hdr vh0 = {0, 0, 0, 0, 0, 0};
    struct iovec iov[2];
    int n = 0;
    if (net->vnet) {
        iov[n].iov_base = (void *)&vh0;
        iov[n++].iov_len = FP_VNET_HLEN;
    }
    iov[n].iov_base = (void *)reply;
    iov[n++].iov_len = len;
    if (writev(net->fd, iov, n) < 0)
        cnt(&net->c[FP_NC_TX_ERRORS], 1);
}

static void tx_tso(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, const uint32_t *dst, uint32_t nd,
                   const uint8_t *f, size_t len, const struct fp_vnet_hdr *vh)
{
    struct fp_tso st;
    if (fp_tso_init(&st, f, len, vh)) {
        cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
        return;
    }
    cnt(&net->c[FP_NC_TX_TSO_FRAMES], 1);
    q_pend_emit(e, q);
    size_t hsz = FP_VXLAN_HLEN + st.hlen;
    uint32_t segsize = (uint32_t)(hsz + st.mss);
    uint32_t per = FP_MAX_GSO_BYTES / segsize;
    if (per > FP_MAX_GSO_SEGS)
        per = FP_MAX_GSO_SEGS;
    if (per < 1 || !e->udp_gso)
        per = 1;
    while (st.index < st.nseg) {
        uint32_t chunk = st.nseg - st.index;
        if (chunk > per)
            chunk = per;
        q_reserve(e, q, (int)(2 * chunk), chunk * ((hsz + 7) & ~(size_t)7));
        int first = q->niov;
        uint32_t bytes = 0, lastlen = 0;
        for (uint32_t c = 0; c < chunk; c++) {
            uint8_t *h = q->scratch + q->sused;
            memcpy(h, net->vxhdr, FP_VXLAN_HLEN);
            const uint8_t *pay;
            size_t pl;
            fp_tso_next(&st, h + FP_VXLAN_HLEN, &pay, &pl);
            q->sused += (hsz + 7) & ~(size_t)7;
            q->iov[q->niov].iov_base = h;
            q->iov[q->niov++].iov_len = hsz;
            q->iov[q->niov].iov_base = (void *)pay;
            q->iov[q->niov++].iov_len = pl;
            lastlen = (uint32_t)(hsz + pl);
            bytes += lastlen;
        }
        for (uint32_t d = 0; d < nd; d++)
            q_msg(e, q, net, sock, dst[d], first, (int)(2 * chunk), chunk, segsize, lastlen, bytes, 0);
        cnt(&net->c[FP_NC_TX_PACKETS], (uint64_t)chunk * nd);
        cnt(&net->c[FP_NC_TX_BYTES], (uint64_t)(bytes - chunk * FP_VXLAN_HLEN) * nd);
    }
}

static void tx_frame(struct fp_engine *e, struct txq *q, struct fp_net *net, const struct fp_tables *t, uint8_t *buf,
                     size_t n)
{
    struct fp_vnet_hdr vh = {0, 0, 0, 0, 0, 0};
    uint8_t *f = buf;
    size_t len = n;
    cnt(&net->c[FP_NC_TX_TAP_READS], 1);
    if (net->vnet) {
        if (n < FP_VNET_HLEN) {
            cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
            return;
        }
        memcpy(&vh, buf, FP_VNET_HLEN);
        f += FP_VNET_HLEN;
        len -= FP_VNET_HLEN;
    }
    uint32_t vtep = 0;
    uint8_t reply[64];
    size_t rlen = 0;
    const uint32_t *dst;
    uint32_t nd;
    switch (fp_classify(t, f, len, &vtep, reply, &rlen)) {
    case FP_FWD_ARP_REPLY:
        tap_write_arp(net, reply, rlen);
        cnt(&net->c[FP_NC_TX_ARP_SUPPRESSED], 1);
        return;
    case FP_FWD_LOCAL:
        cnt(&net->c[FP_NC_TX_LOCAL], 1);
        return;
    case FP_FWD_UNICAST:
        dst = &vtep;
        nd = 1;
        break;
    case FP_FWD_FLOOD:
        dst = t->flood;
        nd = t->nflood;
        cnt(&net->c[FP_NC_TX_FLOODED], 1);
        break;
    default:
        cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
        return;
    }
    if (nd == 0) {
        cnt(&net->c[FP_NC_TX_DROP_NO_DEST], 1);
        return;
    }
    int sock = (int)(((uint64_t)fp_flow_hash(f, len) * (uint64_t)e->ntx) >> 32);
    if (vh.gso_type != FP_VNET_GSO_NONE) {
        tx_tso(e, q, net, sock, dst, nd, f, len, &vh);
        return;
    }
    if ((vh.flags & FP_VNET_F_NEEDS_CSUM) && fp_finish_csum(f, len, vh.csum_start, vh.csum_offset)) {
        cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
        return;
    }
    cnt(&net->c[FP_NC_TX_PACKETS], nd);
    if (nd == 1 && e->udp_gso && q->npend < TX_PEND) {
        q_pend_add(q, net, f, (uint32_t)len, dst[0], sock);
        cnt(&net->c[FP_NC_TX_BYTES], (uint64_t)len);
        return;
    }
    q_pend_emit(e, q);
    q_reserve(e, q, 2, 0);
    int first = q->niov;
    q->iov[q->niov].iov_base = net->vxhdr;
    q->iov[q->niov++].iov_len = FP_VXLAN_HLEN;
    q->iov[q->niov].iov_base = f;
    q->iov[q->niov++].iov_len = len;
    uint32_t bytes = (uint32_t)(FP_VXLAN_HLEN + len);
    for (uint32_t d = 0; d < nd; d++)
        q_msg(e, q, net, sock, dst[d], first, 2, 1, bytes, bytes, bytes, nd == 1);
    cnt(&net->c[FP_NC_TX_BYTES], (uint64_t)len * nd);
}

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

/* Transmit state of one worker: frame buffers (TAP reads) and the pending sendmmsg queue. */
struct txstate {
    uint8_t *arena;
    struct txq *q;
    size_t used; /* arena bytes holding frames the queue may still point into */
    int nframes;
};

static int tx_init(struct txstate *t)
{
    t->arena = aligned_alloc(64, TX_ARENA);
    t->q = calloc(1, sizeof(*t->q));
    t->used = 0;
    t->nframes = 0;
    return t->arena && t->q ? 0 : -1;
}

static void tx_free(struct txstate *t)
{
    free(t->arena);
    free(t->q);
}

static void tx_flush(struct fp_engine *e, struct txstate *t)
{
    q_pend_emit(e, t->q);
    q_flush(e, t->q);
    t->q->niov = 0;
    t->q->sused = 0;
    t->used = 0;
    t->nframes = 0;
}

/* Read what the TAP of `net` holds (up to `max` frames) and queue it. Returns frames read. */
static int tx_net(struct fp_engine *e, struct txstate *t, struct fp_net *net, int max)
{
    const struct fp_tables *tb = atomic_load_explicit(&net->tables, memory_order_acquire);
    int got = 0;
    for (; got < max; got++) {
        if (TX_ARENA - t->used < TX_BUFSZ || t->nframes == TX_PEND)
            tx_flush(e, t);
        uint8_t *b = t->arena + t->used;
        ssize_t r = read(net->fd, b, TX_BUFSZ);
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            /* the TAP is gone (its namespace was deleted): stop polling it */
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, net->fd, NULL);
            cnt(&net->c[FP_NC_TX_ERRORS], 1);
        }
        if (r <= 0)
            break;
        t->used += ((size_t)r + 63) & ~(size_t)63;
        t->nframes++;
        tx_frame(e, t->q, net, tb, b, (size_t)r);
    }
    return got;
}

#define EV_EVENTFD UINT64_MAX
#define EV_RXSOCK (UINT64_MAX - 1)
#define EV_RXZSOCK (UINT64_MAX - 2)

/* ------------------------------------------------------------------ rx: UDP -> TAP */

#define RX_NMSG 64
#define RX_BUFSZ 65536

static void rx_emit(void *ctx, void *netp, const struct iovec *iov, int niov, int nseg)
{
    struct fp_net *net = netp;
    (void)ctx;
    (void)nseg;
    if (writev(net->fd, iov, niov) < 0)
        cnt(&net->c[FP_NC_RX_TAP_ERRORS], 1);
    else
        cnt(&net->c[FP_NC_RX_TAP_WRITES], 1);
}

typedef union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
} rx_cbuf_t;

struct rxstate {
    uint8_t *bufs;
    struct mmsghdr *mm;
    struct iovec *iov;
    struct sockaddr_in *sa;
    rx_cbuf_t *cm;
    struct fp_gro *gro;
};

static int rx_init(struct fp_engine *e, struct rxstate *r)
{
    r->bufs = malloc((size_t)RX_NMSG * RX_BUFSZ);
    r->mm = calloc(RX_NMSG, sizeof(*r->mm));
    r->iov = calloc(RX_NMSG, sizeof(*r->iov));
    r->sa = calloc(RX_NMSG, sizeof(*r->sa));
    r->cm = calloc(RX_NMSG, sizeof(*r->cm));
    r->gro = calloc(1, sizeof(*r->gro));
    if (!r->bufs || !r->mm || !r->iov || !r->sa || !r->cm || !r->gro)
        return -1;
    r->gro->verify = e->o.verify_csum;
    r->gro->nflows = e->o.gro_flows;
    for (int i = 0; i < RX_NMSG; i++) {
        r->iov[i].iov_base = r->bufs + (size_t)i * RX_BUFSZ;
        r->iov[i].iov_len = RX_BUFSZ;
        r->mm[i].msg_hdr.msg_iov = &r->iov[i];
        r->mm[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static void rx_free(struct rxstate *r)
{
    free(r->bufs);
    free(r->mm);
    free(r->iov);
    free(r->sa);
    free(r->cm);
    free(r->gro);
}

/* One recvmmsg (flags: MSG_DONTWAIT or MSG_WAITFORONE) and everything it returned, into the TAPs.
 * Returns the number of datagrams (<= 0: nothing). `qs` is marked offline while blocked. */
static int rx_batch(struct fp_engine *e, struct rxstate *r, struct fp_qs *qs, int fd, int flags)
{
    struct mmsghdr *mm = r->mm;
    for (int i = 0; i < RX_NMSG; i++) {
        mm[i].msg_hdr.msg_name = &r->sa[i];
        mm[i].msg_hdr.msg_namelen = sizeof(r->sa[i]);
        mm[i].msg_hdr.msg_control = r->cm[i].buf;
        mm[i].msg_hdr.msg_controllen = sizeof(r->cm[i].buf);
        mm[i].msg_hdr.msg_flags = 0;
    }
    if (!(flags & MSG_DONTWAIT))
        qs_offline(qs);
    int n = recvmmsg(fd, mm, RX_NMSG, flags, NULL);
    if (!(flags & MSG_DONTWAIT))
        qs_online(qs);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            cnt(&e->g[FP_GC_RX_ERRORS], 1);
        return n;
    }
    cnt(&e->g[FP_GC_RECVMMSG_CALLS], 1);
    const struct fp_cfg *cfg = atomic_load(&e->cfg);
    const struct fp_ipset *peers = atomic_load(&e->peers);
    struct fp_gro *gro = r->gro;
    /* with steering, everything on rxfd had a non-zero outer checksum the kernel verified */
    int covered = e->rxzfd >= 0 && fd == e->rxfd;
    if (e->rxzfd >= 0 && !covered)
        cnt(&e->g[FP_GC_RX_OUTER_CSUM_ZERO], (uint64_t)n);
    for (int i = 0; i < n; i++) {
        const uint8_t *p = r->iov[i].iov_base;
        size_t len = mm[i].msg_len;
        cnt(&e->g[FP_GC_RX_DATAGRAMS], 1);
        if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
            cnt(&e->g[FP_GC_RX_DROP_TRUNCATED], 1);
            continue;
        }
        size_t gso = len;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mm[i].msg_hdr); c; c = CMSG_NXTHDR(&mm[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof(v));
                if (v > 0)
                    gso = (size_t)v;
            }
        }
        uint32_t src = r->sa[i].sin_addr.s_addr;
        int allowed = fp_ipset_has(peers, src);
        for (size_t off = 0; off < len; off += gso) {
            size_t seg = len - off < gso ? len - off : gso;
            const uint8_t *pk = p + off;
            uint32_t vni;
            size_t ioff;
            cnt(&e->g[FP_GC_RX_SEGMENTS], 1);
            int rc = fp_decap(pk, seg, &vni, &ioff);
            if (rc != FP_OK) {
                cnt(&e->g[rc == FP_ERR_TRUNCATED ? FP_GC_RX_DROP_TRUNCATED : FP_GC_RX_DROP_MALFORMED], 1);
                continue;
            }
            struct fp_net *net = cfg_lookup(cfg, vni);
            if (!net) {
                cnt(&e->g[FP_GC_RX_DROP_UNKNOWN_VNI], 1);
                continue;
            }
            if (!allowed) {
                cnt(&net->c[FP_NC_RX_DROP_BAD_SENDER], 1);
                continue;
            }
            const uint8_t *inner = pk + ioff;
            if (seg - ioff >= FP_ETH_HLEN && (inner[0] & 1)) {
                /* A broadcast from another host's anycast gateway (a kernel-mode peer floods them):
                 * our bridge has the same MAC and would see a frame from itself. */
                const struct fp_tables *tb = atomic_load_explicit(&net->tables, memory_order_acquire);
                if (tb && fp_fdb_is_local(tb, inner + 6)) {
                    cnt(&net->c[FP_NC_RX_DROP_LOCAL_SOURCE], 1);
                    continue;
                }
            }
            cnt(&net->c[FP_NC_RX_PACKETS], 1);
            cnt(&net->c[FP_NC_RX_BYTES], seg - ioff);
            int bad = 0;
            gro->covered = covered;
            if (fp_gro_offer(gro, net, net->vnet, net->mtu, pk + ioff, seg - ioff, rx_emit, e, &bad))
                cnt(&net->c[FP_NC_RX_COALESCED], 1);
            if (bad)
                cnt(&net->c[FP_NC_RX_CSUM_BAD], 1);
        }
    }
    fp_gro_flush(gro, rx_emit, e);
    return n;
}

/* ------------------------------------------------------------------ workers */

/* Two-worker mode, transmit side: epoll over every network's TAP. */
static void *tx_main(void *arg)
{
    struct fp_engine *e = arg;
    struct fp_qs *qs = &e->qs[1];
    worker_sched(e, e->o.cpu_tx);
    struct txstate t;
    if (tx_init(&t)) {
        fprintf(stderr, "fastpath: tx thread out of memory\n");
        tx_free(&t);
        return NULL;
    }
    struct epoll_event evs[64];
    uint64_t spin_until = 0, spin_ns = (uint64_t)e->o.spin_us * 1000u;
    while (!atomic_load(&e->stop)) {
        qs_offline(qs);
        /* Busy-poll briefly after traffic: a sleeping thread costs a wake-up (an IPI, in a VM a
         * VM exit) per burst, which is most of the latency of a request/response. */
        int ne = epoll_wait(e->epfd, evs, 64, spin_until && now_ns() < spin_until ? 0 : 500);
        qs_online(qs);
        if (ne <= 0) {
            if (spin_until && now_ns() >= spin_until)
                spin_until = 0;
            else if (spin_until && e->o.spin_yield)
                sched_yield();
            goto quiescent;
        }
        if (spin_ns)
            spin_until = now_ns() + spin_ns;
        const struct fp_cfg *cfg = atomic_load(&e->cfg);
        for (int i = 0; i < ne; i++) {
            if (evs[i].data.u64 == EV_EVENTFD) {
                uint64_t v;
                if (read(e->evfd, &v, sizeof(v)) < 0) {
                }
                continue;
            }
            /* resolve by VNI under the grace period: the net may have been removed meanwhile */
            struct fp_net *net = cfg_lookup(cfg, (uint32_t)evs[i].data.u64);
            if (net)
                tx_net(e, &t, net, 256);
        }
        tx_flush(e, &t);
    quiescent:
        qs_quiescent(qs);
    }
    qs_offline(qs);
    tx_free(&t);
    return NULL;
}

/* Two-worker mode, receive side: blocking recvmmsg on the VXLAN socket. */
static void *rx_main(void *arg)
{
    struct fp_engine *e = arg;
    struct fp_qs *qs = &e->qs[0];
    worker_sched(e, e->o.cpu_rx);
    struct rxstate r;
    memset(&r, 0, sizeof(r));
    if (rx_init(e, &r)) {
        fprintf(stderr, "fastpath: rx thread out of memory\n");
        rx_free(&r);
        return NULL;
    }
    uint64_t spin_until = 0, spin_ns = (uint64_t)e->o.spin_us * 1000u;
    while (!atomic_load(&e->stop)) {
        int spinning = spin_until && now_ns() < spin_until;
        int n;
        if (e->rxzfd < 0) {
            n = rx_batch(e, &r, qs, e->rxfd, spinning ? MSG_DONTWAIT : MSG_WAITFORONE);
        } else {
            /* two sockets (outer checksum steering): wait for either, then drain what is there */
            struct pollfd pf[2] = {{e->rxfd, POLLIN, 0}, {e->rxzfd, POLLIN, 0}};
            if (!spinning)
                qs_offline(qs);
            int pr = poll(pf, 2, spinning ? 0 : 200);
            if (!spinning)
                qs_online(qs);
            n = 0;
            for (int k = 0; pr > 0 && k < 2; k++) {
                if (pf[k].revents) {
                    int m = rx_batch(e, &r, qs, pf[k].fd, MSG_DONTWAIT);
                    if (m > 0)
                        n += m;
                }
            }
        }
        if (n > 0 && spin_ns)
            spin_until = now_ns() + spin_ns;
        else if (n <= 0 && !spinning)
            spin_until = 0;
        else if (n <= 0 && e->o.spin_yield)
            sched_yield();
        qs_quiescent(qs);
    }
    qs_offline(qs);
    rx_free(&r);
    return NULL;
}

/* One-worker mode: one thread serves the VXLAN socket and every TAP from one epoll set.
 * A request/response costs fewer wake-ups: writing a received frame into a TAP runs the receiving
 * namespace's stack inside our writev(), so a reply (ping, TCP ACK) is often waiting in the TAP
 * when the write returns, and this thread, already running, forwards it at once. After traffic
 * the thread polls without sleeping for spin_us, which catches the remote side's answer without a
 * wake-up when it comes back quickly. */
static void *io_main(void *arg)
{
    struct fp_engine *e = arg;
    struct fp_qs *qs = &e->qs[0];
    worker_sched(e, e->o.cpu_rx);
    struct txstate t;
    struct rxstate r;
    memset(&t, 0, sizeof(t));
    memset(&r, 0, sizeof(r));
    if (tx_init(&t) || rx_init(e, &r)) {
        fprintf(stderr, "fastpath: worker out of memory\n");
        tx_free(&t);
        rx_free(&r);
        return NULL;
    }
    struct epoll_event evs[64];
    uint64_t spin_until = 0, spin_ns = (uint64_t)e->o.spin_us * 1000u;
    while (!atomic_load(&e->stop)) {
        int spinning = spin_until && now_ns() < spin_until;
        if (!spinning)
            qs_offline(qs);
        int ne = epoll_wait(e->epfd, evs, 64, spinning ? 0 : 500);
        if (!spinning)
            qs_online(qs);
        if (ne <= 0) {
            if (!spinning)
                spin_until = 0;
            else if (e->o.spin_yield)
                sched_yield(); /* poll politely: whoever else is runnable here (the app) goes first */
            qs_quiescent(qs);
            continue;
        }
        const struct fp_cfg *cfg = atomic_load(&e->cfg);
        int work = 0;
        for (int i = 0; i < ne; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == EV_EVENTFD) {
                uint64_t v;
                if (read(e->evfd, &v, sizeof(v)) < 0) {
                }
            } else if (tag == EV_RXSOCK || tag == EV_RXZSOCK) {
                /* a few batches, then the TAPs get their turn (they may hold replies by now) */
                int fd = tag == EV_RXSOCK ? e->rxfd : e->rxzfd;
                for (int k = 0; k < 4; k++) {
                    int n = rx_batch(e, &r, qs, fd, MSG_DONTWAIT);
                    if (n <= 0)
                        break;
                    work += n;
                    if (n < RX_NMSG)
                        break;
                }
            } else {
                struct fp_net *net = cfg_lookup(cfg, (uint32_t)tag);
                if (net)
                    work += tx_net(e, &t, net, 256);
            }
        }
        tx_flush(e, &t);
        if (work && spin_ns)
            spin_until = now_ns() + spin_ns;
        qs_quiescent(qs);
    }
    qs_offline(qs);
    tx_free(&t);
    rx_free(&r);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle + control */

int fp_engine_start(struct fp_engine *e)
{
    if (e->started)
        return 0;
    atomic_store(&e->stop, 0);
    e->started = 1;
    if (e->o.workers == 1) {
        /* one worker: the VXLAN socket joins the TAPs' epoll set; qs[1] stays offline */
        struct epoll_event ev = {.events = EPOLLIN, .data = {.u64 = EV_RXSOCK}};
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->rxfd, &ev);
        if (e->rxzfd >= 0) {
            struct epoll_event evz = {.events = EPOLLIN, .data = {.u64 = EV_RXZSOCK}};
            epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->rxzfd, &evz);
        }
        if (pthread_create(&e->rx_thr, NULL, io_main, e)) {
            e->started = 0;
            return -1;
        }
        pthread_setname_np(e->rx_thr, "fastpath-io");
        return 0;
    }
    if (pthread_create(&e->rx_thr, NULL, rx_main, e)) {
        e->started = 0;
        return -1;
    }
    if (pthread_create(&e->tx_thr, NULL, tx_main, e)) {
        atomic_store(&e->stop, 1);
        pthread_join(e->rx_thr, NULL);
        e->started = 0;
        return -1;
    }
    pthread_setname_np(e->rx_thr, "fastpath-rx");
    pthread_setname_np(e->tx_thr, "fastpath-tx");
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
    pthread_join(e->rx_thr, NULL);
    if (e->o.workers != 1)
        pthread_join(e->tx_thr, NULL);
    else {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->rxfd, NULL);
        if (e->rxzfd >= 0)
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->rxzfd, NULL);
    }
    e->started = 0;
}

static void net_free(struct fp_net *n, int delete_tap)
{
    if (n->fd >= 0) {
        if (delete_tap && n->persist)
            fp_tap_delete(n->fd);
        else
            close(n->fd);
    }
    fp_tables_free(atomic_load(&n->tables));
    free(n);
}

void fp_engine_destroy(struct fp_engine *e)
{
    if (!e)
        return;
    fp_engine_stop(e);
    struct fp_cfg *c = atomic_load(&e->cfg);
    if (c)
        for (uint32_t i = 0; i < c->n; i++)
            net_free(c->list[i], 0); /* persistent TAPs stay for the next fastpathd */
    cfg_free(c);
    fp_ipset_free(atomic_load(&e->peers));
    if (e->rxfd >= 0)
        close(e->rxfd);
    if (e->rxzfd >= 0)
        close(e->rxzfd);
    for (int i = 0; i < e->ntx; i++)
        close(e->txfd[i]);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->evfd >= 0)
        close(e->evfd);
    pthread_mutex_destroy(&e->ctl);
    free(e);
}

int fp_engine_add_net(struct fp_engine *e, uint32_t vni, const struct fp_tap_info *tap, int persist)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_cfg *old = atomic_load(&e->cfg);
    if (cfg_lookup(old, vni)) {
        pthread_mutex_unlock(&e->ctl);
        return -EEXIST;
    }
    struct fp_net *n;
    if (posix_memalign((void **)&n, 64, sizeof(*n))) {
        pthread_mutex_unlock(&e->ctl);
        return -ENOMEM;
    }
    memset(n, 0, sizeof(*n));
    n->vni = vni;
    n->fd = tap->fd;
    /* Kernels that know USO also take UDP GSO frames written to the TAP: the receive side may then
     * coalesce a train of same-size UDP datagrams into one write. */
    n->vnet = tap->vnet_hdr ? FP_TAP_VNET | (tap->offload & TUN_F_USO4 ? FP_TAP_GSO_UDP : 0) : 0;
    n->mtu = (uint32_t)tap->mtu;
    n->offload = tap->offload;
    n->persist = persist;
    fp_vxlan_header(n->vxhdr, vni);
    atomic_store(&n->tables, fp_tables_new(0, 0, 0));
    struct fp_cfg *c = cfg_build(old, n, 0, 0);
    if (!c) {
        fp_tables_free(atomic_load(&n->tables));
        free(n);
        pthread_mutex_unlock(&e->ctl);
        return -ENOMEM;
    }
    atomic_store(&e->cfg, c);
    synchronize(e);
    cfg_free(old);
    struct epoll_event ev = {.events = EPOLLIN, .data = {.u64 = vni}};
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, n->fd, &ev);
    pthread_mutex_unlock(&e->ctl);
    return 0;
}

int fp_engine_remove_net(struct fp_engine *e, uint32_t vni)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_cfg *old = atomic_load(&e->cfg);
    struct fp_net *n = cfg_lookup(old, vni);
    if (!n) {
        pthread_mutex_unlock(&e->ctl);
        return -ENOENT;
    }
    struct fp_cfg *c = cfg_build(old, NULL, 1, vni);
    if (!c) {
        pthread_mutex_unlock(&e->ctl);
        return -ENOMEM;
    }
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, n->fd, NULL);
    atomic_store(&e->cfg, c);
    synchronize(e);
    cfg_free(old);
    net_free(n, 1);
    pthread_mutex_unlock(&e->ctl);
    return 0;
}

int fp_engine_has_net(struct fp_engine *e, uint32_t vni)
{
    pthread_mutex_lock(&e->ctl);
    int r = cfg_lookup(atomic_load(&e->cfg), vni) != NULL;
    pthread_mutex_unlock(&e->ctl);
    return r;
}

int fp_engine_set_tables(struct fp_engine *e, uint32_t vni, struct fp_tables *t)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_net *n = cfg_lookup(atomic_load(&e->cfg), vni);
    if (!n) {
        pthread_mutex_unlock(&e->ctl);
        fp_tables_free(t);
        return -ENOENT;
    }
    struct fp_tables *old = atomic_exchange(&n->tables, t);
    synchronize(e);
    fp_tables_free(old);
    pthread_mutex_unlock(&e->ctl);
    return 0;
}

struct fp_tables *fp_engine_get_tables_copy(struct fp_engine *e, uint32_t vni, int keep_fdb, int keep_arp,
                                            int keep_flood, uint32_t nfdb, uint32_t narp, uint32_t nflood)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_net *n = cfg_lookup(atomic_load(&e->cfg), vni);
    struct fp_tables *t = NULL;
    if (n)
        t = fp_tables_clone(atomic_load(&n->tables), keep_fdb, keep_arp, keep_flood, nfdb, narp, nflood);
    pthread_mutex_unlock(&e->ctl);
    return t;
}

void fp_engine_set_peers(struct fp_engine *e, struct fp_ipset *s)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_ipset *old = atomic_exchange(&e->peers, s);
    synchronize(e);
    fp_ipset_free(old);
    pthread_mutex_unlock(&e->ctl);
}

int fp_engine_net_counters(struct fp_engine *e, uint32_t vni, uint64_t out[FP_NC_MAX])
{
    pthread_mutex_lock(&e->ctl);
    struct fp_net *n = cfg_lookup(atomic_load(&e->cfg), vni);
    if (n)
        for (int i = 0; i < FP_NC_MAX; i++)
            out[i] = atomic_load_explicit(&n->c[i], memory_order_relaxed);
    pthread_mutex_unlock(&e->ctl);
    return n ? 0 : -ENOENT;
}

void fp_engine_global_counters(struct fp_engine *e, uint64_t out[FP_GC_MAX])
{
    for (int i = 0; i < FP_GC_MAX; i++)
        out[i] = atomic_load_explicit(&e->g[i], memory_order_relaxed);
}
