/*
 * Cholesky factorization on any device: A = L L^T (lower) or A = U^T U
 * (upper), batched, float32 and float64, with kiln's own kernels
 * (kernels/cholesky.metal) and GEMM for the large updates.
 *
 * Order of work, as in every linalg driver: check the arguments, return an
 * empty result when there is nothing to factor, pick a path, launch, then
 * read back the per-matrix info (the order of the first leading minor that
 * is not positive definite) and either hand over the result or refuse it.
 * The result W is a new array that nobody else sees until success, so a
 * failure anywhere only has to destroy it.
 *
 * Paths (kiln_linalg_opts.path for kiln_cholesky_ex):
 *   0  auto: small for n <= 128, else blocked;
 *   1  small, n <= 128, one launch for the whole batch: a warp per matrix
 *      for n <= 32 (chol_warp, rows in lanes), else a threadgroup of 256
 *      threads per matrix holding it in registers (chol_small, capacity
 *      64 or 128). A batch of 1000 128 x 128 float32 matrices is 1000
 *      threadgroups, seven or eight per SM of an H100 (two resident at a
 *      time at 96 registers a thread), reading and writing each matrix
 *      once.
 *   2  blocked, recursive by columns: the columns [c0, c1) are factored
 *      as their left half, then the update of the right half (every row
 *      below) by it, then the right half (factor_columns); one panel of
 *      PW = 64 columns is chol_panel (one launch factors the panel's
 *      diagonal block, redundantly in each threadgroup, and solves RCH
 *      rows below it per threadgroup, so the panel solve is spread over
 *      the card without a separate triangular solve). An update at a
 *      split of width w is w / 2 deep, so most of the work (the top
 *      splits: n / 2 deep for the first) is deep GEMMs, near the GEMM's
 *      full speed; the lower-triangle part of an update is cut into a
 *      few batched GEMMs (column_update). chol_copy starts it,
 *      chol_finish ends it (eight elements a thread: with one they took
 *      0.32 ms each at 8192^2 float32 on an H200, moving ~0.8 TB/s; the
 *      change measured 9.62 -> 9.08 ms float32, 11.29 -> 10.89-10.94
 *      float64 on an H100). Measured on an H100 at n = 8192: a
 *      right-looking loop over 256-column blocks (every update 256 deep)
 *      took 16.2 ms in float32 and 20.2 ms in float64, this 12.9 and
 *      13.3 ms (cuSOLVER potrf 13.2 and 14.6 ms in the same runs). The
 *      panels are what is left to gain: with 128-column panels ncu put
 *      them at 4.4 ms (float32) and 6.6 ms (float64).
 *   3  blocked, with the triangular updates halved down to squares of
 *      64 (for tests: the batched GEMMs that only n in the thousands
 *      reach under path 2, on matrices a CPU factors in a moment).
 * Upper factors run the same kernels on mirrored indices (see the .metal)
 * and the same GEMMs on the transposed blocks.
 *
 * Changes to the blocked path, each behind an environment variable read
 * once (so that one benchmark process times every variant) and a test
 * hook (linalg.h). The counts are for n = 8192 on an H100 (estimates);
 * the measurements, one build on an NVIDIA H200 (2026-11-27, bench_linalg,
 * cuSOLVER Xpotrf upper 13.1 / 13.9 ms in the same runs; main before these
 * changes 12.26 / 12.21 ms), as "measured: float32 / float64 ms with the
 * variant off -> on", the others at that run's defaults (FUSE 1 for both,
 * and the short pivot chain dropped below on): 11.14-11.18 / 12.85. The
 * defaults now (FUSE 1 for float32 only, that chain gone) measured 10.59
 * / 11.90 ms in a later run (bench/RESULTS.md, "Eighth session, end").
 *   KILN_CHOL_INDEX (1, default; 0 off): the panels' k0 scalars are views
 *      into one int32 array 0 .. n-1 (kiln__linalg_iota, one launch a call)
 *      instead of a new 0-d array filled per panel: 128 fills (memsets
 *      between a GEMM and a panel, edges that programmatic dependent
 *      launch cannot overlap, ~3-5 us each) -> 0, ~0.4-0.6 ms. Measured:
 *      11.18 / 12.81 -> 11.14 / 12.85, no gain (kept: no cost either).
 *   KILN_CHOL_GEMM (1, default; 0 off; 2 always, for tests): float32
 *      updates of at least 32 tiles on gemm_f32 (kiln_gemm_ex's path 4)
 *      even below the 264 tiles from which the GEMM's auto path takes it
 *      (gemm_f32_tiles): the top split's 2048 x 2048 x 4096 block (256
 *      tiles, 34 GFLOP) and 7 deep updates of 124-256 tiles leave the
 *      64 x 64 SIMT tiles: ~1-2 ms (float32 only). Measured: 12.81 ->
 *      11.14 ms (float32), the largest gain.
 *   KILN_CHOL_FUSE (1 on, 0 off; unset on CUDA: 1 for float32, and for
 *      float64 with chol_panel2 (else 0); 0 on the CPU): at the 64 splits of two panels the right
 *      panel's update (rows x 64 x 64: one tile column, ~64 tiles, 64
 *      deep, a whole launch for ~1/20 of a wave's work) runs inside its
 *      chol_panel (chol_run's FUSE: each group stages the 64 columns left
 *      of the panel for its 128 rows, 2 x 32 at a time, and updates its
 *      registers, ~2-3 us added): 64 GEMM launches (~10-15 us each with
 *      their edges) -> 0: ~0.5-0.8 ms. Measured: FUSE 0 -> 1 11.37 /
 *      12.58 -> 11.14 / 12.85, hence on for float32 only; with
 *      chol_panel2 (H100, 2026-11-27) float64 9.90-9.99 -> 9.33 ms,
 *      float32 7.33 -> 7.27: on for both.
 *   KILN_CHOL_SPLITK (1, default; 0 off; 2 for tests): deep updates of
 *      few tiles cut along their depth where an H100 cost model says so
 *      (split_factor; on CUDA only): ~0.5 ms float32, ~0.1 ms float64.
 *      Measured: 11.43 / 12.99 -> 11.14 / 12.85.
 *   KILN_CHOL_SYRK (2, default: on, split-K folded in; 1 on without
 *      split-K pieces; 0 off):
 *      each split's update (the square's lower triangle and every row
 *      below it) as ONE trapezoid GEMM (syrk_update: kiln__gemm_tri,
 *      gemm_f32_tri / gemm_dmma_tri, one launch over exactly the 128-tiles
 *      on or below the diagonal) instead of column_blocks' D + 2 GEMMs.
 *      The count at n = 8192 on an H100 (264 float32 / 132 float64 tile
 *      slots; every tile of an update as deep as the update, so time =
 *      waves x depth; a wave-column 0.18 / 0.112 us as split_model's TK),
 *      NOT MEASURED: only the top split is cut into several GEMMs (D = 1
 *      float32, 2 float64); every lower split already was one GEMM over
 *      the whole rectangle [s0, n) x m, the square's upper tiles
 *      included. Top split (4096 deep): float32 256 + 512 tiles in 2
 *      launches = 3 waves -> 528 tiles in 1 = 2 waves (-0.74 ms); float64
 *      256 + 128 + 256 in 3 launches = 5 waves -> 528 in 1 = 4 waves
 *      (-0.46 ms). The next splits lose the square's upper tiles (2048
 *      deep: 768 -> 648 tiles, float64 6 -> 5 waves, -0.23 ms; the rest
 *      mostly the same waves). In all, by the wave model (split-K traffic
 *      included): float32 6.54 -> 5.80 ms of GEMM, 78 -> 77 GEMM launches
 *      (FUSE on); float64 7.24 -> 6.55 ms, 134 -> 132. Mode 2 (split-K
 *      as trapezoid pieces into a zeroed scratch, one fill launch more per
 *      split update) ties with 1 by the model (5.88 / 6.58 ms, 89 / 133
 *      launches). Expected: ~0.6-0.7 ms less in both dtypes, if the
 *      model's waves hold; the rest of the gap to cuSOLVER is partial
 *      waves at the lower splits (e.g. 420 tiles on 264 slots, 1024 deep).
 *      Measured (H100, 2026-11-27, one process per mode, bench_linalg;
 *      cuSOLVER Xpotrf lower 8.13-8.16 / 7.57-7.69 ms in the same runs):
 *      0 10.62-10.75 / 11.89-12.02, 1 9.73 / 11.29, 2 9.61 / 11.29 ms:
 *      -1.0 / -0.6 ms, hence 2 by default.
 *   KILN_CHOL_NARROW (a tile count T; 100 by default; 0: none): float32
 *      updates of fewer than T 128-tiles (a trapezoid's, or a
 *      rectangle's) leave gemm_f32 for the GEMM's auto path (64 x 64
 *      SIMT tiles below a wave) on column_blocks. The updates after
 *      each two-panel split (rows x 128, 128 deep: <= 63 tiles, under a
 *      quarter of the 264 gemm_f32 slots) took ~28 us each (32 of them)
 *      and the 256-deep ones ~42 us (16) on an H200: each 128-tile is as
 *      deep as the update (~0.18 us a column), where 4x as many 64-tiles
 *      would fill the card at a quarter of the work each. Count: ~10-15 us less a
 *      narrow update, ~0.5 ms. Measured (H200, 2026-11-27, one process
 *      per T, float32 8192^2; cuSOLVER Xpotrf lower 7.78-7.85 ms): T 0
 *      9.02-9.07, 64 8.85, 100 8.81, 132 8.81, 200 9.04, 264 9.78 ms:
 *      -0.2 ms (less than counted), hence 100.
 *   KILN_CHOL_PANEL (1, default: chol_panel2; 0 chol_panel): the panel
 *      kernel. The 128 panels run one after the other between the GEMMs,
 *      and a panel's time does not depend on its group count (ncu on an
 *      H200, float32 8192^2: 16.4-17.5 us for 1 to 127 groups, 26.4 us
 *      fused; float64 27.6 us): it is one threadgroup's latency chain.
 *      chol_panel's chain, from its per-instruction samples: ~3,400
 *      cycles before the first pivot (constant-cache misses and three
 *      dependent loads: batch0, then info behind a barrier, then k0, then
 *      the block), then 4 rounds of a 16-column factorization by shuffles
 *      at ~240 cycles a column (shuffle, IEEE sqrt and division with their
 *      slow-path checks, shuffle, fma; 8 warps, nothing to hide it) =
 *      ~15,600 cycles, ~3,600 of rank-16 updates between barriers, ~2,000
 *      of stores: ~27,500 SM cycles. chol_panel2 (kernels/cholesky.metal,
 *      "chol_panel2's pieces"), counted from its sm_90a SASS, NOT
 *      MEASURED: the scalars and the block loaded in two round trips
 *      (~1,500 cycles), then 8 rounds of 8 columns whose chain is two
 *      barriers, a solver thread's 8 x 8 tile in registers (per pivot
 *      MUFU.RSQ, FMUL, FFMA: ~26 cycles; ~300 a round with the tile's
 *      loads and the row's store; float64 ~85 a pivot, ~1,000 a round)
 *      and the next group's 8-deep update (~150, in the 4 warps that
 *      hold that group): ~500-600 a round, ~4,500 in all (float64
 *      ~9,500), the other updates hidden behind the solvers; float32
 *      ~6,000-6,500 SM cycles, 4x fewer. FUSE's 64-deep update: 48 -> 12
 *      shared-memory accesses per 4 columns and one staging round trip:
 *      ~4,000 issue cycles (float64 ~7,000). Expected per panel (adding
 *      the ~3.5 us that ncu showed between SM-active and elapsed):
 *      float32 16.9 -> ~7 us, fused 26.4 -> ~9 us; float64 27.6 -> ~9 us:
 *      ~1.7 ms less in float32 (9.61 -> ~7.9 ms), ~2.3 ms in float64
 *      (11.29 -> ~9.0 ms) at 8192^2, if the counts hold. Its threadgroups
 *      have 384 threads; every sm_90a configuration compiles to at most
 *      140 registers (168 fit), no spills. Measured (H100, 2026-11-27,
 *      ncu): 11.9 us a panel in float32 (chol_panel 21.6 with its fused
 *      ones), 13.6 in float64 (27.6); bench_linalg, KILN_CHOL_PANEL 0 ->
 *      1 in one build: 8.85 -> 7.33 ms float32, 10.80 -> 9.90-9.99 float64
 *      (cuSOLVER 8.1-8.2 / 7.6): less than counted, but the float32 goal.
 * Measured and dropped (branch wip/chol-variants keeps them; same run,
 * float32 / float64 ms):
 *   - KILN_CHOL_NARROW64, float64 updates of fewer than T 128-tiles on the
 *     GEMM's SIMT 64-tiles instead of DMMA (the 64-deep update after each
 *     panel, ~21.5 us on DMMA, counted ~8 us): float64 on an H200, T 0
 *     10.68-10.72, 64 11.05, 100 11.55, 132 12.38, 264 15.94 ms: the SIMT
 *     float64 tiles lose at every size (commit a710007, reverted);
 *   - a shorter pivot chain in chol_panel (chol_warp_factor shuffling the
 *     unscaled column with the pivot, the sqrt and the scaling off the
 *     chain; counted ~0.3 / ~0.5-0.8 ms less): on 11.14 / 12.85, off
 *     10.59 / 12.16, a loss of ~0.6 ms in both (its registers, 116 / 154,
 *     or the shuffle it moved: not found out);
 *   - FUSE 2 and 3 (ranges of 4 or 8 panels left-looking, each panel
 *     updated in its kernel by the range's panels before it): FUSE 2
 *     11.57 / 12.70 against 11.14 (FUSE 1) / 12.58 (FUSE 0); 3 counted to
 *     lose more, not measured;
 *   - the side-stream look-ahead (the next panel, or the left half of a
 *     split's right half, updated and factored on a second stream during
 *     the rest of the split's update; counted ~0.8-1.4 ms less): the half
 *     form at the splits up to 512 deep 11.41 / 12.89 against 11.14 /
 *     12.85; the one-panel form not measured (counted tile by tile to
 *     gain nothing: its narrow GEMM is as deep as the whole update).
 * Dropping them left the default path as it was measured (the same
 * launches; the kernels' sm_90a cubins byte-identical, checked; no
 * gain or loss expected, not timed).
 * What is left by the count, against targets of 9.1 and 8.8 ms: the
 * GEMMs' partial waves (deep updates of few tiles late in the matrix,
 * ~2 ms) and the 128 panels, still on the path one after the other
 * (chol_panel2: ~1 ms in float32 by its count).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"

#define CHOL_PATH_AUTO 0
#define CHOL_PATH_SMALL 1
#define CHOL_PATH_BLOCKED 2
#define CHOL_PATH_FINE 3

/* The small path's largest order (chol_small's largest capacity). */
#define CHOL_SMALL_MAX 128
/* The panel width of the blocked path, and the panel rows per threadgroup
 * of chol_panel: 64 x 64 leaves room in the registers for 64 rows in
 * float64 too, so that an 8192-row panel is one wave of 127 groups (an
 * H100 holds one per SM); measured on an H100 (8192^2), 64 columns beat
 * 128 (with 32 float64 rows: two waves) by 1 ms in float64 and tie in
 * float32. */
