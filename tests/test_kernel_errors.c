/*
 * What a user is told (KERNEL-DIALECT.md §6): compile errors point at the
 * user's body or header line; a full `kernel void` source is refused;
 * wrong input counts, bad dtypes and impossible launch sizes are refused
 * before anything runs; no output is created on failure; a missing
 * compiler says so; and the library keeps working after every error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* A sentinel that a failed launch must leave alone (or set to NULL). */
static kiln_array *const kt_untouched = (kiln_array *)&kt_seed;

/* Runs a small kernel and checks its result: the library still works. */
static void kt_still_works(void) {
  kiln_kernel *k = KT_KERNEL("still_works", "a", "out", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i] = a[i] * 3.0f;\n",
                             0);
  float *a;
  kiln_array *aa = kt_random_1d(KILN_FLOAT32, 50, -2, 2, (void **)&a);
  kt_call c;
  kt_call_init(&c, 50, 1, 1, 32, 1, 1);
  kt_call_in(&c, aa);
  kt_call_out(&c, KILN_FLOAT32, 1, 50, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  float got[50];
  CHECK_OK(kiln_array_to_host(out, got, sizeof got));
  for (int i = 0; i < 50; i++)
    CHECK(got[i] == a[i] * 3.0f, "still_works out[%d]", i);
  free(a);
  kiln_array_destroy(out);
  kiln_array_destroy(aa);
  kiln_kernel_destroy(k);
}

/* Launches with one output and expects `want`; checks nothing was made. */
static void kt_expect_launch_error(kiln_kernel *k, kt_call *c,
                                   kiln_status want, const char *what) {
  kiln_array *outs[4] = {kt_untouched, kt_untouched, kt_untouched,
                         kt_untouched};
  kiln_clear_error();
  kiln_status s = kt_try_run(k, c, outs);
  CHECK(s == want, "%s: got %s, expected %s", what, kiln_status_string(s),
        kiln_status_string(want));
  CHECK(strncmp(kiln_last_error(), "[kiln_kernel_launch] ", 21) == 0,
        "%s: the message names kiln_kernel_launch", what);
  for (int i = 0; i < 4; i++)
    CHECK(outs[i] == kt_untouched || outs[i] == NULL,
          "%s: output %d was created on failure", what, i);
}

