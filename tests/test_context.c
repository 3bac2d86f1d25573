/* Contexts: the device list, device selectors ($CLBN_DEVICE included), wrapping the caller's own
 * cl_context and queue, limit overrides, building every program variant on the device, and the
 * on-disk program cache (written, reused, corrupted entries ignored, disabled). */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef struct devices {
    clbn_device_info *info;
    size_t count;
} devices;

static devices D;

static int group_setup(void **state) {
    (void)state;
    /* tu_context exits 77 (skip) when there is no device at all. */
    clbn_context_release(tu_context());
    TU_OK(clbn_device_list(NULL, 0, &D.count));
    D.info = calloc(D.count, sizeof *D.info);
    assert_non_null(D.info);
    size_t again = 0;
    TU_OK(clbn_device_list(D.info, D.count, &again));
    assert_int_equal(again, D.count);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    free(D.info);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle), h = strlen(hay);
    for (size_t i = 0; i + n <= h; i++) {
        size_t k = 0;
        while (k < n && lower(hay[i + k]) == lower(needle[k]))
            k++;
        if (k == n)
            return 1;
    }
    return 0;
}

static clbn_status create_with(const char *selector, clbn_context **ctx) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.device = selector;
    *ctx = NULL;
    return clbn_context_create(&o, ctx);
}

static clbn_device_info device_of(clbn_context *ctx) {
    clbn_device_info info;
    memset(&info, 0, sizeof info);
    TU_OK(clbn_context_get_device_info(ctx, &info));
    return info;
}

/* What the "gpu" and "cpu" selectors pick, by the documented rule: never a simulator; "gpu"
 * the first GPU (or accelerator), "cpu" the CPU with the most compute units, the first of
 * those on a tie. */
static const clbn_device_info *first_of_type(cl_device_type type) {
    const clbn_device_info *best = NULL;
    for (size_t i = 0; i < D.count; i++) {
        const clbn_device_info *d = &D.info[i];
        if (d->is_simulator || !(d->type & type))
            continue;
        if (type & CL_DEVICE_TYPE_GPU)
            return d;
        if (!best || d->compute_units > best->compute_units)
            best = d;
    }
    return best;
}

/* The device the documented default picks: the "gpu" choice, else the "cpu" one. */
static const clbn_device_info *default_device(void) {
    const clbn_device_info *d = first_of_type(CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR);
    return d ? d : first_of_type(CL_DEVICE_TYPE_CPU);
}

/* Keeps and restores $CLBN_DEVICE around a test. */
static char saved_env[512];
static int had_env;

static int env_save(void **state) {
    (void)state;
    const char *v = getenv("CLBN_DEVICE");
    had_env = v != NULL;
    snprintf(saved_env, sizeof saved_env, "%s", v ? v : "");
    return 0;
}

/* A teardown, so the variable is restored even when the test fails midway. */
static int env_restore(void **state) {
    (void)state;
    if (had_env)
        setenv("CLBN_DEVICE", saved_env, 1);
    else
        unsetenv("CLBN_DEVICE");
    return 0;
}

/* A training forward on ctx (queue: NULL or the context's own) against the double formula:
 * mean and biased variance of the batch, y = gamma (x - mean) / sqrt(var + eps) + beta.
 * Tolerance: y 1e-5 absolute + 1e-5 relative (values O(1..10), m = 12 per channel). */
