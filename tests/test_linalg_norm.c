/*
 * Norms (kiln_norm, kiln_norm_ex) on the device under test.
 *
 * Every result is compared with a host reference computed here in double
 * from the logical elements (a scaled sum of squares, so huge and tiny
 * values are references too), element by element, with a tolerance of a
 * few units of the result dtype's eps plus n double eps for the sums.
 * Before each call the allocator's cache is seeded with a NaN-filled block
 * of the result's size, so an element the kernels forget to write shows
 * up as a mismatch rather than as a lucky zero.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg_check.h"
#include "linalg/linalg.h"

static const kiln_dtype nm_dtypes[2] = {KILN_FLOAT32, KILN_FLOAT64};
static const kiln_norm_type nm_types[4] = {KILN_NORM_FRO, KILN_NORM_1,
                                           KILN_NORM_2, KILN_NORM_INF};

static int64_t nm_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    n *= shape[d];
  return n;
}

/* sqrt(sum x^2) of n values at stride `st`, scaled by the largest so it
 * neither overflows nor underflows. */
static double nm_ref_ssq(const double *x, int64_t n, int64_t st) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = fabs(x[i * st]);
    if (isnan(v))
      return NAN;
    if (v > m)
      m = v;
  }
  if (m == 0 || isinf(m))
    return m;
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = x[i * st] / m;
    s += v * v;
  }
  return m * sqrt(s);
}

/*
 * The reference norms of the dense C-order values `x` of `shape`: one per
 * vector along the last dimension, or per matrix of the last two, in
 * C order of the batch.
 */
static void nm_reference(const double *x, int ndim, const int64_t *shape,
                         kiln_norm_type type, bool vectors, double *ref) {
  int nbd = vectors ? ndim - 1 : ndim - 2;
  int64_t batch = nm_count(nbd, shape);
  int64_t m = vectors ? 1 : shape[ndim - 2], n = shape[ndim - 1];
  for (int64_t b = 0; b < batch; b++) {
    const double *a = x + b * m * n;
    double r = 0;
    if (type == KILN_NORM_FRO || type == KILN_NORM_2) {
      r = nm_ref_ssq(a, m * n, 1);
    } else if (vectors && type == KILN_NORM_1) {
      for (int64_t j = 0; j < n; j++)
        r += fabs(a[j]);
    } else {
      /* max over lines of sums along them: columns for the 1-norm, rows
       * for the inf-norm (a vector's lines are its elements) */
      bool cols = type == KILN_NORM_1 || vectors;
      int64_t lines = cols ? n : m, len = cols ? m : n;
      for (int64_t l = 0; l < lines; l++) {
        double s = 0;
        for (int64_t k = 0; k < len; k++)
          s += fabs(cols ? a[k * n + l] : a[l * n + k]);
        if (isnan(s) || s > r || isnan(r))
          r = isnan(r) ? r : s;
      }
    }
    ref[b] = r;
  }
}

/* Hands the allocator a NaN-filled block of `bytes` to reuse, so a result
 * element the kernels do not write is NaN, not whatever was there. */
static void nm_poison_cache(kiln_dtype dt, int64_t count) {
  if (count <= 0)
    return;
  kiln_array *p = NULL;
  CHECK_OK(kiln_array_create(kt_device(), dt, 1, &count, &p));
  CHECK_OK(kiln_array_fill(p, NAN, NULL));
  CHECK_OK(kiln_array_wait(p));
  kiln_array_destroy(p);
}

/* The relative tolerance for a norm of `terms` terms in `dt`. */
static double nm_rtol(kiln_dtype dt, int64_t terms) {
  return 4.0 * kt_eps(dt) + 2.0 * (double)(terms + 1) * DBL_EPSILON;
}

/* Computes the norm of `arr` (logical dense values `x`, of `shape`), and
 * checks its dtype, shape and every value against the reference. */
