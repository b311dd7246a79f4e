/* Forwarding UDP -> TAP: each datagram of a receive batch (a UDP GRO train is cut into its VXLAN
 * packets) is checked (header, VNI, allowed sender, not from our own bridge) and its inner frame is
 * offered to the coalescer, which writes trains of TCP segments / UDP datagrams into the TAP as one
 * GSO frame. Everything is written by the end of the batch. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>

#include "fp_engine.h"

struct fp_rx {
    struct fp_udp_rx *io;
    struct fp_gro *gro;
};

static void rx_emit(void *ctx, void *netp, const struct iovec *iov, int niov, int nseg)
{
    struct fp_net *net = netp;
    (void)ctx;
    (void)nseg;
    if (fp_tap_writev(net, iov, niov) < 0)
        cnt(&net->c[FP_NC_RX_TAP_ERRORS], 1);
    else
        cnt(&net->c[FP_NC_RX_TAP_WRITES], 1);
}

struct fp_rx *fp_rx_new(const struct fp_engine *e)
{
    struct fp_rx *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->io = fp_udp_rx_new();
    r->gro = calloc(1, sizeof(*r->gro));
    if (!r->io || !r->gro) {
        fp_rx_free(r);
        return NULL;
    }
    r->gro->verify = e->o.verify_csum;
    r->gro->nflows = e->o.gro_flows;
    return r;
}

void fp_rx_free(struct fp_rx *r)
{
    if (!r)
        return;
    fp_udp_rx_free(r->io);
    free(r->gro);
    free(r);
}

/* One VXLAN packet of a datagram from `src` (allowed: a cluster member, its slot in `peers` + 1). */
static void rx_packet(struct fp_engine *e, struct fp_gro *gro, const struct fp_cfg *cfg, const uint8_t *pk,
                      size_t seg, const struct fp_ipset *peers, int allowed, uint32_t now_s)
{
    uint32_t vni;
    size_t ioff;
    cnt(&e->g[FP_GC_RX_SEGMENTS], 1);
    int rc = fp_decap(pk, seg, &vni, &ioff);
    if (rc != FP_OK) {
        cnt(&e->g[rc == FP_ERR_TRUNCATED ? FP_GC_RX_DROP_TRUNCATED : FP_GC_RX_DROP_MALFORMED], 1);
        return;
    }
    struct fp_net *net = fp_cfg_lookup(cfg, vni);
    if (!net) {
        cnt(&e->g[FP_GC_RX_DROP_UNKNOWN_VNI], 1);
        return;
    }
    if (!allowed) {
        cnt(&net->c[FP_NC_RX_DROP_BAD_SENDER], 1);
        return;
    }
    const uint8_t *inner = pk + ioff;
    if (seg - ioff >= FP_ETH_HLEN && (inner[0] & 1)) {
        /* A broadcast from another host's anycast gateway (a kernel-mode peer floods them):
         * our bridge has the same MAC and would see a frame from itself. */
        const struct fp_tables *tb = atomic_load_explicit(&net->tables, memory_order_acquire);
        if (tb && fp_fdb_is_local(tb, inner + 6)) {
            cnt(&net->c[FP_NC_RX_DROP_LOCAL_SOURCE], 1);
            return;
        }
        if (!fp_ipset_bum_ok(peers, allowed, now_s)) { /* the peer's broadcasts this second */
            cnt(&net->c[FP_NC_RX_DROP_PEER_BUM], 1);
            return;
        }
    }
    cnt(&net->c[FP_NC_RX_PACKETS], 1);
    cnt(&net->c[FP_NC_RX_BYTES], seg - ioff);
    int bad = 0;
    if (fp_gro_offer(gro, net, net->vnet, net->mtu, inner, seg - ioff, rx_emit, e, &bad))
        cnt(&net->c[FP_NC_RX_COALESCED], 1);
    if (bad)
        cnt(&net->c[FP_NC_RX_CSUM_BAD], 1);
}

int fp_rx_socket(struct fp_engine *e, struct fp_rx *r, int fd)
{
    const struct fp_dgram *d;
    int n = fp_udp_recv(e, r->io, fd, &d);
    if (n <= 0)
        return n;
    const struct fp_cfg *cfg = atomic_load(&e->cfg);
    const struct fp_ipset *peers = atomic_load(&e->peers);
    struct fp_gro *gro = r->gro;
    /* with steering, everything on rxfd had a non-zero outer checksum the kernel verified */
    gro->covered = e->rxzfd >= 0 && fd == e->rxfd;
    if (e->rxzfd >= 0 && !gro->covered)
        cnt(&e->g[FP_GC_RX_OUTER_CSUM_ZERO], (uint64_t)n);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now); /* vDSO, once per batch */
    for (int i = 0; i < n; i++) {
        cnt(&e->g[FP_GC_RX_DATAGRAMS], 1);
        if (d[i].truncated) {
            cnt(&e->g[FP_GC_RX_DROP_TRUNCATED], 1);
            continue;
        }
        int allowed = fp_ipset_has(peers, d[i].src);
        for (size_t off = 0; off < d[i].len; off += d[i].seg) {
            size_t seg = d[i].len - off < d[i].seg ? d[i].len - off : d[i].seg;
            rx_packet(e, gro, cfg, d[i].data + off, seg, peers, allowed, (uint32_t)now.tv_sec);
        }
    }
    fp_gro_flush(gro, rx_emit, e);
    return n;
}
