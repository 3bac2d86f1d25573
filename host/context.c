/* context.c — the context: device, default queue, limits in force, and the lazily built
 * program variants (one per vector width), shared by threads under a mutex. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clbn_embedded_source {
    const char *name;
    const char *text;
    size_t length;
};
extern const struct clbn_embedded_source clbn_embedded_sources[];
extern const size_t clbn_embedded_source_count;

const char *const clbn_kernel_names[CLBN_K_COUNT] = {"clbn_stats_nchw",
                                                     "clbn_stats_nhwc",
                                                     "clbn_stats_merge",
                                                     "clbn_apply_nchw",
                                                     "clbn_apply_nhwc",
                                                     "clbn_bwd_reduce_nchw",
                                                     "clbn_bwd_reduce_nhwc",
                                                     "clbn_bwd_merge",
                                                     "clbn_dx_nchw",
                                                     "clbn_dx_nhwc",
                                                     "clbn_rows_stats_nchw",
                                                     "clbn_rows_apply_nchw",
                                                     "clbn_rows_bwd_reduce_nchw",
                                                     "clbn_rows_dx_nchw",
                                                     "clbn_rows_stats_nhwc",
                                                     "clbn_rows_apply_nhwc",
                                                     "clbn_rows_bwd_reduce_nhwc",
                                                     "clbn_rows_dx_nhwc"};

void clbn_context_options_init(clbn_context_options *options) {
    if (options)
        memset(options, 0, sizeof *options);
}

static uint32_t floor_pow2(uint32_t v) {
    uint32_t p = 1;
    while (p * 2 <= v && p < 16)
        p *= 2;
    return p;
}

static void apply_limits(clbn_context *ctx, const clbn_limits *want) {
    const clbn_device_info *d = &ctx->info;
    clbn_limits *l = &ctx->limits;
    l->max_work_group_size = d->max_work_group_size ? d->max_work_group_size : 1;
    l->local_mem_size = d->local_mem_size;
    l->cache_size = d->global_mem_cache_size ? d->global_mem_cache_size : d->host_llc_size;
    l->compute_units = d->compute_units ? d->compute_units : 1;
    l->vector_width =
        floor_pow2(d->preferred_vector_width_float ? d->preferred_vector_width_float : 1);
    l->device_type = (d->type & CL_DEVICE_TYPE_CPU) ? CLBN_DEVICE_KIND_CPU : CLBN_DEVICE_KIND_GPU;
    l->max_groups_per_dim = 65535;
    l->kernel_work_group_size = 0;
    l->private_mem_size = (d->type & CL_DEVICE_TYPE_CPU) && !d->is_simulator &&
                                  strstr(d->platform_name, "Portable Computing Language")
                              ? 65536
                              : 16384;
    if (!want)
        return;
    /* Overrides may only shrink what the device offers. */
    if (want->max_work_group_size && want->max_work_group_size < l->max_work_group_size)
        l->max_work_group_size = want->max_work_group_size;
    if (want->local_mem_size && want->local_mem_size < l->local_mem_size)
        l->local_mem_size = want->local_mem_size;
    if (want->cache_size)
        l->cache_size = want->cache_size;
    if (want->compute_units)
        l->compute_units = want->compute_units;
    if (want->vector_width)
        l->vector_width = floor_pow2(want->vector_width);
    if (want->device_type == CLBN_DEVICE_KIND_CPU || want->device_type == CLBN_DEVICE_KIND_GPU)
        l->device_type = want->device_type;
    if (want->max_groups_per_dim)
        l->max_groups_per_dim = want->max_groups_per_dim;
    if (want->kernel_work_group_size)
        l->kernel_work_group_size = want->kernel_work_group_size;
    if (want->private_mem_size && want->private_mem_size < l->private_mem_size)
        l->private_mem_size = want->private_mem_size;
}

static clbn_status check_limits(const clbn_limits *l) {
    uint32_t w = l->vector_width;
    if (w != 0 && w != 1 && w != 2 && w != 4 && w != 8 && w != 16)
        return clbn_fail(CLBN_ERROR_INVALID_OPTION,
                         "limits.vector_width = %u: must be 0 (the device's), 1, 2, 4, 8 or 16", w);
    if (l->device_type > CLBN_DEVICE_KIND_GPU)
        return clbn_fail(CLBN_ERROR_INVALID_OPTION, "limits.device_type = %u is unknown",
                         l->device_type);
    return CLBN_SUCCESS;
}

