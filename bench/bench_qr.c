/*
 * QR benchmark (issue 4): kiln_qr in reduced mode, float32, against
 * cuSOLVER loaded in the same run (dlopen, bench/baseline.h). The issue's
 * H100 anchors (PyTorch 2.11, which calls the same cuSOLVER routines) are
 * in brackets:
 *   QR 1,000,000 x 32 (6.16 ms), 100,000 x 64 (2.99 ms), 16384 x 1024
 *   (21.2 ms), 4096^2 (29.0 ms), 8192^2 (96.2 ms): one matrix each;
 *   batched QR of 10000 matrices 32 x 32 (502 ms) and of 1000 matrices
 *   128 x 128 (70.4 ms).
 *
 * The baseline is what PyTorch runs for a reduced QR: cusolverDnSgeqrf
 * (Householder QR in place: R above the diagonal, reflectors below), a
 * copy of R out of it, and cusolverDnSorgqr (Q's n columns formed in
 * place of the reflectors); for a batch, the same two calls looped over
 * the matrices, one after the other on one stream, as PyTorch does (that
 * loop is what the 502 ms and 70.4 ms anchors measure). A timed baseline
 * run is the device copy of A (cuSOLVER works in place; kiln reads A and
 * writes new Q and R arrays), geqrf, the R copy, orgqr and a
 * cudaDeviceSynchronize; workspace and output buffers are allocated
 * beforehand and devInfo is read back and checked after each measurement.
 * cuSOLVER is column-major: it is given the column-major copy of the same
 * A, which is the layout PyTorch hands it too.
 * The batched lines print a second, labelled baseline,
 * cublasSgeqrfBatched: it computes R and the reflectors only (no Q), so
 * its ratio flatters cuBLAS.
 *
 * A kiln timing is the whole kiln_qr_ex call (allocating Q and R, the
 * factorization) until its stream is synchronized; destroying the results
 * is outside the clock. Both answers are checked before they are timed,
 * in float64 on the host with random probe vectors (linalg_bench.h):
 * res = ||A - QR||_F / (||A||_F n eps) and orth = ||Q^T Q - I||_F /
 * (n eps), each at most QR_TOL = 30; kiln's R must also have a
 * non-negative diagonal (its contract) and zeros below it (the check
 * multiplies by all of kiln's R, but only by the upper triangle of
 * cuSOLVER's).
 *
 * Without a GPU it says so, skips the GPU lines and times small problems
 * on the CPU backend against a plain C Householder QR (the same
 * geqrf + orgqr algorithm, column-major, in float32), checked the same
 * way, so `make bench` works everywhere. An argument runs only the lines
 * whose label contains it: `bench_qr 8192`.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_NAME "bench_qr"
#include "baseline.h"
#include "bench_util.h"
#include "linalg_bench.h"

/*
 * The threshold of both QR checks: LAPACK's for its own QR tests (with
 * 1-norms). A correct float32 factorization scores well under 1 at these
 * sizes; a wrong or unwritten tile of Q or R scores in the hundreds or
 * more (through orth when the scaled residual alone would not show it).
 */
#define QR_TOL 30.0

/* One QR problem: `batch` row-major m x n matrices (m >= n), float32. */
typedef struct qr_problem {
  const char *label;
  int64_t batch, m, n;
  int kiln_reps, base_reps; /* timed runs after the checked one */
  const float *a;           /* row-major, as kiln gets it */
  float *a_cm;              /* column-major copy, for the baselines */
} qr_problem;

/* The device and what was loaded. */
typedef struct env {
  kiln_device *dev;
  kiln_stream *stream;
  bool gpu;
  bool have_cs, have_cb; /* cuSOLVER / cuBLAS loaded */
  const char *no_cs, *no_cb;
} env;

/* ---- the check ----------------------------------------------------------- */

typedef struct qr_err {
  double res, orth; /* the worst over the batch */
  int neg_diag;     /* negative diagonal entries of R (kiln only) */
} qr_err;

/*
 * The checks of one factorization A = Q R (A m x n, Q m x n, R n x n,
 * given as views) with `probes` random vectors: res and orth as the file
 * comment says, folded into *e as the worst so far.
 */
