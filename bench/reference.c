/* The double-precision host reference of DESIGN.md's formulas (see reference.h). */
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

double ref_dz(const ref_params *p, const double *y, const double *dy, size_t i) {
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
            double dz = ref_dz(p, y, dy, i);
            db += dz;
            dg += dz * (x[i] - mu) * is;
        });
        if (dx)
            REF_FOR_CHANNEL(s, c, i, {
                double xhat = (x[i] - mu) * is;
                dx[i] = (g * is / m) * (m * ref_dz(p, y, dy, i) - db - xhat * dg);
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
            double dz = ref_dz(p, y, dy, i);
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

void ref_sum_magnitudes(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                        const double *dy, const double *mean, const double *invstd,
                        double *abs_dgamma, double *abs_dbeta) {
    for (size_t c = 0; c < (size_t)s->c; c++) {
        double g = 0.0, b = 0.0;
        REF_FOR_CHANNEL(s, c, i, {
            double dz = ref_dz(p, y, dy, i);
            b += fabs(dz);
            g += fabs(dz * (x[i] - mean[c]) * invstd[c]);
        });
        abs_dgamma[c] = g;
        abs_dbeta[c] = b;
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
