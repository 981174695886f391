/*
 * The blocked Cholesky's variants (src/linalg/cholesky.c's knobs): the
 * look-ahead (ahead_update), the short pivot chain (chol_warp_factor's
 * QUICK), float32 updates on gemm_f32 and the two-panel splits' update
 * inside chol_panel (FUSE), each forced on and off at small sizes
 * through the kiln__chol_*_test hooks on the device under test.
 *
 * The look-ahead splits each update at a split of more than one panel in
 * two (the next panel's columns on the device's side stream, then that
 * panel; the rest on the caller's stream), with W seen through an alias
 * on the side stream. On the CPU backend every stream runs on its own
 * thread, so a missing fork or join lets the two race on W and gives a
 * wrong factor. Checked: the backward error ||A - L L^T||_F / (||A||_F n
 * eps) against the float64 host matrix, zeros above (below) the
 * diagonal, and equality, bit for bit on the CPU, with the same
 * factorization without the look-ahead: splitting an update by columns
 * changes no element's sum (each is still one GEMM dot product over the
 * same k), so any difference is a race or a wrong block. On a GPU the
 * narrower GEMMs may take another kernel, so only a tolerance holds
 * there. Also: the same call twice gives the same bits (no race between
 * the streams decides anything), a transposed (non-contiguous) input, a
 * batch with the look-ahead, the quick chain on and off (random and
 * ill-conditioned matrices), and an allocation-failure sweep.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"
#include "linalg_check.h"

/* Backward errors below this many units of n eps pass. */
#define CA_THRESHOLD 8.0

static const kiln_dtype ca_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* Whether two factorizations that differ only in how the updates are cut
 * must agree bit for bit (see the top of the file). */
static bool ca_exact(void) { return strcmp(kt_device_name(), "cpu") == 0; }

/* batch matrices kt_la_spd (n x n each) into a. */
static void ca_spd(int64_t batch, int64_t n, double *a) {
  for (int64_t b = 0; b < batch; b++)
    kt_la_spd(n, a + b * n * n);
}


/* Checks the factors f (batch x n x n) of a: the zero triangle and the
 * backward error. */
static void ca_check(const char *what, kiln_dtype dt, bool upper,
                     int64_t batch, int64_t n, const double *a,
                     const double *f) {
  for (int64_t b = 0; b < batch; b++) {
    const double *x = a + b * n * n, *y = f + b * n * n;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) {
        if (upper ? j < i : j > i)
          CHECK(y[i * n + j] == 0.0,
                "%s, matrix %lld: (%lld, %lld) is %g, not 0", what,
                (long long)b, (long long)i, (long long)j, y[i * n + j]);
        double s = 0;
        for (int64_t k = 0; k < n; k++)
          s += upper ? y[k * n + i] * y[k * n + j]
                     : y[i * n + k] * y[j * n + k];
        num += (s - x[i * n + j]) * (s - x[i * n + j]);
        den += x[i * n + j] * x[i * n + j];
      }
    double err = sqrt(num) / (sqrt(den) * (double)n * kt_eps(dt));
    CHECK(err < CA_THRESHOLD,
          "%s, matrix %lld: backward error %.3g n eps (threshold %g)", what,
          (long long)b, err, CA_THRESHOLD);
  }
}

/* arr factored through `path` with the look-ahead mode `ahead`, the
 * quick chain `quick` and the float32 GEMM mode `gemm` (the test hooks),
 * read back as double; the hooks are reset after. */
static double *ca_factor_g(kiln_array *arr, bool upper, int path, int ahead,
                           int quick, int gemm) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln__chol_lookahead_test = ahead;
  kiln__chol_quick_test = quick;
  kiln__chol_gemm_test = gemm;
  kiln_array *f = NULL;
  kiln_status st = kiln_cholesky_ex(arr, upper, &o, &f);
  kiln__chol_lookahead_test = -1;
  kiln__chol_quick_test = -1;
  kiln__chol_gemm_test = -1;
  CHECK_OK(st);
  double *v = kt_read_f64(f);
  kiln_array_destroy(f);
  return v;
}

