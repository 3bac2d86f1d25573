/* Every operation x layout x mode x option against the double-precision reference, on odd, long,
 * split-sized and ResNet-50 shapes (the harness is ref_run_case in bench/check.c).
 *
 * Tolerances: |got - ref| <= atol + rtol*|ref|, from ref_default_tolerances (bench/check.c, shared
 * with test_limits.c). Data: x per channel N(mu_c, s_c) with mu_c in [-2, 2], s_c in [0.5, 2];
 * gamma of both signs, |gamma| in [0.5, 1.5]; beta, dy ~ N(0, 1).
 *
 *   quantity       atol                 rtol   why
 *   saved mean     1e-6                 1e-6   a few fp32 ulps of |x| <= ~10
 *   saved invstd   0                    1e-5   fp32 variance of m <= 100352 values, pivoted
 *   y              1e-6 + 1.2e-7·|gamma|·invstd·|mean| (per channel)
 *                                       1e-5   x̂ carries the mean's and invstd's errors; the
 *                                              fp32 mean's own rounding (u·|mean|, u = 2^-24)
 *                                              is amplified by invstd when a channel's spread
 *                                              is small against its mean: m = 2 with two close
 *                                              values needed 0.4u·|gamma|·invstd·|mean| (invstd
 *                                              112, mean 1.4: |err| 6.6e-6); allowed 2u
 *   running mean   1e-6                 1e-6   one fp32 multiply-add on the saved mean
 *   running var    1e-7                 1e-5   the variance's error, times m/(m-1)
 *   dx             1e-5                 1e-5   m·dz − Σdz − x̂·Σdz·x̂ cancels to ~|dz|
 *   dgamma, dbeta  1e-6·Σ|term| (per c) 1e-5   fp32 sums of m terms: ~17 ulps of Σ|term| at
 *                                               m = 2^17 for a tree, far more than typical
 *
 * The backward cases run the library's forward first and evaluate the reference with the saved
 * statistics and output y that forward produced (checked in the fwd_train cases), so a backward
 * failure is the backward's own. dgamma is compared when scaling is on, dbeta when centering is
 * on (the header leaves them unspecified otherwise). Cases named "offset=k" use every buffer at
 * a distinct offset near k; all output buffers carry sentinels before and after the range, and
 * x and dy must come back unchanged. */
#include "check.h"
#include "reference.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void run_case(void **state) {
    const ref_case *k = *state;
    clbn_plan plan;
    ref_check_case(tu_ctx, k, &ref_default_tolerances, &plan);
    if (ref_elems(&k->shape) >= 100000)
        print_message("      plan: %s, work-group %zu, split %llu, vector %u, %u kernels\n",
                      clbn_strategy_name(plan.strategy), plan.work_group_size,
                      (unsigned long long)plan.split, plan.vector_width, plan.kernels);
}

typedef struct case_list {
    ref_case *cases;
    char **names;
    size_t count, capacity;
} case_list;

