/* `clbn run train|infer|backward`: applies one batch-norm op to float32 .npy files, so any
 * framework can cross-check clbn. Everything is validated and computed before the first output
 * file appears, so a bad input leaves DIR and the --state file exactly as they were. */
#include "npy.h"
#include "tools.h"

#include <clbn.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum run_op { RUN_TRAIN, RUN_INFER, RUN_BACKWARD } run_op;

/* Options whose value a loaded state also holds: given on the command line, they must agree. */
enum {
    GIVEN_EPS = 1u << 0,
    GIVEN_MOMENTUM = 1u << 1,
    GIVEN_CUMULATIVE = 1u << 2,
    GIVEN_NO_SCALE = 1u << 3,
    GIVEN_NO_CENTER = 1u << 4,
    GIVEN_NO_TRACK = 1u << 5,
    GIVEN_ACTIVATION = 1u << 6
};

typedef enum run_file {
    FILE_X,
    FILE_DY,
    FILE_Y,
    FILE_GAMMA,
    FILE_BETA,
    FILE_RUNNING_MEAN,
    FILE_RUNNING_VAR,
    FILE_COUNT
} run_file;

static const char *const file_option[FILE_COUNT] = {
    "--x", "--dy", "--y", "--gamma", "--beta", "--running-mean", "--running-var"};

typedef struct run_args {
    run_op op;
    int layout; /* -1: from the array's dimensions */
    const char *path[FILE_COUNT];
    float eps, momentum;
    int cumulative, no_scale, no_center, no_track, frozen;
    clbn_activation activation;
    unsigned given;
    const char *state, *device, *out;
} run_args;

/* One output file: written under a temporary name, renamed once every step has succeeded. */
typedef struct run_output {
    const char *name;
    float *data;
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
    char *tmp;
    char *final;
} run_output;

#define RUN_MAX_OUTPUTS 8

typedef struct run_ctx {
    run_args a;
    npy_array file[FILE_COUNT];
    clbn_shape shape;
    uint64_t c, m;
    clbn_context *ctx;
    clbn_bn *bn;
    cl_context cl_ctx;
    cl_command_queue queue;
    cl_mem x_buf, y_buf, dy_buf, dx_buf, saved_mean_buf, saved_invstd_buf;
    clbn_bn_options opt;
    int state_exists;
    run_output out[RUN_MAX_OUTPUTS];
    int n_out;
    char message[1024];
    int status; /* exit status of the first failure */
} run_ctx;

/* Records the first failure only: later ones are consequences of it. */
static int run_fail(run_ctx *r, int status, const char *fmt, ...) {
    if (r->status == CLBN_EXIT_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof r->message, fmt, ap);
        va_end(ap);
        r->status = status;
    }
    return -1;
}

/* Statuses that mean the input or the options were wrong, as opposed to the device failing. */
static int status_is_bad_input(clbn_status st) {
    switch (st) {
    case CLBN_ERROR_INVALID_ARGUMENT:
    case CLBN_ERROR_INVALID_SHAPE:
    case CLBN_ERROR_CHANNEL_MISMATCH:
    case CLBN_ERROR_INVALID_LAYOUT:
    case CLBN_ERROR_INVALID_OPTION:
    case CLBN_ERROR_EMPTY_BATCH:
    case CLBN_ERROR_TOO_FEW_VALUES:
    case CLBN_ERROR_DEVICE_NOT_FOUND:
    case CLBN_ERROR_IO:
    case CLBN_ERROR_FILE_CORRUPT:
    case CLBN_ERROR_FILE_VERSION:
    case CLBN_ERROR_FILE_MISMATCH:
        return 1;
    default:
        return 0;
    }
}

static int run_check(run_ctx *r, clbn_status st, const char *what) {
    if (st == CLBN_SUCCESS)
        return 0;
    const char *detail = clbn_last_error_message();
    if (!detail || !*detail)
        detail = clbn_status_string(st);
    return run_fail(r, status_is_bad_input(st) ? CLBN_EXIT_USAGE : CLBN_EXIT_FAILURE, "%s: %s: %s",
                    what, clbn_status_name(st), detail);
}

static int run_check_cl(run_ctx *r, cl_int err, const char *what) {
    if (err == CL_SUCCESS)
        return 0;
    return run_fail(r, CLBN_EXIT_FAILURE, "%s: %s (%d)", what, clbn_status_name((clbn_status)err),
                    (int)err);
}

