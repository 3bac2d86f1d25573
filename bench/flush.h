/* flush.h — a cold cache before every timed call of `clbn bench` (--cache cold, the default).
 * A tensor of 25.7 MB fits in the 32 MB last-level cache of one of today's server CPU dies, so
 * without it every figure depends on what ran just before: an op that follows another op on the
 * same x reads x from the cache and beats the memory; a copy that follows a copy too. Before
 * each timed call, clbn's, a copy's, the baseline's and oneDNN's alike, the bench reads a buffer
 * several times the cache on the device (and, in oneDNN's child, on the host), so that the call
 * meets a cache holding none of its tensors and no dirty line of the previous call to write
 * back. */
#ifndef CLBN_BENCH_FLUSH_H
#define CLBN_BENCH_FLUSH_H

#include <clbn.h>
#include <stddef.h>

/* Bytes read to flush a cache of cache_bytes: twice it, at least 64 MiB, at most 256 MiB, and
 * no more than max_alloc (the device's largest buffer; 0: no limit). */
size_t bench_flush_bytes(uint64_t cache_bytes, uint64_t max_alloc);

typedef struct bench_flush {
    cl_command_queue queue;
    cl_program program;
    cl_kernel kernel;
    cl_mem buf, sink;
    size_t global;
    int cpu; /* one item per group, blocks; else the driver's groups, interleaved */
} bench_flush;

/* Builds the read kernel and a buffer of `bytes` on the context's device. Nonzero on failure,
 * with a message on stderr naming the OpenCL call and its error (and the build log). */
int bench_flush_init(bench_flush *f, clbn_context *ctx, size_t bytes);
/* Reads the whole buffer and waits for it. Returns an OpenCL status. */
cl_int bench_flush_run(bench_flush *f);
void bench_flush_release(bench_flush *f);

/* The host's flush (oneDNN's child): reads `bytes` of host memory on every core. */
typedef struct bench_host_flush {
    float *buf;
    size_t n;
    unsigned threads;
} bench_host_flush;

int bench_host_flush_init(bench_host_flush *f, size_t bytes);
void bench_host_flush_run(bench_host_flush *f);
void bench_host_flush_release(bench_host_flush *f);

#endif
