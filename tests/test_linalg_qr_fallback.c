/*
 * CholeskyQR's TSQR fallback (src/linalg/qr.c, cholqr_with_fallback):
 * kiln__qr_tall on rank-deficient matrices, where CholeskyQR3 breaks down
 * and the one-launch TSQR tree (qr_tree_g / qr_tree_rg) and its one-launch
 * way back (qr_chain_g) redo exactly the flagged matrices.
 *
 * The shapes walk the tree's cases: one leaf (m <= 256, no way back), two
 * levels, four levels at 64 columns (fan-in 4), a last leaf shorter than n,
 * n = 1, a batch with leading dimensions where only some matrices break
 * down (the others keep CholeskyQR's results), more leaves than the fixed
 * grid has groups (the groups' loops wrap), and strided views read in
 * place. Deficiency comes from an exactly zero column, a repeated column,
 * a rank-1 or a zero matrix: every pass of CholeskyQR is then singular.
 *
 * Every matrix is checked against its own input, in double on the host:
 *   - Q and R: ||A - Q R||_F / (||A||_F max(m, n) eps) and
 *     ||Q^T Q - I||_F / (max(m, n) eps) below QF_THRESHOLD;
 *   - R only: ||A^T A - R^T R||_F / (||A||_F^2 max(m, n) eps) below it
 *     (R^T R of a backward-stable R is the Gram of a nearby matrix);
 *   - R upper triangular (exact zeros) with a non-negative diagonal, every
 *     value finite.
 * q and r start as NaN, so an element nobody wrote fails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/cholqr.h"
#include "linalg/linalg.h"
#include "linalg_check.h"

/* Householder QR and TSQR give O(1) in these units. */
#define QF_THRESHOLD 10.0

static const kiln_dtype qf_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* How a matrix is made deficient. */
typedef enum qf_kind {
  QF_FULL,   /* random, full rank: CholeskyQR keeps it */
  QF_ZEROCOL, /* column 1 (or 0 for n = 1) exactly zero */
  QF_REPEAT, /* the last column repeats the first */
  QF_RANK1,  /* u v^T */
  QF_ZERO    /* all zero */
} qf_kind;

/* One m x n matrix of kind k into a (row-major). */
static void qf_fill(int64_t m, int64_t n, qf_kind k, double *a) {
  for (int64_t i = 0; i < m * n; i++)
    a[i] = k == QF_ZERO ? 0.0 : kt_uniform(-1, 1);
  if (k == QF_ZEROCOL)
    for (int64_t i = 0; i < m; i++)
      a[i * n + (n > 1 ? 1 : 0)] = 0.0;
  if (k == QF_REPEAT && n > 1)
    for (int64_t i = 0; i < m; i++)
      a[i * n + n - 1] = a[i * n];
  if (k == QF_RANK1) {
    double *v = kt_la_alloc(n);
    for (int64_t j = 0; j < n; j++)
      v[j] = kt_uniform(-1, 1);
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[i * n + j] = a[i * n] * v[j];
    free(v);
  }
}

/* What is checked for one factorization. */
typedef struct qf_case {
  const char *what;
  kiln_dtype dt;
  bool want_q;
  int64_t m, n;
} qf_case;

/* R (n x n): finite, upper triangular, non-negative diagonal. */
static void qf_check_r(const qf_case *c, int64_t b, const double *r) {
  int64_t n = c->n;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = r[i * n + j];
      CHECK(isfinite(x), "%s, matrix %lld: R(%lld, %lld) is %g", c->what,
            (long long)b, (long long)i, (long long)j, x);
      CHECK(j >= i || x == 0.0,
            "%s, matrix %lld: R(%lld, %lld) = %g below the diagonal",
            c->what, (long long)b, (long long)i, (long long)j, x);
      CHECK(j != i || x >= 0.0, "%s, matrix %lld: R's diagonal %lld is %g",
            c->what, (long long)b, (long long)i, x);
    }
}

