/* cmd_validate.c — `clbn validate`: runs a suite of checks (bench/check.h) on one or more devices
 * and device profiles, holds each result to the double-precision reference and every pair of
 * results to each other, runs simulators (Oclgrind) one check per child process and reads their
 * reports, and records or compares the results as JSON. Where a target's context loaded a tuned
 * parameter set (`clbn tune`), the defaults run beside it as a target of their own, so both sets
 * are held to the reference and to each other.
 *
 * JSON written by --json FILE (and read back by --compare), one object:
 *   {
 *     "clbn_version": "0.1.0",
 *     "kernel_hash": "16 hex digits",       clbn_kernel_source_hash()
 *     "suite": "quick" | "full",
 *     "devices": [                            one entry per (device, profile)
 *       {
 *         "platform": str, "device": str, "driver": str, "opencl_c": str,
 *         "simulator": bool,
 *         "profile": "native" | a bench/profiles.h name, either with "+default-tuning" when
 *                                             the entry is the defaults' run beside a target
 *                                             that loaded a tuned set,
 *         "tuning": {                         the parameter set that ran (clbn_tuning);
 *           "source": "default" | "file" | "set",   absent in records of older versions
 *           "cpu_reduce_items_per_cu": int, "cpu_elementwise_items_per_cu": int,
 *           "gpu_work_group": int, "gpu_groups_per_cu": int
 *         },
 *         "seconds": number,                  time spent in this entry's checks
 *         "skipped": integer,                 checks left out (a simulator runs only <= 1e5
 *                                             elements)
 *         "results": [
 *           {
 *             "check": str,                   ref_case_name()
 *             "pass": bool,
 *             "worst": number | null,         largest |got - ref| / allowance (null: not finite)
 *             "max_err": number | null,       the largest |got - ref| over the outputs
 *             "hash": "16 hex digits",        FNV-1a 64 of the output floats' bytes
 *             "plan": {"strategy": str, "work_group_size": int, "split": int,
 *                      "vector_width": int, "kernels": int, "channels_per_item": int,
 *                      "local_bytes": int, "groups": [int, int]},
 *             "message": str                  only when the check failed
 *           }, ...
 *         ]
 *       }, ...
 *     ],
 *     "pairs": {"worst_ratio": number | null,   largest |a - b| / allowance over all pairs
 *               "check": str,                   the check it was found on ("" when no pairs)
 *               "between": str},                the two "P:D device / profile" of that pair
 *     "failures": integer
 *   }
 */
#include "tools.h"

#include "bench.h"
#include "check.h"
#include "oclgrind_allow.h"
#include "profiles.h"
#include "reference.h"

#include <clbn.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SIM_MAX_ELEMS 100000u /* a simulator runs only checks of at most this many elements */
#define CHILD_TIMEOUT_S 900.0 /* a simulator child still running after this is killed */
#define PAIR_LIMIT 2.0        /* |a - b| <= PAIR_LIMIT * allowance between any two results */
#define NATIVE_PROFILE (-1)   /* target.profile: the device's own limits */
#define PROFILE_SLOTS 16      /* native plus the profile table, at most */
#define OUTFILE_MAGIC "CLBNVAL1"

/* ------------------------------------------------------------------------------------------
 * Small helpers: allocation that ends the tool on failure (a command-line tool has nothing
 * better to do), a growing string, FNV-1a.
 * ------------------------------------------------------------------------------------------ */
static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "clbn validate: out of host memory\n");
        exit(CLBN_EXIT_FAILURE);
    }
    return q;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "clbn validate: out of host memory\n");
        exit(CLBN_EXIT_FAILURE);
    }
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xrealloc(NULL, n);
    memcpy(p, s, n);
    return p;
}

typedef struct dstr {
    char *p;
    size_t n, cap;
} dstr;

static void ds_vprintf(dstr *d, const char *fmt, va_list ap) {
    va_list cp;
    va_copy(cp, ap);
    int len = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (len < 0)
        return;
    if (d->n + (size_t)len + 1 > d->cap) {
        d->cap = (d->n + (size_t)len + 1) * 2;
        d->p = xrealloc(d->p, d->cap);
    }
    vsnprintf(d->p + d->n, (size_t)len + 1, fmt, ap);
    d->n += (size_t)len;
}

static void ds_printf(dstr *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ds_vprintf(d, fmt, ap);
    va_end(ap);
}

static char *ds_take(dstr *d) {
    char *p = d->p ? d->p : xstrdup("");
    memset(d, 0, sizeof *d);
    return p;
}

#define FNV_INIT 0xcbf29ce484222325ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------------------------------------
 * The suites
 * ------------------------------------------------------------------------------------------ */
enum { SUITE_QUICK = 0, SUITE_FULL = 1 };

typedef struct vcheck {
    ref_case k;
    char name[224];
    size_t elems;
} vcheck;

typedef struct vsuite {
    vcheck *v;
    size_t n, cap;
} vsuite;

/* Adds a check; every tenth uses an offset. The seed is a hash of the name, so a check keeps its
 * data whatever else the suite holds (a record and a later run agree), and distinct checks get
 * distinct seeds. A name already present is not added twice. */
static void add_check(vsuite *s, clbn_op op, clbn_layout layout, uint64_t n, uint64_t c, uint64_t h,
                      uint64_t w, uint32_t flags, clbn_activation act) {
    vcheck v;
    memset(&v, 0, sizeof v);
    v.k.op = op;
    v.k.shape.layout = layout;
    v.k.shape.n = n;
    v.k.shape.c = c;
    v.k.shape.h = layout == CLBN_LAYOUT_NC ? 1 : h;
    v.k.shape.w = layout == CLBN_LAYOUT_NC ? 1 : w;
    v.k.flags = flags;
    v.k.activation = act;
    if (flags & CLBN_CUMULATIVE_AVERAGE)
        v.k.batches_tracked = 2;
    if (s->n % 10 == 9)
        v.k.offset = 1 + (s->n / 10) % 13;
    ref_case_name(&v.k, v.name, sizeof v.name);
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].name, v.name))
            return;
    v.k.seed = fnv1a(FNV_INIT, v.name, strlen(v.name));
    v.elems = ref_elems(&v.k.shape);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = v;
}

static int op_needs_tracking(clbn_op op) {
    return op == CLBN_OP_FORWARD_FROZEN || op == CLBN_OP_BACKWARD_FROZEN;
}

static void build_suite(int suite, vsuite *s) {
    static const clbn_op all_ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                      CLBN_OP_FORWARD_FROZEN, CLBN_OP_BACKWARD,
                                      CLBN_OP_BACKWARD_FROZEN};
    static const clbn_op main_ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                       CLBN_OP_BACKWARD};
    const uint32_t def = CLBN_BN_FLAGS_DEFAULT;
    memset(s, 0, sizeof *s);

    /* quick (a): every op, default options, on the regression shapes */
    static const uint64_t regression[][4] = {{4, 1, 5, 3},  {16, 24, 1, 1}, {1, 6, 7, 9},
                                             {3, 5, 7, 11}, {2, 20, 6, 6},  {3, 4, 13, 17}};
    for (size_t i = 0; i < sizeof regression / sizeof regression[0]; i++)
        for (int l = 0; l < 2; l++)
            for (size_t o = 0; o < 5; o++)
                add_check(s, all_ops[o], l ? CLBN_LAYOUT_NHWC : CLBN_LAYOUT_NCHW, regression[i][0],
                          regression[i][1], regression[i][2], regression[i][3], def,
                          CLBN_ACTIVATION_NONE);
    static const uint64_t nc_shapes[][2] = {{60, 100}, {7, 3}};
    for (size_t i = 0; i < 2; i++)
        for (size_t o = 0; o < 5; o++)
            add_check(s, all_ops[o], CLBN_LAYOUT_NC, nc_shapes[i][0], nc_shapes[i][1], 1, 1, def,
                      CLBN_ACTIVATION_NONE);

    /* quick (b): each option varied alone */
    static const struct {
        uint32_t flags;
        clbn_activation act;
    } variants[] = {
        {CLBN_BN_FLAGS_DEFAULT & ~CLBN_USE_SCALE, CLBN_ACTIVATION_NONE},
        {CLBN_BN_FLAGS_DEFAULT & ~CLBN_USE_SHIFT, CLBN_ACTIVATION_NONE},
        {CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_RELU},
        {CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID},
        {CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE, CLBN_ACTIVATION_NONE},
        {CLBN_BN_FLAGS_DEFAULT & ~CLBN_TRACK_RUNNING_STATS, CLBN_ACTIVATION_NONE},
    };
    static const struct {
        clbn_layout layout;
        uint64_t n, c, h, w;
    } variant_shapes[] = {{CLBN_LAYOUT_NCHW, 3, 5, 7, 11},
                          {CLBN_LAYOUT_NHWC, 3, 5, 7, 11},
                          {CLBN_LAYOUT_NC, 60, 100, 1, 1}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++)
        for (size_t sh = 0; sh < 3; sh++)
            for (size_t o = 0; o < 3; o++)
                add_check(s, main_ops[o], variant_shapes[sh].layout, variant_shapes[sh].n,
                          variant_shapes[sh].c, variant_shapes[sh].h, variant_shapes[sh].w,
                          variants[v].flags, variants[v].act);
    if (suite == SUITE_QUICK)
        return;

    /* full: the option cross-product on a small shape per layout */
    static const struct {
        clbn_layout layout;
        uint64_t n, c, h, w;
    } cross_shapes[] = {{CLBN_LAYOUT_NCHW, 2, 3, 4, 5},
                        {CLBN_LAYOUT_NHWC, 2, 3, 4, 5},
                        {CLBN_LAYOUT_NC, 6, 7, 1, 1}};
    for (size_t sh = 0; sh < 3; sh++)
        for (int scale = 1; scale >= 0; scale--)
            for (int shift = 1; shift >= 0; shift--)
                for (int mode = 0; mode < 3; mode++) /* exponential, cumulative, no tracking */
                    for (int act = 0; act < 3; act++)
                        for (size_t o = 0; o < 5; o++) {
                            uint32_t f = (scale ? CLBN_USE_SCALE : 0u) |
                                         (shift ? CLBN_USE_SHIFT : 0u) |
                                         (mode < 2 ? CLBN_TRACK_RUNNING_STATS : 0u) |
                                         (mode == 1 ? CLBN_CUMULATIVE_AVERAGE : 0u);
                            if (mode == 2 && op_needs_tracking(all_ops[o]))
                                continue;
                            add_check(s, all_ops[o], cross_shapes[sh].layout, cross_shapes[sh].n,
                                      cross_shapes[sh].c, cross_shapes[sh].h, cross_shapes[sh].w, f,
                                      (clbn_activation)act);
                        }

    /* real networks at batch 8: ResNet-50, then MobileNet */
    static const uint64_t nets[][4] = {
        {8, 64, 112, 112}, {8, 256, 56, 56}, {8, 512, 28, 28}, {8, 1024, 14, 14}, {8, 2048, 7, 7},
        {8, 32, 112, 112}, {8, 96, 56, 56},  {8, 144, 56, 56}, {8, 384, 14, 14},  {8, 960, 7, 7}};
    static const clbn_op train_ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_BACKWARD};
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++)
        for (int l = 0; l < 2; l++)
            for (size_t o = 0; o < 2; o++)
                add_check(s, train_ops[o], l ? CLBN_LAYOUT_NHWC : CLBN_LAYOUT_NCHW, nets[i][0],
                          nets[i][1], nets[i][2], nets[i][3], def, CLBN_ACTIVATION_NONE);

    /* a channel of more than 2^24 values: a float counter would be wrong */
    for (size_t o = 0; o < 2; o++)
        add_check(s, train_ops[o], CLBN_LAYOUT_NCHW, 1, 1, 4100, 4100, def, CLBN_ACTIVATION_NONE);
    /* N*C past 65,535: no grid dimension may grow with it */
    for (size_t o = 0; o < 5; o++)
        add_check(s, all_ops[o], CLBN_LAYOUT_NCHW, 256, 512, 1, 2, def, CLBN_ACTIVATION_NONE);
}

