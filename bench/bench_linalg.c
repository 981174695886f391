/*
 * Linear-algebra benchmark (issue 4; this increment: GEMM). On the first
 * GPU it times, against cuBLAS loaded in the same run (dlopen):
 *   1. GEMM 8192^3 float32 with float32 arithmetic (no TF32);
 *   2. GEMM 8192^3 bfloat16 (float32 accumulation);
 *   3. GEMM 4096^3 float32 with TF32 tensor cores (opt-in for both).
 * Each line prints kiln's median time, cuBLAS's, the ratio (cuBLAS time /
 * kiln time: above 1 means kiln is faster), both TFLOP/s and the card's
 * data-sheet peak for the arithmetic. kiln's answer is checked before it
 * is timed, by the random-vector check: C x against A (B x), in float64.
 * Without a GPU it says why, times 512^3 float32 on the CPU against a
 * plain triple loop in C, and exits 0, so `make bench` works everywhere.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "bench_linalg"
#include "bench_util.h"

#define REPS 7

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
    float v = (float)rnd(seed);
    if (p->dtype == KILN_BFLOAT16)
      ((uint16_t *)x)[i] = to_bf16(v);
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
    err = e > err ? e : err;
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

/* ---- cuBLAS (dlopen; the few types declared here) ------------------------ */

typedef struct cublas_ctx *cublas_handle;
enum { CUBLAS_OP_N = 0 };
enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum { CUBLAS_COMPUTE_32F = 68 };
enum { CUBLAS_GEMM_DEFAULT = -1 };

static struct {
  int (*create)(cublas_handle *);
  int (*set_stream)(cublas_handle, void *);
  int (*set_math)(cublas_handle, int);
  int (*sgemm)(cublas_handle, int, int, int, int, int, const float *,
               const float *, int, const float *, int, const float *,
               float *, int);
  int (*gemm_ex)(cublas_handle, int, int, int, int, int, const void *,
                 const void *, int, int, const void *, int, int,
                 const void *, void *, int, int, int, int);
  int (*malloc_)(void **, size_t);
  int (*free_)(void *);
  int (*memcpy_)(void *, const void *, size_t, int);
  int (*sync)(void);
  cublas_handle handle;
} cb;

static void *open_first(const char *const *names) {
  for (int i = 0; names[i] != NULL; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h != NULL)
      return h;
  }
  return NULL;
}

/* Loads cuBLAS and the CUDA runtime; false (with a note) if absent. */
static bool load_cublas(void) {
  static const char *const blas[] = {
      "libcublas.so.13", "libcublas.so.12",
      "/usr/local/cuda/lib64/libcublas.so.13",
      "/usr/local/cuda/lib64/libcublas.so.12", NULL};
  static const char *const rt[] = {
      "libcudart.so.13", "libcudart.so.12",
      "/usr/local/cuda/lib64/libcudart.so.13",
      "/usr/local/cuda/lib64/libcudart.so.12", NULL};
  void *hb = open_first(blas), *hr = open_first(rt);
  if (hb == NULL || hr == NULL) {
    printf("cuBLAS or the CUDA runtime was not found; kiln only.\n");
    return false;
  }
  *(void **)&cb.create = dlsym(hb, "cublasCreate_v2");
  *(void **)&cb.set_stream = dlsym(hb, "cublasSetStream_v2");
  *(void **)&cb.set_math = dlsym(hb, "cublasSetMathMode");
  *(void **)&cb.sgemm = dlsym(hb, "cublasSgemm_v2");
  *(void **)&cb.gemm_ex = dlsym(hb, "cublasGemmEx");
  *(void **)&cb.malloc_ = dlsym(hr, "cudaMalloc");
  *(void **)&cb.free_ = dlsym(hr, "cudaFree");
  *(void **)&cb.memcpy_ = dlsym(hr, "cudaMemcpy");
  *(void **)&cb.sync = dlsym(hr, "cudaDeviceSynchronize");
  if (!cb.create || !cb.set_stream || !cb.set_math || !cb.sgemm ||
      !cb.gemm_ex || !cb.malloc_ || !cb.free_ || !cb.memcpy_ || !cb.sync ||
      cb.create(&cb.handle) != 0 || cb.set_stream(cb.handle, NULL) != 0) {
    printf("cuBLAS could not be initialised; kiln only.\n");
    return false;
  }
  return true;
}

/* One cuBLAS call of C = A @ B, row-major, as the column-major
 * C^T = B^T A^T. */
static int cublas_gemm(const problem *p, bool tf32, void *a, void *b,
                       void *c) {
  int n = p->n;
  float one = 1.0f, zero = 0.0f;
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
  if (cb.malloc_(&a, bytes) || cb.malloc_(&b, bytes) ||
      cb.malloc_(&c, bytes) || cb.memcpy_(a, p->a, bytes, 1) ||
      cb.memcpy_(b, p->b, bytes, 1) || cublas_gemm(p, tf32, a, b, c) ||
      cb.sync())
    goto done;
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    cublas_gemm(p, tf32, a, b, c);
    cb.sync();
    t[r] = (now_s() - t0) * 1e3;
  }
  ms = median(t, REPS);
done:
  cb.free_(a);
  cb.free_(b);
  cb.free_(c);
  return ms;
}

/* ---- the GPU lines ------------------------------------------------------- */

static void gpu_line(kiln_device *dev, bool have_cublas, const char *label,
                     int n, kiln_dtype dtype, kiln_precision prec,
                     double tol, double peak) {
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

int main(void) {
  kiln_device *dev = NULL;
  if (kiln_device_find("gpu", &dev) != KILN_OK) {
    printf("bench_linalg: no GPU (%s); CPU measurement only.\n",
           kiln_gpu_unavailable_reason());
    cpu_line();
    return 0;
  }
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kiln_device_get_info(dev, &info));
  printf("bench_linalg on %s (%s); peaks are H100 SXM data-sheet figures "
         "(TFLOP/s, dense)\n",
         info.name, info.arch);
  bool have_cublas = load_cublas();
  gpu_line(dev, have_cublas, "GEMM 8192^3 float32 (no TF32)", 8192,
           KILN_FLOAT32, KILN_PRECISION_DEFAULT, 1e-4, 67.0);
  gpu_line(dev, have_cublas, "GEMM 8192^3 bfloat16", 8192, KILN_BFLOAT16,
           KILN_PRECISION_DEFAULT, 2e-2, 989.0);
  gpu_line(dev, have_cublas, "GEMM 4096^3 float32, TF32", 4096, KILN_FLOAT32,
           KILN_PRECISION_TF32, 1e-2, 494.0);
  return 0;
}
