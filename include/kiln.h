/*
 * kiln: MLX-style Metal kernels, run on any CPU and (later) on NVIDIA GPUs.
 *
 * This header is kiln's whole public interface: anything not declared here
 * is private and may change without notice. Every public name starts with
 * kiln_ or KILN_.
 *
 * Conventions that hold for every function below:
 *
 *   - Errors. Functions return a kiln_status. On failure a sentence that
 *     names the failing function ("[kiln_array_create] shape dimension 2 is
 *     negative (-3)") is kept in a per-thread buffer that kiln_last_error()
 *     returns. The library never prints (unless a call asks for verbose
 *     output) and never exits the process. A failed call changes nothing:
 *     out-parameters are left untouched (or set to NULL where documented)
 *     and no array is written.
 *
 *   - Ownership. Every handle that a kiln_*_create function returns is owned
 *     by the caller and released with the matching *_destroy function.
 *     Destroying NULL is a no-op. Devices are owned by the library and live
 *     until the process exits.
 *
 *   - Threading. Every function may be called from any host thread. Work on
 *     one stream runs in the order it was enqueued; work on different
 *     streams may overlap, and kiln orders it automatically where an array
 *     written on one stream is read or written on another.
 *
 *   - Extensible structs. Structs passed by pointer start with a
 *     `struct_size` field that the caller sets to sizeof(the struct) (the
 *     *_init functions do this). New fields are only ever added at the end.
 */
#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KILN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* The most dimensions an array may have. */
#define KILN_MAX_NDIM 16

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */
/* ------------------------------------------------------------------------ */

/* One list generates both the enum and kiln_status_string(). */
#define KILN_STATUS_MAP(XX)                                                   \
  XX(OK, 0, "success")                                                        \
  XX(ERROR_INVALID_ARGUMENT, 1, "invalid argument")                           \
  XX(ERROR_OUT_OF_MEMORY, 2, "out of memory")                                 \
  XX(ERROR_UNSUPPORTED, 3, "not supported")                                   \
  XX(ERROR_NOT_FOUND, 4, "not found")                                         \
  XX(ERROR_COMPILE, 5, "kernel compilation failed")                           \
  XX(ERROR_LAUNCH, 6, "kernel launch failed")                                 \
  XX(ERROR_IO, 7, "input/output error")                                       \
  XX(ERROR_BUSY, 8, "resource busy")                                          \
  XX(ERROR_DEVICE_LOST, 9, "device lost; it must be reset")                   \
  XX(ERROR_INTERNAL, 10, "internal error")

typedef enum kiln_status {
#define KILN_STATUS_ENUM_(name, value, text) KILN_##name = value,
  KILN_STATUS_MAP(KILN_STATUS_ENUM_)
#undef KILN_STATUS_ENUM_
} kiln_status;

/* A static, human-readable name for a status ("out of memory"). Never NULL. */
KILN_API const char *kiln_status_string(kiln_status status);

/*
 * The message of the most recent failed kiln call on this thread, or "" if
 * none failed yet. The string is owned by kiln and stays valid until the
 * next kiln call on the same thread. Successful calls do not clear it.
 */
KILN_API const char *kiln_last_error(void);

/* Clears this thread's error message. */
KILN_API void kiln_clear_error(void);

/* The library's version as "MAJOR.MINOR.PATCH". */
KILN_API const char *kiln_version(void);

/*
 * Host allocation hooks. Every host allocation kiln makes for its own
 * bookkeeping goes through these (array buffers of the CPU device too). Set
 * them before any other kiln call, or pass NULL to restore the C library's
 * malloc/realloc/free. Used by tests to fail allocations one by one.
 */
typedef struct kiln_alloc_hooks {
  void *(*malloc_fn)(size_t size);
  void *(*realloc_fn)(void *ptr, size_t size);
  void (*free_fn)(void *ptr);
} kiln_alloc_hooks;
KILN_API kiln_status kiln_set_alloc_hooks(const kiln_alloc_hooks *hooks);

/* ------------------------------------------------------------------------ */
/* Data types                                                               */
/* ------------------------------------------------------------------------ */

typedef enum kiln_dtype {
  KILN_BOOL = 0,
  KILN_INT8,
  KILN_INT16,
  KILN_INT32,
  KILN_INT64,
  KILN_UINT8,
  KILN_UINT16,
  KILN_UINT32,
  KILN_UINT64,
  KILN_FLOAT16,
  KILN_BFLOAT16,
  KILN_FLOAT32,
  KILN_FLOAT64,
  KILN_DTYPE_COUNT
} kiln_dtype;

/* Bytes per element (bool is one byte), or 0 for an invalid dtype. */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);

/* The numpy name ("float32", "bool", "bfloat16"), or "invalid". */
KILN_API const char *kiln_dtype_name(kiln_dtype dtype);

