/* The double-precision host reference of DESIGN.md's formulas (see reference.h), and the harness
 * that checks one clbn operation against it. */
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The formulas use no test framework, so a tool can build this file with
 * -DREF_NO_HARNESS and without cmocka. */
static void *ref_alloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "reference: out of memory (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

/* ------------------------------------------------------------------------------------------
 * Layout indexing
 * ------------------------------------------------------------------------------------------ */
size_t ref_spatial(const clbn_shape *s) {
    if (s->layout == CLBN_LAYOUT_NC)
        return 1;
    return (size_t)(s->h * s->w);
}

size_t ref_count(const clbn_shape *s) {
    return (size_t)s->n * ref_spatial(s);
}

size_t ref_elems(const clbn_shape *s) {
    return ref_count(s) * (size_t)s->c;
}

size_t ref_index(const clbn_shape *s, size_t n, size_t c, size_t hw) {
    size_t C = (size_t)s->c, HW = ref_spatial(s);
    if (s->layout == CLBN_LAYOUT_NHWC)
        return (n * HW + hw) * C + c;
    /* NCHW, and NC as NCHW with H = W = 1 */
    return (n * C + c) * HW + hw;
}

size_t ref_channel_of(const clbn_shape *s, size_t i) {
    size_t C = (size_t)s->c;
    if (s->layout == CLBN_LAYOUT_NHWC)
        return i % C;
    return (i / ref_spatial(s)) % C;
}

/* Runs body with i set to every element of channel c, in a fixed order (n, then h*W + w). */
#define REF_FOR_CHANNEL(s, c, i, body)                                                             \
    do {                                                                                           \
        size_t ref_n_, ref_hw_, ref_HW_ = ref_spatial(s);                                          \
        for (ref_n_ = 0; ref_n_ < (size_t)(s)->n; ref_n_++)                                        \
            for (ref_hw_ = 0; ref_hw_ < ref_HW_; ref_hw_++) {                                      \
                size_t i = ref_index((s), ref_n_, (c), ref_hw_);                                   \
                body;                                                                              \
            }                                                                                      \
    } while (0)

/* ------------------------------------------------------------------------------------------
 * Formulas
 * ------------------------------------------------------------------------------------------ */
double ref_gamma(const ref_params *p, size_t c) {
    return (p->use_scale && p->gamma) ? p->gamma[c] : 1.0;
}

double ref_beta(const ref_params *p, size_t c) {
    return (p->use_shift && p->beta) ? p->beta[c] : 0.0;
}

double ref_activate(clbn_activation a, double z) {
    switch (a) {
    case CLBN_ACTIVATION_RELU:
        return z > 0.0 ? z : 0.0;
    case CLBN_ACTIVATION_SIGMOID:
        return 1.0 / (1.0 + exp(-z));
    default:
        return z;
    }
}

double ref_activation_grad(clbn_activation a, double y, double dy) {
    switch (a) {
    case CLBN_ACTIVATION_RELU:
        return y > 0.0 ? dy : 0.0;
    case CLBN_ACTIVATION_SIGMOID:
        return dy * y * (1.0 - y);
    default:
        return dy;
    }
}

void ref_batch_stats(const clbn_shape *s, const double *x, double *mean, double *var) {
    size_t m = ref_count(s);
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double sum = 0.0;
        REF_FOR_CHANNEL(s, c, i, sum += x[i]);
        double mu = sum / (double)m;
        double ss = 0.0;
        REF_FOR_CHANNEL(s, c, i, ss += (x[i] - mu) * (x[i] - mu));
        mean[c] = mu;
        var[c] = ss / (double)m;
    }
}

void ref_invstd(size_t channels, const double *var, double eps, double *invstd) {
    for (size_t c = 0; c < channels; c++)
        invstd[c] = 1.0 / sqrt(var[c] + eps);
}

