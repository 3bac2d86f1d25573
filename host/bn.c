/* bn.c — the persistent batch-norm state object: options, device vectors, t, and the blocking
 * host-side accessors (read, write, reset, folding). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void clbn_bn_options_init(clbn_bn_options *o) {
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->eps = 1e-5f;
    o->factor = 0.1f;
    o->flags = CLBN_BN_FLAGS_DEFAULT;
    o->activation = CLBN_ACTIVATION_NONE;
}

clbn_status clbn_check_options(const clbn_bn_options *o) {
    if (o->channels == 0)
        return clbn_fail(CLBN_ERROR_INVALID_SHAPE, "options.channels is 0: set the channel count");
    if (o->channels > CLBN_MAX_GROUPS_DIM0)
        return clbn_fail(CLBN_ERROR_INVALID_SHAPE,
                         "options.channels = %llu is too large: at most 2^31 - 1 (one work-group "
                         "per channel in grid dimension 0, NVIDIA's ceiling there)",
                         (unsigned long long)o->channels);
    if (!(o->eps > 0.0f) || !isfinite(o->eps))
        return clbn_fail(CLBN_ERROR_INVALID_OPTION, "options.eps = %g: must be finite and > 0",
                         (double)o->eps);
    if (!(o->factor > 0.0f && o->factor <= 1.0f))
        return clbn_fail(CLBN_ERROR_INVALID_OPTION,
                         "options.factor = %g: the weight of the new batch must be in (0, 1]",
                         (double)o->factor);
    if (o->flags & ~CLBN_BN_FLAGS_ALL)
        return clbn_fail(CLBN_ERROR_INVALID_OPTION, "options.flags = 0x%x has unknown bits 0x%x",
                         o->flags, o->flags & ~CLBN_BN_FLAGS_ALL);
    if ((int)o->activation < 0 || o->activation > CLBN_ACTIVATION_SIGMOID)
        return clbn_fail(CLBN_ERROR_INVALID_OPTION, "options.activation = %d is unknown",
                         (int)o->activation);
    return CLBN_SUCCESS;
}

const char *clbn_vector_name(clbn_vector v) {
    static const char *const names[CLBN_VECTOR_COUNT] = {
        "gamma",      "beta",         "running_mean", "running_var",
        "saved_mean", "saved_invstd", "dgamma",       "dbeta"};
    return ((int)v >= 0 && v < CLBN_VECTOR_COUNT) ? names[v] : "unknown";
}

/* Sets every element of a vector to value with a blocking write from the host rather than
 * clEnqueueFillBuffer: a simulator's uninitialized-memory check (Oclgrind 21.10) does not count
 * a fill as a write, and the vectors are only C floats. */
static clbn_status fill(clbn_bn *bn, cl_mem buf, float value) {
    size_t C = (size_t)bn->opt.channels;
    float *host = malloc(C * sizeof *host);
    if (!host)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory filling a vector");
    for (size_t c = 0; c < C; c++)
        host[c] = value;
    cl_int err = clbn_cl.clEnqueueWriteBuffer(bn->ctx->queue, buf, CL_TRUE, 0, C * sizeof *host,
                                              host, 0, NULL, NULL);
    free(host);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "initializing a vector failed");
    return CLBN_SUCCESS;
}

void clbn_bn_release(clbn_bn *bn) {
    if (!bn)
        return;
    clbn_cl.clFinish(bn->ctx->queue);
    for (int v = 0; v < CLBN_VARIANTS; v++)
        for (int k = 0; k < CLBN_K_COUNT; k++)
            if (bn->kernels[v][k])
                clbn_cl.clReleaseKernel(bn->kernels[v][k]);
    cl_mem *all[] = {&bn->run_alt[0],   &bn->run_alt[1],   &bn->saved_alt[0], &bn->saved_alt[1],
                     &bn->tmp_stats[0], &bn->tmp_stats[1], &bn->shift,        &bn->scratch_n,
                     &bn->scratch_a,    &bn->scratch_b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i])
            clbn_cl.clReleaseMemObject(*all[i]);
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++)
        if (bn->vec[i])
            clbn_cl.clReleaseMemObject(bn->vec[i]);
    free(bn);
}

