/*
 * Arrays: a dtype, a shape and element strides over a refcounted buffer.
 * Views share the buffer; work that touches an array orders itself against
 * other streams through the buffer's hazard record (buffer.c) and keeps the
 * buffer alive until it has run (kiln__hold_until_done).
 *
 * Every function that enqueues work follows one pattern, under the
 * stream's submit lock so that no other thread's work slips in between:
 * hazards_before, enqueue, hazards_after, hold_until_done.
 */
#include "core/core.h"

#include <stdio.h>
#include <string.h>

/* ---- shapes and layout --------------------------------------------------- */

static kiln_status check_dtype(kiln_dtype dtype) {
  if (!kiln__dtype_valid(dtype))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "dtype %d is not a kiln_dtype; use one of KILN_BOOL "
                       "to KILN_FLOAT64.",
                       (int)dtype);
  return KILN_OK;
}

/* Checks ndim, every dimension and the byte size; gives the element count
 * and byte size. */
kiln_status kiln__shape_check(kiln_dtype dtype, int ndim, const int64_t *shape,
                              int64_t *count, size_t *bytes) {
  kiln_status st = check_dtype(dtype);
  if (st != KILN_OK)
    return st;
  if (ndim < 0 || ndim > KILN_MAX_NDIM)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "ndim is %d; it must be between 0 and %d.", ndim,
                       KILN_MAX_NDIM);
  if (ndim > 0 && shape == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "shape is NULL but ndim is %d.", ndim);
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "shape[%d] is %lld; dimensions must be >= 0.", i,
                         (long long)shape[i]);
  /* Multiply in size_t bytes and in int64 elements; either overflowing
   * means the array cannot be addressed. */
  int64_t n = 1;
  size_t b = kiln_dtype_size(dtype);
  bool empty = false;
  for (int i = 0; i < ndim; i++)
    empty = empty || shape[i] == 0;
  for (int i = 0; i < ndim && !empty; i++) {
    if (__builtin_mul_overflow(n, shape[i], &n) ||
        !kiln__mul_size(b, (size_t)shape[i], &b))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "the shape is too large: multiplying in dimension "
                         "%d (shape[%d] = %lld) takes the size of this %s "
                         "array past what can be addressed.",
                         i, i, (long long)shape[i], kiln_dtype_name(dtype));
  }
  if (empty) {
    n = 0;
    b = 0;
  }
  if (count != NULL)
    *count = n;
  if (bytes != NULL)
    *bytes = b;
  return KILN_OK;
}

/* Row-major element strides for `shape`. */
static void row_major_strides(int ndim, const int64_t *shape,
                              int64_t *strides) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    strides[i] = s;
    /* Empty arrays would zero every stride; keep them meaningful. */
    s *= shape[i] > 0 ? shape[i] : 1;
  }
}

/* True if the elements lie in C order with no gaps (dimensions of size 1
 * may have any stride; an empty array is contiguous). */
bool kiln__array_is_contiguous(const kiln_array *array) {
  if (array->size <= 1)
    return true;
  int64_t expect = 1;
  for (int i = array->ndim - 1; i >= 0; i--) {
    if (array->shape[i] == 1)
      continue;
    if (array->strides[i] != expect)
      return false;
    expect *= array->shape[i];
  }
  return true;
}

/* The address of element 0 (which strided views may place anywhere in
 * the buffer). */
void *kiln__array_data(const kiln_array *array) {
  return (char *)array->buffer->ptr +
         array->offset * (int64_t)kiln_dtype_size(array->dtype);
}

/* Fills shape/strides/size of a new array object. */
static void set_layout(kiln_array *a, kiln_dtype dtype, int ndim,
                       const int64_t *shape, const int64_t *strides,
                       int64_t offset, int64_t size) {
  a->dtype = dtype;
  a->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    a->shape[i] = shape[i];
    a->strides[i] = strides[i];
  }
  a->offset = offset;
  a->size = size;
}

