/* Argument checks of every entry point: each bad argument gets its status and a message naming
 * the argument, and a rejected call changes nothing (every vector, t, the buffer handles and the
 * caller's output buffers are compared bit for bit before and after). Table-driven: each case
 * is an entry point times a defect, named "<entry>/<what is wrong>". */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define C 4u
#define N 2u
#define H 3u
#define W 5u
#define ELEMS (N * C * H * W) /* 120: NCHW 2x4x3x5, NHWC 2x3x5x4 and NC 30x4 all fit exactly */
#define SENTINEL 777.25f
#define N_BN 3
#define END_ 1 /* ends a list of expected statuses (no status has the value 1) */

/* ---------------------------------------------------------------------------------------- */
/* Fixture                                                                                  */
/* ---------------------------------------------------------------------------------------- */

typedef struct fixture {
    clbn_context *ctx;
    clbn_bn *bns[N_BN];    /* default flags (tracking on); tracking off; fused ReLU */
    cl_mem x, dy;          /* inputs, ELEMS floats */
    cl_mem y, dx, yrelu;   /* outputs (yrelu: the forward output a fused backward reads) */
    cl_mem short_buf;      /* ELEMS - 1 floats */
    cl_mem smean, sinvstd; /* caller's saved statistics, C floats */
    cl_mem short_stats;    /* C - 1 floats */
    float x_host[ELEMS], dy_host[ELEMS];
    /* Host outputs of the host-side calls, all checked for sentinels after a rejection. */
    float host_out[C + 1], host_out2[C + 1];
    float host_in[C + 1];
    clbn_plan plan_out;
    uint64_t bytes_out, t_out;
    clbn_bn_options opts_out;
    clbn_device_info info_out;
    clbn_limits limits_out;
    /* Object outputs: a rejected call must leave them as they were or set them to NULL. */
    clbn_bn *bn_out;
    clbn_context *ctx_out;
    cl_mem mem_out;
    cl_context cl_ctx;
    cl_command_queue cl_queue;
    char dir[256];
    char valid_file[300];
    char missing_file[300];
    char missing_dir_file[300];
} fixture;

static fixture F;

/* Recognizable pointer values that no real object has. */
static char sentinel_object_storage[3];
#define BN_SENTINEL ((clbn_bn *)(void *)&sentinel_object_storage[0])
#define CTX_SENTINEL ((clbn_context *)(void *)&sentinel_object_storage[1])
#define MEM_SENTINEL ((cl_mem)(void *)&sentinel_object_storage[2])

static cl_mem make_buffer(size_t n) {
    return tu_buffer(F.ctx, n);
}

static void fill(cl_mem m, size_t n, float v) {
    float *tmp = malloc(n * sizeof *tmp);
    assert_non_null(tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = v;
    tu_write(F.ctx, m, 0, tmp, n);
    free(tmp);
}

/* The values each state object holds before every case: distinct per object, vector and
 * channel, positive (so a running variance or saved invstd is valid). */
static float state_value(int which, int vector, unsigned i) {
    return (float)(which + 1) * 100.0f + (float)vector * 10.0f + (float)i + 0.5f;
}

static int group_setup(void **state) {
    (void)state;
    memset(&F, 0, sizeof F);
    F.ctx = tu_context();
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    TU_OK(clbn_bn_create(F.ctx, &o, &F.bns[0]));
    o.flags &= ~CLBN_TRACK_RUNNING_STATS;
    TU_OK(clbn_bn_create(F.ctx, &o, &F.bns[1]));
    clbn_bn_options_init(&o);
    o.channels = C;
    o.activation = CLBN_ACTIVATION_RELU;
    TU_OK(clbn_bn_create(F.ctx, &o, &F.bns[2]));

    F.x = make_buffer(ELEMS);
    F.dy = make_buffer(ELEMS);
    F.y = make_buffer(ELEMS);
    F.dx = make_buffer(ELEMS);
    F.yrelu = make_buffer(ELEMS);
    F.short_buf = make_buffer(ELEMS - 1);
    F.smean = make_buffer(C);
    F.sinvstd = make_buffer(C);
    F.short_stats = make_buffer(C - 1);
    ref_rng r;
    ref_rng_seed(&r, 11);
    tu_fill_normal(&r, F.x_host, ELEMS, 0.5, 2.0);
    tu_fill_normal(&r, F.dy_host, ELEMS, 0.0, 1.0);
    for (unsigned i = 0; i < C + 1; i++)
        F.host_in[i] = -3.25f * (float)(i + 1);
    TU_OK(clbn_context_get_cl(F.ctx, &F.cl_ctx, &F.cl_queue));

    snprintf(F.dir, sizeof F.dir, "/tmp/clbn-test-args-XXXXXX");
    assert_non_null(mkdtemp(F.dir));
    snprintf(F.valid_file, sizeof F.valid_file, "%s/valid.clbn", F.dir);
    snprintf(F.missing_file, sizeof F.missing_file, "%s/missing.clbn", F.dir);
    snprintf(F.missing_dir_file, sizeof F.missing_dir_file, "%s/no-such-dir/state.clbn", F.dir);
    TU_OK(clbn_bn_save(F.bns[0], F.valid_file));
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    cl_mem mems[] = {F.x, F.dy, F.y, F.dx, F.yrelu, F.short_buf, F.smean, F.sinvstd, F.short_stats};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        clReleaseMemObject(mems[i]);
    for (int i = 0; i < N_BN; i++)
        clbn_bn_release(F.bns[i]);
    clbn_context_release(F.ctx);
    unlink(F.valid_file);
    rmdir(F.dir);
    return 0;
}

/* Puts every object and buffer in its known state before a case. */
static void prepare(void) {
    for (int b = 0; b < N_BN; b++) {
        for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
            float vals[C];
            for (unsigned i = 0; i < C; i++)
                vals[i] = state_value(b, v, i);
            TU_OK(clbn_bn_write_vector(F.bns[b], (clbn_vector)v, vals, C));
        }
        TU_OK(clbn_bn_set_batches_tracked(F.bns[b], 7u + (uint64_t)b));
    }
    tu_write(F.ctx, F.x, 0, F.x_host, ELEMS);
    tu_write(F.ctx, F.dy, 0, F.dy_host, ELEMS);
    fill(F.y, ELEMS, SENTINEL);
    fill(F.dx, ELEMS, SENTINEL);
    fill(F.short_buf, ELEMS - 1, SENTINEL);
    fill(F.smean, C, SENTINEL);
    fill(F.sinvstd, C, SENTINEL);
    fill(F.short_stats, C - 1, SENTINEL);
    /* A plausible fused forward output: non-negative where ReLU passed. */
    float yr[ELEMS];
    for (unsigned i = 0; i < ELEMS; i++)
        yr[i] = F.x_host[i] > 0 ? F.x_host[i] : 0.0f;
    tu_write(F.ctx, F.yrelu, 0, yr, ELEMS);
    for (unsigned i = 0; i < C + 1; i++)
        F.host_out[i] = F.host_out2[i] = SENTINEL;
    memset(&F.plan_out, 0xAB, sizeof F.plan_out);
    memset(&F.bytes_out, 0xAB, sizeof F.bytes_out);
    memset(&F.t_out, 0xAB, sizeof F.t_out);
    memset(&F.opts_out, 0xAB, sizeof F.opts_out);
    memset(&F.info_out, 0xAB, sizeof F.info_out);
    memset(&F.limits_out, 0xAB, sizeof F.limits_out);
    F.bn_out = BN_SENTINEL;
    F.ctx_out = CTX_SENTINEL;
    F.mem_out = MEM_SENTINEL;
}

/* ---------------------------------------------------------------------------------------- */
/* Snapshots                                                                                */
/* ---------------------------------------------------------------------------------------- */

typedef struct bn_snapshot {
    clbn_bn_options opt;
    float vec[CLBN_VECTOR_COUNT][C];
    cl_mem mem[CLBN_VECTOR_COUNT];
    uint64_t t;
} bn_snapshot;

