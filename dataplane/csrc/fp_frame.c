/* Pure frame logic of the fast path: no I/O, no allocation, no global state. */
#include <arpa/inet.h>
#include <string.h>

#include "fp.h"

#define ETH_P_IPV4 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

/* ------------------------------------------------------------------ checksums */

/* Sum of the buffer as native-endian 16-bit words (RFC 1071: the one's complement sum is
 * byte-order independent, so storing the folded result natively gives the right bytes).
 * 32-bit loads into four 64-bit accumulators: no carries to track for any length < 2^32. */
static uint64_t csum_scalar(const void *buf, size_t len, uint64_t acc)
{
    const uint8_t *p = buf;
    uint64_t s0 = acc, s1 = 0, s2 = 0, s3 = 0;
    while (len >= 32) {
        uint32_t w[8];
        memcpy(w, p, 32);
        s0 += (uint64_t)w[0] + w[4];
        s1 += (uint64_t)w[1] + w[5];
        s2 += (uint64_t)w[2] + w[6];
        s3 += (uint64_t)w[3] + w[7];
        p += 32;
        len -= 32;
    }
    while (len >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        s0 += w;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        s1 += w;
        p += 2;
        len -= 2;
    }
    if (len) {
        uint8_t last[2] = {p[0], 0};
        uint16_t w;
        memcpy(&w, last, 2);
        s2 += w;
    }
    /* fold each 64-bit accumulator to 33 bits first so the final sum cannot overflow */
    s0 = (s0 & 0xffffffffu) + (s0 >> 32);
    s1 = (s1 & 0xffffffffu) + (s1 >> 32);
    s2 = (s2 & 0xffffffffu) + (s2 >> 32);
    s3 = (s3 & 0xffffffffu) + (s3 >> 32);
    return s0 + s1 + s2 + s3;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* AVX2: 32 bytes per load, each 64-bit lane split into its two 32-bit halves and added into 64-bit
 * lane accumulators (no carries to track for any length < 2^32). About 3x the scalar loop on
 * payload-sized buffers. Compiled for AVX2 only here; used only when the CPU has it. */
__attribute__((target("avx2"))) static uint64_t csum_avx2(const uint8_t *p, size_t len, uint64_t acc)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    const __m256i lo = _mm256_set1_epi64x(0xffffffff);
    while (len >= 64) {
        __m256i x = _mm256_loadu_si256((const __m256i *)p), y = _mm256_loadu_si256((const __m256i *)(p + 32));
        s0 = _mm256_add_epi64(s0, _mm256_and_si256(x, lo));
        s1 = _mm256_add_epi64(s1, _mm256_srli_epi64(x, 32));
        s0 = _mm256_add_epi64(s0, _mm256_and_si256(y, lo));
        s1 = _mm256_add_epi64(s1, _mm256_srli_epi64(y, 32));
        p += 64;
        len -= 64;
    }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(s0, s1));
    acc = (acc & 0xffffffffu) + (acc >> 32);
    for (int i = 0; i < 4; i++)
        acc += (t[i] & 0xffffffffu) + (t[i] >> 32);
    return csum_scalar(p, len, acc);
}

static int have_avx2 = -1;
#endif

uint64_t fp_csum_partial(const void *buf, size_t len, uint64_t acc)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (len >= 128) {
        if (__builtin_expect(have_avx2 < 0, 0)) {
            __builtin_cpu_init();
            have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
        }
        if (have_avx2)
            return csum_avx2(buf, len, acc);
    }
#endif
    return csum_scalar(buf, len, acc);
}

void fp_csum_allow_avx2(int allow)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    have_avx2 = allow && __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    (void)allow;
#endif
}

int fp_csum_impl(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static const uint8_t z[128];
    fp_csum_partial(z, sizeof(z), 0);
    return have_avx2 == 1;
#else
    return 0;
#endif
}

uint16_t fp_csum_fold(uint64_t a)
{
    a = (a & 0xffffffffu) + (a >> 32);
    a = (a & 0xffffffffu) + (a >> 32);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    return (uint16_t)a;
}

uint64_t fp_pseudo_v4(const uint8_t *iph, uint8_t proto, uint32_t l4len)
{
    uint64_t s = fp_csum_partial(iph + 12, 8, 0);
    return s + htons(proto) + htons((uint16_t)l4len);
}

uint64_t fp_pseudo_v6(const uint8_t *ip6h, uint8_t proto, uint32_t l4len)
{
    uint64_t s = fp_csum_partial(ip6h + 8, 32, 0);
    return s + htons(proto) + htons((uint16_t)(l4len >> 16)) + htons((uint16_t)(l4len & 0xffff));
}