/* The lowest and highest element index (relative to element 0) that a
 * layout reaches; false on overflow. Only for non-empty shapes. */
static bool layout_extent(int ndim, const int64_t *shape,
                          const int64_t *strides, int64_t *lo, int64_t *hi) {
  int64_t min = 0, max = 0;
  for (int i = 0; i < ndim; i++) {
    int64_t reach;
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &reach))
      return false;
    if (reach < 0 ? __builtin_add_overflow(min, reach, &min)
                  : __builtin_add_overflow(max, reach, &max))
      return false;
  }
  *lo = min;
  *hi = max;
  return true;
}

/* ---- creation ------------------------------------------------------------ */

/* A new row-contiguous array that owns a fresh buffer. */
kiln_status kiln__array_create(kiln_device *dev, kiln_dtype dtype, int ndim,
                               const int64_t *shape, kiln_array **out) {
  int64_t count;
  size_t bytes;
  kiln_status st = kiln__shape_check(dtype, ndim, shape, &count, &bytes);
  if (st != KILN_OK)
    return st;
  kiln_array *a = kiln__calloc(1, sizeof *a);
  if (a == NULL)
    return kiln__oom("creating an array");
  st = kiln__buffer_new(dev, bytes, &a->buffer);
  if (st != KILN_OK) {
    kiln__free(a);
    return st;
  }
  int64_t strides[KILN_MAX_NDIM];
  row_major_strides(ndim, shape, strides);
  set_layout(a, dtype, ndim, shape, strides, 0, count);
  *out = a;
  return KILN_OK;
}

/* Releases the array's reference to its buffer. */
void kiln__array_destroy(kiln_array *array) {
  if (array == NULL)
    return;
  kiln__buffer_release(array->buffer);
  kiln__free(array);
}

/* ---- stream plumbing ----------------------------------------------------- */

/* The stream to use for `array`: the caller's (on the same device) or the
 * thread's default stream of the array's device. */
static kiln_status pick_stream(kiln_array *array, kiln_stream **stream) {
  kiln_device *dev = array->buffer->device;
  if (*stream == NULL) {
    *stream = kiln__default_stream(dev);
    return *stream != NULL ? KILN_OK : KILN_ERROR_OUT_OF_MEMORY;
  }
  if ((*stream)->device != dev)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the stream belongs to device %d but the array lives "
                       "on device %d.",
                       (*stream)->device->index, dev->index);
  return KILN_OK;
}

/* Records the work just enqueued and keeps the buffers alive until it has
 * run. Submit lock held. */
static kiln_status after_enqueue(kiln_stream *stream,
                                 kiln__buffer *const *reads, int num_reads,
                                 kiln__buffer *const *writes,
                                 int num_writes) {
  kiln_status st =
      kiln__hazards_after(stream, reads, num_reads, writes, num_writes);
  kiln__buffer *all[2];
  int n = 0;
  for (int i = 0; i < num_reads && n < 2; i++)
    all[n++] = reads[i];
  for (int i = 0; i < num_writes && n < 2; i++)
    all[n++] = writes[i];
  kiln_status hst = kiln__hold_until_done(stream, all, n);
  return st != KILN_OK ? st : hst;
}

/* ---- fill ---------------------------------------------------------------- */

/* A strided fill run on a CPU stream's thread, for views that the backend's
 * contiguous fill cannot handle. Owns a buffer reference. */
typedef struct strided_fill {
  kiln__buffer *buffer;
  char *base;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
  int64_t strides[KILN_MAX_NDIM];
  size_t elem_size;
  unsigned char pattern[8];
} strided_fill;

