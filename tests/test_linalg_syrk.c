/*
 * The trapezoid GEMM (kiln__gemm_tri: gemm_f32_tri, gemm_dmma_tri) and
 * the blocked Cholesky with each update as one trapezoid GEMM
 * (kiln__chol_syrk_test, KILN_CHOL_SYRK), on the device under test.
 *
 * The GEMM: C = alpha op(A) op(B) + beta C on the 128-tiles of C on or
 * below its diagonal (upper: on or above), against a float64 host
 * reference, elementwise within a bound of (k + 2) eps times the sum of
 * the magnitudes of the terms; every element outside the trapezoid, and
 * every element of C's storage outside C's view, must keep its random
 * start bits exactly (an unwritten tile of the trapezoid fails the
 * reference, a written tile outside fails the equality). Shapes: whole
 * and ragged tiles, tall, a square, 1 x 1, empty, with the operand
 * layouts the Cholesky passes (lower: A as is, B transposed; upper: A
 * transposed, B as is) and the others, alpha / beta as the Cholesky uses
 * them (-1, 1) and others (beta 0), batched with a broadcast 2-D B, and
 * C a strided view. The Cholesky: valid factors (backward error, zero
 * triangle, positive diagonal) close to the plain path's and the same
 * bits run to run, lower and upper, float32 and float64, batched, a
 * transposed input, ill-conditioned, through paths 2 and 3, with split-K
 * (the pieces' trapezoids).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"
#include "linalg_check.h"

static const kiln_dtype sy_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* One trapezoid GEMM case: C (batch x m x n, a view with row stride n +
 * 3 into a larger array) = alpha op(A) op(B) + beta C; A batched, B 2-D
 * (broadcast) when b2d. */
typedef struct sy_case {
  kiln_dtype dt;
  bool upper, ta, tb, b2d;
  int64_t batch, m, n, k;
  double alpha, beta;
} sy_case;

/* x (rows x cols per batch entry, `count` entries) random in [-1, 1]. */
static double *sy_random(int64_t count) {
  double *x = kt_la_alloc(count > 0 ? count : 1);
  for (int64_t i = 0; i < count; i++)
    x[i] = kt_uniform(-1.0, 1.0);
  return x;
}

/* Whether element (i, j) of C lies in a tile of the trapezoid. */
static bool sy_in(bool upper, int64_t i, int64_t j) {
  return upper ? j / 128 >= i / 128 : i / 128 >= j / 128;
}

