#!/usr/bin/env python3
"""make_corpus.py - writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/).

Each seed is a small file in the format its target reads (see each fuzz_*.c for the leading
mode or flag bytes), written from the formats' specifications: valid files of several shapes
and options, and a few damaged ones that stop at each check. Deterministic: running it again
gives the same bytes. Usage: make_corpus.py [OUT_DIR] (default: corpus/ next to this file)."""
import gzip
import os
import struct
import sys
import zlib

out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")


def put(target, name, data):
    d = os.path.join(out_root, target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 8192, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)  # mtime 0: the same bytes every time


# ---- .npy (fuzz_npy: the file itself) -------------------------------------------------------
def npy(shape, values, descr="<f4", fortran=False, version=(1, 0), raw=None):
    shp = "(" + "".join("%d," % s for s in shape) + ")" if len(shape) == 1 else \
        "(" + ", ".join(str(s) for s in shape) + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", shp)
    lenfmt = "<H" if version[0] == 1 else "<I"
    pre = 6 + 2 + struct.calcsize(lenfmt)
    pad = 64 - (pre + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    endian = ">" if descr.startswith(">") else "<"
    body = raw if raw is not None else struct.pack(endian + "%df" % len(values), *values)
    return b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(header)) + header.encode() + body


put("fuzz_npy", "scalar.npy", npy((), [1.5]))
put("fuzz_npy", "vector3.npy", npy((3,), [1, -2, 3.25]))
put("fuzz_npy", "matrix2x3.npy", npy((2, 3), [0, 1, 2, 3, 4, 5]))
put("fuzz_npy", "nchw_2x3x2x2.npy", npy((2, 3, 2, 2), [i * 0.5 for i in range(24)]))
put("fuzz_npy", "empty_0x4.npy", npy((0, 4), []))
put("fuzz_npy", "fortran_2x3.npy", npy((2, 3), [0, 3, 1, 4, 2, 5], fortran=True))
put("fuzz_npy", "bigendian_4.npy", npy((4,), [1, 2, 3, 4], descr=">f4"))
put("fuzz_npy", "v2_header.npy", npy((2, 2), [1, 2, 3, 4], version=(2, 0)))
put("fuzz_npy", "v3_header.npy", npy((2,), [7, 8], version=(3, 0)))
put("fuzz_npy", "float64_refused.npy", npy((2,), [], descr="<f8", raw=struct.pack("<2d", 1, 2)))
put("fuzz_npy", "truncated_data.npy", npy((4,), [1, 2, 3, 4])[:-6])
put("fuzz_npy", "trailing_data.npy", npy((2,), [1, 2]) + b"\0\0\0\0")
put("fuzz_npy", "bad_magic.npy", b"\x93NUMPZ" + npy((1,), [1])[6:])


# ---- IDX (fuzz_idx: flags, label bound, 16-bit images length, images, labels) ---------------
def idx_images(count, rows, cols, pixels=None):
    pixels = pixels if pixels is not None else bytes((i * 37) % 256 for i in range(count * rows * cols))
    return struct.pack(">IIII", 0x803, count, rows, cols) + pixels


def idx_labels(labels):
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def idx_input(images, labels, flags=0, max_label=10):
    return bytes([flags, max_label]) + struct.pack("<H", len(images)) + images + labels


im = idx_images(2, 2, 3)
lb = idx_labels([3, 9])
put("fuzz_idx", "plain_2x2x3", idx_input(im, lb))
put("fuzz_idx", "gzip_both", idx_input(im, lb, flags=3))
put("fuzz_idx", "gzip_images_only", idx_input(im, lb, flags=1))
put("fuzz_idx", "pre_gzipped", idx_input(gz(im), gz(lb)))  # gzip bytes as the files hold them
put("fuzz_idx", "gzip_cut", idx_input(gz(im)[:-5], lb))
put("fuzz_idx", "mnist_like_3x28x28", idx_input(idx_images(3, 28, 28, bytes(3 * 784)), idx_labels([0, 1, 2]), flags=1))
put("fuzz_idx", "label_count_mismatch", idx_input(im, idx_labels([1])))
put("fuzz_idx", "label_out_of_range", idx_input(im, idx_labels([1, 10])))
put("fuzz_idx", "truncated_images", idx_input(im[:-2], lb))
put("fuzz_idx", "trailing_labels", idx_input(im, lb + b"x"))
put("fuzz_idx", "swapped_magic", idx_input(lb, im))
put("fuzz_idx", "huge_dimensions", idx_input(struct.pack(">IIII", 0x803, 0x8000, 0x100, 0x100), lb))
put("fuzz_idx", "no_labels_file", idx_input(im, b"", flags=4))


