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
#define KILN__LIB_COOPERATIVE 8u /* groups wait for each other (CUDA) */
/* Bits 8-15: KiB of dynamic shared memory for every CUDA launch of the
 * kernel (kiln__kernel_set_dynamic_shared), for bodies that declare an
 * `extern __shared__` array; 0 for static threadgroup memory only. */
#define KILN__LIB_SHARED_KIB(kib) ((unsigned)(kib) << 8)

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

/* ---- small helpers every driver shares (library.c) ---------------------- */

/* Template arguments: a dtype, an integer, a bool. */
void kiln__targ_dtype(kiln_template_arg *t, const char *name, kiln_dtype d);
void kiln__targ_int(kiln_template_arg *t, const char *name, int64_t v);
void kiln__targ_bool(kiln_template_arg *t, const char *name, bool v);

/* A 0-d array of `dtype` holding `value`, filled in stream order (no host
 * wait): how drivers pass scalars (k0, batch0, alpha) to kernels. While a
 * scalar pool is in use on the calling thread (below) and holds `value`
 * in `dtype` on s's device, a view of the pool's array instead (nothing
 * enqueued). Read-only: kernels take it as an input. */
kiln_status kiln__linalg_scalar(kiln_stream *s, kiln_dtype dtype,
                                double value, kiln_array **out);

/*
 * Scalars made once for a run of many launches (a factorization's GEMMs
 * and solves): 0, 1 and -1 in a float dtype and 0 in int32, filled in
 * stream order when made. Why: every kiln__linalg_scalar is a fill, and
 * a fill between two kernels is an edge that programmatic dependent
 * launch (cuda_backend.c) cannot overlap: each GEMM's alpha, beta and
 * batch0 cost three such edges. kiln__scalar_pool_use makes `pool` the
 * calling thread's pool (NULL: none) and returns the previous one, to be
 * restored when the run ends; free the pool after that (pending work
 * keeps its arrays' memory alive).
 */
typedef struct kiln__scalar_pool {
  kiln_device *device;
  int count;
  kiln_dtype dtype[4];
  double value[4];
  kiln_array *x[4];
} kiln__scalar_pool;

kiln_status kiln__scalar_pool_make(kiln_stream *s, kiln_dtype fdt,
                                   kiln__scalar_pool *pool);
void kiln__scalar_pool_free(kiln__scalar_pool *pool);
const kiln__scalar_pool *kiln__scalar_pool_use(const kiln__scalar_pool *pool);
/* fn(user) with a pool in use whose float values are in the accumulation
 * dtype of `dtype` (float64 for float64, else float32), the pool made
 * first and freed after. */
kiln_status kiln__linalg_pooled(kiln_stream *s, kiln_dtype dtype,
                                kiln_status (*fn)(void *user), void *user);

/* A new int32 array of len elements holding 0, 1, ..., len - 1, filled
 * in stream order (lu_iota): the storage of a driver's many int32
 * scalars (0-d views into it, kiln_array_view), so that a launch fills
 * nothing (each fill is an edge programmatic dependent launch cannot
 * overlap). */
kiln_status kiln__linalg_iota(kiln_stream *s, int64_t len, kiln_array **out);

/* An output spec with x's dtype and shape (for kiln__kernel_launch_into). */
void kiln__linalg_out_spec(kiln_output_spec *spec, const kiln_array *x);

/* kiln_launch_init plus the stream and its device. */
void kiln__linalg_launch_init(kiln_launch *L, kiln_stream *s);

/* A view of the block (r0, c0) of rows x cols of every matrix of x (its
 * last two dimensions; x may itself be a strided view). */
kiln_status kiln__linalg_block(kiln_array *x, int64_t r0, int64_t c0,
                               int64_t rows, int64_t cols, kiln_array **out);

/*
 * A view of x (same dtype, shape, strides and offset) over a second buffer
 * record that wraps x's memory without owning it. The core orders work by
 * buffer record, so work on another stream through the alias is not
 * ordered against work on x: the caller orders the two itself (events:
 * kiln__stream_wait_stream) and keeps x's memory alive until the alias's
 * work is done (kiln__hold_until_done on x's buffer after its last wait).
 * For a driver that splits disjoint parts of one array over two streams.
 */
