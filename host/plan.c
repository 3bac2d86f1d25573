/* plan.c — the planner: from the shape, the op and the limits in force (device, profile,
 * kernel limits) to the strategy, the kernels' ranges, the split, the vector width and the
 * scratch of one call. Everything it chooses can be read back through clbn_bn_query_plan. */
#include "plan.h"

#include <string.h>

static uint64_t ceil_div(uint64_t a, uint64_t b) {
    return (a + b - 1) / b;
}
static uint64_t min_u64(uint64_t a, uint64_t b) {
    return a < b ? a : b;
}
static uint64_t max_u64(uint64_t a, uint64_t b) {
    return a > b ? a : b;
}
static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}
static uint32_t floor_pow2_u32(uint64_t v, uint32_t cap) {
    uint32_t p = 1;
    while ((uint64_t)p * 2 <= v && p * 2 <= cap)
        p *= 2;
    return p;
}
static int log2_u32(uint32_t v) {
    int l = 0;
    while ((1u << l) < v)
        l++;
    return l;
}

/* Every __local array is given, and counted, in whole multiples of 16 bytes: a driver may align
 * each one (NVIDIA's 580 driver reports 16 bytes more than the arguments' sum otherwise). */
uint64_t clbn_local_array(uint64_t bytes) {
    return (bytes + 15) & ~(uint64_t)15;
}

/* Local bytes of the reduction kernels' arrays: the statistics kernel holds a ulong count and
 * two floats per slot and lane, the floats with a coefficient slot more per lane of a row;
 * the backward two floats per slot and lane. */
static uint64_t reduce_local_bytes(int backward, uint64_t lanes, uint64_t extra) {
    return backward ? 2 * clbn_local_array(4 * lanes)
                    : clbn_local_array(8 * lanes) + 2 * clbn_local_array(4 * (lanes + extra));
}

/* A kernel's work-group ceiling: the device's, the kernel's own, and the override. */
static uint64_t kernel_wg(const clbn_limits *lim, const clbn_kernel_info *ki) {
    uint64_t w =
        min_u64(lim->max_work_group_size ? lim->max_work_group_size : 1, ki->work_group_size);
    if (lim->kernel_work_group_size)
        w = min_u64(w, lim->kernel_work_group_size);
    return max_u64(w, 1);
}

static clbn_status plan_kernel(const clbn_bn *bn, const plan *p, clbn_kernel_id id,
                               clbn_kernel_info *ki) {
    return clbn_context_kernel_info(bn->ctx, p->variant, id, ki);
}

/* What every step of a plan reads: the limits in force and the figures derived from them. */
typedef struct planner {
    const clbn_limits *lim;
    int gpu, backward;
    uint32_t W;
    uint64_t cu, target;         /* compute units; work-groups that keep the device busy */
    uint64_t gwg;                /* GPU reduction work-group target (tuned) */
    uint64_t cpu_reduce, cpu_ew; /* CPU items of a reduction, of an elementwise pass (tuned) */
    uint64_t gmax1;              /* most groups in grid dimension 1 */
} planner;

static clbn_status no_local_room(const planner *pl, uint64_t own, uint64_t lanes) {
    return clbn_fail(CLBN_ERROR_UNSUPPORTED,
                     "the device's local memory (%llu bytes, %llu of them the kernel's own) "
                     "cannot hold one work-item's moments of %llu channel lanes",
                     (unsigned long long)pl->lim->local_mem_size, (unsigned long long)own,
                     (unsigned long long)lanes);
}

/* The split: several groups per channel (block) when there are fewer blocks than the device
 * wants groups, each still given at least 8 values (NCHW vectors, NHWC rows) per item, and
 * never more groups than grid dimension 1 holds. */
static void plan_split(const planner *pl, plan *p, uint64_t blocks, uint64_t total,
                       uint64_t items) {
    uint64_t split = 1;
    if (blocks < pl->target)
        split = clamp_u64(ceil_div(pl->target, blocks), 1, max_u64(1, ceil_div(total, items * 8)));
    split = min_u64(split, pl->gmax1);
    p->chunk = ceil_div(total, split);
    p->split = ceil_div(total, p->chunk);
}

/* CPU reduction (one item per group): an item per channel (NCHW rows kernels) or per tile of
 * cpi channel vectors (NHWC), each over all its values; when there are fewer of them than
 * twice the compute units, each is split over groups of rows (images in NCHW) and merged. */
