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
 * Two passes are enough for most matrices. With the float64 Gram, the
 * shift is float64's rounding, so for a well-conditioned A the shifted
 * first pass is as good as an exact one and X_1 = A R_1^-1 is already
 * orthogonal to float32's precision or so; the third pass only polishes.
 * Pass 2's cq_chol measures ||G_2 - I||_F (G_2 the Gram of X_1, in hand)
 * and, at most 1/4 (pass 3 accepts 1/2 before its last solve: this is
 * the same "one more pass finishes it" test, with margin), writes R =
 * R_2 R_1 and a per-matrix Stage 2; cq_next and pass 3 then skip that
 * matrix and cq_last solves R_2 into X_1. Decided on the device, per
 * matrix, no host round trip: the skipped kernels (cq_next, pass 3's
 * cq_reduce and cq_chol) still launch, a read of Stage and an exit per
 * group. Count at 1e5 x 64 float32 (per kernel, H200
 * Nsight, from above): cq_next 69 us, one cq_chol ~20 -> a few us of
 * launches: ~85 us of ~296 off, and of the 1e6 x 32 passes one of seven
 * passes over the rows. Measured (NVIDIA H200, one build, three passes
 * forced by KILN_CHOLQR_PASSES=3 against this): 1e5 x 64 float32 0.299 /
 * 0.312 -> 0.239 / 0.238 ms, 1e6 x 32 0.499 / 0.501 -> 0.364 / 0.369 ms.
 * An ill-conditioned A (the shift then matters: cond(A) ~> 1e3 at n 64)
 * takes three passes as before. KILN_CHOLQR_PASSES=3 (or
 * kiln__cholqr_passes_test) forces three.
 *
 * Passes, each streaming over the m x n rows once (kernels in
 * kernels/cholqr.metal): cq_gram reads A for its Gram partials; cq_first
 * solves R_1 into A's rows, writes them (Q_1) into Q and sums their Gram
 * in the same pass; cq_next does the same with R_2, in place in Q;
 * cq_last solves R_3 in place, leaving the result. Between the row
 * passes, cq_reduce sums the partials (a fixed order) and cq_chol (one
 * threadgroup per matrix) factors the Gram, writes the factor the next
 * row pass solves with, the product R_k ... R_1 and the breakdown flag.
 * Memory traffic: A read twice, Q written three times and read twice,
 * seven passes over m x n in all (0.9 GB for 1e6 x 32 float32, ~0.3 ms at
 * 3 TB/s). The intermediate rows are stored rather than recomputed from A
 * (the earlier design re-solved every earlier factor into every row in
 * each pass, which made the passes bound by arithmetic instead of
 * memory); R only stores them in a workspace.
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
 *    loads the next tile into registers while it works on this one. Each
 *    group copies its factor once into threadgroup memory (columns packed
 *    to whole 4-vectors; all but float64 NC 64, which does not fit beside
 *    its tile in 48 KB): read from device memory, every step of the
 *    solve's chain waited on a load (cq_last's first stall reason was
 *    the long scoreboard). H100, 1e5 x 64 float32, per kernel: cq_first
 *    and cq_next 96 -> 70 us, cq_last 98 -> 39 us.
 *  - cq_reduce: 32 slices of the partials a group (1024 threads), so each
 *    thread's chain of dependent loads is a few partials long (4.6 us).
 *  - cq_chol: R_k Rin reads Rin through threadgroup memory, 16 rows at a
 *    time, where it read one row of global memory per step; the trace is
 *    a reduction rather than a loop of n reads. Its column steps are a
 *    chain of latencies (publish row j, barrier, load it, 1 / d, the FMAs
 *    that give row j + 1), so the kernel keeps everything else off that
 *    chain (measured on an H100, 2026-11-27, against the code before it
 *    in one call: QR 100000 x 64 float32 0.339 -> 0.319 ms, 4096^2 31.1
 *    -> 30.3 ms, cuSOLVER 2.96 / 28.5; counts from the sm_90a
 *    SASS, float32 NC 64): 1 / d is rcp.approx.ftz.f64 and one cubic
 *    Newton step (MUFU + 3 DFMAs, where the IEEE division was MUFU + 5
 *    DFMAs and a slow-path test whose call kept the row's loads behind
 *    it); the pivots are tested after the loop (no compare and branch
 *    per step; a subnormal pivot is now a breakdown too); a step updates
 *    at once only the row published next and the rest at the start of
 *    the next step, in the shadow of its loads and reciprocal (the
 *    barrier waited for ~80 cycles of FP64 issue a scheduler, now ~20;
 *    ptxas even moves the pending FMAs across the barrier); warps whose
 *    rows are done have the update predicated off; the Gram, Rin and the
 *    flag are loaded at the start, all at once (the loops of load-store
 *    pairs waited out ~9 L2 latencies in pass 1 and ~25 in passes 2 and
 *    3); the product R_k Rin is shared with the idle threads below the
 *    diagonal (busiest scheduler: 96 -> 64 steps of 16 DFMAs). Expected
 *    ~125-165 cycles less per column step (~5-6 us over 64 steps), ~1.4
 *    us (pass 1) or ~3.5 us (passes 2 and 3) less outside the loop:
 *    27 / 32 / 32 us -> roughly 21 / 23.5 / 23.5 at n = 64 (to be
 *    measured).
 *  - cq_chol's factorization is blocked (16 columns a block) on the
 *    matrix in threadgroup memory: warp 0 factors each diagonal block
 *    with shuffles, no barrier, every lane computing the next pivot
 *    itself (a step: ~55 cycles, its pivot chain MUFU and 3 DFMAs), a
 *    thread a column solves the block row right of it, and the warps
 *    update the trailing matrix by 8 x 8 tiles on the float64 tensor
 *    cores: 12 group barriers at NC 64 where the column loop had 64.
 *    Critical path at NC 64 (cycles): ~25,000 (64 columns of ~390,
 *    measured: ~14 us) -> ~5,600 by the count (64 warp steps ~3,500, 3
 *    block-row solves ~1,050, 3 trailing updates ~550, barriers ~500),
 *    i.e. cq_chol 19 / 24 / 25 us -> ~8 / ~12 / ~13 expected with the
 *    product below. Measured (NVIDIA H200, 2026-11-27, Nsight, passes 1
 *    / 2 / 3): 18.2 / 24.6 / 24.3 -> 21.4 / 19.2 / 19.7 us; QR 1e5 x 64
 *    float32 0.316 -> 0.299 ms, 4096^2 24.29 -> 23.66 ms, 1e6 x 32 0.496
 *    -> 0.507 ms (bench_qr, both builds in one call). So the passes with
 *    the product gained ~5 us each and pass 1 lost ~3: the count misses
 *    ~15 us a pass. Nsight's warp-state samples of pass 1 (H200, every 32
 *    cycles): not the instruction cache (no_inst 0-3 %); ~14,000 cycles
 *    in the diagonal blocks (~220 a column step, the count said ~55),
 *    ~11,000 in the epilogue (R_k, Rt, Rout stored as each thread's 4 x 4
 *    block, uncoalesced: drain and lg stalls at the exit), ~7,500 before
 *    the loop. Next: coalesced stores through Gs; the step's chain.
 *    Details in the kernel.
 *    Its product R_k Rin (passes 2 and 3) is now m8n8k4 float64 tensor
 *    core steps, an 8-row strip a warp, Rin staged whole in threadgroup
 *    memory: the busiest scheduler ~2,000 cycles of DFMAs behind 8
 *    barriers -> ~74 m8n8k4 (~550 cycles) behind 2 (estimated, NOT
 *    measured; ~1 us a pass).
 * Where the time is now (H100, whole kiln_qr call, bench_qr with
 * cuSOLVER in the same run, this design against the one before the
 * threadgroup-memory factor in the same call): 1e6 x 32 0.592 ms (was
 * 0.757; cuSOLVER 5.51), 1e5 x 64 0.378 ms (was 0.466; cuSOLVER 2.99),
 * 4096^2 through the blocked QR's 64-column panels 31.96 ms (was 34.13;
 * cuSOLVER 28.73). Per kernel at 1e5 x 64 (Nsight Compute): cq_gram 35
 * us, cq_reduce 4.8 x 3, cq_chol 27 / 32 / 32 (bound by its chain of n
 * steps, each a barrier, a float64 division and the pivot row's
 * publication), cq_first and cq_next 70 each, cq_last 39, the TSQR
 * fallback's guarded launches ~33 in all (since 24e1cd7 a memset and two
 * launches, about 30 us less per call: qr.c).
 * Tried and lost (H100, same figures): cq_chol's elimination by one warp
 * (a lane per column, warp barriers only) took 45-52 us a pass with the
 * columns in registers and 98 with them in threadgroup memory, against
 * the 16 x 16 grid's 27-32: one warp's float64 FMAs and loads are slower
 * than the grid's barriers (and the register version's 64 unrolled
 * steps are 254 registers and 2.3 s of NVRTC each); the solve in axpy
 * form (x[k] -= x[j] R(j, k), 63 independent FMAs a step) with R from
 * device memory made cq_last 98 -> 146 us (the whole row of R is needed
 * before a step's FMAs, so the load latency is exposed every step), and
 * cq_first / cq_next no faster. Folding each
 * reduction and Cholesky into the tail of its pass, a two-launch
 * fallback and the last pass as a product with R_3's inverse (commit
 * ffde205, reverted) won at 32 columns (0.698 ms against 0.749) and lost
 * at 64 (0.540 ms against 0.449, and 11% in the blocked QR's panels).
 *
 * The partial's layout is that of the tensor cores' accumulators: entry
 * blk * 64 + 2 lane + i holds G(8 bi + lane / 4, 8 bj + 2 (lane % 4) + i)
 * of the block blk = (bi, bj), bi <= bj, numbered row by row.
 *
 * Row solves are triangular solves in T (forward substitution with the
 * factor rounded to T, backward stable row by row), not products with an
 * explicit inverse: for the 1e6-conditioned first factor, x R^-1 through
 * a rounded inverse would leave a residual ~ u cond(A) ||A||, while the
 * solve leaves ~ u ||A||; R's product uses the same rounded factors, so
 * A = Q R holds to working precision.
 *
 * Threadgroups per matrix for the Gram passes come from the device's
 * compute units (CQ_GROUPS_PER_UNIT): one wave, one partial each.
 *
 * Breakdown: CholeskyQR cannot give an orthonormal Q for a numerically
 * rank-deficient A (an exactly dependent column makes a later Gram
 * singular). cq_chol records, per matrix, a non-positive or non-finite
 * pivot, a non-finite ||A||_F, or a last Gram too far from I to be
 * finished by one pass; the caller then factors the flagged matrices
 * another way, without a host round trip (see qr.c).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/cholqr.h"

/* Threads per group of the row passes and cq_chol (CQ_THREADS), and of
 * cq_reduce (CQ_RED_THREADS, 32 entries a group). */
#define CQ_THREADS 256
#define CQ_RED_THREADS 1024
/* Gram-pass threadgroups to aim for across a batch, per compute unit:
 * one wave of the row passes. On an H100 cq_gram (about 200 registers)
 * keeps one group on an SM and cq_first / cq_next two (NC <= 32) or one
 * (NC 64); each group streams its share of the tiles, prefetching the
 * next one where it is alone on its SM, so more groups would only add
 * partials to sum. */
#define CQ_GROUPS_PER_UNIT 2
#define CQ_GROUPS_PER_UNIT_64 1
/* Threadgroups per matrix of cq_q at most (grid.x must fit 32 bits). */
#define CQ_Q_GROUPS 65536
/* Batch entries per launch along grid.y (CUDA's limit). */
#define CQ_Y_CHUNK 65535

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

/* Everything one factorization launches with. */
typedef struct cq_job {
  kiln_stream *s;
  kiln_array *a, *q, *r, *flag;
  kiln_dtype dt;
  int64_t m, n, batch;
  int nc;
  int64_t p_gram, p_q; /* threadgroups per matrix */
  kiln_array *part, *g, *rt, *racc[2], *shift;
  kiln_array *work;  /* the rows between passes for R only (else q) */
  kiln_array *stage; /* int32 per matrix: 2 where two passes finish */
  kiln_array *two;   /* 0-d int32: may two passes finish? */
} cq_job;

static void cq_job_free(cq_job *j) {
  kiln_array *all[9] = {j->part,      j->g,     j->rt,   j->racc[0],
                        j->racc[1], j->shift, j->work, j->stage,
                        j->two};
  for (int i = 0; i < 9; i++)
    kiln__array_destroy(all[i]);
}

/* See linalg.h. */
int kiln__cholqr_passes_test = -1;

/* KILN_CHOLQR_PASSES, read once: "3" always runs the third pass. */
static int g_passes_env = 0;
static pthread_once_t g_passes_once = PTHREAD_ONCE_INIT;

static void read_passes_env(void) {
  const char *v = getenv("KILN_CHOLQR_PASSES");
  if (v != NULL && strcmp(v, "3") == 0)
    g_passes_env = 3;
}

/* Whether pass 2 may finish a matrix (kiln__cholqr_passes_test, else the
 * environment). */
static bool cq_two_allowed(void) {
  int t = kiln__cholqr_passes_test;
  if (t < 0) {
    pthread_once(&g_passes_once, read_passes_env);
    t = g_passes_env;
  }
  return t != 3;
}

/* Where the rows go between passes: q, or the workspace for R only. */
static kiln_array *cq_rows(const cq_job *j) {
  return j->q != NULL ? j->q : j->work;
}

/* The work arrays: partials, the summed Gram, the factors, the running
 * product (two, used in turn), the shift's constant. */
static kiln_status cq_job_init(cq_job *j) {
  int64_t e = cq_entries(j->nc), nc = j->nc;
  /* cq_gram's float64 tiles are the smaller, so the more numerous: a
   * row pass with fewer tiles than groups leaves the extra groups empty
   * (zero partials) */
  int64_t tr = cq_tile_rows(j->nc, KILN_FLOAT64);
  int64_t tiles = (j->m + tr - 1) / tr;
  int64_t trq = cq_tile_rows(j->nc, j->dt);
  int64_t tiles_q = (j->m + trq - 1) / trq;
  int64_t units = j->s->device->info.compute_units;
  units *= j->nc == 64 ? CQ_GROUPS_PER_UNIT_64 : CQ_GROUPS_PER_UNIT;
  if (units < 1)
    units = 1;
  int64_t want = (units + j->batch - 1) / j->batch;
  j->p_gram = tiles < want ? tiles : want;
  j->p_q = tiles_q < CQ_Q_GROUPS ? tiles_q : CQ_Q_GROUPS;
  kiln_device *dev = j->s->device;
  int64_t sp[3] = {j->batch, j->p_gram, e}, sg[2] = {j->batch, e};
  int64_t srt[4] = {j->batch, 3, nc, nc}, sr[3] = {j->batch, nc, nc};
  kiln_status st = kiln__array_create(dev, KILN_FLOAT64, 3, sp, &j->part);
  if (st == KILN_OK)
    st = kiln__array_create(dev, KILN_FLOAT64, 2, sg, &j->g);
  if (st == KILN_OK)
    st = kiln__array_create(dev, j->dt, 4, srt, &j->rt);
  for (int i = 0; i < 2 && st == KILN_OK; i++)
    st = kiln__array_create(dev, KILN_FLOAT64, 3, sr, &j->racc[i]);
  /* 11 (m n + n (n + 1)) u, u = 2^-53: times trace(G) in cq_chol */
  double mn = (double)j->m * (double)j->n + (double)j->n * (double)(j->n + 1);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(j->s, KILN_FLOAT64, 11.0 * mn * 0x1p-53,
                             &j->shift);
  int64_t sb[1] = {j->batch};
  if (st == KILN_OK)
    st = kiln__array_create(dev, KILN_INT32, 1, sb, &j->stage);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(j->s, KILN_INT32, cq_two_allowed() ? 1 : 0,
                             &j->two);
  int64_t sw[3] = {j->batch, j->m, j->n};
  if (st == KILN_OK && j->q == NULL)
    st = kiln__array_create(dev, j->dt, 3, sw, &j->work);
  return st;
}

/* Launches kernel `name` over `groups` threadgroups of `threads` per
 * matrix for the batch entries [first, first + count). */
static kiln_status cq_launch(cq_job *j, const char *name, const char *inputs,
                             const char *outputs, kiln_array **in, int nin,
                             kiln_array **out, int nout,
                             const kiln_template_arg *t, int nt,
                             uint32_t threads, int64_t groups,
                             int64_t count) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("cholqr", name, inputs, outputs,
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_output_spec spec[5];
  for (int i = 0; i < nout; i++)
    kiln__linalg_out_spec(&spec[i], out[i]);
  kiln_launch L;
  kiln__linalg_launch_init(&L, j->s);
  L.inputs = in;
  L.num_inputs = nin;
  L.outputs = spec;
  L.num_outputs = nout;
  L.template_args = t;
  L.num_template_args = nt;
  L.grid[0] = (uint32_t)(threads * groups);
  L.grid[1] = (uint32_t)count;
  L.threadgroup[0] = threads;
  return kiln__kernel_launch_into(k, &L, out);
}

/* The rows kernel of pass `pass` (1..3; 4: the last solve, which writes
 * the result): pass 1 reads A for its Gram; pass 2 solves R_1 into A's
 * rows, writing them and their Gram; pass 3 does the same with R_2 in
 * place; pass 4 solves R_3 in place. */
static kiln_status cq_rows_launch(cq_job *j, int pass, kiln_array *g0,
                                  int64_t count) {
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", j->dt);
  kiln__targ_int(&t[1], "NC", j->nc);
  kiln_array *rows = cq_rows(j);
  kiln_array *out[2] = {rows, j->part};
  if (pass == 1) {
    kiln_array *in[2] = {j->a, g0};
    return cq_launch(j, "cq_gram", "A,g0", "Part", in, 2, &j->part, 1, t, 2,
                     CQ_THREADS, j->p_gram, count);
  }
  if (pass == 2) {
    kiln_array *in[3] = {j->a, j->rt, g0};
    return cq_launch(j, "cq_first", "A,Rt,g0", "Q,Part", in, 3, out, 2, t,
                     2, CQ_THREADS, j->p_gram, count);
  }
  kiln_array *in[4] = {rows, j->rt, g0, j->stage};
  if (pass == 3)
    return cq_launch(j, "cq_next", "Qin,Rt,g0,Stage", "Q,Part", in, 4, out,
                     2, t, 2, CQ_THREADS, j->p_gram, count);
  return cq_launch(j, "cq_last", "Qin,Rt,g0,Stage", "Q", in, 4, out, 1, t,
                   2, CQ_THREADS, j->p_q, count);
}

/* Pass `pass` (1..3) for the batch entries [first, first + count); g0
 * holds `first`. */
static kiln_status cq_pass(cq_job *j, int pass, kiln_array *g0,
                           int64_t count) {
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", j->dt);
  kiln__targ_int(&t[1], "NC", j->nc);
  kiln_status st = cq_rows_launch(j, pass, g0, count);
  kiln_array *rin[3] = {j->part, g0, j->stage};
  int64_t e = cq_entries(j->nc);
  kiln_template_arg staged;
  kiln__targ_bool(&staged, "STAGED", pass == 3);
  if (st == KILN_OK)
    st = cq_launch(j, "cq_reduce", "Part,g0,Stage", "G", rin, 3, &j->g, 1,
                   &staged, 1, CQ_RED_THREADS, (e + 31) / 32, count);
  kiln__targ_int(&t[2], "PASS", pass);
  /* pass k reads the product so far from racc[k % 2] and writes the
   * next one into racc[(k + 1) % 2] (pass 1 reads nothing) */
  kiln_array *cin[6] = {j->g,  j->racc[pass % 2], j->shift, j->two,
                        g0,    j->r};
  kiln_array *cout[5] = {j->rt, j->racc[(pass + 1) % 2], j->flag, j->r,
                         j->stage};
  if (st == KILN_OK)
    st = cq_launch(j, "cq_chol", "G,Rin,shift,two,g0,Rsh",
                   "Rt,Rout,flag,R,Stage", cin, 6, cout, 5, t, 3, CQ_THREADS,
                   1, count);
  return st;
}

/* The three passes and Q for the batch entries [first, first + count). */
static kiln_status cq_chunk(cq_job *j, int64_t first, int64_t count) {
  kiln_array *g0 = NULL;
  kiln_status st = kiln__linalg_scalar(j->s, KILN_INT32, (double)first, &g0);
  for (int pass = 1; pass <= 3 && st == KILN_OK; pass++)
    st = cq_pass(j, pass, g0, count);
  if (st == KILN_OK && j->q != NULL)
    st = cq_rows_launch(j, 4, g0, count);
  kiln__array_destroy(g0);
  return st;
}

/* See cholqr.h. */
kiln_status kiln__qr_cholqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                            kiln_array *r, kiln_array *flag) {
  cq_job j;
  memset(&j, 0, sizeof j);
  j.s = s;
  j.a = a;
  j.q = q;
  j.r = r;
  j.flag = flag;
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
  for (int64_t first = 0; st == KILN_OK && first < j.batch;
       first += CQ_Y_CHUNK) {
    int64_t count = j.batch - first;
    st = cq_chunk(&j, first, count < CQ_Y_CHUNK ? count : CQ_Y_CHUNK);
  }
  cq_job_free(&j);
  return st;
}

