/* Helpers shared by the linear-algebra tests: see linalg_check.h. */
#include "linalg_check.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"

double *kt_la_alloc(int64_t n) {
  double *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
  CHECK(p != NULL, "out of host memory");
  return p;
}

kiln_array *kt_la_array(kiln_dtype dt, int ndim, const int64_t *shape,
                        double *v) {
  int64_t count = 1;
  for (int d = 0; d < ndim; d++)
    count *= shape[d];
  unsigned char *buf = malloc((size_t)(count > 0 ? count : 1) * 8);
  CHECK(buf != NULL, "out of host memory");
  for (int64_t i = 0; i < count; i++) {
    kt_set(dt, buf, (size_t)i, v[i]);
    v[i] = kt_get(dt, buf, (size_t)i);
  }
  kiln_array *a = kt_array(dt, ndim, shape, buf);
  free(buf);
  return a;
}

void kt_la_targ(kiln_template_arg *t, const char *name,
                kiln_template_kind kind, int64_t v, kiln_dtype d) {
  t->name = name;
  t->kind = kind;
  t->dtype = d;
  t->value = v;
}

void kt_la_orthogonal(int64_t n, double *q) {
  double *v = kt_la_alloc(n);
  memset(q, 0, (size_t)(n * n) * sizeof *q);
  for (int64_t i = 0; i < n; i++)
    q[i * n + i] = 1.0;
  /* Three reflectors mix every row with every other; more add nothing a
   * test could see. */
  for (int r = 0; r < 3; r++) {
    double vv = 0;
    for (int64_t i = 0; i < n; i++) {
      v[i] = kt_uniform(-1, 1);
      vv += v[i] * v[i];
    }
    for (int64_t i = 0; i < n && vv > 0; i++) { /* Q = Q (I - 2vv^T/v^Tv) */
      double d = 0;
      for (int64_t k = 0; k < n; k++)
        d += q[i * n + k] * v[k];
      for (int64_t k = 0; k < n; k++)
        q[i * n + k] -= 2.0 * d * v[k] / vv;
    }
  }
  free(v);
}

void kt_la_ill(int64_t m, int64_t n, double cond, double *a) {
  int64_t k = m < n ? m : n;
  double *u = kt_la_alloc(m * m), *v = kt_la_alloc(n * n);
  kt_la_orthogonal(m, u);
  kt_la_orthogonal(n, v);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < k; p++)
        s += u[i * m + p] *
             pow(cond, -(double)p / (double)(k > 1 ? k - 1 : 1)) *
             v[p * n + j];
      a[i * n + j] = s;
    }
  free(u);
  free(v);
}

void kt_la_transposed(kiln_dtype dt, int64_t m, int64_t n, double *a,
                      kiln_array **base, kiln_array **view) {
  double *b = kt_la_alloc(n * m); /* the stored n x m matrix */
  for (int64_t i = 0; i < n * m; i++)
    b[i] = kt_uniform(-1, 1);
  int64_t bshape[2] = {n, m}, vshape[2] = {m, n}, vstr[2] = {1, m};
  *base = kt_la_array(dt, 2, bshape, b);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++)
      a[i * n + j] = b[j * m + i];
  CHECK_OK(kiln_array_view(*base, 2, vshape, vstr, 0, view));
  free(b);
}

