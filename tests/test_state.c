/* The batch-norm state object: vectors in and out (host copies and the cl_mem), t, reset, the
 * exported folding, and save/load (bitwise round trip, refusal of damaged or foreign files,
 * atomic replacement, failed saves that leave the old file alone). */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct fixture {
    clbn_context *ctx;
    cl_context cl_ctx;
    cl_command_queue queue;
    char dir[256];
} fixture;

static fixture F;

static int group_setup(void **state) {
    (void)state;
    F.ctx = tu_context();
    TU_OK(clbn_context_get_cl(F.ctx, &F.cl_ctx, &F.queue));
    snprintf(F.dir, sizeof F.dir, "/tmp/clbn-test-state-XXXXXX");
    assert_non_null(mkdtemp(F.dir));
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    DIR *d = opendir(F.dir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", F.dir, e->d_name);
                if (unlink(p) != 0) {
                    chmod(p, 0700); /* a read-only subfolder from the unwritable-path test */
                    rmdir(p);
                }
            }
        }
        closedir(d);
    }
    rmdir(F.dir);
    clbn_context_release(F.ctx);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static clbn_bn *make_bn(uint64_t channels, uint32_t flags, float eps) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = channels;
    o.flags = flags;
    o.eps = eps;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(F.ctx, &o, &bn));
    return bn;
}

/* Fills vector v with values that tell vectors apart and include awkward floats (negative zero,
 * a subnormal, a huge value); running var and saved invstd stay positive. */
static void vector_values(int v, float *out, size_t c, uint64_t seed) {
    ref_rng r;
    ref_rng_seed(&r, seed * 131u + (uint64_t)v);
    for (size_t i = 0; i < c; i++) {
        double x = ref_normal(&r);
        if (v == CLBN_VECTOR_RUNNING_VAR || v == CLBN_VECTOR_SAVED_INVSTD)
            x = 0.05 + fabs(x) * 2.0;
        else
            x = x * 3.0 + (double)v * 10.0;
        out[i] = (float)x;
    }
    if (c >= 4 && v != CLBN_VECTOR_RUNNING_VAR && v != CLBN_VECTOR_SAVED_INVSTD) {
        out[0] = -0.0f;
        out[1] = 1e-40f; /* subnormal */
        out[2] = -3.0e38f;
    }
}

static void write_all(clbn_bn *bn, float (*vals)[64], size_t c, uint64_t seed) {
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        vector_values(v, vals[v], c, seed);
        TU_OK(clbn_bn_write_vector(bn, (clbn_vector)v, vals[v], c));
    }
}

static void expect_bits(const char *what, const float *want, const float *got, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)) != 0) {
            uint32_t bw, bg;
            memcpy(&bw, &want[i], sizeof bw);
            memcpy(&bg, &got[i], sizeof bg);
            fail_msg("%s[%zu]: expected %.9g (bits %08x), got %.9g (bits %08x)", what, i,
                     (double)want[i], (unsigned)bw, (double)got[i], (unsigned)bg);
        }
}

static unsigned char *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *size = n;
    return buf;
}

static void write_whole(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot create %s: %s", path, strerror(errno));
    if (n && fwrite(data, 1, n, f) != n)
        fail_msg("cannot write %s", path);
    if (fclose(f) != 0)
        fail_msg("cannot close %s", path);
}

static void path_in_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", F.dir, name);
}

/* The names in the test folder, sorted, as one string "a,b,c" (for leftover temp files). */
static void list_dir(const char *dir, char *out, size_t size) {
    char names[64][256];
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[256];
            memcpy(t, names[j], sizeof t);
            memcpy(names[j], names[j - 1], sizeof t);
            memcpy(names[j - 1], t, sizeof t);
        }
    out[0] = '\0';
    size_t used = 0;
    for (int i = 0; i < n; i++) { /* comma-separated, cut short rather than overflow */
        size_t len = strlen(names[i]);
        if (used + len + 2 > size)
            break;
        if (i)
            out[used++] = ',';
        memcpy(out + used, names[i], len + 1);
        used += len;
    }
}

