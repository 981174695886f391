/*
 * Triangular solves and inverses (kiln__trsm, kiln_solve_triangular,
 * kiln_tri_inv, kiln_cholesky_inv) on the device under test.
 *
 * Inputs are fresh random triangular matrices with a dominant diagonal
 * (random triangular matrices are hopelessly ill-conditioned otherwise),
 * or, for the ill-conditioned cases, D (I + N) with D's diagonal spread
 * log-evenly over the condition number. The other triangle of A is filled
 * with garbage, so reading it would show. Solutions are checked by their
 * backward error ||op(A) X - alpha B||_F / (||A||_F ||X||_F n eps),
 * computed in double on the host from the values kiln saw, which stays
 * small whatever the conditioning; inverses by ||A Ainv - I|| / (||A||
 * ||Ainv|| n eps) and by their shape (the other triangle exactly zero, or
 * exact symmetry).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg_check.h"
#include "linalg/linalg.h"

/* Backward errors below this many units of n eps pass. */
#define TR_THRESHOLD 8.0

static const kiln_dtype tr_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* A triangular n x n matrix into a: the diagonal of magnitude d_i (1 for
 * `cond` 1) times [1, 2] with a random sign, the named triangle random in
 * [-1, 1] times d_i / sqrt(n) (a moderately dominant diagonal); the other
 * triangle garbage (kiln must not read it). `cond` > 1 spreads d_i
 * log-evenly from 1 down to 1/cond and divides the off-diagonal part by n
 * instead (each row dominated by its diagonal); `cond` < 0 makes the
 * off-diagonal part uniform in [-|cond|, |cond|] (not dominant: the
 * condition grows exponentially with n). */
static void tr_matrix(int64_t n, bool upper, double cond, double *a) {
  for (int64_t i = 0; i < n; i++) {
    double d =
        n > 1 && cond > 1 ? pow(cond, -(double)i / (double)(n - 1)) : 1.0;
    for (int64_t j = 0; j < n; j++) {
      bool in = upper ? j > i : j < i;
      if (i == j)
        a[i * n + j] =
            d * (kt_uniform(1, 2) * (kt_uniform(0, 1) < 0.5 ? -1 : 1));
      else if (in)
        a[i * n + j] = cond < 0 ? kt_uniform(-1, 1) * -cond
                                : d * kt_uniform(-1, 1) /
                                      (cond > 1 ? (double)n : sqrt((double)n));
      else
        a[i * n + j] = kt_uniform(-1e3, 1e3);
    }
  }
}

/* op(A)[i][j] of a logical triangular A (the other triangle zero, the
 * diagonal one when unit). */
static double tr_op(const double *a, int64_t n, bool upper, bool trans,
                    bool unit, int64_t i, int64_t j) {
  int64_t r = trans ? j : i, c = trans ? i : j;
  if (r == c)
    return unit ? 1.0 : a[r * n + c];
  bool in = upper ? c > r : c < r;
  return in ? a[r * n + c] : 0.0;
}

/* The backward error of one solution x (n x k) of op(A) x = alpha b, in
 * units of n eps. */
static double tr_backward(const double *a, const double *b, const double *x,
                          int64_t n, int64_t k, bool upper, bool trans,
                          bool unit, double alpha, kiln_dtype dt) {
  double rr = 0, aa = 0, xx = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double v = tr_op(a, n, upper, false, unit, i, j);
      aa += v * v;
    }
  for (int64_t i = 0; i < n * k; i++)
    xx += x[i] * x[i];
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < k; c++) {
      double s = -alpha * b[i * k + c];
      for (int64_t p = 0; p < n; p++)
        s += tr_op(a, n, upper, trans, unit, i, p) * x[p * k + c];
      rr += s * s;
    }
  double den = sqrt(aa) * sqrt(xx) * (double)(n > 0 ? n : 1) * kt_eps(dt);
  return den > 0 ? sqrt(rr) / den : sqrt(rr);
}

/* The componentwise (Oettli-Prager) backward error of x, in units of n
 * eps: max over elements of |op(A) x - alpha b| / (|op(A)| |x| + |alpha
 * b|). Substitution keeps it below about 1 whatever the conditioning;
 * the blocked paths' products with inverted diagonal blocks keep it
 * small for the diagonally dominant blocks the tests build. */
static double tr_componentwise(const double *a, const double *b,
                               const double *x, int64_t n, int64_t k,
                               bool upper, bool trans, bool unit, double alpha,
                               kiln_dtype dt) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < k; c++) {
      double s = -alpha * b[i * k + c], m = fabs(alpha * b[i * k + c]);
      for (int64_t p = 0; p < n; p++) {
        double v = tr_op(a, n, upper, trans, unit, i, p);
        s += v * x[p * k + c];
        m += fabs(v * x[p * k + c]);
      }
      double e = m > 0 ? fabs(s) / m : fabs(s);
      worst = e > worst ? e : worst;
    }
  return worst / ((double)(n > 0 ? n : 1) * kt_eps(dt));
}

static void tr_check_x(const char *what, int64_t entry, const double *a,
                       const double *b, const double *x, int64_t n, int64_t k,
                       bool upper, bool trans, bool unit, double alpha,
                       kiln_dtype dt) {
  for (int64_t i = 0; i < n * k; i++)
    CHECK(isfinite(x[i]), "%s, matrix %lld: element %lld of X is %g", what,
          (long long)entry, (long long)i, x[i]);
  double err = tr_backward(a, b, x, n, k, upper, trans, unit, alpha, dt);
  CHECK(err < TR_THRESHOLD,
        "%s, matrix %lld: backward error %.3g n eps "
        "(threshold %g)",
        what, (long long)entry, err, TR_THRESHOLD);
  err = tr_componentwise(a, b, x, n, k, upper, trans, unit, alpha, dt);
  CHECK(err < TR_THRESHOLD,
        "%s, matrix %lld: componentwise backward error "
        "%.3g n eps (threshold %g)",
        what, (long long)entry, err, TR_THRESHOLD);
}

/* ---- kiln_solve_triangular on random problems -----------------------------
 */

