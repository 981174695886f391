/*
 * The blocked Householder QR (kiln__qr_blocked, src/linalg/qr_blocked.c)
 * on the device under test: called directly, and through kiln_qr_ex with
 * opts.path = 3 once the public driver takes it.
 *
 * Inputs are fresh random matrices (uniform in [-1, 1]) or, for the
 * ill-conditioned cases, U diag(s) W^T with U, W products of random
 * Householder reflectors and s spread log-evenly down to 1/cond. Each
 * result is checked by its defining properties in float64 on the host:
 * the residual ||A - Q R||_F / (||A||_F max(m, n) eps), the orthogonality
 * ||Q^T Q - I||_F / (max(m, n) eps), R exactly zero below its diagonal
 * with a non-negative diagonal, and R against an independent float64
 * Householder QR written here (unique once the diagonal is non-negative).
 * Outputs start as NaN, so an element the code forgets fails the checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg_check.h"
#include "linalg/linalg.h"

/* Residual and orthogonality in units of max(m, n) eps. */
#define QB_THRESHOLD 10.0

static const kiln_dtype qb_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

static const char *qb_mode_name(kiln_qr_mode mode) {
  return mode == KILN_QR_REDUCED ? "reduced"
         : mode == KILN_QR_COMPLETE ? "complete"
                                    : "r";
}

/* ---- inputs -------------------------------------------------------------- */

static void qb_random(int64_t count, double *a) {
  for (int64_t i = 0; i < count; i++)
    a[i] = kt_uniform(-1, 1);
}

/* ---- the float64 reference ----------------------------------------------- */

/* R (k x n, k = min(m, n)) of the m x n matrix a by textbook Householder
 * QR in double, each row signed so that the diagonal is non-negative. */
static void qb_reference_r(int64_t m, int64_t n, const double *a,
                           double *r) {
  int64_t k = m < n ? m : n;
  double *x = kt_la_alloc(m * n), *v = kt_la_alloc(m);
  memcpy(x, a, (size_t)(m * n) * sizeof *x);
  for (int64_t j = 0; j < k; j++) {
    double norm = 0;
    for (int64_t i = j; i < m; i++)
      norm += x[i * n + j] * x[i * n + j];
    norm = sqrt(norm);
    if (norm == 0)
      continue;
    double alpha = x[j * n + j] >= 0 ? -norm : norm, vv = 0;
    for (int64_t i = j; i < m; i++) {
      v[i] = x[i * n + j] - (i == j ? alpha : 0);
      vv += v[i] * v[i];
    }
    for (int64_t c = j; c < n && vv > 0; c++) {
      double d = 0;
      for (int64_t i = j; i < m; i++)
        d += v[i] * x[i * n + c];
      for (int64_t i = j; i < m; i++)
        x[i * n + c] -= 2.0 * d * v[i] / vv;
    }
  }
  for (int64_t i = 0; i < k; i++) {
    double sign = x[i * n + i] < 0 ? -1.0 : 1.0;
    for (int64_t j = 0; j < n; j++)
      r[i * n + j] = j >= i ? sign * x[i * n + j] : 0.0;
  }
  free(x);
  free(v);
}

/* ---- checks -------------------------------------------------------------- */

/* What one call should produce and how strictly R is compared. */
typedef struct qb_expect {
  kiln_dtype dt;
  int64_t m, n;
  kiln_qr_mode mode;
  double r_tol; /* max |R - R_ref| / ||A||_F; 0: no comparison */
} qb_expect;

/* R: zeros below the diagonal (and in rows k and later), a non-negative
 * diagonal, every element finite; then against the reference. */