typedef struct snapshot {
    bn_snapshot bn[N_BN];
    float x[ELEMS], dy[ELEMS], y[ELEMS], dx[ELEMS], yrelu[ELEMS], short_buf[ELEMS - 1];
    float smean[C], sinvstd[C], short_stats[C - 1];
    float host_out[C + 1], host_out2[C + 1];
    unsigned char plan_out[sizeof(clbn_plan)];
    unsigned char bytes_out[8], t_out[8];
    unsigned char opts_out[sizeof(clbn_bn_options)];
    unsigned char info_out[sizeof(clbn_device_info)];
    unsigned char limits_out[sizeof(clbn_limits)];
} snapshot;

static void take(snapshot *s) {
    memset(s, 0, sizeof *s);
    for (int b = 0; b < N_BN; b++) {
        bn_snapshot *q = &s->bn[b];
        TU_OK(clbn_bn_get_options(F.bns[b], &q->opt));
        for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
            TU_OK(clbn_bn_read_vector(F.bns[b], (clbn_vector)v, q->vec[v], C));
            TU_OK(clbn_bn_get_buffer(F.bns[b], (clbn_vector)v, &q->mem[v]));
        }
        TU_OK(clbn_bn_get_batches_tracked(F.bns[b], &q->t));
    }
    tu_read(F.ctx, F.x, 0, s->x, ELEMS);
    tu_read(F.ctx, F.dy, 0, s->dy, ELEMS);
    tu_read(F.ctx, F.y, 0, s->y, ELEMS);
    tu_read(F.ctx, F.dx, 0, s->dx, ELEMS);
    tu_read(F.ctx, F.yrelu, 0, s->yrelu, ELEMS);
    tu_read(F.ctx, F.short_buf, 0, s->short_buf, ELEMS - 1);
    tu_read(F.ctx, F.smean, 0, s->smean, C);
    tu_read(F.ctx, F.sinvstd, 0, s->sinvstd, C);
    tu_read(F.ctx, F.short_stats, 0, s->short_stats, C - 1);
    memcpy(s->host_out, F.host_out, sizeof s->host_out);
    memcpy(s->host_out2, F.host_out2, sizeof s->host_out2);
    memcpy(s->plan_out, &F.plan_out, sizeof s->plan_out);
    memcpy(s->bytes_out, &F.bytes_out, sizeof s->bytes_out);
    memcpy(s->t_out, &F.t_out, sizeof s->t_out);
    memcpy(s->opts_out, &F.opts_out, sizeof s->opts_out);
    memcpy(s->info_out, &F.info_out, sizeof s->info_out);
    memcpy(s->limits_out, &F.limits_out, sizeof s->limits_out);
}

static const char *const bn_names[N_BN] = {"bn (tracking)", "bn (no tracking)", "bn (relu)"};

static void compare_floats(const char *what, const float *a, const float *b, size_t n) {
    if (memcmp(a, b, n * sizeof *a) == 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0)
            fail_msg("%s changed at [%zu]: %.9g -> %.9g", what, i, (double)a[i], (double)b[i]);
}

static void compare(const snapshot *a, const snapshot *b) {
    for (int k = 0; k < N_BN; k++) {
        const bn_snapshot *p = &a->bn[k], *q = &b->bn[k];
        char what[96];
        if (p->opt.channels != q->opt.channels || memcmp(&p->opt.eps, &q->opt.eps, 4) != 0 ||
            memcmp(&p->opt.factor, &q->opt.factor, 4) != 0 || p->opt.flags != q->opt.flags ||
            p->opt.activation != q->opt.activation)
            fail_msg("rejected call changed the options of %s", bn_names[k]);
        for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
            snprintf(what, sizeof what, "%s %s", bn_names[k], clbn_vector_name((clbn_vector)v));
            compare_floats(what, p->vec[v], q->vec[v], C);
            if (p->mem[v] != q->mem[v])
                fail_msg("rejected call swapped the cl_mem of %s", what);
        }
        if (p->t != q->t)
            fail_msg("rejected call changed t of %s: %llu -> %llu", bn_names[k],
                     (unsigned long long)p->t, (unsigned long long)q->t);
    }
    compare_floats("x", a->x, b->x, ELEMS);
    compare_floats("dy", a->dy, b->dy, ELEMS);
    compare_floats("y", a->y, b->y, ELEMS);
    compare_floats("dx", a->dx, b->dx, ELEMS);
    compare_floats("y (fused forward output)", a->yrelu, b->yrelu, ELEMS);
    compare_floats("short buffer", a->short_buf, b->short_buf, ELEMS - 1);
    compare_floats("saved mean buffer", a->smean, b->smean, C);
    compare_floats("saved invstd buffer", a->sinvstd, b->sinvstd, C);
    compare_floats("short saved buffer", a->short_stats, b->short_stats, C - 1);
    compare_floats("host output", a->host_out, b->host_out, C + 1);
    compare_floats("second host output", a->host_out2, b->host_out2, C + 1);
    if (memcmp(a->plan_out, b->plan_out, sizeof a->plan_out))
        fail_msg("rejected call wrote *plan");
    if (memcmp(a->bytes_out, b->bytes_out, sizeof a->bytes_out))
        fail_msg("rejected call wrote *bytes");
    if (memcmp(a->t_out, b->t_out, sizeof a->t_out))
        fail_msg("rejected call wrote *t");
    if (memcmp(a->opts_out, b->opts_out, sizeof a->opts_out))
        fail_msg("rejected call wrote *options");
    if (memcmp(a->info_out, b->info_out, sizeof a->info_out))
        fail_msg("rejected call wrote *info");
    if (memcmp(a->limits_out, b->limits_out, sizeof a->limits_out))
        fail_msg("rejected call wrote *limits");
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points taking a shape                                                              */
/* ---------------------------------------------------------------------------------------- */

enum {
    E_TRAIN,
    E_INFER,
    E_FROZEN,
    E_BACKWARD,
    E_BACKWARD_FROZEN,
    E_PLAN_TRAIN,
    E_PLAN_INFER,
    E_PLAN_FROZEN,
    E_PLAN_BACKWARD,
    E_PLAN_BACKWARD_FROZEN,
    E_SCRATCH,
    E_COUNT
};

static const char *const entry_names[E_COUNT] = {"forward_train",
                                                 "forward_infer",
                                                 "forward_frozen",
                                                 "backward",
                                                 "backward_frozen",
                                                 "query_plan(forward_train)",
                                                 "query_plan(forward_infer)",
                                                 "query_plan(forward_frozen)",
                                                 "query_plan(backward)",
                                                 "query_plan(backward_frozen)",
                                                 "scratch_size"};

#define M_(e) (1u << (e))
#define M_TRAIN M_(E_TRAIN)
#define M_FWD (M_(E_TRAIN) | M_(E_INFER) | M_(E_FROZEN))
#define M_BWD (M_(E_BACKWARD) | M_(E_BACKWARD_FROZEN))
#define M_BUF (M_FWD | M_BWD)
#define M_SAVED (M_(E_TRAIN) | M_(E_BACKWARD))
#define M_PLAN                                                                                     \
    (M_(E_PLAN_TRAIN) | M_(E_PLAN_INFER) | M_(E_PLAN_FROZEN) | M_(E_PLAN_BACKWARD) |               \
     M_(E_PLAN_BACKWARD_FROZEN))
#define M_SCRATCH M_(E_SCRATCH)
#define M_ALL (M_BUF | M_PLAN | M_SCRATCH)

typedef struct op_args {
    clbn_bn *bn;
    clbn_shape shape;
    const clbn_shape *shape_ptr;
    cl_mem x, y, dy, dx;
    uint64_t x_off, y_off, dy_off, dx_off;
    clbn_saved_stats saved;
    const clbn_saved_stats *saved_ptr;
    cl_uint num_wait;
    const cl_event *wait_list;
    clbn_op plan_op;
    clbn_plan *plan;
    uint64_t *bytes;
} op_args;

