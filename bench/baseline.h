/* baseline.h — what a competent engineer writes first, measured next to clbn by `clbn bench`:
 * scalar loads, one 256-wide work-group per channel reducing Σx and Σx² (var = Σx²/m − mean²),
 * then a 1-D element-wise kernel that finds each element's channel by division. Inference is
 * the element-wise kernel alone, with the running statistics; backward is a per-channel
 * reduction of Σdy and Σdy·x̂, then a 1-D dx kernel. */
#ifndef CLBN_BENCH_BASELINE_H
#define CLBN_BENCH_BASELINE_H

#include <clbn.h>
#include <stddef.h>

typedef enum bench_baseline_op {
    BENCH_BASELINE_TRAIN = 0,
    BENCH_BASELINE_INFER = 1,
    BENCH_BASELINE_BACKWARD = 2
} bench_baseline_op;

typedef struct bench_baseline {
    cl_command_queue queue;
    cl_program program;
    cl_kernel stats, apply, infer, grad_sums, grad_dx;
    /* Per channel: gamma, beta, running mean and var, and what the kernels write: the batch's
     * mean and invstd, Σdy and Σdy·x̂. */
    cl_mem gamma, beta, running_mean, running_var, mean, invstd, sum_dy, sum_dy_xhat;
    size_t channels, local;
    float eps;
} bench_baseline;

/* Builds the kernels for ctx's device and uploads the C values of gamma, beta and the running
 * mean and variance. Nonzero on failure. */
int bench_baseline_init(bench_baseline *b, clbn_context *ctx, size_t channels, float eps,
                        const float *gamma, const float *beta, const float *running_mean,
                        const float *running_var);
/* Enqueues one op on shape s (NCHW, NHWC or NC; s->c must equal channels): train reads x and
 * writes y (and the batch's mean and invstd), infer reads x and writes y, backward reads x,
 * dy and the last train's mean and invstd and writes dx. Does not wait. */
cl_int bench_baseline_enqueue(bench_baseline *b, bench_baseline_op op, const clbn_shape *s,
                              cl_mem x, cl_mem y, cl_mem dy, cl_mem dx);
void bench_baseline_release(bench_baseline *b);

#endif
