/*
 * The blocked Householder QR (kiln_qr's general path, path 3): LAPACK's
 * geqrf and orgqr structure, every step a kernel launch or a GEMM that
 * covers the whole batch, no host round trips.
 *
 *   W = A                      qrb_copy (A may be a strided view)
 *   for each outer block of NBO = 4 NB columns at J0:
 *     for each panel of NB columns at j0 (jb = min(NB, k - j0)):
 *       factor the panel       its reflectors V (into Y), its triangular T
 *                              (into Tm) and R's rows of the panel (in W)
 *       A2 -= V (T^T (V^T A2)) GEMMs on the rest of the outer block,
 *                              A2 = W[j0:m, j0+jb:J0+NBO] (compact WY)
 *     the block's T (into To)  qrb_tinit (the panels' T's on its
 *                              diagonal), G = V^T V, and the blocks above
 *                              the diagonal merged by doubling widths,
 *                              T_ab = -T_aa G_ab T_bb (small GEMMs)
 *     A2 -= V (T^T (V^T A2))   the trailing columns, W[J0:m, J0+NBO:n],
 *                              with k = NBO
 *   R = D triu(W)              qrb_r, D = the signs of W's diagonal
 *   Q = E D                    qrb_qinit (E the first columns of I)
 *   for each outer block, last first:
 *     Q2 -= V (T (V^T Q2))     GEMMs, Q2 = Q[J0:m, J0:cols], k = NBO
 *
 * Why outer blocks: with k = NB = 64 the big GEMMs of the updates and of
 * Q's accumulation reread C for little work (C -= V X) and give V^T C few
 * output tiles; k = 256 made them ~1.6x faster on an H100 (8192^2: 199
 * to 167 ms in all), for ~10 small launches per outer block to build T.
 * Y is zeroed first, so an outer block's V is one view of it.
 *
 * Backward accumulation (orgqr) applies the reflectors to Q's trailing
 * block only, since in rows j0.. the columns before j0 are still zero when
 * panel j0 is applied; starting from E D makes Q's column i carry the sign
 * that R's row i was given, so R's diagonal is non-negative for free.
 *
 * Three panel factorizations (kiln__qr_blocked_ex forces one):
 *   one group  qrb_panel: one threadgroup per matrix works through the
 *              panel's columns (block-wide reductions, T formed on the
 *              way). One launch per panel, but one SM per matrix, which
 *              per column reads the rows below the pivot twice and writes
 *              them once: about 3 NB / 2 passes over the panel, 3 NB^2
 *              rows / 2 element transfers (6 MB for float32 256 x 64),
 *              from L1/L2. Used for panels under QRB_TALL_MIN_ROWS rows.
 *   CholeskyQR kiln__qr_tall (src/linalg/qr.c: shifted CholeskyQR3, a few
 *              launches that stream over the panel on every SM, with
 *              TSQR redoing on the device exactly the panels where it
 *              broke down, e.g. rank-deficient ones) gives the panel's
 *              explicit Q and R; then Householder reconstruction
 *              (qrb_recon, one small launch: an LU without pivoting of the
 *              jb x jb top of Q - S, T and S U^-1) and one GEMM for the
 *              vectors below the top, Y2 = -Q2 S U^-1. Auto's choice for
 *              panels of QRB_TALL_MIN_ROWS rows or more.
 *   TSQR       the same with kiln__qr_tsqr for the panel's QR (about four
 *              passes, ~log_{256/jb}(rows) + 1 tree levels of two
 *              latency-bound launches each): forced only (tests, benches).
 *
 * Where the time goes (H100, float32, probe with a synchronize after
 * each phase): at 4096^2 the panels' tall-skinny QRs take ~23 of 35 ms
 * (0.37 ms each, a chain of ~20 small launches, the GPU mostly idle), the
 * reconstruction and its GEMM ~0.1 ms a panel, the trailing updates ~4
 * ms, Q ~4 ms; at 8192^2 the panels ~56 of 99 ms, the trailing updates
 * ~22 and Q ~23 ms. The host enqueues the whole call in ~23 / ~71 ms.
 * Tried and measured slower, so not done: look-ahead (the next outer
 * block factored on a second stream, on aliases of W, Y and To, while
 * the main stream applies the current one to the columns after it): 37.4
 * against 35.0 ms at 4096^2 and 105.4 against 99.5 at 8192^2, since the
 * panels' chain is the critical path and its GPU-wide launches (the Gram
 * and row passes) then wait behind the GEMM's tiles; outer blocks of 128
 * or 512 columns (36.7 / 106.4 and 35.0 / 99.8 ms); one-group panels up
 * to 1024 or 2048 rows (39.5 and 73.2 ms at 4096^2); split-K counts
 * chosen for whole waves of 128-square tiles (no change).
 *
 * V^T C has few output tiles (jb x cols) and a long k (the panel's rows):
 * alone it would run on a handful of SMs, so it is split over row slices
 * (split-K: one GEMM over a slice batch dimension, then qrb_sum) whenever
 * that gets it near eight waves of tiles (split_count): alone, the
 * 256 x 7936 product of 8192 rows ran at 19 TFLOP/s on an H100, where
 * C -= V X (8192 x 7936, k = 256) ran at 36.
 *
 * NB is 64 for float32 and 32 for float64 (qrb_panel's threadgroup memory:
 * T and the per-warp partial sums). Workspaces, all contiguous and 3-D
 * (batch x rows x cols, the caller's batch dimensions flattened): W (m x
 * n), Y (m x k, the vectors with their unit diagonal and zeros above, so
 * GEMMs take views of it), Tm (one NB x NB block per panel), To (one
 * NBO x NBO block per outer block), two GEMM products of NBO x max(n,
 * cols), the split-K partial products, and for
 * reconstructed panels their Q (m x NB), R and S U^-1 (NB x NB).
 */