static void qb_check_r(const char *what, int64_t entry, const qb_expect *e,
                       const double *a, const double *r, int64_t rows) {
  int64_t m = e->m, n = e->n, k = m < n ? m : n;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = r[i * n + j];
      CHECK(isfinite(x), "%s, matrix %lld: R(%lld, %lld) is %g", what,
            (long long)entry, (long long)i, (long long)j, x);
      if (j < i || i >= k)
        CHECK(x == 0.0, "%s, matrix %lld: R(%lld, %lld) is %g, not 0", what,
              (long long)entry, (long long)i, (long long)j, x);
      if (j == i)
        CHECK(x >= 0.0, "%s, matrix %lld: R's diagonal %lld is %g", what,
              (long long)entry, (long long)i, x);
    }
  if (e->r_tol <= 0 || k == 0)
    return;
  double *ref = kt_la_alloc(k * n);
  qb_reference_r(m, n, a, ref);
  double worst = 0, na = kt_la_fro(a, m * n);
  for (int64_t i = 0; i < k * n; i++)
    worst = fmax(worst, fabs(r[i] - ref[i]));
  worst /= na > 0 ? na : 1;
  CHECK(worst <= e->r_tol, "%s, matrix %lld: max |R - R_ref| / ||A|| is "
        "%.3g (tolerance %.3g)", what, (long long)entry, worst, e->r_tol);
  free(ref);
}

/* ||A - Q R|| and ||Q^T Q - I|| for one matrix (Q m x c, R c x n). */
static void qb_check_q(const char *what, int64_t entry, const qb_expect *e,
                       const double *a, const double *q, const double *r,
                       int64_t c) {
  int64_t m = e->m, n = e->n, big = m > n ? m : n;
  double eps = kt_eps(e->dt), num = 0;
  for (int64_t i = 0; i < m * c; i++)
    CHECK(isfinite(q[i]), "%s, matrix %lld: Q element %lld is %g", what,
          (long long)entry, (long long)i, q[i]);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = a[i * n + j];
      for (int64_t l = 0; l < c; l++)
        s -= q[i * c + l] * r[l * n + j];
      num += s * s;
    }
  double na = kt_la_fro(a, m * n);
  double res = sqrt(num) / ((na > 0 ? na : 1) * (double)big * eps);
  CHECK(res < QB_THRESHOLD, "%s, matrix %lld: ||A - QR|| is %.3g ||A|| "
        "max(m,n) eps (threshold %g)", what, (long long)entry, res,
        QB_THRESHOLD);
  double orth = 0;
  for (int64_t i = 0; i < c; i++)
    for (int64_t j = 0; j < c; j++) {
      double s = i == j ? -1.0 : 0.0;
      for (int64_t l = 0; l < m; l++)
        s += q[l * c + i] * q[l * c + j];
      orth += s * s;
    }
  orth = sqrt(orth) / ((double)big * eps);
  CHECK(orth < QB_THRESHOLD, "%s, matrix %lld: ||Q^T Q - I|| is %.3g "
        "max(m,n) eps (threshold %g)", what, (long long)entry, orth,
        QB_THRESHOLD);
}

/* R only: R^T R must equal A^T A (a check independent of Q). */
static void qb_check_gram(const char *what, int64_t entry,
                          const qb_expect *e, const double *a,
                          const double *r) {
  int64_t m = e->m, n = e->n, k = m < n ? m : n, big = m > n ? m : n;
  double na = kt_la_fro(a, m * n);
  double err = kt_la_gram_diff(a, r, m, n, k) /
               ((na > 0 ? na * na : 1) * (double)big * kt_eps(e->dt));
  CHECK(err < QB_THRESHOLD, "%s, matrix %lld: ||A^T A - R^T R|| is %.3g "
        "||A||^2 max(m,n) eps (threshold %g)", what, (long long)entry, err,
        QB_THRESHOLD);
}

/* New NaN-filled arrays for Q and R of `arr`'s batch and the mode. */
static void qb_outputs(kiln_array *arr, kiln_qr_mode mode, kiln_array **q,
                       kiln_array **r) {
  int nd = kiln_array_ndim(arr);
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, kiln_array_shape(arr), (size_t)nd * sizeof *shape);
  int64_t m = shape[nd - 2], n = shape[nd - 1], k = m < n ? m : n;
  int64_t c = mode == KILN_QR_COMPLETE ? m : k;
  kiln_dtype dt = kiln_array_dtype(arr);
  shape[nd - 2] = c;
  CHECK_OK(kiln_array_create(kt_device(), dt, nd, shape, r));
  CHECK_OK(kiln_array_fill(*r, NAN, NULL));
  *q = NULL;
  if (mode != KILN_QR_R) {
    shape[nd - 2] = m;
    shape[nd - 1] = c;
    CHECK_OK(kiln_array_create(kt_device(), dt, nd, shape, q));
    CHECK_OK(kiln_array_fill(*q, NAN, NULL));
  }
}