static double *ca_factor(kiln_array *arr, bool upper, int path, int ahead,
                         int quick) {
  return ca_factor_g(arr, upper, path, ahead, quick, -1);
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

/* One case: batch matrices of order n (batch 1: a 2-D array; `trans`: A
 * handed over as a transposed view), factored through `path` with and
 * without the look-ahead, lower and upper. */
static void ca_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                    bool trans) {
  double *a = kt_la_alloc(batch * n * n);
  ca_spd(batch, n, a);
  int64_t shape[3] = {batch, n, n};
  int ndim = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
  if (trans) { /* A is symmetric: its transpose holds the same values */
    kiln_array *v = NULL;
    int64_t st[3] = {n * n, 1, n};
    CHECK_OK(kiln_array_view(arr, ndim, ndim == 2 ? shape + 1 : shape,
                             ndim == 2 ? st + 1 : st, 0, &v));
    kiln_array_destroy(arr);
    arr = v;
  }
  for (int upper = 0; upper < 2; upper++) {
    char what[128];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s path %d%s",
             kiln_dtype_name(dt), (long long)batch, (long long)n,
             (long long)n, upper ? "upper" : "lower", path,
             trans ? " (transposed view)" : "");
    double *plain = ca_factor(arr, upper, path, 0, -1);
    double *ahead = ca_factor(arr, upper, path, 2, -1);
    double *again = ca_factor(arr, upper, path, 2, -1);
    ca_check(what, dt, upper, batch, n, a, ahead);
    ca_compare(what, ahead, plain, batch * n * n, ca_exact(),
               64 * (double)n * kt_eps(dt));
    ca_compare(what, again, ahead, batch * n * n, true, 0);
    /* the side stream taking half the right half, with the panel-pair
     * fusion off (0) and on (1; whole-fused ranges fall back to a panel) */
    for (int fuse = 0; fuse < 2; fuse++) {
      kiln__chol_ahead_half_test = 1;
      kiln__chol_fuse_test = fuse;
      double *half = ca_factor(arr, upper, path, 2, -1);
      kiln__chol_ahead_half_test = 1;
      kiln__chol_fuse_test = fuse;
      double *half2 = ca_factor(arr, upper, path, 2, -1);
      kiln__chol_fuse_test = fuse;
      double *ref = ca_factor(arr, upper, path, 0, -1);
      kiln__chol_ahead_half_test = -1;
      kiln__chol_fuse_test = -1;
      ca_check(what, dt, upper, batch, n, a, half);
      ca_compare(what, half, ref, batch * n * n, ca_exact(),
                 64 * (double)n * kt_eps(dt));
      ca_compare(what, half2, half, batch * n * n, true, 0);
      free(half);
      free(half2);
      free(ref);
    }
    free(plain);
    free(ahead);
    free(again);
  }
  kiln_array_destroy(arr);
  free(a);
}

/* The look-ahead forced on: panels of 64 columns, so 300 has 5 (the last
 * of 44 columns), 129 has 3 (the top split's right half one column more
 * than a panel: the rest is one column wide), 192 has 3 whole ones;
 * path 3 cuts every update into the batched GEMMs of a large n. */
void test_linalg_cholesky_ahead(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    ca_case(dt, 1, 300, 2, false);
    ca_case(dt, 1, 448, 3, false); /* 7 panels: a half of 2 panels */
    ca_case(dt, 1, 129, 2, false);
    ca_case(dt, 1, 192, 3, false);
    ca_case(dt, 1, 260, 3, true);
    ca_case(dt, 3, 200, 2, false);
    ca_case(dt, 2, 150, 3, false);
  }
}

/* The quick pivot chain on and off: both valid factors of random and
 * ill-conditioned matrices (condition 1e6 in float32, 1e12 in float64),
 * close to each other, and each the same bits run to run. */
void test_linalg_cholesky_quick(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    for (int ill = 0; ill < 2; ill++) {
      int64_t n = 200;
      double *a = kt_la_alloc(n * n);
      if (ill)
        kt_la_spd_ill(n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a);
      else
        ca_spd(1, n, a);
      int64_t shape[2] = {n, n};
      kiln_array *arr = kt_la_array(dt, 2, shape, a);
      for (int upper = 0; upper < 2; upper++) {
        char what[96];
        snprintf(what, sizeof what, "%s %lld x %lld %s %s", kiln_dtype_name(dt),
                 (long long)n, (long long)n, ill ? "ill-conditioned" : "random",
                 upper ? "upper" : "lower");
        double *slow = ca_factor(arr, upper, 2, 0, 0);
        double *fast = ca_factor(arr, upper, 2, 0, 1);
        double *again = ca_factor(arr, upper, 2, 0, 1);
        ca_check(what, dt, upper, 1, n, a, slow);
        ca_check(what, dt, upper, 1, n, a, fast);
        /* the factor's conditioning is sqrt(A's): the two roundings
         * differ by that times eps at most, with room */
        double tol = 64 * (double)n * kt_eps(dt) *
                     (ill ? (dt == KILN_FLOAT32 ? 1e3 : 1e6) : 1.0);
        ca_compare(what, fast, slow, n * n, false, tol);
        ca_compare(what, again, fast, n * n, true, 0);
        free(slow);
        free(fast);
        free(again);
      }
      kiln_array_destroy(arr);
      free(a);
    }
  }
}