static void check_forward(clbn_context *ctx, cl_command_queue queue, const char *what) {
    enum { n = 2, c = 3, h = 2, w = 3, total = n * c * h * w };
    const float eps = 1e-3f;
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = c;
    o.eps = eps;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    const float gamma[c] = {1.5f, -0.5f, 2.0f}, beta[c] = {0.25f, 1.0f, -3.0f};
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, gamma, c));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, beta, c));
    float xh[total];
    ref_rng r;
    ref_rng_seed(&r, 2024);
    tu_fill_normal(&r, xh, total, 3.0, 2.0);
    cl_mem x = tu_buffer_from(ctx, xh, total), y = tu_buffer(ctx, total);
    clbn_shape s = {CLBN_LAYOUT_NCHW, n, c, h, w};
    TU_OK(clbn_bn_forward_train(bn, &s, x, 0, y, 0, NULL, queue, 0, NULL, NULL));
    float got[total];
    tu_read(ctx, y, 0, got, total);
    double mean[c] = {0}, var[c] = {0}, ref[total];
    for (int i = 0; i < total; i++)
        mean[(i / (h * w)) % c] += xh[i] / (double)(n * h * w);
    for (int i = 0; i < total; i++) {
        int ch = (i / (h * w)) % c;
        var[ch] += (xh[i] - mean[ch]) * (xh[i] - mean[ch]) / (double)(n * h * w);
    }
    for (int i = 0; i < total; i++) {
        int ch = (i / (h * w)) % c;
        ref[i] = gamma[ch] * (xh[i] - mean[ch]) / sqrt(var[ch] + eps) + beta[ch];
    }
    tu_check_close(what, got, ref, total, 1e-5, 1e-5);
    float saved_mean[c];
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_SAVED_MEAN, saved_mean, c));
    tu_check_close("saved mean", saved_mean, mean, c, 1e-5, 1e-6);
    clReleaseMemObject(x);
    clReleaseMemObject(y);
    clbn_bn_release(bn);
}

/* ---------------------------------------------------------------------------------------- */
/* Devices and selectors                                                                    */
/* ---------------------------------------------------------------------------------------- */

static void device_list_has_named_devices_with_limits(void **state) {
    (void)state;
    assert_true(D.count > 0);
    /* The count matches what OpenCL itself reports. */
    cl_uint np = 0;
    assert_int_equal(clGetPlatformIDs(0, NULL, &np), CL_SUCCESS);
    cl_platform_id *ps = calloc(np, sizeof *ps);
    assert_non_null(ps);
    assert_int_equal(clGetPlatformIDs(np, ps, NULL), CL_SUCCESS);
    size_t total = 0;
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(ps[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) == CL_SUCCESS)
            total += nd;
    }
    free(ps);
    assert_int_equal(D.count, total);

    for (size_t i = 0; i < D.count; i++) {
        const clbn_device_info *d = &D.info[i];
        if (d->device_name[0] == '\0' || d->platform_name[0] == '\0')
            fail_msg("device %zu has an empty name or platform name", i);
        assert_non_null(d->device);
        assert_non_null(d->platform);
        assert_true(d->max_work_group_size > 0);
        assert_true(d->local_mem_size > 0);
        assert_true(d->global_mem_size > 0);
        assert_true(d->max_mem_alloc_size > 0);
        assert_true(d->compute_units > 0);
        assert_true(d->preferred_vector_width_float > 0);
        assert_true(d->type != 0);
        /* The entries agree with OpenCL's own answers. */
        char name[256] = "";
        assert_int_equal(clGetDeviceInfo(d->device, CL_DEVICE_NAME, sizeof name, name, NULL),
                         CL_SUCCESS);
        if (strncmp(name, d->device_name, sizeof d->device_name - 1) != 0)
            fail_msg("device %zu: name \"%s\", OpenCL says \"%s\"", i, d->device_name, name);
        size_t wg = 0;
        assert_int_equal(
            clGetDeviceInfo(d->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL),
            CL_SUCCESS);
        assert_int_equal(d->max_work_group_size, wg);
        cl_uint cu = 0;
        assert_int_equal(
            clGetDeviceInfo(d->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL),
            CL_SUCCESS);
        assert_int_equal(d->compute_units, cu);
        /* Indices are unique. */
        for (size_t j = 0; j < i; j++)
            if (D.info[j].platform_index == d->platform_index &&
                D.info[j].device_index == d->device_index)
                fail_msg("devices %zu and %zu are both %u:%u", j, i, d->platform_index,
                         d->device_index);
        print_message("device %u:%u %s (%s), wg %zu, local %llu, CUs %u\n", d->platform_index,
                      d->device_index, d->device_name, d->platform_name, d->max_work_group_size,
                      (unsigned long long)d->local_mem_size, d->compute_units);
    }

    /* A smaller capacity fills that many and still reports the total. */
    clbn_device_info one[2];
    memset(one, 0xAB, sizeof one);
    size_t count = 0;
    TU_OK(clbn_device_list(one, 1, &count));
    assert_int_equal(count, D.count);
    assert_ptr_equal(one[0].device, D.info[0].device);
    unsigned char pattern[sizeof one[1]];
    memset(pattern, 0xAB, sizeof pattern);
    if (memcmp(&one[1], pattern, sizeof pattern) != 0)
        fail_msg("clbn_device_list wrote past the capacity of 1");
}

