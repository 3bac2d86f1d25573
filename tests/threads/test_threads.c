/* Threads, under the rules in clbn.h: threads with their own state objects, buffers and queues on
 * one shared context created cold (the lazy program builds race), threads sharing one state object
 * under a caller's mutex, a context per thread on one cache folder, and the per-thread error
 * message. tests/threads/run-tsan.sh runs it
 * under ThreadSanitizer. Worker threads never call cmocka (its failures longjmp): they write a
 * report that the main thread asserts on. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include "reference.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4

static char cache_dir[128];

static int group_setup(void **state) {
    (void)state;
    size_t count = 0;
    if (clbn_device_list(NULL, 0, &count) != CLBN_SUCCESS || count == 0) {
        fprintf(stderr, "SKIP: no OpenCL device found (install pocl-opencl-icd)\n");
        exit(77);
    }
    snprintf(cache_dir, sizeof cache_dir, "/tmp/clbn-test-threads-XXXXXX");
    assert_non_null(mkdtemp(cache_dir));
    return 0;
}

static size_t dir_entries(const char *dir, int tmp_only) {
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!tmp_only || strstr(e->d_name, ".tmp.")))
            n++;
    closedir(d);
    return n;
}

static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

static int group_teardown(void **state) {
    (void)state;
    remove_flat_dir(cache_dir);
    return 0;
}

/* A context on the default device ($CLBN_DEVICE honoured) whose program cache is `dir`. */
static clbn_status context_in(const char *dir, clbn_context **ctx) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.cache_dir = dir;
    return clbn_context_create(&o, ctx);
}

/* One on the group's cache folder: empty for the first case, so its builds are cold; later
 * cases load the binaries. */
static clbn_context *make_context(void) {
    clbn_context *ctx = NULL;
    TU_OK(context_in(cache_dir, &ctx));
    return ctx;
}

/* ---------------------------------------------------------------------------------------- */
/* What a worker thread found                                                               */
/* ---------------------------------------------------------------------------------------- */

typedef struct report {
    int failed;
    char msg[1024];
} report;

