/*
 * Cholesky (kiln_cholesky, kiln_cholesky_ex) on the device under test.
 *
 * Inputs are fresh random symmetric positive definite matrices, A = M M^T
 * + n I, or, for the ill-conditioned cases, Q diag(s) Q^T with s spread
 * log-evenly over the condition number. Every factor is checked by its
 * backward error, ||F F^T - A||_F / (||A||_F n eps) (F^T F for upper),
 * which Cholesky keeps small whatever the conditioning, and by its shape:
 * the other triangle exactly zero, a positive diagonal. The same checks
 * cover `kiln linalg cholesky` on .npy files, and numpy checks it too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "linalg_check.h"
#include "linalg/linalg.h"

#ifndef KILN_CLI_PATH
#define KILN_CLI_PATH "kiln"
#endif

/* Backward errors below this many units of n eps pass. */
#define CH_THRESHOLD 8.0

/* Checks one factor f of a (both n x n): triangle, diagonal, residual. */
static void ch_check_one(const char *what, int64_t entry, kiln_dtype dt,
                         bool upper, int64_t n, const double *a,
                         const double *f) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      bool zero = upper ? j < i : j > i;
      if (zero)
        CHECK(f[i * n + j] == 0.0, "%s, matrix %lld: element (%lld, %lld) "
              "of the %s factor is %g, not 0", what, (long long)entry,
              (long long)i, (long long)j, upper ? "upper" : "lower",
              f[i * n + j]);
      double s = 0;
      for (int64_t k = 0; k < n; k++)
        s += upper ? f[k * n + i] * f[k * n + j] : f[i * n + k] * f[j * n + k];
      num += (s - a[i * n + j]) * (s - a[i * n + j]);
      den += a[i * n + j] * a[i * n + j];
    }
  for (int64_t i = 0; i < n; i++)
    CHECK(f[i * n + i] > 0, "%s, matrix %lld: diagonal %lld is %g", what,
          (long long)entry, (long long)i, f[i * n + i]);
  double err = sqrt(num) / (sqrt(den) * (double)n * kt_eps(dt));
  CHECK(err < CH_THRESHOLD, "%s, matrix %lld: backward error %.3g n eps "
        "(threshold %g)", what, (long long)entry, err, CH_THRESHOLD);
}

/* Factors `arr` (logical values `a`, batch x n x n) and checks every
 * matrix of the result. */
static void ch_factor_check(const char *what, kiln_array *arr,
                            const double *a, int64_t batch, int64_t n,
                            bool upper, const kiln_linalg_opts *opts) {
  kiln_array *f = NULL;
  CHECK_OK(kiln_cholesky_ex(arr, upper, opts, &f));
  CHECK(f != NULL, "%s: no result", what);
  CHECK(kiln_array_ndim(f) == kiln_array_ndim(arr) &&
            kiln_array_dtype(f) == kiln_array_dtype(arr),
        "%s: the result's rank or dtype differs from A's", what);
  for (int d = 0; d < kiln_array_ndim(f); d++)
    CHECK(kiln_array_shape(f)[d] == kiln_array_shape(arr)[d],
          "%s: the result's dimension %d differs from A's", what, d);
  double *fv = kt_read_f64(f);
  for (int64_t b = 0; b < batch; b++)
    ch_check_one(what, b, kiln_array_dtype(arr), upper, n, a + b * n * n,
                 fv + b * n * n);
  free(fv);
  kiln_array_destroy(f);
}

/* batch random SPD matrices of order n, factored and checked, both
 * triangles, through `path`. */
static void ch_random_case(kiln_dtype dt, int64_t batch, int64_t n,
                           int path) {
  double *a = kt_la_alloc(batch * n * n);
  for (int64_t b = 0; b < batch; b++)
    kt_la_spd(n, a + b * n * n);
  int64_t shape[3] = {batch, n, n};
  int ndim = batch == 1 ? 2 : 3;
  kiln_array *arr = kt_la_array(dt, ndim, ndim == 2 ? shape + 1 : shape, a);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  for (int upper = 0; upper < 2; upper++) {
    char what[96];
    snprintf(what, sizeof what, "%s %lld x %lld x %lld %s path %d",
             kiln_dtype_name(dt), (long long)batch, (long long)n,
             (long long)n, upper ? "upper" : "lower", path);
    ch_factor_check(what, arr, a, batch, n, upper, &o);
  }
  kiln_array_destroy(arr);
  free(a);
}

static const kiln_dtype ch_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* Every kernel class of the small path (warp 16/32, threadgroup 64/128)
 * at and around its capacity, and the blocked path on one panel, two, a
 * partial block column and several. */