/*
 * Parses a numpy dtype name ("float32", "int64", "bool", "bfloat16") or its
 * Metal spelling ("float", "half", "int", "uint", "uint8_t", ...).
 */
KILN_API kiln_status kiln_dtype_from_name(const char *name, kiln_dtype *out);

/* One element of `dtype` at `element` (any alignment) as a double: exact
 * for every dtype but the 64-bit integers beyond 2^53 (rounded); 0 for an
 * invalid dtype. For host-side conversion of data kiln did not make. */
KILN_API double kiln_dtype_read(kiln_dtype dtype, const void *element);

/* Writes `value` converted to `dtype` at `element` (any alignment): round
 * to nearest even for the floating types; integers truncated toward zero
 * and saturated to the type's range, NaN as 0; bool is value != 0. */
KILN_API void kiln_dtype_write(kiln_dtype dtype, double value, void *element);

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kiln_device kiln_device;

typedef enum kiln_device_kind {
  KILN_DEVICE_CPU = 0,
  KILN_DEVICE_GPU = 1
} kiln_device_kind;

/*
 * The number of devices. The CPU device always exists and is device 0; GPUs
 * follow in the order of their backend.
 */
KILN_API int kiln_device_count(void);

/* Device number `index` (0 <= index < kiln_device_count()). */
KILN_API kiln_status kiln_device_get(int index, kiln_device **out);

/*
 * A device by name: "cpu", "gpu" (the first GPU) or "gpu:N". A machine
 * without a usable GPU answers "gpu" with KILN_ERROR_NOT_FOUND and a message
 * that says why (no driver, no device, ...).
 */
KILN_API kiln_status kiln_device_find(const char *spec, kiln_device **out);

/* The best device present: the first GPU if any, else the CPU. */
KILN_API kiln_device *kiln_device_default(void);

typedef struct kiln_device_info {
  size_t struct_size;           /* set to sizeof(kiln_device_info) */
  kiln_device_kind kind;
  int index;                    /* as in kiln_device_get */
  int ordinal;                  /* N in "gpu:N"; 0 for the CPU */
  char name[128];               /* "NVIDIA H100 80GB HBM3", CPU model */
  char backend[16];             /* "cpu", "cuda" */
  char arch[32];                /* "sm_90a", "x86_64" */
  int compute_units;            /* multiprocessors / worker threads */
  uint64_t memory_bytes;        /* total device (or host) memory */
  uint32_t max_threads_per_threadgroup;
  uint64_t max_threadgroup_memory; /* bytes of threadgroup memory */
  uint32_t simd_width;          /* 32 on every backend */
} kiln_device_info;

KILN_API kiln_status kiln_device_get_info(kiln_device *device,
                                          kiln_device_info *info);

/*
 * Why no GPU is listed, in one sentence ("libcuda.so.1 was not found"), or
 * "" if at least one GPU is present. Owned by kiln; valid for the process.
 */
KILN_API const char *kiln_gpu_unavailable_reason(void);

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct kiln_memory_stats {
  size_t struct_size;    /* set to sizeof(kiln_memory_stats) */
  uint64_t active_bytes; /* held by live arrays */
  uint64_t peak_bytes;   /* the most active_bytes has been since the reset */
  uint64_t cached_bytes; /* freed by arrays, kept for reuse */
  uint64_t memory_limit; /* active + cached never exceeds this */
  uint64_t cache_limit;  /* cached never exceeds this */
} kiln_memory_stats;

/*
 * Each device has a caching allocator: memory freed by an array is kept for
 * reuse by the next allocation of a similar size.
 */
KILN_API kiln_status kiln_memory_get_stats(kiln_device *device,
                                           kiln_memory_stats *stats);
/* An allocation that would pass the limit first empties the cache, then
 * fails with KILN_ERROR_OUT_OF_MEMORY. `previous` may be NULL. */
KILN_API kiln_status kiln_memory_set_limit(kiln_device *device, uint64_t bytes,
                                           uint64_t *previous);
KILN_API kiln_status kiln_memory_set_cache_limit(kiln_device *device,
                                                 uint64_t bytes,
                                                 uint64_t *previous);
KILN_API kiln_status kiln_memory_clear_cache(kiln_device *device);
KILN_API kiln_status kiln_memory_reset_peak(kiln_device *device);

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kiln_stream kiln_stream;

/* A new stream on `device`. Work on it runs asynchronously, in order. */
KILN_API kiln_status kiln_stream_create(kiln_device *device,
                                        kiln_stream **out);

/*
 * Destroys a stream. If work is still pending on it, nothing is destroyed
 * and KILN_ERROR_BUSY is returned: synchronize first.
 */
KILN_API kiln_status kiln_stream_destroy(kiln_stream *stream);

/*
 * The calling host thread's default stream on `device` (NULL: the default
 * device). Owned by kiln; it is synchronized and released when the thread
 * exits. Never NULL for a valid device.
 */
