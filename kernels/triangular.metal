// kiln's triangular-solve kernels (driver: src/linalg/triangular.c).
//
// Every solve kernel works on the *effective lower* matrix: op(A) = A or
// A^T is lower triangular when UPPER == TRANS and is solved by forward
// substitution; otherwise it is upper triangular, and reversing both of its
// indices (i -> n-1-i, with negative strides) together with the rows of B
// makes it lower again. So one forward-substitution code path serves all
// four (UPPER, TRANS) cases, reading A in place through its strides. In the
// comments, M is that effective lower matrix and "effective rows" count in
// its order. Only the named triangle of A is read; with UNIT the diagonal
// is taken as ones and never read.
//
// Paths (see the driver for when each runs):
//   subst    trsm_subst: one thread per right-hand side, plain substitution
//            through global memory (small or forced problems).
//   blocked  trsm_diag_inv inverts every NB x NB diagonal block of M into a
//            workspace W (one launch for all blocks). Then per block step j:
//            few right-hand sides, per step of SUB blocks: trsm_xsolve
//            solves the step's rows once, in place (a few threadgroups),
//            then trsm_update applies B_rest -= M[rest, step] X_step with
//            many threadgroups streaming M (two short launches a step);
//            many: trsm_apply (X_j = W_j B_j in place) and the driver's
//            GEMM for the update.
// Batch entries run along grid.y from batch0 (the driver splits larger
// batches over several launches); a 2-D A serves every entry of B.
#include <metal_stdlib>
using namespace metal;

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order; a plain matrix (ndim 2) is shared by every entry.
inline int64_t tri_batch_offset(uint b, const constant int* shape,
                                const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// The effective lower matrix M of one n x n view: element (i, j) of M is
// at base + i * r + j * c (base relative to the matrix's first element).
struct tri_eff {
  int64_t base, r, c;
};

inline tri_eff tri_effective(int n, int64_t row_stride, int64_t col_stride,
                             bool upper, bool trans) {
  tri_eff m;
  m.r = trans ? col_stride : row_stride;
  m.c = trans ? row_stride : col_stride;
  m.base = 0;
  if (upper != trans) { // op(A) is upper: reverse both indices
    m.base = (int64_t)(n - 1) * (m.r + m.c);
    m.r = -m.r;
    m.c = -m.c;
  }
  return m;
}

#if KILN_BACKEND_CUDA
// Asks L2 for the 128-byte line holding *p: a hint, nothing comes back
// and nothing waits for it.
template <typename T>
inline void tri_prefetch_l2(const device T* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
#endif

// Element e (0 .. NB * NB - 1) of a tile as (row i, column p), the order
// in which 256 threads load and store tiles. Along the columns (M's rows
// contiguous in memory): 256 consecutive elements of a row-major walk.
// Otherwise (columns contiguous) each warp takes G = NB / 8 consecutive
// rows of 256 / NB columns: G elements are one 32-byte sector of a column
// in memory, and their stores into a tile with rows padded to NB + 256 /
// NB (trsm_xsolve's) fall on distinct banks, where a warp down one
// column would hit every 8th bank only.
template <int NB>
inline void tri_tile_index(int e, bool along_cols, thread int& i,
                           thread int& p) {
  if (along_cols) {
    i = e / NB;
    p = e % NB;
  } else {
    constexpr int G = NB / 8, Q = 256 / NB;
    const int hi = e / 32;
    i = (hi % (NB / G)) * G + e % G;
    p = (hi / (NB / G)) * Q + (e / G) % Q;
  }
}

// Loads the NB x NB tile of M at effective rows r0 .., columns q0 ..
// (rows from `rows` on and columns from `cols` on read as zeros) into
// this thread's NB * NB / 256 registers; tri_tile_store puts them into
// threadgroup memory. Coalesced either way (see tri_tile_index).
template <typename T, int NB>
inline void tri_tile_load(thread T* v, const device T* a, tri_eff m,
                          bool along_cols, int r0, int rows, int q0, int cols,
                          int tid) {
  for (int u = 0; u < NB * NB / 256; ++u) {
    int i, p;
    tri_tile_index<NB>(tid + 256 * u, along_cols, i, p);
    v[u] = i < rows && p < cols
               ? a[(int64_t)(r0 + i) * m.r + (int64_t)(q0 + p) * m.c]
               : T(0);
  }
}

// Stores a tile loaded by tri_tile_load (the same along_cols) as tile[i *
// P + p].
template <typename T, int NB, int P>
inline void tri_tile_store(threadgroup T* tile, thread const T* v,
                           bool along_cols, int tid) {
  for (int u = 0; u < NB * NB / 256; ++u) {
    int i, p;
    tri_tile_index<NB>(tid + 256 * u, along_cols, i, p);
    tile[i * P + p] = v[u];
  }
}

//@kernel trsm_subst
// op(A) X = alpha B in place, one thread per column of B (grid.x >= k),
// batch entries along grid.y from batch0. Inputs A, Bin (B bound for its
// strides), alpha (0-d T), batch0; output B (the same memory as Bin).
// Template: T, UPPER, TRANS, UNIT.
const int n = Bin_shape[Bin_ndim - 2], k = Bin_shape[Bin_ndim - 1];
const int col = (int)thread_position_in_grid.x;
if (col >= k)
  return;
const uint b = (uint)batch0 + thread_position_in_grid.y;
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
int64_t br = Bin_strides[Bin_ndim - 2];
int64_t b0 = tri_batch_offset(b, Bin_shape, Bin_strides, Bin_ndim) +
             (int64_t)col * Bin_strides[Bin_ndim - 1];
if (UPPER != TRANS) {
  b0 += (int64_t)(n - 1) * br;
  br = -br;
}
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base;
device T* x = B + b0;
for (int i = 0; i < n; ++i) {
  T s = alpha * x[i * br];
  for (int p = 0; p < i; ++p)
    s = fma(-a[i * m.r + p * m.c], x[p * br], s);
  x[i * br] = UNIT ? s : s / a[i * (m.r + m.c)];
}

//@kernel trsm_diag_inv
// W = the inverses of M's diagonal blocks: block j (effective rows
// j*NB .. j*NB+nb-1, nb = min(NB, n - j*NB)) inverted into
// W[entry][j] (NB x NB, row-major, lower triangular, zeros elsewhere).
// One threadgroup of 256 threads per (block, A batch entry): grid.x = 256 *
// blocks, grid.y = A's batch entries from batch0. Inputs A, batch0;
// output W.
// Template: T, NB (32 or 64), UPPER, TRANS, UNIT.
//
// Each warp inverts whole columns: column c of M^-1 solves M x = e_c by
// column-oriented substitution, the lanes holding rows (NB / 32 rows each,
// in registers), the pivot value passed by a shuffle; the block itself
// sits in threadgroup memory (rows padded to NB + 1, so a column read hits
// distinct banks). The result is staged in threadgroup memory too, so the
// writes to W are coalesced.
constexpr int P = NB + 1;
constexpr int R = NB / 32;
threadgroup T S[NB * P];
threadgroup T Xi[NB * P];
const int n = A_shape[A_ndim - 1];
const int blk = (int)threadgroup_position_in_grid.x;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int e0 = blk * NB, nb = min(NB, n - e0);
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base + (int64_t)e0 * (m.r + m.c);
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32, warp = tid / 32;
// Threads run along whichever index of A is contiguous in memory.
const bool along_cols = abs(m.c) <= abs(m.r);
for (int e = tid; e < NB * NB; e += 256) {
  int i = along_cols ? e / NB : e % NB, j = along_cols ? e % NB : e / NB;
  T v = T(0);
  if (i < nb && j < nb) {
    if (j < i)
      v = a[(int64_t)i * m.r + (int64_t)j * m.c];
    else if (j == i)
      v = UNIT ? T(1) : a[(int64_t)i * (m.r + m.c)];
  } else if (i == j) {
    v = T(1); // padding: the identity keeps the block invertible
  }
  S[i * P + j] = v;
}
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int c = warp; c < NB; c += 8) {
  T x[R];
  for (int r = 0; r < R; ++r)
    x[r] = lane + 32 * r == c ? T(1) : T(0);
  for (int p = c; p < NB; ++p) {
    T xp = x[0];
    for (int r = 1; r < R; ++r)
      if (p / 32 == r)
        xp = x[r];
    xp = simd_shuffle(xp, (ushort)(p % 32));
    if (!UNIT)
      xp = xp / S[p * P + p];
    for (int r = 0; r < R; ++r) {
      int i = lane + 32 * r;
      if (i > p)
        x[r] = fma(-S[i * P + p], xp, x[r]);
      else if (i == p)
        x[r] = xp;
    }
  }
  for (int r = 0; r < R; ++r)
    Xi[(lane + 32 * r) * P + c] = x[r];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* w = W + ((int64_t)b * ((n + NB - 1) / NB) + blk) * (NB * NB);
for (int e = tid; e < NB * NB; e += 256) {
  int i = e / NB, j = e % NB;
  w[e] = i < nb && j < nb ? Xi[i * P + j] : T(0);
}

//@kernel trsm_xsolve
// The diagonal part of one step of the blocked solve for few right-hand
// sides: X_step = the solution of the step's rows, in place in B. A step
// covers SUB consecutive diagonal blocks of NB rows (effective rows e0 =
// step*SUB*NB .. e1-1), whose rows of B already hold every earlier step's
// update. One threadgroup of 256 threads per KT columns of B (grid.x = 256
// * column tiles), batch entries along grid.y from batch0; the step's rows
// are solved ONCE (the band updates are trsm_update's, a separate launch).
// For each block s: B_s = scale B_s - M[s, t] X_t for the blocks t < s,
// then X_s = W_s B_s (W_s the inverted diagonal block), stored into B.
// The tiles (M[s, t] and W_s, NB x NB each, one at a time in Tl) come
// through registers: the next tile's loads are issued before the current
// one's products, so global latency overlaps the arithmetic instead of
// adding to it. In a product, PQ = 256 / NB adjacent lanes share a row
// (every PQ-th column of the tile each) and hold all KT columns of B, so a
// lane reads one tile value per KT FMAs; their partial sums meet by
// shuffles. Rows of Tl are padded to NB + PQ, which puts the 32 lanes'
// tile reads on distinct banks. scale is alpha on step 0 and 1 after.
// Inputs A, W, Bin, scale (0-d T), step (0-d int), batch0; output B (Bin's
// memory). Template: T, NB, SUB, KT, UPPER, TRANS, ABATCH (A has batch
// dimensions).
constexpr int PQ = 256 / NB;  // lanes per row of a product
constexpr int P = NB + PQ;     // Tl's row stride
constexpr int PER = NB * NB / 256;
threadgroup T Tl[NB * P];
threadgroup T Bs[SUB * NB * KT]; // the step's rows of scale B
threadgroup T Xt[SUB * NB * KT];
const int n = Bin_shape[Bin_ndim - 2], k = Bin_shape[Bin_ndim - 1];
const int nblk = (n + NB - 1) / NB;
const int e0 = step * SUB * NB;
const int nsub = min(SUB, (n - e0 + NB - 1) / NB); // blocks in this step
const int c0 = (int)threadgroup_position_in_grid.x * KT;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int ri = tid / PQ, pq = tid % PQ; // a product's row and part
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base;
const bool along_cols = abs(m.c) <= abs(m.r);
int64_t br = Bin_strides[Bin_ndim - 2];
const int64_t bc = Bin_strides[Bin_ndim - 1];
int64_t boff = tri_batch_offset(b, Bin_shape, Bin_strides, Bin_ndim);
if (UPPER != TRANS) {
  boff += (int64_t)(n - 1) * br;
  br = -br;
}
device T* bm = B + boff;
const device T* wa = W + (ABATCH ? (int64_t)b : 0) * nblk * (NB * NB) +
                     (int64_t)step * SUB * (NB * NB);
tri_eff wm; // W_s as a tile: row-major NB x NB
wm.base = 0;
wm.r = NB;
wm.c = 1;
T v[PER];
// stage (s, t): the tile M[s, t] for t < s, W_s for t == s
tri_tile_load<T, NB>(v, wa, wm, true, 0, NB, 0, NB, tid);
// all of the step's rows of B at once (one latency, not one per block):
// this threadgroup writes only their X, after reading them
for (int e = tid; e < SUB * NB * KT; e += 256) {
  int i = e / KT, cc = e % KT;
  Bs[e] = e0 + i < n && c0 + cc < k
              ? scale * bm[(int64_t)(e0 + i) * br + (int64_t)(c0 + cc) * bc]
              : T(0);
}
for (int s = 0; s < nsub; ++s) {
  const int s0 = e0 + s * NB, nb = min(NB, n - s0);
  threadgroup T* bs = Bs + s * NB * KT; // block s of Bs
  for (int t = 0; t <= s; ++t) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    tri_tile_store<T, NB, P>(Tl, v, t < s ? along_cols : true, tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // issue the next stage's loads before this one's products
    const int ns = t < s ? s : s + 1, nt = t < s ? t + 1 : 0;
    if (ns < nsub) {
      if (nt < ns)
        tri_tile_load<T, NB>(v, a, m, along_cols, e0 + ns * NB,
                             min(NB, n - e0 - ns * NB), e0 + nt * NB, NB, tid);
      else
        tri_tile_load<T, NB>(v, wa + (int64_t)ns * (NB * NB), wm, true, 0,
                             NB, 0, NB, tid);
    }
    // acc = Tl[ri, :] times B_s (t == s) or X_t (t < s), over this
    // lane's columns of the tile, then summed over the PQ lanes
    const threadgroup T* rhs = t < s ? Xt + t * NB * KT : bs;
    T acc[KT];
    for (int cc = 0; cc < KT; ++cc)
      acc[cc] = T(0);
    for (int pp = 0; pp < NB / PQ; ++pp) {
      const int p = pq + PQ * pp;
      const T tv = Tl[ri * P + p];
      for (int cc = 0; cc < KT; ++cc)
        acc[cc] = fma(tv, rhs[p * KT + cc], acc[cc]);
    }
    for (int o = 1; o < PQ; o <<= 1)
      for (int cc = 0; cc < KT; ++cc)
        acc[cc] += simd_shuffle_xor(acc[cc], (ushort)o);
    // lane pq keeps the columns cc with cc % PQ == pq
    for (int cc = 0; cc < KT; ++cc) {
      if (cc % PQ != pq)
        continue;
      if (t < s) { // B_s -= M[s, t] X_t
        bs[ri * KT + cc] -= acc[cc];
      } else { // X_s = W_s B_s, into Xt and B
        Xt[(s * NB + ri) * KT + cc] = acc[cc];
        if (ri < nb && c0 + cc < k)
          bm[(int64_t)(s0 + ri) * br + (int64_t)(c0 + cc) * bc] = acc[cc];
      }
    }
  }
}
#if KILN_BACKEND_CUDA
// The next step's inverses and the lower triangle of its diagonal block
// of M are what the next trsm_xsolve loads on its chain, a tile a stage:
// asked into L2 now, they arrive while trsm_update streams M[rest, step]
// (a few MB, well under L2), so those stages wait on L2 (~0.15 us), not
// HBM (~0.35 us). The lines are split over this launch's threadgroups of
// this batch entry; runs follow M's contiguous index.
const int f0 = e0 + SUB * NB; // the next step's first effective row
if (f0 < n) {
  constexpr int L = 128 / (int)sizeof(T); // elements per line
  const int fs = min(SUB * NB, n - f0);
  const int me = (int)threadgroup_position_in_grid.x * 256 + tid;
  const int all = (int)threadgroups_per_grid.x * 256;
  const int wlen = (fs + NB - 1) / NB * (NB * NB);
  for (int e = me * L; e < wlen; e += all * L)
    tri_prefetch_l2(wa + SUB * (NB * NB) + e);
  const int chunks = fs / L + 2; // lines a run can touch
  for (int e = me; e < fs * chunks; e += all) {
    const int o = e / chunks, ch = e % chunks;
    // run o: row o's columns 0 .. o, or column o's rows o .. fs - 1
    const int lo = along_cols ? 0 : o, hi = along_cols ? o : fs - 1;
    const int x = ch == chunks - 1 ? hi : lo + ch * L;
    if (x > hi)
      continue;
    const int i = along_cols ? o : x, p = along_cols ? x : o;
    tri_prefetch_l2(a + (int64_t)(f0 + i) * m.r + (int64_t)(f0 + p) * m.c);
  }
}
#endif

//@kernel trsm_update
// The band part of one step of the blocked solve for few right-hand
// sides: B[band] = scale B[band] - M[band, step] X_step for the rows after
// the step (effective rows e1 .. n-1, e1 = min(n, e0 + S), e0 = step * S),
// X_step being the step's rows of B, which trsm_xsolve has solved. Each
// threadgroup of 256 threads owns a band of 32 rows and 16 columns of B
// (grid.x = 256 * bands, grid.y = batch entries from batch0, grid.z =
// column tiles), so many threadgroups stream M[rest, step] at once: this
// launch is bandwidth-bound, every element of M read once per column tile.
// The step's columns go by in chunks of CH = 64: a chunk of M (32 x 64)
// and of X (64 x 16) through registers into threadgroup memory, the next
// chunk's loads issued before this one's products. The 8 warps split the
// chunk's columns (8 each); a lane owns a 4 x 4 block of the band, so each
// product reads 8 values of threadgroup memory for 16 FMAs. The warps'
// partial sums are added in a fixed order at the end.
// Inputs A, Bin, scale (0-d T), step (0-d int), batch0; output B (Bin's
// memory). Template: T, S (rows per step), UPPER, TRANS.
constexpr int RB = 32, KT = 16, CH = 64, PG = 8, CP = CH / PG;
constexpr int MP = CH + 1;
constexpr int SH = RB * MP + CH * KT > PG * RB * KT ? RB * MP + CH * KT
                                                    : PG * RB * KT;
constexpr int MPER = RB * CH / 256, XPER = CH * KT / 256;
threadgroup T Sh[SH];
threadgroup T* Mb = Sh;           // RB x CH chunk of M, rows padded
threadgroup T* Xb = Sh + RB * MP; // CH x KT chunk of X
const int n = Bin_shape[Bin_ndim - 2], k = Bin_shape[Bin_ndim - 1];
const int e0 = step * S, e1 = min(n, e0 + S), sw = e1 - e0;
const int t0 = e1 + (int)threadgroup_position_in_grid.x * RB;
const int c0 = (int)threadgroup_position_in_grid.z * KT;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int pg = tid / 32, lane = tid % 32, rq = lane / 4, cq = lane % 4;
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base;
const bool along_cols = abs(m.c) <= abs(m.r);
int64_t br = Bin_strides[Bin_ndim - 2];
const int64_t bc = Bin_strides[Bin_ndim - 1];
int64_t boff = tri_batch_offset(b, Bin_shape, Bin_strides, Bin_ndim);
if (UPPER != TRANS) {
  boff += (int64_t)(n - 1) * br;
  br = -br;
}
device T* bm = B + boff;
// this thread's elements of the band, read now so their latency
// overlaps the chunks'
T own[RB * KT / 256];
for (int u = 0; u < RB * KT / 256; ++u) {
  const int e = tid + 256 * u, i = e / KT, cc = e % KT;
  own[u] = t0 + i < n && c0 + cc < k
               ? bm[(int64_t)(t0 + i) * br + (int64_t)(c0 + cc) * bc]
               : T(0);
}
T mv[MPER], xv[XPER];
T acc[4][4];
for (int r = 0; r < 4; ++r)
  for (int q = 0; q < 4; ++q)
    acc[r][q] = T(0);
const int nch = (sw + CH - 1) / CH;
for (int ch = 0; ch <= nch; ++ch) {
  if (ch > 0) { // store the chunk loaded last round
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int u = 0; u < MPER; ++u) {
      int e = tid + 256 * u;
      int i = along_cols ? e / CH : e % RB, p = along_cols ? e % CH : e / RB;
      Mb[i * MP + p] = mv[u];
    }
    for (int u = 0; u < XPER; ++u)
      Xb[tid + 256 * u] = xv[u];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (ch < nch) { // the loads of chunk ch, in flight during the products
    const int q0 = e0 + ch * CH;
    for (int u = 0; u < MPER; ++u) {
      int e = tid + 256 * u;
      int i = along_cols ? e / CH : e % RB, p = along_cols ? e % CH : e / RB;
      mv[u] = t0 + i < n && q0 + p < e1
                  ? a[(int64_t)(t0 + i) * m.r + (int64_t)(q0 + p) * m.c]
                  : T(0);
    }
    for (int u = 0; u < XPER; ++u) {
      int e = tid + 256 * u, p = e / KT, cc = e % KT;
      xv[u] = q0 + p < e1 && c0 + cc < k
                  ? bm[(int64_t)(q0 + p) * br + (int64_t)(c0 + cc) * bc]
                  : T(0);
    }
  }
  if (ch > 0)
    for (int pp = 0; pp < CP; ++pp) {
      const int p = pg * CP + pp;
      T mr[4], xq[4];
      for (int r = 0; r < 4; ++r)
        mr[r] = Mb[(rq * 4 + r) * MP + p];
      for (int q = 0; q < 4; ++q)
        xq[q] = Xb[p * KT + cq * 4 + q];
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q)
          acc[r][q] = fma(mr[r], xq[q], acc[r][q]);
    }
}
// the warps' partial sums, added in warp order
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int r = 0; r < 4; ++r)
  for (int q = 0; q < 4; ++q)
    Sh[pg * (RB * KT) + (rq * 4 + r) * KT + cq * 4 + q] = acc[r][q];
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int u = 0; u < RB * KT / 256; ++u) {
  const int e = tid + 256 * u, i = e / KT, cc = e % KT;
  if (t0 + i >= n || c0 + cc >= k)
    continue;
  T sum = T(0);
  for (int g = 0; g < PG; ++g)
    sum += Sh[g * (RB * KT) + e];
  bm[(int64_t)(t0 + i) * br + (int64_t)(c0 + cc) * bc] = scale * own[u] - sum;
}