/* Checks every matrix of the results q (or NULL) and r against `a`. */
static void qb_check_all(const char *what, const qb_expect *e, int64_t batch,
                         const double *a, kiln_array *q, kiln_array *r) {
  int64_t m = e->m, n = e->n, k = m < n ? m : n;
  int64_t c = e->mode == KILN_QR_COMPLETE ? m : k;
  double *rv = kt_read_f64(r);
  double *qv = q != NULL ? kt_read_f64(q) : NULL;
  for (int64_t b = 0; b < batch; b++) {
    const double *ab = a + b * m * n, *rb = rv + b * c * n;
    qb_check_r(what, b, e, ab, rb, c);
    if (qv != NULL)
      qb_check_q(what, b, e, ab, qv + b * m * c, rb, c);
    else
      qb_check_gram(what, b, e, ab, rb);
  }
  free(rv);
  free(qv);
}

/* The panel factorization the checks below force (KILN__QRB_PANEL_*). */
static int qb_panel = KILN__QRB_PANEL_AUTO;

/* Factors `arr` (logical values `a`: batch matrices of m x n) with
 * kiln__qr_blocked_ex in `mode` and checks the results. */
static void qb_factor_check(const char *what, kiln_array *arr,
                            const double *a, int64_t batch,
                            const qb_expect *e) {
  kiln_array *q = NULL, *r = NULL;
  qb_outputs(arr, e->mode, &q, &r);
  CHECK_OK(kiln__qr_blocked_ex(kt_stream(), arr, e->mode, q, r, qb_panel));
  qb_check_all(what, e, batch, a, q, r);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
}

/* An m x n matrix of condition 1e6 (float32) or 1e12 (float64), factored
 * in each of the first `modes` QR modes (1: reduced only) and checked;
 * `what` names the case, with the mode appended. */
