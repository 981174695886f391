/*
 * Kernels: creation (check the description, scan the source once, copy),
 * launch orchestration, and compiling for a named target without a launch
 * (kiln_kernel_compile, which shares the launch's checks and generation).
 *
 * A launch is checked completely before anything is enqueued. Each kernel
 * keeps a small table of specialisations: the generated source depends
 * only on the device, the input dtypes, which inputs are 0-d, the output
 * dtypes and the template arguments (the math mode is fixed per kernel),
 * so a compact byte key of those finds the loaded module on a repeat
 * launch without generating source or hashing anything. A miss goes to
 * the process-wide cache in kcache.c.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/kcache.h"
#include "dialect/dialect.h"

/* What the launch needs from one parameter of the generated signature. */
typedef struct spec_param {
  kiln__param_kind kind;
  int io_index;
} spec_param;

/* One specialisation of a kernel: key bytes -> loaded module. */
typedef struct kernel_spec {
  unsigned char *key;
  size_t key_len;
  kiln__kmodule *kmod; /* owned by the process-wide cache */
  spec_param *params;
  int num_params;
} kernel_spec;

struct kiln_kernel {
  char *name;
  char **input_names;
  int num_inputs;
  char **output_names;
  int num_outputs;
  char *header;
  char *source;
  bool ensure_row_contiguous;
  bool atomic_outputs;
  kiln_math_mode math_mode;
  kiln__scan scan;
  bool scanned;
  uint32_t dynamic_shared; /* kiln__kernel_set_dynamic_shared */
  bool cooperative;        /* kiln__kernel_set_cooperative */
  /* table_lock guards the table and is held only briefly; build_lock
   * serializes misses, so one specialisation compiles once while launches
   * of cached ones go on. */
  pthread_mutex_t table_lock;
  pthread_mutex_t build_lock;
  int locks_ready; /* how many of the two mutexes were initialised */
  kernel_spec **specs;
  int num_specs;
  int cap_specs;
};

/* A launch after its checks: the caller's struct copied to full size, and
 * what the checks resolved. */
typedef struct launch_plan {
  kiln_launch L;
  /* kiln_kernel_compile may describe the inputs by dtype and shape alone;
   * NULL means L.inputs (read through in_dtype / in_ndim). */
  const kiln_array_spec *in_specs;
  kiln_device *dev;    /* NULL for a compile for a named target */
  kiln_stream *stream; /* NULL for generate_source and compile */
  uint32_t tg[3];      /* clipped to the grid */
  /* kiln__kernel_launch_into: existing arrays the kernel writes (one per
   * output, owned by the caller), instead of new ones. */
  kiln_array *const *into;
  /* CUDA: 0, or the threadgroup size to compile for with
   * __launch_bounds__ (see find_spec_fitting). */
  uint32_t bound;
} launch_plan;

/* Input i's dtype and rank, whichever way the inputs were given. */
static kiln_dtype in_dtype(const launch_plan *p, int i) {
  return p->in_specs != NULL ? p->in_specs[i].dtype : p->L.inputs[i]->dtype;
}

static int in_ndim(const launch_plan *p, int i) {
  return p->in_specs != NULL ? p->in_specs[i].ndim : p->L.inputs[i]->ndim;
}

/* ---- descriptions -------------------------------------------------------- */

/* Public: zeroes the description and sets the documented defaults. */
void kiln_kernel_desc_init(kiln_kernel_desc *desc) {
  if (desc == NULL)
    return;
  memset(desc, 0, sizeof *desc);
  desc->struct_size = sizeof *desc;
  desc->ensure_row_contiguous = true;
  desc->atomic_outputs = false;
  desc->math_mode = KILN_MATH_SAFE;
}

/* Public: zeroes the launch and sets a 1x1x1 grid and threadgroup. */
void kiln_launch_init(kiln_launch *launch) {
  if (launch == NULL)
    return;
  memset(launch, 0, sizeof *launch);
  launch->struct_size = sizeof *launch;
  for (int i = 0; i < 3; i++) {
    launch->grid[i] = 1;
    launch->threadgroup[i] = 1;
  }
}

static bool is_identifier(const char *s) {
  if (s == NULL ||
      !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
    return false;
  for (s++; *s != '\0'; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

/* "1 input", "2 inputs": counts in messages agree with their noun. */
static const char *plural(int n, const char *one, const char *many) {
  return n == 1 ? one : many;
}

/* A kernel name appears in every message and in the cache key, so it must
 * be printable: no control characters (UTF-8 text is fine). */
static kiln_status check_kernel_name(const char *name) {
  if (name == NULL || name[0] == '\0')
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the kernel has no name (desc->name is NULL or "
                       "empty).");
  for (size_t i = 0; name[i] != '\0'; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c < 0x20 || c == 0x7f)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "the kernel name contains a control character "
                         "(byte 0x%02x at position %zu); a kernel name must "
                         "be printable text.",
                         c, i);
  }
  return KILN_OK;
}

/* Checks the parts of a description copied to full size that need no scan
 * of the source; the names are checked after the scan (check_io_names). */
static kiln_status check_desc(const kiln_kernel_desc *d) {
  kiln_status st = check_kernel_name(d->name);
  if (st != KILN_OK)
    return st;
  if (d->source == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' has no source (desc->source is NULL).",
                       d->name);
  if (d->num_inputs < 0 || (d->num_inputs > 0 && d->input_names == NULL))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': num_inputs is %d but input_names is "
                       "%s.",
                       d->name, d->num_inputs,
                       d->input_names == NULL ? "NULL" : "set");
  if (d->num_outputs < 1)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' has %d outputs; it needs at least one.",
                       d->name, d->num_outputs);
  if (d->output_names == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': output_names is NULL.", d->name);
  if (d->math_mode != KILN_MATH_SAFE && d->math_mode != KILN_MATH_FAST)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': math_mode %d is neither KILN_MATH_SAFE "
                       "nor KILN_MATH_FAST.",
                       d->name, (int)d->math_mode);
  return KILN_OK;
}

/*
 * Checks the input and output names with the dialect's own rules, so that
 * create refuses exactly what a launch would: it builds a trial signature
 * with every input taken as a float32 array of rank 1. That applies the
 * identifier, keyword, reserved-prefix, attribute-name and duplicate
 * checks, and refuses a name that equals a generated x_shape / x_strides /
 * x_ndim the body uses.
 */
static kiln_status check_io_names(const kiln_kernel_desc *d,
                                  const kiln__scan *scan) {
  int n = d->num_inputs + d->num_outputs;
  kiln_dtype *dtypes = kiln__calloc((size_t)n + 1, sizeof *dtypes);
  int *ndims = kiln__calloc((size_t)d->num_inputs + 1, sizeof *ndims);
  kiln_status st = KILN_OK;
  if (dtypes == NULL || ndims == NULL)
    st = kiln__oom("checking the kernel's names");
  for (int i = 0; st == KILN_OK && i < n; i++) {
    dtypes[i] = KILN_FLOAT32;
    if (i < d->num_inputs)
      ndims[i] = 1;
  }
  kiln__signature sig;
  if (st == KILN_OK)
    st = kiln__dialect_build_signature(
        d->name, scan, d->input_names, dtypes, ndims, d->num_inputs,
        d->output_names, dtypes + d->num_inputs, d->num_outputs,
        d->atomic_outputs, NULL, 0, &sig);
  if (st == KILN_OK)
    kiln__signature_free(&sig);
  kiln__free(dtypes);
  kiln__free(ndims);
  return st;
}

