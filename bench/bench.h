/* bench.h — timing helpers of `clbn bench`: a monotonic clock and medians (the copies of the
 * memory roofline are in roofline.h). Benchmarks print figures; they never pass or fail.
 *
 * BENCH_CL_RANGE: the opening of the bench's small OpenCL kernels over n16 float16s, which
 * sets [s, e) and step for item g of G: a contiguous block per item when `blocked` (how a CPU
 * streams best), else interleaved items, neighbours touching neighbouring vectors (how a GPU
 * coalesces). */
#ifndef CLBN_BENCH_H
#define CLBN_BENCH_H

#include <clbn.h>
#include <stddef.h>

/* Seconds from a monotonic clock. */
double bench_now(void);
/* Median of n values (sorts a copy). */
double bench_median(const double *v, size_t n);

#define BENCH_CL_RANGE                                                                             \
    "    ulong s = g, e = n16, step = G;\n"                                                        \
    "    if (blocked) {\n"                                                                         \
    "        ulong per = (n16 + G - 1) / G;\n"                                                     \
    "        s = min(g * per, n16);\n"                                                             \
    "        e = min(s + per, n16);\n"                                                             \
    "        step = 1;\n"                                                                          \
    "    }\n"

#endif
