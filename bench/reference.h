/* The double-precision host reference of DESIGN.md's batch-normalization formulas, shared by the
 * tests, `clbn bench` and `clbn validate`. Only libm. */
#ifndef CLBN_BENCH_REFERENCE_H
#define CLBN_BENCH_REFERENCE_H

#include <clbn.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------
 * Layout indexing. The reduction axes are N, H, W; one set of statistics per channel.
 * For NC, h and w are taken as 1 whatever the shape holds.
 * ------------------------------------------------------------------------------------------ */
size_t ref_elems(const clbn_shape *s);
/* m, the number of values of one channel: N*H*W. */
size_t ref_count(const clbn_shape *s);
/* H*W (1 for NC). */
size_t ref_spatial(const clbn_shape *s);
/* The element index of (n, c, hw) where hw = h*W + w is the spatial position. */
size_t ref_index(const clbn_shape *s, size_t n, size_t c, size_t hw);
/* The channel of element i. */
size_t ref_channel_of(const clbn_shape *s, size_t i);

/* ------------------------------------------------------------------------------------------
 * Parameters. gamma and beta hold C values; NULL (or use_scale/use_shift = 0) means the
 * identity (gamma = 1, beta = 0).
 * ------------------------------------------------------------------------------------------ */
typedef struct ref_params {
    double eps;
    int use_scale;
    int use_shift;
    clbn_activation activation;
    const double *gamma;
    const double *beta;
} ref_params;

double ref_gamma(const ref_params *p, size_t c);
double ref_beta(const ref_params *p, size_t c);
/* act(z). */
double ref_activate(clbn_activation a, double z);
/* dz from dy and the forward's output y: ReLU dy*[y > 0], sigmoid dy*y*(1-y). */
double ref_activation_grad(clbn_activation a, double y, double dy);

/* Per-channel mean and biased variance (two-pass, in double). */
void ref_batch_stats(const clbn_shape *s, const double *x, double *mean, double *var);
/* invstd = 1/sqrt(var + eps), C values. */
void ref_invstd(size_t channels, const double *var, double eps, double *invstd);
/* y = act(gamma*(x - mean)*invstd + beta) with the given per-channel statistics. */
void ref_normalize(const clbn_shape *s, const ref_params *p, const double *x, const double *mean,
                   const double *invstd, double *y);
/* Training forward with batch statistics. mean, invstd (saved statistics) and var (biased) may
 * be NULL when not wanted. */
void ref_forward_train(const clbn_shape *s, const ref_params *p, const double *x, double *y,
                       double *mean, double *invstd, double *var);
/* Running statistics update with weight f of the new batch (m values per channel):
 * rm <- (1-f) rm + f mean, rv <- (1-f) rv + f var m/(m-1). */
void ref_running_update(size_t channels, const double *mean, const double *var, size_t m, double f,
                        double *running_mean, double *running_var);
/* The cumulative-average factor before t is advanced: 1/(1+t). */
double ref_cumulative_factor(uint64_t t);
/* Inference forward with running statistics. */
void ref_forward_infer(const clbn_shape *s, const ref_params *p, const double *x,
                       const double *running_mean, const double *running_var, double *y);
/* Backward, batch mode, with the saved statistics of the forward. y is the forward's output
 * (used only with an activation; may be NULL without one). dgamma = Σ dz·x̂ and dbeta = Σ dz are
 * written whatever use_scale/use_shift say; dx uses gamma = 1 when scaling is off. */
void ref_backward(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                  const double *dy, const double *mean, const double *invstd, double *dx,
                  double *dgamma, double *dbeta);
/* Backward, frozen mode: x̂ from the running statistics, dx = gamma*invstd_running*dz. */
void ref_backward_frozen(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                         const double *dy, const double *running_mean, const double *running_var,
                         double *dx, double *dgamma, double *dbeta);
/* dz of element i: dy, or through the activation from the forward's output y. */
double ref_dz(const ref_params *p, const double *y, const double *dy, size_t i);
/* Per channel, the sums of |dz*xhat| and |dz|: the scale of dgamma's and dbeta's rounding. */
void ref_sum_magnitudes(const clbn_shape *s, const ref_params *p, const double *x, const double *y,
                        const double *dy, const double *mean, const double *invstd,
                        double *abs_dgamma, double *abs_dbeta);
/* Folding: a = gamma/sqrt(rv + eps), b = beta - a*rm. */
void ref_fold(size_t channels, const ref_params *p, const double *running_mean,
              const double *running_var, double *a, double *b);

/* Conversions (malloc'd; the caller frees). */
double *ref_to_double(const float *v, size_t n);

#endif
