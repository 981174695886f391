/*
 * GEMM and matmul: C = alpha * op(A) @ op(B) + beta * C on any device, with
 * kiln's own kernels (kernels/gemm.metal) launched into C in place.
 *
 * Order of work, as in every linalg driver: check the arguments (NULLs,
 * options, dtypes, ranks, batch dimensions, shapes, devices), return early
 * when there is nothing to multiply, then pick a kernel path by dtype,
 * shape and device, and launch it. Nothing is enqueued unless every check
 * passed.
 *
 * Kernels (kernels/gemm.metal), each chosen because it suits the machine:
 *   gemm_f32   float32 on 128 x 128 tiles, 8 x 8 per thread, float4
 *              shared-memory reads, double-buffered slices, float4 global
 *              loads where the layout allows, 128 registers (2 groups per
 *              SM), an unchecked running-pointer loop when every tile
 *              and slice is whole (EXACT). The float32 workhorse when
 *              the tiles fill the device (H100, 8192^3: 22.9 ms, 47.9
 *              TFLOP/s, 0.93x cuBLAS).
 *   gemm_simt  the portable register-blocked kernel, every dtype, 32, 64
 *              or 128 square tiles: small problems, float64 off CUDA,
 *              float16/bfloat16 on path 1.
 *   gemm_dmma  float64 on tensor cores (DMMA, CUDA sm_80+; the m16n8k4
 *              shape on sm_90), 128 x 128 tiles, a 3-stage cp.async
 *              pipeline; elsewhere its own SIMT fallback (H100, 8192^3:
 *              39 TFLOP/s, 0.67-0.69x cuBLAS).
 *   gemm_dmma2 gemm_dmma's tiles and warps on sm_90's m16n8k8 (half the
 *              mma instructions), 16-deep slices in a 4-stage pipeline
 *              in 128 KiB of dynamic shared memory (half the barriers
 *              per k, copies 48 k ahead; the count is in
 *              kernels/gemm.metal). KILN_GEMM_DMMA, read once: 1
 *              gemm_dmma, 2 gemm_dmma2 (the default; not on CUDA
 *              before sm_90); for GEMMs and the trapezoid alike. H100,
 *              8192^3: 40.7 TFLOP/s against gemm_dmma's 39.1 (0.71x
 *              cuBLAS), the float64 Cholesky 9.49 -> 8.75 ms.
 *   gemm_wg    float16/bfloat16 on Hopper's warpgroup MMA (wgmma, sm_90a):
 *              128 x 256 tiles, two warpgroups of m64n256k16, operands
 *              in 128-byte-swizzled shared memory fed by a 4-stage
 *              cp.async pipeline in 193 KiB of dynamic shared memory
 *              (KILN__LIB_SHARED_KIB). Chosen on sm_90a when both
 *              operands allow 16-byte vectors and its tiles give every
 *              SM one (H100, 8192^3 bf16: 1.77 ms, 621 TFLOP/s, 0.79x
 *              cuBLAS); elsewhere (path 5 only) its fallbacks run.
 *   gemm_tc2   float16/bfloat16 on tensor cores (mma.sync, ldmatrix, a
 *              3-stage cp.async pipeline, swizzled shared memory) when
 *              both operands allow 16-byte vectors: before Hopper, and
 *              on it for products too small to fill the SMs with
 *              gemm_wg's tiles (H100, 8192^3 bf16: 4.17 ms, 0.34x).
 *   gemm_tc    the first tensor-core kernel (one stage, staged through
 *              registers): float32 rounded to TF32 or bf16, and operands
 *              that allow no 16-byte vectors.
 *   gemm_scale C = beta C for k == 0 or alpha == 0.
 *   gemm_f32_tri, gemm_dmma_tri, gemm_dmma2_tri  gemm_f32's, gemm_dmma's
 *              and gemm_dmma2's tiles over C's lower trapezoid only
 *              (or its upper mirror), one
 *              threadgroup per tile on or below the diagonal
 *              (kiln__gemm_tri: no public path; the Cholesky's updates).
 *
 * Paths (kiln_linalg_opts.path for kiln_gemm_ex and kiln_matmul_ex):
 *   0  auto: tensor cores for float16/bfloat16 (and float32 with precision
 *      TF32 or BF16), and for float64 on a CUDA device with DMMA, when
 *      both m and n are at least 64; else SIMT;
 *   1  SIMT: gemm_f32 for float32 when 128-square tiles fill the device,
 *      else gemm_simt with a tile size picked by shape;
 *   2  tensor cores: float16, bfloat16, float32 with precision TF32 or
 *      BF16 (gemm_wg, gemm_tc2 or gemm_tc), float64 (gemm_dmma2, or
 *      gemm_dmma before sm_90 or with KILN_GEMM_DMMA=1). On a device
 *      without them (the CPU) the same kernels run their SIMT
 *      fallbacks, so the CPU suite covers the path's launch logic;
 *   3  the first-generation kernels (gemm_simt, gemm_tc), kept selectable
 *      so that benchmarks can compare;
 *   4  gemm_f32 at any size (float32 with default precision only);
 *   5  gemm_wg at any size (float16 / bfloat16 only) where both operands
 *      allow 16-byte vectors, else as path 2. On devices without wgmma
 *      it runs its fallbacks (gemm_tc2's code on CUDA sm_80+, SIMT
 *      elsewhere), so the CPU suite covers its launch logic.
 *
 * Transposes travel as views: op(A) and op(B) are handed to the kernels
 * as strided views with their last two dimensions swapped, so no kernel
 * needs transpose variants (the NVRTC test compiles every configuration).
 * The operands are read as strided views (no copies); the kernels receive
 * alpha and beta as 0-d arrays in the accumulation dtype (float64 for
 * float64, else float32), filled in stream order so the call never waits.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"

#define GEMM_PATH_AUTO 0
#define GEMM_PATH_SIMT 1
#define GEMM_PATH_TC 2
#define GEMM_PATH_FIRST 3
#define GEMM_PATH_F32 4
#define GEMM_PATH_WG 5

/* CUDA's limit on grid.y blocks; the batch runs in chunks of this many. */
#define GEMM_MAX_BATCH_CHUNK 65535

#define GEMM_INPUTS "A,B,Cin,alpha,beta,batch0"
#define GEMM_SCALE_INPUTS "Cin,beta,count"

/* One checked GEMM: the operands and what the checks worked out. */
typedef struct gemm_problem {
  bool ta, tb;
  double alpha, beta;
  kiln_array *a, *b, *c;
  int64_t m, n, k, batch;
  kiln_dtype acc; /* accumulation dtype: float64 or float32 */
  kiln_stream *stream;
  kiln_linalg_opts opts;
} gemm_problem;

/* A SIMT tile: BM x BN of C per threadgroup, BK-deep k-steps, TM x TN
 * outputs per thread. */