#include <stdint.h>
#include <string.h>

#include "linalg/linalg.h"

#define QRB_NB_F32 64
#define QRB_NB_F64 32
/* Panels per outer block: the trailing update and Q's accumulation apply
 * NBO = NB * QRB_NBO_MULT reflectors at once (GEMMs with k = NBO). */
#define QRB_NBO_MULT 4

/* CUDA's limit on grid.y; the batch runs in chunks of this many. */
#define QRB_Y_CHUNK 65535
/* Threads of the element-wise kernels, and their most groups per matrix
 * (a grid-stride loop covers the rest). */
#define QRB_EW_THREADS 256
#define QRB_EW_GROUPS 4096

/* Split-K of V^T C: slices of at least this many rows, at most this many
 * slices, and enough of them for this many GEMM tiles (eight waves on an
 * H100's 132 SMs; measured on an H100 with CholeskyQR panels: 136 ms
 * at 8192^2 against 154 ms with four waves and 159 ms with two, 16384 x
 * 1024 16.3 against 16.9 ms, 4096^2 51.5 against 54.3 ms; sixteen waves
 * gave the same as eight). The GEMM's own tiles are taken as 64 x 64. */
#define QRB_SPLIT_ROWS 256
#define QRB_SPLIT_MAX 32
#define QRB_TARGET_TILES 1056
/* Panels of at least this many rows go through CholeskyQR (auto). */
#define QRB_TALL_MIN_ROWS 256
/* Threads of the reconstruction kernel per NB columns: qrb_recon gives
 * each row of the NB x NB top 4 threads. */
#define QRB_RECON_THREADS_PER_COL 4

/* One blocked QR and its workspaces. */
typedef struct qrb_problem {
  kiln_stream *s;
  kiln_array *a;
  kiln_qr_mode mode;
  kiln_dtype dt;
  int64_t m, n, k, batch;
  int64_t qcols, rrows; /* Q's columns, R's rows */
  int nb, panels;
  int nbo, outers; /* outer blocks: NBO_MULT panels, one trailing update */
  int panel;   /* forced panel factorization, QRB_PANEL_* (0: by size) */
  int splits;  /* most row slices of a split V^T C (1: never split) */
  kiln_array *q3, *r3;              /* 3-D views of the caller's q and r */
  kiln_array *w, *y, *tm, *p1, *p2; /* workspaces */
  kiln_array *to;                   /* the outer blocks' T */
  kiln_array *parts;                /* split-K partial products */
  kiln_array *qp, *rp, *ui;         /* a reconstructed panel's factors */
} qrb_problem;


/* ---- choices ------------------------------------------------------------ */

/* How a panel of `rows` rows is factored (KILN__QRB_PANEL_ONE, _TSQR or
 * _CHOLQR). One threadgroup reads the panel about NB times from L2 on a
 * single SM; a tall-skinny QR spreads a few passes over every SM, which
 * pays once the panel is tall. Auto takes CholeskyQR (kiln__qr_tall): a
 * few streaming launches where TSQR's tree has ~4 levels of two
 * latency-bound launches each, and its TSQR fallback keeps rank-deficient
 * panels right. On an H100 (CholeskyQR as of 0c5e945) an 8192 x 64 panel
 * took 0.49 ms against TSQR's 0.67, and the QR of 8192^2 153 ms against
 * 162, of 16384 x 1024 16.8 against 18.5 (4096^2: 53.3 against 51.2). */
static int panel_kind(const qrb_problem *p, int64_t rows) {
  if (p->panel != KILN__QRB_PANEL_AUTO)
    return p->panel;
  return rows >= QRB_TALL_MIN_ROWS ? KILN__QRB_PANEL_CHOLQR
                                   : KILN__QRB_PANEL_ONE;
}

/* Whether a panel of `rows` rows goes through a tall-skinny QR and
 * Householder reconstruction. */
static bool uses_recon(const qrb_problem *p, int64_t rows) {
  return panel_kind(p, rows) != KILN__QRB_PANEL_ONE;
}

/* Row slices for V^T C (jb x cols, summed over `rows`): a product this
 * small in tiles but long in k would run on a few SMs, so it is cut into
 * slices whose partial products are summed after (split-K). */
