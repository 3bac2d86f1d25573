/* soak.c — clbn_soak: many training forward + backward calls on one state object, to show that
 * a long run leaks neither host memory nor OpenCL objects and that its answers never drift.
 * Linked with the static library so the counting layer (tests/cl_count.h) sees every object. */
#include "cl_count.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* AddressSanitizer keeps freed memory in quarantine and grows its own bookkeeping, so resident
 * memory says little about leaks there; LeakSanitizer reports them instead. */
#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif
#ifndef SOAK_ASAN
#define SOAK_ASAN 0
#endif

#define SOAK_RSS_LIMIT_KIB 1024L
#define SOAK_WARMUP_MAX 1000ul

typedef struct soak_args {
    unsigned long calls;
    unsigned long check_every;
    uint64_t n, c, h, w;
    clbn_layout layout;
    const char *device;
    const char *json;
} soak_args;

/* What one call produces. Running mean and var and t are restored before every call, so all of
 * it is meant to be the same on every call. */
typedef struct soak_outputs {
    float *y, *dx;
    float *vec[CLBN_VECTOR_COUNT];
    uint64_t t;
} soak_outputs;

static const clbn_vector soak_vectors[] = {CLBN_VECTOR_RUNNING_MEAN, CLBN_VECTOR_RUNNING_VAR,
                                           CLBN_VECTOR_SAVED_MEAN,   CLBN_VECTOR_SAVED_INVSTD,
                                           CLBN_VECTOR_DGAMMA,       CLBN_VECTOR_DBETA};
#define SOAK_NVEC (sizeof soak_vectors / sizeof soak_vectors[0])

static void usage(FILE *f) {
    fprintf(f, "usage: clbn_soak [--calls N] [--shape N,C,H,W] [--layout nchw|nhwc]\n"
               "                 [--device SELECTOR] [--check-every K] [--json FILE]\n"
               "Runs N training forward + backward calls (default 100000) on one state object;\n"
               "after the warm-up (min(1000, N/2) calls) resident memory must grow by less than\n"
               "1 MiB, the live OpenCL objects must stay the same, and every K-th call's outputs\n"
               "(default K = 100) must equal the first call's bit for bit.\n");
}

static int parse_ulong(const char *s, unsigned long *v) {
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || x == 0 || x > (unsigned long long)-1 / 2)
        return -1;
    *v = (unsigned long)x;
    return 0;
}

static int parse_shape(const char *s, soak_args *a) {
    unsigned long long v[4];
    char tail;
    if (sscanf(s, "%llu,%llu,%llu,%llu%c", &v[0], &v[1], &v[2], &v[3], &tail) != 4)
        return -1;
    for (int i = 0; i < 4; i++)
        if (v[i] == 0 || v[i] > (1ull << 30))
            return -1;
    a->n = v[0];
    a->c = v[1];
    a->h = v[2];
    a->w = v[3];
    return 0;
}

static int parse_args(int argc, char **argv, soak_args *a) {
    a->calls = 100000;
    a->check_every = 100;
    a->n = 8;
    a->c = 16;
    a->h = 16;
    a->w = 16;
    a->layout = CLBN_LAYOUT_NCHW;
    a->device = NULL;
    a->json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "clbn_soak: %s needs a value (or is unknown)\n", opt);
            return -1;
        }
        const char *val = argv[++i];
        int bad = 0;
        if (!strcmp(opt, "--calls"))
            bad = parse_ulong(val, &a->calls);
        else if (!strcmp(opt, "--check-every"))
            bad = parse_ulong(val, &a->check_every);
        else if (!strcmp(opt, "--shape"))
            bad = parse_shape(val, a);
        else if (!strcmp(opt, "--layout")) {
            if (!strcmp(val, "nchw"))
                a->layout = CLBN_LAYOUT_NCHW;
            else if (!strcmp(val, "nhwc"))
                a->layout = CLBN_LAYOUT_NHWC;
            else
                bad = 1;
        } else if (!strcmp(opt, "--device"))
            a->device = val;
        else if (!strcmp(opt, "--json"))
            a->json = val;
        else {
            fprintf(stderr, "clbn_soak: unknown option %s\n", opt);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "clbn_soak: bad value for %s: %s\n", opt, val);
            return -1;
        }
    }
    if (a->calls < 2) {
        fprintf(stderr, "clbn_soak: --calls must be at least 2\n");
        return -1;
    }
    return 0;
}

