/* ESP codec for encrypted networks: RFC 4303 ESP, RFC 4106 AES-GCM-128, RFC 3948 UDP encapsulation,
 * transport mode around the VXLAN UDP datagram. Pure: no sockets, no threads; the caller owns the
 * buffers and the SA table. The byte layout is in fp.h and docs/encryption.md. */
#include <string.h>
#include <sys/uio.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fp.h"

#define NONCE_LEN (FP_ESP_SALTLEN + FP_ESP_IVLEN)
#define MAX_DATAGRAM 65535 /* an inner UDP datagram never exceeds this; keeps lengths in int range */

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int fp_esp_sa_init(struct fp_esp_sa *sa, uint32_t spi, const uint8_t key[FP_ESP_KEYLEN],
                   const uint8_t salt[FP_ESP_SALTLEN])
{
    memset(sa, 0, sizeof(*sa));
    if (spi < FP_ESP_MIN_SPI)
        return FP_ESP_ERR_MALFORMED;
    sa->spi = spi;
    memcpy(sa->salt, salt, FP_ESP_SALTLEN);
    EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new(), *dec = EVP_CIPHER_CTX_new();
    sa->enc = enc;
    sa->dec = dec;
    /* The key schedule is computed once here; per packet only the nonce changes. The default GCM IV
     * length is 12 bytes, exactly salt || explicit IV. */
    if (!enc || !dec || EVP_EncryptInit_ex(enc, EVP_aes_128_gcm(), NULL, key, NULL) != 1 ||
        EVP_DecryptInit_ex(dec, EVP_aes_128_gcm(), NULL, key, NULL) != 1) {
        fp_esp_sa_clear(sa);
        return FP_ESP_ERR_CRYPTO;
    }
    return FP_ESP_OK;
}

void fp_esp_sa_clear(struct fp_esp_sa *sa)
{
    EVP_CIPHER_CTX_free(sa->enc); /* cleanses the expanded key */
    EVP_CIPHER_CTX_free(sa->dec);
    OPENSSL_cleanse(sa, sizeof(*sa));
}

static inline size_t pad_len(size_t len)
{
    return (4 - (len + FP_ESP_TRAILER) % 4) % 4; /* pad length + next header end on a 4-byte boundary */
}

size_t fp_esp_sealed_len(size_t len)
{
    return FP_ESP_HLEN + FP_ESP_IVLEN + len + pad_len(len) + FP_ESP_TRAILER + FP_ESP_ICVLEN;
}

uint32_t fp_esp_inner_mtu(uint32_t underlay_mtu)
{
    /* outer IPv4 (20) + UDP 4500 (8) + ESP(inner UDP 8 + VXLAN 8 + Ethernet 14 + MTU) */
    const uint32_t below = 20 + 8 + FP_ESP_HLEN + FP_ESP_IVLEN + 8 + FP_VXLAN_HLEN + FP_ETH_HLEN +
                           FP_ESP_TRAILER + FP_ESP_ICVLEN;
    if (underlay_mtu <= below)
        return 0;
    uint32_t mtu = underlay_mtu - below;
    while (mtu > 0 && 20 + 8 + fp_esp_sealed_len(8 + FP_VXLAN_HLEN + FP_ETH_HLEN + mtu) > underlay_mtu)
        mtu--;
    return mtu;
}

long fp_esp_encrypt_iov(struct fp_esp_sa *sa, uint32_t seq, const struct iovec *iov, int niov, uint8_t *out,
                        size_t outcap)
{
    size_t len = 0;
    for (int i = 0; i < niov; i++)
        len += iov[i].iov_len;
    if (seq == 0 || len > MAX_DATAGRAM)
        return FP_ESP_ERR_MALFORMED;
    size_t pad = pad_len(len), need = fp_esp_sealed_len(len);
    if (outcap < need)
        return FP_ESP_ERR_NO_ROOM;
    EVP_CIPHER_CTX *ctx = sa->enc;
    put_be32(out, sa->spi);
    put_be32(out + 4, seq);
    /* Explicit IV = the 64-bit sequence number: unique per key as long as seq never repeats (RFC 4106
     * section 3.1 allows any unique value; a counter needs no random source per packet). */
    put_be32(out + 8, 0);
    put_be32(out + 12, seq);
    uint8_t nonce[NONCE_LEN], trailer[3 + FP_ESP_TRAILER];
    memcpy(nonce, sa->salt, FP_ESP_SALTLEN);
    memcpy(nonce + FP_ESP_SALTLEN, out + 8, FP_ESP_IVLEN);
    for (size_t i = 0; i < pad; i++)
        trailer[i] = (uint8_t)(i + 1); /* RFC 4303 2.4 default padding: 1, 2, 3, ... */
    trailer[pad] = (uint8_t)pad;
    trailer[pad + 1] = FP_ESP_NEXT_UDP;
    uint8_t *ct = out + FP_ESP_HLEN + FP_ESP_IVLEN;
    int n;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, out, FP_ESP_HLEN) != 1) /* AAD = SPI || seq */
        return FP_ESP_ERR_CRYPTO;
    for (int i = 0; i < niov; i++) { /* GCM is a stream mode: pieces need no block alignment */
        if (iov[i].iov_len && EVP_EncryptUpdate(ctx, ct, &n, iov[i].iov_base, (int)iov[i].iov_len) != 1)
            return FP_ESP_ERR_CRYPTO;
        ct += iov[i].iov_len;
    }
    if (EVP_EncryptUpdate(ctx, ct, &n, trailer, (int)(pad + FP_ESP_TRAILER)) != 1 ||
        EVP_EncryptFinal_ex(ctx, ct + pad + FP_ESP_TRAILER, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, FP_ESP_ICVLEN, out + need - FP_ESP_ICVLEN) != 1)
        return FP_ESP_ERR_CRYPTO;
    return (long)need;
}

