/*
 * Errors a device lets a program recover from, and the one it does not.
 * Out of memory and launches over the device's limits leave kiln usable;
 * a kernel fault on a GPU (an illegal address) poisons the CUDA context,
 * and kiln must say so, naming the kernel, and answer every later call on
 * that device with KILN_ERROR_DEVICE_LOST instead of crashing or hanging.
 * Each test runs in its own process (runner.c), so a lost device is gone
 * with the test.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runner.h"

static const char *copy_body = "uint i = thread_position_in_grid.x;\n"
                               "out[i] = a[i] + 1.0f;\n";

/* A small kernel that must work after a recoverable error. */
static void check_still_usable(void) {
  kt_rng_reset("still_usable");
  kiln_kernel *k = KT_KERNEL("still_usable", "a", "out", NULL, copy_body, 0);
  void *host = NULL;
  kt_call c;
  kt_call_init(&c, 100, 1, 1, 32, 1, 1);
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, 100, -1, 1, &host));
  kt_call_out(&c, KILN_FLOAT32, 1, 100, 0, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[100];
  for (int i = 0; i < 100; i++)
    ref[i] = (double)((float *)host)[i] + 1.0;
  CHECK_CLOSE("after the error", got, ref, 100, 1e-6, 0);
  free(got);
  free(host);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 1);
  kiln_kernel_destroy(k);
}

void test_fault_out_of_memory(void) {
  kiln_device_info info = {.struct_size = sizeof info};
  CHECK_OK(kiln_device_get_info(kt_device(), &info));
  /* Twice the device's memory: refused, with a message, nothing made. */
  int64_t n = (int64_t)(info.memory_bytes / 2);
  kiln_array *a = NULL;
  int64_t shape[2] = {n, 4};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 2, shape, &a),
               KILN_ERROR_OUT_OF_MEMORY);
  CHECK(a == NULL, "no array on failure");
  CHECK_ERR_HAS("memory");
  check_still_usable();
}

void test_fault_grid_over_device_limits(void) {
  /* 70000 threadgroups in y: more than CUDA's 65535 blocks in y. The GPU
   * must refuse before anything runs and stay usable; the CPU runs it. */
  kiln_kernel *k = KT_KERNEL("tall_grid", "", "out", NULL,
                             "out[thread_position_in_grid.y] = "
                             "float(thread_position_in_grid.y);\n",
                             0);
  kt_call c;
  kt_call_init(&c, 1, 70000, 1, 1, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 70000, 0, 0);
  kiln_array *out = NULL;
  kiln_status st = kt_try_run(k, &c, &out);
  kiln_device_info info = {.struct_size = sizeof info};
  CHECK_OK(kiln_device_get_info(kt_device(), &info));
  if (info.kind == KILN_DEVICE_GPU) {
    CHECK(st != KILN_OK, "a grid of 70000 blocks in y is refused");
    CHECK(out == NULL, "no output on failure");
    CHECK_ERR_HAS("tall_grid");
  } else {
    CHECK_OK(st);
    double *got = kt_read_f64(out);
    for (int i = 0; i < 70000; i++)
      CHECK(got[i] == (double)i, "out[%d] = %g", i, got[i]);
    free(got);
    kiln_array_destroy(out);
  }
  kiln_kernel_destroy(k);
  check_still_usable();
}

static void note_status(void *user, kiln_status status) {
  *(kiln_status *)user = status;
}

void test_fault_illegal_address(void) {
  kiln_device_info info = {.struct_size = sizeof info};
  CHECK_OK(kiln_device_get_info(kt_device(), &info));
  if (info.kind != KILN_DEVICE_GPU)
    kt_skip("an illegal address in a CPU kernel is a fault of the process "
            "itself; only a GPU context can be lost and reported");
  /* Writes 2^40 elements past the output: far outside any allocation. */
  kiln_kernel *k = KT_KERNEL("wild_write", "", "out", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i + (1ull << 40)] = 1.0f;\n",
                             0);
  kt_call c;
  kt_call_init(&c, 64, 1, 1, 64, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
  kiln_array *out = NULL;
  kiln_status st = kt_try_run(k, &c, &out);
  if (st == KILN_OK) {
    kiln_status seen = KILN_OK;
    CHECK_OK(kiln_stream_add_callback(kt_stream(), note_status, &seen));
    st = kiln_stream_synchronize(kt_stream());
    CHECK(seen == KILN_ERROR_DEVICE_LOST,
          "the callback saw status %d, not KILN_ERROR_DEVICE_LOST", seen);
  }
  CHECK_STATUS(st, KILN_ERROR_DEVICE_LOST);
  CHECK_ERR_HAS("wild_write");
  /* Every later call on the device says the device is lost, at once. */
  kiln_array *a = NULL;
  int64_t n = 16;
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 1, &n, &a),
               KILN_ERROR_DEVICE_LOST);
  CHECK_STATUS(kiln_stream_synchronize(kt_stream()), KILN_ERROR_DEVICE_LOST);
  CHECK_ERR_HAS("reset");
  kiln_array_destroy(out);
  kiln_kernel_destroy(k);
  /* The CPU device is untouched by the GPU's loss. */
  kiln_device *cpu = NULL;
  CHECK_OK(kiln_device_find("cpu", &cpu));
  float v = 3.0f, back = 0;
  kiln_array *x = NULL;
  CHECK_OK(kiln_array_from_host(cpu, KILN_FLOAT32, 0, NULL, &v, &x));
  CHECK_OK(kiln_array_to_host(x, &back, sizeof back));
  CHECK(back == 3.0f, "the CPU still works");
  kiln_array_destroy(x);
}
