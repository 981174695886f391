/*
 * What the factorization benchmarks (bench_qr.c, bench_solve.c) share: host
 * buffers and random data, strided float32 views with which one check
 * reads kiln's row-major results and the baselines' column-major ones,
 * the timing loops, and the printing of one line.
 *
 * A line prints the problem, kiln's median time, the baseline's, the ratio
 * (baseline / kiln: above 1 means kiln is faster), the achieved TFLOP/s
 * (nominal LAPACK operation counts, the same for both) with the percentage
 * of the card's peak (bench/baseline.h), and each answer's check, which
 * runs before any timing. A kiln call that fails prints "kiln failed:" and
 * kiln's message; a check that fails prints FAILED; neither gets a ratio,
 * and the program goes on with the next line.
 *
 * Checks are random-vector estimates computed in float64 on the host, so
 * that a huge problem costs a few passes over its data: ||E||_F of an
 * error matrix E (m x n) is estimated as sqrt(n) ||E x|| / ||x|| for x
 * with independent entries (exact in expectation). Each program says
 * which residuals it prints and the threshold they must meet.
 */
#ifndef KILN_BENCH_LINALG_BENCH_H
#define KILN_BENCH_LINALG_BENCH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define EPS32 0x1p-23 /* float32's machine epsilon */

/* ---- host memory and random data ---------------------------------------- */

static inline void *xmalloc(size_t bytes) {
  void *p = malloc(bytes == 0 ? 1 : bytes);
  if (p == NULL) {
    fprintf(stderr, "%s: out of host memory\n", BENCH_NAME);
    exit(1);
  }
  return p;
}

/* A reproducible uniform value in [-1, 1). */
static inline double rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(*s >> 11) * 0x1p-52 - 1.0;
}

static inline float *random_floats(size_t count, uint64_t seed) {
  float *x = xmalloc(count * sizeof *x);
  for (size_t i = 0; i < count; i++)
    x[i] = (float)rnd(&seed);
  return x;
}

/* max(m, e), where a NaN sticks (so that a NaN fails every check). */
static inline double worse(double m, double e) {
  if (isnan(m))
    return m;
  return (e > m || isnan(e)) ? e : m;
}

/* Column-major copies of `batch` row-major rows x cols matrices (what the
 * column-major baselines are given). */
static inline float *to_colmajor(const float *a, int64_t batch, int64_t rows,
                                 int64_t cols) {
  size_t mn = (size_t)rows * (size_t)cols;
  float *t = xmalloc((size_t)batch * mn * sizeof *t);
  const int64_t bs = 64; /* blocks of 64 x 64: both sides stay in cache */
  for (int64_t b = 0; b < batch; b++) {
    const float *s = a + (size_t)b * mn;
    float *d = t + (size_t)b * mn;
    for (int64_t i0 = 0; i0 < rows; i0 += bs)
      for (int64_t j0 = 0; j0 < cols; j0 += bs)
        for (int64_t i = i0; i < rows && i < i0 + bs; i++)
          for (int64_t j = j0; j < cols && j < j0 + bs; j++)
            d[(size_t)j * (size_t)rows + (size_t)i] =
                s[(size_t)i * (size_t)cols + (size_t)j];
  }
  return t;
}

/* ---- strided views and their products ----------------------------------- */

/*
 * A rows x cols float32 matrix whose element (i, j) is p[i*rs + j*cs]:
 * row-major (rs = cols, cs = 1), column-major (rs = 1, cs = ld), or the
 * transpose of either. tri > 0 reads only the upper triangle (zeros below
 * the diagonal), tri < 0 only the lower; unit (with a triangle) takes the
 * diagonal as ones without reading it.
 */
typedef struct mview {
  const float *p;
  int64_t rows, cols, rs, cs;
  int tri;
  bool unit;
} mview;

static inline mview view_rm(const float *p, int64_t rows, int64_t cols) {
  mview v = {p, rows, cols, cols, 1, 0, false};
  return v;
}