static void qb_ill_case(const char *what, kiln_dtype dt, int64_t m,
                        int64_t n, int modes) {
  int64_t shape[2] = {m, n};
  double *a = kt_la_alloc(m * n);
  kt_la_ill(m, n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a);
  kiln_array *arr = kt_la_array(dt, 2, shape, a);
  for (int mode = 0; mode < modes; mode++) {
    qb_expect e = {dt, m, n, (kiln_qr_mode)mode, 0};
    char full[160];
    snprintf(full, sizeof full, "%s %s ill-conditioned %lld x %lld %s", what,
             kiln_dtype_name(dt), (long long)m, (long long)n,
             qb_mode_name(e.mode));
    qb_factor_check(full, arr, a, 1, &e);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* R's tolerance for random inputs, whose condition numbers stay modest:
 * 100 eps relative to ||A||_F (both paths and the reference agree to a few
 * eps in practice). */
static double qb_r_tol(kiln_dtype dt) { return 100.0 * kt_eps(dt); }

/* `batch` random m x n matrices (batch dimensions `bdims`, none for a
 * plain matrix), factored in each of the modes and checked. */
static void qb_random_case(kiln_dtype dt, int nb, const int64_t *bdims,
                           int64_t m, int64_t n, unsigned modes) {
  int64_t shape[KILN_MAX_NDIM], batch = 1;
  for (int d = 0; d < nb; d++) {
    shape[d] = bdims[d];
    batch *= bdims[d];
  }
  shape[nb] = m;
  shape[nb + 1] = n;
  double *a = kt_la_alloc(batch * m * n);
  qb_random(batch * m * n, a);
  kiln_array *arr = kt_la_array(dt, nb + 2, shape, a);
  for (int mode = 0; mode < 3; mode++) {
    if (!(modes & (1u << mode)))
      continue;
    qb_expect e = {dt, m, n, (kiln_qr_mode)mode, qb_r_tol(dt)};
    char what[128];
    snprintf(what, sizeof what, "%s %lld x (%lld x %lld) %s",
             kiln_dtype_name(dt), (long long)batch, (long long)m,
             (long long)n, qb_mode_name(e.mode));
    qb_factor_check(what, arr, a, batch, &e);
  }
  kiln_array_destroy(arr);
  free(a);
}

#define QB_ALL 7u
#define QB_REDUCED 1u
#define QB_COMPLETE 2u
#define QB_RONLY 4u

/* ---- tests --------------------------------------------------------------- */

/* Square, several panels and a partial last one (float32 NB 64, float64
 * NB 32). */
void test_linalg_qr_blocked_square(void) {
  for (int d = 0; d < 2; d++) {
    qb_random_case(qb_dtypes[d], 0, NULL, 200, 200, QB_REDUCED | QB_RONLY);
    qb_random_case(qb_dtypes[d], 0, NULL, 257, 257, QB_COMPLETE);
  }
}

/* Tall (complete mode: Q is 600 x 600) and wide. */
void test_linalg_qr_blocked_tall_wide(void) {
  for (int d = 0; d < 2; d++) {
    qb_random_case(qb_dtypes[d], 0, NULL, 600, 130, QB_ALL);
    qb_random_case(qb_dtypes[d], 0, NULL, 100, 300, QB_ALL);
  }
}

/* A batch of 3 and two batch dimensions (2 x 2), every launch covering
 * the batch. */
void test_linalg_qr_blocked_batched(void) {
  int64_t b3[1] = {3}, b22[2] = {2, 2};
  for (int d = 0; d < 2; d++) {
    qb_random_case(qb_dtypes[d], 1, b3, 150, 140, QB_REDUCED | QB_RONLY);
    qb_random_case(qb_dtypes[d], 2, b22, 40, 70, QB_ALL);
    qb_random_case(qb_dtypes[d], 2, b22, 70, 33, QB_COMPLETE);
  }
}

/* Panel edges (widths around NB), 1 x 1, single rows and columns. */
void test_linalg_qr_blocked_small(void) {
  static const int64_t shapes[][2] = {{1, 1}, {1, 5},  {5, 1},  {2, 2},
                                      {31, 32}, {64, 64}, {65, 65},
                                      {70, 63}, {33, 97}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      qb_random_case(qb_dtypes[d], 0, NULL, shapes[s][0], shapes[s][1],
                     QB_ALL);
}

/* Every panel factorization forced on the same shapes: one threadgroup
 * per matrix, TSQR and CholeskyQR (auto takes it from 256 rows), both with
 * Householder reconstruction, including panels as tall as they are wide
 * (wide matrices' last panels), split-K products (600 rows), a batch, and
 * outer blocks (NB * QRB_NBO_MULT columns) of one panel and of several. */
void test_linalg_qr_blocked_panels(void) {
  static const char *ill[4] = {"", "one-group panel:", "TSQR panel:",
                               "CholeskyQR panel:"};
  int64_t b2[1] = {2};
  for (int panel = 1; panel <= 3; panel++) {
    qb_panel = panel;
    for (int d = 0; d < 2; d++) {
      qb_random_case(qb_dtypes[d], 0, NULL, 600, 100, QB_REDUCED);
      qb_random_case(qb_dtypes[d], 0, NULL, 70, 150, QB_ALL);
      qb_random_case(qb_dtypes[d], 1, b2, 130, 97, QB_COMPLETE | QB_RONLY);
    }
    /* two outer blocks in float32 (NBO 256), the second of two panels */
    qb_random_case(KILN_FLOAT32, 0, NULL, 340, 330, QB_REDUCED);
    for (int d = 0; d < 2; d++) /* ill-conditioned panels */
      qb_ill_case(ill[panel], qb_dtypes[d], 300, 80, 1);
  }
  qb_panel = KILN__QRB_PANEL_AUTO;
}

/* Two or three outer blocks (float32 NBO 256, float64 128): trailing
 * updates by whole outer blocks and Q accumulated over several, square
 * with a partial last block, wide with columns beyond the last block, a
 * batch, and ill-conditioned matrices. */
void test_linalg_qr_blocked_outer(void) {
  int64_t b2[1] = {2};
  qb_random_case(KILN_FLOAT32, 0, NULL, 600, 600, QB_REDUCED | QB_RONLY);
  qb_random_case(KILN_FLOAT64, 0, NULL, 300, 300, QB_ALL);
  qb_random_case(KILN_FLOAT64, 0, NULL, 200, 450, QB_ALL);
  qb_random_case(KILN_FLOAT64, 1, b2, 290, 270, QB_REDUCED);
  for (int d = 0; d < 2; d++)
    qb_ill_case("outer blocks:", qb_dtypes[d], 420, 300, 1);
}

/* Empty shapes: nothing to factor, but a complete Q of an m x 0 matrix is
 * the identity, and every output is fully written. */
void test_linalg_qr_blocked_empty(void) {
  static const int64_t shapes[][3] = {{1, 0, 4}, {1, 4, 0}, {0, 5, 3},
                                      {2, 3, 0}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (int mode = 0; mode < 3; mode++) {
      int64_t batch = shapes[s][0], m = shapes[s][1], n = shapes[s][2];
      int64_t shape[3] = {batch, m, n};
      kiln_array *arr = NULL, *q = NULL, *r = NULL;
      CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 3, shape, &arr));
      qb_outputs(arr, (kiln_qr_mode)mode, &q, &r);
      CHECK_OK(kiln__qr_blocked(kt_stream(), arr, (kiln_qr_mode)mode, q, r));
      CHECK(kiln_array_size(r) == 0 ||
                (mode == KILN_QR_COMPLETE && n == 0),
            "an empty case has an empty R");
      if (q != NULL && kiln_array_size(q) > 0) {
        double *qv = kt_read_f64(q);
        for (int64_t b = 0; b < batch; b++)
          for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < m; j++)
              CHECK(qv[(b * m + i) * m + j] == (i == j ? 1.0 : 0.0),
                    "complete Q of a %lld x 0 matrix: (%lld, %lld) is %g",
                    (long long)m, (long long)i, (long long)j,
                    qv[(b * m + i) * m + j]);
        free(qv);
      }
      kiln_array_destroy(arr);
      kiln_array_destroy(q);
      kiln_array_destroy(r);
    }
}

/* Condition 1e6 in float32 and 1e12 in float64: the residual and the
 * orthogonality stay at working precision (Householder QR is backward
 * stable), R's diagonal non-negative. R is not compared: it is only as
 * well determined as A's conditioning allows. */
void test_linalg_qr_blocked_ill_conditioned(void) {
  static const int64_t shapes[][2] = {{160, 120}, {130, 130}, {90, 150}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      qb_ill_case("", qb_dtypes[d], shapes[s][0], shapes[s][1], 3);
}

/* A = B C (m x n) with B m x rank and C rank x n random: rank-deficient
 * with every column nonzero. */
static void qb_low_rank(int64_t m, int64_t n, int64_t rank, double *a) {
  double *b = kt_la_alloc(m * rank), *c = kt_la_alloc(rank * n);
  qb_random(m * rank, b);
  qb_random(rank * n, c);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t l = 0; l < rank; l++)
        s += b[i * rank + l] * c[l * n + j];
      a[i * n + j] = s;
    }
  free(b);
  free(c);
}

