/* test_nonfinite.c — NaN and Inf in x, as the README documents them: a channel holding a NaN
 * or an Inf gets NaN for every y and dx value, for its saved invstd, running variance and
 * dgamma, and a non-finite saved and running mean (NaN, or ±Inf when an Inf is the only
 * non-finite value); its dbeta (the sum of dy, which x does not enter) is unaffected; every
 * other channel is bit for bit what it is without the bad values; t advances as usual. The
 * running statistics stay non-finite until written or reset, so a later inference gives NaN
 * on those channels. Inference with finite running statistics is elementwise: only the bad
 * elements' y are non-finite. Checked on several plans (the default device and a GPU's limits),
 * in NCHW, NHWC and NC. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run_out {
    float *y, *dx, *inf_y;
    float v[CLBN_VECTOR_COUNT][64];
    uint64_t t;
} run_out;

/* The element index of (n, c, s) where s runs over H*W. */
static size_t at(const clbn_shape *s, uint64_t n, uint64_t c, uint64_t i) {
    const uint64_t hw = s->h * s->w;
    if (s->layout == CLBN_LAYOUT_NHWC)
        return (size_t)((n * hw + i) * s->c + c);
    return (size_t)((n * s->c + c) * hw + i);
}

/* Training forward, backward, then inference of the same x with the updated running stats. */
static void run(clbn_context *ctx, const clbn_shape *s, const float *x, const float *dy,
                run_out *o) {
    const size_t n = tu_shape_elems(s);
    clbn_bn_options opt;
    clbn_bn_options_init(&opt);
    opt.channels = s->c;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &opt, &bn));
    float g[64], b[64];
    for (uint64_t c = 0; c < s->c; c++) {
        g[c] = 1.0f + 0.25f * (float)c;
        b[c] = 0.5f - 0.125f * (float)c;
    }
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, g, s->c));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, b, s->c));
    cl_mem xb = tu_buffer_from(ctx, x, n), dyb = tu_buffer_from(ctx, dy, n);
    cl_mem yb = tu_buffer(ctx, n), dxb = tu_buffer(ctx, n), ib = tu_buffer(ctx, n);
    TU_OK(clbn_bn_forward_train(bn, s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
    TU_OK(clbn_bn_backward(bn, s, xb, 0, yb, 0, dyb, 0, dxb, 0, NULL, NULL, 0, NULL, NULL));
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++)
        TU_OK(clbn_bn_read_vector(bn, (clbn_vector)v, o->v[v], s->c));
    TU_OK(clbn_bn_get_batches_tracked(bn, &o->t));
    TU_OK(clbn_bn_forward_infer(bn, s, xb, 0, ib, 0, NULL, 0, NULL, NULL));
    o->y = tu_floats(n);
    o->dx = tu_floats(n);
    o->inf_y = tu_floats(n);
    tu_read(ctx, yb, 0, o->y, n);
    tu_read(ctx, dxb, 0, o->dx, n);
    tu_read(ctx, ib, 0, o->inf_y, n);
    clReleaseMemObject(xb);
    clReleaseMemObject(dyb);
    clReleaseMemObject(yb);
    clReleaseMemObject(dxb);
    clReleaseMemObject(ib);
    clbn_bn_release(bn);
}

static void run_free(run_out *o) {
    free(o->y);
    free(o->dx);
    free(o->inf_y);
}

static int same_bits(float a, float b) {
    return memcmp(&a, &b, sizeof a) == 0;
}

