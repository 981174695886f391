/*
 * QR (kiln_qr, kiln_qr_ex, and TSQR's kiln__qr_tsqr) on the device under
 * test.
 *
 * Inputs are fresh random matrices, or, for the ill-conditioned cases,
 * U diag(s) V^T with U, V products of random reflectors and s spread
 * log-evenly down to 1/cond. Every factorization is checked by
 *   - its backward error ||A - Q R||_F / (||A||_F max(m, n) eps),
 *   - Q's orthogonality ||Q^T Q - I||_F / (max(m, n) eps),
 *   - R's shape: exact zeros below the diagonal, a non-negative diagonal,
 *   - R against a float64 host Householder QR written here (with a
 *     non-negative diagonal, the QR of a full-rank matrix is unique), for
 *     the well-conditioned inputs,
 * with the result buffers poisoned (the device's allocator cache is filled
 * with NaN blocks of the results' sizes first), so an element the kernels
 * forgot to write shows up as NaN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/cholqr.h"
#include "linalg/linalg.h"
#include "linalg_check.h"

/* Backward error and orthogonality below this many units of
 * max(m, n) eps pass (Householder QR and TSQR give O(1)). */
#define QT_THRESHOLD 10.0
/* R against the float64 reference, relative to ||A||_F, in units of
 * max(m, n) eps: R's sensitivity grows with the conditioning of the random
 * inputs (square ones reach a few hundred), hence the margin. */
#define QT_R_THRESHOLD 3000.0

static const kiln_dtype qt_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

static int64_t qt_max(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t qt_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- inputs ------------------------------------------------------------ */

/* a (m x n) = random values in [-1, 1]. */
static void qt_random(int64_t m, int64_t n, double *a) {
  for (int64_t i = 0; i < m * n; i++)
    a[i] = kt_uniform(-1, 1);
}

/* Fills the device's allocator cache with NaN blocks of `count` elements
 * each, so that the next arrays of those sizes start poisoned. */
static void qt_poison(kiln_dtype dt, int64_t count1, int64_t count2) {
  int64_t counts[2] = {count1, count2};
  kiln_array *p[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++) {
    if (counts[i] <= 0)
      continue;
    int64_t shape[1] = {counts[i]};
    CHECK_OK(kiln_array_create(kt_device(), dt, 1, shape, &p[i]));
    CHECK_OK(kiln_array_fill(p[i], NAN, NULL));
  }
  CHECK_OK(kiln_stream_synchronize(kt_stream()));
  kt_destroy_all(p, 2);
}

/* ---- the reference and the checks ---------------------------------------- */

/*
 * R of a (m x n) by Householder QR in double (LAPACK's geqr2 without the
 * vectors), rows made non-negative on the diagonal: k x n into r.
 */
static void qt_ref_r(int64_t m, int64_t n, const double *a, double *r) {
  double *w = kt_la_alloc(m * n), *v = kt_la_alloc(m);
  memcpy(w, a, (size_t)(m * n) * sizeof *w);
  int64_t k = qt_min(m, n);
  for (int64_t j = 0; j < k; j++) {
    double norm = 0;
    for (int64_t i = j; i < m; i++)
      norm = hypot(norm, w[i * n + j]);
    if (norm == 0)
      continue;
    double alpha = w[j * n + j];
    double beta = alpha > 0 ? -norm : norm;
    for (int64_t i = j; i < m; i++)
      v[i] = w[i * n + j];
    v[j] -= beta; /* v = x - beta e1, H = I - 2 v v^T / v^T v */
    double vv = 0;
    for (int64_t i = j; i < m; i++)
      vv += v[i] * v[i];
    for (int64_t c = j; c < n; c++) {
      double d = 0;
      for (int64_t i = j; i < m; i++)
        d += v[i] * w[i * n + c];
      for (int64_t i = j; i < m; i++)
        w[i * n + c] -= 2.0 * d * v[i] / vv;
    }
  }
  for (int64_t i = 0; i < k; i++) {
    double sg = w[i * n + i] < 0 ? -1.0 : 1.0;
    for (int64_t c = 0; c < n; c++)
      r[i * n + c] = c < i ? 0.0 : sg * w[i * n + c];
  }
  free(w);
  free(v);
}

/* What one factorization is checked against. */
typedef struct qt_case {
  const char *what;
  kiln_dtype dt;
  kiln_qr_mode mode;
  int64_t m, n;
  bool compare_r; /* against the host reference (well conditioned) */
} qt_case;

/* Checks one matrix: a (m x n), q (m x qc, or NULL), r (rr x n). */
static void qt_check_one(const qt_case *c, int64_t entry, const double *a,
                         const double *q, const double *r) {
  int64_t m = c->m, n = c->n, k = qt_min(m, n);
  bool complete = c->mode == KILN_QR_COMPLETE;
  int64_t qc = complete ? m : k, rr = complete ? m : k;
  double eps = kt_eps(c->dt), scale = (double)qt_max(qt_max(m, n), 1) * eps;
  for (int64_t i = 0; i < rr; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = r[i * n + j];
      CHECK(isfinite(x), "%s, matrix %lld: R(%lld, %lld) is %g", c->what,
            (long long)entry, (long long)i, (long long)j, x);
      CHECK(j >= i || x == 0.0, "%s, matrix %lld: R(%lld, %lld) = %g below "
            "the diagonal", c->what, (long long)entry, (long long)i,
            (long long)j, x);
      CHECK(j != i || x >= 0.0, "%s, matrix %lld: R's diagonal %lld is %g",
            c->what, (long long)entry, (long long)i, x);
    }
  double anorm = 0;
  for (int64_t i = 0; i < m * n; i++)
    anorm += a[i] * a[i];
  anorm = sqrt(anorm);
  if (q != NULL) {
    for (int64_t i = 0; i < m * qc; i++)
      CHECK(isfinite(q[i]), "%s, matrix %lld: Q element %lld is %g",
            c->what, (long long)entry, (long long)i, q[i]);
    double res = 0, orth = 0;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t p = 0; p < qt_min(qc, rr); p++)
          s += q[i * qc + p] * r[p * n + j];
        res += (s - a[i * n + j]) * (s - a[i * n + j]);
      }
    for (int64_t i = 0; i < qc; i++)
      for (int64_t j = 0; j < qc; j++) {
        double s = i == j ? -1.0 : 0.0;
        for (int64_t p = 0; p < m; p++)
          s += q[p * qc + i] * q[p * qc + j];
        orth += s * s;
      }
    double e_res = anorm > 0 ? sqrt(res) / (anorm * scale) : sqrt(res);
    double e_orth = sqrt(orth) / scale;
    CHECK(e_res < QT_THRESHOLD, "%s, matrix %lld: ||A - QR|| is %.3g "
          "max(m,n) eps ||A|| (threshold %g)", c->what, (long long)entry,
          e_res, QT_THRESHOLD);
    CHECK(e_orth < QT_THRESHOLD, "%s, matrix %lld: ||Q^T Q - I|| is %.3g "
          "max(m,n) eps (threshold %g)", c->what, (long long)entry, e_orth,
          QT_THRESHOLD);
  }
  if (!c->compare_r || k == 0)
    return;
  double *ref = kt_la_alloc(k * n), diff = 0;
  qt_ref_r(m, n, a, ref);
  for (int64_t i = 0; i < k * n; i++)
    diff += (r[i] - ref[i]) * (r[i] - ref[i]);
  for (int64_t i = k * n; i < rr * n; i++) /* complete: zero rows */
    CHECK(r[i] == 0.0, "%s, matrix %lld: R row %lld is not zero", c->what,
          (long long)entry, (long long)(i / n));
  double e_r = sqrt(diff) / (anorm * scale);
  CHECK(e_r < QT_R_THRESHOLD, "%s, matrix %lld: R differs from the float64 "
        "reference by %.3g max(m,n) eps ||A|| (threshold %g)", c->what,
        (long long)entry, e_r, QT_R_THRESHOLD);
  free(ref);
}

