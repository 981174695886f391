/*
 * The CPU backend's part of the Metal prelude, last in the CPU prelude
 * (after cpu_abi.h, metal_types.h and metal_math.h): address spaces,
 * atomics, barriers and SIMD-group functions (KERNEL-DIALECT.md section 5).
 *
 * Execution model (cpu_abi.h): a threadgroup runs on one OS thread, its
 * threads as fibers when the kernel uses barriers or SIMD functions. Those
 * functions reach the runtime through kiln_cpu_tls_group, which the entry
 * points set before running the body. Atomics must hold across OS threads,
 * since several workers run groups of one launch at once.
 */
#ifndef KILN_METAL_CPU_H
#define KILN_METAL_CPU_H

#define KILN_BACKEND_CPU 1
#define KILN_BACKEND_CUDA 0
#define KILN_BACKEND_METAL 0

/* Address spaces mean nothing on the CPU. threadgroup storage is shared by
 * the fibers of a group, which all run on one worker thread. */
#define device
#define constant
#define thread
#define KILN_THREADGROUP
#define KILN_THREADGROUP_DECL static thread_local
#define KILN_CPU_EXPORT __attribute__((visibility("default")))

/* Helpers copied from MLX's Metal headers often carry METAL_FUNC. */
#ifndef METAL_FUNC
#define METAL_FUNC inline __attribute__((always_inline))
#endif

/* Metal has size_t and ptrdiff_t without includes. Identical typedefs at
 * global scope, so a later <stddef.h> agrees with them. */
typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;

/* The group being run by this worker thread (set by the entry points).
 * alignas(64) raises the kernel object's TLS alignment, so glibc gives
 * each thread's dynamic TLS block of the object a 64-byte-aligned start.
 * That matters under ASan: up to GCC 13 / LLVM 16 the runtime's
 * __tls_get_addr interceptor takes a block starting 16 bytes into a page
 * for an old-glibc block with a {size, start} header in front, reads
 * ASan's chunk header as those bounds, and LeakSanitizer's tracer faults
 * scanning them at exit (google/sanitizers#1322). An aligned block never
 * starts there. */
alignas(64) static thread_local kiln_cpu_group *kiln_cpu_tls_group;

namespace metal {

/* Left out when codegen.c knows the kernel names no atomics. */
#if defined(KILN_NEED_ATOMIC) || !defined(KILN_NEEDS_KNOWN)
/* ---- atomics ------------------------------------------------------------ */

/* Metal's atomic<T>: exactly one T, touched only through the functions
 * below. */
template <class T> struct atomic {
  T kiln_value;
};
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
typedef atomic<ulong> atomic_ulong;

/* Metal only has relaxed; the other spellings are accepted and kept. */
enum memory_order {
  memory_order_relaxed = __ATOMIC_RELAXED,
  memory_order_acquire = __ATOMIC_ACQUIRE,
  memory_order_release = __ATOMIC_RELEASE,
  memory_order_acq_rel = __ATOMIC_ACQ_REL,
  memory_order_seq_cst = __ATOMIC_SEQ_CST
};

/* Keeps the value argument out of deduction: atomic<uint> + 1 works. */
template <class T> struct kiln_id {
  typedef T type;
};

/* A failure order may be neither release nor stronger than needed. */
KILN_FN int kiln_fail_order(memory_order m) {
  return m == memory_order_release   ? __ATOMIC_RELAXED
         : m == memory_order_acq_rel ? __ATOMIC_ACQUIRE
                                     : (int)m;
}

template <class T>
KILN_FN T atomic_load_explicit(const volatile atomic<T> *obj, memory_order m) {
  T r;
  __atomic_load(&obj->kiln_value, &r, kiln_fail_order(m));
  return r;
}
template <class T>
KILN_FN void atomic_store_explicit(volatile atomic<T> *obj,
                                   typename kiln_id<T>::type desired,
                                   memory_order m) {
  /* a store may not be acquire: use the nearest valid order */
  __atomic_store(&obj->kiln_value, &desired,
                 m == memory_order_relaxed ? __ATOMIC_RELAXED
                 : m == memory_order_seq_cst ? __ATOMIC_SEQ_CST
                                             : __ATOMIC_RELEASE);
}
template <class T>
KILN_FN T atomic_exchange_explicit(volatile atomic<T> *obj,
                                   typename kiln_id<T>::type desired,
                                   memory_order m) {
  T r;
  __atomic_exchange(&obj->kiln_value, &desired, &r, m);
  return r;
}
/* On failure *expected receives the current value. Never fails
 * spuriously, which the weak form allows. */
template <class T>
KILN_FN bool atomic_compare_exchange_weak_explicit(
    volatile atomic<T> *obj, typename kiln_id<T>::type *expected,
    typename kiln_id<T>::type desired, memory_order success,
    memory_order failure) {
  return __atomic_compare_exchange(&obj->kiln_value, expected, &desired,
                                   false, success, kiln_fail_order(failure));
}
template <class T>
KILN_FN bool atomic_compare_exchange_strong_explicit(
    volatile atomic<T> *obj, typename kiln_id<T>::type *expected,
    typename kiln_id<T>::type desired, memory_order success,
    memory_order failure) {
  return atomic_compare_exchange_weak_explicit(obj, expected, desired,
                                               success, failure);
}

/* Read-modify-write by compare-exchange on the bits: float add, and min
 * and max for every type (GCC has no fetch_min builtin). */
template <class Op, class T>
KILN_FN T kiln_atomic_update(volatile atomic<T> *obj, T arg,
                             memory_order m) {
  T old, next;
  __atomic_load(&obj->kiln_value, &old, __ATOMIC_RELAXED);
  do
    next = Op::f(old, arg);
  while (!__atomic_compare_exchange(&obj->kiln_value, &old, &next, true, m,
                                    __ATOMIC_RELAXED));
  return old;
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

/* Integers use the hardware's fetch-and-op; others the update loop. */
#define KILN_ATOMIC_FETCH(name, builtin, Op)                                  \
  template <class T>                                                          \
  KILN_FN typename kiln_if<kiln_is_int<T>::value, T>::type                    \
      atomic_fetch_##name##_explicit(volatile atomic<T> *obj,                 \
                                     typename kiln_id<T>::type arg,           \
                                     memory_order m) {                        \
    return builtin(&obj->kiln_value, arg, m);                                 \
  }                                                                           \
  template <class T>                                                          \
  KILN_FN typename kiln_if<!kiln_is_int<T>::value, T>::type                   \
      atomic_fetch_##name##_explicit(volatile atomic<T> *obj,                 \
                                     typename kiln_id<T>::type arg,           \
                                     memory_order m) {                        \
    return kiln_atomic_update<Op, T>(obj, arg, m);                            \
  }
