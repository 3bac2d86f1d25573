/* test_faults.c — a failed call changes nothing: each OpenCL call an operation makes is failed
 * in turn (the k-th of the n calls a clean run makes, for every k), and the state object must
 * come back byte-for-byte as it was, with a status and a message. Also: devices below OpenCL C
 * 1.2 are refused by both ways of making a context, and a kernel whose own work-group limit is
 * 48 (not a power of two) is planned within it and still computes the right answer.
 *
 * Linked statically: the wrappers replace entries of clbn_cl (host/internal.h). */
#define _POSIX_C_SOURCE 200809L
#include "cl_count.h"
#include "internal.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Fault injection: one wrapper per row of CLBN_CL_CALLS
 * ------------------------------------------------------------------------------------------ */
enum {
#define FAULT_ID_(ret, name, params, args) FAULT_ID_##name,
    CLBN_CL_CALLS(FAULT_ID_)
#undef FAULT_ID_
        FAULT_ID_COUNT
};

static const char *const fault_names[FAULT_ID_COUNT] = {
#define FAULT_NAME_(ret, name, params, args) #name,
    CLBN_CL_CALLS(FAULT_NAME_)
#undef FAULT_NAME_
};

typedef struct fault_state {
    int counting;     /* calls are counted (and may fail) only while set */
    uint64_t calls;   /* calls counted since fault_arm */
    uint64_t fail_at; /* the call to fail, 1-based; 0: none */
    int failed_id;    /* which function the fail_at-th call was; -1: not reached */
    cl_int injected;  /* the code it returned; CL_SUCCESS when it passed through */
} fault_state;

static fault_state g_fault = {0, 0, 0, -1, CL_SUCCESS};

/* What the fault layer forwards to: the counting layer of cl_count.h over the driver, in the
 * sweeps, so every sweep also checks that a failed call leaks no OpenCL object. */
static const clbn_cl_api *g_below = &clbn_cl_real;

/* Releases and retains always pass through: their failures are not actionable. */
static int fault_is_refcount(int id) {
    return !strncmp(fault_names[id], "clRelease", 9) || !strncmp(fault_names[id], "clRetain", 8);
}

/* Counts a call; nonzero when this one must fail. */
static int fault_tick(int id) {
    if (!g_fault.counting)
        return 0;
    if (++g_fault.calls != g_fault.fail_at)
        return 0;
    g_fault.failed_id = id;
    return !fault_is_refcount(id);
}

/* What a failed call returns, by return type: cl_int functions a code, object-creating ones
 * NULL with the code in their last parameter. A new object type in the table needs a line. */
#define FAULT_RETURN_cl_int                                                                        \
    do {                                                                                           \
        g_fault.injected = CL_OUT_OF_RESOURCES;                                                    \
        return CL_OUT_OF_RESOURCES;                                                                \
    } while (0)
#define FAULT_RETURN_OBJECT_                                                                       \
    do {                                                                                           \
        g_fault.injected = CL_OUT_OF_HOST_MEMORY;                                                  \
        if (errcode_ret)                                                                           \
            *errcode_ret = CL_OUT_OF_HOST_MEMORY;                                                  \
        return NULL;                                                                               \
    } while (0)
#define FAULT_RETURN_cl_context FAULT_RETURN_OBJECT_
#define FAULT_RETURN_cl_command_queue FAULT_RETURN_OBJECT_
#define FAULT_RETURN_cl_mem FAULT_RETURN_OBJECT_
#define FAULT_RETURN_cl_program FAULT_RETURN_OBJECT_
#define FAULT_RETURN_cl_kernel FAULT_RETURN_OBJECT_

#define FAULT_WRAPPER_(ret, name, params, args)                                                    \
    static ret CL_API_CALL fault_##name params {                                                   \
        if (fault_tick(FAULT_ID_##name))                                                           \
            FAULT_RETURN_##ret;                                                                    \
        return g_below->name args;                                                                 \
    }
CLBN_CL_CALLS(FAULT_WRAPPER_)
#undef FAULT_WRAPPER_

static const clbn_cl_api fault_api = {
#define FAULT_ENTRY_(ret, name, params, args) fault_##name,
    CLBN_CL_CALLS(FAULT_ENTRY_)
#undef FAULT_ENTRY_
};

/* Counts from now on and fails call number fail_at (0: none). */
static void fault_arm(uint64_t fail_at) {
    g_fault.calls = 0;
    g_fault.fail_at = fail_at;
    g_fault.failed_id = -1;
    g_fault.injected = CL_SUCCESS;
    g_fault.counting = 1;
}

static void fault_disarm(void) {
    g_fault.counting = 0;
}

/* ------------------------------------------------------------------------------------------
 * Contexts
 * ------------------------------------------------------------------------------------------ */
/* Two contexts on the default device with its plan pinned, so the table's strategies hold on
 * any device: planned as a CPU with 2 compute units and 16-float vectors, without a cache (no
 * single-read path; PoCL reports none, a GPU does) and with 8 MiB of it and 6 KiB of local
 * memory. */
enum { CTX_DEFAULT, CTX_CACHED, CTX_COUNT, CTX_COLD = CTX_COUNT };
static clbn_context *g_ctx[CTX_COUNT];
/* CTX_COLD: for each run a new context wrapping the default one's cl_context and queue, without
 * the program cache, so the op itself builds its program and asks its kernels' limits. */
static const char *const ctx_names[CTX_COUNT + 1] = {"pinned, no cache", "pinned, cache 8 MiB",
                                                     "cold context, no cache"};

static clbn_context *context_with(const clbn_limits *limits, int disable_cache) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    if (limits)
        o.limits = *limits;
    o.disable_cache = disable_cache;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    return ctx;
}

static int sweep_setup(void **state) {
    (void)state;
    clbn_context_release(tu_context()); /* exits 77 without a device */
    g_below = cl_count_table(&clbn_cl_real);
    clbn_cl = *g_below;
    for (int i = 0; i < CTX_COUNT; i++) {
        clbn_limits l;
        memset(&l, 0, sizeof l);
        l.device_type = CLBN_DEVICE_KIND_CPU;
        l.compute_units = 2;
        l.vector_width = 16;
        l.cache_size = i == CTX_CACHED ? 8u << 20 : 1;
        /* The cached context's 6 KiB of local memory is under the planner's 40 bytes a
         * channel for the NHWC rows kernels at 64 channels, so its NHWC plans take the
         * per-tile kernels, the ones with a single-read path. */
        if (i == CTX_CACHED)
            l.local_mem_size = 6144;
        clbn_context_options o;
        clbn_context_options_init(&o);
        o.limits = l;
        if (clbn_context_create(&o, &g_ctx[i]) != CLBN_SUCCESS) {
            fprintf(stderr, "cannot create a context: %s\n", clbn_last_error_message());
            return -1;
        }
    }
    return 0;
}