clbn_status clbn_bn_create(clbn_context *ctx, const clbn_bn_options *options, clbn_bn **out) {
    clbn_clear_error();
    if (!out)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn (the output pointer) is NULL");
    *out = NULL;
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (!options)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "options is NULL");
    clbn_status st = clbn_check_options(options);
    if (st != CLBN_SUCCESS)
        return st;
    clbn_bn *bn = calloc(1, sizeof *bn);
    if (!bn)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory creating a state object");
    bn->ctx = ctx;
    bn->opt = *options;
    size_t bytes = (size_t)options->channels * sizeof(float);
    cl_int err = CL_SUCCESS;
    cl_mem *bufs[CLBN_VECTOR_COUNT + 6];
    size_t nb = 0;
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++)
        bufs[nb++] = &bn->vec[i];
    bufs[nb++] = &bn->run_alt[0];
    bufs[nb++] = &bn->run_alt[1];
    bufs[nb++] = &bn->saved_alt[0];
    bufs[nb++] = &bn->saved_alt[1];
    bufs[nb++] = &bn->tmp_stats[0];
    bufs[nb++] = &bn->tmp_stats[1];
    for (size_t i = 0; i < nb && err == CL_SUCCESS; i++)
        *bufs[i] = clbn_cl.clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        bn->shift = clbn_cl.clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, 2 * bytes, NULL, &err);
    if (err != CL_SUCCESS) {
        clbn_bn_release(bn);
        return clbn_fail((clbn_status)err, "allocating the state's vectors (%zu bytes each) failed",
                         bytes);
    }
    const float init[CLBN_VECTOR_COUNT] = {1.0f, 0.0f, 0.0f, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f};
    for (int i = 0; i < CLBN_VECTOR_COUNT && st == CLBN_SUCCESS; i++)
        st = fill(bn, bn->vec[i], init[i]);
    if (st == CLBN_SUCCESS && clbn_cl.clFinish(ctx->queue) != CL_SUCCESS)
        st = clbn_fail(CLBN_ERROR_INTERNAL, "clFinish failed initializing the state");
    if (st != CLBN_SUCCESS) {
        clbn_bn_release(bn);
        return st;
    }
    *out = bn;
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_get_options(const clbn_bn *bn, clbn_bn_options *options) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!options)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "options is NULL");
    *options = bn->opt;
    return CLBN_SUCCESS;
}

static clbn_status check_vector(const clbn_bn *bn, clbn_vector v) {
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if ((int)v < 0 || v >= CLBN_VECTOR_COUNT)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT, "vector = %d is not a clbn_vector", (int)v);
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_get_buffer(clbn_bn *bn, clbn_vector v, cl_mem *buffer) {
    clbn_clear_error();
    clbn_status st = check_vector(bn, v);
    if (st != CLBN_SUCCESS)
        return st;
    if (!buffer)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "buffer (the output pointer) is NULL");
    *buffer = bn->vec[v];
    return CLBN_SUCCESS;
}

