/* test_train: the training demo's device network (tools/train_net.c: CLBlast, clbn, the demo's
 * kernels) against a plain-C double-precision network of the same weights and batches: loss,
 * every gradient, the updated parameters and batch norm's running statistics, with and without
 * batch norm, ReLU and sigmoid. A finite-difference case checks the reference itself. */
#include "test_util.h"
#include "train_net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* The double-precision reference (math as in train_net.h) */

#define L_MAX TN_MAX_LAYERS
typedef struct ref_net {
    tn_config c;
    double *W[L_MAX + 1], *b[L_MAX + 1], *g[L_MAX + 1], *be[L_MAX + 1], *rm[L_MAX + 1],
        *rv[L_MAX + 1];
    double *dW[L_MAX + 1], *db[L_MAX + 1], *dg[L_MAX + 1], *dbe[L_MAX + 1];
    double *z[L_MAX + 1], *a[L_MAX + 1], *xh[L_MAX + 1], *inv[L_MAX + 1];
    int maxB;
} ref_net;

static int ref_bn(const ref_net *r, int l) {
    return r->c.bn && l < r->c.layers;
}

static double *zeros(size_t n) {
    double *v = calloc(n ? n : 1, sizeof *v);
    assert_non_null(v);
    return v;
}

static void ref_init(ref_net *r, const tn_config *c, const float *const *w, int maxB) {
    memset(r, 0, sizeof *r);
    r->c = *c;
    r->maxB = maxB;
    r->a[0] = zeros((size_t)maxB * (size_t)c->sizes[0]);
    for (int l = 1; l <= c->layers; l++) {
        const size_t in = (size_t)c->sizes[l - 1], out = (size_t)c->sizes[l];
        r->W[l] = zeros(in * out);
        r->dW[l] = zeros(in * out);
        for (size_t i = 0; i < in * out; i++)
            r->W[l][i] = w[l - 1][i];
        r->b[l] = zeros(out);
        r->db[l] = zeros(out);
        r->g[l] = zeros(out);
        r->be[l] = zeros(out);
        r->dg[l] = zeros(out);
        r->dbe[l] = zeros(out);
        r->rm[l] = zeros(out);
        r->rv[l] = zeros(out);
        r->inv[l] = zeros(out);
        for (size_t j = 0; j < out; j++)
            r->g[l][j] = r->rv[l][j] = 1.0;
        r->z[l] = zeros((size_t)maxB * out);
        r->a[l] = zeros((size_t)maxB * out);
        r->xh[l] = zeros((size_t)maxB * out);
    }
}

static void ref_free(ref_net *r) {
    free(r->a[0]);
    for (int l = 1; l <= r->c.layers; l++) {
        double **all[] = {r->W, r->b, r->g, r->be, r->rm, r->rv, r->dW, r->db,
                          r->dg, r->dbe, r->z, r->a, r->xh, r->inv};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            free(all[k][l]);
    }
}

static double act_f(int act, double v) {
    return act == CLBN_ACTIVATION_RELU ? (v > 0 ? v : 0) : 1.0 / (1.0 + exp(-v));
}

static double act_d(int act, double y) { /* from the output */
    return act == CLBN_ACTIVATION_RELU ? (y > 0 ? 1.0 : 0.0) : y * (1.0 - y);
}

/* Forward (training statistics when train, else the running ones); returns the mean loss and
 * leaves dL/dlogits in dz. update_running: advance the running statistics. */
