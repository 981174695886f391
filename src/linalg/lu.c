/*
 * LU factorization with partial pivoting (LAPACK's getrf) on any device,
 * batched, float32 and float64, with kiln's own kernels (kernels/lu.metal),
 * kiln__trsm and GEMM: kiln_lu_factor and kiln_lu here, and kiln__lu_run,
 * the factorization that kiln_solve, kiln_inv, kiln_det and kiln_slogdet
 * (lu_solve.c) share.
 *
 * Order of work, as in every linalg driver: check the arguments, return
 * empty results when there is nothing to factor, pick a path, launch, then
 * (for the checked calls) read back the per-matrix info and either hand
 * over the results or refuse them. Results are new arrays nobody sees
 * until success, so a failure anywhere only has to destroy them.
 *
 * Paths (kiln_linalg_opts.path):
 *   0  auto: small when m and n fit a threadgroup (LU_NMAX), else blocked;
 *   1  small: one threadgroup per matrix (m, n <= 128 in float32 and
 *      float64), many small systems at once: up to 64 x 64 lu_small, the
 *      matrix in threadgroup memory; beyond, lu_small_reg, the matrix in
 *      registers (see run_small);
 *   2  blocked right-looking (with a one-panel look-ahead for one large
 *      matrix on CUDA: see the end of this comment): per panel of NB
 *      columns, lu_transpose
 *      copies the panel (rows p0 .. m-1) into the scratch PT transposed,
 *      so that each column is contiguous; there it is factored a strip at
 *      a time by lu_panel, one threadgroup per matrix that loads the whole
 *      strip into registers once (R rows x WS columns per thread, WS = 8,
 *      or 4 when the rows need R = 16, see strip_width), spends one
 *      barrier per column (pivot search, interchange, scale and update
 *      fused), stores it once, then applies the strip's interchanges to
 *      the panel's other columns and solves its block row in one pass
 *      (a warp per column there, its lanes splitting the owed sums: see
 *      lu_panel). The strips are ordered recursively (run_panel): GEMMs
 *      on PT update halves of the panel, groups of LU_GROUP strips update
 *      each other left-looking inside lu_panel, one launch per group.
 *      lu_transpose copies the panel back, lu_laswp_plan and lu_laswp
 *      apply the panel's interchanges to every other column (composed
 *      into one gather of the moved rows: see launch_laswp), L11^-1 and
 *      one GEMM solve the block row U12 = L11^-1 A12 (lu_rowfix redoing
 *      it by substitution where L11^-1 is too large: see block_row) and
 *      GEMM updates the trailing matrix, A22 -= L21 U12. Launches per
 *      panel: about 2 NB / (WS LU_GROUP) + 9.
 *      On CUDA, for one matrix, a panel whose rows (m - p0) are at least
 *      LU_GRID_MIN_ROWS and fit 64 threadgroups of 256 (one row per
 *      thread, up to 16384 rows) runs on lu_strip_grid instead (see
 *      run_panel_grid and below): strips of W = 64 columns (32 in
 *      float64), each factored by the whole GPU, right-looking, one GEMM
 *      per strip on the rest of the panel.
 *
 * Why strips inside panels: the GEMM updates want a deep k (NB = 256 for
 * large matrices) to run near GEMM speed, while the column-by-column work
 * runs on one threadgroup per matrix (a grid-wide barrier per column would
 * cost more than the column), whose registers hold the strip only up to
 * R x WS = 64 float32 values per thread. Narrow strips keep that
 * single-threadgroup work small; the panel's rank-NB work goes through
 * GEMM.
 *
 * Why PT: in W (row-major) a strip's rows are n apart, so each warp load
 * of one column touches 32 cache lines; an H100 SM's L1 handles about
 * one line per clock, which made loading and storing an 8192-row strip
 * cost ~40 us whatever the arithmetic. In PT a warp reads 32 consecutive
 * values of a column, one line. Measured on an H100, LU of 8192^2
 * float32 (cuSOLVER getrf: 35.5 ms): the previous micro-strip kernel on W
 * 136 ms; a whole strip in registers on W 108 ms (of which the panel
 * kernels ~73 ms, ~46 us per strip at both WS = 4 and 8: the uncoalesced
 * load and store); on PT 69 ms. Without the panel kernels the rest takes
 * ~35 ms: trailing GEMMs, trsm and copies ~16.5 ms, and the in-panel
 * GEMMs (one per strip, k = WS) ~18.5 ms, now as large a share as the
 * panel kernels. Their recursive order (run_panel) moves far less data
 * but has not made them cheaper: with it, LU of 8192^2 float32 takes
 * 64.7 ms (right-looking: 65.8 ms, same call), of which the panels'
 * chain (strip kernels, in-panel GEMMs, transposes) is ~50 ms and the
 * trailing work ~17 ms. Nsight Compute on that run, mid-factorization
 * (rows ~5000, WS 4): lu_panel takes 26-36 us of GPU time per strip (the
 * second of a group 4-5 us more, its owed columns), an in-panel GEMM
 * 8-11 us: the strip kernel's own time, not launch gaps, is the chain,
 * and is what a faster panel must cut.
 *
 * Where the strip kernel's time went: its loads did not overlap. The
 * kernel's scalars (p0, pe, ...) are 0-d arrays in device memory, which
 * the compiler reads again after any store it cannot tell apart from
 * them, so an address waited on one L2 round trip before its load took
 * another; and a load under a branch (`if (t < s0) ...`) waits for the
 * branch, so a run of guarded loads went out one at a time. A rewrite
 * with a warp per block-row column (lanes along t, coalesced) but such
 * guarded loads measured worse on an H100 (same call, cuSOLVER getrf
 * 35.6 ms): LU of 8192^2 float32 78.4 ms; one panel of 8192 x 256, 2.46
 * ms, and 3.35 ms with groups of 4 strips, whose extra ~4096 serialized
 * loads per thread put one at ~0.25 us. Hence, in lu_panel: the scalars
 * copied to registers once, every load at a clamped (valid) address with
 * its value selected afterwards, and the SASS (nvdisasm, sm_90a) checked
 * to issue each batch together: the strip's R x WS values, a column's R
 * rows of the group's owed updates, the 5 CB loads of a block-row pass.
 * Measured after that (H100, 6c3fff4, cuSOLVER getrf 35.6 ms in the same
 * call): LU of 8192^2 float32 67.1 ms, no better than the 64.7 ms before
 * the rewrite, so the strip kernel's ~30 us go somewhere else as well:
 * the next step is an Nsight Compute profile of lu_panel (stall reasons),
 * not another guess.
 *
 * The column work on many SMs (lu_strip_grid, CUDA only): P = (m - s0) /
 * 256 threadgroups (32 at 8192 rows), a row per thread with its W values
 * in registers, one grid-wide exchange per column: each group publishes
 * its best candidate row with its values in double-buffered global
 * slots; warp 0 of every group loads the P keys, picks the same pivot
 * (lu_better) as every other group, so no second exchange is needed, and
 * loads only the winner's row into threadgroup memory (before,
 * every warp loaded and staged all P slots' rows: ~300 instructions a
 * warp a column of polling, 17 KiB of threadgroup memory; now one more
 * dependent L2 round trip a column, key then row; see kernels/lu.metal).
 * Rows are interchanged by relabelling the threads that hold them, not
 * by moving values (so row j need not travel). After the
 * strip, the groups' warps apply the strip's composed interchanges to the
 * panel's other columns and solve its block row (a warp per column, L11
 * kept in threadgroup memory from the pivot rows), and a grid barrier (an
 * arrival counter per strip) orders only the relabelled rows' stores.
 * (Until a5724ad row j travelled as one more slot, and the tail began
 * with the grid barrier.) Measured on an H100 (same call, cuSOLVER
 * getrf 35.7 ms): LU of 8192^2 float32 54.7 ms with a first version
 * (__threadfence, a second, dependent load of the winner's row), against
 * 65.7 ms for lu_panel alone: about 4.4 us per column, 36 ms of the 54.7.
 *
 * A column's critical path, with an L2 round trip (RT) at ~150-250 ns on
 * an H100 (~260 cycles for a hit, more for the far partition), a group
 * barrier at a few tens of ns and a dependent shuffle step at ~25 cycles.
 * It was, with a grid barrier per column (an arrival counter, release
 * reductions to arrive, acquire loads to poll): the group's argmax (5
 * shuffle steps), barrier, the NW warps' argmax (5 steps); the winner's
 * W values, key and row stored, then the release reduction, which first
 * waits for those stores to reach L2 (1 RT) and then travels there itself
 * (~0.5 RT); thread 0's acquire polls see the last arrival on average
 * ~1 RT after it lands (each poll takes a round trip; the counter's 33
 * reductions also serialise at its L2 slice); barrier; every slot staged
 * with ld.cg (1 RT); barrier; the P-way argmax (5 steps); the pivot row
 * from threadgroup memory. About 3.5 RT, 3 barriers, 15 shuffle steps:
 * 1-1.5 us by count, 4.4 us measured with the first version's fences.
 * It is now (kernels/lu.metal, lu_strip_grid): every published value
 * travels in 64-bit words carrying the column's stamp (a 32-bit piece and
 * the stamp, stored and loaded as whole words with relaxed gpu-scope
 * accesses, single-copy atomic), so a reader needs no counter and no
 * ordering: it loads all its words of the column's slots at once and
 * loads again those without the stamp. Path: the group's argmax (2
 * warp-reduce instructions, redux.sync; 3 in float64), barrier, the NW
 * warps' argmax (2 or 3), the winner's 33 (34) 16-byte stores, no fence
 * (landing ~0.5 RT later), the readers' polls seeing them ~1 RT after
 * they land, barrier, the P-way argmax (2 or 3 reductions), the pivot
 * row. About 1.5 RT, 2 barriers, 6 (9) warp reductions: expected 0.6-1
 * us per column. The price is L2 traffic: each group loads (P + 1) x 68
 * words of 8 bytes per column (18 KiB at P = 32, twice the bare values),
 * about 0.2 us of one SM's L2 bandwidth, mostly while it waits anyway
 * (only the words still unstamped are loaded again).
 *
 * Measured on an H100 in one call (cuSOLVER getrf 35.5 ms in each run):
 * LU of 8192^2 float32 49.9 and 49.5 ms with the grid barrier per column
 * (release/acquire, the slots staged in one load), 43.2 ms with the
 * stamped words; solve 8192^2 with 16 right-hand sides 55.9 -> 48.4 ms
 * (cuSOLVER getrf+getrs 41.6). 6.5 ms over 8192 columns is ~0.8 us a
 * column saved: the count's 2 RT, at ~0.4 us each. What is left of the
 * 43 ms: the trailing update (GEMM, trsm, laswp, ~17 ms), the in-panel
 * GEMMs (one per strip), and the columns' own chain.
 *
 * Cutting the chain further (measured on an H100, 2026-11-27, against the
 * code before it in one call: LU 8192^2 float32 42.7 -> 37.4 ms, solve with
 * 16 right-hand sides 48.8 -> 43.2 ms, cuSOLVER 35.4 / 41.5: 5.3 ms where
 * the count below said 1-1.2, so the removed slot and tail cost more than
 * their issue counts; Nsight Compute then gave ~182 us a strip, ~2.8 us a
 * column, still 3x the exchange's count). Per column: row j's slot is gone
 * (rows relabelled instead, see kernels/lu.metal): group 0's thread j no longer
 * stores RW / 2 = 32 16-byte words before its own argmax (~32-64 issue cycles
 * ahead of group 0's barrier 1, which every group's readers wait for), the
 * readers load and poll P slots instead of P + 1 (32 pairs less per group, ~3%
 * of the bytes at P = 32), and the pivot's thread no longer unstages row j (16
 * shared loads) before its next key: by count ~30-60 ns a column, ~0.25-0.5 ms
 * of the 8192 columns at 8192^2. The P-way argmax moved before barrier 2, into
 * warp 0 as soon as the keys land (the publisher stores its key first): ~40-60
 * cycles less a column after barrier 2, ~0.2 ms more; each warp loads whole
 * slot rows (512 contiguous bytes). Per strip, the tail: the composed
 * interchanges by a backward trace, a thread per moved row in parallel (~W
 * steps of a compare and a select, ~0.3 us), where one thread replayed the W
 * swaps in threadgroup memory (~65 cycles each, ~2.3 us) after a W-step search
 * (~1 us); L11 from the pivot rows already staged in threadgroup memory, not
 * from L2 after the grid barrier (1 round trip); the grid barrier's arrival
 * right after the columns and its wait after the other columns' pass (off the
 * path: ~2 round trips). By count ~4 us a strip, ~0.5 ms over the 128 strips of
 * 8192^2 float32 (256 strips, more in float64). Together ~1-1.2 ms expected of
 * the 43.2 ms.
 *
 * A rolled column loop (one copy of the column's code, its registers
 * rotating a column a step so every index stays a constant; ~640 SASS
 * instructions where the unrolled kernel has ~24,700) was tried against
 * instruction-cache misses (Nsight: 45% of the unrolled kernel's stalls
 * were no_instruction before the one-warp reads) and measured 29.2 ms
 * (unrolled) against 30.1 (rolled) for LU 8192^2 float32 once both read
 * only the winner's row; it was kept a session for tests and timing and
 * then deleted (bench/RESULTS.md, sixth session, has its series).
 *
 * The launch is cooperative (cuLaunchCooperativeKernel: every
 * group resident before any starts, or an error), since groups that spin
 * in the exchange could otherwise hold the SMs that a late group of the
 * same launch needs (with other grid launches or persistent kernels on
 * the device). The CPU backend's workers run a launch's groups without
 * any promise that all run at once, so a grid exchange could wait
 * forever there: it keeps lu_panel, and tests run lu_strip_grid with one
 * threadgroup on every backend through kiln__lu_grid_test. Batches keep
 * lu_panel (one threadgroup per matrix already spreads them over the
 * SMs), and so do strips of more than 16384 rows (warp 0 reads the
 * keys two slots a lane, and the pick names the slot in label *
 * LU_GRID_PMAX + slot: 64 groups of 256 rows at most).
 *
 * Kernel scalars (k0, batch0, ...) are 0-d views into one int32 array
 * holding 0, 1, 2, ... (filled once per call), so a launch allocates and
 * fills nothing.
 *
 * The look-ahead (run_panels_ahead, for one matrix with k >= 2048 on
 * CUDA; KILN_LU_LOOKAHEAD or kiln__lu_lookahead_test: 0 off, 1 on, the
 * default, 2 forced at any size for tests): on one stream the trailing
 * GEMM of panel k and the latency-bound chain of panel k + 1
 * (lu_strip_grid on ~32 SMs, the other ~100 idle) never overlap; with
 * it, panel k + 1's chain runs on the device's high-priority side stream
 * while the caller's stream updates every column but that panel's.
 * Measured (NVIDIA H200, 2026-11-27, bench_solve's lines in one process,
 * with programmatic dependent launch): LU 8192^2 float32 26.1-26.7 ms
 * with it, 27.8-27.9 without; solve with 16 right-hand sides 28.2-28.7
 * against 29.8-30.0 ms (cuSOLVER 39.9). The count said ~21-22 ms at best
 * (details, the risks and what was tried at run_panels_ahead): the chain
 * still waits for SMs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"

#define LU_PATH_AUTO 0
#define LU_PATH_SMALL 1
#define LU_PATH_BLOCKED 2

/* The small path's capacity, and lu_small's (64 x 65 float64 is 33 KiB
 * of threadgroup memory); lu_small_reg takes the rest. (A build may set
 * LU_SMEM_NMAX to 32, 16 or 0, to measure lu_small_reg on the sizes
 * lu_small takes now: see run_small_reg.) */