/* Q (m x n, or NULL) and R of matrix b against its input a. */
static void qf_check_one(const qf_case *c, int64_t b, const double *a,
                         const double *q, const double *r) {
  int64_t m = c->m, n = c->n;
  double eps = kt_eps(c->dt), scale = (double)(m > n ? m : n) * eps;
  qf_check_r(c, b, r);
  double anorm = kt_la_fro(a, m * n);
  if (anorm == 0.0)
    anorm = 1.0; /* a zero matrix: absolute errors */
  if (q == NULL) {
    double e = kt_la_gram_diff(a, r, m, n, n) / (anorm * anorm * scale);
    CHECK(e < QF_THRESHOLD,
          "%s, matrix %lld: ||A^T A - R^T R|| is %.3g ||A||^2 max(m,n) eps "
          "(threshold %g)",
          c->what, (long long)b, e, QF_THRESHOLD);
    return;
  }
  for (int64_t i = 0; i < m * n; i++)
    CHECK(isfinite(q[i]), "%s, matrix %lld: Q element %lld is %g", c->what,
          (long long)b, (long long)i, q[i]);
  double res = 0, orth = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t k = 0; k <= j; k++)
        s += q[i * n + k] * r[k * n + j];
      res += (a[i * n + j] - s) * (a[i * n + j] - s);
    }
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t k = 0; k < m; k++)
        s += q[k * n + i] * q[k * n + j];
      s -= i == j ? 1.0 : 0.0;
      orth += s * s;
    }
  double e_res = sqrt(res) / (anorm * scale), e_orth = sqrt(orth) / scale;
  CHECK(e_res < QF_THRESHOLD,
        "%s, matrix %lld: ||A - QR|| is %.3g max(m,n) eps ||A|| "
        "(threshold %g)",
        c->what, (long long)b, e_res, QF_THRESHOLD);
  CHECK(e_orth < QF_THRESHOLD,
        "%s, matrix %lld: ||Q^T Q - I|| is %.3g max(m,n) eps (threshold %g)",
        c->what, (long long)b, e_orth, QF_THRESHOLD);
}

/* A new array of `dt` with a's batch dimensions and last two (rows,
 * cols), every element NaN. */
static kiln_array *qf_poisoned(kiln_dtype dt, kiln_array *a, int64_t rows,
                               int64_t cols) {
  int nd = kiln_array_ndim(a);
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, kiln_array_shape(a), (size_t)nd * sizeof *shape);
  shape[nd - 2] = rows;
  shape[nd - 1] = cols;
  kiln_array *x = NULL;
  CHECK_OK(kiln_array_create(kt_device(), dt, nd, shape, &x));
  CHECK_OK(kiln_array_fill(x, NAN, NULL));
  return x;
}

/* kiln__qr_tall on arr (batch matrices of m x n whose values, as kiln sees
 * them, are a), then the checks of every matrix. */
static void qf_run(const qf_case *c, kiln_array *arr, const double *a,
                   int64_t batch) {
  int64_t m = c->m, n = c->n;
  kiln_array *q = c->want_q ? qf_poisoned(c->dt, arr, m, n) : NULL;
  kiln_array *r = qf_poisoned(c->dt, arr, n, n);
  CHECK_OK(kiln__qr_tall(kt_stream(), arr, q, r));
  double *qh = q != NULL ? kt_read_f64(q) : NULL;
  double *rh = kt_read_f64(r);
  for (int64_t b = 0; b < batch; b++)
    qf_check_one(c, b, a + b * m * n, qh != NULL ? qh + b * m * n : NULL,
                 rh + b * n * n);
  free(qh);
  free(rh);
  kiln_array_destroy(q);
  kiln_array_destroy(r);
}

/* CholeskyQR alone on arr: matrix b's flag must be non-zero where kinds
 * says it is exactly deficient (a zero column or matrix), and zero where
 * it is random, so that the fallback is known to run exactly there. */