static int sweep_teardown(void **state) {
    (void)state;
    for (int i = 0; i < CTX_COUNT; i++) {
        clbn_context_release(g_ctx[i]);
        g_ctx[i] = NULL;
    }
    clbn_cl = clbn_cl_real;
    g_below = &clbn_cl_real;
    return 0;
}

/* Fails the test when an OpenCL object was created and not released since `before`. */
static void expect_no_leak(const cl_counts *before, const char *what, uint64_t k) {
    cl_counts now;
    cl_count_get(&now);
    if (!cl_count_equal(before, &now)) {
        char a[160], b[160];
        fail_msg("%s, failing call %llu (%s): OpenCL objects before [%s], after [%s]", what,
                 (unsigned long long)k,
                 g_fault.failed_id >= 0 ? fault_names[g_fault.failed_id] : "none",
                 cl_count_format(before, a, sizeof a), cl_count_format(&now, b, sizeof b));
    }
}

/* ------------------------------------------------------------------------------------------
 * The sweep
 * ------------------------------------------------------------------------------------------ */
enum { ANY = -1 };

typedef struct fault_case {
    clbn_op op;
    clbn_shape shape;
    /* The shape of the preparation's training forward and backward: the op's own (on another
     * input), or a smaller one or another layout, so the op must grow the scratch or create
     * its kernels itself. */
    clbn_shape prep;
    uint32_t flags;
    clbn_activation act;
    int ctx;
    int strategy; /* the op's plan on that context; ANY: not asserted */
} fault_case;

#define TRACK_EXP CLBN_BN_FLAGS_DEFAULT
#define TRACK_CUM (CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE)
#define UNTRACKED (CLBN_USE_SCALE | CLBN_USE_SHIFT)
#define NCHW_(n, c, h, w)                                                                          \
    { CLBN_LAYOUT_NCHW, n, c, h, w }
#define NHWC_(n, c, h, w)                                                                          \
    { CLBN_LAYOUT_NHWC, n, c, h, w }
#define NC_(n, c)                                                                                  \
    { CLBN_LAYOUT_NC, n, c, 1, 1 }
#define SAME_                                                                                      \
    { CLBN_LAYOUT_NCHW, 0, 0, 0, 0 }

