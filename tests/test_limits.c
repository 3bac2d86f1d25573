/* The same device with a GPU's limits imposed (work-group 64, 32 KiB local memory, vector width
 * 4, planned as a GPU): every op still matches the double reference, the plans differ from the
 * default context's, stay within the limits, and the split and per-channel paths both run.
 * Tolerances: ref_default_tolerances, the table at the top of test_ops.c. */
#include "check.h"
#include "reference.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPU_WORK_GROUP 64
#define GPU_VECTOR_WIDTH 4

static clbn_context *g_gpu, *g_default;

static int setup(void **state) {
    (void)state;
    g_default = tu_context();
    g_gpu = tu_context_gpu_limits();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    clbn_context_release(g_gpu);
    clbn_context_release(g_default);
    return 0;
}

static void check_within_limits(const clbn_plan *p, const char *what) {
    if (p->work_group_size == 0 || p->work_group_size > GPU_WORK_GROUP)
        fail_msg("%s: work-group size %zu outside 1..%d", what, p->work_group_size, GPU_WORK_GROUP);
    if (p->vector_width == 0 || p->vector_width > GPU_VECTOR_WIDTH)
        fail_msg("%s: vector width %u outside 1..%d", what, p->vector_width, GPU_VECTOR_WIDTH);
    if (p->strategy == CLBN_STRATEGY_SPLIT && p->split < 2)
        fail_msg("%s: SPLIT with split factor %llu", what, (unsigned long long)p->split);
    if (p->strategy != CLBN_STRATEGY_SPLIT && p->split != 1)
        fail_msg("%s: %s with split factor %llu", what, clbn_strategy_name(p->strategy),
                 (unsigned long long)p->split);
}

static void print_plan(const char *who, const clbn_plan *p) {
    print_message("      %s plan: %s, work-group %zu, split %llu, vector %u, %u kernels, "
                  "scratch %llu B\n",
                  who, clbn_strategy_name(p->strategy), p->work_group_size,
                  (unsigned long long)p->split, p->vector_width, p->kernels,
                  (unsigned long long)p->scratch_bytes);
}

/* The limits in force on the GPU-limited context are the imposed ones. */
static void limits_in_force(void **state) {
    (void)state;
    clbn_limits l;
    TU_OK(clbn_context_get_limits(g_gpu, &l));
    assert_int_equal(l.max_work_group_size, GPU_WORK_GROUP);
    assert_int_equal(l.local_mem_size, 32768);
    assert_int_equal(l.vector_width, GPU_VECTOR_WIDTH);
    assert_int_equal(l.device_type, CLBN_DEVICE_KIND_GPU);
}

/* A case run on the GPU-limited context; expect < 0: any strategy, else that one (or, with
 * expect2 >= 0, either). */
typedef struct limits_case {
    ref_case k;
    int expect, expect2;
} limits_case;

static void run_case(void **state) {
    const limits_case *lc = *state;
    clbn_plan plan;
    ref_check_case(g_gpu, &lc->k, &ref_default_tolerances, &plan);
    print_plan("GPU-limits", &plan);
    check_within_limits(&plan, "GPU-limits plan");
    if (lc->expect >= 0 && (int)plan.strategy != lc->expect && (int)plan.strategy != lc->expect2)
        fail_msg("strategy %s, expected %s%s%s", clbn_strategy_name(plan.strategy),
                 clbn_strategy_name((clbn_strategy)lc->expect), lc->expect2 >= 0 ? " or " : "",
                 lc->expect2 >= 0 ? clbn_strategy_name((clbn_strategy)lc->expect2) : "");
}

static clbn_bn *make_bn(clbn_context *ctx, uint64_t channels) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = channels;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    return bn;
}

static int same_plan(const clbn_plan *a, const clbn_plan *b) {
    return a->strategy == b->strategy && a->work_group_size == b->work_group_size &&
           a->split == b->split && a->vector_width == b->vector_width;
}

/* Plans on both contexts for several shapes and every op: all GPU-limited plans within the
 * limits, and at least one different from the default context's (else the override would not
 * reach the planner and the other tests here would test nothing new). */
static void plans_differ(void **state) {
    (void)state;
    static const clbn_shape shapes[] = {
        {CLBN_LAYOUT_NCHW, 32, 64, 56, 56}, {CLBN_LAYOUT_NHWC, 32, 64, 56, 56},
        {CLBN_LAYOUT_NCHW, 4, 2, 128, 128}, {CLBN_LAYOUT_NHWC, 4, 2, 128, 128},
        {CLBN_LAYOUT_NC, 256, 1024, 1, 1},  {CLBN_LAYOUT_NCHW, 2, 64, 8, 8},
    };
    static const clbn_op ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                  CLBN_OP_FORWARD_FROZEN, CLBN_OP_BACKWARD,
                                  CLBN_OP_BACKWARD_FROZEN};
    size_t differing = 0, total = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        clbn_bn *bd = make_bn(g_default, shapes[si].c), *bg = make_bn(g_gpu, shapes[si].c);
        for (size_t oi = 0; oi < sizeof ops / sizeof ops[0]; oi++) {
            clbn_plan pd, pg;
            TU_OK(clbn_bn_query_plan(bd, ops[oi], &shapes[si], &pd));
            TU_OK(clbn_bn_query_plan(bg, ops[oi], &shapes[si], &pg));
            char what[128];
            snprintf(what, sizeof what, "shape %zu op %zu under GPU limits", si, oi);
            check_within_limits(&pg, what);
            if (ops[oi] == CLBN_OP_FORWARD_TRAIN) {
                print_message("      shape %zu fwd_train:\n", si);
                print_plan("default   ", &pd);
                print_plan("GPU-limits", &pg);
            }
            differing += !same_plan(&pd, &pg);
            total++;
        }
        clbn_bn_release(bd);
        clbn_bn_release(bg);
    }
    print_message("      %zu of %zu plans differ\n", differing, total);
    assert_true(differing > 0);
}

