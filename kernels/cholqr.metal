// kiln's shifted CholeskyQR3 kernels (driver: src/linalg/cholqr.c), the
// bandwidth-speed path of tall-skinny QR: three CholeskyQR passes, each a
// Gram matrix G = X^T X of the current rows X, a Cholesky factor R of it,
// and X R^-1 as the next rows. The first pass shifts its Gram (G + s I)
// so that the Cholesky factorization cannot break down on an
// ill-conditioned A (Fukaya et al., 2020); the next two are plain
// CholeskyQR2 and restore orthogonality. R = R3 R2 R1.
//
// The rows between passes are stored (in Q, or the driver's workspace for
// R only), each row pass reading the previous rows once and writing the
// next ones in place, with the next Gram fused in.
//
// Kernels:
//   cq_gram   pass 1: every warp streams runs of 16 rows of A from memory
//             and sums their Gram in float64 (cq_gram_rows); each group
//             stores one partial.
//   cq_first  pass 2: X_1 = A R_1^-1 row by row, written to Q, and its
//             Gram partials (the solved tile summed by warps).
//   cq_next   pass 3: X_2 = X_1 R_2^-1 in place in Q, and its partials.
//   cq_last   Q = X_2 R_3^-1 in place.
//   cq_reduce sums the partials of each matrix (in a fixed order, so the
//             result does not depend on scheduling).
//   cq_chol   one threadgroup per matrix: Cholesky of the n x n Gram in
//             float64 (pass 1 with the shift), the factor for the next
//             solves, the product R_k ... R_1, and the breakdown flag.
//
// Gram precision: products of float32 values are exact in float64, so the
// float32 path's Gram carries only float64 rounding; the float64 path
// relies on the shift alone. Gram layout: the upper triangle's 8 x 8
// blocks (bi, bj), bi <= bj, numbered row by row (cq_block); a Gram
// (partial or summed) stores entry blk * 64 + 8 a + c = G(8 bi + a,
// 8 bj + c), which is the float64 tensor cores' accumulator layout (lane
// 4 a + c / 2 holds entries c, c + 1 of row a; see cq_gram_step).
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define CQ_UNROLL _Pragma("unroll")
#else
#define CQ_UNROLL
#endif

// The smallest pivot cq_chol accepts: float64's least normal number.
// cq_rcp flushes a subnormal d to zero (1 / d would be infinite), so a
// subnormal pivot is a breakdown like a zero one (the Gram of an A whose
// entries are ~1e-154 or smaller, which the fallback then factors).
#define CQ_PIVOT_MIN 2.2250738585072014e-308
// The largest: 1 / d must be a normal number too (above 2^1022 it is
// subnormal, which rcp.approx.ftz flushes to zero, and the Newton step
// cannot recover from 0: the column's elimination would silently vanish).
// A Gram entry that large comes from columns of norm ~2^511; the fallback
// factors those.
#define CQ_PIVOT_MAX 0x1p1021

// 1 / d for cq_chol's pivots, on the chain of every column step. CUDA:
// the hardware's approximation (rcp.approx.ftz.f64, MUFU.RCP64H, good to
// about 2^-20 or better) and one cubic Newton step, e = 1 - d y, y + y (e
// + e^2), whose error ~e^3 (< 2^-60) is below float64's rounding: a
// MUFU and three dependent DFMAs, where the IEEE division is a MUFU, five
// DFMAs and a test for a slow path (the call also kept the compiler from
// issuing the row's loads before it). The result is within an ulp or so
// of 1 / d, as LAPACK's scaling by a rounded reciprocal is. Elsewhere, or
// for a subnormal d (never accepted as a pivot): 1.0 / d.
inline double cq_rcp0(double d) {
#if KILN_BACKEND_CUDA
  double y;
  asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(y) : "d"(d));
  return y;
#else
  return 1.0 / d;
#endif
}
inline double cq_rcp(double d) {
  const double y = cq_rcp0(d);
  const double e = fma(-d, y, 1.0);
  return fma(y, fma(e, e, e), y);
}

// The value of x in lane `src` of the warp, every lane taking part (the
// whole warp calls it).
inline double cq_shfl(double x, int src) {
#if KILN_BACKEND_CUDA
  return __shfl_sync(0xffffffffu, x, src);
#else
  return simd_shuffle(x, (ushort)src);
#endif
}

// One m8n8k4 float64 product of the warp, C += A B (A 8 x 4, B 4 x 8),
// in the tensor cores' fragments: lane (r, q) = (lane / 4, lane % 4)
// holds a = A(r, q), b = B(q, r) and c0, c1 = C(r, 2 q), C(r, 2 q + 1).
// CUDA sm_80+: mma.sync (as cq_gram_step); elsewhere the same lanes'
// results from shuffles (every lane of the warp calls it).
inline void cq_mma884(thread double& c0, thread double& c1, double a,
                      double b, int lane) {
#if KILN_BACKEND_CUDA && __CUDA_ARCH__ >= 800
  (void)lane;
  asm("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, "
      "{%2}, {%3}, {%0,%1};"
      : "+d"(c0), "+d"(c1)
      : "d"(a), "d"(b));
#else
  const int r = lane / 4, q = lane % 4;
  for (int k = 0; k < 4; ++k) {
    const double x = cq_shfl(a, 4 * r + k);
    c0 = fma(x, cq_shfl(b, 8 * q + k), c0);
    c1 = fma(x, cq_shfl(b, 8 * q + 4 + k), c1);
  }
#endif
}

