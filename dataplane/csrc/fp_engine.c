/* The fast path engine: the object the Cython module drives. It owns the sockets (fp_udp.c), the
 * networks and their TAPs (fp_tap.c) and the workers (fp_worker.c), which forward with fp_tx.c and
 * fp_rx.c; see fp_engine.h for the map.
 *
 *   transmit: TAP -> read frame (+virtio_net_hdr) -> ARP suppression / FDB lookup / flood list ->
 *             TSO split + inner checksums -> VXLAN -> sendmmsg, with UDP GSO (one sendmsg carries up
 *             to 64 equal-sized VXLAN packets).
 *   receive:  recvmmsg on the VXLAN socket (UDP GRO trains) -> validate header, VNI and sender ->
 *             coalesce in-order TCP segments / equal-size UDP datagrams -> one writev per group.
 *
 * Table updates never stop the workers: the control side builds a new immutable table, swaps the
 * pointer, waits for a grace period (each worker passes a quiescent point or is blocked in a syscall;
 * QSBR as in userspace RCU) and frees the old one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fp_engine.h"

const char *const fp_net_counter_names[FP_NC_MAX] = {
    "rx_packets", "rx_bytes", "rx_coalesced", "rx_tap_writes",
    "rx_drop_bad_sender", "rx_drop_malformed", "rx_csum_bad", "rx_tap_errors",
    "tx_packets", "tx_bytes", "tx_tap_reads", "tx_tso_frames", "tx_flooded",
    "tx_arp_suppressed", "tx_drop_no_dest", "tx_drop_malformed", "tx_errors",
    "tx_local", "rx_drop_local_source", "rx_drop_peer_bum",
    "tx_esp", "tx_drop_no_sa", "tx_drop_seq_exhausted", "tx_drop_seq_unreserved",
    "rx_esp", "rx_drop_cleartext", "rx_drop_replay", "rx_drop_auth", "rx_drop_esp_mismatch",
};
const char *const fp_global_counter_names[FP_GC_MAX] = {
    "rx_datagrams", "rx_segments", "rx_drop_unknown_vni", "rx_drop_malformed",
    "rx_drop_truncated", "rx_errors", "recvmmsg_calls", "sendmmsg_calls",
    "tx_gso_sends", "tx_errors", "rx_outer_csum_zero",
    "rx_esp_datagrams", "rx_drop_no_sa", "rx_drop_esp_malformed",
};

void fp_seterr(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, strerror(errno));
}

/* ------------------------------------------------------------------ QSBR grace periods */

static void synchronize(struct fp_engine *e)
{
    if (!e->started)
        return;
    for (int i = 0; i < FP_MAX_WORKERS; i++) {
        uint64_t snap = atomic_load(&e->qs[i].count);
        while (atomic_load(&e->qs[i].online) && atomic_load(&e->qs[i].count) == snap && !atomic_load(&e->stop)) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* ------------------------------------------------------------------ network config */

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
        uint32_t i = fp_vni_hash(x->vni) & c->mask;
        while (c->slots[i])
            i = (i + 1) & c->mask;
        c->slots[i] = x;
    }
    return c;
}

/* ------------------------------------------------------------------ engine */

static int spi_map_build(const struct fp_cfg *c, uint32_t vni, const struct fp_sa_set *set, struct fp_spi_map **out,
                         char *err, size_t errlen);

struct fp_engine *fp_engine_create(const struct fp_engine_opts *o, char *err, size_t errlen)
{
    struct fp_engine *e;
    if (posix_memalign((void **)&e, 64, sizeof(*e)))
        return NULL;
    memset(e, 0, sizeof(*e));
    e->o = *o;
    e->rxfd = e->rxzfd = e->espfd = e->tap_epfd = e->rx_epfd = e->evfd = -1;
    e->txfd[FP_SOCK_ESP] = -1;
    pthread_mutex_init(&e->ctl, NULL);
    if (e->o.ntx < 1)
        e->o.ntx = 1;
    if (e->o.ntx > FP_MAX_TX_SOCKETS)
        e->o.ntx = FP_MAX_TX_SOCKETS;

    if (fp_udp_open_rx(e, err, errlen) || fp_udp_open_tx(e, err, errlen))
        goto fail;
    /* Without the ESP port (an IKE daemon may hold 4500) plain networks still work; encrypted ones
     * are refused with this reason (fp_engine_add_net). */
    fp_udp_open_esp(e, e->esp_err, sizeof(e->esp_err));
    e->tap_epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->tap_epfd < 0 || e->evfd < 0) {
        fp_seterr(err, errlen, "epoll/eventfd");
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data = {.u64 = EV_EVENTFD}};
    epoll_ctl(e->tap_epfd, EPOLL_CTL_ADD, e->evfd, &ev);
    atomic_store(&e->cfg, cfg_build(NULL, NULL, 0, 0));
    atomic_store(&e->peers, fp_ipset_new(0));
    atomic_store(&e->spis, fp_spi_map_new(0));
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

