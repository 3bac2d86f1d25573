/* idx.c - the IDX reader of `clbn train` (MNIST and Fashion-MNIST files), through zlib. */
#include "idx.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Opens path, else path.gz; the name actually opened goes to used. */
static int open_either(const char *path, gzFile *f, char *used, size_t ucap, char *err,
                       size_t cap) {
    for (int gz = 0; gz < 2; gz++) {
        snprintf(used, ucap, "%s%s", path, gz ? ".gz" : "");
        FILE *probe = fopen(used, "rb");
        if (!probe) {
            if (errno == ENOENT)
                continue;
            snprintf(err, cap, "%s: %s", used, strerror(errno));
            return errno == EACCES || errno == EISDIR ? IDX_BAD_INPUT : IDX_IO_ERROR;
        }
        fclose(probe);
        *f = gzopen(used, "rb");
        if (!*f) {
            snprintf(err, cap, "%s: cannot open: %s", used, strerror(errno));
            return IDX_IO_ERROR;
        }
        return IDX_OK;
    }
    snprintf(err, cap, "%s: no such file (nor %s.gz)", path, path);
    return IDX_BAD_INPUT;
}

/* Reads exactly n bytes; anything short is a truncated (or corrupt) file. */
static int read_exact(gzFile f, const char *name, unsigned char *dst, size_t n, char *err,
                      size_t cap) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
        int r = gzread(f, dst + got, (unsigned)want);
        if (r < 0) {
            int code;
            const char *m = gzerror(f, &code);
            snprintf(err, cap, "%s: corrupt: %s", name, m);
            return IDX_BAD_INPUT;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        snprintf(err, cap, "%s: truncated: %zu of %zu bytes", name, got, n);
        return IDX_BAD_INPUT;
    }
    return IDX_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One file: magic 0x0801 (labels, 1 dimension) or 0x0803 (images, 3); its body into *data. */
static int read_file(const char *path, int images, uint32_t dims[3], unsigned char **data,
                     char *err, size_t cap) {
    char name[4200];
    gzFile f = NULL;
    int rc = open_either(path, &f, name, sizeof name, err, cap);
    if (rc)
        return rc;
    const int nd = images ? 3 : 1;
    unsigned char head[16];
    size_t total = 1;
    rc = read_exact(f, name, head, 4 + 4 * (size_t)nd, err, cap);
    if (!rc && be32(head) != (images ? 0x803u : 0x801u)) {
        snprintf(err, cap, "%s: not an IDX %s file (magic 0x%08x)", name,
                 images ? "images" : "labels", be32(head));
        rc = IDX_BAD_INPUT;
    }
    for (int d = 0; !rc && d < nd; d++) {
        dims[d] = be32(head + 4 + 4 * d);
        total *= dims[d];
        if (dims[d] == 0 || total > (size_t)1 << 31) {
            snprintf(err, cap, "%s: dimension %d is %u: expected 1 to a total of 2 GiB", name, d,
                     dims[d]);
            rc = IDX_BAD_INPUT;
        }
    }
    *data = rc ? NULL : malloc(total);
    if (!rc && !*data) {
        snprintf(err, cap, "%s: out of host memory for %zu bytes", name, total);
        rc = IDX_IO_ERROR;
    }
    rc = rc ? rc : read_exact(f, name, *data, total, err, cap);
    unsigned char extra;
    if (!rc && gzread(f, &extra, 1) != 0) {
        snprintf(err, cap, "%s: more bytes than its %zu announced", name, total);
        rc = IDX_BAD_INPUT;
    }
    gzclose(f);
    if (rc) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

int idx_load(const char *images_path, const char *labels_path, unsigned max_label, idx_set *set,
             char *err, size_t cap) {
    memset(set, 0, sizeof *set);
    uint32_t di[3] = {0}, dl[3] = {0};
    unsigned char *px = NULL, *lb = NULL;
    int rc = read_file(images_path, 1, di, &px, err, cap);
    rc = rc ? rc : read_file(labels_path, 0, dl, &lb, err, cap);
    if (!rc && dl[0] != di[0]) {
        snprintf(err, cap, "%s: %u labels for %u images", labels_path, dl[0], di[0]);
        rc = IDX_BAD_INPUT;
    }
    for (uint32_t i = 0; !rc && i < dl[0]; i++)
        if (lb[i] >= max_label) {
            snprintf(err, cap, "%s: label %u of item %u: expected below %u", labels_path, lb[i], i,
                     max_label);
            rc = IDX_BAD_INPUT;
        }
    if (rc) {
        free(px);
        free(lb);
        return rc;
    }
    *set = (idx_set){di[0], di[1], di[2], px, lb};
    return IDX_OK;
}

static int load_pair(const char *dir, const char *prefix, idx_set *s, char *err, size_t cap) {
    char im[4200], lb[4200];
    snprintf(im, sizeof im, "%s/%s-images-idx3-ubyte", dir, prefix);
    snprintf(lb, sizeof lb, "%s/%s-labels-idx1-ubyte", dir, prefix);
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