// cq_chol's diagonal block, by one warp with no barrier: the 16 x 16
// block whose upper triangle starts at p (row stride ld, rows of the
// block's panel, columns of the matrix) is replaced by the rows of U
// (unscaled: U(j, j) = d_j, the pivot; R = D^-1/2 U), mul gets the
// multipliers mul[16 l + c] = U(l, c) / d_l (c > l; the rest is junk),
// dinv[l] = 1 / d_l and piv[l] = d_l. Lane (c, h) = (lane % 16, lane /
// 16) keeps column c, rows 2 t + h, in a[t] (8 registers), so that row j
// lies in register j / 2 of the lanes h = j % 2 and a step reads it with
// shuffles of one register: A(j, c) and A(j, r) for the lane's rows r > j
// (compile-time register indices once unrolled). The entries below the
// diagonal are never read for the upper ones (an upper A(r, c) takes
// A(j, r) and A(j, c), j < r <= c), so they are loaded as zeros and left
// to whatever the updates make of them.
//
// The chain: every lane computes the next pivot itself, d_{j+1} =
// A(j+1, j+1) - U(j, j+1)^2 / d_j, from two values it shuffles at step j
// (A(j+1, j+1) and U(j, j+1) as they are before step j's update: both
// are in the registers since step j - 1), so no shuffle and no update of
// the registers sits between one pivot and the next. And 1 / d_j (y the
// hardware's approximation, e = 1 - d y, t = e + e^2, 1 / d = y + y t)
// enters d_{j+1} as w y + (w y) t, w = U(j, j+1)^2, the first term formed
// while e and t are: the chain of a step is MUFU.RCP64H and 3 dependent
// DFMAs (e, t, d_{j+1}); the registers' update (1 / d, then U(j, c) / d
// and one DFMA an entry) and the next step's shuffles run beside it. Two
// steps of the pivot chain (~2 x 45 cycles) cover the other loop: 1 / d
// -> DMUL -> DFMA (the update of row j + 1 in its owners) -> the
// shuffles of step j + 1 (~25) -> w -> d_{j+2} (~75 cycles from 1 / d_j),
// so a step costs ~50-55 cycles (~45 of FP64 issue), where the column
// loop of the group took ~390 and shuffling the pivot after the update
// ~80-90. The pivot kept is the one computed so (stored on the diagonal
// in place of the register's own update of it, which rounds
// differently), so that U(j, j), 1 / d_j and the multipliers agree.
inline void cq_chol_diag(threadgroup double* p, int ld,
                         threadgroup double* mul, threadgroup double* dinv,
                         threadgroup double* piv, int lane) {
  const int c = lane % 16, h = lane / 16;
  const double hm = h; // 0 or 1
  double a[8];
  CQ_UNROLL
  for (int t = 0; t < 8; ++t) {
    const int r = 2 * t + h;
    a[t] = r <= c ? p[r * ld + c] : 0.0;
  }
  double d = cq_shfl(a[0], 0);
  CQ_UNROLL
  for (int j = 0; j < 16; ++j) {
    const int src = 16 * (j % 2), src1 = 16 * ((j + 1) % 2);
    // row j (final since step j - 1) and the next pivot's operands
    const double uc = cq_shfl(a[j / 2], c + src);
    // A(j, r) for the lane's rows r > j: registers t > j / 2, and for
    // even j row j + 1 (t = j / 2, h = 1)
    double ur[8];
    CQ_UNROLL
    for (int t = (j + 1) / 2; t < 8; ++t)
      ur[t] = cq_shfl(a[j / 2], 2 * t + h + src);
    double wn = 0.0, pd = 1.0;
    if (j < 15) {
      wn = cq_shfl(a[j / 2], j + 1 + src);
      pd = cq_shfl(a[(j + 1) / 2], j + 1 + src1);
    }
    const double y = cq_rcp0(d);
    const double e = fma(-d, y, 1.0);
    const double et = fma(e, e, e);
    const double inv = fma(y, et, y);
    const double w = wn * wn;
    const double dn = fma(-(w * y), et, fma(-w, y, pd));
    const double s = uc * inv;
    // (no predicated update: each is a DFMA and two moves in SASS; row
    // j + 1's register when j is even is row j's in the lanes h = 0,
    // which subtract 0)
    CQ_UNROLL
    for (int t = j / 2 + 1; t < 8; ++t)
      a[t] = fma(-ur[t], s, a[t]);
    if (j % 2 == 0)
      a[j / 2] = fma(-(ur[j / 2] * hm), s, a[j / 2]);
    if (lane < 16)
      mul[16 * j + c] = s;
    if (lane == j) {
      piv[j] = d;
      dinv[j] = inv;
    }
    d = dn;
  }
  // the pivots as used on the diagonal (the registers' own update of it
  // rounds differently)
  simdgroup_barrier(mem_flags::mem_threadgroup);
  CQ_UNROLL
  for (int t = 0; t < 8; ++t) {
    const int r = 2 * t + h;
    if (r <= c)
      p[r * ld + c] = r == c ? piv[c] : a[t];
  }
}

// Threads of the row passes' and cq_chol's groups.
#define CQ_THREADS 256
// Threads of cq_reduce's groups: 32 entries x 32 slices of the partials.
#define CQ_RED_THREADS 1024
// Entries of a Gram (partial or summed) of NC columns: the upper
// triangle's 8 x 8 blocks (see cq_gram_step).
template <int NC>
constexpr int cq_entries() {
  return (NC / 8) * (NC / 8 + 1) / 2 * 64;
}

// Rows of a tile held in TT, NC + 1 values a row (odd, so a thread per
// row reads without bank conflicts), at most about 34 KB. cq_gram keeps
// its tile in float64 (converted once on load, so that the Gram's inner
// loop converts nothing); the row passes keep theirs in T, so that a
// float32 tile has a row for every thread of the group (the solves are
// latency-bound chains, one row a thread: with a float64 tile only half
// (NC 32) or a quarter (NC 64) of the threads had a row), at the price of
// converting the Gram's operands as they are read.
template <int NC, typename TT>
constexpr int cq_tile_rows() {
  return sizeof(TT) == 4 ? (NC <= 32 ? 256 : 128)
                         : (NC <= 16 ? 256 : (NC <= 32 ? 128 : 64));
}

// Doubles of a group's threadgroup buffer: the tile, which also holds the
// slices' Gram sums at the end (E <= the tile's size for every NC).
template <int NC, typename TT>
constexpr int cq_smem_doubles() {
  return (cq_tile_rows<NC, TT>() * (NC + 1) * (int)sizeof(TT) + 7) / 8;
}

