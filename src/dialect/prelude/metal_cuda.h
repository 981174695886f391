/*
 * The CUDA backend's part of the Metal prelude, last in the CUDA prelude
 * (after cuda_abi.h, metal_types.h and metal_math.h): address spaces,
 * threadgroup storage, atomics, barriers, SIMD-group functions on warps
 * (KERNEL-DIALECT.md section 5). Metal's vector names are mapped around
 * CUDA's own in metal_types.h, which names them first.
 *
 * Compiled by NVRTC with -default-device (helpers in the user's header
 * carry no __device__), so this file needs no CUDA header: warp and atomic
 * intrinsics are NVRTC built-ins. A SIMD group is a warp; a threadgroup
 * is a block whose threads past the grid returned before the body (the
 * entry glue in codegen.c), so they never count as active lanes.
 */
#ifndef KILN_METAL_CUDA_H
#define KILN_METAL_CUDA_H

#define KILN_BACKEND_CPU 0
#define KILN_BACKEND_CUDA 1
#define KILN_BACKEND_METAL 0

/* Address spaces: CUDA's generic pointers reach global and shared memory
 * alike, so the qualifiers vanish. A threadgroup declaration in the body
 * (scan.c rewrites it) is block-shared storage: the types it may hold
 * (scalars, half, vectors, atomic<T>) are all trivially constructible,
 * which __shared__ requires. */
#define device
#define constant
#define thread
#define KILN_THREADGROUP
#define KILN_THREADGROUP_DECL __shared__

/* Metal's half literals (0.5h) go through operator""h(long double),
 * which NVRTC warns is a double in device code: true, and harmless. */
#pragma nv_diag_suppress 20208

/* Helpers copied from MLX's Metal headers often carry METAL_FUNC. */
#ifndef METAL_FUNC
#define METAL_FUNC __device__ __forceinline__
#endif

/* Metal has these without includes; NVRTC predefines size_t and
 * ptrdiff_t only. The fixed-width types match glibc's (int64_t is long),
 * as on the CPU. */
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;

namespace metal {

/* Left out when codegen.c knows the kernel names no atomics. */
#if defined(KILN_NEED_ATOMIC) || !defined(KILN_NEEDS_KNOWN)
/* ---- atomics ------------------------------------------------------------ */

/* Metal's atomic<T>: exactly one T, touched only through the functions
 * below. Trivially constructible, so `threadgroup atomic_int n;` is a
 * plain __shared__ int. */
template <class T> struct atomic {
  T kiln_value;
};
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
typedef atomic<ulong> atomic_ulong;

/* Metal only has relaxed; the other spellings are accepted and get a
 * fence, which is at least as strong. */
enum memory_order {
  memory_order_relaxed = 0,
  memory_order_acquire = 2,
  memory_order_release = 3,
  memory_order_acq_rel = 4,
  memory_order_seq_cst = 5
};

/* Keeps the value argument out of deduction: atomic<uint> + 1 works. */
template <class T> struct kiln_id {
  typedef T type;
};

KILN_FN void kiln_fence(memory_order m) {
  if (m != memory_order_relaxed)
    __threadfence();
}

/* The unsigned word CUDA's CAS and exchange work on, by size. */
template <int S> struct kiln_aword {};
template <> struct kiln_aword<4> {
  typedef unsigned int type;
};
template <> struct kiln_aword<8> {
  typedef unsigned long long type;
};
template <class T> struct kiln_abits {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8,
                "CUDA atomics need a 4- or 8-byte type");
  typedef typename kiln_aword<sizeof(T)>::type W;
  static KILN_FN W *ptr(volatile atomic<T> *o) {
    return (W *)(const_cast<atomic<T> *>(o));
  }
  static KILN_FN W to(T v) {
    W w;
    KILN_COPY(&w, &v, sizeof(T));
    return w;
  }
  static KILN_FN T from(W w) {
    T v;
    KILN_COPY(&v, &w, sizeof(T));
    return v;
  }
};