void test_kerr_compile_body_line(void) {
  kiln_kernel *k = KT_KERNEL("broken_body", "a", "out", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "float v = a[i];\n"
                             "v = v + no_such_variable;\n"
                             "out[i] = v;\n",
                             0);
  kiln_array *a = kt_random_1d(KILN_FLOAT32, 4, 0, 1, NULL);
  kt_call c;
  kt_call_init(&c, 4, 1, 1, 4, 1, 1);
  kt_call_in(&c, a);
  kt_call_out(&c, KILN_FLOAT32, 1, 4, 0, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_COMPILE, "compile error");
  CHECK_ERR_HAS("broken_body");
  CHECK_ERR_HAS("body:3:");
  CHECK_ERR_HAS("no_such_variable");
  /* Again: the failure is not cached as a success. */
  kt_expect_launch_error(k, &c, KILN_ERROR_COMPILE, "second launch");
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_compile_header_line(void) {
  kiln_kernel *k = KT_KERNEL("broken_header", "", "out",
                             "#include <metal_stdlib>\n"
                             "using namespace metal;\n"
                             "inline float helper(float v) {\n"
                             "  return v * undefined_factor;\n"
                             "}\n",
                             "out[thread_position_in_grid.x] = helper(1.0f);\n",
                             0);
  kt_call c;
  kt_call_init(&c, 4, 1, 1, 4, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 4, 0, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_COMPILE, "header error");
  CHECK_ERR_HAS("broken_header");
  CHECK_ERR_HAS("header:4");
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_full_signature(void) {
  const char *sources[] = {
      "kernel void add(device float* out [[buffer(0)]],\n"
      "                uint i [[thread_position_in_grid]]) {\n"
      "  out[i] = 1.0f;\n"
      "}\n",
      "// computes something\n"
      "[[kernel]] void add(device float* out, uint i) { out[i] = 1; }\n",
  };
  for (int s = 0; s < 2; s++) {
    kiln_kernel_desc d;
    kt_names nm;
    kt_desc(&d, &nm, "full_signature", "", "out", NULL, sources[s], 0);
    kiln_kernel *k = (kiln_kernel *)&kt_seed;
    kiln_clear_error();
    CHECK_STATUS(kiln_kernel_create(&d, &k), KILN_ERROR_INVALID_ARGUMENT);
    CHECK(k == (kiln_kernel *)&kt_seed || k == NULL, "no kernel on failure");
    CHECK_ERR_HAS("[kiln_kernel_create]");
    CHECK_ERR_HAS("full_signature");
    CHECK_ERR_HAS("body");
  }
  /* The word kernel in comments, strings and identifiers is fine. */
  kiln_kernel *k = KT_KERNEL("kernel_words", "", "out", NULL,
                             "// a kernel void comment\n"
                             "int kernel_size = 3; /* kernel void f() */\n"
                             "const char* s = \"kernel void g()\";\n"
                             "out[thread_position_in_grid.x] = "
                             "float(kernel_size) + float(s[0] == 'k');\n",
                             0);
  kt_call c;
  kt_call_init(&c, 2, 1, 1, 2, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 2, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  float got[2];
  CHECK_OK(kiln_array_to_host(out, got, sizeof got));
  CHECK(got[0] == 4.0f && got[1] == 4.0f, "kernel_words result %g %g",
        got[0], got[1]);
  kiln_array_destroy(out);
  kiln_kernel_destroy(k);
}

void test_kerr_bad_descriptions(void) {
  struct {
    const char *what, *inputs, *outputs, *body;
  } bad[] = {
      {"no outputs", "a", "", "int x = 0;"},
      {"duplicate names", "a,a", "out", "int x = 0;"},
      {"input and output share a name", "a", "a", "int x = 0;"},
      {"name is not an identifier", "a b", "out", "int x = 0;"},
      {"name starts with a digit", "1a", "out", "int x = 0;"},
      {"name is an attribute", "thread_position_in_grid", "out", "int x;"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_kernel_desc d;
    kt_names nm;
    kt_desc(&d, &nm, "bad_desc", bad[i].inputs, bad[i].outputs, NULL,
            bad[i].body, 0);
    kiln_kernel *k = (kiln_kernel *)&kt_seed;
    kiln_status s = kiln_kernel_create(&d, &k);
    if (s == KILN_OK) {
      /* Some checks may only happen at launch; it must fail there. */
      kt_call c;
      kt_call_init(&c, 1, 1, 1, 1, 1, 1);
      kiln_array *in = kt_random_1d(KILN_FLOAT32, 1, 0, 1, NULL);
      for (int j = 0; j < d.num_inputs; j++)
        kt_call_in(&c, in);
      for (int j = 0; j < d.num_outputs; j++)
        kt_call_out(&c, KILN_FLOAT32, 1, 1, 0, 0);
      kiln_array *outs[4];
      CHECK(kt_try_run(k, &c, outs) == KILN_ERROR_INVALID_ARGUMENT,
            "%s: refused neither at create nor at launch", bad[i].what);
      kiln_array_destroy(in);
      kiln_kernel_destroy(k);
    } else {
      CHECK(s == KILN_ERROR_INVALID_ARGUMENT, "%s: got %s", bad[i].what,
            kiln_status_string(s));
      CHECK(k == (kiln_kernel *)&kt_seed || k == NULL, "%s: out set",
            bad[i].what);
    }
  }
  kiln_kernel_desc d;
  kt_names nm;
  kt_desc(&d, &nm, "no_source", "", "out", NULL, NULL, 0);
  kiln_kernel *k = NULL;
  CHECK(kiln_kernel_create(&d, &k) == KILN_ERROR_INVALID_ARGUMENT,
        "NULL source refused");
  CHECK(kiln_kernel_create(NULL, &k) == KILN_ERROR_INVALID_ARGUMENT,
        "NULL desc refused");
  kt_still_works();
}

static kiln_kernel *kt_two_input_kernel(void) {
  return KT_KERNEL("two_inputs", "a,b", "out", NULL,
                   "uint i = thread_position_in_grid.x;\n"
                   "out[i] = a[i] + b[i];\n",
                   0);
}

void test_kerr_input_count(void) {
  kiln_kernel *k = kt_two_input_kernel();
  kiln_array *a = kt_random_1d(KILN_FLOAT32, 8, 0, 1, NULL);
  kt_call c;
  kt_call_init(&c, 8, 1, 1, 8, 1, 1);
  kt_call_in(&c, a);
  kt_call_out(&c, KILN_FLOAT32, 1, 8, 0, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "one input of two");
  CHECK_ERR_HAS("two_inputs");
  CHECK_ERR_HAS("2");
  kt_call_in(&c, a);
  kt_call_in(&c, a);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "three inputs");
  kt_call_init(&c, 8, 1, 1, 8, 1, 1);
  kt_call_in(&c, a);
  kt_call_in(&c, a);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "no outputs");
  kt_call_out(&c, KILN_FLOAT32, 1, 8, 0, 0);
  kt_call_out(&c, KILN_FLOAT32, 1, 8, 0, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "two outputs");
  c.launch.num_outputs = 1;
  c.in[1] = NULL;
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "NULL input");
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_bad_dtype(void) {
  kiln_kernel *k = kt_two_input_kernel();
  kiln_array *a = kt_random_1d(KILN_FLOAT32, 8, 0, 1, NULL);
  kt_call c;
  kt_call_init(&c, 8, 1, 1, 8, 1, 1);
  kt_call_in(&c, a);
  kt_call_in(&c, a);
  kt_call_out(&c, KILN_DTYPE_COUNT, 1, 8, 0, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "bad dtype");
  c.out[0].dtype = (kiln_dtype)-3;
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "negative dtype");
  c.out[0].dtype = KILN_FLOAT32;
  c.out[0].shape[0] = -1;
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "negative shape");
  c.out[0].shape[0] = 8;
  c.out[0].ndim = KILN_MAX_NDIM + 1;
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, "ndim 17");
  c.out[0].ndim = 1;
  kt_call_targ(&c, "T", KILN_TEMPLATE_DTYPE, KILN_DTYPE_COUNT, 0);
  kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT,
                         "template dtype invalid");
  kiln_array_destroy(a);
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_launch_sizes(void) {
  kiln_kernel *k = KT_KERNEL("sizes", "", "out", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "if (i < 64) out[i] = float(i);\n",
                             0);
  struct {
    const char *what, *mention;
    uint32_t g[3], t[3];
  } bad[] = {
      {"threadgroup of 1056 threads", "1024", {64, 64, 1}, {32, 33, 1}},
      {"threadgroup of 2048 threads", "1024", {2048, 1, 1}, {2048, 1, 1}},
      {"threadgroup 16x16x8", "1024", {16, 16, 8}, {16, 16, 8}},
      {"grid.x is 0", "grid", {0, 1, 1}, {1, 1, 1}},
      {"grid.z is 0", "grid", {64, 1, 0}, {1, 1, 1}},
      {"threadgroup.y is 0", "threadgroup", {64, 2, 1}, {32, 0, 1}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kt_call c;
    kt_call_init(&c, bad[i].g[0], bad[i].g[1], bad[i].g[2], bad[i].t[0],
                 bad[i].t[1], bad[i].t[2]);
    kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
    kt_expect_launch_error(k, &c, KILN_ERROR_INVALID_ARGUMENT, bad[i].what);
    CHECK(strstr(kiln_last_error(), bad[i].mention) != NULL,
          "%s: the message should mention \"%s\"", bad[i].what,
          bad[i].mention);
  }
  /* Clipping comes first: a 2048-thread threadgroup on a 64-thread grid is
   * a 64-thread group (Metal's rule). */
  kt_call c;
  kt_call_init(&c, 64, 1, 1, 2048, 4, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  float got[64];
  CHECK_OK(kiln_array_to_host(out, got, sizeof got));
  for (int i = 0; i < 64; i++)
    CHECK(got[i] == (float)i, "clipped launch out[%d] = %g", i, got[i]);
  kiln_array_destroy(out);
  kt_call_init(&c, 64, 1, 1, 64, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
  CHECK(kt_try_run(k, &c, NULL) == KILN_ERROR_INVALID_ARGUMENT,
        "NULL outputs pointer refused");
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_threadgroup_memory(void) {
  kiln_kernel *k = KT_KERNEL(
      "too_much_shared", "", "out", NULL,
      "threadgroup float big[1 << 20];\n" /* 4 MiB */
      "big[thread_index_in_threadgroup] = 1.0f;\n"
      "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
      "out[thread_position_in_grid.x] = big[0];\n",
      0);
  kt_call c;
  kt_call_init(&c, 32, 1, 1, 32, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 32, 0, 0);
  kiln_array *outs[1] = {kt_untouched};
  kiln_status s = kt_try_run(k, &c, outs);
  CHECK(s != KILN_OK, "4 MiB of threadgroup memory was accepted");
  CHECK(outs[0] == kt_untouched || outs[0] == NULL, "no output on failure");
  CHECK_ERR_HAS("too_much_shared");
  CHECK_ERR_HAS("threadgroup memory");
  kiln_kernel_destroy(k);
  kt_still_works();
}

void test_kerr_missing_compiler(void) {
  if (strcmp(kt_device_name(), "cpu") != 0)
    kt_skip("KILN_CXX only matters to the CPU backend");
  char *dir = kt_tempdir("nocxx");
  setenv("KILN_CACHE_DIR", dir, 1); /* nothing cached: must compile */
  setenv("KILN_CXX", "/nonexistent/c++", 1);
  kiln_kernel *k = KT_KERNEL("needs_compiler", "", "out", NULL,
                             "out[thread_position_in_grid.x] = 2.0f;\n", 0);
  kt_call c;
  kt_call_init(&c, 4, 1, 1, 4, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 4, 0, 0);
  kiln_array *outs[1] = {kt_untouched};
  kiln_status s = kt_try_run(k, &c, outs);
  CHECK(s == KILN_ERROR_NOT_FOUND || s == KILN_ERROR_COMPILE,
        "missing compiler gave %s", kiln_status_string(s));
  CHECK(outs[0] == kt_untouched || outs[0] == NULL, "no output on failure");
  CHECK_ERR_HAS("/nonexistent/c++");
  CHECK(strstr(kiln_last_error(), "compiler") ||
            strstr(kiln_last_error(), "KILN_CXX"),
        "the message says the compiler is missing");
  kiln_kernel_destroy(k);
  kt_rmtree(dir);
  free(dir);
}