/* Rank-deficient matrices, where CholeskyQR breaks down on the later
 * panels (numerically or exactly zero after the first ones) and its TSQR
 * fallback must take over on the device: rank 20 of 150 columns, and a
 * matrix whose columns 64 to 127 are zero (an exactly zero panel) and
 * whose column 130 repeats column 3. Q must still be orthonormal and A =
 * QR; R is not compared (the trailing rows are rounding noise). Every
 * panel choice, auto included. */
void test_linalg_qr_blocked_rank_deficient(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qb_dtypes[d];
    int64_t m = 320, n = 150, shape[2] = {320, 150};
    double *lr = kt_la_alloc(m * n), *z = kt_la_alloc(m * n);
    qb_low_rank(m, n, 20, lr);
    qb_random(m * n, z);
    for (int64_t i = 0; i < m; i++) {
      for (int64_t j = 64; j < 128; j++)
        z[i * n + j] = 0;
      z[i * n + 130] = z[i * n + 3];
    }
    kiln_array *alr = kt_la_array(dt, 2, shape, lr);
    kiln_array *az = kt_la_array(dt, 2, shape, z);
    for (int panel = 0; panel <= 3; panel++) {
      qb_panel = panel;
      for (int mode = 0; mode < 3; mode += 2) {
        qb_expect e = {dt, m, n, (kiln_qr_mode)mode, 0};
        char what[128];
        snprintf(what, sizeof what, "%s rank 20, panel %d, %s",
                 kiln_dtype_name(dt), panel, qb_mode_name(e.mode));
        qb_factor_check(what, alr, lr, 1, &e);
        snprintf(what, sizeof what, "%s zero panel, panel %d, %s",
                 kiln_dtype_name(dt), panel, qb_mode_name(e.mode));
        qb_factor_check(what, az, z, 1, &e);
      }
    }
    qb_panel = KILN__QRB_PANEL_AUTO;
    kiln_array_destroy(alr);
    kiln_array_destroy(az);
    free(lr);
    free(z);
  }
}

