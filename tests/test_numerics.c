/* Numerics against the double reference: statistics of data with a large mean, running
 * statistics over several batches, bit-identical repeated runs, in-place forwards, caller-supplied
 * saved statistics, gradient accumulation and the single-value batch.
 *
 * Tolerances (|got - ref| <= atol + rtol*|ref|):
 *   batch variance (1/invstd² − eps) at mean 10000   rtol 1e-5 (the contract's bound)
 *   saved mean at mean 10000                       rtol 1e-7 (one fp32 ulp; rounding is half)
 *   y given the saved statistics                   atol 1e-6, rtol 1e-5 (subtracting first keeps
 *                                                  x − mean exact; the folded a·x + b would be
 *                                                  off by ~7e-4 here)
 *   running mean at mean 10000                     rtol 5e-7 (measured <= 1.3e-7 after five
 *                                                  batches: ~2 fp32 ulps)
 *   running var                                    rtol 1e-5 (the variance's own bound)
 *   dx                                             atol 1e-5, rtol 1e-5 (as in test_ops.c)
 *   dgamma, dbeta                                  atol 1e-6·Σ|term|, rtol 1e-5 (as test_ops.c)
 *   m = 1, determinism, untouched buffers          exact (memcmp)
 *   backward sums over m = 2^22 values             as dgamma, dbeta and dx above: dy = 0.1 +
 *                                                  N(0, 1e-8), whose plain fp32 running sum
 *                                                  per item drifts by percents */
#include "check.h"
#include "reference.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const clbn_layout layouts[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC, CLBN_LAYOUT_NC};

/* NC shapes get n*h*w rows so every layout has the same m. */
static clbn_shape shape_in(clbn_layout l, uint64_t n, uint64_t c, uint64_t h, uint64_t w) {
    if (l == CLBN_LAYOUT_NC)
        return (clbn_shape){l, n * h * w, c, 1, 1};
    return (clbn_shape){l, n, c, h, w};
}

static clbn_bn *make_bn(uint64_t channels, uint32_t flags, float factor) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = channels;
    o.flags = flags;
    if (factor > 0.0f)
        o.factor = factor;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(tu_ctx, &o, &bn));
    return bn;
}

static float eps_of(clbn_bn *bn) {
    clbn_bn_options o;
    TU_OK(clbn_bn_get_options(bn, &o));
    return o.eps;
}

/* Random gamma (both signs) and beta, written to the state; returned as doubles. */
static void random_affine(clbn_bn *bn, ref_rng *r, size_t c, double *gamma, double *beta) {
    float *g = tu_floats(c), *b = tu_floats(c);
    for (size_t i = 0; i < c; i++) {
        g[i] = (float)((0.5 + ref_uniform(r)) * (i % 3 == 2 ? -1.0 : 1.0));
        b[i] = (float)ref_normal(r);
        gamma[i] = g[i];
        beta[i] = b[i];
    }
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, g, c));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, b, c));
    free(g);
    free(b);
}

static void read_doubles(clbn_bn *bn, clbn_vector v, double *out, size_t c) {
    float *f = tu_floats(c);
    TU_OK(clbn_bn_read_vector(bn, v, f, c));
    for (size_t i = 0; i < c; i++)
        out[i] = f[i];
    free(f);
}

/* Per channel Σ|dy| and Σ|dy·x̂|: the scale of dbeta's and dgamma's fp32 rounding. Adds into
 * abs_b and abs_g. */
static void add_abs_sums(const clbn_shape *s, const double *x, const double *dy, const double *mean,
                         const double *invstd, double *abs_b, double *abs_g) {
    for (size_t i = 0; i < ref_elems(s); i++) {
        size_t c = ref_channel_of(s, i);
        abs_b[c] += fabs(dy[i]);
        abs_g[c] += fabs(dy[i] * (x[i] - mean[c]) * invstd[c]);
    }
}

/* |got - ref| <= 1e-6·Σ|term| + 1e-5·|ref| per channel. */
static void check_sums(const char *what, const float *got, const double *ref, const double *abs,
                       size_t channels) {
    char name[96];
    for (size_t c = 0; c < channels; c++) {
        snprintf(name, sizeof name, "%s (channel %zu)", what, c);
        tu_check_close(name, got + c, ref + c, 1, 1e-6 * abs[c], 1e-5);
    }
}

/* ------------------------------------------------------------------------------------------
 * x = 10000 + N(0, 1) with m = 100352 (ResNet-50's per-channel count): the variance must
 * survive the mean, and y must be computed by subtracting first.
 * ------------------------------------------------------------------------------------------ */