static void qf_expect_flags(kiln_array *arr, const qf_kind *kinds,
                            int nkinds, int64_t batch, int64_t m,
                            int64_t n) {
  kiln_dtype dt = kiln_array_dtype(arr);
  kiln_array *r = qf_poisoned(dt, arr, n, n), *flag = NULL;
  int64_t fs[1] = {batch};
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 1, fs, &flag));
  CHECK_OK(kiln__qr_cholqr(kt_stream(), arr, NULL, r, flag));
  double *f = kt_read_f64(flag);
  for (int64_t b = 0; b < batch; b++) {
    qf_kind k = kinds[b % nkinds];
    if (k == QF_ZEROCOL || k == QF_ZERO)
      CHECK(f[b] != 0, "%s %lld x %lld matrix %lld (deficient): "
            "CholeskyQR did not report a breakdown", kiln_dtype_name(dt),
            (long long)m, (long long)n, (long long)b);
    if (k == QF_FULL)
      CHECK(f[b] == 0, "%s %lld x %lld matrix %lld (random): CholeskyQR "
            "reported a breakdown (%g)", kiln_dtype_name(dt), (long long)m,
            (long long)n, (long long)b, f[b]);
  }
  free(f);
  kiln_array_destroy(r);
  kiln_array_destroy(flag);
}

/* A batch (shape: ndim dimensions, the last two m x n) whose matrix b is
 * of kinds[b % nkinds], through both modes and both dtypes. */
static void qf_batch_case(const char *what, int ndim, const int64_t *shape,
                          const qf_kind *kinds, int nkinds) {
  int64_t m = shape[ndim - 2], n = shape[ndim - 1], batch = 1;
  for (int d = 0; d < ndim - 2; d++)
    batch *= shape[d];
  double *a = kt_la_alloc(batch * m * n);
  for (int d = 0; d < 2; d++) {
    for (int64_t b = 0; b < batch; b++)
      qf_fill(m, n, kinds[b % nkinds], a + b * m * n);
    kiln_array *arr = kt_la_array(qf_dtypes[d], ndim, shape, a);
    qf_expect_flags(arr, kinds, nkinds, batch, m, n);
    for (int mode = 0; mode < 2; mode++) {
      char buf[160];
      snprintf(buf, sizeof buf, "%s, %s, %s", what,
               kiln_dtype_name(qf_dtypes[d]), mode ? "R only" : "Q and R");
      qf_case c = {buf, qf_dtypes[d], mode == 0, m, n};
      qf_run(&c, arr, a, batch);
    }
    kiln_array_destroy(arr);
  }
  free(a);
}

/* Single matrices through every depth of the tree. */
void test_linalg_qr_fallback_tree(void) {
  static const struct {
    const char *what;
    int64_t m, n;
    qf_kind kind;
  } cases[] = {
      {"one leaf 200 x 50, zero column", 200, 50, QF_ZEROCOL},
      {"two levels 1300 x 20, rank 1", 1300, 20, QF_RANK1},
      {"two levels 2000 x 33, repeated column", 2000, 33, QF_REPEAT},
      {"four levels 5157 x 64, zero column", 5157, 64, QF_ZEROCOL},
      {"short last leaf 773 x 40, zero column", 773, 40, QF_ZEROCOL},
      {"n = 1, 700 x 1 zero", 700, 1, QF_ZERO},
      {"3 levels 9000 x 7, zero", 9000, 7, QF_ZERO},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t shape[2] = {cases[i].m, cases[i].n};
    qf_batch_case(cases[i].what, 2, shape, &cases[i].kind, 1);
  }
}

/* Batches: leading dimensions 2 x 3 with some matrices deficient and the
 * rest kept from CholeskyQR, and more leaves than the fixed grid has
 * groups, so that every group's loop runs several times and skips whole
 * matrices. */
void test_linalg_qr_fallback_batched(void) {
  static const qf_kind mix[3] = {QF_FULL, QF_ZEROCOL, QF_FULL};
  int64_t s4[4] = {2, 3, 600, 24};
  qf_batch_case("2 x 3 x 600 x 24, every third deficient", 4, s4, mix, 3);
  static const qf_kind most[4] = {QF_REPEAT, QF_RANK1, QF_FULL, QF_ZERO};
  int64_t s3[3] = {150, 530, 5};
  qf_batch_case("150 x 530 x 5, most deficient", 3, s3, most, 4);
}