/* Strided views: every other column of a wider matrix in every other
 * batch entry, and a transposed view. */
void test_linalg_qr_blocked_strided(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qb_dtypes[d];
    int64_t m = 90, n = 70, batch = 2;
    /* the odd columns of the even batch entries of a wider array */
    double *a = kt_la_alloc(batch * m * n);
    kiln_array *owner = NULL, *v = NULL;
    kt_la_sliced(dt, batch, m, n, 1, a, &owner, &v);
    for (int mode = 0; mode < 3; mode++) {
      qb_expect e = {dt, m, n, (kiln_qr_mode)mode, qb_r_tol(dt)};
      char what[128];
      snprintf(what, sizeof what, "%s sliced view %s", kiln_dtype_name(dt),
               qb_mode_name(e.mode));
      qb_factor_check(what, v, a, batch, &e);
    }
    /* the transpose of a stored 70 x 90 matrix is a 90 x 70 view */
    double *at = kt_la_alloc(m * n);
    kiln_array *tarr = NULL, *tv = NULL;
    kt_la_transposed(dt, m, n, at, &tarr, &tv);
    qb_expect e = {dt, m, n, KILN_QR_REDUCED, qb_r_tol(dt)};
    qb_factor_check(dt == KILN_FLOAT32 ? "float32 transposed view"
                                       : "float64 transposed view",
                    tv, at, 1, &e);
    kiln_array_destroy(tv);
    kiln_array_destroy(tarr);
    kiln_array_destroy(v);
    kiln_array_destroy(owner);
    free(a);
    free(at);
  }
}

/* A NaN in A propagates to the results instead of being hidden. */
void test_linalg_qr_blocked_nan(void) {
  int64_t m = 80, n = 70, shape[2] = {80, 70};
  double *a = kt_la_alloc(m * n);
  qb_random(m * n, a);
  a[5 * n + 3] = NAN;
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
  kiln_array *q = NULL, *r = NULL;
  qb_outputs(arr, KILN_QR_REDUCED, &q, &r);
  CHECK_OK(kiln__qr_blocked(kt_stream(), arr, KILN_QR_REDUCED, q, r));
  double *rv = kt_read_f64(r);
  bool found = false;
  for (int64_t i = 0; i < n * n && !found; i++)
    found = isnan(rv[i]);
  CHECK(found, "a NaN in A left no NaN in R");
  free(rv);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
  kiln_array_destroy(arr);
  free(a);
}

/* The internal contract's checks: a dtype QR does not take, and outputs
 * of the wrong shape, are refused before anything runs. */
