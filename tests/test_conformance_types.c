/*
 * The Metal conformance suite, part 2: half, double and bfloat arithmetic,
 * vectors (loads, swizzles, constructors, comparisons, geometry), as_type,
 * the math library against libm, fast math, numeric limits and constants,
 * header helpers on device and threadgroup pointers, and barriers with
 * every mem_flags combination.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char kt_hdr[] = "#include <metal_stdlib>\nusing namespace metal;\n";

static double kt_rnd_mag(double lo, double hi) {
  double m = kt_uniform(lo, hi);
  return (kt_rand() & 1) ? m : -m;
}

void test_conf_half_double_bfloat(void) {
  kiln_kernel *k = KT_KERNEL(
      "half_double_bfloat", "h,y,d1,d2,d3,bf,hs,ds", "oh,od,ob,of", kt_hdr,
      "uint i = thread_position_in_grid.x;\n"
      "half a = h[i];\n"
      "half b = y[i];\n"
      "half r = a * b + a;\n"
      "oh[i] = r * hs;\n"
      "double p = d1[i] * d2[i] + d3[i];\n"
      "od[i] = p * ds;\n"
      "bfloat c = bf[i];\n"
      "ob[i] = c * c;\n"
      "of[i] = float(a) * 0.5f + float(c);\n",
      0);
  enum { N = 300 };
  uint16_t h[N], y[N], bf[N];
  double d1[N], d2[N], d3[N];
  for (int i = 0; i < N; i++) {
    h[i] = kt_half_bits(kt_rnd_mag(0.25, 4));
    y[i] = kt_half_bits(kt_rnd_mag(0.25, 4));
    bf[i] = kt_bfloat_bits(kt_rnd_mag(0.01, 100));
    d1[i] = kt_uniform(-1e3, 1e3);
    d2[i] = kt_uniform(-1e3, 1e3);
    d3[i] = kt_uniform(-1e3, 1e3);
  }
  int64_t n = N;
  double hsv = kt_round_half(kt_rnd_mag(0.5, 2)), dsv = kt_uniform(-3, 3);
  kiln_array *in[8] = {kt_array(KILN_FLOAT16, 1, &n, h),
                       kt_array(KILN_FLOAT16, 1, &n, y),
                       kt_array(KILN_FLOAT64, 1, &n, d1),
                       kt_array(KILN_FLOAT64, 1, &n, d2),
                       kt_array(KILN_FLOAT64, 1, &n, d3),
                       kt_array(KILN_BFLOAT16, 1, &n, bf),
                       kt_scalar(KILN_FLOAT16, hsv),
                       kt_scalar(KILN_FLOAT64, dsv)};
  kt_call c;
  kt_call_init(&c, N, 1, 1, 64, 1, 1);
  for (int i = 0; i < 8; i++)
    kt_call_in(&c, in[i]);
  kt_call_out(&c, KILN_FLOAT16, 1, N, 0, 0);
  kt_call_out(&c, KILN_FLOAT64, 1, N, 0, 0);
  kt_call_out(&c, KILN_BFLOAT16, 1, N, 0, 0);
  kt_call_out(&c, KILN_FLOAT32, 1, N, 0, 0);
  kiln_array *o[4];
  KT_RUN(k, &c, o);
  double *gh = kt_read_f64(o[0]), *gd = kt_read_f64(o[1]);
  double *gb = kt_read_f64(o[2]), *gf = kt_read_f64(o[3]);
  double rh[N], rd[N], rb[N], rf[N];
  for (int i = 0; i < N; i++) {
    double a = kt_half_value(h[i]), b = kt_half_value(y[i]);
    /* each half operation rounds once; the operands' products and sums
     * are exact in double here */
    double r = kt_round_half(kt_round_half(a * b) + a);
    rh[i] = kt_round_half(r * hsv);
    volatile double p = d1[i] * d2[i];
    volatile double q = p + d3[i];
    rd[i] = q * dsv;
    double cb = kt_bfloat_value(bf[i]);
    rb[i] = kt_round_bfloat(cb * cb);
    rf[i] = (double)((float)a * 0.5f + (float)cb);
  }
  CHECK_CLOSE("half a*b+a, *scalar", gh, rh, N, 0, 0);
  CHECK_CLOSE("double (no contraction)", gd, rd, N, 0, 0);
  CHECK_CLOSE("bfloat c*c", gb, rb, N, 0, 0);
  CHECK_CLOSE("float mix", gf, rf, N, 0, 0);
  free(gh);
  free(gd);
  free(gb);
  free(gf);
  kt_destroy_all(o, 4);
  kt_destroy_all(in, 8);
  kiln_kernel_destroy(k);
}