// Four values loaded at once (a 16-byte load for float; two for double).
template <typename T>
struct alignas(4 * sizeof(T)) cq_v4 {
  T v[4];
};

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order.
inline int64_t cq_batch_offset(uint b, const constant int* shape,
                               const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// The block (bi, bj), bi <= bj, of the upper triangle numbered
// `blk` row by row (NB blocks a side).
inline void cq_block(int blk, int NB, thread int& bi, thread int& bj) {
  int i = 0;
  while (blk >= NB - i) {
    blk -= NB - i;
    ++i;
  }
  bi = i;
  bj = i + blk;
}

// x = x R^-1 in place (forward substitution on a row): rt holds R by
// columns, rt[j NC + l] = R(l, j) for l < j, and rt[j NC + j] = 1 / R(j, j)
// (0 past n, which keeps the padding zero). Two partial sums shorten the
// dependency chain.
template <typename T, int NC>
inline void cq_solve(thread T* x, const device T* rt) {
  CQ_UNROLL
  for (int j = 0; j < NC; ++j) {
    const device T* col = rt + j * NC;
    T s0 = x[j], s1 = T(0);
    CQ_UNROLL
    for (int l = 0; l < j; l += 4) {
      const cq_v4<T> v = *(const device cq_v4<T>*)(col + l);
      CQ_UNROLL
      for (int e = 0; e < 4; ++e)
        if (l + e < j) {
          if (e % 2 == 0)
            s0 = fma(-x[l + e], v.v[e], s0);
          else
            s1 = fma(-x[l + e], v.v[e], s1);
        }
    }
    x[j] = (s0 + s1) * col[j];
  }
}

// The factor in threadgroup memory: the row passes' solves are chains of
// dependent loads of R (a thread per row, every thread reading the same
// column), and from device memory each of those loads stalled its chain
// on the L1 latency (Nsight Compute: long-scoreboard stalls first in
// cq_last). The group copies R into threadgroup memory once, its columns
// packed: column j (R(0..j-1, j) and 1 / R(j, j)) padded to whole
// 4-vectors, starting at vector cq_rs_col(j), so that the solve still
// reads four values a load. Used where it fits beside the tile in 48 KB
// (all but float64 NC 64, which reads R from device memory).
template <int NC>
constexpr int cq_rs_col(int j) {
  return 2 * (j / 4) * (j / 4 + 1) + (j % 4) * (j / 4 + 1);
}

template <int NC>
constexpr int cq_rs_vecs() {
  return cq_rs_col<NC>(NC);
}

template <int NC, typename TT>
constexpr bool cq_rs_fits() {
  return cq_smem_doubles<NC, TT>() * 8 +
             cq_rs_vecs<NC>() * 4 * (int)sizeof(TT) <=
         48 * 1024;
}

// cq_solve with the packed factor rs (see cq_rs_col) in threadgroup
// memory.
template <typename T, int NC>
inline void cq_solve_tg(thread T* x, const threadgroup cq_v4<T>* rs) {
  CQ_UNROLL
  for (int j = 0; j < NC; ++j) {
    const threadgroup cq_v4<T>* col = rs + cq_rs_col<NC>(j);
    T s0 = x[j], s1 = T(0);
    CQ_UNROLL
    for (int l = 0; l < j; l += 4) {
      const cq_v4<T> v = col[l / 4];
      CQ_UNROLL
      for (int e = 0; e < 4; ++e)
        if (l + e < j) {
          if (e % 2 == 0)
            s0 = fma(-x[l + e], v.v[e], s0);
          else
            s1 = fma(-x[l + e], v.v[e], s1);
        }
    }
    x[j] = (s0 + s1) * col[j / 4].v[j % 4];
  }
}

// Copies the factor rt (by columns, see cq_solve) into rs, packed.
template <typename T, int NC>
inline void cq_rs_load(threadgroup cq_v4<T>* rs, const device T* rt,
                       int tid) {
  threadgroup T* f = (threadgroup T*)rs;
  for (int e = tid; e < NC * NC; e += CQ_THREADS) {
    const int j = e / NC, l = e % NC;
    if (l < 4 * (j / 4 + 1))
      f[4 * cq_rs_col<NC>(j) + l] = rt[e];
  }
}

// Warps per block set of the Gram (see below): NC 64 splits its blocks.
template <int NC>
constexpr int cq_gram_h() {
  return NC == 64 ? 2 : 1;
}

// ---- the Gram, a warp at a time ------------------------------------------
//
// Every Gram is summed by warps, each over its own rows, as the 8 x 8
// blocks of the upper triangle, in the layout of the float64 tensor cores'
// m8n8k4 (mma.sync, sm_80+): for rows k of a step of 4, the fragment of
// column block c is f_c = X(r0 + q, 8 c + r) (r = lane / 4, q = lane % 4)
// and serves as both A = X^T and B = X operand, and a lane holds
// G(8 bi + r, 8 bj + 2 q + i), i = 0, 1, of block (bi, bj): entries
// blk * 64 + 2 lane + i of the block layout. The tensor cores run these
// float64 products at twice the FMA pipe's rate with no conversions or
// shared-memory reads beyond one per operand (the earlier 4 x 4 register
// blocks were bound by both). cq_gram needs no tile at all: each warp
// streams its runs of 16 rows of A straight from memory (no barriers, few
// registers, so many warps keep many loads in flight); the row passes sum
// their solved tile from threadgroup memory. NC 64's 36 blocks are split
// between the two warps of a pair (H = 2), 72 accumulators a lane being
// too many. The portable path (CPU) computes the same lane entries with
// scalar FMAs.

// Accumulator doubles a lane keeps.
template <int NC>
constexpr int cq_gram_acc() {
  return 2 * (((NC / 8) * (NC / 8 + 1) / 2 + cq_gram_h<NC>() - 1) /
              cq_gram_h<NC>());
}

// Accumulates one step of 4 rows whose fragments are f (NB of them) into
// the blocks blk with blk % H == HH (acc[2 (blk / H) + i]).
template <int NB, int H, int HH>
inline void cq_gram_step(thread double* acc, const thread double* f,
                         int lane, const thread double* fr4) {
#if KILN_BACKEND_CUDA && __CUDA_ARCH__ >= 800
  (void)lane;
  (void)fr4;
  int blk = 0;
  CQ_UNROLL
  for (int bi = 0; bi < NB; ++bi)
    CQ_UNROLL
    for (int bj = bi; bj < NB; ++bj, ++blk)
      if (blk % H == HH)
        asm("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, "
            "{%2}, {%3}, {%0,%1};"
            : "+d"(acc[2 * (blk / H)]), "+d"(acc[2 * (blk / H) + 1])
            : "d"(f[bi]), "d"(f[bj]));
#else
  // fr4[k * NC + c]: the 4 rows of the step, as the lanes' loads saw them
  (void)f;
  const int r = lane / 4, q = lane % 4;
  int blk = 0;
  for (int bi = 0; bi < NB; ++bi)
    for (int bj = bi; bj < NB; ++bj, ++blk)
      for (int k = 0; blk % H == HH && k < 4; ++k) {
        const int at = 2 * (blk / H);
        const double x = fr4[k * NB * 8 + 8 * bi + r];
        acc[at] = fma(x, fr4[k * NB * 8 + 8 * bj + 2 * q], acc[at]);
        acc[at + 1] = fma(x, fr4[k * NB * 8 + 8 * bj + 2 * q + 1], acc[at + 1]);
      }
#endif
}

// Warp `w` of W (over the whole grid's groups for matrix b) sums the runs
// of 16 rows w, w + W, ... of A into acc: the blocks blk % H == HH (see
// cq_gram_step).
template <typename T, int NC, int H, int HH>
inline void cq_gram_rows(const device T* a, int m, int n, int64_t rs,
                         int64_t cs, int w, int W, int lane,
                         thread double* acc) {
  constexpr int NB = NC / 8;
  // steps of 4 rows loaded at once: all 4 of a run, NC 64 one
  constexpr int KU = NC == 64 ? 1 : 4;
  const int r = lane / 4, q = lane % 4;
  for (int r0 = w * 16; r0 < m; r0 += W * 16) {
#if KILN_BACKEND_CUDA && __CUDA_ARCH__ >= 800
    for (int k0 = 0; k0 < 4; k0 += KU) {
      T v[KU][NB];
      CQ_UNROLL
      for (int k = 0; k < KU; ++k) {
        const int row = r0 + 4 * (k0 + k) + q;
        const device T* rp = a + (int64_t)row * rs;
        CQ_UNROLL
        for (int c = 0; c < NB; ++c) {
          const int col = 8 * c + r;
          v[k][c] = row < m && col < n ? rp[col * cs] : T(0);
        }
      }
      CQ_UNROLL
      for (int k = 0; k < KU; ++k) {
        double f[NB];
        CQ_UNROLL
        for (int c = 0; c < NB; ++c)
          f[c] = (double)v[k][c];
        cq_gram_step<NB, H, HH>(acc, f, lane,
                                (const thread double*)nullptr);
      }
    }
#else
    // The portable path reads the whole 4-row step itself.
    (void)r;
    (void)q;
    CQ_UNROLL
    for (int k = 0; k < 4; ++k) {
      double fr4[4 * NC];
      for (int kk = 0; kk < 4; ++kk)
        for (int c = 0; c < NC; ++c) {
          const int row = r0 + 4 * k + kk;
          fr4[kk * NC + c] = row < m && c < n
                                 ? (double)a[(int64_t)row * rs + c * cs]
                                 : 0.0;
        }
      cq_gram_step<NB, H, HH>(acc, (const thread double*)nullptr, lane,
                              fr4);
    }
#endif
  }
}

// The row passes' Gram of a tile (TR rows in threadgroup memory, row
// stride LD, zeros past the matrix): walker `w` of W takes the steps of 4
// rows w, w + W, ...
template <typename TT, int NC, int TR, int LD, int H, int HH>
inline void cq_gram_tile(const threadgroup TT* tile, int w, int W,
                         int lane, thread double* acc) {
  constexpr int NB = NC / 8;
  const int r = lane / 4, q = lane % 4;
  for (int k = w; k < TR / 4; k += W) {
#if KILN_BACKEND_CUDA && __CUDA_ARCH__ >= 800
    double f[NB];
    CQ_UNROLL
    for (int c = 0; c < NB; ++c)
      f[c] = (double)tile[(4 * k + q) * LD + 8 * c + r];
    cq_gram_step<NB, H, HH>(acc, f, lane, (const thread double*)nullptr);
#else
    (void)r;
    (void)q;
    double fr4[4 * NC];
    for (int kk = 0; kk < 4; ++kk)
      for (int c = 0; c < NC; ++c)
        fr4[kk * NC + c] = (double)tile[(4 * k + kk) * LD + c];
    cq_gram_step<NB, H, HH>(acc, (const thread double*)nullptr, lane, fr4);
#endif
  }
}

// The group's partial: its warps' accumulators added in warp order (the
// result does not depend on scheduling) into sum (E doubles of threadgroup
// memory), then stored as partial p of matrix b.
template <int NC>
inline void cq_gram_store(const thread double* acc, threadgroup double* sum,
                          device double* Part, uint b, int p, int P,
                          int tid) {
  constexpr int H = cq_gram_h<NC>(), NB = NC / 8;
  constexpr int NBLK = NB * (NB + 1) / 2, E = NBLK * 64;
  const int lane = tid % 32, warp = tid / 32, half = warp % H;
  for (int v = 0; v < CQ_THREADS / 32; ++v) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (warp == v)
      CQ_UNROLL
      for (int blk = 0; blk < NBLK; ++blk)
        if (blk % H == half)
          CQ_UNROLL
          for (int i = 0; i < 2; ++i) {
            const int e = blk * 64 + 2 * lane + i;
            const double x = acc[2 * (blk / H) + i];
            sum[e] = v < H ? x : sum[e] + x;
          }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  device double* part = Part + ((int64_t)b * P + p) * E;
  for (int e = tid; e < E; e += CQ_THREADS)
    part[e] = sum[e];
}

// A thread's LPT values of a tile whose thread-row lr0 is `row0`
// (column lc, rows row0 + k RSTEP), zero past the matrix.
template <typename T, int NC, int LPT, int RSTEP>
inline void cq_load_tile(thread T* v, const device T* a, int row0, int lc,
                         int m, int n, int64_t rs, int64_t cs) {
  CQ_UNROLL
  for (int k = 0; k < LPT; ++k) {
    const int row = row0 + k * RSTEP;
    v[k] = row < m && lc < n ? a[(int64_t)row * rs + lc * cs] : T(0);
  }
}

// One threadgroup's share of a pass (see the top of the file): row tiles
// [t0, t1) of matrix b of X (A, or Q itself, read in place); with SOLVE
// the factor rt solved into every row, with GRAM the Gram partial p of b
// into Part (cq_gram_tile), with WRITE the rows into Q. smem: the tile,
// reused for the warps' sum at the end. Each tile is read whole before
// any of its rows is written, and only this threadgroup touches its
// tiles, so X may be Q.
template <typename T, typename TT, int NC, bool SOLVE, bool GRAM,
          bool WRITE, bool PF>
inline void cq_pass(const device T* X, const constant int* X_shape,
                    const constant int64_t* X_strides, int X_ndim,
                    const device T* rt, device double* Part, device T* Q,
                    uint b, uint p, uint P, int tid, threadgroup double* smem,
                    threadgroup cq_v4<T>* rsm) {
  constexpr int TR = cq_tile_rows<NC, TT>();
  constexpr int LD = NC + 1;
  constexpr int RSTEP = CQ_THREADS / NC;
  constexpr int LPT = TR * NC / CQ_THREADS;
  constexpr int H = cq_gram_h<NC>();
  static_assert(LPT * CQ_THREADS == TR * NC, "tile shape");
  static_assert(TR <= CQ_THREADS, "a thread per tile row");
  static_assert(cq_entries<NC>() <= cq_smem_doubles<NC, TT>(), "sums fit");
  threadgroup TT* tile = (threadgroup TT*)smem;
  const int m = X_shape[X_ndim - 2], n = X_shape[X_ndim - 1];
  const int64_t rs = X_strides[X_ndim - 2], cs = X_strides[X_ndim - 1];
  const device T* a = X + cq_batch_offset(b, X_shape, X_strides, X_ndim);
  const int tiles = (m + TR - 1) / TR;
  const int per = (tiles + (int)P - 1) / (int)P;
  const int t0 = (int)p * per, t1 = min(tiles, t0 + per);
  const int lc = tid % NC, lr = tid / NC;
  const int lane = tid % 32, warp = tid / 32;

  double acc[cq_gram_acc<NC>()];
  CQ_UNROLL
  for (int e = 0; e < cq_gram_acc<NC>(); ++e)
    acc[e] = 0.0;

  // With PF the next tile's values are loaded into registers while this
  // one is worked on (a group that is alone on its SM would otherwise
  // wait out each tile's memory latency with nothing to do).
  constexpr bool RS = SOLVE && cq_rs_fits<NC, TT>();
  if (RS)
    cq_rs_load<T, NC>(rsm, rt, tid); // the loop's first barrier orders it
  T pf[PF ? LPT : 1];
  if (PF && t0 < t1)
    cq_load_tile<T, NC, LPT, RSTEP>(pf, a, t0 * TR + lr, lc, m, n, rs, cs);
  for (int t = t0; t < t1; ++t) {
    const int r0 = t * TR;
    threadgroup_barrier(mem_flags::mem_threadgroup); // tile free again
    if (PF) {
      CQ_UNROLL
      for (int k = 0; k < LPT; ++k)
        tile[(lr + k * RSTEP) * LD + lc] = (TT)pf[k];
      if (t + 1 < t1)
        cq_load_tile<T, NC, LPT, RSTEP>(pf, a, r0 + TR + lr, lc, m, n, rs,
                                        cs);
    } else {
      CQ_UNROLL
      for (int k = 0; k < LPT; ++k) {
        const int row = r0 + lr + k * RSTEP;
        tile[(lr + k * RSTEP) * LD + lc] =
            row < m && lc < n ? (TT)a[(int64_t)row * rs + lc * cs] : TT(0);
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (SOLVE) {
      if (tid < TR) {
        T x[NC];
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          x[c] = T(tile[tid * LD + c]);
        if (RS)
          cq_solve_tg<T, NC>(x, rsm);
        else
          cq_solve<T, NC>(x, rt);
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          tile[tid * LD + c] = (TT)x[c];
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (GRAM) {
      constexpr int W = CQ_THREADS / 32 / H;
      if (warp % H == 0)
        cq_gram_tile<TT, NC, TR, LD, H, 0>(tile, warp / H, W, lane, acc);
      else
        cq_gram_tile<TT, NC, TR, LD, H, H - 1>(tile, warp / H, W, lane,
                                               acc);
    }
    if (WRITE) {
      CQ_UNROLL
      for (int k = 0; k < LPT; ++k) {
        const int row = r0 + lr + k * RSTEP;
        if (row < m && lc < n)
          Q[((int64_t)b * m + row) * n + lc] =
              T(tile[(lr + k * RSTEP) * LD + lc]);
      }
    }
  }
  if (GRAM)
    cq_gram_store<NC>(acc, smem, Part, b, (int)p, (int)P, tid);
}

// Whether cq_first / cq_next prefetch: where their registers keep them
// alone on an SM anyway (float32 NC 64; float64 NC 64 would spill).
template <typename T, int NC>
constexpr bool cq_first_pf() {
  return NC == 64 && sizeof(T) == 4;
}

// Factor k of matrix b in Rt (batch x 3 x NC x NC).
template <typename T, int NC>
inline const device T* cq_factor(const device T* Rt, uint b, int k) {
  return Rt + ((int64_t)b * 3 + k) * NC * NC;
}

//@kernel cq_gram
// Pass 1's Gram partials, of A itself, one per threadgroup: Part is batch
// x P x E (cq_entries, the 8 x 8 block layout), P = the threadgroups per
// matrix (grid.x = 256 P), matrices along grid.y from g0. Each warp sums
// its runs of rows straight from memory (cq_gram_rows), then the group
// adds its warps' sums (cq_gram_store). Template: T, NC (16, 32, 64).
constexpr int H = cq_gram_h<NC>();
constexpr int WG = CQ_THREADS / 32 / H; // row walkers per group
threadgroup double sum[cq_entries<NC>()];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32, warp = tid / 32;
const int P = (int)threadgroups_per_grid.x;
const int p = (int)threadgroup_position_in_grid.x;
const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
const int64_t rs = A_strides[A_ndim - 2], cs = A_strides[A_ndim - 1];
const device T* a = A + cq_batch_offset(b, A_shape, A_strides, A_ndim);
const int w = p * WG + warp / H, W = P * WG;
double acc[cq_gram_acc<NC>()];
CQ_UNROLL
for (int e = 0; e < cq_gram_acc<NC>(); ++e)
  acc[e] = 0.0;
if (warp % H == 0)
  cq_gram_rows<T, NC, H, 0>(a, m, n, rs, cs, w, W, lane, acc);
else
  cq_gram_rows<T, NC, H, H - 1>(a, m, n, rs, cs, w, W, lane, acc);
cq_gram_store<NC>(acc, sum, Part, b, p, P, tid);

//@kernel cq_first
// Pass 2's rows: Q = X_1 = A R_1^-1 (factor 0 of Rt, batch x 3 x NC x NC,
// see cq_solve), written, and the Gram partials of X_1 into Part (the
// layout of cq_gram). Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
threadgroup cq_v4<T> rs[cq_rs_fits<NC, T>() ? cq_rs_vecs<NC>() : 1];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
cq_pass<T, T, NC, true, true, true, cq_first_pf<T, NC>()>(
    A, A_shape, A_strides, A_ndim, cq_factor<T, NC>(Rt, b, 0), Part, Q, b,
    threadgroup_position_in_grid.x, threadgroups_per_grid.x,
    (int)thread_index_in_threadgroup, smem, rs);

//@kernel cq_next
// Pass 3's rows: Q = X_2 = X_1 R_2^-1 in place (factor 1 of Rt; Qin is Q,
// bound for its shape), and the Gram partials of X_2 into Part. Nothing
// for a matrix that two passes finish (Stage 2: cq_last then solves R_2
// into X_1, and the partials left in Part are never used).
// Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
threadgroup cq_v4<T> rs[cq_rs_fits<NC, T>() ? cq_rs_vecs<NC>() : 1];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
if (Stage[b] == 2)
  return;
cq_pass<T, T, NC, true, true, true, cq_first_pf<T, NC>()>(
    (const device T*)Q, Qin_shape, Qin_strides, Qin_ndim,
    cq_factor<T, NC>(Rt, b, 1), Part, Q, b, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, (int)thread_index_in_threadgroup, smem, rs);

//@kernel cq_last
// The result: Q = X_3 = X_2 R_3^-1 in place (factor 2 of Rt; Qin is Q,
// bound for its shape), or Q = X_2 = X_1 R_2^-1 (factor 1) for a matrix
// that two passes finish (Stage 2: cq_next left X_1 in Q).
// Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
threadgroup cq_v4<T> rs[cq_rs_fits<NC, T>() ? cq_rs_vecs<NC>() : 1];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
cq_pass<T, T, NC, true, false, true, true>(
    (const device T*)Q, Qin_shape, Qin_strides, Qin_ndim,
    cq_factor<T, NC>(Rt, b, Stage[b] == 2 ? 1 : 2), (device double*)nullptr,
    Q, b,
    threadgroup_position_in_grid.x, threadgroups_per_grid.x,
    (int)thread_index_in_threadgroup, smem, rs);

//@kernel cq_reduce
// G (batch x E) = the sum over p of Part (batch x P x E), p in order. A
// threadgroup of 1024 sums 32 entries: lane = entry (coalesced), 32 warps
// = 32 slices of the partials, whose sums are added in slice order. Many
// slices keep each thread's chain of dependent loads short (P is several
// hundred). grid.x = 1024 * ceil(E / 32), matrices along grid.y from g0.
// With STAGED (pass 3's reduce) nothing for a matrix that two passes
// finished (Stage 2: cq_next wrote no partials for it); Stage is not read
// otherwise (passes 1 and 2 run before cq_chol writes it).
threadgroup double red[CQ_RED_THREADS];
constexpr int NSL = CQ_RED_THREADS / 32;
const int P = Part_shape[1], E = Part_shape[2];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
if (STAGED && Stage[b] == 2)
  return;
const int tid = (int)thread_index_in_threadgroup;
const int e = (int)threadgroup_position_in_grid.x * 32 + tid % 32;
const int slice = tid / 32;
double s = 0.0;
if (e < E) {
  const device double* src = Part + (int64_t)b * P * E + e;
  for (int p = slice; p < P; p += NSL)
    s += src[(int64_t)p * E];
}
red[tid] = s;
threadgroup_barrier(mem_flags::mem_threadgroup);
if (slice == 0 && e < E) {
  double t = red[tid];
  for (int k = 1; k < NSL; ++k)
    t += red[tid + 32 * k];
  G[(int64_t)b * E + e] = t;
}

//@kernel cq_chol
// Pass PASS (1..3) for one matrix per threadgroup (256 threads, matrices
// along grid.y from g0): Cholesky of the Gram G (batch x E, by blocks) in
// float64, with pass 1 adding shift * trace(G) to the diagonal (shift =
// 11 (m n + n (n + 1)) u, u float64's unit roundoff, and trace(G) =
// ||A||_F^2). Writes factor PASS-1 of Rt (rounded to T, as cq_solve takes
// it), Rout = R_PASS Rin (float64, NC x NC; pass 1: R_1) and, in pass 3,
// R = R_3 R_2 R_1 (T, batch x n x n, zeros below the diagonal; its
// diagonal is positive). flag (int32 per matrix): pass 1 sets it, later
// passes only turn 0 into non-zero: PASS * 1000 + j + 1 when pivot j (the
// first such) is not finite, below float64's least normal number
// (CQ_PIVOT_MIN) or above 2^1021 (CQ_PIVOT_MAX), PASS * 1000 when the
// trace is not positive and finite (pass 1) or when the last Gram is far
// from I (||G_3 - I||_F > 1/2, pass 3: X_2 was not orthogonal enough for
// one more pass to finish the job). Rin is not read in pass 1. Rsh is
// R, bound for its shape.
//
// Two passes are enough when X_1 is already nearly orthogonal: with two
// (int32) non-zero, pass 2 measures ||G_2 - I||_F as pass 3 does, and at
// most 1/4 (CQ_TWO_PASS_TOL; half of what pass 3 accepts before its last
// solve), with no breakdown so far, writes R = R_2 R_1 and Stage 2 for
// the matrix: cq_next and pass 3 then do nothing for it and cq_last
// solves R_2 into X_1 (the same one more pass that pass 3's test
// licenses, on a Gram twice as close to I). Else Stage 0 and the
// third pass runs. A well-conditioned A (the shift is then negligible: it
// is float64's rounding) always stops after two; an ill-conditioned one,
// whose shifted X_1 is far from orthogonal, takes three. Stage is
// written by pass 2 (every matrix), read by pass 3, cq_next and cq_last.
//
// Thread (ti, tk) of a 16 x 16 grid keeps the BS x BS block (BS = NC /
// 16) at rows BS ti, columns BS tk of the matrix in registers for what
// is done entry by entry (the trace, ||G - I||, R_k). The factorization
// is blocked, 16 columns a block, on the matrix in threadgroup memory
// (see the loop): warp 0 factors the diagonal block with shuffles, one
// thread a column solves the block row right of it, and the warps update
// the trailing matrix by 8 x 8 tiles on the tensor cores, three barriers
// a block. A bad pivot (not positive and normal, or not finite) is found
// after the loop, which runs on through it.
//
// Count (the critical path at NC 64, H100 cycles at ~1.75 GHz; "before"
// measured, "after" estimated from instruction latencies, NOT measured):
// before, one group barrier per column on the 256-thread grid: the chain
// STS of row j -> barrier -> LDS -> 1 / d -> DMUL -> DFMA -> STS, ~390
// cycles a column, 64 columns: ~25,000 cycles (~14 us of the 19 / 24 /
// 25 us of passes 1 / 2 / 3). After: (a) 64 warp steps of ~55 cycles
// (no barrier; the pivot chain is MUFU and 3 DFMAs, ~45, and a step is
// ~47 instructions on one scheduler, sm_90a SASS: see cq_chol_diag)
// ~3,500; (b) 3 solves of 15 dependent DFMAs behind their loads,
// issue-bound at 120 DFMAs and ~100 LDS a warp, ~350 each, ~1,050; (c)
// 3 trailing updates, each the operand loads (~40) and 3 interleaved
// chains of 4 m8n8k4 (~150), ~550 (with 4 x 4 register blocks: 256 DFMAs
// a warp, ~600 each, ~1,800); 12 barriers ~500: ~5,600 cycles (~3.2
// us), i.e. ~11 us less a pass. With the product below (~1,500 cycles
// less in passes 2 and 3): cq_chol ~8 / ~12 / ~13 us expected. Measured
// (H200, Nsight): 18.2 / 24.6 / 24.3 -> 21.4 / 19.2 / 19.7 us, far from
// the count (see cholqr.c).
constexpr int CQ_GB = 8;
constexpr int LD = NC + 4, NB = NC / CQ_GB;
// ||G_2 - I||_F^2 at most this finishes after two passes (||.|| <= 1/4)
constexpr double CQ_TWO_PASS_TOL = 1.0 / 16;
constexpr int BB = CQ_GB * CQ_GB, E = cq_entries<NC>();
constexpr int BS = NC / 16;
static_assert(BS * 16 == NC && CQ_THREADS == 256, "cq_chol's thread grid");
// Gs: the matrix (rows of LD = NC + 4 doubles, so that the tensor-core
// operands' half-warps, 4 rows x 4 columns, hit distinct banks): the
// Gram, factored in place, then R_k, then Rin (passes 2 and 3). Ws: M12,
// M11 and 1 / d during the factorization (see the loop).
threadgroup double Gs[NC * LD];
threadgroup double Ws[16 * LD + 16 * 17];
threadgroup double sq[NC];  // the pivots
threadgroup double rsq[NC]; // 1 / sqrt(pivot)
threadgroup double red[CQ_THREADS / 32];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
if (PASS == 3 && Stage[b] == 2)
  return; // finished by pass 2 (the whole group leaves)
const int tid = (int)thread_index_in_threadgroup;
const int n = Rsh_shape[Rsh_ndim - 1];
const int ti = tid / 16, tk = tid % 16;
// Rin (passes 2 and 3) is loaded first, into registers (chunk c of 16
// rows, BS values a thread), so that its memory latency passes during the
// elimination; the product below stages it in Gs. The Gram's
// entries are loaded all at once too, then stored: a loop of load-store
// pairs waited out one L2 latency per entry (9 a thread at NC 64, and 16
// more for Rin: ~25 latencies of ~300 cycles on the path of a pass, now
// 2).
constexpr int RCH = NC / 16; // chunks of Rin
constexpr int GPT = (E + CQ_THREADS - 1) / CQ_THREADS;
double rv[PASS > 1 ? RCH * BS : 1];
if (PASS > 1) {
  const device double* rin = Rin + (int64_t)b * NC * NC;
  CQ_UNROLL
  for (int c = 0; c < RCH; ++c)
    CQ_UNROLL
    for (int q = 0; q < BS; ++q)
      rv[PASS > 1 ? c * BS + q : 0] =
          rin[(c * BS + q) * CQ_THREADS + tid];
}
// The earlier passes' flag, read now: read at the end, its latency fell
// on warp 0, which then has the product's longest share.
const int flag0 = PASS > 1 && tid == 0 ? flag[b] : 0;
const device double* g = G + (int64_t)b * E;
double gv[GPT];
CQ_UNROLL
for (int q = 0; q < GPT; ++q) {
  const int e = q * CQ_THREADS + tid;
  gv[q] = e < E ? g[e] : 0.0;
}
CQ_UNROLL
for (int q = 0; q < GPT; ++q) {
  const int e = q * CQ_THREADS + tid;
  if (e < E) { // (cq_block does not end for a block past the triangle)
    int bi = 0, bj = 0;
    cq_block(e / BB, NB, bi, bj);
    const int i = CQ_GB * bi + (e % BB) / CQ_GB, j = CQ_GB * bj + e % CQ_GB;
    if (i <= j)
      Gs[i * LD + j] = gv[q];
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
double gr[BS][BS];
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v) {
    const int i = BS * ti + u, k = BS * tk + v;
    gr[u][v] = i <= k && k < n ? Gs[i * LD + k] : 0.0;
  }
int fail = 0;
bool near = false; // pass 2: ||G_2 - I|| small enough to stop after two
if (PASS == 1) {
  // trace(G): the diagonal owners' sums, then the warps' in order
  double tr = 0.0;
  CQ_UNROLL
  for (int u = 0; u < BS; ++u)
    if (ti == tk)
      tr += gr[u][u];
  tr = simd_sum(tr);
  if (tid % 32 == 0)
    red[tid / 32] = tr;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  tr = 0.0;
  for (int k = 0; k < CQ_THREADS / 32; ++k)
    tr += red[k];
  if (!(tr > 0.0) || !isfinite(tr))
    fail = PASS * 1000;
  CQ_UNROLL
  for (int u = 0; u < BS; ++u)
    if (ti == tk && BS * ti + u < n)
      gr[u][u] += shift * tr;
} else if (PASS == 3 || two != 0) {
  double d2 = 0.0;
  CQ_UNROLL
  for (int u = 0; u < BS; ++u)
    CQ_UNROLL
    for (int v = 0; v < BS; ++v) {
      const int i = BS * ti + u, k = BS * tk + v;
      if (i <= k && k < n) {
        const double w = gr[u][v] - (i == k ? 1.0 : 0.0);
        d2 += (i == k ? 1.0 : 2.0) * w * w;
      }
    }
  d2 = simd_sum(d2);
  if (tid % 32 == 0)
    red[tid / 32] = d2;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  double tot = 0.0;
  for (int k = 0; k < CQ_THREADS / 32; ++k)
    tot += red[k];
  if (PASS == 3 && !(tot <= 0.25))
    fail = PASS * 1000;
  near = PASS == 2 && two != 0 && tot <= CQ_TWO_PASS_TOL;
}
// Blocked right-looking Cholesky, CB = 16 columns a block (see cq_chol's
// comment above for the count), on the matrix in Gs (each thread first
// writes its block back: the shift or the padding's identity on the
// diagonal, zeros below it and past n). For block K (rows and columns
// j0 = CB K on): (a) warp 0 factors the diagonal block G11 with shuffles
// alone (cq_chol_diag: the rows U11 in place, the multipliers M11 = D^-1
// U11, the pivots d and 1 / d); (b) one thread a column k right of it
// solves U12(:, k) = L11^-1 G12(:, k) in place (L11 = M11^T, unit lower
// triangular: a forward substitution, 15 dependent DFMAs) and keeps M12 =
// D^-1 U12 in Ws; (c) the warps subtract M12^T U12 from the trailing
// matrix by 8 x 8 tiles (4 m8n8k4 steps a tile, cq_mma884; at most 3
// tiles a warp, unrolled so that their loads issue together). Three
// barriers a block where the column loop had sixteen. The arithmetic is
// that of the column loop regrouped: G(i, k) -= U(j, i) U(j, k) / d_j
// for every j < i, summed in float64, U(j, j) = d_j the pivot; only the
// order of the subtractions differs (block by block), so the factor is
// backward stable as before. Entries below the diagonal of a diagonal
// tile are updated too and never read. Blocks wholly past n (the
// identity) are skipped; the padding inside the last one is the
// identity, whose steps change nothing.
constexpr int CB = 16;
threadgroup double* const M12 = Ws;          // [CB][LD], by columns k
threadgroup double* const M11 = Ws + CB * LD; // [CB][CB]
threadgroup double* const dinv = M11 + CB * CB;
const int wp = tid / 32, lane = tid % 32;
const int fr = lane / 4, fq = lane % 4; // the lane's fragment row, column
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  if (ti == tk && BS * ti + u >= n)
    gr[u][u] = 1.0;
// (each thread reads and writes only its own block of Gs here)
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v)
    Gs[(BS * ti + u) * LD + BS * tk + v] = gr[u][v];
const int nblk = (n + CB - 1) / CB;
for (int K = 0; K < nblk; ++K) {
  const int j0 = CB * K;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // (a) the diagonal block, by warp 0 alone
  if (tid < 32)
    cq_chol_diag(Gs + j0 * LD + j0, LD, M11, dinv, sq + j0, tid);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (NC > CB && K + 1 < nblk) {
    // (b) U12 and M12, a column a thread (the columns of blocks factored)
    const int W = CB * nblk - j0 - CB;
    if (tid < W) {
      const int k = j0 + CB + tid;
      double x[CB];
      CQ_UNROLL
      for (int l = 0; l < CB; ++l)
        x[l] = Gs[(j0 + l) * LD + k];
      CQ_UNROLL
      for (int l = 0; l < CB; ++l)
        CQ_UNROLL
        for (int r = l + 1; r < CB; ++r)
          x[r] = fma(-M11[l * CB + r], x[l], x[r]);
      CQ_UNROLL
      for (int l = 0; l < CB; ++l) {
        Gs[(j0 + l) * LD + k] = x[l];
        M12[l * LD + k] = x[l] * dinv[l];
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // (c) the trailing update: tile t of the trailing upper triangle (m
    // tiles a side, numbered as cq_block does) is warp t % 8's; C -=
    // M12^T U12 as C += (-M12^T) U12, A(r, q) = -M12(l, 8 bi + r) and
    // B(q, r) = U12(l, 8 bj + r) for the 4 l of a step. Every operand of
    // the warp's tiles is loaded first (a warp's missing tile reads tile 0
    // and is not stored), then the tiles' chains of 4 steps interleave;
    // a round of tiles that no warp has is skipped.
    const int m = 2 * (nblk - K - 1), b0 = 2 * (K + 1);
    const int ntile = m * (m + 1) / 2;
    constexpr int TPW = (NC / 8 - 2) * (NC / 8 - 1) / 2 / 8 + 1;
    double c0[TPW], c1[TPW], fa[TPW][CB / 4], fb[TPW][CB / 4];
    int cpo[TPW];
    CQ_UNROLL
    for (int it = 0; it < TPW; ++it) {
      const int t = wp + 8 * it;
      int ai = 0, aj = 0;
      cq_block(t < ntile ? t : 0, m, ai, aj);
      const int bi = b0 + ai, bj = b0 + aj;
      cpo[it] = (8 * bi + fr) * LD + 8 * bj + 2 * fq;
      c0[it] = Gs[cpo[it]];
      c1[it] = Gs[cpo[it] + 1];
      CQ_UNROLL
      for (int s = 0; s < CB / 4; ++s) {
        fa[it][s] = -M12[(4 * s + fq) * LD + 8 * bi + fr];
        fb[it][s] = Gs[(j0 + 4 * s + fq) * LD + 8 * bj + fr];
      }
    }
    CQ_UNROLL
    for (int s = 0; s < CB / 4; ++s)
      CQ_UNROLL
      for (int it = 0; it < TPW; ++it)
        if (8 * it < ntile)
          cq_mma884(c0[it], c1[it], fa[it][s], fb[it][s], lane);
    CQ_UNROLL
    for (int it = 0; it < TPW; ++it)
      if (wp + 8 * it < ntile) {
        Gs[cpo[it]] = c0[it];
        Gs[cpo[it] + 1] = c1[it];
      }
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
// the factor's rows, U (unscaled), back into the registers
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v)
    gr[u][v] = Gs[(BS * ti + u) * LD + BS * tk + v];
// The first bad pivot, unless an earlier test failed (fail is the same in
// every thread): each warp reads all of them (two a lane at most) and
// takes the least index, so no barrier is needed.
// (A compile-time trip count, the same in every lane, so that the warp
// reaches simd_min together: it reduces over the active lanes.)
if (fail == 0) {
  int first = NC;
  CQ_UNROLL
  for (int j0 = 0; j0 < NC; j0 += 32) {
    const int j = j0 + tid % 32;
    if (j < n && !(sq[j] >= CQ_PIVOT_MIN && sq[j] <= CQ_PIVOT_MAX))
      first = min(first, j);
  }
  first = simd_min(first);
  if (first < n)
    fail = PASS * 1000 + first + 1;
}
// 1 / sqrt(pivot): the rows are scaled by products, an IEEE division a
// row here rather than one per entry below
if (tid < n && fail == 0)
  rsq[tid] = 1.0 / sqrt(sq[tid]);
threadgroup_barrier(mem_flags::mem_threadgroup);
// R_k: R(i, k) = G(i, k) / sqrt(pivot i) (times rsq[i]), rounded to T
// (the values the solves use) and kept in Gs as float64 for the product;
// factor PASS-1 of Rt by columns. A failed matrix gets the identity
// (harmless: the fallback redoes it).
device T* rt = Rt + ((int64_t)b * 3 + (PASS - 1)) * NC * NC;
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v) {
    const int i = BS * ti + u, k = BS * tk + v;
    double w = 0.0;
    if (i <= k && k < n)
      w = fail != 0 ? (i == k ? 1.0 : 0.0) : (double)T(gr[u][v] * rsq[i]);
    Gs[i * LD + k] = w;
  }
threadgroup_barrier(mem_flags::mem_threadgroup);
// Rt's factor, rt[k NC + i] = R(i, k) above the diagonal and 1 / R(k, k)
// on it, and pass 1's Rout = R_1, stored from Gs at consecutive addresses
// (a warp's store is 128 or 256 contiguous bytes): each thread storing
// its own 4 x 4 block put every lane of a store in its own sector, and
// those 2 x 16 scattered stores a thread were ~11,000 cycles of pass 1
// (Nsight: drain and lg stalls at the exit, H200).
CQ_UNROLL
for (int q = 0; q < NC * NC / CQ_THREADS; ++q) {
  const int e = q * CQ_THREADS + tid, k = e / NC, i = e % NC;
  const double w = Gs[i * LD + k];
  rt[e] = i < k ? T(w) : (i == k && k < n ? T(1.0 / w) : T(0));
  if (PASS == 1)
    Rout[(int64_t)b * NC * NC + e] = Gs[k * LD + i]; // (row k, column i)
}
// (fail is the same in every thread, so is done2)
const bool done2 = near && fail == 0;
if (tid == 0 && flag0 == 0)
  flag[b] = fail;
if (PASS == 2 && tid == 0)
  Stage[b] = done2 && flag0 == 0 ? 2 : 0;
// Rout = R_PASS Rin (upper triangular times upper triangular, float64):
// warp w computes an 8-row strip sp of the product as 8 x 8 tiles (sp,
// bj), bj >= sp, in steps of 4 of the inner index l in [8 sp, 8 bj + 8)
// (the triangles' zeros bound the sums), each step an m8n8k4 product
// (cq_mma884: the float64 tensor cores on CUDA, twice the FMA pipe's rate
// and one instruction for 256 FMAs). Strip sp costs (NBT - sp) (NBT + 1
// - sp) steps (72 ... 2 at NC 64); warps w and w + 4 share a scheduler,
// so at NC 64 they take strips w and 7 - w (74 / 62 / 54 / 50 steps a
// scheduler; strips in warp order: 92 at most). The warp's A operands,
// R_PASS(8 sp + r, l), are taken from Gs into registers; Gs then holds
// Rin (staged from the registers rv, loaded at the start; rows of LD =
// NC + 4, so each half-warp's B operands hit distinct banks). The loop
// before summed BS x BS register blocks over l, 16 rows of Rin at a
// time, a barrier pair per 16 rows: at NC 64 its busiest scheduler
// issued 64 steps of 16 DFMAs (~2,000 cycles) behind 8 barriers; now 74
// m8n8k4 (~550 cycles at ~7.4 each, the H100's float64 tensor rate)
// behind 2 (estimated; not measured apart: passes 2 and 3, which have the
// product, went 24.6 / 24.3 -> 19.2 / 19.7 us with the whole change, H200).
// Pass 1 has no product: Rout is R_1.
constexpr int NBT = NC / 8, NKS = NC / 4;
static_assert(NBT <= CQ_THREADS / 32, "cq_chol's tiles");
const int sp = NBT == 8 && wp >= 4 ? 11 - wp : wp; // the warp's strip
double acc[NBT][2];
CQ_UNROLL
for (int bj = 0; bj < NBT; ++bj) {
  acc[bj][0] = 0.0;
  acc[bj][1] = 0.0;
}
if (PASS > 1) {
  double af[NKS];
  CQ_UNROLL
  for (int s = 0; s < NKS; ++s)
    af[s] = sp < NBT ? Gs[(8 * sp + fr) * LD + 4 * s + fq] : 0.0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  CQ_UNROLL
  for (int c = 0; c < RCH; ++c)
    CQ_UNROLL
    for (int q = 0; q < BS; ++q) {
      const int e = (c * BS + q) * CQ_THREADS + tid; // Rin(e / NC, e % NC)
      Gs[(e / NC) * LD + e % NC] = rv[PASS > 1 ? c * BS + q : 0];
    }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sp < NBT)
    CQ_UNROLL
    for (int s = 0; s < NKS; ++s)
      if (4 * s >= 8 * sp)
        CQ_UNROLL
        for (int bj = 0; bj < NBT; ++bj)
          if (bj >= sp && 4 * s < 8 * bj + 8)
            cq_mma884(acc[bj][0], acc[bj][1], af[s],
                      Gs[(4 * s + fq) * LD + 8 * bj + fr], lane);
}
if (PASS > 1 && sp < NBT) {
  const int i = 8 * sp + fr;
  CQ_UNROLL
  for (int bj = 0; bj < NBT; ++bj)
    CQ_UNROLL
    for (int x = 0; x < 2; ++x) {
      const int k = 8 * bj + 2 * fq + x;
      const double w = i <= k && k < n ? acc[bj][x] : 0.0;
      if (PASS < 3)
        Rout[((int64_t)b * NC + i) * NC + k] = w;
      if ((PASS == 3 || done2) && i < n && k < n)
        R[((int64_t)b * n + i) * n + k] = T(w);
    }
}