static void sy_run(const sy_case *c) {
  int64_t B = c->batch, m = c->m, n = c->n, k = c->k, ldc = n + 3;
  int64_t ar = c->ta ? k : m, ac = c->ta ? m : k;
  int64_t br = c->tb ? n : k, bc = c->tb ? k : n;
  int64_t bb = c->b2d ? 1 : B;
  double *a = sy_random(B * ar * ac), *b = sy_random(bb * br * bc);
  double *cs = sy_random(B * m * ldc);
  int64_t sa[3] = {B, ar, ac}, sb[3] = {bb, br, bc}, scs[3] = {B, m, ldc};
  kiln_array *va = kt_la_array(c->dt, 3, sa, a);
  kiln_array *vb = kt_la_array(c->dt, c->b2d ? 2 : 3, c->b2d ? sb + 1 : sb,
                               b);
  kiln_array *base = kt_la_array(c->dt, 3, scs, cs);
  int64_t shc[3] = {B, m, n}, stc[3] = {m * ldc, ldc, 1};
  kiln_array *vc = NULL;
  CHECK_OK(kiln_array_view(base, 3, shc, stc, 1, &vc));
  char what[192];
  snprintf(what, sizeof what, "%s %s %lld x %lld x %lld x %lld ta %d tb %d "
           "alpha %g beta %g%s", kiln_dtype_name(c->dt),
           c->upper ? "upper" : "lower", (long long)B, (long long)m,
           (long long)n, (long long)k, c->ta, c->tb, c->alpha, c->beta,
           c->b2d ? " (B 2-D)" : "");
  CHECK_OK(kiln__gemm_tri(kt_stream(), c->upper, c->ta, c->tb, c->alpha, va,
                          vb, c->beta, vc));
  double *got = kt_read_f64(base);
  double eps = kt_eps(c->dt);
  for (int64_t e = 0; e < B; e++) {
    const double *ae = a + e * ar * ac, *be = b + (c->b2d ? 0 : e) * br * bc;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = -1; j < ldc - 1; j++) {
        int64_t at = e * m * ldc + i * ldc + j + 1;
        if (j < 0 || j >= n || !sy_in(c->upper, i, j)) {
          CHECK(got[at] == cs[at], "%s: C storage (%lld, %lld, %lld) "
                "outside the trapezoid changed from %.17g to %.17g", what,
                (long long)e, (long long)i, (long long)j, cs[at], got[at]);
          continue;
        }
        double s = 0, mag = 0;
        for (int64_t q = 0; q < k; q++) {
          double x = c->ta ? ae[q * ac + i] : ae[i * ac + q];
          double y = c->tb ? be[j * bc + q] : be[q * bc + j];
          s += x * y;
          mag += fabs(x * y);
        }
        double ref = c->alpha * s + c->beta * cs[at];
        double tol = (double)(k + 2) * eps *
                     (fabs(c->alpha) * mag + fabs(c->beta * cs[at])) + 1e-300;
        CHECK(fabs(got[at] - ref) <= tol, "%s: C (%lld, %lld, %lld) is "
              "%.17g, not %.17g (tolerance %.3g)", what, (long long)e,
              (long long)i, (long long)j, got[at], ref, tol);
      }
  }
  free(got);
  kiln_array *all[4] = {va, vb, vc, base};
  kt_destroy_all(all, 4);
  free(a);
  free(b);
  free(cs);
}

/* Shapes (m x n x k, lower: m >= n): whole tiles with k a multiple of 8
 * (gemm_f32's unchecked loop), ragged tiles and k, a tall trapezoid of
 * several tile columns, one tile, one element, and triangles of 78 and
 * 45 tiles (gemm_tri_tile_of's square root and its corrections); each
 * lower and mirrored upper, in the Cholesky's operand layouts and the
 * other two. */
void test_linalg_syrk_tri(void) {
  static const int64_t shapes[][3] = {
      {256, 256, 64}, {300, 200, 40}, {520, 260, 13}, {384, 128, 24},
      {130, 129, 9},  {128, 128, 8},  {1, 1, 1},      {70, 5, 3},
      {1536, 1536, 1}, {2000, 1100, 2}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int upper = 0; upper < 2; upper++)
        for (int lay = 0; lay < 3; lay++) {
          sy_case c;
          memset(&c, 0, sizeof c);
          c.dt = sy_dtypes[d];
          c.upper = upper;
          c.m = upper ? shapes[s][1] : shapes[s][0];
          c.n = upper ? shapes[s][0] : shapes[s][1];
          c.k = shapes[s][2];
          /* lay 0: as the Cholesky passes them; 1, 2: other layouts */
          c.ta = lay == 0 ? upper : lay == 1;
          c.tb = lay == 0 ? !upper : lay == 2;
          c.batch = 1;
          c.alpha = -1.0;
          c.beta = 1.0;
          if (lay == 1) { /* beta 0 (BETA0): C's old values not read */
            c.alpha = 0.75;
            c.beta = 0.0;
          }
          sy_run(&c);
        }
}

/* Batched (3 entries, B broadcast or not), k == 0 and alpha == 0 (beta C
 * on the trapezoid only), and empty shapes (nothing written). */
