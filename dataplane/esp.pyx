# cython: language_level=3
"""Python face of the ESP codec (dataplane/csrc/fp_esp.c): SAs, sealing and opening one datagram.

For tests, measurements and the control side. The forwarding loops will call the C directly; nothing
here is wired into the live tx/rx path (see docs/encryption.md).
"""

from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport free, malloc


cdef extern from "fp.h" nogil:
    enum:
        FP_ESP_PORT
        FP_ESP_KEYLEN
        FP_ESP_SALTLEN
        FP_ESP_MIN_SPI
        FP_ESP_OVERHEAD_FIXED
        FP_ESP_OVERHEAD_MAX
        FP_ESP_REPLAY_WINDOW
        FP_ESP_OK
        FP_ESP_ERR_MALFORMED
        FP_ESP_ERR_UNKNOWN_SPI
        FP_ESP_ERR_REPLAY
        FP_ESP_ERR_TOO_OLD
        FP_ESP_ERR_BAD_ICV
        FP_ESP_ERR_NO_ROOM
        FP_ESP_ERR_CRYPTO

    struct fp_esp_sa:
        uint32_t spi

    int fp_esp_sa_init(fp_esp_sa *sa, uint32_t spi, const uint8_t *key, const uint8_t *salt)
    void fp_esp_sa_clear(fp_esp_sa *sa)
    size_t fp_esp_sealed_len(size_t len)
    uint32_t fp_esp_inner_mtu(uint32_t underlay_mtu)
    long fp_esp_encrypt(fp_esp_sa *sa, uint32_t seq, const uint8_t *inp, size_t len, uint8_t *out,
                        size_t outcap)
    int fp_esp_spi(const uint8_t *inp, size_t len, uint32_t *spi)
    int fp_esp_decrypt(fp_esp_sa *sa, const uint8_t *inp, size_t len, uint8_t *out, size_t outcap,
                       size_t *outlen)


PORT = FP_ESP_PORT
KEY_LEN = FP_ESP_KEYLEN
SALT_LEN = FP_ESP_SALTLEN
MIN_SPI = FP_ESP_MIN_SPI
OVERHEAD_FIXED = FP_ESP_OVERHEAD_FIXED  # bytes on top of plain VXLAN, before padding
OVERHEAD_MAX = FP_ESP_OVERHEAD_MAX  # ... with the worst-case 3 bytes of padding
REPLAY_WINDOW = FP_ESP_REPLAY_WINDOW

# Drop reasons, named like the counters they will feed.
DROP_REASONS = {
    FP_ESP_ERR_MALFORMED: "malformed",
    FP_ESP_ERR_UNKNOWN_SPI: "unknown_spi",
    FP_ESP_ERR_REPLAY: "replay",
    FP_ESP_ERR_TOO_OLD: "too_old",
    FP_ESP_ERR_BAD_ICV: "bad_icv",
}


class EspError(Exception):
    """The codec refused a call (bad key size, SPI, sequence number): the caller's mistake."""


def sealed_len(size_t datagram_len):
    """Bytes of ESP payload (header to ICV) that carry a UDP datagram of this length."""
    return fp_esp_sealed_len(datagram_len)


def inner_mtu(uint32_t underlay_mtu):
    """Largest container MTU whose encrypted VXLAN packets fit this IPv4 underlay MTU."""
    return fp_esp_inner_mtu(underlay_mtu)


