/*
 * Linear-solve benchmark (issue 4), float32, against cuSOLVER / cuBLAS
 * loaded in the same run (dlopen, bench/baseline.h):
 *   1. solve 8192^2 with 16 right-hand sides: kiln_solve against
 *      cusolverDnSgetrf + cusolverDnSgetrs (the anchor, through
 *      PyTorch: 40.9 ms; goal >= 1.5x faster);
 *   2. triangular solve 8192^2 with 16 right-hand sides:
 *      kiln_solve_triangular (lower) against cublasStrsm (supporting);
 *   3. LU 8192^2: kiln_lu_factor against cusolverDnSgetrf (supporting).
 *
 * The baselines are column-major; kiln is row-major. A row-major A is the
 * column-major A^T, so the baselines get A's own bytes and the transposed
 * operation: getrf factors A^T and getrs with CUBLAS_OP_T then solves
 * (A^T)^T X = B; trsm reads A^T's upper triangle (A's lower) with
 * CUBLAS_OP_T. The work is the same as on A (getrf's operation count does
 * not depend on which of A and A^T it factors), and no 256 MB transpose
 * enters either side. B is given column-major (n x 16: small).
 *
 * A timed run is the whole call: for kiln, kiln_solve_ex /
 * kiln_lu_factor_ex (they allocate their results, factor, read back the
 * per-matrix info and wait) or kiln_solve_triangular_ex (the same), until
 * the stream is synchronized; for the baselines, the device copy of A
 * (getrf works in place; kiln copies A too) and of B (getrs and trsm
 * overwrite it), the calls and a cudaDeviceSynchronize, with workspace
 * allocated beforehand; devInfo is read back and checked after each
 * measurement.
 *
 * Both answers are checked before timing, in float64 on the host with two
 * random probe vectors y (linalg_bench.h): for a solve, x = X y and b =
 * B y, res = ||A x - b||_2 / (||A||_F ||x||_2 eps); for LU, res =
 * ||P A x - L (U x)||_2 / (||A||_F ||x||_2 eps), with P the row
 * interchanges (kiln's from 0, cuSOLVER's from 1, both applied in order).
 * That is the normwise backward error in units of float32's eps, without
 * LAPACK's factor n: at n = 8192 the factor n would let a wrong block of
 * the answer pass. A correct answer stays well under RES_TOL = 1000; a
 * wrong block of L, U or X shows as thousands or more.
 *
 * The triangular operand is lower triangular with entries uniform in
 * [-1, 1) and a diagonal of 0.5 sqrt(n) to sqrt(n): its solution neither
 * grows nor shrinks along the rows (a random triangular matrix with a unit
 * diagonal is exponentially ill-conditioned), while every off-diagonal
 * entry still counts. Its upper triangle holds random values that neither
 * solver may read.
 *
 * Without a GPU it says so, skips the GPU lines and times 256^2 problems
 * on the CPU backend against plain C loops (LAPACK's unblocked getf2,
 * getrs and a forward substitution, on the same column-major data as
 * cuSOLVER), checked the same way, so `make bench` works everywhere. An
 * argument runs only the lines whose label contains it: `bench_solve LU`.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_NAME "bench_solve"
#include "baseline.h"
#include "bench_util.h"
#include "linalg_bench.h"

/*
 * The threshold on res (units of eps, no factor n). Plain float32 LU
 * scores about 1 (LU) and 8 / 17 (solve, n = 2048 / 4096), growing about
 * like n; a zeroed 64 x 64 block of L scores 2e5, a 10% error in 64
 * entries of X some thousands. LAPACK's own test threshold, 30 n eps,
 * would be 245760 eps at n = 8192.
 */
#define RES_TOL 1000.0

/* What a line measures. */
typedef enum op { OP_SOLVE, OP_TRSM, OP_LU } op;

/* One problem: A n x n and B n x k, both row-major, float32. */
typedef struct problem {
  const char *label;
  op what;
  int n, k;
  int kiln_reps, base_reps;
  float *a, *b;  /* row-major (A's bytes are also the column-major A^T) */
  float *b_cm;   /* B column-major, for the baselines */
  double norm_a; /* ||A||_F of what is read (the lower triangle for trsm) */
  int ahead;      /* kiln__lu_lookahead_test for kiln's runs (-1 default) */
} problem;