/* The SAs of `old` that `keep` does not hold any more, then the set itself. */
static void sa_set_release(struct fp_sa_set *old, const struct fp_sa_set *keep)
{
    for (uint32_t i = 0; old && i < old->n; i++)
        if (!fp_sa_in_set(keep, old->all[i]))
            fp_sa_free(old->all[i]);
    fp_sa_set_free(old);
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
    sa_set_release(atomic_load(&n->sas), NULL);
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
    fp_spi_map_free(atomic_load(&e->spis));
    if (e->espfd >= 0)
        close(e->espfd);
    if (e->rxfd >= 0)
        close(e->rxfd);
    if (e->rxzfd >= 0)
        close(e->rxzfd);
    for (int i = 0; i < e->ntx; i++)
        close(e->txfd[i]);
    if (e->tap_epfd >= 0)
        close(e->tap_epfd);
    if (e->evfd >= 0)
        close(e->evfd);
    pthread_mutex_destroy(&e->ctl);
    free(e);
}

const char *fp_engine_esp_error(struct fp_engine *e)
{
    return e->espfd >= 0 ? NULL : e->esp_err;
}

int fp_engine_add_net(struct fp_engine *e, uint32_t vni, const struct fp_tap_info *tap, int persist, int encrypted)
{
    if (encrypted && e->espfd < 0)
        return -EADDRNOTAVAIL;
    pthread_mutex_lock(&e->ctl);
    struct fp_cfg *old = atomic_load(&e->cfg);
    if (fp_cfg_lookup(old, vni)) {
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
    n->encrypted = encrypted; /* before it is published: no frame of it is ever forwarded in the clear */
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
    epoll_ctl(e->tap_epfd, EPOLL_CTL_ADD, n->fd, &ev);
    pthread_mutex_unlock(&e->ctl);
    return 0;
}

int fp_engine_remove_net(struct fp_engine *e, uint32_t vni)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_cfg *old = atomic_load(&e->cfg);
    struct fp_net *n = fp_cfg_lookup(old, vni);
    if (!n) {
        pthread_mutex_unlock(&e->ctl);
        return -ENOENT;
    }
    struct fp_cfg *c = cfg_build(old, NULL, 1, vni);
    if (!c) {
        pthread_mutex_unlock(&e->ctl);
        return -ENOMEM;
    }
    struct fp_spi_map *spis = NULL;
    if (n->encrypted && spi_map_build(c, 0, NULL, &spis, NULL, 0)) {
        cfg_free(c);
        pthread_mutex_unlock(&e->ctl);
        return -ENOMEM;
    }
    epoll_ctl(e->tap_epfd, EPOLL_CTL_DEL, n->fd, NULL);
    atomic_store(&e->cfg, c);
    struct fp_spi_map *old_spis = spis ? atomic_exchange(&e->spis, spis) : NULL;
    synchronize(e);
    cfg_free(old);
    fp_spi_map_free(old_spis);
    net_free(n, 1);
    pthread_mutex_unlock(&e->ctl);
    return 0;
}

/* ------------------------------------------------------------------ SAs of encrypted networks */

static int spec_same(const struct fp_sa_spec *a, const struct fp_sa_spec *b)
{
    return a->dir == b->dir && a->peer == b->peer && a->spi == b->spi && !memcmp(a->key, b->key, FP_ESP_KEYLEN) &&
           !memcmp(a->salt, b->salt, FP_ESP_SALTLEN);
}

/* The inbound SPI map of every network in `c`, with network `vni`'s SAs taken from `set` (when set is
 * not NULL). 0, -ENOMEM, or -EEXIST with the collision described in err. */
static int spi_map_build(const struct fp_cfg *c, uint32_t vni, const struct fp_sa_set *set, struct fp_spi_map **out,
                         char *err, size_t errlen)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct fp_sa_set *s = set && c->list[i]->vni == vni ? set : atomic_load(&c->list[i]->sas);
        n += s ? s->n : 0;
    }
    struct fp_spi_map *m = fp_spi_map_new(n);
    if (!m)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct fp_sa_set *s = set && c->list[i]->vni == vni ? set : atomic_load(&c->list[i]->sas);
        for (uint32_t k = 0; s && k < s->n; k++) {
            struct fp_sa *sa = s->all[k];
            if (sa->dir == FP_SA_IN && fp_spi_map_put(m, sa)) {
                struct fp_sa *other = fp_spi_map_get(m, sa->esp.spi);
                if (err && errlen)
                    snprintf(err, errlen,
                             "SPI 0x%08x of an inbound SA of network %u collides with an inbound SA of network %u "
                             "(epoch %u); rotate the network key",
                             sa->esp.spi, sa->vni, other->vni, other->epoch);
                fp_spi_map_free(m);
                return -EEXIST;
            }
        }
    }
    *out = m;
    return 0;
}