/* ---- kernel objects ------------------------------------------------------ */

static void spec_free(kernel_spec *s) {
  if (s == NULL)
    return;
  kiln__free(s->key);
  kiln__free(s->params);
  kiln__free(s);
}

static void free_names(char **names, int n) {
  if (names == NULL)
    return;
  for (int i = 0; i < n; i++)
    kiln__free(names[i]);
  kiln__free(names);
}

/* Frees a kernel in any state of construction. Its modules stay in the
 * process-wide cache, where queued launches may still be using them. */
static void kernel_free(kiln_kernel *k) {
  if (k == NULL)
    return;
  for (int i = 0; i < k->num_specs; i++)
    spec_free(k->specs[i]);
  kiln__free(k->specs);
  if (k->locks_ready > 0)
    pthread_mutex_destroy(&k->table_lock);
  if (k->locks_ready > 1)
    pthread_mutex_destroy(&k->build_lock);
  if (k->scanned)
    kiln__scan_free(&k->scan);
  free_names(k->input_names, k->num_inputs);
  free_names(k->output_names, k->num_outputs);
  kiln__free(k->name);
  kiln__free(k->header);
  kiln__free(k->source);
  kiln__free(k);
}

/* Copies n strings; on failure frees what it made. */
static char **copy_names(const char *const *names, int n) {
  char **out = kiln__calloc(n > 0 ? (size_t)n : 1, sizeof *out);
  if (out == NULL)
    return NULL;
  for (int i = 0; i < n; i++) {
    out[i] = kiln__strdup(names[i]);
    if (out[i] == NULL) {
      free_names(out, i);
      return NULL;
    }
  }
  return out;
}

static kiln_status copy_desc(kiln_kernel *k, const kiln_kernel_desc *d) {
  k->name = kiln__strdup(d->name);
  k->header = kiln__strdup(d->header != NULL ? d->header : "");
  k->source = kiln__strdup(d->source);
  k->input_names = copy_names(d->input_names, d->num_inputs);
  if (k->input_names != NULL)
    k->num_inputs = d->num_inputs;
  k->output_names = copy_names(d->output_names, d->num_outputs);
  if (k->output_names != NULL)
    k->num_outputs = d->num_outputs;
  if (k->name == NULL || k->header == NULL || k->source == NULL ||
      k->input_names == NULL || k->output_names == NULL)
    return kiln__oom("copying the kernel description");
  k->ensure_row_contiguous = d->ensure_row_contiguous;
  k->atomic_outputs = d->atomic_outputs;
  k->math_mode = d->math_mode;
  return KILN_OK;
}

static kiln_status init_locks(kiln_kernel *k) {
  if (pthread_mutex_init(&k->table_lock, NULL) != 0)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kernel '%s': a mutex could not be created.", k->name);
  k->locks_ready = 1;
  if (pthread_mutex_init(&k->build_lock, NULL) != 0)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kernel '%s': a mutex could not be created.", k->name);
  k->locks_ready = 2;
  return KILN_OK;
}

/*
 * Public: checks the description, scans the source once (which refuses a
 * full `kernel void` function), checks the names against the scan and
 * copies everything into the kernel. Nothing is compiled until the first
 * launch.
 */
kiln_status kiln_kernel_create(const kiln_kernel_desc *desc,
                               kiln_kernel **out) {
  KILN_API_ENTER();
  if (desc == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       desc == NULL ? "desc" : "out");
  if (desc->struct_size < offsetof(kiln_kernel_desc, ensure_row_contiguous))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "desc->struct_size is %zu; initialise the "
                       "description with kiln_kernel_desc_init.",
                       desc->struct_size);
  /* Fields past an older caller's struct_size keep their defaults. */
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  memcpy(&d, desc, desc->struct_size < sizeof d ? desc->struct_size : sizeof d);
  d.struct_size = sizeof d;
  kiln_status st = check_desc(&d);
  if (st != KILN_OK)
    return st;
  /* Scan the caller's strings first: the name checks need the scan, and
   * nothing should be copied for a description that is refused. */
  kiln__scan scan;
  st = kiln__dialect_scan(d.name, d.header != NULL ? d.header : "", d.source,
                          &scan);
  if (st != KILN_OK)
    return st;
  st = check_io_names(&d, &scan);
  kiln_kernel *k = NULL;
  if (st == KILN_OK) {
    k = kiln__calloc(1, sizeof *k);
    if (k == NULL)
      st = kiln__oom("creating a kernel");
  }
  if (st != KILN_OK) {
    kiln__scan_free(&scan);
    return st;
  }
  k->scan = scan;
  k->scanned = true;
  st = copy_desc(k, &d);
  if (st == KILN_OK)
    st = init_locks(k);
  if (st != KILN_OK) {
    kernel_free(k);
    return st;
  }
  *out = k;
  return KILN_OK;
}

/* Public: frees the kernel. Launches already queued keep running: their
 * modules belong to the process-wide cache. */
void kiln_kernel_destroy(kiln_kernel *kernel) {
  kernel_free(kernel);
}

/* ---- launch checks ------------------------------------------------------- */

/* "cpu" or "gpu:N", as kiln_device_find spells devices. */
static const char *device_label(const kiln_device *dev, char buf[24]) {
  if (dev->kind == KILN_DEVICE_CPU)
    return "cpu";
  snprintf(buf, 24, "gpu:%d", dev->ordinal);
  return buf;
}

/* Appends "a, b, c" (or "none") for messages about counts. */
static void append_names(kiln__strbuf *sb, char *const *names, int n) {
  if (n == 0)
    kiln__sb_append(sb, "none");
  for (int i = 0; i < n; i++) {
    if (i > 0)
      kiln__sb_append(sb, ", ");
    kiln__sb_append(sb, names[i]);
  }
}

/* `what` is the singular noun ("input"); the plural adds an s. */
static kiln_status count_error(const kiln_kernel *k, const char *what,
                               char *const *names, int want, int got) {
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  append_names(&sb, names, want);
  kiln_status st = kiln__error(
      KILN_ERROR_INVALID_ARGUMENT,
      "kernel '%s' expects %d %s%s (%s) but the launch passes %d.", k->name,
      want, what, want == 1 ? "" : "s", kiln__sb_str(&sb), got);
  kiln__sb_free(&sb);
  return st;
}

/* Copies the caller's launch to full size; newer fields keep defaults. */
static kiln_status copy_launch(const kiln_launch *launch, kiln_launch *L) {
  if (launch == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "launch is NULL.");
  if (launch->struct_size < offsetof(kiln_launch, template_args))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "launch->struct_size is %zu; initialise the launch "
                       "with kiln_launch_init.",
                       launch->struct_size);
  kiln_launch_init(L);
  memcpy(L, launch,
         launch->struct_size < sizeof *L ? launch->struct_size : sizeof *L);
  L->struct_size = sizeof *L;
  return KILN_OK;
}

/* Counts must match the kernel; the inputs come as arrays (L->inputs) or,
 * for a compile, optionally as specs. */