# ---- state files (fuzz_state: mode byte, then the file) -------------------------------------
def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def state(C, eps=1e-5, factor=0.1, flags=7, act=0, t=0, version=1, header=48, fix=True):
    head = b"CLBNSTAT" + struct.pack("<IIQffIIQ", version, header, C, eps, factor, flags, act, t)
    body = b"".join(struct.pack("<%df" % C, *[(v + 1) * 0.25 + c for c in range(C)]) for v in range(8))
    data = head + body
    return data + struct.pack("<Q", fnv1a64(data) if fix else 0)


put("fuzz_state", "c1_default", b"\0" + state(1))
put("fuzz_state", "c3_relu_t5", b"\0" + state(3, act=1, t=5))
put("fuzz_state", "c16_all_flags_sigmoid", b"\0" + state(16, flags=0x1f, act=2, t=1 << 40))
put("fuzz_state", "c2_no_flags", b"\0" + state(2, flags=0, factor=1.0))
put("fuzz_state", "fix_bad_eps", b"\1" + state(2, eps=-1.0))
put("fuzz_state", "fix_bad_flags", b"\1" + state(2, flags=0x20))
put("fuzz_state", "fix_bad_activation", b"\1" + state(2, act=3))
put("fuzz_state", "fix_newer_version", b"\1" + state(1, version=2))
put("fuzz_state", "fix_header_size", b"\1" + state(1, header=56))
put("fuzz_state", "fix_huge_channels", b"\1" + state(1)[:16] + struct.pack("<Q", 1 << 41) + state(1)[24:])
put("fuzz_state", "bad_checksum", b"\0" + state(2, fix=False))
put("fuzz_state", "truncated", b"\0" + state(2)[:30])
put("fuzz_state", "magic_only", b"\0" + b"CLBNST")
put("fuzz_state", "text", b"\0This is not a clbn state file.\n")


# ---- weights files (fuzz_weights: mode byte, then the file) ---------------------------------
def weights(sizes, bn=0, act=1, version=1, fix=True):
    layers = len(sizes) - 1
    data = b"CLBNWTS\0" + struct.pack("<IIII", version, layers, bn, act)
    data += struct.pack("<%dI" % len(sizes), *sizes)
    k = 0
    for l in range(1, layers + 1):
        n = sizes[l - 1] * sizes[l]
        data += struct.pack("<%df" % n, *[(k + i) * 0.01 for i in range(n)])
        k += n
        if not bn or l == layers:
            data += struct.pack("<%df" % sizes[l], *[-0.5] * sizes[l])
    return data + struct.pack("<I", zlib.crc32(data) if fix else 0)


put("fuzz_weights", "plain_2_3_2_relu", b"\0" + weights([2, 3, 2]))
put("fuzz_weights", "bn_4_5_5_3_sigmoid", b"\0" + weights([4, 5, 5, 3], bn=1, act=2))
put("fuzz_weights", "bn_8layers", b"\0" + weights([3, 2, 2, 2, 2, 2, 2, 2, 4], bn=1))
put("fuzz_weights", "plain_1_1_1", b"\0" + weights([1, 1, 1], act=2))
put("fuzz_weights", "fix_one_layer", b"\1" + weights([2, 2]))
put("fuzz_weights", "fix_bad_activation", b"\1" + weights([2, 3, 2], act=0))
put("fuzz_weights", "fix_bad_bn", b"\1" + weights([2, 3, 2], bn=2))
put("fuzz_weights", "fix_newer_version", b"\1" + weights([2, 3, 2], version=2))
put("fuzz_weights", "fix_zero_size", b"\1" + weights([2, 0, 2]))
put("fuzz_weights", "fix_size_mismatch", b"\1" + weights([2, 3, 2])[:-12] + b"\0" * 4)
put("fuzz_weights", "bad_crc", b"\0" + weights([2, 3, 2], fix=False))
put("fuzz_weights", "truncated", b"\0" + weights([2, 3, 2])[:20])