static void qr_check_one(const mview *a, const mview *q, const mview *r,
                         bool want_sign, int probes, uint64_t *seed,
                         qr_err *e) {
  int64_t m = a->rows, n = a->cols;
  double *x = xmalloc((size_t)n * sizeof *x), *y = xmalloc((size_t)n * 8);
  double *u = xmalloc((size_t)m * sizeof *u), *v = xmalloc((size_t)m * 8);
  double na = view_norm_fro(a);
  double sum_e = 0, sum_x = 0, sum_o = 0;
  for (int p = 0; p < probes; p++) {
    for (int64_t j = 0; j < n; j++)
      x[j] = rnd(seed);
    mv_mul(a, x, u); /* u = A x */
    mv_mul(r, x, y); /* v = Q (R x) */
    mv_mul(q, y, v);
    for (int64_t i = 0; i < m; i++)
      sum_e += (v[i] - u[i]) * (v[i] - u[i]);
    sum_x += norm2(x, n) * norm2(x, n);
    mv_mul(q, x, u); /* y = Q^T (Q x), against x */
    mv_tmul(q, u, y);
    for (int64_t j = 0; j < n; j++)
      sum_o += (y[j] - x[j]) * (y[j] - x[j]);
  }
  double nn = (double)n;
  double res = sqrt(nn * sum_e / sum_x) / ((na > 0 ? na : 1) * nn * EPS32);
  double orth = sqrt(nn * sum_o / sum_x) / (nn * EPS32);
  e->res = worse(e->res, res);
  e->orth = worse(e->orth, orth);
  if (want_sign)
    for (int64_t i = 0; i < n; i++)
      e->neg_diag += r->p[i * r->rs + i * r->cs] < 0;
  free(x);
  free(y);
  free(u);
  free(v);
}

/* Writes the check's figures into o and whether they pass. */
static void qr_verdict(outcome *o, const qr_err *e) {
  o->passed = e->res <= QR_TOL && e->orth <= QR_TOL && !e->neg_diag;
  int len = snprintf(o->check, sizeof o->check, "res %.2g orth %.2g", e->res,
                     e->orth);
  if (e->neg_diag && len > 0 && (size_t)len < sizeof o->check)
    snprintf(o->check + len, sizeof o->check - (size_t)len,
             ", %d negative R diagonal", e->neg_diag);
}

/* ---- kiln ---------------------------------------------------------------- */

typedef struct kiln_qr_job {
  kiln_array *a, *q, *r;
  kiln_linalg_opts opts;
} kiln_qr_job;

static kiln_status kiln_qr_run(void *ctx) {
  kiln_qr_job *j = ctx;
  return kiln_qr_ex(j->a, KILN_QR_REDUCED, &j->opts, &j->q, &j->r);
}

static void kiln_qr_release(void *ctx) {
  kiln_qr_job *j = ctx;
  kiln_array_destroy(j->q);
  kiln_array_destroy(j->r);
  j->q = j->r = NULL;
}

/* Reads kiln's Q and R back and checks them; false (why set) when they
 * cannot be read or have the wrong size. */
static bool kiln_qr_check(const qr_problem *p, kiln_qr_job *j, outcome *o) {
  size_t qn = (size_t)(p->batch * p->m * p->n);
  size_t rn = (size_t)(p->batch * p->n * p->n);
  if (kiln_array_nbytes_dense(j->q) != qn * 4 ||
      kiln_array_nbytes_dense(j->r) != rn * 4) {
    snprintf(o->why, sizeof o->why, "kiln's Q or R has the wrong size");
    return false;
  }
  float *q = xmalloc(qn * 4), *r = xmalloc(rn * 4);
  bool ok = kiln_array_to_host(j->q, q, qn * 4) == KILN_OK &&
            kiln_array_to_host(j->r, r, rn * 4) == KILN_OK;
  if (!ok) {
    kiln_failed(o);
  } else {
    qr_err e = {0, 0, 0};
    uint64_t seed = 99;
    for (int64_t b = 0; b < p->batch; b++) {
      mview a = view_rm(p->a + b * p->m * p->n, p->m, p->n);
      mview qv = view_rm(q + b * p->m * p->n, p->m, p->n);
      mview rv = view_rm(r + b * p->n * p->n, p->n, p->n);
      qr_check_one(&a, &qv, &rv, true, p->batch > 1 ? 1 : 2, &seed, &e);
    }
    qr_verdict(o, &e);
  }
  free(q);
  free(r);
  return ok;
}

