/*
 * `kiln linalg` for the operations beyond gemm and cholesky (whose CLI
 * tests live with their own tests): qr, solve-triangular, lu, solve, inv
 * and det on .npy files, and the errors of every operation.
 *
 * Inputs are fresh random matrices written with the test's own .npy
 * writer; every result file is read back with the test's reader (dtype,
 * shape, C order) and checked here in double by its defining property
 * (A = Q R with Q^T Q = I, A X = B, A[perm] = L U, A Ainv = I, det
 * against a host LU with partial pivoting), with per-dtype thresholds in
 * units of n eps; numpy checks the same files again when python3 has it.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "linalg_check.h"

#ifndef KILN_CLI_PATH
#define KILN_CLI_PATH "kiln"
#endif

/* Residuals below this many units of n eps pass. */
#define LC_THRESHOLD 10.0

/* numpy's shape text: "(2, 3)", "(5,)", "()". */
static void lc_shape_text(int ndim, const int64_t *shape, char *out,
                          size_t cap) {
  size_t n = (size_t)snprintf(out, cap, "(");
  for (int d = 0; d < ndim && n < cap; d++)
    n += (size_t)snprintf(out + n, cap - n, "%s%lld", d ? ", " : "",
                          (long long)shape[d]);
  if (n < cap)
    snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

static int64_t lc_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    n *= shape[d];
  return n;
}

/* Writes `v` (of `shape`) as DIR/NAME in `dt`, rounding v in place to what
 * the file holds; `path` receives the file's path. */
static void lc_write(const char *dir, const char *name, kiln_dtype dt,
                     int ndim, const int64_t *shape, double *v, char *path,
                     size_t cap) {
  int64_t n = lc_count(ndim, shape);
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1) * 8);
  CHECK(buf != NULL, "out of host memory");
  for (int64_t i = 0; i < n; i++) {
    kt_set(dt, buf, (size_t)i, v[i]);
    v[i] = kt_get(dt, buf, (size_t)i);
  }
  snprintf(path, cap, "%s/%s", dir, name);
  kt_npy_write(path, dt, ndim, shape, buf);
  free(buf);
}

/* Reads DIR/NAME.npy, demanding `dt` and `shape`, as doubles. */
static double *lc_read(const char *dir, const char *name, kiln_dtype dt,
                       int ndim, const int64_t *shape) {
  char path[4300], text[256];
  snprintf(path, sizeof path, "%s/%s.npy", dir, name);
  lc_shape_text(ndim, shape, text, sizeof text);
  return kt_npy_read_f64(path, 0, dt, text,
                         (size_t)lc_count(ndim, shape));
}

/* Removes every file of the output directory (after a successful run). */
static void lc_clear(const char *dir, const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s.npy", dir, names[i]);
    CHECK(unlink(path) == 0, "remove %s", path);
  }
  CHECK(kt_dir_count(dir) == 0, "only the expected files were written");
}

/* A successful run: exit 0, nothing printed, exactly `n` files. */
static void lc_expect_ok(const char *what, const char *od, int n, kt_cli r) {
  CHECK(r.rc == 0, "%s: exit %d, stderr: %s", what, r.rc, r.err);
  CHECK(r.out[0] == '\0' && r.err[0] == '\0', "%s: success prints "
        "nothing; stdout: %s stderr: %s", what, r.out, r.err);
  CHECK(kt_dir_count(od) == n, "%s: %d files written, not %d (no "
        "temporaries, nothing else)", what, kt_dir_count(od), n);
  kt_cli_free(&r);
}

/* ---- host linear algebra in double --------------------------------------- */

/* Frobenius norm of an m x n block with row stride ld. */
static double lc_fro(const double *a, int64_t m, int64_t n, int64_t ld) {
  double s = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++)
      s += a[i * ld + j] * a[i * ld + j];
  return sqrt(s);
}

/* ||A X - B||_F / ((||A|| ||X|| + ||B||) n eps): A n x n, X and B n x k. */
static double lc_solve_residual(const double *a, const double *x,
                                const double *b, int64_t n, int64_t k,
                                kiln_dtype dt) {
  double r = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < k; j++) {
      double s = -b[i * k + j];
      for (int64_t p = 0; p < n; p++)
        s += a[i * n + p] * x[p * k + j];
      r += s * s;
    }
  double den = lc_fro(a, n, n, n) * lc_fro(x, n, k, k) + lc_fro(b, n, k, k);
  return den == 0 ? sqrt(r) : sqrt(r) / (den * (double)n * kt_eps(dt));
}

/* Random well-conditioned n x n matrices: uniform entries plus n on the
 * diagonal, with a random sign per row. */
static void lc_dominant(int64_t count, int64_t n, double *a) {
  for (int64_t b = 0; b < count; b++)
    for (int64_t i = 0; i < n; i++) {
      double sign = kt_uniform(-1, 1) < 0 ? -1 : 1;
      for (int64_t j = 0; j < n; j++)
        a[(b * n + i) * n + j] = kt_uniform(-1, 1) +
                                 (i == j ? sign * (double)n : 0);
    }
}

