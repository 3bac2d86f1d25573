/* common.cl - helpers shared by every clbn kernel: the vector type, the iteration cursor,
 * shifted-sum moments, Chan's merge, the work-group tree and the activations.
 * OpenCL C 1.2, fp32 only. The host prepends -DCLBN_VEC=W; defaults keep the file
 * compilable on its own. */

#ifndef CLBN_VEC
#define CLBN_VEC 1
#endif
/* Values per lane in one run of shifted sums before the run is folded into the lane's total
 * (see clbn_moments below). */
#ifndef CLBN_RUN
#define CLBN_RUN 64
#endif

/* NHWC: channel vectors per work-item, a compile-time program variant (1, 2, 4 or 8) so the
 * per-channel arrays below have a constant size and stay in registers. A CPU item takes whole
 * rows (several vectors), so it streams memory; a GPU item takes one. */
#ifndef CLBN_CPI
#define CLBN_CPI 1
#endif

/* Levels of the pairwise merge of split partials: enough for 2^32 groups per channel. */
#define CLBN_CASCADE 33

#define CLBN_CAT_(a, b) a##b
#define CLBN_CAT(a, b) CLBN_CAT_(a, b)

#if CLBN_VEC == 1
typedef float vfloat;
#define VLOAD(p) (*(p))
#define VSTORE(v, p) (*(p) = (v))
#else
typedef CLBN_CAT(float, CLBN_VEC) vfloat;
#define VLOAD(p) CLBN_CAT(vload, CLBN_VEC)(0, (p))
#define VSTORE(v, p) CLBN_CAT(vstore, CLBN_VEC)((v), 0, (p))
#endif

#define CLBN_ACT_NONE 0
#define CLBN_ACT_RELU 1
#define CLBN_ACT_SIGMOID 2

/* Walks positions q in [q, end) by `step`, keeping (row, col) so that no position needs an
 * integer division: col counts vectors within a row of `cols` vectors. */
typedef struct {
    ulong q, end, step, row, col, cols, drow, dcol;
} clbn_cursor;

inline void clbn_cursor_init(clbn_cursor *k, ulong start, ulong end, ulong step, ulong cols) {
    k->q = start;
    k->end = end;
    k->step = step;
    k->cols = cols;
    k->row = start / cols;
    k->col = start - k->row * cols;
    k->drow = step / cols;
    k->dcol = step - k->drow * cols;
}

inline void clbn_cursor_next(clbn_cursor *k) {
    k->q += k->step;
    k->row += k->drow;
    k->col += k->dcol;
    if (k->col >= k->cols) {
        k->col -= k->cols;
        k->row += 1;
    }
}

/* This item's share of [begin, end): interleaved (item i takes i, i+size, ...: coalesced on a
 * GPU) or blocked (a contiguous run per item: sequential streams on a CPU). */
inline void clbn_item_range(ulong begin, ulong end, uint item, uint size, int blocked, ulong *start,
                            ulong *stop, ulong *step) {
    if (blocked) {
        ulong len = end > begin ? end - begin : 0;
        ulong per = (len + size - 1) / size;
        ulong s = begin + (ulong)item * per;
        *start = s < end ? s : end;
        *stop = s + per < end ? s + per : end;
        *step = 1;
    } else {
        *start = begin + item;
        *stop = end;
        *step = size;
    }
}

/* Chan's merge of (nb, mb, Mb) into (na, ma, Ma). Counts are 64-bit integers; only their
 * ratio goes through float. */
inline void clbn_chan_merge(ulong *na, float *ma, float *Ma, ulong nb, float mb, float Mb) {
    ulong n = *na + nb;
    if (nb == 0)
        return;
    if (*na == 0) {
        *na = nb;
        *ma = mb;
        *Ma = Mb;
        return;
    }
    float wb = (float)nb / (float)n;
    float delta = mb - *ma;
    *ma = *ma + delta * wb;
    *Ma = *Ma + Mb + delta * delta * ((float)*na * wb);
    *na = n;
}

/* Per-lane moments of d = x - pivot (the pivot: a value of the channel), as shifted sums over
 * bounded runs: a run adds S = sum d and Q = sum d^2 (two operations per value, no division),
 * and after CLBN_RUN values per lane it is folded into the lane's total (count, mean, M2) with
 * Chan's merge, as (n, S/n, Q - S*S/n).
 *
 * Error bound of one run (u = 2^-24, n <= CLBN_RUN values, k = |mean of d| / sigma of the
 * run): S and Q carry at most (n-1)u of relative error each, and M2 = Q - S^2/n cancels
 * Q = M2 (1 + k^2) down to M2, so |dM2| / M2 <= (2n + 2) u (1 + k^2) to first order: 4e-5
 * for n = 64 and a pivot 3 sigma from the mean. That is a worst case of aligned roundings;
 * the errors of a run's roundings and of the runs of a channel are independent, so the
 * measured error is far smaller (tests/test_numerics.c: below 1e-6 relative on 10000 + N(0,1)
 * over 2^20 values with the pivot the channel's first value). Both terms grow with the run
 * length and with the pivot's distance from the mean, which is why the run is bounded and the
 * pivot is a value of the channel. Chan's merges of the totals are stable (Chan, Golub and
 * LeVeque 1979). Every lane of a vector has seen the same number of values, so counts are
 * scalars shared by the lanes. CLBN_MOMENTS(name, type) defines the accumulator for a vector
 * type (the kernels' lanes) and for float (the tails of rows whose length is not a multiple of
 * the vector width). */