void kt_la_sliced(kiln_dtype dt, int64_t batch, int64_t m, int64_t n,
                  int col0, double *a, kiln_array **base, kiln_array **view) {
  int64_t count = 2 * batch * m * 2 * n;
  double *b = kt_la_alloc(count);
  for (int64_t i = 0; i < count; i++)
    b[i] = kt_uniform(-50, 50);
  int64_t bshape[3] = {2 * batch, m, 2 * n}, vshape[3] = {batch, m, n};
  int64_t vstr[3] = {2 * m * 2 * n, 2 * n, 2};
  *base = kt_la_array(dt, 3, bshape, b);
  for (int64_t e = 0; e < batch; e++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        a[(e * m + i) * n + j] = b[((2 * e) * m + i) * 2 * n + 2 * j + col0];
  CHECK_OK(kiln_array_view(*base, 3, vshape, vstr, col0, view));
  free(b);
}

double kt_la_fro(const double *a, int64_t count) {
  double s = 0;
  for (int64_t i = 0; i < count; i++)
    s += a[i] * a[i];
  return sqrt(s);
}

double kt_la_gram_diff(const double *a, const double *r, int64_t m,
                       int64_t n, int64_t k) {
  double d = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t l = 0; l < m; l++)
        s += a[l * n + i] * a[l * n + j];
      for (int64_t l = 0; l < k; l++)
        s -= r[l * n + i] * r[l * n + j];
      d += s * s;
    }
  return sqrt(d);
}

void kt_la_compile(const kt_la_kernel *k, const char *target) {
  kiln_kernel *kernel = NULL;
  CHECK_OK(kiln__library_kernel(k->family, k->name, k->inputs, k->outputs,
                                k->flags, &kernel));
  kiln_launch L;
  kiln_launch_init(&L);
  L.num_inputs = k->num_inputs;
  L.outputs = k->out;
  L.num_outputs = k->num_outputs;
  L.template_args = k->targs;
  L.num_template_args = k->num_targs;
  L.device = kt_device();
  kiln_compile_report rep;
  memset(&rep, 0, sizeof rep);
  rep.struct_size = sizeof rep;
  /* The configuration named by its non-dtype template arguments. */
  char cfg[160] = "";
  for (int i = 0; i < k->num_targs; i++) {
    size_t len = strlen(cfg);
    const kiln_template_arg *t = &k->targs[i];
    if (t->kind == KILN_TEMPLATE_DTYPE)
      snprintf(cfg + len, sizeof cfg - len, " %s=%s", t->name,
               kiln_dtype_name(t->dtype));
    else
      snprintf(cfg + len, sizeof cfg - len, " %s=%lld", t->name,
               (long long)t->value);
  }
  int rank = k->num_inputs > 0 ? k->in[0].ndim : 0;
  kiln_status st =
      kiln_kernel_compile(kernel, &L, k->in, target, &rep, NULL, NULL, NULL);
  CHECK(st == KILN_OK, "%s/%s (%s, rank %d) does not compile for %s: %s",
        k->family, k->name, cfg, rank, target, kiln_last_error());
  if (getenv("KILN_TEST_REPORT") != NULL)
    fprintf(stderr, "%s/%s%s rank %d: %d registers, %llu B shared, %llu B "
            "local, spills %llu/%llu B\n", k->family, k->name, cfg, rank,
            rep.registers, (unsigned long long)rep.threadgroup_memory,
            (unsigned long long)rep.local_memory,
            (unsigned long long)rep.spill_store_bytes,
            (unsigned long long)rep.spill_load_bytes);
  CHECK(rep.threadgroup_memory <= 48 * 1024,
        "%s/%s%s uses %llu bytes of threadgroup memory", k->family, k->name,
        cfg, (unsigned long long)rep.threadgroup_memory);
  CHECK(k->allow_spills ||
            (rep.spill_store_bytes == 0 && rep.spill_load_bytes == 0),
        "%s/%s%s spills %llu / %llu bytes of registers", k->family, k->name,
        cfg, (unsigned long long)rep.spill_store_bytes,
        (unsigned long long)rep.spill_load_bytes);
  CHECK(!k->forbid_local || rep.local_memory == 0,
        "%s/%s%s uses %llu bytes of local memory (its per-thread arrays "
        "should stay in registers)", k->family, k->name, cfg,
        (unsigned long long)rep.local_memory);
}

void kt_la_cli_expect_error(const char *what, const char *od, int want,
                            const char *mention, const char *mention2,
                            kt_cli r) {
  kt_cli_expect_error_line(what, od, want, "kiln linalg: ", mention,
                           mention2, r);
}