/* One solve: a_batch (0: a 2-D A) and b_batch (0: a 2-D B) matrices,
 * every (upper, trans, unit) or only `only` >= 0 (bits upper 1, trans 2,
 * unit 4), through `path`. */
static void tr_solve_case(kiln_dtype dt, int64_t a_batch, int64_t b_batch,
                          int64_t n, int64_t k, int path, double cond,
                          int only) {
  int64_t ab = a_batch > 0 ? a_batch : 1, bb = b_batch > 0 ? b_batch : 1;
  int64_t batch = ab > bb ? ab : bb;
  double *a = kt_la_alloc(ab * n * n), *b = kt_la_alloc(bb * n * k);
  for (int64_t i = 0; i < bb * n * k; i++)
    b[i] = kt_uniform(-1, 1);
  kiln_array *barr = NULL;
  int64_t bshape[3] = {b_batch, n, k};
  barr = b_batch > 0 ? kt_la_array(dt, 3, bshape, b)
                     : kt_la_array(dt, 2, bshape + 1, b);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  for (int upper = 0; upper < 2; upper++) {
    for (int64_t e = 0; e < ab; e++)
      tr_matrix(n, upper, cond, a + e * n * n);
    int64_t ashape[3] = {a_batch, n, n};
    kiln_array *aarr = a_batch > 0 ? kt_la_array(dt, 3, ashape, a)
                                   : kt_la_array(dt, 2, ashape + 1, a);
    for (int trans = 0; trans < 2; trans++)
      for (int unit = 0; unit < 2; unit++) {
        if (only >= 0 && only != (upper | trans << 1 | unit << 2))
          continue;
        char what[160];
        snprintf(what, sizeof what,
                 "%s A %lld x %lld x %lld, B %lld x %lld x %lld, %s%s%s, "
                 "path %d, cond %g",
                 kiln_dtype_name(dt), (long long)a_batch, (long long)n,
                 (long long)n, (long long)b_batch, (long long)n, (long long)k,
                 upper ? "upper" : "lower", trans ? " trans" : "",
                 unit ? " unit" : "", path, cond);
        kiln_array *x = NULL;
        CHECK_OK(
            kiln_solve_triangular_ex(aarr, barr, upper, trans, unit, &o, &x));
        int want_nd = a_batch > 0 || b_batch > 0 ? 3 : 2;
        CHECK(kiln_array_ndim(x) == want_nd && kiln_array_dtype(x) == dt &&
                  kiln_array_shape(x)[want_nd - 2] == n &&
                  kiln_array_shape(x)[want_nd - 1] == k &&
                  (want_nd == 2 || kiln_array_shape(x)[0] == batch),
              "%s: X has the wrong shape or dtype", what);
        double *xv = kt_read_f64(x);
        for (int64_t e = 0; e < batch; e++)
          tr_check_x(what, e, a + (a_batch > 0 ? e : 0) * n * n,
                     b + (b_batch > 0 ? e : 0) * n * k, xv + e * n * k, n, k,
                     upper, trans, unit, 1.0, dt);
        free(xv);
        kiln_array_destroy(x);
      }
    kiln_array_destroy(aarr);
  }
  kiln_array_destroy(barr);
  free(a);
  free(b);
}

/* Every (upper, trans, unit) through every path, on one block, several
 * blocks with a partial last one, and 1 x 1. */
void test_linalg_triangular_cases(void) {
  static const int64_t sizes[] = {1, 7, 70};
  for (int d = 0; d < 2; d++)
    for (int path = 0; path <= 3; path++)
      for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        tr_solve_case(tr_dtypes[d], 0, 0, sizes[s], 5, path, 1, -1);
}

/* Many right-hand sides (1, 16, 100) and sizes around the block sizes. */
void test_linalg_triangular_rhs(void) {
  static const int64_t ks[] = {1, 16, 100};
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
      tr_solve_case(tr_dtypes[d], 0, 0, 150, ks[i], 0, 1, 0);
      tr_solve_case(tr_dtypes[d], 0, 0, 129, ks[i], 2, 1, 3);
      tr_solve_case(tr_dtypes[d], 0, 0, 129, ks[i], 3, 1, 5);
    }
  /* more columns than one fused-step tile and one apply tile */
  tr_solve_case(KILN_FLOAT32, 0, 0, 64, 33, 2, 1, 1);
  tr_solve_case(KILN_FLOAT64, 0, 0, 96, 70, 3, 1, 2);
  /* several steps of path 2 (256 rows in float32, 128 in float64) with a
   * partial last one, every (upper, trans, unit); column counts that fill
   * trsm_step's 16-column tiles exactly, partly, and
   * beyond one tile; trsm_stepinv's 8-column tiles likewise */
  tr_solve_case(KILN_FLOAT32, 0, 0, 600, 16, 2, 1, -1);
  tr_solve_case(KILN_FLOAT32, 0, 0, 513, 21, 2, 1, 3);
  tr_solve_case(KILN_FLOAT32, 0, 0, 300, 1, 0, 1, 5);
  tr_solve_case(KILN_FLOAT64, 0, 0, 300, 16, 2, 1, -1);
  tr_solve_case(KILN_FLOAT64, 0, 0, 257, 35, 2, 1, 6);
  tr_solve_case(KILN_FLOAT32, 3, 3, 290, 5, 2, 1, 2);
  tr_solve_case(KILN_FLOAT64, 0, 3, 270, 3, 2, 1, 1);
  /* trsm_step's owners wait per batch entry and column tile: batched,
   * two column tiles, three steps (the last ragged) */
  tr_solve_case(KILN_FLOAT32, 2, 2, 530, 20, 2, 1, 4);
}