#define LU_NMAX 128
#ifndef LU_SMEM_NMAX
#define LU_SMEM_NMAX 64
#endif

/* lu_copy's elements a thread (kernels/lu.metal's LU_COPY_EW). */
#define LU_COPY_EW 8

/* The widest strip, and the panel kernel's threadgroup. */
#define LU_WS 8
#define LU_NT 512

/* lu_panel keeps up to LU_RMAX rows per thread in registers; rows beyond
 * LU_NT * LU_RMAX go to lu_panel_global. */
#define LU_RMAX 32

/* Strips per group of a panel's recursion (see run_panel): inside a
 * group, lu_panel applies the updates itself, left-looking. (A build may
 * set it, to measure another.) */
#ifndef LU_GROUP
#define LU_GROUP 2
#endif

/* Strips per lu_panel launch: 1, or the group's (one launch per group,
 * the kernel walking its strips in order). */
#ifndef LU_LAUNCH_STRIPS
#define LU_LAUNCH_STRIPS LU_GROUP
#endif

/* lu_strip_grid (see run_panel_grid): its threadgroup, the fewest rows
 * that take it (a guess, not measured: below it lu_panel's strips are
 * short, and a grid of 4 groups hardly spreads the work), and the layout
 * of its int32 scratch S (kernels/lu.metal: LU_GRID_PMAX candidate rows
 * per column parity, then the counters). A build may set
 * LU_GRID_MIN_ROWS, to measure another. */
#define LU_GRID_NT 256
#ifndef LU_GRID_MIN_ROWS
#define LU_GRID_MIN_ROWS 1024
#endif
#define LU_GRID_PMAX 64
#define LU_GRID_CTR (2 * LU_GRID_PMAX)
/* lu_strip_grid's exchange slot, in 64-bit words: a row of 64 32-bit
 * pieces (64 float32 or 32 float64 values), then the key's and the row
 * index, padded (kernels/lu.metal's SW). */
#define LU_GRID_SW 68

/* Matrices per one-threadgroup-per-matrix launch (grid.x must fit 32 bits)
 * and per grid.y of the other kernels (CUDA's limit). */
#define LU_X_CHUNK (1 << 20)
#define LU_Y_CHUNK 65535

/* The block row's solve (block_row): by L11^-1 and one GEMM (1), else by
 * kiln__trsm (0); and the largest |entry| of L11^-1 trusted, beyond which
 * a matrix's block row is redone by substitution (lu_rowfix). (A build may
 * set either, to measure or to test the other path.) */
#ifndef LU_ROW_INV
#define LU_ROW_INV 1
#endif
#ifndef LU_LINV_MAX
#define LU_LINV_MAX 64
#endif

/* The look-ahead (run_panels_ahead) runs by default for one matrix of at
 * least this k on CUDA: from k = 2048 panels are NB = 256 wide, so there
 * are at least 8 of them and each trailing GEMM is deep (k = 256) and
 * large enough to fill the SMs the panel chain leaves idle; below, NB =
 * 64 panels make GEMMs too small to hide much behind. (A guess from the
 * counts in run_panels_ahead, not measured below 8192; KILN_LU_LOOKAHEAD or
 * kiln__lu_lookahead_test switch it.) */
#ifndef LU_AHEAD_MIN_K
#define LU_AHEAD_MIN_K 2048
#endif

/* info values (see kernels/lu.metal). */
#define LU_INFO_NONFINITE (-1073741824)
/* lu_perm's pivots staged at a time (the .metal's LU_PERM_CHUNK: 32 KiB) */
#define LU_PERM_CHUNK 8192

/* See linalg.h. */
bool kiln__lu_grid_test = false;

/* See linalg.h. */
int kiln__lu_linv_max_test = -1;
int kiln__lu_perm_chunk_test = 0;

/* See linalg.h. */
int kiln__lu_lookahead_test = -1;

/* KILN_LU_LOOKAHEAD, read once (see kiln__lu_lookahead_test). */
static int g_ahead_env = 1;
static pthread_once_t g_ahead_once = PTHREAD_ONCE_INIT;