/* src/linalg/linalg.h's switch of the blocked LU's look-ahead (-1 as
 * KILN_LU_LOOKAHEAD says, 0 off, 1 its bulk update in one GEMM): the
 * "(no look-ahead)" lines A/B it in one process. */
extern int kiln__lu_lookahead_test;

typedef struct env {
  kiln_device *dev;
  kiln_stream *stream;
  bool gpu;
  bool have_cs, have_cb;
  const char *no_cs, *no_cb;
} env;

/* ---- the checks ---------------------------------------------------------- */

/*
 * The worst over two probes of ||F x - b||_2 / (||F||_F ||x||_2 eps),
 * x = X y, b = B y: F n x n (a view of what was solved with), X and B
 * n x k.
 */
static double solve_res(const mview *f, double norm_f, const mview *x,
                        const mview *b, uint64_t *seed) {
  int64_t n = f->rows, k = x->cols;
  double *y = xmalloc((size_t)k * 8), *xy = xmalloc((size_t)n * 8);
  double *fx = xmalloc((size_t)n * 8), *by = xmalloc((size_t)n * 8);
  double worst = 0;
  for (int p = 0; p < 2; p++) {
    for (int64_t j = 0; j < k; j++)
      y[j] = rnd(seed);
    mv_mul(x, y, xy);
    mv_mul(f, xy, fx);
    mv_mul(b, y, by);
    for (int64_t i = 0; i < n; i++)
      fx[i] -= by[i];
    double den = norm_f * norm2(xy, n) * EPS32;
    worst = worse(worst, norm2(fx, n) / (den > 0 ? den : 1));
  }
  free(y);
  free(xy);
  free(fx);
  free(by);
  return worst;
}

/*
 * The worst over two probes of ||P F x - L (U x)||_2 / (||F||_F ||x||_2
 * eps) for the packed factors `lu` of F (n x n) and its interchanges piv
 * (row i swapped with row piv[i] - base, in order); +inf if a pivot index
 * is out of range.
 */
static double lu_res(const mview *f, double norm_f, const mview *lu,
                     const int32_t *piv, int base, uint64_t *seed) {
  int64_t n = f->rows;
  for (int64_t i = 0; i < n; i++)
    if (piv[i] - base < i || piv[i] - base >= n)
      return INFINITY;
  mview l = *lu, u = *lu;
  l.tri = -1;
  l.unit = true;
  u.tri = 1;
  double *x = xmalloc((size_t)n * 8), *fx = xmalloc((size_t)n * 8);
  double *ux = xmalloc((size_t)n * 8), *lux = xmalloc((size_t)n * 8);
  double worst = 0;
  for (int p = 0; p < 2; p++) {
    for (int64_t i = 0; i < n; i++)
      x[i] = rnd(seed);
    mv_mul(f, x, fx);
    for (int64_t i = 0; i < n; i++) {
      double t = fx[i];
      fx[i] = fx[piv[i] - base];
      fx[piv[i] - base] = t;
    }
    mv_mul(&u, x, ux);
    mv_mul(&l, ux, lux);
    for (int64_t i = 0; i < n; i++)
      lux[i] -= fx[i];
    double den = norm_f * norm2(x, n) * EPS32;
    worst = worse(worst, norm2(lux, n) / (den > 0 ? den : 1));
  }
  free(x);
  free(fx);
  free(ux);
  free(lux);
  return worst;
}

static void verdict(outcome *o, double res) {
  o->passed = res <= RES_TOL;
  snprintf(o->check, sizeof o->check, "res %.2g", res);
}

/* The view of A that a solve reads: all of it, or its lower triangle. */
static mview a_view(const problem *p) {
  mview a = view_rm(p->a, p->n, p->n);
  if (p->what == OP_TRSM)
    a.tri = -1;
  return a;
}

/* ---- kiln ---------------------------------------------------------------- */

