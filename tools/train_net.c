/* train_net.c - the training demo's network (see train_net.h): CLBlast's sgemm for the dense
 * layers, clbn for batch norm, tools/train.cl for the rest, all on one in-order queue. */
#include "train_net.h"

#include <clblast_c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The demo's kernels, embedded at build time (cmake/embed_kernels.cmake, prefix tn). */
struct tn_embedded_source {
    const char *name;
    const char *text;
    size_t length;
};
extern const struct tn_embedded_source tn_embedded_sources[];
extern const size_t tn_embedded_source_count;

enum { K_GATHER, K_BIAS_ACT, K_ACT_BWD, K_COLSUM, K_XENT, K_SGD, K_COUNT, K_ARGMAX, K_N };
static const char *const kernel_names[K_N] = {"tn_gather",       "tn_bias_act", "tn_act_backward",
                                              "tn_colsum",       "tn_softmax_xent", "tn_sgd",
                                              "tn_count_correct", "tn_argmax"};

/* A profiled command: one event (CLBlast, the demo's kernels: start to end) or a marker and the
 * call's event (clbn: the marker's end, when the work before it is done, to the call's end). */
typedef enum { T_BN, T_GEMM, T_OTHER } t_kind;
typedef struct pending {
    cl_event begin, end; /* begin NULL: end's own start */
    t_kind kind;
} pending;

struct tn_data {
    cl_mem x, labels;
    size_t count, dim;
};

struct tn_net {
    clbn_context *ctx;
    cl_context cc;
    cl_command_queue q;
    tn_config cfg;
    cl_program prog;
    cl_kernel k[K_N];
    cl_mem W[TN_MAX_LAYERS + 1], b[TN_MAX_LAYERS + 1], dW[TN_MAX_LAYERS + 1],
        db[TN_MAX_LAYERS + 1];
    clbn_bn *bn[TN_MAX_LAYERS + 1];  /* hidden layers of a batch-norm network */
    clbn_bn *bn1[TN_MAX_LAYERS + 1]; /* the same without tracking: a single row's statistics */
    cl_mem z[TN_MAX_LAYERS + 1], a[TN_MAX_LAYERS + 1]; /* a[0]: the gathered input batch */
    cl_mem da, dz, labels, loss, order, counter;
    size_t order_count;
    int last_B;
    pending *pend;
    size_t npend, cappend;
    tn_timing tm;
    char *err;
    size_t cap;
};

static int fail(tn_net *n, const char *fmt, ...) {
    if (n->err && n->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(n->err, n->cap, fmt, ap);
        va_end(ap);
    }
    return 1;
}

/* Every public entry sets where its message goes. */
static void bind(tn_net *n, char *err, size_t cap) {
    n->err = err;
    n->cap = cap;
}

static int widest(const tn_config *c) {
    int w = 0;
    for (int l = 0; l <= c->layers; l++)
        w = c->sizes[l] > w ? c->sizes[l] : w;
    return w;
}

static int has_bias(const tn_net *n, int l) {
    return !n->cfg.bn || l == n->cfg.layers;
}

static int has_bn(const tn_net *n, int l) {
    return n->cfg.bn && l < n->cfg.layers;
}

static cl_mem make_buffer(tn_net *n, size_t bytes, const void *init) {
    cl_int e = CL_SUCCESS;
    cl_mem m = clCreateBuffer(n->cc, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0), bytes,
                              (void *)init, &e);
    return e == CL_SUCCESS ? m : NULL;
}

/* Keeps a profiled command's events until tn_timing_read drains them. */
static int track(tn_net *n, cl_event begin, cl_event end, t_kind kind) {
    if (n->npend == n->cappend) {
        size_t cap = n->cappend ? 2 * n->cappend : 256;
        pending *p = realloc(n->pend, cap * sizeof *p);
        if (!p) {
            if (begin)
                clReleaseEvent(begin);
            clReleaseEvent(end);
            return fail(n, "out of host memory for profiling events");
        }
        n->pend = p;
        n->cappend = cap;
    }
    n->pend[n->npend++] = (pending){begin, end, kind};
    return 0;
}

