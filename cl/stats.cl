/* stats.cl - per-channel moments over N, H, W for the training forward: pivot-shifted sums over
 * bounded runs per work-item, Chan's merge in a fixed tree per work-group, then either the
 * channel's final statistics (one group per channel, optionally normalizing its slice while it is
 * in cache) or partial moments that clbn_stats_merge combines in a separate kernel. */

/* NCHW: a channel is N rows of HW contiguous values. Range: dim0 = C groups of local size wg
 * (one per channel: dimension 0 holds the most groups on every device), dim1 = the split
 * groups of each channel. Requires HW % CLBN_VEC == 0. */
__kernel void clbn_stats_nchw(__global const float *x, ulong x_off, ulong N, ulong C, ulong HW,
                              ulong chunk, int blocked, __local ulong *ln, __local float *lm,
                              __local float *lM, int final_step, __global ulong *pn,
                              __global float *pm, __global float *pM, CLBN_FINISH_ARGS, int apply,
                              __global float *y, ulong y_off, __global const float *gamma,
                              __global const float *beta, int use_scale, int use_shift, int act) {
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const ulong c = get_group_id(0), g = get_group_id(1), split = get_num_groups(1);
    const ulong HWv = HW / CLBN_VEC, CHW = C * HW;
    const ulong total = N * HWv;
    const ulong begin = min(g * chunk, total), end = min(begin + chunk, total);
    const ulong xbase = x_off + c * HW;
    const float pivot = clbn_pivot(x + xbase, HW, 1);

    ulong start, stop, step;
    clbn_item_range(begin, end, lid, wg, blocked, &start, &stop, &step);
    clbn_moments w;
    clbn_moments_init(&w);
    clbn_cursor k;
    clbn_cursor_init(&k, start, stop, step, HWv);
    for (; k.q < k.end; clbn_cursor_next(&k))
        clbn_moments_add(&w, VLOAD(x + xbase + k.row * CHW + k.col * CLBN_VEC) - pivot);
    barrier(CLK_LOCAL_MEM_FENCE); /* CLBN_REGION_END: see common.cl */
    clbn_moments_flush(&w);

    ulong n = 0;
    float m = 0.0f, M = 0.0f;
    for (int j = 0; j < CLBN_VEC; j++)
        clbn_chan_merge(&n, &m, &M, w.tot_n, clbn_lane(w.tot_mean, j), clbn_lane(w.tot_m2, j));
    ln[lid] = n;
    lm[lid] = m;
    lM[lid] = M;
    clbn_tree_moments(ln, lm, lM, 0, 1, 1, lid, wg);

    /* The coefficient goes to the extra slot after the tree's: the tree's results stay as
     * they are, so this step is idempotent. */
    if (lid == 0) {
        if (final_step) {
            float invstd = clbn_finish_channel(c, ln[0], pivot, lm[0], lM[0], eps, saved_mean,
                                               saved_mean_off, saved_invstd, saved_invstd_off,
                                               track, factor, rm_in, rv_in, rm_out, rv_out, shift);
            lM[wg] = (use_scale ? gamma[c] : 1.0f) * invstd;
        } else {
            pn[c * split + g] = ln[0];
            pm[c * split + g] = lm[0];
            pM[c * split + g] = lM[0];
        }
    }
    /* Unconditional: a barrier under a branch trips some compilers (PoCL re-runs work-item 0
     * up to it), even when the branch is uniform. */
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!apply)
        return;
    /* Single-read path: the slice this group just reduced is still in cache. */
    float hi, lo;
    clbn_mean_pair(pivot, lm[0], &hi, &lo);
    const float a = lM[wg], b = use_shift ? beta[c] : 0.0f;
    const ulong ybase = y_off + c * HW;
    clbn_cursor_init(&k, start, stop, step, HWv);
    for (; k.q < k.end; clbn_cursor_next(&k)) {
        ulong o = k.row * CHW + k.col * CLBN_VEC;
        vfloat v = VLOAD(x + xbase + o);
        VSTORE_NT(clbn_normalize(v, (vfloat)(hi), (vfloat)(lo), (vfloat)(a), (vfloat)(b), act),
                  y + ybase + o);
    }
}