static void plan_reduction_cpu(const planner *pl, plan *p, uint64_t *slice_bytes) {
    if (p->rows && p->nhwc) {
        /* rows NHWC: items over blocks of whole rows, partials merged (never single-read) */
        const uint64_t want = pl->cpu_reduce;
        const uint64_t split = min_u64(min_u64(want, max_u64(1, p->R / 8)), pl->gmax1);
        p->chunk = ceil_div(p->R, split);
        p->split = ceil_div(p->R, p->chunk);
        p->r_local[0] = p->r_local[1] = 1;
        p->r_global[0] = 1;
        p->r_global[1] = p->split;
        p->r_lanes = 1; /* the kernels keep their state in private arrays */
        p->r_extra = 0;
        p->pub.groups[0] = 1;
        *slice_bytes = 0;
        return;
    }
    const uint64_t lanes = p->nhwc ? p->cpi * pl->W : 1;
    const uint64_t tiles = p->nhwc ? ceil_div(p->C / pl->W, p->cpi) : p->C;
    const uint64_t rows = p->nhwc ? p->R : p->N, want = pl->cpu_reduce;
    uint64_t split = 1;
    if (tiles < want)
        split = min_u64(min_u64(ceil_div(want, tiles), max_u64(1, rows / 8)), pl->gmax1);
    /* NCHW items take blocks of channels (pipelined: one channel's second pass overlaps the
     * next one's first), twice as many as compute units; NHWC items one tile each. */
    const uint64_t items = p->nhwc ? tiles : min_u64(tiles, want);
    p->chunk = ceil_div(rows, split);
    p->split = ceil_div(rows, p->chunk);
    p->r_local[0] = p->r_local[1] = 1;
    p->r_global[0] = items;
    p->r_global[1] = p->split;
    p->r_lanes = lanes;
    p->r_extra = pl->backward ? 0 : lanes;
    p->pub.groups[0] = items;
    *slice_bytes = p->nhwc ? p->R * lanes * 4 : 2 * p->m * 4; /* NCHW: two channels in flight */
}

/* NCHW reduction: one group of wg items per channel in dimension 0, the split in dimension 1.
 * Returns the bytes of one channel's slice (for the single-read decision). */
static clbn_status plan_reduction_nchw(const planner *pl, plan *p, uint64_t kwg, uint64_t budget,
                                       uint64_t own, uint64_t *slice_bytes) {
    const uint64_t extra = pl->backward ? 0 : 1;
    uint64_t wg = min_u64(pl->gpu ? pl->gwg : 8, kwg);
    while (wg > 1 && reduce_local_bytes(pl->backward, wg, extra) > budget)
        wg >>= 1;
    if (reduce_local_bytes(pl->backward, wg, extra) > budget)
        return no_local_room(pl, own, 1);
    plan_split(pl, p, p->C, p->N * (p->HW / pl->W), wg);
    p->r_local[0] = wg;
    p->r_local[1] = 1;
    p->r_global[0] = wg * p->C;
    p->r_global[1] = p->split;
    p->r_lanes = wg;
    p->r_extra = extra;
    p->pub.groups[0] = p->C;
    *slice_bytes = p->m * 4;
    return CLBN_SUCCESS;
}

/* NHWC reduction: items of cpi channel vectors (x_items of them cover a row) in dimension 0,
 * cw per group; rw items per group share the rows of each split group in dimension 1. */
static clbn_status plan_reduction_nhwc(const planner *pl, plan *p, uint64_t kwg, uint64_t budget,
                                       uint64_t own, uint64_t *slice_bytes) {
    const uint64_t cv = p->C / pl->W, lanes = p->cpi * pl->W, x_items = ceil_div(cv, p->cpi);
    const int bwd = pl->backward;
    uint64_t cw = min_u64(min_u64(x_items, pl->gpu ? 64 : 16), kwg);
    uint64_t rw = max_u64(1, min_u64(pl->gpu ? pl->gwg : 8, kwg) / cw);
    while (rw > 1 && reduce_local_bytes(bwd, cw * rw * lanes, cw * lanes) > budget)
        rw >>= 1;
    while (cw > 1 && reduce_local_bytes(bwd, cw * rw * lanes, cw * lanes) > budget)
        cw >>= 1;
    if (reduce_local_bytes(bwd, cw * rw * lanes, cw * lanes) > budget)
        return no_local_room(pl, own, lanes);
    const uint64_t cb = ceil_div(x_items, cw);
    plan_split(pl, p, cb, p->R, rw);
    p->r_local[0] = cw;
    p->r_local[1] = rw;
    p->r_global[0] = cb * cw;
    p->r_global[1] = rw * p->split;
    p->r_lanes = cw * rw * lanes;
    p->r_extra = bwd ? 0 : cw * lanes;
    p->pub.groups[0] = cb;
    *slice_bytes = p->R * cw * lanes * 4;
    return CLBN_SUCCESS;
}