#define CHOL_PW 64
#define CHOL_RCH 64
/* The triangular updates stop halving once the diagonal squares left,
 * updated whole, are at most this many 128 x 128 GEMM tiles: about two
 * waves of the GEMM on an H100 (float32 tiles run two per SM, float64
 * one). Deep updates on smaller squares would leave most SMs idle. */
#define CHOL_LEAF_TILES_F32 528
#define CHOL_LEAF_TILES_F64 264
/* ... and never below squares of this order. */
#define CHOL_LEAF_MIN 256
/* Float32 updates of at least this many 128 x 128 tiles run on gemm_f32
 * (gemm_f32_tiles), and kiln_gemm_ex's path number for it. */
#define CHOL_F32_MIN_TILES 32
#define CHOL_GEMM_PATH_F32 4

#define CHOL_THREADS 256u    /* chol_small and chol_panel */
#define CHOL_WARP_THREADS 64 /* chol_warp: two warps per threadgroup */
/* Matrices per launch along grid.x (chol_warp; grid.x counts threads and
 * must fit 32 bits) and along grid.y (the other kernels; CUDA's limit). */
#define CHOL_X_CHUNK (1 << 20)
#define CHOL_Y_CHUNK 65535

/* One checked factorization and what the checks worked out. */
typedef struct chol_problem {
  kiln_array *a;
  bool upper;
  int64_t n, batch;
  kiln_stream *stream;
  kiln_linalg_opts opts;
  kiln_array *w;    /* the result being built */
  kiln_array *w3;   /* W as batch x n x n (the blocked path's views) */
  kiln_array *info; /* int32, one per matrix */
  kiln_array *dg;   /* blocked: the panels' diagonals, batch x n */
  bool fine;        /* path 3: the updates halved down to small leaves */
  kiln_array *idx;  /* blocked: int32 0 .. n-1, the kernels' scalars */
  int fuse;         /* 1: the two-panel splits' update in chol_panel
                       (FUSE); 0 off */
  int gemm_f32;     /* float32 updates on gemm_f32 (gemm_f32_tiles): 0
                       never, 1 from CHOL_F32_MIN_TILES tiles, 2 always */
  int splitk;       /* split-K updates (split_factor): 0 off, 1, 2 */
  int syrk;         /* each update one trapezoid GEMM (syrk_update): 0
                       off; 1, split-K updates on column_blocks; 2,
                       split-K in trapezoid pieces */
  int64_t narrow;   /* float32 updates of fewer 128-tiles than this on
                       the GEMM's auto path (KILN_CHOL_NARROW); 0: none */
  int panel;        /* the panel kernel: 0 chol_panel, 1 chol_panel2 */
} chol_problem;