/* Batched A and B, a 2-D A for a batched B, a batched A for a 2-D B. */
void test_linalg_triangular_batched(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = tr_dtypes[d];
    for (int path = 0; path <= 3; path++) {
      tr_solve_case(dt, 5, 5, 40, 3, path, 1, path % 2 ? 6 : 1);
      tr_solve_case(dt, 0, 4, 70, 2, path, 1, path % 2 ? 0 : 7);
      tr_solve_case(dt, 3, 0, 33, 4, path, 1, path % 2 ? 3 : 4);
    }
  }
  /* two batch dimensions: A 2 x 3 x n x n, B 2 x 3 x n x k */
  int64_t n = 9, k = 4, as[4] = {2, 3, 9, 9}, bs[4] = {2, 3, 9, 4};
  double *a = kt_la_alloc(6 * n * n), *b = kt_la_alloc(6 * n * k);
  for (int e = 0; e < 6; e++)
    tr_matrix(n, true, 1, a + e * n * n);
  for (int64_t i = 0; i < 6 * n * k; i++)
    b[i] = kt_uniform(-1, 1);
  kiln_array *aa = kt_la_array(KILN_FLOAT64, 4, as, a);
  kiln_array *ba = kt_la_array(KILN_FLOAT64, 4, bs, b);
  kiln_array *x = NULL;
  CHECK_OK(kiln_solve_triangular(aa, ba, true, true, false, &x));
  CHECK(kiln_array_ndim(x) == 4 && kiln_array_shape(x)[1] == 3,
        "X keeps both batch dimensions");
  double *xv = kt_read_f64(x);
  for (int e = 0; e < 6; e++)
    tr_check_x("float64 2 x 3 batch", e, a + e * n * n, b + e * n * k,
               xv + e * n * k, n, k, true, true, false, 1.0, KILN_FLOAT64);
  free(xv);
  kiln_array_destroy(x);
  /* a 2-D B for a batch whose A has two batch dimensions */
  kiln_array *b2 = NULL;
  CHECK_OK(kiln_array_view(ba, 2, bs + 2, NULL, 0, &b2));
  CHECK_OK(kiln_solve_triangular(aa, b2, true, false, false, &x));
  CHECK(kiln_array_ndim(x) == 4, "X takes A's batch dimensions");
  xv = kt_read_f64(x);
  for (int e = 0; e < 6; e++)
    tr_check_x("float64 2 x 3 batch, 2-D B", e, a + e * n * n, b,
               xv + e * n * k, n, k, true, false, false, 1.0, KILN_FLOAT64);
  free(xv);
  kiln_array_destroy(x);
  kiln_array_destroy(b2);
  kiln_array_destroy(aa);
  kiln_array_destroy(ba);
  free(a);
  free(b);
}

/* Strided views: A as a transposed view (so lower A is read from an upper
 * stored matrix) and as every other column of a wider one; B as a column
 * slice of a wider matrix with a batch step. */
void test_linalg_triangular_strided(void) {
  for (int d = 0; d < 2; d++)
    for (int path = 0; path <= 3; path++) {
      kiln_dtype dt = tr_dtypes[d];
      /* path 2: several fused steps */
      int64_t n = path == 1 ? 20 : path == 2 ? 290 : 75, k = 6, batch = 2;
      /* base A: batch x n x 2n, the matrix at even columns */
      double *abase = kt_la_alloc(batch * n * 2 * n);
      double *a = kt_la_alloc(batch * n * n);
      double *bbase = kt_la_alloc(2 * batch * n * 3 * k);
      double *b = kt_la_alloc(batch * n * k);
      for (int64_t i = 0; i < batch * n * 2 * n; i++)
        abase[i] = kt_uniform(-1e3, 1e3);
      for (int64_t i = 0; i < 2 * batch * n * 3 * k; i++)
        bbase[i] = kt_uniform(-1, 1);
      int64_t ash[3] = {batch, n, 2 * n}, bsh[3] = {2 * batch, n, 3 * k};
      for (int upper = 0; upper < 2; upper++)
        for (int trans = 0; trans < 2; trans++) {
          /* the logical A: stored transposed (a[e][i][j] at base
           * [e][j][2i]) */
          for (int64_t e = 0; e < batch; e++) {
            tr_matrix(n, upper, 1, a + e * n * n);
            for (int64_t i = 0; i < n; i++)
              for (int64_t j = 0; j < n; j++)
                abase[e * n * 2 * n + j * 2 * n + 2 * i] =
                    a[e * n * n + i * n + j];
          }
          kiln_array *ao = kt_la_array(dt, 3, ash, abase);
          kiln_array *bo = kt_la_array(dt, 3, bsh, bbase);
          for (int64_t e = 0; e < batch; e++)
            for (int64_t i = 0; i < n; i++) {
              for (int64_t j = 0; j < n; j++)
                a[e * n * n + i * n + j] =
                    abase[e * n * 2 * n + j * 2 * n + 2 * i];
              for (int64_t c = 0; c < k; c++) /* B: columns k .. 2k-1 */
                b[e * n * k + i * k + c] =
                    bbase[2 * e * n * 3 * k + i * 3 * k + k + c];
            }
          int64_t avs[3] = {batch, n, n}, avst[3] = {n * 2 * n, 2, 2 * n};
          int64_t bvs[3] = {batch, n, k}, bvst[3] = {2 * n * 3 * k, 3 * k, 1};
          kiln_array *av = NULL, *bv = NULL, *x = NULL;
          CHECK_OK(kiln_array_view(ao, 3, avs, avst, 0, &av));
          CHECK_OK(kiln_array_view(bo, 3, bvs, bvst, k, &bv));
          kiln_linalg_opts o;
          kiln_linalg_opts_init(&o);
          o.path = path;
          CHECK_OK(
              kiln_solve_triangular_ex(av, bv, upper, trans, false, &o, &x));
          double *xv = kt_read_f64(x);
          char what[96];
          snprintf(what, sizeof what, "%s strided n %lld %s%s path %d",
                   kiln_dtype_name(dt), (long long)n, upper ? "upper" : "lower",
                   trans ? " trans" : "", path);
          for (int64_t e = 0; e < batch; e++)
            tr_check_x(what, e, a + e * n * n, b + e * n * k, xv + e * n * k, n,
                       k, upper, trans, false, 1.0, dt);
          free(xv);
          kiln_array_destroy(x);
          kiln_array_destroy(av);
          kiln_array_destroy(bv);
          kiln_array_destroy(ao);
          kiln_array_destroy(bo);
        }
      free(abase);
      free(a);
      free(bbase);
      free(b);
    }
}

