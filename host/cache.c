/* cache.c — builds programs through an on-disk binary cache keyed by device, driver version,
 * kernel-source hash and build options. Entries carry a checksum; a bad one is rebuilt. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAGIC "CLBNBIN1"
#define CACHE_HEADER 24 /* magic, length, checksum */

char *clbn_default_cache_dir(const char *requested) {
    const char *base = requested && *requested ? requested : getenv("CLBN_CACHE_DIR");
    char buf[4096];
    if (base && *base) {
        snprintf(buf, sizeof buf, "%s", base);
    } else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME")) {
        snprintf(buf, sizeof buf, "%s/clbn", getenv("XDG_CACHE_HOME"));
    } else if (getenv("HOME") && *getenv("HOME")) {
        snprintf(buf, sizeof buf, "%s/.cache/clbn", getenv("HOME"));
    } else {
        return NULL;
    }
    size_t n = strlen(buf) + 1;
    char *out = malloc(n);
    if (out)
        memcpy(out, buf, n);
    return out;
}

static clbn_status build_log_error(clbn_context *ctx, cl_program prog, cl_int err) {
    size_t len = 0;
    clbn_cl.clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
    char *log = malloc(len + 1);
    if (log && clbn_cl.clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, len, log,
                                             NULL) == CL_SUCCESS)
        log[len] = '\0';
    else if (log)
        log[0] = '\0';
    clbn_fail(CLBN_ERROR_BUILD_FAILED, "building the clbn kernels for %s failed (%s); build log:\n",
              ctx->info.device_name, clbn_status_name((clbn_status)err));
    clbn_fail_append(log ? log : "(no log)");
    free(log);
    return CLBN_ERROR_BUILD_FAILED;
}

int clbn_cache_parse(const unsigned char *data, size_t n, const unsigned char **bin, size_t *blen) {
    *bin = NULL;
    *blen = 0;
    if (!data || n <= CACHE_HEADER || memcmp(data, CACHE_MAGIC, 8) != 0 ||
        clbn_get_u64(data + 8) != n - CACHE_HEADER ||
        clbn_get_u64(data + 16) != clbn_fnv1a(CLBN_FNV_INIT, data + CACHE_HEADER, n - CACHE_HEADER))
        return 0;
    *bin = data + CACHE_HEADER;
    *blen = n - CACHE_HEADER;
    return 1;
}

static cl_program try_cached(clbn_context *ctx, const char *path, const char *options) {
    unsigned char *data = NULL;
    size_t n = 0;
    if (clbn_read_file(path, &data, &n) != CLBN_SUCCESS)
        return NULL;
    cl_program prog = NULL;
    const unsigned char *bin = NULL;
    size_t blen = 0;
    if (clbn_cache_parse(data, n, &bin, &blen)) {
        cl_int bstatus = CL_SUCCESS, err = CL_SUCCESS;
        prog = clbn_cl.clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &blen, &bin,
                                                 &bstatus, &err);
        if (err != CL_SUCCESS || bstatus != CL_SUCCESS) {
            if (prog)
                clbn_cl.clReleaseProgram(prog);
            prog = NULL;
        } else if (clbn_cl.clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) !=
                   CL_SUCCESS) {
            clbn_cl.clReleaseProgram(prog);
            prog = NULL;
        }
    }
    free(data);
    return prog;
}

static void store_cached(clbn_context *ctx, cl_program prog, const char *path) {
    size_t blen = 0;
    if (clbn_cl.clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof blen, &blen, NULL) !=
            CL_SUCCESS ||
        blen == 0)
        return;
    unsigned char *buf = malloc(CACHE_HEADER + blen);
    if (!buf)
        return;
    unsigned char *bin = buf + CACHE_HEADER;
    if (clbn_cl.clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) == CL_SUCCESS) {
        memcpy(buf, CACHE_MAGIC, 8);
        clbn_put_u64(buf + 8, blen);
        clbn_put_u64(buf + 16, clbn_fnv1a(CLBN_FNV_INIT, bin, blen));
        if (clbn_mkdirs(ctx->cache_dir) == 0)
            clbn_write_file_atomic(path, buf, CACHE_HEADER + blen); /* best effort */
        clbn_clear_error();
    }
    free(buf);
}

clbn_status clbn_build_cached(clbn_context *ctx, const char *source, size_t source_len,
                              const char *options, cl_program *program) {
    *program = NULL;
    char path[4352];
    path[0] = '\0';
    if (ctx->cache_dir) {
        const clbn_device_info *d = &ctx->info;
        uint64_t h = CLBN_FNV_INIT;
        const char *parts[] = {d->platform_name,  d->device_name,    d->vendor,
                               d->device_version, d->driver_version, options};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
            h = clbn_fnv1a(h, parts[i], strlen(parts[i]) + 1);
        h = clbn_fnv1a(h, source, source_len);
        snprintf(path, sizeof path, "%s/clbn-%016llx.bin", ctx->cache_dir, (unsigned long long)h);
        cl_program prog = try_cached(ctx, path, options);
        if (prog) {
            *program = prog;
            return CLBN_SUCCESS;
        }
    }
    cl_int err = CL_SUCCESS;
    cl_program prog = clbn_cl.clCreateProgramWithSource(ctx->cl_ctx, 1, &source, &source_len, &err);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "clCreateProgramWithSource failed");
    err = clbn_cl.clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        clbn_status st = build_log_error(ctx, prog, err);
        clbn_cl.clReleaseProgram(prog);
        return st;
    }
    if (path[0])
        store_cached(ctx, prog, path);
    *program = prog;
    return CLBN_SUCCESS;
}