static kiln_status check_counts(const kiln_kernel *k, const launch_plan *p) {
  const kiln_launch *L = &p->L;
  if (L->num_inputs != k->num_inputs)
    return count_error(k, "input", k->input_names, k->num_inputs,
                       L->num_inputs);
  if (L->num_outputs != k->num_outputs)
    return count_error(k, "output", k->output_names, k->num_outputs,
                       L->num_outputs);
  if (L->num_inputs > 0 && p->in_specs == NULL && L->inputs == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': launch->inputs is NULL but num_inputs "
                       "is %d.",
                       k->name, L->num_inputs);
  if (L->outputs == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': launch->outputs is NULL but "
                       "num_outputs is %d.",
                       k->name, L->num_outputs);
  for (int i = 0; p->in_specs == NULL && i < L->num_inputs; i++)
    if (L->inputs[i] == NULL)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': input '%s' is NULL.", k->name,
                         k->input_names[i]);
  return KILN_OK;
}

/* The stream's device, else launch->device, else the first input's, else
 * the default device. */
static kiln_status resolve_device(const kiln_kernel *k, launch_plan *p) {
  const kiln_launch *L = &p->L;
  char a[24], b[24];
  if (L->stream != NULL) {
    p->dev = L->stream->device;
    if (L->device != NULL && L->device != p->dev)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': launch->device is '%s' but "
                         "launch->stream belongs to device '%s'.",
                         k->name, device_label(L->device, a),
                         device_label(p->dev, b));
  } else if (L->device != NULL) {
    p->dev = L->device;
  } else if (L->num_inputs > 0 && p->in_specs == NULL) {
    p->dev = L->inputs[0]->buffer->device;
  } else {
    p->dev = kiln__device_default();
  }
  if (p->dev == NULL)
    return kiln__error(KILN_ERROR_NOT_FOUND,
                       "kernel '%s': no device is available to run it.",
                       k->name);
  return KILN_OK;
}

static kiln_status check_spec_dtype(const kiln_kernel *k, int i,
                                    kiln_dtype dtype) {
  if (!kiln__dtype_valid(dtype))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': input '%s' has an invalid dtype (%d).",
                       k->name, k->input_names[i], (int)dtype);
  return KILN_OK;
}

/* A launch's inputs live on its device and have valid dtypes. */
static kiln_status check_inputs(const kiln_kernel *k, const launch_plan *p) {
  char a[24], b[24];
  for (int i = 0; i < p->L.num_inputs; i++) {
    const kiln_array *in = p->L.inputs[i];
    if (in->buffer->device != p->dev)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': input '%s' is on device '%s' but the "
                         "launch runs on device '%s'.",
                         k->name, k->input_names[i],
                         device_label(in->buffer->device, a),
                         device_label(p->dev, b));
    kiln_status st = check_spec_dtype(k, i, in->dtype);
    if (st != KILN_OK)
      return st;
  }
  return KILN_OK;
}

/* Metal has atomic_int, atomic_uint and atomic_float only. */
static bool atomic_dtype(kiln_dtype dtype) {
  return dtype == KILN_INT32 || dtype == KILN_UINT32 || dtype == KILN_FLOAT32;
}

/* Checks a dtype-and-shape description of input or output `name`. */
static kiln_status check_spec(const kiln_kernel *k, const char *what,
                              const char *name, const kiln_output_spec *o) {
  if (!kiln__dtype_valid(o->dtype))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s '%s' has an invalid dtype (%d).",
                       k->name, what, name, (int)o->dtype);
  if (o->ndim < 0 || o->ndim > KILN_MAX_NDIM)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s '%s' has %d %s; the limit is %d.",
                       k->name, what, name, o->ndim,
                       plural(o->ndim, "dimension", "dimensions"),
                       KILN_MAX_NDIM);
  for (int d = 0; d < o->ndim; d++)
    if (o->shape[d] < 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': %s '%s' has a negative dimension "
                         "%d (%lld).",
                         k->name, what, name, d, (long long)o->shape[d]);
  int64_t count;
  size_t bytes;
  kiln_status st =
      kiln__shape_check(o->dtype, o->ndim, o->shape, &count, &bytes);
  if (st != KILN_OK)
    kiln__error_append("This is the shape of %s '%s' of kernel '%s'.", what,
                       name, k->name);
  return st;
}

static kiln_status check_output(const kiln_kernel *k, int i,
                                const kiln_output_spec *o) {
  kiln_status st = check_spec(k, "output", k->output_names[i], o);
  if (st == KILN_OK && k->atomic_outputs && !atomic_dtype(o->dtype))
    st = kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "kernel '%s' binds its outputs as atomics "
                     "(atomic_outputs), but output '%s' is %s; Metal has "
                     "atomics of int32, uint32 and float32 only.",
                     k->name, k->output_names[i], kiln_dtype_name(o->dtype));
  return st;
}

static kiln_status check_outputs(const kiln_kernel *k, const launch_plan *p) {
  kiln_status st = KILN_OK;
  for (int i = 0; st == KILN_OK && i < p->L.num_outputs; i++)
    st = check_output(k, i, &p->L.outputs[i]);
  return st;
}

static const char axis_name[3] = {'x', 'y', 'z'};

/* Metal's dispatchThreads rules: no zero dimension, the threadgroup
 * clipped to the grid, then at most the device's threads per group. */
static kiln_status check_grid(const kiln_kernel *k, launch_plan *p) {
  const kiln_launch *L = &p->L;
  for (int i = 0; i < 3; i++) {
    if (L->grid[i] == 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': grid.%c is 0; every grid dimension "
                         "must be at least 1.",
                         k->name, axis_name[i]);
    if (L->threadgroup[i] == 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': threadgroup.%c is 0; every "
                         "threadgroup dimension must be at least 1.",
                         k->name, axis_name[i]);
    p->tg[i] = L->threadgroup[i] < L->grid[i] ? L->threadgroup[i] : L->grid[i];
  }
  uint64_t total = (uint64_t)p->tg[0] * p->tg[1] * p->tg[2];
  uint64_t max = p->dev->info.max_threads_per_threadgroup;
  char a[24];
  if (max == 0)
    max = 1024;
  if (total > max)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': a threadgroup of %ux%ux%u = %llu "
                       "threads (after clipping to the grid) is more than "
                       "device '%s' allows (%llu).",
                       k->name, p->tg[0], p->tg[1], p->tg[2],
                       (unsigned long long)total, device_label(p->dev, a),
                       (unsigned long long)max);
  return KILN_OK;
}

static bool name_taken(const kiln_kernel *k, const kiln_launch *L, int upto,
                       const char *name) {
  for (int i = 0; i < k->num_inputs; i++)
    if (strcmp(k->input_names[i], name) == 0)
      return true;
  for (int i = 0; i < k->num_outputs; i++)
    if (strcmp(k->output_names[i], name) == 0)
      return true;
  for (int i = 0; i < upto; i++)
    if (strcmp(L->template_args[i].name, name) == 0)
      return true;
  return false;
}

