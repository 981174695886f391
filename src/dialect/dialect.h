/*
 * The Metal dialect front end: reads a kernel's header and body, builds the
 * signature by MLX's rules (KERNEL-DIALECT.md §3) and writes the complete
 * source for a backend. Backend-neutral except for the entry glue, which
 * is per target (kiln__codegen_target).
 */
#ifndef KILN_DIALECT_H
#define KILN_DIALECT_H

#include "core/util.h"

/* The thread attributes, by Metal name (KERNEL-DIALECT.md §3). */
#define KILN__ATTR_MAP(XX)                                                    \
  XX(THREAD_POSITION_IN_GRID, "thread_position_in_grid", "uint3")             \
  XX(THREAD_POSITION_IN_THREADGROUP, "thread_position_in_threadgroup",        \
     "uint3")                                                                 \
  XX(THREADGROUP_POSITION_IN_GRID, "threadgroup_position_in_grid", "uint3")   \
  XX(THREADS_PER_THREADGROUP, "threads_per_threadgroup", "uint3")             \
  XX(THREADGROUPS_PER_GRID, "threadgroups_per_grid", "uint3")                 \
  XX(THREADS_PER_GRID, "threads_per_grid", "uint3")                           \
  XX(GRID_SIZE, "grid_size", "uint3")                                         \
  XX(GRID_ORIGIN, "grid_origin", "uint3")                                     \
  XX(DISPATCH_THREADS_PER_THREADGROUP, "dispatch_threads_per_threadgroup",    \
     "uint3")                                                                 \
  XX(THREAD_INDEX_IN_THREADGROUP, "thread_index_in_threadgroup", "uint")      \
  XX(THREAD_INDEX_IN_SIMDGROUP, "thread_index_in_simdgroup", "uint")          \
  XX(SIMDGROUP_INDEX_IN_THREADGROUP, "simdgroup_index_in_threadgroup",        \
     "uint")                                                                  \
  XX(THREADS_PER_SIMDGROUP, "threads_per_simdgroup", "uint")                  \
  XX(SIMDGROUPS_PER_THREADGROUP, "simdgroups_per_threadgroup", "uint")        \
  XX(DISPATCH_SIMDGROUPS_PER_THREADGROUP,                                     \
     "dispatch_simdgroups_per_threadgroup", "uint")                           \
  XX(THREAD_EXECUTION_WIDTH, "thread_execution_width", "uint")                \
  XX(QUADGROUP_INDEX_IN_THREADGROUP, "quadgroup_index_in_threadgroup",        \
     "uint")                                                                  \
  XX(THREAD_INDEX_IN_QUADGROUP, "thread_index_in_quadgroup", "uint")          \
  XX(QUADGROUPS_PER_THREADGROUP, "quadgroups_per_threadgroup", "uint")        \
  XX(DISPATCH_QUADGROUPS_PER_THREADGROUP,                                     \
     "dispatch_quadgroups_per_threadgroup", "uint")

typedef enum kiln__attr {
#define KILN__ATTR_ENUM_(id, name, type) KILN__ATTR_##id,
  KILN__ATTR_MAP(KILN__ATTR_ENUM_)
#undef KILN__ATTR_ENUM_
      KILN__ATTR_COUNT
} kiln__attr;

const char *kiln__attr_name(kiln__attr a);
const char *kiln__attr_type(kiln__attr a); /* "uint3" or "uint" */

/* Swizzle names: 2-, 3- and 4-letter ones from xyzw, then the same from
 * rgba (16 + 64 + 256 each). */
#define KILN__SWIZZLES_PER_SPELLING 336
#define KILN__NUM_SWIZZLES (2 * KILN__SWIZZLES_PER_SPELLING)

/* What a scan of header + body found. */
typedef struct kiln__scan {
  /* identifiers that the body/header use, for _shape/_strides/_ndim and
   * attribute detection (token match, not substring) */
  uint32_t attrs_used; /* bit per kiln__attr */
  bool needs_fibers;   /* barriers or SIMD-group functions appear */
  /* The body and header with `threadgroup` rewritten: a threadgroup
   * *declaration* becomes KILN_THREADGROUP_DECL (backend: static
   * thread_local / __shared__), a threadgroup *qualifier* on a pointer or
   * reference becomes KILN_THREADGROUP (empty). Line structure unchanged. */
  char *header; /* kiln__malloc'ed */
  char *body;
  /* The body's distinct identifiers, sorted, for kiln__scan_uses. The
   * strings live in ident_text; both are kiln__malloc'ed. */
  char **idents;
  char *ident_text;
  int num_idents;
  /* The swizzle members (.xy, ->wzyx, .rgb) that the body and header name,
   * one bit per kiln__swizzle_decode index, so that the prelude declares
   * only those (each costs the compiler a class instantiation per vector
   * type). swizzles_all: the text may reach members the scan cannot see
   * (a non-Metal #include or ## token pasting); declare every one. */
  unsigned char swizzles_used[(KILN__NUM_SWIZZLES + 7) / 8];
  bool swizzles_all;
  /* The separable prelude sections (KILN__NEED_*) whose names the body
   * and header spell, so that the prelude declares only those (codegen.c
   * adds what the signature needs). needs_all: as swizzles_all, the scan
   * cannot see every name; the prelude then declares every section. */
  unsigned needs;
  bool needs_all;
  /* Which math library names (kiln__math_name) the body and header
   * spell, one bit each, so that the prelude declares only those
   * functions of the MATH section. */
  uint64_t math_used;
} kiln__scan;

/* The name of math library entry `k` (0 <= k < 64), the identifiers that
 * pull in the MATH section, or NULL past the last. */
const char *kiln__math_name(int k);