static void run_usage(FILE *out) {
    fprintf(
        out,
        "usage: clbn run train|infer|backward --x X.npy --out DIR [options]\n"
        "\n"
        "Applies one batch-norm op to float32 .npy files and writes float32 .npy files to DIR.\n"
        "\n"
        "  --layout nchw|nhwc|nc  X is [N,C,H,W], [N,H,W,C] or [N,C]\n"
        "                         (default: nchw for a 4-D X, nc for a 2-D X)\n"
        "  --x X.npy              the input\n"
        "  --dy DY.npy            backward: the gradient of the output, shaped as X\n"
        "  --y Y.npy              backward with an activation: the forward's output\n"
        "                         (default: recomputed from X)\n"
        "  --gamma G.npy          [C] vectors; defaults 1, 0, 0, 1. With an existing --state\n"
        "  --beta B.npy           the state's vectors are used and these are errors\n"
        "  --running-mean M.npy\n"
        "  --running-var V.npy    (unbiased)\n"
        "  --eps E                added to the variance (default 1e-5)\n"
        "  --momentum F           weight of the new batch in the running statistics, in (0, 1]\n"
        "                         (default 0.1, as PyTorch)\n"
        "  --cumulative           running statistics are the plain average over all batches\n"
        "                         (PyTorch momentum=None)\n"
        "  --no-scale             no gamma (gamma = 1)\n"
        "  --no-center            no beta (beta = 0)\n"
        "  --no-track             no running statistics: infer uses the batch's statistics\n"
        "  --activation A         none, relu or sigmoid, fused after the affine step\n"
        "  --frozen               train and backward use the running statistics as constants\n"
        "  --state FILE           when FILE exists, use its options and vectors (an option\n"
        "                         given with another value is an error); otherwise make the\n"
        "                         state from the command line. FILE is saved after the op.\n"
        "                         backward uses the statistics saved by the last train of the\n"
        "                         state; without one, the batch statistics of X\n"
        "  --device SEL           gpu, cpu, P:D or part of the device name (default:\n"
        "                         $CLBN_DEVICE, else the first GPU, else the first device)\n"
        "  --out DIR              where the outputs go (created if missing)\n"
        "\n"
        "outputs in DIR:\n"
        "  train     y.npy; mean.npy, invstd.npy (the saved statistics; not with --frozen)\n"
        "  infer     y.npy\n"
        "  backward  dx.npy; dgamma.npy (not with --no-scale), dbeta.npy (not with --no-center)\n"
        "  all       running_mean.npy, running_var.npy (the state after the op; not with\n"
        "            --no-track)\n"
        "\n"
        "exit status: 0 done; 2 bad input (one line on stderr, no output written, --state FILE\n"
        "unchanged); 3 an output could not be written (I/O error; nothing half-written is left);\n"
        "1 any other failure.\n");
}

/* ---------------------------------------------------------------------------------------- */
/* Command line                                                                              */
/* ---------------------------------------------------------------------------------------- */

enum {
    OPT_FILE, /* then .file */
    OPT_LAYOUT,
    OPT_EPS,
    OPT_MOMENTUM,
    OPT_CUMULATIVE,
    OPT_NO_SCALE,
    OPT_NO_CENTER,
    OPT_NO_TRACK,
    OPT_ACTIVATION,
    OPT_FROZEN,
    OPT_STATE,
    OPT_DEVICE,
    OPT_OUT,
    OPT_HELP
};

typedef struct run_option {
    const char *name;
    int id;
    int has_value;
    run_file file;
} run_option;

static const run_option run_options[] = {
    {"--x", OPT_FILE, 1, FILE_X},
    {"--dy", OPT_FILE, 1, FILE_DY},
    {"--y", OPT_FILE, 1, FILE_Y},
    {"--gamma", OPT_FILE, 1, FILE_GAMMA},
    {"--beta", OPT_FILE, 1, FILE_BETA},
    {"--running-mean", OPT_FILE, 1, FILE_RUNNING_MEAN},
    {"--running-var", OPT_FILE, 1, FILE_RUNNING_VAR},
    {"--layout", OPT_LAYOUT, 1, FILE_COUNT},
    {"--eps", OPT_EPS, 1, FILE_COUNT},
    {"--momentum", OPT_MOMENTUM, 1, FILE_COUNT},
    {"--cumulative", OPT_CUMULATIVE, 0, FILE_COUNT},
    {"--no-scale", OPT_NO_SCALE, 0, FILE_COUNT},
    {"--no-center", OPT_NO_CENTER, 0, FILE_COUNT},
    {"--no-track", OPT_NO_TRACK, 0, FILE_COUNT},
    {"--activation", OPT_ACTIVATION, 1, FILE_COUNT},
    {"--frozen", OPT_FROZEN, 0, FILE_COUNT},
    {"--state", OPT_STATE, 1, FILE_COUNT},
    {"--device", OPT_DEVICE, 1, FILE_COUNT},
    {"--out", OPT_OUT, 1, FILE_COUNT},
    {"--help", OPT_HELP, 0, FILE_COUNT},
};

#define RUN_N_OPTIONS (sizeof run_options / sizeof run_options[0])

static int parse_float(const char *text, float *value) {
    char *end;
    errno = 0;
    float v = strtof(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v))
        return -1;
    *value = v;
    return 0;
}

static const char *activation_name(clbn_activation a) {
    return a == CLBN_ACTIVATION_RELU ? "relu" : a == CLBN_ACTIVATION_SIGMOID ? "sigmoid" : "none";
}

static const char *layout_name(int layout) {
    return layout == CLBN_LAYOUT_NCHW ? "nchw" : layout == CLBN_LAYOUT_NHWC ? "nhwc" : "nc";
}