static inline mview view_cm(const float *p, int64_t rows, int64_t cols,
                            int64_t ld) {
  mview v = {p, rows, cols, 1, ld, 0, false};
  return v;
}

static inline mview view_t(mview v) {
  mview t = {v.p, v.cols, v.rows, v.cs, v.rs, -v.tri, v.unit};
  return t;
}

/* The columns [*lo, *hi) of row i that the view reads (the diagonal
 * excluded when unit: it is added separately). */
static inline void row_span(const mview *v, int64_t i, int64_t *lo,
                            int64_t *hi) {
  *lo = 0;
  *hi = v->cols;
  if (v->tri > 0)
    *lo = i + (v->unit ? 1 : 0);
  if (v->tri < 0)
    *hi = (i + (v->unit ? 0 : 1) < v->cols) ? i + (v->unit ? 0 : 1) : v->cols;
}

/* y = V x (y has v->rows entries, x v->cols), in float64. Walks the
 * memory in order: rows of a row-major view, columns of a column-major
 * one. */
static inline void mv_mul(const mview *v, const double *x, double *y) {
  if (v->cs == 1 || v->rs != 1) {
    for (int64_t i = 0; i < v->rows; i++) {
      int64_t lo, hi;
      row_span(v, i, &lo, &hi);
      const float *r = v->p + i * v->rs;
      double s0 = 0, s1 = 0;
      int64_t j = lo;
      for (; j + 2 <= hi; j += 2) {
        s0 += (double)r[j * v->cs] * x[j];
        s1 += (double)r[(j + 1) * v->cs] * x[j + 1];
      }
      for (; j < hi; j++)
        s0 += (double)r[j * v->cs] * x[j];
      y[i] = s0 + s1 + (v->unit && v->tri != 0 && i < v->cols ? x[i] : 0);
    }
    return;
  }
  for (int64_t i = 0; i < v->rows; i++)
    y[i] = v->unit && v->tri != 0 && i < v->cols ? x[i] : 0;
  for (int64_t j = 0; j < v->cols; j++) {
    const float *c = v->p + j * v->cs;
    int64_t lo = 0, hi = v->rows; /* the rows of column j that are read */
    if (v->tri > 0)
      hi = j + (v->unit ? 0 : 1) < v->rows ? j + (v->unit ? 0 : 1) : v->rows;
    if (v->tri < 0)
      lo = j + (v->unit ? 1 : 0);
    double xj = x[j];
    for (int64_t i = lo; i < hi; i++)
      y[i] += (double)c[i] * xj;
  }
}

/* y = V^T x. */
static inline void mv_tmul(const mview *v, const double *x, double *y) {
  mview t = view_t(*v);
  mv_mul(&t, x, y);
}

static inline double norm2(const double *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++)
    s += x[i] * x[i];
  return sqrt(s);
}

/* ||V||_F of the part of V that the view reads (its triangle). */
static inline double view_norm_fro(const mview *v) {
  double s = 0;
  for (int64_t i = 0; i < v->rows; i++) {
    int64_t lo, hi;
    row_span(v, i, &lo, &hi);
    for (int64_t j = lo; j < hi; j++) {
      double e = v->p[i * v->rs + j * v->cs];
      s += e * e;
    }
    if (v->unit && v->tri != 0 && i < v->cols)
      s += 1;
  }
  return sqrt(s);
}

/* ---- one line's outcome, its timing and its printing --------------------- */

/* What one side of a line (kiln or a baseline) produced. */
typedef struct outcome {
  double ms;      /* the median time; < 0 when not timed */
  bool passed;    /* it ran and its answer passed the check */
  char check[96]; /* the check's figures */
  char why[224];  /* why there is no time or no pass */
} outcome;

static inline void outcome_init(outcome *o) {
  memset(o, 0, sizeof *o);
  o->ms = -1;
}

/* Records kiln's failure ("kiln failed: <message>"), on one line: a
 * compiler log in the message would otherwise break the line apart. */
