/*
 * .npy reading and writing (see npy.h). The format: the magic "\x93NUMPY",
 * a major and minor version byte, a little-endian header length (2 bytes in
 * version 1.0, 4 bytes in 2.0 and 3.0), then a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
 * spaces and a newline, then the raw elements.
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy aligns the data to 64 bytes; we write the same layout. */
#define NPY_ALIGN 64
/* A sane header is a few hundred bytes; refuse absurd lengths before
 * allocating them. numpy itself refuses headers over 10000 by default. */
#define NPY_MAX_HEADER (1u << 20)

/* How each dtype is spelled in a .npy header . */
typedef struct npy_type {
  kiln_dtype dtype;
  char kind;       /* numpy kind character: b i u f */
  unsigned size;   /* bytes */
  const char *descr;
  const char *name; /* numpy's name, for messages */
} npy_type;

static const npy_type npy_types[] = {
    {KILN_BOOL, 'b', 1, "|b1", "bool"},
    {KILN_INT8, 'i', 1, "|i1", "int8"},
    {KILN_INT16, 'i', 2, "<i2", "int16"},
    {KILN_INT32, 'i', 4, "<i4", "int32"},
    {KILN_INT64, 'i', 8, "<i8", "int64"},
    {KILN_UINT8, 'u', 1, "|u1", "uint8"},
    {KILN_UINT16, 'u', 2, "<u2", "uint16"},
    {KILN_UINT32, 'u', 4, "<u4", "uint32"},
    {KILN_UINT64, 'u', 8, "<u8", "uint64"},
    {KILN_FLOAT16, 'f', 2, "<f2", "float16"},
    {KILN_FLOAT32, 'f', 4, "<f4", "float32"},
    {KILN_FLOAT64, 'f', 8, "<f8", "float64"},
};
#define NPY_NUM_TYPES (sizeof(npy_types) / sizeof(npy_types[0]))

static const npy_type *type_of(kiln_dtype dtype) {
  for (size_t i = 0; i < NPY_NUM_TYPES; i++)
    if (npy_types[i].dtype == dtype)
      return &npy_types[i];
  return NULL;
}

/* The header spelling of a dtype; see npy.h. */
const char *npy_descr(kiln_dtype dtype) {
  const npy_type *t = type_of(dtype);
  return t ? t->descr : NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* The data is stored little-endian; this tool runs on little-endian hosts
 * only (x86-64, AArch64), which we check rather than assume. */
static bool host_is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

/* ---- the header dict parser ---------------------------------------------- */

/* A cursor over the header text; `msg` receives the first syntax error. */
typedef struct hparser {
  const char *s;
  size_t len;
  size_t pos;
  char msg[160];
} hparser;

static bool hp_fail(hparser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool hp_fail(hparser *p, const char *fmt, ...) {
  char what[120];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(p->msg, sizeof p->msg, "%s at character %zu", what, p->pos + 1);
  return false;
}

static void hp_skip_ws(hparser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
    p->pos++;
}

/* Skips blanks and reports the next character (0 at the end). */
static char hp_peek(hparser *p) {
  hp_skip_ws(p);
  return p->pos < p->len ? p->s[p->pos] : 0;
}

static bool hp_expect(hparser *p, char c, const char *where) {
  if (hp_peek(p) != c)
    return hp_fail(p, "expected '%c' %s", c, where);
  p->pos++;
  return true;
}

/* A Python string literal in single or double quotes. Escapes are taken
 * literally (no valid descr or key needs one). */
static bool hp_string(hparser *p, char *out, size_t cap) {
  char q = hp_peek(p);
  if (q != '\'' && q != '"')
    return hp_fail(p, "expected a quoted string");
  p->pos++;
  size_t n = 0;
  while (p->pos < p->len && p->s[p->pos] != q) {
    if (p->s[p->pos] == '\\' && p->pos + 1 < p->len)
      p->pos++;
    if (n + 1 >= cap)
      return hp_fail(p, "string is too long");
    out[n++] = p->s[p->pos++];
  }
  if (p->pos >= p->len)
    return hp_fail(p, "unterminated string");
  p->pos++;
  out[n] = '\0';
  return true;
}

static bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

/* Python's True or False. */
static bool hp_bool(hparser *p, bool *out) {
  hp_skip_ws(p);
  const char *rest = p->s + p->pos;
  size_t left = p->len - p->pos;
  size_t n = 0;
  while (n < left && is_ident_char(rest[n]))
    n++;
  if (n == 4 && memcmp(rest, "True", 4) == 0)
    *out = true;
  else if (n == 5 && memcmp(rest, "False", 5) == 0)
    *out = false;
  else
    return hp_fail(p, "expected True or False for 'fortran_order'");
  p->pos += n;
  return true;
}

/* A non-negative decimal integer (Python 2 files may add an L suffix). */
static bool hp_dim(hparser *p, int64_t *out) {
  hp_skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == '-')
    return hp_fail(p, "shape has a negative dimension");
  if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
    return hp_fail(p, "expected an integer in the shape");
  int64_t v = 0;
  while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
    int d = p->s[p->pos] - '0';
    if (v > (INT64_MAX - d) / 10)
      return hp_fail(p, "shape dimension is too large");
    v = v * 10 + d;
    p->pos++;
  }
  if (p->pos < p->len && (p->s[p->pos] == 'L' || p->s[p->pos] == 'l'))
    p->pos++;
  *out = v;
  return true;
}

