/* Shared declarations of the clbn command-line tool: one entry point per subcommand. */
#ifndef CLBN_TOOLS_H
#define CLBN_TOOLS_H

/* Exit statuses: 2 is bad input or usage (nothing written, no state changed). */
#define CLBN_EXIT_OK 0
#define CLBN_EXIT_FAILURE 1
#define CLBN_EXIT_USAGE 2

/* Each takes the arguments after the subcommand's name (argv[0] is the subcommand). */
int clbn_cmd_devices(int argc, char **argv);
int clbn_cmd_run(int argc, char **argv);
#ifdef CLBN_HAVE_BENCH
int clbn_cmd_bench(int argc, char **argv);
#endif
#ifdef CLBN_HAVE_VALIDATE
int clbn_cmd_validate(int argc, char **argv);
#endif
#ifdef CLBN_HAVE_TUNE
int clbn_cmd_tune(int argc, char **argv);
#endif

#endif
