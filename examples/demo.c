/*
 * `make demo`: kiln's main job in one program. On the best device present
 * it builds a kernel the way the MLX kernel guides write them (a header of
 * helpers, a body-only source, params as 0-d buffers, one threadgroup per
 * row, SIMD-group reductions with one partial per SIMD group in threadgroup
 * memory, barriers before reads), runs it, checks it against a float64
 * reference on the host, and says what ran where and how long it took.
 * Then it does the same for kiln's linear algebra: a tall-skinny QR and a
 * linear solve with several right-hand sides, each checked by its
 * residual in double on the host (printed with its threshold) and timed
 * (the first call, which compiles, and the mean of cached calls).
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

#define CHECK(call)                                                           \
  do {                                                                        \
    kiln_status st_ = (call);                                                 \
    if (st_ != KILN_OK) {                                                     \
      fflush(stdout);                                                         \
      fprintf(stderr, "demo: %s\n", kiln_last_error());                      \
      return 1;                                                               \
    }                                                                         \
  } while (0)

static const char *softmax_header =
    "#include <metal_stdlib>\n"
    "using namespace metal;\n"
    "\n"
    "// Reduce one value per thread to one value per threadgroup: a SIMD-group\n"
    "// reduction, one partial per SIMD group in threadgroup memory, then a\n"
    "// second SIMD-group reduction of the partials.\n"
    "template <bool IS_MAX>\n"
    "float group_reduce(float v, threadgroup float* partials, uint lane,\n"
    "                   uint sg, uint nsg) {\n"
    "  v = IS_MAX ? simd_max(v) : simd_sum(v);\n"
    "  if (lane == 0) partials[sg] = v;\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "  float p = lane < nsg ? partials[lane] : (IS_MAX ? -INFINITY : 0.0f);\n"
    "  p = IS_MAX ? simd_max(p) : simd_sum(p);\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "  return p;\n"
    "}\n";

static const char *softmax_source =
    "threadgroup float partials[32];\n"
    "uint row = threadgroup_position_in_grid.y;\n"
    "uint tid = thread_index_in_threadgroup;\n"
    "uint nthreads = threads_per_threadgroup.x;\n"
    "uint lane = thread_index_in_simdgroup;\n"
    "uint sg = simdgroup_index_in_threadgroup;\n"
    "uint nsg = simdgroups_per_threadgroup;\n"
    "const device float* xr = x + row * ncols;\n"
    "device float* yr = y + row * ncols;\n"
    "float m = -INFINITY;\n"
    "for (uint j = tid; j < (uint)ncols; j += nthreads) m = max(m, xr[j]);\n"
    "m = group_reduce<true>(m, partials, lane, sg, nsg);\n"
    "float s = 0.0f;\n"
    "for (uint j = tid; j < (uint)ncols; j += nthreads) s += exp(xr[j] - m);\n"
    "s = group_reduce<false>(s, partials, lane, sg, nsg);\n"
    "float inv = 1.0f / s;\n"
    "for (uint j = tid; j < (uint)ncols; j += nthreads)\n"
    "  yr[j] = exp(xr[j] - m) * inv;\n";

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- linear algebra ------------------------------------------------------ */

/* Residuals below this many units of n eps pass. */
#define LINALG_THRESHOLD 10.0

static float *random_floats(size_t n) {
  float *p = malloc(n * sizeof *p);
  for (size_t i = 0; p && i < n; i++)
    p[i] = 2.0f * ((float)rand() / (float)RAND_MAX) - 1.0f;
  return p;
}

/* Runs `call` once (compiling its kernels) and then `reps` times, waiting
 * for the device each time; returns the first and the mean time. */
typedef kiln_status (*timed_fn)(void *ctx, bool keep);

static int time_it(kiln_device *dev, timed_fn fn, void *ctx, int reps,
                   double *first, double *mean) {
  double t0 = seconds();
  CHECK(fn(ctx, true));
  CHECK(kiln_synchronize(dev));
  *first = seconds() - t0;
  t0 = seconds();
  for (int i = 0; i < reps; i++)
    CHECK(fn(ctx, false));
  CHECK(kiln_synchronize(dev));
  *mean = (seconds() - t0) / reps;
  return 0;
}

