/*
 * Metal Shading Language types for kiln's C++ kernel backends: the first
 * portable part of the prelude that precedes every generated kernel
 * (KERNEL-DIALECT.md section 5).
 *
 * Namespace metal gets the scalar aliases, `half` and `bfloat` (16-bit
 * storage, arithmetic in float, round-to-nearest-even conversions and
 * Metal's promotions), the vectors vec<T, N> (float4, uint3, ...) with
 * Metal's layout, constructors, operators and swizzles, and as_type,
 * select, all, any.
 *
 * The text must also compile under NVRTC later: no std headers, compiler
 * builtins only behind small macros, and every function marked KILN_FN.
 * Atomics, barriers, SIMD-group functions and address spaces belong to the
 * backend's own prelude file, not here.
 */
#ifndef KILN_METAL_TYPES_H
#define KILN_METAL_TYPES_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KILN_ON_CUDA 1
#define KILN_FN __device__ __forceinline__
#else
#define KILN_ON_CUDA 0
#define KILN_FN inline
#endif

/* Bit copies for bit casts; compilers turn them into register moves. The
 * void casts keep GCC from objecting to copies of non-trivial classes.
 * NVRTC has no __builtin_memcpy but declares memcpy for device code. */
#if KILN_ON_CUDA
#define KILN_COPY(dst, src, n) memcpy((void *)(dst), (const void *)(src), (n))
#else
#define KILN_COPY(dst, src, n)                                                \
  __builtin_memcpy((void *)(dst), (const void *)(src), (n))
#endif

/* Anonymous structs in unions (the .x/.y members) are a GNU extension that
 * NVRTC accepts without the keyword it does not know. */
#if KILN_ON_CUDA
#define KILN_EXT
#else
#define KILN_EXT __extension__
#endif

#if KILN_ON_CUDA
/*
 * Metal's vector names under NVRTC. NVRTC predefines CUDA's own float2,
 * uint3, int4, ... at global scope, and declares make_float2() and its
 * friends lazily, at their first call, looking their return types up
 * from the caller's scope. With a metal::float2 and `using namespace
 * metal;` both would be ambiguous. So each colliding Metal name is a
 * macro for a kiln_ name that exists only in namespace metal (this file's
 * typedefs below are written through the macros): `float2`,
 * `metal::float2` and `::float2` all mean Metal's type in user code and
 * generated code, and make_float2() still returns CUDA's. Native code
 * names CUDA's types as kiln_cuda::float2 (through the same macro).
 * Macros rather than a namespace around the user's code, because the
 * header may #include and specialise templates, which that would break.
 * The cost: a CUDA header #included after the prelude would see Metal's
 * types under CUDA's names; native code should use NVRTC's built-ins.
 */
#pragma nv_diag_suppress 1444 /* CUDA 13 deprecates long4/ulong4/double4 */
#define KILN_CUDA_VEC(name)                                                   \
  typedef ::name##2 kiln_##name##2;                                           \
  typedef ::name##3 kiln_##name##3;                                           \
  typedef ::name##4 kiln_##name##4;
namespace kiln_cuda {
KILN_CUDA_VEC(char)
KILN_CUDA_VEC(uchar)
KILN_CUDA_VEC(short)
KILN_CUDA_VEC(ushort)
KILN_CUDA_VEC(int)
KILN_CUDA_VEC(uint)
KILN_CUDA_VEC(long)
KILN_CUDA_VEC(ulong)
KILN_CUDA_VEC(float)
KILN_CUDA_VEC(double)
} /* namespace kiln_cuda */
#undef KILN_CUDA_VEC
#pragma nv_diag_default 1444
#define char2 kiln_char2
#define char3 kiln_char3
#define char4 kiln_char4
#define uchar2 kiln_uchar2
#define uchar3 kiln_uchar3
#define uchar4 kiln_uchar4
#define short2 kiln_short2
#define short3 kiln_short3
#define short4 kiln_short4
#define ushort2 kiln_ushort2
#define ushort3 kiln_ushort3
#define ushort4 kiln_ushort4
#define int2 kiln_int2
#define int3 kiln_int3
#define int4 kiln_int4
#define uint2 kiln_uint2
#define uint3 kiln_uint3
#define uint4 kiln_uint4
#define long2 kiln_long2
#define long3 kiln_long3
#define long4 kiln_long4
#define ulong2 kiln_ulong2
#define ulong3 kiln_ulong3
#define ulong4 kiln_ulong4
#define float2 kiln_float2
#define float3 kiln_float3
#define float4 kiln_float4
#define double2 kiln_double2
#define double3 kiln_double3
#define double4 kiln_double4
#endif /* KILN_ON_CUDA */