static void default_args(int e, op_args *a) {
    memset(a, 0, sizeof *a);
    a->bn = F.bns[0];
    a->shape.layout = CLBN_LAYOUT_NCHW;
    a->shape.n = N;
    a->shape.c = C;
    a->shape.h = H;
    a->shape.w = W;
    a->shape_ptr = &a->shape;
    a->x = F.x;
    a->y = (e == E_TRAIN || e == E_INFER || e == E_FROZEN) ? F.y : NULL;
    a->dy = F.dy;
    a->dx = F.dx;
    a->saved.mean = F.smean;
    a->saved.invstd = F.sinvstd;
    a->saved_ptr = &a->saved;
    static const clbn_op plan_ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                       CLBN_OP_FORWARD_FROZEN, CLBN_OP_BACKWARD,
                                       CLBN_OP_BACKWARD_FROZEN};
    if (e >= E_PLAN_TRAIN && e <= E_PLAN_BACKWARD_FROZEN)
        a->plan_op = plan_ops[e - E_PLAN_TRAIN];
    a->plan = &F.plan_out;
    a->bytes = &F.bytes_out;
}

static clbn_status call_entry(int e, const op_args *a) {
    switch (e) {
    case E_TRAIN:
        return clbn_bn_forward_train(a->bn, a->shape_ptr, a->x, a->x_off, a->y, a->y_off,
                                     a->saved_ptr, NULL, a->num_wait, a->wait_list, NULL);
    case E_INFER:
        return clbn_bn_forward_infer(a->bn, a->shape_ptr, a->x, a->x_off, a->y, a->y_off, NULL,
                                     a->num_wait, a->wait_list, NULL);
    case E_FROZEN:
        return clbn_bn_forward_frozen(a->bn, a->shape_ptr, a->x, a->x_off, a->y, a->y_off, NULL,
                                      a->num_wait, a->wait_list, NULL);
    case E_BACKWARD:
        return clbn_bn_backward(a->bn, a->shape_ptr, a->x, a->x_off, a->y, a->y_off, a->dy,
                                a->dy_off, a->dx, a->dx_off, a->saved_ptr, NULL, a->num_wait,
                                a->wait_list, NULL);
    case E_BACKWARD_FROZEN:
        return clbn_bn_backward_frozen(a->bn, a->shape_ptr, a->x, a->x_off, a->y, a->y_off, a->dy,
                                       a->dy_off, a->dx, a->dx_off, NULL, a->num_wait, a->wait_list,
                                       NULL);
    case E_SCRATCH:
        return clbn_bn_scratch_size(a->bn, a->shape_ptr, a->bytes);
    default:
        return clbn_bn_query_plan(a->bn, a->plan_op, a->shape_ptr, a->plan);
    }
}

/* Mutators: each turns the valid default call into one with exactly one defect. */
static void m_none(op_args *a) {
    (void)a;
}
static void m_bn_null(op_args *a) {
    a->bn = NULL;
}
static void m_shape_null(op_args *a) {
    a->shape_ptr = NULL;
}
static void m_x_null(op_args *a) {
    a->x = NULL;
}
static void m_y_null(op_args *a) {
    a->y = NULL;
}
static void m_dy_null(op_args *a) {
    a->dy = NULL;
}
static void m_dx_null(op_args *a) {
    a->dx = NULL;
}
static void m_n_zero(op_args *a) {
    a->shape.n = 0;
}
static void m_h_zero(op_args *a) {
    a->shape.h = 0;
}
static void m_w_zero(op_args *a) {
    a->shape.w = 0;
}
static void m_nhwc_n_zero(op_args *a) {
    a->shape.layout = CLBN_LAYOUT_NHWC;
    a->shape.n = 0;
}
static void m_nc(op_args *a) {
    a->shape.layout = CLBN_LAYOUT_NC;
    a->shape.n = N * H * W;
    a->shape.h = 1;
    a->shape.w = 1;
}
static void m_nc_n_zero(op_args *a) {
    m_nc(a);
    a->shape.n = 0;
}
static void m_c_zero(op_args *a) {
    a->shape.c = 0;
}
static void m_c_fewer(op_args *a) {
    a->shape.c = C - 1;
}
static void m_c_more(op_args *a) {
    a->shape.n = 1; /* 1x5x3x5 = 75 elements: fits the buffers, only C is wrong */
    a->shape.c = C + 1;
}
static void m_nc_c_mismatch(op_args *a) {
    m_nc(a);
    a->shape.c = C - 1;
}
static void m_elems_overflow(op_args *a) {
    a->shape.n = 1ull << 31; /* m = 2^62 fits, n*c*h*w = 2^64 does not */
    a->shape.h = 1ull << 31;
    a->shape.w = 1;
}
static void m_m_overflow(op_args *a) {
    a->shape.n = 1ull << 32; /* m = n*h*w = 2^64 */
    a->shape.h = 1ull << 32;
    a->shape.w = 1;
}
static void m_huge_dims_overflow(op_args *a) {
    a->shape.n = UINT64_MAX;
    a->shape.h = UINT64_MAX;
    a->shape.w = UINT64_MAX;
}
static void m_nc_elems_overflow(op_args *a) {
    m_nc(a);
    a->shape.n = 1ull << 62; /* n*c = 2^64 */
}
static void m_bytes_overflow(op_args *a) {
    a->shape.n = 1ull << 61; /* 2^63 elements fit in 64 bits, 2^65 bytes wrap to 0 */
    a->shape.h = 1;
    a->shape.w = 1;
}
static void m_huge_fits(op_args *a) {
    a->shape.n = 1ull << 20; /* 2^42 elements: no overflow, far bigger than the buffers */
    a->shape.h = 1ull << 10;
    a->shape.w = 1ull << 10;
}
static void m_nc_h_two(op_args *a) {
    m_nc(a);
    a->shape.n = N * W;
    a->shape.h = 3;
}
static void m_nc_w_two(op_args *a) {
    m_nc(a);
    a->shape.n = N * H;
    a->shape.w = 5;
}
static void m_nc_h0_w0(op_args *a) {
    m_nc(a);
    a->shape.h = 0;
    a->shape.w = 0;
}
static void m_nhwc(op_args *a) {
    a->shape.layout = CLBN_LAYOUT_NHWC;
}
static void m_layout_unknown(op_args *a) {
    a->shape.layout = (clbn_layout)3;
}
static void m_layout_negative(op_args *a) {
    a->shape.layout = (clbn_layout)-1;
}
static void m_x_short(op_args *a) {
    a->x = F.short_buf;
}
static void m_x_off_past(op_args *a) {
    a->x_off = 1;
}
static void m_x_off_wrap(op_args *a) {
    a->x_off = UINT64_MAX - 60; /* x_off + 120 wraps to 59 */
}
static void m_x_off_bytes_wrap(op_args *a) {
    a->x_off = 1ull << 62; /* (x_off + 120) * 4 wraps to exactly the buffer's 480 bytes */
}
static void m_y_short(op_args *a) {
    a->y = F.short_buf;
}
static void m_y_off_past(op_args *a) {
    a->y_off = 1;
}
static void m_y_off_wrap(op_args *a) {
    a->y_off = UINT64_MAX - 60;
}
static void m_y_off_bytes_wrap(op_args *a) {
    a->y_off = 1ull << 62;
}
static void m_dy_short(op_args *a) {
    a->dy = F.short_buf;
}
static void m_dy_off_past(op_args *a) {
    a->dy_off = 1;
}
static void m_dy_off_wrap(op_args *a) {
    a->dy_off = UINT64_MAX - 60;
}
static void m_dx_short(op_args *a) {
    a->dx = F.short_buf;
}
static void m_dx_off_past(op_args *a) {
    a->dx_off = 1;
}
static void m_dx_off_wrap(op_args *a) {
    a->dx_off = 1ull << 62;
}
static void m_nhwc_x_short(op_args *a) {
    m_nhwc(a);
    a->x = F.short_buf;
}
static void m_nc_x_short(op_args *a) {
    m_nc(a);
    a->x = F.short_buf;
}
static void m_nc_y_off_past(op_args *a) {
    m_nc(a);
    a->y_off = 1;
}
static void m_in_place(op_args *a) {
    a->y = a->x;
}
static void m_saved_mean_null(op_args *a) {
    a->saved.mean = NULL;
}
static void m_saved_invstd_null(op_args *a) {
    a->saved.invstd = NULL;
}
static void m_saved_mean_short(op_args *a) {
    a->saved.mean = F.short_stats;
}
static void m_saved_invstd_short(op_args *a) {
    a->saved.invstd = F.short_stats;
}
static void m_saved_invstd_off_past(op_args *a) {
    a->saved.invstd_offset = 1;
}
static void m_saved_mean_off_wrap(op_args *a) {
    a->saved.mean_offset = UINT64_MAX - 1;
}
static void m_saved_null(op_args *a) {
    a->saved_ptr = NULL;
}
static void m_wait_null(op_args *a) {
    a->num_wait = 1;
    a->wait_list = NULL;
}
static void m_m_one(op_args *a) {
    a->shape.n = 1;
    a->shape.h = 1;
    a->shape.w = 1;
}
static void m_nc_m_one(op_args *a) {
    m_nc(a);
    a->shape.n = 1;
}
static void m_nhwc_m_one(op_args *a) {
    m_nhwc(a);
    m_m_one(a);
}
static void m_notrack(op_args *a) {
    a->bn = F.bns[1];
}
static void m_notrack_m_one(op_args *a) {
    m_notrack(a);
    m_m_one(a);
}
static void m_relu_valid(op_args *a) {
    a->bn = F.bns[2];
    a->y = F.yrelu;
}
static void m_relu_y_null(op_args *a) {
    a->bn = F.bns[2];
    a->y = NULL;
}
static void m_relu_y_short(op_args *a) {
    a->bn = F.bns[2];
    a->y = F.short_buf;
}
static void m_relu_y_off_past(op_args *a) {
    a->bn = F.bns[2];
    a->y = F.yrelu;
    a->y_off = 1;
}
static void m_plan_op_unknown(op_args *a) {
    a->plan_op = (clbn_op)5;
}
static void m_plan_op_negative(op_args *a) {
    a->plan_op = (clbn_op)-1;
}
static void m_plan_null(op_args *a) {
    a->plan = NULL;
}
static void m_bytes_null(op_args *a) {
    a->bytes = NULL;
}