/* The reduction kernel's range, its local memory, and whether the slice stays in cache so the
 * same kernel normalizes it (single read) or a merge kernel follows (split). */
static clbn_status plan_reduction(const clbn_bn *bn, const planner *pl, plan *p) {
    clbn_kernel_info ki_r, ki_m;
    clbn_status st = plan_kernel(
        bn, p,
        pl->backward ? clbn_plan_pick(p, CLBN_K_BWD_REDUCE_NCHW, CLBN_K_BWD_REDUCE_NHWC,
                                      CLBN_K_ROWS_BWD_REDUCE_NCHW, CLBN_K_ROWS_BWD_REDUCE_NHWC)
                     : clbn_plan_pick(p, CLBN_K_STATS_NCHW, CLBN_K_STATS_NHWC,
                                      CLBN_K_ROWS_STATS_NCHW, CLBN_K_ROWS_STATS_NHWC),
        &ki_r);
    if (st == CLBN_SUCCESS)
        st = plan_kernel(bn, p, pl->backward ? CLBN_K_BWD_MERGE : CLBN_K_STATS_MERGE, &ki_m);
    if (st != CLBN_SUCCESS)
        return st;
    /* the kernel's own local memory, as it reports it (NVIDIA: 1 byte), rounded likewise */
    const uint64_t own = clbn_local_array(ki_r.local_bytes);
    const uint64_t budget = pl->lim->local_mem_size > own ? pl->lim->local_mem_size - own : 0;
    const uint64_t kwg = kernel_wg(pl->lim, &ki_r);
    uint64_t slice_bytes = 0;
    if (!pl->gpu && reduce_local_bytes(pl->backward, p->cpi * pl->W, p->cpi * pl->W) <= budget)
        plan_reduction_cpu(pl, p, &slice_bytes);
    else
        st = p->nhwc ? plan_reduction_nhwc(pl, p, kwg, budget, own, &slice_bytes)
                     : plan_reduction_nchw(pl, p, kwg, budget, own, &slice_bytes);
    if (st != CLBN_SUCCESS)
        return st;
    p->pub.groups[1] = p->split;
    p->pub.local_bytes = reduce_local_bytes(pl->backward, p->r_lanes, p->r_extra) + own;
    p->pub.private_bytes = max_u64(ki_r.private_bytes, ki_m.private_bytes);
    if (p->split == 1 && !(p->rows && p->nhwc)) {
        uint64_t arrays = pl->backward ? (bn->opt.activation ? 3 : 2) : 1;
        uint64_t resident = slice_bytes * arrays * min_u64(p->pub.groups[0], pl->cu);
        p->fused = resident <= pl->lim->cache_size / 2;
    } else if (p->split > 1) {
        p->m_local = (size_t)min_u64(64, kernel_wg(pl->lim, &ki_m));
        p->m_global = (size_t)(ceil_div(p->C, p->m_local) * p->m_local);
    }
    return CLBN_SUCCESS;
}

/* The elementwise kernel's range (normalization or dx); dimension 1 stays within the groups
 * ceiling, the kernels loop over what is left. */