long fp_esp_encrypt(struct fp_esp_sa *sa, uint32_t seq, const uint8_t *in, size_t len, uint8_t *out,
                    size_t outcap)
{
    struct iovec iov = {(void *)in, len};
    return fp_esp_encrypt_iov(sa, seq, &iov, 1, out, outcap);
}

int fp_esp_spi(const uint8_t *in, size_t len, uint32_t *spi)
{
    if (len < FP_ESP_HLEN + FP_ESP_IVLEN + FP_ESP_TRAILER + FP_ESP_ICVLEN)
        return FP_ESP_ERR_MALFORMED;
    *spi = get_be32(in);
    return *spi < FP_ESP_MIN_SPI ? FP_ESP_ERR_MALFORMED : FP_ESP_OK;
}

/* The window is a ring of 64-bit words indexed by seq / 64; one spare word beyond the window size so
 * that advancing never clears a word that still holds bits inside the window (as WireGuard does). */
int fp_esp_replay_check(const struct fp_esp_sa *sa, uint32_t seq)
{
    if (seq == 0) /* never sent: the first packet of an SA carries 1 */
        return FP_ESP_ERR_REPLAY;
    if (seq > sa->replay_top)
        return FP_ESP_OK;
    if (sa->replay_top - seq >= FP_ESP_REPLAY_WINDOW)
        return FP_ESP_ERR_TOO_OLD;
    uint64_t word = sa->replay_bits[(seq >> 6) % FP_ESP_REPLAY_WORDS];
    return word >> (seq & 63) & 1 ? FP_ESP_ERR_REPLAY : FP_ESP_OK;
}

void fp_esp_replay_update(struct fp_esp_sa *sa, uint32_t seq)
{
    if (seq > sa->replay_top) {
        uint32_t cur = sa->replay_top >> 6, steps = (seq >> 6) - cur;
        if (steps > FP_ESP_REPLAY_WORDS)
            steps = FP_ESP_REPLAY_WORDS;
        for (uint32_t i = 1; i <= steps; i++)
            sa->replay_bits[(cur + i) % FP_ESP_REPLAY_WORDS] = 0;
        sa->replay_top = seq;
    }
    sa->replay_bits[(seq >> 6) % FP_ESP_REPLAY_WORDS] |= 1ULL << (seq & 63);
}

int fp_esp_decrypt(struct fp_esp_sa *sa, const uint8_t *in, size_t len, uint8_t *out, size_t outcap,
                   size_t *outlen)
{
    uint32_t spi;
    int rc = fp_esp_spi(in, len, &spi);
    if (rc != FP_ESP_OK)
        return rc;
    if (len > MAX_DATAGRAM + 64)
        return FP_ESP_ERR_MALFORMED;
    if (spi != sa->spi)
        return FP_ESP_ERR_UNKNOWN_SPI;
    uint32_t seq = get_be32(in + 4);
    rc = fp_esp_replay_check(sa, seq); /* cheap, and before spending an AES pass on it */
    if (rc != FP_ESP_OK)
        return rc;
    size_t ctlen = len - FP_ESP_HLEN - FP_ESP_IVLEN - FP_ESP_ICVLEN;
    if (outcap < ctlen)
        return FP_ESP_ERR_NO_ROOM;
    EVP_CIPHER_CTX *ctx = sa->dec;
    uint8_t nonce[NONCE_LEN];
    memcpy(nonce, sa->salt, FP_ESP_SALTLEN);
    memcpy(nonce + FP_ESP_SALTLEN, in + FP_ESP_HLEN, FP_ESP_IVLEN);
    int n;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, in, FP_ESP_HLEN) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, in + FP_ESP_HLEN + FP_ESP_IVLEN, (int)ctlen) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, FP_ESP_ICVLEN, (void *)(in + len - FP_ESP_ICVLEN)) != 1)
        return FP_ESP_ERR_CRYPTO;
    if (EVP_DecryptFinal_ex(ctx, out + ctlen, &n) != 1) {
        OPENSSL_cleanse(out, ctlen); /* unauthenticated plaintext never leaves */
        return FP_ESP_ERR_BAD_ICV;
    }
    /* Authentic: the sequence number is consumed even if the trailer below turns out to be bad. */
    fp_esp_replay_update(sa, seq);
    size_t pad = out[ctlen - 2];
    if (pad + FP_ESP_TRAILER > ctlen || out[ctlen - 1] != FP_ESP_NEXT_UDP)
        return FP_ESP_ERR_MALFORMED;
    size_t plen = ctlen - FP_ESP_TRAILER - pad;
    for (size_t i = 0; i < pad; i++)
        if (out[plen + i] != (uint8_t)(i + 1))
            return FP_ESP_ERR_MALFORMED;
    *outlen = plen;
    return FP_ESP_OK;
}
