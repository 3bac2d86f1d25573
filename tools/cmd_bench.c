/* cmd_bench.c — `clbn bench`: the measuring instrument. For each shape and layout it times
 * every op of clbn, a first-attempt baseline, oneDNN (in a child process) and several copies
 * that give the memory roofline, all in one run and interleaved so drift hits them alike, and
 * prints a table (and with --json one record per measurement). It never fails on time. */
#include "baseline.h"
#include "bench.h"
#include "flush.h"
#include "onednn.h"
#include "profiles.h"
#include "reference.h"
#include "roofline.h"
#include "tools.h"

#include <clbn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_EXIT_JSON 3
#define MAX_SHAPES 64
#define MAX_ROUNDS 100
#define MAX_RUNS 100000

enum { OP_TRAIN, OP_INFER, OP_BACKWARD, OPS };
static const char *const op_names[OPS] = {"forward_train", "forward_infer", "backward"};
static const clbn_op plan_ops[OPS] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                      CLBN_OP_BACKWARD};

/* The default set: ResNet-50 layers (A, B, E), a dense layer (C), a large image (D) and the
 * training demo's dense layer (F). */
static const struct {
    const char *name;
    clbn_shape shape;
} default_shapes[] = {
    {"A", {CLBN_LAYOUT_NCHW, 32, 64, 56, 56}},  {"B", {CLBN_LAYOUT_NCHW, 64, 256, 14, 14}},
    {"C", {CLBN_LAYOUT_NC, 256, 1024, 1, 1}},   {"D", {CLBN_LAYOUT_NCHW, 8, 32, 224, 224}},
    {"E", {CLBN_LAYOUT_NCHW, 128, 2048, 7, 7}}, {"F", {CLBN_LAYOUT_NC, 60, 100, 1, 1}},
};
#define DEFAULT_SHAPES (sizeof default_shapes / sizeof default_shapes[0])

typedef struct bench_opts {
    const char *device, *json;
    clbn_shape shapes[MAX_SHAPES];
    char names[MAX_SHAPES][8];
    size_t nshapes;
    int nchw, nhwc; /* layouts of 4-D shapes; 2-D shapes always run NC */
    int runs, warmup, rounds;
    int onednn, baseline;
    int cold;                     /* --cache cold: a flush before every timed call */
    const bench_profile *profile; /* NULL: the device's own limits */
    bench_flush *flush;           /* the device's flush (cold), set once the context is made */
    size_t flush_bytes;           /* its size */
    size_t host_flush_bytes;      /* the host flush's in oneDNN's child */
} bench_opts;

static void usage(FILE *out) {
    fprintf(out,
            "usage: clbn bench [--device SEL] [--shape N,C,H,W | --shape N,C]...\n"
            "                  [--layout nchw|nhwc|both] [--runs R] [--warmup K] [--rounds Q]\n"
            "                  [--profile NAME] [--json FILE] [--no-onednn] [--no-baseline]\n"
            "                  [--cache cold|warm]\n"
            "  Times forward_train, forward_infer and backward (fp32) per shape and layout: the\n"
            "  median of R runs after K warm-up runs, ops interleaved run by run, in Q rounds\n"
            "  (the figure is the median of the rounds' medians). In the same run, interleaved:\n"
            "  a first-attempt baseline (one 256-wide group per channel, then a 1-D kernel),\n"
            "  oneDNN in a child process (OMP_WAIT_POLICY=passive) when built in, and copies\n"
            "  of one tensor whose best is the memory roofline. Prints the worst error against\n"
            "  the double-precision reference and the start-up time (first and cached) too.\n"
            "  --device SEL    gpu, cpu, P:D or a name substring (default $CLBN_DEVICE, else\n"
            "                  the first GPU, else the first device)\n"
            "  --shape S       N,C,H,W or N,C (2-D: layout NC); repeatable; only these run.\n"
            "                  Default: A 32,64,56,56  B 64,256,14,14  C 256,1024\n"
            "                  D 8,32,224,224  E 128,2048,7,7  F 60,100\n"
            "  --layout L      layouts of 4-D shapes: nchw, nhwc or both (default both)\n"
            "  --runs R        timed runs per round (default 20)\n"
            "  --warmup K      untimed runs before them (default 3)\n"
            "  --rounds Q      rounds per shape (default 3)\n"
            "  --profile NAME  plan with a device profile's limits (%s)\n"
            "  --json FILE     also write one record per measurement to FILE\n"
            "  --no-onednn     leave oneDNN out%s\n"
            "  --no-baseline   leave the baseline out\n"
            "  --cache C       cold (default): before every timed call (clbn's, a copy's, the\n"
            "                  baseline's, oneDNN's) read a buffer of twice the cache (64 to\n"
            "                  256 MiB), so no call finds its tensors or the previous call's\n"
            "                  output in the cache; warm: no flush, each call meets what the\n"
            "                  one before it left (figures then depend on the order)\n"
            "  Bytes: ideal = read x + write y (forward) or read x, dy + write dx (backward);\n"
            "  min = the ideal when one normalization's data fits in local memory or the\n"
            "  cache, else one more read of x (training forward) or of x and dy (backward).\n"
            "  Exit status: 0, 2 bad options, 1 OpenCL failure, 3 the JSON file not written.\n",
            bench_profile_names(),
#ifdef CLBN_HAVE_DNNL
            ""
#else
            " (not built in: libdnnl-dev was absent)"
#endif
    );
}

static int bad(const char *what, const char *value) {
    fprintf(stderr, "clbn bench: %s '%s' (clbn bench --help)\n", what, value ? value : "");
    return CLBN_EXIT_USAGE;
}

