/*
 * The helpers of check.h. The dtype models here are written from the
 * IEEE formats, independently of kiln's own conversions, so that tests
 * compare the library against something it did not compute.
 */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- failing and skipping ------------------------------------------------ */

void kt_fail_at(const char *file, int line, const char *expr, const char *fmt,
                ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s:%d: CHECK(%s) failed: ", file, line, expr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n  kiln_last_error: \"%s\"\n", kiln_last_error());
  fflush(NULL);
  _exit(1); /* a failed test may leave kiln threads mid-work: don't wait */
}

void kt_fail_status(const char *file, int line, const char *expr,
                    kiln_status got, kiln_status want) {
  fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", file,
          line, expr, (int)got, kiln_status_string(got), (int)want,
          kiln_status_string(want));
  fprintf(stderr, "  kiln_last_error: \"%s\"\n", kiln_last_error());
  fflush(NULL);
  _exit(1);
}

void kt_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "skipped: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(NULL);
  _exit(KT_SKIP_STATUS);
}

/* ---- the device under test ------------------------------------------------ */

const char *kt_device_name(void) {
  const char *d = getenv("KILN_TEST_DEVICE");
  return (d && strcmp(d, "gpu") == 0) ? "gpu" : "cpu";
}

kiln_device *kt_device(void) {
  static kiln_device *dev;
  if (dev)
    return dev;
  kiln_status s = kiln_device_find(kt_device_name(), &dev);
  if (s != KILN_OK)
    kt_fail_at(__FILE__, __LINE__, "kiln_device_find(KILN_TEST_DEVICE)",
               "KILN_TEST_DEVICE=%s was asked for but is not available: %s",
               kt_device_name(), kiln_last_error());
  return dev;
}

kiln_stream *kt_stream(void) {
  kiln_stream *s = kiln_default_stream(kt_device());
  CHECK(s != NULL, "kiln_default_stream returned NULL");
  return s;
}

/* ---- random inputs (splitmix64) -------------------------------------------- */

uint64_t kt_seed = 1;
static uint64_t kt_state = 1;

void kt_rng_reset(const char *test_name) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a of the name */
  for (const char *p = test_name; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  kt_state = kt_seed ^ h;
}