/* Loads path and expects one of the statuses; a refused load must not hand out an object. */
static clbn_status load_expect(const char *what, const char *path, const clbn_status *allowed,
                               size_t n_allowed) {
    clbn_bn *bn = NULL;
    clbn_status st = clbn_bn_load(F.ctx, path, &bn);
    if (st == CLBN_SUCCESS)
        clbn_bn_release(bn);
    for (size_t i = 0; i < n_allowed; i++)
        if (st == allowed[i]) {
            if (st != CLBN_SUCCESS && bn != NULL)
                fail_msg("%s: load failed with %s but returned an object", what,
                         clbn_status_name(st));
            return st;
        }
    char want[256] = "";
    for (size_t i = 0; i < n_allowed; i++) {
        size_t used = strlen(want);
        snprintf(want + used, sizeof want - used, "%s%s", i ? " or " : "",
                 clbn_status_name(allowed[i]));
    }
    fail_msg("%s: load returned %s, expected %s (message: \"%s\")", what, clbn_status_name(st),
             want, clbn_last_error_message());
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Vectors, t, reset, export                                                                */
/* ---------------------------------------------------------------------------------------- */

#define VC 37u /* an odd channel count, so no size happens to be a multiple of a vector width */

static void create_gives_documented_initial_values(void **state) {
    (void)state;
    clbn_bn_options d;
    clbn_bn_options_init(&d);
    assert_true(d.eps == 1e-5f);
    assert_true(d.factor == 0.1f);
    assert_int_equal(d.flags, CLBN_BN_FLAGS_DEFAULT);
    assert_int_equal(d.activation, CLBN_ACTIVATION_NONE);

    clbn_bn *bn = make_bn(VC, CLBN_BN_FLAGS_DEFAULT, 1e-5f);
    clbn_bn_options o;
    TU_OK(clbn_bn_get_options(bn, &o));
    assert_int_equal(o.channels, VC);
    assert_true(o.eps == 1e-5f);
    assert_true(o.factor == 0.1f);
    assert_int_equal(o.flags, CLBN_BN_FLAGS_DEFAULT);
    assert_int_equal(o.activation, CLBN_ACTIVATION_NONE);
    const struct {
        clbn_vector v;
        float value;
    } init[] = {{CLBN_VECTOR_GAMMA, 1.0f},        {CLBN_VECTOR_BETA, 0.0f},
                {CLBN_VECTOR_RUNNING_MEAN, 0.0f}, {CLBN_VECTOR_RUNNING_VAR, 1.0f},
                {CLBN_VECTOR_DGAMMA, 0.0f},       {CLBN_VECTOR_DBETA, 0.0f}};
    for (size_t k = 0; k < sizeof init / sizeof init[0]; k++) {
        float got[VC], want[VC];
        for (unsigned i = 0; i < VC; i++)
            want[i] = init[k].value;
        TU_OK(clbn_bn_read_vector(bn, init[k].v, got, VC));
        expect_bits(clbn_vector_name(init[k].v), want, got, VC);
    }
    uint64_t t = 99;
    TU_OK(clbn_bn_get_batches_tracked(bn, &t));
    assert_int_equal(t, 0);
    clbn_bn_release(bn);
}

static void vectors_round_trip_all_eight(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(VC, CLBN_BN_FLAGS_DEFAULT, 1e-5f);
    float vals[CLBN_VECTOR_COUNT][64];
    /* All written first, then all read: a write that lands in another vector shows. */
    write_all(bn, vals, VC, 1);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        float got[VC];
        memset(got, 0xEE, sizeof got);
        TU_OK(clbn_bn_read_vector(bn, (clbn_vector)v, got, VC));
        expect_bits(clbn_vector_name((clbn_vector)v), vals[v], got, VC);
    }
    clbn_bn_release(bn);
}

static void get_buffer_holds_the_vector(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(VC, CLBN_BN_FLAGS_DEFAULT, 1e-5f);
    float vals[CLBN_VECTOR_COUNT][64];
    write_all(bn, vals, VC, 2);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        cl_mem m = NULL;
        TU_OK(clbn_bn_get_buffer(bn, (clbn_vector)v, &m));
        assert_non_null(m);
        size_t bytes = 0;
        assert_int_equal(clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof bytes, &bytes, NULL),
                         CL_SUCCESS);
        if (bytes < VC * sizeof(float))
            fail_msg("%s: cl_mem holds %zu bytes, fewer than C = %u floats",
                     clbn_vector_name((clbn_vector)v), bytes, VC);
        cl_context mc = NULL;
        assert_int_equal(clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof mc, &mc, NULL), CL_SUCCESS);
        assert_ptr_equal(mc, F.cl_ctx);
        float got[VC];
        assert_int_equal(
            clEnqueueReadBuffer(F.queue, m, CL_TRUE, 0, sizeof got, got, 0, NULL, NULL),
            CL_SUCCESS);
        expect_bits(clbn_vector_name((clbn_vector)v), vals[v], got, VC);
    }
    clbn_bn_release(bn);
}

static void batches_tracked_set_get(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(3, CLBN_BN_FLAGS_DEFAULT, 1e-5f);
    const uint64_t values[] = {1, 0, 12345, (1ull << 40) + 3, UINT64_MAX - 1, 0};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        TU_OK(clbn_bn_set_batches_tracked(bn, values[i]));
        uint64_t t = 7;
        TU_OK(clbn_bn_get_batches_tracked(bn, &t));
        assert_int_equal(t, values[i]);
    }
    clbn_bn_release(bn);
}

static void reset_running_stats_touches_only_running_stats(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(VC, CLBN_BN_FLAGS_DEFAULT, 1e-5f);
    float vals[CLBN_VECTOR_COUNT][64];
    write_all(bn, vals, VC, 3);
    TU_OK(clbn_bn_set_batches_tracked(bn, 99));
    TU_OK(clbn_bn_reset_running_stats(bn));
    float zeros[VC], ones[VC], got[VC];
    for (unsigned i = 0; i < VC; i++) {
        zeros[i] = 0.0f;
        ones[i] = 1.0f;
    }
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, got, VC));
    expect_bits("running mean after reset", zeros, got, VC);
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, got, VC));
    expect_bits("running var after reset", ones, got, VC);
    uint64_t t = 5;
    TU_OK(clbn_bn_get_batches_tracked(bn, &t));
    assert_int_equal(t, 0);
    const clbn_vector kept[] = {CLBN_VECTOR_GAMMA,      CLBN_VECTOR_BETA,
                                CLBN_VECTOR_SAVED_MEAN, CLBN_VECTOR_SAVED_INVSTD,
                                CLBN_VECTOR_DGAMMA,     CLBN_VECTOR_DBETA};
    for (size_t k = 0; k < sizeof kept / sizeof kept[0]; k++) {
        TU_OK(clbn_bn_read_vector(bn, kept[k], got, VC));
        expect_bits(clbn_vector_name(kept[k]), vals[kept[k]], got, VC);
    }
    clbn_bn_release(bn);
}

