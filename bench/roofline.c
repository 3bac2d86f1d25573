/* roofline.c — the copies `clbn bench` measures as the memory limit (see roofline.h). */
#include "roofline.h"

#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <unistd.h>

/* blocked = 1: each item copies one contiguous run of float16s; 0: items interleave
 * (BENCH_CL_RANGE, bench.h). */
static const char copy_source[] =
    "__kernel void roof_copy16(__global const float *x, __global float *y, ulong n, int blocked) "
    "{\n"
    "    ulong g = get_global_id(0), G = get_global_size(0), n16 = n / 16;\n" BENCH_CL_RANGE
    "    for (ulong i = s; i < e; i += step)\n"
    "        vstore16(vload16(i, x), i, y);\n"
    "    if (g == 0)\n"
    "        for (ulong i = n16 * 16; i < n; i++)\n"
    "            y[i] = x[i];\n"
    "}\n";

/* Stores that skip reading the destination line first (no read-for-ownership): clang's
 * builtin, which not every OpenCL compiler has, so this program is optional. Buffers are
 * aligned far beyond 64 bytes, so the float16 view is aligned. */
static const char copy_nt_source[] =
    "__kernel void roof_copy16_nt(__global const float *x, __global float *y, ulong n) {\n"
    "    ulong g = get_global_id(0), G = get_global_size(0), n16 = n / 16;\n"
    "    ulong per = (n16 + G - 1) / G, s = min(g * per, n16), e = min(s + per, n16);\n"
    "    __global const float16 *x16 = (__global const float16 *)x;\n"
    "    __global float16 *y16 = (__global float16 *)y;\n"
    "    for (ulong i = s; i < e; i++)\n"
    "        __builtin_nontemporal_store(x16[i], y16 + i);\n"
    "    if (g == 0)\n"
    "        for (ulong i = n16 * 16; i < n; i++)\n"
    "            y[i] = x[i];\n"
    "}\n";

