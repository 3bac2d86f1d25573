/* The `clbn` command: dispatches to one subcommand per source file (cmd_*.c). */
#include "tools.h"

#include <clbn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct clbn_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} clbn_command;

static const clbn_command commands[] = {
    {"devices", clbn_cmd_devices, "list every OpenCL platform and device with its limits"},
    {"run", clbn_cmd_run, "apply one batch-norm op (train, infer, backward) to .npy files"},
#ifdef CLBN_HAVE_BENCH
    {"bench", clbn_cmd_bench, "measure the speed of each op (prints figures)"},
#endif
#ifdef CLBN_HAVE_VALIDATE
    {"validate", clbn_cmd_validate, "check every op against the reference on devices and profiles"},
#endif
#ifdef CLBN_HAVE_TUNE
    {"tune", clbn_cmd_tune, "measure candidate parameters on the device and store the fastest"},
#endif
#ifdef CLBN_HAVE_TRAIN
    {"train", clbn_cmd_train, "train a network with and without batch norm (CLBlast + clbn)"},
#endif
};

static void usage(FILE *out) {
    fprintf(out, "usage: clbn <command> [options]\n"
                 "\n"
                 "Batch normalization on any OpenCL device.\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n"
                 "clbn <command> --help describes a command; clbn --version prints the version.\n"
                 "The device is chosen by --device SEL or $CLBN_DEVICE: gpu, cpu, P:D (platform\n"
                 "and device index, as `clbn devices` lists them) or a substring of its name.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLBN_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return CLBN_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("clbn %s\n", clbn_version_string());
        return CLBN_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "clbn: unknown command '%s' (clbn --help lists them)\n", name);
    return CLBN_EXIT_USAGE;
}

/* "N,C,H,W" or "N,C" of positive integers; 2-D shapes are NC. Nonzero when malformed. */
int clbn_tool_parse_shape(const char *v, clbn_shape *s) {
    unsigned long long d[4] = {1, 1, 1, 1};
    int k = 0;
    const char *p = v;
    while (k < 4) {
        if (*p < '0' || *p > '9')
            return 1;
        errno = 0;
        char *end;
        d[k++] = strtoull(p, &end, 10);
        if (errno || d[k - 1] == 0 || d[k - 1] > (1ull << 40))
            return 1;
        p = end;
        if (*p == '\0')
            break;
        if (*p++ != ',')
            return 1;
    }
    if (*p != '\0' || (k != 2 && k != 4))
        return 1;
    *s = (clbn_shape){k == 2 ? CLBN_LAYOUT_NC : CLBN_LAYOUT_NCHW, d[0], d[1], d[2], d[3]};
    return 0;
}

int clbn_tool_parse_int(const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return 1;
    *out = (int)x;
    return 0;
}

int clbn_tool_out_open(clbn_tool_out *o, const char *cmd, const char *path) {
    o->path = path;
    o->cmd = cmd;
    o->f = NULL;
    size_t n = strlen(path) + sizeof ".tmp-XXXXXX";
    o->tmp = malloc(n);
    if (!o->tmp) {
        fprintf(stderr, "%s: cannot write %s: out of host memory\n", cmd, path);
        return CLBN_EXIT_IO;
    }
    snprintf(o->tmp, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd >= 0 && !(o->f = fdopen(fd, "wb"))) {
        int e = errno;
        close(fd);
        unlink(o->tmp);
        errno = e;
    }
    if (!o->f) {
        fprintf(stderr, "%s: cannot write %s: %s\n", cmd, path, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return CLBN_EXIT_IO;
    }
    return 0;
}

int clbn_tool_out_commit(clbn_tool_out *o) {
    errno = 0;
    int bad = ferror(o->f) || fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    int e = errno;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (!bad && rename(o->tmp, o->path) == 0) {
        free(o->tmp);
        o->tmp = NULL;
        return 0;
    }
    e = errno ? errno : e ? e : EIO;
    fprintf(stderr, "%s: cannot write %s: %s\n", o->cmd, o->path, strerror(e));
    clbn_tool_out_abort(o);
    return CLBN_EXIT_IO;
}

void clbn_tool_out_abort(clbn_tool_out *o) {
    if (o->f)
        fclose(o->f);
    o->f = NULL;
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
}
