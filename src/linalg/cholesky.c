/*
 * Cholesky factorization on any device: A = L L^T (lower) or A = U^T U
 * (upper), batched, float32 and float64, with kiln's own kernels
 * (kernels/cholesky.metal) and GEMM for the trailing updates.
 *
 * Order of work, as in every linalg driver: check the arguments, return an
 * empty result when there is nothing to factor, pick a path, launch, then
 * read back the per-matrix info (the order of the first leading minor that
 * is not positive definite) and either hand over the result or refuse it.
 * The result W is a new array that nobody else sees until success, so a
 * failure anywhere only has to destroy it.
 *
 * Paths (kiln_linalg_opts.path for kiln_cholesky_ex):
 *   0  auto: small when n fits a threadgroup (NMAX), else blocked;
 *   1  small: one threadgroup per matrix, the matrix in threadgroup memory
 *      (n <= 64 for float32, 48 for float64);
 *   2  blocked right-looking: per diagonal block of NMAX columns, factor it
 *      (the small kernel), solve the panel below it (chol_trsm), and update
 *      the trailing matrix with GEMM.
 * Upper factors run the same kernels on mirrored indices (see the .metal).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "linalg/linalg.h"

#define CHOL_PATH_AUTO 0
#define CHOL_PATH_SMALL 1
#define CHOL_PATH_BLOCKED 2

/* Threadgroup capacity (and block size) per dtype: 64 x 65 float32 and
 * 48 x 49 float64 stay well under 48 KiB with chol_trsm's row tile. */
#define CHOL_NMAX_F32 64
#define CHOL_NMAX_F64 48

/* Matrices per small-kernel launch (grid.x = threads * matrices must fit
 * 32 bits) and per grid.y of the other kernels (CUDA's limit). */
#define CHOL_SMALL_CHUNK (1 << 20)
#define CHOL_Y_CHUNK 65535

/* One checked factorization and what the checks worked out. */
typedef struct chol_problem {
  kiln_array *a;
  bool upper;
  int64_t n, batch;
  int nmax; /* the dtype's threadgroup capacity */
  kiln_stream *stream;
  kiln_linalg_opts opts;
  kiln_array *w;    /* the result being built */
  kiln_array *info; /* int32, one per matrix */
} chol_problem;

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
  p->nmax = a->dtype == KILN_FLOAT64 ? CHOL_NMAX_F64 : CHOL_NMAX_F32;
  return kiln__linalg_stream(&p->opts, &p->a, 1, &p->stream);
}

static kiln_status choose_path(const chol_problem *p, int *path) {
  int want = p->opts.path;
  if (want < CHOL_PATH_AUTO || want > CHOL_PATH_BLOCKED)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; Cholesky knows 0 (auto), 1 (small) "
                       "and 2 (blocked).",
                       want);
  if (want == CHOL_PATH_SMALL && p->n > p->nmax)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path 1 (small) holds matrices up to %d x %d "
                       "in %s, but A is %lld x %lld.",
                       p->nmax, p->nmax, kiln_dtype_name(p->a->dtype),
                       (long long)p->n, (long long)p->n);
  if (want == CHOL_PATH_AUTO)
    want = p->n <= p->nmax ? CHOL_PATH_SMALL : CHOL_PATH_BLOCKED;
  *path = want;
  return KILN_OK;
}

/* ---- launch helpers ------------------------------------------------------ */

/* A 0-d int32 holding `value`, filled in stream order (no host wait). */
static kiln_status int_scalar(const chol_problem *p, int64_t value,
                              kiln_array **out) {
  return kiln__linalg_scalar(p->stream, KILN_INT32, (double)value, out);
}

/* The small kernel's threadgroup: a warp per 16 rows, at least one. */
static uint32_t small_threads(int nmax) {
  return nmax <= 16 ? 32u : (uint32_t)(nmax * 2);
}

/* The capacity class for the small path: the smallest of 16, 32 and the
 * dtype's NMAX that holds n, so small matrices use little memory. */
static int small_class(const chol_problem *p) {
  if (p->n <= 16)
    return 16;
  return p->n <= 32 ? 32 : p->nmax;
}

/*
 * chol_small over every matrix: the diagonal block at k0 of the source
 * `src` (A itself on the small path, W on the blocked one), written into
 * W and info.
 */
static kiln_status launch_small(const chol_problem *p, kiln_array *src,
                                int nmax, int64_t k0) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("cholesky", "chol_small",
                                        "A,k0,batch0", "L,info",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *k0s = NULL, *b0 = NULL;
  if (st == KILN_OK)
    st = int_scalar(p, k0, &k0s);
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "NMAX", nmax);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  kiln_output_spec spec[2];
  kiln__linalg_out_spec(&spec[0], p->w);
  kiln__linalg_out_spec(&spec[1], p->info);
  kiln_array *into[2] = {p->w, p->info};
  uint32_t nt = small_threads(nmax);
  for (int64_t first = 0; st == KILN_OK && first < p->batch;
       first += CHOL_SMALL_CHUNK) {
    int64_t count = p->batch - first;
    if (count > CHOL_SMALL_CHUNK)
      count = CHOL_SMALL_CHUNK;
    st = int_scalar(p, first, &b0);
    if (st != KILN_OK)
      break;
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->stream);
    kiln_array *in[3] = {src, k0s, b0};
    L.inputs = in;
    L.num_inputs = 3;
    L.outputs = spec;
    L.num_outputs = 2;
    L.template_args = t;
    L.num_template_args = 3;
    L.grid[0] = nt * (uint32_t)count;
    L.threadgroup[0] = nt;
    st = kiln__kernel_launch_into(k, &L, into);
    kiln__array_destroy(b0);
    b0 = NULL;
  }
  kiln__array_destroy(k0s);
  return st;
}