typedef struct simt_config {
  int bm, bn, bk, tm, tn;
} simt_config;

static const simt_config k_simt_small = {32, 32, 16, 4, 4};   /* 64 thr. */
static const simt_config k_simt_medium = {64, 64, 16, 4, 4};  /* 256 */
static const simt_config k_simt_large = {128, 128, 16, 8, 8}; /* 256 */

/* The tensor-core kernel's fixed tile: 128 x 128 of C, 256 threads. */
#define GEMM_TC_TILE 128
#define GEMM_TC_THREADS 256
#define GEMM_SCALE_THREADS 256
#define GEMM_F32_THREADS 256
#define GEMM_DMMA_THREADS 512
/* gemm_wg: 128 x 256 tiles, two warpgroups, 4 stages of 48 KiB of dynamic
 * shared memory plus 1 KiB to align them (kernels/gemm.metal). */
#define GEMM_WG_THREADS 256
#define GEMM_WG_SHARED_KIB 193
/* gemm_dmma2: GEMM_DMMA2_STAGES (4) stages of two 128 x 16 float64 slices
 * of dynamic shared memory (kernels/gemm.metal). */
#define GEMM_DMMA2_SHARED_KIB 128

/* float64 accumulates in float64, everything else in float32. */
static kiln_dtype acc_dtype(kiln_dtype d) {
  return d == KILN_FLOAT64 ? KILN_FLOAT64 : KILN_FLOAT32;
}

/* ---- checks -------------------------------------------------------------- */

static bool gemm_dtype_ok(kiln_dtype d) {
  return d == KILN_FLOAT16 || d == KILN_BFLOAT16 || d == KILN_FLOAT32 ||
         d == KILN_FLOAT64;
}

static kiln_status check_dtypes(kiln_array *const *ops,
                                const char *const *names, int count) {
  kiln_dtype d = ops[0]->dtype;
  if (!gemm_dtype_ok(d))
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "%s is %s; matrix products support float16, "
                       "bfloat16, float32 and float64.",
                       names[0], kiln_dtype_name(d));
  for (int i = 1; i < count; i++)
    if (ops[i]->dtype != d)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "%s is %s but %s is %s; the operands must have one "
                         "dtype.",
                         names[i], kiln_dtype_name(ops[i]->dtype), names[0],
                         kiln_dtype_name(d));
  return KILN_OK;
}

/* Rows and columns of op(X): the last two dimensions, swapped if `t`. */
static void op_dims(const kiln_array *x, bool t, int64_t *rows,
                    int64_t *cols) {
  int64_t r = x->shape[x->ndim - 2], c = x->shape[x->ndim - 1];
  *rows = t ? c : r;
  *cols = t ? r : c;
}

/* op(A) is m x k and op(B) must be k x n. */
static kiln_status check_chain(const gemm_problem *p, int64_t kb) {
  if (p->k == kb)
    return KILN_OK;
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "the shapes do not chain: op(A) is %lld x %lld but "
                     "op(B) is %lld x %lld (op(A)'s columns must equal "
                     "op(B)'s rows).",
                     (long long)p->m, (long long)p->k, (long long)kb,
                     (long long)p->n);
}

/* C must be m x n and carry the batch dimensions when A or B has them. */
static kiln_status check_c(const gemm_problem *p) {
  const kiln_array *c = p->c;
  int64_t cm = c->shape[c->ndim - 2], cn = c->shape[c->ndim - 1];
  if (cm != p->m || cn != p->n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "C is %lld x %lld but op(A) @ op(B) is %lld x %lld.",
                       (long long)cm, (long long)cn, (long long)p->m,
                       (long long)p->n);
  if (c->ndim == 2 && (p->a->ndim > 2 || p->b->ndim > 2))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "%s has batch dimensions but C has none; C must hold "
                       "a result for every batch entry.",
                       p->a->ndim > 2 ? "A" : "B");
  return KILN_OK;
}

/* Everything about the operands, before any device work. */
static kiln_status check_problem(gemm_problem *p) {
  kiln_array *ops[3] = {p->a, p->b, p->c};
  static const char *const names[3] = {"A", "B", "C"};
  kiln_status st = check_dtypes(ops, names, 3);
  if (st == KILN_OK)
    st = kiln__linalg_batch(ops, 3, names, &p->batch);
  if (st != KILN_OK)
    return st;
  int64_t kb;
  op_dims(p->a, p->ta, &p->m, &p->k);
  op_dims(p->b, p->tb, &kb, &p->n);
  st = check_chain(p, kb);
  if (st == KILN_OK)
    st = check_c(p);
  if (st == KILN_OK)
    st = kiln__linalg_stream(&p->opts, ops, 3, &p->stream);
  p->acc = acc_dtype(p->c->dtype);
  return st;
}

/* ---- path choice ------------------------------------------------------- */

/* The tensor-core instruction family for operands of `dtype` at
 * `precision`, or -1 if none applies: 0 float16, 1 bfloat16 (also float32
 * with precision BF16), 2 TF32. */
static int mma_kind_of(kiln_dtype dtype, int precision) {
  switch (dtype) {
  case KILN_FLOAT16:
    return 0;
  case KILN_BFLOAT16:
    return 1;
  case KILN_FLOAT32:
    if (precision == KILN_PRECISION_TF32)
      return 2;
    return precision == KILN_PRECISION_BF16 ? 1 : -1;
  default:
    return -1;
  }
}

static int tc_mma_kind(const gemm_problem *p) {
  return mma_kind_of(p->c->dtype, p->opts.precision);
}

/* Whether the device has float64 tensor cores (DMMA: sm_80 and newer). */
static bool has_dmma(const kiln_device *dev) {
  int sm = 0;
  if (strcmp(dev->info.backend, "cuda") != 0 ||
      sscanf(dev->info.arch, "sm_%d", &sm) != 1)
    return false;
  return sm >= 80;
}

/* Whether the device runs wgmma: kiln compiles for the "a" target only
 * on Hopper (sm_90a; see the CUDA backend's arch_name). */
static bool has_wgmma(const kiln_device *dev) {
  return strcmp(dev->info.backend, "cuda") == 0 &&
         strcmp(dev->info.arch, "sm_90a") == 0;
}