/* The kernels are OpenCL C 1.2: a device that compiles less is refused by name and version. */
static clbn_status check_opencl_c(const clbn_device_info *d) {
    unsigned major = 0, minor = 0;
    if (sscanf(d->opencl_c_version, "OpenCL C %u.%u", &major, &minor) != 2)
        return clbn_fail(CLBN_ERROR_UNSUPPORTED,
                         "%s reports the OpenCL C version \"%s\", which clbn cannot read; the "
                         "kernels need OpenCL C 1.2",
                         d->device_name, d->opencl_c_version);
    if (major < 1 || (major == 1 && minor < 2))
        return clbn_fail(CLBN_ERROR_UNSUPPORTED,
                         "%s supports OpenCL C %u.%u; the clbn kernels need OpenCL C 1.2",
                         d->device_name, major, minor);
    return CLBN_SUCCESS;
}

static clbn_status finish_create(clbn_context *ctx, const clbn_context_options *o) {
    apply_limits(ctx, o ? &o->limits : NULL);
    ctx->cache_dir =
        (o && o->disable_cache) ? NULL : clbn_default_cache_dir(o ? o->cache_dir : NULL);
    clbn_tuning_defaults(&ctx->tuning);
    ctx->tuning_source = CLBN_TUNING_DEFAULT;
    if (!(o && o->ignore_tuning))
        clbn_tuning_load(ctx);
    if (pthread_mutex_init(&ctx->lock, NULL) != 0)
        return clbn_fail(CLBN_ERROR_INTERNAL, "pthread_mutex_init failed");
    return CLBN_SUCCESS;
}

clbn_status clbn_context_create(const clbn_context_options *options, clbn_context **context) {
    clbn_clear_error();
    if (!context)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context (the output pointer) is NULL");
    *context = NULL;
    if (options) {
        clbn_status st = check_limits(&options->limits);
        if (st != CLBN_SUCCESS)
            return st;
    }
    clbn_device_info info;
    clbn_status st = clbn_select_device(options ? options->device : NULL, &info);
    if (st == CLBN_SUCCESS)
        st = check_opencl_c(&info);
    if (st != CLBN_SUCCESS)
        return st;
    clbn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory creating a context");
    ctx->info = info;
    ctx->device = info.device;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)info.platform, 0};
    cl_int err = CL_SUCCESS;
    ctx->cl_ctx = clbn_cl.clCreateContext(props, 1, &info.device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        free(ctx);
        return clbn_fail((clbn_status)err, "clCreateContext on %s failed", info.device_name);
    }
    ctx->queue = clbn_cl.clCreateCommandQueue(ctx->cl_ctx, info.device, 0, &err);
    if (err != CL_SUCCESS) {
        clbn_cl.clReleaseContext(ctx->cl_ctx);
        free(ctx);
        return clbn_fail((clbn_status)err, "clCreateCommandQueue on %s failed", info.device_name);
    }
    st = finish_create(ctx, options);
    if (st != CLBN_SUCCESS) {
        clbn_cl.clReleaseCommandQueue(ctx->queue);
        clbn_cl.clReleaseContext(ctx->cl_ctx);
        free(ctx->cache_dir);
        free(ctx);
        return st;
    }
    *context = ctx;
    return CLBN_SUCCESS;
}

uint64_t clbn_kernel_source_hash(void) {
    uint64_t h = CLBN_FNV_INIT;
    for (size_t i = 0; i < clbn_embedded_source_count; i++)
        h = clbn_fnv1a(h, clbn_embedded_sources[i].text, clbn_embedded_sources[i].length);
    return h;
}

clbn_status clbn_check_in_order(cl_command_queue queue, const char *name) {
    cl_command_queue_properties props = 0;
    cl_int err =
        clbn_cl.clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "%s is not a valid command queue", name);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return clbn_fail(
            CLBN_ERROR_INVALID_ARGUMENT,
            "%s is an out-of-order queue; clbn needs an in-order queue (the kernels of "
            "a call, and the calls on one state object, rely on its order)",
            name);
    return CLBN_SUCCESS;
}

