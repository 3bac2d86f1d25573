/* The training demo's device network (tools/train_net.h) against the double-precision reference
 * (tests/train_ref.h).
 *
 * Group "train_reference" (no device): the reference's gradients against central finite
 * differences of its own loss, for every entry of every W, b, gamma and beta of a 6-5-4-3
 * network, B = 7, ReLU and sigmoid, batch norm on and off, with b, gamma (both signs) and beta
 * away from their initial values. Step h = 1e-6: truncation ~h^2 and rounding ~1e-16/h are both
 * far below the allowed 1e-6 of the tensor's largest gradient. For ReLU the data's seed is the
 * first whose every ReLU input is at least 1e-3 from the kink, so no perturbation crosses it.
 * When this group fails the device group does not run: its reference would be wrong.
 *
 * Group "train" (a device): the demo's 784-100-100-100-10 network, B = 60, weights N(0, 0.05^2),
 * inputs U[0, 1) like pixels, random labels; ReLU and sigmoid, batch norm on and off, lr 0.1 (and
 * lr 1 for ReLU with batch norm). Both networks take 3 steps on 3 batches (tn_step_host); each
 * test is named <case>_<what it checks>:
 *   loss          every step's tn_last_loss
 *   grads         every step's dW, db (where there is a bias), dgamma and dbeta (batch-norm
 *                 hidden layers); tn_read of a parameter a layer lacks must fail
 *   params        W, b, gamma and beta after the last update
 *   running_stats clbn's running mean and (unbiased) variance after the last step
 *   evaluate      tn_evaluate over two row ranges (chunks of max_batch rows and a remainder) and
 *                 tn_predict_one (running statistics, and for batch norm a row's own) against
 *                 the reference's inference; evaluation must leave the running statistics alone
 *
 * Tolerances, per tensor: max|got - ref| <= tol * max|ref| + 1e-12 (fp32 device, double
 * reference; an element-wise relative test would fail on gradients that cancel to ~0):
 *   loss            1e-5  fp32 logits and log-sum-exp over 10 classes, after fp32 updates
 *   gradients       1e-4  fp32 sums of 60-784 terms through three layers and batch norm's
 *                         cancelling backward (B dz - Σdz - xhat Σ(dz xhat))
 *   W, gamma        1e-5  p - lr g: W's and gamma's own fp32 rounding and the gradients'
 *                         error times lr, against max|p| (~0.2 for W, ~1 for gamma)
 *   b, beta         1e-4  start at 0, so after 3 steps they are -lr Σ g: their error relative
 *                         to their own size is the gradients' (seen: 3.8e-6 for sigmoid_bn's
 *                         beta, over a third of 1e-5)
 *   running stats   1e-5  0.1 of fp32 batch statistics of z, a few ulps each
 * A ReLU whose input lies within rounding of 0 may switch between fp32 and double; with these
 * seeds none does (it would show as one row's contribution, ~1/60 of a gradient).
 * Predictions: a row whose reference logits' top two lie within 1e-4 of the largest |logit| of
 * the set is ambiguous: it is not compared, and counts may differ by the ambiguous rows. */
#include "test_util.h"
#include "train_net.h"
#include "train_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)TN_W == (int)REF_W && (int)TN_B == (int)REF_B &&
                   (int)TN_GAMMA == (int)REF_GAMMA && (int)TN_BETA == (int)REF_BETA &&
                   (int)TN_DW == (int)REF_DW && (int)TN_DB == (int)REF_DB &&
                   (int)TN_DGAMMA == (int)REF_DGAMMA && (int)TN_DBETA == (int)REF_DBETA &&
                   (int)TN_RUN_MEAN == (int)REF_RUN_MEAN && (int)TN_RUN_VAR == (int)REF_RUN_VAR &&
                   (int)TN_PARAM_COUNT == (int)REF_PARAM_COUNT,
               "ref_param mirrors tn_param");
_Static_assert((int)CLBN_ACTIVATION_RELU == REF_ACT_RELU &&
                   (int)CLBN_ACTIVATION_SIGMOID == REF_ACT_SIGMOID,
               "REF_ACT_* are clbn_activation's values");