static clbn_status check_copy(const clbn_bn *bn, clbn_vector v, const void *host, uint64_t count) {
    clbn_status st = check_vector(bn, v);
    if (st != CLBN_SUCCESS)
        return st;
    if (!host)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "host is NULL");
    if (count != bn->opt.channels)
        return clbn_fail(CLBN_ERROR_CHANNEL_MISMATCH,
                         "count = %llu does not match the state's %llu channels",
                         (unsigned long long)count, (unsigned long long)bn->opt.channels);
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_read_vector(clbn_bn *bn, clbn_vector v, float *host, uint64_t count) {
    clbn_clear_error();
    clbn_status st = check_copy(bn, v, host, count);
    if (st != CLBN_SUCCESS)
        return st;
    cl_int err = clbn_cl.clEnqueueReadBuffer(bn->ctx->queue, bn->vec[v], CL_TRUE, 0,
                                             count * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "reading %s failed", clbn_vector_name(v));
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_write_vector(clbn_bn *bn, clbn_vector v, const float *host, uint64_t count) {
    clbn_clear_error();
    clbn_status st = check_copy(bn, v, host, count);
    if (st != CLBN_SUCCESS)
        return st;
    cl_int err = clbn_cl.clEnqueueWriteBuffer(bn->ctx->queue, bn->vec[v], CL_TRUE, 0,
                                              count * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "writing %s failed", clbn_vector_name(v));
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_get_batches_tracked(const clbn_bn *bn, uint64_t *t) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!t)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "t is NULL");
    *t = bn->t;
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_set_batches_tracked(clbn_bn *bn, uint64_t t) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    bn->t = t;
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_reset_running_stats(clbn_bn *bn) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    clbn_status st = fill(bn, bn->vec[CLBN_VECTOR_RUNNING_MEAN], 0.0f);
    if (st == CLBN_SUCCESS)
        st = fill(bn, bn->vec[CLBN_VECTOR_RUNNING_VAR], 1.0f);
    if (st == CLBN_SUCCESS && clbn_cl.clFinish(bn->ctx->queue) != CL_SUCCESS)
        st = clbn_fail(CLBN_ERROR_INTERNAL, "clFinish failed resetting the running statistics");
    if (st == CLBN_SUCCESS)
        bn->t = 0;
    return st;
}

clbn_status clbn_bn_export_folded(clbn_bn *bn, float *a, float *b) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!a)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "a is NULL");
    if (!b)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "b is NULL");
    size_t C = (size_t)bn->opt.channels;
    float *tmp = malloc(4 * C * sizeof(float));
    if (!tmp)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory folding");
    const clbn_vector which[4] = {CLBN_VECTOR_GAMMA, CLBN_VECTOR_BETA, CLBN_VECTOR_RUNNING_MEAN,
                                  CLBN_VECTOR_RUNNING_VAR};
    clbn_status st = CLBN_SUCCESS;
    for (int i = 0; i < 4 && st == CLBN_SUCCESS; i++)
        st = clbn_bn_read_vector(bn, which[i], tmp + i * C, C);
    if (st == CLBN_SUCCESS) {
        for (size_t c = 0; c < C; c++) {
            double g = (bn->opt.flags & CLBN_USE_SCALE) ? tmp[c] : 1.0;
            double be = (bn->opt.flags & CLBN_USE_SHIFT) ? tmp[C + c] : 0.0;
            double s = g / sqrt((double)tmp[3 * C + c] + (double)bn->opt.eps);
            a[c] = (float)s;
            b[c] = (float)(be - s * tmp[2 * C + c]);
        }
    }
    free(tmp);
    return st;
}

clbn_status clbn_bn_kernel(clbn_bn *bn, int variant, clbn_kernel_id id, cl_kernel *kernel) {
    if (!bn->kernels[variant][id]) {
        cl_program prog = NULL;
        clbn_status st = clbn_context_program(bn->ctx, variant, &prog);
        if (st != CLBN_SUCCESS)
            return st;
        cl_int err = CL_SUCCESS;
        bn->kernels[variant][id] = clbn_cl.clCreateKernel(prog, clbn_kernel_names[id], &err);
        if (err != CL_SUCCESS) {
            bn->kernels[variant][id] = NULL;
            return clbn_fail((clbn_status)err, "clCreateKernel(%s) failed", clbn_kernel_names[id]);
        }
    }
    *kernel = bn->kernels[variant][id];
    return CLBN_SUCCESS;
}