static void nm_check(const char *what, kiln_array *arr, const double *x,
                     int ndim, const int64_t *shape, kiln_norm_type type,
                     bool vectors, const kiln_linalg_opts *opts) {
  int nbd = vectors ? ndim - 1 : ndim - 2;
  int64_t batch = nm_count(nbd, shape);
  kiln_dtype dt = kiln_array_dtype(arr);
  nm_poison_cache(dt, batch);
  kiln_array *out = NULL;
  CHECK_OK(kiln_norm_ex(arr, type, vectors, opts, &out));
  CHECK(out != NULL, "%s: no result", what);
  CHECK(kiln_array_dtype(out) == dt, "%s: the result is %s, not %s", what,
        kiln_dtype_name(kiln_array_dtype(out)), kiln_dtype_name(dt));
  CHECK(kiln_array_ndim(out) == nbd, "%s: the result has %d dimensions, "
        "not %d", what, kiln_array_ndim(out), nbd);
  for (int d = 0; d < nbd; d++)
    CHECK(kiln_array_shape(out)[d] == shape[d], "%s: dimension %d of the "
          "result is %lld, not %lld", what, d,
          (long long)kiln_array_shape(out)[d], (long long)shape[d]);
  double *got = kt_read_f64(out);
  double *ref = kt_la_alloc(batch);
  nm_reference(x, ndim, shape, type, vectors, ref);
  /* the reference rounded to the result's dtype, as kiln returns it */
  unsigned char buf[8];
  for (int64_t b = 0; b < batch; b++) {
    kt_set(dt, buf, 0, ref[b]);
    ref[b] = kt_get(dt, buf, 0);
  }
  int64_t terms = vectors ? shape[ndim - 1]
                          : shape[ndim - 2] * shape[ndim - 1];
  CHECK_CLOSE(what, got, ref, (size_t)batch, nm_rtol(dt, terms), 0.0);
  free(got);
  free(ref);
  kiln_array_destroy(out);
}

/* Random values in [-scale, scale] of `shape` in `dt`: the device array
 * and, in *x, the values as kiln sees them. */
static kiln_array *nm_random(kiln_dtype dt, int ndim, const int64_t *shape,
                             double scale, double **x) {
  int64_t n = nm_count(ndim, shape);
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1) * 8);
  double *v = kt_la_alloc(n);
  CHECK(buf != NULL, "out of host memory");
  for (int64_t i = 0; i < n; i++) {
    kt_set(dt, buf, (size_t)i, kt_uniform(-scale, scale));
    v[i] = kt_get(dt, buf, (size_t)i);
  }
  kiln_array *a = kt_array(dt, ndim, shape, buf);
  free(buf);
  *x = v;
  return a;
}

/* Every type of norm of random values of `shape`, vectors and (for 2-D
 * and more) matrices, with `opts`. */
static void nm_all_types(const char *what, kiln_dtype dt, int ndim,
                         const int64_t *shape, double scale,
                         const kiln_linalg_opts *opts) {
  double *x = NULL;
  kiln_array *a = nm_random(dt, ndim, shape, scale, &x);
  char name[256];
  for (int t = 0; t < 4; t++) {
    snprintf(name, sizeof name, "%s %s, vectors, type %d", what,
             kiln_dtype_name(dt), (int)nm_types[t]);
    nm_check(name, a, x, ndim, shape, nm_types[t], true, opts);
    if (ndim < 2 || nm_types[t] == KILN_NORM_2)
      continue;
    snprintf(name, sizeof name, "%s %s, matrices, type %d", what,
             kiln_dtype_name(dt), (int)nm_types[t]);
    nm_check(name, a, x, ndim, shape, nm_types[t], false, opts);
  }
  kiln_array_destroy(a);
  free(x);
}

void test_linalg_norm_vectors(void) {
  int64_t s1[1] = {7}, s2[1] = {1}, s3[3] = {3, 5, 33}, s4[2] = {2, 1000};
  int64_t s5[1] = {100000}, s6[2] = {4000, 3};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = nm_dtypes[d];
    nm_all_types("7", dt, 1, s1, 1.0, NULL);
    nm_all_types("1", dt, 1, s2, 3.0, NULL);
    nm_all_types("3x5x33", dt, 3, s3, 2.0, NULL);
    nm_all_types("2x1000", dt, 2, s4, 1.0, NULL);
    nm_all_types("100000", dt, 1, s5, 1.0, NULL);
    nm_all_types("4000x3", dt, 2, s6, 1.0, NULL);
  }
}

