/*
 * CUDA-backend benchmark (issue 3). On the first GPU it prints, with the
 * baseline measured in the same run:
 *   1. a cold NVRTC compile of a small body-only kernel, end to end (first
 *      launch with an empty cache: generate, compile, load, launch, sync),
 *      NVRTC's own share of it, and a breakdown by stage (kiln's internal
 *      stage clock) so that a slow run says where its time went;
 *   2. the same kernel's first launch in a fresh process from the disk
 *      cache (the child process initialises the device before timing);
 *   3. the host cost of launching the cached kernel against a raw
 *      cuLaunchKernel of the same cubin (kiln_kernel_compile gives it);
 *   4. a float4 copy in the dialect against cuMemcpyDtoD bandwidth (bytes
 *      read plus written);
 *   5. the conformance suite's tiled GEMM (TFLOP/s) and a simd_sum
 *      reduction (GB/s).
 * Every kernel's answer is checked before it is timed. Without a GPU it
 * says why and exits 0, so `make bench` works everywhere.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "bench_cuda"
#include "bench_util.h"

/* ---- the few driver API calls the baselines need (libcuda, dlopen) ---- */

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUctx_st *CUcontext;

static struct {
  CUresult (*ctx_get_current)(CUcontext *);
  CUresult (*module_load_data)(CUmodule *, const void *);
  CUresult (*module_get_function)(CUfunction *, CUmodule, const char *);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                     unsigned, unsigned, unsigned, CUstream, void **,
                     void **);
  CUresult (*mem_alloc)(CUdeviceptr *, size_t);
  CUresult (*mem_free)(CUdeviceptr);
  CUresult (*memcpy_dtod)(CUdeviceptr, CUdeviceptr, size_t);
  CUresult (*ctx_synchronize)(void);
} cu;

static void load_driver(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "bench_cuda: cannot load libcuda.so.1\n");
    exit(1);
  }
  *(void **)&cu.ctx_get_current = dlsym(h, "cuCtxGetCurrent");
  *(void **)&cu.module_load_data = dlsym(h, "cuModuleLoadData");
  *(void **)&cu.module_get_function = dlsym(h, "cuModuleGetFunction");
  *(void **)&cu.launch = dlsym(h, "cuLaunchKernel");
  *(void **)&cu.mem_alloc = dlsym(h, "cuMemAlloc_v2");
  *(void **)&cu.mem_free = dlsym(h, "cuMemFree_v2");
  *(void **)&cu.memcpy_dtod = dlsym(h, "cuMemcpyDtoD_v2");
  *(void **)&cu.ctx_synchronize = dlsym(h, "cuCtxSynchronize");
  if (!cu.ctx_get_current || !cu.module_load_data ||
      !cu.module_get_function || !cu.launch || !cu.mem_alloc ||
      !cu.mem_free || !cu.memcpy_dtod || !cu.ctx_synchronize) {
    fprintf(stderr, "bench_cuda: libcuda.so.1 lacks a needed symbol\n");
    exit(1);
  }
}