static kiln_status check_targ(const kiln_kernel *k, const kiln_launch *L,
                              int i) {
  const kiln_template_arg *t = &L->template_args[i];
  if (!is_identifier(t->name))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': template argument %d has %s name.",
                       k->name, i, t->name == NULL ? "no" : "an invalid");
  if (name_taken(k, L, i, t->name))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': template argument '%s' reuses the name "
                       "of an input, output or earlier template argument.",
                       k->name, t->name);
  switch (t->kind) {
  case KILN_TEMPLATE_DTYPE:
    if (!kiln__dtype_valid(t->dtype))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': template argument '%s' has an "
                         "invalid dtype (%d).",
                         k->name, t->name, (int)t->dtype);
    return KILN_OK;
  case KILN_TEMPLATE_INT:
    if (t->value < INT32_MIN || t->value > INT32_MAX)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': template argument '%s' is %lld, "
                         "which does not fit an int.",
                         k->name, t->name, (long long)t->value);
    return KILN_OK;
  case KILN_TEMPLATE_BOOL:
    if (t->value != 0 && t->value != 1)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': bool template argument '%s' is %lld; "
                         "it must be 0 or 1.",
                         k->name, t->name, (long long)t->value);
    return KILN_OK;
  }
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "kernel '%s': template argument '%s' has an unknown "
                     "kind (%d).",
                     k->name, t->name, (int)t->kind);
}

static kiln_status check_targs(const kiln_kernel *k, const kiln_launch *L) {
  if (L->num_template_args < 0 ||
      (L->num_template_args > 0 && L->template_args == NULL))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': num_template_args is %d but "
                       "template_args is %s.",
                       k->name, L->num_template_args,
                       L->template_args == NULL ? "NULL" : "set");
  for (int i = 0; i < L->num_template_args; i++) {
    kiln_status st = check_targ(k, L, i);
    if (st != KILN_OK)
      return st;
  }
  return KILN_OK;
}

/* Copies the launch and checks the counts: the start of every plan. */
static kiln_status plan_begin(const kiln_kernel *k, const kiln_launch *launch,
                              const kiln_array_spec *in_specs,
                              launch_plan *p) {
  p->in_specs = in_specs;
  kiln_status st = copy_launch(launch, &p->L);
  if (st == KILN_OK)
    st = check_counts(k, p);
  return st;
}

/* Step 1 of a launch: everything about the call that needs no module. */
static kiln_status plan_launch(const kiln_kernel *k, const kiln_launch *launch,
                               launch_plan *p) {
  kiln_status st = plan_begin(k, launch, NULL, p);
  if (st == KILN_OK)
    st = resolve_device(k, p);
  if (st == KILN_OK)
    st = check_inputs(k, p);
  if (st == KILN_OK)
    st = check_outputs(k, p);
  if (st == KILN_OK)
    st = check_grid(k, p);
  if (st == KILN_OK)
    st = check_targs(k, &p->L);
  return st;
}

/* A compile's inputs: specs are checked like outputs; arrays are valid
 * already, and only their dtypes and ranks matter (not their device). */
static kiln_status check_input_specs(const kiln_kernel *k,
                                     const launch_plan *p) {
  for (int i = 0; i < p->L.num_inputs; i++) {
    kiln_status st =
        p->in_specs != NULL
            ? check_spec(k, "input", k->input_names[i], &p->in_specs[i])
            : check_spec_dtype(k, i, p->L.inputs[i]->dtype);
    if (st != KILN_OK)
      return st;
  }
  return KILN_OK;
}

/*
 * The checks of kiln_kernel_compile: those of a launch that concern the
 * generated source (counts, dtypes, ranks, template arguments), without
 * the grid. The device is resolved only when the target is the device's.
 */
static kiln_status plan_compile(const kiln_kernel *k, const kiln_launch *launch,
                                const kiln_array_spec *in_specs,
                                bool needs_device, launch_plan *p) {
  kiln_status st = plan_begin(k, launch, in_specs, p);
  if (st == KILN_OK)
    st = check_input_specs(k, p);
  if (st == KILN_OK)
    st = check_outputs(k, p);
  if (st == KILN_OK)
    st = check_targs(k, &p->L);
  if (st == KILN_OK && needs_device)
    st = resolve_device(k, p);
  return st;
}

/* ---- specialisation keys ------------------------------------------------- */

/* The CUDA launch bound a plan compiles with (0: none; see
 * find_spec_fitting). Part of the specialisation key. */
static uint32_t block_bound(const launch_plan *p) { return p->bound; }

/* The bytes the key of this launch takes (see spec_key). */
static size_t spec_key_size(const launch_plan *p) {
  size_t n = sizeof(int) + sizeof(uint32_t) + (size_t)p->L.num_inputs + 1 +
             (size_t)p->L.num_outputs + 1;
  for (int i = 0; i < p->L.num_template_args; i++)
    n += strlen(p->L.template_args[i].name) + 1 + 1 + 8;
  return n;
}

/*
 * Writes the specialisation key: the device index, one byte per input
 * (dtype, high bit for 0-d), one per output dtype, then each template
 * argument as name, NUL, kind and 8 value bytes. Everything the generated
 * source depends on, and nothing else.
 */
static void spec_key(const launch_plan *p, unsigned char *out) {
  memcpy(out, &p->dev->index, sizeof(int));
  out += sizeof(int);
  uint32_t bound = block_bound(p);
  memcpy(out, &bound, sizeof bound);
  out += sizeof bound;
  for (int i = 0; i < p->L.num_inputs; i++)
    *out++ = (unsigned char)(in_dtype(p, i) | (in_ndim(p, i) == 0 ? 0x80 : 0));
  *out++ = 0xff;
  for (int i = 0; i < p->L.num_outputs; i++)
    *out++ = (unsigned char)p->L.outputs[i].dtype;
  *out++ = 0xff;
  for (int i = 0; i < p->L.num_template_args; i++) {
    const kiln_template_arg *t = &p->L.template_args[i];
    size_t len = strlen(t->name) + 1;
    memcpy(out, t->name, len);
    out += len;
    *out++ = (unsigned char)t->kind;
    int64_t v = t->kind == KILN_TEMPLATE_DTYPE ? (int64_t)t->dtype : t->value;
    memcpy(out, &v, 8);
    out += 8;
  }
}

static kernel_spec *table_find(kiln_kernel *k, const unsigned char *key,
                               size_t len) {
  kernel_spec *found = NULL;
  pthread_mutex_lock(&k->table_lock);
  for (int i = 0; i < k->num_specs && found == NULL; i++) {
    kernel_spec *s = k->specs[i];
    if (s->key_len == len && memcmp(s->key, key, len) == 0)
      found = s;
  }
  pthread_mutex_unlock(&k->table_lock);
  return found;
}

static kiln_status table_add(kiln_kernel *k, kernel_spec *s) {
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&k->table_lock);
  if (k->num_specs == k->cap_specs) {
    int cap = k->cap_specs > 0 ? 2 * k->cap_specs : 4;
    kernel_spec **grown = kiln__realloc(k->specs, (size_t)cap * sizeof *grown);
    if (grown == NULL) {
      st = kiln__oom("recording a kernel specialisation");
    } else {
      k->specs = grown;
      k->cap_specs = cap;
    }
  }
  if (st == KILN_OK)
    k->specs[k->num_specs++] = s;
  pthread_mutex_unlock(&k->table_lock);
  return st;
}

/* ---- source generation --------------------------------------------------- */