void test_linalg_norm_matrices(void) {
  int64_t s1[2] = {1, 1}, s2[4] = {4, 3, 17, 9}, s3[2] = {40, 300};
  int64_t s4[2] = {300, 40}, s5[2] = {5000, 3}, s6[2] = {3, 5000};
  int64_t s7[3] = {1000, 8, 8};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = nm_dtypes[d];
    nm_all_types("1x1", dt, 2, s1, 5.0, NULL);
    nm_all_types("4x3x17x9", dt, 4, s2, 1.0, NULL);
    nm_all_types("40x300", dt, 2, s3, 1.0, NULL);
    nm_all_types("300x40", dt, 2, s4, 1.0, NULL);
    nm_all_types("5000x3", dt, 2, s5, 1.0, NULL);
    nm_all_types("3x5000", dt, 2, s6, 1.0, NULL);
    nm_all_types("1000x8x8", dt, 3, s7, 1.0, NULL);
  }
}

/* Both forced paths on shapes where each kernel mapping is used: long and
 * short vectors, lines along and across memory, few and many lines. */
void test_linalg_norm_paths(void) {
  int64_t s1[1] = {20000}, s2[3] = {3, 2, 70}, s3[2] = {200, 300};
  int64_t s4[2] = {3000, 5}, s5[2] = {5, 3000}, s6[1] = {3};
  for (int path = 1; path <= 2; path++) {
    kiln_linalg_opts o;
    kiln_linalg_opts_init(&o);
    o.path = path;
    char what[64];
    for (int d = 0; d < 2; d++) {
      kiln_dtype dt = nm_dtypes[d];
      snprintf(what, sizeof what, "path %d, 20000", path);
      nm_all_types(what, dt, 1, s1, 1.0, &o);
      snprintf(what, sizeof what, "path %d, 3x2x70", path);
      nm_all_types(what, dt, 3, s2, 1.0, &o);
      snprintf(what, sizeof what, "path %d, 200x300", path);
      nm_all_types(what, dt, 2, s3, 1.0, &o);
      snprintf(what, sizeof what, "path %d, 3000x5", path);
      nm_all_types(what, dt, 2, s4, 1.0, &o);
      snprintf(what, sizeof what, "path %d, 5x3000", path);
      nm_all_types(what, dt, 2, s5, 1.0, &o);
      snprintf(what, sizeof what, "path %d, 3", path);
      nm_all_types(what, dt, 1, s6, 1.0, &o);
    }
  }
}

/* Views: a transposed batch, every other row and column, a reversed
 * last dimension, and a batch broadcast with stride 0; each checked
 * against the logical elements, on both paths. */