void test_linalg_cholesky_sizes(void) {
  static const int64_t sizes[] = {1,  5,   16,  17,  31,  33,  64,
                                  65, 100, 128, 129, 200, 256, 300};
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
      ch_random_case(ch_dtypes[d], 1, sizes[i], 0);
}


void test_linalg_cholesky_batched(void) {
  for (int d = 0; d < 2; d++) {
    ch_random_case(ch_dtypes[d], 300, 16, 0);
    ch_random_case(ch_dtypes[d], 7, 13, 0); /* a half-used warp */
    ch_random_case(ch_dtypes[d], 9, 30, 0);
    ch_random_case(ch_dtypes[d], 7, 40, 0);
    ch_random_case(ch_dtypes[d], 5, 128, 0); /* the 1000 x 128 anchor */
    ch_random_case(ch_dtypes[d], 3, 100, 0);
    ch_random_case(ch_dtypes[d], 3, 150, 0); /* blocked, batched */
  }
  /* two batch dimensions */
  int64_t shape[4] = {2, 3, 6, 6};
  double *a = kt_la_alloc(6 * 36);
  for (int b = 0; b < 6; b++)
    kt_la_spd(6, a + b * 36);
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 4, shape, a);
  ch_factor_check("float64 2 x 3 x 6 x 6", arr, a, 6, 6, false, NULL);
  kiln_array_destroy(arr);
  free(a);
}

/* Both paths on the same matrices: the small one where it fits, the
 * blocked one on a single block and on several. */
void test_linalg_cholesky_paths(void) {
  for (int d = 0; d < 2; d++) {
    ch_random_case(ch_dtypes[d], 4, 20, 1);
    ch_random_case(ch_dtypes[d], 4, 20, 2);
    ch_random_case(ch_dtypes[d], 2, 48, 1);
    ch_random_case(ch_dtypes[d], 2, 48, 2);
    ch_random_case(ch_dtypes[d], 2, 97, 1);
    ch_random_case(ch_dtypes[d], 2, 97, 2);
    ch_random_case(ch_dtypes[d], 2, 128, 1);
    ch_random_case(ch_dtypes[d], 2, 128, 2);
    ch_random_case(ch_dtypes[d], 2, 140, 2);
  }
  /* The blocked path on several levels of column splits, with a last
   * panel of 6 columns (1030 = 16 x 64 + 6); path 3 halves its updates
   * into batched GEMMs over views (three levels at the top split, the
   * rows left over below the squares), as path 2 does at n >= ~2100. */
  ch_random_case(KILN_FLOAT64, 1, 1030, 2);
  ch_random_case(KILN_FLOAT32, 1, 1030, 2);
  ch_random_case(KILN_FLOAT64, 1, 1030, 3);
  ch_random_case(KILN_FLOAT32, 1, 1030, 3);
}

/* Strided views: every other column of a wider matrix, a transposed view
 * and a batch taken with a step. */
void test_linalg_cholesky_strided(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ch_dtypes[d];
    int64_t sizes[3] = {23, 70, 150}; /* warp, threadgroup, blocked */
    for (int s = 0; s < 3; s++) {
      int64_t n = sizes[s], batch = 3;
      /* base: (2 batch) x n x 2n, the matrices in even batch entries and
       * even columns; odd places hold garbage. */
      double *base = kt_la_alloc(2 * batch * n * 2 * n);
      double *a = kt_la_alloc(batch * n * n);
      for (int64_t i = 0; i < 2 * batch * n * 2 * n; i++)
        base[i] = kt_uniform(-50, 50);
      for (int64_t b = 0; b < batch; b++) {
        kt_la_spd(n, a + b * n * n);
        for (int64_t i = 0; i < n; i++)
          for (int64_t j = 0; j < n; j++)
            base[(2 * b) * n * 2 * n + i * 2 * n + 2 * j] =
                a[b * n * n + i * n + j];
      }
      int64_t bshape[3] = {2 * batch, n, 2 * n};
      kiln_array *owner = kt_la_array(dt, 3, bshape, base);
      for (int64_t b = 0; b < batch; b++) /* the rounded values */
        for (int64_t i = 0; i < n; i++)
          for (int64_t j = 0; j < n; j++)
            a[b * n * n + i * n + j] =
                base[(2 * b) * n * 2 * n + i * 2 * n + 2 * j];
      int64_t vshape[3] = {batch, n, n};
      int64_t vstr[3] = {2 * n * 2 * n, 2 * n, 2};
      int64_t tstr[3] = {2 * n * 2 * n, 2, 2 * n}; /* transposed */
      kiln_array *v = NULL, *t = NULL;
      CHECK_OK(kiln_array_view(owner, 3, vshape, vstr, 0, &v));
      CHECK_OK(kiln_array_view(owner, 3, vshape, tstr, 0, &t));
      for (int upper = 0; upper < 2; upper++) {
        char what[96];
        snprintf(what, sizeof what, "%s strided %lld %s",
                 kiln_dtype_name(dt), (long long)n,
                 upper ? "upper" : "lower");
        ch_factor_check(what, v, a, batch, n, upper, NULL);
        /* A is symmetric, so its transposed view holds the same values */
        ch_factor_check(what, t, a, batch, n, upper, NULL);
      }
      kiln_array_destroy(v);
      kiln_array_destroy(t);
      kiln_array_destroy(owner);
      free(base);
      free(a);
    }
  }
}

