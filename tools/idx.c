/* idx.c - the IDX reader of `clbn train` (MNIST and Fashion-MNIST files), through zlib. */
#include "idx.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_BYTES ((size_t)1 << 31)
#define CHUNK (1u << 30)             /* gzread takes an unsigned length and returns an int */
#define GROW_START ((size_t)1 << 20) /* the body's first buffer; it doubles from there */

/* One file being read: the name actually opened (path or path.gz), for every message. */
typedef struct idx_file {
    gzFile f;
    char name[4200];
} idx_file;

/* One decoded file: dims[0] is the item count; images also have rows and cols. */
typedef struct idx_part {
    idx_file in; /* in.f is closed once the part is read; in.name stays for messages */
    uint32_t dims[3];
    unsigned char *data;
} idx_part;

/* A missing path is retried with .gz; any other failure to open is the system's, not the data's. */
static int open_either(const char *path, idx_file *in, char *err, size_t cap) {
    for (int gz = 0; gz < 2; gz++) {
        if ((size_t)snprintf(in->name, sizeof in->name, "%s%s", path, gz ? ".gz" : "") >=
            sizeof in->name) {
            snprintf(err, cap, "%.200s...: path too long", path);
            return IDX_BAD_INPUT;
        }
        errno = 0; /* gzopen leaves errno alone when it runs out of memory */
        in->f = gzopen(in->name, "rb");
        int e = errno;
        if (in->f)
            return IDX_OK;
        if (e != ENOENT) {
            snprintf(err, cap, "%s: cannot open: %s", in->name, e ? strerror(e) : "out of memory");
            return IDX_IO_ERROR;
        }
    }
    snprintf(err, cap, "%s: no such file (nor %s.gz)", path, path);
    return IDX_BAD_INPUT;
}

/* zlib's message without the "path: " it starts with, since ours names the file already. */
static const char *gz_reason(const idx_file *in, int *code) {
    const char *m = gzerror(in->f, code);
    size_t n = strlen(in->name);
    return strncmp(m, in->name, n) == 0 && strncmp(m + n, ": ", 2) == 0 ? m + n + 2 : m;
}

/* After gzread returned -1: Z_ERRNO is the operating system's fault, anything else the data's. */
static int gz_failure(const idx_file *in, char *err, size_t cap) {
    int code;
    const char *m = gz_reason(in, &code);
    if (code == Z_ERRNO) {
        snprintf(err, cap, "%s: read error: %s", in->name, m);
        return IDX_IO_ERROR;
    }
    snprintf(err, cap, "%s: corrupt gzip: %s", in->name, m);
    return IDX_BAD_INPUT;
}

/* Reads exactly n bytes; a short read is a truncated file (zlib says EOF, not -1, for a cut
 * gzip stream). */
static int read_exact(const idx_file *in, unsigned char *dst, size_t n, char *err, size_t cap) {
    size_t got = 0;
    while (got < n) {
        int r = gzread(in->f, dst + got, (unsigned)(n - got > CHUNK ? CHUNK : n - got));
        if (r < 0)
            return gz_failure(in, err, cap);
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        snprintf(err, cap, "%s: truncated: %zu of %zu bytes", in->name, got, n);
        return IDX_BAD_INPUT;
    }
    return IDX_OK;
}

/* Nothing may follow the body; a gzip stream must also end cleanly, since a missing CRC trailer
 * reads as EOF and only gzerror tells it from a complete file. */
