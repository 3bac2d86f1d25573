/* bn_ops.c — the batch-norm operations: argument checks (all before anything is enqueued),
 * the plan (plan.c), and the kernel launches chained by events. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

static uint64_t max_u64(uint64_t a, uint64_t b) {
    return a > b ? a : b;
}

/* ------------------------------------------------------------------------------------------
 * Argument checks
 * ------------------------------------------------------------------------------------------ */
static int mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

static const char *layout_name(clbn_layout l) {
    return l == CLBN_LAYOUT_NCHW ? "NCHW" : l == CLBN_LAYOUT_NHWC ? "NHWC" : "NC";
}

/* Checks the shape against the state; *elems is the element count. */
static clbn_status check_shape(const clbn_bn *bn, const clbn_shape *s, uint64_t *elems) {
    if (!s)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "shape is NULL");
    if ((int)s->layout < 0 || s->layout > CLBN_LAYOUT_NC)
        return clbn_fail(CLBN_ERROR_INVALID_LAYOUT,
                         "shape.layout = %d is not CLBN_LAYOUT_NCHW, _NHWC or _NC", (int)s->layout);
    uint64_t h = s->h, w = s->w;
    if (s->layout == CLBN_LAYOUT_NC) {
        if (h > 1 || w > 1)
            return clbn_fail(
                CLBN_ERROR_INVALID_SHAPE,
                "shape.h = %llu, shape.w = %llu: the NC layout needs h and w of 0 or 1",
                (unsigned long long)h, (unsigned long long)w);
        h = w = 1;
    }
    if (s->c != bn->opt.channels)
        return clbn_fail(CLBN_ERROR_CHANNEL_MISMATCH,
                         "shape.c = %llu does not match the state's %llu channels",
                         (unsigned long long)s->c, (unsigned long long)bn->opt.channels);
    uint64_t hw = 0, m = 0, e = 0, bytes = 0;
    if (mul_overflows(h, w, &hw) || mul_overflows(s->n, hw, &m) || mul_overflows(m, s->c, &e) ||
        mul_overflows(e, sizeof(float), &bytes) || bytes > (uint64_t)SIZE_MAX / 2)
        return clbn_fail(CLBN_ERROR_INVALID_SHAPE,
                         "shape %llu x %llu x %llu x %llu (%s) overflows 64-bit sizes",
                         (unsigned long long)s->n, (unsigned long long)s->c, (unsigned long long)h,
                         (unsigned long long)w, layout_name(s->layout));
    if (m == 0)
        return clbn_fail(CLBN_ERROR_EMPTY_BATCH,
                         "shape has m = N*H*W = %llu*%llu*%llu = 0 values per channel: nothing "
                         "to normalize",
                         (unsigned long long)s->n, (unsigned long long)h, (unsigned long long)w);
    *elems = e;
    return CLBN_SUCCESS;
}

static clbn_status check_buffer(const clbn_bn *bn, cl_mem mem, uint64_t offset, uint64_t count,
                                const char *name) {
    if (!mem)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "%s is NULL", name);
    size_t size = 0;
    cl_context mctx = NULL;
    cl_int err = clbn_cl.clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err == CL_SUCCESS)
        err = clbn_cl.clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "%s is not a valid cl_mem buffer", name);
    if (mctx != bn->ctx->cl_ctx)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT,
                         "%s belongs to another cl_context than the clbn context's", name);
    if (offset > UINT64_MAX / 4 - count || (offset + count) * 4 > (uint64_t)size)
        return clbn_fail(CLBN_ERROR_BUFFER_TOO_SMALL,
                         "%s holds %llu floats, but offset %llu + %llu values needs more", name,
                         (unsigned long long)(size / 4), (unsigned long long)offset,
                         (unsigned long long)count);
    return CLBN_SUCCESS;
}

