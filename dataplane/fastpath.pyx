# cython: language_level=3
"""Python face of the C fast path (dataplane/csrc/): the Engine the daemon drives, and the pure frame
functions (encap/decap, TSO split, GRO coalescing, FDB/flood/ARP decisions) the unit tests exercise.

Nothing here runs per packet: the forwarding loops are C threads that never take the GIL.
"""

import socket
import threading

from overlaynet import model  # MAX_VNI and the MAC syntax: one definition each
from overlaynet.dataplane.protocol import LOCAL_VTEP  # FDB VTEP of this host's own bridge: one definition

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "fp.h" nogil:
    enum:
        FP_VXLAN_HLEN
        FP_VNET_HLEN
        FP_TAP_VNET
        FP_TAP_GSO_UDP
        FP_MAX_HDRS
        FP_OK
        FP_ERR_TRUNCATED
        FP_ERR_BAD_FLAGS
        FP_ERR_BAD_INNER
        FP_FWD_DROP
        FP_FWD_UNICAST
        FP_FWD_FLOOD
        FP_FWD_ARP_REPLY
        FP_FWD_LOCAL
        FP_NC_MAX
        FP_GC_MAX
        FP_MAX_TX_SOCKETS
        FP_ARP_REPLY_LEN
        FP_ESP_KEYLEN
        FP_ESP_SALTLEN
        FP_ESP_MIN_SPI
        FP_SA_OUT
        FP_SA_IN

    struct fp_vnet_hdr:
        uint8_t flags
        uint8_t gso_type
        uint16_t hdr_len
        uint16_t gso_size
        uint16_t csum_start
        uint16_t csum_offset

    struct fp_tso:
        uint32_t nseg
        size_t hlen

    struct fp_gro:
        int verify
        int covered
        int nflows

    ctypedef void (*fp_emit_fn)(void *ctx, void *net, const iovec *iov, int niov, int ncoalesced) noexcept

    struct fp_tables:
        uint32_t nfdb
        uint32_t narp
        uint32_t nflood
        uint32_t *flood

    struct fp_ipset:
        uint32_t n
        uint32_t bum_rate

    struct fp_engine:
        pass

    struct fp_engine_opts:
        uint32_t bind_addr
        uint16_t port
        int ntx
        int gso
        int gro
        int verify_csum
        int trust_outer
        int spin_us
        int poll_us
        int rt_prio
        int nice
        int cpu_tx
        int cpu_rx
        int workers
        int spin_yield
        int rcvbuf
        int gro_flows
        uint16_t esp_port

    struct fp_sa_spec:
        uint32_t peer
        int dir
        uint32_t epoch
        uint32_t spi
        uint8_t key[FP_ESP_KEYLEN]
        uint8_t salt[FP_ESP_SALTLEN]
        uint32_t seq
        uint32_t seq_limit

    struct fp_sa_info:
        uint64_t id
        uint32_t peer
        uint32_t epoch
        uint32_t spi
        uint32_t seq
        uint32_t seq_limit
        int dir

    struct fp_offloads:
        int udp_gso
        int udp_gro
        int ntx
        int outer_csum_steering
        int csum_avx2
        uint16_t tx_ports[FP_MAX_TX_SOCKETS]

    struct fp_tap_info:
        int fd
        int ifindex
        int vnet_hdr
        int mtu
        unsigned offload

    const char *const fp_net_counter_names[]
    const char *const fp_global_counter_names[]

    void fp_vxlan_header(uint8_t *out, uint32_t vni)
    int fp_decap(const uint8_t *pkt, size_t len, uint32_t *vni, size_t *inner_off)
    uint32_t fp_flow_hash(const uint8_t *frame, size_t len)
    uint64_t fp_csum_partial(const void *buf, size_t len, uint64_t acc)
    uint16_t fp_csum_fold(uint64_t acc)
    int fp_csum_impl()
    void fp_csum_allow_avx2(int allow)
    int fp_finish_csum(uint8_t *frame, size_t len, uint16_t csum_start, uint16_t csum_offset)
    int fp_tso_init(fp_tso *st, const uint8_t *frame, size_t len, const fp_vnet_hdr *vh)
    size_t fp_tso_next(fp_tso *st, uint8_t *hdr_out, const uint8_t **pay, size_t *paylen)
    int fp_gro_offer(fp_gro *g, void *net, int caps, uint32_t mtu, const uint8_t *frame, size_t len, fp_emit_fn emit,
                     void *ctx, int *csum_bad)
    void fp_gro_flush(fp_gro *g, fp_emit_fn emit, void *ctx)

    fp_tables *fp_tables_new(uint32_t nfdb, uint32_t narp, uint32_t nflood)
    int fp_tables_fdb_put(fp_tables *t, const uint8_t *mac, uint32_t vtep)
    int fp_tables_arp_put(fp_tables *t, uint32_t ip, const uint8_t *mac)
    int fp_tables_flood_put(fp_tables *t, uint32_t vtep)
    void fp_tables_free(fp_tables *t)
    int fp_classify(const fp_tables *t, const uint8_t *frame, size_t len, uint32_t *vtep, uint8_t *reply,
                    size_t *reply_len)
    fp_ipset *fp_ipset_new(uint32_t n)
    int fp_ipset_put(fp_ipset *s, uint32_t ip)
    int fp_ipset_has(const fp_ipset *s, uint32_t ip)
    void fp_ipset_free(fp_ipset *s)

    fp_engine *fp_engine_create(const fp_engine_opts *o, char *err, size_t errlen)
    int fp_engine_start(fp_engine *e)
    void fp_engine_stop(fp_engine *e)
    void fp_engine_destroy(fp_engine *e)
    void fp_engine_offloads(fp_engine *e, fp_offloads *out)
    int fp_tap_open(const char *netns_path, const char *name, int mtu, int persist, fp_tap_info *out,
                    char *err, size_t errlen)
    int fp_tap_delete(int fd)
    int fp_setns_path(const char *path, char *err, size_t errlen)
    int fp_engine_add_net(fp_engine *e, uint32_t vni, const fp_tap_info *tap, int persist, int encrypted)
    const char *fp_engine_esp_error(fp_engine *e)
    int fp_engine_sync_sas(fp_engine *e, uint32_t vni, const fp_sa_spec *specs, uint32_t n, char *err, size_t errlen)
    int fp_engine_sa_info(fp_engine *e, uint32_t vni, fp_sa_info *out, uint32_t cap)
    int fp_engine_sa_set_limit(fp_engine *e, uint64_t id, uint32_t limit)
    int fp_engine_remove_net(fp_engine *e, uint32_t vni)
    int fp_engine_has_net(fp_engine *e, uint32_t vni)
    int fp_engine_set_tables(fp_engine *e, uint32_t vni, fp_tables *t)
    fp_tables *fp_engine_get_tables_copy(fp_engine *e, uint32_t vni, int keep_fdb, int keep_arp,
                                         int keep_flood, uint32_t nfdb, uint32_t narp, uint32_t nflood)
    void fp_engine_set_peers(fp_engine *e, fp_ipset *s)
    int fp_engine_net_counters(fp_engine *e, uint32_t vni, uint64_t *out)
    void fp_engine_global_counters(fp_engine *e, uint64_t *out)