static cl_event *ev_slot(tn_net *n, cl_event *slot) {
    *slot = NULL;
    return n->cfg.profile ? slot : NULL;
}

static int kernel(tn_net *n, int id, cl_uint dims, const size_t *global, int nargs, ...) {
    cl_kernel k = n->k[id];
    va_list ap;
    va_start(ap, nargs);
    cl_int e = CL_SUCCESS;
    for (int i = 0; i < nargs && e == CL_SUCCESS; i++) {
        size_t size = va_arg(ap, size_t);
        const void *value = va_arg(ap, const void *);
        e = clSetKernelArg(k, (cl_uint)i, size, value);
    }
    va_end(ap);
    cl_event ev;
    if (e == CL_SUCCESS)
        e = clEnqueueNDRangeKernel(n->q, k, dims, NULL, global, NULL, 0, NULL, ev_slot(n, &ev));
    if (e != CL_SUCCESS)
        return fail(n, "%s failed (OpenCL error %d)", kernel_names[id], e);
    return n->cfg.profile ? track(n, NULL, ev, T_OTHER) : 0;
}

#define ARG(v) sizeof(v), (const void *)&(v)

/* C (m x cols) = op(A) op(B), row-major, through CLBlast. */
static int gemm(tn_net *n, int ta, int tb, size_t m, size_t cols, size_t k, cl_mem A, size_t ao,
                size_t lda, cl_mem B, size_t ldb, cl_mem C, size_t ldc) {
    cl_event ev;
    CLBlastStatusCode s = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, cols, k, 1.0f, A, ao, lda, B, 0, ldb,
        0.0f, C, 0, ldc, &n->q, ev_slot(n, &ev));
    if (s != CLBlastSuccess)
        return fail(n, "CLBlast sgemm %zux%zux%zu failed (status %d)", m, cols, k, (int)s);
    return n->cfg.profile ? track(n, NULL, ev, T_GEMM) : 0;
}

/* A marker before a clbn call, so its time is measured from when the queue reaches it. */
static int bn_begin(tn_net *n, cl_event *marker) {
    *marker = NULL;
    if (!n->cfg.profile)
        return 0;
    cl_int e = clEnqueueMarkerWithWaitList(n->q, 0, NULL, marker);
    return e == CL_SUCCESS ? 0 : fail(n, "clEnqueueMarkerWithWaitList failed (%d)", e);
}

static int bn_end(tn_net *n, clbn_status st, const char *what, cl_event marker, cl_event ev) {
    if (st != CLBN_SUCCESS) {
        if (marker)
            clReleaseEvent(marker);
        return fail(n, "clbn %s failed: %s: %s", what, clbn_status_name(st),
                    clbn_last_error_message());
    }
    return n->cfg.profile ? track(n, marker, ev, T_BN) : 0;
}

static clbn_shape nc_shape(int B, int c) {
    clbn_shape s = {CLBN_LAYOUT_NC, (uint64_t)B, (uint64_t)c, 1, 1};
    return s;
}

typedef enum { F_TRAIN, F_INFER, F_SINGLE } f_mode;

/* Forward from x0 (B rows at float offset x0o) to the logits in z[L]. */
static int forward(tn_net *n, cl_mem x0, size_t x0o, int B, f_mode mode) {
    const tn_config *c = &n->cfg;
    for (int l = 1; l <= c->layers; l++) {
        const size_t in = (size_t)c->sizes[l - 1], out = (size_t)c->sizes[l];
        cl_mem A = l == 1 ? x0 : n->a[l - 1];
        if (gemm(n, 0, 0, (size_t)B, out, in, A, l == 1 ? x0o : 0, in, n->W[l], out, n->z[l], out))
            return 1;
        if (has_bn(n, l)) {
            clbn_shape s = nc_shape(B, (int)out);
            cl_event m, ev;
            if (bn_begin(n, &m))
                return 1;
            clbn_status st =
                mode == F_TRAIN
                    ? clbn_bn_forward_train(n->bn[l], &s, n->z[l], 0, n->a[l], 0, NULL, NULL, 0,
                                            NULL, ev_slot(n, &ev))
                    : clbn_bn_forward_infer(mode == F_SINGLE ? n->bn1[l] : n->bn[l], &s, n->z[l],
                                            0, n->a[l], 0, NULL, 0, NULL, ev_slot(n, &ev));
            if (bn_end(n, st, mode == F_TRAIN ? "forward_train" : "forward_infer", m, ev))
                return 1;
        } else {
            const int act = l == c->layers ? 0 : (int)c->act;
            cl_mem dst = l == c->layers ? n->z[l] : n->a[l];
            const size_t g = (size_t)B * out;
            cl_ulong cols = out;
            if (kernel(n, K_BIAS_ACT, 1, &g, 5, ARG(n->z[l]), ARG(n->b[l]), ARG(dst), ARG(cols),
                       ARG(act)))
                return 1;
        }
    }
    return 0;
}