static clbn_status check_enqueue(const clbn_bn *bn, cl_command_queue queue, cl_uint num_wait,
                                 const cl_event *wait_list) {
    if ((num_wait > 0) != (wait_list != NULL))
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT,
                         "wait_list and num_wait disagree (num_wait = %u, wait_list %s)", num_wait,
                         wait_list ? "set" : "NULL");
    if (queue) {
        cl_context qctx = NULL;
        cl_int err =
            clbn_cl.clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
        if (err != CL_SUCCESS)
            return clbn_fail((clbn_status)err, "queue is not a valid command queue");
        if (qctx != bn->ctx->cl_ctx)
            return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT,
                             "queue belongs to another cl_context than the clbn context's");
        return clbn_check_in_order(queue, "queue");
    }
    return CLBN_SUCCESS;
}

static clbn_status check_saved(const clbn_bn *bn, const clbn_saved_stats *saved) {
    if (!saved)
        return CLBN_SUCCESS;
    clbn_status st =
        check_buffer(bn, saved->mean, saved->mean_offset, bn->opt.channels, "saved->mean");
    if (st == CLBN_SUCCESS)
        st = check_buffer(bn, saved->invstd, saved->invstd_offset, bn->opt.channels,
                          "saved->invstd");
    return st;
}

/* Grows the scratch buffers to the plan's needs (before anything is enqueued). */
static clbn_status ensure_scratch(clbn_bn *bn, const plan *p) {
    struct {
        cl_mem *mem;
        uint64_t *len;
        uint64_t need;
        size_t elem;
    } s[3] = {{&bn->scratch_n, &bn->scratch_n_len, max_u64(p->scratch_n, 1), 8},
              {&bn->scratch_a, &bn->scratch_a_len, max_u64(p->scratch_a, 1), 4},
              {&bn->scratch_b, &bn->scratch_b_len, max_u64(p->scratch_b, 1), 4}};
    for (int i = 0; i < 3; i++) {
        if (*s[i].mem && *s[i].len >= s[i].need)
            continue;
        cl_int err = CL_SUCCESS;
        cl_mem m = clbn_cl.clCreateBuffer(bn->ctx->cl_ctx, CL_MEM_READ_WRITE, s[i].need * s[i].elem,
                                          NULL, &err);
        if (err != CL_SUCCESS)
            return clbn_fail((clbn_status)err, "allocating %llu bytes of scratch failed",
                             (unsigned long long)(s[i].need * s[i].elem));
        if (*s[i].mem)
            clbn_cl.clReleaseMemObject(*s[i].mem); /* freed once queued work using it is done */
        *s[i].mem = m;
        *s[i].len = s[i].need;
    }
    return CLBN_SUCCESS;
}

/* ------------------------------------------------------------------------------------------
 * Launching
 * ------------------------------------------------------------------------------------------ */
typedef struct args {
    cl_kernel k;
    cl_uint i;
    cl_int err;
} args;

static void arg(args *a, size_t size, const void *value) {
    if (a->err == CL_SUCCESS)
        a->err = clbn_cl.clSetKernelArg(a->k, a->i, size, value);
    a->i++;
}
static void a_mem(args *a, cl_mem m) {
    arg(a, sizeof m, &m);
}
static void a_u64(args *a, uint64_t v) {
    cl_ulong x = v;
    arg(a, sizeof x, &x);
}
static void a_int(args *a, int v) {
    cl_int x = v;
    arg(a, sizeof x, &x);
}
static void a_f32(args *a, float v) {
    cl_float x = v;
    arg(a, sizeof x, &x);
}
static void a_local(args *a, size_t bytes) {
    arg(a, bytes, NULL);
}

/* The kernels' shape arguments, in their order: (R, C) for the NHWC family or (N, C, HW) for
 * NCHW, then the reduction's chunk and the distribution. */
static void shape_args(args *a, const plan *p, int reduction) {
    if (p->nhwc) {
        a_u64(a, p->R);
        a_u64(a, p->C);
    } else {
        a_u64(a, p->N);
        a_u64(a, p->C);
        a_u64(a, p->HW);
    }
    if (reduction)
        a_u64(a, p->chunk);
    a_int(a, p->blocked);
}