template <class T>
KILN_FN T atomic_load_explicit(const volatile atomic<T> *obj,
                               memory_order m) {
  T r = obj->kiln_value; /* a volatile read: one load, never cached */
  kiln_fence(m);
  return r;
}
template <class T>
KILN_FN void atomic_store_explicit(volatile atomic<T> *obj,
                                   typename kiln_id<T>::type desired,
                                   memory_order m) {
  kiln_fence(m);
  obj->kiln_value = desired;
}
template <class T>
KILN_FN T atomic_exchange_explicit(volatile atomic<T> *obj,
                                   typename kiln_id<T>::type desired,
                                   memory_order m) {
  typedef kiln_abits<T> B;
  kiln_fence(m);
  T r = B::from(atomicExch(B::ptr(obj), B::to(desired)));
  kiln_fence(m);
  return r;
}
/* Compares bits, as C++ does. On failure *expected receives the current
 * value. Never fails spuriously, which the weak form allows. */
template <class T>
KILN_FN bool atomic_compare_exchange_weak_explicit(
    volatile atomic<T> *obj, typename kiln_id<T>::type *expected,
    typename kiln_id<T>::type desired, memory_order success,
    memory_order failure) {
  typedef kiln_abits<T> B;
  typename B::W want = B::to(*expected);
  kiln_fence(success);
  typename B::W old = atomicCAS(B::ptr(obj), want, B::to(desired));
  kiln_fence(old == want ? success : failure);
  if (old == want)
    return true;
  *expected = B::from(old);
  return false;
}
template <class T>
KILN_FN bool atomic_compare_exchange_strong_explicit(
    volatile atomic<T> *obj, typename kiln_id<T>::type *expected,
    typename kiln_id<T>::type desired, memory_order success,
    memory_order failure) {
  return atomic_compare_exchange_weak_explicit(obj, expected, desired,
                                               success, failure);
}

/* Read-modify-write by compare-and-swap, for what the hardware lacks
 * (float min and max, 64-bit float add before sm_60 is not a concern):
 * the same comparisons as the CPU backend, so NaN and -0 behave alike.
 * A value the operation would not change is not written at all, which
 * keeps a contended max cheap. */
template <class Op, class T>
KILN_FN T kiln_atomic_update(volatile atomic<T> *obj, T arg) {
  typedef kiln_abits<T> B;
  typename B::W old = B::to(obj->kiln_value), seen;
  for (;;) {
    typename B::W next = B::to(Op::f(B::from(old), arg));
    if (next == old)
      return B::from(old);
    seen = atomicCAS(B::ptr(obj), old, next);
    if (seen == old)
      return B::from(old);
    old = seen;
  }
}
struct kiln_at_add {
  template <class T> static KILN_FN T f(T a, T b) { return a + b; }
};
struct kiln_at_sub {
  template <class T> static KILN_FN T f(T a, T b) { return a - b; }
};
struct kiln_at_min {
  template <class T> static KILN_FN T f(T a, T b) { return b < a ? b : a; }
};
struct kiln_at_max {
  template <class T> static KILN_FN T f(T a, T b) { return a < b ? b : a; }
};
struct kiln_at_and {
  template <class T> static KILN_FN T f(T a, T b) { return a & b; }
};
struct kiln_at_or {
  template <class T> static KILN_FN T f(T a, T b) { return a | b; }
};
struct kiln_at_xor {
  template <class T> static KILN_FN T f(T a, T b) { return a ^ b; }
};

/* CUDA's native atomics by element type: K is 1 for int, 2 for uint, 3
 * for 64-bit integers, 4 for float, 5 for double, 0 for none. 64-bit
 * integers go through unsigned long long, which wraps the same way. */