KILN_API kiln_stream *kiln_default_stream(kiln_device *device);

KILN_API kiln_device *kiln_stream_device(kiln_stream *stream);

/*
 * Waits until all work enqueued on the stream so far has finished. Returns
 * the first error that asynchronous work on the stream met, if any (the
 * error is then cleared).
 */
KILN_API kiln_status kiln_stream_synchronize(kiln_stream *stream);

/* Waits for every stream of `device` (NULL: of every device). */
KILN_API kiln_status kiln_synchronize(kiln_device *device);

/*
 * Calls fn(user, status) on a kiln thread once all work enqueued on the
 * stream before this call has finished; `status` is KILN_OK or the stream's
 * first asynchronous error. The callback must not block on this stream.
 * Whether it holds the stream back depends on the backend: on the CPU,
 * work enqueued after the callback starts only once fn has returned; on
 * CUDA it does not wait, and the GPU runs later work while fn runs (so fn
 * must not write memory that later work reads). kiln_stream_synchronize
 * and kiln_synchronize still return only after fn has returned.
 */
typedef void (*kiln_host_fn)(void *user, kiln_status status);
KILN_API kiln_status kiln_stream_add_callback(kiln_stream *stream,
                                              kiln_host_fn fn, void *user);

/* ------------------------------------------------------------------------ */
/* Arrays                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct kiln_array kiln_array;

/*
 * A new row-contiguous array whose contents are undefined. The array owns
 * its buffer. ndim may be 0 (a scalar); a dimension may be 0 (an empty
 * array). Shapes whose byte size overflows are refused.
 */
KILN_API kiln_status kiln_array_create(kiln_device *device, kiln_dtype dtype,
                                       int ndim, const int64_t *shape,
                                       kiln_array **out);

/* A new row-contiguous array holding a copy of `data` (C order). */
KILN_API kiln_status kiln_array_from_host(kiln_device *device,
                                          kiln_dtype dtype, int ndim,
                                          const int64_t *shape,
                                          const void *data, kiln_array **out);

/* A 0-d array holding one value, e.g. a kernel parameter. */
KILN_API kiln_status kiln_array_scalar(kiln_device *device, kiln_dtype dtype,
                                       const void *value, kiln_array **out);

/*
 * Wraps caller memory as an array of the CPU device, without copying.
 * `strides` are in elements (NULL: row-contiguous). kiln never frees `data`;
 * the caller keeps it alive until the array and every view of it are
 * destroyed and the work using them has finished.
 */
KILN_API kiln_status kiln_array_wrap(kiln_device *device, kiln_dtype dtype,
                                     int ndim, const int64_t *shape,
                                     const int64_t *strides, void *data,
                                     kiln_array **out);

/*
 * A strided view of `base`: it shares base's buffer (which stays alive while
 * any view does). `strides` and `offset` are in elements and are checked to
 * stay inside the buffer; strides may be 0 or negative.
 */
KILN_API kiln_status kiln_array_view(kiln_array *base, int ndim,
                                     const int64_t *shape,
                                     const int64_t *strides, int64_t offset,
                                     kiln_array **out);

/* Releases the array. Its buffer is freed (returned to the device's cache)
 * once no view uses it and no pending work reads or writes it. */
KILN_API void kiln_array_destroy(kiln_array *array);

/* Sets every element to `value`, converted to the array's dtype, in stream
 * order (stream NULL: the calling thread's default stream). */
KILN_API kiln_status kiln_array_fill(kiln_array *array, double value,
                                     kiln_stream *stream);

/*
 * Copies the array's elements, in C order, to `dst` (dst_bytes must be at
 * least kiln_array_nbytes_dense). Waits for the pending work that writes the
 * array. Any device.
 */
KILN_API kiln_status kiln_array_to_host(kiln_array *array, void *dst,
                                        size_t dst_bytes);

/* Copies `src` (C order) into the array, after the pending work that reads
 * or writes it; returns once the data is in place. */
KILN_API kiln_status kiln_array_copy_from_host(kiln_array *array,
                                               const void *src,
                                               size_t src_bytes);

/* A new row-contiguous array with the same elements, copied in stream
 * order (stream NULL: the default stream of the array's device). */
KILN_API kiln_status kiln_array_contiguous(kiln_array *array,
                                           kiln_stream *stream,
                                           kiln_array **out);

/* Waits until every pending write of the array has finished. */
KILN_API kiln_status kiln_array_wait(kiln_array *array);