typedef struct qr_ctx {
  kiln_array *a, *q, *r;
} qr_ctx;

/* One QR; keeps the first result, drops the timed repeats' results. */
static kiln_status qr_once(void *p, bool keep) {
  qr_ctx *c = p;
  kiln_array *q = NULL, *r = NULL;
  kiln_status st = kiln_qr(c->a, KILN_QR_REDUCED, &q, &r);
  if (st == KILN_OK && keep) {
    c->q = q;
    c->r = r;
  } else {
    kiln_array_destroy(q);
    kiln_array_destroy(r);
  }
  return st;
}

/* ||A - QR|| / (||A|| m eps) and ||Q^T Q - I|| / (m eps), in double. */
static void qr_residuals(const float *a, const float *q, const float *r,
                         int m, int n, double *res, double *orth) {
  double num = 0, den = 0, o = 0;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = -(double)a[(size_t)i * n + j];
      for (int k = 0; k <= j; k++)
        s += (double)q[(size_t)i * n + k] * r[(size_t)k * n + j];
      num += s * s;
      den += (double)a[(size_t)i * n + j] * a[(size_t)i * n + j];
    }
  double *g = calloc((size_t)n * n, sizeof *g);
  for (int i = 0; g && i < m; i++)
    for (int j = 0; j < n; j++)
      for (int k = 0; k < n; k++)
        g[j * n + k] += (double)q[(size_t)i * n + j] * q[(size_t)i * n + k];
  for (int j = 0; g && j < n * n; j++) {
    double d = g[j] - (j % (n + 1) == 0 ? 1.0 : 0.0);
    o += d * d;
  }
  free(g);
  double eps = FLT_EPSILON;
  *res = sqrt(num) / (sqrt(den) * m * eps);
  *orth = g ? sqrt(o) / (m * eps) : INFINITY;
}

/* A tall-skinny float32 QR: the second QR anchor on a GPU, a
 * smaller one on the CPU. */
static int demo_qr(kiln_device *dev, bool gpu, bool *ok) {
  int m = gpu ? 100000 : 4096, n = 64;
  float *a = random_floats((size_t)m * n);
  float *q = malloc(sizeof(float) * (size_t)m * n);
  float *r = malloc(sizeof(float) * (size_t)n * n);
  if (!a || !q || !r) {
    fprintf(stderr, "demo: out of host memory\n");
    return 1;
  }
  int64_t shape[2] = {m, n};
  qr_ctx c = {NULL, NULL, NULL};
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, shape, a, &c.a));
  double first, mean;
  int rc = time_it(dev, qr_once, &c, 10, &first, &mean);
  if (rc)
    return rc;
  CHECK(kiln_array_to_host(c.q, q, sizeof(float) * (size_t)m * n));
  CHECK(kiln_array_to_host(c.r, r, sizeof(float) * (size_t)n * n));
  double res, orth;
  qr_residuals(a, q, r, m, n, &res, &orth);
  bool good = res < LINALG_THRESHOLD && orth < LINALG_THRESHOLD;
  printf("QR (kiln_qr, reduced): %d x %d float32\n", m, n);
  printf("  first call (compiles): %.1f ms; cached, mean of 10: %.3f ms\n",
         first * 1e3, mean * 1e3);
  printf("  ||A - QR|| / (||A|| m eps) = %.3g, ||Q^T Q - I|| / (m eps) = "
         "%.3g (threshold %.0f) -> %s\n", res, orth, LINALG_THRESHOLD,
         good ? "OK" : "WRONG");
  *ok = *ok && good;
  kiln_array_destroy(c.a);
  kiln_array_destroy(c.q);
  kiln_array_destroy(c.r);
  free(a);
  free(q);
  free(r);
  return 0;
}

typedef struct solve_ctx {
  kiln_array *a, *b, *x;
} solve_ctx;

static kiln_status solve_once(void *p, bool keep) {
  solve_ctx *c = p;
  kiln_array *x = NULL;
  kiln_status st = kiln_solve(c->a, c->b, &x);
  if (st == KILN_OK && keep)
    c->x = x;
  else
    kiln_array_destroy(x);
  return st;
}