static void read_ahead_env(void) {
  const char *v = getenv("KILN_LU_LOOKAHEAD");
  if (v != NULL && v[0] >= '0' && v[0] <= '2' && v[1] == '\0')
    g_ahead_env = v[0] - '0';
}

/* ---- checks -------------------------------------------------------------- */

/* See linalg.h. */
kiln_status kiln__lu_check(kiln_array *a, const char *what, bool square,
                           int64_t *batch) {
  static const char *const names[1] = {"A"};
  if (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s; %s supports float32 and float64.",
                       kiln_dtype_name(a->dtype), what);
  kiln_status st = kiln__linalg_batch(&a, 1, names, batch);
  if (st != KILN_OK)
    return st;
  int64_t m = a->shape[a->ndim - 2], n = a->shape[a->ndim - 1];
  if (square && m != n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A is %lld x %lld; %s needs square matrices.",
                       (long long)m, (long long)n, what);
  if (m > INT32_MAX / (n > 0 ? n : 1))
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %lld x %lld; %s supports matrices of up to "
                       "2^31 - 1 elements.",
                       (long long)m, (long long)n, what);
  return KILN_OK;
}

/* The path to run: opts->path checked against the shape. */
static kiln_status choose_path(const kiln__lu *f, int want, int *path) {
  if (want < LU_PATH_AUTO || want > LU_PATH_BLOCKED)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; LU knows 0 (auto), 1 (small) and "
                       "2 (blocked).",
                       want);
  bool fits = f->m <= LU_NMAX && f->n <= LU_NMAX;
  if (want == LU_PATH_SMALL && !fits)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 1 (small) holds matrices up to %d x %d, "
                       "but A is %lld x %lld.",
                       LU_NMAX, LU_NMAX, (long long)f->m, (long long)f->n);
  if (want == LU_PATH_AUTO)
    want = fits ? LU_PATH_SMALL : LU_PATH_BLOCKED;
  *path = want;
  return KILN_OK;
}

/* ---- launch helpers ------------------------------------------------------ */

/* One factorization being run. */
typedef struct lu_run {
  kiln__lu *f;
  kiln_array *a;
  kiln_stream *s;
  kiln_array *idx; /* int32 0, 1, 2, ...: the scalars' storage */
  kiln_array *pt;  /* the blocked path's panel, transposed: batch×NB×m */
  kiln_array *gx;  /* lu_strip_grid's exchange words (T), or NULL */
  kiln_array *gs;  /* its candidate rows and arrival counters (int32) */
} lu_run;

/* idx = 0 .. len-1, so that any scalar the launches need is a view. */
static kiln_status make_index(lu_run *r, int64_t len) {
  return kiln__linalg_iota(r->s, len, &r->idx);
}

/* A 0-d int32 view holding `value` (< idx's length). */
static kiln_status scalar(const lu_run *r, int64_t value, kiln_array **out) {
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(r->idx, 0, NULL, NULL, value, out);
  kiln__api_enter(api);
  return st;
}

/* One launch of `kernel` with scalar inputs appended after `arrays`:
 * scalars[i] are their values. */
typedef struct lu_launch {
  kiln_kernel *kernel;
  kiln_array *arrays[4];
  int num_arrays;
  int64_t scalars[7];
  int num_scalars;
  kiln_array *outs[5];
  int num_outs;
  kiln_template_arg targs[6];
  int num_targs;
  uint32_t grid[2], tg;
} lu_launch;

/* The scalars p0, pe of a kernel that works on the panel [p0, pe). */
static void panel_scalars(lu_launch *l, int64_t p0, int64_t pe) {
  l->scalars[0] = p0;
  l->scalars[1] = pe;
  l->num_scalars = 2;
}

static kiln_status launch(const lu_run *r, const lu_launch *l) {
  kiln_array *in[8] = {NULL};
  int nin = l->num_arrays;
  memcpy(in, l->arrays, (size_t)nin * sizeof *in);
  kiln_status st = KILN_OK;
  for (int i = 0; st == KILN_OK && i < l->num_scalars; i++)
    st = scalar(r, l->scalars[i], &in[nin++]);
  kiln_output_spec spec[5];
  for (int i = 0; i < l->num_outs; i++)
    kiln__linalg_out_spec(&spec[i], l->outs[i]);
  if (st == KILN_OK) {
    kiln_launch L;
    kiln__linalg_launch_init(&L, r->s);
    L.inputs = in;
    L.num_inputs = nin;
    L.outputs = spec;
    L.num_outputs = l->num_outs;
    L.template_args = l->targs;
    L.num_template_args = l->num_targs;
    L.grid[0] = l->grid[0];
    L.grid[1] = l->grid[1];
    L.threadgroup[0] = l->tg;
    st = kiln__kernel_launch_into(l->kernel, &L, l->outs);
  }
  for (int i = l->num_arrays; i < nin; i++)
    kiln__array_destroy(in[i]);
  return st;
}

/* Runs `l` once per chunk of matrices: one threadgroup of l->tg threads
 * per matrix along grid.x (per_matrix), else the batch along grid.y. The
 * chunk's first matrix is the last scalar. */
static kiln_status launch_batched(const lu_run *r, lu_launch *l,
                                  bool per_matrix) {
  int64_t chunk = per_matrix ? LU_X_CHUNK : LU_Y_CHUNK;
  int last = l->num_scalars++;
  kiln_status st = KILN_OK;
  for (int64_t first = 0; st == KILN_OK && first < r->f->batch;
       first += chunk) {
    int64_t count = r->f->batch - first < chunk ? r->f->batch - first : chunk;
    l->scalars[last] = first;
    if (per_matrix)
      l->grid[0] = l->tg * (uint32_t)count;
    else
      l->grid[1] = (uint32_t)count;
    st = launch(r, l);
  }
  l->num_scalars--;
  return st;
}

static kiln_status lu_kernel_flags(const char *name, const char *inputs,
                                   const char *outputs, unsigned flags,
                                   lu_launch *l) {
  memset(l, 0, sizeof *l);
  l->grid[0] = l->grid[1] = 1;
  return kiln__library_kernel("lu", name, inputs, outputs,
                              KILN__LIB_NO_ROW_CONTIG | flags, &l->kernel);
}

static kiln_status lu_kernel(const char *name, const char *inputs,
                             const char *outputs, lu_launch *l) {
  return lu_kernel_flags(name, inputs, outputs, 0, l);
}

/* ---- the small path ------------------------------------------------------ */

/* The capacity class: the smallest of 16, 32, 64 and 128 holding m and
 * n. */
static int small_class(const kiln__lu *f) {
  int64_t d = f->m > f->n ? f->m : f->n;
  return d <= 16 ? 16 : d <= 32 ? 32 : d <= 64 ? 64 : LU_NMAX;
}

/* A small-path kernel's launch: A in; W, piv and info out; template
 * argument 0 is T, A's dtype (the caller adds the rest). */
static kiln_status small_kernel(const lu_run *r, const char *name,
                                lu_launch *l) {
  kiln_status st = lu_kernel(name, "A,batch0", "W,piv,info", l);
  if (st != KILN_OK)
    return st;
  l->arrays[0] = r->a;
  l->num_arrays = 1;
  l->outs[0] = r->f->w;
  l->outs[1] = r->f->piv;
  l->outs[2] = r->f->info;
  l->num_outs = 3;
  kiln__targ_dtype(&l->targs[0], "T", r->a->dtype);
  l->num_targs = 1;
  return KILN_OK;
}

/*
 * lu_small_reg, for matrices past lu_small's 64 x 64: NR x NC capacity
 * (64 or 128 each), a row per thread in each of CB column classes, NC /
 * CB values per thread in registers. float32 takes CB = 8 (1024 threads
 * and 16 values at 128 x 128, under the 64 registers a thread may have
 * then); float64 CB = 4 (512 threads, 32 values). ptxas for sm_90a,
 * unbounded: float32 65 registers at 128 x 128, float64 146; under the
 * launch bound kiln compiles again with (1024, 512 threads) float32 64
 * and no spill, float64 128 and 16 bytes spilled, none in the column
 * loop's FMAs. Per column: two barriers and, per thread, NC / CB
 * updates in registers with one broadcast read of threadgroup memory
 * each, where lu_small streams the trailing block through threadgroup
 * memory (about four accesses per element) behind four barriers. Not
 * measured on a GPU yet; by that count lu_small_reg may win at 64 too
 * (about 4x less threadgroup-memory traffic, against fewer matrices per
 * SM): LU_SMEM_NMAX moves the boundary for a measurement.
 */
static kiln_status run_small_reg(const lu_run *r) {
  lu_launch l;
  kiln_status st = small_kernel(r, "lu_small_reg", &l);
  if (st != KILN_OK)
    return st;
  int nr = r->f->m <= 64 ? 64 : 128, nc = r->f->n <= 64 ? 64 : 128;
  int cb = r->a->dtype == KILN_FLOAT64 ? 4 : 8;
  kiln__targ_int(&l.targs[1], "NR", nr);
  kiln__targ_int(&l.targs[2], "NC", nc);
  kiln__targ_int(&l.targs[3], "CB", cb);
  l.num_targs = 4;
  l.tg = (uint32_t)(nr * cb);
  return launch_batched(r, &l, true);
}

/* The small path: lu_small up to 64 x 64, lu_small_reg beyond. */
static kiln_status run_small(const lu_run *r) {
  int nmax = small_class(r->f);
  if (nmax > LU_SMEM_NMAX)
    return run_small_reg(r);
  lu_launch l;
  kiln_status st = small_kernel(r, "lu_small", &l);
  if (st != KILN_OK)
    return st;
  kiln__targ_int(&l.targs[1], "NMAX", nmax);
  l.num_targs = 2;
  l.tg = nmax <= 16 ? 32u : (uint32_t)(nmax * 2);
  return launch_batched(r, &l, true);
}

/* ---- the blocked path ---------------------------------------------------- */

/* Panel width: deep enough for GEMM on large matrices, small enough that
 * panel work stays a small share on the others. */