static void report_fail(report *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void report_fail(report *r, const char *fmt, ...) {
    if (r->failed)
        return;
    r->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

/* clbn_last_error_message() is this thread's, so it names this thread's failure. */
#define TH_OK(r, call)                                                                             \
    do {                                                                                           \
        clbn_status th_st_ = (call);                                                               \
        if (th_st_ != CLBN_SUCCESS) {                                                              \
            report_fail((r), "%s failed: %s: %s", #call, clbn_status_name(th_st_),                 \
                        clbn_last_error_message());                                                \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#define TH_CL(r, call)                                                                             \
    do {                                                                                           \
        cl_int th_err_ = (call);                                                                   \
        if (th_err_ != CL_SUCCESS) {                                                               \
            report_fail((r), "%s failed: %s", #call, clbn_status_name((clbn_status)th_err_));      \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* |got - ref| <= t.atol + t.rtol*|ref| + (extra ? extra[channel] : 0) for each of n values;
 * channel_of maps a value to the index of extra (NULL: the value's own index). */
static int check_close(report *r, const char *where, const char *what, const float *got,
                       const double *ref, size_t n, ref_tolerance t, const double *extra,
                       const clbn_shape *channel_of) {
    for (size_t i = 0; i < n; i++) {
        double allow = t.atol + t.rtol * fabs(ref[i]);
        if (extra)
            allow += extra[channel_of ? ref_channel_of(channel_of, i) : i];
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= allow)) {
            report_fail(r, "%s: %s[%zu]: got %.9g, reference %.9g (|err| %.3g > allowed %.3g)",
                        where, what, i, (double)got[i], ref[i], err, allow);
            return 0;
        }
    }
    return 1;
}

/* y's allowance per channel beyond atol + rtol*|y| (check.c's take_y): the fp32 rounding of
 * the mean carried through x - mean and amplified by invstd. */
static void y_extra(const ref_params *p, size_t C, const double *mean, const double *invstd,
                    double *extra) {
    for (size_t c = 0; c < C; c++)
        extra[c] = ref_default_tolerances.y_mean_factor * fabs(ref_gamma(p, c)) * invstd[c] *
                   fabs(mean[c]);
}

static void to_double(const float *v, double *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
}

/* x = a per-channel mean in [-2, 2] (plus `shift`) + N(0, a spread in [0.5, 2]^2). */
static void fill_batch(ref_rng *g, const clbn_shape *s, float *x, double shift) {
    size_t C = (size_t)s->c, E = ref_elems(s);
    double mu[64], sd[64]; /* channels past 64 repeat the first 64's distributions */
    for (size_t c = 0; c < C && c < 64; c++) {
        mu[c] = shift + 4.0 * ref_uniform(g) - 2.0;
        sd[c] = 0.5 + 1.5 * ref_uniform(g);
    }
    for (size_t i = 0; i < E; i++) {
        size_t c = ref_channel_of(s, i) % 64;
        x[i] = (float)(mu[c] + sd[c] * ref_normal(g));
    }
}

static cl_mem w_buffer(report *r, cl_context cc, size_t n) {
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(cc, CL_MEM_READ_WRITE, (n ? n : 1) * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        report_fail(r, "clCreateBuffer(%zu floats) failed: %s", n,
                    clbn_status_name((clbn_status)err));
    return m;
}

static void release_mem(cl_mem m) {
    if (m)
        clReleaseMemObject(m);
}

/* ---------------------------------------------------------------------------------------- */
/* (a) one state object, buffers and queue per thread, on one context                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct own_spec {
    const char *name;
    clbn_shape shape;
    uint32_t flags;
    clbn_activation activation;
} own_spec;

/* Different layouts and widths, so the threads need different program variants as well as the
 * same ones at the same moment. */
static const own_spec own_specs[THREADS] = {
    {"NCHW 4x6x5x7 relu",
     {CLBN_LAYOUT_NCHW, 4, 6, 5, 7},
     CLBN_BN_FLAGS_DEFAULT,
     CLBN_ACTIVATION_RELU},
    {"NHWC 3x24x6x5", {CLBN_LAYOUT_NHWC, 3, 24, 6, 5}, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_NONE},
    {"NC 64x33 cumulative",
     {CLBN_LAYOUT_NC, 64, 33, 1, 1},
     CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE,
     CLBN_ACTIVATION_NONE},
    {"NCHW 2x3x16x16 sigmoid scale-only",
     {CLBN_LAYOUT_NCHW, 2, 3, 16, 16},
     CLBN_USE_SCALE | CLBN_TRACK_RUNNING_STATS,
     CLBN_ACTIVATION_SIGMOID},
};

#define OWN_ITERS 3

typedef struct own_arg {
    clbn_context *ctx;
    const own_spec *spec;
    pthread_barrier_t *start;
    uint64_t seed;
    report rep;
} own_arg;

/* One iteration's checks: the training forward (y, saved statistics, running statistics from
 * the library's previous ones), the backward (with the statistics the forward saved, as
 * check.c does), the inference forward (with the running statistics the forward left). */
typedef struct own_host {
    float *x, *dy, *y, *dx, *yi, *gamma, *beta, *fm, *fi, *frm, *frv, *dg, *db;
    double *xd, *yd, *dyd, *yref, *dxref, *gd, *bd, *mean, *invstd, *var, *rm, *rv, *dgref, *dbref,
        *ag, *ab, *extra, *lm, *li;
} own_host;

static int own_check(own_arg *a, own_host *h, int iter) {
    report *r = &a->rep;
    const own_spec *sp = a->spec;
    const clbn_shape *s = &sp->shape;
    const ref_tolerances *tol = &ref_default_tolerances;
    size_t C = (size_t)s->c, E = ref_elems(s), m = ref_count(s);
    char where[128];
    snprintf(where, sizeof where, "%s, iteration %d", sp->name, iter);
    ref_params p = {(double)1e-5f, /* the state's default eps, as the library holds it */
                    (sp->flags & CLBN_USE_SCALE) != 0,
                    (sp->flags & CLBN_USE_SHIFT) != 0,
                    sp->activation,
                    h->gd,
                    h->bd};
    to_double(h->x, h->xd, E);
    ref_forward_train(s, &p, h->xd, h->yref, h->mean, h->invstd, h->var);
    y_extra(&p, C, h->mean, h->invstd, h->extra);
    if (!check_close(r, where, "y", h->y, h->yref, E, tol->y, h->extra, s) ||
        !check_close(r, where, "saved mean", h->fm, h->mean, C, tol->mean, NULL, NULL) ||
        !check_close(r, where, "saved invstd", h->fi, h->invstd, C, tol->invstd, NULL, NULL))
        return 0;
    /* h->rm, h->rv: the library's running statistics before this iteration */
    double f = (sp->flags & CLBN_CUMULATIVE_AVERAGE) ? ref_cumulative_factor((uint64_t)iter) : 0.1;
    ref_running_update(C, h->mean, h->var, m, f, h->rm, h->rv);
    if (!check_close(r, where, "running mean", h->frm, h->rm, C, tol->running_mean, NULL, NULL) ||
        !check_close(r, where, "running var", h->frv, h->rv, C, tol->running_var, NULL, NULL))
        return 0;

    to_double(h->fm, h->lm, C);
    to_double(h->fi, h->li, C);
    to_double(h->y, h->yd, E);
    to_double(h->dy, h->dyd, E);
    const double *yact = sp->activation != CLBN_ACTIVATION_NONE ? h->yd : NULL;
    ref_backward(s, &p, h->xd, yact, h->dyd, h->lm, h->li, h->dxref, h->dgref, h->dbref);
    ref_sum_magnitudes(s, &p, h->xd, yact, h->dyd, h->lm, h->li, h->ag, h->ab);
    for (size_t c = 0; c < C; c++) {
        h->ag[c] *= tol->sum_atol_factor;
        h->ab[c] *= tol->sum_atol_factor;
    }
    ref_tolerance sums = {0.0, tol->sum_rtol};
    if (!check_close(r, where, "dx", h->dx, h->dxref, E, tol->dx, NULL, NULL) ||
        !check_close(r, where, "dgamma", h->dg, h->dgref, C, sums, h->ag, NULL) ||
        !check_close(r, where, "dbeta", h->db, h->dbref, C, sums, h->ab, NULL))
        return 0;

    to_double(h->frm, h->rm, C);
    to_double(h->frv, h->rv, C);
    ref_forward_infer(s, &p, h->xd, h->rm, h->rv, h->yref);
    ref_invstd(C, h->rv, p.eps, h->li);
    y_extra(&p, C, h->rm, h->li, h->extra);
    return check_close(r, where, "inference y", h->yi, h->yref, E, tol->y, h->extra, s);
}

static void *own_worker(void *argp) {
    own_arg *a = argp;
    report *r = &a->rep;
    const own_spec *sp = a->spec;
    const clbn_shape *s = &sp->shape;
    const size_t C = (size_t)s->c, E = ref_elems(s);
    const int act = sp->activation != CLBN_ACTIVATION_NONE;
    cl_context cc = NULL;
    cl_command_queue q = NULL;
    clbn_bn *bn = NULL;
    cl_mem xb = NULL, yb = NULL, dyb = NULL, dxb = NULL, yib = NULL;
    own_host h;
    float **fl[] = {&h.x, &h.dy, &h.y, &h.dx, &h.yi};
    float **fc[] = {&h.gamma, &h.beta, &h.fm, &h.fi, &h.frm, &h.frv, &h.dg, &h.db};
    double **de[] = {&h.xd, &h.yd, &h.dyd, &h.yref, &h.dxref};
    double **dc[] = {&h.gd,    &h.bd,    &h.mean, &h.invstd, &h.var,   &h.rm, &h.rv,
                     &h.dgref, &h.dbref, &h.ag,   &h.ab,     &h.extra, &h.lm, &h.li};
    int waited = 0;
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        *fl[i] = malloc(E * sizeof(float));
    for (size_t i = 0; i < sizeof fc / sizeof fc[0]; i++)
        *fc[i] = malloc(C * sizeof(float));
    for (size_t i = 0; i < sizeof de / sizeof de[0]; i++)
        *de[i] = malloc(E * sizeof(double));
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++)
        *dc[i] = malloc(C * sizeof(double));
    int oom = 0;
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        oom |= !*fl[i];
    for (size_t i = 0; i < sizeof fc / sizeof fc[0]; i++)
        oom |= !*fc[i];
    for (size_t i = 0; i < sizeof de / sizeof de[0]; i++)
        oom |= !*de[i];
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++)
        oom |= !*dc[i];
    if (oom) {
        report_fail(r, "%s: out of host memory", sp->name);
        goto out;
    }

    /* Its own queue on the shared cl_context, its own state object and buffers. */
    clbn_device_info info;
    TH_OK(r, clbn_context_get_device_info(a->ctx, &info));
    TH_OK(r, clbn_context_get_cl(a->ctx, &cc, NULL));
    cl_int err = CL_SUCCESS;
    q = clCreateCommandQueue(cc, info.device, 0, &err);
    TH_CL(r, err);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.flags = sp->flags;
    o.activation = sp->activation;
    TH_OK(r, clbn_bn_create(a->ctx, &o, &bn));
    ref_rng g;
    ref_rng_seed(&g, a->seed);
    for (size_t c = 0; c < C; c++) {
        h.gamma[c] = (float)((0.5 + ref_uniform(&g)) * (ref_uniform(&g) < 0.25 ? -1.0 : 1.0));
        h.beta[c] = (float)ref_normal(&g);
    }
    TH_OK(r, clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, h.gamma, C));
    TH_OK(r, clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, h.beta, C));
    TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, h.frm, C));
    TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, h.frv, C));
    to_double(h.gamma, h.gd, C);
    to_double(h.beta, h.bd, C);
    to_double(h.frm, h.rm, C);
    to_double(h.frv, h.rv, C);
    xb = w_buffer(r, cc, E);
    yb = w_buffer(r, cc, E);
    dyb = w_buffer(r, cc, E);
    dxb = w_buffer(r, cc, E);
    yib = w_buffer(r, cc, E);
    if (r->failed)
        goto out;

    /* Every thread's first call at the same moment: the programs are not built yet. */
    pthread_barrier_wait(a->start);
    waited = 1;
    for (int it = 0; it < OWN_ITERS; it++) {
        fill_batch(&g, s, h.x, it * 0.5);
        for (size_t i = 0; i < E; i++)
            h.dy[i] = (float)ref_normal(&g);
        TH_CL(r, clEnqueueWriteBuffer(q, xb, CL_TRUE, 0, E * 4, h.x, 0, NULL, NULL));
        TH_CL(r, clEnqueueWriteBuffer(q, dyb, CL_TRUE, 0, E * 4, h.dy, 0, NULL, NULL));
        TH_OK(r, clbn_bn_forward_train(bn, s, xb, 0, yb, 0, NULL, q, 0, NULL, NULL));
        TH_OK(r, clbn_bn_backward(bn, s, xb, 0, act ? yb : NULL, 0, dyb, 0, dxb, 0, NULL, q, 0,
                                  NULL, NULL));
        TH_OK(r, clbn_bn_forward_infer(bn, s, xb, 0, yib, 0, q, 0, NULL, NULL));
        TH_CL(r, clEnqueueReadBuffer(q, yb, CL_TRUE, 0, E * 4, h.y, 0, NULL, NULL));
        TH_CL(r, clEnqueueReadBuffer(q, dxb, CL_TRUE, 0, E * 4, h.dx, 0, NULL, NULL));
        TH_CL(r, clEnqueueReadBuffer(q, yib, CL_TRUE, 0, E * 4, h.yi, 0, NULL, NULL));
        /* The vector reads run on the context's queue: the work on ours is finished first. */
        TH_CL(r, clFinish(q));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, h.fm, C));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, h.fi, C));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, h.frm, C));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, h.frv, C));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, h.dg, C));
        TH_OK(r, clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, h.db, C));
        uint64_t t = 0;
        TH_OK(r, clbn_bn_get_batches_tracked(bn, &t));
        if (t != (uint64_t)it + 1) {
            report_fail(r, "%s: t = %llu after %d training calls", sp->name, (unsigned long long)t,
                        it + 1);
            goto out;
        }
        if (!own_check(a, &h, it))
            goto out;
    }

    /* Then the harness's checks of each op (a fresh state object each, the context's queue
     * shared by every thread): sentinels around the outputs, inputs unchanged. */
    const clbn_op ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_BACKWARD, CLBN_OP_FORWARD_INFER,
                           CLBN_OP_FORWARD_FROZEN, CLBN_OP_BACKWARD_FROZEN};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        ref_case k;
        memset(&k, 0, sizeof k);
        k.op = ops[i];
        k.shape = *s;
        k.flags = sp->flags;
        k.activation = sp->activation;
        k.batches_tracked = (sp->flags & CLBN_CUMULATIVE_AVERAGE) ? 3 : 0;
        k.seed = a->seed * 16 + i;
        ref_outcome oc;
        ref_run_case(a->ctx, &k, NULL, &oc);
        ref_outcome_free(&oc);
        if (oc.failed) {
            char name[160];
            ref_case_name(&k, name, sizeof name);
            report_fail(r, "%s: %s", name, oc.message);
            goto out;
        }
    }