/* kiln's outcome: one checked call, then the timed ones if it passed. */
static void measure_kiln(const env *v, const qr_problem *p, outcome *o) {
  outcome_init(o);
  int64_t shape[3] = {p->batch, p->m, p->n};
  int nd = p->batch > 1 ? 3 : 2;
  kiln_qr_job j = {NULL, NULL, NULL, {0}};
  kiln_linalg_opts_init(&j.opts);
  j.opts.stream = v->stream;
  if (kiln_array_from_host(v->dev, KILN_FLOAT32, nd, shape + 3 - nd, p->a,
                           &j.a) != KILN_OK) {
    kiln_failed(o);
    return;
  }
  if (kiln_qr_run(&j) != KILN_OK) {
    kiln_failed(o);
  } else {
    bool read = kiln_qr_check(p, &j, o);
    kiln_qr_release(&j);
    if (read && o->passed)
      time_kiln(o, v->stream, p->kiln_reps, kiln_qr_run, kiln_qr_release, &j);
  }
  kiln_array_destroy(j.a);
}

/* ---- cuSOLVER: geqrf + orgqr, looped over a batch ------------------------ */

typedef struct cs_qr_job {
  int m, n, batch;
  float *src, *w, *r, *tau, *work; /* device */
  int *info;                       /* device: geqrf's, then orgqr's */
  int lwork;
} cs_qr_job;

/* One timed run; 0 or the first failed call's status. */
static int cs_qr_run(void *ctx) {
  cs_qr_job *j = ctx;
  size_t mn = (size_t)j->m * (size_t)j->n, nn = (size_t)j->n * (size_t)j->n;
  int st = rt.memcpy_(j->w, j->src, (size_t)j->batch * mn * 4, BL_D2D);
  for (int b = 0; b < j->batch && st == 0; b++)
    st = cs.sgeqrf(cs.handle, j->m, j->n, j->w + b * mn, j->m,
                   j->tau + (size_t)b * j->n, j->work, j->lwork, j->info + b);
  /* R is the top n x n of each factored matrix, leading dimension m. */
  if (st == 0 && j->m == j->n)
    st = rt.memcpy_(j->r, j->w, (size_t)j->batch * nn * 4, BL_D2D);
  for (int b = 0; b < j->batch && st == 0 && j->m != j->n; b++)
    st = rt.memcpy2d(j->r + b * nn, (size_t)j->n * 4, j->w + b * mn,
                     (size_t)j->m * 4, (size_t)j->n * 4, (size_t)j->n, BL_D2D);
  for (int b = 0; b < j->batch && st == 0; b++)
    st = cs.sorgqr(cs.handle, j->m, j->n, j->n, j->w + b * mn, j->m,
                   j->tau + (size_t)b * j->n, j->work, j->lwork,
                   j->info + j->batch + b);
  return st;
}

/* The first non-zero devInfo after a run, 0 if none; -9999 if it could not
 * be read. *which is the matrix. */
static int cs_qr_info(const cs_qr_job *j, int *which) {
  size_t count = 2 * (size_t)j->batch;
  int *h = xmalloc(count * sizeof *h);
  int bad = rt.memcpy_(h, j->info, count * sizeof *h, BL_D2H) ? -9999 : 0;
  for (size_t i = 0; i < count && bad == 0; i++)
    if (h[i] != 0) {
      bad = h[i];
      *which = (int)(i % (size_t)j->batch);
    }
  free(h);
  return bad;
}

