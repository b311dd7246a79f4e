/* Forwarding UDP -> TAP: each datagram of a receive batch (a UDP GRO train is cut into its VXLAN
 * packets) is checked (header, VNI, allowed sender, not from our own bridge) and its inner frame is
 * offered to the coalescer, which writes trains of TCP segments / UDP datagrams into the TAP as one
 * GSO frame. Everything is written by the end of the batch.
 *
 * Encrypted networks: their VXLAN packets arrive only as ESP on the ESP socket (a GRO train is cut
 * into its ESP packets): SA by SPI, sender = the SA's peer, replay window, decrypt in place, then
 * the inner VNI must be the SA's network. Cleartext VXLAN for an encrypted VNI is dropped. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>

#include "fp_engine.h"

#define ESP_PLAIN_OFF (FP_ESP_HLEN + FP_ESP_IVLEN) /* decrypted in place: the datagram starts here */

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

/* The inner frame of a VXLAN packet of network `net` from a member (its slot in `peers` + 1). */
static void rx_inner(struct fp_engine *e, struct fp_gro *gro, struct fp_net *net, const uint8_t *inner, size_t len,
                     const struct fp_ipset *peers, int allowed, uint32_t now_s)
{
    if (len >= FP_ETH_HLEN && (inner[0] & 1)) {
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
    cnt(&net->c[FP_NC_RX_BYTES], len);
    int bad = 0;
    if (fp_gro_offer(gro, net, net->vnet, net->mtu, inner, len, rx_emit, e, &bad))
        cnt(&net->c[FP_NC_RX_COALESCED], 1);
    if (bad)
        cnt(&net->c[FP_NC_RX_CSUM_BAD], 1);
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
    if (net->encrypted) { /* fail closed: only ESP carries an encrypted network, whoever sent this */
        cnt(&net->c[FP_NC_RX_DROP_CLEARTEXT], 1);
        return;
    }
    if (!allowed) {
        cnt(&net->c[FP_NC_RX_DROP_BAD_SENDER], 1);
        return;
    }
    rx_inner(e, gro, net, pk + ioff, seg - ioff, peers, allowed, now_s);
}

/* One ESP packet of a datagram from `src` (decrypted in place: the receive buffer is this worker's). */
static void rx_esp(struct fp_engine *e, struct fp_gro *gro, const struct fp_cfg *cfg, const struct fp_spi_map *spis,
                   uint8_t *pk, size_t len, uint32_t src, const struct fp_ipset *peers, int allowed, uint32_t now_s)
{
    uint32_t spi, vni;
    size_t plen, ioff;
    cnt(&e->g[FP_GC_RX_SEGMENTS], 1);
    if (fp_esp_spi(pk, len, &spi) != FP_ESP_OK) {
        cnt(&e->g[FP_GC_RX_DROP_ESP_MALFORMED], 1);
        return;
    }
    struct fp_sa *sa = fp_spi_map_get(spis, spi);
    struct fp_net *net = sa ? fp_cfg_lookup(cfg, sa->vni) : NULL;
    if (!net) { /* unknown SPI: never installed, or an epoch that is gone */
        cnt(&e->g[FP_GC_RX_DROP_NO_SA], 1);
        return;
    }
    if (src != sa->peer || !allowed) { /* before spending an AES pass on it */
        cnt(&net->c[FP_NC_RX_DROP_ESP_MISMATCH], 1);
        return;
    }
    int rc = fp_esp_decrypt(&sa->esp, pk, len, pk + ESP_PLAIN_OFF, len - ESP_PLAIN_OFF, &plen);
    if (rc != FP_ESP_OK) {
        if (rc == FP_ESP_ERR_REPLAY || rc == FP_ESP_ERR_TOO_OLD)
            cnt(&net->c[FP_NC_RX_DROP_REPLAY], 1);
        else if (rc == FP_ESP_ERR_MALFORMED)
            cnt(&e->g[FP_GC_RX_DROP_ESP_MALFORMED], 1);
        else
            cnt(&net->c[FP_NC_RX_DROP_AUTH], 1);
        return;
    }
    atomic_store_explicit(&sa->seq, sa->esp.replay_top, memory_order_relaxed);
    const uint8_t *dg = pk + ESP_PLAIN_OFF; /* inner UDP header + VXLAN packet */
    if (plen < 8 || (size_t)(dg[4] << 8 | dg[5]) != plen ||
        fp_decap(dg + 8, plen - 8, &vni, &ioff) != FP_OK) {
        cnt(&e->g[FP_GC_RX_DROP_ESP_MALFORMED], 1);
        return;
    }
    if (vni != sa->vni) { /* authentic, but it claims another network than its key's */
        cnt(&net->c[FP_NC_RX_DROP_ESP_MISMATCH], 1);
        return;
    }
    cnt(&net->c[FP_NC_RX_ESP], 1);
    rx_inner(e, gro, net, dg + 8 + ioff, plen - 8 - ioff, peers, allowed, now_s);
}

int fp_rx_socket(struct fp_engine *e, struct fp_rx *r, int fd)
{
    const struct fp_dgram *d;
    int n = fp_udp_recv(e, r->io, fd, &d);
    if (n <= 0)
        return n;
    const struct fp_cfg *cfg = atomic_load(&e->cfg);
    const struct fp_ipset *peers = atomic_load(&e->peers);
    const struct fp_spi_map *spis = atomic_load(&e->spis);
    struct fp_gro *gro = r->gro;
    int esp = e->espfd >= 0 && fd == e->espfd;
    /* with steering, everything on rxfd had a non-zero outer checksum the kernel verified; an ESP
     * packet's ICV authenticates every byte of the datagram it carries */
    gro->covered = esp || (e->rxzfd >= 0 && fd == e->rxfd);
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
        if (esp)
            cnt(&e->g[FP_GC_RX_ESP_DATAGRAMS], 1);
        for (size_t off = 0; off < d[i].len; off += d[i].seg) {
            size_t seg = d[i].len - off < d[i].seg ? d[i].len - off : d[i].seg;
            if (esp)
                rx_esp(e, gro, cfg, spis, (uint8_t *)d[i].data + off, seg, d[i].src, peers, allowed,
                       (uint32_t)now.tv_sec);
            else
                rx_packet(e, gro, cfg, d[i].data + off, seg, peers, allowed, (uint32_t)now.tv_sec);
        }
    }
    fp_gro_flush(gro, rx_emit, e);
    return n;
}
