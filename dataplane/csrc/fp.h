/* overlaynet userspace VXLAN fast path: shared types.
 *
 * Split like wireguard-go's tun/ + conn/ + device/:
 *   fp_frame.c  - pure frame logic (checksums, VXLAN decap, TSO split, GRO coalescing, ARP reply,
 *                 flow hash). No I/O; unit-tested through the Cython wrapper.
 *   fp_tables.c - immutable lookup tables (FDB, ARP, IPv4 sets) built by the control side.
 *   fp_esp.c    - ESP codec (AES-GCM, anti-replay window) for encrypted networks. No I/O.
 *   the engine  - fp_engine.c (object, control, RCU-style swaps), fp_tap.c (TAP), fp_udp.c (sockets),
 *                 fp_tx.c / fp_rx.c (forwarding each way), fp_worker.c (threads); see fp_engine.h.
 */
#ifndef OVERLAYNET_FP_H
#define OVERLAYNET_FP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define FP_VXLAN_HLEN 8
#define FP_VNET_HLEN 10 /* struct virtio_net_hdr (no mergeable-rx num_buffers) */
#define FP_ETH_HLEN 14
#define FP_MAX_HDRS 160 /* eth + IPv6/IPv4 with options + TCP with options */
#define FP_MAX_GSO_SEGS 64 /* UDP GSO: segments per sendmsg (kernel limit is >= 64) */
#define FP_MAX_GSO_BYTES 65000 /* UDP GSO: payload bytes per sendmsg (IPv4 limit 65507) */

/* virtio_net_hdr flag and gso_type values (include/uapi/linux/virtio_net.h) */
#define FP_VNET_F_NEEDS_CSUM 1
#define FP_VNET_F_DATA_VALID 2
#define FP_VNET_GSO_NONE 0
#define FP_VNET_GSO_TCPV4 1
#define FP_VNET_GSO_UDP 3
#define FP_VNET_GSO_TCPV6 4
#define FP_VNET_GSO_UDP_L4 5
#define FP_VNET_GSO_ECN 0x80

struct fp_vnet_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
} __attribute__((packed));

/* ---- decapsulation results (negative = drop reason) ---- */
enum {
    FP_OK = 0,
    FP_ERR_TRUNCATED = -1, /* shorter than VXLAN header + Ethernet header */
    FP_ERR_BAD_FLAGS = -2, /* I flag missing or a reserved bit set */
    FP_ERR_BAD_INNER = -3, /* inner frame has a multicast/zero source MAC */
};

/* ---- checksums (Internet checksum, computed in memory byte order like the kernel) ---- */
uint64_t fp_csum_partial(const void *buf, size_t len, uint64_t acc);
uint16_t fp_csum_fold(uint64_t acc); /* folded, not inverted */
int fp_csum_impl(void);              /* 1: the AVX2 loop is in use (CPU has it), 0: the portable one */
void fp_csum_allow_avx2(int allow); /* 0: always the portable loop (for measurements) */
uint64_t fp_pseudo_v4(const uint8_t *iph, uint8_t proto, uint32_t l4len);
uint64_t fp_pseudo_v6(const uint8_t *ip6h, uint8_t proto, uint32_t l4len);

/* ---- VXLAN ---- */
void fp_vxlan_header(uint8_t out[8], uint32_t vni);
int fp_decap(const uint8_t *pkt, size_t len, uint32_t *vni, size_t *inner_off);

/* ---- inner flow hash (outer UDP source port selection, ECMP entropy) ---- */
uint32_t fp_flow_hash(const uint8_t *frame, size_t len);

/* ---- complete a CHECKSUM_PARTIAL frame (virtio NEEDS_CSUM) in place ---- */
int fp_finish_csum(uint8_t *frame, size_t len, uint16_t csum_start, uint16_t csum_offset);

/* ---- TSO: split one large TCP frame into MSS-sized frames, one at a time ---- */
struct fp_tso {
    const uint8_t *frame;
    size_t len;
    size_t l3off, l4off, hlen; /* IP header offset, TCP/UDP header offset, total header length */
    int is_v6;
    uint8_t proto; /* 6: TSO, 17: UDP GSO (USO) */
    uint32_t mss;
    uint32_t seq0;
    uint16_t id0;
    size_t next; /* offset of the next payload byte */
    uint32_t index;
    uint32_t nseg;
};
int fp_tso_init(struct fp_tso *st, const uint8_t *frame, size_t len, const struct fp_vnet_hdr *vh);
/* Writes the next segment's headers (eth+ip+tcp, checksums done) to hdr_out; returns the header
 * length, sets the payload pointer and length, or returns 0 when done. */
