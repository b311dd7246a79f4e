/* Forwarding TAP -> UDP: each frame read from a network's TAP is classified (ARP suppression, FDB,
 * flood list), TSO/USO frames are split into segments with their checksums, every packet gets its
 * VXLAN header, and the batch goes out as UDP GSO sends grouped by (socket, VTEP).
 *
 * Encrypted networks: every VXLAN datagram is sealed (fp_esp.c) with the peer's outbound SA into the
 * ESP arena, one ESP packet per segment, and leaves on the ESP socket; a GSO train of sealed segments
 * is still one send. There is no other way out for them: q_small and tx_tso branch to the sealing
 * code on net->encrypted, and without an SA or a reserved sequence number nothing is sent. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fp_engine.h"

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
#define TX_ESP_ARENA (4 << 20) /* sealed packets of one batch (about the size of its frames) */
#define TX_ESP_ALIGN(n) (((n) + 63) & ~(size_t)63)

struct txq {
    struct mmsghdr mm[TX_MAXMSG];
    struct sockaddr_in sa[TX_MAXMSG];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } cm[TX_MAXMSG];
    struct fp_txmsg meta[TX_MAXMSG];
    struct iovec iov[TX_MAXIOV];
    int niov, nmsg;
    uint8_t scratch[TX_SCRATCH];
    size_t sused;
    uint8_t *esp; /* TX_ESP_ARENA bytes: sealed ESP packets the queued messages point into */
    size_t eused;
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

static void q_flush(struct fp_engine *e, struct txq *q)
{
    fp_udp_send(e, q->mm, q->meta, q->nmsg);
    q->nmsg = 0;
}

/* Make room for `iovs` iovecs, `scratch` header bytes and `esp` sealed bytes; may send everything
 * pending. */
static void q_reserve(struct fp_engine *e, struct txq *q, int iovs, size_t scratch, size_t esp)
{
    if (q->niov + iovs > TX_MAXIOV || q->sused + scratch > TX_SCRATCH || q->eused + esp > TX_ESP_ARENA) {
        q_flush(e, q);
        q->niov = 0;
        q->sused = 0;
        q->eused = 0;
    }
}

/* Queue one message to `vtep` over iov[first .. first+niov): nseg segments of segsize bytes (the
 * last may be shorter: lastlen). Small frames to the same destination merge into one GSO send. */