static kiln_status choose_path(const gemm_problem *p, int *path) {
  int want = p->opts.path, mma = tc_mma_kind(p);
  bool f64 = p->c->dtype == KILN_FLOAT64;
  if (want < GEMM_PATH_AUTO || want > GEMM_PATH_WG)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; GEMM knows 0 (auto), 1 (SIMT), "
                       "2 (tensor cores), 3 (the first-generation kernels), "
                       "4 (float32 on 128-square SIMT tiles) and 5 "
                       "(float16/bfloat16 on Hopper's warpgroup MMA).",
                       want);
  if (want == GEMM_PATH_WG && mma_kind_of(p->c->dtype, 0) < 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 5 (warpgroup MMA) needs float16 or "
                       "bfloat16 operands, but they are %s.",
                       kiln_dtype_name(p->c->dtype));
  if (want == GEMM_PATH_F32 && (p->c->dtype != KILN_FLOAT32 || mma >= 0))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 4 (float32 SIMT tiles) needs float32 "
                       "operands with default precision, but they are "
                       "%s%s.",
                       kiln_dtype_name(p->c->dtype),
                       mma >= 0 ? " with TF32 or BF16 precision" : "");
  if (want == GEMM_PATH_TC && mma < 0 && !f64)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 2 (tensor cores) needs float16, "
                       "bfloat16 or float64 operands, or float32 with "
                       "opts->precision TF32 or BF16, but the operands are "
                       "%s%s.",
                       kiln_dtype_name(p->c->dtype),
                       p->c->dtype == KILN_FLOAT32 ? " with default precision"
                                                   : "");
  if (want == GEMM_PATH_AUTO) {
    bool big = p->m >= 64 && p->n >= 64;
    bool dmma = f64 && has_dmma(p->stream->device);
    want = (mma >= 0 || dmma) && big ? GEMM_PATH_TC : GEMM_PATH_SIMT;
  }
  *path = want;
  return KILN_OK;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* float64 stops at 64-square tiles (twice the registers per value). */
static bool simt_large_ok(kiln_dtype acc) { return acc != KILN_FLOAT64; }

/* Whether 128-square tiles still give every compute unit a couple of
 * threadgroups. */
static bool large_tiles_fill(const gemm_problem *p) {
  int units = p->c->buffer->device->info.compute_units;
  int64_t tiles = p->batch * ceil_div(p->m, 128) * ceil_div(p->n, 128);
  return tiles >= 2 * (int64_t)(units > 0 ? units : 1);
}

/* Small tiles for small matrices; 128-square tiles only when they fill
 * the device. */
static simt_config choose_simt(const gemm_problem *p) {
  if (p->m <= 32 || p->n <= 32)
    return k_simt_small;
  if (!simt_large_ok(p->acc))
    return k_simt_medium;
  return large_tiles_fill(p) ? k_simt_large : k_simt_medium;
}

/* ---- strides ----------------------------------------------------------- */

/* Element strides of op(X) along its rows and columns. */
static void op_strides(const kiln_array *x, bool t, int64_t *srow,
                       int64_t *scol) {
  int64_t r = x->strides[x->ndim - 2], c = x->strides[x->ndim - 1];
  *srow = t ? c : r;
  *scol = t ? r : c;
}

/* Whether the operand's tile rows should run along its row dimension (m
 * or n): true when that is the contiguous one, so neighbouring threads
 * load neighbouring elements. */
static bool rows_contiguous(int64_t srow, int64_t sk) {
  return srow == 1 && sk != 1;
}

/*
 * How the tensor-core kernel may load operand X (rows r = m for A, n for
 * B): 1, 16-byte vectors along k (k contiguous, the row stride a whole
 * number of vectors, k too); 2, vectors along r (r contiguous, the k
 * stride and r whole vectors); 0, scalars. Either vector mode also needs
 * 16-byte aligned batch strides and start.
 */
static int tc_vector_mode(const kiln_array *x, int64_t srow, int64_t sk,
                          int64_t rows, int64_t k, size_t elem) {
  int64_t vw = (int64_t)(16 / elem);
  int mode = 0;
  if (sk == 1 && k % vw == 0 && srow % vw == 0)
    mode = 1;
  else if (srow == 1 && rows % vw == 0 && sk % vw == 0)
    mode = 2;
  for (int d = 0; mode != 0 && d < x->ndim - 2; d++)
    if (x->strides[d] % vw != 0)
      mode = 0;
  if ((uintptr_t)kiln__array_data(x) % 16 != 0)
    mode = 0;
  return mode;
}

/* ---- launches ---------------------------------------------------------- */

/* The launch fields every GEMM kernel shares; inputs set by the caller. */
static void init_launch(const gemm_problem *p, kiln_launch *L,
                        kiln_output_spec *spec) {
  kiln__linalg_launch_init(L, p->stream);
  kiln__linalg_out_spec(spec, p->c);
  L->outputs = spec;
  L->num_outputs = 1;
}

/*
 * Launches a tiled kernel over every batch entry with operands `a` and `b`
 * (p's own, or views of op(A) and op(B)): one threadgroup of `nt` threads
 * per tile, `tiles` tiles per entry, batch entries along grid.y in chunks
 * (each chunk's first entry travels as the 0-d batch0). All scalars are
 * made before the first launch, so an allocation failure enqueues
 * nothing.
 */
static kiln_status launch_tiles(const gemm_problem *p, kiln_array *a,
                                kiln_array *b, kiln_kernel *kernel,
                                const kiln_template_arg *targs, int ntargs,
                                int nt, int64_t tiles) {
  if (tiles > (int64_t)(UINT32_MAX / (uint32_t)nt))
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "C is %lld x %lld, more tiles than one launch can "
                       "cover.",
                       (long long)p->m, (long long)p->n);
  int64_t chunks = ceil_div(p->batch, GEMM_MAX_BATCH_CHUNK);
  kiln_array **scal = kiln__calloc((size_t)chunks + 2, sizeof *scal);
  if (scal == NULL)
    return kiln__oom("preparing a matrix product");
  kiln_status st = kiln__linalg_scalar(p->stream, p->acc, p->alpha, &scal[0]);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->stream, p->acc, p->beta, &scal[1]);
  for (int64_t i = 0; st == KILN_OK && i < chunks; i++)
    st = kiln__linalg_scalar(p->stream, KILN_INT32,
                             (double)(i * GEMM_MAX_BATCH_CHUNK), &scal[2 + i]);
  kiln_launch L;
  kiln_output_spec spec;
  init_launch(p, &L, &spec);
  kiln_array *in[6] = {a, b, p->c, scal[0], scal[1], NULL};
  L.inputs = in;
  L.num_inputs = 6;
  L.template_args = targs;
  L.num_template_args = ntargs;
  L.grid[0] = (uint32_t)(tiles * nt);
  L.threadgroup[0] = (uint32_t)nt;
  for (int64_t i = 0; st == KILN_OK && i < chunks; i++) {
    int64_t rest = p->batch - i * GEMM_MAX_BATCH_CHUNK;
    in[5] = scal[2 + i];
    L.grid[1] = (uint32_t)(rest < GEMM_MAX_BATCH_CHUNK ? rest
                                                       : GEMM_MAX_BATCH_CHUNK);
    st = kiln__kernel_launch_into(kernel, &L, &p->c);
  }
  for (int64_t i = 0; i < chunks + 2; i++)
    kiln__array_destroy(scal[i]);
  kiln__free(scal);
  return st;
}