typedef struct defect {
    const char *name;
    unsigned mask;
    void (*mutate)(op_args *a);
    int expect[5];          /* statuses, ended by END_ */
    const char *needles[5]; /* the message names one of these; NULL-ended (none: no check) */
} defect;

#define OK_                                                                                        \
    { CLBN_SUCCESS, END_ }
#define NULL_                                                                                      \
    { CLBN_ERROR_NULL_ARGUMENT, END_ }
#define EMPTY_                                                                                     \
    { CLBN_ERROR_EMPTY_BATCH, END_ }
#define SHAPE_                                                                                     \
    { CLBN_ERROR_INVALID_SHAPE, END_ }
#define CHAN_                                                                                      \
    { CLBN_ERROR_CHANNEL_MISMATCH, END_ }
#define SMALL_                                                                                     \
    { CLBN_ERROR_BUFFER_TOO_SMALL, END_ }
/* An offset so large that offset + size wraps: too small, or an invalid argument. */
#define WRAP_                                                                                      \
    { CLBN_ERROR_BUFFER_TOO_SMALL, CLBN_ERROR_INVALID_ARGUMENT, END_ }
#define LAYOUT_                                                                                    \
    { CLBN_ERROR_INVALID_LAYOUT, END_ }
#define SHAPE_NAMES                                                                                \
    { "shape", NULL }
#define CHAN_NAMES                                                                                 \
    { "shape", "channels", "channel", NULL }

static const char too_few_message[] = "expected more than 1 value per channel when training";