/* A tuple of dimensions: (), (3,), (3, 4) or (3, 4,). A bare (3) is an int
 * in Python, not a tuple, so it is refused as numpy refuses it. */
static bool hp_shape(hparser *p, int *ndim, int64_t *shape, bool *too_many) {
  if (!hp_expect(p, '(', "to start the shape tuple"))
    return false;
  int n = 0;
  bool comma_after_last = false;
  while (hp_peek(p) != ')') {
    int64_t d = 0;
    if (!hp_dim(p, &d))
      return false;
    if (n == KILN_MAX_NDIM) {
      *too_many = true;
      return hp_fail(p, "shape has more than %d dimensions", KILN_MAX_NDIM);
    }
    shape[n++] = d;
    comma_after_last = false;
    char c = hp_peek(p);
    if (c == ',') {
      p->pos++;
      comma_after_last = true;
    } else if (c != ')') {
      return hp_fail(p, "expected ',' or ')' in the shape tuple");
    }
  }
  if (n == 1 && !comma_after_last)
    return hp_fail(p, "shape (N) is not a tuple; a 1-d shape is written (N,)");
  p->pos++;
  *ndim = n;
  return true;
}

/* What the header dict says. */
typedef struct npy_header {
  char descr[64];
  bool fortran_order;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
  bool too_many_dims;
  bool structured;
} npy_header;

/* One "key: value" entry; `seen` marks descr, fortran_order, shape. */
static bool hp_entry(hparser *p, npy_header *h, bool seen[3]) {
  char key[32];
  if (!hp_string(p, key, sizeof key))
    return false;
  if (!hp_expect(p, ':', "after a key"))
    return false;
  int which = strcmp(key, "descr") == 0           ? 0
              : strcmp(key, "fortran_order") == 0 ? 1
              : strcmp(key, "shape") == 0         ? 2
                                                  : -1;
  if (which < 0)
    return hp_fail(p, "unexpected key '%s'", key);
  if (seen[which])
    return hp_fail(p, "key '%s' appears twice", key);
  seen[which] = true;
  if (which == 0) {
    if (hp_peek(p) == '[') {
      h->structured = true;
      return hp_fail(p, "structured dtype");
    }
    return hp_string(p, h->descr, sizeof h->descr);
  }
  if (which == 1)
    return hp_bool(p, &h->fortran_order);
  return hp_shape(p, &h->ndim, h->shape, &h->too_many_dims);
}

/* Parses the whole dict; only blanks may follow the closing brace. */
static bool parse_header(hparser *p, npy_header *h) {
  bool seen[3] = {false, false, false};
  if (!hp_expect(p, '{', "at the start of the header"))
    return false;
  while (hp_peek(p) != '}') {
    if (!hp_entry(p, h, seen))
      return false;
    char c = hp_peek(p);
    if (c == ',')
      p->pos++;
    else if (c != '}')
      return hp_fail(p, "expected ',' or '}' after a value");
  }
  p->pos++;
  if (hp_peek(p) != 0)
    return hp_fail(p, "unexpected text after the closing '}'");
  static const char *const names[3] = {"descr", "fortran_order", "shape"};
  for (int i = 0; i < 3; i++)
    if (!seen[i]) {
      snprintf(p->msg, sizeof p->msg, "key '%s' is missing", names[i]);
      return false;
    }
  return true;
}

/* ---- descr --------------------------------------------------------------- */