#define KT_NV 24

static const char kt_vec_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float4 a = ((const device float4*)v4)[i];\n"
    "float4 b = *((const device float4*)w4 + i);\n"
    "int4 k = ((const device int4*)iv)[i];\n"
    "device float* r = o + i * 24;\n"
    "float4 s = a.wzyx + b * 2.0f;\n"
    "r[0] = s.x; r[1] = s.y; r[2] = s.z; r[3] = s.w;\n"
    "float4 t = a;\n"
    "t.xy = b.zw;\n"
    "t.w = -1.0f;\n"
    "r[4] = t.x; r[5] = t.y; r[6] = t.z; r[7] = t.w;\n"
    "float4 m = float4(a.xy, 3.0f, b.w);\n"
    "r[8] = m.r; r[9] = m.g; r[10] = m.b; r[11] = m.a;\n"
    "r[12] = dot(a, b);\n"
    "float3 cr = cross(a.xyz, b.xyz);\n"
    "r[13] = cr.x; r[14] = cr.y; r[15] = cr.z;\n"
    "r[16] = length(a);\n"
    "r[17] = normalize(b).y;\n"
    "r[18] = distance(a, b);\n"
    "bool4 gt = a > b;\n"
    "float4 sel = select(b, a, gt);\n"
    "r[19] = sel.x + sel.y;\n"
    "r[20] = float(any(gt)) + 2.0f * float(all(gt));\n"
    "int4 kk = k * 3 - int4(1);\n"
    "r[21] = float(kk.x + kk.w);\n"
    "float3 c3 = float3(a.xy, 1.0f);\n"
    "float2 c2 = c3.yz * 4.0f;\n"
    "r[22] = c2.x - c2.y;\n"
    "float4 q = float4(k) / 2.0f;\n"
    "float4 xx = a.xxyy;\n"
    "r[23] = xx.w + q.z;\n";