static const defect defects[] = {
    /* The valid call of each entry point: proves each defect below is what gets rejected. */
    {"valid", M_ALL, m_none, OK_, {NULL}},
    {"nhwc_valid", M_ALL, m_nhwc, OK_, {NULL}},
    {"nc_valid", M_ALL, m_nc, OK_, {NULL}},
    {"nc_h0_w0_valid", M_ALL, m_nc_h0_w0, OK_, {NULL}},
    {"in_place_valid", M_FWD, m_in_place, OK_, {NULL}},
    {"saved_null_uses_state_valid", M_SAVED, m_saved_null, OK_, {NULL}},
    {"activation_valid", M_BWD, m_relu_valid, OK_, {NULL}},
    /* NULL handles and buffers. */
    {"bn_null", M_ALL, m_bn_null, NULL_, {"bn", NULL}},
    {"shape_null", M_ALL, m_shape_null, NULL_, {"shape", NULL}},
    {"x_null", M_BUF, m_x_null, NULL_, {"x", NULL}},
    {"y_null", M_FWD, m_y_null, NULL_, {"y", NULL}},
    {"dy_null", M_BWD, m_dy_null, NULL_, {"dy", NULL}},
    {"dx_null", M_BWD, m_dx_null, NULL_, {"dx", NULL}},
    {"activation_y_null", M_BWD, m_relu_y_null, NULL_, {"y", NULL}},
    {"saved_mean_null", M_SAVED, m_saved_mean_null, NULL_, {"saved", "mean", NULL}},
    {"saved_invstd_null", M_SAVED, m_saved_invstd_null, NULL_, {"saved", "invstd", NULL}},
    {"plan_null", M_PLAN, m_plan_null, NULL_, {"plan", NULL}},
    {"bytes_null", M_SCRATCH, m_bytes_null, NULL_, {"bytes", NULL}},
    {"wait_list_null_with_num_wait",
     M_BUF,
     m_wait_null,
     {CLBN_ERROR_NULL_ARGUMENT, CLBN_ERROR_INVALID_ARGUMENT, CL_INVALID_EVENT_WAIT_LIST, END_},
     {"wait_list", "num_wait", NULL}},
    /* m = 0 with the right channel count. */
    {"n_zero_empty_batch", M_ALL, m_n_zero, EMPTY_, SHAPE_NAMES},
    {"h_zero_empty_batch", M_ALL, m_h_zero, EMPTY_, SHAPE_NAMES},
    {"w_zero_empty_batch", M_ALL, m_w_zero, EMPTY_, SHAPE_NAMES},
    {"nhwc_n_zero_empty_batch", M_ALL, m_nhwc_n_zero, EMPTY_, SHAPE_NAMES},
    {"nc_n_zero_empty_batch", M_ALL, m_nc_n_zero, EMPTY_, SHAPE_NAMES},
    /* Channel count. */
    {"c_zero",
     M_ALL,
     m_c_zero,
     {CLBN_ERROR_CHANNEL_MISMATCH, CLBN_ERROR_INVALID_SHAPE, END_},
     CHAN_NAMES},
    {"c_fewer_than_state", M_ALL, m_c_fewer, CHAN_, CHAN_NAMES},
    {"c_more_than_state", M_ALL, m_c_more, CHAN_, CHAN_NAMES},
    {"nc_c_mismatch", M_ALL, m_nc_c_mismatch, CHAN_, CHAN_NAMES},
    /* Products that overflow 64 bits. */
    {"elements_overflow_64bit", M_ALL, m_elems_overflow, SHAPE_, SHAPE_NAMES},
    {"m_overflows_64bit", M_ALL, m_m_overflow, SHAPE_, SHAPE_NAMES},
    {"all_dims_uint64_max", M_ALL, m_huge_dims_overflow, SHAPE_, SHAPE_NAMES},
    {"nc_elements_overflow_64bit", M_ALL, m_nc_elems_overflow, SHAPE_, SHAPE_NAMES},
    {"bytes_overflow_64bit",
     M_BUF,
     m_bytes_overflow,
     {CLBN_ERROR_INVALID_SHAPE, CLBN_ERROR_BUFFER_TOO_SMALL, END_},
     {"shape", "x", NULL}},
    {"huge_shape_beyond_buffers", M_BUF, m_huge_fits, SMALL_, {"x", NULL}},
    /* Layout. */
    {"nc_h_not_0_or_1", M_ALL, m_nc_h_two, SHAPE_, SHAPE_NAMES},
    {"nc_w_not_0_or_1", M_ALL, m_nc_w_two, SHAPE_, SHAPE_NAMES},
    {"layout_unknown", M_ALL, m_layout_unknown, LAYOUT_, {"layout", NULL}},
    {"layout_negative", M_ALL, m_layout_negative, LAYOUT_, {"layout", NULL}},
    /* Buffers smaller than shape plus offset. */
    {"x_one_element_short", M_BUF, m_x_short, SMALL_, {"x", NULL}},
    {"x_offset_past_end", M_BUF, m_x_off_past, SMALL_, {"x", "x_offset", NULL}},
    {"x_offset_wraps_64bit", M_BUF, m_x_off_wrap, WRAP_, {"x", "x_offset", NULL}},
    {"x_offset_bytes_wrap_64bit", M_BUF, m_x_off_bytes_wrap, WRAP_, {"x", "x_offset", NULL}},
    {"nhwc_x_one_element_short", M_BUF, m_nhwc_x_short, SMALL_, {"x", NULL}},
    {"nc_x_one_element_short", M_BUF, m_nc_x_short, SMALL_, {"x", NULL}},
    {"y_one_element_short", M_FWD, m_y_short, SMALL_, {"y", NULL}},
    {"y_offset_past_end", M_FWD, m_y_off_past, SMALL_, {"y", "y_offset", NULL}},
    {"y_offset_wraps_64bit", M_FWD, m_y_off_wrap, WRAP_, {"y", "y_offset", NULL}},
    {"y_offset_bytes_wrap_64bit", M_FWD, m_y_off_bytes_wrap, WRAP_, {"y", "y_offset", NULL}},
    {"nc_y_offset_past_end", M_FWD, m_nc_y_off_past, SMALL_, {"y", "y_offset", NULL}},
    {"activation_y_one_element_short", M_BWD, m_relu_y_short, SMALL_, {"y", NULL}},
    {"activation_y_offset_past_end", M_BWD, m_relu_y_off_past, SMALL_, {"y", "y_offset", NULL}},
    {"dy_one_element_short", M_BWD, m_dy_short, SMALL_, {"dy", NULL}},
    {"dy_offset_past_end", M_BWD, m_dy_off_past, SMALL_, {"dy", "dy_offset", NULL}},
    {"dy_offset_wraps_64bit", M_BWD, m_dy_off_wrap, WRAP_, {"dy", "dy_offset", NULL}},
    {"dx_one_element_short", M_BWD, m_dx_short, SMALL_, {"dx", NULL}},
    {"dx_offset_past_end", M_BWD, m_dx_off_past, SMALL_, {"dx", "dx_offset", NULL}},
    {"dx_offset_bytes_wrap_64bit", M_BWD, m_dx_off_wrap, WRAP_, {"dx", "dx_offset", NULL}},
    {"saved_mean_one_element_short", M_SAVED, m_saved_mean_short, SMALL_, {"saved", "mean", NULL}},
    {"saved_invstd_one_element_short",
     M_SAVED,
     m_saved_invstd_short,
     SMALL_,
     {"saved", "invstd", NULL}},
    {"saved_invstd_offset_past_end",
     M_SAVED,
     m_saved_invstd_off_past,
     SMALL_,
     {"saved", "invstd", "invstd_offset", NULL}},
    {"saved_mean_offset_wraps_64bit",
     M_SAVED,
     m_saved_mean_off_wrap,
     WRAP_,
     {"saved", "mean", "mean_offset", NULL}},
    /* The m rules. */
    {"m_one_tracking_on_too_few_values",
     M_TRAIN,
     m_m_one,
     {CLBN_ERROR_TOO_FEW_VALUES, END_},
     {too_few_message, NULL}},
    {"nc_m_one_tracking_on_too_few_values",
     M_TRAIN,
     m_nc_m_one,
     {CLBN_ERROR_TOO_FEW_VALUES, END_},
     {too_few_message, NULL}},
    {"nhwc_m_one_tracking_on_too_few_values",
     M_TRAIN,
     m_nhwc_m_one,
     {CLBN_ERROR_TOO_FEW_VALUES, END_},
     {too_few_message, NULL}},
    {"m_one_tracking_off_allowed", M_(E_TRAIN) | M_(E_INFER), m_notrack_m_one, OK_, {NULL}},
    {"m_one_with_running_stats_allowed", M_(E_INFER) | M_(E_FROZEN), m_m_one, OK_, {NULL}},
    {"frozen_requires_tracking",
     M_(E_FROZEN),
     m_notrack,
     {CLBN_ERROR_INVALID_OPTION, CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_UNSUPPORTED, END_},
     {"track", "tracking", "CLBN_TRACK_RUNNING_STATS", "running", NULL}},
    /* Plans. */
    {"op_unknown",
     M_PLAN,
     m_plan_op_unknown,
     {CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_INVALID_OPTION, END_},
     {"op", NULL}},
    {"op_negative",
     M_PLAN,
     m_plan_op_negative,
     {CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_INVALID_OPTION, END_},
     {"op", NULL}},
};
#define N_DEFECTS (sizeof defects / sizeof defects[0])