#define CU_CHECK(call)                                                        \
  do {                                                                        \
    CUresult r_ = (call);                                                     \
    if (r_ != 0) {                                                            \
      fprintf(stderr, "bench_cuda: %s failed with CUresult %d\n", #call, r_); \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

/* ---- helpers ------------------------------------------------------------ */

/* kiln's stage clock (src/core/kcache.h): per-thread totals of each stage
 * of a kernel's first launch. Internal, not in kiln.h; the benchmarks link
 * the static library, which has it. */
int kiln__stage_times(double *ms, int n, bool reset);
const char *kiln__stage_name(int stage);

enum { MAX_STAGES = 16 };

/* This thread's stage totals since the last reset, and resets them. */
static void take_stages(double ms[MAX_STAGES]) {
  kiln__stage_times(ms, MAX_STAGES, true);
}

/* The total of the stage called `name` in `ms` (0 if kiln has none). */
static double stage_ms(const double ms[MAX_STAGES], const char *name) {
  for (int i = 0; i < MAX_STAGES && kiln__stage_name(i) != NULL; i++)
    if (strcmp(kiln__stage_name(i), name) == 0)
      return ms[i];
  return 0.0;
}

static void setup_launch(kiln_launch *l, kiln_output_spec *spec,
                         kiln_array *const *in, int nin, kiln_dtype dt,
                         int ndim, const int64_t *shape, uint32_t gx,
                         uint32_t gy, uint32_t tx, uint32_t ty,
                         kiln_device *dev, kiln_stream *s) {
  kiln_launch_init(l);
  memset(spec, 0, sizeof *spec);
  spec->dtype = dt;
  spec->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    spec->shape[i] = shape[i];
  l->inputs = in;
  l->num_inputs = nin;
  l->outputs = spec;
  l->num_outputs = 1;
  l->grid[0] = gx;
  l->grid[1] = gy;
  l->threadgroup[0] = tx;
  l->threadgroup[1] = ty;
  l->device = dev;
  l->stream = s;
}

/* The median time, in seconds, of `reps` (at most 16) launches of `k`,
 * each waited for on `s`. */
static double median_launch_s(kiln_kernel *k, const kiln_launch *l,
                              kiln_stream *s, int reps) {
  double t[16];
  for (int r = 0; r < reps; r++) {
    kiln_array *o = NULL;
    double t0 = now_s();
    CHECK(kiln_kernel_launch(k, l, &o));
    CHECK(kiln_stream_synchronize(s));
    t[r] = now_s() - t0;
    kiln_array_destroy(o);
  }
  return median(t, reps);
}

static const char *small_src = "uint i = thread_position_in_grid.x;\n"
                               "out[i] = a[i] * 2.0f + 1.0f;\n";

/* Child mode: time the first launch of `small` with a warm disk cache. */
static int child_disk_load(void) {
  kiln_device *dev = NULL;
  CHECK(kiln_device_find("gpu", &dev));
  int64_t n = 256;
  kiln_array *a = NULL;
  float host[256];
  for (int i = 0; i < 256; i++)
    host[i] = (float)i;
  /* Initialise the device (context, allocator) before timing. */
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 1, &n, host, &a));
  CHECK(kiln_synchronize(dev));
  const char *in[] = {"a"};
  kiln_cache_stats st0 = {.struct_size = sizeof st0}, st1 = st0;
  CHECK(kiln_cache_get_stats(&st0));
  double stages[MAX_STAGES];
  take_stages(stages);
  double t0 = now_s();
  kiln_kernel *k = make_kernel("bench_small", in, 1, "out", NULL, small_src);
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, &a, 1, KILN_FLOAT32, 1, &n, 256, 1, 256, 1, dev,
               NULL);
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k, &l, &o));
  CHECK(kiln_array_wait(o));
  double t = now_s() - t0;
  take_stages(stages);
  CHECK(kiln_cache_get_stats(&st1));
  printf("%.3f %llu %llu %.3f %.3f\n", t * 1e3,
         (unsigned long long)(st1.compiles - st0.compiles),
         (unsigned long long)(st1.disk_hits - st0.disk_hits),
         stage_ms(stages, "disk read"), stage_ms(stages, "load"));
  kiln_array_destroy(o);
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
  return 0;
}

/* Prints where the cold first launch spent its time: the bench's own
 * clock around kernel creation, the launch call and the copy back, and
 * kiln's stage clock inside the launch. */
static void print_breakdown(const double st[MAX_STAGES], double create_ms,
                            double launch_ms, double copy_ms) {
  double compile = stage_ms(st, "compile"), nvrtc = stage_ms(st, "nvrtc");
  double inside = stage_ms(st, "generate") + stage_ms(st, "key") +
                  stage_ms(st, "disk read") + compile +
                  stage_ms(st, "disk write") + stage_ms(st, "load");
  printf("  where the first launch's time went (ms):\n");
  printf("    kiln_kernel_create (scan the body)       %7.2f\n", create_ms);
  printf("    generate the source                      %7.2f\n",
         stage_ms(st, "generate"));
  printf("    cache key (build id, hashing)            %7.2f\n",
         stage_ms(st, "key"));
  printf("    disk cache: directory check, lookup      %7.2f\n",
         stage_ms(st, "disk read"));
  printf("    NVRTC: nvrtcCompileProgram               %7.2f\n", nvrtc);
  printf("    NVRTC: the rest of the compile call      %7.2f\n",
         compile - nvrtc);
  printf("    disk cache: write and rename             %7.2f\n",
         stage_ms(st, "disk write"));
  printf("    module load (cuModuleLoadData ...)       %7.2f\n",
         stage_ms(st, "load"));
  printf("    rest of the launch (plan, alloc, enqueue)%7.2f\n",
         launch_ms - inside);
  printf("    wait for the kernel, copy back (to_host) %7.2f\n", copy_ms);
}