/* See cholqr.h. */
kiln_status kiln__cholqr_for_each_config(kiln__cholqr_config_fn fn,
                                         void *user) {
  static const kiln_dtype dts[2] = {KILN_FLOAT32, KILN_FLOAT64};
  static const int ncs[3] = {16, 32, 64};
  kiln_status st = KILN_OK;
  /* cq_reduce: pass 2's (STAGED false) and pass 3's (true) */
  for (int pass = 2; pass <= 3 && st == KILN_OK; pass++) {
    kiln__cholqr_config reduce = {"cq_reduce", "Part,g0,Stage", "G",
                                  KILN_FLOAT64, -1, pass};
    st = fn(&reduce, user);
  }
  for (int d = 0; d < 2 && st == KILN_OK; d++)
    for (int c = 0; c < 3 && st == KILN_OK; c++) {
      static const char *const rows[4][3] = {
          {"cq_gram", "A,g0", "Part"},
          {"cq_first", "A,Rt,g0", "Q,Part"},
          {"cq_next", "Qin,Rt,g0,Stage", "Q,Part"},
          {"cq_last", "Qin,Rt,g0,Stage", "Q"}};
      for (int k = 0; k < 4 && st == KILN_OK; k++) {
        kiln__cholqr_config g = {rows[k][0], rows[k][1], rows[k][2],
                                 dts[d], ncs[c], -1};
        st = fn(&g, user);
      }
      for (int pass = 1; pass <= 3 && st == KILN_OK; pass++) {
        kiln__cholqr_config ch = {"cq_chol", "G,Rin,shift,two,g0,Rsh",
                                  "Rt,Rout,flag,R,Stage", dts[d], ncs[c],
                                  pass};
        st = fn(&ch, user);
      }
    }
  return st;
}