static int split_count(const qrb_problem *p, int64_t rows, int64_t jb,
                       int64_t cols) {
  int64_t tiles = ((jb + 63) / 64) * ((cols + 63) / 64) * p->batch;
  int64_t want = (QRB_TARGET_TILES + tiles - 1) / tiles;
  if (want > rows / QRB_SPLIT_ROWS)
    want = rows / QRB_SPLIT_ROWS;
  if (want > QRB_SPLIT_MAX)
    want = QRB_SPLIT_MAX;
  return want < 2 ? 1 : (int)want;
}

/* The most slices any product of this problem takes (fewest tiles, most
 * rows), which sizes the partial-product workspace. */
static int max_splits(const qrb_problem *p) {
  return split_count(p, p->m, 1, 1);
}

/* ---- arrays ------------------------------------------------------------- */

/* kiln_array_view for the driver (keeps the caller's name in messages). */
static kiln_status view_of(kiln_array *x, int nd, const int64_t *shape,
                           const int64_t *strides, int64_t offset,
                           kiln_array **out) {
  const char *api = kiln__api_current();
  kiln_status st = kiln_array_view(x, nd, shape, strides, offset, out);
  kiln__api_enter(api);
  return st;
}

static kiln_status new3(const qrb_problem *p, int64_t rows, int64_t cols,
                        kiln_array **out) {
  int64_t shape[3] = {p->batch, rows, cols};
  return kiln__array_create(p->s->device, p->dt, 3, shape, out);
}

/* A 3-D view (batch x rows x cols) of a contiguous caller array. */
static kiln_status view3(const qrb_problem *p, kiln_array *x, int64_t rows,
                         int64_t cols, kiln_array **out) {
  int64_t shape[3] = {p->batch, rows, cols};
  int64_t strides[3] = {rows * cols, cols, 1};
  return view_of(x, 3, shape, strides, 0, out);
}

/* Checks what the caller (kiln_qr) promises, since a mistake here would
 * write out of bounds: dtypes, and q and r contiguous of the mode's shape
 * with A's batch. */
static kiln_status check_out(const qrb_problem *p, kiln_array *x,
                             const char *name, int64_t rows, int64_t cols) {
  bool ok = x->dtype == p->dt && x->ndim == p->a->ndim &&
            kiln__array_is_contiguous(x) &&
            x->shape[x->ndim - 2] == rows && x->shape[x->ndim - 1] == cols;
  for (int d = 0; ok && d < x->ndim - 2; d++)
    ok = x->shape[d] == p->a->shape[d];
  if (!ok)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "blocked QR: %s is not a contiguous %s array of "
                       "A's batch x %lld x %lld.",
                       name, kiln_dtype_name(p->dt), (long long)rows,
                       (long long)cols);
  return KILN_OK;
}

static kiln_status setup(qrb_problem *p, kiln_array *q, kiln_array *r) {
  kiln_array *a = p->a;
  if (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s; QR supports float32 and float64.",
                       kiln_dtype_name(a->dtype));
  if (a->ndim < 2 || (p->mode == KILN_QR_R) != (q == NULL) || r == NULL ||
      p->mode < KILN_QR_REDUCED || p->mode > KILN_QR_R)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "blocked QR called with bad arguments.");
  p->dt = a->dtype;
  p->m = a->shape[a->ndim - 2];
  p->n = a->shape[a->ndim - 1];
  p->k = p->m < p->n ? p->m : p->n;
  p->batch = 1;
  for (int d = 0; d < a->ndim - 2; d++)
    p->batch *= a->shape[d];
  p->nb = p->dt == KILN_FLOAT64 ? QRB_NB_F64 : QRB_NB_F32;
  p->panels = (int)((p->k + p->nb - 1) / p->nb);
  p->nbo = p->nb * QRB_NBO_MULT;
  p->outers = (int)((p->k + p->nbo - 1) / p->nbo);
  bool complete = p->mode == KILN_QR_COMPLETE;
  p->qcols = complete ? p->m : p->k;
  p->rrows = complete ? p->m : p->k;
  if (p->m > INT32_MAX / (p->n > 0 ? p->n : 1) ||
      p->m > INT32_MAX / (p->qcols > 0 ? p->qcols : 1))
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %lld x %lld; the blocked QR takes matrices of "
                       "up to 2^31 elements (and Q too).",
                       (long long)p->m, (long long)p->n);
  kiln_status st = check_out(p, r, "R", p->rrows, p->n);
  if (st == KILN_OK && q != NULL)
    st = check_out(p, q, "Q", p->m, p->qcols);
  if (st == KILN_OK)
    st = view3(p, r, p->rrows, p->n, &p->r3);
  if (st == KILN_OK && q != NULL)
    st = view3(p, q, p->m, p->qcols, &p->q3);
  return st;
}