namespace metal {

typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;

struct half;
struct bfloat;
template <class T, int N> struct vec;
template <class V, int C, int... I> struct kiln_swz;

/* ---- type traits (NVRTC has no <type_traits>) -------------------------- */

template <bool C, class T = int> struct kiln_if {};
template <class T> struct kiln_if<true, T> {
  typedef T type;
};
template <bool C, class A, class B> struct kiln_sel {
  typedef A type;
};
template <class A, class B> struct kiln_sel<false, A, B> {
  typedef B type;
};
template <class A, class B> struct kiln_same {
  static constexpr bool value = false;
};
template <class A> struct kiln_same<A, A> {
  static constexpr bool value = true;
};
template <class T> KILN_FN T kiln_make(); /* for decltype only */

/* 0 integers, 1 half and bfloat, 2 float, 3 double, -1 not a scalar: one
 * table answers "is it a scalar" and gives Metal's promotion order. */
template <class T> struct kiln_rank {
  static constexpr int value = -1;
};
#define KILN_RANK(T, r)                                                       \
  template <> struct kiln_rank<T> {                                           \
    static constexpr int value = r;                                           \
  };
KILN_RANK(bool, 0)
KILN_RANK(char, 0)
KILN_RANK(signed char, 0)
KILN_RANK(unsigned char, 0)
KILN_RANK(short, 0)
KILN_RANK(unsigned short, 0)
KILN_RANK(int, 0)
KILN_RANK(unsigned int, 0)
KILN_RANK(long, 0)
KILN_RANK(unsigned long, 0)
KILN_RANK(long long, 0)
KILN_RANK(unsigned long long, 0)
KILN_RANK(half, 1)
KILN_RANK(bfloat, 1)
KILN_RANK(float, 2)
KILN_RANK(double, 3)

template <class T> struct kiln_is_int {
  static constexpr bool value = kiln_rank<T>::value == 0;
};
template <class T> struct kiln_is_h16 {
  static constexpr bool value = kiln_rank<T>::value == 1;
};
template <class T> struct kiln_is_scalar {
  static constexpr bool value = kiln_rank<T>::value >= 0;
};

/* ---- half and bfloat conversions ---------------------------------------- */

struct kiln_raw {}; /* tag: construct a half or bfloat from its bits */

KILN_FN uint kiln_fbits(float f) {
  uint u;
  KILN_COPY(&u, &f, 4);
  return u;
}
KILN_FN float kiln_bitsf(uint u) {
  float f;
  KILN_COPY(&f, &u, 4);
  return f;
}
KILN_FN unsigned long long kiln_dbits(double d) {
  unsigned long long u;
  KILN_COPY(&u, &d, 8);
  return u;
}

/*
 * Rounds a non-negative IEEE value, given as its bits `a` in a format with
 * `sm` mantissa and `se` exponent bits, to nearest-even in a narrower
 * format with `dm` and `de` bits. Handles subnormals on both sides,
 * overflow to infinity and quiet NaNs. Integer-only, so it is exact under
 * -ffast-math and flush-to-zero too.
 */
KILN_FN uint kiln_narrow(unsigned long long a, int sm, int se, int dm,
                         int de) {
  unsigned long long src_inf = ((1ull << se) - 1) << sm;
  uint dst_inf = ((1u << de) - 1) << dm;
  if (a >= src_inf) /* NaN stays NaN (quiet), keeping its top payload */
    return a == src_inf ? dst_inf
                        : dst_inf | 1u << (dm - 1) |
                              (uint)(a >> (sm - dm) & ((1u << dm) - 1));
  int ef = (int)(a >> sm);
  unsigned long long m = a & ((1ull << sm) - 1);
  if (ef)
    m |= 1ull << sm;
  else
    ef = 1; /* a source subnormal has the exponent of 1 without the bit */
  int e = ef - ((1 << (se - 1)) - 1) + ((1 << (de - 1)) - 1);
  int sh = sm - dm;
  if (e < 1) { /* a subnormal result: shift the mantissa further */
    sh += 1 - e;
    e = 1;
  }
  if (sh > sm + 1) /* below half of the smallest subnormal */
    return 0;
  unsigned long long q = m >> sh, rem = m & ((1ull << sh) - 1);
  unsigned long long halfway = 1ull << (sh - 1);
  q += rem > halfway || (rem == halfway && (q & 1));
  /* q carries the implicit bit, so a carry rolls into the exponent */
  unsigned long long r = ((unsigned long long)(e - 1) << dm) + q;
  return r >= dst_inf ? dst_inf : (uint)r;
}

#if defined(__F16C__) && !KILN_ON_CUDA
/* x86 with F16C (e.g. -march=native): one instruction each way. */
typedef float kiln_v4sf __attribute__((vector_size(16)));
typedef short kiln_v8hi __attribute__((vector_size(16)));
KILN_FN ushort kiln_f2h(float f) {
  kiln_v4sf x = {f, 0.0f, 0.0f, 0.0f};
  return (ushort)__builtin_ia32_vcvtps2ph(x, 0)[0]; /* 0: nearest-even */
}
#else
KILN_FN ushort kiln_f2h(float f) {
  uint u = kiln_fbits(f), a = u & 0x7fffffffu, s = u >> 16 & 0x8000u;
  /* Fast path for results that are normal halves or round up to infinity:
   * rebias the exponent, add the nearest-even bias, shift. */
  if (a - 0x38800000u < 0x47800000u - 0x38800000u)
    return (ushort)(s | (a - (112u << 23) + 0xfffu + (a >> 13 & 1u)) >> 13);
  return (ushort)(s | kiln_narrow(a, 23, 8, 10, 5));
}
#endif
KILN_FN ushort kiln_d2h(double d) {
  unsigned long long u = kiln_dbits(d);
  return (ushort)((u >> 48 & 0x8000u) |
                  kiln_narrow(u & 0x7fffffffffffffffull, 52, 11, 10, 5));
}
KILN_FN ushort kiln_f2b(float f) {
  uint u = kiln_fbits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (ushort)(u >> 16 | 0x40u);
  /* Same exponent range as float: adding the rounding bias to the bits is
   * round-to-nearest-even, including the carry into infinity. */
  return (ushort)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
}
KILN_FN ushort kiln_d2b(double d) {
  unsigned long long u = kiln_dbits(d);
  return (ushort)((u >> 48 & 0x8000u) |
                  kiln_narrow(u & 0x7fffffffffffffffull, 52, 11, 7, 8));
}
#if defined(__F16C__) && !KILN_ON_CUDA
KILN_FN float kiln_h2f(ushort h) {
  kiln_v8hi x = {(short)h, 0, 0, 0, 0, 0, 0, 0};
  return __builtin_ia32_vcvtph2ps(x)[0];
}
#else
KILN_FN float kiln_h2f(ushort h) {
  uint s = (uint)(h & 0x8000u) << 16, e = h >> 10 & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f)
    return kiln_bitsf(s | 0x7f800000u | m << 13);
  if (e)
    return kiln_bitsf(s | (e + 112) << 23 | m << 13);
  /* A subnormal half is m * 2^-24, a normal float: exact. */
  return kiln_bitsf(s | kiln_fbits((float)m * 0x1p-24f));
}
#endif
KILN_FN float kiln_b2f(ushort b) { return kiln_bitsf((uint)b << 16); }

