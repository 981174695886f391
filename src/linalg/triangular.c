/*
 * Triangular solves and inverses on any device: kiln__trsm (the solve
 * every driver shares), kiln_solve_triangular, kiln_tri_inv and
 * kiln_cholesky_inv, with kiln's own kernels (kernels/triangular.metal)
 * and GEMM.
 *
 * The solve, op(A) X = alpha B in place, works on the effective lower
 * matrix M (op(A), with both indices reversed when it is upper; see the
 * .metal), so every (upper, trans) case is a forward substitution over
 * "effective rows". Paths (kiln_linalg_opts.path of the public calls):
 *   0  auto: blocked with path 2's steps when B has few columns, GEMM
 *      steps otherwise;
 *   1  substitution: one thread per right-hand side (trsm_subst); no
 *      threadgroup memory, the reference the others are tested against;
 *   2  blocked, few right-hand sides: the NB x NB diagonal blocks of M
 *      are inverted once (trsm_diag_inv, one launch for all), and from
 *      them every step's S x S diagonal block (S = SUB NB = 256 rows in
 *      float32, 128 in float64: trsm_stepinv, a block forward
 *      substitution against the identity, one launch for all steps and
 *      matrices, V: n S values of scratch per matrix). Then ONE launch a
 *      step, trsm_step: launch j takes X_{j-1} (already in B, and in a
 *      contiguous copy XS) and updates every later row, B_rest -= M[rest,
 *      j-1] X_{j-1}, over threadgroups of 16 rows x 16 columns that
 *      stage all of their loads at once (cp.async on CUDA: no register
 *      holds a value in flight); the first S / 16 of them own step j's
 *      rows: each writes its updated rows to a scratch R, raises a flag,
 *      waits for the flags of the owners before it (lower threadgroup
 *      indices, started first on every backend, so the wait ends) and
 *      computes its 16 rows of X_j = V_j R into B and XS. Launch 0
 *      scales B by alpha and solves step 0's rows. The launch's index
 *      and the batch entry come from the grid (x's size, z's chunk), not
 *      from 0-d inputs: each was a load every address waited on, one
 *      more L2 round trip (~0.3-0.5 us) before a launch's first load
 *      (COUNT, NOT MEASURED: ~10-15 us a solve).
 *      Why, and the count that predicts the gain (n = 8192, k = 16,
 *      float32, the anchor of kiln_solve, which runs two such solves):
 *      before, MEASURED on an H100 (ncu, main 37ded1e): per step
 *      trsm_vapply (X_s = V_s B_s, 32 threadgroups) 6.2 us and
 *      trsm_band (the update, 497 threadgroups at step 0) 9.6 us: 64
 *      launches, 1.0 ms a solve pair at 15.8 us a step. trsm_vapply's
 *      time is almost all fixed cost: a launch's drain and fill (PDL
 *      cannot overlap a grid whose every group waits on the grid
 *      before), the 0-d scalars' load round, one dependent load round
 *      for V_s and B_s, and, on main, ~80 K L2 prefetch requests of
 *      M[rest, s] issued at its end (8 MB: the requests queue behind
 *      HBM, so the grid does not end until HBM has taken most of them);
 *      its 1 M FMAs are ~0.2 us spread over 32 SMs. Its work fits in
 *      the band launch's shadow: the owners are the grid's first 16
 *      groups (dispatched first), and their extra chain is a flag
 *      round (fence + store + a poll from another SM, ~1 us) + one L2
 *      load round for R (~0.5 us; V_j's rows are staged before the
 *      wait) + a 16 x 16 x 256 product (~0.2 us).
 *      After, a COUNT, NOT MEASURED: per step one launch of ~9.6 us
 *      (the band, unchanged in bytes and rounds) + ~1-2 us of owner
 *      tail where the band's last wave does not cover it (late steps):
 *      ~11 us a step instead of 15.8, 32 launches a solve instead of
 *      64: ~0.35 ms a solve instead of ~0.51 (kiln_solve's two solves:
 *      ~0.3 ms less), registers 64 (float32, every UPPER/TRANS: two
 *      threadgroups an SM as before; float64 72-76: one). trsm_stepinv
 *      (measured 90.2 us a solve, main 37ded1e): 1024 threadgroups (32
 *      steps x 32 column groups) of chains of up to 10 tile stages, at
 *      162 registers one threadgroup an SM: 7.8 waves. Its next tile now
 *      goes straight into the other half of a double-buffered tile in
 *      threadgroup memory (no register prefetch; Bs and Xt merged to
 *      make room: 42 KiB) and the product loop is unrolled by 2: 128
 *      registers, two threadgroups an SM, 3.9 waves of the same chains:
 *      COUNT, NOT MEASURED, ~45-50 us a solve instead of 90.
 *      trsm_diag_inv (measured 31.5 us a solve, 128 threadgroups, one an
 *      SM): a warp's chain of 64 substitution steps each did 8 IEEE
 *      divisions (a ~10-instruction subroutine each, on the chain); the
 *      diagonal's reciprocals are now taken once up front and each step
 *      multiplies: COUNT, NOT MEASURED, ~10-15 us. Beside it, in
 *      kiln_solve_triangular only: tri_diag_check and tri_copy as on
 *      main. MEASURED end to end (H100, 2026-11-27, bench_solve, main
 *      73c8fb4 against this round's base in earlier calls of the same
 *      day): triangular 8192^2 x 16 0.58 -> 0.48-0.52 ms (cublasStrsm
 *      2.7 ms; 0.97 ms before path 2 was rebuilt); the kernels' own
 *      times not profiled yet;
 *   3  blocked, GEMM steps: per block step, X_j = inv(M_jj) B_j in place
 *      (trsm_apply), then B_rest -= M[rest, j] X_j with kiln's GEMM, which
 *      wins once B is wide (its tiles reuse each element of M and X_j).
 * Multiplying by inverted diagonal blocks instead of substituting is what
 * makes every step parallel; its backward error grows with the condition
 * of the inverted diagonal blocks only (Du Croz and Higham): NB x NB in
 * path 3, S x S in path 2. The tests probe both with ill-conditioned
 * matrices (condition 1e6 in float32, 1e12 in float64, and matrices
 * without a dominant diagonal, whose blocks' condition grows
 * exponentially with S) over several steps.
 *
 * kiln_tri_inv solves against the identity with the GEMM steps restricted
 * to the columns that can be non-zero (half the work of a full solve, and
 * the other triangle is never written, so it stays exactly zero).
 * kiln_cholesky_inv computes F^-1 that way, then one GEMM (F^-T F^-1 or
 * F^-1 F^-T) and a mirror of its lower triangle, so the result is exactly
 * symmetric.
 *
 * The public calls check their arguments, return empty results without
 * launching, enqueue the work on a new result array, then read back a
 * per-matrix info (the first zero on the diagonal, LAPACK's trtrs info)
 * and hand the result over or destroy it.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "linalg/linalg.h"

#define TRI_PATH_AUTO 0
#define TRI_PATH_SUBST 1
#define TRI_PATH_FUSED 2
#define TRI_PATH_GEMM 3

/* Diagonal block sizes of trsm_diag_inv (and of path 3's steps). */
#define TRI_NB_F32 64
#define TRI_NB_F64 32
/* Path 2's step: SUB diagonal blocks, S = SUB NB rows (256 in float32,
 * 128 in float64), inverted as one block by trsm_stepinv; trsm_step
 * holds 16 x S of M and S x 16 of X in threadgroup memory (33 KiB). */