void test_linalg_norm_strided(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = nm_dtypes[d];
    int64_t base_shape[3] = {3, 40, 50};
    double *x = NULL;
    kiln_array *base = nm_random(dt, 3, base_shape, 1.0, &x);
    for (int v = 0; v < 4; v++) {
      int64_t shape[3], strides[3], off = 0;
      const char *name;
      if (v == 0) { /* transposed: 3 x 50 x 40 */
        name = "transposed";
        int64_t sh[3] = {3, 50, 40}, st[3] = {2000, 1, 50};
        memcpy(shape, sh, sizeof sh);
        memcpy(strides, st, sizeof st);
      } else if (v == 1) { /* rows 1, 3, ... and columns 0, 2, ... */
        name = "every other row and column";
        int64_t sh[3] = {3, 20, 25}, st[3] = {2000, 100, 2};
        memcpy(shape, sh, sizeof sh);
        memcpy(strides, st, sizeof st);
        off = 50;
      } else if (v == 2) { /* columns reversed */
        name = "reversed columns";
        int64_t sh[3] = {3, 40, 50}, st[3] = {2000, 50, -1};
        memcpy(shape, sh, sizeof sh);
        memcpy(strides, st, sizeof st);
        off = 49;
      } else { /* matrix 1 broadcast over a batch of 4 */
        name = "broadcast batch";
        int64_t sh[3] = {4, 40, 50}, st[3] = {0, 50, 1};
        memcpy(shape, sh, sizeof sh);
        memcpy(strides, st, sizeof st);
        off = 2000;
      }
      kiln_array *view = NULL;
      CHECK_OK(kiln_array_view(base, 3, shape, strides, off, &view));
      CHECK(!kiln_array_is_contiguous(view), "%s is a strided view", name);
      int64_t n = nm_count(3, shape);
      double *lx = kt_la_alloc(n);
      for (int64_t b = 0, e = 0; b < shape[0]; b++)
        for (int64_t i = 0; i < shape[1]; i++)
          for (int64_t j = 0; j < shape[2]; j++)
            lx[e++] = x[off + b * strides[0] + i * strides[1] +
                        j * strides[2]];
      for (int path = 1; path <= 2; path++) {
        kiln_linalg_opts o;
        kiln_linalg_opts_init(&o);
        o.path = path;
        for (int t = 0; t < 4; t++) {
          char what[160];
          snprintf(what, sizeof what, "%s %s, path %d, vectors, type %d",
                   name, kiln_dtype_name(dt), path, (int)nm_types[t]);
          nm_check(what, view, lx, 3, shape, nm_types[t], true, &o);
          if (nm_types[t] == KILN_NORM_2)
            continue;
          snprintf(what, sizeof what, "%s %s, path %d, matrices, type %d",
                   name, kiln_dtype_name(dt), path, (int)nm_types[t]);
          nm_check(what, view, lx, 3, shape, nm_types[t], false, &o);
        }
      }
      free(lx);
      kiln_array_destroy(view);
    }
    kiln_array_destroy(base);
    free(x);
  }
}

/* One norm of the given values (a vector, or a rows x cols matrix). */
static double nm_one(kiln_dtype dt, const double *v, int64_t rows,
                     int64_t cols, kiln_norm_type type, bool vectors,
                     int path) {
  unsigned char buf[64 * 8];
  int64_t n = rows * cols;
  CHECK(n <= 64, "nm_one takes at most 64 values");
  for (int64_t i = 0; i < n; i++)
    kt_set(dt, buf, (size_t)i, v[i]);
  int64_t shape[2] = {rows, cols};
  kiln_array *a = vectors ? kt_array(dt, 1, &n, buf)
                          : kt_array(dt, 2, shape, buf);
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = path;
  kiln_array *out = NULL;
  CHECK_OK(kiln_norm_ex(a, type, vectors, &o, &out));
  double *r = kt_read_f64(out);
  double got = r[0];
  free(r);
  kiln_array_destroy(out);
  kiln_array_destroy(a);
  return got;
}

static void nm_expect(const char *what, double got, double want,
                      double rtol) {
  bool ok = isnan(want) ? isnan(got)
            : isinf(want) ? got == want
                          : fabs(got - want) <= rtol * fabs(want);
  CHECK(ok, "%s: got %.17g, want %.17g", what, got, want);
}

