/*
 * The blocked Cholesky's variants (src/linalg/cholesky.c's knobs): float32
 * updates on gemm_f32, the two-panel splits' update inside chol_panel
 * (FUSE) and updates cut along their depth (split-K), each forced on and
 * off at small sizes through the kiln__chol_*_test hooks on the device
 * under test, alone and together. Checked: the backward error
 * ||A - L L^T||_F / (||A||_F n eps) against the float64 host matrix, zeros
 * above (below) the diagonal, closeness to the factor without the
 * variant, and the same bits run to run; random and ill-conditioned
 * matrices (condition 1e6 in float32, 1e12 in float64), lower and upper,
 * batched, through path 2 and path 3's batched updates.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "linalg/linalg.h"
#include "linalg_check.h"

/* Backward errors below this many units of n eps pass. */
#define CA_THRESHOLD 8.0

static const kiln_dtype ca_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* batch random SPD matrices of n x n (kt_la_spd, or with `ill`
 * kt_la_spd_ill of condition 1e6 / 1e12 by dtype) as a device array of
 * dt (n x n for one matrix, else batch x n x n), their values (rounded
 * as the array holds them) in *a. */
static kiln_array *ca_spd_array(kiln_dtype dt, int64_t batch, int64_t n,
                                bool ill, double **a) {
  *a = kt_la_alloc(batch * n * n);
  for (int64_t b = 0; b < batch; b++)
    if (ill)
      kt_la_spd_ill(n, dt == KILN_FLOAT32 ? 1e6 : 1e12, *a + b * n * n);
    else
      kt_la_spd(n, *a + b * n * n);
  int64_t shape[3] = {batch, n, n};
  int ndim = batch == 1 ? 2 : 3;
  return kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, *a);
}

/* Checks the factors f (batch x n x n) of a (kt_la_chol_check). */
static void ca_check(const char *what, kiln_dtype dt, bool upper,
                     int64_t batch, int64_t n, const double *a,
                     const double *f) {
  kt_la_chol_check(what, dt, upper, batch, n, a, f, CA_THRESHOLD);
}

/* arr factored through `path` with the float32 GEMM mode `gemm` (the test
 * hook; the other hooks as the caller set them), read back as double; the
 * GEMM hook is reset after. */
static double *ca_factor_g(kiln_array *arr, bool upper, int path, int gemm) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln__chol_gemm_test = gemm;
  kiln_array *f = NULL;
  kiln_status st = kiln_cholesky_ex(arr, upper, &o, &f);
  kiln__chol_gemm_test = -1;
  CHECK_OK(st);
  double *v = kt_read_f64(f);
  kiln_array_destroy(f);
  return v;
}

static double *ca_factor(kiln_array *arr, bool upper, int path) {
  return ca_factor_g(arr, upper, path, -1);
}

/* Elements of x and y (count of them) that differ: bit for bit where
 * `exact`, else by more than tol relative to the largest |y|. */
static void ca_compare(const char *what, const double *x, const double *y,
                       int64_t count, bool exact, double tol) {
  double big = 0;
  for (int64_t i = 0; i < count; i++)
    big = fmax(big, fabs(y[i]));
  for (int64_t i = 0; i < count; i++) {
    bool same = exact ? x[i] == y[i] : fabs(x[i] - y[i]) <= tol * big;
    CHECK(same, "%s: element %lld is %.17g, not %.17g", what, (long long)i,
          x[i], y[i]);
  }
}

/* Float32 updates forced onto gemm_f32 (kiln__chol_gemm_test = 2; at
 * these sizes the GEMM's own choice is SIMT tiles): valid factors, close
 * to the GEMM's own choice, the same bits run to run, batched and
 * through path 3's batched updates. */
void test_linalg_cholesky_gemm(void) {
  static const int64_t cases[4][3] = {
      {1, 300, 2}, {1, 260, 3}, {3, 200, 2}, {2, 150, 3}};
  for (int c = 0; c < 4; c++) {
    int64_t batch = cases[c][0], n = cases[c][1];
    int path = (int)cases[c][2];
    double *a = NULL;
    kiln_array *arr = ca_spd_array(KILN_FLOAT32, batch, n, false, &a);
    for (int upper = 0; upper < 2; upper++) {
      char what[128];
      snprintf(what, sizeof what, "float32 %lld x %lld x %lld %s path %d "
               "on gemm_f32", (long long)batch, (long long)n, (long long)n,
               upper ? "upper" : "lower", path);
      double *own = ca_factor_g(arr, upper, path, 0);
      double *f32 = ca_factor_g(arr, upper, path, 2);
      double *again = ca_factor_g(arr, upper, path, 2);
      ca_check(what, KILN_FLOAT32, upper, batch, n, a, f32);
      ca_compare(what, f32, own, batch * n * n, false,
                 64 * (double)n * kt_eps(KILN_FLOAT32));
      ca_compare(what, again, f32, batch * n * n, true, 0);
      free(own);
      free(f32);
      free(again);
    }
    kiln_array_destroy(arr);
    free(a);
  }
}