KILN_API kiln_dtype kiln_array_dtype(const kiln_array *array);
KILN_API int kiln_array_ndim(const kiln_array *array);
/* Pointer to ndim dimensions / element strides; owned by the array. */
KILN_API const int64_t *kiln_array_shape(const kiln_array *array);
KILN_API const int64_t *kiln_array_strides(const kiln_array *array);
KILN_API int64_t kiln_array_offset(const kiln_array *array);
KILN_API int64_t kiln_array_size(const kiln_array *array);
/* size * dtype size: the bytes a C-order copy of the array takes. */
KILN_API size_t kiln_array_nbytes_dense(const kiln_array *array);
KILN_API bool kiln_array_is_contiguous(const kiln_array *array);
KILN_API kiln_device *kiln_array_device(const kiln_array *array);
/*
 * The address of element 0 for an array of the CPU device (NULL for other
 * devices). Call kiln_array_wait first if work may be writing it.
 */
KILN_API void *kiln_array_host_data(const kiln_array *array);

/* ------------------------------------------------------------------------ */
/* Kernels                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kiln_kernel kiln_kernel;

typedef enum kiln_math_mode {
  KILN_MATH_SAFE = 0, /* IEEE arithmetic, no reassociation or contraction */
  KILN_MATH_FAST = 1  /* the compiler may reassociate and use fast math */
} kiln_math_mode;

/*
 * A kernel in MLX's mx.fast.metal_kernel form (see docs/kernels.md):
 * `source` is the body only (statements, no signature), `header` holds
 * includes and helpers. kiln copies every string; the caller may free them
 * after kiln_kernel_create returns.
 */
typedef struct kiln_kernel_desc {
  size_t struct_size; /* set by kiln_kernel_desc_init */
  const char *name;
  const char *const *input_names;
  int num_inputs;
  const char *const *output_names;
  int num_outputs;
  const char *header; /* may be NULL */
  const char *source;
  bool ensure_row_contiguous; /* default true */
  bool atomic_outputs;        /* default false */
  kiln_math_mode math_mode;   /* default KILN_MATH_SAFE */
} kiln_kernel_desc;

/* Zeroes `desc` and sets the defaults listed above. */
KILN_API void kiln_kernel_desc_init(kiln_kernel_desc *desc);

/*
 * Checks the description and makes the kernel. Nothing is compiled until
 * the first launch with a given set of dtypes, shapes' ranks and template
 * arguments.
 *
 * Checked here: the name is non-empty printable text (no control
 * characters; UTF-8 is fine); the source is present and is a body, not a
 * full `kernel void f(...)`; there is at least one output; math_mode is
 * valid; every input and output name is a C identifier of at most 71
 * characters that is not a C++ or Metal keyword (`device`, `thread`, ...),
 * does not start with kiln_ or KILN_ and is not a thread attribute's name
 * (`thread_position_in_grid`, ...); names are distinct; and no name equals
 * the x_shape, x_strides or x_ndim that kiln generates for an input x when
 * the source uses it.
 *
 * Checked at each launch (and kiln_kernel_compile): input and output
 * counts, dtypes and shapes; with atomic_outputs, that every output is
 * int32, uint32 or float32 (Metal's atomic_int, atomic_uint, atomic_float);
 * template arguments (identifiers, distinct from each other and from the
 * kernel's names, valid dtypes, ints that fit an int); and, for launches
 * only, the grid, the threadgroup size and the threadgroup memory.
 */
KILN_API kiln_status kiln_kernel_create(const kiln_kernel_desc *desc,
                                        kiln_kernel **out);
KILN_API void kiln_kernel_destroy(kiln_kernel *kernel);

typedef enum kiln_template_kind {
  KILN_TEMPLATE_DTYPE = 0, /* becomes a typename parameter */
  KILN_TEMPLATE_INT = 1,   /* becomes an int parameter */
  KILN_TEMPLATE_BOOL = 2   /* becomes a bool parameter */
} kiln_template_kind;

typedef struct kiln_template_arg {
  const char *name;
  kiln_template_kind kind;
  kiln_dtype dtype; /* for KILN_TEMPLATE_DTYPE */
  int64_t value;    /* for KILN_TEMPLATE_INT and _BOOL (0 or 1) */
} kiln_template_arg;

typedef struct kiln_output_spec {
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
} kiln_output_spec;

typedef struct kiln_launch {
  size_t struct_size; /* set by kiln_launch_init */
  kiln_array *const *inputs; /* in input_names order; 0-d arrays: scalars */
  int num_inputs;
  const kiln_output_spec *outputs; /* in output_names order */
  int num_outputs;
  uint32_t grid[3];        /* threads, as Metal's dispatchThreads */
  uint32_t threadgroup[3]; /* clipped to the grid per dimension */
  const kiln_template_arg *template_args;
  int num_template_args;
  bool has_init_value; /* fill every output with init_value first */
  double init_value;
  bool verbose;        /* print the generated source to stderr */
  kiln_stream *stream; /* NULL: the default stream of `device` */
  kiln_device *device; /* NULL: the stream's device, else the inputs',
                          else kiln_device_default() */
} kiln_launch;