static clbn_status plan_elementwise(const clbn_bn *bn, const planner *pl, plan *p,
                                    uint64_t groups[2], clbn_kernel_info *ki_e) {
    clbn_status st =
        plan_kernel(bn, p,
                    pl->backward ? clbn_plan_pick(p, CLBN_K_DX_NCHW, CLBN_K_DX_NHWC,
                                                  CLBN_K_ROWS_DX_NCHW, CLBN_K_ROWS_DX_NHWC)
                                 : clbn_plan_pick(p, CLBN_K_APPLY_NCHW, CLBN_K_APPLY_NHWC,
                                                  CLBN_K_ROWS_APPLY_NCHW, CLBN_K_ROWS_APPLY_NHWC),
                    ki_e);
    if (st != CLBN_SUCCESS)
        return st;
    const uint64_t kwg = kernel_wg(pl->lim, ki_e);
    if (!pl->gpu) {
        /* CPU: one item per group, each streaming a contiguous block of rows (NCHW), or of
         * rows of its tile of channels (NHWC); tuning.cpu_elementwise_items_per_cu per unit. */
        const uint64_t want = pl->cpu_ew;
        p->e_local[0] = p->e_local[1] = 1;
        if (p->rows && p->nhwc) {
            groups[0] = 1;
            groups[1] = min_u64(min_u64(want, p->R), pl->gmax1);
        } else if (p->rows) {
            groups[0] = min_u64(p->N * p->C, want);
            groups[1] = 1;
        } else {
            groups[0] = p->nhwc ? ceil_div(p->C / pl->W, p->cpi) : 1;
            groups[1] = min_u64(min_u64(ceil_div(want, groups[0]), p->R), pl->gmax1);
        }
    } else if (!p->nhwc) {
        uint64_t rows = p->N * p->C, hwv = p->HW / pl->W;
        if (pl->gpu) {
            p->e_local[0] = min_u64(hwv, min_u64(256, kwg));
            p->e_local[1] = 1;
            groups[0] = 1;
            groups[1] = min_u64(rows, pl->gmax1);
        } else {
            uint64_t l1 = min_u64(16, kwg);
            p->e_local[0] = 1;
            p->e_local[1] = l1;
            groups[0] = clamp_u64(ceil_div(pl->target * 4, rows), 1, max_u64(1, hwv / 256));
            groups[1] = min_u64(ceil_div(rows, l1), pl->gmax1);
        }
    } else {
        const uint64_t x_items = ceil_div(p->C / pl->W, p->cpi);
        uint64_t l0 = min_u64(min_u64(x_items, pl->gpu ? 64 : 16), kwg);
        uint64_t l1 = pl->gpu ? max_u64(1, min_u64(256, kwg) / l0) : 1;
        uint64_t cbs = ceil_div(x_items, l0);
        /* On a CPU an item takes whole rows (cpi up to 8 vectors) in tiles of 64: a stream. */
        uint64_t row_groups = pl->gpu
                                  ? clamp_u64(ceil_div(pl->target * 4, cbs), 1, ceil_div(p->R, l1))
                                  : ceil_div(p->R, 64);
        p->e_local[0] = l0;
        p->e_local[1] = l1;
        groups[0] = cbs;
        groups[1] = min_u64(row_groups, pl->gmax1);
    }
    p->e_global[0] = groups[0] * p->e_local[0];
    p->e_global[1] = groups[1] * p->e_local[1];
    return CLBN_SUCCESS;
}

/* Work-group sizes and targets per kind of device. A GPU wants wide interleaved groups and
 * many of them; a CPU (PoCL runs one group per core at a time) wants few items, each streaming
 * a contiguous run. Every plan keeps within the device's and each kernel's work-group limit,
 * the local memory (counting every byte the kernel asks for and its own), and the groups a
 * grid dimension holds. */
