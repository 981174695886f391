/*
 * Linear-algebra benchmark (issue 4: GEMM, Cholesky; QR is in bench_qr.c,
 * solve, triangular solve and LU in bench_solve.c, and bench/baseline.h
 * loads cuBLAS and cuSOLVER for all three). On the first GPU it times,
 * against cuBLAS loaded in the same run (dlopen):
 *   1. GEMM 8192^3 float32 with float32 arithmetic (no TF32);
 *   2. GEMM 8192^3 bfloat16 (float32 accumulation);
 *   3. GEMM 4096^3 float32 with TF32 tensor cores (opt-in for both);
 *   4. GEMM 8192^3 float64 (kiln's DMMA kernel; cublasGemmEx in float64,
 *      which is cublasDgemm);
 * and against cuSOLVER (dlopen; issue anchors on an H100 in brackets):
 *   5. Cholesky 8192^2 float32 (cusolverDnXpotrf, 9.17 ms);
 *   6. Cholesky 8192^2 float64 (cusolverDnXpotrf, 8.82 ms);
 *   7. Cholesky of 1000 matrices 128^2, float32 (cusolverDnSpotrfBatched,
 *      0.53 ms).
 * Each line prints kiln's median time, the baseline's, the ratio (baseline
 * time / kiln time: above 1 means kiln is faster) and both TFLOP/s (GEMM:
 * 2n^3 FLOPs, with the card's data-sheet peak; Cholesky: n^3/3 per
 * matrix). kiln's answer is checked before it is timed, by a random-vector
 * check in float64: C x against A (B x) for GEMM, L (L^T x) against A x
 * for Cholesky (cuSOLVER's factor is checked the same way). A Cholesky
 * timing is the whole call on a resident A: for kiln, kiln_cholesky
 * (allocating its result, copying A in, factoring, reading back the info;
 * it waits); for cuSOLVER, copying A (it factors in place), potrf and
 * reading back devInfo, with its workspace allocated beforehand. The
 * single-matrix baseline is the 64-bit generic cusolverDnXpotrf with the
 * lower fill mode, as PyTorch calls it (on a column-major copy, lower for
 * a lower factor) and the anchors measured (on an H100, PyTorch 9.32 /
 * 8.91 ms at 8192^2); two more lines time Xpotrf with the upper fill and
 * the legacy cusolverDnS/Dpotrf (upper), 13.1-14.3 ms on an H100 and an
 * H200, against the same kiln run.
 * An argument runs only the lines whose label contains it
 * (`bench_linalg Cholesky`). Without a GPU it says why, times 512^3 float32 GEMM and a 512^2 float64
 * Cholesky on the CPU against plain loops in C, and exits 0, so `make
 * bench` works everywhere.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "bench_linalg"
#include "bench_util.h"
#include "baseline.h"

#define REPS 7

/* The lines to run: those whose label contains the program's argument
 * (all without one), e.g. `bench_linalg Cholesky`. */
static const char *g_filter;

static bool wanted_line(const char *label) {
  return g_filter == NULL || strstr(label, g_filter) != NULL;
}

/* A reproducible uniform value in [-1, 1). */
static double rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(*s >> 11) * 0x1p-52 - 1.0;
}

/* float -> bfloat16, round to nearest even (inputs here are finite). */
static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
}

static double from_bf16(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- the host side of a problem ----------------------------------------- */

/* Row-major A (m x k) and B (k x n) in the benchmarked dtype's bytes. */
typedef struct problem {
  int n; /* m = n = k */
  kiln_dtype dtype;
  void *a, *b;
} problem;

static double elem(const problem *p, const void *x, size_t i) {
  if (p->dtype == KILN_BFLOAT16)
    return from_bf16(((const uint16_t *)x)[i]);
  if (p->dtype == KILN_FLOAT64)
    return ((const double *)x)[i];
  return ((const float *)x)[i];
}

static void *random_matrix(const problem *p, uint64_t *seed) {
  size_t count = (size_t)p->n * (size_t)p->n;
  size_t es = kiln_dtype_size(p->dtype);
  void *x = malloc(count * es);
  if (x == NULL) {
    fprintf(stderr, "bench_linalg: out of host memory\n");
    exit(1);
  }
  for (size_t i = 0; i < count; i++) {
    double d = rnd(seed);
    float v = (float)d;
    if (p->dtype == KILN_BFLOAT16)
      ((uint16_t *)x)[i] = to_bf16(v);
    else if (p->dtype == KILN_FLOAT64)
      ((double *)x)[i] = d;
    else
      ((float *)x)[i] = v;
  }
  return x;
}

/* y = X v for a row-major n x n matrix held in the problem's dtype. */
static void matvec(const problem *p, const void *x, const double *v,
                   double *y) {
  size_t n = (size_t)p->n;
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t j = 0; j < n; j++)
      s += elem(p, x, i * n + j) * v[j];
    y[i] = s;
  }
}

