/* The .npy reader and writer of the clbn tool. The header is a Python dict literal; it is parsed
 * by hand, strictly, because every byte of it comes from the user. */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* NumPy itself refuses headers past this size; a larger one is garbage, not data. */
#define NPY_MAX_HEADER (1u << 20)

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

static int npy_fail(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_size)
        vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

const char *npy_shape_string(int ndim, const uint64_t *shape, char *buf, size_t buf_size) {
    size_t used = 0;
    if (buf_size == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, buf_size, "(");
    for (int i = 0; i < ndim && used < buf_size; i++)
        used += (size_t)snprintf(buf + used, buf_size - used, "%s%llu", i ? ", " : "",
                                 (unsigned long long)shape[i]);
    if (used < buf_size)
        snprintf(buf + used, buf_size - used, ndim == 1 ? ",)" : ")");
    return buf;
}

/* A cursor over the header text; every step checks the end first. */
typedef struct npy_cursor {
    const char *p;
    const char *end;
} npy_cursor;

static void npy_skip_space(npy_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int npy_accept(npy_cursor *c, char ch) {
    npy_skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int npy_accept_word(npy_cursor *c, const char *word) {
    size_t n = strlen(word);
    npy_skip_space(c);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes (none of the keys or dtype codes need one). */
static int npy_parse_string(npy_cursor *c, char *out, size_t out_size) {
    npy_skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= out_size)
            return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

static int npy_parse_uint(npy_cursor *c, uint64_t *value) {
    npy_skip_space(c);
    if (c->p >= c->end || !isdigit((unsigned char)*c->p))
        return -1;
    uint64_t v = 0;
    while (c->p < c->end && isdigit((unsigned char)*c->p)) {
        unsigned d = (unsigned)(*c->p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        c->p++;
    }
    /* Python 2 era files spell longs with a suffix. */
    if (c->p < c->end && (*c->p == 'L' || *c->p == 'l'))
        c->p++;
    *value = v;
    return 0;
}

static int npy_parse_shape(npy_cursor *c, npy_array *a, char *err, size_t err_size) {
    if (!npy_accept(c, '('))
        return npy_fail(err, err_size, "malformed .npy header: 'shape' is not a tuple");
    a->ndim = 0;
    if (npy_accept(c, ')'))
        return 0;
    for (;;) {
        uint64_t d;
        if (a->ndim == NPY_MAX_DIMS)
            return npy_fail(err, err_size, "the array has more than %d dimensions", NPY_MAX_DIMS);
        if (npy_parse_uint(c, &d) != 0)
            return npy_fail(err, err_size,
                            "malformed .npy header: 'shape' holds something other than "
                            "non-negative integers");
        a->shape[a->ndim++] = d;
        if (npy_accept(c, ')'))
            return 0;
        if (!npy_accept(c, ','))
            return npy_fail(err, err_size, "malformed .npy header: bad 'shape' tuple");
        if (npy_accept(c, ')'))
            return 0;
    }
}

/* Names a dtype code the way a user knows it, for the error message. */
static const char *npy_dtype_name(const char *descr) {
    static const struct {
        const char *code;
        const char *name;
    } names[] = {{"f2", "float16"}, {"f4", "float32"},   {"f8", "float64"},    {"f16", "float128"},
                 {"i1", "int8"},    {"i2", "int16"},     {"i4", "int32"},      {"i8", "int64"},
                 {"u1", "uint8"},   {"u2", "uint16"},    {"u4", "uint32"},     {"u8", "uint64"},
                 {"b1", "bool"},    {"c8", "complex64"}, {"c16", "complex128"}};
    const char *code = descr;
    if (*code == '<' || *code == '>' || *code == '|' || *code == '=')
        code++;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(code, names[i].code) == 0)
            return names[i].name;
    return "an unsupported dtype";
}

/* Header text is the user's bytes: only printable ones go into a one-line message. */
static const char *npy_printable(char *s) {
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    return s;
}

/* Parses the header dict; *big_endian and *fortran say how the data that follows is stored. */
static int npy_parse_header(const char *text, size_t len, npy_array *a, int *big_endian,
                            int *fortran, char *err, size_t err_size) {
    npy_cursor c = {text, text + len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (!npy_accept(&c, '{'))
        return npy_fail(err, err_size, "malformed .npy header: not a dict");
    for (;;) {
        char key[32];
        if (npy_accept(&c, '}'))
            break;
        if (npy_parse_string(&c, key, sizeof key) != 0 || !npy_accept(&c, ':'))
            return npy_fail(err, err_size, "malformed .npy header: bad dict key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            char descr[32];
            have_descr = 1;
            npy_skip_space(&c);
            if (c.p < c.end && *c.p == '[')
                return npy_fail(err, err_size,
                                "dtype is a structured type, expected float32 ('<f4')");
            if (npy_parse_string(&c, descr, sizeof descr) != 0)
                return npy_fail(err, err_size, "malformed .npy header: bad 'descr'");
            if (strcmp(descr, ">f4") == 0)
                *big_endian = 1;
            else if (strcmp(descr, "<f4") != 0)
                return npy_fail(err, err_size,
                                "dtype is %s ('%s'), expected float32 ('<f4' or '>f4')",
                                npy_dtype_name(descr), npy_printable(descr));
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            have_order = 1;
            if (npy_accept_word(&c, "True"))
                *fortran = 1;
            else if (!npy_accept_word(&c, "False"))
                return npy_fail(err, err_size, "malformed .npy header: bad 'fortran_order'");
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = 1;
            if (npy_parse_shape(&c, a, err, err_size) != 0)
                return -1;
        } else {
            return npy_fail(err, err_size, "malformed .npy header: unexpected or repeated key '%s'",
                            npy_printable(key));
        }
        if (npy_accept(&c, '}'))
            break;
        if (!npy_accept(&c, ','))
            return npy_fail(err, err_size, "malformed .npy header: missing ',' in dict");
    }
    npy_skip_space(&c);
    if (c.p != c.end)
        return npy_fail(err, err_size, "malformed .npy header: text after the dict");
    if (!have_descr || !have_order || !have_shape)
        return npy_fail(err, err_size, "malformed .npy header: missing '%s'",
                        !have_descr   ? "descr"
                        : !have_order ? "fortran_order"
                                      : "shape");
    return 0;
}

static uint32_t npy_le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int npy_host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static void npy_swap32(float *v, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        unsigned char b[4], t;
        memcpy(b, &v[i], 4);
        t = b[0], b[0] = b[3], b[3] = t;
        t = b[1], b[1] = b[2], b[2] = t;
        memcpy(&v[i], b, 4);
    }
}

/* Fortran order (the first index varies fastest) into C order (the last does), in a copy:
 * the source is walked in its own order while an odometer keeps the C offset. */
static int npy_to_c_order(npy_array *a) {
    uint64_t stride[NPY_MAX_DIMS], idx[NPY_MAX_DIMS] = {0}, at = 0;
    if (a->ndim < 2)
        return 0;
    float *c = malloc((size_t)a->count * 4);
    if (!c)
        return -1;
    for (int i = a->ndim - 1; i >= 0; i--)
        stride[i] = i == a->ndim - 1 ? 1 : stride[i + 1] * a->shape[i + 1];
    for (uint64_t s = 0; s < a->count; s++) {
        c[at] = a->data[s];
        for (int i = 0; i < a->ndim; i++) {
            at += stride[i];
            if (++idx[i] < a->shape[i])
                break;
            at -= stride[i] * a->shape[i];
            idx[i] = 0;
        }
    }
    free(a->data);
    a->data = c;
    return 0;
}

int npy_read(const char *path, npy_array *a, char *err, size_t err_size) {
    unsigned char pre[12];
    char *header = NULL;
    struct stat st;
    int rc = -1;
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f)
        return npy_fail(err, err_size, "cannot open: %s", strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        npy_fail(err, err_size, "not a regular file");
        goto done;
    }
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, npy_magic, sizeof npy_magic) != 0) {
        npy_fail(err, err_size, "not a .npy file (no \\x93NUMPY magic)");
        goto done;
    }
    unsigned major = pre[6];
    uint64_t header_len, prefix_len;
    if (major == 1) {
        header_len = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        prefix_len = 10;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            npy_fail(err, err_size, "truncated .npy header");
            goto done;
        }
        header_len = npy_le32(pre + 8);
        prefix_len = 12;
    } else {
        npy_fail(err, err_size, ".npy format version %u.%u is not supported (1.0, 2.0, 3.0 are)",
                 major, (unsigned)pre[7]);
        goto done;
    }
    if (header_len > NPY_MAX_HEADER || prefix_len + header_len > (uint64_t)st.st_size) {
        npy_fail(err, err_size, "truncated or malformed .npy header (length %llu)",
                 (unsigned long long)header_len);
        goto done;
    }
    header = malloc((size_t)header_len + 1);
    if (!header) {
        npy_fail(err, err_size, "out of host memory");
        goto done;
    }
    if (fread(header, 1, (size_t)header_len, f) != header_len) {
        npy_fail(err, err_size, "truncated .npy header");
        goto done;
    }
    header[header_len] = '\0';
    if (memchr(header, '\0', (size_t)header_len)) {
        npy_fail(err, err_size, "malformed .npy header: NUL byte in the header");
        goto done;
    }
    int big_endian = 0, fortran = 0;
    if (npy_parse_header(header, (size_t)header_len, a, &big_endian, &fortran, err, err_size) != 0)
        goto done;

    uint64_t count = 1;
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] != 0 && count > UINT64_MAX / 4 / a->shape[i]) {
            npy_fail(err, err_size, "shape is too large");
            goto done;
        }
        count *= a->shape[i];
    }
    uint64_t have = (uint64_t)st.st_size - prefix_len - header_len;
    if (have < count * 4) {
        npy_fail(err, err_size, "truncated data: %llu bytes, the shape needs %llu",
                 (unsigned long long)have, (unsigned long long)(count * 4));
        goto done;
    }
    if (have > count * 4) {
        npy_fail(err, err_size, "%llu unexpected bytes after the data",
                 (unsigned long long)(have - count * 4));
        goto done;
    }
    if (count > SIZE_MAX / 4) {
        npy_fail(err, err_size, "array too large for this host");
        goto done;
    }
    a->count = count;
    if (count) {
        a->data = malloc((size_t)count * 4);
        if (!a->data) {
            npy_fail(err, err_size, "out of host memory (%llu floats)", (unsigned long long)count);
            goto done;
        }
        if (fread(a->data, 4, (size_t)count, f) != count) {
            npy_fail(err, err_size, "truncated data (read error)");
            goto done;
        }
        if (big_endian == npy_host_is_little_endian())
            npy_swap32(a->data, count);
        if (fortran && npy_to_c_order(a) != 0) {
            npy_fail(err, err_size, "out of host memory (%llu floats)", (unsigned long long)count);
            goto done;
        }
    }
    rc = 0;
