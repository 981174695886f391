/*
 * `make demo`: kiln's main job in one program. On the best device present
 * it builds a kernel the way the MLX kernel guides write them (a header of
 * helpers, a body-only source, params as 0-d buffers, one threadgroup per
 * row, SIMD-group reductions with one partial per SIMD group in threadgroup
 * memory, barriers before reads), runs it, checks it against a float64
 * reference on the host, and says what ran where and how long it took.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

#define CHECK(call)                                                           \
  do {                                                                        \
    kiln_status st_ = (call);                                                 \
    if (st_ != KILN_OK) {                                                     \
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
  return max_err < 1e-5 ? 0 : 1;
}