void ref_normalize(const clbn_shape *s, const ref_params *p, const double *x, const double *mean,
                   const double *invstd, double *y) {
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double g = ref_gamma(p, c), b = ref_beta(p, c), mu = mean[c], is = invstd[c];
        REF_FOR_CHANNEL(s, c, i, y[i] = ref_activate(p->activation, g * (x[i] - mu) * is + b));
    }
}

void ref_forward_train(const clbn_shape *s, const ref_params *p, const double *x, double *y,
                       double *mean, double *invstd, double *var) {
    size_t C = (size_t)s->c;
    double *mu = ref_alloc(C * sizeof *mu), *v = ref_alloc(C * sizeof *v),
           *is = ref_alloc(C * sizeof *is);
    ref_batch_stats(s, x, mu, v);
    ref_invstd(C, v, p->eps, is);
    if (y)
        ref_normalize(s, p, x, mu, is, y);
    if (mean)
        memcpy(mean, mu, C * sizeof *mu);
    if (invstd)
        memcpy(invstd, is, C * sizeof *is);
    if (var)
        memcpy(var, v, C * sizeof *v);
    free(mu);
    free(v);
    free(is);
}

void ref_running_update(size_t channels, const double *mean, const double *var, size_t m, double f,
                        double *running_mean, double *running_var) {
    double unbias = (double)m / (double)(m - 1);
    for (size_t c = 0; c < channels; c++) {
        running_mean[c] = (1.0 - f) * running_mean[c] + f * mean[c];
        running_var[c] = (1.0 - f) * running_var[c] + f * var[c] * unbias;
    }
}

double ref_cumulative_factor(uint64_t t) {
    return 1.0 / (1.0 + (double)t);
}

void ref_forward_infer(const clbn_shape *s, const ref_params *p, const double *x,
                       const double *running_mean, const double *running_var, double *y) {
    size_t C = (size_t)s->c;
    double *is = ref_alloc(C * sizeof *is);
    ref_invstd(C, running_var, p->eps, is);
    ref_normalize(s, p, x, running_mean, is, y);
    free(is);
}

/* dz for element i: dy, or through the activation from the forward's output y. */
static double dz_at(const ref_params *p, const double *y, const double *dy, size_t i) {
    if (p->activation == CLBN_ACTIVATION_NONE)
        return dy[i];
    return ref_activation_grad(p->activation, y[i], dy[i]);
}

void ref_backward(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                  const double *dy, const double *mean, const double *invstd, double *dx,
                  double *dgamma, double *dbeta) {
    double m = (double)ref_count(s);
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double mu = mean[c], is = invstd[c], g = ref_gamma(p, c);
        double db = 0.0, dg = 0.0;
        REF_FOR_CHANNEL(s, c, i, {
            double dz = dz_at(p, y, dy, i);
            db += dz;
            dg += dz * (x[i] - mu) * is;
        });
        if (dx)
            REF_FOR_CHANNEL(s, c, i, {
                double xhat = (x[i] - mu) * is;
                dx[i] = (g * is / m) * (m * dz_at(p, y, dy, i) - db - xhat * dg);
            });
        if (dgamma)
            dgamma[c] = dg;
        if (dbeta)
            dbeta[c] = db;
    }
}

void ref_backward_frozen(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                         const double *dy, const double *running_mean, const double *running_var,
                         double *dx, double *dgamma, double *dbeta) {
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double mu = running_mean[c], is = 1.0 / sqrt(running_var[c] + p->eps);
        double g = ref_gamma(p, c);
        double db = 0.0, dg = 0.0;
        REF_FOR_CHANNEL(s, c, i, {
            double dz = dz_at(p, y, dy, i);
            db += dz;
            dg += dz * (x[i] - mu) * is;
            if (dx)
                dx[i] = g * is * dz;
        });
        if (dgamma)
            dgamma[c] = dg;
        if (dbeta)
            dbeta[c] = db;
    }
}

void ref_fold(size_t channels, const ref_params *p, const double *running_mean,
              const double *running_var, double *a, double *b) {
    for (size_t c = 0; c < channels; c++) {
        a[c] = ref_gamma(p, c) / sqrt(running_var[c] + p->eps);
        b[c] = ref_beta(p, c) - a[c] * running_mean[c];
    }
}