/* Returns 1 when --help was asked for. */
static int parse_args(run_ctx *r, int argc, char **argv) {
    run_args *a = &r->a;
    int seen[RUN_N_OPTIONS] = {0};
    a->layout = -1;
    a->eps = 1e-5f;
    a->momentum = 0.1f;
    a->activation = CLBN_ACTIVATION_NONE;
    if (argc < 2)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "missing the op: train, infer or backward (clbn run --help)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return 1;
    if (strcmp(argv[1], "train") == 0)
        a->op = RUN_TRAIN;
    else if (strcmp(argv[1], "infer") == 0)
        a->op = RUN_INFER;
    else if (strcmp(argv[1], "backward") == 0)
        a->op = RUN_BACKWARD;
    else
        return run_fail(r, CLBN_EXIT_USAGE,
                        "unknown op '%s': expected train, infer or backward (clbn run --help)",
                        argv[1]);

    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const run_option *o = NULL;
        size_t k;
        for (k = 0; k < RUN_N_OPTIONS; k++)
            if (strlen(run_options[k].name) == name_len &&
                strncmp(run_options[k].name, arg, name_len) == 0) {
                o = &run_options[k];
                break;
            }
        if (!o)
            return run_fail(r, CLBN_EXIT_USAGE, "unknown option '%s' (clbn run --help)", arg);
        if (o->id == OPT_HELP)
            return 1;
        if (seen[k]++)
            return run_fail(r, CLBN_EXIT_USAGE, "%s is given twice", o->name);
        const char *value = NULL;
        if (o->has_value) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return run_fail(r, CLBN_EXIT_USAGE, "%s needs a value", o->name);
            if (!*value)
                return run_fail(r, CLBN_EXIT_USAGE, "%s has an empty value", o->name);
        } else if (eq) {
            return run_fail(r, CLBN_EXIT_USAGE, "%s takes no value", o->name);
        }
        switch (o->id) {
        case OPT_FILE:
            a->path[o->file] = value;
            break;
        case OPT_LAYOUT:
            if (strcmp(value, "nchw") == 0 || strcmp(value, "NCHW") == 0)
                a->layout = CLBN_LAYOUT_NCHW;
            else if (strcmp(value, "nhwc") == 0 || strcmp(value, "NHWC") == 0)
                a->layout = CLBN_LAYOUT_NHWC;
            else if (strcmp(value, "nc") == 0 || strcmp(value, "NC") == 0)
                a->layout = CLBN_LAYOUT_NC;
            else
                return run_fail(r, CLBN_EXIT_USAGE, "--layout '%s': expected nchw, nhwc or nc",
                                value);
            break;
        case OPT_EPS:
            if (parse_float(value, &a->eps) != 0 || !(a->eps > 0.0f))
                return run_fail(r, CLBN_EXIT_USAGE, "--eps '%s': expected a number > 0", value);
            a->given |= GIVEN_EPS;
            break;
        case OPT_MOMENTUM:
            if (parse_float(value, &a->momentum) != 0 || !(a->momentum > 0.0f) ||
                a->momentum > 1.0f)
                return run_fail(r, CLBN_EXIT_USAGE, "--momentum '%s': expected a number in (0, 1]",
                                value);
            a->given |= GIVEN_MOMENTUM;
            break;
        case OPT_CUMULATIVE:
            a->cumulative = 1;
            a->given |= GIVEN_CUMULATIVE;
            break;
        case OPT_NO_SCALE:
            a->no_scale = 1;
            a->given |= GIVEN_NO_SCALE;
            break;
        case OPT_NO_CENTER:
            a->no_center = 1;
            a->given |= GIVEN_NO_CENTER;
            break;
        case OPT_NO_TRACK:
            a->no_track = 1;
            a->given |= GIVEN_NO_TRACK;
            break;
        case OPT_ACTIVATION:
            if (strcmp(value, "none") == 0)
                a->activation = CLBN_ACTIVATION_NONE;
            else if (strcmp(value, "relu") == 0)
                a->activation = CLBN_ACTIVATION_RELU;
            else if (strcmp(value, "sigmoid") == 0)
                a->activation = CLBN_ACTIVATION_SIGMOID;
            else
                return run_fail(r, CLBN_EXIT_USAGE,
                                "--activation '%s': expected none, relu or sigmoid", value);
            a->given |= GIVEN_ACTIVATION;
            break;
        case OPT_FROZEN:
            a->frozen = 1;
            break;
        case OPT_STATE:
            a->state = value;
            break;
        case OPT_DEVICE:
            a->device = value;
            break;
        case OPT_OUT:
            a->out = value;
            break;
        }
    }

    if (!a->path[FILE_X])
        return run_fail(r, CLBN_EXIT_USAGE, "missing --x X.npy");
    if (!a->out)
        return run_fail(r, CLBN_EXIT_USAGE, "missing --out DIR");
    if (a->op == RUN_BACKWARD && !a->path[FILE_DY])
        return run_fail(r, CLBN_EXIT_USAGE, "backward needs --dy DY.npy");
    if (a->op != RUN_BACKWARD && a->path[FILE_DY])
        return run_fail(r, CLBN_EXIT_USAGE, "--dy is only used by backward");
    if (a->op != RUN_BACKWARD && a->path[FILE_Y])
        return run_fail(r, CLBN_EXIT_USAGE, "--y is only used by backward");
    if (a->cumulative && (a->given & GIVEN_MOMENTUM))
        return run_fail(r, CLBN_EXIT_USAGE, "--cumulative and --momentum conflict: choose one");
    if (a->frozen && a->no_track)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--frozen and --no-track conflict: frozen uses the running statistics");
    if (a->no_scale && a->path[FILE_GAMMA])
        return run_fail(r, CLBN_EXIT_USAGE, "--gamma and --no-scale conflict");
    if (a->no_center && a->path[FILE_BETA])
        return run_fail(r, CLBN_EXIT_USAGE, "--beta and --no-center conflict");
    if (a->no_track) {
        const char *unused = a->path[FILE_RUNNING_MEAN]    ? "--running-mean"
                             : a->path[FILE_RUNNING_VAR]   ? "--running-var"
                             : a->cumulative               ? "--cumulative"
                             : (a->given & GIVEN_MOMENTUM) ? "--momentum"
                                                           : NULL;
        if (unused)
            return run_fail(r, CLBN_EXIT_USAGE,
                            "%s and --no-track conflict: there are no running statistics", unused);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Inputs                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static int same_shape(const npy_array *p, const npy_array *q) {
    if (p->ndim != q->ndim)
        return 0;
    for (int i = 0; i < p->ndim; i++)
        if (p->shape[i] != q->shape[i])
            return 0;
    return 1;
}

static int load_inputs(run_ctx *r) {
    char err[512], s1[256], s2[256];
    for (int f = 0; f < FILE_COUNT; f++) {
        if (r->a.path[f] && npy_read(r->a.path[f], &r->file[f], err, sizeof err) != 0)
            return run_fail(r, CLBN_EXIT_USAGE, "%s %s: %s", file_option[f], r->a.path[f], err);
    }

    const npy_array *x = &r->file[FILE_X];
    const char *xs = npy_shape_string(x->ndim, x->shape, s1, sizeof s1);
    int layout = r->a.layout;
    if (layout < 0) {
        if (x->ndim == 4)
            layout = CLBN_LAYOUT_NCHW;
        else if (x->ndim == 2)
            layout = CLBN_LAYOUT_NC;
        else
            return run_fail(r, CLBN_EXIT_USAGE,
                            "--x %s has shape %s: expected 4 dimensions (nchw, nhwc) or 2 (nc)",
                            r->a.path[FILE_X], xs);
    }
    int want = layout == CLBN_LAYOUT_NC ? 2 : 4;
    if (x->ndim != want)
        return run_fail(r, CLBN_EXIT_USAGE, "--x %s has shape %s: layout %s expects a %d-D %s",
                        r->a.path[FILE_X], xs, layout_name(layout), want,
                        layout == CLBN_LAYOUT_NCHW   ? "[N,C,H,W] array"
                        : layout == CLBN_LAYOUT_NHWC ? "[N,H,W,C] array"
                                                     : "[N,C] array");
    r->a.layout = layout;
    r->shape.layout = (clbn_layout)layout;
    r->shape.n = x->shape[0];
    if (layout == CLBN_LAYOUT_NCHW) {
        r->shape.c = x->shape[1], r->shape.h = x->shape[2], r->shape.w = x->shape[3];
    } else if (layout == CLBN_LAYOUT_NHWC) {
        r->shape.h = x->shape[1], r->shape.w = x->shape[2], r->shape.c = x->shape[3];
    } else {
        r->shape.c = x->shape[1], r->shape.h = 1, r->shape.w = 1;
    }
    r->c = r->shape.c;
    r->m = r->shape.n * r->shape.h * r->shape.w; /* no overflow: bounded by the file size */
    if (r->c == 0)
        return run_fail(r, CLBN_EXIT_USAGE, "--x %s has shape %s: no channels (C = 0)",
                        r->a.path[FILE_X], xs);
    if (r->m == 0)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--x %s has shape %s: m = N*H*W = 0, there is nothing to normalize",
                        r->a.path[FILE_X], xs);

    for (int f = FILE_DY; f <= FILE_Y; f++)
        if (r->a.path[f] && !same_shape(&r->file[f], x))
            return run_fail(r, CLBN_EXIT_USAGE, "%s %s has shape %s, expected the shape of --x %s",
                            file_option[f], r->a.path[f],
                            npy_shape_string(r->file[f].ndim, r->file[f].shape, s2, sizeof s2), xs);
    for (int f = FILE_GAMMA; f < FILE_COUNT; f++) {
        const npy_array *v = &r->file[f];
        if (r->a.path[f] && (v->ndim != 1 || v->shape[0] != r->c))
            return run_fail(r, CLBN_EXIT_USAGE,
                            "%s %s has shape %s, expected (%llu,): one value per channel of --x",
                            file_option[f], r->a.path[f],
                            npy_shape_string(v->ndim, v->shape, s2, sizeof s2),
                            (unsigned long long)r->c);
    }
    if (r->a.path[FILE_RUNNING_VAR]) {
        const npy_array *v = &r->file[FILE_RUNNING_VAR];
        for (uint64_t i = 0; i < v->count; i++)
            if (!(v->data[i] >= 0.0f))
                return run_fail(r, CLBN_EXIT_USAGE,
                                "--running-var %s: value %llu is %g, a variance must be >= 0",
                                r->a.path[FILE_RUNNING_VAR], (unsigned long long)i,
                                (double)v->data[i]);
    }
    return 0;
}