/*
 * The random-vector check: || C x - A (B x) ||_inf relative to
 * || A (B x) ||_inf, in float64. A wrong or missing tile shows as an
 * error of order 1; correct results sit near the dtype's rounding.
 */
static double vector_check(const problem *p, const void *c) {
  size_t n = (size_t)p->n;
  double *x = calloc(n, sizeof *x), *bx = calloc(n, sizeof *bx);
  double *abx = calloc(n, sizeof *abx), *cx = calloc(n, sizeof *cx);
  if (!x || !bx || !abx || !cx) {
    fprintf(stderr, "bench_linalg: out of host memory\n");
    exit(1);
  }
  uint64_t seed = 99;
  for (size_t i = 0; i < n; i++)
    x[i] = rnd(&seed);
  matvec(p, p->b, x, bx);
  matvec(p, p->a, bx, abx);
  matvec(p, c, x, cx);
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(cx[i] - abx[i]);
    err = (e > err || isnan(e)) ? e : err; /* a NaN fails the check */
    ref = fabs(abx[i]) > ref ? fabs(abx[i]) : ref;
  }
  free(x);
  free(bx);
  free(abx);
  free(cx);
  return ref > 0 ? err / ref : err;
}

/* ---- kiln -------------------------------------------------------------- */

/* Times kiln's C = A @ B (median of REPS calls, each waited for) after
 * checking the answer; returns milliseconds, or -1 if the check failed. */
static double time_kiln(kiln_device *dev, const problem *p,
                        kiln_precision precision, double tol, double *err) {
  int64_t shape[2] = {p->n, p->n};
  kiln_array *a, *b, *c;
  CHECK(kiln_array_from_host(dev, p->dtype, 2, shape, p->a, &a));
  CHECK(kiln_array_from_host(dev, p->dtype, 2, shape, p->b, &b));
  CHECK(kiln_array_create(dev, p->dtype, 2, shape, &c));
  kiln_stream *s = kiln_default_stream(dev);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.precision = precision;
  o.stream = s;
  CHECK(kiln_gemm_ex(false, false, 1.0, a, b, 0.0, c, &o));
  size_t bytes = kiln_array_nbytes_dense(c);
  void *host = malloc(bytes);
  if (host == NULL)
    exit(1);
  CHECK(kiln_array_to_host(c, host, bytes));
  *err = vector_check(p, host);
  free(host);
  double ms = -1;
  if (*err <= tol) {
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
      double t0 = now_s();
      CHECK(kiln_gemm_ex(false, false, 1.0, a, b, 0.0, c, &o));
      CHECK(kiln_stream_synchronize(s));
      t[r] = (now_s() - t0) * 1e3;
    }
    ms = median(t, REPS);
  }
  kiln_array_destroy(a);
  kiln_array_destroy(b);
  kiln_array_destroy(c);
  return ms;
}

/* ---- cuBLAS (bench/baseline.h loads it) -------------------------------- */

/* cudaDataType and cublasComputeType_t values for float64 (NVIDIA's
 * library_types.h and cublas_api.h); baseline.h declares only the ones
 * the other programs use. */
#define BENCH_CUDA_R_64F 1
#define BENCH_CUBLAS_COMPUTE_64F 70

/* One cuBLAS call of C = A @ B, row-major, as the column-major
 * C^T = B^T A^T. */