/* A X = B in float32 with 16 right-hand sides: the solve anchor
 * (8192) is for the benchmark; the demo takes 4096 on a GPU. */
static int demo_solve(kiln_device *dev, bool gpu, bool *ok) {
  int n = gpu ? 4096 : 384, k = 16;
  float *a = random_floats((size_t)n * n), *b = random_floats((size_t)n * k);
  float *x = malloc(sizeof(float) * (size_t)n * k);
  if (!a || !b || !x) {
    fprintf(stderr, "demo: out of host memory\n");
    return 1;
  }
  for (int i = 0; i < n; i++) /* keeps the system well conditioned */
    a[(size_t)i * n + i] += (float)(i % 2 ? -0.5 : 0.5) * sqrtf((float)n);
  int64_t sa[2] = {n, n}, sb[2] = {n, k};
  solve_ctx c = {NULL, NULL, NULL};
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, sa, a, &c.a));
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, sb, b, &c.b));
  double first, mean;
  int rc = time_it(dev, solve_once, &c, 5, &first, &mean);
  if (rc)
    return rc;
  CHECK(kiln_array_to_host(c.x, x, sizeof(float) * (size_t)n * k));
  /* ||A X - B|| / ((||A|| ||X|| + ||B||) n eps), in double */
  double num = 0, na = 0, nx = 0, nb = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < k; j++) {
      double s = -(double)b[(size_t)i * k + j];
      for (int p = 0; p < n; p++)
        s += (double)a[(size_t)i * n + p] * x[(size_t)p * k + j];
      num += s * s;
      nx += (double)x[(size_t)i * k + j] * x[(size_t)i * k + j];
      nb += (double)b[(size_t)i * k + j] * b[(size_t)i * k + j];
    }
  for (size_t i = 0; i < (size_t)n * n; i++)
    na += (double)a[i] * a[i];
  double res = sqrt(num) / ((sqrt(na) * sqrt(nx) + sqrt(nb)) * n *
                            FLT_EPSILON);
  bool good = res < LINALG_THRESHOLD;
  printf("solve (kiln_solve, LU with partial pivoting): %d x %d float32, "
         "%d right-hand sides\n", n, n, k);
  printf("  first call (compiles): %.1f ms; cached, mean of 5: %.3f ms "
         "(%.1f GFLOP/s)\n", first * 1e3, mean * 1e3,
         (2.0 / 3.0 * n * (double)n * n + 2.0 * n * (double)n * k) / mean *
             1e-9);
  printf("  ||AX - B|| / ((||A|| ||X|| + ||B||) n eps) = %.3g (threshold "
         "%.0f) -> %s\n", res, LINALG_THRESHOLD, good ? "OK" : "WRONG");
  *ok = *ok && good;
  kiln_array_destroy(c.a);
  kiln_array_destroy(c.b);
  kiln_array_destroy(c.x);
  free(a);
  free(b);
  free(x);
  return 0;
}

