/*
 * LU and what is built on it (kiln_lu_factor, kiln_lu, kiln_solve,
 * kiln_inv, kiln_det, kiln_slogdet) on the device under test.
 *
 * Inputs are fresh random matrices (uniform in [-1, 1]) or, for the
 * ill-conditioned cases, U diag(s) V with U, V products of random
 * Householder reflectors and s spread log-evenly over the condition
 * number. Every factorization is checked by its backward error,
 * ||A[perm] - L U||_F / (||A||_F n eps), by |L| <= 1 (partial pivoting
 * divides by the column's largest element) and by valid pivots; solves by
 * their residual ||A X - B||_F / (||A||_F ||X||_F n eps) and against a
 * float64 host solve, with the forward error allowed cond(A) times the
 * backward error; det and slogdet against a float64 host LU. The host
 * reference is a textbook LU with partial pivoting written here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg_check.h"
#include "linalg/linalg.h"

/* Backward errors below this many units of n eps pass. */
#define LT_THRESHOLD 10.0

/* info for a non-finite input (kernels/lu.metal). */
#define LU_INFO_NONFINITE (-1073741824)

static const kiln_dtype lt_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

static void lt_random(double *a, int64_t count) {
  for (int64_t i = 0; i < count; i++)
    a[i] = kt_uniform(-1, 1);
}

static kiln_linalg_opts lt_opts(int path) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  return o;
}

/* ---- the host reference -------------------------------------------------- */

/* In-place LU with partial pivoting of the n x n matrix a (float64):
 * piv[j] the pivot row of column j; returns det. */
static double lt_host_lu(int64_t n, double *a, int64_t *piv) {
  double det = 1;
  for (int64_t j = 0; j < n; j++) {
    int64_t p = j;
    for (int64_t i = j + 1; i < n; i++)
      if (fabs(a[i * n + j]) > fabs(a[p * n + j]))
        p = i;
    piv[j] = p;
    if (p != j) {
      det = -det;
      for (int64_t c = 0; c < n; c++) {
        double t = a[j * n + c];
        a[j * n + c] = a[p * n + c];
        a[p * n + c] = t;
      }
    }
    det *= a[j * n + j];
    if (a[j * n + j] == 0)
      continue;
    for (int64_t i = j + 1; i < n; i++) {
      double l = a[i * n + j] /= a[j * n + j];
      for (int64_t c = j + 1; c < n; c++)
        a[i * n + c] -= l * a[j * n + c];
    }
  }
  return det;
}

/* x (n x k) = A^-1 b with the host LU; returns det(A). */
static double lt_host_solve(int64_t n, int64_t k, const double *a,
                            const double *b, double *x) {
  double *f = kt_la_alloc(n * n);
  int64_t *piv = calloc((size_t)(n > 0 ? n : 1), sizeof *piv);
  CHECK(piv != NULL, "out of host memory");
  memcpy(f, a, (size_t)(n * n) * sizeof *f);
  double det = lt_host_lu(n, f, piv);
  memcpy(x, b, (size_t)(n * k) * sizeof *x);
  for (int64_t j = 0; j < n; j++)
    for (int64_t c = 0; c < k; c++) {
      double t = x[j * k + c];
      x[j * k + c] = x[piv[j] * k + c];
      x[piv[j] * k + c] = t;
    }
  for (int64_t c = 0; c < k; c++) {
    for (int64_t i = 0; i < n; i++)
      for (int64_t p = 0; p < i; p++)
        x[i * k + c] -= f[i * n + p] * x[p * k + c];
    for (int64_t i = n - 1; i >= 0; i--) {
      for (int64_t p = i + 1; p < n; p++)
        x[i * k + c] -= f[i * n + p] * x[p * k + c];
      x[i * k + c] /= f[i * n + i];
    }
  }
  free(f);
  free(piv);
  return det;
}

static double lt_fro(const double *a, int64_t count) {
  double s = 0;
  for (int64_t i = 0; i < count; i++)
    s += a[i] * a[i];
  return sqrt(s);
}

/* cond_F(A) = ||A||_F ||A^-1||_F through the host solve. */
static double lt_cond(int64_t n, const double *a) {
  double *id = kt_la_alloc(n * n), *inv = kt_la_alloc(n * n);
  for (int64_t i = 0; i < n; i++)
    id[i * n + i] = 1;
  lt_host_solve(n, n, a, id, inv);
  double c = lt_fro(a, n * n) * lt_fro(inv, n * n);
  free(id);
  free(inv);
  return c;
}

/* ---- factorization checks ------------------------------------------------ */

/* kiln_lu_factor_ex of arr (values a, batch x m x n) checked. */
static void lt_factor_check(const char *what, kiln_array *arr, const double *a,
                            int64_t batch, int64_t m, int64_t n, int path) {
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *lu = NULL, *piv = NULL;
  CHECK_OK(kiln_lu_factor_ex(arr, &o, &lu, &piv));
  int nd = kiln_array_ndim(arr);
  int64_t k = m < n ? m : n;
  CHECK(kiln_array_ndim(lu) == nd && kiln_array_ndim(piv) == nd - 1 &&
            kiln_array_dtype(piv) == KILN_INT32 &&
            kiln_array_dtype(lu) == kiln_array_dtype(arr),
        "%s: result ranks or dtypes", what);
  for (int d = 0; d < nd; d++)
    CHECK(kiln_array_shape(lu)[d] == kiln_array_shape(arr)[d], "%s: shape",
          what);
  CHECK(kiln_array_shape(piv)[nd - 2] == k, "%s: pivots' length", what);
  double *f = kt_read_f64(lu);
  int32_t *p = kt_read(piv);
  for (int64_t b = 0; b < batch; b++)
    kt_la_lu_check(what, b, kiln_array_dtype(arr), m, n, a + b * m * n,
                    f + b * m * n, p + b * k);
  free(f);
  free(p);
  kiln_array_destroy(lu);
  kiln_array_destroy(piv);
}

/* kiln_lu_ex of arr: A[perm] = L U with L unit lower (|L| <= 1), U upper,
 * every element of the outputs checked (they are new arrays). */
static void lt_unpacked_check(const char *what, kiln_array *arr,
                              const double *a, int64_t batch, int64_t m,
                              int64_t n, int path) {
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *perm = NULL, *l = NULL, *u = NULL;
  CHECK_OK(kiln_lu_ex(arr, &o, &perm, &l, &u));
  int64_t k = m < n ? m : n;
  int nd = kiln_array_ndim(arr);
  CHECK(kiln_array_shape(l)[nd - 2] == m && kiln_array_shape(l)[nd - 1] == k &&
            kiln_array_shape(u)[nd - 2] == k &&
            kiln_array_shape(u)[nd - 1] == n &&
            kiln_array_shape(perm)[nd - 2] == m &&
            kiln_array_dtype(perm) == KILN_INT32,
        "%s: the shapes of perm, L and U", what);
  double *lv = kt_read_f64(l), *uv = kt_read_f64(u);
  int32_t *pv = kt_read(perm);
  char *seen = calloc((size_t)(m > 0 ? m : 1), 1);
  CHECK(seen != NULL, "out of host memory");
  for (int64_t b = 0; b < batch; b++) {
    const double *lb = lv + b * m * k, *ub = uv + b * k * n,
                 *ab = a + b * m * n;
    const int32_t *pb = pv + b * m;
    memset(seen, 0, (size_t)(m > 0 ? m : 1));
    for (int64_t i = 0; i < m; i++) {
      CHECK(pb[i] >= 0 && pb[i] < m && !seen[pb[i]],
            "%s, matrix %lld: perm "
            "is not a permutation",
            what, (long long)b);
      seen[pb[i]] = 1;
    }
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < k; j++) {
        double x = lb[i * k + j];
        CHECK(j > i    ? x == 0
              : j == i ? x == 1
                       : fabs(x) <= 1,
              "%s, matrix "
              "%lld: L[%lld][%lld] = %g",
              what, (long long)b, (long long)i, (long long)j, x);
      }
    for (int64_t i = 0; i < k; i++)
      for (int64_t j = 0; j < i && j < n; j++)
        CHECK(ub[i * n + j] == 0, "%s, matrix %lld: U[%lld][%lld] is not 0",
              what, (long long)b, (long long)i, (long long)j);
    double num = 0, den = 0;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t p = 0; p < k; p++)
          s += lb[i * k + p] * ub[p * n + j];
        double r = ab[pb[i] * n + j];
        num += (s - r) * (s - r);
        den += r * r;
      }
    double err =
        sqrt(num) / (sqrt(den) * (double)n * kt_eps(kiln_array_dtype(arr)));
    CHECK(err < LT_THRESHOLD,
          "%s, matrix %lld: ||A[perm] - LU|| is %.3g n "
          "eps",
          what, (long long)b, err);
  }
  free(seen);
  free(lv);
  free(uv);
  free(pv);
  kiln_array_destroy(perm);
  kiln_array_destroy(l);
  kiln_array_destroy(u);
}

/* batch random m x n matrices, factored (packed and unpacked) and checked
 * through `path`. */
static void lt_random_case(kiln_dtype dt, int64_t batch, int64_t m, int64_t n,
                           int path, bool unpacked) {
  double *a = kt_la_alloc(batch * m * n);
  lt_random(a, batch * m * n);
  int64_t shape[3] = {batch, m, n};
  int nd = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, nd, nd == 2 ? shape + 1 : shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s %lld x %lld x %lld path %d",
           kiln_dtype_name(dt), (long long)batch, (long long)m, (long long)n,
           path);
  lt_factor_check(what, arr, a, batch, m, n, path);
  if (unpacked)
    lt_unpacked_check(what, arr, a, batch, m, n, path);
  kiln_array_destroy(arr);
  free(a);
}

void test_linalg_lu_factor_shapes(void) {
  static const int64_t sq[] = {1, 2, 7, 33, 64, 65, 150};
  for (int d = 0; d < 2; d++) {
    for (size_t i = 0; i < sizeof sq / sizeof *sq; i++)
      lt_random_case(lt_dtypes[d], 1, sq[i], sq[i], 0, true);
    lt_random_case(lt_dtypes[d], 1, 40, 13, 0, true); /* tall, small */
    lt_random_case(lt_dtypes[d], 1, 13, 40, 0, true); /* wide, small */
    lt_random_case(lt_dtypes[d], 1, 1, 5, 0, true);
    lt_random_case(lt_dtypes[d], 1, 5, 1, 0, true);
    lt_random_case(lt_dtypes[d], 1, 300, 70, 0, true); /* tall, blocked */
    lt_random_case(lt_dtypes[d], 1, 70, 300, 0, true); /* wide, blocked */
  }
}

