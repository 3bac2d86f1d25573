/* weights.c - the weights file of `clbn train --save`: parsing from memory, encoding, and
 * reading a file (the writer's temporary-file-and-rename stays with cmd_train.c). */
#include "weights.h"

#include "tools.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const unsigned char weights_magic[8] = {'C', 'L', 'B', 'N', 'W', 'T', 'S', 0};
#define HEAD_FIXED (8 + 16) /* magic, version, layers, bn, activation */

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* zlib's crc32 takes an unsigned length: feed it in pieces. */
static uint32_t crc_of(const unsigned char *p, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)crc;
}

static void load_floats(float *dst, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_u32(src + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

static void store_floats(unsigned char *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        put_u32(dst + 4 * i, u);
    }
}

static int has_bias(const tn_config *c, int l) {
    return !c->bn || l == c->layers;
}

void weights_free(float **W, float **b) {
    for (int l = 0; l < TN_MAX_LAYERS; l++) {
        free(W[l]);
        free(b[l]);
        W[l] = b[l] = NULL;
    }
}

int weights_parse(const unsigned char *buf, size_t size, tn_config *cfg, float **W, float **b,
                  const char **why) {
    for (int l = 0; l < TN_MAX_LAYERS; l++)
        W[l] = b[l] = NULL;
    memset(cfg, 0, sizeof *cfg);
    *why = NULL;
    if (!buf || size < HEAD_FIXED + 4 || memcmp(buf, weights_magic, 8) != 0) {
        *why = "not a clbn weights file";
        return CLBN_EXIT_USAGE;
    }
    uint32_t h[4 + TN_MAX_LAYERS + 1];
    for (int i = 0; i < 4; i++)
        h[i] = get_u32(buf + 8 + 4 * i);
    if (h[0] != WEIGHTS_VERSION)
        *why = "unsupported version";
    else if (crc_of(buf, size - 4) != get_u32(buf + size - 4))
        *why = "checksum mismatch (corrupt or truncated)";
    else if (h[1] < 2 || h[1] > TN_MAX_LAYERS || h[2] > 1 ||
             (h[3] != CLBN_ACTIVATION_RELU && h[3] != CLBN_ACTIVATION_SIGMOID) ||
             size < HEAD_FIXED + 4 * ((size_t)h[1] + 1) + 4)
        *why = "malformed header";
    if (*why)
        return CLBN_EXIT_USAGE;
    size_t at = HEAD_FIXED;
    tn_config c = {.layers = (int)h[1], .bn = (int)h[2], .act = (clbn_activation)h[3]};
    for (uint32_t l = 0; l <= h[1]; l++, at += 4) {
        h[4 + l] = get_u32(buf + at);
        if (h[4 + l] == 0 || h[4 + l] > WEIGHTS_MAX_SIZE) {
            *why = "malformed layer sizes";
            return CLBN_EXIT_USAGE;
        }
        c.sizes[l] = (int)h[4 + l];
    }
    /* At most 8 layers of 2^20 x 2^20 floats: 2^45 bytes, no overflow of a 64-bit size. */
    uint64_t need = (uint64_t)at + 4;
    for (int l = 1; l <= c.layers; l++)
        need += 4 * ((uint64_t)c.sizes[l - 1] * (uint64_t)c.sizes[l] +
                     (has_bias(&c, l) ? (uint64_t)c.sizes[l] : 0));
    if (need != (uint64_t)size) {
        *why = "size does not match its layers";
        return CLBN_EXIT_USAGE;
    }
    for (int l = 1; l <= c.layers; l++) {
        size_t nw = (size_t)c.sizes[l - 1] * (size_t)c.sizes[l];
        size_t nb = has_bias(&c, l) ? (size_t)c.sizes[l] : 0;
        W[l - 1] = malloc(nw * 4);
        b[l - 1] = nb ? malloc(nb * 4) : NULL;
        if (!W[l - 1] || (nb && !b[l - 1])) {
            weights_free(W, b);
            *why = "out of memory";
            return CLBN_EXIT_FAILURE;
        }
        load_floats(W[l - 1], buf + at, nw);
        at += nw * 4;
        if (nb) {
            load_floats(b[l - 1], buf + at, nb);
            at += nb * 4;
        }
    }
    *cfg = c;
    return 0;
}

int weights_encode(const tn_config *c, const float *const *W, const float *const *b,
                   unsigned char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (c->layers < 2 || c->layers > TN_MAX_LAYERS || c->bn < 0 || c->bn > 1 ||
        (c->act != CLBN_ACTIVATION_RELU && c->act != CLBN_ACTIVATION_SIGMOID))
        return CLBN_EXIT_FAILURE;
    size_t n = HEAD_FIXED + 4 * ((size_t)c->layers + 1) + 4;
    for (int l = 0; l <= c->layers; l++)
        if (c->sizes[l] <= 0 || (unsigned)c->sizes[l] > WEIGHTS_MAX_SIZE)
            return CLBN_EXIT_FAILURE;
    for (int l = 1; l <= c->layers; l++)
        n += 4 * ((size_t)c->sizes[l - 1] * (size_t)c->sizes[l] +
                  (has_bias(c, l) ? (size_t)c->sizes[l] : 0));
    unsigned char *buf = malloc(n);
    if (!buf)
        return CLBN_EXIT_FAILURE;
    memcpy(buf, weights_magic, 8);
    put_u32(buf + 8, WEIGHTS_VERSION);
    put_u32(buf + 12, (uint32_t)c->layers);
    put_u32(buf + 16, (uint32_t)c->bn);
    put_u32(buf + 20, (uint32_t)c->act);
    size_t at = HEAD_FIXED;
    for (int l = 0; l <= c->layers; l++, at += 4)
        put_u32(buf + at, (uint32_t)c->sizes[l]);
    for (int l = 1; l <= c->layers; l++) {
        size_t nw = (size_t)c->sizes[l - 1] * (size_t)c->sizes[l];
        store_floats(buf + at, W[l - 1], nw);
        at += 4 * nw;
        if (has_bias(c, l)) {
            store_floats(buf + at, b[l - 1], (size_t)c->sizes[l]);
            at += 4 * (size_t)c->sizes[l];
        }
    }
    put_u32(buf + at, crc_of(buf, at));
    *out = buf;
    *len = n;
    return 0;
}

/* The whole stream, without trusting ftell (a folder or a pipe has no useful size). */
static int slurp(FILE *f, unsigned char **data, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            free(buf);
            return -1;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf)
        return -1;
    *data = buf;
    *n = len;
    return 0;
}

int weights_read(const char *path, tn_config *cfg, float **W, float **b) {
    for (int l = 0; l < TN_MAX_LAYERS; l++)
        W[l] = b[l] = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "clbn train: cannot read %s: %s\n", path, strerror(errno));
        return CLBN_EXIT_USAGE;
    }
    unsigned char *buf = NULL;
    size_t size = 0;
    int bad = slurp(f, &buf, &size);
    bad = ferror(f) || bad;
    fclose(f);
    const char *why = "not a clbn weights file";
    int rc = CLBN_EXIT_USAGE;
    if (!bad)
        rc = weights_parse(buf, size, cfg, W, b, &why);
    free(buf);
    if (rc)
        fprintf(stderr, "clbn train: %s: %s\n", path, why);
    return rc;
}