void test_conf_vectors(void) {
  kiln_kernel *k = KT_KERNEL("vectors", "v4,w4,iv", "o", kt_hdr, kt_vec_body, 0);
  enum { N = 96 };
  float *a, *b;
  int32_t *iv;
  kiln_array *aa = kt_random_1d(KILN_FLOAT32, 4 * N, -3, 3, (void **)&a);
  kiln_array *ba = kt_random_1d(KILN_FLOAT32, 4 * N, -3, 3, (void **)&b);
  kiln_array *ia = kt_random_1d(KILN_INT32, 4 * N, -1000, 1000, (void **)&iv);
  kt_call c;
  kt_call_init(&c, N, 1, 1, 32, 1, 1);
  kt_call_in(&c, aa);
  kt_call_in(&c, ba);
  kt_call_in(&c, ia);
  kt_call_out(&c, KILN_FLOAT32, 1, N * KT_NV, 0, 0);
  kiln_array *o;
  KT_RUN(k, &c, &o);
  double *got = kt_read_f64(o), *ref = malloc(N * KT_NV * sizeof(double));
  for (int i = 0; i < N; i++) {
    const float *A = a + 4 * i, *B = b + 4 * i;
    const int32_t *K = iv + 4 * i;
    double *r = ref + i * KT_NV;
    for (int j = 0; j < 4; j++)
      r[j] = A[3 - j] + B[j] * 2.0f;
    r[4] = B[2], r[5] = B[3], r[6] = A[2], r[7] = -1;
    r[8] = A[0], r[9] = A[1], r[10] = 3, r[11] = B[3];
    double dot = 0, len = 0, dist = 0, bl = 0;
    for (int j = 0; j < 4; j++) {
      dot += (double)A[j] * B[j];
      len += (double)A[j] * A[j];
      dist += ((double)A[j] - B[j]) * ((double)A[j] - B[j]);
      bl += (double)B[j] * B[j];
    }
    r[12] = dot;
    r[13] = (double)A[1] * B[2] - (double)A[2] * B[1];
    r[14] = (double)A[2] * B[0] - (double)A[0] * B[2];
    r[15] = (double)A[0] * B[1] - (double)A[1] * B[0];
    r[16] = sqrt(len);
    r[17] = B[1] / sqrt(bl);
    r[18] = sqrt(dist);
    bool gt[4], any = false, all = true;
    for (int j = 0; j < 4; j++) {
      gt[j] = A[j] > B[j];
      any = any || gt[j];
      all = all && gt[j];
    }
    r[19] = (gt[0] ? A[0] : B[0]) + (gt[1] ? A[1] : B[1]);
    r[20] = (any ? 1 : 0) + 2 * (all ? 1 : 0);
    r[21] = (float)((K[0] * 3 - 1) + (K[3] * 3 - 1));
    r[22] = A[1] * 4.0f - 4.0f;
    r[23] = A[1] + (float)K[2] / 2.0f;
  }
  CHECK_CLOSE("vector results", got, ref, N * KT_NV, 1e-5, 1e-5);
  free(got);
  free(ref);
  free(a);
  free(b);
  free(iv);
  kiln_array_destroy(o);
  kiln_array_destroy(aa);
  kiln_array_destroy(ba);
  kiln_array_destroy(ia);
  kiln_kernel_destroy(k);
}

void test_conf_as_type(void) {
  kiln_kernel *k = KT_KERNEL(
      "as_type_bits", "f,u", "r,fo", kt_hdr,
      "uint i = thread_position_in_grid.x;\n"
      "device uint* o = r + i * 5;\n"
      "o[0] = as_type<uint>(f[i]);\n"
      "o[1] = as_type<uint>(half2(half(f[i]), half(-1.0f)));\n"
      "uint2 p = as_type<uint2>(double(f[i]));\n"
      "o[2] = p.x ^ p.y;\n"
      "o[3] = as_type<uint>(as_type<float>(u[i]));\n"
      "o[4] = as_type<ushort2>(u[i]).y;\n"
      "fo[i] = as_type<float>(u[i] ^ 0x80000000u);\n",
      0);
  enum { N = 128 };
  float *f;
  uint32_t *u;
  kiln_array *fa = kt_random_1d(KILN_FLOAT32, N, -1e4, 1e4, (void **)&f);
  kiln_array *ua = kt_random_1d(KILN_UINT32, N, 0, 4294967295.0, (void **)&u);
  for (int i = 0; i < N; i++)
    u[i] &= 0x3fffffffu; /* finite float bit patterns */
  CHECK_OK(kiln_array_copy_from_host(ua, u, sizeof(uint32_t) * N));
  kt_call c;
  kt_call_init(&c, N, 1, 1, 32, 1, 1);
  c.launch.init_value = 1;
  kt_call_in(&c, fa);
  kt_call_in(&c, ua);
  kt_call_out(&c, KILN_UINT32, 1, N * 5, 0, 0);
  kt_call_out(&c, KILN_FLOAT32, 1, N, 0, 0);
  kiln_array *o[2];
  KT_RUN(k, &c, o);
  uint32_t *r = kt_read(o[0]);
  float *fo = kt_read(o[1]);
  for (int i = 0; i < N; i++) {
    uint32_t fb, want[5];
    memcpy(&fb, &f[i], 4);
    double dv = f[i];
    uint32_t dw[2];
    memcpy(dw, &dv, 8);
    want[0] = fb;
    want[1] = (uint32_t)kt_half_bits(f[i]) | (0xBC00u << 16);
    want[2] = dw[0] ^ dw[1];
    want[3] = u[i];
    want[4] = u[i] >> 16;
    for (int j = 0; j < 5; j++)
      CHECK(r[i * 5 + j] == want[j], "thread %d value %d: %08x, expected %08x",
            i, j, r[i * 5 + j], want[j]);
    uint32_t nb = u[i] ^ 0x80000000u, gb;
    memcpy(&gb, &fo[i], 4);
    CHECK(gb == nb, "as_type<float>: %08x, expected %08x", gb, nb);
  }
  free(r);
  free(fo);
  free(f);
  free(u);
  kt_destroy_all(o, 2);
  kiln_array_destroy(fa);
  kiln_array_destroy(ua);
  kiln_kernel_destroy(k);
}