static void bench_compile_and_cache(kiln_device *dev, const char *self) {
  char dir[] = "/tmp/kiln-bench-cache-XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  setenv("KILN_CACHE_DIR", dir, 1);
  int64_t n = 256;
  float host[256];
  for (int i = 0; i < 256; i++)
    host[i] = (float)i;
  kiln_array *a = NULL;
  double stages[MAX_STAGES];
  take_stages(stages);
  double t_setup = now_s();
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 1, &n, host, &a));
  CHECK(kiln_synchronize(dev));
  t_setup = now_s() - t_setup;
  take_stages(stages);
  double warm_up = stage_ms(stages, "warm-up");
  const char *in[] = {"a"};
  double t0 = now_s();
  kiln_kernel *k = make_kernel("bench_small", in, 1, "out", NULL, small_src);
  double t1 = now_s();
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, &a, 1, KILN_FLOAT32, 1, &n, 256, 1, 256, 1, dev,
               NULL);
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k, &l, &o));
  double t2 = now_s();
  float res[256];
  CHECK(kiln_array_to_host(o, res, sizeof res));
  double t3 = now_s();
  double cold = t3 - t0;
  take_stages(stages);
  for (int i = 0; i < 256; i++)
    if (res[i] != host[i] * 2.0f + 1.0f) {
      fprintf(stderr, "bench_cuda: small kernel wrong at %d\n", i);
      exit(1);
    }
  kiln_array_destroy(o);
  /* NVRTC's own time for the same source (the compile report). */
  kiln_compile_report rep = {.struct_size = sizeof rep};
  CHECK(kiln_kernel_compile(k, &l, NULL, NULL, &rep, NULL, NULL, NULL));
  printf("cold compile of a small body-only kernel, end to end:\n");
  printf("  kiln first launch (generate+NVRTC+load+run): %7.1f ms  (goal "
         "<= 60 ms; CuPy RawKernel first call: 249 ms on an H100)\n",
         cold * 1e3);
  printf("  of which NVRTC compile (%s, %d registers):   %7.1f ms\n",
         rep.target, rep.registers, stage_ms(stages, "nvrtc"));
  print_breakdown(stages, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3);
  printf("  (before timing: CUDA context set-up by the first copy to the "
         "GPU %.1f ms, NVRTC warm-up on the calling thread %.1f ms of it;\n"
         "   the same kernel compiled again, warm, with ptxas's report: "
         "%.1f ms)\n",
         t_setup * 1e3, warm_up, rep.compile_ms);

  /* A fresh process from the disk cache. */
  int pipefd[2];
  if (pipe(pipefd) != 0) {
    perror("pipe");
    exit(1);
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    close(pipefd[0]);
    execl(self, self, "--child-disk-load", (char *)NULL);
    _exit(127);
  }
  close(pipefd[1]);
  char buf[256] = {0};
  ssize_t got = read(pipefd[0], buf, sizeof buf - 1);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  double ms = 0, read_ms = 0, load_ms = 0;
  unsigned long long compiles = 0, hits = 0;
  if (got <= 0 || sscanf(buf, "%lf %llu %llu %lf %lf", &ms, &compiles, &hits,
                         &read_ms, &load_ms) != 5) {
    fprintf(stderr, "bench_cuda: the disk-cache child failed\n");
    exit(1);
  }
  printf("same kernel, fresh process, from the disk cache: %7.2f ms  "
         "(goal <= 2 ms; compiles %llu, disk hits %llu; cache file read "
         "%.2f ms, module load %.2f ms)\n",
         ms, compiles, hits, read_ms, load_ms);
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
}