static void large_mean_statistics(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    const clbn_shape s = shape_in(layout, 32, 8, 56, 56);
    const size_t C = (size_t)s.c, E = ref_elems(&s);
    ref_rng r;
    ref_rng_seed(&r, 11 + (uint64_t)layout);
    float *x = tu_floats(E), *y = tu_floats(E);
    tu_fill_normal(&r, x, E, 10000.0, 1.0);
    clbn_bn *bn = make_bn(C, CLBN_BN_FLAGS_DEFAULT, 0.0f);
    double *gamma = tu_doubles(C), *beta = tu_doubles(C);
    random_affine(bn, &r, C, gamma, beta);
    cl_mem xb = tu_buffer_from(tu_ctx, x, E), yb = tu_buffer(tu_ctx, E);
    TU_OK(clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
    tu_read(tu_ctx, yb, 0, y, E);

    double *xd = ref_to_double(x, E), *mean = tu_doubles(C), *var = tu_doubles(C);
    double *got_mean = tu_doubles(C), *got_invstd = tu_doubles(C), *got_var = tu_doubles(C);
    ref_batch_stats(&s, xd, mean, var);
    read_doubles(bn, CLBN_VECTOR_SAVED_MEAN, got_mean, C);
    read_doubles(bn, CLBN_VECTOR_SAVED_INVSTD, got_invstd, C);
    double eps = eps_of(bn);
    float *gv = tu_floats(C), *gm = tu_floats(C);
    for (size_t c = 0; c < C; c++) {
        got_var[c] = 1.0 / (got_invstd[c] * got_invstd[c]) - eps;
        gv[c] = (float)got_var[c]; /* float is ample to hold a 1e-5 comparison */
        gm[c] = (float)got_mean[c];
    }
    double worst_var = 0.0;
    for (size_t c = 0; c < C; c++)
        worst_var = fmax(worst_var, fabs(got_var[c] - var[c]) / var[c]);
    print_message("      worst relative variance error %.3g\n", worst_var);
    tu_check_close("batch variance", gv, var, C, 0.0, 1e-6);
    tu_check_close("saved mean", gm, mean, C, 0.0, 1e-7);

    /* y against the double reference with its own (double) statistics: a float mean of 10000
     * is off by up to 5e-4, so this holds only because the library subtracts the mean as
     * (pivot, mean - pivot); measured worst error 3e-7. */
    ref_params p = {eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
    double *yref = tu_doubles(E), *ref_is = tu_doubles(C);
    ref_invstd(C, var, eps, ref_is);
    ref_normalize(&s, &p, xd, mean, ref_is, yref);
    tu_check_close("y (subtract first, pivot pair)", y, yref, E, 1e-6, 1e-5);
    free(ref_is);

    clbn_bn_release(bn);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(y);
    free(xd);
    free(mean);
    free(var);
    free(got_mean);
    free(got_invstd);
    free(got_var);
    free(gv);
    free(gm);
    free(gamma);
    free(beta);
    free(yref);
}

/* ------------------------------------------------------------------------------------------
 * Running statistics over five batches of 10000 + N(0, 1), from nonzero initial values, then
 * the inference output with them.
 * ------------------------------------------------------------------------------------------ */
typedef struct running_case {
    clbn_layout layout;
    uint32_t flags;
    float factor;
    const char *name;
} running_case;

static void running_statistics(void **state) {
    const running_case *k = *state;
    const clbn_shape s = shape_in(k->layout, 8, 3, 17, 19);
    const size_t C = (size_t)s.c, E = ref_elems(&s), m = ref_count(&s);
    const int cumulative = (k->flags & CLBN_CUMULATIVE_AVERAGE) != 0;
    ref_rng r;
    ref_rng_seed(&r, 77 + (uint64_t)k->layout * 5 + (uint64_t)(k->factor * 1000.0f));
    clbn_bn *bn = make_bn(C, k->flags, k->factor);
    double eps = eps_of(bn);
    double *gamma = tu_doubles(C), *beta = tu_doubles(C);
    random_affine(bn, &r, C, gamma, beta);
    float init_m[3] = {5.0f, -7.0f, 9000.0f}, init_v[3] = {7.0f, 0.25f, 3.0f};
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, init_m, C));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, init_v, C));
    double *rm = ref_to_double(init_m, C), *rv = ref_to_double(init_v, C);

    float *x = tu_floats(E);
    cl_mem xb = tu_buffer(tu_ctx, E), yb = tu_buffer(tu_ctx, E);
    double *mean = tu_doubles(C), *var = tu_doubles(C), *got_m = tu_doubles(C),
           *got_v = tu_doubles(C);
    const uint64_t steps = 5;
    for (uint64_t t = 0; t < steps; t++) {
        /* each batch its own mean, so the weights of the batches matter */
        tu_fill_normal(&r, x, E, 10000.0 + 3.0 * (double)t, 1.0 + 0.25 * (double)t);
        tu_write(tu_ctx, xb, 0, x, E);
        TU_OK(clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
        double *xd = ref_to_double(x, E);
        ref_batch_stats(&s, xd, mean, var);
        free(xd);
        double f = cumulative ? ref_cumulative_factor(t) : (double)k->factor;
        ref_running_update(C, mean, var, m, f, rm, rv);
        read_doubles(bn, CLBN_VECTOR_RUNNING_MEAN, got_m, C);
        read_doubles(bn, CLBN_VECTOR_RUNNING_VAR, got_v, C);
        float fm[3], fv[3];
        for (size_t c = 0; c < C; c++) {
            fm[c] = (float)got_m[c];
            fv[c] = (float)got_v[c];
        }
        double wm = 0, wv = 0;
        for (size_t c = 0; c < C; c++) {
            wm = fmax(wm, fabs(got_m[c] - rm[c]) / fabs(rm[c]));
            wv = fmax(wv, fabs(got_v[c] - rv[c]) / fabs(rv[c]));
        }
        if (t + 1 == steps)
            print_message("      after %llu batches: worst relative error of the running mean "
                          "%.3g, var %.3g\n",
                          (unsigned long long)steps, wm, wv);
        char what[64];
        snprintf(what, sizeof what, "running mean after batch %llu", (unsigned long long)t + 1);
        tu_check_close(what, fm, rm, C, 0.0, 5e-7);
        snprintf(what, sizeof what, "running var after batch %llu", (unsigned long long)t + 1);
        tu_check_close(what, fv, rv, C, 0.0, 1e-5);
    }
    uint64_t t_after = 0;
    TU_OK(clbn_bn_get_batches_tracked(bn, &t_after));
    assert_int_equal(t_after, steps);

    /* inference with those running statistics, on a fresh batch */
    tu_fill_normal(&r, x, E, 10001.0, 2.0);
    tu_write(tu_ctx, xb, 0, x, E);
    TU_OK(clbn_bn_forward_infer(bn, &s, xb, 0, yb, 0, NULL, 0, NULL, NULL));
    float *y = tu_floats(E);
    tu_read(tu_ctx, yb, 0, y, E);
    double *xd = ref_to_double(x, E), *yref = tu_doubles(E);
    ref_params p = {eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
    /* with the library's running statistics (isolates the inference kernel) ... */
    ref_forward_infer(&s, &p, xd, got_m, got_v, yref);
    tu_check_close("infer y", y, yref, E, 1e-6, 1e-5);

    clbn_bn_release(bn);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(y);
    free(xd);
    free(yref);
    free(rm);
    free(rv);
    free(mean);
    free(var);
    free(got_m);
    free(got_v);
    free(gamma);
    free(beta);
}

/* ------------------------------------------------------------------------------------------
 * Determinism: two fresh state objects, the same input, the same bits.
 * ------------------------------------------------------------------------------------------ */
typedef struct run_output {
    float *y, *dx, *vec[CLBN_VECTOR_COUNT];
} run_output;

static void one_run(const clbn_shape *s, const float *x, const float *dy, run_output *out) {
    const size_t C = (size_t)s->c, E = ref_elems(s);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.activation = CLBN_ACTIVATION_RELU;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(tu_ctx, &o, &bn));
    ref_rng r;
    ref_rng_seed(&r, 5);
    double *g = tu_doubles(C), *b = tu_doubles(C);
    random_affine(bn, &r, C, g, b);
    cl_mem xb = tu_buffer_from(tu_ctx, x, E), yb = tu_buffer(tu_ctx, E);
    cl_mem dyb = tu_buffer_from(tu_ctx, dy, E), dxb = tu_buffer(tu_ctx, E);
    TU_OK(clbn_bn_forward_train(bn, s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
    TU_OK(clbn_bn_backward(bn, s, xb, 0, yb, 0, dyb, 0, dxb, 0, NULL, NULL, 0, NULL, NULL));
    out->y = tu_floats(E);
    out->dx = tu_floats(E);
    tu_read(tu_ctx, yb, 0, out->y, E);
    tu_read(tu_ctx, dxb, 0, out->dx, E);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        out->vec[v] = tu_floats(C);
        TU_OK(clbn_bn_read_vector(bn, (clbn_vector)v, out->vec[v], C));
    }
    clbn_bn_release(bn);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    clReleaseMemObject(dyb);
    clReleaseMemObject(dxb);
    free(g);
    free(b);
}

static void free_output(run_output *o) {
    free(o->y);
    free(o->dx);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++)
        free(o->vec[v]);
}

