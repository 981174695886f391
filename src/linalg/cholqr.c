/*
 * Shifted CholeskyQR3: tall-skinny QR at the speed of memory (kiln_qr's
 * path 4; kernels in kernels/cholqr.metal).
 *
 * CholeskyQR factors A through its Gram matrix: R = chol(A^T A), Q =
 * A R^-1. One pass is fast (a reduction and a row-parallel solve, both
 * streaming over A) but loses orthogonality like cond(A)^2 and breaks down
 * once the Gram is numerically singular. Repeating it on Q (CholeskyQR2)
 * restores orthogonality when the first Q is not too ill-conditioned, and
 * a shift in the first pass (chol(A^T A + s I)) keeps the first Cholesky
 * from breaking down, at the price of a worse first Q that the two later
 * passes repair (Fukaya, Kannan, Nakatsukasa, Yamamoto and Yanagisawa,
 * 2020). Their shift is s = 11 (m n + n (n + 1)) u ||A||^2, u the unit
 * roundoff of the Gram's arithmetic, which bounds the rounding errors of
 * forming and factoring the Gram; we use ||A||_F^2 = trace(A^T A) (an
 * upper bound of ||A||_2^2, free from the Gram itself) and u = 2^-53,
 * since every Gram and Cholesky here is float64: float32 products are
 * exact in float64, so the float32 path's Gram carries only float64
 * rounding and the shift stays tiny (for cond(A) = 1e6 in float32 the
 * shifted pass hardly differs from an exact one); float64 input gets the
 * paper's algorithm as published. (A float32 Gram would need u = 2^-24
 * in the shift, and then the shifted Q_1 of a 1e6-conditioned A would be
 * too ill-conditioned for the two unshifted passes: the first Gram at
 * least must be float64.)
 *
 * Passes, each streaming over the m x n rows once (kernels in
 * kernels/cholqr.metal): cq_gram reads A for its Gram partials; cq_first
 * solves R_1 into A's rows, writes them (Q_1) into Q and sums their Gram
 * in the same pass; cq_next does the same with R_2, in place in Q;
 * cq_last multiplies by R_3^-1 in place, leaving the result. Each of the
 * first three passes finishes itself in its tail: the last threadgroup to
 * store its partial (an atomic counter, the "last block" pattern) sums
 * the partials (a fixed order: clusters of ~sqrt(P) groups, then the
 * clusters) and factors the Gram (cq_chol_factor: the factor the next row
 * pass applies, the product R_k ... R_1 and the breakdown flag). A call
 * is five operations: one fill of the counters (shared with the caller's
 * fallback, see cholqr.h) and the four row kernels; the batch runs along
 * grid.y and z, so no launch needs a scalar. Memory traffic: A read
 * twice, Q written three times and read twice, seven passes over m x n
 * in all (0.9 GB for 1e6 x 32 float32, ~0.3 ms at 3 TB/s). The
 * intermediate rows are stored rather than recomputed from A (the earlier
 * design re-solved every earlier factor into every row in each pass,
 * which made the passes bound by arithmetic instead of memory); R only
 * stores them in a workspace.
 *
 * What each kernel does about its cost (H100, Nsight Compute, 1e6 x 32
 * float32; "before" is the register-blocked Gram, "after" this design):
 *  - Gram: every Gram is summed in float64 by warps on the float64 tensor
 *    cores (mma.sync m8n8k4, sm_80+; a portable path elsewhere), a warp
 *    owning the 8 x 8 blocks of the upper triangle over its own rows. The
 *    4 x 4 register blocks before were bound by shared-memory reads and
 *    float-to-double conversions (one per two FMAs). cq_gram has no tile
 *    at all: its warps stream runs of 16 rows straight from memory, with
 *    no barrier until the final sum and few registers, so many warps keep
 *    loads in flight (the tiled version held one group on an SM and
 *    waited out each tile's load): 190 -> 61 us (2.1 TB/s). In cq_first /
 *    cq_next the Gram of the solved tile went from ~70 us to ~20.
 *  - Row passes: a group alone on its SM (float32 NC 64, and cq_last)
 *    loads the next tile into registers while it works on this one.
 *    cq_next reads Q with its column stride and batch offset known
 *    (CONTIG), which keeps float32 NC 32 at 128 registers (two groups an
 *    SM; it had 130, one group, and took 248 us against cq_first's 174).
 *  - Sums and Choleskys: in the tails, where cq_reduce and cq_chol were
 *    two launches a pass (4.6 and 10-14 us, 27-32 at n = 64, plus the
 *    launch gaps); the tail's Cholesky is the former cq_chol's (a 16 x 16
 *    thread grid with BS x BS blocks in registers, one barrier a column,
 *    R_k Rin through threadgroup memory 16 rows at a time).
 *  - cq_last: a product with R_3^-1 (n independent dot products a row)
 *    rather than a solve (a chain of n dependent steps); pass 3's tail
 *    forms the inverse.
 * Measured before this design of the tails (0.766 ms for the whole call,
 * cuSOLVER 5.47): cq_first 174 us, cq_next 248, cq_last 155, each
 * tile's triangular solves (a thread per row) running the FMA pipe at
 * ~10%; the reductions and Choleskys ~60 us with their launches, the TSQR
 * fallback's 9-11 launches ~38 us. At 1e5 x 64 (~0.45 ms) the three row
 * passes took ~97 us each and the Choleskys ~90.
 *
 * The partial's layout is that of the tensor cores' accumulators: entry
 * blk * 64 + 2 lane + i holds G(8 bi + lane / 4, 8 bj + 2 (lane % 4) + i)
 * of the block blk = (bi, bj), bi <= bj, numbered row by row.
 *
 * The first two row passes apply their factor by triangular solves in T
 * (forward substitution with the factor rounded to T, backward stable row
 * by row), not products with an explicit inverse: for the 1e6-conditioned
 * first factor, x R^-1 through a rounded inverse would leave a residual
 * ~ u cond(A) ||A||, while the solve leaves ~ u ||A||; R's product uses
 * the same rounded factors, so A = Q R holds to working precision. The
 * last factor is different: pass 3 flags any Gram with ||G_3 - I||_F >
 * 1/2, so R_3's condition number is at most sqrt(3) and its rounded
 * inverse is as good as a solve.
 *
 * Threadgroups per matrix for the Gram passes come from the device's
 * compute units (CQ_GROUPS_PER_UNIT): one wave, one partial each.
 *
 * Breakdown: CholeskyQR cannot give an orthonormal Q for a numerically
 * rank-deficient A (an exactly dependent column makes a later Gram
 * singular). The tails record, per matrix, a non-positive or non-finite
 * pivot, a non-finite ||A||_F, or a last Gram too far from I to be
 * finished by one pass; the caller then factors the flagged matrices
 * another way, without a host round trip (see qr.c).
 */