static int parse_suite(const char *s) {
    if (!strcmp(s, "quick"))
        return SUITE_QUICK;
    if (!strcmp(s, "full"))
        return SUITE_FULL;
    return -1;
}

static const char *suite_name(int suite) {
    return suite == SUITE_FULL ? "full" : "quick";
}

/* ------------------------------------------------------------------------------------------
 * Profiles: NATIVE_PROFILE or an index into bench_profiles.
 * ------------------------------------------------------------------------------------------ */
static const char *profile_name(int p) {
    return p == NATIVE_PROFILE ? "native" : bench_profiles[p].name;
}

static clbn_limits profile_limits(int p) {
    clbn_limits l;
    memset(&l, 0, sizeof l);
    if (p != NATIVE_PROFILE)
        l = bench_profiles[p].limits;
    return l;
}

/* -2: unknown */
static int find_profile(const char *name) {
    if (!strcmp(name, "native"))
        return NATIVE_PROFILE;
    for (size_t i = 0; i < bench_profile_count; i++)
        if (!strcmp(bench_profiles[i].name, name))
            return (int)i;
    return -2;
}

/* ------------------------------------------------------------------------------------------
 * Results, targets (a device under a profile) and the run's state
 * ------------------------------------------------------------------------------------------ */
typedef struct vresult {
    int ran, pass;
    double worst, max_err;
    uint64_t hash;
    clbn_plan plan;
    char *message; /* when failed */
} vresult;

typedef struct vdevice {
    clbn_device_info info;
    char sel[32]; /* "P:D" */
} vdevice;

/* The parameter set a context ran with. */
typedef struct vtuning {
    int known;  /* 0: no context was made */
    int source; /* CLBN_TUNING_* */
    clbn_tuning t;
} vtuning;

typedef struct target {
    size_t dev;
    int profile;
    int default_tuning; /* the defaults (ignore_tuning) beside a target that loaded a stored set */
    vtuning tuning;
    clbn_context *ctx; /* non-simulators */
    char *ctx_error;   /* why ctx is NULL */
    clbn_plan plan;    /* of NHWC 32x64x56x56's training forward */
    char *plan_error;
    size_t passed, failed, skipped;
    double worst, seconds;
    vresult *res; /* one per check */
} target;

/* One distinct Oclgrind report (normalized first line and kernel). */
typedef struct report_kind {
    char *kind, *kernel, *first_text, *first_where;
    const char *allowed; /* the allowlist's reason, or NULL */
    size_t count;
} report_kind;

/* One result of an earlier run (--compare). */
typedef struct old_result {
    char *device, *driver, *profile, *check, *plan_sig;
    char *tuning_sig; /* NULL: the record has no "tuning" (written before it existed) */
    size_t ordinal;   /* among the record's entries of the same device name and profile */
    uint64_t hash;
    double worst, max_err; /* NAN when recorded as null */
} old_result;

typedef struct vopts {
    const char **devices;
    size_t ndevices;
    int all;
    int suite;
    int profiles[PROFILE_SLOTS]; /* nonzero: selected; slot 0 native, i + 1 bench_profiles[i] */
    const char *json, *compare;
} vopts;

typedef struct vstate {
    vopts o;
    vsuite suite;
    vdevice *dev;
    size_t ndev;
    target *tg;
    size_t ntg;
    char tmpdir[64];
    char cachedir[96];
    size_t failures;
    /* pairs */
    size_t pairs_compared, pair_failures, pair_excluded;
    double pair_worst;
    size_t pair_worst_check;
    char *pair_worst_where;
    dstr pair_text;
    /* Oclgrind */
    report_kind *kinds;
    size_t nkinds;
    /* --compare */
    old_result *old;
    size_t nold;
    char old_kernel_hash[17];
} vstate;

/* The profile as records name it: "+default-tuning" marks the defaults' run beside a target
 * that loaded a tuned set, so --compare matches each with its own kind. */
static const char *target_profile(const target *t, char *buf, size_t size) {
    snprintf(buf, size, "%s%s", profile_name(t->profile),
             t->default_tuning ? "+default-tuning" : "");
    return buf;
}

static const char *target_label(const vstate *v, const target *t, char *buf, size_t size) {
    const vdevice *d = &v->dev[t->dev];
    char prof[64];
    snprintf(buf, size, "%s %s / %s", d->sel, d->info.device_name,
             target_profile(t, prof, sizeof prof));
    return buf;
}

static const char *tuning_source_name(int source) {
    return source == CLBN_TUNING_FILE ? "file" : source == CLBN_TUNING_SET ? "set" : "default";
}

static void get_tuning(const clbn_context *ctx, vtuning *tu) {
    memset(tu, 0, sizeof *tu);
    tu->known = ctx && clbn_context_get_tuning(ctx, &tu->t, &tu->source) == CLBN_SUCCESS;
}

/* "file: cpu_reduce_items_per_cu 4, ..." */
static void format_tuning(const vtuning *tu, char *buf, size_t size) {
    if (!tu->known)
        snprintf(buf, size, "unknown (no context)");
    else
        snprintf(buf, size,
                 "%s: cpu_reduce_items_per_cu %u, cpu_elementwise_items_per_cu %u, "
                 "gpu_work_group %u, gpu_groups_per_cu %u",
                 tuning_source_name(tu->source), tu->t.cpu_reduce_items_per_cu,
                 tu->t.cpu_elementwise_items_per_cu, tu->t.gpu_work_group, tu->t.gpu_groups_per_cu);
}

static const char *status_text(clbn_status st) {
    return clbn_status_name(st);
}

/* ------------------------------------------------------------------------------------------
 * Plans
 * ------------------------------------------------------------------------------------------ */
static clbn_status query_reference_plan(clbn_context *ctx, clbn_plan *plan, char *err,
                                        size_t errsz) {
    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = 64;
    clbn_bn *bn = NULL;
    clbn_shape s = {CLBN_LAYOUT_NHWC, 32, 64, 56, 56};
    memset(plan, 0, sizeof *plan);
    clbn_status st = clbn_bn_create(ctx, &bo, &bn);
    if (st == CLBN_SUCCESS)
        st = clbn_bn_query_plan(bn, CLBN_OP_FORWARD_TRAIN, &s, plan);
    if (st != CLBN_SUCCESS)
        snprintf(err, errsz, "plan query failed: %s: %s", status_text(st),
                 clbn_last_error_message());
    clbn_bn_release(bn);
    return st;
}

static void format_plan(const clbn_plan *p, char *buf, size_t size) {
    snprintf(buf, size, "%s wg %zu split %llu vec %u cpi %u local %llu B",
             clbn_strategy_name(p->strategy), p->work_group_size, (unsigned long long)p->split,
             p->vector_width, p->channels_per_item, (unsigned long long)p->local_bytes);
}

/* What --compare matches plans by: the fields the JSON records. */
static char *plan_signature(const char *strategy, unsigned long long wg, unsigned long long split,
                            unsigned long long vw, unsigned long long kernels,
                            unsigned long long cpi, unsigned long long local, unsigned long long g0,
                            unsigned long long g1) {
    dstr d = {0};
    ds_printf(&d,
              "%s wg %llu split %llu vec %llu kernels %llu cpi %llu local %llu groups %llux%llu",
              strategy, wg, split, vw, kernels, cpi, local, g0, g1);
    return ds_take(&d);
}

/* What --compare matches parameter sets by: the values, whatever their source. */
static char *tuning_signature(unsigned long long reduce, unsigned long long elementwise,
                              unsigned long long work_group, unsigned long long groups) {
    dstr d = {0};
    ds_printf(&d, "cpu %llu/%llu gpu %llu/%llu", reduce, elementwise, work_group, groups);
    return ds_take(&d);
}

static char *plan_signature_of(const clbn_plan *p) {
    return plan_signature(clbn_strategy_name(p->strategy), p->work_group_size,
                          (unsigned long long)p->split, p->vector_width, p->kernels,
                          p->channels_per_item, (unsigned long long)p->local_bytes,
                          (unsigned long long)p->groups[0], (unsigned long long)p->groups[1]);
}

/* ------------------------------------------------------------------------------------------
 * The child's outcome file: magic, failed, status, message, plan, worst, out, allow, end mark.
 * Host byte order: the parent reads it on the same machine.
 * ------------------------------------------------------------------------------------------ */
static int put(FILE *f, const void *p, size_t n) {
    return fwrite(p, 1, n, f) == n;
}

static int put_u64(FILE *f, uint64_t v) {
    return put(f, &v, sizeof v);
}

static int write_outcome_file(const char *path, const ref_outcome *o, const vtuning *tu) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    uint64_t msglen = strnlen(o->message, sizeof o->message);
    const clbn_plan *p = &o->plan;
    double worst = o->worst, max_err = o->max_err;
    int ok = put(f, OUTFILE_MAGIC, 8) && put_u64(f, (uint64_t)o->failed) &&
             put_u64(f, (uint64_t)(int64_t)o->status) && put_u64(f, msglen) &&
             put(f, o->message, msglen) && put_u64(f, (uint64_t)p->strategy) &&
             put_u64(f, p->work_group_size) && put_u64(f, p->split) &&
             put_u64(f, p->vector_width) && put_u64(f, p->kernels) &&
             put_u64(f, p->scratch_bytes) && put_u64(f, p->channels_per_item) &&
             put_u64(f, p->local_bytes) && put_u64(f, p->private_bytes) &&
             put_u64(f, p->groups[0]) && put_u64(f, p->groups[1]) && put(f, &worst, sizeof worst) &&
             put(f, &max_err, sizeof max_err) && put_u64(f, (uint64_t)tu->known) &&
             put_u64(f, (uint64_t)tu->source) && put_u64(f, tu->t.cpu_reduce_items_per_cu) &&
             put_u64(f, tu->t.cpu_elementwise_items_per_cu) && put_u64(f, tu->t.gpu_work_group) &&
             put_u64(f, tu->t.gpu_groups_per_cu);
    uint64_t n = (o->out && o->allow) ? o->out_n : 0;
    ok = ok && put_u64(f, n);
    if (n)
        ok = ok && put(f, o->out, n * sizeof *o->out) && put(f, o->allow, n * sizeof *o->allow);
    ok = ok && put(f, "END1", 4);
    if (fclose(f) != 0)
        ok = 0;
    return ok;
}

typedef struct reader {
    const unsigned char *p;
    size_t n, at;
    int bad;
} reader;

static void get(reader *r, void *dst, size_t n) {
    if (r->bad || r->n - r->at < n) {
        r->bad = 1;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

static uint64_t get_u64(reader *r) {
    uint64_t v;
    get(r, &v, sizeof v);
    return v;
}

static int read_whole_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    *data = NULL;
    *len = 0;
    if (!f)
        return 0;
    size_t cap = 1 << 16, n = 0;
    char *buf = xrealloc(NULL, cap + 1);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            if (ferror(f)) {
                fclose(f);
                free(buf);
                return 0;
            }
            break;
        }
        cap *= 2;
        buf = xrealloc(buf, cap + 1);
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 1;
}

