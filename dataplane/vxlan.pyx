# cython: language_level=3
"""RFC 7348 VXLAN header: 8 bytes = flags(1) reserved(3) VNI(3) reserved(1).

The I flag (0x08) must be set; every reserved bit must be zero on send. On receive we accept only
the I flag (RFC 7348 says receivers ignore the reserved bits; the Linux kernel drops frames whose
reserved flags are set unless extensions are enabled, and we match the kernel).
"""

from libc.stdint cimport uint8_t, uint32_t

VXLAN_HEADER_LEN = 8
VXLAN_FLAG_I = 0x08
MAX_VNI = 0xFFFFFF


cdef inline void write_header(uint8_t *out, uint32_t vni) noexcept nogil:
    out[0] = 0x08
    out[1] = 0
    out[2] = 0
    out[3] = 0
    out[4] = (vni >> 16) & 0xFF
    out[5] = (vni >> 8) & 0xFF
    out[6] = vni & 0xFF
    out[7] = 0


cdef inline long read_vni(const uint8_t *hdr, Py_ssize_t length) noexcept nogil:
    """The VNI, or -1 when the header is truncated or its flags are not exactly the I flag."""
    if length < 8:
        return -1
    if hdr[0] != 0x08 or hdr[1] != 0 or hdr[2] != 0 or hdr[3] != 0 or hdr[7] != 0:
        return -1
    return (<long>hdr[4] << 16) | (<long>hdr[5] << 8) | <long>hdr[6]


def encode_header(unsigned int vni):
    """The 8-byte VXLAN header for `vni`."""
    if vni > MAX_VNI:
        raise ValueError(f"VNI {vni} out of range 0..{MAX_VNI}")
    cdef bytearray out = bytearray(8)
    cdef uint8_t *p = out
    write_header(p, vni)
    return bytes(out)


def decode_header(const uint8_t[:] packet):
    """The VNI of a VXLAN packet (header + inner frame), or None if the header is invalid."""
    cdef long vni = read_vni(&packet[0], packet.shape[0]) if packet.shape[0] > 0 else -1
    return None if vni < 0 else vni
