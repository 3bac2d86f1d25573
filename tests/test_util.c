/* Shared helpers of the cmocka tests (see test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static clbn_context *make_context(const clbn_limits *limits) {
    size_t count = 0;
    if (clbn_device_list(NULL, 0, &count) != CLBN_SUCCESS || count == 0) {
        fprintf(stderr, "SKIP: no OpenCL device found (install pocl-opencl-icd)\n");
        exit(77);
    }
    clbn_context_options o;
    clbn_context_options_init(&o);
    if (limits)
        o.limits = *limits;
    clbn_context *ctx = NULL;
    clbn_status st = clbn_context_create(&o, &ctx);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "cannot create a context: %s: %s\n", clbn_status_name(st),
                clbn_last_error_message());
        exit(1);
    }
    return ctx;
}

clbn_context *tu_context(void) {
    return make_context(NULL);
}

clbn_context *tu_context_gpu_limits(void) {
    clbn_limits l;
    memset(&l, 0, sizeof l);
    l.max_work_group_size = 64;
    l.local_mem_size = 32768;
    l.vector_width = 4;
    l.compute_units = 16;
    l.cache_size = 4u << 20;
    l.device_type = CLBN_DEVICE_KIND_GPU;
    return make_context(&l);
}

clbn_context *tu_ctx;

int tu_group_setup(void **state) {
    (void)state;
    tu_ctx = tu_context();
    return 0;
}

int tu_group_teardown(void **state) {
    (void)state;
    clbn_context_release(tu_ctx);
    tu_ctx = NULL;
    return 0;
}

float *tu_floats(size_t n) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    return v;
}

double *tu_doubles(size_t n) {
    double *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    return v;
}

static void get_cl(clbn_context *ctx, cl_context *c, cl_command_queue *q) {
    if (clbn_context_get_cl(ctx, c, q) != CLBN_SUCCESS) {
        fprintf(stderr, "clbn_context_get_cl failed\n");
        exit(1);
    }
}

cl_mem tu_buffer(clbn_context *ctx, size_t n) {
    cl_context c;
    cl_command_queue q;
    get_cl(ctx, &c, &q);
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(c, CL_MEM_READ_WRITE, (n ? n : 1) * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clCreateBuffer(%zu floats) failed: %d\n", n, err);
        exit(1);
    }
    return m;
}

cl_mem tu_buffer_from(clbn_context *ctx, const float *host, size_t n) {
    cl_mem m = tu_buffer(ctx, n);
    tu_write(ctx, m, 0, host, n);
    return m;
}

void tu_write(clbn_context *ctx, cl_mem buf, size_t offset, const float *host, size_t n) {
    cl_context c;
    cl_command_queue q;
    get_cl(ctx, &c, &q);
    cl_int err = clEnqueueWriteBuffer(q, buf, CL_TRUE, offset * sizeof(float), n * sizeof(float),
                                      host, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clEnqueueWriteBuffer failed: %d\n", err);
        exit(1);
    }
}

void tu_read(clbn_context *ctx, cl_mem buf, size_t offset, float *host, size_t n) {
    cl_context c;
    cl_command_queue q;
    get_cl(ctx, &c, &q);
    cl_int err = clEnqueueReadBuffer(q, buf, CL_TRUE, offset * sizeof(float), n * sizeof(float),
                                     host, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clEnqueueReadBuffer failed: %d\n", err);
        exit(1);
    }
}

void tu_finish(clbn_context *ctx) {
    cl_context c;
    cl_command_queue q;
    get_cl(ctx, &c, &q);
    clFinish(q);
}

void tu_fill_normal(ref_rng *r, float *v, size_t n, double mean, double stddev) {
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(mean + stddev * ref_normal(r));
}

double tu_check_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                      double rtol) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= atol + rtol * fabs(ref[i])))
            fail_msg("%s[%zu]: got %.9g, reference %.9g (|err| %.3g > atol %.1g + rtol %.1g*|ref|)",
                     what, i, (double)got[i], ref[i], err, atol, rtol);
        if (err > worst)
            worst = err;
    }
    return worst;
}

size_t tu_shape_elems(const clbn_shape *s) {
    if (s->layout == CLBN_LAYOUT_NC)
        return (size_t)(s->n * s->c);
    return (size_t)(s->n * s->c * s->h * s->w);
}

void ref_check_case(clbn_context *ctx, const ref_case *k, const ref_tolerances *tol,
                    clbn_plan *plan) {
    ref_outcome o;
    ref_run_case(ctx, k, tol, &o);
    if (plan)
        *plan = o.plan;
    ref_outcome_free(&o);
    if (o.failed)
        fail_msg("%s", o.message);
    if (plan)
        assert_true(plan->work_group_size > 0);
}