# ---- program-cache entries (fuzz_cache: mode byte, then the entry) --------------------------
def cache(body, fix=True):
    return b"CLBNBIN1" + struct.pack("<QQ", len(body) if fix else len(body) + 1,
                                     fnv1a64(body) if fix else 0) + body


put("fuzz_cache", "small_binary", b"\0" + cache(b"\x7fELF" + bytes(range(60))))
put("fuzz_cache", "one_byte", b"\0" + cache(b"B"))
put("fuzz_cache", "text_body", b"\0" + cache(b"kernel void k(global float *x) { x[0] = 1; }\n"))
put("fuzz_cache", "fix_length_and_sum", b"\1" + cache(bytes(100), fix=False))
put("fuzz_cache", "bad_length", b"\0" + cache(bytes(32), fix=False))
put("fuzz_cache", "header_only", b"\0" + b"CLBNBIN1" + bytes(16))
put("fuzz_cache", "foreign", b"\0" + b"CLBNBIN2" + bytes(40))


# ---- argument checks (fuzz_args: see its decoder) ------------------------------------------
# head: context (head % 3) and state ((head / 3) % 6: C = 1, 2, 3, 16, 64, 1000). Then calls:
# an op byte (which % 12), then that call's bytes. Small values are "v << 3" (selector 0).
def small(v):
    assert v < 32
    return v << 3


def shape(layout=0, n=2, h_sel=0):
    # selector: layout in bits 0-1, c = the state's, n as a small value, h, w from bits 4-7
    return bytes([layout | (h_sel << 4), small(n)])


def data_exact(slot):
    return bytes([slot << 2])  # offset 0, exactly the shape's size, fake buffer `slot`


def op(which, shp, nulls=0, extra=b"", queue=0, waits=0):
    # which: 0 train, 1 infer, 2 frozen, 3 backward, 4 backward frozen
    bufs = data_exact(0) + data_exact(1)
    if which >= 3:
        bufs += data_exact(2) + data_exact(3)
    return bytes([which]) + shp + bytes([nulls]) + bufs + extra + bytes([queue, waits])


def head(ctx, st):
    return bytes([ctx + 3 * st])


for ctx in range(3):
    for st, C in ((3, 16), (5, 1000)):
        name = "ctx%d_c%d" % (ctx, C)
        put("fuzz_args", name + "_train_nchw", head(ctx, st) + op(0, shape(0, 4, 5)))
        put("fuzz_args", name + "_infer_nhwc", head(ctx, st) + op(1, shape(1, 3, 6)))
        put("fuzz_args", name + "_backward_nc", head(ctx, st) + op(3, shape(2, 8)))
put("fuzz_args", "frozen_nchw", head(0, 0) + op(2, shape(0, 2, 3)) + op(4, shape(0, 2, 3)))
put("fuzz_args", "train_saved_stats",
    head(0, 3) + op(0, shape(0, 2, 1), nulls=2, extra=data_exact(2) + data_exact(3)))
put("fuzz_args", "train_fake_queue_waits",
    head(1, 4) + op(0, shape(1, 2, 2), queue=5, waits=2 | (1 << 2)) + b"\x01")
put("fuzz_args", "plans_and_scratch",
    head(0, 5) + bytes([6]) + shape(0, 2, 7) + bytes([3 << 3]) + bytes([7]) + shape(1, 9) + b"\0")
put("fuzz_args", "vectors",
    head(2, 2) + bytes([8]) + b"\x04" + bytes([8 | 0x10]) + b"\x06" + bytes([8]) + b"\x13")
put("fuzz_args", "create_then_train",
    head(0, 0) + bytes([10, 0x10, small(7), 0x1f]) + op(0, shape(0, 3, 2)))
put("fuzz_args", "misc_tuning_fold_reset",
    head(0, 3) + bytes([9, 0 << 1]) + bytes([9, 2 << 1]) + bytes([9, 4 << 1, small(4), small(2),
                                                                   small(8), small(3)]))
put("fuzz_args", "switch_states", head(0, 0) + bytes([11 | (2 << 4), 4]) + op(1, shape(0, 5, 1)))
put("fuzz_args", "bad_layout_and_overflow",
    head(0, 1) + bytes([0, 3, 0x7f]) + bytes([0 | 8, 6 << 0, 6, 6, 0]) + bytes([0, 0, 0, 0]))
