/*
 * QR factorization on any device: A = Q R, batched, float32 and float64,
 * reduced, complete or R only, with kiln's own kernels (kernels/qr.metal).
 *
 * Order of work, as in every linalg driver: check the arguments, create
 * the results (new contiguous arrays that nobody sees until success, so a
 * failure only has to destroy them), return early when there is nothing
 * to factor, pick a path and enqueue it. Nothing is read back: QR cannot
 * fail on valid input (a rank-deficient matrix just gets zeros on R's
 * diagonal), so the call stays asynchronous.
 *
 * Paths (kiln_linalg_opts.path for kiln_qr_ex):
 *   0  auto: small when m, n <= 128; else, when Q is not complete,
 *      CholeskyQR when m >= 4n and n <= 64, TSQR when m >= 2n and n fits
 *      it; blocked otherwise.
 *   1  small: one threadgroup per matrix, Householder QR (geqr2) with the
 *      matrix held in registers across the group, then Q by backward
 *      accumulation (org2r) in the same launch. Size classes 16, 32, 64
 *      and 128 so that small matrices use small groups and many share an
 *      SM. One launch for the whole batch.
 *   2  tall-skinny, TSQR (kiln__qr_tsqr): the rows are cut into blocks of
 *      256 (the same kernel factors every block of every matrix at once,
 *      writing each block's explicit Q into Q's rows and its n x n R into
 *      a stack); the stack is factored the same way until one block is
 *      left, whose R is the answer; on the way back each level's Q blocks
 *      are multiplied in place by their n x n piece of the level above's
 *      Q (qr_apply). About four passes over m x n in all (read A, write Q,
 *      read and write Q again); the stacks are 256/n times smaller at each
 *      level. R only skips every Q pass. TSQR is unconditionally stable:
 *      Q is orthogonal to working precision for any conditioning.
 *   3  blocked Householder with compact-WY updates (kiln__qr_blocked,
 *      src/linalg/qr_blocked.c): large and wide matrices, complete Q.
 *   4  tall-skinny, shifted CholeskyQR3 (kiln__qr_cholqr,
 *      src/linalg/cholqr.c): m >= n, n <= 64, reduced Q or R only. Three
 *      Gram/Cholesky passes that stream over the rows (seven passes over
 *      m x n in all: A read twice, the rows between passes stored in Q,
 *      or in a workspace for R only; two passes, five over m x n, for a
 *      matrix whose second Gram is near I), so it runs near memory speed;
 *      stable up to cond(A) ~ 1/u, but it cannot orthogonalize a
 *      numerically rank-deficient matrix, so TSQR follows it behind a
 *      per-matrix breakdown flag (cholqr_with_fallback) and redoes
 *      exactly the matrices where it broke down: the whole TSQR tree in
 *      one launch (qr_tree_g: the last group to finish a node's children
 *      factors the node) and the way back in another (qr_chain_g), so
 *      that a success pays two near-empty launches, not one per level.
 * Every path makes R's diagonal non-negative (flipping the signs of a row
 * of R and the matching column of Q), so the factorization of a full-rank
 * matrix is unique and results agree across paths and devices.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "linalg/cholqr.h"
#include "linalg/linalg.h"

#define QR_PATH_AUTO 0
#define QR_PATH_SMALL 1
#define QR_PATH_TSQR 2
#define QR_PATH_BLOCKED 3
#define QR_PATH_CHOLQR 4

/* The small path's capacity (rows and columns). */
#define QR_SMALL_MAX 128
/* TSQR's column capacity: a 256-row block of n columns must fit one
 * threadgroup's registers, which float64 manages up to 64 columns. */
#define QR_TSQR_NMAX_F32 128
#define QR_TSQR_NMAX_F64 64
/* Rows per qr_apply threadgroup (QR_APPLY_ROWS in kernels/qr.metal). */
#define QR_APPLY_ROWS 128
/* Threadgroups per launch: grid.x = threads * groups must fit 32 bits. */
#define QR_GROUP_CHUNK (1 << 20)
/* Threadgroups of the fallback's launches per compute unit: the kernels
 * walk their blocks in a loop, so a small grid covers any size, and when
 * nothing broke down a launch is a few flag reads per group rather than
 * thousands of groups that return at once. qr_tree_g's groups (up to 512
 * threads of ~128 registers) fill an SM's register file, so one a unit
 * is one wave: with two (two waves) its flag-only launch took 6.0 us of
 * a 0.30 ms QR of 100,000 x 64 (H200, Nsight); qr_chain_g's (128 threads)
 * fit several an SM. */