done:
    free(header);
    fclose(f);
    if (rc != 0)
        npy_free(a);
    return rc;
}

int npy_write(const char *path, const float *data, int ndim, const uint64_t *shape, char *err,
              size_t err_size) {
    char dict[64 + NPY_MAX_DIMS * 24], shape_text[NPY_MAX_DIMS * 24];
    uint64_t count = 1;
    if (ndim < 0 || ndim > NPY_MAX_DIMS)
        return npy_fail(err, err_size, "cannot write %d dimensions", ndim);
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
                     npy_shape_string(ndim, shape, shape_text, sizeof shape_text));
    if (n < 0 || (size_t)n >= sizeof dict)
        return npy_fail(err, err_size, "shape too long");
    /* Format 1.0: a 10-byte prefix, then the dict padded with spaces and ended by a newline so
     * that the data starts on a 64-byte boundary, as NumPy writes it. */
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t header_len = padded - 10;
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(header_len & 0xff);
    pre[9] = (unsigned char)(header_len >> 8);
    char header[sizeof dict + 64];
    memcpy(header, dict, (size_t)n);
    memset(header + n, ' ', header_len - (size_t)n - 1);
    header[header_len - 1] = '\n';

    FILE *f = fopen(path, "wb");
    if (!f)
        return npy_fail(err, err_size, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre &&
             fwrite(header, 1, header_len, f) == header_len;
    if (ok && count) {
        if (npy_host_is_little_endian()) {
            ok = fwrite(data, 4, (size_t)count, f) == count;
        } else {
            for (uint64_t i = 0; ok && i < count; i++) {
                float v = data[i];
                npy_swap32(&v, 1);
                ok = fwrite(&v, 4, 1, f) == 1;
            }
        }
    }
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        return npy_fail(err, err_size, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

void npy_free(npy_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