clbn_status clbn_context_wrap(cl_context cl_ctx, cl_command_queue queue,
                              const clbn_context_options *options, clbn_context **context) {
    clbn_clear_error();
    if (!context)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context (the output pointer) is NULL");
    *context = NULL;
    if (!cl_ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "cl_ctx is NULL");
    if (!queue)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "queue is NULL");
    if (options) {
        clbn_status st = check_limits(&options->limits);
        if (st != CLBN_SUCCESS)
            return st;
    }
    cl_device_id dev = NULL;
    cl_context qctx = NULL;
    cl_int err = clbn_cl.clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof dev, &dev, NULL);
    if (err == CL_SUCCESS)
        err = clbn_cl.clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "queue is not a valid command queue");
    if (qctx != cl_ctx)
        return clbn_fail(CLBN_ERROR_INVALID_ARGUMENT, "queue does not belong to cl_ctx");
    clbn_status st = clbn_check_in_order(queue, "queue");
    if (st != CLBN_SUCCESS)
        return st;
    cl_platform_id plat = NULL;
    err = clbn_cl.clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "cannot query the queue's device");
    clbn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory creating a context");
    st = clbn_fill_device_info(plat, dev, 0, 0, &ctx->info);
    if (st == CLBN_SUCCESS)
        st = check_opencl_c(&ctx->info);
    /* Recover the indices, so the info reads like clbn_device_list's. */
    size_t n = 0;
    if (st == CLBN_SUCCESS && clbn_device_list(NULL, 0, &n) == CLBN_SUCCESS && n > 0) {
        clbn_device_info *all = calloc(n, sizeof *all);
        if (all && clbn_device_list(all, n, &n) == CLBN_SUCCESS)
            for (size_t i = 0; i < n; i++)
                if (all[i].device == dev) {
                    ctx->info.platform_index = all[i].platform_index;
                    ctx->info.device_index = all[i].device_index;
                }
        free(all);
    }
    if (st == CLBN_SUCCESS)
        st = finish_create(ctx, options);
    if (st != CLBN_SUCCESS) {
        free(ctx->cache_dir);
        free(ctx);
        return st;
    }
    clbn_cl.clRetainContext(cl_ctx);
    clbn_cl.clRetainCommandQueue(queue);
    ctx->cl_ctx = cl_ctx;
    ctx->queue = queue;
    ctx->device = dev;
    *context = ctx;
    return CLBN_SUCCESS;
}

void clbn_context_release(clbn_context *ctx) {
    if (!ctx)
        return;
    clbn_cl.clFinish(ctx->queue);
    for (int i = 0; i < CLBN_VARIANTS; i++)
        if (ctx->programs[i])
            clbn_cl.clReleaseProgram(ctx->programs[i]);
    clbn_cl.clReleaseCommandQueue(ctx->queue);
    clbn_cl.clReleaseContext(ctx->cl_ctx);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx->cache_dir);
    free(ctx);
}

clbn_status clbn_context_get_device_info(const clbn_context *ctx, clbn_device_info *info) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (!info)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "info is NULL");
    *info = ctx->info;
    return CLBN_SUCCESS;
}

clbn_status clbn_context_get_limits(const clbn_context *ctx, clbn_limits *limits) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (!limits)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "limits is NULL");
    *limits = ctx->limits;
    return CLBN_SUCCESS;
}

clbn_status clbn_context_get_cl(const clbn_context *ctx, cl_context *cl_ctx,
                                cl_command_queue *queue) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    if (cl_ctx)
        *cl_ctx = ctx->cl_ctx;
    if (queue)
        *queue = ctx->queue;
    return CLBN_SUCCESS;
}

/* The program source: every embedded .cl file in order. */
static char *program_source(size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < clbn_embedded_source_count; i++)
        total += clbn_embedded_sources[i].length + 1;
    char *src = malloc(total + 1);
    if (!src)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < clbn_embedded_source_count; i++) {
        memcpy(src + at, clbn_embedded_sources[i].text, clbn_embedded_sources[i].length);
        at += clbn_embedded_sources[i].length;
        src[at++] = '\n';
    }
    src[at] = '\0';
    *len = at;
    return src;
}