/*
 * Launches `kernel` (chol_copy or chol_trsm: inputs X, [k0,] batch0, output
 * L = W) with grid.x = `gx` threads in groups of `tg`, batch entries along
 * grid.y in chunks.
 */
static kiln_status launch_rows(const chol_problem *p, kiln_kernel *kernel,
                               kiln_array *x, kiln_array *k0s,
                               const kiln_template_arg *t, int nt,
                               uint32_t gx, uint32_t tg) {
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, p->w);
  kiln_status st = KILN_OK;
  for (int64_t first = 0; st == KILN_OK && first < p->batch;
       first += CHOL_Y_CHUNK) {
    int64_t count = p->batch - first;
    if (count > CHOL_Y_CHUNK)
      count = CHOL_Y_CHUNK;
    kiln_array *b0 = NULL;
    st = int_scalar(p, first, &b0);
    if (st != KILN_OK)
      break;
    kiln_launch L;
    kiln__linalg_launch_init(&L, p->stream);
    kiln_array *in[3] = {x, k0s != NULL ? k0s : b0, b0};
    L.inputs = in;
    L.num_inputs = k0s != NULL ? 3 : 2;
    L.outputs = &spec;
    L.num_outputs = 1;
    L.template_args = t;
    L.num_template_args = nt;
    L.grid[0] = gx;
    L.grid[1] = (uint32_t)count;
    L.threadgroup[0] = tg;
    st = kiln__kernel_launch_into(kernel, &L, &p->w);
    kiln__array_destroy(b0);
  }
  return st;
}

/* W = the logical lower triangle of A (the blocked path's start). */
static kiln_status launch_copy(const chol_problem *p) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("cholesky", "chol_copy", "A,batch0",
                                        "L", KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_bool(&t[1], "UPPER", p->upper);
  uint64_t elems = (uint64_t)p->n * (uint64_t)p->n;
  uint32_t gx = (uint32_t)((elems + 255) / 256 * 256);
  return launch_rows(p, k, p->a, NULL, t, 2, gx, 256);
}

/* The panel below the diagonal block at k0. */
static kiln_status launch_trsm(const chol_problem *p, int64_t k0) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("cholesky", "chol_trsm",
                                        "Win,k0,batch0", "L",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  kiln_array *k0s = NULL;
  if (st == KILN_OK)
    st = int_scalar(p, k0, &k0s);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "NB", p->nmax);
  kiln__targ_bool(&t[2], "UPPER", p->upper);
  int64_t rows = p->n - k0 - p->nmax;
  uint32_t gx = (uint32_t)((rows + 31) / 32 * 32);
  st = launch_rows(p, k, p->w, k0s, t, 3, gx, 32);
  kiln__array_destroy(k0s);
  return st;
}

/*
 * The trailing update after the block at k0: A22 -= L21 L21^T (lower), or
 * A22 -= U12^T U12 (upper), with kiln's GEMM on views of W. GEMM updates
 * the whole square; the part above the diagonal is cleared by chol_trsm
 * (the mirrored panel) and chol_small (the diagonal blocks) later.
 */
static kiln_status trailing_update(const chol_problem *p, int64_t k0) {
  int64_t nb = p->nmax, k1 = k0 + nb, m2 = p->n - k1;
  kiln_array *panel = NULL, *a22 = NULL;
  kiln_status st = p->upper ? kiln__linalg_block(p->w, k0, k1, nb, m2, &panel)
                            : kiln__linalg_block(p->w, k1, k0, m2, nb, &panel);
  if (st == KILN_OK)
    st = kiln__linalg_block(p->w, k1, k1, m2, m2, &a22);
  if (st == KILN_OK)
    st = kiln__linalg_gemm(p->stream, p->upper, !p->upper, -1.0, panel, panel,
                           1.0, a22);
  kiln__array_destroy(panel);
  kiln__array_destroy(a22);
  return st;
}

static kiln_status run_blocked(const chol_problem *p) {
  kiln_status st = launch_copy(p);
  for (int64_t k0 = 0; st == KILN_OK && k0 < p->n; k0 += p->nmax) {
    st = launch_small(p, p->w, p->nmax, k0);
    if (st == KILN_OK && k0 + p->nmax < p->n)
      st = launch_trsm(p, k0);
    if (st == KILN_OK && k0 + p->nmax < p->n)
      st = trailing_update(p, k0);
  }
  return st;
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
  if (st == KILN_OK)
    st = path == CHOL_PATH_SMALL ? launch_small(p, p->a, small_class(p), 0)
                                 : run_blocked(p);
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
