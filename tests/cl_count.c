/* cl_count.c — the counting layer of cl_count.h. */
#include "cl_count.h"

#include <stdatomic.h>
#include <stdio.h>

static clbn_cl_api g_below;
static clbn_cl_api g_table;
static atomic_long g_live[CL_COUNT_KINDS];

static void add(cl_count_kind k, long d) {
    atomic_fetch_add(&g_live[k], d);
}

/* Created objects: one more when the call returned one. */
#define CREATE_(ret, name, params, args, kind)                                                     \
    static ret CL_API_CALL count_##name params {                                                   \
        ret obj = g_below.name args;                                                               \
        if (obj)                                                                                   \
            add(kind, 1);                                                                          \
        return obj;                                                                                \
    }
/* Retains and releases: one more or one less when the call succeeded. */
#define REFCOUNT_(name, type, kind, d)                                                             \
    static cl_int CL_API_CALL count_##name(type o) {                                               \
        cl_int err = g_below.name(o);                                                              \
        if (err == CL_SUCCESS)                                                                     \
            add(kind, d);                                                                          \
        return err;                                                                                \
    }
/* Enqueues that may hand back an event. */
#define EVENT_(name, params, args)                                                                 \
    static cl_int CL_API_CALL count_##name params {                                                \
        cl_int err = g_below.name args;                                                            \
        if (err == CL_SUCCESS && e)                                                                \
            add(CL_COUNT_EVENT, 1);                                                                \
        return err;                                                                                \
    }

// clang-format off
CREATE_(cl_context, clCreateContext, (const cl_context_properties *p, cl_uint n, const cl_device_id *d, void (CL_CALLBACK *f)(const char *, const void *, size_t, void *), void *u, cl_int *errcode_ret), (p, n, d, f, u, errcode_ret), CL_COUNT_CONTEXT)
CREATE_(cl_command_queue, clCreateCommandQueue, (cl_context c, cl_device_id d, cl_command_queue_properties p, cl_int *errcode_ret), (c, d, p, errcode_ret), CL_COUNT_QUEUE)
CREATE_(cl_mem, clCreateBuffer, (cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *errcode_ret), (c, f, n, h, errcode_ret), CL_COUNT_MEM)
CREATE_(cl_program, clCreateProgramWithSource, (cl_context c, cl_uint n, const char **s, const size_t *l, cl_int *errcode_ret), (c, n, s, l, errcode_ret), CL_COUNT_PROGRAM)
CREATE_(cl_program, clCreateProgramWithBinary, (cl_context c, cl_uint n, const cl_device_id *d, const size_t *l, const unsigned char **b, cl_int *bs, cl_int *errcode_ret), (c, n, d, l, b, bs, errcode_ret), CL_COUNT_PROGRAM)
CREATE_(cl_kernel, clCreateKernel, (cl_program p, const char *name, cl_int *errcode_ret), (p, name, errcode_ret), CL_COUNT_KERNEL)
REFCOUNT_(clRetainContext, cl_context, CL_COUNT_CONTEXT, 1)
REFCOUNT_(clReleaseContext, cl_context, CL_COUNT_CONTEXT, -1)
REFCOUNT_(clRetainCommandQueue, cl_command_queue, CL_COUNT_QUEUE, 1)
REFCOUNT_(clReleaseCommandQueue, cl_command_queue, CL_COUNT_QUEUE, -1)
REFCOUNT_(clReleaseMemObject, cl_mem, CL_COUNT_MEM, -1)
REFCOUNT_(clReleaseProgram, cl_program, CL_COUNT_PROGRAM, -1)
REFCOUNT_(clReleaseKernel, cl_kernel, CL_COUNT_KERNEL, -1)
REFCOUNT_(clReleaseEvent, cl_event, CL_COUNT_EVENT, -1)
EVENT_(clEnqueueReadBuffer, (cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, void *h, cl_uint nw, const cl_event *w, cl_event *e), (q, m, b, o, n, h, nw, w, e))
EVENT_(clEnqueueWriteBuffer, (cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, const void *h, cl_uint nw, const cl_event *w, cl_event *e), (q, m, b, o, n, h, nw, w, e))
EVENT_(clEnqueueNDRangeKernel, (cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off, const size_t *g, const size_t *l, cl_uint nw, const cl_event *w, cl_event *e), (q, k, dim, off, g, l, nw, w, e))
// clang-format on

const clbn_cl_api *cl_count_table(const clbn_cl_api *below) {
    g_below = *below;
    g_table = *below; /* calls that neither create nor release pass straight through */
#define SET_(name) g_table.name = count_##name
    SET_(clCreateContext);
    SET_(clCreateCommandQueue);
    SET_(clCreateBuffer);
    SET_(clCreateProgramWithSource);
    SET_(clCreateProgramWithBinary);
    SET_(clCreateKernel);
    SET_(clRetainContext);
    SET_(clReleaseContext);
    SET_(clRetainCommandQueue);
    SET_(clReleaseCommandQueue);
    SET_(clReleaseMemObject);
    SET_(clReleaseProgram);
    SET_(clReleaseKernel);
    SET_(clReleaseEvent);
    SET_(clEnqueueReadBuffer);
    SET_(clEnqueueWriteBuffer);
    SET_(clEnqueueNDRangeKernel);
#undef SET_
    return &g_table;
}

void cl_count_get(cl_counts *counts) {
    for (int k = 0; k < CL_COUNT_KINDS; k++)
        counts->live[k] = atomic_load(&g_live[k]);
}

int cl_count_equal(const cl_counts *a, const cl_counts *b) {
    for (int k = 0; k < CL_COUNT_KINDS; k++)
        if (a->live[k] != b->live[k])
            return 0;
    return 1;
}

const char *cl_count_format(const cl_counts *c, char *buf, size_t size) {
    snprintf(buf, size, "contexts %ld, queues %ld, mems %ld, programs %ld, kernels %ld, events %ld",
             c->live[CL_COUNT_CONTEXT], c->live[CL_COUNT_QUEUE], c->live[CL_COUNT_MEM],
             c->live[CL_COUNT_PROGRAM], c->live[CL_COUNT_KERNEL], c->live[CL_COUNT_EVENT]);
    return buf;
}
