/* rows.cl - the NCHW kernels of CPU plans. A CPU runs one work-group per core at a time and
 * turns a work-item's loop into vector code, so these kernels take one work-item per group,
 * and each item streams whole rows (a row: the H*W contiguous values of one image and
 * channel): full vectors of CLBN_VEC values, then a scalar tail, so any H*W runs at the full
 * vector width. The arguments are those of the GPU kernels of the same name without "rows_"
 * (the host launches either family the same way); the local arrays and `blocked` go unused.
 * NHWC plans on a CPU use the GPU family's kernels with one item per group. */

/* y for len contiguous values of one channel. */
inline void clbn_normalize_span(const __global float *x, __global float *y, ulong len, float hi,
                                float lo, float a, float b, int act) {
    ulong i = 0;
    for (; i + CLBN_VEC <= len; i += CLBN_VEC)
        VSTORE_NT(
            clbn_normalize(VLOAD(x + i), (vfloat)(hi), (vfloat)(lo), (vfloat)(a), (vfloat)(b), act),
            y + i);
    for (; i < len; i++)
        y[i] = clbn_normalize1(x[i], hi, lo, a, b, act);
}

/* dx for len contiguous values of one channel. */
inline void clbn_dx_span(const __global float *x, const __global float *y, const __global float *dy,
                         __global float *dx, ulong len, float mu, float inv, float a, float k1,
                         float k2, int frozen, int act) {
    const int need_y = act != CLBN_ACT_NONE;
    ulong i = 0;
    for (; i + CLBN_VEC <= len; i += CLBN_VEC) {
        vfloat yv = need_y ? VLOAD(y + i) : (vfloat)(0.0f);
        VSTORE_NT(clbn_dx(VLOAD(x + i), VLOAD(dy + i), yv, (vfloat)(mu), (vfloat)(inv), (vfloat)(a),
                          (vfloat)(k1), (vfloat)(k2), frozen, act),
                  dx + i);
    }
    for (; i < len; i++)
        dx[i] = clbn_dx1(x[i], dy[i], need_y ? y[i] : 0.0f, mu, inv, a, k1, k2, frozen, act);
}

/* Range: dim0 = C items (one per channel), dim1 = split items, each taking `chunk` images of
 * the channel; local size 1. With final_step the item finishes the channel and, with apply,
 * normalizes its slice while it is in cache (single read). */
__kernel void clbn_rows_stats_nchw(__global const float *x, ulong x_off, ulong N, ulong C, ulong HW,
                                   ulong chunk, int blocked, __local ulong *ln, __local float *lm,
                                   __local float *lM, int final_step, __global ulong *pn,
                                   __global float *pm, __global float *pM, CLBN_FINISH_ARGS,
                                   int apply, __global float *y, ulong y_off,
                                   __global const float *gamma, __global const float *beta,
                                   int use_scale, int use_shift, int act) {
    const ulong c = get_global_id(0), g = get_global_id(1), split = get_global_size(1);
    if (c >= C)
        return;
    const ulong CHW = C * HW;
    const ulong n0 = min(g * chunk, N), n1 = min(n0 + chunk, N);
    const __global float *xc = x + x_off + c * HW;
    const float pivot = clbn_pivot(xc, HW, 1);
    clbn_moments w;
    clbn_moments1 w1;
    clbn_moments_init(&w);
    clbn_moments1_init(&w1);
    for (ulong n = n0; n < n1; n++) {
        const __global float *row = xc + n * CHW;
        ulong i = 0;
        for (; i + CLBN_VEC <= HW; i += CLBN_VEC)
            clbn_moments_add(&w, VLOAD(row + i) - pivot);
        for (; i < HW; i++)
            clbn_moments1_add(&w1, row[i] - pivot);
    }
    clbn_moments_flush(&w);
    clbn_moments1_flush(&w1);
    ulong cnt = 0;
    float m = 0.0f, M = 0.0f;
    for (int j = 0; j < CLBN_VEC; j++)
        clbn_chan_merge(&cnt, &m, &M, w.tot_n, clbn_lane(w.tot_mean, j), clbn_lane(w.tot_m2, j));
    clbn_chan_merge(&cnt, &m, &M, w1.tot_n, w1.tot_mean, w1.tot_m2);
    if (!final_step) {
        pn[c * split + g] = cnt;
        pm[c * split + g] = m;
        pM[c * split + g] = M;
        return;
    }
    const float invstd =
        clbn_finish_channel(c, cnt, pivot, m, M, eps, saved_mean, saved_mean_off, saved_invstd,
                            saved_invstd_off, track, factor, rm_in, rv_in, rm_out, rv_out, shift);
    if (!apply)
        return;
    float hi, lo;
    clbn_mean_pair(pivot, m, &hi, &lo);
    const float a = (use_scale ? gamma[c] : 1.0f) * invstd, b = use_shift ? beta[c] : 0.0f;
    __global float *yc = y + y_off + c * HW;
    for (ulong n = n1; n-- > n0;) /* last read first: the most of it is still in cache */
        clbn_normalize_span(xc + n * CHW, yc + n * CHW, HW, hi, lo, a, b, act);
}

/* This item's rows of the N*C rows: a contiguous block (dim0 items, local size 1). */
inline void clbn_row_block(ulong rows, ulong *r0, ulong *r1) {
    const ulong G = get_global_size(0), i = get_global_id(0);
    const ulong per = (rows + G - 1) / G;
    *r0 = min(i * per, rows);
    *r1 = min(*r0 + per, rows);
}