/* det(A) of an n x n matrix by LU with partial pivoting, in double. */
static double lc_det(const double *a, int64_t n) {
  double *w = kt_la_alloc(n * n);
  memcpy(w, a, (size_t)(n * n) * sizeof *w);
  double det = 1;
  for (int64_t k = 0; k < n; k++) {
    int64_t p = k;
    for (int64_t i = k + 1; i < n; i++)
      if (fabs(w[i * n + k]) > fabs(w[p * n + k]))
        p = i;
    if (w[p * n + k] == 0) {
      free(w);
      return 0;
    }
    if (p != k) {
      det = -det;
      for (int64_t j = 0; j < n; j++) {
        double t = w[k * n + j];
        w[k * n + j] = w[p * n + j];
        w[p * n + j] = t;
      }
    }
    det *= w[k * n + k];
    for (int64_t i = k + 1; i < n; i++) {
      double f = w[i * n + k] / w[k * n + k];
      for (int64_t j = k; j < n; j++)
        w[i * n + j] -= f * w[k * n + j];
    }
  }
  free(w);
  return det;
}

/* ---- qr ------------------------------------------------------------------ */

/* Checks one factorization A = Q R (A m x n, Q m x q, R q x n): the
 * residual, Q's orthonormal columns and R's triangle and diagonal. With
 * q_given false only R is checked: R^T R = A^T A (R is unique with a
 * non-negative diagonal). */
static void lc_check_qr(const char *what, int64_t entry, kiln_dtype dt,
                        const double *a, const double *q, const double *r,
                        int64_t m, int64_t n, int64_t qc) {
  double eps = kt_eps(dt), mn = (double)(m > n ? m : n);
  double na = lc_fro(a, m, n, n);
  for (int64_t i = 0; i < qc; i++)
    for (int64_t j = 0; j < n; j++) {
      if (j < i)
        CHECK(r[i * n + j] == 0.0, "%s, matrix %lld: R(%lld, %lld) = %g is "
              "below the diagonal", what, (long long)entry, (long long)i,
              (long long)j, r[i * n + j]);
      if (j == i)
        CHECK(r[i * n + j] >= 0.0, "%s, matrix %lld: R(%lld, %lld) = %g is "
              "negative", what, (long long)entry, (long long)i,
              (long long)i, r[i * n + j]);
    }
  double res = 0;
  if (q == NULL) { /* R only: R^T R against A^T A */
    double e = kt_la_gram_diff(a, r, m, n, qc) / (na * na * mn * eps);
    CHECK(e < LC_THRESHOLD, "%s, matrix %lld: ||R^T R - A^T A|| is %.3g "
          "||A||^2 n eps", what, (long long)entry, e);
    return;
  }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = -a[i * n + j];
      for (int64_t k = 0; k < qc; k++)
        s += q[i * qc + k] * r[k * n + j];
      res += s * s;
    }
  double e = na == 0 ? sqrt(res) : sqrt(res) / (na * mn * eps);
  CHECK(e < LC_THRESHOLD, "%s, matrix %lld: ||A - QR|| / (||A|| n eps) = "
        "%.3g", what, (long long)entry, e);
  double orth = 0;
  for (int64_t i = 0; i < qc; i++)
    for (int64_t j = 0; j < qc; j++) {
      double s = i == j ? -1.0 : 0.0;
      for (int64_t k = 0; k < m; k++)
        s += q[k * qc + i] * q[k * qc + j];
      orth += s * s;
    }
  e = sqrt(orth) / (mn * eps);
  CHECK(e < LC_THRESHOLD, "%s, matrix %lld: ||Q^T Q - I|| / (n eps) = %.3g",
        what, (long long)entry, e);
}

/* Runs qr on `in` (batch x m x n values `a`, file shape `shape`) with a
 * mode ("reduced", "complete", "r" or NULL) and checks its files. */
static void lc_qr_case(const char *what, const char *in, const char *od,
                       const double *a, int ndim, const int64_t *shape,
                       kiln_dtype dt, const char *mode,
                       const char *dtype_flag) {
  const char *dev = kt_device_name();
  const char *args[12];
  int k = 0;
  args[k++] = "qr";
  args[k++] = in;
  args[k++] = "--out-dir";
  args[k++] = od;
  args[k++] = "--device";
  args[k++] = dev;
  if (mode) {
    args[k++] = "--mode";
    args[k++] = mode;
  }
  if (dtype_flag) {
    args[k++] = "--dtype";
    args[k++] = dtype_flag;
  }
  while (k < 12)
    args[k++] = NULL;
  bool r_only = mode && !strcmp(mode, "r");
  bool complete = mode && !strcmp(mode, "complete");
  lc_expect_ok(what, od, r_only ? 1 : 2,
               kt_kiln("linalg", args[0], args[1], args[2], args[3], args[4],
                       args[5], args[6], args[7], args[8], args[9], NULL));
  int64_t m = shape[ndim - 2], n = shape[ndim - 1];
  int64_t kk = m < n ? m : n, qc = complete ? m : kk;
  int64_t batch = lc_count(ndim - 2, shape);
  int64_t qs[KILN_MAX_NDIM], rs[KILN_MAX_NDIM];
  memcpy(qs, shape, (size_t)ndim * sizeof *qs);
  memcpy(rs, shape, (size_t)ndim * sizeof *rs);
  qs[ndim - 1] = qc;
  rs[ndim - 2] = qc;
  double *q = r_only ? NULL : lc_read(od, "Q", dt, ndim, qs);
  double *r = lc_read(od, "R", dt, ndim, rs);
  for (int64_t b = 0; b < batch; b++)
    lc_check_qr(what, b, dt, a + b * m * n, q ? q + b * m * qc : NULL,
                r + b * qc * n, m, n, qc);
  free(q);
  free(r);
  static const char *const qr_files[2] = {"Q", "R"};
  lc_clear(od, r_only ? qr_files + 1 : qr_files, r_only ? 1 : 2);
}