void test_linalg_qr_blocked_errors(void) {
  int64_t s45[2] = {4, 5}, s44[2] = {4, 4}, s55[2] = {5, 5};
  kiln_array *ints = NULL, *a = NULL, *q = NULL, *r = NULL, *bad = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 2, s45, &ints));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s45, &a));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s44, &q));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s45, &r));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s55, &bad));
  CHECK_STATUS(kiln__qr_blocked(kt_stream(), ints, KILN_QR_REDUCED, q, r),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("int32");
  CHECK_STATUS(kiln__qr_blocked(kt_stream(), a, KILN_QR_REDUCED, q, bad),
               KILN_ERROR_INTERNAL);
  CHECK_ERR_HAS("R is not");
  CHECK_STATUS(kiln__qr_blocked(kt_stream(), a, KILN_QR_REDUCED, bad, r),
               KILN_ERROR_INTERNAL);
  CHECK_ERR_HAS("Q is not");
  CHECK_STATUS(kiln__qr_blocked(kt_stream(), a, KILN_QR_R, q, r),
               KILN_ERROR_INTERNAL);
  CHECK_STATUS(kiln__qr_blocked_ex(kt_stream(), a, KILN_QR_REDUCED, q, r, 4),
               KILN_ERROR_INTERNAL);
  CHECK_ERR_HAS("panel 4");
  CHECK_OK(kiln__qr_blocked(kt_stream(), a, KILN_QR_REDUCED, q, r));
  kiln_array_destroy(ints);
  kiln_array_destroy(a);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
  kiln_array_destroy(bad);
}

/* The same path through the public call, once kiln_qr_ex routes path 3
 * here: a batch of wide matrices and a tall one in every mode. */
void test_linalg_qr_blocked_public(void) {
  int64_t m = 50, n = 120, batch = 2, shape[3] = {2, 50, 120};
  double *a = kt_la_alloc(batch * m * n);
  qb_random(batch * m * n, a);
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 3, shape, a);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 3;
  for (int mode = 0; mode < 3; mode++) {
    kiln_array *q = NULL, *r = NULL;
    kiln_status st = kiln_qr_ex(arr, (kiln_qr_mode)mode, &o,
                                mode == KILN_QR_R ? NULL : &q, &r);
    if (st == KILN_ERROR_UNSUPPORTED &&
        strstr(kiln_last_error(), "not implemented"))
      kt_skip("kiln_qr_ex is not implemented yet");
    CHECK_OK(st);
    qb_expect e = {KILN_FLOAT32, m, n, (kiln_qr_mode)mode,
                   qb_r_tol(KILN_FLOAT32)};
    char what[64];
    snprintf(what, sizeof what, "kiln_qr_ex path 3 %s", qb_mode_name(mode));
    qb_check_all(what, &e, batch, a, q, r);
    kiln_array_destroy(q);
    kiln_array_destroy(r);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* ---- Householder reconstruction (qrb_recon) ------------------------------ */

/* `batch` m x n matrices whose first n rows are uniform in [-1, 1] and
 * whose other rows are 100 times smaller, so each panel's Q has a large
 * top block (pivots 1 + |m_ii| across their range, U^-1 and Y1^-1 far
 * from the identity) and the vectors below it are small. */
static void qb_top_heavy(int64_t batch, int64_t m, int64_t n, double *a) {
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[(b * m + i) * n + j] = kt_uniform(-1, 1) * (i < n ? 1.0 : 0.01);
}

/* Panels reconstructed from CholeskyQR and from TSQR, on last panels of
 * every width class the kernel's registers see (jb = 1, QW - 1, QW,
 * QW + 1, NB - 1 and NB, with QW = NB / 4 columns a thread: float32 NB
 * 64, float64 NB 32), random and top-heavy matrices, a batch of 3 (one
 * threadgroup each, along grid.y), reduced and complete Q; R against the
 * float64 reference. */
void test_linalg_qr_blocked_recon(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qb_dtypes[d];
    int64_t nb = dt == KILN_FLOAT64 ? 32 : 64, qw = nb / 4;
    int64_t widths[6] = {1, qw - 1, qw, qw + 1, nb - 1, nb};
    for (int w = 0; w < 6; w++) {
      int64_t m = 200, n = nb + widths[w], batch = w % 2 ? 3 : 1;
      int64_t shape[3] = {batch, m, n};
      double *a = kt_la_alloc(batch * m * n);
      bool heavy = w % 3 != 0;
      if (heavy)
        qb_top_heavy(batch, m, n, a);
      else
        qb_random(batch * m * n, a);
      kiln_array *arr = kt_la_array(dt, 3, shape, a);
      for (int panel = 2; panel <= 3; panel++) {
        qb_panel = panel;
        for (int mode = 0; mode < 2; mode++) {
          qb_expect e = {dt, m, n, (kiln_qr_mode)mode, qb_r_tol(dt)};
          char what[160];
          snprintf(what, sizeof what, "%s %s %lld x (%lld x %lld), last "
                   "panel %lld wide, %s panels, %s", kiln_dtype_name(dt),
                   heavy ? "top-heavy" : "random", (long long)batch,
                   (long long)m, (long long)n, (long long)widths[w],
                   panel == 2 ? "TSQR" : "CholeskyQR", qb_mode_name(e.mode));
          qb_factor_check(what, arr, a, batch, &e);
        }
      }
      qb_panel = KILN__QRB_PANEL_AUTO;
      kiln_array_destroy(arr);
      free(a);
    }
  }
}