double *ref_to_double(const float *v, size_t n) {
    double *d = ref_alloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = (double)v[i];
    return d;
}

/* ------------------------------------------------------------------------------------------
 * Harness (cmocka)
 * ------------------------------------------------------------------------------------------ */
#ifndef REF_NO_HARNESS
#include "test_util.h"

/* Every tolerance is |got - ref| <= atol + rtol*|ref|; the table with the reasons is at the top
 * of test_ops.c. */
const ref_tolerances ref_default_tolerances = {
    .mean = {1e-6, 1e-6},
    .invstd = {0.0, 1e-5},
    .y = {1e-6, 1e-5},
    .y_mean_factor = 1.2e-7, /* 2u, u = 2^-24: twice the rounding of the fp32 mean */
    .running_mean = {1e-6, 1e-6},
    .running_var = {1e-7, 1e-5},
    .dx = {1e-5, 1e-5},
    .sum_atol_factor = 1e-6,
    .sum_rtol = 1e-5,
};

/* Fills the parts of the output buffers clbn must not write, so a stray write shows. */
#define REF_SENTINEL (-31415.926f)
/* Wide enough that a vector store or a work-group's worth of stray writes lands in it rather
 * than in the device allocator's (on a CPU device, the host heap's) neighbouring memory. */
#define REF_PAD 256

static const char *op_name(clbn_op op) {
    switch (op) {
    case CLBN_OP_FORWARD_TRAIN:
        return "fwd_train";
    case CLBN_OP_FORWARD_INFER:
        return "fwd_infer";
    case CLBN_OP_FORWARD_FROZEN:
        return "fwd_frozen";
    case CLBN_OP_BACKWARD:
        return "bwd";
    case CLBN_OP_BACKWARD_FROZEN:
        return "bwd_frozen";
    }
    return "?";
}

static const char *layout_name(clbn_layout l) {
    switch (l) {
    case CLBN_LAYOUT_NCHW:
        return "NCHW";
    case CLBN_LAYOUT_NHWC:
        return "NHWC";
    case CLBN_LAYOUT_NC:
        return "NC";
    }
    return "?";
}

static const char *activation_name(clbn_activation a) {
    switch (a) {
    case CLBN_ACTIVATION_NONE:
        return "none";
    case CLBN_ACTIVATION_RELU:
        return "relu";
    case CLBN_ACTIVATION_SIGMOID:
        return "sigmoid";
    }
    return "?";
}

void ref_case_name(const ref_case *k, char *buf, size_t size) {
    const clbn_shape *s = &k->shape;
    char shape[96], mode[64], offs[32] = "";
    if (s->layout == CLBN_LAYOUT_NC)
        snprintf(shape, sizeof shape, "%llux%llu", (unsigned long long)s->n,
                 (unsigned long long)s->c);
    else
        snprintf(shape, sizeof shape, "%llux%llux%llux%llu", (unsigned long long)s->n,
                 (unsigned long long)s->c, (unsigned long long)s->h, (unsigned long long)s->w);
    if (!(k->flags & CLBN_TRACK_RUNNING_STATS))
        snprintf(mode, sizeof mode, "notrack");
    else if (k->flags & CLBN_CUMULATIVE_AVERAGE)
        snprintf(mode, sizeof mode, "cumulative(t=%llu)", (unsigned long long)k->batches_tracked);
    else
        snprintf(mode, sizeof mode, "exp(f=%g)", k->factor ? (double)k->factor : 0.1);
    if (k->offset)
        snprintf(offs, sizeof offs, " offset=%llu", (unsigned long long)k->offset);
    snprintf(buf, size, "%s %s %s %s+%s %s %s%s", op_name(k->op), layout_name(s->layout), shape,
             (k->flags & CLBN_USE_SCALE) ? "scale" : "noscale",
             (k->flags & CLBN_USE_SHIFT) ? "shift" : "noshift", activation_name(k->activation),
             mode, offs);
}