static int64_t panel_width(const kiln__lu *f) {
  /* At most 256: lu_panel stages NB / 2 owed columns (LU_OWED_MAX).
   * (Tests of lu_strip_grid on one threadgroup, kiln__lu_grid_test, take
   * 256 from k = 128, so that float32 strips of 64 share a panel there
   * too.) */
  if (kiln__lu_grid_test && f->k >= 128)
    return 256;
  return f->k >= 2048 ? 256 : 64;
}

/* W = A, noting non-finite inputs in info. */
static kiln_status launch_copy(const lu_run *r) {
  lu_launch l;
  kiln_status st = lu_kernel("lu_copy", "A,batch0", "W,info", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->a;
  l.num_arrays = 1;
  l.outs[0] = r->f->w;
  l.outs[1] = r->f->info;
  l.num_outs = 2;
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  l.num_targs = 1;
  /* a warp per 32 x LU_COPY_EW elements (the .metal's constant) */
  uint64_t elems = (uint64_t)r->f->m * (uint64_t)r->f->n;
  uint64_t warps = (elems + 32 * LU_COPY_EW - 1) / (32 * LU_COPY_EW);
  l.grid[0] = (uint32_t)((warps * 32 + 255) / 256 * 256);
  l.tg = 256;
  return launch_batched(r, &l, false);
}

/*
 * The strip width lu_panel holds with R rows per thread: R * WS values of
 * the strip per thread, 64 float32 or 32 float64 registers at most, and
 * fewer where more spill under the 128 registers of a 512-thread group
 * (measured with ptxas for sm_90a: float32 R 32 x WS 2 and float64 R 4 x
 * WS 8 spill; the shapes below do not, but for 8 to 16 bytes).
 */
static int strip_width(kiln_dtype dt, int r) {
  if (dt == KILN_FLOAT64)
    return r <= 8 ? 4 : r == 16 ? 2 : 1;
  return r <= 8 ? LU_WS : r == 16 ? 4 : 1;
}

/*
 * The register shape of lu_panel for `rows` rows: R rows per thread (a
 * power of two) and the strip width WS. Returns false when the rows do
 * not fit (lu_panel_global then, WS = LU_WS).
 */
static bool panel_shape(kiln_dtype dt, int64_t rows, int *rr, int *ws) {
  int r = 1;
  while ((int64_t)r * LU_NT < rows && r < LU_RMAX)
    r *= 2;
  *rr = r;
  *ws = LU_WS;
  if ((int64_t)r * LU_NT < rows)
    return false;
  *ws = strip_width(dt, r);
  return true;
}

/* The register shape of one panel's strips: every strip of a panel has
 * the same width, which the recursion's tree (lu_owed_from) assumes. */
typedef struct strip_shape {
  bool regs; /* lu_panel, else lu_panel_global */
  int r, ws, group;
} strip_shape;

/* What every strip kernel (lu_panel, lu_panel_global, lu_strip_grid)
 * takes first: the scalars first = c0, pstart = p0, pend = pe, nbp,
 * nrows, npiv, and the outputs PT, piv, info. */
static void strip_args(const lu_run *r, int64_t c0, int64_t p0, int64_t pe,
                       lu_launch *l) {
  l->scalars[0] = c0;
  l->scalars[1] = p0;
  l->scalars[2] = pe;
  l->scalars[3] = r->pt->shape[1];
  l->scalars[4] = r->f->m;
  l->scalars[5] = r->f->k;
  l->num_scalars = 6;
  l->outs[0] = r->pt;
  l->outs[1] = r->f->piv;
  l->outs[2] = r->f->info;
  l->num_outs = 3;
}

/* Factors the group of strips at c0 of the panel [p0, pe) (see
 * lu_panel). */
static kiln_status launch_panel(const lu_run *r, const strip_shape *sh,
                                int64_t c0, int64_t p0, int64_t pe) {
  lu_launch l;
  kiln_status st =
      lu_kernel(sh->regs ? "lu_panel" : "lu_panel_global",
                "first,pstart,pend,nbp,nrows,npiv,batch0", "PT,piv,info", &l);
  if (st != KILN_OK)
    return st;
  strip_args(r, c0, p0, pe, &l);
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  kiln__targ_int(&l.targs[1], "NT", LU_NT);
  kiln__targ_int(&l.targs[2], "WS", sh->ws);
  kiln__targ_int(&l.targs[3], "G", sh->group);
  kiln__targ_int(&l.targs[4], "GL", LU_LAUNCH_STRIPS);
  l.num_targs = 5;
  if (sh->regs) {
    kiln__targ_int(&l.targs[5], "R", sh->r);
    l.num_targs = 6;
  }
  l.tg = LU_NT;
  return launch_batched(r, &l, true);
}

/* Copies the panel [p0, pe) of W into PT transposed, or back. */
static kiln_status launch_transpose(const lu_run *r, int64_t p0, int64_t pe,
                                    bool back) {
  lu_launch l;
  kiln_status st =
      lu_kernel("lu_transpose", "Win,p0,pe,nbp,batch0", "W,PT", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->f->w;
  l.num_arrays = 1;
  panel_scalars(&l, p0, pe);
  l.scalars[l.num_scalars++] = r->pt->shape[1];
  l.outs[0] = r->f->w;
  l.outs[1] = r->pt;
  l.num_outs = 2;
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  kiln__targ_bool(&l.targs[1], "BACK", back);
  l.num_targs = 2;
  l.tg = 256;
  uint64_t tiles =
      (uint64_t)((r->f->m - p0 + 31) / 32) * (uint64_t)((pe - p0 + 31) / 32);
  l.grid[0] = (uint32_t)(tiles * l.tg);
  return launch_batched(r, &l, false);
}

/* ---- the grid-wide strip (CUDA) ------------------------------------------ */

/* lu_strip_grid's strip width: 64 float32 or 32 float64 values of a row
 * in registers, beside the pivot row's as many. */
static int grid_width(kiln_dtype dt) { return dt == KILN_FLOAT64 ? 32 : 64; }

static bool on_cuda(const lu_run *r) {
  return strcmp(r->s->device->info.backend, "cuda") == 0;
}

/* Whether any panel of this factorization may run on lu_strip_grid: on
 * CUDA only (the CPU backend does not promise that a launch's groups all
 * run at once, so its grid barrier could wait forever), for one matrix (a
 * batch's matrices run side by side on lu_panel instead), with enough
 * rows; or under kiln__lu_grid_test. */
static bool grid_device(const lu_run *r) {
  if (r->f->batch != 1)
    return false;
  return kiln__lu_grid_test || (on_cuda(r) && r->f->m >= LU_GRID_MIN_ROWS);
}

/* Whether the panel at p0 does: its rows enough to beat lu_panel, one
 * per thread on at most one group per multiprocessor (all resident at
 * once, which the grid barrier needs: the launch is cooperative) and
 * LU_GRID_PMAX groups, on CUDA only; under kiln__lu_grid_test also any
 * rows one group holds, on any backend. (The CPU backend's workers may
 * run a launch's groups at once, but nothing guarantees that all of them
 * run together, so more than one group could wait there forever.) */
static bool use_grid(const lu_run *r, int64_t p0) {
  int64_t rows = r->f->m - p0;
  int64_t groups = (rows + LU_GRID_NT - 1) / LU_GRID_NT;
  int64_t units = r->s->device->info.compute_units;
  /* (The kernel reduces label * LU_GRID_PMAX + slot in 32 bits, so rows
   * stay under 2^25; no matrix of 2^31 elements with a panel here comes
   * near.) */
  if (r->f->m >= (1 << 25))
    return false;
  if (kiln__lu_grid_test && groups <= 1)
    return r->f->batch == 1;
  return on_cuda(r) && grid_device(r) && rows >= LU_GRID_MIN_ROWS &&
         groups <= units && groups <= LU_GRID_PMAX;
}

/* lu_strip_grid's scratch, once per factorization: X for the most
 * groups, zeroed (its exchange words carry a column's stamp, from 1, and
 * must not start with one: see kernels/lu.metal), and S with its
 * counters zeroed (one per strip, monotonic). X holds 2 (groups + 1)
 * slots of LU_GRID_SW 64-bit words, counted here in T. */
static kiln_status make_grid_scratch(lu_run *r) {
  int64_t w = grid_width(r->a->dtype);
  int64_t units = r->s->device->info.compute_units;
  int64_t groups = units < LU_GRID_PMAX ? units : LU_GRID_PMAX;
  int64_t xs = 2 * (groups + 1) * LU_GRID_SW * 8 /
               (int64_t)kiln_dtype_size(r->a->dtype);
  int64_t ss = LU_GRID_CTR + r->f->k / w + 1;
  kiln_status st =
      kiln__array_create(r->s->device, r->a->dtype, 1, &xs, &r->gx);
  if (st == KILN_OK)
    st = kiln__array_fill(r->gx, 0.0, r->s);
  if (st == KILN_OK)
    st = kiln__array_create(r->s->device, KILN_INT32, 1, &ss, &r->gs);
  if (st == KILN_OK)
    st = kiln__array_fill(r->gs, 0.0, r->s);
  return st;
}

/* One grid-strip launch: the strip at s0 of the panel [p0, pe) on
 * lu_strip_grid. */
static kiln_status launch_grid(const lu_run *r, int64_t s0, int64_t p0,
                               int64_t pe) {
  lu_launch l;
  /* cooperative: its groups wait for each other (the per-column
   * exchange, the grid barrier) */
  kiln_status st = lu_kernel_flags(
      "lu_strip_grid", "first,pstart,pend,nbp,nrows,npiv", "PT,piv,info,X,S",
      KILN__LIB_COOPERATIVE, &l);
  if (st != KILN_OK)
    return st;
  strip_args(r, s0, p0, pe, &l);
  l.outs[3] = r->gx;
  l.outs[4] = r->gs;
  l.num_outs = 5;
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  kiln__targ_int(&l.targs[1], "W", grid_width(r->a->dtype));
  kiln__targ_int(&l.targs[2], "NT", LU_GRID_NT);
  l.num_targs = 3;
  l.tg = LU_GRID_NT;
  int64_t groups = (r->f->m - s0 + LU_GRID_NT - 1) / LU_GRID_NT;
  l.grid[0] = (uint32_t)(groups * LU_GRID_NT);
  return launch(r, &l);
}

/* A node of the panel's recursion (see run_panel): its columns [c0, ce)
 * split at c1, the left half factored, the right half's rows above c1
 * (its U12) final; what is left is A22 -= L21 U12, rows c1 .. m-1 of the
 * columns [c1, ce), which in PT's transposed terms is C -= A B with C =
 * PT(c1 - p0, c1), A = PT(c1 - p0, c0) and B = PT(c0 - p0, c1). */
static kiln_status update_node(const lu_run *r, int64_t p0, int64_t c0,
                               int64_t c1, int64_t ce) {
  int64_t cols = ce - c1, rows = r->f->m - c1, depth = c1 - c0;
  if (rows <= 0 || cols <= 0 || depth <= 0)
    return KILN_OK;
  kiln_array *a = NULL, *b = NULL, *c = NULL;
  kiln_status st = kiln__linalg_block(r->pt, c1 - p0, c0, cols, depth, &a);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->pt, c0 - p0, c1, depth, rows, &b);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->pt, c1 - p0, c1, cols, rows, &c);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(r->s, false, false, -1.0, a, b, 1.0, c);
  kiln__array_destroy(a);
  kiln__array_destroy(b);
  kiln__array_destroy(c);
  return st;
}