/* See linalg.h. */
int kiln__chol_gemm_test = -1;
int kiln__chol_fuse_test = -1;
int kiln__chol_splitk_test = -1;
int kiln__chol_syrk_test = -1;
int kiln__chol_narrow_test = -1;
int kiln__chol_panel_test = -1;

/* KILN_CHOL_INDEX, KILN_CHOL_GEMM, KILN_CHOL_FUSE, KILN_CHOL_SPLITK and
 * KILN_CHOL_SYRK (0 to 1 or 2; the defaults below, FUSE's -1 meaning by
 * dtype), read once per process: so that one GPU call can time every
 * variant, one process each (see the top of the file). */
static int g_env_index = 1, g_env_gemm = 1, g_env_fuse = -1;
static int g_env_splitk = 1, g_env_syrk = 2, g_env_narrow = 100;
static int g_env_panel = 1;
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

static int env_mode(const char *name, int most, int dflt) {
  const char *v = getenv(name);
  if (v != NULL && v[0] >= '0' && v[0] <= '0' + most && v[1] == '\0')
    return v[0] - '0';
  return dflt;
}

static void read_env(void) {
  g_env_index = env_mode("KILN_CHOL_INDEX", 1, 1);
  g_env_gemm = env_mode("KILN_CHOL_GEMM", 2, 1);
  g_env_fuse = env_mode("KILN_CHOL_FUSE", 1, -1);
  g_env_splitk = env_mode("KILN_CHOL_SPLITK", 2, 1);
  g_env_syrk = env_mode("KILN_CHOL_SYRK", 2, 2);
  /* a tile count, 0 to 9999 */
  const char *v = getenv("KILN_CHOL_NARROW");
  char *end = NULL;
  long t = v != NULL ? strtol(v, &end, 10) : 0;
  if (v != NULL && end != v && *end == '\0' && t >= 0 && t < 10000)
    g_env_narrow = (int)t;
  g_env_panel = env_mode("KILN_CHOL_PANEL", 1, 1);
}

/* ---- checks -------------------------------------------------------------- */

static kiln_status check_problem(chol_problem *p) {
  kiln_array *a = p->a;
  static const char *const names[1] = {"A"};
  if (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s; Cholesky supports float32 and float64.",
                       kiln_dtype_name(a->dtype));
  kiln_status st = kiln__linalg_batch(&p->a, 1, names, &p->batch);
  if (st != KILN_OK)
    return st;
  int64_t rows = a->shape[a->ndim - 2], cols = a->shape[a->ndim - 1];
  if (rows != cols)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld; Cholesky needs square matrices.",
                       (long long)rows, (long long)cols);
  p->n = rows;
  if (p->n > 65535)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %lld x %lld; Cholesky supports n up to 65535.",
                       (long long)rows, (long long)cols);
  return kiln__linalg_stream(&p->opts, &p->a, 1, &p->stream);
}

static kiln_status choose_path(const chol_problem *p, int *path) {
  int want = p->opts.path;
  if (want < CHOL_PATH_AUTO || want > CHOL_PATH_FINE)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; Cholesky knows 0 (auto), 1 (small), "
                       "2 (blocked) and 3 (blocked, fine updates).",
                       want);
  if (want == CHOL_PATH_SMALL && p->n > CHOL_SMALL_MAX)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 1 (small) holds matrices up to %d x %d, "
                       "but A is %lld x %lld.",
                       CHOL_SMALL_MAX, CHOL_SMALL_MAX, (long long)p->n,
                       (long long)p->n);
  if (want == CHOL_PATH_AUTO)
    want = p->n <= CHOL_SMALL_MAX ? CHOL_PATH_SMALL : CHOL_PATH_BLOCKED;
  *path = want;
  return KILN_OK;
}

/* ---- launch helpers ------------------------------------------------------ */

/* A 0-d int32 holding `value`, filled in stream order (no host wait). */
static kiln_status int_scalar(const chol_problem *p, int64_t value,
                              kiln_array **out) {
  if (p->idx != NULL && value > 0 && value < p->idx->size) {
    /* a view into idx: no fill between two kernels */
    const char *api = kiln__api_current();
    kiln_status st = kiln_array_view(p->idx, 0, NULL, NULL, value, out);
    kiln__api_enter(api);
    return st;
  }
  return kiln__linalg_scalar(p->stream, KILN_INT32, (double)value, out);
}

/* p->idx = 0 .. n-1 (kiln__linalg_iota), so that every panel's k0 is a
 * view (the blocked path's 2 n / PW scalar fills were each an edge that
 * programmatic dependent launch cannot overlap). */
static kiln_status make_index(chol_problem *p) {
  return kiln__linalg_iota(p->stream, p->n, &p->idx);
}

static kiln_status chol_kernel(const char *name, const char *inputs,
                               const char *outputs, kiln_kernel **k) {
  return kiln__library_kernel("cholesky", name, inputs, outputs,
                              KILN__LIB_NO_ROW_CONTIG, k);
}

