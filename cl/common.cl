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

/* Streaming stores, for outputs no later step of the kernel reads: where the host asks for
 * them (-DCLBN_STREAM_STORES: CPU devices) and the compiler has clang's non-temporal store,
 * a store skips the cache (it does not read the destination line first, and does not evict
 * the input that a single-read pass is about to read again), on an address aligned to the
 * vector; otherwise, and on every other device, a plain store. */
#if defined(CLBN_STREAM_STORES) && defined(__has_builtin)
#if __has_builtin(__builtin_nontemporal_store)
#define CLBN_HAVE_NT 1
#endif
#endif
#ifdef CLBN_HAVE_NT
#define VSTORE_NT(v, p)                                                                            \
    do {                                                                                           \
        __global float *p_ = (p);                                                                  \
        if (((ulong)p_ & (sizeof(vfloat) - 1)) == 0)                                               \
            __builtin_nontemporal_store((v), (__global vfloat *)p_);                               \
        else                                                                                       \
            VSTORE((v), p_);                                                                       \
    } while (0)
#else
#define VSTORE_NT(v, p) VSTORE((v), (p))
#endif

/* Prefetch for CPU devices (the host's -DCLBN_STREAM_STORES, clang's builtin): a kernel that
 * reads a channel's rows one after another (each H*W long, C*H*W apart) asks for the next row's
 * line while it reads this one's, so that every row does not start with a cold hardware
 * prefetcher (measured on PoCL, AMD Zen: 42 GB/s without, 70 with, reading shape
 * 32,64,56,56 a channel at a time). OpenCL's own prefetch() is a no-op there; on every other
 * device this is nothing. */
#if defined(CLBN_STREAM_STORES) && defined(__has_builtin)
#if __has_builtin(__builtin_prefetch)
#define CLBN_PREFETCH(p) __builtin_prefetch((const __global void *)(p))
#endif
#endif
#ifndef CLBN_PREFETCH
#define CLBN_PREFETCH(p) ((void)0)
#endif

/* Loops over a row's channel vectors are unrolled: over CLBN_CPI vectors (a constant, so
 * their arrays become registers: PoCL kept them on the stack, a load and a store per vector
 * and row, and read NHWC at half the speed it reads memory), and over a tile's runtime count
 * in the stack versions of rows.cl (partly unrolled, the arrays stay on the stack). Compilers
 * that do not know the pragma ignore it. */