/* Resident set size in KiB, from /proc/self/statm (pages); -1 when it cannot be read. */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    unsigned long size = 0, resident = 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (got != 2)
        return -1;
    return (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / 1024ul);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int check_(clbn_status st, const char *what) {
    if (st == CLBN_SUCCESS)
        return 0;
    fprintf(stderr, "clbn_soak: %s: %s: %s\n", what, clbn_status_name(st),
            clbn_last_error_message());
    return -1;
}

static int check_cl(cl_int err, const char *what) {
    if (err == CL_SUCCESS)
        return 0;
    fprintf(stderr, "clbn_soak: %s: %s\n", what, clbn_status_name((clbn_status)err));
    return -1;
}

static int outputs_alloc(soak_outputs *o, size_t count, size_t c) {
    memset(o, 0, sizeof *o);
    o->y = malloc(count * sizeof(float));
    o->dx = malloc(count * sizeof(float));
    int ok = o->y && o->dx;
    for (size_t i = 0; i < SOAK_NVEC; i++) {
        o->vec[soak_vectors[i]] = malloc(c * sizeof(float));
        ok = ok && o->vec[soak_vectors[i]];
    }
    return ok ? 0 : -1;
}

static void outputs_free(soak_outputs *o) {
    free(o->y);
    free(o->dx);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++)
        free(o->vec[v]);
}

/* Reads everything the last call produced (blocking; the buffers are the soak's own, read with
 * the driver's functions, the state's vectors through the library). */
static int outputs_read(clbn_bn *bn, cl_command_queue q, cl_mem y, cl_mem dx, size_t count,
                        size_t c, soak_outputs *o) {
    if (check_cl(clEnqueueReadBuffer(q, y, CL_TRUE, 0, count * sizeof(float), o->y, 0, NULL, NULL),
                 "reading y") ||
        check_cl(
            clEnqueueReadBuffer(q, dx, CL_TRUE, 0, count * sizeof(float), o->dx, 0, NULL, NULL),
            "reading dx"))
        return -1;
    for (size_t i = 0; i < SOAK_NVEC; i++)
        if (check_(clbn_bn_read_vector(bn, soak_vectors[i], o->vec[soak_vectors[i]], c),
                   clbn_vector_name(soak_vectors[i])))
            return -1;
    return check_(clbn_bn_get_batches_tracked(bn, &o->t), "clbn_bn_get_batches_tracked");
}

/* The name of the first output that differs from the reference, or NULL when all are equal. */
static const char *outputs_differ(const soak_outputs *a, const soak_outputs *b, size_t count,
                                  size_t c) {
    if (memcmp(a->y, b->y, count * sizeof(float)))
        return "y";
    if (memcmp(a->dx, b->dx, count * sizeof(float)))
        return "dx";
    for (size_t i = 0; i < SOAK_NVEC; i++)
        if (memcmp(a->vec[soak_vectors[i]], b->vec[soak_vectors[i]], c * sizeof(float)))
            return clbn_vector_name(soak_vectors[i]);
    if (a->t != b->t)
        return "batches tracked";
    return NULL;
}

/* Deterministic inputs: a small LCG, values in [-2, 2) plus a per-channel offset so the batch
 * statistics differ between channels. */
static void fill_inputs(float *x, float *dy, size_t count) {
    uint32_t s = 12345u;
    for (size_t i = 0; i < count; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1u << 24) * 4.0f - 2.0f + (float)(i % 7) * 0.25f;
        s = s * 1664525u + 1013904223u;
        dy[i] = (float)(s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
}

/* One iteration: restore the running statistics and t, forward, backward (waiting on the
 * forward's event), then wait for the backward. The events come through the library's table,
 * so they are released through it too and the counts stay balanced. */
static int one_call(clbn_bn *bn, const clbn_shape *shape, cl_mem x, cl_mem y, cl_mem dy, cl_mem dx,
                    const float *rmean0, const float *rvar0) {
    size_t c = (size_t)shape->c;
    if (check_(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rmean0, c), "restoring mean") ||
        check_(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, rvar0, c), "restoring var") ||
        check_(clbn_bn_set_batches_tracked(bn, 0), "restoring t"))
        return -1;
    cl_event fwd = NULL, bwd = NULL;
    if (check_(clbn_bn_forward_train(bn, shape, x, 0, y, 0, NULL, NULL, 0, NULL, &fwd),
               "clbn_bn_forward_train"))
        return -1;
    clbn_status st =
        clbn_bn_backward(bn, shape, x, 0, y, 0, dy, 0, dx, 0, NULL, NULL, 1, &fwd, &bwd);
    int rc = check_(st, "clbn_bn_backward");
    if (rc == 0)
        rc = check_cl(clWaitForEvents(1, &bwd), "waiting for the backward");
    clbn_cl.clReleaseEvent(fwd);
    if (bwd)
        clbn_cl.clReleaseEvent(bwd);
    return rc;
}

