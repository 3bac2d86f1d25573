/* train_ref.h - the double-precision plain-C reference of the training demo's network
 * (tools/train_net.h), for tests/test_train.c. No OpenCL: the same math, one sample row at a
 * time, every sum in double.
 *
 * Layers l = 1..layers; a_0 = x (B x sizes[0], row-major); W_l is sizes[l-1] x sizes[l],
 * row-major. A hidden layer (l < layers) computes
 *   batch norm on:  z = a_prev W;     a = act(gamma * (z - mean) * invstd + beta)
 *   batch norm off: z = a_prev W + b; a = act(z)
 * with the batch's mean and biased variance, invstd = 1 / sqrt(var + eps), eps 1e-5. The output
 * layer is z = a_prev W + b (no activation), softmax cross-entropy, loss = the batch's mean. A
 * step is forward, backward of the mean loss and plain SGD (p -= lr * grad) of every W, b,
 * gamma and beta, and the running statistics as clbn's defaults (PyTorch): factor 0.1,
 * running_var from the unbiased variance var * B / (B - 1); initially mean 0, var 1.
 * Biases start at 0, gamma at 1, beta at 0. */
#ifndef CLBN_TRAIN_REF_H
#define CLBN_TRAIN_REF_H

#include <stddef.h>
#include <stdint.h>

#define REF_NET_MAX_LAYERS 8

/* The activations, with clbn_activation's values (CLBN_ACTIVATION_RELU, _SIGMOID). */
#define REF_ACT_RELU 1
#define REF_ACT_SIGMOID 2

typedef struct ref_net_config {
    int layers; /* weight matrices, 2..REF_NET_MAX_LAYERS */
    int sizes[REF_NET_MAX_LAYERS + 1];
    int bn;  /* nonzero: batch norm after each hidden layer's product */
    int act; /* REF_ACT_RELU or REF_ACT_SIGMOID */
    double lr;
} ref_net_config;

/* What ref_net_param exposes, in tn_param's order (tools/train_net.h) so a tn_param converts. */
typedef enum ref_param {
    REF_W = 0,
    REF_B,
    REF_GAMMA,
    REF_BETA,
    REF_DW,
    REF_DB,
    REF_DGAMMA,
    REF_DBETA,
    REF_RUN_MEAN,
    REF_RUN_VAR,
    REF_PARAM_COUNT
} ref_param;

typedef struct ref_net {
    ref_net_config cfg;
    double eps, factor;
    /* index l = 1..layers; NULL where the layer has no such parameter (b: output layer and,
     * without batch norm, every layer; gamma, beta, their gradients and the running statistics:
     * hidden layers of a batch-norm network) */
    double *p[REF_PARAM_COUNT][REF_NET_MAX_LAYERS + 1];
} ref_net;

/* W_l from weights[l-1] (sizes[l-1] * sizes[l] floats each). 0, or 1 on a bad config or when
 * memory runs out (then nothing needs freeing). */
int ref_net_init(ref_net *r, const ref_net_config *cfg, const float *const *weights);
void ref_net_free(ref_net *r);

/* One parameter of layer l (1-based) and its element count, or NULL where there is none. */
double *ref_net_param(ref_net *r, ref_param what, int layer, size_t *count);

/* Forward and backward of the batch (B rows of sizes[0] floats, labels in [0, sizes[layers])):
 * the mean loss and the gradients (kept in the REF_D* parameters); neither the parameters nor
 * the running statistics change. 0, or 1 (bad batch, no memory). */
int ref_net_gradients(ref_net *r, const float *x, const int32_t *labels, int B, double *loss);

/* ref_net_gradients, then the running statistics' update and the SGD update. */
int ref_net_step(ref_net *r, const float *x, const int32_t *labels, int B, double *loss);

/* The mean loss of the batch in training mode (the batch's statistics), changing nothing: for
 * finite differences. Returns 0 or 1. */
int ref_net_loss(const ref_net *r, const float *x, const int32_t *labels, int B, double *loss);

/* The logits (B x sizes[layers]) of an inference: batch norm with the running statistics, or
 * with batch_stats nonzero the batch's own (for B = 1 a single row's: every xhat is 0).
 * Returns 0 or 1. */
int ref_net_logits(const ref_net *r, const float *x, int B, int batch_stats, double *logits);

/* The smallest |input of a ReLU| of the training forward of the batch (an infinity for sigmoid
 * networks): how far the batch stays from the activation's kink, for finite differences.
 * Negative when memory runs out. */
double ref_net_kink_margin(const ref_net *r, const float *x, int B);

#endif