uint64_t kt_rand(void) {
  uint64_t z = (kt_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double kt_uniform(double lo, double hi) {
  return lo + (hi - lo) * ((double)(kt_rand() >> 11) * 0x1p-53);
}

int64_t kt_randint(int64_t lo, int64_t hi) {
  uint64_t span = (uint64_t)(hi - lo) + 1;
  return lo + (int64_t)(span ? kt_rand() % span : kt_rand());
}

/* ---- dtype models ------------------------------------------------------------ */

double kt_round_format(double x, int mant, int emin, int emax) {
  if (x != x || x == 0 || isinf(x))
    return x;
  int e2;
  frexp(x, &e2);
  int e = e2 - 1; /* exponent of the leading bit */
  if (e < emin)
    e = emin; /* subnormal: fixed quantum */
  double q = ldexp(1.0, e - mant);
  double r = nearbyint(x / q) * q; /* default rounding: nearest even */
  double max = ldexp(2.0 - ldexp(1.0, -mant), emax);
  if (fabs(r) > max)
    return copysign(INFINITY, x);
  return r;
}

double kt_round_half(double x) { return kt_round_format(x, 10, -14, 15); }
double kt_round_bfloat(double x) { return kt_round_format(x, 7, -126, 127); }
double kt_round_float(double x) { return kt_round_format(x, 23, -126, 127); }

static uint16_t kt_encode16(double r, int mant, int emin, int bias,
                            int expbits) {
  uint16_t sign = signbit(r) ? 0x8000 : 0;
  uint16_t expmask = (uint16_t)(((1u << expbits) - 1u) << mant);
  if (r != r)
    return (uint16_t)(expmask | (1u << (mant - 1)));
  if (isinf(r))
    return (uint16_t)(sign | expmask);
  double a = fabs(r);
  if (a == 0)
    return sign;
  if (a < ldexp(1.0, emin))
    return (uint16_t)(sign | (uint16_t)(a / ldexp(1.0, emin - mant)));
  int e = ilogb(a);
  uint16_t m = (uint16_t)((a / ldexp(1.0, e) - 1.0) * ldexp(1.0, mant));
  return (uint16_t)(sign | (uint16_t)((e + bias) << mant) | m);
}

static double kt_decode16(uint16_t b, int mant, int bias, int expbits) {
  int sign = b >> 15;
  int exp = (b >> mant) & ((1 << expbits) - 1);
  int m = b & ((1 << mant) - 1);
  double v;
  if (exp == (1 << expbits) - 1)
    v = m ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp((double)m, 1 - bias - mant);
  else
    v = ldexp(1.0 + ldexp((double)m, -mant), exp - bias);
  return sign ? -v : v;
}

uint16_t kt_half_bits(double x) {
  return kt_encode16(kt_round_half(x), 10, -14, 15, 5);
}
uint16_t kt_bfloat_bits(double x) {
  return kt_encode16(kt_round_bfloat(x), 7, -126, 127, 8);
}
double kt_half_value(uint16_t b) { return kt_decode16(b, 10, 15, 5); }
double kt_bfloat_value(uint16_t b) { return kt_decode16(b, 7, 127, 8); }

double kt_get(kiln_dtype dt, const void *buf, size_t i) {
  switch (dt) {
  case KILN_BOOL: return ((const uint8_t *)buf)[i] ? 1.0 : 0.0;
  case KILN_INT8: return ((const int8_t *)buf)[i];
  case KILN_INT16: return ((const int16_t *)buf)[i];
  case KILN_INT32: return ((const int32_t *)buf)[i];
  case KILN_INT64: return (double)((const int64_t *)buf)[i];
  case KILN_UINT8: return ((const uint8_t *)buf)[i];
  case KILN_UINT16: return ((const uint16_t *)buf)[i];
  case KILN_UINT32: return ((const uint32_t *)buf)[i];
  case KILN_UINT64: return (double)((const uint64_t *)buf)[i];
  case KILN_FLOAT16: return kt_half_value(((const uint16_t *)buf)[i]);
  case KILN_BFLOAT16: return kt_bfloat_value(((const uint16_t *)buf)[i]);
  case KILN_FLOAT32: return ((const float *)buf)[i];
  case KILN_FLOAT64: return ((const double *)buf)[i];
  default: return NAN;
  }
}

/* `v` truncated toward zero and clamped to the range of integer dtype
 * `dt`; NaN becomes 0. */
static double kt_saturate_int(kiln_dtype dt, double v) {
  double lo, hi;
  switch (dt) {
  case KILN_INT8: lo = -128.0; hi = 127.0; break;
  case KILN_INT16: lo = -32768.0; hi = 32767.0; break;
  case KILN_INT32: lo = -2147483648.0; hi = 2147483647.0; break;
  case KILN_INT64: lo = -9223372036854775808.0; hi = 9223372036854774784.0; break;
  case KILN_UINT8: lo = 0; hi = 255.0; break;
  case KILN_UINT16: lo = 0; hi = 65535.0; break;
  case KILN_UINT32: lo = 0; hi = 4294967295.0; break;
  default: lo = 0; hi = 18446744073709549568.0; break;
  }
  if (isnan(v))
    return 0;
  v = trunc(v);
  return v < lo ? lo : v > hi ? hi : v;
}

void kt_set(kiln_dtype dt, void *buf, size_t i, double v) {
  /* Integers: truncate toward zero and saturate (a double out of range
   * converted by a plain cast is undefined behaviour in C). */
  if (dt != KILN_BOOL && dt != KILN_FLOAT16 && dt != KILN_BFLOAT16 &&
      dt != KILN_FLOAT32 && dt != KILN_FLOAT64)
    v = kt_saturate_int(dt, v);
  switch (dt) {
  case KILN_BOOL: ((uint8_t *)buf)[i] = v != 0; break;
  case KILN_INT8: ((int8_t *)buf)[i] = (int8_t)v; break;
  case KILN_INT16: ((int16_t *)buf)[i] = (int16_t)v; break;
  case KILN_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
  case KILN_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
  case KILN_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
  case KILN_UINT16: ((uint16_t *)buf)[i] = (uint16_t)v; break;
  case KILN_UINT32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
  case KILN_UINT64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
  case KILN_FLOAT16: ((uint16_t *)buf)[i] = kt_half_bits(v); break;
  case KILN_BFLOAT16: ((uint16_t *)buf)[i] = kt_bfloat_bits(v); break;
  case KILN_FLOAT32: ((float *)buf)[i] = (float)v; break;
  case KILN_FLOAT64: ((double *)buf)[i] = v; break;
  default: break;
  }
}

double kt_eps(kiln_dtype dt) {
  switch (dt) {
  case KILN_FLOAT16: return 0x1p-10;
  case KILN_BFLOAT16: return 0x1p-7;
  case KILN_FLOAT32: return 0x1p-23;
  case KILN_FLOAT64: return 0x1p-52;
  default: return 1.0;
  }
}

/* ---- arrays ------------------------------------------------------------------- */

kiln_array *kt_array(kiln_dtype dt, int ndim, const int64_t *shape,
                     const void *data) {
  kiln_array *a = NULL;
  CHECK_OK(kiln_array_from_host(kt_device(), dt, ndim, shape, data, &a));
  CHECK(a != NULL, "kiln_array_from_host gave NULL");
  return a;
}

void kt_random_fill(kiln_dtype dt, void *buf, size_t n, double lo,
                    double hi) {
  bool integral = !(dt == KILN_FLOAT16 || dt == KILN_BFLOAT16 ||
                    dt == KILN_FLOAT32 || dt == KILN_FLOAT64);
  for (size_t i = 0; i < n; i++) {
    double v = integral ? (double)kt_randint((int64_t)lo, (int64_t)hi)
                        : kt_uniform(lo, hi);
    kt_set(dt, buf, i, v);
  }
}

kiln_array *kt_random_1d(kiln_dtype dt, int64_t n, double lo, double hi,
                         void **host) {
  size_t bytes = (size_t)n * kiln_dtype_size(dt);
  void *buf = malloc(bytes ? bytes : 1);
  CHECK(buf != NULL, "out of host memory");
  kt_random_fill(dt, buf, (size_t)n, lo, hi);
  kiln_array *a = kt_array(dt, 1, &n, buf);
  if (host)
    *host = buf;
  else
    free(buf);
  return a;
}

kiln_array *kt_scalar(kiln_dtype dt, double value) {
  unsigned char buf[16];
  kt_set(dt, buf, 0, value);
  kiln_array *a = NULL;
  CHECK_OK(kiln_array_scalar(kt_device(), dt, buf, &a));
  return a;
}

void *kt_read(kiln_array *a) {
  size_t bytes = kiln_array_nbytes_dense(a);
  void *buf = malloc(bytes ? bytes : 1);
  CHECK(buf != NULL, "out of host memory");
  CHECK_OK(kiln_array_to_host(a, buf, bytes));
  return buf;
}

double *kt_read_f64(kiln_array *a) {
  void *raw = kt_read(a);
  size_t n = (size_t)kiln_array_size(a);
  double *d = malloc((n ? n : 1) * sizeof(double));
  CHECK(d != NULL, "out of host memory");
  for (size_t i = 0; i < n; i++)
    d[i] = kt_get(kiln_array_dtype(a), raw, i);
  free(raw);
  return d;
}

/* ---- comparisons ----------------------------------------------------------------- */

void kt_check_close_at(const char *file, int line, const char *what,
                       const double *got, const double *ref, size_t n,
                       double rtol, double atol) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    bool ok;
    if (ref[i] != ref[i])
      ok = got[i] != got[i];
    else if (isinf(ref[i]))
      ok = got[i] == ref[i];
    else
      ok = fabs(got[i] - ref[i]) <= atol + rtol * fabs(ref[i]);
    if (!ok) {
      if (bad < 8)
        fprintf(stderr, "%s:%d: %s[%zu] = %.9g, expected %.9g (diff %.3g)\n",
                file, line, what, i, got[i], ref[i], got[i] - ref[i]);
      bad++;
    }
  }
  if (bad) {
    fprintf(stderr,
            "%s:%d: %s: %zu of %zu elements differ (rtol %g, atol %g)\n",
            file, line, what, bad, n, rtol, atol);
    fflush(NULL);
    _exit(1);
  }
}