clbn_status clbn_plan_make(const clbn_bn *bn, clbn_op op, const clbn_shape *s, plan *p) {
    const clbn_limits *lim = &bn->ctx->limits;
    planner pl = {.lim = lim,
                  .gpu = lim->device_type == CLBN_DEVICE_KIND_GPU,
                  .backward = op == CLBN_OP_BACKWARD || op == CLBN_OP_BACKWARD_FROZEN,
                  .W = 1,
                  .cu = 1,
                  .gmax1 = 65535};
    memset(p, 0, sizeof *p);
    p->N = s->n;
    p->C = s->c;
    p->HW = s->layout == CLBN_LAYOUT_NC ? 1 : s->h * s->w;
    p->R = p->N * p->HW;
    p->m = p->R;
    p->nhwc = s->layout != CLBN_LAYOUT_NCHW || p->HW == 1;
    p->blocked = !pl.gpu;
    /* A CPU plan takes the rows kernels: NCHW at the full vector width whatever H*W is, NHWC
     * in blocks of whole rows (their per-channel state in private arrays, a tile of channels
     * at a time that limits.private_mem_size holds: host/context.c) when the device's local
     * memory, a CPU driver's figure for its cache, holds 40 bytes a channel: the merge's
     * partials of a block of rows stay cached. With less (a small device, or C in the tens
     * of thousands) the NHWC kernels with one item per group run, which have a single-read
     * path. */
    p->rows = !pl.gpu && (!p->nhwc || 40 * p->C + 4096 <= lim->local_mem_size);
    const uint64_t inner = p->nhwc ? p->C : p->HW;
    pl.W = lim->vector_width ? lim->vector_width : 1;
    while (pl.W > 1 && (p->nhwc || !p->rows) && inner % pl.W)
        pl.W >>= 1;
    pl.cu = lim->compute_units ? lim->compute_units : 1;
    const clbn_tuning *tu = &bn->ctx->tuning;
    pl.target = tu->gpu_groups_per_cu * pl.cu;
    pl.gwg = tu->gpu_work_group;
    pl.cpu_reduce = tu->cpu_reduce_items_per_cu * pl.cu;
    pl.cpu_ew = tu->cpu_elementwise_items_per_cu * pl.cu;
    if (lim->max_groups_per_dim)
        pl.gmax1 = lim->max_groups_per_dim;
    p->reduce = op == CLBN_OP_FORWARD_TRAIN || pl.backward ||
                (op == CLBN_OP_FORWARD_INFER && !(bn->opt.flags & CLBN_TRACK_RUNNING_STATS));
    /* NHWC on a CPU: an item takes up to 8 channel vectors (128 channels) of every row. An
     * elementwise pass takes whole rows (a stream); a reduction keeps tiles small enough that
     * there are two per compute unit when it can, so no split is needed. A GPU item takes one
     * vector, so its arrays stay in registers. */
    p->cpi = 1;
    if (p->nhwc && !pl.gpu && !p->rows) {
        const uint64_t cv = p->C / pl.W;
        p->cpi = floor_pow2_u32(cv, 8);
    } else if (p->nhwc && p->rows) {
        /* a row of 1, 2, 4 or 8 vectors: the variant whose CLBN_CPI is the row, so the rows
         * kernels keep its state in registers (rows.cl, clbn_rows_stats_reg) */
        const uint64_t cv = p->C / pl.W;
        if (cv <= 8 && (cv & (cv - 1)) == 0)
            p->cpi = (uint32_t)cv;
    }
    p->variant = log2_u32(pl.W) * CLBN_CPI_VARIANTS + log2_u32(p->cpi);

    clbn_plan *pub = &p->pub;
    clbn_status st = p->reduce ? plan_reduction(bn, &pl, p) : CLBN_SUCCESS;
    uint64_t e_groups[2];
    clbn_kernel_info ki_e;
    if (st == CLBN_SUCCESS)
        st = plan_elementwise(bn, &pl, p, e_groups, &ki_e);
    if (st != CLBN_SUCCESS)
        return st;
    if (!p->fused) { /* the elementwise kernel (and the merge) run too */
        pub->groups[0] = max_u64(pub->groups[0], e_groups[0]);
        pub->groups[1] = max_u64(pub->groups[1], e_groups[1]);
        pub->local_bytes = max_u64(pub->local_bytes, clbn_local_array(ki_e.local_bytes));
        pub->private_bytes = max_u64(pub->private_bytes, ki_e.private_bytes);
        if (p->reduce && p->split > 1)
            pub->groups[0] = max_u64(pub->groups[0], p->m_global / p->m_local);
    }
    if (pub->groups[0] > CLBN_MAX_GROUPS_DIM0)
        return clbn_fail(CLBN_ERROR_UNSUPPORTED,
                         "the plan needs %llu work-groups in grid dimension 0, more than 2^31 - 1",
                         (unsigned long long)pub->groups[0]);

    /* Scratch: split partials and the backward sums. */
    if (p->reduce) {
        uint64_t parts = p->split > 1 ? p->C * p->split : 1;
        if (pl.backward) {
            p->scratch_a = 2 * parts;
            p->scratch_b = 2 * p->C;
            p->scratch_n = 1;
        } else {
            p->scratch_n = parts;
            p->scratch_a = parts;
            p->scratch_b = parts;
        }
    }

    pub->vector_width = pl.W;
    /* a rows NHWC item takes whole rows: every channel vector */
    pub->channels_per_item = p->rows && p->nhwc ? (uint32_t)(p->C / pl.W) : p->cpi;
    pub->split = p->reduce ? p->split : 1;
    pub->scratch_bytes = p->reduce ? p->scratch_n * 8 + (p->scratch_a + p->scratch_b) * 4 : 0;
    if (!p->reduce) {
        pub->strategy = CLBN_STRATEGY_ELEMENTWISE;
        pub->work_group_size = p->e_local[0] * p->e_local[1];
        pub->kernels = 1;
    } else {
        pub->work_group_size = p->r_local[0] * p->r_local[1];
        if (p->fused) {
            pub->strategy = CLBN_STRATEGY_SINGLE_READ;
            pub->kernels = 1;
        } else if (p->split > 1) {
            pub->strategy = CLBN_STRATEGY_SPLIT;
            pub->kernels = 3;
        } else {
            pub->strategy = CLBN_STRATEGY_GROUP_PER_CHANNEL;
            pub->kernels = 2;
        }
    }
    return CLBN_SUCCESS;
}

const char *clbn_strategy_name(clbn_strategy s) {
    switch (s) {
    case CLBN_STRATEGY_ELEMENTWISE:
        return "elementwise";
    case CLBN_STRATEGY_GROUP_PER_CHANNEL:
        return "group-per-channel";
    case CLBN_STRATEGY_SPLIT:
        return "split";
    case CLBN_STRATEGY_SINGLE_READ:
        return "single-read";
    }
    return "unknown";
}
