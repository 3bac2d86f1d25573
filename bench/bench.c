/* bench.c — timing helpers of `clbn bench` (see bench.h). */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(const double *v, size_t n) {
    if (n == 0)
        return 0.0;
    double *c = malloc(n * sizeof *c);
    if (!c)
        return v[0];
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

static const char copy_source[] =
    "__kernel void bench_copy(__global const float *x, __global float *y, ulong n, int blocked) {\n"
    "    ulong g = get_global_id(0), G = get_global_size(0), n16 = n / 16;\n"
    "    ulong s = g, e = n16, step = G;\n"
    "    if (blocked) {\n"
    "        ulong per = (n16 + G - 1) / G;\n"
    "        s = min(g * per, n16);\n"
    "        e = min(s + per, n16);\n"
    "        step = 1;\n"
    "    }\n"
    "    for (ulong i = s; i < e; i += step)\n"
    "        vstore16(vload16(i, x), i, y);\n"
    "    if (g == 0)\n"
    "        for (ulong i = n16 * 16; i < n; i++)\n"
    "            y[i] = x[i];\n"
    "}\n";

int bench_copy_init(bench_copy *c, clbn_context *ctx, cl_mem x, cl_mem y, size_t n) {
    memset(c, 0, sizeof *c);
    cl_context cc;
    cl_command_queue q;
    clbn_device_info info;
    clbn_limits lim;
    if (clbn_context_get_cl(ctx, &cc, &q) != CLBN_SUCCESS ||
        clbn_context_get_device_info(ctx, &info) != CLBN_SUCCESS ||
        clbn_context_get_limits(ctx, &lim) != CLBN_SUCCESS)
        return 1;
    const char *src = copy_source;
    cl_int err = CL_SUCCESS;
    c->program = clCreateProgramWithSource(cc, 1, &src, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(c->program, 1, &info.device, "-cl-std=CL1.2", NULL, NULL);
    if (err == CL_SUCCESS)
        c->kernel = clCreateKernel(c->program, "bench_copy", &err);
    /* As clbn plans: contiguous runs per item on a CPU, interleaved items on a GPU. */
    int blocked = lim.device_type == CLBN_DEVICE_KIND_CPU;
    size_t cu = lim.compute_units ? lim.compute_units : 1;
    c->local = blocked ? 1 : (lim.max_work_group_size < 256 ? lim.max_work_group_size : 256);
    c->global = blocked ? 1024 * cu : cu * 8 * c->local;
    cl_ulong nn = n;
    cl_int b = blocked;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(c->kernel, 0, sizeof x, &x);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(c->kernel, 1, sizeof y, &y);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(c->kernel, 2, sizeof nn, &nn);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(c->kernel, 3, sizeof b, &b);
    if (err != CL_SUCCESS) {
        bench_copy_release(c);
        return 1;
    }
    return 0;
}

cl_int bench_copy_enqueue(bench_copy *c, cl_command_queue q) {
    return clEnqueueNDRangeKernel(q, c->kernel, 1, NULL, &c->global, &c->local, 0, NULL, NULL);
}

void bench_copy_release(bench_copy *c) {
    if (c->kernel)
        clReleaseKernel(c->kernel);
    if (c->program)
        clReleaseProgram(c->program);
    memset(c, 0, sizeof *c);
}