static int sgd(tn_net *n, cl_mem p, cl_mem g, size_t count) {
    return kernel(n, K_SGD, 1, &count, 3, ARG(p), ARG(g), ARG(n->cfg.lr));
}

static int bn_vector(tn_net *n, int l, clbn_vector v, cl_mem *m) {
    clbn_status st = clbn_bn_get_buffer(n->bn[l], v, m);
    return st == CLBN_SUCCESS ? 0 : fail(n, "clbn_bn_get_buffer: %s", clbn_last_error_message());
}

/* Loss, backward and the SGD update of a batch whose input is x0 and labels n->labels. */
static int train_step(tn_net *n, cl_mem x0, int B) {
    const tn_config *c = &n->cfg;
    const int L = c->layers;
    if (forward(n, x0, 0, B, F_TRAIN))
        return 1;
    const size_t rows = (size_t)B;
    cl_ulong K = (cl_ulong)c->sizes[L];
    const float inv = 1.0f / (float)B;
    if (kernel(n, K_XENT, 1, &rows, 6, ARG(n->z[L]), ARG(n->labels), ARG(K), ARG(inv), ARG(n->dz),
               ARG(n->loss)))
        return 1;
    for (int l = L; l >= 1; l--) { /* n->dz holds dL/dz_l */
        const size_t in = (size_t)c->sizes[l - 1], out = (size_t)c->sizes[l];
        cl_mem A = l == 1 ? x0 : n->a[l - 1];
        if (gemm(n, 1, 0, in, out, rows, A, 0, in, n->dz, out, n->dW[l], out))
            return 1;
        if (has_bias(n, l)) {
            cl_ulong R = rows, C = out;
            if (kernel(n, K_COLSUM, 1, &out, 4, ARG(n->dz), ARG(R), ARG(C), ARG(n->db[l])))
                return 1;
        }
        if (l == 1)
            break;
        if (gemm(n, 0, 1, rows, in, out, n->dz, 0, out, n->W[l], out, n->da, in))
            return 1;
        const int h = l - 1; /* the hidden layer below: dL/da_h -> dL/dz_h */
        if (has_bn(n, h)) {
            clbn_shape s = nc_shape(B, (int)in);
            cl_event m, ev;
            if (bn_begin(n, &m))
                return 1;
            clbn_status st = clbn_bn_backward(n->bn[h], &s, n->z[h], 0, n->a[h], 0, n->da, 0,
                                              n->dz, 0, NULL, NULL, 0, NULL, ev_slot(n, &ev));
            if (bn_end(n, st, "backward", m, ev))
                return 1;
        } else {
            const size_t g = rows * in;
            const int act = (int)c->act;
            if (kernel(n, K_ACT_BWD, 1, &g, 4, ARG(n->da), ARG(n->a[h]), ARG(n->dz), ARG(act)))
                return 1;
        }
    }
    for (int l = 1; l <= L; l++) {
        const size_t out = (size_t)c->sizes[l];
        if (sgd(n, n->W[l], n->dW[l], (size_t)c->sizes[l - 1] * out))
            return 1;
        if (has_bias(n, l) && sgd(n, n->b[l], n->db[l], out))
            return 1;
        if (has_bn(n, l)) {
            cl_mem g, dg, be, dbe;
            if (bn_vector(n, l, CLBN_VECTOR_GAMMA, &g) || bn_vector(n, l, CLBN_VECTOR_DGAMMA, &dg) ||
                bn_vector(n, l, CLBN_VECTOR_BETA, &be) || bn_vector(n, l, CLBN_VECTOR_DBETA, &dbe) ||
                sgd(n, g, dg, out) || sgd(n, be, dbe, out))
                return 1;
        }
    }
    n->last_B = B;
    n->tm.steps++;
    return 0;
}

