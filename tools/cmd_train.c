/* `clbn train`: the batch-norm paper's experiment on any OpenCL device - identical networks
 * with and without batch norm, trained from the same weights on the same batches of
 * Fashion-MNIST (or MNIST), with CLBlast for the dense layers and clbn for batch norm. */
#include "idx.h"
#include "tools.h"
#include "train_net.h"
#include "weights.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VALID_ROWS 5000 /* the last training images, held out */
#define SINGLE_ROWS 200

typedef struct train_args {
    int bn_mode; /* 1 on, 0 off, 2 both */
    clbn_activation act;
    double lr;
    int bad_init;
    int steps, batch, eval_every;
    unsigned long long seed;
    const char *data, *device, *csv, *plot, *json, *save, *eval;
    int single_check;
} train_args;

typedef struct curve_point {
    int step;
    double val_acc, loss;
} curve_point;

typedef struct run_result {
    int bn;
    double test_acc, steps_per_s, bn_share, gemm_share, train_s, warmup_s;
    double single_batch_acc, single_running_acc;
    curve_point *curve;
    int npoints;
} run_result;

static int usage_error(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "clbn train: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return CLBN_EXIT_USAGE;
}

static void train_usage(FILE *out) {
    fprintf(
        out,
        "usage: clbn train [options]\n"
        "       clbn train --eval DIR [--data DIR] [--device SEL]\n"
        "\n"
        "Trains a 784-100-100-100-10 network by plain SGD with softmax cross-entropy on\n"
        "MNIST-format images, entirely on one OpenCL device (CLBlast for the products, clbn\n"
        "for batch norm after each hidden product, before the activation).\n"
        "\n"
        "  --bn on|off|both       batch norm (both: two networks, same weights and batches;\n"
        "                         default both)\n"
        "  --activation relu|sigmoid   (default relu)\n"
        "  --lr F                 learning rate (default 1)\n"
        "  --init good|bad        initial weights from N(0, 0.05^2) or N(0, 5^2) (default good)\n"
        "  --steps N              training steps (default 2000)\n"
        "  --batch N              rows per batch (default 60; at least 2 with batch norm)\n"
        "  --eval-every N         validation accuracy every N steps (default 50)\n"
        "  --seed N               weights and batch order (default 1)\n"
        "  --data DIR             train-/t10k- images and labels, IDX, .gz or plain\n"
        "                         (default /usr/share/datasets/fashion-mnist)\n"
        "  --device SEL           gpu, cpu, P:D or a name substring\n"
        "  --csv FILE             the validation curves (network,step,val_accuracy,loss)\n"
        "  --plot FILE.png        validation accuracy against steps, drawn by gnuplot\n"
        "  --json FILE            a summary per network\n"
        "  --save DIR             weights and batch-norm states (DIR/bn, DIR/plain)\n"
        "  --eval DIR             test accuracy of a network saved by --save (DIR/bn or\n"
        "                         DIR/plain, or the folder holding weights.clbnw)\n"
        "  --single-sample-check  predicts 200 test images one at a time, with the batch's\n"
        "                         own statistics and with the running ones\n"
        "\n"
        "Validation: the last 5,000 training images. Exit status: 0 done; 2 bad input (one\n"
        "line, nothing written); 3 an output file could not be written; 1 other failures.\n");
}

/* ---------------------------------------------------------------------------------------- */
/* Options */