/* Zeroes `launch`, sets struct_size, grid and threadgroup to 1,1,1. */
KILN_API void kiln_launch_init(kiln_launch *launch);

/*
 * Compiles (once; see the cache below) and enqueues the kernel. On success
 * `outputs[i]` receives a new array for output i, owned by the caller; its
 * contents are ready once the stream reaches this point (reading it with
 * kiln_array_to_host waits automatically). Every check (input count and
 * dtypes, launch size, compilation, memory) happens before anything is
 * enqueued: on failure no output is created and nothing is written.
 */
KILN_API kiln_status kiln_kernel_launch(kiln_kernel *kernel,
                                        const kiln_launch *launch,
                                        kiln_array **outputs);

/*
 * The source kiln generates for this kernel with these inputs, outputs and
 * template arguments on `launch->device`, without compiling or launching.
 * *out is allocated with the C library's malloc; free() it.
 */
KILN_API kiln_status kiln_kernel_generate_source(kiln_kernel *kernel,
                                                 const kiln_launch *launch,
                                                 char **out);

/* A dtype and shape without data: what a compile needs to know of an
 * input. Same layout as kiln_output_spec. */
typedef kiln_output_spec kiln_array_spec;

typedef struct kiln_compile_report {
  size_t struct_size;          /* set to sizeof(kiln_compile_report) */
  char target[32];             /* "cpu", "sm_90a", ... */
  int registers;               /* per thread; -1 where not meaningful */
  uint64_t threadgroup_memory; /* static threadgroup bytes */
  uint64_t local_memory;       /* per-thread local memory (stack frame) */
  uint64_t spill_store_bytes;  /* registers spilled to local memory */
  uint64_t spill_load_bytes;
  double compile_ms;           /* the compiler's own time */
} kiln_compile_report;

/*
 * Generates and compiles the kernel for `target` without launching it:
 * "cpu", or a CUDA architecture ("sm_90a", "sm_80", ...; works on a machine
 * without a GPU when NVRTC is present), or NULL for the own target of
 * launch->device. Input dtypes and ranks come from `input_specs`
 * (launch->num_inputs of them) or, if NULL, from launch->inputs; outputs,
 * template arguments and the math mode from `launch`/the kernel; grid and
 * threadgroup are not used. Always compiles (the cache is bypassed).
 * Optional outputs, each allocated with the C library's malloc (free()
 * them): the generated source, the compiled artefact (a shared object for
 * "cpu", a cubin for CUDA; binary_size receives its size and must be given
 * with binary_out). `report` may be NULL; otherwise set its struct_size.
 * A bad target name is KILN_ERROR_INVALID_ARGUMENT; a target this build or
 * machine cannot compile for (no NVRTC, an architecture NVRTC does not
 * know) is KILN_ERROR_UNSUPPORTED; a compile error is KILN_ERROR_COMPILE
 * with the compiler's messages, as a launch reports them. On failure no
 * output is written.
 */
KILN_API kiln_status kiln_kernel_compile(kiln_kernel *kernel,
                                         const kiln_launch *launch,
                                         const kiln_array_spec *input_specs,
                                         const char *target,
                                         kiln_compile_report *report,
                                         char **source_out, void **binary_out,
                                         size_t *binary_size);

/* ------------------------------------------------------------------------ */
/* The kernel cache                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Built kernels are kept in memory for the process and on disk across
 * processes, in KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else
 * ~/.cache/kiln. The directory is created with mode 0700; one owned by
 * another user or writable by others is refused with KILN_ERROR_IO.
 * KILN_CACHE_DIR=off disables the disk cache. A file that fails its checks
 * (torn, foreign, corrupted) is rebuilt, never loaded.
 */
typedef struct kiln_cache_stats {
  size_t struct_size;    /* set to sizeof(kiln_cache_stats) */
  uint64_t compiles;     /* kernels built by a compiler in this process */
  uint64_t memory_hits;  /* launches served from the in-memory cache */
  uint64_t disk_hits;    /* kernels loaded from the disk cache */
  uint64_t disk_rejects; /* cache files that failed their checks */
} kiln_cache_stats;

KILN_API kiln_status kiln_cache_get_stats(kiln_cache_stats *stats);

/* The disk cache directory in use (creating it if needed). */
KILN_API kiln_status kiln_cache_dir(const char **out);

/* ------------------------------------------------------------------------ */
/* Linear algebra                                                           */
/* ------------------------------------------------------------------------ */

/*
 * kiln's linear algebra runs on every device, written in kiln's own kernel
 * system (Metal-dialect kernels in kernels/, drivers in src/linalg/).
 * Every function takes matrices with optional leading batch dimensions
 * (...×m×n): the batch dimensions of the operands must be equal, or an
 * operand may have none (it is then used for every batch entry). Inputs
 * may be strided views.
 * Work is enqueued on a stream like a kernel launch (asynchronous; reading
 * a result with kiln_array_to_host waits for it). Each function has a
 * basic form and an _ex form taking options, where NULL means defaults.
 */

