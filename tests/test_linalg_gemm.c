/*
 * GEMM and matmul (kiln_gemm, kiln_gemm_ex, kiln_matmul) on the device under
 * test, against a float64 host reference, and the `kiln linalg gemm` CLI.
 *
 * Every check bounds the error per element by what the arithmetic allows:
 *   |C - ref| <= (2 (k + 4) eps_acc + 2.5 eps_in) bound
 *                + eps_out (|ref| + |beta C0|),
 *   bound = |alpha| (|op(A)| |op(B)|) + |beta C0|,
 * where eps_acc is the accumulation's epsilon (float32 for float16 and
 * bfloat16, which accumulate in float32), eps_out the epsilon of the stored
 * dtype, and eps_in the rounding of the inputs that TF32/bf16 precision
 * allows (0 otherwise). Inputs are fresh random values; outputs are
 * poisoned (NaN where beta == 0 says C is not read). Exactly representable
 * sums catch an implementation that silently rounds inputs or accumulates
 * too narrowly, which a k-scaled bound cannot always see.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "linalg_check.h"
#include "linalg/linalg.h"

#ifndef KILN_CLI_PATH
#define KILN_CLI_PATH "kiln"
#endif

/* ---- matrices with their values ------------------------------------------ */

/* An operand: the array handed to kiln (maybe a view of `owner`) and its
 * logical values in C order of its own shape, as doubles. */
typedef struct lg_mat {
  kiln_dtype dt;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
  kiln_array *arr;
  kiln_array *owner; /* the base of a view, else NULL */
  double *v;
} lg_mat;

static int64_t lg_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    n *= shape[d];
  return n;
}

static double *lg_alloc(int64_t n) {
  double *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  CHECK(p != NULL, "out of host memory");
  return p;
}

/* A contiguous array of `dt` holding the values `v` (rounded to dt). */
static lg_mat lg_from_values(kiln_dtype dt, int ndim, const int64_t *shape,
                             const double *v) {
  lg_mat m;
  memset(&m, 0, sizeof m);
  m.dt = dt;
  m.ndim = ndim;
  memcpy(m.shape, shape, (size_t)ndim * sizeof *shape);
  int64_t n = lg_count(ndim, shape);
  size_t size = kiln_dtype_size(dt);
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1) * size);
  CHECK(buf != NULL, "out of host memory");
  m.v = lg_alloc(n);
  for (int64_t i = 0; i < n; i++) {
    kt_set(dt, buf, (size_t)i, v[i]);
    m.v[i] = kt_get(dt, buf, (size_t)i);
  }
  m.arr = kt_array(dt, ndim, shape, buf);
  free(buf);
  return m;
}

/* Fresh random values in [-1, 1], rounded to dt. */
static lg_mat lg_random(kiln_dtype dt, int ndim, const int64_t *shape) {
  int64_t n = lg_count(ndim, shape);
  double *v = lg_alloc(n);
  for (int64_t i = 0; i < n; i++)
    v[i] = kt_uniform(-1, 1);
  lg_mat m = lg_from_values(dt, ndim, shape, v);
  free(v);
  return m;
}

static lg_mat lg_filled(kiln_dtype dt, int ndim, const int64_t *shape,
                        double value) {
  int64_t n = lg_count(ndim, shape);
  double *v = lg_alloc(n);
  for (int64_t i = 0; i < n; i++)
    v[i] = value;
  lg_mat m = lg_from_values(dt, ndim, shape, v);
  free(v);
  return m;
}

/* C poisoned as the contract allows: NaN when beta == 0 (it must not be
 * read), else random values that enter the result. */
static lg_mat lg_poisoned(kiln_dtype dt, int ndim, const int64_t *shape,
                          double beta) {
  return beta == 0 ? lg_filled(dt, ndim, shape, NAN)
                   : lg_random(dt, ndim, shape);
}