static void run_strided_fill(void *user, kiln_status status) {
  strided_fill *f = user;
  /* After an earlier failure on the stream, later work is skipped like a
   * GPU would skip it, so results never mix with a failed computation. */
  if (status == KILN_OK) {
    int64_t idx[KILN_MAX_NDIM] = {0};
    int64_t total = 1;
    for (int i = 0; i < f->ndim; i++)
      total *= f->shape[i];
    for (int64_t n = 0; n < total; n++) {
      int64_t off = 0;
      for (int i = 0; i < f->ndim; i++)
        off += idx[i] * f->strides[i];
      memcpy(f->base + off * (int64_t)f->elem_size, f->pattern,
             f->elem_size);
      for (int i = f->ndim - 1; i >= 0; i--) {
        if (++idx[i] < f->shape[i])
          break;
        idx[i] = 0;
      }
    }
  }
  kiln__buffer_release(f->buffer);
  kiln__free(f);
}

/* Enqueues a host loop filling a strided CPU view. Submit lock held. */
static kiln_status enqueue_strided_fill(kiln_stream *stream, kiln_array *a,
                                        const void *pattern) {
  strided_fill *f = kiln__calloc(1, sizeof *f);
  if (f == NULL)
    return kiln__oom("filling a strided array");
  f->buffer = a->buffer;
  f->base = kiln__array_data(a);
  f->ndim = a->ndim;
  memcpy(f->shape, a->shape, sizeof f->shape);
  memcpy(f->strides, a->strides, sizeof f->strides);
  f->elem_size = kiln_dtype_size(a->dtype);
  memcpy(f->pattern, pattern, f->elem_size);
  kiln__buffer_retain(a->buffer);
  kiln_status st = stream->device->ops->enqueue_host(stream,
                                                     run_strided_fill, f);
  if (st != KILN_OK) {
    kiln__buffer_release(a->buffer);
    kiln__free(f);
  }
  return st;
}

/* The view of `a` as the backends take it. */
static kiln__strided strided_of(const kiln_array *a) {
  kiln__strided s;
  s.base = kiln__array_data(a);
  s.ndim = a->ndim;
  s.shape = a->shape;
  s.strides = a->strides;
  return s;
}

/* Sets every element to `value` in stream order. */
kiln_status kiln__array_fill(kiln_array *array, double value,
                             kiln_stream *stream) {
  kiln_status st = pick_stream(array, &stream);
  if (st != KILN_OK || array->size == 0)
    return st;
  bool contiguous = kiln__array_is_contiguous(array);
  kiln_device *dev = stream->device;
  /* A strided view: the backend's scatter fill, or (CPU) a host loop. */
  if (!contiguous && dev->kind != KILN_DEVICE_CPU &&
      dev->ops->fill_strided == NULL)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "filling a strided array is not supported on the "
                       "%s backend; fill a contiguous array instead.",
                       dev->ops->name);
  unsigned char pattern[8];
  kiln__dtype_from_double(array->dtype, value, pattern);
  kiln__buffer *buf = array->buffer;
  pthread_mutex_lock(&stream->submit_lock);
  st = kiln__hazards_before(stream, NULL, 0, &buf, 1);
  if (st == KILN_OK) {
    if (contiguous)
      st = dev->ops->fill(stream, kiln__array_data(array),
                          (size_t)array->size, pattern,
                          kiln_dtype_size(array->dtype));
    else if (dev->ops->fill_strided != NULL) {
      kiln__strided view = strided_of(array);
      st = dev->ops->fill_strided(stream, &view, pattern,
                                  kiln_dtype_size(array->dtype));
    } else
      st = enqueue_strided_fill(stream, array, pattern);
    if (st == KILN_OK)
      st = after_enqueue(stream, NULL, 0, &buf, 1);
  }
  pthread_mutex_unlock(&stream->submit_lock);
  return st;
}

/* ---- copies -------------------------------------------------------------- */


/* Copies a strided view to host memory: gather into a temporary
 * contiguous buffer on the device, then copy that. Submit lock held. */