/* 0: go on; 1: --help was printed; 2: bad options (message printed). */
static int parse(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->nchw = o->nhwc = 1;
    o->runs = 20;
    o->warmup = 3;
    o->rounds = 3;
    o->onednn = o->baseline = 1;
    o->cold = 1;
    for (int i = 1; i < argc; i++) { /* argv[0] is "bench" */
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--no-onednn")) {
            o->onednn = 0;
            continue;
        }
        if (!strcmp(a, "--no-baseline")) {
            o->baseline = 0;
            continue;
        }
        static const char *const with_value[] = {"--device",  "--shape",  "--layout",
                                                 "--runs",    "--warmup", "--rounds",
                                                 "--profile", "--json",   "--cache"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            known |= !strcmp(a, with_value[k]);
        if (!known)
            return bad("unknown option", a);
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            return bad("missing the value of", a);
        if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--shape")) {
            if (o->nshapes == MAX_SHAPES)
                return bad("too many shapes at", v);
            if (clbn_tool_parse_shape(v, &o->shapes[o->nshapes]))
                return bad("bad --shape (expected N,C,H,W or N,C of positive integers):", v);
            snprintf(o->names[o->nshapes], sizeof o->names[0], "%zu", o->nshapes + 1);
            o->nshapes++;
        } else if (!strcmp(a, "--layout")) {
            o->nchw = !strcmp(v, "nchw") || !strcmp(v, "both");
            o->nhwc = !strcmp(v, "nhwc") || !strcmp(v, "both");
            if (!o->nchw && !o->nhwc)
                return bad("bad --layout (expected nchw, nhwc or both):", v);
        } else if (!strcmp(a, "--runs")) {
            if (clbn_tool_parse_int(v, 1, MAX_RUNS, &o->runs))
                return bad("bad --runs (expected 1 to 100000):", v);
        } else if (!strcmp(a, "--warmup")) {
            if (clbn_tool_parse_int(v, 0, MAX_RUNS, &o->warmup))
                return bad("bad --warmup (expected 0 to 100000):", v);
        } else if (!strcmp(a, "--rounds")) {
            if (clbn_tool_parse_int(v, 1, MAX_ROUNDS, &o->rounds))
                return bad("bad --rounds (expected 1 to 100):", v);
        } else if (!strcmp(a, "--cache")) {
            o->cold = !strcmp(v, "cold");
            if (!o->cold && strcmp(v, "warm"))
                return bad("bad --cache (expected cold or warm):", v);
        } else if (!strcmp(a, "--profile")) {
            o->profile = bench_profile_find(v);
            if (!o->profile)
                return bad("unknown --profile (see clbn bench --help):", v);
        } else {
            o->json = v;
        }
    }
    if (o->nshapes == 0) {
        for (size_t i = 0; i < DEFAULT_SHAPES; i++) {
            o->shapes[i] = default_shapes[i].shape;
            snprintf(o->names[i], sizeof o->names[0], "%s", default_shapes[i].name);
        }
        o->nshapes = DEFAULT_SHAPES;
    }
    return 0;
}

static clbn_context *make_context(const bench_opts *o, const char *cache_dir) {
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = o->device;
    co.cache_dir = cache_dir;
    if (o->profile)
        co.limits = o->profile->limits;
    clbn_context *ctx = NULL;
    clbn_status st = clbn_context_create(&co, &ctx);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn bench: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return NULL;
    }
    return ctx;
}

/* Seconds from nothing to the first finished training forward: context, state, program
 * (built, or loaded from the cache in cache_dir), one call. */
static double start_seconds(const bench_opts *o, const char *cache_dir) {
    double t0 = bench_now();
    clbn_context *ctx = make_context(o, cache_dir);
    if (!ctx)
        return -1.0;
    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = 4;
    clbn_bn *bn = NULL;
    cl_context cc;
    cl_command_queue q;
    clbn_context_get_cl(ctx, &cc, &q);
    float host[4 * 64];
    for (int i = 0; i < 4 * 64; i++)
        host[i] = (float)(i % 7);
    cl_mem x =
        clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof host, host, NULL);
    clbn_shape s = {CLBN_LAYOUT_NCHW, 4, 4, 4, 4};
    double t = -1.0;
    if (clbn_bn_create(ctx, &bo, &bn) == CLBN_SUCCESS &&
        clbn_bn_forward_train(bn, &s, x, 0, x, 0, NULL, NULL, 0, NULL, NULL) == CLBN_SUCCESS &&
        clFinish(q) == CL_SUCCESS)
        t = bench_now() - t0;
    else
        fprintf(stderr, "clbn bench: start failed: %s\n", clbn_last_error_message());
    clReleaseMemObject(x);
    clbn_bn_release(bn);
    clbn_context_release(ctx);
    return t;
}

static void print_starts(const bench_opts *o) {
    char dir[] = "/tmp/clbn-bench-cache-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return;
    }
    double first = start_seconds(o, dir);
    double cached = start_seconds(o, dir);
    printf("start (context + program + first call): first %.3f s, cached %.3f s\n", first, cached);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "clbn bench: could not remove %s\n", dir);
}

/* ------------------------------------------------------------------------------------------
 * Byte counts
 * ------------------------------------------------------------------------------------------ */
static double ideal_bytes(const clbn_shape *s, int op) {
    return (op == OP_BACKWARD ? 3.0 : 2.0) * (double)ref_elems(s) * sizeof(float);
}

/* What one normalization must hold to be read once: per array reduced (x; x and dy), m floats
 * of its channel in NCHW, m 64-byte lines of up to 16 channels in NHWC and NC. */
static double resident_bytes(const clbn_shape *s, int op) {
    double m = (double)ref_count(s), c = s->c < 16 ? (double)s->c : 16.0;
    double per_array = m * sizeof(float) * (s->layout == CLBN_LAYOUT_NCHW ? 1.0 : c);
    return per_array * (op == OP_BACKWARD ? 2.0 : 1.0);
}

static double min_bytes(const clbn_shape *s, int op, const clbn_limits *lim) {
    double ideal = ideal_bytes(s, op), r = resident_bytes(s, op);
    if (op == OP_INFER || r <= (double)lim->local_mem_size || r <= (double)lim->cache_size)
        return ideal;
    return ideal + (op == OP_BACKWARD ? 2.0 : 1.0) * (double)ref_elems(s) * sizeof(float);
}

/* ------------------------------------------------------------------------------------------
 * Records: one per measurement, for the table and the JSON file.
 * ------------------------------------------------------------------------------------------ */
typedef struct record {
    int shape;       /* index into the options' shapes */
    clbn_shape s;    /* with the layout measured */
    int op;          /* OP_*, or OPS for a copy */
    char kind[48];   /* a copy's variant */
    double median_s; /* clbn's, or the copy's */
    double ideal, min, roofline_gbps;
    double baseline_s;  /* NAN: not measured */
    double onednn_s[2]; /* oneDNN's nchw (or nc) and nhwc layouts; NAN: not measured */
    clbn_plan plan;
    int cold; /* measured after a flush */
} record;