/* A strided view of the contiguous matrix `base` (which it takes over). */
static lg_mat lg_view(lg_mat base, int ndim, const int64_t *shape,
                      const int64_t *strides, int64_t offset) {
  lg_mat m;
  memset(&m, 0, sizeof m);
  m.dt = base.dt;
  m.ndim = ndim;
  memcpy(m.shape, shape, (size_t)ndim * sizeof *shape);
  CHECK_OK(kiln_array_view(base.arr, ndim, shape, strides, offset, &m.arr));
  m.owner = base.arr;
  int64_t n = lg_count(ndim, shape);
  m.v = lg_alloc(n);
  for (int64_t i = 0; i < n; i++) {
    int64_t rest = i, at = offset;
    for (int d = ndim - 1; d >= 0; d--) {
      at += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    m.v[i] = base.v[at];
  }
  free(base.v);
  return m;
}

static void lg_free(lg_mat *m) {
  kiln_array_destroy(m->arr);
  kiln_array_destroy(m->owner);
  free(m->v);
  memset(m, 0, sizeof *m);
}

static int64_t lg_rows(const lg_mat *m) { return m->shape[m->ndim - 2]; }
static int64_t lg_cols(const lg_mat *m) { return m->shape[m->ndim - 1]; }

/* Element (i, j) of batch entry q of op(M); a 2-D M serves every entry. */
static double lg_at(const lg_mat *m, bool trans, int64_t q, int64_t i,
                    int64_t j) {
  int64_t r = lg_rows(m), c = lg_cols(m);
  int64_t base = m->ndim == 2 ? 0 : q * r * c;
  return trans ? m->v[base + j * c + i] : m->v[base + i * c + j];
}

/* ---- the reference and the comparison ------------------------------------ */

/* What a gemm call should produce, with the scale of its rounding error. */
typedef struct lg_expect {
  int64_t n; /* elements of C */
  int64_t k;
  double *ref;   /* alpha op(A) op(B) + beta C0, in float64 */
  double *bound; /* |alpha| |op(A)| |op(B)| + |beta| |C0| */
  double *bc0;   /* |beta C0| */
} lg_expect;

static lg_expect lg_reference(bool ta, bool tb, double alpha,
                              const lg_mat *a, const lg_mat *b, double beta,
                              const lg_mat *c0) {
  lg_expect e;
  int64_t m = lg_rows(c0), n = lg_cols(c0);
  int64_t batch = lg_count(c0->ndim - 2, c0->shape);
  e.k = ta ? lg_rows(a) : lg_cols(a);
  e.n = batch * m * n;
  e.ref = lg_alloc(e.n);
  e.bound = lg_alloc(e.n);
  e.bc0 = lg_alloc(e.n);
  for (int64_t q = 0; q < batch; q++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0, abs_s = 0;
        for (int64_t p = 0; p < e.k; p++) {
          double x = lg_at(a, ta, q, i, p) * lg_at(b, tb, q, p, j);
          s += x;
          abs_s += fabs(x);
        }
        int64_t at = (q * m + i) * n + j;
        /* beta == 0: C0 (maybe NaN) does not take part at all */
        double cterm = beta == 0 ? 0 : beta * c0->v[at];
        e.ref[at] = alpha * s + cterm;
        e.bound[at] = fabs(alpha) * abs_s + fabs(cterm);
        e.bc0[at] = fabs(cterm);
      }
  return e;
}

static void lg_expect_free(lg_expect *e) {
  free(e->ref);
  free(e->bound);
  free(e->bc0);
}

/* The epsilon products accumulate in: float64's, else float32's. */
static double lg_acc_eps(kiln_dtype dt) {
  return dt == KILN_FLOAT64 ? kt_eps(KILN_FLOAT64) : kt_eps(KILN_FLOAT32);
}

/* The relative rounding of the inputs that a precision allows (an ulp, so
 * that truncation is allowed as well as rounding to nearest). */
static double lg_input_eps(kiln_dtype dt, kiln_precision p) {
  if (dt != KILN_FLOAT32)
    return 0;
  return p == KILN_PRECISION_TF32   ? 0x1p-10
         : p == KILN_PRECISION_BF16 ? 0x1p-7
                                    : 0;
}

/* Fails unless every element of `got` is within the bound of the header. */
static void lg_check_at(const char *file, int line, const char *what,
                        kiln_dtype dt, kiln_precision prec,
                        const double *got, const lg_expect *e) {
  double acc = lg_acc_eps(dt), out = kt_eps(dt);
  double in = lg_input_eps(dt, prec);
  /* the spacing of subnormals, for results near zero */
  double tiny = dt == KILN_FLOAT16 ? 0x1p-24 : 0;
  int bad = 0;
  for (int64_t i = 0; i < e->n; i++) {
    double tol = (2.0 * (double)(e->k + 4) * acc + 2.5 * in) * e->bound[i] +
                 out * (fabs(e->ref[i]) + e->bc0[i]) + tiny;
    double err = fabs(got[i] - e->ref[i]);
    if (err <= tol)
      continue;
    if (bad++ < 6)
      fprintf(stderr, "  %s: C[%lld] = %.17g, expected %.17g (error %.3g, "
              "allowed %.3g, %s, k = %lld)\n", what, (long long)i, got[i],
              e->ref[i], err, tol, kiln_dtype_name(dt), (long long)e->k);
  }
  if (bad)
    kt_fail_at(file, line, "C within the rounding bound",
               "%s: %d of %lld elements are wrong", what, bad,
               (long long)e->n);
}
#define LG_CHECK(what, dt, prec, got, e)                                      \
  lg_check_at(__FILE__, __LINE__, what, dt, prec, got, e)

/* Runs gemm on C in place and checks C against the float64 reference. */
static void lg_gemm_check(const char *what, bool ta, bool tb, double alpha,
                          const lg_mat *a, const lg_mat *b, double beta,
                          const lg_mat *c, const kiln_linalg_opts *opts) {
  lg_expect e = lg_reference(ta, tb, alpha, a, b, beta, c);
  if (opts)
    CHECK_OK(kiln_gemm_ex(ta, tb, alpha, a->arr, b->arr, beta, c->arr,
                          opts));
  else
    CHECK_OK(kiln_gemm(ta, tb, alpha, a->arr, b->arr, beta, c->arr));
  double *got = kt_read_f64(c->arr);
  LG_CHECK(what, a->dt, opts ? opts->precision : KILN_PRECISION_DEFAULT,
           got, &e);
  free(got);
  lg_expect_free(&e);
}

/* Which operands carry the batch dimensions in lg_case. */
#define LG_BA 1u
#define LG_BB 2u
#define LG_BC 4u

/* One gemm of fresh operands: A is m×k (k×m with ta), B k×n (n×k with tb),
 * each with the batch dimensions `batch` (nb of them) when its LG_B* flag
 * is set. */
static void lg_case(kiln_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                    int64_t k, double alpha, double beta, int nb,
                    const int64_t *batch, unsigned batched,
                    const kiln_linalg_opts *opts) {
  int64_t sa[KILN_MAX_NDIM], sb[KILN_MAX_NDIM], sc[KILN_MAX_NDIM];
  int na = 0, nbb = 0, nc = 0;
  for (int d = 0; d < nb; d++) {
    if (batched & LG_BA)
      sa[na++] = batch[d];
    if (batched & LG_BB)
      sb[nbb++] = batch[d];
    if (batched & LG_BC)
      sc[nc++] = batch[d];
  }
  sa[na++] = ta ? k : m;
  sa[na++] = ta ? m : k;
  sb[nbb++] = tb ? n : k;
  sb[nbb++] = tb ? k : n;
  sc[nc++] = m;
  sc[nc++] = n;
  lg_mat a = lg_random(dt, na, sa), b = lg_random(dt, nbb, sb);
  lg_mat c = lg_poisoned(dt, nc, sc, beta);
  char what[200];
  snprintf(what, sizeof what, "%s %s%s m=%lld n=%lld k=%lld alpha=%g "
           "beta=%g batch-ndim=%d flags=%u path=%d precision=%d",
           kiln_dtype_name(dt), ta ? "A^T" : "A", tb ? "B^T" : "B",
           (long long)m, (long long)n, (long long)k, alpha, beta, nb,
           batched, opts ? opts->path : 0,
           opts ? (int)opts->precision : 0);
  lg_gemm_check(what, ta, tb, alpha, &a, &b, beta, &c, opts);
  lg_free(&a);
  lg_free(&b);
  lg_free(&c);
}

static const kiln_dtype lg_all_dtypes[] = {KILN_FLOAT32, KILN_FLOAT64,
                                           KILN_FLOAT16, KILN_BFLOAT16};
#define LG_NUM_DTYPES (sizeof lg_all_dtypes / sizeof lg_all_dtypes[0])

/* ---- numerics ------------------------------------------------------------ */

void test_linalg_gemm_dtypes(void) {
  for (size_t i = 0; i < LG_NUM_DTYPES; i++) {
    kiln_dtype dt = lg_all_dtypes[i];
    lg_case(dt, false, false, 37, 41, 53, 1.0, 0.0, 0, NULL, 0, NULL);
    lg_case(dt, false, false, 37, 41, 53, -1.25, 0.75, 0, NULL, 0, NULL);
    lg_case(dt, false, false, 64, 64, 96, 0.5, 0.0, 0, NULL, 0, NULL);
  }
}

/* Sums that are exact in the right arithmetic and wrong in a narrower
 * one, so a k-scaled bound cannot hide them: float32 inputs of 1 + j 2^-20
 * (TF32 or bf16 would round them to 1), float64 inputs of 1 + j 2^-49
 * (float32 would), and for float16 / bfloat16 rows of big, 1, -big, 1, ...
 * whose partial sums are integers exact in float32 in any order, while
 * big + j is not representable in float16 (big = 2048) or bfloat16 (256). */
static double lg_exact_value(kiln_dtype dt, int64_t i, int64_t p) {
  double j = (double)kt_randint(1, 3);
  switch (dt) {
  case KILN_FLOAT32: return 1 + j * 0x1p-20;
  case KILN_FLOAT64: return 1 + j * 0x1p-49;
  default: break;
  }
  /* 1, not j: big + 2 is representable and big + 1 and big + 3 round
   * in opposite directions, which could cancel */
  double big = dt == KILN_FLOAT16 ? 2048 : 256;
  switch ((p + i) % 4) {
  case 0: return big;
  case 2: return -big;
  default: return 1;
  }
}

void test_linalg_gemm_exact_sums(void) {
  for (size_t t = 0; t < LG_NUM_DTYPES; t++) {
    kiln_dtype dt = lg_all_dtypes[t];
    int64_t m = 3, n = 4, k = 8;
    int64_t sa[2] = {m, k}, sb[2] = {k, n}, sc[2] = {m, n};
    double *av = lg_alloc(m * k);
    for (int64_t i = 0; i < m; i++)
      for (int64_t p = 0; p < k; p++)
        av[i * k + p] = lg_exact_value(dt, i, p);
    lg_mat a = lg_from_values(dt, 2, sa, av);
    lg_mat b = lg_filled(dt, 2, sb, 1.0);
    lg_mat c = lg_filled(dt, 2, sc, NAN);
    CHECK_OK(kiln_gemm(false, false, 1.0, a.arr, b.arr, 0.0, c.arr));
    double *got = kt_read_f64(c.arr);
    for (int64_t i = 0; i < m; i++) {
      double want = 0;
      for (int64_t p = 0; p < k; p++)
        want += a.v[i * k + p];
      for (int64_t j = 0; j < n; j++)
        CHECK(got[i * n + j] == want,
              "%s: C[%lld][%lld] = %.17g, the exact sum is %.17g (inputs "
              "rounded, or accumulated in a narrower type?)",
              kiln_dtype_name(dt), (long long)i, (long long)j,
              got[i * n + j], want);
    }
    free(got);
    free(av);
    lg_free(&a);
    lg_free(&b);
    lg_free(&c);
  }
}

/* BLIS's check for a larger product: C x against alpha A (B x) + beta C0 x
 * for a random x, in O(n^2); the bound is the same per-element bound
 * carried through x (|A| (|B| |x|)). */
static void lg_random_vector_case(kiln_dtype dt, bool ta, bool tb, int64_t m,
                                  int64_t n, int64_t k, double alpha,
                                  double beta) {
  int64_t sa[2] = {ta ? k : m, ta ? m : k}, sb[2] = {tb ? n : k, tb ? k : n};
  int64_t sc[2] = {m, n};
  lg_mat a = lg_random(dt, 2, sa), b = lg_random(dt, 2, sb);
  lg_mat c = lg_poisoned(dt, 2, sc, beta);
  double *x = lg_alloc(n), *bx = lg_alloc(k), *abx = lg_alloc(k);
  for (int64_t j = 0; j < n; j++)
    x[j] = kt_uniform(-1, 1);
  for (int64_t p = 0; p < k; p++) {
    bx[p] = abx[p] = 0;
    for (int64_t j = 0; j < n; j++) {
      bx[p] += lg_at(&b, tb, 0, p, j) * x[j];
      abx[p] += fabs(lg_at(&b, tb, 0, p, j) * x[j]);
    }
  }
  CHECK_OK(kiln_gemm(ta, tb, alpha, a.arr, b.arr, beta, c.arr));
  double *got = kt_read_f64(c.arr);
  double acc = lg_acc_eps(dt), out = kt_eps(dt);
  for (int64_t i = 0; i < m; i++) {
    double y1 = 0, y2 = 0, bound = 0, cx = 0, c0x = 0;
    for (int64_t j = 0; j < n; j++) {
      y1 += got[i * n + j] * x[j];
      cx += fabs(got[i * n + j] * x[j]);
      if (beta != 0) {
        y2 += beta * c.v[i * n + j] * x[j];
        c0x += fabs(beta * c.v[i * n + j] * x[j]);
      }
    }
    for (int64_t p = 0; p < k; p++) {
      y2 += alpha * lg_at(&a, ta, 0, i, p) * bx[p];
      bound += fabs(alpha * lg_at(&a, ta, 0, i, p)) * abx[p];
    }
    /* also the float64 rounding of the two products with x */
    double tol = 2.0 * (double)(k + 4) * acc * (bound + c0x) +
                 out * (cx + c0x) + 4 * (double)(n + k) * 0x1p-52 *
                 (bound + cx + c0x);
    CHECK(fabs(y1 - y2) <= tol,
          "%s %s%s %lldx%lldx%lld: (C x)[%lld] = %.17g but alpha A (B x) + "
          "beta C0 x = %.17g (difference %.3g, allowed %.3g)",
          kiln_dtype_name(dt), ta ? "A^T" : "A", tb ? "B^T" : "B",
          (long long)m, (long long)n, (long long)k, (long long)i, y1, y2,
          fabs(y1 - y2), tol);
    CHECK(isfinite(y1), "C has non-finite values in row %lld", (long long)i);
  }
  free(got);
  free(x);
  free(bx);
  free(abx);
  lg_free(&a);
  lg_free(&b);
  lg_free(&c);
}

void test_linalg_gemm_random_vector(void) {
  lg_random_vector_case(KILN_FLOAT32, false, false, 257, 129, 300, 1.0, 0.0);
  lg_random_vector_case(KILN_FLOAT32, true, true, 257, 129, 300, -0.5, 1.5);
  lg_random_vector_case(KILN_FLOAT64, false, true, 257, 129, 300, 2.0, 0.5);
  lg_random_vector_case(KILN_FLOAT16, true, false, 131, 67, 200, 0.25, 0.0);
  lg_random_vector_case(KILN_BFLOAT16, false, false, 131, 67, 200, 1.0,
                        -1.0);
}

void test_linalg_gemm_transposes(void) {
  for (size_t i = 0; i < LG_NUM_DTYPES; i++)
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      lg_case(lg_all_dtypes[i], ta, tb, 13, 7, 29, 1.5, 0.0, 0, NULL, 0,
              NULL);
      lg_case(lg_all_dtypes[i], ta, tb, 33, 65, 17, -1.0, 2.0, 0, NULL, 0,
              NULL);
    }
}

void test_linalg_gemm_alpha_beta(void) {
  for (size_t i = 0; i < LG_NUM_DTYPES; i++) {
    kiln_dtype dt = lg_all_dtypes[i];
    lg_case(dt, false, false, 9, 11, 10, 3.0, -0.5, 0, NULL, 0, NULL);
    lg_case(dt, true, false, 9, 11, 10, -2.0, 1.0, 0, NULL, 0, NULL);
    /* alpha = 0 with beta = 0: C = 0 although it held NaN */
    lg_case(dt, false, true, 9, 11, 10, 0.0, 0.0, 0, NULL, 0, NULL);
    /* alpha = 0: C = beta C exactly (a power of two) */
    int64_t sa[2] = {5, 6}, sb[2] = {6, 7}, sc[2] = {5, 7};
    lg_mat a = lg_random(dt, 2, sa), b = lg_random(dt, 2, sb);
    lg_mat c = lg_random(dt, 2, sc);
    CHECK_OK(kiln_gemm(false, false, 0.0, a.arr, b.arr, 2.0, c.arr));
    double *got = kt_read_f64(c.arr);
    for (int j = 0; j < 35; j++)
      CHECK(got[j] == 2.0 * c.v[j], "%s alpha=0 beta=2: C[%d] = %.17g, "
            "expected %.17g", kiln_dtype_name(dt), j, got[j], 2.0 * c.v[j]);
    free(got);
    /* beta = 1, alpha = 0: C unchanged */
    CHECK_OK(kiln_gemm(false, false, 0.0, a.arr, b.arr, 1.0, c.arr));
    got = kt_read_f64(c.arr);
    for (int j = 0; j < 35; j++)
      CHECK(got[j] == 2.0 * c.v[j], "%s alpha=0 beta=1 changed C[%d]",
            kiln_dtype_name(dt), j);
    free(got);
    lg_free(&a);
    lg_free(&b);
    lg_free(&c);
  }
}

