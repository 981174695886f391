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
//   cq_gram   pass 1: every threadgroup takes a run of row tiles of A and
//             accumulates their Gram partial in float64.
//   cq_first  pass 2: X_1 = A R_1^-1 row by row, written to Q, and its
//             Gram partials.
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

// One threadgroup's share of a pass (see the top of the file): row tiles
// [t0, t1) of matrix b of X (A, or Q itself, read in place); with SOLVE
// the factor rt solved into every row, with GRAM the Gram partial p of b
// into Part, with WRITE the rows into Q. smem: the tile, reused for the
// slices' sum at the end. Each tile is read whole before any of its rows
// is written, and only this threadgroup touches its tiles, so X may be Q.
template <typename T, typename TT, int NC, bool SOLVE, bool GRAM,
          bool WRITE>
inline void cq_pass(const device T* X, const constant int* X_shape,
                    const constant int64_t* X_strides, int X_ndim,
                    const device T* rt, device double* Part, device T* Q,
                    uint b, uint p, uint P, int tid, threadgroup double* smem) {
  constexpr int TR = cq_tile_rows<NC, TT>();
  constexpr int LD = NC + 1;
  constexpr int NB = NC / 4;
  constexpr int NBLK = NB * (NB + 1) / 2;
  constexpr int NSL = CQ_THREADS / NBLK;
  constexpr int E = NBLK * 16;
  constexpr int RSTEP = CQ_THREADS / NC;
  constexpr int LPT = TR * NC / CQ_THREADS;
  static_assert(NSL >= 1 && LPT * CQ_THREADS == TR * NC, "tile shape");
  static_assert(TR <= CQ_THREADS, "a thread per tile row");
  static_assert(NBLK * 16 <= cq_smem_doubles<NC, TT>(), "sums fit");
  threadgroup TT* tile = (threadgroup TT*)smem;
  const int m = X_shape[X_ndim - 2], n = X_shape[X_ndim - 1];
  const int64_t rs = X_strides[X_ndim - 2], cs = X_strides[X_ndim - 1];
  const device T* a = X + cq_batch_offset(b, X_shape, X_strides, X_ndim);
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
      tile[(lr + k * RSTEP) * LD + lc] =
          row < m && lc < n ? (TT)a[(int64_t)row * rs + lc * cs] : TT(0);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (SOLVE) {
      if (tid < TR) {
        T x[NC];
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          x[c] = T(tile[tid * LD + c]);
        cq_solve<T, NC>(x, rt);
        CQ_UNROLL
        for (int c = 0; c < NC; ++c)
          tile[tid * LD + c] = (TT)x[c];
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (GRAM && sl < NSL) {
      for (int r = sl; r < TR; r += NSL) {
        const threadgroup TT* row = tile + r * LD;
        double xi[4], xj[4];
        CQ_UNROLL
        for (int e = 0; e < 4; ++e) {
          xi[e] = (double)row[4 * bi + e];
          xj[e] = (double)row[4 * bj + e];
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
              T(tile[(lr + k * RSTEP) * LD + lc]);
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

// Factor k of matrix b in Rt (batch x 3 x NC x NC).
template <typename T, int NC>
inline const device T* cq_factor(const device T* Rt, uint b, int k) {
  return Rt + ((int64_t)b * 3 + k) * NC * NC;
}

//@kernel cq_gram
// Pass 1's Gram partials, of A itself, for every threadgroup: Part is
// batch x P x E (E = NBLK * 16), P = the threadgroups per matrix (grid.x
// = 256 P), matrices along grid.y from g0. Template: T, NC (16, 32, 64).
threadgroup double smem[cq_smem_doubles<NC, double>()];
cq_pass<T, double, NC, false, true, false>(
    A, A_shape, A_strides, A_ndim, (const device T*)nullptr, Part,
    (device T*)nullptr, (uint)g0 + threadgroup_position_in_grid.y,
    threadgroup_position_in_grid.x, threadgroups_per_grid.x,
    (int)thread_index_in_threadgroup, smem);

//@kernel cq_first
// Pass 2's rows: Q = X_1 = A R_1^-1 (factor 0 of Rt, batch x 3 x NC x NC,
// see cq_solve), written, and the Gram partials of X_1 into Part (the
// layout of cq_gram). Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
cq_pass<T, T, NC, true, true, true>(
    A, A_shape, A_strides, A_ndim, cq_factor<T, NC>(Rt, b, 0), Part, Q, b,
    threadgroup_position_in_grid.x, threadgroups_per_grid.x,
    (int)thread_index_in_threadgroup, smem);

//@kernel cq_next
// Pass 3's rows: Q = X_2 = X_1 R_2^-1 in place (factor 1 of Rt; Qin is Q,
// bound for its shape), and the Gram partials of X_2 into Part.
// Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
cq_pass<T, T, NC, true, true, true>(
    (const device T*)Q, Qin_shape, Qin_strides, Qin_ndim,
    cq_factor<T, NC>(Rt, b, 1), Part, Q, b, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, (int)thread_index_in_threadgroup, smem);

//@kernel cq_last
// The result: Q = X_3 = X_2 R_3^-1 in place (factor 2 of Rt; Qin is Q,
// bound for its shape). Template: T, NC.
threadgroup double smem[cq_smem_doubles<NC, T>()];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
cq_pass<T, T, NC, true, false, true>(
    (const device T*)Q, Qin_shape, Qin_strides, Qin_ndim,
    cq_factor<T, NC>(Rt, b, 2), (device double*)nullptr, Q, b,
    threadgroup_position_in_grid.x, threadgroups_per_grid.x,
    (int)thread_index_in_threadgroup, smem);

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
//
// Thread (ti, tk) of a 16 x 16 grid keeps the BS x BS block (BS = NC /
// 16) at rows BS ti, columns BS tk of the matrix in registers, so a step
// of the right-looking Cholesky is one barrier and BS^2 FMAs a thread:
// the owners of pivot row j publish it (double-buffered, so one barrier a
// step suffices), and everyone updates its block with it.
constexpr int LD = NC + 1, NB = NC / 4, E = NB * (NB + 1) / 2 * 16;
constexpr int BS = NC / 16;
static_assert(BS * 16 == NC && CQ_THREADS == 256, "cq_chol's thread grid");
threadgroup double Gs[NC * LD];
threadgroup double srow[2 * NC];
threadgroup double sq[NC];
threadgroup double red[CQ_THREADS / 32];
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int n = Rsh_shape[Rsh_ndim - 1];
const int ti = tid / 16, tk = tid % 16;
const device double* g = G + (int64_t)b * E;
for (int e = tid; e < E; e += CQ_THREADS) {
  int bi = 0, bj = 0;
  cq_block(e / 16, NB, bi, bj);
  const int i = 4 * bi + (e % 16) / 4, j = 4 * bj + e % 4;
  if (i <= j)
    Gs[i * LD + j] = g[e];
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
if (PASS == 1) {
  double tr = 0.0;
  for (int j = 0; j < n; ++j)
    tr += Gs[j * LD + j];
  if (!(tr > 0.0) || !isfinite(tr))
    fail = PASS * 1000;
  CQ_UNROLL
  for (int u = 0; u < BS; ++u)
    if (ti == tk && BS * ti + u < n)
      gr[u][u] += shift * tr;
} else if (PASS == 3) {
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
  if (!(tot <= 0.25))
    fail = PASS * 1000;
}
// Right-looking, one barrier per column: step j updates the rows below j
// with row j (unscaled) over the pivot d = G(j, j); row j itself is only
// read, and scaled once at the end by sqrt(d) (d kept in sq, its square
// root taken after the loop: the steps are a chain of latencies, so each
// keeps only what the next one needs). The steps run in blocks of BS so
// that the pivot row's registers are indexed by constants.
bool done = fail != 0;
for (int jb = 0; jb < 16 && !done; ++jb) {
  CQ_UNROLL
  for (int jj = 0; jj < BS; ++jj) {
    const int j = BS * jb + jj;
    if (done || j >= n) {
      done = true;
      break;
    }
    threadgroup double* row = srow + (j % 2) * NC;
    if (ti == jb)
      CQ_UNROLL
      for (int v = 0; v < BS; ++v)
        row[BS * tk + v] = gr[jj][v];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const double d = row[j];
    if (!(d > 0.0) || !isfinite(d)) {
      fail = PASS * 1000 + j + 1;
      done = true;
      break;
    }
    if (tid == 0)
      sq[j] = d;
    const double inv = 1.0 / d;
    double ri[BS], rk[BS];
    CQ_UNROLL
    for (int u = 0; u < BS; ++u) {
      ri[u] = row[BS * ti + u] * inv;
      rk[u] = row[BS * tk + u];
    }
    CQ_UNROLL
    for (int u = 0; u < BS; ++u)
      if (BS * ti + u > j)
        CQ_UNROLL
        for (int v = 0; v < BS; ++v)
          gr[u][v] = fma(-ri[u], rk[v], gr[u][v]);
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid < n && fail == 0)
  sq[tid] = sqrt(sq[tid]);
threadgroup_barrier(mem_flags::mem_threadgroup);
// R_k: R(i, k) = G(i, k) / sqrt(pivot i), rounded to T (the values the
// solves use) and kept in Gs as float64 for the product; factor PASS-1 of
// Rt by columns. A failed matrix gets the identity (harmless: the
// fallback redoes it).
device T* rt = Rt + ((int64_t)b * 3 + (PASS - 1)) * NC * NC;
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v) {
    const int i = BS * ti + u, k = BS * tk + v;
    double w = 0.0;
    if (i <= k && k < n)
      w = fail != 0 ? (i == k ? 1.0 : 0.0) : (double)T(gr[u][v] / sq[i]);
    Gs[i * LD + k] = w;
    // rt[k NC + i] = R(i, k) above the diagonal, 1 / R(k, k) on it
    rt[k * NC + i] = i < k ? T(w) : (i == k && k < n ? T(1.0 / w) : T(0));
  }
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid == 0) {
  if (PASS == 1)
    flag[b] = fail;
  else if (flag[b] == 0)
    flag[b] = fail;
}
// The product R_PASS Rin (upper triangular times upper triangular): each
// thread its block, R's rows from Gs, Rin's columns from memory.
const device double* rin = Rin + (int64_t)b * NC * NC;
double pr[BS][BS];
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v)
    pr[u][v] = PASS == 1 ? Gs[(BS * ti + u) * LD + BS * tk + v] : 0.0;
if (PASS > 1 && ti <= tk) {
  for (int l = BS * ti; l < min(n, BS * tk + BS); ++l) {
    double rl[BS], ri[BS];
    CQ_UNROLL
    for (int v = 0; v < BS; ++v)
      rl[v] = rin[l * NC + BS * tk + v];
    CQ_UNROLL
    for (int u = 0; u < BS; ++u)
      ri[u] = Gs[(BS * ti + u) * LD + l];
    CQ_UNROLL
    for (int u = 0; u < BS; ++u)
      CQ_UNROLL
      for (int v = 0; v < BS; ++v)
        pr[u][v] = fma(ri[u], rl[v], pr[u][v]);
  }
}
CQ_UNROLL
for (int u = 0; u < BS; ++u)
  CQ_UNROLL
  for (int v = 0; v < BS; ++v) {
    const int i = BS * ti + u, k = BS * tk + v;
    const double w = i <= k && k < n ? pr[u][v] : 0.0;
    if (PASS < 3)
      Rout[((int64_t)b * NC + i) * NC + k] = w;
    else if (i < n && k < n)
      R[((int64_t)b * n + i) * n + k] = T(w);
  }