/* Builds the signature for this launch's dtypes and ranks. */
static kiln_status make_signature(const kiln_kernel *k, const launch_plan *p,
                                  kiln__signature *sig) {
  int ni = p->L.num_inputs, no = p->L.num_outputs;
  kiln_dtype *dtypes = kiln__calloc((size_t)(ni + no) + 1, sizeof *dtypes);
  int *ndims = kiln__calloc((size_t)ni + 1, sizeof *ndims);
  if (dtypes == NULL || ndims == NULL) {
    kiln__free(dtypes);
    kiln__free(ndims);
    return kiln__oom("generating a kernel's source");
  }
  for (int i = 0; i < ni; i++) {
    dtypes[i] = in_dtype(p, i);
    ndims[i] = in_ndim(p, i);
  }
  for (int i = 0; i < no; i++)
    dtypes[ni + i] = p->L.outputs[i].dtype;
  kiln_status st = kiln__dialect_build_signature(
      k->name, &k->scan, (const char *const *)k->input_names, dtypes, ndims, ni,
      (const char *const *)k->output_names, dtypes + ni, no, k->atomic_outputs,
      p->L.template_args, p->L.num_template_args, sig);
  if (st == KILN_OK)
    sig->max_threads = block_bound(p);
  kiln__free(dtypes);
  kiln__free(ndims);
  return st;
}

/* Writes the whole translation unit for `target` with `prelude` into
 * *src (initialised here; freed here on failure, with the signature). */
static kiln_status generate_for(const kiln_kernel *k, const launch_plan *p,
                                kiln__codegen_target target,
                                const char *prelude, kiln__signature *sig,
                                kiln__strbuf *src) {
  kiln__sb_init(src);
  kiln_status st = make_signature(k, p, sig);
  if (st != KILN_OK)
    return st;
  st = kiln__dialect_generate(sig, target, prelude != NULL ? prelude : "", src);
  if (st == KILN_OK && src->failed)
    st = kiln__oom("generating a kernel's source");
  if (st != KILN_OK) {
    kiln__signature_free(sig);
    kiln__sb_free(src);
  }
  return st;
}

/* The source for the plan's device (launches, generate_source). */
static kiln_status generate(const kiln_kernel *k, const launch_plan *p,
                            kiln__signature *sig, kiln__strbuf *src) {
  kiln__codegen_target target =
      p->dev->kind == KILN_DEVICE_GPU ? KILN__TARGET_CUDA : KILN__TARGET_CPU;
  return generate_for(k, p, target, p->dev->ops->prelude(p->dev), sig, src);
}

/* Records what the launch needs from the signature: kind and index of
 * each parameter, in order. */
static kiln_status make_spec(const unsigned char *key, size_t len,
                             const kiln__signature *sig, kiln__kmodule *kmod,
                             kernel_spec **out) {
  kernel_spec *s = kiln__calloc(1, sizeof *s);
  if (s == NULL)
    return kiln__oom("recording a kernel specialisation");
  s->key = kiln__malloc(len);
  s->params = kiln__calloc((size_t)sig->num_params + 1, sizeof *s->params);
  if (s->key == NULL || s->params == NULL) {
    spec_free(s);
    return kiln__oom("recording a kernel specialisation");
  }
  memcpy(s->key, key, len);
  s->key_len = len;
  s->kmod = kmod;
  s->num_params = sig->num_params;
  for (int i = 0; i < sig->num_params; i++) {
    s->params[i].kind = sig->params[i].kind;
    s->params[i].io_index = sig->params[i].io_index;
  }
  *out = s;
  return KILN_OK;
}

/* The miss path, under build_lock: generate, obtain the module from the
 * process-wide cache, and remember it. */
static kiln_status build_spec(kiln_kernel *k, const launch_plan *p,
                              const unsigned char *key, size_t len,
                              kernel_spec **out) {
  kiln__signature sig;
  kiln__strbuf src;
  kiln_status st = generate(k, p, &sig, &src);
  if (st != KILN_OK)
    return st;
  kiln__kmodule *kmod = NULL;
  st = kiln__kcache_obtain(p->dev, kiln__sb_str(&src), k->math_mode, k->name,
                           &kmod);
  kernel_spec *s = NULL;
  if (st == KILN_OK)
    st = make_spec(key, len, &sig, kmod, &s);
  if (st == KILN_OK) {
    st = table_add(k, s);
    if (st != KILN_OK)
      spec_free(s);
  }
  kiln__signature_free(&sig);
  kiln__sb_free(&src);
  if (st == KILN_OK)
    *out = s;
  return st;
}

/* verbose: the only printing kiln does, and only on request. */
static kiln_status print_source(const kiln_kernel *k, const launch_plan *p) {
  kiln__signature sig;
  kiln__strbuf src;
  kiln_status st = generate(k, p, &sig, &src);
  if (st != KILN_OK)
    return st;
  fprintf(stderr, "// kiln: generated source of kernel '%s'\n%s\n", k->name,
          kiln__sb_str(&src));
  fflush(stderr);
  kiln__signature_free(&sig);
  kiln__sb_free(&src);
  return KILN_OK;
}

/* Steps 2 and 3: the specialisation for this launch, built on a miss. */
static kiln_status find_spec(kiln_kernel *k, const launch_plan *p,
                             kernel_spec **out) {
  unsigned char stack_key[256];
  size_t len = spec_key_size(p);
  unsigned char *key = len <= sizeof stack_key ? stack_key : kiln__malloc(len);
  if (key == NULL)
    return kiln__oom("looking up a kernel specialisation");
  spec_key(p, key);
  kiln_status st = KILN_OK;
  if (p->L.verbose)
    st = print_source(k, p);
  kernel_spec *s = st == KILN_OK ? table_find(k, key, len) : NULL;
  if (s != NULL) {
    kiln__kcache_count(KILN__KCACHE_MEMORY_HITS);
  } else if (st == KILN_OK) {
    pthread_mutex_lock(&k->build_lock);
    /* Another thread may have built it while we waited. */
    s = table_find(k, key, len);
    if (s != NULL)
      kiln__kcache_count(KILN__KCACHE_MEMORY_HITS);
    else
      st = build_spec(k, p, key, len, &s);
    pthread_mutex_unlock(&k->build_lock);
  }
  if (key != stack_key)
    kiln__free(key);
  if (st == KILN_OK)
    *out = s;
  return st;
}

/*
 * find_spec, then make sure the kernel can run the launch's threadgroup.
 * A CUDA kernel compiled without __launch_bounds__ may use so many
 * registers that a large threadgroup cannot launch (the driver's limit for
 * the function is below the block size); then it is compiled once more for
 * this block size, so that the compiler keeps registers within it (spilling
 * if it must), as Metal's compiler does. Kernels that fit, nearly all of
 * them, compile once for every threadgroup size.
 */
static kiln_status find_spec_fitting(kiln_kernel *k, launch_plan *p,
                                     kernel_spec **out) {
  kiln_status st = find_spec(k, p, out);
  if (st != KILN_OK || p->dev->kind != KILN_DEVICE_GPU)
    return st;
  uint32_t threads = p->tg[0] * p->tg[1] * p->tg[2];
  uint32_t limit = (*out)->kmod->info.max_threads;
  if (limit == 0 || threads <= limit)
    return KILN_OK;
  p->bound = threads;
  return find_spec(k, p, out);
}

/* ---- running ------------------------------------------------------------- */

