/*
 * The linear-algebra drivers (BLIS's layout): each public function checks
 * its arguments, returns early when the problem is trivial, then picks a
 * kernel path by shape, dtype and device (small-problem path first, then
 * the blocked one); the choice can be forced through kiln_linalg_opts.path.
 * Kernels are kiln's own Metal-dialect kernels in kernels/NAME.metal,
 * embedded at build time and compiled through the same kernel system (and
 * caches) as users' kernels, so every path runs and is tested on the CPU
 * backend too; CUDA-only specialisations sit behind #if KILN_BACKEND_CUDA.
 */
#ifndef KILN_LINALG_H
#define KILN_LINALG_H

#include "core/core.h"

/* kiln__library_kernel flags */
#define KILN__LIB_ATOMIC 1u         /* atomic_outputs */
#define KILN__LIB_NO_ROW_CONTIG 2u  /* kernels read strided views in place */
#define KILN__LIB_FAST_MATH 4u

/*
 * A kernel of kernels/FAMILY.metal: the file's text up to its first
 * `//@kernel` line is the header; `//@kernel NAME` starts the body of
 * kernel NAME, which runs to the next `//@kernel` line or the end.
 * `inputs`/`outputs` are comma-separated names. Made once per process
 * (thread-safe) and kept for the process: callers never destroy it.
 */
kiln_status kiln__library_kernel(const char *family, const char *name,
                                 const char *inputs, const char *outputs,
                                 unsigned flags, kiln_kernel **out);

/* The stream a linalg call runs on: opts->stream, else the calling
 * thread's default stream of `a`'s device; checks that every array in
 * `arrays` lives on that device. */
kiln_status kiln__linalg_stream(const kiln_linalg_opts *opts,
                                kiln_array *const *arrays, int count,
                                kiln_stream **out);

/* Copies the caller's options to full size (NULL: defaults), honouring
 * their struct_size. */
kiln_status kiln__linalg_opts(const kiln_linalg_opts *in,
                              kiln_linalg_opts *out);

/*
 * Batch handling shared by the drivers: an operand's batch dimensions are
 * all but its last two. `batch` receives the common batch count; each
 * operand either has the batch shape of the others or none (broadcast).
 * `what` names the function for messages.
 */
kiln_status kiln__linalg_batch(kiln_array *const *ops, int count,
                               const char *const *names, int64_t *batch);

/*
 * One kernel configuration the GEMM driver (src/linalg/gemm.c) can launch:
 * kernel `name` of kernels/gemm.metal with `inputs`/`outputs`/`flags` as
 * kiln__library_kernel takes them, its input and output specs (matrices
 * rank 2, which generates the same code as any batch rank; scalars 0-d),
 * its template arguments, the threadgroup size it launches with, and, for
 * gemm_tc, the tensor-core family MMA (0 float16, 1 bfloat16, 2 TF32;
 * -1 for the other kernels).
 */
typedef struct kiln__gemm_config {
  const char *name, *inputs, *outputs;
  unsigned flags;
  int num_inputs;
  kiln_array_spec input_specs[6];
  kiln_output_spec output;
  int num_template_args;
  kiln_template_arg template_args[12];
  int threads;
  int mma;
} kiln__gemm_config;

typedef kiln_status (*kiln__gemm_config_fn)(const kiln__gemm_config *config,
                                           void *user);

/* Calls `fn` once for every configuration the GEMM driver can launch
 * (every dtype, transpose, beta == 0, tile, operand layout and precision
 * it tells apart); stops at and returns the first status other than
 * KILN_OK. For tests that compile them all for a target. */
kiln_status kiln__gemm_for_each_config(kiln__gemm_config_fn fn, void *user);

#endif /* KILN_LINALG_H */