static int parse_double(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x))
        return 1;
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, train_args *a) {
    *a = (train_args){.bn_mode = 2,
                      .act = CLBN_ACTIVATION_RELU,
                      .lr = 1.0,
                      .steps = 2000,
                      .batch = 60,
                      .eval_every = 50,
                      .seed = 1,
                      .data = "/usr/share/datasets/fashion-mnist"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            train_usage(stdout);
            return -1;
        }
        if (!strcmp(o, "--single-sample-check")) {
            a->single_check = 1;
            continue;
        }
        if (strncmp(o, "--", 2) != 0)
            return usage_error("unexpected argument '%s'%s (clbn train --help)", o, "");
        if (i + 1 >= argc)
            return usage_error("%s needs a value%s", o, "");
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(o, "--bn"))
            bad = !strcmp(v, "on")     ? (a->bn_mode = 1, 0)
                  : !strcmp(v, "off")  ? (a->bn_mode = 0, 0)
                  : !strcmp(v, "both") ? (a->bn_mode = 2, 0)
                                       : 1;
        else if (!strcmp(o, "--activation"))
            bad = !strcmp(v, "relu")      ? (a->act = CLBN_ACTIVATION_RELU, 0)
                  : !strcmp(v, "sigmoid") ? (a->act = CLBN_ACTIVATION_SIGMOID, 0)
                                          : 1;
        else if (!strcmp(o, "--init"))
            bad = !strcmp(v, "good")  ? (a->bad_init = 0, 0)
                  : !strcmp(v, "bad") ? (a->bad_init = 1, 0)
                                      : 1;
        else if (!strcmp(o, "--lr"))
            bad = parse_double(v, &a->lr) || a->lr <= 0;
        else if (!strcmp(o, "--steps"))
            bad = clbn_tool_parse_int(v, 1, 100000000, &a->steps);
        else if (!strcmp(o, "--batch"))
            bad = clbn_tool_parse_int(v, 1, 55000, &a->batch);
        else if (!strcmp(o, "--eval-every"))
            bad = clbn_tool_parse_int(v, 1, 100000000, &a->eval_every);
        else if (!strcmp(o, "--seed")) {
            int s;
            bad = clbn_tool_parse_int(v, 0, 2147483647, &s);
            a->seed = (unsigned long long)s;
        } else if (!strcmp(o, "--data"))
            a->data = v;
        else if (!strcmp(o, "--device"))
            a->device = v;
        else if (!strcmp(o, "--csv"))
            a->csv = v;
        else if (!strcmp(o, "--plot"))
            a->plot = v;
        else if (!strcmp(o, "--json"))
            a->json = v;
        else if (!strcmp(o, "--save"))
            a->save = v;
        else if (!strcmp(o, "--eval"))
            a->eval = v;
        else
            return usage_error("unknown option '%s'%s (clbn train --help)", o, "");
        if (bad || !*v)
            return usage_error("%s '%s': not a valid value (clbn train --help)", o, v);
    }
    if (a->batch < 2 && a->bn_mode != 0 && !a->eval)
        return usage_error("--batch %s with batch norm: training needs at least 2 rows per "
                           "batch%s (the batch's variance of one row is 0)",
                           "1", "");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Random numbers: splitmix64, Box-Muller */