static kiln_status make_workspaces(qrb_problem *p) {
  int64_t wide = p->n > p->qcols ? p->n : p->qcols;
  kiln_status st = new3(p, p->m, p->n, &p->w);
  if (st == KILN_OK)
    st = new3(p, p->m, p->k, &p->y);
  if (st == KILN_OK)
    st = new3(p, (int64_t)p->panels * p->nb, p->nb, &p->tm);
  if (st == KILN_OK && p->nbo > p->nb)
    st = new3(p, (int64_t)p->outers * p->nbo, p->nbo, &p->to);
  if (st == KILN_OK)
    st = new3(p, p->nbo, wide, &p->p1);
  if (st == KILN_OK)
    st = new3(p, p->nbo, wide, &p->p2);
  p->splits = max_splits(p);
  if (st == KILN_OK && p->splits > 1)
    st = new3(p, (int64_t)(p->splits + 1) * p->nbo, wide, &p->parts);
  /* Y's zeros above each panel's diagonal block (the panel kernels write
   * rows j0.. only) make an outer block's V one view of Y. */
  if (st == KILN_OK)
    st = kiln__array_fill(p->y, 0.0, p->s);
  if (st == KILN_OK && uses_recon(p, p->m)) {
    st = new3(p, p->m, p->nb, &p->qp);
    if (st == KILN_OK)
      st = new3(p, p->nb, p->nb, &p->rp);
    if (st == KILN_OK)
      st = new3(p, p->nb, p->nb, &p->ui);
  }
  return st;
}

static void destroy_all(qrb_problem *p) {
  kiln_array *all[12] = {p->w,  p->y,     p->tm, p->p1, p->p2, p->q3,
                         p->r3, p->parts, p->qp, p->rp, p->ui, p->to};
  for (int i = 0; i < 12; i++)
    kiln__array_destroy(all[i]);
}

/* ---- launches ----------------------------------------------------------- */

/*
 * Launches `kernel` over the batch in chunks of grid.y: inputs `in` (the
 * last one is replaced by each chunk's batch0 scalar), outputs `into`,
 * template argument T, grid.x threads in groups of `tg`.
 */
static kiln_status launch_batched(const qrb_problem *p, kiln_kernel *kernel,
                                  kiln_array **in, int num_in,
                                  kiln_array *const *into, int num_out,
                                  const kiln_template_arg *t, int nt,
                                  uint32_t gx, uint32_t tg) {
  kiln_output_spec spec[4];
  for (int i = 0; i < num_out; i++)
    kiln__linalg_out_spec(&spec[i], into[i]);
  kiln_status st = KILN_OK;
  for (int64_t first = 0; st == KILN_OK && first < p->batch;
       first += QRB_Y_CHUNK) {
    int64_t count = p->batch - first;
    if (count > QRB_Y_CHUNK)
      count = QRB_Y_CHUNK;
    kiln_array *b0 = NULL;
    st = kiln__linalg_scalar(p->s, KILN_INT32, (double)first, &b0);
    if (st != KILN_OK)
      break;
    in[num_in - 1] = b0;
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->s);
    L.inputs = in;
    L.num_inputs = num_in;
    L.outputs = spec;
    L.num_outputs = num_out;
    L.template_args = t;
    L.num_template_args = nt;
    L.grid[0] = gx;
    L.grid[1] = (uint32_t)count;
    L.threadgroup[0] = tg;
    st = kiln__kernel_launch_into(kernel, &L, into);
    kiln__array_destroy(b0);
    in[num_in - 1] = NULL;
  }
  return st;
}

/* grid.x for an element-wise kernel over `elems` elements per matrix. */
static uint32_t ew_grid(int64_t elems) {
  int64_t groups = (elems + QRB_EW_THREADS - 1) / QRB_EW_THREADS;
  if (groups > QRB_EW_GROUPS)
    groups = QRB_EW_GROUPS;
  if (groups < 1)
    groups = 1;
  return (uint32_t)(groups * QRB_EW_THREADS);
}

/* An element-wise kernel (qrb_copy, qrb_r, qrb_qinit): input `src`, an
 * optional int scalar `extra`, batch0; output `dst`. */
static kiln_status launch_ew(const qrb_problem *p, const char *name,
                             const char *inputs, const char *output,
                             kiln_array *src, int64_t extra, bool has_extra,
                             kiln_array *dst, int64_t elems) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr_blocked", name, inputs, output,
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *ex = NULL;
  if (st == KILN_OK && has_extra)
    st = kiln__linalg_scalar(p->s, KILN_INT32, (double)extra, &ex);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[1];
  kiln__targ_dtype(&t[0], "T", p->dt);
  kiln_array *in[3] = {src, ex, NULL};
  int num_in = has_extra ? 3 : 2;
  st = launch_batched(p, k, in, num_in, &dst, 1, t, 1, ew_grid(elems),
                      QRB_EW_THREADS);
  kiln__array_destroy(ex);
  return st;
}

/* The panel kernel's threadgroup: a warp per 8 rows, 1 to 32 warps. */
static uint32_t panel_threads(int64_t rows) {
  int64_t warps = (rows + 7) / 8;
  if (warps > 32)
    warps = 32;
  if (warps < 1)
    warps = 1;
  return (uint32_t)(32 * warps);
}

