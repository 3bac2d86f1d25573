/* idx.h - MNIST-format IDX files (images idx3-ubyte, labels idx1-ubyte), gzipped or plain. */
#ifndef CLBN_IDX_H
#define CLBN_IDX_H

#include <stddef.h>

typedef struct idx_set {
    size_t count;          /* images (= labels) */
    size_t rows, cols;     /* image size, e.g. 28 x 28 */
    unsigned char *pixels; /* count * rows * cols bytes, row-major */
    unsigned char *labels; /* count bytes */
} idx_set;

/* 0 ok; IDX_BAD_INPUT: a missing, malformed, truncated or mismatched file; IDX_IO_ERROR: a
 * read error of the operating system other than a missing file. Messages name the file. */
enum { IDX_OK = 0, IDX_BAD_INPUT = 2, IDX_IO_ERROR = 3 };

/* Reads an images and a labels file (each tried as given, then with ".gz"; zlib reads gzipped
 * and plain files alike). Refuses a wrong magic, a zero dimension, a set over 2 GiB, fewer or
 * more bytes than announced, label and image counts that differ and labels >= max_label.
 * On failure *set stays zeroed. */
int idx_load(const char *images_path, const char *labels_path, unsigned max_label, idx_set *set,
             char *err, size_t cap);

/* train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
 * t10k-labels-idx1-ubyte from dir (each plain or .gz), 28 x 28 images, labels below 10. */
int idx_load_dir(const char *dir, idx_set *train, idx_set *test, char *err, size_t cap);

void idx_free(idx_set *set); /* accepts a zeroed set; zeroes it */

#endif
