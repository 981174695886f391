// kiln's shifted CholeskyQR3 kernels (driver: src/linalg/cholqr.c), the
// bandwidth-speed path of tall-skinny QR: three CholeskyQR passes, each a
// Gram matrix G = X^T X of the current rows X, a Cholesky factor R of it,
// and X R^-1 as the next rows. The first pass shifts its Gram (G + s I)
// so that the Cholesky factorization cannot break down on an
// ill-conditioned A (Fukaya et al., 2020); the next two are plain
// CholeskyQR2 and restore orthogonality. R = R3 R2 R1.
//
// The m x n rows are never written between passes: pass k reads A again
// and recomputes X_k = ((A R1^-1) R2^-1) ... from it in registers (row by
// row forward substitution), the same code in every kernel, with explicit
// fma, so each recomputation is bitwise the one the previous pass saw.
// That trades a few flops for memory traffic: 4 reads of A and 1 write of
// Q in all (3 reads for R only).
//
// Kernels:
//   cq_gram   every threadgroup takes a run of row tiles of one matrix,
//             solves NS factors into each tile's rows and accumulates
//             their Gram partial in float64; one partial per threadgroup.
//   cq_reduce sums the partials of each matrix (in a fixed order, so the
//             result does not depend on scheduling).
//   cq_chol   one threadgroup per matrix: Cholesky of the n x n Gram in
//             float64 (pass 1 with the shift), the factor for the next
//             solves, the product R_k ... R_1, and the breakdown flag.
//   cq_q      the final rows Q = X_3, written.
//
// Gram precision: products of float32 values are exact in float64, so the
// float32 path's Gram carries only float64 rounding; the float64 path
// relies on the shift alone. Gram blocks: thread `blk` of a slice owns the
// 4 x 4 block (bi, bj), bi <= bj, of the upper triangle (NBLK blocks), and
// the slices of a threadgroup take turns over the tile's rows. A Gram
// (partial or summed) is stored by blocks: entry blk * 16 + 4 a + c is
// G(4 bi + a, 4 bj + c).
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define CQ_UNROLL _Pragma("unroll")
#else
#define CQ_UNROLL
#endif

// Threads of cq_gram, cq_q and cq_chol groups.
#define CQ_THREADS 256

