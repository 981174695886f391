/*
 * kiln's own kernels (the .metal files of kernels/, embedded by CMake) made
 * into kiln_kernel objects on first use and kept for the process, and the
 * small helpers every linalg driver shares.
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "linalg/linalg.h"

typedef struct kiln__embedded_file {
  const char *name;
  const char *text;
} kiln__embedded_file;
extern const kiln__embedded_file kiln__library_kernels[];

/* One made kernel; a list, since there are a few dozen at most. */
typedef struct lib_entry {
  char key[160];
  kiln_kernel *kernel;
  struct lib_entry *next;
} lib_entry;

static pthread_mutex_t g_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static lib_entry *g_lib;

static const char *family_text(const char *family) {
  for (const kiln__embedded_file *f = kiln__library_kernels; f->name; f++)
    if (strcmp(f->name, family) == 0)
      return f->text;
  return NULL;
}

/* Splits a comma-separated list into `names` (pointers into `buf`). */
static int split_names(const char *csv, char *buf, size_t cap,
                       const char **names, int max) {
  size_t len = strlen(csv);
  if (len >= cap)
    return -1;
  memcpy(buf, csv, len + 1);
  int n = 0;
  for (char *p = buf; *p != '\0' && n < max;) {
    names[n++] = p;
    char *comma = strchr(p, ',');
    if (comma == NULL)
      break;
    *comma = '\0';
    p = comma + 1;
  }
  return n;
}

/* Finds kernel `name` in the family's text: the header and the body, as
 * kiln__malloc'ed strings. */
static kiln_status split_family(const char *family, const char *text,
                                const char *name, char **header,
                                char **body) {
  static const char marker[] = "//@kernel ";
  const char *first = strstr(text, marker);
  if (first == NULL)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kernels/%s.metal has no //@kernel section.", family);
  for (const char *m = first; m != NULL; m = strstr(m + 1, marker)) {
    if (m != text && m[-1] != '\n')
      continue;
    const char *nm = m + strlen(marker);
    size_t len = strcspn(nm, " \t\r\n");
    if (len != strlen(name) || strncmp(nm, name, len) != 0)
      continue;
    const char *start = strchr(nm, '\n');
    start = start != NULL ? start + 1 : nm + len;
    const char *end = strstr(start, marker);
    while (end != NULL && end[-1] != '\n')
      end = strstr(end + 1, marker);
    if (end == NULL)
      end = start + strlen(start);
    *header = kiln__strndup(text, (size_t)(first - text));
    *body = kiln__strndup(start, (size_t)(end - start));
    if (*header == NULL || *body == NULL) {
      kiln__free(*header);
      kiln__free(*body);
      return kiln__oom("loading a library kernel");
    }
    return KILN_OK;
  }
  return kiln__error(KILN_ERROR_INTERNAL,
                     "kernels/%s.metal has no kernel '%s'.", family, name);
}

static kiln_status make_kernel(const char *family, const char *name,
                               const char *inputs, const char *outputs,
                               unsigned flags, kiln_kernel **out) {
  const char *text = family_text(family);
  if (text == NULL)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kiln was built without kernels/%s.metal.", family);
  char *header = NULL, *body = NULL;
  kiln_status st = split_family(family, text, name, &header, &body);
  if (st != KILN_OK)
    return st;
  char inbuf[512], outbuf[256];
  const char *in[32], *outn[16];
  int ni = split_names(inputs, inbuf, sizeof inbuf, in, 32);
  int no = split_names(outputs, outbuf, sizeof outbuf, outn, 16);
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  d.name = name;
  d.input_names = in;
  d.num_inputs = ni < 0 ? 0 : ni;
  d.output_names = outn;
  d.num_outputs = no < 0 ? 0 : no;
  d.header = header;
  d.source = body;
  d.atomic_outputs = (flags & KILN__LIB_ATOMIC) != 0;
  d.ensure_row_contiguous = (flags & KILN__LIB_NO_ROW_CONTIG) == 0;
  d.math_mode = (flags & KILN__LIB_FAST_MATH) ? KILN_MATH_FAST : KILN_MATH_SAFE;
  if (ni < 0 || no < 0) {
    st = kiln__error(KILN_ERROR_INTERNAL, "library kernel '%s': too many "
                     "names.", name);
  } else {
    /* kiln_kernel_create is public and renames the API for messages:
     * keep the driver's name (e.g. kiln_gemm) for what follows. */
    const char *api = kiln__api_current();
    st = kiln_kernel_create(&d, out);
    kiln__api_enter(api);
    if (st == KILN_OK) { /* before the kernel is published in g_lib */
      kiln__kernel_set_dynamic_shared(*out, ((flags >> 8) & 0xffu) * 1024u);
      if (flags & KILN__LIB_COOPERATIVE)
        kiln__kernel_set_cooperative(*out);
    }
  }
  kiln__free(header);
  kiln__free(body);
  return st;
}

