/* Checks the double-precision reference itself (bench/reference.c): its backward formulas
 * against central finite differences of its forward, and cases whose answer is known exactly.
 * No OpenCL device is used. */
#include "reference.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finite differences: L = Σ w·y with random weights w, so dL/dy = w is the backward's dy. Central
 * differences with step h = 1e-5 on values of order 1 have a truncation error of order
 * h² ≈ 1e-10 and a rounding error of order 1e-16·|L|/h ≈ 1e-10, so the analytic gradient must
 * match within FD_ATOL + FD_RTOL·|analytic|; a wrong term in a formula is off by far more. */
#define FD_H 1e-5
#define FD_ATOL 1e-7
#define FD_RTOL 1e-6

/* Known-exact cases are computed in double on small integers: a few ulps at most. */
#define EXACT_TOL 1e-13

typedef struct fd_problem {
    clbn_shape s;
    ref_params p;
    int frozen;
    double *x, *w, *gamma, *beta, *rm, *rv;
} fd_problem;

typedef struct fd_case {
    const char *name;
    clbn_layout layout;
    clbn_activation activation;
    int use_scale, use_shift, frozen;
} fd_case;

static double loss(const fd_problem *f) {
    size_t E = ref_elems(&f->s);
    double *y = malloc(E * sizeof *y);
    assert_non_null(y);
    if (f->frozen)
        ref_forward_infer(&f->s, &f->p, f->x, f->rm, f->rv, y);
    else
        ref_forward_train(&f->s, &f->p, f->x, y, NULL, NULL, NULL);
    double L = 0.0;
    for (size_t i = 0; i < E; i++)
        L += f->w[i] * y[i];
    free(y);
    return L;
}

static double central_difference(fd_problem *f, double *v) {
    double keep = *v;
    *v = keep + FD_H;
    double lp = loss(f);
    *v = keep - FD_H;
    double lm = loss(f);
    *v = keep;
    return (lp - lm) / (2.0 * FD_H);
}

static void check_fd(const char *what, size_t i, double analytic, double numeric) {
    double err = fabs(analytic - numeric);
    if (!(err <= FD_ATOL + FD_RTOL * fabs(analytic)))
        fail_msg("%s[%zu]: analytic %.12g, central difference %.12g (|err| %.3g)", what, i,
                 analytic, numeric, err);
}

/* Smallest |z| of the forward's pre-activation values: ReLU's kink must stay farther away than
 * any perturbation moves z, or the central difference straddles it. */
static double min_abs_z(const fd_problem *f) {
    fd_problem g = *f;
    g.p.activation = CLBN_ACTIVATION_NONE;
    size_t E = ref_elems(&f->s);
    double *z = malloc(E * sizeof *z);
    assert_non_null(z);
    if (f->frozen)
        ref_forward_infer(&g.s, &g.p, g.x, g.rm, g.rv, z);
    else
        ref_forward_train(&g.s, &g.p, g.x, z, NULL, NULL, NULL);
    double mn = INFINITY;
    for (size_t i = 0; i < E; i++)
        if (fabs(z[i]) < mn)
            mn = fabs(z[i]);
    free(z);
    return mn;
}

static void fill(fd_problem *f, uint64_t seed) {
    size_t E = ref_elems(&f->s), C = (size_t)f->s.c;
    ref_rng r;
    ref_rng_seed(&r, seed);
    for (size_t c = 0; c < C; c++) {
        f->gamma[c] = (0.5 + ref_uniform(&r)) * (c % 2 ? -1.0 : 1.0);
        f->beta[c] = ref_normal(&r);
        f->rm[c] = 0.5 * ref_normal(&r);
        f->rv[c] = 0.5 + ref_uniform(&r);
    }
    for (size_t i = 0; i < E; i++) {
        size_t c = ref_channel_of(&f->s, i);
        f->x[i] = (double)c - 1.0 + (1.0 + 0.3 * (double)c) * ref_normal(&r);
        f->w[i] = ref_normal(&r);
    }
}