VXLAN_HEADER_LEN = 8
VNET_HEADER_LEN = 10
MAX_VNI = model.MAX_VNI
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20

_DECAP_REASONS = {FP_ERR_TRUNCATED: "truncated", FP_ERR_BAD_FLAGS: "bad_flags", FP_ERR_BAD_INNER: "bad_inner"}


class DecapError(ValueError):
    """A VXLAN packet the fast path drops; `.reason` is the counter it lands in."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class FastpathError(OSError):
    pass


def _check_vni(vni):
    if not isinstance(vni, int) or not 0 <= vni <= MAX_VNI:
        raise ValueError(f"VNI {vni!r} out of range 0..{MAX_VNI}")
    return vni


cdef uint32_t _ip4(object addr) except? 0:
    cdef bytes b = socket.inet_aton(str(addr))
    cdef uint32_t v
    if len(b) != 4 or b == b"\0\0\0\0":
        raise ValueError(f"{addr!r} is not a usable IPv4 address")
    memcpy(&v, <const char *>b, 4)
    return v


cdef uint32_t _fdb_vtep(object vtep) except? 0:
    """An FDB entry's VTEP; 0.0.0.0 marks a MAC of this host's own bridge (FP_FWD_LOCAL)."""
    if str(vtep) == LOCAL_VTEP:
        return 0
    return _ip4(vtep)


cdef str _ip4_str(uint32_t v):
    return socket.inet_ntoa((<char *>&v)[:4])


cdef bytes _mac(object mac):
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"{mac!r} is not a MAC address")
        return bytes(mac)
    return bytes.fromhex(model.parse_mac(mac).replace(":", ""))


# ------------------------------------------------------------------ pure frame functions

def encapsulate(unsigned int vni, const uint8_t[:] frame not None):
    """VXLAN header + inner frame: the UDP payload the fast path sends for `frame` on network `vni`."""
    _check_vni(vni)
    cdef Py_ssize_t n = frame.shape[0]
    out = bytearray(FP_VXLAN_HLEN + n)
    cdef uint8_t *o = out
    fp_vxlan_header(o, vni)
    if n:
        memcpy(o + FP_VXLAN_HLEN, &frame[0], n)
    return bytes(out)


def decapsulate(const uint8_t[:] packet not None):
    """(vni, inner frame) of a VXLAN UDP payload, or DecapError(reason) - exactly the receive path's check."""
    cdef uint32_t vni = 0
    cdef size_t off = 0
    cdef Py_ssize_t n = packet.shape[0]
    cdef int rc
    if n < FP_VXLAN_HLEN:
        raise DecapError("truncated")
    rc = fp_decap(&packet[0], n, &vni, &off)
    if rc != FP_OK:
        raise DecapError(_DECAP_REASONS.get(rc, "malformed"))
    return vni, bytes(packet[off:])


