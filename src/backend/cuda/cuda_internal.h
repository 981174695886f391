/*
 * Private interfaces of the CUDA backend. Files:
 *   cuda_loader.c    dlopen of libcuda.so.1 and NVRTC, the symbol tables,
 *                    checked calls and CUDA error names
 *   cuda_backend.c   the kiln__backend_ops table: probe, contexts, memory,
 *                    streams, events, host callbacks, fills, copies, launch
 *   cuda_compile.c   NVRTC compilation to cubins, the build id, ptxas
 *                    resource reports, load/unload of modules
 *   cuda_builtins.c  kiln's own small kernels (strided gather and fill),
 *                    compiled once per process and loaded once per device
 */
#ifndef KILN_BACKEND_CUDA_INTERNAL_H
#define KILN_BACKEND_CUDA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_abi.h"
#include "backend/cuda/cuda_loader.h"
#include "core/core.h"

/* The embedded CUDA prelude (generated from src/dialect/prelude/ by
 * CMake, like the CPU's). */
extern const char kiln__prelude_cuda_text[];
extern const size_t kiln__prelude_cuda_text_size;

typedef struct kiln__cuda_host_node kiln__cuda_host_node;

/* Backend data of one GPU (kiln_device.impl); static storage, lives for
 * the process. */
typedef struct kiln__cuda_device {
  const kiln__cu_api *cu;
  CUdevice handle;
  int ordinal;
  int cc_major, cc_minor;
  char arch[16];           /* "sm_90a", "sm_80" */
  unsigned max_grid[3];    /* blocks */
  unsigned max_block[3];   /* threads per block dimension */
  pthread_mutex_t lock;    /* context set-up, lost state, names, build id */
  _Atomic(CUcontext) ctx;  /* the primary context, retained on first use */
  atomic_bool lost;        /* a sticky error poisoned the context */
  char lost_msg[768];      /* what every later call says (under lock) */
  char last_kernel[128];   /* the last kernel enqueued (under lock) */
  char *build_id;          /* kiln__malloc'ed once, under lock */
  void *builtins;          /* cuda_builtins.c's module, published once */
  /* event pool: CUevents ready for reuse */
  pthread_mutex_t pool_lock;
  struct kiln__event *pool;
  /* frees that arrived on a CUDA host-function thread (see mem_free) */
  pthread_mutex_t free_lock;
  CUdeviceptr *deferred;
  size_t num_deferred, cap_deferred;
  atomic_bool has_deferred;
  /* the host-callback thread and its queue */
  pthread_mutex_t cb_lock;
  pthread_cond_t cb_work; /* the queue got a node */
  pthread_cond_t cb_done; /* a callback finished (streams wait on it) */
  kiln__cuda_host_node *cb_head, *cb_tail;
  bool cb_started;
  /* the live streams, for reclaim (cuda_backend.c's cuda_stream) */
  pthread_mutex_t streams_lock;
  struct cuda_stream *streams;
} kiln__cuda_device;

/* A loaded kernel: the module and its one entry point. */
typedef struct kiln__cuda_module {
  CUmodule module;
  CUfunction function;
  int max_threads; /* CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK */
  int registers;
} kiln__cuda_module;

static inline kiln__cuda_device *kiln__cuda_dev(struct kiln_device *dev) {
  return (kiln__cuda_device *)dev->impl;
}

/*
 * Makes the device's primary context current on the calling thread
 * (retaining it on first use). Fails with KILN_ERROR_DEVICE_LOST, saying
 * the device must be reset, once a sticky error has poisoned the context.
 * Called at the top of every callback that talks to the driver.
 */
kiln_status kiln__cuda_enter(kiln__cuda_device *d);

/*
 * Turns this thread's last failed driver call into an error: a sticky
 * error marks the device lost and returns KILN_ERROR_DEVICE_LOST naming
 * the last kernel launched; anything else becomes `status` with the
 * caller's sentence and the CUDA error's name and text.
 */
kiln_status kiln__cuda_fail(kiln__cuda_device *d, kiln_status status,
                            const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- compiler side (cuda_compile.c) -------------------------------------- */

/* What one NVRTC run should do. */
typedef struct kiln__nvrtc_job {
  const char *arch;        /* "sm_90a" */
  const char *source;
  const char *name;        /* the program's name in diagnostics */
  kiln_math_mode math;
  bool ptxas_report;       /* add --ptxas-options=-v and parse it */
} kiln__nvrtc_job;

/*
 * Compiles a job to a cubin (out->data kiln__malloc'ed). On a compile
 * error returns KILN_ERROR_COMPILE with *log the program log (NULL
 * allowed); `info` (may be NULL) receives the ptxas report of the entry
 * point (kiln__dialect_entry_name of job->name) and the compile time.
 */
kiln_status kiln__cuda_nvrtc_compile(const kiln__nvrtc_job *job,
                                     kiln__binary *out, char **log,
                                     kiln__compile_info *info);

/*
 * NVRTC warm-up (see cuda_compile.c). kiln__cuda_warm_up_claim is true
 * once per process, and only if no compile has begun: its caller then
 * calls kiln__cuda_warm_up, which loads NVRTC and compiles a small
 * program with the prelude for `arch`, so that the first kernel compile
 * finds NVRTC warm. Best effort: it never fails and sets no error.
 */
bool kiln__cuda_warm_up_claim(void);
void kiln__cuda_warm_up(const char *arch);

/* Parses ptxas -v output for function `entry` into `info`. */
void kiln__cuda_parse_ptxas(const char *log, const char *entry,
                            kiln__compile_info *info);

/* Checks that `data` is a CUDA ELF image (a cubin, EM_CUDA). */
kiln_status kiln__cuda_check_cubin(const void *data, size_t size);

kiln_status kiln__cuda_build_id(struct kiln_device *dev, const char **out);
kiln_status kiln__cuda_compile(struct kiln_device *dev, const char *source,
                               kiln_math_mode math, const char *kernel_name,
                               kiln__binary *out, char **log);
kiln_status kiln__cuda_load(struct kiln_device *dev, const void *data,
                            size_t size, void **module,
                            kiln__module_info *info);
void kiln__cuda_unload(struct kiln_device *dev, void *module);
kiln_status kiln__cuda_compile_for_target(const char *target,
                                          const char *source,
                                          kiln_math_mode math,
                                          const char *kernel_name,
                                          kiln__binary *out, char **log,
                                          kiln__compile_info *info);

/* ---- builtin kernels (cuda_builtins.c) ----------------------------------- */

typedef enum kiln__cuda_builtin {
  KILN__CUDA_GATHER1 = 0,
  KILN__CUDA_GATHER2,
  KILN__CUDA_GATHER4,
  KILN__CUDA_GATHER8,
  KILN__CUDA_SFILL1,
  KILN__CUDA_SFILL2,
  KILN__CUDA_SFILL4,
  KILN__CUDA_SFILL8,
  KILN__CUDA_NUM_BUILTINS
} kiln__cuda_builtin;

/* The by-value argument of the gather kernels (mirrored in their source). */
typedef struct kiln__cuda_gather_dims {
  long long shape[KILN_CUDA_MAX_NDIM];
  long long strides[KILN_CUDA_MAX_NDIM]; /* bytes */
  unsigned long long count;              /* elements */
  int ndim;
} kiln__cuda_gather_dims;

/* A builtin kernel function of the device, compiled and loaded on first
 * use (thread-safe). Call with the device's context current. */
kiln_status kiln__cuda_builtin_get(kiln__cuda_device *d,
                                   kiln__cuda_builtin which, CUfunction *out);

#endif /* KILN_BACKEND_CUDA_INTERNAL_H */