static void finite_difference_case(void **state) {
    const fd_case *k = *state;
    fd_problem f;
    memset(&f, 0, sizeof f);
    switch (k->layout) {
    case CLBN_LAYOUT_NCHW:
        f.s = (clbn_shape){CLBN_LAYOUT_NCHW, 2, 3, 2, 3};
        break;
    case CLBN_LAYOUT_NHWC:
        f.s = (clbn_shape){CLBN_LAYOUT_NHWC, 3, 2, 2, 2};
        break;
    case CLBN_LAYOUT_NC:
        f.s = (clbn_shape){CLBN_LAYOUT_NC, 5, 3, 1, 1};
        break;
    }
    size_t E = ref_elems(&f.s), C = (size_t)f.s.c;
    f.frozen = k->frozen;
    f.x = malloc(E * sizeof *f.x);
    f.w = malloc(E * sizeof *f.w);
    f.gamma = malloc(C * sizeof *f.gamma);
    f.beta = malloc(C * sizeof *f.beta);
    f.rm = malloc(C * sizeof *f.rm);
    f.rv = malloc(C * sizeof *f.rv);
    assert_true(f.x && f.w && f.gamma && f.beta && f.rm && f.rv);
    f.p = (ref_params){1e-5, k->use_scale, k->use_shift, k->activation, f.gamma, f.beta};

    /* deterministic: the first seed whose data keep z away from ReLU's kink */
    uint64_t seed = 1;
    for (fill(&f, seed); min_abs_z(&f) < 1e-3; fill(&f, ++seed))
        assert_true(seed < 1000);

    double *y = malloc(E * sizeof *y), *dx = malloc(E * sizeof *dx);
    double *mean = malloc(C * sizeof *mean), *invstd = malloc(C * sizeof *invstd);
    double *dg = malloc(C * sizeof *dg), *db = malloc(C * sizeof *db);
    assert_true(y && dx && mean && invstd && dg && db);
    if (f.frozen) {
        ref_forward_infer(&f.s, &f.p, f.x, f.rm, f.rv, y);
        ref_backward_frozen(&f.s, &f.p, f.x, y, f.w, f.rm, f.rv, dx, dg, db);
    } else {
        ref_forward_train(&f.s, &f.p, f.x, y, mean, invstd, NULL);
        ref_backward(&f.s, &f.p, f.x, y, f.w, mean, invstd, dx, dg, db);
    }

    double largest = 0.0;
    for (size_t i = 0; i < E; i++) {
        check_fd("dx", i, dx[i], central_difference(&f, &f.x[i]));
        largest = fmax(largest, fabs(dx[i]));
    }
    /* a gradient that is zero everywhere would pass trivially */
    assert_true(largest > 1e-3);
    for (size_t c = 0; c < C; c++) {
        if (k->use_scale)
            check_fd("dgamma", c, dg[c], central_difference(&f, &f.gamma[c]));
        if (k->use_shift)
            check_fd("dbeta", c, db[c], central_difference(&f, &f.beta[c]));
    }
    free(y);
    free(dx);
    free(mean);
    free(invstd);
    free(dg);
    free(db);
    free(f.x);
    free(f.w);
    free(f.gamma);
    free(f.beta);
    free(f.rm);
    free(f.rv);
}

static void check_exact(const char *what, double got, double want) {
    if (!(fabs(got - want) <= EXACT_TOL * (1.0 + fabs(want))))
        fail_msg("%s: got %.17g, want %.17g", what, got, want);
}

