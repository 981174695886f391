/*
 * kiln_kernel_compile and `kiln compile`: compiling for a named target
 * without launching (the CPU always; CUDA architectures when NVRTC is
 * present, no GPU needed), the compile report, compile-error mapping, bad
 * targets, and the CLI's files and resource report. Also the checks that
 * kiln_kernel_create shares with the dialect (names) and the launch-time
 * refusal of atomic outputs of a dtype Metal has no atomics for.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#ifndef KILN_CLI_PATH
#define KILN_CLI_PATH "kiln"
#endif

static const char twice_body[] = "uint i = thread_position_in_grid.x;\n"
                                 "y[i] = 2 * x[i];\n";

/* A per-thread array indexed by data: CUDA must keep it in local memory. */
static const char local_array_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float a[64];\n"
    "for (int k = 0; k < 64; k++) a[k] = x[(i + k) % 256];\n"
    "uint j = uint(x[i]) % 64;\n"
    "y[i] = a[j] + a[(j * 7) % 64];\n";

static kiln_compile_report kt_report(void) {
  kiln_compile_report r;
  memset(&r, 0x5a, sizeof r); /* every field must be written */
  r.struct_size = sizeof r;
  return r;
}

/* A launch of `twice` over n float32 elements, inputs as specs. */
static void kt_twice_launch(kiln_launch *l, kiln_array_spec *in,
                            kiln_output_spec *out, int64_t n) {
  kiln_launch_init(l);
  memset(in, 0, sizeof *in);
  memset(out, 0, sizeof *out);
  in->dtype = KILN_FLOAT32;
  in->ndim = 1;
  in->shape[0] = n;
  *out = *in;
  l->num_inputs = 1;
  l->outputs = out;
  l->num_outputs = 1;
}

/* Skips the test unless NVRTC can compile for sm_90a here. */
static void kt_need_nvrtc(void) {
  kiln_kernel *k = KT_KERNEL("probe", "x", "y", NULL, twice_body, 0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 8);
  kiln_status st =
      kiln_kernel_compile(k, &l, &in, "sm_90a", NULL, NULL, NULL, NULL);
  kiln_kernel_destroy(k);
  if (st == KILN_ERROR_UNSUPPORTED)
    kt_skip("NVRTC cannot compile for sm_90a here: %s", kiln_last_error());
  CHECK_OK(st);
}

static bool kt_is_elf(const void *data, size_t size) {
  return size > 4 && memcmp(data, "\x7f" "ELF", 4) == 0;
}

/* ---- the library --------------------------------------------------------- */

void test_compile_cpu_report(void) {
  kiln_kernel *k = KT_KERNEL("twice", "x", "y", NULL, twice_body, 0);
  kiln_array *x = kt_random_1d(KILN_FLOAT32, 64, -1, 1, NULL);
  kt_call c;
  kt_call_init(&c, 64, 1, 1, 32, 1, 1);
  kt_call_in(&c, x);
  kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
  c.launch.inputs = c.in;
  c.launch.outputs = c.out;
  kiln_cache_stats before = {sizeof before, 0, 0, 0, 0};
  CHECK_OK(kiln_cache_get_stats(&before));

  kiln_compile_report r = kt_report();
  char *src = NULL;
  void *bin = NULL;
  size_t size = 0;
  CHECK_OK(kiln_kernel_compile(k, &c.launch, NULL, "cpu", &r, &src, &bin,
                               &size));
  CHECK(strcmp(r.target, "cpu") == 0, "target is '%s'", r.target);
  CHECK(r.registers == -1, "a CPU has no register count (%d)", r.registers);
  CHECK(r.spill_store_bytes == 0 && r.spill_load_bytes == 0, "no spills");
  CHECK(r.compile_ms > 0 && r.compile_ms < 600000, "compile_ms %g",
        r.compile_ms);
  CHECK(r.struct_size == sizeof r, "struct_size kept");
  CHECK(src != NULL && strstr(src, "y[i] = 2 * x[i];") != NULL,
        "the source holds the body");
  CHECK(kt_is_elf(bin, size), "the artefact is a shared object (%zu bytes)",
        size);

  /* The same source as kiln_kernel_generate_source for the CPU device. */
  char *gen = NULL;
  CHECK_OK(kiln_kernel_generate_source(k, &c.launch, &gen));
  if (strcmp(kt_device_name(), "cpu") == 0)
    CHECK(strcmp(gen, src) == 0, "compile and generate_source agree");
  free(gen);
  free(src);
  free(bin);

  /* NULL target: the launch device's own. */
  r = kt_report();
  CHECK_OK(kiln_kernel_compile(k, &c.launch, NULL, NULL, &r, NULL, NULL,
                               NULL));
  kiln_device_info info = {.struct_size = sizeof info};
  CHECK_OK(kiln_device_get_info(kt_device(), &info));
  const char *own = info.kind == KILN_DEVICE_CPU ? "cpu" : info.arch;
  CHECK(strcmp(r.target, own) == 0, "target '%s', expected '%s'", r.target,
        own);

  /* The cache is bypassed: nothing counted, nothing launched. */
  kiln_cache_stats after = {sizeof after, 0, 0, 0, 0};
  CHECK_OK(kiln_cache_get_stats(&after));
  CHECK(after.compiles == before.compiles &&
            after.memory_hits == before.memory_hits,
        "kiln_kernel_compile does not touch the cache");
  kiln_array_destroy(x);
  kiln_kernel_destroy(k);
}