static int check_batch(tn_net *n, int B) {
    if (B < 1 || B > n->cfg.max_batch)
        return fail(n, "batch of %d rows: expected 1 to %d", B, n->cfg.max_batch);
    if (B < 2 && n->cfg.bn)
        return fail(n, "batch norm in training needs batches of at least 2 rows, not %d", B);
    return 0;
}

static int build(tn_net *n) {
    const char *src[8];
    size_t len[8];
    size_t count = tn_embedded_source_count < 8 ? tn_embedded_source_count : 8;
    for (size_t i = 0; i < count; i++) {
        src[i] = tn_embedded_sources[i].text;
        len[i] = tn_embedded_sources[i].length;
    }
    cl_int e = CL_SUCCESS;
    n->prog = clCreateProgramWithSource(n->cc, (cl_uint)count, src, len, &e);
    if (e != CL_SUCCESS)
        return fail(n, "clCreateProgramWithSource failed (%d)", e);
    cl_device_id dev;
    e = clGetCommandQueueInfo(n->q, CL_QUEUE_DEVICE, sizeof dev, &dev, NULL);
    if (e == CL_SUCCESS)
        e = clBuildProgram(n->prog, 1, &dev, "-cl-std=CL1.2", NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[2048] = "";
        clGetProgramBuildInfo(n->prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        return fail(n, "building tools/train.cl failed (%d): %s", e, log);
    }
    for (int i = 0; i < K_N; i++) {
        n->k[i] = clCreateKernel(n->prog, kernel_names[i], &e);
        if (e != CL_SUCCESS)
            return fail(n, "clCreateKernel(%s) failed (%d)", kernel_names[i], e);
    }
    return 0;
}

static int check_config(tn_net *n, const tn_config *c) {
    if (c->layers < 2 || c->layers > TN_MAX_LAYERS)
        return fail(n, "layers = %d: expected 2 to %d", c->layers, TN_MAX_LAYERS);
    for (int l = 0; l <= c->layers; l++)
        if (c->sizes[l] < 1)
            return fail(n, "sizes[%d] = %d: expected at least 1", l, c->sizes[l]);
    if (c->act != CLBN_ACTIVATION_RELU && c->act != CLBN_ACTIVATION_SIGMOID)
        return fail(n, "activation %d: expected ReLU or sigmoid", (int)c->act);
    if (c->max_batch < 1)
        return fail(n, "max_batch = %d: expected at least 1", c->max_batch);
    return 0;
}

static int create_bn(tn_net *n, int l, uint32_t flags, clbn_bn **out) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = (uint64_t)n->cfg.sizes[l];
    o.activation = n->cfg.act;
    o.flags = flags;
    clbn_status st = clbn_bn_create(n->ctx, &o, out);
    return st == CLBN_SUCCESS ? 0 : fail(n, "clbn_bn_create: %s", clbn_last_error_message());
}

