/* test_launch.c — what the library asks of OpenCL stays within the limits: every kernel launch is
 * checked against the context's limits in force (work-group size, the kernel's own work-group
 * limit, local memory counting every __local argument, groups per grid dimension), each call's
 * launches match what clbn_bn_query_plan said of it, and the outputs match the reference. Run on
 * every device profile, the default context and the GPU-limited one; plus the plans the
 * profiles give, and a kernel work-group cap of 32.
 *
 * Linked statically: the watch replaces clSetKernelArg, clCreateKernel and
 * clEnqueueNDRangeKernel in clbn_cl (host/internal.h). */
#include "internal.h"
#include "profiles.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * The watch: __local argument sizes per kernel, and a check of every launch
 * ------------------------------------------------------------------------------------------ */
#define WATCH_KERNELS 1024
#define WATCH_ARGS 64

typedef struct kernel_locals {
    cl_kernel k;
    size_t bytes[WATCH_ARGS]; /* per argument index: __local size, 0 for other arguments */
} kernel_locals;

/* What one call launched. */
typedef struct launch_record {
    unsigned launches;
    size_t first_wg;    /* work-group size of the call's first launch */
    uint64_t local_max; /* the most local memory one launch used */
    uint64_t groups_max[2];
} launch_record;

typedef struct watch {
    clbn_limits lim; /* of the context under test */
    cl_device_id dev;
    launch_record rec;
    unsigned violations;
    char first_violation[768];
    /* CL_KERNEL_LOCAL_MEM_SIZE after the __local arguments are set: does it include them? */
    unsigned driver_counts_args, driver_omits_args;
    kernel_locals kernels[WATCH_KERNELS];
    size_t kernel_count;
} watch;

static watch g_watch;

static kernel_locals *watch_kernel(cl_kernel k, int create) {
    for (size_t i = 0; i < g_watch.kernel_count; i++)
        if (g_watch.kernels[i].k == k)
            return &g_watch.kernels[i];
    if (!create || g_watch.kernel_count == WATCH_KERNELS)
        return NULL;
    kernel_locals *e = &g_watch.kernels[g_watch.kernel_count++];
    memset(e, 0, sizeof *e);
    e->k = k;
    return e;
}

static void watch_violation(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void watch_violation(const char *fmt, ...) {
    if (g_watch.violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_watch.first_violation, sizeof g_watch.first_violation, fmt, ap);
        va_end(ap);
    }
}

static cl_kernel CL_API_CALL watch_create_kernel(cl_program p, const char *name,
                                                 cl_int *errcode_ret) {
    cl_kernel k = clbn_cl_real.clCreateKernel(p, name, errcode_ret);
    kernel_locals *e = k ? watch_kernel(k, 1) : NULL;
    if (e) /* a new kernel may reuse a released one's address */
        memset(e->bytes, 0, sizeof e->bytes);
    return k;
}

/* The library holds one reference to each kernel it creates: its release frees the entry. */
static cl_int CL_API_CALL watch_release_kernel(cl_kernel k) {
    kernel_locals *e = watch_kernel(k, 0);
    if (e)
        *e = g_watch.kernels[--g_watch.kernel_count];
    return clbn_cl_real.clReleaseKernel(k);
}

static cl_int CL_API_CALL watch_set_kernel_arg(cl_kernel k, cl_uint i, size_t n, const void *v) {
    cl_int err = clbn_cl_real.clSetKernelArg(k, i, n, v);
    kernel_locals *e = watch_kernel(k, 1);
    if (!e || i >= WATCH_ARGS)
        watch_violation("kernel %p argument %u: beyond the watch's tables", (void *)k, i);
    else if (err == CL_SUCCESS)
        e->bytes[i] = v ? 0 : n;
    return err;
}

/* The kernel's own local memory: CL_KERNEL_LOCAL_MEM_SIZE of a fresh kernel of the same name
 * from the same program, before any __local argument is set. */
static cl_int kernel_own_local(cl_kernel k, const char *name, cl_ulong *own) {
    cl_program prog = NULL;
    cl_int err = clGetKernelInfo(k, CL_KERNEL_PROGRAM, sizeof prog, &prog, NULL);
    if (err != CL_SUCCESS)
        return err;
    cl_kernel fresh = clbn_cl_real.clCreateKernel(prog, name, &err);
    if (err != CL_SUCCESS)
        return err;
    err = clbn_cl_real.clGetKernelWorkGroupInfo(fresh, g_watch.dev, CL_KERNEL_LOCAL_MEM_SIZE,
                                                sizeof *own, own, NULL);
    clbn_cl_real.clReleaseKernel(fresh);
    return err;
}