static const fault_case fault_cases[] = {
    /* training forward: split, group per channel, single read, in both layouts */
    {CLBN_OP_FORWARD_TRAIN, NCHW_(16, 2, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    {CLBN_OP_FORWARD_TRAIN, NHWC_(4, 2, 32, 32), SAME_, TRACK_CUM, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    {CLBN_OP_FORWARD_TRAIN, NCHW_(2, 16, 16, 16), SAME_, TRACK_CUM, CLBN_ACTIVATION_RELU,
     CTX_DEFAULT, CLBN_STRATEGY_GROUP_PER_CHANNEL},
    {CLBN_OP_FORWARD_TRAIN, NHWC_(2, 64, 2, 2), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE, CTX_DEFAULT,
     CLBN_STRATEGY_GROUP_PER_CHANNEL},
    {CLBN_OP_FORWARD_TRAIN, NCHW_(2, 16, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_SIGMOID,
     CTX_CACHED, CLBN_STRATEGY_SINGLE_READ},
    {CLBN_OP_FORWARD_TRAIN, NHWC_(2, 64, 2, 2), SAME_, TRACK_CUM, CLBN_ACTIVATION_NONE, CTX_CACHED,
     CLBN_STRATEGY_SINGLE_READ},
    /* prepared on a smaller NCHW batch: the op creates its NHWC kernels and grows the scratch */
    {CLBN_OP_FORWARD_TRAIN, NHWC_(8, 2, 32, 32), NCHW_(2, 2, 4, 4), TRACK_EXP, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    {CLBN_OP_FORWARD_TRAIN, NC_(60, 100), NC_(3, 100), TRACK_CUM, CLBN_ACTIVATION_NONE, CTX_DEFAULT,
     ANY},
    /* on a context that has built nothing: the op builds its program and asks its kernels */
    {CLBN_OP_FORWARD_TRAIN, NHWC_(4, 8, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE, CTX_COLD,
     CLBN_STRATEGY_SPLIT},
    {CLBN_OP_BACKWARD, NCHW_(2, 16, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_RELU, CTX_COLD,
     CLBN_STRATEGY_GROUP_PER_CHANNEL},
    /* backward after a successful forward */
    {CLBN_OP_BACKWARD, NCHW_(16, 2, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE, CTX_DEFAULT,
     CLBN_STRATEGY_SPLIT},
    {CLBN_OP_BACKWARD, NHWC_(2, 64, 2, 2), SAME_, TRACK_EXP, CLBN_ACTIVATION_RELU, CTX_DEFAULT,
     CLBN_STRATEGY_GROUP_PER_CHANNEL},
    {CLBN_OP_BACKWARD, NCHW_(2, 16, 16, 16), SAME_, TRACK_CUM, CLBN_ACTIVATION_SIGMOID, CTX_CACHED,
     CLBN_STRATEGY_SINGLE_READ},
    {CLBN_OP_BACKWARD, NHWC_(8, 2, 32, 32), NHWC_(2, 2, 4, 4), TRACK_EXP, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    /* frozen forward and backward */
    {CLBN_OP_FORWARD_FROZEN, NCHW_(3, 5, 7, 11), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_ELEMENTWISE},
    {CLBN_OP_FORWARD_FROZEN, NHWC_(3, 5, 7, 11), SAME_, TRACK_EXP, CLBN_ACTIVATION_RELU,
     CTX_DEFAULT, CLBN_STRATEGY_ELEMENTWISE},
    {CLBN_OP_BACKWARD_FROZEN, NCHW_(16, 2, 16, 16), SAME_, TRACK_EXP, CLBN_ACTIVATION_SIGMOID,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    {CLBN_OP_BACKWARD_FROZEN, NHWC_(2, 64, 2, 2), SAME_, TRACK_CUM, CLBN_ACTIVATION_NONE,
     CTX_CACHED, CLBN_STRATEGY_SINGLE_READ},
    /* inference without running statistics reduces the batch */
    {CLBN_OP_FORWARD_INFER, NCHW_(16, 2, 16, 16), SAME_, UNTRACKED, CLBN_ACTIVATION_NONE,
     CTX_DEFAULT, CLBN_STRATEGY_SPLIT},
    {CLBN_OP_FORWARD_INFER, NHWC_(2, 64, 2, 2), SAME_, UNTRACKED, CLBN_ACTIVATION_RELU, CTX_CACHED,
     CLBN_STRATEGY_SINGLE_READ},
    /* inference with running statistics: elementwise only */
    {CLBN_OP_FORWARD_INFER, NC_(60, 100), SAME_, TRACK_EXP, CLBN_ACTIVATION_NONE, CTX_DEFAULT,
     CLBN_STRATEGY_ELEMENTWISE},
};
#define FAULT_CASE_COUNT (sizeof fault_cases / sizeof fault_cases[0])

static const clbn_shape *prep_shape(const fault_case *fc) {
    return fc->prep.n ? &fc->prep : &fc->shape;
}

typedef struct op_buffers {
    cl_mem x, y, dy, dx;
} op_buffers;

static void buffers_make(clbn_context *ctx, size_t n, uint64_t seed, op_buffers *b) {
    float *host = tu_floats(n);
    ref_rng r;
    ref_rng_seed(&r, seed);
    tu_fill_normal(&r, host, n, 3.0, 2.0);
    b->x = tu_buffer_from(ctx, host, n);
    tu_fill_normal(&r, host, n, 0.0, 1.0);
    b->dy = tu_buffer_from(ctx, host, n);
    b->y = tu_buffer(ctx, n);
    b->dx = tu_buffer(ctx, n);
    free(host);
}

static void buffers_release(op_buffers *b) {
    clReleaseMemObject(b->x);
    clReleaseMemObject(b->y);
    clReleaseMemObject(b->dy);
    clReleaseMemObject(b->dx);
}

static clbn_status run_op(clbn_bn *bn, clbn_op op, const clbn_shape *s, const op_buffers *b) {
    switch (op) {
    case CLBN_OP_FORWARD_TRAIN:
        return clbn_bn_forward_train(bn, s, b->x, 0, b->y, 0, NULL, NULL, 0, NULL, NULL);
    case CLBN_OP_FORWARD_INFER:
        return clbn_bn_forward_infer(bn, s, b->x, 0, b->y, 0, NULL, 0, NULL, NULL);
    case CLBN_OP_FORWARD_FROZEN:
        return clbn_bn_forward_frozen(bn, s, b->x, 0, b->y, 0, NULL, 0, NULL, NULL);
    case CLBN_OP_BACKWARD:
        return clbn_bn_backward(bn, s, b->x, 0, b->y, 0, b->dy, 0, b->dx, 0, NULL, NULL, 0, NULL,
                                NULL);
    case CLBN_OP_BACKWARD_FROZEN:
        return clbn_bn_backward_frozen(bn, s, b->x, 0, b->y, 0, b->dy, 0, b->dx, 0, NULL, 0, NULL,
                                       NULL);
    }
    return CLBN_ERROR_INVALID_ARGUMENT;
}

/* One run's state object, and its own context for CTX_COLD. */
typedef struct trial {
    clbn_context *own_ctx;
    clbn_bn *bn;
} trial;

/* A fresh state object with every vector away from its default: gamma, beta and the running
 * statistics written, saved statistics and gradients from a training forward and backward on
 * the preparation's input, t = 3 (+1 when tracking); then, for a backward, the forward the
 * backward belongs to. On a cold context all eight vectors are written instead, since a
 * forward would build the program the op is to build. Injection is off throughout. */
static trial prepare(const fault_case *fc, const op_buffers *op_b, const op_buffers *prep_b) {
    trial tr = {NULL, NULL};
    clbn_context *ctx = g_ctx[CTX_DEFAULT];
    if (fc->ctx == CTX_COLD) {
        cl_context cc;
        cl_command_queue q;
        TU_OK(clbn_context_get_cl(g_ctx[CTX_DEFAULT], &cc, &q));
        clbn_context_options co;
        clbn_context_options_init(&co);
        co.disable_cache = 1;
        TU_OK(clbn_context_get_limits(g_ctx[CTX_DEFAULT], &co.limits)); /* the same pinned plan */
        TU_OK(clbn_context_wrap(cc, q, &co, &tr.own_ctx));
        ctx = tr.own_ctx;
    } else {
        ctx = g_ctx[fc->ctx];
    }
    const uint64_t C = fc->shape.c;
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    o.flags = fc->flags;
    o.activation = fc->act;
    TU_OK(clbn_bn_create(ctx, &o, &tr.bn));
    float *v = tu_floats(C);
    const int written = fc->ctx == CTX_COLD ? CLBN_VECTOR_COUNT : CLBN_VECTOR_RUNNING_VAR + 1;
    for (int i = 0; i < written; i++) {
        for (uint64_t c = 0; c < C; c++)
            v[c] = (float)(0.75 + 0.5 * (double)i + 0.03125 * (double)(c % 17));
        TU_OK(clbn_bn_write_vector(tr.bn, (clbn_vector)i, v, C));
    }
    free(v);
    TU_OK(clbn_bn_set_batches_tracked(tr.bn, 3));
    if (fc->ctx != CTX_COLD) {
        TU_OK(run_op(tr.bn, CLBN_OP_FORWARD_TRAIN, prep_shape(fc), prep_b));
        TU_OK(run_op(tr.bn, CLBN_OP_BACKWARD, prep_shape(fc), prep_b));
        if (fc->op == CLBN_OP_BACKWARD)
            TU_OK(run_op(tr.bn, CLBN_OP_FORWARD_TRAIN, &fc->shape, op_b));
        if (fc->op == CLBN_OP_BACKWARD_FROZEN)
            TU_OK(run_op(tr.bn, CLBN_OP_FORWARD_FROZEN, &fc->shape, op_b));
    }
    tu_finish(ctx);
    return tr;
}

static void trial_release(trial *tr) {
    clbn_bn_release(tr->bn);
    clbn_context_release(tr->own_ctx);
}

typedef struct snapshot {
    float *v[CLBN_VECTOR_COUNT];
    uint64_t t;
} snapshot;

static void snapshot_take(clbn_bn *bn, uint64_t C, snapshot *s) {
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++) {
        s->v[i] = tu_floats(C);
        TU_OK(clbn_bn_read_vector(bn, (clbn_vector)i, s->v[i], C));
    }
    TU_OK(clbn_bn_get_batches_tracked(bn, &s->t));
}

static void snapshot_free(snapshot *s) {
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++)
        free(s->v[i]);
}

/* Byte-for-byte: a NaN or -0 that replaced a value counts as a change. */
static void snapshot_compare(const snapshot *before, const snapshot *after, uint64_t C,
                             uint64_t k) {
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++) {
        if (!memcmp(before->v[i], after->v[i], C * sizeof(float)))
            continue;
        for (uint64_t c = 0; c < C; c++)
            if (memcmp(&before->v[i][c], &after->v[i][c], sizeof(float)))
                fail_msg("failing call %llu (%s): %s[%llu] changed from %.9g to %.9g",
                         (unsigned long long)k, fault_names[g_fault.failed_id],
                         clbn_vector_name((clbn_vector)i), (unsigned long long)c,
                         (double)before->v[i][c], (double)after->v[i][c]);
    }
    if (before->t != after->t)
        fail_msg("failing call %llu (%s): t changed from %llu to %llu", (unsigned long long)k,
                 fault_names[g_fault.failed_id], (unsigned long long)before->t,
                 (unsigned long long)after->t);
}

static void case_name(const fault_case *fc, char *buf, size_t size) {
    ref_case k;
    memset(&k, 0, sizeof k);
    k.op = fc->op;
    k.shape = fc->shape;
    k.flags = fc->flags;
    k.activation = fc->act;
    /* t when the op runs: 3, plus the preparation's tracked forwards */
    const int tracked = (fc->flags & CLBN_TRACK_RUNNING_STATS) != 0 && fc->ctx != CTX_COLD;
    k.batches_tracked = 3 + (uint64_t)tracked * (fc->op == CLBN_OP_BACKWARD ? 2 : 1);
    char base[160];
    ref_case_name(&k, base, sizeof base);
    char prep[64] = "";
    if (fc->prep.n)
        snprintf(prep, sizeof prep, " prepared on %s %llux%llux%llux%llu",
                 ref_layout_name(fc->prep.layout), (unsigned long long)fc->prep.n,
                 (unsigned long long)fc->prep.c, (unsigned long long)fc->prep.h,
                 (unsigned long long)fc->prep.w);
    snprintf(buf, size, "faults %s%s [%s%s%s]", base, prep, ctx_names[fc->ctx],
             fc->strategy >= 0 ? ", " : "",
             fc->strategy >= 0 ? clbn_strategy_name((clbn_strategy)fc->strategy) : "");
}

/* How many vectors (and t) differ between two snapshots. */
static int snapshot_changes(const snapshot *a, const snapshot *b, uint64_t C) {
    int changed = a->t != b->t;
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++)
        changed += memcmp(a->v[i], b->v[i], C * sizeof(float)) != 0;
    return changed;
}

/* The status a failed call must give: the injected OpenCL code, passed through, except that a
 * failed build is reported as one (with its log). */
static int status_expected(clbn_status st, int id, cl_int injected) {
    if (id == FAULT_ID_clBuildProgram)
        return st == CLBN_ERROR_BUILD_FAILED;
    return st == (clbn_status)injected;
}

static void fault_sweep(void **state) {
    const fault_case *fc = *state;
    clbn_context *buf_ctx = g_ctx[fc->ctx == CTX_COLD ? CTX_DEFAULT : fc->ctx];
    const uint64_t C = fc->shape.c;
    const size_t elems = tu_shape_elems(&fc->shape), prep_elems = tu_shape_elems(prep_shape(fc));
    op_buffers op_b, prep_b;
    buffers_make(buf_ctx, elems, 11, &op_b);
    buffers_make(buf_ctx, prep_elems, 12, &prep_b);

    /* The plan is the one the table says. */
    trial tr = prepare(fc, &op_b, &prep_b);
    clbn_plan plan;
    TU_OK(clbn_bn_query_plan(tr.bn, fc->op, &fc->shape, &plan));
    if (fc->strategy >= 0 && (int)plan.strategy != fc->strategy)
        fail_msg("the plan is %s, the table expects %s", clbn_strategy_name(plan.strategy),
                 clbn_strategy_name((clbn_strategy)fc->strategy));
    /* Once cleanly, so every program variant is built (and cached) before counting. */
    TU_OK(run_op(tr.bn, fc->op, &fc->shape, &op_b));
    trial_release(&tr);

    /* The clean run: n calls. A successful op changes the state exactly when it writes it, so
     * the comparison below can see a change. */
    tr = prepare(fc, &op_b, &prep_b);
    snapshot before, after;
    snapshot_take(tr.bn, C, &before);
    clbn_cl = fault_api;
    fault_arm(0);
    clbn_status st = run_op(tr.bn, fc->op, &fc->shape, &op_b);
    fault_disarm();
    clbn_cl = *g_below;
    const uint64_t n = g_fault.calls;
    TU_OK(st);
    snapshot_take(tr.bn, C, &after);
    const int writes = fc->op == CLBN_OP_FORWARD_TRAIN || fc->op == CLBN_OP_BACKWARD ||
                       fc->op == CLBN_OP_BACKWARD_FROZEN;
    const int changes = snapshot_changes(&before, &after, C);
    if (writes ? changes == 0 : changes != 0)
        fail_msg("a successful %s changed %d of the state's vectors and t", ref_op_name(fc->op),
                 changes);
    snapshot_free(&before);
    snapshot_free(&after);
    trial_release(&tr);
    assert_true(n > 0);

    unsigned failed[FAULT_ID_COUNT] = {0}, passed[FAULT_ID_COUNT] = {0};
    for (uint64_t k = 1; k <= n; k++) {
        cl_counts objects;
        cl_count_get(&objects);
        tr = prepare(fc, &op_b, &prep_b);
        snapshot_take(tr.bn, C, &before);

        clbn_cl = fault_api;
        fault_arm(k);
        st = run_op(tr.bn, fc->op, &fc->shape, &op_b);
        fault_disarm();
        clbn_cl = *g_below;
        char message[512];
        snprintf(message, sizeof message, "%s", clbn_last_error_message());

        if (g_fault.failed_id < 0)
            fail_msg("call %llu of %llu never came: the op made %llu calls this time",
                     (unsigned long long)k, (unsigned long long)n,
                     (unsigned long long)g_fault.calls);
        const int id = g_fault.failed_id;
        if (g_fault.injected == CL_SUCCESS) {
            /* a release or retain passed through: the call must have gone on and succeeded */
            passed[id]++;
            if (st != CLBN_SUCCESS)
                fail_msg("call %llu (%s, passed through) and the op returned %s: %s",
                         (unsigned long long)k, fault_names[id], clbn_status_name(st), message);
        } else {
            failed[id]++;
            if (st == CLBN_SUCCESS)
                fail_msg("call %llu (%s) failed with %s, but the op returned CLBN_SUCCESS",
                         (unsigned long long)k, fault_names[id],
                         clbn_status_name((clbn_status)g_fault.injected));
            if (!status_expected(st, id, g_fault.injected))
                fail_msg("call %llu (%s) failed with %s, but the op returned %s (%s): OpenCL "
                         "codes pass through",
                         (unsigned long long)k, fault_names[id],
                         clbn_status_name((clbn_status)g_fault.injected), clbn_status_name(st),
                         message);
            if (message[0] == '\0')
                fail_msg("call %llu (%s) failed, the op returned %s with an empty message",
                         (unsigned long long)k, fault_names[id], clbn_status_name(st));
            snapshot_take(tr.bn, C, &after);
            snapshot_compare(&before, &after, C, k);
            snapshot_free(&after);
            /* and the object (and its context) still work */
            st = run_op(tr.bn, fc->op, &fc->shape, &op_b);
            if (st != CLBN_SUCCESS)
                fail_msg("after failing call %llu (%s) the op fails again: %s: %s",
                         (unsigned long long)k, fault_names[id], clbn_status_name(st),
                         clbn_last_error_message());
        }
        snapshot_free(&before);
        trial_release(&tr);
        expect_no_leak(&objects, "the op's state object released", k);
    }

    char list[1024] = "";
    size_t at = 0;
    for (int kind = 0; kind < 2; kind++) {
        const unsigned *count = kind ? passed : failed;
        at += (size_t)snprintf(list + at, sizeof list - at, "%s", kind ? "; passed through:" : "");
        for (int i = 0; i < FAULT_ID_COUNT && at < sizeof list; i++)
            if (count[i])
                at += (size_t)snprintf(list + at, sizeof list - at, " %s x%u", fault_names[i],
                                       count[i]);
    }
    print_message("      %s, %llu OpenCL calls, each failed in turn:%s\n",
                  clbn_strategy_name(plan.strategy), (unsigned long long)n, list);
    buffers_release(&op_b);
    buffers_release(&prep_b);
}

/* ------------------------------------------------------------------------------------------
 * Sweeps of the calls that are not ops: a context's creation with its first program from the
 * warm cache, and a state object's save and load. Each call failed in turn: the entry point
 * returns a status and a message (or, where the library has a fallback, succeeds with a
 * working result), leaves what it was given as it was, and leaks no OpenCL object.
 * ------------------------------------------------------------------------------------------ */
typedef struct call_sweep {
    const char *name;
    clbn_status (*call)(void);   /* what is swept; injection is on only inside it */
    void (*check_failed)(void);  /* after a call that returned an error */
    void (*check_success)(void); /* after a call that succeeded: its result works */
    void (*cleanup)(void);       /* releases what the call made, before the leak check */
    int (*may_recover)(int id);  /* a failure of this function has a fallback; NULL: none */
} call_sweep;

static char g_sweep_dir[64];    /* a warm program cache, and the state file */
static char g_state_path[128];  /* the state file the save and load sweeps use */
static clbn_context *g_new_ctx; /* the context sweep's result */
static char g_ctx_device[256];  /* the default context's device: the sweep's selector */
static clbn_bn *g_saved_bn;     /* the object saved (and compared with what is loaded) */
static clbn_bn *g_loaded_bn;    /* the load sweep's result */
static unsigned char *g_file;   /* the state file's bytes before each save */
static size_t g_file_size;

static unsigned char *file_bytes(const char *path, size_t *n) {
    unsigned char *data = NULL;
    TU_OK(clbn_read_file(path, &data, n));
    return data;
}

static void run_call_sweep(const call_sweep *cs) {
    cl_counts objects;
    cl_count_get(&objects);
    clbn_cl = fault_api;
    fault_arm(0);
    clbn_status st = cs->call();
    fault_disarm();
    clbn_cl = *g_below;
    const uint64_t n = g_fault.calls;
    TU_OK(st);
    cs->check_success();
    cs->cleanup();
    expect_no_leak(&objects, cs->name, 0);
    assert_true(n > 0);

    unsigned failed = 0, passed = 0, recovered = 0;
    for (uint64_t k = 1; k <= n; k++) {
        cl_count_get(&objects);
        clbn_cl = fault_api;
        fault_arm(k);
        st = cs->call();
        fault_disarm();
        clbn_cl = *g_below;
        char message[512];
        snprintf(message, sizeof message, "%s", clbn_last_error_message());
        if (g_fault.failed_id < 0)
            fail_msg("%s: call %llu of %llu never came (%llu calls this time)", cs->name,
                     (unsigned long long)k, (unsigned long long)n,
                     (unsigned long long)g_fault.calls);
        const int id = g_fault.failed_id;
        if (g_fault.injected == CL_SUCCESS || st == CLBN_SUCCESS) {
            if (st != CLBN_SUCCESS)
                fail_msg("%s: call %llu (%s, passed through) and it returned %s: %s", cs->name,
                         (unsigned long long)k, fault_names[id], clbn_status_name(st), message);
            if (g_fault.injected != CL_SUCCESS && !(cs->may_recover && cs->may_recover(id)))
                fail_msg("%s: call %llu (%s) failed with %s, but it returned CLBN_SUCCESS",
                         cs->name, (unsigned long long)k, fault_names[id],
                         clbn_status_name((clbn_status)g_fault.injected));
            if (g_fault.injected == CL_SUCCESS)
                passed++;
            else
                recovered++;
            cs->check_success();
        } else {
            failed++;
            if (message[0] == '\0')
                fail_msg("%s: call %llu (%s) failed, it returned %s with an empty message",
                         cs->name, (unsigned long long)k, fault_names[id], clbn_status_name(st));
            cs->check_failed();
        }
        cs->cleanup();
        expect_no_leak(&objects, cs->name, k);
    }
    print_message("      %s: %llu OpenCL calls, each failed in turn: %u errors, %u recovered by a "
                  "fallback, %u passed through\n",
                  cs->name, (unsigned long long)n, failed, recovered, passed);
}

/* The context: clbn_context_create on the warm cache folder, then its first program variant. */
static clbn_status ctx_call(void) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.cache_dir = g_sweep_dir;
    o.device = g_ctx_device; /* by name: a fault may not move the context to another device */
    g_new_ctx = NULL;
    clbn_status st = clbn_context_create(&o, &g_new_ctx);
    if (st != CLBN_SUCCESS)
        return st;
    cl_program p = NULL;
    return clbn_context_program(g_new_ctx, 0, &p);
}

static void ctx_failed(void) {
    /* a failed build leaves a context that builds when asked again */
    if (g_new_ctx) {
        cl_program p = NULL;
        TU_OK(clbn_context_program(g_new_ctx, 0, &p));
    }
}

static void ctx_works(void) {
    assert_non_null(g_new_ctx);
    clbn_device_info info;
    TU_OK(clbn_context_get_device_info(g_new_ctx, &info));
    if (strcmp(info.device_name, g_ctx_device) != 0)
        fail_msg("after failing call %s the context is on %s, not %s",
                 g_fault.failed_id >= 0 ? fault_names[g_fault.failed_id] : "none", info.device_name,
                 g_ctx_device);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = 3;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(g_new_ctx, &o, &bn));
    cl_kernel k = NULL;
    TU_OK(clbn_bn_kernel(bn, 0, (clbn_kernel_id)0, &k));
    clbn_bn_release(bn);
}

static void ctx_cleanup(void) {
    clbn_context_release(g_new_ctx);
    g_new_ctx = NULL;
}

/* Two fallbacks: the device list skips a platform or device whose queries fail (ctx_works
 * checks that the device named was still the one chosen), and a cached binary that cannot be
 * loaded is built from source again (and storing it is best effort). */
static int ctx_may_recover(int id) {
    return id == FAULT_ID_clGetPlatformInfo || id == FAULT_ID_clGetDeviceIDs ||
           id == FAULT_ID_clGetDeviceInfo || id == FAULT_ID_clCreateProgramWithBinary ||
           id == FAULT_ID_clBuildProgram || id == FAULT_ID_clGetProgramInfo;
}

/* The save: over an existing file. */
static clbn_status save_call(void) {
    return clbn_bn_save(g_saved_bn, g_state_path);
}

static void save_failed(void) {
    size_t n = 0;
    unsigned char *now = file_bytes(g_state_path, &n);
    if (n != g_file_size || memcmp(now, g_file, n) != 0)
        fail_msg("a failed save (call %s) changed the file", fault_names[g_fault.failed_id]);
    free(now);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s | grep '^state\\.clbn.')\"", g_sweep_dir);
    if (system(cmd) != 0)
        fail_msg("a failed save (call %s) left a file behind", fault_names[g_fault.failed_id]);
}

static void save_done(void) {
    size_t n = 0;
    unsigned char *now = file_bytes(g_state_path, &n);
    assert_int_equal(n, g_file_size); /* the same object saved again: the same bytes */
    assert_memory_equal(now, g_file, n);
    free(now);
}

static void nothing(void) {}

/* The load: into a new object on the default context. */
static clbn_status load_call(void) {
    g_loaded_bn = (clbn_bn *)&g_loaded_bn; /* must come back NULL on failure */
    return clbn_bn_load(g_ctx[CTX_DEFAULT], g_state_path, &g_loaded_bn);
}

static void load_failed(void) {
    if (g_loaded_bn)
        fail_msg("a failed load (call %s) returned an object", fault_names[g_fault.failed_id]);
}

static void load_done(void) {
    snapshot a, b;
    snapshot_take(g_saved_bn, 5, &a);
    snapshot_take(g_loaded_bn, 5, &b);
    if (snapshot_changes(&a, &b, 5) != 0)
        fail_msg("the loaded object differs from the saved one");
    snapshot_free(&a);
    snapshot_free(&b);
}

static void load_cleanup(void) {
    if (g_loaded_bn != (clbn_bn *)&g_loaded_bn)
        clbn_bn_release(g_loaded_bn);
    g_loaded_bn = NULL;
}

static void context_and_file_sweeps(void **state) {
    (void)state;
    snprintf(g_sweep_dir, sizeof g_sweep_dir, "/tmp/clbn-test-faults-XXXXXX");
    assert_non_null(mkdtemp(g_sweep_dir));
    snprintf(g_state_path, sizeof g_state_path, "%s/state.clbn", g_sweep_dir);
    clbn_device_info info;
    TU_OK(clbn_context_get_device_info(g_ctx[CTX_DEFAULT], &info));
    snprintf(g_ctx_device, sizeof g_ctx_device, "%s", info.device_name);
    /* Warm the cache with variant 0. */
    assert_int_equal(ctx_call(), CLBN_SUCCESS);
    ctx_cleanup();
    const call_sweep ctx_sweep = {"context create + first program (warm cache)",
                                  ctx_call,
                                  ctx_failed,
                                  ctx_works,
                                  ctx_cleanup,
                                  ctx_may_recover};
    run_call_sweep(&ctx_sweep);

    /* A state object with every vector distinct, saved once. */
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = 5;
    TU_OK(clbn_bn_create(g_ctx[CTX_DEFAULT], &o, &g_saved_bn));
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        float x[5];
        for (int c = 0; c < 5; c++)
            x[c] = 0.5f + (float)v + 0.125f * (float)c;
        TU_OK(clbn_bn_write_vector(g_saved_bn, (clbn_vector)v, x, 5));
    }
    TU_OK(clbn_bn_set_batches_tracked(g_saved_bn, 42));
    TU_OK(clbn_bn_save(g_saved_bn, g_state_path));
    g_file = file_bytes(g_state_path, &g_file_size);
    snapshot before, after;
    snapshot_take(g_saved_bn, 5, &before);
    const call_sweep save_sweep = {"clbn_bn_save", save_call, save_failed,
                                   save_done,      nothing,   NULL};
    run_call_sweep(&save_sweep);
    snapshot_take(g_saved_bn, 5, &after);
    if (snapshot_changes(&before, &after, 5) != 0)
        fail_msg("the saves changed the object saved");
    snapshot_free(&before);
    snapshot_free(&after);
    const call_sweep load_sweep = {"clbn_bn_load", load_call,    load_failed,
                                   load_done,      load_cleanup, NULL};
    run_call_sweep(&load_sweep);

    clbn_bn_release(g_saved_bn);
    free(g_file);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_sweep_dir);
    assert_int_equal(system(cmd), 0);
}

