/* tuning.c — the tuned parameters of a context: the defaults, the set `clbn tune` stores in the
 * cache folder (one small text file per platform, device, driver version and limits in force,
 * with a checksum), and loading it when a context is created. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TUNING_VERSION 1

void clbn_tuning_defaults(clbn_tuning *t) {
    t->cpu_reduce_items_per_cu = 2;
    t->cpu_elementwise_items_per_cu = 2;
    t->gpu_work_group = 256;
    t->gpu_groups_per_cu = 4;
}

/* The fields of a set in a fixed order, with their ranges. */
typedef struct field {
    const char *name;
    size_t offset;
    uint32_t lo, hi;
} field;
static const field fields[] = {
    {"cpu_reduce_items_per_cu", offsetof(clbn_tuning, cpu_reduce_items_per_cu), 1, 64},
    {"cpu_elementwise_items_per_cu", offsetof(clbn_tuning, cpu_elementwise_items_per_cu), 1, 64},
    {"gpu_work_group", offsetof(clbn_tuning, gpu_work_group), 1, 4096},
    {"gpu_groups_per_cu", offsetof(clbn_tuning, gpu_groups_per_cu), 1, 64},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

static uint32_t *at(clbn_tuning *t, size_t i) {
    return (uint32_t *)(void *)((char *)t + fields[i].offset);
}

/* Fills zero fields with the defaults and checks the ranges; 0 when valid, else the index of
 * the first bad field plus 1. */
static size_t complete(clbn_tuning *t) {
    clbn_tuning d;
    clbn_tuning_defaults(&d);
    for (size_t i = 0; i < NFIELDS; i++) {
        uint32_t *v = at(t, i);
        if (*v == 0)
            *v = *at(&d, i);
        if (*v < fields[i].lo || *v > fields[i].hi)
            return i + 1;
    }
    return 0;
}

/* The key: what the set was measured on. */
static uint64_t tuning_key(const clbn_context *ctx) {
    const clbn_device_info *d = &ctx->info;
    const clbn_limits *l = &ctx->limits;
    uint64_t h = CLBN_FNV_INIT;
    const char *s[] = {d->platform_name, d->device_name, d->driver_version, d->device_version};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        h = clbn_fnv1a(h, s[i], strlen(s[i]) + 1);
    const uint64_t v[] = {l->max_work_group_size, l->local_mem_size,         l->cache_size,
                          l->compute_units,       l->vector_width,           l->device_type,
                          l->max_groups_per_dim,  l->kernel_work_group_size, l->private_mem_size};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned char b[8];
        clbn_put_u64(b, v[i]);
        h = clbn_fnv1a(h, b, sizeof b);
    }
    return h;
}

static int tuning_path(const clbn_context *ctx, char *path, size_t cap) {
    if (!ctx->cache_dir)
        return 0;
    int n = snprintf(path, cap, "%s/tuning-%016llx.txt", ctx->cache_dir,
                     (unsigned long long)tuning_key(ctx));
    return n > 0 && (size_t)n < cap;
}

void clbn_tuning_load(clbn_context *ctx) {
    char path[4096];
    if (!tuning_path(ctx, path, sizeof path))
        return;
    unsigned char *data = NULL;
    size_t n = 0;
    if (clbn_read_file(path, &data, &n) != CLBN_SUCCESS) {
        clbn_clear_error(); /* no stored set: the defaults */
        return;
    }
    /* The checksum line covers every byte before it. */
    char *text = realloc(data, n + 1);
    if (!text) {
        free(data);
        return;
    }
    text[n] = '\0';
    char *sum = strstr(text, "checksum ");
    unsigned long long want = 0, key = 0;
    unsigned version = 0;
    clbn_tuning t;
    memset(&t, 0, sizeof t);
    int ok = sum && sscanf(sum, "checksum %llx", &want) == 1 &&
             clbn_fnv1a(CLBN_FNV_INIT, text, (size_t)(sum - text)) == want &&
             sscanf(text, "clbn-tuning %u", &version) == 1 && version == TUNING_VERSION;
    const char *k = ok ? strstr(text, "\nkey ") : NULL;
    ok = ok && k && sscanf(k, "\nkey %llx", &key) == 1 && key == tuning_key(ctx);
    for (size_t i = 0; ok && i < NFIELDS; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "\n%s ", fields[i].name);
        const char *f = strstr(text, pat);
        unsigned v = 0;
        ok = f && sscanf(f + strlen(pat), "%u", &v) == 1;
        *at(&t, i) = v;
    }
    if (ok && complete(&t) == 0) {
        ctx->tuning = t;
        ctx->tuning_source = CLBN_TUNING_FILE;
    }
    free(text);
}

clbn_status clbn_context_get_tuning(const clbn_context *ctx, clbn_tuning *tuning, int *source) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (!tuning)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "tuning is NULL");
    *tuning = ctx->tuning;
    if (source)
        *source = ctx->tuning_source;
    return CLBN_SUCCESS;
}

clbn_status clbn_context_set_tuning(clbn_context *ctx, const clbn_tuning *tuning) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    clbn_tuning t;
    if (tuning)
        t = *tuning;
    else
        memset(&t, 0, sizeof t);
    size_t bad = complete(&t);
    if (bad)
        return clbn_fail(CLBN_ERROR_INVALID_OPTION, "tuning.%s = %u: must be %u to %u",
                         fields[bad - 1].name, *at(&t, bad - 1), fields[bad - 1].lo,
                         fields[bad - 1].hi);
    ctx->tuning = t;
    ctx->tuning_source = tuning ? CLBN_TUNING_SET : CLBN_TUNING_DEFAULT;
    return CLBN_SUCCESS;
}

clbn_status clbn_context_save_tuning(const clbn_context *ctx, char *path, size_t cap) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    char file[4096];
    if (!tuning_path(ctx, file, sizeof file))
        return clbn_fail(CLBN_ERROR_IO, "the context has no cache folder to store the tuning in");
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof text, "clbn-tuning %d\nkey %016llx\ndevice %s\n",
                                TUNING_VERSION, (unsigned long long)tuning_key(ctx),
                                ctx->info.device_name);
    clbn_tuning t = ctx->tuning;
    for (size_t i = 0; i < NFIELDS && n < sizeof text; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s %u\n", fields[i].name, *at(&t, i));
    if (n >= sizeof text - 32)
        return clbn_fail(CLBN_ERROR_INTERNAL, "the tuning file does not fit its buffer");
    n += (size_t)snprintf(text + n, sizeof text - n, "checksum %016llx\n",
                          (unsigned long long)clbn_fnv1a(CLBN_FNV_INIT, text, n));
    if (clbn_mkdirs(ctx->cache_dir) != 0)
        return clbn_fail(CLBN_ERROR_IO, "cannot create the cache folder %s", ctx->cache_dir);
    clbn_status st = clbn_write_file_atomic(file, text, n);
    if (st == CLBN_SUCCESS && path && cap)
        snprintf(path, cap, "%s", file);
    return st;
}