/* ---- half and bfloat ---------------------------------------------------- */

/* IEEE binary16. Arithmetic happens in float and rounds once, which is
 * correctly rounded for + - * / since float has more than 2*11+2 bits. */
struct half {
  ushort bits;
  half() = default;
  constexpr KILN_FN half(kiln_raw, ushort b) : bits(b) {}
  KILN_FN half(float f) : bits(kiln_f2h(f)) {}
  KILN_FN half(double d) : bits(kiln_d2h(d)) {}
  template <class I, typename kiln_if<kiln_is_int<I>::value>::type = 0>
  KILN_FN half(I i) : bits(kiln_d2h((double)i)) {}
  KILN_FN half(bfloat b);
  KILN_FN operator float() const { return kiln_h2f(bits); }
};

/* bfloat16: the top half of a float. */
struct bfloat {
  ushort bits;
  bfloat() = default;
  constexpr KILN_FN bfloat(kiln_raw, ushort b) : bits(b) {}
  KILN_FN bfloat(float f) : bits(kiln_f2b(f)) {}
  KILN_FN bfloat(double d) : bits(kiln_d2b(d)) {}
  template <class I, typename kiln_if<kiln_is_int<I>::value>::type = 0>
  KILN_FN bfloat(I i) : bits(kiln_d2b((double)i)) {}
  KILN_FN bfloat(half h) : bits(kiln_f2b((float)h)) {}
  KILN_FN operator float() const { return kiln_b2f(bits); }
};

KILN_FN half::half(bfloat b) : bits(kiln_f2h((float)b)) {}

typedef half float16_t;
typedef bfloat bfloat16_t;

/* Metal's half literals, 0.5h and 2h. The suffix lacks the underscore
 * that C++ asks of user literals, hence the silenced warning. */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wuser-defined-literals"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wliteral-suffix"
#endif
KILN_FN half operator""h(long double x) { return half((double)x); }
KILN_FN half operator""h(unsigned long long x) { return half((double)x); }
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/*
 * Metal's promotions for an operator with a half or bfloat operand and a
 * scalar: with an integer or the same type the result keeps the 16-bit
 * type, with float or double it widens, half with bfloat gives float.
 * `calc` is the type the arithmetic runs in.
 */
template <class A, class B,
          bool = (kiln_is_h16<A>::value || kiln_is_h16<B>::value) &&
                 kiln_is_scalar<A>::value && kiln_is_scalar<B>::value>
struct kiln_arith {};
template <class A, class B> struct kiln_arith<A, B, true> {
  typedef typename kiln_sel<(kiln_rank<A>::value >= kiln_rank<B>::value),
                            A, B>::type hi;
  typedef typename kiln_sel<kiln_rank<A>::value == 1 &&
                                kiln_rank<B>::value == 1 &&
                                !kiln_same<A, B>::value,
                            float, hi>::type type;
  typedef typename kiln_sel<kiln_same<type, double>::value, double,
                            float>::type calc;
  typedef bool cmp;
};

#define KILN_H16_ARITH(op)                                                    \
  template <class A, class B>                                                 \
  KILN_FN typename kiln_arith<A, B>::type operator op(A a, B b) {             \
    typedef typename kiln_arith<A, B>::calc C;                                \
    return typename kiln_arith<A, B>::type((C)a op(C) b);                     \
  }