static double ref_forward(ref_net *r, const float *x, const int32_t *lab, int B, int train,
                          int update_running, double *dz) {
    const tn_config *c = &r->c;
    for (size_t i = 0; i < (size_t)B * (size_t)c->sizes[0]; i++)
        r->a[0][i] = x[i];
    for (int l = 1; l <= c->layers; l++) {
        const int in = c->sizes[l - 1], out = c->sizes[l];
        for (int n = 0; n < B; n++)
            for (int j = 0; j < out; j++) {
                double s = ref_bn(r, l) ? 0.0 : r->b[l][j];
                for (int k = 0; k < in; k++)
                    s += r->a[l - 1][(size_t)n * in + k] * r->W[l][(size_t)k * out + j];
                r->z[l][(size_t)n * out + j] = s;
            }
        if (l == c->layers)
            break;
        for (int j = 0; j < out; j++) {
            double mean = 0, var = 0;
            if (ref_bn(r, l) && train) {
                for (int n = 0; n < B; n++)
                    mean += r->z[l][(size_t)n * out + j];
                mean /= B;
                for (int n = 0; n < B; n++) {
                    double d = r->z[l][(size_t)n * out + j] - mean;
                    var += d * d;
                }
                var /= B;
                if (update_running) {
                    r->rm[l][j] = 0.9 * r->rm[l][j] + 0.1 * mean;
                    r->rv[l][j] = 0.9 * r->rv[l][j] + 0.1 * var * B / (B - 1);
                }
            } else if (ref_bn(r, l)) {
                mean = r->rm[l][j];
                var = r->rv[l][j];
            }
            const double inv = 1.0 / sqrt(var + 1e-5);
            r->inv[l][j] = inv;
            for (int n = 0; n < B; n++) {
                const size_t i = (size_t)n * out + j;
                double v = r->z[l][i];
                if (ref_bn(r, l)) {
                    r->xh[l][i] = (v - mean) * inv;
                    v = r->g[l][j] * r->xh[l][i] + r->be[l][j];
                }
                r->a[l][i] = act_f(c->act, v);
            }
        }
    }
    const int K = c->sizes[c->layers];
    const double *zl = r->z[c->layers];
    double loss = 0;
    for (int n = 0; n < B; n++) {
        double m = zl[(size_t)n * K];
        for (int j = 1; j < K; j++)
            m = fmax(m, zl[(size_t)n * K + j]);
        double s = 0;
        for (int j = 0; j < K; j++)
            s += exp(zl[(size_t)n * K + j] - m);
        loss += log(s) + m - zl[(size_t)n * K + lab[n]];
        for (int j = 0; dz && j < K; j++)
            dz[(size_t)n * K + j] =
                (exp(zl[(size_t)n * K + j] - m) / s - (j == lab[n] ? 1.0 : 0.0)) / B;
    }
    return loss / B;
}

/* Forward, backward and (when update) the SGD update; returns the loss before the update. */
static double ref_step(ref_net *r, const float *x, const int32_t *lab, int B, int update) {
    const tn_config *c = &r->c;
    int wide = 0;
    for (int l = 0; l <= c->layers; l++)
        wide = c->sizes[l] > wide ? c->sizes[l] : wide;
    double *dz = zeros((size_t)B * (size_t)wide), *da = zeros((size_t)B * (size_t)wide);
    const double loss = ref_forward(r, x, lab, B, 1, update, dz);
    for (int l = c->layers; l >= 1; l--) {
        const int in = c->sizes[l - 1], out = c->sizes[l];
        for (int k = 0; k < in; k++)
            for (int j = 0; j < out; j++) {
                double s = 0;
                for (int n = 0; n < B; n++)
                    s += r->a[l - 1][(size_t)n * in + k] * dz[(size_t)n * out + j];
                r->dW[l][(size_t)k * out + j] = s;
            }
        for (int j = 0; j < out; j++) {
            double s = 0;
            for (int n = 0; n < B; n++)
                s += dz[(size_t)n * out + j];
            r->db[l][j] = s;
        }
        if (l == 1)
            break;
        for (int n = 0; n < B; n++)
            for (int k = 0; k < in; k++) {
                double s = 0;
                for (int j = 0; j < out; j++)
                    s += dz[(size_t)n * out + j] * r->W[l][(size_t)k * out + j];
                da[(size_t)n * in + k] = s * act_d(c->act, r->a[l - 1][(size_t)n * in + k]);
            }
        const int h = l - 1;
        for (int k = 0; k < in; k++) {
            double sg = 0, sb = 0;
            for (int n = 0; n < B; n++) {
                sg += da[(size_t)n * in + k] * r->xh[h][(size_t)n * in + k];
                sb += da[(size_t)n * in + k];
            }
            r->dg[h][k] = sg;
            r->dbe[h][k] = sb;
            for (int n = 0; n < B; n++) {
                const size_t i = (size_t)n * in + k;
                dz[i] = ref_bn(r, h) ? r->g[h][k] * r->inv[h][k] / B *
                                           (B * da[i] - sb - r->xh[h][i] * sg)
                                     : da[i];
            }
        }
    }
    for (int l = 1; update && l <= c->layers; l++) {
        const size_t in = (size_t)c->sizes[l - 1], out = (size_t)c->sizes[l];
        for (size_t i = 0; i < in * out; i++)
            r->W[l][i] -= c->lr * r->dW[l][i];
        for (size_t j = 0; j < out; j++) {
            if (ref_bn(r, l)) {
                r->g[l][j] -= c->lr * r->dg[l][j];
                r->be[l][j] -= c->lr * r->dbe[l][j];
            } else {
                r->b[l][j] -= c->lr * r->db[l][j];
            }
        }
    }
    free(dz);
    free(da);
    return loss;
}