/* |got - ref| <= atol + rtol * scale[i], where scale is the size of the terms that made ref
 * (so a value that cancels to near zero still gets the rounding of its terms). */
static void check_scaled(const char *what, const float *got, const double *ref, const double *scale,
                         size_t n, double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= atol + rtol * scale[i]))
            fail_msg("%s[%zu]: got %.9g, reference %.9g (|err| %.3g > %.1g + %.1g * %.3g)", what, i,
                     (double)got[i], ref[i], err, atol, rtol, scale[i]);
    }
}

/* export_folded against a = gamma / sqrt(var + eps), b = beta - a * mean in double. Tolerance:
 * a: 2e-6 relative (float var + eps, sqrt and divide: a few ulp, 2^-23 = 1.2e-7 each);
 * b: 2e-6 relative to |beta| + |a * mean|. eps = 0.01 so forgetting eps, or using the saved
 * statistics instead of the running ones, is far outside the tolerance. */
static void check_export(clbn_bn *bn, int scale_on, int shift_on, uint64_t seed) {
    const float eps = 0.01f;
    float g[VC], be[VC], rm[VC], rv[VC], sm[VC], si[VC];
    ref_rng r;
    ref_rng_seed(&r, seed);
    for (unsigned i = 0; i < VC; i++) {
        g[i] = (float)(1.5 * ref_normal(&r)); /* negative gammas too */
        be[i] = (float)ref_normal(&r);
        rm[i] = (float)(5.0 + 3.0 * ref_normal(&r));
        rv[i] = (float)(0.02 + 4.0 * ref_uniform(&r));
        sm[i] = rm[i] + 1.0f; /* decoys: the saved statistics must not be used */
        si[i] = 0.5f;
    }
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm, VC));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv, VC));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_SAVED_MEAN, sm, VC));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_SAVED_INVSTD, si, VC));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, g, VC));
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_BETA, be, VC));
    float a[VC], b[VC];
    TU_OK(clbn_bn_export_folded(bn, a, b));
    double ra[VC], rb[VC], sa[VC], sb[VC];
    for (unsigned i = 0; i < VC; i++) {
        double gamma = scale_on ? (double)g[i] : 1.0; /* gamma = 1 when scaling is off */
        double beta = shift_on ? (double)be[i] : 0.0; /* beta = 0 when centering is off */
        ra[i] = gamma / sqrt((double)rv[i] + (double)eps);
        rb[i] = beta - ra[i] * (double)rm[i];
        sa[i] = fabs(ra[i]);
        sb[i] = fabs(beta) + fabs(ra[i] * (double)rm[i]);
    }
    check_scaled("folded a", a, ra, sa, VC, 0.0, 2e-6);
    check_scaled("folded b", b, rb, sb, VC, 0.0, 2e-6);
}

static void export_folded_matches_double_formula(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(VC, CLBN_BN_FLAGS_DEFAULT, 0.01f);
    check_export(bn, 1, 1, 4);
    clbn_bn_release(bn);
}

/* With scaling and centering off, gamma = 1 and beta = 0 whatever the vectors hold. */
static void export_folded_without_scale_and_shift(void **state) {
    (void)state;
    clbn_bn *bn = make_bn(VC, CLBN_TRACK_RUNNING_STATS, 0.01f);
    check_export(bn, 0, 0, 5);
    clbn_bn_release(bn);
}

/* ---------------------------------------------------------------------------------------- */
/* cl_mem updates seen by the next forward                                                  */
/* ---------------------------------------------------------------------------------------- */

/* y of an inference forward against the double formula. Tolerance: 1e-5 absolute + 1e-5
 * relative; the values are O(1..10), so one stale gamma, beta or mean is far outside it. */
static void check_infer(clbn_bn *bn, const clbn_shape *s, cl_mem x, const float *xh, cl_mem y,
                        float eps, const char *what) {
    const size_t c = (size_t)s->c, n = tu_shape_elems(s);
    float g[16], be[16], rm[16], rv[16];
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_GAMMA, g, c));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_BETA, be, c));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm, c));
    TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv, c));
    TU_OK(clbn_bn_forward_infer(bn, s, x, 0, y, 0, NULL, 0, NULL, NULL));
    float *got = malloc(n * sizeof *got);
    double *ref = malloc(n * sizeof *ref);
    assert_non_null(got);
    assert_non_null(ref);
    tu_read(F.ctx, y, 0, got, n);
    const size_t hw = s->layout == CLBN_LAYOUT_NC ? 1 : (size_t)(s->h * s->w);
    for (size_t i = 0; i < n; i++) {
        size_t ch = s->layout == CLBN_LAYOUT_NHWC ? i % c : (i / hw) % c;
        ref[i] =
            (double)g[ch] * ((double)xh[i] - (double)rm[ch]) / sqrt((double)rv[ch] + (double)eps) +
            (double)be[ch];
    }
    tu_check_close(what, got, ref, n, 1e-5, 1e-5);
    free(got);
    free(ref);
}