/*
 * Launches `k` over the batch in chunks of CHOL_Y_CHUNK matrices along
 * grid.y: inputs `in` (nin of them) followed by the chunk's batch0, the
 * outputs written in place into `into`, grid.x = gx threads in groups of
 * tg.
 */
static kiln_status launch_over_batch(const chol_problem *p, kiln_kernel *k,
                                     kiln_array *const *in, int nin,
                                     kiln_array **into, int nout,
                                     const kiln_template_arg *t, int nt,
                                     uint32_t gx, uint32_t tg) {
  kiln_output_spec spec[3];
  for (int i = 0; i < nout; i++)
    kiln__linalg_out_spec(&spec[i], into[i]);
  kiln_array *inputs[8]; /* nin <= 7 */
  for (int i = 0; i < nin; i++)
    inputs[i] = in[i];
  kiln_status st = KILN_OK;
  for (int64_t first = 0; st == KILN_OK && first < p->batch;
       first += CHOL_Y_CHUNK) {
    int64_t count = p->batch - first;
    if (count > CHOL_Y_CHUNK)
      count = CHOL_Y_CHUNK;
    st = int_scalar(p, first, &inputs[nin]);
    if (st != KILN_OK)
      break;
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->stream);
    L.inputs = inputs;
    L.num_inputs = nin + 1;
    L.outputs = spec;
    L.num_outputs = nout;
    L.template_args = t;
    L.num_template_args = nt;
    L.grid[0] = gx;
    L.grid[1] = (uint32_t)count;
    L.threadgroup[0] = tg;
    st = kiln__kernel_launch_into(k, &L, into);
    kiln__array_destroy(inputs[nin]);
  }
  return st;
}

/* chol_warp over every matrix (n <= w, w = 16 or 32): a warp per matrix,
 * two per warp for w = 16; chunks along grid.x. */
static kiln_status launch_warp(const chol_problem *p, int w) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel("chol_warp", "A,batch0,count", "L,info", &k);
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "W", w);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln_output_spec spec[2];
  kiln__linalg_out_spec(&spec[0], p->w);
  kiln__linalg_out_spec(&spec[1], p->info);
  kiln_array *into[2] = {p->w, p->info};
  int64_t per_group = (CHOL_WARP_THREADS / 32) * (32 / w);
  for (int64_t first = 0; st == KILN_OK && first < p->batch;
       first += CHOL_X_CHUNK) {
    int64_t count = p->batch - first;
    if (count > CHOL_X_CHUNK)
      count = CHOL_X_CHUNK;
    kiln_array *in[3] = {p->a, NULL, NULL};
    st = int_scalar(p, first, &in[1]);
    if (st == KILN_OK)
      st = int_scalar(p, count, &in[2]);
    if (st == KILN_OK) {
      kiln_launch L;
      kiln__linalg_launch_init(&L, p->stream);
      L.inputs = in;
      L.num_inputs = 3;
      L.outputs = spec;
      L.num_outputs = 2;
      L.template_args = t;
      L.num_template_args = 3;
      L.grid[0] = (uint32_t)((count + per_group - 1) / per_group *
                             CHOL_WARP_THREADS);
      L.threadgroup[0] = CHOL_WARP_THREADS;
      st = kiln__kernel_launch_into(k, &L, into);
    }
    kiln__array_destroy(in[1]);
    kiln__array_destroy(in[2]);
  }
  return st;
}

/* chol_small over every matrix: a threadgroup per matrix, capacity pw. */
static kiln_status launch_small(const chol_problem *p, int pw) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel("chol_small", "A,batch0", "L,info", &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "PW", pw);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln_array *into[2] = {p->w, p->info};
  return launch_over_batch(p, k, &p->a, 1, into, 2, t, 3, CHOL_THREADS,
                           CHOL_THREADS);
}

/* The small path: the cheapest kernel whose capacity holds n. */
static kiln_status run_small(const chol_problem *p) {
  if (p->n <= 32)
    return launch_warp(p, p->n <= 16 ? 16 : 32);
  return launch_small(p, p->n <= 64 ? 64 : 128);
}

/* Elements per thread of chol_copy and chol_finish (CHOL_EW in the
 * .metal): a warp takes 32 x CHOL_EW consecutive elements. */
#define CHOL_EW 8

/* Threads for chol_copy / chol_finish over one matrix: a warp per 32 x
 * CHOL_EW elements, rounded up to the group of 256. */
static uint32_t element_threads(const chol_problem *p) {
  uint64_t elems = (uint64_t)p->n * (uint64_t)p->n;
  uint64_t warps = (elems + 32 * CHOL_EW - 1) / (32 * CHOL_EW);
  return (uint32_t)((warps * 32 + 255) / 256 * 256);
}

/* W = the logical lower triangle of A (the blocked path's start). */
static kiln_status launch_copy(const chol_problem *p) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel("chol_copy", "A,batch0", "L", &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_bool(&t[1], "UPPER", p->upper);
  kiln_array *into[1] = {p->w};
  return launch_over_batch(p, k, &p->a, 1, into, 1, t, 2, element_threads(p),
                           256);
}

/* chol_panel on the panel whose diagonal block starts at p0, first
 * updated in the kernel by the kw columns left of it (FUSE; kw 0: none;
 * chol_panel2 takes kw <= CHOL_PW, the one panel of a two-panel split). */
static kiln_status launch_panel(const chol_problem *p, int64_t p0,
                                int64_t kw) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel(p->panel ? "chol_panel2" : "chol_panel",
                               "Win,k0,kw,batch0", "L,info,Dg", &k);
  kiln_array *in[3] = {p->w, NULL, NULL};
  if (st == KILN_OK)
    st = int_scalar(p, p0, &in[1]);
  if (st == KILN_OK)
    st = int_scalar(p, kw, &in[2]);
  if (st != KILN_OK) {
    kiln__array_destroy(in[1]);
    return st;
  }
  int rch = CHOL_RCH;
  kiln_template_arg t[5];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "PW", CHOL_PW);
  kiln__targ_int(&t[2], "RCH", rch);
  kiln__targ_bool(&t[3], "UPPER", p->upper);
  kiln__targ_bool(&t[4], "FUSE", kw > 0);
  int64_t below = p->n - p0 - CHOL_PW;
  int64_t groups = below > 0 ? (below + rch - 1) / rch : 1;
  kiln_array *into[3] = {p->w, p->info, p->dg};
  /* chol_panel2: 256 threads hold the block, PW + RCH more solve rows */
  uint32_t threads = CHOL_THREADS + (p->panel ? CHOL_PW + CHOL_RCH : 0);
  st = launch_over_batch(p, k, in, 3, into, 3, t, 5,
                         (uint32_t)groups * threads, threads);
  kiln__array_destroy(in[1]);
  kiln__array_destroy(in[2]);
  return st;
}

/* chol_finish: the panels' diagonal blocks home, zeros above. */
static kiln_status launch_finish(const chol_problem *p) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel("chol_finish", "Win,Dg,batch0", "L", &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "PW", CHOL_PW);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln_array *in[2] = {p->w, p->dg};
  kiln_array *into[1] = {p->w};
  return launch_over_batch(p, k, in, 2, into, 1, t, 3, element_threads(p),
                           256);
}

/* ---- the GEMM updates ---------------------------------------------------- */