// Rows of a tile: the tile is held in float64 (converted once on load, so
// that the Gram's inner loop converts nothing), NC + 1 doubles a row
// (odd, so a thread per row reads without bank conflicts), about 34 KB.
template <int NC>
constexpr int cq_tile_rows() {
  return NC <= 16 ? 256 : (NC <= 32 ? 128 : 64);
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

// The 4 x 4 block (bi, bj), bi <= bj, of the upper triangle numbered
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
// dependency chain; the order is fixed, so every kernel gets the same bits.
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

// One threadgroup's share of a pass (see the top of the file): row tiles
// [t0, t1) of matrix b; NS solves (factors 0 .. NS-1 of Rt); with GRAM the
// Gram partial p of b into Part, with WRITE the rows into Q. smem: the
// tile, reused for the slices' sum at the end.
template <typename T, int NC, int NS, bool GRAM, bool WRITE>
inline void cq_pass(const device T* A, const constant int* A_shape,
                    const constant int64_t* A_strides, int A_ndim,
                    const device T* Rt, device double* Part, device T* Q,
                    uint b, uint p, uint P, int tid, threadgroup double* smem) {
  constexpr int TR = cq_tile_rows<NC>();
  constexpr int LD = NC + 1;
  constexpr int NB = NC / 4;
  constexpr int NBLK = NB * (NB + 1) / 2;
  constexpr int NSL = CQ_THREADS / NBLK;
  constexpr int E = NBLK * 16;
  constexpr int RSTEP = CQ_THREADS / NC;
  constexpr int LPT = TR * NC / CQ_THREADS;
  static_assert(NSL >= 1 && LPT * CQ_THREADS == TR * NC, "tile shape");
  static_assert(TR <= CQ_THREADS, "a thread per tile row");
  const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
  const int64_t rs = A_strides[A_ndim - 2], cs = A_strides[A_ndim - 1];
  const device T* a = A + cq_batch_offset(b, A_shape, A_strides, A_ndim);
  const device T* rt = Rt + (int64_t)b * 3 * NC * NC;
  const int tiles = (m + TR - 1) / TR;
  const int per = (tiles + (int)P - 1) / (int)P;
  const int t0 = (int)p * per, t1 = min(tiles, t0 + per);
  const int sl = tid / NBLK, blk = tid % NBLK;
  int bi = 0, bj = 0;
  cq_block(blk, NB, bi, bj);
  const int lc = tid % NC, lr = tid / NC;

  double acc[16];
  CQ_UNROLL
  for (int e = 0; e < 16; ++e)
    acc[e] = 0.0;

  for (int t = t0; t < t1; ++t) {
    const int r0 = t * TR;
    threadgroup_barrier(mem_flags::mem_threadgroup); // tile free again
    CQ_UNROLL
    for (int k = 0; k < LPT; ++k) {
      const int row = r0 + lr + k * RSTEP;
      smem[(lr + k * RSTEP) * LD + lc] =
          row < m && lc < n ? (double)a[(int64_t)row * rs + lc * cs] : 0.0;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (NS > 0) {
      if (tid < TR) {
        T x[NC];
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          x[c] = T(smem[tid * LD + c]);
        CQ_UNROLL
        for (int k = 0; k < NS; ++k)
          cq_solve<T, NC>(x, rt + k * NC * NC);
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          smem[tid * LD + c] = (double)x[c];
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (GRAM && sl < NSL) {
      for (int r = sl; r < TR; r += NSL) {
        const threadgroup double* row = smem + r * LD;
        double xi[4], xj[4];
        CQ_UNROLL
        for (int e = 0; e < 4; ++e) {
          xi[e] = row[4 * bi + e];
          xj[e] = row[4 * bj + e];
        }
        CQ_UNROLL
        for (int u = 0; u < 4; ++u)
          CQ_UNROLL
          for (int v = 0; v < 4; ++v)
            acc[4 * u + v] = fma(xi[u], xj[v], acc[4 * u + v]);
      }
    }
    if (WRITE) {
      CQ_UNROLL
      for (int k = 0; k < LPT; ++k) {
        const int row = r0 + lr + k * RSTEP;
        if (row < m && lc < n)
          Q[((int64_t)b * m + row) * n + lc] =
              T(smem[(lr + k * RSTEP) * LD + lc]);
      }
    }
  }
  if (!GRAM)
    return;
  // The slices' sums, added in slice order (deterministic), then stored.
  for (int s = 0; s < NSL; ++s) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (sl == s)
      CQ_UNROLL
      for (int e = 0; e < 16; ++e)
        smem[blk * 16 + e] = s == 0 ? acc[e] : smem[blk * 16 + e] + acc[e];
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  device double* part = Part + ((int64_t)b * P + p) * E;
  for (int e = tid; e < E; e += CQ_THREADS)
    part[e] = smem[e];
}

//@kernel cq_gram
// The Gram partials of X_NS (A with NS factors solved in) for every
// threadgroup: Part is batch x P x E (E = NBLK * 16), P = the threadgroups
// per matrix (grid.x = 256 P), matrices along grid.y from g0. Rt: batch x
// 3 x NC x NC (see cq_solve). Template: T, NC (16, 32, 64), NS (0..2).
threadgroup double smem[cq_tile_rows<NC>() * (NC + 1)];
cq_pass<T, NC, NS, true, false>(
    A, A_shape, A_strides, A_ndim, Rt, Part, (device T*)nullptr,
    (uint)g0 + threadgroup_position_in_grid.y, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, (int)thread_index_in_threadgroup, smem);

//@kernel cq_q
// Q = X_3 (A with the three factors solved in), batch x m x n contiguous;
// the layout of cq_gram. Template: T, NC.
threadgroup double smem[cq_tile_rows<NC>() * (NC + 1)];
cq_pass<T, NC, 3, false, true>(
    A, A_shape, A_strides, A_ndim, Rt, (device double*)nullptr, Q,
    (uint)g0 + threadgroup_position_in_grid.y, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, (int)thread_index_in_threadgroup, smem);

//@kernel cq_reduce
// G (batch x E) = the sum over p of Part (batch x P x E), p in order. A
// threadgroup of 256 sums 32 entries: lane = entry, 8 warps = 8 slices of
// the partials, whose sums are added in slice order. grid.x = 256 *
// ceil(E / 32), matrices along grid.y from g0.
threadgroup double red[256];
const int P = Part_shape[1], E = Part_shape[2];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int e = (int)threadgroup_position_in_grid.x * 32 + tid % 32;
const int slice = tid / 32;
double s = 0.0;
if (e < E) {
  const device double* src = Part + (int64_t)b * P * E + e;
  for (int p = slice; p < P; p += 8)
    s += src[(int64_t)p * E];
}
red[tid] = s;
threadgroup_barrier(mem_flags::mem_threadgroup);
if (slice == 0 && e < E) {
  double t = red[tid];
  for (int k = 1; k < 8; ++k)
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
// passes only turn 0 into non-zero: PASS * 1000 + j + 1 when pivot j is
// not positive and finite, PASS * 1000 when the trace is not (pass 1) or
// when the last Gram is far from I (||G_3 - I||_F > 1/2, pass 3: X_2 was
// not orthogonal enough for one more pass to finish the job). Rin is not
// read in pass 1. Rsh is R, bound for its shape.
threadgroup double Gs[NC * (NC + 1)];
threadgroup double red[CQ_THREADS];
threadgroup double sq[NC];
constexpr int LD = NC + 1, NB = NC / 4, E = NB * (NB + 1) / 2 * 16;
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int n = Rsh_shape[Rsh_ndim - 1];
const device double* g = G + (int64_t)b * E;
for (int e = tid; e < E; e += CQ_THREADS) {
  int bi = 0, bj = 0;
  cq_block(e / 16, NB, bi, bj);
  const int i = 4 * bi + (e % 16) / 4, j = 4 * bj + e % 4;
  if (i <= j)
    Gs[i * LD + j] = g[e];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
int fail = 0;
if (PASS == 1) {
  double tr = 0.0;
  for (int j = 0; j < n; ++j)
    tr += Gs[j * LD + j];
  if (!(tr > 0.0) || !isfinite(tr))
    fail = PASS * 1000;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (tid < n)
    Gs[tid * LD + tid] += shift * tr;
} else if (PASS == 3) {
  double d2 = 0.0;
  for (int e = tid; e < NC * NC; e += CQ_THREADS) {
    const int i = e / NC, j = e % NC;
    if (i <= j && j < n) {
      const double v = Gs[i * LD + j] - (i == j ? 1.0 : 0.0);
      d2 += (i == j ? 1.0 : 2.0) * v * v;
    }
  }
  red[tid] = d2;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  double tot = 0.0;
  for (int k = 0; k < CQ_THREADS; ++k)
    tot += red[k];
  if (!(tot <= 0.25))
    fail = PASS * 1000;
}
threadgroup_barrier(mem_flags::mem_threadgroup);
// Right-looking, one barrier per column: step j updates the rows below j
// with row j (unscaled) over the pivot d = G(j, j); row j itself is only
// read, and scaled once at the end.
for (int j = 0; j < n && fail == 0; ++j) {
  const double d = Gs[j * LD + j];
  if (!(d > 0.0) || !isfinite(d)) {
    fail = PASS * 1000 + j + 1;
    break;
  }
  const double inv = 1.0 / d;
  for (int e = tid; e < NC * NC; e += CQ_THREADS) {
    const int i = e / NC, k = e % NC;
    if (i > j && k >= i && k < n)
      Gs[i * LD + k] = fma(-Gs[j * LD + i] * inv, Gs[j * LD + k],
                           Gs[i * LD + k]);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
// R_k: R(i, k) = G(i, k) / sqrt(pivot i), rounded to T (the values the
// solves use) and kept in Gs as float64 for the product; factor PASS-1 of
// Rt by columns. A failed matrix gets the identity (harmless: the
// fallback redoes it).
if (tid < NC)
  sq[tid] = tid < n && fail == 0 ? sqrt(Gs[tid * LD + tid]) : 1.0;
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* rt = Rt + ((int64_t)b * 3 + (PASS - 1)) * NC * NC;
for (int e = tid; e < NC * NC; e += CQ_THREADS) {
  const int i = e / NC, k = e % NC;
  double v = 0.0;
  if (i <= k && k < n)
    v = fail != 0 ? (i == k ? 1.0 : 0.0)
                  : (double)T(Gs[i * LD + k] / sq[i]);
  Gs[i * LD + k] = v;
  // rt[k NC + i] = R(i, k) above the diagonal, 1 / R(k, k) on it
  rt[k * NC + i] = i < k ? T(v) : (i == k && k < n ? T(1.0 / v) : T(0));
}
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid == 0) {
  if (PASS == 1)
    flag[b] = fail;
  else if (flag[b] == 0)
    flag[b] = fail;
}
// The product R_PASS Rin (upper triangular times upper triangular).
const device double* rin = Rin + (int64_t)b * NC * NC;
for (int e = tid; e < NC * NC; e += CQ_THREADS) {
  const int i = e / NC, k = e % NC;
  double v = 0.0;
  if (i <= k && k < n) {
    if (PASS == 1) {
      v = Gs[i * LD + k];
    } else {
      for (int l = i; l <= k; ++l)
        v = fma(Gs[i * LD + l], rin[l * NC + k], v);
    }
  }
  if (PASS < 3)
    Rout[(int64_t)b * NC * NC + e] = v;
  else if (i < n && k < n)
    R[((int64_t)b * n + i) * n + k] = T(v);
}