def flow_hash(const uint8_t[:] frame not None):
    """The inner-flow hash that picks the outer UDP source port."""
    if frame.shape[0] == 0:
        return fp_flow_hash(NULL, 0)
    return fp_flow_hash(&frame[0], frame.shape[0])


def checksum_sum(data, unsigned int offset=0):
    """The folded (not inverted) Internet checksum sum of data[offset:], as the C code computes it."""
    cdef bytes b = bytes(data)
    if offset > len(b):
        raise ValueError("offset beyond the data")
    return fp_csum_fold(fp_csum_partial(<const char *>b + offset, len(b) - offset, 0))


def checksum_impl():
    """'avx2' if the checksum loop uses AVX2 on this CPU, else 'portable'."""
    return "avx2" if fp_csum_impl() else "portable"


def checksum_allow_avx2(bint allow):
    """Use the AVX2 checksum loop when the CPU has it (the default), or never (for A/B measurements)."""
    fp_csum_allow_avx2(allow)


def finish_checksum(frame, unsigned int csum_start, unsigned int csum_offset):
    """Complete a CHECKSUM_PARTIAL frame (virtio NEEDS_CSUM) like the transmit path does."""
    buf = bytearray(frame)
    cdef uint8_t *p = buf
    if fp_finish_csum(p, len(buf), csum_start, csum_offset):
        raise ValueError("checksum offsets outside the frame")
    return bytes(buf)