template <class T> struct kiln_akind {
  static constexpr int value = 0;
};
template <> struct kiln_akind<int> {
  static constexpr int value = 1;
};
template <> struct kiln_akind<uint> {
  static constexpr int value = 2;
};
template <> struct kiln_akind<long> {
  static constexpr int value = 3;
};
template <> struct kiln_akind<ulong> {
  static constexpr int value = 3;
};
template <> struct kiln_akind<long long> {
  static constexpr int value = 3;
};
template <> struct kiln_akind<unsigned long long> {
  static constexpr int value = 3;
};
template <> struct kiln_akind<float> {
  static constexpr int value = 4;
};
template <> struct kiln_akind<double> {
  static constexpr int value = 5;
};

/* The address as CUDA's overloads want it. */
template <class T> KILN_FN T *kiln_aptr(volatile atomic<T> *o) {
  return const_cast<T *>(&o->kiln_value);
}
#define KILN_ULL(p) ((unsigned long long *)(p))

template <class T>
KILN_FN T atomic_fetch_add_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  constexpr int k = kiln_akind<T>::value;
  kiln_fence(m);
  T r;
  if constexpr (k == 1 || k == 2 || k == 4 || k == 5)
    r = atomicAdd(kiln_aptr(obj), arg);
  else if constexpr (k == 3)
    r = T(atomicAdd(KILN_ULL(kiln_aptr(obj)), (unsigned long long)arg));
  else
    r = kiln_atomic_update<kiln_at_add, T>(obj, arg);
  kiln_fence(m);
  return r;
}
template <class T>
KILN_FN T atomic_fetch_sub_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  constexpr int k = kiln_akind<T>::value;
  kiln_fence(m);
  T r;
  if constexpr (k == 1 || k == 2)
    r = atomicSub(kiln_aptr(obj), arg);
  else if constexpr (k == 3) /* adding the two's complement subtracts */
    r = T(atomicAdd(KILN_ULL(kiln_aptr(obj)), 0ull - (unsigned long long)arg));
  else if constexpr (k == 4 || k == 5)
    r = atomicAdd(kiln_aptr(obj), -arg);
  else
    r = kiln_atomic_update<kiln_at_sub, T>(obj, arg);
  kiln_fence(m);
  return r;
}

/* min and max: native for 32- and 64-bit integers (signed ones through
 * the signed overload), a CAS loop for float and the rest. */
#define KILN_ATOMIC_MINMAX(name, cuda_fn)                                     \
  template <class T>                                                          \
  KILN_FN T atomic_fetch_##name##_explicit(volatile atomic<T> *obj,           \
                                           typename kiln_id<T>::type arg,     \
                                           memory_order m) {                  \
    constexpr int k = kiln_akind<T>::value;                                   \
    kiln_fence(m);                                                            \
    T r;                                                                      \
    if constexpr (k == 1 || k == 2)                                           \
      r = cuda_fn(kiln_aptr(obj), arg);                                       \
    else if constexpr (k == 3 && kiln_signed<T>::value)                       \
      r = T(cuda_fn((long long *)kiln_aptr(obj), (long long)arg));            \
    else if constexpr (k == 3)                                                \
      r = T(cuda_fn(KILN_ULL(kiln_aptr(obj)), (unsigned long long)arg));      \
    else                                                                      \
      r = kiln_atomic_update<kiln_at_##name, T>(obj, arg);                    \
    kiln_fence(m);                                                            \
    return r;                                                                 \
  }
KILN_ATOMIC_MINMAX(min, atomicMin)
KILN_ATOMIC_MINMAX(max, atomicMax)
#undef KILN_ATOMIC_MINMAX

/* Bitwise operations: native on 32- and 64-bit integers. */
#define KILN_ATOMIC_BITS(name, cuda_fn)                                       \
  template <class T>                                                          \
  KILN_FN T atomic_fetch_##name##_explicit(volatile atomic<T> *obj,           \
                                           typename kiln_id<T>::type arg,     \
                                           memory_order m) {                  \
    constexpr int k = kiln_akind<T>::value;                                   \
    kiln_fence(m);                                                            \
    T r;                                                                      \
    if constexpr (k == 1 || k == 2)                                           \
      r = cuda_fn(kiln_aptr(obj), arg);                                       \
    else if constexpr (k == 3)                                                \
      r = T(cuda_fn(KILN_ULL(kiln_aptr(obj)), (unsigned long long)arg));      \
    else                                                                      \
      r = kiln_atomic_update<kiln_at_##name, T>(obj, arg);                    \
    kiln_fence(m);                                                            \
    return r;                                                                 \
  }
