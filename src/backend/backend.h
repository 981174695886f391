/*
 * The table of operations every backend exports (PoCL's pocl_device_ops).
 * The core (src/core/) owns the objects and the ordering logic; a backend
 * only knows how to allocate, move bytes, order work on its queues and build
 * and launch kernels. The CPU backend is src/backend/cpu/; the CUDA backend
 * is src/backend/cuda/ (a stub answering "not supported" until it lands).
 *
 * Threading contract, unless a callback says otherwise: a callback may be
 * called from any host thread, concurrently with any other callback on a
 * different object; the core never calls two callbacks on the same stream
 * at once (it holds the stream's submit lock around stream callbacks).
 */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

struct kiln__buffer;
typedef struct kiln__event kiln__event; /* defined by each backend */

/* One kernel argument, in signature order. */
typedef enum kiln__arg_kind {
  KILN__ARG_BUFFER = 0, /* device memory: `ptr` (already offset) */
  KILN__ARG_BYTES = 1   /* small host data passed by value: `bytes`, `size`
                           (shape, strides, ndim); the backend copies it */
} kiln__arg_kind;

typedef struct kiln__arg {
  kiln__arg_kind kind;
  void *ptr;
  const void *bytes;
  size_t size;
} kiln__arg;

/* Everything a backend needs to launch one compiled kernel. */
typedef struct kiln__launch_params {
  const char *kernel_name; /* for error messages */
  uint32_t grid[3];        /* threads */
  uint32_t tg[3];          /* threadgroup, already clipped to the grid */
  const kiln__arg *args;
  int num_args;
  /* Bytes of dynamic threadgroup memory (CUDA's extern __shared__) per
   * group, beyond the kernel's static arrays; 0 for almost every kernel.
   * Backends without it (the CPU) ignore it. Set from the kernel
   * (kiln__kernel_set_dynamic_shared). */
  uint32_t dynamic_shared;
  /* Every threadgroup resident at once (CUDA: cuLaunchCooperativeKernel),
   * for a kernel whose groups wait for each other (a grid-wide barrier);
   * such a launch must fit the device in one part. Backends that run a
   * launch's groups without that guarantee (the CPU) ignore it: the
   * caller gives them one group. Set from the kernel
   * (kiln__kernel_set_cooperative). */
  bool cooperative;
} kiln__launch_params;

/* A strided view of bytes in device memory, for copies. */
typedef struct kiln__strided {
  char *base;      /* address of element 0 (offset applied) */
  int ndim;
  const int64_t *shape;
  const int64_t *strides; /* elements */
} kiln__strided;

/* Host function run in stream order; status is the stream's first
 * asynchronous error so far (KILN_OK if none). */
typedef void (*kiln__host_fn)(void *user, kiln_status status);

/* What a backend's compile step produces: bytes that `load` accepts (a
 * shared object on the CPU, a cubin on CUDA) and the compiler's messages. */
typedef struct kiln__binary {
  void *data; /* kiln__malloc'ed */
  size_t size;
} kiln__binary;

/* Resource facts about a loaded kernel (kiln compile prints them). */
typedef struct kiln__module_info {
  uint64_t threadgroup_memory; /* static threadgroup bytes */
  int registers;               /* -1 where not meaningful */
  uint64_t local_memory;       /* spill/stack bytes; 0 on the CPU */
  bool needs_fibers;           /* CPU: uses barriers or SIMD functions */
  uint64_t stack_bytes;        /* CPU: largest stack frame; 0 if unknown */
  /* The most threads per threadgroup the compiled kernel can run (CUDA:
   * limited by its registers); 0 if the backend has no such limit. */
  uint32_t max_threads;
} kiln__module_info;

/* What a compiler says about a kernel it built (kiln compile prints it). */
typedef struct kiln__compile_info {
  int registers;              /* per thread; -1 if unknown */
  uint64_t shared_bytes;      /* static threadgroup memory */
  uint64_t local_bytes;       /* stack frame / local memory per thread */
  uint64_t spill_store_bytes; /* register spills to local memory */
  uint64_t spill_load_bytes;
  double compile_ms;
} kiln__compile_info;

