/* cmd_tune.c — `clbn tune`: measures candidate parameter sets (clbn_tuning) on the device at
 * hand, one field at a time from the defaults, checks the winner against the defaults and the
 * double-precision reference, and stores it in the cache folder for later contexts. */
#include "bench.h"
#include "check.h"
#include "profiles.h"
#include "reference.h"
#include "tools.h"

#include <clbn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TUNE_EXIT_IO 3
#define MAX_SHAPES 16
#define MAX_ROUNDS 20
#define MAX_RUNS 10000
#define WARMUP 2
#define CANDIDATES 4
/* A value replaces the one in force only when it is this much faster: the spread of the
 * medians between rounds is a few per cent, and the defaults are the better-tested set. */
#define MARGIN 0.02
#define PAIR_LIMIT 2.0 /* |tuned - default| <= PAIR_LIMIT * allowance, as `clbn validate` holds */

enum { OP_TRAIN, OP_INFER, OP_BACKWARD, OPS };
static const char *const op_names[OPS] = {"forward_train", "forward_infer", "backward"};

/* The fields tuned, per kind of device, in the order they are tuned, with their candidates. */
typedef struct tune_field {
    const char *name;
    size_t offset;
    uint32_t values[CANDIDATES];
} tune_field;

static const tune_field cpu_fields[] = {
    {"cpu_reduce_items_per_cu", offsetof(clbn_tuning, cpu_reduce_items_per_cu), {1, 2, 4, 8}},
    {"cpu_elementwise_items_per_cu",
     offsetof(clbn_tuning, cpu_elementwise_items_per_cu),
     {1, 2, 4, 8}},
};
static const tune_field gpu_fields[] = {
    {"gpu_work_group", offsetof(clbn_tuning, gpu_work_group), {64, 128, 256, 512}},
    {"gpu_groups_per_cu", offsetof(clbn_tuning, gpu_groups_per_cu), {2, 4, 8, 16}},
};

static uint32_t *field_at(clbn_tuning *t, const tune_field *f) {
    return (uint32_t *)(void *)((char *)t + f->offset);
}

/* The bench's shapes A and E: a ResNet-50 layer early (large H*W) and late (many channels). */
static const clbn_shape default_shapes[] = {{CLBN_LAYOUT_NCHW, 32, 64, 56, 56},
                                            {CLBN_LAYOUT_NCHW, 128, 2048, 7, 7}};
#define DEFAULT_SHAPES (sizeof default_shapes / sizeof default_shapes[0])

typedef struct tune_opts {
    const char *device;
    const bench_profile *profile; /* NULL: the device's own limits */
    clbn_shape shapes[MAX_SHAPES];
    size_t nshapes;
    int runs, rounds, dry_run;
} tune_opts;

static void usage(FILE *out) {
    fprintf(out,
            "usage: clbn tune [--device SEL] [--profile NAME] [--shape N,C,H,W | --shape N,C]...\n"
            "                 [--runs R] [--rounds Q] [--dry-run]\n"
            "  Measures candidate parameters on the device and stores the fastest set in the\n"
            "  cache folder ($CLBN_CACHE_DIR, else $XDG_CACHE_HOME/clbn, else ~/.cache/clbn),\n"
            "  keyed by platform, device, driver and the limits in force; later contexts with\n"
            "  the same key load it. From the defaults, one field at a time keeps its fastest\n"
            "  value (CPU: cpu_reduce_items_per_cu, then cpu_elementwise_items_per_cu, each of\n"
            "  1, 2, 4, 8; GPU: gpu_work_group 64-512, then gpu_groups_per_cu 2-16); a value\n"
            "  replaces the one in force only when it is %.0f%% faster. A candidate's score is\n"
            "  the sum over shapes, layouts (NCHW and NHWC; NC for N,C) and ops (forward_train,\n"
            "  forward_infer, backward) of the median of R runs after %d warm-up runs, in Q\n"
            "  rounds that measure every candidate once each (the median round counts). The\n"
            "  winner then runs against the defaults head to head, and its outputs are checked\n"
            "  against the defaults' and the double-precision reference: a set that fails is\n"
            "  never stored.\n"
            "  --device SEL    gpu, cpu, P:D or a name substring (default $CLBN_DEVICE, else\n"
            "                  the first GPU, else the first device)\n"
            "  --profile NAME  tune under a device profile's limits (%s); the set is stored\n"
            "                  for those limits only, and plans never exceed them\n"
            "  --shape S       N,C,H,W or N,C; repeatable (default 32,64,56,56 and\n"
            "                  128,2048,7,7)\n"
            "  --runs R        timed runs per op and round (default 10)\n"
            "  --rounds Q      rounds per field (default 3)\n"
            "  --dry-run       measure and print, store nothing\n"
            "  Exit status: 0, 2 bad options, 1 OpenCL failure or a wrong set, 3 the file not\n"
            "  written.\n",
            MARGIN * 100.0, WARMUP, bench_profile_names());
}