KILN_ATOMIC_BITS(and, atomicAnd)
KILN_ATOMIC_BITS(or, atomicOr)
KILN_ATOMIC_BITS(xor, atomicXor)
#undef KILN_ATOMIC_BITS
#undef KILN_ULL

#endif /* KILN_NEED_ATOMIC */

/* ---- barriers ----------------------------------------------------------- */

/* mem_flags is in metal_types.h (shared by every backend). */

/* __syncthreads orders shared and global memory among the block's
 * threads, which covers every mem_flags value. Threads that returned
 * (or never ran the body, past the grid) do not hold it up: the PTX ISA
 * says bar.sync waits for the non-exited threads only. */
KILN_FN void threadgroup_barrier(mem_flags = mem_flags::mem_none) {
  __syncthreads();
}

#if defined(KILN_NEED_SIMD) || !defined(KILN_NEEDS_KNOWN)
/* ---- SIMD-group functions on warps -------------------------------------- */

/* This thread's lane in its warp. A block's warps are cut from its
 * linear thread index, as Metal's SIMD groups are, so this equals
 * thread_index_in_simdgroup for any block shape. */
KILN_FN uint kiln_lane() {
  uint l;
  asm("mov.u32 %0, %%laneid;" : "=r"(l));
  return l;
}

/* Metal's active lanes: those of the warp that reached this call
 * together; lanes that returned or are past the grid have exited. */
KILN_FN uint kiln_simd_active() { return __activemask(); }

KILN_FN void simdgroup_barrier(mem_flags = mem_flags::mem_none) {
  __syncwarp(kiln_simd_active());
}

#define KILN_SIMD_T(X) typename kiln_val<X>::type

/* Any operand of up to 32 bytes (a double4 at most) moves as 32-bit
 * words; compilers keep the copies in registers. */
template <class T> struct kiln_words {
  static_assert(sizeof(T) <= 32,
                "a SIMD-group function operand may be at most 32 bytes");
  static constexpr int n = (int)((sizeof(T) + 3) / 4);
  uint w[n];
  KILN_FN explicit kiln_words(const T &v) {
    for (int i = 0; i < n; ++i)
      w[i] = 0;
    KILN_COPY(w, &v, sizeof(T));
  }
  KILN_FN T get() const {
    T v;
    KILN_COPY(&v, w, sizeof(T));
    return v;
  }
};

/* The value of lane `src` (which must be active) for every caller. */
template <class T> KILN_FN T kiln_shfl(uint mask, const T &v, uint src) {
  kiln_words<T> w(v);
  for (int i = 0; i < kiln_words<T>::n; ++i)
    w.w[i] = __shfl_sync(mask, w.w[i], (int)src);
  return w.get();
}
template <class T> KILN_FN T kiln_shfl_xor(uint mask, const T &v, uint m) {
  kiln_words<T> w(v);
  for (int i = 0; i < kiln_words<T>::n; ++i)
    w.w[i] = __shfl_xor_sync(mask, w.w[i], (int)m);
  return w.get();
}
template <class T> KILN_FN T kiln_shfl_up(uint mask, const T &v, uint d) {
  kiln_words<T> w(v);
  for (int i = 0; i < kiln_words<T>::n; ++i)
    w.w[i] = __shfl_up_sync(mask, w.w[i], d);
  return w.get();
}