#include <stdint.h>
#include <string.h>

#include "linalg/cholqr.h"

/* Threads per group of every kernel (CQ_THREADS in kernels/cholqr.metal). */
#define CQ_THREADS 256
/* The most groups per cluster of the tails' sums (CQ_CLUSTER_MAX in
 * kernels/cholqr.metal). */
#define CQ_CLUSTER_MAX 32
/* Gram-pass threadgroups to aim for across a batch, per compute unit:
 * one wave of the row passes. On an H100 cq_first / cq_next keep two
 * groups on an SM (NC <= 32, float32) or one (NC 64); each group streams
 * its share of the tiles, prefetching the next one where it is alone on
 * its SM, so more groups would only add partials to sum. */
#define CQ_GROUPS_PER_UNIT 2
#define CQ_GROUPS_PER_UNIT_64 1
/* Threadgroups per matrix of cq_last at most (grid.x must fit 32 bits). */
#define CQ_Q_GROUPS 65536
/* Batch entries along grid.y at most (CUDA's limit); more go along
 * grid.z (cq_matrix in kernels/cholqr.metal). */
#define CQ_Y_MAX 65535

/* Groups per cluster of the tails' sums for P groups a matrix:
 * ceil(sqrt(P)), at most CQ_CLUSTER_MAX (cq_cluster in
 * kernels/cholqr.metal, which must agree). */
