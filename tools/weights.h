/* weights.h - the weights file of `clbn train --save` (weights.clbnw): its format, a parser
 * from memory (also run by the fuzz target), an encoder and the file reader. */
#ifndef CLBN_TOOLS_WEIGHTS_H
#define CLBN_TOOLS_WEIGHTS_H

#include "train_net.h"

#include <stddef.h>

/* The format: "CLBNWTS\0", then little-endian u32s: version (1), layers, bn (0 or 1),
 * activation (relu or sigmoid), sizes[0..layers]; then per layer l = 1..layers W_l
 * (sizes[l-1] x sizes[l] floats) and, where the layer has one (no batch norm, or the output
 * layer), b_l (sizes[l] floats), little-endian; then the CRC-32 of everything before it. */
#define WEIGHTS_VERSION 1u
#define WEIGHTS_MAX_SIZE (1u << 20) /* the largest layer size a file may announce */

/* Parses a whole weights file held in memory: 0 with *cfg set (layers, sizes, bn, act; every
 * other field 0) and W[l-1], b[l-1] malloc'd for l = 1..layers (b NULL where the layer has
 * none); 2 (bad input) or 1 (out of memory) with *why a static message, and then nothing is
 * allocated (W and b are set to NULL for every layer). W and b hold TN_MAX_LAYERS entries. */
int weights_parse(const unsigned char *buf, size_t size, tn_config *cfg, float **W, float **b,
                  const char **why);

/* Encodes cfg (layers, sizes, bn, act) and the arrays W, b (as weights_parse returns them; b
 * is read only where the layer has one) into a malloc'd buffer *out of *len bytes: 0, or 1 out
 * of memory or a config weights_parse would refuse. */
int weights_encode(const tn_config *cfg, const float *const *W, const float *const *b,
                   unsigned char **out, size_t *len);

/* Reads path and parses it: 0, or 2 after printing "clbn train: PATH: why" (missing,
 * unreadable, truncated, corrupt or foreign file), or 1 out of memory (message printed). */
int weights_read(const char *path, tn_config *cfg, float **W, float **b);

/* Frees what weights_parse allocated (TN_MAX_LAYERS entries each) and sets them to NULL. */
void weights_free(float **W, float **b);

#endif