static kiln_status launch_panel(const qrb_problem *p, int64_t j0) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr_blocked", "qrb_panel",
                                        "Win,j0,batch0", "W,Y,Tm",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *j0s = NULL;
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, KILN_INT32, (double)j0, &j0s);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", p->dt);
  kiln__targ_int(&t[1], "NB", p->nb);
  kiln_array *in[3] = {p->w, j0s, NULL};
  kiln_array *into[3] = {p->w, p->y, p->tm};
  uint32_t nt = panel_threads(p->m - j0);
  st = launch_batched(p, k, in, 3, into, 3, t, 2, nt, nt);
  kiln__array_destroy(j0s);
  return st;
}

/*
 * The panel at j0 by a tall-skinny QR and Householder reconstruction:
 * kiln__qr_tall (or kiln__qr_tsqr, `kind`) gives the panel's explicit Q
 * (rows x jb, orthonormal columns, into qp) and R (positive diagonal, into
 * rp); qrb_recon turns the top of Q into Y's top rows, T, R's rows (into
 * W) and S U^-1; one GEMM gives the rest of Y, Y2 = -Q2 S U^-1.
 */
static kiln_status panel_recon(const qrb_problem *p, int kind, int64_t j0,
                               int64_t jb) {
  int64_t rows = p->m - j0;
  int64_t qs[3] = {p->batch, rows, jb}, qst[3] = {rows * jb, jb, 1};
  int64_t rs[3] = {p->batch, jb, jb}, rst[3] = {jb * jb, jb, 1};
  kiln_array *panel = NULL, *qv = NULL, *rv = NULL, *j0s = NULL;
  kiln_array *q2 = NULL, *y2 = NULL, *uiv = NULL;
  kiln_kernel *k = NULL;
  kiln_status st = kiln__linalg_block(p->w, j0, j0, rows, jb, &panel);
  if (st == KILN_OK)
    st = view_of(p->qp, 3, qs, qst, 0, &qv);
  if (st == KILN_OK)
    st = view_of(p->rp, 3, rs, rst, 0, &rv);
  if (st == KILN_OK)
    st = kind == KILN__QRB_PANEL_TSQR ? kiln__qr_tsqr(p->s, panel, qv, rv)
                                      : kiln__qr_tall(p->s, panel, qv, rv);
  if (st == KILN_OK)
    st = kiln__library_kernel("qr_blocked", "qrb_recon",
                              "Qp,Rp,Win,j0,batch0", "W,Y,Tm,Ui",
                              KILN__LIB_NO_ROW_CONTIG, &k);
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, KILN_INT32, (double)j0, &j0s);
  if (st == KILN_OK) {
    kiln_template_arg t[2];
    kiln__targ_dtype(&t[0], "T", p->dt);
    kiln__targ_int(&t[1], "NB", p->nb);
    kiln_array *in[5] = {qv, rv, p->w, j0s, NULL};
    kiln_array *into[4] = {p->w, p->y, p->tm, p->ui};
    uint32_t nt = (uint32_t)(QRB_RECON_THREADS_PER_COL * p->nb);
    st = launch_batched(p, k, in, 5, into, 4, t, 2, nt, nt);
  }
  if (st == KILN_OK && rows > jb) {
    st = kiln__linalg_block(qv, jb, 0, rows - jb, jb, &q2);
    if (st == KILN_OK)
      st = kiln__linalg_block(p->y, j0 + jb, j0, rows - jb, jb, &y2);
    if (st == KILN_OK)
      st = kiln__linalg_block(p->ui, 0, 0, jb, jb, &uiv);
    if (st == KILN_OK)
      st = kiln__linalg_gemm(p->s, false, false, -1.0, q2, uiv, 0.0, y2);
  }
  kiln_array *all[7] = {panel, qv, rv, j0s, q2, y2, uiv};
  for (int i = 0; i < 7; i++)
    kiln__array_destroy(all[i]);
  return st;
}

/* ---- compact-WY applications with GEMM ---------------------------------- */

/* qrb_sum: X1 (the leading jb x cols of p1) = the sum of the slices of
 * `parts` (batch x slices x jb x cols). */
static kiln_status launch_sum(const qrb_problem *p, kiln_array *parts,
                              int64_t elems) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr_blocked", "qrb_sum",
                                        "P,Xin,batch0", "X",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[1];
  kiln__targ_dtype(&t[0], "T", p->dt);
  kiln_array *in[3] = {parts, p->p1, NULL};
  return launch_batched(p, k, in, 3, &p->p1, 1, t, 1, ew_grid(elems),
                        QRB_EW_THREADS);
}

/*
 * X1 = V^T C (jb x cols, V and C of `rows` rows). Split-K when that pays
 * (split_count): the first sp * h rows as sp slices of h rows, viewed as
 * one more batch dimension so a single GEMM computes every slice's
 * product, the remaining rows as one more product, then qrb_sum.
 */