/*
 * Whether the float32 update into C runs on gemm_f32 whatever its tile
 * count (kiln_gemm_ex's path 4, KILN_CHOL_GEMM = 1): the GEMM's auto path
 * takes gemm_f32 (128 x 128 tiles, two groups an SM, ~48 TFLOP/s full)
 * only when its tiles fill two per SM (264 on an H100), else the 64 x 64
 * SIMT tiles (4 x 4 a thread; the 8 x 8 SIMT kernel ran ~28 TFLOP/s at
 * 8192^3, the 4 x 4 one less). The count at n = 8192 (estimated, NOT
 * measured): the top split's 2048 x 2048 x 4096 block is 256 tiles, one
 * short of gemm_f32 (34 GFLOP: ~0.74 ms as one gemm_f32 wave, ~1.3-2 ms
 * on the 64-tiles), and 7 more deep updates have 124-256 tiles (512-2048
 * deep, ~33 GFLOP in all): ~1-2 ms less for float32 in all. Below
 * CHOL_F32_MIN_TILES tiles (a quarter of the card) the auto choice stays;
 * mode 2 (tests) takes gemm_f32 for every float32 update.
 */
static bool gemm_f32_tiles(const chol_problem *p, const kiln_array *c) {
  if (p->gemm_f32 <= 0 || p->gemm_f32 > 2 || c->dtype != KILN_FLOAT32)
    return false;
  int64_t rows = c->shape[c->ndim - 2], cols = c->shape[c->ndim - 1];
  if (rows == 0 || cols == 0)
    return false;
  int64_t mats = c->size / (rows * cols);
  int64_t tiles = mats * ((rows + 127) / 128) * ((cols + 127) / 128);
  return p->gemm_f32 == 2 ||
         (tiles >= CHOL_F32_MIN_TILES && tiles >= p->narrow);
}

/* C -= A op B on views of W, op = ^T for lower, A^T B for upper (the
 * views are then the transposed blocks). */
/* C = alpha op(A) op(B) + beta C as update() and update_split() need it
 * (op as for update), on gemm_f32 where gemm_f32_tiles says so. */
static kiln_status run_gemm(const chol_problem *p, double alpha,
                            kiln_array *a, kiln_array *b, double beta,
                            kiln_array *c) {
  if (!gemm_f32_tiles(p, c))
    return kiln__linalg_gemm(p->stream, p->upper, !p->upper, alpha, a, b,
                             beta, c);
  /* kiln__linalg_gemm with opts->path 4 (gemm_f32 at any size) */
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.stream = p->stream;
  o.path = CHOL_GEMM_PATH_F32;
  const char *api = kiln__api_current();
  kiln_status st = kiln_gemm_ex(p->upper, !p->upper, alpha, a, b, beta, c,
                                &o);
  kiln__api_enter(api);
  return st;
}

static kiln_status update(const chol_problem *p, kiln_array *a,
                          kiln_array *b, kiln_array *c) {
  kiln_status st = a != NULL && b != NULL && c != NULL
                       ? run_gemm(p, -1.0, a, b, 1.0, c)
                       : KILN_OK;
  kiln__array_destroy(a);
  kiln__array_destroy(b);
  kiln__array_destroy(c);
  return st;
}

/* A view of W3's block (r, c) of rows x cols (memory coordinates), or,
 * with cnt > 0, of cnt such blocks `step` elements apart (a batch
 * dimension after W's own, for one GEMM over all of them). */
static kiln_status block(const chol_problem *p, int64_t r, int64_t c,
                         int64_t rows, int64_t cols, int64_t cnt,
                         int64_t step, kiln_array **out) {
  if (cnt == 0)
    return kiln__linalg_block(p->w3, r, c, rows, cols, out);
  int64_t n = p->n;
  int64_t shape[4] = {p->batch, cnt, rows, cols};
  int64_t strides[4] = {n * n, step, n, 1};
  /* kiln_array_view is public and renames the API for messages. */
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(p->w3, 4, shape, strides, r * n + c, out);
  kiln__api_enter(api);
  return st;
}

/* ---- split-K updates ---------------------------------------------------- */

static bool on_cuda(const chol_problem *p) {
  return strcmp(p->stream->device->info.backend, "cuda") == 0;
}

/*
 * The number of pieces to cut the depth of an update into (1: none), for
 * cnt blocks of rows x cols (logical) and depth kw. A deep update of few
 * GEMM tiles leaves most SMs idle for its whole depth: the square of
 * 1024 at the last split of 8192 (1024 deep) is 64 tiles for 132 SMs
 * (264 float32 slots). Cut into s pieces (a batched GEMM into a scratch
 * array, beta 0, then chol_ksum subtracting the pieces from W in order,
 * so the result is deterministic), it is s times the tiles, each s times
 * shorter, for (2 s + 2) passes of the block's bytes. The cost model, per
 * s: ceil(tiles s / slots) waves of kw / s columns at TK seconds a column
 * and wave, plus the scratch's traffic at KSUM_BW and one more launch;
 * the least s wins, if by a tenth and KSUM_MIN_GAIN. TK and KSUM_BW are
 * an H100's (the float32 and float64 GEMMs' measured 48 and 38.6 TFLOP/s
 * at 8192^3 over 264 and 132 slots; ~3 TB/s), so other GPUs get a
 * rougher choice, and mode 1 splits nothing off CUDA. The count at n =
 * 8192 (estimated, NOT measured): ~0.5 ms (float32: 19 updates 128 to
 * 1024 deep, e.g. the last 1024^3 square 184 -> ~65 us, 512^3 92 -> ~32),
 * ~0.1 ms (float64: 5 updates). Measured on an H200 (KILN_CHOL_SPLITK 0
 * -> 1, one build, 8192^2): 11.43 -> 11.14 ms (float32), 12.99 -> 12.85
 * (float64). Mode 2 (tests) splits every update at
 * least 128 deep into as many pieces as mode 1 could (up to 16, each a
 * multiple of 64 deep).
 */
#define KSUM_TK_F32 0.18e-6
#define KSUM_TK_F64 0.112e-6
#define KSUM_BW 3.0e12
#define KSUM_LAUNCH 5e-6
/* ... and a split must save a tenth and this many seconds by the model
 * (below, the model's error and the extra launch's edges dominate). */
#define KSUM_MIN_GAIN 10e-6
/* Scratch elements at most (the pieces of one update). */
#define KSUM_MAX_ELEMS ((int64_t)1 << 25)

static int split_model(const chol_problem *p, int64_t kw, int64_t tiles,
                       int64_t elems, bool fill);

static int split_factor(const chol_problem *p, int64_t kw, int64_t rows,
                        int64_t cols, int64_t cnt) {
  if (p->splitk <= 0 || p->splitk > 2 || rows == 0 || cols == 0)
    return 1;
  if (p->splitk == 2) { /* the most pieces of 64 columns and more */
    int most = 1;
    while (most < 16 && kw % (64 * 2 * most) == 0)
      most *= 2;
    return most;
  }
  if (!on_cuda(p)) /* the model is an H100's */
    return 1;
  int64_t tiles = p->batch * cnt * ((rows + 127) / 128) * ((cols + 127) / 128);
  return split_model(p, kw, tiles, p->batch * cnt * rows * cols, false);
}

/* split_factor's cost model for `tiles` 128-tiles kw deep, whose pieces
 * would take `elems` elements of scratch each; `fill`: the scratch is
 * zeroed first (one more pass of it: syrk_update's pieces). */