/* A device buffer of off + n + REF_PAD floats: sentinels around host[0..n) placed at off. */
static cl_mem padded_buffer(clbn_context *ctx, const float *host, size_t off, size_t n) {
    size_t total = off + n + REF_PAD;
    float *all = tu_floats(total);
    for (size_t i = 0; i < total; i++)
        all[i] = REF_SENTINEL;
    if (host)
        memcpy(all + off, host, n * sizeof *host);
    cl_mem b = tu_buffer_from(ctx, all, total);
    free(all);
    return b;
}

/* Reads the whole padded buffer, checks the sentinels around [off, off + n) and returns the
 * buffer (the caller frees it; the data start at off). */
static float *read_padded(clbn_context *ctx, cl_mem b, const char *what, size_t off, size_t n) {
    size_t total = off + n + REF_PAD;
    float *all = tu_floats(total);
    tu_read(ctx, b, 0, all, total);
    size_t stray = 0, first = 0, last = 0;
    for (size_t i = 0; i < total; i++)
        if ((i < off || i >= off + n) && all[i] != REF_SENTINEL) {
            if (!stray++)
                first = i;
            last = i;
        }
    if (stray)
        fail_msg("%s: %zu elements outside [%zu, %zu) were written, from %zu (%.9g) to %zu", what,
                 stray, off, off + n, first, (double)all[first], last);
    return all;
}

static void read_vec(clbn_bn *bn, clbn_vector v, float *host, size_t c) {
    TU_OK(clbn_bn_read_vector(bn, v, host, c));
}

/* dgamma and dbeta with the per-channel tolerance atol = factor * Σ|term|. */
static void check_sums(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                       const double *dy, const double *mean, const double *invstd,
                       const float *dgamma, const float *dbeta, const double *dgamma_ref,
                       const double *dbeta_ref, const ref_tolerances *tol) {
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double abs_g = 0.0, abs_b = 0.0;
        REF_FOR_CHANNEL(s, c, i, {
            double dz = dz_at(p, y, dy, i);
            abs_b += fabs(dz);
            abs_g += fabs(dz * (x[i] - mean[c]) * invstd[c]);
        });
        char what[64];
        if (p->use_scale) {
            snprintf(what, sizeof what, "dgamma (channel %zu)", c);
            tu_check_close(what, dgamma + c, dgamma_ref + c, 1, tol->sum_atol_factor * abs_g,
                           tol->sum_rtol);
        }
        if (p->use_shift) {
            snprintf(what, sizeof what, "dbeta (channel %zu)", c);
            tu_check_close(what, dbeta + c, dbeta_ref + c, 1, tol->sum_atol_factor * abs_b,
                           tol->sum_rtol);
        }
    }
}

/* y per channel: atol grows by y_mean_factor·|gamma|·invstd·|mean|, the fp32 rounding of the
 * mean (or the running mean) carried through x − mean and amplified by invstd. It matters when
 * a channel's spread is small against its mean (m = 2 with two close values, say). */
static void check_y(const clbn_shape *s, const ref_params *p, const float *y, const double *yref,
                    const double *mean, const double *invstd, const ref_tolerances *tol) {
    size_t C = (size_t)s->c;
    double *atol = tu_doubles(C);
    for (size_t c = 0; c < C; c++)
        atol[c] =
            tol->y.atol + tol->y_mean_factor * fabs(ref_gamma(p, c)) * invstd[c] * fabs(mean[c]);
    for (size_t i = 0; i < ref_elems(s); i++) {
        size_t c = ref_channel_of(s, i);
        double err = fabs((double)y[i] - yref[i]);
        if (!(err <= atol[c] + tol->y.rtol * fabs(yref[i])))
            fail_msg("y[%zu] (channel %zu, mean %.9g, invstd %.9g): got %.9g, reference %.9g "
                     "(|err| %.3g > atol %.3g + rtol %.1g*|ref|)",
                     i, c, mean[c], invstd[c], (double)y[i], yref[i], err, atol[c], tol->y.rtol);
    }
    free(atol);
}

