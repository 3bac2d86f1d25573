/* rows.cl - the kernels of CPU plans. A CPU runs one work-group per core at a time and
 * turns a work-item's loop into vector code, so these kernels take one work-item per group,
 * and each item streams whole rows (a row: the H*W contiguous values of one image and
 * channel): full vectors of CLBN_VEC values, then a scalar tail, so any H*W runs at the full
 * vector width. The arguments are those of the GPU kernels of the same name without "rows_"
 * (the host launches either family the same way); the local arrays and `blocked` go unused.
 * NHWC plans on a CPU take the second half of this file: items over blocks of whole rows of
 * all C channels (with less than 40 bytes of local memory a channel, the GPU family's NHWC
 * kernels with one item per group instead: host/plan.c). */

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

/* One channel's moments over rows n0..n1-1 (vectors and scalar tails), accumulated a row at a
 * time so that the pipelined kernels below can interleave them with another channel's rows. */
typedef struct {
    clbn_moments w;
    clbn_moments1 w1;
    float pivot;
} clbn_row_moments;

inline void clbn_row_moments_init(clbn_row_moments *r, float pivot) {
    clbn_moments_init(&r->w);
    clbn_moments1_init(&r->w1);
    r->pivot = pivot;
}

/* The run's sums are copied into locals for the loop: through the struct, every vector's add
 * waited for the previous one's store (a chain through memory, not registers). pf: the
 * distance in floats from this row to one the item reads a few rows later (0: none; see
 * clbn_rows_ahead), prefetched. */
inline void clbn_row_moments_add(clbn_row_moments *r, const __global float *row, long pf,
                                 ulong HW) {
    const float p = r->pivot;
    vfloat s = r->w.s, q = r->w.q;
    uint n = r->w.run_n;
    ulong i = 0;
    for (; i + CLBN_VEC <= HW; i += CLBN_VEC) {
        CLBN_PREFETCH(row + i + pf);
        const vfloat d = VLOAD(row + i) - p;
        s += d;
        q = fma(d, d, q);
        if (++n == CLBN_RUN) {
            clbn_moments_fold(&r->w, s, q, n);
            s = q = (vfloat)(0.0f);
            n = 0;
        }
    }
    r->w.s = s;
    r->w.q = q;
    r->w.run_n = n;
    for (; i < HW; i++)
        clbn_moments1_add(&r->w1, row[i] - p);
}

/* (count, mean, M2) of x - pivot over everything added: the lanes and the tail merged in a
 * fixed order. */
inline void clbn_row_moments_result(clbn_row_moments *r, ulong *n, float *m, float *M) {
    clbn_moments_flush(&r->w);
    clbn_moments1_flush(&r->w1);
    *n = 0;
    *m = *M = 0.0f;
    for (int j = 0; j < CLBN_VEC; j++)
        clbn_chan_merge(n, m, M, r->w.tot_n, clbn_lane(r->w.tot_mean, j),
                        clbn_lane(r->w.tot_m2, j));
    clbn_chan_merge(n, m, M, r->w1.tot_n, r->w1.tot_mean, r->w1.tot_m2);
}

/* This item's channels [*c0, *c1): a contiguous block of the C channels over dim0's items. */
inline void clbn_channel_block(ulong C, ulong *c0, ulong *c1) {
    const ulong G = get_global_size(0), per = (C + G - 1) / G;
    *c0 = min(get_global_id(0) * per, C);
    *c1 = min(*c0 + per, C);
}

/* How many rows ahead the NCHW reductions prefetch: about 2 KB ahead, 1 to 8 rows. A row of
 * 49 values (shape 128,2048,7,7) is read in a few nanoseconds, far less than a miss to memory
 * takes, so the next row alone arrives too late. */
inline ulong clbn_rows_ahead(ulong HW) {
    return clamp((ulong)(2048 / (HW * sizeof(float) + 1)), (ulong)1, (ulong)8);
}

/* Range: dim0 = items, each taking a block of consecutive channels (clbn_channel_block), dim1
 * = split items, each taking `chunk` images of them; local size 1. With final_step the item
 * finishes each channel; with apply it also normalizes the channel's slice while it is in cache
 * (single read), pipelined: the rows of channel c are normalized in the same loop that reads
 * channel c+1's rows from memory, so the device reads and writes at once, and each pass runs
 * the opposite way to the one before, so the rows read last are normalized first. */
