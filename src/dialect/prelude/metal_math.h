/*
 * The Metal math library for kiln's C++ kernel backends: the second
 * portable part of the prelude, after metal_types.h (KERNEL-DIALECT.md
 * section 5).
 *
 * Every function exists once in namespace metal as a template that takes
 * scalars, vectors and swizzles alike; per-lane work goes to the scalar
 * kernels in metal::kiln_s (float and double through compiler builtins,
 * half and bfloat computed in float and rounded once). metal::precise and
 * metal::fast name the same functions: the math mode of the whole
 * compilation decides how fast they are.
 *
 * Like metal_types.h this must stay NVRTC-compatible: builtins only behind
 * the KILN_MF/KILN_MD macros, every function KILN_FN.
 */
#ifndef KILN_METAL_MATH_H
#define KILN_METAL_MATH_H

#if KILN_ON_CUDA
/* Qualified: inside namespace kiln_s the bare name would find kiln_s's own
 * template of that name first. */
#define KILN_MF(fn) ::fn##f
#define KILN_MD(fn) ::fn
#define KILN_INFF (__int_as_float(0x7f800000))
#define KILN_NANF (__int_as_float(0x7fc00000))
#define KILN_CLZ64(u) __clzll((long long)(u))
#define KILN_CTZ64(u) (__ffsll((long long)(u)) - 1)
#define KILN_POP64(u) __popcll(u)
#else
#define KILN_MF(fn) __builtin_##fn##f
#define KILN_MD(fn) __builtin_##fn
/* Bit casts, not __builtin_inff/nanf: constant, and quiet under
 * -ffast-math, where newer compilers warn about NaN and infinity. */
#define KILN_INFF (__builtin_bit_cast(float, 0x7f800000u))
#define KILN_NANF (__builtin_bit_cast(float, 0x7fc00000u))
#define KILN_CLZ64(u) __builtin_clzll(u)
#define KILN_CTZ64(u) __builtin_ctzll(u)
#define KILN_POP64(u) __builtin_popcountll(u)
#endif

/* Metal's constants, unless a host header defined them already. */
#ifndef INFINITY
#define INFINITY KILN_INFF
#endif
#ifndef NAN
#define NAN KILN_NANF
#endif
#ifndef MAXFLOAT
#define MAXFLOAT 0x1.fffffep+127f
#endif
#ifndef FLT_MAX
#define FLT_MAX 0x1.fffffep+127f
#endif
#ifndef FLT_MIN
#define FLT_MIN 0x1p-126f
#endif
#ifndef FLT_EPSILON
#define FLT_EPSILON 0x1p-23f
#endif
#ifndef HUGE_VALF
#define HUGE_VALF KILN_INFF
#endif
#ifndef M_PI_F
#define M_E_F 2.71828182845904523536f
#define M_LOG2E_F 1.44269504088896340736f
#define M_LOG10E_F 0.434294481903251827651f
#define M_LN2_F 0.693147180559945309417f
#define M_LN10_F 2.30258509299404568402f
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_PI_4_F 0.785398163397448309616f
#define M_1_PI_F 0.318309886183790671538f
#define M_2_PI_F 0.636619772367581343076f
#define M_2_SQRTPI_F 1.12837916709551257390f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.707106781186547524401f
#endif