/* ---- kernels ---------------------------------------------------------------------- */

/* Splits "a,b,c" into names stored in `pool`. */
static int kt_split(const char *csv, char **pool, char *end,
                    const char **names) {
  int n = 0;
  const char *p = csv;
  while (p && *p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (*pool + len + 1 > end)
      break;
    memcpy(*pool, p, len);
    (*pool)[len] = '\0';
    names[n++] = *pool;
    *pool += len + 1;
    p = comma ? comma + 1 : NULL;
  }
  return n;
}

void kt_desc(kiln_kernel_desc *d, kt_names *nm, const char *name,
             const char *inputs, const char *outputs, const char *header,
             const char *body, unsigned flags) {
  kiln_kernel_desc_init(d);
  char *pool = nm->buf;
  char *end = nm->buf + sizeof nm->buf;
  d->name = name;
  d->num_inputs = kt_split(inputs, &pool, end, nm->in);
  d->input_names = nm->in;
  d->num_outputs = kt_split(outputs, &pool, end, nm->out);
  d->output_names = nm->out;
  d->header = header;
  d->source = body;
  d->atomic_outputs = (flags & KT_ATOMIC) != 0;
  d->ensure_row_contiguous = !(flags & KT_NO_ROW_CONTIG);
  d->math_mode = (flags & KT_FAST) ? KILN_MATH_FAST : KILN_MATH_SAFE;
}