//@kernel trsm_apply
// X_j = W_j (scale B_j) in place on the rows of block step j (effective
// rows step*NB ..), for the many-right-hand-side path, whose update is a
// GEMM. One threadgroup of 256 threads per KT columns of B (grid.x = 256 *
// column tiles), batch entries along grid.y from batch0. Inputs W, Bin,
// scale (0-d T), step (0-d int), batch0; output B (Bin's memory).
// Template: T, NB, KT, UPPER, TRANS, ABATCH.
constexpr int P = NB + 1;
threadgroup T Ws[NB * P];
threadgroup T Bs[NB * KT];
const int n = Bin_shape[Bin_ndim - 2], k = Bin_shape[Bin_ndim - 1];
const int e0 = step * NB, nb = min(NB, n - e0);
const int c0 = (int)threadgroup_position_in_grid.x * KT;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
int64_t br = Bin_strides[Bin_ndim - 2];
const int64_t bc = Bin_strides[Bin_ndim - 1];
int64_t boff = tri_batch_offset(b, Bin_shape, Bin_strides, Bin_ndim);
if (UPPER != TRANS) {
  boff += (int64_t)(n - 1) * br;
  br = -br;
}
device T* bm = B + boff;
const device T* wj = W + ((ABATCH ? (int64_t)b : 0) * ((n + NB - 1) / NB) +
                          step) * (NB * NB);
