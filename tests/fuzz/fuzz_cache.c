/* fuzz_cache.c - libFuzzer target for the program-cache entry check (clbn_cache_parse,
 * host/cache.c). The input: a mode byte, then the entry. With bit 0 of the mode the entry's
 * length and checksum fields are set right first, so mutations reach what follows them. */
#include "fuzz_util.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 24

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t mode = 0;
    size_t n = 0;
    unsigned char *buf = fuzz_mode_and_file(data, size, &mode, &n);
    if (!buf)
        return 0;
    if ((mode & 1) && n >= HEADER) {
        clbn_put_u64(buf + 8, n - HEADER);
        clbn_put_u64(buf + 16, clbn_fnv1a(CLBN_FNV_INIT, buf + HEADER, n - HEADER));
    }
    const unsigned char *bin = (const unsigned char *)"x";
    size_t blen = 7;
    int ok = clbn_cache_parse(buf, n, &bin, &blen);
    FUZZ_CHECK(ok == 0 || ok == 1, "returned %d", ok);
    if (!ok) {
        FUZZ_CHECK(bin == NULL && blen == 0, "refused but returned a binary");
    } else {
        FUZZ_CHECK(n > HEADER && !memcmp(buf, "CLBNBIN1", 8), "accepted a foreign entry");
        FUZZ_CHECK(bin == buf + HEADER && blen == n - HEADER, "binary not the entry's body");
        FUZZ_CHECK(clbn_fnv1a(CLBN_FNV_INIT, bin, blen) == clbn_get_u64(buf + 16),
                   "accepted a bad checksum");
    }
    free(buf);
    return 0;
}