static cl_int CL_API_CALL watch_enqueue(cl_command_queue q, cl_kernel k, cl_uint dim,
                                        const size_t *off, const size_t *g, const size_t *l,
                                        cl_uint nw, const cl_event *w, cl_event *e) {
    const clbn_limits *lim = &g_watch.lim;
    char name[64] = "?";
    clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
    name[sizeof name - 1] = '\0';
    if (dim != 2 || !l || !g) {
        watch_violation("%s: work_dim %u, global %s, local %s (expected a 2-D range with both)",
                        name, dim, g ? "set" : "NULL", l ? "set" : "NULL");
        return clbn_cl_real.clEnqueueNDRangeKernel(q, k, dim, off, g, l, nw, w, e);
    }
    for (int d = 0; d < 2; d++)
        if (l[d] == 0 || g[d] % l[d] != 0)
            watch_violation("%s: global[%d] = %zu is not a multiple of local[%d] = %zu", name, d,
                            g[d], d, l[d]);
    const size_t wg = l[0] * l[1];
    size_t kernel_wg = 0;
    cl_ulong total_local = 0, own_local = 0;
    cl_int err = clbn_cl_real.clGetKernelWorkGroupInfo(k, g_watch.dev, CL_KERNEL_WORK_GROUP_SIZE,
                                                       sizeof kernel_wg, &kernel_wg, NULL);
    if (err == CL_SUCCESS)
        err = clbn_cl_real.clGetKernelWorkGroupInfo(k, g_watch.dev, CL_KERNEL_LOCAL_MEM_SIZE,
                                                    sizeof total_local, &total_local, NULL);
    if (err == CL_SUCCESS)
        err = kernel_own_local(k, name, &own_local);
    if (err != CL_SUCCESS)
        watch_violation("%s: asking the kernel's limits failed (%d)", name, err);
    if (wg > lim->max_work_group_size)
        watch_violation("%s: work-group %zux%zu = %zu > limits.max_work_group_size %zu", name, l[0],
                        l[1], wg, lim->max_work_group_size);
    if (wg > kernel_wg)
        watch_violation("%s: work-group %zu > the kernel's CL_KERNEL_WORK_GROUP_SIZE %zu", name, wg,
                        kernel_wg);
    if (lim->kernel_work_group_size && wg > lim->kernel_work_group_size)
        watch_violation("%s: work-group %zu > limits.kernel_work_group_size %zu", name, wg,
                        lim->kernel_work_group_size);

    /* The kernel's own local memory (rounded up to 16 bytes, as the library counts it) plus its
     * __local arguments, each a whole multiple of 16 bytes so a driver's alignment adds nothing.
     * The driver's own figure for the launched kernel either leaves the arguments out or holds
     * them (PoCL: own + arguments; NVIDIA 580: 16 bytes more than own + arguments when they were
     * not multiples of 16): it must never exceed the library's count. */
    uint64_t args = 0;
    const kernel_locals *kl = watch_kernel(k, 0);
    for (size_t i = 0; kl && i < WATCH_ARGS; i++) {
        if (kl->bytes[i] % 16)
            watch_violation("%s: __local argument %zu is %zu bytes, not a multiple of 16", name, i,
                            kl->bytes[i]);
        args += kl->bytes[i];
    }
    const uint64_t used = ((own_local + 15) & ~(uint64_t)15) + args;
    if (total_local > own_local && args > 0)
        g_watch.driver_counts_args++;
    else if (args > 0)
        g_watch.driver_omits_args++;
    if (total_local > used)
        watch_violation("%s: the driver reports %llu bytes of local memory, more than the %llu the "
                        "library counted (own %llu + arguments %llu)",
                        name, (unsigned long long)total_local, (unsigned long long)used,
                        (unsigned long long)own_local, (unsigned long long)args);
    if (used > lim->local_mem_size)
        watch_violation("%s: local memory %llu (own %llu + arguments %llu) > limits.local_mem_size "
                        "%llu",
                        name, (unsigned long long)used, (unsigned long long)own_local,
                        (unsigned long long)args, (unsigned long long)lim->local_mem_size);
    const uint64_t groups[2] = {l[0] ? g[0] / l[0] : 0, l[1] ? g[1] / l[1] : 0};
    if (groups[0] > CLBN_MAX_GROUPS_DIM0)
        watch_violation("%s: %llu groups in dimension 0 > 2^31 - 1", name,
                        (unsigned long long)groups[0]);
    if (groups[1] > lim->max_groups_per_dim)
        watch_violation("%s: %llu groups in dimension 1 > limits.max_groups_per_dim %llu", name,
                        (unsigned long long)groups[1], (unsigned long long)lim->max_groups_per_dim);

    launch_record *r = &g_watch.rec;
    if (r->launches++ == 0)
        r->first_wg = wg;
    if (used > r->local_max)
        r->local_max = used;
    for (int d = 0; d < 2; d++)
        if (groups[d] > r->groups_max[d])
            r->groups_max[d] = groups[d];
    return clbn_cl_real.clEnqueueNDRangeKernel(q, k, dim, off, g, l, nw, w, e);
}

