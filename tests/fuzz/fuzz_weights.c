/* fuzz_weights.c - libFuzzer target for the weights file of `clbn train --save`
 * (weights_parse, tools/weights.c). The input: a mode byte, then the file. With bit 0 of the
 * mode the file's last 4 bytes are replaced by its CRC-32 first, so mutations get past the
 * checksum. A file accepted is encoded again and must come back byte for byte. */
#include "fuzz_util.h"
#include "tools.h"
#include "weights.h"

#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t mode = 0;
    size_t n = 0;
    unsigned char *buf = fuzz_mode_and_file(data, size, &mode, &n);
    if (!buf)
        return 0;
    if ((mode & 1) && n >= 4) {
        uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(n - 4));
        for (int i = 0; i < 4; i++)
            buf[n - 4 + i] = (unsigned char)(crc >> (8 * i));
    }
    tn_config cfg;
    float *W[TN_MAX_LAYERS], *b[TN_MAX_LAYERS];
    const char *why = NULL;
    int rc = weights_parse(buf, n, &cfg, W, b, &why);
    if (rc != 0) {
        FUZZ_CHECK(rc == CLBN_EXIT_USAGE || rc == CLBN_EXIT_FAILURE, "returned %d", rc);
        FUZZ_CHECK(why && *why, "refused without a message");
        for (int l = 0; l < TN_MAX_LAYERS; l++)
            FUZZ_CHECK(!W[l] && !b[l], "refused but left layer %d", l);
    } else {
        FUZZ_CHECK(why == NULL, "accepted with message %s", why);
        FUZZ_CHECK(cfg.layers >= 2 && cfg.layers <= TN_MAX_LAYERS, "layers %d", cfg.layers);
        unsigned char *again = NULL;
        size_t len = 0;
        FUZZ_CHECK(weights_encode(&cfg, (const float *const *)W, (const float *const *)b, &again,
                                  &len) == 0,
                   "cannot encode what was parsed");
        FUZZ_CHECK(len == n && !memcmp(again, buf, n), "the round trip changed the file");
        free(again);
        weights_free(W, b);
    }
    free(buf);
    return 0;
}
