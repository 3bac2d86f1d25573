/* Tuned parameters (clbn_tuning): get and set, ranges refused, the set stored in the cache folder
 * and loaded by later contexts of the same device, driver and limits only, damaged files
 * ignored, plans within a profile's limits whatever the set asks, and outputs that still match
 * the double reference under non-default sets. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "profiles.h"
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The documented defaults (include/clbn.h). */
static const clbn_tuning defaults = {2, 2, 256, 4};
/* A valid set with every field away from its default. */
static const clbn_tuning other = {8, 1, 512, 16};
/* The largest values the ranges allow: the planner must clamp them to the limits. */
static const clbn_tuning extreme = {64, 64, 4096, 64};

static int group_setup(void **state) {
    (void)state;
    clbn_context_release(tu_context()); /* exits 77 (skip) when there is no device */
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* A context on the default device: cache folder dir (NULL: $CLBN_CACHE_DIR ...), limits lim
 * (NULL: the device's). */
static clbn_context *make_context(const char *dir, int disable_cache, int ignore_tuning,
                                  const clbn_limits *lim) {
    clbn_context_options o;
    clbn_context_options_init(&o);
    o.cache_dir = dir;
    o.disable_cache = disable_cache;
    o.ignore_tuning = ignore_tuning;
    if (lim)
        o.limits = *lim;
    clbn_context *ctx = NULL;
    TU_OK(clbn_context_create(&o, &ctx));
    return ctx;
}

/* A context whose set is exactly t (source SET), whatever the cache folder holds. */
static clbn_context *context_with_set(const clbn_limits *lim, const clbn_tuning *t) {
    clbn_context *ctx = make_context(NULL, 0, 1, lim);
    TU_OK(clbn_context_set_tuning(ctx, t));
    return ctx;
}

static void assert_tuning(const clbn_context *ctx, const clbn_tuning *want, int want_source) {
    clbn_tuning got;
    int source = -1;
    TU_OK(clbn_context_get_tuning(ctx, &got, &source));
    if (memcmp(&got, want, sizeof got) != 0 || source != want_source)
        fail_msg("tuning {%u, %u, %u, %u} source %d, expected {%u, %u, %u, %u} source %d",
                 got.cpu_reduce_items_per_cu, got.cpu_elementwise_items_per_cu, got.gpu_work_group,
                 got.gpu_groups_per_cu, source, want->cpu_reduce_items_per_cu,
                 want->cpu_elementwise_items_per_cu, want->gpu_work_group, want->gpu_groups_per_cu,
                 want_source);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

typedef struct folder {
    char dir[64];
} folder;

static int folder_setup(void **state) {
    folder *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/clbn-test-tuning-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int folder_teardown(void **state) {
    folder *f = *state;
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* Stores set t from a context with limits lim in dir; the file's path goes to path. */
static void save_set(const char *dir, const clbn_limits *lim, const clbn_tuning *t, char *path,
                     size_t cap) {
    clbn_context *ctx = make_context(dir, 0, 1, lim);
    TU_OK(clbn_context_set_tuning(ctx, t));
    TU_OK(clbn_context_save_tuning(ctx, path, cap));
    clbn_context_release(ctx);
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    unsigned char *buf = calloc(1, 4097); /* NUL-terminated: the tests search it */
    assert_non_null(buf);
    *n = fread(buf, 1, 4096, f);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const unsigned char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot write %s", path);
    if (n && fwrite(data, 1, n, f) != n)
        fail_msg("cannot write %s", path);
    fclose(f);
}

static clbn_bn *make_bn(clbn_context *ctx, uint64_t channels) {
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = channels;
    clbn_bn *bn = NULL;
    TU_OK(clbn_bn_create(ctx, &o, &bn));
    return bn;
}

/* ---------------------------------------------------------------------------------------- */
/* Get and set                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void new_context_has_documented_defaults(void **state) {
    (void)state;
    clbn_context *ctx = make_context(NULL, 1, 0, NULL);
    assert_tuning(ctx, &defaults, CLBN_TUNING_DEFAULT);
    clbn_tuning t;
    TU_OK(clbn_context_get_tuning(ctx, &t, NULL)); /* the source is optional */
    assert_int_equal(clbn_context_get_tuning(ctx, NULL, NULL), CLBN_ERROR_NULL_ARGUMENT);
    assert_int_equal(clbn_context_get_tuning(NULL, &t, NULL), CLBN_ERROR_NULL_ARGUMENT);
    assert_int_equal(clbn_context_set_tuning(NULL, &other), CLBN_ERROR_NULL_ARGUMENT);
    assert_int_equal(clbn_context_save_tuning(NULL, NULL, 0), CLBN_ERROR_NULL_ARGUMENT);
    clbn_context_release(ctx);
}

static void set_then_get_round_trip(void **state) {
    (void)state;
    clbn_context *ctx = make_context(NULL, 1, 0, NULL);
    TU_OK(clbn_context_set_tuning(ctx, &other));
    assert_tuning(ctx, &other, CLBN_TUNING_SET);
    TU_OK(clbn_context_set_tuning(ctx, &extreme));
    assert_tuning(ctx, &extreme, CLBN_TUNING_SET);
    const clbn_tuning lowest = {1, 1, 1, 1};
    TU_OK(clbn_context_set_tuning(ctx, &lowest));
    assert_tuning(ctx, &lowest, CLBN_TUNING_SET);
    /* zero fields take the defaults */
    const clbn_tuning partial = {4, 0, 0, 8};
    const clbn_tuning filled = {4, 2, 256, 8};
    TU_OK(clbn_context_set_tuning(ctx, &partial));
    assert_tuning(ctx, &filled, CLBN_TUNING_SET);
    clbn_context_release(ctx);
}

static void set_null_restores_defaults(void **state) {
    (void)state;
    clbn_context *ctx = make_context(NULL, 1, 0, NULL);
    TU_OK(clbn_context_set_tuning(ctx, &other));
    TU_OK(clbn_context_set_tuning(ctx, NULL));
    assert_tuning(ctx, &defaults, CLBN_TUNING_DEFAULT);
    clbn_context_release(ctx);
}

static void out_of_range_fields_refused_and_nothing_changes(void **state) {
    (void)state;
    static const struct {
        const char *what;
        clbn_tuning t;
    } bad[] = {
        {"cpu_reduce_items_per_cu 65", {65, 2, 256, 4}},
        {"cpu_elementwise_items_per_cu 65", {2, 65, 256, 4}},
        {"gpu_work_group 4097", {2, 2, 4097, 4}},
        {"gpu_groups_per_cu 65", {2, 2, 256, 65}},
        {"cpu_reduce_items_per_cu 2^32 - 1", {UINT32_MAX, 2, 256, 4}},
        {"gpu_work_group 2^32 - 1 with a valid rest", {8, 1, UINT32_MAX, 16}},
    };
    clbn_context *ctx = make_context(NULL, 1, 0, NULL);
    TU_OK(clbn_context_set_tuning(ctx, &other));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clbn_status st = clbn_context_set_tuning(ctx, &bad[i].t);
        if (st != CLBN_ERROR_INVALID_OPTION)
            fail_msg("%s: %s, expected CLBN_ERROR_INVALID_OPTION", bad[i].what,
                     clbn_status_name(st));
        if (!strstr(clbn_last_error_message(), "tuning."))
            fail_msg("%s: the message \"%s\" names no field", bad[i].what,
                     clbn_last_error_message());
        assert_tuning(ctx, &other, CLBN_TUNING_SET);
    }
    clbn_context_release(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Stored sets                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void saved_set_loads_in_a_new_context(void **state) {
    folder *f = *state;
    char path[1024];
    save_set(f->dir, NULL, &other, path, sizeof path);
    if (strncmp(path, f->dir, strlen(f->dir)) || !strstr(path, "/tuning-") ||
        strcmp(path + strlen(path) - 4, ".txt"))
        fail_msg("the set went to %s, not %s/tuning-*.txt", path, f->dir);
    assert_int_equal(access(path, R_OK), 0);
    clbn_context *ctx = make_context(f->dir, 0, 0, NULL);
    assert_tuning(ctx, &other, CLBN_TUNING_FILE);
    /* the loaded set can be saved again, to the same file */
    char again[1024];
    TU_OK(clbn_context_save_tuning(ctx, again, sizeof again));
    assert_string_equal(again, path);
    clbn_context_release(ctx);
    /* a later save replaces it */
    save_set(f->dir, NULL, &extreme, path, sizeof path);
    ctx = make_context(f->dir, 0, 0, NULL);
    assert_tuning(ctx, &extreme, CLBN_TUNING_FILE);
    clbn_context_release(ctx);
}

static void ignore_tuning_gives_the_defaults(void **state) {
    folder *f = *state;
    char path[1024];
    save_set(f->dir, NULL, &other, path, sizeof path);
    clbn_context *ctx = make_context(f->dir, 0, 1, NULL);
    assert_tuning(ctx, &defaults, CLBN_TUNING_DEFAULT);
    clbn_context_release(ctx);
    /* disable_cache: no folder, so no stored set either */
    ctx = make_context(f->dir, 1, 0, NULL);
    assert_tuning(ctx, &defaults, CLBN_TUNING_DEFAULT);
    clbn_context_release(ctx);
}

static void cache_dir_from_environment_loads_the_set(void **state) {
    folder *f = *state;
    char path[1024];
    save_set(f->dir, NULL, &other, path, sizeof path);
    const char *old = getenv("CLBN_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("CLBN_CACHE_DIR", f->dir, 1);
    clbn_context *ctx = make_context(NULL, 0, 0, NULL);
    if (saved) {
        setenv("CLBN_CACHE_DIR", saved, 1);
        free(saved);
    } else {
        unsetenv("CLBN_CACHE_DIR");
    }
    assert_tuning(ctx, &other, CLBN_TUNING_FILE);
    clbn_context_release(ctx);
}

static int limits_equal(const clbn_limits *a, const clbn_limits *b) {
    return a->max_work_group_size == b->max_work_group_size &&
           a->local_mem_size == b->local_mem_size && a->cache_size == b->cache_size &&
           a->compute_units == b->compute_units && a->vector_width == b->vector_width &&
           a->device_type == b->device_type && a->max_groups_per_dim == b->max_groups_per_dim &&
           a->kernel_work_group_size == b->kernel_work_group_size &&
           a->private_mem_size == b->private_mem_size;
}

/* A set is keyed by the limits in force: one measured under other limits (a profile, fewer
 * compute units) never loads, and one measured under a profile loads under that profile. */
static void set_loads_only_for_the_same_limits(void **state) {
    folder *f = *state;
    char native_path[1024], embedded_path[1024];
    save_set(f->dir, NULL, &other, native_path, sizeof native_path);
    const bench_profile *embedded = bench_profile_find("embedded");
    assert_non_null(embedded);
    const clbn_tuning gpu_set = {2, 2, 64, 8};
    save_set(f->dir, &embedded->limits, &gpu_set, embedded_path, sizeof embedded_path);
    if (!strcmp(native_path, embedded_path))
        fail_msg("native and embedded-profile sets share the file %s", native_path);

    clbn_context *ctx = make_context(f->dir, 0, 0, NULL);
    assert_tuning(ctx, &other, CLBN_TUNING_FILE);
    clbn_limits lim;
    TU_OK(clbn_context_get_limits(ctx, &lim));
    clbn_context_release(ctx);

    ctx = make_context(f->dir, 0, 0, &embedded->limits);
    assert_tuning(ctx, &gpu_set, CLBN_TUNING_FILE);
    clbn_context_release(ctx);

    /* A profile whose limits in force equal the device's own ("cpu" on a CPU device) is the
     * same key; the others are not. */
    static const char *const others[] = {"nvidia", "amd", "intel-igpu", "cpu"};
    size_t refused = 0;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const bench_profile *p = bench_profile_find(others[i]);
        assert_non_null(p);
        ctx = make_context(f->dir, 0, 0, &p->limits);
        clbn_limits in_force;
        TU_OK(clbn_context_get_limits(ctx, &in_force));
        const int same = limits_equal(&in_force, &lim);
        clbn_tuning t;
        int source = -1;
        TU_OK(clbn_context_get_tuning(ctx, &t, &source));
        if (source != (same ? CLBN_TUNING_FILE : CLBN_TUNING_DEFAULT))
            fail_msg("profile %s (limits in force %s the device's): source %d", others[i],
                     same ? "equal to" : "unlike", source);
        refused += !same;
        clbn_context_release(ctx);
    }
    assert_true(refused >= 3);

    clbn_limits fewer;
    memset(&fewer, 0, sizeof fewer);
    fewer.compute_units = lim.compute_units + 3;
    ctx = make_context(f->dir, 0, 0, &fewer);
    assert_tuning(ctx, &defaults, CLBN_TUNING_DEFAULT);
    clbn_context_release(ctx);
}

/* A damaged file is ignored (the defaults), and the context is still created. */
static void damaged_file_ignored(void **state) {
    folder *f = *state;
    char path[1024];
    save_set(f->dir, NULL, &other, path, sizeof path);
    size_t n = 0;
    unsigned char *good = read_file(path, &n);
    assert_true(n > 40);
    unsigned char *bad = malloc(n + 64);
    assert_non_null(bad);
    /* the offset of "512" (gpu_work_group) in the file */
    const char *wg = strstr((const char *)good, "gpu_work_group 512");
    assert_non_null(wg);
    const size_t at_value = (size_t)(wg - (const char *)good) + strlen("gpu_work_group ");
    enum { FLIP_VALUE, FLIP_FIRST, FLIP_LAST, TRUNCATE_HALF, DROP_CHECKSUM, EMPTY, GARBAGE, KINDS };
    static const char *const names[KINDS] = {"a value's digit changed", "the first byte flipped",
                                             "the last byte flipped",   "truncated to half",
                                             "the checksum line cut",   "empty",
                                             "not a tuning file"};
    for (int kind = 0; kind < KINDS; kind++) {
        size_t len = n;
        memcpy(bad, good, n);
        switch (kind) {
        case FLIP_VALUE:
            bad[at_value] = '2'; /* 512 -> 212: in range, only the checksum tells */
            break;
        case FLIP_FIRST:
            bad[0] ^= 0x01;
            break;
        case FLIP_LAST:
            bad[n - 2] ^= 0x01; /* a checksum digit (the last byte is the newline) */
            break;
        case TRUNCATE_HALF:
            len = n / 2;
            break;
        case DROP_CHECKSUM:
            len = (size_t)(strstr((const char *)good, "checksum ") - (const char *)good);
            break;
        case EMPTY:
            len = 0;
            break;
        default:
            len = (size_t)snprintf((char *)bad, n + 64, "cpu_reduce_items_per_cu 8\n");
            break;
        }
        write_file(path, bad, len);
        clbn_context_options o;
        clbn_context_options_init(&o);
        o.cache_dir = f->dir;
        clbn_context *ctx = NULL;
        clbn_status st = clbn_context_create(&o, &ctx);
        if (st != CLBN_SUCCESS)
            fail_msg("%s: clbn_context_create failed: %s: %s", names[kind], clbn_status_name(st),
                     clbn_last_error_message());
        clbn_tuning t;
        int source = -1;
        TU_OK(clbn_context_get_tuning(ctx, &t, &source));
        if (source != CLBN_TUNING_DEFAULT || memcmp(&t, &defaults, sizeof t))
            fail_msg("%s: the damaged file was loaded (source %d, gpu_work_group %u)", names[kind],
                     source, t.gpu_work_group);
        clbn_context_release(ctx);
    }
    /* the good file loads again: the test damaged only what it meant to */
    write_file(path, good, n);
    clbn_context *ctx = make_context(f->dir, 0, 0, NULL);
    assert_tuning(ctx, &other, CLBN_TUNING_FILE);
    clbn_context_release(ctx);
    free(bad);
    free(good);
}

static void save_without_a_cache_folder_is_io_error(void **state) {
    (void)state;
    clbn_context *ctx = make_context(NULL, 1, 0, NULL);
    TU_OK(clbn_context_set_tuning(ctx, &other));
    char path[256] = "unchanged";
    assert_int_equal(clbn_context_save_tuning(ctx, path, sizeof path), CLBN_ERROR_IO);
    assert_string_equal(path, "unchanged");
    clbn_context_release(ctx);
    /* a folder that cannot be made: below a regular file */
    ctx = make_context("/dev/null/clbn-tuning", 0, 0, NULL);
    assert_int_equal(clbn_context_save_tuning(ctx, NULL, 0), CLBN_ERROR_IO);
    clbn_context_release(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Plans and outputs                                                                        */
/* ---------------------------------------------------------------------------------------- */

static const clbn_shape plan_shapes[] = {
    {CLBN_LAYOUT_NCHW, 32, 64, 56, 56}, {CLBN_LAYOUT_NHWC, 32, 64, 56, 56},
    {CLBN_LAYOUT_NCHW, 4, 2, 128, 128}, {CLBN_LAYOUT_NHWC, 4, 2, 128, 128},
    {CLBN_LAYOUT_NC, 256, 1024, 1, 1},  {CLBN_LAYOUT_NCHW, 128, 2048, 7, 7},
    {CLBN_LAYOUT_NHWC, 3, 5, 7, 11},    {CLBN_LAYOUT_NCHW, 1, 1, 4100, 4100},
};
#define PLAN_SHAPES (sizeof plan_shapes / sizeof plan_shapes[0])
static const clbn_op plan_ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER,
                                   CLBN_OP_FORWARD_FROZEN, CLBN_OP_BACKWARD,
                                   CLBN_OP_BACKWARD_FROZEN};
#define PLAN_OPS (sizeof plan_ops / sizeof plan_ops[0])

/* Whatever the set asks, every plan keeps within the limits in force. */
static void extreme_set_plans_within_profile_limits(void **state) {
    (void)state;
    static const char *const profiles[] = {"nvidia", "embedded", NULL /* the device's own */};
    const clbn_tuning lowest = {1, 1, 1, 1};
    const clbn_tuning *sets[] = {&extreme, &lowest};
    for (size_t pi = 0; pi < sizeof profiles / sizeof profiles[0]; pi++) {
        const bench_profile *prof = profiles[pi] ? bench_profile_find(profiles[pi]) : NULL;
        for (size_t si = 0; si < 2; si++) {
            clbn_context *ctx = context_with_set(prof ? &prof->limits : NULL, sets[si]);
            clbn_limits lim;
            TU_OK(clbn_context_get_limits(ctx, &lim));
            for (size_t s = 0; s < PLAN_SHAPES; s++) {
                clbn_bn *bn = make_bn(ctx, plan_shapes[s].c);
                for (size_t o = 0; o < PLAN_OPS; o++) {
                    clbn_plan p;
                    TU_OK(clbn_bn_query_plan(bn, plan_ops[o], &plan_shapes[s], &p));
                    const uint64_t gmax1 = lim.max_groups_per_dim ? lim.max_groups_per_dim : 65535;
                    if (p.work_group_size == 0 || p.work_group_size > lim.max_work_group_size ||
                        p.local_bytes > lim.local_mem_size || p.groups[1] > gmax1)
                        fail_msg("profile %s, set {%u, %u, %u, %u}, %s %llux%llux%llux%llu op "
                                 "%d: work-group %zu (limit %zu), local %llu B (limit %llu), "
                                 "groups[1] %llu (limit %llu)",
                                 profiles[pi] ? profiles[pi] : "native",
                                 sets[si]->cpu_reduce_items_per_cu,
                                 sets[si]->cpu_elementwise_items_per_cu, sets[si]->gpu_work_group,
                                 sets[si]->gpu_groups_per_cu,
                                 ref_layout_name(plan_shapes[s].layout),
                                 (unsigned long long)plan_shapes[s].n,
                                 (unsigned long long)plan_shapes[s].c,
                                 (unsigned long long)plan_shapes[s].h,
                                 (unsigned long long)plan_shapes[s].w, (int)plan_ops[o],
                                 p.work_group_size, lim.max_work_group_size,
                                 (unsigned long long)p.local_bytes,
                                 (unsigned long long)lim.local_mem_size,
                                 (unsigned long long)p.groups[1], (unsigned long long)gmax1);
                }
                clbn_bn_release(bn);
            }
            clbn_context_release(ctx);
        }
    }
}

static int plans_equal(const clbn_plan *a, const clbn_plan *b) {
    return a->strategy == b->strategy && a->work_group_size == b->work_group_size &&
           a->split == b->split && a->groups[0] == b->groups[0] && a->groups[1] == b->groups[1];
}

/* The set is used: planned as a CPU (the "cpu" profile) and as a GPU (the "nvidia" profile),
 * two sets give different plans for some shape. */
static void set_changes_the_plans(void **state) {
    (void)state;
    static const struct {
        const char *profile;
        clbn_tuning a, b;
    } rows[] = {
        {"cpu", {1, 1, 256, 4}, {8, 8, 256, 4}},
        {"nvidia", {2, 2, 64, 2}, {2, 2, 512, 16}},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        const bench_profile *prof = bench_profile_find(rows[r].profile);
        assert_non_null(prof);
        clbn_context *ca = context_with_set(&prof->limits, &rows[r].a);
        clbn_context *cb = context_with_set(&prof->limits, &rows[r].b);
        size_t differ = 0;
        for (size_t s = 0; s < PLAN_SHAPES; s++) {
            clbn_bn *ba = make_bn(ca, plan_shapes[s].c), *bb = make_bn(cb, plan_shapes[s].c);
            for (size_t o = 0; o < PLAN_OPS; o++) {
                clbn_plan pa, pb;
                TU_OK(clbn_bn_query_plan(ba, plan_ops[o], &plan_shapes[s], &pa));
                TU_OK(clbn_bn_query_plan(bb, plan_ops[o], &plan_shapes[s], &pb));
                differ += !plans_equal(&pa, &pb);
            }
            clbn_bn_release(ba);
            clbn_bn_release(bb);
        }
        print_message("      profile %s: %zu of %zu plans differ between the two sets\n",
                      rows[r].profile, differ, PLAN_SHAPES * PLAN_OPS);
        if (differ == 0)
            fail_msg("profile %s: the two sets gave the same plans everywhere", rows[r].profile);
        clbn_context_release(ca);
        clbn_context_release(cb);
    }
}

/* Outputs under non-default sets still match the double reference. */
static void outputs_correct_with_tuned_sets(void **state) {
    (void)state;
    static const struct {
        const char *profile; /* NULL: the device's own limits */
        clbn_tuning t;
    } rows[] = {
        {NULL, {1, 1, 64, 2}},      {NULL, {8, 8, 512, 16}},
        {NULL, {64, 64, 4096, 64}}, {"embedded", {64, 64, 4096, 64}},
        {"nvidia", {2, 2, 64, 16}},
    };
    static const clbn_shape shapes[] = {
        {CLBN_LAYOUT_NCHW, 3, 5, 7, 11},    {CLBN_LAYOUT_NHWC, 2, 20, 6, 6},
        {CLBN_LAYOUT_NC, 60, 100, 1, 1},    {CLBN_LAYOUT_NCHW, 4, 2, 128, 128},
        {CLBN_LAYOUT_NHWC, 4, 2, 128, 128},
    };
    static const clbn_op ops[] = {CLBN_OP_FORWARD_TRAIN, CLBN_OP_FORWARD_INFER, CLBN_OP_BACKWARD};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        const bench_profile *prof = rows[r].profile ? bench_profile_find(rows[r].profile) : NULL;
        clbn_context *ctx = context_with_set(prof ? &prof->limits : NULL, &rows[r].t);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
                ref_case k;
                memset(&k, 0, sizeof k);
                k.op = ops[o];
                k.shape = shapes[s];
                k.flags = CLBN_BN_FLAGS_DEFAULT;
                k.seed = 7000 + 100 * r + 10 * s + o;
                ref_check_case(ctx, &k, &ref_default_tolerances, NULL);
            }
        clbn_context_release(ctx);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_context_has_documented_defaults),
        cmocka_unit_test(set_then_get_round_trip),
        cmocka_unit_test(set_null_restores_defaults),
        cmocka_unit_test(out_of_range_fields_refused_and_nothing_changes),
        cmocka_unit_test_setup_teardown(saved_set_loads_in_a_new_context, folder_setup,
                                        folder_teardown),
        cmocka_unit_test_setup_teardown(ignore_tuning_gives_the_defaults, folder_setup,
                                        folder_teardown),
        cmocka_unit_test_setup_teardown(cache_dir_from_environment_loads_the_set, folder_setup,
                                        folder_teardown),
        cmocka_unit_test_setup_teardown(set_loads_only_for_the_same_limits, folder_setup,
                                        folder_teardown),
        cmocka_unit_test_setup_teardown(damaged_file_ignored, folder_setup, folder_teardown),
        cmocka_unit_test(save_without_a_cache_folder_is_io_error),
        cmocka_unit_test(extreme_set_plans_within_profile_limits),
        cmocka_unit_test(set_changes_the_plans),
        cmocka_unit_test(outputs_correct_with_tuned_sets),
    };
    return cmocka_run_group_tests_name("tuning", tests, group_setup, NULL);
}