static void cl_mem_updates_seen_by_next_forward(void **state) {
    (void)state;
    const float eps = 1e-3f;
    const unsigned c = 5;
    clbn_bn *bn = make_bn(c, CLBN_BN_FLAGS_DEFAULT, eps);
    const clbn_layout layouts[] = {CLBN_LAYOUT_NCHW, CLBN_LAYOUT_NHWC};
    for (size_t l = 0; l < 2; l++) {
        clbn_shape s = {layouts[l], 2, c, 3, 4};
        const size_t n = tu_shape_elems(&s);
        float xh[120];
        ref_rng r;
        ref_rng_seed(&r, 6 + l);
        tu_fill_normal(&r, xh, n, 2.0, 1.5);
        cl_mem x = tu_buffer_from(F.ctx, xh, n), y = tu_buffer(F.ctx, n);
        float rm[5] = {2.0f, 1.5f, -0.5f, 2.5f, 3.0f}, rv[5] = {1.0f, 2.25f, 0.5f, 4.0f, 0.1f};
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, rm, c));
        TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_VAR, rv, c));
        /* A forward first, so anything the library caches from it would be stale below. */
        check_infer(bn, &s, x, xh, y, eps, "y before the update");

        float g[5] = {0.5f, -2.0f, 3.0f, 1.25f, -0.75f}, be[5] = {1.0f, -3.0f, 0.25f, 7.0f, -1.5f};
        float nm[5] = {1.0f, 2.0f, -1.0f, 0.0f, 2.5f};
        for (unsigned i = 0; i < c; i++) {
            g[i] += (float)l;
            be[i] -= (float)l;
        }
        cl_mem mg, mb, mm;
        TU_OK(clbn_bn_get_buffer(bn, CLBN_VECTOR_GAMMA, &mg));
        TU_OK(clbn_bn_get_buffer(bn, CLBN_VECTOR_BETA, &mb));
        TU_OK(clbn_bn_get_buffer(bn, CLBN_VECTOR_RUNNING_MEAN, &mm));
        assert_int_equal(
            clEnqueueWriteBuffer(F.queue, mg, CL_TRUE, 0, c * sizeof(float), g, 0, NULL, NULL),
            CL_SUCCESS);
        assert_int_equal(
            clEnqueueWriteBuffer(F.queue, mb, CL_TRUE, 0, c * sizeof(float), be, 0, NULL, NULL),
            CL_SUCCESS);
        assert_int_equal(
            clEnqueueWriteBuffer(F.queue, mm, CL_TRUE, 0, c * sizeof(float), nm, 0, NULL, NULL),
            CL_SUCCESS);
        /* read_vector sees them ... */
        float back[5];
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_GAMMA, back, c));
        expect_bits("gamma read back after a cl_mem write", g, back, c);
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_BETA, back, c));
        expect_bits("beta read back after a cl_mem write", be, back, c);
        TU_OK(clbn_bn_read_vector(bn, CLBN_VECTOR_RUNNING_MEAN, back, c));
        expect_bits("running mean read back after a cl_mem write", nm, back, c);
        /* ... and so does the next forward (check_infer computes the reference from them). */
        check_infer(bn, &s, x, xh, y, eps, "y after the cl_mem update");
        double ref0 =
            (double)g[0] * ((double)xh[0] - (double)nm[0]) / sqrt((double)rv[0] + (double)eps) +
            (double)be[0];
        float y0;
        tu_read(F.ctx, y, 0, &y0, 1);
        tu_check_close("y[0] with the new gamma, beta, mean", &y0, &ref0, 1, 1e-5, 1e-5);

        /* A tracked training forward moves the running statistics to the other buffer: the
         * cl_mem must be fetched again and then holds what read_vector reports. */
        TU_OK(clbn_bn_forward_train(bn, &s, x, 0, y, 0, NULL, NULL, 0, NULL, NULL));
        const clbn_vector run[] = {CLBN_VECTOR_RUNNING_MEAN, CLBN_VECTOR_RUNNING_VAR};
        for (int k = 0; k < 2; k++) {
            cl_mem m;
            float via_mem[5], via_read[5];
            TU_OK(clbn_bn_get_buffer(bn, run[k], &m));
            assert_int_equal(
                clEnqueueReadBuffer(F.queue, m, CL_TRUE, 0, sizeof via_mem, via_mem, 0, NULL, NULL),
                CL_SUCCESS);
            TU_OK(clbn_bn_read_vector(bn, run[k], via_read, c));
            expect_bits("running statistics via the cl_mem after a training forward", via_read,
                        via_mem, c);
        }
        /* gamma written through the (unchanged) gamma cl_mem still reaches the next forward. */
        TU_OK(clbn_bn_get_buffer(bn, CLBN_VECTOR_GAMMA, &mg));
        for (unsigned i = 0; i < c; i++)
            g[i] = -g[i] * 0.5f;
        assert_int_equal(
            clEnqueueWriteBuffer(F.queue, mg, CL_TRUE, 0, c * sizeof(float), g, 0, NULL, NULL),
            CL_SUCCESS);
        check_infer(bn, &s, x, xh, y, eps, "y after a second gamma update");
        clReleaseMemObject(x);
        clReleaseMemObject(y);
    }
    clbn_bn_release(bn);
}

/* ---------------------------------------------------------------------------------------- */
/* Save and load                                                                            */
/* ---------------------------------------------------------------------------------------- */

