/* cmd_bench.c — `clbn bench`: the main job. Runs each op on one shape and layout, prints its
 * worst error against the double-precision reference, the plan, the median time and GB/s next
 * to a device copy measured in the same run, interleaved, plus the first and cached start. */
#include "bench.h"
#include "profiles.h"
#include "reference.h"

#include <clbn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bench_opts {
    const char *device;
    clbn_shape shape;
    int layouts[2], nlayouts;
    int runs, warmup;
    const bench_profile *profile; /* NULL: the device's own limits */
} bench_opts;

static int usage(void) {
    fprintf(stderr,
            "usage: clbn bench [--device SEL] [--shape N,C,H,W] [--layout nchw|nhwc|nc|both]\n"
            "                  [--runs R] [--warmup K] [--profile NAME]\n"
            "  Prints, per op and layout: the plan, the worst error against the double-precision\n"
            "  reference, the median time over R runs after K warm-up runs, and GB/s counting\n"
            "  read x + write y (forward) or read x + dy + write dx (backward), next to a device\n"
            "  copy measured in the same run. Defaults: 32,64,56,56, both layouts, R=20, K=3.\n"
            "  --profile plans with a device profile's limits (%s) instead of the device's.\n",
            bench_profile_names());
    return 2;
}

static int parse(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->shape = (clbn_shape){CLBN_LAYOUT_NCHW, 32, 64, 56, 56};
    o->layouts[0] = CLBN_LAYOUT_NCHW;
    o->layouts[1] = CLBN_LAYOUT_NHWC;
    o->nlayouts = 2;
    o->runs = 20;
    o->warmup = 3;
    for (int i = 1; i < argc; i++) { /* argv[0] is "bench" */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage();
        if (!v)
            return usage();
        i++;
        if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--shape")) {
            unsigned long long n, c, h, w;
            if (sscanf(v, "%llu,%llu,%llu,%llu", &n, &c, &h, &w) != 4)
                return usage();
            o->shape.n = n, o->shape.c = c, o->shape.h = h, o->shape.w = w;
        } else if (!strcmp(a, "--layout")) {
            o->nlayouts = 1;
            if (!strcmp(v, "nchw"))
                o->layouts[0] = CLBN_LAYOUT_NCHW;
            else if (!strcmp(v, "nhwc"))
                o->layouts[0] = CLBN_LAYOUT_NHWC;
            else if (!strcmp(v, "nc"))
                o->layouts[0] = CLBN_LAYOUT_NC;
            else if (!strcmp(v, "both"))
                o->nlayouts = 2;
            else
                return usage();
        } else if (!strcmp(a, "--runs")) {
            o->runs = atoi(v);
        } else if (!strcmp(a, "--warmup")) {
            o->warmup = atoi(v);
        } else if (!strcmp(a, "--profile")) {
            o->profile = bench_profile_find(v);
            if (!o->profile) {
                fprintf(stderr, "clbn bench: unknown profile '%s' (one of %s)\n", v,
                        bench_profile_names());
                return 2;
            }
        } else {
            return usage();
        }
    }
    if (o->runs < 1 || o->warmup < 0)
        return usage();
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

static double max_abs_err(const float *got, const double *ref, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)got[i] - ref[i]));
    return worst;
}

enum { OP_TRAIN, OP_INFER, OP_BACKWARD, OP_COPY, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"forward_train", "forward_infer", "backward",
                                               "copy x to y"};

static clbn_status run_op(int op, clbn_bn *bn, const clbn_shape *s, cl_mem x, cl_mem y, cl_mem dy,
                          cl_mem dx, cl_command_queue q, bench_copy *copy) {
    switch (op) {
    case OP_TRAIN:
        return clbn_bn_forward_train(bn, s, x, 0, y, 0, NULL, NULL, 0, NULL, NULL);
    case OP_INFER:
        return clbn_bn_forward_infer(bn, s, x, 0, y, 0, NULL, 0, NULL, NULL);
    case OP_BACKWARD:
        return clbn_bn_backward(bn, s, x, 0, y, 0, dy, 0, dx, 0, NULL, NULL, 0, NULL, NULL);
    default:
        return (clbn_status)bench_copy_enqueue(copy, q);
    }
}