static void bit_identical_runs(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    /* few channels with many values (split reductions) and many channels with few */
    const clbn_shape shapes[] = {shape_in(layout, 4, 2, 128, 128), shape_in(layout, 8, 40, 9, 7)};
    for (size_t si = 0; si < 2; si++) {
        const clbn_shape *s = &shapes[si];
        const size_t C = (size_t)s->c, E = ref_elems(s);
        ref_rng r;
        ref_rng_seed(&r, 99 + si);
        float *x = tu_floats(E), *dy = tu_floats(E);
        tu_fill_normal(&r, x, E, 3.0, 2.0);
        tu_fill_normal(&r, dy, E, 0.0, 1.0);
        run_output a, b;
        one_run(s, x, dy, &a);
        one_run(s, x, dy, &b);
        assert_memory_equal(a.y, b.y, E * sizeof(float));
        assert_memory_equal(a.dx, b.dx, E * sizeof(float));
        for (int v = 0; v < CLBN_VECTOR_COUNT; v++)
            if (memcmp(a.vec[v], b.vec[v], C * sizeof(float)) != 0)
                fail_msg("%s differs between two runs (shape %zu)",
                         clbn_vector_name((clbn_vector)v), si);
        free_output(&a);
        free_output(&b);
        free(x);
        free(dy);
    }
}