const char *kt_la_nvrtc_target(void) {
  const char *target = getenv("KILN_TEST_NVRTC_TARGET");
  if (target == NULL || *target == '\0')
    kt_skip("set KILN_TEST_NVRTC_TARGET (e.g. sm_90a) to run it");
  return target;
}

/* See linalg_check.h. */
char *kt_la_numpy_dir(const char *tag) {
  kt_need_cli();
  if (system("python3 -c 'import numpy' >/dev/null 2>&1") != 0)
    kt_skip("python3 with numpy is not available");
  return kt_tempdir(tag);
}

/* See linalg_check.h. */
void kt_la_lu_check(const char *what, int64_t entry, kiln_dtype dt, int64_t m,
                    int64_t n, const double *a, const double *lu,
                    const int32_t *piv) {
  int64_t k = m < n ? m : n;
  int64_t *perm = calloc((size_t)(m > 0 ? m : 1), sizeof *perm);
  CHECK(perm != NULL, "out of host memory");
  for (int64_t i = 0; i < m; i++)
    perm[i] = i;
  for (int64_t j = 0; j < k; j++) {
    CHECK(piv[j] >= j && piv[j] < m,
          "%s, matrix %lld: pivot %lld is %d, "
          "outside [%lld, %lld)",
          what, (long long)entry, (long long)j, piv[j], (long long)j,
          (long long)m);
    int64_t t = perm[j];
    perm[j] = perm[piv[j]];
    perm[piv[j]] = t;
  }
  double num = 0, den = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      if (j < i && j < k)
        CHECK(fabs(lu[i * n + j]) <= 1.0,
              "%s, matrix %lld: |L[%lld][%lld]| "
              "= %g > 1",
              what, (long long)entry, (long long)i, (long long)j,
              fabs(lu[i * n + j]));
      double s = 0;
      for (int64_t p = 0; p <= (i < j ? i : j) && p < k; p++) {
        double l = p == i ? 1.0 : lu[i * n + p];
        s += l * lu[p * n + j];
      }
      double r = a[perm[i] * n + j];
      num += (s - r) * (s - r);
      den += r * r;
    }
  double err =
      den > 0 ? sqrt(num) / (sqrt(den) * (double)(n > 0 ? n : 1) * kt_eps(dt))
              : sqrt(num);
  CHECK(err < KT_LA_LU_THRESHOLD,
        "%s, matrix %lld: backward error %.3g n eps "
        "(threshold %g)",
        what, (long long)entry, err, KT_LA_LU_THRESHOLD);
  free(perm);
}

void kt_la_spd(int64_t n, double *a) {
  double *m = kt_la_alloc(n * n);
  for (int64_t i = 0; i < n * n; i++)
    m[i] = kt_uniform(-1, 1);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j <= i; j++) {
      double s = i == j ? (double)n : 0.0;
      for (int64_t k = 0; k < n; k++)
        s += m[i * n + k] * m[j * n + k];
      a[i * n + j] = a[j * n + i] = s;
    }
  free(m);
}

void kt_la_spd_ill(int64_t n, double cond, double *a) {
  double *q = kt_la_alloc(n * n);
  kt_la_orthogonal(n, q);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j <= i; j++) {
      double s = 0;
      for (int64_t k = 0; k < n; k++) {
        double sk = n > 1 ? pow(cond, -(double)k / (double)(n - 1)) : 1.0;
        s += q[i * n + k] * sk * q[j * n + k];
      }
      a[i * n + j] = a[j * n + i] = s;
    }
  free(q);
}

/* ---- allocation failures ------------------------------------------------- */

static atomic_long af_calls, af_fail_nth, af_live;
static _Thread_local bool af_armed;

static bool af_should_fail(void) {
  if (!af_armed)
    return false;
  long c = atomic_fetch_add(&af_calls, 1) + 1;
  return c == atomic_load(&af_fail_nth);
}