KILN_ATOMIC_FETCH(add, __atomic_fetch_add, kiln_at_add)
KILN_ATOMIC_FETCH(sub, __atomic_fetch_sub, kiln_at_sub)
#undef KILN_ATOMIC_FETCH

template <class T>
KILN_FN T atomic_fetch_min_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  return kiln_atomic_update<kiln_at_min, T>(obj, arg, m);
}
template <class T>
KILN_FN T atomic_fetch_max_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  return kiln_atomic_update<kiln_at_max, T>(obj, arg, m);
}
template <class T>
KILN_FN T atomic_fetch_and_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  return __atomic_fetch_and(&obj->kiln_value, arg, m);
}
template <class T>
KILN_FN T atomic_fetch_or_explicit(volatile atomic<T> *obj,
                                   typename kiln_id<T>::type arg,
                                   memory_order m) {
  return __atomic_fetch_or(&obj->kiln_value, arg, m);
}
template <class T>
KILN_FN T atomic_fetch_xor_explicit(volatile atomic<T> *obj,
                                    typename kiln_id<T>::type arg,
                                    memory_order m) {
  return __atomic_fetch_xor(&obj->kiln_value, arg, m);
}

#endif /* KILN_NEED_ATOMIC */

/* ---- barriers ----------------------------------------------------------- */

/* mem_flags is in metal_types.h (shared by every backend). */

/* Every fiber of the group meets here. The call is opaque to the compiler,
 * so shared storage is reloaded after it; the fence says so explicitly. */
KILN_FN void threadgroup_barrier(mem_flags = mem_flags::mem_none) {
  kiln_cpu_group *g = kiln_cpu_tls_group;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  g->barrier(g);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

#if defined(KILN_NEED_SIMD) || !defined(KILN_NEEDS_KNOWN)
/* ---- SIMD call sites ---------------------------------------------------- */

/*
 * Every SIMD-group function takes a defaulted trailing kiln_simd_site,
 * filled where the user's code calls it: a default argument that names
 * __builtin_FILE/LINE/COLUMN is evaluated at the call site. The generated
 * source names the user's parts "header" and "body" with #line, so the
 * site says which part, line and column (cpu_abi.h's packing); exec.c
 * runs lanes waiting at different sites in separate rounds. The packing
 * folds to a constant at -O2.
 *
 * Clang has __builtin_COLUMN; GCC (up to 13 at least) has not, but since
 * GCC 11 its __builtin_source_location() points at a record with the
 * column, of the type std::source_location::__impl, which the compiler
 * requires to be declared. <source_location> only declares it in C++20
 * and kernels are C++17, so the prelude declares that record itself, with
 * the members GCC fills. Without either builtin the column is 0: calls on
 * one line then share a site.
 */
} /* namespace metal */