/* Asks each kernel of a freshly built program for its own limits. */
static clbn_status ask_kernel_limits(clbn_context *ctx, cl_program prog, int variant) {
    for (int k = 0; k < CLBN_K_COUNT; k++) {
        cl_int err = CL_SUCCESS;
        cl_kernel kern = clbn_cl.clCreateKernel(prog, clbn_kernel_names[k], &err);
        if (err != CL_SUCCESS)
            return clbn_fail((clbn_status)err, "kernel %s is missing from the built program",
                             clbn_kernel_names[k]);
        clbn_kernel_info *ki = &ctx->kinfo[variant][k];
        size_t wg = 0;
        cl_ulong local = 0, priv = 0;
        err = clbn_cl.clGetKernelWorkGroupInfo(kern, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                               sizeof wg, &wg, NULL);
        if (err == CL_SUCCESS)
            err = clbn_cl.clGetKernelWorkGroupInfo(kern, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE,
                                                   sizeof local, &local, NULL);
        if (err == CL_SUCCESS)
            err = clbn_cl.clGetKernelWorkGroupInfo(kern, ctx->device, CL_KERNEL_PRIVATE_MEM_SIZE,
                                                   sizeof priv, &priv, NULL);
        clbn_cl.clReleaseKernel(kern);
        if (err != CL_SUCCESS)
            return clbn_fail((clbn_status)err, "asking kernel %s for its work-group limits failed",
                             clbn_kernel_names[k]);
        ki->work_group_size = wg ? wg : 1;
        ki->local_bytes = local;
        ki->private_bytes = priv;
    }
    return CLBN_SUCCESS;
}

/* Builds a variant under the lock (the caller holds it). */
static clbn_status build_variant(clbn_context *ctx, int variant) {
    if (ctx->programs[variant])
        return CLBN_SUCCESS;
    size_t len = 0;
    char *src = program_source(&len);
    if (!src)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory for the kernel source");
    /* The NHWC rows kernels (rows.cl) keep a tile of channels' state in private arrays, at
     * most 32 bytes a channel (the backward sums): as many channels as limits.private_mem_size
     * holds, a power of two from 16 to 2048 (only CPU plans launch them, on a GPU too when
     * limits.device_type asks for one). */
    const int cpu = (ctx->info.type & CL_DEVICE_TYPE_CPU) && !ctx->info.is_simulator;
    int tile = 16;
    while (tile < 2048 && (uint64_t)tile * 2 * 32 <= ctx->limits.private_mem_size)
        tile *= 2;
    char options[160];
    snprintf(options, sizeof options,
             "-cl-std=CL1.2 -DCLBN_VEC=%d -DCLBN_CPI=%d -DCLBN_ROWS_TILE_CH=%d%s",
             1 << (variant / CLBN_CPI_VARIANTS), 1 << (variant % CLBN_CPI_VARIANTS), tile,
             cpu ? " -DCLBN_STREAM_STORES" : "");
    cl_program prog = NULL;
    clbn_status st = clbn_build_cached(ctx, src, len, options, &prog);
    free(src);
    if (st == CLBN_SUCCESS)
        st = ask_kernel_limits(ctx, prog, variant);
    if (st != CLBN_SUCCESS) {
        if (prog)
            clbn_cl.clReleaseProgram(prog);
        return st;
    }
    ctx->programs[variant] = prog;
    return CLBN_SUCCESS;
}

clbn_status clbn_context_program(clbn_context *ctx, int variant, cl_program *program) {
    if (variant < 0 || variant >= CLBN_VARIANTS)
        return clbn_fail(CLBN_ERROR_INTERNAL, "no program variant %d", variant);
    pthread_mutex_lock(&ctx->lock);
    clbn_status st = build_variant(ctx, variant);
    *program = ctx->programs[variant];
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

clbn_status clbn_context_kernel_info(clbn_context *ctx, int variant, clbn_kernel_id id,
                                     clbn_kernel_info *info) {
    /* kinfo is written before programs[variant] is set, under the lock, and never again */
    cl_program prog = NULL;
    clbn_status st = clbn_context_program(ctx, variant, &prog);
    if (st == CLBN_SUCCESS)
        *info = ctx->kinfo[variant][id];
    return st;
}

clbn_status clbn_context_build_all(clbn_context *ctx) {
    clbn_clear_error();
    if (!ctx)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "context is NULL");
    for (int v = 0; v < CLBN_VARIANTS; v++) {
        cl_program p = NULL;
        clbn_status st = clbn_context_program(ctx, v, &p);
        if (st != CLBN_SUCCESS)
            return st;
    }
    return CLBN_SUCCESS;
}
