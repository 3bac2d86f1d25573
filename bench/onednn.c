/* onednn.c — oneDNN's batch norm timed in a child process (see onednn.h). */
#ifdef CLBN_HAVE_DNNL
#include "onednn.h"
#include "bench.h"
#include "flush.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { OP_TRAIN, OP_INFER, OP_BACKWARD, OPS };

/* The memories an op may take, by argument index; the primitive says which it wants. */
enum { M_SRC, M_DST, M_SCALE, M_SHIFT, M_MEAN, M_VAR, M_DDST, M_DSRC, M_DSCALE, M_DSHIFT, MEMS };
static const int mem_arg[MEMS] = {DNNL_ARG_SRC,       DNNL_ARG_DST,      DNNL_ARG_SCALE,
                                  DNNL_ARG_SHIFT,     DNNL_ARG_MEAN,     DNNL_ARG_VARIANCE,
                                  DNNL_ARG_DIFF_DST,  DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_SCALE,
                                  DNNL_ARG_DIFF_SHIFT};

typedef struct dnnl_op {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_exec_arg_t args[MEMS + 1];
    int nargs;
    dnnl_memory_t workspace;
} dnnl_op;

static int wants(const_dnnl_primitive_desc_t pd, int arg) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    return md && md->ndims > 0;
}

static int make_op(dnnl_op *op, const dnnl_batch_normalization_desc_t *d, dnnl_engine_t eng,
                   const_dnnl_primitive_desc_t hint, dnnl_memory_t *mem) {
    memset(op, 0, sizeof *op);
    if (dnnl_primitive_desc_create(&op->pd, d, NULL, eng, hint) != dnnl_success ||
        dnnl_primitive_create(&op->prim, op->pd) != dnnl_success)
        return 1;
    for (int i = 0; i < MEMS; i++)
        if (wants(op->pd, mem_arg[i]))
            op->args[op->nargs++] = (dnnl_exec_arg_t){mem_arg[i], mem[i]};
    if (wants(op->pd, DNNL_ARG_WORKSPACE)) {
        const dnnl_memory_desc_t *md =
            dnnl_primitive_desc_query_md(op->pd, dnnl_query_exec_arg_md, DNNL_ARG_WORKSPACE);
        if (dnnl_memory_create(&op->workspace, md, eng, DNNL_MEMORY_ALLOCATE) != dnnl_success)
            return 1;
        op->args[op->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, op->workspace};
    }
    return 0;
}

static void free_op(dnnl_op *op) {
    if (op->prim)
        dnnl_primitive_destroy(op->prim);
    if (op->pd)
        dnnl_primitive_desc_destroy(op->pd);
    if (op->workspace)
        dnnl_memory_destroy(op->workspace);
}

static float *data_of(dnnl_memory_t m) {
    void *p = NULL;
    dnnl_memory_get_data_handle(m, &p);
    return p;
}

