/* The IDX loader of `clbn train` (tools/idx.c): small synthetic sets plain and gzipped, the
 * directory loader's .gz fallback and 28 x 28 rule, refusal of every truncation, of damaged gzip
 * streams and of each malformed or mismatched pair (named "refuses/<what>/<plain|gz>"), and the
 * real Fashion-MNIST files. Needs no OpenCL device. */
#define _POSIX_C_SOURCE 200809L
#include "idx.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#define BUF_CAP 8192
#define ERR_CAP 1024
#define GZ_IMAGES 1
#define GZ_LABELS 2
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* ---------------------------------------------------------------------------------------- */
/* Fixture: a fresh temporary folder per test                                               */
/* ---------------------------------------------------------------------------------------- */

static char dir_[256];

static int setup(void **state) {
    (void)state;
    snprintf(dir_, sizeof dir_, "/tmp/clbn-test-idx-XXXXXX");
    assert_non_null(mkdtemp(dir_));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    DIR *d = opendir(dir_);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)) != NULL) {
            snprintf(p, sizeof p, "%s/%s", dir_, e->d_name);
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && unlink(p) != 0)
                rmdir(p); /* the folder standing in for a file */
        }
        closedir(d);
    }
    rmdir(dir_);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Synthetic files                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* What a synthetic pair of files announces and holds. */
typedef struct spec {
    uint32_t im_magic, lb_magic;
    uint32_t count, rows, cols, labels; /* header values: images file, then labels file */
    size_t im_extra, lb_extra;          /* bytes written past the announced bodies */
    int bad_label;                      /* >= 0: the value of label 1 */
    int header_only;                    /* images file: the header alone, however big it says */
} spec;

static const spec VALID = {0x803, 0x801, 3, 2, 3, 3, 0, 0, -1, 0};

/* Patterns that tell every position apart within a small set. */
static unsigned char pixel(size_t i) {
    return (unsigned char)(i * 37 + 11);
}

static unsigned char label(size_t i) {
    return (unsigned char)((i * 3 + 1) % 10);
}

static void at(char *out, const char *name) {
    snprintf(out, 512, "%s/%s", dir_, name);
}

