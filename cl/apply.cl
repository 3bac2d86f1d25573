/* apply.cl - the elementwise normalization y = act(gamma * (x - mean) * invstd + beta), with the
 * statistics either saved by a training forward (mean, invstd) or running (mean, var). With
 * use_pair the mean is subtracted as the pair (pivot, mean_s) the statistics kernels left in
 * shift (see clbn_finish_channel). */

/* NCHW: range dim0 = items sharing one row of HW values, dim1 = items over the N*C rows, each
 * taking rows get_global_id(1), + get_global_size(1), ... (the host keeps dimension 1 within
 * the device's group ceiling, 65,535 on NVIDIA, so a large N*C loops here instead). */
__kernel void clbn_apply_nchw(__global const float *x, ulong x_off, __global float *y, ulong y_off,
                              ulong N, ulong C, ulong HW, int blocked, __global const float *mean,
                              ulong mean_off, __global const float *shift, int use_pair,
                              __global const float *stat, ulong stat_off, int stat_is_var,
                              float eps, __global const float *gamma, __global const float *beta,
                              int use_scale, int use_shift, int act) {
    ulong start, stop, step;
    clbn_item_range(0, HW / CLBN_VEC, get_global_id(0), get_global_size(0), blocked, &start, &stop,
                    &step);
    for (ulong rr = get_global_id(1); rr < N * C; rr += get_global_size(1)) {
        const ulong n = rr / C, c = rr - n * C; /* once per row, not per element */
        const float hi = use_pair ? shift[2 * c] : mean[mean_off + c];
        const float lo = use_pair ? shift[2 * c + 1] : 0.0f;
        const float a =
            (use_scale ? gamma[c] : 1.0f) * clbn_invstd_of(stat[stat_off + c], stat_is_var, eps);
        const float b = use_shift ? beta[c] : 0.0f;
        const ulong row = rr * HW;
        for (ulong v = start; v < stop; v += step) {
            const ulong o = row + v * CLBN_VEC;
            VSTORE_NT(clbn_normalize(VLOAD(x + x_off + o), (vfloat)(hi), (vfloat)(lo), (vfloat)(a),
                                     (vfloat)(b), act),
                      y + y_off + o);
        }
    }
}

/* NHWC / NC: range dim0 = items of CLBN_CPI channel vectors, dim1 = items sharing the
 * R = N*H*W rows. */
__kernel void clbn_apply_nhwc(__global const float *x, ulong x_off, __global float *y, ulong y_off,
                              ulong R, ulong C, int blocked, __global const float *mean,
                              ulong mean_off, __global const float *shift, int use_pair,
                              __global const float *stat, ulong stat_off, int stat_is_var,
                              float eps, __global const float *gamma, __global const float *beta,
                              int use_scale, int use_shift, int act) {
    const ulong cv = C / CLBN_VEC, ci0 = get_global_id(0) * CLBN_CPI;
    if (ci0 >= cv)
        return;
    const uint nk = (uint)min((ulong)CLBN_CPI, cv - ci0);
    vfloat hi[CLBN_CPI], lo[CLBN_CPI], a[CLBN_CPI], b[CLBN_CPI];
    CLBN_UNROLL
    for (uint k = 0; k < CLBN_CPI; k++) {
        const ulong c0 = (ci0 + (k < nk ? k : 0)) * CLBN_VEC; /* a dead slot repeats the first */
        float th[CLBN_VEC], tl[CLBN_VEC];
        for (int j = 0; j < CLBN_VEC; j++) {
            th[j] = use_pair ? shift[2 * (c0 + j)] : mean[mean_off + c0 + j];
            tl[j] = use_pair ? shift[2 * (c0 + j) + 1] : 0.0f;
        }
        hi[k] = VLOAD(th);
        lo[k] = VLOAD(tl);
        vfloat s = VLOAD(stat + stat_off + c0);
        vfloat inv = stat_is_var ? (vfloat)(1.0f) / sqrt(s + eps) : s;
        a[k] = (use_scale ? VLOAD(gamma + c0) : (vfloat)(1.0f)) * inv;
        b[k] = use_shift ? VLOAD(beta + c0) : (vfloat)(0.0f);
    }
    const __global float *xc = x + x_off + ci0 * CLBN_VEC;
    __global float *yc = y + y_off + ci0 * CLBN_VEC;
    ulong start, stop, step;
    clbn_item_range(0, R, get_global_id(1), get_global_size(1), blocked, &start, &stop, &step);
    for (ulong r = start; r < stop; r += step) {
        CLBN_UNROLL
        for (uint k = 0; k < CLBN_CPI; k++)
            if (k < nk) {
                const ulong o = r * C + k * CLBN_VEC;
                VSTORE_NT(clbn_normalize(VLOAD(xc + o), hi[k], lo[k], a[k], b[k], act), yc + o);
            }
    }
}