static int64_t cq_cluster(int64_t p) {
  int64_t l = 1;
  while (l * l < p && l < CQ_CLUSTER_MAX)
    l++;
  return l;
}

/* Clusters of P groups. */
static int64_t cq_clusters(int64_t p) {
  int64_t l = cq_cluster(p);
  return (p + l - 1) / l;
}

/* The column capacity class of n columns. */
static int cq_nc(int64_t n) { return n <= 16 ? 16 : (n <= 32 ? 32 : 64); }

/* Rows per tile of a tile held in dtype tt (cq_tile_rows in
 * kernels/cholqr.metal): cq_gram's tile is float64, the row passes' tile
 * is the input's dtype. */
static int64_t cq_tile_rows(int nc, kiln_dtype tt) {
  if (tt == KILN_FLOAT32)
    return nc <= 32 ? 256 : 128;
  return nc <= 16 ? 256 : (nc <= 32 ? 128 : 64);
}

/* Gram entries stored per matrix: the upper triangle's 8 x 8 blocks. */
static int64_t cq_entries(int nc) {
  int nb = nc / 8;
  return (int64_t)nb * (nb + 1) / 2 * 64;
}

static int64_t cq_batch(const kiln_array *a) {
  int64_t b = 1;
  for (int d = 0; d < a->ndim - 2; d++)
    b *= a->shape[d];
  return b;
}

/* Threadgroups per matrix of the Gram passes for A (m rows, n columns,
 * `batch` matrices): one wave across the batch, at most one per float64
 * tile of cq_gram (the smaller, so the more numerous: a row pass with
 * fewer tiles than groups leaves the extra groups empty, zero
 * partials). */
static int64_t cq_groups(const kiln_stream *s, int64_t m, int nc,
                         int64_t batch) {
  int64_t tr = cq_tile_rows(nc, KILN_FLOAT64);
  int64_t tiles = (m + tr - 1) / tr;
  int64_t units = s->device->info.compute_units;
  units *= nc == 64 ? CQ_GROUPS_PER_UNIT_64 : CQ_GROUPS_PER_UNIT;
  if (units < 1)
    units = 1;
  int64_t want = (units + batch - 1) / batch;
  return tiles < want ? tiles : want;
}

/* See cholqr.h. */
int64_t kiln__cholqr_counters(const kiln_stream *s, const kiln_array *a) {
  int64_t m = a->shape[a->ndim - 2], n = a->shape[a->ndim - 1];
  int64_t batch = cq_batch(a);
  if (n < 1 || batch < 1)
    return 3;
  return 3 * (cq_clusters(cq_groups(s, m, cq_nc(n), batch)) + 1);
}

/* Everything one factorization launches with. */
typedef struct cq_job {
  kiln_stream *s;
  kiln_array *a, *q, *r, *flag, *cnt;
  kiln_dtype dt;
  int64_t m, n, batch;
  int nc;
  int64_t p_gram, p_q; /* threadgroups per matrix */
  kiln_array *part, *cp, *rt, *racc[2];
  kiln_array *work;    /* the rows between passes for R only (else q) */
  kiln_array *own_cnt; /* the counters when the caller has none */
} cq_job;

static void cq_job_free(cq_job *j) {
  kiln_array *all[7] = {j->part,      j->cp,   j->rt,     j->racc[0],
                        j->racc[1], j->work, j->own_cnt};
  for (int i = 0; i < 7; i++)
    kiln__array_destroy(all[i]);
}