typedef struct record_list {
    record *v;
    size_t n, cap;
} record_list;

static record *record_add(record_list *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        record *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    record *r = &l->v[l->n++];
    memset(r, 0, sizeof *r);
    r->baseline_s = r->onednn_s[0] = r->onednn_s[1] = NAN;
    return r;
}

static const char *layout_name(clbn_layout l) {
    return l == CLBN_LAYOUT_NCHW ? "NCHW" : l == CLBN_LAYOUT_NHWC ? "NHWC" : "NC";
}

static double onednn_best(const record *r) {
    double a = r->onednn_s[0], b = r->onednn_s[1];
    return isnan(a) ? b : isnan(b) ? a : fmin(a, b);
}

/* ------------------------------------------------------------------------------------------
 * One shape: buffers, the error check, the rounds of measurements.
 * ------------------------------------------------------------------------------------------ */
typedef struct shape_bench {
    const bench_opts *o;
    clbn_context *ctx;
    cl_command_queue q;
    clbn_shape s[2]; /* the layouts measured */
    int nl;
    size_t E, C;
    cl_mem x, y, dy, dx;
    clbn_bn *bn[2]; /* one state object per layout, as each layer of a network has its own */
    bench_baseline base;
    bench_roofline roof;
    float *hx, *hy, *hdy, *hg, *hb, *hrm, *hrv;
    int have_base, have_roof;
    int cold; /* this shape is measured after a flush (see BENCH_COLD_MIN_BYTES) */
} shape_bench;

/* Shapes whose tensor is under 4 MiB stay warm even with --cache cold: in a network they live
 * in the cache, and what they measure is the fixed cost of a call, which a flush would turn
 * into the driver's own cold start. */
#define BENCH_COLD_MIN_BYTES ((size_t)4 << 20)

static int runs_cold(const clbn_shape *s) {
    return ref_elems(s) * sizeof(float) >= BENCH_COLD_MIN_BYTES;
}

static double max_abs_err(const float *got, const double *ref, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)got[i] - ref[i]));
    return worst;
}

static double read_err(shape_bench *b, cl_mem m, const double *ref) {
    if (clEnqueueReadBuffer(b->q, m, CL_TRUE, 0, b->E * sizeof(float), b->hy, 0, NULL, NULL))
        return NAN;
    return max_abs_err(b->hy, ref, b->E);
}

/* The worst errors of clbn (and the baseline) against the double-precision reference, one call
 * of each op. Nonzero on an OpenCL or clbn failure. */
static int check_layout(shape_bench *b, int l) {
    const clbn_shape *s = &b->s[l];
    clbn_bn *bn = b->bn[l];
    const size_t E = b->E, C = b->C;
    double *rx = malloc(E * 8), *ry = malloc(E * 8), *rdy = malloc(E * 8), *rdx = malloc(E * 8);
    double *v8 = malloc(C * 8 * 8), *rm = v8, *ri = v8 + C, *rv = v8 + 2 * C, *dg = v8 + 3 * C,
           *db = v8 + 4 * C, *rg = v8 + 5 * C, *rb = v8 + 6 * C, *rr = v8 + 7 * C;
    float *hf = malloc(C * 4 * 3), *hi = hf, *hdg = hf + C, *hdb = hf + 2 * C;
    int rc = 1;
    if (!rx || !ry || !rdy || !rdx || !v8 || !hf) {
        fprintf(stderr, "clbn bench: out of host memory\n");
        goto done;
    }
    for (size_t i = 0; i < E; i++) {
        rx[i] = b->hx[i];
        rdy[i] = b->hdy[i];
    }
    for (size_t c = 0; c < C; c++) {
        rg[c] = b->hg[c];
        rb[c] = b->hb[c];
    }
    clbn_bn_options bo;
    clbn_bn_get_options(bn, &bo);
    ref_params rp = {bo.eps, 1, 1, CLBN_ACTIVATION_NONE, rg, rb};
    clbn_status st = clbn_bn_forward_train(bn, s, b->x, 0, b->y, 0, NULL, NULL, 0, NULL, NULL);
    if (st != CLBN_SUCCESS)
        goto fail;
    ref_forward_train(s, &rp, rx, ry, rm, ri, rv);
    double e_y = read_err(b, b->y, ry), rel_var = 0.0;
    if ((st = clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, hi, C)) != CLBN_SUCCESS)
        goto fail;
    for (size_t c = 0; c < C; c++)
        rel_var = fmax(rel_var, fabs(1.0 / ((double)hi[c] * hi[c]) - bo.eps - rv[c]) / rv[c]);
    double be_y = NAN, be_yi = NAN, be_dx = NAN;
    if (b->have_base) {
        if (bench_baseline_enqueue(&b->base, BENCH_BASELINE_TRAIN, s, b->x, b->y, b->dy, b->dx))
            goto fail;
        be_y = read_err(b, b->y, ry);
    }
    st = clbn_bn_backward(bn, s, b->x, 0, b->y, 0, b->dy, 0, b->dx, 0, NULL, NULL, 0, NULL, NULL);
    if (st != CLBN_SUCCESS)
        goto fail;
    ref_backward(s, &rp, rx, ry, rdy, rm, ri, rdx, dg, db);
    double e_dx = read_err(b, b->dx, rdx);
    if ((st = clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, hdg, C)) != CLBN_SUCCESS ||
        (st = clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, hdb, C)) != CLBN_SUCCESS)
        goto fail;
    /* dgamma and dbeta are sums of m terms that largely cancel: their error is stated against
     * the largest of them, not per channel. */
    double top_g = 0.0, top_b = 0.0;
    for (size_t c = 0; c < C; c++) {
        top_g = fmax(top_g, fabs(dg[c]));
        top_b = fmax(top_b, fabs(db[c]));
    }
    double e_dg = max_abs_err(hdg, dg, C) / top_g, e_db = max_abs_err(hdb, db, C) / top_b;
    if (b->have_base) {
        if (bench_baseline_enqueue(&b->base, BENCH_BASELINE_BACKWARD, s, b->x, b->y, b->dy, b->dx))
            goto fail;
        be_dx = read_err(b, b->dx, rdx);
    }
    /* Inference with the running statistics the baseline holds too, so one reference serves. */
    if ((st = clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, b->hrm, C)) != CLBN_SUCCESS ||
        (st = clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, b->hrv, C)) != CLBN_SUCCESS ||
        (st = clbn_bn_forward_infer(bn, s, b->x, 0, b->y, 0, NULL, 0, NULL, NULL)) != CLBN_SUCCESS)
        goto fail;
    for (size_t c = 0; c < C; c++) {
        rm[c] = b->hrm[c];
        rr[c] = b->hrv[c];
    }
    ref_forward_infer(s, &rp, rx, rm, rr, ry);
    double e_yi = read_err(b, b->y, ry);
    if (b->have_base) {
        if (bench_baseline_enqueue(&b->base, BENCH_BASELINE_INFER, s, b->x, b->y, b->dy, b->dx))
            goto fail;
        be_yi = read_err(b, b->y, ry);
    }
    printf("%-4s worst error vs the double reference: train y %.2e, batch var %.2e relative, "
           "infer y %.2e, dx %.2e, dgamma %.2e and dbeta %.2e of the largest",
           layout_name(s->layout), e_y, rel_var, e_yi, e_dx, e_dg, e_db);
    if (b->have_base)
        printf("; baseline: train y %.2e, infer y %.2e, dx %.2e", be_y, be_yi, be_dx);
    printf("\n");
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "clbn bench: the check run failed: %s %s\n",
            st != CLBN_SUCCESS ? clbn_status_name(st) : "OpenCL", clbn_last_error_message());