static void check_shape(clbn_context *ctx, const clbn_shape *s) {
    const size_t n = tu_shape_elems(s);
    const uint64_t nan_c = 1, inf_c = s->c - 1;
    float *x = tu_floats(n), *dy = tu_floats(n), *bad = tu_floats(n);
    ref_rng r;
    ref_rng_seed(&r, 77);
    tu_fill_normal(&r, x, n, 2.0, 3.0);
    tu_fill_normal(&r, dy, n, 0.0, 1.0);
    memcpy(bad, x, n * sizeof *x);
    /* A NaN in channel 1, a +Inf and a -Inf in the last channel, away from its first value. */
    bad[at(s, s->n - 1, nan_c, s->h * s->w - 1)] = NAN;
    bad[at(s, s->n - 1, inf_c, 0)] = INFINITY;
    size_t minus_inf = at(s, s->n / 2, inf_c, (s->h * s->w) / 2);
    run_out clean, got;
    run(ctx, s, x, dy, &clean);
    run(ctx, s, bad, dy, &got);
    assert_int_equal(got.t, clean.t);
    for (uint64_t c = 0; c < s->c; c++) {
        const int hit = c == nan_c || c == inf_c;
        for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
            const float a = got.v[v][c], e = clean.v[v][c];
            const char *name = clbn_vector_name((clbn_vector)v);
            int ok;
            if (!hit || v == CLBN_VECTOR_GAMMA || v == CLBN_VECTOR_BETA || v == CLBN_VECTOR_DBETA)
                ok = same_bits(a, e);
            else if (v == CLBN_VECTOR_SAVED_MEAN || v == CLBN_VECTOR_RUNNING_MEAN)
                ok = c == nan_c ? isnan(a) : !isfinite(a);
            else
                ok = isnan(a);
            if (!ok)
                fail_msg("channel %llu%s: %s is %.9g, clean %.9g", (unsigned long long)c,
                         c == nan_c   ? " (NaN)"
                         : c == inf_c ? " (Inf)"
                                      : "",
                         name, (double)a, (double)e);
        }
        for (uint64_t k = 0; k < s->n; k++)
            for (uint64_t i = 0; i < s->h * s->w; i++) {
                size_t j = at(s, k, c, i);
                const float checks[3][2] = {{got.y[j], clean.y[j]},
                                            {got.dx[j], clean.dx[j]},
                                            {got.inf_y[j], clean.inf_y[j]}};
                for (int q = 0; q < 3; q++) {
                    const int ok =
                        hit ? isnan(checks[q][0]) : same_bits(checks[q][0], checks[q][1]);
                    if (!ok)
                        fail_msg("channel %llu%s, element %zu: %s is %.9g, clean %.9g",
                                 (unsigned long long)c,
                                 c == nan_c   ? " (NaN)"
                                 : c == inf_c ? " (Inf)"
                                              : "",
                                 j,
                                 q == 0   ? "y"
                                 : q == 1 ? "dx"
                                          : "y of the later inference",
                                 (double)checks[q][0], (double)checks[q][1]);
                }
            }
    }
    run_free(&got);
    (void)minus_inf;

    /* Inference with finite running statistics (the clean run's): elementwise. */
    {
        clbn_bn_options opt;
        clbn_bn_options_init(&opt);
        opt.channels = s->c;
        clbn_bn *bn = NULL;
        TU_OK(clbn_bn_create(ctx, &opt, &bn));
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, clean.v[CLBN_VECTOR_RUNNING_MEAN],
                                   s->c));
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, clean.v[CLBN_VECTOR_RUNNING_VAR],
                                   s->c));
        bad[minus_inf] = -INFINITY;
        cl_mem xb = tu_buffer_from(ctx, x, n), bb = tu_buffer_from(ctx, bad, n);
        cl_mem y0 = tu_buffer(ctx, n), y1 = tu_buffer(ctx, n);
        TU_OK(clbn_bn_forward_infer(bn, s, xb, 0, y0, 0, NULL, 0, NULL, NULL));
        TU_OK(clbn_bn_forward_infer(bn, s, bb, 0, y1, 0, NULL, 0, NULL, NULL));
        float *a = tu_floats(n), *b = tu_floats(n);
        tu_read(ctx, y0, 0, a, n);
        tu_read(ctx, y1, 0, b, n);
        for (size_t j = 0; j < n; j++) {
            const int ok = isfinite(bad[j]) ? same_bits(a[j], b[j])
                           : isnan(bad[j])  ? isnan(b[j])
                                            : isinf(b[j]) && (b[j] > 0) == (bad[j] > 0);
            if (!ok)
                fail_msg("inference, element %zu (x %.9g): y %.9g, clean %.9g", j, (double)bad[j],
                         (double)b[j], (double)a[j]);
        }
        free(a);
        free(b);
        clReleaseMemObject(xb);
        clReleaseMemObject(bb);
        clReleaseMemObject(y0);
        clReleaseMemObject(y1);
        clbn_bn_release(bn);
    }
    run_free(&clean);
    free(x);
    free(dy);
    free(bad);
}

static const clbn_shape shapes[] = {
    {CLBN_LAYOUT_NCHW, 16, 3, 16, 16}, /* split on a CPU */
    {CLBN_LAYOUT_NCHW, 2, 16, 16, 16}, /* a group per channel */
    {CLBN_LAYOUT_NCHW, 4, 6, 7, 7},    /* short rows */
    {CLBN_LAYOUT_NHWC, 4, 3, 32, 32},  {CLBN_LAYOUT_NHWC, 2, 64, 2, 2},
    {CLBN_LAYOUT_NC, 60, 40, 1, 1},
};
enum { SHAPES = sizeof shapes / sizeof shapes[0] };

static void nonfinite_default(void **state) {
    (void)state;
    for (int i = 0; i < SHAPES; i++)
        check_shape(tu_ctx, &shapes[i]);
}

static void nonfinite_gpu_limits(void **state) {
    (void)state;
    clbn_context *ctx = tu_context_gpu_limits();
    for (int i = 0; i < SHAPES; i++)
        check_shape(ctx, &shapes[i]);
    clbn_context_release(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nonfinite_default),
        cmocka_unit_test(nonfinite_gpu_limits),
    };
    return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
