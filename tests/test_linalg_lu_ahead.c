/*
 * The blocked LU's look-ahead (src/linalg/lu.c, run_panels_ahead): the
 * chain of panel k + 1 on the device's side stream while the caller's
 * stream does the bulk of panel k's trailing update, ordered by a fork
 * and a join per panel, with W seen through an alias on the side stream.
 *
 * Forced on at small sizes (kiln__lu_lookahead_test = 2; panels of 64
 * columns, so 300 x 300 has 5 panels) on the device under test. On the
 * CPU backend every stream runs on its own thread, so a missing fork or
 * join lets the two streams race on W and gives a wrong factorization.
 * Checked: the backward error ||A[perm] - L U||_F / (||A||_F n eps),
 * |L| <= 1 and valid pivots against a float64 host recomputation of A,
 * and equality, bit for bit, with the same factorization without the
 * look-ahead: splitting the trailing GEMM in two changes no element's
 * sum (each is still one GEMM's dot product over the same k), so any
 * difference is a race or a wrong block. Also: kiln__stream_wait_stream
 * itself (a slow host callback on one stream, a waiter on another),
 * results destroyed right after an asynchronous factorization (their
 * memory reused at once; ASan runs of the suite catch a late write),
 * W read on a third stream right after an asynchronous factorization,
 * and two host threads sharing the side stream.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linalg/linalg.h"
#include "linalg_check.h"

static const kiln_dtype lh_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};

/* A fresh n x n matrix of dt, uniform in [-1, 1): its values in *a (the
 * caller frees them) and the array. */
static kiln_array *lh_square(kiln_dtype dt, int64_t n, double **a) {
  int64_t shape[2] = {n, n};
  *a = kt_la_alloc(n * n);
  for (int64_t i = 0; i < n * n; i++)
    (*a)[i] = kt_uniform(-1, 1);
  return kt_la_array(dt, 2, shape, *a);
}

/* One factorization of arr through the blocked path with the look-ahead
 * mode `mode` (kiln__lu_lookahead_test): the packed factors and pivots,
 * read back. */
typedef struct lh_result {
  double *lu;
  int32_t *piv;
} lh_result;

static lh_result lh_factor(kiln_array *arr, int mode) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 2;
  kiln__lu_lookahead_test = mode;
  kiln_array *lu = NULL, *piv = NULL;
  CHECK_OK(kiln_lu_factor_ex(arr, &o, &lu, &piv));
  kiln__lu_lookahead_test = -1;
  lh_result r = {kt_read_f64(lu), kt_read(piv)};
  kiln_array_destroy(lu);
  kiln_array_destroy(piv);
  return r;
}

static void lh_result_free(lh_result *r) {
  free(r->lu);
  free(r->piv);
}

/* Whether the look-ahead must match the factorization without it bit for
 * bit: on the CPU, where every GEMM kernel sums each element's k terms in
 * the same order with the same fused multiply-adds. On a GPU the split
 * update's smaller GEMMs may pick another kernel (by shape) than the one
 * large GEMM, whose rounding may differ (and then a near tie may pick
 * another pivot): there only the backward error is checked. */
static bool lh_exact(void) {
  return strcmp(kt_device_name(), "cpu") == 0;
}

/* arr (values a, m x n) factored with the look-ahead forced (mode 2) and
 * without it: the first checked, the two equal bit for bit where
 * lh_exact. */
static void lh_compare(const char *what, kiln_dtype dt, kiln_array *arr,
                       const double *a, int64_t m, int64_t n) {
  int64_t k = m < n ? m : n;
  lh_result on = lh_factor(arr, 2), off = lh_factor(arr, 0);
  kt_la_lu_check(what, 0, dt, m, n, a, on.lu, on.piv);
  if (!lh_exact()) {
    lh_result_free(&on);
    lh_result_free(&off);
    return;
  }
  for (int64_t j = 0; j < k; j++)
    CHECK(on.piv[j] == off.piv[j],
          "%s: pivot %lld is %d with the look-ahead, %d without", what,
          (long long)j, on.piv[j], off.piv[j]);
  for (int64_t i = 0; i < m * n; i++)
    CHECK(on.lu[i] == off.lu[i] || (isnan(on.lu[i]) && isnan(off.lu[i])),
          "%s: LU[%lld][%lld] is %.17g with the look-ahead, %.17g without",
          what, (long long)(i / n), (long long)(i % n), on.lu[i], off.lu[i]);
  lh_result_free(&on);
  lh_result_free(&off);
}

