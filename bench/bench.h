/* bench.h — timing helpers of `clbn bench`: a monotonic clock, medians, and the device-copy
 * roofline every figure is compared with. Benchmarks print figures; they never pass or fail. */
#ifndef CLBN_BENCH_H
#define CLBN_BENCH_H

#include <clbn.h>
#include <stddef.h>

/* Seconds from a monotonic clock. */
double bench_now(void);
/* Median of n values (sorts a copy). */
double bench_median(const double *v, size_t n);
/* The copy roofline: a kernel that copies n floats from x to y with all compute units, the
 * way clbn's kernels stream (clEnqueueCopyBuffer is a single-threaded memcpy on PoCL, so it
 * understates what the device can move). */
typedef struct bench_copy {
    cl_program program;
    cl_kernel kernel;
    size_t global, local;
} bench_copy;

/* Builds the copy kernel for ctx's device and binds x, y and n. Nonzero on failure. */
int bench_copy_init(bench_copy *c, clbn_context *ctx, cl_mem x, cl_mem y, size_t n);
cl_int bench_copy_enqueue(bench_copy *c, cl_command_queue q);
void bench_copy_release(bench_copy *c);

#endif
