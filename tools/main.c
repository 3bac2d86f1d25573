/* The `clbn` command: dispatches to one subcommand per source file (cmd_*.c). */
#include "tools.h"

#include <clbn.h>
#include <stdio.h>
#include <string.h>

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