static inline void kiln_failed(outcome *o) {
  snprintf(o->why, sizeof o->why, "kiln failed: %s", kiln_last_error());
  for (char *c = o->why; *c; c++)
    if (*c == '\n' || *c == '\r' || *c == '\t')
      *c = ' ';
}

/*
 * The median of `reps` runs of run(ctx) after the untimed one that was
 * checked, each timed from the call to the end of the work: kiln's call
 * and kiln_stream_synchronize (results released outside the clock by
 * release(ctx)). false (with the message in o) when a call fails.
 */
static inline bool time_kiln(outcome *o, kiln_stream *s, int reps,
                             kiln_status (*run)(void *),
                             void (*release)(void *), void *ctx) {
  double t[64];
  reps = reps > 64 ? 64 : reps;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    kiln_status st = run(ctx);
    if (st == KILN_OK)
      st = kiln_stream_synchronize(s);
    t[r] = (now_s() - t0) * 1e3;
    release(ctx);
    if (st != KILN_OK) {
      kiln_failed(o);
      return false;
    }
  }
  o->ms = median(t, reps);
  return true;
}

/*
 * The same for a baseline: run(ctx) enqueues one whole run and returns 0
 * or a failed call's status; wait() (cudaDeviceSynchronize, or nothing on
 * the host) ends it inside the clock.
 */
static inline bool time_baseline(outcome *o, int reps, int (*run)(void *),
                                 int (*wait)(void), void *ctx) {
  double t[64];
  reps = reps > 64 ? 64 : reps;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    int st = run(ctx);
    if (st == 0 && wait != NULL)
      st = wait();
    t[r] = (now_s() - t0) * 1e3;
    if (st != 0) {
      snprintf(o->why, sizeof o->why,
               "a baseline call failed (status %d) "
               "while timing",
               st);
      return false;
    }
  }
  o->ms = median(t, reps);
  return true;
}

/* How one line is printed: `flops` is the nominal operation count, `bytes`
 * the least memory traffic (0: not printed), peak in TFLOP/s (0: a CPU
 * line, printed in GFLOP/s without a percentage). */
typedef struct line_info {
  const char *label;
  double flops, bytes, peak;
  const char *baseline; /* the baseline's name */
} line_info;

static inline void print_side(const line_info *li, const char *name,
                              const outcome *o) {
  if (o->ms < 0) {
    if (o->why[0])
      printf(" %s: %s", name, o->why);
    else
      printf(" %s: not timed", name);
    if (o->check[0])
      printf(" (check %s%s)", o->check, o->passed ? "" : " FAILED");
    return;
  }
  double gf = li->flops / o->ms * 1e-6; /* GFLOP/s */
  if (li->peak > 0)
    printf(" %s %9.3f ms %7.3f TFLOP/s (%4.1f%% of %g)", name, o->ms, gf * 1e-3,
           0.1 * gf / li->peak, li->peak);
  else
    printf(" %s %9.3f ms %7.3f GFLOP/s", name, o->ms, gf);
  if (li->bytes > 0)
    printf(" %6.1f GB/s", li->bytes / o->ms * 1e-6);
  printf(" check %s%s", o->check, o->passed ? "" : " FAILED");
}

/* One line: kiln, then the baseline, then the ratio when both passed. */
static inline void print_line(const line_info *li, const outcome *k,
                              const outcome *b) {
  printf("%-36s", li->label);
  print_side(li, "kiln", k);
  printf(" |");
  print_side(li, li->baseline, b);
  if (k->passed && b->passed && k->ms > 0 && b->ms > 0)
    printf(" | ratio %.2fx", b->ms / k->ms);
  printf("\n");
  fflush(stdout);
}

/* Whether a line runs: every line without an argument, else those whose
 * label contains it (e.g. `bench_qr 8192`). */
static inline bool wanted(const char *label, const char *filter) {
  return filter == NULL || strstr(label, filter) != NULL;
}

#endif /* KILN_BENCH_LINALG_BENCH_H */
