/* train_ref.c - the double-precision reference of the training demo's network (train_ref.h). */
#include "train_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int has_bias(const ref_net_config *c, int l) {
    return !c->bn || l == c->layers;
}

static int has_bn(const ref_net_config *c, int l) {
    return c->bn && l < c->layers;
}

static size_t count_of(const ref_net_config *c, ref_param what, int l) {
    return what == REF_W || what == REF_DW ? (size_t)c->sizes[l - 1] * (size_t)c->sizes[l]
                                           : (size_t)c->sizes[l];
}

/* Whether layer l has the parameter. */
static int exists(const ref_net_config *c, ref_param what, int l) {
    switch (what) {
    case REF_W:
    case REF_DW:
        return 1;
    case REF_B:
    case REF_DB:
        return has_bias(c, l);
    default:
        return has_bn(c, l);
    }
}

void ref_net_free(ref_net *r) {
    for (int w = 0; w < REF_PARAM_COUNT; w++)
        for (int l = 0; l <= REF_NET_MAX_LAYERS; l++) {
            free(r->p[w][l]);
            r->p[w][l] = NULL;
        }
}

int ref_net_init(ref_net *r, const ref_net_config *cfg, const float *const *weights) {
    memset(r, 0, sizeof *r);
    if (cfg->layers < 2 || cfg->layers > REF_NET_MAX_LAYERS ||
        (cfg->act != REF_ACT_RELU && cfg->act != REF_ACT_SIGMOID))
        return 1;
    for (int l = 0; l <= cfg->layers; l++)
        if (cfg->sizes[l] < 1)
            return 1;
    r->cfg = *cfg;
    r->eps = 1e-5;
    r->factor = 0.1;
    for (int l = 1; l <= cfg->layers; l++)
        for (int w = 0; w < REF_PARAM_COUNT; w++) {
            if (!exists(cfg, (ref_param)w, l))
                continue;
            const size_t n = count_of(cfg, (ref_param)w, l);
            double *v = calloc(n, sizeof *v);
            if (!v) {
                ref_net_free(r);
                return 1;
            }
            r->p[w][l] = v;
            for (size_t i = 0; i < n; i++)
                v[i] = w == REF_W                           ? (double)weights[l - 1][i]
                       : w == REF_GAMMA || w == REF_RUN_VAR ? 1.0
                                                            : 0.0;
        }
    return 0;
}

double *ref_net_param(ref_net *r, ref_param what, int layer, size_t *count) {
    if (layer < 1 || layer > r->cfg.layers || (int)what < 0 || what >= REF_PARAM_COUNT ||
        !r->p[what][layer])
        return NULL;
    *count = count_of(&r->cfg, what, layer);
    return r->p[what][layer];
}

/* One forward's values. Per layer l = 1..layers: z = a_prev W (+ b where there is a bias),
 * xhat, y = gamma xhat + beta (bn) or z, a = act(y) (hidden) or y (logits); per feature the
 * statistics normalized with (the batch's or the running ones) and the batch's own biased
 * variance. a[0] is the input. */
typedef struct pass {
    int B;
    double *a[REF_NET_MAX_LAYERS + 1], *z[REF_NET_MAX_LAYERS + 1], *y[REF_NET_MAX_LAYERS + 1],
        *xhat[REF_NET_MAX_LAYERS + 1];
    double *mean[REF_NET_MAX_LAYERS + 1], *var[REF_NET_MAX_LAYERS + 1],
        *invstd[REF_NET_MAX_LAYERS + 1];
} pass;

static void pass_free(pass *p) {
    for (int l = 0; l <= REF_NET_MAX_LAYERS; l++) {
        free(p->a[l]);
        free(p->z[l]);
        free(p->y[l]);
        free(p->xhat[l]);
        free(p->mean[l]);
        free(p->var[l]);
        free(p->invstd[l]);
    }
    memset(p, 0, sizeof *p);
}

static int pass_alloc(pass *p, const ref_net_config *c, int B) {
    memset(p, 0, sizeof *p);
    p->B = B;
    const size_t rows = (size_t)B;
    int bad = !(p->a[0] = calloc(rows * (size_t)c->sizes[0], sizeof(double)));
    for (int l = 1; !bad && l <= c->layers; l++) {
        const size_t n = (size_t)c->sizes[l];
        bad = !(p->a[l] = calloc(rows * n, sizeof(double))) ||
              !(p->z[l] = calloc(rows * n, sizeof(double))) ||
              !(p->y[l] = calloc(rows * n, sizeof(double))) ||
              !(p->xhat[l] = calloc(rows * n, sizeof(double))) ||
              !(p->mean[l] = calloc(n, sizeof(double))) ||
              !(p->var[l] = calloc(n, sizeof(double))) ||
              !(p->invstd[l] = calloc(n, sizeof(double)));
    }
    if (bad)
        pass_free(p);
    return bad;
}

static double activate(int act, double v) {
    return act == REF_ACT_RELU ? (v > 0.0 ? v : 0.0) : 1.0 / (1.0 + exp(-v));
}