/* See linalg.h. */
kiln_status kiln__library_kernel(const char *family, const char *name,
                                 const char *inputs, const char *outputs,
                                 unsigned flags, kiln_kernel **out) {
  char key[160];
  int n = snprintf(key, sizeof key, "%s/%s/%u", family, name, flags);
  if (n < 0 || (size_t)n >= sizeof key)
    return kiln__error(KILN_ERROR_INTERNAL, "library kernel name too long.");
  pthread_mutex_lock(&g_lib_lock);
  for (lib_entry *e = g_lib; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) {
      *out = e->kernel;
      pthread_mutex_unlock(&g_lib_lock);
      return KILN_OK;
    }
  lib_entry *e = kiln__calloc(1, sizeof *e);
  kiln_status st = e != NULL ? KILN_OK : kiln__oom("making a library kernel");
  if (st == KILN_OK)
    st = make_kernel(family, name, inputs, outputs, flags, &e->kernel);
  if (st == KILN_OK) {
    memcpy(e->key, key, (size_t)n + 1);
    e->next = g_lib;
    g_lib = e;
    *out = e->kernel;
  } else {
    kiln__free(e);
  }
  pthread_mutex_unlock(&g_lib_lock);
  return st;
}

/* See linalg.h. */
kiln_status kiln__linalg_opts(const kiln_linalg_opts *in,
                              kiln_linalg_opts *out) {
  kiln_linalg_opts_init(out);
  if (in == NULL)
    return KILN_OK;
  size_t first = offsetof(kiln_linalg_opts, path) + sizeof in->path;
  if (in->struct_size < first)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->struct_size is %zu; set it with "
                       "kiln_linalg_opts_init.",
                       in->struct_size);
  size_t n = in->struct_size < sizeof *out ? in->struct_size : sizeof *out;
  memcpy(out, in, n);
  out->struct_size = sizeof *out;
  if (out->precision < KILN_PRECISION_DEFAULT ||
      out->precision > KILN_PRECISION_BF16)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->precision is %d, not a kiln_precision.",
                       (int)out->precision);
  return KILN_OK;
}

void kiln_linalg_opts_init(kiln_linalg_opts *opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof *opts);
  opts->struct_size = sizeof *opts;
}

/* See linalg.h. */
kiln_status kiln__linalg_stream(const kiln_linalg_opts *opts,
                                kiln_array *const *arrays, int count,
                                kiln_stream **out) {
  kiln_device *dev = arrays[0]->buffer->device;
  kiln_stream *s = opts->stream;
  if (s != NULL && s->device != dev)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the stream belongs to device %d but the operands "
                       "live on device %d.",
                       s->device->index, dev->index);
  for (int i = 1; i < count; i++)
    if (arrays[i] != NULL && arrays[i]->buffer->device != dev)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "operand %d lives on device %d, operand 1 on device "
                         "%d; move them to one device first.",
                         i + 1, arrays[i]->buffer->device->index, dev->index);
  if (s == NULL)
    s = kiln__default_stream(dev);
  if (s == NULL)
    return kiln__oom("creating the default stream");
  *out = s;
  return KILN_OK;
}

/* See linalg.h. */
kiln_status kiln__linalg_batch(kiln_array *const *ops, int count,
                               const char *const *names, int64_t *batch) {
  const kiln_array *ref = NULL;
  int ref_i = -1;
  for (int i = 0; i < count; i++) {
    if (ops[i]->ndim < 2)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "%s has %d dimension%s; a matrix needs at least 2.",
                         names[i], ops[i]->ndim, ops[i]->ndim == 1 ? "" : "s");
    if (ops[i]->ndim == 2)
      continue;
    if (ref == NULL) {
      ref = ops[i];
      ref_i = i;
      continue;
    }
    bool same = ops[i]->ndim == ref->ndim;
    for (int d = 0; same && d < ref->ndim - 2; d++)
      same = ops[i]->shape[d] == ref->shape[d];
    if (!same)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "the batch dimensions of %s and %s differ; they must "
                         "be equal, or an operand must have none.",
                         names[ref_i], names[i]);
  }
  int64_t b = 1;
  for (int d = 0; ref != NULL && d < ref->ndim - 2; d++)
    b *= ref->shape[d];
  *batch = b;
  return KILN_OK;
}

/* ---- helpers every driver shares ---------------------------------------- */

/* See linalg.h. */
void kiln__targ_dtype(kiln_template_arg *t, const char *name, kiln_dtype d) {
  t->name = name;
  t->kind = KILN_TEMPLATE_DTYPE;
  t->dtype = d;
  t->value = 0;
}