#define QR_TREE_GROUPS_PER_UNIT 1
#define QR_CHAIN_GROUPS_PER_UNIT 2
/* Batch entries per launch along grid.y (CUDA's limit). */
#define QR_Y_CHUNK 65535
/* TSQR levels: each divides the rows by at least 2. */
#define QR_MAX_LEVELS 64
/* Dimensions the kernels index with 32-bit ints (with room to round up). */
#define QR_DIM_MAX ((int64_t)1 << 30)

/*
 * A configuration of qr_small: a block of MMAX rows and NC columns held by
 * NC * SEGS threads, each owning MMAX / SEGS rows of one column. SEGS
 * trades the length of each thread's loops (and registers) against the
 * group's size.
 */
typedef struct qr_config {
  int mmax, nc, segs;
} qr_config;

/* The small path's class for matrices of up to `size` rows and columns
 * (and Q columns). 128 x 128 in float64 keeps 32 values per thread so
 * that 512 threads fit the register file. */
static qr_config small_config(kiln_dtype dt, int64_t size) {
  qr_config c = {128, 128, dt == KILN_FLOAT64 ? 4 : 8};
  if (size <= 16)
    c = (qr_config){16, 16, 4};
  else if (size <= 32)
    c = (qr_config){32, 32, 4};
  else if (size <= 64)
    c = (qr_config){64, 64, 4};
  return c;
}

/* TSQR's block configuration for n columns: blocks of 256 rows, so each
 * level shrinks the rows by 256 / n (at least 2). Beyond 64 columns a
 * thread holds 64 values (512 threads), since 1024 threads would leave
 * only 64 registers each for 32 values and the rest. */
static qr_config tsqr_config(int64_t n) {
  if (n <= 32)
    return (qr_config){256, 32, 8};
  if (n <= 64)
    return (qr_config){256, 64, 8};
  return (qr_config){256, 128, 4};
}

static int tsqr_nmax(kiln_dtype dt) {
  return dt == KILN_FLOAT64 ? QR_TSQR_NMAX_F64 : QR_TSQR_NMAX_F32;
}

/* Product of the leading (batch) dimensions. */
static int64_t batch_of(const kiln_array *a) {
  int64_t b = 1;
  for (int d = 0; d < a->ndim - 2; d++)
    b *= a->shape[d];
  return b;
}

/* ---- launches ------------------------------------------------------------ */

/*
 * Launches kernel k over `groups` threadgroups of `nt` threads, at most
 * QR_GROUP_CHUNK per launch (grid.x must fit 32 bits): L carries every
 * field but the inputs' g0 and the grid; in[g0_at] receives each chunk's
 * first group as a 0-d int32.
 */
static kiln_status launch_chunks(kiln_stream *s, kiln_kernel *k,
                                 kiln_launch *L, kiln_array **in, int g0_at,
                                 kiln_array **into, int64_t groups,
                                 uint32_t nt) {
  kiln_status st = KILN_OK;
  for (int64_t first = 0; st == KILN_OK && first < groups;
       first += QR_GROUP_CHUNK) {
    int64_t count = groups - first;
    if (count > QR_GROUP_CHUNK)
      count = QR_GROUP_CHUNK;
    kiln_array *g0 = NULL;
    st = kiln__linalg_scalar(s, KILN_INT32, (double)first, &g0);
    if (st != KILN_OK)
      break;
    in[g0_at] = g0;
    L->inputs = in;
    L->grid[0] = nt * (uint32_t)count;
    L->threadgroup[0] = nt;
    st = kiln__kernel_launch_into(k, L, into);
    kiln__array_destroy(g0);
    in[g0_at] = NULL;
  }
  return st;
}

/*
 * A flag-guarded kernel of the fallback (qr_tree_g, qr_tree_rg,
 * qr_chain_g: no g0) over at most `per_unit` groups a compute
 * unit of `nt` threads, one launch: each group walks its share of the
 * `groups` blocks itself.
 */