static int cublas_gemm(const problem *p, bool tf32, void *a, void *b,
                       void *c) {
  int n = p->n;
  float one = 1.0f, zero = 0.0f;
  double done = 1.0, dzero = 0.0;
  if (p->dtype == KILN_FLOAT64) /* cublasDgemm through cublasGemmEx */
    return cb.gemm_ex(cb.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &done,
                      b, BENCH_CUDA_R_64F, n, a, BENCH_CUDA_R_64F, n,
                      &dzero, c, BENCH_CUDA_R_64F, n,
                      BENCH_CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT);
  if (p->dtype == KILN_BFLOAT16)
    return cb.gemm_ex(cb.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b,
                      CUDA_R_16BF, n, a, CUDA_R_16BF, n, &zero, c,
                      CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cb.set_math(cb.handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                              : CUBLAS_DEFAULT_MATH);
  return cb.sgemm(cb.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b, n,
                  a, n, &zero, c, n);
}

/* cuBLAS's median milliseconds for the problem, or -1 on failure. */
static double time_cublas(const problem *p, bool tf32) {
  size_t bytes = (size_t)p->n * (size_t)p->n * kiln_dtype_size(p->dtype);
  void *a = NULL, *b = NULL, *c = NULL;
  double ms = -1;
  if (rt.malloc_(&a, bytes) || rt.malloc_(&b, bytes) ||
      rt.malloc_(&c, bytes) || rt.memcpy_(a, p->a, bytes, BL_H2D) ||
      rt.memcpy_(b, p->b, bytes, BL_H2D) || cublas_gemm(p, tf32, a, b, c) ||
      rt.sync())
    goto done;
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    cublas_gemm(p, tf32, a, b, c);
    rt.sync();
    t[r] = (now_s() - t0) * 1e3;
  }
  ms = median(t, REPS);
done:
  rt.free_(a);
  rt.free_(b);
  rt.free_(c);
  return ms;
}

/* ---- the GPU lines ------------------------------------------------------- */

static void gpu_line(kiln_device *dev, bool have_cublas, const char *label,
                     int n, kiln_dtype dtype, kiln_precision prec,
                     double tol, double peak) {
  if (!wanted_line(label))
    return;
  problem p = {n, dtype, NULL, NULL};
  uint64_t seed = 12345;
  p.a = random_matrix(&p, &seed);
  p.b = random_matrix(&p, &seed);
  double err;
  double kms = time_kiln(dev, &p, prec, tol, &err);
  double flops = 2.0 * n * (double)n * n;
  if (kms < 0) {
    printf("%-34s kiln's answer FAILED the check (rel. error %.2e > "
           "%.0e); not timed\n",
           label, err, tol);
  } else {
    double kt = flops / kms * 1e-9;
    printf("%-34s kiln %8.3f ms %6.1f TFLOP/s (%3.0f%% of %g peak) "
           "check %.1e",
           label, kms, kt, 100.0 * kt / peak, peak, err);
    double cms = have_cublas ? time_cublas(&p, prec == KILN_PRECISION_TF32)
                             : -1;
    if (cms > 0)
      printf(" | cuBLAS %8.3f ms %6.1f TFLOP/s | ratio %.2fx", cms,
             flops / cms * 1e-9, cms / kms);
    printf("\n");
  }
  fflush(stdout);
  free(p.a);
  free(p.b);
}

/* ---- Cholesky ------------------------------------------------------------ */

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes == 0 ? 1 : bytes);
  if (p == NULL) {
    fprintf(stderr, "bench_linalg: out of host memory\n");
    exit(1);
  }
  return p;
}

/* `batch` row-major symmetric positive definite n x n matrices held in the
 * benchmarked dtype (float32 or float64). */
typedef struct spd {
  int n, batch;
  kiln_dtype dtype;
  const void *a;
} spd;

/*
 * Builds, in float64 on the host, A = M M^T + k I for each batch entry,
 * with M a random n x k matrix in [-1, 1): exactly symmetric, positive
 * definite, condition number about 1 + n / (3k). k = n is the textbook
 * M M^T + n I; the 8192^2 lines take k = 128 so that the host builds A in
 * seconds instead of the many minutes of a plain-C 8192^3 product.
 */
