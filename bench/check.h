/* check.h — one clbn operation run on generated data and compared with the double-precision
 * reference: the harness behind the cmocka tests (tests/test_util.h's ref_check_case) and
 * `clbn validate`. It reports instead of asserting, and keeps the outputs so that two devices
 * can be compared with each other and results hashed. */
#ifndef CLBN_BENCH_CHECK_H
#define CLBN_BENCH_CHECK_H

#include <clbn.h>
#include <stddef.h>
#include <stdint.h>

/* Tolerances, |got - ref| <= atol + rtol*|ref|, measured on PoCL; the table with the reasons
 * is at the top of tests/test_ops.c. */
typedef struct ref_tolerance {
    double atol, rtol;
} ref_tolerance;

typedef struct ref_tolerances {
    ref_tolerance mean, invstd, y, running_mean, running_var, dx;
    /* y's atol grows per channel by this times |gamma|·invstd·|mean|: the fp32 rounding of the
     * mean, carried through x − mean and amplified by invstd */
    double y_mean_factor;
    /* dgamma and dbeta are sums of m terms: atol is this factor times Σ|term| of the channel,
     * so a sum that cancels to near zero is held to the accuracy of its terms. */
    double sum_atol_factor, sum_rtol;
} ref_tolerances;

extern const ref_tolerances ref_default_tolerances;

typedef struct ref_case {
    clbn_op op;
    clbn_shape shape;
    uint32_t flags; /* clbn_bn_options.flags */
    clbn_activation activation;
    float factor;             /* 0: 0.1 */
    float eps;                /* 0: 1e-5 */
    uint64_t batches_tracked; /* t before the call (cumulative mode) */
    uint64_t offset;          /* nonzero: every buffer is used at an offset derived from it */
    uint64_t seed;
    double data_mean; /* x = data_mean + per-channel mean + N(0, std) */
} ref_case;

/* Writes a name such as "fwd_train NHWC 3x5x7x11 scale+shift relu exp(f=0.1)" into buf. */
void ref_case_name(const ref_case *k, char *buf, size_t size);
const char *ref_op_name(clbn_op op);
const char *ref_layout_name(clbn_layout layout);
const char *ref_activation_name(clbn_activation activation);

/* What one run of a case gave. */
typedef struct ref_outcome {
    int failed;        /* a value out of tolerance, a stray write, a changed input, a failed call */
    char message[768]; /* the first failure, naming the output, index and both values */
    clbn_status status; /* of the failed clbn call, else CLBN_SUCCESS */
    clbn_plan plan;     /* clbn_bn_query_plan's answer for the case */
    /* The op's outputs, concatenated in a fixed order (forward train: y, saved mean, saved
     * invstd, running mean, running var; other forwards: y; backward: dx, dgamma, dbeta),
     * and per value its allowance atol + rtol*|ref| against the reference, so two devices'
     * outputs can be held to twice it. */
    float *out;
    double *allow;
    size_t out_n;
    double worst;   /* the largest |got - ref| / allowance over the checked values */
    double max_err; /* the largest |got - ref| itself */
} ref_outcome;

/* Runs the case on ctx and compares every output with the reference (tol NULL: defaults). */
void ref_run_case(clbn_context *ctx, const ref_case *k, const ref_tolerances *tol,
                  ref_outcome *outcome);
void ref_outcome_free(ref_outcome *outcome);

/* Deterministic pseudo-random numbers (xorshift64*, Box-Muller). */
typedef struct ref_rng {
    uint64_t s;
} ref_rng;
void ref_rng_seed(ref_rng *r, uint64_t seed);
double ref_uniform(ref_rng *r); /* [0, 1) */
double ref_normal(ref_rng *r);  /* N(0, 1) */

#endif
