/* internal.h — what the host library's files share: the context and state-object structs,
 * error reporting, the program cache and the kernel table. Not installed. */
#ifndef CLBN_INTERNAL_H
#define CLBN_INTERNAL_H

#include "clbn.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

/* ---- errors (status.c) ---- */
/* Sets this thread's detail message and returns st. */
clbn_status clbn_fail(clbn_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Appends to the detail message (a build log). */
void clbn_fail_append(const char *text);
/* Clears the detail message at the start of a public call. */
void clbn_clear_error(void);

/* ---- util.c ---- */
uint64_t clbn_fnv1a(uint64_t h, const void *data, size_t n);
#define CLBN_FNV_INIT 0xcbf29ce484222325ull
/* Writes data to path atomically: temporary file in the same folder, fsync, rename. */
clbn_status clbn_write_file_atomic(const char *path, const void *data, size_t n);
/* Reads a whole file into a malloc'd buffer. */
clbn_status clbn_read_file(const char *path, unsigned char **data, size_t *n);
/* Little-endian integers in files (cache entries, state files). */
void clbn_put_u32(unsigned char *p, uint32_t v);
void clbn_put_u64(unsigned char *p, uint64_t v);
uint32_t clbn_get_u32(const unsigned char *p);
uint64_t clbn_get_u64(const unsigned char *p);
/* mkdir -p. */
int clbn_mkdirs(const char *path);

/* ---- kernels ---- */
typedef enum clbn_kernel_id {
    CLBN_K_STATS_NCHW = 0,
    CLBN_K_STATS_NHWC,
    CLBN_K_STATS_MERGE,
    CLBN_K_APPLY_NCHW,
    CLBN_K_APPLY_NHWC,
    CLBN_K_BWD_REDUCE_NCHW,
    CLBN_K_BWD_REDUCE_NHWC,
    CLBN_K_BWD_MERGE,
    CLBN_K_DX_NCHW,
    CLBN_K_DX_NHWC,
    CLBN_K_COUNT
} clbn_kernel_id;
extern const char *const clbn_kernel_names[CLBN_K_COUNT];

/* Vector widths 1, 2, 4, 8, 16 are separate program variants (index = log2). */
#define CLBN_VEC_VARIANTS 5

struct clbn_context_s {
    cl_context cl_ctx;
    cl_command_queue queue;
    cl_device_id device;
    clbn_device_info info;
    clbn_limits limits; /* in force */
    char *cache_dir;    /* NULL: no cache */
    pthread_mutex_t lock;
    cl_program programs[CLBN_VEC_VARIANTS];
};

/* Returns the built program for vector width 1 << variant (built on first use, through the
 * disk cache). Thread-safe. */
clbn_status clbn_context_program(clbn_context *ctx, int variant, cl_program *program);

/* ---- program cache (cache.c) ---- */
/* Builds `source` with `options` for ctx's device, loading and storing a binary in the cache
 * folder when there is one. A build failure returns CLBN_ERROR_BUILD_FAILED with the log. */
clbn_status clbn_build_cached(clbn_context *ctx, const char *source, size_t source_len,
                              const char *options, cl_program *program);
/* The cache folder to use: options, $CLBN_CACHE_DIR, $XDG_CACHE_HOME/clbn, ~/.cache/clbn.
 * malloc'd; NULL when none can be found. */
char *clbn_default_cache_dir(const char *requested);

/* ---- devices (device.c) ---- */
clbn_status clbn_fill_device_info(cl_platform_id platform, cl_device_id device,
                                  uint32_t platform_index, uint32_t device_index,
                                  clbn_device_info *info);
clbn_status clbn_select_device(const char *selector, clbn_device_info *info);

/* ---- state object ---- */
enum { CLBN_RUN_ALT_MEAN = 0, CLBN_RUN_ALT_VAR = 1 };

struct clbn_bn_s {
    clbn_context *ctx;
    clbn_bn_options opt;
    cl_mem vec[CLBN_VECTOR_COUNT];
    cl_mem run_alt[2];   /* where a training forward writes the new running mean/var */
    cl_mem tmp_stats[2]; /* batch mean/invstd of an untracked inference forward */
    cl_mem shift;        /* 2C floats: each channel's mean as (pivot, mean - pivot) */
    uint64_t t;
    /* Scratch for split reductions and backward sums: counts (ulong), a and b (float). */
    cl_mem scratch_n, scratch_a, scratch_b;
    uint64_t scratch_n_len, scratch_a_len, scratch_b_len; /* elements */
    cl_kernel kernels[CLBN_VEC_VARIANTS][CLBN_K_COUNT];
};

clbn_status clbn_bn_kernel(clbn_bn *bn, int variant, clbn_kernel_id id, cl_kernel *kernel);
/* Validates options (used by create and load). */
clbn_status clbn_check_options(const clbn_bn_options *o);

#endif