kiln_kernel *kt_kernel_at(const char *file, int line, const char *name,
                          const char *inputs, const char *outputs,
                          const char *header, const char *body,
                          unsigned flags) {
  kiln_kernel_desc d;
  kt_names nm;
  kt_desc(&d, &nm, name, inputs, outputs, header, body, flags);
  kiln_kernel *k = NULL;
  kiln_status s = kiln_kernel_create(&d, &k);
  if (s != KILN_OK)
    kt_fail_status(file, line, "kiln_kernel_create", s, KILN_OK);
  return k;
}

void kt_call_init(kt_call *c, uint32_t gx, uint32_t gy, uint32_t gz,
                  uint32_t tx, uint32_t ty, uint32_t tz) {
  memset(c, 0, sizeof *c);
  kiln_launch_init(&c->launch);
  c->launch.grid[0] = gx;
  c->launch.grid[1] = gy;
  c->launch.grid[2] = gz;
  c->launch.threadgroup[0] = tx;
  c->launch.threadgroup[1] = ty;
  c->launch.threadgroup[2] = tz;
  c->launch.device = kt_device();
  c->launch.has_init_value = true; /* poison: unwritten elements show */
  c->launch.init_value = NAN;
}

void kt_call_in(kt_call *c, kiln_array *a) {
  c->in[c->launch.num_inputs++] = a;
}

void kt_call_out(kt_call *c, kiln_dtype dt, int ndim, int64_t d0, int64_t d1,
                 int64_t d2) {
  kiln_output_spec *o = &c->out[c->launch.num_outputs++];
  memset(o, 0, sizeof *o);
  o->dtype = dt;
  o->ndim = ndim;
  o->shape[0] = d0;
  o->shape[1] = d1;
  o->shape[2] = d2;
}

void kt_call_targ(kt_call *c, const char *name, kiln_template_kind kind,
                  kiln_dtype dt, int64_t value) {
  kiln_template_arg *t = &c->targ[c->launch.num_template_args++];
  t->name = name;
  t->kind = kind;
  t->dtype = dt;
  t->value = value;
}

kiln_status kt_try_run(kiln_kernel *k, kt_call *c, kiln_array **outs) {
  c->launch.inputs = c->in;
  c->launch.outputs = c->out;
  c->launch.template_args = c->launch.num_template_args ? c->targ : NULL;
  return kiln_kernel_launch(k, &c->launch, outs);
}