static kiln_status to_host_strided(kiln_stream *stream, kiln_array *a,
                                   void *dst, size_t bytes) {
  kiln_device *dev = stream->device;
  kiln__buffer *tmp;
  kiln_status st = kiln__buffer_new(dev, bytes, &tmp);
  if (st != KILN_OK)
    return st;
  kiln__strided src = strided_of(a);
  st = dev->ops->copy_strided(stream, &src, tmp->ptr,
                              kiln_dtype_size(a->dtype));
  if (st == KILN_OK)
    st = dev->ops->copy_to_host(stream, tmp->ptr, dst, bytes);
  else
    (void)dev->ops->stream_synchronize(stream);
  /* copy_to_host returned after everything before it, so the gather no
   * longer uses tmp; on failure we synchronized for the same reason. */
  kiln__buffer_release(tmp);
  return st;
}

/* Copies the array's elements in C order to `dst`, after pending writes. */
static kiln_status array_to_host(kiln_array *array, void *dst,
                                 size_t dst_bytes) {
  size_t bytes = (size_t)array->size * kiln_dtype_size(array->dtype);
  if (dst_bytes < bytes)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "dst_bytes is %zu but the array holds %zu bytes "
                       "(%lld elements of %s).",
                       dst_bytes, bytes, (long long)array->size,
                       kiln_dtype_name(array->dtype));
  if (bytes == 0)
    return KILN_OK;
  kiln_stream *stream = NULL;
  kiln_status st = pick_stream(array, &stream);
  if (st != KILN_OK)
    return st;
  kiln__buffer *buf = array->buffer;
  pthread_mutex_lock(&stream->submit_lock);
  st = kiln__hazards_before(stream, &buf, 1, NULL, 0);
  if (st == KILN_OK) {
    if (kiln__array_is_contiguous(array))
      st = stream->device->ops->copy_to_host(
          stream, kiln__array_data(array), dst, bytes);
    else
      st = to_host_strided(stream, array, dst, bytes);
  }
  pthread_mutex_unlock(&stream->submit_lock);
  return st;
}

/* Scatters C-order host data into a strided CPU view. */
static void scatter_host(kiln_array *a, const char *src) {
  size_t esz = kiln_dtype_size(a->dtype);
  char *base = kiln__array_data(a);
  int64_t idx[KILN_MAX_NDIM] = {0};
  for (int64_t n = 0; n < a->size; n++) {
    int64_t off = 0;
    for (int i = 0; i < a->ndim; i++)
      off += idx[i] * a->strides[i];
    memcpy(base + off * (int64_t)esz, src + (size_t)n * esz, esz);
    for (int i = a->ndim - 1; i >= 0; i--) {
      if (++idx[i] < a->shape[i])
        break;
      idx[i] = 0;
    }
  }
}

/* Copies C-order host data into the array once its pending reads and
 * writes are done; returns with the data in place. */
static kiln_status array_copy_from_host(kiln_array *array, const void *src,
                                        size_t src_bytes) {
  size_t bytes = (size_t)array->size * kiln_dtype_size(array->dtype);
  if (src_bytes < bytes)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "src_bytes is %zu but the array holds %zu bytes "
                       "(%lld elements of %s).",
                       src_bytes, bytes, (long long)array->size,
                       kiln_dtype_name(array->dtype));
  if (bytes == 0)
    return KILN_OK;
  kiln__buffer *buf = array->buffer;
  if (!kiln__array_is_contiguous(array)) {
    if (buf->device->kind != KILN_DEVICE_CPU)
      return kiln__error(KILN_ERROR_UNSUPPORTED,
                         "copying into a strided array is only supported on "
                         "the CPU; copy into a contiguous array instead.");
    /* Every enqueue records an event, so waiting for the record covers
     * work on every stream, the caller's own included. */
    kiln_status st = kiln__buffer_wait(buf, true);
    if (st == KILN_OK)
      scatter_host(array, src);
    return st;
  }
  kiln_stream *stream = NULL;
  kiln_status st = pick_stream(array, &stream);
  if (st != KILN_OK)
    return st;
  pthread_mutex_lock(&stream->submit_lock);
  st = kiln__hazards_before(stream, NULL, 0, &buf, 1);
  if (st == KILN_OK)
    st = stream->device->ops->copy_from_host(stream, kiln__array_data(array),
                                             src, bytes);
  pthread_mutex_unlock(&stream->submit_lock);
  return st;
}