void test_compile_specs_and_outputs(void) {
  kiln_kernel *k = KT_KERNEL("scaled", "x,s", "y", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "y[i] = s * x[i] + float(x_shape[0]);\n",
                             0);
  kiln_array_spec in[2];
  kiln_output_spec out;
  kiln_launch l;
  kt_twice_launch(&l, &in[0], &out, 100);
  memset(&in[1], 0, sizeof in[1]);
  in[1].dtype = KILN_FLOAT32; /* 0-d: a scalar */
  l.num_inputs = 2;
  char *src = NULL;
  CHECK_OK(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL));
  CHECK(strstr(src, "x_shape") != NULL, "x_shape is bound");
  free(src);

  /* All-or-nothing: failures leave the outputs alone. */
  char *sentinel = (char *)"untouched";
  src = sentinel;
  kiln_compile_report r = kt_report();
  r.struct_size = 0;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", &r, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("struct_size");
  void *bin = sentinel;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, &bin, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("binary_size");
  CHECK(src == sentinel && bin == sentinel, "outputs untouched");

  /* Validated like a launch: counts (with singular/plural), dtypes. */
  l.num_inputs = 1;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("expects 2 inputs (x, s)");
  CHECK_ERR_HAS("[kiln_kernel_compile]");
  l.num_inputs = 2;
  l.num_outputs = 2;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("expects 1 output (y) but the launch passes 2");
  l.num_outputs = 1;
  in[0].dtype = (kiln_dtype)99;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("input 'x'");
  in[0].dtype = KILN_FLOAT32;
  in[0].ndim = KILN_MAX_NDIM + 1;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  in[0].ndim = 1;
  /* An output too large to address names the dimension that overflows. */
  out.ndim = 3;
  out.shape[0] = 1 << 20;
  out.shape[1] = (int64_t)1 << 50;
  out.shape[2] = 2;
  CHECK_STATUS(kiln_kernel_compile(k, &l, in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("dimension 1");
  CHECK_ERR_HAS("output 'y'");
  CHECK(src == sentinel, "outputs untouched");
  CHECK_STATUS(kiln_kernel_compile(NULL, &l, in, "cpu", NULL, NULL, NULL,
                                   NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_kernel_compile(k, NULL, in, "cpu", NULL, NULL, NULL,
                                   NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  kiln_kernel_destroy(k);
}

void test_compile_bad_target(void) {
  kiln_kernel *k = KT_KERNEL("twice", "x", "y", NULL, twice_body, 0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 8);
  static const char *const bad[] = {"gfx90a", "", "CPU", "metal",
                                    "cpu-and-then-a-very-long-name-indeed"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_STATUS(kiln_kernel_compile(k, &l, &in, bad[i], NULL, NULL, NULL,
                                     NULL),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("not a compile target");
    CHECK_ERR_HAS("\"cpu\"");
    CHECK_ERR_HAS("sm_90a");
  }
  /* A malformed CUDA name is the CUDA backend's to refuse. */
  kiln_status st =
      kiln_kernel_compile(k, &l, &in, "sm_x", NULL, NULL, NULL, NULL);
  CHECK(st == KILN_ERROR_INVALID_ARGUMENT || st == KILN_ERROR_UNSUPPORTED,
        "sm_x is refused (status %d)", (int)st);
  CHECK_ERR_HAS("sm_x");
  kiln_kernel_destroy(k);
}

void test_compile_error_mapping(void) {
  kiln_kernel *k = KT_KERNEL("broken", "x", "y", "// a header line\n",
                             "uint i = thread_position_in_grid.x;\n"
                             "float v = x[i];\n"
                             "y[i] = v + no_such_variable;\n",
                             0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 8);
  char *src = (char *)"untouched";
  CHECK_STATUS(kiln_kernel_compile(k, &l, &in, "cpu", NULL, &src, NULL, NULL),
               KILN_ERROR_COMPILE);
  CHECK_ERR_HAS("[kiln_kernel_compile] kernel 'broken' failed to compile:");
  CHECK_ERR_HAS("body:3:");
  CHECK_ERR_HAS("no_such_variable");
  CHECK(strcmp(src, "untouched") == 0, "no source on failure");
  kiln_kernel_destroy(k);
}

void test_compile_cuda_target(void) {
  kt_need_nvrtc();
  kiln_kernel *k = KT_KERNEL("twice", "x", "y", NULL, twice_body, 0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 256);
  kiln_compile_report r = kt_report();
  char *src = NULL;
  void *bin = NULL;
  size_t size = 0;
  CHECK_OK(kiln_kernel_compile(k, &l, &in, "sm_90a", &r, &src, &bin, &size));
  CHECK(strcmp(r.target, "sm_90a") == 0, "target '%s'", r.target);
  CHECK(r.registers > 0 && r.registers <= 255, "registers %d", r.registers);
  CHECK(r.local_memory == 0 && r.spill_store_bytes == 0, "no local memory");
  CHECK(r.compile_ms > 0, "compile_ms %g", r.compile_ms);
  CHECK(kt_is_elf(bin, size), "the artefact is a cubin (%zu bytes)", size);
  CHECK(strstr(src, "y[i] = 2 * x[i];") != NULL, "the source holds the body");
  free(src);
  free(bin);

  /* Compile errors point into the body on CUDA too. */
  kiln_kernel *bad = KT_KERNEL("broken_cuda", "x", "y", NULL,
                               "uint i = thread_position_in_grid.x;\n"
                               "y[i] = x[i] + no_such_variable;\n",
                               0);
  CHECK_STATUS(kiln_kernel_compile(bad, &l, &in, "sm_90a", NULL, NULL, NULL,
                                   NULL),
               KILN_ERROR_COMPILE);
  CHECK_ERR_HAS("kernel 'broken_cuda' failed to compile:");
  /* NVRTC writes body(2); the log mapper may normalise it to body:2. */
  CHECK(strstr(kiln_last_error(), "body(2)") != NULL ||
            strstr(kiln_last_error(), "body:2") != NULL,
        "the error points at line 2 of the body");
  CHECK_ERR_HAS("no_such_variable");
  kiln_kernel_destroy(bad);
  kiln_kernel_destroy(k);
}

void test_compile_cuda_local_memory(void) {
  kt_need_nvrtc();
  kiln_kernel *k = KT_KERNEL("local_array", "x", "y", NULL, local_array_body,
                             0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 256);
  kiln_compile_report r = kt_report();
  CHECK_OK(kiln_kernel_compile(k, &l, &in, "sm_90a", &r, NULL, NULL, NULL));
  CHECK(r.local_memory > 0 || r.spill_store_bytes > 0,
        "a dynamically indexed array uses local memory (frame %llu, spills "
        "%llu)",
        (unsigned long long)r.local_memory,
        (unsigned long long)r.spill_store_bytes);
  kiln_kernel_destroy(k);
}

/* ---- kiln_kernel_create's checks ----------------------------------------- */

static void kt_expect_create_error(const char *name, const char *inputs,
                                   const char *outputs, const char *body,
                                   const char *what) {
  kiln_kernel_desc d;
  kt_names nm;
  kt_desc(&d, &nm, name, inputs, outputs, NULL, body, 0);
  kiln_kernel *k = (kiln_kernel *)&d; /* must stay untouched */
  kiln_status st = kiln_kernel_create(&d, &k);
  CHECK(st == KILN_ERROR_INVALID_ARGUMENT,
        "create should refuse %s (status %d)", what, (int)st);
  CHECK(k == (kiln_kernel *)&d, "create left *out alone (%s)", what);
  CHECK_ERR_HAS("[kiln_kernel_create]");
}

void test_kerr_create_names(void) {
  const char *body = "y[0] = x[0];";
  kt_expect_create_error("k", "float", "y", body, "a keyword input");
  CHECK_ERR_HAS("'float'");
  CHECK_ERR_HAS("keyword");
  kt_expect_create_error("k", "x", "device", body, "a Metal keyword output");
  kt_expect_create_error("k", "thread_position_in_grid", "y", body,
                         "an attribute name");
  CHECK_ERR_HAS("thread attribute");
  kt_expect_create_error("k", "kiln_x", "y", body, "a reserved prefix");
  kt_expect_create_error("k", "x", "x", body, "a duplicate");
  CHECK_ERR_HAS("'x'");
  kt_expect_create_error("k", "1x", "y", body, "a non-identifier");
  kt_expect_create_error("k", "x,x_shape", "y", "y[0] = x_shape[0];",
                         "a clash with a generated name");
  CHECK_ERR_HAS("x_shape");
  kt_expect_create_error("", "x", "y", body, "an empty kernel name");
  CHECK_ERR_HAS("no name");
  kt_expect_create_error("two\nlines", "x", "y", body, "a control character");
  CHECK_ERR_HAS("printable");
  /* What create accepts: a name with spaces and UTF-8, x_shape unused. */
  kiln_kernel *k =
      KT_KERNEL("my kernel \xc3\xa9", "x,x_shape", "y", NULL, body, 0);
  kiln_kernel_destroy(k);
}

void test_kerr_atomic_output_dtype(void) {
  kiln_kernel *k = KT_KERNEL("atomic_add", "x", "y", NULL,
                             "uint i = thread_position_in_grid.x;\n"
                             "atomic_fetch_add_explicit(&y[0], x[i], "
                             "memory_order_relaxed);\n",
                             KT_ATOMIC);
  kiln_array *x = kt_random_1d(KILN_FLOAT16, 8, 0, 1, NULL);
  kt_call c;
  kt_call_init(&c, 8, 1, 1, 8, 1, 1);
  kt_call_in(&c, x);
  kt_call_out(&c, KILN_FLOAT16, 1, 1, 0, 0);
  kiln_array *outs[1] = {NULL};
  CHECK_STATUS(kt_try_run(k, &c, outs), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("output 'y' is float16");
  CHECK_ERR_HAS("int32, uint32 and float32");
  CHECK(outs[0] == NULL, "no output on failure");
  CHECK_STATUS(kiln_kernel_compile(k, &c.launch, NULL, "cpu", NULL, NULL,
                                   NULL, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("float16");
  kiln_array_destroy(x);
  kiln_kernel_destroy(k);
}

/* ---- the CLI ------------------------------------------------------------- */

/* A float32 .npy file of n elements whose header says so; the data is
 * deliberately missing, since `kiln compile` reads headers only. */
static void kt_npy_header_only(const char *path, int64_t n) {
  char dict[128];
  int dl = snprintf(dict, sizeof dict,
                    "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (%lld,), }",
                    (long long)n);
  char file[256];
  size_t total = 10 + (size_t)dl + 1;
  size_t pad = (64 - total % 64) % 64;
  memcpy(file, "\x93NUMPY\x01\x00", 8);
  size_t hl = (size_t)dl + pad + 1;
  file[8] = (char)(hl & 0xff);
  file[9] = (char)(hl >> 8);
  memcpy(file + 10, dict, (size_t)dl);
  memset(file + 10 + dl, ' ', pad);
  file[10 + (size_t)dl + pad] = '\n';
  CHECK(kt_write_file(path, file, 10 + (size_t)dl + pad + 1), "write %s",
        path);
}

/* Writes the body and input files into a fresh directory. */
static char *kt_compile_dir(const char *tag, const char *body) {
  char *dir = kt_tempdir(tag);
  char path[4096];
  snprintf(path, sizeof path, "%s/body.metal", dir);
  CHECK(kt_write_file(path, body, strlen(body)), "write %s", path);
  snprintf(path, sizeof path, "%s/x.npy", dir);
  kt_npy_header_only(path, 256);
  return dir;
}

static bool kt_file_exists(const char *dir, const char *name, size_t *size) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  void *data = kt_read_file(path, size);
  free(data);
  return data != NULL;
}

/* `kiln compile` for `target` with the flags of `kiln run`. */
static kt_cli kt_compile_cli(const char *dir, const char *name,
                             const char *target) {
  char src[4096], in[4096];
  snprintf(src, sizeof src, "%s/body.metal", dir);
  snprintf(in, sizeof in, "x=%s/x.npy", dir);
  return kt_kiln("compile", "--name", name, "--source", src, "--input", in,
                 "--output", "y:float32:256", "--grid", "256",
                 "--threadgroup", "64", "--target", target, "--out-dir", dir,
                 NULL);
}

void test_cli_compile_cpu(void) {
  char *dir = kt_compile_dir("compile-cpu", twice_body);
  kt_cli r = kt_compile_cli(dir, "twice", "cpu");
  CHECK(r.rc == 0, "kiln compile --target cpu exits 0 (%d): %s", r.rc, r.err);
  CHECK(strstr(r.out, "registers per thread") != NULL, "stdout: %s", r.out);
  CHECK(strstr(r.out, "shared (threadgroup) memory") != NULL, "%s", r.out);
  CHECK(strstr(r.out, "local memory") != NULL, "%s", r.out);
  CHECK(strstr(r.out, "spill") != NULL, "%s", r.out);
  CHECK(strstr(r.out, " ms") != NULL, "compile time printed: %s", r.out);
  CHECK(strstr(r.err, "warning") == NULL, "no warning on the CPU: %s", r.err);
  size_t size = 0;
  CHECK(kt_file_exists(dir, "twice.cpp", &size) && size > 0, "twice.cpp");
  CHECK(kt_file_exists(dir, "twice.so", &size) && size > 0, "twice.so");
  /* body, x.npy, two results: no temporaries left. */
  CHECK(kt_dir_count(dir) == 4, "%d entries in the directory",
        kt_dir_count(dir));
  kt_cli_free(&r);

  /* The help lists the command. */
  r = kt_kiln("--help", NULL);
  CHECK(r.rc == 0 && strstr(r.out, "compile") != NULL, "help: %s", r.out);
  kt_cli_free(&r);
  r = kt_kiln("help", "compile", NULL);
  CHECK(r.rc == 0 && strstr(r.out, "--target") != NULL, "%s", r.out);
  kt_cli_free(&r);
  kt_rmtree(dir);
  free(dir);
}

void test_cli_compile_cuda(void) {
  kt_need_nvrtc();
  char *dir = kt_compile_dir("compile-cuda", twice_body);
  kt_cli r = kt_compile_cli(dir, "twice", "sm_90a");
  CHECK(r.rc == 0, "kiln compile --target sm_90a exits 0 (%d): %s", r.rc,
        r.err);
  const char *regs = strstr(r.out, "registers per thread:");
  CHECK(regs != NULL, "stdout: %s", r.out);
  regs += strlen("registers per thread:");
  CHECK(atoi(regs) > 0, "a register count: %s", r.out);
  CHECK(strstr(r.err, "warning") == NULL, "no warning: %s", r.err);
  size_t size = 0;
  CHECK(kt_file_exists(dir, "twice.cu", &size) && size > 0, "twice.cu");
  CHECK(kt_file_exists(dir, "twice.cubin", &size) && size > 0, "twice.cubin");
  /* Programmatic dependent launch (cuda_backend.c) is only safe because
   * the entry waits for the grids before it ahead of any memory access:
   * griddepcontrol.wait, then the trigger, before the body's setup. */
  char path[4096];
  snprintf(path, sizeof path, "%s/twice.cu", dir);
  char *cu = kt_read_file(path, &size);
  CHECK(cu != NULL, "read %s", path);
  /* (the entry is named after the kernel, for profilers) */
  const char *entry = strstr(cu, "kiln_k_twice(");
  const char *wait = entry ? strstr(entry, "griddepcontrol.wait;") : NULL;
  const char *trig =
      wait ? strstr(wait, "griddepcontrol.launch_dependents;") : NULL;
  const char *first = trig ? strstr(trig, "threadIdx.x") : NULL;
  CHECK(entry && wait && trig && first,
        "twice.cu's entry kiln_k_twice begins with griddepcontrol.wait, "
        "then launch_dependents, then its own code");
  free(cu);
  kt_cli_free(&r);
  kt_rmtree(dir);
  free(dir);

  dir = kt_compile_dir("compile-local", local_array_body);
  r = kt_compile_cli(dir, "local_array", "sm_90a");
  CHECK(r.rc == 0, "exit 0 (%d): %s", r.rc, r.err);
  CHECK(strstr(r.err, "warning") != NULL, "a warning: %s", r.err);
  CHECK(strstr(r.err, "local memory") != NULL, "%s", r.err);
  CHECK(strstr(r.err, "dynamically indexed per-thread array") != NULL, "%s",
        r.err);
  kt_cli_free(&r);
  kt_rmtree(dir);
  free(dir);
}

void test_cli_compile_errors(void) {
  char *dir = kt_compile_dir("compile-errors",
                             "uint i = thread_position_in_grid.x;\n"
                             "y[i] = x[i] + no_such_variable;\n");
  kt_cli r = kt_compile_cli(dir, "broken", "cpu");
  CHECK(r.rc == 1, "a compile error exits 1 (%d)", r.rc);
  CHECK(strstr(r.err, "body:2:") != NULL, "stderr: %s", r.err);
  CHECK(kt_dir_count(dir) == 2, "nothing written (%d entries)",
        kt_dir_count(dir));
  kt_cli_free(&r);
  r = kt_compile_cli(dir, "broken", "gfx90a");
  CHECK(r.rc == 2 && strstr(r.err, "--target") != NULL, "bad target: %s",
        r.err);
  kt_cli_free(&r);
  r = kt_compile_cli(dir, "a/b", "cpu");
  CHECK(r.rc == 2 && strstr(r.err, "'/'") != NULL, "bad name: %s", r.err);
  kt_cli_free(&r);
  r = kt_kiln("compile", "--name", "k", "--source", "x.metal", "--output",
              "y:float32:4", NULL);
  CHECK(r.rc == 2 && strstr(r.err, "--target") != NULL, "missing: %s",
        r.err);
  kt_cli_free(&r);
  CHECK(kt_dir_count(dir) == 2, "still nothing written");
  kt_rmtree(dir);
  free(dir);
}

/* ---- allocation failures ------------------------------------------------ */

/* kiln's allocations, counted so that the k-th can fail and leaks show. */
static long kt_af_calls, kt_af_fail_nth, kt_af_live;

static void *kt_af_malloc(size_t n) {
  if (++kt_af_calls == kt_af_fail_nth)
    return NULL;
  void *p = malloc(n);
  kt_af_live += p != NULL;
  return p;
}

static void *kt_af_realloc(void *p, size_t n) {
  if (++kt_af_calls == kt_af_fail_nth)
    return NULL;
  void *q = realloc(p, n);
  kt_af_live += q != NULL && p == NULL;
  return q;
}

static void kt_af_free(void *p) {
  kt_af_live -= p != NULL;
  free(p);
}

/* Fails each allocation of kiln_kernel_compile in turn: every failure is
 * KILN_ERROR_OUT_OF_MEMORY (or the backend's report of it), writes no
 * output and leaks nothing. Single-threaded: a named-target compile starts
 * no kiln threads. */
void test_compile_alloc_failures(void) {
  kiln_alloc_hooks h = {kt_af_malloc, kt_af_realloc, kt_af_free};
  CHECK_OK(kiln_set_alloc_hooks(&h));
  kiln_kernel *k = KT_KERNEL("twice", "x", "y", NULL, twice_body, 0);
  kiln_launch l;
  kiln_array_spec in;
  kiln_output_spec out;
  kt_twice_launch(&l, &in, &out, 64);
  kiln_status st = KILN_ERROR_OUT_OF_MEMORY;
  long k_th;
  for (k_th = 1; k_th < 2000 && st != KILN_OK; k_th++) {
    long live = kt_af_live;
    char *src = NULL;
    void *bin = NULL;
    size_t size = 0;
    kt_af_calls = 0;
    kt_af_fail_nth = k_th;
    st = kiln_kernel_compile(k, &l, &in, "cpu", NULL, &src, &bin, &size);
    kt_af_fail_nth = 0;
    if (st == KILN_OK) {
      CHECK(src != NULL && bin != NULL && size > 0, "outputs on success");
      free(src);
      free(bin);
    } else {
      CHECK(st == KILN_ERROR_OUT_OF_MEMORY || st == KILN_ERROR_COMPILE ||
                st == KILN_ERROR_IO,
            "allocation %ld failing gives status %d: %s", k_th, (int)st,
            kiln_last_error());
      CHECK(src == NULL && bin == NULL, "no output after failure %ld", k_th);
      CHECK_ERR_HAS("[kiln_kernel_compile]");
    }
    CHECK(kt_af_live == live, "allocation %ld failing leaks %ld blocks",
          k_th, kt_af_live - live);
  }
  CHECK(st == KILN_OK, "the compile succeeds once allocations do");
  CHECK(k_th > 4, "allocations were failed one by one (%ld)", k_th - 1);
  kiln_kernel_destroy(k);
}