/* Values whose squares overflow or underflow, NaN and inf. */
void test_linalg_norm_extremes(void) {
  for (int path = 1; path <= 2; path++) {
    double huge[2] = {1e200, 1e200}, tiny[2] = {1e-200, -1e-200};
    double r2 = sqrt(2.0), e64 = 4 * DBL_EPSILON, e32 = 4 * FLT_EPSILON;
    nm_expect("||(1e200, 1e200)||", nm_one(KILN_FLOAT64, huge, 1, 2,
              KILN_NORM_2, true, path), r2 * 1e200, e64);
    nm_expect("||(1e-200, -1e-200)||", nm_one(KILN_FLOAT64, tiny, 1, 2,
              KILN_NORM_FRO, true, path), r2 * 1e-200, e64);
    double sub[3] = {3e-310, 4e-310, 0}; /* subnormal float64 */
    nm_expect("||subnormals||", nm_one(KILN_FLOAT64, sub, 1, 3,
              KILN_NORM_2, true, path), 5e-310, 1e-5);
    /* big, middle and small at once: the small ones do not matter */
    double mix[4] = {3e160, 4e160, 1.0, 1e-170};
    nm_expect("||(3e160, 4e160, 1, 1e-170)||", nm_one(KILN_FLOAT64, mix, 1,
              4, KILN_NORM_2, true, path), 5e160, e64);
    /* middle and small: small ones matter when the middle ones are tiny */
    double ms[2] = {3e-160, 4e-160};
    nm_expect("||(3e-160, 4e-160)||", nm_one(KILN_FLOAT64, ms, 1, 2,
              KILN_NORM_2, true, path), 5e-160, e64);
    double m2[4] = {1e200, 1e200, 1e200, 1e200};
    nm_expect("Frobenius of 2x2 of 1e200", nm_one(KILN_FLOAT64, m2, 2, 2,
              KILN_NORM_FRO, false, path), 2e200, e64);
    double s1[4] = {8e307, 1, 8e307, 1};
    nm_expect("1-norm 8e307 + 8e307", nm_one(KILN_FLOAT64, s1, 2, 2,
              KILN_NORM_1, false, path), 1.6e308, e64);
    /* float32: squares that overflow or underflow float32 */
    double f1[2] = {2e38, 2e38}, f2[2] = {1e-30, 1e-30};
    nm_expect("float32 ||(2e38, 2e38)||", nm_one(KILN_FLOAT32, f1, 1, 2,
              KILN_NORM_2, true, path), (double)(float)(r2 * 2e38), e32);
    nm_expect("float32 ||(1e-30, 1e-30)||", nm_one(KILN_FLOAT32, f2, 1, 2,
              KILN_NORM_2, true, path),
              (double)(float)(r2 * (double)(float)1e-30), e32);
    double f3[2] = {3e38, 3e38}; /* the norm itself overflows float32 */
    nm_expect("float32 ||(3e38, 3e38)||", nm_one(KILN_FLOAT32, f3, 1, 2,
              KILN_NORM_2, true, path), INFINITY, 0);
    double f4[2] = {1e-45, 1e-45}; /* float32 subnormals */
    double f4v = (double)(float)1e-45;
    nm_expect("float32 ||subnormals||", nm_one(KILN_FLOAT32, f4, 1, 2,
              KILN_NORM_2, true, path), (double)(float)(r2 * f4v), e32);
    /* NaN propagates through every type; inf gives inf */
    for (int d = 0; d < 2; d++)
      for (int t = 0; t < 4; t++) {
        char what[96];
        double nv[4] = {1, NAN, -2, 3}, iv[4] = {1, -INFINITY, 2, 3};
        snprintf(what, sizeof what, "%s NaN, vector type %d",
                 kiln_dtype_name(nm_dtypes[d]), t);
        nm_expect(what, nm_one(nm_dtypes[d], nv, 1, 4, nm_types[t], true,
                               path), NAN, 0);
        snprintf(what, sizeof what, "%s inf, vector type %d",
                 kiln_dtype_name(nm_dtypes[d]), t);
        nm_expect(what, nm_one(nm_dtypes[d], iv, 1, 4, nm_types[t], true,
                               path), INFINITY, 0);
        if (nm_types[t] == KILN_NORM_2)
          continue;
        snprintf(what, sizeof what, "%s NaN, matrix type %d",
                 kiln_dtype_name(nm_dtypes[d]), t);
        nm_expect(what, nm_one(nm_dtypes[d], nv, 2, 2, nm_types[t], false,
                               path), NAN, 0);
        snprintf(what, sizeof what, "%s inf, matrix type %d",
                 kiln_dtype_name(nm_dtypes[d]), t);
        nm_expect(what, nm_one(nm_dtypes[d], iv, 2, 2, nm_types[t], false,
                               path), INFINITY, 0);
      }
  }
}