static kiln_status launch_flagged(kiln_stream *s, kiln_kernel *k,
                                  kiln_launch *L, kiln_array **into,
                                  int64_t groups, uint32_t nt, int per_unit) {
  int64_t cap = (int64_t)s->device->info.compute_units * per_unit;
  if (cap < 1)
    cap = 1;
  if (groups < 1)
    groups = 1;
  L->grid[0] = nt * (uint32_t)(groups < cap ? groups : cap);
  L->threadgroup[0] = nt;
  return kiln__kernel_launch_into(k, L, into);
}

/*
 * qr_small (or qr_small_r when q is NULL) over `groups` threadgroups: each
 * matrix of `a` (blocked: each block of cfg->mmax rows of each matrix),
 * into the contiguous q and r laid out as the kernel's comment says.
 */
static kiln_status launch_house(kiln_stream *s, const qr_config *cfg,
                                kiln_array *a, bool blocked, bool complete,
                                kiln_array *q, kiln_array *r,
                                int64_t groups) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel(
      "qr", q != NULL ? "qr_small" : "qr_small_r", "A,g0",
      q != NULL ? "Q,R" : "R", KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_template_arg t[6];
  kiln__targ_dtype(&t[0], "T", a->dtype);
  kiln__targ_int(&t[1], "MMAX", cfg->mmax);
  kiln__targ_int(&t[2], "NC", cfg->nc);
  kiln__targ_int(&t[3], "SEGS", cfg->segs);
  kiln__targ_bool(&t[4], "BLOCKED", blocked);
  kiln__targ_bool(&t[5], "COMPLETE", complete);
  kiln_output_spec spec[2];
  kiln_array *into[2];
  int nout = 0;
  if (q != NULL) {
    kiln__linalg_out_spec(&spec[nout], q);
    into[nout++] = q;
  }
  kiln__linalg_out_spec(&spec[nout], r);
  into[nout++] = r;
  kiln_launch L;
  kiln__linalg_launch_init(&L, s);
  kiln_array *in[2] = {a, NULL};
  L.num_inputs = 2;
  L.outputs = spec;
  L.num_outputs = nout;
  L.template_args = t;
  L.num_template_args = 6;
  uint32_t nt = (uint32_t)(cfg->nc * cfg->segs);
  if (st == KILN_OK)
    st = launch_chunks(s, k, &L, in, 1, into, groups, nt);
  return st;
}

/* x = x (block by block) @ the matching n x n pieces of `up` (the level
 * above's Q): TSQR's way back, in place (see qr_apply). */
static kiln_status launch_apply(kiln_stream *s, const qr_config *cfg,
                                kiln_array *x, kiln_array *up) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr", "qr_apply", "Xin,S,g0", "X",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", x->dtype);
  kiln__targ_int(&t[1], "NB", cfg->nc);
  kiln__targ_int(&t[2], "BR", cfg->mmax);
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, x);
  int64_t m = x->shape[x->ndim - 2];
  int64_t groups = batch_of(x) * ((m + QR_APPLY_ROWS - 1) / QR_APPLY_ROWS);
  kiln_launch L;
  kiln__linalg_launch_init(&L, s);
  kiln_array *in[3] = {x, up, NULL};
  L.num_inputs = 3;
  L.outputs = &spec;
  L.num_outputs = 1;
  L.template_args = t;
  L.num_template_args = 3;
  if (st == KILN_OK)
    st = launch_chunks(s, k, &L, in, 2, &x, groups, QR_APPLY_ROWS);
  return st;
}

/* Q = I for every matrix of q (batch x m x m): zeros, then the diagonal
 * (qr_eye, a thread per diagonal element). */