static int create_buffers(tn_net *n, const float *const *weights) {
    const tn_config *c = &n->cfg;
    const size_t B = (size_t)c->max_batch, wide = (size_t)widest(c), f = sizeof(float);
    int bad = !(n->a[0] = make_buffer(n, B * (size_t)c->sizes[0] * f, NULL)) ||
              !(n->da = make_buffer(n, B * wide * f, NULL)) ||
              !(n->dz = make_buffer(n, B * wide * f, NULL)) ||
              !(n->labels = make_buffer(n, B * sizeof(cl_int), NULL)) ||
              !(n->loss = make_buffer(n, B * f, NULL)) ||
              !(n->counter = make_buffer(n, sizeof(cl_int), NULL));
    for (int l = 1; !bad && l <= c->layers; l++) {
        const size_t in = (size_t)c->sizes[l - 1], out = (size_t)c->sizes[l];
        float *zeros = calloc(out, f);
        bad = !zeros || !(n->W[l] = make_buffer(n, in * out * f, weights[l - 1])) ||
              !(n->dW[l] = make_buffer(n, in * out * f, NULL)) ||
              !(n->z[l] = make_buffer(n, B * out * f, NULL)) ||
              !(n->a[l] = make_buffer(n, B * out * f, NULL)) ||
              (has_bias(n, l) && (!(n->b[l] = make_buffer(n, out * f, zeros)) ||
                                  !(n->db[l] = make_buffer(n, out * f, zeros))));
        free(zeros);
        if (!bad && has_bn(n, l))
            bad = create_bn(n, l, CLBN_BN_FLAGS_DEFAULT, &n->bn[l]) ||
                  create_bn(n, l, CLBN_USE_SCALE | CLBN_USE_SHIFT, &n->bn1[l]);
    }
    return bad ? (n->err && n->err[0] ? 1 : fail(n, "allocating the network's buffers failed")) : 0;
}

int tn_create(clbn_context *ctx, const tn_config *cfg, const float *const *weights, tn_net **net,
              char *err, size_t cap) {
    *net = NULL;
    if (err && cap)
        err[0] = '\0';
    tn_net *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, cap, "out of host memory");
        return 1;
    }
    bind(n, err, cap);
    n->ctx = ctx;
    n->cfg = *cfg;
    clbn_status st = clbn_context_get_cl(ctx, &n->cc, &n->q);
    if (st != CLBN_SUCCESS || check_config(n, cfg) || build(n) || create_buffers(n, weights)) {
        if (st != CLBN_SUCCESS)
            fail(n, "clbn_context_get_cl: %s", clbn_last_error_message());
        tn_release(n);
        return 1;
    }
    *net = n;
    return 0;
}