cdef fp_vnet_hdr _vnet(bytes vh) except *:
    cdef fp_vnet_hdr h
    if len(vh) != FP_VNET_HLEN:
        raise ValueError("virtio_net_hdr must be 10 bytes")
    memcpy(&h, <const char *>vh, FP_VNET_HLEN)
    return h


def segment(bytes vnet_hdr, bytes frame):
    """Inner frames the transmit path emits for one TAP read (virtio_net_hdr + frame): TSO frames are
    split into MSS-sized segments with IP/TCP fixups and full checksums, UDP GSO frames into their
    datagrams; NEEDS_CSUM is completed."""
    cdef fp_vnet_hdr h = _vnet(vnet_hdr)
    cdef fp_tso st
    cdef uint8_t hdr[FP_MAX_HDRS]
    cdef const uint8_t *pay
    cdef size_t paylen, hl
    if h.gso_type == 0:
        if h.flags & 1:
            return [finish_checksum(frame, h.csum_start, h.csum_offset)]
        return [frame]
    if fp_tso_init(&st, <const uint8_t *><const char *>frame, len(frame), &h):
        raise ValueError("not a TSO or UDP GSO frame this fast path can split")
    out = []
    while True:
        hl = fp_tso_next(&st, hdr, &pay, &paylen)
        if hl == 0:
            break
        out.append((<char *>hdr)[:hl] + (<const char *>pay)[:paylen])
    return out


cdef struct _collect:
    uint8_t *buf
    size_t used
    size_t cap
    size_t *lens
    int n
    int cap_n


cdef void _collect_emit(void *ctx, void *net, const iovec *iov, int niov, int ncoalesced) noexcept nogil:
    cdef _collect *c = <_collect *>ctx
    cdef size_t total = 0
    cdef int i
    for i in range(niov):
        total += iov[i].iov_len
    if c.n >= c.cap_n or c.used + total > c.cap:
        return
    for i in range(niov):
        memcpy(c.buf + c.used, iov[i].iov_base, iov[i].iov_len)
        c.used += iov[i].iov_len
    c.lens[c.n] = total
    c.n += 1


def coalesce(frames, bint verify=True, bint vnet=True, unsigned int mtu=0, bint covered=False,
             bint udp_gso=True, int flows=0):
    """What the receive path writes into a TAP for these inner frames arriving in this order:
    a list of (virtio_net_hdr + frame) byte strings (just frames when vnet is False). `mtu` is the
    TAP's MTU: longer frames are GSO super-packets (0: no limit). `covered`: the frames came in
    datagrams whose non-zero outer UDP checksum the kernel verified (no inner verification).
    `udp_gso`: the TAP takes UDP GSO frames (trains of same-size UDP datagrams are merged)."""
    cdef list keep = [bytes(f) for f in frames]
    cdef size_t total = sum(len(f) for f in keep) + (len(keep) + 1) * (FP_VNET_HLEN + FP_MAX_HDRS)
    cdef _collect c
    cdef fp_gro *g = <fp_gro *>malloc(sizeof(fp_gro))
    cdef int bad
    cdef bytes f
    cdef size_t off
    cdef int caps = (FP_TAP_VNET | (FP_TAP_GSO_UDP if udp_gso else 0)) if vnet else 0
    c.buf = <uint8_t *>malloc(total)
    c.lens = <size_t *>malloc(sizeof(size_t) * (len(keep) + 1))
    c.used = 0
    c.cap = total
    c.n = 0
    c.cap_n = len(keep) + 1
    try:
        if not g or not c.buf or not c.lens:
            raise MemoryError()
        memset(g, 0, sizeof(fp_gro))
        g.verify = verify
        g.covered = covered
        g.nflows = flows
        for f in keep:
            fp_gro_offer(g, <void *>1, caps, mtu, <const uint8_t *><const char *>f, len(f), _collect_emit, &c, &bad)
        fp_gro_flush(g, _collect_emit, &c)
        out = []
        off = 0
        for i in range(c.n):
            out.append((<char *>c.buf)[off:off + c.lens[i]])
            off += c.lens[i]
        return out
    finally:
        free(g)
        free(c.buf)
        free(c.lens)