/* The table covers every reduction strategy of the training forward, in both layouts. */
static void sweep_covers_every_strategy(void **state) {
    (void)state;
    unsigned seen[2][4] = {{0}};
    for (size_t i = 0; i < FAULT_CASE_COUNT; i++) {
        const fault_case *fc = &fault_cases[i];
        if (fc->op != CLBN_OP_FORWARD_TRAIN || fc->shape.layout == CLBN_LAYOUT_NC)
            continue;
        clbn_bn_options o;
        clbn_bn_options_init(&o);
        o.channels = fc->shape.c;
        o.flags = fc->flags;
        clbn_bn *bn = NULL;
        TU_OK(clbn_bn_create(g_ctx[fc->ctx == CTX_COLD ? CTX_DEFAULT : fc->ctx], &o, &bn));
        clbn_plan p;
        TU_OK(clbn_bn_query_plan(bn, fc->op, &fc->shape, &p));
        clbn_bn_release(bn);
        seen[fc->shape.layout == CLBN_LAYOUT_NHWC][p.strategy]++;
    }
    const clbn_strategy want[] = {CLBN_STRATEGY_SPLIT, CLBN_STRATEGY_GROUP_PER_CHANNEL,
                                  CLBN_STRATEGY_SINGLE_READ};
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            if (!seen[l][want[i]])
                fail_msg("no %s training forward takes the %s plan", l ? "NHWC" : "NCHW",
                         clbn_strategy_name(want[i]));
}