/* --out must be a directory or not exist yet; checked before any work so a typo costs nothing. */
static int check_out_dir(run_ctx *r) {
    struct stat st;
    if (stat(r->a.out, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return run_fail(r, CLBN_EXIT_USAGE, "--out %s exists and is not a directory", r->a.out);
    } else if (errno != ENOENT) {
        return run_fail(r, CLBN_EXIT_USAGE, "--out %s: %s", r->a.out, strerror(errno));
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* State and options                                                                         */
/* ---------------------------------------------------------------------------------------- */

/* The options of a loaded state against those given on the command line: an option not given
 * takes the state's value; one given with another value is an error. */
static int merge_state_options(run_ctx *r) {
    const run_args *a = &r->a;
    const clbn_bn_options *o = &r->opt;
    const char *file = a->state;
    if (o->channels != r->c)
        return run_fail(r, CLBN_EXIT_USAGE, "--x %s has %llu channels but the state %s has %llu",
                        a->path[FILE_X], (unsigned long long)r->c, file,
                        (unsigned long long)o->channels);
    for (int f = FILE_GAMMA; f < FILE_COUNT; f++)
        if (a->path[f])
            return run_fail(r, CLBN_EXIT_USAGE,
                            "%s cannot be given with the existing state %s, whose vectors are used",
                            file_option[f], file);
    int cumulative = (o->flags & CLBN_CUMULATIVE_AVERAGE) != 0;
    int scale = (o->flags & CLBN_USE_SCALE) != 0;
    int center = (o->flags & CLBN_USE_SHIFT) != 0;
    int track = (o->flags & CLBN_TRACK_RUNNING_STATS) != 0;
    if ((a->given & GIVEN_EPS) && a->eps != o->eps)
        return run_fail(r, CLBN_EXIT_USAGE, "--eps %g differs from the state %s, which has eps %g",
                        (double)a->eps, file, (double)o->eps);
    if ((a->given & GIVEN_MOMENTUM) && (cumulative || a->momentum != o->factor)) {
        if (cumulative)
            return run_fail(r, CLBN_EXIT_USAGE,
                            "--momentum conflicts with the state %s, which is cumulative", file);
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--momentum %g differs from the state %s, which has momentum %g",
                        (double)a->momentum, file, (double)o->factor);
    }
    if ((a->given & GIVEN_CUMULATIVE) && !cumulative)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--cumulative conflicts with the state %s, which has momentum %g", file,
                        (double)o->factor);
    if ((a->given & GIVEN_NO_SCALE) && scale)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--no-scale conflicts with the state %s, which has a scale (gamma)", file);
    if ((a->given & GIVEN_NO_CENTER) && center)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--no-center conflicts with the state %s, which has a shift (beta)", file);
    if ((a->given & GIVEN_NO_TRACK) && track)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--no-track conflicts with the state %s, which tracks running statistics",
                        file);
    if ((a->given & GIVEN_ACTIVATION) && a->activation != o->activation)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--activation %s differs from the state %s, which has activation %s",
                        activation_name(a->activation), file, activation_name(o->activation));
    if (!track && a->frozen)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--frozen needs running statistics, but the state %s does not track them",
                        file);
    return 0;
}

