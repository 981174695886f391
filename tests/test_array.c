/*
 * Arrays: host round trips for every dtype, scalars, empty shapes, strided
 * views (slices, transposes, negative and zero strides) and their bounds,
 * contiguous copies, fill with dtype rounding, wrapped caller memory and
 * shape limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

void test_array_roundtrip_all_dtypes(void) {
  int64_t shape[3] = {5, 7, 3};
  for (int d = 0; d < KILN_DTYPE_COUNT; d++) {
    kiln_dtype dt = (kiln_dtype)d;
    size_t es = kiln_dtype_size(dt), n = 105, bytes = n * es;
    unsigned char *src = malloc(bytes), *dst = malloc(bytes);
    for (size_t i = 0; i < bytes; i++)
      src[i] = (unsigned char)kt_rand();
    if (dt == KILN_BOOL)
      for (size_t i = 0; i < n; i++)
        src[i] &= 1;
    kiln_array *a = kt_array(dt, 3, shape, src);
    CHECK(kiln_array_dtype(a) == dt && kiln_array_ndim(a) == 3, "%s meta",
          kiln_dtype_name(dt));
    CHECK(kiln_array_size(a) == 105 && kiln_array_nbytes_dense(a) == bytes,
          "%s size", kiln_dtype_name(dt));
    CHECK(kiln_array_is_contiguous(a), "from_host gives a contiguous array");
    const int64_t *sh = kiln_array_shape(a), *st = kiln_array_strides(a);
    CHECK(sh[0] == 5 && sh[1] == 7 && sh[2] == 3, "shape kept");
    CHECK(st[0] == 21 && st[1] == 3 && st[2] == 1, "row-major strides");
    CHECK(kiln_array_offset(a) == 0, "offset 0");
    CHECK(kiln_array_device(a) == kt_device(), "device");
    memset(dst, 0xCD, bytes);
    CHECK_OK(kiln_array_to_host(a, dst, bytes));
    CHECK(memcmp(src, dst, bytes) == 0, "%s round trip", kiln_dtype_name(dt));
    /* A too-small destination is refused, not overrun. */
    CHECK_STATUS(kiln_array_to_host(a, dst, bytes - 1),
                 KILN_ERROR_INVALID_ARGUMENT);
    /* copy_from_host replaces the contents. */
    for (size_t i = 0; i < bytes; i++)
      src[i] = (unsigned char)(dt == KILN_BOOL ? kt_rand() & 1 : kt_rand());
    CHECK_OK(kiln_array_copy_from_host(a, src, bytes));
    CHECK_OK(kiln_array_to_host(a, dst, bytes));
    CHECK(memcmp(src, dst, bytes) == 0, "%s copy_from_host",
          kiln_dtype_name(dt));
    kiln_array_destroy(a);
    free(src);
    free(dst);
  }
  kiln_array_destroy(NULL); /* a no-op */
}

void test_array_scalar(void) {
  double v = kt_uniform(-100, 100);
  kiln_array *s = NULL;
  CHECK_OK(kiln_array_scalar(kt_device(), KILN_FLOAT64, &v, &s));
  CHECK(kiln_array_ndim(s) == 0 && kiln_array_size(s) == 1, "0-d size 1");
  CHECK(kiln_array_nbytes_dense(s) == 8, "8 bytes");
  CHECK(kiln_array_is_contiguous(s), "a scalar is contiguous");
  double got = 0;
  CHECK_OK(kiln_array_to_host(s, &got, sizeof got));
  CHECK(got == v, "scalar value %g, expected %g", got, v);
  kiln_array_destroy(s);
  int16_t iv = (int16_t)kt_randint(-3000, 3000), ig = 0;
  CHECK_OK(kiln_array_from_host(kt_device(), KILN_INT16, 0, NULL, &iv, &s));
  CHECK_OK(kiln_array_to_host(s, &ig, sizeof ig));
  CHECK(ig == iv && kiln_array_ndim(s) == 0, "0-d from_host");
  CHECK_OK(kiln_array_fill(s, 77, NULL));
  CHECK_OK(kiln_array_to_host(s, &ig, sizeof ig));
  CHECK(ig == 77, "fill of a scalar gave %d", ig);
  kiln_array_destroy(s);
}