/* Reads the baseline's Q and R back and checks them. */
static void cs_qr_check(const qr_problem *p, const cs_qr_job *j, outcome *o) {
  size_t mn = (size_t)(p->m * p->n), nn = (size_t)(p->n * p->n);
  float *q = xmalloc((size_t)p->batch * mn * 4);
  float *r = xmalloc((size_t)p->batch * nn * 4);
  if (rt.memcpy_(q, j->w, (size_t)p->batch * mn * 4, BL_D2H) ||
      rt.memcpy_(r, j->r, (size_t)p->batch * nn * 4, BL_D2H)) {
    snprintf(o->why, sizeof o->why, "reading its Q and R back failed");
  } else {
    qr_err e = {0, 0, 0};
    uint64_t seed = 99;
    for (int64_t b = 0; b < p->batch; b++) {
      mview a = view_rm(p->a + (size_t)b * mn, p->m, p->n);
      mview qv = view_cm(q + (size_t)b * mn, p->m, p->n, p->m);
      mview rv = view_cm(r + (size_t)b * nn, p->n, p->n, p->n);
      rv.tri = 1; /* the reflectors sit below R's diagonal */
      qr_check_one(&a, &qv, &rv, false, p->batch > 1 ? 1 : 2, &seed, &e);
    }
    qr_verdict(o, &e);
  }
  free(q);
  free(r);
}

static void measure_cusolver(const env *v, const qr_problem *p, outcome *o) {
  outcome_init(o);
  if (!v->have_cs || !cs.sgeqrf_size || !cs.sgeqrf || !cs.sorgqr_size ||
      !cs.sorgqr) {
    snprintf(o->why, sizeof o->why, "no baseline: %s",
             v->have_cs ? "cuSOLVER lacks geqrf/orgqr" : v->no_cs);
    return;
  }
  cs_qr_job j = {.m = (int)p->m, .n = (int)p->n, .batch = (int)p->batch};
  size_t mn = (size_t)(p->m * p->n), nn = (size_t)(p->n * p->n);
  size_t batch = (size_t)p->batch;
  int l1 = 0, l2 = 0, which = 0, info;
  snprintf(o->why, sizeof o->why, "a CUDA or cuSOLVER call failed");
  if (bl_malloc((void **)&j.src, batch * mn * 4) ||
      bl_malloc((void **)&j.w, batch * mn * 4) ||
      bl_malloc((void **)&j.r, batch * nn * 4) ||
      bl_malloc((void **)&j.tau, batch * (size_t)p->n * 4) ||
      bl_malloc((void **)&j.info, 2 * batch * sizeof(int)) ||
      rt.memcpy_(j.src, p->a_cm, batch * mn * 4, BL_H2D) ||
      cs.sgeqrf_size(cs.handle, j.m, j.n, j.w, j.m, &l1) ||
      cs.sorgqr_size(cs.handle, j.m, j.n, j.n, j.w, j.m, j.tau, &l2))
    goto done;
  j.lwork = l1 > l2 ? l1 : l2;
  if (bl_malloc((void **)&j.work, (size_t)(j.lwork > 0 ? j.lwork : 1) * 4) ||
      cs_qr_run(&j) || rt.sync())
    goto done;
  if ((info = cs_qr_info(&j, &which)) != 0) {
    snprintf(o->why, sizeof o->why, "devInfo %d for matrix %d", info, which);
    goto done;
  }
  o->why[0] = '\0';
  cs_qr_check(p, &j, o);
  if (!o->passed)
    goto done; /* still printed: its check and FAILED */
  if (time_baseline(o, p->base_reps, cs_qr_run, rt.sync, &j) &&
      (info = cs_qr_info(&j, &which)) != 0) {
    snprintf(o->why, sizeof o->why, "devInfo %d for matrix %d while timing",
             info, which);
    o->ms = -1;
  }
done:
  rt.free_(j.src);
  rt.free_(j.w);
  rt.free_(j.r);
  rt.free_(j.tau);
  rt.free_(j.work);
  rt.free_(j.info);
}

/* ---- cuBLAS: geqrfBatched (R and the reflectors, no Q) ------------------- */

typedef struct cb_qr_job {
  int n, batch;
  float *src, *w, *tau; /* device */
  float **wp, **taup;   /* device arrays of per-matrix pointers */
} cb_qr_job;

static int cb_qr_run(void *ctx) {
  cb_qr_job *j = ctx;
  size_t nn = (size_t)j->n * (size_t)j->n;
  int info = 0;
  int st = rt.memcpy_(j->w, j->src, (size_t)j->batch * nn * 4, BL_D2D);
  if (st == 0)
    st = cb.sgeqrf_batched(cb.handle, j->n, j->n, j->wp, j->n, j->taup, &info,
                           j->batch);
  return st != 0 ? st : info; /* info: a bad parameter (host value) */
}