size_t fp_tso_next(struct fp_tso *st, uint8_t *hdr_out, const uint8_t **pay, size_t *paylen);

/* ---- GRO: coalesce in-order TCP segments, or equal-size UDP datagrams, of each flow (in up to
 * FP_GRO_FLOWS slots) into one vnet_hdr GSO frame per flow ---- */
#define FP_TAP_VNET 1    /* the TAP takes a virtio_net_hdr */
#define FP_TAP_GSO_UDP 2 /* ... and accepts VIRTIO_NET_HDR_GSO_UDP_L4 on write (kernel >= 6.2) */
#define FP_GRO_MAX_UDP_SEGS 64 /* the kernel's UDP GSO segment limit on older kernels */
#define FP_GRO_MAX_IOV 96
typedef void (*fp_emit_fn)(void *ctx, void *net, const struct iovec *iov, int niov, int ncoalesced);
#define FP_GRO_FLOWS 32 /* slots for flows coalesced at once (direct-mapped by connection) */
struct fp_gro_flow {
    void *net; /* opaque owner (the network); segments of different owners never merge */
    int active;
    int listed; /* in fp_gro.open until the next fp_gro_flush */
    uint8_t hdr[FP_VNET_HLEN + FP_MAX_HDRS];
    size_t hlen; /* eth + ip + tcp/udp, without vnet header */
    uint8_t proto; /* 6: TCP, 17: UDP */
    uint16_t next_id; /* UDP over IPv4 without DF: the IP ID the next datagram must carry */
    size_t l4off;
    int is_v6;
    uint32_t next_seq;
    uint32_t mss;
    uint32_t nseg;
    uint32_t paylen;
    int closed; /* last segment was short or had PSH: nothing more may follow */
    int verified;
    int partial; /* first segment carried only the pseudo-header checksum */
    struct iovec iov[FP_GRO_MAX_IOV];
    int niov;
};
struct fp_gro {
    int verify; /* verify IPv4 header + TCP checksums of segments before merging them */
    int covered; /* set per offer: a checksum the kernel verified (non-zero outer UDP) covers the frame */
    int nflows; /* slots in use, 1..FP_GRO_FLOWS (0: all) */
    int nopen;
    uint8_t open[FP_GRO_FLOWS]; /* slots opened since the last flush, in order */
    struct fp_gro_flow flow[FP_GRO_FLOWS];
};
/* Offer one inner frame (data stays valid until the next fp_gro_flush). `caps` (FP_TAP_*) says
 * whether the TAP takes a virtio_net_hdr (without it nothing is coalesced) and whether it accepts
 * UDP GSO frames (without it UDP datagrams are written one by one). Frames longer than `mtu` (+ Ethernet
 * header) are GSO super-packets and get a GSO description of their own. Returns 1 if the frame was merged
 * into a coalesced group, 0 if emitted on its own. `*csum_bad` is set for TCP with a bad checksum. */
int fp_gro_offer(struct fp_gro *g, void *net, int caps, uint32_t mtu, const uint8_t *frame, size_t len,
                 fp_emit_fn emit, void *ctx, int *csum_bad);
void fp_gro_flush(struct fp_gro *g, fp_emit_fn emit, void *ctx);

/* ---- lookup tables: immutable once built, swapped RCU-style ---- */
struct fp_fdb_ent {
    uint8_t mac[6];
    uint8_t used;
    uint8_t pad;
    uint32_t vtep; /* IPv4, network byte order */
};
struct fp_arp_ent {
    uint32_t ip; /* network byte order */
    uint8_t mac[6];
    uint8_t used;
    uint8_t pad;
};
struct fp_tables {
    uint32_t fdb_mask, nfdb;
    struct fp_fdb_ent *fdb;
    uint32_t arp_mask, narp;
    struct fp_arp_ent *arp;
    uint32_t nflood;
    uint32_t *flood;
};
/* Broadcast/multicast frames one peer sent in the current second (a fixed window: cheap, and only
 * touched for such frames). Shared by the receive workers, hence atomics. */