static int split_model(const chol_problem *p, int64_t kw, int64_t tiles,
                       int64_t elems, bool fill) {
  bool f64 = p->a->dtype == KILN_FLOAT64;
  int64_t units = p->stream->device->info.compute_units;
  int64_t slots = (units > 0 ? units : 1) * (f64 ? 1 : 2);
  double tk = f64 ? KSUM_TK_F64 : KSUM_TK_F32, sz = f64 ? 8.0 : 4.0;
  double best = (double)((tiles + slots - 1) / slots) * (double)kw * tk;
  int pick = 1;
  for (int64_t sp = 2; sp <= 16 && kw % (64 * sp) == 0; sp *= 2) {
    if (elems * sp > KSUM_MAX_ELEMS)
      break;
    double t = (double)((tiles * sp + slots - 1) / slots) *
                   (double)(kw / sp) * tk +
               (double)elems * sz * (double)(2 * sp + 2 + (fill ? sp : 0)) /
                   KSUM_BW +
               KSUM_LAUNCH;
    if (t < 0.9 * best && t < best - KSUM_MIN_GAIN) {
      best = t;
      pick = (int)sp;
    }
  }
  return pick;
}

/* A view of W3's cnt blocks (memory coordinates r, c; rows x cols; `step`
 * elements apart), each as `pieces` blocks `pstep` apart: batch x cnt x
 * pieces x rows x cols. */
static kiln_status block5(const chol_problem *p, int64_t r, int64_t c,
                          int64_t rows, int64_t cols, int64_t cnt,
                          int64_t step, int64_t pieces, int64_t pstep,
                          kiln_array **out) {
  int64_t n = p->n;
  int64_t shape[5] = {p->batch, cnt, pieces, rows, cols};
  int64_t strides[5] = {n * n, step, pstep, n, 1};
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(p->w3, 5, shape, strides, r * n + c, out);
  kiln__api_enter(api);
  return st;
}

/* chol_ksum: W's cnt blocks at memory (r, c), `dr` rows and `dc` columns
 * apart, minus the pieces of S (batch x cnt x pieces x R x C), in order. */
static kiln_status launch_ksum(const chol_problem *p, kiln_array *sc,
                               int64_t r, int64_t c, int64_t dr, int64_t dc,
                               int pieces) {
  kiln_kernel *k = NULL;
  kiln_status st = chol_kernel("chol_ksum", "S,Win,r0,c0,dr,dc,batch0", "L",
                               &k);
  kiln_array *in[7] = {sc, p->w, NULL, NULL, NULL, NULL, NULL};
  int64_t v[4] = {r, c, dr, dc};
  for (int i = 0; st == KILN_OK && i < 4; i++)
    st = int_scalar(p, v[i], &in[2 + i]);
  if (st == KILN_OK) {
    kiln_template_arg t[2];
    kiln__targ_dtype(&t[0], "T", p->a->dtype);
    kiln__targ_int(&t[1], "PIECES", pieces);
    uint64_t elems = (uint64_t)(sc->size / p->batch / pieces);
    kiln_array *into[1] = {p->w};
    st = launch_over_batch(p, k, in, 6, into, 1, t, 2,
                           (uint32_t)((elems + 255) / 256 * 256), 256);
  }
  for (int i = 2; i < 6; i++)
    kiln__array_destroy(in[i]);
  return st;
}

/* update_blocks cut into `pieces` along the depth (split_factor): the
 * pieces' products into a scratch array by one batched GEMM, then
 * chol_ksum. cnt >= 1 here. */
static kiln_status update_split(const chol_problem *p, int64_t k0,
                                int64_t k1, int64_t r, int64_t c,
                                int64_t rows, int64_t cols, int64_t cnt,
                                int64_t dr, int64_t dc, int pieces) {
  int64_t n = p->n, kc = (k1 - k0) / pieces;
  /* memory coordinates of C: the transpose for the upper factor */
  int64_t mr = p->upper ? c : r, mc = p->upper ? r : c;
  int64_t mrows = p->upper ? cols : rows, mcols = p->upper ? rows : cols;
  int64_t mdr = p->upper ? dc : dr, mdc = p->upper ? dr : dc;
  kiln_array *va = NULL, *vb = NULL, *sc = NULL;
  int64_t shape[5] = {p->batch, cnt, pieces, mrows, mcols};
  kiln_status st =
      kiln__array_create(p->stream->device, p->a->dtype, 5, shape, &sc);
  if (st == KILN_OK && !p->upper) {
    st = block5(p, r, k0, rows, kc, cnt, dr * n, pieces, kc, &va);
    if (st == KILN_OK)
      st = block5(p, c, k0, cols, kc, cnt, dc * n, pieces, kc, &vb);
  } else if (st == KILN_OK) {
    st = block5(p, k0, c, kc, cols, cnt, dc, pieces, kc * n, &va);
    if (st == KILN_OK)
      st = block5(p, k0, r, kc, rows, cnt, dr, pieces, kc * n, &vb);
  }
  if (st == KILN_OK)
    st = run_gemm(p, 1.0, va, vb, 0.0, sc);
  if (st == KILN_OK)
    st = launch_ksum(p, sc, mr, mc, mdr, mdc, pieces);
  kiln__array_destroy(va);
  kiln__array_destroy(vb);
  kiln__array_destroy(sc);
  return st;
}

/* C -= L21 L21^T restricted to blocks (logical rows x columns of the
 * lower triangle); memory coordinates swap for the upper factor. The
 * logical block (r, c) of rows x cols, cnt of them `dr`, `dc` apart
 * (cnt 0: one, no extra batch dimension), against the panel columns
 * [k0, k1) of rows r.. and c.. */
static kiln_status update_blocks(const chol_problem *p, int64_t k0,
                                 int64_t k1, int64_t r, int64_t c,
                                 int64_t rows, int64_t cols, int64_t cnt,
                                 int64_t dr, int64_t dc) {
  int64_t n = p->n, kw = k1 - k0;
  int split = split_factor(p, kw, rows, cols, cnt > 0 ? cnt : 1);
  if (split > 1)
    return update_split(p, k0, k1, r, c, rows, cols, cnt > 0 ? cnt : 1, dr,
                        dc, split);
  kiln_array *va = NULL, *vb = NULL, *vc = NULL;
  kiln_status st;
  if (!p->upper) {
    st = block(p, r, c, rows, cols, cnt, dr * n + dc, &vc);
    if (st == KILN_OK)
      st = block(p, r, k0, rows, kw, cnt, dr * n, &va);
    if (st == KILN_OK)
      st = block(p, c, k0, cols, kw, cnt, dc * n, &vb);
  } else {
    st = block(p, c, r, cols, rows, cnt, dc * n + dr, &vc);
    if (st == KILN_OK)
      st = block(p, k0, c, kw, cols, cnt, dc, &va);
    if (st == KILN_OK)
      st = block(p, k0, r, kw, rows, cnt, dr, &vb);
  }
  if (st != KILN_OK) {
    kiln__array_destroy(va);
    kiln__array_destroy(vb);
    kiln__array_destroy(vc);
    return st;
  }
  /* upper: C(mem) = U(:, c)^T U(:, r), the transpose of the lower C */
  return update(p, va, vb, vc);
}

/*
 * The update of the columns [s0, s0 + m) by the factored columns [k0, k1)
 * (k1 <= s0), every row from s0 down: A -= L L^T on the lower triangle of
 * the square [s0, s0 + m)^2 and all of the rows below it. The part above
 * the square's diagonal is never read (it belongs to panels not yet
 * factored, whose diagonal blocks chol_panel and chol_finish rewrite), so
 * small squares are updated whole. A larger square of order m is cut
 * into 2^D squares of order B = floor(m / 2^D); its lower triangle is
 * then, level by level, the squares just below the diagonal of a
 * recursive halving: level d holds 2^(d-1) squares of order B 2^(D-d),
 * equally spaced, so each level is one GEMM over a batch of views; the
 * 2^D diagonal leaves are one more GEMM (whole squares), and one last
 * GEMM takes the rows left over below them together with every
 * row under the square. D is the least that leaves the leaves at most
 * CHOL_LEAF_TILES GEMM tiles (or squares of CHOL_LEAF_MIN): these updates
 * are deep, so what counts is the number of GEMM waves, and a level
 * of fewer tiles than the card has SMs costs a full wave. D + 2 GEMMs
 * at most.
 */