#if defined(__has_builtin)
#if __has_builtin(__builtin_COLUMN)
#define KILN_SITE_COLUMN() ((uint)__builtin_COLUMN())
#elif __has_builtin(__builtin_source_location)
#define KILN_SITE_SOURCE_LOCATION 1
#endif
#endif

#if defined(KILN_SITE_SOURCE_LOCATION)
namespace std {
struct source_location {
  struct __impl {
    const char *_M_file_name;
    const char *_M_function_name;
    unsigned _M_line;
    unsigned _M_column;
  };
};
} /* namespace std */
#define KILN_SITE_COLUMN()                                                    \
  ((uint)static_cast<const std::source_location::__impl *>(                   \
       __builtin_source_location())                                           \
       ->_M_column)
#elif !defined(KILN_SITE_COLUMN)
#define KILN_SITE_COLUMN() 0u
#endif

namespace metal {

/* Where a SIMD function was called (KILN_CPU_SITE_* packing). */
struct kiln_simd_site {
  uint id;
};

KILN_FN kiln_simd_site kiln_simd_site_at(const char *file, uint line,
                                         uint column) {
  bool body = file[0] == 'b' && file[1] == 'o' && file[2] == 'd' &&
              file[3] == 'y' && file[4] == '\0';
  line = line < KILN_CPU_SITE_LINE_MAX ? line : KILN_CPU_SITE_LINE_MAX;
  column = column < KILN_CPU_SITE_COLUMN_MAX ? column
                                             : KILN_CPU_SITE_COLUMN_MAX;
  kiln_simd_site s = {(body ? KILN_CPU_SITE_BODY : 0u) |
                      line << KILN_CPU_SITE_LINE_SHIFT | column};
  return s;
}

} /* namespace metal */

/* The default argument of every public SIMD function. */
#define KILN_SIMD_HERE                                                        \
  kiln_simd_site kiln_site =                                                  \
      kiln_simd_site_at(__builtin_FILE(), __builtin_LINE(), KILN_SITE_COLUMN())

namespace metal {

/* ---- SIMD-group functions ----------------------------------------------- */

/* One exchange round (cpu_abi.h): what every active lane contributed. */
struct kiln_simd_round {
  const unsigned char *data;
  uint active; /* bit per lane that took part */
  uint lane;   /* the calling lane */
  template <class T> KILN_FN T at(uint l) const {
    T r;
    KILN_COPY(&r, data + l * KILN_CPU_SIMD_SLOT_BYTES, sizeof(T));
    return r;
  }
  KILN_FN bool has(uint l) const { return l < 32 && (active >> l & 1u); }
  KILN_FN uint first() const { return (uint)__builtin_ctz(active); }
};

/* Publishes `size` bytes at `x` (none for a plain sync) and waits for the
 * other lanes that call from the same site. */
KILN_FN kiln_simd_round kiln_simd_sync(const void *x, unsigned size,
                                       kiln_simd_site site) {
  kiln_cpu_group *g = kiln_cpu_tls_group;
  uint cur = g->current, sg = cur / KILN_CPU_SIMD_WIDTH;
  uint lane = cur % KILN_CPU_SIMD_WIDTH;
  if (size)
    KILN_COPY(g->simd_write[sg] + lane * KILN_CPU_SIMD_SLOT_BYTES, x, size);
  g->simd_site[cur] = site.id;
  g->simd_sync(g);
  kiln_simd_round r = {g->simd_read[sg], g->simd_active[sg], lane};
  return r;
}
template <class T>
KILN_FN kiln_simd_round kiln_simd_send(const T &x, kiln_simd_site site) {
  static_assert(sizeof(T) <= KILN_CPU_SIMD_SLOT_BYTES,
                "a SIMD-group function operand may be at most 32 bytes");
  return kiln_simd_sync(&x, sizeof(T), site);
}

KILN_FN void simdgroup_barrier(mem_flags = mem_flags::mem_none,
                               KILN_SIMD_HERE) {
  kiln_simd_sync(0, 0, kiln_site);
}

#define KILN_SIMD_T(X) typename kiln_val<X>::type

/* Reduction over the active lanes, in lane order. */
template <class Op, class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_reduce(const X &x, kiln_simd_site site) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  kiln_simd_round r = kiln_simd_send(v, site);
  uint l = r.first();
  T acc = r.at<T>(l);
  for (++l; l < 32; ++l)
    if (r.has(l))
      acc = Op::f(acc, r.at<T>(l));
  return acc;
}
/* Prefix over the active lanes below (exclusive) or up to (inclusive) the
 * caller, starting from the identity `id`. */