/* Where the rows go between passes: q, or the workspace for R only. */
static kiln_array *cq_rows(const cq_job *j) {
  return j->q != NULL ? j->q : j->work;
}

/* The work arrays: partials, the clusters' sums, the factors, the
 * running product (two, used in turn), and the counters (zeroed) where
 * the caller gave none. */
static kiln_status cq_job_init(cq_job *j) {
  int64_t e = cq_entries(j->nc), nc = j->nc;
  int64_t trq = cq_tile_rows(j->nc, j->dt);
  int64_t tiles_q = (j->m + trq - 1) / trq;
  j->p_gram = cq_groups(j->s, j->m, j->nc, j->batch);
  j->p_q = tiles_q < CQ_Q_GROUPS ? tiles_q : CQ_Q_GROUPS;
  kiln_device *dev = j->s->device;
  int64_t sp[3] = {j->batch, j->p_gram, e};
  int64_t scp[3] = {j->batch, cq_clusters(j->p_gram), e};
  int64_t srt[4] = {j->batch, 3, nc, nc}, sr[3] = {j->batch, nc, nc};
  kiln_status st = kiln__array_create(dev, KILN_FLOAT64, 3, sp, &j->part);
  if (st == KILN_OK)
    st = kiln__array_create(dev, KILN_FLOAT64, 3, scp, &j->cp);
  if (st == KILN_OK)
    st = kiln__array_create(dev, j->dt, 4, srt, &j->rt);
  for (int i = 0; i < 2 && st == KILN_OK; i++)
    st = kiln__array_create(dev, KILN_FLOAT64, 3, sr, &j->racc[i]);
  int64_t sw[3] = {j->batch, j->m, j->n};
  if (st == KILN_OK && j->q == NULL)
    st = kiln__array_create(dev, j->dt, 3, sw, &j->work);
  int64_t sc[2] = {j->batch, kiln__cholqr_counters(j->s, j->a)};
  if (st == KILN_OK && j->cnt == NULL) {
    st = kiln__array_create(dev, KILN_INT32, 2, sc, &j->own_cnt);
    if (st == KILN_OK)
      st = kiln__array_fill(j->own_cnt, 0.0, j->s);
    j->cnt = j->own_cnt;
  }
  return st;
}

/* Launches kernel `name` over `groups` threadgroups of CQ_THREADS per
 * matrix for the whole batch: matrices along grid.y, and past CQ_Y_MAX
 * along grid.z as well. */
static kiln_status cq_launch(cq_job *j, const char *name, const char *inputs,
                             const char *outputs, kiln_array **in, int nin,
                             kiln_array **out, int nout, int64_t groups) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("cholqr", name, inputs, outputs,
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", j->dt);
  kiln__targ_int(&t[1], "NC", j->nc);
  kiln_output_spec spec[8];
  for (int i = 0; i < nout; i++)
    kiln__linalg_out_spec(&spec[i], out[i]);
  kiln_launch L;
  kiln__linalg_launch_init(&L, j->s);
  L.inputs = in;
  L.num_inputs = nin;
  L.outputs = spec;
  L.num_outputs = nout;
  L.template_args = t;
  L.num_template_args = 2;
  int64_t gy = j->batch < CQ_Y_MAX ? j->batch : CQ_Y_MAX;
  L.grid[0] = (uint32_t)(CQ_THREADS * groups);
  L.grid[1] = (uint32_t)gy;
  L.grid[2] = (uint32_t)((j->batch + gy - 1) / gy);
  L.threadgroup[0] = CQ_THREADS;
  return kiln__kernel_launch_into(k, &L, out);
}