/* Empty batches give empty results; empty vectors and matrices give 0. */
void test_linalg_norm_empty(void) {
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = nm_dtypes[d];
    int64_t s[3][3] = {{3, 0, 4}, {3, 4, 0}, {0, 4, 5}};
    for (int c = 0; c < 3; c++) {
      kiln_array *a = NULL;
      CHECK_OK(kiln_array_create(kt_device(), dt, 3, s[c], &a));
      for (int t = 0; t < 4; t++)
        for (int vec = 0; vec < 2; vec++) {
          if (!vec && nm_types[t] == KILN_NORM_2)
            continue;
          int nbd = vec ? 2 : 1;
          int64_t batch = nm_count(nbd, s[c]);
          nm_poison_cache(dt, batch);
          kiln_array *out = NULL;
          CHECK_OK(kiln_norm(a, nm_types[t], vec, &out));
          CHECK(kiln_array_ndim(out) == nbd && kiln_array_size(out) == batch,
                "%s %lldx%lldx%lld type %d: result size %lld", vec ?
                "vectors" : "matrices", (long long)s[c][0],
                (long long)s[c][1], (long long)s[c][2], t,
                (long long)kiln_array_size(out));
          double *r = kt_read_f64(out);
          for (int64_t b = 0; b < batch; b++)
            CHECK(r[b] == 0.0, "norm of an empty %s (%lldx%lldx%lld, type "
                  "%d) is %g, not 0", vec ? "vector" : "matrix",
                  (long long)s[c][0], (long long)s[c][1],
                  (long long)s[c][2], t, r[b]);
          free(r);
          kiln_array_destroy(out);
        }
      kiln_array_destroy(a);
    }
  }
}

