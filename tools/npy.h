/* Reading and writing NumPy .npy files (format 1.0, 2.0 and 3.0) holding float32 arrays: the
 * exchange format of `clbn run`, so any framework can cross-check clbn. Reads little- and
 * big-endian float32 ('<f4', '>f4') in C or Fortran order, as numpy writes them; writes
 * little-endian C order. */
#ifndef CLBN_TOOLS_NPY_H
#define CLBN_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

typedef struct npy_array {
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count; /* product of the shape (1 for a 0-d array) */
    float *data;    /* count floats, malloc'd; NULL when count is 0 */
} npy_array;

/* Reads path into *array, in C order and host byte order whatever the file's. On failure returns
 * -1, leaves *array empty and writes one line naming the problem (without the path) into err. Never
 * crashes on malformed input. */
int npy_read(const char *path, npy_array *array, char *err, size_t err_size);

/* Writes data (count = product of shape) as a float32 .npy file. Returns -1 and fills err on
 * failure (a partial file may remain: callers write to a temporary name). */
int npy_write(const char *path, const float *data, int ndim, const uint64_t *shape, char *err,
              size_t err_size);

void npy_free(npy_array *array);

/* "(2, 3, 4)" into buf, Python's spelling of a shape. */
const char *npy_shape_string(int ndim, const uint64_t *shape, char *buf, size_t buf_size);

#endif