#define KT_NF 48
#define KT_NU 7

static const char kt_math_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float x = xs[i], y = ys[i];\n"
    "uint u = us[i];\n"
    "device float* f = mf + i * 48;\n"
    "device uint* g = mu + i * 7;\n"
    "f[0] = abs(y); f[1] = fabs(y); f[2] = min(x, y); f[3] = max(x, y);\n"
    "f[4] = fmin(x, y); f[5] = fmax(x, y);\n"
    "f[6] = clamp(y, -0.5f, 0.5f); f[7] = saturate(y);\n"
    "f[8] = mix(x, y, 0.25f); f[9] = step(0.0f, y); f[10] = sign(y);\n"
    "f[11] = floor(y * 3.0f); f[12] = ceil(y * 3.0f);\n"
    "float h = floor(x * 4.0f) * 0.5f;\n"
    "f[13] = round(h); f[14] = rint(h); f[15] = trunc(-x * 3.0f);\n"
    "f[16] = fract(x * 3.0f); f[17] = fmod(x * 5.0f, 1.3f);\n"
    "f[18] = sqrt(x); f[19] = rsqrt(x);\n"
    "f[20] = exp(y * 3.0f); f[21] = exp2(y * 3.0f); f[22] = exp10(y);\n"
    "f[23] = log(x); f[24] = log2(x); f[25] = log10(x);\n"
    "f[26] = pow(x, y * 2.0f); f[27] = powr(x, 1.5f);\n"
    "f[28] = sin(x); f[29] = cos(x); f[30] = tan(y);\n"
    "f[31] = asin(y); f[32] = acos(y); f[33] = atan(x);\n"
    "f[34] = atan2(y, x); f[35] = sinh(y); f[36] = cosh(y);\n"
    "f[37] = tanh(y * 2.0f);\n"
    "float cv;\n"
    "f[38] = sincos(x, cv); f[39] = cv;\n"
    "f[40] = fma(x, y, 1.0f); f[41] = mad(x, y, 1.0f);\n"
    "f[42] = float(isnan(NAN)) + 2.0f * float(isinf(INFINITY)) +\n"
    "        4.0f * float(isfinite(x)) + 8.0f * float(signbit(-x));\n"
    "f[43] = copysign(x, y); f[44] = ldexp(x, 3);\n"
    "f[45] = metal::precise::sqrt(x); f[46] = metal::precise::exp(y);\n"
    "f[47] = metal::fast::exp(y);\n"
    "uint v = (u >> (u & 15u)) | 1u;\n"
    "g[0] = popcount(u); g[1] = clz(v); g[2] = ctz(u | 0x80000000u);\n"
    "g[3] = mulhi(u, 0x9E3779B9u); g[4] = min(u, 12345u);\n"
    "g[5] = max(u, 12345u); g[6] = clamp(u, 1000u, 2000000000u);\n";

static int kt_popcount(uint32_t v) {
  int n = 0;
  for (; v; v &= v - 1)
    n++;
  return n;
}

