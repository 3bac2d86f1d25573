/* Shared declarations of the clbn command-line tool: one entry point per subcommand. */
#ifndef CLBN_TOOLS_H
#define CLBN_TOOLS_H

#include <clbn.h>
#include <stdio.h>

/* Exit statuses: 2 is bad input or usage (nothing written, no state changed); 3 an output
 * file (or folder) could not be written (what was there before is left as it was). */
#define CLBN_EXIT_OK 0
#define CLBN_EXIT_FAILURE 1
#define CLBN_EXIT_USAGE 2
#define CLBN_EXIT_IO 3

/* "N,C,H,W" or "N,C" of positive integers (2-D shapes are NC); nonzero when malformed. */
int clbn_tool_parse_shape(const char *v, clbn_shape *s);
/* A decimal int in [lo, hi]; nonzero otherwise. */
int clbn_tool_parse_int(const char *v, int lo, int hi, int *out);

/* An output file written under a temporary name beside path (mkstemp), then flushed, fsync'ed
 * and renamed over path by clbn_tool_out_commit: whatever fails, what was at path stays as it
 * was and no temporary is left. Both return 0, or CLBN_EXIT_IO after one line on stderr that
 * starts with cmd ("clbn bench") and names path and the error. */
typedef struct clbn_tool_out {
    char *tmp;
    const char *path, *cmd;
    FILE *f;
} clbn_tool_out;
int clbn_tool_out_open(clbn_tool_out *o, const char *cmd, const char *path);
int clbn_tool_out_commit(clbn_tool_out *o);
/* Closes and removes the temporary (nothing renamed); a no-op on a closed or unopened o. */
void clbn_tool_out_abort(clbn_tool_out *o);

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
#ifdef CLBN_HAVE_TRAIN
int clbn_cmd_train(int argc, char **argv);
#endif

#endif