cdef class EspSa:
    """One ESP security association (SPI, AES-GCM-128 key, 4-byte salt) and its replay window.

    Use one object per direction: seal() with an outbound SA, open() with an inbound one.
    """

    cdef fp_esp_sa sa
    cdef bint ready

    def __cinit__(self, uint32_t spi, bytes key not None, bytes salt not None):
        self.ready = False
        if len(key) != FP_ESP_KEYLEN or len(salt) != FP_ESP_SALTLEN:
            raise EspError(f"an ESP AES-GCM-128 SA needs a {FP_ESP_KEYLEN}-byte key and a "
                           f"{FP_ESP_SALTLEN}-byte salt")
        rc = fp_esp_sa_init(&self.sa, spi, key, salt)
        if rc == FP_ESP_ERR_MALFORMED:
            raise EspError(f"SPI {spi} is reserved (must be >= {FP_ESP_MIN_SPI})")
        if rc != FP_ESP_OK:
            raise MemoryError("libcrypto could not set up an AES-GCM context")
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            fp_esp_sa_clear(&self.sa)

    @property
    def spi(self):
        return self.sa.spi

    def seal(self, const uint8_t[::1] datagram not None, uint32_t seq):
        """The ESP payload (SPI .. ICV) carrying this UDP datagram (inner UDP header + VXLAN + frame)."""
        cdef size_t n = datagram.shape[0]
        cdef size_t cap = fp_esp_sealed_len(n)
        cdef uint8_t *out = <uint8_t *>malloc(cap)
        if out == NULL:
            raise MemoryError()
        try:
            r = fp_esp_encrypt(&self.sa, seq, &datagram[0] if n else <const uint8_t *>out, n, out, cap)
            if r < 0:
                raise EspError("sequence number 0 is never sent" if seq == 0 else f"encrypt failed ({r})")
            return (<char *>out)[:r]
        finally:
            free(out)

    def seal_loop(self, const uint8_t[::1] datagram not None, uint32_t first_seq, uint32_t count):
        """Seal the same datagram `count` times (sequence numbers from first_seq), without the GIL and
        without Python objects per packet: for measuring the AEAD's own cost."""
        cdef size_t n = datagram.shape[0]
        cdef size_t cap = fp_esp_sealed_len(n)
        cdef uint8_t *out = <uint8_t *>malloc(cap)
        cdef uint32_t i
        cdef long r = 0
        if out == NULL or n == 0 or first_seq == 0 or first_seq + count < first_seq:
            free(out)
            raise EspError("seal_loop needs a non-empty datagram and sequence numbers in 1..2**32-1")
        with nogil:
            for i in range(count):
                r = fp_esp_encrypt(&self.sa, first_seq + i, &datagram[0], n, out, cap)
                if r < 0:
                    break
        free(out)
        if r < 0:
            raise EspError(f"encrypt failed ({r})")

    def open(self, const uint8_t[::1] esp not None):
        """(datagram, None) for an authentic, fresh packet; (None, reason) for a dropped one."""
        cdef size_t n = esp.shape[0]
        cdef size_t outlen = 0
        cdef uint8_t *out
        if n == 0:
            return None, "malformed"
        out = <uint8_t *>malloc(n)
        if out == NULL:
            raise MemoryError()
        try:
            rc = fp_esp_decrypt(&self.sa, &esp[0], n, out, n, &outlen)
            if rc != FP_ESP_OK:
                if rc not in DROP_REASONS:
                    raise EspError(f"decrypt failed ({rc})")
                return None, DROP_REASONS[rc]
            return (<char *>out)[:outlen], None
        finally:
            free(out)


def packet_spi(const uint8_t[::1] esp not None):
    """The SPI of an ESP-in-UDP payload, or None if it is too short or carries the non-ESP marker."""
    cdef uint32_t spi = 0
    if esp.shape[0] == 0 or fp_esp_spi(&esp[0], esp.shape[0], &spi) != FP_ESP_OK:
        return None
    return spi


def open_packet(const uint8_t[::1] esp not None, sas):
    """Demultiplex by SPI among inbound SAs (a mapping SPI -> EspSa) and open the packet:
    (datagram, None), or (None, reason) with reason in DROP_REASONS' values."""
    spi = packet_spi(esp)
    if spi is None:
        return None, "malformed"
    sa = sas.get(spi)
    if sa is None:
        return None, "unknown_spi"
    return (<EspSa?>sa).open(esp)
