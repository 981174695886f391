/*
 * The core's objects: devices, the caching allocator, buffers with their
 * cross-stream hazard records, arrays (views over buffers) and streams.
 * Public functions in the .c files of src/core/ are thin wrappers
 * (KILN_API_ENTER, then the kiln__ twin); internal code calls the twins.
 */
#ifndef KILN_CORE_H
#define KILN_CORE_H

#include <pthread.h>
#include <stdatomic.h>

#include "backend/backend.h"
#include "core/util.h"

/* ---- devices and the caching allocator ---------------------------------- */

/* A free block kept for reuse; blocks are bucketed by their rounded size. */
typedef struct kiln__cached_block {
  void *ptr;
  size_t bytes;
  struct kiln__cached_block *next;
} kiln__cached_block;

typedef struct kiln__allocator {
  pthread_mutex_t lock;
  kiln__cached_block *free_list; /* sorted by size, ascending */
  uint64_t active_bytes;
  uint64_t peak_bytes;
  uint64_t cached_bytes;
  uint64_t memory_limit;
  uint64_t cache_limit;
} kiln__allocator;

struct kiln_device {
  int index;
  int ordinal;
  kiln_device_kind kind;
  const kiln__backend_ops *ops;
  kiln_device_info info;
  void *impl; /* backend data */
  kiln__allocator alloc;
  pthread_mutex_t streams_lock; /* guards `streams` */
  struct kiln_stream *streams;  /* every live stream, for synchronize */
  /* kiln's own high-priority side stream (kiln__device_side_stream),
   * made on first use and kept for the process, like the device. */
  pthread_mutex_t side_lock;
  struct kiln_stream *side;
};

/* Looks the registry up once (thread-safe); never fails for the CPU. */
kiln_status kiln__devices_init(void);
kiln_device *kiln__device_cpu(void);
kiln_device *kiln__device_default(void);
/* Registry lookups: whether `dev` is a registered device (catches stale or
 * wild pointers), the device count, and device `i` (NULL if none). */
bool kiln__device_check(const kiln_device *dev);
int kiln__device_count(void);
kiln_device *kiln__device_at(int i);

/* Caching allocator. Sizes are rounded up (see allocator.c); a freed block
 * goes back to the cache, trimmed to the cache limit. */
kiln_status kiln__device_alloc(kiln_device *dev, size_t bytes, void **out,
                               size_t *rounded);
void kiln__device_free(kiln_device *dev, void *ptr, size_t rounded);

/* ---- streams ------------------------------------------------------------ */

struct kiln_stream {
  kiln_device *device;
  void *impl;                 /* backend data */
  pthread_mutex_t submit_lock; /* serializes enqueues on this stream */
  bool is_default;            /* owned by kiln, per host thread */
  /* A hint the backend's stream_create reads: > 0 asks that this
   * stream's work be scheduled before other streams' (CUDA: the highest
   * stream priority), 0 the default. Backends without priorities ignore
   * it. */
  int priority;
  struct kiln_stream *next;   /* in device->streams */
};

kiln_status kiln__stream_create(kiln_device *dev, bool is_default,
                                kiln_stream **out);
kiln_status kiln__stream_destroy(kiln_stream *stream);
kiln_stream *kiln__default_stream(kiln_device *dev);
kiln_status kiln__stream_synchronize(kiln_stream *stream);

/*
 * The device's side stream: kiln's own, created on first use (under the
 * device's side_lock) with the highest priority the backend offers, and
 * kept for the life of the process (devices are never destroyed), so no
 * call pays for creating one. For drivers that split one operation over
 * two streams (the look-ahead LU, src/linalg/lu.c); concurrent calls may
 * share it, ordered only by the events their drivers place.
 */
kiln_status kiln__device_side_stream(kiln_device *dev, kiln_stream **out);

/*
 * Makes work enqueued on `waiter` from now on wait (on the device) for
 * everything enqueued on `signaller` so far: an event recorded there and
 * waited for here. Nothing to do for one stream. If the backend cannot
 * record or wait, the host waits instead: slower, never wrong.
 */
kiln_status kiln__stream_wait_stream(kiln_stream *waiter,
                                     kiln_stream *signaller);

/* ---- buffers and hazards ------------------------------------------------ */

#define KILN__MAX_READERS 8

/*
 * Device memory with a reference count: each array view holds one reference
 * and so does each piece of pending work that touches it, so memory is
 * never freed under a running kernel. The hazard record says which stream
 * points last wrote and read it, so work on another stream waits for them.
 */
typedef struct kiln__buffer {
  atomic_int refs;
  kiln_device *device;
  void *ptr;
  size_t bytes;   /* requested */
  size_t rounded; /* what the allocator handed out; 0 when wrapped */
  bool owned;     /* false: caller memory (kiln_array_wrap) */
  /* hazard record, guarded by the global hazard lock */
  kiln_stream *write_stream;
  kiln__event *last_write;
  kiln_stream *read_streams[KILN__MAX_READERS];
  kiln__event *reads[KILN__MAX_READERS];
  int num_reads;
} kiln__buffer;