static void release_mem(cl_mem *m) {
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

static void drop_pending(tn_net *n) {
    for (size_t i = 0; i < n->npend; i++) {
        if (n->pend[i].begin)
            clReleaseEvent(n->pend[i].begin);
        clReleaseEvent(n->pend[i].end);
    }
    n->npend = 0;
}

void tn_release(tn_net *n) {
    if (!n)
        return;
    if (n->q)
        clFinish(n->q);
    drop_pending(n);
    free(n->pend);
    for (int l = 0; l <= TN_MAX_LAYERS; l++) {
        release_mem(&n->W[l]);
        release_mem(&n->b[l]);
        release_mem(&n->dW[l]);
        release_mem(&n->db[l]);
        release_mem(&n->z[l]);
        release_mem(&n->a[l]);
        clbn_bn_release(n->bn[l]);
        clbn_bn_release(n->bn1[l]);
    }
    release_mem(&n->da);
    release_mem(&n->dz);
    release_mem(&n->labels);
    release_mem(&n->loss);
    release_mem(&n->order);
    release_mem(&n->counter);
    for (int i = 0; i < K_N; i++)
        if (n->k[i])
            clReleaseKernel(n->k[i]);
    if (n->prog)
        clReleaseProgram(n->prog);
    free(n);
}

const tn_config *tn_get_config(const tn_net *n) {
    return &n->cfg;
}

clbn_bn *tn_get_bn(tn_net *n, int layer) {
    return layer >= 1 && layer <= n->cfg.layers ? n->bn[layer] : NULL;
}

/* The buffer and size of one parameter, or NULL where the layer has none. */
static cl_mem param_buffer(tn_net *n, tn_param what, int l, size_t *count) {
    if (l < 1 || l > n->cfg.layers)
        return NULL;
    const size_t out = (size_t)n->cfg.sizes[l];
    *count = out;
    static const clbn_vector vec[TN_PARAM_COUNT] = {
        [TN_GAMMA] = CLBN_VECTOR_GAMMA,       [TN_BETA] = CLBN_VECTOR_BETA,
        [TN_DGAMMA] = CLBN_VECTOR_DGAMMA,     [TN_DBETA] = CLBN_VECTOR_DBETA,
        [TN_RUN_MEAN] = CLBN_VECTOR_RUNNING_MEAN, [TN_RUN_VAR] = CLBN_VECTOR_RUNNING_VAR};
    switch (what) {
    case TN_W:
    case TN_DW:
        *count = (size_t)n->cfg.sizes[l - 1] * out;
        return what == TN_W ? n->W[l] : n->dW[l];
    case TN_B:
    case TN_DB:
        return what == TN_B ? n->b[l] : n->db[l];
    case TN_GAMMA:
    case TN_BETA:
    case TN_DGAMMA:
    case TN_DBETA:
    case TN_RUN_MEAN:
    case TN_RUN_VAR: {
        cl_mem m = NULL;
        if (has_bn(n, l) && clbn_bn_get_buffer(n->bn[l], vec[what], &m) != CLBN_SUCCESS)
            m = NULL;
        return m;
    }
    default:
        return NULL;
    }
}

static int transfer(tn_net *n, tn_param what, int l, void *host, size_t count, int write) {
    size_t want = 0;
    cl_mem m = param_buffer(n, what, l, &want);
    if (!m)
        return fail(n, "layer %d has no parameter %d", l, (int)what);
    if (count != want)
        return fail(n, "parameter %d of layer %d holds %zu floats, not %zu", (int)what, l, want,
                    count);
    cl_int e = write ? clEnqueueWriteBuffer(n->q, m, CL_TRUE, 0, count * 4, host, 0, NULL, NULL)
                     : clEnqueueReadBuffer(n->q, m, CL_TRUE, 0, count * 4, host, 0, NULL, NULL);
    return e == CL_SUCCESS ? 0 : fail(n, "%s a parameter failed (%d)", write ? "writing" : "reading", e);
}

int tn_read(tn_net *n, tn_param what, int layer, float *host, size_t count, char *err,
            size_t cap) {
    bind(n, err, cap);
    return transfer(n, what, layer, host, count, 0);
}

int tn_write(tn_net *n, tn_param what, int layer, const float *host, size_t count, char *err,
             size_t cap) {
    bind(n, err, cap);
    return transfer(n, what, layer, (void *)host, count, 1);
}

int tn_data_create(clbn_context *ctx, const float *x, const int32_t *labels, size_t count,
                   size_t dim, tn_data **data, char *err, size_t cap) {
    *data = NULL;
    cl_context cc;
    cl_command_queue q;
    tn_data *d = calloc(1, sizeof *d);
    cl_int e1 = CL_SUCCESS, e2 = CL_SUCCESS;
    if (!d || clbn_context_get_cl(ctx, &cc, &q) != CLBN_SUCCESS || count == 0) {
        free(d);
        snprintf(err, cap, "creating a data set of %zu rows failed", count);
        return 1;
    }
    d->x = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, count * dim * sizeof(float),
                          (void *)x, &e1);
    d->labels = clCreateBuffer(cc, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               count * sizeof(cl_int), (void *)labels, &e2);
    d->count = count;
    d->dim = dim;
    if (e1 != CL_SUCCESS || e2 != CL_SUCCESS) {
        snprintf(err, cap, "allocating %zu x %zu floats on the device failed (%d, %d)", count, dim,
                 e1, e2);
        tn_data_release(d);
        return 1;
    }
    *data = d;
    return 0;
}

void tn_data_release(tn_data *d) {
    if (!d)
        return;
    release_mem(&d->x);
    release_mem(&d->labels);
    free(d);
}

size_t tn_data_count(const tn_data *d) {
    return d->count;
}

int tn_set_order(tn_net *n, const int32_t *order, size_t count, char *err, size_t cap) {
    bind(n, err, cap);
    if (n->order_count != count) {
        release_mem(&n->order);
        n->order_count = 0;
        if (!(n->order = make_buffer(n, count * sizeof(cl_int), NULL)))
            return fail(n, "allocating the order of %zu rows failed", count);
        n->order_count = count;
    }
    cl_int e = clEnqueueWriteBuffer(n->q, n->order, CL_TRUE, 0, count * sizeof(cl_int), order, 0,
                                    NULL, NULL);
    return e == CL_SUCCESS ? 0 : fail(n, "writing the order failed (%d)", e);
}