void test_linalg_gemm_batched(void) {
  int64_t batch[2] = {2, 3};
  for (size_t i = 0; i < LG_NUM_DTYPES; i++) {
    kiln_dtype dt = lg_all_dtypes[i];
    /* equal batch dimensions everywhere */
    lg_case(dt, false, false, 7, 5, 9, 1.0, 0.0, 2, batch,
            LG_BA | LG_BB | LG_BC, NULL);
    lg_case(dt, true, true, 7, 5, 9, -0.5, 1.5, 2, batch,
            LG_BA | LG_BB | LG_BC, NULL);
    /* a 2-D operand serves every batch entry */
    lg_case(dt, false, true, 6, 4, 8, 1.0, 0.0, 2, batch, LG_BB | LG_BC,
            NULL);
    lg_case(dt, true, false, 6, 4, 8, 2.0, -1.0, 1, batch, LG_BA | LG_BC,
            NULL);
    /* both operands 2-D, C batched: every entry gets the same product */
    lg_case(dt, false, false, 3, 5, 4, 1.0, 0.5, 1, batch + 1, LG_BC, NULL);
  }
  /* more batch entries than one CUDA grid dimension holds (65535) */
  int64_t many[1] = {65535 + 3};
  lg_case(KILN_FLOAT32, false, true, 2, 2, 3, 1.0, 0.5, 1, many,
          LG_BA | LG_BC, NULL);
}

/* Fails if an element of `base` outside the view (shape, strides, offset)
 * differs from `before`. */
static void lg_check_outside(const char *what, const lg_mat *view,
                             const int64_t *strides, int64_t offset,
                             const double *before) {
  int64_t total = kiln_array_size(view->owner);
  unsigned char *inside = calloc((size_t)total, 1);
  CHECK(inside != NULL, "out of host memory");
  int64_t n = lg_count(view->ndim, view->shape);
  for (int64_t i = 0; i < n; i++) {
    int64_t rest = i, at = offset;
    for (int d = view->ndim - 1; d >= 0; d--) {
      at += (rest % view->shape[d]) * strides[d];
      rest /= view->shape[d];
    }
    inside[at] = 1;
  }
  double *all = kt_read_f64(view->owner);
  for (int64_t i = 0; i < total; i++)
    CHECK(inside[i] || all[i] == before[i] ||
              (isnan(all[i]) && isnan(before[i])),
          "%s: element %lld of C's base, outside the view, changed from %g "
          "to %g", what, (long long)i, before[i], all[i]);
  free(all);
  free(inside);
}

/* A C view of a random `base`, checked after the gemm for writes outside
 * the view. */
typedef struct lg_cview {
  lg_mat c;
  double *before;
  int64_t strides[KILN_MAX_NDIM];
  int64_t offset;
} lg_cview;

static lg_cview lg_c_view(kiln_dtype dt, int base_ndim,
                          const int64_t *base_shape, int ndim,
                          const int64_t *shape, const int64_t *strides,
                          int64_t offset, double beta) {
  lg_cview v;
  lg_mat base = lg_poisoned(dt, base_ndim, base_shape, beta);
  int64_t total = lg_count(base_ndim, base_shape);
  v.before = lg_alloc(total);
  memcpy(v.before, base.v, (size_t)total * sizeof *v.before);
  memcpy(v.strides, strides, (size_t)ndim * sizeof *strides);
  v.offset = offset;
  v.c = lg_view(base, ndim, shape, strides, offset);
  return v;
}

static void lg_c_view_done(const char *what, lg_cview *v) {
  lg_check_outside(what, &v->c, v->strides, v->offset, v->before);
  lg_free(&v->c);
  free(v->before);
}

/* Inputs that are views: a transposed view of A, a sliced view of B (every
 * other column of a wider block, starting inside it), reversed rows, a
 * batch with gaps and a stride-0 batch; C is a strided view updated in
 * place whose neighbours must stay untouched. */
void test_linalg_gemm_strided(void) {
  for (size_t t = 0; t < LG_NUM_DTYPES; t++) {
    kiln_dtype dt = lg_all_dtypes[t];
    int64_t m = 11, n = 6, k = 13;
    /* A: a k×m storage viewed transposed as m×k */
    int64_t sa[2] = {k, m}, va[2] = {m, k}, a_str[2] = {1, m};
    lg_mat a = lg_view(lg_random(dt, 2, sa), 2, va, a_str, 0);
    /* B: rows 2..2+k of a (k+5)×(2n+3) block, every other column from 1 */
    int64_t sb[2] = {k + 5, 2 * n + 3}, vb[2] = {k, n};
    int64_t b_str[2] = {2 * n + 3, 2};
    lg_mat b = lg_view(lg_random(dt, 2, sb), 2, vb, b_str,
                       2 * (2 * n + 3) + 1);
    /* C: an m×n window of an (m+3)×(n+4) block at (1, 2) */
    int64_t sc[2] = {m + 3, n + 4}, vc[2] = {m, n}, c_str[2] = {n + 4, 1};
    for (int beta_zero = 0; beta_zero < 2; beta_zero++) {
      double beta = beta_zero ? 0.0 : -1.5;
      lg_cview c = lg_c_view(dt, 2, sc, 2, vc, c_str, (n + 4) + 2, beta);
      lg_gemm_check("A^T view, sliced B, windowed C", false, false, 0.75,
                    &a, &b, beta, &c.c, NULL);
      lg_c_view_done("windowed C", &c);
    }
    lg_free(&a);
    lg_free(&b);

    /* trans_a of a transposed view, trans_b of a row-reversed view, and a
     * column-major C */
    int64_t sa2[2] = {m, k}, va2[2] = {k, m}, a2_str[2] = {1, k};
    lg_mat a2 = lg_view(lg_random(dt, 2, sa2), 2, va2, a2_str, 0);
    int64_t sb2[2] = {n, k}, b2_str[2] = {-k, 1};
    lg_mat b2 = lg_view(lg_random(dt, 2, sb2), 2, sb2, b2_str, (n - 1) * k);
    int64_t sc2[2] = {n, m}, vc2[2] = {m, n}, c2_str[2] = {1, m};
    lg_cview c2 = lg_c_view(dt, 2, sc2, 2, vc2, c2_str, 0, 0.5);
    lg_gemm_check("A^T of a view, reversed B^T, column-major C", true, true,
                  -1.0, &a2, &b2, 0.5, &c2.c, NULL);
    lg_c_view_done("column-major C", &c2);
    lg_free(&a2);
    lg_free(&b2);

    /* batched: A with a gap row per entry, B broadcast by a stride-0
     * batch, C with gaps between and inside its entries */
    int64_t sa3[3] = {3, m + 1, k}, va3[3] = {3, m, k};
    int64_t a3_str[3] = {(m + 1) * k, k, 1};
    lg_mat a3 = lg_view(lg_random(dt, 3, sa3), 3, va3, a3_str, k);
    int64_t sb3[2] = {k, n}, vb3[3] = {3, k, n}, b3_str[3] = {0, n, 1};
    lg_mat b3 = lg_view(lg_random(dt, 2, sb3), 3, vb3, b3_str, 0);
    int64_t sc3[3] = {3, m + 1, n + 2}, vc3[3] = {3, m, n};
    int64_t c3_str[3] = {(m + 1) * (n + 2), n + 2, 1};
    lg_cview c3 = lg_c_view(dt, 3, sc3, 3, vc3, c3_str, 1, 2.0);
    lg_gemm_check("batched views with gaps, stride-0 batch of B", false,
                  false, 1.0, &a3, &b3, 2.0, &c3.c, NULL);
    lg_c_view_done("batched C view", &c3);
    lg_free(&a3);
    lg_free(&b3);
  }
}

/* 1×1, odd and prime sizes, k = 1, and empty problems: m or n = 0 writes
 * nothing; k = 0 gives C = beta C (0 for beta == 0, even over NaN). */
void test_linalg_gemm_small_and_empty(void) {
  static const int64_t sizes[][3] = {
      {1, 1, 1}, {1, 7, 13}, {31, 1, 17}, {3, 97, 5}, {2, 3, 1}, {19, 23, 2},
  };
  for (size_t t = 0; t < LG_NUM_DTYPES; t++) {
    kiln_dtype dt = lg_all_dtypes[t];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      lg_case(dt, false, false, sizes[s][0], sizes[s][1], sizes[s][2], 1.0,
              0.0, 0, NULL, 0, NULL);
      lg_case(dt, true, true, sizes[s][0], sizes[s][1], sizes[s][2], -2.0,
              0.5, 0, NULL, 0, NULL);
    }
    /* k = 0 */
    lg_case(dt, false, false, 4, 5, 0, 1.0, 0.0, 0, NULL, 0, NULL);
    lg_case(dt, true, false, 4, 5, 0, 1.0, 2.5, 0, NULL, 0, NULL);
    int64_t batch[1] = {3};
    lg_case(dt, false, true, 4, 5, 0, 1.0, -1.0, 1, batch,
            LG_BA | LG_BB | LG_BC, NULL);
    /* m = 0 and n = 0, with C an empty view of a live buffer */
    for (int which = 0; which < 2; which++) {
      int64_t m = which ? 4 : 0, n = which ? 0 : 4, k = 3;
      int64_t sa[2] = {m, k}, sb[2] = {k, n};
      lg_mat a = lg_random(dt, 2, sa), b = lg_random(dt, 2, sb);
      int64_t base[2] = {4, 4}, shape[2] = {m, n}, str[2] = {4, 1};
      lg_cview c = lg_c_view(dt, 2, base, 2, shape, str, 0, 1.0);
      CHECK_OK(kiln_gemm(false, false, 1.0, a.arr, b.arr, 1.0, c.c.arr));
      CHECK_OK(kiln_gemm(false, false, 1.0, a.arr, b.arr, 0.0, c.c.arr));
      lg_c_view_done(which ? "n = 0" : "m = 0", &c);
      lg_free(&a);
      lg_free(&b);
    }
  }
}

/* A shape-only stand-in for C0 in lg_reference (beta == 0 never reads
 * its values). */
static lg_mat lg_shape_only(int ndim, const int64_t *shape) {
  lg_mat m;
  memset(&m, 0, sizeof m);
  m.ndim = ndim;
  memcpy(m.shape, shape, (size_t)ndim * sizeof *shape);
  return m;
}

/* matmul makes a new array of the right shape and dtype. */
static void lg_matmul_case(kiln_dtype dt, int na, const int64_t *sa, int nb,
                           const int64_t *sb, int nc, const int64_t *sc,
                           const kiln_linalg_opts *opts) {
  lg_mat a = lg_random(dt, na, sa), b = lg_random(dt, nb, sb);
  kiln_array *out = NULL;
  if (opts)
    CHECK_OK(kiln_matmul_ex(a.arr, b.arr, opts, &out));
  else
    CHECK_OK(kiln_matmul(a.arr, b.arr, &out));
  CHECK(out != NULL, "matmul gave no array");
  CHECK(kiln_array_dtype(out) == dt, "matmul of %s gave %s",
        kiln_dtype_name(dt), kiln_dtype_name(kiln_array_dtype(out)));
  CHECK(kiln_array_ndim(out) == nc, "matmul result has %d dimensions, "
        "expected %d", kiln_array_ndim(out), nc);
  for (int d = 0; d < nc; d++)
    CHECK(kiln_array_shape(out)[d] == sc[d], "matmul result dimension %d "
          "is %lld, expected %lld", d, (long long)kiln_array_shape(out)[d],
          (long long)sc[d]);
  CHECK(kiln_array_device(out) == kt_device(), "matmul result is on "
        "another device");
  lg_mat c0 = lg_shape_only(nc, sc);
  lg_expect e = lg_reference(false, false, 1.0, &a, &b, 0.0, &c0);
  double *got = kt_read_f64(out);
  LG_CHECK("matmul", dt, KILN_PRECISION_DEFAULT, got, &e);
  free(got);
  lg_expect_free(&e);
  kiln_array_destroy(out);
  lg_free(&a);
  lg_free(&b);
}