static int bad(const char *what, const char *value) {
    fprintf(stderr, "clbn tune: %s '%s' (clbn tune --help)\n", what, value ? value : "");
    return CLBN_EXIT_USAGE;
}

/* 0: go on; 1: --help was printed; 2: bad options (message printed). */
static int parse(int argc, char **argv, tune_opts *o) {
    memset(o, 0, sizeof *o);
    o->runs = 10;
    o->rounds = 3;
    for (int i = 1; i < argc; i++) { /* argv[0] is "tune" */
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1;
            continue;
        }
        if (strcmp(a, "--device") && strcmp(a, "--profile") && strcmp(a, "--shape") &&
            strcmp(a, "--runs") && strcmp(a, "--rounds"))
            return bad("unknown option", a);
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            return bad("missing the value of", a);
        if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--profile")) {
            o->profile = bench_profile_find(v);
            if (!o->profile)
                return bad("unknown --profile (see clbn tune --help):", v);
        } else if (!strcmp(a, "--shape")) {
            if (o->nshapes == MAX_SHAPES)
                return bad("too many shapes at", v);
            if (clbn_tool_parse_shape(v, &o->shapes[o->nshapes]))
                return bad("bad --shape (expected N,C,H,W or N,C of positive integers):", v);
            o->nshapes++;
        } else if (!strcmp(a, "--runs")) {
            if (clbn_tool_parse_int(v, 1, MAX_RUNS, &o->runs))
                return bad("bad --runs (expected 1 to 10000):", v);
        } else if (clbn_tool_parse_int(v, 1, MAX_ROUNDS, &o->rounds)) {
            return bad("bad --rounds (expected 1 to 20):", v);
        }
    }
    if (o->nshapes == 0) {
        memcpy(o->shapes, default_shapes, sizeof default_shapes);
        o->nshapes = DEFAULT_SHAPES;
    }
    return 0;
}

static const char *layout_name(clbn_layout l) {
    return l == CLBN_LAYOUT_NCHW ? "NCHW" : l == CLBN_LAYOUT_NHWC ? "NHWC" : "NC";
}

static void format_shape(const clbn_shape *s, char *buf, size_t size) {
    if (s->layout == CLBN_LAYOUT_NC)
        snprintf(buf, size, "%llu,%llu", (unsigned long long)s->n, (unsigned long long)s->c);
    else
        snprintf(buf, size, "%llu,%llu,%llu,%llu", (unsigned long long)s->n,
                 (unsigned long long)s->c, (unsigned long long)s->h, (unsigned long long)s->w);
}

static void print_set(const char *label, const clbn_tuning *t) {
    printf("%s: cpu_reduce_items_per_cu %u, cpu_elementwise_items_per_cu %u, gpu_work_group %u, "
           "gpu_groups_per_cu %u\n",
           label, t->cpu_reduce_items_per_cu, t->cpu_elementwise_items_per_cu, t->gpu_work_group,
           t->gpu_groups_per_cu);
}