int tn_step_indexed(tn_net *n, const tn_data *d, size_t first, int B, char *err, size_t cap) {
    bind(n, err, cap);
    if (check_batch(n, B))
        return 1;
    if (!n->order || first + (size_t)B > n->order_count)
        return fail(n, "rows %zu..%zu of an order of %zu", first, first + (size_t)B,
                    n->order_count);
    if (d->dim != (size_t)n->cfg.sizes[0])
        return fail(n, "data rows of %zu values for a network of %d inputs", d->dim,
                    n->cfg.sizes[0]);
    const size_t g[2] = {d->dim, (size_t)B};
    cl_ulong f = first, dim = d->dim;
    return kernel(n, K_GATHER, 2, g, 7, ARG(d->x), ARG(d->labels), ARG(n->order), ARG(f), ARG(dim),
                  ARG(n->a[0]), ARG(n->labels)) ||
           train_step(n, n->a[0], B);
}

int tn_step_host(tn_net *n, const float *x, const int32_t *labels, int B, char *err, size_t cap) {
    bind(n, err, cap);
    if (check_batch(n, B))
        return 1;
    cl_int e = clEnqueueWriteBuffer(n->q, n->a[0], CL_TRUE, 0,
                                    (size_t)B * (size_t)n->cfg.sizes[0] * sizeof(float), x, 0, NULL,
                                    NULL);
    if (e == CL_SUCCESS)
        e = clEnqueueWriteBuffer(n->q, n->labels, CL_TRUE, 0, (size_t)B * sizeof(cl_int), labels,
                                 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return fail(n, "writing the batch failed (%d)", e);
    return train_step(n, n->a[0], B);
}

int tn_last_loss(tn_net *n, double *loss, char *err, size_t cap) {
    bind(n, err, cap);
    if (n->last_B < 1)
        return fail(n, "no step has run");
    float v[4096];
    double s = 0;
    for (int r0 = 0; r0 < n->last_B; r0 += 4096) {
        int k = n->last_B - r0 < 4096 ? n->last_B - r0 : 4096;
        cl_int e = clEnqueueReadBuffer(n->q, n->loss, CL_TRUE, (size_t)r0 * 4, (size_t)k * 4, v, 0,
                                       NULL, NULL);
        if (e != CL_SUCCESS)
            return fail(n, "reading the loss failed (%d)", e);
        for (int i = 0; i < k; i++)
            s += v[i];
    }
    *loss = s / n->last_B;
    return 0;
}

int tn_evaluate(tn_net *n, const tn_data *d, size_t first, size_t count, size_t *correct,
                char *err, size_t cap) {
    bind(n, err, cap);
    *correct = 0;
    if (first + count > d->count || d->dim != (size_t)n->cfg.sizes[0])
        return fail(n, "rows %zu..%zu of a data set of %zu rows of %zu values", first,
                    first + count, d->count, d->dim);
    const cl_int zero = 0;
    cl_int e = clEnqueueWriteBuffer(n->q, n->counter, CL_TRUE, 0, sizeof zero, &zero, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return fail(n, "resetting the counter failed (%d)", e);
    const int profile = n->cfg.profile;
    n->cfg.profile = 0; /* evaluation is not a step */
    cl_ulong K = (cl_ulong)n->cfg.sizes[n->cfg.layers];
    int bad = 0;
    for (size_t r = first; !bad && r < first + count; r += (size_t)n->cfg.max_batch) {
        size_t B = first + count - r < (size_t)n->cfg.max_batch ? first + count - r
                                                                : (size_t)n->cfg.max_batch;
        cl_ulong lo = r;
        bad = forward(n, d->x, r * d->dim, (int)B, F_INFER) ||
              kernel(n, K_COUNT, 1, &B, 5, ARG(n->z[n->cfg.layers]), ARG(d->labels), ARG(lo),
                     ARG(K), ARG(n->counter));
    }
    n->cfg.profile = profile;
    cl_int got = 0;
    if (!bad && (e = clEnqueueReadBuffer(n->q, n->counter, CL_TRUE, 0, sizeof got, &got, 0, NULL,
                                         NULL)) != CL_SUCCESS)
        bad = fail(n, "reading the counter failed (%d)", e);
    *correct = bad ? 0 : (size_t)got;
    return bad;
}

/* bn1 takes the trained gamma and beta, so a single row is normalized by its own statistics
 * and then scaled and shifted as in training. */
static int sync_bn1(tn_net *n) {
    for (int l = 1; l < n->cfg.layers; l++) {
        if (!has_bn(n, l))
            continue;
        static const clbn_vector v[2] = {CLBN_VECTOR_GAMMA, CLBN_VECTOR_BETA};
        for (int i = 0; i < 2; i++) {
            cl_mem from, to;
            if (clbn_bn_get_buffer(n->bn[l], v[i], &from) != CLBN_SUCCESS ||
                clbn_bn_get_buffer(n->bn1[l], v[i], &to) != CLBN_SUCCESS)
                return fail(n, "clbn_bn_get_buffer: %s", clbn_last_error_message());
            cl_int e = clEnqueueCopyBuffer(n->q, from, to, 0, 0, (size_t)n->cfg.sizes[l] * 4, 0,
                                           NULL, NULL);
            if (e != CL_SUCCESS)
                return fail(n, "copying gamma/beta failed (%d)", e);
        }
    }
    return 0;
}

int tn_predict_one(tn_net *n, const tn_data *d, size_t row, int batch_stats, int *cls, char *err,
                   size_t cap) {
    bind(n, err, cap);
    if (row >= d->count || d->dim != (size_t)n->cfg.sizes[0])
        return fail(n, "row %zu of a data set of %zu rows", row, d->count);
    const int profile = n->cfg.profile;
    n->cfg.profile = 0;
    const size_t one = 1;
    cl_ulong K = (cl_ulong)n->cfg.sizes[n->cfg.layers];
    int bad = (batch_stats && sync_bn1(n)) ||
              forward(n, d->x, row * d->dim, 1, batch_stats ? F_SINGLE : F_INFER) ||
              kernel(n, K_ARGMAX, 1, &one, 3, ARG(n->z[n->cfg.layers]), ARG(K), ARG(n->counter));
    n->cfg.profile = profile;
    cl_int got = -1, e;
    if (!bad && (e = clEnqueueReadBuffer(n->q, n->counter, CL_TRUE, 0, sizeof got, &got, 0, NULL,
                                         NULL)) != CL_SUCCESS)
        bad = fail(n, "reading the prediction failed (%d)", e);
    *cls = got;
    return bad;
}

void tn_timing_reset(tn_net *n) {
    if (n->q)
        clFinish(n->q);
    drop_pending(n);
    memset(&n->tm, 0, sizeof n->tm);
}

static double seconds(cl_event e, cl_profiling_info what, cl_int *err) {
    cl_ulong t = 0;
    cl_int r = clGetEventProfilingInfo(e, what, sizeof t, &t, NULL);
    if (r != CL_SUCCESS)
        *err = r;
    return (double)t * 1e-9;
}

int tn_timing_read(tn_net *n, tn_timing *t, char *err, size_t cap) {
    bind(n, err, cap);
    cl_int e = clFinish(n->q);
    if (e != CL_SUCCESS)
        return fail(n, "clFinish failed (%d)", e);
    for (size_t i = 0; i < n->npend && e == CL_SUCCESS; i++) {
        const pending *p = &n->pend[i];
        double t0 = p->begin ? seconds(p->begin, CL_PROFILING_COMMAND_END, &e)
                             : seconds(p->end, CL_PROFILING_COMMAND_START, &e);
        double dt = seconds(p->end, CL_PROFILING_COMMAND_END, &e) - t0;
        dt = dt > 0 ? dt : 0;
        *(p->kind == T_BN ? &n->tm.bn_s : p->kind == T_GEMM ? &n->tm.gemm_s : &n->tm.other_s) += dt;
    }
    drop_pending(n);
    if (e != CL_SUCCESS)
        return fail(n, "reading profiling events failed (%d): is profiling on?", e);
    *t = n->tm;
    return 0;
}