/* Condition 1e6 in float32 and 1e12 in float64 (row scaling spread over
 * the diagonal), and matrices without a dominant diagonal (off-diagonal
 * entries up to half the diagonal's, whose condition grows exponentially
 * with n): the backward errors, normwise and componentwise, stay small on
 * every path. */
void test_linalg_triangular_ill_conditioned(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = tr_dtypes[d];
    double cond = dt == KILN_FLOAT32 ? 1e6 : 1e12;
    for (int path = 0; path <= 3; path++) {
      tr_solve_case(dt, 0, 0, 160, 16, path, cond, path == 1 ? -1 : 0);
      tr_solve_case(dt, 0, 0, 160, 16, path, cond, 3);
      tr_solve_case(dt, 0, 0, 100, 7, path, -0.5, path == 1 ? -1 : 6);
    }
    /* several fused steps */
    tr_solve_case(dt, 0, 0, dt == KILN_FLOAT32 ? 520 : 300, 16, 2, cond, 0);
    tr_solve_case(dt, 0, 0, dt == KILN_FLOAT32 ? 520 : 300, 16, 2, cond, 3);
    /* path 2 multiplies by inverted diagonal blocks of a whole step (256
     * rows in float32, 128 in float64): without a dominant diagonal
     * their condition is huge, several steps, every case */
    tr_solve_case(dt, 0, 0, 300, 16, 2, -0.5, -1);
  }
}

/* ---- kiln__trsm directly --------------------------------------------- */

/* In place on a sliced view of a wider B, with alpha, A broadcast over
 * B's batch; the elements of B outside the view are untouched. */
void test_linalg_triangular_trsm(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = tr_dtypes[d];
    static const int64_t ns[2] = {5, 300}, ks[2] = {3, 140};
    for (int s = 0; s < 2; s++)
      for (int kk = 0; kk < 2; kk++)
        for (int upper = 0; upper < 2; upper++) {
          int64_t n = ns[s], k = ks[kk], batch = 2, w = k + 5;
          bool trans = (s + kk + upper) % 2 == 1;
          double alpha = -2.5;
          double *a = kt_la_alloc(n * n), *base = kt_la_alloc(batch * n * w);
          tr_matrix(n, upper, 1, a);
          for (int64_t i = 0; i < batch * n * w; i++)
            base[i] = kt_uniform(-1, 1);
          int64_t ash[2] = {n, n}, bsh[3] = {batch, n, w};
          kiln_array *aa = kt_la_array(dt, 2, ash, a);
          kiln_array *bo = kt_la_array(dt, 3, bsh, base);
          int64_t vs[3] = {batch, n, k}, vst[3] = {n * w, w, 1};
          kiln_array *bv = NULL;
          CHECK_OK(kiln_array_view(bo, 3, vs, vst, 2, &bv));
          CHECK_OK(kiln__trsm(kt_stream(), aa, upper, trans, false, alpha, bv));
          double *after = kt_read_f64(bo), *b = kt_la_alloc(n * k);
          double *x = kt_la_alloc(n * k);
          char what[96];
          snprintf(what, sizeof what, "kiln__trsm %s n %lld k %lld %s%s",
                   kiln_dtype_name(dt), (long long)n, (long long)k,
                   upper ? "upper" : "lower", trans ? " trans" : "");
          for (int64_t e = 0; e < batch; e++) {
            for (int64_t i = 0; i < n; i++)
              for (int64_t c = 0; c < w; c++) {
                int64_t at = e * n * w + i * w + c;
                if (c >= 2 && c < 2 + k) {
                  b[i * k + c - 2] = base[at];
                  x[i * k + c - 2] = after[at];
                } else {
                  CHECK(after[at] == base[at],
                        "%s: B(%lld, %lld, %lld) "
                        "outside the view was written",
                        what, (long long)e, (long long)i, (long long)c);
                }
              }
            tr_check_x(what, e, a, b, x, n, k, upper, trans, false, alpha, dt);
          }
          free(after);
          free(b);
          free(x);
          free(a);
          free(base);
          kiln_array_destroy(bv);
          kiln_array_destroy(aa);
          kiln_array_destroy(bo);
        }
  }
}

/* ---- inverses -------------------------------------------------------- */

/* ||A Ainv - I||_F / (||A||_F ||Ainv||_F n eps) for op-less A given by
 * `at` (n x n, already the logical matrix). */
static double tr_inverse_error(const double *at, const double *inv, int64_t n,
                               kiln_dtype dt) {
  double rr = 0, aa = 0, ii = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = i == j ? -1.0 : 0.0;
      for (int64_t p = 0; p < n; p++)
        s += at[i * n + p] * inv[p * n + j];
      rr += s * s;
      aa += at[i * n + j] * at[i * n + j];
      ii += inv[i * n + j] * inv[i * n + j];
    }
  return sqrt(rr) / (sqrt(aa) * sqrt(ii) * (double)n * kt_eps(dt));
}

static void tr_inv_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                        double cond) {
  double *a = kt_la_alloc(batch * n * n), *at = kt_la_alloc(n * n);
  int64_t shape[3] = {batch, n, n};
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  for (int upper = 0; upper < 2; upper++)
    for (int unit = 0; unit < 2; unit++) {
      for (int64_t e = 0; e < batch; e++)
        tr_matrix(n, upper, cond, a + e * n * n);
      kiln_array *arr = kt_la_array(dt, 3, shape, a), *inv = NULL;
      CHECK_OK(kiln_tri_inv_ex(arr, upper, unit, &o, &inv));
      double *iv = kt_read_f64(inv);
      for (int64_t e = 0; e < batch; e++) {
        const double *ie = iv + e * n * n;
        for (int64_t i = 0; i < n; i++)
          for (int64_t j = 0; j < n; j++) {
            at[i * n + j] = tr_op(a + e * n * n, n, upper, false, unit, i, j);
            bool other = upper ? j < i : j > i;
            if (other)
              CHECK(ie[i * n + j] == 0.0,
                    "tri_inv %s n %lld %s: element "
                    "(%lld, %lld) of matrix %lld is %g, not 0",
                    kiln_dtype_name(dt), (long long)n,
                    upper ? "upper" : "lower", (long long)i, (long long)j,
                    (long long)e, ie[i * n + j]);
            if (unit && i == j)
              CHECK(ie[i * n + j] == 1.0,
                    "tri_inv unit: diagonal %lld is "
                    "%g",
                    (long long)i, ie[i * n + j]);
          }
        double err = tr_inverse_error(at, ie, n, dt);
        CHECK(err < TR_THRESHOLD,
              "tri_inv %s n %lld %s%s path %d cond %g, "
              "matrix %lld: error %.3g n eps",
              kiln_dtype_name(dt), (long long)n, upper ? "upper" : "lower",
              unit ? " unit" : "", path, cond, (long long)e, err);
      }
      free(iv);
      kiln_array_destroy(inv);
      kiln_array_destroy(arr);
    }
  free(a);
  free(at);
}