out:
    if (!waited)
        pthread_barrier_wait(a->start); /* never leave the others waiting */
    if (q)
        clFinish(q); /* clbn_bn_release waits for the context's queue only */
    clbn_bn_release(bn);
    release_mem(xb);
    release_mem(yb);
    release_mem(dyb);
    release_mem(dxb);
    release_mem(yib);
    if (q)
        clReleaseCommandQueue(q);
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        free(*fl[i]);
    for (size_t i = 0; i < sizeof fc / sizeof fc[0]; i++)
        free(*fc[i]);
    for (size_t i = 0; i < sizeof de / sizeof de[0]; i++)
        free(*de[i]);
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++)
        free(*dc[i]);
    return NULL;
}

static void own_state_per_thread_cold_shared_context(void **state) {
    (void)state;
    /* The first case of the group: the context's program cache is empty, so no variant is
     * built or on disk when the threads start. */
    assert_int_equal(dir_entries(cache_dir, 0), 0);
    clbn_context *ctx = make_context();
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    own_arg args[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].ctx = ctx;
        args[i].spec = &own_specs[i];
        args[i].start = &start;
        args[i].seed = 1000u + (uint64_t)i;
        assert_int_equal(pthread_create(&th[i], NULL, own_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    clbn_context_release(ctx);
    for (int i = 0; i < THREADS; i++)
        if (args[i].rep.failed)
            fail_msg("thread %d (%s): %s", i, own_specs[i].name, args[i].rep.msg);
    /* The builds stored their binaries, and no temporary file was left behind. */
    assert_true(dir_entries(cache_dir, 0) > 0);
    assert_int_equal(dir_entries(cache_dir, 1), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* (b) threads sharing one state object, each call under the callers' mutex                 */
/* ---------------------------------------------------------------------------------------- */

#define SHARED_BATCHES 24
static const clbn_shape shared_shape = {CLBN_LAYOUT_NCHW, 8, 16, 4, 4};
#define SHARED_FLAGS (CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE | CLBN_ACCUMULATE_GRADIENTS)

typedef struct shared_run {
    clbn_context *ctx;
    clbn_bn *bn;
    cl_mem x, dy; /* SHARED_BATCHES batches, read-only inputs shared by every thread */
    int own_queues;
    pthread_mutex_t lock; /* the callers' lock: one thread at a time on the state object */
    pthread_cond_t turn;
    pthread_barrier_t start;
    /* under lock: */
    int next;                /* the next step; step b trains on batch b */
    int who[SHARED_BATCHES]; /* the thread that made step b */
    cl_event last; /* own queues: the previous call's event, which the next call waits for */
} shared_run;

typedef struct shared_arg {
    shared_run *run;
    int index;
    report rep;
} shared_arg;

/* One training step, forward then backward (which reads the forward's saved statistics, so both
 * go in one critical section), on batch b. */
static clbn_status shared_step(clbn_bn *bn, cl_mem x, cl_mem dy, cl_mem y, cl_mem dx, int b,
                               cl_command_queue q, cl_event *last) {
    const clbn_shape *s = &shared_shape;
    uint64_t off = (uint64_t)b * ref_elems(s);
    cl_event fwd = NULL, bwd = NULL;
    clbn_status st = clbn_bn_forward_train(bn, s, x, off, y, 0, NULL, q, last && *last ? 1 : 0,
                                           last && *last ? last : NULL, last ? &fwd : NULL);
    if (st == CLBN_SUCCESS)
        st = clbn_bn_backward(bn, s, x, off, NULL, 0, dy, off, dx, 0, NULL, q, last ? 1 : 0,
                              last ? &fwd : NULL, last ? &bwd : NULL);
    if (last) {
        if (fwd)
            clReleaseEvent(fwd);
        if (st == CLBN_SUCCESS) {
            if (*last)
                clReleaseEvent(*last);
            *last = bwd;
            /* Another queue will wait for this event: submit it (OpenCL requires a flush of
             * the queue an awaited event belongs to). */
            if (clFlush(q) != CL_SUCCESS)
                st = CLBN_ERROR_INTERNAL;
        }
    }
    return st;
}

static void *shared_worker(void *argp) {
    shared_arg *a = argp;
    shared_run *sr = a->run;
    report *r = &a->rep;
    const size_t E = ref_elems(&shared_shape);
    cl_context cc = NULL;
    cl_command_queue own = NULL; /* NULL: the context's queue */
    cl_mem y = NULL, dx = NULL;
    TH_OK(r, clbn_context_get_cl(sr->ctx, &cc, NULL));
    if (sr->own_queues) {
        clbn_device_info info;
        TH_OK(r, clbn_context_get_device_info(sr->ctx, &info));
        cl_int err = CL_SUCCESS;
        own = clCreateCommandQueue(cc, info.device, 0, &err);
        if (err != CL_SUCCESS)
            own = NULL;
        TH_CL(r, err);
    }
    y = w_buffer(r, cc, E); /* this thread's outputs; only the state object is shared */
    dx = w_buffer(r, cc, E);
out:
    pthread_barrier_wait(&sr->start);
    /* Turns in rotation, so every thread makes steps and the state object changes hands at
     * each one; the lock is held around each step's calls. A thread whose set-up failed still
     * takes its turns (without calls), so the others never wait for it forever. */
    for (;;) {
        pthread_mutex_lock(&sr->lock);
        while (sr->next < SHARED_BATCHES && sr->next % THREADS != a->index)
            pthread_cond_wait(&sr->turn, &sr->lock);
        int b = sr->next;
        if (b < SHARED_BATCHES) {
            sr->who[b] = a->index;
            if (!r->failed) {
                clbn_status st = shared_step(sr->bn, sr->x, sr->dy, y, dx, b, own,
                                             sr->own_queues ? &sr->last : NULL);
                if (st != CLBN_SUCCESS)
                    report_fail(r, "step %d failed: %s: %s", b, clbn_status_name(st),
                                clbn_last_error_message());
            }
            sr->next++;
            pthread_cond_broadcast(&sr->turn);
        }
        pthread_mutex_unlock(&sr->lock);
        if (b >= SHARED_BATCHES)
            break;
    }
    if (own) {
        clFinish(own);
        clReleaseCommandQueue(own);
    }
    release_mem(y); /* freed by OpenCL once the queued commands that use them are done */
    release_mem(dx);
    return NULL;
}

static void read_shared_result(clbn_bn *bn, float *out /* 4*C */, uint64_t *t) {
    const size_t C = (size_t)shared_shape.c;
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, out, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, out + C, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, out + 2 * C, C));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, out + 3 * C, C));
    TU_OK(clbn_bn_get_batches_tracked(bn, t));
}