/* ---------------------------------------------------------------------------------------- */
/* Data */

static void fill_uniform(ref_rng *g, float *v, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(lo + (hi - lo) * ref_uniform(g));
}

static float **make_weights(const tn_config *c, uint64_t seed, double sd) {
    ref_rng g;
    ref_rng_seed(&g, seed);
    float **w = calloc((size_t)c->layers, sizeof *w);
    assert_non_null(w);
    for (int l = 1; l <= c->layers; l++) {
        size_t n = (size_t)c->sizes[l - 1] * (size_t)c->sizes[l];
        w[l - 1] = tu_floats(n);
        tu_fill_normal(&g, w[l - 1], n, 0.0, sd);
    }
    return w;
}

static void free_weights(float **w, int layers) {
    for (int l = 0; l < layers; l++)
        free(w[l]);
    free(w);
}

/* max |got - ref| <= tol * max |ref| (+ a floor for arrays that are all but zero). */
static void check_rel(const char *what, int layer, const float *got, const double *ref, size_t n,
                      double tol) {
    double scale = 0, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > worst) {
            worst = d;
            at = i;
        }
    }
    if (worst > tol * scale + 1e-9)
        fail_msg("%s of layer %d: |got - ref| = %.3g at %zu (got %.9g, ref %.9g), above %.1g of "
                 "the largest |ref| %.3g",
                 what, layer, worst, at, (double)got[at], ref[at], tol, scale);
}

static void check_param(tn_net *net, ref_net *r, tn_param p, int l, const double *ref, size_t n,
                        const char *what, double tol) {
    float *got = tu_floats(n);
    char err[512];
    if (tn_read(net, p, l, got, n, err, sizeof err))
        fail_msg("tn_read %s: %s", what, err);
    check_rel(what, l, got, ref, n, tol);
    free(got);
    (void)r;
}

/* ---------------------------------------------------------------------------------------- */
/* Cases */

typedef struct train_case {
    const char *name;
    int bn;
    clbn_activation act;
    float lr;
} train_case;

/* fp32 on the device against double: products of 784 terms and batch sums of 60, each with a
 * relative rounding error near 1e-6; 1e-4 of the largest magnitude leaves room for the
 * normalization's division by a batch's standard deviation, and still catches a wrong term (a
 * missing 1/B, a transposed product or a stale buffer is off by far more). */
#define TOL_GRAD 1e-4
#define TOL_PARAM 1e-5
#define STEPS 3
#define BATCH 60