/* Kernels of one call run in order, each waiting for the previous one's event. */
typedef struct chain {
    cl_command_queue q;
    cl_uint num_wait;
    const cl_event *wait;
    cl_event last;
} chain;

static clbn_status run(chain *ch, args *a, const size_t global[2], const size_t local[2],
                       const char *what) {
    if (a->err != CL_SUCCESS)
        return clbn_fail((clbn_status)a->err, "setting argument %u of %s failed", a->i, what);
    cl_event ev = NULL;
    cl_int err = ch->last ? clbn_cl.clEnqueueNDRangeKernel(ch->q, a->k, 2, NULL, global, local, 1,
                                                           &ch->last, &ev)
                          : clbn_cl.clEnqueueNDRangeKernel(ch->q, a->k, 2, NULL, global, local,
                                                           ch->num_wait, ch->wait, &ev);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "enqueueing %s failed", what);
    if (ch->last)
        clbn_cl.clReleaseEvent(ch->last);
    ch->last = ev;
    return CLBN_SUCCESS;
}

static void chain_end(chain *ch, cl_event *event) {
    if (event)
        *event = ch->last;
    else if (ch->last)
        clbn_cl.clReleaseEvent(ch->last);
}

static args start(clbn_bn *bn, const plan *p, clbn_kernel_id id, clbn_status *st) {
    args a = {NULL, 0, CL_SUCCESS};
    *st = clbn_bn_kernel(bn, p->variant, id, &a.k);
    return a;
}

static int flag(const clbn_bn *bn, uint32_t f) {
    return (bn->opt.flags & f) != 0;
}

typedef struct stats_src {
    cl_mem mean;
    uint64_t mean_off;
    int use_pair; /* subtract the mean as (pivot, mean_s) from bn->shift (apply only) */
    cl_mem stat;
    uint64_t stat_off;
    int stat_is_var;
} stats_src;

/* The elementwise forward with given statistics. */
static clbn_status launch_apply(clbn_bn *bn, const plan *p, chain *ch, cl_mem x, uint64_t xo,
                                cl_mem y, uint64_t yo, const stats_src *s) {
    clbn_status st;
    args a = start(bn, p,
                   clbn_plan_pick(p, CLBN_K_APPLY_NCHW, CLBN_K_APPLY_NHWC, CLBN_K_ROWS_APPLY_NCHW,
                                  CLBN_K_ROWS_APPLY_NHWC),
                   &st);
    if (st != CLBN_SUCCESS)
        return st;
    a_mem(&a, x);
    a_u64(&a, xo);
    a_mem(&a, y);
    a_u64(&a, yo);
    shape_args(&a, p, 0);
    a_mem(&a, s->mean);
    a_u64(&a, s->mean_off);
    a_mem(&a, bn->shift);
    a_int(&a, s->use_pair);
    a_mem(&a, s->stat);
    a_u64(&a, s->stat_off);
    a_int(&a, s->stat_is_var);
    a_f32(&a, bn->opt.eps);
    a_mem(&a, bn->vec[CLBN_VECTOR_GAMMA]);
    a_mem(&a, bn->vec[CLBN_VECTOR_BETA]);
    a_int(&a, flag(bn, CLBN_USE_SCALE));
    a_int(&a, flag(bn, CLBN_USE_SHIFT));
    a_int(&a, (int)bn->opt.activation);
    return run(ch, &a, p->e_global, p->e_local, "the normalization kernel");
}

/* Saved statistics plus running-average update, the arguments the stats kernels share. */
static void finish_args(clbn_bn *bn, args *a, cl_mem sm, uint64_t smo, cl_mem si, uint64_t sio,
                        int track, float factor) {
    a_f32(a, bn->opt.eps);
    a_mem(a, sm);
    a_u64(a, smo);
    a_mem(a, si);
    a_u64(a, sio);
    a_int(a, track);
    a_f32(a, factor);
    a_mem(a, bn->vec[CLBN_VECTOR_RUNNING_MEAN]);
    a_mem(a, bn->vec[CLBN_VECTOR_RUNNING_VAR]);
    a_mem(a, bn->run_alt[CLBN_ALT_MEAN]);
    a_mem(a, bn->run_alt[CLBN_ALT_VAR]);
    a_mem(a, bn->shift);
}

