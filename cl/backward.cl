/* backward.cl - the backward pass: per-channel sums sum dz and sum dz*xhat (work-group trees, split
 * partials merged in group order), then dx, and dgamma/dbeta written by the last kernel of the
 * call. dz is dy through the fused activation's derivative, taken from the forward's output. */

/* NCHW reduction; same range and split as clbn_stats_nchw. With apply (one group per
 * channel), the group also writes dx from its slice while it is in cache. */
__kernel void clbn_bwd_reduce_nchw(__global const float *x, ulong x_off, __global const float *y,
                                   ulong y_off, __global const float *dy, ulong dy_off, ulong N,
                                   ulong C, ulong HW, ulong chunk, int blocked, __local float *la,
                                   __local float *lb, int final_step, __global float *part,
                                   __global float *sums, CLBN_GRAD_ARGS, int apply,
                                   __global float *dx, ulong dx_off, CLBN_DX_ARGS) {
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const ulong c = get_group_id(0), g = get_group_id(1), split = get_num_groups(1);
    const ulong HWv = HW / CLBN_VEC, CHW = C * HW;
    const ulong total = N * HWv;
    const ulong begin = min(g * chunk, total), end = min(begin + chunk, total);
    const ulong base = c * HW;
    const float mu = mean[mean_off + c];
    const float inv = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
    const int need_y = act != CLBN_ACT_NONE;

    ulong start, stop, step;
    clbn_item_range(begin, end, lid, wg, blocked, &start, &stop, &step);
    clbn_sums acc;
    clbn_sums_init(&acc);
    clbn_cursor k;
    clbn_cursor_init(&k, start, stop, step, HWv);
    for (; k.q < k.end; clbn_cursor_next(&k)) {
        const ulong o = base + k.row * CHW + k.col * CLBN_VEC;
        vfloat dz = VLOAD(dy + dy_off + o);
        if (need_y)
            dz = clbn_activation_grad(dz, VLOAD(y + y_off + o), act);
        clbn_sums_add(&acc, dz, dz * ((VLOAD(x + x_off + o) - mu) * inv));
        clbn_sums_step(&acc);
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* CLBN_REGION_END: see common.cl */
    clbn_sums_flush(&acc);
    la[lid] = clbn_sum_lanes(clbn_sums_a(&acc));
    lb[lid] = clbn_sum_lanes(clbn_sums_b(&acc));
    clbn_tree_sums(la, lb, 0, 1, 1, lid, wg);

    if (lid == 0) {
        if (final_step) {
            sums[2 * c] = la[0];
            sums[2 * c + 1] = lb[0];
            if (apply)
                clbn_write_grads(c, la[0], lb[0], accumulate, dgamma, dbeta);
        } else {
            part[2 * (c * split + g)] = la[0];
            part[2 * (c * split + g) + 1] = lb[0];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!apply)
        return;
    const float a = (use_scale ? gamma[c] : 1.0f) * inv;
    const float k1 = la[0] * inv_m, k2 = lb[0] * inv_m;
    clbn_cursor_init(&k, start, stop, step, HWv);
    for (; k.q < k.end; clbn_cursor_next(&k)) {
        const ulong o = base + k.row * CHW + k.col * CLBN_VEC;
        vfloat yv = need_y ? VLOAD(y + y_off + o) : (vfloat)(0.0f);
        VSTORE_NT(clbn_dx(VLOAD(x + x_off + o), VLOAD(dy + dy_off + o), yv, mu, inv, a, k1, k2,
                          frozen, act),
                  dx + dx_off + o);
    }
}

/* The channel statistics of a vector c0..c0+CLBN_VEC-1: mean and invstd. */
inline void clbn_channel_stats(ulong c0, __global const float *mean, ulong mean_off,
                               __global const float *stat, ulong stat_off, int stat_is_var,
                               float eps, vfloat *mu, vfloat *inv) {
    *mu = VLOAD(mean + mean_off + c0);
    vfloat s = VLOAD(stat + stat_off + c0);
    *inv = stat_is_var ? (vfloat)(1.0f) / sqrt(s + eps) : s;
}

/* NHWC / NC reduction; same range, split and CLBN_CPI as clbn_stats_nhwc. */
__kernel void clbn_bwd_reduce_nhwc(__global const float *x, ulong x_off, __global const float *y,
                                   ulong y_off, __global const float *dy, ulong dy_off, ulong R,
                                   ulong C, ulong chunk, int blocked, __local float *la,
                                   __local float *lb, int final_step, __global float *part,
                                   __global float *sums, CLBN_GRAD_ARGS, int apply,
                                   __global float *dx, ulong dx_off, CLBN_DX_ARGS) {
    const uint l0 = get_local_id(0), cw = get_local_size(0);
    const uint l1 = get_local_id(1), rw = get_local_size(1);
    const ulong g = get_group_id(1), split = get_num_groups(1);
    const ulong cv = C / CLBN_VEC, ci0 = get_global_id(0) * CLBN_CPI;
    const uint nk = ci0 < cv ? (uint)min((ulong)CLBN_CPI, cv - ci0) : 0;
    const uint lanes = CLBN_CPI * CLBN_VEC;
    const ulong begin = min(g * chunk, R), end = min(begin + chunk, R);
    const int need_y = act != CLBN_ACT_NONE;
    const ulong cbase = ci0 * CLBN_VEC;

    ulong start, stop, step;
    clbn_item_range(begin, end, l1, rw, blocked, &start, &stop, &step);
    clbn_sums acc[CLBN_CPI];
    vfloat mu[CLBN_CPI], inv[CLBN_CPI], ra[CLBN_CPI], rb[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        clbn_sums_init(&acc[k]);
        mu[k] = inv[k] = ra[k] = rb[k] = (vfloat)(0.0f);
        if (k < nk)
            clbn_channel_stats(cbase + k * CLBN_VEC, mean, mean_off, stat, stat_off, stat_is_var,
                               eps, &mu[k], &inv[k]);
    }
    /* The run sums stay in registers, counted once for all CLBN_CPI accumulators. */
    uint run = 0;
    for (ulong r = start; r < stop; r += step) {
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                const ulong o = r * C + cbase + k * CLBN_VEC;
                vfloat dz = VLOAD(dy + dy_off + o);
                if (need_y)
                    dz = clbn_activation_grad(dz, VLOAD(y + y_off + o), act);
                ra[k] += dz;
                rb[k] += dz * ((VLOAD(x + x_off + o) - mu[k]) * inv[k]);
            }
        if (++run == CLBN_RUN) {
            CLBN_UNROLL
            for (uint k = 0; k < CLBN_CPI; k++) {
                clbn_sums_fold(&acc[k], ra[k], rb[k]);
                ra[k] = rb[k] = (vfloat)(0.0f);
            }
            run = 0;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* CLBN_REGION_END: see common.cl */
    const uint slot = (l1 * cw + l0) * lanes;
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        clbn_sums_fold(&acc[k], ra[k], rb[k]);
        VSTORE(clbn_sums_a(&acc[k]), la + slot + k * CLBN_VEC);
        VSTORE(clbn_sums_b(&acc[k]), lb + slot + k * CLBN_VEC);
    }
    clbn_tree_sums(la, lb, l0 * lanes, cw * lanes, lanes, l1, rw);

    if (l1 == 0) {
        for (uint k = 0; k < nk; k++) {
            for (int j = 0; j < CLBN_VEC; j++) {
                const uint s = l0 * lanes + k * CLBN_VEC + j;
                const ulong c = cbase + k * CLBN_VEC + j;
                if (final_step) {
                    sums[2 * c] = la[s];
                    sums[2 * c + 1] = lb[s];
                    if (apply)
                        clbn_write_grads(c, la[s], lb[s], accumulate, dgamma, dbeta);
                } else {
                    part[2 * (c * split + g)] = la[s];
                    part[2 * (c * split + g) + 1] = lb[s];
                }
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!apply || nk == 0)
        return;
    vfloat a[CLBN_CPI], k1[CLBN_CPI], k2[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        const ulong c0 = cbase + (k < nk ? k : 0) * CLBN_VEC; /* a dead slot repeats the first */
        const uint s = l0 * lanes + k * CLBN_VEC;
        a[k] = (use_scale ? VLOAD(gamma + c0) : (vfloat)(1.0f)) * inv[k];
        k1[k] = VLOAD(la + s) * inv_m;
        k2[k] = VLOAD(lb + s) * inv_m;
    }
    for (ulong t = start; t < stop; t += step) { /* blocked: last read, first */
        const ulong r = blocked ? start + stop - 1 - t : t;
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                const ulong o = r * C + cbase + k * CLBN_VEC;
                vfloat yv = need_y ? VLOAD(y + y_off + o) : (vfloat)(0.0f);
                VSTORE_NT(clbn_dx(VLOAD(x + x_off + o), VLOAD(dy + dy_off + o), yv, mu[k], inv[k],
                                  a[k], k1[k], k2[k], frozen, act),
                          dx + dx_off + o);
            }
    }
}

/* Sums the split partials of each channel pairwise in a fixed order, as clbn_stats_merge
 * merges moments. One item per channel. */
__kernel void clbn_bwd_merge(ulong C, ulong split, __global const float *part,
                             __global float *sums) {
    const ulong c = get_global_id(0);
    if (c >= C)
        return;
    float sa[CLBN_CASCADE], sb[CLBN_CASCADE];
    uint depth = 0;
    for (ulong g = 0; g < split; g++) {
        float a = part[2 * (c * split + g)], b = part[2 * (c * split + g) + 1];
        for (ulong k = g; k & 1; k >>= 1) {
            depth--;
            a = sa[depth] + a;
            b = sb[depth] + b;
        }
        sa[depth] = a;
        sb[depth] = b;
        depth++;
    }
    while (depth > 1) {
        depth--;
        sa[depth - 1] += sa[depth];
        sb[depth - 1] += sb[depth];
    }
    sums[2 * c] = sa[0];
    sums[2 * c + 1] = sb[0];
}

/* dx for NCHW, with the range of clbn_apply_nchw (rows in a grid-stride loop over dimension 1);
 * the item at the start of each channel's first row also writes dgamma and dbeta (so the state
 * changes in the call's last kernel). */
__kernel void clbn_dx_nchw(__global const float *x, ulong x_off, __global const float *y,
                           ulong y_off, __global const float *dy, ulong dy_off, __global float *dx,
                           ulong dx_off, ulong N, ulong C, ulong HW, int blocked,
                           __global const float *sums, CLBN_GRAD_ARGS, CLBN_DX_ARGS) {
    const int need_y = act != CLBN_ACT_NONE;
    ulong start, stop, step;
    clbn_item_range(0, HW / CLBN_VEC, get_global_id(0), get_global_size(0), blocked, &start, &stop,
                    &step);
    for (ulong rr = get_global_id(1); rr < N * C; rr += get_global_size(1)) {
        const ulong n = rr / C, c = rr - n * C; /* once per row */
        const float mu = mean[mean_off + c];
        const float inv = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
        const float a = (use_scale ? gamma[c] : 1.0f) * inv;
        const float sdz = sums[2 * c], sdzx = sums[2 * c + 1];
        if (n == 0 && get_global_id(0) == 0)
            clbn_write_grads(c, sdz, sdzx, accumulate, dgamma, dbeta);
        const float k1 = sdz * inv_m, k2 = sdzx * inv_m;
        const ulong row = rr * HW;
        for (ulong v = start; v < stop; v += step) {
            const ulong o = row + v * CLBN_VEC;
            vfloat yv = need_y ? VLOAD(y + y_off + o) : (vfloat)(0.0f);
            VSTORE_NT(clbn_dx(VLOAD(x + x_off + o), VLOAD(dy + dy_off + o), yv, mu, inv, a, k1, k2,
                              frozen, act),
                      dx + dx_off + o);
        }
    }
}

/* dx for NHWC / NC, with the range of clbn_apply_nhwc. */
__kernel void clbn_dx_nhwc(__global const float *x, ulong x_off, __global const float *y,
                           ulong y_off, __global const float *dy, ulong dy_off, __global float *dx,
                           ulong dx_off, ulong R, ulong C, int blocked, __global const float *sums,
                           CLBN_GRAD_ARGS, CLBN_DX_ARGS) {
    const ulong cv = C / CLBN_VEC, ci0 = get_global_id(0) * CLBN_CPI;
    if (ci0 >= cv)
        return;
    const uint nk = (uint)min((ulong)CLBN_CPI, cv - ci0);
    const ulong cbase = ci0 * CLBN_VEC;
    vfloat mu[CLBN_CPI], inv[CLBN_CPI], a[CLBN_CPI], k1[CLBN_CPI], k2[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        const ulong c0 = cbase + (k < nk ? k : 0) * CLBN_VEC; /* a dead slot repeats the first */
        clbn_channel_stats(c0, mean, mean_off, stat, stat_off, stat_is_var, eps, &mu[k], &inv[k]);
        a[k] = (use_scale ? VLOAD(gamma + c0) : (vfloat)(1.0f)) * inv[k];
        float t0[CLBN_VEC], t1[CLBN_VEC];
        for (int j = 0; j < CLBN_VEC; j++) {
            t0[j] = sums[2 * (c0 + j)];
            t1[j] = sums[2 * (c0 + j) + 1];
            if (k < nk && get_global_id(1) == 0)
                clbn_write_grads(c0 + j, t0[j], t1[j], accumulate, dgamma, dbeta);
        }
        k1[k] = VLOAD(t0) * inv_m;
        k2[k] = VLOAD(t1) * inv_m;
    }
    const int need_y = act != CLBN_ACT_NONE;
    ulong start, stop, step;
    clbn_item_range(0, R, get_global_id(1), get_global_size(1), blocked, &start, &stop, &step);
    for (ulong r = start; r < stop; r += step) {
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                const ulong o = r * C + cbase + k * CLBN_VEC;
                vfloat yv = need_y ? VLOAD(y + y_off + o) : (vfloat)(0.0f);
                VSTORE_NT(clbn_dx(VLOAD(x + x_off + o), VLOAD(dy + dy_off + o), yv, mu[k], inv[k],
                                  a[k], k1[k], k2[k], frozen, act),
                          dx + dx_off + o);
            }
    }
}