for (int e = tid; e < NB * NB; e += 256)
  Ws[(e / NB) * P + e % NB] = wj[e];
for (int e = tid; e < NB * KT; e += 256) {
  int i = e / KT, c = e % KT;
  Bs[e] = i < nb && c0 + c < k
              ? scale * bm[(int64_t)(e0 + i) * br + (int64_t)(c0 + c) * bc]
              : T(0);
}
threadgroup_barrier(mem_flags::mem_threadgroup);
const int c = tid % KT, i0 = tid / KT;
if (c0 + c >= k)
  return;
for (int r = 0; r < NB / (256 / KT); ++r) {
  int i = i0 + r * (256 / KT);
  if (i >= nb)
    break;
  T s = T(0);
  for (int p = 0; p <= i; ++p)
    s = fma(Ws[i * P + p], Bs[p * KT + c], s);
  bm[(int64_t)(e0 + i) * br + (int64_t)(c0 + c) * bc] = s;
}

//@kernel tri_copy
// Dst = Src, matrix by matrix (Src may be 2-D: the same matrix for every
// batch entry of Dst). Either may be a strided view. One thread per
// element: grid.x over columns, grid.y batch entries from batch0, grid.z
// over rows. Inputs Src, Dstin (Dst, for its strides), batch0; output Dst.
// Template: T.
const int cols = Dstin_shape[Dstin_ndim - 1];
const int j = (int)thread_position_in_grid.x;
if (j >= cols)
  return;