_Static_assert(REF_NET_MAX_LAYERS >= TN_MAX_LAYERS, "the reference holds every network");

#define TINY 1e-12
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4
#define TOL_PARAM 1e-5
#define TOL_RUN 1e-5
#define TOL_FD 1e-6
#define FD_STEP 1e-6
#define FD_MARGIN 1e-3
#define AMBIGUOUS 1e-4

#define SEED 20240601u
#define BATCH 60
#define STEPS 3
#define EVAL_ROWS 150 /* two full chunks of BATCH rows and a remainder */

static const char *const param_names[TN_PARAM_COUNT] = {
    "W", "b", "gamma", "beta", "dW", "db", "dgamma", "dbeta", "running_mean", "running_var"};

/* ---- shared helpers ---------------------------------------------------------------------- */

typedef struct fixture {
    const void *spec; /* a fd_case or a net_case */
    int check;        /* a device test's check */
    char name[96];
    tn_net *net;
    tn_data *data;
    ref_net ref;
    int ref_live;
    float *w[REF_NET_MAX_LAYERS];
    float *x;
    int32_t *labels;
    double *logits, *one;
    double worst; /* the largest max|got - ref| / max|ref| over the test's checks */
    char worst_what[96];
} fixture;

static int fixture_teardown(void **state) {
    fixture *f = *state;
    tn_data_release(f->data);
    tn_release(f->net);
    if (f->ref_live)
        ref_net_free(&f->ref);
    for (int l = 0; l < REF_NET_MAX_LAYERS; l++)
        free(f->w[l]);
    free(f->x);
    free(f->labels);
    free(f->logits);
    free(f->one);
    f->data = NULL;
    f->net = NULL;
    f->ref_live = 0;
    memset(f->w, 0, sizeof f->w);
    f->x = NULL;
    f->labels = NULL;
    f->logits = f->one = NULL;
    return 0;
}

/* Fails unless max|got - ref| <= tol * max|ref| + TINY; keeps the worst ratio for the summary. */
static void expect_close(fixture *f, const char *what, const double *got, const double *ref,
                         size_t n, double tol) {
    double big = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs(got[i] - ref[i]);
        big = fabs(ref[i]) > big ? fabs(ref[i]) : big;
        if (!(e <= worst)) { /* NaN too */
            worst = isnan(e) ? INFINITY : e;
            at = i;
        }
    }
    if (!(worst <= tol * big + TINY))
        fail_msg("%s: max|got - ref| = %.3g at [%zu] (got %.9g, ref %.9g) > %.0e * max|ref| "
                 "(%.4g)",
                 what, worst, at, got[at], ref[at], tol, big);
    const double ratio = big > 0.0 ? worst / big : worst;
    if (ratio >= f->worst) {
        f->worst = ratio;
        snprintf(f->worst_what, sizeof f->worst_what, "%s", what);
    }
}

static float *normal_floats(ref_rng *r, size_t n, double sd) {
    float *v = tu_floats(n);
    tu_fill_normal(r, v, n, 0.0, sd);
    return v;
}

/* rows of dim inputs in [0, 1) and labels in [0, classes). */
static void fill_batch(ref_rng *r, float *x, int32_t *labels, size_t rows, int dim, int classes) {
    for (size_t i = 0; i < rows * (size_t)dim; i++)
        x[i] = (float)ref_uniform(r);
    for (size_t s = 0; s < rows; s++) {
        int32_t c = (int32_t)(ref_uniform(r) * classes);
        labels[s] = c < classes ? c : classes - 1;
    }
}

/* ---- the reference against finite differences -------------------------------------------- */

typedef struct fd_case {
    const char *name;
    int act, bn;
} fd_case;

static const fd_case fd_cases[] = {
    {"relu_bn", REF_ACT_RELU, 1},
    {"relu_nobn", REF_ACT_RELU, 0},
    {"sigmoid_bn", REF_ACT_SIGMOID, 1},
    {"sigmoid_nobn", REF_ACT_SIGMOID, 0},
};

#define FD_B 7
#define FD_SEEDS 256

/* A small network with every parameter away from its start, and a batch whose ReLU inputs stay
 * FD_MARGIN from the kink (the first such seed). */
