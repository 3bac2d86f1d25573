/* baseline.c — the first-attempt batch norm `clbn bench` measures clbn against (see baseline.h).
 * Written as specified, not tuned: that is its point. */
#include "baseline.h"

#include <string.h>

static const char baseline_source[] =
    "ulong base_index(ulong j, ulong c, ulong C, ulong HW, int nhwc) {\n"
    "    ulong n = j / HW, hw = j % HW;\n"
    "    return nhwc ? (n * HW + hw) * C + c : n * C * HW + c * HW + hw;\n"
    "}\n"
    "ulong base_channel(ulong i, ulong C, ulong HW, int nhwc) {\n"
    "    return nhwc ? i % C : (i / HW) % C;\n"
    "}\n"
    /* Two sums per channel over the group's local memory, halving until one is left. */
    "void base_tree(__local float *a, __local float *b) {\n"
    "    uint l = get_local_id(0);\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {\n"
    "        if (l < s) {\n"
    "            a[l] += a[l + s];\n"
    "            b[l] += b[l + s];\n"
    "        }\n"
    "        barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    }\n"
    "}\n"
    "__kernel void base_stats(__global const float *x, ulong C, ulong HW, ulong m, int nhwc,\n"
    "                         float eps, __global float *mean, __global float *invstd,\n"
    "                         __local float *s1, __local float *s2) {\n"
    "    ulong c = get_group_id(0);\n"
    "    uint l = get_local_id(0), L = get_local_size(0);\n"
    "    float a = 0.0f, b = 0.0f;\n"
    "    for (ulong j = l; j < m; j += L) {\n"
    "        float v = x[base_index(j, c, C, HW, nhwc)];\n"
    "        a += v;\n"
    "        b += v * v;\n"
    "    }\n"
    "    s1[l] = a;\n"
    "    s2[l] = b;\n"
    "    base_tree(s1, s2);\n"
    "    if (l == 0) {\n"
    "        float mu = s1[0] / (float)m;\n"
    "        float var = fmax(s2[0] / (float)m - mu * mu, 0.0f);\n"
    "        mean[c] = mu;\n"
    "        invstd[c] = rsqrt(var + eps);\n"
    "    }\n"
    "}\n"
    "__kernel void base_apply(__global const float *x, __global float *y, ulong C, ulong HW,\n"
    "                         ulong E, int nhwc, __global const float *mean,\n"
    "                         __global const float *invstd, __global const float *gamma,\n"
    "                         __global const float *beta) {\n"
    "    ulong i = get_global_id(0);\n"
    "    if (i >= E)\n"
    "        return;\n"
    "    ulong c = base_channel(i, C, HW, nhwc);\n"
    "    y[i] = gamma[c] * (x[i] - mean[c]) * invstd[c] + beta[c];\n"
    "}\n"
    "__kernel void base_infer(__global const float *x, __global float *y, ulong C, ulong HW,\n"
    "                         ulong E, int nhwc, __global const float *rmean,\n"
    "                         __global const float *rvar, __global const float *gamma,\n"
    "                         __global const float *beta, float eps) {\n"
    "    ulong i = get_global_id(0);\n"
    "    if (i >= E)\n"
    "        return;\n"
    "    ulong c = base_channel(i, C, HW, nhwc);\n"
    "    y[i] = gamma[c] * (x[i] - rmean[c]) * rsqrt(rvar[c] + eps) + beta[c];\n"
    "}\n"
    "__kernel void base_grad_sums(__global const float *x, __global const float *dy, ulong C,\n"
    "                             ulong HW, ulong m, int nhwc, __global const float *mean,\n"
    "                             __global const float *invstd, __global float *sum_dy,\n"
    "                             __global float *sum_dy_xhat, __local float *s1,\n"
    "                             __local float *s2) {\n"
    "    ulong c = get_group_id(0);\n"
    "    uint l = get_local_id(0), L = get_local_size(0);\n"
    "    float mu = mean[c], is = invstd[c], a = 0.0f, b = 0.0f;\n"
    "    for (ulong j = l; j < m; j += L) {\n"
    "        ulong i = base_index(j, c, C, HW, nhwc);\n"
    "        float g = dy[i];\n"
    "        a += g;\n"
    "        b += g * (x[i] - mu) * is;\n"
    "    }\n"
    "    s1[l] = a;\n"
    "    s2[l] = b;\n"
    "    base_tree(s1, s2);\n"
    "    if (l == 0) {\n"
    "        sum_dy[c] = s1[0];\n"
    "        sum_dy_xhat[c] = s2[0];\n"
    "    }\n"
    "}\n"
    "__kernel void base_grad_dx(__global const float *x, __global const float *dy,\n"
    "                           __global float *dx, ulong C, ulong HW, ulong E, ulong m, int "
    "nhwc,\n"
    "                           __global const float *mean, __global const float *invstd,\n"
    "                           __global const float *gamma, __global const float *sum_dy,\n"
    "                           __global const float *sum_dy_xhat) {\n"
    "    ulong i = get_global_id(0);\n"
    "    if (i >= E)\n"
    "        return;\n"
    "    ulong c = base_channel(i, C, HW, nhwc);\n"
    "    float fm = (float)m, is = invstd[c], xhat = (x[i] - mean[c]) * is;\n"
    "    dx[i] = gamma[c] * is / fm * (fm * dy[i] - sum_dy[c] - xhat * sum_dy_xhat[c]);\n"
    "}\n";