typedef struct kiln_job {
  const problem *p;
  kiln_array *a, *b;
  kiln_array *x, *lu, *piv; /* results of one run */
  kiln_linalg_opts opts;
} kiln_job;

static kiln_status kiln_run(void *ctx) {
  kiln_job *j = ctx;
  switch (j->p->what) {
  case OP_SOLVE:
    return kiln_solve_ex(j->a, j->b, &j->opts, &j->x);
  case OP_TRSM:
    return kiln_solve_triangular_ex(j->a, j->b, false, false, false, &j->opts,
                                    &j->x);
  case OP_LU:
    return kiln_lu_factor_ex(j->a, &j->opts, &j->lu, &j->piv);
  }
  return KILN_ERROR_INVALID_ARGUMENT;
}

static void kiln_release(void *ctx) {
  kiln_job *j = ctx;
  kiln_array_destroy(j->x);
  kiln_array_destroy(j->lu);
  kiln_array_destroy(j->piv);
  j->x = j->lu = j->piv = NULL;
}

/* Reads the results of the checked run back and checks them; false (why
 * set) when they cannot be read or have the wrong size. */
static bool kiln_check(kiln_job *j, outcome *o) {
  const problem *p = j->p;
  size_t n = (size_t)p->n, k = (size_t)p->k;
  uint64_t seed = 77;
  mview a = a_view(p);
  if (p->what != OP_LU) {
    if (kiln_array_nbytes_dense(j->x) != n * k * 4) {
      snprintf(o->why, sizeof o->why, "kiln's X has the wrong size");
      return false;
    }
    float *x = xmalloc(n * k * 4);
    bool ok = kiln_array_to_host(j->x, x, n * k * 4) == KILN_OK;
    if (ok) {
      mview xv = view_rm(x, p->n, p->k), bv = view_rm(p->b, p->n, p->k);
      verdict(o, solve_res(&a, p->norm_a, &xv, &bv, &seed));
    }
    free(x);
    if (!ok)
      kiln_failed(o);
    return ok;
  }
  if (kiln_array_nbytes_dense(j->lu) != n * n * 4 ||
      kiln_array_nbytes_dense(j->piv) != n * 4) {
    snprintf(o->why, sizeof o->why, "kiln's LU or pivots have the wrong size");
    return false;
  }
  float *lu = xmalloc(n * n * 4);
  int32_t *piv = xmalloc(n * 4);
  bool ok = kiln_array_to_host(j->lu, lu, n * n * 4) == KILN_OK &&
            kiln_array_to_host(j->piv, piv, n * 4) == KILN_OK;
  if (ok) {
    mview luv = view_rm(lu, p->n, p->n);
    verdict(o, lu_res(&a, p->norm_a, &luv, piv, 0, &seed));
  } else {
    kiln_failed(o);
  }
  free(lu);
  free(piv);
  return ok;
}

static void measure_kiln(const env *v, const problem *p, outcome *o) {
  outcome_init(o);
  kiln_job j = {.p = p};
  kiln_linalg_opts_init(&j.opts);
  j.opts.stream = v->stream;
  int64_t sa[2] = {p->n, p->n}, sb[2] = {p->n, p->k};
  if (kiln_array_from_host(v->dev, KILN_FLOAT32, 2, sa, p->a, &j.a) ||
      (p->what != OP_LU &&
       kiln_array_from_host(v->dev, KILN_FLOAT32, 2, sb, p->b, &j.b))) {
    kiln_failed(o);
  } else if (kiln_run(&j) != KILN_OK) {
    kiln_failed(o);
  } else {
    bool read = kiln_check(&j, o);
    kiln_release(&j);
    if (read && o->passed)
      time_kiln(o, v->stream, p->kiln_reps, kiln_run, kiln_release, &j);
  }
  kiln_array_destroy(j.a);
  kiln_array_destroy(j.b);
}

/* ---- cuSOLVER getrf (+ getrs) and cuBLAS trsm ---------------------------- */

typedef struct gpu_job {
  const problem *p;
  float *a, *b;        /* device: A's bytes (= A^T column-major), B c-m */
  float *w, *x, *work; /* device: factored copy of A, solution, workspace */
  int *ipiv, *info;    /* device: pivots (from 1), getrf's and getrs's */
  int lwork;
} gpu_job;