static void add(case_list *l, ref_case k) {
    if (l->count == l->capacity) {
        l->capacity = l->capacity ? 2 * l->capacity : 256;
        l->cases = realloc(l->cases, l->capacity * sizeof *l->cases);
        l->names = realloc(l->names, l->capacity * sizeof *l->names);
        if (!l->cases || !l->names) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    k.seed = 1000 + l->count;
    l->cases[l->count] = k;
    l->names[l->count] = malloc(160);
    if (!l->names[l->count]) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    ref_case_name(&k, l->names[l->count], 160);
    l->count++;
}

#define SS (CLBN_USE_SCALE | CLBN_USE_SHIFT)
#define TRACK CLBN_TRACK_RUNNING_STATS
#define CUMUL (CLBN_TRACK_RUNNING_STATS | CLBN_CUMULATIVE_AVERAGE)

/* The three running-statistics modes of a training forward. */
typedef struct mode {
    uint32_t flags;
    float factor;
    uint64_t t;
} mode;

static const mode modes[] = {{0, 0.0f, 0}, {TRACK, 0.1f, 0}, {TRACK, 0.01f, 5}, {CUMUL, 0, 3}};

static const clbn_activation acts[] = {CLBN_ACTIVATION_NONE, CLBN_ACTIVATION_RELU,
                                       CLBN_ACTIVATION_SIGMOID};

/* Small shapes: the whole cross product of op, options and mode. */
static void add_all(case_list *l, clbn_shape s) {
    for (uint32_t opt = 0; opt < 4; opt++)
        for (size_t a = 0; a < 3; a++) {
            ref_case k;
            memset(&k, 0, sizeof k);
            k.shape = s;
            k.activation = acts[a];
            uint32_t affine = ((opt & 1) ? CLBN_USE_SCALE : 0) | ((opt & 2) ? CLBN_USE_SHIFT : 0);
            k.offset = (opt + a) % 2 ? 11 : 0;
            /* the training forward in every mode */
            for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
                k.op = CLBN_OP_FORWARD_TRAIN;
                k.flags = affine | modes[mi].flags;
                k.factor = modes[mi].factor;
                k.batches_tracked = modes[mi].t;
                add(l, k);
            }
            k.factor = 0.0f;
            k.batches_tracked = 0;
            /* inference with running statistics and, without tracking, with the batch's */
            k.op = CLBN_OP_FORWARD_INFER;
            k.flags = affine | TRACK;
            add(l, k);
            k.flags = affine;
            add(l, k);
            k.op = CLBN_OP_FORWARD_FROZEN;
            k.flags = affine | TRACK;
            add(l, k);
            k.op = CLBN_OP_BACKWARD;
            k.flags = affine | ((opt + a) % 2 ? TRACK : 0);
            add(l, k);
            k.op = CLBN_OP_BACKWARD_FROZEN;
            k.flags = affine | TRACK;
            add(l, k);
        }
}

/* Larger shapes: every op with a few option sets that between them cover each option. */
static void add_some(case_list *l, clbn_shape s, uint64_t offset) {
    ref_case k;
    memset(&k, 0, sizeof k);
    k.shape = s;
    struct {
        clbn_op op;
        uint32_t flags;
        clbn_activation act;
        uint64_t t;
    } sets[] = {
        {CLBN_OP_FORWARD_TRAIN, SS | TRACK, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_FORWARD_TRAIN, SS | CUMUL, CLBN_ACTIVATION_RELU, 3},
        {CLBN_OP_FORWARD_TRAIN, 0, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_FORWARD_INFER, SS | TRACK, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_FORWARD_INFER, CLBN_USE_SHIFT, CLBN_ACTIVATION_RELU, 0},
        {CLBN_OP_FORWARD_FROZEN, SS | TRACK, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_BACKWARD, SS | TRACK, CLBN_ACTIVATION_NONE, 0},
        {CLBN_OP_BACKWARD, SS, CLBN_ACTIVATION_RELU, 0},
        {CLBN_OP_BACKWARD, CLBN_USE_SCALE | TRACK, CLBN_ACTIVATION_SIGMOID, 0},
        {CLBN_OP_BACKWARD_FROZEN, SS | TRACK, CLBN_ACTIVATION_RELU, 0},
        {CLBN_OP_BACKWARD_FROZEN, CLBN_USE_SHIFT | TRACK, CLBN_ACTIVATION_NONE, 0},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        k.op = sets[i].op;
        k.flags = sets[i].flags;
        k.activation = sets[i].act;
        k.batches_tracked = sets[i].t;
        k.offset = i % 2 ? offset : 0;
        add(l, k);
    }
}