/* Per-launch scratch, one allocation: the arrays and buffers involved and
 * the argument list with the bytes of shape/strides/ndim parameters. */
typedef struct launch_work {
  kiln_array **outs;   /* num_outputs */
  kiln_array **temps;  /* num_inputs: contiguous copies, or NULL */
  kiln_array **used;   /* num_inputs: what the kernel reads */
  kiln__buffer **bufs; /* used inputs, outputs, then copied originals */
  int num_bufs;
  kiln__arg *args;
  int64_t (*scratch)[KILN_MAX_NDIM]; /* one row per parameter */
} launch_work;

static kiln_status work_alloc(const launch_plan *p, const kernel_spec *s,
                              launch_work *w) {
  size_t ni = (size_t)p->L.num_inputs, no = (size_t)p->L.num_outputs;
  size_t np = (size_t)s->num_params;
  size_t bytes = np * sizeof *w->scratch + (no + 2 * ni) * sizeof(void *) +
                 (2 * ni + no) * sizeof(void *) + np * sizeof(kiln__arg);
  char *block = kiln__calloc(1, bytes > 0 ? bytes : 1);
  if (block == NULL)
    return kiln__oom("preparing a kernel launch");
  /* Largest alignment first: int64 rows, then pointers, then args. */
  w->scratch = (int64_t(*)[KILN_MAX_NDIM])(void *)block;
  block += np * sizeof *w->scratch;
  w->outs = (kiln_array **)(void *)block;
  w->temps = w->outs + no;
  w->used = w->temps + ni;
  w->bufs = (kiln__buffer **)(void *)(w->used + ni);
  w->args = (kiln__arg *)(void *)(w->bufs + 2 * ni + no);
  w->num_bufs = 0;
  return KILN_OK;
}

static void work_free(launch_work *w) {
  kiln__free(w->scratch); /* the start of the block */
}

/* Destroys outputs and copies; on failure nothing reaches the caller. */
static void work_release(const launch_plan *p, launch_work *w,
                         bool keep_outputs) {
  for (int i = 0; i < p->L.num_inputs; i++)
    if (w->temps[i] != NULL)
      kiln__array_destroy(w->temps[i]);
  for (int i = 0; !keep_outputs && p->into == NULL && i < p->L.num_outputs;
       i++)
    if (w->outs[i] != NULL)
      kiln__array_destroy(w->outs[i]);
}

/* The shape parameter holds int32 dimensions (MLX's `const constant
 * int*`); refuse, before anything is enqueued, what does not fit. */
static kiln_status check_shape_params(const kiln_kernel *k,
                                      const launch_plan *p,
                                      const kernel_spec *s) {
  for (int j = 0; j < s->num_params; j++) {
    if (s->params[j].kind != KILN__PARAM_SHAPE)
      continue;
    int i = s->params[j].io_index;
    const kiln_array *in = p->L.inputs[i];
    for (int d = 0; d < in->ndim; d++)
      if (in->shape[d] > INT32_MAX)
        return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                           "kernel '%s': dimension %d of input '%s' is "
                           "%lld, more than %s_shape (int) can hold.",
                           k->name, d, k->input_names[i],
                           (long long)in->shape[d], k->input_names[i]);
  }
  return KILN_OK;
}

/* Step 4: the module's threadgroup memory must fit the device. */
static kiln_status check_tg_memory(const kiln_kernel *k, const launch_plan *p,
                                   const kernel_spec *s) {
  uint64_t need = s->kmod->info.threadgroup_memory;
  uint64_t have = p->dev->info.max_threadgroup_memory;
  char a[24];
  if (have > 0 && need > have)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' uses %llu bytes of threadgroup memory "
                       "but device '%s' has %llu.",
                       k->name, (unsigned long long)need,
                       device_label(p->dev, a), (unsigned long long)have);
  return KILN_OK;
}

/* Step 5a: new outputs, and row-contiguous copies of strided inputs. */
static kiln_status make_arrays(const kiln_kernel *k, const launch_plan *p,
                               launch_work *w) {
  for (int i = 0; i < p->L.num_outputs; i++) {
    if (p->into != NULL) {
      w->outs[i] = p->into[i];
      continue;
    }
    const kiln_output_spec *o = &p->L.outputs[i];
    kiln_status st =
        kiln__array_create(p->dev, o->dtype, o->ndim, o->shape, &w->outs[i]);
    if (st != KILN_OK)
      return st;
  }
  for (int i = 0; i < p->L.num_inputs; i++) {
    kiln_array *in = p->L.inputs[i];
    w->used[i] = in;
    if (!k->ensure_row_contiguous || in->ndim == 0 ||
        kiln__array_is_contiguous(in))
      continue;
    kiln_status st = kiln__array_contiguous(in, p->stream, &w->temps[i]);
    if (st != KILN_OK)
      return st;
    w->used[i] = w->temps[i];
  }
  /* Reads first, then writes, then the originals of copies (held too). */
  for (int i = 0; i < p->L.num_inputs; i++)
    w->bufs[w->num_bufs++] = w->used[i]->buffer;
  for (int i = 0; i < p->L.num_outputs; i++)
    w->bufs[w->num_bufs++] = w->outs[i]->buffer;
  for (int i = 0; i < p->L.num_inputs; i++)
    if (w->temps[i] != NULL)
      w->bufs[w->num_bufs++] = p->L.inputs[i]->buffer;
  return KILN_OK;
}

/* Step 5b: one argument per signature parameter. */
static void make_args(const kernel_spec *s, launch_work *w) {
  for (int j = 0; j < s->num_params; j++) {
    int i = s->params[j].io_index;
    kiln__arg *a = &w->args[j];
    int64_t *row = w->scratch[j];
    const kiln_array *in = NULL;
    if (s->params[j].kind != KILN__PARAM_OUTPUT)
      in = w->used[i];
    a->kind = KILN__ARG_BYTES;
    switch (s->params[j].kind) {
    case KILN__PARAM_INPUT:
    case KILN__PARAM_SCALAR:
      a->kind = KILN__ARG_BUFFER;
      a->ptr = kiln__array_data(in);
      break;
    case KILN__PARAM_OUTPUT:
      a->kind = KILN__ARG_BUFFER;
      a->ptr = kiln__array_data(w->outs[i]);
      break;
    /* Shapes and strides always travel as KILN_MAX_NDIM entries, zero
     * padded: a GPU kernel takes them as fixed-size by-value parameters. */
    case KILN__PARAM_SHAPE: {
      int32_t *dims = (int32_t *)(void *)row;
      memset(dims, 0, KILN_MAX_NDIM * sizeof(int32_t));
      for (int d = 0; d < in->ndim; d++)
        dims[d] = (int32_t)in->shape[d];
      a->bytes = dims;
      a->size = KILN_MAX_NDIM * sizeof(int32_t);
      break;
    }
    case KILN__PARAM_STRIDES:
      memset(row, 0, KILN_MAX_NDIM * sizeof(int64_t));
      memcpy(row, in->strides, (size_t)in->ndim * sizeof(int64_t));
      a->bytes = row;
      a->size = KILN_MAX_NDIM * sizeof(int64_t);
      break;
    case KILN__PARAM_NDIM: {
      int32_t *nd = (int32_t *)(void *)row;
      *nd = in->ndim;
      a->bytes = nd;
      a->size = sizeof(int32_t);
      break;
    }
    }
  }
}