/* Condition 1e6 in float32 and 1e12 in float64: the backward error stays
 * small (Cholesky is backward stable). */
void test_linalg_cholesky_ill_conditioned(void) {
  static const int64_t sizes[] = {30, 100, 150, 300};
  for (int d = 0; d < 2; d++)
    for (int s = 0; s < 4; s++) {
      kiln_dtype dt = ch_dtypes[d];
      int64_t n = sizes[s];
      double *a = kt_la_alloc(n * n);
      kt_la_spd_ill(n, dt == KILN_FLOAT32 ? 1e6 : 1e12, a);
      int64_t shape[2] = {n, n};
      kiln_array *arr = kt_la_array(dt, 2, shape, a);
      for (int upper = 0; upper < 2; upper++) {
        char what[96];
        snprintf(what, sizeof what, "%s ill-conditioned %lld %s",
                 kiln_dtype_name(dt), (long long)n,
                 upper ? "upper" : "lower");
        ch_factor_check(what, arr, a, 1, n, upper, NULL);
      }
      kiln_array_destroy(arr);
      free(a);
    }
}

/* A batch whose entry `bad` fails at leading minor `order`: its diagonal
 * element order-1 is made very negative, which leaves the smaller leading
 * minors positive definite. The call fails naming both; *out untouched. */