static kiln_status launch_eye(kiln_stream *s, kiln_array *q) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__array_fill(q, 0.0, s);
  if (st == KILN_OK)
    st = kiln__library_kernel("qr", "qr_eye", "Qin,g0", "Q",
                              KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_template_arg t[1];
  kiln__targ_dtype(&t[0], "T", q->dtype);
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, q);
  int64_t m = q->shape[q->ndim - 1], batch = batch_of(q);
  for (int64_t first = 0; st == KILN_OK && first < batch;
       first += QR_Y_CHUNK) {
    int64_t count = batch - first;
    if (count > QR_Y_CHUNK)
      count = QR_Y_CHUNK;
    kiln_array *g0 = NULL;
    st = kiln__linalg_scalar(s, KILN_INT32, (double)first, &g0);
    if (st != KILN_OK)
      break;
    kiln_launch L;
    kiln__linalg_launch_init(&L, s);
    kiln_array *in[2] = {q, g0};
    L.inputs = in;
    L.num_inputs = 2;
    L.outputs = &spec;
    L.num_outputs = 1;
    L.template_args = t;
    L.num_template_args = 1;
    L.grid[0] = (uint32_t)m;
    L.grid[1] = (uint32_t)count;
    L.threadgroup[0] = m < 256 ? (uint32_t)m : 256u;
    st = kiln__kernel_launch_into(k, &L, &q);
    kiln__array_destroy(g0);
  }
  return st;
}

/* ---- TSQR ---------------------------------------------------------------- */

/* A new contiguous batch x rows x n work array of a's dtype. */
static kiln_status tsqr_work(kiln_stream *s, const kiln_array *a,
                             int64_t batch, int64_t rows, int64_t n,
                             kiln_array **out) {
  int64_t shape[3] = {batch, rows, n};
  return kiln__array_create(s->device, a->dtype, 3, shape, out);
}

/*
 * TSQR's way up: level l factors its input (A, then the stack of the level
 * below's R's) in blocks of cfg->mmax rows into Q_l (qs[l]; q itself at
 * level 0, NULL for R only) and a new stack of R's, until the level with
 * one block, which writes r. *levels receives the number of levels run.
 * A stack is released as soon as the kernel reading it is enqueued
 * (buffers live until the stream is done with them).
 */
static kiln_status tsqr_up(kiln_stream *s, const qr_config *cfg,
                           kiln_array *a, kiln_array *q, kiln_array *r,
                           kiln_array **qs, int *levels) {
  int64_t rows = a->shape[a->ndim - 2], n = a->shape[a->ndim - 1];
  int64_t batch = batch_of(a);
  kiln_array *cur = a;
  kiln_status st = KILN_OK;
  for (int l = 0; st == KILN_OK; l++) {
    if (l == QR_MAX_LEVELS) {
      st = kiln__error(KILN_ERROR_INTERNAL, "TSQR ran out of levels.");
      break;
    }
    int64_t blocks = (rows + cfg->mmax - 1) / cfg->mmax;
    kiln_array *rout = r;
    if (blocks > 1)
      st = tsqr_work(s, a, batch, blocks * n, n, &rout);
    if (st == KILN_OK && q != NULL && l == 0)
      qs[0] = q;
    else if (st == KILN_OK && q != NULL)
      st = tsqr_work(s, a, batch, rows, n, &qs[l]);
    if (st == KILN_OK)
      st = launch_house(s, cfg, cur, true, false, q != NULL ? qs[l] : NULL,
                        rout, batch * blocks);
    *levels = l + 1;
    if (cur != a)
      kiln__array_destroy(cur);
    cur = a;
    if (st != KILN_OK && rout != r)
      kiln__array_destroy(rout);
    if (st != KILN_OK || blocks == 1)
      break;
    cur = rout;
    rows = blocks * n;
  }
  return st;
}

/*
 * TSQR: the way up (tsqr_up), then the way back: from the top down, each
 * Q_l's blocks are multiplied in place by their n x n pieces of Q_{l+1},
 * which leaves Q_0 = q holding the Q of A.
 */
static kiln_status tsqr_run(kiln_stream *s, kiln_array *a, kiln_array *q,
                            kiln_array *r) {
  int64_t m = a->shape[a->ndim - 2], n = a->shape[a->ndim - 1];
  if (m < n || n > tsqr_nmax(a->dtype))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld; TSQR takes m >= n and n up to %d "
                       "in %s.",
                       (long long)m, (long long)n, tsqr_nmax(a->dtype),
                       kiln_dtype_name(a->dtype));
  if (batch_of(a) == 0 || n == 0)
    return KILN_OK;
  qr_config cfg = tsqr_config(n);
  kiln_array *qs[QR_MAX_LEVELS];
  memset(qs, 0, sizeof qs);
  int levels = 0;
  kiln_status st = tsqr_up(s, &cfg, a, q, r, qs, &levels);
  for (int l = levels - 2; q != NULL && st == KILN_OK && l >= 0; l--)
    st = launch_apply(s, &cfg, qs[l], qs[l + 1]);
  for (int l = 1; l < levels; l++)
    kiln__array_destroy(qs[l]);
  return st;
}