/* Checks the shapes of the results against A's (batch dims + m x n). */
static void qt_check_shapes(const qt_case *c, kiln_array *arr, kiln_array *q,
                            kiln_array *r) {
  int nd = kiln_array_ndim(arr);
  const int64_t *as = kiln_array_shape(arr);
  int64_t k = qt_min(c->m, c->n);
  bool complete = c->mode == KILN_QR_COMPLETE;
  kiln_array *outs[2] = {q, r};
  int64_t last[2][2] = {{c->m, complete ? c->m : k},
                        {complete ? c->m : k, c->n}};
  for (int o = 0; o < 2; o++) {
    if (outs[o] == NULL)
      continue;
    CHECK(kiln_array_ndim(outs[o]) == nd &&
              kiln_array_dtype(outs[o]) == c->dt,
          "%s: %s has the wrong rank or dtype", c->what, o ? "R" : "Q");
    const int64_t *s = kiln_array_shape(outs[o]);
    for (int d = 0; d < nd - 2; d++)
      CHECK(s[d] == as[d], "%s: %s's batch dimension %d is %lld", c->what,
            o ? "R" : "Q", d, (long long)s[d]);
    CHECK(s[nd - 2] == last[o][0] && s[nd - 1] == last[o][1],
          "%s: %s is %lld x %lld, expected %lld x %lld", c->what,
          o ? "R" : "Q", (long long)s[nd - 2], (long long)s[nd - 1],
          (long long)last[o][0], (long long)last[o][1]);
  }
}

/*
 * Factors `arr` (logical values `a`: batch matrices of m x n) with kiln_qr_ex
 * and checks every matrix.
 */
static void qt_factor_check(const qt_case *c, kiln_array *arr,
                            const double *a, int64_t batch, int path) {
  int64_t m = c->m, n = c->n, k = qt_min(m, n);
  bool complete = c->mode == KILN_QR_COMPLETE;
  int64_t qc = complete ? m : k, rr = complete ? m : k;
  bool want_q = c->mode != KILN_QR_R;
  qt_poison(c->dt, want_q ? batch * m * qc : 0, batch * rr * n);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln_array *q = NULL, *r = NULL;
  CHECK_OK(kiln_qr_ex(arr, c->mode, &o, want_q ? &q : NULL, &r));
  CHECK(r != NULL && (q != NULL) == want_q, "%s: missing results", c->what);
  qt_check_shapes(c, arr, q, r);
  double *qv = want_q ? kt_read_f64(q) : NULL, *rv = kt_read_f64(r);
  for (int64_t b = 0; b < batch; b++)
    qt_check_one(c, b, a + b * m * n, qv ? qv + b * m * qc : NULL,
                 rv + b * rr * n);
  free(qv);
  free(rv);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
}

static const char *qt_mode_name(kiln_qr_mode mode) {
  return mode == KILN_QR_REDUCED ? "reduced"
         : mode == KILN_QR_COMPLETE ? "complete"
                                    : "R only";
}

static void qt_cholqr_direct(const qt_case *c, kiln_array *arr,
                             const double *a, int64_t batch,
                             const int *flags);

/* batch m x n matrices (ndim 2 when batch == 1), random, or of condition
 * number `cond` (one matrix, kt_la_ill) when cond > 0, every mode given in
 * `modes` (bit i: mode i), through `path`; with `direct` (path 4) also
 * through kiln__qr_cholqr itself (qt_cholqr_direct). R is compared with
 * the host reference only for random matrices (an ill-conditioned R is
 * only as well determined as A). */
static void qt_modes_case(kiln_dtype dt, int64_t batch, int64_t m,
                          int64_t n, unsigned modes, int path, bool direct,
                          double cond) {
  double *a = kt_la_alloc(batch * m * n);
  if (cond > 0)
    kt_la_ill(m, n, cond, a);
  else
    qt_random(batch * m, n, a);
  int64_t shape[3] = {batch, m, n};
  int ndim = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
  for (int mode = 0; mode < 3; mode++) {
    if (!(modes >> mode & 1u))
      continue;
    char what[128], how[16];
    if (direct)
      snprintf(how, sizeof how, "CholeskyQR");
    else
      snprintf(how, sizeof how, "path %d", path);
    snprintf(what, sizeof what, "%s%s %lld x %lld x %lld %s %s",
             kiln_dtype_name(dt), cond > 0 ? " ill-conditioned" : "",
             (long long)batch, (long long)m, (long long)n,
             qt_mode_name((kiln_qr_mode)mode), how);
    qt_case c = {what, dt, (kiln_qr_mode)mode, m, n, cond <= 0};
    if (direct)
      qt_cholqr_direct(&c, arr, a, batch, NULL);
    qt_factor_check(&c, arr, a, batch, path);
  }
  kiln_array_destroy(arr);
  free(a);
}

static void qt_random_case(kiln_dtype dt, int64_t batch, int64_t m,
                           int64_t n, unsigned modes, int path) {
  qt_modes_case(dt, batch, m, n, modes, path, false, 0);
}

#define QT_ALL_MODES 7u

/* ---- tests ------------------------------------------------------------- */

/* The small path on single matrices of every class: square, tall, wide,
 * 1 x 1, 1 x n, m x 1, in every mode. */