#define TRI_SUB_F32 4
#define TRI_SUB_F64 4
#define TRI_KT_INV 8   /* columns per trsm_stepinv threadgroup */
#define TRI_BAND_RB 16 /* rows per trsm_step threadgroup (its RB) */
#define TRI_BAND_THREADS 512
#define TRI_KT_STEP 16  /* columns per trsm_step threadgroup (KC) */
#define TRI_THREADS 256 /* the other blocked kernels' threadgroup */
/* Up to this many right-hand sides the auto path takes path 2; beyond,
 * trsm_step's re-reads of M (once per 16 columns) cost more than the
 * GEMM steps' launches, whose tiles reuse each element of M. */
#define TRI_FUSED_MAX_K 128

/* CUDA's limit on grid.y and grid.z; batches run in chunks of this. */
#define TRI_Y_CHUNK 65535
#define TRI_MAX_N 65535

/* ---- small helpers --------------------------------------------------- */

static int block_size(kiln_dtype dt) {
  return dt == KILN_FLOAT64 ? TRI_NB_F64 : TRI_NB_F32;
}

/* Columns of B per trsm_apply threadgroup: NB x KT of B beside the NB x NB
 * inverse. */
static int apply_cols(kiln_dtype dt) {
  return dt == KILN_FLOAT64 ? 32 : 64;
}

static int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

/* The batch entries of x: the product of all but its last two dims. */
static int64_t batch_of(const kiln_array *x) {
  int64_t b = 1;
  for (int d = 0; d < x->ndim - 2; d++)
    b *= x->shape[d];
  return b;
}

/* The batch-start scalars of a launch over `batch` entries, one per chunk
 * of TRI_Y_CHUNK, made up front so a failure enqueues no kernel. */
typedef struct tri_chunks {
  int64_t count;
  kiln_array **first;
} tri_chunks;

static void chunks_free(tri_chunks *c) {
  for (int64_t i = 0; c->first != NULL && i < c->count; i++)
    kiln__array_destroy(c->first[i]);
  kiln__free(c->first);
  c->first = NULL;
}

static kiln_status chunks_make(kiln_stream *s, int64_t batch, tri_chunks *c) {
  c->count = ceil_div(batch, TRI_Y_CHUNK);
  c->first =
      kiln__calloc((size_t)(c->count > 0 ? c->count : 1), sizeof *c->first);
  if (c->first == NULL)
    return kiln__oom("preparing a triangular solve");
  kiln_status st = KILN_OK;
  for (int64_t i = 0; st == KILN_OK && i < c->count; i++)
    st = kiln__linalg_scalar(s, KILN_INT32, (double)(i * TRI_Y_CHUNK),
                             &c->first[i]);
  if (st != KILN_OK)
    chunks_free(c);
  return st;
}

/*
 * One kernel launch repeated over the batch: `in` holds the inputs with
 * the last one left for batch0, which each chunk fills in; grid.y is the
 * chunk's entry count, grid.x / grid.z and the threadgroup as given.
 */
typedef struct tri_launch {
  kiln_kernel *kernel;
  kiln_array *in[8];
  int num_in;
  kiln_array *into[4];
  int num_out;
  kiln_template_arg t[8];
  int num_t;
  uint32_t gx, gz, tx;
  uint32_t tz; /* threadgroup.z (0: 1) */
} tri_launch;

static kiln_status launch_batched(kiln_stream *s, tri_launch *tl, int64_t batch,
                                  const tri_chunks *c) {
  kiln_output_spec spec[4];
  for (int i = 0; i < tl->num_out; i++)
    kiln__linalg_out_spec(&spec[i], tl->into[i]);
  kiln_status st = KILN_OK;
  for (int64_t i = 0; st == KILN_OK && i < c->count; i++) {
    int64_t rest = batch - i * TRI_Y_CHUNK;
    tl->in[tl->num_in - 1] = c->first[i];
    kiln_launch L;
    kiln__linalg_launch_init(&L, s);
    L.inputs = tl->in;
    L.num_inputs = tl->num_in;
    L.outputs = spec;
    L.num_outputs = tl->num_out;
    L.template_args = tl->t;
    L.num_template_args = tl->num_t;
    L.grid[0] = tl->gx;
    L.grid[1] = (uint32_t)(rest < TRI_Y_CHUNK ? rest : TRI_Y_CHUNK);
    L.grid[2] = tl->gz;
    L.threadgroup[0] = tl->tx;
    L.threadgroup[2] = tl->tz > 0 ? tl->tz : 1;
    st = kiln__kernel_launch_into(tl->kernel, &L, tl->into);
  }
  return st;
}