/* ------------------------------------------------------------------------------------------
 * In place: y is the x buffer (at the same offset), for the training and inference forwards.
 * ------------------------------------------------------------------------------------------ */
static void in_place_forward(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    const clbn_shape shapes[] = {shape_in(layout, 4, 2, 128, 128), shape_in(layout, 3, 5, 7, 11)};
    const uint64_t off = 9;
    for (size_t si = 0; si < 2; si++) {
        const clbn_shape *s = &shapes[si];
        const size_t C = (size_t)s->c, E = ref_elems(s);
        for (int infer = 0; infer < 2; infer++) {
            ref_rng r;
            ref_rng_seed(&r, 300 + si * 2 + (uint64_t)infer);
            float *x = tu_floats(E), *y = tu_floats(E);
            tu_fill_normal(&r, x, E, -1.5, 1.7);
            clbn_bn *bn = make_bn(C, CLBN_BN_FLAGS_DEFAULT, 0.0f);
            double eps = eps_of(bn);
            double *gamma = tu_doubles(C), *beta = tu_doubles(C), *rm = tu_doubles(C),
                   *rv = tu_doubles(C);
            random_affine(bn, &r, C, gamma, beta);
            float *fm = tu_floats(C), *fv = tu_floats(C);
            for (size_t c = 0; c < C; c++) {
                fm[c] = (float)(-1.5 + 0.5 * ref_normal(&r));
                fv[c] = (float)(2.0 + ref_uniform(&r));
                rm[c] = fm[c];
                rv[c] = fv[c];
            }
            TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, fm, C));
            TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, fv, C));
            cl_mem xb = tu_buffer(tu_ctx, off + E);
            tu_write(tu_ctx, xb, off, x, E);
            if (infer)
                TU_OK(clbn_bn_forward_infer(bn, s, xb, off, xb, off, NULL, 0, NULL, NULL));
            else
                TU_OK(clbn_bn_forward_train(bn, s, xb, off, xb, off, NULL, NULL, 0, NULL, NULL));
            tu_read(tu_ctx, xb, off, y, E);
            double *xd = ref_to_double(x, E), *yref = tu_doubles(E);
            double *mean = tu_doubles(C), *invstd = tu_doubles(C);
            ref_params p = {eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
            if (infer) {
                ref_forward_infer(s, &p, xd, rm, rv, yref);
            } else {
                ref_forward_train(s, &p, xd, yref, mean, invstd, NULL);
                float *sm = tu_floats(C);
                TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, sm, C));
                tu_check_close("in-place saved mean", sm, mean, C, 1e-6, 1e-6);
                TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, sm, C));
                tu_check_close("in-place saved invstd", sm, invstd, C, 0.0, 1e-5);
                free(sm);
            }
            tu_check_close(infer ? "in-place infer y" : "in-place train y", y, yref, E, 1e-6, 1e-5);
            clbn_bn_release(bn);
            clReleaseMemObject(xb);
            free(x);
            free(y);
            free(xd);
            free(yref);
            free(mean);
            free(invstd);
            free(gamma);
            free(beta);
            free(rm);
            free(rv);
            free(fm);
            free(fv);
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Caller-supplied saved statistics at nonzero offsets: the forward writes there (and nowhere
 * else), the state's own saved buffers keep the previous call's, and the backward reads them.
 * ------------------------------------------------------------------------------------------ */
