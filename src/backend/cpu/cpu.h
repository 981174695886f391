/*
 * Private interfaces of the CPU backend. Files:
 *   cpu_backend.c  the kiln__backend_ops table: probe, memory, streams (one
 *                  OS thread and a FIFO queue per stream), events, copies,
 *                  fill, launch (a queued task that calls kiln__cpu_execute)
 *   cpu_compile.c  the host C++ compiler: discovery, build id, compile to a
 *                  shared object, load (verify, dlopen), unload
 *   exec.c         running one launch: threadgroups over the worker pool,
 *                  each group as a plain loop or as fibers
 *   pool.c         the worker pool
 *   fiber.c        cooperative fibers with a hand-written context switch
 */
#ifndef KILN_BACKEND_CPU_H
#define KILN_BACKEND_CPU_H

#include "backend/backend.h"
#include "backend/cpu/cpu_abi.h"
#include "core/core.h"

/* A loaded kernel object. */
typedef struct kiln__cpu_module {
  void *dl_handle;
  kiln_cpu_run_group_fn run_group;
  kiln_cpu_run_thread_fn run_thread;
  uint32_t flags;     /* KILN_CPU_NEEDS_FIBERS */
  uint64_t tls_bytes; /* the object's thread-local (threadgroup) storage */
  /* The largest stack frame among the object's functions, from the
   * compiler's stack usage report: about what one thread needs. 0 if
   * unknown. */
  uint64_t stack_bytes;
} kiln__cpu_module;

/*
 * Runs a whole launch and returns when every threadgroup has finished.
 * Called on a stream's thread; groups are spread over the worker pool (the
 * calling thread helps). A kernel's misuse reported through
 * kiln_cpu_group.error becomes KILN_ERROR_LAUNCH with a message naming
 * `kernel_name`.
 */
kiln_status kiln__cpu_execute(const kiln__cpu_module *module,
                              const kiln_cpu_launch *launch,
                              const char *kernel_name);

/*
 * KILN_ERROR_LAUNCH, with a message naming `kernel_name`, if the module
 * runs its threads as fibers and its largest stack frame does not fit a
 * fiber's stack with room to spare (it would run off the stack and crash
 * the process); KILN_OK otherwise. kiln__cpu_execute checks this before
 * running anything; a caller may check earlier to refuse synchronously.
 */
kiln_status kiln__cpu_check_stack(const kiln__cpu_module *module,
                                  const char *kernel_name);

/* The worker pool, started on first use; size from KILN_CPU_THREADS, else
 * the number of online processors. */
typedef void (*kiln__cpu_job_fn)(void *ctx, uint64_t item, int worker);
/* Calls fn(ctx, i, worker) for every i in [0, count), spread over the pool
 * and the calling thread; returns when all calls have returned. `worker`
 * is in [0, kiln__cpu_pool_size()] and unique among concurrent calls of
 * one kiln__cpu_parallel_for, so it can index per-worker scratch. */
kiln_status kiln__cpu_parallel_for(uint64_t count, kiln__cpu_job_fn fn,
                                   void *ctx);
int kiln__cpu_pool_size(void);

/* Compiler side (cpu_compile.c). */
kiln_status kiln__cpu_build_id(kiln_device *dev, const char **out);
kiln_status kiln__cpu_compile(kiln_device *dev, const char *source,
                              kiln_math_mode math, const char *kernel_name,
                              kiln__binary *out, char **log);
kiln_status kiln__cpu_load(kiln_device *dev, const void *data, size_t size,
                           void **module, kiln__module_info *info);
void kiln__cpu_unload(kiln_device *dev, void *module);
kiln_status kiln__cpu_compile_for_target(const char *target,
                                         const char *source,
                                         kiln_math_mode math,
                                         const char *kernel_name,
                                         kiln__binary *out, char **log,
                                         kiln__compile_info *info);

/* The embedded prelude (generated from src/dialect/prelude/ by CMake). */
extern const char kiln__prelude_cpu_text[];
extern const size_t kiln__prelude_cpu_text_size;

#endif /* KILN_BACKEND_CPU_H */