static kiln_status get_kernel(const char *name, const char *inputs,
                              const char *outputs, kiln_kernel **k) {
  return kiln__library_kernel("triangular", name, inputs, outputs,
                              KILN__LIB_NO_ROW_CONTIG, k);
}

/* An element-wise kernel of the family (tri_copy, tri_eye, tri_mirror)
 * over every matrix of `dst` (rows x cols), batch along grid.y. */
static kiln_status launch_elementwise(kiln_stream *s, const char *name,
                                      const char *inputs, kiln_array *src,
                                      kiln_array *dst) {
  int nd = dst->ndim;
  int64_t rows = dst->shape[nd - 2], cols = dst->shape[nd - 1];
  int64_t batch = batch_of(dst);
  if (rows == 0 || cols == 0 || batch == 0)
    return KILN_OK;
  tri_launch tl;
  memset(&tl, 0, sizeof tl);
  const char *out = strcmp(name, "tri_copy") == 0 ? "Dst" : "X";
  kiln_status st = get_kernel(name, inputs, out, &tl.kernel);
  tri_chunks c = {0, NULL};
  if (st == KILN_OK)
    st = chunks_make(s, batch, &c);
  if (st != KILN_OK)
    return st;
  int i = 0;
  if (src != NULL)
    tl.in[i++] = src;
  tl.in[i++] = dst;
  tl.num_in = i + 1;
  tl.into[0] = dst;
  tl.num_out = 1;
  kiln__targ_dtype(&tl.t[0], "T", dst->dtype);
  tl.num_t = 1;
  tl.gx = (uint32_t)cols;
  tl.gz = (uint32_t)rows;
  tl.tx = cols >= 128 ? 128 : (uint32_t)cols;
  /* several rows a threadgroup when the rows are short: 16 columns (a
   * solve's right-hand sides) made 16-thread threadgroups, one per row,
   * 8192 of them (12 us measured for 512 KB); now ~256 threads each,
   * at most 64 rows (CUDA's limit on a threadgroup's z size) */
  int64_t tz = 256 / tl.tx;
  if (tz > 64)
    tz = 64;
  tl.tz = (uint32_t)(tz < rows ? tz : rows);
  st = launch_batched(s, &tl, batch, &c);
  chunks_free(&c);
  return st;
}

/* ---- the solve ------------------------------------------------------- */

/* One solve, op(A) X = alpha B in place, as kiln__trsm takes it. */
typedef struct trsm_problem {
  kiln_stream *s;
  kiln_array *a, *b;
  bool upper, trans, unit;
  double alpha;
  int64_t n, k, batch, a_batch;
  int nb; /* the diagonal block size */
  /* Only for kiln_tri_inv: B starts as the identity and the solve is
   * lower (or upper) with trans false, so at each step only the columns
   * at and before (after) the block can be non-zero. */
  bool identity;
} trsm_problem;

static kiln_status check_trsm(trsm_problem *p) {
  kiln_array *a = p->a, *b = p->b;
  if (a->dtype != b->dtype ||
      (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64))
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s and B is %s; a triangular solve needs both "
                       "float32 or both float64.",
                       kiln_dtype_name(a->dtype), kiln_dtype_name(b->dtype));
  if (a->ndim < 2 || b->ndim < 2)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "%s has fewer than 2 dimensions; a triangular solve "
                       "needs matrices.",
                       a->ndim < 2 ? "A" : "B");
  p->n = b->shape[b->ndim - 2];
  p->k = b->shape[b->ndim - 1];
  if (a->shape[a->ndim - 2] != p->n || a->shape[a->ndim - 1] != p->n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld but B has %lld rows; A must be "
                       "square with B's row count.",
                       (long long)a->shape[a->ndim - 2],
                       (long long)a->shape[a->ndim - 1], (long long)p->n);
  bool same = a->ndim == 2 || a->ndim == b->ndim;
  for (int d = 0; same && a->ndim > 2 && d < a->ndim - 2; d++)
    same = a->shape[d] == b->shape[d];
  if (!same)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the batch dimensions of A and B differ; A must have "
                       "B's or none.");
  if (p->n > TRI_MAX_N)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %lld x %lld; triangular solves support n up to "
                       "%d.",
                       (long long)p->n, (long long)p->n, TRI_MAX_N);
  if (a->buffer->device != p->s->device || b->buffer->device != p->s->device)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A and B must live on the stream's device.");
  p->batch = batch_of(b);
  p->a_batch = batch_of(a);
  p->nb = block_size(a->dtype);
  return KILN_OK;
}

/* trsm_subst over every column and batch entry. */
static kiln_status run_subst(const trsm_problem *p) {
  tri_launch tl;
  memset(&tl, 0, sizeof tl);
  kiln_status st =
      get_kernel("trsm_subst", "A,Bin,alpha,batch0", "B", &tl.kernel);
  kiln_array *alpha = NULL;
  tri_chunks c = {0, NULL};
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, p->a->dtype, p->alpha, &alpha);
  if (st == KILN_OK)
    st = chunks_make(p->s, p->batch, &c);
  if (st == KILN_OK) {
    tl.in[0] = p->a;
    tl.in[1] = p->b;
    tl.in[2] = alpha;
    tl.num_in = 4;
    tl.into[0] = p->b;
    tl.num_out = 1;
    kiln__targ_dtype(&tl.t[0], "T", p->a->dtype);
    kiln__targ_bool(&tl.t[1], "UPPER", p->upper);
    kiln__targ_bool(&tl.t[2], "TRANS", p->trans);
    kiln__targ_bool(&tl.t[3], "UNIT", p->unit);
    tl.num_t = 4;
    tl.gx = (uint32_t)p->k;
    tl.gz = 1;
    tl.tx = p->k >= 64 ? 64 : (uint32_t)ceil_div(p->k, 32) * 32;
    st = launch_batched(p->s, &tl, p->batch, &c);
  }
  chunks_free(&c);
  kiln__array_destroy(alpha);
  return st;
}