/* ---------------------------------------------------------------------------------------- */
/* Entry points without a shape                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct misc_case {
    const char *name;
    clbn_status (*call)(void);
    int expect[5];
    const char *needles[5];
} misc_case;

static clbn_bn_options default_options(void) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = C;
    return o;
}

#define CREATE_CASE(fname, change)                                                                 \
    static clbn_status fname(void) {                                                               \
        clbn_bn_options o = default_options();                                                     \
        change;                                                                                    \
        return clbn_bn_create(F.ctx, &o, &F.bn_out);                                               \
    }
CREATE_CASE(create_valid, (void)0)
CREATE_CASE(create_channels_zero, o.channels = 0)
CREATE_CASE(create_channels_bytes_wrap, o.channels = 1ull << 62)
CREATE_CASE(create_channels_max, o.channels = UINT64_MAX)
CREATE_CASE(create_eps_zero, o.eps = 0.0f)
CREATE_CASE(create_eps_negative_zero, o.eps = -0.0f)
CREATE_CASE(create_eps_negative, o.eps = -1e-5f)
CREATE_CASE(create_eps_nan, o.eps = NAN)
CREATE_CASE(create_factor_zero, o.factor = 0.0f)
CREATE_CASE(create_factor_negative, o.factor = -0.1f)
CREATE_CASE(create_factor_above_one, o.factor = 1.5f)
CREATE_CASE(create_factor_just_above_one, o.factor = nextafterf(1.0f, 2.0f))
CREATE_CASE(create_factor_nan, o.factor = NAN)
CREATE_CASE(create_factor_one, o.factor = 1.0f)
CREATE_CASE(create_flags_unknown_bit, o.flags |= 1u << 5)
CREATE_CASE(create_flags_high_bit, o.flags |= 1u << 31)
CREATE_CASE(create_flags_zero, o.flags = 0)
CREATE_CASE(create_activation_unknown, o.activation = (clbn_activation)3)
CREATE_CASE(create_activation_negative, o.activation = (clbn_activation)-1)

static clbn_status create_context_null(void) {
    clbn_bn_options o = default_options();
    return clbn_bn_create(NULL, &o, &F.bn_out);
}
static clbn_status create_options_null(void) {
    return clbn_bn_create(F.ctx, NULL, &F.bn_out);
}
static clbn_status create_bn_null(void) {
    clbn_bn_options o = default_options();
    return clbn_bn_create(F.ctx, &o, NULL);
}

static clbn_status get_options_bn_null(void) {
    return clbn_bn_get_options(NULL, &F.opts_out);
}
static clbn_status get_options_options_null(void) {
    return clbn_bn_get_options(F.bns[0], NULL);
}
static clbn_status get_buffer_bn_null(void) {
    return clbn_bn_get_buffer(NULL, CLBN_VECTOR_GAMMA, &F.mem_out);
}
static clbn_status get_buffer_vector_count(void) {
    return clbn_bn_get_buffer(F.bns[0], CLBN_VECTOR_COUNT, &F.mem_out);
}
static clbn_status get_buffer_vector_negative(void) {
    return clbn_bn_get_buffer(F.bns[0], (clbn_vector)-1, &F.mem_out);
}
static clbn_status get_buffer_buffer_null(void) {
    return clbn_bn_get_buffer(F.bns[0], CLBN_VECTOR_GAMMA, NULL);
}
static clbn_status read_bn_null(void) {
    return clbn_bn_read_vector(NULL, CLBN_VECTOR_GAMMA, F.host_out, C);
}
static clbn_status read_vector_count(void) {
    return clbn_bn_read_vector(F.bns[0], CLBN_VECTOR_COUNT, F.host_out, C);
}
static clbn_status read_vector_negative(void) {
    return clbn_bn_read_vector(F.bns[0], (clbn_vector)-1, F.host_out, C);
}
static clbn_status read_host_null(void) {
    return clbn_bn_read_vector(F.bns[0], CLBN_VECTOR_GAMMA, NULL, C);
}
static clbn_status read_count_short(void) {
    return clbn_bn_read_vector(F.bns[0], CLBN_VECTOR_RUNNING_MEAN, F.host_out, C - 1);
}
static clbn_status read_count_long(void) {
    return clbn_bn_read_vector(F.bns[0], CLBN_VECTOR_RUNNING_MEAN, F.host_out, C + 1);
}
static clbn_status read_count_zero(void) {
    return clbn_bn_read_vector(F.bns[0], CLBN_VECTOR_RUNNING_MEAN, F.host_out, 0);
}
static clbn_status write_bn_null(void) {
    return clbn_bn_write_vector(NULL, CLBN_VECTOR_GAMMA, F.host_in, C);
}
static clbn_status write_vector_count(void) {
    return clbn_bn_write_vector(F.bns[0], CLBN_VECTOR_COUNT, F.host_in, C);
}
static clbn_status write_vector_negative(void) {
    return clbn_bn_write_vector(F.bns[0], (clbn_vector)-1, F.host_in, C);
}
static clbn_status write_host_null(void) {
    return clbn_bn_write_vector(F.bns[0], CLBN_VECTOR_BETA, NULL, C);
}
static clbn_status write_count_short(void) {
    return clbn_bn_write_vector(F.bns[0], CLBN_VECTOR_RUNNING_VAR, F.host_in, C - 1);
}
static clbn_status write_count_long(void) {
    return clbn_bn_write_vector(F.bns[0], CLBN_VECTOR_RUNNING_VAR, F.host_in, C + 1);
}
static clbn_status write_count_zero(void) {
    return clbn_bn_write_vector(F.bns[0], CLBN_VECTOR_RUNNING_VAR, F.host_in, 0);
}
static clbn_status get_t_bn_null(void) {
    return clbn_bn_get_batches_tracked(NULL, &F.t_out);
}
static clbn_status get_t_t_null(void) {
    return clbn_bn_get_batches_tracked(F.bns[0], NULL);
}
static clbn_status set_t_bn_null(void) {
    return clbn_bn_set_batches_tracked(NULL, 3);
}
static clbn_status reset_bn_null(void) {
    return clbn_bn_reset_running_stats(NULL);
}
static clbn_status export_bn_null(void) {
    return clbn_bn_export_folded(NULL, F.host_out, F.host_out2);
}
static clbn_status export_a_null(void) {
    return clbn_bn_export_folded(F.bns[0], NULL, F.host_out2);
}
static clbn_status export_b_null(void) {
    return clbn_bn_export_folded(F.bns[0], F.host_out, NULL);
}
static clbn_status save_bn_null(void) {
    return clbn_bn_save(NULL, F.missing_file);
}
static clbn_status save_path_null(void) {
    return clbn_bn_save(F.bns[0], NULL);
}
static clbn_status save_path_empty(void) {
    return clbn_bn_save(F.bns[0], "");
}
static clbn_status save_dir_missing(void) {
    return clbn_bn_save(F.bns[0], F.missing_dir_file);
}
static clbn_status load_context_null(void) {
    return clbn_bn_load(NULL, F.valid_file, &F.bn_out);
}
static clbn_status load_path_null(void) {
    return clbn_bn_load(F.ctx, NULL, &F.bn_out);
}
static clbn_status load_bn_null(void) {
    return clbn_bn_load(F.ctx, F.valid_file, NULL);
}
static clbn_status load_path_missing(void) {
    return clbn_bn_load(F.ctx, F.missing_file, &F.bn_out);
}
static clbn_status load_path_empty(void) {
    return clbn_bn_load(F.ctx, "", &F.bn_out);
}
static clbn_status load_valid(void) {
    return clbn_bn_load(F.ctx, F.valid_file, &F.bn_out);
}

static clbn_status context_with_selector(const char *selector) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.device = selector;
    return clbn_context_create(&o, &F.ctx_out);
}
static clbn_status context_selector_nonexistent(void) {
    return context_with_selector("nonexistent-xyz");
}
static clbn_status context_selector_9_9(void) {
    return context_with_selector("9:9");
}
static clbn_status context_selector_platform_only(void) {
    return context_with_selector("0:9999");
}
static clbn_status context_context_null(void) {
    return clbn_context_create(NULL, NULL);
}
static clbn_status context_with_limits(uint32_t vector_width, uint32_t device_type) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.limits.vector_width = vector_width;
    o.limits.device_type = device_type;
    return clbn_context_create(&o, &F.ctx_out);
}
static clbn_status context_vector_width_3(void) {
    return context_with_limits(3, 0);
}
static clbn_status context_vector_width_32(void) {
    return context_with_limits(32, 0);
}
static clbn_status context_device_type_unknown(void) {
    return context_with_limits(0, 7);
}
static clbn_status wrap_cl_ctx_null(void) {
    return clbn_context_wrap(NULL, F.cl_queue, NULL, &F.ctx_out);
}
static clbn_status wrap_queue_null(void) {
    return clbn_context_wrap(F.cl_ctx, NULL, NULL, &F.ctx_out);
}
static clbn_status wrap_context_null(void) {
    return clbn_context_wrap(F.cl_ctx, F.cl_queue, NULL, NULL);
}
static clbn_status info_context_null(void) {
    return clbn_context_get_device_info(NULL, &F.info_out);
}
static clbn_status info_info_null(void) {
    return clbn_context_get_device_info(F.ctx, NULL);
}
static clbn_status limits_context_null(void) {
    return clbn_context_get_limits(NULL, &F.limits_out);
}
static clbn_status limits_limits_null(void) {
    return clbn_context_get_limits(F.ctx, NULL);
}
static clbn_status get_cl_context_null(void) {
    cl_context c;
    cl_command_queue q;
    return clbn_context_get_cl(NULL, &c, &q);
}
static clbn_status build_all_context_null(void) {
    return clbn_context_build_all(NULL);
}
static clbn_status device_list_count_null(void) {
    return clbn_device_list(NULL, 0, NULL);
}

#define INVALID_OPT_                                                                               \
    { CLBN_ERROR_INVALID_OPTION, END_ }
/* An unknown vector or op: an invalid argument or an unknown option, both say so. */
#define UNKNOWN_                                                                                   \
    { CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_INVALID_OPTION, END_ }
/* A count that is not C: any of the statuses that say a size is wrong. */
#define COUNT_                                                                                     \
    { CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_CHANNEL_MISMATCH, CLBN_ERROR_BUFFER_TOO_SMALL, END_ }
#define CHANNELS_BAD_                                                                              \
    { CLBN_ERROR_INVALID_OPTION, CLBN_ERROR_INVALID_ARGUMENT, CLBN_ERROR_INVALID_SHAPE, END_ }