/* NHWC (and NC): the C channels of a row are contiguous. Range: dim0 = items of CLBN_CPI
 * channel vectors (CLBN_VEC channels each; local size cw), dim1 = split groups of rows (local
 * size rw). Requires C % CLBN_VEC == 0. Local arrays hold CLBN_CPI * CLBN_VEC lanes per item,
 * then cw * lanes coefficient slots. */
__kernel void clbn_stats_nhwc(__global const float *x, ulong x_off, ulong R, ulong C, ulong chunk,
                              int blocked, __local ulong *ln, __local float *lm, __local float *lM,
                              int final_step, __global ulong *pn, __global float *pm,
                              __global float *pM, CLBN_FINISH_ARGS, int apply, __global float *y,
                              ulong y_off, __global const float *gamma, __global const float *beta,
                              int use_scale, int use_shift, int act) {
    const uint l0 = get_local_id(0), cw = get_local_size(0);
    const uint l1 = get_local_id(1), rw = get_local_size(1);
    const ulong g = get_group_id(1), split = get_num_groups(1);
    const ulong cv = C / CLBN_VEC, ci0 = get_global_id(0) * CLBN_CPI;
    const uint nk = ci0 < cv ? (uint)min((ulong)CLBN_CPI, cv - ci0) : 0;
    const uint lanes = CLBN_CPI * CLBN_VEC;
    const ulong begin = min(g * chunk, R), end = min(begin + chunk, R);
    const __global float *xc = x + x_off + ci0 * CLBN_VEC;

    ulong start, stop, step;
    clbn_item_range(begin, end, l1, rw, blocked, &start, &stop, &step);
    /* The run sums stay in registers, counted once for all CLBN_CPI accumulators. */
    clbn_moments w[CLBN_CPI];
    vfloat pivot[CLBN_CPI], rs[CLBN_CPI], rq[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        clbn_moments_init(&w[k]);
        pivot[k] = k < nk ? clbn_pivot_v(xc + k * CLBN_VEC, R, C) : (vfloat)(0.0f);
        rs[k] = rq[k] = (vfloat)(0.0f);
    }
    uint run = 0;
    for (ulong r = start; r < stop; r += step) {
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                const vfloat d = VLOAD(xc + r * C + k * CLBN_VEC) - pivot[k];
                rs[k] += d;
                rq[k] = fma(d, d, rq[k]);
            }
        if (++run == CLBN_RUN) {
            CLBN_UNROLL
            for (uint k = 0; k < CLBN_CPI; k++) {
                clbn_moments_fold(&w[k], rs[k], rq[k], run);
                rs[k] = rq[k] = (vfloat)(0.0f);
            }
            run = 0;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* CLBN_REGION_END: see common.cl */
    const uint slot = (l1 * cw + l0) * lanes;
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        clbn_moments_fold(&w[k], rs[k], rq[k], run);
        clbn_moments_flush(&w[k]);
        for (int j = 0; j < CLBN_VEC; j++) {
            ln[slot + k * CLBN_VEC + j] = w[k].tot_n;
            lm[slot + k * CLBN_VEC + j] = clbn_lane(w[k].tot_mean, j);
            lM[slot + k * CLBN_VEC + j] = clbn_lane(w[k].tot_m2, j);
        }
    }
    clbn_tree_moments(ln, lm, lM, l0 * lanes, cw * lanes, lanes, l1, rw);

    const uint out = cw * rw * lanes; /* extra slots after the tree's, for coefficients */
    if (l1 == 0) {
        for (uint k = 0; k < nk; k++) {
            for (int j = 0; j < CLBN_VEC; j++) {
                const uint s = l0 * lanes + k * CLBN_VEC + j;
                const ulong c = (ci0 + k) * CLBN_VEC + j;
                if (final_step) {
                    float invstd = clbn_finish_channel(c, ln[s], clbn_lane(pivot[k], j), lm[s],
                                                       lM[s], eps, saved_mean, saved_mean_off,
                                                       saved_invstd, saved_invstd_off, track,
                                                       factor, rm_in, rv_in, rm_out, rv_out, shift);
                    lM[out + s] = (use_scale ? gamma[c] : 1.0f) * invstd;
                } else {
                    pn[c * split + g] = ln[s];
                    pm[c * split + g] = lm[s];
                    pM[c * split + g] = lM[s];
                }
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!apply || nk == 0)
        return;
    vfloat hi[CLBN_CPI], lo[CLBN_CPI], a[CLBN_CPI], b[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        float th[CLBN_VEC], tl[CLBN_VEC];
        const uint s = l0 * lanes + k * CLBN_VEC;
        const int live = k < nk;
        for (int j = 0; j < CLBN_VEC; j++)
            clbn_mean_pair(clbn_lane(pivot[k], j), live ? lm[s + j] : 0.0f, &th[j], &tl[j]);
        hi[k] = VLOAD(th);
        lo[k] = VLOAD(tl);
        a[k] = live ? VLOAD(lM + out + s) : (vfloat)(0.0f);
        b[k] = live && use_shift ? VLOAD(beta + (ci0 + k) * CLBN_VEC) : (vfloat)(0.0f);
    }
    __global float *yc = y + y_off + ci0 * CLBN_VEC;
    for (ulong t = start; t < stop; t += step) { /* blocked: last read, first */
        const ulong r = blocked ? start + stop - 1 - t : t;
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                vfloat v = VLOAD(xc + r * C + k * CLBN_VEC);
                VSTORE_NT(clbn_normalize(v, hi[k], lo[k], a[k], b[k], act),
                          yc + r * C + k * CLBN_VEC);
            }
    }
}

/* Combines the split partial moments of each channel pairwise in a fixed order (a binary
 * counter over the groups: 0 with 1, 2 with 3, then the pairs, ...), so a channel split over
 * hundreds of groups rounds its mean over log2(split) merges rather than split of them (a
 * sequential merge over 526 groups put 12 ulps of error into the mean). One item per channel. */
__kernel void clbn_stats_merge(ulong C, ulong split, __global const ulong *pn,
                               __global const float *pm, __global const float *pM,
                               __global const float *x, ulong x_off, ulong pivot_stride,
                               ulong pivot_count, ulong pivot_step, CLBN_FINISH_ARGS) {
    const ulong c = get_global_id(0);
    if (c >= C)
        return;
    ulong sn[CLBN_CASCADE];
    float sm[CLBN_CASCADE], sM[CLBN_CASCADE];
    uint depth = 0;
    for (ulong g = 0; g < split; g++) {
        ulong n = pn[c * split + g];
        float m = pm[c * split + g], M = pM[c * split + g];
        for (ulong k = g; k & 1; k >>= 1) { /* the left neighbour of this level is complete */
            depth--;
            clbn_chan_merge(&sn[depth], &sm[depth], &sM[depth], n, m, M);
            n = sn[depth];
            m = sm[depth];
            M = sM[depth];
        }
        sn[depth] = n;
        sm[depth] = m;
        sM[depth] = M;
        depth++;
    }
    while (depth > 1) { /* the unfinished levels, right to left */
        depth--;
        clbn_chan_merge(&sn[depth - 1], &sm[depth - 1], &sM[depth - 1], sn[depth], sm[depth],
                        sM[depth]);
    }
    clbn_finish_channel(c, sn[0], clbn_pivot(x + x_off + c * pivot_stride, pivot_count, pivot_step),
                        sm[0], sM[0], eps, saved_mean, saved_mean_off, saved_invstd,
                        saved_invstd_off, track, factor, rm_in, rv_in, rm_out, rv_out, shift);
}