struct fp_peer_window {
    _Atomic uint32_t second;
    _Atomic uint32_t count;
};

struct fp_ipset {
    uint32_t mask, n;
    uint32_t *slots;               /* 0 = empty (0.0.0.0 is never a VTEP) */
    uint32_t bum_rate;             /* per peer and second; 0 = unlimited */
    struct fp_peer_window *window; /* one per slot */
};

struct fp_tables *fp_tables_new(uint32_t nfdb, uint32_t narp, uint32_t nflood);
int fp_tables_fdb_put(struct fp_tables *t, const uint8_t mac[6], uint32_t vtep);
int fp_tables_arp_put(struct fp_tables *t, uint32_t ip, const uint8_t mac[6]);
int fp_tables_flood_put(struct fp_tables *t, uint32_t vtep);
struct fp_tables *fp_tables_clone(const struct fp_tables *t, int keep_fdb, int keep_arp, int keep_flood,
                                  uint32_t nfdb, uint32_t narp, uint32_t nflood);
void fp_tables_free(struct fp_tables *t);
int fp_fdb_lookup(const struct fp_tables *t, const uint8_t mac[6], uint32_t *vtep);
/* A MAC of this host's own bridge (FDB VTEP 0.0.0.0: FP_FWD_LOCAL). */
int fp_fdb_is_local(const struct fp_tables *t, const uint8_t mac[6]);
int fp_arp_lookup(const struct fp_tables *t, uint32_t ip, uint8_t mac[6]);
struct fp_ipset *fp_ipset_new(uint32_t n);
int fp_ipset_put(struct fp_ipset *s, uint32_t ip);
int fp_ipset_has(const struct fp_ipset *s, uint32_t ip); /* 0: not a member; else its slot + 1 */
/* Whether the member at `slot1` (fp_ipset_has's answer) may send one more broadcast/multicast frame
 * in the current second `now_s`; counts it. */
int fp_ipset_bum_ok(const struct fp_ipset *s, int slot1, uint32_t now_s);
void fp_ipset_free(struct fp_ipset *s);

/* ---- forwarding decision for one frame read from a TAP ---- */
/* FP_FWD_LOCAL: for this host's own bridge (an FDB entry with VTEP 0.0.0.0, e.g. the anycast
 * gateway's MAC): the bridge has the frame already and answers ARP for it itself. */
enum { FP_FWD_DROP = 0, FP_FWD_UNICAST = 1, FP_FWD_FLOOD = 2, FP_FWD_ARP_REPLY = 3, FP_FWD_LOCAL = 4 };
/* For ARP_REPLY the reply frame is written to `reply` (FP_ARP_REPLY_LEN bytes) and *reply_len set. */
#define FP_ARP_REPLY_LEN (FP_ETH_HLEN + 28) /* Ethernet + an IPv4 ARP reply */
int fp_classify(const struct fp_tables *t, const uint8_t *frame, size_t len, uint32_t *vtep,
                uint8_t *reply, size_t *reply_len);

/* ---- ESP (RFC 4303) with AES-GCM-128 (RFC 4106) in UDP encapsulation (RFC 3948): fp_esp.c ----
 * Transport mode around the VXLAN UDP datagram (next header 17). Codec only, no I/O. On the wire:
 *   outer IP | UDP (dport FP_ESP_PORT) | SPI(4) seq(4) | IV(8) | enc(inner UDP + VXLAN + frame, pad,
 *   pad length, next header) | ICV(16)
 * nonce = salt(4) || IV(8); AAD = SPI || seq (32-bit sequence numbers, no ESN); IV = 64-bit seq. */
#define FP_ESP_PORT 4500
#define FP_ESP_KEYLEN 16
#define FP_ESP_SALTLEN 4
#define FP_ESP_HLEN 8   /* SPI + sequence number */
#define FP_ESP_IVLEN 8  /* explicit IV */
#define FP_ESP_ICVLEN 16
#define FP_ESP_TRAILER 2 /* pad length + next header */
#define FP_ESP_NEXT_UDP 17
#define FP_ESP_MIN_SPI 256 /* 0 is the RFC 3948 non-ESP marker, 1-255 are reserved by IANA */
/* Bytes an encrypted datagram adds to plain VXLAN (whose own overhead is 50 over IPv4): the UDP
 * encapsulation header (8) + ESP header (8) + IV (8) + trailer (2) + ICV (16) = 42, plus 0-3 bytes of
 * padding so that the ESP payload + trailer is a multiple of 4. Reserve the worst case. */