static void options_from_args(run_ctx *r) {
    const run_args *a = &r->a;
    clbn_bn_options_init(&r->opt);
    r->opt.channels = r->c;
    r->opt.eps = a->eps;
    r->opt.factor = a->momentum;
    r->opt.activation = a->activation;
    if (a->cumulative)
        r->opt.flags |= CLBN_CUMULATIVE_AVERAGE;
    if (a->no_scale)
        r->opt.flags &= ~CLBN_USE_SCALE;
    if (a->no_center)
        r->opt.flags &= ~CLBN_USE_SHIFT;
    if (a->no_track)
        r->opt.flags &= ~(CLBN_TRACK_RUNNING_STATS | CLBN_CUMULATIVE_AVERAGE);
}

static int open_state(run_ctx *r) {
    clbn_context_options co;
    clbn_context_options_init(&co);
    co.device = r->a.device;
    if (run_check(r, clbn_context_create(&co, &r->ctx), "cannot create the OpenCL context") != 0)
        return -1;
    if (run_check(r, clbn_context_get_cl(r->ctx, &r->cl_ctx, &r->queue), "context") != 0)
        return -1;

    struct stat st;
    r->state_exists = r->a.state && stat(r->a.state, &st) == 0;
    if (r->state_exists) {
        char what[1100];
        snprintf(what, sizeof what, "--state %s", r->a.state);
        if (run_check(r, clbn_bn_load(r->ctx, r->a.state, &r->bn), what) != 0)
            return -1;
        if (run_check(r, clbn_bn_get_options(r->bn, &r->opt), what) != 0)
            return -1;
        return merge_state_options(r);
    }
    options_from_args(r);
    return 0;
}

/* The m rules and the pairings that depend on the final options, checked before any work so
 * the message names the cause rather than a library status. */
static int check_mode(run_ctx *r) {
    const run_args *a = &r->a;
    int track = (r->opt.flags & CLBN_TRACK_RUNNING_STATS) != 0;
    int batch_stats_needed =
        !a->frozen && (a->op == RUN_TRAIN || (a->op == RUN_BACKWARD && !r->state_exists));
    if (batch_stats_needed && track && r->m == 1)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "m = N*H*W = 1: expected more than 1 value per channel when training "
                        "with running statistics (--no-track allows it)");
    if (a->path[FILE_Y] && r->opt.activation == CLBN_ACTIVATION_NONE)
        return run_fail(r, CLBN_EXIT_USAGE,
                        "--y is only used with an activation (--activation relu|sigmoid)");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The op                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static cl_mem make_buffer(run_ctx *r, const float *host, uint64_t count, const char *what) {
    cl_int err;
    cl_mem_flags flags = CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0);
    cl_mem m = clCreateBuffer(r->cl_ctx, flags, (size_t)count * sizeof(float), (void *)host, &err);
    if (run_check_cl(r, err, what) != 0)
        return NULL;
    return m;
}

static float *read_buffer(run_ctx *r, cl_mem buf, uint64_t count, const char *what) {
    float *host = malloc((size_t)count * sizeof(float));
    if (!host) {
        run_fail(r, CLBN_EXIT_FAILURE, "%s: out of host memory", what);
        return NULL;
    }
    cl_int err = clEnqueueReadBuffer(r->queue, buf, CL_TRUE, 0, (size_t)count * sizeof(float), host,
                                     0, NULL, NULL);
    if (run_check_cl(r, err, what) != 0) {
        free(host);
        return NULL;
    }
    return host;
}