int main(void) {
    enum { ANY = -1 };
    static limits_case cases[256];
    static char names[256][192];
    struct CMUnitTest tests[258];
    size_t n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(limits_in_force);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(plans_differ);

    /* shape, and the strategy the GPU-limited training forward must take (ANY: not asserted) */
    const struct {
        clbn_shape s;
        int expect, expect2;
    } shapes[] = {
        /* few channels, many values: several work-groups per channel */
        {{CLBN_LAYOUT_NCHW, 4, 2, 128, 128}, CLBN_STRATEGY_SPLIT, ANY},
        {{CLBN_LAYOUT_NHWC, 4, 2, 128, 128}, CLBN_STRATEGY_SPLIT, ANY},
        {{CLBN_LAYOUT_NC, 65536, 2, 1, 1}, CLBN_STRATEGY_SPLIT, ANY},
        /* many channels, few values (m = 128, 8, 8): no reason to split a channel, so one
         * work-group per channel (or per block of channels in NHWC/NC), or its single-read
         * form */
        {{CLBN_LAYOUT_NCHW, 2, 64, 8, 8},
         CLBN_STRATEGY_SINGLE_READ,
         CLBN_STRATEGY_GROUP_PER_CHANNEL},
        {{CLBN_LAYOUT_NHWC, 2, 1024, 2, 2},
         CLBN_STRATEGY_SINGLE_READ,
         CLBN_STRATEGY_GROUP_PER_CHANNEL},
        {{CLBN_LAYOUT_NC, 8, 2048, 1, 1},
         CLBN_STRATEGY_SINGLE_READ,
         CLBN_STRATEGY_GROUP_PER_CHANNEL},
        /* 64 channels of 128 values in NHWC: the planner's choice, not asserted */
        {{CLBN_LAYOUT_NHWC, 2, 64, 8, 8}, ANY, ANY},
        {{CLBN_LAYOUT_NC, 128, 256, 1, 1}, ANY, ANY},
        /* odd sizes: primes, a slice longer than a work-group, C = 1, H = W = 1 */
        {{CLBN_LAYOUT_NCHW, 3, 5, 7, 11}, ANY, ANY},
        {{CLBN_LAYOUT_NHWC, 3, 5, 7, 11}, ANY, ANY},
        {{CLBN_LAYOUT_NCHW, 2, 3, 64, 64}, ANY, ANY},
        {{CLBN_LAYOUT_NHWC, 2, 3, 64, 64}, ANY, ANY},
        {{CLBN_LAYOUT_NCHW, 5, 1, 9, 13}, ANY, ANY},
        {{CLBN_LAYOUT_NHWC, 9, 7, 1, 1}, ANY, ANY},
        {{CLBN_LAYOUT_NC, 77, 5, 1, 1}, ANY, ANY},
    };
    const struct {
        clbn_op op;
        uint32_t flags;
        clbn_activation act;
        uint64_t t;
    } sets[] = {
        {CLBN_OP_FORWARD_TRAIN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_FORWARD_TRAIN, CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE,
         CLBN_ACTIVATION_RELU, 2},
        {CLBN_OP_FORWARD_TRAIN, CLBN_USE_SHIFT, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_FORWARD_INFER, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_FORWARD_INFER, CLBN_USE_SCALE | CLBN_USE_SHIFT, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_FORWARD_FROZEN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_RELU, 0},
        {CLBN_OP_BACKWARD, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_RELU, 0},
        {CLBN_OP_BACKWARD, CLBN_USE_SCALE, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_BACKWARD_FROZEN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_BACKWARD_FROZEN, CLBN_TRACK_RUNNING_STATS | CLBN_USE_SCALE,
         CLBN_ACTIVATION_SIGMOID, 0},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
            limits_case *lc = &cases[n - 2];
            memset(lc, 0, sizeof *lc);
            lc->k.op = sets[i].op;
            lc->k.shape = shapes[si].s;
            lc->k.flags = sets[i].flags;
            lc->k.activation = sets[i].act;
            lc->k.batches_tracked = sets[i].t;
            lc->k.offset = i % 3 == 1 ? 21 : 0;
            lc->k.seed = 7000 + n;
            /* the strategy is asserted for the reduction of the training forward */
            int fwd = sets[i].op == CLBN_OP_FORWARD_TRAIN;
            lc->expect = fwd ? shapes[si].expect : ANY;
            lc->expect2 = fwd ? shapes[si].expect2 : ANY;
            char base[160];
            ref_case_name(&lc->k, base, sizeof base);
            snprintf(names[n], sizeof names[n], "gpu_limits %s%s%s", base,
                     lc->expect >= 0 ? " expect " : "",
                     lc->expect >= 0 ? clbn_strategy_name((clbn_strategy)lc->expect) : "");
            tests[n] = (struct CMUnitTest){names[n], run_case, NULL, NULL, lc};
            n++;
        }
    return _cmocka_run_group_tests("limits", tests, n, setup, teardown);
}