void test_array_empty(void) {
  int64_t shape[3] = {3, 0, 2};
  kiln_array *a = NULL, *c = NULL, *v = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 3, shape, &a));
  CHECK(kiln_array_size(a) == 0 && kiln_array_nbytes_dense(a) == 0, "empty");
  float dummy = 1.0f;
  CHECK_OK(kiln_array_to_host(a, &dummy, 0));
  CHECK(dummy == 1.0f, "nothing written");
  CHECK_OK(kiln_array_fill(a, 3.0, NULL));
  CHECK_OK(kiln_array_contiguous(a, NULL, &c));
  CHECK(kiln_array_size(c) == 0, "contiguous copy of empty is empty");
  int64_t vs[1] = {0}, vst[1] = {1};
  CHECK_OK(kiln_array_view(a, 1, vs, vst, 0, &v));
  CHECK(kiln_array_size(v) == 0, "empty view");
  CHECK_OK(kiln_array_wait(a));
  int64_t one_zero[1] = {0};
  kiln_array *b = NULL;
  CHECK_OK(kiln_array_from_host(kt_device(), KILN_INT8, 1, one_zero, NULL,
                                &b));
  kiln_array_destroy(b);
  kiln_array_destroy(v);
  kiln_array_destroy(c);
  kiln_array_destroy(a);
}

/* Gathers a view's elements from the base's host copy. */
static void kt_gather(const unsigned char *base, size_t es, int ndim,
                      const int64_t *shape, const int64_t *strides,
                      int64_t offset, unsigned char *out) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    n *= shape[d];
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, off = offset;
    for (int d = ndim - 1; d >= 0; d--) {
      off += (rem % shape[d]) * strides[d];
      rem /= shape[d];
    }
    memcpy(out + (size_t)i * es, base + (size_t)off * es, es);
  }
}

typedef struct kt_view_case {
  const char *what;
  int ndim;
  int64_t shape[3], strides[3], offset;
  bool contiguous;
} kt_view_case;

static const kt_view_case kt_views[] = {
    {"slice [1:3, ::2, 1:4]", 3, {2, 2, 3}, {20, 10, 1}, 21, false},
    {"transpose", 3, {5, 4, 3}, {1, 5, 20}, 0, false},
    {"reversed axis 0", 3, {3, 4, 5}, {-20, 5, 1}, 40, false},
    {"reversed axes 0 and 2", 3, {3, 4, 5}, {-20, 5, -1}, 44, false},
    {"broadcast axis 0", 3, {4, 3, 5}, {0, 20, 1}, 0, false},
    {"broadcast inner", 3, {3, 4, 6}, {20, 5, 0}, 0, false},
    {"row 2 (contiguous)", 2, {4, 5}, {5, 1}, 40, true},
    {"identity", 3, {3, 4, 5}, {20, 5, 1}, 0, true},
};