/* One timed run; 0 or the first failed call's status. */
static int gpu_run(void *ctx) {
  gpu_job *j = ctx;
  int n = j->p->n, k = j->p->k;
  size_t nn = (size_t)n * (size_t)n, nk = (size_t)n * (size_t)k;
  int st = 0;
  if (j->p->what == OP_TRSM) {
    const float one = 1.0f;
    st = rt.memcpy_(j->x, j->b, nk * 4, BL_D2D);
    if (st == 0)
      st = cb.strsm(cb.handle, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER,
                    CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, n, k, &one, j->a, n,
                    j->x, n);
    return st;
  }
  st = rt.memcpy_(j->w, j->a, nn * 4, BL_D2D);
  if (st == 0)
    st = cs.sgetrf(cs.handle, n, n, j->w, n, j->work, j->ipiv, j->info);
  if (st == 0 && j->p->what == OP_SOLVE)
    st = rt.memcpy_(j->x, j->b, nk * 4, BL_D2D);
  if (st == 0 && j->p->what == OP_SOLVE)
    st = cs.sgetrs(cs.handle, CUBLAS_OP_T, n, k, j->w, n, j->ipiv, j->x, n,
                   j->info + 1);
  return st;
}

/* The first non-zero devInfo of the last run (0 if none; -9999 if it
 * could not be read). */
static int gpu_info(const gpu_job *j) {
  int h[2] = {0, 0};
  if (j->p->what == OP_TRSM)
    return 0;
  if (rt.memcpy_(h, j->info, sizeof h, BL_D2H))
    return -9999;
  return h[0] != 0 ? h[0] : h[1];
}

/* Reads the baseline's answer back and checks it. */
static void gpu_check(const gpu_job *j, outcome *o) {
  const problem *p = j->p;
  size_t n = (size_t)p->n, k = (size_t)p->k;
  uint64_t seed = 77;
  if (p->what != OP_LU) {
    float *x = xmalloc(n * k * 4);
    if (rt.memcpy_(x, j->x, n * k * 4, BL_D2H) == 0) {
      mview a = a_view(p), xv = view_cm(x, p->n, p->k, p->n);
      mview bv = view_rm(p->b, p->n, p->k);
      verdict(o, solve_res(&a, p->norm_a, &xv, &bv, &seed));
    } else {
      snprintf(o->why, sizeof o->why, "reading X back failed");
    }
    free(x);
    return;
  }
  float *lu = xmalloc(n * n * 4);
  int32_t *piv = xmalloc(n * 4);
  if (rt.memcpy_(lu, j->w, n * n * 4, BL_D2H) == 0 &&
      rt.memcpy_(piv, j->ipiv, n * 4, BL_D2H) == 0) {
    /* getrf factored A^T: P A^T = L U, column-major. */
    mview at = view_t(view_rm(p->a, p->n, p->n));
    mview luv = view_cm(lu, p->n, p->n, p->n);
    verdict(o, lu_res(&at, p->norm_a, &luv, piv, 1, &seed));
  } else {
    snprintf(o->why, sizeof o->why, "reading LU back failed");
  }
  free(lu);
  free(piv);
}

/* Whether the loaded libraries have what problem p needs; why if not. */
static bool gpu_can(const env *v, const problem *p, outcome *o) {
  const char *why = NULL;
  if (p->what == OP_TRSM && !v->have_cb)
    why = v->no_cb;
  else if (p->what == OP_TRSM && !cb.strsm)
    why = "cuBLAS lacks trsm";
  else if (p->what != OP_TRSM && !v->have_cs)
    why = v->no_cs;
  else if (p->what != OP_TRSM && (!cs.sgetrf_size || !cs.sgetrf || !cs.sgetrs))
    why = "cuSOLVER lacks getrf/getrs";
  if (why != NULL)
    snprintf(o->why, sizeof o->why, "no baseline: %s", why);
  return why == NULL;
}