static void selector_by_type(const char *selector, cl_device_type type) {
    clbn_context *ctx = NULL;
    clbn_status st = create_with(selector, &ctx);
    const clbn_device_info *want = first_of_type(type);
    if (want == NULL) {
        if (st != CLBN_ERROR_DEVICE_NOT_FOUND)
            fail_msg("\"%s\" with no such device: %s, expected CLBN_ERROR_DEVICE_NOT_FOUND",
                     selector, clbn_status_name(st));
        clbn_context_release(ctx);
        return;
    }
    TU_OK(st);
    clbn_device_info got = device_of(ctx);
    if (!(got.type & type))
        fail_msg("\"%s\" selected %s (type %#llx)", selector, got.device_name,
                 (unsigned long long)got.type);
    assert_ptr_equal(got.device, want->device);
    clbn_context_release(ctx);
}

static void selector_cpu(void **state) {
    (void)state;
    selector_by_type("cpu", CL_DEVICE_TYPE_CPU);
    selector_by_type("CPU", CL_DEVICE_TYPE_CPU);
}

static void selector_gpu(void **state) {
    (void)state;
    selector_by_type("gpu", CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR);
}

/* A simulator (Oclgrind claims to be a CPU, a GPU and an accelerator at once) is never what
 * "gpu", "cpu" or the default choose; its name or indices do select it. With
 * CLBN_EXPECT_DEVICES=n (the README's test command sets 3: PoCL's pthread and basic devices
 * and Oclgrind) fewer devices is a failure, so a missing simulator cannot pass unnoticed. */
static void simulator_only_by_name_or_indices(void **state) {
    (void)state;
    const char *expect = getenv("CLBN_EXPECT_DEVICES");
    if (expect && *expect && D.count < (size_t)strtoul(expect, NULL, 10))
        fail_msg("CLBN_EXPECT_DEVICES=%s but %zu OpenCL devices were found", expect, D.count);
    size_t simulators = 0;
    for (size_t i = 0; i < D.count; i++) {
        const clbn_device_info *d = &D.info[i];
        if (!d->is_simulator)
            continue;
        simulators++;
        const char *sels[] = {"gpu", "cpu", NULL};
        for (size_t k = 0; k < sizeof sels / sizeof sels[0]; k++) {
            clbn_context *ctx = NULL;
            if (create_with(sels[k], &ctx) == CLBN_SUCCESS) {
                if (device_of(ctx).device == d->device)
                    fail_msg("selector %s chose the simulator %s", sels[k] ? sels[k] : "(default)",
                             d->device_name);
                clbn_context_release(ctx);
            }
        }
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", d->platform_index, d->device_index);
        clbn_context *ctx = NULL;
        TU_OK(create_with(sel, &ctx));
        assert_ptr_equal(device_of(ctx).device, d->device);
        clbn_context_release(ctx);
        TU_OK(create_with("oclgrind", &ctx));
        assert_true(device_of(ctx).is_simulator);
        clbn_context_release(ctx);
    }
    print_message("%zu devices, %zu of them simulators\n", D.count, simulators);
}

static void selector_platform_device_indices(void **state) {
    (void)state;
    for (size_t i = 0; i < D.count; i++) {
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", D.info[i].platform_index, D.info[i].device_index);
        clbn_context *ctx = NULL;
        TU_OK(create_with(sel, &ctx));
        clbn_device_info got = device_of(ctx);
        assert_ptr_equal(got.device, D.info[i].device);
        assert_int_equal(got.platform_index, D.info[i].platform_index);
        assert_int_equal(got.device_index, D.info[i].device_index);
        clbn_context_release(ctx);
    }
}