/* A new contiguous array with the same elements, gathered in stream
 * order. */
kiln_status kiln__array_contiguous(kiln_array *array, kiln_stream *stream,
                                   kiln_array **out) {
  kiln_status st = pick_stream(array, &stream);
  if (st != KILN_OK)
    return st;
  kiln_array *copy;
  st = kiln__array_create(array->buffer->device, array->dtype, array->ndim,
                          array->shape, &copy);
  if (st != KILN_OK || array->size == 0) {
    if (st == KILN_OK)
      *out = copy;
    return st;
  }
  kiln__buffer *src = array->buffer, *dst = copy->buffer;
  kiln__strided view = strided_of(array);
  pthread_mutex_lock(&stream->submit_lock);
  st = kiln__hazards_before(stream, &src, 1, &dst, 1);
  if (st == KILN_OK)
    st = stream->device->ops->copy_strided(stream, &view,
                                           kiln__array_data(copy),
                                           kiln_dtype_size(array->dtype));
  if (st == KILN_OK)
    st = after_enqueue(stream, &src, 1, &dst, 1);
  pthread_mutex_unlock(&stream->submit_lock);
  if (st != KILN_OK) {
    kiln__array_destroy(copy);
    return st;
  }
  *out = copy;
  return KILN_OK;
}

/* ---- public: creation ---------------------------------------------------- */

/* NULL means the default device; anything else must be registered. */
static kiln_status resolve_device(kiln_device **device) {
  if (*device == NULL) {
    *device = kiln__device_default();
    return *device != NULL ? KILN_OK : KILN_ERROR_INTERNAL;
  }
  if (!kiln__device_check(*device))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device is not a kiln device.");
  return KILN_OK;
}

kiln_status kiln_array_create(kiln_device *device, kiln_dtype dtype,
                              int ndim, const int64_t *shape,
                              kiln_array **out) {
  KILN_API_ENTER();
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  kiln_status st = resolve_device(&device);
  if (st != KILN_OK)
    return st;
  return kiln__array_create(device, dtype, ndim, shape, out);
}

/* kiln_array_from_host without the API prefix bookkeeping. */
static kiln_status from_host(kiln_device *device, kiln_dtype dtype, int ndim,
                             const int64_t *shape, const void *data,
                             kiln_array **out) {
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  kiln_status st = resolve_device(&device);
  if (st != KILN_OK)
    return st;
  size_t bytes;
  st = kiln__shape_check(dtype, ndim, shape, NULL, &bytes);
  if (st != KILN_OK)
    return st;
  if (data == NULL && bytes > 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "data is NULL but the array holds %zu bytes.", bytes);
  kiln_array *a = NULL;
  st = kiln__array_create(device, dtype, ndim, shape, &a);
  if (st != KILN_OK)
    return st;
  st = array_copy_from_host(a, data, bytes);
  if (st != KILN_OK) {
    kiln__array_destroy(a);
    return st;
  }
  *out = a;
  return KILN_OK;
}

kiln_status kiln_array_from_host(kiln_device *device, kiln_dtype dtype,
                                 int ndim, const int64_t *shape,
                                 const void *data, kiln_array **out) {
  KILN_API_ENTER();
  return from_host(device, dtype, ndim, shape, data, out);
}

kiln_status kiln_array_scalar(kiln_device *device, kiln_dtype dtype,
                              const void *value, kiln_array **out) {
  KILN_API_ENTER();
  if (value == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "value is NULL.");
  return from_host(device, dtype, 0, NULL, value, out);
}

/* Checks caller-given strides: non-NULL when ndim > 0 is the caller's
 * choice (NULL: row-contiguous), so only the layout's reach is checked. */