void test_conf_math(void) {
  kiln_kernel *k = KT_KERNEL("math_lib", "xs,ys,us", "mf,mu", kt_hdr,
                             kt_math_body, 0);
  enum { N = 200 };
  float *xs, *ys;
  uint32_t *us;
  kiln_array *xa = kt_random_1d(KILN_FLOAT32, N, 0.1, 4, (void **)&xs);
  kiln_array *ya = kt_random_1d(KILN_FLOAT32, N, -0.95, 0.95, (void **)&ys);
  kiln_array *ua = kt_random_1d(KILN_UINT32, N, 0, 4294967295.0, (void **)&us);
  kt_call c;
  kt_call_init(&c, N, 1, 1, 64, 1, 1);
  c.launch.init_value = 7777;
  kt_call_in(&c, xa);
  kt_call_in(&c, ya);
  kt_call_in(&c, ua);
  kt_call_out(&c, KILN_FLOAT32, 1, N * KT_NF, 0, 0);
  kt_call_out(&c, KILN_UINT32, 1, N * KT_NU, 0, 0);
  kiln_array *o[2];
  KT_RUN(k, &c, o);
  double *gf = kt_read_f64(o[0]);
  uint32_t *gu = kt_read(o[1]);
  /* exact: 0-16 except mix (8); then libm with a few float ulps */
  for (int i = 0; i < N; i++) {
    double x = xs[i], y = ys[i], r[KT_NF];
    float h = floorf(xs[i] * 4.0f) * 0.5f;
    r[0] = r[1] = fabs(y);
    r[2] = r[4] = fmin(x, y);
    r[3] = r[5] = fmax(x, y);
    r[6] = y < -0.5 ? -0.5 : y > 0.5 ? 0.5 : y;
    r[7] = y < 0 ? 0 : y > 1 ? 1 : y;
    r[8] = x + (y - x) * 0.25;
    r[9] = y < 0 ? 0 : 1;
    r[10] = y > 0 ? 1 : y < 0 ? -1 : 0;
    r[11] = floor((double)(ys[i] * 3.0f));
    r[12] = ceil((double)(ys[i] * 3.0f));
    r[13] = round(h);
    r[14] = nearbyint(h);
    r[15] = trunc((double)(-xs[i] * 3.0f));
    float x3 = xs[i] * 3.0f;
    r[16] = (double)x3 - floor((double)x3);
    r[17] = fmod((double)(xs[i] * 5.0f), (double)1.3f);
    r[18] = sqrt(x);
    r[19] = 1 / sqrt(x);
    float y3 = ys[i] * 3.0f, y2 = ys[i] * 2.0f;
    r[20] = exp(y3);
    r[21] = exp2(y3);
    r[22] = pow(10, y);
    r[23] = log(x);
    r[24] = log2(x);
    r[25] = log10(x);
    r[26] = pow(x, y2);
    r[27] = pow(x, 1.5);
    r[28] = sin(x);
    r[29] = cos(x);
    r[30] = tan(y);
    r[31] = asin(y);
    r[32] = acos(y);
    r[33] = atan(x);
    r[34] = atan2(y, x);
    r[35] = sinh(y);
    r[36] = cosh(y);
    r[37] = tanh(y2);
    r[38] = sin(x);
    r[39] = cos(x);
    r[40] = r[41] = x * y + 1;
    r[42] = 1 + 2 + 4 + 8;
    r[43] = copysign(x, y);
    r[44] = x * 8;
    r[45] = sqrt(x);
    r[46] = exp(y);
    r[47] = exp(y);
    for (int j = 0; j < KT_NF; j++) {
      double g = gf[i * KT_NF + j];
      bool exact = j <= 16 && j != 8;
      double tol = exact ? 0
                   : j == 47 ? 1e-4 * fabs(r[j]) + 1e-6
                             : 4 * 0x1p-23 * fabs(r[j]) + 1e-7;
      CHECK(fabs(g - r[j]) <= tol,
            "x=%.9g y=%.9g: function #%d gave %.9g, expected %.9g", x, y, j,
            g, r[j]);
    }
    uint32_t u = us[i], v = (u >> (u & 15u)) | 1u;
    int clz = 0;
    while (!(v & (0x80000000u >> clz)))
      clz++;
    int ctz = 0;
    while (!((u | 0x80000000u) & (1u << ctz)))
      ctz++;
    uint32_t want[KT_NU] = {
        (uint32_t)kt_popcount(u), (uint32_t)clz, (uint32_t)ctz,
        (uint32_t)(((uint64_t)u * 0x9E3779B9u) >> 32), u < 12345 ? u : 12345,
        u > 12345 ? u : 12345,
        u < 1000 ? 1000 : u > 2000000000u ? 2000000000u : u};
    for (int j = 0; j < KT_NU; j++)
      CHECK(gu[i * KT_NU + j] == want[j],
            "u=%08x: integer function #%d gave %u, expected %u", u, j,
            gu[i * KT_NU + j], want[j]);
  }
  free(gf);
  free(gu);
  free(xs);
  free(ys);
  free(us);
  kt_destroy_all(o, 2);
  kiln_array_destroy(xa);
  kiln_array_destroy(ya);
  kiln_array_destroy(ua);
  kiln_kernel_destroy(k);
}