static float *read_vector(run_ctx *r, clbn_vector v) {
    float *host = malloc((size_t)r->c * sizeof(float));
    if (!host) {
        run_fail(r, CLBN_EXIT_FAILURE, "out of host memory");
        return NULL;
    }
    if (run_check(r, clbn_bn_read_vector(r->bn, v, host, r->c), clbn_vector_name(v)) != 0) {
        free(host);
        return NULL;
    }
    return host;
}

static run_output *add_output(run_ctx *r, const char *name, float *data, int ndim,
                              const uint64_t *shape) {
    run_output *o = &r->out[r->n_out++];
    o->name = name;
    o->data = data;
    o->ndim = ndim;
    memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
    return o;
}

static int add_vector_output(run_ctx *r, const char *name, clbn_vector v) {
    float *data = read_vector(r, v);
    if (!data)
        return -1;
    add_output(r, name, data, 1, &r->c);
    return 0;
}

static int add_tensor_output(run_ctx *r, const char *name, cl_mem buf) {
    const npy_array *x = &r->file[FILE_X];
    float *data = read_buffer(r, buf, x->count, name);
    if (!data)
        return -1;
    add_output(r, name, data, x->ndim, x->shape);
    return 0;
}

/* The channel of element i in the array's layout. */
static uint64_t channel_of(const run_ctx *r, uint64_t i) {
    if (r->shape.layout == CLBN_LAYOUT_NCHW)
        return i / (r->shape.h * r->shape.w) % r->c;
    return i % r->c;
}

/* The forward output y = act(gamma * (x - mean) * invstd + beta) from a state's saved
 * statistics: a backward with a fused activation needs the y of the forward those statistics
 * came from, and running the training forward again would overwrite them. */
static float *recompute_y_from_saved(run_ctx *r) {
    const npy_array *x = &r->file[FILE_X];
    float *mean = read_vector(r, CLBN_VECTOR_SAVED_MEAN);
    float *invstd = read_vector(r, CLBN_VECTOR_SAVED_INVSTD);
    float *gamma = read_vector(r, CLBN_VECTOR_GAMMA);
    float *beta = read_vector(r, CLBN_VECTOR_BETA);
    float *y = malloc((size_t)x->count * sizeof(float));
    if (!mean || !invstd || !gamma || !beta || !y) {
        run_fail(r, CLBN_EXIT_FAILURE, "out of host memory");
        free(y);
        y = NULL;
        goto done;
    }
    int scale = (r->opt.flags & CLBN_USE_SCALE) != 0;
    int center = (r->opt.flags & CLBN_USE_SHIFT) != 0;
    for (uint64_t i = 0; i < x->count; i++) {
        uint64_t c = channel_of(r, i);
        float z = (x->data[i] - mean[c]) * invstd[c];
        z = (scale ? gamma[c] : 1.0f) * z + (center ? beta[c] : 0.0f);
        y[i] = r->opt.activation == CLBN_ACTIVATION_RELU ? (z > 0.0f ? z : 0.0f)
                                                         : 1.0f / (1.0f + expf(-z));
    }
done:
    free(mean);
    free(invstd);
    free(gamma);
    free(beta);
    return y;
}

/* A state that never ran a training forward (made by infer, a frozen train or a backward) holds
 * the initial saved statistics, mean 0 and invstd 1: a backward from them would be silently
 * wrong. A tracked state shows it by t = 0; an untracked one only by those exact values, which
 * a real batch gives in every channel with negligible probability. */
static int check_saved_stats(run_ctx *r) {
    uint64_t t = 0;
    if (run_check(r, clbn_bn_get_batches_tracked(r->bn, &t), "batches tracked") != 0)
        return -1;
    float *mean = read_vector(r, CLBN_VECTOR_SAVED_MEAN);
    float *invstd = mean ? read_vector(r, CLBN_VECTOR_SAVED_INVSTD) : NULL;
    if (!invstd) {
        free(mean);
        return -1;
    }
    int initial = 1, valid = 1;
    for (uint64_t c = 0; c < r->c; c++) {
        if (mean[c] != 0.0f || invstd[c] != 1.0f)
            initial = 0;
        if (!(invstd[c] > 0.0f) || isinf(invstd[c]) || isnan(mean[c]))
            valid = 0;
    }
    free(mean);
    free(invstd);
    if (initial || !valid || ((r->opt.flags & CLBN_TRACK_RUNNING_STATS) && t == 0))
        return run_fail(r, CLBN_EXIT_USAGE,
                        "the state %s holds no saved statistics: run `clbn run train` with it "
                        "first, or use --frozen",
                        r->a.state);
    return 0;
}