/* See linalg.h. */
kiln_status kiln__qr_tsqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                          kiln_array *r) {
  return tsqr_run(s, a, q, r);
}

/* ---- CholeskyQR and its fallback ----------------------------------------- */

/* The fallback's work for m x n (n <= 64): the tree's one launch and its
 * way back, and what they share. */
typedef struct qr_fallback {
  kiln_stream *s;
  kiln_array *a, *q, *r;
  qr_config cfg;
  int64_t batch, m, n, leaves;
  kiln_array *flag;           /* int32 per matrix, from CholeskyQR */
  kiln_array *stack, *qstack; /* batch x srows x n: R's, and their Q's */
  kiln_array *cnt;            /* int32 batch x counters, zeroed */
} qr_fallback;

/* The tree's sizes (qr_tree in kernels/qr.metal): rows of the stacked R's
 * of every level above the leaves, and its counters (one per node above
 * the leaves); both at least 1, so that no array is empty. */
static void fallback_sizes(const qr_fallback *f, int64_t *srows,
                           int64_t *counters) {
  int64_t nodes = f->leaves, fan = f->cfg.mmax / f->n, rows = 0, c = 0;
  while (nodes > 1) {
    rows += nodes * f->n;
    nodes = (nodes + fan - 1) / fan;
    c += nodes;
  }
  *srows = rows > 0 ? rows : 1;
  *counters = c > 0 ? c : 1;
}

/* The flag, and for a tree of more than one leaf its stacks and zeroed
 * counters (the zeroing is the only operation a success pays besides the
 * two launches). */
static kiln_status fallback_init(qr_fallback *f) {
  int64_t srows = 0, counters = 0;
  fallback_sizes(f, &srows, &counters);
  int64_t sf[1] = {f->batch}, sc[2] = {f->batch, counters};
  int64_t ss[3] = {f->batch, srows, f->n};
  kiln_device *dev = f->s->device;
  kiln_status st = kiln__array_create(dev, KILN_INT32, 1, sf, &f->flag);
  if (st == KILN_OK)
    st = kiln__array_create(dev, KILN_INT32, 2, sc, &f->cnt);
  if (st == KILN_OK)
    st = kiln__array_create(dev, f->a->dtype, 3, ss, &f->stack);
  if (st == KILN_OK && f->q != NULL)
    st = kiln__array_create(dev, f->a->dtype, 3, ss, &f->qstack);
  /* Zeroed here, before CholeskyQR's kernels rather than between them
   * and the tree: a fill between two kernels is an edge that programmatic
   * dependent launch (cuda_backend.c) cannot overlap. */
  if (st == KILN_OK && f->leaves > 1)
    st = kiln__array_fill(f->cnt, 0.0, f->s);
  return st;
}

static void fallback_free(qr_fallback *f) {
  kiln_array *all[4] = {f->flag, f->cnt, f->stack, f->qstack};
  for (int i = 0; i < 4; i++)
    kiln__array_destroy(all[i]);
}

/* qr_tree_g (qr_tree_rg for R only): the whole TSQR tree of every flagged
 * matrix in one launch (its counters zeroed by fallback_init). */