void test_linalg_qr_small(void) {
  static const int64_t shapes[][2] = {{1, 1},  {1, 5},   {7, 1},  {5, 5},
                                      {17, 13}, {13, 17}, {32, 32}, {40, 64},
                                      {64, 9},  {100, 128}, {128, 128},
                                      {128, 70}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      qt_random_case(qt_dtypes[d], 1, shapes[s][0], shapes[s][1],
                     QT_ALL_MODES, 0);
}

/* Batches on the small path: many small matrices, leading dimensions
 * 2 x 3, and enough 32 x 32 matrices to spread over every worker. */
void test_linalg_qr_batched(void) {
  for (int d = 0; d < 2; d++) {
    qt_random_case(qt_dtypes[d], 50, 17, 13, QT_ALL_MODES, 0);
    qt_random_case(qt_dtypes[d], 7, 6, 11, QT_ALL_MODES, 0);
    qt_random_case(qt_dtypes[d], 200, 32, 32, 1u << KILN_QR_REDUCED, 0);
  }
  /* two batch dimensions */
  int64_t shape[4] = {2, 3, 9, 6};
  double *a = kt_la_alloc(6 * 54);
  qt_random(6 * 9, 6, a);
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 4, shape, a);
  for (int mode = 0; mode < 3; mode++) {
    qt_case c = {"float64 2 x 3 x 9 x 6", KILN_FLOAT64, (kiln_qr_mode)mode,
                 9, 6, true};
    qt_factor_check(&c, arr, a, 6, 0);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* The tall-skinny path: several TSQR levels, ragged last blocks, batches,
 * and the widest float32 class. */
void test_linalg_qr_tall_skinny(void) {
  unsigned rq = 1u << KILN_QR_REDUCED | 1u << KILN_QR_R;
  for (int d = 0; d < 2; d++) {
    qt_random_case(qt_dtypes[d], 1, 5000, 8, rq, 0);   /* 3 levels */
    qt_random_case(qt_dtypes[d], 1, 3000, 33, rq, 0);  /* ragged */
    qt_random_case(qt_dtypes[d], 3, 700, 20, rq, 2);   /* batched */
    qt_random_case(qt_dtypes[d], 1, 600, 64, rq, 0);
    qt_random_case(qt_dtypes[d], 1, 129, 1, rq, 0);    /* m x 1 */
    qt_random_case(qt_dtypes[d], 1, 256, 64, rq, 2);   /* one block */
    qt_random_case(qt_dtypes[d], 1, 40, 40, rq, 2);    /* square */
  }
  qt_random_case(KILN_FLOAT32, 1, 1000, 100, rq, 0); /* 128 columns */
}

/* Every forced path on the same shapes, and the shapes a forced path
 * refuses (the blocked path is kiln__qr_blocked's). */
void test_linalg_qr_paths(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    qt_random_case(dt, 2, 20, 12, QT_ALL_MODES, 1);
    qt_random_case(dt, 2, 20, 12, 1u << KILN_QR_REDUCED | 1u << KILN_QR_R,
                   2);
    qt_random_case(dt, 1, 300, 20, QT_ALL_MODES, 3);
    qt_random_case(dt, 1, 300, 20, 1u << KILN_QR_REDUCED, 2);
  }
  int64_t s129[2] = {129, 5}, s5129[2] = {5, 129}, s57[2] = {5, 7};
  int64_t s300[2] = {300, 65}, s1000[2] = {1000, 129};
  kiln_array *a129 = NULL, *a5129 = NULL, *a57 = NULL, *a300 = NULL;
  kiln_array *a1000 = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s129, &a129));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s5129, &a5129));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s57, &a57));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s300, &a300));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s1000, &a1000));
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  kiln_array *sentinel = (kiln_array *)&o, *q = sentinel, *r = sentinel;
  struct {
    kiln_array *a;
    int path;
    kiln_qr_mode mode;
    const char *msg1, *msg2;
  } bad[] = {
      {a129, 1, KILN_QR_REDUCED, "path 1 (small)", "129 x 5"},
      {a5129, 1, KILN_QR_R, "up to 128 x 128", "5 x 129"},
      {a57, 2, KILN_QR_REDUCED, "path 2 (tall-skinny)", "5 x 7"},
      {a129, 2, KILN_QR_COMPLETE, "complete Q", "path 0, 1 or 3"},
      {a300, 2, KILN_QR_REDUCED, "up to 64 columns in float64",
       "300 x 65"},
      {a1000, 2, KILN_QR_R, "up to 128 columns in float32", "1000 x 129"},
      {a57, 5, KILN_QR_REDUCED, "opts->path is 5", "4 (CholeskyQR)"},
      {a57, -1, KILN_QR_REDUCED, "opts->path is -1", "0 (auto)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    o.path = bad[i].path;
    CHECK_STATUS(kiln_qr_ex(bad[i].a, bad[i].mode, &o, &q, &r),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("[kiln_qr_ex]");
    CHECK_ERR_HAS(bad[i].msg1);
    CHECK_ERR_HAS(bad[i].msg2);
    CHECK(q == sentinel && r == sentinel, "results written on failure");
  }
  kiln_array *all[5] = {a129, a5129, a57, a300, a1000};
  kt_destroy_all(all, 5);
}

/* Strided inputs read in place: a transposed view, every other column of
 * a wider matrix, a batch taken with a step; small and tall-skinny. */
void test_linalg_qr_strided(void) {
  static const int64_t sizes[][2] = {{23, 17}, {12, 30}, {900, 10}};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 3; s++) {
      kiln_dtype dt = qt_dtypes[d];
      int64_t m = sizes[s][0], n = sizes[s][1], batch = 2;
      /* base: (2 batch) x m x 2n; the matrices sit in even entries and
       * even columns, garbage elsewhere. */
      double *a = kt_la_alloc(batch * m * n);
      kiln_array *owner = NULL, *v = NULL;
      kt_la_sliced(dt, batch, m, n, 0, a, &owner, &v);
      char what[96];
      snprintf(what, sizeof what, "%s sliced view %lld x %lld",
               kiln_dtype_name(dt), (long long)m, (long long)n);
      for (int mode = 0; mode < 3; mode++) {
        qt_case c = {what, dt, (kiln_qr_mode)mode, m, n, true};
        if (m <= 128 || mode != KILN_QR_COMPLETE)
          qt_factor_check(&c, v, a, batch, 0);
      }
      kiln_array_destroy(v);
      kiln_array_destroy(owner);
      /* a transposed view: A = B^T for a contiguous n x m matrix B */
      double *at = kt_la_alloc(m * n);
      kiln_array *bo = NULL, *t = NULL;
      kt_la_transposed(dt, m, n, at, &bo, &t);
      snprintf(what, sizeof what, "%s transposed view %lld x %lld",
               kiln_dtype_name(dt), (long long)m, (long long)n);
      qt_case c = {what, dt, KILN_QR_REDUCED, m, n, true};
      qt_factor_check(&c, t, at, 1, 0);
      kiln_array_destroy(t);
      kiln_array_destroy(bo);
      free(at);
      free(a);
    }
}

/* Condition 1e6 in float32 and 1e12 in float64: Q stays orthogonal and
 * the backward error small on the small and the tall-skinny paths. */
void test_linalg_qr_ill_conditioned(void) {
  static const int64_t shapes[][3] = {
      {60, 60, 1}, {128, 100, 1}, {4000, 24, 2}, {2000, 64, 2}};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 4; s++)
      qt_modes_case(qt_dtypes[d], 1, shapes[s][0], shapes[s][1],
                    1u << KILN_QR_REDUCED, (int)shapes[s][2], false,
                    qt_dtypes[d] == KILN_FLOAT32 ? 1e6 : 1e12);
}

/* Empty shapes give empty results of the right shapes; the complete Q of
 * an m x 0 matrix is the identity. */
void test_linalg_qr_empty(void) {
  static const int64_t shapes[][3] = {{1, 0, 5}, {1, 4, 0}, {1, 0, 0},
                                      {0, 3, 3}, {2, 6, 0}, {1, 300, 0}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (int mode = 0; mode < 3; mode++) {
      int64_t batch = shapes[s][0], m = shapes[s][1], n = shapes[s][2];
      int64_t shape[3] = {batch, m, n};
      int nd = batch == 1 ? 2 : 3;
      kiln_array *e = NULL, *q = NULL, *r = NULL;
      CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, nd,
                                 nd == 2 ? shape + 1 : shape, &e));
      char what[96];
      snprintf(what, sizeof what, "empty %lld x %lld x %lld %s",
               (long long)batch, (long long)m, (long long)n,
               qt_mode_name((kiln_qr_mode)mode));
      qt_case c = {what, KILN_FLOAT32, (kiln_qr_mode)mode, m, n, false};
      bool complete = mode == KILN_QR_COMPLETE;
      qt_poison(KILN_FLOAT32, batch * m * m, 1);
      CHECK_OK(kiln_qr(e, (kiln_qr_mode)mode, mode == KILN_QR_R ? NULL : &q,
                       &r));
      qt_check_shapes(&c, e, q, r);
      if (complete && batch * m > 0) {
        double *qv = kt_read_f64(q);
        for (int64_t b = 0; b < batch; b++)
          for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < m; j++)
              CHECK(qv[(b * m + i) * m + j] == (i == j ? 1.0 : 0.0),
                    "%s: Q(%lld, %lld) of matrix %lld is %g, not I's",
                    what, (long long)i, (long long)j, (long long)b,
                    qv[(b * m + i) * m + j]);
        free(qv);
      } else {
        CHECK(q == NULL || kiln_array_size(q) == 0, "%s: Q not empty", what);
      }
      CHECK(kiln_array_size(r) == 0, "%s: R not empty", what);
      kiln_array_destroy(q);
      kiln_array_destroy(r);
      kiln_array_destroy(e);
    }
}