/* ---- every kernel the driver launches, compiled for a CUDA target ------- */

/* Compiles kernel `name` of kernels/qr_blocked.metal for `target`;
 * `ranks` gives each input's rank in order, 0 for an int32 scalar (the
 * others are of dtype dt). Outputs are rank 3. */
static void qb_compile(const char *name, const char *inputs,
                       const char *outputs, kiln_dtype dt, const int *ranks,
                       const kiln_template_arg *t, int nt,
                       const char *target) {
  int num_in = 1, num_out = 1;
  for (const char *c = inputs; *c; c++)
    num_in += *c == ',';
  for (const char *c = outputs; *c; c++)
    num_out += *c == ',';
  kiln_array_spec in[5];
  memset(in, 0, sizeof in);
  for (int i = 0; i < num_in; i++) {
    in[i].dtype = ranks[i] == 0 ? KILN_INT32 : dt;
    in[i].ndim = ranks[i];
  }
  kiln_output_spec out[4];
  memset(out, 0, sizeof out);
  for (int i = 0; i < 4; i++) {
    out[i].dtype = dt;
    out[i].ndim = 3;
  }
  /* registers only: a dynamically indexed per-thread array (qrb_recon
   * keeps three in registers) would land in local memory */
  kt_la_kernel k = {.family = "qr_blocked", .name = name, .inputs = inputs,
                    .outputs = outputs, .flags = KILN__LIB_NO_ROW_CONTIG,
                    .num_inputs = num_in, .num_outputs = num_out, .in = in,
                    .out = out, .targs = t, .num_targs = nt,
                    .forbid_local = true};
  kt_la_compile(&k, target);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch for that target; skipped otherwise. */
void test_linalg_qr_blocked_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qb_dtypes[d];
    kiln_template_arg t[2];
    kiln__targ_dtype(&t[0], "T", dt);
    kiln__targ_int(&t[1], "NB", dt == KILN_FLOAT64 ? 32 : 64);
    /* A arrives as the caller's view, of any rank; W is always 3-D */
    for (int rank = 2; rank <= 4; rank++) {
      int r[2] = {rank, 0};
      qb_compile("qrb_copy", "A,batch0", "W", dt, r, t, 1, target);
    }
    static const int w3[3] = {3, 0, 0}, sum[3] = {4, 3, 0};
    static const int recon[5] = {3, 3, 3, 0, 0}, tinit[4] = {3, 3, 0, 0};
    qb_compile("qrb_panel", "Win,j0,batch0", "W,Y,Tm", dt, w3, t, 2, target);
    qb_compile("qrb_r", "Win,rows,batch0", "R", dt, w3, t, 1, target);
    qb_compile("qrb_qinit", "Win,cols,batch0", "Q", dt, w3, t, 1, target);
    qb_compile("qrb_sum", "P,Xin,batch0", "X", dt, sum, t, 1, target);
    qb_compile("qrb_recon", "Qp,Rp,Win,j0,batch0", "W,Y,Tm,Ui", dt, recon,
               t, 2, target);
    qb_compile("qrb_tinit", "Tmin,Toin,j0,batch0", "To", dt, tinit, t, 1,
               target);
  }
}