static void q_msg(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, uint32_t vtep, int first,
                  int niov, uint32_t nseg, uint32_t segsize, uint32_t lastlen, uint32_t bytes, int mergeable)
{
    if (mergeable && e->udp_gso && q->nmsg > 0) {
        struct fp_txmsg *m = &q->meta[q->nmsg - 1];
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
    q->sa[i].sin_port = htons(sock == FP_SOCK_ESP ? e->o.esp_port : e->o.port);
    q->sa[i].sin_addr.s_addr = vtep;
    h->msg_name = &q->sa[i];
    h->msg_namelen = sizeof(q->sa[i]);
    h->msg_iov = &q->iov[first];
    h->msg_iovlen = niov;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    struct fp_txmsg *m = &q->meta[i];
    m->net = net;
    m->sock = sock;
    m->vtep = vtep;
    m->segsize = segsize;
    m->lastlen = lastlen;
    m->nseg = nseg;
    m->bytes = bytes;
    m->mergeable = mergeable;
    m->iov_end = first + niov;
    m->segiov = sock == FP_SOCK_ESP ? 1 : 2;
    if (nseg > 1) {
        set_gso(q, i, (uint16_t)segsize);
        cnt(&e->g[FP_GC_TX_GSO_SENDS], 1);
    }
}

/* Seal one VXLAN datagram for the peer of `sa` into `out` (cap bytes): inner UDP header (source port
 * the flow's, like a plain send) + `pieces` (VXLAN header, frame). Returns the ESP length, or 0 when
 * it must not be sent (counted). The sequence number is taken before sealing and never given back. */
static size_t seal(struct fp_engine *e, struct fp_net *net, struct fp_sa *sa, int sock, const struct iovec *pieces,
                   size_t len, uint8_t *out, size_t cap)
{
    uint32_t seq = atomic_load_explicit(&sa->seq, memory_order_relaxed);
    if (seq == UINT32_MAX) { /* 32-bit space used up: only a new SA (key rotation) may send again */
        cnt(&net->c[FP_NC_TX_DROP_SEQ_EXHAUSTED], 1);
        return 0;
    }
    if (seq >= atomic_load_explicit(&sa->seq_limit, memory_order_acquire)) { /* not durably reserved yet */
        cnt(&net->c[FP_NC_TX_DROP_SEQ_UNRESERVED], 1);
        return 0;
    }
    atomic_store_explicit(&sa->seq, ++seq, memory_order_relaxed);
    uint16_t sport = e->txport[sock < e->ntx ? sock : 0], dport = e->o.port, ulen = (uint16_t)(8 + len);
    uint8_t udp[8] = {sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, ulen >> 8, ulen & 0xff, 0, 0};
    struct iovec iov[3] = {{udp, sizeof(udp)}, pieces[0], pieces[1]};
    long r = fp_esp_encrypt_iov(&sa->esp, seq, iov, 3, out, cap);
    if (r <= 0) {
        cnt(&net->c[FP_NC_TX_ERRORS], 1);
        return 0;
    }
    cnt(&net->c[FP_NC_TX_ESP], 1);
    return (size_t)r;
}

/* A small frame of an encrypted network: one sealed ESP packet to `vtep`. */
static void q_small_esp(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, uint32_t vtep,
                        const uint8_t *f, size_t len, int mergeable)
{
    struct fp_sa *sa = fp_sa_out(atomic_load_explicit(&net->sas, memory_order_acquire), vtep);
    if (!sa) {
        cnt(&net->c[FP_NC_TX_DROP_NO_SA], 1);
        return;
    }
    size_t need = fp_esp_sealed_len(8 + FP_VXLAN_HLEN + len);
    q_reserve(e, q, 1, 0, TX_ESP_ALIGN(need));
    uint8_t *out = q->esp + q->eused;
    const struct iovec pieces[2] = {{net->vxhdr, FP_VXLAN_HLEN}, {(void *)f, len}};
    size_t n = seal(e, net, sa, sock, pieces, FP_VXLAN_HLEN + len, out, need);
    if (!n)
        return;
    q->eused += TX_ESP_ALIGN(n);
    int first = q->niov;
    q->iov[q->niov].iov_base = out;
    q->iov[q->niov++].iov_len = n;
    q_msg(e, q, net, FP_SOCK_ESP, vtep, first, 1, 1, (uint32_t)n, (uint32_t)n, (uint32_t)n, mergeable);
}

static void q_small(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, uint32_t vtep,
                    const uint8_t *f, size_t len, int mergeable)
{
    if (net->encrypted) {
        q_small_esp(e, q, net, sock, vtep, f, len, mergeable);
        return;
    }
    q_reserve(e, q, 2, 0, 0);
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
    if (fp_tap_writev(net, iov, n) < 0)
        cnt(&net->c[FP_NC_TX_ERRORS], 1);
}

/* How many of the segments left in `st` go into the next send: one UDP GSO train, at most. */
static uint32_t gso_chunk(const struct fp_engine *e, const struct fp_tso *st, uint32_t segsize)
{
    uint32_t per = FP_MAX_GSO_BYTES / segsize, left = st->nseg - st->index;
    if (per > FP_MAX_GSO_SEGS)
        per = FP_MAX_GSO_SEGS;
    if (per < 1 || !e->udp_gso)
        per = 1;
    return left < per ? left : per;
}

/* A TSO/USO frame of an encrypted network: per destination (each has its own SA) the frame is split
 * again and every segment sealed into the ESP arena; up to a GSO train of them is one send. */
static void tx_tso_esp(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, const uint32_t *dst,
                       uint32_t nd, const uint8_t *f, size_t len, const struct fp_vnet_hdr *vh)
{
    const struct fp_sa_set *sas = atomic_load_explicit(&net->sas, memory_order_acquire);
    int counted = 0;
    q_pend_emit(e, q);
    for (uint32_t d = 0; d < nd; d++) {
        struct fp_sa *sa = fp_sa_out(sas, dst[d]);
        if (!sa) {
            cnt(&net->c[FP_NC_TX_DROP_NO_SA], 1);
            continue;
        }
        struct fp_tso st;
        if (fp_tso_init(&st, f, len, vh)) {
            cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
            return;
        }
        if (!counted++)
            cnt(&net->c[FP_NC_TX_TSO_FRAMES], 1);
        size_t hsz = FP_VXLAN_HLEN + st.hlen;
        uint32_t segsize = (uint32_t)fp_esp_sealed_len(8 + hsz + st.mss);
        while (st.index < st.nseg) {
            uint32_t chunk = gso_chunk(e, &st, segsize);
            q_reserve(e, q, (int)chunk, 0, chunk * TX_ESP_ALIGN(segsize));
            int first = q->niov;
            uint32_t bytes = 0, lastlen = 0, sent = 0;
            uint64_t inner = 0;
            for (uint32_t c = 0; c < chunk; c++) {
                uint8_t h[FP_VXLAN_HLEN + FP_MAX_HDRS];
                memcpy(h, net->vxhdr, FP_VXLAN_HLEN);
                const uint8_t *pay;
                size_t pl;
                fp_tso_next(&st, h + FP_VXLAN_HLEN, &pay, &pl);
                const struct iovec pieces[2] = {{h, hsz}, {(void *)pay, pl}};
                uint8_t *out = q->esp + q->eused;
                size_t n = seal(e, net, sa, sock, pieces, hsz + pl, out, segsize);
                if (!n)
                    continue;
                q->eused += TX_ESP_ALIGN(n);
                q->iov[q->niov].iov_base = out;
                q->iov[q->niov++].iov_len = n;
                lastlen = (uint32_t)n;
                bytes += lastlen;
                inner += hsz - FP_VXLAN_HLEN + pl;
                sent++;
            }
            if (sent)
                q_msg(e, q, net, FP_SOCK_ESP, dst[d], first, (int)sent, sent, segsize, lastlen, bytes, 0);
            cnt(&net->c[FP_NC_TX_PACKETS], sent);
            cnt(&net->c[FP_NC_TX_BYTES], inner);
        }
    }
}

static void tx_tso(struct fp_engine *e, struct txq *q, struct fp_net *net, int sock, const uint32_t *dst, uint32_t nd,
                   const uint8_t *f, size_t len, const struct fp_vnet_hdr *vh)
{
    if (net->encrypted) {
        tx_tso_esp(e, q, net, sock, dst, nd, f, len, vh);
        return;
    }
    struct fp_tso st;
    if (fp_tso_init(&st, f, len, vh)) {
        cnt(&net->c[FP_NC_TX_DROP_MALFORMED], 1);
        return;
    }
    cnt(&net->c[FP_NC_TX_TSO_FRAMES], 1);
    q_pend_emit(e, q);
    size_t hsz = FP_VXLAN_HLEN + st.hlen;
    uint32_t segsize = (uint32_t)(hsz + st.mss);
    while (st.index < st.nseg) {
        uint32_t chunk = gso_chunk(e, &st, segsize);
        q_reserve(e, q, (int)(2 * chunk), chunk * ((hsz + 7) & ~(size_t)7), 0);
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
    uint8_t reply[FP_ARP_REPLY_LEN];
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
    if (net->encrypted && nd == 1 && !fp_sa_out(atomic_load_explicit(&net->sas, memory_order_acquire), dst[0])) {
        cnt(&net->c[FP_NC_TX_DROP_NO_SA], 1); /* fail closed: no SA, nothing leaves */
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
    if (net->encrypted) { /* a flood: sealed per destination, each with its own SA */
        for (uint32_t d = 0; d < nd; d++)
            q_small_esp(e, q, net, sock, dst[d], f, len, nd == 1);
        cnt(&net->c[FP_NC_TX_BYTES], (uint64_t)len * nd);
        return;
    }
    q_reserve(e, q, 2, 0, 0);
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

/* Transmit state of one worker: frame buffers (TAP reads) and the pending sendmmsg queue. */
struct fp_tx {
    uint8_t *arena;
    struct txq *q;
    size_t used; /* arena bytes holding frames the queue may still point into */
    int nframes;
};

struct fp_tx *fp_tx_new(void)
{
    struct fp_tx *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->arena = aligned_alloc(64, TX_ARENA);
    t->q = calloc(1, sizeof(*t->q));
    if (t->q)
        t->q->esp = aligned_alloc(64, TX_ESP_ARENA);
    if (!t->arena || !t->q || !t->q->esp) {
        fp_tx_free(t);
        return NULL;
    }
    return t;
}

void fp_tx_free(struct fp_tx *t)
{
    if (!t)
        return;
    free(t->arena);
    if (t->q)
        free(t->q->esp);
    free(t->q);
    free(t);
}

void fp_tx_flush(struct fp_engine *e, struct fp_tx *t)
{
    q_pend_emit(e, t->q);
    q_flush(e, t->q);
    t->q->niov = 0;
    t->q->sused = 0;
    t->q->eused = 0;
    t->used = 0;
    t->nframes = 0;
}

/* Read what the TAP of `net` holds (up to `max` frames) and queue it. Returns frames read. */
int fp_tx_tap(struct fp_engine *e, struct fp_tx *t, struct fp_net *net, int max)
{
    const struct fp_tables *tb = atomic_load_explicit(&net->tables, memory_order_acquire);
    int got = 0;
    for (; got < max; got++) {
        if (TX_ARENA - t->used < TX_BUFSZ || t->nframes == TX_PEND)
            fp_tx_flush(e, t);
        uint8_t *b = t->arena + t->used;
        ssize_t r = fp_tap_read(net, b, TX_BUFSZ);
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            /* the TAP is gone (its namespace was deleted): stop polling it */
            epoll_ctl(e->tap_epfd, EPOLL_CTL_DEL, net->fd, NULL);
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