/* Batch statistics into (sm, si), running averages into run_alt when track, then y. */
static clbn_status launch_forward_batch(clbn_bn *bn, const plan *p, chain *ch, cl_mem x,
                                        uint64_t xo, cl_mem y, uint64_t yo, cl_mem sm, uint64_t smo,
                                        cl_mem si, uint64_t sio, int track, float factor) {
    /* Scratch grows only here, once every argument has passed its check. */
    clbn_status st = ensure_scratch(bn, p);
    if (st != CLBN_SUCCESS)
        return st;
    args a = start(bn, p,
                   clbn_plan_pick(p, CLBN_K_STATS_NCHW, CLBN_K_STATS_NHWC, CLBN_K_ROWS_STATS_NCHW,
                                  CLBN_K_ROWS_STATS_NHWC),
                   &st);
    if (st != CLBN_SUCCESS)
        return st;
    const int final_step = p->split == 1;
    a_mem(&a, x);
    a_u64(&a, xo);
    shape_args(&a, p, 1);
    /* exactly reduce_local_bytes(0, r_lanes, r_extra), which the plan kept within the limit */
    a_local(&a, clbn_local_array(p->r_lanes * sizeof(cl_ulong)));
    a_local(&a, clbn_local_array((p->r_lanes + p->r_extra) * sizeof(cl_float)));
    a_local(&a, clbn_local_array((p->r_lanes + p->r_extra) * sizeof(cl_float)));
    a_int(&a, final_step);
    a_mem(&a, bn->scratch_n);
    a_mem(&a, bn->scratch_a);
    a_mem(&a, bn->scratch_b);
    finish_args(bn, &a, sm, smo, si, sio, track, factor);
    a_int(&a, p->fused);
    a_mem(&a, y);
    a_u64(&a, yo);
    a_mem(&a, bn->vec[CLBN_VECTOR_GAMMA]);
    a_mem(&a, bn->vec[CLBN_VECTOR_BETA]);
    a_int(&a, flag(bn, CLBN_USE_SCALE));
    a_int(&a, flag(bn, CLBN_USE_SHIFT));
    a_int(&a, (int)bn->opt.activation);
    st = run(ch, &a, p->r_global, p->r_local, "the statistics kernel");
    if (st != CLBN_SUCCESS || p->fused)
        return st;
    if (!final_step) {
        a = start(bn, p, CLBN_K_STATS_MERGE, &st);
        if (st != CLBN_SUCCESS)
            return st;
        a_u64(&a, p->C);
        a_u64(&a, p->split);
        a_mem(&a, bn->scratch_n);
        a_mem(&a, bn->scratch_a);
        a_mem(&a, bn->scratch_b);
        a_mem(&a, x);
        a_u64(&a, xo);
        a_u64(&a, p->nhwc ? 1 : p->HW); /* the pivot: as the statistics kernels take it */
        a_u64(&a, p->nhwc ? p->R : p->HW);
        a_u64(&a, p->nhwc ? p->C : 1);
        finish_args(bn, &a, sm, smo, si, sio, track, factor);
        size_t global[2] = {p->m_global, 1}, local[2] = {p->m_local, 1};
        st = run(ch, &a, global, local, "the statistics merge kernel");
        if (st != CLBN_SUCCESS)
            return st;
    }
    stats_src s = {sm, smo, 1, si, sio, 0};
    return launch_apply(bn, p, ch, x, xo, y, yo, &s);
}