/* One panel being factored on PT: its columns [p0, pe), its strips'
 * shape and count. */
typedef struct lu_panel_job {
  const lu_run *r;
  strip_shape sh;
  int64_t p0, pe, strips;
} lu_panel_job;

/* The node of 2^level strips from strip i0 (see run_panel): its left
 * half, its GEMM, its right half. */
static kiln_status run_node(const lu_panel_job *j, int64_t i0, int64_t size) {
  if (i0 >= j->strips)
    return KILN_OK;
  int64_t ws = j->sh.ws;
  kiln_status st = KILN_OK;
  if (size <= j->sh.group) {
    for (int64_t i = i0; st == KILN_OK && i < i0 + size && i < j->strips;
         i += LU_LAUNCH_STRIPS)
      st = launch_panel(j->r, &j->sh, j->p0 + i * ws, j->p0, j->pe);
    return st;
  }
  int64_t half = size / 2, mid = i0 + half;
  st = run_node(j, i0, half);
  if (st == KILN_OK && mid < j->strips) {
    int64_t ce = j->p0 + (i0 + size) * ws;
    st = update_node(j->r, j->p0, j->p0 + i0 * ws, j->p0 + mid * ws,
                     ce < j->pe ? ce : j->pe);
  }
  if (st == KILN_OK)
    st = run_node(j, mid, half);
  return st;
}

/* The panel [p0, pe) on PT with lu_strip_grid, right-looking: per strip
 * of W columns the kernel (which also swaps the panel's other columns and
 * solves the strip's block row), then one GEMM on the rest of the panel
 * below the strip. No recursion: W = 64 (32 in float64) is already a deep
 * enough k for the GEMM, and a 256-column panel has only 4 (8) strips. */
static kiln_status run_panel_grid(const lu_run *r, int64_t p0, int64_t pe) {
  int64_t w = grid_width(r->a->dtype);
  kiln_status st = KILN_OK;
  for (int64_t s0 = p0; st == KILN_OK && s0 < pe; s0 += w) {
    int64_t s1 = s0 + w < pe ? s0 + w : pe;
    st = launch_grid(r, s0, p0, pe);
    if (st == KILN_OK)
      st = update_node(r, p0, s0, s1, pe);
  }
  return st;
}

/*
 * The panel [p0, pe) on PT, recursively (Toledo's recursive LU over the
 * panel's strips, as a binary tree of aligned power-of-two groups of
 * strips): a node factors its left half, updates its right half below
 * the split with one GEMM (k = half the node's width), then factors its
 * right half. The right half's rows above the split (the node's U12, a
 * triangular solve with the left half's L) are left to the strip
 * kernels: each solves its own block row after subtracting, left-looking,
 * the updates that block row still owes to the strips before it in the
 * same half (lu_owed_from, at most NB / 2 - WS columns). Eager updates of
 * those rows would be wrong: a later strip's interchanges move rows
 * across the split, between rows updated and rows not. Against one GEMM
 * per strip over the whole rest of the panel (right-looking), the same
 * number of launches moves log2(strips) / (strips / 2) of the data.
 * Data turned out not to be the cost on an H100 (LU of 8192^2 float32:
 * 68 ms recursive against 66 ms right-looking, the same ~3000 launches).
 * Groups of LU_GROUP strips get no GEMM inside: each strip kernel first
 * subtracts what its rows owe the group's earlier strips, left-looking,
 * reading their L once at one SM's ~100 GB/s from L2. Measured (same
 * H100, same call): groups of 2 64.7 ms, 4 66.7, 8 75.4, 16 96.4; the
 * saved GEMM launches pay for one strip's L, not for more. (Those owed
 * loads now overlap, a column's R rows at once, which may move the
 * balance towards 4: a build with -DLU_GROUP=4 measures it.)
 */
static kiln_status run_panel(const lu_run *r, int64_t p0, int64_t pe) {
  if (r->gx != NULL && use_grid(r, p0))
    return run_panel_grid(r, p0, pe);
  lu_panel_job j = {r, {false, 0, 0, LU_GROUP}, p0, pe, 0};
  j.sh.regs = panel_shape(r->a->dtype, r->f->m - p0, &j.sh.r, &j.sh.ws);
  j.strips = (pe - p0 + j.sh.ws - 1) / j.sh.ws;
  int64_t size = 1;
  while (size < j.strips)
    size *= 2;
  return run_node(&j, 0, size);
}

/*
 * The scratch of the panels' interchanges and block rows (launch_laswp,
 * block_row), made once per factorization: nb is the panels' width (the
 * kernels' NB, 64 or 256; a last, narrower panel uses the same).
 */
typedef struct lu_rows {
  int nb;
  kiln_array *plan; /* int32 batch x 4 nb: lu_laswp_plan's permutation */
  kiln_array *flag; /* int32 batch: lu_linv's verdict on L11^-1 */
  kiln_array *li;   /* ...×nb×nb: L11^-1 */
  kiln_array *sx;   /* ...×nb×(n - nb): the block row A12, before solving */
} lu_rows;

static void free_rows(lu_rows *x) {
  kiln__array_destroy(x->plan);
  kiln__array_destroy(x->flag);
  kiln__array_destroy(x->li);
  kiln__array_destroy(x->sx);
  memset(x, 0, sizeof *x);
}

/* A scratch array of W's batch shape with rows x cols matrices. */
static kiln_status batch_like(const lu_run *r, kiln_dtype dt, int64_t rows,
                              int64_t cols, kiln_array **out) {
  int nd = r->f->w->ndim;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, r->f->w->shape, (size_t)nd * sizeof *shape);
  shape[nd - 2] = rows;
  shape[nd - 1] = cols;
  return kiln__array_create(r->s->device, dt, nd, shape, out);
}

static kiln_status make_rows(const lu_run *r, lu_rows *x) {
  const kiln__lu *f = r->f;
  memset(x, 0, sizeof *x);
  x->nb = (int)panel_width(f);
  int64_t plan = f->batch * 4 * x->nb;
  int64_t first = x->nb < f->k ? x->nb : f->k;
  int64_t width = f->n - first > 0 ? f->n - first : 1;
  kiln_status st =
      kiln__array_create(r->s->device, KILN_INT32, 1, &plan, &x->plan);
  if (st == KILN_OK)
    st = kiln__array_create(r->s->device, KILN_INT32, 1, &f->batch, &x->flag);
  if (st == KILN_OK)
    st = batch_like(r, r->a->dtype, x->nb, x->nb, &x->li);
  if (st == KILN_OK)
    st = batch_like(r, r->a->dtype, x->nb, width, &x->sx);
  if (st != KILN_OK)
    free_rows(x);
  return st;
}

/* lu_laswp's threadgroup: E = 2 NB / (NT / 32) = 32 rows per thread. */
static int laswp_threads(int nb) { return nb * 2; }

/*
 * The panel's interchanges on every column outside [p0, pe), in two
 * launches: lu_laswp_plan composes them into one permutation of the (at
 * most 2 NB) rows they touch, then lu_laswp gathers every moved row from
 * its source, 32 columns per threadgroup, all reads before any write.
 * With LU_ROW_INV the panel's rows of the block row go to the scratch sx
 * instead (block_row reads them there).
 *
 * The count, at 8192^2 float32 (NB 256; H100: 3.3 TB/s, 132 SMs): it was
 * one kernel whose every threadgroup (16 columns) staged 2 NB rows and
 * replayed the 256 swaps one after another in threadgroup memory (~256 x
 * 4 dependent accesses, ~15K cycles per group, 512 groups), measured 78.5
 * us a panel. Now: the plan, one threadgroup per matrix, NB steps of a
 * compare and a select (~1-2 us), then 248 groups of 512 threads, each
 * with 32 independent coalesced 128-byte loads per thread in flight: the
 * moved rows' bytes, ~512 rows x 8192 x 4 B read and as many written, 32
 * MB, ~10 us at 3.3 TB/s (the block row's 8 MB written to sx stay in L2
 * for the GEMM). Expected ~12-15 us a panel, ~2 ms less over the 32
 * panels of 8192^2. Measured with the block row below (H100, 2026-11-27,
 * same call as the code before): LU 8192^2 float32 37.7 -> 33.8 ms, solve
 * with 16 right-hand sides 40.0 -> 36.2 ms, the ~6 ms the counts gave.
 */