static void caller_saved_statistics(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    const clbn_shape s = shape_in(layout, 4, 6, 10, 9);
    const size_t C = (size_t)s.c, E = ref_elems(&s);
    const uint64_t mo = 5, io = 13; /* offsets in the caller's buffers */
    const size_t total = 40;
    const float sentinel = -12345.5f;
    ref_rng r;
    ref_rng_seed(&r, 4242 + (uint64_t)layout);
    clbn_bn *bn = make_bn(C, CLBN_BN_FLAGS_DEFAULT, 0.0f);
    double eps = eps_of(bn);
    double *gamma = tu_doubles(C), *beta = tu_doubles(C);
    random_affine(bn, &r, C, gamma, beta);

    /* batch A through the state's own buffers */
    float *xa = tu_floats(E), *xb_host = tu_floats(E), *dy = tu_floats(E);
    tu_fill_normal(&r, xa, E, 1.0, 1.0);
    tu_fill_normal(&r, xb_host, E, -4.0, 3.0);
    tu_fill_normal(&r, dy, E, 0.0, 1.0);
    cl_mem xab = tu_buffer_from(tu_ctx, xa, E), xbb = tu_buffer_from(tu_ctx, xb_host, E);
    cl_mem yb = tu_buffer(tu_ctx, E), dyb = tu_buffer_from(tu_ctx, dy, E),
           dxb = tu_buffer(tu_ctx, E);
    TU_OK(clbn_bn_forward_train(bn, &s, xab, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
    float *own_mean = tu_floats(C), *own_invstd = tu_floats(C), *after = tu_floats(C);
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, own_mean, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, own_invstd, C));

    /* batch B into the caller's buffers */
    float *init = tu_floats(total);
    for (size_t i = 0; i < total; i++)
        init[i] = sentinel;
    cl_mem smb = tu_buffer_from(tu_ctx, init, total), sib = tu_buffer_from(tu_ctx, init, total);
    clbn_saved_stats saved = {smb, mo, sib, io};
    TU_OK(clbn_bn_forward_train(bn, &s, xbb, 0, yb, 0, &saved, NULL, 0, NULL, NULL));

    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, after, C));
    assert_memory_equal(after, own_mean, C * sizeof(float));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, after, C));
    assert_memory_equal(after, own_invstd, C * sizeof(float));

    float *sm = tu_floats(total), *si = tu_floats(total);
    tu_read(tu_ctx, smb, 0, sm, total);
    tu_read(tu_ctx, sib, 0, si, total);
    for (size_t i = 0; i < total; i++) {
        if ((i < mo || i >= mo + C) && sm[i] != sentinel)
            fail_msg("caller mean buffer written at %zu, outside [%llu, %llu)", i,
                     (unsigned long long)mo, (unsigned long long)(mo + C));
        if ((i < io || i >= io + C) && si[i] != sentinel)
            fail_msg("caller invstd buffer written at %zu, outside [%llu, %llu)", i,
                     (unsigned long long)io, (unsigned long long)(io + C));
    }
    double *xd = ref_to_double(xb_host, E), *mean = tu_doubles(C), *invstd = tu_doubles(C);
    ref_forward_train(&s, &(ref_params){eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta}, xd, NULL,
                      mean, invstd, NULL);
    tu_check_close("caller saved mean", sm + mo, mean, C, 1e-6, 1e-6);
    tu_check_close("caller saved invstd", si + io, invstd, C, 0.0, 1e-5);

    /* the backward of batch B with the caller's statistics (the state's own are batch A's) */
    TU_OK(clbn_bn_backward(bn, &s, xbb, 0, NULL, 0, dyb, 0, dxb, 0, &saved, NULL, 0, NULL, NULL));
    float *dx = tu_floats(E), *dg = tu_floats(C), *db = tu_floats(C);
    tu_read(tu_ctx, dxb, 0, dx, E);
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, dg, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, db, C));
    double *fmean = ref_to_double(sm + mo, C), *finvstd = ref_to_double(si + io, C);
    double *dyd = ref_to_double(dy, E), *dxref = tu_doubles(E), *dgref = tu_doubles(C),
           *dbref = tu_doubles(C);
    ref_params p = {eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
    ref_backward(&s, &p, xd, NULL, dyd, fmean, finvstd, dxref, dgref, dbref);
    tu_check_close("dx with caller saved statistics", dx, dxref, E, 1e-5, 1e-5);
    double *abs_b = calloc(C, sizeof(double)), *abs_g = calloc(C, sizeof(double));
    assert_true(abs_b && abs_g);
    add_abs_sums(&s, xd, dyd, fmean, finvstd, abs_b, abs_g);
    check_sums("dgamma with caller saved statistics", dg, dgref, abs_g, C);
    check_sums("dbeta with caller saved statistics", db, dbref, abs_b, C);
    free(abs_b);
    free(abs_g);
    /* the backward only reads the saved statistics */
    float *sm2 = tu_floats(total);
    tu_read(tu_ctx, smb, 0, sm2, total);
    assert_memory_equal(sm2, sm, total * sizeof(float));
    tu_read(tu_ctx, sib, 0, sm2, total);
    assert_memory_equal(sm2, si, total * sizeof(float));

    clbn_bn_release(bn);
    cl_mem bufs[] = {xab, xbb, yb, dyb, dxb, smb, sib};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        clReleaseMemObject(bufs[i]);
    free(xa);
    free(xb_host);
    free(dy);
    free(own_mean);
    free(own_invstd);
    free(after);
    free(init);
    free(sm);
    free(si);
    free(sm2);
    free(xd);
    free(mean);
    free(invstd);
    free(dx);
    free(dg);
    free(db);
    free(fmean);
    free(finvstd);
    free(dyd);
    free(dxref);
    free(dgref);
    free(dbref);
    free(gamma);
    free(beta);
}

