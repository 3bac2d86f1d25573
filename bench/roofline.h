/* roofline.h — the memory limit of `clbn bench`: several ways to copy one tensor (OpenCL copy
 * kernels of different shapes, one with non-temporal stores where the compiler has them,
 * clEnqueueCopyBuffer, and a host copy on every core when the device shares host memory). The
 * fastest is the roofline each op is held to. */
#ifndef CLBN_BENCH_ROOFLINE_H
#define CLBN_BENCH_ROOFLINE_H

#include <clbn.h>
#include <stddef.h>

#define BENCH_ROOF_MAX 16

typedef enum bench_roof_kind {
    BENCH_ROOF_KERNEL,      /* a copy kernel (global, local below) */
    BENCH_ROOF_COPY_BUFFER, /* clEnqueueCopyBuffer */
    BENCH_ROOF_HOST,        /* memcpy on every core, between two host arrays */
    BENCH_ROOF_HOST_STREAM  /* the same with non-temporal stores (x86-64 only) */
} bench_roof_kind;

typedef struct bench_roof_variant {
    char name[48]; /* "blocked16 G=2x1 L=1", "copy-buffer", "host 2 threads", ... */
    bench_roof_kind kind;
    cl_kernel kernel;
    size_t global, local;
} bench_roof_variant;

typedef struct bench_roofline {
    cl_command_queue queue;
    cl_program program, program_nt; /* program_nt: NULL when non-temporal stores do not build */
    cl_mem x, y;
    size_t n; /* floats copied */
    bench_roof_variant v[BENCH_ROOF_MAX];
    size_t count;
    float *host_x, *host_y;
    unsigned threads;
} bench_roofline;

/* Builds every variant the device allows, copying n floats from x to y (and between two host
 * arrays of n floats when the device shares host memory). Nonzero on failure (an OpenCL
 * failure other than the non-temporal build, or host memory). */
int bench_roofline_init(bench_roofline *r, clbn_context *ctx, cl_mem x, cl_mem y, size_t n);
/* Runs variant i to completion (blocking). Returns an OpenCL status. */
cl_int bench_roofline_run(bench_roofline *r, size_t i);
/* Bytes a copy moves (read plus write). */
double bench_roofline_bytes(const bench_roofline *r);
void bench_roofline_release(bench_roofline *r);

#endif