int bench_onednn_measure(const clbn_shape *s, int nhwc, int runs, int warmup, size_t flush_bytes,
                         double median[3]) {
    const int two_d = s->layout == CLBN_LAYOUT_NC;
    dnnl_dims_t dims = {(dnnl_dim_t)s->n, (dnnl_dim_t)s->c, (dnnl_dim_t)s->h, (dnnl_dim_t)s->w};
    dnnl_dims_t cdims = {(dnnl_dim_t)s->c};
    const size_t C = (size_t)s->c, E = (size_t)(s->n * s->c * (two_d ? 1 : s->h * s->w));
    const float eps = 1e-5f;
    dnnl_engine_t eng = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_memory_desc_t data_md, c_md;
    dnnl_memory_t mem[MEMS] = {0};
    dnnl_op ops[OPS];
    memset(ops, 0, sizeof ops);
    double *t[OPS] = {0};
    bench_host_flush flush = {0};
    int rc = 1;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&data_md, two_d ? 2 : 4, dims, dnnl_f32,
                                     two_d  ? dnnl_nc
                                     : nhwc ? dnnl_nhwc
                                            : dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&c_md, 1, cdims, dnnl_f32, dnnl_a) != dnnl_success) {
        fprintf(stderr, "oneDNN: engine or memory descriptor failed\n");
        goto done;
    }
    for (int i = 0; i < MEMS; i++) {
        int is_data = i == M_SRC || i == M_DST || i == M_DDST || i == M_DSRC;
        if (dnnl_memory_create(&mem[i], is_data ? &data_md : &c_md, eng, DNNL_MEMORY_ALLOCATE) !=
            dnnl_success) {
            fprintf(stderr, "oneDNN: memory allocation failed\n");
            goto done;
        }
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    float *src = data_of(mem[M_SRC]), *ddst = data_of(mem[M_DDST]);
    for (size_t i = 0; i < E; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 4.0 - 1.0);
        ddst[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    float *scale = data_of(mem[M_SCALE]), *shift = data_of(mem[M_SHIFT]);
    float *mean = data_of(mem[M_MEAN]), *var = data_of(mem[M_VAR]);
    for (size_t c = 0; c < C; c++) {
        scale[c] = 0.5f + (float)(c % 5) * 0.25f;
        shift[c] = (float)(c % 3) * 0.5f - 0.5f;
        mean[c] = 0.0f;
        var[c] = 1.0f;
    }
    const unsigned affine = dnnl_use_scale | dnnl_use_shift;
    dnnl_batch_normalization_desc_t d_train, d_infer, d_back;
    if (dnnl_batch_normalization_forward_desc_init(&d_train, dnnl_forward_training, &data_md, eps,
                                                   affine) != dnnl_success ||
        dnnl_batch_normalization_forward_desc_init(&d_infer, dnnl_forward_inference, &data_md, eps,
                                                   affine | dnnl_use_global_stats) !=
            dnnl_success ||
        dnnl_batch_normalization_backward_desc_init(&d_back, dnnl_backward, &data_md, &data_md, eps,
                                                    affine) != dnnl_success ||
        make_op(&ops[OP_TRAIN], &d_train, eng, NULL, mem) ||
        make_op(&ops[OP_INFER], &d_infer, eng, NULL, mem) ||
        make_op(&ops[OP_BACKWARD], &d_back, eng, ops[OP_TRAIN].pd, mem)) {
        fprintf(stderr, "oneDNN: creating the batch-norm primitives failed\n");
        goto done;
    }
    for (int op = 0; op < OPS; op++)
        if (!(t[op] = calloc((size_t)runs, sizeof(double))))
            goto done;
    if (flush_bytes && bench_host_flush_init(&flush, flush_bytes)) {
        fprintf(stderr, "oneDNN: no memory for the cache flush\n");
        goto done;
    }
    for (int r = -warmup; r < runs; r++) {
        for (int op = 0; op < OPS; op++) {
            if (flush.buf)
                bench_host_flush_run(&flush);
            double t0 = bench_now();
            if (dnnl_primitive_execute(ops[op].prim, stream, ops[op].nargs, ops[op].args) !=
                    dnnl_success ||
                dnnl_stream_wait(stream) != dnnl_success) {
                fprintf(stderr, "oneDNN: executing op %d failed\n", op);
                goto done;
            }
            if (r >= 0)
                t[op][r] = bench_now() - t0;
        }
    }
    for (int op = 0; op < OPS; op++)
        median[op] = bench_median(t[op], (size_t)runs);
    rc = 0;
done:
    bench_host_flush_release(&flush);
    for (int op = 0; op < OPS; op++) {
        free_op(&ops[op]);
        free(t[op]);
    }
    for (int i = 0; i < MEMS; i++)
        if (mem[i])
            dnnl_memory_destroy(mem[i]);
    if (stream)
        dnnl_stream_destroy(stream);
    if (eng)
        dnnl_engine_destroy(eng);
    return rc;
}

int bench_onednn_spawn(const clbn_shape *s, int nhwc, int runs, int warmup, size_t flush_bytes,
                       double median[3]) {
    char shape[96], r[16], w[16], fl[24];
    if (s->layout == CLBN_LAYOUT_NC)
        snprintf(shape, sizeof shape, "%llu,%llu", (unsigned long long)s->n,
                 (unsigned long long)s->c);
    else
        snprintf(shape, sizeof shape, "%llu,%llu,%llu,%llu", (unsigned long long)s->n,
                 (unsigned long long)s->c, (unsigned long long)s->h, (unsigned long long)s->w);
    snprintf(r, sizeof r, "%d", runs);
    snprintf(w, sizeof w, "%d", warmup);
    snprintf(fl, sizeof fl, "%zu", flush_bytes >> 20);
    const char *layout = s->layout == CLBN_LAYOUT_NC ? "nc" : nhwc ? "nhwc" : "nchw";
    char *argv[] = {"clbn", "bench", BENCH_ONEDNN_CHILD_OPTION, shape, (char *)layout, r, w,
                    fl,     NULL};
    /* The environment is built before fork: between fork and exec only async-signal-safe calls
     * are allowed, and the OpenCL driver's threads may hold malloc's lock. */
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    if (!envp)
        return 1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "OMP_WAIT_POLICY=", 16) != 0)
            envp[k++] = environ[i];
    envp[k++] = "OMP_WAIT_POLICY=passive";
    int fd[2];
    if (pipe(fd) != 0) {
        free(envp);
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    free(envp);
    close(fd[1]);
    if (pid < 0) {
        close(fd[0]);
        return 1;
    }
    FILE *f = fdopen(fd[0], "r");
    int got = f ? fscanf(f, "%lf %lf %lf", &median[0], &median[1], &median[2]) : 0;
    if (f)
        fclose(f);
    else
        close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return !(got == 3 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
#else
/* Without oneDNN this unit is empty; ISO C wants at least one declaration. */
typedef int bench_onednn_not_built;
#endif