static const misc_case misc_cases[] = {
    {"bn_create/valid", create_valid, OK_, {NULL}},
    {"bn_create/factor_one_allowed", create_factor_one, OK_, {NULL}},
    {"bn_create/flags_zero_allowed", create_flags_zero, OK_, {NULL}},
    {"bn_create/context_null", create_context_null, NULL_, {"context", NULL}},
    {"bn_create/options_null", create_options_null, NULL_, {"options", NULL}},
    {"bn_create/bn_null", create_bn_null, NULL_, {"bn", NULL}},
    {"bn_create/channels_zero", create_channels_zero, CHANNELS_BAD_, {"channels", NULL}},
    {"bn_create/channels_bytes_wrap_64bit",
     create_channels_bytes_wrap,
     CHANNELS_BAD_,
     {"channels", NULL}},
    {"bn_create/channels_uint64_max", create_channels_max, CHANNELS_BAD_, {"channels", NULL}},
    {"bn_create/eps_zero", create_eps_zero, INVALID_OPT_, {"eps", NULL}},
    {"bn_create/eps_negative_zero", create_eps_negative_zero, INVALID_OPT_, {"eps", NULL}},
    {"bn_create/eps_negative", create_eps_negative, INVALID_OPT_, {"eps", NULL}},
    {"bn_create/eps_nan", create_eps_nan, INVALID_OPT_, {"eps", NULL}},
    {"bn_create/factor_zero", create_factor_zero, INVALID_OPT_, {"factor", NULL}},
    {"bn_create/factor_negative", create_factor_negative, INVALID_OPT_, {"factor", NULL}},
    {"bn_create/factor_above_one", create_factor_above_one, INVALID_OPT_, {"factor", NULL}},
    {"bn_create/factor_just_above_one",
     create_factor_just_above_one,
     INVALID_OPT_,
     {"factor", NULL}},
    {"bn_create/factor_nan", create_factor_nan, INVALID_OPT_, {"factor", NULL}},
    {"bn_create/flags_unknown_bit", create_flags_unknown_bit, INVALID_OPT_, {"flags", NULL}},
    {"bn_create/flags_high_bit", create_flags_high_bit, INVALID_OPT_, {"flags", NULL}},
    {"bn_create/activation_unknown", create_activation_unknown, INVALID_OPT_, {"activation", NULL}},
    {"bn_create/activation_negative",
     create_activation_negative,
     INVALID_OPT_,
     {"activation", NULL}},
    {"get_options/bn_null", get_options_bn_null, NULL_, {"bn", NULL}},
    {"get_options/options_null", get_options_options_null, NULL_, {"options", NULL}},
    {"get_buffer/bn_null", get_buffer_bn_null, NULL_, {"bn", NULL}},
    {"get_buffer/vector_count", get_buffer_vector_count, UNKNOWN_, {"vector", NULL}},
    {"get_buffer/vector_negative", get_buffer_vector_negative, UNKNOWN_, {"vector", NULL}},
    {"get_buffer/buffer_null", get_buffer_buffer_null, NULL_, {"buffer", NULL}},
    {"read_vector/bn_null", read_bn_null, NULL_, {"bn", NULL}},
    {"read_vector/vector_count", read_vector_count, UNKNOWN_, {"vector", NULL}},
    {"read_vector/vector_negative", read_vector_negative, UNKNOWN_, {"vector", NULL}},
    {"read_vector/host_null", read_host_null, NULL_, {"host", NULL}},
    {"read_vector/count_one_short", read_count_short, COUNT_, {"count", NULL}},
    {"read_vector/count_one_long", read_count_long, COUNT_, {"count", NULL}},
    {"read_vector/count_zero", read_count_zero, COUNT_, {"count", NULL}},
    {"write_vector/bn_null", write_bn_null, NULL_, {"bn", NULL}},
    {"write_vector/vector_count", write_vector_count, UNKNOWN_, {"vector", NULL}},
    {"write_vector/vector_negative", write_vector_negative, UNKNOWN_, {"vector", NULL}},
    {"write_vector/host_null", write_host_null, NULL_, {"host", NULL}},
    {"write_vector/count_one_short", write_count_short, COUNT_, {"count", NULL}},
    {"write_vector/count_one_long", write_count_long, COUNT_, {"count", NULL}},
    {"write_vector/count_zero", write_count_zero, COUNT_, {"count", NULL}},
    {"get_batches_tracked/bn_null", get_t_bn_null, NULL_, {"bn", NULL}},
    {"get_batches_tracked/t_null", get_t_t_null, NULL_, {"t", NULL}},
    {"set_batches_tracked/bn_null", set_t_bn_null, NULL_, {"bn", NULL}},
    {"reset_running_stats/bn_null", reset_bn_null, NULL_, {"bn", NULL}},
    {"export_folded/bn_null", export_bn_null, NULL_, {"bn", NULL}},
    {"export_folded/a_null", export_a_null, NULL_, {"a", NULL}},
    {"export_folded/b_null", export_b_null, NULL_, {"b", NULL}},
    {"save/bn_null", save_bn_null, NULL_, {"bn", NULL}},
    {"save/path_null", save_path_null, NULL_, {"path", NULL}},
    {"save/path_empty",
     save_path_empty,
     {CLBN_ERROR_IO, CLBN_ERROR_INVALID_ARGUMENT, END_},
     {"path", NULL}},
    {"save/directory_missing",
     save_dir_missing,
     {CLBN_ERROR_IO, END_},
     {"path", F.missing_dir_file, NULL}},
    {"load/valid", load_valid, OK_, {NULL}},
    {"load/context_null", load_context_null, NULL_, {"context", NULL}},
    {"load/path_null", load_path_null, NULL_, {"path", NULL}},
    {"load/bn_null", load_bn_null, NULL_, {"bn", NULL}},
    {"load/path_empty",
     load_path_empty,
     {CLBN_ERROR_IO, CLBN_ERROR_INVALID_ARGUMENT, END_},
     {"path", NULL}},
    {"load/path_missing", load_path_missing, {CLBN_ERROR_IO, END_}, {"path", F.missing_file, NULL}},
    {"context_create/selector_matches_nothing",
     context_selector_nonexistent,
     {CLBN_ERROR_DEVICE_NOT_FOUND, END_},
     {"nonexistent-xyz", NULL}},
    {"context_create/selector_9_9",
     context_selector_9_9,
     {CLBN_ERROR_DEVICE_NOT_FOUND, END_},
     {"9:9", NULL}},
    {"context_create/selector_device_index_past_end",
     context_selector_platform_only,
     {CLBN_ERROR_DEVICE_NOT_FOUND, END_},
     {"0:9999", NULL}},
    {"context_create/context_null", context_context_null, NULL_, {"context", NULL}},
    {"context_create/vector_width_3",
     context_vector_width_3,
     INVALID_OPT_,
     {"vector_width", "limits", NULL}},
    {"context_create/vector_width_32",
     context_vector_width_32,
     INVALID_OPT_,
     {"vector_width", "limits", NULL}},
    {"context_create/device_type_unknown",
     context_device_type_unknown,
     INVALID_OPT_,
     {"device_type", "limits", NULL}},
    {"context_wrap/cl_ctx_null", wrap_cl_ctx_null, NULL_, {"cl_ctx", "cl_context", NULL}},
    {"context_wrap/queue_null", wrap_queue_null, NULL_, {"queue", NULL}},
    {"context_wrap/context_null", wrap_context_null, NULL_, {"context", NULL}},
    {"context_get_device_info/context_null", info_context_null, NULL_, {"context", NULL}},
    {"context_get_device_info/info_null", info_info_null, NULL_, {"info", NULL}},
    {"context_get_limits/context_null", limits_context_null, NULL_, {"context", NULL}},
    {"context_get_limits/limits_null", limits_limits_null, NULL_, {"limits", NULL}},
    {"context_get_cl/context_null", get_cl_context_null, NULL_, {"context", NULL}},
    {"context_build_all/context_null", build_all_context_null, NULL_, {"context", NULL}},
    {"device_list/count_null", device_list_count_null, NULL_, {"count", NULL}},
};
#define N_MISC (sizeof misc_cases / sizeof misc_cases[0])