/* *out = op(x) as a view (x itself when not transposed; then *owned is
 * NULL, else the view to destroy), so that kernels after the first
 * generation need no transpose flags. */
static kiln_status op_view(kiln_array *x, bool t, kiln_array **out,
                           kiln_array **owned) {
  *owned = NULL;
  *out = x;
  if (!t)
    return KILN_OK;
  int64_t shape[KILN_MAX_NDIM], strides[KILN_MAX_NDIM];
  int nd = x->ndim;
  memcpy(shape, x->shape, (size_t)nd * sizeof *shape);
  memcpy(strides, x->strides, (size_t)nd * sizeof *strides);
  shape[nd - 2] = x->shape[nd - 1];
  shape[nd - 1] = x->shape[nd - 2];
  strides[nd - 2] = x->strides[nd - 1];
  strides[nd - 1] = x->strides[nd - 2];
  /* kiln_array_view is public and renames the API for messages. */
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(x, nd, shape, strides, 0, owned);
  kiln__api_enter(api);
  if (st == KILN_OK)
    *out = *owned;
  return st;
}

/* The library flags of kernel `name`: strided views read in place, and
 * gemm_wg's dynamic shared memory. */
static unsigned kernel_flags(const char *name) {
  unsigned f = KILN__LIB_NO_ROW_CONTIG;
  if (strcmp(name, "gemm_wg") == 0)
    f |= KILN__LIB_SHARED_KIB(GEMM_WG_SHARED_KIB);
  if (strncmp(name, "gemm_dmma2", 10) == 0)
    f |= KILN__LIB_SHARED_KIB(GEMM_DMMA2_SHARED_KIB);
  return f;
}

/* Launches `name` on views of op(A) and op(B) (see launch_tiles). */
static kiln_status launch_op_views(const gemm_problem *p, const char *name,
                                   const kiln_template_arg *targs,
                                   int ntargs, int nt, int64_t tiles) {
  kiln_kernel *k = NULL;
  kiln_array *a, *b, *va = NULL, *vb = NULL;
  kiln_status st = kiln__library_kernel("gemm", name, GEMM_INPUTS, "C",
                                        kernel_flags(name), &k);
  if (st == KILN_OK)
    st = op_view(p->a, p->ta, &a, &va);
  if (st == KILN_OK)
    st = op_view(p->b, p->tb, &b, &vb);
  if (st == KILN_OK)
    st = launch_tiles(p, a, b, k, targs, ntargs, nt, tiles);
  kiln__array_destroy(va);
  kiln__array_destroy(vb);
  return st;
}

/* The SIMT kernel's template arguments (12); la/lb: whether A's/B's tile
 * rows run along m/n (rows_contiguous). */
static void simt_targs(kiln_template_arg *t, kiln_dtype dtype, bool ta,
                       bool tb, bool beta0, simt_config cfg, bool la,
                       bool lb) {
  kiln__targ_dtype(&t[0], "T", dtype);
  kiln__targ_dtype(&t[1], "ACC", acc_dtype(dtype));
  kiln__targ_bool(&t[2], "TA", ta);
  kiln__targ_bool(&t[3], "TB", tb);
  kiln__targ_bool(&t[4], "BETA0", beta0);
  kiln__targ_int(&t[5], "BM", cfg.bm);
  kiln__targ_int(&t[6], "BN", cfg.bn);
  kiln__targ_int(&t[7], "BK", cfg.bk);
  kiln__targ_int(&t[8], "TM", cfg.tm);
  kiln__targ_int(&t[9], "TN", cfg.tn);
  kiln__targ_bool(&t[10], "LA", la);
  kiln__targ_bool(&t[11], "LB", lb);
}

static int simt_threads(simt_config cfg) {
  return (cfg.bm / cfg.tm) * (cfg.bn / cfg.tn);
}

/* Whether x's batch strides and start are multiples of `vw` elements. */
static bool batch_aligned(const kiln_array *x, int64_t vw) {
  for (int d = 0; d < x->ndim - 2; d++)
    if (x->strides[d] % vw != 0)
      return false;
  return (uintptr_t)kiln__array_data(x) % (uintptr_t)(vw * 4) == 0;
}

/*
 * gemm_f32's operand mode for operand x (rows r = m for A, n for B, with
 * element strides sr and sk of op(x)): 0 / 1, scalar loads along k / along
 * the rows (whichever is contiguous); +2 for float4 loads, where that
 * dimension has stride 1 and everything else is 16-byte aligned.
 */
static int f32_mode(const kiln_array *x, int64_t sr, int64_t sk) {
  bool rows = rows_contiguous(sr, sk);
  bool vec = rows ? sr == 1 && sk % 4 == 0 : sk == 1 && sr % 4 == 0;
  return (rows ? 1 : 0) + (vec && batch_aligned(x, 4) ? 2 : 0);
}

/* gemm_f32's template arguments (4); exact: every tile whole and k a
 * positive multiple of the slice depth 8, which selects the kernel's
 * unchecked loop. */
static void f32_targs(kiln_template_arg *t, bool beta0, int ma, int mb,
                      bool exact) {
  kiln__targ_bool(&t[0], "BETA0", beta0);
  kiln__targ_int(&t[1], "MA", ma);
  kiln__targ_int(&t[2], "MB", mb);
  kiln__targ_bool(&t[3], "EXACT", exact);
}

/* float32 on 128-square tiles: gemm_f32 on views of op(A) and op(B). */
static kiln_status run_f32(const gemm_problem *p) {
  int64_t sam, sak, sbk, sbn;
  op_strides(p->a, p->ta, &sam, &sak);
  op_strides(p->b, p->tb, &sbk, &sbn);
  kiln_template_arg t[4];
  bool exact = p->m % 128 == 0 && p->n % 128 == 0 && p->k % 8 == 0 &&
               p->k > 0;
  f32_targs(t, p->beta == 0.0, f32_mode(p->a, sam, sak),
            f32_mode(p->b, sbn, sbk), exact);
  int64_t tiles = ceil_div(p->m, 128) * ceil_div(p->n, 128);
  return launch_op_views(p, "gemm_f32", t, 4, GEMM_F32_THREADS, tiles);
}

static void dmma_targs(kiln_template_arg *t, bool beta0, bool ka, bool kb) {
  kiln__targ_bool(&t[0], "BETA0", beta0);
  kiln__targ_bool(&t[1], "KA", ka);
  kiln__targ_bool(&t[2], "KB", kb);
}

/* KILN_GEMM_DMMA (1 gemm_dmma, 2 gemm_dmma2), read once per process so
 * that one GPU call can time each variant in its own process. */
static int g_env_dmma = 2;
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

static void read_env(void) {
  const char *v = getenv("KILN_GEMM_DMMA");
  if (v != NULL && v[0] >= '1' && v[0] <= '2' && v[1] == '\0')
    g_env_dmma = v[0] - '0';
}