/* Pass `pass` (1..3; 4: the last solve, which writes the result) for the
 * whole batch. Passes 1 to
 * 3 sum their Gram and factor it in their row kernel's tail: pass 1
 * (cq_gram) reads A for its Gram; pass 2 (cq_first) solves R_1 into A's
 * rows, writing them and their Gram; pass 3 (cq_next) does the same with
 * R_2 in place; pass 4 (cq_last) multiplies by R_3^-1 in place. Pass k
 * reads the product so far from racc[k % 2] and writes the next one into
 * racc[(k + 1) % 2]. */
static kiln_status cq_pass(cq_job *j, int pass) {
  kiln_array *rows = cq_rows(j);
  if (pass == 4) {
    kiln_array *in[2] = {rows, j->rt};
    return cq_launch(j, "cq_last", "Qin,Rt", "Q", in, 2, &rows, 1, j->p_q);
  }
  kiln_array *out[8] = {rows,  j->part, j->cp,   j->cnt,
                        j->rt, j->racc[(pass + 1) % 2], j->flag, j->r};
  if (pass == 1) {
    kiln_array *in[2] = {j->a, j->cnt};
    return cq_launch(j, "cq_gram", "A,Tsh", "Part,CP,Tc,Rt,Rout,flag,R", in,
                     2, out + 1, 7, j->p_gram);
  }
  kiln_array *in[3] = {pass == 2 ? j->a : rows, j->racc[pass % 2], j->cnt};
  return cq_launch(j, pass == 2 ? "cq_first" : "cq_next",
                   pass == 2 ? "A,Rin,Tsh" : "Qin,Rin,Tsh",
                   "Q,Part,CP,Tc,Rt,Rout,flag,R", in, 3, out, 8, j->p_gram);
}

/* See cholqr.h. */
kiln_status kiln__qr_cholqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                            kiln_array *r, kiln_array *flag,
                            kiln_array *cnt) {
  cq_job j;
  memset(&j, 0, sizeof j);
  j.s = s;
  j.a = a;
  j.q = q;
  j.r = r;
  j.flag = flag;
  j.cnt = cnt;
  j.dt = a->dtype;
  j.m = a->shape[a->ndim - 2];
  j.n = a->shape[a->ndim - 1];
  j.batch = cq_batch(a);
  if (j.m < j.n || j.n < 1 || j.n > KILN__CHOLQR_NMAX)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld; CholeskyQR takes m >= n and n "
                       "from 1 to %d.",
                       (long long)j.m, (long long)j.n, KILN__CHOLQR_NMAX);
  if (j.batch == 0)
    return KILN_OK;
  j.nc = cq_nc(j.n);
  kiln_status st = cq_job_init(&j);
  for (int pass = 1; pass <= 3 && st == KILN_OK; pass++)
    st = cq_pass(&j, pass);
  if (st == KILN_OK && j.q != NULL)
    st = cq_pass(&j, 4);
  cq_job_free(&j);
  return st;
}

/* See cholqr.h. */
kiln_status kiln__cholqr_for_each_config(kiln__cholqr_config_fn fn,
                                         void *user) {
  static const kiln_dtype dts[2] = {KILN_FLOAT32, KILN_FLOAT64};
  static const int ncs[3] = {16, 32, 64};
  static const char *const kernels[4][3] = {
      {"cq_gram", "A,Tsh", "Part,CP,Tc,Rt,Rout,flag,R"},
      {"cq_first", "A,Rin,Tsh", "Q,Part,CP,Tc,Rt,Rout,flag,R"},
      {"cq_next", "Qin,Rin,Tsh", "Q,Part,CP,Tc,Rt,Rout,flag,R"},
      {"cq_last", "Qin,Rt", "Q"}};
  kiln_status st = KILN_OK;
  for (int d = 0; d < 2 && st == KILN_OK; d++)
    for (int c = 0; c < 3 && st == KILN_OK; c++)
      for (int k = 0; k < 4 && st == KILN_OK; k++) {
        kiln__cholqr_config g = {kernels[k][0], kernels[k][1],
                                 kernels[k][2], dts[d], ncs[c], -1};
        st = fn(&g, user);
      }
  return st;
}