static kiln_status column_blocks(const chol_problem *p, int64_t k0,
                                 int64_t k1, int64_t s0, int64_t m) {
  int64_t t = (m + 127) / 128, tiles = t * t;
  int64_t most = p->a->dtype == KILN_FLOAT64 ? CHOL_LEAF_TILES_F64
                                              : CHOL_LEAF_TILES_F32;
  int64_t least = CHOL_LEAF_MIN;
  if (p->fine) /* path 3: every GEMM shape of a large n on a small one */
    most = 1, least = 64;
  int levels = 0;
  while ((m >> levels) > least && (tiles >> levels) > most)
    levels++;
  int64_t b = m >> levels, covered = levels > 0 ? b << levels : 0;
  kiln_status st = KILN_OK;
  for (int d = 1; st == KILN_OK && d <= levels; d++) {
    int64_t s = b << (levels - d), cnt = (int64_t)1 << (d - 1);
    st = update_blocks(p, k0, k1, s0 + s, s0, s, s, cnt, 2 * s, 2 * s);
  }
  if (st == KILN_OK && levels > 0)
    st = update_blocks(p, k0, k1, s0, s0, b, b, (int64_t)1 << levels, b, b);
  if (st == KILN_OK && s0 + covered < p->n)
    st = update_blocks(p, k0, k1, s0 + covered, s0, p->n - s0 - covered, m,
                       0, 0, 0);
  return st;
}

/*
 * The same update as ONE trapezoid GEMM (kiln__gemm_tri, KILN_CHOL_SYRK):
 * the 128-tiles of the block [s0, n) x [s0, s0 + m) on or below its
 * diagonal, every row under the square included, in one launch over
 * exactly those tiles, where column_blocks runs D + 2 GEMMs (its levels,
 * leaves and the rows below) or, for a small square, one GEMM over the
 * whole rectangle, the square's upper triangle of tiles included. Its
 * tiles are all as deep as the update, so what counts is waves: tiles
 * over slots (an H100: 264 gemm_f32 groups, 132 DMMA groups). At n =
 * 8192 (more in the header of this file) the top split (4096 deep, the
 * square 4096) is 528 tiles = 2 float32 waves or 4 float64 waves,
 * against column_blocks' 256 + 512 tiles in 2 launches, 3 waves
 * (float32), and 256 + 128 + 256 in 3 launches, 5 waves (float64).
 * Where the split-K model says so (syrk_pieces: deep and few tiles),
 * mode 1 (KILN_CHOL_SYRK=1) leaves the update to column_blocks, whose
 * GEMMs it then cuts; mode 2 cuts the depth into pieces as update_split
 * does, the trapezoid of each piece into a zeroed scratch (so that
 * chol_ksum, which subtracts whole blocks, subtracts zeros above the
 * diagonal), then chol_ksum: one launch more (the fill) but the
 * trapezoid's tiles. By the model the two tie (n = 8192: 5.80 / 5.88 ms
 * float32, 6.55 / 6.58 float64, NOT MEASURED). Float32 runs gemm_f32's
 * tiles whatever KILN_CHOL_GEMM says.
 */
static kiln_status syrk_launch(const chol_problem *p, int64_t k0,
                               int64_t k1, int64_t s0, int64_t m,
                               int pieces);

/* The pieces to cut the trapezoid update of the columns [s0, s0 + m), kw
 * deep, into (split_factor's modes; 1: none). */
static int syrk_pieces(const chol_problem *p, int64_t kw, int64_t s0,
                       int64_t m) {
  int64_t rows = p->n - s0;
  if (p->splitk <= 0 || p->splitk > 2)
    return 1;
  if (p->splitk == 2 || !on_cuda(p)) /* tests; off CUDA: 1 */
    return split_factor(p, kw, rows, m, 1);
  int64_t tm = (rows + 127) / 128, tn = (m + 127) / 128;
  int64_t tiles = p->batch * (tm * tn - tn * (tn - 1) / 2);
  return split_model(p, kw, tiles, p->batch * rows * m, p->syrk == 2);
}

static kiln_status syrk_update(const chol_problem *p, int64_t k0,
                               int64_t k1, int64_t s0, int64_t m) {
  if (p->narrow > 0 && p->a->dtype == KILN_FLOAT32) {
    int64_t tm = (p->n - s0 + 127) / 128, tn = (m + 127) / 128;
    if (p->batch * (tm * tn - tn * (tn - 1) / 2) < p->narrow)
      return column_blocks(p, k0, k1, s0, m);
  }
  int pieces = syrk_pieces(p, k1 - k0, s0, m);
  if (pieces > 1 && p->syrk == 1)
    return column_blocks(p, k0, k1, s0, m);
  return syrk_launch(p, k0, k1, s0, m, pieces);
}

/* An operand of syrk_launch: W3's block (r, c) of rows x cols, or with
 * pieces > 1 that many blocks `pstep` apart (batch x 1 x pieces x rows x
 * cols, as the scratch). */
static kiln_status syrk_operand(const chol_problem *p, int64_t r,
                                int64_t c, int64_t rows, int64_t cols,
                                int pieces, int64_t pstep,
                                kiln_array **out) {
  if (pieces == 1)
    return block(p, r, c, rows, cols, 0, 0, out);
  return block5(p, r, c, rows, cols, 1, 0, pieces, pstep, out);
}

/* syrk_update's launches: with pieces == 1 one trapezoid GEMM into W,
 * else the fill, the pieces' trapezoids into the scratch (one launch:
 * the pieces are a batch dimension) and chol_ksum. */
static kiln_status syrk_launch(const chol_problem *p, int64_t k0,
                               int64_t k1, int64_t s0, int64_t m,
                               int pieces) {
  int64_t n = p->n, rows = n - s0, kc = (k1 - k0) / pieces;
  int64_t mr = p->upper ? m : rows, mc = p->upper ? rows : m;
  int64_t shape[5] = {p->batch, 1, pieces, mr, mc};
  kiln_array *va = NULL, *vb = NULL, *vc = NULL, *sc = NULL;
  kiln_status st = KILN_OK;
  if (pieces > 1) {
    st = kiln__array_create(p->stream->device, p->a->dtype, 5, shape, &sc);
    if (st == KILN_OK)
      st = kiln__array_fill(sc, 0.0, p->stream);
  } else {
    st = block(p, s0, s0, mr, mc, 0, 0, &vc);
  }
  /* lower: C = [s0, n) x [s0, s0 + m) -= L(s0.., k) L(s0..s0 + m, k)^T;
   * upper: the transpose, C(mem) = [s0, s0 + m) x [s0, n) */
  if (st == KILN_OK && !p->upper) {
    st = syrk_operand(p, s0, k0, rows, kc, pieces, kc, &va);
    if (st == KILN_OK)
      st = syrk_operand(p, s0, k0, m, kc, pieces, kc, &vb);
  } else if (st == KILN_OK) {
    st = syrk_operand(p, k0, s0, kc, m, pieces, kc * n, &va);
    if (st == KILN_OK)
      st = syrk_operand(p, k0, s0, kc, rows, pieces, kc * n, &vb);
  }
  if (st == KILN_OK && pieces == 1)
    st = kiln__gemm_tri(p->stream, p->upper, p->upper, !p->upper, -1.0, va,
                        vb, 1.0, vc);
  else if (st == KILN_OK)
    st = kiln__gemm_tri(p->stream, p->upper, p->upper, !p->upper, 1.0, va,
                        vb, 0.0, sc);
  if (st == KILN_OK && pieces > 1)
    st = launch_ksum(p, sc, s0, s0, 0, 0, pieces);
  kiln__array_destroy(va);
  kiln__array_destroy(vb);
  kiln__array_destroy(vc);
  kiln__array_destroy(sc);
  return st;
}

