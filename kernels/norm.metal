// kiln's norm kernels (driver: src/linalg/norm.c).
//
// Every norm is one of three reductions over a *segment* (a vector, or a
// matrix, of the input A), seen as R x C elements x(i, j) at i * rs + j * cs:
//   SSQ     sqrt(sum x^2)           vector 2-norm, Frobenius norm
//   ASUM    sum |x|                 vector 1-norm
//   MAXSUM  max_j sum_i |x(i, j)|   vector inf-norm (R = 1), matrix 1-norm
//                                   (columns), matrix inf-norm (SWAP: rows)
// Sums are accumulated in double whatever T is, and SSQ uses Blue's three
// accumulators (as LAPACK's dnrm2 since 3.10): values above 2^486 are
// scaled down by 2^-538 and values below 2^-511 up by 2^537 before they are
// squared, by exact powers of two. The scaling factors are constants, so
// partial sums of different threads and threadgroups simply add, which is
// what a parallel reduction needs (the classic running-scale nrm2 is
// sequential). float32 values never leave the middle range.
//
// Launch geometry: a one-dimensional threadgroup of NT threads (a multiple
// of 32, at most 256); grid.x = NT * G, G threadgroups per segment, each
// taking a contiguous share of the segment's elements (SSQ, ASUM) or lines
// (MAXSUM); segments along grid.y and grid.z (y fastest), so no batch
// offset travels as a parameter: a group whose segment number is past the
// batch returns at once, as a whole. With DIRECT the group's result is the
// norm, written to P (the result, of dtype T); otherwise it writes its
// partial accumulators (s, m, b) to P (double, S x G x 3) and norm_finish
// combines the G partials of each segment.
//
// NaN propagates (a NaN element makes the norm NaN, as numpy's does); an
// empty segment has norm 0 for every kind (see norm.c).
#include <metal_stdlib>
using namespace metal;

#define NORM_SSQ 0
#define NORM_ASUM 1
#define NORM_MAXSUM 2

// 2^e as a double, exactly (e in the normal range).
inline double norm_pow2(int e) {
  return as_type<double>((ulong)(1023 + e) << 52);
}

// A partial norm: Blue's small, middle and big sums of squares for SSQ;
// the sum (ASUM) or the running maximum (MAXSUM) in m.
struct norm_acc {
  double s, m, b;
};

inline norm_acc norm_acc_zero() {
  norm_acc a;
  a.s = 0.0;
  a.m = 0.0;
  a.b = 0.0;
  return a;
}

// max that keeps a NaN from either side (metal::max drops it).
inline double norm_nanmax(double a, double b) {
  return (a > b || isnan(a)) ? a : b;
}

// Adds one element to an SSQ accumulator (Blue's thresholds for double).
inline void norm_ssq_add(thread norm_acc& a, double x) {
  double ax = fabs(x);
  if (ax > norm_pow2(486)) {
    double y = ax * norm_pow2(-538);
    a.b = fma(y, y, a.b);
  } else if (ax < norm_pow2(-511)) {
    double y = ax * norm_pow2(537);
    a.s = fma(y, y, a.s);
  } else {
    a.m = fma(ax, ax, a.m);
  }
}

template <int OP>
inline norm_acc norm_combine(norm_acc x, norm_acc y) {
  if (OP == NORM_MAXSUM) {
    x.m = norm_nanmax(x.m, y.m);
  } else {
    x.s += y.s;
    x.m += y.m;
    x.b += y.b;
  }
  return x;
}

// Blue's combination of the three sums (LAPACK's dnrm2): the big sum wins
// when present (the others cannot change it in double), the small one is
// scaled back and merged with the middle one without overflow.
inline double norm_ssq_finish(norm_acc a) {
  if (isnan(a.s) || isnan(a.m) || isnan(a.b))
    return a.s + a.m + a.b;
  if (a.b > 0.0) {
    double big = a.b + (a.m * norm_pow2(-538)) * norm_pow2(-538);
    return norm_pow2(538) * sqrt(big);
  }
  if (a.s > 0.0) {
    if (!(a.m > 0.0))
      return norm_pow2(-537) * sqrt(a.s);
    double ymed = sqrt(a.m), ysml = sqrt(a.s) * norm_pow2(-537);
    double ymin = min(ymed, ysml), ymax = max(ymed, ysml);
    double r = ymin / ymax;
    return ymax * sqrt(1.0 + r * r);
  }
  return sqrt(a.m);
}

