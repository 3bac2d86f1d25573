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

/* Status: 0 ok; IDX_BAD_INPUT (2) missing/malformed/truncated/mismatched file (message in err);
 * IDX_IO_ERROR (3) a read error of the operating system other than "no such file" (message). */
enum { IDX_OK = 0, IDX_BAD_INPUT = 2, IDX_IO_ERROR = 3 };

/* Reads an images file and a labels file into *set (caller frees with idx_free). Each path is
 * tried as given; if it does not exist, path + ".gz" is tried; zlib's gzopen/gzread read both
 * gzipped and plain files. Checks: magic 0x00000803 (images) / 0x00000801 (labels), big-endian
 * dimensions, nonzero dimensions, rows*cols*count not overflowing and <= 1<<31 bytes total,
 * exactly the announced number of bytes present (no fewer: truncated; no more: trailing data is
 * also refused), label count equal to image count, every label < max_label_exclusive (pass 10).
 * The message names the file and what is wrong, e.g. "train-labels-idx1-ubyte.gz: 59999 labels
 * for 60000 images" or "...: truncated: 1234 of 47040016 bytes". On failure *set is left
 * zeroed and nothing leaks. */
int idx_load(const char *images_path, const char *labels_path, unsigned max_label_exclusive,
             idx_set *set, char *err, size_t cap);

/* Loads the four Fashion-MNIST/MNIST files from dir: train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or .gz),
 * and requires rows = cols = 28 in both sets. */
int idx_load_dir(const char *dir, idx_set *train, idx_set *test, char *err, size_t cap);

void idx_free(idx_set *set); /* accepts a zeroed set; zeroes it */

#endif