/* Batches, small and blocked, and two batch dimensions. */
void test_linalg_lu_factor_batched(void) {
  for (int d = 0; d < 2; d++) {
    lt_random_case(lt_dtypes[d], 200, 12, 12, 0, true);
    lt_random_case(lt_dtypes[d], 5, 50, 30, 0, false);
    lt_random_case(lt_dtypes[d], 3, 100, 100, 0, true);
  }
  int64_t shape[4] = {2, 3, 9, 7};
  double *a = kt_la_alloc(6 * 63);
  lt_random(a, 6 * 63);
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 4, shape, a);
  lt_factor_check("float64 2 x 3 x 9 x 7", arr, a, 6, 9, 7, 0);
  lt_unpacked_check("float64 2 x 3 x 9 x 7", arr, a, 6, 9, 7, 0);
  kiln_array_destroy(arr);
  free(a);
}

/* Both paths where both apply; the blocked one on one strip, several
 * strips (recursion trees of every depth) and several panels; the
 * register shapes of lu_panel (rows per thread 1 to 32, strips of 8 down
 * to 1 column) and lu_panel_global (rows beyond registers). */
void test_linalg_lu_factor_paths(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_random_case(dt, 3, 20, 20, 1, false);
    lt_random_case(dt, 3, 20, 20, 2, false);
    lt_random_case(dt, 2, 64, 50, 1, false);
    lt_random_case(dt, 2, 64, 50, 2, false);
    lt_random_case(dt, 1, 5, 9, 2, false);
    lt_random_case(dt, 1, 97, 97, 2, false);
    lt_random_case(dt, 1, 1100, 45, 2, false);
    lt_random_case(dt, 1, 2100, 9, 2, false);
  }
  lt_random_case(KILN_FLOAT32, 1, 4500, 13, 2, false); /* R 16, WS 4 */
  lt_random_case(KILN_FLOAT64, 1, 4500, 7, 2, false);  /* R 16, WS 2 */
  lt_random_case(KILN_FLOAT32, 1, 8300, 3, 2, false);  /* R 32, WS 1 */
  lt_random_case(KILN_FLOAT64, 1, 16500, 3, 2, false); /* global */
  /* Deep recursion trees over a panel's strips (lu.c's run_panel): 16,
   * 32 and 40 (not a power of two) strips, so that the owed block-row
   * updates (lu_owed_from) span many strips and every tree level. */
  lt_random_case(KILN_FLOAT32, 1, 4500, 64, 2, false); /* WS 4 */
  lt_random_case(KILN_FLOAT64, 1, 4500, 64, 2, false); /* WS 2 */
  lt_random_case(KILN_FLOAT32, 1, 8300, 40, 2, false); /* WS 1 */
  lt_random_case(KILN_FLOAT64, 1, 16500, 21, 2, false); /* global, 3 */
  lt_random_case(KILN_FLOAT32, 1, 16500, 3, 2, false); /* global */
  /* Panels of 256 (k >= 2048): block rows that owe up to 124 columns, so
   * that lu_panel's warps split them into several chunks of 32. */
  lt_random_case(KILN_FLOAT32, 1, 2048, 2048, 2, false);
}

/* A transposed view and a sliced view (every other row and column of a
 * batch taken with a step). */
void test_linalg_lu_strided(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    int64_t sizes[2] = {23, 90};
    for (int s = 0; s < 2; s++) {
      int64_t n = sizes[s], batch = 2;
      int64_t total = 2 * batch * 2 * n * 2 * n;
      double *base = kt_la_alloc(total), *a = kt_la_alloc(batch * n * n);
      double *t = kt_la_alloc(batch * n * n);
      lt_random(base, total);
      int64_t bshape[3] = {2 * batch, 2 * n, 2 * n};
      kiln_array *owner = kt_la_array(dt, 3, bshape, base);
      for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < n; i++)
          for (int64_t j = 0; j < n; j++) {
            double x = base[(2 * b) * 4 * n * n + (2 * i) * 2 * n + 2 * j];
            a[b * n * n + i * n + j] = x;
            t[b * n * n + j * n + i] = x;
          }
      int64_t vshape[3] = {batch, n, n};
      int64_t vstr[3] = {2 * 4 * n * n, 4 * n, 2};
      int64_t tstr[3] = {2 * 4 * n * n, 2, 4 * n};
      kiln_array *v = NULL, *tv = NULL;
      CHECK_OK(kiln_array_view(owner, 3, vshape, vstr, 0, &v));
      CHECK_OK(kiln_array_view(owner, 3, vshape, tstr, 0, &tv));
      char what[96];
      snprintf(what, sizeof what, "%s sliced view %lld", kiln_dtype_name(dt),
               (long long)n);
      lt_factor_check(what, v, a, batch, n, n, 0);
      snprintf(what, sizeof what, "%s transposed view %lld",
               kiln_dtype_name(dt), (long long)n);
      lt_unpacked_check(what, tv, t, batch, n, n, 0);
      kiln_array_destroy(v);
      kiln_array_destroy(tv);
      kiln_array_destroy(owner);
      free(base);
      free(a);
      free(t);
    }
  }
}

/* Condition 1e6 in float32 and 1e12 in float64: the backward error stays
 * small (partial pivoting is backward stable in practice). */
void test_linalg_lu_ill_conditioned(void) {
  static const int64_t sizes[] = {30, 130};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 2; s++) {
      kiln_dtype dt = lt_dtypes[d];
      int64_t n = sizes[s];
      double *a = kt_la_alloc(n * n);
      kt_la_ill(n, n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a);
      int64_t shape[2] = {n, n};
      kiln_array *arr = kt_la_array(dt, 2, shape, a);
      char what[96];
      snprintf(what, sizeof what, "%s ill-conditioned %lld",
               kiln_dtype_name(dt), (long long)n);
      lt_factor_check(what, arr, a, 1, n, n, 0);
      kiln_array_destroy(arr);
      free(a);
    }
}

/* ---- solve and inv ------------------------------------------------------- */

/* Checks X (n x k, one matrix) against A and B: residual and forward
 * error against the host solve. */
static void lt_check_solution(const char *what, int64_t entry, kiln_dtype dt,
                              int64_t n, int64_t k, const double *a,
                              const double *b, const double *x) {
  double *ref = kt_la_alloc(n * k), *r = kt_la_alloc(n * k);
  lt_host_solve(n, k, a, b, ref);
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < k; c++) {
      double s = -b[i * k + c];
      for (int64_t p = 0; p < n; p++)
        s += a[i * n + p] * x[p * k + c];
      r[i * k + c] = s;
    }
  double eps = kt_eps(dt);
  double res = lt_fro(r, n * k) /
               (lt_fro(a, n * n) * lt_fro(x, n * k) * (double)n * eps);
  CHECK(res < LT_THRESHOLD, "%s, matrix %lld: residual %.3g n eps", what,
        (long long)entry, res);
  for (int64_t i = 0; i < n * k; i++)
    r[i] = x[i] - ref[i];
  double cond = lt_cond(n, a);
  double fwd = lt_fro(r, n * k) / lt_fro(ref, n * k);
  CHECK(fwd <= LT_THRESHOLD * cond * (double)n * eps,
        "%s, matrix %lld: "
        "forward error %.3g, cond %.3g",
        what, (long long)entry, fwd, cond);
  free(ref);
  free(r);
}

/* kiln_solve_ex with A batch_a x n x n (batch_a 0: a 2-D A) and B batch_b
 * x n x k (0: 2-D; -1: 1-D of n, k must be 1). */
static void lt_solve_case(kiln_dtype dt, int64_t batch_a, int64_t batch_b,
                          int64_t n, int64_t k, int path) {
  int64_t ba = batch_a > 0 ? batch_a : 1, bb = batch_b > 0 ? batch_b : 1;
  int64_t batch = ba > bb ? ba : bb;
  double *a = kt_la_alloc(ba * n * n), *b = kt_la_alloc(bb * n * k);
  lt_random(a, ba * n * n);
  lt_random(b, bb * n * k);
  int64_t sa[3] = {batch_a, n, n}, sb[3] = {batch_b, n, k};
  kiln_array *aa =
      kt_la_array(dt, batch_a > 0 ? 3 : 2, batch_a > 0 ? sa : sa + 1, a);
  kiln_array *barr = batch_b < 0 ? kt_la_array(dt, 1, sb + 1, b)
                                 : kt_la_array(dt, batch_b > 0 ? 3 : 2,
                                            batch_b > 0 ? sb : sb + 1, b);
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *x = NULL;
  CHECK_OK(kiln_solve_ex(aa, barr, &o, &x));
  char what[128];
  snprintf(what, sizeof what,
           "solve %s A %lld x %lld^2, B %lld x %lld x "
           "%lld, path %d",
           kiln_dtype_name(dt), (long long)batch_a, (long long)n,
           (long long)batch_b, (long long)n, (long long)k, path);
  int want_nd = batch_b < 0 ? 1 : (batch_a > 0 || batch_b > 0) ? 3 : 2;
  CHECK(kiln_array_ndim(x) == want_nd && kiln_array_size(x) == batch * n * k &&
            kiln_array_dtype(x) == dt,
        "%s: X has the wrong rank, size or dtype", what);
  double *xv = kt_read_f64(x);
  for (int64_t e = 0; e < batch; e++)
    lt_check_solution(what, e, dt, n, k, a + (batch_a > 0 ? e : 0) * n * n,
                      b + (batch_b > 0 ? e : 0) * n * k, xv + e * n * k);
  free(xv);
  kiln_array_destroy(x);
  kiln_array_destroy(aa);
  kiln_array_destroy(barr);
  free(a);
  free(b);
}