static void shared_state_under_mutex(int own_queues) {
    clbn_context *ctx = make_context();
    const clbn_shape *s = &shared_shape;
    const size_t C = (size_t)s->c, E = ref_elems(s), m = ref_count(s);
    float *x = tu_floats(E * SHARED_BATCHES), *dy = tu_floats(E * SHARED_BATCHES);
    ref_rng g;
    ref_rng_seed(&g, own_queues ? 77 : 78);
    for (int b = 0; b < SHARED_BATCHES; b++) {
        fill_batch(&g, s, x + (size_t)b * E, 0.25 * b);
        for (size_t i = 0; i < E; i++)
            dy[(size_t)b * E + i] = (float)ref_normal(&g);
    }
    shared_run sr;
    memset(&sr, 0, sizeof sr);
    sr.ctx = ctx;
    sr.own_queues = own_queues;
    sr.x = tu_buffer_from(ctx, x, E * SHARED_BATCHES);
    sr.dy = tu_buffer_from(ctx, dy, E * SHARED_BATCHES);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.flags = SHARED_FLAGS;
    TU_OK(clbn_bn_create(ctx, &o, &sr.bn));
    assert_int_equal(pthread_mutex_init(&sr.lock, NULL), 0);
    assert_int_equal(pthread_cond_init(&sr.turn, NULL), 0);
    assert_int_equal(pthread_barrier_init(&sr.start, NULL, THREADS), 0);
    shared_arg args[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].run = &sr;
        args[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, shared_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    if (sr.last) {
        assert_int_equal(clWaitForEvents(1, &sr.last), CL_SUCCESS);
        clReleaseEvent(sr.last);
    }
    tu_finish(ctx);
    pthread_barrier_destroy(&sr.start);
    pthread_cond_destroy(&sr.turn);
    pthread_mutex_destroy(&sr.lock);
    for (int i = 0; i < THREADS; i++)
        if (args[i].rep.failed)
            fail_msg("thread %d: %s", i, args[i].rep.msg);
    assert_int_equal(sr.next, SHARED_BATCHES);

    float *got = tu_floats(4 * C), *want = tu_floats(4 * C);
    uint64_t t = 0, t_want = 0;
    read_shared_result(sr.bn, got, &t);
    assert_int_equal(t, SHARED_BATCHES);

    for (int b = 0; b < SHARED_BATCHES; b++)
        assert_int_equal(sr.who[b], b % THREADS);

    /* The same steps on one thread give the same bits: the callers' lock made the threads'
     * calls one sequence, and (own queues) the event chain kept it in order on the device. */
    clbn_bn *replay = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &replay));
    cl_mem y = tu_buffer(ctx, E), dx = tu_buffer(ctx, E);
    for (int b = 0; b < SHARED_BATCHES; b++)
        TU_OK(shared_step(replay, sr.x, sr.dy, y, dx, b, NULL, NULL));
    read_shared_result(replay, want, &t_want);
    assert_int_equal(t_want, SHARED_BATCHES);
    static const char *const names[4] = {"running mean", "running var", "dgamma", "dbeta"};
    for (size_t i = 0; i < 4 * C; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s[%zu]: %.9g from the threads, %.9g from the single-thread replay",
                     names[i / C], i % C, (double)got[i], (double)want[i]);

    /* And the cumulative average is the plain average of every batch's statistics (which the
     * order of the steps does not change but for rounding):
     * each step's rounding is within the per-step tolerance and is carried on with the weight
     * 1 - 1/(1+t) <= 1, so SHARED_BATCHES steps stay within that many times it. */
    double *rm = tu_doubles(C), *rv = tu_doubles(C), *mean = tu_doubles(C), *var = tu_doubles(C);
    double *xd = tu_doubles(E);
    for (size_t c = 0; c < C; c++)
        rm[c] = rv[c] = 0.0;
    for (int b = 0; b < SHARED_BATCHES; b++) {
        for (size_t i = 0; i < E; i++)
            xd[i] = x[(size_t)b * E + i];
        ref_batch_stats(s, xd, mean, var);
        for (size_t c = 0; c < C; c++) {
            rm[c] += mean[c] / SHARED_BATCHES;
            rv[c] += var[c] * (double)m / (double)(m - 1) / SHARED_BATCHES;
        }
    }
    ref_tolerance tm = ref_default_tolerances.running_mean, tv = ref_default_tolerances.running_var;
    tm.atol *= SHARED_BATCHES;
    tm.rtol *= SHARED_BATCHES;
    tv.atol *= SHARED_BATCHES;
    tv.rtol *= SHARED_BATCHES;
    tu_check_close("running mean", got, rm, C, tm.atol, tm.rtol);
    tu_check_close("running var", got + C, rv, C, tv.atol, tv.rtol);

    free(rm);
    free(rv);
    free(mean);
    free(var);
    free(xd);
    clReleaseMemObject(y);
    clReleaseMemObject(dx);
    clbn_bn_release(replay);
    free(got);
    free(want);
    clbn_bn_release(sr.bn);
    clReleaseMemObject(sr.x);
    clReleaseMemObject(sr.dy);
    free(x);
    free(dy);
    clbn_context_release(ctx);
}

