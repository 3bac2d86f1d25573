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

/* ---- OpenCL entry points (cl_api.c) ----
 * Every OpenCL call of the library goes through clbn_cl, so tests (linked statically) can
 * replace entries: fail the k-th call, fake a device's answers, count objects. clbn_cl_real
 * keeps the loader's functions. Functions that create an object report errors through their
 * last parameter, errcode_ret. One row per function: return type, name, parameters, arguments. */
// clang-format off
#define CLBN_CL_CALLS(X) \
    X(cl_int, clGetPlatformIDs, (cl_uint n, cl_platform_id *p, cl_uint *np), (n, p, np)) \
    X(cl_int, clGetPlatformInfo, (cl_platform_id p, cl_platform_info w, size_t n, void *v, size_t *r), (p, w, n, v, r)) \
    X(cl_int, clGetDeviceIDs, (cl_platform_id p, cl_device_type t, cl_uint n, cl_device_id *d, cl_uint *nd), (p, t, n, d, nd)) \
    X(cl_int, clGetDeviceInfo, (cl_device_id d, cl_device_info w, size_t n, void *v, size_t *r), (d, w, n, v, r)) \
    X(cl_context, clCreateContext, (const cl_context_properties *p, cl_uint n, const cl_device_id *d, void (CL_CALLBACK *f)(const char *, const void *, size_t, void *), void *u, cl_int *errcode_ret), (p, n, d, f, u, errcode_ret)) \
    X(cl_int, clRetainContext, (cl_context c), (c)) \
    X(cl_int, clReleaseContext, (cl_context c), (c)) \
    X(cl_command_queue, clCreateCommandQueue, (cl_context c, cl_device_id d, cl_command_queue_properties p, cl_int *errcode_ret), (c, d, p, errcode_ret)) \
    X(cl_int, clGetCommandQueueInfo, (cl_command_queue q, cl_command_queue_info w, size_t n, void *v, size_t *r), (q, w, n, v, r)) \
    X(cl_int, clRetainCommandQueue, (cl_command_queue q), (q)) \
    X(cl_int, clReleaseCommandQueue, (cl_command_queue q), (q)) \
    X(cl_int, clFinish, (cl_command_queue q), (q)) \
    X(cl_mem, clCreateBuffer, (cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *errcode_ret), (c, f, n, h, errcode_ret)) \
    X(cl_int, clGetMemObjectInfo, (cl_mem m, cl_mem_info w, size_t n, void *v, size_t *r), (m, w, n, v, r)) \
    X(cl_int, clReleaseMemObject, (cl_mem m), (m)) \
    X(cl_int, clEnqueueReadBuffer, (cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, void *h, cl_uint nw, const cl_event *w, cl_event *e), (q, m, b, o, n, h, nw, w, e)) \
    X(cl_int, clEnqueueWriteBuffer, (cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, const void *h, cl_uint nw, const cl_event *w, cl_event *e), (q, m, b, o, n, h, nw, w, e)) \
    X(cl_program, clCreateProgramWithSource, (cl_context c, cl_uint n, const char **s, const size_t *l, cl_int *errcode_ret), (c, n, s, l, errcode_ret)) \
    X(cl_program, clCreateProgramWithBinary, (cl_context c, cl_uint n, const cl_device_id *d, const size_t *l, const unsigned char **b, cl_int *bs, cl_int *errcode_ret), (c, n, d, l, b, bs, errcode_ret)) \
    X(cl_int, clBuildProgram, (cl_program p, cl_uint n, const cl_device_id *d, const char *o, void (CL_CALLBACK *f)(cl_program, void *), void *u), (p, n, d, o, f, u)) \
    X(cl_int, clGetProgramInfo, (cl_program p, cl_program_info w, size_t n, void *v, size_t *r), (p, w, n, v, r)) \
    X(cl_int, clGetProgramBuildInfo, (cl_program p, cl_device_id d, cl_program_build_info w, size_t n, void *v, size_t *r), (p, d, w, n, v, r)) \
    X(cl_int, clReleaseProgram, (cl_program p), (p)) \
    X(cl_kernel, clCreateKernel, (cl_program p, const char *name, cl_int *errcode_ret), (p, name, errcode_ret)) \
    X(cl_int, clGetKernelWorkGroupInfo, (cl_kernel k, cl_device_id d, cl_kernel_work_group_info w, size_t n, void *v, size_t *r), (k, d, w, n, v, r)) \
    X(cl_int, clSetKernelArg, (cl_kernel k, cl_uint i, size_t n, const void *v), (k, i, n, v)) \
    X(cl_int, clReleaseKernel, (cl_kernel k), (k)) \
    X(cl_int, clEnqueueNDRangeKernel, (cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off, const size_t *g, const size_t *l, cl_uint nw, const cl_event *w, cl_event *e), (q, k, dim, off, g, l, nw, w, e)) \
    X(cl_int, clReleaseEvent, (cl_event e), (e))