struct kiln_sop_sum {
  template <class T> static KILN_FN T f(T a, T b) { return a + b; }
};
struct kiln_sop_product {
  template <class T> static KILN_FN T f(T a, T b) { return a * b; }
};
struct kiln_sop_min {
  template <class T> static KILN_FN T f(T a, T b) { return min(a, b); }
};
struct kiln_sop_max {
  template <class T> static KILN_FN T f(T a, T b) { return max(a, b); }
};
struct kiln_sop_and {
  template <class T> static KILN_FN T f(T a, T b) { return a & b; }
};
struct kiln_sop_or {
  template <class T> static KILN_FN T f(T a, T b) { return a | b; }
};
struct kiln_sop_xor {
  template <class T> static KILN_FN T f(T a, T b) { return a ^ b; }
};

/* The warp-reduce instructions of sm_80+ (any mask) for 32-bit integers:
 * true if they handled Op on T, with the result in *out. */
template <class Op, class T>
KILN_FN bool kiln_redux(uint mask, const T &v, T *out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool i32 = kiln_same<T, int>::value;
  constexpr bool u32 = kiln_same<T, uint>::value;
  if constexpr (i32 || u32) {
    if constexpr (kiln_same<Op, kiln_sop_sum>::value) {
      *out = T(__reduce_add_sync(mask, (unsigned)v));
      return true;
    } else if constexpr (kiln_same<Op, kiln_sop_min>::value) {
      *out = T(__reduce_min_sync(mask, v));
      return true;
    } else if constexpr (kiln_same<Op, kiln_sop_max>::value) {
      *out = T(__reduce_max_sync(mask, v));
      return true;
    } else if constexpr (kiln_same<Op, kiln_sop_and>::value) {
      *out = T(__reduce_and_sync(mask, (unsigned)v));
      return true;
    } else if constexpr (kiln_same<Op, kiln_sop_or>::value) {
      *out = T(__reduce_or_sync(mask, (unsigned)v));
      return true;
    } else if constexpr (kiln_same<Op, kiln_sop_xor>::value) {
      *out = T(__reduce_xor_sync(mask, (unsigned)v));
      return true;
    }
  }
#endif
  (void)mask;
  (void)v;
  (void)out;
  return false;
}

/* Reduction over the active lanes. A full warp takes a butterfly (every
 * lane computes op(a, b) on the same pairs, so all get the same bits);
 * a partial one folds the active lanes in lane order, as the CPU does. */
template <class Op, class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_reduce(const X &x) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  uint mask = kiln_simd_active();
  T r;
  if (kiln_redux<Op>(mask, v, &r))
    return r;
  if (mask == 0xffffffffu) {
    for (uint m = 16; m >= 1; m >>= 1)
      v = Op::f(v, kiln_shfl_xor(mask, v, m));
    return v;
  }
  uint rest = mask;
  uint l = (uint)(__ffs((int)rest) - 1);
  rest &= rest - 1;
  T acc = kiln_shfl(mask, v, l);
  while (rest) {
    l = (uint)(__ffs((int)rest) - 1);
    rest &= rest - 1;
    acc = Op::f(acc, kiln_shfl(mask, v, l));
  }
  return acc;
}

/* Prefix over the active lanes below (exclusive) or up to (inclusive) the
 * caller, from the identity `id`. A full warp scans in five shuffles
 * (Kogge-Stone); a partial one folds the active lanes in order. */
template <class Op, class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_prefix(const X &x, int id, bool inclusive) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  uint mask = kiln_simd_active(), lane = kiln_lane();
  if (mask == 0xffffffffu) {
    for (uint d = 1; d < 32; d <<= 1) {
      T t = kiln_shfl_up(mask, v, d);
      if (lane >= d)
        v = Op::f(t, v);
    }
    if (inclusive)
      return v;
    T e = kiln_shfl_up(mask, v, 1);
    return lane == 0 ? T(id) : e;
  }
  T acc = T(id);
  uint end = inclusive ? lane + 1 : lane;
  for (uint rest = mask; rest; rest &= rest - 1) {
    uint l = (uint)(__ffs((int)rest) - 1);
    T t = kiln_shfl(mask, v, l); /* every active lane takes part */
    if (l < end)
      acc = Op::f(acc, t);
  }
  return acc;
}

