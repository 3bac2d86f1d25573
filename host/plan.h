/* plan.h — the plan of one call: strategy, kernels, ranges, split and scratch, chosen from the
 * shape, the op and the limits in force (plan.c). Internal to the library. */
#ifndef CLBN_PLAN_H
#define CLBN_PLAN_H

#include "internal.h"

typedef struct plan {
    clbn_plan pub;
    int nhwc;     /* kernel family: channels contiguous (NHWC, NC, and NCHW with H*W = 1) */
    int variant;  /* program variant: log2(width) * CLBN_CPI_VARIANTS + log2(cpi) */
    int blocked;  /* contiguous runs per work-item (CPU) rather than interleaved (GPU) */
    int rows;     /* a CPU plan with the rows kernels (rows.cl) */
    uint32_t cpi; /* NHWC: channel vectors per work-item */
    uint64_t N, C, HW, R, m;
    uint64_t chunk, split; /* reduction: vectors (NCHW) or rows (NHWC) per group */
    size_t r_local[2], r_global[2], r_lanes; /* reduction range; local slots * lanes */
    size_t r_extra;                          /* local slots after the tree's (coefficients) */
    size_t e_local[2], e_global[2];          /* elementwise range */
    size_t m_local, m_global;                /* merge range (one item per channel) */
    int reduce, fused;
    uint64_t scratch_n, scratch_a, scratch_b; /* elements */
} plan;

/* The kernel of a plan's family: NCHW or NHWC, the GPU family or the rows kernels (CPU). */
static inline clbn_kernel_id clbn_plan_pick(const plan *p, clbn_kernel_id nchw, clbn_kernel_id nhwc,
                                            clbn_kernel_id rows_nchw, clbn_kernel_id rows_nhwc) {
    if (p->rows)
        return p->nhwc ? rows_nhwc : rows_nchw;
    return p->nhwc ? nhwc : nchw;
}

/* Plans op on shape s for bn's context; the shape has passed its checks. */
clbn_status clbn_plan_make(const clbn_bn *bn, clbn_op op, const clbn_shape *s, plan *p);
/* Bytes given to one __local array: whole multiples of 16 (see plan.c). */
uint64_t clbn_local_array(uint64_t bytes);

#endif