static void watch_install(void) {
    clbn_cl = clbn_cl_real;
    clbn_cl.clCreateKernel = watch_create_kernel;
    clbn_cl.clReleaseKernel = watch_release_kernel;
    clbn_cl.clSetKernelArg = watch_set_kernel_arg;
    clbn_cl.clEnqueueNDRangeKernel = watch_enqueue;
}

/* Watches launches on ctx from now on, with a clean record. */
static void watch_context(clbn_context *ctx) {
    clbn_device_info info;
    TU_OK(clbn_context_get_limits(ctx, &g_watch.lim));
    TU_OK(clbn_context_get_device_info(ctx, &info));
    g_watch.dev = info.device;
    g_watch.violations = 0;
    g_watch.first_violation[0] = '\0';
    memset(&g_watch.rec, 0, sizeof g_watch.rec);
}

static void watch_assert_clean(const char *when) {
    if (g_watch.violations)
        fail_msg("%s: %u launch(es) outside the limits; the first: %s", when, g_watch.violations,
                 g_watch.first_violation);
}

/* ------------------------------------------------------------------------------------------
 * Contexts
 * ------------------------------------------------------------------------------------------ */
#define MAX_CONTEXTS 16
typedef struct context_row {
    char name[48];
    clbn_limits limits;
    int gpu_limits; /* tu_context_gpu_limits() */
} context_row;

static context_row g_rows[MAX_CONTEXTS];
static clbn_context *g_ctx[MAX_CONTEXTS];
static size_t g_ctx_count;
static size_t g_default_ctx, g_kwg32_ctx, g_gpu_limits_ctx;

static size_t add_context_row(const char *name, const clbn_limits *limits, int gpu_limits) {
    context_row *r = &g_rows[g_ctx_count];
    snprintf(r->name, sizeof r->name, "%s", name);
    if (limits)
        r->limits = *limits;
    r->gpu_limits = gpu_limits;
    return g_ctx_count++;
}

static void define_contexts(void) {
    clbn_limits l;
    memset(&l, 0, sizeof l);
    g_default_ctx = add_context_row("default", NULL, 0);
    g_gpu_limits_ctx = add_context_row("gpu-limits", NULL, 1);
    for (size_t i = 0; i < bench_profile_count; i++)
        add_context_row(bench_profiles[i].name, &bench_profiles[i].limits, 0);
    /* The limits under which NHWC 8x256x8x8 once asked for 2*r_extra*4 bytes more local memory
     * than the plan counted. */
    for (int local = 0; local < 2; local++)
        for (int vec = 0; vec < 2; vec++) {
            memset(&l, 0, sizeof l);
            l.max_work_group_size = 256;
            l.local_mem_size = local ? 32768 : 16384;
            l.vector_width = vec ? 8 : 4;
            l.device_type = CLBN_DEVICE_KIND_GPU;
            char name[48];
            snprintf(name, sizeof name, "gpu256-local%uk-vec%u", local ? 32u : 16u, vec ? 8u : 4u);
            add_context_row(name, &l, 0);
        }
    memset(&l, 0, sizeof l);
    l.kernel_work_group_size = 32;
    g_kwg32_ctx = add_context_row("kernel-wg32", &l, 0);
}