#define KILN_H16_CMP(op)                                                      \
  template <class A, class B>                                                 \
  KILN_FN typename kiln_arith<A, B>::cmp operator op(A a, B b) {              \
    typedef typename kiln_arith<A, B>::calc C;                                \
    return (C)a op(C) b;                                                      \
  }
#define KILN_H16_ASSIGN(op)                                                   \
  template <class H, class B>                                                 \
  KILN_FN typename kiln_if<kiln_is_h16<H>::value && kiln_is_scalar<B>::value, \
                           H &>::type                                         \
  operator op##=(H & a, B b) {                                                \
    a = H(a op b);                                                            \
    return a;                                                                 \
  }
KILN_H16_ARITH(+)
KILN_H16_ARITH(-)
KILN_H16_ARITH(*)
KILN_H16_ARITH(/)
KILN_H16_CMP(==)
KILN_H16_CMP(!=)
KILN_H16_CMP(<)
KILN_H16_CMP(>)
KILN_H16_CMP(<=)
KILN_H16_CMP(>=)
KILN_H16_ASSIGN(+)
KILN_H16_ASSIGN(-)
KILN_H16_ASSIGN(*)
KILN_H16_ASSIGN(/)

/* Negation flips the sign bit: exact, and -0 stays distinct from 0. */
KILN_FN half operator-(half a) {
  return half(kiln_raw(), (ushort)(a.bits ^ 0x8000u));
}
KILN_FN bfloat operator-(bfloat a) {
  return bfloat(kiln_raw(), (ushort)(a.bits ^ 0x8000u));
}
KILN_FN half operator+(half a) { return a; }
KILN_FN bfloat operator+(bfloat a) { return a; }