static kiln_status fallback_tree(qr_fallback *f) {
  bool want_q = f->q != NULL;
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel(
      "qr", want_q ? "qr_tree_g" : "qr_tree_rg", "A,flag,Ssh,Csh",
      want_q ? "Q,R,S,QS,Cnt" : "R,S,Cnt", KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[4];
  kiln__targ_dtype(&t[0], "T", f->a->dtype);
  kiln__targ_int(&t[1], "MMAX", f->cfg.mmax);
  kiln__targ_int(&t[2], "NC", f->cfg.nc);
  kiln__targ_int(&t[3], "SEGS", f->cfg.segs);
  kiln_array *with_q[5] = {f->q, f->r, f->stack, f->qstack, f->cnt};
  kiln_array *r_only[3] = {f->r, f->stack, f->cnt};
  kiln_array **into = want_q ? with_q : r_only;
  int nout = want_q ? 5 : 3;
  kiln_output_spec spec[5];
  for (int i = 0; i < nout; i++)
    kiln__linalg_out_spec(&spec[i], into[i]);
  kiln_array *in[4] = {f->a, f->flag, f->stack, f->cnt};
  kiln_launch L;
  kiln__linalg_launch_init(&L, f->s);
  L.inputs = in;
  L.num_inputs = 4;
  L.outputs = spec;
  L.num_outputs = nout;
  L.template_args = t;
  L.num_template_args = 4;
  return launch_flagged(f->s, k, &L, into, f->batch * f->leaves,
                        (uint32_t)(f->cfg.nc * f->cfg.segs),
                        QR_TREE_GROUPS_PER_UNIT);
}

/* qr_chain_g: the tree's way back into q, for the flagged matrices. */
static kiln_status fallback_chain(qr_fallback *f) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr", "qr_chain_g", "Xin,QS,flag",
                                        "X", KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", f->a->dtype);
  kiln__targ_int(&t[1], "NB", f->cfg.nc);
  kiln__targ_int(&t[2], "MMAX", f->cfg.mmax);
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, f->q);
  kiln_array *in[3] = {f->q, f->qstack, f->flag};
  kiln_launch L;
  kiln__linalg_launch_init(&L, f->s);
  L.inputs = in;
  L.num_inputs = 3;
  L.outputs = &spec;
  L.num_outputs = 1;
  L.template_args = t;
  L.num_template_args = 3;
  int64_t groups = f->batch * ((f->m + QR_APPLY_ROWS - 1) / QR_APPLY_ROWS);
  return launch_flagged(f->s, k, &L, &f->q, groups, QR_APPLY_ROWS,
                        QR_CHAIN_GROUPS_PER_UNIT);
}

/*
 * CholeskyQR3 (src/linalg/cholqr.c), then TSQR behind its per-matrix
 * breakdown flag, without a host round trip: the whole TSQR tree is one
 * launch (qr_tree_g: the group that completes a node's children factors
 * it, so no group ever waits for another, which is safe on the CPU
 * backend too) and its way back another (qr_chain_g), both on a small
 * fixed grid (launch_flagged) whose groups skip the matrices whose flag
 * is 0. A success costs the counters' zeroing (a memset of a few bytes)
 * and the two near-empty launches (the tree alone for R only, and no
 * memset or way back for m <= 256). It cost one launch per TSQR level and
 * per step of the way back before, each with a 0-d g0 filled first (10
 * to 14 GPU operations). Measured on an H100 (bench_qr, two calls, each
 * against a build of that version in the same call): 1,000,000 x 32
 * 0.748 / 0.758 / 0.770 -> 0.721 / 0.728 / 0.721 ms, 100,000 x 64 0.464
 * / 0.455 -> 0.436 / 0.428 ms: ~30 us a call saved. 4096^2 (the blocked
 * QR's 61 panels of >= 256 rows) did not move beyond the noise: 34.17 /
 * 33.39 -> 33.53 / 33.99 ms, whichever build ran first the slower; there
 * the small launches queue behind the panel's long kernels and cost
 * little either way. A breakdown is redone whole, whatever the shape, by
 * the same tree.
 */
static kiln_status cholqr_with_fallback(kiln_stream *s, kiln_array *a,
                                        kiln_array *q, kiln_array *r,
                                        int64_t batch) {
  qr_fallback f;
  memset(&f, 0, sizeof f);
  f.s = s;
  f.a = a;
  f.q = q;
  f.r = r;
  f.batch = batch;
  f.m = a->shape[a->ndim - 2];
  f.n = a->shape[a->ndim - 1];
  if (f.m < f.n || f.n < 1 || f.n > KILN__CHOLQR_NMAX)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld; CholeskyQR takes m >= n and n "
                       "from 1 to %d.",
                       (long long)f.m, (long long)f.n, KILN__CHOLQR_NMAX);
  if (batch == 0)
    return KILN_OK;
  f.cfg = tsqr_config(f.n);
  f.leaves = (f.m + f.cfg.mmax - 1) / f.cfg.mmax;
  kiln_status st = fallback_init(&f);
  if (st == KILN_OK)
    st = kiln__qr_cholqr(s, a, q, r, f.flag);
  if (st == KILN_OK)
    st = fallback_tree(&f);
  if (st == KILN_OK && q != NULL && f.leaves > 1)
    st = fallback_chain(&f);
  fallback_free(&f);
  return st;
}