namespace metal {

/* Sections a kernel does not name are left out when codegen.c says
 * which it needs (KILN_NEEDS_KNOWN): each costs NVRTC time to parse. */
#if defined(KILN_NEED_LIMITS) || !defined(KILN_NEEDS_KNOWN)
/* ---- numeric_limits ----------------------------------------------------- */

template <class T> struct numeric_limits {
  static constexpr bool is_specialized = false;
};

#define KILN_LIMITS_INT(T, lo, hi, bits)                                      \
  template <> struct numeric_limits<T> {                                      \
    static constexpr bool is_specialized = true, is_integer = true;           \
    static constexpr bool is_signed = (lo) != 0;                              \
    static constexpr bool has_infinity = false, has_quiet_NaN = false;        \
    static constexpr int digits = bits;                                       \
    KILN_FN static constexpr T min() { return lo; }                           \
    KILN_FN static constexpr T max() { return hi; }                           \
    KILN_FN static constexpr T lowest() { return lo; }                        \
    KILN_FN static constexpr T epsilon() { return 0; }                        \
    KILN_FN static constexpr T infinity() { return 0; }                       \
    KILN_FN static constexpr T quiet_NaN() { return 0; }                      \
  };
KILN_LIMITS_INT(bool, false, true, 1)
#ifdef __CHAR_UNSIGNED__
KILN_LIMITS_INT(char, 0, 255, 8)
#else
KILN_LIMITS_INT(char, -128, 127, 7)
#endif
KILN_LIMITS_INT(signed char, -128, 127, 7)
KILN_LIMITS_INT(unsigned char, 0, 255, 8)
KILN_LIMITS_INT(short, -32768, 32767, 15)
KILN_LIMITS_INT(unsigned short, 0, 65535, 16)
KILN_LIMITS_INT(int, -2147483647 - 1, 2147483647, 31)
KILN_LIMITS_INT(unsigned int, 0, 4294967295u, 32)
KILN_LIMITS_INT(long, -9223372036854775807l - 1, 9223372036854775807l, 63)
KILN_LIMITS_INT(unsigned long, 0, 18446744073709551615ul, 64)
KILN_LIMITS_INT(long long, -9223372036854775807ll - 1,
                9223372036854775807ll, 63)
KILN_LIMITS_INT(unsigned long long, 0, 18446744073709551615ull, 64)

/* Floating types: values are written with the type's own constructor, so
 * half and bfloat take their bit patterns (`(kiln_raw(), 0x7c00)`). */
#define KILN_LIMITS_FP(T, bits, lo, hi, eps, inf, nan, den)                   \
  template <> struct numeric_limits<T> {                                      \
    static constexpr bool is_specialized = true, is_integer = false;          \
    static constexpr bool is_signed = true;                                   \
    static constexpr bool has_infinity = true, has_quiet_NaN = true;          \
    static constexpr int digits = bits;                                       \
    KILN_FN static constexpr T min() { return T lo; }                         \
    KILN_FN static constexpr T max() { return T hi; }                         \
    KILN_FN static constexpr T lowest() { return -max(); }                    \
    KILN_FN static constexpr T epsilon() { return T eps; }                    \
    KILN_FN static constexpr T infinity() { return T inf; }                   \
    KILN_FN static constexpr T quiet_NaN() { return T nan; }                  \
    KILN_FN static constexpr T denorm_min() { return T den; }                 \
  };
KILN_LIMITS_FP(float, 24, (0x1p-126f), (0x1.fffffep+127f), (0x1p-23f),
               (KILN_INFF), (KILN_NANF), (0x1p-149f))
KILN_LIMITS_FP(double, 53, (0x1p-1022), (0x1.fffffffffffffp+1023),
               (0x1p-52), ((double)KILN_INFF), ((double)KILN_NANF),
               (0x1p-1074))
#define KILN_LIMITS_H16(T, bits, lo, hi, eps, inf, nan, den)                  \
  template <> struct numeric_limits<T> {                                      \
    static constexpr bool is_specialized = true, is_integer = false;          \
    static constexpr bool is_signed = true;                                   \
    static constexpr bool has_infinity = true, has_quiet_NaN = true;          \
    static constexpr int digits = bits;                                       \
    KILN_FN static constexpr T min() { return T(kiln_raw(), lo); }            \
    KILN_FN static constexpr T max() { return T(kiln_raw(), hi); }            \
    KILN_FN static constexpr T lowest() { return T(kiln_raw(), hi | 0x8000); } \
    KILN_FN static constexpr T epsilon() { return T(kiln_raw(), eps); }       \
    KILN_FN static constexpr T infinity() { return T(kiln_raw(), inf); }      \
    KILN_FN static constexpr T quiet_NaN() { return T(kiln_raw(), nan); }     \
    KILN_FN static constexpr T denorm_min() { return T(kiln_raw(), den); }    \
  };
KILN_LIMITS_H16(half, 11, 0x0400, 0x7bff, 0x1400, 0x7c00, 0x7e00, 0x0001)
KILN_LIMITS_H16(bfloat, 8, 0x0080, 0x7f7f, 0x3c00, 0x7f80, 0x7fc0, 0x0001)

#endif /* KILN_NEED_LIMITS */

#if defined(KILN_NEED_MATH) || !defined(KILN_NEEDS_KNOWN)
/*
 * Functions a kernel does not name are left out too: with KILN_MATH_SOME,
 * codegen.c defines KILN_USE_<name> for each math name the kernel spells
 * (scan.c's math_idents), and the library declares only those and what
 * they are built from (below); without it, everything. A front end parses
 * the whole section in ~5 ms of a small kernel's NVRTC compile.
 */
#ifdef KILN_MATH_SOME
#if defined(KILN_USE_distance) && !defined(KILN_USE_length)
#define KILN_USE_length 1
#endif
#if (defined(KILN_USE_length) || defined(KILN_USE_normalize)) &&             \
    !defined(KILN_USE_sqrt)
#define KILN_USE_sqrt 1
#endif
#if defined(KILN_USE_length_squared) && !defined(KILN_USE_dot)
#define KILN_USE_dot 1
#endif
#if defined(KILN_USE_sincos)
#ifndef KILN_USE_sin
#define KILN_USE_sin 1
#endif
#ifndef KILN_USE_cos
#define KILN_USE_cos 1
#endif
#endif
#if defined(KILN_USE_smoothstep) && !defined(KILN_USE_clamp)
#define KILN_USE_clamp 1
#endif
#if defined(KILN_USE_clamp)
#ifndef KILN_USE_min
#define KILN_USE_min 1
#endif
#ifndef KILN_USE_max
#define KILN_USE_max 1
#endif
#endif
#if defined(KILN_USE_sign) && !defined(KILN_USE_isnan)
#define KILN_USE_isnan 1
#endif
#if defined(KILN_USE_abs) && !defined(KILN_USE_fabs)
#define KILN_USE_fabs 1
#endif
#endif /* KILN_MATH_SOME */

/* ---- scalar kernels ----------------------------------------------------- */

/* kiln_fl<G>: floating functions of integer arguments compute in float. */
template <class G> struct kiln_fl {
  typedef typename kiln_sel<kiln_is_int<G>::value, float, G>::type type;
};
/* A bool, or a bool vector of R's size. */
template <class R> struct kiln_bools {
  typedef typename kiln_with<R, bool>::type type;
};
/* Unsigned integer of a size, and the signed types, for bit functions. */
template <int S> struct kiln_ubits;
template <> struct kiln_ubits<1> {
  typedef unsigned char type;
};
template <> struct kiln_ubits<2> {
  typedef unsigned short type;
};
template <> struct kiln_ubits<4> {
  typedef unsigned int type;
};
template <> struct kiln_ubits<8> {
  typedef unsigned long long type;
};
template <class T> struct kiln_signed {
  static constexpr bool value = T(0) > T(-1);
};
/* half, bfloat, float and double. */
template <class T> struct kiln_is_fp {
  static constexpr bool value = kiln_rank<T>::value >= 1;
};

namespace kiln_s {

/*
 * One template per function for the floating types (half, bfloat, float,
 * double): `ef` for float, `ed` for double, and half and bfloat run the
 * float one and round once. As templates their bodies are checked only
 * for the types a kernel calls them with (as four overloads each, ~200
 * bodies cost NVRTC's front end ~3 ms on every kernel). The lane loops
 * call them with one exact type, so nothing converts; an integer finds
 * no match, as it found four equally good ones before.
 */
#define KILN_FP_T                                                             \
  template <class T, typename kiln_if<kiln_is_fp<T>::value>::type = 0>
#define KILN_S_BODY(ef, ed, ...)                                              \
  if constexpr (kiln_same<T, float>::value)                                   \
    return ef;                                                                \
  else if constexpr (kiln_same<T, double>::value)                             \
    return ed;                                                                \
  else                                                                        \
    return T(__VA_ARGS__);
#define KILN_S1(name, ef, ed)                                                 \
  KILN_FP_T KILN_FN T name(T x) { KILN_S_BODY(ef, ed, name((float)x)) }
#define KILN_S1B(name) KILN_S1(name, KILN_MF(name)(x), KILN_MD(name)(x))
#define KILN_S2(name, ef, ed)                                                 \
  KILN_FP_T KILN_FN T name(T x, T y) {                                        \
    KILN_S_BODY(ef, ed, name((float)x, (float)y))                             \
  }
#define KILN_S2B(name) KILN_S2(name, KILN_MF(name)(x, y), KILN_MD(name)(x, y))
#define KILN_S3(name, ef, ed)                                                 \
  KILN_FP_T KILN_FN T name(T x, T y, T z) {                                   \
    KILN_S_BODY(ef, ed, name((float)x, (float)y, (float)z))                   \
  }

/* The classification functions test bits, so -ffast-math cannot fold them
 * away. */
KILN_FN bool isnan(float x) {
  return (kiln_fbits(x) & 0x7fffffffu) > 0x7f800000u;
}
KILN_FN bool isinf(float x) {
  return (kiln_fbits(x) & 0x7fffffffu) == 0x7f800000u;
}
KILN_FN bool isfinite(float x) {
  return (kiln_fbits(x) & 0x7fffffffu) < 0x7f800000u;
}
KILN_FN bool signbit(float x) { return kiln_fbits(x) >> 31; }
KILN_FN bool isnan(double x) {
  return (kiln_dbits(x) & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}
KILN_FN bool isinf(double x) {
  return (kiln_dbits(x) & 0x7fffffffffffffffull) == 0x7ff0000000000000ull;
}
KILN_FN bool isfinite(double x) {
  return (kiln_dbits(x) & 0x7fffffffffffffffull) < 0x7ff0000000000000ull;
}
KILN_FN bool signbit(double x) { return kiln_dbits(x) >> 63; }
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, bool>::type isnan(H x) {
  return isnan((float)x);
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, bool>::type isinf(H x) {
  return isinf((float)x);
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, bool>::type isfinite(H x) {
  return isfinite((float)x);
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, bool>::type signbit(H x) {
  return x.bits >> 15;
}

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fabs)
KILN_S1B(fabs)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_floor)
KILN_S1B(floor)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_ceil)
KILN_S1B(ceil)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_round)
KILN_S1B(round) /* halfway cases away from zero, as Metal's round */
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_rint)
KILN_S1B(rint)  /* halfway cases to even */
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_trunc)
KILN_S1B(trunc)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sqrt)
KILN_S1B(sqrt)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp)
KILN_S1B(exp)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp2)
KILN_S1B(exp2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log)
KILN_S1B(log)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log2)
KILN_S1B(log2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log10)
KILN_S1B(log10)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sin)
KILN_S1B(sin)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_cos)
KILN_S1B(cos)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_tan)
KILN_S1B(tan)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_asin)
KILN_S1B(asin)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_acos)
KILN_S1B(acos)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_atan)
KILN_S1B(atan)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sinh)
KILN_S1B(sinh)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_cosh)
KILN_S1B(cosh)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_tanh)
KILN_S1B(tanh)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_rsqrt)
KILN_S1(rsqrt, 1.0f / KILN_MF(sqrt)(x), 1.0 / KILN_MD(sqrt)(x))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp10)
KILN_S1(exp10, KILN_MF(pow)(10.0f, x), KILN_MD(pow)(10.0, x))
#endif
/* Metal: fract(x) = fmin(x - floor(x), the largest value below 1). */
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fract)
KILN_S1(fract, KILN_MF(fmin)(x - KILN_MF(floor)(x), 0x1.fffffep-1f),
        KILN_MD(fmin)(x - KILN_MD(floor)(x), 0x1.fffffffffffffp-1))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_saturate)