void test_conf_fast_math(void) {
  kiln_kernel *k = KT_KERNEL(
      "fast_math", "x,y", "out", kt_hdr,
      "uint i = thread_position_in_grid.x;\n"
      "float a = x[i], b = y[i];\n"
      "float s = 0.0f;\n"
      "for (int k = 0; k < 8; ++k) s += a * float(k) + b;\n"
      "out[i * 4 + 0] = exp(b) * sin(a) + log(a);\n"
      "out[i * 4 + 1] = metal::fast::pow(a, b) + fast::sqrt(a);\n"
      "out[i * 4 + 2] = s;\n"
      "out[i * 4 + 3] = a / b;\n",
      KT_FAST);
  enum { N = 256 };
  float *x, *y;
  kiln_array *xa = kt_random_1d(KILN_FLOAT32, N, 0.5, 3, (void **)&x);
  kiln_array *ya = kt_random_1d(KILN_FLOAT32, N, 0.5, 2, (void **)&y);
  kt_call c;
  kt_call_init(&c, N, 1, 1, 64, 1, 1);
  kt_call_in(&c, xa);
  kt_call_in(&c, ya);
  kt_call_out(&c, KILN_FLOAT32, 1, N * 4, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[N * 4];
  for (int i = 0; i < N; i++) {
    double a = x[i], b = y[i];
    ref[i * 4] = exp(b) * sin(a) + log(a);
    ref[i * 4 + 1] = pow(a, b) + sqrt(a);
    ref[i * 4 + 2] = a * 28 + 8 * b;
    ref[i * 4 + 3] = a / b;
  }
  CHECK_CLOSE("fast math", got, ref, N * 4, 1e-3, 1e-3);
  free(got);
  free(x);
  free(y);
  kiln_array_destroy(out);
  kiln_array_destroy(xa);
  kiln_array_destroy(ya);
  kiln_kernel_destroy(k);
}

static const char kt_misc_header[] =
    "#include <metal_stdlib>\n"
    "#include <metal_simdgroup>\n"
    "#include <metal_atomic>\n"
    "#include <metal_math>\n"
    "using namespace metal;\n"
    "inline float twice(const device float* p, uint i) { return p[i] * 2; }\n"
    "inline void stash(threadgroup float* s, uint i, float v) { s[i] = v; }\n"
    "inline float peek(const threadgroup float* s, uint i) { return s[i]; }\n"
    "template <typename T> inline T sq(T v) { return v * v; }\n"
    "struct Pair { float a; int b; };\n";

static const char kt_misc_body[] =
    "threadgroup float buf[64];\n"
    "uint t = thread_index_in_threadgroup;\n"
    "uint i = thread_position_in_grid.x;\n"
    "stash(buf, t, twice(x, i));\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "float nb = peek(buf, (t + 1) % threads_per_threadgroup.x);\n"
    "threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);\n"
    "simdgroup_barrier(mem_flags::mem_threadgroup);\n"
    "threadgroup_barrier(mem_flags::mem_none);\n"
    "simdgroup_barrier(mem_flags::mem_none);\n"
    "threadgroup_barrier(mem_flags::mem_device);\n"
    "Pair pr;\n"
    "pr.a = sq(nb);\n"
    "pr.b = int(t);\n"
    "out[i] = pr.a + float(pr.b);\n"
    "if (i == 0) {\n"
    "  lim[0] = numeric_limits<float>::max();\n"
    "  lim[1] = numeric_limits<float>::min();\n"
    "  lim[2] = numeric_limits<float>::epsilon();\n"
    "  lim[3] = numeric_limits<float>::infinity();\n"
    "  lim[4] = numeric_limits<float>::lowest();\n"
    "  lim[5] = isnan(numeric_limits<float>::quiet_NaN()) ? 1.0f : 0.0f;\n"
    "  lim[6] = INFINITY;\n"
    "  lim[7] = isnan(NAN) ? 1.0f : 0.0f;\n"
    "  lim[8] = FLT_MAX;\n"
    "  lim[9] = FLT_MIN;\n"
    "  lim[10] = FLT_EPSILON;\n"
    "  lim[11] = MAXFLOAT;\n"
    "  lim[12] = float(numeric_limits<half>::max());\n"
    "  lim[13] = float(numeric_limits<int>::max());\n"
    "  lim[14] = float(numeric_limits<int>::min());\n"
    "  lim[15] = float(numeric_limits<uint>::max());\n"
    "  lim[16] = float(numeric_limits<half>::epsilon());\n"
    "  lim[17] = float(numeric_limits<short>::min());\n"
    "}\n";

void test_conf_limits_helpers_barriers(void) {
  kiln_kernel *k = KT_KERNEL("limits_helpers", "x", "out,lim", kt_misc_header,
                             kt_misc_body, 0);
  enum { N = 256 };
  float *x;
  kiln_array *xa = kt_random_1d(KILN_FLOAT32, N, -4, 4, (void **)&x);
  kt_call c;
  kt_call_init(&c, N, 1, 1, 64, 1, 1);
  kt_call_in(&c, xa);
  kt_call_out(&c, KILN_FLOAT32, 1, N, 0, 0);
  kt_call_out(&c, KILN_FLOAT32, 1, 18, 0, 0);
  kiln_array *o[2];
  KT_RUN(k, &c, o);
  float got[N], lim[18];
  CHECK_OK(kiln_array_to_host(o[0], got, sizeof got));
  CHECK_OK(kiln_array_to_host(o[1], lim, sizeof lim));
  for (int i = 0; i < N; i++) {
    int t = i % 64, j = (i / 64) * 64 + (t + 1) % 64;
    float nb = x[j] * 2;
    float want = nb * nb + (float)t;
    CHECK(got[i] == want, "out[%d] = %g, expected %g", i, got[i], want);
  }
  const float want[18] = {FLT_MAX, FLT_MIN, FLT_EPSILON, INFINITY, -FLT_MAX,
                          1, INFINITY, 1, FLT_MAX, FLT_MIN, FLT_EPSILON,
                          FLT_MAX, 65504.0f, 2147483648.0f, -2147483648.0f,
                          4294967296.0f, 0x1p-10f, -32768.0f};
  for (int i = 0; i < 18; i++)
    CHECK(lim[i] == want[i], "limit #%d = %.9g, expected %.9g", i, lim[i],
          want[i]);
  free(x);
  kt_destroy_all(o, 2);
  kiln_array_destroy(xa);
  kiln_kernel_destroy(k);
}