/* Batched tall float32 in every mode, converted to float64, a wide and
 * a square float64 matrix. */
void test_linalg_cli_qr(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lcqr"), od[4200], pa[4200], pw[4200], ps[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  int64_t sa[4] = {2, 3, 12, 5};
  double *a = kt_la_alloc(lc_count(4, sa));
  for (int64_t i = 0; i < lc_count(4, sa); i++)
    a[i] = kt_uniform(-1, 1);
  lc_write(dir, "a.npy", KILN_FLOAT32, 4, sa, a, pa, sizeof pa);
  lc_qr_case("qr float32 batched", pa, od, a, 4, sa, KILN_FLOAT32, NULL,
             NULL);
  lc_qr_case("qr --mode reduced", pa, od, a, 4, sa, KILN_FLOAT32, "reduced",
             NULL);
  lc_qr_case("qr --mode complete", pa, od, a, 4, sa, KILN_FLOAT32,
             "complete", NULL);
  lc_qr_case("qr --mode r", pa, od, a, 4, sa, KILN_FLOAT32, "r", NULL);
  lc_qr_case("qr --dtype float64", pa, od, a, 4, sa, KILN_FLOAT64, NULL,
             "float64");
  int64_t sw[2] = {4, 7}, ss[2] = {9, 9};
  double w[28], s[81];
  for (int i = 0; i < 28; i++)
    w[i] = kt_uniform(-2, 2);
  for (int i = 0; i < 81; i++)
    s[i] = kt_uniform(-2, 2);
  lc_write(dir, "w.npy", KILN_FLOAT64, 2, sw, w, pw, sizeof pw);
  lc_write(dir, "s.npy", KILN_FLOAT64, 2, ss, s, ps, sizeof ps);
  lc_qr_case("qr wide float64", pw, od, w, 2, sw, KILN_FLOAT64, NULL, NULL);
  lc_qr_case("qr wide --mode complete", pw, od, w, 2, sw, KILN_FLOAT64,
             "complete", NULL);
  lc_qr_case("qr square float64", ps, od, s, 2, ss, KILN_FLOAT64, NULL,
             NULL);
  lc_qr_case("qr square --dtype float32", ps, od, s, 2, ss, KILN_FLOAT32,
             "r", "float32");
  free(a);
  kt_rmtree(dir);
  free(dir);
}

/* ---- solve-triangular ---------------------------------------------------- */

/* Random triangular matrices (batch x n x n): the named triangle with a
 * diagonal of magnitude 1 to 2, garbage in the other triangle that must
 * not be read (and on the diagonal too with `unit`). */
static void lc_triangular(int64_t batch, int64_t n, bool upper, bool unit,
                          double *a) {
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) {
        bool in = upper ? j >= i : j <= i;
        double diag = kt_uniform(1, 2) * (kt_uniform(-1, 1) < 0 ? -1 : 1);
        a[(b * n + i) * n + j] = i == j && !unit ? diag
                                 : in && i != j  ? kt_uniform(-1, 1) /
                                                      (double)n
                                                 : kt_uniform(-50, 50);
      }
}

/* The matrix kiln should use for `a`: its triangle, ones on the diagonal
 * with `unit`, zeros elsewhere. */
static void lc_triangle_used(int64_t batch, int64_t n, bool upper,
                             bool unit, const double *a, double *used) {
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) {
        int64_t e = (b * n + i) * n + j;
        bool in = upper ? j >= i : j <= i;
        used[e] = i == j && unit ? 1.0 : in ? a[e] : 0.0;
      }
}

static void lc_triangular_case(const char *what, const char *dir,
                               const char *od, kiln_dtype dt, int a_ndim,
                               int64_t batch, int64_t n, int64_t k,
                               bool upper, bool unit) {
  int64_t ab = a_ndim > 2 ? batch : 1;
  double *a = kt_la_alloc(ab * n * n), *used = kt_la_alloc(ab * n * n);
  double *b = kt_la_alloc(batch * n * k);
  lc_triangular(ab, n, upper, unit, a);
  for (int64_t i = 0; i < batch * n * k; i++)
    b[i] = kt_uniform(-1, 1);
  int64_t sa[3] = {batch, n, n}, sb[3] = {batch, n, k};
  char pa[4200], pb[4200];
  lc_write(dir, "ta.npy", dt, a_ndim, a_ndim > 2 ? sa : sa + 1, a, pa,
           sizeof pa);
  lc_write(dir, "tb.npy", dt, 3, sb, b, pb, sizeof pb);
  lc_triangle_used(ab, n, upper, unit, a, used);
  const char *args[10] = {"solve-triangular", pa, pb, "--out-dir", od,
                          "--device", kt_device_name(), NULL, NULL, NULL};
  int na = 7;
  if (upper)
    args[na++] = "--upper";
  if (unit)
    args[na++] = "--unit-diagonal";
  lc_expect_ok(what, od, 1,
               kt_kiln("linalg", args[0], args[1], args[2], args[3], args[4],
                       args[5], args[6], args[7], args[8], NULL));
  double *x = lc_read(od, "X", dt, 3, sb);
  for (int64_t e = 0; e < batch; e++) {
    double res = lc_solve_residual(used + (a_ndim > 2 ? e : 0) * n * n,
                                   x + e * n * k, b + e * n * k, n, k, dt);
    CHECK(res < LC_THRESHOLD, "%s %s, matrix %lld: backward error %.3g "
          "n eps", what, kiln_dtype_name(dt), (long long)e, res);
  }
  free(x);
  static const char *const files[1] = {"X"};
  lc_clear(od, files, 1);
  free(a);
  free(used);
  free(b);
}

