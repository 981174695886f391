/*
 * Helpers shared by every test: failure reporting (CHECK and friends), the
 * device under test, a seeded random generator, independent host models of
 * the dtypes, float comparison with per-dtype tolerances, and short ways to
 * make arrays and launch kernels.
 *
 * Every test runs in its own child process (see runner.c), so a failing
 * check simply prints what went wrong and ends the process.
 */
#ifndef KILN_TESTS_CHECK_H
#define KILN_TESTS_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln.h"

/* ---- failing and skipping ------------------------------------------------ */

/* Exit status of a child that skipped its test (automake's convention). */
#define KT_SKIP_STATUS 77

/* Prints "file:line: CHECK(expr) failed: message" plus kiln_last_error()
 * and ends the test as failed. */
_Noreturn void kt_fail_at(const char *file, int line, const char *expr,
                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same for a kiln call that returned `got` instead of `want`. */
_Noreturn void kt_fail_status(const char *file, int line, const char *expr,
                              kiln_status got, kiln_status want);
/* Ends the test as skipped, printing the reason. */
_Noreturn void kt_skip(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond))                                                              \
      kt_fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__);                     \
  } while (0)

#define CHECK_STATUS(expr, want)                                              \
  do {                                                                        \
    kiln_status kt_got_ = (expr);                                             \
    if (kt_got_ != (want))                                                    \
      kt_fail_status(__FILE__, __LINE__, #expr, kt_got_, (want));             \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, KILN_OK)

/* The last error message contains `sub`. */
#define CHECK_ERR_HAS(sub)                                                    \
  CHECK(strstr(kiln_last_error(), (sub)) != NULL,                             \
        "the last error should mention \"%s\"", (sub))

/* ---- the device under test ------------------------------------------------ */

/* KILN_TEST_DEVICE (cpu, the default, or gpu); fails loudly if a GPU is
 * asked for and none is present. */
kiln_device *kt_device(void);
/* The calling thread's default stream on kt_device(). */
kiln_stream *kt_stream(void);
/* The device name the suite runs on ("cpu" or "gpu"). */
const char *kt_device_name(void);

/* ---- random inputs ---------------------------------------------------------- */

/* The run's seed: KILN_TEST_SEED, else fresh from the clock. */
extern uint64_t kt_seed;
/* Re-seeds the generator from the run's seed and a test name, so a test
 * draws the same numbers whatever ran before it. */
void kt_rng_reset(const char *test_name);
uint64_t kt_rand(void);
double kt_uniform(double lo, double hi);
int64_t kt_randint(int64_t lo, int64_t hi); /* inclusive */

/* ---- independent host models of the dtypes --------------------------------- */

/* Rounds `x` to nearest even with `mant` fraction bits and exponents in
 * [emin, emax] (subnormals and overflow to infinity included). */
double kt_round_format(double x, int mant, int emin, int emax);
double kt_round_half(double x);
double kt_round_bfloat(double x);
double kt_round_float(double x);
uint16_t kt_half_bits(double x);   /* rounds, then encodes */
uint16_t kt_bfloat_bits(double x); /* rounds, then encodes */
double kt_half_value(uint16_t bits);
double kt_bfloat_value(uint16_t bits);
/* Element i of a dense buffer of `dtype`, as a double, and back (the store
 * rounds floats to nearest even and truncates integers toward zero). */
double kt_get(kiln_dtype dtype, const void *buf, size_t i);
void kt_set(kiln_dtype dtype, void *buf, size_t i, double v);
/* Machine epsilon of a float dtype (1 for integers). */
double kt_eps(kiln_dtype dtype);

/* ---- arrays ------------------------------------------------------------------ */

kiln_array *kt_array(kiln_dtype dtype, int ndim, const int64_t *shape,
                     const void *data);
/* A 1-d array of n random values in [lo, hi], rounded to the dtype;
 * *host (optional) receives a malloc'ed copy of the bytes. */
kiln_array *kt_random_1d(kiln_dtype dtype, int64_t n, double lo, double hi,
                         void **host);
/* Fills n elements of a host buffer with random values in [lo, hi]. */
void kt_random_fill(kiln_dtype dtype, void *buf, size_t n, double lo,
                    double hi);
kiln_array *kt_scalar(kiln_dtype dtype, double value);
/* The array's elements in C order: raw bytes / as doubles (malloc'ed). */
void *kt_read(kiln_array *array);
double *kt_read_f64(kiln_array *array);

/* ---- comparisons --------------------------------------------------------------- */

/* Fails unless |got - ref| <= atol + rtol * |ref| for every element (NaN
 * matches only NaN); prints the first few mismatches. */
void kt_check_close_at(const char *file, int line, const char *what,
                       const double *got, const double *ref, size_t n,
                       double rtol, double atol);
#define CHECK_CLOSE(what, got, ref, n, rtol, atol)                            \
  kt_check_close_at(__FILE__, __LINE__, what, got, ref, n, rtol, atol)

/* ---- kernels --------------------------------------------------------------------- */

#define KT_ATOMIC 1u         /* atomic_outputs */
#define KT_NO_ROW_CONTIG 2u  /* ensure_row_contiguous = false */
#define KT_FAST 4u           /* KILN_MATH_FAST */

/* Makes a kernel or fails; `inputs`/`outputs` are comma-separated names
 * ("" for none). */
#define KT_KERNEL(name, inputs, outputs, header, body, flags)                 \
  kt_kernel_at(__FILE__, __LINE__, name, inputs, outputs, header, body, flags)
kiln_kernel *kt_kernel_at(const char *file, int line, const char *name,
                          const char *inputs, const char *outputs,
                          const char *header, const char *body,
                          unsigned flags);
/* Fills `desc` from the same arguments; `names` is scratch that must live
 * as long as desc is used. */
typedef struct kt_names {
  char buf[1024];
  const char *in[32];
  const char *out[32];
} kt_names;
void kt_desc(kiln_kernel_desc *desc, kt_names *names, const char *name,
             const char *inputs, const char *outputs, const char *header,
             const char *body, unsigned flags);

/* A launch being built. kt_call_init sets the grid, the threadgroup, the
 * device under test and poisons the outputs with init_value = NaN (tests
 * with integer outputs set another init value). */
typedef struct kt_call {
  kiln_launch launch;
  kiln_array *in[32];
  kiln_output_spec out[32];
  kiln_template_arg targ[16];
} kt_call;

void kt_call_init(kt_call *call, uint32_t gx, uint32_t gy, uint32_t gz,
                  uint32_t tx, uint32_t ty, uint32_t tz);
void kt_call_in(kt_call *call, kiln_array *input);
void kt_call_out(kt_call *call, kiln_dtype dtype, int ndim, int64_t d0,
                 int64_t d1, int64_t d2);
void kt_call_targ(kt_call *call, const char *name, kiln_template_kind kind,
                  kiln_dtype dtype, int64_t value);
/* Launches or fails; outputs land in outs[]. With KILN_TEST_NVRTC_TARGET
 * set (sm_90a), first compiles the same launch for that CUDA target with
 * kiln_kernel_compile and fails on a compile error. */
#define KT_RUN(kernel, call, outs) kt_run_at(__FILE__, __LINE__, kernel, call, outs)
void kt_run_at(const char *file, int line, kiln_kernel *kernel, kt_call *call,
               kiln_array **outs);
/* Launches and returns the status (for error tests). */
kiln_status kt_try_run(kiln_kernel *kernel, kt_call *call, kiln_array **outs);
/* Destroys n arrays (NULL entries allowed). */
void kt_destroy_all(kiln_array **arrays, int n);

/* ---- files and processes ------------------------------------------------------------ */

/* A fresh private temporary directory (malloc'ed path), removed by
 * kt_rmtree. */
char *kt_tempdir(const char *tag);
void kt_rmtree(const char *path);
/* Runs argv[0] with argv and optional extra environment entries
 * ("NAME=VALUE", NULL-terminated); collects stdout and stderr (malloc'ed,
 * NUL-terminated) and returns the exit status (or 128 + signal). */
int kt_spawn(char *const argv[], char *const extra_env[], char **out,
             char **err, int timeout_s);
/* The path of the running test binary. */
const char *kt_self_exe(void);
/* Whole file contents (malloc'ed, NUL-terminated) or NULL; *size receives
 * the length. */
void *kt_read_file(const char *path, size_t *size);
bool kt_write_file(const char *path, const void *data, size_t size);
/* Number of entries in a directory besides . and .. (-1 on error). */
int kt_dir_count(const char *path);

/* ---- the kiln CLI -------------------------------------------------------- */

/* One run of the kiln CLI (KILN_CLI_PATH): its exit status and its
 * stdout and stderr (malloc'ed, released by kt_cli_free). */
typedef struct kt_cli {
  int rc;
  char *out, *err;
} kt_cli;
/* Runs kiln with a NULL-terminated list of arguments (120 s timeout). */
kt_cli kt_kiln(const char *first, ...);
void kt_cli_free(kt_cli *r);
/* Fails the test when the CLI was not built. */
void kt_need_cli(void);

/* ---- .npy files for the CLI ---------------------------------------------- */
/* A minimal .npy writer and reader (format 1.0 and 2.0, C order),
 * independent of tools/npy.c, for the float16/32/64, int32 and uint32 the
 * tests use. */

/* Writes a format 1.0 .npy file with an explicit header dict (for malformed
 * cases too) followed by `bytes` of data. */
void kt_npy_write_dict(const char *path, const char *dict, const void *data,
                       size_t bytes);
/* Writes product(shape) elements of `dtype` from `data` in C order. */
void kt_npy_write(const char *path, kiln_dtype dtype, int ndim,
                  const int64_t *shape, const void *data);
/* Reads a .npy file the CLI wrote, checking its format (`version` 1 or 2
 * demands that major version, 0 takes either), the header's 64-byte
 * padding, its descr for `dtype`, its shape text such as "(2, 3, 4)", C
 * order and exactly `count` elements; returns the data (malloc'ed). */
void *kt_npy_read(const char *path, int version, kiln_dtype dtype,
                  const char *shape_text, size_t count);
/* The same, the elements as doubles (malloc'ed). */
double *kt_npy_read_f64(const char *path, int version, kiln_dtype dtype,
                        const char *shape_text, size_t count);

/* A failing CLI run whose error is one line: exit status `want` (0: any
 * error exit that is not a crash), stderr starting with `prefix` and
 * mentioning `mention` and `mention2` (either may be NULL), stdout empty
 * and nothing written to `out_dir`. Frees r. */
void kt_cli_expect_error_line(const char *what, const char *out_dir,
                              int want, const char *prefix,
                              const char *mention, const char *mention2,
                              kt_cli r);

/* Writes `script` to DIR/check.py and runs `python3 DIR/check.py DIR CLI
 * DEVICE` (the kiln CLI's path and kt_device_name()): the numpy cross-check
 * of a CLI test; fails the test, naming `what`, when the script fails. */
void kt_python_check(const char *dir, const char *script, const char *what);

#endif /* KILN_TESTS_CHECK_H */