static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) {
    return ((double)(next_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t *s) {
    const double pi = 3.14159265358979323846;
    return sqrt(-2.0 * log(uniform(s))) * cos(2.0 * pi * uniform(s));
}

static void shuffle(int32_t *v, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++)
        v[i] = (int32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next_u64(s) % (i + 1));
        int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Files: temporary, fsync, rename (clbn_tool_out, as clbn_bn_save) */

/* The weights file (tools/weights.c): the network's parameters read back, encoded, written. */
static int write_weights(tn_net *net, const char *path) {
    const tn_config *c = tn_get_config(net);
    float *W[TN_MAX_LAYERS] = {0}, *b[TN_MAX_LAYERS] = {0};
    char err[512];
    int rc = 0;
    for (int l = 1; l <= c->layers && !rc; l++)
        for (int p = 0; p < 2 && !rc; p++) {
            if (p == 1 && c->bn && l < c->layers)
                continue; /* no bias before batch norm */
            size_t n = p ? (size_t)c->sizes[l] : (size_t)c->sizes[l - 1] * (size_t)c->sizes[l];
            float *v = malloc(n * sizeof *v);
            if (!v || tn_read(net, p ? TN_B : TN_W, l, v, n, err, sizeof err)) {
                fprintf(stderr, "clbn train: reading the weights: %s\n", v ? err : "no memory");
                rc = CLBN_EXIT_FAILURE;
            }
            if (p)
                b[l - 1] = v;
            else
                W[l - 1] = v;
        }
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (!rc && weights_encode(c, (const float *const *)W, (const float *const *)b, &bytes, &len)) {
        fprintf(stderr, "clbn train: encoding the weights: no memory\n");
        rc = CLBN_EXIT_FAILURE;
    }
    weights_free(W, b);
    clbn_tool_out o;
    rc = rc ? rc : clbn_tool_out_open(&o, "clbn train", path);
    if (!rc) {
        fwrite(bytes, 1, len, o.f);
        rc = clbn_tool_out_commit(&o);
    }
    free(bytes);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Set-up: data, context, networks */

typedef struct train_env {
    clbn_context *ctx;
    cl_context cc;
    cl_command_queue q;
    idx_set train, test;
    tn_data *dtrain, *dtest;
    char device_name[160];
} train_env;

static float *to_floats(const idx_set *s) {
    const size_t n = s->count * s->rows * s->cols;
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)s->pixels[i] * (1.0f / 255.0f);
    return v;
}

static int32_t *to_labels(const idx_set *s) {
    int32_t *v = malloc(s->count * sizeof *v);
    for (size_t i = 0; v && i < s->count; i++)
        v[i] = s->labels[i];
    return v;
}

static int upload(train_env *e, const idx_set *s, tn_data **d) {
    float *x = to_floats(s);
    int32_t *y = to_labels(s);
    char err[512];
    int bad =
        !x || !y || tn_data_create(e->ctx, x, y, s->count, s->rows * s->cols, d, err, sizeof err);
    if (bad)
        fprintf(stderr, "clbn train: uploading the data: %s\n", x && y ? err : "no host memory");
    free(x);
    free(y);
    return bad;
}

/* A profiling in-order queue of the tool's own on the selected device, wrapped for clbn; the
 * same queue goes to CLBlast, so the events of both are on one clock. */
static int open_device(train_env *e, const char *sel) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.device = sel;
    clbn_context *probe = NULL;
    clbn_device_info info;
    clbn_status st = clbn_context_create(&o, &probe);
    if (st == CLBN_SUCCESS)
        st = clbn_context_get_device_info(probe, &info);
    clbn_context_release(probe);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn train: %s: %s\n", clbn_status_name(st), clbn_last_error_message());
        return st == CLBN_ERROR_DEVICE_NOT_FOUND ? CLBN_EXIT_USAGE : CLBN_EXIT_FAILURE;
    }
    snprintf(e->device_name, sizeof e->device_name, "%s", info.device_name);
    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)info.platform, 0};
    e->cc = clCreateContext(props, 1, &info.device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        e->q = clCreateCommandQueue(e->cc, info.device, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err == CL_SUCCESS && (st = clbn_context_wrap(e->cc, e->q, &o, &e->ctx)) != CLBN_SUCCESS) {
        fprintf(stderr, "clbn train: clbn_context_wrap: %s\n", clbn_last_error_message());
        return CLBN_EXIT_FAILURE;
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clbn train: creating a context and a profiling queue failed (%d)\n", err);
        return CLBN_EXIT_FAILURE;
    }
    return 0;
}

static void close_env(train_env *e) {
    tn_data_release(e->dtrain);
    tn_data_release(e->dtest);
    clbn_context_release(e->ctx);
    if (e->q)
        clReleaseCommandQueue(e->q);
    if (e->cc)
        clReleaseContext(e->cc);
    idx_free(&e->train);
    idx_free(&e->test);
}

static int open_env(train_env *e, const train_args *a) {
    char err[1024];
    int rc = idx_load_dir(a->data, &e->train, &e->test, err, sizeof err);
    if (rc) {
        fprintf(stderr, "clbn train: --data %s: %s\n", a->data, err);
        return rc == IDX_IO_ERROR ? CLBN_EXIT_FAILURE : CLBN_EXIT_USAGE;
    }
    if (e->train.count <= VALID_ROWS + (size_t)a->batch) {
        fprintf(stderr, "clbn train: --data %s: %zu training images: need more than %d + a batch\n",
                a->data, e->train.count, VALID_ROWS);
        return CLBN_EXIT_USAGE;
    }
    if ((rc = open_device(e, a->device)) != 0)
        return rc;
    return upload(e, &e->train, &e->dtrain) || upload(e, &e->test, &e->dtest) ? CLBN_EXIT_FAILURE
                                                                              : 0;
}