static int run_op_now(run_ctx *r) {
    const run_args *a = &r->a;
    const npy_array *x = &r->file[FILE_X];
    int track = (r->opt.flags & CLBN_TRACK_RUNNING_STATS) != 0;
    int act = r->opt.activation != CLBN_ACTIVATION_NONE;

    if (!r->state_exists) {
        if (run_check(r, clbn_bn_create(r->ctx, &r->opt, &r->bn), "cannot create the state") != 0)
            return -1;
        static const clbn_vector vec[] = {CLBN_VECTOR_GAMMA, CLBN_VECTOR_BETA,
                                          CLBN_VECTOR_RUNNING_MEAN, CLBN_VECTOR_RUNNING_VAR};
        for (int f = FILE_GAMMA; f < FILE_COUNT; f++)
            if (a->path[f] &&
                run_check(r,
                          clbn_bn_write_vector(r->bn, vec[f - FILE_GAMMA], r->file[f].data, r->c),
                          file_option[f]) != 0)
                return -1;
    } else if (a->op == RUN_BACKWARD && !a->frozen && check_saved_stats(r) != 0) {
        return -1;
    }

    r->x_buf = make_buffer(r, x->data, x->count, "x buffer");
    if (!r->x_buf)
        return -1;
    r->y_buf = make_buffer(r, NULL, x->count, "y buffer");
    if (!r->y_buf)
        return -1;

    if (a->op == RUN_TRAIN) {
        clbn_status st = a->frozen ? clbn_bn_forward_frozen(r->bn, &r->shape, r->x_buf, 0, r->y_buf,
                                                            0, NULL, 0, NULL, NULL)
                                   : clbn_bn_forward_train(r->bn, &r->shape, r->x_buf, 0, r->y_buf,
                                                           0, NULL, NULL, 0, NULL, NULL);
        if (run_check(r, st, a->frozen ? "frozen forward" : "training forward") != 0 ||
            add_tensor_output(r, "y.npy", r->y_buf) != 0)
            return -1;
        if (!a->frozen && (add_vector_output(r, "mean.npy", CLBN_VECTOR_SAVED_MEAN) != 0 ||
                           add_vector_output(r, "invstd.npy", CLBN_VECTOR_SAVED_INVSTD) != 0))
            return -1;
    } else if (a->op == RUN_INFER) {
        if (run_check(r,
                      clbn_bn_forward_infer(r->bn, &r->shape, r->x_buf, 0, r->y_buf, 0, NULL, 0,
                                            NULL, NULL),
                      "inference forward") != 0 ||
            add_tensor_output(r, "y.npy", r->y_buf) != 0)
            return -1;
    } else {
        r->dy_buf = make_buffer(r, r->file[FILE_DY].data, x->count, "dy buffer");
        r->dx_buf = r->dy_buf ? make_buffer(r, NULL, x->count, "dx buffer") : NULL;
        if (!r->dx_buf)
            return -1;
        int y_given = a->path[FILE_Y] != NULL;
        if (y_given) {
            cl_int err = clEnqueueWriteBuffer(r->queue, r->y_buf, CL_TRUE, 0,
                                              (size_t)x->count * sizeof(float),
                                              r->file[FILE_Y].data, 0, NULL, NULL);
            if (run_check_cl(r, err, "y buffer") != 0)
                return -1;
        }
        clbn_status st;
        if (a->frozen) {
            if (act && !y_given &&
                run_check(r,
                          clbn_bn_forward_frozen(r->bn, &r->shape, r->x_buf, 0, r->y_buf, 0, NULL,
                                                 0, NULL, NULL),
                          "frozen forward (recomputing y)") != 0)
                return -1;
            st = clbn_bn_backward_frozen(r->bn, &r->shape, r->x_buf, 0, r->y_buf, 0, r->dy_buf, 0,
                                         r->dx_buf, 0, NULL, 0, NULL, NULL);
        } else {
            clbn_saved_stats saved = {NULL, 0, NULL, 0};
            const clbn_saved_stats *saved_ptr = NULL; /* the state's own */
            if (r->state_exists) {
                if (act && !y_given) {
                    float *y = recompute_y_from_saved(r);
                    if (!y)
                        return -1;
                    cl_int err =
                        clEnqueueWriteBuffer(r->queue, r->y_buf, CL_TRUE, 0,
                                             (size_t)x->count * sizeof(float), y, 0, NULL, NULL);
                    free(y);
                    if (run_check_cl(r, err, "y buffer") != 0)
                        return -1;
                }
            } else {
                /* No saved statistics yet: those of this batch, into buffers of our own so
                 * the state keeps its own, and with the running-statistics update undone:
                 * a backward changes neither. */
                float *mean0 = NULL, *var0 = NULL;
                uint64_t t0 = 0;
                if (track) {
                    mean0 = read_vector(r, CLBN_VECTOR_RUNNING_MEAN);
                    var0 = mean0 ? read_vector(r, CLBN_VECTOR_RUNNING_VAR) : NULL;
                    if (!var0 || run_check(r, clbn_bn_get_batches_tracked(r->bn, &t0), "t") != 0) {
                        free(mean0);
                        free(var0);
                        return -1;
                    }
                }
                r->saved_mean_buf = make_buffer(r, NULL, r->c, "saved mean buffer");
                r->saved_invstd_buf =
                    r->saved_mean_buf ? make_buffer(r, NULL, r->c, "saved invstd buffer") : NULL;
                saved.mean = r->saved_mean_buf;
                saved.invstd = r->saved_invstd_buf;
                cl_mem y_target = y_given ? r->dx_buf : r->y_buf; /* keep the given y */
                int bad = !r->saved_invstd_buf ||
                          run_check(r,
                                    clbn_bn_forward_train(r->bn, &r->shape, r->x_buf, 0, y_target,
                                                          0, &saved, NULL, 0, NULL, NULL),
                                    "training forward (batch statistics for backward)") != 0;
                if (!bad && track)
                    bad = run_check(
                              r, clbn_bn_write_vector(r->bn, CLBN_VECTOR_RUNNING_MEAN, mean0, r->c),
                              "running mean") != 0 ||
                          run_check(
                              r, clbn_bn_write_vector(r->bn, CLBN_VECTOR_RUNNING_VAR, var0, r->c),
                              "running var") != 0 ||
                          run_check(r, clbn_bn_set_batches_tracked(r->bn, t0), "t") != 0;
                free(mean0);
                free(var0);
                if (bad)
                    return -1;
                saved_ptr = &saved;
            }
            st = clbn_bn_backward(r->bn, &r->shape, r->x_buf, 0, act ? r->y_buf : NULL, 0,
                                  r->dy_buf, 0, r->dx_buf, 0, saved_ptr, NULL, 0, NULL, NULL);
        }
        if (run_check(r, st, a->frozen ? "frozen backward" : "backward") != 0 ||
            add_tensor_output(r, "dx.npy", r->dx_buf) != 0)
            return -1;
        if ((r->opt.flags & CLBN_USE_SCALE) &&
            add_vector_output(r, "dgamma.npy", CLBN_VECTOR_DGAMMA) != 0)
            return -1;
        if ((r->opt.flags & CLBN_USE_SHIFT) &&
            add_vector_output(r, "dbeta.npy", CLBN_VECTOR_DBETA) != 0)
            return -1;
    }
    if (track && (add_vector_output(r, "running_mean.npy", CLBN_VECTOR_RUNNING_MEAN) != 0 ||
                  add_vector_output(r, "running_var.npy", CLBN_VECTOR_RUNNING_VAR) != 0))
        return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Outputs                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* mkdir -p; returns 1 when it made the last component (so a failure can take it away). */
static int make_dirs(const char *path, int *made) {
    char *p = malloc(strlen(path) + 1);
    if (!p)
        return -1;
    strcpy(p, path);
    *made = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char saved = *s;
            *s = '\0';
            if (mkdir(p, 0777) == 0) {
                *made = saved == '\0';
            } else if (errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = saved;
            if (saved == '\0')
                break;
        }
    }
    free(p);
    return 0;
}