#define KILN_SIMD_REDUCE(name)                                                \
  template <class X> KILN_FN KILN_SIMD_T(X) simd_##name(const X &x) {         \
    return kiln_simd_reduce<kiln_sop_##name>(x);                              \
  }
KILN_SIMD_REDUCE(sum)
KILN_SIMD_REDUCE(product)
KILN_SIMD_REDUCE(min)
KILN_SIMD_REDUCE(max)
KILN_SIMD_REDUCE(and)
KILN_SIMD_REDUCE(or)
KILN_SIMD_REDUCE(xor)
#undef KILN_SIMD_REDUCE

template <class X>
KILN_FN KILN_SIMD_T(X) simd_prefix_inclusive_sum(const X &x) {
  return kiln_simd_prefix<kiln_sop_sum>(x, 0, true);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_prefix_exclusive_sum(const X &x) {
  return kiln_simd_prefix<kiln_sop_sum>(x, 0, false);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_prefix_inclusive_product(const X &x) {
  return kiln_simd_prefix<kiln_sop_product>(x, 1, true);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_prefix_exclusive_product(const X &x) {
  return kiln_simd_prefix<kiln_sop_product>(x, 1, false);
}

/* The value of lane `src`, or the caller's own when that lane is out of
 * range or inactive (undefined in Metal; the CPU backend does the same).
 * Every active lane joins the shuffle, whatever its source. */
template <class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_from(const X &x, long src) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  uint mask = kiln_simd_active();
  T r = kiln_shfl(mask, v, (uint)src & 31u);
  bool ok = src >= 0 && src < 32 && (mask >> src & 1u);
  return ok ? r : v;
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle(const X &x, ushort lane) {
  return kiln_simd_from(x, lane);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_broadcast(const X &x, ushort lane) {
  return kiln_simd_from(x, lane);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_xor(const X &x, ushort mask) {
  return kiln_simd_from(x, (long)(kiln_lane() ^ mask));
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_up(const X &x, ushort delta) {
  return kiln_simd_from(x, (long)kiln_lane() - delta);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_down(const X &x, ushort delta) {
  return kiln_simd_from(x, (long)kiln_lane() + delta);
}
/* The value of the lowest active lane. */
template <class X> KILN_FN KILN_SIMD_T(X) simd_broadcast_first(const X &x) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  uint mask = kiln_simd_active();
  return kiln_shfl(mask, v, (uint)(__ffs((int)mask) - 1));
}

/* simd_ballot's result: a bit per lane whose predicate held; the warp's
 * 32 lanes are the low bits of Metal's 64-bit vote_t. */
struct simd_vote {
  typedef uint64_t vote_t;
  vote_t kiln_bits;
  vote_t kiln_active; /* the lanes that voted */
  KILN_FN explicit simd_vote(vote_t v = 0)
      : kiln_bits(v), kiln_active(0xffffffffu) {}
  KILN_FN explicit operator vote_t() const { return kiln_bits; }
  /* true if every lane that voted said yes */
  KILN_FN bool all() const { return (kiln_bits & kiln_active) == kiln_active; }
  KILN_FN bool any() const { return kiln_bits != 0; }
};

KILN_FN simd_vote simd_ballot(bool pred) {
  uint mask = kiln_simd_active();
  simd_vote v(__ballot_sync(mask, pred));
  v.kiln_active = mask;
  return v;
}
KILN_FN bool simd_all(bool pred) {
  return __all_sync(kiln_simd_active(), pred) != 0;
}
KILN_FN bool simd_any(bool pred) {
  return __any_sync(kiln_simd_active(), pred) != 0;
}
/* True for the lowest active lane. */
KILN_FN bool simd_is_first() {
  return kiln_lane() == (uint)(__ffs((int)kiln_simd_active()) - 1);
}

#endif /* KILN_NEED_SIMD */

} /* namespace metal */

using namespace metal;

#endif /* KILN_METAL_CUDA_H */