static void fd_setup_net(fixture *f, const fd_case *k) {
    static const int sizes[] = {6, 5, 4, 3};
    ref_net_config c;
    memset(&c, 0, sizeof c);
    c.layers = 3;
    memcpy(c.sizes, sizes, sizeof sizes);
    c.bn = k->bn;
    c.act = k->act;
    c.lr = 0.1;
    f->x = tu_floats((size_t)FD_B * (size_t)sizes[0]);
    f->labels = malloc(FD_B * sizeof *f->labels);
    assert_non_null(f->labels);
    for (uint64_t seed = SEED; seed < SEED + FD_SEEDS; seed++) {
        ref_rng r;
        ref_rng_seed(&r, seed);
        for (int l = 1; l <= c.layers; l++) {
            free(f->w[l - 1]);
            f->w[l - 1] = normal_floats(&r, (size_t)sizes[l - 1] * (size_t)sizes[l], 0.5);
        }
        assert_int_equal(ref_net_init(&f->ref, &c, (const float *const *)f->w), 0);
        f->ref_live = 1;
        for (int l = 1; l <= c.layers; l++) {
            size_t n;
            double *v;
            if ((v = ref_net_param(&f->ref, REF_B, l, &n)))
                for (size_t i = 0; i < n; i++)
                    v[i] = 0.2 * ref_normal(&r);
            if ((v = ref_net_param(&f->ref, REF_GAMMA, l, &n)))
                for (size_t i = 0; i < n; i++)
                    v[i] = (0.5 + ref_uniform(&r)) * (ref_uniform(&r) < 0.3 ? -1.0 : 1.0);
            if ((v = ref_net_param(&f->ref, REF_BETA, l, &n)))
                for (size_t i = 0; i < n; i++)
                    v[i] = 0.2 * ref_normal(&r);
        }
        fill_batch(&r, f->x, f->labels, FD_B, sizes[0], sizes[c.layers]);
        const double margin = ref_net_kink_margin(&f->ref, f->x, FD_B);
        assert_true(margin >= 0.0);
        if (margin >= FD_MARGIN)
            return;
        ref_net_free(&f->ref);
        f->ref_live = 0;
    }
    fail_msg("no seed in %u..%u keeps every ReLU input %.0e from 0", SEED, SEED + FD_SEEDS - 1,
             FD_MARGIN);
}

static void fd_test(void **state) {
    fixture *f = *state;
    const fd_case *k = f->spec;
    fd_setup_net(f, k);
    ref_net *r = &f->ref;
    double loss = 0.0, plain = 0.0;
    assert_int_equal(ref_net_gradients(r, f->x, f->labels, FD_B, &loss), 0);
    assert_int_equal(ref_net_loss(r, f->x, f->labels, FD_B, &plain), 0);
    if (loss != plain)
        fail_msg("ref_net_gradients' loss %.17g differs from ref_net_loss's %.17g", loss, plain);
    static const ref_param checked[] = {REF_W, REF_B, REF_GAMMA, REF_BETA};
    for (int l = 1; l <= r->cfg.layers; l++)
        for (size_t c = 0; c < sizeof checked / sizeof checked[0]; c++) {
            size_t n = 0, ng = 0;
            double *p = ref_net_param(r, checked[c], l, &n);
            const double *g = ref_net_param(r, (ref_param)(checked[c] + REF_DW), l, &ng);
            if (!p)
                continue;
            assert_non_null(g);
            assert_int_equal(n, ng);
            double *fd = tu_doubles(n);
            for (size_t i = 0; i < n; i++) {
                const double v = p[i];
                double up = 0.0, down = 0.0;
                p[i] = v + FD_STEP;
                int bad = ref_net_loss(r, f->x, f->labels, FD_B, &up);
                p[i] = v - FD_STEP;
                bad |= ref_net_loss(r, f->x, f->labels, FD_B, &down);
                p[i] = v;
                assert_int_equal(bad, 0);
                fd[i] = (up - down) / (2.0 * FD_STEP);
            }
            char what[64];
            snprintf(what, sizeof what, "layer %d d%s (analytic vs finite differences)", l,
                     param_names[checked[c]]);
            expect_close(f, what, g, fd, n, TOL_FD);
            free(fd);
        }
    print_message("      loss %.6f; worst %.2g of max|grad| (%s)\n", loss, f->worst, f->worst_what);
}