static cl_program build(cl_context cc, cl_device_id dev, const char *src) {
    cl_int err = CL_SUCCESS;
    cl_program p = clCreateProgramWithSource(cc, 1, &src, NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    if (clBuildProgram(p, 1, &dev, "-cl-std=CL1.2", NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

static int add_kernel(bench_roofline *r, cl_program p, const char *kname, int blocked,
                      size_t global, size_t local, const char *name) {
    if (r->count >= BENCH_ROOF_MAX)
        return 0;
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(p, kname, &err);
    cl_ulong n = r->n;
    cl_int b = blocked;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(k, 0, sizeof r->x, &r->x);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(k, 1, sizeof r->y, &r->y);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(k, 2, sizeof n, &n);
    if (err == CL_SUCCESS && blocked >= 0)
        err = clSetKernelArg(k, 3, sizeof b, &b);
    if (err != CL_SUCCESS) {
        if (k)
            clReleaseKernel(k);
        return 1;
    }
    bench_roof_variant *v = &r->v[r->count++];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->kind = BENCH_ROOF_KERNEL;
    v->kernel = k;
    v->global = global;
    v->local = local;
    return 0;
}

int bench_roofline_init(bench_roofline *r, clbn_context *ctx, cl_mem x, cl_mem y, size_t n) {
    memset(r, 0, sizeof *r);
    r->x = x;
    r->y = y;
    r->n = n;
    cl_context cc;
    clbn_device_info info;
    if (clbn_context_get_cl(ctx, &cc, &r->queue) != CLBN_SUCCESS ||
        clbn_context_get_device_info(ctx, &info) != CLBN_SUCCESS)
        return 1;
    r->program = build(cc, info.device, copy_source);
    if (!r->program)
        return 1;
    r->program_nt = build(cc, info.device, copy_nt_source);
    /* The device's own compute units: the roofline measures the device, whatever profile the
     * plans are made with. */
    const size_t cu = info.compute_units ? info.compute_units : 1;
    char name[48];
    int fail = 0;
    for (size_t f = 1; f <= 4; f *= 2) {
        snprintf(name, sizeof name, "blocked16 G=%zuxCU L=1", f);
        fail |= add_kernel(r, r->program, "roof_copy16", 1, f * cu, 1, name);
    }
    fail |= add_kernel(r, r->program, "roof_copy16", 1, 1024 * cu, 1, "blocked16 G=1024xCU L=1");
    if (info.type & CL_DEVICE_TYPE_GPU) {
        size_t local = info.max_work_group_size < 256 ? info.max_work_group_size : 256;
        snprintf(name, sizeof name, "interleaved16 G=8xCUxL L=%zu", local);
        fail |= add_kernel(r, r->program, "roof_copy16", 0, 8 * cu * local, local, name);
    }
    for (size_t f = 1; r->program_nt && f <= 4; f *= 2) {
        snprintf(name, sizeof name, "nontemporal16 G=%zuxCU L=1", f);
        if (add_kernel(r, r->program_nt, "roof_copy16_nt", -1, f * cu, 1, name))
            break; /* optional: a driver that built it but cannot run it just loses it */
    }
    if (fail)
        return 1;
    bench_roof_variant *v = &r->v[r->count++];
    snprintf(v->name, sizeof v->name, "clEnqueueCopyBuffer");
    v->kind = BENCH_ROOF_COPY_BUFFER;

    cl_bool unified = CL_FALSE;
    clGetDeviceInfo(info.device, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    if ((info.type & CL_DEVICE_TYPE_CPU) || unified) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        r->threads = cores > 0 ? (unsigned)cores : 1;
        void *hx = NULL, *hy = NULL;
        if (posix_memalign(&hx, 64, n * sizeof(float) + 64) != 0 ||
            posix_memalign(&hy, 64, n * sizeof(float) + 64) != 0) {
            free(hx);
            return 1;
        }
        r->host_x = hx;
        r->host_y = hy;
        /* Touch every page now, so the first timed copy does not pay for the page faults. */
        memset(r->host_x, 1, n * sizeof(float));
        memset(r->host_y, 0, n * sizeof(float));
        v = &r->v[r->count++];
        snprintf(v->name, sizeof v->name, "host memcpy, %u threads", r->threads);
        v->kind = BENCH_ROOF_HOST;
#if defined(__x86_64__)
        /* glibc's memcpy keeps ordinary stores below a threshold of 3/4 of the shared cache,
         * which a virtual machine may report as hundreds of MiB: stores that skip the cache
         * show what the memory itself moves. */
        v = &r->v[r->count++];
        snprintf(v->name, sizeof v->name, "host stream copy, %u threads", r->threads);
        v->kind = BENCH_ROOF_HOST_STREAM;
#endif
    }
    return 0;
}

typedef struct host_block {
    const char *src;
    char *dst;
    size_t bytes;
    int stream;
} host_block;

static void *host_copy_block(void *arg) {
    host_block *b = arg;
#if defined(__x86_64__)
    if (b->stream) { /* 64-byte aligned blocks (see host_copy): SSE2 non-temporal stores */
        const __m128 *s = (const __m128 *)(const void *)b->src;
        __m128 *d = (__m128 *)(void *)b->dst;
        size_t n = b->bytes / 16;
        for (size_t i = 0; i < n; i++)
            _mm_stream_ps((float *)(d + i), _mm_load_ps((const float *)(s + i)));
        _mm_sfence();
        memcpy(b->dst + n * 16, b->src + n * 16, b->bytes - n * 16);
        return NULL;
    }
#endif
    memcpy(b->dst, b->src, b->bytes);
    return NULL;
}

/* One contiguous block per thread; the calling thread copies the last one. */
static cl_int host_copy(bench_roofline *r, int stream) {
    enum { MAX_THREADS = 256 };
    unsigned t = r->threads < MAX_THREADS ? r->threads : MAX_THREADS;
    host_block blocks[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    const size_t total = r->n * sizeof(float), per = (total / t + 63) / 64 * 64;
    unsigned started = 0;
    for (unsigned i = 0; i < t; i++) {
        size_t s = (size_t)i * per < total ? (size_t)i * per : total;
        size_t e = s + per < total ? s + per : total;
        blocks[i] = (host_block){(const char *)r->host_x + s, (char *)r->host_y + s, e - s, stream};
    }
    for (unsigned i = 0; i + 1 < t; i++) {
        if (pthread_create(&tid[i], NULL, host_copy_block, &blocks[i]) != 0)
            break;
        started++;
    }
    for (unsigned i = started; i < t; i++) /* what no thread took, this one does */
        host_copy_block(&blocks[i]);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    return CL_SUCCESS;
}

cl_int bench_roofline_run(bench_roofline *r, size_t i) {
    bench_roof_variant *v = &r->v[i];
    cl_int err = CL_SUCCESS;
    switch (v->kind) {
    case BENCH_ROOF_KERNEL:
        err = clEnqueueNDRangeKernel(r->queue, v->kernel, 1, NULL, &v->global, &v->local, 0, NULL,
                                     NULL);
        break;
    case BENCH_ROOF_COPY_BUFFER:
        err = clEnqueueCopyBuffer(r->queue, r->x, r->y, 0, 0, r->n * sizeof(float), 0, NULL, NULL);
        break;
    case BENCH_ROOF_HOST:
    case BENCH_ROOF_HOST_STREAM:
        return host_copy(r, v->kind == BENCH_ROOF_HOST_STREAM);
    }
    if (err == CL_SUCCESS)
        err = clFinish(r->queue);
    return err;
}

double bench_roofline_bytes(const bench_roofline *r) {
    return 2.0 * (double)r->n * sizeof(float);
}

void bench_roofline_release(bench_roofline *r) {
    for (size_t i = 0; i < r->count; i++)
        if (r->v[i].kernel)
            clReleaseKernel(r->v[i].kernel);
    if (r->program)
        clReleaseProgram(r->program);
    if (r->program_nt)
        clReleaseProgram(r->program_nt);
    free(r->host_x);
    free(r->host_y);
    memset(r, 0, sizeof *r);
}