static clbn_context *find_context(const char *name) {
    for (size_t i = 0; i < g_ctx_count; i++)
        if (!strcmp(g_rows[i].name, name))
            return g_ctx[i];
    fail_msg("no context %s", name);
    return NULL;
}

static int group_setup(void **state) {
    (void)state;
    clbn_context_release(tu_context()); /* exits 77 without a device */
    watch_install(); /* before the contexts, so every kernel's creation is seen */
    for (size_t i = 0; i < g_ctx_count; i++) {
        if (g_rows[i].gpu_limits) {
            g_ctx[i] = tu_context_gpu_limits();
            continue;
        }
        clbn_context_options o;
        clbn_context_options_init(&o);
        o.limits = g_rows[i].limits;
        clbn_status st = clbn_context_create(&o, &g_ctx[i]);
        if (st != CLBN_SUCCESS) {
            fprintf(stderr, "context %s: %s: %s\n", g_rows[i].name, clbn_status_name(st),
                    clbn_last_error_message());
            return -1;
        }
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    print_message("CL_KERNEL_LOCAL_MEM_SIZE after __local arguments are set: includes them in "
                  "%u launches, leaves them out in %u\n",
                  g_watch.driver_counts_args, g_watch.driver_omits_args);
    for (size_t i = 0; i < g_ctx_count; i++) {
        clbn_context_release(g_ctx[i]);
        g_ctx[i] = NULL;
    }
    clbn_cl = clbn_cl_real;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * One op on one context: the launches of the call against its plan, then the reference
 * ------------------------------------------------------------------------------------------ */
typedef struct op_row {
    clbn_op op;
    uint32_t flags;
    clbn_activation act;
} op_row;

typedef struct launch_case {
    size_t ctx;
    ref_case k;
    int reference; /* also ref_check_case (large shapes: on some contexts only) */
} launch_case;

static cl_mem pattern_buffer(clbn_context *ctx, size_t n, uint32_t salt) {
    float *host = tu_floats(n);
    uint32_t s = 2463534242u ^ salt;
    for (size_t i = 0; i < n; i++) { /* cheap, bounded values: the reference checks are below */
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        host[i] = (float)(s % 2000u) / 250.0f - 2.0f + (float)(i % 7);
    }
    cl_mem m = tu_buffer_from(ctx, host, n);
    free(host);
    return m;
}

static clbn_status call_op(clbn_bn *bn, clbn_op op, const clbn_shape *s, cl_mem x, cl_mem y,
                           cl_mem dy, cl_mem dx) {
    switch (op) {
    case CLBN_OP_FORWARD_TRAIN:
        return clbn_bn_forward_train(bn, s, x, 0, y, 0, NULL, NULL, 0, NULL, NULL);
    case CLBN_OP_FORWARD_INFER:
        return clbn_bn_forward_infer(bn, s, x, 0, y, 0, NULL, 0, NULL, NULL);
    case CLBN_OP_FORWARD_FROZEN:
        return clbn_bn_forward_frozen(bn, s, x, 0, y, 0, NULL, 0, NULL, NULL);
    case CLBN_OP_BACKWARD:
        return clbn_bn_backward(bn, s, x, 0, y, 0, dy, 0, dx, 0, NULL, NULL, 0, NULL, NULL);
    case CLBN_OP_BACKWARD_FROZEN:
        return clbn_bn_backward_frozen(bn, s, x, 0, y, 0, dy, 0, dx, 0, NULL, 0, NULL, NULL);
    }
    return CLBN_ERROR_INVALID_ARGUMENT;
}

/* Runs the op once with the launches recorded, and compares them with the plan: launch count,
 * the first launch's work-group (the kernel the plan describes), the most local memory and
 * groups per dimension. The plan's local_bytes is what the call asks for: a launch using more
 * is a bug; the largest launch should use exactly that. */
static void check_call_against_plan(clbn_context *ctx, const ref_case *k, const char *ctx_name) {
    const clbn_shape *s = &k->shape;
    const size_t n = tu_shape_elems(s);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = s->c;
    o.flags = k->flags;
    o.activation = k->activation;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    cl_mem x = pattern_buffer(ctx, n, 1), dy = pattern_buffer(ctx, n, 2), y = tu_buffer(ctx, n),
           dx = tu_buffer(ctx, n);
    if (k->op == CLBN_OP_BACKWARD)
        TU_OK(call_op(bn, CLBN_OP_FORWARD_TRAIN, s, x, y, dy, dx));
    if (k->op == CLBN_OP_BACKWARD_FROZEN)
        TU_OK(call_op(bn, CLBN_OP_FORWARD_FROZEN, s, x, y, dy, dx));
    clbn_plan p;
    TU_OK(clbn_bn_query_plan(bn, k->op, s, &p));
    tu_finish(ctx);
    memset(&g_watch.rec, 0, sizeof g_watch.rec);
    TU_OK(call_op(bn, k->op, s, x, y, dy, dx));
    const launch_record r = g_watch.rec;
    tu_finish(ctx);
    clbn_bn_release(bn);
    clReleaseMemObject(x);
    clReleaseMemObject(y);
    clReleaseMemObject(dy);
    clReleaseMemObject(dx);
    watch_assert_clean(ctx_name);

    if (r.launches != p.kernels)
        fail_msg("%s: %u launches, the plan says %u kernels", ctx_name, r.launches, p.kernels);
    if (r.first_wg != p.work_group_size)
        fail_msg("%s: first launch has work-group %zu, the plan says %zu", ctx_name, r.first_wg,
                 p.work_group_size);
    if (r.local_max > p.local_bytes)
        fail_msg("%s: a launch used %llu bytes of local memory, more than the plan's local_bytes "
                 "%llu (limit %llu)",
                 ctx_name, (unsigned long long)r.local_max, (unsigned long long)p.local_bytes,
                 (unsigned long long)g_watch.lim.local_mem_size);
    if (r.local_max != p.local_bytes)
        fail_msg("%s: the largest launch used %llu bytes of local memory, the plan says %llu",
                 ctx_name, (unsigned long long)r.local_max, (unsigned long long)p.local_bytes);
    for (int d = 0; d < 2; d++)
        if (r.groups_max[d] != p.groups[d])
            fail_msg("%s: at most %llu groups launched in dimension %d, the plan says %llu",
                     ctx_name, (unsigned long long)r.groups_max[d], d,
                     (unsigned long long)p.groups[d]);
}

static void launch_within_limits(void **state) {
    const launch_case *lc = *state;
    clbn_context *ctx = g_ctx[lc->ctx];
    const char *ctx_name = g_rows[lc->ctx].name;
    watch_context(ctx);
    check_call_against_plan(ctx, &lc->k, ctx_name);
    if (lc->reference) {
        clbn_plan plan;
        ref_check_case(ctx, &lc->k, &ref_default_tolerances, &plan);
        watch_assert_clean(ctx_name);
    }
}

/* ------------------------------------------------------------------------------------------
 * Plans across profiles
 * ------------------------------------------------------------------------------------------ */
static clbn_plan plan_of(clbn_context *ctx, clbn_op op, const clbn_shape *s, uint32_t flags) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = s->c;
    o.flags = flags;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    clbn_plan p;
    TU_OK(clbn_bn_query_plan(bn, op, s, &p));
    clbn_bn_release(bn);
    return p;
}

static int same_plan(const clbn_plan *a, const clbn_plan *b) {
    return a->strategy == b->strategy && a->work_group_size == b->work_group_size &&
           a->split == b->split && a->vector_width == b->vector_width &&
           a->channels_per_item == b->channels_per_item;
}

static void print_plan(const char *who, const clbn_plan *p) {
    print_message("      %-22s %s, work-group %zu, split %llu, vector %u, channels/item %u, "
                  "%u kernels, local %llu B, groups %llux%llu\n",
                  who, clbn_strategy_name(p->strategy), p->work_group_size,
                  (unsigned long long)p->split, p->vector_width, p->channels_per_item, p->kernels,
                  (unsigned long long)p->local_bytes, (unsigned long long)p->groups[0],
                  (unsigned long long)p->groups[1]);
}

static const clbn_shape resnet_nhwc = {CLBN_LAYOUT_NHWC, 32, 64, 56, 56};

/* nvidia, amd, embedded and cpu plan the training forward of 32x64x56x56 NHWC four ways. */
static void profiles_plan_differently(void **state) {
    (void)state;
    const char *names[] = {"nvidia", "amd", "embedded", "cpu"};
    enum { P = sizeof names / sizeof names[0] };
    clbn_plan plans[P];
    for (size_t i = 0; i < P; i++) {
        plans[i] = plan_of(find_context(names[i]), CLBN_OP_FORWARD_TRAIN, &resnet_nhwc,
                           CLBN_BN_FLAGS_DEFAULT);
        print_plan(names[i], &plans[i]);
    }
    for (size_t i = 0; i < P; i++)
        for (size_t j = i + 1; j < P; j++)
            if (same_plan(&plans[i], &plans[j]))
                fail_msg("%s and %s give the same plan for fwd_train NHWC 32x64x56x56", names[i],
                         names[j]);
}

/* A GPU item takes one channel vector (its arrays stay in registers); a CPU item several. */
static void channels_per_item_by_device_kind(void **state) {
    (void)state;
    static const clbn_shape shapes[] = {
        {CLBN_LAYOUT_NHWC, 32, 64, 56, 56}, {CLBN_LAYOUT_NHWC, 8, 256, 8, 8},
        {CLBN_LAYOUT_NHWC, 3, 5, 7, 11},    {CLBN_LAYOUT_NHWC, 2, 1024, 2, 2},
        {CLBN_LAYOUT_NC, 60, 100, 1, 1},    {CLBN_LAYOUT_NC, 8, 2048, 1, 1},
    };
    unsigned checked = 0;
    for (size_t ci = 0; ci < g_ctx_count; ci++) {
        clbn_limits lim;
        TU_OK(clbn_context_get_limits(g_ctx[ci], &lim));
        if (lim.device_type != CLBN_DEVICE_KIND_GPU)
            continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++) {
                clbn_plan p = plan_of(g_ctx[ci], (clbn_op)op, &shapes[si], CLBN_BN_FLAGS_DEFAULT);
                if (p.channels_per_item != 1)
                    fail_msg("%s (a GPU) %s %s C = %llu: %u channel vectors per item",
                             g_rows[ci].name, ref_op_name((clbn_op)op),
                             ref_layout_name(shapes[si].layout), (unsigned long long)shapes[si].c,
                             p.channels_per_item);
                checked++;
            }
    }
    print_message("      %u GPU plans with one channel vector per item\n", checked);
    assert_true(checked > 0);
    clbn_plan cpu =
        plan_of(find_context("cpu"), CLBN_OP_FORWARD_TRAIN, &resnet_nhwc, CLBN_BN_FLAGS_DEFAULT);
    print_plan("cpu NHWC C = 64", &cpu);
    if (cpu.channels_per_item <= 1)
        fail_msg("the cpu profile's NHWC plan for C = 64 takes %u channel vector(s) per item",
                 cpu.channels_per_item);
}

