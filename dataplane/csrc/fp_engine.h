/* What the engine's files share; not part of the interface the Cython module sees (that is fp.h).
 *
 *   fp_engine.c  the engine object: networks (an RCU-style config), QSBR grace periods, control calls
 *   fp_tap.c     TAP devices: open/configure inside a namespace; frame reads and writes
 *   fp_udp.c     UDP sockets: the VXLAN receive socket(s) with outer checksum steering, the transmit
 *                sockets; recvmmsg / sendmmsg batches
 *   fp_tx.c      forwarding TAP -> UDP: classify, TSO/USO split, VXLAN, group into GSO sends
 *   fp_rx.c      forwarding UDP -> TAP: decap, sender and VNI checks, coalescing, TAP writes
 *   fp_worker.c  the worker threads: one loop, parameterised by its poll set
 *   fp_sa.c      SA objects of encrypted networks, a network's SA set, the inbound SPI map
 *   fp_esp.c     the ESP transform itself (fp.h)
 *
 * Only fp_tap.c and fp_udp.c make I/O system calls on the data fds; fp_tx.c and fp_rx.c see batches
 * (struct fp_udp_rx, struct fp_txmsg) and frames.
 */
#ifndef OVERLAYNET_FP_ENGINE_H
#define OVERLAYNET_FP_ENGINE_H

#include <linux/if_tun.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/types.h>

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

/* Counters are grouped in whole cache lines (8 per line): rx counters in line 0, tx in lines 1-2. */
#define FP_LINE_WORDS 8
#define FP_NC_SLOTS ((FP_NC_MAX + FP_LINE_WORDS - 1) / FP_LINE_WORDS * FP_LINE_WORDS)
#define FP_GC_SLOTS ((FP_GC_MAX + FP_LINE_WORDS - 1) / FP_LINE_WORDS * FP_LINE_WORDS)

/* Worker slots: with one worker it is FP_WORKER_RX (it serves both directions). */
enum { FP_WORKER_RX = 0, FP_WORKER_TX = 1, FP_MAX_WORKERS = 2 };

/* Poll tags (epoll data): a TAP is tagged with its VNI (< 2^24), the rest from the top. */
#define EV_EVENTFD UINT64_MAX
#define EV_RXSOCK (UINT64_MAX - 1)
#define EV_RXZSOCK (UINT64_MAX - 2)
#define EV_ESPSOCK (UINT64_MAX - 3)

/* The transmit "socket" index of ESP packets: e->txfd[FP_SOCK_ESP] is the ESP socket (RFC 3948). */
#define FP_SOCK_ESP FP_MAX_TX_SOCKETS

/* One SA of an encrypted network. The transmit worker alone moves `seq` of an outbound SA, the
 * receive worker alone the replay window of an inbound one; the control side reads them. */
struct fp_sa {
    struct fp_esp_sa esp; /* SPI, salt, cipher contexts, replay window */
    uint64_t id;
    uint32_t vni, peer, epoch; /* peer: network byte order */
    int dir;                   /* FP_SA_OUT / FP_SA_IN */
    uint8_t key[FP_ESP_KEYLEN]; /* recognises the same SA in a resync */
    _Atomic uint32_t seq;       /* out: last sequence number used; in: highest accepted */
    _Atomic uint32_t seq_limit; /* out: the highest sequence number durably reserved */
};
/* One network's SAs, immutable once published. */
struct fp_sa_set {
    uint32_t n;
    struct fp_sa **all;
    uint32_t out_mask;
    struct fp_sa **out; /* outbound SAs, open addressing by peer */
};
/* Inbound SAs of every network by SPI, immutable once published. */
struct fp_spi_map {
    uint32_t mask, n;
    struct fp_sa **slots;
};
struct fp_sa *fp_sa_new(uint32_t vni, const struct fp_sa_spec *s, uint64_t id);
void fp_sa_free(struct fp_sa *sa);
int fp_sa_same(const struct fp_sa *sa, const struct fp_sa_spec *s);
struct fp_sa_set *fp_sa_set_new(struct fp_sa *const *sas, uint32_t n); /* NULL, errno EEXIST: 2 out SAs for a peer */
void fp_sa_set_free(struct fp_sa_set *t); /* the set, not its SAs */
struct fp_sa *fp_sa_out(const struct fp_sa_set *t, uint32_t peer);
int fp_sa_in_set(const struct fp_sa_set *t, const struct fp_sa *sa);
struct fp_spi_map *fp_spi_map_new(uint32_t n);
int fp_spi_map_put(struct fp_spi_map *m, struct fp_sa *sa); /* -EEXIST: the SPI is taken */
struct fp_sa *fp_spi_map_get(const struct fp_spi_map *m, uint32_t spi);
void fp_spi_map_free(struct fp_spi_map *m);

