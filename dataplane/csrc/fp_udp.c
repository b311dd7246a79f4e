/* UDP: the VXLAN receive socket (two, with outer checksum steering) and the transmit sockets, and the
 * batched system calls on them. The forwarding code (fp_rx.c, fp_tx.c) sees only batches. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fp_engine.h"

static int set_int(int fd, int level, int opt, int v) { return setsockopt(fd, level, opt, &v, sizeof(v)); }

/* One receive socket on the VXLAN port: big buffer, UDP GRO, a timeout to notice stop(). */
static int rx_open_one(struct fp_engine *e, const struct sockaddr_in *sa, int *out, int reuseport, char *err,
                       size_t errlen)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fp_seterr(err, errlen, "socket");
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
        fp_seterr(err, errlen, what);
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

/* The receive side: steered (two sockets) when inner checksums are verified and may be trusted
 * under a verified outer one, else one plain socket (whose bind error is the one reported). */
int fp_udp_open_rx(struct fp_engine *e, char *err, size_t errlen)
{
    const struct fp_engine_opts *o = &e->o;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(o->port), .sin_addr = {o->bind_addr}};
    if (o->trust_outer && o->verify_csum && rx_open_steered(e, &sa) == 0)
        return 0; /* datagrams with and without an outer UDP checksum arrive on different sockets */
    return rx_open_one(e, &sa, &e->rxfd, 0, err, errlen);
}

/* Transmit sockets: each bound to an ephemeral port the kernel picks from
 * net.ipv4.ip_local_port_range; a flow hash picks the socket, hence the outer source port. */
int fp_udp_open_tx(struct fp_engine *e, char *err, size_t errlen)
{
    const struct fp_engine_opts *o = &e->o;
    static const struct sock_filter drop_all[] = {{BPF_RET | BPF_K, 0, 0, 0}};
    struct sock_fprog prog = {1, (struct sock_filter *)drop_all};
    e->udp_gso = o->gso;
    for (int i = 0; i < o->ntx; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fp_seterr(err, errlen, "socket");
            return -1;
        }
        e->txfd[i] = fd;
        e->ntx = i + 1;
        struct sockaddr_in s2 = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {o->bind_addr}};
        if (bind(fd, (struct sockaddr *)&s2, sizeof(s2))) {
            fp_seterr(err, errlen, "bind transmit socket");
            return -1;
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
    return 0;
}

/* The ESP socket of encrypted networks (RFC 3948: ESP in UDP, port 4500 by default): one socket that
 * receives (with UDP GRO: a train of equal-size ESP packets) and sends (with UDP GSO), so both ends
 * of every ESP packet are the ESP port. Opened even when no network is encrypted: a peer's ESP for
 * a network this host does not have is then counted (rx_drop_no_sa) instead of refused by ICMP.
 * On failure espfd stays -1 and err says why. */
int fp_udp_open_esp(struct fp_engine *e, char *err, size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(e->o.esp_port), .sin_addr = {e->o.bind_addr}};
    int gro = e->udp_gro;
    if (rx_open_one(e, &sa, &e->espfd, 0, err, errlen))
        return -1;
    e->udp_gro = gro; /* the VXLAN socket's answer stays the one offloads() reports */
    int fd = e->espfd;
    e->txfd[FP_SOCK_ESP] = fd;
    if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20))
        set_int(fd, SOL_SOCKET, SO_SNDBUF, 4 << 20);
    set_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT); /* like the VXLAN transmit sockets */
    if (e->udp_gso && set_int(fd, SOL_UDP, UDP_SEGMENT, 0))
        e->udp_gso = 0;
    return 0;
}

/* ------------------------------------------------------------------ receive batches */

typedef union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
} rx_cbuf_t;

struct fp_udp_rx {
    uint8_t *bufs;
    struct mmsghdr mm[FP_RX_BATCH];
    struct iovec iov[FP_RX_BATCH];
    struct sockaddr_in sa[FP_RX_BATCH];
    rx_cbuf_t cm[FP_RX_BATCH];
    struct fp_dgram out[FP_RX_BATCH];
};