static void grad_args(clbn_bn *bn, args *a, const stats_src *s) {
    a_mem(a, s->mean);
    a_u64(a, s->mean_off);
    a_mem(a, s->stat);
    a_u64(a, s->stat_off);
    a_int(a, s->stat_is_var);
    a_f32(a, bn->opt.eps);
    a_mem(a, bn->vec[CLBN_VECTOR_GAMMA]);
    a_int(a, flag(bn, CLBN_USE_SCALE));
    a_int(a, (int)bn->opt.activation);
}

static void dx_args(clbn_bn *bn, const plan *p, args *a, int frozen) {
    a_int(a, frozen);
    a_f32(a, (float)(1.0 / (double)p->m));
    a_int(a, flag(bn, CLBN_ACCUMULATE_GRADIENTS));
    a_mem(a, bn->vec[CLBN_VECTOR_DGAMMA]);
    a_mem(a, bn->vec[CLBN_VECTOR_DBETA]);
}

static clbn_status launch_backward(clbn_bn *bn, const plan *p, chain *ch, cl_mem x, uint64_t xo,
                                   cl_mem y, uint64_t yo, cl_mem dy, uint64_t dyo, cl_mem dx,
                                   uint64_t dxo, const stats_src *s, int frozen) {
    /* Scratch grows only here, once every argument has passed its check. */
    clbn_status st = ensure_scratch(bn, p);
    if (st != CLBN_SUCCESS)
        return st;
    args a = start(bn, p,
                   clbn_plan_pick(p, CLBN_K_BWD_REDUCE_NCHW, CLBN_K_BWD_REDUCE_NHWC,
                                  CLBN_K_ROWS_BWD_REDUCE_NCHW, CLBN_K_ROWS_BWD_REDUCE_NHWC),
                   &st);
    if (st != CLBN_SUCCESS)
        return st;
    const int final_step = p->split == 1;
    a_mem(&a, x);
    a_u64(&a, xo);
    a_mem(&a, y);
    a_u64(&a, yo);
    a_mem(&a, dy);
    a_u64(&a, dyo);
    shape_args(&a, p, 1);
    a_local(&a, clbn_local_array(p->r_lanes * sizeof(cl_float)));
    a_local(&a, clbn_local_array(p->r_lanes * sizeof(cl_float)));
    a_int(&a, final_step);
    a_mem(&a, bn->scratch_a);
    a_mem(&a, bn->scratch_b);
    grad_args(bn, &a, s);
    a_int(&a, p->fused);
    a_mem(&a, dx);
    a_u64(&a, dxo);
    dx_args(bn, p, &a, frozen);
    st = run(ch, &a, p->r_global, p->r_local, "the backward reduction kernel");
    if (st != CLBN_SUCCESS || p->fused)
        return st;
    if (!final_step) {
        a = start(bn, p, CLBN_K_BWD_MERGE, &st);
        if (st != CLBN_SUCCESS)
            return st;
        a_u64(&a, p->C);
        a_u64(&a, p->split);
        a_mem(&a, bn->scratch_a);
        a_mem(&a, bn->scratch_b);
        size_t global[2] = {p->m_global, 1}, local[2] = {p->m_local, 1};
        st = run(ch, &a, global, local, "the backward merge kernel");
        if (st != CLBN_SUCCESS)
            return st;
    }
    a = start(
        bn, p,
        clbn_plan_pick(p, CLBN_K_DX_NCHW, CLBN_K_DX_NHWC, CLBN_K_ROWS_DX_NCHW, CLBN_K_ROWS_DX_NHWC),
        &st);
    if (st != CLBN_SUCCESS)
        return st;
    a_mem(&a, x);
    a_u64(&a, xo);
    a_mem(&a, y);
    a_u64(&a, yo);
    a_mem(&a, dy);
    a_u64(&a, dyo);
    a_mem(&a, dx);
    a_u64(&a, dxo);
    shape_args(&a, p, 0);
    a_mem(&a, bn->scratch_b);
    grad_args(bn, &a, s);
    dx_args(bn, p, &a, frozen);
    return run(ch, &a, p->e_global, p->e_local, "the dx kernel");
}

