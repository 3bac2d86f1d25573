/* test_files.c — saves that meet a full disk (ENOSPC), a read-only file system (EROFS) or a
 * permission error (EACCES), injected by the file-I/O hook linked into this binary
 * (io_fault.c): the call returns CLBN_ERROR_IO with a message naming the error, the old file
 * is byte for byte as it was, a new path is not created and no temporary file is left. Both
 * savers of the library: clbn_bn_save and clbn_context_save_tuning. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];     /* the saves' folder: the hook fails paths containing it */
static char g_log[300];     /* the hook's log of injected failures */
static clbn_context *g_ctx; /* with its cache folder inside g_dir, for the tuning file */
static clbn_bn *g_old, *g_new;

static const char *const g_errnos[] = {"ENOSPC", "EROFS", "EACCES"};
static const char *const g_strerrors[] = {"No space left on device", "Read-only file system",
                                          "Permission denied"};

static unsigned char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* The folder's entries, sorted, as one line. */
static void list_dir(const char *dir, char *out, size_t size) {
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strlen(out) + strlen(names[i]->d_name) + 2 < size) {
            strcat(out, names[i]->d_name);
            strcat(out, " ");
        }
        free(names[i]);
    }
    free(names);
}

static void arm(int e) {
    setenv("CLBN_IO_FAULT_PATH", g_dir, 1);
    setenv("CLBN_IO_FAULT", g_errnos[e], 1);
    setenv("CLBN_IO_FAULT_LOG", g_log, 1);
    unlink(g_log);
}

static void disarm(void) {
    unsetenv("CLBN_IO_FAULT");
}

/* The number of failures the hook injected since arm(). */
static int injected(void) {
    FILE *f = fopen(g_log, "r");
    int n = 0, c;
    if (!f)
        return 0;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static clbn_bn *make_bn(float value) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = 5;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(g_ctx, &o, &bn));
    float v[5];
    for (int i = 0; i < 5; i++)
        v[i] = value + (float)i;
    TU_OK(clbn_bn_write_vector(bn, CLBN_VECTOR_RUNNING_MEAN, v, 5));
    TU_OK(clbn_bn_set_batches_tracked(bn, (uint64_t)value));
    return bn;
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/clbn-test-files-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_log, sizeof g_log, "%s.log", g_dir); /* outside the folder: never failed */
    char cache[300];
    snprintf(cache, sizeof cache, "%s/cache", g_dir);
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.cache_dir = cache;
    o.disable_cache = 0;
    clbn_status st = clbn_context_create(&o, &g_ctx);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "no OpenCL context: %s\n", clbn_last_error_message());
        exit(77);
    }
    g_old = make_bn(1.0f);
    g_new = make_bn(100.0f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    disarm();
    clbn_bn_release(g_old);
    clbn_bn_release(g_new);
    clbn_context_release(g_ctx);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", g_dir, g_log);
    return system(cmd) == 0 ? 0 : -1;
}

/* The status and message of a failed save: CLBN_ERROR_IO naming the injected error. */
static void expect_io(const char *what, int e, clbn_status st) {
    if (st != CLBN_ERROR_IO)
        fail_msg("%s under %s: %s, expected CLBN_ERROR_IO (\"%s\")", what, g_errnos[e],
                 clbn_status_name(st), clbn_last_error_message());
    if (!strstr(clbn_last_error_message(), g_strerrors[e]))
        fail_msg("%s under %s: the message \"%s\" does not say \"%s\"", what, g_errnos[e],
                 clbn_last_error_message(), g_strerrors[e]);
    if (injected() == 0)
        fail_msg("%s under %s: the hook injected nothing", what, g_errnos[e]);
}

static void state_save_keeps_old_file(void **state) {
    (void)state;
    char path[400], fresh[400], list0[4096], list1[4096];
    snprintf(path, sizeof path, "%s/state.clbn", g_dir);
    snprintf(fresh, sizeof fresh, "%s/never.clbn", g_dir);
    TU_OK(clbn_bn_save(g_old, path));
    size_t n0, n1;
    unsigned char *before = read_whole(path, &n0);
    for (int e = 0; e < 3; e++) {
        list_dir(g_dir, list0, sizeof list0);
        arm(e);
        clbn_status st = clbn_bn_save(g_new, path);
        expect_io("clbn_bn_save over a file", e, st);
        st = clbn_bn_save(g_new, fresh);
        expect_io("clbn_bn_save to a new path", e, st);
        disarm();
        unsigned char *after = read_whole(path, &n1);
        if (n0 != n1 || memcmp(before, after, n0) != 0)
            fail_msg("%s: the old state file changed (%zu -> %zu bytes)", g_errnos[e], n0, n1);
        free(after);
        list_dir(g_dir, list1, sizeof list1);
        if (strcmp(list0, list1) != 0)
            fail_msg("%s: the folder changed: [%s] -> [%s]", g_errnos[e], list0, list1);
        /* The old file still loads as the old object. */
        clbn_bn *back = NULL;
        uint64_t t = 0;
        TU_OK(clbn_bn_load(g_ctx, path, &back));
        TU_OK(clbn_bn_get_batches_tracked(back, &t));
        assert_int_equal(t, 1);
        clbn_bn_release(back);
    }
    free(before);
    /* With the hook armed for another folder, the same save succeeds and replaces the file. */
    setenv("CLBN_IO_FAULT_PATH", "/no-such-folder-clbn/", 1);
    setenv("CLBN_IO_FAULT", "ENOSPC", 1);
    TU_OK(clbn_bn_save(g_new, path));
    disarm();
    clbn_bn *back = NULL;
    uint64_t t = 0;
    TU_OK(clbn_bn_load(g_ctx, path, &back));
    TU_OK(clbn_bn_get_batches_tracked(back, &t));
    assert_int_equal(t, 100);
    clbn_bn_release(back);
}

static void tuning_save_keeps_old_file(void **state) {
    (void)state;
    disarm();
    char path[4096], list0[4096], list1[4096], sub[300];
    TU_OK(clbn_context_save_tuning(g_ctx, path, sizeof path));
    snprintf(sub, sizeof sub, "%s/cache", g_dir);
    size_t n0, n1;
    unsigned char *before = read_whole(path, &n0);
    clbn_tuning t;
    TU_OK(clbn_context_get_tuning(g_ctx, &t, NULL));
    for (int e = 0; e < 3; e++) {
        list_dir(sub, list0, sizeof list0);
        arm(e);
        char got[4096];
        clbn_status st = clbn_context_save_tuning(g_ctx, got, sizeof got);
        expect_io("clbn_context_save_tuning", e, st);
        disarm();
        unsigned char *after = read_whole(path, &n1);
        if (n0 != n1 || memcmp(before, after, n0) != 0)
            fail_msg("%s: the old tuning file changed (%zu -> %zu bytes)", g_errnos[e], n0, n1);
        free(after);
        list_dir(sub, list1, sizeof list1);
        if (strcmp(list0, list1) != 0)
            fail_msg("%s: the cache folder changed: [%s] -> [%s]", g_errnos[e], list0, list1);
        clbn_tuning now;
        TU_OK(clbn_context_get_tuning(g_ctx, &now, NULL));
        assert_memory_equal(&t, &now, sizeof t);
    }
    free(before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_save_keeps_old_file),
        cmocka_unit_test(tuning_save_keeps_old_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