static double *spd_build(int n, int batch, int k, uint64_t seed) {
  size_t nn = (size_t)n * (size_t)n;
  double *a = xmalloc(nn * (size_t)batch * sizeof *a);
  double *m = xmalloc((size_t)n * (size_t)k * sizeof *m);
  for (int b = 0; b < batch; b++) {
    double *ab = a + (size_t)b * nn;
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++)
      m[i] = rnd(&seed);
    for (size_t i = 0; i < (size_t)n; i++)
      for (size_t j = 0; j <= i; j++) {
        const double *mi = m + i * (size_t)k, *mj = m + j * (size_t)k;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four chains: faster */
        int l = 0;
        for (; l + 4 <= k; l += 4) {
          s0 += mi[l] * mj[l];
          s1 += mi[l + 1] * mj[l + 1];
          s2 += mi[l + 2] * mj[l + 2];
          s3 += mi[l + 3] * mj[l + 3];
        }
        for (; l < k; l++)
          s0 += mi[l] * mj[l];
        double s = (s0 + s1) + (s2 + s3) + (i == j ? k : 0);
        ab[i * (size_t)n + j] = ab[j * (size_t)n + i] = s;
      }
  }
  free(m);
  return a;
}

/* The same values rounded to float32 (a new buffer). */
static float *to_f32(const double *x, size_t count) {
  float *y = xmalloc(count * sizeof *y);
  for (size_t i = 0; i < count; i++)
    y[i] = (float)x[i];
  return y;
}

static double val(kiln_dtype dtype, const void *x, size_t i) {
  return dtype == KILN_FLOAT64 ? ((const double *)x)[i]
                               : ((const float *)x)[i];
}

/* max(m, e), where a NaN e sticks (so that a NaN fails every check). */
static double worse(double m, double e) {
  return (e > m || isnan(e)) ? e : m;
}

/*
 * The random-vector check of factors L (row-major, A's dtype): the worst
 * over the batch of || L (L^T x) - A x ||_inf relative to || A x ||_inf,
 * in float64. L's upper triangle is part of the product (kiln's is zero,
 * so garbage there fails), unless lower_only (cuSOLVER leaves A there).
 */
static double chol_check(const spd *p, const void *l, bool lower_only) {
  size_t n = (size_t)p->n, nn = n * n;
  double *x = xmalloc(n * sizeof *x), *y = xmalloc(n * sizeof *y);
  uint64_t seed = 99;
  double worst = 0;
  for (size_t b = 0; b < (size_t)p->batch; b++) {
    const size_t off = b * nn;
    for (size_t i = 0; i < n; i++)
      x[i] = rnd(&seed);
    memset(y, 0, n * sizeof *y); /* y = L^T x, row by row of L */
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < (lower_only ? i + 1 : n); j++)
        y[j] += val(p->dtype, l, off + i * n + j) * x[i];
    double err = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
      double lly = 0, ax = 0; /* (L y)_i and (A x)_i */
      for (size_t j = 0; j < (lower_only ? i + 1 : n); j++)
        lly += val(p->dtype, l, off + i * n + j) * y[j];
      for (size_t j = 0; j < n; j++)
        ax += val(p->dtype, p->a, off + i * n + j) * x[j];
      err = worse(err, fabs(lly - ax));
      ref = worse(ref, fabs(ax));
    }
    worst = worse(worst, ref > 0 ? err / ref : err);
  }
  free(x);
  free(y);
  return worst;
}

/*
 * kiln's median milliseconds for the lower factor of the problem, after
 * checking it; -1 if the check failed. A is uploaded once. The timed call
 * is the whole kiln_cholesky: allocating the result (and the info array),
 * copying A into it, the factorization, and reading back the info (the
 * call waits for it); destroying the result is outside the clock.
 */