/* ------------------------------------------------------------------------------------------
 * OpenCL C version: a device below 1.2 (or one whose version cannot be read) is refused
 * ------------------------------------------------------------------------------------------ */
static const char *g_version; /* what CL_DEVICE_OPENCL_C_VERSION reports */
static cl_context g_cl_ctx;
static cl_command_queue g_cl_queue;

static cl_int CL_API_CALL version_get_device_info(cl_device_id d, cl_device_info w, size_t n,
                                                  void *v, size_t *r) {
    if (w != CL_DEVICE_OPENCL_C_VERSION)
        return clbn_cl_real.clGetDeviceInfo(d, w, n, v, r);
    size_t len = strlen(g_version) + 1;
    if (r)
        *r = len;
    if (v) {
        if (n < len)
            return CL_INVALID_VALUE;
        memcpy(v, g_version, len);
    }
    return CL_SUCCESS;
}

static int version_setup(void **state) {
    (void)state;
    clbn_context *ctx = tu_context(); /* exits 77 without a device */
    clbn_device_info info;
    if (clbn_context_get_device_info(ctx, &info) != CLBN_SUCCESS)
        return -1;
    clbn_context_release(ctx);
    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)info.platform, 0};
    g_cl_ctx = clCreateContext(props, 1, &info.device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return -1;
    g_cl_queue = clCreateCommandQueue(g_cl_ctx, info.device, 0, &err);
    return err == CL_SUCCESS ? 0 : -1;
}