static void selector_name_substring_ignores_case(void **state) {
    (void)state;
    const char *name = D.info[0].device_name;
    size_t len = strlen(name);
    /* A piece from the middle of the name, its case flipped. */
    size_t start = len > 6 ? 2 : 0, take = len - start > 10 ? 10 : len - start;
    char sub[16];
    memcpy(sub, name + start, take);
    sub[take] = '\0';
    for (size_t i = 0; i < take; i++) {
        char ch = sub[i];
        if (ch >= 'a' && ch <= 'z')
            sub[i] = (char)(ch - 'a' + 'A');
        else if (ch >= 'A' && ch <= 'Z')
            sub[i] = (char)(ch - 'A' + 'a');
    }
    clbn_context *ctx = NULL;
    clbn_status st = create_with(sub, &ctx);
    if (st != CLBN_SUCCESS)
        fail_msg("selector \"%s\" (from \"%s\"): %s: %s", sub, name, clbn_status_name(st),
                 clbn_last_error_message());
    clbn_device_info got = device_of(ctx);
    if (!contains_ci(got.device_name, sub))
        fail_msg("selector \"%s\" chose \"%s\"", sub, got.device_name);
    /* The first device in list order whose name matches. */
    const clbn_device_info *want = NULL;
    for (size_t i = 0; i < D.count && !want; i++)
        if (contains_ci(D.info[i].device_name, sub))
            want = &D.info[i];
    assert_non_null(want);
    assert_ptr_equal(got.device, want->device);
    clbn_context_release(ctx);
    print_message("selector \"%s\" -> %s\n", sub, got.device_name);
}

static void expect_not_found(const char *selector) {
    clbn_context *ctx = NULL;
    clbn_status st = create_with(selector, &ctx);
    if (st != CLBN_ERROR_DEVICE_NOT_FOUND)
        fail_msg("selector \"%s\": %s, expected CLBN_ERROR_DEVICE_NOT_FOUND", selector,
                 clbn_status_name(st));
    if (ctx != NULL)
        fail_msg("selector \"%s\" failed but returned a context", selector);
}

static void selector_matching_nothing_is_device_not_found(void **state) {
    (void)state;
    expect_not_found("9:9");
    expect_not_found("nonexistent-xyz");
    if (!contains_ci(clbn_last_error_message(), "nonexistent-xyz"))
        fail_msg("the message does not quote the selector: \"%s\"", clbn_last_error_message());
}

static void selector_from_environment(void **state) {
    (void)state;
    clbn_context *ctx = NULL;

    /* $CLBN_DEVICE is read when options.device is NULL or "" ... */
    setenv("CLBN_DEVICE", "nonexistent-xyz", 1);
    clbn_status st = create_with(NULL, &ctx);
    if (st != CLBN_ERROR_DEVICE_NOT_FOUND)
        fail_msg("CLBN_DEVICE=nonexistent-xyz, device NULL: %s (the variable is not read)",
                 clbn_status_name(st));
    st = create_with("", &ctx);
    if (st != CLBN_ERROR_DEVICE_NOT_FOUND)
        fail_msg("CLBN_DEVICE=nonexistent-xyz, device \"\": %s (the variable is not read)",
                 clbn_status_name(st));
    st = clbn_context_create(NULL, &ctx);
    if (st != CLBN_ERROR_DEVICE_NOT_FOUND)
        fail_msg("CLBN_DEVICE=nonexistent-xyz, options NULL: %s (the variable is not read)",
                 clbn_status_name(st));

    /* ... and an explicit selector wins over it. */
    TU_OK(create_with("0:0", &ctx));
    clbn_context_release(ctx);

    /* Each device, through the variable. */
    for (size_t i = 0; i < D.count; i++) {
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", D.info[i].platform_index, D.info[i].device_index);
        setenv("CLBN_DEVICE", sel, 1);
        TU_OK(create_with(NULL, &ctx));
        assert_ptr_equal(device_of(ctx).device, D.info[i].device);
        clbn_context_release(ctx);
    }
    setenv("CLBN_DEVICE", "cpu", 1);
    if (first_of_type(CL_DEVICE_TYPE_CPU)) {
        TU_OK(create_with("", &ctx));
        assert_ptr_equal(device_of(ctx).device, first_of_type(CL_DEVICE_TYPE_CPU)->device);
        clbn_context_release(ctx);
    }
}

