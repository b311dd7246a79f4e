/* Lookup tables of one network (FDB, ARP, flood list) and IPv4 sets. Built by the control thread,
 * never modified once published: readers need no lock, updates swap a whole new table in. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fp.h"

static inline uint32_t mix32(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static inline uint32_t mac_hash(const uint8_t m[6])
{
    uint64_t v = 0;
    memcpy(&v, m, 6);
    return mix32(v);
}

static uint32_t capacity_for(uint32_t n)
{
    uint32_t c = 8;
    while (c < 2 * n)
        c <<= 1;
    return c;
}

struct fp_tables *fp_tables_new(uint32_t nfdb, uint32_t narp, uint32_t nflood)
{
    uint32_t cf = capacity_for(nfdb), ca = capacity_for(narp);
    struct fp_tables *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->fdb = calloc(cf, sizeof(*t->fdb));
    t->arp = calloc(ca, sizeof(*t->arp));
    t->flood = calloc(nflood ? nflood : 1, sizeof(uint32_t));
    if (!t->fdb || !t->arp || !t->flood) {
        fp_tables_free(t);
        return NULL;
    }
    t->fdb_mask = cf - 1;
    t->arp_mask = ca - 1;
    return t;
}

void fp_tables_free(struct fp_tables *t)
{
    if (!t)
        return;
    free(t->fdb);
    free(t->arp);
    free(t->flood);
    free(t);
}

int fp_tables_fdb_put(struct fp_tables *t, const uint8_t mac[6], uint32_t vtep)
{
    if (2 * (t->nfdb + 1) > t->fdb_mask + 1)
        return -1;
    for (uint32_t i = mac_hash(mac) & t->fdb_mask;; i = (i + 1) & t->fdb_mask) {
        struct fp_fdb_ent *e = &t->fdb[i];
        if (!e->used) {
            memcpy(e->mac, mac, 6);
            e->used = 1;
            e->vtep = vtep;
            t->nfdb++;
            return 0;
        }
        if (!memcmp(e->mac, mac, 6)) {
            e->vtep = vtep;
            return 0;
        }
    }
}

int fp_fdb_lookup(const struct fp_tables *t, const uint8_t mac[6], uint32_t *vtep)
{
    for (uint32_t i = mac_hash(mac) & t->fdb_mask;; i = (i + 1) & t->fdb_mask) {
        const struct fp_fdb_ent *e = &t->fdb[i];
        if (!e->used)
            return 0;
        if (!memcmp(e->mac, mac, 6)) {
            *vtep = e->vtep;
            return 1;
        }
    }
}

int fp_fdb_is_local(const struct fp_tables *t, const uint8_t mac[6])
{
    uint32_t vtep;
    return fp_fdb_lookup(t, mac, &vtep) && vtep == 0;
}

int fp_tables_arp_put(struct fp_tables *t, uint32_t ip, const uint8_t mac[6])
{
    if (2 * (t->narp + 1) > t->arp_mask + 1)
        return -1;
    for (uint32_t i = mix32(ip) & t->arp_mask;; i = (i + 1) & t->arp_mask) {
        struct fp_arp_ent *e = &t->arp[i];
        if (!e->used) {
            e->ip = ip;
            memcpy(e->mac, mac, 6);
            e->used = 1;
            t->narp++;
            return 0;
        }
        if (e->ip == ip) {
            memcpy(e->mac, mac, 6);
            return 0;
        }
    }
}

int fp_arp_lookup(const struct fp_tables *t, uint32_t ip, uint8_t mac[6])
{
    for (uint32_t i = mix32(ip) & t->arp_mask;; i = (i + 1) & t->arp_mask) {
        const struct fp_arp_ent *e = &t->arp[i];
        if (!e->used)
            return 0;
        if (e->ip == ip) {
            memcpy(mac, e->mac, 6);
            return 1;
        }
    }
}

int fp_tables_flood_put(struct fp_tables *t, uint32_t vtep)
{
    for (uint32_t i = 0; i < t->nflood; i++)
        if (t->flood[i] == vtep)
            return 0;
    t->flood[t->nflood++] = vtep; /* caller sized the array */
    return 0;
}

struct fp_tables *fp_tables_clone(const struct fp_tables *t, int keep_fdb, int keep_arp, int keep_flood,
                                  uint32_t nfdb, uint32_t narp, uint32_t nflood)
{
    uint32_t extra_f = keep_fdb && t ? t->nfdb : 0, extra_a = keep_arp && t ? t->narp : 0;
    uint32_t extra_l = keep_flood && t ? t->nflood : 0;
    struct fp_tables *n = fp_tables_new(nfdb + extra_f, narp + extra_a, nflood + extra_l);
    if (!n || !t)
        return n;
    if (keep_fdb)
        for (uint32_t i = 0; i <= t->fdb_mask; i++)
            if (t->fdb[i].used)
                fp_tables_fdb_put(n, t->fdb[i].mac, t->fdb[i].vtep);
    if (keep_arp)
        for (uint32_t i = 0; i <= t->arp_mask; i++)
            if (t->arp[i].used)
                fp_tables_arp_put(n, t->arp[i].ip, t->arp[i].mac);
    if (keep_flood)
        for (uint32_t i = 0; i < t->nflood; i++)
            fp_tables_flood_put(n, t->flood[i]);
    return n;
}

struct fp_ipset *fp_ipset_new(uint32_t n)
{
    struct fp_ipset *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    uint32_t c = capacity_for(n);
    s->slots = calloc(c, sizeof(uint32_t));
    s->window = calloc(c, sizeof(*s->window));
    if (!s->slots || !s->window) {
        free(s->slots);
        free(s->window);
        free(s);
        return NULL;
    }
    s->mask = c - 1;
    return s;
}

int fp_ipset_put(struct fp_ipset *s, uint32_t ip)
{
    if (!ip || 2 * (s->n + 1) > s->mask + 1)
        return -1;
    for (uint32_t i = mix32(ip) & s->mask;; i = (i + 1) & s->mask) {
        if (s->slots[i] == ip)
            return 0;
        if (!s->slots[i]) {
            s->slots[i] = ip;
            s->n++;
            return 0;
        }
    }
}

int fp_ipset_has(const struct fp_ipset *s, uint32_t ip)
{
    if (!s || !ip)
        return 0;
    for (uint32_t i = mix32(ip) & s->mask;; i = (i + 1) & s->mask) {
        if (s->slots[i] == ip)
            return (int)i + 1;
        if (!s->slots[i])
            return 0;
    }
}

int fp_ipset_bum_ok(const struct fp_ipset *s, int slot1, uint32_t now_s)
{
    if (!s || !s->bum_rate || slot1 <= 0)
        return 1;
    struct fp_peer_window *w = &s->window[slot1 - 1];
    uint32_t second = atomic_load_explicit(&w->second, memory_order_relaxed);
    if (second != now_s && atomic_compare_exchange_strong(&w->second, &second, now_s))
        atomic_store_explicit(&w->count, 0, memory_order_relaxed); /* a new second: a new budget */
    return atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed) < s->bum_rate;
}

void fp_ipset_free(struct fp_ipset *s)
{
    if (!s)
        return;
    free(s->slots);
    free(s->window);
    free(s);
}