cdef int _fill_tables(fp_tables *t, fdb, flood, arp) except -1:
    """Put entries into t (fdb {mac: vtep}, flood [vtep], arp {ip: mac}; None: leave that part)."""
    cdef bytes m
    for mac, vtep in (fdb or {}).items():
        m = _mac(mac)
        fp_tables_fdb_put(t, <const uint8_t *><const char *>m, _fdb_vtep(vtep))
    for ip, mac in (arp or {}).items():
        m = _mac(mac)
        fp_tables_arp_put(t, _ip4(ip), <const uint8_t *><const char *>m)
    for vtep in (flood or ()):
        fp_tables_flood_put(t, _ip4(vtep))
    return 0


cdef class Tables:
    """One network's forwarding tables, standalone: the transmit path's decision for a frame."""

    cdef fp_tables *t

    def __init__(self, fdb=None, flood=None, arp=None):
        fdb, flood, arp = dict(fdb or {}), list(flood or []), dict(arp or {})
        self.t = fp_tables_new(len(fdb), len(arp), len(flood))
        if self.t == NULL:
            raise MemoryError()
        _fill_tables(self.t, fdb, flood, arp)

    def __dealloc__(self):
        fp_tables_free(self.t)

    def classify(self, const uint8_t[:] frame not None):
        """('drop', None) | ('unicast', vtep) | ('flood', [vteps]) | ('arp_reply', reply frame) |
        ('local', None): for this host's bridge (FDB VTEP 0.0.0.0), neither sent nor answered."""
        cdef uint32_t vtep = 0
        cdef uint8_t reply[FP_ARP_REPLY_LEN]
        cdef size_t rlen = 0
        cdef int k
        if frame.shape[0] == 0:
            return ("drop", None)
        k = fp_classify(self.t, &frame[0], frame.shape[0], &vtep, reply, &rlen)
        if k == FP_FWD_UNICAST:
            return ("unicast", _ip4_str(vtep))
        if k == FP_FWD_FLOOD:
            return ("flood", [_ip4_str(self.t.flood[i]) for i in range(self.t.nflood)])
        if k == FP_FWD_ARP_REPLY:
            return ("arp_reply", (<char *>reply)[:rlen])
        if k == FP_FWD_LOCAL:
            return ("local", None)
        return ("drop", None)


def setns(str path):
    """Move the calling thread into the network namespace at `path` (used once at start-up)."""
    cdef char err[256]
    b = path.encode()
    if fp_setns_path(b, err, sizeof(err)):
        raise FastpathError(err.decode(errors="replace"))


# ------------------------------------------------------------------ the engine

cdef dict _offload_names(unsigned f):
    return {"csum": bool(f & TUN_F_CSUM), "tso4": bool(f & TUN_F_TSO4), "tso6": bool(f & TUN_F_TSO6),
            "tso_ecn": bool(f & TUN_F_TSO_ECN), "uso": bool(f & TUN_F_USO4)}