static void selector_default_is_first_gpu_else_first_device(void **state) {
    (void)state;
    unsetenv("CLBN_DEVICE");
    const clbn_device_info *want = default_device();
    clbn_context *ctx = NULL;
    TU_OK(create_with(NULL, &ctx));
    assert_ptr_equal(device_of(ctx).device, want->device);
    clbn_context_release(ctx);
    TU_OK(create_with("", &ctx));
    assert_ptr_equal(device_of(ctx).device, want->device);
    clbn_context_release(ctx);
    TU_OK(clbn_context_create(NULL, &ctx));
    assert_ptr_equal(device_of(ctx).device, want->device);
    clbn_context_release(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Wrapping the caller's context                                                            */
/* ---------------------------------------------------------------------------------------- */

static cl_uint refcount_ctx(cl_context c) {
    cl_uint n = 0;
    assert_int_equal(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL),
                     CL_SUCCESS);
    return n;
}

static cl_uint refcount_queue(cl_command_queue q) {
    cl_uint n = 0;
    assert_int_equal(clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof n, &n, NULL),
                     CL_SUCCESS);
    return n;
}

static void wrap_callers_context_and_queue(void **state) {
    (void)state;
    const clbn_device_info *dev = default_device();
    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)dev->platform, 0};
    cl_context mine = clCreateContext(props, 1, &dev->device, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(mine, dev->device, 0, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_uint ctx_refs = refcount_ctx(mine), queue_refs = refcount_queue(q);

    clbn_context *ctx = NULL;
    TU_OK(clbn_context_wrap(mine, q, NULL, &ctx));
    cl_context got_ctx = NULL;
    cl_command_queue got_q = NULL;
    TU_OK(clbn_context_get_cl(ctx, &got_ctx, &got_q));
    assert_ptr_equal(got_ctx, mine);
    assert_ptr_equal(got_q, q);
    assert_ptr_equal(device_of(ctx).device, dev->device);

    check_forward(ctx, NULL, "y on a wrapped context (its queue)");
    check_forward(ctx, q, "y on a wrapped context (queue passed explicitly)");

    clbn_context_release(ctx);
    /* Retained on wrap and released again: the caller's handles are as they were, and work. A
     * driver may hold a queue reference of its own for a moment after the last command finished
     * (PoCL does, seen under load), so the count is given up to a second to come back. */
    for (int i = 0; i < 100 && (refcount_ctx(mine) > ctx_refs || refcount_queue(q) > queue_refs);
         i++) {
        clFinish(q);
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    assert_int_equal(refcount_ctx(mine), ctx_refs);
    assert_int_equal(refcount_queue(q), queue_refs);
    cl_mem m = clCreateBuffer(mine, CL_MEM_READ_WRITE, 16, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float v[4] = {1, 2, 3, 4}, back[4] = {0};
    assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, 0, 16, v, 0, NULL, NULL), CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, 16, back, 0, NULL, NULL), CL_SUCCESS);
    assert_memory_equal(v, back, sizeof v);
    assert_int_equal(clFinish(q), CL_SUCCESS);
    clReleaseMemObject(m);
    clReleaseCommandQueue(q);
    clReleaseContext(mine);
}

/* An out-of-order queue would let the kernels of one call, or two calls on one state object,
 * overlap: clbn_context_wrap and every call refuse it, naming it. */
static void out_of_order_queue_refused(void **state) {
    (void)state;
    const clbn_device_info *dev = default_device();
    cl_command_queue_properties props = 0;
    assert_int_equal(
        clGetDeviceInfo(dev->device, CL_DEVICE_QUEUE_PROPERTIES, sizeof props, &props, NULL),
        CL_SUCCESS);
    if (!(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE))
        fail_msg("%s has no out-of-order queues; the refusal cannot be tested here",
                 dev->device_name);
    cl_int err = CL_SUCCESS;
    cl_context_properties cp[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)dev->platform, 0};
    cl_context mine = clCreateContext(cp, 1, &dev->device, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue ooo =
        clCreateCommandQueue(mine, dev->device, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue in_order = clCreateCommandQueue(mine, dev->device, 0, &err);
    assert_int_equal(err, CL_SUCCESS);

    clbn_context *ctx = NULL;
    assert_int_equal(clbn_context_wrap(mine, ooo, NULL, &ctx), CLBN_ERROR_INVALID_ARGUMENT);
    assert_null(ctx);
    if (!contains_ci(clbn_last_error_message(), "out-of-order"))
        fail_msg("the message does not say why: \"%s\"", clbn_last_error_message());

    TU_OK(clbn_context_wrap(mine, in_order, NULL, &ctx));
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = 2;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    clbn_shape s = {CLBN_LAYOUT_NCHW, 2, 2, 2, 2};
    float host[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    cl_mem x =
        clCreateBuffer(mine, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof host, host, &err);
    assert_int_equal(err, CL_SUCCESS);
    float before[2], after[2];
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, before, 2));
    assert_int_equal(clbn_bn_forward_train(bn, &s, x, 0, x, 0, NULL, ooo, 0, NULL, NULL),
                     CLBN_ERROR_INVALID_ARGUMENT);
    if (!contains_ci(clbn_last_error_message(), "out-of-order"))
        fail_msg("the message does not say why: \"%s\"", clbn_last_error_message());
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, after, 2));
    assert_memory_equal(before, after, sizeof before);
    TU_OK(clbn_bn_forward_train(bn, &s, x, 0, x, 0, NULL, in_order, 0, NULL, NULL));
    clbn_bn_release(bn);
    clbn_context_release(ctx);
    clReleaseMemObject(x);
    clReleaseCommandQueue(ooo);
    clReleaseCommandQueue(in_order);
    clReleaseContext(mine);
}