/*
 * R alone is checked: Q orthogonal means ||R x|| = ||A x|| for every x.
 * res = sqrt(n) | ||R x|| - ||A x|| | / ||x|| / (||A||_F n eps), the
 * worst over the batch.
 */
static void cb_qr_check(const qr_problem *p, const float *w, outcome *o) {
  int64_t n = p->n;
  double *x = xmalloc((size_t)n * 8), *y = xmalloc((size_t)n * 8);
  double worst = 0;
  uint64_t seed = 99;
  for (int64_t b = 0; b < p->batch; b++) {
    mview a = view_rm(p->a + b * n * n, n, n);
    mview r = view_cm(w + b * n * n, n, n, n);
    r.tri = 1;
    for (int64_t i = 0; i < n; i++)
      x[i] = rnd(&seed);
    mv_mul(&a, x, y);
    double ax = norm2(y, n);
    mv_mul(&r, x, y);
    double d = fabs(norm2(y, n) - ax) * sqrt((double)n) / norm2(x, n);
    double na = view_norm_fro(&a);
    worst = worse(worst, d / ((na > 0 ? na : 1) * (double)n * EPS32));
  }
  o->passed = worst <= QR_TOL;
  snprintf(o->check, sizeof o->check, "|Rx|-|Ax| %.2g", worst);
  free(x);
  free(y);
}

static void measure_cublas_batched(const env *v, const qr_problem *p,
                                   outcome *o) {
  outcome_init(o);
  if (!v->have_cb || !cb.sgeqrf_batched) {
    snprintf(o->why, sizeof o->why, "no baseline: %s",
             v->have_cb ? "cuBLAS lacks geqrfBatched" : v->no_cb);
    return;
  }
  cb_qr_job j = {.n = (int)p->n, .batch = (int)p->batch};
  size_t nn = (size_t)(p->n * p->n), batch = (size_t)p->batch;
  float **hp = xmalloc(2 * batch * sizeof *hp);
  float *h = NULL;
  snprintf(o->why, sizeof o->why, "a CUDA or cuBLAS call failed");
  if (bl_malloc((void **)&j.src, batch * nn * 4) ||
      bl_malloc((void **)&j.w, batch * nn * 4) ||
      bl_malloc((void **)&j.tau, batch * (size_t)p->n * 4) ||
      bl_malloc((void **)&j.wp, batch * sizeof *hp) ||
      bl_malloc((void **)&j.taup, batch * sizeof *hp) ||
      rt.memcpy_(j.src, p->a_cm, batch * nn * 4, BL_H2D))
    goto done;
  for (size_t b = 0; b < batch; b++) {
    hp[b] = j.w + b * nn;
    hp[batch + b] = j.tau + b * (size_t)p->n;
  }
  if (rt.memcpy_(j.wp, hp, batch * sizeof *hp, BL_H2D) ||
      rt.memcpy_(j.taup, hp + batch, batch * sizeof *hp, BL_H2D) ||
      cb_qr_run(&j) || rt.sync())
    goto done;
  h = xmalloc(batch * nn * 4);
  if (rt.memcpy_(h, j.w, batch * nn * 4, BL_D2H))
    goto done;
  o->why[0] = '\0';
  cb_qr_check(p, h, o);
  if (o->passed)
    time_baseline(o, p->base_reps, cb_qr_run, rt.sync, &j);
done:
  free(h);
  free(hp);
  rt.free_(j.src);
  rt.free_(j.w);
  rt.free_(j.tau);
  rt.free_(j.wp);
  rt.free_(j.taup);
}

/* ---- the host baseline: plain Householder QR, column-major --------------- */

/* d -= tau v (v^T d) for the reflector v of column k (v[k] = 1 implied,
 * v[k+1..m-1] = c[k+1..m-1]), on one column d of length m; the dot
 * product in double. */