typedef struct soak_result {
    unsigned long calls_done, warmup;
    double seconds;
    long rss_warm, rss_end, rss_peak;
    cl_counts warm, end, after_release;
    int counts_equal, identical, released_to_zero, rss_ok;
    const char *first_diff;
    unsigned long first_diff_call, counts_diff_call;
    char plan_fwd[160], plan_bwd[160];
} soak_result;

/* "single-read, 1 kernel(s), work-group 256, split 1" */
static const char *plan_format(const clbn_bn *bn, clbn_op op, const clbn_shape *shape, char *buf,
                               size_t size) {
    clbn_plan p;
    if (clbn_bn_query_plan(bn, op, shape, &p) != CLBN_SUCCESS)
        snprintf(buf, size, "(no plan: %s)", clbn_last_error_message());
    else
        snprintf(buf, size, "%s, %u kernel(s), work-group %zu, split %" PRIu64 ", vector %u",
                 clbn_strategy_name(p.strategy), p.kernels, p.work_group_size, p.split,
                 p.vector_width);
    return buf;
}

static void print_result(const soak_args *a, const soak_result *r, const char *device) {
    char cw[160], ce[160], cr[160];
    cl_count_format(&r->warm, cw, sizeof cw);
    cl_count_format(&r->end, ce, sizeof ce);
    cl_count_format(&r->after_release, cr, sizeof cr);
    printf("clbn_soak: device %s, shape %" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
           " %s, check every %lu\n",
           device, a->n, a->c, a->h, a->w, a->layout == CLBN_LAYOUT_NHWC ? "nhwc" : "nchw",
           a->check_every);
    printf("plan forward   %s\n", r->plan_fwd);
    printf("plan backward  %s\n", r->plan_bwd);
    printf("calls          %lu (warm-up %lu)\n", r->calls_done, r->warmup);
    printf("seconds        %.2f\n", r->seconds);
    printf("calls/s        %.1f\n", r->seconds > 0 ? (double)r->calls_done / r->seconds : 0.0);
    printf("rss warm-up    %ld KiB\n", r->rss_warm);
    printf("rss end        %ld KiB\n", r->rss_end);
    printf("rss growth     %ld KiB (peak after warm-up %ld KiB, limit < %ld KiB)%s\n",
           r->rss_end - r->rss_warm, r->rss_peak, SOAK_RSS_LIMIT_KIB,
           SOAK_ASAN ? " [not judged: AddressSanitizer build]" : "");
    printf("objects warm   %s\n", cw);
    printf("objects end    %s (%s)\n", ce, r->counts_equal ? "equal" : "DIFFERENT");
    printf("objects freed  %s\n", cr);
    printf("bit-identical  %s\n", r->identical ? "yes" : "no");
}

static void write_json(const soak_args *a, const soak_result *r, const char *device, int pass) {
    FILE *f = fopen(a->json, "w");
    if (!f) {
        fprintf(stderr, "clbn_soak: cannot write %s\n", a->json);
        return;
    }
    fprintf(f,
            "{\"device\":\"%s\",\"shape\":[%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
            "],\"layout\":\"%s\",\"calls\":%lu,\"warmup\":%lu,\"check_every\":%lu,"
            "\"seconds\":%.3f,\"calls_per_s\":%.1f,\"rss_warm_kib\":%ld,\"rss_end_kib\":%ld,"
            "\"rss_growth_kib\":%ld,\"rss_peak_kib\":%ld,\"rss_judged\":%s,\"objects_warm\":[",
            device, a->n, a->c, a->h, a->w, a->layout == CLBN_LAYOUT_NHWC ? "nhwc" : "nchw",
            r->calls_done, r->warmup, a->check_every, r->seconds,
            r->seconds > 0 ? (double)r->calls_done / r->seconds : 0.0, r->rss_warm, r->rss_end,
            r->rss_end - r->rss_warm, r->rss_peak, SOAK_ASAN ? "false" : "true");
    for (int k = 0; k < CL_COUNT_KINDS; k++)
        fprintf(f, "%s%ld", k ? "," : "", r->warm.live[k]);
    fprintf(f, "],\"objects_end\":[");
    for (int k = 0; k < CL_COUNT_KINDS; k++)
        fprintf(f, "%s%ld", k ? "," : "", r->end.live[k]);
    fprintf(f, "],\"counts_equal\":%s,\"bit_identical\":%s,\"pass\":%s}\n",
            r->counts_equal ? "true" : "false", r->identical ? "true" : "false",
            pass ? "true" : "false");
    fclose(f);
}