KILN_S1(saturate, KILN_MF(fmin)(KILN_MF(fmax)(x, 0.0f), 1.0f),
        KILN_MD(fmin)(KILN_MD(fmax)(x, 0.0), 1.0))
#endif
/* Metal: 1 or -1 by sign, a signed zero for zero, 0 for NaN. */
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sign)
KILN_S1(sign, x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : isnan(x) ? 0.0f : x,
        x > 0.0 ? 1.0 : x < 0.0 ? -1.0 : isnan(x) ? 0.0 : x)
#endif

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmin)
KILN_S2B(fmin)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmax)
KILN_S2B(fmax)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmod)
KILN_S2B(fmod)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_pow)
KILN_S2B(pow)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_atan2)
KILN_S2B(atan2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_copysign)
KILN_S2B(copysign)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_powr)
KILN_S2(powr, KILN_MF(pow)(x, y), KILN_MD(pow)(x, y))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_step)
KILN_S2(step, y < x ? 0.0f : 1.0f, y < x ? 0.0 : 1.0) /* step(edge, x) */
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_divide)
KILN_S2(divide, x / y, x / y)
#endif

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_ldexp)
KILN_FN float ldexp(float x, int k) { return KILN_MF(ldexp)(x, k); }
KILN_FN double ldexp(double x, int k) { return KILN_MD(ldexp)(x, k); }
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, H>::type ldexp(H x, int k) {
  return H(ldexp((float)x, k));
}
#endif