/* ------------------------------------------------------------------------------------------
 * The workload: per shape four buffers, per (shape, layout) one state object, as each layer of
 * a network has its own.
 * ------------------------------------------------------------------------------------------ */
typedef struct workload {
    clbn_shape s; /* with its layout */
    size_t buf;   /* index of its shape's buffers */
    clbn_bn *bn;
} workload;

typedef struct tune_run {
    const tune_opts *o;
    clbn_context *ctx;
    cl_command_queue q;
    cl_mem (*mem)[4]; /* per shape: x, y, dy, dx */
    workload *w;
    size_t nw;
    double *times; /* o->runs of them */
} tune_run;

static void run_release(tune_run *r) {
    for (size_t i = 0; r->w && i < r->nw; i++)
        clbn_bn_release(r->w[i].bn);
    for (size_t i = 0; r->mem && i < r->o->nshapes; i++)
        for (int k = 0; k < 4; k++)
            if (r->mem[i][k])
                clReleaseMemObject(r->mem[i][k]);
    free(r->mem);
    free(r->w);
    free(r->times);
}

static int run_setup(tune_run *r, const tune_opts *o, clbn_context *ctx) {
    memset(r, 0, sizeof *r);
    r->o = o;
    r->ctx = ctx;
    r->mem = calloc(o->nshapes, sizeof *r->mem);
    r->w = calloc(2 * o->nshapes, sizeof *r->w);
    r->times = calloc((size_t)o->runs, sizeof *r->times);
    if (!r->mem || !r->w || !r->times) {
        fprintf(stderr, "clbn tune: out of host memory\n");
        return 1;
    }
    cl_context cc;
    clbn_context_get_cl(ctx, &cc, &r->q);
    for (size_t i = 0; i < o->nshapes; i++) {
        const clbn_shape *s = &o->shapes[i];
        const size_t E = ref_elems(s), bytes = E * sizeof(float);
        float *host = malloc(bytes);
        if (!host) {
            fprintf(stderr, "clbn tune: out of host memory\n");
            return 1;
        }
        /* x and dy: values in [-1, 3) and [-1, 1); y and dx are written before they are read. */
        uint64_t seed = 0x9E3779B97F4A7C15ull + i;
        cl_int err = CL_SUCCESS;
        for (int k = 0; k < 4 && err == CL_SUCCESS; k++) {
            const int input = k == 0 || k == 2;
            for (size_t e = 0; input && e < E; e++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                host[e] =
                    (float)((double)(seed >> 11) / 9007199254740992.0 * (k ? 2.0 : 4.0) - 1.0);
            }
            r->mem[i][k] =
                clCreateBuffer(cc, CL_MEM_READ_WRITE | (input ? CL_MEM_COPY_HOST_PTR : 0), bytes,
                               input ? host : NULL, &err);
        }
        free(host);
        if (err != CL_SUCCESS) {
            fprintf(stderr, "clbn tune: allocating 4 x %zu bytes on the device failed (%d)\n",
                    bytes, err);
            return 1;
        }
        static const clbn_layout four_d[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC};
        const size_t nl = s->layout == CLBN_LAYOUT_NC ? 1 : 2;
        for (size_t l = 0; l < nl; l++) {
            workload *w = &r->w[r->nw++];
            w->s = *s;
            if (s->layout != CLBN_LAYOUT_NC)
                w->s.layout = four_d[l];
            w->buf = i;
            clbn_bn_options bo;
            clbn_bn_options_init(&bo);
            bo.channels = s->c;
            clbn_status st = clbn_bn_create(ctx, &bo, &w->bn);
            if (st != CLBN_SUCCESS) {
                fprintf(stderr, "clbn tune: %s: %s\n", clbn_status_name(st),
                        clbn_last_error_message());
                return 1;
            }
        }
    }
    return 0;
}