/* Whether float64 GEMMs on `dev` run gemm_dmma2 (else gemm_dmma; both
 * take the same template arguments): unless KILN_GEMM_DMMA=1, everywhere
 * but CUDA devices before sm_90, which lack its m16n8k8 (its m8n8k4
 * fallback there gains nothing and needs up to 146 registers on sm_80).
 * The CPU runs it, so the CPU suite covers its launch logic. */
static bool use_dmma2(const kiln_device *dev) {
  pthread_once(&g_env_once, read_env);
  int sm = 0;
  if (strcmp(dev->info.backend, "cuda") == 0 &&
      sscanf(dev->info.arch, "sm_%d", &sm) == 1 && sm < 90)
    return false;
  return g_env_dmma == 2;
}

/* float64 on tensor cores (gemm_dmma, 128-square tiles; its SIMT fallback
 * on devices without them), on views of op(A) and op(B); each operand is
 * staged k-major or row-major, whichever its memory is contiguous in. */
static kiln_status run_dmma(const gemm_problem *p) {
  int64_t sam, sak, sbk, sbn;
  op_strides(p->a, p->ta, &sam, &sak);
  op_strides(p->b, p->tb, &sbk, &sbn);
  kiln_template_arg t[3];
  dmma_targs(t, p->beta == 0.0, !rows_contiguous(sam, sak),
             !rows_contiguous(sbn, sbk));
  int64_t tiles = ceil_div(p->m, 128) * ceil_div(p->n, 128);
  return launch_op_views(p,
                         use_dmma2(p->stream->device) ? "gemm_dmma2"
                                                      : "gemm_dmma",
                         t, 3, GEMM_DMMA_THREADS, tiles);
}

/* The SIMT kernels; `first`: the first generation only (opts->path 3). */
static kiln_status run_simt(const gemm_problem *p, bool first) {
  simt_config cfg = choose_simt(p);
  if (!first && p->c->dtype == KILN_FLOAT32 && cfg.bm == 128)
    return run_f32(p);
  int64_t sam, sak, sbk, sbn;
  op_strides(p->a, p->ta, &sam, &sak);
  op_strides(p->b, p->tb, &sbk, &sbn);
  kiln_template_arg t[12];
  simt_targs(t, p->c->dtype, false, false, p->beta == 0.0, cfg,
             rows_contiguous(sam, sak), rows_contiguous(sbn, sbk));
  int64_t tiles = ceil_div(p->m, cfg.bm) * ceil_div(p->n, cfg.bn);
  return launch_op_views(p, "gemm_simt", t, 12, simt_threads(cfg), tiles);
}

/* The tensor-core kernel's template arguments (9); va/vb from
 * tc_vector_mode, ka/kb: !rows_contiguous. */
static void tc_targs(kiln_template_arg *t, kiln_dtype dtype, int mma, bool ta,
                     bool tb, bool beta0, int va, int vb, bool ka, bool kb) {
  kiln__targ_dtype(&t[0], "T", dtype);
  kiln__targ_int(&t[1], "MMA", mma);
  kiln__targ_bool(&t[2], "TA", ta);
  kiln__targ_bool(&t[3], "TB", tb);
  kiln__targ_bool(&t[4], "BETA0", beta0);
  kiln__targ_int(&t[5], "VA", va);
  kiln__targ_int(&t[6], "VB", vb);
  kiln__targ_bool(&t[7], "KA", ka);
  kiln__targ_bool(&t[8], "KB", kb);
}

static void tc2_targs(kiln_template_arg *t, kiln_dtype dtype, bool beta0,
                      int va, int vb) {
  kiln__targ_dtype(&t[0], "T", dtype);
  kiln__targ_int(&t[1], "MMA", dtype == KILN_FLOAT16 ? 0 : 1);
  kiln__targ_bool(&t[2], "BETA0", beta0);
  kiln__targ_int(&t[3], "VA", va);
  kiln__targ_int(&t[4], "VB", vb);
}

/* Whether gemm_wg's 128 x 256 tiles give every compute unit at least one
 * threadgroup (it runs one per SM); below that gemm_tc2's smaller tiles
 * spread the work wider. */
static bool wg_tiles_fill(const gemm_problem *p) {
  int units = p->c->buffer->device->info.compute_units;
  int64_t tiles = p->batch * ceil_div(p->m, 128) * ceil_div(p->n, 256);
  return tiles >= (int64_t)(units > 0 ? units : 1);
}

/* The tensor-core kernels: for float16 / bfloat16 operands that both
 * allow 16-byte vectors, gemm_wg (warpgroup MMA) when `wg` is forced
 * (path 5) or the device is a Hopper whose SMs its tiles fill, else
 * gemm_tc2 (pipelined mma.sync), unless `first`; gemm_tc for everything
 * else (scalar loads, float32 inputs rounded to TF32 / bf16). */
static kiln_status run_tc(const gemm_problem *p, bool first, bool wg) {
  int64_t sam, sak, sbk, sbn;
  op_strides(p->a, p->ta, &sam, &sak);
  op_strides(p->b, p->tb, &sbk, &sbn);
  size_t elem = kiln_dtype_size(p->c->dtype);
  int va = tc_vector_mode(p->a, sam, sak, p->m, p->k, elem);
  int vb = tc_vector_mode(p->b, sbn, sbk, p->n, p->k, elem);
  int64_t tiles =
      ceil_div(p->m, GEMM_TC_TILE) * ceil_div(p->n, GEMM_TC_TILE);
  if (!first && p->c->dtype != KILN_FLOAT32 && va != 0 && vb != 0) {
    kiln_template_arg t[5];
    tc2_targs(t, p->c->dtype, p->beta == 0.0, va, vb);
    if (wg || (has_wgmma(p->stream->device) && wg_tiles_fill(p)))
      return launch_op_views(p, "gemm_wg", t, 5, GEMM_WG_THREADS,
                             ceil_div(p->m, 128) * ceil_div(p->n, 256));
    return launch_op_views(p, "gemm_tc2", t, 5, GEMM_TC_THREADS, tiles);
  }
  kiln_template_arg t[9];
  tc_targs(t, p->c->dtype, tc_mma_kind(p), false, false, p->beta == 0.0, va,
           vb, !rows_contiguous(sam, sak), !rows_contiguous(sbn, sbk));
  return launch_op_views(p, "gemm_tc", t, 9, GEMM_TC_THREADS, tiles);
}

static void scale_targs(kiln_template_arg *t, kiln_dtype dtype, bool beta0) {
  kiln__targ_dtype(&t[0], "T", dtype);
  kiln__targ_dtype(&t[1], "ACC", acc_dtype(dtype));
  kiln__targ_bool(&t[2], "BETA0", beta0);
}