/* KILN_TEST_NVRTC_TARGET (e.g. sm_90a): CI without a GPU still compiles
 * every launched kernel for that CUDA target, so a dialect regression on
 * CUDA fails the test that found it. */
static void kt_compile_for_nvrtc_target(const char *file, int line,
                                        kiln_kernel *k, kt_call *c) {
  const char *target = getenv("KILN_TEST_NVRTC_TARGET");
  if (!target || !*target)
    return;
  c->launch.inputs = c->in;
  c->launch.outputs = c->out;
  c->launch.template_args = c->launch.num_template_args ? c->targ : NULL;
  kiln_compile_report report;
  memset(&report, 0, sizeof report);
  report.struct_size = sizeof report;
  kiln_status s =
      kiln_kernel_compile(k, &c->launch, NULL, target, &report, NULL, NULL,
                          NULL);
  if (s != KILN_OK)
    kt_fail_at(file, line, "kiln_kernel_compile(KILN_TEST_NVRTC_TARGET)",
               "compiling for %s (without launching) failed with %s",
               target, kiln_status_string(s));
}

void kt_run_at(const char *file, int line, kiln_kernel *k, kt_call *c,
               kiln_array **outs) {
  for (int i = 0; i < c->launch.num_outputs; i++)
    outs[i] = NULL;
  kt_compile_for_nvrtc_target(file, line, k, c);
  kiln_status s = kt_try_run(k, c, outs);
  if (s != KILN_OK)
    kt_fail_status(file, line, "kiln_kernel_launch", s, KILN_OK);
  for (int i = 0; i < c->launch.num_outputs; i++)
    if (!outs[i])
      kt_fail_at(file, line, "outs[i] != NULL", "output %d not created", i);
}

void kt_destroy_all(kiln_array **arrays, int n) {
  for (int i = 0; i < n; i++) {
    kiln_array_destroy(arrays[i]);
    arrays[i] = NULL;
  }
}

/* ---- files and processes ------------------------------------------------------------ */

char *kt_tempdir(const char *tag) {
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/kiln-test-%s-XXXXXX",
           (tmp && *tmp) ? tmp : "/tmp", tag);
  CHECK(mkdtemp(path) != NULL, "mkdtemp %s: %s", path, strerror(errno));
  char *p = strdup(path);
  CHECK(p != NULL, "out of host memory");
  return p;
}