int main(void) {
    static const clbn_layout maps[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC};
    /* C = 1; H = W = 1; N = 1 with H*W > 1; primes; many channels with few values each; fewer
     * values per channel than a work-group has rows (m = 4, 2, 3), with C = 1, a power of two
     * and a prime */
    static const uint64_t small[][4] = {{2, 1, 5, 7},  {6, 5, 1, 1}, {1, 3, 6, 5},  {3, 5, 7, 11},
                                        {4, 37, 3, 2}, {2, 1, 2, 2}, {2, 16, 1, 1}, {3, 19, 1, 1}};
    static const uint64_t small_nc[][2] = {{2, 1}, {7, 13},  {64, 100}, {3, 385},
                                           {9, 1}, {16, 16}, {3, 17}};
    /* a channel slice longer than any work-group; few channels with very many values (split) */
    static const uint64_t large[][4] = {{2, 3, 64, 64}, {4, 2, 128, 128}, {16, 1, 256, 256}};
    static const uint64_t large_nc[][2] = {{65536, 3}, {4096, 64}, {1000, 1000}};

    case_list l = {0};
    for (size_t li = 0; li < 2; li++)
        for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
            add_all(&l, (clbn_shape){maps[li], small[i][0], small[i][1], small[i][2], small[i][3]});
    for (size_t i = 0; i < sizeof small_nc / sizeof small_nc[0]; i++)
        add_all(&l, (clbn_shape){CLBN_LAYOUT_NC, small_nc[i][0], small_nc[i][1], 1, 1});
    for (size_t li = 0; li < 2; li++)
        for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
            add_some(&l, (clbn_shape){maps[li], large[i][0], large[i][1], large[i][2], large[i][3]},
                     1000 + 3 * i);
    for (size_t i = 0; i < sizeof large_nc / sizeof large_nc[0]; i++)
        add_some(&l, (clbn_shape){CLBN_LAYOUT_NC, large_nc[i][0], large_nc[i][1], 1, 1}, 517);
    /* rows wider than the CPU rows kernels' private tile (2048 channels on PoCL: 4112 = 2 *
     * 2048 + 16, tiles of 2048, 2048 and 16; 512 elsewhere), channels contiguous; too few rows
     * to split, then enough (32 and 64 rows: split over items, so every tile's partials are
     * merged) */
    add_some(&l, (clbn_shape){CLBN_LAYOUT_NHWC, 3, 4112, 2, 2}, 29);
    add_some(&l, (clbn_shape){CLBN_LAYOUT_NC, 5, 4112, 1, 1}, 31);
    add_some(&l, (clbn_shape){CLBN_LAYOUT_NHWC, 8, 4112, 2, 2}, 37);
    add_some(&l, (clbn_shape){CLBN_LAYOUT_NC, 64, 4112, 1, 1}, 41);

    /* ResNet-50's first bottleneck: training forward, backward (with the fused ReLU, as the
     * network uses it) and inference, in both feature-map layouts */
    for (size_t li = 0; li < 2; li++) {
        ref_case k;
        memset(&k, 0, sizeof k);
        k.shape = (clbn_shape){maps[li], 32, 64, 56, 56};
        k.flags = SS | TRACK;
        k.op = CLBN_OP_FORWARD_TRAIN;
        add(&l, k);
        k.op = CLBN_OP_BACKWARD;
        k.activation = CLBN_ACTIVATION_RELU;
        add(&l, k);
        k.op = CLBN_OP_FORWARD_INFER;
        k.activation = CLBN_ACTIVATION_NONE;
        k.offset = 77;
        add(&l, k);
    }

    struct CMUnitTest *tests = calloc(l.count, sizeof *tests);
    if (!tests)
        return 1;
    for (size_t i = 0; i < l.count; i++)
        tests[i] = (struct CMUnitTest){l.names[i], run_case, NULL, NULL, &l.cases[i]};
    int failed = _cmocka_run_group_tests("ops", tests, l.count, tu_group_setup, tu_group_teardown);
    for (size_t i = 0; i < l.count; i++)
        free(l.names[i]);
    free(l.names);
    free(l.cases);
    free(tests);
    return failed;
}