void test_linalg_syrk_tri_batched(void) {
  for (int d = 0; d < 2; d++)
    for (int upper = 0; upper < 2; upper++) {
      sy_case c;
      memset(&c, 0, sizeof c);
      c.dt = sy_dtypes[d];
      c.upper = upper;
      c.ta = upper;
      c.tb = !upper;
      c.batch = 3;
      c.m = upper ? 140 : 270;
      c.n = upper ? 270 : 140;
      c.k = 20;
      c.alpha = -1.0;
      c.beta = 1.0;
      sy_run(&c);
      c.b2d = true;
      sy_run(&c);
      c.b2d = false;
      c.k = 0; /* beta C on the trapezoid */
      c.beta = 0.5;
      sy_run(&c);
      c.k = 7;
      c.alpha = 0.0;
      sy_run(&c);
      c.alpha = -1.0;
      c.m = 0; /* empty: nothing to write */
      c.n = upper ? 5 : 0;
      sy_run(&c);
      c.batch = 0;
      c.m = c.n = 4;
      sy_run(&c);
    }
}

/* Errors: a dtype without a trapezoid kernel, a C wider than tall for
 * the lower trapezoid (taller than wide for the upper), NULL operands and
 * shapes that do not chain; C untouched each time. */
void test_linalg_syrk_tri_errors(void) {
  int64_t s44[2] = {4, 4}, s64[2] = {6, 4}, s46[2] = {4, 6};
  double v[36];
  for (int i = 0; i < 36; i++)
    v[i] = kt_uniform(-1.0, 1.0);
  kiln_array *h = kt_la_array(KILN_FLOAT16, 2, s44, v);
  CHECK_STATUS(kiln__gemm_tri(kt_stream(), false, false, true, -1.0, h, h,
                              1.0, h),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("the trapezoid GEMM supports float32 and float64");
  double *hv = kt_read_f64(h);
  for (int i = 0; i < 16; i++)
    CHECK(hv[i] == v[i], "float16 C changed at %d", i);
  free(hv);
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = sy_dtypes[d];
    double w[36];
    memcpy(w, v, sizeof w);
    kiln_array *a = kt_la_array(dt, 2, s44, w);
    kiln_array *wide = kt_la_array(dt, 2, s46, w);
    kiln_array *tall = kt_la_array(dt, 2, s64, w);
    CHECK_STATUS(kiln__gemm_tri(kt_stream(), false, false, false, -1.0, a,
                                wide, 1.0, wide),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("lower trapezoid needs at least as many rows as columns");
    CHECK_STATUS(kiln__gemm_tri(kt_stream(), true, false, true, -1.0, tall,
                                a, 1.0, tall),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("upper trapezoid needs at least as many columns as rows");
    CHECK_STATUS(kiln__gemm_tri(kt_stream(), false, false, false, -1.0,
                                NULL, a, 1.0, a),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("A is NULL");
    CHECK_STATUS(kiln__gemm_tri(kt_stream(), false, false, false, -1.0, tall,
                                tall, 1.0, tall),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("do not chain");
    double *wv = kt_read_f64(wide), *tv = kt_read_f64(tall);
    for (int i = 0; i < 24; i++)
      CHECK(wv[i] == w[i] && tv[i] == w[i], "%s: C changed at %d by a "
            "failed call", kiln_dtype_name(dt), i);
    free(wv);
    free(tv);
    kiln_array *all[3] = {a, wide, tall};
    kt_destroy_all(all, 3);
  }
  kiln_array_destroy(h);
}

/* ---- the Cholesky with trapezoid updates --------------------------------- */

/* Backward errors below this many units of n eps pass. */
#define SY_THRESHOLD 8.0

/* arr factored through `path` with the trapezoid mode `syrk` and
 * split-K mode `splitk` (the test hooks, reset after; KILN_CHOL_NARROW's
 * off), read back as double. */
static double *sy_factor(kiln_array *arr, bool upper, int path, int syrk,
                         int splitk) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln__chol_syrk_test = syrk;
  kiln__chol_splitk_test = splitk;
  /* no update leaves the trapezoid for being narrow (at these sizes
   * every float32 one would) */
  kiln__chol_narrow_test = 0;
  kiln_array *f = NULL;
  kiln_status st = kiln_cholesky_ex(arr, upper, &o, &f);
  kiln__chol_syrk_test = -1;
  kiln__chol_splitk_test = -1;
  kiln__chol_narrow_test = -1;
  CHECK_OK(st);
  double *v = kt_read_f64(f);
  kiln_array_destroy(f);
  return v;
}

/* x and y (count elements) within tol of the largest |y|. */
static void sy_compare(const char *what, const double *x, const double *y,
                       int64_t count, double tol) {
  double big = 0;
  for (int64_t i = 0; i < count; i++)
    big = fmax(big, fabs(y[i]));
  for (int64_t i = 0; i < count; i++)
    CHECK(fabs(x[i] - y[i]) <= tol * big, "%s: element %lld is %.17g, not "
          "%.17g", what, (long long)i, x[i], y[i]);
}

/* batch matrices of order n (ill: condition 1e6 in float32, 1e12 in
 * float64), factored with and without the trapezoid updates, lower and
 * upper; `trans`: A handed over as a transposed view. */
static void sy_chol_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                         bool ill, bool trans) {
  double *a = kt_la_alloc(batch * n * n);
  double cond = dt == KILN_FLOAT32 ? 1e6 : 1e12;
  for (int64_t b = 0; b < batch; b++) {
    if (ill)
      kt_la_spd_ill(n, cond, a + b * n * n);
    else
      kt_la_spd(n, a + b * n * n);
  }
  int64_t shape[3] = {batch, n, n}, tst[3] = {n * n, 1, n};
  int ndim = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
  if (trans) { /* symmetric: the transpose holds the same values */
    kiln_array *v = NULL;
    CHECK_OK(kiln_array_view(arr, ndim, ndim == 2 ? shape + 1 : shape,
                             ndim == 2 ? tst + 1 : tst, 0, &v));
    kiln_array_destroy(arr);
    arr = v;
  }
  double tol = (ill ? 1e4 : 64.0) * (double)n * kt_eps(dt);
  for (int upper = 0; upper < 2; upper++) {
    char what[160];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s path %d%s%s "
             "trapezoid updates", kiln_dtype_name(dt), (long long)batch,
             (long long)n, (long long)n, upper ? "upper" : "lower", path,
             ill ? " ill-conditioned" : "", trans ? " transposed" : "");
    double *plain = sy_factor(arr, upper, path, 0, -1);
    double *tri = sy_factor(arr, upper, path, 1, -1);
    double *again = sy_factor(arr, upper, path, 1, -1);
    kt_la_chol_check(what, dt, upper, batch, n, a, tri, SY_THRESHOLD);
    sy_compare(what, tri, plain, batch * n * n, tol);
    sy_compare(what, again, tri, batch * n * n, 0.0);
    /* with split-K forced (every update at least 128 deep in pieces of
     * 64 columns or more): mode 1 leaves those to column_blocks, mode 2
     * runs trapezoids into a zeroed scratch, then chol_ksum */
    double *split = sy_factor(arr, upper, path, 1, 2);
    double *split2 = sy_factor(arr, upper, path, 2, 2);
    kt_la_chol_check(what, dt, upper, batch, n, a, split, SY_THRESHOLD);
    kt_la_chol_check(what, dt, upper, batch, n, a, split2, SY_THRESHOLD);
    sy_compare(what, split, plain, batch * n * n, tol);
    sy_compare(what, split2, plain, batch * n * n, tol);
    free(split2);
    free(plain);
    free(tri);
    free(again);
    free(split);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* Panels of 64 columns: 300 has 5 (the last of 44 columns, the top split
 * 128 deep: its right half ragged), 520 has 9, 129 three; path 3 cuts the
 * plain updates into the batched GEMMs of a large n, which the
 * trapezoid replaces; batched, a transposed view, ill-conditioned. */
void test_linalg_syrk_cholesky(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = sy_dtypes[d];
    sy_chol_case(dt, 1, 300, 2, false, false);
    sy_chol_case(dt, 1, 520, 3, false, false);
    sy_chol_case(dt, 1, 129, 2, false, true);
    sy_chol_case(dt, 3, 200, 3, false, false);
    sy_chol_case(dt, 1, 384, 2, true, false);
  }
}