/* See linalg.h. */
kiln_status kiln__qr_tall(kiln_stream *s, kiln_array *a, kiln_array *q,
                          kiln_array *r) {
  return cholqr_with_fallback(s, a, q, r, batch_of(a));
}

/* ---- the driver ---------------------------------------------------------- */

/* One checked factorization and what the checks worked out. */
typedef struct qr_problem {
  kiln_array *a;
  kiln_qr_mode mode;
  int64_t m, n, k, batch;
  int path;
  kiln_stream *stream;
  kiln_linalg_opts opts;
  kiln_array *q, *r; /* the results being built (q NULL for R only) */
} qr_problem;

static kiln_status check_problem(qr_problem *p) {
  kiln_array *a = p->a;
  static const char *const names[1] = {"A"};
  if ((int)p->mode < KILN_QR_REDUCED || (int)p->mode > KILN_QR_R)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "mode is %d; kiln_qr knows KILN_QR_REDUCED (0), "
                       "KILN_QR_COMPLETE (1) and KILN_QR_R (2).",
                       (int)p->mode);
  if (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s; QR supports float32 and float64.",
                       kiln_dtype_name(a->dtype));
  kiln_status st = kiln__linalg_batch(&p->a, 1, names, &p->batch);
  if (st != KILN_OK)
    return st;
  p->m = a->shape[a->ndim - 2];
  p->n = a->shape[a->ndim - 1];
  p->k = p->m < p->n ? p->m : p->n;
  if (p->m > QR_DIM_MAX || p->n > QR_DIM_MAX)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %lld x %lld; QR supports up to %lld rows and "
                       "columns.",
                       (long long)p->m, (long long)p->n,
                       (long long)QR_DIM_MAX);
  return kiln__linalg_stream(&p->opts, &p->a, 1, &p->stream);
}

/* Whether the forced path `want` takes the shape; else the error. */
static kiln_status check_forced(const qr_problem *p, int want) {
  long long m = (long long)p->m, n = (long long)p->n;
  if (want == QR_PATH_SMALL && (m > QR_SMALL_MAX || n > QR_SMALL_MAX))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 1 (small) holds matrices up to %d x %d, "
                       "but A is %lld x %lld.",
                       QR_SMALL_MAX, QR_SMALL_MAX, m, n);
  if (want != QR_PATH_TSQR && want != QR_PATH_CHOLQR)
    return KILN_OK;
  const char *what = want == QR_PATH_TSQR ? "2 (tall-skinny)"
                                          : "4 (CholeskyQR)";
  int nmax = want == QR_PATH_TSQR ? tsqr_nmax(p->a->dtype)
                                  : KILN__CHOLQR_NMAX;
  if (p->mode == KILN_QR_COMPLETE)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path %s gives a reduced Q or R only; "
                       "complete Q needs path 0, 1 or 3.",
                       what);
  if (m < n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path %s needs at least as many rows as "
                       "columns, but A is %lld x %lld.",
                       what, m, n);
  if (n > nmax)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path %s takes up to %d columns in %s, but A "
                       "is %lld x %lld.",
                       what, nmax, kiln_dtype_name(p->a->dtype), m, n);
  return KILN_OK;
}

