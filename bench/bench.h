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
/* Seconds of one device-to-device copy of `bytes` (clEnqueueCopyBuffer then clFinish). */
double bench_copy_seconds(cl_command_queue q, cl_mem src, cl_mem dst, size_t bytes);

#endif
