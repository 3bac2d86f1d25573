/* check.c — runs one clbn operation on generated data and compares it with the double-precision
 * reference (see check.h). Every buffer is padded with sentinels, so a stray write shows; the
 * inputs must come back unchanged, and the running statistics and t may change only in a
 * tracked training forward. */
#include "check.h"

#include "reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void ref_rng_seed(ref_rng *r, uint64_t seed) {
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (r->s == 0)
        r->s = 1;
}

static uint64_t next_u64(ref_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double ref_uniform(ref_rng *r) {
    return (double)(next_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double ref_normal(ref_rng *r) {
    double u1 = ref_uniform(r), u2 = ref_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

const char *ref_op_name(clbn_op op) {
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

const char *ref_layout_name(clbn_layout l) {
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

const char *ref_activation_name(clbn_activation a) {
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
    snprintf(buf, size, "%s %s %s %s+%s %s %s%s", ref_op_name(k->op), ref_layout_name(s->layout),
             shape, (k->flags & CLBN_USE_SCALE) ? "scale" : "noscale",
             (k->flags & CLBN_USE_SHIFT) ? "shift" : "noshift", ref_activation_name(k->activation),
             mode, offs);
}

/* ------------------------------------------------------------------------------------------
 * The run: every allocation and OpenCL call reports into the outcome instead of aborting.
 * ------------------------------------------------------------------------------------------ */
typedef struct run {
    ref_outcome *o;
    clbn_context *ctx;
    cl_context cc;
    cl_command_queue q;
    size_t out_at;
} run;

static void fail(run *r, const char *fmt, ...) {
    if (r->o->failed)
        return;
    r->o->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->o->message, sizeof r->o->message, fmt, ap);
    va_end(ap);
}

/* A clbn call: on failure the outcome names it with clbn's status and detail message. */
static int ok(run *r, clbn_status st, const char *what) {
    if (st == CLBN_SUCCESS)
        return 1;
    if (!r->o->failed)
        r->o->status = st;
    fail(r, "%s failed: %s: %s", what, clbn_status_name(st), clbn_last_error_message());
    return 0;
}

static void *alloc(run *r, size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p)
        fail(r, "out of host memory (%zu bytes)", bytes);
    return p;
}

/* A device buffer of off + n + REF_PAD floats: sentinels around host[0..n) placed at off. */
static cl_mem padded_buffer(run *r, const float *host, size_t off, size_t n) {
    size_t total = off + n + REF_PAD;
    float *all = alloc(r, total * sizeof *all);
    if (!all)
        return NULL;
    for (size_t i = 0; i < total; i++)
        all[i] = REF_SENTINEL;
    if (host)
        memcpy(all + off, host, n * sizeof *host);
    cl_int err = CL_SUCCESS;
    cl_mem b = clCreateBuffer(r->cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, total * sizeof *all,
                              all, &err);
    free(all);
    if (err != CL_SUCCESS) {
        fail(r, "clCreateBuffer(%zu floats) failed: %d", total, err);
        return NULL;
    }
    return b;
}

/* Reads the whole padded buffer, checks the sentinels around [off, off + n) and returns it (the
 * caller frees it; the data start at off). */
static float *read_padded(run *r, cl_mem b, const char *what, size_t off, size_t n) {
    size_t total = off + n + REF_PAD;
    float *all = alloc(r, total * sizeof *all);
    if (!all || !b)
        return all;
    cl_int err = clEnqueueReadBuffer(r->q, b, CL_TRUE, 0, total * sizeof *all, all, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        fail(r, "reading %s failed: %d", what, err);
        return all;
    }
    size_t stray = 0, first = 0, last = 0;
    for (size_t i = 0; i < total; i++)
        if ((i < off || i >= off + n) && all[i] != REF_SENTINEL) {
            if (!stray++)
                first = i;
            last = i;
        }
    if (stray)
        fail(r, "%s: %zu elements outside [%zu, %zu) were written, from %zu (%.9g) to %zu", what,
             stray, off, off + n, first, (double)all[first], last);
    return all;
}

static void read_vec(run *r, clbn_bn *bn, clbn_vector v, float *host, size_t c) {
    ok(r, clbn_bn_read_vector(bn, v, host, c), clbn_vector_name(v));
}

/* Appends n outputs with their allowances and checks |got - ref| <= allow for each. */
static void take(run *r, const char *what, const float *got, const double *ref, const double *allow,
                 size_t n) {
    ref_outcome *o = r->o;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        double ratio = allow[i] > 0.0 ? err / allow[i] : (err > 0.0 ? INFINITY : 0.0);
        if (!(err <= allow[i]))
            fail(r, "%s[%zu]: got %.9g, reference %.9g (|err| %.3g > allowed %.3g)", what, i,
                 (double)got[i], ref[i], err, allow[i]);
        if (!(ratio <= o->worst))
            o->worst = ratio;
        if (!(err <= o->max_err))
            o->max_err = err;
        o->out[r->out_at + i] = got[i];
        o->allow[r->out_at + i] = allow[i];
    }
    r->out_at += n;
}

/* The same allowance atol + rtol*|ref| for every value. */
static void take_uniform(run *r, const char *what, const float *got, const double *ref, size_t n,
                         ref_tolerance t) {
    double *allow = alloc(r, n * sizeof *allow);
    if (!allow)
        return;
    for (size_t i = 0; i < n; i++)
        allow[i] = t.atol + t.rtol * fabs(ref[i]);
    take(r, what, got, ref, allow, n);
    free(allow);
}

/* y per channel: atol grows by y_mean_factor·|gamma|·invstd·|mean|, the fp32 rounding of the
 * mean (or the running mean) carried through x − mean and amplified by invstd. It matters when
 * a channel's spread is small against its mean (m = 2 with two close values, say). */
static void take_y(run *r, const clbn_shape *s, const ref_params *p, const float *y,
                   const double *yref, const double *mean, const double *invstd,
                   const ref_tolerances *tol) {
    size_t E = ref_elems(s);
    double *allow = alloc(r, E * sizeof *allow);
    if (!allow)
        return;
    for (size_t i = 0; i < E; i++) {
        size_t c = ref_channel_of(s, i);
        allow[i] = tol->y.atol +
                   tol->y_mean_factor * fabs(ref_gamma(p, c)) * invstd[c] * fabs(mean[c]) +
                   tol->y.rtol * fabs(yref[i]);
    }
    take(r, "y", y, yref, allow, E);
    free(allow);
}

/* dgamma and dbeta with the per-channel tolerance atol = factor * Σ|term|. */
static void take_sums(run *r, const clbn_shape *s, const ref_params *p, const double *x,
                      const double *y, const double *dy, const double *mean, const double *invstd,
                      const float *dgamma, const float *dbeta, const double *dgamma_ref,
                      const double *dbeta_ref, const ref_tolerances *tol) {
    size_t C = (size_t)s->c;
    double *ag = alloc(r, C * sizeof *ag), *ab = alloc(r, C * sizeof *ab);
    if (ag && ab) {
        ref_sum_magnitudes(s, p, x, y, dy, mean, invstd, ag, ab);
        for (size_t c = 0; c < C; c++) {
            ag[c] = tol->sum_atol_factor * ag[c] + tol->sum_rtol * fabs(dgamma_ref[c]);
            ab[c] = tol->sum_atol_factor * ab[c] + tol->sum_rtol * fabs(dbeta_ref[c]);
        }
        take(r, "dgamma", dgamma, dgamma_ref, ag, C);
        take(r, "dbeta", dbeta, dbeta_ref, ab, C);
    }
    free(ag);
    free(ab);
}

static void release_mem(cl_mem m) {
    if (m)
        clReleaseMemObject(m);
}

void ref_outcome_free(ref_outcome *o) {
    if (!o)
        return;
    free(o->out);
    free(o->allow);
    o->out = NULL;
    o->allow = NULL;
    o->out_n = 0;
}

void ref_run_case(clbn_context *ctx, const ref_case *k, const ref_tolerances *tol,
                  ref_outcome *outcome) {
    memset(outcome, 0, sizeof *outcome);
    run rr = {outcome, ctx, NULL, NULL, 0};
    run *r = &rr;
    const clbn_shape *s = &k->shape;
    const size_t C = (size_t)s->c, E = ref_elems(s), m = ref_count(s);
    const size_t off = (size_t)k->offset;
    /* distinct offsets per buffer, so swapped offsets show */
    const size_t xo = off, yo = off ? off + 2 : 0, dyo = off ? off + 5 : 0, dxo = off ? off + 1 : 0;
    const int track = (k->flags & CLBN_TRACK_RUNNING_STATS) != 0;
    const int backward = k->op == CLBN_OP_BACKWARD || k->op == CLBN_OP_BACKWARD_FROZEN;
    if (!tol)
        tol = &ref_default_tolerances;
    if (!ok(r, clbn_context_get_cl(ctx, &r->cc, &r->q), "clbn_context_get_cl"))
        return;
    outcome->out_n = k->op == CLBN_OP_FORWARD_TRAIN ? E + 4 * C : backward ? E + 2 * C : E;
    outcome->out = alloc(r, outcome->out_n * sizeof *outcome->out);
    outcome->allow = alloc(r, outcome->out_n * sizeof *outcome->allow);

    /* Random data: per-channel mean and spread, gamma of both signs, nonzero running stats
     * near the data's own so the frozen and inference outputs are of ordinary size. */
    ref_rng g;
    ref_rng_seed(&g, k->seed);
    float *gamma = alloc(r, C * 4), *beta = alloc(r, C * 4), *rm0 = alloc(r, C * 4),
          *rv0 = alloc(r, C * 4), *x = alloc(r, E * 4), *dy = alloc(r, E * 4);
    double *ch_mean = alloc(r, C * 8), *ch_std = alloc(r, C * 8);
    float *fm = alloc(r, C * 4), *fi = alloc(r, C * 4), *frm = alloc(r, C * 4),
          *frv = alloc(r, C * 4), *dg = alloc(r, C * 4), *db = alloc(r, C * 4);
    double *y_ref = alloc(r, E * 8), *mean = alloc(r, C * 8), *invstd = alloc(r, C * 8),
           *var = alloc(r, C * 8);
    clbn_bn *bn = NULL;
    cl_mem xb = NULL, yb = NULL, dyb = NULL, dxb = NULL;
    float *y_all = NULL, *dx_all = NULL, *x_all = NULL, *dy_all = NULL;
    double *gamma_d = NULL, *beta_d = NULL, *rm0_d = NULL, *rv0_d = NULL, *x_d = NULL;
    if (outcome->failed)
        goto done;
    for (size_t c = 0; c < C; c++) {
        ch_mean[c] = k->data_mean + 4.0 * ref_uniform(&g) - 2.0;
        ch_std[c] = 0.5 + 1.5 * ref_uniform(&g);
        gamma[c] = (float)((0.5 + ref_uniform(&g)) * (ref_uniform(&g) < 0.25 ? -1.0 : 1.0));
        beta[c] = (float)ref_normal(&g);
        rm0[c] = (float)(ch_mean[c] + 0.3 * ch_std[c] * ref_normal(&g));
        rv0[c] = (float)(ch_std[c] * ch_std[c] * (0.6 + ref_uniform(&g)));
    }
    for (size_t i = 0; i < E; i++) {
        size_t c = ref_channel_of(s, i);
        x[i] = (float)(ch_mean[c] + ch_std[c] * ref_normal(&g));
    }
    for (size_t i = 0; i < E; i++)
        dy[i] = (float)ref_normal(&g);

    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.flags = k->flags;
    o.activation = k->activation;
    if (k->factor != 0.0f)
        o.factor = k->factor;
    if (k->eps != 0.0f)
        o.eps = k->eps;
    if (!ok(r, clbn_bn_create(ctx, &o, &bn), "clbn_bn_create") ||
        !ok(r, clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, gamma, C), "writing gamma") ||
        !ok(r, clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, beta, C), "writing beta") ||
        !ok(r, clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm0, C),
            "writing running mean") ||
        !ok(r, clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv0, C), "writing running var") ||
        !ok(r, clbn_bn_set_batches_tracked(bn, k->batches_tracked), "setting t") ||
        !ok(r, clbn_bn_query_plan(bn, k->op, s, &outcome->plan), "clbn_bn_query_plan"))
        goto done;

    gamma_d = ref_to_double(gamma, C);
    beta_d = ref_to_double(beta, C);
    rm0_d = ref_to_double(rm0, C);
    rv0_d = ref_to_double(rv0, C);
    x_d = ref_to_double(x, E);
    ref_params p = {(double)o.eps,
                    (k->flags & CLBN_USE_SCALE) != 0,
                    (k->flags & CLBN_USE_SHIFT) != 0,
                    k->activation,
                    gamma_d,
                    beta_d};

    xb = padded_buffer(r, x, xo, E);
    yb = padded_buffer(r, NULL, yo, E);
    if (backward) {
        dyb = padded_buffer(r, dy, dyo, E);
        dxb = padded_buffer(r, NULL, dxo, E);
    }
    if (outcome->failed)
        goto done;
    int changes_running = 0;

    switch (k->op) {
    case CLBN_OP_FORWARD_TRAIN: {
        if (!ok(r, clbn_bn_forward_train(bn, s, xb, xo, yb, yo, NULL, NULL, 0, NULL, NULL),
                "clbn_bn_forward_train"))
            goto done;
        y_all = read_padded(r, yb, "y", yo, E);
        ref_forward_train(s, &p, x_d, y_ref, mean, invstd, var);
        read_vec(r, bn, CLBN_VECTOR_SAVED_MEAN, fm, C);
        read_vec(r, bn, CLBN_VECTOR_SAVED_INVSTD, fi, C);
        read_vec(r, bn, CLBN_VECTOR_RUNNING_MEAN, frm, C);
        read_vec(r, bn, CLBN_VECTOR_RUNNING_VAR, frv, C);
        if (outcome->failed)
            goto done;
        take_y(r, s, &p, y_all + yo, y_ref, mean, invstd, tol);
        take_uniform(r, "saved mean", fm, mean, C, tol->mean);
        take_uniform(r, "saved invstd", fi, invstd, C, tol->invstd);
        if (track) {
            double f = (k->flags & CLBN_CUMULATIVE_AVERAGE)
                           ? ref_cumulative_factor(k->batches_tracked)
                           : (double)o.factor;
            ref_running_update(C, mean, var, m, f, rm0_d, rv0_d);
            take_uniform(r, "running mean", frm, rm0_d, C, tol->running_mean);
            take_uniform(r, "running var", frv, rv0_d, C, tol->running_var);
            changes_running = 1;
        } else { /* untouched: held to no error at all */
            ref_tolerance exact = {0.0, 0.0};
            take_uniform(r, "running mean", frm, rm0_d, C, exact);
            take_uniform(r, "running var", frv, rv0_d, C, exact);
        }
        break;
    }
    case CLBN_OP_FORWARD_INFER:
    case CLBN_OP_FORWARD_FROZEN: {
        clbn_status st = k->op == CLBN_OP_FORWARD_INFER
                             ? clbn_bn_forward_infer(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL)
                             : clbn_bn_forward_frozen(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL);
        if (!ok(r, st, ref_op_name(k->op)))
            goto done;
        y_all = read_padded(r, yb, "y", yo, E);
        if (outcome->failed)
            goto done;
        if (track) {
            ref_forward_infer(s, &p, x_d, rm0_d, rv0_d, y_ref);
            memcpy(mean, rm0_d, C * sizeof *mean);
            ref_invstd(C, rv0_d, p.eps, invstd);
        } else { /* inference without running statistics normalizes with the batch's */
            ref_forward_train(s, &p, x_d, y_ref, mean, invstd, NULL);
        }
        take_y(r, s, &p, y_all + yo, y_ref, mean, invstd, tol);
        break;
    }
    case CLBN_OP_BACKWARD:
    case CLBN_OP_BACKWARD_FROZEN: {
        const int act = k->activation != CLBN_ACTIVATION_NONE;
        if (k->op == CLBN_OP_BACKWARD) {
            /* The backward is checked against the reference evaluated with the statistics and
             * output the library's forward produced (those are checked by fwd_train), so a
             * difference here is the backward's own. */
            if (!ok(r, clbn_bn_forward_train(bn, s, xb, xo, yb, yo, NULL, NULL, 0, NULL, NULL),
                    "clbn_bn_forward_train") ||
                !ok(r,
                    clbn_bn_backward(bn, s, xb, xo, act ? yb : NULL, act ? yo : 0, dyb, dyo, dxb,
                                     dxo, NULL, NULL, 0, NULL, NULL),
                    "clbn_bn_backward"))
                goto done;
            read_vec(r, bn, CLBN_VECTOR_SAVED_MEAN, fm, C);
            read_vec(r, bn, CLBN_VECTOR_SAVED_INVSTD, fi, C);
            for (size_t c = 0; c < C; c++) {
                mean[c] = fm[c];
                invstd[c] = fi[c];
            }
            if (track) {
                /* the forward moved them; what it moved them to is fwd_train's concern */
                read_vec(r, bn, CLBN_VECTOR_RUNNING_MEAN, frm, C);
                read_vec(r, bn, CLBN_VECTOR_RUNNING_VAR, frv, C);
                for (size_t c = 0; c < C; c++) {
                    rm0_d[c] = frm[c];
                    rv0_d[c] = frv[c];
                }
                changes_running = 1;
            }
        } else {
            if (!ok(r, clbn_bn_forward_frozen(bn, s, xb, xo, yb, yo, NULL, 0, NULL, NULL),
                    "clbn_bn_forward_frozen") ||
                !ok(r,
                    clbn_bn_backward_frozen(bn, s, xb, xo, act ? yb : NULL, act ? yo : 0, dyb, dyo,
                                            dxb, dxo, NULL, 0, NULL, NULL),
                    "clbn_bn_backward_frozen"))
                goto done;
            for (size_t c = 0; c < C; c++) {
                mean[c] = rm0_d[c];
                invstd[c] = 1.0 / sqrt(rv0_d[c] + p.eps);
            }
        }
        y_all = read_padded(r, yb, "y", yo, E);
        dx_all = read_padded(r, dxb, "dx", dxo, E);
        read_vec(r, bn, CLBN_VECTOR_DGAMMA, dg, C);
        read_vec(r, bn, CLBN_VECTOR_DBETA, db, C);
        if (outcome->failed)
            goto done;
        double *y_d = act ? ref_to_double(y_all + yo, E) : NULL;
        double *dy_d = ref_to_double(dy, E);
        double *dx_ref = alloc(r, E * 8), *dg_ref = alloc(r, C * 8), *db_ref = alloc(r, C * 8);
        if (dx_ref && dg_ref && db_ref) {
            if (k->op == CLBN_OP_BACKWARD)
                ref_backward(s, &p, x_d, y_d, dy_d, mean, invstd, dx_ref, dg_ref, db_ref);
            else
                ref_backward_frozen(s, &p, x_d, y_d, dy_d, rm0_d, rv0_d, dx_ref, dg_ref, db_ref);
            take_uniform(r, "dx", dx_all + dxo, dx_ref, E, tol->dx);
            take_sums(r, s, &p, x_d, y_d, dy_d, mean, invstd, dg, db, dg_ref, db_ref, tol);
        }
        free(dx_ref);
        free(dg_ref);
        free(db_ref);
        free(y_d);
        free(dy_d);
        /* dy is an input: it must come back unchanged */
        dy_all = read_padded(r, dyb, "dy", dyo, E);
        if (dy_all && !outcome->failed && memcmp(dy_all + dyo, dy, E * sizeof *dy))
            fail(r, "dy, an input, was changed");
        break;
    }
    }

    /* x is an input: unchanged, and nothing written around it */
    x_all = read_padded(r, xb, "x", xo, E);
    if (x_all && !outcome->failed && memcmp(x_all + xo, x, E * sizeof *x))
        fail(r, "x, an input, was changed");

    /* running statistics and t: updated only by a tracked training forward */
    if (k->op != CLBN_OP_FORWARD_TRAIN) {
        read_vec(r, bn, CLBN_VECTOR_RUNNING_MEAN, frm, C);
        read_vec(r, bn, CLBN_VECTOR_RUNNING_VAR, frv, C);
        int same = 1;
        for (size_t c = 0; c < C; c++)
            same &= changes_running ? (frm[c] == (float)rm0_d[c] && frv[c] == (float)rv0_d[c])
                                    : (frm[c] == rm0[c] && frv[c] == rv0[c]);
        if (!same)
            fail(r, "%s changed the running statistics", ref_op_name(k->op));
    }
    uint64_t t_after = 0;
    ok(r, clbn_bn_get_batches_tracked(bn, &t_after), "clbn_bn_get_batches_tracked");
    int trained = track && (k->op == CLBN_OP_FORWARD_TRAIN || k->op == CLBN_OP_BACKWARD);
    if (t_after != k->batches_tracked + (trained ? 1 : 0))
        fail(r, "t is %llu after the call, expected %llu", (unsigned long long)t_after,
             (unsigned long long)(k->batches_tracked + (trained ? 1 : 0)));

done:
    if (r->out_at != outcome->out_n && !outcome->failed)
        fail(r, "internal: %zu outputs taken, %zu expected", r->out_at, outcome->out_n);
    clbn_bn_release(bn);
    release_mem(xb);
    release_mem(yb);
    release_mem(dyb);
    release_mem(dxb);
    void *all[] = {gamma, beta,   rm0,   rv0,    x,       dy,     ch_mean, ch_std, fm,
                   fi,    frm,    frv,   dg,     db,      y_ref,  mean,    invstd, var,
                   y_all, dx_all, x_all, dy_all, gamma_d, beta_d, rm0_d,   rv0_d,  x_d};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}