/* ---------------------------------------------------------------------------------------- */
/* Running a case                                                                           */
/* ---------------------------------------------------------------------------------------- */

static int is_word_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* True when `word` occurs in `text` (ignoring case) with no letter or digit right before or
 * after it: "x" matches "x_offset" and "x is NULL" but not "exceeds" or "dx". */
static int names_word(const char *text, const char *word) {
    size_t n = strlen(word), len = strlen(text);
    for (size_t i = 0; i + n <= len; i++) {
        size_t k = 0;
        while (k < n) {
            char a = text[i + k], b = word[k];
            if (a >= 'A' && a <= 'Z')
                a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z')
                b = (char)(b - 'A' + 'a');
            if (a != b)
                break;
            k++;
        }
        if (k == n && (i == 0 || !is_word_char(text[i - 1])) && !is_word_char(text[i + n]))
            return 1;
    }
    return 0;
}

typedef struct arg_case {
    char name[128];
    int entry;
    const defect *d;
    const misc_case *m;
} arg_case;

static void format_expected(const int *expect, char *out, size_t size) {
    out[0] = '\0';
    for (int i = 0; expect[i] != END_; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? " or " : "",
                 clbn_status_name((clbn_status)expect[i]));
    }
}

static void run_case(void **state) {
    const arg_case *k = *state;
    const int *expect = k->d ? k->d->expect : k->m->expect;
    const char *const *needles = k->d ? k->d->needles : k->m->needles;

    prepare();
    snapshot *before = malloc(sizeof *before), *after = malloc(sizeof *after);
    assert_non_null(before);
    assert_non_null(after);
    take(before);

    clbn_status st;
    if (k->d) {
        op_args a;
        default_args(k->entry, &a);
        k->d->mutate(&a);
        st = call_entry(k->entry, &a);
    } else {
        st = k->m->call();
    }
    char msg[4096];
    snprintf(msg, sizeof msg, "%s", clbn_last_error_message());
    if (getenv("CLBN_TEST_VERBOSE"))
        print_message("%s: %s \"%s\"\n", k->name, clbn_status_name(st), msg);

    /* Objects a call may have created. */
    int made_bn = F.bn_out != BN_SENTINEL && F.bn_out != NULL;
    int made_ctx = F.ctx_out != CTX_SENTINEL && F.ctx_out != NULL;
    if (made_bn)
        clbn_bn_release(F.bn_out);
    if (made_ctx)
        clbn_context_release(F.ctx_out);

    int expected = 0;
    for (int i = 0; expect[i] != END_; i++)
        if ((int)st == expect[i])
            expected = 1;
    if (!expected) {
        char want[256];
        format_expected(expect, want, sizeof want);
        fail_msg("%s: returned %s (%d), expected %s; message: \"%s\"", k->name,
                 clbn_status_name(st), (int)st, want, msg);
    }
    if (st == CLBN_SUCCESS) {
        if (msg[0] != '\0')
            fail_msg("%s: succeeded but the last error message is \"%s\"", k->name, msg);
        free(before);
        free(after);
        tu_finish(F.ctx);
        return;
    }
    if (needles[0] != NULL) {
        int named = 0;
        for (int i = 0; needles[i] != NULL; i++)
            if (names_word(msg, needles[i]))
                named = 1;
        if (!named) {
            char want[512] = "";
            for (int i = 0; needles[i] != NULL; i++) {
                size_t used = strlen(want);
                snprintf(want + used, sizeof want - used, "%s\"%s\"", i ? " or " : "", needles[i]);
            }
            fail_msg("%s: %s, but the message does not name %s: \"%s\"", k->name,
                     clbn_status_name(st), want, msg);
        }
    }
    if (made_bn || made_ctx)
        fail_msg("%s: rejected with %s but returned an object", k->name, clbn_status_name(st));
    if (F.mem_out != MEM_SENTINEL && F.mem_out != NULL)
        fail_msg("%s: rejected but wrote a cl_mem to *buffer", k->name);

    take(after);
    compare(before, after);
    free(before);
    free(after);
}

/* The single-sample rule (m = 1, tracking off): var = 0, x̂ = 0, so y = beta exactly up to the
 * rounding of gamma * 0 + beta, and the saved mean is the sample itself. */
static void single_sample_without_tracking_gives_beta(void **state) {
    (void)state;
    clbn_bn *bn = F.bns[1];
    const clbn_layout layouts[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC, CLBN_LAYOUT_NC};
    for (size_t l = 0; l < 3; l++) {
        prepare();
        float beta[C], gamma[C], xs[C];
        for (unsigned i = 0; i < C; i++) {
            gamma[i] = 1.5f + (float)i;
            beta[i] = -0.75f + 0.5f * (float)i;
            xs[i] = 1000.0f + 3.0f * (float)i; /* a large sample: x - mean must still be 0 */
        }
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, gamma, C));
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, beta, C));
        float rm_before[C], rv_before[C];
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm_before, C));
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv_before, C));
        tu_write(F.ctx, F.x, 0, xs, C);
        clbn_shape s = {layouts[l], 1, C, 1, 1};
        TU_OK(clbn_bn_forward_train(bn, &s, F.x, 0, F.y, 0, NULL, NULL, 0, NULL, NULL));
        float y[C], saved_mean[C], rm[C], rv[C];
        tu_read(F.ctx, F.y, 0, y, C);
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, saved_mean, C));
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm, C));
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv, C));
        double ref_y[C], ref_mean[C];
        for (unsigned i = 0; i < C; i++) {
            ref_y[i] = beta[i];
            ref_mean[i] = xs[i];
        }
        /* Tolerance: 1e-6 absolute on y (beta is O(1)); the mean of one value is that value
         * to within one rounding (rtol 1.2e-7). */
        tu_check_close("y (m = 1, no tracking)", y, ref_y, C, 1e-6, 0.0);
        tu_check_close("saved mean (m = 1)", saved_mean, ref_mean, C, 0.0, 1.2e-7);
        /* Tracking off: the running statistics are not touched. */
        compare_floats("running mean (tracking off)", rm_before, rm, C);
        compare_floats("running var (tracking off)", rv_before, rv, C);
    }
}

static int count_applicable(void) {
    int n = 0;
    for (size_t d = 0; d < N_DEFECTS; d++)
        for (int e = 0; e < E_COUNT; e++)
            if (defects[d].mask & M_(e))
                n++;
    return n + (int)N_MISC;
}

int main(void) {
    int total = count_applicable();
    arg_case *cases = calloc((size_t)total, sizeof *cases);
    struct CMUnitTest *tests = calloc((size_t)total + 1, sizeof *tests);
    if (!cases || !tests)
        return 1;
    int n = 0;
    for (size_t d = 0; d < N_DEFECTS; d++)
        for (int e = 0; e < E_COUNT; e++)
            if (defects[d].mask & M_(e)) {
                snprintf(cases[n].name, sizeof cases[n].name, "%s/%s", entry_names[e],
                         defects[d].name);
                cases[n].entry = e;
                cases[n].d = &defects[d];
                n++;
            }
    for (size_t m = 0; m < N_MISC; m++) {
        snprintf(cases[n].name, sizeof cases[n].name, "%s", misc_cases[m].name);
        cases[n].m = &misc_cases[m];
        n++;
    }
    for (int i = 0; i < n; i++) {
        tests[i].name = cases[i].name;
        tests[i].test_func = run_case;
        tests[i].initial_state = &cases[i];
    }
    tests[n].name = "forward_train/m_one_tracking_off_gives_beta";
    tests[n].test_func = single_sample_without_tracking_gives_beta;
    int rc = _cmocka_run_group_tests("args", tests, (size_t)n + 1, group_setup, group_teardown);
    free(tests);
    free(cases);
    return rc;
}