/* Maps a descr such as "<f4" to a dtype, or explains why it cannot. */
static bool descr_to_dtype(const char *path, const char *descr,
                           kiln_dtype *out, char *err, size_t errlen) {
  char order = descr[0];
  const char *code = descr;
  if (order == '<' || order == '>' || order == '|' || order == '=')
    code++;
  const npy_type *match = NULL;
  for (size_t i = 0; i < NPY_NUM_TYPES; i++) {
    const char *d = npy_types[i].descr + 1; /* skip the order character */
    /* numpy also spells bool as "?" */
    if (strcmp(code, d) == 0 || (npy_types[i].kind == 'b' &&
                                 strcmp(code, "?") == 0))
      match = &npy_types[i];
  }
  if (!match) {
    if (strcmp(code, "V2") == 0)
      set_err(err, errlen,
              "'%s' has dtype '%s' (raw 2-byte records, as ml_dtypes saves "
              "bfloat16), which is not supported; save it as float32 "
              "instead",
              path, descr);
    else
      set_err(err, errlen,
              "'%s' has dtype '%s', which is not supported (supported: "
              "bool, int8, int16, int32, int64, uint8, uint16, uint32, "
              "uint64, float16, float32, float64)",
              path, descr);
    return false;
  }
  /* Byte order matters only for multi-byte types. */
  if (match->size > 1 && order == '>') {
    set_err(err, errlen,
            "'%s' holds big-endian data (dtype '%s'), which is not "
            "supported; convert it with a.astype('<%s') before saving",
            path, descr, code);
    return false;
  }
  *out = match->dtype;
  return true;
}

/* ---- reading ------------------------------------------------------------- */

static uint32_t le32(const unsigned char *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}

/* Reads the magic, version and header text (malloc'ed, NUL-terminated). */
static int read_preamble(FILE *f, const char *path, char **text,
                         size_t *text_len, char *err, size_t errlen) {
  unsigned char pre[12];
  size_t got = fread(pre, 1, 10, f);
  if (got < NPY_MAGIC_LEN || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
    set_err(err, errlen,
            "'%s' is not a .npy file: it does not start with the magic "
            "string \\x93NUMPY",
            path);
    return -1;
  }
  if (got < 10) {
    set_err(err, errlen, "'%s' is truncated: it ends inside its header",
            path);
    return -1;
  }
  unsigned major = pre[6], minor = pre[7];
  if (major < 1 || major > 3 || minor != 0) {
    set_err(err, errlen,
            "'%s' uses .npy format version %u.%u, which is not supported "
            "(only 1.0, 2.0 and 3.0 are)",
            path, major, minor);
    return -1;
  }
  size_t hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
  if (major >= 2) {
    if (fread(pre + 10, 1, 2, f) != 2) {
      set_err(err, errlen, "'%s' is truncated: it ends inside its header",
              path);
      return -1;
    }
    hlen = le32(pre + 8);
  }
  if (hlen > NPY_MAX_HEADER) {
    set_err(err, errlen,
            "'%s' has an implausibly large header (%zu bytes); the file is "
            "probably corrupted",
            path, hlen);
    return -1;
  }
  char *buf = malloc(hlen + 1);
  if (!buf) {
    set_err(err, errlen, "out of memory while reading the header of '%s'",
            path);
    return -1;
  }
  if (fread(buf, 1, hlen, f) != hlen) {
    free(buf);
    set_err(err, errlen, "'%s' is truncated: it ends inside its header",
            path);
    return -1;
  }
  buf[hlen] = '\0';
  *text = buf;
  *text_len = hlen;
  return 0;
}

/* Formats a shape as numpy prints it, for messages. */
static void format_shape(char *out, size_t cap, int ndim,
                         const int64_t *shape) {
  size_t n = (size_t)snprintf(out, cap, "(");
  for (int i = 0; i < ndim && n < cap; i++)
    n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? ", " : "",
                          (long long)shape[i]);
  if (n < cap)
    snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

/* The data size in bytes, or false if it overflows. */
static bool data_bytes(int ndim, const int64_t *shape, size_t itemsize,
                       size_t *out) {
  uint64_t total = itemsize;
  for (int i = 0; i < ndim; i++) {
    uint64_t d = (uint64_t)shape[i];
    if (d != 0 && total > (uint64_t)INT64_MAX / d)
      return false;
    total *= d;
  }
  if (total > (uint64_t)SIZE_MAX)
    return false;
  *out = (size_t)total;
  return true;
}