/* ---- the device network against the reference -------------------------------------------- */

typedef struct net_case {
    const char *name;
    clbn_activation act;
    int bn;
    float lr;
} net_case;

static const net_case net_cases[] = {
    {"relu_bn_lr0.1", CLBN_ACTIVATION_RELU, 1, 0.1f},
    {"relu_bn_lr1", CLBN_ACTIVATION_RELU, 1, 1.0f},
    {"relu_nobn_lr0.1", CLBN_ACTIVATION_RELU, 0, 0.1f},
    {"sigmoid_bn_lr0.1", CLBN_ACTIVATION_SIGMOID, 1, 0.1f},
    {"sigmoid_nobn_lr0.1", CLBN_ACTIVATION_SIGMOID, 0, 0.1f},
};

typedef enum check { CK_LOSS, CK_GRADS, CK_PARAMS, CK_RUNNING, CK_EVALUATE, CK_COUNT } check;

static const struct {
    const char *suffix;
    int bn_only;
} checks[CK_COUNT] = {
    [CK_LOSS] = {"loss", 0},         [CK_GRADS] = {"grads", 0},
    [CK_PARAMS] = {"params", 0},     [CK_RUNNING] = {"running_stats", 1},
    [CK_EVALUATE] = {"evaluate", 0},
};

static tn_config demo_config(const net_case *k) {
    static const int sizes[] = {784, 100, 100, 100, 10};
    tn_config c;
    memset(&c, 0, sizeof c);
    c.layers = 4;
    memcpy(c.sizes, sizes, sizeof sizes);
    c.bn = k->bn;
    c.act = k->act;
    c.lr = k->lr;
    c.max_batch = BATCH;
    c.profile = 0;
    return c;
}

static size_t param_count(const tn_config *c, tn_param what, int l) {
    return what == TN_W || what == TN_DW ? (size_t)c->sizes[l - 1] * (size_t)c->sizes[l]
                                         : (size_t)c->sizes[l];
}

/* The device's parameter against the reference's; where the reference has none (no such
 * parameter in that layer) tn_read must refuse it. */
static void compare_param(fixture *f, tn_param what, int l, double tol, const char *when) {
    const tn_config *c = tn_get_config(f->net);
    size_t n = param_count(c, what, l), rn = 0;
    const double *want = ref_net_param(&f->ref, (ref_param)what, l, &rn);
    float *got = tu_floats(n);
    char err[512] = "";
    const int rc = tn_read(f->net, what, l, got, n, err, sizeof err);
    if (!want) {
        free(got);
        if (rc == 0)
            fail_msg("tn_read(%s, layer %d) succeeded: the layer has no %s", param_names[what], l,
                     param_names[what]);
        return;
    }
    if (rc != 0) {
        free(got);
        fail_msg("tn_read(%s, layer %d): %s", param_names[what], l, err);
    }
    assert_int_equal(n, rn);
    double *g = tu_doubles(n);
    for (size_t i = 0; i < n; i++)
        g[i] = (double)got[i];
    free(got);
    char what_s[96];
    snprintf(what_s, sizeof what_s, "%s layer %d %s", when, l, param_names[what]);
    expect_close(f, what_s, g, want, n, tol);
    free(g);
}

static void compare_params(fixture *f, const tn_param *list, size_t count, double tol,
                           const char *when) {
    for (int l = 1; l <= tn_get_config(f->net)->layers; l++)
        for (size_t i = 0; i < count; i++)
            compare_param(f, list[i], l, tol, when);
}

static const tn_param grads[] = {TN_DW, TN_DB, TN_DGAMMA, TN_DBETA};
static const tn_param params[] = {TN_W, TN_GAMMA};
static const tn_param biases[] = {TN_B, TN_BETA}; /* zero at the start */
static const tn_param running[] = {TN_RUN_MEAN, TN_RUN_VAR};
#define COUNT(a) (sizeof(a) / sizeof(a)[0])