/* The workspace and scalars of the blocked paths. */
typedef struct blocked_ws {
  int64_t steps;
  kiln_array *w;    /* a_batch x steps x NB x NB inverses */
  kiln_array *iota; /* int32 0 .. steps-1, viewed as each step's index */
  kiln_array *alpha, *one;
  tri_chunks a_chunks, b_chunks;
} blocked_ws;

static void ws_free(blocked_ws *ws) {
  kiln__array_destroy(ws->w);
  kiln__array_destroy(ws->iota);
  kiln__array_destroy(ws->alpha);
  kiln__array_destroy(ws->one);
  chunks_free(&ws->a_chunks);
  chunks_free(&ws->b_chunks);
}

/* The 0-d view of step j's index. */
static kiln_status step_scalar(const blocked_ws *ws, int64_t j,
                               kiln_array **out) {
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(ws->iota, 0, NULL, NULL, j, out);
  kiln__api_enter(api);
  return st;
}

static kiln_status ws_make(const trsm_problem *p, blocked_ws *ws) {
  memset(ws, 0, sizeof *ws);
  ws->steps = ceil_div(p->n, p->nb);
  int64_t wshape[4] = {p->a_batch, ws->steps, p->nb, p->nb};
  kiln_status st =
      kiln__array_create(p->s->device, p->a->dtype, 4, wshape, &ws->w);
  if (st == KILN_OK)
    st = kiln__array_create(p->s->device, KILN_INT32, 1, &ws->steps, &ws->iota);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, p->a->dtype, p->alpha, &ws->alpha);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, p->a->dtype, 1.0, &ws->one);
  if (st == KILN_OK)
    st = chunks_make(p->s, p->a_batch, &ws->a_chunks);
  if (st == KILN_OK)
    st = chunks_make(p->s, p->batch, &ws->b_chunks);
  kiln_kernel *k = NULL;
  if (st == KILN_OK)
    st = get_kernel("tri_iota", "", "steps", &k);
  if (st == KILN_OK) {
    kiln_output_spec spec;
    kiln__linalg_out_spec(&spec, ws->iota);
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->s);
    L.outputs = &spec;
    L.num_outputs = 1;
    L.grid[0] = (uint32_t)ws->steps;
    L.threadgroup[0] = 64;
    st = kiln__kernel_launch_into(k, &L, &ws->iota);
  }
  if (st != KILN_OK)
    ws_free(ws);
  return st;
}

static void blocked_targs(const trsm_problem *p, kiln_template_arg *t) {
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "NB", p->nb);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln__targ_bool(&t[3], "TRANS", p->trans);
}

/* Inverts every diagonal block of M into ws->w. */
static kiln_status run_diag_inv(const trsm_problem *p, blocked_ws *ws) {
  tri_launch tl;
  memset(&tl, 0, sizeof tl);
  kiln_status st = get_kernel("trsm_diag_inv", "A,batch0", "W", &tl.kernel);
  if (st != KILN_OK)
    return st;
  tl.in[0] = p->a;
  tl.num_in = 2;
  tl.into[0] = ws->w;
  tl.num_out = 1;
  blocked_targs(p, tl.t);
  kiln__targ_bool(&tl.t[4], "UNIT", p->unit);
  tl.num_t = 5;
  tl.gx = (uint32_t)(TRI_THREADS * ws->steps);
  tl.gz = 1;
  tl.tx = TRI_THREADS;
  return launch_batched(p->s, &tl, p->a_batch, &ws->a_chunks);
}

/* Diagonal blocks per step of path 2 (rows per step: SUB * NB), fewer
 * when the matrix has fewer blocks (so V is never larger than needed). */
static int fused_sub(const trsm_problem *p) {
  int sub = p->a->dtype == KILN_FLOAT64 ? TRI_SUB_F64 : TRI_SUB_F32;
  int64_t blocks = ceil_div(p->n, p->nb);
  return blocks < sub ? (int)blocks : sub;
}

/* Path 2's arrays: V (a_batch x steps x S x S, the inverted diagonal
 * blocks of the steps), R (batch x S x k, the next step's updated rows),
 * XS (batch x 2 x S x k, a contiguous copy of the last two steps'
 * solutions) and F (trsm_step's flags, batch x column tiles x S / 16),
 * zeroed here (tri_zero). On failure the caller destroys what was made. */
static kiln_status fused_arrays(const trsm_problem *p, int64_t rows,
                                kiln_array *out[4]) {
  int64_t vshape[4] = {p->a_batch, ceil_div(p->n, rows), rows, rows};
  int64_t rshape[3] = {p->batch, rows, p->k};
  int64_t xshape[4] = {p->batch, 2, rows, p->k};
  int64_t flen = p->batch * ceil_div(p->k, TRI_KT_STEP) * (rows / 16);
  kiln_device *dev = p->s->device;
  kiln_kernel *z = NULL;
  kiln_status st = kiln__array_create(dev, p->a->dtype, 4, vshape, &out[0]);
  if (st == KILN_OK)
    st = kiln__array_create(dev, p->a->dtype, 3, rshape, &out[1]);
  if (st == KILN_OK)
    st = kiln__array_create(dev, p->a->dtype, 4, xshape, &out[2]);
  if (st == KILN_OK)
    st = kiln__array_create(dev, KILN_INT32, 1, &flen, &out[3]);
  if (st == KILN_OK)
    st = get_kernel("tri_zero", "", "Z", &z);
  if (st == KILN_OK) {
    kiln_output_spec spec;
    kiln__linalg_out_spec(&spec, out[3]);
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->s);
    L.outputs = &spec;
    L.num_outputs = 1;
    L.grid[0] = (uint32_t)flen;
    L.threadgroup[0] = 256;
    st = kiln__kernel_launch_into(z, &L, &out[3]);
  }
  return st;
}