kiln_status kiln__linalg_alias(const kiln_array *x, kiln_array **out);

/* Records s's tail as the last write of buf (the core's hazard record):
 * for a driver that wrote buf through an alias on another stream and has
 * joined it back into s, so that later work on a third stream that uses
 * buf waits for every write made through the alias too (the core saw
 * those on the alias only). */
kiln_status kiln__linalg_note_written(kiln_stream *s, kiln__buffer *buf);

/* C = alpha op(A) op(B) + beta C on stream s: kiln_gemm_ex for drivers
 * (keeps the calling function's name in error messages). */
kiln_status kiln__linalg_gemm(kiln_stream *s, bool ta, bool tb, double alpha,
                              kiln_array *a, kiln_array *b, double beta,
                              kiln_array *c);

/*
 * C = alpha op(A) op(B) + beta C on C's lower trapezoid only: the 128 x
 * 128 tiles of C on or below its diagonal (tile row >= tile column), each
 * computed whole, the tiles above left untouched; with `upper` the mirror
 * (tile column >= tile row). C must have at least as many rows as columns
 * (upper: columns as rows), float32 (gemm_f32_tri) or float64
 * (gemm_dmma_tri); operands as kiln_gemm's, strided views, batched. One
 * launch per batch chunk, no public path: the Cholesky's updates (C -=
 * L21 L21^T of a square's lower triangle and every row below it). With
 * k == 0 or alpha == 0 it still stores beta C on the trapezoid only.
 */
kiln_status kiln__gemm_tri(kiln_stream *s, bool upper, bool ta, bool tb,
                           double alpha, kiln_array *a, kiln_array *b,
                           double beta, kiln_array *c);

/*
 * Reads a per-matrix int32 status array (`batch` entries; 0 = fine) back
 * to the host, which waits for the stream. *first: the first non-zero
 * entry's batch index, or -1; *value: its value; *failed: how many.
 */
kiln_status kiln__linalg_read_info(kiln_array *info, int64_t batch,
                                   int64_t *first, int32_t *value,
                                   int64_t *failed);

/* Names batch entry `entry` of operand `a` for messages: "A" for a single
 * matrix (name), else "matrix 5 (batch index, from 0) of A"; and when
 * failed > 1 appends " (and N more matrices)". */
void kiln__linalg_which(char *buf, size_t cap, const char *name,
                        const kiln_array *a, int64_t entry, int64_t failed);

/*
 * The triangular solve every driver shares (src/linalg/triangular.c):
 * op(A) X = alpha B with X overwriting B in place, op(A) = A or A^T; A
 * ...×n×n (only the named triangle read; unit: diagonal taken as ones),
 * B ...×n×k, either may be a strided view, A may be 2-D for a batched B.
 * Enqueued on s, asynchronous, no singularity check (as BLAS trsm).
 */
kiln_status kiln__trsm(kiln_stream *s, kiln_array *a, bool upper, bool trans,
                       bool unit, double alpha, kiln_array *b);

/*
 * TSQR (src/linalg/qr.c), the tall-skinny path of kiln_qr, usable by other
 * drivers as a panel factorization: A ...×m×n (m >= n; n <= 128 in
 * float32, n <= 64 in float64, else an error; read, not modified; may be
 * a strided view) into q (...×m×n reduced Q, contiguous, or NULL for R
 * only) and r (...×n×n, contiguous), R's diagonal made non-negative.
 * Asynchronous, on s.
 */
kiln_status kiln__qr_tsqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                          kiln_array *r);

/*
 * The fastest robust tall-skinny QR (src/linalg/qr.c): shifted CholeskyQR3
 * with TSQR redoing, on the device, exactly the matrices where it broke
 * down. A ...×m×n with m >= n, n <= 64 (KILN__CHOLQR_NMAX); q reduced
 * (...×m×n, contiguous; NULL for R only), r ...×n×n contiguous with a
 * positive diagonal. Asynchronous, on s. For panels of other drivers.
 */