static kiln_status wrap_layout(kiln_dtype dtype, int ndim,
                               const int64_t *shape, const int64_t *strides,
                               int64_t count, int64_t *lo, size_t *span) {
  *lo = 0;
  *span = 0;
  if (count == 0)
    return KILN_OK;
  int64_t hi;
  size_t esz = kiln_dtype_size(dtype);
  int64_t extent;
  if (!layout_extent(ndim, shape, strides, lo, &hi) ||
      __builtin_sub_overflow(hi, *lo, &extent) ||
      !kiln__mul_size((size_t)extent + 1, esz, span))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the strides reach further than can be addressed.");
  return KILN_OK;
}

kiln_status kiln_array_wrap(kiln_device *device, kiln_dtype dtype, int ndim,
                            const int64_t *shape, const int64_t *strides,
                            void *data, kiln_array **out) {
  KILN_API_ENTER();
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  if (device == NULL)
    device = kiln__device_cpu();
  if (device == NULL)
    return KILN_ERROR_INTERNAL;
  if (!kiln__device_check(device))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device is not a kiln device.");
  if (device->kind != KILN_DEVICE_CPU)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "only the CPU device can wrap host memory; device %d "
                       "is a GPU (use kiln_array_from_host to copy).",
                       device->index);
  int64_t count;
  kiln_status st = kiln__shape_check(dtype, ndim, shape, &count, NULL);
  if (st != KILN_OK)
    return st;
  if (data == NULL && count > 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "data is NULL but the array has %lld elements.",
                       (long long)count);
  int64_t own_strides[KILN_MAX_NDIM];
  if (strides == NULL) {
    row_major_strides(ndim, shape, own_strides);
    strides = own_strides;
  }
  int64_t lo;
  size_t span;
  st = wrap_layout(dtype, ndim, shape, strides, count, &lo, &span);
  if (st != KILN_OK)
    return st;
  kiln_array *a = kiln__calloc(1, sizeof *a);
  if (a == NULL)
    return kiln__oom("wrapping host memory");
  /* The buffer starts at the lowest element the strides reach, so negative
   * strides stay inside it; element 0 sits `-lo` elements in. */
  size_t esz = kiln_dtype_size(dtype);
  char *start = count > 0 ? (char *)data + lo * (int64_t)esz : data;
  st = kiln__buffer_wrap(device, start, span, &a->buffer);
  if (st != KILN_OK) {
    kiln__free(a);
    return st;
  }
  set_layout(a, dtype, ndim, shape, strides, -lo, count);
  *out = a;
  return KILN_OK;
}

/* Checks that every element a view reaches lies inside the buffer. */
static kiln_status check_view_bounds(const kiln_array *base, int ndim,
                                     const int64_t *shape,
                                     const int64_t *strides, int64_t offset) {
  size_t esz = kiln_dtype_size(base->dtype);
  int64_t capacity = (int64_t)(base->buffer->bytes / esz);
  int64_t lo, hi;
  if (!layout_extent(ndim, shape, strides, &lo, &hi) ||
      __builtin_add_overflow(lo, offset, &lo) ||
      __builtin_add_overflow(hi, offset, &hi))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the view's strides reach further than can be "
                       "addressed.");
  if (lo < 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the view reaches element %lld, before the start of "
                       "the buffer (which holds %lld elements of %s).",
                       (long long)lo, (long long)capacity,
                       kiln_dtype_name(base->dtype));
  if (hi >= capacity)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the view reaches element %lld but the buffer holds "
                       "only %lld elements of %s.",
                       (long long)hi, (long long)capacity,
                       kiln_dtype_name(base->dtype));
  return KILN_OK;
}