/* Inverts every step's S x S diagonal block into v (trsm_stepinv, one
 * launch for all steps of all matrices). */
static kiln_status run_stepinv(const trsm_problem *p, blocked_ws *ws, int sub,
                               kiln_array *v) {
  tri_launch tl;
  memset(&tl, 0, sizeof tl);
  kiln_status st = get_kernel("trsm_stepinv", "A,W,batch0", "V", &tl.kernel);
  if (st != KILN_OK)
    return st;
  tl.in[0] = p->a;
  tl.in[1] = ws->w;
  tl.num_in = 3;
  tl.into[0] = v;
  tl.num_out = 1;
  blocked_targs(p, tl.t);
  kiln__targ_int(&tl.t[4], "SUB", sub);
  kiln__targ_int(&tl.t[5], "KT", TRI_KT_INV);
  tl.num_t = 6;
  tl.gx = (uint32_t)(TRI_THREADS * sub * p->nb / TRI_KT_INV);
  tl.gz = (uint32_t)v->shape[1];
  tl.tx = TRI_THREADS;
  return launch_batched(p->s, &tl, p->a_batch, &ws->a_chunks);
}

/* Chunks of TRI_Y_CHUNK batch entries times column tiles: trsm_step's
 * grid.z, which must stay within CUDA's limit too. */
static int64_t fused_z(const trsm_problem *p) {
  return ceil_div(p->batch, TRI_Y_CHUNK) * ceil_div(p->k, TRI_KT_STEP);
}

/* Path 2 (few right-hand sides): the steps' diagonal blocks inverted up
 * front (trsm_stepinv), then one trsm_step launch a step: launch j
 * applies step j - 1's solution to the rows after it and solves step j's
 * rows (launch 0 scales B by alpha and solves step 0's). The launch's
 * index and batch entries reach the kernel through its grid (see the
 * .metal), so only alpha and 1 are 0-d inputs. */
static kiln_status run_fused(const trsm_problem *p, blocked_ws *ws) {
  int sub = fused_sub(p);
  int64_t rows = (int64_t)sub * p->nb; /* rows per step */
  int64_t steps = ceil_div(p->n, rows);
  kiln_array *arr[4] = {NULL, NULL, NULL, NULL}; /* V, R, XS, F */
  kiln_kernel *k = NULL;
  kiln_status st = get_kernel("trsm_step", "A,V,Bin,scale", "B,R,XS,F", &k);
  if (st == KILN_OK)
    st = fused_arrays(p, rows, arr);
  if (st == KILN_OK)
    st = run_stepinv(p, ws, sub, arr[0]);
  kiln_array *in[4] = {p->a, arr[0], p->b, NULL};
  kiln_array *into[4] = {p->b, arr[1], arr[2], arr[3]};
  kiln_output_spec spec[4];
  /* (only once the scratch exists: after a failure above its entries
   * are NULL) */
  for (int i = 0; st == KILN_OK && i < 4; i++)
    kiln__linalg_out_spec(&spec[i], into[i]);
  kiln_template_arg t[5];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "S", rows);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln__targ_bool(&t[3], "TRANS", p->trans);
  kiln__targ_bool(&t[4], "ABATCH", p->a->ndim > 2);
  for (int64_t j = 0; st == KILN_OK && j < steps; j++) {
    /* every row from step j's on: the owners of step j, then the band */
    int64_t groups = ceil_div(p->n - j * rows, TRI_BAND_RB);
    in[3] = j == 0 ? ws->alpha : ws->one;
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->s);
    L.inputs = in;
    L.num_inputs = 4;
    L.outputs = spec;
    L.num_outputs = 4;
    L.template_args = t;
    L.num_template_args = 5;
    L.grid[0] = (uint32_t)(TRI_BAND_THREADS * groups);
    L.grid[1] = (uint32_t)(p->batch < TRI_Y_CHUNK ? p->batch : TRI_Y_CHUNK);
    L.grid[2] = (uint32_t)fused_z(p);
    L.threadgroup[0] = TRI_BAND_THREADS;
    st = kiln__kernel_launch_into(k, &L, into);
  }
  for (int i = 0; i < 4; i++)
    kiln__array_destroy(arr[i]);
  return st;
}

/*
 * The update of GEMM step j: B[rest] = beta B[rest] - op(A)[rest, blk]
 * X_blk over the columns [c0, c0 + cols), in B's real row order: for a
 * forward solve the block is rows [e0, e1) and the rest follows it; for a
 * reversed one the block is rows [n - e1, n - e0) and the rest precedes.
 */
static kiln_status gemm_update(const trsm_problem *p, int64_t e0, int64_t e1,
                               double beta, int64_t c0, int64_t cols) {
  bool rev = p->upper != p->trans;
  int64_t n = p->n, nb = e1 - e0, nr = n - e1;
  int64_t r0 = rev ? n - e1 : e0; /* the block's first real row */
  int64_t t0 = rev ? 0 : e1;      /* the rest's first real row */
  kiln_array *ma = NULL, *xb = NULL, *rest = NULL;
  /* op(A)[rest, blk] is A[rest, blk], or A[blk, rest]^T */
  kiln_status st = p->trans ? kiln__linalg_block(p->a, r0, t0, nb, nr, &ma)
                            : kiln__linalg_block(p->a, t0, r0, nr, nb, &ma);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->b, r0, c0, nb, cols, &xb);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->b, t0, c0, nr, cols, &rest);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(p->s, p->trans, false, -1.0, ma, xb, beta, rest);
  kiln__array_destroy(ma);
  kiln__array_destroy(xb);
  kiln__array_destroy(rest);
  return st;
}