/* See linalg.h. */
void kiln__targ_int(kiln_template_arg *t, const char *name, int64_t v) {
  t->name = name;
  t->kind = KILN_TEMPLATE_INT;
  t->dtype = KILN_INT32;
  t->value = v;
}

/* See linalg.h. */
void kiln__targ_bool(kiln_template_arg *t, const char *name, bool v) {
  t->name = name;
  t->kind = KILN_TEMPLATE_BOOL;
  t->dtype = KILN_INT32;
  t->value = v;
}

/* See linalg.h. */
/* The calling thread's scalar pool (kiln__scalar_pool_use), or NULL. */
static _Thread_local const kiln__scalar_pool *tl_pool;

/* A view of the pool's array for `value` in `dtype`, or NULL (not held,
 * or the view could not be made: the caller then fills one). */
static kiln_array *pool_view(const kiln__scalar_pool *pool, kiln_device *dev,
                             kiln_dtype dtype, double value) {
  if (pool == NULL || pool->device != dev)
    return NULL;
  for (int i = 0; i < pool->count; i++)
    if (pool->dtype[i] == dtype && pool->value[i] == value &&
        signbit(pool->value[i]) == signbit(value)) {
      int64_t none = 0;
      kiln_array *v = NULL;
      const char *api = kiln__api_current();
      kiln_status st = kiln_array_view(pool->x[i], 0, &none, &none, 0, &v);
      kiln__api_enter(api);
      return st == KILN_OK ? v : NULL;
    }
  return NULL;
}

kiln_status kiln__linalg_scalar(kiln_stream *s, kiln_dtype dtype,
                                double value, kiln_array **out) {
  kiln_array *v = pool_view(tl_pool, s->device, dtype, value);
  if (v != NULL) {
    *out = v;
    return KILN_OK;
  }
  int64_t none = 0;
  kiln_array *x = NULL;
  kiln_status st = kiln__array_create(s->device, dtype, 0, &none, &x);
  if (st == KILN_OK)
    st = kiln__array_fill(x, value, s);
  if (st != KILN_OK) {
    kiln__array_destroy(x);
    return st;
  }
  *out = x;
  return KILN_OK;
}

/* See linalg.h. Each value is a new 0-d array filled in stream order, as
 * kiln__linalg_scalar makes one without a pool. */
kiln_status kiln__scalar_pool_make(kiln_stream *s, kiln_dtype fdt,
                                   kiln__scalar_pool *pool) {
  static const double fvals[3] = {0.0, 1.0, -1.0};
  memset(pool, 0, sizeof *pool);
  pool->device = s->device;
  kiln_status st = KILN_OK;
  for (int i = 0; i < 4 && st == KILN_OK; i++) {
    kiln_dtype dt = i < 3 ? fdt : KILN_INT32;
    double v = i < 3 ? fvals[i] : 0.0;
    int64_t none = 0;
    kiln_array *x = NULL;
    st = kiln__array_create(s->device, dt, 0, &none, &x);
    if (st == KILN_OK)
      st = kiln__array_fill(x, v, s);
    if (st != KILN_OK) {
      kiln__array_destroy(x);
      break;
    }
    pool->dtype[i] = dt;
    pool->value[i] = v;
    pool->x[i] = x;
    pool->count = i + 1;
  }
  if (st != KILN_OK)
    kiln__scalar_pool_free(pool);
  return st;
}

/* See linalg.h. */
void kiln__scalar_pool_free(kiln__scalar_pool *pool) {
  for (int i = 0; i < pool->count; i++)
    kiln__array_destroy(pool->x[i]);
  pool->count = 0;
}

/* See linalg.h. */
const kiln__scalar_pool *kiln__scalar_pool_use(const kiln__scalar_pool *pool) {
  const kiln__scalar_pool *prev = tl_pool;
  tl_pool = pool;
  return prev;
}

/* See linalg.h. */
kiln_status kiln__linalg_pooled(kiln_stream *s, kiln_dtype dtype,
                                kiln_status (*fn)(void *user), void *user) {
  kiln__scalar_pool pool;
  kiln_dtype acc = dtype == KILN_FLOAT64 ? KILN_FLOAT64 : KILN_FLOAT32;
  kiln_status st = kiln__scalar_pool_make(s, acc, &pool);
  if (st != KILN_OK)
    return st;
  const kiln__scalar_pool *prev = kiln__scalar_pool_use(&pool);
  st = fn(user);
  kiln__scalar_pool_use(prev);
  kiln__scalar_pool_free(&pool);
  return st;
}