static void measure_gpu(const env *v, const problem *p, outcome *o) {
  outcome_init(o);
  if (!gpu_can(v, p, o))
    return;
  gpu_job j = {.p = p};
  size_t nn = (size_t)p->n * (size_t)p->n, nk = (size_t)p->n * p->k;
  int info;
  snprintf(o->why, sizeof o->why, "a CUDA, cuBLAS or cuSOLVER call failed");
  if (bl_malloc((void **)&j.a, nn * 4) || bl_malloc((void **)&j.b, nk * 4) ||
      bl_malloc((void **)&j.x, nk * 4) ||
      bl_malloc((void **)&j.ipiv, (size_t)p->n * sizeof(int)) ||
      bl_malloc((void **)&j.info, 2 * sizeof(int)) ||
      rt.memcpy_(j.a, p->a, nn * 4, BL_H2D) ||
      rt.memcpy_(j.b, p->b_cm, nk * 4, BL_H2D))
    goto done;
  if (p->what != OP_TRSM &&
      (bl_malloc((void **)&j.w, nn * 4) ||
       cs.sgetrf_size(cs.handle, p->n, p->n, j.w, p->n, &j.lwork) ||
       bl_malloc((void **)&j.work, (size_t)(j.lwork > 0 ? j.lwork : 1) * 4)))
    goto done;
  if (rt.memcpy_(j.info, (int[2]){0, 0}, 2 * sizeof(int), BL_H2D) ||
      gpu_run(&j) || rt.sync())
    goto done;
  if ((info = gpu_info(&j)) != 0) {
    snprintf(o->why, sizeof o->why, "devInfo %d", info);
    goto done;
  }
  o->why[0] = '\0';
  gpu_check(&j, o);
  if (!o->passed)
    goto done;
  if (time_baseline(o, p->base_reps, gpu_run, rt.sync, &j) &&
      (info = gpu_info(&j)) != 0) {
    snprintf(o->why, sizeof o->why, "devInfo %d while timing", info);
    o->ms = -1;
  }
done:
  rt.free_(j.a);
  rt.free_(j.b);
  rt.free_(j.w);
  rt.free_(j.x);
  rt.free_(j.work);
  rt.free_(j.ipiv);
  rt.free_(j.info);
}

/* ---- the host baselines: plain loops on the same column-major data ------- */

/*
 * LU with partial pivoting of the column-major n x n matrix w in place,
 * LAPACK's unblocked getf2: for each column the largest entry is the
 * pivot (ipiv from 1), rows are swapped, the column below it scaled and
 * the rank-1 update applied to the columns on the right. float32
 * arithmetic throughout, as sgetf2. Returns LAPACK's info.
 */
static int host_getf2(int n, float *w, int *ipiv) {
  int info = 0;
  for (int j = 0; j < n; j++) {
    float *c = w + (size_t)j * n;
    int p = j;
    for (int i = j + 1; i < n; i++)
      if (fabsf(c[i]) > fabsf(c[p]))
        p = i;
    ipiv[j] = p + 1;
    if (c[p] == 0) {
      info = info ? info : j + 1;
      continue;
    }
    if (p != j)
      for (int q = 0; q < n; q++) {
        float t = w[(size_t)q * n + j];
        w[(size_t)q * n + j] = w[(size_t)q * n + p];
        w[(size_t)q * n + p] = t;
      }
    float inv = 1.0f / c[j];
    for (int i = j + 1; i < n; i++)
      c[i] *= inv;
    for (int q = j + 1; q < n; q++) {
      float *d = w + (size_t)q * n, f = d[j];
      for (int i = j + 1; i < n; i++)
        d[i] -= c[i] * f;
    }
  }
  return info;
}

/*
 * Solves F^T X = B in place of B (column-major n x k) with getf2's
 * factors P F = L U, as LAPACK's getrs with trans = T: F^T = U^T L^T P, so
 * U^T z = b (forward), L^T v = z (backward, unit), then x = P^T v (the
 * interchanges undone, last first).
 */