/* Arithmetic that float32 matrix products may use. Default: float32
 * arithmetic throughout; the others are opt-in and trade accuracy for
 * tensor-core speed on GPUs (inputs rounded to TF32 / bfloat16, products
 * accumulated in float32). */
typedef enum kiln_precision {
  KILN_PRECISION_DEFAULT = 0,
  KILN_PRECISION_TF32 = 1,
  KILN_PRECISION_BF16 = 2
} kiln_precision;

typedef struct kiln_linalg_opts {
  size_t struct_size;       /* set by kiln_linalg_opts_init */
  kiln_stream *stream;      /* NULL: the calling thread's default stream of
                               the operands' device */
  kiln_precision precision; /* for float32 GEMM */
  int path;                 /* force an algorithm (per function; 0: auto).
                               GEMM/matmul: 1 SIMT (every dtype), 2 tensor
                               cores (float16, bfloat16, float64, or
                               float32 with precision TF32/BF16; devices
                               without them run the same tiles in SIMT
                               code), 3 the first-generation kernels (for
                               comparisons), 4 float32 SIMT on 128-square
                               tiles at any size, 5 float16/bfloat16 on
                               Hopper's warpgroup MMA (other devices run
                               its fallbacks) */
} kiln_linalg_opts;

KILN_API void kiln_linalg_opts_init(kiln_linalg_opts *opts);

/*
 * C = alpha * op(A) @ op(B) + beta * C, where op(X) is X or its transpose
 * (of the last two dimensions). A is ...×m×k (k×m when trans_a), B is
 * ...×k×n (n×k when trans_b), C is ...×m×n and is updated in place. All
 * three have one dtype: float32 or float64, or float16 / bfloat16 with
 * float32 accumulation. With beta == 0, C's old contents are not read
 * (NaN in C does not propagate). Errors: mismatched shapes or dtypes,
 * operands on different devices.
 */
KILN_API kiln_status kiln_gemm(bool trans_a, bool trans_b, double alpha,
                               kiln_array *a, kiln_array *b, double beta,
                               kiln_array *c);
KILN_API kiln_status kiln_gemm_ex(bool trans_a, bool trans_b, double alpha,
                                  kiln_array *a, kiln_array *b, double beta,
                                  kiln_array *c,
                                  const kiln_linalg_opts *opts);

/* *out = A @ B, a new array (...×m×n) of the operands' dtype. */
KILN_API kiln_status kiln_matmul(kiln_array *a, kiln_array *b,
                                 kiln_array **out);
KILN_API kiln_status kiln_matmul_ex(kiln_array *a, kiln_array *b,
                                    const kiln_linalg_opts *opts,
                                    kiln_array **out);

/*
 * Cholesky factorization of symmetric positive definite matrices: *out is
 * a new array (owned by the caller) of A's shape and dtype holding L with
 * A = L @ L^T (lower, upper == false) or U with A = U^T @ U (upper), the
 * other triangle zero. Only the triangle named by `upper` of A is read (as
 * LAPACK's potrf). A is ...×n×n (leading batch dimensions, each matrix
 * factored on its own), float32 or float64, and may be a strided view; n
 * == 0 or an empty batch gives an empty result.
 *
 * Unlike the other linear-algebra calls, this one waits for the
 * factorization to finish (it reads back a small per-matrix status) so
 * that a matrix that is not positive definite is an error rather than a
 * result full of NaN. Safe to call from several threads at once.
 *
 * Errors, with *out untouched and nothing allocated: A or out NULL;
 * KILN_ERROR_UNSUPPORTED for a dtype other than float32/float64 or n over
 * 65535; KILN_ERROR_INVALID_ARGUMENT for fewer than 2 dimensions, a
 * non-square matrix, or a matrix that is not positive definite, whose
 * message names the first such batch entry and its leading minor
 * (LAPACK's info, from 1: "the leading minor of order 3 of matrix 5 ...").
 * kiln_cholesky_ex: opts->path 0 auto (small up to n = 128, else
 * blocked), 1 small (the whole batch in one launch, a warp or a
 * threadgroup per matrix; n up to 128 in both dtypes), 2 blocked
 * (right-looking, with GEMM updates), 3 blocked with the lower-triangle
 * updates split down to small squares (the shape path 2 takes only for
 * large n, for tests); opts->stream as for every linalg call.
 */
KILN_API kiln_status kiln_cholesky(kiln_array *a, bool upper,
                                   kiln_array **out);
KILN_API kiln_status kiln_cholesky_ex(kiln_array *a, bool upper,
                                      const kiln_linalg_opts *opts,
                                      kiln_array **out);