/* Enqueues the init_value fills; *enqueued says if any work went in. */
static kiln_status fill_outputs(const launch_plan *p, launch_work *w,
                                bool *enqueued) {
  unsigned char pattern[16];
  for (int i = 0; i < p->L.num_outputs; i++) {
    kiln_array *o = w->outs[i];
    if (o->size == 0)
      continue;
    kiln__dtype_from_double(o->dtype, p->L.init_value, pattern);
    kiln_status st =
        p->dev->ops->fill(p->stream, kiln__array_data(o), (size_t)o->size,
                          pattern, kiln_dtype_size(o->dtype));
    if (st != KILN_OK)
      return st;
    *enqueued = true;
  }
  return KILN_OK;
}

/* See core.h. Set once, before the kernel is shared between threads. */
void kiln__kernel_set_dynamic_shared(kiln_kernel *kernel, uint32_t bytes) {
  kernel->dynamic_shared = bytes;
}

/* See core.h. Set once, before the kernel is shared between threads. */
void kiln__kernel_set_cooperative(kiln_kernel *kernel) {
  kernel->cooperative = true;
}

/* Step 6, under the stream's submit lock: order after other streams,
 * fill, launch, record, and keep every buffer alive until the stream gets
 * here. If work went in but a later step failed, the buffers are still
 * held (or the stream drained) so that destroying the outputs is safe. */
static kiln_status submit(const kiln_kernel *k, const launch_plan *p,
                          const kernel_spec *s, launch_work *w) {
  int ni = p->L.num_inputs, no = p->L.num_outputs;
  kiln__launch_params lp;
  lp.kernel_name = k->name;
  memcpy(lp.grid, p->L.grid, sizeof lp.grid);
  memcpy(lp.tg, p->tg, sizeof lp.tg);
  lp.args = w->args;
  lp.num_args = s->num_params;
  lp.dynamic_shared = k->dynamic_shared;
  lp.cooperative = k->cooperative;
  bool enqueued = false;
  pthread_mutex_lock(&p->stream->submit_lock);
  kiln_status st =
      kiln__hazards_before(p->stream, w->bufs, ni, w->bufs + ni, no);
  if (st == KILN_OK && p->L.has_init_value)
    st = fill_outputs(p, w, &enqueued);
  if (st == KILN_OK) {
    st = p->dev->ops->launch(p->stream, s->kmod->module, &lp);
    enqueued = enqueued || st == KILN_OK;
  }
  if (st == KILN_OK)
    st = kiln__hazards_after(p->stream, w->bufs, ni, w->bufs + ni, no);
  kiln_status hold = KILN_OK;
  if (enqueued)
    hold = kiln__hold_until_done(p->stream, w->bufs, w->num_bufs);
  pthread_mutex_unlock(&p->stream->submit_lock);
  if (hold != KILN_OK) {
    /* Without the hold, the buffers must not die under queued work. */
    (void)kiln__stream_synchronize(p->stream);
    if (st == KILN_OK)
      st = hold;
  }
  return st;
}

/* Steps 4 to 6 for a plan whose specialisation is known. */
static kiln_status run(const kiln_kernel *k, const launch_plan *p,
                       const kernel_spec *s, kiln_array **outputs) {
  kiln_status st = check_tg_memory(k, p, s);
  if (st == KILN_OK)
    st = check_shape_params(k, p, s);
  if (st != KILN_OK)
    return st;
  launch_work w;
  memset(&w, 0, sizeof w);
  st = work_alloc(p, s, &w);
  if (st != KILN_OK)
    return st;
  st = make_arrays(k, p, &w);
  if (st == KILN_OK) {
    make_args(s, &w);
    st = submit(k, p, s, &w);
  }
  work_release(p, &w, st == KILN_OK);
  if (st == KILN_OK && outputs != NULL)
    memcpy(outputs, w.outs, (size_t)p->L.num_outputs * sizeof *outputs);
  work_free(&w);
  return st;
}

/* The common end of both launch entry points: picks the stream, finds or
 * builds the specialisation and runs it. */
static kiln_status launch_planned(kiln_kernel *kernel, launch_plan *p,
                                  kiln_array **outputs) {
  p->stream = p->L.stream != NULL ? p->L.stream : kiln__default_stream(p->dev);
  if (p->stream == NULL)
    return kiln__oom("creating the default stream");
  kernel_spec *s = NULL;
  kiln_status st = find_spec_fitting(kernel, p, &s);
  if (st != KILN_OK)
    return st;
  return run(kernel, p, s, outputs);
}

/*
 * Public: checks the call, finds or builds the specialisation, and
 * enqueues the launch (see kiln.h). Nothing is enqueued, and *outputs is
 * untouched, unless every check passed.
 */
kiln_status kiln_kernel_launch(kiln_kernel *kernel, const kiln_launch *launch,
                               kiln_array **outputs) {
  KILN_API_ENTER();
  if (kernel == NULL || outputs == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       kernel == NULL ? "kernel" : "outputs");
  launch_plan p;
  memset(&p, 0, sizeof p);
  kiln_status st = plan_launch(kernel, launch, &p);
  if (st != KILN_OK)
    return st;
  return launch_planned(kernel, &p, outputs);
}

/*
 * For kiln's own drivers (src/linalg/): launches like kiln_kernel_launch,
 * but the kernel writes the existing arrays `into` (one per output; each
 * must have the dtype and shape of its output spec and live on the launch's
 * device). They are written in place, in stream order, ordered against
 * other streams like any output. Errors carry the caller's API name.
 */
kiln_status kiln__kernel_launch_into(kiln_kernel *kernel,
                                     const kiln_launch *launch,
                                     kiln_array *const *into) {
  launch_plan p;
  memset(&p, 0, sizeof p);
  kiln_status st = plan_launch(kernel, launch, &p);
  if (st != KILN_OK)
    return st;
  for (int i = 0; i < p.L.num_outputs; i++) {
    const kiln_output_spec *o = &p.L.outputs[i];
    kiln_array *a = into[i];
    bool same = a != NULL && a->dtype == o->dtype && a->ndim == o->ndim &&
                a->buffer->device == p.dev;
    for (int d = 0; same && d < o->ndim; d++)
      same = a->shape[d] == o->shape[d];
    if (!same)
      return kiln__error(KILN_ERROR_INTERNAL,
                         "kernel '%s': output %d given to write in place does "
                         "not match its spec.",
                         kernel->name, i);
  }
  p.into = into;
  return launch_planned(kernel, &p, NULL);
}

/* A copy in C-library memory, for results the caller releases with
 * free() rather than through kiln's allocation hooks. */
static void *c_copy(const void *data, size_t size) {
  void *copy = malloc(size > 0 ? size : 1);
  if (copy != NULL && size > 0)
    memcpy(copy, data, size);
  return copy;
}

/*
 * Public: the generated source for this launch, checked as a launch would
 * be but without a stream, compiling or running. The text is copied into
 * C-library memory because the caller releases it with free().
 */