/* ------------------------------------------------------------------------------------------
 * Gradient accumulation: with the flag, two backward calls add into nonzero dgamma and dbeta;
 * without it, a call overwrites them. dx is never accumulated.
 * ------------------------------------------------------------------------------------------ */
static void accumulate_gradients(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    const clbn_shape s = shape_in(layout, 4, 7, 12, 11);
    const size_t C = (size_t)s.c, E = ref_elems(&s);
    for (int accumulate = 0; accumulate < 2; accumulate++) {
        ref_rng r;
        ref_rng_seed(&r, 808 + (uint64_t)accumulate);
        uint32_t flags = CLBN_BN_FLAGS_DEFAULT | (accumulate ? CLBN_ACCUMULATE_GRADIENTS : 0);
        clbn_bn *bn = make_bn(C, flags, 0.0f);
        double eps = eps_of(bn);
        double *gamma = tu_doubles(C), *beta = tu_doubles(C);
        random_affine(bn, &r, C, gamma, beta);
        float *x = tu_floats(E), *dy1 = tu_floats(E), *dy2 = tu_floats(E), *g0 = tu_floats(C),
              *b0 = tu_floats(C);
        tu_fill_normal(&r, x, E, 0.5, 1.5);
        tu_fill_normal(&r, dy1, E, 0.0, 1.0);
        tu_fill_normal(&r, dy2, E, 0.3, 2.0);
        tu_fill_normal(&r, g0, C, 0.0, 10.0);
        tu_fill_normal(&r, b0, C, 0.0, 10.0);
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_DGAMMA, g0, C));
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_DBETA, b0, C));
        cl_mem xb = tu_buffer_from(tu_ctx, x, E), yb = tu_buffer(tu_ctx, E);
        cl_mem dy1b = tu_buffer_from(tu_ctx, dy1, E), dy2b = tu_buffer_from(tu_ctx, dy2, E);
        cl_mem dxb = tu_buffer(tu_ctx, E);
        TU_OK(clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
        TU_OK(clbn_bn_backward(bn, &s, xb, 0, NULL, 0, dy1b, 0, dxb, 0, NULL, NULL, 0, NULL, NULL));
        TU_OK(clbn_bn_backward(bn, &s, xb, 0, NULL, 0, dy2b, 0, dxb, 0, NULL, NULL, 0, NULL, NULL));

        double *mean = tu_doubles(C), *invstd = tu_doubles(C);
        read_doubles(bn, CLBN_VECTOR_SAVED_MEAN, mean, C);
        read_doubles(bn, CLBN_VECTOR_SAVED_INVSTD, invstd, C);
        ref_params p = {eps, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
        double *xd = ref_to_double(x, E), *d1 = ref_to_double(dy1, E), *d2 = ref_to_double(dy2, E);
        double *dx = tu_doubles(E), *dg1 = tu_doubles(C), *db1 = tu_doubles(C),
               *dg2 = tu_doubles(C), *db2 = tu_doubles(C), *dg = tu_doubles(C), *db = tu_doubles(C);
        ref_backward(&s, &p, xd, NULL, d1, mean, invstd, NULL, dg1, db1);
        ref_backward(&s, &p, xd, NULL, d2, mean, invstd, dx, dg2, db2);
        double *abs_b = calloc(C, sizeof(double)), *abs_g = calloc(C, sizeof(double));
        assert_true(abs_b && abs_g);
        if (accumulate)
            add_abs_sums(&s, xd, d1, mean, invstd, abs_b, abs_g);
        add_abs_sums(&s, xd, d2, mean, invstd, abs_b, abs_g);
        for (size_t c = 0; c < C; c++) {
            dg[c] = accumulate ? (double)g0[c] + dg1[c] + dg2[c] : dg2[c];
            db[c] = accumulate ? (double)b0[c] + db1[c] + db2[c] : db2[c];
        }
        float *got = tu_floats(E);
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, got, C));
        check_sums(accumulate ? "accumulated dgamma" : "overwritten dgamma", got, dg, abs_g, C);
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, got, C));
        check_sums(accumulate ? "accumulated dbeta" : "overwritten dbeta", got, db, abs_b, C);
        free(abs_b);
        free(abs_g);
        tu_read(tu_ctx, dxb, 0, got, E);
        tu_check_close("dx of the second call", got, dx, E, 1e-5, 1e-5);

        clbn_bn_release(bn);
        cl_mem bufs[] = {xb, yb, dy1b, dy2b, dxb};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            clReleaseMemObject(bufs[i]);
        free(x);
        free(dy1);
        free(dy2);
        free(g0);
        free(b0);
        free(mean);
        free(invstd);
        free(xd);
        free(d1);
        free(d2);
        free(dx);
        free(dg1);
        free(db1);
        free(dg2);
        free(db2);
        free(dg);
        free(db);
        free(got);
        free(gamma);
        free(beta);
    }
}