void test_linalg_lu_solve(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_solve_case(dt, 0, 0, 1, 1, 0);
    lt_solve_case(dt, 0, 0, 10, 3, 0);
    lt_solve_case(dt, 0, -1, 17, 1, 0);  /* 1-D B */
    lt_solve_case(dt, 0, 0, 120, 16, 2); /* blocked */
    lt_solve_case(dt, 40, 40, 8, 2, 0);  /* batched both */
    lt_solve_case(dt, 0, 6, 30, 4, 0);   /* 2-D A, batched B */
    lt_solve_case(dt, 5, 0, 30, 4, 0);   /* batched A, 2-D B */
    lt_solve_case(dt, 3, 3, 70, 5, 2);   /* forced blocked */
    lt_solve_case(dt, 3, 3, 40, 5, 1);   /* forced small */
  }
}

/* A strided B (a transposed view) and an ill-conditioned A. */
void test_linalg_lu_solve_hard(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    int64_t n = 50, k = 6;
    double *a = kt_la_alloc(n * n), *bt = kt_la_alloc(k * n), *b = kt_la_alloc(n * k);
    kt_la_ill(n, n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a);
    lt_random(bt, k * n);
    int64_t sa[2] = {n, n}, sbt[2] = {k, n}, sb[2] = {n, k};
    kiln_array *aa = kt_la_array(dt, 2, sa, a), *bo = kt_la_array(dt, 2, sbt, bt);
    for (int64_t i = 0; i < n; i++)
      for (int64_t c = 0; c < k; c++)
        b[i * k + c] = bt[c * n + i];
    int64_t st[2] = {1, n};
    kiln_array *bv = NULL, *x = NULL;
    CHECK_OK(kiln_array_view(bo, 2, sb, st, 0, &bv));
    CHECK_OK(kiln_solve(aa, bv, &x));
    double *xv = kt_read_f64(x);
    lt_check_solution(dt == KILN_FLOAT32 ? "float32 ill, strided B"
                                         : "float64 ill, strided B",
                      0, dt, n, k, a, b, xv);
    free(xv);
    kiln_array_destroy(x);
    kiln_array_destroy(bv);
    kiln_array_destroy(bo);
    kiln_array_destroy(aa);
    free(a);
    free(b);
    free(bt);
  }
}

/* A Ainv = I: the inverse against the host's, batched and blocked. */
static void lt_inv_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                        double cond) {
  double *a = kt_la_alloc(batch * n * n), *id = kt_la_alloc(n * n);
  for (int64_t b = 0; b < batch; b++)
    if (cond > 0)
      kt_la_ill(n, n, cond, a + b * n * n);
    else
      lt_random(a + b * n * n, n * n);
  for (int64_t i = 0; i < n; i++)
    id[i * n + i] = 1;
  int64_t shape[3] = {batch, n, n};
  kiln_array *arr =
      kt_la_array(dt, batch > 1 ? 3 : 2, batch > 1 ? shape : shape + 1, a);
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *x = NULL;
  CHECK_OK(kiln_inv_ex(arr, &o, &x));
  CHECK(kiln_array_size(x) == batch * n * n, "inv: size");
  double *xv = kt_read_f64(x);
  char what[96];
  snprintf(what, sizeof what, "inv %s %lld x %lld^2 path %d cond %g",
           kiln_dtype_name(dt), (long long)batch, (long long)n, path, cond);
  for (int64_t b = 0; b < batch; b++)
    lt_check_solution(what, b, dt, n, n, a + b * n * n, id, xv + b * n * n);
  free(xv);
  kiln_array_destroy(x);
  kiln_array_destroy(arr);
  free(a);
  free(id);
}

void test_linalg_lu_inv(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_inv_case(dt, 1, 1, 0, 0);
    lt_inv_case(dt, 30, 9, 0, 0);
    lt_inv_case(dt, 1, 100, 0, 0);
    lt_inv_case(dt, 2, 40, 2, 0);
    lt_inv_case(dt, 1, 40, 0, dt == KILN_FLOAT32 ? 1e6 : 1e12);
  }
}

/* ---- det and slogdet ----------------------------------------------------- */

static void lt_det_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                        int singular_entry) {
  double *a = kt_la_alloc(batch * n * n);
  lt_random(a, batch * n * n);
  /* variance e / n per entry keeps E[det^2] = n! (e / n)^n near
   * sqrt(2 pi n): far from overflow in float32 */
  for (int64_t i = 0; i < batch * n * n; i++)
    a[i] *= sqrt(3.0 * exp(1.0) / (double)n);
  if (singular_entry >= 0) /* an exactly zero column 1 */
    for (int64_t i = 0; i < n; i++)
      a[singular_entry * n * n + i * n + (n > 1 ? 1 : 0)] = 0;
  int64_t shape[3] = {batch, n, n};
  kiln_array *arr =
      kt_la_array(dt, batch > 1 ? 3 : 2, batch > 1 ? shape : shape + 1, a);
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *det = NULL, *sign = NULL, *lad = NULL;
  CHECK_OK(kiln_det_ex(arr, &o, &det));
  CHECK_OK(kiln_slogdet_ex(arr, &o, &sign, &lad));
  int want_nd = batch > 1 ? 1 : 0;
  CHECK(kiln_array_ndim(det) == want_nd && kiln_array_ndim(sign) == want_nd &&
            kiln_array_ndim(lad) == want_nd && kiln_array_dtype(det) == dt &&
            kiln_array_size(det) == batch,
        "det: shape or dtype");
  double *dv = kt_read_f64(det), *sv = kt_read_f64(sign),
         *lv = kt_read_f64(lad);
  for (int64_t b = 0; b < batch; b++) {
    double *f = kt_la_alloc(n * n);
    int64_t *piv = calloc((size_t)(n > 0 ? n : 1), sizeof *piv);
    CHECK(piv != NULL, "out of host memory");
    memcpy(f, a + b * n * n, (size_t)(n * n) * sizeof *f);
    double ref = lt_host_lu(n, f, piv);
    free(f);
    free(piv);
    if (b == singular_entry) {
      CHECK(dv[b] == 0 && sv[b] == 0 && isinf(lv[b]) && lv[b] < 0,
            "det of a singular matrix %lld: det %g, sign %g, log %g",
            (long long)b, dv[b], sv[b], lv[b]);
      continue;
    }
    double cond = lt_cond(n, a + b * n * n);
    double tol = LT_THRESHOLD * (double)n * kt_eps(dt) * cond;
    CHECK(fabs(dv[b] - ref) <= tol * fabs(ref),
          "det %s n %lld matrix %lld: "
          "%.17g vs %.17g",
          kiln_dtype_name(dt), (long long)n, (long long)b, dv[b], ref);
    CHECK(sv[b] == (ref > 0 ? 1.0 : -1.0), "slogdet sign %g, det %g", sv[b],
          ref);
    CHECK(fabs(lv[b] - log(fabs(ref))) <= tol, "slogdet log %.17g vs %.17g",
          lv[b], log(fabs(ref)));
  }
  free(dv);
  free(sv);
  free(lv);
  kiln_array_destroy(det);
  kiln_array_destroy(sign);
  kiln_array_destroy(lad);
  kiln_array_destroy(arr);
  free(a);
}

void test_linalg_lu_det(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_det_case(dt, 1, 1, 0, -1);
    lt_det_case(dt, 1, 6, 0, -1);
    lt_det_case(dt, 20, 7, 0, 3);
    lt_det_case(dt, 1, 80, 0, -1);
    lt_det_case(dt, 4, 70, 2, 2);
    lt_det_case(dt, 4, 30, 1, 0);
  }
  /* empty matrices: det 1, slogdet (1, 0); NaN propagates */
  int64_t s300[3] = {3, 0, 0};
  kiln_array *e = NULL, *d = NULL, *sg = NULL, *ld = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 3, s300, &e));
  CHECK_OK(kiln_det(e, &d));
  CHECK_OK(kiln_slogdet(e, &sg, &ld));
  double *dv = kt_read_f64(d), *sv = kt_read_f64(sg), *lv = kt_read_f64(ld);
  for (int i = 0; i < 3; i++)
    CHECK(dv[i] == 1 && sv[i] == 1 && lv[i] == 0, "det of a 0 x 0 matrix");
  free(dv);
  free(sv);
  free(lv);
  kiln_array_destroy(d);
  kiln_array_destroy(sg);
  kiln_array_destroy(ld);
  kiln_array_destroy(e);
  double nan4[4] = {1, NAN, 2, 3};
  int64_t s22[2] = {2, 2};
  kiln_array *na = kt_la_array(KILN_FLOAT64, 2, s22, nan4);
  CHECK_OK(kiln_det(na, &d));
  dv = kt_read_f64(d);
  CHECK(isnan(dv[0]), "det of a matrix with NaN is NaN, got %g", dv[0]);
  free(dv);
  kiln_array_destroy(d);
  kiln_array_destroy(na);
}

/* ---- failures ------------------------------------------------------------ */

/* A batch whose entry `bad` has an exactly zero column `col`: lu, solve and
 * inv fail naming the entry and pivot col + 1; outputs untouched. */