__kernel void clbn_rows_stats_nchw(__global const float *x, ulong x_off, ulong N, ulong C, ulong HW,
                                   ulong chunk, int blocked, __local ulong *ln, __local float *lm,
                                   __local float *lM, int final_step, __global ulong *pn,
                                   __global float *pm, __global float *pM, CLBN_FINISH_ARGS,
                                   int apply, __global float *y, ulong y_off,
                                   __global const float *gamma, __global const float *beta,
                                   int use_scale, int use_shift, int act) {
    const ulong g = get_global_id(1), split = get_global_size(1);
    ulong c0, c1;
    clbn_channel_block(C, &c0, &c1);
    const ulong CHW = C * HW, ahead = clbn_rows_ahead(HW);
    const ulong n0 = min(g * chunk, N), n1 = min(n0 + chunk, N);
    const __global float *xb = x + x_off;
    clbn_row_moments cur, next;
    if (c0 < c1) {
        clbn_row_moments_init(&cur, clbn_pivot(xb + c0 * HW, HW, 1));
        for (ulong n = n0; n < n1; n++)
            clbn_row_moments_add(&cur, xb + c0 * HW + n * CHW,
                                 n + ahead < n1 ? (long)(ahead * CHW) : 0, HW);
    }
    int down = 1; /* the direction of the next pass over the rows */
    for (ulong c = c0; c < c1; c++) {
        ulong cnt;
        float m, M;
        clbn_row_moments_result(&cur, &cnt, &m, &M);
        const int more = c + 1 < c1;
        if (more)
            clbn_row_moments_init(&next, clbn_pivot(xb + (c + 1) * HW, HW, 1));
        const __global float *xc = xb + c * HW, *xn = xb + (c + 1) * HW;
        if (!final_step) {
            pn[c * split + g] = cnt;
            pm[c * split + g] = m;
            pM[c * split + g] = M;
        }
        float invstd = 0.0f;
        if (final_step)
            invstd = clbn_finish_channel(c, cnt, cur.pivot, m, M, eps, saved_mean, saved_mean_off,
                                         saved_invstd, saved_invstd_off, track, factor, rm_in,
                                         rv_in, rm_out, rv_out, shift);
        if (final_step && apply) {
            float hi, lo;
            clbn_mean_pair(cur.pivot, m, &hi, &lo);
            const float a = (use_scale ? gamma[c] : 1.0f) * invstd;
            const float b = use_shift ? beta[c] : 0.0f;
            __global float *yc = y + y_off + c * HW;
            const long step = down ? -(long)CHW : (long)CHW;
            for (ulong k = 0; k < n1 - n0; k++) {
                const ulong n = down ? n1 - 1 - k : n0 + k;
                if (more)
                    clbn_row_moments_add(&next, xn + n * CHW,
                                         k + ahead < n1 - n0 ? step * (long)ahead : 0, HW);
                clbn_normalize_span(xc + n * CHW, yc + n * CHW, HW, hi, lo, a, b, act);
            }
            down = !down;
        } else if (more) {
            for (ulong n = n0; n < n1; n++)
                clbn_row_moments_add(&next, xn + n * CHW, n + ahead < n1 ? (long)(ahead * CHW) : 0,
                                     HW);
        }
        if (more)
            cur = next;
    }
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

/* One channel's backward sums over rows, a row at a time (see clbn_row_moments). */
typedef struct {
    clbn_sums acc;
    clbn_sums1 acc1;
    float mu, inv;
} clbn_row_sums;

inline void clbn_row_sums_init(clbn_row_sums *r, ulong c, CLBN_GRAD_ARGS) {
    clbn_sums_init(&r->acc);
    clbn_sums1_init(&r->acc1);
    r->mu = mean[mean_off + c];
    r->inv = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
}

inline void clbn_row_sums_add(clbn_row_sums *r, const __global float *xr, const __global float *yr,
                              const __global float *dyr, long pf, ulong HW, int act) {
    const int need_y = act != CLBN_ACT_NONE;
    const float mu = r->mu, inv = r->inv;
    vfloat ra = r->acc.ra, rb = r->acc.rb; /* locals, as in clbn_row_moments_add */
    uint n = r->acc.run_n;
    ulong i = 0;
    for (; i + CLBN_VEC <= HW; i += CLBN_VEC) {
        CLBN_PREFETCH(xr + i + pf);
        CLBN_PREFETCH(dyr + i + pf);
        if (need_y)
            CLBN_PREFETCH(yr + i + pf);
        vfloat dz = VLOAD(dyr + i);
        if (need_y)
            dz = clbn_activation_grad(dz, VLOAD(yr + i), act);
        ra += dz;
        rb += dz * ((VLOAD(xr + i) - mu) * inv);
        if (++n == CLBN_RUN) {
            clbn_sums_fold(&r->acc, ra, rb);
            ra = rb = (vfloat)(0.0f);
            n = 0;
        }
    }
    r->acc.ra = ra;
    r->acc.rb = rb;
    r->acc.run_n = n;
    for (; i < HW; i++) {
        float dz = clbn_activation_grad1(dyr[i], need_y ? yr[i] : 0.0f, act);
        clbn_sums1_add(&r->acc1, dz, dz * ((xr[i] - mu) * inv));
        clbn_sums1_step(&r->acc1);
    }
}

inline void clbn_row_sums_result(clbn_row_sums *r, float *sdz, float *sdzx) {
    clbn_sums_flush(&r->acc);
    clbn_sums1_flush(&r->acc1);
    *sdz = clbn_sum_lanes(clbn_sums_a(&r->acc)) + clbn_sums1_a(&r->acc1);
    *sdzx = clbn_sum_lanes(clbn_sums_b(&r->acc)) + clbn_sums1_b(&r->acc1);
}

/* Range, split and pipelining as clbn_rows_stats_nchw: with apply, channel c's dx is written in
 * the loop that reads channel c+1's x, dy (and y) from memory. */
__kernel void clbn_rows_bwd_reduce_nchw(__global const float *x, ulong x_off,
                                        __global const float *y, ulong y_off,
                                        __global const float *dy, ulong dy_off, ulong N, ulong C,
                                        ulong HW, ulong chunk, int blocked, __local float *la,
                                        __local float *lb, int final_step, __global float *part,
                                        __global float *sums, CLBN_GRAD_ARGS, int apply,
                                        __global float *dx, ulong dx_off, CLBN_DX_ARGS) {
    const ulong g = get_global_id(1), split = get_global_size(1);
    ulong c0, c1;
    clbn_channel_block(C, &c0, &c1);
    const ulong CHW = C * HW, ahead = clbn_rows_ahead(HW);
    const ulong n0 = min(g * chunk, N), n1 = min(n0 + chunk, N);
    const __global float *xb = x + x_off, *yb = y + y_off, *dyb = dy + dy_off;
    clbn_row_sums cur, next;
    if (c0 < c1) {
        clbn_row_sums_init(&cur, c0, mean, mean_off, stat, stat_off, stat_is_var, eps, gamma,
                           use_scale, act);
        for (ulong n = n0; n < n1; n++) {
            const ulong o = c0 * HW + n * CHW;
            clbn_row_sums_add(&cur, xb + o, yb + o, dyb + o,
                              n + ahead < n1 ? (long)(ahead * CHW) : 0, HW, act);
        }
    }
    int down = 1;
    for (ulong c = c0; c < c1; c++) {
        float sdz, sdzx;
        clbn_row_sums_result(&cur, &sdz, &sdzx);
        const int more = c + 1 < c1;
        if (more)
            clbn_row_sums_init(&next, c + 1, mean, mean_off, stat, stat_off, stat_is_var, eps,
                               gamma, use_scale, act);
        if (!final_step) {
            part[2 * (c * split + g)] = sdz;
            part[2 * (c * split + g) + 1] = sdzx;
        } else {
            sums[2 * c] = sdz;
            sums[2 * c + 1] = sdzx;
        }
        if (final_step && apply) {
            clbn_write_grads(c, sdz, sdzx, accumulate, dgamma, dbeta);
            const float a = (use_scale ? gamma[c] : 1.0f) * cur.inv;
            const long step = down ? -(long)CHW : (long)CHW;
            for (ulong k = 0; k < n1 - n0; k++) {
                const ulong n = down ? n1 - 1 - k : n0 + k;
                if (more) {
                    const ulong o = (c + 1) * HW + n * CHW;
                    clbn_row_sums_add(&next, xb + o, yb + o, dyb + o,
                                      k + ahead < n1 - n0 ? step * (long)ahead : 0, HW, act);
                }
                const ulong o = c * HW + n * CHW;
                clbn_dx_span(xb + o, yb + o, dyb + o, dx + dx_off + o, HW, cur.mu, cur.inv, a,
                             sdz * inv_m, sdzx * inv_m, frozen, act);
            }
            down = !down;
        } else if (more) {
            for (ulong n = n0; n < n1; n++) {
                const ulong o = (c + 1) * HW + n * CHW;
                clbn_row_sums_add(&next, xb + o, yb + o, dyb + o,
                                  n + ahead < n1 ? (long)(ahead * CHW) : 0, HW, act);
            }
        }
        if (more)
            cur = next;
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

/* ------------------------------------------------------------------------------------------
 * NHWC (and NC) on a CPU: every item takes a block of whole rows (all C channels of one
 * position, contiguous), so memory is read in long sequential runs when C fits a tile (wider
 * rows a tile of channels at a time); the per-channel state lives in the item's private
 * arrays (one item per group: on a CPU they are the item's own cache-resident stack). The reduction
 * writes partials per block of rows, merged by clbn_stats_merge / clbn_bwd_merge; then the
 * elementwise kernels below run.
 * ------------------------------------------------------------------------------------------ */

/* Channel vectors an NHWC item keeps per-channel state for in private arrays: a tile of
 * CLBN_ROWS_TILE_CH channels, set by the host from limits.private_mem_size (host/context.c:
 * 2048 on PoCL, 64 KB for the eight backward sums on its thread's stack; 512 elsewhere).
 * Private, not __local: PoCL read the same coefficients from a __local array (or a __global
 * one) at 40 GB/s where a private one reads at the copy's 52 GB/s (shape 32,64,56,56; 26
 * against 44 GB/s at 128,2048,7,7). Wider rows are taken a tile of channels at a time. */
#ifndef CLBN_ROWS_TILE_CH
#define CLBN_ROWS_TILE_CH 512
#endif
#define CLBN_ROWS_TILE (CLBN_ROWS_TILE_CH / CLBN_VEC)

/* This item's rows: a contiguous block of the R rows over dim1's items. */
inline void clbn_rows_of_item(ulong R, ulong chunk, ulong *r0, ulong *r1) {
    *r0 = min(get_global_id(1) * chunk, R);
    *r1 = min(*r0 + chunk, R);
}

/* Folds the run sums (s, q) of n values per lane of nt vectors into the block moments (bm, bM,
 * with count *bn); every channel has seen the same count. */
inline void clbn_rows_fold(vfloat *s, vfloat *q, vfloat *bm, vfloat *bM, ulong nt, uint n,
                           ulong *bn) {
    const float wb = (float)n / (float)(*bn + n), wa = (float)*bn * wb;
    CLBN_UNROLL
    for (ulong j = 0; j < nt; j++) {
        const vfloat mean = s[j] / (vfloat)((float)n);
        const vfloat m2 = fmax(q[j] - s[j] * mean, (vfloat)(0.0f));
        const vfloat delta = mean - bm[j];
        bm[j] = bm[j] + delta * wb;
        bM[j] = bM[j] + m2 + delta * delta * wa;
        s[j] = q[j] = (vfloat)(0.0f);
    }
    *bn += n;
}

/* Merges the block moments (bm, bM, count bn) into the totals (tm, tM, count *tn): Chan. */
inline void clbn_rows_block_merge(vfloat *tm, vfloat *tM, vfloat *bm, vfloat *bM, ulong nt,
                                  ulong bn, ulong *tn) {
    const float wb = (float)bn / (float)(*tn + bn), wa = (float)*tn * wb;
    CLBN_UNROLL
    for (ulong j = 0; j < nt; j++) {
        const vfloat delta = bm[j] - tm[j];
        tm[j] = tm[j] + delta * wb;
        tM[j] = tM[j] + bM[j] + delta * delta * wa;
        bm[j] = bM[j] = (vfloat)(0.0f);
    }
    *tn += bn;
}

/* The statistics of one tile of nt channel vectors (from t0) over rows r0..r1-1, written as
 * partials or finished. Defined twice: for a row of CLBN_CPI vectors (the planner's variant
 * when C / CLBN_VEC is 1, 2, 4 or 8), called with the constant nt = CLBN_CPI, so the loops
 * unroll and the state lives in registers (PoCL read shape 32,64,56,56 at 43 GB/s so, 23 with
 * the state on the stack); and for tiles of up to CLBN_ROWS_TILE vectors on the stack. */
#define CLBN_ROWS_STATS_TILE(NAME, SIZE)                                                           \
    inline void NAME(const __global float *xb, ulong R, ulong C, ulong r0, ulong r1, ulong t0,     \
                     ulong nt, ulong g, ulong split, int final_step, __global ulong *pn,           \
                     __global float *pm, __global float *pM, CLBN_FINISH_ARGS) {                   \
        vfloat s[SIZE], q[SIZE], bm[SIZE], bM[SIZE], tm[SIZE], tM[SIZE], piv[SIZE];                \
        const __global float *xt = xb + t0 * CLBN_VEC;                                             \
        CLBN_UNROLL                                                                                \
        for (ulong j = 0; j < nt; j++) {                                                           \
            piv[j] = clbn_pivot_v(xt + j * CLBN_VEC, R, C);                                        \
            s[j] = q[j] = bm[j] = bM[j] = tm[j] = tM[j] = (vfloat)(0.0f);                          \
        }                                                                                          \
        ulong bn = 0, tn = 0;                                                                      \
        uint run = 0, runs = 0;                                                                    \
        for (ulong r = r0; r < r1; r++) {                                                          \
            const __global float *row = xt + r * C;                                                \
            CLBN_UNROLL                                                                            \
            for (ulong j = 0; j < nt; j++) {                                                       \
                const vfloat d = VLOAD(row + j * CLBN_VEC) - piv[j];                               \
                s[j] += d;                                                                         \
                q[j] = fma(d, d, q[j]);                                                            \
            }                                                                                      \
            if (++run == CLBN_RUN) {                                                               \
                clbn_rows_fold(s, q, bm, bM, nt, run, &bn);                                        \
                run = 0;                                                                           \
                if (++runs == CLBN_RUN) { /* the block into the total */                           \
                    clbn_rows_block_merge(tm, tM, bm, bM, nt, bn, &tn);                            \
                    bn = 0;                                                                        \
                    runs = 0;                                                                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        if (run)                                                                                   \
            clbn_rows_fold(s, q, bm, bM, nt, run, &bn);                                            \
        if (bn)                                                                                    \
            clbn_rows_block_merge(tm, tM, bm, bM, nt, bn, &tn);                                    \
        for (ulong j = 0; j < nt; j++)                                                             \
            for (int k = 0; k < CLBN_VEC; k++) {                                                   \
                const ulong c = (t0 + j) * CLBN_VEC + k;                                           \
                const float m = clbn_lane(tm[j], k), M = clbn_lane(tM[j], k);                      \
                if (final_step)                                                                    \
                    clbn_finish_channel(c, tn, clbn_lane(piv[j], k), m, M, eps, saved_mean,        \
                                        saved_mean_off, saved_invstd, saved_invstd_off, track,     \
                                        factor, rm_in, rv_in, rm_out, rv_out, shift);              \
                else {                                                                             \
                    pn[c * split + g] = tn;                                                        \
                    pm[c * split + g] = m;                                                         \
                    pM[c * split + g] = M;                                                         \
                }                                                                                  \
            }                                                                                      \
    }
CLBN_ROWS_STATS_TILE(clbn_rows_stats_reg, CLBN_CPI)
CLBN_ROWS_STATS_TILE(clbn_rows_stats_tile, CLBN_ROWS_TILE)

/* Statistics, NHWC on a CPU. Range: dim0 = 1, dim1 = items over blocks of `chunk` rows;
 * local size 1. Per tile of channels, private run sums, block moments, total moments and
 * pivots (clbn_rows_stats_tile). Writes partial moments per block (or, with final_step,
 * finishes the channels); never normalizes (apply must be 0); the local arrays go unused. */
__kernel void clbn_rows_stats_nhwc(__global const float *x, ulong x_off, ulong R, ulong C,
                                   ulong chunk, int blocked, __local ulong *ln, __local float *lm,
                                   __local float *lM, int final_step, __global ulong *pn,
                                   __global float *pm, __global float *pM, CLBN_FINISH_ARGS,
                                   int apply, __global float *y, ulong y_off,
                                   __global const float *gamma, __global const float *beta,
                                   int use_scale, int use_shift, int act) {
    const ulong g = get_global_id(1), split = get_global_size(1), cv = C / CLBN_VEC;
    const __global float *xb = x + x_off;
    ulong r0, r1;
    clbn_rows_of_item(R, chunk, &r0, &r1);
    if (cv == CLBN_CPI) {
        clbn_rows_stats_reg(xb, R, C, r0, r1, 0, CLBN_CPI, g, split, final_step, pn, pm, pM, eps,
                            saved_mean, saved_mean_off, saved_invstd, saved_invstd_off, track,
                            factor, rm_in, rv_in, rm_out, rv_out, shift);
        return;
    }
    for (ulong t0 = 0; t0 < cv; t0 += CLBN_ROWS_TILE)
        clbn_rows_stats_tile(xb, R, C, r0, r1, t0, min((ulong)CLBN_ROWS_TILE, cv - t0), g, split,
                             final_step, pn, pm, pM, eps, saved_mean, saved_mean_off, saved_invstd,
                             saved_invstd_off, track, factor, rm_in, rv_in, rm_out, rv_out, shift);
}

/* y for NHWC on a CPU. Range: dim0 = 1, dim1 = items over blocks of rows (of R / items);
 * local size 1; each channel's hi, lo, a, b are computed once per item and tile. */
__kernel void
clbn_rows_apply_nhwc(__global const float *x, ulong x_off, __global float *y, ulong y_off, ulong R,
                     ulong C, int blocked, __global const float *mean, ulong mean_off,
                     __global const float *shift, int use_pair, __global const float *stat,
                     ulong stat_off, int stat_is_var, float eps, __global const float *gamma,
                     __global const float *beta, int use_scale, int use_shift, int act) {
    const ulong cv = C / CLBN_VEC, items = get_global_size(1);
    vfloat hi[CLBN_ROWS_TILE], lo[CLBN_ROWS_TILE], a[CLBN_ROWS_TILE], b[CLBN_ROWS_TILE];
    ulong r0, r1;
    clbn_rows_of_item(R, (R + items - 1) / items, &r0, &r1);
    for (ulong t0 = 0; t0 < cv; t0 += CLBN_ROWS_TILE) {
        const ulong nt = min((ulong)CLBN_ROWS_TILE, cv - t0);
        for (ulong j = 0; j < nt; j++) {
            const ulong c0 = (t0 + j) * CLBN_VEC;
            float th[CLBN_VEC], tl[CLBN_VEC], ta[CLBN_VEC], tb[CLBN_VEC];
            for (int k = 0; k < CLBN_VEC; k++) {
                const ulong c = c0 + k;
                th[k] = use_pair ? shift[2 * c] : mean[mean_off + c];
                tl[k] = use_pair ? shift[2 * c + 1] : 0.0f;
                ta[k] = (use_scale ? gamma[c] : 1.0f) *
                        clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
                tb[k] = use_shift ? beta[c] : 0.0f;
            }
            hi[j] = VLOAD(th);
            lo[j] = VLOAD(tl);
            a[j] = VLOAD(ta);
            b[j] = VLOAD(tb);
        }
        for (ulong r = r0; r < r1; r++) {
            const __global float *xr = x + x_off + r * C + t0 * CLBN_VEC;
            __global float *yr = y + y_off + r * C + t0 * CLBN_VEC;
            for (ulong j = 0; j < nt; j++)
                VSTORE_NT(clbn_normalize(VLOAD(xr + j * CLBN_VEC), hi[j], lo[j], a[j], b[j], act),
                          yr + j * CLBN_VEC);
        }
    }
}

/* The backward sums of one tile of nt channel vectors (from t0) over rows r0..r1-1, written as
 * partials or the channels' sums; defined twice like CLBN_ROWS_STATS_TILE. */
#define CLBN_ROWS_BWD_TILE(NAME, SIZE)                                                             \
    inline void NAME(const __global float *xb, const __global float *yb,                           \
                     const __global float *dyb, ulong C, ulong r0, ulong r1, ulong t0, ulong nt,   \
                     ulong g, ulong split, int final_step, __global float *part,                   \
                     __global float *sums, CLBN_GRAD_ARGS) {                                       \
        vfloat ra[SIZE], ta[SIZE], ca[SIZE], mu[SIZE], rb[SIZE], tb[SIZE], cb[SIZE], iv[SIZE];     \
        const int need_y = act != CLBN_ACT_NONE;                                                   \
        const ulong cbase = t0 * CLBN_VEC;                                                         \
        CLBN_UNROLL                                                                                \
        for (ulong j = 0; j < nt; j++) {                                                           \
            float tmu[CLBN_VEC], tiv[CLBN_VEC];                                                    \
            for (int k = 0; k < CLBN_VEC; k++) {                                                   \
                const ulong c = cbase + j * CLBN_VEC + k;                                          \
                tmu[k] = mean[mean_off + c];                                                       \
                tiv[k] = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);                     \
            }                                                                                      \
            mu[j] = VLOAD(tmu);                                                                    \
            iv[j] = VLOAD(tiv);                                                                    \
            ra[j] = ta[j] = ca[j] = rb[j] = tb[j] = cb[j] = (vfloat)(0.0f);                        \
        }                                                                                          \
        uint run = 0;                                                                              \
        for (ulong r = r0; r < r1; r++) {                                                          \
            const ulong base = r * C + cbase;                                                      \
            CLBN_UNROLL                                                                            \
            for (ulong j = 0; j < nt; j++) {                                                       \
                const ulong o = base + j * CLBN_VEC;                                               \
                vfloat dz = VLOAD(dyb + o);                                                        \
                if (need_y)                                                                        \
                    dz = clbn_activation_grad(dz, VLOAD(yb + o), act);                             \
                const vfloat xh = (VLOAD(xb + o) - mu[j]) * iv[j];                                 \
                ra[j] += dz;                                                                       \
                rb[j] += dz * xh;                                                                  \
            }                                                                                      \
            if (++run == CLBN_RUN || r + 1 == r1) { /* the run into the Kahan totals */            \
                CLBN_UNROLL                                                                        \
                for (ulong j = 0; j < nt; j++) {                                                   \
                    clbn_sums_kahan(&ta[j], &ca[j], ra[j]);                                        \
                    clbn_sums_kahan(&tb[j], &cb[j], rb[j]);                                        \
                    ra[j] = rb[j] = (vfloat)(0.0f);                                                \
                }                                                                                  \
                run = 0;                                                                           \
            }                                                                                      \
        }                                                                                          \
        for (ulong j = 0; j < nt; j++)                                                             \
            for (int k = 0; k < CLBN_VEC; k++) {                                                   \
                const ulong c = cbase + j * CLBN_VEC + k;                                          \
                const float sdz = clbn_lane(ta[j], k) - clbn_lane(ca[j], k);                       \
                const float sdzx = clbn_lane(tb[j], k) - clbn_lane(cb[j], k);                      \
                if (final_step) {                                                                  \
                    sums[2 * c] = sdz;                                                             \
                    sums[2 * c + 1] = sdzx;                                                        \
                } else {                                                                           \
                    part[2 * (c * split + g)] = sdz;                                               \
                    part[2 * (c * split + g) + 1] = sdzx;                                          \
                }                                                                                  \
            }                                                                                      \
    }
CLBN_ROWS_BWD_TILE(clbn_rows_bwd_reg, CLBN_CPI)
CLBN_ROWS_BWD_TILE(clbn_rows_bwd_tile, CLBN_ROWS_TILE)

/* Backward sums, NHWC on a CPU. Range as clbn_rows_stats_nhwc; per tile of channels, private
 * run sums, Kahan totals and compensations, means and invstd (clbn_rows_bwd_tile). Writes
 * partial sums per block (or, with final_step, the channels' sums); never writes dx (apply
 * must be 0); the local arrays go unused. */
__kernel void clbn_rows_bwd_reduce_nhwc(__global const float *x, ulong x_off,
                                        __global const float *y, ulong y_off,
                                        __global const float *dy, ulong dy_off, ulong R, ulong C,
                                        ulong chunk, int blocked, __local float *la,
                                        __local float *lb, int final_step, __global float *part,
                                        __global float *sums, CLBN_GRAD_ARGS, int apply,
                                        __global float *dx, ulong dx_off, CLBN_DX_ARGS) {
    const ulong g = get_global_id(1), split = get_global_size(1), cv = C / CLBN_VEC;
    const __global float *xb = x + x_off, *yb = y + y_off, *dyb = dy + dy_off;
    ulong r0, r1;
    clbn_rows_of_item(R, chunk, &r0, &r1);
    if (cv == CLBN_CPI) {
        clbn_rows_bwd_reg(xb, yb, dyb, C, r0, r1, 0, CLBN_CPI, g, split, final_step, part, sums,
                          mean, mean_off, stat, stat_off, stat_is_var, eps, gamma, use_scale, act);
        return;
    }
    for (ulong t0 = 0; t0 < cv; t0 += CLBN_ROWS_TILE)
        clbn_rows_bwd_tile(xb, yb, dyb, C, r0, r1, t0, min((ulong)CLBN_ROWS_TILE, cv - t0), g,
                           split, final_step, part, sums, mean, mean_off, stat, stat_off,
                           stat_is_var, eps, gamma, use_scale, act);
}

/* dx for NHWC on a CPU. Range as clbn_rows_apply_nhwc; each channel's mean, invstd, a, k1, k2
 * are computed once per item and tile, in private arrays (see CLBN_ROWS_TILE). The first item
 * writes dgamma and dbeta. */
__kernel void clbn_rows_dx_nhwc(__global const float *x, ulong x_off, __global const float *y,
                                ulong y_off, __global const float *dy, ulong dy_off,
                                __global float *dx, ulong dx_off, ulong R, ulong C, int blocked,
                                __global const float *sums, CLBN_GRAD_ARGS, CLBN_DX_ARGS) {
    const ulong cv = C / CLBN_VEC, items = get_global_size(1);
    vfloat mu[CLBN_ROWS_TILE], iv[CLBN_ROWS_TILE], a[CLBN_ROWS_TILE], k1[CLBN_ROWS_TILE],
        k2[CLBN_ROWS_TILE];
    if (get_global_id(1) == 0)
        for (ulong c = 0; c < C; c++)
            clbn_write_grads(c, sums[2 * c], sums[2 * c + 1], accumulate, dgamma, dbeta);
    const int need_y = act != CLBN_ACT_NONE;
    ulong r0, r1;
    clbn_rows_of_item(R, (R + items - 1) / items, &r0, &r1);
    for (ulong t0 = 0; t0 < cv; t0 += CLBN_ROWS_TILE) {
        const ulong nt = min((ulong)CLBN_ROWS_TILE, cv - t0);
        for (ulong j = 0; j < nt; j++) {
            const ulong c0 = (t0 + j) * CLBN_VEC;
            float tm[CLBN_VEC], ti[CLBN_VEC], ta[CLBN_VEC], t1[CLBN_VEC], t2[CLBN_VEC];
            for (int k = 0; k < CLBN_VEC; k++) {
                const ulong c = c0 + k;
                tm[k] = mean[mean_off + c];
                ti[k] = clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
                ta[k] = (use_scale ? gamma[c] : 1.0f) * ti[k];
                t1[k] = sums[2 * c] * inv_m;
                t2[k] = sums[2 * c + 1] * inv_m;
            }
            mu[j] = VLOAD(tm);
            iv[j] = VLOAD(ti);
            a[j] = VLOAD(ta);
            k1[j] = VLOAD(t1);
            k2[j] = VLOAD(t2);
        }
        for (ulong r = r0; r < r1; r++) {
            const ulong base = r * C + t0 * CLBN_VEC;
            for (ulong j = 0; j < nt; j++) {
                const ulong o = base + j * CLBN_VEC;
                vfloat yv = need_y ? VLOAD(y + y_off + o) : (vfloat)(0.0f);
                VSTORE_NT(clbn_dx(VLOAD(x + x_off + o), VLOAD(dy + dy_off + o), yv, mu[j], iv[j],
                                  a[j], k1[j], k2[j], frozen, act),
                          dx + dx_off + o);
            }
        }
    }
}