static void expect_same_object(const char *what, clbn_bn *a, clbn_bn *b, size_t c) {
    clbn_bn_options oa, ob;
    TU_OK(clbn_bn_get_options(a, &oa));
    TU_OK(clbn_bn_get_options(b, &ob));
    if (oa.channels != ob.channels || memcmp(&oa.eps, &ob.eps, sizeof oa.eps) != 0 ||
        memcmp(&oa.factor, &ob.factor, sizeof oa.factor) != 0 || oa.flags != ob.flags ||
        oa.activation != ob.activation)
        fail_msg("%s: options differ: C %llu/%llu eps %.9g/%.9g factor %.9g/%.9g flags %#x/%#x "
                 "activation %d/%d",
                 what, (unsigned long long)oa.channels, (unsigned long long)ob.channels,
                 (double)oa.eps, (double)ob.eps, (double)oa.factor, (double)ob.factor, oa.flags,
                 ob.flags, (int)oa.activation, (int)ob.activation);
    float *va = malloc(c * sizeof *va), *vb = malloc(c * sizeof *vb);
    assert_non_null(va);
    assert_non_null(vb);
    for (int v = 0; v < CLBN_VECTOR_COUNT; v++) {
        TU_OK(clbn_bn_read_vector(a, (clbn_vector)v, va, c));
        TU_OK(clbn_bn_read_vector(b, (clbn_vector)v, vb, c));
        char label[128];
        snprintf(label, sizeof label, "%s: %s", what, clbn_vector_name((clbn_vector)v));
        expect_bits(label, va, vb, c);
    }
    free(va);
    free(vb);
    uint64_t ta, tb;
    TU_OK(clbn_bn_get_batches_tracked(a, &ta));
    TU_OK(clbn_bn_get_batches_tracked(b, &tb));
    if (ta != tb)
        fail_msg("%s: t %llu != %llu", what, (unsigned long long)ta, (unsigned long long)tb);
}

/* A state object with every option away from its default and awkward values in every vector. */
static clbn_bn *make_distinct_bn(uint64_t c, uint64_t seed) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = c;
    o.eps = 3.0e-4f;
    o.factor = 0.3125f + (float)seed * 1e-3f;
    o.flags = CLBN_USE_SCALE | CLBN_TRACK_RUNNING_STATS | CLBN_CUMULATIVE_AVERAGE |
              CLBN_ACCUMULATE_GRADIENTS;
    o.activation = CLBN_ACTIVATION_SIGMOID;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(F.ctx, &o, &bn));
    float vals[CLBN_VECTOR_COUNT][64];
    write_all(bn, vals, (size_t)c, seed);
    TU_OK(clbn_bn_set_batches_tracked(bn, (1ull << 40) + 3 + seed));
    return bn;
}

static void save_then_load_reproduces_everything_bitwise(void **state) {
    (void)state;
    const uint64_t sizes[] = {1, 3, VC, 64};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        clbn_bn *bn = make_distinct_bn(sizes[k], k);
        char path[512];
        path_in_dir(path, sizeof path, "roundtrip.clbn");
        TU_OK(clbn_bn_save(bn, path));
        clbn_bn *back = NULL;
        TU_OK(clbn_bn_load(F.ctx, path, &back));
        assert_non_null(back);
        char what[64];
        snprintf(what, sizeof what, "C = %llu", (unsigned long long)sizes[k]);
        expect_same_object(what, bn, back, (size_t)sizes[k]);
        /* The loaded object is a separate object with its own buffers. */
        cl_mem ga, gb;
        TU_OK(clbn_bn_get_buffer(bn, CLBN_VECTOR_GAMMA, &ga));
        TU_OK(clbn_bn_get_buffer(back, CLBN_VECTOR_GAMMA, &gb));
        assert_true(ga != gb);
        /* Saving the loaded object writes the same bytes (nothing is lost or re-encoded). */
        char path2[512];
        path_in_dir(path2, sizeof path2, "roundtrip2.clbn");
        TU_OK(clbn_bn_save(back, path2));
        size_t s1, s2;
        unsigned char *b1 = read_whole(path, &s1), *b2 = read_whole(path2, &s2);
        if (s1 != s2 || memcmp(b1, b2, s1) != 0)
            fail_msg("%s: save(load(file)) differs from file (%zu vs %zu bytes)", what, s1, s2);
        free(b1);
        free(b2);
        unlink(path);
        unlink(path2);
        clbn_bn_release(back);
        clbn_bn_release(bn);
    }
}

/* A small saved file (C = 3) and its bytes, for the damage tests. */
static unsigned char *small_saved_file(char *path, size_t path_size, size_t *size,
                                       float gamma_out[3]) {
    clbn_bn *bn = make_distinct_bn(3, 9);
    /* A gamma whose bytes are unlikely to occur anywhere else in the file. */
    const float g[3] = {1234.5677f, -8765.4321f, 42.424242f};
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_GAMMA, g, 3));
    memcpy(gamma_out, g, sizeof g);
    path_in_dir(path, path_size, "small.clbn");
    TU_OK(clbn_bn_save(bn, path));
    clbn_bn_release(bn);
    unsigned char *bytes = read_whole(path, size);
    /* The unmodified file loads: the damage below is what gets refused. */
    const clbn_status ok[] = {CLBN_SUCCESS};
    load_expect("intact small file", path, ok, 1);
    return bytes;
}