/* C = beta * C, for k == 0 or alpha == 0 (BLAS: A and B are not read). */
static kiln_status run_scale(const gemm_problem *p) {
  int64_t count = p->c->size;
  if (count > (int64_t)UINT32_MAX - 255)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "C has %lld elements; scaling more than 2^32 - 256 "
                       "in one call is not supported.",
                       (long long)count);
  kiln_template_arg t[3];
  scale_targs(t, p->c->dtype, p->beta == 0.0);
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("gemm", "gemm_scale",
                                        GEMM_SCALE_INPUTS, "C",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *beta = NULL, *n = NULL;
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->stream, p->acc, p->beta, &beta);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->stream, KILN_INT32, (double)count, &n);
  if (st == KILN_OK) {
    kiln_launch L;
    kiln_output_spec spec;
    init_launch(p, &L, &spec);
    kiln_array *in[3] = {p->c, beta, n};
    L.inputs = in;
    L.num_inputs = 3;
    L.template_args = t;
    L.num_template_args = 3;
    L.grid[0] = (uint32_t)(ceil_div(count, GEMM_SCALE_THREADS) *
                           GEMM_SCALE_THREADS);
    L.threadgroup[0] = GEMM_SCALE_THREADS;
    st = kiln__kernel_launch_into(k, &L, &p->c);
  }
  kiln__array_destroy(beta);
  kiln__array_destroy(n);
  return st;
}

/* Runs the kernel of `path` (choose_path's answer) for a non-trivial
 * problem. */
static kiln_status run_path(const gemm_problem *p, int path) {
  bool tc_shape = tc_mma_kind(p) >= 0 && p->m >= 64 && p->n >= 64;
  switch (path) {
  case GEMM_PATH_TC:
    return p->c->dtype == KILN_FLOAT64 ? run_dmma(p)
                                        : run_tc(p, false, false);
  case GEMM_PATH_WG:
    return run_tc(p, false, true);
  case GEMM_PATH_FIRST:
    return tc_shape ? run_tc(p, true, false) : run_simt(p, true);
  case GEMM_PATH_F32:
    return run_f32(p);
  default:
    return run_simt(p, false);
  }
}

/* ---- the trapezoid GEMM (kiln__gemm_tri) -------------------------------- */

/* The 128-tiles of C's lower trapezoid (upper: its mirror) for a C of
 * tm x tn tiles with tm >= tn (upper: tn >= tm). */
static int64_t tri_tiles(int64_t tm, int64_t tn, bool upper) {
  int64_t lg = upper ? tn : tm, sh = upper ? tm : tn;
  return lg * sh - sh * (sh - 1) / 2;
}

/* gemm_f32_tri's template arguments (5): gemm_f32's and UPPER. */
static void f32_tri_targs(kiln_template_arg *t, bool beta0, int ma, int mb,
                          bool exact, bool upper) {
  f32_targs(t, beta0, ma, mb, exact);
  kiln__targ_bool(&t[4], "UPPER", upper);
}

/*
 * gemm_f32_tri's operand modes for gemm_f32's (f32_mode): the same, but
 * float4 loads of rows (3) beside scalar loads along k (0) become scalar
 * loads of rows (1): that pair takes 129 registers in gemm_f32_tri on
 * sm_90a (126 in gemm_f32; the trapezoid's tile is held, not recomputed),
 * one group per SM instead of two. The Cholesky never passes it (lower:
 * modes 0 / 2 both, upper: 1 / 3 both).
 */
static void f32_tri_modes(int *ma, int *mb) {
  if (*ma == 3 && *mb == 0)
    *ma = 1;
  else if (*ma == 0 && *mb == 3)
    *mb = 1;
}

/* gemm_dmma_tri's and gemm_dmma2_tri's template arguments (4):
 * gemm_dmma's and UPPER. */
static void dmma_tri_targs(kiln_template_arg *t, bool beta0, bool ka,
                           bool kb, bool upper) {
  dmma_targs(t, beta0, ka, kb);
  kiln__targ_bool(&t[3], "UPPER", upper);
}

/* The trapezoid's shape and dtype, after check_problem. */
static kiln_status check_tri(const gemm_problem *p, bool upper) {
  kiln_dtype d = p->c->dtype;
  if (d != KILN_FLOAT32 && d != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "C is %s; the trapezoid GEMM supports float32 and "
                       "float64.",
                       kiln_dtype_name(d));
  if (upper ? p->n < p->m : p->m < p->n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "C is %lld x %lld; its %s trapezoid needs at least "
                       "as many %s as %s.",
                       (long long)p->m, (long long)p->n,
                       upper ? "upper" : "lower",
                       upper ? "columns" : "rows",
                       upper ? "rows" : "columns");
  return KILN_OK;
}

/* p = the problem C = alpha op(A) op(B) + beta C, options unset; A, B
 * and C must not be NULL. */
static kiln_status problem_init(gemm_problem *p, bool ta, bool tb,
                                double alpha, kiln_array *a, kiln_array *b,
                                double beta, kiln_array *c) {
  if (a == NULL || b == NULL || c == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : b == NULL ? "B" : "C");
  memset(p, 0, sizeof *p);
  p->ta = ta;
  p->tb = tb;
  p->alpha = alpha;
  p->beta = beta;
  p->a = a;
  p->b = b;
  p->c = c;
  return KILN_OK;
}

/* See linalg.h. */
kiln_status kiln__gemm_tri(kiln_stream *s, bool upper, bool ta, bool tb,
                           double alpha, kiln_array *a, kiln_array *b,
                           double beta, kiln_array *c) {
  gemm_problem p;
  kiln_status st = problem_init(&p, ta, tb, alpha, a, b, beta, c);
  if (st != KILN_OK)
    return st;
  kiln_linalg_opts_init(&p.opts);
  p.opts.stream = s;
  st = check_problem(&p);
  if (st == KILN_OK)
    st = check_tri(&p, upper);
  if (st != KILN_OK || p.batch == 0 || p.m == 0 || p.n == 0)
    return st;
  /* k == 0 or alpha == 0: the tiles' loops run no slice and store beta C,
   * still on the trapezoid only (gemm_scale would scale all of C). */
  int64_t sam, sak, sbk, sbn;
  op_strides(p.a, p.ta, &sam, &sak);
  op_strides(p.b, p.tb, &sbk, &sbn);
  int64_t tiles =
      tri_tiles(ceil_div(p.m, 128), ceil_div(p.n, 128), upper);
  if (p.c->dtype == KILN_FLOAT64) {
    kiln_template_arg t[4];
    dmma_tri_targs(t, p.beta == 0.0, !rows_contiguous(sam, sak),
                   !rows_contiguous(sbn, sbk), upper);
    return launch_op_views(&p,
                           use_dmma2(p.stream->device) ? "gemm_dmma2_tri"
                                                       : "gemm_dmma_tri",
                           t, 4, GEMM_DMMA_THREADS, tiles);
  }
  kiln_template_arg t[5];
  bool exact = p.m % 128 == 0 && p.n % 128 == 0 && p.k % 8 == 0 && p.k > 0;
  int ma = f32_mode(p.a, sam, sak), mb = f32_mode(p.b, sbn, sbk);
  f32_tri_modes(&ma, &mb);
  f32_tri_targs(t, p.beta == 0.0, ma, mb, exact, upper);
  return launch_op_views(&p, "gemm_f32_tri", t, 5, GEMM_F32_THREADS, tiles);
}