static void put_raw(const char *name, const unsigned char *b, size_t n) {
    char p[512];
    at(p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static size_t get_raw(const char *name, unsigned char *b, size_t cap) {
    char p[512];
    at(p, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    size_t n = fread(b, 1, cap, f);
    assert_true(n < cap);
    fclose(f);
    return n;
}

/* Plain as name, or gzipped as name.gz (what the loader falls back to). */
static void put(const char *name, const unsigned char *b, size_t n, int gz) {
    char p[512];
    if (!gz) {
        put_raw(name, b, n);
        return;
    }
    at(p, name);
    strcat(p, ".gz");
    gzFile f = gzopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

/* Header, then body + extra bytes of fill; returns the length. */
static size_t encode(unsigned char *out, uint32_t magic, const uint32_t *dims, int nd, size_t body,
                     size_t extra, unsigned char (*fill)(size_t)) {
    const uint32_t words[4] = {magic, dims[0], nd > 1 ? dims[1] : 0, nd > 1 ? dims[2] : 0};
    size_t n = 4 + 4 * (size_t)nd;
    for (size_t w = 0; w * 4 < n; w++)
        for (int b = 0; b < 4; b++)
            out[4 * w + (size_t)b] = (unsigned char)(words[w] >> (24 - 8 * b));
    assert_true(n + body + extra <= BUF_CAP);
    for (size_t i = 0; i < body + extra; i++)
        out[n + i] = fill(i);
    return n + body + extra;
}

static void write_set(const char *images, const char *labels, const spec *s, int gz) {
    unsigned char buf[BUF_CAP];
    const uint32_t dims[3] = {s->count, s->rows, s->cols};
    size_t body = s->header_only ? 0 : (size_t)s->count * s->rows * s->cols;
    put(images, buf, encode(buf, s->im_magic, dims, 3, body, s->im_extra, pixel), gz & GZ_IMAGES);
    size_t n = encode(buf, s->lb_magic, &s->labels, 1, s->labels, s->lb_extra, label);
    if (s->bad_label >= 0)
        buf[8 + 1] = (unsigned char)s->bad_label;
    put(labels, buf, n, gz & GZ_LABELS);
}

/* ---------------------------------------------------------------------------------------- */
/* Checks                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* The set starts as garbage, so a zeroed set after a refusal is the loader's doing. */
static int load(const char *images, const char *labels, idx_set *set, char *err) {
    char im[512], lb[512];
    at(im, images);
    at(lb, labels);
    memset(set, 0xa5, sizeof *set);
    err[0] = '\0';
    return idx_load(im, lb, 10, set, err, ERR_CAP);
}

static void expect_zeroed(const idx_set *s) {
    assert_int_equal(s->count, 0);
    assert_int_equal(s->rows, 0);
    assert_int_equal(s->cols, 0);
    assert_null(s->pixels);
    assert_null(s->labels);
}

/* The status, a zeroed set, and a message holding the file's name and what is wrong. */
static void expect_refused(int rc, int want, const idx_set *set, const char *err, const char *file,
                           const char *says) {
    char p[512];
    at(p, file);
    if (rc != want || !strstr(err, p) || (says && !strstr(err, says)))
        fail_msg("status %d (want %d), message \"%s\" (want \"%s\" and \"%s\")", rc, want, err, p,
                 says ? says : "");
    expect_zeroed(set);
}

static void expect_loaded(const idx_set *set, const spec *s) {
    assert_int_equal(set->count, s->count);
    assert_int_equal(set->rows, s->rows);
    assert_int_equal(set->cols, s->cols);
    for (size_t i = 0; i < (size_t)s->count * s->rows * s->cols; i++)
        assert_int_equal(set->pixels[i], pixel(i));
    for (size_t i = 0; i < s->count; i++)
        assert_int_equal(set->labels[i], label(i));
}

/* ---------------------------------------------------------------------------------------- */
/* Table-driven cases                                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct test_case {
    char name[96];
    const void *row; /* the table row */
    int gz;          /* GZ_IMAGES | GZ_LABELS: which files are gzipped */
} test_case;

static void valid_set_loads(void **state) {
    const test_case *c = *state;
    idx_set set;
    char err[ERR_CAP];
    write_set("im", "lb", &VALID, c->gz);
    int rc = load("im", "lb", &set, err);
    if (rc)
        fail_msg("status %d: %s", rc, err);
    expect_loaded(&set, &VALID);
    idx_free(&set);
    expect_zeroed(&set);
}

typedef struct bad_case {
    const char *name;
    spec s;
    int in_labels;    /* the message names the labels file, not the images file */
    const char *says; /* part of the message */
} bad_case;

static const bad_case bad_cases[] = {
    /* im_magic, lb_magic, count, rows, cols, labels, im_extra, lb_extra, bad_label, header_only */
    {"trailing_byte_after_images", {0x803, 0x801, 3, 2, 3, 3, 1, 0, -1, 0}, 0, "trailing data"},
    {"trailing_byte_after_labels", {0x803, 0x801, 3, 2, 3, 3, 0, 1, -1, 0}, 1, "trailing data"},
    {"labels_magic_in_images_file", {0x801, 0x801, 3, 2, 3, 3, 0, 0, -1, 0}, 0, "0x00000801"},
    {"images_magic_in_labels_file", {0x803, 0x803, 3, 2, 3, 3, 0, 0, -1, 0}, 1, "0x00000803"},
    {"zero_images", {0x803, 0x801, 0, 2, 3, 3, 0, 0, -1, 0}, 0, "dimension 0 is 0"},
    {"zero_rows", {0x803, 0x801, 3, 0, 3, 3, 0, 0, -1, 0}, 0, "dimension 1 is 0"},
    {"zero_cols", {0x803, 0x801, 3, 2, 0, 3, 0, 0, -1, 0}, 0, "dimension 2 is 0"},
    {"zero_labels", {0x803, 0x801, 3, 2, 3, 0, 0, 0, -1, 0}, 1, "dimension 0 is 0"},
    {"fewer_labels_than_images",
     {0x803, 0x801, 3, 2, 3, 2, 0, 0, -1, 0},
     1,
     "2 labels for 3 images"},
    {"more_labels_than_images",
     {0x803, 0x801, 3, 2, 3, 4, 0, 0, -1, 0},
     1,
     "4 labels for 3 images"},
    {"label_10", {0x803, 0x801, 3, 2, 3, 3, 0, 0, 10, 0}, 1, "label 10 of item 1"},
    {"label_255", {0x803, 0x801, 3, 2, 3, 3, 0, 0, 255, 0}, 1, "label 255 of item 1"},
    {"images_over_2_GiB", {0x803, 0x801, 3, 32768, 32768, 3, 0, 0, -1, 1}, 0, "2 GiB"},
    {"image_count_over_2_GiB", {0x803, 0x801, 0x80000001u, 1, 1, 3, 0, 0, -1, 1}, 0, "2 GiB"},
    {"dimensions_overflowing_size_t",
     {0x803, 0x801, 0xffffffffu, 0xffffffffu, 0xffffffffu, 3, 0, 0, -1, 1},
     0,
     "2 GiB"},
};
#define N_BAD (sizeof bad_cases / sizeof bad_cases[0])

static void bad_set_refused(void **state) {
    const test_case *c = *state;
    const bad_case *b = c->row;
    idx_set set;
    char err[ERR_CAP];
    write_set("im", "lb", &b->s, c->gz);
    int rc = load("im", "lb", &set, err);
    expect_refused(rc, IDX_BAD_INPUT, &set, err, b->in_labels ? "lb" : "im", b->says);
}

/* Every prefix of one file of a valid set (for gz, of the compressed bytes) is refused. */
static void every_truncation_refused(void **state) {
    const test_case *c = *state;
    const int labels = *(const int *)c->row, gz = c->gz & (labels ? GZ_LABELS : GZ_IMAGES);
    char name[16];
    unsigned char full[BUF_CAP];
    idx_set set;
    char err[ERR_CAP];
    snprintf(name, sizeof name, "%s%s", labels ? "lb" : "im", gz ? ".gz" : "");
    write_set("im", "lb", &VALID, c->gz);
    size_t n = get_raw(name, full, sizeof full);
    for (size_t cut = 0; cut < n; cut++) {
        put_raw(name, full, cut);
        int rc = load("im", "lb", &set, err);
        if (rc != IDX_BAD_INPUT)
            fail_msg("%s cut to %zu of %zu bytes: status %d (%s)", name, cut, n, rc, err);
        expect_refused(rc, IDX_BAD_INPUT, &set, err, name, gz ? NULL : "truncated");
    }
    put_raw(name, full, n);
    assert_int_equal(load("im", "lb", &set, err), IDX_OK);
    idx_free(&set);
}

typedef struct dir_case {
    const char *name;
    const spec *train, *test; /* NULL: not written */
    const char *says;         /* NULL: loads */
} dir_case;

static const spec TRAIN28 = {0x803, 0x801, 3, 28, 28, 3, 0, 0, -1, 0};
static const spec TEST28 = {0x803, 0x801, 2, 28, 28, 2, 0, 0, -1, 0};
static const spec TRAIN28x27 = {0x803, 0x801, 3, 28, 27, 3, 0, 0, -1, 0};
static const spec TEST27x28 = {0x803, 0x801, 2, 27, 28, 2, 0, 0, -1, 0};

static const dir_case dir_cases[] = {
    {"mix_of_gz_and_plain_loads", &TRAIN28, &TEST28, NULL},
    {"train_not_28x28_refused", &TRAIN28x27, &TEST28, "28 x 27 images: expected 28 x 28"},
    {"test_not_28x28_refused", &TRAIN28, &TEST27x28, "27 x 28 images: expected 28 x 28"},
    {"missing_test_set_refused", &TRAIN28, NULL, "t10k-images-idx3-ubyte"},
};
#define N_DIR (sizeof dir_cases / sizeof dir_cases[0])

/* Train: images gzipped, labels plain; test: the other way round. */
static void load_dir_case(void **state) {
    const dir_case *d = ((const test_case *)*state)->row;
    idx_set train, test;
    char err[ERR_CAP] = "";
    if (d->train)
        write_set("train-images-idx3-ubyte", "train-labels-idx1-ubyte", d->train, GZ_IMAGES);
    if (d->test)
        write_set("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", d->test, GZ_LABELS);
    memset(&train, 0xa5, sizeof train);
    int rc = idx_load_dir(dir_, &train, &test, err, sizeof err);
    if (d->says) {
        if (rc != IDX_BAD_INPUT || !strstr(err, d->says))
            fail_msg("status %d, message \"%s\" (want \"%s\")", rc, err, d->says);
        expect_zeroed(&train);
        expect_zeroed(&test);
        return;
    }
    if (rc)
        fail_msg("status %d: %s", rc, err);
    expect_loaded(&train, d->train);
    expect_loaded(&test, d->test);
    idx_free(&train);
    idx_free(&test);
}

/* ---------------------------------------------------------------------------------------- */
/* Single cases                                                                             */
/* ---------------------------------------------------------------------------------------- */

static void missing_file_named(void **state) {
    (void)state;
    idx_set set;
    char err[ERR_CAP];
    write_set("im", "lb", &VALID, 0);
    expect_refused(load("nosuch", "lb", &set, err), IDX_BAD_INPUT, &set, err, "nosuch",
                   "no such file");
    expect_refused(load("im", "nosuch", &set, err), IDX_BAD_INPUT, &set, err, "nosuch",
                   "no such file");
}

/* A file given as is takes precedence over its .gz (here unreadable garbage). */
static void plain_file_wins_over_gz(void **state) {
    (void)state;
    idx_set set;
    char err[ERR_CAP];
    write_set("im", "lb", &VALID, 0);
    put_raw("im.gz", (const unsigned char *)"garbage", 7);
    assert_int_equal(load("im", "lb", &set, err), IDX_OK);
    expect_loaded(&set, &VALID);
    idx_free(&set);
}

static void corrupt_gzip_body_refused(void **state) {
    (void)state;
    unsigned char b[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memset(b + 10, 0xff, sizeof b - 10); /* block type 3: invalid */
    idx_set set;
    char err[ERR_CAP];
    write_set("other", "lb", &VALID, 0);
    put_raw("im.gz", b, sizeof b);
    expect_refused(load("im", "lb", &set, err), IDX_BAD_INPUT, &set, err, "im.gz", "corrupt gzip");
}

/* Any byte changed after the gzip header (deflate data, CRC, length) is caught; the header's
 * time, flags and OS bytes are not checked by zlib, so they are left alone. */
static void every_gzip_byte_flip_refused(void **state) {
    (void)state;
    static const char *const names[] = {"im.gz", "lb.gz"};
    unsigned char full[BUF_CAP];
    idx_set set;
    char err[ERR_CAP];
    for (int f = 0; f < 2; f++) {
        write_set("im", "lb", &VALID, GZ_IMAGES | GZ_LABELS);
        size_t n = get_raw(names[f], full, sizeof full);
        for (size_t i = 10; i < n; i++) {
            full[i] ^= 0x55;
            put_raw(names[f], full, n);
            full[i] ^= 0x55;
            int rc = load("im", "lb", &set, err);
            if (rc != IDX_BAD_INPUT)
                fail_msg("%s byte %zu of %zu changed: status %d (%s)", names[f], i, n, rc, err);
            expect_refused(rc, IDX_BAD_INPUT, &set, err, names[f], NULL);
        }
    }
}

/* A path that exists but cannot be read is the system's failure, not a malformed file. */
static void directory_is_io_error(void **state) {
    (void)state;
    char p[512];
    idx_set set;
    char err[ERR_CAP];
    write_set("other", "lb", &VALID, 0);
    at(p, "im");
    assert_int_equal(mkdir(p, 0700), 0);
    expect_refused(load("im", "lb", &set, err), IDX_IO_ERROR, &set, err, "im", strerror(EISDIR));
}

static void fashion_mnist_loads_balanced(void **state) {
    (void)state;
    static const unsigned char train_first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    struct stat st;
    if (stat(FASHION_DIR, &st) != 0)
        fail_msg(FASHION_DIR " is missing: install the Debian package dataset-fashion-mnist "
                             "(tools/setup-debian.sh)");
    idx_set train, test;
    char err[ERR_CAP];
    int rc = idx_load_dir(FASHION_DIR, &train, &test, err, sizeof err);
    if (rc)
        fail_msg("status %d: %s", rc, err);
    assert_int_equal(train.count, 60000);
    assert_int_equal(test.count, 10000);
    assert_int_equal(train.rows * train.cols, 28 * 28);
    assert_int_equal(test.rows * test.cols, 28 * 28);
    const idx_set *sets[2] = {&train, &test};
    size_t hist[2][10] = {{0}}, first_sum = 0;
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < sets[s]->count; i++) {
            assert_in_range(sets[s]->labels[i], 0, 9);
            hist[s][sets[s]->labels[i]]++;
        }
    for (int k = 0; k < 10; k++) {
        assert_int_equal(hist[0][k], 6000);
        assert_int_equal(hist[1][k], 1000);
    }
    /* Known values that an off-by-one header would shift: the first labels, the first image. */
    assert_memory_equal(train.labels, train_first, sizeof train_first);
    for (size_t i = 0; i < 28 * 28; i++)
        first_sum += train.pixels[i];
    assert_int_equal(first_sum, 76247);
    idx_free(&train);
    idx_free(&test);
}

/* ---------------------------------------------------------------------------------------- */

static const int IMAGES = 0, LABELS = 1;

static struct CMUnitTest tests[64];
static test_case cases[64];
static size_t n_tests;

/* Named group[/what][/kind], so a failure says which case broke. */
static void add(CMUnitTestFunction fn, const void *row, int gz, const char *group, const char *what,
                const char *kind) {
    if (n_tests == sizeof tests / sizeof tests[0])
        abort();
    test_case *c = &cases[n_tests];
    snprintf(c->name, sizeof c->name, "%s%s%s%s%s", group, what ? "/" : "", what ? what : "",
             kind ? "/" : "", kind ? kind : "");
    c->row = row;
    c->gz = gz;
    tests[n_tests++] = (struct CMUnitTest){c->name, fn, setup, teardown, c};
}

int main(void) {
    static const struct {
        const char *name;
        CMUnitTestFunction fn;
    } single[] = {
        {"missing_file_named", missing_file_named},
        {"plain_file_wins_over_gz", plain_file_wins_over_gz},
        {"corrupt_gzip_body_refused", corrupt_gzip_body_refused},
        {"every_gzip_byte_flip_refused", every_gzip_byte_flip_refused},
        {"directory_is_io_error", directory_is_io_error},
        {"fashion_mnist_loads_balanced", fashion_mnist_loads_balanced},
    };
    static const char *const kinds[] = {"plain", "gz"};
    for (int g = 0; g < 2; g++) {
        const int gz = g ? GZ_IMAGES | GZ_LABELS : 0;
        add(valid_set_loads, NULL, gz, "valid_3_images_2x3", NULL, kinds[g]);
        add(every_truncation_refused, &IMAGES, gz, "truncation", "images", kinds[g]);
        add(every_truncation_refused, &LABELS, gz, "truncation", "labels", kinds[g]);
        for (size_t b = 0; b < N_BAD; b++)
            add(bad_set_refused, &bad_cases[b], gz, "refuses", bad_cases[b].name, kinds[g]);
    }
    for (size_t d = 0; d < N_DIR; d++)
        add(load_dir_case, &dir_cases[d], 0, "load_dir", dir_cases[d].name, NULL);
    for (size_t s = 0; s < sizeof single / sizeof single[0]; s++)
        add(single[s].fn, NULL, 0, single[s].name, NULL, NULL);
    return _cmocka_run_group_tests("idx", tests, n_tests, NULL, NULL);
}