static void shared_state_under_mutex_context_queue(void **state) {
    (void)state;
    shared_state_under_mutex(0);
}

static void shared_state_under_mutex_own_queues_event_chain(void **state) {
    (void)state;
    shared_state_under_mutex(1);
}

/* ---------------------------------------------------------------------------------------- */
/* (d) a context per thread, created at once on one empty cache folder                      */
/* ---------------------------------------------------------------------------------------- */

/* Two are enough to write one cache entry at once; each context compiles its own programs. */
#define CTX_THREADS 2

typedef struct ctx_arg {
    const char *dir;
    pthread_barrier_t *start;
    uint64_t seed;
    report rep;
} ctx_arg;

/* Contexts share nothing but the cache folder: the threads build the same variant at once and
 * write the same cache entry (a temporary file each, renamed into place). */
static void *ctx_worker(void *argp) {
    ctx_arg *a = argp;
    report *r = &a->rep;
    clbn_context *ctx = NULL;
    pthread_barrier_wait(a->start);
    TH_OK(r, context_in(a->dir, &ctx));
    ref_case k;
    memset(&k, 0, sizeof k);
    k.op = CLBN_OP_FORWARD_TRAIN;
    k.shape = own_specs[0].shape;
    k.flags = CLBN_BN_FLAGS_DEFAULT;
    k.seed = a->seed;
    ref_outcome oc;
    ref_run_case(ctx, &k, NULL, &oc);
    ref_outcome_free(&oc);
    if (oc.failed) {
        char name[160];
        ref_case_name(&k, name, sizeof name);
        report_fail(r, "%s: %s", name, oc.message);
    }
out:
    clbn_context_release(ctx);
    return NULL;
}