int main(int argc, char **argv) {
    soak_args a;
    if (parse_args(argc, argv, &a)) {
        usage(stderr);
        return 2;
    }
    /* Before anything touches OpenCL, so every object the library makes is counted. */
    clbn_cl = *cl_count_table(&clbn_cl_real);

    size_t ndev = 0;
    if (clbn_device_list(NULL, 0, &ndev) != CLBN_SUCCESS || ndev == 0) {
        fprintf(stderr, "SKIP: no OpenCL device found (install pocl-opencl-icd)\n");
        return 77;
    }
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = a.device;
    clbn_context *ctx = NULL;
    if (check_(clbn_context_create(&co, &ctx), "clbn_context_create"))
        return 1;
    clbn_device_info info;
    if (check_(clbn_context_get_device_info(ctx, &info), "clbn_context_get_device_info"))
        return 1;
    cl_context clctx = NULL;
    cl_command_queue q = NULL;
    if (check_(clbn_context_get_cl(ctx, &clctx, &q), "clbn_context_get_cl"))
        return 1;

    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = a.c;
    clbn_bn *bn = NULL;
    if (check_(clbn_bn_create(ctx, &bo, &bn), "clbn_bn_create"))
        return 1;

    clbn_shape shape = {a.layout, a.n, a.c, a.h, a.w};
    size_t count = (size_t)(a.n * a.c * a.h * a.w), c = (size_t)a.c;
    float *hx = malloc(count * sizeof(float)), *hdy = malloc(count * sizeof(float));
    float *gamma = malloc(c * sizeof(float)), *beta = malloc(c * sizeof(float));
    float *rmean0 = malloc(c * sizeof(float)), *rvar0 = malloc(c * sizeof(float));
    soak_outputs ref, cur;
    if (!hx || !hdy || !gamma || !beta || !rmean0 || !rvar0 || outputs_alloc(&ref, count, c) ||
        outputs_alloc(&cur, count, c)) {
        fprintf(stderr, "clbn_soak: out of host memory\n");
        return 1;
    }
    fill_inputs(hx, hdy, count);
    /* gamma and beta away from 1 and 0 so the affine step is exercised; running statistics
     * away from the defaults so restoring them is visible in the outputs. */
    for (size_t i = 0; i < c; i++) {
        gamma[i] = 0.5f + 0.125f * (float)(i % 5);
        beta[i] = -0.25f + 0.0625f * (float)(i % 9);
        rmean0[i] = 0.01f * (float)i;
        rvar0[i] = 1.0f + 0.02f * (float)i;
    }
    /* The soak's own buffers are made with the driver's functions, not the table: the counts
     * are the library's objects alone. */
    cl_int err = CL_SUCCESS;
    cl_mem x = clCreateBuffer(clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              count * sizeof(float), hx, &err);
    cl_mem dy = err == CL_SUCCESS ? clCreateBuffer(clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                                   count * sizeof(float), hdy, &err)
                                  : NULL;
    cl_mem y = err == CL_SUCCESS
                   ? clCreateBuffer(clctx, CL_MEM_READ_WRITE, count * sizeof(float), NULL, &err)
                   : NULL;
    cl_mem dx = err == CL_SUCCESS
                    ? clCreateBuffer(clctx, CL_MEM_READ_WRITE, count * sizeof(float), NULL, &err)
                    : NULL;
    if (check_cl(err, "clCreateBuffer") ||
        check_(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, gamma, c), "writing gamma") ||
        check_(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, beta, c), "writing beta"))
        return 1;

    soak_result r;
    memset(&r, 0, sizeof r);
    r.warmup = a.calls / 2 < SOAK_WARMUP_MAX ? a.calls / 2 : SOAK_WARMUP_MAX;
    r.counts_equal = 1;
    r.identical = 1;
    int failed_call = 0;
    double t0 = now_s();
    for (unsigned long i = 1; i <= a.calls; i++) {
        if (one_call(bn, &shape, x, y, dy, dx, rmean0, rvar0)) {
            fprintf(stderr, "clbn_soak: call %lu failed\n", i);
            failed_call = 1;
            break;
        }
        r.calls_done = i;
        if (i == 1) {
            if (outputs_read(bn, q, y, dx, count, c, &ref)) {
                failed_call = 1;
                break;
            }
        }
        if (i == r.warmup) {
            cl_count_get(&r.warm);
            r.rss_warm = rss_kib();
            r.rss_peak = r.rss_warm;
        }
        int check = (i % a.check_every == 0) || i == a.calls || i == r.warmup;
        if (check && i > 1) {
            if (outputs_read(bn, q, y, dx, count, c, &cur)) {
                failed_call = 1;
                break;
            }
            const char *d = outputs_differ(&ref, &cur, count, c);
            if (d && r.identical) {
                r.identical = 0;
                r.first_diff = d;
                r.first_diff_call = i;
            }
        }
        if (check && i >= r.warmup) {
            cl_counts now;
            cl_count_get(&now);
            if (!cl_count_equal(&now, &r.warm) && r.counts_equal) {
                r.counts_equal = 0;
                r.counts_diff_call = i;
            }
            long rss = rss_kib();
            if (rss > r.rss_peak)
                r.rss_peak = rss;
        }
    }
    r.seconds = now_s() - t0;
    cl_count_get(&r.end);
    if (!cl_count_equal(&r.end, &r.warm))
        r.counts_equal = 0;
    r.rss_end = rss_kib();
    /* After the last snapshot: a query may build what the calls did not need. */
    plan_format(bn, CLBN_OP_FORWARD_TRAIN, &shape, r.plan_fwd, sizeof r.plan_fwd);
    plan_format(bn, CLBN_OP_BACKWARD, &shape, r.plan_bwd, sizeof r.plan_bwd);

    clReleaseMemObject(x);
    clReleaseMemObject(dy);
    clReleaseMemObject(y);
    clReleaseMemObject(dx);
    clbn_bn_release(bn);
    clbn_context_release(ctx);
    cl_count_get(&r.after_release);
    cl_counts zero;
    memset(&zero, 0, sizeof zero);
    r.released_to_zero = cl_count_equal(&r.after_release, &zero);

    r.rss_ok = r.rss_warm >= 0 && r.rss_end >= 0 && r.rss_end - r.rss_warm < SOAK_RSS_LIMIT_KIB;
    int pass = !failed_call && r.counts_equal && r.identical && r.released_to_zero &&
               (r.rss_ok || SOAK_ASAN);
    print_result(&a, &r, info.device_name);
    if (a.json)
        write_json(&a, &r, info.device_name, pass);

    if (failed_call)
        fprintf(stderr, "FAIL: a call failed after %lu calls\n", r.calls_done);
    if (!r.identical)
        fprintf(stderr, "FAIL: %s of call %lu differs from the first call's\n", r.first_diff,
                r.first_diff_call);
    if (!r.counts_equal)
        fprintf(stderr,
                "FAIL: the live OpenCL objects changed after the warm-up (first seen at "
                "call %lu)\n",
                r.counts_diff_call ? r.counts_diff_call : r.calls_done);
    if (!r.released_to_zero)
        fprintf(stderr, "FAIL: OpenCL objects still live after releasing the state and context\n");
    if (!r.rss_ok && !SOAK_ASAN)
        fprintf(stderr, "FAIL: resident memory grew by %ld KiB after the warm-up (limit < %ld)\n",
                r.rss_end - r.rss_warm, SOAK_RSS_LIMIT_KIB);
    if (SOAK_ASAN)
        printf("note: AddressSanitizer build: resident memory is reported, not judged "
               "(its quarantine grows it); LeakSanitizer checks for leaks at exit\n");

    outputs_free(&ref);
    outputs_free(&cur);
    free(hx);
    free(hdy);
    free(gamma);
    free(beta);
    free(rmean0);
    free(rvar0);
    printf("%s\n", pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
}
