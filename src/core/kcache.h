/*
 * The kernel cache: built kernels kept in memory for the process (keyed by
 * device and cache key) and on disk across processes (one checked file per
 * cache key). kernel.c asks it for a loaded module given generated source;
 * the cache decides whether to reuse, load from disk or compile.
 *
 * The disk format (little-endian), see kcache.c:
 *   "KILNKBIN" | u32 format version | 32-byte key | backend name (16 bytes,
 *   NUL-padded) | u64 payload size | SHA-256 of the payload | payload
 */
#ifndef KILN_CORE_KCACHE_H
#define KILN_CORE_KCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

#define KILN__KCACHE_FORMAT_VERSION 1u
#define KILN__KCACHE_HEADER_BYTES (8 + 4 + 32 + 16 + 8 + 32)

/* A loaded module, shared by every kernel object that generates the same
 * source on the same device. Entries live for the whole process. */
typedef struct kiln__kmodule {
  kiln_device *device;
  uint8_t key[32];
  void *module; /* from ops->load */
  kiln__module_info info;
  struct kiln__kmodule *next;
} kiln__kmodule;

/* Which counter of kiln_cache_stats to bump. */
typedef enum kiln__kcache_counter {
  KILN__KCACHE_COMPILES = 0,
  KILN__KCACHE_MEMORY_HITS,
  KILN__KCACHE_DISK_HITS,
  KILN__KCACHE_DISK_REJECTS
} kiln__kcache_counter;

/* Adds one to a process-wide counter (relaxed atomics; thread-safe). */
void kiln__kcache_count(kiln__kcache_counter which);

/*
 * The cache key of `source` built for `dev`: SHA-256 over a format tag,
 * kiln's version, the backend's name and build id, the math mode and the
 * source.
 */
kiln_status kiln__kcache_key(kiln_device *dev, const char *source,
                             kiln_math_mode math, uint8_t key[32]);

/*
 * Returns the loaded module for `source` on `dev`: from memory, else from
 * the disk cache, else compiled (and then written to disk). Counts the
 * matching statistic. A compile error becomes KILN_ERROR_COMPILE with
 * "kernel 'NAME' failed to compile:" and the mapped compiler log.
 */
kiln_status kiln__kcache_obtain(kiln_device *dev, const char *source,
                                kiln_math_mode math, const char *kernel_name,
                                kiln__kmodule **out);

/*
 * Turns a compiler log (NULL means empty) into the user's error:
 * KILN_ERROR_COMPILE with "kernel 'NAME' failed to compile:" and the log
 * mapped back to the kernel's body or header.
 */
kiln_status kiln__kcache_compile_error(const char *kernel_name,
                                       const char *log);

/*
 * The disk cache directory, created (mode 0700) and checked (a real
 * directory owned by the user and not writable by group or others). Sets
 * *out to NULL when KILN_CACHE_DIR=off. The string lives for the process.
 */
kiln_status kiln__kcache_dir(const char **out);

/*
 * Reads the cache file for `key` in `dir`. *found is false when there is no
 * file or the file failed its checks (counted as a disk reject); then
 * `out` is untouched. On success out->data is kiln__malloc'ed.
 */
kiln_status kiln__kcache_read(const char *dir, const uint8_t key[32],
                              const char *backend, kiln__binary *out,
                              bool *found);

/* Writes the cache file for `key` atomically (temporary file, then
 * rename). */
kiln_status kiln__kcache_write(const char *dir, const uint8_t key[32],
                               const char *backend, const void *data,
                               size_t size);

/*
 * The stage clock: where a kernel's first launch spends its time. Each
 * stage of the miss path adds its wall time here, per thread, so that a
 * benchmark can say which stage a slow cold launch lost its time in
 * (bench_cuda prints it). Stages nest where noted: NVRTC is part of
 * COMPILE. WARM_UP is the NVRTC warm-up at context creation, before any
 * launch. Costs two clock reads per stage, on the miss path only.
 */
typedef enum kiln__stage {
  KILN__STAGE_GENERATE = 0, /* codegen: the generated source */
  KILN__STAGE_KEY,          /* the cache key (build id, hashing) */
  KILN__STAGE_DISK_READ,    /* cache directory check and disk lookup */
  KILN__STAGE_COMPILE,      /* the backend's compile call, whole */
  KILN__STAGE_NVRTC,        /* nvrtcCompileProgram alone (in COMPILE) */
  KILN__STAGE_DISK_WRITE,   /* the cache file's write and rename */
  KILN__STAGE_LOAD,         /* loading the module (cuModuleLoadData) */
  KILN__STAGE_WARM_UP,      /* the NVRTC warm-up at context creation */
  KILN__STAGE_COUNT
} kiln__stage;

/* Adds `ns` nanoseconds to this thread's total for `stage`. */
void kiln__stage_add(kiln__stage stage, uint64_t ns);

/*
 * Copies this thread's totals, in milliseconds, into ms[0 .. n-1] (stages
 * in kiln__stage order; n may be smaller or larger than
 * KILN__STAGE_COUNT, extra entries get 0) and, with `reset`, zeroes them.
 * Returns KILN__STAGE_COUNT. For benchmarks: kiln.h does not export it.
 */
int kiln__stage_times(double *ms, int n, bool reset);

/* The stage's name ("generate", "nvrtc", ...), or NULL past the last. */
const char *kiln__stage_name(int stage);

#endif /* KILN_CORE_KCACHE_H */