static void *af_malloc(size_t n) {
  if (af_should_fail())
    return NULL;
  void *p = malloc(n);
  if (p != NULL)
    atomic_fetch_add(&af_live, 1);
  return p;
}

static void *af_realloc(void *p, size_t n) {
  if (af_should_fail())
    return NULL;
  void *q = realloc(p, n);
  if (q != NULL && p == NULL)
    atomic_fetch_add(&af_live, 1);
  return q;
}

static void af_free(void *p) {
  if (p != NULL)
    atomic_fetch_sub(&af_live, 1);
  free(p);
}

const kiln_alloc_hooks *kt_af_hooks(void) {
  static const kiln_alloc_hooks h = {af_malloc, af_realloc, af_free};
  return &h;
}

void kt_af_arm(long fail_nth) {
  atomic_store(&af_calls, 0);
  atomic_store(&af_fail_nth, fail_nth);
  af_armed = true;
}

long kt_af_disarm(void) {
  af_armed = false;
  atomic_store(&af_fail_nth, 0);
  return atomic_load(&af_calls);
}

long kt_af_settle(void) {
  CHECK_OK(kiln_synchronize(NULL));
  CHECK_OK(kiln_memory_clear_cache(kt_device()));
  return atomic_load(&af_live);
}

/* See linalg_check.h. */
long kt_af_sweep(const char *what, kt_af_call_fn call, kt_af_check_fn check,
                 void *ctx) {
  CHECK_OK(kiln_set_alloc_hooks(kt_af_hooks()));
  kt_af_arm(0);
  kiln_status st = call(ctx);
  long total = kt_af_disarm();
  CHECK_OK(st);
  check(ctx, st, 0);
  CHECK(total > 5, "%s allocates (%ld)", what, total);
  long stride = total / 60 + 1;
  for (long k = 1; k <= total; k += stride) {
    long live0 = kt_af_settle();
    kiln_clear_error();
    kt_af_arm(k);
    st = call(ctx);
    kt_af_disarm();
    if (st != KILN_OK) {
      CHECK(st == KILN_ERROR_OUT_OF_MEMORY,
            "%s, allocation %ld failing: %s, expected out of memory", what, k,
            kiln_status_string(st));
      CHECK(strstr(kiln_last_error(), "out of memory") != NULL,
            "%s, allocation %ld failing: the message (%s) says out of "
            "memory",
            what, k, kiln_last_error());
    }
    check(ctx, st, k);
    long live1 = kt_af_settle();
    CHECK(live1 == live0, "%s, allocation %ld failing leaked %ld host "
          "block(s)", what, k, live1 - live0);
  }
  return total;
}

/* See linalg_check.h. */
void kt_la_chol_check(const char *what, kiln_dtype dt, bool upper,
                      int64_t batch, int64_t n, const double *a,
                      const double *f, double threshold) {
  for (int64_t b = 0; b < batch; b++) {
    const double *x = a + b * n * n, *y = f + b * n * n;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
      CHECK(y[i * n + i] > 0, "%s, matrix %lld: diagonal %lld is %g", what,
            (long long)b, (long long)i, y[i * n + i]);
      for (int64_t j = 0; j < n; j++) {
        if (upper ? j < i : j > i)
          CHECK(y[i * n + j] == 0.0,
                "%s, matrix %lld: (%lld, %lld) is %g, not 0", what,
                (long long)b, (long long)i, (long long)j, y[i * n + j]);
        double s = 0;
        for (int64_t k = 0; k < n; k++)
          s += upper ? y[k * n + i] * y[k * n + j]
                     : y[i * n + k] * y[j * n + k];
        num += (s - x[i * n + j]) * (s - x[i * n + j]);
        den += x[i * n + j] * x[i * n + j];
      }
    }
    double err = sqrt(num) / (sqrt(den) * (double)n * kt_eps(dt));
    CHECK(err < threshold,
          "%s, matrix %lld: backward error %.3g n eps (threshold %g)", what,
          (long long)b, err, threshold);
  }
}