/* The two-panel splits' update inside chol_panel (kiln__chol_fuse_test):
 * on and off, valid factors close to each other, the same bits run to
 * run; 129 ends in a fused pair whose right panel is one column, 300 in
 * one of 44 columns; ill-conditioned matrices (condition 1e6 in float32,
 * 1e12 in float64); batched; path 3; together with gemm_f32 and split-K
 * (every update at least 128 deep cut into pieces). */
static void ca_fuse_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                         bool ill) {
  double *a = NULL;
  kiln_array *arr = ca_spd_array(dt, batch, n, ill, &a);
  for (int upper = 0; upper < 2; upper++) {
    char what[128];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s%s path %d fused",
             kiln_dtype_name(dt), (long long)batch, (long long)n,
             (long long)n, ill ? "ill-conditioned " : "",
             upper ? "upper" : "lower", path);
    kiln__chol_fuse_test = 0;
    double *off = ca_factor(arr, upper, path);
    kiln__chol_fuse_test = 1;
    double *on = ca_factor(arr, upper, path);
    double *again = ca_factor(arr, upper, path);
    kiln__chol_splitk_test = 2;
    double *all = ca_factor_g(arr, upper, path, 2);
    kiln__chol_splitk_test = -1;
    kiln__chol_fuse_test = -1;
    ca_check(what, dt, upper, batch, n, a, on);
    ca_check(what, dt, upper, batch, n, a, all);
    double tol = 64 * (double)n * kt_eps(dt) *
                 (ill ? (dt == KILN_FLOAT32 ? 1e3 : 1e6) : 1.0);
    ca_compare(what, on, off, batch * n * n, false, tol);
    ca_compare(what, again, on, batch * n * n, true, 0);
    free(off);
    free(on);
    free(again);
    free(all);
  }
  kiln_array_destroy(arr);
  free(a);
}

void test_linalg_cholesky_fuse(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    ca_fuse_case(dt, 1, 129, 2, false);
    ca_fuse_case(dt, 1, 300, 2, false);
    ca_fuse_case(dt, 1, 256, 2, true);
    ca_fuse_case(dt, 3, 200, 2, false);
    ca_fuse_case(dt, 2, 192, 3, false);
  }
}

/* Updates cut along their depth (kiln__chol_splitk_test = 2: every one
 * at least 128 deep into pieces of 64 columns, through a scratch array
 * and chol_ksum; 520 has updates 256 deep, in 4): valid
 * factors close to the plain ones, the same bits run to run, lower and
 * upper, batched, path 3's batched blocks, and with FUSE (the fused
 * panels' updates then skip the GEMMs, the others still split). */
void test_linalg_cholesky_splitk(void) {
  static const int64_t cases[5][3] = {
      {1, 300, 2}, {1, 520, 3}, {3, 200, 2}, {2, 260, 3}, {1, 129, 2}};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    for (int c = 0; c < 5; c++) {
      int64_t batch = cases[c][0], n = cases[c][1];
      int path = (int)cases[c][2];
      double *a = NULL;
      kiln_array *arr = ca_spd_array(dt, batch, n, false, &a);
      for (int upper = 0; upper < 2; upper++) {
        char what[128];
        snprintf(what, sizeof what, "%s %lld x %lld x %lld %s path %d "
                 "split-K", kiln_dtype_name(dt), (long long)batch,
                 (long long)n, (long long)n, upper ? "upper" : "lower",
                 path);
        double *plain = ca_factor(arr, upper, path);
        kiln__chol_splitk_test = 2;
        double *split = ca_factor(arr, upper, path);
        double *again = ca_factor(arr, upper, path);
        kiln__chol_fuse_test = 1;
        double *fused = ca_factor(arr, upper, path);
        kiln__chol_splitk_test = -1;
        kiln__chol_fuse_test = -1;
        ca_check(what, dt, upper, batch, n, a, split);
        ca_check(what, dt, upper, batch, n, a, fused);
        ca_compare(what, split, plain, batch * n * n, false,
                   64 * (double)n * kt_eps(dt));
        ca_compare(what, again, split, batch * n * n, true, 0);
        ca_compare(what, fused, split, batch * n * n, false,
                   64 * (double)n * kt_eps(dt));
        free(plain);
        free(split);
        free(again);
        free(fused);
      }
      kiln_array_destroy(arr);
      free(a);
    }
  }
}