/* One run of op on workload w, timed with clFinish on both sides; NAN on failure. */
static double time_op(tune_run *r, const workload *w, int op) {
    cl_mem *m = r->mem[w->buf];
    clFinish(r->q);
    double t0 = bench_now();
    clbn_status st;
    switch (op) {
    case OP_TRAIN:
        st = clbn_bn_forward_train(w->bn, &w->s, m[0], 0, m[1], 0, NULL, NULL, 0, NULL, NULL);
        break;
    case OP_INFER:
        st = clbn_bn_forward_infer(w->bn, &w->s, m[0], 0, m[1], 0, NULL, 0, NULL, NULL);
        break;
    default:
        st = clbn_bn_backward(w->bn, &w->s, m[0], 0, m[1], 0, m[2], 0, m[3], 0, NULL, NULL, 0, NULL,
                              NULL);
        break;
    }
    if (st == CLBN_SUCCESS)
        st = (clbn_status)clFinish(r->q);
    double dt = bench_now() - t0;
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn tune: %s %s failed: %s %s\n", layout_name(w->s.layout), op_names[op],
                clbn_status_name(st), clbn_last_error_message());
        return NAN;
    }
    return dt;
}

/* A set's score in seconds: the sum over workloads and ops of the median of the runs after the
 * warm-up; NAN on failure. */
static double score(tune_run *r, const clbn_tuning *t) {
    clbn_status st = clbn_context_set_tuning(r->ctx, t);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn tune: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return NAN;
    }
    double sum = 0.0;
    for (size_t i = 0; i < r->nw; i++)
        for (int op = 0; op < OPS; op++) {
            for (int k = -WARMUP; k < r->o->runs; k++) {
                double dt = time_op(r, &r->w[i], op);
                if (isnan(dt))
                    return NAN;
                if (k >= 0)
                    r->times[k] = dt;
            }
            sum += bench_median(r->times, (size_t)r->o->runs);
        }
    return sum;
}

/* Scores n sets in rounds, each round measuring every set once (drift in the machine's speed
 * hits them alike); out[i] is set i's median over the rounds. Nonzero on failure. */
static int score_sets(tune_run *r, const clbn_tuning *sets, size_t n, double *out) {
    double per[CANDIDATES][MAX_ROUNDS];
    for (int round = 0; round < r->o->rounds; round++)
        for (size_t i = 0; i < n; i++)
            if (isnan(per[i][round] = score(r, &sets[i])))
                return 1;
    for (size_t i = 0; i < n; i++)
        out[i] = bench_median(per[i], (size_t)r->o->rounds);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The check: the tuned set's outputs against the defaults' and the reference.
 * ------------------------------------------------------------------------------------------ */
/* Runs case k under set t on ctx; nonzero (message printed) when a call failed or an output is
 * off the reference. */
static int run_case_with(clbn_context *ctx, const clbn_tuning *t, const ref_case *k,
                         const char *which, ref_outcome *out) {
    char name[224];
    ref_case_name(k, name, sizeof name);
    clbn_status st = clbn_context_set_tuning(ctx, t);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn tune: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return 1;
    }
    ref_run_case(ctx, k, NULL, out);
    if (out->failed) {
        fprintf(stderr, "clbn tune: %s set: %s: %s\n", which, name, out->message);
        return 1;
    }
    if (!out->out || !out->allow) {
        fprintf(stderr, "clbn tune: %s set: %s: no outputs to compare\n", which, name);
        return 1;
    }
    return 0;
}

/* Holds the tuned set to the reference and to the defaults (|a - b| <= 2 x the allowance) on
 * the training forward and the backward of every layout of shape s. *worst_ref and *worst_pair
 * receive the largest ratios to the allowance. Nonzero when the set is wrong. */