/* GEMM steps (path 3): per block, trsm_apply then the GEMM update. */
static kiln_status run_gemm_steps(const trsm_problem *p, blocked_ws *ws) {
  kiln_kernel *k = NULL;
  kiln_status st = get_kernel("trsm_apply", "W,Bin,scale,step,batch0", "B", &k);
  int kt = apply_cols(p->a->dtype);
  bool rev = p->upper != p->trans;
  for (int64_t j = 0; st == KILN_OK && j < ws->steps; j++) {
    int64_t e0 = j * p->nb, e1 = e0 + p->nb < p->n ? e0 + p->nb : p->n;
    /* The identity's solve: the columns that can be non-zero so far. */
    int64_t c0 = 0, cols = p->k;
    if (p->identity) {
      c0 = rev ? p->n - e1 : 0;
      cols = rev ? p->n - c0 : e1;
    }
    kiln_array *step = NULL, *bv = NULL;
    st = step_scalar(ws, j, &step);
    if (st == KILN_OK)
      st = kiln__linalg_block(p->b, 0, c0, p->n, cols, &bv);
    if (st == KILN_OK) {
      tri_launch tl;
      memset(&tl, 0, sizeof tl);
      tl.kernel = k;
      tl.in[0] = ws->w;
      tl.in[1] = bv;
      tl.in[2] = j == 0 ? ws->alpha : ws->one;
      tl.in[3] = step;
      tl.num_in = 5;
      tl.into[0] = bv;
      tl.num_out = 1;
      blocked_targs(p, tl.t);
      kiln__targ_int(&tl.t[4], "KT", kt);
      kiln__targ_bool(&tl.t[5], "ABATCH", p->a->ndim > 2);
      tl.num_t = 6;
      tl.gx = (uint32_t)(TRI_THREADS * ceil_div(cols, kt));
      tl.gz = 1;
      tl.tx = TRI_THREADS;
      st = launch_batched(p->s, &tl, p->batch, &ws->b_chunks);
    }
    if (st == KILN_OK && e1 < p->n)
      st = gemm_update(p, e0, e1, j == 0 ? p->alpha : 1.0, c0, cols);
    kiln__array_destroy(step);
    kiln__array_destroy(bv);
  }
  return st;
}

static kiln_status run_blocked(const trsm_problem *p, int path) {
  blocked_ws ws;
  kiln_status st = ws_make(p, &ws);
  if (st != KILN_OK)
    return st;
  st = run_diag_inv(p, &ws);
  if (st == KILN_OK)
    st = path == TRI_PATH_FUSED ? run_fused(p, &ws) : run_gemm_steps(p, &ws);
  ws_free(&ws);
  return st;
}

/* The solve on a checked problem through `path` (0: auto). */
static kiln_status trsm_path(trsm_problem *p, int path) {
  if (p->n == 0 || p->k == 0 || p->batch == 0)
    return KILN_OK;
  if (path == TRI_PATH_AUTO)
    path = p->k <= TRI_FUSED_MAX_K && !p->identity && fused_z(p) <= TRI_Y_CHUNK
               ? TRI_PATH_FUSED
               : TRI_PATH_GEMM;
  if (path == TRI_PATH_SUBST)
    return run_subst(p);
  if (path == TRI_PATH_FUSED && fused_z(p) > TRI_Y_CHUNK)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "B has %lld columns and %lld matrices; the fused "
                       "steps (path 2) take up to %lld column tiles of %d "
                       "times batch chunks of %d, path 3 any number.",
                       (long long)p->k, (long long)p->batch,
                       (long long)TRI_Y_CHUNK, TRI_KT_STEP, TRI_Y_CHUNK);
  return run_blocked(p, path);
}

static kiln_status trsm_checked(kiln_stream *s, kiln_array *a, bool upper,
                                bool trans, bool unit, double alpha,
                                kiln_array *b, int path, bool identity) {
  trsm_problem p;
  memset(&p, 0, sizeof p);
  p.s = s;
  p.a = a;
  p.b = b;
  p.upper = upper;
  p.trans = trans;
  p.unit = unit;
  p.alpha = alpha;
  p.identity = identity;
  kiln_status st = check_trsm(&p);
  if (st == KILN_OK)
    st = trsm_path(&p, path);
  return st;
}