/* ---- every configuration, for tests ------------------------------------ */

/*
 * The (vector mode, K flag) pairs run_tc can pass for one operand: mode 1
 * needs k contiguous (so rows_contiguous is false and K set), mode 2 the
 * rows contiguous with a k stride other than 1 (K clear); scalar loads
 * (mode 0) come with either.
 */
static const struct {
  int vector;
  bool k_major;
} k_tc_operand_modes[] = {{0, false}, {0, true}, {1, true}, {2, false}};

/* Fills the fields of `c` that follow from the kernel and dtype. */
static void config_init(kiln__gemm_config *c, const char *name,
                        kiln_dtype dtype, int threads) {
  bool scale = strcmp(name, "gemm_scale") == 0;
  static const int tile_ranks[6] = {2, 2, 2, 0, 0, 0};
  static const int scale_ranks[3] = {2, 0, 0};
  memset(c, 0, sizeof *c);
  c->name = name;
  c->inputs = scale ? GEMM_SCALE_INPUTS : GEMM_INPUTS;
  c->outputs = "C";
  c->flags = kernel_flags(name);
  c->num_inputs = scale ? 3 : 6;
  for (int i = 0; i < c->num_inputs; i++) {
    int rank = scale ? scale_ranks[i] : tile_ranks[i];
    bool last = i == c->num_inputs - 1; /* batch0 or count */
    c->input_specs[i].ndim = rank;
    c->input_specs[i].dtype = rank > 0 ? dtype
                              : last   ? KILN_INT32
                                       : acc_dtype(dtype);
  }
  c->output.dtype = dtype;
  c->output.ndim = 2;
  c->threads = threads;
  c->mma = -1;
}

static kiln_status each_scale(kiln_dtype dt, kiln__gemm_config_fn fn,
                              void *user) {
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  for (int beta0 = 0; st == KILN_OK && beta0 < 2; beta0++) {
    config_init(&c, "gemm_scale", dt, GEMM_SCALE_THREADS);
    scale_targs(c.template_args, dt, beta0);
    c.num_template_args = 3;
    st = fn(&c, user);
  }
  return st;
}

/* Bits of `f`: BETA0, LA, LB (the driver passes op(A) and op(B) as views,
 * so TA and TB are always false). */
static kiln_status each_simt(kiln_dtype dt, kiln__gemm_config_fn fn,
                             void *user) {
  const simt_config *tiles[3] = {&k_simt_small, &k_simt_medium,
                                 &k_simt_large};
  int count = simt_large_ok(acc_dtype(dt)) ? 3 : 2;
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  for (int t = 0; t < count; t++)
    for (unsigned f = 0; st == KILN_OK && f < 8; f++) {
      config_init(&c, "gemm_simt", dt, simt_threads(*tiles[t]));
      simt_targs(c.template_args, dt, false, false, f & 1, *tiles[t], f & 2,
                 f & 4);
      c.num_template_args = 12;
      st = fn(&c, user);
    }
  return st;
}

/* gemm_f32 (float32 only): BETA0 x the operand modes of A and B x
 * EXACT. */
static kiln_status each_f32(kiln_dtype dt, kiln__gemm_config_fn fn,
                            void *user) {
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  if (dt != KILN_FLOAT32)
    return KILN_OK;
  for (unsigned f = 0; st == KILN_OK && f < 64; f++) {
    config_init(&c, "gemm_f32", dt, GEMM_F32_THREADS);
    f32_targs(c.template_args, f & 1, (int)(f >> 1) & 3,
              (int)(f >> 3) & 3, f & 32);
    c.num_template_args = 4;
    st = fn(&c, user);
  }
  return st;
}

/* gemm_f32_tri (float32 only): gemm_f32's configurations x UPPER, less
 * the operand modes f32_tri_modes replaces (3 with 0). */
static kiln_status each_f32_tri(kiln_dtype dt, kiln__gemm_config_fn fn,
                                void *user) {
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  if (dt != KILN_FLOAT32)
    return KILN_OK;
  for (unsigned f = 0; st == KILN_OK && f < 128; f++) {
    int ma = (int)(f >> 1) & 3, mb = (int)(f >> 3) & 3;
    if ((ma == 3 && mb == 0) || (ma == 0 && mb == 3))
      continue;
    config_init(&c, "gemm_f32_tri", dt, GEMM_F32_THREADS);
    f32_tri_targs(c.template_args, f & 1, ma, mb, f & 32, f & 64);
    c.num_template_args = 5;
    st = fn(&c, user);
  }
  return st;
}

/* gemm_tc2 and gemm_wg (float16 and bfloat16, the same template
 * arguments): BETA0 x the vector modes 1, 2 of A and B. */
static kiln_status each_tensor16(const char *name, int threads,
                                 kiln_dtype dt, kiln__gemm_config_fn fn,
                                 void *user) {
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  if (dt != KILN_FLOAT16 && dt != KILN_BFLOAT16)
    return KILN_OK;
  for (unsigned f = 0; st == KILN_OK && f < 8; f++) {
    config_init(&c, name, dt, threads);
    tc2_targs(c.template_args, dt, f & 1, 1 + (int)((f >> 1) & 1),
              1 + (int)(f >> 2));
    c.num_template_args = 5;
    c.mma = dt == KILN_FLOAT16 ? 0 : 1;
    st = fn(&c, user);
  }
  return st;
}

/* A float64 tensor-core kernel (float64 only): gemm_dmma or gemm_dmma2
 * (BETA0, KA, KB), or with `tri` their trapezoid kernels gemm_dmma_tri
 * and gemm_dmma2_tri (BETA0, KA, KB, UPPER). */
static kiln_status each_dmma(const char *kernel, bool tri, kiln_dtype dt,
                             kiln__gemm_config_fn fn, void *user) {
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  if (dt != KILN_FLOAT64)
    return KILN_OK;
  for (unsigned f = 0; st == KILN_OK && f < (tri ? 16u : 8u); f++) {
    config_init(&c, kernel, dt, GEMM_DMMA_THREADS);
    if (tri)
      dmma_tri_targs(c.template_args, f & 1, f & 2, f & 4, f & 8);
    else
      dmma_targs(c.template_args, f & 1, f & 2, f & 4);
    c.num_template_args = tri ? 4 : 3;
    st = fn(&c, user);
  }
  return st;
}