void test_linalg_matmul(void) {
  for (size_t t = 0; t < LG_NUM_DTYPES; t++) {
    kiln_dtype dt = lg_all_dtypes[t];
    int64_t a2[2] = {5, 7}, b2[2] = {7, 3}, c2[2] = {5, 3};
    lg_matmul_case(dt, 2, a2, 2, b2, 2, c2, NULL);
    int64_t a4[4] = {2, 3, 4, 5}, b4[4] = {2, 3, 5, 6}, c4[4] = {2, 3, 4, 6};
    lg_matmul_case(dt, 4, a4, 4, b4, 4, c4, NULL);
    /* broadcast of a 2-D operand on either side */
    int64_t a5[2] = {4, 5}, b5[3] = {3, 5, 2}, c5[3] = {3, 4, 2};
    lg_matmul_case(dt, 2, a5, 3, b5, 3, c5, NULL);
    int64_t a6[3] = {3, 4, 5}, b6[2] = {5, 2};
    lg_matmul_case(dt, 3, a6, 2, b6, 3, c5, NULL);
    /* empty results and k = 0 (a zero matrix) */
    int64_t a7[2] = {0, 5}, b7[2] = {5, 3}, c7[2] = {0, 3};
    lg_matmul_case(dt, 2, a7, 2, b7, 2, c7, NULL);
    int64_t a8[2] = {3, 0}, b8[2] = {0, 2}, c8[2] = {3, 2};
    lg_matmul_case(dt, 2, a8, 2, b8, 2, c8, NULL);
    int64_t a9[3] = {0, 3, 4}, b9[2] = {4, 5}, c9[3] = {0, 3, 5};
    lg_matmul_case(dt, 3, a9, 2, b9, 3, c9, NULL);
  }
  /* on a stream of the caller's through the options */
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &s));
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.stream = s;
  int64_t a[2] = {9, 8}, b[2] = {8, 10}, c[2] = {9, 10};
  lg_matmul_case(KILN_FLOAT32, 2, a, 2, b, 2, c, &o);
  CHECK_OK(kiln_stream_synchronize(s));
  CHECK_OK(kiln_stream_destroy(s));
}

/* TF32 and bf16 arithmetic for float32 are opt-in; their results are
 * checked against the looser bound those roundings allow (on the CPU, or
 * where tensor cores do not take them, plain float32 also passes). */
void test_linalg_gemm_precision(void) {
  kiln_precision precs[2] = {KILN_PRECISION_TF32, KILN_PRECISION_BF16};
  int64_t batch[1] = {2};
  for (int p = 0; p < 2; p++) {
    kiln_linalg_opts o;
    kiln_linalg_opts_init(&o);
    o.precision = precs[p];
    lg_case(KILN_FLOAT32, false, false, 67, 45, 129, 1.0, 0.0, 0, NULL, 0,
            &o);
    lg_case(KILN_FLOAT32, true, true, 33, 17, 64, -0.5, 1.0, 1, batch,
            LG_BA | LG_BB | LG_BC, &o);
    lg_case(KILN_FLOAT32, true, false, 1, 1, 1, 1.0, 0.0, 0, NULL, 0, &o);
    /* default precision through the options is plain float32 */
    o.precision = KILN_PRECISION_DEFAULT;
    lg_case(KILN_FLOAT32, false, true, 20, 30, 40, 1.0, 0.0, 0, NULL, 0,
            &o);
  }
}

/* opts->path forces an algorithm (src/linalg/gemm.c): 1 is the SIMT
 * kernel for every dtype; 2 is tensor cores, for float16, bfloat16 and
 * float32 with TF32/BF16 precision, and on a device without tensor cores
 * (the CPU) it runs the same kernel's documented SIMT fallback, so it must
 * be correct everywhere. Path 2 for float64 or default-precision float32,
 * and unknown paths, are refused. */
void test_linalg_gemm_paths(void) {
  int64_t batch[1] = {2};
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 1;
  for (size_t t = 0; t < LG_NUM_DTYPES; t++) {
    kiln_dtype dt = lg_all_dtypes[t];
    lg_case(dt, false, false, 70, 66, 40, 1.0, 0.0, 0, NULL, 0, &o);
    lg_case(dt, true, true, 130, 129, 33, -1.0, 0.5, 1, batch,
            LG_BA | LG_BB | LG_BC, &o);
  }
  struct {
    kiln_dtype dt;
    kiln_precision prec;
  } tc[] = {
      {KILN_FLOAT16, KILN_PRECISION_DEFAULT},
      {KILN_BFLOAT16, KILN_PRECISION_DEFAULT},
      {KILN_FLOAT32, KILN_PRECISION_TF32},
      {KILN_FLOAT32, KILN_PRECISION_BF16},
  };
  for (size_t t = 0; t < sizeof tc / sizeof tc[0]; t++) {
    kiln_linalg_opts_init(&o);
    o.path = 2;
    o.precision = tc[t].prec;
    /* whole and partial 128-tiles, k a multiple of 8 (vector loads) or
     * not, every transpose, a batch, a small problem forced onto it */
    lg_case(tc[t].dt, false, false, 128, 128, 64, 1.0, 0.0, 0, NULL, 0, &o);
    lg_case(tc[t].dt, false, true, 130, 70, 33, 0.5, 0.0, 0, NULL, 0, &o);
    lg_case(tc[t].dt, true, false, 65, 129, 48, -1.0, 2.0, 1, batch,
            LG_BA | LG_BB | LG_BC, &o);
    lg_case(tc[t].dt, true, true, 3, 5, 7, 1.0, -1.0, 0, NULL, 0, &o);
    /* an unaligned view: A starts one element into its buffer */
    int64_t sa[2] = {100, 65}, va[2] = {100, 64}, str[2] = {65, 1};
    int64_t sb[2] = {64, 72}, sc[2] = {100, 72};
    lg_mat a = lg_view(lg_random(tc[t].dt, 2, sa), 2, va, str, 1);
    lg_mat b = lg_random(tc[t].dt, 2, sb);
    lg_mat c = lg_poisoned(tc[t].dt, 2, sc, 0.0);
    lg_gemm_check("tensor-core path, unaligned A view", false, false, 1.0,
                  &a, &b, 0.0, &c, &o);
    lg_free(&a);
    lg_free(&b);
    lg_free(&c);
  }
}

/* The float32 128-square SIMT kernel (gemm_f32), forced with opts->path 4
 * so that the CPU suite runs it at any size: every operand mode (float4
 * or scalar loads, along k or along the rows: the transposes and the
 * sizes modulo 4 pick them), interior tiles with whole and ragged last
 * k-slices, edge tiles in m and n, k below one slice, beta == 0 over NaN
 * and beta != 0, a batch with a broadcast 2-D operand, and views that
 * rule the vector loads out (an unaligned start, a sliced view); the
 * kernel's unchecked loop (EXACT: m, n multiples of 128, k of 8) in every
 * operand mode too. */
void test_linalg_gemm_f32(void) {
  static const int64_t shapes[][3] = {
      {136, 260, 44}, /* m, n, k multiples of 4: vector loads */
      {137, 131, 45}, /* nothing a multiple of 4: scalar loads */
      {128, 132, 9},  /* whole tiles in m, ragged last slice */
      {129, 256, 5},  /* k below one slice */
      {256, 128, 40}, /* EXACT: whole tiles, whole slices (unchecked loop) */
      {128, 128, 8},  /* EXACT with a single slice */
  };
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 4;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      double beta = (s + (size_t)t) % 2 ? 0.0 : -0.75;
      lg_case(KILN_FLOAT32, ta, tb, shapes[s][0], shapes[s][1],
              shapes[s][2], 1.25, beta, 0, NULL, 0, &o);
    }
  int64_t batch[2] = {2, 2};
  lg_case(KILN_FLOAT32, false, false, 130, 129, 24, 1.0, 0.5, 2, batch,
          LG_BA | LG_BB | LG_BC, &o);
  lg_case(KILN_FLOAT32, true, false, 128, 128, 16, -1.0, 0.0, 1, batch,
          LG_BB | LG_BC, &o);
  /* A starts one element into its buffer: no 16-byte alignment */
  int64_t sa[2] = {140, 41}, va[2] = {140, 40}, str[2] = {41, 1};
  lg_mat a = lg_view(lg_random(KILN_FLOAT32, 2, sa), 2, va, str, 1);
  /* B: every other column of a wider block */
  int64_t sb[2] = {40, 2 * 136}, vb[2] = {40, 136}, bstr[2] = {2 * 136, 2};
  lg_mat b = lg_view(lg_random(KILN_FLOAT32, 2, sb), 2, vb, bstr, 0);
  int64_t sc[2] = {140, 136};
  lg_mat c = lg_poisoned(KILN_FLOAT32, 2, sc, 0.0);
  lg_gemm_check("gemm_f32, unaligned A view, sliced B", false, false, 1.0,
                &a, &b, 0.0, &c, &o);
  /* the same product on the automatic path agrees within the bound */
  lg_free(&c);
  c = lg_poisoned(KILN_FLOAT32, 2, sc, 1.0);
  lg_gemm_check("auto path, unaligned A view, sliced B", false, false, 1.0,
                &a, &b, 1.0, &c, NULL);
  lg_free(&a);
  lg_free(&b);
  lg_free(&c);
  /* scalar loads in the unchecked loop: EXACT shapes, the same views */
  int64_t sa2[2] = {128, 25}, va2[2] = {128, 24}, str2[2] = {25, 1};
  a = lg_view(lg_random(KILN_FLOAT32, 2, sa2), 2, va2, str2, 1);
  int64_t sb2[2] = {24, 2 * 128}, vb2[2] = {24, 128}, bstr2[2] = {256, 2};
  b = lg_view(lg_random(KILN_FLOAT32, 2, sb2), 2, vb2, bstr2, 0);
  int64_t sc2[2] = {128, 128};
  c = lg_poisoned(KILN_FLOAT32, 2, sc2, 0.5);
  lg_gemm_check("gemm_f32 EXACT, unaligned A view, sliced B", false, false,
                1.0, &a, &b, 0.5, &c, &o);
  lg_free(&a);
  lg_free(&b);
  lg_free(&c);
}

/* float64 on tensor cores (gemm_dmma), forced with opts->path 2: DMMA on
 * CUDA sm_80+, the kernel's SIMT fallback elsewhere (the CPU), so the
 * launch logic and the operand layouts (k-major or row-major staging,
 * picked by the transposes) run everywhere. Whole and partial 128-tiles,
 * k a multiple of the 8-deep slice or not, k below one slice, beta == 0
 * over NaN, a batch with a broadcast 2-D operand, and strided views. */