static void run_case(void **state) {
    const train_case *k = *state;
    tn_config c = {.layers = 4, .sizes = {784, 100, 100, 100, 10}, .bn = k->bn, .act = k->act,
                   .lr = k->lr, .max_batch = BATCH, .profile = 0};
    float **w = make_weights(&c, 42, 0.05);
    tn_net *net = NULL;
    char err[1024];
    if (tn_create(tu_ctx, &c, (const float *const *)w, &net, err, sizeof err))
        fail_msg("tn_create: %s", err);
    ref_net r;
    ref_init(&r, &c, (const float *const *)w, BATCH);
    ref_rng g;
    ref_rng_seed(&g, 7);
    float *x = tu_floats((size_t)BATCH * 784);
    int32_t lab[BATCH];
    for (int s = 0; s < STEPS; s++) {
        fill_uniform(&g, x, (size_t)BATCH * 784, 0.0, 1.0);
        for (int n = 0; n < BATCH; n++)
            lab[n] = (int32_t)((uint64_t)(ref_uniform(&g) * 10));
        if (tn_step_host(net, x, lab, BATCH, err, sizeof err))
            fail_msg("step %d: %s", s, err);
        const double want = ref_step(&r, x, lab, BATCH, 1);
        double got;
        if (tn_last_loss(net, &got, err, sizeof err))
            fail_msg("tn_last_loss: %s", err);
        if (fabs(got - want) > TOL_PARAM * fabs(want))
            fail_msg("step %d: loss %.9g, reference %.9g", s, got, want);
        for (int l = 1; l <= c.layers; l++) {
            const size_t in = (size_t)c.sizes[l - 1], out = (size_t)c.sizes[l];
            check_param(net, &r, TN_DW, l, r.dW[l], in * out, "dW", TOL_GRAD);
            if (!c.bn || l == c.layers)
                check_param(net, &r, TN_DB, l, r.db[l], out, "db", TOL_GRAD);
            else {
                check_param(net, &r, TN_DGAMMA, l, r.dg[l], out, "dgamma", TOL_GRAD);
                check_param(net, &r, TN_DBETA, l, r.dbe[l], out, "dbeta", TOL_GRAD);
            }
        }
    }
    for (int l = 1; l <= c.layers; l++) {
        const size_t in = (size_t)c.sizes[l - 1], out = (size_t)c.sizes[l];
        check_param(net, &r, TN_W, l, r.W[l], in * out, "updated W", TOL_PARAM);
        if (!c.bn || l == c.layers)
            check_param(net, &r, TN_B, l, r.b[l], out, "updated b", TOL_PARAM);
        else {
            check_param(net, &r, TN_GAMMA, l, r.g[l], out, "updated gamma", TOL_PARAM);
            check_param(net, &r, TN_BETA, l, r.be[l], out, "updated beta", TOL_PARAM);
            check_param(net, &r, TN_RUN_MEAN, l, r.rm[l], out, "running mean", TOL_GRAD);
            check_param(net, &r, TN_RUN_VAR, l, r.rv[l], out, "running var", TOL_GRAD);
        }
    }
    /* Inference with the running statistics: the same predictions as the reference's. */
    enum { EVAL = 200 };
    float *ex = tu_floats((size_t)EVAL * 784);
    int32_t elab[EVAL];
    fill_uniform(&g, ex, (size_t)EVAL * 784, 0.0, 1.0);
    for (int n = 0; n < EVAL; n++)
        elab[n] = (int32_t)((uint64_t)(ref_uniform(&g) * 10));
    tn_data *d = NULL;
    if (tn_data_create(tu_ctx, ex, elab, EVAL, 784, &d, err, sizeof err))
        fail_msg("tn_data_create: %s", err);
    size_t correct = 0, want = 0;
    if (tn_evaluate(net, d, 0, EVAL, &correct, err, sizeof err))
        fail_msg("tn_evaluate: %s", err);
    for (int n0 = 0; n0 < EVAL; n0 += BATCH) {
        const int B = EVAL - n0 < BATCH ? EVAL - n0 : BATCH;
        ref_forward(&r, ex + (size_t)n0 * 784, elab + n0, B, 0, 0, NULL);
        for (int n = 0; n < B; n++) {
            const double *zr = r.z[c.layers] + (size_t)n * 10;
            int best = 0;
            for (int j = 1; j < 10; j++)
                best = zr[j] > zr[best] ? j : best;
            want += best == elab[n0 + n];
        }
    }
    /* A near-tie between two logits may round either way in fp32: allow one. */
    if (correct + 1 < want || correct > want + 1)
        fail_msg("tn_evaluate counted %zu correct of %d, the reference %zu", correct, EVAL, want);
    tn_data_release(d);
    free(ex);
    free(x);
    ref_free(&r);
    tn_release(net);
    free_weights(w, c.layers);
}

