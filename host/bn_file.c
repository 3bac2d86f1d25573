/* bn_file.c — saving and loading a state object: a versioned little-endian file with the
 * options, t, every vector and an FNV-1a checksum, written atomically. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "CLBNSTAT"
#define STATE_VERSION 1u
/* magic 8, version 4, header bytes 4, channels 8, eps 4, factor 4, flags 4, activation 4, t 8 */
#define STATE_HEADER 48u

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

clbn_status clbn_bn_save(clbn_bn *bn, const char *path) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!path)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "path is NULL");
    if (!*path)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT, "path is empty");
    uint64_t C = bn->opt.channels;
    size_t size = STATE_HEADER + (size_t)C * 4 * CLBN_VECTOR_COUNT + 8;
    unsigned char *buf = malloc(size);
    float *vals = malloc((size_t)C * sizeof(float));
    if (!buf || !vals) {
        free(buf);
        free(vals);
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory saving %s", path);
    }
    memcpy(buf, STATE_MAGIC, 8);
    clbn_put_u32(buf + 8, STATE_VERSION);
    clbn_put_u32(buf + 12, STATE_HEADER);
    clbn_put_u64(buf + 16, C);
    clbn_put_u32(buf + 24, f2u(bn->opt.eps));
    clbn_put_u32(buf + 28, f2u(bn->opt.factor));
    clbn_put_u32(buf + 32, bn->opt.flags);
    clbn_put_u32(buf + 36, (uint32_t)bn->opt.activation);
    clbn_put_u64(buf + 40, bn->t);
    clbn_status st = CLBN_SUCCESS;
    unsigned char *p = buf + STATE_HEADER;
    for (int v = 0; v < CLBN_VECTOR_COUNT && st == CLBN_SUCCESS; v++) {
        st = clbn_bn_read_vector(bn, (clbn_vector)v, vals, C);
        for (uint64_t c = 0; c < C && st == CLBN_SUCCESS; c++, p += 4)
            clbn_put_u32(p, f2u(vals[c]));
    }
    if (st == CLBN_SUCCESS) {
        clbn_put_u64(p, clbn_fnv1a(CLBN_FNV_INIT, buf, size - 8));
        st = clbn_write_file_atomic(path, buf, size);
    }
    free(buf);
    free(vals);
    return st;
}

clbn_status clbn_bn_parse_state(const unsigned char *buf, size_t size, const char *path,
                                clbn_bn_options *o, uint64_t *t, const unsigned char **vectors) {
    clbn_status st = CLBN_SUCCESS;
    clbn_bn_options_init(o);
    *t = 0;
    *vectors = NULL;
    if (!path)
        path = "(memory)";
    if (size < 8 && (size == 0 || !memcmp(buf, STATE_MAGIC, size)))
        st = clbn_fail(CLBN_ERROR_FILE_CORRUPT, "%s is truncated (%zu bytes)", path, size);
    else if (size < 8 || memcmp(buf, STATE_MAGIC, 8))
        st = clbn_fail(CLBN_ERROR_FILE_MISMATCH, "%s is not a clbn state file", path);
    else if (size < STATE_HEADER + 8)
        st = clbn_fail(CLBN_ERROR_FILE_CORRUPT, "%s is truncated (%zu bytes)", path, size);
    else if (clbn_get_u32(buf + 8) > STATE_VERSION)
        st = clbn_fail(CLBN_ERROR_FILE_VERSION,
                       "%s has format version %u; this clbn reads up to version %u", path,
                       clbn_get_u32(buf + 8), STATE_VERSION);
    else if (clbn_get_u32(buf + 8) == 0 || clbn_get_u32(buf + 12) != STATE_HEADER)
        st = clbn_fail(CLBN_ERROR_FILE_CORRUPT, "%s has a damaged header", path);
    if (st == CLBN_SUCCESS) {
        o->channels = clbn_get_u64(buf + 16);
        uint64_t want = o->channels <= ((uint64_t)1 << 40)
                            ? STATE_HEADER + o->channels * 4 * CLBN_VECTOR_COUNT + 8
                            : 0;
        if (want == 0 || size != want)
            st = clbn_fail(CLBN_ERROR_FILE_CORRUPT,
                           "%s is %zu bytes; %llu channels need %llu (truncated or damaged)", path,
                           size, (unsigned long long)o->channels, (unsigned long long)want);
        else if (clbn_get_u64(buf + size - 8) != clbn_fnv1a(CLBN_FNV_INIT, buf, size - 8))
            st = clbn_fail(CLBN_ERROR_FILE_CORRUPT, "%s fails its checksum (damaged)", path);
    }
    if (st == CLBN_SUCCESS) {
        o->eps = u2f(clbn_get_u32(buf + 24));
        o->factor = u2f(clbn_get_u32(buf + 28));
        o->flags = clbn_get_u32(buf + 32);
        o->activation = (clbn_activation)clbn_get_u32(buf + 36);
        if (clbn_check_options(o) != CLBN_SUCCESS) {
            /* The message is this thread's error buffer, which clbn_fail writes: copy it out
             * first (passing it to the vsnprintf that writes the buffer is undefined). */
            char why[256];
            snprintf(why, sizeof why, "%s", clbn_last_error_message());
            st = clbn_fail(CLBN_ERROR_FILE_CORRUPT, "%s holds invalid options: %s", path, why);
        }
    }
    if (st != CLBN_SUCCESS) {
        clbn_bn_options_init(o);
        return st;
    }
    *t = clbn_get_u64(buf + 40);
    *vectors = buf + STATE_HEADER;
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_load(clbn_context *ctx, const char *path, clbn_bn **out) {
    clbn_clear_error();
    if (!out)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn (the output pointer) is NULL");
    *out = NULL;
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (!path)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "path is NULL");
    if (!*path)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT, "path is empty");
    unsigned char *buf = NULL;
    size_t size = 0;
    clbn_status st = clbn_read_file(path, &buf, &size);
    if (st != CLBN_SUCCESS)
        return st;
    clbn_bn_options o;
    uint64_t t = 0;
    const unsigned char *p = NULL;
    st = clbn_bn_parse_state(buf, size, path, &o, &t, &p);
    clbn_bn *bn = NULL;
    if (st == CLBN_SUCCESS)
        st = clbn_bn_create(ctx, &o, &bn);
    if (st == CLBN_SUCCESS) {
        float *vals = malloc((size_t)o.channels * sizeof(float));
        if (!vals)
            st = clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory loading %s", path);
        for (int v = 0; v < CLBN_VECTOR_COUNT && st == CLBN_SUCCESS; v++) {
            for (uint64_t c = 0; c < o.channels; c++, p += 4)
                vals[c] = u2f(clbn_get_u32(p));
            st = clbn_bn_write_vector(bn, (clbn_vector)v, vals, o.channels);
        }
        free(vals);
        bn->t = t;
    }
    free(buf);
    if (st != CLBN_SUCCESS) {
        clbn_bn_release(bn);
        return st;
    }
    *out = bn;
    return CLBN_SUCCESS;
}