/* NCHW 256x512x1x2: N*C = 131072 rows, twice NVIDIA's 65,535 groups in dimension 1. */
static void nvidia_grid_within_65535(void **state) {
    (void)state;
    const clbn_shape s = {CLBN_LAYOUT_NCHW, 256, 512, 1, 2};
    for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++)
        for (int tracked = 0; tracked < 2; tracked++) {
            clbn_plan p =
                plan_of(find_context("nvidia"), (clbn_op)op, &s,
                        tracked ? CLBN_BN_FLAGS_DEFAULT : (CLBN_USE_SCALE | CLBN_USE_SHIFT));
            if (p.groups[1] > 65535)
                fail_msg("nvidia %s: %llu groups in dimension 1", ref_op_name((clbn_op)op),
                         (unsigned long long)p.groups[1]);
        }
}

/* Every field of a plan but the driver's private-memory figure. */
static int same_plan_all(const clbn_plan *a, const clbn_plan *b) {
    return same_plan(a, b) && a->kernels == b->kernels && a->scratch_bytes == b->scratch_bytes &&
           a->local_bytes == b->local_bytes && a->groups[0] == b->groups[0] &&
           a->groups[1] == b->groups[1];
}

/* limits.kernel_work_group_size = 32: every plan within it and correct, and the cap changes the
 * plan. On a CPU-planned context the reduction and elementwise kernels take at most 16 items,
 * but the split merge takes 64 (one item per channel): capped, NHWC 32x64x56x56 (C = 64) merges
 * in two groups of 32. The same device planned as a GPU, whose reductions take 256 items, shows
 * the cap on the reduction itself: every plan wider than 32 there must change. */