/* ------------------------------------------------------------------------------------------
 * m = 1: without tracking the biased variance is 0, x̂ = 0 and y = beta exactly (training and
 * inference forwards); with tracking the training forward is refused and changes nothing.
 * ------------------------------------------------------------------------------------------ */
static void single_value_batch(void **state) {
    const clbn_layout layout = *(const clbn_layout *)*state;
    const clbn_shape s = shape_in(layout, 1, 5, 1, 1);
    const size_t C = 5;
    ref_rng r;
    ref_rng_seed(&r, 31 + (uint64_t)layout);
    float x[5], y[5], beta[5];
    tu_fill_normal(&r, x, C, 3.0, 4.0);
    cl_mem xb = tu_buffer_from(tu_ctx, x, C), yb = tu_buffer(tu_ctx, C);
    for (int infer = 0; infer < 2; infer++) {
        clbn_bn *bn = make_bn(C, CLBN_USE_SCALE | CLBN_USE_SHIFT, 0.0f);
        double gd[5], bd[5];
        random_affine(bn, &r, C, gd, bd);
        for (size_t c = 0; c < C; c++)
            beta[c] = (float)bd[c];
        if (infer)
            TU_OK(clbn_bn_forward_infer(bn, &s, xb, 0, yb, 0, NULL, 0, NULL, NULL));
        else
            TU_OK(clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
        tu_read(tu_ctx, yb, 0, y, C);
        for (size_t c = 0; c < C; c++)
            if (y[c] != beta[c])
                fail_msg("%s m = 1: y[%zu] = %.9g, beta = %.9g", infer ? "infer" : "train", c,
                         (double)y[c], (double)beta[c]);
        clbn_bn_release(bn);
    }

    clbn_bn *bn = make_bn(C, CLBN_BN_FLAGS_DEFAULT, 0.0f);
    float rm[5], rv[5], after[5];
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv, C));
    clbn_status st = clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL);
    assert_int_equal(st, CLBN_ERROR_TOO_FEW_VALUES);
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, after, C));
    assert_memory_equal(after, rm, sizeof rm);
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, after, C));
    assert_memory_equal(after, rv, sizeof rv);
    uint64_t t = 1;
    TU_OK(clbn_bn_get_batches_tracked(bn, &t));
    assert_int_equal(t, 0);
    clbn_bn_release(bn);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
}

/* ------------------------------------------------------------------------------------------
 * Backward sums over m = 2^22 values per channel: dy = 0.1 + N(0, 1e-8) makes every term
 * inexact and of the same sign, so a plain fp32 running sum rounds the same way at every step.
 * Measured with the runs unbounded: dbeta off by 2.4e-4 relative on this CPU's NHWC plan and by
 * 1e-2 on a context limited to work-groups of one item, one compute unit and scalar loads
 * (four lanes of 2^20 values each); bounded runs stay below 2e-7 on every plan.
 * ------------------------------------------------------------------------------------------ */
static clbn_context *one_lane_context(void) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.limits.max_work_group_size = 1;
    o.limits.compute_units = 1;
    o.limits.vector_width = 1;
    o.limits.device_type = CLBN_DEVICE_KIND_CPU;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    return ctx;
}

