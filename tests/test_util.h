/* Shared helpers of the cmocka tests: device set-up (exit 77 when there is none), buffers,
 * deterministic random data and tolerance checks. */
#ifndef CLBN_TEST_UTIL_H
#define CLBN_TEST_UTIL_H

#include "check.h"

#include <clbn.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/* A context on $CLBN_DEVICE (default device otherwise). When no OpenCL device exists the
 * process prints why and exits 77 (ctest's skip code). */
clbn_context *tu_context(void);
/* The same device with a GPU's limits imposed: work-group 64, 32 KiB local memory, vector
 * width 4, 16 compute units, 4 MiB cache, planned as a GPU. */
clbn_context *tu_context_gpu_limits(void);

/* Group fixtures: tu_ctx is a context on the default device for the whole cmocka group. */
extern clbn_context *tu_ctx;
int tu_group_setup(void **state);
int tu_group_teardown(void **state);

/* Host arrays of n values (at least 1), failing the test when memory runs out. */
float *tu_floats(size_t n);
double *tu_doubles(size_t n);

/* Buffers (CL_MEM_READ_WRITE) on the context; n floats. */
cl_mem tu_buffer(clbn_context *ctx, size_t n);
cl_mem tu_buffer_from(clbn_context *ctx, const float *host, size_t n);
void tu_write(clbn_context *ctx, cl_mem buf, size_t offset, const float *host, size_t n);
void tu_read(clbn_context *ctx, cl_mem buf, size_t offset, float *host, size_t n);
void tu_finish(clbn_context *ctx);

/* n values of N(mean, stddev^2) from bench/check.h's generator. */
void tu_fill_normal(ref_rng *r, float *v, size_t n, double mean, double stddev);

/* Runs a case (bench/check.h) on ctx and fails the test on its first violation. When plan is
 * not NULL, it receives clbn_bn_query_plan's answer for the case's op and shape. */
void ref_check_case(clbn_context *ctx, const ref_case *k, const ref_tolerances *tol,
                    clbn_plan *plan);

/* Worst |got - ref| and the check |got - ref| <= atol + rtol*|ref| for every element: on the
 * first violation the test fails with a message naming `what`, the index, both values. */
double tu_check_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                      double rtol);

/* The element count of a shape (n*c*h*w, with h = w = 1 for NC). */
size_t tu_shape_elems(const clbn_shape *s);

/* Fails the test with clbn's status name and detail message unless st == CLBN_SUCCESS. */
#define TU_OK(call)                                                                                \
    do {                                                                                           \
        clbn_status tu_st_ = (call);                                                               \
        if (tu_st_ != CLBN_SUCCESS)                                                                \
            fail_msg("%s failed: %s: %s", #call, clbn_status_name(tu_st_),                         \
                     clbn_last_error_message());                                                   \
    } while (0)

#endif