kiln_status kiln__buffer_new(kiln_device *dev, size_t bytes,
                             kiln__buffer **out);
kiln_status kiln__buffer_wrap(kiln_device *dev, void *ptr, size_t bytes,
                              kiln__buffer **out);
void kiln__buffer_retain(kiln__buffer *buf);
void kiln__buffer_release(kiln__buffer *buf);

/*
 * Orders `stream` after other streams' work on the buffers: before work
 * that reads `reads` and writes `writes`, makes the stream wait for the
 * last write of every buffer (and, for writes, every read) made on another
 * stream. Call with the stream's submit lock held, before enqueuing.
 */
kiln_status kiln__hazards_before(kiln_stream *stream, kiln__buffer *const *reads,
                                 int num_reads, kiln__buffer *const *writes,
                                 int num_writes);
/* Records the work just enqueued (the stream's tail) as a read / write. */
kiln_status kiln__hazards_after(kiln_stream *stream, kiln__buffer *const *reads,
                                int num_reads, kiln__buffer *const *writes,
                                int num_writes);
/* Host waits for the pending writes (and, if `and_reads`, reads). */
kiln_status kiln__buffer_wait(kiln__buffer *buf, bool and_reads);

/*
 * Keeps `bufs` alive until the stream reaches this point, then releases
 * them (one reference each, taken here).
 */
kiln_status kiln__hold_until_done(kiln_stream *stream, kiln__buffer *const *bufs,
                                  int num_bufs);

/* ---- arrays ------------------------------------------------------------- */

struct kiln_array {
  kiln__buffer *buffer;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
  int64_t strides[KILN_MAX_NDIM]; /* elements */
  int64_t offset;                 /* elements */
  int64_t size;                   /* elements */
};

/* Validates a shape (ndim range, non-negative dims, no overflow of the byte
 * size) and returns the element count and byte size. */
kiln_status kiln__shape_check(kiln_dtype dtype, int ndim, const int64_t *shape,
                              int64_t *count, size_t *bytes);
kiln_status kiln__array_create(kiln_device *dev, kiln_dtype dtype, int ndim,
                               const int64_t *shape, kiln_array **out);
void kiln__array_destroy(kiln_array *array);
bool kiln__array_is_contiguous(const kiln_array *array);
/* Address of element 0 in device memory. */
void *kiln__array_data(const kiln_array *array);
kiln_status kiln__array_contiguous(kiln_array *array, kiln_stream *stream,
                                   kiln_array **out);
kiln_status kiln__array_fill(kiln_array *array, double value,
                             kiln_stream *stream);

/* ---- kernels (src/core/kernel.c) ----------------------------------------- */

/* Launches `kernel` writing the existing arrays `into` (one per output,
 * matching the output specs) in place; for kiln's own drivers. */
kiln_status kiln__kernel_launch_into(kiln_kernel *kernel,
                                     const kiln_launch *launch,
                                     kiln_array *const *into);

/* Gives every CUDA launch of `kernel` `bytes` of dynamic shared memory
 * (the body declares it as an `extern __shared__` array under
 * KILN_BACKEND_CUDA), beyond the 48 KiB static limit; the backend raises
 * the function's limit to match. For library kernels
 * (KILN__LIB_SHARED_KIB); call it before the kernel is first launched or
 * shared. Other backends ignore it. */
void kiln__kernel_set_dynamic_shared(kiln_kernel *kernel, uint32_t bytes);

/* Makes every CUDA launch of `kernel` cooperative: all its threadgroups
 * resident at once, or the launch fails (too many groups for the device)
 * rather than waiting for groups that cannot be scheduled. For library
 * kernels whose groups wait for each other (KILN__LIB_COOPERATIVE); call
 * it before the kernel is first launched or shared. */
void kiln__kernel_set_cooperative(kiln_kernel *kernel);

/* ---- dtypes -------------------------------------------------------------- */

bool kiln__dtype_valid(kiln_dtype dtype);
bool kiln__dtype_is_float(kiln_dtype dtype);
/* The type name the generated code uses ("float", "half", "int32_t"). */
const char *kiln__dtype_metal_name(kiln_dtype dtype);
/* Converts `value` to one element of `dtype` (round to nearest even for
 * float16/bfloat16; saturating for integers; NaN to 0 for integers). */
void kiln__dtype_from_double(kiln_dtype dtype, double value, void *out);
double kiln__dtype_to_double(kiln_dtype dtype, const void *in);
uint16_t kiln__float_to_half(float f);
float kiln__half_to_float(uint16_t h);
uint16_t kiln__float_to_bfloat(float f);
float kiln__bfloat_to_float(uint16_t b);

#endif /* KILN_CORE_H */