/* Float32 updates of fewer tiles than kiln__chol_narrow_test on the
 * GEMM's auto path instead of the trapezoid on gemm_f32 (9999: every
 * update at these sizes; 0: none): valid factors, close to each other, the
 * same bits run to run, lower and upper, batched, ill-conditioned. */
void test_linalg_cholesky_narrow(void) {
  static const int64_t cases[3][3] = {{1, 300, 0}, {3, 200, 0}, {1, 260, 1}};
  for (int c = 0; c < 3; c++) {
    int64_t batch = cases[c][0], n = cases[c][1];
    bool ill = cases[c][2] != 0;
    double *a = NULL;
    kiln_array *arr = ca_spd_array(KILN_FLOAT32, batch, n, ill, &a);
    for (int upper = 0; upper < 2; upper++) {
      char what[128];
      snprintf(what, sizeof what, "float32 %lld x %lld x %lld %s%s, narrow "
               "updates on the GEMM's auto path", (long long)batch,
               (long long)n, (long long)n, upper ? "upper" : "lower",
               ill ? " ill-conditioned" : "");
      kiln__chol_narrow_test = 0;
      double *own = ca_factor(arr, upper, 2);
      kiln__chol_narrow_test = 9999;
      double *nar = ca_factor(arr, upper, 2);
      double *again = ca_factor(arr, upper, 2);
      kiln__chol_narrow_test = -1;
      ca_check(what, KILN_FLOAT32, upper, batch, n, a, nar);
      ca_compare(what, nar, own, batch * n * n, false,
                 (ill ? 1e4 : 64.0) * (double)n * kt_eps(KILN_FLOAT32));
      ca_compare(what, again, nar, batch * n * n, true, 0);
      free(own);
      free(nar);
      free(again);
    }
    kiln_array_destroy(arr);
    free(a);
  }
}

/* The panel kernel (kiln__chol_panel_test): chol_panel2 (8-column rounds,
 * pivots in registers) and chol_panel (16-column rounds, pivots by
 * shuffles) both give valid factors, close to each other, chol_panel2 the
 * same bits run to run, alone and with FUSE (the fused update is its own
 * code in each kernel); 129 ends in a panel of one column, 300 in one of
 * 44; ill-conditioned (condition 1e6 in float32, 1e12 in float64);
 * batched; path 3. */