static void host_getrs_t(int n, int k, const float *w, const int *ipiv,
                         float *b) {
  for (int c = 0; c < k; c++) {
    float *x = b + (size_t)c * n;
    for (int i = 0; i < n; i++) {
      const float *u = w + (size_t)i * n; /* column i: U(0..i, i) */
      float s = x[i];
      for (int j = 0; j < i; j++)
        s -= u[j] * x[j];
      x[i] = s / u[i];
    }
    for (int i = n - 1; i >= 0; i--) {
      const float *l = w + (size_t)i * n; /* column i: L(i+1..n-1, i) */
      float s = x[i];
      for (int j = i + 1; j < n; j++)
        s -= l[j] * x[j];
      x[i] = s;
    }
    for (int i = n - 1; i >= 0; i--) {
      float t = x[i];
      x[i] = x[ipiv[i] - 1];
      x[ipiv[i] - 1] = t;
    }
  }
}

/* Forward substitution with the lower triangle of row-major A (what trsm
 * reads as A^T's upper triangle), B and X column-major n x k. */
static void host_trsm(int n, int k, const float *a, float *b) {
  for (int c = 0; c < k; c++) {
    float *x = b + (size_t)c * n;
    for (int i = 0; i < n; i++) {
      const float *r = a + (size_t)i * n;
      float s = x[i];
      for (int j = 0; j < i; j++)
        s -= r[j] * x[j];
      x[i] = s / r[i];
    }
  }
}

typedef struct host_job {
  const problem *p;
  float *w, *x;
  int *ipiv;
  int info;
} host_job;

static int host_run(void *ctx) {
  host_job *j = ctx;
  const problem *p = j->p;
  size_t nn = (size_t)p->n * p->n, nk = (size_t)p->n * p->k;
  if (p->what != OP_LU)
    memcpy(j->x, p->b_cm, nk * 4);
  if (p->what == OP_TRSM) {
    host_trsm(p->n, p->k, p->a, j->x);
    return 0;
  }
  memcpy(j->w, p->a, nn * 4); /* A's bytes: column-major A^T */
  j->info = host_getf2(p->n, j->w, j->ipiv);
  if (p->what == OP_SOLVE && j->info == 0)
    host_getrs_t(p->n, p->k, j->w, j->ipiv, j->x);
  return j->info;
}

static void measure_host(const problem *p, outcome *o) {
  outcome_init(o);
  size_t n = (size_t)p->n;
  host_job j = {p, xmalloc(n * n * 4), xmalloc(n * (size_t)p->k * 4),
                xmalloc(n * sizeof(int)), 0};
  uint64_t seed = 77;
  if (host_run(&j) != 0) {
    snprintf(o->why, sizeof o->why, "singular (info %d)", j.info);
  } else if (p->what == OP_LU) {
    mview at = view_t(view_rm(p->a, p->n, p->n));
    mview luv = view_cm(j.w, p->n, p->n, p->n);
    verdict(o, lu_res(&at, p->norm_a, &luv, j.ipiv, 1, &seed));
  } else {
    mview a = a_view(p), xv = view_cm(j.x, p->n, p->k, p->n);
    mview bv = view_rm(p->b, p->n, p->k);
    verdict(o, solve_res(&a, p->norm_a, &xv, &bv, &seed));
  }
  if (o->passed)
    time_baseline(o, p->base_reps, host_run, NULL, &j);
  free(j.w);
  free(j.x);
  free(j.ipiv);
}

/* ---- the lines ----------------------------------------------------------- */

static const char *baseline_name(const env *v, op what) {
  if (!v->gpu)
    return what == OP_SOLVE ? "plain C getf2+getrs"
           : what == OP_LU  ? "plain C getf2"
                            : "plain C substitution";
  return what == OP_SOLVE ? "cuSOLVER getrf+getrs"
         : what == OP_LU  ? "cuSOLVER getrf"
                          : "cublasStrsm";
}