static void bench_launch(kiln_device *dev, kiln_stream *s) {
  const char *in[] = {"a"};
  kiln_kernel *k = make_kernel("bench_small", in, 1, "out", NULL, small_src);
  int64_t n = 256;
  float host[256] = {0};
  kiln_array *a = NULL;
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 1, &n, host, &a));
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, &a, 1, KILN_FLOAT32, 1, &n, 256, 1, 256, 1, dev,
               s);
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k, &l, &o));
  CHECK(kiln_stream_synchronize(s));
  kiln_array_destroy(o);
  /* Short bursts (500 launches, well under the driver's queue depth) so
   * that the host cost is measured, not the GPU's rate of retiring tiny
   * kernels; kiln and raw bursts alternate so drift hits both alike. */
  enum { N = 500, REPS = 21 };
  static kiln_array *outs[N];
  double kt[REPS], rt[REPS];
  /* The raw baseline: the same cubin through cuLaunchKernel. */
  void *cubin = NULL;
  size_t cubin_size = 0;
  kiln_compile_report rep = {.struct_size = sizeof rep};
  CHECK(kiln_kernel_compile(k, &l, NULL, NULL, &rep, NULL, &cubin,
                            &cubin_size));
  CUmodule mod;
  CUfunction fn;
  CU_CHECK(cu.module_load_data(&mod, cubin));
  CU_CHECK(cu.module_get_function(&fn, mod, "kiln_entry"));
  CUdeviceptr da, dout;
  CU_CHECK(cu.mem_alloc(&da, 1024));
  CU_CHECK(cu.mem_alloc(&dout, 1024));
  struct {
    unsigned grid[3], tg[3], group_offset[3]; /* kiln_cuda_dims, ABI 2 */
  } dims = {{256, 1, 1}, {256, 1, 1}, {0, 0, 0}};
  void *params[3] = {&da, &dout, &dims};
  for (int r = 0; r < REPS; r++) {
    double t0 = now_s();
    for (int i = 0; i < N; i++)
      CHECK(kiln_kernel_launch(k, &l, &outs[i]));
    kt[r] = (now_s() - t0) * 1e6 / N;
    CHECK(kiln_stream_synchronize(s));
    for (int i = 0; i < N; i++)
      kiln_array_destroy(outs[i]);
    CU_CHECK(cu.ctx_synchronize());
    t0 = now_s();
    for (int i = 0; i < N; i++)
      CU_CHECK(cu.launch(fn, 1, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    rt[r] = (now_s() - t0) * 1e6 / N;
    CU_CHECK(cu.ctx_synchronize());
  }
  double km = median(kt, REPS), rm = median(rt, REPS);
  printf("host cost of a cached launch (new output array each time):\n");
  printf("  kiln_kernel_launch: %6.2f us   raw cuLaunchKernel, same cubin: "
         "%6.2f us   ratio %.2fx (goal <= 1.5x; CuPy: 6.9 us)\n",
         km, rm, km / rm);
  cu.mem_free(da);
  cu.mem_free(dout);
  free(cubin);
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
}

static void bench_copy(kiln_device *dev, kiln_stream *s) {
  const size_t n4 = (size_t)1 << 26; /* float4s: 1 GiB */
  const char *in[] = {"src"};
  kiln_kernel *k4 = make_kernel(
      "bench_copy_float4", in, 1, "dst", NULL,
      "uint i = thread_position_in_grid.x;\n"
      "((device float4*)dst)[i] = ((const device float4*)src)[i];\n");
  int64_t n = (int64_t)(n4 * 4);
  kiln_array *src = NULL;
  CHECK(kiln_array_create(dev, KILN_FLOAT32, 1, &n, &src));
  CHECK(kiln_array_fill(src, 1.5, s));
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, &src, 1, KILN_FLOAT32, 1, &n, (uint32_t)n4, 1, 256,
               1, dev, s);
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k4, &l, &o));
  float probe[4];
  int64_t one = 4, stride = 1;
  kiln_array *tail = NULL;
  CHECK(kiln_array_view(o, 1, &one, &stride, n - 4, &tail));
  CHECK(kiln_array_to_host(tail, probe, sizeof probe));
  if (probe[3] != 1.5f) {
    fprintf(stderr, "bench_cuda: copy kernel wrong\n");
    exit(1);
  }
  kiln_array_destroy(tail);
  kiln_array_destroy(o);
  double kt[7], rt[7];
  for (int r = 0; r < 7; r++) {
    CHECK(kiln_stream_synchronize(s));
    double t0 = now_s();
    CHECK(kiln_kernel_launch(k4, &l, &o));
    CHECK(kiln_stream_synchronize(s));
    kt[r] = now_s() - t0;
    kiln_array_destroy(o);
  }
  CUdeviceptr a, b;
  size_t bytes = n4 * 16;
  CU_CHECK(cu.mem_alloc(&a, bytes));
  CU_CHECK(cu.mem_alloc(&b, bytes));
  for (int r = 0; r < 7; r++) {
    CU_CHECK(cu.ctx_synchronize());
    double t0 = now_s();
    CU_CHECK(cu.memcpy_dtod(b, a, bytes));
    CU_CHECK(cu.ctx_synchronize());
    rt[r] = now_s() - t0;
  }
  double kb = 2.0 * bytes / median(kt, 7) * 1e-12;
  double rb = 2.0 * bytes / median(rt, 7) * 1e-12;
  printf("memory-bound: float4 copy of 1 GiB (bytes read + written):\n");
  printf("  kiln kernel: %.2f TB/s   cuMemcpyDtoD: %.2f TB/s   %.0f%% (goal "
         ">= 90%%)\n",
         kb, rb, 100.0 * kb / rb);
  cu.mem_free(a);
  cu.mem_free(b);
  kiln_array_destroy(src);
  kiln_kernel_destroy(k4);
}