static char *join_path(const char *dir, const char *prefix, const char *name, const char *suffix) {
    size_t n = strlen(dir) + strlen(prefix) + strlen(name) + strlen(suffix) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s%s%s", dir, prefix, name, suffix);
    return s;
}

static void remove_temporaries(run_ctx *r) {
    for (int i = 0; i < r->n_out; i++)
        if (r->out[i].tmp) {
            unlink(r->out[i].tmp);
            free(r->out[i].tmp);
            r->out[i].tmp = NULL;
        }
}

static int write_outputs(run_ctx *r) {
    int made = 0;
    char err[512], suffix[48];
    if (make_dirs(r->a.out, &made) != 0)
        return run_fail(r, CLBN_EXIT_IO, "--out %s: cannot create the directory: %s", r->a.out,
                        strerror(errno));
    snprintf(suffix, sizeof suffix, ".tmp-%ld", (long)getpid());
    for (int i = 0; i < r->n_out; i++) {
        run_output *o = &r->out[i];
        o->tmp = join_path(r->a.out, ".", o->name, suffix);
        o->final = join_path(r->a.out, "", o->name, "");
        if (!o->tmp || !o->final) {
            run_fail(r, CLBN_EXIT_FAILURE, "out of host memory");
            goto fail;
        }
        if (npy_write(o->tmp, o->data, o->ndim, o->shape, err, sizeof err) != 0) {
            run_fail(r, CLBN_EXIT_IO, "%s", err);
            goto fail;
        }
    }
    /* The state goes last but one: it is atomic on its own, and once it is saved the renames
     * below are all that is left. */
    if (r->a.state) {
        char what[1100];
        snprintf(what, sizeof what, "cannot save --state %s", r->a.state);
        clbn_status st = clbn_bn_save(r->bn, r->a.state);
        if (st == CLBN_ERROR_IO) {
            run_fail(r, CLBN_EXIT_IO, "%s: %s", what, clbn_last_error_message());
            goto fail;
        }
        if (run_check(r, st, what) != 0)
            goto fail;
    }
    for (int i = 0; i < r->n_out; i++) {
        run_output *o = &r->out[i];
        if (rename(o->tmp, o->final) != 0) {
            run_fail(r, CLBN_EXIT_IO, "cannot rename %s to %s: %s", o->tmp, o->final,
                     strerror(errno));
            goto fail;
        }
        free(o->tmp);
        o->tmp = NULL;
    }
    return 0;
fail:
    remove_temporaries(r);
    if (made)
        rmdir(r->a.out);
    return -1;
}

static void run_release(run_ctx *r) {
    remove_temporaries(r);
    for (int i = 0; i < r->n_out; i++) {
        free(r->out[i].data);
        free(r->out[i].final);
    }
    for (int f = 0; f < FILE_COUNT; f++)
        npy_free(&r->file[f]);
    cl_mem bufs[] = {r->x_buf,  r->y_buf,          r->dy_buf,
                     r->dx_buf, r->saved_mean_buf, r->saved_invstd_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    clbn_bn_release(r->bn);
    clbn_context_release(r->ctx);
}

int clbn_cmd_run(int argc, char **argv) {
    run_ctx *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "clbn run: out of host memory\n");
        return CLBN_EXIT_FAILURE;
    }
    int help = parse_args(r, argc, argv);
    if (help == 1) {
        run_usage(stdout);
    } else if (help == 0 && load_inputs(r) == 0 && check_out_dir(r) == 0 && open_state(r) == 0 &&
               check_mode(r) == 0 && run_op_now(r) == 0) {
        write_outputs(r);
    }
    int status = r->status;
    if (status != CLBN_EXIT_OK) {
        /* One line, whatever the library's detail message holds (a build log has newlines). */
        for (char *p = r->message; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        fprintf(stderr, "clbn run: %s\n", r->message);
    }
    run_release(r);
    free(r);
    return status;
}