template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, H &>::type operator++(H &a) {
  return a = H((float)a + 1.0f);
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, H &>::type operator--(H &a) {
  return a = H((float)a - 1.0f);
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, H>::type operator++(H &a,
                                                                   int) {
  H old = a;
  a = H((float)a + 1.0f);
  return old;
}
template <class H>
KILN_FN typename kiln_if<kiln_is_h16<H>::value, H>::type operator--(H &a,
                                                                   int) {
  H old = a;
  a = H((float)a - 1.0f);
  return old;
}

/* ---- swizzle member generation ------------------------------------------ */

/* KILN_E<C>_<L>(F, args,) calls F(args, i) for each component index i < C.
 * One macro per nesting level L, since a macro cannot expand inside its own
 * expansion. */
#define KILN_E2_1(F, ...) F(__VA_ARGS__ 0) F(__VA_ARGS__ 1)
#define KILN_E2_2(F, ...) F(__VA_ARGS__ 0) F(__VA_ARGS__ 1)
#define KILN_E2_3(F, ...) F(__VA_ARGS__ 0) F(__VA_ARGS__ 1)
#define KILN_E2_4(F, ...) F(__VA_ARGS__ 0) F(__VA_ARGS__ 1)
#define KILN_E3_1(F, ...) KILN_E2_1(F, __VA_ARGS__) F(__VA_ARGS__ 2)
#define KILN_E3_2(F, ...) KILN_E2_2(F, __VA_ARGS__) F(__VA_ARGS__ 2)
#define KILN_E3_3(F, ...) KILN_E2_3(F, __VA_ARGS__) F(__VA_ARGS__ 2)
#define KILN_E3_4(F, ...) KILN_E2_4(F, __VA_ARGS__) F(__VA_ARGS__ 2)
#define KILN_E4_1(F, ...) KILN_E3_1(F, __VA_ARGS__) F(__VA_ARGS__ 3)
#define KILN_E4_2(F, ...) KILN_E3_2(F, __VA_ARGS__) F(__VA_ARGS__ 3)
#define KILN_E4_3(F, ...) KILN_E3_3(F, __VA_ARGS__) F(__VA_ARGS__ 3)
#define KILN_E4_4(F, ...) KILN_E3_4(F, __VA_ARGS__) F(__VA_ARGS__ 3)

/* Component letters by index, in the xyzw and the rgba spelling; the
 * bare names stand for an absent component of a shorter swizzle. */
#define KILN_X
#define KILN_R
#define KILN_X0 x
#define KILN_X1 y
#define KILN_X2 z
#define KILN_X3 w
#define KILN_R0 r
#define KILN_R1 g
#define KILN_R2 b
#define KILN_R3 a
#define KILN_CAT4_(a, b, c, d) a##b##c##d
#define KILN_CAT4(a, b, c, d) KILN_CAT4_(a, b, c, d)
#define KILN_NAME(P, i, j, k, l)                                              \
  KILN_CAT4(KILN_##P##i, KILN_##P##j, KILN_##P##k, KILN_##P##l)

/* One swizzle type, declared under both spellings (.xy and .rg). */
#define KILN_SW2_M(C, i, j)                                                   \
  kiln_swz<vec<T, 2>, C, i, j> KILN_NAME(X, i, j, , ), KILN_NAME(R, i, j, , );
#define KILN_SW3_M(C, i, j, k)                                                \
  kiln_swz<vec<T, 3>, C, i, j, k> KILN_NAME(X, i, j, k, ),                    \
      KILN_NAME(R, i, j, k, );
#define KILN_SW4_M(C, i, j, k, l)                                             \
  kiln_swz<vec<T, 4>, C, i, j, k, l> KILN_NAME(X, i, j, k, l),                \
      KILN_NAME(R, i, j, k, l);
#define KILN_SW2_A(C, i) KILN_E##C##_2(KILN_SW2_M, C, i, )
#define KILN_SW3_B(C, i, j) KILN_E##C##_3(KILN_SW3_M, C, i, j, )
#define KILN_SW3_A(C, i) KILN_E##C##_2(KILN_SW3_B, C, i, )
#define KILN_SW4_C(C, i, j, k) KILN_E##C##_4(KILN_SW4_M, C, i, j, k, )
#define KILN_SW4_B(C, i, j) KILN_E##C##_3(KILN_SW4_C, C, i, j, )
#define KILN_SW4_A(C, i) KILN_E##C##_2(KILN_SW4_B, C, i, )
/* Every 2-, 3- and 4-letter swizzle of a C-component vector. */
#define KILN_SWIZZLES(C)                                                      \
  KILN_E##C##_1(KILN_SW2_A, C, ) KILN_E##C##_1(KILN_SW3_A, C, )               \
      KILN_E##C##_1(KILN_SW4_A, C, )

/*
 * The swizzle members of a C-component vector. Each one is a class that
 * the compiler instantiates with every vector type, which made swizzles
 * most of the prelude's compile time. So codegen.c lists, before the
 * prelude, only the members the kernel names (from scan.c):
 * KILN_SWIZZLES_USED_<C>(X) calls X(name, K, i...) for each name valid on
 * a C-vector, K letters picking components i.... Without the lists (a
 * kernel the scan cannot see through) every swizzle is declared.
 */
#ifdef KILN_SWIZZLES_USED_4
#define KILN_SWZ_IN2(name, K, ...) kiln_swz<vec<T, K>, 2, __VA_ARGS__> name;
#define KILN_SWZ_IN3(name, K, ...) kiln_swz<vec<T, K>, 3, __VA_ARGS__> name;
#define KILN_SWZ_IN4(name, K, ...) kiln_swz<vec<T, K>, 4, __VA_ARGS__> name;
#define KILN_SWIZZLE_MEMBERS(C) KILN_SWIZZLES_USED_##C(KILN_SWZ_IN##C)
#else
#define KILN_SWIZZLE_MEMBERS(C) KILN_SWIZZLES(C)
#endif

template <int... I> KILN_FN constexpr bool kiln_distinct() {
  int idx[] = {I...};
  for (unsigned i = 0; i < sizeof(idx) / sizeof(idx[0]); ++i)
    for (unsigned j = 0; j < i; ++j)
      if (idx[i] == idx[j])
        return false;
  return true;
}

/*
 * A swizzle: a view of the whole C-component vector (it is one member of
 * the vector's union) that reads as vec<T, K> made of components I...,
 * and can be assigned when no component repeats. Its copy assignment is
 * user-provided so that `a.xy = b.xy` writes two components, not all.
 * A 4-vector can have 336 swizzle types, all instantiated with the
 * vector, so the class declares as little as possible (NVRTC spent ~45 ms
 * on float4 when the compound assignments were members); those are free
 * templates. Usually only the few the kernel names exist (see above).
 */
template <class T, int K, int C, int... I> struct kiln_swz<vec<T, K>, C, I...> {
  T v[C];
  KILN_FN vec<T, K> get() const { return vec<T, K>(v[I]...); }
  KILN_FN operator vec<T, K>() const { return get(); }
  KILN_FN kiln_swz &operator=(const vec<T, K> &o) {
    static_assert(kiln_distinct<I...>(),
                  "a swizzle that repeats a component cannot be assigned to");
    int k = 0;
    ((void)(v[I] = o.v[k++]), ...);
    return *this;
  }
  KILN_FN kiln_swz &operator=(const kiln_swz &o) { return *this = o.get(); }
};

/* s op= r for a swizzle s: through its vector and back. */
#define KILN_SWZ_ASSIGN(op)                                                   \
  template <class V, int C, int... I, class R>                                \
  KILN_FN kiln_swz<V, C, I...> &operator op##=(kiln_swz<V, C, I...> &s,       \
                                               const R &r) {                  \
    return s = V(s.get() op r);                                               \
  }
KILN_SWZ_ASSIGN(+)
KILN_SWZ_ASSIGN(-)
KILN_SWZ_ASSIGN(*)
KILN_SWZ_ASSIGN(/)
KILN_SWZ_ASSIGN(%)
KILN_SWZ_ASSIGN(&)
KILN_SWZ_ASSIGN(|)
KILN_SWZ_ASSIGN(^)
KILN_SWZ_ASSIGN(<<)
KILN_SWZ_ASSIGN(>>)
#undef KILN_SWZ_ASSIGN

/* ---- vectors ------------------------------------------------------------ */

/* Storage and component constructors per size. Metal's layout: alignment
 * equals size, and a 3-vector takes the room of a 4-vector. */
template <class T, int N> struct kiln_vbase;

template <class T> struct alignas(2 * sizeof(T)) kiln_vbase<T, 2> {
  union {
    T v[2];
    KILN_EXT struct {
      T x, y;
    };
    KILN_EXT struct {
      T r, g;
    };
    KILN_SWIZZLE_MEMBERS(2)
  };
  kiln_vbase() = default;
  KILN_FN kiln_vbase(T s) : v{s, s} {}
  KILN_FN kiln_vbase(T a, T b) : v{a, b} {}
};

template <class T> struct alignas(4 * sizeof(T)) kiln_vbase<T, 3> {
  union {
    T v[3];
    KILN_EXT struct {
      T x, y, z;
    };
    KILN_EXT struct {
      T r, g, b;
    };
    KILN_SWIZZLE_MEMBERS(3)
  };
  kiln_vbase() = default;
  KILN_FN kiln_vbase(T s) : v{s, s, s} {}
  KILN_FN kiln_vbase(T a, T b, T c) : v{a, b, c} {}
  KILN_FN kiln_vbase(const vec<T, 2> &ab, T c) : v{ab.v[0], ab.v[1], c} {}
  KILN_FN kiln_vbase(T a, const vec<T, 2> &bc) : v{a, bc.v[0], bc.v[1]} {}
};

template <class T> struct alignas(4 * sizeof(T)) kiln_vbase<T, 4> {
  union {
    T v[4];
    KILN_EXT struct {
      T x, y, z, w;
    };
    KILN_EXT struct {
      T r, g, b, a;
    };
    KILN_SWIZZLE_MEMBERS(4)
  };
  kiln_vbase() = default;
  KILN_FN kiln_vbase(T s) : v{s, s, s, s} {}
  KILN_FN kiln_vbase(T a, T b, T c, T d) : v{a, b, c, d} {}
  KILN_FN kiln_vbase(const vec<T, 2> &ab, T c, T d)
      : v{ab.v[0], ab.v[1], c, d} {}
  KILN_FN kiln_vbase(T a, const vec<T, 2> &bc, T d)
      : v{a, bc.v[0], bc.v[1], d} {}
  KILN_FN kiln_vbase(T a, T b, const vec<T, 2> &cd)
      : v{a, b, cd.v[0], cd.v[1]} {}
  KILN_FN kiln_vbase(const vec<T, 2> &ab, const vec<T, 2> &cd)
      : v{ab.v[0], ab.v[1], cd.v[0], cd.v[1]} {}
  KILN_FN kiln_vbase(const vec<T, 3> &abc, T d)
      : v{abc.v[0], abc.v[1], abc.v[2], d} {}
  KILN_FN kiln_vbase(T a, const vec<T, 3> &bcd)
      : v{a, bcd.v[0], bcd.v[1], bcd.v[2]} {}
};

/* Component-wise operators as hidden friends: found through the vector
 * or through a swizzle (whose template argument is the vector type), and
 * as non-templates they accept a swizzle or a scalar by conversion. */
#define KILN_VEC_OP(op)                                                       \
  friend KILN_FN vec operator op(const vec &a, const vec &b) {                \
    vec r(a);                                                                 \
    for (int i = 0; i < N; ++i)                                               \
      r.v[i] = a.v[i] op b.v[i];                                              \
    return r;                                                                 \
  }                                                                           \
  friend KILN_FN vec operator op(const vec &a, T b) { return a op vec(b); }   \
  friend KILN_FN vec operator op(T a, const vec &b) { return vec(a) op b; }   \
  friend KILN_FN vec &operator op##=(vec & a, const vec & b) {                \
    return a = a op b;                                                        \
  }                                                                           \
  friend KILN_FN vec &operator op##=(vec & a, T b) { return a = a op vec(b); }
#define KILN_VEC_CMP(op)                                                      \
  friend KILN_FN vec<bool, N> operator op(const vec &a, const vec &b) {       \
    vec<bool, N> r(false);                                                    \
    for (int i = 0; i < N; ++i)                                               \
      r.v[i] = a.v[i] op b.v[i];                                              \
    return r;                                                                 \
  }                                                                           \
  friend KILN_FN vec<bool, N> operator op(const vec &a, T b) {                \
    return a op vec(b);                                                       \
  }                                                                           \
  friend KILN_FN vec<bool, N> operator op(T a, const vec &b) {                \
    return vec(a) op b;                                                       \
  }
#define KILN_VEC_UNARY(R, op)                                                 \
  friend KILN_FN R operator op(const vec &a) {                                \
    R r = R();                                                                \
    for (int i = 0; i < N; ++i)                                               \
      r.v[i] = op a.v[i];                                                     \
    return r;                                                                 \
  }

/*
 * vec<T, N>: Metal's vector types. Implicit from a scalar (splat) and from
 * components or smaller vectors (float4(v.xy, 0, 1)); explicit between
 * element types (float4(int4)). Trivially constructible and copyable by
 * construction; copy assignment is written out because the swizzle
 * members make the union's own one unusable.
 */
template <class T, int N> struct vec : kiln_vbase<T, N> {
  typedef T value_type;
  using kiln_vbase<T, N>::kiln_vbase;
  vec() = default;
  vec(const vec &) = default;
  KILN_FN vec &operator=(const vec &o) {
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
    /* One aligned whole-vector copy: NVVM keeps a component loop as four
     * scalar loads and stores (a float4 copy kernel ran at 40% of the
     * copy bandwidth on an H200); an aligned aggregate becomes one
     * ld/st.v4. The aggregate holds T, not bytes: a byte array made NVVM
     * split vectors living in registers into bytes and shuffle them back
     * (~50 instructions per float4 assignment in the GEMM's inner loop,
     * which then waited on every load). may_alias keeps the pun legal. */
    struct __attribute__((may_alias)) alignas(alignof(kiln_vbase<T, N>))
        kiln_blob {
      T b[sizeof(kiln_vbase<T, N>) / sizeof(T)];
    };
    *reinterpret_cast<kiln_blob *>(this) =
        *reinterpret_cast<const kiln_blob *>(&o);
#else
    for (int i = 0; i < N; ++i)
      this->v[i] = o.v[i];
#endif
    return *this;
  }
  template <class U> KILN_FN explicit vec(const vec<U, N> &o) {
    for (int i = 0; i < N; ++i)
      this->v[i] = T(o.v[i]);
  }
  template <class U, int C, int... I>
  KILN_FN explicit vec(const kiln_swz<vec<U, N>, C, I...> &s)
      : vec(s.get()) {}

  KILN_FN T &operator[](int i) { return this->v[i]; }
  KILN_FN const T &operator[](int i) const { return this->v[i]; }

  KILN_VEC_OP(+)
  KILN_VEC_OP(-)
  KILN_VEC_OP(*)
  KILN_VEC_OP(/)
  KILN_VEC_OP(%)
  KILN_VEC_OP(&)
  KILN_VEC_OP(|)
  KILN_VEC_OP(^)
  KILN_VEC_OP(<<)
  KILN_VEC_OP(>>)
  KILN_VEC_CMP(==)
  KILN_VEC_CMP(!=)
  KILN_VEC_CMP(<)
  KILN_VEC_CMP(>)
  KILN_VEC_CMP(<=)
  KILN_VEC_CMP(>=)
  KILN_VEC_CMP(&&)
  KILN_VEC_CMP(||)
  KILN_VEC_UNARY(vec, -)
  KILN_VEC_UNARY(vec, ~)
  friend KILN_FN vec<bool, N> operator!(const vec &a) {
    vec<bool, N> r(false);
    for (int i = 0; i < N; ++i)
      r.v[i] = !a.v[i];
    return r;
  }
  friend KILN_FN vec operator+(const vec &a) { return a; }
};

#define KILN_VEC_NAMES(T, name)                                               \
  typedef vec<T, 2> name##2;                                                  \
  typedef vec<T, 3> name##3;                                                  \
  typedef vec<T, 4> name##4;
KILN_VEC_NAMES(bool, bool)
KILN_VEC_NAMES(char, char)
KILN_VEC_NAMES(uchar, uchar)
KILN_VEC_NAMES(short, short)
KILN_VEC_NAMES(ushort, ushort)
KILN_VEC_NAMES(int, int)
KILN_VEC_NAMES(uint, uint)
KILN_VEC_NAMES(long, long)
KILN_VEC_NAMES(ulong, ulong)
KILN_VEC_NAMES(half, half)
KILN_VEC_NAMES(bfloat, bfloat)
KILN_VEC_NAMES(float, float)
KILN_VEC_NAMES(double, double)

/* ---- generic argument handling (shared with metal_math.h) --------------- */

/* kiln_vt<X>: is X a vector or a swizzle, and which vector type it reads
 * as. kiln_val<X>: the value type of X (a swizzle reads as its vector). */
template <class X> struct kiln_vt {
  static constexpr bool is = false;
};
template <class T, int N> struct kiln_vt<vec<T, N>> {
  static constexpr bool is = true;
  static constexpr int n = N;
  typedef vec<T, N> type;
  typedef T elem;
};
template <class V, int C, int... I>
struct kiln_vt<kiln_swz<V, C, I...>> : kiln_vt<V> {};
template <class X> struct kiln_val {
  typedef X type;
};
template <class V, int C, int... I> struct kiln_val<kiln_swz<V, C, I...>> {
  typedef V type;
};

/* Result type of a function of two arguments that may mix scalars and
 * vectors: scalars promote as C++ (and Metal) operators do, a scalar next
 * to a vector is splatted, two vectors must be the same type. */
template <class A, class B,
          bool S = kiln_is_scalar<A>::value && kiln_is_scalar<B>::value>
struct kiln_common {};
template <class A, class B> struct kiln_common<A, B, true> {
  typedef decltype(kiln_make<A>() + kiln_make<B>()) type;
};
template <class A> struct kiln_common<A, A, true> {
  typedef A type;
};
template <class A, class B, int K = kiln_vt<A>::is * 2 + kiln_vt<B>::is>
struct kiln_g2 : kiln_common<A, B> {};
template <class A, class B>
struct kiln_g2<A, B, 1>
    : kiln_if<kiln_is_scalar<A>::value, typename kiln_vt<B>::type> {};
template <class A, class B>
struct kiln_g2<A, B, 2>
    : kiln_if<kiln_is_scalar<B>::value, typename kiln_vt<A>::type> {};
template <class A, class B>
struct kiln_g2<A, B, 3>
    : kiln_if<kiln_same<typename kiln_vt<A>::type,
                        typename kiln_vt<B>::type>::value,
              typename kiln_vt<A>::type> {};
/* One argument: a scalar keeps its type, a swizzle becomes its vector. */
template <class X, bool V = kiln_vt<X>::is>
struct kiln_g1 : kiln_if<kiln_is_scalar<X>::value, X> {};
template <class X> struct kiln_g1<X, true> {
  typedef typename kiln_vt<X>::type type;
};

/* Lane access that treats a scalar as a one-lane vector, so one loop
 * serves scalars and vectors. cvt() turns an argument into R (a scalar
 * into a splat when R is a vector). */
template <class R> struct kiln_ln {
  static constexpr int n = 1;
  template <class X> static KILN_FN R cvt(const X &x) { return R(x); }
  static KILN_FN R &at(R &r, int) { return r; }
  static KILN_FN const R &at(const R &r, int) { return r; }
};
template <class T, int N> struct kiln_ln<vec<T, N>> {
  static constexpr int n = N;
  static KILN_FN vec<T, N> cvt(const vec<T, N> &x) { return x; }
  template <class V, int C, int... I>
  static KILN_FN vec<T, N> cvt(const kiln_swz<V, C, I...> &x) {
    return x.get();
  }
  template <class X>
  static KILN_FN typename kiln_if<kiln_is_scalar<X>::value, vec<T, N>>::type
  cvt(const X &x) {
    return vec<T, N>(T(x));
  }
  static KILN_FN T &at(vec<T, N> &r, int i) { return r.v[i]; }
  static KILN_FN const T &at(const vec<T, N> &r, int i) { return r.v[i]; }
};

/* kiln_with<R, E>: R with its element type replaced by E. */
template <class R, class E> struct kiln_with {
  typedef E type;
};
template <class T, int N, class E> struct kiln_with<vec<T, N>, E> {
  typedef vec<E, N> type;
};

/* ---- as_type, select, all, any ------------------------------------------ */

/* Reinterprets the bits of x as To; both must have the same size. */
template <class To, class From> KILN_FN To as_type(const From &x) {
  typedef typename kiln_val<From>::type F;
  static_assert(sizeof(To) == sizeof(F),
                "as_type needs a target type of the same size as its "
                "argument");
  F f = x;
  To r;
  KILN_COPY(&r, &f, sizeof(To));
  return r;
}

/* select(a, b, c): c ? b : a, per component for a bool vector c. */
template <class A, class B>
KILN_FN typename kiln_g2<A, B>::type select(const A &a, const B &b, bool c) {
  typedef kiln_ln<typename kiln_g2<A, B>::type> L;
  return c ? L::cvt(b) : L::cvt(a);
}
template <class A, class B, int N>
KILN_FN typename kiln_g2<A, B>::type select(const A &a, const B &b,
                                            const vec<bool, N> &c) {
  typedef typename kiln_g2<A, B>::type R;
  typedef kiln_ln<R> L;
  static_assert(L::n == N, "select needs a condition with one component "
                           "per component of its values");
  R ra = L::cvt(a), rb = L::cvt(b);
  for (int i = 0; i < N; ++i)
    if (c.v[i])
      L::at(ra, i) = L::at(rb, i);
  return ra;
}

KILN_FN bool all(bool b) { return b; }
KILN_FN bool any(bool b) { return b; }
template <int N> KILN_FN bool all(const vec<bool, N> &b) {
  bool r = true;
  for (int i = 0; i < N; ++i)
    r = r && b.v[i];
  return r;
}
template <int N> KILN_FN bool any(const vec<bool, N> &b) {
  bool r = false;
  for (int i = 0; i < N; ++i)
    r = r || b.v[i];
  return r;
}

/* The barrier flags. Every backend's barrier orders all memory kinds, so
 * the flags carry no meaning beyond Metal's spelling; each backend's part
 * of the prelude defines threadgroup_barrier / simdgroup_barrier. */
enum class mem_flags : unsigned {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16
};
KILN_FN constexpr mem_flags operator|(mem_flags a, mem_flags b) {
  return mem_flags((unsigned)a | (unsigned)b);
}
KILN_FN constexpr mem_flags operator&(mem_flags a, mem_flags b) {
  return mem_flags((unsigned)a & (unsigned)b);
}

} /* namespace metal */

#endif /* KILN_METAL_TYPES_H */