#define CLBN_MOMENTS(NAME, T)                                                                      \
    typedef struct {                                                                               \
        uint run_n;                                                                                \
        T s, q;                                                                                    \
        ulong tot_n;                                                                               \
        T tot_mean, tot_m2;                                                                        \
    } NAME;                                                                                        \
    inline void NAME##_init(NAME *w) {                                                             \
        w->run_n = 0;                                                                              \
        w->s = w->q = w->tot_mean = w->tot_m2 = (T)(0.0f);                                         \
        w->tot_n = 0;                                                                              \
    }                                                                                              \
    inline void NAME##_flush(NAME *w) {                                                            \
        if (w->run_n == 0)                                                                         \
            return;                                                                                \
        const float rn = (float)w->run_n;                                                          \
        const T mean = w->s * (1.0f / rn);                                                         \
        const T m2 = fmax(w->q - w->s * mean, (T)(0.0f));                                          \
        const ulong n = w->tot_n + w->run_n;                                                       \
        const float wb = rn / (float)n;                                                            \
        const T delta = mean - w->tot_mean;                                                        \
        w->tot_mean = w->tot_mean + delta * wb;                                                    \
        w->tot_m2 = w->tot_m2 + m2 + delta * delta * ((float)w->tot_n * wb);                       \
        w->tot_n = n;                                                                              \
        w->run_n = 0;                                                                              \
        w->s = w->q = (T)(0.0f);                                                                   \
    }                                                                                              \
    /* d is already shifted by the channel's pivot. */                                             \
    inline void NAME##_add(NAME *w, T d) {                                                         \
        w->s += d;                                                                                 \
        w->q = fma(d, d, w->q);                                                                    \
        if (++w->run_n == CLBN_RUN)                                                                \
            NAME##_flush(w);                                                                       \
    }

CLBN_MOMENTS(clbn_moments, vfloat)
CLBN_MOMENTS(clbn_moments1, float)

/* Backward sums of dz and dz*xhat per lane: runs of at most CLBN_RUN values summed plainly,
 * each finished run added into a Kahan-compensated total, so no fp32 running sum grows over
 * more than CLBN_RUN terms (DESIGN.md: the forward's bounded-run rule). The count is shared
 * by the lanes, as in clbn_welford. */
typedef struct {
    uint run_n;
    vfloat ra, rb, ta, tb, ca, cb;
} clbn_sums;

inline void clbn_sums_init(clbn_sums *s) {
    s->run_n = 0;
    s->ra = s->rb = s->ta = s->tb = s->ca = s->cb = (vfloat)(0.0f);
}

inline void clbn_kahan_add(vfloat *t, vfloat *c, vfloat v) {
    vfloat y = v - *c;
    vfloat u = *t + y;
    *c = (u - *t) - y;
    *t = u;
}

inline void clbn_sums_flush(clbn_sums *s) {
    clbn_kahan_add(&s->ta, &s->ca, s->ra);
    clbn_kahan_add(&s->tb, &s->cb, s->rb);
    s->ra = s->rb = (vfloat)(0.0f);
    s->run_n = 0;
}

/* Adds one value per lane; the caller counts the run with clbn_sums_step when it has added a
 * value to every accumulator that shares the count. */
inline void clbn_sums_add(clbn_sums *s, vfloat a, vfloat b) {
    s->ra += a;
    s->rb += b;
}

inline void clbn_sums_step(clbn_sums *s) {
    if (++s->run_n == CLBN_RUN)
        clbn_sums_flush(s);
}

/* The compensated totals, after a final flush. */
inline vfloat clbn_sums_a(clbn_sums *s) {
    return s->ta - s->ca;
}
inline vfloat clbn_sums_b(clbn_sums *s) {
    return s->tb - s->cb;
}

/* Lane j of a vector, for the lane loops that run once per item (not per element). */
inline float clbn_lane(vfloat v, int j) {
#if CLBN_VEC == 1
    (void)j;
    return v;
#else
    float tmp[CLBN_VEC];
    VSTORE(v, tmp);
    return tmp[j];
#endif
}

/* Sum of the lanes in a fixed order. */
inline float clbn_sum_lanes(vfloat v) {
#if CLBN_VEC == 1
    return v;
#else
    float tmp[CLBN_VEC];
    VSTORE(v, tmp);
    float s = 0.0f;
    for (int j = 0; j < CLBN_VEC; j++)
        s += tmp[j];
    return s;
#endif
}

/* CLBN_REGION_END. PoCL 3.1 may run work-item 0 twice through the code that precedes a loop
 * holding barriers (the trees below): seen as a channel count of 72 for 64 values once the
 * per-channel loops had constant bounds. Every reduction therefore ends its accumulation loop
 * with a barrier of its own, so what precedes a tree is only a final flush and stores to local
 * memory, which give the same result when repeated. */