/* Each tensor-core family `dt` reaches through some precision, once. */
static kiln_status each_tc(kiln_dtype dt, kiln__gemm_config_fn fn,
                           void *user) {
  static const int precisions[3] = {KILN_PRECISION_DEFAULT,
                                    KILN_PRECISION_TF32, KILN_PRECISION_BF16};
  enum { NMODES = sizeof k_tc_operand_modes / sizeof k_tc_operand_modes[0] };
  bool seen[3] = {false, false, false};
  kiln__gemm_config c;
  kiln_status st = KILN_OK;
  for (int p = 0; p < 3; p++) {
    int mma = mma_kind_of(dt, precisions[p]);
    if (mma < 0 || seen[mma])
      continue;
    seen[mma] = true;
    for (int beta0 = 0; beta0 < 2; beta0++)
      for (int a = 0; a < NMODES; a++)
        for (int b = 0; st == KILN_OK && b < NMODES; b++) {
          config_init(&c, "gemm_tc", dt, GEMM_TC_THREADS);
          tc_targs(c.template_args, dt, mma, false, false, beta0,
                   k_tc_operand_modes[a].vector, k_tc_operand_modes[b].vector,
                   k_tc_operand_modes[a].k_major,
                   k_tc_operand_modes[b].k_major);
          c.num_template_args = 9;
          c.mma = mma;
          st = fn(&c, user);
        }
  }
  return st;
}

/* See linalg.h. */
kiln_status kiln__gemm_for_each_config(kiln__gemm_config_fn fn, void *user) {
  static const kiln_dtype dtypes[4] = {KILN_FLOAT16, KILN_BFLOAT16,
                                       KILN_FLOAT32, KILN_FLOAT64};
  kiln_status st = KILN_OK;
  for (int d = 0; st == KILN_OK && d < 4; d++) {
    st = each_scale(dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_simt(dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_f32(dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_dmma("gemm_dmma", false, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_f32_tri(dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_dmma("gemm_dmma_tri", true, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_dmma("gemm_dmma2", false, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_dmma("gemm_dmma2_tri", true, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_tensor16("gemm_tc2", GEMM_TC_THREADS, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_tensor16("gemm_wg", GEMM_WG_THREADS, dtypes[d], fn, user);
    if (st == KILN_OK)
      st = each_tc(dtypes[d], fn, user);
  }
  return st;
}

/* ---- entry points ------------------------------------------------------ */

/* The checked GEMM shared by kiln_gemm_ex and kiln_matmul_ex. */
static kiln_status gemm(bool ta, bool tb, double alpha, kiln_array *a,
                        kiln_array *b, double beta, kiln_array *c,
                        const kiln_linalg_opts *opts) {
  gemm_problem p;
  kiln_status st = problem_init(&p, ta, tb, alpha, a, b, beta, c);
  if (st != KILN_OK)
    return st;
  st = kiln__linalg_opts(opts, &p.opts);
  if (st == KILN_OK)
    st = check_problem(&p);
  int path = GEMM_PATH_SIMT;
  if (st == KILN_OK)
    st = choose_path(&p, &path);
  if (st != KILN_OK || p.batch == 0 || p.m == 0 || p.n == 0)
    return st;
  if (p.k == 0 || alpha == 0.0)
    return run_scale(&p);
  return run_path(&p, path);
}

/* Public: see kiln.h. */
kiln_status kiln_gemm(bool trans_a, bool trans_b, double alpha, kiln_array *a,
                      kiln_array *b, double beta, kiln_array *c) {
  KILN_API_ENTER();
  return gemm(trans_a, trans_b, alpha, a, b, beta, c, NULL);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_gemm_ex(bool trans_a, bool trans_b, double alpha,
                         kiln_array *a, kiln_array *b, double beta,
                         kiln_array *c, const kiln_linalg_opts *opts) {
  KILN_API_ENTER();
  return gemm(trans_a, trans_b, alpha, a, b, beta, c, opts);
}

/* The shape of A @ B: the batched operand's batch dimensions, m, n. */
static kiln_status matmul_shape(kiln_array *a, kiln_array *b, int *ndim,
                                int64_t *shape) {
  kiln_array *ops[2] = {a, b};
  static const char *const names[2] = {"A", "B"};
  int64_t batch;
  kiln_status st = check_dtypes(ops, names, 2);
  if (st == KILN_OK)
    st = kiln__linalg_batch(ops, 2, names, &batch);
  if (st != KILN_OK)
    return st;
  if (a->shape[a->ndim - 1] != b->shape[b->ndim - 2])
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the shapes do not chain: A is %lld x %lld but B is "
                       "%lld x %lld (A's columns must equal B's rows).",
                       (long long)a->shape[a->ndim - 2],
                       (long long)a->shape[a->ndim - 1],
                       (long long)b->shape[b->ndim - 2],
                       (long long)b->shape[b->ndim - 1]);
  const kiln_array *batched = a->ndim > 2 ? a : b;
  *ndim = batched->ndim;
  memcpy(shape, batched->shape, (size_t)batched->ndim * sizeof *shape);
  shape[*ndim - 2] = a->shape[a->ndim - 2];
  shape[*ndim - 1] = b->shape[b->ndim - 1];
  return KILN_OK;
}

/* The new-output product shared by kiln_matmul and kiln_matmul_ex. */
static kiln_status matmul(kiln_array *a, kiln_array *b,
                          const kiln_linalg_opts *opts, kiln_array **out) {
  if (a == NULL || b == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : b == NULL ? "B" : "out");
  int ndim = 0;
  int64_t shape[KILN_MAX_NDIM];
  kiln_status st = matmul_shape(a, b, &ndim, shape);
  if (st != KILN_OK)
    return st;
  kiln_linalg_opts o;
  st = kiln__linalg_opts(opts, &o);
  if (st == KILN_OK && a->buffer->device != b->buffer->device)
    st = kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "A lives on device %d and B on device %d; move them to "
                     "one device first.",
                     a->buffer->device->index, b->buffer->device->index);
  kiln_array *c = NULL;
  if (st == KILN_OK)
    st = kiln__array_create(a->buffer->device, a->dtype, ndim, shape, &c);
  if (st == KILN_OK)
    st = gemm(false, false, 1.0, a, b, 0.0, c, &o);
  if (st != KILN_OK) {
    kiln__array_destroy(c);
    return st;
  }
  *out = c;
  return KILN_OK;
}

/* Public: see kiln.h. */
kiln_status kiln_matmul(kiln_array *a, kiln_array *b, kiln_array **out) {
  KILN_API_ENTER();
  return matmul(a, b, NULL, out);
}

/* Public: see kiln.h. */
kiln_status kiln_matmul_ex(kiln_array *a, kiln_array *b,
                           const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  return matmul(a, b, opts, out);
}