/* Every refusal: its status, its message, *out untouched. */
void test_linalg_norm_errors(void) {
  int64_t s2[2] = {3, 4}, s1[1] = {4};
  kiln_array *a = NULL, *v = NULL, *ints = NULL, *z = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 2, s2, &a));
  CHECK_OK(kiln_array_fill(a, 1.0, NULL));
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 1, s1, &v));
  CHECK_OK(kiln_array_fill(v, 1.0, NULL));
  CHECK_OK(kiln_array_create(kt_device(), KILN_INT32, 2, s2, &ints));
  double zero = 0;
  CHECK_OK(kiln_array_scalar(kt_device(), KILN_FLOAT64, &zero, &z));
  kiln_array *sentinel = (kiln_array *)&zero, *out = sentinel;
  CHECK_STATUS(kiln_norm(NULL, KILN_NORM_FRO, true, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("[kiln_norm] A is NULL");
  CHECK_STATUS(kiln_norm(a, KILN_NORM_FRO, true, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("out is NULL");
  CHECK_STATUS(kiln_norm(ints, KILN_NORM_FRO, true, &out),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("A is int32; norms support float32 and float64");
  CHECK_STATUS(kiln_norm(a, (kiln_norm_type)7, true, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("type is 7, not a kiln_norm_type");
  CHECK_STATUS(kiln_norm(z, KILN_NORM_FRO, true, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A has 0 dimensions; vector norms need at least 1");
  CHECK_STATUS(kiln_norm(v, KILN_NORM_1, false, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("A has 1 dimension; matrix norms need at least 2");
  CHECK_STATUS(kiln_norm(a, KILN_NORM_2, false, &out),
               KILN_ERROR_UNSUPPORTED);
  CHECK_ERR_HAS("matrix 2-norm");
  CHECK_ERR_HAS("singular values");
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.path = 3;
  CHECK_STATUS(kiln_norm_ex(a, KILN_NORM_FRO, false, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("[kiln_norm_ex] opts->path is 3");
  o.path = 0;
  o.struct_size = 4;
  CHECK_STATUS(kiln_norm_ex(a, KILN_NORM_FRO, false, &o, &out),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("struct_size");
  /* a stream of another device, when there is one */
  for (int i = 0; i < kiln_device_count(); i++) {
    kiln_device *other = NULL;
    CHECK_OK(kiln_device_get(i, &other));
    if (other == kiln_array_device(a))
      continue;
    kiln_linalg_opts_init(&o);
    o.stream = kiln_default_stream(other);
    CHECK_STATUS(kiln_norm_ex(a, KILN_NORM_FRO, false, &o, &out),
                 KILN_ERROR_INVALID_ARGUMENT);
    CHECK_ERR_HAS("stream belongs to device");
    break;
  }
  CHECK(out == sentinel, "a failed kiln_norm left *out alone");
  /* the vector 2-norm is fine, and a 1-D input for vectors gives 0-d */
  CHECK_OK(kiln_norm(v, KILN_NORM_2, true, &out));
  CHECK(kiln_array_ndim(out) == 0, "a vector's norm is 0-d");
  double *r = kt_read_f64(out);
  CHECK(r[0] == 2.0, "||(1, 1, 1, 1)|| is %g, not 2", r[0]);
  free(r);
  kiln_array_destroy(out);
  kiln_array_destroy(a);
  kiln_array_destroy(v);
  kiln_array_destroy(ints);
  kiln_array_destroy(z);
}

/* ---- every kernel configuration, compiled for a CUDA target -------------- */

static void nm_compile(const char *name, const char *inputs,
                       const char *outputs, unsigned flags,
                       const kiln_array_spec *in,
                       const kiln_output_spec *out,
                       const kiln_template_arg *t, int nt,
                       const char *target) {
  kt_la_kernel k = {.family = "norm", .name = name, .inputs = inputs,
                    .outputs = outputs, .flags = flags, .num_inputs = 1,
                    .num_outputs = 1, .in = in, .out = out, .targs = t,
                    .num_targs = nt};
  kt_la_compile(&k, target);
}

/* With KILN_TEST_NVRTC_TARGET (e.g. sm_90a), compiles every configuration
 * the driver can launch for that target; skipped otherwise. */
void test_linalg_norm_nvrtc(void) {
  const char *target = kt_la_nvrtc_target();
  /* (OP, VEC, SWAP, WARP_LINES) as norm.c chooses them */
  static const int cfg[][4] = {{0, 1, 0, 0}, {0, 0, 0, 0}, {1, 1, 0, 0},
                               {2, 1, 0, 0}, {2, 0, 0, 0}, {2, 0, 0, 1},
                               {2, 0, 1, 0}, {2, 0, 1, 1}};
  for (int d = 0; d < 2; d++) {
    kiln_dtype dt = nm_dtypes[d];
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
      for (int direct = 0; direct < 2; direct++)
        for (int rank = 2; rank <= 3; rank++) {
          kiln_template_arg t[6];
          kiln__targ_dtype(&t[0], "T", dt);
          kiln__targ_int(&t[1], "OP", cfg[c][0]);
          kiln__targ_bool(&t[2], "VEC", cfg[c][1]);
          kiln__targ_bool(&t[3], "SWAP", cfg[c][2]);
          kiln__targ_bool(&t[4], "WARP_LINES", cfg[c][3]);
          kiln__targ_bool(&t[5], "DIRECT", direct);
          kiln_array_spec in;
          memset(&in, 0, sizeof in);
          in.dtype = dt;
          in.ndim = rank;
          kiln_output_spec out;
          memset(&out, 0, sizeof out);
          out.dtype = direct ? dt : KILN_FLOAT64;
          out.ndim = direct ? rank - 1 : 3;
          nm_compile("norm_reduce", "A", "P", KILN__LIB_NO_ROW_CONTIG, &in,
                     &out, t, 6, target);
        }
    for (int op = 0; op < 3; op++) {
      kiln_template_arg t[2];
      kiln__targ_dtype(&t[0], "T", dt);
      kiln__targ_int(&t[1], "OP", op);
      kiln_array_spec in;
      memset(&in, 0, sizeof in);
      in.dtype = KILN_FLOAT64;
      in.ndim = 3;
      kiln_output_spec out;
      memset(&out, 0, sizeof out);
      out.dtype = dt;
      out.ndim = 1;
      nm_compile("norm_finish", "Pin", "out", 0, &in, &out, t, 2, target);
    }
  }
}