static kiln_status launch_laswp(const lu_run *r, const lu_rows *x, int64_t p0,
                                int64_t pe) {
  int64_t outside = r->f->n - (pe - p0);
  if (outside <= 0)
    return KILN_OK;
  lu_launch l;
  kiln_status st =
      lu_kernel("lu_laswp_plan", "Win,piv,p0,pe,batch0", "plan,flag", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->f->w;
  l.arrays[1] = r->f->piv;
  l.num_arrays = 2;
  panel_scalars(&l, p0, pe);
  l.outs[0] = x->plan;
  l.outs[1] = x->flag;
  l.num_outs = 2;
  kiln__targ_int(&l.targs[0], "NB", x->nb);
  l.num_targs = 1;
  l.tg = (uint32_t)(2 * x->nb);
  st = launch_batched(r, &l, true);
  if (st == KILN_OK)
    st = lu_kernel("lu_laswp", "Win,plan,Sin,p0,pe,batch0", "W,S", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->f->w;
  l.arrays[1] = x->plan;
  l.arrays[2] = x->sx;
  l.num_arrays = 3;
  panel_scalars(&l, p0, pe);
  l.outs[0] = r->f->w;
  l.outs[1] = x->sx;
  l.num_outs = 2;
  int nt = laswp_threads(x->nb);
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  kiln__targ_int(&l.targs[1], "NB", x->nb);
  kiln__targ_int(&l.targs[2], "NT", nt);
  kiln__targ_bool(&l.targs[3], "SB", LU_ROW_INV != 0);
  l.num_targs = 4;
  l.tg = (uint32_t)nt;
  l.grid[0] = (uint32_t)((outside + 31) / 32) * l.tg;
  return launch_batched(r, &l, false);
}

/* C -= A B on blocks of W: C = (r1, c1) of rows x cols, A = (r1, k0) of
 * rows x depth, B = (k0, c1) of depth x cols. */
static kiln_status update(const lu_run *r, int64_t r1, int64_t c1, int64_t k0,
                          int64_t rows, int64_t cols, int64_t depth) {
  if (rows <= 0 || cols <= 0 || depth <= 0)
    return KILN_OK;
  kiln_array *a = NULL, *b = NULL, *c = NULL;
  kiln_status st = kiln__linalg_block(r->f->w, r1, k0, rows, depth, &a);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->f->w, k0, c1, depth, cols, &b);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->f->w, r1, c1, rows, cols, &c);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(r->s, false, false, -1.0, a, b, 1.0, c);
  kiln__array_destroy(a);
  kiln__array_destroy(b);
  kiln__array_destroy(c);
  return st;
}

/* U12 = L11^-1 A12 for the block row of the panel [p0, pe), by
 * kiln__trsm in place. */
static kiln_status block_row_trsm(const lu_run *r, int64_t p0, int64_t pe) {
  int64_t n = r->f->n;
  kiln_array *l11 = NULL, *a12 = NULL;
  kiln_status st = kiln__linalg_block(r->f->w, p0, p0, pe - p0, pe - p0, &l11);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->f->w, p0, pe, pe - p0, n - pe, &a12);
  if (st == KILN_OK)
    st = kiln__trsm(r->s, l11, false, false, true, 1.0, a12);
  kiln__array_destroy(l11);
  kiln__array_destroy(a12);
  return st;
}

/* One launch of an L11^-1 kernel (lu_linv_diag, lu_linv): threadgroups
 * of tg threads, `per` of them per 32-row block of the panel's np rows. */
