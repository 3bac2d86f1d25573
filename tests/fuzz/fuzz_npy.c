/* fuzz_npy.c - libFuzzer target for tools/npy.c's reader: the input is the .npy file. A file
 * read is written back (npy_write) and read again, and must give the same array. */
#include "fuzz_util.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(0, ".npy", data, size);
    npy_array a;
    memset(&a, 0x5a, sizeof a); /* npy_read must set every field */
    char err[512];
    err[0] = '\0';
    int rc = npy_read(path, &a, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1, "npy_read returned %d", rc);
    if (rc != 0) {
        FUZZ_CHECK(err[0] != '\0', "npy_read failed without a message");
        FUZZ_CHECK(a.data == NULL && a.count == 0, "npy_read failed but left an array");
        npy_free(&a);
        return 0;
    }
    FUZZ_CHECK(a.ndim >= 0 && a.ndim <= NPY_MAX_DIMS, "ndim %d", a.ndim);
    uint64_t count = 1;
    for (int d = 0; d < a.ndim; d++)
        count *= a.shape[d];
    FUZZ_CHECK(count == a.count, "count %llu, shape product %llu", (unsigned long long)a.count,
               (unsigned long long)count);
    FUZZ_CHECK((a.count == 0) == (a.data == NULL), "count %llu with data %p",
               (unsigned long long)a.count, (void *)a.data);
    /* Every float is read (ASan checks the allocation holds them) and written back. */
    const char *again = fuzz_path(1, ".npy");
    if (npy_write(again, a.data, a.ndim, a.shape, err, sizeof err) == 0) {
        npy_array b;
        FUZZ_CHECK(npy_read(again, &b, err, sizeof err) == 0, "re-reading what npy_write wrote: %s",
                   err);
        FUZZ_CHECK(b.ndim == a.ndim && b.count == a.count, "the round trip changed the shape");
        FUZZ_CHECK(a.ndim == 0 || !memcmp(a.shape, b.shape, sizeof a.shape[0] * (size_t)a.ndim),
                   "the round trip changed the shape");
        FUZZ_CHECK(a.count == 0 || !memcmp(a.data, b.data, (size_t)a.count * sizeof(float)),
                   "the round trip changed the values");
        npy_free(&b);
    }
    npy_free(&a);
    FUZZ_CHECK(a.data == NULL, "npy_free left data");
    return 0;
}