kiln_status kiln__qr_tall(kiln_stream *s, kiln_array *a, kiln_array *q,
                          kiln_array *r);

/*
 * The blocked Householder QR (src/linalg/qr_blocked.c), the general path
 * of kiln_qr: A ...×m×n (read, not modified), results into the new
 * contiguous arrays q (...×m×m for complete, ...×m×k reduced; NULL for R
 * only) and r (...×k×n, or ...×m×n for complete), R's diagonal made
 * non-negative. Asynchronous, on s.
 */
kiln_status kiln__qr_blocked(kiln_stream *s, kiln_array *a, kiln_qr_mode mode,
                             kiln_array *q, kiln_array *r);

/* kiln__qr_blocked with its panel factorization forced (tests, benches):
 * AUTO picks by the panel's height, ONE is one threadgroup per matrix
 * through the panel's columns, TSQR is kiln__qr_tsqr followed by
 * Householder reconstruction, CHOLQR kiln__qr_tall (CholeskyQR3 with its
 * TSQR fallback) followed by the same reconstruction. */
#define KILN__QRB_PANEL_AUTO 0
#define KILN__QRB_PANEL_ONE 1
#define KILN__QRB_PANEL_TSQR 2
#define KILN__QRB_PANEL_CHOLQR 3
kiln_status kiln__qr_blocked_ex(kiln_stream *s, kiln_array *a,
                                kiln_qr_mode mode, kiln_array *q,
                                kiln_array *r, int panel);

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

/* ---- LU (src/linalg/lu.c), shared with src/linalg/lu_solve.c ----------- */

/* One LU factorization: W the packed factors (...×m×n, contiguous), piv
 * the pivot rows (int32 ...×k, from 0), info one int32 per matrix (see
 * kernels/lu.metal). */
typedef struct kiln__lu {
  kiln_array *w, *piv, *info;
  int64_t m, n, k, batch;
} kiln__lu;

/* Options, the checks of A (dtype, rank, `square`, size; `what` names the
 * operation in messages) and the stream. */
kiln_status kiln__lu_prepare(kiln_array *a, const kiln_linalg_opts *opts,
                             const char *what, bool square,
                             kiln_linalg_opts *o, kiln_stream **s);
kiln_status kiln__lu_check(kiln_array *a, const char *what, bool square,
                           int64_t *batch);

/* Factors A (checked) on s through `path` (kiln_linalg_opts.path). With
 * `check` it waits and turns a failed matrix into an error naming it and
 * its pivot; without, it stays asynchronous. On success *out owns new
 * arrays (kiln__lu_free). */
kiln_status kiln__lu_run(kiln_stream *s, kiln_array *a, int path, bool check,
                         kiln__lu *out);
void kiln__lu_free(kiln__lu *f);

/* Tests only (not thread-safe): with it set, the blocked path also runs
 * lu_strip_grid, on any backend, wherever a strip's rows fit its one
 * threadgroup (the CPU backend cannot run its grid barrier across
 * several), so that make test covers that kernel's logic. */
extern bool kiln__lu_grid_test;

/* Tests only (not thread-safe): when >= 0, the largest |entry| of L11^-1
 * that the blocked path's block-row solve trusts, instead of lu.c's
 * LU_LINV_MAX (0 sends every block row through lu_rowfix). */
extern int kiln__lu_linv_max_test;

/* Tests only (not thread-safe): when > 0 (and at most 8192), the pivots
 * lu_perm stages in threadgroup memory at a time, instead of 8192, so
 * that small factorizations take its loop over several chunks. */
extern int kiln__lu_perm_chunk_test;

/* Tests and timing (not thread-safe): the blocked LU's look-ahead (see
 * lu.c, run_panels_ahead). -1, the default: as the environment variable
 * KILN_LU_LOOKAHEAD says (read once: 0 to 2; unset or anything else 1);
 * 0 off; 1 where it is expected to pay (one matrix, k >= 2048, on CUDA);
 * 2 wherever it applies (every blocked factorization of one matrix with
 * two panels or more, on any backend: how the CPU tests cover it). */
extern int kiln__lu_lookahead_test;

