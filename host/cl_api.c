/* cl_api.c — the one table every OpenCL call of the library goes through, so a test can replace
 * an entry (fail the k-th call, report another device version, count objects). */
#include "internal.h"

clbn_cl_api clbn_cl = {
#define CLBN_CL_INIT_(ret, name, params, args) name,
    CLBN_CL_CALLS(CLBN_CL_INIT_)
#undef CLBN_CL_INIT_
};

const clbn_cl_api clbn_cl_real = {
#define CLBN_CL_INIT_(ret, name, params, args) name,
    CLBN_CL_CALLS(CLBN_CL_INIT_)
#undef CLBN_CL_INIT_
};