/* ------------------------------------------------------------------------------------------
 * Entry points
 * ------------------------------------------------------------------------------------------ */
typedef struct call {
    plan p;
    chain ch;
    uint64_t elems;
} call;

/* The checks every op shares, then the plan and the scratch. */
static clbn_status begin_call(clbn_bn *bn, clbn_op op, const clbn_shape *shape, cl_mem x,
                              uint64_t xo, cl_mem y, uint64_t yo, const char *y_name,
                              cl_command_queue queue, cl_uint num_wait, const cl_event *wait_list,
                              call *c) {
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    clbn_status st = check_shape(bn, shape, &c->elems);
    if (st == CLBN_SUCCESS && op == CLBN_OP_FORWARD_TRAIN && c->elems / shape->c == 1 &&
        flag(bn, CLBN_TRACK_RUNNING_STATS))
        st = clbn_fail(CLBN_ERROR_TOO_FEW_VALUES,
                       "expected more than 1 value per channel when training (m = N*H*W = 1: "
                       "the unbiased running variance is undefined; turn off "
                       "CLBN_TRACK_RUNNING_STATS to normalize a single value)");
    if (st == CLBN_SUCCESS)
        st = check_buffer(bn, x, xo, c->elems, "x");
    if (st == CLBN_SUCCESS && y_name)
        st = check_buffer(bn, y, yo, c->elems, y_name);
    if (st == CLBN_SUCCESS)
        st = check_enqueue(bn, queue, num_wait, wait_list);
    if (st == CLBN_SUCCESS)
        st = clbn_plan_make(bn, op, shape, &c->p);
    if (st != CLBN_SUCCESS)
        return st;
    c->ch.q = queue ? queue : bn->ctx->queue;
    c->ch.num_wait = num_wait;
    c->ch.wait = wait_list;
    c->ch.last = NULL;
    return CLBN_SUCCESS;
}

static void swap_mem(cl_mem *a, cl_mem *b) {
    cl_mem t = *a;
    *a = *b;
    *b = t;
}

static clbn_status fail_call(call *c, clbn_status st) {
    chain_end(&c->ch, NULL);
    return st;
}

clbn_status clbn_bn_forward_train(clbn_bn *bn, const clbn_shape *shape, cl_mem x, uint64_t x_offset,
                                  cl_mem y, uint64_t y_offset, const clbn_saved_stats *saved,
                                  cl_command_queue queue, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *event) {
    clbn_clear_error();
    call c;
    clbn_status st = begin_call(bn, CLBN_OP_FORWARD_TRAIN, shape, x, x_offset, y, y_offset, "y",
                                queue, num_wait, wait_list, &c);
    if (st == CLBN_SUCCESS)
        st = check_saved(bn, saved);
    if (st != CLBN_SUCCESS)
        return st;
    const int track = flag(bn, CLBN_TRACK_RUNNING_STATS);
    float factor = bn->opt.factor;
    if (flag(bn, CLBN_CUMULATIVE_AVERAGE))
        factor = (float)(1.0 / (1.0 + (double)bn->t));
    /* Without caller buffers the statistics go to the spare saved buffers, swapped in below
     * once every kernel is enqueued: a failed call leaves the state's own as they were. */
    cl_mem sm = saved ? saved->mean : bn->saved_alt[CLBN_ALT_MEAN];
    cl_mem si = saved ? saved->invstd : bn->saved_alt[CLBN_ALT_INVSTD];
    uint64_t smo = saved ? saved->mean_offset : 0, sio = saved ? saved->invstd_offset : 0;
    st = launch_forward_batch(bn, &c.p, &c.ch, x, x_offset, y, y_offset, sm, smo, si, sio, track,
                              factor);
    if (st != CLBN_SUCCESS)
        return fail_call(&c, st);
    chain_end(&c.ch, event);
    if (!saved) {
        swap_mem(&bn->vec[CLBN_VECTOR_SAVED_MEAN], &bn->saved_alt[CLBN_ALT_MEAN]);
        swap_mem(&bn->vec[CLBN_VECTOR_SAVED_INVSTD], &bn->saved_alt[CLBN_ALT_INVSTD]);
    }
    if (track) {
        swap_mem(&bn->vec[CLBN_VECTOR_RUNNING_MEAN], &bn->run_alt[CLBN_ALT_MEAN]);
        swap_mem(&bn->vec[CLBN_VECTOR_RUNNING_VAR], &bn->run_alt[CLBN_ALT_VAR]);
        bn->t++;
    }
    return CLBN_SUCCESS;
}