static tn_config net_config(const train_args *a, int bn) {
    tn_config c = {.layers = 4,
                   .sizes = {784, 100, 100, 100, 10},
                   .bn = bn,
                   .act = a->act,
                   .lr = (float)a->lr,
                   .max_batch = a->batch > 1000 ? a->batch : 1000,
                   .profile = 1};
    return c;
}

/* ---------------------------------------------------------------------------------------- */
/* Training */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void progress(int tty, const char *name, int step, int steps, double rate, double val) {
    if (tty) {
        int w = 30, done = (int)((long long)w * step / steps);
        fprintf(stderr, "\r%-8s [%.*s%*s] %6d/%d  %7.1f steps/s  val %5.2f%%", name, done,
                "##############################", w - done, "", step, steps, rate, 100 * val);
        if (step == steps)
            fputc('\n', stderr);
    } else {
        printf("%s: step %d/%d, %.1f steps/s, validation accuracy %.2f%%\n", name, step, steps,
               rate, 100 * val);
    }
}

static double accuracy(tn_net *net, const tn_data *d, size_t first, size_t count, int *bad) {
    size_t correct = 0;
    char err[512];
    if (tn_evaluate(net, d, first, count, &correct, err, sizeof err)) {
        fprintf(stderr, "clbn train: evaluation: %s\n", err);
        *bad = 1;
    }
    return (double)correct / (double)count;
}

static int single_sample(tn_net *net, train_env *e, run_result *r) {
    int hits[2] = {0, 0};
    char err[512];
    for (int mode = 0; mode < 2; mode++)
        for (size_t i = 0; i < SINGLE_ROWS; i++) {
            int cls;
            if (tn_predict_one(net, e->dtest, i, mode == 0, &cls, err, sizeof err)) {
                fprintf(stderr, "clbn train: single-sample prediction: %s\n", err);
                return 1;
            }
            hits[mode] += cls == e->test.labels[i];
        }
    r->single_batch_acc = hits[0] / (double)SINGLE_ROWS;
    r->single_running_acc = hits[1] / (double)SINGLE_ROWS;
    return 0;
}