static int version_teardown(void **state) {
    (void)state;
    clbn_cl = clbn_cl_real;
    if (g_cl_queue)
        clReleaseCommandQueue(g_cl_queue);
    if (g_cl_ctx)
        clReleaseContext(g_cl_ctx);
    return 0;
}

typedef struct version_case {
    const char *reported;
    clbn_status expect;
    const char *in_message; /* the refusal names what the device reported */
} version_case;

static void expect_version_result(clbn_status st, clbn_context *ctx, const version_case *vc,
                                  const char *how) {
    if (st != vc->expect)
        fail_msg("%s with \"%s\": %s (%s), expected %s", how, vc->reported, clbn_status_name(st),
                 clbn_last_error_message(), clbn_status_name(vc->expect));
    if (st != CLBN_SUCCESS) {
        const char *msg = clbn_last_error_message();
        if (!strstr(msg, vc->in_message) || !strstr(msg, "1.2"))
            fail_msg("%s with \"%s\": the message \"%s\" should name \"%s\" and OpenCL C 1.2", how,
                     vc->reported, msg, vc->in_message);
        assert_null(ctx);
    } else {
        clbn_device_info info;
        TU_OK(clbn_context_get_device_info(ctx, &info));
        assert_string_equal(info.opencl_c_version, vc->reported);
    }
}