static double time_kiln_chol(kiln_device *dev, const spd *p, double tol,
                             double *err) {
  int64_t shape[3] = {p->batch, p->n, p->n};
  int ndim = p->batch > 1 ? 3 : 2;
  kiln_array *a, *l;
  CHECK(kiln_array_from_host(dev, p->dtype, ndim, shape + 3 - ndim, p->a,
                             &a));
  kiln_stream *s = kiln_default_stream(dev);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.stream = s;
  CHECK(kiln_cholesky_ex(a, false, &o, &l));
  size_t bytes = kiln_array_nbytes_dense(l);
  void *host = xmalloc(bytes);
  CHECK(kiln_array_to_host(l, host, bytes));
  kiln_array_destroy(l);
  *err = chol_check(p, host, false);
  free(host);
  double ms = -1;
  if (*err <= tol) {
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
      double t0 = now_s();
      CHECK(kiln_cholesky_ex(a, false, &o, &l));
      CHECK(kiln_stream_synchronize(s));
      t[r] = (now_s() - t0) * 1e3;
      kiln_array_destroy(l);
    }
    ms = median(t, REPS);
  }
  kiln_array_destroy(a);
  return ms;
}

/* ---- cuSOLVER (bench/baseline.h loads it) ------------------------------ */

/* Device buffers of one cuSOLVER measurement. */
typedef struct cs_bufs {
  const spd *p;
  void *src;   /* A, uploaded once */
  void *a;     /* factored in place: a copy of src before every run */
  void *work;  /* potrf's workspace (single matrix) */
  void **ptrs; /* device array of the batch's matrix pointers (batched) */
  int *info, *hinfo;
  int lwork;
  bool legacy;      /* single matrix: S/Dpotrf, else Xpotrf */
  int uplo;         /* its fill mode (the batch: upper) */
  size_t dev_bytes; /* Xpotrf's workspaces */
  void *host_work;
  size_t host_bytes;
} cs_bufs;

/* cudaDataType of a kiln dtype (float32 or float64 here). */
static int cuda_dtype(kiln_dtype d) { return d == KILN_FLOAT64 ? 1 : 0; }

/*
 * One cuSOLVER factorization as timed: the device-to-device copy of A (it
 * factors in place; kiln's call makes the same copy into its result),
 * potrf (column-major: the upper factor of the row-major A's transpose is
 * the row-major lower factor), and the info read back, which waits.
 * 0 when every call succeeded and every info is 0.
 */
static int cusolver_run(const cs_bufs *b) {
  const spd *p = b->p;
  int n = p->n;
  size_t bytes = (size_t)p->batch * (size_t)n * (size_t)n *
                 kiln_dtype_size(p->dtype);
  if (rt.memcpy_(b->a, b->src, bytes, BL_D2D))
    return 1;
  int st;
  if (p->batch > 1)
    st = cs.spotrf_batched(cs.handle, CUBLAS_FILL_MODE_UPPER, n,
                           (float **)b->ptrs, n, b->info, p->batch);
  else if (!b->legacy)
    st = cs.xpotrf(cs.handle, cs.params, b->uplo, n,
                   cuda_dtype(p->dtype), b->a, n, cuda_dtype(p->dtype),
                   b->work, b->dev_bytes, b->host_work, b->host_bytes,
                   b->info);
  else if (p->dtype == KILN_FLOAT64)
    st = cs.dpotrf(cs.handle, CUBLAS_FILL_MODE_UPPER, n, b->a, n, b->work,
                   b->lwork, b->info);
  else
    st = cs.spotrf(cs.handle, CUBLAS_FILL_MODE_UPPER, n, b->a, n, b->work,
                   b->lwork, b->info);
  if (st != 0 ||
      rt.memcpy_(b->hinfo, b->info, (size_t)p->batch * sizeof(int),
                 BL_D2H) ||
      rt.sync())
    return 1;
  for (int i = 0; i < p->batch; i++)
    if (b->hinfo[i] != 0)
      return 1;
  return 0;
}

/* Xpotrf's workspaces for a single matrix; 0 on success. */
static int xpotrf_workspace(cs_bufs *b) {
  const spd *p = b->p;
  if (cs.xpotrf_size(cs.handle, cs.params, b->uplo, p->n,
                     cuda_dtype(p->dtype), b->a, p->n, cuda_dtype(p->dtype),
                     &b->dev_bytes, &b->host_bytes) != 0 ||
      rt.malloc_(&b->work, b->dev_bytes > 0 ? b->dev_bytes : 1))
    return 1;
  b->host_work = xmalloc(b->host_bytes > 0 ? b->host_bytes : 1);
  return 0;
}