/* abs, min, max and clamp serve integers too; for floating types min and
 * max are fmin and fmax, as in Metal. */
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_abs)
KILN_FN float abs(float x) { return fabs(x); }
KILN_FN double abs(double x) { return fabs(x); }
KILN_FN half abs(half x) { return half(kiln_raw(), (ushort)(x.bits & 0x7fff)); }
KILN_FN bfloat abs(bfloat x) {
  return bfloat(kiln_raw(), (ushort)(x.bits & 0x7fff));
}
template <class T>
KILN_FN typename kiln_if<kiln_is_int<T>::value, T>::type abs(T x) {
  typedef typename kiln_ubits<sizeof(T)>::type U;
  /* negate in unsigned arithmetic: abs(INT_MIN) is INT_MIN, not UB; no
   * test for unsigned types, which NVRTC would call pointless */
  if constexpr (kiln_signed<T>::value)
    return x < T(0) ? T(U(0) - U(x)) : x;
  else
    return x;
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_min)
KILN_S2(min, KILN_MF(fmin)(x, y), KILN_MD(fmin)(x, y))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_max)
KILN_S2(max, KILN_MF(fmax)(x, y), KILN_MD(fmax)(x, y))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_min)
template <class T>
KILN_FN typename kiln_if<kiln_is_int<T>::value, T>::type min(T x, T y) {
  return y < x ? y : x;
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_max)
template <class T>
KILN_FN typename kiln_if<kiln_is_int<T>::value, T>::type max(T x, T y) {
  return x < y ? y : x;
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_clamp)
template <class T> KILN_FN T clamp(T x, T lo, T hi) {
  return min(max(x, lo), hi);
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_smoothstep)
template <class T> KILN_FN T kiln_smooth(T e0, T e1, T x) {
  T t = clamp((x - e0) / (e1 - e0), T(0), T(1));
  return t * t * (T(3) - T(2) * t);
}
#endif

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fma)
KILN_S3(fma, KILN_MF(fma)(x, y, z), KILN_MD(fma)(x, y, z))
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_mad)
KILN_S3(mad, x * y + z, x * y + z)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_mix)
KILN_S3(mix, x + (y - x) * z, x + (y - x) * z)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_smoothstep)
KILN_S3(smoothstep, kiln_smooth(x, y, z), kiln_smooth(x, y, z))
#endif