static kiln_status launch_linv(const lu_run *r, const lu_rows *x,
                               const char *name, uint32_t tg, int per,
                               int64_t p0, int64_t pe) {
  lu_launch l;
  kiln_status st = lu_kernel(name, "Win,p0,pe,batch0", "Li,flag", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->f->w;
  l.num_arrays = 1;
  panel_scalars(&l, p0, pe);
  l.outs[0] = x->li;
  l.outs[1] = x->flag;
  l.num_outs = 2;
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  kiln__targ_int(&l.targs[1], "LMAX",
                 kiln__lu_linv_max_test >= 0 ? kiln__lu_linv_max_test
                                             : LU_LINV_MAX);
  kiln__targ_int(&l.targs[2], "NB", x->nb);
  l.num_targs = 3;
  l.tg = tg;
  l.grid[0] = (uint32_t)((pe - p0 + 31) / 32 * per) * tg;
  return launch_batched(r, &l, false);
}

/* lu_rowfix: the block row again by substitution, for the matrices whose
 * L11^-1 lu_linv refused. */
static kiln_status launch_rowfix(const lu_run *r, const lu_rows *x, int64_t p0,
                                 int64_t pe) {
  lu_launch l;
  kiln_status st = lu_kernel("lu_rowfix", "Win,S,flag,p0,pe,batch0", "W", &l);
  if (st != KILN_OK)
    return st;
  l.arrays[0] = r->f->w;
  l.arrays[1] = x->sx;
  l.arrays[2] = x->flag;
  l.num_arrays = 3;
  panel_scalars(&l, p0, pe);
  l.outs[0] = r->f->w;
  l.num_outs = 1;
  kiln__targ_dtype(&l.targs[0], "T", r->a->dtype);
  l.num_targs = 1;
  l.tg = 128;
  l.grid[0] = (uint32_t)((r->f->n - pe + 127) / 128) * l.tg;
  return launch_batched(r, &l, false);
}

/*
 * U12 = L11^-1 A12 for the block row of the panel [p0, pe): with
 * LU_ROW_INV, L11^-1 formed (lu_linv_diag, lu_linv) and one GEMM from the
 * scratch sx (where lu_laswp left A12) into W, then lu_rowfix, which
 * returns at once unless lu_linv flagged the matrix.
 *
 * Why the product is safe: partial pivoting keeps |L| <= 1, which bounds
 * substitution's error, but the product's error grows with ||L11^-1||
 * (Du Croz and Higham), which |L| <= 1 alone bounds only by 2^(NB-1)
 * (Wilkinson's matrix reaches it). In practice L11^-1 stays modest
 * (measured on the host, float64 GEPP of uniform random matrices: the
 * largest |entry| of any 256-column panel's L11^-1 was 2.9, 3.6 and 2.7
 * at n = 1024, 2048 and 4096; 2.2 for 64-column panels at 1024), so
 * LU_LINV_MAX = 64 leaves a wide margin and costs at most a factor ~64
 * (~6 bits) on the block row's rounding. Where an entry exceeds
 * LU_LINV_MAX (or is not finite) lu_linv flags the matrix, on the
 * device, and lu_rowfix redoes that block row by substitution from sx:
 * no host round trip, and the adversarial cases keep substitution's
 * result (tests/test_linalg_lu.c's lt_growth: L of +-1, exact by
 * substitution, 161 n eps by the product).
 *
 * The count, at 8192^2 float32 (NB 256, n - pe up to 7936): kiln__trsm
 * took ~160 us a panel (4 latency-bound 64-column diagonal solves of ~22
 * us and 3 GEMMs of 11-24 us), ~5 ms in all. Now: lu_linv_diag (8 groups,
 * 31 dependent shuffle+FMA steps, ~1 us), lu_linv (32 groups, a chain of
 * at most 7 blocks of <= 256-long dot products, ~3 us), one GEMM 256 x
 * 256 x 7936 (1 GFLOP, ~20-25 us at the GEMM's rate), lu_rowfix (a flag
 * read, ~2 us with its launch): ~30 us a panel, ~1 ms over the 32 panels
 * instead of ~5 (measured together with the gather: see launch_laswp).
 * The GEMM does twice trsm's FLOPs (the full square L11^-1), which costs
 * nothing here: trsm's time was
 * its chain, not its arithmetic.
 */
static kiln_status block_row(const lu_run *r, const lu_rows *x, int64_t p0,
                             int64_t pe) {
  int64_t n = r->f->n, np = pe - p0;
  if (pe >= n)
    return KILN_OK;
  if (!LU_ROW_INV)
    return block_row_trsm(r, p0, pe);
  kiln_status st = launch_linv(r, x, "lu_linv_diag", 1024, 1, p0, pe);
  if (st == KILN_OK)
    st = launch_linv(r, x, "lu_linv", 256, 4, p0, pe);
  kiln_array *li = NULL, *a12 = NULL, *u12 = NULL;
  if (st == KILN_OK)
    st = kiln__linalg_block(x->li, 0, 0, np, np, &li);
  if (st == KILN_OK)
    st = kiln__linalg_block(x->sx, 0, 0, np, n - pe, &a12);
  if (st == KILN_OK)
    st = kiln__linalg_block(r->f->w, p0, pe, np, n - pe, &u12);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(r->s, false, false, 1.0, li, a12, 0.0, u12);
  kiln__array_destroy(li);
  kiln__array_destroy(a12);
  kiln__array_destroy(u12);
  if (st == KILN_OK)
    st = launch_rowfix(r, x, p0, pe);
  return st;
}

/* The panel [p0, pe)'s own chain, which touches only W's columns [p0,
 * pe) (rows p0 .. m-1), PT, piv, info and the grid scratch: its columns
 * transposed into PT, its strips (lu_panel and a GEMM each) there, back
 * into W. */
static kiln_status run_chain(const lu_run *r, int64_t p0, int64_t pe) {
  kiln_status st = launch_transpose(r, p0, pe, false);
  if (st == KILN_OK)
    st = run_panel(r, p0, pe);
  if (st == KILN_OK)
    st = launch_transpose(r, p0, pe, true);
  return st;
}

/* The panels: per panel, its chain (run_chain), then the interchanges
 * outside it, the block row and the trailing update. */
static kiln_status run_panels(const lu_run *r) {
  const kiln__lu *f = r->f;
  int64_t nb = panel_width(f);
  lu_rows x;
  kiln_status st = make_rows(r, &x);
  for (int64_t p0 = 0; st == KILN_OK && p0 < f->k; p0 += nb) {
    int64_t pe = p0 + nb < f->k ? p0 + nb : f->k;
    st = run_chain(r, p0, pe);
    if (st == KILN_OK)
      st = launch_laswp(r, &x, p0, pe);
    if (st == KILN_OK)
      st = block_row(r, &x, p0, pe);
    if (st == KILN_OK)
      st = update(r, pe, pe, p0, f->m - pe, f->n - pe, pe - p0);
  }
  free_rows(&x);
  return st;
}

/* Whether the panels run with the look-ahead, from
 * kiln__lu_lookahead_test (or KILN_LU_LOOKAHEAD): mode 1 where it is
 * expected to pay (one matrix, k >= LU_AHEAD_MIN_K, CUDA), mode 2
 * wherever it applies (tests), 0 never. */
static bool use_lookahead(const lu_run *r) {
  const kiln__lu *f = r->f;
  pthread_once(&g_ahead_once, read_ahead_env);
  int mode = kiln__lu_lookahead_test >= 0 ? kiln__lu_lookahead_test
                                          : g_ahead_env;
  if (mode <= 0 || mode > 2 || f->batch != 1 || f->k <= panel_width(f))
    return false;
  return mode == 2 || (on_cuda(r) && f->k >= LU_AHEAD_MIN_K);
}

/*
 * The panels with a one-panel look-ahead (MAGMA's getrf), for one matrix:
 * the chain of panel k + 1 (run_chain: its transposes, strips and
 * in-panel GEMMs) runs on the device's side stream s2 while the caller's
 * stream s1 does panel k's bulk trailing update. Per panel [p0, pe), the
 * next one being [pe, ne):
 *   s1: join (wait for s2: the chain of [p0, pe) is done), lu_laswp, the
 *       block row;
 *   fork: s2 waits for s1 here, then runs update_a = the next panel's
 *       columns only, A[pe:, pe:ne] -= L21 U12[:, pe:ne], and the chain
 *       of [pe, ne);
 *   s1: update_b = the rest, A[pe:, ne:] -= L21 U12[:, ne:], in one
 *       GEMM.
 * update_a and the chain of [pe, ne) write W only in the columns [pe,
 * ne), which update_b does not touch; all three read L21 and U12
 * (columns [p0, pe), rows p0 .. pe-1), which none writes; the next
 * lu_laswp permutes rows of every column outside [pe, ne), update_b's
 * included, and reads piv, hence the join before it. (update_a on s2
 * rather than before the fork on s1: update_b starts as soon as the
 * block row is done, ~30-40 us earlier a panel, and update_a gets s2's
 * priority.) The first panel's chain runs on s1 (nothing to overlap
 * yet); the last join is also made after the loop, so that whatever
 * follows on s1 (and the call's own info read) comes after every launch
 * of s2, and W's hazard record then names that point as its last write
 * (kiln__linalg_note_written), so that a third stream orders after s2's
 * writes too.
 *
 * Why the chain goes to the side stream and the bulk GEMM stays on s1:
 * on CUDA the side stream has the highest priority (kiln_stream's hint;
 * the default priority, the caller's, is already the lowest), so as the
 * GEMM's blocks retire the SMs go to the chain's next launch first: the
 * chain is the critical path from about the tenth panel on (below), and
 * lu_strip_grid is a cooperative launch that starts only once all its
 * groups are resident.
 *
 * Hazards. The core orders work by buffer record, so s2 sees W through
 * an alias (kiln__linalg_alias: a second record over the same memory)
 * and the fork and join above order the two explicitly; PT, piv, info
 * and the grid scratch, which both streams reach only in turn, keep
 * their own records and the core orders them as usual. W's memory must
 * outlive s2's work even if the caller destroys the result as soon as
 * the call returns: after the last join, W's buffer is held on s1
 * (kiln__hold_until_done), released only once s1 has passed that join.
 * The side stream is the device's (made once, kept), shared by
 * concurrent calls, which then only queue behind each other on it.
 *
 * The count, at 8192^2 float32 (NB 256, 32 panels; H100 Nsight of main,
 * LU 29.8 ms): the chain ~0.5 ms a panel (lu_strip_grid ~14 ms and the
 * in-panel GEMMs ~1.5 ms over 32 panels), laswp and block row ~47 us a
 * panel (1.5 ms), the trailing GEMMs 11 ms, panel k's share G_k ~ (31 -
 * k)^2 / 10416 of it: 1.0 ms at k = 0, below the chain's 0.5 ms from k =
 * 10 on. Before, on one stream, they add up: ~29.8 ms. After, at best,
 * per panel max(update_a + chain of k + 1, update_b of k) + laswp +
 * block row: sum of max() ~7.5 ms (k < 10, GEMM-bound) + ~10.5 ms (21
 * panels, chain-bound), plus update_a (m - pe rows x 256 x 256, 1 GFLOP,
 * ~30-40 us, ~0.8 ms over the chain-bound panels, newly on the path:
 * before it was part of one large GEMM), the first chain 0.5, laswp and
 * block row 1.5: ~21-22 ms, if the two streams shared the SMs perfectly.
 *
 * They may not (the risk): gemm_f32 runs 2 groups of 256 threads x 128
 * registers per SM, the whole register file (65,536), and each chain
 * kernel (per panel update_a, 2 transposes, 4 lu_strip_grid and 3
 * in-panel GEMMs) becomes ready only when the one before it ends: in
 * that gap the SMs it freed take update_b's pending blocks (~37 us each
 * at k = 256: 128 x 128 x 256 at ~0.45 TFLOP/s an SM). A GEMM-like chain
 * kernel fits in half an SM, so it gets the next retiring GEMM slots
 * first (priority): a few us. But a lu_strip_grid group (256 threads x
 * 177 registers in float32, 188 in float64: ~45-48 K) needs both GEMM
 * groups of an SM gone, and the cooperative launch needs all its ~32
 * groups resident; if the block scheduler keeps filling half-free SMs
 * with update_b's pending blocks (whether a higher-priority block that
 * does not fit holds them back is not documented), each strip waits
 * until update_b has no block left to start. That loses the overlap on
 * the GEMM-bound panels (there the panel costs ~G_k + chain, as before)
 * and costs ~1-1.5 GEMM block lifetimes (~50 us) a chain-bound panel:
 * ~2.5 ms saved in all (LU ~27 ms), about what was measured (H200, one
 * process: 26.1-26.9 ms with the look-ahead, 27.8-27.9 without). Two
 * ways to leave the strips their SMs measured slower (bench/RESULTS.md,
 * seventh session): update_b as column chunks of one wave each, separate
 * launches on the SMs the strips leave (29.2-29.7 ms), and as one launch
 * on a capped grid of 512-thread persistent GEMM groups, one an SM
 * (26.9 against 26.5 ms whole in one process; branch wip/capped).
 */
static kiln_status run_panels_ahead(const lu_run *r) {
  const kiln__lu *f = r->f;
  int64_t nb = panel_width(f), m = f->m, n = f->n;
  kiln__lu fs = *f; /* f's arrays, W seen through its alias */
  fs.w = NULL;
  lu_run side = *r;
  side.f = &fs;
  side.s = NULL;
  lu_rows x;
  memset(&x, 0, sizeof x);
  kiln_status st = kiln__device_side_stream(r->s->device, &side.s);
  if (st == KILN_OK)
    st = kiln__linalg_alias(f->w, &fs.w);
  if (st == KILN_OK)
    st = make_rows(r, &x);
  if (st == KILN_OK)
    st = run_chain(r, 0, nb < f->k ? nb : f->k);
  for (int64_t p0 = 0; st == KILN_OK && p0 < f->k; p0 += nb) {
    int64_t pe = p0 + nb < f->k ? p0 + nb : f->k;
    int64_t ne = pe + nb < f->k ? pe + nb : f->k;
    if (p0 > 0) /* join: this panel's chain ran on s2 */
      st = kiln__stream_wait_stream(r->s, side.s);
    if (st == KILN_OK)
      st = launch_laswp(r, &x, p0, pe);
    if (st == KILN_OK)
      st = block_row(r, &x, p0, pe);
    if (st != KILN_OK || pe >= f->k) {
      /* the last panel: what is left of the trailing matrix, if any */
      if (st == KILN_OK)
        st = update(r, pe, pe, p0, m - pe, n - pe, pe - p0);
      continue;
    }
    st = kiln__stream_wait_stream(side.s, r->s); /* fork */
    if (st == KILN_OK) /* update_a */
      st = update(&side, pe, pe, p0, m - pe, ne - pe, pe - p0);
    if (st == KILN_OK)
      st = run_chain(&side, pe, ne);
    if (st == KILN_OK) /* update_b */
      st = update(r, pe, ne, p0, m - pe, n - ne, pe - p0);
  }
  /* The last join, whatever happened above (s2 may hold launches on the
   * alias even after a failure), then W's hold and its record. */
  if (side.s != NULL) {
    kiln_status jst = kiln__stream_wait_stream(r->s, side.s);
    if (jst == KILN_OK)
      jst = kiln__hold_until_done(r->s, &f->w->buffer, 1);
    if (jst == KILN_OK)
      jst = kiln__linalg_note_written(r->s, f->w->buffer);
    if (st == KILN_OK)
      st = jst;
  }
  free_rows(&x);
  kiln__array_destroy(fs.w);
  return st;
}

/* The blocked path: W = A, then the panels with PT (batch×NB×m) as their
 * scratch. */
static kiln_status run_blocked(lu_run *r) {
  const kiln__lu *f = r->f;
  int64_t nb = panel_width(f);
  int64_t shape[3] = {f->batch, nb < f->k ? nb : f->k, f->m};
  kiln_status st =
      kiln__array_create(r->s->device, r->a->dtype, 3, shape, &r->pt);
  if (st == KILN_OK && grid_device(r))
    st = make_grid_scratch(r);
  if (st == KILN_OK)
    st = launch_copy(r);
  if (st == KILN_OK)
    st = use_lookahead(r) ? run_panels_ahead(r) : run_panels(r);
  kiln__array_destroy(r->pt);
  kiln__array_destroy(r->gx);
  kiln__array_destroy(r->gs);
  r->pt = r->gx = r->gs = NULL;
  return st;
}

/* ---- the factorization --------------------------------------------------- */

/* See linalg.h. */
void kiln__lu_free(kiln__lu *f) {
  kiln__array_destroy(f->w);
  kiln__array_destroy(f->piv);
  kiln__array_destroy(f->info);
  memset(f, 0, sizeof *f);
}

/* The arrays of a factorization of A: W like A, piv ...×k, info batch. */
static kiln_status make_arrays(kiln_array *a, kiln_stream *s, kiln__lu *f) {
  int nd = a->ndim;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, a->shape, (size_t)nd * sizeof *shape);
  shape[nd - 2] = f->k;
  kiln_status st = kiln__array_create(s->device, a->dtype, nd, a->shape, &f->w);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, KILN_INT32, nd - 1, shape, &f->piv);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, KILN_INT32, 1, &f->batch, &f->info);
  return st;
}