kiln_status kiln_array_view(kiln_array *base, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t offset,
                            kiln_array **out) {
  KILN_API_ENTER();
  if (base == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "base is NULL.");
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  int64_t count;
  kiln_status st = kiln__shape_check(base->dtype, ndim, shape, &count, NULL);
  if (st != KILN_OK)
    return st;
  int64_t own_strides[KILN_MAX_NDIM];
  if (strides == NULL) {
    row_major_strides(ndim, shape, own_strides);
    strides = own_strides;
  }
  /* `offset` counts from base's element 0, as MLX's as_strided does. */
  int64_t abs_offset;
  if (__builtin_add_overflow(base->offset, offset, &abs_offset))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "offset %lld is out of range.", (long long)offset);
  if (count > 0) {
    st = check_view_bounds(base, ndim, shape, strides, abs_offset);
    if (st != KILN_OK)
      return st;
  }
  kiln_array *a = kiln__calloc(1, sizeof *a);
  if (a == NULL)
    return kiln__oom("creating a view");
  kiln__buffer_retain(base->buffer);
  a->buffer = base->buffer;
  /* An empty view reaches nothing; pin its offset to 0 so its element 0
   * address is always inside the buffer. */
  set_layout(a, base->dtype, ndim, shape, strides, count > 0 ? abs_offset : 0,
             count);
  *out = a;
  return KILN_OK;
}

void kiln_array_destroy(kiln_array *array) {
  KILN_API_ENTER();
  kiln__array_destroy(array);
}

/* ---- public: data movement ----------------------------------------------- */

kiln_status kiln_array_fill(kiln_array *array, double value,
                            kiln_stream *stream) {
  KILN_API_ENTER();
  if (array == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "array is NULL.");
  return kiln__array_fill(array, value, stream);
}

kiln_status kiln_array_to_host(kiln_array *array, void *dst,
                               size_t dst_bytes) {
  KILN_API_ENTER();
  if (array == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "array is NULL.");
  if (dst == NULL && array->size > 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "dst is NULL.");
  return array_to_host(array, dst, dst_bytes);
}

kiln_status kiln_array_copy_from_host(kiln_array *array, const void *src,
                                      size_t src_bytes) {
  KILN_API_ENTER();
  if (array == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "array is NULL.");
  if (src == NULL && array->size > 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "src is NULL.");
  return array_copy_from_host(array, src, src_bytes);
}

kiln_status kiln_array_contiguous(kiln_array *array, kiln_stream *stream,
                                  kiln_array **out) {
  KILN_API_ENTER();
  if (array == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "array is NULL.");
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  return kiln__array_contiguous(array, stream, out);
}

kiln_status kiln_array_wait(kiln_array *array) {
  KILN_API_ENTER();
  if (array == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "array is NULL.");
  return kiln__buffer_wait(array->buffer, false);
}

/* ---- public: accessors --------------------------------------------------- */

kiln_dtype kiln_array_dtype(const kiln_array *array) {
  return array != NULL ? array->dtype : KILN_DTYPE_COUNT;
}

int kiln_array_ndim(const kiln_array *array) {
  return array != NULL ? array->ndim : 0;
}

const int64_t *kiln_array_shape(const kiln_array *array) {
  return array != NULL ? array->shape : NULL;
}

const int64_t *kiln_array_strides(const kiln_array *array) {
  return array != NULL ? array->strides : NULL;
}

int64_t kiln_array_offset(const kiln_array *array) {
  return array != NULL ? array->offset : 0;
}

int64_t kiln_array_size(const kiln_array *array) {
  return array != NULL ? array->size : 0;
}

size_t kiln_array_nbytes_dense(const kiln_array *array) {
  if (array == NULL)
    return 0;
  return (size_t)array->size * kiln_dtype_size(array->dtype);
}

bool kiln_array_is_contiguous(const kiln_array *array) {
  return array != NULL && kiln__array_is_contiguous(array);
}

kiln_device *kiln_array_device(const kiln_array *array) {
  return array != NULL ? array->buffer->device : NULL;
}

void *kiln_array_host_data(const kiln_array *array) {
  if (array == NULL || array->buffer->device->kind != KILN_DEVICE_CPU)
    return NULL;
  return kiln__array_data(array);
}
