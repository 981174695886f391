/*
 * The CUDA backend's stand-in until the real one lands: it finds no
 * devices, so the core never calls the rest of the table; if something
 * does anyway, every operation answers KILN_ERROR_UNSUPPORTED (MLX's
 * no_gpu pattern).
 */
#include "backend/backend.h"
#include "core/util.h"

#define NOT_BUILT "kiln was built without the CUDA backend yet"

static kiln_status unsupported(void) {
  return kiln__error(KILN_ERROR_UNSUPPORTED,
                     "CUDA devices are not available: " NOT_BUILT);
}

static int cuda_probe(struct kiln_device **devices, int max, const char **why) {
  (void)devices;
  (void)max;
  *why = NOT_BUILT;
  return 0;
}

static kiln_status cuda_mem_alloc(struct kiln_device *dev, size_t bytes,
                                  void **out) {
  (void)dev;
  (void)bytes;
  (void)out;
  return unsupported();
}

static void cuda_mem_free(struct kiln_device *dev, void *ptr, size_t bytes) {
  (void)dev;
  (void)ptr;
  (void)bytes;
}

static kiln_status cuda_stream_create(struct kiln_stream *stream) {
  (void)stream;
  return unsupported();
}

static void cuda_stream_destroy(struct kiln_stream *stream) {
  (void)stream;
}

static bool cuda_stream_idle(struct kiln_stream *stream) {
  (void)stream;
  return true;
}

static kiln_status cuda_stream_synchronize(struct kiln_stream *stream) {
  (void)stream;
  return unsupported();
}

static kiln_status cuda_event_record(struct kiln_stream *stream,
                                     kiln__event **out) {
  (void)stream;
  (void)out;
  return unsupported();
}

static bool cuda_event_done(kiln__event *event) {
  (void)event;
  return true;
}

static kiln_status cuda_event_synchronize(kiln__event *event) {
  (void)event;
  return unsupported();
}

static kiln_status cuda_stream_wait_event(struct kiln_stream *stream,
                                          kiln__event *event) {
  (void)stream;
  (void)event;
  return unsupported();
}

static void cuda_event_retain(kiln__event *event) {
  (void)event;
}

static void cuda_event_release(kiln__event *event) {
  (void)event;
}

static kiln_status cuda_enqueue_host(struct kiln_stream *stream,
                                     kiln__host_fn fn, void *user) {
  (void)stream;
  (void)fn;
  (void)user;
  return unsupported();
}

static kiln_status cuda_fill(struct kiln_stream *stream, void *dst,
                             size_t count, const void *pattern,
                             size_t pattern_size) {
  (void)stream;
  (void)dst;
  (void)count;
  (void)pattern;
  (void)pattern_size;
  return unsupported();
}

static kiln_status cuda_copy_strided(struct kiln_stream *stream,
                                     const kiln__strided *src, void *dst,
                                     size_t elem_size) {
  (void)stream;
  (void)src;
  (void)dst;
  (void)elem_size;
  return unsupported();
}

static kiln_status cuda_copy(struct kiln_stream *stream, void *dst,
                             const void *src, size_t bytes) {
  (void)stream;
  (void)dst;
  (void)src;
  (void)bytes;
  return unsupported();
}

static kiln_status cuda_copy_to_host(struct kiln_stream *stream,
                                     const void *src, void *dst, size_t bytes) {
  return cuda_copy(stream, dst, src, bytes);
}

static const char *cuda_prelude(struct kiln_device *dev) {
  (void)dev;
  return "";
}

static kiln_status cuda_build_id(struct kiln_device *dev, const char **out) {
  (void)dev;
  (void)out;
  return unsupported();
}

static kiln_status cuda_compile(struct kiln_device *dev, const char *source,
                                kiln_math_mode math, const char *kernel_name,
                                kiln__binary *out, char **log) {
  (void)dev;
  (void)source;
  (void)math;
  (void)kernel_name;
  (void)out;
  if (log != NULL)
    *log = NULL;
  return unsupported();
}

static kiln_status cuda_load(struct kiln_device *dev, const void *data,
                             size_t size, void **module,
                             kiln__module_info *info) {
  (void)dev;
  (void)data;
  (void)size;
  (void)module;
  (void)info;
  return unsupported();
}

static void cuda_unload(struct kiln_device *dev, void *module) {
  (void)dev;
  (void)module;
}

static kiln_status cuda_launch(struct kiln_stream *stream, void *module,
                               const kiln__launch_params *params) {
  (void)stream;
  (void)module;
  (void)params;
  return unsupported();
}

/*
 * The CUDA backend's table while the backend is not built: probe finds no
 * device and says why; everything else is KILN_ERROR_UNSUPPORTED.
 */
const kiln__backend_ops kiln__cuda_backend = {
    .name = "cuda",
    .probe = cuda_probe,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_idle = cuda_stream_idle,
    .stream_synchronize = cuda_stream_synchronize,
    .event_record = cuda_event_record,
    .event_done = cuda_event_done,
    .event_synchronize = cuda_event_synchronize,
    .stream_wait_event = cuda_stream_wait_event,
    .event_retain = cuda_event_retain,
    .event_release = cuda_event_release,
    .enqueue_host = cuda_enqueue_host,
    .enqueue_release = cuda_enqueue_host,
    .fill = cuda_fill,
    .copy_strided = cuda_copy_strided,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy,
    .prelude = cuda_prelude,
    .build_id = cuda_build_id,
    .compile = cuda_compile,
    .load = cuda_load,
    .unload = cuda_unload,
    .launch = cuda_launch,
};