void test_linalg_triangular_tri_inv(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = tr_dtypes[d];
    tr_inv_case(dt, 1, 1, 0, 1);
    tr_inv_case(dt, 3, 10, 0, 1);
    tr_inv_case(dt, 2, 100, 0, 1);
    tr_inv_case(dt, 2, 45, 1, 1);
    tr_inv_case(dt, 1, 130, 3, dt == KILN_FLOAT32 ? 1e6 : 1e12);
  }
}

/* A = F F^T (lower) or F^T F (upper) from a random factor; A Ainv = I and
 * Ainv exactly symmetric. */
static void tr_chol_inv_case(kiln_dtype dt, int64_t batch, int64_t n,
                             int path) {
  double *f = kt_la_alloc(batch * n * n), *a = kt_la_alloc(n * n);
  int64_t shape[3] = {batch, n, n};
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  for (int upper = 0; upper < 2; upper++) {
    for (int64_t e = 0; e < batch; e++) {
      double *fe = f + e * n * n;
      tr_matrix(n, upper, 1, fe);
      for (int64_t i = 0; i < n; i++)
        fe[i * n + i] = fabs(fe[i * n + i]);
    }
    kiln_array *arr = kt_la_array(dt, 3, shape, f), *inv = NULL;
    CHECK_OK(kiln_cholesky_inv_ex(arr, upper, &o, &inv));
    double *iv = kt_read_f64(inv);
    for (int64_t e = 0; e < batch; e++) {
      const double *fe = f + e * n * n, *ie = iv + e * n * n;
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
          double s = 0;
          for (int64_t p = 0; p < n; p++)
            s += upper ? tr_op(fe, n, true, true, false, i, p) *
                             tr_op(fe, n, true, false, false, p, j)
                       : tr_op(fe, n, false, false, false, i, p) *
                             tr_op(fe, n, false, true, false, p, j);
          a[i * n + j] = s;
          CHECK(ie[i * n + j] == ie[j * n + i],
                "cholesky_inv: element "
                "(%lld, %lld) of matrix %lld differs from its mirror",
                (long long)i, (long long)j, (long long)e);
        }
      double err = tr_inverse_error(a, ie, n, dt);
      CHECK(err < 4 * TR_THRESHOLD,
            "cholesky_inv %s n %lld %s path %d, "
            "matrix %lld: error %.3g n eps",
            kiln_dtype_name(dt), (long long)n, upper ? "upper" : "lower", path,
            (long long)e, err);
    }
    free(iv);
    kiln_array_destroy(inv);
    kiln_array_destroy(arr);
  }
  free(f);
  free(a);
}

void test_linalg_triangular_cholesky_inv(void) {
  for (int d = 0; d < 2; d++) {
    tr_chol_inv_case(tr_dtypes[d], 1, 1, 0);
    tr_chol_inv_case(tr_dtypes[d], 4, 12, 0);
    tr_chol_inv_case(tr_dtypes[d], 1, 90, 0);
    tr_chol_inv_case(tr_dtypes[d], 2, 30, 1);
  }
  /* kiln_cholesky's factor in, the inverse of the original out */
  int64_t n = 40, shape[2] = {40, 40};
  double *m = kt_la_alloc(n * n), *a = kt_la_alloc(n * n);
  for (int64_t i = 0; i < n * n; i++)
    m[i] = kt_uniform(-1, 1);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = i == j ? (double)n : 0.0;
      for (int64_t p = 0; p < n; p++)
        s += m[i * n + p] * m[j * n + p];
      a[i * n + j] = s;
    }
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 2, shape, a);
  for (int upper = 0; upper < 2; upper++) {
    kiln_array *fac = NULL, *inv = NULL;
    CHECK_OK(kiln_cholesky(arr, upper, &fac));
    CHECK_OK(kiln_cholesky_inv(fac, upper, &inv));
    double *iv = kt_read_f64(inv);
    double err = tr_inverse_error(a, iv, n, KILN_FLOAT64);
    CHECK(err < 4 * TR_THRESHOLD,
          "cholesky then cholesky_inv (%s): error "
          "%.3g n eps",
          upper ? "upper" : "lower", err);
    free(iv);
    kiln_array_destroy(inv);
    kiln_array_destroy(fac);
  }
  kiln_array_destroy(arr);
  free(m);
  free(a);
}

/* ---- errors ---------------------------------------------------------- */

/* A batch whose entry `bad` has a zero at diagonal element `at` (from 0):
 * every call fails naming both, with its out pointer untouched; the unit
 * diagonal forms ignore it. */