static void kernel_work_group_cap_32(void **state) {
    (void)state;
    static const clbn_shape shapes[] = {
        {CLBN_LAYOUT_NHWC, 32, 64, 56, 56}, {CLBN_LAYOUT_NCHW, 4, 2, 128, 128},
        {CLBN_LAYOUT_NCHW, 2, 64, 8, 8},    {CLBN_LAYOUT_NHWC, 8, 256, 8, 8},
        {CLBN_LAYOUT_NC, 60, 100, 1, 1},
    };
    clbn_limits gpu, gpu32;
    memset(&gpu, 0, sizeof gpu);
    gpu.device_type = CLBN_DEVICE_KIND_GPU;
    gpu32 = gpu;
    gpu32.kernel_work_group_size = 32;
    clbn_context_options o;
    clbn_context_options_init(&o);
    clbn_context *pairs[2][2] = {{g_ctx[g_default_ctx], g_ctx[g_kwg32_ctx]}, {NULL, NULL}};
    o.limits = gpu;
    TU_OK(clbn_context_create(&o, &pairs[1][0]));
    o.limits = gpu32;
    TU_OK(clbn_context_create(&o, &pairs[1][1]));
    const char *pair_names[2] = {"default", "GPU-planned"};
    unsigned wider[2] = {0, 0}, differ[2] = {0, 0}, total = 0;
    for (int pi = 0; pi < 2; pi++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++) {
                clbn_plan base =
                    plan_of(pairs[pi][0], (clbn_op)op, &shapes[si], CLBN_BN_FLAGS_DEFAULT);
                clbn_plan capped =
                    plan_of(pairs[pi][1], (clbn_op)op, &shapes[si], CLBN_BN_FLAGS_DEFAULT);
                total++;
                if (capped.work_group_size > 32)
                    fail_msg("%s, capped at 32: %s %s: work-group %zu", pair_names[pi],
                             ref_op_name((clbn_op)op), ref_layout_name(shapes[si].layout),
                             capped.work_group_size);
                const int differs = !same_plan_all(&base, &capped);
                differ[pi] += differs;
                if (base.work_group_size > 32) {
                    wider[pi]++;
                    if (!differs)
                        fail_msg("%s: %s %s: the plan with work-group %zu is the same with the "
                                 "kernels capped at 32",
                                 pair_names[pi], ref_op_name((clbn_op)op),
                                 ref_layout_name(shapes[si].layout), base.work_group_size);
                }
                if (op == CLBN_OP_FORWARD_TRAIN && si == 0) {
                    char who[48];
                    snprintf(who, sizeof who, "%s", pair_names[pi]);
                    print_plan(who, &base);
                    snprintf(who, sizeof who, "%s, cap 32", pair_names[pi]);
                    print_plan(who, &capped);
                    if (!differs)
                        fail_msg("%s: fwd_train NHWC 32x64x56x56 plans the same with the "
                                 "kernels capped at 32",
                                 pair_names[pi]);
                }
            }
    print_message("      %u plans per context: default %u wider than 32, %u changed by the cap; "
                  "GPU-planned %u wider, %u changed\n",
                  total / 2, wider[0], differ[0], wider[1], differ[1]);
    /* and the capped contexts compute right */
    static const ref_case cases[] = {
        {CLBN_OP_FORWARD_TRAIN,
         {CLBN_LAYOUT_NCHW, 4, 2, 128, 128},
         CLBN_BN_FLAGS_DEFAULT,
         CLBN_ACTIVATION_NONE,
         0,
         0,
         0,
         0,
         3201,
         0},
        {CLBN_OP_BACKWARD,
         {CLBN_LAYOUT_NCHW, 2, 64, 8, 8},
         CLBN_BN_FLAGS_DEFAULT,
         CLBN_ACTIVATION_RELU,
         0,
         0,
         0,
         0,
         3202,
         0},
        {CLBN_OP_FORWARD_TRAIN,
         {CLBN_LAYOUT_NHWC, 8, 256, 8, 8},
         CLBN_BN_FLAGS_DEFAULT,
         CLBN_ACTIVATION_NONE,
         0,
         0,
         0,
         0,
         3203,
         0},
        {CLBN_OP_BACKWARD_FROZEN,
         {CLBN_LAYOUT_NC, 60, 100, 1, 1},
         CLBN_BN_FLAGS_DEFAULT,
         CLBN_ACTIVATION_SIGMOID,
         0,
         0,
         0,
         0,
         3204,
         0},
    };
    for (int pi = 0; pi < 2; pi++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            watch_context(pairs[pi][1]);
            clbn_plan p;
            ref_check_case(pairs[pi][1], &cases[i], &ref_default_tolerances, &p);
            watch_assert_clean(pair_names[pi]);
            assert_true(p.work_group_size <= 32);
        }
    clbn_context_release(pairs[1][0]);
    clbn_context_release(pairs[1][1]);
}