void test_array_views(void) {
  kiln_dtype dts[4] = {KILN_FLOAT32, KILN_INT64, KILN_FLOAT16, KILN_UINT8};
  int64_t bshape[3] = {3, 4, 5};
  for (int t = 0; t < 4; t++) {
    kiln_dtype dt = dts[t];
    size_t es = kiln_dtype_size(dt);
    unsigned char host[60 * 8], want[200 * 8], got[200 * 8];
    kt_random_fill(dt, host, 60, -100, 100);
    kiln_array *base = kt_array(dt, 3, bshape, host);
    for (size_t c = 0; c < sizeof kt_views / sizeof kt_views[0]; c++) {
      const kt_view_case *vc = &kt_views[c];
      kiln_array *v = NULL;
      CHECK_OK(kiln_array_view(base, vc->ndim, vc->shape, vc->strides,
                               vc->offset, &v));
      CHECK(kiln_array_is_contiguous(v) == vc->contiguous,
            "%s: is_contiguous", vc->what);
      CHECK(kiln_array_offset(v) == vc->offset, "%s: offset", vc->what);
      for (int d = 0; d < vc->ndim; d++)
        CHECK(kiln_array_strides(v)[d] == vc->strides[d] &&
                  kiln_array_shape(v)[d] == vc->shape[d],
              "%s: dim %d", vc->what, d);
      if (strcmp(kt_device_name(), "cpu") == 0) {
        CHECK_OK(kiln_array_wait(v));
        CHECK((unsigned char *)kiln_array_host_data(v) ==
                  (unsigned char *)kiln_array_host_data(base) +
                      vc->offset * (int64_t)es,
              "%s: host_data points at element 0", vc->what);
      }
      size_t n = (size_t)kiln_array_size(v);
      kt_gather(host, es, vc->ndim, vc->shape, vc->strides, vc->offset, want);
      memset(got, 0xCD, sizeof got);
      CHECK_OK(kiln_array_to_host(v, got, n * es));
      CHECK(memcmp(want, got, n * es) == 0, "%s (%s): to_host of the view",
            vc->what, kiln_dtype_name(dt));
      kiln_array_destroy(v);
    }
    kiln_array_destroy(base);
  }
}