/* Float32 updates forced onto gemm_f32 (kiln__chol_gemm_test = 2; at
 * these sizes the GEMM's own choice is SIMT tiles): valid factors, close
 * to the GEMM's own choice, each the same bits run to run, with and
 * without the look-ahead (bit for bit equal to each other on the CPU),
 * batched and through path 3's batched updates. */
void test_linalg_cholesky_gemm(void) {
  static const int64_t cases[4][3] = {
      {1, 300, 2}, {1, 260, 3}, {3, 200, 2}, {2, 150, 3}};
  for (int c = 0; c < 4; c++) {
    int64_t batch = cases[c][0], n = cases[c][1];
    int path = (int)cases[c][2];
    double *a = kt_la_alloc(batch * n * n);
    ca_spd(batch, n, a);
    int64_t shape[3] = {batch, n, n};
    int ndim = batch == 1 ? 2 : 3;
    kiln_array *arr =
        kt_la_array(KILN_FLOAT32, ndim, ndim == 2 ? shape + 1 : shape, a);
    for (int upper = 0; upper < 2; upper++) {
      char what[128];
      snprintf(what, sizeof what, "float32 %lld x %lld x %lld %s path %d "
               "on gemm_f32", (long long)batch, (long long)n, (long long)n,
               upper ? "upper" : "lower", path);
      double *own = ca_factor_g(arr, upper, path, 0, -1, 0);
      double *f32 = ca_factor_g(arr, upper, path, 0, -1, 2);
      double *ahead = ca_factor_g(arr, upper, path, 2, -1, 2);
      double *again = ca_factor_g(arr, upper, path, 2, -1, 2);
      ca_check(what, KILN_FLOAT32, upper, batch, n, a, f32);
      ca_check(what, KILN_FLOAT32, upper, batch, n, a, ahead);
      ca_compare(what, f32, own, batch * n * n, false,
                 64 * (double)n * kt_eps(KILN_FLOAT32));
      ca_compare(what, ahead, f32, batch * n * n, ca_exact(),
                 64 * (double)n * kt_eps(KILN_FLOAT32));
      ca_compare(what, again, ahead, batch * n * n, true, 0);
      free(own);
      free(f32);
      free(ahead);
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
 * 1e12 in float64); batched; path 3; with the look-ahead and gemm_f32;
 * left-looking ranges of 4 and 8 panels (modes 2 and 3, the latter with
 * the look-ahead: 300 and 256 are then left-looking whole, 5 and 4
 * panels, up to 256 columns deep). */
static void ca_fuse_case(kiln_dtype dt, int64_t batch, int64_t n, int path,
                         bool ill) {
  double *a = kt_la_alloc(batch * n * n);
  if (ill)
    for (int64_t b = 0; b < batch; b++)
      kt_la_spd_ill(n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a + b * n * n);
  else
    ca_spd(batch, n, a);
  int64_t shape[3] = {batch, n, n};
  int ndim = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
  for (int upper = 0; upper < 2; upper++) {
    char what[128];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s%s path %d fused",
             kiln_dtype_name(dt), (long long)batch, (long long)n,
             (long long)n, ill ? "ill-conditioned " : "",
             upper ? "upper" : "lower", path);
    kiln__chol_fuse_test = 0;
    double *off = ca_factor(arr, upper, path, 0, -1);
    kiln__chol_fuse_test = 1;
    double *on = ca_factor(arr, upper, path, 0, -1);
    kiln__chol_fuse_test = 1;
    double *again = ca_factor(arr, upper, path, 0, -1);
    kiln__chol_fuse_test = 1;
    double *all = ca_factor_g(arr, upper, path, 2, 1, 2);
    double *blk[2];
    for (int f = 2; f <= 3; f++) { /* left-looking ranges of 4 and 8 */
      kiln__chol_fuse_test = f;
      blk[f - 2] = ca_factor_g(arr, upper, path, f == 3 ? 2 : 0, -1, -1);
    }
    kiln__chol_fuse_test = -1;
    ca_check(what, dt, upper, batch, n, a, on);
    ca_check(what, dt, upper, batch, n, a, all);
    for (int f = 0; f < 2; f++) {
      ca_check(what, dt, upper, batch, n, a, blk[f]);
      free(blk[f]);
    }
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
 * upper, batched, path 3's batched blocks, with the look-ahead (on the
 * side stream too) and with left-looking ranges of 4 panels. */
void test_linalg_cholesky_splitk(void) {
  static const int64_t cases[5][3] = {
      {1, 300, 2}, {1, 520, 3}, {3, 200, 2}, {2, 260, 3}, {1, 129, 2}};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ca_dtypes[d];
    for (int c = 0; c < 5; c++) {
      int64_t batch = cases[c][0], n = cases[c][1];
      int path = (int)cases[c][2];
      double *a = kt_la_alloc(batch * n * n);
      ca_spd(batch, n, a);
      int64_t shape[3] = {batch, n, n};
      int ndim = batch == 1 ? 2 : 3;
      kiln_array *arr =
          kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
      for (int upper = 0; upper < 2; upper++) {
        char what[128];
        snprintf(what, sizeof what, "%s %lld x %lld x %lld %s path %d "
                 "split-K", kiln_dtype_name(dt), (long long)batch,
                 (long long)n, (long long)n, upper ? "upper" : "lower",
                 path);
        double *plain = ca_factor(arr, upper, path, 0, -1);
        kiln__chol_splitk_test = 2;
        double *split = ca_factor(arr, upper, path, 0, -1);
        kiln__chol_splitk_test = 2;
        double *again = ca_factor(arr, upper, path, 0, -1);
        kiln__chol_splitk_test = 2;
        double *ahead = ca_factor(arr, upper, path, 2, -1);
        kiln__chol_splitk_test = 2;
        kiln__chol_fuse_test = 2;
        double *left = ca_factor(arr, upper, path, 0, -1);
        kiln__chol_splitk_test = -1;
        kiln__chol_fuse_test = -1;
        ca_check(what, dt, upper, batch, n, a, split);
        ca_check(what, dt, upper, batch, n, a, ahead);
        ca_check(what, dt, upper, batch, n, a, left);
        ca_compare(what, split, plain, batch * n * n, false,
                   64 * (double)n * kt_eps(dt));
        ca_compare(what, again, split, batch * n * n, true, 0);
        ca_compare(what, ahead, split, batch * n * n, ca_exact(),
                   64 * (double)n * kt_eps(dt));
        free(plain);
        free(split);
        free(again);
        free(ahead);
        free(left);
      }
      kiln_array_destroy(arr);
      free(a);
    }
  }
}

/* ---- allocation failures ------------------------------------------------- */

/* The look-ahead's error paths: a forced look-ahead factorization (200 x
 * 200, 4 panels) with its k-th host allocation failing, for about 60 k
 * spread over all of them: either it still succeeds (a failed event
 * record or wait falls back to a host wait) with the same factor, or it
 * fails with out of memory, its out pointer untouched and no host block
 * leaked once the streams are idle. */
void test_linalg_cholesky_ahead_alloc_fail(void) {
  /* (The CPU backend only: on CUDA the sweep would also reach the
   * backend's own host allocations, which no GPU run has checked yet.) */
  if (!ca_exact())
    kt_skip("the allocation-failure sweep runs on the CPU backend");
  CHECK_OK(kiln_set_alloc_hooks(kt_af_hooks()));
  int64_t n = 200, shape[2] = {n, n};
  double *a = kt_la_alloc(n * n);
  ca_spd(1, n, a);
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
  double *ref = ca_factor(arr, false, 2, 2, -1); /* warm: kernels, side */
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 2;
  kiln__chol_lookahead_test = 2;
  kiln_array *f = NULL;
  kt_af_arm(0);
  CHECK_OK(kiln_cholesky_ex(arr, false, &o, &f));
  long total = kt_af_disarm();
  kiln_array_destroy(f);
  CHECK(total > 10, "a factorization allocates (%ld)", total);
  long stride = total / 60 + 1;
  static char mark; /* a pointer no call returns */
  kiln_array *sentinel = (kiln_array *)&mark;
  for (long k = 1; k <= total; k += stride) {
    long live0 = kt_af_settle();
    f = sentinel;
    kiln_clear_error();
    kt_af_arm(k);
    kiln_status st = kiln_cholesky_ex(arr, false, &o, &f);
    kt_af_disarm();
    if (st == KILN_OK) {
      float *got = kt_read(f);
      for (int64_t i = 0; i < n * n; i++)
        CHECK(got[i] == (float)ref[i],
              "allocation %ld failing, yet success: L[%lld] is %.9g, not "
              "%.9g",
              k, (long long)i, got[i], ref[i]);
      free(got);
      kiln_array_destroy(f);
    } else {
      CHECK(st == KILN_ERROR_OUT_OF_MEMORY,
            "allocation %ld failing: %s, expected out of memory", k,
            kiln_status_string(st));
      CHECK(strstr(kiln_last_error(), "out of memory") != NULL,
            "allocation %ld failing: the message (%s) says out of memory", k,
            kiln_last_error());
      CHECK(f == sentinel, "allocation %ld failing: out pointer changed", k);
    }
    long live1 = kt_af_settle();
    CHECK(live1 == live0, "allocation %ld failing leaked %ld host block(s)", k,
          live1 - live0);
  }
  kiln__chol_lookahead_test = -1;
  free(ref);
  kiln_array_destroy(arr);
  free(a);
}