/* ------------------------------------------------------------------------------------------ */
int main(void) {
    define_contexts();
    static const op_row ops[] = {
        {CLBN_OP_FORWARD_TRAIN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_NONE},
        {CLBN_OP_FORWARD_INFER, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID},
        {CLBN_OP_FORWARD_INFER, CLBN_USE_SCALE | CLBN_USE_SHIFT, CLBN_ACTIVATION_RELU},
        {CLBN_OP_FORWARD_FROZEN, CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE,
         CLBN_ACTIVATION_NONE},
        {CLBN_OP_BACKWARD, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_RELU},
        {CLBN_OP_BACKWARD_FROZEN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID},
    };
    enum { OPS = sizeof ops / sizeof ops[0] };
    static const clbn_shape small[] = {
        {CLBN_LAYOUT_NHWC, 8, 256, 8, 8},   /* once over local memory by 2*r_extra*4 bytes */
        {CLBN_LAYOUT_NCHW, 256, 512, 1, 2}, /* N*C = 131072 > 65535 groups */
        {CLBN_LAYOUT_NC, 60, 100, 1, 1},    {CLBN_LAYOUT_NCHW, 3, 5, 7, 11},
        {CLBN_LAYOUT_NHWC, 3, 5, 7, 11},    {CLBN_LAYOUT_NCHW, 4, 1, 9, 13}, /* C = 1 */
        {CLBN_LAYOUT_NHWC, 5, 1, 6, 7},     {CLBN_LAYOUT_NHWC, 9, 7, 1, 1},  /* H = W = 1 */
        {CLBN_LAYOUT_NCHW, 16, 3, 1, 1},
    };
    static const clbn_shape large[] = {
        {CLBN_LAYOUT_NCHW, 32, 64, 56, 56},
        {CLBN_LAYOUT_NHWC, 32, 64, 56, 56},
    };
    enum { SMALL = sizeof small / sizeof small[0], LARGE = sizeof large / sizeof large[0] };
    enum { MAX_CASES = MAX_CONTEXTS * (SMALL * OPS + LARGE * 2) };
    static launch_case cases[MAX_CASES];
    static char names[MAX_CASES + 4][256];
    static struct CMUnitTest tests[MAX_CASES + 4];
    size_t n = 0, nc = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(profiles_plan_differently);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(channels_per_item_by_device_kind);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(nvidia_grid_within_65535);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(kernel_work_group_cap_32);
    for (size_t ci = 0; ci < g_ctx_count; ci++) {
        for (size_t si = 0; si < SMALL + LARGE; si++) {
            const int is_large = si >= SMALL;
            for (size_t oi = 0; oi < OPS; oi++) {
                /* large shapes: the training forward and backward only, checked against the
                 * reference on a few contexts (the launches are checked on every one) */
                if (is_large && ops[oi].op != CLBN_OP_FORWARD_TRAIN &&
                    ops[oi].op != CLBN_OP_BACKWARD)
                    continue;
                launch_case *lc = &cases[nc++];
                memset(lc, 0, sizeof *lc);
                lc->ctx = ci;
                lc->k.op = ops[oi].op;
                lc->k.shape = is_large ? large[si - SMALL] : small[si];
                lc->k.flags = ops[oi].flags;
                lc->k.activation = ops[oi].act;
                lc->k.batches_tracked = 2;
                lc->k.seed = 9100 + n;
                lc->k.data_mean = si % 2 ? 20.0 : 0.0;
                lc->reference = !is_large || ci == g_default_ctx || ci == g_gpu_limits_ctx ||
                                !strcmp(g_rows[ci].name, "nvidia");
                char base[160];
                ref_case_name(&lc->k, base, sizeof base);
                snprintf(names[n], sizeof names[n], "%.47s %.159s%s", g_rows[ci].name, base,
                         lc->reference ? "" : " (launches only)");
                tests[n] = (struct CMUnitTest){names[n], launch_within_limits, NULL, NULL, lc};
                n++;
            }
        }
    }
    return _cmocka_run_group_tests("launch", tests, n, group_setup, group_teardown);
}