/* Strided views read in place: every other column of a wider array (from
 * column 1), and a transposed view, each with a zero column. */
void test_linalg_qr_fallback_strided(void) {
  int64_t m = 1100, n = 9;
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qf_dtypes[d];
    double *a = kt_la_alloc(m * n), *st = kt_la_alloc(m * 2 * n);
    for (int64_t i = 0; i < m * 2 * n; i++)
      st[i] = kt_uniform(-1, 1);
    for (int64_t i = 0; i < m; i++)
      st[i * 2 * n + 2 * 4 + 1] = 0.0; /* the view's column 4 */
    int64_t sshape[2] = {m, 2 * n};
    kiln_array *base = kt_la_array(dt, 2, sshape, st);
    int64_t vshape[2] = {m, n}, vstrides[2] = {2 * n, 2};
    kiln_array *view = NULL;
    CHECK_OK(kiln_array_view(base, 2, vshape, vstrides, 1, &view));
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[i * n + j] = st[i * 2 * n + 2 * j + 1];
    for (int mode = 0; mode < 2; mode++) {
      qf_case c = {"every other column, zero column", dt, mode == 0, m, n};
      qf_run(&c, view, a, 1);
    }
    kiln_array_destroy(view);
    kiln_array_destroy(base);
    /* transposed: the stored n x m array's row 2 is zero */
    double *t = kt_la_alloc(n * m);
    for (int64_t i = 0; i < n * m; i++)
      t[i] = i / m == 2 ? 0.0 : kt_uniform(-1, 1);
    int64_t tshape[2] = {n, m};
    base = kt_la_array(dt, 2, tshape, t);
    int64_t tstrides[2] = {1, m};
    CHECK_OK(kiln_array_view(base, 2, vshape, tstrides, 0, &view));
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[i * n + j] = t[j * m + i];
    for (int mode = 0; mode < 2; mode++) {
      qf_case c = {"transposed view, zero column", dt, mode == 0, m, n};
      qf_run(&c, view, a, 1);
    }
    kiln_array_destroy(view);
    kiln_array_destroy(base);
    free(t);
    free(a);
    free(st);
  }
}

/* Shapes kiln__qr_tall refuses: an error naming A's shape, q and r not
 * written. An empty batch is fine and writes nothing. */
void test_linalg_qr_fallback_errors(void) {
  static const int64_t bad[2][2] = {{10, 20}, {500, 65}};
  for (int i = 0; i < 2; i++) {
    int64_t shape[2] = {bad[i][0], bad[i][1]}, n = bad[i][1];
    double *a = kt_la_alloc(shape[0] * n);
    qf_fill(shape[0], n, QF_FULL, a);
    kiln_array *arr = kt_la_array(KILN_FLOAT32, 2, shape, a);
    kiln_array *q = qf_poisoned(KILN_FLOAT32, arr, shape[0], n);
    kiln_array *r = qf_poisoned(KILN_FLOAT32, arr, n, n);
    CHECK_STATUS(kiln__qr_tall(kt_stream(), arr, q, r),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("CholeskyQR takes m >= n and n from 1 to 64");
    char dims[48];
    snprintf(dims, sizeof dims, "A is %lld x %lld", (long long)shape[0],
             (long long)n);
    CHECK_ERR_HAS(dims);
    double *qh = kt_read_f64(q), *rh = kt_read_f64(r);
    for (int64_t e = 0; e < shape[0] * n; e++)
      CHECK(isnan(qh[e]), "q element %lld was written", (long long)e);
    for (int64_t e = 0; e < n * n; e++)
      CHECK(isnan(rh[e]), "r element %lld was written", (long long)e);
    free(qh);
    free(rh);
    kiln_array *all[3] = {arr, q, r};
    kt_destroy_all(all, 3);
    free(a);
  }
  int64_t empty[3] = {0, 300, 8};
  double dummy[1] = {0};
  kiln_array *arr = kt_la_array(KILN_FLOAT64, 3, empty, dummy);
  int64_t qs[3] = {0, 300, 8}, rs[3] = {0, 8, 8};
  kiln_array *q = NULL, *r = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, qs, &q));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 3, rs, &r));
  CHECK_OK(kiln__qr_tall(kt_stream(), arr, q, r));
  CHECK_OK(kiln_stream_synchronize(kt_stream()));
  kiln_array *all[3] = {arr, q, r};
  kt_destroy_all(all, 3);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * of the fallback's kernels that kiln__qr_tall can launch (qr.c:
 * tsqr_config for n <= 64, both dtypes, A of rank 2 and 3) and checks
 * registers and spills; skipped otherwise. */