done:
    free(rx);
    free(ry);
    free(rdy);
    free(rdx);
    free(v8);
    free(hf);
    return rc;
}

static void shape_release(shape_bench *b) {
    if (b->have_base)
        bench_baseline_release(&b->base);
    if (b->have_roof)
        bench_roofline_release(&b->roof);
    cl_mem m[] = {b->x, b->y, b->dy, b->dx};
    for (size_t i = 0; i < 4; i++)
        if (m[i])
            clReleaseMemObject(m[i]);
    clbn_bn_release(b->bn[0]);
    clbn_bn_release(b->bn[1]);
    void *h[] = {b->hx, b->hy, b->hdy, b->hg, b->hb, b->hrm, b->hrv};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        free(h[i]);
}

static int shape_setup(shape_bench *b, const bench_opts *o, clbn_context *ctx,
                       const clbn_shape *shape) {
    memset(b, 0, sizeof *b);
    b->o = o;
    b->ctx = ctx;
    if (shape->layout == CLBN_LAYOUT_NC) {
        b->s[b->nl++] = *shape;
    } else {
        if (o->nchw)
            b->s[b->nl++] = (clbn_shape){CLBN_LAYOUT_NCHW, shape->n, shape->c, shape->h, shape->w};
        if (o->nhwc)
            b->s[b->nl++] = (clbn_shape){CLBN_LAYOUT_NHWC, shape->n, shape->c, shape->h, shape->w};
    }
    b->E = ref_elems(&b->s[0]);
    b->cold = b->o->flush && runs_cold(&b->s[0]);
    b->C = (size_t)shape->c;
    const size_t E = b->E, C = b->C, bytes = E * sizeof(float);
    b->hx = malloc(bytes);
    b->hy = malloc(bytes);
    b->hdy = malloc(bytes);
    b->hg = malloc(C * 4);
    b->hb = malloc(C * 4);
    b->hrm = malloc(C * 4);
    b->hrv = malloc(C * 4);
    if (!b->hx || !b->hy || !b->hdy || !b->hg || !b->hb || !b->hrm || !b->hrv) {
        fprintf(stderr, "clbn bench: out of host memory\n");
        return 1;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < E; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b->hx[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 4.0 - 1.0);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b->hdy[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (size_t c = 0; c < C; c++) {
        b->hg[c] = 0.5f + (float)(c % 5) * 0.25f;
        b->hb[c] = (float)(c % 3) * 0.5f - 0.5f;
        b->hrm[c] = 0.25f * (float)(c % 4);
        b->hrv[c] = 1.0f + 0.5f * (float)(c % 3);
    }
    cl_context cc;
    clbn_context_get_cl(ctx, &cc, &b->q);
    cl_int err = CL_SUCCESS;
    const cl_mem_flags init = CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR;
    b->x = clCreateBuffer(cc, init, bytes, b->hx, &err);
    if (err == CL_SUCCESS)
        b->y = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        b->dy = clCreateBuffer(cc, init, bytes, b->hdy, &err);
    if (err == CL_SUCCESS)
        b->dx = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: allocating 4 x %zu bytes on the device failed (%d)\n", bytes,
                err);
        return 1;
    }
    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = C;
    clbn_status st = CLBN_SUCCESS;
    for (int l = 0; l < b->nl && st == CLBN_SUCCESS; l++) {
        st = clbn_bn_create(ctx, &bo, &b->bn[l]);
        if (st == CLBN_SUCCESS)
            st = clbn_bn_write_vector(b->bn[l], CLBN_VECTOR_GAMMA, b->hg, C);
        if (st == CLBN_SUCCESS)
            st = clbn_bn_write_vector(b->bn[l], CLBN_VECTOR_BETA, b->hb, C);
    }
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn bench: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return 1;
    }
    if (o->baseline) {
        if (bench_baseline_init(&b->base, ctx, C, bo.eps, b->hg, b->hb, b->hrm, b->hrv)) {
            fprintf(stderr, "clbn bench: building the baseline failed\n");
            return 1;
        }
        b->have_base = 1;
    }
    if (bench_roofline_init(&b->roof, ctx, b->x, b->y, E)) {
        fprintf(stderr, "clbn bench: setting up the roofline copies failed\n");
        return 1;
    }
    b->have_roof = 1;
    return 0;
}

static double median_of(const double *v, size_t n) {
    return bench_median(v, n);
}

/* One run of clbn op `op` on layout l, timed; NAN on failure (message printed). */
/* Before a timed call: the flush (cold), then an idle queue. Nonzero on a failure. */
static int settle(shape_bench *b) {
    cl_int err = b->cold ? bench_flush_run(b->o->flush) : CL_SUCCESS;
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: the cache flush failed (OpenCL error %d)\n", (int)err);
        return 1;
    }
    if ((err = clFinish(b->q)) != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: clFinish before a timed call failed (OpenCL error %d)\n",
                (int)err);
        return 1;
    }
    return 0;
}