static void own_context_forward_is_correct(void **state) {
    (void)state;
    clbn_context *ctx = tu_context();
    check_forward(ctx, NULL, "y on the default context");
    clbn_context_release(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Limits and builds                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void limits_override_shows_in_get_limits(void **state) {
    (void)state;
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.limits.max_work_group_size = 64;
    o.limits.local_mem_size = 16384;
    o.limits.cache_size = 1u << 20;
    o.limits.compute_units = 8;
    o.limits.vector_width = 2;
    o.limits.device_type = CLBN_DEVICE_KIND_GPU;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    clbn_limits l;
    TU_OK(clbn_context_get_limits(ctx, &l));
    assert_int_equal(l.max_work_group_size, 64);
    assert_int_equal(l.local_mem_size, 16384);
    assert_int_equal(l.cache_size, 1u << 20);
    assert_int_equal(l.compute_units, 8);
    assert_int_equal(l.vector_width, 2);
    assert_int_equal(l.device_type, CLBN_DEVICE_KIND_GPU);
    /* The plans obey them. */
    clbn_bn_options bo;
    clbn_bn_options_init(&bo);
    bo.channels = 4;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &bo, &bn));
    const clbn_shape shapes[] = {{CLBN_LAYOUT_NCHW, 8, 4, 64, 64},
                                 {CLBN_LAYOUT_NHWC, 8, 4, 64, 64},
                                 {CLBN_LAYOUT_NC, 4096, 4, 1, 1}};
    for (size_t s = 0; s < 3; s++)
        for (int op = CLBN_OP_FORWARD_TRAIN; op <= CLBN_OP_BACKWARD_FROZEN; op++) {
            clbn_plan p;
            TU_OK(clbn_bn_query_plan(bn, (clbn_op)op, &shapes[s], &p));
            if (p.work_group_size == 0 || p.work_group_size > 64 || p.vector_width == 0 ||
                p.vector_width > 2)
                fail_msg("shape %zu op %d: plan work-group %zu, vector width %u under limits 64 "
                         "and 2",
                         s, op, p.work_group_size, p.vector_width);
        }
    clbn_bn_release(bn);
    clbn_context_release(ctx);

    /* Zeros: the device's own values. */
    ctx = tu_context();
    clbn_device_info info = device_of(ctx);
    TU_OK(clbn_context_get_limits(ctx, &l));
    assert_int_equal(l.max_work_group_size, info.max_work_group_size);
    assert_int_equal(l.local_mem_size, info.local_mem_size);
    assert_int_equal(l.compute_units, info.compute_units);
    if (l.vector_width != 1 && l.vector_width != 2 && l.vector_width != 4 && l.vector_width != 8 &&
        l.vector_width != 16)
        fail_msg("device's own vector width in force is %u", l.vector_width);
    if (info.type & CL_DEVICE_TYPE_CPU)
        assert_true(l.device_type == 0 || l.device_type == CLBN_DEVICE_KIND_CPU);
    clbn_context_release(ctx);
}