/* In place: the n x n row-major matrix m transposed (float32 or 64). */
static void transpose_host(kiln_dtype dt, void *m, size_t n) {
  size_t es = kiln_dtype_size(dt);
  char t[8];
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) {
      char *x = (char *)m + (i * n + j) * es, *y = (char *)m + (j * n + i) * es;
      memcpy(t, x, es);
      memcpy(x, y, es);
      memcpy(y, t, es);
    }
}

/* cuSOLVER's median milliseconds for the problem (a single matrix by
 * Xpotrf with the fill mode `uplo`, or with `legacy` by S/Dpotrf, upper),
 * after checking its factor as kiln's is checked; -1 with *why set when
 * there is none. (Column-major, the lower fill of the symmetric A leaves
 * the row-major upper factor U, A = U^T U: its transpose is checked.) */
static double time_cusolver_chol(const spd *p, bool legacy, int uplo,
                                 double tol, const char **why) {
  size_t es = kiln_dtype_size(p->dtype);
  size_t bytes = (size_t)p->batch * (size_t)p->n * (size_t)p->n * es;
  cs_bufs b = {p,    NULL, NULL, NULL, NULL, NULL, NULL, 0,
               legacy, legacy ? CUBLAS_FILL_MODE_UPPER : uplo, 0, NULL,
               0};
  b.hinfo = xmalloc((size_t)p->batch * sizeof(int));
  double ms = -1;
  *why = "a CUDA or cuSOLVER call failed";
  if (rt.malloc_(&b.src, bytes) || rt.malloc_(&b.a, bytes) ||
      rt.malloc_((void **)&b.info, (size_t)p->batch * sizeof(int)) ||
      rt.memcpy_(b.src, p->a, bytes, BL_H2D))
    goto done;
  if (p->batch > 1) {
    if (p->dtype != KILN_FLOAT32 || cs.spotrf_batched == NULL) {
      *why = "no batched potrf of this dtype loaded";
      goto done;
    }
    void **hp = xmalloc((size_t)p->batch * sizeof *hp);
    for (size_t i = 0; i < (size_t)p->batch; i++)
      hp[i] = (char *)b.a + i * (size_t)p->n * (size_t)p->n * es;
    int bad = rt.malloc_((void **)&b.ptrs, (size_t)p->batch * sizeof *hp) ||
              rt.memcpy_(b.ptrs, hp, (size_t)p->batch * sizeof *hp, BL_H2D);
    free(hp);
    if (bad)
      goto done;
  } else if (!legacy) {
    if (cs.params == NULL) {
      *why = "cuSOLVER lacks the generic cusolverDnXpotrf";
      goto done;
    }
    if (xpotrf_workspace(&b))
      goto done;
  } else {
    if (p->dtype == KILN_FLOAT64 ? !cs.dpotrf_size || !cs.dpotrf
                                 : !cs.spotrf_size || !cs.spotrf) {
      *why = "cuSOLVER lacks potrf of this dtype";
      goto done;
    }
    int st = p->dtype == KILN_FLOAT64
                 ? cs.dpotrf_size(cs.handle, CUBLAS_FILL_MODE_UPPER, p->n,
                                  b.a, p->n, &b.lwork)
                 : cs.spotrf_size(cs.handle, CUBLAS_FILL_MODE_UPPER, p->n,
                                  b.a, p->n, &b.lwork);
    if (st != 0 || rt.malloc_(&b.work, (size_t)(b.lwork > 0 ? b.lwork : 1) *
                                            es))
      goto done;
  }
  if (cusolver_run(&b))
    goto done;
  void *host = xmalloc(bytes);
  int bad = rt.memcpy_(host, b.a, bytes, BL_D2H);
  if (!bad && p->batch == 1 && b.uplo == CUBLAS_FILL_MODE_LOWER)
    transpose_host(p->dtype, host, (size_t)p->n);
  double err = bad ? NAN : chol_check(p, host, true);
  free(host);
  if (!(err <= tol)) {
    *why = "its factor FAILED the check";
    goto done;
  }
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    if (cusolver_run(&b))
      goto done;
    t[r] = (now_s() - t0) * 1e3;
  }
  ms = median(t, REPS);