/* Bit counts over the type's own width: clz(0) and ctz(0) give it. */
template <class T> KILN_FN T popcount(T x) {
  typedef typename kiln_ubits<sizeof(T)>::type U;
  return T(KILN_POP64((unsigned long long)(U)x));
}
template <class T> KILN_FN T clz(T x) {
  typedef typename kiln_ubits<sizeof(T)>::type U;
  unsigned long long u = (U)x;
  const int w = 8 * (int)sizeof(T);
  return T(u ? KILN_CLZ64(u) - (64 - w) : w);
}
template <class T> KILN_FN T ctz(T x) {
  typedef typename kiln_ubits<sizeof(T)>::type U;
  unsigned long long u = (U)x;
  return T(u ? KILN_CTZ64(u) : 8 * (int)sizeof(T));
}
/* The high half of the full product. */
template <class T> KILN_FN T mulhi(T x, T y) {
  const int w = 8 * (int)sizeof(T);
  if constexpr (sizeof(T) < 8) {
    if constexpr (kiln_signed<T>::value)
      return T((long long)x * (long long)y >> w);
    else
      return T((unsigned long long)x * (unsigned long long)y >> w);
  } else {
#if KILN_ON_CUDA
    if constexpr (kiln_signed<T>::value)
      return T(__mul64hi((long long)x, (long long)y));
    else
      return T(__umul64hi((unsigned long long)x, (unsigned long long)y));
#else
    if constexpr (kiln_signed<T>::value)
      return T((__int128)x * (__int128)y >> w);
    else
      return T((unsigned __int128)x * (unsigned __int128)y >> w);
#endif
  }
}

} /* namespace kiln_s */