void test_linalg_qr_fallback_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  static const int ncs[2] = {32, 64};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = qf_dtypes[d];
    for (int c = 0; c < 2; c++) {
      for (int rank = 2; rank <= 3; rank++) {
        kiln_template_arg t[4];
        kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
        kt_la_targ(&t[1], "MMAX", KILN_TEMPLATE_INT, 256, KILN_INT32);
        kt_la_targ(&t[2], "NC", KILN_TEMPLATE_INT, ncs[c], KILN_INT32);
        kt_la_targ(&t[3], "SEGS", KILN_TEMPLATE_INT, 8, KILN_INT32);
        kiln_array_spec in[4] = {{dt, rank, {0}},
                                 {KILN_INT32, 1, {0}},
                                 {dt, 3, {0}},
                                 {KILN_INT32, 2, {0}}};
        kiln_output_spec out[5] = {{dt, 3, {1, 1, 1}},
                                   {dt, 3, {1, 1, 1}},
                                   {dt, 3, {1, 1, 1}},
                                   {dt, 3, {1, 1, 1}},
                                   {KILN_INT32, 2, {1, 1}}};
        printf("qr_tree_g / qr_tree_rg %s NC %d rank %d\n",
               kiln_dtype_name(dt), ncs[c], rank);
        kt_la_kernel k = {.family = "qr", .name = "qr_tree_g",
                          .inputs = "A,flag,Ssh,Csh",
                          .outputs = "Q,R,S,QS,Cnt",
                          .flags = KILN__LIB_NO_ROW_CONTIG, .num_inputs = 4,
                          .num_outputs = 5, .in = in, .out = out,
                          .targs = t, .num_targs = 4};
        kt_la_compile(&k, target);
        kiln_output_spec rout[3] = {out[1], out[2], out[4]};
        kt_la_kernel kr = {.family = "qr", .name = "qr_tree_rg",
                           .inputs = "A,flag,Ssh,Csh",
                           .outputs = "R,S,Cnt",
                           .flags = KILN__LIB_NO_ROW_CONTIG, .num_inputs = 4,
                           .num_outputs = 3, .in = in, .out = rout,
                           .targs = t, .num_targs = 4};
        kt_la_compile(&kr, target);
      }
      kiln_template_arg t[3];
      kt_la_targ(&t[0], "T", KILN_TEMPLATE_DTYPE, 0, dt);
      kt_la_targ(&t[1], "NB", KILN_TEMPLATE_INT, ncs[c], KILN_INT32);
      kt_la_targ(&t[2], "MMAX", KILN_TEMPLATE_INT, 256, KILN_INT32);
      kiln_array_spec in[3] = {
          {dt, 3, {0}}, {dt, 3, {0}}, {KILN_INT32, 1, {0}}};
      kiln_output_spec out = {dt, 3, {1, 1, 1}};
      printf("qr_chain_g %s NB %d\n", kiln_dtype_name(dt), ncs[c]);
      kt_la_kernel kc = {.family = "qr", .name = "qr_chain_g",
                         .inputs = "Xin,QS,flag", .outputs = "X",
                         .flags = KILN__LIB_NO_ROW_CONTIG, .num_inputs = 3,
                         .num_outputs = 1, .in = in, .out = &out,
                         .targs = t, .num_targs = 3};
      kt_la_compile(&kc, target);
    }
  }
}