static void opencl_c_version(void **state) {
    const version_case *vc = *state;
    g_version = vc->reported;
    clbn_cl = clbn_cl_real;
    clbn_cl.clGetDeviceInfo = version_get_device_info;

    clbn_context *ctx = NULL;
    clbn_status st = clbn_context_create(NULL, &ctx);
    expect_version_result(st, ctx, vc, "clbn_context_create(NULL options)");
    clbn_context_release(ctx);

    clbn_context_options o;
    clbn_context_options_init(&o);
    ctx = NULL;
    st = clbn_context_create(&o, &ctx);
    expect_version_result(st, ctx, vc, "clbn_context_create(default options)");
    clbn_context_release(ctx);

    ctx = NULL;
    st = clbn_context_wrap(g_cl_ctx, g_cl_queue, NULL, &ctx);
    expect_version_result(st, ctx, vc, "clbn_context_wrap");
    clbn_context_release(ctx);
    clbn_cl = clbn_cl_real;
}

static const version_case version_cases[] = {
    {"OpenCL C 1.1 test", CLBN_ERROR_UNSUPPORTED, "OpenCL C 1.1"},
    {"OpenCL C 1.0", CLBN_ERROR_UNSUPPORTED, "OpenCL C 1.0"},
    {"garbage", CLBN_ERROR_UNSUPPORTED, "garbage"},
    {"OpenCL C 1.2 test", CLBN_SUCCESS, NULL},
    {"OpenCL C 3.0 test", CLBN_SUCCESS, NULL},
};

/* ------------------------------------------------------------------------------------------
 * A kernel's own work-group limit of 48
 * ------------------------------------------------------------------------------------------ */
#define KERNEL_WG 48
static unsigned g_wg_asked; /* how often the library asked for CL_KERNEL_WORK_GROUP_SIZE */
enum { WG_DEFAULT, WG_GPU, WG_COUNT };
static clbn_context *g_wg_ctx[WG_COUNT];

static cl_int CL_API_CALL wg48_get_kernel_work_group_info(cl_kernel k, cl_device_id d,
                                                          cl_kernel_work_group_info w, size_t n,
                                                          void *v, size_t *r) {
    if (w != CL_KERNEL_WORK_GROUP_SIZE)
        return clbn_cl_real.clGetKernelWorkGroupInfo(k, d, w, n, v, r);
    g_wg_asked++;
    if (r)
        *r = sizeof(size_t);
    if (v) {
        if (n < sizeof(size_t))
            return CL_INVALID_VALUE;
        size_t wg = KERNEL_WG;
        memcpy(v, &wg, sizeof wg);
    }
    return CL_SUCCESS;
}

/* Contexts made while the wrapper is in place, without the program cache, so every program is
 * built and its kernels asked afresh: the device's own limits, and the same planned as a GPU
 * (whose work-groups of 256 the kernels' 48 then cuts down). */
static int wg48_setup(void **state) {
    (void)state;
    clbn_context_release(tu_context()); /* exits 77 without a device */
    clbn_cl = clbn_cl_real;
    clbn_cl.clGetKernelWorkGroupInfo = wg48_get_kernel_work_group_info;
    clbn_limits l;
    memset(&l, 0, sizeof l);
    g_wg_ctx[WG_DEFAULT] = context_with(&l, 1);
    l.device_type = CLBN_DEVICE_KIND_GPU;
    l.max_work_group_size = 256;
    g_wg_ctx[WG_GPU] = context_with(&l, 1);
    return 0;
}

static int wg48_teardown(void **state) {
    (void)state;
    for (int i = 0; i < WG_COUNT; i++) {
        clbn_context_release(g_wg_ctx[i]);
        g_wg_ctx[i] = NULL;
    }
    clbn_cl = clbn_cl_real;
    return 0;
}