template <int OP>
inline double norm_finish(norm_acc a) {
  return OP == NORM_SSQ ? norm_ssq_finish(a) : a.m;
}

// Reduces every thread's accumulator to one for the whole threadgroup (the
// result is valid in thread 0): a butterfly in each SIMD group, then the
// SIMD groups' partials through threadgroup memory. Every thread must call
// it (it contains barriers and SIMD shuffles).
template <int OP>
inline norm_acc norm_group_reduce(norm_acc a, threadgroup double* ws,
                                  threadgroup double* wm,
                                  threadgroup double* wb, uint tid, uint nt) {
  for (ushort d = 16; d > 0; d >>= 1) {
    norm_acc o;
    o.s = simd_shuffle_xor(a.s, d);
    o.m = simd_shuffle_xor(a.m, d);
    o.b = simd_shuffle_xor(a.b, d);
    a = norm_combine<OP>(a, o);
  }
  uint lane = tid % 32, warp = tid / 32, warps = nt / 32;
  if (lane == 0) {
    ws[warp] = a.s;
    wm[warp] = a.m;
    wb[warp] = a.b;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (warp == 0) {
    norm_acc p = norm_acc_zero();
    if (lane < warps) {
      p.s = ws[lane];
      p.m = wm[lane];
      p.b = wb[lane];
    }
    for (ushort d = 16; d > 0; d >>= 1) {
      norm_acc o;
      o.s = simd_shuffle_xor(p.s, d);
      o.m = simd_shuffle_xor(p.m, d);
      o.b = simd_shuffle_xor(p.b, d);
      p = norm_combine<OP>(p, o);
    }
    a = p;
  }
  return a;
}

//@kernel norm_reduce
// One share of one segment per threadgroup. Template: T (A's dtype), OP
// (NORM_SSQ, NORM_ASUM, NORM_MAXSUM), VEC (segments are vectors along the
// last dimension, else matrices of the last two), SWAP (MAXSUM over rows
// instead of columns: the inf-norm), WARP_LINES (MAXSUM: a SIMD group per
// line, lanes along the sum, for lines contiguous in memory; else a thread
// per line), DIRECT (write the norm itself).
threadgroup double ws[32], wm[32], wb[32];
threadgroup double part[256];
const int nd = A_ndim;
const int nbd = VEC ? nd - 1 : nd - 2; // batch dimensions
ulong S = 1;
for (int d = 0; d < nbd; ++d)
  S *= (ulong)A_shape[d];
const ulong b = (ulong)threadgroup_position_in_grid.z *
                    threadgroups_per_grid.y +
                threadgroup_position_in_grid.y;
if (b >= S)
  return; // the grid's last row may run past the batch: the whole group
const uint G = threadgroups_per_grid.x, g = threadgroup_position_in_grid.x;
const uint tid = thread_index_in_threadgroup;
const uint nt = threads_per_threadgroup.x;

// The segment's geometry: R x C elements, x(i, j) at i * rs + j * cs.
int64_t R, C, rs, cs;
if (VEC) {
  R = 1;
  C = A_shape[nd - 1];
  rs = 0;
  cs = A_strides[nd - 1];
} else {
  R = A_shape[nd - 2];
  C = A_shape[nd - 1];
  rs = A_strides[nd - 2];
  cs = A_strides[nd - 1];
}
if (OP == NORM_MAXSUM ? SWAP : (R > 1 && abs(rs) < abs(cs))) {
  // inf-norm: the lines are the rows; sums: walk the contiguous way.
  int64_t t = R; R = C; C = t;
  t = rs; rs = cs; cs = t;
}
if (OP != NORM_MAXSUM && R > 1 && rs == C * cs) {
  C *= R; // a contiguous matrix is one long vector for a plain sum
  R = 1;
}
int64_t off = 0;
{
  ulong rest = b;
  for (int d = nbd - 1; d >= 0; --d) {
    ulong n = (ulong)A_shape[d];
    off += (int64_t)(rest % n) * A_strides[d];
    rest /= n;
  }
}
const device T* a = A + off;

norm_acc acc = norm_acc_zero();
if (OP != NORM_MAXSUM) {
  // This group's share of the R * C elements, walked row by row with the
  // thread's (i, j) advanced by nt without a division per element.
  const int64_t E = R * C;
  const int64_t share = (E + G - 1) / G;
  const int64_t e0 = min(E, (int64_t)g * share), e1 = min(E, e0 + share);
  int64_t e = e0 + tid;
  int64_t i = e / C, j = e % C;
  const int64_t di = (int64_t)nt / C, dj = (int64_t)nt % C;
  for (; e < e1; e += nt) {
    double x = (double)a[i * rs + j * cs];
    if (OP == NORM_SSQ)
      norm_ssq_add(acc, x);
    else
      acc.m += fabs(x);
    i += di;
    j += dj;
    if (j >= C) {
      j -= C;
      ++i;
    }
  }
} else {
  // This group's share of the C lines.
  const int64_t share = (C + G - 1) / G;
  const int64_t j0 = min(C, (int64_t)g * share), j1 = min(C, j0 + share);
  const int64_t nl = j1 - j0;
  if (WARP_LINES) {
    const uint lane = tid % 32, warps = nt / 32;
    for (int64_t j = j0 + tid / 32; j < j1; j += warps) {
      double s = 0.0;
      for (int64_t i = lane; i < R; i += 32)
        s += fabs((double)a[i * rs + j * cs]);
      for (ushort d = 16; d > 0; d >>= 1)
        s += simd_shuffle_xor(s, d);
      acc.m = norm_nanmax(acc.m, s);
    }
  } else {
    // A tile of TC lines by TR threads per line: TC the smallest power of
    // two holding the group's lines (at most nt), so a few long lines
    // still keep every thread busy (and a SIMD group reads 32 / TC rows of
    // TC neighbouring elements).
    uint tc = 1;
    while ((int64_t)tc < nl && tc < nt)
      tc *= 2;
    const uint tr = nt / tc;
    const uint c = tid % tc, r = tid / tc;
    if (tr == 1) {
      for (int64_t j = j0 + c; j < j1; j += tc) {
        double s = 0.0;
        for (int64_t i = 0; i < R; ++i)
          s += fabs((double)a[i * rs + j * cs]);
        acc.m = norm_nanmax(acc.m, s);
      }
    } else {
      // Here nl <= tc: one line per column of the tile, its sum split
      // over tr threads and added up through threadgroup memory.
      double s = 0.0;
      if ((int64_t)c < nl)
        for (int64_t i = r; i < R; i += tr)
          s += fabs((double)a[i * rs + (j0 + c) * cs]);
      part[tid] = s;
      threadgroup_barrier(mem_flags::mem_threadgroup);
      if (r == 0) {
        for (uint k = 1; k < tr; ++k)
          s += part[k * tc + c];
        acc.m = s;
      }
    }
  }
}

acc = norm_group_reduce<OP>(acc, ws, wm, wb, tid, nt);
if (tid == 0) {
  if (DIRECT) {
    P[b] = T(norm_finish<OP>(acc));
  } else {
    const ulong k = (b * G + g) * 3;
    P[k] = acc.s;
    P[k + 1] = acc.m;
    P[k + 2] = acc.b;
  }
}

//@kernel norm_finish
// Combines the G partial accumulators of each segment (Pin: S x G x 3
// doubles, from norm_reduce) into its norm. Template: T (the result's
// dtype), OP. One threadgroup (a multiple of 32 threads) per segment,
// segments along grid.y and grid.z as in norm_reduce.
threadgroup double ws[32], wm[32], wb[32];
const ulong S = (ulong)Pin_shape[0];
const uint G = (uint)Pin_shape[1];
const ulong b = (ulong)threadgroup_position_in_grid.z *
                    threadgroups_per_grid.y +
                threadgroup_position_in_grid.y;
if (b >= S)
  return;
const uint tid = thread_index_in_threadgroup;
const uint nt = threads_per_threadgroup.x;
norm_acc acc = norm_acc_zero();
for (uint g = tid; g < G; g += nt) {
  const ulong k = (b * G + g) * 3;
  norm_acc p;
  p.s = Pin[k];
  p.m = Pin[k + 1];
  p.b = Pin[k + 2];
  acc = norm_combine<OP>(acc, p);
}
acc = norm_group_reduce<OP>(acc, ws, wm, wb, tid, nt);
if (tid == 0)
  out[b] = T(norm_finish<OP>(acc));
