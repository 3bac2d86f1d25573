/* train_net.h - the training demo's network on one OpenCL device: dense layers through CLBlast,
 * batch norm through clbn, the demo's own kernels (tools/train.cl) for the rest. Part of the
 * `clbn` tool, never of the library.
 *
 * The network: sizes[0] inputs, hidden layers sizes[1..layers-1], sizes[layers] outputs
 * (784-100-100-100-10: layers = 4). A hidden layer l (1..layers-1) computes
 *   with batch norm:    z = a_prev W_l;       a = act(gamma * (z - mean) * invstd + beta)
 *   without batch norm: z = a_prev W_l + b_l; a = act(z)
 * and the output layer z = a_prev W_L + b_L, softmax cross-entropy, loss = the batch's mean.
 * W_l is row-major sizes[l-1] x sizes[l] (a row of inputs times W gives a row of outputs).
 * A step runs forward, loss, backward and the plain SGD update (param -= lr * grad of the mean
 * loss) of every W, b, gamma and beta, all enqueued on the context's queue, nothing read back.
 * Batch norm uses clbn's defaults: eps 1e-5, factor 0.1, unbiased running variance, the
 * activation fused into clbn's forward and backward. */
#ifndef CLBN_TRAIN_NET_H
#define CLBN_TRAIN_NET_H

#include <clbn.h>
#include <stddef.h>
#include <stdint.h>

#define TN_MAX_LAYERS 8

typedef struct tn_config {
    int layers;                   /* weight matrices, 2..TN_MAX_LAYERS */
    int sizes[TN_MAX_LAYERS + 1]; /* sizes[0] inputs ... sizes[layers] classes */
    int bn;                       /* nonzero: batch norm after each hidden layer's product */
    clbn_activation act;          /* CLBN_ACTIVATION_RELU or CLBN_ACTIVATION_SIGMOID */
    float lr;
    int max_batch; /* the largest batch a step or an evaluation chunk uses */
    int profile;   /* nonzero: the queue has profiling on; time clbn's and CLBlast's calls */
} tn_config;

/* What tn_read/tn_write move: per layer l = 1..layers (gamma/beta and their gradients and the
 * running statistics only for hidden layers of a batch-norm network; b only where it exists). */
typedef enum tn_param {
    TN_W = 0,     /* sizes[l-1] * sizes[l] floats */
    TN_B,         /* sizes[l] */
    TN_GAMMA,     /* sizes[l] */
    TN_BETA,      /* sizes[l] */
    TN_DW,        /* the last step's gradient of W */
    TN_DB,        /* ... of b */
    TN_DGAMMA,    /* ... of gamma */
    TN_DBETA,     /* ... of beta */
    TN_RUN_MEAN,  /* clbn's running mean */
    TN_RUN_VAR,   /* clbn's running variance (unbiased) */
    TN_PARAM_COUNT
} tn_param;

typedef struct tn_net tn_net;

/* Timing of the profiled calls since the last tn_timing_reset (needs cfg.profile); drained by
 * tn_timing_read, which waits for the queue. */
typedef struct tn_timing {
    double bn_s;     /* device time of clbn's calls: marker before -> the call's event */
    double gemm_s;   /* device time of CLBlast's calls (their events) */
    double other_s;  /* the demo's kernels (their events) */
    uint64_t steps;  /* steps timed */
} tn_timing;

/* Creates a network on ctx (whose queue must be in order; with cfg.profile, profiling on).
 * weights: layers host arrays, W_l as above; biases start at 0, gamma 1, beta 0.
 * Returns 0, or 1 with a message in err (OpenCL/CLBlast failure or bad config). */
int tn_create(clbn_context *ctx, const tn_config *cfg, const float *const *weights, tn_net **net,
              char *err, size_t cap);
void tn_release(tn_net *net); /* accepts NULL */
const tn_config *tn_get_config(const tn_net *net);

/* The layer's batch-norm state object (hidden layers of a batch-norm network), else NULL. */
clbn_bn *tn_get_bn(tn_net *net, int layer);

/* Blocking copies of one parameter of layer l (1-based); count must be its size. 0 or 1. */
int tn_read(tn_net *net, tn_param what, int layer, float *host, size_t count, char *err,
            size_t cap);
int tn_write(tn_net *net, tn_param what, int layer, const float *host, size_t count, char *err,
             size_t cap);

/* A data set resident on the device: count rows of dim floats, int32 labels in [0, classes). */
typedef struct tn_data tn_data;
int tn_data_create(clbn_context *ctx, const float *x, const int32_t *labels, size_t count,
                   size_t dim, tn_data **data, char *err, size_t cap);
void tn_data_release(tn_data *data);
size_t tn_data_count(const tn_data *data);

/* Uploads the row indices (into data) that tn_step_indexed reads batches from. */
int tn_set_order(tn_net *net, const int32_t *order, size_t count, char *err, size_t cap);

/* One training step on the batch rows order[first .. first+B-1] of data (enqueued only). */
int tn_step_indexed(tn_net *net, const tn_data *data, size_t first, int B, char *err, size_t cap);

/* One training step on a batch from host memory (B rows of sizes[0] floats, B labels). */
int tn_step_host(tn_net *net, const float *x, const int32_t *labels, int B, char *err,
                 size_t cap);

/* The mean loss of the last step (blocking). */
int tn_last_loss(tn_net *net, double *loss, char *err, size_t cap);

/* Counts the rows first .. first+count-1 of data the network classifies correctly, in chunks
 * of at most max_batch rows, with batch norm's running statistics (inference). Blocking. */
int tn_evaluate(tn_net *net, const tn_data *data, size_t first, size_t count, size_t *correct,
                char *err, size_t cap);

/* The class predicted for one row of data alone (a batch of 1). batch_stats nonzero: batch norm
 * normalizes with that one row's own statistics (tracking off), else the running ones. */
int tn_predict_one(tn_net *net, const tn_data *data, size_t row, int batch_stats, int *cls,
                   char *err, size_t cap);

void tn_timing_reset(tn_net *net);
int tn_timing_read(tn_net *net, tn_timing *t, char *err, size_t cap);

#endif