/* Checks the parsed header and fills everything but the data. */
static int check_header(const char *path, const npy_header *h,
                        npy_array *arr, char *err, size_t errlen) {
  if (!descr_to_dtype(path, h->descr, &arr->dtype, err, errlen))
    return -1;
  if (h->fortran_order) {
    set_err(err, errlen,
            "'%s' holds a Fortran-order array: Fortran-order arrays are not "
            "supported; save with np.ascontiguousarray(a)",
            path);
    return -1;
  }
  char shp[400];
  format_shape(shp, sizeof shp, h->ndim, h->shape);
  if (!data_bytes(h->ndim, h->shape, type_of(arr->dtype)->size,
                  &arr->nbytes)) {
    set_err(err, errlen, "'%s' has shape %s, whose size in bytes overflows",
            path, shp);
    return -1;
  }
  arr->ndim = h->ndim;
  memcpy(arr->shape, h->shape, sizeof(int64_t) * (size_t)h->ndim);
  return 0;
}

/* Bytes left in a regular file from the current position, or -1. */
static long long bytes_left(FILE *f) {
  struct stat st;
  long pos = ftell(f);
  if (pos < 0 || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
    return -1;
  return st.st_size > pos ? (long long)(st.st_size - pos) : 0;
}

static int truncated_data(const char *path, const npy_array *arr,
                          long long left, char *err, size_t errlen) {
  char shp[400];
  format_shape(shp, sizeof shp, arr->ndim, arr->shape);
  set_err(err, errlen,
          "'%s' is truncated: shape %s of %s needs %zu bytes of data but "
          "only %lld are there",
          path, shp, type_of(arr->dtype)->name, arr->nbytes, left);
  return -1;
}

/* Reads the elements that follow the header. */
static int read_data(FILE *f, const char *path, npy_array *arr, char *err,
                     size_t errlen) {
  long long left = bytes_left(f);
  /* Check first, so a corrupt shape does not make us allocate terabytes. */
  if (left >= 0 && (unsigned long long)left < arr->nbytes)
    return truncated_data(path, arr, left, err, errlen);
  /* malloc(0) may return NULL; keep data non-NULL for empty arrays. */
  arr->data = malloc(arr->nbytes ? arr->nbytes : 1);
  if (!arr->data) {
    set_err(err, errlen, "out of memory reading %zu bytes of data from '%s'",
            arr->nbytes, path);
    return -1;
  }
  size_t got = fread(arr->data, 1, arr->nbytes, f);
  if (got != arr->nbytes) {
    int saved = ferror(f) ? errno : 0;
    free(arr->data);
    arr->data = NULL;
    if (saved) {
      set_err(err, errlen, "cannot read '%s': %s", path, strerror(saved));
      return -1;
    }
    return truncated_data(path, arr, (long long)got, err, errlen);
  }
  return 0;
}

static int read_open_file(FILE *f, const char *path, bool header_only,
                          npy_array *arr, char *err, size_t errlen) {
  char *text = NULL;
  size_t text_len = 0;
  if (read_preamble(f, path, &text, &text_len, err, errlen) != 0)
    return -1;
  hparser p = {.s = text, .len = text_len, .pos = 0, .msg = ""};
  npy_header h;
  memset(&h, 0, sizeof h);
  bool ok = parse_header(&p, &h);
  free(text);
  if (!ok && h.structured) {
    set_err(err, errlen,
            "'%s' holds a structured array (a list of fields as 'descr'), "
            "which is not supported", path);
    return -1;
  }
  if (!ok && h.too_many_dims) {
    set_err(err, errlen,
            "'%s' has more than %d dimensions, the most kiln supports", path,
            KILN_MAX_NDIM);
    return -1;
  }
  if (!ok) {
    set_err(err, errlen, "'%s' has a malformed header: %s", path, p.msg);
    return -1;
  }
  if (check_header(path, &h, arr, err, errlen) != 0)
    return -1;
  return header_only ? 0 : read_data(f, path, arr, err, errlen);
}

/* Opens and parses a .npy file, and loads its data unless header_only. */
static int read_path(const char *path, bool header_only, npy_array *out,
                     char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!host_is_little_endian()) {
    set_err(err, errlen, "cannot read '%s': .npy support needs a "
                         "little-endian host", path);
    return -1;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return -1;
  }
  npy_array arr;
  memset(&arr, 0, sizeof arr);
  int rc = read_open_file(f, path, header_only, &arr, err, errlen);
  /* A directory opens fine but fails on the first read. */
  if (rc != 0 && ferror(f) && errno == EISDIR)
    set_err(err, errlen, "cannot read '%s': it is a directory", path);
  fclose(f);
  if (rc == 0)
    *out = arr;
  return rc;
}