/* Bad arguments: clear errors, the results untouched. */
void test_linalg_qr_errors(void) {
  int64_t s4[1] = {4}, s44[2] = {4, 4};
  kiln_array *vec = NULL, *ints = NULL, *sq = NULL, *half = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 1, s4, &vec));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 2, s44, &ints));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT16, 2, s44, &half));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s44, &sq));
  kiln_array *sentinel = (kiln_array *)&s4, *q = sentinel, *r = sentinel;
  CHECK_STATUS(kiln_qr(vec, KILN_QR_REDUCED, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A has 1 dimension");
  CHECK_ERR_HAS("[kiln_qr]");
  CHECK_STATUS(kiln_qr(ints, KILN_QR_REDUCED, &q, &r),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("A is int32");
  CHECK_STATUS(kiln_qr(half, KILN_QR_R, NULL, &r), KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("float16");
  CHECK_STATUS(kiln_qr(NULL, KILN_QR_REDUCED, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is NULL");
  CHECK_STATUS(kiln_qr(sq, KILN_QR_REDUCED, &q, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("r is NULL");
  CHECK_STATUS(kiln_qr(sq, KILN_QR_COMPLETE, NULL, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("q is NULL");
  CHECK_ERR_HAS("KILN_QR_R");
  CHECK_STATUS(kiln_qr(sq, (kiln_qr_mode)3, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("mode is 3");
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.struct_size = 3;
  CHECK_STATUS(kiln_qr_ex(sq, KILN_QR_REDUCED, &o, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("struct_size");
  CHECK(q == sentinel && r == sentinel, "results written on failure");
  /* R only leaves q alone even when given */
  CHECK_OK(kiln_qr(sq, KILN_QR_R, &q, &r));
  CHECK(q == sentinel && r != sentinel, "mode R wrote q or not r");
  kiln_array_destroy(r);
  kiln_array *all[4] = {vec, ints, half, sq};
  kt_destroy_all(all, 4);
}

/* kiln__qr_tsqr as other drivers call it (a panel of a larger matrix, a
 * strided view), and its refusals. */
void test_linalg_qr_tsqr_panel(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    int64_t M = 1500, N = 50, r0 = 100, c0 = 10, m = M - r0, n = 32;
    double *base = kt_la_alloc(M * N), *a = kt_la_alloc(m * n);
    qt_random(M, N, base);
    int64_t bshape[2] = {M, N};
    kiln_array *owner = kt_la_array(dt, 2, bshape, base);
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[i * n + j] = base[(r0 + i) * N + c0 + j];
    kiln_array *panel = NULL, *q = NULL, *r = NULL;
    CHECK_OK(kiln__linalg_block(owner, r0, c0, m, n, &panel));
    int64_t qs[2] = {m, n}, rs[2] = {n, n};
    CHECK_OK(kiln_array_create(kt_device(), dt, 2, qs, &q));
    CHECK_OK(kiln_array_create(kt_device(), dt, 2, rs, &r));
    CHECK_OK(kiln__qr_tsqr(kt_stream(), panel, q, r));
    double *qv = kt_read_f64(q), *rv = kt_read_f64(r);
    qt_case c = {"kiln__qr_tsqr on a panel", dt, KILN_QR_REDUCED, m, n,
                 true};
    qt_check_one(&c, 0, a, qv, rv);
    free(qv);
    free(rv);
    /* R only */
    CHECK_OK(kiln__qr_tsqr(kt_stream(), panel, NULL, r));
    rv = kt_read_f64(r);
    c.what = "kiln__qr_tsqr on a panel, R only";
    qt_check_one(&c, 0, a, NULL, rv);
    free(rv);
    kiln_array *all[4] = {panel, q, r, owner};
    kt_destroy_all(all, 4);
    free(base);
    free(a);
  }
  int64_t wide[2] = {5, 9};
  kiln_array *w = NULL, *r = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, wide, &w));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, wide, &r));
  CHECK_STATUS(kiln__qr_tsqr(kt_stream(), w, NULL, r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("m >= n");
  kiln_array_destroy(w);
  kiln_array_destroy(r);
}

/* ---- every kernel the driver launches, compiled for a CUDA target ------- */

/* Compiles kernel `name` of kernels/qr.metal for `target` with the given
 * inputs (A of rank `rank`, then scalars) and outputs, and checks that
 * `threads` threads fit the register file without spills. */
static void qt_compile(const char *name, const char *inputs,
                       const char *outputs, kiln_dtype dt, int rank,
                       int num_in, int num_out, const kiln_template_arg *t,
                       int nt, int threads, const char *target) {
  kiln_kernel *k = NULL;
  CHECK_OK(kiln__library_kernel("qr", name, inputs, outputs,
                                KILN__LIB_NO_ROW_CONTIG, &k));
  kiln_array_spec in[3];
  memset(in, 0, sizeof in);
  for (int i = 0; i < num_in; i++) {
    in[i].dtype = dt;
    in[i].ndim = rank;
  }
  in[num_in - 1].dtype = KILN_INT32; /* g0 */
  in[num_in - 1].ndim = 0;
  kiln_output_spec out[2];
  memset(out, 0, sizeof out);
  for (int o = 0; o < num_out; o++) {
    out[o].dtype = dt;
    out[o].ndim = rank;
  }
  kiln_launch L;
  kiln_launch_init(&L);
  L.num_inputs = num_in;
  L.outputs = out;
  L.num_outputs = num_out;
  L.template_args = t;
  L.num_template_args = nt;
  L.device = kt_device();
  kiln_compile_report rep;
  memset(&rep, 0, sizeof rep);
  rep.struct_size = sizeof rep;
  kiln_status st = kiln_kernel_compile(k, &L, in, target, &rep, NULL, NULL,
                                       NULL);
  CHECK(st == KILN_OK, "%s (%s, rank %d) does not compile for %s", name,
        kiln_dtype_name(dt), rank, target);
  CHECK(rep.threadgroup_memory <= 48 * 1024, "%s uses %llu bytes of "
        "threadgroup memory", name,
        (unsigned long long)rep.threadgroup_memory);
  printf("  %s %s rank %d, %d threads: registers %d, spills %llu/%llu, "
         "local %llu\n", name, kiln_dtype_name(dt), rank, threads,
         rep.registers,
         (unsigned long long)rep.spill_store_bytes,
         (unsigned long long)rep.spill_load_bytes,
         (unsigned long long)rep.local_memory);
  /* Registers are reported without __launch_bounds__; a kernel whose
   * count does not fit `threads` is compiled again at launch with the
   * bound (kernel.c), where ptxas trims it (a few bytes of spills at
   * most for the 512-thread classes, outside the inner loops). */
  CHECK(rep.spill_store_bytes == 0 && rep.spill_load_bytes == 0,
        "%s (%s) spills registers", name, kiln_dtype_name(dt));
}

/* One qr_small configuration (both outputs and R only). */
static void qt_compile_house(kiln_dtype dt, int mmax, int nc, int segs,
                             bool blocked, bool complete, int rank,
                             const char *target) {
  kiln_template_arg t[6];
  kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
  kt_la_targ(&t[1], "MMAX", KILN_TEMPLATE_INT, mmax, KILN_INT32);
  kt_la_targ(&t[2], "NC", KILN_TEMPLATE_INT, nc, KILN_INT32);
  kt_la_targ(&t[3], "SEGS", KILN_TEMPLATE_INT, segs, KILN_INT32);
  kt_la_targ(&t[4], "BLOCKED", KILN_TEMPLATE_BOOL, blocked, KILN_INT32);
  kt_la_targ(&t[5], "COMPLETE", KILN_TEMPLATE_BOOL, complete, KILN_INT32);
  printf("MMAX %d NC %d SEGS %d BLOCKED %d COMPLETE %d\n", mmax, nc, segs,
         blocked, complete);
  qt_compile("qr_small", "A,g0", "Q,R", dt, rank, 2, 2, t, 6, nc * segs,
             target);
  if (!complete)
    qt_compile("qr_small_r", "A,g0", "R", dt, rank, 2, 1, t, 6, nc * segs,
               target);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch for that target (src/linalg/qr.c: small_config,
 * tsqr_config) and checks registers and spills; skipped otherwise. */
void test_linalg_qr_nvrtc(void) {
  const char *target = getenv("KILN_TEST_NVRTC_TARGET");
  if (target == NULL || *target == '\0')
    kt_skip("set KILN_TEST_NVRTC_TARGET (e.g. sm_90a) to run it");
  static const int small[4][2] = {{16, 4}, {32, 4}, {64, 4}, {128, 8}};
  static const int tsqr[3] = {32, 64, 128};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    for (int rank = 2; rank <= 3; rank++) {
      for (int c = 0; c < 4; c++) {
        int segs = c == 3 && dt == KILN_FLOAT64 ? 4 : small[c][1];
        for (int complete = 0; complete < 2; complete++)
          qt_compile_house(dt, small[c][0], small[c][0], segs, false,
                           complete, rank, target);
      }
      for (int c = 0; c < (dt == KILN_FLOAT64 ? 2 : 3); c++)
        qt_compile_house(dt, 256, tsqr[c], c == 2 ? 4 : 8, true, false,
                         rank, target);
    }
    for (int c = 0; c < (dt == KILN_FLOAT64 ? 2 : 3); c++) {
      kiln_template_arg t[3];
      kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
      kt_la_targ(&t[1], "NB", KILN_TEMPLATE_INT, tsqr[c], KILN_INT32);
      kt_la_targ(&t[2], "BR", KILN_TEMPLATE_INT, 256, KILN_INT32);
      qt_compile("qr_apply", "Xin,S,g0", "X", dt, 3, 3, 1, t, 3, 128,
                 target);
    }
    kiln_template_arg t[1];
    kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
    for (int rank = 2; rank <= 3; rank++)
      qt_compile("qr_eye", "Qin,g0", "Q", dt, rank, 2, 1, t, 1, 256, target);
  }
}

/* ---- CholeskyQR (path 4) ----------------------------------------------- */

#define QT_RQ (1u << KILN_QR_REDUCED | 1u << KILN_QR_R)

/*
 * kiln__qr_cholqr itself on `arr` (logical values a: batch matrices of m x
 * n): checks every matrix as qt_check_one does and that its breakdown
 * flag is 0 (CholeskyQR succeeded), or, with `flags`, as flags[b] says:
 * 0 success, 1 a reported breakdown, -1 either (rounding decides whether
 * a rank-deficient matrix looks deficient). Results are checked wherever
 * the flag says success: a success must be a valid factorization.
 */
static void qt_cholqr_direct(const qt_case *c, kiln_array *arr,
                             const double *a, int64_t batch,
                             const int *flags) {
  int64_t m = c->m, n = c->n;
  kiln_dtype dt = c->dt;
  bool want_q = c->mode != KILN_QR_R;
  int nd = kiln_array_ndim(arr);
  int64_t qs[KILN_MAX_NDIM], rs[KILN_MAX_NDIM], fs[1] = {batch};
  memcpy(qs, kiln_array_shape(arr), (size_t)nd * sizeof *qs);
  memcpy(rs, qs, sizeof rs);
  rs[nd - 2] = n;
  qt_poison(dt, want_q ? batch * m * n : 0, batch * n * n);
  kiln_array *q = NULL, *r = NULL, *flag = NULL;
  if (want_q)
    CHECK_OK(kiln_array_create(kt_device(), dt, nd, qs, &q));
  CHECK_OK(kiln_array_create(kt_device(), dt, nd, rs, &r));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 1, fs, &flag));
  CHECK_OK(kiln_array_fill(flag, -7, NULL)); /* every entry must be set */
  CHECK_OK(kiln__qr_cholqr(kt_stream(), arr, q, r, flag));
  double *qv = want_q ? kt_read_f64(q) : NULL, *rv = kt_read_f64(r);
  double *fv = kt_read_f64(flag);
  for (int64_t b = 0; b < batch; b++) {
    int want = flags != NULL ? flags[b] : 0;
    CHECK(fv[b] != -7, "%s, matrix %lld: flag not written", c->what,
          (long long)b);
    CHECK(want < 0 || (fv[b] != 0) == (want != 0), "%s, matrix %lld: "
          "CholeskyQR's "
          "breakdown flag is %g, expected %s", c->what, (long long)b, fv[b],
          want ? "non-zero" : "0");
    if (fv[b] == 0)
      qt_check_one(c, b, a + b * m * n, qv ? qv + b * m * n : NULL,
                   rv + b * n * n);
  }
  free(qv);
  free(rv);
  free(fv);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
  kiln_array_destroy(flag);
}

/* A random batch of m x n through kiln__qr_cholqr (flags 0) and through
 * kiln_qr_ex path 4, in the modes of `modes`. */
static void qt_cholqr_case(kiln_dtype dt, int64_t batch, int64_t m,
                           int64_t n, unsigned modes) {
  qt_modes_case(dt, batch, m, n, modes, 4, true, 0);
}

/* Path 4 on random matrices: every column class (16, 32, 64), ragged
 * tiles, m x 1, square, batches (one and two leading dimensions), and
 * auto choosing it. */
void test_linalg_qr_cholqr(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    qt_cholqr_case(dt, 1, 3000, 8, QT_RQ);
    qt_cholqr_case(dt, 1, 1001, 33, QT_RQ); /* ragged last tile */
    qt_cholqr_case(dt, 1, 700, 64, QT_RQ);
    qt_cholqr_case(dt, 1, 129, 1, QT_RQ);
    qt_cholqr_case(dt, 1, 40, 40, 1u << KILN_QR_REDUCED);
    qt_cholqr_case(dt, 5, 300, 20, QT_RQ);
  }
  /* two batch dimensions, auto (m >= 4n, m > 128 picks path 4) */
  int64_t shape[4] = {2, 3, 260, 12};
  double *a = kt_la_alloc(6 * 260 * 12);
  qt_random(6 * 260, 12, a);
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 4, shape, a);
  qt_case c = {"float32 2 x 3 x 260 x 12 auto", KILN_FLOAT32,
               KILN_QR_REDUCED, 260, 12, true};
  qt_factor_check(&c, arr, a, 6, 0);
  qt_cholqr_direct(&c, arr, a, 6, NULL);
  kiln_array_destroy(arr);
  free(a);
}

/* Condition 1e6 in float32 and 1e12 in float64: CholeskyQR itself (flag
 * 0, no fallback) keeps Q orthogonal and the backward error small. */
void test_linalg_qr_cholqr_ill_conditioned(void) {
  static const int64_t shapes[][2] = {{4000, 24}, {2000, 64}, {600, 5}};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 3; s++)
      qt_modes_case(qt_dtypes[d], 1, shapes[s][0], shapes[s][1],
                    1u << KILN_QR_REDUCED | 1u << KILN_QR_R, 4, true,
                    qt_dtypes[d] == KILN_FLOAT32 ? 1e6 : 1e12);
}

/* kiln__qr_cholqr on `arr` (batch x m x n) with the passes forced as
 * kiln__cholqr_passes_test says; Q (NULL for R only) and R read back, the
 * flags checked to be 0. */
static void qt_cholqr_run(kiln_array *arr, int64_t batch, bool want_q,
                          int passes, double **qv, double **rv) {
  int nd = kiln_array_ndim(arr);
  int64_t qs[KILN_MAX_NDIM], rs[KILN_MAX_NDIM], fs[1] = {batch};
  memcpy(qs, kiln_array_shape(arr), (size_t)nd * sizeof *qs);
  memcpy(rs, qs, sizeof rs);
  rs[nd - 2] = rs[nd - 1];
  kiln_dtype dt = kiln_array_dtype(arr);
  kiln_array *q = NULL, *r = NULL, *flag = NULL;
  if (want_q) {
    CHECK_OK(kiln_array_create(kt_device(), dt, nd, qs, &q));
    CHECK_OK(kiln_array_fill(q, NAN, NULL));
  }
  CHECK_OK(kiln_array_create(kt_device(), dt, nd, rs, &r));
  CHECK_OK(kiln_array_fill(r, NAN, NULL));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 1, fs, &flag));
  kiln__cholqr_passes_test = passes;
  CHECK_OK(kiln__qr_cholqr(kt_stream(), arr, q, r, flag));
  kiln__cholqr_passes_test = -1;
  double *fv = kt_read_f64(flag);
  for (int64_t b = 0; b < batch; b++)
    CHECK(fv[b] == 0.0, "CholeskyQR (passes %d), matrix %lld: flag %g",
          passes, (long long)b, fv[b]);
  free(fv);
  *qv = want_q ? kt_read_f64(q) : NULL;
  *rv = kt_read_f64(r);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
  kiln_array_destroy(flag);
}

/* Two passes finish a matrix whose second Gram is near I, per matrix of a
 * batch: matrices 0 and 2 random (two passes), 1 ill-conditioned (1e6 in
 * float32, 1e12 in float64: the shifted X_1 is far from orthogonal, three
 * passes). Against the same batch forced to three passes: the
 * ill-conditioned matrix's Q and R are bit for bit the same (it took the
 * third pass), the random ones' differ (they did not), and every matrix
 * is a valid factorization either way; R only gives the same R. */
void test_linalg_qr_cholqr_passes(void) {
  const int64_t batch = 3, m = 600, n = 40;
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    double *a = kt_la_alloc(batch * m * n);
    qt_random(m, n, a);
    kt_la_ill(m, n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a + m * n);
    qt_random(m, n, a + 2 * m * n);
    int64_t shape[3] = {batch, m, n};
    kiln_array *arr = kt_la_array(dt, 3, shape, a);
    double *q3, *r3, *qa, *ra, *rr, *none;
    qt_cholqr_run(arr, batch, true, 3, &q3, &r3);
    qt_cholqr_run(arr, batch, true, 0, &qa, &ra);
    qt_cholqr_run(arr, batch, false, 0, &none, &rr);
    for (int64_t b = 0; b < batch; b++) {
      char what[96];
      snprintf(what, sizeof what, "%s CholeskyQR passes, matrix %lld",
               kiln_dtype_name(dt), (long long)b);
      qt_case c = {what, dt, KILN_QR_REDUCED, m, n, b != 1};
      qt_check_one(&c, b, a + b * m * n, q3 + b * m * n, r3 + b * n * n);
      qt_check_one(&c, b, a + b * m * n, qa + b * m * n, ra + b * n * n);
      bool same = memcmp(qa + b * m * n, q3 + b * m * n,
                         (size_t)(m * n) * sizeof(double)) == 0 &&
                  memcmp(ra + b * n * n, r3 + b * n * n,
                         (size_t)(n * n) * sizeof(double)) == 0;
      CHECK(same == (b == 1), "%s: Q and R %s the three-pass ones", what,
            same ? "equal" : "differ from");
      CHECK(memcmp(rr + b * n * n, ra + b * n * n,
                   (size_t)(n * n) * sizeof(double)) == 0,
            "%s: R only differs from R with Q", what);
    }
    free(q3);
    free(r3);
    free(qa);
    free(ra);
    free(rr);
    kiln_array_destroy(arr);
    free(a);
  }
}

/* The fallback's guarded kernels run on a grid capped at a few groups per
 * compute unit (qr.c, launch_flagged) and walk their blocks in a loop:
 * a deficient matrix with more 256-row blocks (and 128-row apply groups)
 * than the cap on any device up to 4 x 132 compute units, so that the loop
 * wraps everywhere; a zero column makes CholeskyQR break down. */
static void qt_fallback_many_blocks(void) {
  int64_t m = 1056 * 256 + 300, n = 3;
  double *a = kt_la_alloc(m * n);
  qt_random(m, n, a);
  for (int64_t i = 0; i < m; i++)
    a[i * n + 1] = 0.0;
  int64_t shape[2] = {m, n};
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
  qt_case c = {"float32 deficient 270636 x 3 (fallback loops)",
               KILN_FLOAT32, KILN_QR_REDUCED, m, n, false};
  int flags[1] = {1};
  qt_cholqr_direct(&c, arr, a, 1, flags);
  qt_factor_check(&c, arr, a, 1, 4);
  kiln_array_destroy(arr);
  free(a);
}

/* cq_chol (pass 2) launched by itself on crafted Grams, float64, n = 50 in
 * the 64-column class (so the last block of 4 steps runs past n through
 * the identity padding): the flag is PASS * 1000 + j + 1 for the FIRST
 * bad pivot j (negative, zero, NaN, infinite, subnormal, above 2^1021),
 * though the elimination runs on past it, and a failed matrix gets R = I;
 * an SPD Gram gets flag 0 and Rout = R Rin = R (Rin = I) with R^T R = G,
 * zeros elsewhere (Rout is poisoned first), and the factor in Rt. */
#define QT_CQ_NC 64
#define QT_CQ_N 50
#define QT_CQ_B 7
static void qt_cholqr_chol_flags(void) {
  enum { NC = QT_CQ_NC, N = QT_CQ_N, NB = NC / 8, B = QT_CQ_B };
  const int64_t e = (int64_t)NB * (NB + 1) / 2 * 64;
  /* the spoiled pivots (index, value) of matrices 1..6; 0 is SPD */
  static const struct {
    int j[2];
    double v[2];
    int want;
  } bad[B] = {{{-1, -1}, {0, 0}, 0},
              {{5, 9}, {-1.0, 0.0}, 2006},
              {{40, 49}, {NAN, -1.0}, 2041},
              {{33, -1}, {1e-310, 0}, 2034},
              {{49, -1}, {0.0, 0}, 2050},
              {{0, 20}, {INFINITY, -1.0}, 2001},
              {{12, -1}, {0x1.8p1022, 0}, 2013}};
  double *g = kt_la_alloc(B * N * N), *gp = kt_la_alloc(B * e);
  double *x = kt_la_alloc(80 * N);
  qt_random(80, N, x);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < N; i++)
      for (int k = 0; k < N; k++) {
        double v = i == k ? 1.0 : 0.0;
        for (int r = 0; b == 0 && r < 80; r++)
          v = r == 0 ? x[i] * x[k] : v + x[r * N + i] * x[r * N + k];
        g[((int64_t)b * N + i) * N + k] = v;
      }
  for (int b = 1; b < B; b++)
    for (int t = 0; t < 2; t++)
      if (bad[b].j[t] >= 0)
        g[((int64_t)b * N + bad[b].j[t]) * N + bad[b].j[t]] = bad[b].v[t];
  /* the block layout: entry blk 64 + 8 a + c = G(8 bi + a, 8 bj + c) */
  for (int b = 0; b < B; b++) {
    int blk = 0;
    for (int bi = 0; bi < NB; bi++)
      for (int bj = bi; bj < NB; bj++, blk++)
        for (int a = 0; a < 8; a++)
          for (int c = 0; c < 8; c++) {
            int i = 8 * bi + a, k = 8 * bj + c;
            gp[b * e + blk * 64 + 8 * a + c] =
                i < N && k < N ? g[((int64_t)b * N + i) * N + k] : 0.0;
          }
  }
  double *eye = kt_la_alloc(B * NC * NC);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < NC; i++)
      eye[((int64_t)b * NC + i) * NC + i] = 1.0;
  int64_t sg[2] = {B, e}, si[3] = {B, NC, NC}, sr[3] = {B, N, N};
  int64_t st[4] = {B, 3, NC, NC}, sf[1] = {B};
  /* inputs G, Rin, shift, two (0: pass 2 never finishes), g0, Rsh;
   * outputs Rt, Rout, flag, R (= Rsh), Stage */
  kiln_array *all[10] = {NULL};
  all[0] = kt_la_array(KILN_FLOAT64, 2, sg, gp);
  all[1] = kt_la_array(KILN_FLOAT64, 3, si, eye);
  CHECK_OK(kiln__linalg_scalar(kt_stream(), KILN_FLOAT64, 1e-12, &all[2]));
  CHECK_OK(kiln__linalg_scalar(kt_stream(), KILN_INT32, 0, &all[3]));
  CHECK_OK(kiln__linalg_scalar(kt_stream(), KILN_INT32, 0, &all[4]));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, sr, &all[5]));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 4, st, &all[6]));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, si, &all[7]));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 1, sf, &all[8]));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 1, sf, &all[9]));
  CHECK_OK(kiln_array_fill(all[5], NAN, NULL));
  CHECK_OK(kiln_array_fill(all[6], NAN, NULL));
  CHECK_OK(kiln_array_fill(all[7], NAN, NULL)); /* must be written */
  CHECK_OK(kiln_array_fill(all[8], 0, NULL));   /* pass 2 keeps non-zero */
  CHECK_OK(kiln_array_fill(all[9], -7, NULL));  /* must be written */
  kiln_kernel *k = NULL;
  CHECK_OK(kiln__library_kernel("cholqr", "cq_chol",
                                "G,Rin,shift,two,g0,Rsh",
                                "Rt,Rout,flag,R,Stage",
                                KILN__LIB_NO_ROW_CONTIG, &k));
  kiln_template_arg t[3];
  kiln__targ_dtype(&t[0], "T", KILN_FLOAT64);
  kiln__targ_int(&t[1], "NC", NC);
  kiln__targ_int(&t[2], "PASS", 2);
  kiln_array *outs[5] = {all[6], all[7], all[8], all[5], all[9]};
  kiln_output_spec spec[5];
  for (int i = 0; i < 5; i++)
    kiln__linalg_out_spec(&spec[i], outs[i]);
  kiln_launch L;
  kiln__linalg_launch_init(&L, kt_stream());
  L.inputs = all;
  L.num_inputs = 6;
  L.outputs = spec;
  L.num_outputs = 5;
  L.template_args = t;
  L.num_template_args = 3;
  L.grid[0] = 256;
  L.grid[1] = B;
  L.threadgroup[0] = 256;
  CHECK_OK(kiln__kernel_launch_into(k, &L, outs));
  double *fv = kt_read_f64(all[8]), *ro = kt_read_f64(all[7]);
  double *rt = kt_read_f64(all[6]), *sv = kt_read_f64(all[9]);
  for (int b = 0; b < B; b++)
    CHECK(sv[b] == 0.0, "cq_chol, matrix %d: Stage %g with two = 0", b,
          sv[b]);
  free(sv);
  double eps = kt_eps(KILN_FLOAT64);
  for (int b = 0; b < B; b++) {
    CHECK(fv[b] == bad[b].want, "cq_chol, matrix %d: flag %g, expected %d",
          b, fv[b], bad[b].want);
    const double *r = ro + (int64_t)b * NC * NC;
    double worst = 0.0, gmax = 0.0;
    for (int i = 0; i < NC; i++)
      for (int kk = 0; kk < NC; kk++) {
        double v = r[i * NC + kk];
        bool zero = i > kk || kk >= N;
        CHECK(zero ? v == 0.0 : isfinite(v), "cq_chol, matrix %d: Rout(%d, "
              "%d) = %g", b, i, kk, v);
        if (b > 0)
          CHECK(v == (i == kk && i < N ? 1.0 : 0.0), "cq_chol, failed "
                "matrix %d: Rout(%d, %d) = %g, not the identity", b, i, kk,
                v);
        if (b > 0 || zero)
          continue;
        double s = 0.0; /* (R^T R)(i, kk) */
        for (int l = 0; l <= i && l <= kk; l++)
          s += r[l * NC + i] * r[l * NC + kk];
        double gv = g[(int64_t)i * N + kk];
        worst = fmax(worst, fabs(s - gv));
        gmax = fmax(gmax, fabs(gv));
        /* Rt's factor 1: R(i, kk) above the diagonal, 1 / R on it */
        double f = rt[((int64_t)(b * 3 + 1) * NC + kk) * NC + i];
        CHECK(i == kk ? fabs(f * v - 1.0) < 8 * eps : f == v, "cq_chol: "
              "Rt(%d, %d) = %g for R = %g", i, kk, f, v);
      }
    CHECK(b > 0 || worst <= 64.0 * N * eps * gmax, "cq_chol: |R^T R - G| "
          "= %g, |G| = %g", worst, gmax);
  }
  free(fv);
  free(ro);
  free(rt);
  free(g);
  free(gp);
  free(x);
  free(eye);
  kt_destroy_all(all, 10);
}