static const char *gemm_src =
    "threadgroup float As[16][17];\n"
    "threadgroup float Bs[16][17];\n"
    "uint tx = thread_position_in_threadgroup.x;\n"
    "uint ty = thread_position_in_threadgroup.y;\n"
    "uint col = thread_position_in_grid.x;\n"
    "uint row = thread_position_in_grid.y;\n"
    "float acc = 0.0f;\n"
    "for (int k0 = 0; k0 < K; k0 += 16) {\n"
    "  As[ty][tx] = (row < (uint)M && k0 + tx < (uint)K) ? A[row * K + k0 + tx] : 0.0f;\n"
    "  Bs[ty][tx] = (col < (uint)N && k0 + ty < (uint)K) ? B[(k0 + ty) * N + col] : 0.0f;\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "  for (int k = 0; k < 16; ++k) acc = fma(As[ty][k], Bs[k][tx], acc);\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "}\n"
    "if (row < (uint)M && col < (uint)N) C[row * N + col] = acc;\n";

static void bench_gemm(kiln_device *dev, kiln_stream *s) {
  enum { D = 4096 };
  const char *in[] = {"A", "B", "M", "N", "K"};
  kiln_kernel *k = make_kernel("bench_gemm_tiled", in, 5, "C", NULL, gemm_src);
  float *a = malloc(sizeof(float) * D * D), *b = malloc(sizeof(float) * D * D);
  float *c = malloc(sizeof(float) * D * D);
  srand((unsigned)time(NULL));
  for (size_t i = 0; i < (size_t)D * D; i++) {
    a[i] = (float)((double)rand() / RAND_MAX - 0.5);
    b[i] = (float)((double)rand() / RAND_MAX - 0.5);
  }
  int64_t sh[2] = {D, D};
  int32_t d = D;
  kiln_array *args[5];
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, sh, a, &args[0]));
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, sh, b, &args[1]));
  for (int i = 2; i < 5; i++)
    CHECK(kiln_array_scalar(dev, KILN_INT32, &d, &args[i]));
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, args, 5, KILN_FLOAT32, 2, sh, D, D, 16, 16, dev, s);
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k, &l, &o));
  CHECK(kiln_array_to_host(o, c, sizeof(float) * D * D));
  kiln_array_destroy(o);
  for (int r = 0; r < 32; r++) {
    int i = rand() % D, j = rand() % D;
    double ref = 0;
    for (int q = 0; q < D; q++)
      ref += (double)a[(size_t)i * D + q] * b[(size_t)q * D + j];
    if (fabs(ref - c[(size_t)i * D + j]) > 1e-2) {
      fprintf(stderr, "bench_cuda: gemm C[%d,%d] = %g, expected %g\n", i, j,
              c[(size_t)i * D + j], ref);
      exit(1);
    }
  }
  double m = median_launch_s(k, &l, s, 5);
  printf("tiled GEMM (conformance kernel, 16x16 tiles) %d^3 float32: %.2f ms, "
         "%.2f TFLOP/s (SIMT float32 peak of an H100 SXM is about 67)\n",
         D, m * 1e3, 2.0 * D * D * D / m * 1e-12);
  for (int i = 0; i < 5; i++)
    kiln_array_destroy(args[i]);
  free(a);
  free(b);
  free(c);
  kiln_kernel_destroy(k);
}

