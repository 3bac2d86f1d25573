/* onednn.h — oneDNN's batch norm, measured by `clbn bench` next to clbn's (built only with
 * CLBN_HAVE_DNNL, when libdnnl-dev is present). oneDNN's OpenMP threads spin between calls and
 * would take the cores an OpenCL CPU driver needs, so it runs in a child process started with
 * OMP_WAIT_POLICY=passive: the tool re-executes itself with a hidden option. */
#ifndef CLBN_BENCH_ONEDNN_H
#define CLBN_BENCH_ONEDNN_H

#include <clbn.h>
#include <stddef.h>

/* The hidden option that makes `clbn bench` the child:
 * clbn bench --onednn-child N,C,H,W nchw|nhwc|nc RUNS WARMUP FLUSH_MIB
 * It prints one line: the median seconds of forward training, forward inference, backward. */
#define BENCH_ONEDNN_CHILD_OPTION "--onednn-child"

/* In the child: times the three ops (interleaved run by run) on shape s in oneDNN's layout
 * nhwc (0: nchw, or nc for a 2-D shape), fp32, and writes their medians in seconds; with
 * flush_bytes, each timed call follows a read of that much host memory on every core (the
 * bench's cold cache, see flush.h). Nonzero with a message on stderr on failure. */
int bench_onednn_measure(const clbn_shape *s, int nhwc, int runs, int warmup, size_t flush_bytes,
                         double median[3]);

/* In the parent: runs the child (/proc/self/exe) with OMP_WAIT_POLICY=passive added to this
 * environment and reads the three medians back. Nonzero on failure. */
int bench_onednn_spawn(const clbn_shape *s, int nhwc, int runs, int warmup, size_t flush_bytes,
                       double median[3]);

#endif