/* Sets the kernel's arguments in order from a list of (size, pointer) pairs; a NULL pointer
 * with a size asks for that much local memory. */
typedef struct arg {
    size_t size;
    const void *value;
} arg;

static cl_int set_args(cl_kernel k, const arg *a, cl_uint n) {
    cl_int err = CL_SUCCESS;
    for (cl_uint i = 0; i < n && err == CL_SUCCESS; i++)
        err = clSetKernelArg(k, i, a[i].size, a[i].value);
    return err;
}

int bench_baseline_init(bench_baseline *b, clbn_context *ctx, size_t channels, float eps,
                        const float *gamma, const float *beta, const float *running_mean,
                        const float *running_var) {
    memset(b, 0, sizeof *b);
    b->channels = channels;
    b->eps = eps;
    cl_context cc;
    clbn_device_info info;
    if (clbn_context_get_cl(ctx, &cc, &b->queue) != CLBN_SUCCESS ||
        clbn_context_get_device_info(ctx, &info) != CLBN_SUCCESS)
        return 1;
    const char *src = baseline_source;
    cl_int err = CL_SUCCESS;
    b->program = clCreateProgramWithSource(cc, 1, &src, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(b->program, 1, &info.device, "-cl-std=CL1.2", NULL, NULL);
    cl_kernel *k[] = {&b->stats, &b->apply, &b->infer, &b->grad_sums, &b->grad_dx};
    const char *names[] = {"base_stats", "base_apply", "base_infer", "base_grad_sums",
                           "base_grad_dx"};
    for (size_t i = 0; i < 5 && err == CL_SUCCESS; i++)
        *k[i] = clCreateKernel(b->program, names[i], &err);
    /* 256 wide, or the most the device and both reduction kernels allow, as a power of two
     * for the tree. */
    size_t local = 256, kl = 0;
    if (info.max_work_group_size < local)
        local = info.max_work_group_size;
    for (size_t i = 0; i < 5 && err == CL_SUCCESS; i++)
        if (clGetKernelWorkGroupInfo(*k[i], info.device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kl, &kl,
                                     NULL) == CL_SUCCESS &&
            kl && kl < local)
            local = kl;
    while (local & (local - 1))
        local &= local - 1;
    b->local = local ? local : 1;
    const size_t bytes = channels * sizeof(float);
    const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
    cl_mem *bufs[] = {&b->gamma, &b->beta,   &b->running_mean, &b->running_var,
                      &b->mean,  &b->invstd, &b->sum_dy,       &b->sum_dy_xhat};
    const float *host[] = {gamma, beta, running_mean, running_var};
    for (size_t i = 0; i < 8 && err == CL_SUCCESS; i++)
        *bufs[i] = clCreateBuffer(cc, i < 4 ? in : CL_MEM_READ_WRITE, bytes,
                                  i < 4 ? (void *)host[i] : NULL, &err);
    if (err != CL_SUCCESS) {
        bench_baseline_release(b);
        return 1;
    }
    return 0;
}

cl_int bench_baseline_enqueue(bench_baseline *b, bench_baseline_op op, const clbn_shape *s,
                              cl_mem x, cl_mem y, cl_mem dy, cl_mem dx) {
    const int is_nc = s->layout == CLBN_LAYOUT_NC;
    cl_ulong C = s->c, HW = is_nc ? 1 : s->h * s->w, m = s->n * HW, E = m * C;
    cl_int nhwc = s->layout != CLBN_LAYOUT_NCHW; /* NC indexes as NHWC with HW = 1 */
    const size_t L = b->local, lb = L * sizeof(float);
    size_t groups = (size_t)C * L, elems = ((size_t)E + L - 1) / L * L;
    cl_int err;
    switch (op) {
    case BENCH_BASELINE_TRAIN: {
        arg a1[] = {{sizeof x, &x},
                    {8, &C},
                    {8, &HW},
                    {8, &m},
                    {4, &nhwc},
                    {4, &b->eps},
                    {sizeof(cl_mem), &b->mean},
                    {sizeof(cl_mem), &b->invstd},
                    {lb, NULL},
                    {lb, NULL}};
        err = set_args(b->stats, a1, 10);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(b->queue, b->stats, 1, NULL, &groups, &L, 0, NULL, NULL);
        arg a2[] = {{sizeof x, &x},
                    {sizeof y, &y},
                    {8, &C},
                    {8, &HW},
                    {8, &E},
                    {4, &nhwc},
                    {sizeof(cl_mem), &b->mean},
                    {sizeof(cl_mem), &b->invstd},
                    {sizeof(cl_mem), &b->gamma},
                    {sizeof(cl_mem), &b->beta}};
        if (err == CL_SUCCESS)
            err = set_args(b->apply, a2, 10);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(b->queue, b->apply, 1, NULL, &elems, &L, 0, NULL, NULL);
        return err;
    }
    case BENCH_BASELINE_INFER: {
        arg a[] = {{sizeof x, &x},
                   {sizeof y, &y},
                   {8, &C},
                   {8, &HW},
                   {8, &E},
                   {4, &nhwc},
                   {sizeof(cl_mem), &b->running_mean},
                   {sizeof(cl_mem), &b->running_var},
                   {sizeof(cl_mem), &b->gamma},
                   {sizeof(cl_mem), &b->beta},
                   {4, &b->eps}};
        err = set_args(b->infer, a, 11);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(b->queue, b->infer, 1, NULL, &elems, &L, 0, NULL, NULL);
        return err;
    }
    case BENCH_BASELINE_BACKWARD: {
        arg a1[] = {{sizeof x, &x},
                    {sizeof dy, &dy},
                    {8, &C},
                    {8, &HW},
                    {8, &m},
                    {4, &nhwc},
                    {sizeof(cl_mem), &b->mean},
                    {sizeof(cl_mem), &b->invstd},
                    {sizeof(cl_mem), &b->sum_dy},
                    {sizeof(cl_mem), &b->sum_dy_xhat},
                    {lb, NULL},
                    {lb, NULL}};
        err = set_args(b->grad_sums, a1, 12);
        if (err == CL_SUCCESS)
            err =
                clEnqueueNDRangeKernel(b->queue, b->grad_sums, 1, NULL, &groups, &L, 0, NULL, NULL);
        arg a2[] = {{sizeof x, &x},
                    {sizeof dy, &dy},
                    {sizeof dx, &dx},
                    {8, &C},
                    {8, &HW},
                    {8, &E},
                    {8, &m},
                    {4, &nhwc},
                    {sizeof(cl_mem), &b->mean},
                    {sizeof(cl_mem), &b->invstd},
                    {sizeof(cl_mem), &b->gamma},
                    {sizeof(cl_mem), &b->sum_dy},
                    {sizeof(cl_mem), &b->sum_dy_xhat}};
        if (err == CL_SUCCESS)
            err = set_args(b->grad_dx, a2, 13);
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(b->queue, b->grad_dx, 1, NULL, &elems, &L, 0, NULL, NULL);
        return err;
    }
    }
    return CL_INVALID_VALUE;
}

void bench_baseline_release(bench_baseline *b) {
    cl_kernel k[] = {b->stats, b->apply, b->infer, b->grad_sums, b->grad_dx};
    for (size_t i = 0; i < 5; i++)
        if (k[i])
            clReleaseKernel(k[i]);
    cl_mem m[] = {b->gamma, b->beta,   b->running_mean, b->running_var,
                  b->mean,  b->invstd, b->sum_dy,       b->sum_dy_xhat};
    for (size_t i = 0; i < 8; i++)
        if (m[i])
            clReleaseMemObject(m[i]);
    if (b->program)
        clReleaseProgram(b->program);
    memset(b, 0, sizeof *b);
}