static clbn_status forward_running(clbn_bn *bn, clbn_op op, const clbn_shape *shape, cl_mem x,
                                   uint64_t xo, cl_mem y, uint64_t yo, cl_command_queue queue,
                                   cl_uint num_wait, const cl_event *wait_list, cl_event *event) {
    call c;
    clbn_status st = begin_call(bn, op, shape, x, xo, y, yo, "y", queue, num_wait, wait_list, &c);
    if (st != CLBN_SUCCESS)
        return st;
    if (c.p.reduce) /* untracked inference: this batch's statistics, nothing updated */
        st = launch_forward_batch(bn, &c.p, &c.ch, x, xo, y, yo, bn->tmp_stats[0], 0,
                                  bn->tmp_stats[1], 0, 0, 0.0f);
    else {
        stats_src s = {bn->vec[CLBN_VECTOR_RUNNING_MEAN], 0, 0,
                       bn->vec[CLBN_VECTOR_RUNNING_VAR],  0, 1};
        st = launch_apply(bn, &c.p, &c.ch, x, xo, y, yo, &s);
    }
    if (st != CLBN_SUCCESS)
        return fail_call(&c, st);
    chain_end(&c.ch, event);
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_forward_infer(clbn_bn *bn, const clbn_shape *shape, cl_mem x, uint64_t x_offset,
                                  cl_mem y, uint64_t y_offset, cl_command_queue queue,
                                  cl_uint num_wait, const cl_event *wait_list, cl_event *event) {
    clbn_clear_error();
    return forward_running(bn, CLBN_OP_FORWARD_INFER, shape, x, x_offset, y, y_offset, queue,
                           num_wait, wait_list, event);
}

static clbn_status need_running(const clbn_bn *bn, const char *what) {
    if (bn && !flag(bn, CLBN_TRACK_RUNNING_STATS))
        return clbn_fail(CLBN_ERROR_INVALID_OPTION,
                         "%s uses the running statistics, but the state does not track them "
                         "(CLBN_TRACK_RUNNING_STATS is off)",
                         what);
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_forward_frozen(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                   uint64_t x_offset, cl_mem y, uint64_t y_offset,
                                   cl_command_queue queue, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event) {
    clbn_clear_error();
    clbn_status st = need_running(bn, "the frozen forward");
    if (st != CLBN_SUCCESS)
        return st;
    return forward_running(bn, CLBN_OP_FORWARD_FROZEN, shape, x, x_offset, y, y_offset, queue,
                           num_wait, wait_list, event);
}

static clbn_status backward_common(clbn_bn *bn, clbn_op op, const clbn_shape *shape, cl_mem x,
                                   uint64_t xo, cl_mem y, uint64_t yo, cl_mem dy, uint64_t dyo,
                                   cl_mem dx, uint64_t dxo, const clbn_saved_stats *saved,
                                   cl_command_queue queue, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event) {
    call c;
    const int need_y = bn && bn->opt.activation != CLBN_ACTIVATION_NONE;
    clbn_status st =
        begin_call(bn, op, shape, x, xo, dy, dyo, "dy", queue, num_wait, wait_list, &c);
    if (st == CLBN_SUCCESS)
        st = check_buffer(bn, dx, dxo, c.elems, "dx");
    if (st == CLBN_SUCCESS && need_y) {
        if (!y)
            st = clbn_fail(CLBN_ERROR_NULL_ARGUMENT,
                           "y is NULL, but the backward of a fused activation needs the "
                           "forward's output y");
        else
            st = check_buffer(bn, y, yo, c.elems, "y");
    }
    if (st == CLBN_SUCCESS)
        st = check_saved(bn, saved);
    if (st != CLBN_SUCCESS)
        return st;
    const int frozen = op == CLBN_OP_BACKWARD_FROZEN;
    stats_src s;
    if (frozen) {
        s = (stats_src){bn->vec[CLBN_VECTOR_RUNNING_MEAN], 0, 0,
                        bn->vec[CLBN_VECTOR_RUNNING_VAR],  0, 1};
    } else if (saved) {
        s = (stats_src){saved->mean, saved->mean_offset, 0, saved->invstd, saved->invstd_offset, 0};
    } else {
        s = (stats_src){bn->vec[CLBN_VECTOR_SAVED_MEAN],   0, 0,
                        bn->vec[CLBN_VECTOR_SAVED_INVSTD], 0, 0};
    }
    st = launch_backward(bn, &c.p, &c.ch, x, xo, need_y ? y : x, need_y ? yo : xo, dy, dyo, dx, dxo,
                         &s, frozen);
    if (st != CLBN_SUCCESS)
        return fail_call(&c, st);
    chain_end(&c.ch, event);
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_backward(clbn_bn *bn, const clbn_shape *shape, cl_mem x, uint64_t x_offset,
                             cl_mem y, uint64_t y_offset, cl_mem dy, uint64_t dy_offset, cl_mem dx,
                             uint64_t dx_offset, const clbn_saved_stats *saved,
                             cl_command_queue queue, cl_uint num_wait, const cl_event *wait_list,
                             cl_event *event) {
    clbn_clear_error();
    return backward_common(bn, CLBN_OP_BACKWARD, shape, x, x_offset, y, y_offset, dy, dy_offset, dx,
                           dx_offset, saved, queue, num_wait, wait_list, event);
}

clbn_status clbn_bn_backward_frozen(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                    uint64_t x_offset, cl_mem y, uint64_t y_offset, cl_mem dy,
                                    uint64_t dy_offset, cl_mem dx, uint64_t dx_offset,
                                    cl_command_queue queue, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *event) {
    clbn_clear_error();
    clbn_status st = need_running(bn, "the frozen backward");
    if (st != CLBN_SUCCESS)
        return st;
    return backward_common(bn, CLBN_OP_BACKWARD_FROZEN, shape, x, x_offset, y, y_offset, dy,
                           dy_offset, dx, dx_offset, NULL, queue, num_wait, wait_list, event);
}

clbn_status clbn_bn_query_plan(const clbn_bn *bn, clbn_op op, const clbn_shape *shape,
                               clbn_plan *out) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!out)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "plan is NULL");
    if ((int)op < 0 || op > CLBN_OP_BACKWARD_FROZEN)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT, "op = %d is not a clbn_op", (int)op);
    uint64_t e;
    clbn_status st = check_shape(bn, shape, &e);
    if (st != CLBN_SUCCESS)
        return st;
    plan p;
    st = clbn_plan_make(bn, op, shape, &p);
    if (st != CLBN_SUCCESS)
        return st;
    *out = p.pub;
    return CLBN_SUCCESS;
}

clbn_status clbn_bn_scratch_size(const clbn_bn *bn, const clbn_shape *shape, uint64_t *bytes) {
    clbn_clear_error();
    if (!bn)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bn is NULL");
    if (!bytes)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "bytes is NULL");
    uint64_t e;
    clbn_status st = check_shape(bn, shape, &e);
    if (st != CLBN_SUCCESS)
        return st;
    uint64_t most = 0;
    for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++) {
        plan p;
        st = clbn_plan_make(bn, (clbn_op)op, shape, &p);
        if (st != CLBN_SUCCESS)
            return st;
        most = max_u64(most, p.pub.scratch_bytes);
    }
    *bytes = most;
    return CLBN_SUCCESS;
}