static int kt_rm_one(const char *path, const struct stat *st, int flag,
                     struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

void kt_rmtree(const char *path) {
  if (path)
    nftw(path, kt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *kt_self_exe(void) {
  static char path[4096];
  if (!path[0]) {
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n < 0)
      snprintf(path, sizeof path, "kiln_tests");
    else
      path[n] = '\0';
  }
  return path;
}

/* Reads whatever is available from fd into a growing buffer; false at
 * EOF. */
static bool kt_read_some(int fd, char **buf, size_t *len, size_t *cap) {
  char tmp[4096];
  ssize_t n = read(fd, tmp, sizeof tmp);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return true;
  if (n <= 0)
    return false;
  if (*len + (size_t)n + 1 > *cap) {
    *cap = (*len + (size_t)n + 1) * 2;
    *buf = realloc(*buf, *cap);
    CHECK(*buf != NULL, "out of host memory");
  }
  memcpy(*buf + *len, tmp, (size_t)n);
  *len += (size_t)n;
  (*buf)[*len] = '\0';
  return true;
}

int kt_spawn(char *const argv[], char *const extra_env[], char **out,
             char **err, int timeout_s) {
  int po[2], pe[2];
  CHECK(pipe(po) == 0 && pipe(pe) == 0, "pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]);
    close(pe[0]);
    close(po[1]);
    close(pe[1]);
    for (int i = 0; extra_env && extra_env[i]; i++)
      putenv(extra_env[i]);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  char *ob = calloc(1, 1), *eb = calloc(1, 1);
  size_t ol = 0, oc = 1, el = 0, ec = 1;
  bool oopen = true, eopen = true;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (oopen || eopen) {
    struct pollfd p[2] = {{.fd = oopen ? po[0] : -1, .events = POLLIN},
                          {.fd = eopen ? pe[0] : -1, .events = POLLIN}};
    poll(p, 2, 100);
    if (p[0].revents)
      oopen = kt_read_some(po[0], &ob, &ol, &oc);
    if (p[1].revents)
      eopen = kt_read_some(pe[0], &eb, &el, &ec);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > timeout_s) {
      kill(pid, SIGKILL);
      break;
    }
  }
  close(po[0]);
  close(pe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (out)
    *out = ob;
  else
    free(ob);
  if (err)
    *err = eb;
  else
    free(eb);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

void *kt_read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (buf) /* len < cap here: room for a terminating NUL */
    buf[len] = '\0';
  if (size)
    *size = len;
  return buf;
}

bool kt_write_file(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return false;
  bool ok = fwrite(data, 1, size, f) == size;
  return fclose(f) == 0 && ok;
}

int kt_dir_count(const char *path) {
  DIR *d = opendir(path);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

/* ---- the kiln CLI -------------------------------------------------------- */

kt_cli kt_kiln(const char *first, ...) {
  char *argv[64];
  int n = 0;
  argv[n++] = KILN_CLI_PATH;
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && n < 63; a = va_arg(ap, const char *))
    argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  kt_cli r;
  r.rc = kt_spawn(argv, NULL, &r.out, &r.err, 120);
  return r;
}

void kt_cli_free(kt_cli *r) {
  free(r->out);
  free(r->err);
}

void kt_need_cli(void) {
  if (access(KILN_CLI_PATH, X_OK) != 0)
    kt_fail_at(__FILE__, __LINE__, "access(KILN_CLI_PATH)",
               "the kiln CLI was not built at %s", KILN_CLI_PATH);
}

/* ---- .npy files for the CLI ---------------------------------------------- */

void kt_npy_write_dict(const char *path, const char *dict, const void *data,
                       size_t bytes) {
  char header[512];
  size_t dl = strlen(dict), pad = (64 - (10 + dl + 1) % 64) % 64;
  size_t hl = dl + pad + 1;
  CHECK(10 + hl <= sizeof header, "%s: header dict too long", path);
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  header[8] = (char)(hl & 0xff);
  header[9] = (char)(hl >> 8);
  memcpy(header + 10, dict, dl);
  memset(header + 10 + dl, ' ', pad);
  header[10 + dl + pad] = '\n';
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL, "create %s", path);
  CHECK(fwrite(header, 1, 10 + hl, f) == 10 + hl &&
            (bytes == 0 || fwrite(data, 1, bytes, f) == bytes),
        "write %s", path);
  CHECK(fclose(f) == 0, "close %s", path);
}

/* The numpy descr of the dtypes the tests write and read. */
static const char *kt_npy_descr(kiln_dtype dtype) {
  switch (dtype) {
  case KILN_FLOAT16: return "<f2";
  case KILN_FLOAT32: return "<f4";
  case KILN_FLOAT64: return "<f8";
  case KILN_INT32: return "<i4";
  case KILN_UINT32: return "<u4";
  default: return NULL;
  }
}

void kt_npy_write(const char *path, kiln_dtype dtype, int ndim,
                  const int64_t *shape, const void *data) {
  const char *descr = kt_npy_descr(dtype);
  CHECK(descr != NULL, "kt_npy_write: no descr for %s",
        kiln_dtype_name(dtype));
  char sh[256] = "", dict[400];
  size_t n = 1;
  for (int d = 0; d < ndim; d++) {
    size_t len = strlen(sh);
    snprintf(sh + len, sizeof sh - len, "%s%lld%s", d ? " " : "",
             (long long)shape[d], (ndim == 1 || d < ndim - 1) ? "," : "");
    n *= (size_t)shape[d];
  }
  snprintf(dict, sizeof dict,
           "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr,
           sh);
  kt_npy_write_dict(path, dict, data, n * kiln_dtype_size(dtype));
}

void *kt_npy_read(const char *path, int version, kiln_dtype dtype,
                  const char *shape_text, size_t count) {
  size_t size = 0;
  unsigned char *buf = kt_read_file(path, &size);
  CHECK(buf != NULL, "%s was not written", path);
  CHECK(size >= 10 && memcmp(buf, "\x93NUMPY", 6) == 0, "%s: no npy magic",
        path);
  CHECK(version == 0 || buf[6] == version, "%s: npy format %d.0, expected "
        "%d.0", path, buf[6], version);
  size_t off = buf[6] == 1 ? 10 : 12;
  CHECK(size >= off, "%s: header past the end", path);
  size_t hl = buf[6] == 1 ? (size_t)buf[8] | (size_t)buf[9] << 8
                          : (size_t)buf[8] | (size_t)buf[9] << 8 |
                                (size_t)buf[10] << 16 |
                                (size_t)buf[11] << 24;
  CHECK(off + hl <= size, "%s: header past the end", path);
  CHECK((off + hl) % 64 == 0, "%s: header padded to 64 bytes", path);
  char *hdr = strndup((char *)buf + off, hl);
  CHECK(hdr != NULL, "out of host memory");
  const char *d = kt_npy_descr(dtype);
  char descr[16];
  snprintf(descr, sizeof descr, "'%s'", d ? d : "?");
  CHECK(strstr(hdr, descr) != NULL, "%s: expected descr %s in %s", path,
        descr, hdr);
  CHECK(strstr(hdr, shape_text) != NULL, "%s: expected shape %s in %s", path,
        shape_text, hdr);
  CHECK(strstr(hdr, "'fortran_order': False") != NULL, "%s: C order", path);
  size_t bytes = count * kiln_dtype_size(dtype);
  CHECK(size - off - hl == bytes, "%s: %zu data bytes, expected %zu", path,
        size - off - hl, bytes);
  void *data = malloc(bytes ? bytes : 1);
  CHECK(data != NULL, "out of host memory");
  memcpy(data, buf + off + hl, bytes);
  free(hdr);
  free(buf);
  return data;
}

double *kt_npy_read_f64(const char *path, int version, kiln_dtype dtype,
                        const char *shape_text, size_t count) {
  void *raw = kt_npy_read(path, version, dtype, shape_text, count);
  double *v = malloc((count ? count : 1) * sizeof *v);
  CHECK(v != NULL, "out of host memory");
  for (size_t i = 0; i < count; i++)
    v[i] = kt_get(dtype, raw, i);
  free(raw);
  return v;
}

void kt_cli_expect_error_line(const char *what, const char *out_dir,
                              int want, const char *prefix,
                              const char *mention, const char *mention2,
                              kt_cli r) {
  char want_text[32];
  snprintf(want_text, sizeof want_text, "%d", want);
  CHECK(r.rc != 0 && r.rc < 128 && (!want || r.rc == want),
        "%s: exit status %d (expected %s); stderr: %s", what, r.rc,
        want ? want_text : "an error exit", r.err);
  size_t len = strlen(r.err);
  while (len && r.err[len - 1] == '\n')
    r.err[--len] = '\0';
  CHECK(strncmp(r.err, prefix, strlen(prefix)) == 0, "%s: stderr should "
        "start with '%s': %s", what, prefix, r.err);
  CHECK(strchr(r.err, '\n') == NULL, "%s: stderr is more than one line:\n%s",
        what, r.err);
  CHECK(!mention || strstr(r.err, mention), "%s: stderr should mention "
        "\"%s\": %s", what, mention, r.err);
  CHECK(!mention2 || strstr(r.err, mention2), "%s: stderr should mention "
        "\"%s\": %s", what, mention2, r.err);
  CHECK(r.out[0] == '\0', "%s: stdout should be empty: %s", what, r.out);
  CHECK(kt_dir_count(out_dir) == 0, "%s: an output file was written", what);
  kt_cli_free(&r);
}

/* See check.h. */
void kt_python_check(const char *dir, const char *script, const char *what) {
  char path[4300], cmd[9000];
  snprintf(path, sizeof path, "%s/check.py", dir);
  CHECK(kt_write_file(path, script, strlen(script)), "write %s", path);
  snprintf(cmd, sizeof cmd, "python3 %s %s %s %s", path, dir, KILN_CLI_PATH,
           kt_device_name());
  CHECK(system(cmd) == 0, "the numpy check of %s failed (see above)", what);
}