struct fp_udp_rx *fp_udp_rx_new(void)
{
    struct fp_udp_rx *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->bufs = malloc((size_t)FP_RX_BATCH * FP_RX_BUFSZ);
    if (!b->bufs) {
        free(b);
        return NULL;
    }
    for (int i = 0; i < FP_RX_BATCH; i++) {
        b->iov[i].iov_base = b->bufs + (size_t)i * FP_RX_BUFSZ;
        b->iov[i].iov_len = FP_RX_BUFSZ;
        b->mm[i].msg_hdr.msg_iov = &b->iov[i];
        b->mm[i].msg_hdr.msg_iovlen = 1;
    }
    return b;
}

void fp_udp_rx_free(struct fp_udp_rx *b)
{
    if (b)
        free(b->bufs);
    free(b);
}

int fp_udp_recv(struct fp_engine *e, struct fp_udp_rx *b, int fd, const struct fp_dgram **out)
{
    struct mmsghdr *mm = b->mm;
    for (int i = 0; i < FP_RX_BATCH; i++) {
        mm[i].msg_hdr.msg_name = &b->sa[i];
        mm[i].msg_hdr.msg_namelen = sizeof(b->sa[i]);
        mm[i].msg_hdr.msg_control = b->cm[i].buf;
        mm[i].msg_hdr.msg_controllen = sizeof(b->cm[i].buf);
        mm[i].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(fd, mm, FP_RX_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            cnt(&e->g[FP_GC_RX_ERRORS], 1);
        return n;
    }
    cnt(&e->g[FP_GC_RECVMMSG_CALLS], 1);
    for (int i = 0; i < n; i++) {
        struct fp_dgram *d = &b->out[i];
        d->data = b->iov[i].iov_base;
        d->len = mm[i].msg_len;
        d->seg = d->len;
        d->src = b->sa[i].sin_addr.s_addr;
        d->truncated = (mm[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mm[i].msg_hdr); c; c = CMSG_NXTHDR(&mm[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof(v));
                if (v > 0)
                    d->seg = (size_t)v;
            }
        }
    }
    *out = b->out;
    return n;
}

/* ------------------------------------------------------------------ transmit batches */

/* A GSO message whose send failed: send its segments one by one (each is exactly `segiov` iovecs:
 * VXLAN header + frame, or one sealed ESP packet). */
static void send_split(struct fp_engine *e, const struct mmsghdr *mm, const struct fp_txmsg *meta)
{
    struct msghdr m = mm->msg_hdr;
    m.msg_control = NULL;
    m.msg_controllen = 0;
    struct iovec *base = m.msg_iov;
    size_t n = m.msg_iovlen, per = (size_t)meta->segiov;
    for (size_t k = 0; k + per <= n; k += per) {
        m.msg_iov = base + k;
        m.msg_iovlen = per;
        if (sendmsg(e->txfd[meta->sock], &m, 0) < 0)
            cnt(&meta->net->c[FP_NC_TX_ERRORS], 1);
    }
}

void fp_udp_send(struct fp_engine *e, struct mmsghdr *mm, const struct fp_txmsg *meta, int nmsg)
{
    int i = 0;
    while (i < nmsg) {
        int s = meta[i].sock, j = i + 1;
        while (j < nmsg && meta[j].sock == s)
            j++;
        int k = i;
        while (k < j) {
            int r = sendmmsg(e->txfd[s], &mm[k], (unsigned)(j - k), 0);
            cnt(&e->g[FP_GC_SENDMMSG_CALLS], 1);
            if (r > 0) {
                k += r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            int err = errno;
            if (meta[k].nseg > 1) {
                if (err == EIO) /* the route's device cannot do UDP checksum offload: no GSO */
                    e->udp_gso = 0;
                send_split(e, &mm[k], &meta[k]);
            } else {
                cnt(&meta[k].net->c[FP_NC_TX_ERRORS], 1);
                cnt(&e->g[FP_GC_TX_ERRORS], 1);
            }
            k++;
        }
        i = j;
    }
}