/* Tests and timing (not thread-safe): CholeskyQR's passes (cholqr.c).
 * -1, the default: as the environment variable KILN_CHOLQR_PASSES says
 * (read once: "3" always three passes; unset or anything else, two where
 * the second Gram is near I); 3 always three; any other value adaptive. */
extern int kiln__cholqr_passes_test;

/* Tests and timing (not thread-safe): float32 updates of the blocked
 * Cholesky on gemm_f32 whatever their tile count (cholesky.c,
 * gemm_f32_tiles). -1: as KILN_CHOL_GEMM says (0 to 2; unset or anything
 * else 1); 0 off (the GEMM's own choice); 1 from 32 tiles on; 2 every
 * float32 update (tests: their updates are small). */
extern int kiln__chol_gemm_test;

/* Tests and timing (not thread-safe): the blocked Cholesky's splits of
 * two panels run left-looking, the right panel updated inside its
 * chol_panel (FUSE) instead of by a GEMM. -1: on CUDA as KILN_CHOL_FUSE
 * says (0 or 1; unset or anything else 1, except 0 for float64 with the
 * old chol_panel), elsewhere 0; 0 off; 1 (or more) on, on any backend. */
extern int kiln__chol_fuse_test;

/* Tests and timing (not thread-safe): the blocked Cholesky's deep updates
 * of few tiles cut along their depth (cholesky.c, split_factor). -1: as
 * KILN_CHOL_SPLITK says (0 to 2; unset or anything else 1); 0 off; 1 where
 * the cost model says it pays; 2 every update at least 128 deep, into as
 * many pieces of 64 columns or more as it may (up to 16; tests). */
extern int kiln__chol_splitk_test;

/* Tests and timing (not thread-safe): each blocked Cholesky update as one
 * trapezoid GEMM (kiln__gemm_tri) instead of column_blocks' GEMMs
 * (cholesky.c, syrk_update). -1: as KILN_CHOL_SYRK says (0 to 2; unset
 * or anything else 2); 0 off; 1 on, updates that split-K cuts left to
 * column_blocks; 2 on, split-K in trapezoid pieces. */
extern int kiln__chol_syrk_test;

/* Tests and timing (not thread-safe): float32 Cholesky updates of fewer
 * 128 x 128 tiles than this (their trapezoid's, or the rectangle's) run
 * on the GEMM's auto path, the 64 x 64 tiles below a full wave, not on
 * gemm_f32 (cholesky.c, KILN_CHOL_NARROW). -1: as KILN_CHOL_NARROW says
 * (a count below 10000; unset or anything else 100); 0: none. */
extern int kiln__chol_narrow_test;
/* Tests and timing (not thread-safe): the blocked Cholesky's panel
 * kernel (cholesky.c, launch_panel). -1: as KILN_CHOL_PANEL says (0 or 1;
 * unset or anything else 1); 0 chol_panel (16-column rounds, pivots by
 * shuffles); 1 chol_panel2 (8-column rounds, pivots in registers). */
extern int kiln__chol_panel_test;

/* The row permutation (int32 ...×m): A[perm] = L U. */
kiln_status kiln__lu_perm(kiln_stream *s, const kiln__lu *f,
                          kiln_array **out);

/* L (...×m×k, unit lower) and U (...×k×n) into the new arrays l and u. */
kiln_status kiln__lu_unpack(kiln_stream *s, const kiln__lu *f, kiln_array *l,
                            kiln_array *u);

/* x (contiguous, `batch` matrices of b's last two dimensions) = the rows
 * of b in the order of perm (...×n or n), or with `ident` the rows of the
 * identity (b then only gives the shape). */
kiln_status kiln__lu_gather(kiln_stream *s, kiln_array *perm, kiln_array *b,
                            bool ident, int64_t batch, kiln_array *x);

/* Determinants from a square factorization: d = det, or with `log` d =
 * log|det| and sign; both of the batch's size. Asynchronous. */
kiln_status kiln__lu_det(kiln_stream *s, const kiln__lu *f, bool log,
                         kiln_array *d, kiln_array *sign);

#endif /* KILN_LINALG_H */
