/* flush.c — the cold cache of `clbn bench` (see flush.h). */
#include "flush.h"

#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A read of n floats: items take contiguous blocks on a CPU (blocked), interleave on a GPU.
 * The sum goes to sink so that the reads are not optimized away. */
static const char flush_source[] =
    "__kernel void bench_flush(__global const float *x, ulong n16, int blocked,\n"
    "                          __global float *sink) {\n"
    "    ulong g = get_global_id(0), G = get_global_size(0);\n" BENCH_CL_RANGE
    "    float16 a = (float16)(0.0f);\n"
    "    for (ulong i = s; i < e; i += step)\n"
    "        a += vload16(i, x);\n"
    "    if (a.s0 == 12345.0f)\n"
    "        sink[0] = a.s1;\n"
    "}\n";

size_t bench_flush_bytes(uint64_t cache_bytes, uint64_t max_alloc) {
    const uint64_t lo = (uint64_t)64 << 20, hi = (uint64_t)256 << 20;
    uint64_t b = 2 * cache_bytes;
    b = b < lo ? lo : b > hi ? hi : b;
    if (max_alloc && b > max_alloc)
        b = max_alloc;
    return (size_t)(b & ~(uint64_t)63);
}

static int flush_fail(const char *what, cl_int err) {
    fprintf(stderr, "clbn bench: cache flush: %s failed (OpenCL error %d)\n", what, (int)err);
    return 1;
}

int bench_flush_init(bench_flush *f, clbn_context *ctx, size_t bytes) {
    memset(f, 0, sizeof *f);
    cl_context cc = NULL;
    clbn_device_info info;
    if (clbn_context_get_cl(ctx, &cc, &f->queue) != CLBN_SUCCESS ||
        clbn_context_get_device_info(ctx, &info) != CLBN_SUCCESS) {
        fprintf(stderr, "clbn bench: cache flush: %s\n", clbn_last_error_message());
        return 1;
    }
    cl_int err = CL_SUCCESS;
    const char *src = flush_source;
    f->program = clCreateProgramWithSource(cc, 1, &src, NULL, &err);
    if (err != CL_SUCCESS)
        return flush_fail("clCreateProgramWithSource", err);
    err = clBuildProgram(f->program, 1, &info.device, "-cl-std=CL1.2", NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        char *log = NULL;
        if (clGetProgramBuildInfo(f->program, info.device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) ==
                CL_SUCCESS &&
            n > 0 && (log = calloc(n + 1, 1)) != NULL &&
            clGetProgramBuildInfo(f->program, info.device, CL_PROGRAM_BUILD_LOG, n, log, NULL) ==
                CL_SUCCESS)
            fprintf(stderr, "clbn bench: cache flush: the build log:\n%s\n", log);
        free(log);
        return flush_fail("building its kernel", err);
    }
    f->kernel = clCreateKernel(f->program, "bench_flush", &err);
    if (err != CL_SUCCESS)
        return flush_fail("clCreateKernel", err);
    f->buf = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return flush_fail("clCreateBuffer", err);
    f->sink = clCreateBuffer(cc, CL_MEM_READ_WRITE, sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return flush_fail("clCreateBuffer", err);
    const float zero = 0.0f;
    err = clEnqueueFillBuffer(f->queue, f->buf, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return flush_fail("clEnqueueFillBuffer", err);
    /* A CPU: an item per core and a half (blocks); a GPU: interleaved items in groups of the
     * driver's choosing (NULL local size), 16,384 per compute unit. */
    const int cpu = (info.type & CL_DEVICE_TYPE_CPU) != 0;
    const cl_ulong n16 = bytes / (16 * sizeof(float));
    const cl_int blocked = cpu;
    const size_t cu = info.compute_units ? info.compute_units : 1;
    f->cpu = cpu;
    f->global = cpu ? 2 * cu : 16384 * cu;
    if ((err = clSetKernelArg(f->kernel, 0, sizeof f->buf, &f->buf)) != CL_SUCCESS ||
        (err = clSetKernelArg(f->kernel, 1, sizeof n16, &n16)) != CL_SUCCESS ||
        (err = clSetKernelArg(f->kernel, 2, sizeof blocked, &blocked)) != CL_SUCCESS ||
        (err = clSetKernelArg(f->kernel, 3, sizeof f->sink, &f->sink)) != CL_SUCCESS)
        return flush_fail("clSetKernelArg", err);
    err = bench_flush_run(f);
    return err != CL_SUCCESS ? flush_fail("the first read", err) : 0;
}

cl_int bench_flush_run(bench_flush *f) {
    const size_t one = 1;
    cl_int err = clEnqueueNDRangeKernel(f->queue, f->kernel, 1, NULL, &f->global,
                                        f->cpu ? &one : NULL, 0, NULL, NULL);
    return err != CL_SUCCESS ? err : clFinish(f->queue);
}

void bench_flush_release(bench_flush *f) {
    if (f->kernel)
        clReleaseKernel(f->kernel);
    if (f->program)
        clReleaseProgram(f->program);
    if (f->buf)
        clReleaseMemObject(f->buf);
    if (f->sink)
        clReleaseMemObject(f->sink);
    memset(f, 0, sizeof *f);
}

typedef struct host_block {
    const float *p;
    size_t n;
    float sum;
} host_block;

static void *host_read(void *arg) {
    host_block *b = arg;
    float s = 0.0f;
    for (size_t i = 0; i < b->n; i += 16) /* one value per 64-byte line brings the line in */
        s += b->p[i];
    b->sum = s;
    return NULL;
}

int bench_host_flush_init(bench_host_flush *f, size_t bytes) {
    memset(f, 0, sizeof *f);
    f->n = bytes / sizeof(float);
    f->buf = malloc(f->n * sizeof(float));
    if (!f->buf)
        return 1;
    memset(f->buf, 0, f->n * sizeof(float)); /* every page mapped before it is timed */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    f->threads = cores > 0 ? (unsigned)(cores < 64 ? cores : 64) : 1;
    return 0;
}

void bench_host_flush_run(bench_host_flush *f) {
    host_block blocks[64] = {{0}};
    pthread_t tid[64];
    int made[64] = {0};
    const size_t per = (f->n / f->threads + 15) & ~(size_t)15;
    for (unsigned i = 0; i < f->threads; i++) {
        const size_t s = (size_t)i * per < f->n ? (size_t)i * per : f->n;
        const size_t e = s + per < f->n ? s + per : f->n;
        blocks[i] = (host_block){f->buf + s, e - s, 0.0f};
        /* thread 0 is this one; a thread that cannot start has its block read here */
        if (i > 0 && !(made[i] = pthread_create(&tid[i], NULL, host_read, &blocks[i]) == 0))
            host_read(&blocks[i]);
    }
    host_read(&blocks[0]);
    for (unsigned i = 1; i < f->threads; i++)
        if (made[i])
            pthread_join(tid[i], NULL);
}

void bench_host_flush_release(bench_host_flush *f) {
    free(f->buf);
    memset(f, 0, sizeof *f);
}