/* Range: dim0 = items over blocks of rows, local size 1. */
__kernel void
clbn_rows_apply_nchw(__global const float *x, ulong x_off, __global float *y, ulong y_off, ulong N,
                     ulong C, ulong HW, int blocked, __global const float *mean, ulong mean_off,
                     __global const float *shift, int use_pair, __global const float *stat,
                     ulong stat_off, int stat_is_var, float eps, __global const float *gamma,
                     __global const float *beta, int use_scale, int use_shift, int act) {
    ulong r0, r1;
    clbn_row_block(N * C, &r0, &r1);
    ulong c = r0 % C; /* once per item; then counted */
    for (ulong rr = r0; rr < r1; rr++) {
        const float hi = use_pair ? shift[2 * c] : mean[mean_off + c];
        const float lo = use_pair ? shift[2 * c + 1] : 0.0f;
        const float a =
            (use_scale ? gamma[c] : 1.0f) * clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
        const float b = use_shift ? beta[c] : 0.0f;
        clbn_normalize_span(x + x_off + rr * HW, y + y_off + rr * HW, HW, hi, lo, a, b, act);
        if (++c == C)
            c = 0;
    }
}

/* Range and split as clbn_rows_stats_nchw. */
__kernel void clbn_rows_bwd_reduce_nchw(__global const float *x, ulong x_off,
                                        __global const float *y, ulong y_off,
                                        __global const float *dy, ulong dy_off, ulong N, ulong C,
                                        ulong HW, ulong chunk, int blocked, __local float *la,
                                        __local float *lb, int final_step, __global float *part,
                                        __global float *sums, CLBN_GRAD_ARGS, int apply,
                                        __global float *dx, ulong dx_off, CLBN_DX_ARGS) {
    const ulong c = get_global_id(0), g = get_global_id(1), split = get_global_size(1);
    if (c >= C)
        return;
    const ulong CHW = C * HW;
    const ulong n0 = min(g * chunk, N), n1 = min(n0 + chunk, N);
    const float mu = mean[mean_off + c];
    const float inv = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
    const int need_y = act != CLBN_ACT_NONE;
    const ulong base = c * HW;
    clbn_sums acc;
    clbn_sums1 acc1;
    clbn_sums_init(&acc);
    clbn_sums1_init(&acc1);
    for (ulong n = n0; n < n1; n++) {
        const ulong o = base + n * CHW;
        const __global float *xr = x + x_off + o, *yr = y + y_off + o, *dyr = dy + dy_off + o;
        ulong i = 0;
        for (; i + CLBN_VEC <= HW; i += CLBN_VEC) {
            vfloat dz = VLOAD(dyr + i);
            if (need_y)
                dz = clbn_activation_grad(dz, VLOAD(yr + i), act);
            clbn_sums_add(&acc, dz, dz * ((VLOAD(xr + i) - mu) * inv));
            clbn_sums_step(&acc);
        }
        for (; i < HW; i++) {
            float dz = clbn_activation_grad1(dyr[i], need_y ? yr[i] : 0.0f, act);
            clbn_sums1_add(&acc1, dz, dz * ((xr[i] - mu) * inv));
            clbn_sums1_step(&acc1);
        }
    }
    clbn_sums_flush(&acc);
    clbn_sums1_flush(&acc1);
    const float sdz = clbn_sum_lanes(clbn_sums_a(&acc)) + clbn_sums1_a(&acc1);
    const float sdzx = clbn_sum_lanes(clbn_sums_b(&acc)) + clbn_sums1_b(&acc1);
    if (!final_step) {
        part[2 * (c * split + g)] = sdz;
        part[2 * (c * split + g) + 1] = sdzx;
        return;
    }
    sums[2 * c] = sdz;
    sums[2 * c + 1] = sdzx;
    if (!apply)
        return;
    clbn_write_grads(c, sdz, sdzx, accumulate, dgamma, dbeta);
    const float a = (use_scale ? gamma[c] : 1.0f) * inv;
    for (ulong n = n1; n-- > n0;) {
        const ulong o = base + n * CHW;
        clbn_dx_span(x + x_off + o, y + y_off + o, dy + dy_off + o, dx + dx_off + o, HW, mu, inv, a,
                     sdz * inv_m, sdzx * inv_m, frozen, act);
    }
}

/* Range as clbn_rows_apply_nchw; the item holding a channel's first row (n = 0) writes its
 * dgamma and dbeta. */
__kernel void clbn_rows_dx_nchw(__global const float *x, ulong x_off, __global const float *y,
                                ulong y_off, __global const float *dy, ulong dy_off,
                                __global float *dx, ulong dx_off, ulong N, ulong C, ulong HW,
                                int blocked, __global const float *sums, CLBN_GRAD_ARGS,
                                CLBN_DX_ARGS) {
    ulong r0, r1;
    clbn_row_block(N * C, &r0, &r1);
    ulong c = r0 % C;
    for (ulong rr = r0; rr < r1; rr++) {
        const float mu = mean[mean_off + c];
        const float inv = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
        const float a = (use_scale ? gamma[c] : 1.0f) * inv;
        const float sdz = sums[2 * c], sdzx = sums[2 * c + 1];
        if (rr < C)
            clbn_write_grads(c, sdz, sdzx, accumulate, dgamma, dbeta);
        const ulong o = rr * HW;
        clbn_dx_span(x + x_off + o, y + y_off + o, dy + dy_off + o, dx + dx_off + o, HW, mu, inv, a,
                     sdz * inv_m, sdzx * inv_m, frozen, act);
        if (++c == C)
            c = 0;
    }
}
