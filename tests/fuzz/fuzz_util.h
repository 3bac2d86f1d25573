/* fuzz_util.h - what the fuzz targets share: a scratch file per process for the readers that
 * take a path, a reader of the input's bytes, and a check that aborts with a message. */
#ifndef CLBN_FUZZ_UTIL_H
#define CLBN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A property failed: libFuzzer records the input as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The path of scratch file `which` of this process, under $CLBN_FUZZ_TMPDIR, else /dev/shm
 * (memory: thousands of rewrites a second cost no disk), else /tmp. `suffix` is appended. */
static inline const char *fuzz_path(int which, const char *suffix) {
    static char paths[4][512];
    if (!paths[which][0]) {
        const char *dir = getenv("CLBN_FUZZ_TMPDIR");
        if (!dir || !*dir)
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(paths[which], sizeof paths[which], "%s/clbn-fuzz-%ld-%d%s", dir, (long)getpid(),
                 which, suffix);
    }
    return paths[which];
}

/* Writes data to scratch file `which`, overwriting it; aborts if the file cannot be written,
 * since the target would then test nothing. */
static inline const char *fuzz_write_file(int which, const char *suffix, const uint8_t *data,
                                          size_t size) {
    const char *path = fuzz_path(which, suffix);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create %s", path);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    FUZZ_CHECK(fclose(f) == 0, "cannot close %s", path);
    return path;
}

/* A mode byte, then a file: *mode and a malloc'd copy of exactly the file's *n bytes (so ASan
 * sees any read past its end); NULL for an empty input. */
static inline unsigned char *fuzz_mode_and_file(const uint8_t *data, size_t size, uint8_t *mode,
                                                size_t *n) {
    if (size == 0)
        return NULL;
    *mode = data[0];
    *n = size - 1;
    unsigned char *buf = malloc(*n ? *n : 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, data + 1, *n);
    return buf;
}

/* The input, read front to back; past the end every read gives zeros. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in) {
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t fuzz_bytes(fuzz_in *in, int k) {
    uint64_t v = 0;
    for (int i = 0; i < k; i++)
        v |= (uint64_t)fuzz_u8(in) << (8 * i);
    return v;
}

/* A 64-bit value from a selector byte: mostly the values where size checks go wrong (0, 1,
 * small, powers of two and their neighbours, the top of the range), sometimes any value. */
static inline uint64_t fuzz_u64(fuzz_in *in) {
    uint8_t sel = fuzz_u8(in);
    switch (sel & 7) {
    case 0:
        return sel >> 3; /* 0..31 */
    case 1:
        return fuzz_bytes(in, 1);
    case 2:
        return fuzz_bytes(in, 2);
    case 3:
        return fuzz_bytes(in, 4);
    case 4:
        return fuzz_bytes(in, 8);
    case 5: { /* 2^k - 1, 2^k, 2^k + 1 */
        int k = (sel >> 3) & 63;
        uint64_t b = (uint64_t)1 << k;
        uint8_t d = fuzz_u8(in) % 3;
        return d == 0 ? b - 1 : d == 1 ? b : b + 1;
    }
    case 6:
        return UINT64_MAX - (sel >> 3); /* the top of the range */
    default:
        return (uint64_t)(sel >> 3) * 1000; /* round sizes */
    }
}

#endif