static kiln_status choose_path(qr_problem *p) {
  int want = p->opts.path;
  if (want < QR_PATH_AUTO || want > QR_PATH_CHOLQR)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; QR knows 0 (auto), 1 (small), "
                       "2 (tall-skinny), 3 (blocked) and 4 (CholeskyQR).",
                       want);
  kiln_status st = check_forced(p, want);
  if (st != KILN_OK)
    return st;
  if (want == QR_PATH_AUTO) {
    if (p->m <= QR_SMALL_MAX && p->n <= QR_SMALL_MAX)
      want = QR_PATH_SMALL;
    else if (p->mode != KILN_QR_COMPLETE && p->m >= 4 * p->n &&
             p->n <= KILN__CHOLQR_NMAX)
      want = QR_PATH_CHOLQR;
    else if (p->mode != KILN_QR_COMPLETE && p->m >= 2 * p->n &&
             p->n <= tsqr_nmax(p->a->dtype))
      want = QR_PATH_TSQR;
    else
      want = QR_PATH_BLOCKED;
  }
  p->path = want;
  return KILN_OK;
}

/* The results, new contiguous arrays: Q ...×m×qc and R ...×rr×n with A's
 * batch dimensions. */
static kiln_status create_results(qr_problem *p) {
  kiln_array *a = p->a;
  int nd = a->ndim;
  bool complete = p->mode == KILN_QR_COMPLETE;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, a->shape, (size_t)nd * sizeof *shape);
  kiln_status st = KILN_OK;
  if (p->mode != KILN_QR_R) {
    shape[nd - 1] = complete ? p->m : p->k;
    st = kiln__array_create(p->stream->device, a->dtype, nd, shape, &p->q);
  }
  shape[nd - 2] = complete ? p->m : p->k;
  shape[nd - 1] = p->n;
  if (st == KILN_OK)
    st = kiln__array_create(p->stream->device, a->dtype, nd, shape, &p->r);
  return st;
}

/* Enqueues the chosen path into p->q / p->r. */
static kiln_status factor(qr_problem *p) {
  if (p->batch == 0 || p->m == 0)
    return KILN_OK;
  if (p->n == 0) /* Q is I for complete; everything else is empty */
    return p->mode == KILN_QR_COMPLETE ? launch_eye(p->stream, p->q)
                                       : KILN_OK;
  switch (p->path) {
  case QR_PATH_SMALL: {
    bool complete = p->mode == KILN_QR_COMPLETE;
    int64_t size = p->m > p->n ? p->m : p->n;
    qr_config cfg = small_config(p->a->dtype, size);
    return launch_house(p->stream, &cfg, p->a, false, complete, p->q, p->r,
                        p->batch);
  }
  case QR_PATH_TSQR:
    return kiln__qr_tsqr(p->stream, p->a, p->q, p->r);
  case QR_PATH_CHOLQR:
    return cholqr_with_fallback(p->stream, p->a, p->q, p->r, p->batch);
  default:
    return kiln__qr_blocked(p->stream, p->a, p->mode, p->q, p->r);
  }
}

/* The factorization shared by kiln_qr and kiln_qr_ex. */
static kiln_status qr(kiln_array *a, kiln_qr_mode mode,
                      const kiln_linalg_opts *opts, kiln_array **q,
                      kiln_array **r) {
  if (a == NULL || r == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : "r");
  if (q == NULL && mode != KILN_QR_R)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "q is NULL; only mode KILN_QR_R (R only) may leave it "
                       "out.");
  qr_problem p;
  memset(&p, 0, sizeof p);
  p.a = a;
  p.mode = mode;
  kiln_status st = kiln__linalg_opts(opts, &p.opts);
  if (st == KILN_OK)
    st = check_problem(&p);
  if (st == KILN_OK)
    st = choose_path(&p);
  if (st == KILN_OK)
    st = create_results(&p);
  if (st == KILN_OK)
    st = factor(&p);
  if (st != KILN_OK) {
    kiln__array_destroy(p.q);
    kiln__array_destroy(p.r);
    return st;
  }
  if (q != NULL && mode != KILN_QR_R)
    *q = p.q;
  *r = p.r;
  return KILN_OK;
}

/* Public: see kiln.h. */
kiln_status kiln_qr(kiln_array *a, kiln_qr_mode mode, kiln_array **q,
                    kiln_array **r) {
  KILN_API_ENTER();
  return qr(a, mode, NULL, q, r);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_qr_ex(kiln_array *a, kiln_qr_mode mode,
                       const kiln_linalg_opts *opts, kiln_array **q,
                       kiln_array **r) {
  KILN_API_ENTER();
  return qr(a, mode, opts, q, r);
}