static double time_clbn(shape_bench *b, int l, int op) {
    const clbn_shape *s = &b->s[l];
    clbn_bn *bn = b->bn[l];
    if (settle(b))
        return NAN;
    double t0 = bench_now();
    clbn_status st;
    switch (op) {
    case OP_TRAIN:
        st = clbn_bn_forward_train(bn, s, b->x, 0, b->y, 0, NULL, NULL, 0, NULL, NULL);
        break;
    case OP_INFER:
        st = clbn_bn_forward_infer(bn, s, b->x, 0, b->y, 0, NULL, 0, NULL, NULL);
        break;
    default:
        st = clbn_bn_backward(bn, s, b->x, 0, b->y, 0, b->dy, 0, b->dx, 0, NULL, NULL, 0, NULL,
                              NULL);
        break;
    }
    if (st == CLBN_SUCCESS)
        st = (clbn_status)clFinish(b->q);
    double dt = bench_now() - t0;
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn bench: %s failed: %s %s\n", op_names[op], clbn_status_name(st),
                clbn_last_error_message());
        return NAN;
    }
    return dt;
}

static double time_baseline(shape_bench *b, const clbn_shape *s, int op) {
    if (settle(b))
        return NAN;
    double t0 = bench_now();
    cl_int err =
        bench_baseline_enqueue(&b->base, (bench_baseline_op)op, s, b->x, b->y, b->dy, b->dx);
    if (err == CL_SUCCESS)
        err = clFinish(b->q);
    double dt = bench_now() - t0;
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: the baseline's %s failed (%d)\n", op_names[op], err);
        return NAN;
    }
    return dt;
}

static double time_copy(shape_bench *b, size_t v) {
    if (settle(b))
        return NAN;
    double t0 = bench_now();
    cl_int err = bench_roofline_run(&b->roof, v);
    double dt = bench_now() - t0;
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: copy '%s' failed (%d)\n", b->roof.v[v].name, err);
        return NAN;
    }
    return dt;
}

/* Per-round medians: [round][layout][op] for clbn and the baseline, [round][variant] for the
 * copies, [round][onednn layout][op] for oneDNN. */
typedef struct shape_times {
    double clbn[MAX_ROUNDS][2][OPS], base[MAX_ROUNDS][2][OPS];
    double roof[MAX_ROUNDS][BENCH_ROOF_MAX], dnnl[MAX_ROUNDS][2][OPS];
    int dnnl_ok[2];
} shape_times;