/*
 * The calls below share these rules. Shapes are ...×rows×cols with leading
 * batch dimensions as above; float32 and float64 (KILN_ERROR_UNSUPPORTED
 * for other dtypes); results are new arrays owned by the caller, written
 * only on success (on any error every out pointer is left untouched and
 * nothing is allocated). Calls documented as "checks and waits" read a
 * small per-matrix status back before returning so that a singular matrix
 * is an error naming the matrix and the pivot (LAPACK's info, from 1)
 * rather than a result full of inf/NaN; the others are asynchronous like
 * kiln_gemm. opts->path forces an algorithm where a call documents paths.
 */

/* What kiln_qr returns. */
typedef enum kiln_qr_mode {
  KILN_QR_REDUCED = 0,  /* Q ...×m×k, R ...×k×n, k = min(m, n) */
  KILN_QR_COMPLETE = 1, /* Q ...×m×m, R ...×m×n */
  KILN_QR_R = 2         /* R ...×k×n only; q may be NULL and is untouched */
} kiln_qr_mode;

/*
 * QR factorization A = Q R of ...×m×n matrices (any shape: tall, wide,
 * square, 1×1; m or n == 0 gives empty results), Q with orthonormal
 * columns, R upper triangular (zeros below the diagonal) with a
 * non-negative diagonal, so results agree across paths and devices.
 * Asynchronous; NaN in A propagates. kiln_qr_ex paths: 0 auto, 1 small
 * (one threadgroup per matrix, m and n up to 128), 2 tall-skinny
 * (TSQR, m >= n, n up to 128 in float32 and 64 in float64; reduced Q or
 * R only), 3 blocked Householder (compact WY), 4 tall-skinny shifted
 * CholeskyQR3 (m >= n, n up to 64; reduced Q or R only; matrices where it
 * breaks down, e.g. rank-deficient ones, are redone by TSQR on the device,
 * so the result is as reliable as path 2's). Auto takes 4 for m >= 4n and
 * n <= 64 beyond the small path's sizes. A forced path that cannot take
 * the shape or mode is an error (KILN_ERROR_INVALID_ARGUMENT).
 */
KILN_API kiln_status kiln_qr(kiln_array *a, kiln_qr_mode mode,
                             kiln_array **q, kiln_array **r);
KILN_API kiln_status kiln_qr_ex(kiln_array *a, kiln_qr_mode mode,
                                const kiln_linalg_opts *opts,
                                kiln_array **q, kiln_array **r);

/*
 * Solves op(A) X = B for X, op(A) = A or A^T, A ...×n×n triangular (upper
 * or lower; only that triangle is read; unit_diagonal: the diagonal is
 * taken as ones and not read), B ...×n×k (k right-hand sides). *x is a new
 * ...×n×k array. Checks and waits: an exact zero on the diagonal is an
 * error naming it (LAPACK's trtrs).
 * kiln_solve_triangular_ex paths: 0 auto, 1 substitution (one thread per
 * right-hand side), 2 blocked with one launch per step of 256 rows (128
 * in float64; meant for few right-hand sides), 3 blocked with GEMM
 * updates (many). The
 * inverses below take 0, 1 and 3.
 */
KILN_API kiln_status kiln_solve_triangular(kiln_array *a, kiln_array *b,
                                           bool upper, bool trans,
                                           bool unit_diagonal,
                                           kiln_array **x);
KILN_API kiln_status kiln_solve_triangular_ex(kiln_array *a, kiln_array *b,
                                              bool upper, bool trans,
                                              bool unit_diagonal,
                                              const kiln_linalg_opts *opts,
                                              kiln_array **x);

/* The inverse of triangular A (...×n×n; only the named triangle is read),
 * triangular of the same kind, zeros in the other triangle. Checks and
 * waits (a zero diagonal is an error). */
KILN_API kiln_status kiln_tri_inv(kiln_array *a, bool upper,
                                  bool unit_diagonal, kiln_array **out);
KILN_API kiln_status kiln_tri_inv_ex(kiln_array *a, bool upper,
                                     bool unit_diagonal,
                                     const kiln_linalg_opts *opts,
                                     kiln_array **out);

/* A^-1 from A's Cholesky factor F (...×n×n; F = L with A = L L^T, or U
 * with A = U^T U when upper; only that triangle is read), as LAPACK's
 * potri: the full symmetric inverse. Checks and waits. */
KILN_API kiln_status kiln_cholesky_inv(kiln_array *f, bool upper,
                                       kiln_array **out);
KILN_API kiln_status kiln_cholesky_inv_ex(kiln_array *f, bool upper,
                                          const kiln_linalg_opts *opts,
                                          kiln_array **out);