void test_linalg_cli_solve_triangular(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lctri"), od[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = d ? KILN_FLOAT64 : KILN_FLOAT32;
    lc_triangular_case("solve-triangular lower", dir, od, dt, 3, 3, 7, 4,
                       false, false);
    lc_triangular_case("solve-triangular --upper", dir, od, dt, 3, 3, 7, 4,
                       true, false);
    lc_triangular_case("solve-triangular --unit-diagonal", dir, od, dt, 3,
                       2, 6, 3, false, true);
    lc_triangular_case("solve-triangular --upper --unit-diagonal", dir, od,
                       dt, 3, 2, 6, 3, true, true);
    lc_triangular_case("solve-triangular, one A for a batch of B", dir, od,
                       dt, 2, 4, 5, 2, false, false);
  }
  kt_rmtree(dir);
  free(dir);
}

/* ---- lu ------------------------------------------------------------------ */

/* Runs lu on a batch x m x n input and checks perm (int32, a permutation),
 * L (unit lower), U (upper) and A[perm] = L U. */
static void lc_lu_case(const char *what, const char *dir, const char *od,
                       kiln_dtype dt, int ndim, const int64_t *shape) {
  int64_t m = shape[ndim - 2], n = shape[ndim - 1], k = m < n ? m : n;
  int64_t batch = lc_count(ndim - 2, shape);
  double *a = kt_la_alloc(batch * m * n);
  for (int64_t i = 0; i < batch * m * n; i++)
    a[i] = kt_uniform(-1, 1);
  char pa[4200];
  lc_write(dir, "la.npy", dt, ndim, shape, a, pa, sizeof pa);
  lc_expect_ok(what, od, 3,
               kt_kiln("linalg", "lu", pa, "--out-dir", od, "--device",
                       kt_device_name(), NULL));
  int64_t sp[KILN_MAX_NDIM], sl[KILN_MAX_NDIM], su[KILN_MAX_NDIM];
  memcpy(sp, shape, (size_t)ndim * sizeof *sp);
  memcpy(sl, shape, (size_t)ndim * sizeof *sl);
  memcpy(su, shape, (size_t)ndim * sizeof *su);
  sp[ndim - 2] = m;
  sl[ndim - 1] = k;
  su[ndim - 2] = k;
  double *perm = lc_read(od, "perm", KILN_INT32, ndim - 1, sp);
  double *l = lc_read(od, "L", dt, ndim, sl);
  double *u = lc_read(od, "U", dt, ndim, su);
  for (int64_t e = 0; e < batch; e++) {
    const double *ae = a + e * m * n, *pe = perm + e * m;
    const double *le = l + e * m * k, *ue = u + e * k * n;
    bool *seen = calloc((size_t)m, 1);
    CHECK(seen != NULL, "out of host memory");
    for (int64_t i = 0; i < m; i++) {
      CHECK(pe[i] >= 0 && pe[i] < (double)m && !seen[(int64_t)pe[i]],
            "%s, matrix %lld: perm is not a permutation (perm[%lld] = %g)",
            what, (long long)e, (long long)i, pe[i]);
      seen[(int64_t)pe[i]] = true;
    }
    free(seen);
    double res = 0;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        if (j < k)
          CHECK(j < i ? 1 : le[i * k + j] == (i == j ? 1.0 : 0.0),
                "%s, matrix %lld: L(%lld, %lld) = %g", what, (long long)e,
                (long long)i, (long long)j, le[i * k + j]);
        if (i < k && j < i)
          CHECK(ue[i * n + j] == 0.0, "%s, matrix %lld: U(%lld, %lld) = %g "
                "is below the diagonal", what, (long long)e, (long long)i,
                (long long)j, ue[i * n + j]);
        double s = -ae[(int64_t)pe[i] * n + j];
        for (int64_t p = 0; p < k; p++)
          s += le[i * k + p] * ue[p * n + j];
        res += s * s;
      }
    double mn = (double)(m > n ? m : n);
    double err = sqrt(res) / (lc_fro(ae, m, n, n) * mn * kt_eps(dt));
    CHECK(err < LC_THRESHOLD, "%s, matrix %lld: ||A[perm] - L U|| / (||A|| "
          "n eps) = %.3g", what, (long long)e, err);
    /* partial pivoting keeps |L| <= 1 */
    for (int64_t i = 0; i < m * k; i++)
      CHECK(fabs(le[i]) <= 1.0, "%s, matrix %lld: |L| exceeds 1", what,
            (long long)e);
  }
  free(perm);
  free(l);
  free(u);
  free(a);
  static const char *const files[3] = {"perm", "L", "U"};
  lc_clear(od, files, 3);
}

void test_linalg_cli_lu(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lclu"), od[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  int64_t s1[4] = {2, 2, 6, 6}, s2[2] = {7, 4}, s3[3] = {3, 4, 9};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = d ? KILN_FLOAT64 : KILN_FLOAT32;
    lc_lu_case("lu batched square", dir, od, dt, 4, s1);
    lc_lu_case("lu tall", dir, od, dt, 2, s2);
    lc_lu_case("lu wide batched", dir, od, dt, 3, s3);
  }
  kt_rmtree(dir);
  free(dir);
}

