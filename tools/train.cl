/* train.cl - the training demo's own kernels (the `clbn train` tool, not the library): batch
 * gathering, bias and activation, softmax cross-entropy, column sums, the SGD update and
 * counting correct predictions. Rows are row-major: a row of `cols` floats per sample. The
 * kernels are small and simple on purpose; the demo's time goes to CLBlast and clbn. */

#define TN_ACT_NONE 0
#define TN_ACT_RELU 1
#define TN_ACT_SIGMOID 2

/* out[r, :] = data[order[first + r], :] and labels likewise; range: B x dim. */
__kernel void tn_gather(__global const float *data, __global const int *labels,
                        __global const int *order, ulong first, ulong dim, __global float *out,
                        __global int *out_labels) {
    const ulong r = get_global_id(1), j = get_global_id(0);
    if (j >= dim)
        return;
    const ulong src = (ulong)order[first + r];
    out[r * dim + j] = data[src * dim + j];
    if (j == 0)
        out_labels[r] = labels[src];
}

/* a = act(z + b) per element of a rows x cols matrix (a may be z); range: rows*cols. */
__kernel void tn_bias_act(__global const float *z, __global const float *b, __global float *a,
                          ulong cols, int act) {
    const ulong i = get_global_id(0);
    const float v = z[i] + b[i % cols];
    a[i] = act == TN_ACT_RELU ? fmax(v, 0.0f) : act == TN_ACT_SIGMOID ? 1.0f / (1.0f + exp(-v)) : v;
}

/* dz = da * act'(.), the derivative from the layer's output a; range: rows*cols. */
__kernel void tn_act_backward(__global const float *da, __global const float *a,
                              __global float *dz, int act) {
    const ulong i = get_global_id(0);
    const float y = a[i];
    dz[i] = act == TN_ACT_RELU ? (y > 0.0f ? da[i] : 0.0f) : da[i] * y * (1.0f - y);
}

/* db[j] = sum over the rows of dz[:, j]; range: cols. */
__kernel void tn_colsum(__global const float *dz, ulong rows, ulong cols, __global float *db) {
    const ulong j = get_global_id(0);
    float s = 0.0f;
    for (ulong r = 0; r < rows; r++)
        s += dz[r * cols + j];
    db[j] = s;
}

/* Softmax cross-entropy of one row of logits: loss[r] = -log softmax(z)[label], and
 * dz[r, :] = (softmax(z) - onehot(label)) / rows, the gradient of the batch's mean loss.
 * Range: rows. */
__kernel void tn_softmax_xent(__global const float *z, __global const int *labels, ulong cols,
                              float inv_rows, __global float *dz, __global float *loss) {
    const ulong r = get_global_id(0);
    __global const float *zr = z + r * cols;
    float m = zr[0];
    for (ulong j = 1; j < cols; j++)
        m = fmax(m, zr[j]);
    float s = 0.0f;
    for (ulong j = 0; j < cols; j++)
        s += exp(zr[j] - m);
    const int lab = labels[r];
    loss[r] = log(s) + m - zr[lab];
    for (ulong j = 0; j < cols; j++)
        dz[r * cols + j] = (exp(zr[j] - m) / s - (j == (ulong)lab ? 1.0f : 0.0f)) * inv_rows;
}

/* p -= lr * g; range: the parameter's size. */
__kernel void tn_sgd(__global float *p, __global const float *g, float lr) {
    const ulong i = get_global_id(0);
    p[i] -= lr * g[i];
}

/* correct[0] += the rows whose largest logit is labels[lab_off + row]; range: rows (atomics:
 * counting only). */
__kernel void tn_count_correct(__global const float *z, __global const int *labels, ulong lab_off,
                               ulong cols, __global int *correct) {
    const ulong r = get_global_id(0);
    __global const float *zr = z + r * cols;
    ulong best = 0;
    for (ulong j = 1; j < cols; j++)
        if (zr[j] > zr[best])
            best = j;
    if (best == (ulong)labels[lab_off + r])
        atomic_inc(correct);
}

/* argmax of row 0, for one prediction; range: 1. */
__kernel void tn_argmax(__global const float *z, ulong cols, __global int *cls) {
    ulong best = 0;
    for (ulong j = 1; j < cols; j++)
        if (z[j] > z[best])
            best = j;
    cls[0] = (int)best;
}