static kiln_status vt_c(const qrb_problem *p, kiln_array *v, kiln_array *c,
                        int64_t jb, int64_t cols, kiln_array *x1) {
  int64_t rows = v->shape[1];
  int sp = p->parts != NULL ? split_count(p, rows, jb, cols) : 1;
  if (sp <= 1)
    return kiln__linalg_gemm(p->s, true, false, 1.0, v, c, 0.0, x1);
  int64_t h = rows / sp, rem = rows - h * sp;
  int64_t wide = p->p1->shape[2], ps = p->parts->strides[0];
  int64_t vs[4] = {p->batch, sp, h, jb};
  int64_t vst[4] = {v->strides[0], h * v->strides[1], v->strides[1],
                    v->strides[2]};
  int64_t cs[4] = {p->batch, sp, h, cols};
  int64_t cst[4] = {c->strides[0], h * c->strides[1], c->strides[1],
                    c->strides[2]};
  int64_t ts[4] = {p->batch, sp + (rem > 0), jb, cols};
  int64_t tst[4] = {ps, p->nbo * wide, wide, 1};
  int64_t rs[3] = {p->batch, jb, cols}, rst[3] = {ps, wide, 1};
  kiln_array *v4 = NULL, *c4 = NULL, *t4 = NULL, *vr = NULL, *cr = NULL;
  kiln_array *tr = NULL;
  kiln_status st = view_of(v, 4, vs, vst, 0, &v4);
  if (st == KILN_OK)
    st = view_of(c, 4, cs, cst, 0, &c4);
  if (st == KILN_OK)
    st = view_of(p->parts, 4, ts, tst, 0, &t4);
  if (st == KILN_OK) { /* the slices: t4's first sp entries */
    kiln_array *head = NULL;
    ts[1] = sp;
    st = view_of(p->parts, 4, ts, tst, 0, &head);
    if (st == KILN_OK)
      st = kiln__linalg_gemm(p->s, true, false, 1.0, v4, c4, 0.0, head);
    kiln__array_destroy(head);
  }
  if (st == KILN_OK && rem > 0) {
    st = kiln__linalg_block(v, h * sp, 0, rem, jb, &vr);
    if (st == KILN_OK)
      st = kiln__linalg_block(c, h * sp, 0, rem, cols, &cr);
    if (st == KILN_OK)
      st = view_of(p->parts, 3, rs, rst, (int64_t)sp * p->nbo * wide, &tr);
    if (st == KILN_OK)
      st = kiln__linalg_gemm(p->s, true, false, 1.0, vr, cr, 0.0, tr);
  }
  if (st == KILN_OK)
    st = launch_sum(p, t4, jb * cols);
  /* x1 is the leading block of p1, which qrb_sum wrote */
  kiln_array *all[6] = {v4, c4, t4, vr, cr, tr};
  for (int i = 0; i < 6; i++)
    kiln__array_destroy(all[i]);
  return st;
}

/*
 * C -= V (op(T) (V^T C)) with the block reflector of V (rows x jb, a view
 * of Y) and T (jb x jb): (I - V T V^T)^T = I - V T^T V^T when `trans`
 * (the factorization's trailing update), I - V T V^T when not (Q's
 * backward accumulation). C has V's rows and `cols` columns.
 */
static kiln_status apply_wy(const qrb_problem *p, kiln_array *v,
                            kiln_array *t, int64_t jb, bool trans,
                            kiln_array *c, int64_t cols) {
  kiln_array *x1 = NULL, *x2 = NULL;
  kiln_status st = kiln__linalg_block(p->p1, 0, 0, jb, cols, &x1);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->p2, 0, 0, jb, cols, &x2);
  if (st == KILN_OK) /* X1 = V^T C */
    st = vt_c(p, v, c, jb, cols, x1);
  if (st == KILN_OK) /* X2 = op(T) X1 */
    st = kiln__linalg_gemm(p->s, trans, false, 1.0, t, x1, 0.0, x2);
  if (st == KILN_OK) /* C -= V X2 */
    st = kiln__linalg_gemm(p->s, false, false, -1.0, v, x2, 1.0, c);
  kiln__array_destroy(x1);
  kiln__array_destroy(x2);
  return st;
}

/* Columns j0.. of the block at j0, jb wide: V = Y[j0:m, j0:j0+jb]. */
static kiln_status v_view(const qrb_problem *p, int64_t j0, int64_t jb,
                          kiln_array **v) {
  return kiln__linalg_block(p->y, j0, j0, p->m - j0, jb, v);
}

/* The T of the outer block `oi` (jo columns): a view of `to`, or of Tm
 * when outer blocks are single panels. */
static kiln_status t_outer_view(const qrb_problem *p, int oi, int64_t jo,
                                kiln_array **t) {
  if (p->to == NULL)
    return kiln__linalg_block(p->tm, (int64_t)oi * p->nb, 0, jo, jo, t);
  return kiln__linalg_block(p->to, (int64_t)oi * p->nbo, 0, jo, jo, t);
}

/* qrb_tinit: the panels' T's of the outer block at J0 onto To's diagonal,
 * zeros around them. */