static void tr_zero_case(kiln_dtype dt, int64_t batch, int64_t n, int64_t bad,
                         int64_t at, int path) {
  double *a = kt_la_alloc(batch * n * n), *b = kt_la_alloc(batch * n * 2);
  for (int64_t e = 0; e < batch; e++)
    tr_matrix(n, false, 1, a + e * n * n);
  a[bad * n * n + at * (n + 1)] = 0.0;
  if (at + 5 < n) /* a later zero: the first one is reported */
    a[bad * n * n + (at + 5) * (n + 1)] = 0.0;
  for (int64_t i = 0; i < batch * n * 2; i++)
    b[i] = kt_uniform(-1, 1);
  int64_t as[3] = {batch, n, n}, bs[3] = {batch, n, 2};
  kiln_array *aa = kt_la_array(dt, 3, as, a), *ba = kt_la_array(dt, 3, bs, b);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln_array *sentinel = (kiln_array *)&o, *out = sentinel;
  char want[96];
  snprintf(want, sizeof want,
           "diagonal element %lld (from 1) of matrix "
           "%lld ",
           (long long)(at + 1), (long long)bad);
  CHECK_STATUS(kiln_solve_triangular_ex(aa, ba, false, false, false, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == sentinel, "*x was written on failure");
  CHECK_ERR_HAS(want);
  CHECK_ERR_HAS("[kiln_solve_triangular_ex]");
  CHECK_ERR_HAS("exactly zero");
  if (path != 2) {
    CHECK_STATUS(kiln_tri_inv_ex(aa, false, false, &o, &out),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK(out == sentinel, "*out was written on failure");
    CHECK_ERR_HAS(want);
    CHECK_ERR_HAS("[kiln_tri_inv_ex]");
    CHECK_STATUS(kiln_cholesky_inv_ex(aa, false, &o, &out),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK(out == sentinel, "*out was written on failure");
    CHECK_ERR_HAS("of matrix");
    CHECK_ERR_HAS(" of F ");
    CHECK_ERR_HAS("[kiln_cholesky_inv_ex]");
  }
  /* unit diagonal: the zero is never read */
  kiln_array *x = NULL;
  CHECK_OK(kiln_solve_triangular_ex(aa, ba, false, false, true, &o, &x));
  kiln_array_destroy(x);
  kiln_array_destroy(aa);
  kiln_array_destroy(ba);
  free(a);
  free(b);
}

void test_linalg_triangular_singular(void) {
  for (int d = 0; d < 2; d++)
    for (int path = 0; path <= 3; path++) {
      tr_zero_case(tr_dtypes[d], 4, 6, 2, 3, path);
      tr_zero_case(tr_dtypes[d], 2, 80, 1, 70, path);
    }
  /* a plain matrix is named A; several failing entries name the first */
  int64_t n = 5, s2[2] = {5, 5}, s3[3] = {3, 5, 5};
  double a[75];
  for (int e = 0; e < 3; e++)
    tr_matrix(n, true, 1, a + 25 * e);
  a[0] = 0.0;
  kiln_array *aa = kt_la_array(KILN_FLOAT32, 2, s2, a), *out = NULL;
  CHECK_STATUS(kiln_tri_inv(aa, true, false, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == NULL, "*out was written on failure");
  CHECK_ERR_HAS("diagonal element 1 (from 1) of A is exactly zero");
  CHECK_ERR_HAS("[kiln_tri_inv]");
  kiln_array_destroy(aa);
  a[25 + 6] = 0.0;
  a[50 + 24] = 0.0;
  aa = kt_la_array(KILN_FLOAT64, 3, s3, a);
  CHECK_STATUS(kiln_tri_inv(aa, true, false, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("diagonal element 1 (from 1) of matrix 0 ");
  CHECK_ERR_HAS("2 more matrices");
  kiln_array_destroy(aa);
}

/* Empty shapes give empty results; bad arguments are clear errors. */
void test_linalg_triangular_errors(void) {
  kiln_device *dev = kt_device();
  /* empty: n == 0, k == 0, batch 0 */
  int64_t a00[2] = {0, 0}, b03[2] = {0, 3}, a33[2] = {3, 3}, b30[2] = {3, 0};
  int64_t a033[3] = {0, 3, 3}, b032[3] = {0, 3, 2};
  int64_t *ashapes[3] = {a00, a33, a033}, *bshapes[3] = {b03, b30, b032};
  int nds[3] = {2, 2, 3};
  for (int i = 0; i < 3; i++) {
    kiln_array *a = NULL, *b = NULL, *x = NULL;
    CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, nds[i], ashapes[i], &a));
    CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, nds[i], bshapes[i], &b));
    CHECK_OK(kiln_solve_triangular(a, b, false, false, false, &x));
    CHECK(x != NULL && kiln_array_size(x) == 0 && kiln_array_ndim(x) == nds[i],
          "an empty problem gives an empty X");
    for (int d = 0; d < nds[i]; d++)
      CHECK(kiln_array_shape(x)[d] == bshapes[i][d], "X has B's shape");
    kiln_array_destroy(x);
    if (i != 1) {
      CHECK_OK(kiln_tri_inv(a, false, false, &x));
      CHECK(kiln_array_size(x) == 0, "tri_inv of an empty A is empty");
      kiln_array_destroy(x);
      CHECK_OK(kiln_cholesky_inv(a, true, &x));
      CHECK(kiln_array_size(x) == 0, "cholesky_inv of an empty F is empty");
      kiln_array_destroy(x);
    }
    /* kiln__trsm on empty operands does nothing */
    CHECK_OK(kiln__trsm(kt_stream(), a, false, false, false, 1.0, b));
    kiln_array_destroy(a);
    kiln_array_destroy(b);
  }
  int64_t s44[2] = {4, 4}, s34[2] = {3, 4}, s42[2] = {4, 2}, s32[2] = {3, 2};
  int64_t s4[1] = {4}, s244[3] = {2, 4, 4}, s342[3] = {3, 4, 2};
  kiln_array *a = NULL, *b = NULL, *rect = NULL, *b3 = NULL, *ints = NULL;
  kiln_array *a64 = NULL, *vec = NULL, *ab = NULL, *bb = NULL;
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 2, s44, &a));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 2, s42, &b));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 2, s34, &rect));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 2, s32, &b3));
  CHECK_OK(kiln_array_create(dev, KILN_INT32, 2, s44, &ints));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT64, 2, s44, &a64));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 1, s4, &vec));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 3, s244, &ab));
  CHECK_OK(kiln_array_create(dev, KILN_FLOAT32, 3, s342, &bb));
  kiln_array *sentinel = a, *x = sentinel;
  CHECK_STATUS(kiln_solve_triangular(NULL, b, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is NULL");
  CHECK_STATUS(kiln_solve_triangular(a, NULL, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B is NULL");
  CHECK_STATUS(kiln_solve_triangular(a, b, false, false, false, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("x is NULL");
  CHECK_STATUS(kiln_solve_triangular(ints, b, false, false, false, &x),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("A is int32");
  CHECK_STATUS(kiln_solve_triangular(a, ints, false, false, false, &x),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("B is int32");
  CHECK_STATUS(kiln_solve_triangular(a64, b, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is float64 but B is float32");
  CHECK_STATUS(kiln_solve_triangular(rect, b3, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is 3 x 4");
  CHECK_ERR_HAS("square");
  CHECK_STATUS(kiln_solve_triangular(a, b3, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B is 3 x 2 but A is 4 x 4");
  CHECK_STATUS(kiln_solve_triangular(a, vec, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B has 1 dimension");
  CHECK_STATUS(kiln_solve_triangular(ab, bb, false, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("batch dimensions of A and B differ");
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 4;
  CHECK_STATUS(kiln_solve_triangular_ex(a, b, false, false, false, &o, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("opts->path is 4");
  o.path = 2;
  CHECK_STATUS(kiln_tri_inv_ex(a, false, false, &o, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("opts->path 2");
  CHECK_STATUS(kiln_cholesky_inv_ex(a, false, &o, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("opts->path 2");
  o.struct_size = 3;
  CHECK_STATUS(kiln_solve_triangular_ex(a, b, false, false, false, &o, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("struct_size");
  CHECK(x == sentinel, "x was written on failure");
  /* the inverses */
  CHECK_STATUS(kiln_tri_inv(NULL, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is NULL");
  CHECK_STATUS(kiln_tri_inv(a, false, false, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("out is NULL");
  CHECK_STATUS(kiln_tri_inv(rect, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is 3 x 4; it must be square");
  CHECK_STATUS(kiln_tri_inv(ints, false, false, &x), KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("int32");
  CHECK_STATUS(kiln_tri_inv(vec, false, false, &x),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("dimension");
  CHECK_STATUS(kiln_cholesky_inv(NULL, false, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("F is NULL");
  CHECK_STATUS(kiln_cholesky_inv(rect, false, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("F is 3 x 4");
  CHECK_STATUS(kiln_cholesky_inv(ints, true, &x), KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("F is int32");
  CHECK(x == sentinel, "out was written on failure");
  kiln_array *arrays[9] = {a, b, rect, b3, ints, a64, vec, ab, bb};
  kt_destroy_all(arrays, 9);
}

/* ---- every kernel the driver launches, compiled for a CUDA target ------- */

/* Compiles kernel `name` for `target`: inputs of `dtypes` (rank `ranks`,
 * 0 for scalars), outputs likewise. */
static void tr_compile(const char *name, const char *inputs,
                       const char *outputs, int nin, const kiln_dtype *idt,
                       const int *irank, int nout, const kiln_dtype *odt,
                       const int *orank, const kiln_template_arg *t, int nt,
                       const char *target) {
  kiln_array_spec in[8];
  memset(in, 0, sizeof in);
  for (int i = 0; i < nin; i++) {
    in[i].dtype = idt[i];
    in[i].ndim = irank[i];
  }
  kiln_output_spec out[4];
  memset(out, 0, sizeof out);
  for (int i = 0; i < nout; i++) {
    out[i].dtype = odt[i];
    out[i].ndim = orank[i];
  }
  kt_la_kernel k = {.family = "triangular", .name = name, .inputs = inputs,
                    .outputs = outputs, .flags = KILN__LIB_NO_ROW_CONTIG,
                    .num_inputs = nin, .num_outputs = nout, .in = in,
                    .out = out, .targs = t, .num_targs = nt};
  kt_la_compile(&k, target);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch for that target; skipped otherwise. */
void test_linalg_triangular_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  const kiln_dtype I = KILN_INT32;
  for (int d = 0; d < 2; d++) {
    kiln_dtype T = tr_dtypes[d];
    int nb = T == KILN_FLOAT64 ? 32 : 64, kt = T == KILN_FLOAT64 ? 32 : 64;
    int sub = 4;
    for (int rank = 2; rank <= 3; rank++) {
      kiln_template_arg t[8];
      kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, T);
      /* element-wise kernels and the check */
      kiln_dtype d2[3] = {T, T, I}, d1[2] = {T, I}, di[1] = {I};
      int r2[3] = {rank, 3, 0}, r1[2] = {rank, 0}, ro[1] = {rank};
      int r3[3] = {3, rank, 0}, rinfo[1] = {1};
      tr_compile("tri_copy", "Src,Dstin,batch0", "Dst", 3, d2, r2, 1, d1, ro, t,
                 1, target);
      tr_compile("tri_copy", "Src,Dstin,batch0", "Dst", 3, d2, r3, 1, d1, ro, t,
                 1, target);
      tr_compile("tri_eye", "Xin,batch0", "X", 2, d1, r1, 1, d1, ro, t, 1,
                 target);
      tr_compile("tri_mirror", "Xin,batch0", "X", 2, d1, r1, 1, d1, ro, t, 1,
                 target);
      tr_compile("tri_diag_check", "A,batch0", "info", 2, d1, r1, 1, di, rinfo,
                 t, 1, target);
      for (int flags = 0; flags < 8; flags++) {
        bool upper = flags & 1, trans = flags & 2, unit = flags & 4;
        kt_la_targ(&t[1], "UPPER", KILN_TEMPLATE_BOOL, upper, I);
        kt_la_targ(&t[2], "TRANS", KILN_TEMPLATE_BOOL, trans, I);
        kt_la_targ(&t[3], "UNIT", KILN_TEMPLATE_BOOL, unit, I);
        kiln_dtype ds[4] = {T, T, T, I};
        int rs[4] = {rank, rank, 0, 0};
        tr_compile("trsm_subst", "A,Bin,alpha,batch0", "B", 4, ds, rs, 1, ds,
                   rs + 1, t, 4, target);
        /* the blocked kernels: T, NB, UPPER, TRANS, then their own */
        kiln_template_arg u[8];
        kt_la_targ(&u[0], "T", KILN_TEMPLATE_DTYPE, 0, T);
        kt_la_targ(&u[1], "NB", KILN_TEMPLATE_INT, nb, I);
        kt_la_targ(&u[2], "UPPER", KILN_TEMPLATE_BOOL, upper, I);
        kt_la_targ(&u[3], "TRANS", KILN_TEMPLATE_BOOL, trans, I);
        kt_la_targ(&u[4], "UNIT", KILN_TEMPLATE_BOOL, unit, I);
        int rw[1] = {4};
        tr_compile("trsm_diag_inv", "A,batch0", "W", 2, d1, r1, 1, d1, rw, u, 5,
                   target);
        if (unit)
          continue; /* the step kernels do not depend on it */
        for (int ab = 0; ab < 2; ab++) {
          if (ab && rank == 2)
            continue; /* ABATCH needs a batched A, hence B */
          kiln_dtype dso[2] = {T, T};
          /* path 2's kernels, for every step size the driver picks: SUB
           * blocks (fewer when the matrix has fewer) of NB rows */
          for (int s = 1; s <= sub; s++) {
            kiln_template_arg w[6] = {u[0], u[1], u[2], u[3]};
            kt_la_targ(&w[4], "SUB", KILN_TEMPLATE_INT, s, I);
            kt_la_targ(&w[5], "KT", KILN_TEMPLATE_INT, 8, I);
            kiln_dtype dsi[3] = {T, T, I};
            int rsi[3] = {rank, 4, 0};
            if (!ab)
              tr_compile("trsm_stepinv", "A,W,batch0", "V", 3, dsi, rsi, 1, dso,
                         rw, w, 6, target);
            kiln_template_arg f[5] = {u[0], u[1], u[2], u[3]};
            kt_la_targ(&f[1], "S", KILN_TEMPLATE_INT, s * nb, I);
            kt_la_targ(&f[4], "ABATCH", KILN_TEMPLATE_BOOL, ab, I);
            kiln_dtype dst[4] = {T, T, T, T}, dout[4] = {T, T, T, I};
            int rst[4] = {ab ? rank : 2, 4, rank, 0};
            int rout[4] = {rank, 3, 4, 1};
            tr_compile("trsm_step", "A,V,Bin,scale", "B,R,XS,F", 4, dst, rst,
                       4, dout, rout, f, 5, target);
          }
          kt_la_targ(&u[4], "KT", KILN_TEMPLATE_INT, kt, I);
          kt_la_targ(&u[5], "ABATCH", KILN_TEMPLATE_BOOL, ab, I);
          kiln_dtype dap[5] = {T, T, T, I, I};
          int rap[5] = {4, rank, 0, 0, 0};
          tr_compile("trsm_apply", "W,Bin,scale,step,batch0", "B", 5, dap, rap,
                     1, dso, ro, u, 6, target);
        }
      }
    }
  }
  kiln_template_arg none[1];
  kiln_dtype di[1] = {KILN_INT32};
  int r1[1] = {1};
  tr_compile("tri_iota", "", "steps", 0, di, r1, 1, di, r1, none, 0, target);
  tr_compile("tri_zero", "", "Z", 0, di, r1, 1, di, r1, none, 0, target);
}

/* The solve of test_linalg_triangular_alloc_fail, its reference result
 * and the out pointer each call gets (a sentinel no call returns). */
typedef struct tr_af {
  kiln_array *a, *b, *x;
  kiln_linalg_opts o;
  float *ref;
  int64_t count;
} tr_af;

static char tr_af_mark;
#define TR_AF_SENTINEL ((kiln_array *)&tr_af_mark)

static kiln_status tr_af_call(void *ctx) {
  tr_af *c = ctx;
  c->x = TR_AF_SENTINEL;
  return kiln_solve_triangular_ex(c->a, c->b, false, false, false, &c->o,
                                  &c->x);
}

/* k 0 keeps the reference; a success under a failing allocation gives
 * it bit for bit, a failure leaves *x untouched. */
static void tr_af_check(void *ctx, kiln_status st, long k) {
  tr_af *c = ctx;
  if (st != KILN_OK) {
    CHECK(c->x == TR_AF_SENTINEL, "allocation %ld failing: *x changed", k);
    return;
  }
  float *got = kt_read(c->x);
  kiln_array_destroy(c->x);
  if (k == 0) {
    c->ref = got;
    return;
  }
  for (int64_t i = 0; i < c->count; i++)
    CHECK(got[i] == c->ref[i], "allocation %ld failing, yet success: "
          "X[%lld] is %.9g, not %.9g", k, (long long)i, got[i], c->ref[i]);
  free(got);
}

/* Path 2's error paths: a solve (300 x 300 lower, 16 right-hand sides,
 * two batch entries: several steps) with its k-th host allocation
 * failing (kt_af_sweep; the scratch V, R, XS and the flags among them):
 * either it still succeeds with the same bits as without a failure, or it
 * fails with out of memory, *x untouched and no host block leaked. */
void test_linalg_triangular_alloc_fail(void) {
  /* (the CPU backend only: on CUDA the sweep would also reach the
   * backend's own host allocations) */
  if (strcmp(kt_device_name(), "cpu") != 0)
    kt_skip("the allocation-failure sweep runs on the CPU backend");
  int64_t n = 300, k = 16, batch = 2;
  double *a = kt_la_alloc(batch * n * n), *bv = kt_la_alloc(batch * n * k);
  for (int64_t e = 0; e < batch; e++)
    tr_matrix(n, false, 1, a + e * n * n);
  for (int64_t i = 0; i < batch * n * k; i++)
    bv[i] = kt_uniform(-1, 1);
  int64_t as[3] = {batch, n, n}, bs[3] = {batch, n, k};
  tr_af c = {kt_la_array(KILN_FLOAT32, 3, as, a),
             kt_la_array(KILN_FLOAT32, 3, bs, bv), NULL, {0}, NULL,
             batch * n * k};
  kiln_linalg_opts_init(&c.o);
  c.o.path = 2;
  kt_af_sweep("a path-2 solve", tr_af_call, tr_af_check, &c);
  free(c.ref);
  kiln_array_destroy(c.a);
  kiln_array_destroy(c.b);
  free(a);
  free(bv);
}