/* See linalg.h. */
kiln_status kiln__trsm(kiln_stream *s, kiln_array *a, bool upper, bool trans,
                       bool unit, double alpha, kiln_array *b) {
  if (s == NULL || a == NULL || b == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kiln__trsm: stream, A or B is NULL.");
  return trsm_checked(s, a, upper, trans, unit, alpha, b, TRI_PATH_AUTO, false);
}

/* ---- the public calls ------------------------------------------------ */

/* What the public calls share: the checked operands, the result, info. */
typedef struct tri_call {
  kiln_array *a, *b; /* b: NULL for the inverses */
  const char *a_name;
  kiln_linalg_opts opts;
  kiln_stream *stream;
  int64_t n, k, batch, a_batch;
  int out_ndim;
  int64_t out_shape[KILN_MAX_NDIM];
  kiln_array *x;    /* the result being built */
  kiln_array *info; /* int32, one per matrix of A */
} tri_call;

static kiln_status check_dtype(const kiln_array *x, const char *name) {
  if (x->dtype != KILN_FLOAT32 && x->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "%s is %s; only float32 and float64 are supported.",
                       name, kiln_dtype_name(x->dtype));
  return KILN_OK;
}

/* Checks A (square, dtype, batch with B), B (rows, dtype), the path and
 * the devices, and works out the result's shape. */
static kiln_status check_call(tri_call *c) {
  kiln_array *ops[2] = {c->a, c->b};
  const char *names[2] = {c->a_name, "B"};
  int count = c->b != NULL ? 2 : 1;
  for (int i = 0; i < count; i++) {
    kiln_status st = check_dtype(ops[i], names[i]);
    if (st != KILN_OK)
      return st;
  }
  if (c->b != NULL && c->b->dtype != c->a->dtype)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %s but B is %s; they must have one dtype.",
                       kiln_dtype_name(c->a->dtype),
                       kiln_dtype_name(c->b->dtype));
  kiln_status st = kiln__linalg_batch(ops, count, names, &c->batch);
  if (st != KILN_OK)
    return st;
  kiln_array *a = c->a;
  int64_t rows = a->shape[a->ndim - 2], cols = a->shape[a->ndim - 1];
  if (rows != cols)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "%s is %lld x %lld; it must be square.", c->a_name,
                       (long long)rows, (long long)cols);
  c->n = rows;
  c->k = rows;
  if (c->b != NULL) {
    int64_t brows = c->b->shape[c->b->ndim - 2];
    c->k = c->b->shape[c->b->ndim - 1];
    if (brows != c->n)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "B is %lld x %lld but A is %lld x %lld; B must have "
                         "as many rows as A.",
                         (long long)brows, (long long)c->k, (long long)c->n,
                         (long long)c->n);
  }
  if (c->n > TRI_MAX_N)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "%s is %lld x %lld; n up to %d is supported.", c->a_name,
                       (long long)c->n, (long long)c->n, TRI_MAX_N);
  if (c->opts.path < TRI_PATH_AUTO || c->opts.path > TRI_PATH_GEMM)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; triangular solves know 0 (auto), "
                       "1 (substitution), 2 (blocked, fused steps) and 3 "
                       "(blocked, GEMM steps).",
                       c->opts.path);
  /* the result: the batch dimensions of whichever operand has them */
  kiln_array *lead = count == 2 && c->b->ndim > a->ndim ? c->b : a;
  c->out_ndim = lead->ndim;
  memcpy(c->out_shape, lead->shape, (size_t)lead->ndim * sizeof(int64_t));
  c->out_shape[c->out_ndim - 2] = c->n;
  c->out_shape[c->out_ndim - 1] = c->k;
  c->a_batch = batch_of(a);
  return kiln__linalg_stream(&c->opts, ops, count, &c->stream);
}

/* Enqueues the zero-diagonal check of A into c->info. */
static kiln_status launch_diag_check(tri_call *c) {
  int64_t len = c->a_batch;
  kiln_status st =
      kiln__array_create(c->stream->device, KILN_INT32, 1, &len, &c->info);
  tri_launch tl;
  memset(&tl, 0, sizeof tl);
  if (st == KILN_OK)
    st = get_kernel("tri_diag_check", "A,batch0", "info", &tl.kernel);
  tri_chunks ch = {0, NULL};
  if (st == KILN_OK)
    st = chunks_make(c->stream, c->a_batch, &ch);
  if (st != KILN_OK)
    return st;
  tl.in[0] = c->a;
  tl.num_in = 2;
  tl.into[0] = c->info;
  tl.num_out = 1;
  kiln__targ_dtype(&tl.t[0], "T", c->a->dtype);
  tl.num_t = 1;
  /* threads for 8 diagonal elements each (one load round up to n =
   * 8192), a whole number of warps, at most 1024 */
  int64_t threads = ceil_div(ceil_div(c->n, 8), 32) * 32;
  tl.gx = (uint32_t)(threads < 32 ? 32 : threads > 1024 ? 1024 : threads);
  tl.gz = 1;
  tl.tx = tl.gx;
  st = launch_batched(c->stream, &tl, c->a_batch, &ch);
  chunks_free(&ch);
  return st;
}

/* Waits for the work by reading info back; a zero on the diagonal of any
 * matrix fails the call, naming the first such matrix and element. */
static kiln_status check_info(const tri_call *c, const char *what) {
  int64_t first, failed;
  int32_t index;
  kiln_status st =
      kiln__linalg_read_info(c->info, c->a_batch, &first, &index, &failed);
  if (st != KILN_OK || first < 0)
    return st;
  char which[128];
  kiln__linalg_which(which, sizeof which, c->a_name, c->a, first, failed);
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "diagonal element %d (from 1) of %s is exactly zero, so "
                     "%s is singular; %s.",
                     (int)index, which, c->a_name, what);
}

/* The shared front of the public calls: NULLs, options, checks, the
 * result array; *empty says whether there is nothing to compute. */
static kiln_status begin_call(tri_call *c, kiln_array *a, kiln_array *b,
                              const char *a_name, const kiln_linalg_opts *opts,
                              bool *empty) {
  memset(c, 0, sizeof *c);
  c->a = a;
  c->b = b;
  c->a_name = a_name;
  kiln_status st = kiln__linalg_opts(opts, &c->opts);
  if (st == KILN_OK)
    st = check_call(c);
  if (st == KILN_OK)
    st = kiln__array_create(c->stream->device, a->dtype, c->out_ndim,
                            c->out_shape, &c->x);
  *empty = c->n == 0 || c->k == 0 || c->batch == 0;
  return st;
}

/* The end of a public call: on success the result goes to *out, else it
 * is destroyed; info always. */
static kiln_status end_call(tri_call *c, kiln_status st, kiln_array **out) {
  kiln__array_destroy(c->info);
  if (st != KILN_OK) {
    kiln__array_destroy(c->x);
    return st;
  }
  *out = c->x;
  return KILN_OK;
}

/* The work of kiln_solve_triangular on a begun call. */
typedef struct solve_job {
  tri_call *c;
  bool upper, trans, unit;
} solve_job;

static kiln_status solve_fn(void *user) {
  solve_job *j = user;
  tri_call *c = j->c;
  kiln_status st = j->unit ? KILN_OK : launch_diag_check(c);
  if (st == KILN_OK)
    st = launch_elementwise(c->stream, "tri_copy", "Src,Dstin,batch0", c->b,
                            c->x);
  if (st == KILN_OK)
    st = trsm_checked(c->stream, c->a, j->upper, j->trans, j->unit, 1.0, c->x,
                      c->opts.path, false);
  if (st == KILN_OK && !j->unit)
    st = check_info(c, "the system has no unique solution");
  return st;
}