struct fp_net {
    _Atomic uint64_t c[FP_NC_SLOTS] __attribute__((aligned(64)));
    uint32_t vni;
    int fd;
    int vnet; /* FP_TAP_* capabilities, 0 without a virtio_net_hdr */
    int persist;
    uint32_t mtu;
    unsigned offload;
    uint8_t vxhdr[8];
    int encrypted; /* fixed for the network's life: never a cleartext VXLAN packet, either way */
    _Atomic(struct fp_tables *) tables;
    _Atomic(struct fp_sa_set *) sas; /* encrypted networks */
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

struct fp_worker {
    struct fp_engine *e;
    int epfd;  /* its poll set: TAPs (tx work), receive sockets (rx work), the stop eventfd */
    int slot;  /* FP_WORKER_*: its QSBR state */
    int cpu;   /* pin to this CPU, -1: anywhere */
    int tx, rx; /* which forwarding state it needs for its poll set */
    pthread_t thr;
};

struct fp_engine {
    struct fp_engine_opts o;
    int rxfd;   /* datagrams with a non-zero outer UDP checksum (with steering), else all of them */
    int rxzfd;  /* with steering: datagrams without an outer UDP checksum; -1 without steering */
    int espfd;  /* ESP in UDP (encrypted networks): receives, and sends as txfd[FP_SOCK_ESP]; -1: none */
    char esp_err[128]; /* why there is no ESP socket */
    int ntx;
    int txfd[FP_MAX_TX_SOCKETS + 1];
    uint16_t txport[FP_MAX_TX_SOCKETS];
    int udp_gso, udp_gro;
    int tap_epfd; /* every network's TAP; the transmit worker's poll set */
    int rx_epfd;  /* two workers: the receive worker's poll set; -1 otherwise */
    int evfd;     /* written once to stop the workers */
    _Atomic(struct fp_cfg *) cfg;
    _Atomic(struct fp_ipset *) peers;
    _Atomic(struct fp_spi_map *) spis; /* inbound SAs of all encrypted networks */
    uint64_t sa_ids;                   /* the last SA id handed out */
    _Atomic int stop;
    int started;
    int nworkers;
    struct fp_worker worker[FP_MAX_WORKERS];
    struct fp_qs qs[FP_MAX_WORKERS] __attribute__((aligned(64)));
    _Atomic uint64_t g[FP_GC_SLOTS] __attribute__((aligned(64)));
    pthread_mutex_t ctl;
};

static inline void cnt(_Atomic uint64_t *c, uint64_t v)
{
    /* single writer per counter: a relaxed load+store is enough and costs a plain add */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

static inline void qs_online(struct fp_qs *q) { atomic_store(&q->online, 1); }
static inline void qs_offline(struct fp_qs *q) { atomic_store(&q->online, 0); }
static inline void qs_quiescent(struct fp_qs *q) { atomic_fetch_add(&q->count, 1); }

static inline uint32_t fp_vni_hash(uint32_t v) { return v * 2654435761u; }

/* The network of a VNI in a config (per received packet: inline). */
static inline struct fp_net *fp_cfg_lookup(const struct fp_cfg *c, uint32_t vni)
{
    if (!c || !c->n)
        return NULL;
    for (uint32_t i = fp_vni_hash(vni) & c->mask;; i = (i + 1) & c->mask) {
        struct fp_net *x = c->slots[i];
        if (!x)
            return NULL;
        if (x->vni == vni)
            return x;
    }
}

void fp_seterr(char *err, size_t errlen, const char *what); /* "what: strerror(errno)" */

/* ---- fp_tap.c: frame I/O on a network's TAP ---- */
ssize_t fp_tap_read(const struct fp_net *net, void *buf, size_t size);
int fp_tap_writev(const struct fp_net *net, const struct iovec *iov, int niov); /* < 0: error */

/* ---- fp_udp.c: sockets and batches ---- */
int fp_udp_open_rx(struct fp_engine *e, char *err, size_t errlen);
int fp_udp_open_tx(struct fp_engine *e, char *err, size_t errlen);
int fp_udp_open_esp(struct fp_engine *e, char *err, size_t errlen); /* the ESP-in-UDP socket */

#define FP_RX_BATCH 64     /* datagrams per recvmmsg */
#define FP_RX_BUFSZ 65536  /* one datagram, or one UDP GRO train */
struct fp_dgram {
    const uint8_t *data;
    size_t len;
    size_t seg;    /* UDP GRO: a train of equal-size packets of this size (== len: one packet) */
    uint32_t src;  /* sender, network byte order */
    int truncated;
};
struct fp_udp_rx; /* receive buffers of one worker */
struct fp_udp_rx *fp_udp_rx_new(void);
void fp_udp_rx_free(struct fp_udp_rx *b);
/* One non-blocking recvmmsg on fd. Returns the datagrams (count, <= 0: none) in *out. */
int fp_udp_recv(struct fp_engine *e, struct fp_udp_rx *b, int fd, const struct fp_dgram **out);

/* One message of a transmit batch: where it goes and what it holds (for GSO and counters). */
struct fp_txmsg {
    struct fp_net *net;
    int sock;
    uint32_t vtep;
    uint32_t segsize, lastlen, nseg, bytes;
    int mergeable;
    int iov_end;
    int segiov; /* iovecs per segment (a failed GSO send is resent segment by segment) */
};
/* sendmmsg the batch, per run of messages on one socket; a failed GSO send is resent segment by
 * segment (EIO: the route cannot offload UDP checksums, so GSO is switched off). */
void fp_udp_send(struct fp_engine *e, struct mmsghdr *mm, const struct fp_txmsg *meta, int nmsg);

/* ---- fp_tx.c / fp_rx.c: forwarding state of one worker ---- */
struct fp_tx;
struct fp_tx *fp_tx_new(void);
void fp_tx_free(struct fp_tx *t);
int fp_tx_tap(struct fp_engine *e, struct fp_tx *t, struct fp_net *net, int max); /* frames read */
void fp_tx_flush(struct fp_engine *e, struct fp_tx *t);

struct fp_rx;
struct fp_rx *fp_rx_new(const struct fp_engine *e);
void fp_rx_free(struct fp_rx *r);
int fp_rx_socket(struct fp_engine *e, struct fp_rx *r, int fd); /* one batch; datagrams handled */

#endif