static void context_per_thread_created_at_once(void **state) {
    (void)state;
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/clbn-test-threads-ctx-XXXXXX");
    assert_non_null(mkdtemp(dir));
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, CTX_THREADS), 0);
    ctx_arg args[CTX_THREADS];
    pthread_t th[CTX_THREADS];
    for (int i = 0; i < CTX_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].dir = dir;
        args[i].start = &start;
        args[i].seed = 5000u + 10u * (uint64_t)i;
        assert_int_equal(pthread_create(&th[i], NULL, ctx_worker, &args[i]), 0);
    }
    for (int i = 0; i < CTX_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    size_t entries = dir_entries(dir, 0), tmp = dir_entries(dir, 1);
    remove_flat_dir(dir);
    for (int i = 0; i < CTX_THREADS; i++)
        if (args[i].rep.failed)
            fail_msg("thread %d: %s", i, args[i].rep.msg);
    assert_true(entries > 0);
    assert_int_equal(tmp, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* (c) the detail message is per thread                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct msg_run {
    clbn_context *ctx;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage; /* 0: start, 1: A failed, 2: B failed and succeeded, 3: A checked */
} msg_run;

typedef struct msg_arg {
    msg_run *run;
    report rep;
} msg_arg;

static void wait_stage(msg_run *mr, int stage) {
    pthread_mutex_lock(&mr->lock);
    while (mr->stage < stage)
        pthread_cond_wait(&mr->cond, &mr->lock);
    pthread_mutex_unlock(&mr->lock);
}

static void set_stage(msg_run *mr, int stage) {
    pthread_mutex_lock(&mr->lock);
    mr->stage = stage;
    pthread_cond_broadcast(&mr->cond);
    pthread_mutex_unlock(&mr->lock);
}

/* A fails, B then fails differently and succeeds (clearing its own message), A's message is
 * still A's. */
static void *msg_thread_a(void *argp) {
    msg_arg *a = argp;
    report *r = &a->rep;
    clbn_bn_options o;
    clbn_bn_options_init(&o); /* channels 0: refused */
    clbn_bn *bn = NULL;
    clbn_status st = clbn_bn_create(a->run->ctx, &o, &bn);
    char mine[512];
    snprintf(mine, sizeof mine, "%s", clbn_last_error_message());
    if (st != CLBN_ERROR_INVALID_SHAPE || !strstr(mine, "options.channels"))
        report_fail(r, "A: clbn_bn_create with 0 channels gave %s, \"%s\"", clbn_status_name(st),
                    mine);
    set_stage(a->run, 1);
    wait_stage(a->run, 2);
    if (strcmp(clbn_last_error_message(), mine) != 0)
        report_fail(r, "A's message changed while B failed and succeeded: \"%s\", was \"%s\"",
                    clbn_last_error_message(), mine);
    set_stage(a->run, 3);
    return NULL;
}

static void *msg_thread_b(void *argp) {
    msg_arg *a = argp;
    report *r = &a->rep;
    wait_stage(a->run, 1);
    if (clbn_last_error_message()[0] != '\0')
        report_fail(r, "B starts with A's message: \"%s\"", clbn_last_error_message());
    clbn_shape s = {CLBN_LAYOUT_NCHW, 2, 3, 4, 5};
    clbn_status st = clbn_bn_forward_train(NULL, &s, NULL, 0, NULL, 0, NULL, NULL, 0, NULL, NULL);
    if (st != CLBN_ERROR_NULL_ARGUMENT || !strstr(clbn_last_error_message(), "bn is NULL"))
        report_fail(r, "B: forward_train(NULL) gave %s, \"%s\"", clbn_status_name(st),
                    clbn_last_error_message());
    clbn_limits l;
    st = clbn_context_get_limits(a->run->ctx, &l);
    if (st != CLBN_SUCCESS || clbn_last_error_message()[0] != '\0')
        report_fail(r, "B: a successful call left \"%s\"", clbn_last_error_message());
    set_stage(a->run, 2);
    wait_stage(a->run, 3);
    return NULL;
}

static void error_message_per_thread(void **state) {
    (void)state;
    msg_run mr;
    memset(&mr, 0, sizeof mr);
    mr.ctx = make_context();
    assert_int_equal(pthread_mutex_init(&mr.lock, NULL), 0);
    assert_int_equal(pthread_cond_init(&mr.cond, NULL), 0);
    /* The main thread's own failure, which the others must not touch either. */
    assert_int_equal(clbn_context_get_limits(mr.ctx, NULL), CLBN_ERROR_NULL_ARGUMENT);
    char mine[512];
    snprintf(mine, sizeof mine, "%s", clbn_last_error_message());
    assert_non_null(strstr(mine, "limits"));
    msg_arg a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.run = b.run = &mr;
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, msg_thread_a, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, msg_thread_b, &b), 0);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    if (a.rep.failed)
        fail_msg("%s", a.rep.msg);
    if (b.rep.failed)
        fail_msg("%s", b.rep.msg);
    assert_string_equal(clbn_last_error_message(), mine);
    pthread_cond_destroy(&mr.cond);
    pthread_mutex_destroy(&mr.lock);
    clbn_context_release(mr.ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_state_per_thread_cold_shared_context),
        cmocka_unit_test(shared_state_under_mutex_context_queue),
        cmocka_unit_test(shared_state_under_mutex_own_queues_event_chain),
        cmocka_unit_test(context_per_thread_created_at_once),
        cmocka_unit_test(error_message_per_thread),
    };
    return cmocka_run_group_tests_name("threads", tests, group_setup, group_teardown);
}
