/* fuzz_idx.c - libFuzzer target for tools/idx.c's idx_load. The input: a flags byte (bit 0:
 * gzip the images file, bit 1: gzip the labels file, bit 2: no labels file at all), the
 * exclusive label bound, a 16-bit little-endian length of the images file, then the images
 * file and the labels file. Without the gzip bits the bytes are written as they are, so a
 * damaged gzip stream (from a seed that holds one) reaches zlib too. */
#include "fuzz_util.h"
#include "idx.h"

#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *put(int which, const uint8_t *p, size_t n, int gz) {
    if (!gz)
        return fuzz_write_file(which, "", p, n);
    const char *path = fuzz_path(which, "");
    gzFile f = gzopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create %s", path);
    FUZZ_CHECK(n == 0 || gzwrite(f, p, (unsigned)n) == (int)n, "cannot write %s", path);
    FUZZ_CHECK(gzclose(f) == Z_OK, "cannot close %s", path);
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    unsigned max_label = fuzz_u8(&in);
    size_t split = (size_t)fuzz_bytes(&in, 2);
    if (split > in.n)
        split = in.n;
    const char *images = put(0, in.p, split, flags & 1);
    const char *labels = fuzz_path(1, "");
    if (flags & 4)
        unlink(labels);
    else
        labels = put(1, in.p + split, in.n - split, flags & 2);
    idx_set s;
    memset(&s, 0x5a, sizeof s); /* idx_load must set every field */
    char err[512];
    err[0] = '\0';
    int rc = idx_load(images, labels, max_label, &s, err, sizeof err);
    if (rc != IDX_OK) {
        FUZZ_CHECK(rc == IDX_BAD_INPUT || rc == IDX_IO_ERROR, "idx_load returned %d", rc);
        FUZZ_CHECK(err[0] != '\0', "idx_load failed without a message");
        FUZZ_CHECK(s.count == 0 && s.pixels == NULL && s.labels == NULL,
                   "idx_load failed but left a set");
        return 0;
    }
    FUZZ_CHECK(s.count > 0 && s.rows > 0 && s.cols > 0, "empty set accepted");
    /* The last pixel and every label are read: ASan checks the buffers hold them. */
    volatile unsigned sink = s.pixels[s.count * s.rows * s.cols - 1];
    for (size_t i = 0; i < s.count; i++)
        FUZZ_CHECK(s.labels[i] < max_label, "label %u of item %zu not below %u", s.labels[i], i,
                   max_label);
    (void)sink;
    idx_free(&s);
    FUZZ_CHECK(s.pixels == NULL && s.labels == NULL && s.count == 0, "idx_free left data");
    return 0;
}