// clang-format on

typedef struct clbn_cl_api {
#define CLBN_CL_FIELD_(ret, name, params, args) ret(CL_API_CALL *name) params;
    CLBN_CL_CALLS(CLBN_CL_FIELD_)
#undef CLBN_CL_FIELD_
} clbn_cl_api;
extern clbn_cl_api clbn_cl;
extern const clbn_cl_api clbn_cl_real;

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
    CLBN_K_ROWS_STATS_NCHW, /* the kernels of CPU plans (rows.cl) */
    CLBN_K_ROWS_APPLY_NCHW,
    CLBN_K_ROWS_BWD_REDUCE_NCHW,
    CLBN_K_ROWS_DX_NCHW,
    CLBN_K_ROWS_STATS_NHWC,
    CLBN_K_ROWS_APPLY_NHWC,
    CLBN_K_ROWS_BWD_REDUCE_NHWC,
    CLBN_K_ROWS_DX_NHWC,
    CLBN_K_COUNT
} clbn_kernel_id;
extern const char *const clbn_kernel_names[CLBN_K_COUNT];

/* Program variants: vector width 1, 2, 4, 8, 16 times channel vectors per NHWC work-item 1, 2,
 * 4, 8 (compile-time, so the per-item arrays have a constant size). Index:
 * log2(width) * CLBN_CPI_VARIANTS + log2(cpi). */
#define CLBN_VEC_VARIANTS 5
#define CLBN_CPI_VARIANTS 4
#define CLBN_VARIANTS (CLBN_VEC_VARIANTS * CLBN_CPI_VARIANTS)

/* A kernel's own limits, asked once per built program: CL_KERNEL_WORK_GROUP_SIZE (register
 * pressure can set it below the device's), CL_KERNEL_LOCAL_MEM_SIZE before any local argument
 * is set (what the kernel uses by itself), CL_KERNEL_PRIVATE_MEM_SIZE. */
typedef struct clbn_kernel_info {
    size_t work_group_size;
    uint64_t local_bytes, private_bytes;
} clbn_kernel_info;

/* The largest number of work-groups in grid dimension 0 on any device (NVIDIA: 2^31 - 1). */
#define CLBN_MAX_GROUPS_DIM0 2147483647ull

struct clbn_context_s {
    cl_context cl_ctx;
    cl_command_queue queue;
    cl_device_id device;
    clbn_device_info info;
    clbn_limits limits; /* in force */
    char *cache_dir;    /* NULL: no cache */
    pthread_mutex_t lock;
    cl_program programs[CLBN_VARIANTS];
    clbn_kernel_info kinfo[CLBN_VARIANTS][CLBN_K_COUNT];
    clbn_tuning tuning; /* every field filled in */
    int tuning_source;  /* CLBN_TUNING_* */
};

/* ---- tuned parameters (tuning.c) ---- */
void clbn_tuning_defaults(clbn_tuning *t);
/* Loads the context's stored set when there is a valid one (else leaves the defaults). */
void clbn_tuning_load(clbn_context *ctx);