void test_linalg_gemm_f64_tc(void) {
  /* 200 x 136 x 150: ragged tiles and 10 slices of gemm_dmma2's 16 k, the
   * last partial, so its 4 pipeline stages wrap round twice. */
  static const int64_t shapes[][3] = {
      {128, 128, 64}, {130, 129, 13}, {67, 200, 5}, {1, 1, 1},
      {200, 136, 150},
  };
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 2;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      double beta = (s + (size_t)t) % 2 ? 0.0 : 1.5;
      lg_case(KILN_FLOAT64, ta, tb, shapes[s][0], shapes[s][1],
              shapes[s][2], -0.5, beta, 0, NULL, 0, &o);
    }
  int64_t batch[2] = {3, 1};
  lg_case(KILN_FLOAT64, false, true, 70, 140, 17, 1.0, 0.25, 2, batch,
          LG_BA | LG_BB | LG_BC, &o);
  lg_case(KILN_FLOAT64, true, false, 129, 64, 24, 2.0, 0.0, 1, batch,
          LG_BA | LG_BC, &o);
  /* A: every other row of a block, starting one element in; B: a
   * column-major view (its transpose's storage) */
  int64_t sa[2] = {2 * 131, 33}, va[2] = {131, 32}, astr[2] = {66, 1};
  lg_mat a = lg_view(lg_random(KILN_FLOAT64, 2, sa), 2, va, astr, 1);
  int64_t sb[2] = {130, 32}, vb[2] = {32, 130}, bstr[2] = {1, 32};
  lg_mat b = lg_view(lg_random(KILN_FLOAT64, 2, sb), 2, vb, bstr, 0);
  int64_t sc[2] = {131, 130};
  lg_mat c = lg_poisoned(KILN_FLOAT64, 2, sc, 1.0);
  lg_gemm_check("gemm_dmma, sliced A view, column-major B", false, false,
                1.0, &a, &b, 1.0, &c, &o);
  lg_free(&a);
  lg_free(&b);
  lg_free(&c);
}

/* The float64 trapezoid GEMM (kiln__gemm_tri: gemm_dmma2_tri, or
 * gemm_dmma_tri under KILN_GEMM_DMMA=1) with k deep enough (150: ten
 * 16-k slices, the last partial) that the tile's pipeline stages wrap,
 * on ragged tiles: lower 300 x 200 and its upper mirror, every operand
 * layout (KA, KB both ways), beta 1 and 0 (C all NaN then: never read).
 * Every element off the trapezoid keeps its value; on it, the float64
 * reference within (k + 2) eps times the sum of the terms' magnitudes. */
void test_linalg_gemm_f64_tri_deep(void) {
  const int64_t k = 150;
  for (int upper = 0; upper < 2; upper++)
    for (int lay = 0; lay < 4; lay++) {
      bool ta = lay & 1, tb = lay & 2;
      int64_t m = upper ? 200 : 300, n = upper ? 300 : 200;
      int64_t sa[2] = {ta ? k : m, ta ? m : k};
      int64_t sb[2] = {tb ? n : k, tb ? k : n}, sc[2] = {m, n};
      double *a = kt_la_alloc(m * k), *b = kt_la_alloc(k * n);
      double *c = kt_la_alloc(m * n);
      for (int64_t i = 0; i < m * k; i++)
        a[i] = kt_uniform(-1, 1);
      for (int64_t i = 0; i < k * n; i++)
        b[i] = kt_uniform(-1, 1);
      double alpha = lay == 3 ? 0.75 : -1.0, beta = lay == 3 ? 0.0 : 1.0;
      for (int64_t i = 0; i < m * n; i++)
        c[i] = beta == 0.0 ? NAN : kt_uniform(-1, 1);
      kiln_array *va = kt_la_array(KILN_FLOAT64, 2, sa, a);
      kiln_array *vb = kt_la_array(KILN_FLOAT64, 2, sb, b);
      kiln_array *vc = kt_la_array(KILN_FLOAT64, 2, sc, c);
      CHECK_OK(kiln__gemm_tri(kt_stream(), upper, ta, tb, alpha, va, vb,
                              beta, vc));
      double *got = kt_read_f64(vc);
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
          int64_t at = i * n + j;
          bool in = upper ? j / 128 >= i / 128 : i / 128 >= j / 128;
          if (!in) {
            CHECK(got[at] == c[at] || (isnan(got[at]) && isnan(c[at])),
                  "upper %d layout %d: C (%lld, %lld) "
                  "off the trapezoid changed from %.17g to %.17g", upper,
                  lay, (long long)i, (long long)j, c[at], got[at]);
            continue;
          }
          double sum = 0, mag = 0;
          for (int64_t q = 0; q < k; q++) {
            double x = ta ? a[q * m + i] : a[i * k + q];
            double y = tb ? b[j * k + q] : b[q * n + j];
            sum += x * y;
            mag += fabs(x * y);
          }
          double old = beta == 0.0 ? 0.0 : beta * c[at];
          double ref = alpha * sum + old;
          double tol = (double)(k + 2) * kt_eps(KILN_FLOAT64) *
                       (fabs(alpha) * mag + fabs(old));
          CHECK(fabs(got[at] - ref) <= tol, "upper %d layout %d: C (%lld, "
                "%lld) is %.17g, not %.17g", upper, lay, (long long)i,
                (long long)j, got[at], ref);
        }
      free(got);
      kiln_array *all[3] = {va, vb, vc};
      kt_destroy_all(all, 3);
      free(a);
      free(b);
      free(c);
    }
}

/* The float16/bfloat16 sweep of the tensor-core kernel tests: every
 * shape in both dtypes and all four transposes, beta alternating 0 and
 * 0.5, alpha 1 except `alpha_tt` when both operands are transposed. */
static void lg_sweep16(const int64_t (*shapes)[3], size_t count,
                       double alpha_tt, const kiln_linalg_opts *o) {
  static const kiln_dtype dts[2] = {KILN_FLOAT16, KILN_BFLOAT16};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < count; s++)
      for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        double beta = (s + (size_t)t) % 2 ? 0.0 : 0.5;
        lg_case(dts[d], ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                t == 3 ? alpha_tt : 1.0, beta, 0, NULL, 0, o);
      }
}

/* The pipelined tensor-core kernel (gemm_tc2) takes float16 / bfloat16
 * operands whose rows or k are contiguous in 16-byte vectors (sizes that
 * are multiples of 8): every transpose picks one staging layout per
 * operand; partial 128-tiles in m and n, k not a multiple of the 32-deep
 * slice, one slice, a batch with a broadcast operand. On the CPU the
 * kernel's SIMT fallback runs. */
void test_linalg_gemm_tc_pipelined(void) {
  static const int64_t shapes[][3] = {
      {136, 264, 40}, {128, 128, 96}, {8, 16, 8},
  };
  lg_sweep16(shapes, sizeof shapes / sizeof shapes[0], 1.0, NULL);
  int64_t batch[1] = {3};
  lg_case(KILN_BFLOAT16, false, false, 72, 136, 48, 0.5, 0.0, 1, batch,
          LG_BA | LG_BB | LG_BC, NULL);
  lg_case(KILN_FLOAT16, false, true, 72, 136, 48, 1.0, -1.0, 1, batch,
          LG_BA | LG_BC, NULL);
}

/* The Hopper kernel (gemm_wg, 128 x 256 tiles, a 4-stage pipeline of
 * BK = 64 slices), forced with opts->path 5 so that every device runs it
 * (its SIMT fallback on the CPU, gemm_tc2's code on CUDA before sm_90a):
 * float16 and bfloat16, every transpose (K-major and MN-major operands
 * in shared memory), edge tiles in m and n, k over several turns of the
 * stage ring with a ragged last slice and k under one slice, beta == 0
 * over NaN and beta != 0, a batch with a broadcast operand, and operands
 * that allow no 16-byte vectors (they fall back to gemm_tc). */
void test_linalg_gemm_wg(void) {
  static const int64_t shapes[][3] = {
      {136, 264, 328}, {128, 256, 64}, {8, 16, 8}, {200, 72, 520},
  };
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 5;
  lg_sweep16(shapes, sizeof shapes / sizeof shapes[0], -0.5, &o);
  int64_t batch[2] = {2, 2};
  lg_case(KILN_BFLOAT16, false, false, 72, 300, 136, 0.5, 0.0, 2, batch,
          LG_BA | LG_BB | LG_BC, &o);
  lg_case(KILN_FLOAT16, true, false, 72, 136, 48, 1.0, -1.0, 2, batch,
          LG_BB | LG_BC, &o);
  lg_case(KILN_BFLOAT16, false, false, 130, 260, 33, 1.0, 0.0, 0, NULL, 0,
          &o);
}

/* ---- errors -------------------------------------------------------------- */

/* A failed gemm must leave C exactly as it was. */
static void lg_expect_gemm_error(const char *what, bool ta, bool tb,
                                 kiln_array *a, kiln_array *b, kiln_array *c,
                                 const kiln_linalg_opts *opts,
                                 const char *mention1, const char *mention2) {
  void *before = c ? kt_read(c) : NULL;
  kiln_clear_error();
  kiln_status st = opts ? kiln_gemm_ex(ta, tb, 1.0, a, b, 0.0, c, opts)
                        : kiln_gemm(ta, tb, 1.0, a, b, 0.0, c);
  /* an unsupported dtype may say so; every other error is a bad argument */
  bool dtype_case = mention1 && !strcmp(mention1, "int32");
  CHECK(st == KILN_ERROR_INVALID_ARGUMENT ||
            (dtype_case && st == KILN_ERROR_UNSUPPORTED),
        "%s: status %d (%s), expected invalid argument", what, (int)st,
        kiln_status_string(st));
  const char *msg = kiln_last_error();
  CHECK(strstr(msg, opts ? "[kiln_gemm_ex]" : "[kiln_gemm]") == msg,
        "%s: the message should start with the function's name: %s", what,
        msg);
  CHECK(!mention1 || strstr(msg, mention1), "%s: the message should "
        "mention \"%s\": %s", what, mention1, msg);
  CHECK(!mention2 || strstr(msg, mention2), "%s: the message should "
        "mention \"%s\": %s", what, mention2, msg);
  if (c) {
    void *after = kt_read(c);
    CHECK(memcmp(before, after, kiln_array_nbytes_dense(c)) == 0,
          "%s: C was written by a failed call", what);
    free(after);
  }
  free(before);
}

static kiln_array *lg_arr(kiln_dtype dt, int ndim, const int64_t *shape) {
  lg_mat m = lg_random(dt, ndim, shape);
  free(m.v);
  return m.arr;
}