int fp_engine_sync_sas(struct fp_engine *e, uint32_t vni, const struct fp_sa_spec *specs, uint32_t n, char *err,
                       size_t errlen)
{
    pthread_mutex_lock(&e->ctl);
    const struct fp_cfg *c = atomic_load(&e->cfg);
    struct fp_net *net = fp_cfg_lookup(c, vni);
    int rc = 0;
    struct fp_sa **sas = calloc(n ? n : 1, sizeof(*sas));
    struct fp_sa_set *set = NULL;
    struct fp_spi_map *spis = NULL;
    const struct fp_sa_set *cur = net ? atomic_load(&net->sas) : NULL;
    if (!net || !net->encrypted) {
        snprintf(err, errlen, "network %u is %s", vni, net ? "not encrypted" : "unknown");
        rc = net ? -EINVAL : -ENOENT;
        goto out;
    }
    if (!sas) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        int dup = 0;
        for (uint32_t k = 0; k < i && !dup; k++)
            dup = spec_same(&specs[k], &specs[i]); /* listed twice: one SA */
        if (dup)
            continue;
        for (uint32_t k = 0; cur && k < cur->n && !sas[i]; k++)
            if (fp_sa_same(cur->all[k], &specs[i]))
                sas[i] = cur->all[k]; /* the same SA: keeps its sequence number / replay window */
        if (!sas[i]) {
            sas[i] = fp_sa_new(vni, &specs[i], ++e->sa_ids);
            if (!sas[i]) {
                snprintf(err, errlen, "cannot set up SA 0x%08x (libcrypto)", specs[i].spi);
                rc = -ENOMEM;
                goto out;
            }
        }
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (sas[i])
            sas[m++] = sas[i];
    for (uint32_t i = m; i < n; i++)
        sas[i] = NULL;
    set = fp_sa_set_new(sas, m);
    if (!set) {
        rc = errno == EEXIST ? -EEXIST : -ENOMEM;
        if (rc == -EEXIST)
            snprintf(err, errlen, "more than one outbound SA for a peer of network %u", vni);
        goto out;
    }
    rc = spi_map_build(c, vni, set, &spis, err, errlen);
    if (rc)
        goto out;
    struct fp_sa_set *old = atomic_exchange(&net->sas, set);
    struct fp_spi_map *old_spis = atomic_exchange(&e->spis, spis);
    synchronize(e);
    fp_spi_map_free(old_spis);
    sa_set_release(old, set);
    free(sas);
    pthread_mutex_unlock(&e->ctl);
    return (int)m;
out:
    /* undo: free the SAs made for this call (not the ones the current set holds) */
    for (uint32_t i = 0; sas && i < n; i++)
        if (sas[i] && !fp_sa_in_set(cur, sas[i]))
            fp_sa_free(sas[i]);
    fp_sa_set_free(set);
    free(sas);
    pthread_mutex_unlock(&e->ctl);
    return rc;
}

int fp_engine_sa_info(struct fp_engine *e, uint32_t vni, struct fp_sa_info *out, uint32_t cap)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_net *net = fp_cfg_lookup(atomic_load(&e->cfg), vni);
    const struct fp_sa_set *s = net ? atomic_load(&net->sas) : NULL;
    int n = s ? (int)s->n : 0;
    for (uint32_t i = 0; s && i < s->n && i < cap; i++) {
        const struct fp_sa *sa = s->all[i];
        out[i] = (struct fp_sa_info){sa->id, sa->peer, sa->epoch, sa->esp.spi, atomic_load(&sa->seq),
                                     atomic_load(&sa->seq_limit), sa->dir};
    }
    pthread_mutex_unlock(&e->ctl);
    return net ? n : -ENOENT;
}

int fp_engine_sa_set_limit(struct fp_engine *e, uint64_t id, uint32_t limit)
{
    pthread_mutex_lock(&e->ctl);
    const struct fp_cfg *c = atomic_load(&e->cfg);
    int rc = -ENOENT;
    for (uint32_t i = 0; i < c->n && rc; i++) {
        const struct fp_sa_set *s = atomic_load(&c->list[i]->sas);
        for (uint32_t k = 0; s && k < s->n; k++)
            if (s->all[k]->id == id && s->all[k]->dir == FP_SA_OUT) {
                if (limit > atomic_load(&s->all[k]->seq_limit))
                    atomic_store(&s->all[k]->seq_limit, limit);
                rc = 0;
                break;
            }
    }
    pthread_mutex_unlock(&e->ctl);
    return rc;
}

int fp_engine_has_net(struct fp_engine *e, uint32_t vni)
{
    pthread_mutex_lock(&e->ctl);
    int r = fp_cfg_lookup(atomic_load(&e->cfg), vni) != NULL;
    pthread_mutex_unlock(&e->ctl);
    return r;
}

int fp_engine_set_tables(struct fp_engine *e, uint32_t vni, struct fp_tables *t)
{
    pthread_mutex_lock(&e->ctl);
    struct fp_net *n = fp_cfg_lookup(atomic_load(&e->cfg), vni);
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
    struct fp_net *n = fp_cfg_lookup(atomic_load(&e->cfg), vni);
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
    struct fp_net *n = fp_cfg_lookup(atomic_load(&e->cfg), vni);
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
