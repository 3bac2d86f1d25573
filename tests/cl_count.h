/* cl_count.h — counts the OpenCL objects the library holds, through its table of OpenCL entry
 * points (clbn_cl, host/internal.h): every create and retain that succeeds adds one, every
 * release that succeeds takes one away. Equal counts before and after a call: it leaked
 * nothing. For tests and bench programs linked with the static library. */
#ifndef CLBN_CL_COUNT_H
#define CLBN_CL_COUNT_H

#include "internal.h"

#include <stddef.h>

typedef enum cl_count_kind {
    CL_COUNT_CONTEXT,
    CL_COUNT_QUEUE,
    CL_COUNT_MEM,
    CL_COUNT_PROGRAM,
    CL_COUNT_KERNEL,
    CL_COUNT_EVENT,
    CL_COUNT_KINDS
} cl_count_kind;

typedef struct cl_counts {
    long live[CL_COUNT_KINDS];
} cl_counts;

/* A table that counts and forwards every call to *below (copied; clbn_cl_real for the driver
 * itself). Install it with clbn_cl = *cl_count_table(&clbn_cl_real), or put it under another
 * wrapper layer. */
const clbn_cl_api *cl_count_table(const clbn_cl_api *below);
/* The live references counted so far, by kind. */
void cl_count_get(cl_counts *counts);
/* Nonzero when every kind is equal. */
int cl_count_equal(const cl_counts *a, const cl_counts *b);
/* "contexts 1, queues 1, mems 8, programs 1, kernels 12, events 0" */
const char *cl_count_format(const cl_counts *counts, char *buf, size_t size);

#endif