#define FP_ESP_OVERHEAD_FIXED 42
#define FP_ESP_OVERHEAD_MAX 45
#define FP_ESP_REPLAY_WINDOW 1024 /* packets; sized for GSO bursts reordered across workers */
#define FP_ESP_REPLAY_WORDS (FP_ESP_REPLAY_WINDOW / 64 + 1) /* ring of bits, one spare word */

enum {
    FP_ESP_OK = 0,
    FP_ESP_ERR_MALFORMED = -1,   /* too short, not ESP (SPI < 256), or a bad trailer after decrypt */
    FP_ESP_ERR_UNKNOWN_SPI = -2, /* no inbound SA with this SPI */
    FP_ESP_ERR_REPLAY = -3,      /* sequence number already seen in the window (or 0) */
    FP_ESP_ERR_TOO_OLD = -4,     /* sequence number left of the window */
    FP_ESP_ERR_BAD_ICV = -5,     /* authentication failed: forged, corrupted or wrong key */
    FP_ESP_ERR_NO_ROOM = -6,     /* output buffer too small (caller's bug, not the packet's) */
    FP_ESP_ERR_CRYPTO = -7,      /* libcrypto failed (allocation) */
};

/* One unidirectional SA. Both cipher contexts are initialised with the key once, so per packet only
 * the nonce is set. Not thread-safe: one SA is used by one thread at a time. */
struct fp_esp_sa {
    uint32_t spi;
    uint8_t salt[FP_ESP_SALTLEN];
    void *enc; /* EVP_CIPHER_CTX * (opaque here so fp.h needs no OpenSSL headers) */
    void *dec;
    uint32_t replay_top; /* highest sequence number accepted (0: none yet) */
    uint64_t replay_bits[FP_ESP_REPLAY_WORDS];
};
int fp_esp_sa_init(struct fp_esp_sa *sa, uint32_t spi, const uint8_t key[FP_ESP_KEYLEN],
                   const uint8_t salt[FP_ESP_SALTLEN]);
void fp_esp_sa_clear(struct fp_esp_sa *sa); /* frees the contexts and wipes the key material */
/* Length of the ESP payload (header to ICV) that carries a `len`-byte UDP datagram. */
size_t fp_esp_sealed_len(size_t len);
/* Largest inner (container) MTU whose encrypted packets fit an IPv4 underlay MTU. */
uint32_t fp_esp_inner_mtu(uint32_t underlay_mtu);
/* Encrypt the UDP datagram `in` with sequence number `seq` (never 0, never reused with this key) into
 * `out` (>= fp_esp_sealed_len(len); must not overlap `in`). Returns the ESP length or FP_ESP_ERR_*. */
long fp_esp_encrypt(struct fp_esp_sa *sa, uint32_t seq, const uint8_t *in, size_t len, uint8_t *out,
                    size_t outcap);
/* The same for a datagram in pieces (the fast path's entry point: headers and payload need no copy). */
long fp_esp_encrypt_iov(struct fp_esp_sa *sa, uint32_t seq, const struct iovec *iov, int niov, uint8_t *out,
                        size_t outcap);
/* The SPI of an ESP-in-UDP payload, or FP_ESP_ERR_MALFORMED (too short, or the non-ESP marker). */
int fp_esp_spi(const uint8_t *in, size_t len, uint32_t *spi);
/* Replay check (before decrypting) and window update (after the ICV verified), RFC 4303 3.4.3. */
int fp_esp_replay_check(const struct fp_esp_sa *sa, uint32_t seq);
void fp_esp_replay_update(struct fp_esp_sa *sa, uint32_t seq);
/* Verify and decrypt one ESP payload for this SA into `out` (>= len bytes; either not overlapping `in`,
 * or exactly in + FP_ESP_HLEN + FP_ESP_IVLEN: in place, as the receive path does):
 * the inner UDP datagram, its length in *outlen. Returns FP_ESP_OK or FP_ESP_ERR_*. */