/* The reference's gradients against central differences of its own loss (before any update),
 * on a small network, so the device cases compare with a reference that is itself right. */
static void reference_finite_differences(void **state) {
    (void)state;
    static const int acts[2] = {CLBN_ACTIVATION_RELU, CLBN_ACTIVATION_SIGMOID};
    for (int bn = 0; bn < 2; bn++)
        for (int ai = 0; ai < 2; ai++) {
            tn_config c = {.layers = 3, .sizes = {6, 5, 4, 3}, .bn = bn,
                           .act = (clbn_activation)acts[ai], .lr = 0, .max_batch = 7};
            float **w = make_weights(&c, 11, 0.7);
            ref_net r;
            ref_init(&r, &c, (const float *const *)w, 7);
            ref_rng g;
            ref_rng_seed(&g, 3);
            float x[7 * 6];
            int32_t lab[7];
            fill_uniform(&g, x, 7 * 6, -1.0, 1.0);
            for (int n = 0; n < 7; n++)
                lab[n] = n % 3;
            for (int l = 1; l <= c.layers; l++) /* nonzero beta and gamma != 1 */
                for (int j = 0; j < c.sizes[l]; j++) {
                    r.g[l][j] = 0.8 + 0.1 * j;
                    r.be[l][j] = 0.05 * j;
                    r.b[l][j] = 0.03 * j;
                }
            ref_step(&r, x, lab, 7, 0);
            for (int l = 1; l <= c.layers; l++) {
                double *p[3] = {r.W[l], ref_bn(&r, l) ? r.g[l] : r.b[l],
                                ref_bn(&r, l) ? r.be[l] : NULL};
                double *dp[3] = {r.dW[l], ref_bn(&r, l) ? r.dg[l] : r.db[l], r.dbe[l]};
                size_t np[3] = {(size_t)c.sizes[l - 1] * (size_t)c.sizes[l], (size_t)c.sizes[l],
                                (size_t)c.sizes[l]};
                for (int q = 0; q < 3; q++)
                    for (size_t i = 0; p[q] && i < np[q]; i++) {
                        const double h = 1e-6, keep = p[q][i], an = dp[q][i];
                        p[q][i] = keep + h;
                        double up = ref_forward(&r, x, lab, 7, 1, 0, NULL);
                        p[q][i] = keep - h;
                        double dn = ref_forward(&r, x, lab, 7, 1, 0, NULL);
                        p[q][i] = keep;
                        const double fd = (up - dn) / (2 * h);
                        if (fabs(fd - an) > 1e-6 + 1e-5 * fabs(fd))
                            fail_msg("reference bn=%d act=%d layer %d param %d[%zu]: analytic "
                                     "%.9g, finite difference %.9g",
                                     bn, acts[ai], l, q, i, an, fd);
                    }
            }
            ref_free(&r);
            free_weights(w, c.layers);
        }
}

static const train_case cases[] = {
    {"relu_bn_lr0.1", 1, CLBN_ACTIVATION_RELU, 0.1f},
    {"relu_plain_lr0.1", 0, CLBN_ACTIVATION_RELU, 0.1f},
    {"sigmoid_bn_lr0.1", 1, CLBN_ACTIVATION_SIGMOID, 0.1f},
    {"sigmoid_plain_lr0.1", 0, CLBN_ACTIVATION_SIGMOID, 0.1f},
    {"relu_bn_lr1", 1, CLBN_ACTIVATION_RELU, 1.0f},
};

int main(void) {
    struct CMUnitTest tests[1 + sizeof cases / sizeof cases[0]];
    tests[0] = (struct CMUnitTest)cmocka_unit_test(reference_finite_differences);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        tests[i + 1] = (struct CMUnitTest){cases[i].name, run_case, NULL, NULL, (void *)&cases[i]};
    return cmocka_run_group_tests_name("train", tests, tu_group_setup, tu_group_teardown);
}