/* Rank-deficient matrices, where CholeskyQR must break down and TSQR take
 * over: an exactly zero column, a rank-1 matrix, a zero matrix, and a
 * batch where only the middle matrix is deficient (the others must keep
 * CholeskyQR's results). Q stays orthonormal and A = Q R. */
void test_linalg_qr_cholqr_fallback(void) {
  qt_cholqr_chol_flags();
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    int64_t m = 900, n = 20, batch = 3;
    double *a = kt_la_alloc(batch * m * n);
    for (int kind = 0; kind < 3; kind++) {
      qt_random(batch * m, n, a);
      double *mid = a + m * n; /* matrix 1 */
      double *u = kt_la_alloc(m), *v = kt_la_alloc(n);
      qt_random(m, 1, u);
      qt_random(n, 1, v);
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
          if (kind == 0 && j == 7)
            mid[i * n + j] = 0.0; /* a zero column */
          else if (kind == 1)
            mid[i * n + j] = u[i] * v[j]; /* rank 1 */
          else if (kind == 2)
            mid[i * n + j] = 0.0; /* zero */
        }
      free(u);
      free(v);
      static const char *const kinds[3] = {"a zero column", "rank 1",
                                           "zero"};
      int64_t shape[3] = {batch, m, n};
      kiln_array *arr = kt_la_array(dt, 3, shape, a);
      char what[96];
      snprintf(what, sizeof what, "%s batch with %s", kiln_dtype_name(dt),
               kinds[kind]);
      /* a zero column or matrix is exactly singular in every pass; a
       * rank-1 matrix's other columns are rounding noise that CholeskyQR
       * may well orthonormalize (then its result is checked) */
      int flags[3] = {0, kind == 1 ? -1 : 1, 0};
      for (int mode = 0; mode < 3; mode += 2) {
        qt_case c = {what, dt, (kiln_qr_mode)mode, m, n, false};
        qt_cholqr_direct(&c, arr, a, batch, flags);
        qt_factor_check(&c, arr, a, batch, 4);
      }
      kiln_array_destroy(arr);
      /* the deficient matrix alone, 2-D, with a long TSQR (3 levels) */
      int64_t ml = 3000;
      double *al = kt_la_alloc(ml * n);
      qt_random(ml, n, al);
      double *ul = kt_la_alloc(ml);
      qt_random(ml, 1, ul);
      for (int64_t i = 0; i < ml; i++)
        for (int64_t j = 0; j < n; j++) {
          if (kind == 0 && j == 3)
            al[i * n + j] = 0.0;
          else if (kind == 1)
            al[i * n + j] = ul[i] * (double)(j + 1) / (double)n;
          else if (kind == 2)
            al[i * n + j] = 0.0;
        }
      free(ul);
      int64_t s2[2] = {ml, n};
      kiln_array *a2 = kt_la_array(dt, 2, s2, al);
      qt_case c2 = {what, dt, KILN_QR_REDUCED, ml, n, false};
      qt_factor_check(&c2, a2, al, 1, 4);
      kiln_array_destroy(a2);
      free(al);
    }
    free(a);
  }
  qt_fallback_many_blocks();
}