static void long_channel_backward(void **state) {
    const clbn_layout l = *(const clbn_layout *)state[0];
    static const char *const who[] = {"default", "GPU-limits", "one-lane"};
    for (int gpu = 0; gpu < 3; gpu++) {
        clbn_context *ctx = gpu == 0   ? tu_ctx
                            : gpu == 1 ? tu_context_gpu_limits()
                                       : one_lane_context();
        const clbn_shape s = shape_in(l, 16, 1, 512, 512); /* m = 2^22 */
        const size_t E = ref_elems(&s);
        ref_rng r;
        ref_rng_seed(&r, 4242 + (uint64_t)l);
        float *x = tu_floats(E), *dy = tu_floats(E), *dx = tu_floats(E);
        tu_fill_normal(&r, x, E, 3.0, 2.0);
        tu_fill_normal(&r, dy, E, 0.1, 1e-4);
        cl_mem xb = tu_buffer_from(ctx, x, E), yb = tu_buffer(ctx, E);
        cl_mem dyb = tu_buffer_from(ctx, dy, E), dxb = tu_buffer(ctx, E);
        clbn_bn_options o;
        clbn_bn_options_init(&o);
        o.channels = 1;
        clbn_bn *bn = NULL;
        TU_OK(clbn_bn_create(ctx, &o, &bn));
        TU_OK(clbn_bn_forward_train(bn, &s, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL));
        TU_OK(clbn_bn_backward(bn, &s, xb, 0, NULL, 0, dyb, 0, dxb, 0, NULL, NULL, 0, NULL, NULL));
        clbn_plan plan;
        TU_OK(clbn_bn_query_plan(bn, CLBN_OP_BACKWARD, &s, &plan));
        tu_read(ctx, dxb, 0, dx, E);
        double mean, invstd, dg_ref, db_ref, abs_b = 0.0, abs_g = 0.0;
        read_doubles(bn, CLBN_VECTOR_SAVED_MEAN, &mean, 1);
        read_doubles(bn, CLBN_VECTOR_SAVED_INVSTD, &invstd, 1);
        double *x_d = ref_to_double(x, E), *dy_d = ref_to_double(dy, E), *dx_ref = tu_doubles(E);
        ref_params p = {o.eps, 1, 1, CLBN_ACTIVATION_NONE, NULL, NULL};
        ref_backward(&s, &p, x_d, NULL, dy_d, &mean, &invstd, dx_ref, &dg_ref, &db_ref);
        add_abs_sums(&s, x_d, dy_d, &mean, &invstd, &abs_b, &abs_g);
        double dg, db;
        read_doubles(bn, CLBN_VECTOR_DGAMMA, &dg, 1);
        read_doubles(bn, CLBN_VECTOR_DBETA, &db, 1);
        print_message("      %s plan %s wg %zu split %llu: dbeta %.9g (ref %.9g, rel %.2e), "
                      "dgamma %.6g (ref %.6g)\n",
                      who[gpu], clbn_strategy_name(plan.strategy), plan.work_group_size,
                      (unsigned long long)plan.split, db, db_ref, fabs(db - db_ref) / fabs(db_ref),
                      dg, dg_ref);
        float dbf = (float)db, dgf = (float)dg;
        check_sums("dbeta", &dbf, &db_ref, &abs_b, 1);
        check_sums("dgamma", &dgf, &dg_ref, &abs_g, 1);
        tu_check_close("dx", dx, dx_ref, E, 1e-5, 1e-5);
        clbn_bn_release(bn);
        clReleaseMemObject(xb);
        clReleaseMemObject(yb);
        clReleaseMemObject(dyb);
        clReleaseMemObject(dxb);
        free(x);
        free(dy);
        free(dx);
        free(x_d);
        free(dy_d);
        free(dx_ref);
        if (gpu)
            clbn_context_release(ctx);
    }
}

int main(void) {
    static const char *lnames[] = {"NCHW", "NHWC", "NC"};
    static running_case running[9];
    static char names[64][96];
    struct CMUnitTest tests[64];
    size_t n = 0;
    struct {
        const char *what;
        CMUnitTestFunction f;
    } per_layout[] = {
        {"large_mean_statistics 32x8x56x56 x=10000+N(0,1)", large_mean_statistics},
        {"bit_identical_runs fwd_train+bwd relu", bit_identical_runs},
        {"in_place_forward train+infer", in_place_forward},
        {"caller_saved_statistics offsets 5,13", caller_saved_statistics},
        {"accumulate_gradients two bwd calls", accumulate_gradients},
        {"single_value_batch m=1", single_value_batch},
        {"long_channel_backward m=2^22 dy=0.1+N(0,1e-8)", long_channel_backward},
    };
    for (size_t t = 0; t < sizeof per_layout / sizeof per_layout[0]; t++)
        for (size_t li = 0; li < 3; li++) {
            snprintf(names[n], sizeof names[n], "%s %s", per_layout[t].what, lnames[li]);
            tests[n] =
                (struct CMUnitTest){names[n], per_layout[t].f, NULL, NULL, (void *)&layouts[li]};
            n++;
        }
    const struct {
        uint32_t flags;
        float factor;
        const char *name;
    } modes[] = {{CLBN_BN_FLAGS_DEFAULT, 0.1f, "exp(f=0.1)"},
                 {CLBN_BN_FLAGS_DEFAULT, 0.01f, "exp(f=0.01)"},
                 {CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE, 0.0f, "cumulative"}};
    for (size_t mi = 0; mi < 3; mi++)
        for (size_t li = 0; li < 3; li++) {
            running_case *k = &running[mi * 3 + li];
            *k = (running_case){layouts[li], modes[mi].flags, modes[mi].factor, modes[mi].name};
            snprintf(names[n], sizeof names[n], "running_statistics 5 batches %s %s then infer",
                     modes[mi].name, lnames[li]);
            tests[n] = (struct CMUnitTest){names[n], running_statistics, NULL, NULL, k};
            n++;
        }
    return _cmocka_run_group_tests("numerics", tests, n, tu_group_setup, tu_group_teardown);
}