/* The reference's prediction of a row of logits, or -1 when its top two are within gap. */
static int ref_class(const double *z, int K, double gap) {
    int best = 0;
    for (int j = 1; j < K; j++)
        best = z[j] > z[best] ? j : best;
    for (int j = 0; j < K; j++)
        if (j != best && z[best] - z[j] <= gap)
            return -1;
    return best;
}

static void check_evaluation(fixture *f, ref_rng *r) {
    const tn_config *c = tn_get_config(f->net);
    const int dim = c->sizes[0], K = c->sizes[c->layers];
    char err[512] = "";
    free(f->x);
    free(f->labels);
    f->x = tu_floats((size_t)EVAL_ROWS * (size_t)dim);
    f->labels = malloc(EVAL_ROWS * sizeof *f->labels);
    assert_non_null(f->labels);
    fill_batch(r, f->x, f->labels, EVAL_ROWS, dim, K);
    if (tn_data_create(tu_ctx, f->x, f->labels, EVAL_ROWS, (size_t)dim, &f->data, err, sizeof err))
        fail_msg("tn_data_create: %s", err);
    f->logits = tu_doubles((size_t)EVAL_ROWS * (size_t)K);
    assert_int_equal(ref_net_logits(&f->ref, f->x, EVAL_ROWS, 0, f->logits), 0);
    double big = 0.0;
    for (size_t i = 0; i < (size_t)EVAL_ROWS * (size_t)K; i++)
        big = fabs(f->logits[i]) > big ? fabs(f->logits[i]) : big;
    const double gap = AMBIGUOUS * big;

    static const size_t ranges[][2] = {{0, EVAL_ROWS}, {7, 101}};
    size_t ambiguous_total = 0;
    for (size_t g = 0; g < COUNT(ranges); g++) {
        size_t got = 0, want = 0, ambiguous = 0;
        if (tn_evaluate(f->net, f->data, ranges[g][0], ranges[g][1], &got, err, sizeof err))
            fail_msg("tn_evaluate(rows %zu + %zu): %s", ranges[g][0], ranges[g][1], err);
        for (size_t s = ranges[g][0]; s < ranges[g][0] + ranges[g][1]; s++) {
            const int cls = ref_class(f->logits + s * (size_t)K, K, gap);
            ambiguous += cls < 0;
            want += cls == f->labels[s];
        }
        ambiguous_total += ambiguous;
        if (got < want || got > want + ambiguous)
            fail_msg("tn_evaluate(rows %zu + %zu): %zu correct, the reference %zu (+ up to %zu "
                     "ambiguous)",
                     ranges[g][0], ranges[g][1], got, want, ambiguous);
    }

    static const size_t rows[] = {0, 1, 59, 60, 100, EVAL_ROWS - 1};
    f->one = tu_doubles((size_t)K);
    for (int batch_stats = 0; batch_stats <= (c->bn ? 1 : 0); batch_stats++)
        for (size_t i = 0; i < COUNT(rows); i++) {
            const size_t s = rows[i];
            const double *z = f->logits + s * (size_t)K;
            if (batch_stats) {
                assert_int_equal(ref_net_logits(&f->ref, f->x + s * (size_t)dim, 1, 1, f->one), 0);
                z = f->one;
            }
            const int want = ref_class(z, K, gap);
            int got = -1;
            if (tn_predict_one(f->net, f->data, s, batch_stats, &got, err, sizeof err))
                fail_msg("tn_predict_one(row %zu, batch_stats %d): %s", s, batch_stats, err);
            if (want >= 0 && got != want)
                fail_msg("tn_predict_one(row %zu, batch_stats %d) = %d, the reference %d", s,
                         batch_stats, got, want);
            ambiguous_total += want < 0;
        }
    if (c->bn)
        compare_params(f, running, COUNT(running), TOL_RUN, "after evaluating");
    print_message("      %zu ambiguous predictions skipped\n", ambiguous_total);
}