#define CLBN_UNROLL _Pragma("unroll")

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
 * GPU) or blocked (a contiguous run per item: sequential streams on a CPU). Requires
 * begin <= end (every caller's range is a min of its bounds): a guarded subtraction here
 * became llvm.usub.sat, which Oclgrind cannot run. */
inline void clbn_item_range(ulong begin, ulong end, uint item, uint size, int blocked, ulong *start,
                            ulong *stop, ulong *step) {
    if (blocked) {
        ulong len = end - begin;
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

/* The channel's pivot: the mean of its first min(count, CLBN_PIVOT_VALUES) values p[0],
 * p[step], ... in fp32. It lies within the channel's range, so x - pivot is exact or nearly
 * (exact for 10000 + N(0,1)), and it sits closer to the channel's mean than a single value
 * does, which keeps the shifted sums small (see clbn_moments). Every kernel of a call computes
 * it the same way from the same values; clbn_pivot_v does so for CLBN_VEC channels at once. */
#define CLBN_PIVOT_VALUES 8
inline float clbn_pivot(const __global float *p, ulong count, ulong step) {
    const uint k = (uint)min(count, (ulong)CLBN_PIVOT_VALUES);
    float s = 0.0f;
    for (uint i = 0; i < k; i++)
        s += p[i * step];
    return s / (float)k;
}
inline vfloat clbn_pivot_v(const __global float *p, ulong count, ulong step) {
    const uint k = (uint)min(count, (ulong)CLBN_PIVOT_VALUES);
    vfloat s = (vfloat)(0.0f);
    for (uint i = 0; i < k; i++)
        s += VLOAD(p + i * step);
    return s / (vfloat)((float)k);
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
 * pivot is a value of the channel. Runs are folded by Chan's merge into a block of up to
 * CLBN_RUN runs, blocks into the total, so no sequential merge chain grows past CLBN_RUN
 * terms until a lane has seen 2^18 values (one lane of 100352 values folded run by run into
 * one total lost 2e-6 of the variance; Chan, Golub and LeVeque 1979 give the merge). Every lane of
 * a vector has seen the same number of values, so counts are scalars shared by the lanes.
 * CLBN_MOMENTS(name, type) defines the accumulator for a vector type (the kernels' lanes) and for
 * float (the tails of rows whose length is not a multiple of the vector width). */
#define CLBN_MOMENTS(NAME, T)                                                                      \
    typedef struct {                                                                               \
        uint run_n, blk_runs;                                                                      \
        T s, q;                                                                                    \
        ulong blk_n, tot_n;                                                                        \
        T blk_mean, blk_m2, tot_mean, tot_m2;                                                      \
    } NAME;                                                                                        \
    inline void NAME##_init(NAME *w) {                                                             \
        w->run_n = w->blk_runs = 0;                                                                \
        w->s = w->q = w->blk_mean = w->blk_m2 = w->tot_mean = w->tot_m2 = (T)(0.0f);               \
        w->blk_n = w->tot_n = 0;                                                                   \
    }                                                                                              \
    /* Chan's merge of (nb, mb, Mb) into (*na, *ma, *Ma), lanes alike. */                          \
    inline void NAME##_chan(ulong *na, T *ma, T *Ma, ulong nb, T mb, T Mb) {                       \
        const ulong n = *na + nb;                                                                  \
        const float wb = (float)nb / (float)n;                                                     \
        const T delta = mb - *ma;                                                                  \
        *ma = *ma + delta * wb;                                                                    \
        *Ma = *Ma + Mb + delta * delta * ((float)*na * wb);                                        \
        *na = n;                                                                                   \
    }                                                                                              \
    inline void NAME##_fold_block(NAME *w) {                                                       \
        if (w->blk_n)                                                                              \
            NAME##_chan(&w->tot_n, &w->tot_mean, &w->tot_m2, w->blk_n, w->blk_mean, w->blk_m2);    \
        w->blk_n = 0;                                                                              \
        w->blk_runs = 0;                                                                           \
        w->blk_mean = w->blk_m2 = (T)(0.0f);                                                       \
    }                                                                                              \
    /* Folds a run of n values per lane with sums s and q kept by the caller (kernels whose        \
     * items hold several accumulators count their runs once for all). */                          \
    inline void NAME##_fold(NAME *w, T s, T q, uint n) {                                           \
        if (n == 0)                                                                                \
            return;                                                                                \
        const T mean = s / (T)((float)n);                                                          \
        const T m2 = fmax(q - s * mean, (T)(0.0f));                                                \
        NAME##_chan(&w->blk_n, &w->blk_mean, &w->blk_m2, n, mean, m2);                             \
        if (++w->blk_runs == CLBN_RUN)                                                             \
            NAME##_fold_block(w);                                                                  \
    }                                                                                              \
    inline void NAME##_fold_run(NAME *w) {                                                         \
        NAME##_fold(w, w->s, w->q, w->run_n);                                                      \
        w->run_n = 0;                                                                              \
        w->s = w->q = (T)(0.0f);                                                                   \
    }                                                                                              \
    /* Folds everything into the total (tot_n, tot_mean, tot_m2). */                               \
    inline void NAME##_flush(NAME *w) {                                                            \
        NAME##_fold_run(w);                                                                        \
        NAME##_fold_block(w);                                                                      \
    }                                                                                              \
    /* d is already shifted by the channel's pivot. */                                             \
    inline void NAME##_add(NAME *w, T d) {                                                         \
        w->s += d;                                                                                 \
        w->q = fma(d, d, w->q);                                                                    \
        if (++w->run_n == CLBN_RUN)                                                                \
            NAME##_fold_run(w);                                                                    \
    }

CLBN_MOMENTS(clbn_moments, vfloat)
CLBN_MOMENTS(clbn_moments1, float)

/* Backward sums of dz and dz*xhat per lane: runs of at most CLBN_RUN values summed plainly,
 * each finished run added into a Kahan-compensated total, so no fp32 running sum grows over
 * more than CLBN_RUN terms (DESIGN.md: the forward's bounded-run rule). The count is shared
 * by the lanes, as in clbn_moments; CLBN_SUMS(name, type) defines them as CLBN_MOMENTS does. */