/* The update of the columns [s0, s0 + m) by [k0, k1), every row from s0
 * down: one trapezoid GEMM (syrk_update) when KILN_CHOL_SYRK says so,
 * else column_blocks. */
static kiln_status column_update(const chol_problem *p, int64_t k0,
                                 int64_t k1, int64_t s0, int64_t m) {
  if (p->syrk > 0)
    return syrk_update(p, k0, k1, s0, m);
  return column_blocks(p, k0, k1, s0, m);
}

/*
 * Factors the columns [c0, c1) (every row from c0 down), all of whose
 * updates by the columns left of c0 are done: recursively, the left half
 * (a whole number of panels), the update of the right half by it, the
 * right half; one panel is chol_panel. The update at a split of width w
 * is w / 2 deep, so most of the work (the top splits) runs as deep GEMMs,
 * near the GEMM's full speed; a right-looking loop over fixed block
 * columns makes every update only as deep as one block column. With FUSE
 * a split of two panels runs left-looking instead: its right panel is
 * updated inside its chol_panel by the left one.
 */
static kiln_status factor_columns(chol_problem *p, int64_t c0, int64_t c1) {
  int64_t pw = CHOL_PW, panels = (c1 - c0 + pw - 1) / pw;
  if (panels <= 1)
    return launch_panel(p, c0, 0);
  if (p->fuse > 0 && panels <= 2) {
    /* left-looking: the right panel updated in its kernel by the left */
    kiln_status st = KILN_OK;
    for (int64_t p0 = c0; st == KILN_OK && p0 < c1; p0 += pw)
      st = launch_panel(p, p0, p0 - c0);
    return st;
  }
  int64_t mid = c0 + panels / 2 * pw;
  kiln_status st = factor_columns(p, c0, mid);
  if (st == KILN_OK)
    st = column_update(p, c0, mid, mid, c1 - mid);
  if (st == KILN_OK)
    st = factor_columns(p, mid, c1);
  return st;
}

static kiln_status run_blocked_steps(void *user) {
  chol_problem *p = user;
  int64_t n = p->n, len[2] = {p->batch, n};
  int64_t shape3[3] = {p->batch, n, n}, strides3[3] = {n * n, n, 1};
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(p->w, 3, shape3, strides3, 0, &p->w3);
  kiln__api_enter(api);
  if (st == KILN_OK)
    st = kiln__array_create(p->stream->device, p->a->dtype, 2, len, &p->dg);
  if (st == KILN_OK && g_env_index)
    st = make_index(p);
  if (st == KILN_OK)
    st = launch_copy(p);
  if (st == KILN_OK)
    st = factor_columns(p, 0, n);
  if (st == KILN_OK)
    st = launch_finish(p);
  return st;
}

/* With a scalar pool in use (linalg.h): the trailing GEMMs then enqueue
 * no fill between two kernels. */
static kiln_status run_blocked(chol_problem *p) {
  return kiln__linalg_pooled(p->stream, p->a->dtype, run_blocked_steps, p);
}

/* ---- the result ---------------------------------------------------------- */

/* Waits for the factorization by reading info back; an entry that failed
 * makes the whole call fail, naming the first such matrix and its minor. */
static kiln_status check_info(const chol_problem *p) {
  int64_t first, failed;
  int32_t minor;
  kiln_status st =
      kiln__linalg_read_info(p->info, p->batch, &first, &minor, &failed);
  if (st != KILN_OK || first < 0)
    return st;
  char which[128];
  kiln__linalg_which(which, sizeof which, "A", p->a, first, failed);
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "the leading minor of order %d of %s is not positive "
                     "definite; A must be symmetric positive definite.",
                     (int)minor, which);
}

/* Factors into p->w: info, the kernels, then the readback. */
static kiln_status factor(chol_problem *p) {
  int path = CHOL_PATH_AUTO;
  kiln_status st = choose_path(p, &path);
  int64_t len = p->batch;
  if (st == KILN_OK)
    st = kiln__array_create(p->stream->device, KILN_INT32, 1, &len,
                            &p->info);
  if (st == KILN_OK)
    st = kiln__array_fill(p->info, 0.0, p->stream);
  p->fine = path == CHOL_PATH_FINE;
  pthread_once(&g_env_once, read_env);
  p->panel = kiln__chol_panel_test >= 0 ? kiln__chol_panel_test
                                        : g_env_panel;
  if (p->panel > 1)
    p->panel = 1;
  /* FUSE saves launches, which only a GPU pays for: on the CPU backend
   * (where it made the CPU suite's blocked tests ~40% slower) only the
   * test hook turns it on. Unset, it is on for float32, and for float64
   * with chol_panel2: with chol_panel (an H200, one build, 8192^2) FUSE 1
   * took float32 11.37 -> 11.14 ms but float64 12.58 -> 12.85 ms; with
   * chol_panel2 (an H100) float64 9.90-9.99 -> 9.33 ms. */
  int fuse_default = p->a->dtype == KILN_FLOAT32 || p->panel == 1 ? 1 : 0;
  p->fuse = kiln__chol_fuse_test >= 0 ? kiln__chol_fuse_test
            : !on_cuda(p)             ? 0
            : g_env_fuse >= 0         ? g_env_fuse
                                      : fuse_default;
  if (p->fuse > 1)
    p->fuse = 1;
  p->splitk =
      kiln__chol_splitk_test >= 0 ? kiln__chol_splitk_test : g_env_splitk;
  p->gemm_f32 = kiln__chol_gemm_test >= 0 ? kiln__chol_gemm_test
                                           : g_env_gemm;
  p->syrk = kiln__chol_syrk_test >= 0 ? kiln__chol_syrk_test : g_env_syrk;
  if (p->syrk > 2)
    p->syrk = 0;
  p->narrow = kiln__chol_narrow_test >= 0 ? kiln__chol_narrow_test
                                          : g_env_narrow;
  if (st == KILN_OK)
    st = path == CHOL_PATH_SMALL ? run_small(p) : run_blocked(p);
  if (st == KILN_OK)
    st = check_info(p);
  return st;
}

/* The checked factorization shared by kiln_cholesky and kiln_cholesky_ex. */
static kiln_status cholesky(kiln_array *a, bool upper,
                            const kiln_linalg_opts *opts, kiln_array **out) {
  if (a == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : "out");
  chol_problem p;
  memset(&p, 0, sizeof p);
  p.a = a;
  p.upper = upper;
  kiln_status st = kiln__linalg_opts(opts, &p.opts);
  if (st == KILN_OK)
    st = check_problem(&p);
  if (st == KILN_OK)
    st = kiln__array_create(a->buffer->device, a->dtype, a->ndim, a->shape,
                            &p.w);
  if (st == KILN_OK && p.batch > 0 && p.n > 0)
    st = factor(&p);
  kiln__array_destroy(p.info);
  kiln__array_destroy(p.dg);
  kiln__array_destroy(p.idx);
  kiln__array_destroy(p.w3);
  if (st != KILN_OK) {
    kiln__array_destroy(p.w);
    return st;
  }
  *out = p.w;
  return KILN_OK;
}

/* Public: see kiln.h. */
kiln_status kiln_cholesky(kiln_array *a, bool upper, kiln_array **out) {
  KILN_API_ENTER();
  return cholesky(a, upper, NULL, out);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_cholesky_ex(kiln_array *a, bool upper,
                             const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  return cholesky(a, upper, opts, out);
}