static int bench_layout(clbn_context *ctx, const bench_opts *o, clbn_layout layout) {
    clbn_shape s = o->shape;
    s.layout = layout;
    if (layout == CLBN_LAYOUT_NC)
        s.h = s.w = 1;
    const size_t C = (size_t)s.c, E = ref_elems(&s), bytes = E * sizeof(float);
    float *hx = malloc(bytes), *hy = malloc(bytes), *hdy = malloc(bytes), *hdx = malloc(bytes);
    float *hg = malloc(C * 4), *hb = malloc(C * 4), *hm = malloc(C * 4), *hi = malloc(C * 4);
    double *rx = malloc(E * 8), *ry = malloc(E * 8), *rdy = malloc(E * 8), *rdx = malloc(E * 8);
    double *dg = malloc(C * 8), *db = malloc(C * 8), *rg = malloc(C * 8), *rb = malloc(C * 8);
    double *rm = malloc(C * 8), *ri = malloc(C * 8), *rv = malloc(C * 8), *rrm = malloc(C * 8),
           *rrv = malloc(C * 8);
    if (!hx || !hy || !hdy || !hdx || !hg || !hb || !hm || !hi || !rx || !ry || !rdy || !rdx ||
        !dg || !db || !rg || !rb || !rm || !ri || !rv || !rrm || !rrv) {
        fprintf(stderr, "clbn bench: out of memory\n");
        return 1;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < E; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        hx[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 4.0 - 1.0);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        hdy[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        rx[i] = hx[i];
        rdy[i] = hdy[i];
    }
    for (size_t c = 0; c < C; c++) {
        hg[c] = 0.5f + (float)(c % 5) * 0.25f;
        hb[c] = (float)(c % 3) * 0.5f - 0.5f;
        rg[c] = hg[c];
        rb[c] = hb[c];
    }
    cl_context cc;
    cl_command_queue q;
    clbn_context_get_cl(ctx, &cc, &q);
    cl_int err = CL_SUCCESS;
    cl_mem x = clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, hx, &err);
    cl_mem y = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
    cl_mem dy = clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, hdy, &err);
    cl_mem dx = clCreateBuffer(cc, CL_MEM_READ_WRITE, bytes, NULL, &err);
    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = C;
    clbn_bn *bn = NULL;
    clbn_status st = clbn_bn_create(ctx, &bo, &bn);
    if (st == CLBN_SUCCESS)
        st = clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, hg, C);
    if (st == CLBN_SUCCESS)
        st = clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, hb, C);
    if (st != CLBN_SUCCESS || err != CL_SUCCESS) {
        fprintf(stderr, "clbn bench: set-up failed: %s\n", clbn_last_error_message());
        return 1;
    }
    const char *lname = layout == CLBN_LAYOUT_NCHW   ? "NCHW"
                        : layout == CLBN_LAYOUT_NHWC ? "NHWC"
                                                     : "NC";
    printf("\n%s %llux%llux%llux%llu (%.1f MB per tensor)\n", lname, (unsigned long long)s.n,
           (unsigned long long)s.c, (unsigned long long)s.h, (unsigned long long)s.w, bytes / 1e6);

    /* Errors against the double-precision reference, from one call of each op. */
    ref_params rp = {bo.eps, 1, 1, CLBN_ACTIVATION_NONE, rg, rb};
    st = clbn_bn_forward_train(bn, &s, x, 0, y, 0, NULL, NULL, 0, NULL, NULL);
    if (st == CLBN_SUCCESS)
        st = clbn_bn_backward(bn, &s, x, 0, y, 0, dy, 0, dx, 0, NULL, NULL, 0, NULL, NULL);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn bench: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return 1;
    }
    clEnqueueReadBuffer(q, y, CL_TRUE, 0, bytes, hy, 0, NULL, NULL);
    clEnqueueReadBuffer(q, dx, CL_TRUE, 0, bytes, hdx, 0, NULL, NULL);
    clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_INVSTD, hi, C);
    ref_forward_train(&s, &rp, rx, ry, rm, ri, rv);
    double rel_var = 0.0;
    double err_y = max_abs_err(hy, ry, E);
    for (size_t c = 0; c < C; c++) {
        double var = 1.0 / ((double)hi[c] * hi[c]) - bo.eps;
        rel_var = fmax(rel_var, fabs(var - rv[c]) / rv[c]);
    }
    ref_backward(&s, &rp, rx, ry, rdy, rm, ri, rdx, dg, db);
    double err_dx = max_abs_err(hdx, rdx, E);
    float *hdg = malloc(C * 4), *hdb = malloc(C * 4);
    clbn_bn_read_vector(bn, CLBN_VECTOR_DGAMMA, hdg, C);
    clbn_bn_read_vector(bn, CLBN_VECTOR_DBETA, hdb, C);
    /* dgamma and dbeta are sums of m terms that largely cancel: their error is stated against
     * the largest of them, not per channel (a channel whose sum is near 0 has no relative
     * error worth printing). */
    double top_g = 0.0, top_b = 0.0;
    for (size_t c = 0; c < C; c++) {
        top_g = fmax(top_g, fabs(dg[c]));
        top_b = fmax(top_b, fabs(db[c]));
    }
    double err_dg = max_abs_err(hdg, dg, C) / top_g;
    double err_db = max_abs_err(hdb, db, C) / top_b;
    float *hrm = malloc(C * 4), *hrv = malloc(C * 4);
    clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, hrm, C);
    clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, hrv, C);
    for (size_t c = 0; c < C; c++) {
        rrm[c] = hrm[c];
        rrv[c] = hrv[c];
    }
    clbn_bn_forward_infer(bn, &s, x, 0, y, 0, NULL, 0, NULL, NULL);
    clEnqueueReadBuffer(q, y, CL_TRUE, 0, bytes, hy, 0, NULL, NULL);
    ref_forward_infer(&s, &rp, rx, rrm, rrv, ry);
    double err_yi = max_abs_err(hy, ry, E);
    printf("worst error vs the double reference: train y %.2e, batch var %.2e relative, infer y "
           "%.2e, dx %.2e, dgamma %.2e and dbeta %.2e of the largest\n",
           err_y, rel_var, err_yi, err_dx, err_dg, err_db);

    /* Timing: the ops interleaved run by run, so a bandwidth mode change hits all alike. */
    bench_copy copy;
    if (bench_copy_init(&copy, ctx, x, y, E)) {
        fprintf(stderr, "clbn bench: building the copy kernel failed\n");
        return 1;
    }
    double *t[OP_COUNT];
    for (int op = 0; op < OP_COUNT; op++)
        t[op] = calloc((size_t)o->runs, sizeof(double));
    for (int r = -o->warmup; r < o->runs; r++) {
        for (int op = 0; op < OP_COUNT; op++) {
            clFinish(q);
            double t0 = bench_now();
            st = run_op(op, bn, &s, x, y, dy, dx, q, &copy);
            clFinish(q);
            double dt = bench_now() - t0;
            if (st != CLBN_SUCCESS) {
                fprintf(stderr, "clbn bench: %s failed: %s\n", op_names[op],
                        clbn_last_error_message());
                return 1;
            }
            if (r >= 0)
                t[op][r] = dt;
        }
    }
    const clbn_op plan_op[OP_COUNT] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                       CLBN_OP_BACKWARD, CLBN_OP_FORWARD_INFER};
    const double traffic[OP_COUNT] = {2.0, 2.0, 3.0, 2.0};
    double copy_gbs = traffic[OP_COPY] * bytes / bench_median(t[OP_COPY], (size_t)o->runs) / 1e9;
    printf("%-14s %-18s %5s %6s %3s %3s %7s %10s %8s %8s\n", "op", "plan", "wg", "split", "W",
           "cpi", "local", "median ms", "GB/s", "of copy");
    for (int op = 0; op < OP_COUNT; op++) {
        double med = bench_median(t[op], (size_t)o->runs);
        double gbs = traffic[op] * bytes / med / 1e9;
        clbn_plan p;
        memset(&p, 0, sizeof p);
        if (op != OP_COPY)
            clbn_bn_query_plan(bn, plan_op[op], &s, &p);
        printf("%-14s %-18s %5zu %6llu %3u %3u %7llu %10.3f %8.1f %7.0f%%\n", op_names[op],
               op == OP_COPY ? "copy kernel" : clbn_strategy_name(p.strategy), p.work_group_size,
               (unsigned long long)p.split, p.vector_width, p.channels_per_item,
               (unsigned long long)p.local_bytes, med * 1e3, gbs, 100.0 * gbs / copy_gbs);
        free(t[op]);
    }
    bench_copy_release(&copy);
    clReleaseMemObject(x);
    clReleaseMemObject(y);
    clReleaseMemObject(dy);
    clReleaseMemObject(dx);
    clbn_bn_release(bn);
    void *all[] = {hx, hy, hdy, hdx, hg, hb, hm,  hi,  rx,  ry,  rdy, rdx, dg,
                   db, rg, rb,  rm,  ri, rv, rrm, rrv, hdg, hdb, hrm, hrv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    return 0;
}

int clbn_cmd_bench(int argc, char **argv) {
    bench_opts o;
    if (parse(argc, argv, &o))
        return 2;
    print_starts(&o);
    clbn_context *ctx = make_context(&o, NULL);
    if (!ctx)
        return 1;
    clbn_device_info info;
    clbn_context_get_device_info(ctx, &info);
    clbn_limits lim;
    clbn_context_get_limits(ctx, &lim);
    printf("device: %s (%s, driver %s)%s%s; %u compute units, work-group <= %zu, local memory "
           "%llu B, vector width %u\n",
           info.device_name, info.platform_name, info.driver_version,
           o.profile ? " with the limits of profile " : "", o.profile ? o.profile->name : "",
           lim.compute_units, lim.max_work_group_size, (unsigned long long)lim.local_mem_size,
           lim.vector_width);
    int rc = 0;
    for (int i = 0; i < o.nlayouts && rc == 0; i++)
        rc = bench_layout(ctx, &o, (clbn_layout)o.layouts[i]);
    clbn_context_release(ctx);
    return rc;
}