static void lt_singular_case(kiln_dtype dt, int64_t batch, int64_t n,
                             int64_t bad, int64_t col, int path) {
  double *a = kt_la_alloc(batch * n * n), *b = kt_la_alloc(batch * n);
  lt_random(a, batch * n * n);
  lt_random(b, batch * n);
  for (int64_t i = 0; i < n; i++)
    a[bad * n * n + i * n + col] = 0;
  int64_t shape[3] = {batch, n, n}, bs[3] = {batch, n, 1};
  kiln_array *arr = kt_la_array(dt, 3, shape, a), *barr = kt_la_array(dt, 3, bs, b);
  kiln_linalg_opts o = lt_opts(path);
  kiln_array *sentinel = (kiln_array *)&o, *x1 = sentinel, *x2 = sentinel;
  kiln_array *x3 = sentinel;
  char want[96];
  snprintf(want, sizeof want,
           "matrix %lld (batch index, from 0) of A is "
           "singular: its pivot %lld ",
           (long long)bad, (long long)col + 1);
  CHECK_STATUS(kiln_lu_factor_ex(arr, &o, &x1, &x2),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS(want);
  CHECK_ERR_HAS("[kiln_lu_factor_ex]");
  CHECK_STATUS(kiln_lu_ex(arr, &o, &x1, &x2, &x3), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS(want);
  CHECK_STATUS(kiln_solve_ex(arr, barr, &o, &x1), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS(want);
  CHECK_ERR_HAS("[kiln_solve_ex]");
  CHECK_STATUS(kiln_inv_ex(arr, &o, &x1), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS(want);
  CHECK(x1 == sentinel && x2 == sentinel && x3 == sentinel,
        "an output was written on failure");
  kiln_array_destroy(arr);
  kiln_array_destroy(barr);
  free(a);
  free(b);
}

void test_linalg_lu_singular(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_singular_case(dt, 5, 8, 3, 2, 0);
    lt_singular_case(dt, 5, 8, 3, 0, 2);
    lt_singular_case(dt, 2, 100, 1, 77, 2); /* blocked, second panel */
    lt_singular_case(dt, 2, 40, 0, 39, 1);
  }
  /* a plain matrix is named A; several failures name the first */
  double a[9] = {1, 2, 3, 2, 4, 6, 1, 0, 1};
  int64_t s33[2] = {3, 3};
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 2, s33, a), *x = NULL;
  CHECK_STATUS(kiln_inv(arr, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is singular: its pivot");
  CHECK_ERR_HAS("[kiln_inv]");
  CHECK(x == NULL, "*out was written on failure");
  kiln_array_destroy(arr);
  double z[3 * 4] = {1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1};
  int64_t s322[3] = {3, 2, 2};
  arr = kt_la_array(KILN_FLOAT32, 3, s322, z);
  kiln_array *piv = NULL;
  CHECK_STATUS(kiln_lu_factor(arr, &x, &piv), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("matrix 1 (batch index, from 0) of A (and 1 more matrix) is "
                "singular: its pivot 1 ");
  kiln_array_destroy(arr);
}

/* NaN or infinity in A: lu, solve and inv refuse it, on both paths. */
void test_linalg_lu_nonfinite(void) {
  for (int path = 1; path <= 2; path++)
    for (int d = 0; d < 2; d++) {
      int64_t n = 20, shape[3] = {2, 20, 20};
      double *a = kt_la_alloc(2 * n * n);
      lt_random(a, 2 * n * n);
      a[n * n + 7 * n + 19] = d == 0 ? NAN : INFINITY;
      kiln_array *arr = kt_la_array(lt_dtypes[d], 3, shape, a);
      kiln_linalg_opts o = lt_opts(path);
      kiln_array *x = NULL, *p = NULL;
      CHECK_STATUS(kiln_lu_factor_ex(arr, &o, &x, &p),
                   KILN_ERROR_INVALID_ARGUMENT);
      CHECK_ERR_HAS("matrix 1 (batch index, from 0) of A contains NaN or "
                    "infinity");
      CHECK_STATUS(kiln_solve_ex(arr, arr, &o, &x),
                   KILN_ERROR_INVALID_ARGUMENT);
      CHECK_ERR_HAS("NaN or infinity");
      CHECK_STATUS(kiln_inv_ex(arr, &o, &x), KILN_ERROR_INVALID_ARGUMENT);
      CHECK_ERR_HAS("NaN or infinity");
      CHECK(x == NULL && p == NULL, "an output was written on failure");
      kiln_array_destroy(arr);
      free(a);
    }
}

/* Empty shapes give empty results; bad arguments are clear errors. */
void test_linalg_lu_errors(void) {
  int64_t s00[2] = {0, 0}, s055[3] = {0, 5, 5}, s50[2] = {5, 0};
  kiln_array *e = NULL, *lu = NULL, *piv = NULL, *perm = NULL, *l = NULL;
  kiln_array *u = NULL, *x = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s00, &e));
  CHECK_OK(kiln_lu_factor(e, &lu, &piv));
  CHECK(kiln_array_size(lu) == 0 && kiln_array_size(piv) == 0, "0 x 0");
  kiln_array_destroy(lu);
  kiln_array_destroy(piv);
  CHECK_OK(kiln_inv(e, &x));
  CHECK(kiln_array_size(x) == 0 && kiln_array_ndim(x) == 2, "inv 0 x 0");
  kiln_array_destroy(x);
  kiln_array_destroy(e);
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, s055, &e));
  CHECK_OK(kiln_lu(e, &perm, &l, &u));
  CHECK(kiln_array_size(perm) == 0 && kiln_array_ndim(perm) == 2 &&
            kiln_array_size(l) == 0 && kiln_array_size(u) == 0,
        "0 x 5 x 5");
  kiln_array_destroy(perm);
  kiln_array_destroy(l);
  kiln_array_destroy(u);
  CHECK_OK(kiln_solve(e, e, &x));
  CHECK(kiln_array_size(x) == 0 && kiln_array_ndim(x) == 3, "solve empty");
  kiln_array_destroy(x);
  kiln_array_destroy(e);
  /* 5 x 0: no pivots, perm the identity, L 5 x 0, U 0 x 0 */
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s50, &e));
  CHECK_OK(kiln_lu(e, &perm, &l, &u));
  int32_t *pv = kt_read(perm);
  for (int i = 0; i < 5; i++)
    CHECK(pv[i] == i, "perm of a 5 x 0 matrix is the identity");
  free(pv);
  CHECK(kiln_array_shape(l)[0] == 5 && kiln_array_shape(l)[1] == 0 &&
            kiln_array_size(u) == 0,
        "L and U of a 5 x 0 matrix");
  kiln_array_destroy(perm);
  kiln_array_destroy(l);
  kiln_array_destroy(u);
  kiln_array_destroy(e);

  int64_t s34[2] = {3, 4}, s4[1] = {4}, s44[2] = {4, 4}, s3[1] = {3};
  int64_t s244[3] = {2, 4, 4}, s342[3] = {3, 4, 2};
  kiln_array *rect = NULL, *vec = NULL, *ints = NULL, *sq = NULL;
  kiln_array *sq32 = NULL, *v3 = NULL, *b2 = NULL, *b3 = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s34, &rect));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 1, s4, &vec));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 2, s44, &ints));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s44, &sq));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s44, &sq32));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 1, s3, &v3));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, s244, &b2));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, s342, &b3));
  CHECK_OK(kiln_array_fill(sq, 1.0, NULL));
  x = NULL;
  lu = piv = NULL;
  CHECK_STATUS(kiln_lu_factor(NULL, &lu, &piv), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is NULL");
  CHECK_STATUS(kiln_lu_factor(sq, NULL, &piv), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("lu is NULL");
  CHECK_STATUS(kiln_lu(sq, &perm, &l, NULL), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("u is NULL");
  CHECK_STATUS(kiln_lu_factor(vec, &lu, &piv), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("dimension");
  CHECK_STATUS(kiln_lu_factor(ints, &lu, &piv), KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("int32");
  CHECK_STATUS(kiln_inv(rect, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("3 x 4");
  CHECK_ERR_HAS("square");
  CHECK_STATUS(kiln_det(rect, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("square");
  CHECK_STATUS(kiln_solve(sq, sq32, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B is float32 but A is float64");
  CHECK_STATUS(kiln_solve(sq, v3, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B has 3 rows but A is 4 x 4");
  CHECK_STATUS(kiln_solve(b2, v3, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B is 1-D");
  CHECK_STATUS(kiln_solve(b2, b3, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("batch dimensions of A and B differ");
  CHECK_STATUS(kiln_solve(sq, NULL, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("B is NULL");
  kiln_linalg_opts o = lt_opts(3);
  CHECK_STATUS(kiln_lu_factor_ex(sq, &o, &lu, &piv),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("opts->path is 3");
  int64_t s129[2] = {129, 129};
  kiln_array *big = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s129, &big));
  o.path = 1;
  CHECK_STATUS(kiln_solve_ex(big, big, &o, &x), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("128 x 128");
  CHECK_ERR_HAS("129 x 129");
  CHECK(x == NULL && lu == NULL && piv == NULL, "outputs written on failure");
  kiln_array *arrays[9] = {rect, vec, ints, sq, sq32, v3, b2, b3, big};
  for (int i = 0; i < 9; i++)
    kiln_array_destroy(arrays[i]);
}

/* ---- the small path past 64 (lu_small_reg) ------------------------------- */

/* Replays the device's pivots piv (k of them) on a (m x n) in float64 and
 * checks that each is the column's largest |a| below the diagonal: the
 * first of the largest exactly when the runner-up is further than the
 * rounding of the device's elimination can move it (tol, absolute),
 * within tol of the largest otherwise. */
static void lt_check_gepp(const char *what, int64_t entry, kiln_dtype dt,
                          int64_t m, int64_t n, const double *a,
                          const int32_t *piv) {
  int64_t k = m < n ? m : n;
  double *h = kt_la_alloc(m * n);
  memcpy(h, a, (size_t)(m * n) * sizeof *h);
  double amax = 0;
  for (int64_t e = 0; e < m * n; e++)
    amax = fmax(amax, fabs(a[e]));
  double tol = 64.0 * (double)(m > n ? m : n) * kt_eps(dt) * amax;
  for (int64_t j = 0; j < k; j++) {
    int64_t best = j;
    for (int64_t i = j + 1; i < m; i++)
      if (fabs(h[i * n + j]) > fabs(h[best * n + j]))
        best = i;
    double top = fabs(h[best * n + j]), second = 0;
    for (int64_t i = j; i < m; i++)
      if (i != best)
        second = fmax(second, fabs(h[i * n + j]));
    int64_t p = piv[j];
    CHECK(p >= j && p < m, "%s, matrix %lld: pivot %lld is %lld", what,
          (long long)entry, (long long)j, (long long)p);
    CHECK(top - second <= tol ? fabs(h[p * n + j]) >= top - tol : p == best,
          "%s, matrix %lld: pivot %lld is row %lld (|a| %g), GEPP's is row "
          "%lld (|a| %g)",
          what, (long long)entry, (long long)j, (long long)p,
          fabs(h[p * n + j]), (long long)best, top);
    for (int64_t c = 0; c < n; c++) {
      double t = h[j * n + c];
      h[j * n + c] = h[p * n + c];
      h[p * n + c] = t;
    }
    double d = h[j * n + j];
    for (int64_t i = j + 1; d != 0 && i < m; i++) {
      double l = h[i * n + j] /= d;
      for (int64_t c = j + 1; c < n; c++)
        h[i * n + c] -= l * h[j * n + c];
    }
  }
  free(h);
}

/* arr factored through `path` by the internal entry points (no check of
 * info, no error: the factors, pivots and info in *f, which the caller
 * frees with kiln__lu_free). */
static void lt_run(kiln_array *arr, int path, kiln__lu *f) {
  kiln_linalg_opts o = lt_opts(path), oo;
  kiln_stream *s = NULL;
  CHECK_OK(kiln__lu_prepare(arr, &o, "LU", false, &oo, &s));
  CHECK_OK(kiln__lu_run(s, arr, path, false, f));
}

/* Factors arr (values a, batch x m x n) through `path` without the
 * check: the packed factors and pivots checked (backward error, |L| <= 1,
 * GEPP's pivots), info returned (batch values, the caller frees). */
static int32_t *lt_factor_raw(const char *what, kiln_array *arr,
                              const double *a, int64_t batch, int64_t m,
                              int64_t n, int path) {
  kiln__lu f;
  lt_run(arr, path, &f);
  int64_t k = m < n ? m : n;
  double *w = kt_read_f64(f.w);
  int32_t *p = kt_read(f.piv), *info = kt_read(f.info);
  for (int64_t b = 0; b < batch; b++) {
    kt_la_lu_check(what, b, kiln_array_dtype(arr), m, n, a + b * m * n,
                    w + b * m * n, p + b * k);
    lt_check_gepp(what, b, kiln_array_dtype(arr), m, n, a + b * m * n,
                  p + b * k);
  }
  free(w);
  free(p);
  kiln__lu_free(&f);
  return info;
}

/* batch random (or, with cond > 0, ill-conditioned) m x n matrices of
 * shape {lead0, lead1, m, n} (lead0 = 0: a plain matrix; lead1 = 0: one
 * batch dimension) factored through `path`: the checked call
 * (lt_factor_check) and the unchecked one with GEPP's pivots. */
static void lt_small_case(kiln_dtype dt, int64_t lead0, int64_t lead1,
                          int64_t m, int64_t n, int path, double cond) {
  int64_t batch = (lead0 > 0 ? lead0 : 1) * (lead1 > 0 ? lead1 : 1);
  double *a = kt_la_alloc(batch * m * n);
  if (cond > 0)
    for (int64_t b = 0; b < batch; b++)
      kt_la_ill(m, n, cond, a + b * m * n);
  else
    lt_random(a, batch * m * n);
  int64_t shape[4] = {lead0, lead1, m, n};
  int nd = lead0 == 0 ? 2 : lead1 == 0 ? 3 : 4;
  const int64_t *sh = nd == 2 ? shape + 2 : shape;
  if (nd == 3)
    shape[1] = m, shape[2] = n;
  kiln_array *arr = kt_la_array(dt, nd, sh, a);
  char what[128];
  snprintf(what, sizeof what, "%s %lld x %lld x %lld path %d cond %g",
           kiln_dtype_name(dt), (long long)batch, (long long)m, (long long)n,
           path, cond);
  lt_factor_check(what, arr, a, batch, m, n, path);
  int32_t *info = lt_factor_raw(what, arr, a, batch, m, n, path);
  for (int64_t b = 0; b < batch; b++)
    CHECK(info[b] == 0, "%s, matrix %lld: info %d", what, (long long)b,
          info[b]);
  free(info);
  kiln_array_destroy(arr);
  free(a);
}

/* Shapes past lu_small's 64 (register classes 64 and 128 of rows and of
 * columns, each side up to 128), square, tall and wide, batched with
 * leading dimensions, forced and automatic, random and ill-conditioned;
 * the other paths' inputs (views, solve, inv, det) at those sizes. */
void test_linalg_lu_small_reg(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_small_case(dt, 0, 0, 65, 65, 1, 0);
    lt_small_case(dt, 0, 0, 128, 128, 0, 0);
    lt_small_case(dt, 0, 0, 128, 70, 1, 0);  /* tall */
    lt_small_case(dt, 0, 0, 100, 33, 0, 0);  /* tall, 64 columns */
    lt_small_case(dt, 0, 0, 40, 128, 1, 0);  /* wide, 64 rows */
    lt_small_case(dt, 0, 0, 90, 128, 0, 0);  /* wide */
    lt_small_case(dt, 0, 0, 1, 128, 1, 0);
    lt_small_case(dt, 0, 0, 128, 1, 1, 0);
    lt_small_case(dt, 0, 0, 5, 5, 1, 0);     /* lu_small, for contrast */
    lt_small_case(dt, 2, 3, 80, 75, 0, 0);   /* leading batch dims */
    lt_small_case(dt, 5, 0, 97, 97, 1, 0);
    lt_small_case(dt, 0, 0, 120, 120, 0, dt == KILN_FLOAT32 ? 1e6 : 1e12);
    lt_small_case(dt, 2, 0, 128, 100, 1, dt == KILN_FLOAT32 ? 1e6 : 1e12);
    lt_solve_case(dt, 0, 4, 100, 3, 1); /* 2-D A, batched B */
    lt_solve_case(dt, 2, 2, 128, 2, 0);
    lt_inv_case(dt, 2, 77, 1, 0);
    lt_det_case(dt, 3, 110, 1, 1);
    lt_singular_case(dt, 3, 100, 2, 70, 1);
    lt_singular_case(dt, 2, 128, 1, 0, 0);
    lt_singular_case(dt, 2, 90, 0, 89, 0);
  }
  for (int d = 0; d < 2; d++) { /* views */
    kiln_dtype dt = lt_dtypes[d];
    kiln_array *base = NULL, *view = NULL;
    double *a = kt_la_alloc(2 * 100 * 90);
    kt_la_transposed(dt, 100, 90, a, &base, &view);
    lt_factor_check("transposed view 100 x 90", view, a, 1, 100, 90, 1);
    kiln_array_destroy(view);
    kiln_array_destroy(base);
    kt_la_sliced(dt, 2, 70, 110, 1, a, &base, &view);
    lt_factor_check("sliced view 2 x 70 x 110", view, a, 2, 70, 110, 1);
    int32_t *info = lt_factor_raw("sliced view 2 x 70 x 110", view, a, 2,
                                  70, 110, 1);
    free(info);
    kiln_array_destroy(view);
    kiln_array_destroy(base);
    free(a);
  }
}

/* LAPACK's getrf on the register path, case by case: ties go to the first
 * largest, NaN is the largest, an exact zero pivot gives info j + 1 and
 * the factorization carries on, an overflowed pivot -(j + 1), a
 * non-finite input LU_INFO_NONFINITE; the path's limit and empty
 * shapes. */
void test_linalg_lu_small_reg_semantics(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    int64_t m = 100, n = 90, shape[3] = {4, m, n};
    double *a = kt_la_alloc(4 * m * n);
    lt_random(a, 4 * m * n);
    double *a0 = a, *a1 = a + m * n, *a2 = a + 2 * m * n, *a3 = a + 3 * m * n;
    /* 0: a tie for column 0 between rows 40, 50 and 80 (-2, 2, 2): across
     * warps (rows 40 and 80) and inside one (40 and 50) */
    a0[40 * n] = -2;
    a0[50 * n] = 2;
    a0[80 * n] = 2;
    /* 1: column 33 exactly zero: pivot 34 zero, info 34, then onwards */
    for (int64_t i = 0; i < m; i++)
      a1[i * n + 33] = 0;
    /* 2: row 1 overflows in column 1 after the first step (pivot 2) */
    double big = 0.9 * (dt == KILN_FLOAT32 ? 3.4028234663852886e38
                                           : 1.7976931348623157e308);
    for (int64_t e = 0; e < m * n; e++)
      a2[e] *= 1e-3;
    a2[0] = 1;
    a2[n] = 0.5;
    a2[1] = big;
    a2[n + 1] = -big;
    /* 3: NaN at (60, 0), infinity at (99, 89) */
    a3[60 * n] = NAN;
    a3[99 * n + 89] = INFINITY;
    kiln_array *arr = kt_la_array(dt, 3, shape, a);
    kiln__lu f;
    lt_run(arr, 1, &f);
    double *w = kt_read_f64(f.w);
    int32_t *p = kt_read(f.piv), *info = kt_read(f.info);
    const char *dn = kiln_dtype_name(dt);
    CHECK(p[0] == 40 && info[0] == 0, "%s tie: pivot 0 is %d, info %d", dn,
          p[0], info[0]);
    kt_la_lu_check("tie", 0, dt, m, n, a0, w, p);
    CHECK(info[1] == 34, "%s zero column 33: info %d", dn, info[1]);
    kt_la_lu_check("zero column", 1, dt, m, n, a1, w + m * n, p + n);
    lt_check_gepp("zero column", 1, dt, m, n, a1, p + n);
    CHECK(info[2] == -2 && p[2 * n] == 0 && p[2 * n + 1] == 1,
          "%s overflow: info %d, pivots %d %d", dn, info[2], p[2 * n],
          p[2 * n + 1]);
    CHECK(isinf(w[2 * m * n + n + 1]), "%s overflow: U[1][1] is %g", dn,
          w[2 * m * n + n + 1]);
    for (int64_t j = 0; j < n; j++)
      CHECK(p[2 * n + j] >= j && p[2 * n + j] < m,
            "%s overflow: pivot %lld is %d", dn, (long long)j,
            p[2 * n + j]);
    CHECK(info[3] == LU_INFO_NONFINITE && p[3 * n] == 60,
          "%s NaN: info %d, pivot 0 is %d", dn, info[3], p[3 * n]);
    free(w);
    free(p);
    free(info);
    kiln__lu_free(&f);
    /* the checked calls name the matrix and pivot; outputs untouched */
    kiln_linalg_opts o = lt_opts(1);
    kiln_array *x = NULL, *pv = NULL;
    CHECK_STATUS(kiln_lu_factor_ex(arr, &o, &x, &pv),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("matrix 1 (batch index, from 0) of A (and 2 more "
                  "matrices) is singular: its pivot 34 ");
    CHECK(x == NULL && pv == NULL, "an output was written on failure");
    kiln_array_destroy(arr);
    free(a);
  }
  /* the limit: 128 in each dimension; empty shapes */
  int64_t big1[2] = {129, 129}, big2[2] = {5, 129}, e1[2] = {0, 100};
  int64_t e2[2] = {100, 0}, e3[3] = {0, 100, 100};
  kiln_array *b1 = NULL, *b2 = NULL, *x = NULL, *pv = NULL;
  kiln_linalg_opts o = lt_opts(1);
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, big1, &b1));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, big2, &b2));
  CHECK_STATUS(kiln_lu_factor_ex(b1, &o, &x, &pv),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("opts->path 1 (small) holds matrices up to 128 x 128, but "
                "A is 129 x 129.");
  CHECK_STATUS(kiln_lu_factor_ex(b2, &o, &x, &pv),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is 5 x 129");
  CHECK(x == NULL && pv == NULL, "an output was written on failure");
  kiln_array_destroy(b1);
  kiln_array_destroy(b2);
  const int64_t *es[3] = {e1, e2, e3};
  for (int i = 0; i < 3; i++) {
    kiln_array *e = NULL;
    CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, i == 2 ? 3 : 2,
                               es[i], &e));
    CHECK_OK(kiln_lu_factor_ex(e, &o, &x, &pv));
    CHECK(kiln_array_size(x) == 0 && kiln_array_size(pv) == 0,
          "empty shape %d: results not empty", i);
    kiln_array_destroy(x);
    kiln_array_destroy(pv);
    kiln_array_destroy(e);
  }
}

/* Factors arr (batch x m x n, values a) unchecked through the blocked
 * path; checks every matrix's pivots (GEPP's), |L| <= 1 and backward
 * error, and that info is 0; returns W (host float64) and piv for more
 * checks (the caller frees them). */
static double *lt_rows_factor(const char *what, kiln_array *arr,
                              const double *a, int64_t batch, int64_t m,
                              int64_t n, int32_t **piv) {
  int32_t *info = lt_factor_raw(what, arr, a, batch, m, n, 2);
  for (int64_t b = 0; b < batch; b++)
    CHECK(info[b] == 0, "%s, matrix %lld: info %d", what, (long long)b,
          info[b]);
  free(info);
  kiln_linalg_opts o = lt_opts(2);
  kiln_array *lu = NULL, *pv = NULL;
  CHECK_OK(kiln_lu_factor_ex(arr, &o, &lu, &pv));
  double *w = kt_read_f64(lu);
  *piv = kt_read(pv);
  kiln_array_destroy(lu);
  kiln_array_destroy(pv);
  return w;
}

/* ---- the grid-wide strip kernel (lu_strip_grid) ------------------------- */

/* A single m x n matrix (no batch) with column `col` zeroed (col < 0: none)
 * and, with nan, one NaN: factored through the blocked path, unchecked
 * (packed factors, GEPP's pivots, info) and checked (the error naming the
 * pivot or the NaN, outputs untouched). */
static void lt_grid_case(kiln_dtype dt, int64_t m, int64_t n, int64_t col,
                         bool nan) {
  double *a = kt_la_alloc(m * n);
  lt_random(a, m * n);
  for (int64_t i = 0; col >= 0 && i < m; i++)
    a[i * n + col] = 0;
  if (nan)
    a[(m - 3) * n + n / 2] = NAN;
  int64_t shape[2] = {m, n};
  kiln_array *arr = kt_la_array(dt, 2, shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s %lld x %lld grid, zero column %lld%s",
           kiln_dtype_name(dt), (long long)m, (long long)n, (long long)col,
           nan ? ", NaN" : "");
  kiln_linalg_opts o = lt_opts(2);
  kiln_array *sentinel = (kiln_array *)&o, *x = sentinel, *pv = sentinel;
  if (nan) {
    CHECK_STATUS(kiln_lu_factor_ex(arr, &o, &x, &pv),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("A contains NaN or infinity; LU needs finite values.");
    CHECK(x == sentinel && pv == sentinel, "%s: output written on failure",
          what);
  } else {
    int32_t *info = lt_factor_raw(what, arr, a, 1, m, n, 2);
    CHECK(info[0] == (col >= 0 ? (int32_t)col + 1 : 0), "%s: info %d", what,
          info[0]);
    free(info);
    if (col >= 0) {
      char want[96];
      snprintf(want, sizeof want, "A is singular: its pivot %lld ",
               (long long)col + 1);
      CHECK_STATUS(kiln_lu_factor_ex(arr, &o, &x, &pv),
                   KILN_ERROR_INVALID_ARGUMENT);
      CHECK_ERR_HAS(want);
      CHECK(x == sentinel && pv == sentinel, "%s: output written on failure",
            what);
    } else {
      lt_factor_check(what, arr, a, 1, m, n, 2);
    }
  }
  kiln_array_destroy(arr);
  free(a);
}

/* Exact ties through a strip: the first K columns hold, per column q, -2
 * and +2 in two rows of their own (far apart: in different threadgroups
 * of lu_strip_grid on a GPU) and 0 elsewhere, the other columns random.
 * Elimination keeps those columns exact (a pivot row has no other
 * nonzero among them, multipliers are 0 or -1), so every one of the K
 * pivots is a tie, which the first row (in the order after the earlier
 * interchanges) must win, as GEPP replayed here in float64 says. */
static void lt_grid_ties(kiln_dtype dt, int64_t m, int64_t n) {
  int64_t k = n < 24 ? n : 24;
  double *a = kt_la_alloc(m * n), *h = kt_la_alloc(m * n);
  lt_random(a, m * n);
  for (int64_t i = 0; i < m; i++)
    for (int64_t q = 0; q < k; q++)
      a[i * n + q] = 0;
  for (int64_t q = 0; q < k; q++) { /* 37 is prime to m: distinct rows */
    a[((37 * 2 * q + 11) % m) * n + q] = -2;
    a[((37 * (2 * q + 1) + 11) % m) * n + q] = 2;
  }
  memcpy(h, a, (size_t)(m * n) * sizeof *h);
  int64_t shape[2] = {m, n};
  kiln_array *arr = kt_la_array(dt, 2, shape, a);
  char what[96];
  snprintf(what, sizeof what, "%s %lld x %lld grid, ties",
           kiln_dtype_name(dt), (long long)m, (long long)n);
  int32_t *p = NULL;
  double *f = lt_rows_factor(what, arr, a, 1, m, n, &p);
  for (int64_t q = 0; q < k; q++) {
    int64_t best = q;
    for (int64_t i = q + 1; i < m; i++)
      if (fabs(h[i * n + q]) > fabs(h[best * n + q]))
        best = i;
    CHECK(p[q] == best, "%s: pivot %lld is row %d, the first tie is %lld",
          what, (long long)q, p[q], (long long)best);
    for (int64_t c = 0; c < n; c++) {
      double t = h[q * n + c];
      h[q * n + c] = h[best * n + c];
      h[best * n + c] = t;
    }
    for (int64_t i = q + 1; i < m; i++) {
      double l = h[i * n + q] / h[q * n + q];
      for (int64_t c = q; c < n; c++)
        h[i * n + c] -= l * h[q * n + c];
    }
  }
  free(p);
  free(f);
  kiln_array_destroy(arr);
  free(a);
  free(h);
}

/* One row the pivot again and again: row r wins column 0, then the rows
 * that each swap sends to r win the next columns (their values there
 * dominate), and once more at the first column of the second strip (w,
 * the strip width): piv holds r four times. lu_strip_grid relabels rows
 * rather than moving them, and composes the strip's interchanges for the
 * panel's other columns by tracing them back, where a row that is pivot
 * more than once is the case to get wrong. */
static void lt_grid_repeat(kiln_dtype dt, int64_t m, int64_t n, int64_t w) {
  const int64_t r = m - 7, cols[4] = {0, 1, 2, w};
  double *a = kt_la_alloc(m * n);
  lt_random(a, m * n);
  a[r * n] = 50;      /* column 0: row r */
  a[0 * n + 1] = 1e3; /* row 0, at r after column 0 */
  a[1 * n + 2] = 1e5; /* row 1, at r after column 1 */
  a[2 * n + w] = 1e7; /* row 2, at r after column 2, */
  for (int64_t c = 3; c < w; c++) /* and no pivot before column w */
    a[2 * n + c] *= 1e-3;
  int64_t shape[2] = {m, n};
  kiln_array *arr = kt_la_array(dt, 2, shape, a);
  char what[96];
  snprintf(what, sizeof what, "%s %lld x %lld grid, repeated pivot",
           kiln_dtype_name(dt), (long long)m, (long long)n);
  int32_t *p = NULL;
  double *f = lt_rows_factor(what, arr, a, 1, m, n, &p);
  for (int i = 0; i < 4; i++)
    CHECK(p[cols[i]] == r, "%s: pivot %lld is row %d, not %lld", what,
          (long long)cols[i], p[cols[i]], (long long)r);
  free(p);
  free(f);
  kiln_array_destroy(arr);
  free(a);
}

/*
 * Shapes that lu.c's blocked path gives to lu_strip_grid on a CUDA device
 * (one matrix, at least LU_GRID_MIN_ROWS = 1024 rows below the panel; on
 * the CPU they run lu_panel, and must agree all the same): strips of the
 * full width (64 float32, 32 float64) and a narrower last one (panels of
 * 64 up to k 2048: n = 100 leaves 36), panels where the rows fall below
 * the threshold mid-factorization, tall and wide, ill-conditioned, an
 * exactly zero pivot mid-strip (info, the error, carrying on past it),
 * a NaN. Several strips per panel: 2 of 32 in float64 here, 4 of 64 in
 * linalg_lu_factor_paths' 2048 x 2048 float32 (panels of 256).
 */
void test_linalg_lu_grid(void) {
  /* On a GPU the strip kernel with several groups. */
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_grid_case(dt, 1100, 100, -1, false);
    lt_grid_case(dt, 1100, 100, 70, false);
    lt_grid_case(dt, 1100, 40, 5, false);
    lt_grid_case(dt, 1100, 40, -1, true);
    lt_small_case(dt, 0, 0, 1300, 96, 2, dt == KILN_FLOAT32 ? 1e6 : 1e12);
    lt_grid_ties(dt, 1100, 40);
  }
  lt_grid_case(KILN_FLOAT32, 1030, 1100, -1, false); /* wide */
  /* (Panels of 256, k >= 2048: linalg_lu_factor_paths' 2048 x 2048.) */
  /* On every backend, lu_strip_grid with one threadgroup (strips of at
   * most 256 rows): its pivots, interchanges, block rows and info; 300
   * rows start on lu_panel and move to the grid kernel at the second
   * panel. */
  kiln__lu_grid_test = true;
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_grid_case(dt, 200, 150, -1, false);
    lt_grid_case(dt, 256, 256, -1, false);
    lt_grid_case(dt, 250, 100, 70, false);
    lt_grid_case(dt, 240, 40, 0, false);
    lt_grid_case(dt, 130, 250, -1, false);
    lt_grid_case(dt, 300, 120, -1, false);
    lt_grid_case(dt, 100, 100, -1, true);
    lt_small_case(dt, 0, 0, 180, 180, 2, dt == KILN_FLOAT32 ? 1e6 : 1e12);
    lt_grid_ties(dt, 250, 40);
    lt_grid_repeat(dt, 250, 200, dt == KILN_FLOAT64 ? 32 : 64);
  }
  kiln__lu_grid_test = false;
}

/* ---- the blocked path's interchanges and block rows ---------------------- */

/* A = L U (n x n, exactly, in integers) with L unit lower with random
 * signs (+-1) everywhere below its diagonal, as Wilkinson's (all -1), and
 * U random integers in [-4, 4] with a unit diagonal; lu receives L and U
 * packed. Partial pivoting keeps every row in place (each column's
 * candidates tie at |1|, and ties go to the first) and every value of
 * the elimination, substitution and GEMMs is a small integer, exact; but
 * a panel's L11^-1 grows exponentially (up to 2^(NB - 2)), so that a
 * product by it loses everything to rounding (A12 = L11 U12 cancels huge
 * terms): the case for lu_rowfix. (With all -1 the product's partial
 * sums telescope and stay exact.) */
static void lt_growth(int64_t n, double *a, double *lu) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++)
      lu[i * n + j] = j < i    ? (kt_uniform(-1, 1) < 0 ? -1.0 : 1.0)
                      : j == i ? 1.0
                               : round(kt_uniform(-4, 4));
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t k = 0; k <= i && k <= j; k++)
        s += (k == i ? 1.0 : lu[i * n + k]) * lu[k * n + j];
      a[i * n + j] = s;
    }
}

/* A batch of n x n matrices (n > 64: several panels) whose entry 0 is
 * lt_growth's, the others random: in one launch, matrix 0's block rows
 * must take lu_rowfix (its L11^-1 is far past LU_LINV_MAX) and come out
 * exact, the others the product by L11^-1. */
static void lt_rows_growth(kiln_dtype dt, int64_t batch, int64_t n) {
  double *a = kt_la_alloc(batch * n * n), *u = kt_la_alloc(n * n);
  lt_growth(n, a, u);
  lt_random(a + n * n, (batch - 1) * n * n);
  int64_t shape[3] = {batch, n, n};
  kiln_array *arr = kt_la_array(dt, 3, shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s L of +-1, %lld x %lld (batch %lld)",
           kiln_dtype_name(dt), (long long)n, (long long)n, (long long)batch);
  int32_t *piv = NULL;
  double *w = lt_rows_factor(what, arr, a, batch, n, n, &piv);
  for (int64_t i = 0; i < n; i++) {
    CHECK(piv[i] == i, "%s: pivot %lld is %d", what, (long long)i, piv[i]);
    for (int64_t j = 0; j < n; j++) {
      double want = u[i * n + j];
      CHECK(w[i * n + j] == want, "%s: LU[%lld][%lld] is %.17g, not %g", what,
            (long long)i, (long long)j, w[i * n + j], want);
    }
  }
  free(w);
  free(piv);
  kiln_array_destroy(arr);
  free(a);
  free(u);
}

/* Random matrices where one row is the pivot of two columns of the first
 * panel (the interchanges' composition must not move it twice): row 100
 * wins column 0, and the row it swaps away (old row 0) wins column 1 from
 * there; matrix 1 of the batch is plain random. */
static void lt_rows_repeat(kiln_dtype dt, int64_t n) {
  double *a = kt_la_alloc(2 * n * n);
  lt_random(a, 2 * n * n);
  a[100 * n + 0] = 10.0;
  a[0 * n + 1] = 50.0;
  a[100 * n + 1] = 0.0;
  int64_t shape[3] = {2, n, n};
  kiln_array *arr = kt_la_array(dt, 3, shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s repeated pivot row, %lld x %lld",
           kiln_dtype_name(dt), (long long)n, (long long)n);
  int32_t *piv = NULL;
  double *w = lt_rows_factor(what, arr, a, 2, n, n, &piv);
  CHECK(piv[0] == 100 && piv[1] == 100, "%s: pivots %d, %d (want 100, 100)",
        what, piv[0], piv[1]);
  free(w);
  free(piv);
  kiln_array_destroy(arr);
  free(a);
}

/* batch random m x n matrices through the blocked path, checked. */
static void lt_rows_random(kiln_dtype dt, int64_t batch, int64_t m, int64_t n) {
  double *a = kt_la_alloc(batch * m * n);
  lt_random(a, batch * m * n);
  int64_t shape[3] = {batch, m, n};
  kiln_array *arr = kt_la_array(dt, 3, shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s %lld x %lld x %lld (L11^-1 bound %d)",
           kiln_dtype_name(dt), (long long)batch, (long long)m, (long long)n,
           kiln__lu_linv_max_test);
  int32_t *piv = NULL;
  double *w = lt_rows_factor(what, arr, a, batch, m, n, &piv);
  free(w);
  free(piv);
  kiln_array_destroy(arr);
  free(a);
}

/*
 * The blocked path's per-panel work around the strips (lu.c's
 * launch_laswp and block_row): the interchanges composed and gathered
 * (lu_laswp_plan, lu_laswp), including a pivot row used twice in a panel,
 * and the block row by L11^-1 and a GEMM (lu_linv_diag, lu_linv), or by
 * substitution (lu_rowfix) where L11^-1 is too large to trust: L U
 * with Wilkinson's L (lt_growth), exact by substitution and lost by the
 * product, beside random matrices in the same batch; every block row through
 * lu_rowfix (kiln__lu_linv_max_test = 0), square, tall and wide; panels of
 * 64 and, under kiln__lu_grid_test, of 256 (with a last panel narrower
 * than a 32-row block).
 */
void test_linalg_lu_rows(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    lt_rows_growth(dt, 3, 200);
    lt_rows_repeat(dt, 200);
    lt_rows_random(dt, 2, 150, 150);
    kiln__lu_linv_max_test = 0;
    lt_rows_random(dt, 2, 150, 150);
    lt_rows_random(dt, 1, 200, 90);
    lt_rows_random(dt, 1, 90, 200);
    kiln__lu_linv_max_test = -1;
  }
  kiln__lu_grid_test = true;
  for (int d = 0; d < 2; d++) /* L11^-1 overflows float32: inf */
    lt_rows_growth(lt_dtypes[d], 2, 300);
  for (int d = 0; d < 2; d++) {
    lt_rows_random(lt_dtypes[d], 2, 300, 300);
    lt_rows_random(lt_dtypes[d], 1, 270, 300);
  }
  kiln__lu_grid_test = false;
}

/* ---- every kernel the drivers launch, compiled for a CUDA target --------- */

typedef struct lt_cfg {
  const char *name, *inputs, *outputs;
  int in_ndim[8];
  kiln_dtype in_dt[8];
  int num_inputs;
  kiln_dtype out_dt[5];
  int out_ndim[5];
  int num_outputs;
  kiln_template_arg t[6];
  int nt;
} lt_cfg;

static void lt_compile(const lt_cfg *c, const char *target) {
  kiln_array_spec in[8];
  memset(in, 0, sizeof in);
  for (int i = 0; i < c->num_inputs; i++) {
    in[i].dtype = c->in_dt[i];
    in[i].ndim = c->in_ndim[i];
  }
  kiln_output_spec out[5];
  memset(out, 0, sizeof out);
  for (int i = 0; i < c->num_outputs; i++) {
    out[i].dtype = c->out_dt[i];
    out[i].ndim = c->out_ndim[i];
  }
  /* A few register layouts of lu_panel spill a few bytes under its
   * 512-thread bound (measured acceptable; see lu.c). */
  kt_la_kernel k = {.family = "lu", .name = c->name, .inputs = c->inputs,
                    .outputs = c->outputs, .flags = KILN__LIB_NO_ROW_CONTIG,
                    .num_inputs = c->num_inputs,
                    .num_outputs = c->num_outputs, .in = in, .out = out,
                    .targs = c->t, .num_targs = c->nt, .allow_spills = true};
  kt_la_compile(&k, target);
}

/* A configuration: inputs "name:ndim" with T for the matrix dtype. */
static lt_cfg lt_make(const char *name, const char *inputs, const char *outputs,
                      kiln_dtype dt, int rank, const char *in_kinds,
                      const char *out_kinds) {
  lt_cfg c;
  memset(&c, 0, sizeof c);
  c.name = name;
  c.inputs = inputs;
  c.outputs = outputs;
  /* kinds: M matrix of dt (rank), P int32 (rank - 1), S int32 scalar,
   * I int32 1-D, D dt (rank - 2), Q dt 3-D (the transposed panel), V dt
   * 1-D */
  for (const char *p = in_kinds; *p; p++, c.num_inputs++) {
    int i = c.num_inputs;
    c.in_dt[i] = *p == 'M' ? dt : KILN_INT32;
    c.in_ndim[i] = *p == 'M' ? rank : *p == 'P' ? rank - 1 : *p == 'I' ? 1 : 0;
  }
  for (const char *p = out_kinds; *p; p++, c.num_outputs++) {
    int i = c.num_outputs;
    c.out_dt[i] = *p == 'M' || *p == 'D' || *p == 'Q' || *p == 'V'
                      ? dt
                      : KILN_INT32;
    c.out_ndim[i] = *p == 'M'   ? rank
                    : *p == 'P' ? rank - 1
                    : *p == 'D' ? rank - 2
                    : *p == 'Q' ? 3
                                : 1;
  }
  kt_la_targ(&c.t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
  c.nt = 1;
  return c;
}

/* lu.c's strip_width: lu_panel's columns with r rows per thread. */
static int lt_strip_width(kiln_dtype dt, int r) {
  if (dt == KILN_FLOAT64)
    return r <= 8 ? 4 : r == 16 ? 2 : 1;
  return r <= 8 ? 8 : r == 16 ? 4 : 1;
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the LU drivers can launch for that target; skipped otherwise. */
void test_linalg_lu_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  lt_cfg c = lt_make("lu_iota", "count", "idx", KILN_INT32, 2, "S", "I");
  c.nt = 0;
  lt_compile(&c, target);
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    for (int rank = 2; rank <= 3; rank++) {
      for (int nmax = 16; nmax <= 64; nmax *= 2) {
        c = lt_make("lu_small", "A,batch0", "W,piv,info", dt, rank, "MS",
                    "MPI");
        kt_la_targ(&c.t[1], "NMAX", KILN_TEMPLATE_INT, nmax, KILN_INT32);
        c.nt = 2;
        lt_compile(&c, target);
      }
      for (int nr = 64; nr <= 128; nr *= 2)
        for (int nc = 64; nc <= 128; nc *= 2) { /* lu.c's run_small_reg */
          c = lt_make("lu_small_reg", "A,batch0", "W,piv,info", dt, rank,
                      "MS", "MPI");
          kt_la_targ(&c.t[1], "NR", KILN_TEMPLATE_INT, nr, KILN_INT32);
          kt_la_targ(&c.t[2], "NC", KILN_TEMPLATE_INT, nc, KILN_INT32);
          kt_la_targ(&c.t[3], "CB", KILN_TEMPLATE_INT,
                     dt == KILN_FLOAT64 ? 4 : 8, KILN_INT32);
          c.nt = 4;
          lt_compile(&c, target);
        }
      c = lt_make("lu_copy", "A,batch0", "W,info", dt, rank, "MS", "MI");
      lt_compile(&c, target);
      for (int r = 1; r <= 32; r *= 2) {
        int ws = lt_strip_width(dt, r);
        c = lt_make("lu_panel", "first,pstart,pend,nbp,nrows,npiv,batch0",
                    "PT,piv,info", dt, rank, "SSSSSSS", "QPI");
        kt_la_targ(&c.t[1], "NT", KILN_TEMPLATE_INT, 512, KILN_INT32);
        kt_la_targ(&c.t[2], "WS", KILN_TEMPLATE_INT, ws, KILN_INT32);
        kt_la_targ(&c.t[3], "G", KILN_TEMPLATE_INT, 2, KILN_INT32);
        kt_la_targ(&c.t[4], "GL", KILN_TEMPLATE_INT, 2, KILN_INT32);
        kt_la_targ(&c.t[5], "R", KILN_TEMPLATE_INT, r, KILN_INT32);
        c.nt = 6;
        lt_compile(&c, target);
      }
      c = lt_make("lu_panel_global",
                  "first,pstart,pend,nbp,nrows,npiv,batch0", "PT,piv,info",
                  dt, rank, "SSSSSSS", "QPI");
      kt_la_targ(&c.t[1], "NT", KILN_TEMPLATE_INT, 512, KILN_INT32);
      kt_la_targ(&c.t[2], "WS", KILN_TEMPLATE_INT, 8, KILN_INT32);
      kt_la_targ(&c.t[3], "G", KILN_TEMPLATE_INT, 2, KILN_INT32);
      kt_la_targ(&c.t[4], "GL", KILN_TEMPLATE_INT, 2, KILN_INT32);
      c.nt = 5;
      lt_compile(&c, target);
      /* lu.c's launch_grid: W 64 float32, 32 float64, 256 threads */
      c = lt_make("lu_strip_grid", "first,pstart,pend,nbp,nrows,npiv",
                  "PT,piv,info,X,S", dt, rank, "SSSSSS", "QPIVI");
      kt_la_targ(&c.t[1], "W", KILN_TEMPLATE_INT,
                 dt == KILN_FLOAT64 ? 32 : 64, KILN_INT32);
      kt_la_targ(&c.t[2], "NT", KILN_TEMPLATE_INT, 256, KILN_INT32);
      c.nt = 3;
      lt_compile(&c, target);
      for (int back = 0; back < 2; back++) {
        c = lt_make("lu_transpose", "Win,p0,pe,nbp,batch0", "W,PT", dt, rank,
                    "MSSSS", "MQ");
        kt_la_targ(&c.t[1], "BACK", KILN_TEMPLATE_BOOL, back, KILN_INT32);
        c.nt = 2;
        lt_compile(&c, target);
      }
      /* lu.c's launch_laswp, block_row: NB 64 or 256, lu_laswp with
       * 2 NB threads, LU_LINV_MAX 64 */
      for (int nb = 64; nb <= 256; nb *= 4) {
        c = lt_make("lu_laswp_plan", "Win,piv,p0,pe,batch0", "plan,flag", dt,
                    rank, "MPSSS", "II");
        kt_la_targ(&c.t[0], "NB", KILN_TEMPLATE_INT, nb, KILN_INT32);
        lt_compile(&c, target);
        for (int sb = 0; sb < 2; sb++) {
          c = lt_make("lu_laswp", "Win,plan,Sin,p0,pe,batch0", "W,S", dt, rank,
                      "MIMSSS", "MM");
          kt_la_targ(&c.t[1], "NB", KILN_TEMPLATE_INT, nb, KILN_INT32);
          kt_la_targ(&c.t[2], "NT", KILN_TEMPLATE_INT, 2 * nb, KILN_INT32);
          kt_la_targ(&c.t[3], "SB", KILN_TEMPLATE_BOOL, sb, KILN_INT32);
          c.nt = 4;
          lt_compile(&c, target);
        }
        for (int diag = 0; diag < 2; diag++) {
          c = lt_make(diag ? "lu_linv_diag" : "lu_linv", "Win,p0,pe,batch0",
                      "Li,flag", dt, rank, "MSSS", "MI");
          kt_la_targ(&c.t[1], "LMAX", KILN_TEMPLATE_INT, 64, KILN_INT32);
          kt_la_targ(&c.t[2], "NB", KILN_TEMPLATE_INT, nb, KILN_INT32);
          c.nt = 3;
          lt_compile(&c, target);
        }
      }
      c = lt_make("lu_rowfix", "Win,S,flag,p0,pe,batch0", "W", dt, rank,
                  "MMISSS", "M");
      lt_compile(&c, target);
      c = lt_make("lu_perm", "W,piv,batch0", "perm", dt, rank, "MPS", "P");
      kt_la_targ(&c.t[0], "CH", KILN_TEMPLATE_INT, 8192, KILN_INT32);
      lt_compile(&c, target);
      c = lt_make("lu_unpack", "W,batch0", "L,U", dt, rank, "MS", "MM");
      lt_compile(&c, target);
      for (int flag = 0; flag < 2; flag++) {
        c = lt_make("lu_gather", "B,perm,batch0", "X", dt, rank, "MPS", "M");
        kt_la_targ(&c.t[1], "IDENT", KILN_TEMPLATE_BOOL, flag, KILN_INT32);
        c.nt = 2;
        lt_compile(&c, target);
        c = lt_make("lu_det", "W,piv,batch0", "D,S", dt, rank, "MPS", "DD");
        kt_la_targ(&c.t[1], "LOG", KILN_TEMPLATE_BOOL, flag, KILN_INT32);
        c.nt = 2;
        lt_compile(&c, target);
      }
    }
  }
}

/* The blocked path's copy of A (lu_copy, eight elements a thread) notes a
 * non-finite input wherever it sits: the first element, the last (the
 * ragged end of a thread's elements) or one in between, per matrix of a
 * batch, and a finite matrix beside them is factored as usual. */
void test_linalg_lu_blocked_nonfinite(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lt_dtypes[d];
    int64_t m = 150, n = 131, shape[3] = {4, m, n};
    double *a = kt_la_alloc(4 * m * n);
    lt_random(a, 4 * m * n);
    a[0] = INFINITY;                     /* matrix 0: first element */
    a[2 * m * n - 1] = NAN;              /* matrix 1: last element */
    a[3 * m * n + 77 * n + 100] = -INFINITY; /* matrix 3: inside */
    kiln_array *arr = kt_la_array(dt, 3, shape, a);
    kiln__lu f;
    lt_run(arr, 2, &f);
    double *w = kt_read_f64(f.w);
    int32_t *p = kt_read(f.piv), *info = kt_read(f.info);
    const char *dn = kiln_dtype_name(dt);
    CHECK(info[0] == LU_INFO_NONFINITE && info[1] == LU_INFO_NONFINITE &&
              info[3] == LU_INFO_NONFINITE,
          "%s: infos %d %d %d, not all %d", dn, info[0], info[1], info[3],
          LU_INFO_NONFINITE);
    CHECK(info[2] == 0, "%s: the finite matrix's info is %d", dn, info[2]);
    kt_la_lu_check("finite beside non-finite", 2, dt, m, n, a + 2 * m * n,
                   w + 2 * m * n, p + 2 * n);
    free(w);
    free(p);
    free(info);
    kiln__lu_free(&f);
    kiln_array_destroy(arr);
    free(a);
  }
}

/* lu_perm over several chunks of pivots (kiln__lu_perm_chunk_test 7 and
 * 64: ragged and whole chunks, the last one short), on both paths, tall,
 * wide and batched: every perm a permutation with A[perm] = L U. */
void test_linalg_lu_perm_chunks(void) {
  static const int chunks[2] = {7, 64};
  for (int c = 0; c < 2; c++) {
    kiln__lu_perm_chunk_test = chunks[c];
    lt_random_case(KILN_FLOAT32, 3, 150, 131, 2, true);
    lt_random_case(KILN_FLOAT64, 2, 90, 200, 2, true);
    lt_random_case(KILN_FLOAT64, 4, 40, 33, 1, true);
    kiln__lu_perm_chunk_test = 0;
  }
}