static kiln_status launch_tinit(const qrb_problem *p, int64_t J0) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("qr_blocked", "qrb_tinit",
                                        "Tmin,Toin,j0,batch0", "To",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *j0s = NULL;
  if (st == KILN_OK)
    st = kiln__linalg_scalar(p->s, KILN_INT32, (double)J0, &j0s);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[1];
  kiln__targ_dtype(&t[0], "T", p->dt);
  kiln_array *in[4] = {p->tm, p->to, j0s, NULL};
  st = launch_batched(p, k, in, 4, &p->to, 1, t, 1,
                      ew_grid((int64_t)p->nbo * p->nbo), QRB_EW_THREADS);
  kiln__array_destroy(j0s);
  return st;
}

/*
 * The T of outer block `oi` at column J0 (jo columns, its panels' T's in
 * Tm): qrb_tinit places the panels' T's on the diagonal (zeros elsewhere),
 * G = V^T V (one GEMM, split-K), then adjacent blocks of doubling width
 * are merged, T_ab = -T_aa G_ab T_bb (Schreiber and Van Loan's
 * recursive compact WY), two small GEMMs each.
 */
static kiln_status build_t_outer(const qrb_problem *p, int oi, int64_t J0,
                                 int64_t jo) {
  kiln_status st = launch_tinit(p, J0);
  kiln_array *v = NULL, *g = NULL;
  if (st == KILN_OK)
    st = v_view(p, J0, jo, &v);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->p1, 0, 0, jo, jo, &g);
  if (st == KILN_OK)
    st = vt_c(p, v, v, jo, jo, g);
  int64_t base = (int64_t)oi * p->nbo;
  for (int64_t w = p->nb; st == KILN_OK && w < jo; w *= 2) {
    for (int64_t a = 0; st == KILN_OK && a + w < jo; a += 2 * w) {
      int64_t b = a + w, wb = jo - b < w ? jo - b : w;
      kiln_array *gab = NULL, *tbb = NULL, *taa = NULL, *tab = NULL;
      kiln_array *x = NULL;
      st = kiln__linalg_block(p->p1, a, b, w, wb, &gab);
      if (st == KILN_OK)
        st = kiln__linalg_block(p->to, base + b, b, wb, wb, &tbb);
      if (st == KILN_OK)
        st = kiln__linalg_block(p->to, base + a, a, w, w, &taa);
      if (st == KILN_OK)
        st = kiln__linalg_block(p->to, base + a, b, w, wb, &tab);
      if (st == KILN_OK)
        st = kiln__linalg_block(p->p2, 0, 0, w, wb, &x);
      if (st == KILN_OK)
        st = kiln__linalg_gemm(p->s, false, false, 1.0, gab, tbb, 0.0, x);
      if (st == KILN_OK)
        st = kiln__linalg_gemm(p->s, false, false, -1.0, taa, x, 0.0, tab);
      kiln_array *all[5] = {gab, tbb, taa, tab, x};
      for (int i = 0; i < 5; i++)
        kiln__array_destroy(all[i]);
    }
  }
  kiln__array_destroy(v);
  kiln__array_destroy(g);
  return st;
}

/* Applies panel j0's reflectors (T from Tm) to W's columns c0 .. c0+cols-1
 * (rows j0..). */
static kiln_status update_panel(const qrb_problem *p, int64_t j0, int64_t jb,
                                int64_t c0, int64_t cols) {
  kiln_array *v = NULL, *t = NULL, *c = NULL;
  kiln_status st = v_view(p, j0, jb, &v);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->tm, j0, 0, jb, jb, &t);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->w, j0, c0, p->m - j0, cols, &c);
  if (st == KILN_OK)
    st = apply_wy(p, v, t, jb, true, c, cols);
  kiln__array_destroy(v);
  kiln__array_destroy(t);
  kiln__array_destroy(c);
  return st;
}

/*
 * Applies outer block oi (J0, jo columns) to `c` (rows J0.. of W or Q,
 * `cols` columns), transposed for the factorization.
 */
static kiln_status update_outer(const qrb_problem *p, int oi, int64_t J0,
                                int64_t jo, bool trans, kiln_array *c,
                                int64_t cols) {
  kiln_array *v = NULL, *t = NULL;
  kiln_status st = v_view(p, J0, jo, &v);
  if (st == KILN_OK)
    st = t_outer_view(p, oi, jo, &t);
  if (st == KILN_OK)
    st = apply_wy(p, v, t, jo, trans, c, cols);
  kiln__array_destroy(v);
  kiln__array_destroy(t);
  return st;
}

/*
 * The panels of outer block oi: each panel is factored and updates the
 * rest of the block (GEMMs with k = NB); then the block's T, when a
 * trailing update or Q will need it.
 */
static kiln_status factor_block(const qrb_problem *q, int oi) {
  int64_t J0 = (int64_t)oi * q->nbo;
  int64_t jo = q->k - J0 < q->nbo ? q->k - J0 : q->nbo;
  kiln_status st = KILN_OK;
  for (int64_t j0 = J0; st == KILN_OK && j0 < J0 + jo; j0 += q->nb) {
    int64_t jb = J0 + jo - j0 < q->nb ? J0 + jo - j0 : q->nb;
    int kind = panel_kind(q, q->m - j0);
    st = kind == KILN__QRB_PANEL_ONE ? launch_panel(q, j0)
                                     : panel_recon(q, kind, j0, jb);
    int64_t inner = J0 + jo - (j0 + jb);
    if (st == KILN_OK && inner > 0)
      st = update_panel(q, j0, jb, j0 + jb, inner);
  }
  bool need_t = q->n > J0 + jo || q->q3 != NULL;
  if (st == KILN_OK && q->to != NULL && need_t)
    st = build_t_outer(q, oi, J0, jo);
  return st;
}