static kiln_status solve_triangular(kiln_array *a, kiln_array *b, bool upper,
                                    bool trans, bool unit,
                                    const kiln_linalg_opts *opts,
                                    kiln_array **x) {
  if (a == NULL || b == NULL || x == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL   ? "A"
                       : b == NULL ? "B"
                                   : "x");
  tri_call c;
  bool empty = false;
  kiln_status st = begin_call(&c, a, b, "A", opts, &empty);
  if (st == KILN_OK && !empty) {
    /* With a scalar pool in use, the launches' scalars (batch starts,
     * alpha, 1) are views of four values filled up front, so no fill
     * sits between two kernels of the solve (each such fill is an edge
     * programmatic dependent launch cannot overlap). */
    solve_job j = {&c, upper, trans, unit};
    st = kiln__linalg_pooled(c.stream, a->dtype, solve_fn, &j);
  }
  return end_call(&c, st, x);
}

/* F^-1 into c->x (the identity, solved against), with the zero-diagonal
 * check of F enqueued first. */
static kiln_status invert_into(tri_call *c, bool upper, bool unit) {
  kiln_status st = unit ? KILN_OK : launch_diag_check(c);
  if (st == KILN_OK)
    st = launch_elementwise(c->stream, "tri_eye", "Xin,batch0", NULL, c->x);
  if (st == KILN_OK) {
    /* The identity restriction needs the GEMM steps; the substitution
     * path writes only what it must too, and the fused one would scan
     * every column (it is refused for the inverses). */
    int path = c->opts.path == TRI_PATH_SUBST ? TRI_PATH_SUBST : TRI_PATH_GEMM;
    st = trsm_checked(c->stream, c->a, upper, false, unit, 1.0, c->x, path,
                      true);
  }
  return st;
}

static kiln_status tri_inv(kiln_array *a, bool upper, bool unit,
                           const kiln_linalg_opts *opts, kiln_array **out) {
  if (a == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : "out");
  tri_call c;
  bool empty = false;
  kiln_status st = begin_call(&c, a, NULL, "A", opts, &empty);
  if (st == KILN_OK && !empty && c.opts.path == TRI_PATH_FUSED)
    st = kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "opts->path 2 (fused steps) is for solves with few "
                     "right-hand sides; inverses take 0, 1 or 3.");
  if (st == KILN_OK && !empty)
    st = invert_into(&c, upper, unit);
  if (st == KILN_OK && !empty && !unit)
    st = check_info(&c, "it has no inverse");
  return end_call(&c, st, out);
}

/* A^-1 = F^-T F^-1 (lower F) or F^-1 F^-T (upper): F^-1 into c->x, one
 * GEMM into a second array, then its lower triangle mirrored onto the
 * upper one. c->x ends as the result (destroyed by end_call on failure). */
static kiln_status cholesky_inv_into(tri_call *c, bool upper) {
  kiln_array *result = NULL;
  kiln_status st = kiln__array_create(c->stream->device, c->a->dtype,
                                      c->out_ndim, c->out_shape, &result);
  if (st == KILN_OK)
    st = invert_into(c, upper, false);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(c->stream, !upper, upper, 1.0, c->x, c->x, 0.0,
                           result);
  if (st == KILN_OK)
    st =
        launch_elementwise(c->stream, "tri_mirror", "Xin,batch0", NULL, result);
  kiln__array_destroy(c->x);
  c->x = result;
  return st;
}

static kiln_status cholesky_inv(kiln_array *f, bool upper,
                                const kiln_linalg_opts *opts,
                                kiln_array **out) {
  if (f == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       f == NULL ? "F" : "out");
  tri_call c;
  bool empty = false;
  kiln_status st = begin_call(&c, f, NULL, "F", opts, &empty);
  if (st == KILN_OK && !empty && c.opts.path == TRI_PATH_FUSED)
    st = kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "opts->path 2 (fused steps) is for solves with few "
                     "right-hand sides; inverses take 0, 1 or 3.");
  if (st == KILN_OK && !empty)
    st = cholesky_inv_into(&c, upper);
  if (st == KILN_OK && !empty)
    st = check_info(&c, "it is not a Cholesky factor of a positive "
                        "definite matrix");
  return end_call(&c, st, out);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_solve_triangular(kiln_array *a, kiln_array *b, bool upper,
                                  bool trans, bool unit_diagonal,
                                  kiln_array **x) {
  KILN_API_ENTER();
  return solve_triangular(a, b, upper, trans, unit_diagonal, NULL, x);
}

/* Public: see kiln.h. */
kiln_status kiln_solve_triangular_ex(kiln_array *a, kiln_array *b, bool upper,
                                     bool trans, bool unit_diagonal,
                                     const kiln_linalg_opts *opts,
                                     kiln_array **x) {
  KILN_API_ENTER();
  return solve_triangular(a, b, upper, trans, unit_diagonal, opts, x);
}

/* Public: see kiln.h. */
kiln_status kiln_tri_inv(kiln_array *a, bool upper, bool unit_diagonal,
                         kiln_array **out) {
  KILN_API_ENTER();
  return tri_inv(a, upper, unit_diagonal, NULL, out);
}

/* Public: see kiln.h. */
kiln_status kiln_tri_inv_ex(kiln_array *a, bool upper, bool unit_diagonal,
                            const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  return tri_inv(a, upper, unit_diagonal, opts, out);
}

/* Public: see kiln.h. */
kiln_status kiln_cholesky_inv(kiln_array *f, bool upper, kiln_array **out) {
  KILN_API_ENTER();
  return cholesky_inv(f, upper, NULL, out);
}

/* Public: see kiln.h. */
kiln_status kiln_cholesky_inv_ex(kiln_array *f, bool upper,
                                 const kiln_linalg_opts *opts,
                                 kiln_array **out) {
  KILN_API_ENTER();
  return cholesky_inv(f, upper, opts, out);
}