/* A random (or, with cond > 0, ill-conditioned) m x n matrix of dt. */
static void lh_case(kiln_dtype dt, int64_t m, int64_t n, double cond) {
  double *a = kt_la_alloc(m * n);
  if (cond > 0)
    kt_la_ill(m, n, cond, a);
  else
    for (int64_t i = 0; i < m * n; i++)
      a[i] = kt_uniform(-1, 1);
  int64_t shape[2] = {m, n};
  kiln_array *arr = kt_la_array(dt, 2, shape, a);
  char what[128];
  snprintf(what, sizeof what, "%s %lld x %lld%s", kiln_dtype_name(dt),
           (long long)m, (long long)n, cond > 0 ? " ill-conditioned" : "");
  lh_compare(what, dt, arr, a, m, n);
  kiln_array_destroy(arr);
  free(a);
}

/* Square (5 panels, and 5 with a last one of a single column), tall,
 * wide (columns past k: the side of update_b no panel reaches),
 * ill-conditioned (cond 1e6 float32, 1e12 float64), a transposed view;
 * under kiln__lu_grid_test, panels of 256 on lu_strip_grid's one group,
 * whose scratch the two streams share in turn. */
void test_linalg_lu_ahead(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lh_dtypes[d];
    lh_case(dt, 300, 300, 0);
    lh_case(dt, 257, 257, 0);
    lh_case(dt, 400, 200, 0);
    lh_case(dt, 200, 450, 0);
    lh_case(dt, 256, 256, dt == KILN_FLOAT32 ? 1e6 : 1e12);
    /* A transposed view (non-contiguous input). */
    double *a = kt_la_alloc(200 * 260);
    kiln_array *base = NULL, *view = NULL;
    kt_la_transposed(dt, 200, 260, a, &base, &view);
    lh_compare("transposed view 200 x 260", dt, view, a, 200, 260);
    kiln_array_destroy(view);
    kiln_array_destroy(base);
    free(a);
  }
  kiln__lu_grid_test = true;
  for (int d = 0; d < 2; d++)
    lh_case(lh_dtypes[d], 300, 300, 0);
  kiln__lu_grid_test = false;
  /* On a GPU, panels of 256 (k >= 2048) on lu_strip_grid with several
   * groups, the side stream's cooperative launches beside the caller's
   * GEMMs (too slow for the CPU suite). */
  if (!lh_exact())
    for (int d = 0; d < 2; d++)
      lh_case(lh_dtypes[d], 2100, 2100, 0);
}

/* ---- kiln__stream_wait_stream -------------------------------------------- */

typedef struct lh_flag {
  atomic_int value;
  int seen;
} lh_flag;

static void lh_sleep_then_set(void *user, kiln_status status) {
  (void)status;
  lh_flag *f = user;
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  atomic_store(&f->value, 1);
}

static void lh_read(void *user, kiln_status status) {
  (void)status;
  lh_flag *f = user;
  f->seen = atomic_load(&f->value);
}

/* Work on the waiter after kiln__stream_wait_stream runs after the
 * signaller's work enqueued before it (a host callback that sleeps 50 ms
 * first); the side stream is made once and kept. */
void test_linalg_lu_ahead_streams(void) {
  kiln_device *dev = kt_device();
  kiln_stream *side = NULL, *again = NULL, *s = NULL;
  CHECK_OK(kiln__device_side_stream(dev, &side));
  CHECK_OK(kiln__device_side_stream(dev, &again));
  CHECK(side == again && side != NULL, "the side stream is made once");
  CHECK_OK(kiln_stream_create(dev, &s));
  for (int dir = 0; dir < 2; dir++) {
    kiln_stream *sig = dir == 0 ? side : s, *wait = dir == 0 ? s : side;
    lh_flag f;
    atomic_init(&f.value, 0);
    f.seen = -1;
    CHECK_OK(kiln_stream_add_callback(sig, lh_sleep_then_set, &f));
    CHECK_OK(kiln__stream_wait_stream(wait, sig));
    CHECK_OK(kiln_stream_add_callback(wait, lh_read, &f));
    CHECK_OK(kiln_stream_synchronize(wait));
    CHECK(f.seen == 1, "the waiter ran before the signaller's work (%d)",
          f.seen);
    CHECK_OK(kiln_stream_synchronize(sig));
  }
  CHECK_OK(kiln__stream_wait_stream(s, s)); /* one stream: nothing */
  CHECK_OK(kiln_stream_destroy(s));
}

/* ---- lifetime ------------------------------------------------------------ */