const int i = (int)thread_position_in_grid.z;
const uint b = (uint)batch0 + thread_position_in_grid.y;
const int64_t s = tri_batch_offset(b, Src_shape, Src_strides, Src_ndim) +
                  (int64_t)i * Src_strides[Src_ndim - 2] +
                  (int64_t)j * Src_strides[Src_ndim - 1];
const int64_t d = tri_batch_offset(b, Dstin_shape, Dstin_strides,
                                   Dstin_ndim) +
                  (int64_t)i * Dstin_strides[Dstin_ndim - 2] +
                  (int64_t)j * Dstin_strides[Dstin_ndim - 1];
Dst[d] = Src[s];

//@kernel tri_eye
// X = the identity, every matrix of the contiguous X (n x n). Grid as
// tri_copy. Inputs Xin (X, for its shape), batch0; output X. Template: T.
const int n = Xin_shape[Xin_ndim - 1];
const int j = (int)thread_position_in_grid.x;
if (j >= n)
  return;
const int i = (int)thread_position_in_grid.z;
const uint b = (uint)batch0 + thread_position_in_grid.y;
X[((int64_t)b * n + i) * n + j] = i == j ? T(1) : T(0);

//@kernel tri_mirror
// Makes every matrix of the contiguous X exactly symmetric by copying its
// lower triangle onto the upper one (each thread writes an element above
// the diagonal and reads only below it, so in place is safe). Grid as
// tri_copy. Inputs Xin, batch0; output X. Template: T.
const int n = Xin_shape[Xin_ndim - 1];
const int j = (int)thread_position_in_grid.x;
const int i = (int)thread_position_in_grid.z;
if (j >= n || j <= i)
  return;
const uint b = (uint)batch0 + thread_position_in_grid.y;
device T* x = X + (int64_t)b * n * n;
x[(int64_t)i * n + j] = x[(int64_t)j * n + i];

//@kernel tri_diag_check
// info[b] = 1 + the first index i with A[i][i] == 0 in matrix b, or 0
// (LAPACK's trtrs info). One warp per matrix: grid.x = 32, grid.y = A's
// batch entries from batch0. Inputs A, batch0; output info. Template: T.
const int n = A_shape[A_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int lane = (int)thread_index_in_simdgroup;
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim);
const int64_t d = A_strides[A_ndim - 2] + A_strides[A_ndim - 1];
int first = n;
for (int i = lane; i < n; i += 32)
  if (a[(int64_t)i * d] == T(0)) {
    first = i;
    break;
  }
first = simd_min(first);
if (lane == 0)
  info[b] = first < n ? first + 1 : 0;

//@kernel tri_iota
// steps[i] = i: the block-step indices, passed to the step kernels as 0-d
// views (so no scalar needs filling per step). Grid.x = the length.
steps[thread_position_in_grid.x] = (int)thread_position_in_grid.x;