static int expect_end(const idx_file *in, char *err, size_t cap) {
    unsigned char extra;
    int code, r = gzread(in->f, &extra, 1);
    if (r < 0)
        return gz_failure(in, err, cap);
    if (r > 0) {
        snprintf(err, cap, "%s: trailing data after the announced bytes", in->name);
        return IDX_BAD_INPUT;
    }
    const char *m = gz_reason(in, &code);
    if (code != Z_OK) {
        snprintf(err, cap, "%s: truncated gzip: %s", in->name, m);
        return IDX_BAD_INPUT;
    }
    return IDX_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The magic first, so a file of the other kind is named as such rather than as truncated. */
static int read_header(const idx_file *in, int nd, uint32_t dims[3], size_t *total, char *err,
                       size_t cap) {
    unsigned char head[16];
    const uint32_t magic = nd == 3 ? 0x803u : 0x801u;
    int rc = read_exact(in, head, 4, err, cap);
    if (!rc && be32(head) != magic) {
        snprintf(err, cap, "%s: magic 0x%08x: expected 0x%08x (IDX %s)", in->name, be32(head),
                 magic, nd == 3 ? "images" : "labels");
        return IDX_BAD_INPUT;
    }
    rc = rc ? rc : read_exact(in, head + 4, 4 * (size_t)nd, err, cap);
    *total = 1;
    for (int d = 0; !rc && d < nd; d++) {
        dims[d] = be32(head + 4 + 4 * d);
        if (dims[d] == 0 || dims[d] > MAX_BYTES / *total) {
            snprintf(err, cap, "%s: dimension %d is %u: %s", in->name, d, dims[d],
                     dims[d] ? "more than 2 GiB in all" : "expected at least 1");
            return IDX_BAD_INPUT;
        }
        *total *= dims[d];
    }
    return rc;
}

/* The body of total bytes into a malloc'd *out, grown as the bytes arrive: a 16-byte file whose
 * header announces 2 GiB costs what it holds, not 2 GiB (a fuzz_idx regression:
 * tests/fuzz/regressions/fuzz_idx/alloc_2gib_from_24_byte_header). */
static int read_body(const idx_file *in, size_t total, unsigned char **out, char *err, size_t cap) {
    size_t got = 0, size = total < GROW_START ? total : GROW_START;
    unsigned char *buf = malloc(size);
    while (buf && got < total) {
        if (got == size) {
            size_t bigger = size > total / 2 ? total : size * 2;
            unsigned char *b = realloc(buf, bigger);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            size = bigger;
        }
        int r = gzread(in->f, buf + got, (unsigned)(size - got > CHUNK ? CHUNK : size - got));
        if (r <= 0) {
            free(buf);
            if (r < 0)
                return gz_failure(in, err, cap);
            snprintf(err, cap, "%s: truncated: %zu of %zu bytes", in->name, got, total);
            return IDX_BAD_INPUT;
        }
        got += (size_t)r;
    }
    if (!buf) {
        snprintf(err, cap, "%s: out of host memory for %zu bytes", in->name, total);
        return IDX_IO_ERROR;
    }
    *out = buf;
    return IDX_OK;
}

/* nd is 3 for images, 1 for labels; on failure p->data stays NULL. */
static int read_part(const char *path, int nd, idx_part *p, char *err, size_t cap) {
    size_t total = 0;
    int rc = open_either(path, &p->in, err, cap);
    if (rc)
        return rc;
    rc = read_header(&p->in, nd, p->dims, &total, err, cap);
    rc = rc ? rc : read_body(&p->in, total, &p->data, err, cap);
    rc = rc ? rc : expect_end(&p->in, err, cap);
    gzclose(p->in.f);
    p->in.f = NULL;
    if (rc) {
        free(p->data);
        p->data = NULL;
    }
    return rc;
}

static int check_labels(const idx_part *im, const idx_part *lb, unsigned max_label, char *err,
                        size_t cap) {
    if (lb->dims[0] != im->dims[0]) {
        snprintf(err, cap, "%s: %u labels for %u images", lb->in.name, lb->dims[0], im->dims[0]);
        return IDX_BAD_INPUT;
    }
    for (uint32_t i = 0; i < lb->dims[0]; i++)
        if (lb->data[i] >= max_label) {
            snprintf(err, cap, "%s: label %u of item %u: expected below %u", lb->in.name,
                     lb->data[i], i, max_label);
            return IDX_BAD_INPUT;
        }
    return IDX_OK;
}

int idx_load(const char *images_path, const char *labels_path, unsigned max_label_exclusive,
             idx_set *set, char *err, size_t cap) {
    memset(set, 0, sizeof *set);
    idx_part im = {0}, lb = {0};
    int rc = read_part(images_path, 3, &im, err, cap);
    rc = rc ? rc : read_part(labels_path, 1, &lb, err, cap);
    rc = rc ? rc : check_labels(&im, &lb, max_label_exclusive, err, cap);
    if (rc) {
        free(im.data);
        free(lb.data);
        return rc;
    }
    *set = (idx_set){im.dims[0], im.dims[1], im.dims[2], im.data, lb.data};
    return IDX_OK;
}

static int load_pair(const char *dir, const char *prefix, idx_set *s, char *err, size_t cap) {
    char im[4200], lb[4200];
    if ((size_t)snprintf(im, sizeof im, "%s/%s-images-idx3-ubyte", dir, prefix) >= sizeof im ||
        (size_t)snprintf(lb, sizeof lb, "%s/%s-labels-idx1-ubyte", dir, prefix) >= sizeof lb) {
        memset(s, 0, sizeof *s);
        snprintf(err, cap, "%.200s...: path too long", dir);
        return IDX_BAD_INPUT;
    }
    int rc = idx_load(im, lb, 10, s, err, cap);
    if (!rc && (s->rows != 28 || s->cols != 28)) {
        snprintf(err, cap, "%s: %zu x %zu images: expected 28 x 28", im, s->rows, s->cols);
        idx_free(s);
        rc = IDX_BAD_INPUT;
    }
    return rc;
}

int idx_load_dir(const char *dir, idx_set *train, idx_set *test, char *err, size_t cap) {
    memset(test, 0, sizeof *test);
    int rc = load_pair(dir, "train", train, err, cap);
    rc = rc ? rc : load_pair(dir, "t10k", test, err, cap);
    if (rc)
        idx_free(train);
    return rc;
}

void idx_free(idx_set *set) {
    free(set->pixels);
    free(set->labels);
    memset(set, 0, sizeof *set);
}