/* ---- solve, inv, det ----------------------------------------------------- */

void test_linalg_cli_solve_inv_det(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lcsol"), od[4200], pa[4200], pb[4200], pv[4200];
  char p1[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  const char *dev = kt_device_name();
  static const char *const xf[1] = {"X"}, *const invf[1] = {"Ainv"};
  static const char *const detf[1] = {"det"};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = d ? KILN_FLOAT64 : KILN_FLOAT32;
    int64_t n = 8, k = 3, batch = 6;
    int64_t sa[4] = {2, 3, 8, 8}, sb[4] = {2, 3, 8, 3}, sv[1] = {8};
    double *a = kt_la_alloc(batch * n * n), *b = kt_la_alloc(batch * n * k);
    double v[8];
    lc_dominant(batch, n, a);
    for (int64_t i = 0; i < batch * n * k; i++)
      b[i] = kt_uniform(-1, 1);
    for (int i = 0; i < 8; i++)
      v[i] = kt_uniform(-1, 1);
    lc_write(dir, "a.npy", dt, 4, sa, a, pa, sizeof pa);
    lc_write(dir, "b.npy", dt, 4, sb, b, pb, sizeof pb);
    lc_write(dir, "v.npy", dt, 1, sv, v, pv, sizeof pv);
    /* solve, batched */
    lc_expect_ok("solve batched", od, 1,
                 kt_kiln("linalg", "solve", pa, pb, "--out-dir", od,
                         "--device", dev, NULL));
    double *x = lc_read(od, "X", dt, 4, sb);
    for (int64_t e = 0; e < batch; e++) {
      double r = lc_solve_residual(a + e * n * n, x + e * n * k,
                                   b + e * n * k, n, k, dt);
      CHECK(r < LC_THRESHOLD, "solve %s, matrix %lld: backward error %.3g "
            "n eps", kiln_dtype_name(dt), (long long)e, r);
    }
    free(x);
    lc_clear(od, xf, 1);
    /* solve, one matrix and a vector right-hand side */
    int64_t s2[2] = {8, 8};
    lc_write(dir, "a1.npy", dt, 2, s2, a, p1, sizeof p1);
    lc_expect_ok("solve with a vector", od, 1,
                 kt_kiln("linalg", "solve", p1, pv, "--out-dir", od,
                         "--device", dev, NULL));
    x = lc_read(od, "X", dt, 1, sv);
    double r = lc_solve_residual(a, x, v, n, 1, dt);
    CHECK(r < LC_THRESHOLD, "solve with a vector: backward error %.3g", r);
    free(x);
    lc_clear(od, xf, 1);
    /* inv: A Ainv = I */
    lc_expect_ok("inv batched", od, 1,
                 kt_kiln("linalg", "inv", pa, "--out-dir", od, "--device",
                         dev, NULL));
    double *ai = lc_read(od, "Ainv", dt, 4, sa);
    double *eye = kt_la_alloc(n * n);
    for (int64_t i = 0; i < n; i++)
      eye[i * n + i] = 1;
    for (int64_t e = 0; e < batch; e++) {
      double res = lc_solve_residual(a + e * n * n, ai + e * n * n, eye, n,
                                     n, dt);
      CHECK(res < LC_THRESHOLD, "inv %s, matrix %lld: ||A Ainv - I|| is "
            "%.3g n eps", kiln_dtype_name(dt), (long long)e, res);
    }
    free(ai);
    free(eye);
    lc_clear(od, invf, 1);
    /* det: batch shape, against a host LU */
    lc_expect_ok("det batched", od, 1,
                 kt_kiln("linalg", "det", pa, "--out-dir", od, "--device",
                         dev, NULL));
    double *det = lc_read(od, "det", dt, 2, sa);
    for (int64_t e = 0; e < batch; e++) {
      double ref = lc_det(a + e * n * n, n);
      CHECK(fabs(det[e] - ref) <= 16.0 * (double)n * kt_eps(dt) * fabs(ref),
            "det %s, matrix %lld: %.17g, host LU %.17g", kiln_dtype_name(dt),
            (long long)e, det[e], ref);
    }
    free(det);
    lc_clear(od, detf, 1);
    /* det of one matrix is 0-d; with --dtype the other dtype */
    kiln_dtype other = d ? KILN_FLOAT32 : KILN_FLOAT64;
    lc_expect_ok("det of one matrix, --dtype", od, 1,
                 kt_kiln("linalg", "det", p1, "--out-dir", od, "--device",
                         dev, "--dtype", kiln_dtype_name(other), NULL));
    det = lc_read(od, "det", other, 0, sv);
    double conv[64]; /* the first matrix as --dtype converts it */
    unsigned char cell[8];
    for (int i = 0; i < 64; i++) {
      kt_set(other, cell, 0, a[i]);
      conv[i] = kt_get(other, cell, 0);
    }
    double ref = lc_det(conv, n);
    CHECK(fabs(det[0] - ref) <= 16.0 * (double)n * kt_eps(other) * fabs(ref),
          "det of one matrix in %s: %.17g, host LU %.17g",
          kiln_dtype_name(other), det[0], ref);
    free(det);
    lc_clear(od, detf, 1);
    free(a);
    free(b);
  }
  kt_rmtree(dir);
  free(dir);
}

/* ---- numpy --------------------------------------------------------------- */