void test_linalg_gemm_errors(void) {
  int64_t s34[2] = {3, 4}, s56[2] = {5, 6}, s36[2] = {3, 6}, s46[2] = {4, 6};
  int64_t s35[2] = {3, 5}, s4[1] = {4};
  kiln_array *a = lg_arr(KILN_FLOAT32, 2, s34);
  kiln_array *b56 = lg_arr(KILN_FLOAT32, 2, s56);
  kiln_array *b = lg_arr(KILN_FLOAT32, 2, s46);
  kiln_array *c = lg_arr(KILN_FLOAT32, 2, s36);
  kiln_array *c35 = lg_arr(KILN_FLOAT32, 2, s35);
  lg_expect_gemm_error("shapes that do not chain", false, false, a, b56, c,
                       NULL, "4", "5");
  lg_expect_gemm_error("transposes that do not chain", true, false, a, b, c,
                       NULL, "3", "4");
  lg_expect_gemm_error("C of the wrong shape", false, false, a, b, c35,
                       NULL, "C", "5");
  kiln_array *b64 = lg_arr(KILN_FLOAT64, 2, s46);
  lg_expect_gemm_error("B float64, A and C float32", false, false, a, b64,
                       c, NULL, "float64", "float32");
  kiln_array *c16 = lg_arr(KILN_FLOAT16, 2, s36);
  lg_expect_gemm_error("C float16, A and B float32", false, false, a, b,
                       c16, NULL, "float16", NULL);
  kiln_array *ai = lg_arr(KILN_INT32, 2, s34), *bi = lg_arr(KILN_INT32, 2,
                                                             s46);
  kiln_array *ci = lg_arr(KILN_INT32, 2, s36);
  lg_expect_gemm_error("int32 operands", false, false, ai, bi, ci, NULL,
                       "int32", NULL);
  kiln_array *a1 = lg_arr(KILN_FLOAT32, 1, s4);
  lg_expect_gemm_error("a 1-D operand", false, false, a1, b, c, NULL,
                       "dimension", NULL);
  int64_t ba[3] = {2, 3, 4}, bb[3] = {3, 4, 6}, bc[3] = {2, 3, 6};
  kiln_array *a3 = lg_arr(KILN_FLOAT32, 3, ba);
  kiln_array *b3 = lg_arr(KILN_FLOAT32, 3, bb);
  kiln_array *c3 = lg_arr(KILN_FLOAT32, 3, bc);
  lg_expect_gemm_error("batch dimensions 2 and 3", false, false, a3, b3, c3,
                       NULL, "batch", NULL);
  /* C must hold every batch entry: a 2-D C with a batched A is refused */
  lg_expect_gemm_error("a batched A with a 2-D C", false, false, a3, b, c,
                       NULL, NULL, NULL);
  lg_expect_gemm_error("A is NULL", false, false, NULL, b, c, NULL, NULL,
                       NULL);
  lg_expect_gemm_error("C is NULL", false, false, a, b, NULL, NULL, NULL,
                       NULL);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.struct_size = 3;
  lg_expect_gemm_error("opts->struct_size unset", false, false, a, b, c, &o,
                       "struct_size", NULL);
  kiln_linalg_opts_init(&o);
  o.precision = (kiln_precision)7;
  lg_expect_gemm_error("opts->precision invalid", false, false, a, b, c, &o,
                       "precision", NULL);
  kiln_linalg_opts_init(&o);
  o.path = 2; /* tensor cores: not for default-precision float32 */
  lg_expect_gemm_error("path 2 for float32", false, false, a, b, c, &o,
                       "path", NULL);
  int64_t s36b[2] = {3, 6};
  kiln_array *a64 = lg_arr(KILN_FLOAT64, 2, s34);
  kiln_array *c64 = lg_arr(KILN_FLOAT64, 2, s36b);
  o.path = 4; /* float32 SIMT tiles: float32 with default precision only */
  lg_expect_gemm_error("path 4 for float64", false, false, a64, b64, c64,
                       &o, "path 4", "float64");
  o.precision = KILN_PRECISION_TF32;
  lg_expect_gemm_error("path 4 with TF32", false, false, a, b, c, &o,
                       "path 4", "TF32");
  kiln_linalg_opts_init(&o);
  o.path = 5; /* warpgroup MMA: float16 / bfloat16 only */
  lg_expect_gemm_error("path 5 for float32", false, false, a, b, c, &o,
                       "path 5", "float32");
  o.path = 6;
  lg_expect_gemm_error("path 6", false, false, a, b, c, &o, "path", NULL);
  o.path = -1;
  lg_expect_gemm_error("path -1", false, false, a, b, c, &o, "path", NULL);
  /* Operands on two devices need two devices: not testable with one. */

  /* matmul: no result on failure */
  kiln_array *out = (kiln_array *)&o;
  kiln_clear_error();
  CHECK_STATUS(kiln_matmul(a, b56, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == (kiln_array *)&o, "a failed matmul wrote *out");
  CHECK(strstr(kiln_last_error(), "[kiln_matmul]") == kiln_last_error(),
        "matmul error prefix: %s", kiln_last_error());
  CHECK_STATUS(kiln_matmul(a3, b3, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("batch");
  kiln_status st = kiln_matmul(ai, bi, &out);
  CHECK(st == KILN_ERROR_INVALID_ARGUMENT || st == KILN_ERROR_UNSUPPORTED,
        "matmul of int32: status %d (%s)", (int)st, kiln_status_string(st));
  CHECK_ERR_HAS("int32");
  CHECK_STATUS(kiln_matmul(a, b64, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("float64");
  CHECK_STATUS(kiln_matmul(a1, b, &out), KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == (kiln_array *)&o, "a failed matmul wrote *out");
  kiln_array *all[] = {a,  b56, b,  c,  c35, b64, c16, ai,
                       bi, ci,  a1, a3, b3,  c3,  a64, c64};
  kt_destroy_all(all, (int)(sizeof all / sizeof all[0]));
}

/* ---- every kernel the driver launches, compiled for a CUDA target ------- */

/* The kernels of kernels/gemm.metal, and how many configurations of each
 * gemm.c enumerates: 4 dtypes x BETA0 scale kernels; SIMT 3 tiles (2 for
 * float64) x BETA0, LA, LB; the first tensor-core kernel 4 (dtype, MMA)
 * families x BETA0 x 4 x 4 operand modes; gemm_f32 BETA0 x 4 x 4 operand
 * modes x EXACT; gemm_dmma BETA0, KA, KB; gemm_tc2 2 dtypes x BETA0 x 2 x 2
 * vector modes (transposes travel as views, so no kernel has TA/TB
 * variants); the trapezoid kernels gemm_f32_tri and gemm_dmma_tri (the
 * Cholesky's updates) those of gemm_f32 (less its mode pairs 0 / 3,
 * 3 / 0: gemm.c's f32_tri_modes) and gemm_dmma x UPPER; gemm_dmma2 and
 * gemm_dmma2_tri as gemm_dmma and gemm_dmma_tri. */
#define LG_KERNELS 11
static const char *const lg_kernel_names[LG_KERNELS] = {
    "gemm_scale",   "gemm_simt",     "gemm_tc",   "gemm_f32",
    "gemm_dmma",    "gemm_tc2",      "gemm_wg",   "gemm_f32_tri",
    "gemm_dmma_tri", "gemm_dmma2",   "gemm_dmma2_tri"};
static const int lg_kernel_configs[LG_KERNELS] = {8,  88, 128, 64, 8, 16,
                                                  16, 112, 16, 8,  16};

/* The configurations gemm.c enumerates, compiled by a few threads (one
 * NVRTC compile of a GEMM kernel takes a good fraction of a second). A
 * worker records the first failure; the main thread reports it. */
typedef struct lg_nvrtc {
  const char *target;
  int arch; /* 90 for sm_90a */
  kiln__gemm_config *configs;
  int count, cap;
  pthread_mutex_t lock;
  int next;                     /* under lock */
  bool failed;                  /* under lock */
  char failure[1024];           /* under lock */
  uint64_t smem[LG_KERNELS];    /* per kernel, as lg_kernel_names */
  int by_kernel[LG_KERNELS];    /* (filled by the main thread) */
} lg_nvrtc;

static int lg_kernel_index(const kiln__gemm_config *c) {
  for (int i = 0; i < LG_KERNELS; i++)
    if (strcmp(c->name, lg_kernel_names[i]) == 0)
      return i;
  CHECK(false, "gemm.c enumerated an unknown kernel %s", c->name);
  return 0;
}

static kiln_status lg_collect_config(const kiln__gemm_config *c,
                                     void *user) {
  lg_nvrtc *n = user;
  if (n->count == n->cap) {
    n->cap = n->cap ? 2 * n->cap : 256;
    n->configs = realloc(n->configs, (size_t)n->cap * sizeof *n->configs);
    CHECK(n->configs != NULL, "out of host memory");
  }
  n->configs[n->count++] = *c;
  n->by_kernel[lg_kernel_index(c)]++;
  return KILN_OK;
}

/* "gemm_tc T=float16 MMA=0 TA=1 ..." for messages. */
static void lg_config_text(const kiln__gemm_config *c, char *buf,
                           size_t cap) {
  int len = snprintf(buf, cap, "%s", c->name);
  for (int i = 0; i < c->num_template_args && len >= 0 &&
                  (size_t)len < cap;
       i++) {
    const kiln_template_arg *t = &c->template_args[i];
    if (t->kind == KILN_TEMPLATE_DTYPE)
      len += snprintf(buf + len, cap - (size_t)len, " %s=%s", t->name,
                      kiln_dtype_name(t->dtype));
    else
      len += snprintf(buf + len, cap - (size_t)len, " %s=%lld", t->name,
                      (long long)t->value);
  }
}

/* Shared memory the tensor-core branch of a kernel declares on sm_80+,
 * or 0 for kernels without one: gemm_tc two slices of 128 rows of 20
 * uints (36 for TF32); gemm_dmma and gemm_tc2 three pipeline stages of
 * 16 KiB (48 KiB). Their SIMT fallbacks declare less (16896 bytes or
 * below), so the size tells which branch was compiled. */
static uint64_t lg_tc_smem(const kiln__gemm_config *c) {
  if (strcmp(c->name, "gemm_tc") == 0)
    return 2u * 128u * (c->mma == 2 ? 36u : 20u) * 4u;
  if (strcmp(c->name, "gemm_dmma") == 0 ||
      strcmp(c->name, "gemm_dmma_tri") == 0 ||
      strcmp(c->name, "gemm_tc2") == 0)
    return 48u * 1024u;
  return 0;
}

/* The value of c's template argument `name` (-1 without one). */
static int64_t lg_targ(const kiln__gemm_config *c, const char *name) {
  for (int i = 0; i < c->num_template_args; i++)
    if (strcmp(c->template_args[i].name, name) == 0)
      return c->template_args[i].value;
  return -1;
}

/* Compiles one configuration and checks it against the limits a GPU-less
 * machine can check; writes why not into `why` (empty: fine). */
static void lg_compile_one(const lg_nvrtc *n, const kiln__gemm_config *c,
                           uint64_t *smem, char *why, size_t cap) {
  char what[256];
  lg_config_text(c, what, sizeof what);
  why[0] = '\0';
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("gemm", c->name, c->inputs,
                                        c->outputs, c->flags, &k);
  if (st != KILN_OK) {
    snprintf(why, cap, "%s: kiln__library_kernel failed: %s", what,
             kiln_last_error());
    return;
  }
  kiln_launch L;
  kiln_launch_init(&L);
  L.num_inputs = c->num_inputs;
  L.outputs = &c->output;
  L.num_outputs = 1;
  L.template_args = c->template_args;
  L.num_template_args = c->num_template_args;
  L.grid[0] = L.threadgroup[0] = (uint32_t)c->threads;
  L.device = kt_device();
  kiln_compile_report rep;
  memset(&rep, 0, sizeof rep);
  rep.struct_size = sizeof rep;
  st = kiln_kernel_compile(k, &L, c->input_specs, n->target, &rep, NULL,
                           NULL, NULL);
  *smem = rep.threadgroup_memory;
  if (st != KILN_OK)
    snprintf(why, cap, "%s does not compile for %s (%s): %.600s", what,
             n->target, kiln_status_string(st), kiln_last_error());
  else if (c->threads < 1 || c->threads > 1024)
    snprintf(why, cap, "%s launches %d threads per threadgroup", what,
             c->threads);
  else if (rep.threadgroup_memory > 48 * 1024)
    snprintf(why, cap, "%s uses %llu bytes of threadgroup memory for %s "
             "(static shared memory stops at 48 KiB)", what,
             (unsigned long long)rep.threadgroup_memory, n->target);
  else if (rep.registers >= 0 &&
           (int64_t)rep.registers * c->threads > 65536)
    snprintf(why, cap, "%s needs %d registers x %d threads, more than an "
             "SM holds", what, rep.registers, c->threads);
  /* The kernels written for the CUDA backend's fast path must not spill
   * registers to local memory. */
  else if ((strcmp(c->name, "gemm_f32") == 0 ||
            strcmp(c->name, "gemm_f32_tri") == 0 ||
            strcmp(c->name, "gemm_dmma") == 0 ||
            strcmp(c->name, "gemm_dmma_tri") == 0 ||
            strcmp(c->name, "gemm_dmma2") == 0 ||
            strcmp(c->name, "gemm_dmma2_tri") == 0 ||
            strcmp(c->name, "gemm_tc2") == 0 ||
            strcmp(c->name, "gemm_wg") == 0) &&
           rep.spill_store_bytes + rep.spill_load_bytes > 0)
    snprintf(why, cap, "%s spills registers for %s (%llu bytes stored, "
             "%llu loaded)", what, n->target,
             (unsigned long long)rep.spill_store_bytes,
             (unsigned long long)rep.spill_load_bytes);
  /* gemm_f32 runs two groups of 256 threads per SM only at 128 registers
   * or fewer: above, one group, and LU's trailing updates (k = 256) lost
   * ~14% (measured: a 16-byte epilogue, and a grid-stride tile loop at
   * 174). So for its unchecked loop (EXACT: 121-128 on sm_90a); the
   * general loop takes 127-141, above 128 where rows are contiguous (the
   * kernel's comment), a known cost this test does not guard. */
  else if ((strcmp(c->name, "gemm_f32") == 0 ||
            strcmp(c->name, "gemm_f32_tri") == 0) &&
           rep.registers > 128 && lg_targ(c, "EXACT") != 0)
    snprintf(why, cap, "%s uses %d registers per thread for %s: above 128, "
             "one group of %d threads per SM instead of two", what,
             rep.registers, n->target, c->threads);
  /* Without a disassembler, the shared-memory size tells which branch of
   * a tensor-core kernel was compiled: on sm_80+ it must be the mma.sync
   * one. */
  /* gemm_wg's stages are dynamic shared memory in every CUDA branch; its
   * wgmma branch (sm_90a) holds 128 float32 accumulators per thread, far
   * more registers than the gemm_tc2 fallback's 64. */
  else if (strcmp(c->name, "gemm_wg") == 0 &&
           strcmp(n->target, "sm_90a") == 0 && rep.registers >= 0 &&
           rep.registers < 160)
    snprintf(why, cap, "%s for sm_90a uses %d registers per thread, too "
             "few for its wgmma branch's 128 accumulators: was "
             "GEMM_HAS_WGMMA off?", what, rep.registers);
  /* gemm_dmma2's stages are dynamic shared memory: its mma.sync branch
   * declares no static threadgroup memory, its SIMT fallback 16896
   * bytes. */
  else if (strncmp(c->name, "gemm_dmma2", 10) == 0 && n->arch >= 80 &&
           rep.threadgroup_memory != 0)
    snprintf(why, cap, "%s for %s uses %llu bytes of static threadgroup "
             "memory, not the none of its tensor-core branch: was "
             "GEMM_HAS_MMA off?", what, n->target,
             (unsigned long long)rep.threadgroup_memory);
  else if (lg_tc_smem(c) != 0 && n->arch >= 80 &&
           rep.threadgroup_memory != lg_tc_smem(c))
    snprintf(why, cap, "%s for %s uses %llu bytes of threadgroup memory, "
             "not the %llu of its tensor-core branch: was GEMM_HAS_MMA "
             "off?", what, n->target,
             (unsigned long long)rep.threadgroup_memory,
             (unsigned long long)lg_tc_smem(c));
}

static void *lg_compile_worker(void *arg) {
  lg_nvrtc *n = arg;
  char why[1024];
  for (;;) {
    pthread_mutex_lock(&n->lock);
    int i = n->failed ? n->count : n->next++;
    pthread_mutex_unlock(&n->lock);
    if (i >= n->count)
      return NULL;
    uint64_t smem = 0;
    lg_compile_one(n, &n->configs[i], &smem, why, sizeof why);
    pthread_mutex_lock(&n->lock);
    int kind = lg_kernel_index(&n->configs[i]);
    if (smem > n->smem[kind])
      n->smem[kind] = smem;
    if (why[0] != '\0' && !n->failed) {
      n->failed = true;
      snprintf(n->failure, sizeof n->failure, "%s", why);
    }
    pthread_mutex_unlock(&n->lock);
  }
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch, as gemm.c enumerates them, for that target;
 * skipped otherwise. */
void test_linalg_gemm_nvrtc(void) {
  const char *target = getenv("KILN_TEST_NVRTC_TARGET");
  if (target == NULL || *target == '\0')
    kt_skip("set KILN_TEST_NVRTC_TARGET (e.g. sm_90a) to run it");
  lg_nvrtc n;
  memset(&n, 0, sizeof n);
  n.target = target;
  if (sscanf(target, "sm_%d", &n.arch) != 1)
    n.arch = 0;
  CHECK(pthread_mutex_init(&n.lock, NULL) == 0, "pthread_mutex_init");
  CHECK_OK(kiln__gemm_for_each_config(lg_collect_config, &n));
  /* Every kernel, dtype and tensor-core family is there */
  for (int i = 0; i < LG_KERNELS; i++)
    CHECK(n.by_kernel[i] == lg_kernel_configs[i],
          "gemm.c enumerated %d configurations of %s; expected %d",
          n.by_kernel[i], lg_kernel_names[i], lg_kernel_configs[i]);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int workers = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
  pthread_t th[8];
  int started = 0;
  for (; started < workers; started++)
    if (pthread_create(&th[started], NULL, lg_compile_worker, &n) != 0)
      break;
  if (started == 0)
    lg_compile_worker(&n);
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  CHECK(!n.failed, "%s", n.failure);
  printf("compiled %d GEMM configurations for %s on %d threads; largest "
         "threadgroup memory (bytes):",
         n.count, target, started > 0 ? started : 1);
  for (int i = 0; i < LG_KERNELS; i++)
    printf(" %s %llu", lg_kernel_names[i], (unsigned long long)n.smem[i]);
  printf("\n");
  pthread_mutex_destroy(&n.lock);
  free(n.configs);
}

/* ---- the CLI: kiln linalg ------------------------------------------------ */

/* Host values of a matrix file written for the CLI. */
static lg_mat lg_cli_input(const char *dir, const char *name, kiln_dtype dt,
                           int ndim, const int64_t *shape, char *path,
                           size_t cap) {
  lg_mat m;
  memset(&m, 0, sizeof m);
  m.dt = dt;
  m.ndim = ndim;
  memcpy(m.shape, shape, (size_t)ndim * sizeof *shape);
  int64_t n = lg_count(ndim, shape);
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1) * kiln_dtype_size(dt));
  CHECK(buf != NULL, "out of host memory");
  m.v = lg_alloc(n);
  for (int64_t i = 0; i < n; i++) {
    kt_set(dt, buf, (size_t)i, kt_uniform(-1, 1));
    m.v[i] = kt_get(dt, buf, (size_t)i);
  }
  snprintf(path, cap, "%s/%s", dir, name);
  kt_npy_write(path, dt, ndim, shape, buf);
  free(buf);
  return m;
}

/* kiln linalg gemm with batches, transposes and alpha, read back with an
 * independent reader and checked like the library; --dtype converts. */
void test_linalg_cli_gemm(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lgcli"), od[4200], pa[4200], pb[4200], pc[4300];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  snprintf(pc, sizeof pc, "%s/C.npy", od);
  /* A: 2×3 batch of 5×4 (transposed: 4×5); B: 2-D 6×5 (transposed: 5×6) */
  int64_t sa[4] = {2, 3, 5, 4}, sb[2] = {6, 5}, sc[4] = {2, 3, 4, 6};
  lg_mat a = lg_cli_input(dir, "a.npy", KILN_FLOAT32, 4, sa, pa, sizeof pa);
  lg_mat b = lg_cli_input(dir, "b.npy", KILN_FLOAT32, 2, sb, pb, sizeof pb);
  lg_mat c0 = lg_shape_only(4, sc);
  lg_expect e = lg_reference(true, true, -0.5, &a, &b, 0.0, &c0);
  kt_cli r = kt_kiln("linalg", "gemm", pa, pb, "--trans-a", "--trans-b",
                     "--alpha", "-0.5", "--out-dir", od, "--device",
                     kt_device_name(), NULL);
  CHECK(r.rc == 0, "kiln linalg gemm exit %d, stderr: %s", r.rc, r.err);
  CHECK(r.out[0] == '\0', "success prints nothing, printed: %s", r.out);
  kt_cli_free(&r);
  double *got = kt_npy_read_f64(pc, 0, KILN_FLOAT32, "(2, 3, 4, 6)",
                                (size_t)e.n);
  LG_CHECK("kiln linalg gemm float32", KILN_FLOAT32, KILN_PRECISION_DEFAULT,
           got, &e);
  free(got);
  CHECK(kt_dir_count(od) == 1, "only C.npy is written (no temporaries)");
  /* --dtype float64: the float32 values, converted, multiplied in
   * float64; and the default alpha of 1 */
  lg_expect_free(&e);
  e = lg_reference(true, true, 1.0, &a, &b, 0.0, &c0);
  r = kt_kiln("linalg", "gemm", "--dtype", "float64", "--trans-b",
              "--trans-a", pa, pb, "--out-dir", od, "--device",
              kt_device_name(), NULL);
  CHECK(r.rc == 0, "kiln linalg gemm --dtype float64 exit %d, stderr: %s",
        r.rc, r.err);
  kt_cli_free(&r);
  got = kt_npy_read_f64(pc, 0, KILN_FLOAT64, "(2, 3, 4, 6)", (size_t)e.n);
  LG_CHECK("kiln linalg gemm --dtype float64", KILN_FLOAT64,
           KILN_PRECISION_DEFAULT, got, &e);
  free(got);
  lg_expect_free(&e);
  lg_free(&a);
  lg_free(&b);
  /* float16 inputs stay float16; B batched, A broadcast, no transposes */
  int64_t sa2[2] = {3, 7}, sb2[3] = {2, 7, 5}, sc2[3] = {2, 3, 5};
  a = lg_cli_input(dir, "a16.npy", KILN_FLOAT16, 2, sa2, pa, sizeof pa);
  b = lg_cli_input(dir, "b16.npy", KILN_FLOAT16, 3, sb2, pb, sizeof pb);
  c0 = lg_shape_only(3, sc2);
  e = lg_reference(false, false, 2.0, &a, &b, 0.0, &c0);
  r = kt_kiln("linalg", "gemm", pa, pb, "--alpha=2", "--out-dir", od,
              "--device", kt_device_name(), NULL);
  CHECK(r.rc == 0, "kiln linalg gemm float16 exit %d, stderr: %s", r.rc,
        r.err);
  kt_cli_free(&r);
  got = kt_npy_read_f64(pc, 0, KILN_FLOAT16, "(2, 3, 5)", (size_t)e.n);
  LG_CHECK("kiln linalg gemm float16", KILN_FLOAT16, KILN_PRECISION_DEFAULT,
           got, &e);
  free(got);
  lg_expect_free(&e);
  lg_free(&a);
  lg_free(&b);
  kt_rmtree(dir);
  free(dir);
}

/* The same interface driven from numpy, as other tools will use it. */
void test_linalg_cli_gemm_numpy(void) {
  char *dir = kt_la_numpy_dir("lgnp");
  char script[8192];
  snprintf(script, sizeof script,
           KT_LA_NUMPY_HEAD
           "def run(a, b, *flags):\n"
           "    np.save(os.path.join(d, 'a.npy'), a)\n"
           "    np.save(os.path.join(d, 'b.npy'), b)\n"
           "    od = os.path.join(d, 'out')\n"
           "    os.makedirs(od, exist_ok=True)\n"
           "    r = subprocess.run([kiln, 'linalg', 'gemm',\n"
           "        os.path.join(d, 'a.npy'), os.path.join(d, 'b.npy'),\n"
           "        '--out-dir', od, '--device', dev, *flags],\n"
           "        capture_output=True, text=True)\n"
           "    assert r.returncode == 0, r.stderr\n"
           "    return np.load(os.path.join(od, 'C.npy'))\n"
           "T = lambda x: np.swapaxes(x, -1, -2)\n"
           "for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-13)):\n"
           "    a = rng.standard_normal((3, 2, 9, 7)).astype(dt)\n"
           "    b = rng.standard_normal((3, 2, 11, 9)).astype(dt)\n"
           "    c = run(a, b, '--trans-a', '--trans-b', '--alpha', '1.75')\n"
           "    ref = 1.75 * (T(a).astype(np.float64) @ T(b).astype("
           "np.float64))\n"
           "    assert c.dtype == dt and c.shape == (3, 2, 7, 11), "
           "(c.dtype, c.shape)\n"
           "    assert np.allclose(c, ref, rtol=tol, atol=tol * 9), "
           "abs(c - ref).max()\n"
           "    a2 = rng.standard_normal((9, 7)).astype(dt)\n"
           "    c = run(a2, b, '--trans-a', '--trans-b')\n"
           "    ref = T(a2).astype(np.float64) @ T(b).astype(np.float64)\n"
           "    assert c.shape == (3, 2, 7, 11) and np.allclose(c, ref, "
           "rtol=tol, atol=tol * 9)\n"
           "ai = rng.integers(-9, 9, (4, 6)).astype(np.int32)\n"
           "bi = rng.integers(-9, 9, (6, 5)).astype(np.int16)\n"
           "c = run(ai, bi, '--dtype', 'float64')\n"
           "assert c.dtype == np.float64 and np.array_equal(c, "
           "ai.astype(np.float64) @ bi), c\n"
           "h = rng.standard_normal((5, 8)).astype(np.float16)\n"
           "c = run(h, h, '--trans-b', '--alpha', '-1')\n"
           "ref = -(h.astype(np.float64) @ h.T.astype(np.float64))\n"
           "assert c.dtype == np.float16 and c.shape == (5, 5)\n"
           "assert np.allclose(c.astype(np.float64), ref, rtol=2e-3, "
           "atol=2e-2), abs(c - ref).max()\n"
           "e = run(np.zeros((0, 3), np.float32), np.ones((3, 4), "
           "np.float32))\n"
           "assert e.shape == (0, 4) and e.dtype == np.float32\n"
           "z = run(np.ones((2, 0), np.float64), np.ones((0, 3), "
           "np.float64))\n"
           "assert z.shape == (2, 3) and not z.any(), z\n",
           (unsigned long long)kt_seed);
  kt_python_check(dir, script, "kiln linalg gemm");
  kt_rmtree(dir);
  free(dir);
}

/* An error: exit status `want` (or any failure for 0), one line on stderr
 * starting "kiln linalg", mentioning `mention`, no file written. */
static void lg_cli_expect_error(const char *what, const char *od, int want,
                                const char *mention, kt_cli r) {
  kt_cli_expect_error_line(what, od, want, "kiln linalg", mention, NULL, r);
}

void test_linalg_cli_errors(void) {
  kt_need_cli();
  char *dir = kt_tempdir("lgerr"), od[4200], pa[4200], pb[4200];
  char p1[4200], pi[4200], pbat[4200], p16[4200], py[4200];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir %s", od);
  int64_t sa[2] = {3, 4}, sb[2] = {5, 6}, s1[1] = {4}, sbat[3] = {2, 3, 4};
  int64_t sb2[3] = {3, 4, 2};
  lg_mat a = lg_cli_input(dir, "a.npy", KILN_FLOAT32, 2, sa, pa, sizeof pa);
  lg_mat b = lg_cli_input(dir, "b.npy", KILN_FLOAT32, 2, sb, pb, sizeof pb);
  lg_mat v = lg_cli_input(dir, "v.npy", KILN_FLOAT32, 1, s1, p1, sizeof p1);
  lg_mat x = lg_cli_input(dir, "x.npy", KILN_FLOAT32, 3, sbat, pbat,
                          sizeof pbat);
  lg_mat y = lg_cli_input(dir, "y.npy", KILN_FLOAT32, 3, sb2, py,
                          sizeof py);
  lg_mat h = lg_cli_input(dir, "h.npy", KILN_FLOAT16, 2, sa, p16,
                          sizeof p16);
  int32_t ints[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  snprintf(pi, sizeof pi, "%s/i.npy", dir);
  kt_npy_write(pi, KILN_INT32, 2, sa, ints);
  const char *dev = kt_device_name();
  /* every other operation refuses gemm's options */
  static const char *const other_ops[] = {
      "qr", "cholesky", "solve-triangular", "lu", "solve", "inv", "det"};
  for (size_t i = 0; i < sizeof other_ops / sizeof other_ops[0]; i++)
    lg_cli_expect_error(other_ops[i], od, 2, "--trans-a is an option of gemm",
                        kt_kiln("linalg", other_ops[i], pa, "--trans-a",
                                "--out-dir", od, NULL));
  lg_cli_expect_error("unknown operation", od, 2, "frobnicate",
                      kt_kiln("linalg", "frobnicate", pa, pa, "--out-dir",
                              od, NULL));
  lg_cli_expect_error("no operation", od, 2, NULL, kt_kiln("linalg", NULL));
  lg_cli_expect_error("one input", od, 2, "two inputs",
                      kt_kiln("linalg", "gemm", pa, "--out-dir", od, NULL));
  lg_cli_expect_error("three inputs", od, 2, "two inputs",
                      kt_kiln("linalg", "gemm", pa, pa, pa, "--out-dir", od,
                              NULL));
  lg_cli_expect_error("shapes that do not chain", od, 0, "chain",
                      kt_kiln("linalg", "gemm", pa, pb, "--out-dir", od,
                              "--device", dev, NULL));
  /* 3×4 and y (3×4×2) would chain without --trans-a: 4×3 @ 4×2 does not */
  lg_cli_expect_error("transpose that does not chain", od, 0, "chain",
                      kt_kiln("linalg", "gemm", "--trans-a", pa, py,
                              "--out-dir", od, NULL));
  lg_cli_expect_error("batch dimensions 2 and 3", od, 0, "batch",
                      kt_kiln("linalg", "gemm", pbat, py, "--out-dir", od,
                              NULL));
  lg_cli_expect_error("a 1-D input", od, 0, "dimensions",
                      kt_kiln("linalg", "gemm", p1, pa, "--out-dir", od,
                              NULL));
  lg_cli_expect_error("int32 without --dtype", od, 0, "int32",
                      kt_kiln("linalg", "gemm", pi, pa, "--out-dir", od,
                              NULL));
  lg_cli_expect_error("float16 with float32", od, 0, "--dtype",
                      kt_kiln("linalg", "gemm", p16, pa, "--trans-b",
                              "--out-dir", od, NULL));
  lg_cli_expect_error("--dtype float16", od, 2, "--dtype",
                      kt_kiln("linalg", "gemm", pa, pa, "--trans-b",
                              "--dtype", "float16", "--out-dir", od, NULL));
  lg_cli_expect_error("--alpha abc", od, 2, "--alpha",
                      kt_kiln("linalg", "gemm", pa, pa, "--trans-b",
                              "--alpha", "abc", "--out-dir", od, NULL));
  lg_cli_expect_error("--alpha without a value", od, 2, "--alpha",
                      kt_kiln("linalg", "gemm", pa, pa, "--trans-b",
                              "--out-dir", od, "--alpha", NULL));
  lg_cli_expect_error("unknown flag", od, 2, "--upper",
                      kt_kiln("linalg", "gemm", pa, pa, "--upper",
                              "--out-dir", od, NULL));
  lg_cli_expect_error("bad device", od, 2, "--device",
                      kt_kiln("linalg", "gemm", pa, pa, "--trans-b",
                              "--device", "tpu", "--out-dir", od, NULL));
  lg_cli_expect_error("missing input file", od, 0, "nope.npy",
                      kt_kiln("linalg", "gemm", pa, "/nonexistent/nope.npy",
                              "--out-dir", od, NULL));
  /* `kiln help linalg` lists every operation and says which exist */
  kt_cli r = kt_kiln("help", "linalg", NULL);
  CHECK(r.rc == 0, "kiln help linalg exit %d: %s", r.rc, r.err);
  for (size_t i = 0; i < sizeof other_ops / sizeof other_ops[0]; i++)
    CHECK(strstr(r.out, other_ops[i]) != NULL, "help lists %s:\n%s",
          other_ops[i], r.out);
  CHECK(strstr(r.out, "gemm") && strstr(r.out, "--trans-a") &&
            strstr(r.out, "cholesky A.npy [--upper]") &&
            !strstr(r.out, "not implemented"),
        "help describes gemm and cholesky, and nothing as missing:\n%s",
        r.out);
  kt_cli_free(&r);
  r = kt_kiln("--help", NULL);
  CHECK(r.rc == 0 && strstr(r.out, "linalg"), "kiln --help lists linalg");
  kt_cli_free(&r);
  lg_free(&a);
  lg_free(&b);
  lg_free(&v);
  lg_free(&x);
  lg_free(&y);
  lg_free(&h);
  kt_rmtree(dir);
  free(dir);
}