typedef struct kiln__backend_ops {
  const char *name; /* "cpu", "cuda" */

  /* Called once, under the device registry lock: fills up to `max`
   * devices (index/ops/info fields) and returns how many; on none, sets
   * *why to a static sentence. */
  int (*probe)(struct kiln_device **devices, int max, const char **why);

  /* -- memory: raw allocations; the core's caching allocator sits above.
   *    Called with the device's allocator lock held. */
  kiln_status (*mem_alloc)(struct kiln_device *dev, size_t bytes, void **out);
  void (*mem_free)(struct kiln_device *dev, void *ptr, size_t bytes);

  /* -- streams: `impl` of kiln_stream belongs to the backend. */
  kiln_status (*stream_create)(struct kiln_stream *stream);
  /* Only called on an idle stream. */
  void (*stream_destroy)(struct kiln_stream *stream);
  bool (*stream_idle)(struct kiln_stream *stream);
  /* Blocks until everything enqueued so far finished; returns and clears
   * the first asynchronous error. */
  kiln_status (*stream_synchronize)(struct kiln_stream *stream);
  /* Runs, without waiting, every release (enqueue_release) of every
   * stream of the device whose point the stream has passed, so that
   * their buffers return to the allocator. The allocator calls it before
   * reporting out of memory, without its lock (releases free buffers),
   * then retries once. Any thread; the caller may hold a stream's submit
   * lock, so reclaim must not take one. NULL where releases never wait
   * (the CPU). */
  void (*reclaim)(struct kiln_device *dev);

  /* -- events: a point in a stream. The core keeps one per write/read of
   *    each buffer to order streams. Records are cheap. */
  kiln_status (*event_record)(struct kiln_stream *stream, kiln__event **out);
  bool (*event_done)(kiln__event *event);
  kiln_status (*event_synchronize)(kiln__event *event); /* host waits */
  /* Work enqueued on `stream` after this waits for `event`. */
  kiln_status (*stream_wait_event)(struct kiln_stream *stream,
                                   kiln__event *event);
  void (*event_retain)(kiln__event *event);
  void (*event_release)(kiln__event *event);

  /* -- work, each enqueued in stream order and returning at once. */
  kiln_status (*enqueue_host)(struct kiln_stream *stream, kiln__host_fn fn,
                              void *user);
  /* Like enqueue_host, but only promises that fn runs some time after the
   * stream passed this point (possibly much later, from any thread, e.g. a
   * later kiln call), never before. Used to release buffers, where a GPU
   * backend can avoid a host callback per launch. fn must not block. */
  kiln_status (*enqueue_release)(struct kiln_stream *stream,
                                 kiln__host_fn fn, void *user);
  /* Repeats the `pattern_size`-byte pattern over `count` elements. */
  kiln_status (*fill)(struct kiln_stream *stream, void *dst, size_t count,
                      const void *pattern, size_t pattern_size);
  /* Sets every element of a strided view to the pattern (the scatter twin
   * of copy_strided). NULL where the core's host loop serves (the CPU). */
  kiln_status (*fill_strided)(struct kiln_stream *stream,
                              const kiln__strided *dst, const void *pattern,
                              size_t pattern_size);
  /* Gathers a strided view into contiguous device memory. */
  kiln_status (*copy_strided)(struct kiln_stream *stream,
                              const kiln__strided *src, void *dst,
                              size_t elem_size);
  /* Host <-> device; both return only once the bytes have moved (after the
   * work enqueued before them). */
  kiln_status (*copy_to_host)(struct kiln_stream *stream, const void *src,
                              void *dst, size_t bytes);
  kiln_status (*copy_from_host)(struct kiln_stream *stream, void *dst,
                                const void *src, size_t bytes);

  /* -- kernels */
  /* The text placed before the user's header in generated source. */
  const char *(*prelude)(struct kiln_device *dev);
  /* Everything besides the source that changes the binary: compiler
   * identity and version, target architecture, flags. Part of the cache
   * key. Computed once per device; owned by the backend. */
  kiln_status (*build_id)(struct kiln_device *dev, const char **out);
  /* Compiles generated source. On a compile error returns
   * KILN_ERROR_COMPILE with *log set (kiln__malloc'ed, may be NULL
   * otherwise); the caller maps line numbers. */
  kiln_status (*compile)(struct kiln_device *dev, const char *source,
                         kiln_math_mode math, const char *kernel_name,
                         kiln__binary *out, char **log);
  /* Loads a binary that `compile` produced (possibly in another process).
   * Must refuse anything it cannot verify as its own. */
  kiln_status (*load)(struct kiln_device *dev, const void *data, size_t size,
                      void **module, kiln__module_info *info);
  void (*unload)(struct kiln_device *dev, void *module);
  kiln_status (*launch)(struct kiln_stream *stream, void *module,
                        const kiln__launch_params *params);

  /* Compiles for a named target without a device ("cpu"; "sm_90a",
   * "sm_80", ... for CUDA), for `kiln compile`. `prelude` is that target's
   * prelude. Fills `info` with what the compiler reports (registers,
   * shared, local and spill bytes; -1/0 where unknown). May be NULL for a
   * backend that cannot. Threading: any thread. */
  kiln_status (*compile_for_target)(const char *target, const char *source,
                                    kiln_math_mode math,
                                    const char *kernel_name,
                                    kiln__binary *out, char **log,
                                    struct kiln__compile_info *info);
  /* The prelude for a target name (see compile_for_target). */
  const char *(*target_prelude)(const char *target);
} kiln__backend_ops;

extern const kiln__backend_ops kiln__cpu_backend;
extern const kiln__backend_ops kiln__cuda_backend;

#endif /* KILN_BACKEND_H */