static inline void store_csum(uint8_t *p, uint16_t c) { memcpy(p, &c, 2); }

static void ipv4_header_csum(uint8_t *ip, size_t ihl)
{
    ip[10] = ip[11] = 0;
    store_csum(ip + 10, (uint16_t)~fp_csum_fold(fp_csum_partial(ip, ihl, 0)));
}

int fp_finish_csum(uint8_t *frame, size_t len, uint16_t csum_start, uint16_t csum_offset)
{
    if ((size_t)csum_start + csum_offset + 2 > len)
        return -1;
    uint16_t c = (uint16_t)~fp_csum_fold(fp_csum_partial(frame + csum_start, len - csum_start, 0));
    if (c == 0)
        c = 0xffff; /* like the kernel's skb_checksum_help: 0 means "no checksum" for UDP */
    store_csum(frame + csum_start + csum_offset, c);
    return 0;
}

/* ------------------------------------------------------------------ VXLAN */

void fp_vxlan_header(uint8_t out[8], uint32_t vni)
{
    out[0] = 0x08;
    out[1] = out[2] = out[3] = 0;
    out[4] = (vni >> 16) & 0xff;
    out[5] = (vni >> 8) & 0xff;
    out[6] = vni & 0xff;
    out[7] = 0;
}

int fp_decap(const uint8_t *pkt, size_t len, uint32_t *vni, size_t *inner_off)
{
    if (len < FP_VXLAN_HLEN + FP_ETH_HLEN)
        return FP_ERR_TRUNCATED;
    /* Like the kernel without GBP/GPE extensions: exactly the I flag, all reserved bits zero. */
    if (pkt[0] != 0x08 || pkt[1] || pkt[2] || pkt[3] || pkt[7])
        return FP_ERR_BAD_FLAGS;
    const uint8_t *src = pkt + FP_VXLAN_HLEN + 6;
    /* A multicast or all-zero source MAC is not a valid Ethernet frame (the bridge drops it too). */
    if ((src[0] & 1) || !(src[0] | src[1] | src[2] | src[3] | src[4] | src[5]))
        return FP_ERR_BAD_INNER;
    *vni = ((uint32_t)pkt[4] << 16) | ((uint32_t)pkt[5] << 8) | pkt[6];
    *inner_off = FP_VXLAN_HLEN;
    return FP_OK;
}

/* ------------------------------------------------------------------ flow hash */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
    while (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        h = mix64(h ^ w);
        p += 4;
        n -= 4;
    }
    while (n--)
        h = mix64(h ^ *p++);
    return h;
}

/* Hash of the inner flow: L3 addresses + protocol + L4 ports when there are any, else the
 * Ethernet addresses and type. Same idea as the kernel's skb_get_hash() feeding udp_flow_src_port(). */