/* See linalg.h. */
kiln_status kiln__linalg_iota(kiln_stream *s, int64_t len, kiln_array **out) {
  kiln_kernel *k = NULL;
  kiln_array *count = NULL, *idx = NULL;
  kiln_status st =
      kiln__library_kernel("lu", "lu_iota", "count", "idx", 0, &k);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, KILN_INT32, 1, &len, &idx);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(s, KILN_INT32, (double)len, &count);
  if (st == KILN_OK) {
    kiln_output_spec spec;
    kiln__linalg_out_spec(&spec, idx);
    kiln_launch L;
    kiln__linalg_launch_init(&L, s);
    L.inputs = &count;
    L.num_inputs = 1;
    L.outputs = &spec;
    L.num_outputs = 1;
    L.grid[0] = (uint32_t)((len + 255) / 256 * 256);
    L.threadgroup[0] = 256;
    st = kiln__kernel_launch_into(k, &L, &idx);
  }
  kiln__array_destroy(count);
  if (st != KILN_OK) {
    kiln__array_destroy(idx);
    return st;
  }
  *out = idx;
  return KILN_OK;
}

/* See linalg.h. */
void kiln__linalg_out_spec(kiln_output_spec *spec, const kiln_array *x) {
  memset(spec, 0, sizeof *spec);
  spec->dtype = x->dtype;
  spec->ndim = x->ndim;
  memcpy(spec->shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
}

/* See linalg.h. */
void kiln__linalg_launch_init(kiln_launch *L, kiln_stream *s) {
  kiln_launch_init(L);
  L->stream = s;
  L->device = s->device;
}

/* See linalg.h. */
kiln_status kiln__linalg_block(kiln_array *x, int64_t r0, int64_t c0,
                               int64_t rows, int64_t cols, kiln_array **out) {
  int64_t shape[KILN_MAX_NDIM], strides[KILN_MAX_NDIM];
  int nd = x->ndim;
  memcpy(shape, x->shape, (size_t)nd * sizeof *shape);
  memcpy(strides, x->strides, (size_t)nd * sizeof *strides);
  shape[nd - 2] = rows;
  shape[nd - 1] = cols;
  /* kiln_array_view is public and renames the API for messages; its
   * offset is relative to x's own. */
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(x, nd, shape, strides,
                                   r0 * strides[nd - 2] + c0 * strides[nd - 1],
                                   out);
  kiln__api_enter(api);
  return st;
}

/* See linalg.h. */
kiln_status kiln__linalg_alias(const kiln_array *x, kiln_array **out) {
  kiln__buffer *buf = NULL;
  kiln_status st = kiln__buffer_wrap(x->buffer->device, x->buffer->ptr,
                                     x->buffer->bytes, &buf);
  if (st != KILN_OK)
    return st;
  kiln_array *a = kiln__malloc(sizeof *a);
  if (a == NULL) {
    kiln__buffer_release(buf);
    return kiln__oom("creating an alias of an array");
  }
  *a = *x;
  a->buffer = buf; /* the wrap's reference */
  *out = a;
  return KILN_OK;
}

/* See linalg.h. */
kiln_status kiln__linalg_note_written(kiln_stream *s, kiln__buffer *buf) {
  pthread_mutex_lock(&s->submit_lock);
  kiln_status st = kiln__hazards_after(s, NULL, 0, &buf, 1);
  pthread_mutex_unlock(&s->submit_lock);
  return st;
}

/* See linalg.h. */
kiln_status kiln__linalg_gemm(kiln_stream *s, bool ta, bool tb, double alpha,
                              kiln_array *a, kiln_array *b, double beta,
                              kiln_array *c) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.stream = s;
  const char *api = kiln__api_current();
  kiln_status st = kiln_gemm_ex(ta, tb, alpha, a, b, beta, c, &o);
  kiln__api_enter(api);
  return st;
}

/* See linalg.h. */
kiln_status kiln__linalg_read_info(kiln_array *info, int64_t batch,
                                   int64_t *first, int32_t *value,
                                   int64_t *failed) {
  *first = -1;
  *value = 0;
  *failed = 0;
  size_t bytes = (size_t)batch * sizeof(int32_t);
  int32_t *h = kiln__malloc(bytes > 0 ? bytes : 1);
  if (h == NULL)
    return kiln__oom("reading the per-matrix status");
  /* kiln_array_to_host is public and renames the API for messages. */
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_to_host(info, h, bytes);
  kiln__api_enter(api);
  for (int64_t b = 0; st == KILN_OK && b < batch; b++)
    if (h[b] != 0 && (*failed)++ == 0) {
      *first = b;
      *value = h[b];
    }
  kiln__free(h);
  return st;
}

/* See linalg.h. */
void kiln__linalg_which(char *buf, size_t cap, const char *name,
                        const kiln_array *a, int64_t entry, int64_t failed) {
  int n = a->ndim > 2
              ? snprintf(buf, cap, "matrix %lld (batch index, from 0) of %s",
                         (long long)entry, name)
              : snprintf(buf, cap, "%s", name);
  if (failed > 1 && n >= 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " (and %lld more matri%s)",
             (long long)(failed - 1), failed == 2 ? "x" : "ces");
}