/* The prelude sections that codegen.c may leave out, as bits of
 * kiln__scan.needs; each is `#if defined(KILN_NEED_<name>)` in the
 * prelude, which declares it whole when KILN_NEEDS_KNOWN is not set. */
#define KILN__NEED_MAP(XX)                                                    \
  XX(SIMD, "SIMD")     /* SIMD-group functions (pull in MATH) */           \
  XX(ATOMIC, "ATOMIC") /* atomic<T> and its functions (pull in MATH) */      \
  XX(MATH, "MATH")     /* the math library's function templates */         \
  XX(LIMITS, "LIMITS") /* numeric_limits */

enum {
#define KILN__NEED_ENUM_(id, name) KILN__NEED_##id##_BIT,
  KILN__NEED_MAP(KILN__NEED_ENUM_)
#undef KILN__NEED_ENUM_
      KILN__NEED_COUNT
};
#define KILN__NEED(id) (1u << KILN__NEED_##id##_BIT)

/* True if the scan saw swizzle `index` (0 <= index < KILN__NUM_SWIZZLES). */
bool kiln__scan_uses_swizzle(const kiln__scan *scan, int index);

/*
 * Writes swizzle `index` as its name ("wzyx", NUL-terminated, 5 bytes)
 * and component indices (up to 4), and returns its length (2 to 4), or 0
 * for an index out of range. Indices cover every 2-, 3- and 4-letter name
 * from xyzw and then from rgba.
 */
int kiln__swizzle_decode(int index, char name[5], int comps[4]);

/*
 * Scans a kernel. Fails with KILN_ERROR_INVALID_ARGUMENT and a sentence
 * that says the source must be the body only when the body holds a full
 * `kernel void f(...)` / `[[kernel]]` function.
 */
kiln_status kiln__dialect_scan(const char *kernel_name, const char *header,
                               const char *body, kiln__scan *out);
void kiln__scan_free(kiln__scan *scan);

/* True if `ident` appears in the scanned text as a whole identifier (not
 * inside a comment or string literal). */
bool kiln__scan_uses(const kiln__scan *scan, const char *ident);

/* One parameter of the generated signature. */
typedef enum kiln__param_kind {
  KILN__PARAM_INPUT = 0,  /* const device T* name */
  KILN__PARAM_SCALAR,     /* const constant T& name (0-d input) */
  KILN__PARAM_SHAPE,      /* const constant int* name_shape */
  KILN__PARAM_STRIDES,    /* const constant int64_t* name_strides */
  KILN__PARAM_NDIM,       /* const constant int& name_ndim */
  KILN__PARAM_OUTPUT      /* device T* name or device atomic<T>* name */
} kiln__param_kind;

typedef struct kiln__param {
  kiln__param_kind kind;
  int io_index;      /* index into the inputs or outputs */
  kiln_dtype dtype;  /* element type (inputs/outputs/scalars) */
  char name[80];     /* the name the body uses, suffix included */
} kiln__param;

/* The full description the generator works from. */
typedef struct kiln__signature {
  const char *kernel_name;
  const kiln__scan *scan;
  kiln__param *params;
  int num_params;
  bool atomic_outputs;
  const kiln_template_arg *targs;
  int num_targs;
  /* CUDA: the threads per threadgroup of the launch, emitted as
   * __launch_bounds__ so the compiler may use as many registers as that
   * block size allows; 0 (kiln compile, no grid) emits no bound. */
  uint32_t max_threads;
} kiln__signature;

typedef enum kiln__codegen_target {
  KILN__TARGET_CPU = 0,
  KILN__TARGET_CUDA = 1
} kiln__codegen_target;

/*
 * Builds the parameter list by MLX's rules: for each input its buffer (a
 * value reference if 0-d), then name_shape / name_strides / name_ndim if
 * the scan uses them (not for 0-d inputs); then each output. `params` is
 * kiln__malloc'ed.
 */
kiln_status kiln__dialect_build_signature(
    const char *kernel_name, const kiln__scan *scan,
    const char *const *input_names, const kiln_dtype *input_dtypes,
    const int *input_ndims, int num_inputs, const char *const *output_names,
    const kiln_dtype *output_dtypes, int num_outputs, bool atomic_outputs,
    const kiln_template_arg *targs, int num_targs, kiln__signature *out);
void kiln__signature_free(kiln__signature *sig);

/*
 * The CUDA entry point's name for kernel `kernel_name`: "kiln_k_" and the
 * name with every character outside [A-Za-z0-9_] replaced by '_', cut to
 * fit `cap` (at least 16), or "kiln_entry" for a NULL or empty name.
 * Profilers (Nsight Systems and Compute) show it, so kernels can be told
 * apart there; the backend finds it in the compiled module. "kiln_" is a
 * reserved prefix for kernel parameters, so no user name can clash.
 */
#define KILN__ENTRY_NAME_CAP 128
void kiln__dialect_entry_name(const char *kernel_name, char *out, size_t cap);

/*
 * Writes the whole translation unit: `prelude`, then the user header after
 * `#line 1 "header"`, the body as a function template after
 * `#line 1 "body"`, then the target's entry glue.
 */
kiln_status kiln__dialect_generate(const kiln__signature *sig,
                                   kiln__codegen_target target,
                                   const char *prelude, kiln__strbuf *out);

/*
 * Rewrites a compiler log for the user: keeps the diagnostics that point
 * into "header" or "body" (with their line:column, which #line made
 * correct) and the lines that follow them, and drops noise from generated
 * code. Returns a kiln__malloc'ed string (the raw log if nothing matched).
 */
char *kiln__dialect_map_log(const char *log);

#endif /* KILN_DIALECT_H */