/* Element indices in each layout, worked out by hand for shape 2x3x4x5 and 4x3. */
static void layout_indexing(void **state) {
    (void)state;
    clbn_shape nchw = {CLBN_LAYOUT_NCHW, 2, 3, 4, 5}, nhwc = {CLBN_LAYOUT_NHWC, 2, 3, 4, 5};
    clbn_shape nc = {CLBN_LAYOUT_NC, 4, 3, 0, 0};
    /* n = 1, c = 1, h = 0, w = 2: NCHW ((1*3+1)*4+0)*5+2 = 82; NHWC ((1*4+0)*5+2)*3+1 = 67 */
    assert_int_equal(ref_index(&nchw, 1, 1, 2), 82);
    assert_int_equal(ref_index(&nhwc, 1, 1, 2), 67);
    assert_int_equal(ref_index(&nc, 2, 1, 0), 7);
    assert_int_equal(ref_channel_of(&nchw, 82), 1);
    assert_int_equal(ref_channel_of(&nhwc, 67), 1);
    assert_int_equal(ref_channel_of(&nc, 7), 1);
    assert_int_equal(ref_count(&nchw), 40);
    assert_int_equal(ref_count(&nc), 4);
    assert_int_equal(ref_elems(&nhwc), 120);
    assert_int_equal(ref_elems(&nc), 12);
}

/* Channel c holds {c+10000-2, c+10000-2, c+10000+2, c+10000+2}: mean c+10000, biased var 4,
 * unbiased 16/3; with eps = 0 invstd is 0.5 and x̂ = ±1, so y = beta ± gamma. */