/* Loads a whole .npy file; see npy.h for the contract. */
int npy_read(const char *path, npy_array *out, char *err, size_t errlen) {
  return read_path(path, false, out, err, errlen);
}

/* Reads only the header: dtype and shape, for `kiln compile`. */
int npy_read_header(const char *path, npy_array *out, char *err,
                    size_t errlen) {
  return read_path(path, true, out, err, errlen);
}

/* Releases what npy_read allocated. */
void npy_array_free(npy_array *array) {
  if (!array)
    return;
  free(array->data);
  memset(array, 0, sizeof *array);
}

/* ---- writing ------------------------------------------------------------- */

/* Builds the padded header into `out` (which must hold NPY_HEADER_CAP). */
#define NPY_HEADER_CAP 1024

static size_t build_header(char *out, const char *descr, int ndim,
                           const int64_t *shape) {
  char shp[400];
  format_shape(shp, sizeof shp, ndim, shape);
  return (size_t)snprintf(out, NPY_HEADER_CAP,
                          "{'descr': '%s', 'fortran_order': False, "
                          "'shape': %s, }",
                          descr, shp);
}

/* Writes the padded header, then the raw elements; see npy.h. */
int npy_write_stream(FILE *stream, const char *name, kiln_dtype dtype,
                     int ndim, const int64_t *shape, const void *data,
                     char *err, size_t errlen) {
  const npy_type *t = type_of(dtype);
  if (!t) {
    set_err(err, errlen,
            "cannot write '%s': dtype %s cannot be stored in a .npy file "
            "(numpy has no such dtype)",
            name, dtype == KILN_BFLOAT16 ? "bfloat16" : "(invalid)");
    return -1;
  }
  if (ndim < 0 || ndim > KILN_MAX_NDIM) {
    set_err(err, errlen, "cannot write '%s': %d dimensions is not valid",
            name, ndim);
    return -1;
  }
  size_t nbytes;
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0) {
      set_err(err, errlen, "cannot write '%s': dimension %d is negative",
              name, i);
      return -1;
    }
  if (!data_bytes(ndim, shape, t->size, &nbytes)) {
    set_err(err, errlen, "cannot write '%s': its size overflows", name);
    return -1;
  }
  if (!host_is_little_endian()) {
    set_err(err, errlen, "cannot write '%s': .npy support needs a "
                         "little-endian host", name);
    return -1;
  }
  char head[NPY_HEADER_CAP + NPY_ALIGN + 16];
  size_t dict_len = build_header(head + 12, t->descr, ndim, shape);
  /* Version 1.0 has a 10-byte preamble and a 16-bit length; use 2.0 (12
   * bytes, 32-bit length) only when the padded header would not fit. */
  size_t pre = 10;
  size_t total = (pre + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  if (total - pre > 65535) {
    pre = 12;
    total = (pre + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  }
  size_t hlen = total - pre;
  char *h = head + 12 - pre;
  memset(h + pre + dict_len, ' ', hlen - dict_len - 1);
  h[total - 1] = '\n';
  memcpy(h, NPY_MAGIC, NPY_MAGIC_LEN);
  h[6] = (char)(pre == 10 ? 1 : 2);
  h[7] = 0;
  for (size_t i = 0; i < pre - 8; i++)
    h[8 + i] = (char)((hlen >> (8 * i)) & 0xff);
  if (fwrite(h, 1, total, stream) != total ||
      (nbytes && fwrite(data, 1, nbytes, stream) != nbytes) ||
      fflush(stream) != 0) {
    set_err(err, errlen, "cannot write '%s': %s", name, strerror(errno));
    return -1;
  }
  return 0;
}

/* npy_write_stream to a file created (or truncated) at `path`. */
int npy_write(const char *path, kiln_dtype dtype, int ndim,
              const int64_t *shape, const void *data, char *err,
              size_t errlen) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    set_err(err, errlen, "cannot create '%s': %s", path, strerror(errno));
    return -1;
  }
  int rc = npy_write_stream(f, path, dtype, ndim, shape, data, err, errlen);
  if (fclose(f) != 0 && rc == 0) {
    set_err(err, errlen, "cannot write '%s': %s", path, strerror(errno));
    rc = -1;
  }
  return rc;
}