uint32_t fp_flow_hash(const uint8_t *frame, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    if (len < FP_ETH_HLEN)
        return (uint32_t)mix64(h ^ len);
    size_t l3 = FP_ETH_HLEN;
    uint16_t et = rd16(frame + 12);
    if (et == ETH_P_8021Q && len >= 18) {
        et = rd16(frame + 16);
        l3 = 18;
    }
    if (et == ETH_P_IPV4 && len >= l3 + 20) {
        const uint8_t *ip = frame + l3;
        size_t ihl = (ip[0] & 0xf) * 4u;
        uint8_t proto = ip[9];
        h = hash_bytes(h, ip + 12, 8);
        h = mix64(h ^ proto);
        int frag = (rd16(ip + 6) & 0x3fff) != 0;
        if (!frag && ihl >= 20 && len >= l3 + ihl + 4 && (proto == 6 || proto == 17 || proto == 132))
            h = hash_bytes(h, ip + ihl, 4);
    } else if (et == ETH_P_IPV6 && len >= l3 + 40) {
        const uint8_t *ip = frame + l3;
        uint8_t nh = ip[6];
        h = hash_bytes(h, ip + 8, 32);
        h = mix64(h ^ nh);
        if ((nh == 6 || nh == 17 || nh == 132) && len >= l3 + 44)
            h = hash_bytes(h, ip + 40, 4);
    } else {
        h = hash_bytes(h, frame, 14);
    }
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

/* ------------------------------------------------------------------ TSO */

int fp_tso_init(struct fp_tso *st, const uint8_t *frame, size_t len, const struct fp_vnet_hdr *vh)
{
    int gso = vh->gso_type & ~FP_VNET_GSO_ECN;
    memset(st, 0, sizeof(*st));
    if ((gso != FP_VNET_GSO_TCPV4 && gso != FP_VNET_GSO_TCPV6 && gso != FP_VNET_GSO_UDP_L4) || vh->gso_size == 0 ||
        len < FP_ETH_HLEN + 40)
        return -1;
    size_t l3 = FP_ETH_HLEN, l4;
    uint16_t et = rd16(frame + 12);
    /* UDP GSO (USO) says nothing about the IP version: the frame does */
    int v4 = gso == FP_VNET_GSO_TCPV4 || (gso == FP_VNET_GSO_UDP_L4 && et == ETH_P_IPV4);
    st->proto = gso == FP_VNET_GSO_UDP_L4 ? 17 : 6;
    if (v4) {
        const uint8_t *ip = frame + l3;
        size_t ihl = (ip[0] & 0xf) * 4u;
        if (et != ETH_P_IPV4 || (ip[0] >> 4) != 4 || ihl < 20 || ip[9] != st->proto)
            return -1;
        l4 = l3 + ihl;
        st->id0 = rd16(ip + 4);
    } else {
        const uint8_t *ip = frame + l3;
        if (et != ETH_P_IPV6 || (ip[0] >> 4) != 6 || ip[6] != st->proto)
            return -1;
        l4 = l3 + 40;
        st->is_v6 = 1;
    }
    size_t thl;
    if (st->proto == 17) {
        thl = 8;
        if (len < l4 + thl)
            return -1;
    } else {
        if (len < l4 + 20)
            return -1;
        thl = (frame[l4 + 12] >> 4) * 4u;
    }
    if (thl < 8 || len < l4 + thl || l4 + thl > FP_MAX_HDRS)
        return -1;
    st->frame = frame;
    st->len = len;
    st->l3off = l3;
    st->l4off = l4;
    st->hlen = l4 + thl;
    st->mss = vh->gso_size;
    st->seq0 = rd32(frame + l4 + 4);
    st->next = st->hlen;
    size_t pay = len - st->hlen;
    st->nseg = pay ? (uint32_t)((pay + st->mss - 1) / st->mss) : 1;
    return 0;
}

size_t fp_tso_next(struct fp_tso *st, uint8_t *hdr, const uint8_t **pay, size_t *paylen)
{
    if (st->index >= st->nseg)
        return 0;
    size_t left = st->len - st->next;
    size_t pl = left < st->mss ? left : st->mss;
    int last = st->index == st->nseg - 1;
    size_t thl = st->hlen - st->l4off;
    memcpy(hdr, st->frame, st->hlen);
    uint8_t *ip = hdr + st->l3off, *tcp = hdr + st->l4off;
    if (!st->is_v6) {
        wr16(ip + 2, (uint16_t)(st->hlen - st->l3off + pl));
        wr16(ip + 4, (uint16_t)(st->id0 + st->index)); /* like the kernel's TSO: one IP ID per segment */
        ipv4_header_csum(ip, st->l4off - st->l3off);
    } else {
        wr16(ip + 4, (uint16_t)(thl + pl));
    }
    const uint8_t *p = st->frame + st->next;
    if (st->proto == 17) {
        /* one datagram per segment: its own length and a full checksum (0 is sent as 0xffff) */
        wr16(tcp + 4, (uint16_t)(8 + pl));
        tcp[6] = tcp[7] = 0;
        uint64_t u = st->is_v6 ? fp_pseudo_v6(ip, 17, (uint32_t)(8 + pl)) : fp_pseudo_v4(ip, 17, (uint32_t)(8 + pl));
        u = fp_csum_partial(tcp, 8, u);
        u = fp_csum_partial(p, pl, u);
        uint16_t c = (uint16_t)~fp_csum_fold(u);
        store_csum(tcp + 6, c ? c : 0xffff);
        *pay = p;
        *paylen = pl;
        st->next += pl;
        st->index++;
        return st->hlen;
    }
    wr32(tcp + 4, st->seq0 + st->index * st->mss);
    uint8_t flags = tcp[13];
    if (!last)
        flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (st->index > 0)
        flags &= (uint8_t)~TCP_CWR;
    tcp[13] = flags;
    tcp[16] = tcp[17] = 0;
    uint64_t s = st->is_v6 ? fp_pseudo_v6(ip, 6, (uint32_t)(thl + pl)) : fp_pseudo_v4(ip, 6, (uint32_t)(thl + pl));
    s = fp_csum_partial(tcp, thl, s);
    s = fp_csum_partial(p, pl, s);
    store_csum(tcp + 16, (uint16_t)~fp_csum_fold(s));
    *pay = p;
    *paylen = pl;
    st->next += pl;
    st->index++;
    return st->hlen;
}

/* ------------------------------------------------------------------ GRO */

/* Inner L3/L4 of a received frame: IPv4 (not a fragment) or IPv6 without extension headers,
 * carrying TCP or UDP with consistent lengths. */
struct l4info {
    size_t l4off, hlen; /* hlen: headers up to the end of the TCP/UDP header */
    uint32_t l4len;
    uint8_t proto;
    int is_v6, ihl_plain, csum_off;
};

static int parse_l4(const uint8_t *f, size_t len, struct l4info *x)
{
    if (len < FP_ETH_HLEN + 28)
        return 0;
    uint16_t et = rd16(f + 12);
    const uint8_t *ip = f + FP_ETH_HLEN;
    size_t iplen, l4;
    if (et == ETH_P_IPV4) {
        size_t ihl = (ip[0] & 0xf) * 4u;
        if ((ip[0] >> 4) != 4 || ihl < 20 || (rd16(ip + 6) & 0x3fff))
            return 0;
        iplen = rd16(ip + 2);
        if (iplen < ihl || FP_ETH_HLEN + iplen > len)
            return 0;
        l4 = FP_ETH_HLEN + ihl;
        x->proto = ip[9];
        x->is_v6 = 0;
        x->ihl_plain = ihl == 20;
    } else if (et == ETH_P_IPV6) {
        if (len < FP_ETH_HLEN + 48 || (ip[0] >> 4) != 6)
            return 0;
        iplen = 40 + (size_t)rd16(ip + 4);
        if (FP_ETH_HLEN + iplen > len)
            return 0;
        l4 = FP_ETH_HLEN + 40;
        x->proto = ip[6];
        x->is_v6 = 1;
        x->ihl_plain = 1;
    } else {
        return 0;
    }
    size_t end = FP_ETH_HLEN + iplen;
    if (x->proto == 6) {
        if (l4 + 20 > end)
            return 0;
        size_t thl = (f[l4 + 12] >> 4) * 4u;
        if (thl < 20 || l4 + thl > end || l4 + thl > FP_MAX_HDRS)
            return 0;
        x->hlen = l4 + thl;
        x->csum_off = 16;
    } else if (x->proto == 17) {
        if (l4 + 8 > end)
            return 0;
        x->hlen = l4 + 8;
        x->csum_off = 6;
    } else {
        return 0;
    }
    x->l4off = l4;
    x->l4len = (uint32_t)(end - l4);
    return 1;
}

enum { CS_UNKNOWN = 0, CS_OK = 1, CS_PARTIAL = 2, CS_BAD = 3 };

/* Is the L4 checksum complete and right, or only the pseudo-header sum (CHECKSUM_PARTIAL)?
 * The second happens for real: a kernel VXLAN peer on the same machine (veth underlay) sends
 * inner packets whose checksum is left to "hardware"; the UDP socket hands them to us as they are.
 * The kernel trusts such packets; we pass them on as NEEDS_CSUM so the TAP does the same. */
static int l4_csum_state(const uint8_t *f, const struct l4info *x, int verify, int covered)
{
    const uint8_t *ip = f + FP_ETH_HLEN, *l4 = f + x->l4off;
    uint16_t field;
    memcpy(&field, l4 + x->csum_off, 2);
    if (x->proto == 17 && !x->is_v6 && field == 0)
        return CS_OK; /* IPv4 UDP without checksum */
    uint64_t ps = x->is_v6 ? fp_pseudo_v6(ip, x->proto, x->l4len) : fp_pseudo_v4(ip, x->proto, x->l4len);
    if (covered) {
        /* The outer UDP checksum covers every byte of the inner frame and the kernel verified it:
         * the bytes are what the sender sent (as after CHECKSUM_UNNECESSARY on the outer header).
         * Only a checksum the sender left as the pseudo-header sum still has to be told apart: it
         * must stay NEEDS_CSUM, or a frame forwarded on from here would leave with it. */
        uint16_t p = fp_csum_fold(ps);
        if (field == p || (p == 0xffff && field == 0) || (p == 0 && field == 0xffff))
            return CS_PARTIAL;
        return CS_OK;
    }
    if (verify) {
        if (!x->is_v6 && fp_csum_fold(fp_csum_partial(ip, x->l4off - FP_ETH_HLEN, 0)) != 0xffff)
            return CS_BAD;
        if (fp_csum_fold(fp_csum_partial(l4, x->l4len, ps)) == 0xffff)
            return CS_OK;
    }
    uint16_t p = fp_csum_fold(ps);
    if (field == p || (p == 0xffff && field == 0) || (p == 0 && field == 0xffff))
        return CS_PARTIAL;
    return verify ? CS_BAD : CS_UNKNOWN;
}

static void emit_single(void *net, int vnet, const uint8_t *f, size_t len, const struct l4info *x, int state,
                        fp_emit_fn emit, void *ctx)
{
    struct fp_vnet_hdr vh = {0, 0, 0, 0, 0, 0};
    struct iovec iov[2];
    int n = 0;
    if (vnet) {
        if (state == CS_OK && x) {
            vh.flags = FP_VNET_F_DATA_VALID;
        } else if (state == CS_PARTIAL && x) {
            vh.flags = FP_VNET_F_NEEDS_CSUM;
            vh.csum_start = (uint16_t)x->l4off;
            vh.csum_offset = (uint16_t)x->csum_off;
        }
        iov[n].iov_base = &vh;
        iov[n++].iov_len = FP_VNET_HLEN;
    }
    iov[n].iov_base = (void *)f;
    iov[n++].iov_len = len;
    emit(ctx, net, iov, n, 1);
}

/* Same flow as the open group: Ethernet header, the IP fields that must not change between
 * segments, ports, and for TCP also ack, flags-free header bytes and every option byte. */
static int same_flow(const struct fp_gro_flow *g, const uint8_t *f, size_t hlen)
{
    const uint8_t *a = g->hdr + FP_VNET_HLEN, *b = f;
    if (hlen != g->hlen || memcmp(a, b, FP_ETH_HLEN))
        return 0;
    const uint8_t *ia = a + FP_ETH_HLEN, *ib = b + FP_ETH_HLEN;
    if (!g->is_v6) {
        /* tos, flags/fragment, ttl, protocol, addresses */
        if (ia[1] != ib[1] || ia[6] != ib[6] || ia[8] != ib[8] || ia[9] != ib[9] || memcmp(ia + 12, ib + 12, 8))
            return 0;
    } else {
        if (memcmp(ia, ib, 4) || ia[7] != ib[7] || memcmp(ia + 8, ib + 8, 32))
            return 0;
    }
    const uint8_t *ta = a + g->l4off, *tb = b + g->l4off;
    if (memcmp(ta, tb, 4))
        return 0; /* ports */
    if (g->proto == 17)
        return 1;
    /* ack, data offset, and every option byte (timestamps included) */
    if (memcmp(ta + 8, tb + 8, 5) || memcmp(ta + 20, tb + 20, hlen - g->l4off - 20))
        return 0;
    return 1;
}

/* Same connection as the group (protocol, addresses, ports): its frames must leave in order, so a
 * frame of it that cannot be merged first flushes the group. */
static int same_key(const struct fp_gro_flow *g, void *net, const uint8_t *f, const struct l4info *x)
{
    if (!g->active || g->net != net || g->proto != x->proto || g->is_v6 != x->is_v6 || g->l4off != x->l4off)
        return 0;
    const uint8_t *ia = g->hdr + FP_VNET_HLEN + FP_ETH_HLEN, *ib = f + FP_ETH_HLEN;
    if (g->is_v6 ? memcmp(ia + 8, ib + 8, 32) : memcmp(ia + 12, ib + 12, 8))
        return 0;
    return memcmp(g->hdr + FP_VNET_HLEN + g->l4off, f + x->l4off, 4) == 0;
}

static void flush_flow(struct fp_gro_flow *g, fp_emit_fn emit, void *ctx)
{
    if (!g->active)
        return;
    g->active = 0;
    struct fp_vnet_hdr vh = {0, 0, 0, 0, 0, 0};
    uint8_t *f = g->hdr + FP_VNET_HLEN;
    uint16_t csum_off = g->proto == 17 ? 6 : 16;
    if (g->nseg == 1) {
        if (g->partial) {
            vh.flags = FP_VNET_F_NEEDS_CSUM;
            vh.csum_start = (uint16_t)g->l4off;
            vh.csum_offset = csum_off;
        } else if (g->verified) {
            vh.flags = FP_VNET_F_DATA_VALID;
        }
    } else {
        uint8_t *ip = f + FP_ETH_HLEN, *l4 = f + g->l4off;
        uint32_t l4len = (uint32_t)(g->hlen - g->l4off) + g->paylen;
        uint64_t ps;
        if (!g->is_v6) {
            wr16(ip + 2, (uint16_t)(20 + l4len));
            ipv4_header_csum(ip, 20);
            ps = fp_pseudo_v4(ip, g->proto, l4len);
        } else {
            wr16(ip + 4, (uint16_t)l4len);
            ps = fp_pseudo_v6(ip, g->proto, l4len);
        }
        if (g->proto == 17) {
            /* UDP GSO: the header describes the whole train; the kernel cuts it back into the
             * original datagrams (all gso_size long but the last) and fills in each length */
            wr16(l4 + 4, (uint16_t)l4len);
            vh.gso_type = FP_VNET_GSO_UDP_L4;
        } else {
            vh.gso_type = g->is_v6 ? FP_VNET_GSO_TCPV6 : FP_VNET_GSO_TCPV4;
        }
        /* CHECKSUM_PARTIAL: the field holds the pseudo-header sum and the kernel completes it when
         * it has to. Every merged segment was verified (or was itself PARTIAL) before merging. */
        store_csum(l4 + csum_off, fp_csum_fold(ps));
        vh.flags = FP_VNET_F_NEEDS_CSUM;
        vh.hdr_len = (uint16_t)g->hlen;
        vh.gso_size = (uint16_t)g->mss;
        vh.csum_start = (uint16_t)g->l4off;
        vh.csum_offset = csum_off;
    }
    memcpy(g->hdr, &vh, FP_VNET_HLEN);
    g->iov[0].iov_base = g->hdr;
    g->iov[0].iov_len = FP_VNET_HLEN + g->hlen;
    emit(ctx, g->net, g->iov, g->niov, (int)g->nseg);
}

/* An inner frame bigger than the TAP's MTU: a GSO super-packet that a kernel VXLAN peer on the same
 * machine sent over veth without segmenting it (its GSO type is UDP_TUNNEL, which a plain UDP socket
 * accepts whole). Its original MSS is lost; segments of MTU size are always right. */
static int emit_super(void *net, const uint8_t *f, size_t len, const struct l4info *x, uint32_t mtu,
                      fp_emit_fn emit, void *ctx)
{
    size_t l3h = x->hlen - FP_ETH_HLEN;
    if (mtu <= l3h + 8 || x->hlen > FP_MAX_HDRS)
        return 0;
    uint8_t hdr[FP_VNET_HLEN + FP_MAX_HDRS];
    struct fp_vnet_hdr vh = {FP_VNET_F_NEEDS_CSUM, 0, (uint16_t)x->hlen, (uint16_t)(mtu - l3h),
                             (uint16_t)x->l4off, (uint16_t)x->csum_off};
    if (x->proto == 6) {
        vh.gso_type = x->is_v6 ? FP_VNET_GSO_TCPV6 : FP_VNET_GSO_TCPV4;
        if (f[x->l4off + 13] & TCP_CWR)
            vh.gso_type |= FP_VNET_GSO_ECN;
    } else {
        vh.gso_type = FP_VNET_GSO_UDP_L4;
    }
    memcpy(hdr, &vh, FP_VNET_HLEN);
    memcpy(hdr + FP_VNET_HLEN, f, x->hlen);
    const uint8_t *ip = f + FP_ETH_HLEN;
    uint64_t ps = x->is_v6 ? fp_pseudo_v6(ip, x->proto, x->l4len) : fp_pseudo_v4(ip, x->proto, x->l4len);
    store_csum(hdr + FP_VNET_HLEN + x->l4off + x->csum_off, fp_csum_fold(ps));
    struct iovec iov[2] = {{hdr, FP_VNET_HLEN + x->hlen}, {(void *)(f + x->hlen), len - x->hlen}};
    emit(ctx, net, iov, 2, 1);
    return 1;
}

static inline uint32_t nslots(const struct fp_gro *g)
{
    return g->nflows > 0 && g->nflows < FP_GRO_FLOWS ? (uint32_t)g->nflows : FP_GRO_FLOWS;
}

void fp_gro_flush(struct fp_gro *g, fp_emit_fn emit, void *ctx)
{
    for (int i = 0; i < g->nopen; i++) {
        flush_flow(&g->flow[g->open[i]], emit, ctx);
        g->flow[g->open[i]].listed = 0;
    }
    g->nopen = 0;
}

/* Direct-mapped, as the kernel's GRO hash: a connection always lands in the same slot, and a
 * different connection in that slot is written out first. */
static struct fp_gro_flow *slot_of(struct fp_gro *g, void *net, const uint8_t *f, const struct l4info *x)
{
    const uint8_t *ip = f + FP_ETH_HLEN;
    uint32_t h = rd32(f + x->l4off) ^ x->proto ^ (uint32_t)(uintptr_t)net;
    if (x->is_v6)
        for (int i = 8; i < 40; i += 4)
            h = (h ^ rd32(ip + i)) * 0x9E3779B1u;
    else
        h = ((h ^ rd32(ip + 12)) * 0x9E3779B1u ^ rd32(ip + 16)) * 0x9E3779B1u;
    return &g->flow[(h >> 16) % nslots(g)];
}

int fp_gro_offer(struct fp_gro *g, void *net, int caps, uint32_t mtu, const uint8_t *f, size_t len,
                 fp_emit_fn emit, void *ctx, int *csum_bad)
{
    struct l4info x;
    int vnet = (caps & FP_TAP_VNET) != 0;
    *csum_bad = 0;
    if (!vnet) {
        /* no virtio_net_hdr: the kernel checks everything itself, nothing to merge */
        fp_gro_flush(g, emit, ctx);
        emit_single(net, 0, f, len, NULL, CS_UNKNOWN, emit, ctx);
        return 0;
    }
    if (!parse_l4(f, len, &x)) {
        /* not TCP/UDP over IP, or a fragment: it may belong to any group, never let it overtake one */
        fp_gro_flush(g, emit, ctx);
        emit_single(net, vnet, f, len, NULL, CS_UNKNOWN, emit, ctx);
        return 0;
    }
    struct fp_gro_flow *slot = slot_of(g, net, f, &x);
    struct fp_gro_flow *fl = same_key(slot, net, f, &x) ? slot : NULL;
    int state = l4_csum_state(f, &x, g->verify, g->covered);
    if (state == CS_BAD)
        *csum_bad = 1; /* handed on untouched: the kernel drops and counts it */
    if (mtu && len > FP_ETH_HLEN + mtu && state != CS_BAD) {
        if (fl)
            flush_flow(fl, emit, ctx);
        if (emit_super(net, f, len, &x, mtu, emit, ctx))
            return 0;
        emit_single(net, vnet, f, len, &x, state, emit, ctx);
        return 0;
    }
    uint32_t paylen = x.l4len - (uint32_t)(x.hlen - x.l4off);
    const uint8_t *l4 = f + x.l4off;
    const uint8_t *ip = f + FP_ETH_HLEN;
    uint8_t flags = x.proto == 6 ? l4[13] : 0;
    int csum_ok = state == CS_OK || state == CS_PARTIAL || state == CS_UNKNOWN;
    int candidate;
    if (x.proto == 6)
        candidate = x.ihl_plain && paylen > 0 && csum_ok && !(flags & ~(TCP_ACK | TCP_PSH)) && (flags & TCP_ACK);
    else
        candidate = (caps & FP_TAP_GSO_UDP) && x.ihl_plain && paylen > 0 && csum_ok && rd16(l4 + 4) == x.l4len;
    if (!candidate) {
        if (fl)
            flush_flow(fl, emit, ctx);
        emit_single(net, vnet, f, len, &x, state, emit, ctx);
        return 0;
    }
    uint32_t seq = x.proto == 6 ? rd32(l4 + 4) : 0;
    /* UDP over IPv4 keeps its datagrams' IP IDs only as a sequence (segmentation numbers them from
     * the first): merge when DF is set (the ID means nothing then) or the IDs already count up. */
    uint16_t id = x.is_v6 ? 0 : rd16(ip + 4);
    int id_ok = x.proto == 6 || x.is_v6 || (ip[6] & 0x40) || (fl && id == fl->next_id);
    size_t hlen = x.hlen;
    if (fl && !fl->closed && same_flow(fl, f, hlen) && seq == fl->next_seq && paylen <= fl->mss && id_ok &&
        (x.proto == 6 || fl->nseg < FP_GRO_MAX_UDP_SEGS) &&
        (hlen - x.l4off) + fl->paylen + paylen + (x.is_v6 ? 0 : 20) <= 65535 && fl->niov < FP_GRO_MAX_IOV) {
        fl->iov[fl->niov].iov_base = (void *)(f + hlen);
        fl->iov[fl->niov++].iov_len = paylen;
        fl->paylen += paylen;
        fl->nseg++;
        fl->next_seq += x.proto == 6 ? paylen : 0;
        fl->next_id = (uint16_t)(id + 1);
        if (flags & TCP_PSH) {
            fl->hdr[FP_VNET_HLEN + fl->l4off + 13] |= TCP_PSH;
            fl->closed = 1;
        }
        if (paylen < fl->mss)
            fl->closed = 1;
        return 1;
    }
    fl = slot;
    flush_flow(fl, emit, ctx);
    if (!fl->listed) {
        fl->listed = 1;
        g->open[g->nopen++] = (uint8_t)(fl - g->flow);
    }
    fl->active = 1;
    fl->net = net;
    fl->verified = state == CS_OK && (g->verify || g->covered);
    fl->partial = state == CS_PARTIAL;
    memcpy(fl->hdr + FP_VNET_HLEN, f, hlen);
    fl->hlen = hlen;
    fl->proto = x.proto;
    fl->next_id = (uint16_t)(id + 1);
    fl->l4off = x.l4off;
    fl->is_v6 = x.is_v6;
    fl->next_seq = x.proto == 6 ? seq + paylen : 0;
    fl->mss = paylen;
    fl->nseg = 1;
    fl->paylen = paylen;
    fl->closed = (flags & TCP_PSH) != 0;
    fl->iov[1].iov_base = (void *)(f + hlen);
    fl->iov[1].iov_len = paylen;
    fl->niov = 2;
    return 0;
}

/* ------------------------------------------------------------------ forwarding decision */

/* An ARP request for a known address: 1 with the reply in `out`; FP_FWD_LOCAL when the address
 * belongs to this host's bridge (which answers it itself); 0 when it goes on as a broadcast. */
static int arp_reply(const struct fp_tables *t, const uint8_t *f, size_t len, uint8_t *out, size_t *out_len)
{
    if (len < FP_ETH_HLEN + 28 || rd16(f + 12) != ETH_P_ARP)
        return 0;
    const uint8_t *a = f + FP_ETH_HLEN;
    /* Ethernet/IPv4 ARP request only */
    if (rd16(a) != 1 || rd16(a + 2) != ETH_P_IPV4 || a[4] != 6 || a[5] != 4 || rd16(a + 6) != 1)
        return 0;
    const uint8_t *sha = a + 8, *spa = a + 14, *tpa = a + 24;
    uint32_t tip;
    memcpy(&tip, tpa, 4);
    uint8_t mac[6];
    if (!fp_arp_lookup(t, tip, mac))
        return 0;
    /* Gratuitous ARP and "who has my own address" go to the wire like any broadcast. */
    if (!memcmp(spa, tpa, 4) || !memcmp(mac, sha, 6))
        return 0;
    if (fp_fdb_is_local(t, mac))
        return FP_FWD_LOCAL;
    memcpy(out, sha, 6);
    memcpy(out + 6, mac, 6);
    wr16(out + 12, ETH_P_ARP);
    uint8_t *r = out + FP_ETH_HLEN;
    wr16(r, 1);
    wr16(r + 2, ETH_P_IPV4);
    r[4] = 6;
    r[5] = 4;
    wr16(r + 6, 2);
    memcpy(r + 8, mac, 6);
    memcpy(r + 14, tpa, 4);
    memcpy(r + 18, sha, 6);
    memcpy(r + 24, spa, 4);
    *out_len = FP_ETH_HLEN + 28;
    return 1;
}

int fp_classify(const struct fp_tables *t, const uint8_t *f, size_t len, uint32_t *vtep, uint8_t *reply,
                size_t *reply_len)
{
    if (len < FP_ETH_HLEN)
        return FP_FWD_DROP;
    if (t) {
        int arp = arp_reply(t, f, len, reply, reply_len);
        if (arp)
            return arp == FP_FWD_LOCAL ? FP_FWD_LOCAL : FP_FWD_ARP_REPLY;
    }
    if (!(f[0] & 1) && t && fp_fdb_lookup(t, f, vtep))
        return *vtep ? FP_FWD_UNICAST : FP_FWD_LOCAL;
    /* The bridge's own broadcasts (the anycast gateway asking for a local container's MAC) stay
     * here: every host's bridge has that MAC, and would see a frame from "itself" arrive. */
    if (t && fp_fdb_is_local(t, f + 6))
        return FP_FWD_LOCAL;
    return FP_FWD_FLOOD; /* broadcast, multicast, unknown unicast: head-end replication */
}