static double across_rounds(const double *first, size_t stride, int rounds) {
    double v[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        v[r] = first[(size_t)r * stride];
    return median_of(v, (size_t)rounds);
}

/* The rounds: in each, the clbn ops, the copies and the baseline ops interleaved run by run,
 * then oneDNN's children. Nonzero on a failure. */
static int measure(shape_bench *b, shape_times *t, int dnnl_layouts) {
    const bench_opts *o = b->o;
    const size_t R = (size_t)o->runs, nv = b->roof.count;
    /* Per-run times of one round: clbn [layout][op], baseline [layout][op], copies [variant]. */
    const size_t slots = 2 * 2 * OPS + BENCH_ROOF_MAX;
    double *run = calloc(slots * R, sizeof *run);
    if (!run)
        return 1;
#define CLBN_SLOT(l, op) ((size_t)(l)*OPS + (size_t)(op))
#define BASE_SLOT(l, op) (2 * OPS + (size_t)(l)*OPS + (size_t)(op))
#define ROOF_SLOT(v) (4 * OPS + (size_t)(v))
    t->dnnl_ok[0] = t->dnnl_ok[1] = dnnl_layouts > 0;
    if (dnnl_layouts < 2)
        t->dnnl_ok[1] = 0;
    for (int round = 0; round < o->rounds; round++) {
        for (int r = -o->warmup; r < o->runs; r++) {
            double dt;
            for (int l = 0; l < b->nl; l++)
                for (int op = 0; op < OPS; op++) {
                    if (isnan(dt = time_clbn(b, l, op)))
                        goto fail;
                    if (r >= 0)
                        run[CLBN_SLOT(l, op) * R + (size_t)r] = dt;
                }
            for (size_t v = 0; v < nv; v++) {
                if (isnan(dt = time_copy(b, v)))
                    goto fail;
                if (r >= 0)
                    run[ROOF_SLOT(v) * R + (size_t)r] = dt;
            }
            for (int l = 0; b->have_base && l < b->nl; l++)
                for (int op = 0; op < OPS; op++) {
                    if (isnan(dt = time_baseline(b, &b->s[l], op)))
                        goto fail;
                    if (r >= 0)
                        run[BASE_SLOT(l, op) * R + (size_t)r] = dt;
                }
        }
        for (int l = 0; l < b->nl; l++)
            for (int op = 0; op < OPS; op++) {
                t->clbn[round][l][op] = median_of(&run[CLBN_SLOT(l, op) * R], R);
                t->base[round][l][op] = median_of(&run[BASE_SLOT(l, op) * R], R);
            }
        for (size_t v = 0; v < nv; v++)
            t->roof[round][v] = median_of(&run[ROOF_SLOT(v) * R], R);
#ifdef CLBN_HAVE_DNNL
        for (int dl = 0; dl < dnnl_layouts; dl++) {
            if (!t->dnnl_ok[dl])
                continue;
            if (bench_onednn_spawn(&b->s[0], dl, o->runs, o->warmup,
                                   b->cold ? o->host_flush_bytes : 0, t->dnnl[round][dl])) {
                fprintf(stderr, "clbn bench: the oneDNN child failed; its figures are left out\n");
                t->dnnl_ok[dl] = 0;
            }
        }
#endif
    }
    free(run);
    return 0;
fail:
    free(run);
    return 1;
#undef CLBN_SLOT
#undef BASE_SLOT
#undef ROOF_SLOT
}

static void print_shape_header(const bench_opts *o, size_t i, const clbn_shape *s) {
    const double mb = (double)ref_elems(s) * sizeof(float) / 1e6;
    if (s->layout == CLBN_LAYOUT_NC)
        printf("\n== shape %s: %llu,%llu (NC, %.3f MB per tensor)\n", o->names[i],
               (unsigned long long)s->n, (unsigned long long)s->c, mb);
    else
        printf("\n== shape %s: %llu,%llu,%llu,%llu (%.1f MB per tensor)\n", o->names[i],
               (unsigned long long)s->n, (unsigned long long)s->c, (unsigned long long)s->h,
               (unsigned long long)s->w, mb);
}

/* A table cell: the figure, or "-" when it was not measured. */
static void cell(char out[16], const char *fmt, double v) {
    if (isfinite(v))
        snprintf(out, 16, fmt, v);
    else
        snprintf(out, 16, "-");
}

/* Runs one shape; appends its records. Nonzero on an OpenCL failure. */
static int bench_shape(const bench_opts *o, clbn_context *ctx, size_t si, const clbn_limits *lim,
                       record_list *out) {
    const clbn_shape *shape = &o->shapes[si];
    print_shape_header(o, si, shape);
    shape_bench b;
    memset(&b, 0, sizeof b);
    shape_times *t = calloc(1, sizeof *t);
    int rc = 1;
    if (!t || shape_setup(&b, o, ctx, shape))
        goto done;
    for (int l = 0; l < b.nl; l++)
        if (check_layout(&b, l))
            goto done;
    int dnnl_layouts = 0;
#ifdef CLBN_HAVE_DNNL
    if (o->onednn)
        dnnl_layouts = shape->layout == CLBN_LAYOUT_NC ? 1 : 2;
#endif
    if (measure(&b, t, dnnl_layouts))
        goto done;
    const int R = o->rounds;

    /* The copies: each one's GB/s, the best is the roofline. */
    const double copy_bytes = bench_roofline_bytes(&b.roof);
    double roof_gbps = 0.0;
    size_t best = 0;
    for (size_t v = 0; v < b.roof.count; v++) {
        double med = across_rounds(&t->roof[0][v], BENCH_ROOF_MAX, R);
        double gbps = copy_bytes / med / 1e9;
        printf("  copy %-30s %10.3f ms %8.1f GB/s\n", b.roof.v[v].name, med * 1e3, gbps);
        if (gbps > roof_gbps)
            roof_gbps = gbps, best = v;
        record *r = record_add(out);
        if (!r)
            goto done;
        r->shape = (int)si;
        r->cold = b.cold;
        r->s = b.s[0];
        r->op = OPS;
        snprintf(r->kind, sizeof r->kind, "%s", b.roof.v[v].name);
        r->median_s = med;
        r->ideal = r->min = copy_bytes;
    }
    printf("  roofline %.1f GB/s (%s)\n", roof_gbps, b.roof.v[best].name);
    for (size_t i = out->n - b.roof.count; i < out->n; i++)
        out->v[i].roofline_gbps = roof_gbps;

    double dnnl_ms[2][OPS];
    for (int dl = 0; dl < 2; dl++)
        for (int op = 0; op < OPS; op++)
            dnnl_ms[dl][op] =
                t->dnnl_ok[dl] ? across_rounds(&t->dnnl[0][dl][op], 2 * OPS, R) * 1e3 : NAN;
    if (t->dnnl_ok[0] || t->dnnl_ok[1]) {
        printf("  oneDNN ms (child process, OMP_WAIT_POLICY=passive):");
        const char *dn[2] = {shape->layout == CLBN_LAYOUT_NC ? "nc" : "nchw", "nhwc"};
        for (int dl = 0; dl < 2; dl++)
            if (t->dnnl_ok[dl])
                printf(" %s train %.3f infer %.3f backward %.3f;", dn[dl], dnnl_ms[dl][OP_TRAIN],
                       dnnl_ms[dl][OP_INFER], dnnl_ms[dl][OP_BACKWARD]);
        printf("\n");
    }
#ifndef CLBN_HAVE_DNNL
    printf("  oneDNN: not built in (libdnnl-dev was absent at build time)\n");
#endif

    /* "µs" is two bytes wide in UTF-8 for one column on screen: its field is one wider. */
    printf("  %-4s %-13s %-18s %4s %5s %2s %3s %10s %11s %7s %5s %6s %6s %10s %6s\n", "lay", "op",
           "plan", "wg", "split", "W", "cpi", "median ms", "\u00b5s", "GB/s", "roof", "ideal",
           "base x", "oneDNN ms", "dnnl x");
    for (int l = 0; l < b.nl; l++) {
        for (int op = 0; op < OPS; op++) {
            record *r = record_add(out);
            if (!r)
                goto done;
            r->shape = (int)si;
            r->cold = b.cold;
            r->s = b.s[l];
            r->op = op;
            r->median_s = across_rounds(&t->clbn[0][l][op], 2 * OPS, R);
            r->ideal = ideal_bytes(&b.s[l], op);
            r->min = min_bytes(&b.s[l], op, lim);
            r->roofline_gbps = roof_gbps;
            if (b.have_base)
                r->baseline_s = across_rounds(&t->base[0][l][op], 2 * OPS, R);
            r->onednn_s[0] = dnnl_ms[0][op] / 1e3;
            r->onednn_s[1] = dnnl_ms[1][op] / 1e3;
            clbn_bn_query_plan(b.bn[l], plan_ops[op], &b.s[l], &r->plan);
            const clbn_plan *p = &r->plan;
            double gbps = r->ideal / r->median_s / 1e9, dn = onednn_best(r);
            char base_x[16], dn_ms[16], dn_x[16];
            cell(base_x, "%.2f", r->baseline_s / r->median_s);
            cell(dn_ms, "%.3f", dn * 1e3);
            cell(dn_x, "%.2f", dn / r->median_s);
            printf("  %-4s %-13s %-18s %4zu %5llu %2u %3u %10.3f %10.1f %7.1f %4.0f%% %5.0f%% "
                   "%6s %10s %6s\n",
                   layout_name(b.s[l].layout), op_names[op], clbn_strategy_name(p->strategy),
                   p->work_group_size, (unsigned long long)p->split, p->vector_width,
                   p->channels_per_item, r->median_s * 1e3, r->median_s * 1e6, gbps,
                   100.0 * r->min / r->median_s / 1e9 / roof_gbps, 100.0 * gbps / roof_gbps, base_x,
                   dn_ms, dn_x);
        }
    }
    /* Small tensors are launch-bound: the figure that matters is the fixed cost of a call. */
    if (shape->layout == CLBN_LAYOUT_NC || ref_elems(shape) <= 1u << 18) {
        const record *tr = &out->v[out->n - (size_t)b.nl * OPS];
        printf("  launch-bound: one forward_train call (with clFinish) costs %.1f us",
               tr->median_s * 1e6);
        double dn = onednn_best(tr);
        if (!isnan(dn))
            printf(", oneDNN's %.1f us", dn * 1e6);
        printf("\n");
    }
    rc = 0;
done:
    shape_release(&b);
    free(t);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * JSON
 * ------------------------------------------------------------------------------------------ */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, double x) {
    if (isfinite(x))
        fprintf(f, "%.9g", x);
    else
        fputs("null", f);
}

static void json_field(FILE *f, const char *name, double x) {
    fprintf(f, ", \"%s\": ", name);
    json_number(f, x);
}

static void json_device(FILE *f, const clbn_device_info *info) {
    fprintf(f, "{\"name\": ");
    json_string(f, info->device_name);
    fprintf(f, ", \"platform\": ");
    json_string(f, info->platform_name);
    fprintf(f, ", \"driver\": ");
    json_string(f, info->driver_version);
    fputc('}', f);
}

static void json_record(FILE *f, const bench_opts *o, const record *r,
                        const clbn_device_info *info) {
    const clbn_shape *s = &r->s;
    const char *layout = s->layout == CLBN_LAYOUT_NCHW   ? "nchw"
                         : s->layout == CLBN_LAYOUT_NHWC ? "nhwc"
                                                         : "nc";
    fprintf(f, "    {\"shape_name\": ");
    json_string(f, o->names[r->shape]);
    fprintf(f, ", \"shape\": [%llu, %llu, %llu, %llu], \"layout\": \"%s\", \"op\": \"%s\"",
            (unsigned long long)s->n, (unsigned long long)s->c, (unsigned long long)s->h,
            (unsigned long long)s->w, r->op == OPS ? "any" : layout,
            r->op == OPS ? "copy" : op_names[r->op]);
    if (r->op == OPS) {
        fprintf(f, ", \"kind\": ");
        json_string(f, r->kind);
    }
    fprintf(f, ", \"dtype\": \"f32\"");
    fprintf(f, ", \"cache\": \"%s\"", r->cold ? "cold" : "warm");
    json_field(f, "median_s", r->median_s);
    json_field(f, "ideal_bytes", r->ideal);
    json_field(f, "min_bytes", r->min);
    json_field(f, "gbps", r->ideal / r->median_s / 1e9);
    json_field(f, "roofline_gbps", r->roofline_gbps);
    json_field(f, "roofline_fraction", r->min / r->median_s / 1e9 / r->roofline_gbps);
    json_field(f, "ideal_fraction", r->ideal / r->median_s / 1e9 / r->roofline_gbps);
    if (r->op != OPS) {
        if (!isnan(r->baseline_s)) {
            json_field(f, "baseline_s", r->baseline_s);
            json_field(f, "baseline_speedup", r->baseline_s / r->median_s);
        }
        double dn = onednn_best(r);
        if (!isnan(dn)) {
            fprintf(f, ", \"onednn_ms\": {");
            const char *dn_names[2] = {s->layout == CLBN_LAYOUT_NC ? "nc" : "nchw", "nhwc"};
            int first = 1;
            for (int dl = 0; dl < 2; dl++)
                if (!isnan(r->onednn_s[dl])) {
                    fprintf(f, "%s\"%s\": ", first ? "" : ", ", dn_names[dl]);
                    json_number(f, r->onednn_s[dl] * 1e3);
                    first = 0;
                }
            fputc('}', f);
            json_field(f, "onednn_speedup", dn / r->median_s);
        }
        const clbn_plan *p = &r->plan;
        fprintf(f, ",\n     \"plan\": {\"strategy\": ");
        json_string(f, clbn_strategy_name(p->strategy));
        fprintf(f,
                ", \"work_group_size\": %zu, \"split\": %llu, \"vector_width\": %u, "
                "\"channels_per_item\": %u, \"kernels\": %u, \"local_bytes\": %llu}",
                p->work_group_size, (unsigned long long)p->split, p->vector_width,
                p->channels_per_item, p->kernels, (unsigned long long)p->local_bytes);
    }
    fprintf(f, ",\n     \"device\": ");
    json_device(f, info);
    fputc('}', f);
}

static int json_write(FILE *f, const bench_opts *o, const record_list *l,
                      const clbn_device_info *info, const clbn_limits *lim,
                      const char *cache_source) {
    fprintf(f, "{\n  \"clbn_version\": ");
    json_string(f, clbn_version_string());
    fprintf(f, ",\n  \"device\": ");
    json_device(f, info);
    fprintf(f, ",\n  \"profile\": ");
    json_string(f, o->profile ? o->profile->name : "");
    fprintf(f,
            ",\n  \"cache_bytes\": %llu, \"cache_source\": ", (unsigned long long)lim->cache_size);
    json_string(f, cache_source);
    fprintf(f, ", \"local_mem_bytes\": %llu,\n  \"runs\": %d, \"warmup\": %d, \"rounds\": %d,",
            (unsigned long long)lim->local_mem_size, o->runs, o->warmup, o->rounds);
    fprintf(f, "\n  \"cache\": \"%s\", \"flush_bytes\": %zu,", o->flush ? "cold" : "warm",
            o->flush ? o->flush_bytes : (size_t)0);
    fprintf(f, "\n  \"onednn\": %s,\n  \"records\": [\n",
#ifdef CLBN_HAVE_DNNL
            o->onednn ? "true" : "false"
#else
            "false"
#endif
    );
    for (size_t i = 0; i < l->n; i++) {
        json_record(f, o, &l->v[i], info);
        fputs(i + 1 < l->n ? ",\n" : "\n", f);
    }
    fprintf(f, "  ]\n}\n");
    return fflush(f) == 0 && !ferror(f);
}

/* ------------------------------------------------------------------------------------------
 * Entry
 * ------------------------------------------------------------------------------------------ */
/* clbn bench --onednn-child SHAPE LAYOUT RUNS WARMUP FLUSH_MIB: prints three medians (see
 * onednn.h); FLUSH_MIB 0: no flush. */
static int onednn_child(int argc, char **argv) {
#ifdef CLBN_HAVE_DNNL
    clbn_shape s;
    int runs, warmup, flush_mib;
    if (argc != 7 || clbn_tool_parse_shape(argv[2], &s) ||
        clbn_tool_parse_int(argv[4], 1, MAX_RUNS, &runs) ||
        clbn_tool_parse_int(argv[5], 0, MAX_RUNS, &warmup) ||
        clbn_tool_parse_int(argv[6], 0, 4096, &flush_mib)) {
        fprintf(stderr, "clbn bench: bad %s arguments\n", BENCH_ONEDNN_CHILD_OPTION);
        return CLBN_EXIT_USAGE;
    }
    double med[OPS];
    if (bench_onednn_measure(&s, !strcmp(argv[3], "nhwc"), runs, warmup, (size_t)flush_mib << 20,
                             med))
        return CLBN_EXIT_FAILURE;
    printf("%.9e %.9e %.9e\n", med[0], med[1], med[2]);
    return CLBN_EXIT_OK;
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "clbn bench: oneDNN is not built in\n");
    return CLBN_EXIT_USAGE;
#endif
}