cdef class Engine:
    """The fast path: one VXLAN UDP socket, transmit sockets, TAPs, and two C worker threads."""

    cdef fp_engine *e
    cdef readonly dict networks
    cdef object lock
    cdef readonly int port
    cdef readonly str bind
    cdef readonly int spin_us
    cdef readonly int poll_us

    def __cinit__(self, str bind="0.0.0.0", int port=4789, int ntx=16, bint gso=True, bint gro=True,
                  bint verify_csum=True, int spin_us=0, int rt_prio=0, int nice=0, int cpu_tx=-1,
                  int cpu_rx=-1, int workers=1, bint spin_yield=True, bint trust_outer_csum=True,
                  int rcvbuf=0, int gro_flows=0, int esp_port=4500, int poll_us=0):
        cdef fp_engine_opts o
        cdef char err[256]
        memset(&o, 0, sizeof(o))
        if bind and bind != "0.0.0.0":
            o.bind_addr = _ip4(bind)
        o.port = port
        o.ntx = ntx
        o.gso = gso
        o.gro = gro
        o.verify_csum = verify_csum
        o.trust_outer = trust_outer_csum
        o.spin_us = spin_us
        o.poll_us = max(0, poll_us)
        o.rt_prio = rt_prio
        o.nice = nice
        o.cpu_tx = cpu_tx
        o.cpu_rx = cpu_rx
        o.workers = 1 if workers == 1 else 2
        o.spin_yield = spin_yield
        o.rcvbuf = rcvbuf
        o.gro_flows = gro_flows
        o.esp_port = esp_port
        err[0] = 0
        self.e = fp_engine_create(&o, err, sizeof(err))
        if self.e == NULL:
            raise FastpathError(err.decode(errors="replace") or "cannot create the fast path")
        self.networks = {}
        self.lock = threading.Lock()
        self.port = port
        self.bind = bind
        self.spin_us = max(0, spin_us)
        self.poll_us = o.poll_us

    def __dealloc__(self):
        if self.e != NULL:
            with nogil:
                fp_engine_destroy(self.e)
            self.e = NULL

    def close(self):
        if self.e != NULL:
            with nogil:
                fp_engine_destroy(self.e)
            self.e = NULL

    cdef fp_engine *_e(self) except NULL:
        if self.e == NULL:
            raise FastpathError("engine closed")
        return self.e

    def start(self):
        if fp_engine_start(self._e()):
            raise FastpathError("cannot start worker threads")

    def stop(self):
        cdef fp_engine *e = self._e()
        with nogil:
            fp_engine_stop(e)

    def offloads(self):
        cdef fp_offloads o
        fp_engine_offloads(self._e(), &o)
        return {
            "udp_gso": bool(o.udp_gso),
            "udp_gro": bool(o.udp_gro),
            "outer_csum_steering": bool(o.outer_csum_steering),
            "checksum": "avx2" if o.csum_avx2 else "portable",
            "tx_sockets": o.ntx,
            "tx_source_ports": sorted(o.tx_ports[i] for i in range(o.ntx)),
            "busy_poll_us": self.spin_us or self.poll_us,
            "busy_poll": "fixed" if self.spin_us else ("adaptive" if self.poll_us else "off"),
            "esp": self.esp_status(),
            "taps": {vni: {"vnet_hdr": n["vnet_hdr"], **_offload_names(n["offload"])}
                     for vni, n in self.networks.items()},
        }

    def add_network(self, unsigned int vni, str netns, str tap, int mtu, bint persist=False, bint encrypted=False):
        """Create (or re-attach to a persistent) TAP `tap` inside the namespace at `netns` and start
        forwarding it as network `vni`. An encrypted network sends and accepts only ESP: until
        sync_sas gives it SAs, everything it would send is dropped."""
        cdef fp_engine *e = self._e()
        cdef fp_tap_info info
        cdef char err[256]
        cdef int rc
        cdef const char *ns_c
        cdef const char *tap_c
        _check_vni(vni)
        with self.lock:
            if vni in self.networks:
                raise FileExistsError(f"network {vni} exists")
            ns_b = (netns or "").encode()
            tap_b = tap.encode()
            ns_c = ns_b
            tap_c = tap_b
            err[0] = 0
            with nogil:
                rc = fp_tap_open(ns_c, tap_c, mtu, persist, &info, err, sizeof(err))
            if rc:
                raise FastpathError(f"TAP {tap} in {netns or 'own namespace'}: {err.decode(errors='replace')}")
            with nogil:
                rc = fp_engine_add_net(e, vni, &info, persist, encrypted)
            if rc:
                fp_tap_delete(info.fd) if persist else None
                if encrypted and fp_engine_esp_error(e) != NULL:
                    raise FastpathError(f"network {vni} cannot be encrypted: no ESP socket "
                                        f"({fp_engine_esp_error(e).decode(errors='replace')}); "
                                        "free the port or start fastpathd with another --esp-port")
                raise FastpathError(f"add network {vni}: error {rc}")
            self.networks[vni] = {"vni": vni, "netns": netns, "tap": tap, "mtu": info.mtu, "ifindex": info.ifindex,
                                  "vnet_hdr": bool(info.vnet_hdr), "offload": info.offload, "persist": persist,
                                  "encrypted": encrypted}
            return dict(self.networks[vni])

    def remove_network(self, unsigned int vni):
        cdef fp_engine *e = self._e()
        cdef int rc
        with self.lock:
            with nogil:
                rc = fp_engine_remove_net(e, vni)
            self.networks.pop(vni, None)
            return rc == 0

    cdef _update(self, unsigned int vni, fdb, flood, arp):
        cdef fp_engine *e = self._e()
        cdef fp_tables *t
        cdef fp_tables *cur
        cdef int rc
        with self.lock:
            if vni not in self.networks:
                raise KeyError(f"unknown network {vni}")
            # copy what stays, then fill the part being replaced
            cur = fp_engine_get_tables_copy(e, vni, fdb is None, arp is None, flood is None,
                                            len(fdb or ()), len(arp or ()), len(flood or ()))
            if cur == NULL:
                raise KeyError(f"unknown network {vni}")
            try:
                _fill_tables(cur, fdb, flood, arp)
            except BaseException:
                fp_tables_free(cur)
                raise
            with nogil:
                rc = fp_engine_set_tables(e, vni, cur)
            if rc:
                raise KeyError(f"unknown network {vni}")

    def set_fdb(self, unsigned int vni, mapping):
        """Replace network `vni`'s FDB: {mac: vtep}."""
        self._update(vni, dict(mapping), None, None)

    def set_flood(self, unsigned int vni, vteps):
        """Replace network `vni`'s flood list (head-end replication targets)."""
        self._update(vni, None, list(dict.fromkeys(vteps)), None)

    def set_arp(self, unsigned int vni, mapping):
        """Replace network `vni`'s ARP suppression table: {ip: mac}."""
        self._update(vni, None, None, dict(mapping))

    def set_peers(self, vteps, unsigned int bum_rate=0):
        """Replace the set of VTEPs whose packets are accepted; each may send at most `bum_rate`
        broadcast/multicast frames per second (0: no limit). The count restarts with the set."""
        cdef fp_engine *e = self._e()
        vteps = list(dict.fromkeys(vteps))
        cdef fp_ipset *s = fp_ipset_new(len(vteps))
        if s == NULL:
            raise MemoryError()
        s.bum_rate = bum_rate
        try:
            for v in vteps:
                fp_ipset_put(s, _ip4(v))
        except BaseException:
            fp_ipset_free(s)
            raise
        with self.lock:
            with nogil:
                fp_engine_set_peers(e, s)

    def esp_status(self):
        """'ready' when the ESP socket is open, else why not (then encrypted networks are refused)."""
        cdef const char *why = fp_engine_esp_error(self._e())
        return "ready" if why == NULL else why.decode(errors="replace")

    def sync_sas(self, unsigned int vni, sas):
        """Replace the SAs of encrypted network `vni`: a list of dicts {peer, dir ("out"|"in"), epoch,
        spi, key (16 bytes), salt (4 bytes), seq, seq_limit} (seq/seq_limit: see fp_sa_spec; ignored
        for an SA that is already installed, which keeps its state). Returns how many are installed."""
        cdef fp_engine *e = self._e()
        cdef list items = list(sas)
        cdef fp_sa_spec *specs = <fp_sa_spec *>malloc(sizeof(fp_sa_spec) * (len(items) + 1))
        cdef char err[256]
        cdef int rc
        cdef uint32_t n = len(items)
        cdef bytes key, salt
        if specs == NULL:
            raise MemoryError()
        try:
            memset(specs, 0, sizeof(fp_sa_spec) * (len(items) + 1))
            for i, sa in enumerate(items):
                key, salt = bytes(sa["key"]), bytes(sa["salt"])
                if len(key) != FP_ESP_KEYLEN or len(salt) != FP_ESP_SALTLEN:
                    raise ValueError(f"an SA needs a {FP_ESP_KEYLEN}-byte key and a {FP_ESP_SALTLEN}-byte salt")
                if not FP_ESP_MIN_SPI <= sa["spi"] <= 0xFFFFFFFF:
                    raise ValueError(f"SPI {sa['spi']} out of range {FP_ESP_MIN_SPI}..2**32-1")
                if sa["dir"] not in ("out", "in"):
                    raise ValueError(f"dir must be 'out' or 'in', got {sa['dir']!r}")
                specs[i].peer = _ip4(sa["peer"])
                specs[i].dir = FP_SA_OUT if sa["dir"] == "out" else FP_SA_IN
                specs[i].epoch = sa["epoch"]
                specs[i].spi = sa["spi"]
                memcpy(specs[i].key, <const char *>key, FP_ESP_KEYLEN)
                memcpy(specs[i].salt, <const char *>salt, FP_ESP_SALTLEN)
                specs[i].seq = sa.get("seq", 0)
                specs[i].seq_limit = sa.get("seq_limit", 0)
            err[0] = 0
            with self.lock:
                with nogil:
                    rc = fp_engine_sync_sas(e, vni, specs, n, err, sizeof(err))
            if rc < 0:
                raise FastpathError(err.decode(errors="replace") or f"sync_sas {vni}: error {rc}")
            return rc
        finally:
            memset(specs, 0, sizeof(fp_sa_spec) * (len(items) + 1))  # no key material left behind
            free(specs)

    def sas(self, unsigned int vni):
        """The SAs of network `vni`, without keys: [{id, peer, dir, epoch, spi, seq, seq_limit}]
        (seq: the last sequence number sent, or the highest received)."""
        cdef fp_engine *e = self._e()
        cdef int n = fp_engine_sa_info(e, vni, NULL, 0)
        cdef fp_sa_info *info
        if n < 0:
            raise KeyError(f"unknown network {vni}")
        info = <fp_sa_info *>malloc(sizeof(fp_sa_info) * (n + 1))
        if info == NULL:
            raise MemoryError()
        try:
            n = min(n, fp_engine_sa_info(e, vni, info, n))
            return [{"id": info[i].id, "peer": _ip4_str(info[i].peer), "dir": "out" if info[i].dir == FP_SA_OUT else "in",
                     "epoch": info[i].epoch, "spi": info[i].spi, "seq": info[i].seq, "seq_limit": info[i].seq_limit}
                    for i in range(max(n, 0))]
        finally:
            free(info)

    def set_sa_limit(self, uint64_t sa_id, uint32_t limit):
        """Let outbound SA `sa_id` send up to sequence number `limit` (only ever raised). False if it is gone."""
        return fp_engine_sa_set_limit(self._e(), sa_id, limit) == 0

    def global_counters(self):
        cdef uint64_t c[FP_GC_MAX]
        fp_engine_global_counters(self._e(), c)
        return {fp_global_counter_names[i].decode(): c[i] for i in range(FP_GC_MAX)}

    def network_counters(self, unsigned int vni):
        cdef uint64_t c[FP_NC_MAX]
        if fp_engine_net_counters(self._e(), vni, c):
            raise KeyError(f"unknown network {vni}")
        return {fp_net_counter_names[i].decode(): c[i] for i in range(FP_NC_MAX)}