static void host_reflect(int m, int k, const float *c, float tau,
                         float *d) {
  double w = d[k];
  for (int i = k + 1; i < m; i++)
    w += (double)c[i] * d[i];
  w *= tau;
  d[k] = (float)(d[k] - w);
  for (int i = k + 1; i < m; i++)
    d[i] = (float)(d[i] - w * c[i]);
}

/*
 * A column-major m x n matrix (leading dimension m) factored in place as
 * LAPACK's geqr2 does: for each column, the reflector H = I - tau v v^T
 * (v[0] = 1, kept below the diagonal) that maps the column's tail to
 * beta e1, then applied to the columns on its right. Norms and dot
 * products are accumulated in double (a plain loop, not a tuned one).
 */
static void host_geqr2(int m, int n, float *a, float *tau) {
  for (int k = 0; k < n; k++) {
    float *c = a + (size_t)k * m;
    double s = 0;
    for (int i = k + 1; i < m; i++)
      s += (double)c[i] * c[i];
    double alpha = c[k], norm = sqrt(alpha * alpha + s);
    if (s == 0) {
      tau[k] = 0;
      continue;
    }
    double beta = alpha >= 0 ? -norm : norm;
    tau[k] = (float)((beta - alpha) / beta);
    double scale = 1.0 / (alpha - beta);
    for (int i = k + 1; i < m; i++)
      c[i] = (float)(c[i] * scale);
    c[k] = (float)beta;
    for (int j = k + 1; j < n; j++)
      host_reflect(m, k, c, tau[k], a + (size_t)j * m);
  }
}

/* Q's n columns (column-major, leading dimension m) from the reflectors
 * in v (geqr2's output), as LAPACK's org2r: H_0 ... H_{n-1} applied to
 * the first n columns of the identity, last reflector first. */
static void host_org2r(int m, int n, const float *v, const float *tau,
                       float *q) {
  memset(q, 0, (size_t)m * n * sizeof *q);
  for (int j = 0; j < n; j++)
    q[(size_t)j * m + j] = 1;
  for (int k = n - 1; k >= 0; k--) {
    const float *c = v + (size_t)k * m;
    for (int j = k; j < n; j++)
      host_reflect(m, k, c, tau[k], q + (size_t)j * m);
  }
}

typedef struct host_qr_job {
  const qr_problem *p;
  float *w, *q, *tau;
} host_qr_job;

static int host_qr_run(void *ctx) {
  host_qr_job *j = ctx;
  const qr_problem *p = j->p;
  size_t mn = (size_t)(p->m * p->n);
  memcpy(j->w, p->a_cm, (size_t)p->batch * mn * 4);
  for (int64_t b = 0; b < p->batch; b++) {
    host_geqr2((int)p->m, (int)p->n, j->w + b * mn, j->tau + b * p->n);
    host_org2r((int)p->m, (int)p->n, j->w + b * mn, j->tau + b * p->n,
               j->q + b * mn);
  }
  return 0;
}

static void measure_host(const qr_problem *p, outcome *o) {
  outcome_init(o);
  size_t mn = (size_t)(p->m * p->n);
  host_qr_job j = {p, xmalloc((size_t)p->batch * mn * 4),
                   xmalloc((size_t)p->batch * mn * 4),
                   xmalloc((size_t)(p->batch * p->n) * 4)};
  host_qr_run(&j);
  qr_err e = {0, 0, 0};
  uint64_t seed = 99;
  for (int64_t b = 0; b < p->batch; b++) {
    mview a = view_rm(p->a + b * mn, p->m, p->n);
    mview q = view_cm(j.q + b * mn, p->m, p->n, p->m);
    mview r = view_cm(j.w + b * mn, p->n, p->n, p->m);
    r.tri = 1;
    qr_check_one(&a, &q, &r, false, 2, &seed, &e);
  }
  qr_verdict(o, &e);
  if (o->passed)
    time_baseline(o, p->base_reps, host_qr_run, NULL, &j);
  free(j.w);
  free(j.q);
  free(j.tau);
}

/* ---- the lines ----------------------------------------------------------- */