/* ---- lane loops --------------------------------------------------------- */

/* Apply Op::f lane by lane after converting the arguments to R; the
 * result has type Out (R, or R's bool vector). */
template <class Op, class Out, class R, class A>
KILN_FN Out kiln_map1(const A &a) {
  typedef kiln_ln<R> L;
  R x = L::cvt(a);
  Out r = Out();
  for (int i = 0; i < L::n; ++i)
    kiln_ln<Out>::at(r, i) = Op::f(L::at(x, i));
  return r;
}
template <class Op, class R, class A, class B>
KILN_FN R kiln_map2(const A &a, const B &b) {
  typedef kiln_ln<R> L;
  R x = L::cvt(a), y = L::cvt(b);
  for (int i = 0; i < L::n; ++i)
    L::at(x, i) = Op::f(L::at(x, i), L::at(y, i));
  return x;
}
template <class Op, class R, class A, class B, class C>
KILN_FN R kiln_map3(const A &a, const B &b, const C &c) {
  typedef kiln_ln<R> L;
  R x = L::cvt(a), y = L::cvt(b), z = L::cvt(c);
  for (int i = 0; i < L::n; ++i)
    L::at(x, i) = Op::f(L::at(x, i), L::at(y, i), L::at(z, i));
  return x;
}

/* Result types: F* for floating functions (integers compute in float),
 * G* for those that keep integer types. */
#define KILN_G1(X) typename kiln_g1<X>::type
#define KILN_F1(X) typename kiln_fl<KILN_G1(X)>::type
#define KILN_G2(A, B) typename kiln_g2<A, B>::type
#define KILN_F2(A, B) typename kiln_fl<KILN_G2(A, B)>::type
#define KILN_G3(A, B, C) typename kiln_g2<KILN_G2(A, B), C>::type
#define KILN_F3(A, B, C) typename kiln_fl<KILN_G3(A, B, C)>::type

/* The public templates: each forwards lane by lane to kiln_s. */
#define KILN_DEF1(name, RT)                                                   \
  struct kiln_op_##name {                                                     \
    template <class T> static KILN_FN T f(T x) { return kiln_s::name(x); }    \
  };                                                                          \
  template <class X> KILN_FN RT(X) name(const X &x) {                         \
    return kiln_map1<kiln_op_##name, RT(X), RT(X)>(x);                        \
  }
#define KILN_DEFP(name)                                                       \
  struct kiln_op_##name {                                                     \
    template <class T> static KILN_FN bool f(T x) {                           \
      return kiln_s::name(x);                                                 \
    }                                                                         \
  };                                                                          \
  template <class X>                                                          \
  KILN_FN typename kiln_bools<KILN_F1(X)>::type name(const X &x) {            \
    return kiln_map1<kiln_op_##name, typename kiln_bools<KILN_F1(X)>::type,   \
                     KILN_F1(X)>(x);                                          \
  }