void test_array_view_bounds(void) {
  int64_t n = 60;
  kiln_array *base = kt_random_1d(KILN_FLOAT32, n, -1, 1, NULL);
  struct {
    const char *what;
    int ndim;
    int64_t shape[2], strides[2], offset;
  } bad[] = {
      {"one past the end", 1, {61}, {1}, 0},
      {"offset pushes past the end", 1, {10}, {1}, 51},
      {"negative stride before the start", 1, {10}, {-1}, 5},
      {"negative offset", 1, {5}, {1}, -1},
      {"2-d past the end", 2, {3, 30}, {30, 1}, 0},
      {"stride overflow", 1, {3}, {INT64_MAX / 2}, 0},
      {"offset far past the end", 1, {1}, {1}, 1000},
      {"negative dimension", 1, {-2}, {1}, 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_array *v = (kiln_array *)&n; /* must stay untouched */
    kiln_status s = kiln_array_view(base, bad[i].ndim, bad[i].shape,
                                    bad[i].strides, bad[i].offset, &v);
    CHECK(s == KILN_ERROR_INVALID_ARGUMENT, "%s: got %s", bad[i].what,
          kiln_status_string(s));
    CHECK(v == (kiln_array *)&n || v == NULL, "%s: out set on failure",
          bad[i].what);
    CHECK(strncmp(kiln_last_error(), "[kiln_array_view]", 17) == 0,
          "%s: message names kiln_array_view", bad[i].what);
  }
  int64_t sh[KILN_MAX_NDIM + 1], st[KILN_MAX_NDIM + 1];
  for (int d = 0; d <= KILN_MAX_NDIM; d++)
    sh[d] = 1, st[d] = 1;
  kiln_array *v = NULL;
  CHECK_STATUS(kiln_array_view(base, KILN_MAX_NDIM + 1, sh, st, 0, &v),
               KILN_ERROR_INVALID_ARGUMENT);
  /* The extremes that are inside are accepted. */
  int64_t full[1] = {60}, one[1] = {1}, rev[1] = {-1}, zero[1] = {0};
  int64_t five[1] = {5};
  CHECK_OK(kiln_array_view(base, 1, full, one, 0, &v));
  kiln_array_destroy(v);
  CHECK_OK(kiln_array_view(base, 1, full, rev, 59, &v));
  kiln_array_destroy(v);
  CHECK_OK(kiln_array_view(base, 1, five, zero, 59, &v));
  kiln_array_destroy(v);
  CHECK_OK(kiln_array_view(base, KILN_MAX_NDIM, sh, st, 0, &v));
  kiln_array_destroy(v);
  /* A view keeps the buffer alive after its base is destroyed. */
  float host[60];
  CHECK_OK(kiln_array_to_host(base, host, sizeof host));
  CHECK_OK(kiln_array_view(base, 1, full, rev, 59, &v));
  kiln_array_destroy(base);
  float got[60];
  CHECK_OK(kiln_array_to_host(v, got, sizeof got));
  for (int i = 0; i < 60; i++)
    CHECK(got[i] == host[59 - i], "reversed view after base destroyed [%d]",
          i);
  kiln_array_destroy(v);
}

void test_array_contiguous_copy(void) {
  int64_t bshape[3] = {3, 4, 5};
  double host[60];
  kt_random_fill(KILN_FLOAT64, host, 60, -5, 5);
  kiln_array *base = kt_array(KILN_FLOAT64, 3, bshape, host);
  for (size_t c = 0; c < sizeof kt_views / sizeof kt_views[0]; c++) {
    const kt_view_case *vc = &kt_views[c];
    kiln_array *v = NULL, *cc = NULL;
    CHECK_OK(kiln_array_view(base, vc->ndim, vc->shape, vc->strides,
                             vc->offset, &v));
    CHECK_OK(kiln_array_contiguous(v, NULL, &cc));
    CHECK(kiln_array_is_contiguous(cc) && kiln_array_offset(cc) == 0,
          "%s: the copy is contiguous", vc->what);
    CHECK(kiln_array_ndim(cc) == vc->ndim, "%s: ndim kept", vc->what);
    int64_t expect_stride = 1;
    for (int d = vc->ndim - 1; d >= 0; d--) {
      CHECK(kiln_array_shape(cc)[d] == vc->shape[d], "%s: shape", vc->what);
      CHECK(kiln_array_strides(cc)[d] == expect_stride,
            "%s: row-major stride %d", vc->what, d);
      expect_stride *= vc->shape[d];
    }
    double want[120], got[120];
    size_t n = (size_t)kiln_array_size(v);
    kt_gather((const unsigned char *)host, 8, vc->ndim, vc->shape,
              vc->strides, vc->offset, (unsigned char *)want);
    CHECK_OK(kiln_array_to_host(cc, got, n * 8));
    CHECK(memcmp(want, got, n * 8) == 0, "%s: contiguous copy", vc->what);
    /* The copy is independent of the base. */
    CHECK_OK(kiln_array_fill(base, -1.0, NULL));
    CHECK_OK(kiln_array_to_host(cc, got, n * 8));
    CHECK(memcmp(want, got, n * 8) == 0, "%s: copy changed with its base",
          vc->what);
    CHECK_OK(kiln_array_copy_from_host(base, host, sizeof host));
    kiln_array_destroy(cc);
    kiln_array_destroy(v);
  }
  kiln_array_destroy(base);
}

void test_array_fill_all_dtypes(void) {
  int64_t shape[2] = {3, 7};
  for (int d = 0; d < KILN_DTYPE_COUNT; d++) {
    kiln_dtype dt = (kiln_dtype)d;
    bool fl = dt == KILN_FLOAT16 || dt == KILN_BFLOAT16 ||
              dt == KILN_FLOAT32 || dt == KILN_FLOAT64;
    double value = dt == KILN_BOOL ? 1.0
                   : fl            ? kt_uniform(-50, 50)
                                   : (double)kt_randint(1, 100);
    unsigned char src[21 * 8], got[21 * 8];
    kt_random_fill(dt, src, 21, 0, dt == KILN_BOOL ? 0 : 100);
    kiln_array *a = kt_array(dt, 2, shape, src);
    CHECK_OK(kiln_array_fill(a, value, NULL));
    CHECK_OK(kiln_array_to_host(a, got, 21 * kiln_dtype_size(dt)));
    double want = dt == KILN_FLOAT16    ? kt_round_half(value)
                  : dt == KILN_BFLOAT16 ? kt_round_bfloat(value)
                  : dt == KILN_FLOAT32  ? kt_round_float(value)
                                        : value;
    for (int i = 0; i < 21; i++)
      CHECK(kt_get(dt, got, (size_t)i) == want,
            "%s fill(%.17g): element %d is %.17g, expected %.17g",
            kiln_dtype_name(dt), value, i, kt_get(dt, got, (size_t)i), want);
    kiln_array_destroy(a);
  }
}

/* One element of dtype `dt` filled with `value`, as a double. */
static double kt_fill_one(kiln_dtype dt, double value) {
  int64_t one = 1;
  kiln_array *a = NULL;
  CHECK_OK(kiln_array_create(kt_device(), dt, 1, &one, &a));
  CHECK_OK(kiln_array_fill(a, value, NULL));
  unsigned char buf[8];
  CHECK_OK(kiln_array_to_host(a, buf, kiln_dtype_size(dt)));
  kiln_array_destroy(a);
  return kt_get(dt, buf, 0);
}

void test_array_fill_rounding(void) {
  struct {
    kiln_dtype dt;
    double value, want;
  } cases[] = {
      /* ties round to even */
      {KILN_FLOAT16, 1.0 + 0x1p-11, 1.0},
      {KILN_FLOAT16, 1.0 + 3 * 0x1p-11, 1.0 + 0x1p-9},
      {KILN_FLOAT16, 65504.0, 65504.0},
      {KILN_FLOAT16, 65520.0, INFINITY}, /* halfway to 2^16 rounds up */
      {KILN_FLOAT16, 65519.0, 65504.0},
      {KILN_FLOAT16, 0x1p-24, 0x1p-24}, /* smallest subnormal */
      {KILN_FLOAT16, 0x1p-26, 0.0},
      {KILN_FLOAT16, 3 * 0x1p-25, 0x1p-23},
      {KILN_FLOAT16, -2.5, -2.5},
      {KILN_BFLOAT16, 1.0 + 0x1p-8, 1.0},
      {KILN_BFLOAT16, 1.0 + 3 * 0x1p-8, 1.0 + 0x1p-6},
      {KILN_BFLOAT16, 3.14159265, 3.140625},
      {KILN_BFLOAT16, -1e39, -INFINITY},
      {KILN_FLOAT32, 1.0 + 0x1p-24, 1.0},
      {KILN_FLOAT32, 0.1, (double)0.1f},
      /* integers: truncate toward zero, saturate, NaN -> 0 */
      {KILN_INT32, 3.7, 3},
      {KILN_INT32, -3.7, -3},
      {KILN_INT8, 300, 127},
      {KILN_INT8, -300, -128},
      {KILN_UINT8, -1, 0},
      {KILN_UINT8, 255.9, 255},
      {KILN_UINT16, 1e9, 65535},
      {KILN_UINT32, 1e10, 4294967295.0},
      {KILN_INT64, -1e19, (double)INT64_MIN},
      {KILN_INT32, NAN, 0},
      {KILN_BOOL, 0.5, 1},
      {KILN_BOOL, 0.0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double got = kt_fill_one(cases[i].dt, cases[i].value);
    CHECK(got == cases[i].want, "fill %s with %.17g gave %.17g, expected %.17g",
          kiln_dtype_name(cases[i].dt), cases[i].value, got, cases[i].want);
  }
  double got = kt_fill_one(KILN_FLOAT16, NAN);
  CHECK(got != got, "NaN fills float16 with NaN");
}

void test_array_fill_view(void) {
  float host[20];
  kt_random_fill(KILN_FLOAT32, host, 20, 10, 20);
  int64_t n = 20, vn = 10, vs = 2, rn = 4, rs = -3;
  kiln_array *base = kt_array(KILN_FLOAT32, 1, &n, host), *v = NULL, *r = NULL;
  CHECK_OK(kiln_array_view(base, 1, &vn, &vs, 0, &v));
  CHECK_OK(kiln_array_fill(v, 7.0, NULL));
  CHECK_OK(kiln_array_view(base, 1, &rn, &rs, 19, &r)); /* 19,16,13,10 */
  CHECK_OK(kiln_array_fill(r, -2.0, kt_stream()));
  float got[20];
  CHECK_OK(kiln_array_to_host(base, got, sizeof got));
  for (int i = 0; i < 20; i++) {
    float want = (i == 19 || i == 16 || i == 13 || i == 10) ? -2.0f
                 : (i % 2 == 0)                            ? 7.0f
                                                           : host[i];
    CHECK(got[i] == want, "element %d is %g, expected %g", i, got[i], want);
  }
  kiln_array_destroy(r);
  kiln_array_destroy(v);
  kiln_array_destroy(base);
}

void test_array_wrap(void) {
  kiln_device *cpu = NULL;
  CHECK_OK(kiln_device_find("cpu", &cpu));
  double buf[12];
  kt_random_fill(KILN_FLOAT64, buf, 12, -9, 9);
  int64_t shape[2] = {3, 4};
  kiln_array *a = NULL, *t = NULL;
  CHECK_OK(kiln_array_wrap(cpu, KILN_FLOAT64, 2, shape, NULL, buf, &a));
  CHECK(kiln_array_host_data(a) == buf, "wrap shares the caller's memory");
  double got[12];
  CHECK_OK(kiln_array_to_host(a, got, sizeof got));
  CHECK(memcmp(got, buf, sizeof got) == 0, "wrapped contents");
  /* A transposed wrap with explicit strides. */
  int64_t tshape[2] = {4, 3}, tstrides[2] = {1, 4};
  CHECK_OK(kiln_array_wrap(cpu, KILN_FLOAT64, 2, tshape, tstrides, buf, &t));
  CHECK(!kiln_array_is_contiguous(t), "strided wrap is not contiguous");
  CHECK_OK(kiln_array_to_host(t, got, sizeof got));
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++)
      CHECK(got[i * 3 + j] == buf[j * 4 + i], "transposed wrap (%d,%d)", i, j);
  /* Writes through kiln land in the caller's memory. */
  CHECK_OK(kiln_array_fill(a, 2.5, NULL));
  CHECK_OK(kiln_array_wait(a));
  for (int i = 0; i < 12; i++)
    CHECK(buf[i] == 2.5, "caller memory [%d] = %g after fill", i, buf[i]);
  kiln_array_destroy(t);
  kiln_array_destroy(a); /* must not free the stack buffer (ASan) */
  int64_t bad[1] = {-1};
  CHECK_STATUS(kiln_array_wrap(cpu, KILN_FLOAT64, 1, bad, NULL, buf, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(kiln_array_wrap(cpu, KILN_FLOAT64, 2, shape, NULL, NULL, &a) ==
            KILN_ERROR_INVALID_ARGUMENT,
        "wrapping NULL memory is refused");
}

void test_array_shape_limits(void) {
  kiln_array *a = NULL;
  int64_t sh[KILN_MAX_NDIM + 1];
  for (int d = 0; d <= KILN_MAX_NDIM; d++)
    sh[d] = 1;
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, KILN_MAX_NDIM + 1,
                                 sh, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_ERR_HAS("16");
  CHECK(a == NULL, "no array");
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, -1, sh, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, KILN_MAX_NDIM, sh,
                             &a));
  CHECK(kiln_array_size(a) == 1, "16 ones");
  kiln_array_destroy(a);
  a = NULL;
  int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 2, huge, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  int64_t huge2[2] = {INT64_MAX, 2};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_UINT8, 2, huge2, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  int64_t huge3[1] = {INT64_MAX / 4 + 1};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT64, 1, huge3, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(a == NULL, "no array on overflow");
  int64_t ok[1] = {4};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_DTYPE_COUNT, 1, ok, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 1, NULL, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 1, ok, NULL),
               KILN_ERROR_INVALID_ARGUMENT);
}
