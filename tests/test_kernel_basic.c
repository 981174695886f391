/* Kernels end to end: a first launch, generated source, reuse with new
 * scalars and shapes. */
#include <stdlib.h>
#include <string.h>

#include "check.h"

void test_kernel_basic_copy(void) {
  kiln_kernel *k = KT_KERNEL("add_scaled", "a,b", "out", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i] = a[i] + 2.0f * b[i];\n",
                             0);
  int64_t n = 1000;
  float *a, *b;
  kiln_array *aa = kt_random_1d(KILN_FLOAT32, n, -5, 5, (void **)&a);
  kiln_array *ba = kt_random_1d(KILN_FLOAT32, n, -5, 5, (void **)&b);
  kt_call c;
  kt_call_init(&c, (uint32_t)n, 1, 1, 128, 1, 1); /* ragged last group */
  kt_call_in(&c, aa);
  kt_call_in(&c, ba);
  kt_call_out(&c, KILN_FLOAT32, 1, n, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  CHECK(kiln_array_dtype(out) == KILN_FLOAT32 && kiln_array_ndim(out) == 1 &&
            kiln_array_shape(out)[0] == n && kiln_array_is_contiguous(out),
        "output array as specified");
  double *got = kt_read_f64(out), *ref = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++)
    ref[i] = (double)(a[i] + 2.0f * b[i]);
  CHECK_CLOSE("out", got, ref, (size_t)n, 0, 0);
  free(got);
  free(ref);
  free(a);
  free(b);
  kiln_array_destroy(out);
  kiln_array_destroy(aa);
  kiln_array_destroy(ba);
  kiln_kernel_destroy(k);
  kiln_kernel_destroy(NULL);
}

void test_kernel_generate_source(void) {
  kiln_kernel *k = KT_KERNEL("gen_src", "a,s", "out",
                             "inline float twice(float v) { return 2 * v; }\n",
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i] = twice(a[i]) + s + a_shape[0];\n",
                             0);
  kiln_array *a = kt_random_1d(KILN_FLOAT32, 8, 0, 1, NULL);
  kiln_array *s = kt_scalar(KILN_FLOAT32, 1.5);
  kt_call c;
  kt_call_init(&c, 8, 1, 1, 8, 1, 1);
  kt_call_in(&c, a);
  kt_call_in(&c, s);
  kt_call_out(&c, KILN_FLOAT32, 1, 8, 0, 0);
  c.launch.inputs = c.in;
  c.launch.outputs = c.out;
  char *src = NULL;
  CHECK_OK(kiln_kernel_generate_source(k, &c.launch, &src));
  CHECK(src != NULL, "source returned");
  CHECK(strstr(src, "#line 1 \"body\"") != NULL, "body line marker");
  CHECK(strstr(src, "#line 1 \"header\"") != NULL, "header line marker");
  CHECK(strstr(src, "out[i] = twice(a[i]) + s + a_shape[0];") != NULL,
        "the body is in the source");
  /* As parameters of the body ("int* a_shape"), not as substrings of
   * prelude names such as kiln_cuda_strides. */
  CHECK(strstr(src, "int* a_shape") != NULL, "a_shape is a parameter");
  CHECK(strstr(src, "int64_t* a_strides") == NULL,
        "a_strides is not: unused");
  free(src);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  float av[8], got[8];
  CHECK_OK(kiln_array_to_host(a, av, sizeof av));
  CHECK_OK(kiln_array_to_host(out, got, sizeof got));
  for (int i = 0; i < 8; i++)
    CHECK(got[i] == (2 * av[i] + 1.5f) + 8.0f, "out[%d] = %g", i, got[i]);
  kiln_array_destroy(out);
  kiln_array_destroy(s);
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
}

/* One kernel, many launches: new scalar values, sizes and 0-d inputs of
 * several dtypes, without rebuilding. */
void test_kernel_reuse_and_scalars(void) {
  kiln_kernel *k = KT_KERNEL(
      "scalars", "a,fs,ds,is,bs,hs", "out", NULL,
      "uint i = thread_position_in_grid.x;\n"
      "float v = a[i] * fs + float(ds) + float(is);\n"
      "out[i] = bs ? v + float(hs) : -v;\n",
      0);
  kiln_cache_stats st0 = {.struct_size = sizeof st0};
  CHECK_OK(kiln_cache_get_stats(&st0));
  for (int round = 0; round < 4; round++) {
    int64_t n = kt_randint(1, 300);
    float *a;
    kiln_array *aa = kt_random_1d(KILN_FLOAT32, n, -2, 2, (void **)&a);
    float fs = (float)kt_randint(-4, 4);
    double ds = (double)kt_randint(-100, 100) * 0.25;
    int32_t is = (int32_t)kt_randint(-50, 50);
    bool bs = round % 2;
    double hs = kt_round_half(kt_uniform(-3, 3));
    kiln_array *s[5] = {kt_scalar(KILN_FLOAT32, fs), kt_scalar(KILN_FLOAT64, ds),
                        kt_scalar(KILN_INT32, is), kt_scalar(KILN_BOOL, bs),
                        kt_scalar(KILN_FLOAT16, hs)};
    kt_call c;
    kt_call_init(&c, (uint32_t)n, 1, 1, 64, 1, 1);
    kt_call_in(&c, aa);
    for (int j = 0; j < 5; j++)
      kt_call_in(&c, s[j]);
    kt_call_out(&c, KILN_FLOAT32, 1, n, 0, 0);
    kiln_array *out;
    KT_RUN(k, &c, &out);
    float *got = kt_read(out);
    for (int64_t i = 0; i < n; i++) {
      float v = a[i] * fs + (float)ds + (float)is;
      float want = bs ? v + (float)hs : -v;
      CHECK(got[i] == want, "round %d: out[%lld] = %g, expected %g", round,
            (long long)i, got[i], want);
    }
    free(got);
    free(a);
    kt_destroy_all(s, 5);
    kiln_array_destroy(out);
    kiln_array_destroy(aa);
  }
  kiln_cache_stats st1 = {.struct_size = sizeof st1};
  CHECK_OK(kiln_cache_get_stats(&st1));
  CHECK(st1.compiles + st1.disk_hits - st0.compiles - st0.disk_hits <= 1,
        "one build for four launches (compiles %llu, disk hits %llu)",
        (unsigned long long)(st1.compiles - st0.compiles),
        (unsigned long long)(st1.disk_hits - st0.disk_hits));
  kiln_kernel_destroy(k);
}