#define KILN_DEF2(name, RT)                                                   \
  struct kiln_op_##name {                                                     \
    template <class T> static KILN_FN T f(T x, T y) {                         \
      return kiln_s::name(x, y);                                              \
    }                                                                         \
  };                                                                          \
  template <class A, class B>                                                 \
  KILN_FN RT(A, B) name(const A &a, const B &b) {                             \
    return kiln_map2<kiln_op_##name, RT(A, B)>(a, b);                         \
  }
#define KILN_DEF3(name, RT)                                                   \
  struct kiln_op_##name {                                                     \
    template <class T> static KILN_FN T f(T x, T y, T z) {                    \
      return kiln_s::name(x, y, z);                                           \
    }                                                                         \
  };                                                                          \
  template <class A, class B, class C>                                        \
  KILN_FN RT(A, B, C) name(const A &a, const B &b, const C &c) {              \
    return kiln_map3<kiln_op_##name, RT(A, B, C)>(a, b, c);                   \
  }

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fabs)
KILN_DEF1(fabs, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_floor)
KILN_DEF1(floor, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_ceil)
KILN_DEF1(ceil, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_round)
KILN_DEF1(round, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_rint)
KILN_DEF1(rint, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_trunc)
KILN_DEF1(trunc, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fract)
KILN_DEF1(fract, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sqrt)
KILN_DEF1(sqrt, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_rsqrt)
KILN_DEF1(rsqrt, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp)
KILN_DEF1(exp, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp2)
KILN_DEF1(exp2, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_exp10)
KILN_DEF1(exp10, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log)
KILN_DEF1(log, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log2)
KILN_DEF1(log2, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_log10)
KILN_DEF1(log10, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sin)
KILN_DEF1(sin, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_cos)
KILN_DEF1(cos, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_tan)
KILN_DEF1(tan, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_asin)
KILN_DEF1(asin, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_acos)
KILN_DEF1(acos, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_atan)
KILN_DEF1(atan, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sinh)
KILN_DEF1(sinh, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_cosh)
KILN_DEF1(cosh, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_tanh)
KILN_DEF1(tanh, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_saturate)
KILN_DEF1(saturate, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sign)
KILN_DEF1(sign, KILN_F1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_abs)
KILN_DEF1(abs, KILN_G1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_popcount)
KILN_DEF1(popcount, KILN_G1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_clz)
KILN_DEF1(clz, KILN_G1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_ctz)
KILN_DEF1(ctz, KILN_G1)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_isnan)
KILN_DEFP(isnan)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_isinf)
KILN_DEFP(isinf)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_isfinite)
KILN_DEFP(isfinite)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_signbit)
KILN_DEFP(signbit)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmin)
KILN_DEF2(fmin, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmax)
KILN_DEF2(fmax, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fmod)
KILN_DEF2(fmod, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_pow)
KILN_DEF2(pow, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_powr)
KILN_DEF2(powr, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_atan2)
KILN_DEF2(atan2, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_copysign)
KILN_DEF2(copysign, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_step)
KILN_DEF2(step, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_divide)
KILN_DEF2(divide, KILN_F2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_min)
KILN_DEF2(min, KILN_G2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_max)
KILN_DEF2(max, KILN_G2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_mulhi)
KILN_DEF2(mulhi, KILN_G2)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_fma)
KILN_DEF3(fma, KILN_F3)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_mad)
KILN_DEF3(mad, KILN_F3)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_mix)
KILN_DEF3(mix, KILN_F3)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_smoothstep)
KILN_DEF3(smoothstep, KILN_F3)
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_clamp)
KILN_DEF3(clamp, KILN_G3)
#endif

/* sincos returns the sine and stores the cosine. */
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_sincos)
template <class X, class Y>
KILN_FN KILN_F1(X) sincos(const X &x, Y &cosval) {
  typedef KILN_F1(X) R;
  typedef kiln_ln<R> L;
  R s = L::cvt(x), c = s;
  for (int i = 0; i < L::n; ++i) {
    L::at(c, i) = kiln_s::cos(L::at(s, i));
    L::at(s, i) = kiln_s::sin(L::at(s, i));
  }
  cosval = c;
  return s;
}
#endif