/* Tree merge of moments over `size` slots at base + i*stride (+ lane j < lanes), i in
 * [0, size), into slot base. Every item of the group calls it (barriers inside, in a single
 * loop: some compilers mishandle barriers in nested loops); this item owns slot i = idx. The
 * pairing order is fixed, so the result is deterministic. */
inline void clbn_tree_moments(__local ulong *ln, __local float *lm, __local float *lM, uint base,
                              uint stride, uint lanes, uint idx, uint size) {
    uint span = 1;
    while (span < size)
        span <<= 1;
    for (span >>= 1; span > 0; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (idx < span && idx + span < size) {
            for (uint j = 0; j < lanes; j++) {
                uint a = base + idx * stride + j, b = base + (idx + span) * stride + j;
                ulong n = ln[a];
                float m = lm[a], M = lM[a];
                clbn_chan_merge(&n, &m, &M, ln[b], lm[b], lM[b]);
                ln[a] = n;
                lm[a] = m;
                lM[a] = M;
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Tree sum of two float arrays over the same slots (backward's sums of dz and dz*xhat). */
inline void clbn_tree_sums(__local float *la, __local float *lb, uint base, uint stride, uint lanes,
                           uint idx, uint size) {
    uint span = 1;
    while (span < size)
        span <<= 1;
    for (span >>= 1; span > 0; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (idx < span && idx + span < size) {
            for (uint j = 0; j < lanes; j++) {
                uint a = base + idx * stride + j, b = base + (idx + span) * stride + j;
                la[a] += la[b];
                lb[a] += lb[b];
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

inline vfloat clbn_activate(vfloat z, int act) {
    if (act == CLBN_ACT_RELU)
        return fmax(z, (vfloat)(0.0f));
    if (act == CLBN_ACT_SIGMOID)
        return (vfloat)(1.0f) / ((vfloat)(1.0f) + exp(-z));
    return z;
}

/* dz from dy and the forward's output y: exact masks, as cuDNN's and oneDNN's workspaces. */
inline vfloat clbn_activation_grad(vfloat dy, vfloat y, int act) {
    if (act == CLBN_ACT_RELU)
        return select((vfloat)(0.0f), dy, y > (vfloat)(0.0f));
    if (act == CLBN_ACT_SIGMOID)
        return dy * y * ((vfloat)(1.0f) - y);
    return dy;
}

/* Per-channel statistics in force: either (mean, invstd) as saved by a training forward, or
 * (running mean, running var) from which invstd is derived with eps. */
inline float clbn_invstd_of(float s, int s_is_var, float eps) {
    return s_is_var ? 1.0f / sqrt(s + eps) : s;
}

/* The channel's mean as a pair (hi, lo) that y subtracts one after the other: (x - hi) - lo.
 * When the mean is large next to its distance from the pivot (a value of the channel), the
 * pair is (pivot, mean - pivot): x - pivot is exact or nearly, and the small remainder keeps
 * its precision, so y stays at fp32 rounding of x - mean where a float mean of 10000 alone is
 * off by 5e-4. Otherwise (mean, 0), one rounding fewer. Every caller gets the same answer
 * from the same two floats. */
inline void clbn_mean_pair(float pivot, float mean_s, float *hi, float *lo) {
    float mean = pivot + mean_s;
    int pair = fabs(mean_s) < fabs(mean);
    *hi = pair ? pivot : mean;
    *lo = pair ? mean_s : 0.0f;
}

/* Writes the finished statistics of channel c: saved mean and invstd, the running averages
 * (read from rm_in/rv_in, written to rm_out/rv_out, so a failed call leaves the state's current
 * buffers untouched), and the mean pair in shift[2c], shift[2c+1] for the normalization.
 * mean_s and M2 are of x - pivot. Returns invstd. */
inline float clbn_finish_channel(ulong c, ulong n, float pivot, float mean_s, float M2, float eps,
                                 __global float *saved_mean, ulong saved_mean_off,
                                 __global float *saved_invstd, ulong saved_invstd_off, int track,
                                 float factor, __global const float *rm_in,
                                 __global const float *rv_in, __global float *rm_out,
                                 __global float *rv_out, __global float *shift) {
    float mean = pivot + mean_s;
    float var = M2 / (float)n;
    if (var < 0.0f)
        var = 0.0f;
    float invstd = 1.0f / sqrt(var + eps);
    saved_mean[saved_mean_off + c] = mean;
    saved_invstd[saved_invstd_off + c] = invstd;
    float hi, lo;
    clbn_mean_pair(pivot, mean_s, &hi, &lo);
    shift[2 * c] = hi;
    shift[2 * c + 1] = lo;
    if (track) {
        float unbiased = n > 1 ? M2 / (float)(n - 1) : 0.0f;
        rm_out[c] = (1.0f - factor) * rm_in[c] + factor * mean;
        rv_out[c] = (1.0f - factor) * rv_in[c] + factor * unbiased;
    }
    return invstd;
}