/* Builds bypass the disk cache here, so the device compiler really compiles every variant. */
static void build_all_variants_on_device(void **state) {
    (void)state;
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.disable_cache = 1;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    clbn_status st = clbn_context_build_all(ctx);
    if (st != CLBN_SUCCESS)
        fail_msg("build_all: %s\n%s", clbn_status_name(st), clbn_last_error_message());
    assert_string_equal(clbn_last_error_message(), "");
    clbn_context_release(ctx);

    /* With a GPU's limits imposed (the variants and options may differ). */
    o.limits.max_work_group_size = 64;
    o.limits.local_mem_size = 32768;
    o.limits.vector_width = 4;
    o.limits.compute_units = 16;
    o.limits.cache_size = 4u << 20;
    o.limits.device_type = CLBN_DEVICE_KIND_GPU;
    TU_OK(clbn_context_create(&o, &ctx));
    st = clbn_context_build_all(ctx);
    if (st != CLBN_SUCCESS)
        fail_msg("build_all with GPU limits: %s\n%s", clbn_status_name(st),
                 clbn_last_error_message());
    check_forward(ctx, NULL, "y with GPU limits");
    clbn_context_release(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Program cache                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct cache_file {
    char path[1024];
    size_t size;
    uint64_t hash;
} cache_file;

typedef struct cache_listing {
    cache_file files[256];
    int n;
    int entries; /* files and folders */
} cache_listing;

static uint64_t hash_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t got, total = 0;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < got; i++)
            h = (h ^ buf[i]) * 0x100000001b3ull;
        total += got;
    }
    fclose(f);
    *size = total;
    return h;
}

static void scan(const char *dir, cache_listing *l) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        l->entries++;
        if (S_ISDIR(st.st_mode)) {
            scan(p, l);
        } else if (S_ISREG(st.st_mode) && l->n < 256) {
            cache_file *f = &l->files[l->n++];
            snprintf(f->path, sizeof f->path, "%s", p);
            f->hash = hash_file(p, &f->size);
        }
    }
    closedir(d);
}

static void list_cache(const char *dir, cache_listing *l) {
    memset(l, 0, sizeof *l);
    scan(dir, l);
    /* Sort by path so two listings compare entry by entry. */
    for (int i = 1; i < l->n; i++)
        for (int j = i; j > 0 && strcmp(l->files[j - 1].path, l->files[j].path) > 0; j--) {
            cache_file t = l->files[j];
            l->files[j] = l->files[j - 1];
            l->files[j - 1] = t;
        }
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static clbn_context *cached_context(const char *dir, int disable) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.cache_dir = dir;
    o.disable_cache = disable;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    clbn_status st = clbn_context_build_all(ctx);
    if (st != CLBN_SUCCESS)
        fail_msg("build_all with cache %s: %s\n%s", dir, clbn_status_name(st),
                 clbn_last_error_message());
    return ctx;
}

static void overwrite_files(const cache_listing *l, int mode, uint64_t seed) {
    ref_rng r;
    ref_rng_seed(&r, seed);
    for (int i = 0; i < l->n; i++) {
        size_t n = mode == 0 ? l->files[i].size : (mode == 1 ? l->files[i].size / 2 : 0);
        unsigned char *junk = malloc(n ? n : 1);
        assert_non_null(junk);
        if (mode == 0) {
            for (size_t k = 0; k < n; k++)
                junk[k] = (unsigned char)(ref_uniform(&r) * 256.0);
        } else {
            FILE *f = fopen(l->files[i].path, "rb"); /* keep the first half as it was */
            assert_non_null(f);
            if (n && fread(junk, 1, n, f) != n)
                fail_msg("cannot read %s", l->files[i].path);
            fclose(f);
        }
        FILE *f = fopen(l->files[i].path, "wb");
        assert_non_null(f);
        if (n && fwrite(junk, 1, n, f) != n)
            fail_msg("cannot write %s", l->files[i].path);
        fclose(f);
        free(junk);
    }
}