/* Strided inputs read in place on path 4: every other column of every
 * other matrix of a wider array, and a transposed view. */
void test_linalg_qr_cholqr_strided(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qt_dtypes[d];
    int64_t m = 700, n = 17, batch = 2;
    double *a = kt_la_alloc(batch * m * n);
    kiln_array *owner = NULL, *v = NULL;
    kt_la_sliced(dt, batch, m, n, 0, a, &owner, &v);
    for (int mode = 0; mode < 3; mode += 2) {
      qt_case c = {"sliced view CholeskyQR", dt, (kiln_qr_mode)mode, m, n,
                   true};
      qt_cholqr_direct(&c, v, a, batch, NULL);
      qt_factor_check(&c, v, a, batch, 4);
    }
    kiln_array_destroy(v);
    kiln_array_destroy(owner);
    double *at = kt_la_alloc(m * n);
    kiln_array *bo = NULL, *t = NULL;
    kt_la_transposed(dt, m, n, at, &bo, &t);
    qt_case c = {"transposed view CholeskyQR", dt, KILN_QR_REDUCED, m, n,
                 true};
    qt_cholqr_direct(&c, t, at, 1, NULL);
    qt_factor_check(&c, t, at, 1, 4);
    kiln_array_destroy(t);
    kiln_array_destroy(bo);
    free(at);
    free(a);
  }
}