static void ch_not_pd_case(kiln_dtype dt, int64_t batch, int64_t n,
                           int64_t bad, int64_t order, bool upper,
                           int path) {
  double *a = kt_la_alloc(batch * n * n);
  for (int64_t b = 0; b < batch; b++)
    kt_la_spd(n, a + b * n * n);
  a[bad * n * n + (order - 1) * (n + 1)] = -1e3 * (double)n;
  int64_t shape[3] = {batch, n, n};
  kiln_array *arr = kt_la_array(dt, 3, shape, a);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln_array *sentinel = (kiln_array *)&o, *out = sentinel;
  CHECK_STATUS(kiln_cholesky_ex(arr, upper, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == sentinel, "*out was written on failure");
  char want[96];
  snprintf(want, sizeof want, "leading minor of order %lld of matrix %lld ",
           (long long)order, (long long)bad);
  CHECK_ERR_HAS(want);
  CHECK_ERR_HAS("[kiln_cholesky_ex]");
  CHECK_ERR_HAS("not positive definite");
  kiln_array_destroy(arr);
  free(a);
}

void test_linalg_cholesky_not_pd(void) {
  for (int d = 0; d < 2; d++)
    for (int upper = 0; upper < 2; upper++) {
      ch_not_pd_case(ch_dtypes[d], 7, 8, 5, 3, upper, 0);
      ch_not_pd_case(ch_dtypes[d], 3, 8, 0, 1, upper, 0);
      ch_not_pd_case(ch_dtypes[d], 3, 30, 2, 30, upper, 0);
      ch_not_pd_case(ch_dtypes[d], 3, 100, 1, 77, upper, 0);
      ch_not_pd_case(ch_dtypes[d], 2, 128, 1, 128, upper, 1);
      ch_not_pd_case(ch_dtypes[d], 2, 130, 1, 101, upper, 0); /* blocked */
      ch_not_pd_case(ch_dtypes[d], 2, 130, 1, 5, upper, 2);
      ch_not_pd_case(ch_dtypes[d], 2, 130, 1, 130, upper, 2);
      /* in the second panel, and the first pivot of the second panel
       * and of the second block column, and in a later block column */
      ch_not_pd_case(ch_dtypes[d], 2, 300, 0, 200, upper, 2);
      ch_not_pd_case(ch_dtypes[d], 1, 300, 0, 129, upper, 2);
      ch_not_pd_case(ch_dtypes[d], 1, 300, 0, 257, upper, 2);
      ch_not_pd_case(ch_dtypes[d], 2, 300, 1, 299, upper, 2);
    }
  /* a plain matrix is named A; NaN is not positive definite either */
  int64_t n = 4, shape[2] = {4, 4};
  double a[16];
  kt_la_spd(n, a);
  a[2 * 4 + 2] = NAN;
  kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
  kiln_array *out = NULL;
  CHECK_STATUS(kiln_cholesky(arr, false, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == NULL, "*out was written on failure");
  CHECK_ERR_HAS("leading minor of order 3 of A is not positive definite");
  CHECK_ERR_HAS("[kiln_cholesky]");
  kiln_array_destroy(arr);
  /* a matrix that fails in several batch entries names the first */
  double b[3 * 16];
  for (int i = 0; i < 3; i++)
    kt_la_spd(n, b + 16 * i);
  b[16 + 0] = -1;
  b[32 + 5] = -1;
  int64_t s3[3] = {3, 4, 4};
  arr = kt_la_array(KILN_FLOAT64, 3, s3, b);
  CHECK_STATUS(kiln_cholesky(arr, true, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("order 1 of matrix 1 ");
  CHECK_ERR_HAS("1 more matrix");
  kiln_array_destroy(arr);
}

/* Empty shapes give empty results; bad arguments are clear errors. */
void test_linalg_cholesky_errors(void) {
  int64_t s00[2] = {0, 0}, s044[3] = {0, 4, 4}, s340[3] = {3, 0, 0};
  int64_t *empties[3] = {s00, s044, s340};
  int nd[3] = {2, 3, 3};
  for (int i = 0; i < 3; i++) {
    kiln_array *e = NULL, *out = NULL;
    CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, nd[i], empties[i],
                               &e));
    CHECK_OK(kiln_cholesky(e, false, &out));
    CHECK(out != NULL && kiln_array_size(out) == 0 &&
              kiln_array_ndim(out) == nd[i],
          "an empty A gives an empty result of its shape");
    kiln_array_destroy(out);
    kiln_array_destroy(e);
  }
  int64_t s34[2] = {3, 4}, s4[1] = {4}, s44[2] = {4, 4};
  kiln_array *rect = NULL, *vec = NULL, *ints = NULL, *sq = NULL;
  kiln_array *out = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s34, &rect));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 1, s4, &vec));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 2, s44, &ints));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s44, &sq));
  CHECK_STATUS(kiln_cholesky(rect, false, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("3 x 4");
  CHECK_ERR_HAS("square");
  CHECK_STATUS(kiln_cholesky(vec, false, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("dimension");
  CHECK_STATUS(kiln_cholesky(ints, false, &out), KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("int32");
  CHECK_STATUS(kiln_cholesky(NULL, false, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A is NULL");
  CHECK_STATUS(kiln_cholesky(sq, false, NULL), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("out is NULL");
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 4;
  CHECK_STATUS(kiln_cholesky_ex(sq, false, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("path");
  int64_t s129[2] = {129, 129};
  kiln_array *big = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, s129, &big));
  o.path = 1;
  CHECK_STATUS(kiln_cholesky_ex(big, false, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("up to 128 x 128");
  CHECK_ERR_HAS("A is 129 x 129");
  CHECK(out == NULL, "*out was written on failure");
  kiln_array_destroy(big);
  kiln_array_destroy(rect);
  kiln_array_destroy(vec);
  kiln_array_destroy(ints);
  kiln_array_destroy(sq);
}

/* ---- every kernel the driver launches, compiled for a CUDA target ------- */

/* Compiles kernel `name` with inputs of `in` (dtypes and ranks) for
 * `target` and checks its resources: at most 48 KiB of threadgroup memory
 * and no register spills. With KILN_TEST_REPORT set, prints them. */
static void ch_compile(const char *name, const char *inputs,
                       const char *outputs, kiln_dtype dt, int a_ndim,
                       const kiln_template_arg *t, int nt,
                       const char *target) {
  kiln_array_spec in[4]; /* chol_panel: Win, k0, kw, batch0 */
  memset(in, 0, sizeof in);
  in[0].dtype = dt;
  in[0].ndim = a_ndim;
  int nin = 1;
  for (const char *c = inputs; (c = strchr(c, ',')) != NULL; c++)
    nin++;
  CHECK(nin <= 4, "%s: %d inputs, ch_compile holds 4", name, nin);
  /* the inputs after A/Win are int32 scalars, except chol_finish's Dg */
  for (int i = 1; i < nin; i++)
    in[i].dtype = KILN_INT32;
  if (strcmp(name, "chol_finish") == 0) {
    in[1].dtype = dt;
    in[1].ndim = a_ndim - 1;
  }
  int nout = 1;
  for (const char *c = outputs; (c = strchr(c, ',')) != NULL; c++)
    nout++;
  kiln_output_spec out[3];
  memset(out, 0, sizeof out);
  out[0].dtype = dt;
  out[0].ndim = a_ndim;
  out[1].dtype = KILN_INT32;
  out[1].ndim = 1;
  out[2].dtype = dt; /* Dg */
  out[2].ndim = a_ndim - 1;
  /* By field: tests/linalg_check.h may grow options (zero: off). */
  kt_la_kernel k;
  memset(&k, 0, sizeof k);
  k.family = "cholesky";
  k.name = name;
  k.inputs = inputs;
  k.outputs = outputs;
  k.flags = KILN__LIB_NO_ROW_CONTIG;
  k.num_inputs = nin;
  k.num_outputs = nout;
  k.in = in;
  k.out = out;
  k.targs = t;
  k.num_targs = nt;
  kt_la_compile(&k, target);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch for that target (the panel sizes as cholesky.c
 * sets them); skipped otherwise. */
void test_linalg_cholesky_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = ch_dtypes[d];
    int pw = 64, rch = 64; /* CHOL_PW, CHOL_RCH */
    for (int upper = 0; upper < 2; upper++)
      for (int rank = 2; rank <= 3; rank++) {
        kiln_template_arg t[4];
        kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
        for (int w = 16; w <= 32; w *= 2) {
          kt_la_targ(&t[1], "W", KILN_TEMPLATE_INT, w, KILN_INT32);
          kt_la_targ(&t[2], "UPPER", KILN_TEMPLATE_BOOL, upper, KILN_INT32);
          ch_compile("chol_warp", "A,batch0,count", "L,info", dt, rank, t, 3,
                     target);
        }
        for (int cap = 64; cap <= 128; cap *= 2) {
          kt_la_targ(&t[1], "PW", KILN_TEMPLATE_INT, cap, KILN_INT32);
          ch_compile("chol_small", "A,batch0", "L,info", dt, rank, t, 3,
                     target);
        }
        kiln_template_arg tc[2] = {t[0], t[0]};
        kt_la_targ(&tc[1], "UPPER", KILN_TEMPLATE_BOOL, upper, KILN_INT32);
        ch_compile("chol_copy", "A,batch0", "L", dt, rank, tc, 2, target);
        /* the other blocked kernels take W, always batch x n x n */
        if (rank != 3)
          continue;
        kt_la_targ(&t[1], "PW", KILN_TEMPLATE_INT, pw, KILN_INT32);
        kt_la_targ(&t[2], "RCH", KILN_TEMPLATE_INT, rch, KILN_INT32);
        kt_la_targ(&t[3], "UPPER", KILN_TEMPLATE_BOOL, upper, KILN_INT32);
        for (int fuse = 0; fuse < 2; fuse++) {
          kiln_template_arg tp[5] = {t[0], t[1], t[2], t[3], t[3]};
          kt_la_targ(&tp[4], "FUSE", KILN_TEMPLATE_BOOL, fuse, KILN_INT32);
          ch_compile("chol_panel", "Win,k0,kw,batch0", "L,info,Dg", dt, rank,
                     tp, 5, target);
          ch_compile("chol_panel2", "Win,k0,kw,batch0", "L,info,Dg", dt,
                     rank, tp, 5, target);
        }
        kt_la_targ(&t[2], "UPPER", KILN_TEMPLATE_BOOL, upper, KILN_INT32);
        ch_compile("chol_finish", "Win,Dg,batch0", "L", dt, rank, t, 3,
                   target);
      }
  }
  /* chol_ksum: S (5-D) and Win (3-D) of T, then int32 scalars; every
   * piece count split_factor can pick */
  for (int d = 0; d < 2; d++)
    for (int pieces = 2; pieces <= 16; pieces *= 2) {
      kiln_array_spec ks[7];
      memset(ks, 0, sizeof ks);
      ks[0].dtype = ks[1].dtype = ch_dtypes[d];
      ks[0].ndim = 5;
      ks[1].ndim = 3;
      for (int i = 2; i < 7; i++)
        ks[i].dtype = KILN_INT32;
      kiln_output_spec ko;
      memset(&ko, 0, sizeof ko);
      ko.dtype = ch_dtypes[d];
      ko.ndim = 3;
      kiln_template_arg kt[2];
      kt_la_targ(&kt[0], "T", KILN_TEMPLATE_DTYPE, 0, ch_dtypes[d]);
      kt_la_targ(&kt[1], "PIECES", KILN_TEMPLATE_INT, pieces, KILN_INT32);
      kt_la_kernel kk;
      memset(&kk, 0, sizeof kk);
      kk.family = "cholesky";
      kk.name = "chol_ksum";
      kk.inputs = "S,Win,r0,c0,dr,dc,batch0";
      kk.outputs = "L";
      kk.flags = KILN__LIB_NO_ROW_CONTIG;
      kk.num_inputs = 7;
      kk.num_outputs = 1;
      kk.in = ks;
      kk.out = &ko;
      kk.targs = kt;
      kk.num_targs = 2;
      kt_la_compile(&kk, target);
    }
}

/* ---- the CLI: kiln linalg cholesky --------------------------------------- */

/* Writes `a` (n values) as DIR/NAME of `dt`, rounding `a` in place to
 * what the file holds. */
static void ch_cli_input(const char *dir, const char *name, kiln_dtype dt,
                         int ndim, const int64_t *shape, double *a,
                         int64_t n, char *path, size_t cap) {
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1) * 8);
  CHECK(buf != NULL, "out of host memory");
  for (int64_t i = 0; i < n; i++) {
    kt_set(dt, buf, (size_t)i, a[i]);
    a[i] = kt_get(dt, buf, (size_t)i);
  }
  snprintf(path, cap, "%s/%s", dir, name);
  kt_npy_write(path, dt, ndim, shape, buf);
  free(buf);
}

/* Runs kiln linalg cholesky on `in` into the empty directory `od` and
 * checks that exactly NAME.npy appeared, holding a valid factor of each of
 * the batch x n x n matrices `a` in `dt`; removes it again. */
static void ch_cli_factor(const char *what, const char *in, const char *od,
                          const double *a, int64_t batch, int64_t n,
                          const char *shape_text, kiln_dtype dt, bool upper,
                          const char *dtype_flag) {
  kt_cli r = dtype_flag
                 ? kt_kiln("linalg", "cholesky", in, "--out-dir", od,
                           "--device", kt_device_name(), "--dtype",
                           dtype_flag, upper ? "--upper" : NULL, NULL)
                 : kt_kiln("linalg", "cholesky", in, "--out-dir", od,
                           "--device", kt_device_name(),
                           upper ? "--upper" : NULL, NULL);
  CHECK(r.rc == 0, "%s: exit %d, stderr: %s", what, r.rc, r.err);
  CHECK(r.out[0] == '\0', "%s: success prints nothing, printed: %s", what,
        r.out);
  kt_cli_free(&r);
  char path[4300];
  snprintf(path, sizeof path, "%s/%s.npy", od, upper ? "U" : "L");
  CHECK(kt_dir_count(od) == 1, "%s: only %s.npy is written (no "
        "temporaries, no other factor)", what, upper ? "U" : "L");
  double *f = kt_npy_read_f64(path, 1, dt, shape_text,
                              (size_t)(batch * n * n));
  for (int64_t b = 0; b < batch; b++)
    ch_check_one(what, b, dt, upper, n, a + b * n * n, f + b * n * n);
  free(f);
  CHECK(unlink(path) == 0, "remove %s", path);
}

/* Batched float32 input: L.npy by default, U.npy with --upper, float64
 * factors with --dtype float64; a plain matrix too. */
void test_linalg_cli_cholesky(void) {
  kt_need_cli();
  char *dir = kt_tempdir("chcli"), od[4200], pa[4200], pm[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  int64_t n = 9, batch = 6, shape[4] = {2, 3, 9, 9};
  double *a = kt_la_alloc(batch * n * n);
  for (int64_t b = 0; b < batch; b++)
    kt_la_spd(n, a + b * n * n);
  ch_cli_input(dir, "a.npy", KILN_FLOAT32, 4, shape, a, batch * n * n, pa,
               sizeof pa);
  ch_cli_factor("kiln linalg cholesky float32", pa, od, a, batch, n,
                "(2, 3, 9, 9)", KILN_FLOAT32, false, NULL);
  ch_cli_factor("kiln linalg cholesky --upper", pa, od, a, batch, n,
                "(2, 3, 9, 9)", KILN_FLOAT32, true, NULL);
  /* the float32 values, converted, factored in float64 */
  ch_cli_factor("kiln linalg cholesky --dtype float64", pa, od, a, batch, n,
                "(2, 3, 9, 9)", KILN_FLOAT64, false, "float64");
  ch_cli_factor("kiln linalg cholesky --dtype float64 --upper", pa, od, a,
                batch, n, "(2, 3, 9, 9)", KILN_FLOAT64, true, "float64");
  /* a plain float64 matrix, large enough for the blocked path */
  int64_t m = 80, ms[2] = {80, 80};
  double *b = kt_la_alloc(m * m);
  kt_la_spd(m, b);
  ch_cli_input(dir, "m.npy", KILN_FLOAT64, 2, ms, b, m * m, pm, sizeof pm);
  ch_cli_factor("kiln linalg cholesky float64 80 x 80", pm, od, b, 1, m,
                "(80, 80)", KILN_FLOAT64, false, NULL);
  free(a);
  free(b);
  kt_rmtree(dir);
  free(dir);
}

/* The same interface driven from numpy: factors against L @ L^T, the
 * triangles, numpy's own Cholesky and the dtypes. */
void test_linalg_cli_cholesky_numpy(void) {
  char *dir = kt_la_numpy_dir("chnp");
  char script[8192];
  snprintf(script, sizeof script,
           KT_LA_NUMPY_HEAD
           "od = os.path.join(d, 'out')\n"
           "os.makedirs(od)\n"
           "def run(a, *flags):\n"
           "    np.save(os.path.join(d, 'a.npy'), a)\n"
           "    r = subprocess.run([kiln, 'linalg', 'cholesky',\n"
           "        os.path.join(d, 'a.npy'), '--out-dir', od,\n"
           "        '--device', dev, *flags], capture_output=True,\n"
           "        text=True)\n"
           "    assert r.returncode == 0, r.stderr\n"
           "    name = 'U.npy' if '--upper' in flags else 'L.npy'\n"
           "    assert os.listdir(od) == [name], os.listdir(od)\n"
           "    f = np.load(os.path.join(od, name))\n"
           "    os.remove(os.path.join(od, name))\n"
           "    return f\n"
           "T = lambda x: np.swapaxes(x, -1, -2)\n"
           "def spd(shape, n, dt):\n"
           "    m = rng.standard_normal((*shape, n, n))\n"
           "    return (m @ T(m) + n * np.eye(n)).astype(dt)\n"
           "for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-13)):\n"
           "    a = spd((3, 2), 7, dt)\n"
           "    a64 = a.astype(np.float64)\n"
           "    ref = np.linalg.cholesky(a64)\n"
           "    L = run(a)\n"
           "    assert L.dtype == dt and L.shape == a.shape, "
           "(L.dtype, L.shape)\n"
           "    assert np.array_equal(L, np.tril(L)), 'L is not lower'\n"
           "    L64 = L.astype(np.float64)\n"
           "    assert np.allclose(L64 @ T(L64), a64, rtol=tol * 10,\n"
           "        atol=tol * 10 * abs(a64).max()), "
           "abs(L64 @ T(L64) - a64).max()\n"
           "    assert np.allclose(L64, ref, rtol=tol * 10,\n"
           "        atol=tol * 10), abs(L64 - ref).max()\n"
           "    U = run(a, '--upper')\n"
           "    assert U.dtype == dt and U.shape == a.shape\n"
           "    assert np.array_equal(U, np.triu(U)), 'U is not upper'\n"
           "    assert np.allclose(U.astype(np.float64), T(ref),\n"
           "        rtol=tol * 10, atol=tol * 10), abs(U - T(ref)).max()\n"
           "a = spd((4,), 12, np.float32)\n"
           "L = run(a, '--dtype', 'float64')\n"
           "ref = np.linalg.cholesky(a.astype(np.float64))\n"
           "assert L.dtype == np.float64 and L.shape == (4, 12, 12)\n"
           "assert np.allclose(L, ref, rtol=1e-12, atol=1e-12), "
           "abs(L - ref).max()\n"
           "U = run(a, '--dtype=float64', '--upper')\n"
           "assert U.dtype == np.float64 and np.allclose(U, T(ref), "
           "rtol=1e-12, atol=1e-12)\n"
           "e = run(np.zeros((0, 5, 5), np.float32))\n"
           "assert e.shape == (0, 5, 5) and e.dtype == np.float32\n",
           (unsigned long long)kt_seed);
  kt_python_check(dir, script, "kiln linalg cholesky");
  kt_rmtree(dir);
  free(dir);
}

/* Not positive definite: exit 1 with kiln's message naming the batch
 * entry and the minor, nothing written. Bad inputs exit 1, bad usage 2. */
void test_linalg_cli_cholesky_errors(void) {
  kt_need_cli();
  char *dir = kt_tempdir("chclierr"), od[4200], pb[4200], pm[4200];
  char pr[4200], pv[4200], ph[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  const char *dev = kt_device_name();
  /* a 2 x 3 batch of 8 x 8 whose entry 4 fails at the minor of order 3 */
  int64_t n = 8, sb[4] = {2, 3, 8, 8};
  double a[6 * 64], m[64];
  for (int b = 0; b < 6; b++)
    kt_la_spd(n, a + b * 64);
  a[4 * 64 + 2 * 9] = -1e3;
  ch_cli_input(dir, "bad.npy", KILN_FLOAT32, 4, sb, a, 6 * 64, pb,
               sizeof pb);
  for (int upper = 0; upper < 2; upper++)
    kt_la_cli_expect_error(upper ? "not PD, --upper" : "not PD", od, 1,
                        "leading minor of order 3 of matrix 4 ",
                        "not positive definite",
                        kt_kiln("linalg", "cholesky", pb, "--out-dir", od,
                                "--device", dev, upper ? "--upper" : NULL,
                                NULL));
  kt_la_cli_expect_error("not PD, --dtype float64", od, 1,
                      "leading minor of order 3 of matrix 4 ", NULL,
                      kt_kiln("linalg", "cholesky", pb, "--dtype",
                              "float64", "--out-dir", od, "--device", dev,
                              NULL));
  /* a plain matrix is named A */
  kt_la_spd(n, m);
  m[0] = -1;
  int64_t s2[2] = {8, 8};
  ch_cli_input(dir, "m.npy", KILN_FLOAT64, 2, s2, m, 64, pm, sizeof pm);
  kt_la_cli_expect_error("not PD, plain matrix", od, 1,
                      "leading minor of order 1 of A ",
                      "not positive definite",
                      kt_kiln("linalg", "cholesky", pm, "--out-dir", od,
                              "--device", dev, NULL));
  /* inputs that cholesky cannot take: exit 1 */
  int64_t s34[2] = {3, 4}, s4[1] = {4}, s33[2] = {3, 3};
  double r12[12] = {0}, v4[4] = {1, 2, 3, 4};
  double h9[9] = {4, 1, 0, 1, 4, 1, 0, 1, 4};
  ch_cli_input(dir, "r.npy", KILN_FLOAT32, 2, s34, r12, 12, pr, sizeof pr);
  ch_cli_input(dir, "v.npy", KILN_FLOAT32, 1, s4, v4, 4, pv, sizeof pv);
  ch_cli_input(dir, "h.npy", KILN_FLOAT16, 2, s33, h9, 9, ph, sizeof ph);
  kt_la_cli_expect_error("non-square", od, 1, "square", "3x4",
                      kt_kiln("linalg", "cholesky", pr, "--out-dir", od,
                              NULL));
  kt_la_cli_expect_error("1-D input", od, 1, "dimensions", NULL,
                      kt_kiln("linalg", "cholesky", pv, "--out-dir", od,
                              NULL));
  kt_la_cli_expect_error("float16 without --dtype", od, 1, "float16",
                      "--dtype",
                      kt_kiln("linalg", "cholesky", ph, "--out-dir", od,
                              NULL));
  kt_la_cli_expect_error("missing input file", od, 1, "nope.npy", NULL,
                      kt_kiln("linalg", "cholesky", "/nonexistent/nope.npy",
                              "--out-dir", od, NULL));
  /* usage errors: exit 2 */
  const char *pa = pm;
  kt_la_cli_expect_error("no input", od, 2, "one input", NULL,
                      kt_kiln("linalg", "cholesky", "--out-dir", od, NULL));
  kt_la_cli_expect_error("two inputs", od, 2, "one input", NULL,
                      kt_kiln("linalg", "cholesky", pa, pa, "--out-dir", od,
                              NULL));
  kt_la_cli_expect_error("--trans-a", od, 2, "--trans-a", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--trans-a",
                              "--out-dir", od, NULL));
  kt_la_cli_expect_error("--alpha", od, 2, "--alpha", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--alpha", "2",
                              "--out-dir", od, NULL));
  kt_la_cli_expect_error("--upper=yes", od, 2, "--upper", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--upper=yes",
                              "--out-dir", od, NULL));
  kt_la_cli_expect_error("--lower", od, 2, "--lower", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--lower",
                              "--out-dir", od, NULL));
  kt_la_cli_expect_error("--dtype float16", od, 2, "--dtype", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--dtype",
                              "float16", "--out-dir", od, NULL));
  kt_la_cli_expect_error("bad device", od, 2, "--device", NULL,
                      kt_kiln("linalg", "cholesky", pa, "--device", "tpu",
                              "--out-dir", od, NULL));
  kt_la_cli_expect_error("--upper for gemm", od, 2, "--upper", NULL,
                      kt_kiln("linalg", "gemm", pa, pa, "--upper",
                              "--out-dir", od, NULL));
  /* `kiln help linalg` describes cholesky as available */
  kt_cli r = kt_kiln("help", "linalg", NULL);
  CHECK(r.rc == 0, "kiln help linalg exit %d: %s", r.rc, r.err);
  CHECK(strstr(r.out, "cholesky A.npy [--upper]") &&
            strstr(r.out, "U.npy") && strstr(r.out, "L.npy"),
        "help describes cholesky:\n%s", r.out);
  /* every operation is available: none is listed as missing */
  CHECK(!strstr(r.out, "not implemented"),
        "help lists no operation as not implemented:\n%s", r.out);
  kt_cli_free(&r);
  kt_rmtree(dir);
  free(dir);
}