int fp_esp_decrypt(struct fp_esp_sa *sa, const uint8_t *in, size_t len, uint8_t *out, size_t outcap,
                   size_t *outlen);

/* ---- the engine (fp_engine.c and the files fp_engine.h lists) ---- */
enum {
    FP_NC_RX_PACKETS, FP_NC_RX_BYTES, FP_NC_RX_COALESCED, FP_NC_RX_TAP_WRITES,
    FP_NC_RX_DROP_BAD_SENDER, FP_NC_RX_DROP_MALFORMED, FP_NC_RX_CSUM_BAD, FP_NC_RX_TAP_ERRORS,
    FP_NC_TX_PACKETS, FP_NC_TX_BYTES, FP_NC_TX_TAP_READS, FP_NC_TX_TSO_FRAMES, FP_NC_TX_FLOODED,
    FP_NC_TX_ARP_SUPPRESSED, FP_NC_TX_DROP_NO_DEST, FP_NC_TX_DROP_MALFORMED, FP_NC_TX_ERRORS,
    FP_NC_TX_LOCAL, FP_NC_RX_DROP_LOCAL_SOURCE, FP_NC_RX_DROP_PEER_BUM,
    /* encrypted networks */
    FP_NC_TX_ESP, FP_NC_TX_DROP_NO_SA, FP_NC_TX_DROP_SEQ_EXHAUSTED, FP_NC_TX_DROP_SEQ_UNRESERVED,
    FP_NC_RX_ESP, FP_NC_RX_DROP_CLEARTEXT, FP_NC_RX_DROP_REPLAY, FP_NC_RX_DROP_AUTH,
    FP_NC_RX_DROP_ESP_MISMATCH, FP_NC_MAX
};
enum {
    FP_GC_RX_DATAGRAMS, FP_GC_RX_SEGMENTS, FP_GC_RX_DROP_UNKNOWN_VNI, FP_GC_RX_DROP_MALFORMED,
    FP_GC_RX_DROP_TRUNCATED, FP_GC_RX_ERRORS, FP_GC_RECVMMSG_CALLS, FP_GC_SENDMMSG_CALLS,
    FP_GC_TX_GSO_SENDS, FP_GC_TX_ERRORS, FP_GC_RX_OUTER_CSUM_ZERO,
    FP_GC_RX_ESP_DATAGRAMS, FP_GC_RX_DROP_NO_SA, FP_GC_RX_DROP_ESP_MALFORMED, FP_GC_MAX
};

/* ---- SAs of encrypted networks (fp_sa.c), as the control side installs them ---- */
enum { FP_SA_OUT = 0, FP_SA_IN = 1 };
struct fp_sa_spec {
    uint32_t peer;   /* the remote VTEP, network byte order */
    int dir;         /* FP_SA_OUT: what we send to peer; FP_SA_IN: what peer sends us */
    uint32_t epoch;
    uint32_t spi;
    uint8_t key[FP_ESP_KEYLEN];
    uint8_t salt[FP_ESP_SALTLEN];
    /* Only for an SA that is new to the engine (an SA already installed keeps its state):
     * out: the last sequence number already used (the next packet carries seq + 1) and the highest
     * one the control side has durably reserved; in: the highest sequence number already seen
     * (everything up to it counts as a replay). */
    uint32_t seq, seq_limit;
};
struct fp_sa_info { /* what `networks` shows: never key material */
    uint64_t id;    /* names the SA for fp_engine_sa_set_limit */
    uint32_t peer, epoch, spi, seq, seq_limit;
    int dir;
};
extern const char *const fp_net_counter_names[FP_NC_MAX];
extern const char *const fp_global_counter_names[FP_GC_MAX];

#define FP_MAX_TX_SOCKETS 64 /* transmit sockets, i.e. distinct outer source ports */