/* act' from the activation's output a, as the device evaluates it. */
static double act_slope(int act, double a) {
    return act == REF_ACT_RELU ? (a > 0.0 ? 1.0 : 0.0) : a * (1.0 - a);
}

/* Forward of B rows; batch_stats: normalize with the batch's statistics, else the running. */
static int forward(const ref_net *r, const float *x, int B, int batch_stats, pass *p) {
    const ref_net_config *c = &r->cfg;
    if (B < 1 || pass_alloc(p, c, B))
        return 1;
    for (size_t i = 0; i < (size_t)B * (size_t)c->sizes[0]; i++)
        p->a[0][i] = (double)x[i];
    for (int l = 1; l <= c->layers; l++) {
        const int in = c->sizes[l - 1], out = c->sizes[l];
        const double *W = r->p[REF_W][l], *b = r->p[REF_B][l], *A = p->a[l - 1];
        double *z = p->z[l], *y = p->y[l], *a = p->a[l], *xh = p->xhat[l];
        for (int s = 0; s < B; s++)
            for (int j = 0; j < out; j++) {
                double acc = b ? b[j] : 0.0;
                for (int k = 0; k < in; k++)
                    acc += A[(size_t)s * in + k] * W[(size_t)k * out + j];
                z[(size_t)s * out + j] = acc;
            }
        if (has_bn(c, l)) {
            const double *g = r->p[REF_GAMMA][l], *be = r->p[REF_BETA][l];
            for (int j = 0; j < out; j++) {
                double m = 0.0, v = 0.0;
                for (int s = 0; s < B; s++)
                    m += z[(size_t)s * out + j];
                m /= B;
                for (int s = 0; s < B; s++) {
                    const double d = z[(size_t)s * out + j] - m;
                    v += d * d;
                }
                v /= B;
                p->mean[l][j] = m;
                p->var[l][j] = v;
                const double nm = batch_stats ? m : r->p[REF_RUN_MEAN][l][j];
                const double nv = batch_stats ? v : r->p[REF_RUN_VAR][l][j];
                const double is = 1.0 / sqrt(nv + r->eps);
                p->invstd[l][j] = is;
                for (int s = 0; s < B; s++) {
                    const size_t i = (size_t)s * out + j;
                    xh[i] = (z[i] - nm) * is;
                    y[i] = g[j] * xh[i] + be[j];
                }
            }
        } else {
            memcpy(y, z, (size_t)B * (size_t)out * sizeof *y);
        }
        for (size_t i = 0; i < (size_t)B * (size_t)out; i++)
            a[i] = l == c->layers ? y[i] : activate(c->act, y[i]);
    }
    return 0;
}

/* The mean softmax cross-entropy of the logits, and when dlogits is not NULL its gradient
 * (softmax - onehot) / B. */
static double xent(const double *logits, const int32_t *labels, int B, int K, double *dlogits) {
    double total = 0.0;
    for (int s = 0; s < B; s++) {
        const double *zr = logits + (size_t)s * K;
        double m = zr[0], sum = 0.0;
        for (int j = 1; j < K; j++)
            m = zr[j] > m ? zr[j] : m;
        for (int j = 0; j < K; j++)
            sum += exp(zr[j] - m);
        total += log(sum) + m - zr[labels[s]];
        if (dlogits)
            for (int j = 0; j < K; j++)
                dlogits[(size_t)s * K + j] =
                    (exp(zr[j] - m) / sum - (j == labels[s] ? 1.0 : 0.0)) / B;
    }
    return total / B;
}

static int labels_ok(const ref_net_config *c, const int32_t *labels, int B) {
    for (int s = 0; s < B; s++)
        if (labels[s] < 0 || labels[s] >= c->sizes[c->layers])
            return 0;
    return 1;
}

int ref_net_loss(const ref_net *r, const float *x, const int32_t *labels, int B, double *loss) {
    pass p;
    if (!labels_ok(&r->cfg, labels, B) || forward(r, x, B, 1, &p))
        return 1;
    *loss = xent(p.a[r->cfg.layers], labels, B, r->cfg.sizes[r->cfg.layers], NULL);
    pass_free(&p);
    return 0;
}

