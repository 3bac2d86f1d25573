/* fuzz_state.c - libFuzzer target for the state-file checks of clbn_bn_load
 * (clbn_bn_parse_state, host/bn_file.c). The input: a mode byte, then the file. With bit 0 of
 * the mode the file's last 8 bytes are replaced by its FNV-1a checksum first, so mutations get
 * past the checksum to the size and option checks. */
#include "fuzz_util.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t mode = 0;
    size_t n = 0;
    unsigned char *buf = fuzz_mode_and_file(data, size, &mode, &n);
    if (!buf)
        return 0;
    if ((mode & 1) && n >= 8)
        clbn_put_u64(buf + n - 8, clbn_fnv1a(CLBN_FNV_INIT, buf, n - 8));
    clbn_bn_options o;
    uint64_t t = 0;
    const unsigned char *vec = NULL;
    clbn_clear_error();
    clbn_status st = clbn_bn_parse_state(buf, n, "fuzz.clbn", &o, &t, &vec);
    const char *msg = clbn_last_error_message();
    if (st != CLBN_SUCCESS) {
        FUZZ_CHECK(st == CLBN_ERROR_FILE_CORRUPT || st == CLBN_ERROR_FILE_MISMATCH ||
                       st == CLBN_ERROR_FILE_VERSION,
                   "status %s", clbn_status_name(st));
        FUZZ_CHECK(msg[0] != '\0' && strstr(msg, "fuzz.clbn"), "message \"%s\"", msg);
        FUZZ_CHECK(vec == NULL, "failed but returned vectors");
    } else {
        FUZZ_CHECK(msg[0] == '\0', "success with message \"%s\"", msg);
        FUZZ_CHECK(clbn_check_options(&o) == CLBN_SUCCESS, "accepted invalid options: %s",
                   clbn_last_error_message());
        FUZZ_CHECK(vec != NULL && vec > buf, "no vectors");
        /* The vectors and the checksum fill the file exactly. */
        FUZZ_CHECK((size_t)(vec - buf) + o.channels * 4 * CLBN_VECTOR_COUNT + 8 == n,
                   "%llu channels do not fill %zu bytes", (unsigned long long)o.channels, n);
        volatile uint32_t sink = 0;
        for (uint64_t i = 0; i < o.channels * CLBN_VECTOR_COUNT; i++)
            sink ^= clbn_get_u32(vec + 4 * i);
        (void)sink;
        (void)t;
    }
    free(buf);
    return 0;
}