/* Applies outer block oi to W's columns c0 .. c0+cols-1 (rows J0..), the
 * trailing update (k = NBO, which keeps the big GEMMs efficient). */
static kiln_status trail_update(const qrb_problem *p, int oi, int64_t c0,
                                int64_t cols) {
  int64_t J0 = (int64_t)oi * p->nbo;
  int64_t jo = p->k - J0 < p->nbo ? p->k - J0 : p->nbo;
  kiln_array *a2 = NULL;
  kiln_status st = kiln__linalg_block(p->w, J0, c0, p->m - J0, cols, &a2);
  if (st == KILN_OK)
    st = update_outer(p, oi, J0, jo, true, a2, cols);
  kiln__array_destroy(a2);
  return st;
}

/* The first column after outer block oi. */
static int64_t block_end(const qrb_problem *p, int oi) {
  int64_t end = (int64_t)(oi + 1) * p->nbo;
  return end < p->k ? end : p->k;
}

/* Panels and trailing updates: R in W's upper triangle, V in Y, T's in Tm
 * (and the outer blocks' in To). */
static kiln_status factor(const qrb_problem *p) {
  kiln_status st = KILN_OK;
  for (int oi = 0; st == KILN_OK && oi < p->outers; oi++) {
    int64_t c0 = block_end(p, oi);
    st = factor_block(p, oi);
    if (st == KILN_OK && p->n > c0)
      st = trail_update(p, oi, c0, p->n - c0);
  }
  return st;
}

/* Q = H_0 H_1 ... E D, the outer blocks applied last first. */
static kiln_status form_q(const qrb_problem *p) {
  kiln_status st = launch_ew(p, "qrb_qinit", "Win,cols,batch0", "Q", p->w,
                             p->qcols, true, p->q3, p->m * p->qcols);
  for (int oi = p->outers - 1; st == KILN_OK && oi >= 0; oi--) {
    int64_t J0 = (int64_t)oi * p->nbo;
    int64_t jo = p->k - J0 < p->nbo ? p->k - J0 : p->nbo;
    int64_t cols = p->qcols - J0;
    kiln_array *q2 = NULL;
    st = kiln__linalg_block(p->q3, J0, J0, p->m - J0, cols, &q2);
    if (st == KILN_OK)
      st = update_outer(p, oi, J0, jo, false, q2, cols);
    kiln__array_destroy(q2);
  }
  return st;
}

static kiln_status run_steps(void *user) {
  qrb_problem *p = user;
  kiln_status st = make_workspaces(p);
  if (st == KILN_OK)
    st = launch_ew(p, "qrb_copy", "A,batch0", "W", p->a, 0, false, p->w,
                   p->m * p->n);
  if (st == KILN_OK)
    st = factor(p);
  if (st == KILN_OK)
    st = launch_ew(p, "qrb_r", "Win,rows,batch0", "R", p->w, p->rrows, true,
                   p->r3, p->rrows * p->n);
  if (st == KILN_OK && p->q3 != NULL)
    st = form_q(p);
  return st;
}

/* The steps with a scalar pool in use (linalg.h): the panels' GEMMs then
 * enqueue no fill between two kernels. */
static kiln_status run(qrb_problem *p) {
  return kiln__linalg_pooled(p->s, p->a->dtype, run_steps, p);
}

/*
 * See linalg.h. q and r are the caller's new contiguous arrays; on an
 * error they may hold partial results (the caller discards them). Empty
 * problems write what the mode defines: a complete Q of an m x 0 matrix
 * is the identity, everything else empty.
 */
kiln_status kiln__qr_blocked(kiln_stream *s, kiln_array *a, kiln_qr_mode mode,
                             kiln_array *q, kiln_array *r) {
  return kiln__qr_blocked_ex(s, a, mode, q, r, KILN__QRB_PANEL_AUTO);
}

/* See linalg.h. */
kiln_status kiln__qr_blocked_ex(kiln_stream *s, kiln_array *a,
                                kiln_qr_mode mode, kiln_array *q,
                                kiln_array *r, int panel) {
  if (panel < KILN__QRB_PANEL_AUTO || panel > KILN__QRB_PANEL_CHOLQR)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "blocked QR: panel %d is not a panel choice.", panel);
  qrb_problem p;
  memset(&p, 0, sizeof p);
  p.s = s;
  p.a = a;
  p.mode = mode;
  p.panel = panel;
  kiln_status st = setup(&p, q, r);
  if (st == KILN_OK && p.batch > 0 && p.m > 0)
    st = run(&p);
  destroy_all(&p);
  return st;
}