#define CLBN_SUMS(NAME, T)                                                                         \
    typedef struct {                                                                               \
        uint run_n;                                                                                \
        T ra, rb, ta, tb, ca, cb;                                                                  \
    } NAME;                                                                                        \
    inline void NAME##_init(NAME *s) {                                                             \
        s->run_n = 0;                                                                              \
        s->ra = s->rb = s->ta = s->tb = s->ca = s->cb = (T)(0.0f);                                 \
    }                                                                                              \
    inline void NAME##_kahan(T *t, T *c, T v) {                                                    \
        T y = v - *c;                                                                              \
        T u = *t + y;                                                                              \
        *c = (u - *t) - y;                                                                         \
        *t = u;                                                                                    \
    }                                                                                              \
    /* Adds a finished run's sums (kept by the caller, or ra and rb) into the totals. */           \
    inline void NAME##_fold(NAME *s, T a, T b) {                                                   \
        NAME##_kahan(&s->ta, &s->ca, a);                                                           \
        NAME##_kahan(&s->tb, &s->cb, b);                                                           \
    }                                                                                              \
    inline void NAME##_flush(NAME *s) {                                                            \
        NAME##_fold(s, s->ra, s->rb);                                                              \
        s->ra = s->rb = (T)(0.0f);                                                                 \
        s->run_n = 0;                                                                              \
    }                                                                                              \
    /* Adds one value per lane; the caller counts the run with _step once it has added a value     \
     * to every accumulator that shares the count. */                                              \
    inline void NAME##_add(NAME *s, T a, T b) {                                                    \
        s->ra += a;                                                                                \
        s->rb += b;                                                                                \
    }                                                                                              \
    inline void NAME##_step(NAME *s) {                                                             \
        if (++s->run_n == CLBN_RUN)                                                                \
            NAME##_flush(s);                                                                       \
    }                                                                                              \
    /* The compensated totals, after a final flush. */                                             \
    inline T NAME##_a(NAME *s) {                                                                   \
        return s->ta - s->ca;                                                                      \
    }                                                                                              \
    inline T NAME##_b(NAME *s) {                                                                   \
        return s->tb - s->cb;                                                                      \
    }

CLBN_SUMS(clbn_sums, vfloat)
CLBN_SUMS(clbn_sums1, float)

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

/* The pointwise formulas, one definition each for every kernel (vector lanes and scalar row
 * tails): the activation and its gradient from the forward's output (exact masks, as cuDNN's
 * and oneDNN's workspaces), the normalization y = act(((x - hi) - lo) * a + b) with the mean
 * as a pair (clbn_mean_pair) and a = gamma * invstd, and dx with k1 = sum dz / m and
 * k2 = sum dz*xhat / m (frozen: a * dz). */
#define CLBN_POINTWISE(SUF, T)                                                                     \
    inline T clbn_activate##SUF(T z, int act) {                                                    \
        if (act == CLBN_ACT_RELU)                                                                  \
            return fmax(z, (T)(0.0f));                                                             \
        if (act == CLBN_ACT_SIGMOID)                                                               \
            return (T)(1.0f) / ((T)(1.0f) + exp(-z));                                              \
        return z;                                                                                  \
    }                                                                                              \
    inline T clbn_activation_grad##SUF(T dy, T y, int act) {                                       \
        if (act == CLBN_ACT_RELU)                                                                  \
            return select((T)(0.0f), dy, y > (T)(0.0f));                                           \
        if (act == CLBN_ACT_SIGMOID)                                                               \
            return dy * y * ((T)(1.0f) - y);                                                       \
        return dy;                                                                                 \
    }                                                                                              \
    inline T clbn_normalize##SUF(T x, T hi, T lo, T a, T b, int act) {                             \
        return clbn_activate##SUF(((x - hi) - lo) * a + b, act);                                   \
    }                                                                                              \
    inline T clbn_dx##SUF(T x, T dy, T y, T mu, T inv, T a, T k1, T k2, int frozen, int act) {     \
        T dz = clbn_activation_grad##SUF(dy, y, act);                                              \
        if (frozen)                                                                                \
            return a * dz;                                                                         \
        return a * (dz - k1 - (x - mu) * inv * k2);                                                \
    }

CLBN_POINTWISE(, vfloat)
CLBN_POINTWISE(1, float)

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

/* Arguments shared by the finishing step (saved statistics and running averages). */
#define CLBN_FINISH_ARGS                                                                           \
    float eps, __global float *saved_mean, ulong saved_mean_off, __global float *saved_invstd,     \
        ulong saved_invstd_off, int track, float factor, __global const float *rm_in,              \
        __global const float *rv_in, __global float *rm_out, __global float *rv_out,               \
        __global float *shift

/* The statistics in force and the affine/activation settings. */
#define CLBN_GRAD_ARGS                                                                             \
    __global const float *mean, ulong mean_off, __global const float *stat, ulong stat_off,        \
        int stat_is_var, float eps, __global const float *gamma, int use_scale, int act

/* The dx step's extra arguments: batch (full formula) or frozen, and where dgamma/dbeta go. */
#define CLBN_DX_ARGS                                                                               \
    int frozen, float inv_m, int accumulate, __global float *dgamma, __global float *dbeta

inline void clbn_write_grads(ulong c, float sdz, float sdzx, int accumulate, __global float *dgamma,
                             __global float *dbeta) {
    dbeta[c] = (accumulate ? dbeta[c] : 0.0f) + sdz;
    dgamma[c] = (accumulate ? dgamma[c] : 0.0f) + sdzx;
}