/* What path 4 refuses, with the results untouched; empty problems. */
void test_linalg_qr_cholqr_errors(void) {
  int64_t s1[2] = {300, 65}, s2[2] = {5, 7}, s3[2] = {300, 20};
  kiln_array *wide = NULL, *flat = NULL, *ok = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s1, &wide));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s2, &flat));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s3, &ok));
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 4;
  kiln_array *sentinel = (kiln_array *)&o, *q = sentinel, *r = sentinel;
  CHECK_STATUS(kiln_qr_ex(wide, KILN_QR_REDUCED, &o, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("[kiln_qr_ex]");
  CHECK_ERR_HAS("path 4 (CholeskyQR) takes up to 64 columns");
  CHECK_ERR_HAS("300 x 65");
  CHECK_STATUS(kiln_qr_ex(flat, KILN_QR_R, &o, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("at least as many rows as columns");
  CHECK_ERR_HAS("5 x 7");
  CHECK_STATUS(kiln_qr_ex(ok, KILN_QR_COMPLETE, &o, &q, &r),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("path 4 (CholeskyQR) gives a reduced Q or R only");
  CHECK(q == sentinel && r == sentinel, "results written on failure");
  /* empty: 0 x 0 and a batch of none */
  int64_t e1[2] = {0, 0}, e2[3] = {0, 300, 20};
  kiln_array *z1 = NULL, *z2 = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, e1, &z1));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 3, e2, &z2));
  kiln_array *zs[2] = {z1, z2};
  for (int i = 0; i < 2; i++) {
    q = r = NULL;
    CHECK_OK(kiln_qr_ex(zs[i], KILN_QR_REDUCED, &o, &q, &r));
    CHECK(kiln_array_size(q) == 0 && kiln_array_size(r) == 0,
          "empty A %d gave non-empty results", i);
    kiln_array_destroy(q);
    kiln_array_destroy(r);
  }
  kiln_array *all[5] = {wide, flat, ok, z1, z2};
  kt_destroy_all(all, 5);
}