int clbn_cmd_bench(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], BENCH_ONEDNN_CHILD_OPTION))
        return onednn_child(argc, argv);
    bench_opts o;
    int p = parse(argc, argv, &o);
    if (p)
        return p == 1 ? CLBN_EXIT_OK : CLBN_EXIT_USAGE;
    /* Its temporary is created first, so an unwritable folder is known before minutes of
     * measuring; the file itself is replaced only once it is written in full. */
    clbn_tool_out json = {0};
    if (o.json && clbn_tool_out_open(&json, "clbn bench", o.json))
        return BENCH_EXIT_JSON;
    print_starts(&o);
    clbn_context *ctx = make_context(&o, NULL);
    if (!ctx) {
        clbn_tool_out_abort(&json);
        return CLBN_EXIT_FAILURE;
    }
    clbn_device_info info;
    clbn_context_get_device_info(ctx, &info);
    clbn_limits lim;
    clbn_context_get_limits(ctx, &lim);
    const char *cache_source = o.profile && o.profile->limits.cache_size ? "profile"
                               : info.global_mem_cache_size              ? "driver"
                               : info.host_llc_source[0]                 ? info.host_llc_source
                                                                         : "none";
    printf("device: %s (%s, driver %s)%s%s; %u compute units, work-group <= %zu, vector width "
           "%u\n",
           info.device_name, info.platform_name, info.driver_version,
           o.profile ? " with the limits of profile " : "", o.profile ? o.profile->name : "",
           lim.compute_units, lim.max_work_group_size, lim.vector_width);
    printf("min_bytes uses: cache %llu B (%.1f MiB, from %s), local memory %llu B (%.0f KiB)\n",
           (unsigned long long)lim.cache_size, (double)lim.cache_size / 1048576.0, cache_source,
           (unsigned long long)lim.local_mem_size, (double)lim.local_mem_size / 1024.0);
    /* The flush is sized from the device's own cache (a profile's figure plans, it does not
     * change the hardware), and set up only when some shape is large enough to be run cold. */
    int any_cold = 0;
    for (size_t i = 0; i < o.nshapes; i++)
        any_cold |= runs_cold(&o.shapes[i]);
    bench_flush flush;
    if (o.cold && any_cold) {
        const uint64_t cache =
            info.global_mem_cache_size ? info.global_mem_cache_size : info.host_llc_size;
        o.flush_bytes = bench_flush_bytes(cache, info.max_mem_alloc_size);
        o.host_flush_bytes = bench_flush_bytes(info.host_llc_size, 0);
        /* refused only when the device's largest buffer, not the 256 MiB ceiling, cut it
         * below the cache */
        if (o.flush_bytes < bench_flush_bytes(cache, 0) && o.flush_bytes < cache) {
            fprintf(stderr,
                    "clbn bench: the device's largest buffer (%llu B) is smaller than its cache "
                    "(%llu B), so no read of it flushes the cache; use --cache warm\n",
                    (unsigned long long)info.max_mem_alloc_size, (unsigned long long)cache);
            clbn_context_release(ctx);
            clbn_tool_out_abort(&json);
            return CLBN_EXIT_FAILURE;
        }
        if (bench_flush_init(&flush, ctx, o.flush_bytes)) {
            fprintf(stderr, "clbn bench: the cache flush (%zu MiB) could not be set up\n",
                    o.flush_bytes >> 20);
            bench_flush_release(&flush);
            clbn_context_release(ctx);
            clbn_tool_out_abort(&json);
            return CLBN_EXIT_FAILURE;
        }
        o.flush = &flush;
    }
    printf("timing: median of %d runs after %d warm-up, per round; median of %d rounds\n", o.runs,
           o.warmup, o.rounds);
    if (o.cold && o.flush)
        printf("cache: cold (%zu MiB read before every timed call, clbn's, the copies', the "
               "baseline's and oneDNN's; shapes under %zu MiB a tensor stay warm)\n",
               o.flush_bytes >> 20, BENCH_COLD_MIN_BYTES >> 20);
    else if (o.cold)
        printf("cache: cold asked, but every shape is under %zu MiB a tensor: warm (a call's "
               "fixed cost)\n",
               BENCH_COLD_MIN_BYTES >> 20);
    else
        printf("cache: warm (no flush: each call meets what the one before it left)\n");
    printf("columns: GB/s on ideal bytes; roof = min bytes / time / roofline; ideal = ideal bytes"
           " / time / roofline; base x = baseline time / clbn time; dnnl x = oneDNN's best layout"
           " time / clbn time (above 1: clbn faster)\n");
    record_list recs = {0};
    int rc = CLBN_EXIT_OK;
    for (size_t i = 0; i < o.nshapes && rc == CLBN_EXIT_OK; i++)
        if (bench_shape(&o, ctx, i, &lim, &recs))
            rc = CLBN_EXIT_FAILURE;
    if (json.f) {
        json_write(json.f, &o, &recs, &info, &lim, cache_source);
        if (clbn_tool_out_commit(&json) && rc == CLBN_EXIT_OK)
            rc = BENCH_EXIT_JSON;
    }
    free(recs.v);
    if (o.flush)
        bench_flush_release(o.flush);
    clbn_context_release(ctx);
    return rc;
}