static void line(const env *v, problem *p) {
  size_t n = (size_t)p->n, k = (size_t)p->k;
  p->a = random_floats(n * n, 4000 + n + (size_t)p->what);
  p->b = random_floats(n * k, 5000 + n);
  if (p->what == OP_TRSM) {
    uint64_t s = 6000;
    for (size_t i = 0; i < n; i++) /* see the file comment */
      p->a[i * n + i] = (float)(sqrt((double)n) * (0.75 + 0.25 * rnd(&s)));
  }
  p->b_cm = to_colmajor(p->b, 1, p->n, p->k);
  mview a = a_view(p);
  p->norm_a = view_norm_fro(&a);
  double dn = (double)n;
  double flops = p->what == OP_TRSM ? dn * dn * (double)k
                 : p->what == OP_LU
                     ? 2 * dn * dn * dn / 3
                     : 2 * dn * dn * dn / 3 + 2 * dn * dn * (double)k;
  line_info li = {p->label, flops, 0, v->gpu ? BENCH_PEAK_FP32_TFLOPS : 0,
                  baseline_name(v, p->what)};
  outcome ko, bo;
  kiln__lu_lookahead_test = p->ahead;
  measure_kiln(v, p, &ko);
  kiln__lu_lookahead_test = -1;
  if (v->gpu)
    measure_gpu(v, p, &bo);
  else
    measure_host(p, &bo);
  print_line(&li, &ko, &bo);
  free(p->a);
  free(p->b);
  free(p->b_cm);
}

static void run_lines(env *v, problem *ps, size_t count, const char *filter) {
  for (size_t i = 0; i < count; i++)
    if (wanted(ps[i].label, filter))
      line(v, &ps[i]);
}

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : NULL;
  env v = {NULL, NULL, false, false, false, "", ""};
  if (kiln_device_find("gpu", &v.dev) != KILN_OK) {
    printf("bench_solve: no GPU (%s); GPU lines skipped, CPU lines only "
           "(small problems, against plain C loops).\n",
           kiln_gpu_unavailable_reason());
    v.dev = kiln_device_default();
    v.stream = kiln_default_stream(v.dev);
    problem ps[] = {
        {"solve 256^2, 16 rhs float32 (cpu)", OP_SOLVE, 256, 16, 5, 5, NULL,
         NULL, NULL, 0, -1},
        {"triangular 256^2, 16 rhs f32 (cpu)", OP_TRSM, 256, 16, 5, 5, NULL,
         NULL, NULL, 0, -1},
        {"LU 256^2 float32 (cpu)", OP_LU, 256, 0, 5, 5, NULL, NULL, NULL, 0,
         -1},
    };
    run_lines(&v, ps, sizeof ps / sizeof ps[0], filter);
    return 0;
  }
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kiln_device_get_info(v.dev, &info));
  printf("bench_solve on %s (%s); float32 peak %g TFLOP/s (H100 SXM data "
         "sheet); checks: res <= %g\n",
         info.name, info.arch, BENCH_PEAK_FP32_TFLOPS, RES_TOL);
  v.gpu = true;
  v.stream = kiln_default_stream(v.dev);
  v.have_cs = load_cusolver(&v.no_cs);
  v.have_cb = load_cublas(&v.no_cb);
  if (!v.have_cs)
    printf("%s: no cuSOLVER baseline.\n", v.no_cs);
  if (!v.have_cb)
    printf("%s: no cuBLAS baseline.\n", v.no_cb);
  problem ps[] = {
      {"solve 8192^2, 16 rhs float32", OP_SOLVE, 8192, 16, 5, 5, NULL, NULL,
       NULL, 0, -1},
      {"solve 8192^2, 16 rhs float32 (no look-ahead)", OP_SOLVE, 8192, 16, 5,
       5, NULL, NULL, NULL, 0, 0},
      {"triangular 8192^2, 16 rhs float32", OP_TRSM, 8192, 16, 7, 7, NULL, NULL,
       NULL, 0, -1},
      {"LU 8192^2 float32", OP_LU, 8192, 0, 5, 5, NULL, NULL, NULL, 0, -1},
      {"LU 8192^2 float32 (no look-ahead)", OP_LU, 8192, 0, 5, 5, NULL, NULL,
       NULL, 0, 0},
  };
  run_lines(&v, ps, sizeof ps / sizeof ps[0], filter);
  unload_cusolver();
  return 0;
}