/* Forward and backward; the pass stays allocated for the caller (the running statistics). */
static int gradients(ref_net *r, const float *x, const int32_t *labels, int B, double *loss,
                     pass *p) {
    const ref_net_config *c = &r->cfg;
    const int L = c->layers;
    if (B < 2 && c->bn)
        return 1; /* the unbiased running variance needs two rows */
    if (!labels_ok(c, labels, B) || forward(r, x, B, 1, p))
        return 1;
    int wide = 0;
    for (int l = 0; l <= L; l++)
        wide = c->sizes[l] > wide ? c->sizes[l] : wide;
    double *dz = calloc((size_t)B * (size_t)wide, sizeof *dz);
    double *da = calloc((size_t)B * (size_t)wide, sizeof *da);
    if (!dz || !da) {
        free(dz);
        free(da);
        pass_free(p);
        return 1;
    }
    *loss = xent(p->a[L], labels, B, c->sizes[L], dz);
    for (int l = L; l >= 1; l--) { /* dz: dL/dz_l */
        const int in = c->sizes[l - 1], out = c->sizes[l];
        const double *A = p->a[l - 1], *W = r->p[REF_W][l];
        double *dW = r->p[REF_DW][l], *db = r->p[REF_DB][l];
        for (int k = 0; k < in; k++)
            for (int j = 0; j < out; j++) {
                double acc = 0.0;
                for (int s = 0; s < B; s++)
                    acc += A[(size_t)s * in + k] * dz[(size_t)s * out + j];
                dW[(size_t)k * out + j] = acc;
            }
        if (db)
            for (int j = 0; j < out; j++) {
                double acc = 0.0;
                for (int s = 0; s < B; s++)
                    acc += dz[(size_t)s * out + j];
                db[j] = acc;
            }
        if (l == 1)
            break;
        for (int s = 0; s < B; s++) /* da = dz W^T */
            for (int k = 0; k < in; k++) {
                double acc = 0.0;
                for (int j = 0; j < out; j++)
                    acc += dz[(size_t)s * out + j] * W[(size_t)k * out + j];
                da[(size_t)s * in + k] = acc;
            }
        const int h = l - 1, n = in; /* dL/da_h -> dL/dz_h */
        const double *ah = p->a[h];
        for (size_t i = 0; i < (size_t)B * (size_t)n; i++)
            dz[i] = da[i] * act_slope(c->act, ah[i]); /* dL/dy_h */
        if (has_bn(c, h)) {
            const double *xh = p->xhat[h], *g = r->p[REF_GAMMA][h];
            double *dg = r->p[REF_DGAMMA][h], *dbe = r->p[REF_DBETA][h];
            for (int j = 0; j < n; j++) {
                double sg = 0.0, sb = 0.0;
                for (int s = 0; s < B; s++) {
                    const size_t i = (size_t)s * n + j;
                    sg += dz[i] * xh[i];
                    sb += dz[i];
                }
                dg[j] = sg;
                dbe[j] = sb;
                const double scale = g[j] * p->invstd[h][j] / B;
                for (int s = 0; s < B; s++) {
                    const size_t i = (size_t)s * n + j;
                    dz[i] = scale * (B * dz[i] - sb - xh[i] * sg);
                }
            }
        }
    }
    free(dz);
    free(da);
    return 0;
}

int ref_net_gradients(ref_net *r, const float *x, const int32_t *labels, int B, double *loss) {
    pass p;
    if (gradients(r, x, labels, B, loss, &p))
        return 1;
    pass_free(&p);
    return 0;
}

int ref_net_step(ref_net *r, const float *x, const int32_t *labels, int B, double *loss) {
    pass p;
    if (gradients(r, x, labels, B, loss, &p))
        return 1;
    const ref_net_config *c = &r->cfg;
    for (int l = 1; l <= c->layers; l++) {
        if (has_bn(c, l))
            for (int j = 0; j < c->sizes[l]; j++) {
                double *rm = &r->p[REF_RUN_MEAN][l][j], *rv = &r->p[REF_RUN_VAR][l][j];
                *rm = (1.0 - r->factor) * *rm + r->factor * p.mean[l][j];
                *rv = (1.0 - r->factor) * *rv + r->factor * p.var[l][j] * B / (B - 1.0);
            }
        static const ref_param upd[][2] = {
            {REF_W, REF_DW}, {REF_B, REF_DB}, {REF_GAMMA, REF_DGAMMA}, {REF_BETA, REF_DBETA}};
        for (size_t u = 0; u < sizeof upd / sizeof upd[0]; u++) {
            double *v = r->p[upd[u][0]][l];
            const double *g = r->p[upd[u][1]][l];
            if (!v)
                continue;
            const size_t n = count_of(c, upd[u][0], l);
            for (size_t i = 0; i < n; i++)
                v[i] -= c->lr * g[i];
        }
    }
    pass_free(&p);
    return 0;
}

int ref_net_logits(const ref_net *r, const float *x, int B, int batch_stats, double *logits) {
    pass p;
    if (forward(r, x, B, batch_stats, &p))
        return 1;
    memcpy(logits, p.a[r->cfg.layers],
           (size_t)B * (size_t)r->cfg.sizes[r->cfg.layers] * sizeof *logits);
    pass_free(&p);
    return 0;
}

double ref_net_kink_margin(const ref_net *r, const float *x, int B) {
    if (r->cfg.act != REF_ACT_RELU)
        return HUGE_VAL;
    pass p;
    if (forward(r, x, B, 1, &p))
        return -1.0;
    double m = HUGE_VAL;
    for (int l = 1; l < r->cfg.layers; l++)
        for (size_t i = 0; i < (size_t)B * (size_t)r->cfg.sizes[l]; i++)
            m = fabs(p.y[l][i]) < m ? fabs(p.y[l][i]) : m;
    pass_free(&p);
    return m;
}