/*
 * LU factorization with partial pivoting of ...×m×n matrices, LAPACK's
 * getrf: *lu holds L (unit lower, below the diagonal) and U (on and above
 * it) packed in one ...×m×n array; *pivots (int32, ...×min(m, n)) says row
 * i was interchanged with row pivots[i] (from 0, in order i = 0, 1, ...).
 * Checks and waits: a zero pivot (a singular matrix) or a non-finite
 * value met while factoring is an error naming the matrix and the pivot.
 * _ex paths (also for kiln_lu, kiln_solve, kiln_inv, kiln_det and
 * kiln_slogdet): 0 auto, 1 small (one threadgroup per matrix, m and n up
 * to 128), 2 blocked.
 */
KILN_API kiln_status kiln_lu_factor(kiln_array *a, kiln_array **lu,
                                    kiln_array **pivots);
KILN_API kiln_status kiln_lu_factor_ex(kiln_array *a,
                                       const kiln_linalg_opts *opts,
                                       kiln_array **lu, kiln_array **pivots);

/* The same factorization unpacked: A[perm] = L @ U with perm (int32,
 * ...×m) a permutation of the rows, L ...×m×k unit lower triangular, U
 * ...×k×n upper triangular, k = min(m, n). Checks and waits. */
KILN_API kiln_status kiln_lu(kiln_array *a, kiln_array **perm,
                             kiln_array **l, kiln_array **u);
KILN_API kiln_status kiln_lu_ex(kiln_array *a, const kiln_linalg_opts *opts,
                                kiln_array **perm, kiln_array **l,
                                kiln_array **u);

/* X with A X = B: A ...×n×n, B ...×n×k (or 1-D n for one right-hand side
 * of a 2-D A; X then is 1-D too). LU with partial pivoting. Checks and
 * waits: a singular A is an error naming the matrix and the pivot. */
KILN_API kiln_status kiln_solve(kiln_array *a, kiln_array *b,
                                kiln_array **x);
KILN_API kiln_status kiln_solve_ex(kiln_array *a, kiln_array *b,
                                   const kiln_linalg_opts *opts,
                                   kiln_array **x);

/* A^-1 of ...×n×n matrices. Checks and waits, as kiln_solve. */
KILN_API kiln_status kiln_inv(kiln_array *a, kiln_array **out);
KILN_API kiln_status kiln_inv_ex(kiln_array *a, const kiln_linalg_opts *opts,
                                 kiln_array **out);

/* Determinants of ...×n×n matrices: *out has the batch shape (0-d for one
 * matrix) and A's dtype; a singular matrix gives 0 (not an error). For
 * large n the product can overflow: use kiln_slogdet. Asynchronous. */
KILN_API kiln_status kiln_det(kiln_array *a, kiln_array **out);
KILN_API kiln_status kiln_det_ex(kiln_array *a, const kiln_linalg_opts *opts,
                                 kiln_array **out);

/* det(A) = sign * exp(logabsdet), both of the batch shape and A's dtype;
 * a singular matrix gives sign 0 and logabsdet -inf. Asynchronous. */
KILN_API kiln_status kiln_slogdet(kiln_array *a, kiln_array **sign,
                                  kiln_array **logabsdet);
KILN_API kiln_status kiln_slogdet_ex(kiln_array *a,
                                     const kiln_linalg_opts *opts,
                                     kiln_array **sign,
                                     kiln_array **logabsdet);

/* Which norm kiln_norm computes. */
typedef enum kiln_norm_type {
  KILN_NORM_FRO = 0, /* sqrt(sum |x|^2) (for vectors: the 2-norm) */
  KILN_NORM_1 = 1,   /* vectors: sum |x|; matrices: max column sum */
  KILN_NORM_2 = 2,   /* vectors only: sqrt(sum |x|^2) */
  KILN_NORM_INF = 3  /* vectors: max |x|; matrices: max row sum */
} kiln_norm_type;

/*
 * Norms of the vectors along A's last dimension (vectors == true; *out has
 * A's shape without it) or of the ...×m×n matrices of A (*out has the
 * batch shape; 0-d for one matrix). *out has A's dtype (float32 or
 * float64); sums are accumulated in double (sums of squares with Blue's
 * scaled accumulators, as LAPACK's dnrm2) without overflow or underflow
 * for any finite input whose norm is representable. NaN propagates. An
 * empty vector or matrix has norm 0 for every type (numpy raises for the
 * max-based ones); an empty batch gives an empty result. A may be a
 * strided view. The matrix 2-norm needs singular values and is refused
 * (KILN_ERROR_UNSUPPORTED). Asynchronous. kiln_norm_ex paths: 0 auto, 1
 * one threadgroup per vector or matrix, 2 split (several threadgroups per
 * vector or matrix and a second pass; auto takes it when the batch alone
 * cannot fill the device).
 */
KILN_API kiln_status kiln_norm(kiln_array *a, kiln_norm_type type,
                               bool vectors, kiln_array **out);
KILN_API kiln_status kiln_norm_ex(kiln_array *a, kiln_norm_type type,
                                  bool vectors, const kiln_linalg_opts *opts,
                                  kiln_array **out);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