/* The same operations driven from numpy, compared with numpy.linalg. */
void test_linalg_cli_numpy(void) {
  char *dir = kt_la_numpy_dir("lcnp");
  char script[8192];
  snprintf(script, sizeof script,
           KT_LA_NUMPY_HEAD
           "od = os.path.join(d, 'out')\n"
           "os.makedirs(od)\n"
           "def run(op, inputs, names, *flags):\n"
           "    paths = []\n"
           "    for i, x in enumerate(inputs):\n"
           "        paths.append(os.path.join(d, 'in%%d.npy' %% i))\n"
           "        np.save(paths[-1], x)\n"
           "    r = subprocess.run([kiln, 'linalg', op, *paths, '--out-dir',\n"
           "        od, '--device', dev, *flags], capture_output=True,\n"
           "        text=True)\n"
           "    assert r.returncode == 0, (op, r.stderr)\n"
           "    assert sorted(os.listdir(od)) == sorted(n + '.npy' for n in\n"
           "        names), os.listdir(od)\n"
           "    out = [np.load(os.path.join(od, n + '.npy')) for n in names]\n"
           "    for n in names:\n"
           "        os.remove(os.path.join(od, n + '.npy'))\n"
           "    return out\n"
           "T = lambda x: np.swapaxes(x, -1, -2)\n"
           "for dt, tol in ((np.float32, 2e-4), (np.float64, 1e-11)):\n"
           "    a = rng.standard_normal((2, 3, 10, 4)).astype(dt)\n"
           "    q, r = run('qr', [a], ['Q', 'R'])\n"
           "    assert q.dtype == dt and q.shape == (2, 3, 10, 4), q.shape\n"
           "    assert r.shape == (2, 3, 4, 4) and np.array_equal(r, "
           "np.triu(r))\n"
           "    assert (np.diagonal(r, axis1=-2, axis2=-1) >= 0).all()\n"
           "    assert np.allclose(q @ r, a, atol=tol * 10)\n"
           "    rr = np.linalg.qr(a.astype(np.float64), mode='r')\n"
           "    rr = rr * np.sign(np.diagonal(rr, axis1=-2, "
           "axis2=-1))[..., :, None]\n"
           "    assert np.allclose(r, rr, atol=tol * 10), abs(r - rr).max()\n"
           "    (r2,) = run('qr', [a], ['R'], '--mode', 'r')\n"
           "    assert np.array_equal(r2.shape, r.shape)\n"
           "    q, r = run('qr', [a], ['Q', 'R'], '--mode=complete')\n"
           "    assert q.shape == (2, 3, 10, 10) and r.shape == (2, 3, 10, 4)\n"
           "    assert np.allclose(T(q) @ q, np.eye(10), atol=tol * 10)\n"
           "    n = 7\n"
           "    A = (rng.standard_normal((4, n, n)) + n * np.eye(n))"
           ".astype(dt)\n"
           "    B = rng.standard_normal((4, n, 2)).astype(dt)\n"
           "    A64, B64 = A.astype(np.float64), B.astype(np.float64)\n"
           "    (x,) = run('solve', [A, B], ['X'])\n"
           "    assert x.dtype == dt and x.shape == B.shape\n"
           "    assert np.allclose(x, np.linalg.solve(A64, B64), rtol=tol * 10,"
           " atol=tol * 10)\n"
           "    (ai,) = run('inv', [A], ['Ainv'])\n"
           "    assert np.allclose(ai, np.linalg.inv(A64), rtol=tol * 10, "
           "atol=tol * 10)\n"
           "    (de,) = run('det', [A], ['det'])\n"
           "    assert de.shape == (4,) and de.dtype == dt\n"
           "    assert np.allclose(de, np.linalg.det(A64), rtol=tol * 10)\n"
           "    p, L, U = run('lu', [A], ['perm', 'L', 'U'])\n"
           "    assert p.dtype == np.int32 and p.shape == (4, n)\n"
           "    assert np.allclose(np.take_along_axis(A64, "
           "p[..., None].astype(np.int64), axis=-2), L @ U, atol=tol * 20)\n"
           "    tl = np.tril(A64)\n"
           "    (x,) = run('solve-triangular', [A, B], ['X'])\n"
           "    assert np.allclose(tl @ x, B64, atol=tol * 20), "
           "abs(tl @ x - B64).max()\n"
           "    tu = np.triu(A64, 1) + np.eye(n)\n"
           "    (x,) = run('solve-triangular', [A, B], ['X'], '--upper',\n"
           "        '--unit-diagonal')\n"
           "    assert np.allclose(tu @ x, B64, atol=tol * 200), "
           "abs(tu @ x - B64).max()\n",
           (unsigned long long)kt_seed);
  kt_python_check(dir, script, "kiln linalg");
  kt_rmtree(dir);
  free(dir);
}

/* ---- errors -------------------------------------------------------------- */

/* Usage errors (exit 2), unsuitable inputs and failing operations (exit
 * 1): one line on stderr, nothing written. */