/* An asynchronous factorization (kiln__lu_run without the info check)
 * whose results are destroyed as soon as it returns, with nearly all its
 * work still queued on both streams; arrays of the same size made at
 * once (likely W's memory again, from the cache) and filled must keep
 * their values: no late write of the side stream lands in them. */
void test_linalg_lu_ahead_lifetime(void) {
  kiln_device *dev = kt_device();
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(dev, &s));
  int64_t n = 320, shape[2] = {n, n};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lh_dtypes[d];
    double *a = NULL;
    kiln_array *arr = lh_square(dt, n, &a);
    for (int rep = 0; rep < 4; rep++) {
      kiln__lu_lookahead_test = 2;
      kiln__lu f;
      CHECK_OK(kiln__lu_run(s, arr, 2, false, &f));
      kiln__lu_free(&f);
      kiln_array *x = NULL;
      CHECK_OK(kiln_array_create(dev, dt, 2, shape, &x));
      CHECK_OK(kiln_array_fill(x, 7.0, s));
      CHECK_OK(kiln_synchronize(dev));
      double *v = kt_read_f64(x);
      for (int64_t i = 0; i < n * n; i++)
        CHECK(v[i] == 7.0,
              "%s rep %d: element %lld of a new array is %g, "
              "not 7: written after the factorization's results were "
              "destroyed",
              kiln_dtype_name(dt), rep, (long long)i, v[i]);
      free(v);
      kiln_array_destroy(x);
    }
    kiln__lu_lookahead_test = -1;
    kiln_array_destroy(arr);
    free(a);
  }
  CHECK_OK(kiln_stream_synchronize(s));
  CHECK_OK(kiln_stream_destroy(s));
}

/* An asynchronous factorization (no info check, nothing waited for)
 * whose W is copied at once on a third stream: the copy must wait, by
 * W's own hazard record, for every write, those made through the side
 * stream's alias included, and equal the same factorization run and
 * waited for through kiln_lu_factor_ex, bit for bit. */
void test_linalg_lu_ahead_async(void) {
  kiln_device *dev = kt_device();
  kiln_stream *s = NULL, *s3 = NULL;
  CHECK_OK(kiln_stream_create(dev, &s));
  CHECK_OK(kiln_stream_create(dev, &s3));
  int64_t n = 300;
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = lh_dtypes[d];
    double *a = NULL;
    kiln_array *arr = lh_square(dt, n, &a);
    lh_result ref = lh_factor(arr, 2);
    kiln__lu_lookahead_test = 2;
    kiln__lu f;
    CHECK_OK(kiln__lu_run(s, arr, 2, false, &f));
    kiln__lu_lookahead_test = -1;
    kiln_array *c = NULL;
    CHECK_OK(kiln_array_contiguous(f.w, s3, &c));
    kiln__lu_free(&f);
    double *v = kt_read_f64(c);
    for (int64_t i = 0; i < n * n; i++)
      CHECK(v[i] == ref.lu[i],
            "%s: W[%lld][%lld] read on a third stream is %.17g, not %.17g",
            kiln_dtype_name(dt), (long long)(i / n), (long long)(i % n), v[i],
            ref.lu[i]);
    free(v);
    kiln_array_destroy(c);
    lh_result_free(&ref);
    kiln_array_destroy(arr);
    free(a);
  }
  CHECK_OK(kiln_synchronize(dev));
  CHECK_OK(kiln_stream_destroy(s));
  CHECK_OK(kiln_stream_destroy(s3));
}

/* ---- two host threads ---------------------------------------------------- */

typedef struct lh_job {
  kiln_array *arr;
  kiln_array *lu, *piv;
  kiln_status st;
} lh_job;

static void *lh_worker(void *p) {
  lh_job *j = p;
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 2;
  for (int rep = 0; rep < 2 && j->st == KILN_OK; rep++) {
    kiln_array_destroy(j->lu);
    kiln_array_destroy(j->piv);
    j->lu = j->piv = NULL;
    j->st = kiln_lu_factor_ex(j->arr, &o, &j->lu, &j->piv);
  }
  return NULL;
}

/* Two threads factoring at once, each on its own default stream, sharing
 * the side stream: each result equal, bit for bit, to its matrix's
 * factorization by one thread alone. */