/* Compiles one cholqr configuration (kiln__cholqr_for_each_config) for
 * the target, with A of rank 2 and 3. */
static kiln_status qt_cholqr_compile(const kiln__cholqr_config *cfg,
                                     void *user) {
  const char *target = user;
  /* the rows kernels read A (of rank 2 or 3) or Q (Qin, rank 3 as the
   * driver binds it, or 2) */
  bool rows = strncmp(cfg->inputs, "A,", 2) == 0 ||
              strncmp(cfg->inputs, "Qin,", 4) == 0;
  for (int rank = 2; rank <= (rows ? 3 : 2); rank++) {
    kiln_array_spec in[6];
    kiln_output_spec out[5];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    kiln_template_arg t[3];
    int nt = 0, nin = 0, nout = 0;
    if (strcmp(cfg->name, "cq_reduce") == 0) {
      in[0] = (kiln_array_spec){KILN_FLOAT64, 3, {0}};
      in[1] = (kiln_array_spec){KILN_INT32, 0, {0}};
      in[2] = (kiln_array_spec){KILN_INT32, 1, {0}};
      out[0] = (kiln_output_spec){KILN_FLOAT64, 2, {1, 16}};
      kt_la_targ(&t[nt++], "STAGED", KILN_TEMPLATE_BOOL, cfg->pass == 3,
                 KILN_INT32);
      nin = 3;
      nout = 1;
    } else {
      kt_la_targ(&t[nt++], "T", KILN_TEMPLATE_DTYPE, 0, cfg->dtype);
      kt_la_targ(&t[nt++], "NC", KILN_TEMPLATE_INT, cfg->nc, KILN_INT32);
      if (cfg->pass >= 0)
        kt_la_targ(&t[nt++], "PASS", KILN_TEMPLATE_INT, cfg->pass,
                   KILN_INT32);
    }
    if (rows) { /* A or Qin, [Rt,] g0[, Stage] -> [Q,] [Part] */
      bool solve = strstr(cfg->inputs, "Rt") != NULL;
      in[nin++] = (kiln_array_spec){cfg->dtype, rank, {0}};
      if (solve)
        in[nin++] = (kiln_array_spec){cfg->dtype, 4, {0}};
      in[nin++] = (kiln_array_spec){KILN_INT32, 0, {0}};
      if (strstr(cfg->inputs, "Stage") != NULL)
        in[nin++] = (kiln_array_spec){KILN_INT32, 1, {0}};
      if (strncmp(cfg->outputs, "Q", 1) == 0)
        out[nout++] = (kiln_output_spec){cfg->dtype, rank, {1, 1, 1}};
      if (strstr(cfg->outputs, "Part") != NULL)
        out[nout++] = (kiln_output_spec){KILN_FLOAT64, 3, {1, 1, 1}};
    } else if (strcmp(cfg->name, "cq_chol") == 0) {
      /* G, Rin, shift, two, g0, Rsh -> Rt, Rout, flag, R, Stage */
      in[0] = (kiln_array_spec){KILN_FLOAT64, 2, {0}};
      in[1] = (kiln_array_spec){KILN_FLOAT64, 3, {0}};
      in[2] = (kiln_array_spec){KILN_FLOAT64, 0, {0}};
      in[3] = (kiln_array_spec){KILN_INT32, 0, {0}};
      in[4] = (kiln_array_spec){KILN_INT32, 0, {0}};
      in[5] = (kiln_array_spec){cfg->dtype, 3, {0}};
      out[0] = (kiln_output_spec){cfg->dtype, 4, {1, 3, 1, 1}};
      out[1] = (kiln_output_spec){KILN_FLOAT64, 3, {1, 1, 1}};
      out[2] = (kiln_output_spec){KILN_INT32, 1, {1}};
      out[3] = (kiln_output_spec){cfg->dtype, 3, {1, 1, 1}};
      out[4] = (kiln_output_spec){KILN_INT32, 1, {1}};
      nin = 6;
      nout = 5;
    }
    kt_la_kernel k = {.family = "cholqr", .name = cfg->name,
                      .inputs = cfg->inputs, .outputs = cfg->outputs,
                      .flags = KILN__LIB_NO_ROW_CONTIG, .num_inputs = nin,
                      .num_outputs = nout, .in = in, .out = out, .targs = t,
                      .num_targs = nt, .forbid_local = true};
    printf("%s %s NC %d PASS %d rank %d\n", cfg->name,
           kiln_dtype_name(cfg->dtype), cfg->nc, cfg->pass, rank);
    kt_la_compile(&k, target);
  }
  return KILN_OK;
}

/* With KILN_TEST_NVRTC_TARGET, compiles every configuration of the
 * CholeskyQR path (its fallback's kernels: linalg_qr_fallback_nvrtc). */
void test_linalg_qr_cholqr_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  CHECK_OK(kiln__cholqr_for_each_config(qt_cholqr_compile, (void *)target));
}
