/*
 * Limits of the CPU backend that a kernel can run into: a kernel whose
 * threads run as fibers (it uses barriers) and whose per-thread arrays
 * need more stack than a fiber has is refused with a clear error before
 * anything runs, instead of crashing the process; and the library goes on
 * working afterwards.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define KT_LIM_N 64

/* 300 KB of per-thread array, more than a fiber's 256 KiB stack. The
 * read index depends on an input so the array cannot be optimised away. */
static const char kt_big_frame_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float loc[75000];\n"
    "for (int j = 0; j < 75000; ++j)\n"
    "  loc[j] = x[(i + uint(j)) % 64u];\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "out[i] = loc[uint(idx[i]) % 75000u];\n";

/* The same shape with a small array: fits easily. */
static const char kt_small_frame_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float loc[1000];\n"
    "for (int j = 0; j < 1000; ++j)\n"
    "  loc[j] = x[(i + uint(j)) % 64u];\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "out[i] = loc[uint(idx[i]) % 1000u];\n";

/* Launches `k` on stream `s` over 64 threads in groups of 32; returns the
 * launch's status or, if the launch was accepted, the stream's. */
static kiln_status kt_lim_run(kiln_kernel *k, kiln_stream *s,
                              kiln_array *x, kiln_array *idx,
                              kiln_array **out) {
  kt_call c;
  kt_call_init(&c, KT_LIM_N, 1, 1, 32, 1, 1);
  c.launch.stream = s;
  kt_call_in(&c, x);
  kt_call_in(&c, idx);
  kt_call_out(&c, KILN_FLOAT32, 1, KT_LIM_N, 0, 0);
  *out = NULL;
  kiln_status st = kt_try_run(k, &c, out);
  if (st != KILN_OK)
    return st;
  return kiln_stream_synchronize(s);
}

void test_cpu_fiber_stack_limit(void) {
  if (strcmp(kt_device_name(), "cpu") != 0)
    kt_skip("fiber stacks are specific to the CPU backend");
  float xv[KT_LIM_N];
  int32_t iv[KT_LIM_N];
  for (int i = 0; i < KT_LIM_N; i++) {
    xv[i] = (float)kt_randint(-100, 100);
    iv[i] = (int32_t)kt_randint(0, 1 << 20);
  }
  int64_t n = KT_LIM_N;
  kiln_array *x = kt_array(KILN_FLOAT32, 1, &n, xv);
  kiln_array *idx = kt_array(KILN_INT32, 1, &n, iv);
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &s));

  /* The big frame: refused with the sentence, whichever call reports it. */
  kiln_kernel *big = KT_KERNEL("big_frame", "x,idx", "out", "",
                               kt_big_frame_body, 0);
  kiln_array *out = NULL;
  kiln_clear_error();
  CHECK_STATUS(kt_lim_run(big, s, x, idx, &out), KILN_ERROR_LAUNCH);
  CHECK_ERR_HAS("kernel 'big_frame' needs about ");
  CHECK_ERR_HAS("KiB of stack per thread (a large per-thread array?), more "
                "than the 256 KiB each thread has when it runs as a fiber; "
                "move large arrays to threadgroup or device memory");
  /* "about N KiB": the array alone is 293 KiB. */
  const char *about = strstr(kiln_last_error(), "needs about ");
  long kib = about ? strtol(about + strlen("needs about "), NULL, 10) : 0;
  CHECK(kib >= 293 && kib < 1024, "the message says %ld KiB", kib);
  kiln_array_destroy(out);
  CHECK_OK(kiln_stream_synchronize(s)); /* the error was reported once */

  /* The compile report says the same. */
  kt_call c;
  kt_call_init(&c, KT_LIM_N, 1, 1, 32, 1, 1);
  kt_call_in(&c, x);
  kt_call_in(&c, idx);
  kt_call_out(&c, KILN_FLOAT32, 1, KT_LIM_N, 0, 0);
  c.launch.inputs = c.in;
  c.launch.outputs = c.out;
  kiln_compile_report report;
  memset(&report, 0, sizeof report);
  report.struct_size = sizeof report;
  CHECK_OK(kiln_kernel_compile(big, &c.launch, NULL, "cpu", &report, NULL,
                               NULL, NULL));
  CHECK(report.local_memory >= 300000 && report.local_memory < (1u << 20),
        "the compile report gives %llu bytes of stack frame",
        (unsigned long long)report.local_memory);
  kiln_kernel_destroy(big);

  /* Everything still works: the small frame on the same stream, twice. */
  kiln_kernel *small = KT_KERNEL("small_frame", "x,idx", "out", "",
                                 kt_small_frame_body, 0);
  for (int round = 0; round < 2; round++) {
    CHECK_OK(kt_lim_run(small, s, x, idx, &out));
    float *got = kt_read(out);
    for (int i = 0; i < KT_LIM_N; i++) {
      float want = xv[(i + iv[i] % 1000) % 64];
      CHECK(got[i] == want, "small_frame out[%d] = %g, expected %g", i,
            got[i], want);
    }
    free(got);
    kiln_array_destroy(out);
  }
  kiln_kernel_destroy(small);
  CHECK_OK(kiln_stream_destroy(s));
  kiln_array_destroy(x);
  kiln_array_destroy(idx);
}