void test_linalg_lu_ahead_threads(void) {
  int64_t n = 260;
  double *a[2];
  lh_job jobs[2];
  lh_result ref[2];
  for (int t = 0; t < 2; t++) {
    memset(&jobs[t], 0, sizeof jobs[t]);
    jobs[t].arr = lh_square(KILN_FLOAT32, n, &a[t]);
    ref[t] = lh_factor(jobs[t].arr, 2);
  }
  kiln__lu_lookahead_test = 2; /* read by both threads, set before */
  pthread_t th[2];
  for (int t = 0; t < 2; t++)
    CHECK(pthread_create(&th[t], NULL, lh_worker, &jobs[t]) == 0,
          "pthread_create");
  for (int t = 0; t < 2; t++)
    pthread_join(th[t], NULL);
  kiln__lu_lookahead_test = -1;
  for (int t = 0; t < 2; t++) {
    CHECK(jobs[t].st == KILN_OK, "thread %d: %s", t,
          kiln_status_string(jobs[t].st));
    double *lu = kt_read_f64(jobs[t].lu);
    int32_t *piv = kt_read(jobs[t].piv);
    for (int64_t j = 0; j < n; j++)
      CHECK(piv[j] == ref[t].piv[j], "thread %d: pivot %lld differs", t,
            (long long)j);
    for (int64_t i = 0; i < n * n; i++)
      CHECK(lu[i] == ref[t].lu[i],
            "thread %d: LU[%lld][%lld] is %.9g, not "
            "%.9g",
            t, (long long)(i / n), (long long)(i % n), lu[i], ref[t].lu[i]);
    free(lu);
    free(piv);
    lh_result_free(&ref[t]);
    kiln_array_destroy(jobs[t].lu);
    kiln_array_destroy(jobs[t].piv);
    kiln_array_destroy(jobs[t].arr);
    free(a[t]);
  }
}

/* ---- allocation failures ------------------------------------------------- */

/* The factorization of test_linalg_lu_ahead_alloc_fail: its input, its
 * reference factors and the out pointers each call gets (a sentinel no
 * call returns). */
typedef struct lh_af {
  kiln_array *arr, *lu, *piv;
  kiln_linalg_opts o;
  lh_result ref;
  int64_t count;
} lh_af;

static char lh_af_mark;
#define LH_AF_SENTINEL ((kiln_array *)&lh_af_mark)

static kiln_status lh_af_call(void *ctx) {
  lh_af *c = ctx;
  c->lu = c->piv = LH_AF_SENTINEL;
  return kiln_lu_factor_ex(c->arr, &c->o, &c->lu, &c->piv);
}

/* A success gives the reference bit for bit, a failure leaves the out
 * pointers untouched. */
static void lh_af_check(void *ctx, kiln_status st, long k) {
  lh_af *c = ctx;
  if (st != KILN_OK) {
    CHECK(c->lu == LH_AF_SENTINEL && c->piv == LH_AF_SENTINEL,
          "allocation %ld failing: out pointers changed", k);
    return;
  }
  float *got = kt_read(c->lu);
  for (int64_t i = 0; i < c->count; i++)
    CHECK(got[i] == (float)c->ref.lu[i],
          "allocation %ld failing, yet success: LU[%lld] is %.9g, not %.9g",
          k, (long long)i, got[i], c->ref.lu[i]);
  free(got);
  kiln_array_destroy(c->lu);
  kiln_array_destroy(c->piv);
}

/* The look-ahead's error paths: a forced look-ahead factorization (200 x
 * 200, 4 panels) with its k-th host allocation failing (kt_af_sweep):
 * either it still succeeds (a failed event record or wait falls back to
 * a host wait) with a correct result, or it fails with out of memory,
 * its out pointers untouched and no host block leaked once the streams
 * are idle. (The messages do not always name kiln_lu_factor_ex: the
 * drivers' views come from kiln_array_view, whose failures name it.) */
void test_linalg_lu_ahead_alloc_fail(void) {
  /* (The CPU backend only: on CUDA the sweep would also reach the
   * backend's own host allocations, which no GPU run has checked yet.) */
  if (!lh_exact())
    kt_skip("the allocation-failure sweep runs on the CPU backend");
  int64_t n = 200;
  double *a = NULL;
  lh_af c;
  memset(&c, 0, sizeof c);
  c.arr = lh_square(KILN_FLOAT32, n, &a);
  c.ref = lh_factor(c.arr, 2); /* warm: kernels, side stream */
  c.count = n * n;
  kiln_linalg_opts_init(&c.o);
  c.o.path = 2;
  kiln__lu_lookahead_test = 2;
  CHECK(kt_af_sweep("a factorization", lh_af_call, lh_af_check, &c) > 10,
        "a factorization allocates more than 10 blocks");
  kiln__lu_lookahead_test = -1;
  lh_result_free(&c.ref);
  kiln_array_destroy(c.arr);
  free(a);
}