/* ldexp(x, k): x * 2^k, with k an int or an int vector. */
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_ldexp)
template <class X, class K>
KILN_FN KILN_F1(X) ldexp(const X &x, const K &k) {
  typedef KILN_F1(X) R;
  typedef typename kiln_with<R, int>::type KI;
  R r = kiln_ln<R>::cvt(x);
  KI e = kiln_ln<KI>::cvt(k);
  for (int i = 0; i < kiln_ln<R>::n; ++i)
    kiln_ln<R>::at(r, i) = kiln_s::ldexp(kiln_ln<R>::at(r, i),
                                         kiln_ln<KI>::at(e, i));
  return r;
}
#endif

/* ---- geometric functions (vectors only) --------------------------------- */

/* Sums run in float for half and bfloat and round once at the end; lane
 * order is fixed, so results are reproducible. */
template <class T> struct kiln_acc {
  typedef typename kiln_sel<kiln_is_h16<T>::value, float, T>::type type;
};
template <class V> struct kiln_geo {
  typedef typename kiln_vt<V>::elem T;
  typedef typename kiln_acc<T>::type A;
  static KILN_FN A dot(const V &a, const V &b) {
    A s = A(a.v[0]) * A(b.v[0]);
    for (int i = 1; i < kiln_vt<V>::n; ++i)
      s = s + A(a.v[i]) * A(b.v[i]);
    return s;
  }
};
#define KILN_GEO_T(A, B) typename kiln_vt<KILN_G2(A, B)>::elem

#if !defined(KILN_MATH_SOME) || defined(KILN_USE_dot)
template <class A, class B>
KILN_FN KILN_GEO_T(A, B) dot(const A &a, const B &b) {
  typedef KILN_G2(A, B) V;
  return KILN_GEO_T(A, B)(
      kiln_geo<V>::dot(kiln_ln<V>::cvt(a), kiln_ln<V>::cvt(b)));
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_length_squared)
template <class X>
KILN_FN typename kiln_vt<X>::elem length_squared(const X &x) {
  return dot(x, x);
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_length)
template <class X> KILN_FN typename kiln_vt<X>::elem length(const X &x) {
  typedef typename kiln_vt<X>::type V;
  V v = kiln_ln<V>::cvt(x);
  return typename kiln_vt<X>::elem(kiln_s::sqrt(kiln_geo<V>::dot(v, v)));
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_distance)
template <class A, class B>
KILN_FN KILN_GEO_T(A, B) distance(const A &a, const B &b) {
  typedef KILN_G2(A, B) V;
  return length(kiln_ln<V>::cvt(a) - kiln_ln<V>::cvt(b));
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_normalize)
template <class X> KILN_FN typename kiln_vt<X>::type normalize(const X &x) {
  typedef typename kiln_vt<X>::type V;
  typedef typename kiln_geo<V>::A Acc;
  V v = kiln_ln<V>::cvt(x);
  Acc len = kiln_s::sqrt(kiln_geo<V>::dot(v, v));
  for (int i = 0; i < kiln_vt<V>::n; ++i)
    v.v[i] = typename kiln_vt<V>::elem(Acc(v.v[i]) / len);
  return v;
}
#endif
#if !defined(KILN_MATH_SOME) || defined(KILN_USE_cross)
template <class A, class B>
KILN_FN typename kiln_if<kiln_vt<KILN_G2(A, B)>::n == 3, KILN_G2(A, B)>::type
cross(const A &a, const B &b) {
  typedef KILN_G2(A, B) V;
  V x = kiln_ln<V>::cvt(a), y = kiln_ln<V>::cvt(b);
  return V(x.v[1] * y.v[2] - x.v[2] * y.v[1], x.v[2] * y.v[0] - x.v[0] * y.v[2],
           x.v[0] * y.v[1] - x.v[1] * y.v[0]);
}
#endif

/* metal::precise:: and metal::fast:: name the same functions; the math
 * mode of the compilation (IEEE or -ffast-math) sets their speed. */
namespace precise {
using namespace ::metal;
}
namespace fast {
using namespace ::metal;
}

#endif /* KILN_NEED_MATH */

} /* namespace metal */

#endif /* KILN_METAL_MATH_H */