static const clbn_shape wg48_shapes[] = {
    NCHW_(4, 2, 128, 128), NCHW_(2, 64, 8, 8), NCHW_(3, 5, 7, 11), NHWC_(4, 2, 128, 128),
    NHWC_(2, 1024, 2, 2),  NHWC_(3, 5, 7, 11), NC_(60, 100),       NC_(8, 2048),
};

static void wg48_plans(void **state) {
    (void)state;
    unsigned at_limit[WG_COUNT] = {0};
    for (int ci = 0; ci < WG_COUNT; ci++)
        for (size_t si = 0; si < sizeof wg48_shapes / sizeof wg48_shapes[0]; si++) {
            const clbn_shape *s = &wg48_shapes[si];
            clbn_bn_options o;
            clbn_bn_options_init(&o);
            o.channels = s->c;
            for (int tracked = 0; tracked < 2; tracked++) {
                o.flags = tracked ? CLBN_BN_FLAGS_DEFAULT : UNTRACKED;
                clbn_bn *bn = NULL;
                TU_OK(clbn_bn_create(g_wg_ctx[ci], &o, &bn));
                for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++) {
                    clbn_plan p;
                    TU_OK(clbn_bn_query_plan(bn, (clbn_op)op, s, &p));
                    if (p.work_group_size > KERNEL_WG)
                        fail_msg("%s %s %llux%llux%llux%llu: work-group %zu > the kernels' %d",
                                 ci ? "GPU-planned" : "default", ref_op_name((clbn_op)op),
                                 (unsigned long long)s->n, (unsigned long long)s->c,
                                 (unsigned long long)s->h, (unsigned long long)s->w,
                                 p.work_group_size, KERNEL_WG);
                    at_limit[ci] += p.work_group_size == KERNEL_WG;
                }
                clbn_bn_release(bn);
            }
        }
    print_message("      CL_KERNEL_WORK_GROUP_SIZE asked %u times; plans at 48: default %u, "
                  "GPU-planned %u\n",
                  g_wg_asked, at_limit[WG_DEFAULT], at_limit[WG_GPU]);
    assert_true(g_wg_asked > 0);
    /* planned as a GPU the reduction wants 256 items: the kernels' limit is what stops it */
    assert_true(at_limit[WG_GPU] > 0);
}

typedef struct wg48_case {
    int ctx;
    ref_case k;
} wg48_case;

static void wg48_correct(void **state) {
    const wg48_case *wc = *state;
    clbn_plan plan;
    ref_check_case(g_wg_ctx[wc->ctx], &wc->k, &ref_default_tolerances, &plan);
    assert_true(plan.work_group_size <= KERNEL_WG);
}

/* ------------------------------------------------------------------------------------------ */
int main(void) {
    static struct CMUnitTest sweep[FAULT_CASE_COUNT + 2];
    static char sweep_names[FAULT_CASE_COUNT][256];
    size_t n = 0;
    sweep[n++] = (struct CMUnitTest)cmocka_unit_test(sweep_covers_every_strategy);
    sweep[n++] = (struct CMUnitTest)cmocka_unit_test(context_and_file_sweeps);
    for (size_t i = 0; i < FAULT_CASE_COUNT; i++) {
        case_name(&fault_cases[i], sweep_names[i], sizeof sweep_names[i]);
        sweep[n++] =
            (struct CMUnitTest){sweep_names[i], fault_sweep, NULL, NULL, (void *)&fault_cases[i]};
    }

    enum { VERSIONS = sizeof version_cases / sizeof version_cases[0] };
    static struct CMUnitTest versions[VERSIONS];
    static char version_names[VERSIONS][96];
    for (size_t i = 0; i < VERSIONS; i++) {
        snprintf(version_names[i], sizeof version_names[i], "opencl_c_version \"%s\" %s",
                 version_cases[i].reported,
                 version_cases[i].expect == CLBN_SUCCESS ? "accepted" : "refused");
        versions[i] = (struct CMUnitTest){version_names[i], opencl_c_version, NULL, NULL,
                                          (void *)&version_cases[i]};
    }

    static const struct {
        clbn_op op;
        clbn_shape s;
        uint32_t flags;
        clbn_activation act;
    } wg_rows[] = {
        {CLBN_OP_FORWARD_TRAIN, NCHW_(4, 2, 128, 128), TRACK_EXP, CLBN_ACTIVATION_NONE},
        {CLBN_OP_FORWARD_TRAIN, NHWC_(3, 5, 7, 11), TRACK_CUM, CLBN_ACTIVATION_RELU},
        {CLBN_OP_FORWARD_INFER, NC_(60, 100), UNTRACKED, CLBN_ACTIVATION_NONE},
        {CLBN_OP_BACKWARD, NCHW_(2, 64, 8, 8), TRACK_EXP, CLBN_ACTIVATION_SIGMOID},
        {CLBN_OP_BACKWARD, NHWC_(2, 1024, 2, 2), TRACK_EXP, CLBN_ACTIVATION_NONE},
        {CLBN_OP_BACKWARD_FROZEN, NCHW_(3, 5, 7, 11), TRACK_EXP, CLBN_ACTIVATION_NONE},
    };
    enum { WG_ROWS = sizeof wg_rows / sizeof wg_rows[0] };
    static wg48_case wg_cases[WG_COUNT * WG_ROWS];
    static char wg_names[WG_COUNT * WG_ROWS][224];
    static struct CMUnitTest wg[WG_COUNT * WG_ROWS + 1];
    size_t nw = 0;
    wg[nw++] = (struct CMUnitTest)cmocka_unit_test(wg48_plans);
    for (int ci = 0; ci < WG_COUNT; ci++)
        for (size_t i = 0; i < WG_ROWS; i++) {
            wg48_case *wc = &wg_cases[nw - 1];
            memset(wc, 0, sizeof *wc);
            wc->ctx = ci;
            wc->k.op = wg_rows[i].op;
            wc->k.shape = wg_rows[i].s;
            wc->k.flags = wg_rows[i].flags;
            wc->k.activation = wg_rows[i].act;
            wc->k.seed = 4800 + nw;
            char base[160];
            ref_case_name(&wc->k, base, sizeof base);
            snprintf(wg_names[nw - 1], sizeof wg_names[nw - 1], "kernel_wg48 %s %s",
                     ci == WG_GPU ? "gpu-planned" : "default", base);
            wg[nw] = (struct CMUnitTest){wg_names[nw - 1], wg48_correct, NULL, NULL, wc};
            nw++;
        }

    int failed = _cmocka_run_group_tests("faults", sweep, n, sweep_setup, sweep_teardown);
    failed += _cmocka_run_group_tests("opencl_c_version", versions, VERSIONS, version_setup,
                                      version_teardown);
    failed += _cmocka_run_group_tests("kernel_work_group_48", wg, nw, wg48_setup, wg48_teardown);
    return failed;
}
