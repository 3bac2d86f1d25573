/* limits.private_mem_size sizes the CPU NHWC rows kernels' tile of channels (32 bytes a
 * channel, a power of two from 16 to 2048 channels): a context with 4096 bytes builds its
 * programs with a tile of 128 channels (seen in the build options, through the library's table
 * of OpenCL calls), a CPU plan takes the rows kernels (a work-item per block of whole rows:
 * channels_per_item = C / vector width), rows of 300 channels run in tiles of 128, 128 and 44,
 * and every op matches the double reference with the tolerances of test_ops.c
 * (ref_default_tolerances), the reduction unsplit and split over items. On a GPU the rows
 * kernels never run; the options and the reference checks are the same. The limit is in
 * force, only shrinks, and a default context holds 16 or 64 KiB. */
#include "check.h"
#include "internal.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static clbn_context *g_small;
static int g_builds, g_tile_min = 1 << 30, g_tile_max; /* CLBN_ROWS_TILE_CH of the builds */

static cl_int CL_API_CALL build_seen(cl_program p, cl_uint n, const cl_device_id *d, const char *o,
                                     void(CL_CALLBACK *f)(cl_program, void *), void *u) {
    const char *t = o ? strstr(o, "-DCLBN_ROWS_TILE_CH=") : NULL;
    const int tile = t ? atoi(t + strlen("-DCLBN_ROWS_TILE_CH=")) : 0;
    g_builds++;
    g_tile_min = tile < g_tile_min ? tile : g_tile_min;
    g_tile_max = tile > g_tile_max ? tile : g_tile_max;
    return clbn_cl_real.clBuildProgram(p, n, d, o, f, u);
}

static int setup(void **state) {
    (void)state;
    clbn_context_release(tu_context()); /* exits 77 (skip) when there is no device */
    clbn_cl.clBuildProgram = build_seen;
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.limits.private_mem_size = 4096;
    if (clbn_context_create(&o, &g_small) != CLBN_SUCCESS) {
        fprintf(stderr, "cannot create a context: %s\n", clbn_last_error_message());
        clbn_cl = clbn_cl_real;
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    clbn_context_release(g_small);
    clbn_cl = clbn_cl_real;
    return 0;
}

/* Run last: every program the cases built (from source or from the program cache, both through
 * clBuildProgram with the options) had the tile of 128 channels. The default contexts of
 * limit_in_force build none. */
static void tile_in_builds(void **state) {
    (void)state;
    print_message("      %d builds, CLBN_ROWS_TILE_CH %d..%d\n", g_builds, g_tile_min, g_tile_max);
    assert_true(g_builds > 0);
    assert_int_equal(g_tile_min, 128);
    assert_int_equal(g_tile_max, 128);
}

static void limit_in_force(void **state) {
    (void)state;
    clbn_limits l;
    TU_OK(clbn_context_get_limits(g_small, &l));
    assert_int_equal(l.private_mem_size, 4096);
    /* the default: 16 KiB or PoCL's 64 KiB; asking for more than that changes nothing */
    clbn_context *d = tu_context();
    TU_OK(clbn_context_get_limits(d, &l));
    assert_true(l.private_mem_size == 16384 || l.private_mem_size == 65536);
    const uint64_t own = l.private_mem_size;
    clbn_context_release(d);
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.limits.private_mem_size = own * 4;
    TU_OK(clbn_context_create(&o, &d));
    TU_OK(clbn_context_get_limits(d, &l));
    assert_int_equal(l.private_mem_size, own);
    clbn_context_release(d);
}

static void run_case(void **state) {
    const ref_case *k = *state;
    clbn_plan plan;
    ref_check_case(g_small, k, &ref_default_tolerances, &plan);
    print_message("      plan: %s, split %llu, vector %u, channel vectors per item %u\n",
                  clbn_strategy_name(plan.strategy), (unsigned long long)plan.split,
                  plan.vector_width, plan.channels_per_item);
    clbn_limits l;
    TU_OK(clbn_context_get_limits(g_small, &l));
    if (l.device_type == CLBN_DEVICE_KIND_CPU) /* the rows kernels: every channel per item */
        assert_int_equal(plan.channels_per_item, k->shape.c / plan.vector_width);
}

int main(void) {
    static const clbn_shape shapes[] = {
        {CLBN_LAYOUT_NHWC, 2, 300, 1, 3},  /* 6 rows: one item */
        {CLBN_LAYOUT_NHWC, 8, 300, 4, 2},  /* 64 rows: split */
        {CLBN_LAYOUT_NC, 96, 300, 1, 1},   /* split */
        {CLBN_LAYOUT_NHWC, 4, 2064, 2, 2}, /* more than a default tile: 17 tiles */
    };
    static const struct {
        clbn_op op;
        uint32_t flags;
        clbn_activation act;
    } sets[] = {
        {CLBN_OP_FORWARD_TRAIN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_NONE},
        {CLBN_OP_FORWARD_TRAIN, CLBN_USE_SHIFT, CLBN_ACTIVATION_RELU},
        {CLBN_OP_FORWARD_INFER, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID},
        {CLBN_OP_BACKWARD, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_RELU},
        {CLBN_OP_BACKWARD, CLBN_USE_SCALE, CLBN_ACTIVATION_NONE},
        {CLBN_OP_BACKWARD_FROZEN, CLBN_BN_FLAGS_DEFAULT, CLBN_ACTIVATION_SIGMOID},
    };
    enum { SHAPES = sizeof shapes / sizeof shapes[0], SETS = sizeof sets / sizeof sets[0] };
    static ref_case cases[SHAPES * SETS];
    static char names[SHAPES * SETS][160];
    struct CMUnitTest tests[SHAPES * SETS + 2];
    size_t n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(limit_in_force);
    for (size_t si = 0; si < SHAPES; si++)
        for (size_t i = 0; i < SETS; i++) {
            ref_case *k = &cases[si * SETS + i];
            memset(k, 0, sizeof *k);
            k->shape = shapes[si];
            k->op = sets[i].op;
            k->flags = sets[i].flags;
            k->activation = sets[i].act;
            k->seed = 4096 + si * SETS + i;
            ref_case_name(k, names[si * SETS + i], sizeof names[0]);
            tests[n++] = (struct CMUnitTest){names[si * SETS + i], run_case, NULL, NULL, k};
        }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(tile_in_builds);
    return _cmocka_run_group_tests("private", tests, n, setup, teardown);
}