/* Names the first failed matrix and its pivot (the info read back). */
static kiln_status info_error(kiln_array *a, int64_t first, int32_t value,
                              int64_t failed) {
  char which[128];
  kiln__linalg_which(which, sizeof which, "A", a, first, failed);
  if (value == LU_INFO_NONFINITE)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "%s contains NaN or infinity; LU needs finite "
                       "values.",
                       which);
  if (value < 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "pivot %d (LAPACK's info, from 1) of %s is not "
                       "finite: the factorization overflowed.",
                       (int)-value, which);
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "%s is singular: its pivot %d (LAPACK's info, from 1) "
                     "is exactly zero.",
                     which, (int)value);
}

/* The blocked path with a scalar pool in use (linalg.h): its GEMMs then
 * take their alpha, beta and batch0 from it, so that the panels' chain of
 * kernels has no fill between two of them. */
static kiln_status run_blocked_fn(void *r) { return run_blocked(r); }

/* See linalg.h. */
kiln_status kiln__lu_run(kiln_stream *s, kiln_array *a, int path, bool check,
                         kiln__lu *out) {
  kiln__lu f;
  memset(&f, 0, sizeof f);
  kiln_status st =
      kiln__linalg_batch(&a, 1, (const char *const[]){"A"}, &f.batch);
  f.m = a->shape[a->ndim - 2];
  f.n = a->shape[a->ndim - 1];
  f.k = f.m < f.n ? f.m : f.n;
  if (st == KILN_OK)
    st = choose_path(&f, path, &path);
  if (st == KILN_OK)
    st = make_arrays(a, s, &f);
  lu_run r = {&f, a, s, NULL, NULL, NULL, NULL};
  bool work = f.batch > 0 && f.k > 0;
  if (st == KILN_OK && work)
    st = kiln__array_fill(f.info, 0.0, s);
  if (st == KILN_OK && work) {
    int64_t len = f.m > f.n ? f.m : f.n;
    st = make_index(&r, (len > f.batch ? len : f.batch) + 1);
  }
  if (st == KILN_OK && work)
    st = path == LU_PATH_SMALL
             ? run_small(&r)
             : kiln__linalg_pooled(s, a->dtype, run_blocked_fn, &r);
  kiln__array_destroy(r.idx);
  if (st == KILN_OK && work && check) {
    int64_t first = -1, failed = 0;
    int32_t value = 0;
    st = kiln__linalg_read_info(f.info, f.batch, &first, &value, &failed);
    if (st == KILN_OK && first >= 0)
      st = info_error(a, first, value, failed);
  }
  if (st != KILN_OK) {
    kiln__lu_free(&f);
    return st;
  }
  *out = f;
  return KILN_OK;
}

/* See linalg.h. */
kiln_status kiln__lu_prepare(kiln_array *a, const kiln_linalg_opts *opts,
                             const char *what, bool square, kiln_linalg_opts *o,
                             kiln_stream **s) {
  int64_t batch = 0;
  kiln_status st = kiln__linalg_opts(opts, o);
  if (st == KILN_OK)
    st = kiln__lu_check(a, what, square, &batch);
  if (st == KILN_OK)
    st = kiln__linalg_stream(o, &a, 1, s);
  return st;
}

/* ---- permutation and unpacking ------------------------------------------- */

/* See linalg.h. */
kiln_status kiln__lu_perm(kiln_stream *s, const kiln__lu *f, kiln_array **out) {
  int nd = f->w->ndim;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, f->w->shape, (size_t)nd * sizeof *shape);
  kiln_array *perm = NULL;
  kiln_status st =
      kiln__array_create(s->device, KILN_INT32, nd - 1, shape, &perm);
  lu_run r = {(kiln__lu *)f, NULL, s, NULL, NULL, NULL, NULL};
  if (st == KILN_OK && f->batch > 0 && f->m > 0)
    st = make_index(&r, f->batch + 1);
  lu_launch l;
  if (st == KILN_OK && f->batch > 0 && f->m > 0)
    st = lu_kernel("lu_perm", "W,piv,batch0", "perm", &l);
  if (st == KILN_OK && f->batch > 0 && f->m > 0) {
    l.arrays[0] = f->w;
    l.arrays[1] = f->piv;
    l.num_arrays = 2;
    l.outs[0] = perm;
    l.num_outs = 1;
    /* a thread per row (lu_perm traces each back through the swaps),
     * the pivots staged LU_PERM_CHUNK at a time */
    kiln__targ_int(&l.targs[0], "CH",
                   kiln__lu_perm_chunk_test > 0 ? kiln__lu_perm_chunk_test
                                                : LU_PERM_CHUNK);
    l.num_targs = 1;
    l.tg = 128;
    l.grid[0] = (uint32_t)((f->m + 127) / 128 * 128);
    st = launch_batched(&r, &l, false);
  }
  kiln__array_destroy(r.idx);
  if (st != KILN_OK) {
    kiln__array_destroy(perm);
    return st;
  }
  *out = perm;
  return KILN_OK;
}

/* See linalg.h. */
kiln_status kiln__lu_unpack(kiln_stream *s, const kiln__lu *f, kiln_array *l,
                            kiln_array *u) {
  if (f->batch == 0 || f->k == 0)
    return KILN_OK;
  lu_run r = {(kiln__lu *)f, NULL, s, NULL, NULL, NULL, NULL};
  lu_launch ll;
  kiln_status st = make_index(&r, f->batch + 1);
  if (st == KILN_OK)
    st = lu_kernel("lu_unpack", "W,batch0", "L,U", &ll);
  if (st == KILN_OK) {
    ll.arrays[0] = f->w;
    ll.num_arrays = 1;
    ll.outs[0] = l;
    ll.outs[1] = u;
    ll.num_outs = 2;
    kiln__targ_dtype(&ll.targs[0], "T", f->w->dtype);
    ll.num_targs = 1;
    uint64_t big = (uint64_t)f->k * (uint64_t)(f->m > f->n ? f->m : f->n);
    ll.grid[0] = (uint32_t)((big + 255) / 256 * 256);
    ll.tg = 256;
    st = launch_batched(&r, &ll, false);
  }
  kiln__array_destroy(r.idx);
  return st;
}

/* ---- right-hand sides and determinants ----------------------------------- */

/* See linalg.h. */
kiln_status kiln__lu_gather(kiln_stream *s, kiln_array *perm, kiln_array *b,
                            bool ident, int64_t batch, kiln_array *x) {
  int64_t n = b->shape[b->ndim - 2], kc = b->shape[b->ndim - 1];
  if (batch == 0 || n == 0 || kc == 0)
    return KILN_OK;
  kiln__lu f;
  memset(&f, 0, sizeof f);
  f.batch = batch;
  lu_run r = {&f, NULL, s, NULL, NULL, NULL, NULL};
  lu_launch l;
  kiln_status st = make_index(&r, batch + 1);
  if (st == KILN_OK)
    st = lu_kernel("lu_gather", "B,perm,batch0", "X", &l);
  if (st == KILN_OK) {
    l.arrays[0] = b;
    l.arrays[1] = perm;
    l.num_arrays = 2;
    l.outs[0] = x;
    l.num_outs = 1;
    kiln__targ_dtype(&l.targs[0], "T", x->dtype);
    kiln__targ_bool(&l.targs[1], "IDENT", ident);
    l.num_targs = 2;
    uint64_t elems = (uint64_t)n * (uint64_t)kc;
    l.grid[0] = (uint32_t)((elems + 255) / 256 * 256);
    l.tg = 256;
    st = launch_batched(&r, &l, false);
  }
  kiln__array_destroy(r.idx);
  return st;
}

/* See linalg.h. */
kiln_status kiln__lu_det(kiln_stream *s, const kiln__lu *f, bool log,
                         kiln_array *d, kiln_array *sign) {
  if (f->batch == 0)
    return KILN_OK;
  if (f->n == 0) { /* the empty product */
    kiln_status st = kiln__array_fill(d, log ? 0.0 : 1.0, s);
    return st == KILN_OK ? kiln__array_fill(sign, 1.0, s) : st;
  }
  lu_run r = {(kiln__lu *)f, NULL, s, NULL, NULL, NULL, NULL};
  lu_launch l;
  kiln_status st = make_index(&r, f->batch + 1);
  if (st == KILN_OK)
    st = lu_kernel("lu_det", "W,piv,batch0", "D,S", &l);
  if (st == KILN_OK) {
    l.arrays[0] = f->w;
    l.arrays[1] = f->piv;
    l.num_arrays = 2;
    l.outs[0] = d;
    l.outs[1] = sign;
    l.num_outs = 2;
    kiln__targ_dtype(&l.targs[0], "T", f->w->dtype);
    kiln__targ_bool(&l.targs[1], "LOG", log);
    l.num_targs = 2;
    l.tg = f->n >= 4096 ? 1024 : f->n >= 256 ? 256 : 32;
    st = launch_batched(&r, &l, true);
  }
  kiln__array_destroy(r.idx);
  return st;
}