int main(void) {
  enum { ROWS = 512, COLS = 1000 };
  kiln_device *dev = kiln_device_default();
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kiln_device_get_info(dev, &info));
  const char *gpu_reason = kiln_gpu_unavailable_reason();
  printf("kiln %s demo\n", kiln_version());
  printf("device: %s (%s backend, %s, %d compute units)\n", info.name,
         info.backend, info.arch, info.compute_units);
  if (info.kind == KILN_DEVICE_CPU && gpu_reason[0])
    printf("no GPU used: %s\n", gpu_reason);

  const char *inputs[] = {"x", "ncols"};
  const char *outputs[] = {"y"};
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  d.name = "softmax_rows";
  d.input_names = inputs;
  d.num_inputs = 2;
  d.output_names = outputs;
  d.num_outputs = 1;
  d.header = softmax_header;
  d.source = softmax_source;
  kiln_kernel *k = NULL;
  CHECK(kiln_kernel_create(&d, &k));

  float *x = malloc(sizeof(float) * ROWS * COLS);
  float *y = malloc(sizeof(float) * ROWS * COLS);
  if (!x || !y) {
    fprintf(stderr, "demo: out of host memory\n");
    return 1;
  }
  srand((unsigned)time(NULL));
  for (int i = 0; i < ROWS * COLS; i++)
    x[i] = 8.0f * ((float)rand() / (float)RAND_MAX - 0.5f);
  int64_t shape[2] = {ROWS, COLS};
  int32_t ncols = COLS;
  kiln_array *in[2];
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, shape, x, &in[0]));
  CHECK(kiln_array_scalar(dev, KILN_INT32, &ncols, &in[1]));

  kiln_launch l;
  kiln_launch_init(&l);
  kiln_output_spec out;
  memset(&out, 0, sizeof out);
  out.dtype = KILN_FLOAT32;
  out.ndim = 2;
  out.shape[0] = ROWS;
  out.shape[1] = COLS;
  l.inputs = in;
  l.num_inputs = 2;
  l.outputs = &out;
  l.num_outputs = 1;
  /* One threadgroup of 256 threads per row (grid counts threads). */
  l.grid[0] = 256;
  l.grid[1] = ROWS;
  l.threadgroup[0] = 256;
  l.threadgroup[1] = 1;

  kiln_cache_stats before;
  memset(&before, 0, sizeof before);
  before.struct_size = sizeof before;
  CHECK(kiln_cache_get_stats(&before));
  double t0 = seconds();
  kiln_array *ya = NULL;
  CHECK(kiln_kernel_launch(k, &l, &ya));
  CHECK(kiln_array_to_host(ya, y, sizeof(float) * ROWS * COLS));
  double first = seconds() - t0;
  kiln_array_destroy(ya);
  kiln_cache_stats after;
  memset(&after, 0, sizeof after);
  after.struct_size = sizeof after;
  CHECK(kiln_cache_get_stats(&after));

  /* Check every row against a float64 softmax. */
  double max_err = 0;
  for (int r = 0; r < ROWS; r++) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < COLS; j++)
      m = fmax(m, x[r * COLS + j]);
    for (int j = 0; j < COLS; j++)
      s += exp((double)x[r * COLS + j] - m);
    for (int j = 0; j < COLS; j++) {
      double ref = exp((double)x[r * COLS + j] - m) / s;
      double err = fabs(ref - y[r * COLS + j]) / fmax(ref, 1e-30);
      if (!(err <= max_err))
        max_err = isnan(err) ? INFINITY : err;
    }
  }

  enum { REPS = 20 };
  t0 = seconds();
  for (int i = 0; i < REPS; i++) {
    CHECK(kiln_kernel_launch(k, &l, &ya));
    kiln_array_destroy(ya);
  }
  CHECK(kiln_synchronize(dev));
  double per = (seconds() - t0) / REPS;

  const char *how = after.compiles > before.compiles   ? "compiled now"
                    : after.disk_hits > before.disk_hits ? "loaded from the disk cache"
                                                         : "from memory";
  printf("kernel softmax_rows: %d x %d float32, grid %u x %u, threadgroup %u\n",
         ROWS, COLS, l.grid[0], l.grid[1], l.threadgroup[0]);
  printf("  first launch (%s): %.1f ms\n", how, first * 1e3);
  printf("  cached launch, mean of %d: %.3f ms (%.2f GB/s)\n", REPS,
         per * 1e3, 2.0 * ROWS * COLS * sizeof(float) / per * 1e-9);
  printf("  max relative error vs float64 reference: %.2e -> %s\n", max_err,
         max_err < 1e-5 ? "OK" : "WRONG");

  kiln_array_destroy(in[0]);
  kiln_array_destroy(in[1]);
  kiln_kernel_destroy(k);
  free(x);
  free(y);

  bool ok = max_err < 1e-5;
  bool gpu = info.kind == KILN_DEVICE_GPU;
  int rc = demo_qr(dev, gpu, &ok);
  if (!rc)
    rc = demo_solve(dev, gpu, &ok);
  if (rc)
    return rc;
  return ok ? 0 : 1;
}