/* 1 when the file was read whole; o owns out and allow then. */
static int read_outcome_file(const char *path, ref_outcome *o, vtuning *tu, char *why,
                             size_t whysz) {
    memset(o, 0, sizeof *o);
    memset(tu, 0, sizeof *tu);
    char *data = NULL;
    size_t len = 0;
    if (!read_whole_file(path, &data, &len)) {
        snprintf(why, whysz, "cannot read the child's outcome file: %s", strerror(errno));
        return 0;
    }
    reader r = {(const unsigned char *)data, len, 0, 0};
    char magic[8];
    get(&r, magic, 8);
    if (r.bad || memcmp(magic, OUTFILE_MAGIC, 8)) {
        free(data);
        snprintf(why, whysz, "the child's outcome file is not one (%zu bytes)", len);
        return 0;
    }
    o->failed = (int)get_u64(&r);
    o->status = (clbn_status)(int64_t)get_u64(&r);
    uint64_t msglen = get_u64(&r);
    if (msglen >= sizeof o->message)
        r.bad = 1;
    else
        get(&r, o->message, (size_t)msglen);
    clbn_plan *p = &o->plan;
    p->strategy = (clbn_strategy)get_u64(&r);
    p->work_group_size = (size_t)get_u64(&r);
    p->split = get_u64(&r);
    p->vector_width = (uint32_t)get_u64(&r);
    p->kernels = (uint32_t)get_u64(&r);
    p->scratch_bytes = get_u64(&r);
    p->channels_per_item = (uint32_t)get_u64(&r);
    p->local_bytes = get_u64(&r);
    p->private_bytes = get_u64(&r);
    p->groups[0] = get_u64(&r);
    p->groups[1] = get_u64(&r);
    get(&r, &o->worst, sizeof o->worst);
    get(&r, &o->max_err, sizeof o->max_err);
    tu->known = (int)get_u64(&r);
    tu->source = (int)get_u64(&r);
    tu->t.cpu_reduce_items_per_cu = (uint32_t)get_u64(&r);
    tu->t.cpu_elementwise_items_per_cu = (uint32_t)get_u64(&r);
    tu->t.gpu_work_group = (uint32_t)get_u64(&r);
    tu->t.gpu_groups_per_cu = (uint32_t)get_u64(&r);
    uint64_t n = get_u64(&r);
    if (!r.bad && n <= (len - r.at) / (sizeof(float) + sizeof(double))) {
        o->out_n = (size_t)n;
        o->out = xcalloc(o->out_n, sizeof *o->out);
        o->allow = xcalloc(o->out_n, sizeof *o->allow);
        get(&r, o->out, o->out_n * sizeof *o->out);
        get(&r, o->allow, o->out_n * sizeof *o->allow);
    } else {
        r.bad = 1;
    }
    char end[4];
    get(&r, end, 4);
    free(data);
    if (r.bad || memcmp(end, "END1", 4) || r.at != len) {
        ref_outcome_free(o);
        snprintf(why, whysz, "the child's outcome file is truncated or malformed (%zu bytes)", len);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * The child: `clbn validate --child P:D PROFILE CASE SUITE OUTFILE` runs one check (CASE an
 * index into the suite) or the plan query (CASE "plan") and writes the outcome file. It exits 0
 * once the file is written, whatever the check gave.
 * ------------------------------------------------------------------------------------------ */
static int child_main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "clbn validate --child: expected P:D PROFILE CASE SUITE OUTFILE\n");
        return CLBN_EXIT_USAGE;
    }
    const char *sel = argv[2], *outfile = argv[6];
    int profile = find_profile(argv[3]), suite = parse_suite(argv[5]);
    if (profile == -2 || suite < 0) {
        fprintf(stderr, "clbn validate --child: bad profile or suite\n");
        return CLBN_EXIT_USAGE;
    }
    vsuite s;
    build_suite(suite, &s);
    int plan_only = !strcmp(argv[4], "plan");
    char *end = NULL;
    unsigned long long idx = plan_only ? 0 : strtoull(argv[4], &end, 10);
    if (!plan_only && (!*argv[4] || *end || idx >= s.n)) {
        fprintf(stderr, "clbn validate --child: bad case index '%s'\n", argv[4]);
        free(s.v);
        return CLBN_EXIT_USAGE;
    }
    ref_outcome o;
    memset(&o, 0, sizeof o);
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = sel;
    co.limits = profile_limits(profile);
    clbn_context *ctx = NULL;
    clbn_status st = clbn_context_create(&co, &ctx);
    vtuning tu;
    get_tuning(st == CLBN_SUCCESS ? ctx : NULL, &tu);
    if (st != CLBN_SUCCESS) {
        o.failed = 1;
        o.status = st;
        snprintf(o.message, sizeof o.message, "clbn_context_create(%s, profile %s) failed: %s: %s",
                 sel, profile_name(profile), status_text(st), clbn_last_error_message());
    } else if (plan_only) {
        st = query_reference_plan(ctx, &o.plan, o.message, sizeof o.message);
        if (st != CLBN_SUCCESS) {
            o.failed = 1;
            o.status = st;
        }
    } else {
        ref_run_case(ctx, &s.v[idx].k, NULL, &o);
    }
    clbn_context_release(ctx);
    int written = write_outcome_file(outfile, &o, &tu);
    ref_outcome_free(&o);
    free(s.v);
    if (!written) {
        fprintf(stderr, "clbn validate --child: cannot write %s: %s\n", outfile, strerror(errno));
        return CLBN_EXIT_FAILURE;
    }
    return CLBN_EXIT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Running a child on a simulator
 * ------------------------------------------------------------------------------------------ */
static int env_is(const char *entry, const char *name) {
    size_t n = strlen(name);
    return !strncmp(entry, name, n) && entry[n] == '=';
}

/* The parent's environment with Oclgrind's settings for the profile and the run's program cache
 * (a fresh one: binaries built with -cl-opt-disable only). */
static char **child_environment(const vstate *v, int profile, const char *logfile) {
    static const char *const ours[] = {"OCLGRIND_MAX_WGSIZE",    "OCLGRIND_LOCAL_MEM_SIZE",
                                       "OCLGRIND_DATA_RACES",    "OCLGRIND_UNINITIALIZED",
                                       "OCLGRIND_BUILD_OPTIONS", "OCLGRIND_LOG",
                                       "CLBN_CACHE_DIR"};
    const clbn_limits lim = profile_limits(profile);
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = xcalloc(n + 8, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        for (size_t j = 0; j < sizeof ours / sizeof ours[0]; j++) {
            /* a limit the profile leaves at the device's own keeps what the caller set */
            if ((j == 0 && !lim.max_work_group_size) || (j == 1 && !lim.local_mem_size))
                continue;
            replaced |= env_is(environ[i], ours[j]);
        }
        if (!replaced)
            env[k++] = xstrdup(environ[i]);
    }
    dstr d = {0};
    if (lim.max_work_group_size) {
        ds_printf(&d, "OCLGRIND_MAX_WGSIZE=%zu", lim.max_work_group_size);
        env[k++] = ds_take(&d);
    }
    if (lim.local_mem_size) {
        ds_printf(&d, "OCLGRIND_LOCAL_MEM_SIZE=%llu", (unsigned long long)lim.local_mem_size);
        env[k++] = ds_take(&d);
    }
    env[k++] = xstrdup("OCLGRIND_DATA_RACES=1");
    env[k++] = xstrdup("OCLGRIND_UNINITIALIZED=1");
    env[k++] = xstrdup("OCLGRIND_BUILD_OPTIONS=-cl-opt-disable");
    ds_printf(&d, "OCLGRIND_LOG=%s", logfile);
    env[k++] = ds_take(&d);
    ds_printf(&d, "CLBN_CACHE_DIR=%s", v->cachedir);
    env[k++] = ds_take(&d);
    env[k] = NULL;
    return env;
}