template <class Op, class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_prefix(const X &x, int id, bool inclusive,
                                        kiln_simd_site site) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  kiln_simd_round r = kiln_simd_send(v, site);
  T acc = T(id);
  uint end = inclusive ? r.lane + 1 : r.lane;
  for (uint l = 0; l < end; ++l)
    if (r.has(l))
      acc = Op::f(acc, r.at<T>(l));
  return acc;
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

#define KILN_SIMD_REDUCE(name)                                                \
  template <class X>                                                          \
  KILN_FN KILN_SIMD_T(X) simd_##name(const X &x, KILN_SIMD_HERE) {            \
    return kiln_simd_reduce<kiln_sop_##name>(x, kiln_site);                   \
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
KILN_FN KILN_SIMD_T(X) simd_prefix_inclusive_sum(const X &x, KILN_SIMD_HERE) {
  return kiln_simd_prefix<kiln_sop_sum>(x, 0, true, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_prefix_exclusive_sum(const X &x, KILN_SIMD_HERE) {
  return kiln_simd_prefix<kiln_sop_sum>(x, 0, false, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X)
    simd_prefix_inclusive_product(const X &x, KILN_SIMD_HERE) {
  return kiln_simd_prefix<kiln_sop_product>(x, 1, true, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X)
    simd_prefix_exclusive_product(const X &x, KILN_SIMD_HERE) {
  return kiln_simd_prefix<kiln_sop_product>(x, 1, false, kiln_site);
}

/* The value of lane `src`, or the caller's own when that lane is out of
 * range or inactive (undefined in Metal). */
template <class X>
KILN_FN KILN_SIMD_T(X) kiln_simd_from(const X &x, long src,
                                      kiln_simd_site site) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  kiln_simd_round r = kiln_simd_send(v, site);
  return src >= 0 && r.has((uint)src) ? r.at<T>((uint)src) : v;
}
/* The calling lane. */
KILN_FN long kiln_simd_lane() {
  return (long)(kiln_cpu_tls_group->current % KILN_CPU_SIMD_WIDTH);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle(const X &x, ushort lane,
                                    KILN_SIMD_HERE) {
  return kiln_simd_from(x, lane, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_broadcast(const X &x, ushort lane,
                                      KILN_SIMD_HERE) {
  return kiln_simd_from(x, lane, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_xor(const X &x, ushort mask,
                                        KILN_SIMD_HERE) {
  return kiln_simd_from(x, kiln_simd_lane() ^ mask, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_up(const X &x, ushort delta,
                                       KILN_SIMD_HERE) {
  return kiln_simd_from(x, kiln_simd_lane() - delta, kiln_site);
}
template <class X>
KILN_FN KILN_SIMD_T(X) simd_shuffle_down(const X &x, ushort delta,
                                         KILN_SIMD_HERE) {
  return kiln_simd_from(x, kiln_simd_lane() + delta, kiln_site);
}
/* The value of the lowest active lane. */
template <class X>
KILN_FN KILN_SIMD_T(X) simd_broadcast_first(const X &x, KILN_SIMD_HERE) {
  typedef KILN_SIMD_T(X) T;
  T v = x;
  kiln_simd_round r = kiln_simd_send(v, kiln_site);
  return r.at<T>(r.first());
}

/* simd_ballot's result: a bit per lane whose predicate held. */
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

KILN_FN simd_vote simd_ballot(bool pred, KILN_SIMD_HERE) {
  kiln_simd_round r = kiln_simd_send(pred, kiln_site);
  simd_vote::vote_t bits = 0;
  for (uint l = 0; l < 32; ++l)
    if (r.has(l) && r.at<bool>(l))
      bits |= (simd_vote::vote_t)1 << l;
  simd_vote v(bits);
  v.kiln_active = r.active;
  return v;
}
KILN_FN bool simd_all(bool pred, KILN_SIMD_HERE) {
  return simd_ballot(pred, kiln_site).all();
}
KILN_FN bool simd_any(bool pred, KILN_SIMD_HERE) {
  return simd_ballot(pred, kiln_site).any();
}
/* True for the lowest active lane. */
KILN_FN bool simd_is_first(KILN_SIMD_HERE) {
  kiln_simd_round r = kiln_simd_sync(0, 0, kiln_site);
  return r.lane == r.first();
}

#endif /* KILN_NEED_SIMD */

} /* namespace metal */

using namespace metal;

#endif /* KILN_METAL_CPU_H */