static int check_set(clbn_context *ctx, const clbn_tuning *tuned, const clbn_shape *s,
                     double *worst_ref, double *worst_pair) {
    static const clbn_op ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_BACKWARD};
    const size_t nl = s->layout == CLBN_LAYOUT_NC ? 1 : 2;
    *worst_ref = *worst_pair = 0.0;
    for (size_t l = 0; l < nl; l++)
        for (size_t o = 0; o < 2; o++) {
            ref_case k;
            memset(&k, 0, sizeof k);
            k.op = ops[o];
            k.shape = *s;
            if (s->layout != CLBN_LAYOUT_NC)
                k.shape.layout = l ? CLBN_LAYOUT_NHWC : CLBN_LAYOUT_NCHW;
            k.flags = CLBN_BN_FLAGS_DEFAULT;
            k.seed = 0x7475e3ull + 2 * l + o;
            char name[224];
            ref_case_name(&k, name, sizeof name);
            ref_outcome a, b;
            memset(&a, 0, sizeof a);
            memset(&b, 0, sizeof b);
            int bad = run_case_with(ctx, tuned, &k, "the tuned", &a) ||
                      run_case_with(ctx, NULL, &k, "the default", &b);
            if (!bad && a.out_n != b.out_n) {
                fprintf(stderr, "clbn tune: %s: %zu outputs against the defaults' %zu\n", name,
                        a.out_n, b.out_n);
                bad = 1;
            }
            for (size_t i = 0; !bad && i < a.out_n; i++) {
                if (a.out[i] == b.out[i])
                    continue;
                double diff = fabs((double)a.out[i] - (double)b.out[i]);
                double ratio = a.allow[i] > 0.0 ? diff / a.allow[i] : INFINITY;
                if (!(ratio <= *worst_pair))
                    *worst_pair = ratio;
                if (!(diff <= PAIR_LIMIT * a.allow[i])) {
                    fprintf(stderr,
                            "clbn tune: %s: output %zu differs from the defaults' by %.3g x the "
                            "allowance (%.9g against %.9g)\n",
                            name, i, ratio, (double)a.out[i], (double)b.out[i]);
                    bad = 1;
                }
            }
            if (!bad && isfinite(a.worst) && a.worst > *worst_ref)
                *worst_ref = a.worst;
            ref_outcome_free(&a);
            ref_outcome_free(&b);
            if (bad)
                return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Entry
 * ------------------------------------------------------------------------------------------ */
/* Coordinate descent from the defaults: *best receives the winning set. Nonzero on failure. */
static int descend(tune_run *r, const tune_field *fields, size_t nfields, clbn_tuning *best) {
    printf("\n  %-30s %6s %12s\n", "field", "value", "score ms");
    for (size_t f = 0; f < nfields; f++) {
        const tune_field *fd = &fields[f];
        clbn_tuning sets[CANDIDATES];
        double sc[CANDIDATES];
        for (size_t c = 0; c < CANDIDATES; c++) {
            sets[c] = *best;
            *field_at(&sets[c], fd) = fd->values[c];
        }
        if (score_sets(r, sets, CANDIDATES, sc))
            return 1;
        /* the value in force is a candidate; another must beat it by the margin */
        size_t pick = CANDIDATES;
        for (size_t c = 0; c < CANDIDATES; c++)
            if (fd->values[c] == *field_at(best, fd))
                pick = c;
        for (size_t c = 0; c < CANDIDATES; c++)
            if (pick == CANDIDATES || sc[c] < sc[pick] * (1.0 - MARGIN))
                pick = c;
        for (size_t c = 0; c < CANDIDATES; c++)
            printf("  %-30s %6u %12.3f%s\n", c ? "" : fd->name, fd->values[c], sc[c] * 1e3,
                   c == pick ? "  *" : "");
        *field_at(best, fd) = fd->values[pick];
        fflush(stdout);
    }
    return 0;
}

int clbn_cmd_tune(int argc, char **argv) {
    tune_opts o;
    int p = parse(argc, argv, &o);
    if (p)
        return p == 1 ? CLBN_EXIT_OK : CLBN_EXIT_USAGE;
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = o.device;
    co.ignore_tuning = 1; /* measure from the defaults, whatever is stored */
    if (o.profile)
        co.limits = o.profile->limits;
    clbn_context *ctx = NULL;
    clbn_status st = clbn_context_create(&co, &ctx);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn tune: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return st == CLBN_ERROR_DEVICE_NOT_FOUND && o.device ? CLBN_EXIT_USAGE : CLBN_EXIT_FAILURE;
    }
    clbn_device_info info;
    clbn_limits lim;
    clbn_tuning defaults, best;
    clbn_context_get_device_info(ctx, &info);
    clbn_context_get_limits(ctx, &lim);
    clbn_context_get_tuning(ctx, &defaults, NULL);
    best = defaults;
    const int cpu = lim.device_type == CLBN_DEVICE_KIND_CPU;
    printf("device: %s (%s, driver %s)%s%s; planned as a %s: %u compute units, work-group <= "
           "%zu, local memory %llu B\n",
           info.device_name, info.platform_name, info.driver_version,
           o.profile ? " with the limits of profile " : "", o.profile ? o.profile->name : "",
           cpu ? "CPU" : "GPU", lim.compute_units, lim.max_work_group_size,
           (unsigned long long)lim.local_mem_size);
    print_set("defaults", &defaults);
    printf("shapes:");
    for (size_t i = 0; i < o.nshapes; i++) {
        char sh[96];
        format_shape(&o.shapes[i], sh, sizeof sh);
        printf(" %s (%s)", sh, o.shapes[i].layout == CLBN_LAYOUT_NC ? "NC" : "NCHW, NHWC");
    }
    printf("; score: sum of medians of %d runs after %d warm-up, median of %d rounds\n", o.runs,
           WARMUP, o.rounds);
    fflush(stdout);

    tune_run r;
    int rc = CLBN_EXIT_FAILURE;
    if (run_setup(&r, &o, ctx))
        goto done;
    if (descend(&r, cpu ? cpu_fields : gpu_fields, 2, &best))
        goto done;
    /* Head to head in the same rounds: the fields were measured at different times. */
    double head[2];
    const clbn_tuning pair[2] = {defaults, best};
    const int changed = memcmp(&best, &defaults, sizeof best) != 0;
    if (changed) {
        if (score_sets(&r, pair, 2, head))
            goto done;
        printf("\nhead to head: defaults %.3f ms, tuned %.3f ms (%+.1f%%)\n", head[0] * 1e3,
               head[1] * 1e3, 100.0 * (head[1] / head[0] - 1.0));
        if (!(head[1] < head[0] * (1.0 - MARGIN))) {
            printf("the tuned set is not %.0f%% faster than the defaults head to head: the "
                   "defaults win\n",
                   MARGIN * 100.0);
            best = defaults;
        }
    } else {
        printf("\nthe defaults are the fastest set measured\n");
    }

    /* The smallest shape: the check runs the double-precision reference on the host. */
    size_t small = 0;
    for (size_t i = 1; i < o.nshapes; i++)
        if (ref_elems(&o.shapes[i]) < ref_elems(&o.shapes[small]))
            small = i;
    double worst_ref, worst_pair;
    char sh[96];
    format_shape(&o.shapes[small], sh, sizeof sh);
    if (check_set(ctx, &best, &o.shapes[small], &worst_ref, &worst_pair)) {
        fprintf(stderr, "clbn tune: the tuned set gives wrong outputs on %s; nothing stored\n", sh);
        goto done;
    }
    printf("check on %s (forward_train, backward; every layout): worst %.3f of the allowance "
           "against the reference, %.3f against the defaults' outputs\n",
           sh, worst_ref, worst_pair);
    print_set("tuned", &best);
    if (o.dry_run) {
        printf("--dry-run: nothing stored\n");
        rc = CLBN_EXIT_OK;
        goto done;
    }
    char path[4096];
    if ((st = clbn_context_set_tuning(ctx, &best)) == CLBN_SUCCESS)
        st = clbn_context_save_tuning(ctx, path, sizeof path);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn tune: storing the set failed: %s: %s\n", clbn_status_name(st),
                clbn_last_error_message());
        rc = st == CLBN_ERROR_IO ? TUNE_EXIT_IO : CLBN_EXIT_FAILURE;
        goto done;
    }
    printf("stored in %s\n", path);
    rc = CLBN_EXIT_OK;
done:
    run_release(&r);
    clbn_context_release(ctx);
    return rc;
}