static void qr_line(const env *v, qr_problem *p) {
  size_t count = (size_t)(p->batch * p->m * p->n);
  float *a = random_floats(count, 1000 + (uint64_t)p->m * 7 + (uint64_t)p->n);
  p->a = a;
  p->a_cm = to_colmajor(a, p->batch, p->m, p->n);
  double m = (double)p->m, n = (double)p->n, b = (double)p->batch;
  /* geqrf + orgqr: (2mn^2 - 2n^3/3) each; least traffic: read A, write Q
   * and R. */
  line_info li = {p->label, b * (4 * m * n * n - 4 * n * n * n / 3),
                  v->gpu ? b * 4 * (2 * m * n + n * n) : 0,
                  v->gpu ? BENCH_PEAK_FP32_TFLOPS : 0,
                  v->gpu ? (p->batch > 1 ? "cuSOLVER loop geqrf+orgqr"
                                         : "cuSOLVER geqrf+orgqr")
                         : "plain C Householder"};
  outcome k, base;
  measure_kiln(v, p, &k);
  if (v->gpu)
    measure_cusolver(v, p, &base);
  else
    measure_host(p, &base);
  print_line(&li, &k, &base);
  if (v->gpu && p->batch > 1 && p->m == p->n) {
    line_info l2 = li;
    l2.label = "  (same kiln run)";
    l2.baseline = "cublasSgeqrfBatched, R only";
    p->base_reps = 5; /* one batched call: fast enough for five runs */
    measure_cublas_batched(v, p, &base);
    print_line(&l2, &k, &base);
  }
  free(a);
  free(p->a_cm);
  p->a = p->a_cm = NULL;
}

static void gpu_lines(env *v, const char *filter) {
  v->have_cs = load_cusolver(&v->no_cs);
  v->have_cb = load_cublas(&v->no_cb);
  if (!v->have_cs)
    printf("%s: no cuSOLVER baseline.\n", v->no_cs);
  if (!v->have_cb)
    printf("%s: no cuBLAS baseline.\n", v->no_cb);
  qr_problem ps[] = {
      {"QR 1000000x32 float32", 1, 1000000, 32, 7, 5, NULL, NULL},
      {"QR 100000x64 float32", 1, 100000, 64, 7, 5, NULL, NULL},
      {"QR 16384x1024 float32", 1, 16384, 1024, 5, 5, NULL, NULL},
      {"QR 4096^2 float32", 1, 4096, 4096, 5, 5, NULL, NULL},
      {"QR 8192^2 float32", 1, 8192, 8192, 5, 5, NULL, NULL},
      /* The cuSOLVER loop takes ~0.5 s a run: two timed runs. */
      {"batched QR 10000 x 32^2 float32", 10000, 32, 32, 7, 2, NULL, NULL},
      {"batched QR 1000 x 128^2 float32", 1000, 128, 128, 7, 3, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
    if (wanted(ps[i].label, filter))
      qr_line(v, &ps[i]);
  unload_cusolver();
}

static void cpu_lines(env *v, const char *filter) {
  qr_problem ps[] = {
      {"QR 2000x32 float32 (cpu)", 1, 2000, 32, 5, 5, NULL, NULL},
      {"QR 256^2 float32 (cpu)", 1, 256, 256, 5, 5, NULL, NULL},
      {"batched QR 100 x 32^2 float32 (cpu)", 100, 32, 32, 5, 5, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
    if (wanted(ps[i].label, filter))
      qr_line(v, &ps[i]);
}

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : NULL;
  env v = {NULL, NULL, false, false, false, "", ""};
  if (kiln_device_find("gpu", &v.dev) != KILN_OK) {
    printf("bench_qr: no GPU (%s); GPU lines skipped, CPU lines only "
           "(small problems, against a plain C loop).\n",
           kiln_gpu_unavailable_reason());
    v.dev = kiln_device_default();
    v.stream = kiln_default_stream(v.dev);
    cpu_lines(&v, filter);
    return 0;
  }
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kiln_device_get_info(v.dev, &info));
  printf("bench_qr on %s (%s); float32 peak %g TFLOP/s (H100 SXM data "
         "sheet); checks: res, orth <= %g\n",
         info.name, info.arch, BENCH_PEAK_FP32_TFLOPS, QR_TOL);
  v.gpu = true;
  v.stream = kiln_default_stream(v.dev);
  gpu_lines(&v, filter);
  return 0;
}