static void bench_reduce(kiln_device *dev, kiln_stream *s) {
  /* One threadgroup of 1024 per 64K elements: each thread sums 64 values,
   * simd_sum, one partial per SIMD group, a final simd_sum, one atomic
   * add per group. */
  const char *in[] = {"x"};
  kiln_kernel *k = NULL;
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  const char *outn = "out";
  d.name = "bench_reduce";
  d.input_names = in;
  d.num_inputs = 1;
  d.output_names = &outn;
  d.num_outputs = 1;
  d.atomic_outputs = true;
  d.source =
      "threadgroup float partials[32];\n"
      "uint base = threadgroup_position_in_grid.x * 65536u;\n"
      "float s = 0.0f;\n"
      "for (uint j = thread_index_in_threadgroup; j < 65536u; j += 1024u)\n"
      "  s += x[base + j];\n"
      "s = simd_sum(s);\n"
      "if (thread_index_in_simdgroup == 0) "
      "partials[simdgroup_index_in_threadgroup] = s;\n"
      "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
      "if (simdgroup_index_in_threadgroup == 0) {\n"
      "  float p = simd_sum(partials[thread_index_in_simdgroup]);\n"
      "  if (thread_index_in_simdgroup == 0)\n"
      "    atomic_fetch_add_explicit(&out[0], p, memory_order_relaxed);\n"
      "}\n";
  CHECK(kiln_kernel_create(&d, &k));
  const int64_t n = (int64_t)1 << 28; /* 1 GiB of float32 */
  kiln_array *x = NULL;
  CHECK(kiln_array_create(dev, KILN_FLOAT32, 1, &n, &x));
  CHECK(kiln_array_fill(x, 0.25, s));
  int64_t one = 1;
  kiln_launch l;
  kiln_output_spec spec;
  setup_launch(&l, &spec, &x, 1, KILN_FLOAT32, 1, &one,
               (uint32_t)(n / 65536) * 1024u, 1, 1024, 1, dev, s);
  l.has_init_value = true;
  l.init_value = 0.0;
  kiln_array *o = NULL;
  CHECK(kiln_kernel_launch(k, &l, &o));
  float v = 0;
  CHECK(kiln_array_to_host(o, &v, sizeof v));
  kiln_array_destroy(o);
  if (fabs(v - 0.25 * (double)n) > 1e-3 * 0.25 * (double)n) {
    fprintf(stderr, "bench_cuda: reduction gave %g, expected %g\n", v,
            0.25 * (double)n);
    exit(1);
  }
  double m = median_launch_s(k, &l, s, 7);
  printf("simd_sum reduction of 1 GiB float32: %.3f ms, %.2f TB/s read\n",
         m * 1e3, (double)n * 4 / m * 1e-12);
  kiln_array_destroy(x);
  kiln_kernel_destroy(k);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--child-disk-load") == 0)
    return child_disk_load();
  kiln_device *dev = NULL;
  if (kiln_device_find("gpu", &dev) != KILN_OK) {
    printf("bench_cuda: no GPU, nothing to measure (%s)\n",
           kiln_gpu_unavailable_reason());
    return 0;
  }
  kiln_device_info info = {.struct_size = sizeof info};
  CHECK(kiln_device_get_info(dev, &info));
  printf("kiln %s, device gpu:%d: %s (%s, %d SMs)\n", kiln_version(),
         info.ordinal, info.name, info.arch, info.compute_units);
  load_driver();
  bench_compile_and_cache(dev, argv[0]);
  kiln_stream *s = NULL;
  CHECK(kiln_stream_create(dev, &s));
  bench_launch(dev, s);
  bench_copy(dev, s);
  bench_gemm(dev, s);
  bench_reduce(dev, s);
  CHECK(kiln_stream_synchronize(s));
  CHECK(kiln_stream_destroy(s));
  return 0;
}