static void free_environment(char **env) {
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* The last nonempty line of a file, for a child's dying words. */
static void last_line(const char *path, char *buf, size_t size) {
    char *data = NULL;
    size_t len = 0;
    buf[0] = '\0';
    if (!read_whole_file(path, &data, &len))
        return;
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
        data[--len] = '\0';
    char *start = strrchr(data, '\n');
    snprintf(buf, size, "%s", start ? start + 1 : data);
    free(data);
}

/* A simulator child in flight: one check (or the plan query) on one target. */
typedef struct job {
    int active, killed;
    pid_t pid;
    size_t target;
    double t0;
    char which[24];
    char outfile[128], logfile[128], txtfile[128];
    vtuning tuning; /* the child's context's, once it ended */
} job;

/* Starts the child; 0 with why set when it could not be started. */
static int start_job(const vstate *v, job *j, size_t ti, const char *which, char *why,
                     size_t whysz) {
    const target *t = &v->tg[ti];
    memset(j, 0, sizeof *j);
    snprintf(j->which, sizeof j->which, "%s", which);
    snprintf(j->outfile, sizeof j->outfile, "%s/outcome-%zu.bin", v->tmpdir, ti);
    snprintf(j->logfile, sizeof j->logfile, "%s/oclgrind-%zu.log", v->tmpdir, ti);
    snprintf(j->txtfile, sizeof j->txtfile, "%s/child-%zu.txt", v->tmpdir, ti);
    unlink(j->outfile);
    unlink(j->logfile);
    char *argv[] = {"clbn",
                    "validate",
                    "--child",
                    (char *)v->dev[t->dev].sel,
                    (char *)profile_name(t->profile),
                    j->which,
                    (char *)suite_name(v->o.suite),
                    j->outfile,
                    NULL};
    char **env = child_environment(v, t->profile, j->logfile);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, j->txtfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int err = posix_spawn(&j->pid, "/proc/self/exe", &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free_environment(env);
    if (err != 0) {
        snprintf(why, whysz, "cannot start the child process: %s", strerror(err));
        return 0;
    }
    j->active = 1;
    j->target = ti;
    j->t0 = bench_now();
    return 1;
}

/* Waits (block) or looks once for an active job that ended; its index, or -1. *status is
 * waitpid's, or -1 when waitpid itself failed. A job past CHILD_TIMEOUT_S is killed. */
static long reap_job(job *jobs, size_t n, int block, int *status) {
    for (;;) {
        int any = 0;
        for (size_t i = 0; i < n; i++) {
            job *j = &jobs[i];
            if (!j->active)
                continue;
            any = 1;
            pid_t r = waitpid(j->pid, status, WNOHANG);
            if (r == j->pid)
                return (long)i;
            if (r < 0 && errno != EINTR) {
                *status = -1;
                return (long)i;
            }
            if (!j->killed && bench_now() - j->t0 > CHILD_TIMEOUT_S) {
                kill(j->pid, SIGKILL);
                j->killed = 1;
            }
        }
        if (!any || !block)
            return -1;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------------------------
 * Oclgrind's log: a report starts with an unindented line saying what was found; its indented
 * lines (some holding only a tab) follow, one of them "Kernel: NAME"; an empty line ends it.
 * ------------------------------------------------------------------------------------------ */
typedef struct oreport {
    char *kind, *kernel, *text;
} oreport;

static char *copy_trimmed(const char *s, size_t n) {
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    char *out = xrealloc(NULL, n + 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static size_t parse_oclgrind_log(const char *text, oreport **out) {
    size_t n = 0, cap = 0;
    oreport *list = NULL, *cur = NULL;
    const char *block = NULL;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *next = eol ? eol + 1 : p + len;
        int empty = len == 0 || (len == 1 && p[0] == '\r');
        if (cur && (empty || !isspace((unsigned char)p[0]))) {
            cur->text = copy_trimmed(block, (size_t)(p - block));
            cur = NULL;
        }
        if (!empty && !cur) {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                list = xrealloc(list, cap * sizeof *list);
            }
            cur = &list[n++];
            memset(cur, 0, sizeof *cur);
            const char *s = p;
            while (s < p + len && isspace((unsigned char)*s))
                s++;
            cur->kind = copy_trimmed(s, (size_t)(p + len - s));
            block = p;
        } else if (!empty && !cur->kernel) {
            const char *s = p;
            while (s < p + len && isspace((unsigned char)*s))
                s++;
            if ((size_t)(p + len - s) > 8 && !strncmp(s, "Kernel: ", 8))
                cur->kernel = copy_trimmed(s + 8, (size_t)(p + len - s) - 8);
        }
        p = next;
    }
    if (cur)
        cur->text = copy_trimmed(block, strlen(block));
    for (size_t i = 0; i < n; i++)
        if (!list[i].kernel)
            list[i].kernel = xstrdup("");
    *out = list;
    return n;
}

/* The kind without addresses and numbers, so one distinct report is counted once. */
static char *normalize_kind(const char *kind) {
    dstr d = {0};
    ds_printf(&d, "%s", "");
    for (const char *s = kind; *s;) {
        if (s[0] == '0' && s[1] == 'x' && isxdigit((unsigned char)s[2])) {
            ds_printf(&d, "0x?");
            s += 2;
            while (isxdigit((unsigned char)*s))
                s++;
        } else if (isdigit((unsigned char)*s)) {
            ds_printf(&d, "#");
            while (isdigit((unsigned char)*s))
                s++;
        } else {
            ds_printf(&d, "%c", *s++);
        }
    }
    return ds_take(&d);
}

/* Records the log's reports (in the run's summary) and returns the number not allowlisted;
 * msg receives a description of the first of those. */
static size_t judge_oclgrind_log(vstate *v, const char *logfile, const char *where, dstr *msg) {
    char *data = NULL;
    size_t len = 0;
    if (!read_whole_file(logfile, &data, &len))
        return 0; /* no log: Oclgrind had nothing to say */
    oreport *reps = NULL;
    size_t n = parse_oclgrind_log(data, &reps);
    free(data);
    size_t bad = 0, allowed = 0;
    const oreport *first_bad = NULL;
    for (size_t i = 0; i < n; i++) {
        const oclgrind_allow_entry *a = oclgrind_allow_find(reps[i].kind, reps[i].kernel);
        char *norm = normalize_kind(reps[i].kind);
        report_kind *k = NULL;
        for (size_t j = 0; j < v->nkinds && !k; j++)
            if (!strcmp(v->kinds[j].kind, norm) && !strcmp(v->kinds[j].kernel, reps[i].kernel))
                k = &v->kinds[j];
        if (!k) {
            v->kinds = xrealloc(v->kinds, (v->nkinds + 1) * sizeof *v->kinds);
            k = &v->kinds[v->nkinds++];
            k->kind = norm;
            norm = NULL;
            k->kernel = xstrdup(reps[i].kernel);
            k->first_text = xstrdup(reps[i].text);
            k->first_where = xstrdup(where);
            k->allowed = a ? a->reason : NULL;
            k->count = 0;
        }
        free(norm);
        k->count++;
        if (a) {
            allowed++;
        } else {
            if (!bad)
                first_bad = &reps[i];
            bad++;
        }
    }
    if (bad) {
        if (msg->n)
            ds_printf(msg, "; ");
        ds_printf(msg, "Oclgrind: %zu report%s not in bench/oclgrind_allow.c", bad,
                  bad == 1 ? "" : "s");
        if (allowed)
            ds_printf(msg, " (and %zu allowed)", allowed);
        ds_printf(msg, "; the first:\n%s", first_bad->text);
    }
    for (size_t i = 0; i < n; i++) {
        free(reps[i].kind);
        free(reps[i].kernel);
        free(reps[i].text);
    }
    free(reps);
    return bad;
}

/* ------------------------------------------------------------------------------------------
 * One check on one target
 * ------------------------------------------------------------------------------------------ */
/* The outcome of an ended job: its file, how the child ended, and (for a check) the Oclgrind
 * log; msg receives what went wrong beyond the outcome's own message. */
static void finish_job(vstate *v, job *j, int status, ref_outcome *o, dstr *msg) {
    char why[512] = "", tail[256];
    j->active = 0;
    memset(o, 0, sizeof *o);
    last_line(j->txtfile, tail, sizeof tail);
    const char *sep = tail[0] ? "; its last words: " : "";
    if (status == -1)
        snprintf(why, sizeof why, "waitpid failed: %s", strerror(errno));
    else if (j->killed)
        snprintf(why, sizeof why, "the child process ran past %.0f s and was killed",
                 CHILD_TIMEOUT_S);
    else if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "the child process died of signal %d (%s)%s%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), sep, tail);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        snprintf(why, sizeof why, "the child process exited with status %d%s%s",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, sep, tail);
    if (why[0] || !read_outcome_file(j->outfile, o, &j->tuning, why, sizeof why)) {
        o->failed = 1;
        ds_printf(msg, "%s", why);
    }
    if (strcmp(j->which, "plan") != 0) {
        const target *t = &v->tg[j->target];
        char where[512], label[256];
        snprintf(where, sizeof where, "%s: %s", target_label(v, t, label, sizeof label),
                 v->suite.v[strtoull(j->which, NULL, 10)].name);
        judge_oclgrind_log(v, j->logfile, where, msg);
    }
}

/* Records check i's result on target t from its outcome (and msg, more failure text). */
static void record_result(vstate *v, target *t, size_t i, const ref_outcome *o, const dstr *msg,
                          double seconds) {
    vresult *r = &t->res[i];
    t->seconds += seconds;
    r->ran = 1;
    r->worst = o->worst;
    r->plan = o->plan;
    r->hash = FNV_INIT;
    if (o->out && o->allow)
        r->hash = fnv1a(FNV_INIT, o->out, o->out_n * sizeof *o->out);
    r->max_err = o->max_err;
    r->pass = !o->failed && msg->n == 0;
    if (!r->pass) {
        dstr m = {0};
        if (o->failed && o->message[0])
            ds_printf(&m, "%s", o->message);
        if (msg->n)
            ds_printf(&m, "%s%s", m.n ? "; " : "", msg->p);
        r->message = ds_take(&m);
        t->failed++;
        v->failures++;
    } else {
        t->passed++;
        if (isfinite(o->worst) && o->worst > t->worst)
            t->worst = o->worst;
    }
}

/* Runs check i in this process on a non-simulator target. */
static void run_check_here(vstate *v, target *t, size_t i, ref_outcome *o) {
    dstr msg = {0};
    double t0 = bench_now();
    if (!t->ctx) {
        memset(o, 0, sizeof *o);
        o->failed = 1;
        ds_printf(&msg, "%s", t->ctx_error);
    } else {
        ref_run_case(t->ctx, &v->suite.v[i].k, NULL, o);
    }
    record_result(v, t, i, o, &msg, bench_now() - t0);
    free(msg.p);
}

/* ------------------------------------------------------------------------------------------
 * Pairs: every two results of one check are held to |a - b| <= 2 * allowance.
 * ------------------------------------------------------------------------------------------ */
/* Names the output value at index k of the concatenated outputs (see ref_outcome). */
static void describe_value(const vcheck *c, size_t k, char *buf, size_t size) {
    size_t E = c->elems, C = (size_t)c->k.shape.c;
    const char *names[5] = {"y", "y", "y", "y", "y"};
    size_t n = 1;
    switch (c->k.op) {
    case CLBN_OP_FORWARD_TRAIN:
        names[1] = "saved mean", names[2] = "saved invstd", names[3] = "running mean",
        names[4] = "running var";
        n = 5;
        break;
    case CLBN_OP_BACKWARD:
    case CLBN_OP_BACKWARD_FROZEN:
        names[0] = "dx", names[1] = "dgamma", names[2] = "dbeta";
        n = 3;
        break;
    default:
        break;
    }
    if (k < E) {
        snprintf(buf, size, "%s[%zu]", names[0], k);
        return;
    }
    size_t part = 1 + (k - E) / C;
    if (part >= n)
        snprintf(buf, size, "value %zu", k);
    else
        snprintf(buf, size, "%s[%zu]", names[part], (k - E) % C);
}

typedef struct held {
    size_t target;
    float *out;
} held;

static void compare_pairs(vstate *v, size_t ci, const held *h, size_t nh, const double *allow,
                          size_t n) {
    const vcheck *c = &v->suite.v[ci];
    for (size_t a = 0; a < nh; a++)
        for (size_t b = a + 1; b < nh; b++) {
            double worst = 0.0;
            size_t at = 0;
            int over = 0;
            for (size_t k = 0; k < n; k++) {
                float x = h[a].out[k], y = h[b].out[k];
                if (x == y)
                    continue;
                double diff = fabs((double)x - (double)y);
                double ratio = allow[k] > 0.0 ? diff / allow[k] : INFINITY;
                if (!(diff <= PAIR_LIMIT * allow[k]))
                    over = 1;
                if (!(ratio <= worst)) {
                    worst = ratio;
                    at = k;
                }
            }
            v->pairs_compared++;
            char la[256], lb[256], what[64];
            if (!(worst <= v->pair_worst)) {
                v->pair_worst = worst;
                free(v->pair_worst_where);
                dstr d = {0};
                v->pair_worst_check = ci;
                ds_printf(&d, "%s vs %s", target_label(v, &v->tg[h[a].target], la, sizeof la),
                          target_label(v, &v->tg[h[b].target], lb, sizeof lb));
                v->pair_worst_where = ds_take(&d);
            }
            if (over) {
                v->pair_failures++;
                v->failures++;
                describe_value(c, at, what, sizeof what);
                ds_printf(&v->pair_text,
                          "  %s: %s vs %s: ratio %.3g at %s (%.9g vs %.9g, allowance %.3g)\n",
                          c->name, target_label(v, &v->tg[h[a].target], la, sizeof la),
                          target_label(v, &v->tg[h[b].target], lb, sizeof lb), worst, what,
                          (double)h[a].out[at], (double)h[b].out[at], allow[at]);
            }
        }
}

/* ------------------------------------------------------------------------------------------
 * JSON output
 * ------------------------------------------------------------------------------------------ */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p == '\r')
            fputs("\\r", f);
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

static void json_write_body(const vstate *v, FILE *f) {
    fprintf(f, "{\n  \"clbn_version\": ");
    json_string(f, clbn_version_string());
    fprintf(f, ",\n  \"kernel_hash\": \"%016llx\",\n  \"suite\": \"%s\",\n  \"devices\": [",
            (unsigned long long)clbn_kernel_source_hash(), suite_name(v->o.suite));
    for (size_t ti = 0; ti < v->ntg; ti++) {
        const target *t = &v->tg[ti];
        const clbn_device_info *in = &v->dev[t->dev].info;
        fprintf(f, "%s\n    {\"platform\": ", ti ? "," : "");
        json_string(f, in->platform_name);
        fprintf(f, ", \"device\": ");
        json_string(f, in->device_name);
        fprintf(f, ", \"driver\": ");
        json_string(f, in->driver_version);
        fprintf(f, ", \"opencl_c\": ");
        json_string(f, in->opencl_c_version);
        fprintf(f, ",\n     \"simulator\": %s, \"profile\": ", in->is_simulator ? "true" : "false");
        char prof[64];
        json_string(f, target_profile(t, prof, sizeof prof));
        if (t->tuning.known) {
            const clbn_tuning *tu = &t->tuning.t;
            fprintf(f,
                    ",\n     \"tuning\": {\"source\": \"%s\", \"cpu_reduce_items_per_cu\": %u, "
                    "\"cpu_elementwise_items_per_cu\": %u, \"gpu_work_group\": %u, "
                    "\"gpu_groups_per_cu\": %u}",
                    tuning_source_name(t->tuning.source), tu->cpu_reduce_items_per_cu,
                    tu->cpu_elementwise_items_per_cu, tu->gpu_work_group, tu->gpu_groups_per_cu);
        }
        fprintf(f, ", \"seconds\": %.3f, \"skipped\": %zu,\n     \"results\": [", t->seconds,
                t->skipped);
        int first = 1;
        for (size_t i = 0; i < v->suite.n; i++) {
            const vresult *r = &t->res[i];
            if (!r->ran)
                continue;
            const clbn_plan *p = &r->plan;
            fprintf(f, "%s\n      {\"check\": ", first ? "" : ",");
            first = 0;
            json_string(f, v->suite.v[i].name);
            fprintf(f, ", \"pass\": %s, \"worst\": ", r->pass ? "true" : "false");
            json_number(f, r->worst);
            fprintf(f, ", \"max_err\": ");
            json_number(f, r->max_err);
            fprintf(f, ", \"hash\": \"%016llx\",\n       \"plan\": {\"strategy\": ",
                    (unsigned long long)r->hash);
            json_string(f, clbn_strategy_name(p->strategy));
            fprintf(f,
                    ", \"work_group_size\": %zu, \"split\": %llu, \"vector_width\": %u, "
                    "\"kernels\": %u, \"channels_per_item\": %u, \"local_bytes\": %llu, "
                    "\"groups\": [%llu, %llu]}",
                    p->work_group_size, (unsigned long long)p->split, p->vector_width, p->kernels,
                    p->channels_per_item, (unsigned long long)p->local_bytes,
                    (unsigned long long)p->groups[0], (unsigned long long)p->groups[1]);
            if (!r->pass) {
                fprintf(f, ",\n       \"message\": ");
                json_string(f, r->message ? r->message : "");
            }
            fputc('}', f);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ],\n  \"pairs\": {\"worst_ratio\": ");
    json_number(f, v->pairs_compared ? v->pair_worst : NAN);
    fprintf(f, ", \"check\": ");
    json_string(f, v->pair_worst_where ? v->suite.v[v->pair_worst_check].name : "");
    fprintf(f, ", \"between\": ");
    json_string(f, v->pair_worst_where ? v->pair_worst_where : "");
    fprintf(f, "},\n  \"failures\": %zu\n}\n", v->failures);
}

/* Written to a temporary file beside path, synced, then renamed over it (clbn_tool_out). */
static int json_write(const vstate *v, const char *path) {
    clbn_tool_out o;
    if (clbn_tool_out_open(&o, "clbn validate", path))
        return 0;
    json_write_body(v, o.f);
    return clbn_tool_out_commit(&o) == 0;
}

/* ------------------------------------------------------------------------------------------
 * JSON input (--compare): a strict reader into a small tree, then the schema above.
 * ------------------------------------------------------------------------------------------ */
typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jtype;

typedef struct jval {
    jtype type;
    int boolean;
    double number;
    char *string;       /* J_STRING */
    struct jval *items; /* J_ARRAY, J_OBJECT */
    char **keys;        /* J_OBJECT */
    size_t len;
} jval;

typedef struct jparser {
    const char *s;
    size_t n, at;
    char err[160];
} jparser;

static int jfail(jparser *p, const char *what) {
    if (!p->err[0])
        snprintf(p->err, sizeof p->err, "%s at byte %zu", what, p->at);
    return 0;
}

static void jskip(jparser *p) {
    while (p->at < p->n && (p->s[p->at] == ' ' || p->s[p->at] == '\t' || p->s[p->at] == '\n' ||
                            p->s[p->at] == '\r'))
        p->at++;
}

static void jfree(jval *v) {
    if (!v)
        return;
    free(v->string);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items)
            jfree(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static int jhex4(jparser *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (p->at >= p->n || !isxdigit((unsigned char)p->s[p->at]))
            return jfail(p, "bad \\u escape");
        char ch = p->s[p->at++];
        v = v * 16 + (unsigned)(isdigit((unsigned char)ch) ? ch - '0' : (tolower(ch) - 'a' + 10));
    }
    *out = v;
    return 1;
}

static void utf8_put(dstr *d, unsigned cp) {
    if (cp < 0x80) {
        ds_printf(d, "%c", (char)cp);
    } else if (cp < 0x800) {
        ds_printf(d, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        ds_printf(d, "%c%c%c", (char)(0xE0 | (cp >> 12)), (char)(0x80 | ((cp >> 6) & 0x3F)),
                  (char)(0x80 | (cp & 0x3F)));
    } else {
        ds_printf(d, "%c%c%c%c", (char)(0xF0 | (cp >> 18)), (char)(0x80 | ((cp >> 12) & 0x3F)),
                  (char)(0x80 | ((cp >> 6) & 0x3F)), (char)(0x80 | (cp & 0x3F)));
    }
}

static int jstring(jparser *p, char **out) {
    dstr d = {0};
    ds_printf(&d, "%s", "");
    p->at++; /* the opening quote */
    for (;;) {
        if (p->at >= p->n) {
            free(d.p);
            return jfail(p, "unterminated string");
        }
        unsigned char ch = (unsigned char)p->s[p->at];
        if (ch == '"') {
            p->at++;
            break;
        }
        if (ch < 0x20) {
            free(d.p);
            return jfail(p, "control character in a string");
        }
        if (ch != '\\') {
            ds_printf(&d, "%c", (char)ch);
            p->at++;
            continue;
        }
        p->at++;
        if (p->at >= p->n) {
            free(d.p);
            return jfail(p, "unterminated string");
        }
        char e = p->s[p->at++];
        unsigned cp = 0;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            ds_printf(&d, "%c", e);
            break;
        case 'b':
            ds_printf(&d, "\b");
            break;
        case 'f':
            ds_printf(&d, "\f");
            break;
        case 'n':
            ds_printf(&d, "\n");
            break;
        case 'r':
            ds_printf(&d, "\r");
            break;
        case 't':
            ds_printf(&d, "\t");
            break;
        case 'u':
            if (!jhex4(p, &cp)) {
                free(d.p);
                return 0;
            }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo = 0;
                if (p->at + 1 >= p->n || p->s[p->at] != '\\' || p->s[p->at + 1] != 'u') {
                    free(d.p);
                    return jfail(p, "unpaired surrogate in a string");
                }
                p->at += 2;
                if (!jhex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    free(d.p);
                    return jfail(p, "unpaired surrogate in a string");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(d.p);
                return jfail(p, "unpaired surrogate in a string");
            }
            if (cp == 0) {
                free(d.p);
                return jfail(p, "\\u0000 in a string");
            }
            utf8_put(&d, cp);
            break;
        default:
            free(d.p);
            return jfail(p, "bad escape in a string");
        }
    }
    *out = ds_take(&d);
    return 1;
}

static int jnumber(jparser *p, double *out) {
    size_t st = p->at;
    const char *s = p->s;
    if (p->at < p->n && s[p->at] == '-')
        p->at++;
    if (p->at >= p->n || !isdigit((unsigned char)s[p->at]))
        return jfail(p, "bad number");
    if (s[p->at] == '0')
        p->at++;
    else
        while (p->at < p->n && isdigit((unsigned char)s[p->at]))
            p->at++;
    if (p->at < p->n && s[p->at] == '.') {
        p->at++;
        if (p->at >= p->n || !isdigit((unsigned char)s[p->at]))
            return jfail(p, "bad number");
        while (p->at < p->n && isdigit((unsigned char)s[p->at]))
            p->at++;
    }
    if (p->at < p->n && (s[p->at] == 'e' || s[p->at] == 'E')) {
        p->at++;
        if (p->at < p->n && (s[p->at] == '+' || s[p->at] == '-'))
            p->at++;
        if (p->at >= p->n || !isdigit((unsigned char)s[p->at]))
            return jfail(p, "bad number");
        while (p->at < p->n && isdigit((unsigned char)s[p->at]))
            p->at++;
    }
    char buf[64];
    size_t len = p->at - st;
    if (len >= sizeof buf)
        return jfail(p, "number too long");
    memcpy(buf, s + st, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    if (!isfinite(*out))
        return jfail(p, "number out of range");
    return 1;
}

static int jvalue(jparser *p, jval *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > 32)
        return jfail(p, "nested too deeply");
    jskip(p);
    if (p->at >= p->n)
        return jfail(p, "unexpected end of file");
    char ch = p->s[p->at];
    if (ch == '{' || ch == '[') {
        int obj = ch == '{';
        char close = obj ? '}' : ']';
        v->type = obj ? J_OBJECT : J_ARRAY;
        p->at++;
        jskip(p);
        if (p->at < p->n && p->s[p->at] == close) {
            p->at++;
            return 1;
        }
        size_t cap = 0;
        for (;;) {
            if (v->len == cap) {
                cap = cap ? 2 * cap : 8;
                v->items = xrealloc(v->items, cap * sizeof *v->items);
                if (obj)
                    v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
            }
            jskip(p);
            if (obj) {
                if (p->at >= p->n || p->s[p->at] != '"')
                    return jfail(p, "expected a string key");
                char *key = NULL;
                if (!jstring(p, &key))
                    return 0;
                for (size_t i = 0; i < v->len; i++)
                    if (!strcmp(v->keys[i], key)) {
                        free(key);
                        return jfail(p, "duplicate key");
                    }
                v->keys[v->len] = key;
                jskip(p);
                if (p->at >= p->n || p->s[p->at] != ':') {
                    memset(&v->items[v->len], 0, sizeof v->items[0]);
                    v->len++;
                    return jfail(p, "expected ':'");
                }
                p->at++;
            }
            int ok = jvalue(p, &v->items[v->len], depth + 1);
            v->len++;
            if (!ok)
                return 0;
            jskip(p);
            if (p->at < p->n && p->s[p->at] == ',') {
                p->at++;
                continue;
            }
            if (p->at < p->n && p->s[p->at] == close) {
                p->at++;
                return 1;
            }
            return jfail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (ch == '"') {
        v->type = J_STRING;
        return jstring(p, &v->string);
    }
    if (ch == '-' || isdigit((unsigned char)ch)) {
        v->type = J_NUMBER;
        return jnumber(p, &v->number);
    }
    static const struct {
        const char *word;
        jtype type;
        int b;
    } words[] = {{"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(words[i].word);
        if (p->n - p->at >= l && !strncmp(p->s + p->at, words[i].word, l)) {
            p->at += l;
            v->type = words[i].type;
            v->boolean = words[i].b;
            return 1;
        }
    }
    return jfail(p, "unexpected character");
}

static const jval *jget(const jval *obj, const char *key) {
    if (!obj || obj->type != J_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (!strcmp(obj->keys[i], key))
            return &obj->items[i];
    return NULL;
}

static int is_hex16(const char *s) {
    if (!s || strlen(s) != 16)
        return 0;
    for (int i = 0; i < 16; i++)
        if (!isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Schema checks: each sets why (naming the field) and returns NULL or 0 on a mismatch. */
static const jval *need(const jval *obj, const char *key, jtype type, const char *where, char *why,
                        size_t whysz) {
    const jval *v = jget(obj, key);
    static const char *const tn[] = {"null",     "a boolean", "a number",
                                     "a string", "an array",  "an object"};
    if (!v || v->type != type) {
        snprintf(why, whysz, "%s\"%s\" is %s, expected %s", where, key, v ? tn[v->type] : "missing",
                 tn[type]);
        return NULL;
    }
    return v;
}

static int need_count(const jval *obj, const char *key, const char *where, char *why, size_t whysz,
                      unsigned long long *out) {
    const jval *v = need(obj, key, J_NUMBER, where, why, whysz);
    if (!v)
        return 0;
    if (v->number < 0 || v->number != floor(v->number) || v->number > 1.8e19) {
        snprintf(why, whysz, "%s\"%s\" is not a count", where, key);
        return 0;
    }
    *out = (unsigned long long)v->number;
    return 1;
}

static int need_number_or_null(const jval *obj, const char *key, const char *where, char *why,
                               size_t whysz, double *out) {
    const jval *v = jget(obj, key);
    if (v && v->type == J_NULL) {
        *out = NAN;
        return 1;
    }
    if (!need(obj, key, J_NUMBER, where, why, whysz))
        return 0;
    *out = v->number;
    return 1;
}

static void free_old(vstate *v) {
    for (size_t i = 0; i < v->nold; i++) {
        old_result *o = &v->old[i];
        free(o->device);
        free(o->driver);
        free(o->profile);
        free(o->check);
        free(o->plan_sig);
        free(o->tuning_sig);
    }
    free(v->old);
    v->old = NULL;
    v->nold = 0;
}

/* Reads a file `clbn validate --json` wrote. 0 with why set when it cannot be used. */
static int load_compare(vstate *v, const char *path, char *why, size_t whysz) {
    char *data = NULL;
    size_t len = 0;
    if (!read_whole_file(path, &data, &len)) {
        snprintf(why, whysz, "cannot read it: %s", strerror(errno));
        return 0;
    }
    jparser p;
    memset(&p, 0, sizeof p);
    p.s = data;
    p.n = len;
    jval root;
    int ok = 1;
    if (strlen(data) != len) {
        snprintf(why, whysz, "a NUL byte at byte %zu", strlen(data));
        ok = 0;
    } else if (!jvalue(&p, &root, 0)) {
        snprintf(why, whysz, "malformed JSON: %s", p.err);
        jfree(&root);
        ok = 0;
    } else {
        jskip(&p);
        if (p.at != p.n) {
            snprintf(why, whysz, "malformed JSON: trailing content at byte %zu", p.at);
            jfree(&root);
            ok = 0;
        }
    }
    free(data);
    if (!ok)
        return 0;

    const jval *kh, *devs, *suite;
    unsigned long long count;
    char *tuning_sig = NULL; /* of the device entry being read */
    ok = 0;
    if (root.type != J_OBJECT) {
        snprintf(why, whysz, "the top level is not an object");
        goto done;
    }
    if (!need(&root, "clbn_version", J_STRING, "", why, whysz) ||
        !(kh = need(&root, "kernel_hash", J_STRING, "", why, whysz)) ||
        !(suite = need(&root, "suite", J_STRING, "", why, whysz)) ||
        !(devs = need(&root, "devices", J_ARRAY, "", why, whysz)) ||
        !need(&root, "pairs", J_OBJECT, "", why, whysz) ||
        !need_count(&root, "failures", "", why, whysz, &count))
        goto done;
    if (!is_hex16(kh->string)) {
        snprintf(why, whysz, "\"kernel_hash\" is not 16 hex digits");
        goto done;
    }
    if (parse_suite(suite->string) < 0) {
        snprintf(why, whysz, "\"suite\" is \"%s\", expected quick or full", suite->string);
        goto done;
    }
    snprintf(v->old_kernel_hash, sizeof v->old_kernel_hash, "%s", kh->string);
    for (size_t d = 0; d < devs->len; d++) {
        const jval *dev = &devs->items[d];
        char where[96];
        snprintf(where, sizeof where, "devices[%zu]: ", d);
        const jval *res, *dn, *drv, *prof;
        if (dev->type != J_OBJECT) {
            snprintf(why, whysz, "devices[%zu] is not an object", d);
            goto done;
        }
        if (!need(dev, "platform", J_STRING, where, why, whysz) ||
            !(dn = need(dev, "device", J_STRING, where, why, whysz)) ||
            !(drv = need(dev, "driver", J_STRING, where, why, whysz)) ||
            !need(dev, "opencl_c", J_STRING, where, why, whysz) ||
            !need(dev, "simulator", J_BOOL, where, why, whysz) ||
            !(prof = need(dev, "profile", J_STRING, where, why, whysz)) ||
            !(res = need(dev, "results", J_ARRAY, where, why, whysz)))
            goto done;
        /* "tuning" is optional: records of older versions lack it */
        free(tuning_sig);
        tuning_sig = NULL;
        const jval *tu = jget(dev, "tuning");
        if (tu) {
            char twhere[112];
            snprintf(twhere, sizeof twhere, "devices[%zu].tuning: ", d);
            const jval *src;
            unsigned long long f[4];
            if (!need(dev, "tuning", J_OBJECT, where, why, whysz) ||
                !(src = need(tu, "source", J_STRING, twhere, why, whysz)) ||
                !need_count(tu, "cpu_reduce_items_per_cu", twhere, why, whysz, &f[0]) ||
                !need_count(tu, "cpu_elementwise_items_per_cu", twhere, why, whysz, &f[1]) ||
                !need_count(tu, "gpu_work_group", twhere, why, whysz, &f[2]) ||
                !need_count(tu, "gpu_groups_per_cu", twhere, why, whysz, &f[3]))
                goto done;
            tuning_sig = tuning_signature(f[0], f[1], f[2], f[3]);
        }
        for (size_t r = 0; r < res->len; r++) {
            const jval *e = &res->items[r], *ck, *hs, *pl, *st, *gr;
            double worst, max_err;
            unsigned long long wg, split, vw, kernels, cpi, local;
            snprintf(where, sizeof where, "devices[%zu].results[%zu]: ", d, r);
            if (e->type != J_OBJECT) {
                snprintf(why, whysz, "devices[%zu].results[%zu] is not an object", d, r);
                goto done;
            }
            if (!(ck = need(e, "check", J_STRING, where, why, whysz)) ||
                !need(e, "pass", J_BOOL, where, why, whysz) ||
                !need_number_or_null(e, "worst", where, why, whysz, &worst) ||
                !need_number_or_null(e, "max_err", where, why, whysz, &max_err) ||
                !(hs = need(e, "hash", J_STRING, where, why, whysz)) ||
                !(pl = need(e, "plan", J_OBJECT, where, why, whysz)))
                goto done;
            if (!is_hex16(hs->string)) {
                snprintf(why, whysz, "%s\"hash\" is not 16 hex digits", where);
                goto done;
            }
            if (!jget(e, "pass")->boolean && !need(e, "message", J_STRING, where, why, whysz))
                goto done;
            snprintf(where, sizeof where, "devices[%zu].results[%zu].plan: ", d, r);
            if (!(st = need(pl, "strategy", J_STRING, where, why, whysz)) ||
                !need_count(pl, "work_group_size", where, why, whysz, &wg) ||
                !need_count(pl, "split", where, why, whysz, &split) ||
                !need_count(pl, "vector_width", where, why, whysz, &vw) ||
                !need_count(pl, "kernels", where, why, whysz, &kernels) ||
                !need_count(pl, "channels_per_item", where, why, whysz, &cpi) ||
                !need_count(pl, "local_bytes", where, why, whysz, &local) ||
                !(gr = need(pl, "groups", J_ARRAY, where, why, whysz)))
                goto done;
            if (gr->len != 2 || gr->items[0].type != J_NUMBER || gr->items[1].type != J_NUMBER) {
                snprintf(why, whysz, "%s\"groups\" is not two numbers", where);
                goto done;
            }
            v->old = xrealloc(v->old, (v->nold + 1) * sizeof *v->old);
            old_result *o = &v->old[v->nold++];
            o->ordinal = 0;
            for (size_t e = 0; e < d; e++) {
                const jval *pd = jget(&devs->items[e], "device"),
                           *pp = jget(&devs->items[e], "profile");
                o->ordinal += !strcmp(pd->string, dn->string) && !strcmp(pp->string, prof->string);
            }
            o->device = xstrdup(dn->string);
            o->driver = xstrdup(drv->string);
            o->profile = xstrdup(prof->string);
            o->check = xstrdup(ck->string);
            o->hash = strtoull(hs->string, NULL, 16);
            o->worst = worst;
            o->max_err = max_err;
            o->plan_sig = plan_signature(st->string, wg, split, vw, kernels, cpi, local,
                                         (unsigned long long)gr->items[0].number,
                                         (unsigned long long)gr->items[1].number);
            o->tuning_sig = tuning_sig ? xstrdup(tuning_sig) : NULL;
        }
    }
    ok = 1;
done:
    free(tuning_sig);
    jfree(&root);
    if (!ok)
        free_old(v);
    return ok;
}

/* Matches the earlier run's results to this run's by device name, profile and check, and
 * returns the number of failures (results that changed although nothing that may change them
 * did). */
static size_t run_compare(vstate *v) {
    char new_hash[17];
    snprintf(new_hash, sizeof new_hash, "%016llx", (unsigned long long)clbn_kernel_source_hash());
    const int same_kernels = !strcmp(new_hash, v->old_kernel_hash);
    size_t compared = 0, unchanged = 0, changed = 0, nondet = 0;
    printf("\ncompare with %s (kernel hash %s, now %s%s):\n", v->o.compare, v->old_kernel_hash,
           new_hash, same_kernels ? ", the same" : ", changed");
    /* two devices of one name (two identical GPUs) pair up in the order they are listed */
    size_t *ordinal = xcalloc(v->ntg, sizeof *ordinal);
    for (size_t ti = 0; ti < v->ntg; ti++)
        for (size_t e = 0; e < ti; e++)
            ordinal[ti] += !strcmp(v->dev[v->tg[e].dev].info.device_name,
                                   v->dev[v->tg[ti].dev].info.device_name) &&
                           v->tg[e].profile == v->tg[ti].profile &&
                           v->tg[e].default_tuning == v->tg[ti].default_tuning;
    for (size_t i = 0; i < v->nold; i++) {
        const old_result *o = &v->old[i];
        size_t ci = v->suite.n;
        uint64_t key = fnv1a(FNV_INIT, o->check, strlen(o->check));
        for (size_t c = 0; c < v->suite.n && ci == v->suite.n; c++)
            if (v->suite.v[c].k.seed == key && !strcmp(v->suite.v[c].name, o->check))
                ci = c;
        if (ci == v->suite.n)
            continue;
        for (size_t ti = 0; ti < v->ntg; ti++) {
            const target *t = &v->tg[ti];
            const clbn_device_info *in = &v->dev[t->dev].info;
            char prof[64];
            if (strcmp(in->device_name, o->device) ||
                strcmp(target_profile(t, prof, sizeof prof), o->profile) ||
                ordinal[ti] != o->ordinal || !t->res[ci].ran)
                continue;
            const vresult *r = &t->res[ci];
            compared++;
            if (r->hash == o->hash) {
                unchanged++;
                continue;
            }
            changed++;
            const int same_driver = !strcmp(in->driver_version, o->driver);
            char *sig = plan_signature_of(&r->plan);
            const int same_plan = !strcmp(sig, o->plan_sig);
            free(sig);
            /* the parameters can change a launch the plan's fields do not show; a record
             * without them is held to the plan alone, as before they existed */
            int same_tuning = 1;
            if (o->tuning_sig && t->tuning.known) {
                const clbn_tuning *tu = &t->tuning.t;
                sig =
                    tuning_signature(tu->cpu_reduce_items_per_cu, tu->cpu_elementwise_items_per_cu,
                                     tu->gpu_work_group, tu->gpu_groups_per_cu);
                same_tuning = !strcmp(sig, o->tuning_sig);
                free(sig);
            }
            char label[256];
            target_label(v, t, label, sizeof label);
            if (same_kernels && same_driver && same_plan && same_tuning) {
                nondet++;
                v->failures++;
                printf("  FAIL not deterministic: %s: %s: output hash %016llx -> %016llx with the "
                       "same kernels, driver and plan\n",
                       label, o->check, (unsigned long long)o->hash, (unsigned long long)r->hash);
            } else {
                printf("  changed (%s): %s: %s: worst %.3g -> %.3g, max_err %.3g -> %.3g\n",
                       !same_kernels  ? "kernels changed"
                       : !same_driver ? "driver changed"
                       : !same_plan   ? "plan changed"
                                      : "tuning changed",
                       label, o->check, o->worst, r->worst, o->max_err, r->max_err);
            }
        }
    }
    free(ordinal);
    printf("  %zu results compared, %zu unchanged, %zu changed (%zu not deterministic)\n", compared,
           unchanged, changed, nondet);
    return nondet;
}

/* ------------------------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------------------------ */
static void validate_usage(FILE *out) {
    fprintf(out,
            "usage: clbn validate [--device SEL]... [--all] [--suite quick|full]\n"
            "                     [--profile NAME|all]... [--json FILE] [--compare OLD.json]\n"
            "\n"
            "Runs every check of the suite on each device under each profile, compares each\n"
            "result with the double-precision reference and every two results of a check with\n"
            "each other (|a - b| <= 2 x the allowance), and prints PASS or FAIL.\n"
            "  --device SEL   a device (gpu, cpu, P:D or part of its name); repeatable.\n"
            "                 None: the default device ($CLBN_DEVICE, else the first GPU, ...)\n"
            "  --all          every device listed by `clbn devices`, simulators included\n"
            "  --suite        quick (the default: regression shapes, each option alone) or full\n"
            "                 (adds the option cross-product and real networks' shapes)\n"
            "  --profile      native (the device's own limits; the default), all, or one of:\n"
            "                 %s\n"
            "  --json FILE    records every result (written atomically)\n"
            "  --compare OLD  compares with a record: same kernels, driver, plan and tuned\n"
            "                 parameters must give the same bits\n"
            "Each target records the parameter set it ran (default, or a file `clbn tune`\n"
            "stored); where a stored set was loaded, the defaults run beside it as a target of\n"
            "their own (profile NAME+default-tuning), held to the reference and to it.\n"
            "A simulator (Oclgrind) runs each check in its own process with its checks on, and\n"
            "only checks of at most 100,000 elements. CLBN_EXPECT_DEVICES=n fails the run when\n"
            "fewer than n devices were validated. Exit status: 0 pass, 1 fail, 2 bad arguments.\n",
            bench_profile_names());
}

static int bad_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clbn validate: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (clbn validate --help)\n");
    va_end(ap);
    return CLBN_EXIT_USAGE;
}

/* -1: go on; else the exit status. */
static int parse_args(int argc, char **argv, vopts *o) {
    memset(o, 0, sizeof *o);
    o->devices = xcalloc((size_t)argc, sizeof *o->devices);
    int any_profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            validate_usage(stdout);
            return CLBN_EXIT_OK;
        }
        if (!strcmp(a, "--all")) {
            o->all = 1;
            continue;
        }
        if (strcmp(a, "--device") && strcmp(a, "--suite") && strcmp(a, "--profile") &&
            strcmp(a, "--json") && strcmp(a, "--compare"))
            return bad_usage("unknown option '%s'", a);
        if (i + 1 >= argc)
            return bad_usage("%s needs a value", a);
        const char *val = argv[++i];
        if (!strcmp(a, "--device")) {
            if (!*val)
                return bad_usage("--device needs a selector");
            o->devices[o->ndevices++] = val;
        } else if (!strcmp(a, "--suite")) {
            if ((o->suite = parse_suite(val)) < 0)
                return bad_usage("unknown suite '%s' (quick or full)", val);
        } else if (!strcmp(a, "--profile")) {
            any_profile = 1;
            if (!strcmp(val, "all")) {
                for (size_t p = 0; p <= bench_profile_count; p++)
                    o->profiles[p] = 1;
                continue;
            }
            int p = find_profile(val);
            if (p == -2)
                return bad_usage("unknown profile '%s' (native, all, %s)", val,
                                 bench_profile_names());
            o->profiles[p + 1] = 1;
        } else if (!strcmp(a, "--json")) {
            o->json = val;
        } else {
            o->compare = val;
        }
    }
    if (!any_profile)
        o->profiles[0] = 1;
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * Devices: the selectors resolved the library's way (a context made and released), --all from
 * the list; the same device twice is validated once.
 * ------------------------------------------------------------------------------------------ */
static void add_device(vstate *v, const clbn_device_info *info) {
    for (size_t i = 0; i < v->ndev; i++)
        if (v->dev[i].info.platform_index == info->platform_index &&
            v->dev[i].info.device_index == info->device_index)
            return;
    v->dev = xrealloc(v->dev, (v->ndev + 1) * sizeof *v->dev);
    vdevice *d = &v->dev[v->ndev++];
    d->info = *info;
    snprintf(d->sel, sizeof d->sel, "%u:%u", info->platform_index, info->device_index);
}

/* 0 on success; else an exit status (a message printed). */
static int resolve_devices(vstate *v) {
    if (v->o.all) {
        size_t n = 0;
        clbn_status st = clbn_device_list(NULL, 0, &n);
        clbn_device_info *all = NULL;
        if (st == CLBN_SUCCESS && n) {
            all = xcalloc(n, sizeof *all);
            st = clbn_device_list(all, n, &n);
        }
        if (st != CLBN_SUCCESS) {
            fprintf(stderr, "clbn validate: cannot list OpenCL devices: %s: %s\n", status_text(st),
                    clbn_last_error_message());
            free(all);
            return CLBN_EXIT_FAILURE;
        }
        for (size_t i = 0; i < n; i++)
            add_device(v, &all[i]);
        free(all);
    }
    size_t nsel = v->o.ndevices;
    if (nsel == 0 && !v->o.all)
        nsel = 1; /* the default device */
    for (size_t i = 0; i < nsel; i++) {
        const char *sel = i < v->o.ndevices ? v->o.devices[i] : NULL;
        clbn_context_options co;
        clbn_context_options_init(&co);
        co.device = sel;
        clbn_context *ctx = NULL;
        clbn_status st = clbn_context_create(&co, &ctx);
        if (st != CLBN_SUCCESS) {
            if (st == CLBN_ERROR_DEVICE_NOT_FOUND && sel) {
                fprintf(stderr, "clbn validate: --device %s: %s\n", sel, clbn_last_error_message());
                return CLBN_EXIT_USAGE;
            }
            fprintf(stderr, "clbn validate: %s%s: %s: %s\n",
                    sel ? "--device " : "the default device", sel ? sel : "", status_text(st),
                    clbn_last_error_message());
            return CLBN_EXIT_FAILURE;
        }
        clbn_device_info info;
        clbn_context_get_device_info(ctx, &info);
        clbn_context_release(ctx);
        add_device(v, &info);
    }
    return 0;
}

/* Recursively removes the run's temporary folder. */
static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            dstr p = {0};
            ds_printf(&p, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(p.p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p.p);
            else
                unlink(p.p);
            free(p.p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* ------------------------------------------------------------------------------------------
 * The run
 * ------------------------------------------------------------------------------------------ */
static target *add_target(vstate *v, size_t dev, int profile, int default_tuning) {
    v->tg = xrealloc(v->tg, (v->ntg + 1) * sizeof *v->tg);
    target *t = &v->tg[v->ntg++];
    memset(t, 0, sizeof *t);
    t->dev = dev;
    t->profile = profile;
    t->default_tuning = default_tuning;
    t->res = xcalloc(v->suite.n, sizeof *t->res);
    return t;
}

/* A non-simulator target's context (with the defaults rather than a stored set when
 * default_tuning), the parameters it holds and its reference plan. */
static void open_target(vstate *v, target *t) {
    char err[1024] = "";
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = v->dev[t->dev].sel;
    co.limits = profile_limits(t->profile);
    co.ignore_tuning = t->default_tuning;
    clbn_status st = clbn_context_create(&co, &t->ctx);
    if (st != CLBN_SUCCESS) {
        snprintf(err, sizeof err, "clbn_context_create(%s, profile %s%s) failed: %s: %s",
                 v->dev[t->dev].sel, profile_name(t->profile),
                 t->default_tuning ? ", ignore_tuning" : "", status_text(st),
                 clbn_last_error_message());
        t->ctx_error = xstrdup(err);
        t->plan_error = xstrdup(err);
        t->ctx = NULL;
        return;
    }
    get_tuning(t->ctx, &t->tuning);
    if (query_reference_plan(t->ctx, &t->plan, err, sizeof err) != CLBN_SUCCESS)
        t->plan_error = xstrdup(err);
}

static void setup_targets(vstate *v) {
    for (size_t d = 0; d < v->ndev; d++)
        for (size_t slot = 0; slot <= bench_profile_count; slot++) {
            if (!v->o.profiles[slot])
                continue;
            target *t = add_target(v, d, slot == 0 ? NATIVE_PROFILE : (int)slot - 1, 0);
            char err[1024] = "";
            if (v->dev[d].info.is_simulator) {
                /* its children's contexts use the run's fresh cache: never a stored set */
                ref_outcome o;
                dstr msg = {0};
                job j;
                int status = 0;
                if (start_job(v, &j, v->ntg - 1, "plan", err, sizeof err) &&
                    reap_job(&j, 1, 1, &status) == 0) {
                    finish_job(v, &j, status, &o, &msg);
                    if (o.failed)
                        t->plan_error = xstrdup(msg.n ? msg.p : o.message);
                    else
                        t->plan = o.plan;
                    t->tuning = j.tuning;
                    ref_outcome_free(&o);
                } else {
                    t->plan_error = xstrdup(err);
                }
                free(msg.p);
                continue;
            }
            open_target(v, t);
            /* A stored set ran: the defaults run too, held to the same reference and, as a
             * target of their own, to the tuned set's results. */
            if (t->tuning.known && t->tuning.source == CLBN_TUNING_FILE) {
                int profile = t->profile;
                open_target(v, add_target(v, d, profile, 1));
            }
        }
}

/* Check by check: the simulator targets' children run concurrently (as many as there are
 * processors) while this process runs the other targets; then every two results are compared
 * and the outputs are dropped, so memory holds one check's outputs at a time. */
static void run_all(vstate *v) {
    const int progress = isatty(STDERR_FILENO);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const size_t slots = cpus > 0 ? (size_t)cpus : 1;
    job *jobs = xcalloc(slots, sizeof *jobs);
    ref_outcome *outs = xcalloc(v->ntg, sizeof *outs);
    size_t *sims = xcalloc(v->ntg, sizeof *sims);
    held *h = xcalloc(v->ntg, sizeof *h);
    double t0 = bench_now();
    for (size_t i = 0; i < v->suite.n; i++) {
        const vcheck *c = &v->suite.v[i];
        if (progress)
            fprintf(stderr, "\r\033[K[%zu/%zu %.0f s] %s", i + 1, v->suite.n, bench_now() - t0,
                    c->name);
        size_t nsims = 0, next = 0, inflight = 0;
        for (size_t ti = 0; ti < v->ntg; ti++) {
            target *t = &v->tg[ti];
            memset(&outs[ti], 0, sizeof outs[ti]);
            if (!v->dev[t->dev].info.is_simulator)
                continue;
            if (c->elems > SIM_MAX_ELEMS)
                t->skipped++;
            else
                sims[nsims++] = ti;
        }
        char which[24];
        snprintf(which, sizeof which, "%zu", i);
        for (size_t ti = 0;; ti++) {
            /* keep the slots busy; reap what has ended */
            for (;;) {
                int status = 0;
                int block = ti >= v->ntg && !(next < nsims && inflight < slots);
                long k = reap_job(jobs, slots, block, &status);
                if (k >= 0) {
                    dstr msg = {0};
                    target *t = &v->tg[jobs[k].target];
                    double dt = bench_now() - jobs[k].t0;
                    finish_job(v, &jobs[k], status, &outs[jobs[k].target], &msg);
                    record_result(v, t, i, &outs[jobs[k].target], &msg, dt);
                    free(msg.p);
                    inflight--;
                    continue;
                }
                if (next < nsims && inflight < slots) {
                    size_t s = 0;
                    while (jobs[s].active)
                        s++;
                    char why[512];
                    if (start_job(v, &jobs[s], sims[next], which, why, sizeof why)) {
                        inflight++;
                    } else {
                        dstr msg = {0};
                        ds_printf(&msg, "%s", why);
                        outs[sims[next]].failed = 1;
                        record_result(v, &v->tg[sims[next]], i, &outs[sims[next]], &msg, 0.0);
                        free(msg.p);
                    }
                    next++;
                    continue;
                }
                break;
            }
            if (ti >= v->ntg) {
                if (inflight == 0 && next == nsims)
                    break;
                continue;
            }
            if (!v->dev[v->tg[ti].dev].info.is_simulator)
                run_check_here(v, &v->tg[ti], i, &outs[ti]);
        }

        /* the pairs, in target order; results that failed may hold partial outputs */
        size_t nh = 0, n = 0;
        double *allow = NULL;
        for (size_t ti = 0; ti < v->ntg; ti++) {
            ref_outcome *o = &outs[ti];
            const vresult *r = &v->tg[ti].res[i];
            if (!r->ran || !r->pass) {
                ref_outcome_free(o);
                continue;
            }
            if (!o->out || !o->allow || (allow && o->out_n != n)) {
                v->pair_excluded++;
                ref_outcome_free(o);
                continue;
            }
            if (!allow) {
                allow = o->allow;
                o->allow = NULL;
                n = o->out_n;
            }
            h[nh].target = ti;
            h[nh].out = o->out;
            o->out = NULL;
            nh++;
            ref_outcome_free(o);
        }
        compare_pairs(v, i, h, nh, allow, n);
        for (size_t k = 0; k < nh; k++)
            free(h[k].out);
        free(allow);
    }
    if (progress)
        fprintf(stderr, "\r\033[K");
    free(h);
    free(sims);
    free(outs);
    free(jobs);
}

static void print_device_headers(const vstate *v) {
    for (size_t d = 0; d < v->ndev; d++) {
        const clbn_device_info *in = &v->dev[d].info;
        printf("device %s: %s\n  platform %s, driver %s, %s, %s\n", v->dev[d].sel, in->device_name,
               in->platform_name, in->driver_version, in->opencl_c_version,
               in->is_simulator ? "simulator (each check in its own process, checks on)"
                                : "not a simulator");
    }
}

static void print_results(const vstate *v) {
    printf("\nsuite %s: %zu checks per device and profile\n", suite_name(v->o.suite), v->suite.n);
    for (size_t ti = 0; ti < v->ntg; ti++) {
        const target *t = &v->tg[ti];
        char label[256], plan[160];
        target_label(v, t, label, sizeof label);
        if (t->plan_error)
            snprintf(plan, sizeof plan, "(no plan: see below)");
        else
            format_plan(&t->plan, plan, sizeof plan);
        printf("  %-52s %4zu passed %4zu failed  worst %6.3f  %7.1f s  plan %s\n", label, t->passed,
               t->failed, t->worst, t->seconds, plan);
        if (t->skipped) {
            printf("    %zu checks left out: a simulator runs only checks of at most %u elements\n",
                   t->skipped, SIM_MAX_ELEMS);
        }
        if (t->plan_error)
            printf("    plan of NHWC 32x64x56x56 fwd_train: %s\n", t->plan_error);
        char tuning[256];
        format_tuning(&t->tuning, tuning, sizeof tuning);
        printf("    tuning %s\n", tuning);
    }
    int any = 0;
    for (size_t ti = 0; ti < v->ntg; ti++) {
        const target *t = &v->tg[ti];
        char label[256];
        target_label(v, t, label, sizeof label);
        for (size_t i = 0; i < v->suite.n; i++) {
            if (!t->res[i].ran || t->res[i].pass)
                continue;
            if (!any++)
                printf("\nfailing checks:\n");
            printf("  FAIL %s: %s: %s\n", label, v->suite.v[i].name, t->res[i].message);
        }
    }
    if (v->nkinds) {
        printf("\nOclgrind reports (distinct kind and kernel):\n");
        for (size_t k = 0; k < v->nkinds; k++) {
            const report_kind *r = &v->kinds[k];
            printf("  %s %zu x \"%s\" in kernel %s; first on %s:\n%s\n",
                   r->allowed ? "allowed" : "FAIL", r->count, r->kind,
                   r->kernel[0] ? r->kernel : "(none named)", r->first_where, r->first_text);
            if (r->allowed)
                printf("    allowed because: %s\n", r->allowed);
        }
    }
    printf("\ncross-device: %zu pairs compared", v->pairs_compared);
    if (v->pairs_compared)
        printf(", largest |a - b| / allowance %.3g on %s (%s)", v->pair_worst,
               v->pair_worst_where ? v->suite.v[v->pair_worst_check].name : "?",
               v->pair_worst_where ? v->pair_worst_where : "?");
    printf("\n");
    if (v->pair_excluded)
        printf("  %zu results left out of the pairs (no outputs)\n", v->pair_excluded);
    if (v->pair_failures)
        printf("  %zu pairs differ by more than %.0f x the allowance:\n%s", v->pair_failures,
               PAIR_LIMIT, v->pair_text.p);
}

int clbn_cmd_validate(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--child"))
        return child_main(argc, argv);
    vstate v;
    memset(&v, 0, sizeof v);
    v.pair_worst = -1.0; /* the first pair compared sets it */
    int rc = parse_args(argc, argv, &v.o);
    if (rc >= 0) {
        free(v.o.devices);
        return rc;
    }
    size_t expect = 0;
    const char *ex = getenv("CLBN_EXPECT_DEVICES");
    if (ex && *ex) {
        char *end = NULL;
        unsigned long long n = strtoull(ex, &end, 10);
        if (*end || !isdigit((unsigned char)ex[0])) {
            free(v.o.devices);
            return bad_usage("CLBN_EXPECT_DEVICES='%s' is not a number", ex);
        }
        expect = (size_t)n;
    }
    if (v.o.compare) {
        char why[512];
        if (!load_compare(&v, v.o.compare, why, sizeof why)) {
            fprintf(stderr, "clbn validate: --compare %s: %s\n", v.o.compare, why);
            free(v.o.devices);
            return CLBN_EXIT_USAGE;
        }
    }
    rc = resolve_devices(&v);
    if (!rc && v.ndev == 0) {
        fprintf(stderr, "clbn validate: no OpenCL device to validate\n");
        rc = CLBN_EXIT_FAILURE;
    }
    if (rc) {
        free_old(&v);
        free(v.o.devices);
        free(v.dev);
        return rc;
    }
    build_suite(v.o.suite, &v.suite);
    int any_sim = 0;
    for (size_t d = 0; d < v.ndev; d++)
        any_sim |= v.dev[d].info.is_simulator != 0;
    if (any_sim) {
        snprintf(v.tmpdir, sizeof v.tmpdir, "/tmp/clbn-validate-XXXXXX");
        if (!mkdtemp(v.tmpdir)) {
            fprintf(stderr, "clbn validate: cannot create a temporary folder: %s\n",
                    strerror(errno));
            return CLBN_EXIT_FAILURE;
        }
        snprintf(v.cachedir, sizeof v.cachedir, "%s/cache", v.tmpdir);
    }

    print_device_headers(&v);
    fflush(stdout);
    double t0 = bench_now();
    setup_targets(&v);
    run_all(&v);
    print_results(&v);
    if (expect && v.ndev < expect) {
        printf("\nFAIL: CLBN_EXPECT_DEVICES=%zu but %zu device%s validated\n", expect, v.ndev,
               v.ndev == 1 ? " was" : "s were");
        v.failures++;
    }
    if (v.o.compare)
        run_compare(&v);
    size_t io_failed = 0; /* the JSON file could not be written: exit 3 unless a check failed */
    if (v.o.json && !json_write(&v, v.o.json)) {
        v.failures++;
        io_failed = 1;
    }
    size_t results = 0;
    for (size_t ti = 0; ti < v.ntg; ti++)
        results += v.tg[ti].passed + v.tg[ti].failed;
    printf("\n%s: %zu results (%zu checks, %zu device%s, %zu target%s) in %.1f s, %zu failure%s\n",
           v.failures ? "FAIL" : "PASS", results, v.suite.n, v.ndev, v.ndev == 1 ? "" : "s", v.ntg,
           v.ntg == 1 ? "" : "s", bench_now() - t0, v.failures, v.failures == 1 ? "" : "s");

    for (size_t ti = 0; ti < v.ntg; ti++) {
        target *t = &v.tg[ti];
        clbn_context_release(t->ctx);
        for (size_t i = 0; i < v.suite.n; i++)
            free(t->res[i].message);
        free(t->res);
        free(t->ctx_error);
        free(t->plan_error);
    }
    for (size_t k = 0; k < v.nkinds; k++) {
        free(v.kinds[k].kind);
        free(v.kinds[k].kernel);
        free(v.kinds[k].first_text);
        free(v.kinds[k].first_where);
    }
    if (v.tmpdir[0])
        remove_tree(v.tmpdir);
    free(v.kinds);
    free(v.tg);
    free(v.dev);
    free(v.suite.v);
    free(v.pair_worst_where);
    free(v.pair_text.p);
    free_old(&v);
    free(v.o.devices);
    return v.failures > io_failed ? CLBN_EXIT_FAILURE : io_failed ? CLBN_EXIT_IO : CLBN_EXIT_OK;
}