static void ca_panel_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                          bool ill) {
  double *a = NULL;
  kiln_array *arr = ca_spd_array(dt, batch, n, ill, &a);
  for (int upper = 0; upper < 2; upper++) {
    char what[128];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s%s path %d panel",
             kiln_dtype_name(dt), (long long)batch, (long long)n,
             (long long)n, ill ? "ill-conditioned " : "",
             upper ? "upper" : "lower", path);
    kiln__chol_panel_test = 0;
    double *old = ca_factor(arr, upper, path);
    kiln__chol_fuse_test = 1;
    double *old_fused = ca_factor(arr, upper, path);
    kiln__chol_panel_test = 1;
    double *fused = ca_factor(arr, upper, path);
    kiln__chol_fuse_test = 0;
    double *now = ca_factor(arr, upper, path);
    double *again = ca_factor(arr, upper, path);
    kiln__chol_fuse_test = -1;
    kiln__chol_panel_test = -1;
    ca_check(what, dt, upper, batch, n, a, now);
    ca_check(what, dt, upper, batch, n, a, fused);
    ca_check(what, dt, upper, batch, n, a, old);
    ca_check(what, dt, upper, batch, n, a, old_fused);
    double tol = 64 * (double)n * kt_eps(dt) *
                 (ill ? (dt == KILN_FLOAT32 ? 1e3 : 1e6) : 1.0);
    ca_compare(what, now, old, batch * n * n, false, tol);
    ca_compare(what, fused, old_fused, batch * n * n, false, tol);
    ca_compare(what, fused, now, batch * n * n, false, tol);
    ca_compare(what, again, now, batch * n * n, true, 0);
    free(old);
    free(old_fused);
    free(fused);
    free(now);
    free(again);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* A batch whose entry `bad` fails at leading minor `order` (its diagonal
 * element order-1 made very negative, or NaN), factored with chol_panel2
 * (FUSE as `fuse`): the call fails naming the first failing minor and the
 * entry, and leaves *out untouched. */
static void ca_panel_not_pd(kiln_dtype dt, int64_t batch, int64_t n,
                            int64_t bad, int64_t order, bool upper,
                            int fuse, bool nan) {
  double *a = kt_la_alloc(batch * n * n);
  for (int64_t b = 0; b < batch; b++)
    kt_la_spd(n, a + b * n * n);
  a[bad * n * n + (order - 1) * (n + 1)] = nan ? NAN : -1e3 * (double)n;
  int64_t shape[3] = {batch, n, n};
  kiln_array *arr = kt_la_array(dt, 3, shape, a);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 2;
  kiln__chol_panel_test = 1;
  kiln__chol_fuse_test = fuse;
  kiln_array *sentinel = (kiln_array *)&o, *out = sentinel;
  kiln_status st = kiln_cholesky_ex(arr, upper, &o, &out);
  kiln__chol_panel_test = -1;
  kiln__chol_fuse_test = -1;
  CHECK_STATUS(st, KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == sentinel, "*out was written on failure");
  char want[96];
  snprintf(want, sizeof want, "leading minor of order %lld of matrix %lld ",
           (long long)order, (long long)bad);
  CHECK_ERR_HAS(want);
  CHECK_ERR_HAS("not positive definite");
  kiln_array_destroy(arr);
  free(a);
}

/* Subnormal pivots in float32 (chol_panel2 on CUDA takes its pivots'
 * rsqrt flushing subnormals, and runs a tile again the exact way when it
 * meets one): SPD matrices whose rows and columns `at` are zero but for a
 * diagonal of 1e-39 (a float32 subnormal; the factor's diagonal there is
 * ~3.2e-20), in the first panel, a fused right panel and a later panel,
 * lower and upper, FUSE off and on: valid factors with that diagonal
 * exact to a few ulps. */
static void ca_panel_subnormal(bool upper, int fuse) {
  const int64_t n = 200, at[3] = {5, 70, 131};
  double *a = kt_la_alloc(n * n);
  kt_la_spd(n, a);
  for (int q = 0; q < 3; q++) {
    for (int64_t i = 0; i < n; i++)
      a[at[q] * n + i] = a[i * n + at[q]] = 0.0;
    a[at[q] * (n + 1)] = 1e-39;
  }
  int64_t shape[2] = {n, n};
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
  for (int64_t i = 0; i < n * n; i++) /* as the array holds it */
    a[i] = (double)(float)a[i];
  kiln__chol_panel_test = 1;
  kiln__chol_fuse_test = fuse;
  double *f = ca_factor(arr, upper, 2);
  kiln__chol_panel_test = -1;
  kiln__chol_fuse_test = -1;
  char what[96];
  snprintf(what, sizeof what, "float32 %lld x %lld %s subnormal pivots%s",
           (long long)n, (long long)n, upper ? "upper" : "lower",
           fuse ? " fused" : "");
  ca_check(what, KILN_FLOAT32, upper, 1, n, a, f);
  for (int q = 0; q < 3; q++) {
    double want = sqrt(a[at[q] * (n + 1)]), got = f[at[q] * (n + 1)];
    CHECK(fabs(got - want) <= 4 * kt_eps(KILN_FLOAT32) * want,
          "%s: diagonal %lld is %.9g, not %.9g", what, (long long)at[q],
          got, want);
  }
  free(f);
  kiln_array_destroy(arr);
  free(a);
}

void test_linalg_cholesky_panel(void) {
  for (int upper = 0; upper < 2; upper++)
    for (int fuse = 0; fuse < 2; fuse++)
      ca_panel_subnormal(upper, fuse);
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    ca_panel_case(dt, 1, 129, 2, false);
    ca_panel_case(dt, 1, 300, 2, false);
    ca_panel_case(dt, 1, 256, 2, true);
    ca_panel_case(dt, 3, 200, 2, false);
    ca_panel_case(dt, 2, 192, 3, false);
    /* the first and last pivot of rounds of the first panel (8 columns
     * each), of the second panel (fused or not) and of a later one */
    static const int64_t orders[] = {1, 8, 9, 16, 17, 40, 57, 64, 65, 72,
                                     73, 128, 129, 200, 300};
    for (int upper = 0; upper < 2; upper++)
      for (size_t k = 0; k < sizeof orders / sizeof orders[0]; k++)
        ca_panel_not_pd(dt, 2, 300, (int64_t)(k % 2), orders[k], upper,
                        (int)(k % 3 == 0), k % 4 == 1);
  }
}