static void known_statistics(void **state) {
    (void)state;
    const clbn_layout layouts[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC, CLBN_LAYOUT_NC};
    for (size_t li = 0; li < 3; li++) {
        clbn_shape s = {layouts[li], 2, 3, 1, 2};
        if (s.layout == CLBN_LAYOUT_NC)
            s = (clbn_shape){CLBN_LAYOUT_NC, 4, 3, 1, 1};
        double x[12], y[12], mean[3], var[3], invstd[3], gamma[3] = {2.0, -0.5, 1.0},
                                                         beta[3] = {0.25, 3.0, -1.0};
        for (size_t n = 0; n < (size_t)s.n; n++)
            for (size_t hw = 0; hw < ref_spatial(&s); hw++)
                for (size_t c = 0; c < 3; c++) {
                    int upper = s.layout == CLBN_LAYOUT_NC ? n >= 2 : n == 1;
                    x[ref_index(&s, n, c, hw)] = 10000.0 + (double)c + (upper ? 2.0 : -2.0);
                }
        ref_params p = {0.0, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
        ref_forward_train(&s, &p, x, y, mean, invstd, var);
        for (size_t c = 0; c < 3; c++) {
            check_exact("mean", mean[c], 10000.0 + (double)c);
            check_exact("var", var[c], 4.0);
            check_exact("invstd", invstd[c], 0.5);
        }
        for (size_t i = 0; i < 12; i++) {
            size_t c = ref_channel_of(&s, i);
            double sign = x[i] > mean[c] ? 1.0 : -1.0;
            check_exact("y", y[i], beta[c] + sign * gamma[c]);
        }

        /* running update, f = 0.5 from (0, 1): mean/2 and 0.5 + 0.5*16/3 = 19/6 */
        double rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
        ref_running_update(3, mean, var, ref_count(&s), 0.5, rm, rv);
        for (size_t c = 0; c < 3; c++) {
            check_exact("running mean", rm[c], (10000.0 + (double)c) / 2.0);
            check_exact("running var", rv[c], 19.0 / 6.0);
        }

        /* backward with dy = k constant per channel: dbeta = m*k, dgamma = 0, dx = 0 */
        double dy[12], dx[12], dg[3], db[3];
        for (size_t i = 0; i < 12; i++)
            dy[i] = 1.5 + (double)ref_channel_of(&s, i);
        ref_backward(&s, &p, x, NULL, dy, mean, invstd, dx, dg, db);
        for (size_t c = 0; c < 3; c++) {
            check_exact("dbeta (dy constant)", db[c], 4.0 * (1.5 + (double)c));
            check_exact("dgamma (dy constant)", dg[c], 0.0);
        }
        for (size_t i = 0; i < 12; i++)
            check_exact("dx (dy constant)", dx[i], 0.0);

        /* dy = x̂: dgamma = m, dbeta = 0, dx = 0 (the gradient along the normalized output
         * itself is removed by the normalization) */
        for (size_t i = 0; i < 12; i++) {
            size_t c = ref_channel_of(&s, i);
            dy[i] = (x[i] - mean[c]) * invstd[c];
        }
        ref_backward(&s, &p, x, NULL, dy, mean, invstd, dx, dg, db);
        for (size_t c = 0; c < 3; c++) {
            check_exact("dgamma (dy = xhat)", dg[c], 4.0);
            check_exact("dbeta (dy = xhat)", db[c], 0.0);
        }
        for (size_t i = 0; i < 12; i++)
            check_exact("dx (dy = xhat)", dx[i], 0.0);

        /* frozen with rv = 3, eps = 1: invstd 0.5, dx = gamma*0.5*dy */
        double frm[3] = {10000.0, 10001.0, 10002.0}, frv[3] = {3.0, 3.0, 3.0};
        ref_params pf = p;
        pf.eps = 1.0;
        for (size_t i = 0; i < 12; i++)
            dy[i] = (double)i - 5.0;
        ref_backward_frozen(&s, &pf, x, NULL, dy, frm, frv, dx, dg, db);
        for (size_t i = 0; i < 12; i++)
            check_exact("frozen dx", dx[i], gamma[ref_channel_of(&s, i)] * 0.5 * dy[i]);
        for (size_t c = 0; c < 3; c++) {
            double sdy = 0.0, sdyx = 0.0;
            for (size_t i = 0; i < 12; i++)
                if (ref_channel_of(&s, i) == c) {
                    sdy += dy[i];
                    sdyx += dy[i] * (x[i] - frm[c]) * 0.5;
                }
            check_exact("frozen dbeta", db[c], sdy);
            check_exact("frozen dgamma", dg[c], sdyx);
        }
    }
}

/* Cumulative mode: factors 1, 1/2, 1/3 give the plain average, the first call overwrites. */
static void cumulative_average(void **state) {
    (void)state;
    double means[3][2] = {{1.0, -4.0}, {2.0, 8.0}, {6.0, 2.0}};
    double vars[3][2] = {{0.5, 3.0}, {1.5, 6.0}, {4.0, 0.0}};
    size_t m = 5; /* unbiased factor 5/4 */
    double rm[2] = {123.0, -7.0}, rv[2] = {9.0, 0.1};
    for (uint64_t t = 0; t < 3; t++) {
        ref_running_update(2, means[t], vars[t], m, ref_cumulative_factor(t), rm, rv);
        if (t == 0) {
            check_exact("first call overwrites mean", rm[1], -4.0);
            check_exact("first call overwrites var", rv[1], 3.0 * 1.25);
        }
    }
    check_exact("cumulative mean[0]", rm[0], 3.0);
    check_exact("cumulative mean[1]", rm[1], 2.0);
    check_exact("cumulative var[0]", rv[0], 2.0 * 1.25);
    check_exact("cumulative var[1]", rv[1], 3.0 * 1.25);
}

/* Activations at known points, and the gradients from their outputs. */
static void activations(void **state) {
    (void)state;
    check_exact("relu(-2)", ref_activate(CLBN_ACTIVATION_RELU, -2.0), 0.0);
    check_exact("relu(3)", ref_activate(CLBN_ACTIVATION_RELU, 3.0), 3.0);
    check_exact("sigmoid(0)", ref_activate(CLBN_ACTIVATION_SIGMOID, 0.0), 0.5);
    check_exact("sigmoid(ln 3)", ref_activate(CLBN_ACTIVATION_SIGMOID, log(3.0)), 0.75);
    check_exact("relu grad y=0", ref_activation_grad(CLBN_ACTIVATION_RELU, 0.0, 5.0), 0.0);
    check_exact("relu grad y>0", ref_activation_grad(CLBN_ACTIVATION_RELU, 0.1, 5.0), 5.0);
    check_exact("sigmoid grad y=.5", ref_activation_grad(CLBN_ACTIVATION_SIGMOID, 0.5, 8.0), 2.0);
    check_exact("none", ref_activate(CLBN_ACTIVATION_NONE, -2.5), -2.5);
}

/* m = 1 without tracking: biased variance 0, x̂ = 0, y = beta exactly; folding matches the
 * inference forward. */
static void single_value_and_folding(void **state) {
    (void)state;
    clbn_shape s = {CLBN_LAYOUT_NCHW, 1, 3, 1, 1};
    double x[3] = {5.0, -1e4, 0.125}, y[3], var[3], gamma[3] = {3.0, -2.0, 0.5},
           beta[3] = {0.3, -0.7, 11.0};
    ref_params p = {1e-5, 1, 1, CLBN_ACTIVATION_NONE, gamma, beta};
    ref_forward_train(&s, &p, x, y, NULL, NULL, var);
    for (size_t c = 0; c < 3; c++) {
        assert_true(var[c] == 0.0);
        assert_true(y[c] == beta[c]);
    }

    clbn_shape s2 = {CLBN_LAYOUT_NHWC, 2, 3, 2, 2};
    double x2[24], yi[24], a[3], b[3], rm[3] = {1.0, -2.0, 0.5}, rv[3] = {0.25, 4.0, 1.0};
    for (size_t i = 0; i < 24; i++)
        x2[i] = 0.37 * (double)i - 4.0;
    ref_forward_infer(&s2, &p, x2, rm, rv, yi);
    ref_fold(3, &p, rm, rv, a, b);
    for (size_t i = 0; i < 24; i++) {
        size_t c = ref_channel_of(&s2, i);
        check_exact("folded", a[c] * x2[i] + b[c], yi[i]);
    }
    check_exact("fold a[1]", a[1], -2.0 / sqrt(4.0 + 1e-5));
}

int main(void) {
    static const clbn_layout layouts[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC, CLBN_LAYOUT_NC};
    static const char *layout_names[] = {"NCHW", "NHWC", "NC"};
    static const clbn_activation acts[] = {CLBN_ACTIVATION_NONE, CLBN_ACTIVATION_RELU,
                                           CLBN_ACTIVATION_SIGMOID};
    static const char *act_names[] = {"none", "relu", "sigmoid"};
    enum { NFD = 2 * 3 * 3 * 4, NFIXED = 5 };
    static fd_case cases[NFD];
    static char names[NFD][96];
    struct CMUnitTest tests[NFD + NFIXED];
    size_t n = 0;
    for (int frozen = 0; frozen < 2; frozen++)
        for (size_t li = 0; li < 3; li++)
            for (size_t ai = 0; ai < 3; ai++)
                for (int opt = 0; opt < 4; opt++) {
                    fd_case *k = &cases[n];
                    k->layout = layouts[li];
                    k->activation = acts[ai];
                    k->use_scale = opt & 1;
                    k->use_shift = (opt >> 1) & 1;
                    k->frozen = frozen;
                    snprintf(names[n], sizeof names[n], "finite_difference %s %s %s+%s %s",
                             frozen ? "bwd_frozen" : "bwd", layout_names[li],
                             k->use_scale ? "scale" : "noscale", k->use_shift ? "shift" : "noshift",
                             act_names[ai]);
                    k->name = names[n];
                    tests[n] = (struct CMUnitTest){names[n], finite_difference_case, NULL, NULL, k};
                    n++;
                }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(layout_indexing);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(known_statistics);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(cumulative_average);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(activations);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(single_value_and_folding);
    return _cmocka_run_group_tests("reference", tests, n, NULL, NULL);
}