static void program_cache_written_reused_and_repaired(void **state) {
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/clbn-test-cache-XXXXXX");
    assert_non_null(mkdtemp(dir));

    /* First context: builds and writes the cache. */
    clbn_context *ctx = cached_context(dir, 0);
    check_forward(ctx, NULL, "y, first context (cache written)");
    clbn_context_release(ctx);
    cache_listing first;
    list_cache(dir, &first);
    if (first.n == 0)
        fail_msg("no cache file written under %s", dir);
    print_message("%d cache file(s) under %s\n", first.n, dir);

    /* Second context: loads them; the cache is left as it was (not even rewritten with the same
     * bytes: the files are back-dated first and must keep that time). */
    for (int i = 0; i < first.n; i++) {
        struct timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
        assert_int_equal(utimensat(AT_FDCWD, first.files[i].path, old_times, 0), 0);
    }
    ctx = cached_context(dir, 0);
    check_forward(ctx, NULL, "y, second context (cache read)");
    clbn_context_release(ctx);
    cache_listing second;
    list_cache(dir, &second);
    assert_int_equal(second.n, first.n);
    for (int i = 0; i < first.n; i++) {
        assert_string_equal(second.files[i].path, first.files[i].path);
        if (second.files[i].hash != first.files[i].hash)
            fail_msg("cache file %s changed on a second start", first.files[i].path);
        struct stat st;
        assert_int_equal(stat(first.files[i].path, &st), 0);
        if (st.st_mtime != 1000000000)
            fail_msg("cache file %s was rewritten on a second start (not loaded)",
                     first.files[i].path);
    }

    /* Garbage, then half files, then empty files: ignored, rebuilt, results still right. */
    const char *modes[] = {"garbage", "truncated to half", "truncated to 0 bytes"};
    for (int mode = 0; mode < 3; mode++) {
        cache_listing now;
        list_cache(dir, &now);
        overwrite_files(&now, mode, 99 + (uint64_t)mode);
        ctx = cached_context(dir, 0);
        char what[96];
        snprintf(what, sizeof what, "y after cache files were %s", modes[mode]);
        check_forward(ctx, NULL, what);
        clbn_context_release(ctx);
        /* And the next start, with whatever the rebuild stored, is right too. */
        ctx = cached_context(dir, 0);
        snprintf(what, sizeof what, "y on the start after the cache was %s", modes[mode]);
        check_forward(ctx, NULL, what);
        clbn_context_release(ctx);
    }
    remove_tree(dir);
}

static void disable_cache_writes_nothing(void **state) {
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/clbn-test-nocache-XXXXXX");
    assert_non_null(mkdtemp(dir));
    clbn_context *ctx = cached_context(dir, 1);
    check_forward(ctx, NULL, "y with the cache disabled");
    clbn_context_release(ctx);
    cache_listing l;
    list_cache(dir, &l);
    if (l.entries != 0)
        fail_msg("disable_cache wrote %d entries under %s (first: %s)", l.entries, dir,
                 l.n ? l.files[0].path : "a folder");
    remove_tree(dir);
}

/* cache_dir NULL: $CLBN_CACHE_DIR is used. */
static void cache_dir_from_environment(void **state) {
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/clbn-test-envcache-XXXXXX");
    assert_non_null(mkdtemp(dir));
    const char *old = getenv("CLBN_CACHE_DIR");
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", old ? old : "");
    setenv("CLBN_CACHE_DIR", dir, 1);
    clbn_context *ctx = cached_context(NULL, 0);
    clbn_context_release(ctx);
    if (old)
        setenv("CLBN_CACHE_DIR", saved, 1);
    else
        unsetenv("CLBN_CACHE_DIR");
    cache_listing l;
    list_cache(dir, &l);
    if (l.n == 0)
        fail_msg("CLBN_CACHE_DIR=%s: no cache file written there", dir);
    remove_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_list_has_named_devices_with_limits),
        cmocka_unit_test(selector_cpu),
        cmocka_unit_test(selector_gpu),
        cmocka_unit_test(simulator_only_by_name_or_indices),
        cmocka_unit_test(out_of_order_queue_refused),
        cmocka_unit_test(selector_platform_device_indices),
        cmocka_unit_test(selector_name_substring_ignores_case),
        cmocka_unit_test(selector_matching_nothing_is_device_not_found),
        cmocka_unit_test_setup_teardown(selector_from_environment, env_save, env_restore),
        cmocka_unit_test_setup_teardown(selector_default_is_first_gpu_else_first_device, env_save,
                                        env_restore),
        cmocka_unit_test(own_context_forward_is_correct),
        cmocka_unit_test(wrap_callers_context_and_queue),
        cmocka_unit_test(limits_override_shows_in_get_limits),
        cmocka_unit_test(build_all_variants_on_device),
        cmocka_unit_test(program_cache_written_reused_and_repaired),
        cmocka_unit_test(disable_cache_writes_nothing),
        cmocka_unit_test(cache_dir_from_environment),
    };
    return cmocka_run_group_tests_name("context", tests, group_setup, group_teardown);
}