struct fp_engine;
struct fp_engine_opts {
    uint32_t bind_addr; /* network byte order, 0 = any */
    uint16_t port;      /* host byte order */
    int ntx;            /* tx sockets (distinct outer source ports), 1..FP_MAX_TX_SOCKETS */
    int gso;            /* allow UDP GSO */
    int gro;            /* allow UDP GRO */
    int verify_csum;    /* verify inner TCP checksums before coalescing (default on) */
    int trust_outer;    /* skip that for datagrams whose non-zero outer UDP checksum the kernel verified */
    int spin_us;        /* > 0: after traffic, poll this long before sleeping (a fixed window, replaces poll_us) */
    int poll_us;        /* adaptive: poll this long after sending, unless the CPU is wanted (0: off) */
    int rt_prio;        /* > 0: workers run SCHED_FIFO at this priority (like softirq: ahead of tasks) */
    int nice;           /* workers' nice value when not real-time (0: inherit) */
    int cpu_tx, cpu_rx; /* pin the tx / rx worker to this CPU (-1: let the scheduler place it) */
    int spin_yield;     /* while polling, sched_yield() between empty polls (other tasks go first) */
    int workers;        /* 1: one thread serves both directions (cpu_rx pins it); 2: a tx and an rx thread */
    int rcvbuf;         /* VXLAN receive socket buffer in bytes (0: FP_RCVBUF_DEFAULT) */
    int gro_flows;      /* flows coalesced at once on receive, 1..FP_GRO_FLOWS (0: all) */
    uint16_t esp_port;  /* ESP-in-UDP port of encrypted networks (RFC 3948), host byte order */
};
struct fp_offloads {
    int udp_gso, udp_gro, ntx;
    int outer_csum_steering; /* zero / non-zero outer UDP checksum datagrams arrive on different sockets */
    int csum_avx2;
    uint16_t tx_ports[FP_MAX_TX_SOCKETS];
};
struct fp_engine *fp_engine_create(const struct fp_engine_opts *o, char *err, size_t errlen);
int fp_engine_start(struct fp_engine *e);
void fp_engine_stop(struct fp_engine *e);
void fp_engine_destroy(struct fp_engine *e);
void fp_engine_offloads(struct fp_engine *e, struct fp_offloads *out);

/* TAP handling */
struct fp_tap_info {
    int fd;
    int ifindex;
    int vnet_hdr;
    int mtu;
    unsigned offload; /* TUN_F_* flags accepted by TUNSETOFFLOAD */
};
int fp_tap_open(const char *netns_path, const char *name, int mtu, int persist, struct fp_tap_info *out,
                char *err, size_t errlen);
int fp_tap_delete(int fd); /* clear persistence and close */
int fp_setns_path(const char *path, char *err, size_t errlen);

/* encrypted: -EADDRNOTAVAIL when the engine has no ESP socket (fp_engine_esp_error says why). */
int fp_engine_add_net(struct fp_engine *e, uint32_t vni, const struct fp_tap_info *tap, int persist, int encrypted);
const char *fp_engine_esp_error(struct fp_engine *e); /* NULL: the ESP socket is open */
/* Replace the SAs of encrypted network `vni` (a full set); SAs with the same (dir, peer, spi, key,
 * salt) as before keep their sequence number / replay window. 0 or -errno with a line in err. */
int fp_engine_sync_sas(struct fp_engine *e, uint32_t vni, const struct fp_sa_spec *specs, uint32_t n, char *err,
                       size_t errlen);
/* The SAs of `vni` (up to cap); returns how many there are, -ENOENT for an unknown network. */
int fp_engine_sa_info(struct fp_engine *e, uint32_t vni, struct fp_sa_info *out, uint32_t cap);
/* Let out SA `id` use sequence numbers up to `limit` (only ever raised). 0, or -ENOENT. */
int fp_engine_sa_set_limit(struct fp_engine *e, uint64_t id, uint32_t limit);
int fp_engine_remove_net(struct fp_engine *e, uint32_t vni);
int fp_engine_has_net(struct fp_engine *e, uint32_t vni);
/* Takes ownership of t (frees the old tables after a grace period). */
int fp_engine_set_tables(struct fp_engine *e, uint32_t vni, struct fp_tables *t);
/* Returns a private copy of the current tables (caller frees) to build an update from. */
struct fp_tables *fp_engine_get_tables_copy(struct fp_engine *e, uint32_t vni, int keep_fdb, int keep_arp,
                                            int keep_flood, uint32_t nfdb, uint32_t narp, uint32_t nflood);
void fp_engine_set_peers(struct fp_engine *e, struct fp_ipset *s);
int fp_engine_net_counters(struct fp_engine *e, uint32_t vni, uint64_t out[FP_NC_MAX]);
void fp_engine_global_counters(struct fp_engine *e, uint64_t out[FP_GC_MAX]);

#endif