kiln_status kiln_kernel_generate_source(kiln_kernel *kernel,
                                        const kiln_launch *launch, char **out) {
  KILN_API_ENTER();
  if (kernel == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       kernel == NULL ? "kernel" : "out");
  launch_plan p;
  memset(&p, 0, sizeof p);
  kiln_status st = plan_launch(kernel, launch, &p);
  if (st != KILN_OK)
    return st;
  kiln__signature sig;
  kiln__strbuf src;
  st = generate(kernel, &p, &sig, &src);
  if (st != KILN_OK)
    return st;
  const char *text = kiln__sb_str(&src);
  char *copy = c_copy(text, strlen(text) + 1);
  kiln__signature_free(&sig);
  kiln__sb_free(&src);
  if (copy == NULL)
    return kiln__oom("returning the generated source");
  *out = copy;
  return KILN_OK;
}

/* ---- compiling for a target ---------------------------------------------- */

/* Where kiln_kernel_compile sends the source: a backend and its target. */
typedef struct compile_target {
  const kiln__backend_ops *ops;
  kiln__codegen_target codegen;
  char name[32]; /* "cpu", "sm_90a" */
} compile_target;

static kiln_status bad_target(const kiln_kernel *k, const char *target) {
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "kernel '%s': '%.40s' is not a compile target; use "
                     "\"cpu\", a CUDA architecture such as \"sm_90a\" or "
                     "\"sm_80\", or NULL for the launch device's own target.",
                     k->name, target);
}

/* NULL: the plan's device's own target; "cpu": the CPU backend; "sm_*":
 * the CUDA backend (which checks the architecture itself). */
static kiln_status resolve_target(const kiln_kernel *k, const launch_plan *p,
                                  const char *target, compile_target *t) {
  if (target == NULL) {
    bool gpu = p->dev->kind == KILN_DEVICE_GPU;
    t->ops = p->dev->ops;
    t->codegen = gpu ? KILN__TARGET_CUDA : KILN__TARGET_CPU;
    snprintf(t->name, sizeof t->name, "%s", gpu ? p->dev->info.arch : "cpu");
  } else if (strlen(target) >= sizeof t->name) {
    return bad_target(k, target);
  } else if (strcmp(target, "cpu") == 0) {
    t->ops = &kiln__cpu_backend;
    t->codegen = KILN__TARGET_CPU;
    snprintf(t->name, sizeof t->name, "%s", target);
  } else if (strncmp(target, "sm_", 3) == 0) {
    t->ops = &kiln__cuda_backend;
    t->codegen = KILN__TARGET_CUDA;
    snprintf(t->name, sizeof t->name, "%s", target);
  } else {
    return bad_target(k, target);
  }
  if (t->ops->compile_for_target == NULL || t->ops->target_prelude == NULL)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "kernel '%s' cannot be compiled for target '%s': "
                       "this build of kiln's %s backend cannot compile "
                       "for a named target.",
                       k->name, t->name, t->ops->name);
  return KILN_OK;
}

/* Generates and compiles; fills *bin, *info and (kiln__malloc'ed) *text. */
static kiln_status compile_plan(const kiln_kernel *k, const launch_plan *p,
                                const compile_target *t, kiln__binary *bin,
                                kiln__compile_info *info, char **text) {
  kiln__signature sig;
  kiln__strbuf src;
  kiln_status st = generate_for(k, p, t->codegen,
                                t->ops->target_prelude(t->name), &sig, &src);
  if (st != KILN_OK)
    return st;
  char *log = NULL;
  memset(info, 0, sizeof *info);
  info->registers = -1;
  st = t->ops->compile_for_target(t->name, kiln__sb_str(&src), k->math_mode,
                                  k->name, bin, &log, info);
  if (st == KILN_ERROR_COMPILE && log != NULL)
    st = kiln__kcache_compile_error(k->name, log);
  kiln__free(log);
  kiln__signature_free(&sig);
  if (st == KILN_OK) {
    *text = kiln__sb_take(&src);
    if (*text == NULL) {
      kiln__free(bin->data);
      st = kiln__oom("returning the generated source");
    }
  }
  kiln__sb_free(&src);
  return st;
}

static void fill_report(const compile_target *t, const kiln__compile_info *i,
                        kiln_compile_report *report) {
  kiln_compile_report r;
  memset(&r, 0, sizeof r);
  r.struct_size = report->struct_size;
  snprintf(r.target, sizeof r.target, "%s", t->name);
  r.registers = i->registers;
  r.threadgroup_memory = i->shared_bytes;
  r.local_memory = i->local_bytes;
  r.spill_store_bytes = i->spill_store_bytes;
  r.spill_load_bytes = i->spill_load_bytes;
  r.compile_ms = i->compile_ms;
  /* A newer caller's larger struct keeps its extra fields as they were. */
  memcpy(report, &r, sizeof r);
}

/* Hands the results over in C-library memory, all or nothing. */
static kiln_status deliver(const char *text, const kiln__binary *bin,
                           char **source_out, void **binary_out,
                           size_t *binary_size) {
  char *src = source_out != NULL ? c_copy(text, strlen(text) + 1) : NULL;
  void *data = binary_out != NULL ? c_copy(bin->data, bin->size) : NULL;
  if ((source_out != NULL && src == NULL) ||
      (binary_out != NULL && data == NULL)) {
    free(src);
    free(data);
    return kiln__oom("returning the compiled kernel");
  }
  if (source_out != NULL)
    *source_out = src;
  if (binary_out != NULL) {
    *binary_out = data;
    *binary_size = bin->size;
  }
  return KILN_OK;
}

static kiln_status check_compile_args(const kiln_compile_report *report,
                                      void **binary_out,
                                      size_t *binary_size) {
  if (report != NULL && report->struct_size < sizeof *report)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "report->struct_size is %zu; set it to "
                       "sizeof(kiln_compile_report).",
                       report->struct_size);
  if (binary_out != NULL && binary_size == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "binary_out is set but binary_size is NULL; both are "
                       "needed to return the compiled kernel.");
  return KILN_OK;
}

/*
 * Public: checks the call as a launch would (without the grid), generates
 * the source for the target and compiles it there, bypassing the cache
 * (see kiln.h). Outputs are written only on success.
 */
kiln_status kiln_kernel_compile(kiln_kernel *kernel, const kiln_launch *launch,
                                const kiln_array_spec *input_specs,
                                const char *target,
                                kiln_compile_report *report,
                                char **source_out, void **binary_out,
                                size_t *binary_size) {
  KILN_API_ENTER();
  if (kernel == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "kernel is NULL.");
  kiln_status st = check_compile_args(report, binary_out, binary_size);
  if (st != KILN_OK)
    return st;
  launch_plan p;
  memset(&p, 0, sizeof p);
  st = plan_compile(kernel, launch, input_specs, target == NULL, &p);
  compile_target t;
  memset(&t, 0, sizeof t);
  if (st == KILN_OK)
    st = resolve_target(kernel, &p, target, &t);
  if (st != KILN_OK)
    return st;
  kiln__binary bin = {NULL, 0};
  kiln__compile_info info;
  char *text = NULL;
  st = compile_plan(kernel, &p, &t, &bin, &info, &text);
  if (st != KILN_OK)
    return st;
  st = deliver(text, &bin, source_out, binary_out, binary_size);
  if (st == KILN_OK && report != NULL)
    fill_report(&t, &info, report);
  kiln__free(text);
  kiln__free(bin.data);
  return st;
}