void test_linalg_cli_op_errors(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lcerr"), od[4200], pa[4200], pb[4200], pr[4200];
  char pv[4200], ps[4200], p3[4200], pi[4200], p2b[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  const char *dev = kt_device_name();
  int64_t s44[2] = {4, 4}, s43[2] = {4, 3}, s34[2] = {3, 4}, s4[1] = {4};
  int64_t s3[3] = {3, 4, 4};
  double a[16], b[12], r12[12], v4[4], sing[48], i16[16];
  lc_dominant(1, 4, a);
  for (int i = 0; i < 12; i++)
    b[i] = r12[i] = kt_uniform(-1, 1);
  for (int i = 0; i < 4; i++)
    v4[i] = kt_uniform(-1, 1);
  /* batch entry 1 singular: its third row is twice its first */
  lc_dominant(3, 4, sing);
  for (int j = 0; j < 4; j++)
    sing[16 + 8 + j] = 2 * sing[16 + j];
  for (int i = 0; i < 16; i++)
    i16[i] = (double)(i % 5);
  lc_write(dir, "a.npy", KILN_FLOAT64, 2, s44, a, pa, sizeof pa);
  lc_write(dir, "b.npy", KILN_FLOAT64, 2, s43, b, pb, sizeof pb);
  lc_write(dir, "r.npy", KILN_FLOAT64, 2, s34, r12, pr, sizeof pr);
  lc_write(dir, "v.npy", KILN_FLOAT64, 1, s4, v4, pv, sizeof pv);
  lc_write(dir, "s.npy", KILN_FLOAT64, 3, s3, sing, ps, sizeof ps);
  lc_write(dir, "b3.npy", KILN_FLOAT32, 2, s43, b, p3, sizeof p3);
  int64_t s243[3] = {2, 4, 3};
  double b24[24];
  for (int i = 0; i < 24; i++)
    b24[i] = kt_uniform(-1, 1);
  lc_write(dir, "b2.npy", KILN_FLOAT64, 3, s243, b24, p2b, sizeof p2b);
  snprintf(pi, sizeof pi, "%s/i.npy", dir);
  int32_t ints[16];
  for (int i = 0; i < 16; i++)
    ints[i] = (int32_t)i16[i];
  kt_npy_write(pi, KILN_INT32, 2, s44, ints);

  /* wrong input counts: usage errors naming the inputs */
  static const char *const one[] = {"qr", "lu", "inv", "det"};
  for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
    kt_la_cli_expect_error(one[i], od, 2, "takes one input, A.npy", "2 were given",
                    kt_kiln("linalg", one[i], pa, pa, "--out-dir", od,
                            NULL));
    kt_la_cli_expect_error(one[i], od, 2, "takes one input", "0 were given",
                    kt_kiln("linalg", one[i], "--out-dir", od, NULL));
  }
  static const char *const two[] = {"solve", "solve-triangular"};
  for (size_t i = 0; i < 2; i++)
    kt_la_cli_expect_error(two[i], od, 2, "takes two inputs, A.npy and B.npy",
                    "1 was given",
                    kt_kiln("linalg", two[i], pa, "--out-dir", od, NULL));
  /* options of other operations and unknown ones */
  kt_la_cli_expect_error("--upper for qr", od, 2,
                  "--upper is an option of cholesky and solve-triangular",
                  "qr does not take it",
                  kt_kiln("linalg", "qr", pa, "--upper", "--out-dir", od,
                          NULL));
  kt_la_cli_expect_error("--mode for lu", od, 2, "--mode is an option of qr",
                  "lu does not take it",
                  kt_kiln("linalg", "lu", pa, "--mode", "r", "--out-dir", od,
                          NULL));
  kt_la_cli_expect_error("--unit-diagonal for cholesky", od, 2,
                  "--unit-diagonal is an option of solve-triangular",
                  "cholesky",
                  kt_kiln("linalg", "cholesky", pa, "--unit-diagonal",
                          "--out-dir", od, NULL));
  kt_la_cli_expect_error("--alpha for solve", od, 2, "--alpha is an option of gemm",
                  NULL,
                  kt_kiln("linalg", "solve", pa, pb, "--alpha", "2",
                          "--out-dir", od, NULL));
  kt_la_cli_expect_error("--upper for det", od, 2, "--upper", "det",
                  kt_kiln("linalg", "det", pa, "--upper", "--out-dir", od,
                          NULL));
  kt_la_cli_expect_error("unknown --lower", od, 2, "unknown option '--lower'", NULL,
                  kt_kiln("linalg", "solve-triangular", pa, pb, "--lower",
                          "--out-dir", od, NULL));
  kt_la_cli_expect_error("a typo of --unit-diagonal", od, 2,
                  "did you mean '--unit-diagonal'", NULL,
                  kt_kiln("linalg", "solve-triangular", pa, pb,
                          "--unit-diagonl", "--out-dir", od, NULL));
  kt_la_cli_expect_error("--mode full", od, 2, "--mode 'full'",
                  "reduced, complete or r",
                  kt_kiln("linalg", "qr", pa, "--mode", "full", "--out-dir",
                          od, NULL));
  kt_la_cli_expect_error("--mode twice", od, 2, "--mode is given twice", NULL,
                  kt_kiln("linalg", "qr", pa, "--mode", "r", "--mode=r",
                          "--out-dir", od, NULL));
  kt_la_cli_expect_error("--mode without a value", od, 2, "--mode needs a value",
                  NULL,
                  kt_kiln("linalg", "qr", pa, "--out-dir", od, "--mode",
                          NULL));
  kt_la_cli_expect_error("unknown operation", od, 2, "did you mean 'solve'", NULL,
                  kt_kiln("linalg", "slove", pa, pb, "--out-dir", od, NULL));
  /* inputs that do not fit: exit 1 */
  kt_la_cli_expect_error("solve, B rows", od, 1, "has 3 rows but A", "4x4",
                  kt_kiln("linalg", "solve", pa, pr, "--out-dir", od,
                          "--device", dev, NULL));
  kt_la_cli_expect_error("solve-triangular, B rows", od, 1, "has 3 rows", NULL,
                  kt_kiln("linalg", "solve-triangular", pa, pr, "--out-dir",
                          od, NULL));
  kt_la_cli_expect_error("solve, batch dimensions", od, 1, "batch dimensions",
                  NULL,
                  kt_kiln("linalg", "solve", ps, p2b, "--out-dir", od,
                          NULL));
  kt_la_cli_expect_error("inv of 4x3", od, 1, "square", "4x3",
                  kt_kiln("linalg", "inv", pb, "--out-dir", od, NULL));
  kt_la_cli_expect_error("det of 4x3", od, 1, "square", NULL,
                  kt_kiln("linalg", "det", pb, "--out-dir", od, NULL));
  kt_la_cli_expect_error("solve with a 4x3 A", od, 1, "square", NULL,
                  kt_kiln("linalg", "solve", pb, pa, "--out-dir", od, NULL));
  kt_la_cli_expect_error("qr of a vector", od, 1, "matrices", "at least 2",
                  kt_kiln("linalg", "qr", pv, "--out-dir", od, NULL));
  kt_la_cli_expect_error("lu of a vector", od, 1, "matrices", NULL,
                  kt_kiln("linalg", "lu", pv, "--out-dir", od, NULL));
  kt_la_cli_expect_error("solve, a vector for a batch", od, 1, "vector", NULL,
                  kt_kiln("linalg", "solve", ps, pv, "--out-dir", od, NULL));
  kt_la_cli_expect_error("float64 with float32", od, 1, "--dtype", "float32",
                  kt_kiln("linalg", "solve", pa, p3, "--out-dir", od, NULL));
  kt_la_cli_expect_error("int32 without --dtype", od, 1, "int32", "--dtype",
                  kt_kiln("linalg", "inv", pi, "--out-dir", od, NULL));
  kt_la_cli_expect_error("missing file", od, 1, "nope.npy", NULL,
                  kt_kiln("linalg", "det", "/nonexistent/nope.npy",
                          "--out-dir", od, NULL));
  kt_la_cli_expect_error("missing out-dir", od, 1, "--out-dir", NULL,
                  kt_kiln("linalg", "det", pa, "--out-dir",
                          "/nonexistent/dir", NULL));
  /* a singular matrix: the library's error names the matrix and pivot */
  kt_la_cli_expect_error("solve, singular entry 1", od, 1, "matrix 1 ", "pivot",
                  kt_kiln("linalg", "solve", ps, ps, "--out-dir", od,
                          "--device", dev, NULL));
  kt_la_cli_expect_error("inv, singular entry 1", od, 1, "matrix 1 ", "pivot",
                  kt_kiln("linalg", "inv", ps, "--out-dir", od, "--device",
                          dev, NULL));
  kt_la_cli_expect_error("lu, singular entry 1", od, 1, "matrix 1 ", "pivot",
                  kt_kiln("linalg", "lu", ps, "--out-dir", od, "--device",
                          dev, NULL));
  /* det of a singular matrix is 0, not an error */
  lc_expect_ok("det of singular", od, 1,
               kt_kiln("linalg", "det", ps, "--out-dir", od, "--device", dev,
                       NULL));
  int64_t sbat[1] = {3};
  double *det = lc_read(od, "det", KILN_FLOAT64, 1, sbat);
  CHECK(fabs(det[1]) <= 1e-12 * fabs(det[0]), "det of the singular entry "
        "is %g", det[1]);
  free(det);
  static const char *const detf[1] = {"det"};
  lc_clear(od, detf, 1);
  /* results appear together or not at all: R.npy cannot be written (a
   * directory of that name), so Q.npy must not appear either */
  char blocker[4300];
  snprintf(blocker, sizeof blocker, "%s/R.npy", od);
  CHECK(mkdir(blocker, 0700) == 0, "mkdir %s", blocker);
  kt_cli r = kt_kiln("linalg", "qr", pa, "--out-dir", od, "--device", dev,
                     NULL);
  CHECK(r.rc == 1 && strstr(r.err, "R.npy") &&
            strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
        "qr into a blocked R.npy: exit %d, stderr: %s", r.rc, r.err);
  CHECK(kt_dir_count(od) == 1, "qr into a blocked R.npy left %d entries "
        "(Q.npy or a temporary)", kt_dir_count(od));
  kt_cli_free(&r);
  CHECK(rmdir(blocker) == 0, "rmdir %s", blocker);
  /* kiln help linalg: every operation with its inputs, outputs, options */
  r = kt_kiln("help", "linalg", NULL);
  CHECK(r.rc == 0, "kiln help linalg exit %d: %s", r.rc, r.err);
  static const char *const lines[] = {
      "gemm A.npy B.npy [--trans-a] [--trans-b] [--alpha F]",
      "qr A.npy [--mode reduced|complete|r]", "-> Q.npy R.npy",
      "cholesky A.npy [--upper]",
      "solve-triangular A.npy B.npy [--upper] [--unit-diagonal]",
      "lu A.npy", "-> perm.npy L.npy U.npy", "solve A.npy B.npy",
      "inv A.npy", "-> Ainv.npy", "det A.npy", "-> det.npy", "-> X.npy",
      "-> C.npy"};
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
    CHECK(strstr(r.out, lines[i]) != NULL, "help has \"%s\":\n%s", lines[i],
          r.out);
  CHECK(!strstr(r.out, "not implemented"), "help lists nothing as missing");
  kt_cli_free(&r);
  kt_rmtree(dir);
  free(dir);
}