done:
  rt.free_(b.src);
  rt.free_(b.a);
  rt.free_(b.work);
  rt.free_(b.ptrs);
  rt.free_(b.info);
  free(b.hinfo);
  free(b.host_work);
  return ms;
}

static void chol_line(kiln_device *dev, bool have_cusolver, const char *label,
                      const spd *p, double tol) {
  if (!wanted_line(label))
    return;
  double err;
  double kms = time_kiln_chol(dev, p, tol, &err);
  double flops = p->batch * (double)p->n * p->n * p->n / 3.0;
  if (kms < 0) {
    printf("%-34s kiln's factor FAILED the check (rel. error %.2e > "
           "%.0e); not timed\n",
           label, err, tol);
  } else {
    /* a single matrix: Xpotrf with the lower fill (PyTorch's call: it
     * factors a column-major copy, lower for a lower factor), then with
     * the upper fill, then the legacy API's (upper) */
    for (int v = 0; v < (p->batch == 1 ? 3 : 1); v++) {
      bool legacy = v == 2;
      int uplo = v == 0 ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER;
      printf("%-34s kiln %8.3f ms %6.2f TFLOP/s check %.1e",
             v > 0 ? "  (same kiln run)" : label, kms, flops / kms * 1e-9,
             err);
      const char *why = "cuSOLVER not loaded";
      double cms = have_cusolver
                       ? time_cusolver_chol(p, legacy, uplo, tol, &why)
                       : -1;
      const char *api = p->batch > 1 ? "potrfBatched"
                        : legacy     ? "S/Dpotrf upper (legacy)"
                        : v == 0     ? "Xpotrf lower"
                                     : "Xpotrf upper";
      if (cms > 0)
        printf(" | cuSOLVER %s %8.3f ms %6.2f TFLOP/s | ratio %.2fx", api,
               cms, flops / cms * 1e-9, cms / kms);
      else
        printf(" | no cuSOLVER %s baseline: %s", api, why);
      printf("\n");
      fflush(stdout);
    }
  }
  fflush(stdout);
}

/* Cholesky 8192^2 in float32 and float64 (one A), then 1000 x 128^2. */
static void chol_lines(kiln_device *dev) {
  const char *why = NULL;
  bool have = load_cusolver(&why);
  if (!have)
    printf("%s; Cholesky: kiln only.\n", why);
  const int n = 8192, bn = 128, batch = 1000;
  double *a = spd_build(n, 1, 128, 2024);
  float *a32 = to_f32(a, (size_t)n * n);
  spd p = {n, 1, KILN_FLOAT32, a32};
  chol_line(dev, have, "Cholesky 8192^2 float32", &p, 1e-4);
  free(a32);
  p.dtype = KILN_FLOAT64;
  p.a = a;
  chol_line(dev, have, "Cholesky 8192^2 float64", &p, 1e-10);
  free(a);
  a = spd_build(bn, batch, bn, 4048);
  a32 = to_f32(a, (size_t)batch * bn * bn);
  free(a);
  spd q = {bn, batch, KILN_FLOAT32, a32};
  chol_line(dev, have, "Cholesky 1000 x 128^2 float32", &q, 1e-4);
  free(a32);
  unload_cusolver();
}

/* The CPU baseline: the plain left-looking (column by column) Cholesky. */
static void plain_cholesky(int n, const double *a, double *l) {
  memset(l, 0, (size_t)n * n * sizeof *l);
  for (int j = 0; j < n; j++)
    for (int i = j; i < n; i++) {
      double s = a[(size_t)i * n + j];
      for (int k = 0; k < j; k++)
        s -= l[(size_t)i * n + k] * l[(size_t)j * n + k];
      l[(size_t)i * n + j] = i == j ? sqrt(s) : s / l[(size_t)j * n + j];
    }
}

/* ---- without a GPU ------------------------------------------------------- */