/* Trains one network; the weights and the batch order come from the same seed for both. */
static int train_one(train_env *e, const train_args *a, int bn, const float *const *w,
                     run_result *r, tn_net **out) {
    char err[1024];
    tn_config cfg = net_config(a, bn);
    tn_net *net;
    if (tn_create(e->ctx, &cfg, w, &net, err, sizeof err)) {
        fprintf(stderr, "clbn train: %s\n", err);
        return CLBN_EXIT_FAILURE;
    }
    /* Warm-up on a throwaway copy: CLBlast and clbn compile their kernels on first use, which
     * is start-up, not training speed. */
    tn_net *warm = NULL;
    double tw = now_s();
    int32_t first[2] = {0, 1};
    size_t hits;
    if (tn_create(e->ctx, &cfg, w, &warm, err, sizeof err) ||
        tn_set_order(warm, first, 2, err, sizeof err) ||
        tn_step_indexed(warm, e->dtrain, 0, 2, err, sizeof err) ||
        tn_evaluate(warm, e->dtrain, 0, 2, &hits, err, sizeof err)) {
        fprintf(stderr, "clbn train: %s\n", err);
        tn_release(warm);
        tn_release(net);
        return CLBN_EXIT_FAILURE;
    }
    tn_release(warm);
    r->warmup_s = now_s() - tw;
    const char *name = bn ? "bn" : "plain";
    const size_t rows = e->train.count - VALID_ROWS, per_epoch = rows / (size_t)a->batch;
    int32_t *order = malloc(rows * sizeof *order);
    uint64_t rng = a->seed ^ 0x5eed0fba7c4e5ull;
    r->curve = calloc((size_t)(a->steps / a->eval_every + 2), sizeof *r->curve);
    r->bn = bn;
    const int tty = isatty(2);
    double train_s = 0;
    int bad = !order || !r->curve;
    tn_timing_reset(net);
    double t0 = now_s();
    for (int step = 0; !bad && step < a->steps; step++) {
        const size_t slot = (size_t)step % per_epoch;
        if (slot == 0) { /* a new epoch: a new order, uploaded between steps */
            shuffle(order, rows, &rng);
            bad = tn_set_order(net, order, rows, err, sizeof err);
        }
        bad = bad ||
              tn_step_indexed(net, e->dtrain, slot * (size_t)a->batch, a->batch, err, sizeof err);
        if (bad) {
            fprintf(stderr, "\nclbn train: step %d: %s\n", step + 1, err);
            break;
        }
        const int done = step + 1;
        if (done % a->eval_every && done != a->steps)
            continue;
        /* The queue drains here, outside the timed steps' work: the validation pass is not
         * counted in steps/s. */
        tn_timing tm;
        bad = tn_timing_read(net, &tm, err, sizeof err);
        train_s += now_s() - t0;
        curve_point *p = &r->curve[r->npoints++];
        p->step = done;
        bad = bad || tn_last_loss(net, &p->loss, err, sizeof err);
        if (bad) {
            fprintf(stderr, "\nclbn train: step %d: %s\n", done, err);
            break;
        }
        p->val_acc = accuracy(net, e->dtrain, rows, VALID_ROWS, &bad);
        progress(tty, name, done, a->steps, done / train_s, p->val_acc);
        t0 = now_s();
    }
    tn_timing tm = {0};
    if (!bad && !tn_timing_read(net, &tm, err, sizeof err)) {
        r->train_s = train_s;
        r->steps_per_s = a->steps / train_s;
        r->bn_share = tm.bn_s / train_s;
        r->gemm_share = tm.gemm_s / train_s;
        r->test_acc = accuracy(net, e->dtest, 0, e->test.count, &bad);
        if (!bad && a->single_check)
            bad = single_sample(net, e, r);
    }
    free(order);
    if (bad) {
        tn_release(net);
        return CLBN_EXIT_FAILURE;
    }
    *out = net;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Outputs */

static int write_csv(const char *path, const run_result *r, int n) {
    clbn_tool_out o;
    int rc = clbn_tool_out_open(&o, "clbn train", path);
    if (rc)
        return rc;
    fprintf(o.f, "network,step,val_accuracy,loss\n");
    for (int k = 0; k < n; k++)
        for (int i = 0; i < r[k].npoints; i++)
            fprintf(o.f, "%s,%d,%.6f,%.6f\n", r[k].bn ? "bn" : "plain", r[k].curve[i].step,
                    r[k].curve[i].val_acc, r[k].curve[i].loss);
    return clbn_tool_out_commit(&o);
}

static const char *act_name(clbn_activation a) {
    return a == CLBN_ACTIVATION_RELU ? "relu" : "sigmoid";
}

static int write_json(const char *path, const train_args *a, const train_env *e,
                      const run_result *r, int n) {
    clbn_tool_out o;
    int rc = clbn_tool_out_open(&o, "clbn train", path);
    if (rc)
        return rc;
    fprintf(o.f, "{\n  \"device\": \"%s\",\n  \"data\": \"%s\",\n  \"networks\": [\n",
            e->device_name, a->data);
    for (int k = 0; k < n; k++) {
        fprintf(o.f,
                "    {\"bn\": %s, \"activation\": \"%s\", \"lr\": %g, \"init\": \"%s\", "
                "\"steps\": %d, \"batch\": %d, \"seed\": %llu, \"test_accuracy\": %.4f, "
                "\"final_val_accuracy\": %.4f, \"steps_per_s\": %.1f, \"train_s\": %.3f, "
                "\"bn_time_share\": %.4f, \"gemm_time_share\": %.4f, \"warmup_s\": %.3f",
                r[k].bn ? "true" : "false", act_name(a->act), a->lr, a->bad_init ? "bad" : "good",
                a->steps, a->batch, a->seed, r[k].test_acc,
                r[k].npoints ? r[k].curve[r[k].npoints - 1].val_acc : 0.0, r[k].steps_per_s,
                r[k].train_s, r[k].bn_share, r[k].gemm_share, r[k].warmup_s);
        if (a->single_check)
            fprintf(o.f,
                    ", \"single_sample_batch_stats_accuracy\": %.4f, "
                    "\"single_sample_running_stats_accuracy\": %.4f",
                    r[k].single_batch_acc, r[k].single_running_acc);
        fprintf(o.f, "}%s\n", k + 1 < n ? "," : "");
    }
    fprintf(o.f, "  ]\n}\n");
    return clbn_tool_out_commit(&o);
}

/* gnuplot draws the curves from a data file of its own into a temporary PNG, renamed after. */
static int write_plot(const char *path, const train_args *a, const run_result *r, int n) {
    char data[4200], script[4200], tmp[4200];
    snprintf(data, sizeof data, "%s.data-%ld", path, (long)getpid());
    snprintf(script, sizeof script, "%s.gp-%ld", path, (long)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *d = fopen(data, "w"), *s = fopen(script, "w");
    int rc = 0;
    if (!d || !s) {
        fprintf(stderr, "clbn train: cannot write next to %s: %s\n", path, strerror(errno));
        rc = CLBN_EXIT_IO;
    } else {
        for (int k = 0; k < n; k++) {
            for (int i = 0; i < r[k].npoints; i++)
                fprintf(d, "%d %.6f\n", r[k].curve[i].step, 100 * r[k].curve[i].val_acc);
            fprintf(d, "\n\n");
        }
        fprintf(s, "set terminal pngcairo size 900,560\nset output '%s'\n", tmp);
        fprintf(s, "set title 'Fashion-MNIST 784-100-100-100-10, %s, lr %g, %s init, batch %d'\n",
                act_name(a->act), a->lr, a->bad_init ? "bad" : "good", a->batch);
        fprintf(s, "set xlabel 'step'\nset ylabel 'validation accuracy (%%)'\nset grid\n"
                   "set key bottom right\nset yrange [0:100]\nplot ");
        for (int k = 0; k < n; k++)
            fprintf(s, "%s'%s' index %d with lines lw 2 title '%s'", k ? ", " : "", data, k,
                    r[k].bn ? "with batch norm" : "without batch norm");
        fprintf(s, "\n");
    }
    if (d && fclose(d) != 0)
        rc = CLBN_EXIT_IO;
    if (s && fclose(s) != 0)
        rc = CLBN_EXIT_IO;
    if (!rc) {
        char cmd[8600];
        snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", script);
        int st = system(cmd);
        if (st != 0) {
            fprintf(stderr, "clbn train: gnuplot failed (status %d): is gnuplot-nox installed?\n",
                    st);
            rc = CLBN_EXIT_FAILURE;
        } else if (rename(tmp, path) != 0) {
            fprintf(stderr, "clbn train: cannot write %s: %s\n", path, strerror(errno));
            rc = CLBN_EXIT_IO;
        }
    }
    unlink(data);
    unlink(script);
    unlink(tmp);
    return rc;
}

static int make_dir(const char *p) {
    if (mkdir(p, 0777) == 0 || errno == EEXIST)
        return 0;
    fprintf(stderr, "clbn train: cannot create %s: %s\n", p, strerror(errno));
    return CLBN_EXIT_IO;
}

static int save_net(tn_net *net, const char *dir) {
    char sub[4200], file[4300];
    snprintf(sub, sizeof sub, "%s/%s", dir, tn_get_config(net)->bn ? "bn" : "plain");
    int rc = make_dir(dir);
    rc = rc ? rc : make_dir(sub);
    for (int l = 1; !rc && l < tn_get_config(net)->layers; l++) {
        clbn_bn *bn = tn_get_bn(net, l);
        if (!bn)
            continue;
        snprintf(file, sizeof file, "%s/bn%d.clbn", sub, l);
        clbn_status st = clbn_bn_save(bn, file);
        if (st != CLBN_SUCCESS) {
            fprintf(stderr, "clbn train: cannot save %s: %s\n", file, clbn_last_error_message());
            rc = st == CLBN_ERROR_IO ? CLBN_EXIT_IO : CLBN_EXIT_FAILURE;
        }
    }
    snprintf(file, sizeof file, "%s/weights.clbnw", sub);
    return rc ? rc : write_weights(net, file);
}

/* ---------------------------------------------------------------------------------------- */
/* --eval DIR */

static int copy_bn_state(clbn_bn *from, clbn_bn *to, int channels) {
    float *v = malloc((size_t)channels * sizeof *v);
    static const clbn_vector vs[4] = {CLBN_VECTOR_GAMMA, CLBN_VECTOR_BETA, CLBN_VECTOR_RUNNING_MEAN,
                                      CLBN_VECTOR_RUNNING_VAR};
    clbn_status st = v ? CLBN_SUCCESS : CLBN_ERROR_OUT_OF_HOST_MEMORY;
    for (int i = 0; i < 4 && st == CLBN_SUCCESS; i++) {
        st = clbn_bn_read_vector(from, vs[i], v, (uint64_t)channels);
        if (st == CLBN_SUCCESS)
            st = clbn_bn_write_vector(to, vs[i], v, (uint64_t)channels);
    }
    uint64_t t = 0;
    if (st == CLBN_SUCCESS && (st = clbn_bn_get_batches_tracked(from, &t)) == CLBN_SUCCESS)
        st = clbn_bn_set_batches_tracked(to, t);
    free(v);
    return st != CLBN_SUCCESS;
}

static int eval_saved(const train_args *a) {
    char dir[4200], file[4300];
    snprintf(file, sizeof file, "%s/weights.clbnw", a->eval);
    snprintf(dir, sizeof dir, "%s", a->eval);
    if (access(file, F_OK) != 0) { /* DIR of --save: the bn network first */
        snprintf(dir, sizeof dir, "%s/%s", a->eval, "bn");
        snprintf(file, sizeof file, "%s/weights.clbnw", dir);
        if (access(file, F_OK) != 0) {
            snprintf(dir, sizeof dir, "%s/%s", a->eval, "plain");
            snprintf(file, sizeof file, "%s/weights.clbnw", dir);
        }
    }
    tn_config cfg;
    float *W[TN_MAX_LAYERS] = {0}, *b[TN_MAX_LAYERS] = {0};
    int rc = weights_read(file, &cfg, W, b);
    train_env e = {0};
    tn_net *net = NULL;
    char err[1024];
    if (!rc && (cfg.sizes[0] != 784 || cfg.sizes[cfg.layers] != 10)) {
        fprintf(stderr, "clbn train: %s: a %d-input, %d-class network, not 784 and 10\n", file,
                cfg.sizes[0], cfg.sizes[cfg.layers]);
        rc = CLBN_EXIT_USAGE;
    }
    train_args ea = *a;
    ea.batch = 1000;
    rc = rc ? rc : open_env(&e, &ea);
    if (!rc) {
        cfg.lr = 0;
        cfg.max_batch = 1000;
        cfg.profile = 0;
        if (tn_create(e.ctx, &cfg, (const float *const *)W, &net, err, sizeof err)) {
            fprintf(stderr, "clbn train: %s\n", err);
            rc = CLBN_EXIT_FAILURE;
        }
    }
    for (int l = 1; !rc && l <= cfg.layers; l++) {
        if (b[l - 1] && tn_write(net, TN_B, l, b[l - 1], (size_t)cfg.sizes[l], err, sizeof err)) {
            fprintf(stderr, "clbn train: %s\n", err);
            rc = CLBN_EXIT_FAILURE;
        }
        clbn_bn *saved = NULL;
        if (!rc && tn_get_bn(net, l)) {
            snprintf(file, sizeof file, "%s/bn%d.clbn", dir, l);
            clbn_status st = clbn_bn_load(e.ctx, file, &saved);
            if (st != CLBN_SUCCESS) {
                fprintf(stderr, "clbn train: %s: %s\n", file, clbn_last_error_message());
                rc = CLBN_EXIT_USAGE;
            } else if (copy_bn_state(saved, tn_get_bn(net, l), cfg.sizes[l])) {
                fprintf(stderr, "clbn train: %s: %s\n", file, clbn_last_error_message());
                rc = CLBN_EXIT_USAGE;
            }
            clbn_bn_release(saved);
        }
    }
    if (!rc) {
        int bad = 0;
        double acc = accuracy(net, e.dtest, 0, e.test.count, &bad);
        if (bad)
            rc = CLBN_EXIT_FAILURE;
        else
            printf("%s (%s, %s): test accuracy %.2f%% on %zu images\n", dir,
                   cfg.bn ? "batch norm" : "no batch norm", act_name(cfg.act), 100 * acc,
                   e.test.count);
    }
    tn_release(net);
    close_env(&e);
    for (int l = 0; l < TN_MAX_LAYERS; l++) {
        free(W[l]);
        free(b[l]);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */

int clbn_cmd_train(int argc, char **argv) {
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLBN_EXIT_OK : rc;
    if (a.eval)
        return eval_saved(&a);
    train_env e = {0};
    if ((rc = open_env(&e, &a)) != 0) {
        close_env(&e);
        return rc;
    }
    /* The same initial weights for both networks. */
    const int sizes[5] = {784, 100, 100, 100, 10};
    float *w[4] = {0};
    uint64_t rng = a.seed;
    const double sd = a.bad_init ? 5.0 : 0.05;
    for (int l = 0; l < 4; l++) {
        size_t n = (size_t)sizes[l] * (size_t)sizes[l + 1];
        w[l] = malloc(n * sizeof(float));
        for (size_t i = 0; w[l] && i < n; i++)
            w[l][i] = (float)(sd * normal(&rng));
    }
    printf("device: %s\n", e.device_name);
    run_result r[2] = {{0}};
    tn_net *nets[2] = {NULL, NULL};
    int n = 0;
    for (int bn = 1; bn >= 0 && !rc; bn--) {
        if (a.bn_mode != 2 && a.bn_mode != bn)
            continue;
        rc = train_one(&e, &a, bn, (const float *const *)w, &r[n], &nets[n]);
        if (!rc) {
            printf("%-14s test accuracy %6.2f%%  %6.1f s  %7.1f steps/s  batch norm %4.1f%% of a "
                   "step, CLBlast %4.1f%% (warm-up %.2f s)\n",
                   bn ? "batch norm" : "no batch norm", 100 * r[n].test_acc, r[n].train_s,
                   r[n].steps_per_s, 100 * r[n].bn_share, 100 * r[n].gemm_share, r[n].warmup_s);
            if (a.single_check)
                printf("%-14s one test image at a time (%d): batch statistics %.1f%%, running "
                       "statistics %.1f%%\n",
                       "", SINGLE_ROWS, 100 * r[n].single_batch_acc, 100 * r[n].single_running_acc);
            n++;
        }
    }
    if (!rc && a.csv)
        rc = write_csv(a.csv, r, n);
    if (!rc && a.json)
        rc = write_json(a.json, &a, &e, r, n);
    if (!rc && a.plot)
        rc = write_plot(a.plot, &a, r, n);
    for (int k = 0; !rc && a.save && k < n; k++)
        rc = save_net(nets[k], a.save);
    if (!rc && a.plot)
        printf("plot: %s\n", a.plot);
    for (int k = 0; k < 2; k++) {
        tn_release(nets[k]);
        free(r[k].curve);
    }
    for (int l = 0; l < 4; l++)
        free(w[l]);
    close_env(&e);
    return rc;
}
