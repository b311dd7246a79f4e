/* The SA tables of encrypted networks: SA objects (an ESP SA plus what the fast path needs around
 * it: network, peer, transmit sequence number and its reserved limit), one network's immutable SA
 * set (outbound SAs by peer), and the inbound SPI map over all networks. Sets and maps are built by
 * the control side and swapped RCU-style by fp_engine.c, like the forwarding tables; SA objects
 * live as long as some published set holds them, which is how a resync keeps sequence numbers. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "fp_engine.h"

static inline uint32_t peer_hash(uint32_t v) { return v * 2654435761u; }

struct fp_sa *fp_sa_new(uint32_t vni, const struct fp_sa_spec *s, uint64_t id)
{
    struct fp_sa *sa;
    if (posix_memalign((void **)&sa, 64, sizeof(*sa)))
        return NULL;
    memset(sa, 0, sizeof(*sa));
    if (fp_esp_sa_init(&sa->esp, s->spi, s->key, s->salt) != FP_ESP_OK) {
        free(sa);
        return NULL;
    }
    sa->id = id;
    sa->vni = vni;
    sa->peer = s->peer;
    sa->epoch = s->epoch;
    sa->dir = s->dir;
    memcpy(sa->key, s->key, FP_ESP_KEYLEN);
    if (s->dir == FP_SA_OUT) {
        atomic_store(&sa->seq, s->seq);
        atomic_store(&sa->seq_limit, s->seq_limit);
    } else if (s->seq) {
        /* Restored from the control side's record: everything up to seq was seen (or may have been,
         * before a restart), so it all counts as a replay; later numbers are fresh. */
        sa->esp.replay_top = s->seq;
        memset(sa->esp.replay_bits, 0xff, sizeof(sa->esp.replay_bits));
        atomic_store(&sa->seq, s->seq);
    }
    return sa;
}

void fp_sa_free(struct fp_sa *sa)
{
    if (!sa)
        return;
    fp_esp_sa_clear(&sa->esp);
    OPENSSL_cleanse(sa->key, sizeof(sa->key));
    free(sa);
}

int fp_sa_same(const struct fp_sa *sa, const struct fp_sa_spec *s)
{
    return sa->dir == s->dir && sa->peer == s->peer && sa->esp.spi == s->spi &&
           CRYPTO_memcmp(sa->key, s->key, FP_ESP_KEYLEN) == 0 &&
           CRYPTO_memcmp(sa->esp.salt, s->salt, FP_ESP_SALTLEN) == 0;
}

struct fp_sa_set *fp_sa_set_new(struct fp_sa *const *sas, uint32_t n)
{
    struct fp_sa_set *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    uint32_t cap = 8;
    while (cap < 2 * n)
        cap <<= 1;
    t->all = calloc(n ? n : 1, sizeof(*t->all));
    t->out = calloc(cap, sizeof(*t->out));
    if (!t->all || !t->out) {
        fp_sa_set_free(t);
        return NULL;
    }
    t->out_mask = cap - 1;
    for (uint32_t k = 0; k < n; k++) {
        struct fp_sa *sa = sas[k];
        t->all[t->n++] = sa;
        if (sa->dir != FP_SA_OUT)
            continue;
        uint32_t i = peer_hash(sa->peer) & t->out_mask;
        while (t->out[i]) {
            if (t->out[i]->peer == sa->peer) { /* one outbound SA per peer */
                fp_sa_set_free(t);
                errno = EEXIST;
                return NULL;
            }
            i = (i + 1) & t->out_mask;
        }
        t->out[i] = sa;
    }
    return t;
}

void fp_sa_set_free(struct fp_sa_set *t)
{
    if (!t)
        return;
    free(t->all);
    free(t->out);
    free(t);
}

struct fp_sa *fp_sa_out(const struct fp_sa_set *t, uint32_t peer)
{
    if (!t || !t->n)
        return NULL;
    for (uint32_t i = peer_hash(peer) & t->out_mask;; i = (i + 1) & t->out_mask) {
        struct fp_sa *sa = t->out[i];
        if (!sa || sa->peer == peer)
            return sa;
    }
}

int fp_sa_in_set(const struct fp_sa_set *t, const struct fp_sa *sa)
{
    for (uint32_t i = 0; t && i < t->n; i++)
        if (t->all[i] == sa)
            return 1;
    return 0;
}

struct fp_spi_map *fp_spi_map_new(uint32_t n)
{
    struct fp_spi_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    uint32_t cap = 8;
    while (cap < 2 * n)
        cap <<= 1;
    m->slots = calloc(cap, sizeof(*m->slots));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    m->mask = cap - 1;
    return m;
}

int fp_spi_map_put(struct fp_spi_map *m, struct fp_sa *sa)
{
    uint32_t i = peer_hash(sa->esp.spi) & m->mask;
    for (; m->slots[i]; i = (i + 1) & m->mask)
        if (m->slots[i]->esp.spi == sa->esp.spi)
            return -EEXIST;
    m->slots[i] = sa;
    m->n++;
    return 0;
}

struct fp_sa *fp_spi_map_get(const struct fp_spi_map *m, uint32_t spi)
{
    if (!m || !m->n)
        return NULL;
    for (uint32_t i = peer_hash(spi) & m->mask;; i = (i + 1) & m->mask) {
        struct fp_sa *sa = m->slots[i];
        if (!sa || sa->esp.spi == spi)
            return sa;
    }
}

void fp_spi_map_free(struct fp_spi_map *m)
{
    if (m)
        free(m->slots);
    free(m);
}