static void cpu_line(void) {
  const int n = 512;
  problem p = {n, KILN_FLOAT32, NULL, NULL};
  uint64_t seed = 7;
  p.a = random_matrix(&p, &seed);
  p.b = random_matrix(&p, &seed);
  double err;
  double kms = time_kiln(kiln_device_default(), &p, KILN_PRECISION_DEFAULT,
                         1e-4, &err);
  /* The baseline: the textbook i-k-j triple loop, float32. */
  const float *a = p.a, *b = p.b;
  float *c = malloc((size_t)n * n * sizeof *c);
  if (c == NULL)
    exit(1);
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    memset(c, 0, (size_t)n * n * sizeof *c);
    for (int i = 0; i < n; i++)
      for (int k = 0; k < n; k++) {
        float aik = a[i * n + k];
        for (int j = 0; j < n; j++)
          c[i * n + j] += aik * b[k * n + j];
      }
    t[r] = (now_s() - t0) * 1e3;
  }
  double lms = median(t, REPS), flops = 2.0 * n * (double)n * n;
  if (kms < 0)
    printf("GEMM 512^3 float32 (cpu): kiln's answer FAILED the check "
           "(%.2e)\n",
           err);
  else
    printf("GEMM 512^3 float32 (cpu): kiln %.2f ms (%.1f GFLOP/s, check "
           "%.1e) | triple loop %.2f ms (%.1f GFLOP/s) | ratio %.2fx\n",
           kms, flops / kms * 1e-6, err, lms, flops / lms * 1e-6,
           lms / kms);
  free(c);
  free(p.a);
  free(p.b);
}

static void cpu_chol_line(void) {
  const int n = 512;
  double *a = spd_build(n, 1, n, 11);
  spd p = {n, 1, KILN_FLOAT64, a};
  double err;
  double kms = time_kiln_chol(kiln_device_default(), &p, 1e-10, &err);
  double *l = xmalloc((size_t)n * n * sizeof *l);
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    plain_cholesky(n, a, l);
    t[r] = (now_s() - t0) * 1e3;
  }
  double lerr = chol_check(&p, l, false);
  double lms = median(t, REPS), flops = (double)n * n * n / 3.0;
  if (kms < 0)
    printf("Cholesky 512^2 float64 (cpu): kiln's factor FAILED the check "
           "(%.2e)\n",
           err);
  else
    printf("Cholesky 512^2 float64 (cpu): kiln %.2f ms (%.2f GFLOP/s, "
           "check %.1e) | plain loop %.2f ms (%.2f GFLOP/s, check %.1e) | "
           "ratio %.2fx\n",
           kms, flops / kms * 1e-6, err, lms, flops / lms * 1e-6, lerr,
           lms / kms);
  free(l);
  free(a);
}

int main(int argc, char **argv) {
  g_filter = argc > 1 ? argv[1] : NULL;
  kiln_device *dev = NULL;
  if (kiln_device_find("gpu", &dev) != KILN_OK) {
    printf("bench_linalg: no GPU (%s); CPU measurement only.\n",
           kiln_gpu_unavailable_reason());
    cpu_line();
    cpu_chol_line();
    return 0;
  }
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kiln_device_get_info(dev, &info));
  printf("bench_linalg on %s (%s); peaks are H100 SXM data-sheet figures "
         "(TFLOP/s, dense)\n",
         info.name, info.arch);
  const char *why = NULL;
  bool have_cublas = load_cublas(&why) && cb.sgemm && cb.gemm_ex;
  if (!have_cublas)
    printf("%s; GEMM: kiln only.\n", why ? why : "cuBLAS lacks a GEMM");
  gpu_line(dev, have_cublas, "GEMM 8192^3 float32 (no TF32)", 8192,
           KILN_FLOAT32, KILN_PRECISION_DEFAULT, 1e-4, BENCH_PEAK_FP32_TFLOPS);
  gpu_line(dev, have_cublas, "GEMM 8192^3 bfloat16", 8192, KILN_BFLOAT16,
           KILN_PRECISION_DEFAULT, 2e-2, BENCH_PEAK_BF16_TFLOPS);
  gpu_line(dev, have_cublas, "GEMM 4096^3 float32, TF32", 4096, KILN_FLOAT32,
           KILN_PRECISION_TF32, 1e-2, BENCH_PEAK_TF32_TFLOPS);
  gpu_line(dev, have_cublas, "GEMM 8192^3 float64", 8192, KILN_FLOAT64,
           KILN_PRECISION_DEFAULT, 1e-12, BENCH_PEAK_FP64_TFLOPS);
  chol_lines(dev);
  return 0;
}