static void net_test(void **state) {
    fixture *f = *state;
    const net_case *k = f->spec;
    const check ck = (check)f->check;
    const tn_config cfg = demo_config(k);
    ref_net_config rc;
    memset(&rc, 0, sizeof rc);
    rc.layers = cfg.layers;
    memcpy(rc.sizes, cfg.sizes, sizeof rc.sizes);
    rc.bn = cfg.bn;
    rc.act = (int)cfg.act;
    rc.lr = (double)cfg.lr; /* the device's float lr exactly */

    ref_rng r;
    ref_rng_seed(&r, SEED);
    for (int l = 1; l <= cfg.layers; l++)
        f->w[l - 1] = normal_floats(&r, param_count(&cfg, TN_W, l), 0.05);
    char err[512] = "";
    if (tn_create(tu_ctx, &cfg, (const float *const *)f->w, &f->net, err, sizeof err))
        fail_msg("tn_create: %s", err);
    assert_int_equal(ref_net_init(&f->ref, &rc, (const float *const *)f->w), 0);
    f->ref_live = 1;

    const int dim = cfg.sizes[0], K = cfg.sizes[cfg.layers];
    f->x = tu_floats((size_t)BATCH * (size_t)dim);
    f->labels = malloc(BATCH * sizeof *f->labels);
    assert_non_null(f->labels);
    for (int step = 1; step <= STEPS; step++) {
        fill_batch(&r, f->x, f->labels, BATCH, dim, K);
        if (tn_step_host(f->net, f->x, f->labels, BATCH, err, sizeof err))
            fail_msg("tn_step_host (step %d): %s", step, err);
        double want = 0.0, got = 0.0;
        assert_int_equal(ref_net_step(&f->ref, f->x, f->labels, BATCH, &want), 0);
        char when[32];
        snprintf(when, sizeof when, "step %d", step);
        if (ck == CK_LOSS) {
            if (tn_last_loss(f->net, &got, err, sizeof err))
                fail_msg("tn_last_loss (step %d): %s", step, err);
            char what[48];
            snprintf(what, sizeof what, "step %d loss", step);
            expect_close(f, what, &got, &want, 1, TOL_LOSS);
        } else if (ck == CK_GRADS) {
            compare_params(f, grads, COUNT(grads), TOL_GRAD, when);
        }
    }
    switch (ck) {
    case CK_PARAMS:
        compare_params(f, params, COUNT(params), TOL_PARAM, "after the steps");
        compare_params(f, biases, COUNT(biases), TOL_GRAD, "after the steps");
        break;
    case CK_RUNNING:
        compare_params(f, running, COUNT(running), TOL_RUN, "after the steps");
        break;
    case CK_EVALUATE:
        check_evaluation(f, &r);
        break;
    default:
        break;
    }
    if (ck != CK_EVALUATE)
        print_message("      worst %.2g of max|ref| (%s)\n", f->worst, f->worst_what);
}

int main(void) {
    enum { NFD = COUNT(fd_cases), NNET = COUNT(net_cases) };
    static fixture fd_fix[NFD], net_fix[NNET * CK_COUNT];
    struct CMUnitTest fd_tests[NFD], net_tests[NNET * CK_COUNT];
    for (size_t i = 0; i < NFD; i++) {
        fixture *f = &fd_fix[i];
        f->spec = &fd_cases[i];
        snprintf(f->name, sizeof f->name, "reference_fd_%s", fd_cases[i].name);
        fd_tests[i] = (struct CMUnitTest){f->name, fd_test, NULL, fixture_teardown, f};
    }
    size_t n = 0;
    for (size_t i = 0; i < NNET; i++)
        for (int ck = 0; ck < CK_COUNT; ck++) {
            if (checks[ck].bn_only && !net_cases[i].bn)
                continue;
            fixture *f = &net_fix[n];
            f->spec = &net_cases[i];
            f->check = ck;
            snprintf(f->name, sizeof f->name, "%s_%s", net_cases[i].name, checks[ck].suffix);
            net_tests[n++] = (struct CMUnitTest){f->name, net_test, NULL, fixture_teardown, f};
        }
    int failed = _cmocka_run_group_tests("train_reference", fd_tests, NFD, NULL, NULL);
    if (failed)
        return failed; /* the device group would compare against a wrong reference */
    return _cmocka_run_group_tests("train", net_tests, n, tu_group_setup, tu_group_teardown);
}