/* Returns the built program of a variant (built on first use, through the disk cache, with its
 * kernels' limits asked). Thread-safe. */
clbn_status clbn_context_program(clbn_context *ctx, int variant, cl_program *program);
/* CLBN_ERROR_INVALID_ARGUMENT (naming `name`) unless queue executes in order. */
clbn_status clbn_check_in_order(cl_command_queue queue, const char *name);
/* A kernel's limits in a variant, building the program first if needed. Thread-safe. */
clbn_status clbn_context_kernel_info(clbn_context *ctx, int variant, clbn_kernel_id id,
                                     clbn_kernel_info *info);

/* ---- program cache (cache.c) ---- */
/* Builds `source` with `options` for ctx's device, loading and storing a binary in the cache
 * folder when there is one. A build failure returns CLBN_ERROR_BUILD_FAILED with the log. */
clbn_status clbn_build_cached(clbn_context *ctx, const char *source, size_t source_len,
                              const char *options, cl_program *program);
/* Checks a cache entry read from disk (magic, length, checksum): 1 with the program binary in
 * *bin (inside data) and *blen, or 0 for a damaged or foreign entry. Pure: no OpenCL, no I/O. */
int clbn_cache_parse(const unsigned char *data, size_t n, const unsigned char **bin, size_t *blen);
/* The cache folder to use: options, $CLBN_CACHE_DIR, $XDG_CACHE_HOME/clbn, ~/.cache/clbn.
 * malloc'd; NULL when none can be found. */
char *clbn_default_cache_dir(const char *requested);

/* ---- devices (device.c) ---- */
clbn_status clbn_fill_device_info(cl_platform_id platform, cl_device_id device,
                                  uint32_t platform_index, uint32_t device_index,
                                  clbn_device_info *info);
clbn_status clbn_select_device(const char *selector, clbn_device_info *info);

/* ---- state object ---- */
enum { CLBN_ALT_MEAN = 0, CLBN_ALT_VAR = 1, CLBN_ALT_INVSTD = 1 };

struct clbn_bn_s {
    clbn_context *ctx;
    clbn_bn_options opt;
    cl_mem vec[CLBN_VECTOR_COUNT];
    cl_mem run_alt[2];   /* where a training forward writes the new running mean/var */
    cl_mem saved_alt[2]; /* where it writes the new saved mean/invstd (no caller buffers) */
    cl_mem tmp_stats[2]; /* batch mean/invstd of an untracked inference forward */
    cl_mem shift; /* 2C floats, per-call scratch: each channel's mean as (pivot, mean - pivot),
                     written and read by the kernels of one call, never across calls */
    uint64_t t;
    /* Scratch for split reductions and backward sums: counts (ulong), a and b (float). */
    cl_mem scratch_n, scratch_a, scratch_b;
    uint64_t scratch_n_len, scratch_a_len, scratch_b_len; /* elements */
    cl_kernel kernels[CLBN_VARIANTS][CLBN_K_COUNT];
};

clbn_status clbn_bn_kernel(clbn_bn *bn, int variant, clbn_kernel_id id, cl_kernel *kernel);
/* Validates options (used by create and load). */
clbn_status clbn_check_options(const clbn_bn_options *o);
/* Checks a state file read into buf (size bytes; path names it in messages, NULL: "(memory)"):
 * magic, version, header, size, checksum, options. On success *o holds the options, *t the
 * batches tracked and *vectors the CLBN_VECTOR_COUNT * channels little-endian floats (inside
 * buf); otherwise the CLBN_ERROR_FILE_* status with its message, *o the defaults, *vectors NULL.
 * Pure: no OpenCL, no I/O (clbn_bn_load's checks, also run by the fuzz target). */
clbn_status clbn_bn_parse_state(const unsigned char *buf, size_t size, const char *path,
                                clbn_bn_options *o, uint64_t *t, const unsigned char **vectors);

#endif