void ref_check_case(clbn_context *ctx, const ref_case *k, const ref_tolerances *tol,
                    clbn_plan *plan) {
    const clbn_shape *s = &k->shape;
    const size_t C = (size_t)s->c, E = ref_elems(s), m = ref_count(s);
    const size_t off = (size_t)k->offset;
    /* distinct offsets per buffer, so swapped offsets show */
    const size_t xo = off, yo = off ? off + 2 : 0, dyo = off ? off + 5 : 0, dxo = off ? off + 1 : 0;
    const int track = (k->flags & CLBN_TRACK_RUNNING_STATS) != 0;
    if (!tol)
        tol = &ref_default_tolerances;

    /* Random data: per-channel mean and spread, gamma of both signs, nonzero running stats
     * near the data's own so the frozen and inference outputs are of ordinary size. */
    tu_rng r;
    tu_rng_seed(&r, k->seed);
    float *gamma = tu_floats(C), *beta = tu_floats(C), *rm0 = tu_floats(C), *rv0 = tu_floats(C);
    double *ch_mean = tu_doubles(C), *ch_std = tu_doubles(C);
    for (size_t c = 0; c < C; c++) {
        ch_mean[c] = k->data_mean + 4.0 * tu_uniform(&r) - 2.0;
        ch_std[c] = 0.5 + 1.5 * tu_uniform(&r);
        gamma[c] = (float)((0.5 + tu_uniform(&r)) * (tu_uniform(&r) < 0.25 ? -1.0 : 1.0));
        beta[c] = (float)tu_normal(&r);
        rm0[c] = (float)(ch_mean[c] + 0.3 * ch_std[c] * tu_normal(&r));
        rv0[c] = (float)(ch_std[c] * ch_std[c] * (0.6 + tu_uniform(&r)));
    }
    float *x = tu_floats(E), *dy = tu_floats(E);
    for (size_t i = 0; i < E; i++) {
        size_t c = ref_channel_of(s, i);
        x[i] = (float)(ch_mean[c] + ch_std[c] * tu_normal(&r));
    }
    for (size_t i = 0; i < E; i++)
        dy[i] = (float)tu_normal(&r);

    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.flags = k->flags;
    o.activation = k->activation;
    if (k->factor != 0.0f)
        o.factor = k->factor;
    if (k->eps != 0.0f)
        o.eps = k->eps;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, gamma, C));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, beta, C));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm0, C));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv0, C));
    TU_OK(clbn_bn_set_batches_tracked(bn, k->batches_tracked));
    if (plan) {
        TU_OK(clbn_bn_query_plan(bn, k->op, s, plan));
        assert_true(plan->work_group_size > 0);
    }

    double *gamma_d = ref_to_double(gamma, C), *beta_d = ref_to_double(beta, C);
    double *rm0_d = ref_to_double(rm0, C), *rv0_d = ref_to_double(rv0, C);
    double *x_d = ref_to_double(x, E);
    ref_params p = {(double)o.eps,
                    (k->flags & CLBN_USE_SCALE) != 0,
                    (k->flags & CLBN_USE_SHIFT) != 0,
                    k->activation,
                    gamma_d,
                    beta_d};

    cl_mem xb = padded_buffer(ctx, x, xo, E);
    cl_mem yb = padded_buffer(ctx, NULL, yo, E);
    cl_mem dyb = NULL, dxb = NULL;
    float *y_all = NULL, *dx_all = NULL;
    double *y_ref = tu_doubles(E);
    float *fm = tu_floats(C), *fi = tu_floats(C), *frm = tu_floats(C), *frv = tu_floats(C);
    uint64_t t_after = 0;
    int changes_running = 0;

    switch (k->op) {
    case CLBN_OP_FORWARD_TRAIN: {
        TU_OK(clbn_bn_forward_train(bn, s, xb, xo, yb, yo, NULL, NULL, 0, NULL, NULL));
        y_all = read_padded(ctx, yb, "y", yo, E);
        double *mean = tu_doubles(C), *invstd = tu_doubles(C), *var = tu_doubles(C);
        ref_forward_train(s, &p, x_d, y_ref, mean, invstd, var);
        read_vec(bn, CLBN_VECTOR_SAVED_MEAN, fm, C);
        read_vec(bn, CLBN_VECTOR_SAVED_INVSTD, fi, C);
        tu_check_close("saved mean", fm, mean, C, tol->mean.atol, tol->mean.rtol);
        tu_check_close("saved invstd", fi, invstd, C, tol->invstd.atol, tol->invstd.rtol);
        check_y(s, &p, y_all + yo, y_ref, mean, invstd, tol);
        if (track) {
            double f = (k->flags & CLBN_CUMULATIVE_AVERAGE)
                           ? ref_cumulative_factor(k->batches_tracked)
                           : (double)o.factor;
            ref_running_update(C, mean, var, m, f, rm0_d, rv0_d);
            changes_running = 1;
        }
        free(mean);
        free(invstd);
        free(var);
        break;
    }
    case CLBN_OP_FORWARD_INFER:
    case CLBN_OP_FORWARD_FROZEN: {
        if (k->op == CLBN_OP_FORWARD_INFER)
            TU_OK(clbn_bn_forward_infer(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL));
        else
            TU_OK(clbn_bn_forward_frozen(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL));
        y_all = read_padded(ctx, yb, "y", yo, E);
        double *mean = tu_doubles(C), *invstd = tu_doubles(C);
        if (track) {
            ref_forward_infer(s, &p, x_d, rm0_d, rv0_d, y_ref);
            memcpy(mean, rm0_d, C * sizeof *mean);
            ref_invstd(C, rv0_d, p.eps, invstd);
        } else { /* inference without running statistics normalizes with the batch's */
            ref_forward_train(s, &p, x_d, y_ref, mean, invstd, NULL);
        }
        check_y(s, &p, y_all + yo, y_ref, mean, invstd, tol);
        free(mean);
        free(invstd);
        break;
    }
    case CLBN_OP_BACKWARD:
    case CLBN_OP_BACKWARD_FROZEN: {
        dyb = padded_buffer(ctx, dy, dyo, E);
        dxb = padded_buffer(ctx, NULL, dxo, E);
        int act = k->activation != CLBN_ACTIVATION_NONE;
        double *mean = NULL, *invstd = NULL;
        if (k->op == CLBN_OP_BACKWARD) {
            /* The backward is checked against the reference evaluated with the statistics and
             * output the library's forward produced (those are checked by fwd_train), so a
             * difference here is the backward's own. */
            TU_OK(clbn_bn_forward_train(bn, s, xb, xo, yb, yo, NULL, NULL, 0, NULL, NULL));
            TU_OK(clbn_bn_backward(bn, s, xb, xo, act ? yb : NULL, act ? yo : 0, dyb, dyo, dxb, dxo,
                                   NULL, NULL, 0, NULL, NULL));
            read_vec(bn, CLBN_VECTOR_SAVED_MEAN, fm, C);
            read_vec(bn, CLBN_VECTOR_SAVED_INVSTD, fi, C);
            mean = ref_to_double(fm, C);
            invstd = ref_to_double(fi, C);
            if (track) {
                /* the forward moved them; what it moved them to is fwd_train's concern */
                read_vec(bn, CLBN_VECTOR_RUNNING_MEAN, frm, C);
                read_vec(bn, CLBN_VECTOR_RUNNING_VAR, frv, C);
                for (size_t c = 0; c < C; c++) {
                    rm0_d[c] = frm[c];
                    rv0_d[c] = frv[c];
                }
                changes_running = 1; /* compared with tolerance 0 below via the copies */
            }
        } else {
            TU_OK(clbn_bn_forward_frozen(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL));
            TU_OK(clbn_bn_backward_frozen(bn, s, xb, xo, act ? yb : NULL, act ? yo : 0, dyb, dyo,
                                          dxb, dxo, NULL, 0, NULL, NULL));
            mean = tu_doubles(C);
            invstd = tu_doubles(C);
            for (size_t c = 0; c < C; c++) {
                mean[c] = rm0_d[c];
                invstd[c] = 1.0 / sqrt(rv0_d[c] + p.eps);
            }
        }
        y_all = read_padded(ctx, yb, "y", yo, E);
        dx_all = read_padded(ctx, dxb, "dx", dxo, E);
        double *y_d = act ? ref_to_double(y_all + yo, E) : NULL;
        double *dy_d = ref_to_double(dy, E);
        double *dx_ref = tu_doubles(E), *dg_ref = tu_doubles(C), *db_ref = tu_doubles(C);
        if (k->op == CLBN_OP_BACKWARD)
            ref_backward(s, &p, x_d, y_d, dy_d, mean, invstd, dx_ref, dg_ref, db_ref);
        else
            ref_backward_frozen(s, &p, x_d, y_d, dy_d, rm0_d, rv0_d, dx_ref, dg_ref, db_ref);
        tu_check_close("dx", dx_all + dxo, dx_ref, E, tol->dx.atol, tol->dx.rtol);
        float *dg = tu_floats(C), *db = tu_floats(C);
        read_vec(bn, CLBN_VECTOR_DGAMMA, dg, C);
        read_vec(bn, CLBN_VECTOR_DBETA, db, C);
        check_sums(s, &p, x_d, y_d, dy_d, mean, invstd, dg, db, dg_ref, db_ref, tol);
        /* dy is an input: it must come back unchanged */
        float *dy_all = read_padded(ctx, dyb, "dy", dyo, E);
        assert_memory_equal(dy_all + dyo, dy, E * sizeof *dy);
        free(dy_all);
        free(dg);
        free(db);
        free(dx_ref);
        free(dg_ref);
        free(db_ref);
        free(y_d);
        free(dy_d);
        free(mean);
        free(invstd);
        break;
    }
    }

    /* x is an input: unchanged, and nothing written around it */
    float *x_all = read_padded(ctx, xb, "x", xo, E);
    assert_memory_equal(x_all + xo, x, E * sizeof *x);
    free(x_all);

    /* running statistics and t: updated only by a tracked training forward */
    read_vec(bn, CLBN_VECTOR_RUNNING_MEAN, frm, C);
    read_vec(bn, CLBN_VECTOR_RUNNING_VAR, frv, C);
    TU_OK(clbn_bn_get_batches_tracked(bn, &t_after));
    if (changes_running && k->op == CLBN_OP_FORWARD_TRAIN) {
        tu_check_close("running mean", frm, rm0_d, C, tol->running_mean.atol,
                       tol->running_mean.rtol);
        tu_check_close("running var", frv, rv0_d, C, tol->running_var.atol, tol->running_var.rtol);
    } else if (changes_running) {
        /* a backward changes no running statistics */
        tu_check_close("running mean", frm, rm0_d, C, 0.0, 0.0);
        tu_check_close("running var", frv, rv0_d, C, 0.0, 0.0);
    } else {
        assert_memory_equal(frm, rm0, C * sizeof *frm);
        assert_memory_equal(frv, rv0, C * sizeof *frv);
    }
    int trained = track && (k->op == CLBN_OP_FORWARD_TRAIN || k->op == CLBN_OP_BACKWARD);
    assert_int_equal(t_after, k->batches_tracked + (trained ? 1 : 0));

    clbn_bn_release(bn);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    if (dyb)
        clReleaseMemObject(dyb);
    if (dxb)
        clReleaseMemObject(dxb);
    free(y_all);
    free(dx_all);
    free(y_ref);
    free(fm);
    free(fi);
    free(frm);
    free(frv);
    free(x_d);
    free(gamma_d);
    free(beta_d);
    free(rm0_d);
    free(rv0_d);
    free(x);
    free(dy);
    free(gamma);
    free(beta);
    free(rm0);
    free(rv0);
    free(ch_mean);
    free(ch_std);
}
#endif /* REF_NO_HARNESS */