static void load_refuses_every_truncation(void **state) {
    (void)state;
    char path[512], cut[512];
    size_t size;
    float g[3];
    unsigned char *bytes = small_saved_file(path, sizeof path, &size, g);
    path_in_dir(cut, sizeof cut, "truncated.clbn");
    assert_true(size > 0);
    for (size_t len = 0; len < size; len++) {
        write_whole(cut, bytes, len);
        char what[96];
        snprintf(what, sizeof what, "file truncated to %zu of %zu bytes", len, size);
        if (len == 0) {
            /* An empty file is truncated, and also not recognizably a clbn file. */
            const clbn_status allowed[] = {CLBN_ERROR_FILE_CORRUPT, CLBN_ERROR_FILE_MISMATCH};
            load_expect(what, cut, allowed, 2);
        } else {
            const clbn_status allowed[] = {CLBN_ERROR_FILE_CORRUPT};
            load_expect(what, cut, allowed, 1);
        }
    }
    unlink(cut);
    unlink(path);
    free(bytes);
}

static const unsigned char *find_bytes(const unsigned char *hay, size_t n, const void *needle,
                                       size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* Every byte of the file, changed: the load is refused, and inside the vector data (found by its
 * bytes) the refusal is the checksum's, CLBN_ERROR_FILE_CORRUPT. Elsewhere a damaged magic may
 * say FILE_MISMATCH and a damaged version field FILE_VERSION. */
static void load_refuses_any_changed_byte(void **state) {
    (void)state;
    char path[512], bad[512];
    size_t size;
    float g[3];
    unsigned char *bytes = small_saved_file(path, sizeof path, &size, g);
    path_in_dir(bad, sizeof bad, "flipped.clbn");
    const unsigned char *gamma_at = find_bytes(bytes, size, g, sizeof g);
    if (gamma_at == NULL)
        fail_msg("gamma's little-endian float bytes are not in the %zu-byte file; cannot tell "
                 "the data from the header",
                 size);
    size_t g0 = (size_t)(gamma_at - bytes), g1 = g0 + sizeof g;
    unsigned char *copy = malloc(size);
    assert_non_null(copy);
    const unsigned char masks[] = {0xFF, 0x01, 0x80};
    for (size_t mi = 0; mi < sizeof masks; mi++) {
        for (size_t p = 0; p < size; p++) {
            memcpy(copy, bytes, size);
            copy[p] ^= masks[mi];
            write_whole(bad, copy, size);
            char what[96];
            snprintf(what, sizeof what, "byte %zu of %zu xor 0x%02x", p, size, masks[mi]);
            if (p >= g0 && p < g1) {
                const clbn_status allowed[] = {CLBN_ERROR_FILE_CORRUPT};
                load_expect(what, bad, allowed, 1);
            } else {
                const clbn_status allowed[] = {CLBN_ERROR_FILE_CORRUPT, CLBN_ERROR_FILE_MISMATCH,
                                               CLBN_ERROR_FILE_VERSION};
                load_expect(what, bad, allowed, 3);
            }
        }
    }
    unlink(bad);
    unlink(path);
    free(copy);
    free(bytes);
}

/* A newer format version in the header: the version field is found without knowing the layout by
 * raising each header byte by one; some byte must then read as a newer version (a newer writer
 * may checksum differently, so the version has to be checked before the checksum). Lowering that
 * byte back to the original loads again. */
static void load_refuses_newer_version(void **state) {
    (void)state;
    char path[512], bad[512];
    size_t size;
    float g[3];
    unsigned char *bytes = small_saved_file(path, sizeof path, &size, g);
    path_in_dir(bad, sizeof bad, "newer.clbn");
    const unsigned char *gamma_at = find_bytes(bytes, size, g, sizeof g);
    size_t header_end = gamma_at ? (size_t)(gamma_at - bytes) : (size < 64 ? size : 64);
    unsigned char *copy = malloc(size);
    assert_non_null(copy);
    int found = 0;
    for (size_t p = 0; p < header_end; p++) {
        if (bytes[p] == 0xFF)
            continue;
        memcpy(copy, bytes, size);
        copy[p] = (unsigned char)(copy[p] + 1);
        write_whole(bad, copy, size);
        clbn_bn *bn = NULL;
        clbn_status st = clbn_bn_load(F.ctx, bad, &bn);
        if (st == CLBN_SUCCESS) {
            clbn_bn_release(bn);
            fail_msg("header byte %zu raised by one: the file still loads", p);
        }
        if (st == CLBN_ERROR_FILE_VERSION) {
            found = 1;
            if (bn != NULL)
                fail_msg("FILE_VERSION but an object was returned");
        }
    }
    if (!found)
        fail_msg("no header byte (of %zu) raised by one gives CLBN_ERROR_FILE_VERSION: a newer "
                 "version is not recognized as such",
                 header_end);
    unlink(bad);
    unlink(path);
    free(copy);
    free(bytes);
}

/* A file whose checksum is right but whose options are not (eps = -1, written by hand): refused
 * as corrupt, with a message that names the file and the option. The message is built from the
 * option check's own message, once written into the same per-thread buffer it was read from. */
static void load_refuses_invalid_options_with_reason(void **state) {
    (void)state;
    char path[512], bad[512];
    size_t size;
    float g[3];
    unsigned char *bytes = small_saved_file(path, sizeof path, &size, g);
    path_in_dir(bad, sizeof bad, "bad-eps.clbn");
    const float eps = 3.0e-4f, minus_one = -1.0f; /* make_distinct_bn's eps */
    const unsigned char *gamma_at = find_bytes(bytes, size, g, sizeof g);
    assert_non_null(gamma_at);
    unsigned char *at = (unsigned char *)find_bytes(bytes, (size_t)(gamma_at - bytes), &eps, 4);
    if (at == NULL)
        fail_msg("eps's float bytes are not in the header");
    memcpy(at, &minus_one, 4);
    /* The file's checksum: FNV-1a 64 of everything before it, little-endian, last 8 bytes. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i + 8 < size; i++) {
        h ^= bytes[i];
        h *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++)
        bytes[size - 8 + i] = (unsigned char)(h >> (8 * i));
    write_whole(bad, bytes, size);
    clbn_bn *bn = NULL;
    assert_int_equal(clbn_bn_load(F.ctx, bad, &bn), CLBN_ERROR_FILE_CORRUPT);
    assert_null(bn);
    const char *msg = clbn_last_error_message();
    if (!strstr(msg, bad) || !strstr(msg, "invalid options") || !strstr(msg, "options.eps = -1"))
        fail_msg("the message should name %s and options.eps = -1: \"%s\"", bad, msg);
    unlink(bad);
    unlink(path);
    free(bytes);
}

static void load_refuses_foreign_files(void **state) {
    (void)state;
    char path[512], bad[512];
    size_t size;
    float g[3];
    unsigned char *bytes = small_saved_file(path, sizeof path, &size, g);
    path_in_dir(bad, sizeof bad, "foreign.bin");
    unsigned char *junk = malloc(size + 64);
    assert_non_null(junk);
    const clbn_status mismatch[] = {CLBN_ERROR_FILE_MISMATCH};

    const char text[] = "This is a plain text file, not a clbn state file at all.\n"
                        "It is long enough to fill any header the loader might read first.\n";
    write_whole(bad, text, sizeof text - 1);
    load_expect("a text file", bad, mismatch, 1);

    memset(junk, 0, size);
    write_whole(bad, junk, size);
    load_expect("zeros, as long as a real file", bad, mismatch, 1);

    ref_rng r;
    ref_rng_seed(&r, 77);
    for (size_t i = 0; i < size + 64; i++)
        junk[i] = (unsigned char)(ref_uniform(&r) * 256.0);
    write_whole(bad, junk, size + 64);
    load_expect("random bytes", bad, mismatch, 1);

    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memset(junk, 0, size);
    memcpy(junk, png, sizeof png);
    write_whole(bad, junk, size);
    load_expect("a PNG signature", bad, mismatch, 1);

    unlink(bad);
    unlink(path);
    free(junk);
    free(bytes);
}

static void load_missing_or_unreadable_is_io(void **state) {
    (void)state;
    char missing[512];
    path_in_dir(missing, sizeof missing, "does-not-exist.clbn");
    const clbn_status io[] = {CLBN_ERROR_IO};
    load_expect("a missing file", missing, io, 1);
    load_expect("a folder", F.dir, io, 1);
    load_expect("a missing folder", "/nonexistent-clbn-folder/x.clbn", io, 1);
}

/* Saves bn over an existing file at `path` while saving cannot succeed, and checks the status,
 * that the old file is byte for byte as it was, and (when `dir` is given) that no temporary
 * file is left behind. */
static void expect_failed_save_keeps(clbn_bn *bn, const char *what, const char *path,
                                     const char *dir) {
    size_t n0 = 0, n1 = 0;
    unsigned char *before = read_whole(path, &n0);
    char list0[4096] = "", list1[4096] = "";
    if (dir)
        list_dir(dir, list0, sizeof list0);
    clbn_status st = clbn_bn_save(bn, path);
    if (st != CLBN_ERROR_IO)
        fail_msg("%s: save returned %s, expected CLBN_ERROR_IO (message \"%s\")", what,
                 clbn_status_name(st), clbn_last_error_message());
    unsigned char *after = read_whole(path, &n1);
    if (n0 != n1 || memcmp(before, after, n0) != 0)
        fail_msg("%s: the existing file changed (%zu -> %zu bytes)", what, n0, n1);
    if (dir) {
        list_dir(dir, list1, sizeof list1);
        if (strcmp(list0, list1) != 0)
            fail_msg("%s: the folder changed: [%s] -> [%s]", what, list0, list1);
    }
    free(before);
    free(after);
}

static void save_failure_leaves_existing_file_unchanged(void **state) {
    (void)state;
    clbn_bn *old_bn = make_distinct_bn(VC, 20), *new_bn = make_distinct_bn(VC, 21);
    char sub[512], path[600];
    path_in_dir(sub, sizeof sub, "unwritable");
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/state.clbn", sub);
    TU_OK(clbn_bn_save(old_bn, path));

    /* 1. Writing fails midway (a file size limit of a few bytes, EFBIG): the temporary file is
     * not renamed over the old one, and it is removed. Works as root too. */
    {
        struct rlimit saved, low;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
        low = saved;
        low.rlim_cur = 16;
        void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
        size_t n0;
        unsigned char *before = read_whole(path, &n0);
        char list0[4096], list1[4096];
        list_dir(sub, list0, sizeof list0);
        clbn_status st = clbn_bn_save(new_bn, path);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", clbn_last_error_message());
        setrlimit(RLIMIT_FSIZE, &saved);
        signal(SIGXFSZ, old_handler);
        if (st != CLBN_ERROR_IO)
            fail_msg("save with writes failing (EFBIG): %s, expected CLBN_ERROR_IO (\"%s\")",
                     clbn_status_name(st), msg);
        size_t n1;
        unsigned char *after = read_whole(path, &n1);
        if (n0 != n1 || memcmp(before, after, n0) != 0)
            fail_msg("save with writes failing changed the existing file (%zu -> %zu bytes)", n0,
                     n1);
        list_dir(sub, list1, sizeof list1);
        if (strcmp(list0, list1) != 0)
            fail_msg("save with writes failing left files behind: [%s] -> [%s]", list0, list1);
        free(before);
        free(after);
    }

    /* 2. A read-only folder (permissions do not stop root, so only as a normal user). */
    if (geteuid() != 0) {
        assert_int_equal(chmod(sub, 0500), 0);
        expect_failed_save_keeps(new_bn, "read-only folder", path, sub);
        assert_int_equal(chmod(sub, 0700), 0);
    } else {
        print_message("running as root: read-only folder case replaced by /proc below\n");
    }

    /* 3. An existing file in a folder where no file can be created, for root as well. */
    if (access("/proc/version", R_OK) == 0)
        expect_failed_save_keeps(new_bn, "/proc/version", "/proc/version", NULL);

    /* 4. A path whose folder is a regular file. */
    {
        char through[700];
        snprintf(through, sizeof through, "%s/sub.clbn", path);
        clbn_status st = clbn_bn_save(new_bn, through);
        if (st != CLBN_ERROR_IO)
            fail_msg("save under a regular file: %s, expected CLBN_ERROR_IO", clbn_status_name(st));
    }

    /* The old file still loads as the old object. */
    clbn_bn *back = NULL;
    TU_OK(clbn_bn_load(F.ctx, path, &back));
    expect_same_object("old file after failed saves", old_bn, back, VC);
    clbn_bn_release(back);
    unlink(path);
    rmdir(sub);
    clbn_bn_release(old_bn);
    clbn_bn_release(new_bn);
}

/* Saving over an existing file replaces it by rename: a reader holding the old file open still
 * reads the old bytes in full, the path gives the new object, and no temporary file is left. */
static void save_over_existing_replaces_atomically(void **state) {
    (void)state;
    char sub[512], path[600];
    path_in_dir(sub, sizeof sub, "replace");
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/state.clbn", sub);
    clbn_bn *a = make_distinct_bn(VC, 30), *b = make_distinct_bn(VC, 31);
    TU_OK(clbn_bn_save(a, path));
    size_t na;
    unsigned char *bytes_a = read_whole(path, &na);
    struct stat st_a, st_b;
    assert_int_equal(stat(path, &st_a), 0);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);

    TU_OK(clbn_bn_save(b, path));

    unsigned char *through_old = malloc(na + 1);
    assert_non_null(through_old);
    ssize_t got = pread(fd, through_old, na + 1, 0);
    close(fd);
    if (got != (ssize_t)na || memcmp(through_old, bytes_a, na) != 0)
        fail_msg("the old file was rewritten in place: a reader holding it open reads %zd bytes "
                 "(had %zu) %s",
                 got, na, got == (ssize_t)na ? "that differ" : "");
    assert_int_equal(stat(path, &st_b), 0);
    assert_true(st_a.st_ino != st_b.st_ino);

    char list[4096];
    list_dir(sub, list, sizeof list);
    assert_string_equal(list, "state.clbn");

    clbn_bn *back = NULL;
    TU_OK(clbn_bn_load(F.ctx, path, &back));
    expect_same_object("replaced file", b, back, VC);
    clbn_bn_release(back);

    /* Saving the same object again over itself also leaves exactly one file. */
    TU_OK(clbn_bn_save(b, path));
    list_dir(sub, list, sizeof list);
    assert_string_equal(list, "state.clbn");

    unlink(path);
    rmdir(sub);
    free(bytes_a);
    free(through_old);
    clbn_bn_release(a);
    clbn_bn_release(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_gives_documented_initial_values),
        cmocka_unit_test(vectors_round_trip_all_eight),
        cmocka_unit_test(get_buffer_holds_the_vector),
        cmocka_unit_test(batches_tracked_set_get),
        cmocka_unit_test(reset_running_stats_touches_only_running_stats),
        cmocka_unit_test(export_folded_matches_double_formula),
        cmocka_unit_test(export_folded_without_scale_and_shift),
        cmocka_unit_test(cl_mem_updates_seen_by_next_forward),
        cmocka_unit_test(save_then_load_reproduces_everything_bitwise),
        cmocka_unit_test(load_refuses_every_truncation),
        cmocka_unit_test(load_refuses_any_changed_byte),
        cmocka_unit_test(load_refuses_newer_version),
        cmocka_unit_test(load_refuses_foreign_files),
        cmocka_unit_test(load_refuses_invalid_options_with_reason),
        cmocka_unit_test(load_missing_or_unreadable_is_io),
        cmocka_unit_test(save_failure_leaves_existing_file_unchanged),
        cmocka_unit_test(save_over_existing_replaces_atomically),
    };
    return cmocka_run_group_tests_name("state", tests, group_setup, group_teardown);
}
