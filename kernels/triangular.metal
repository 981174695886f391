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
//            workspace W (one launch for all blocks). Then
//            few right-hand sides (path 2): trsm_stepinv inverts every
//            step's S x S diagonal block (S = SUB NB) into V from W and M
//            (one launch for all steps); then one trsm_step launch a
//            step: B_rest -= M[rest, s] X_s over many threadgroups that
//            stage all of their loads at once, the first of which (the
//            next step's rows) then solve X_{s+1} = V_{s+1} B_{s+1}
//            together, waiting for each other through flags;
//            many: per block step j, trsm_apply (X_j = W_j B_j in place)
//            and the driver's GEMM for the update.
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

// Copies *src into threadgroup memory at dst, or writes 0 there when !in
// (src must still point into the array). On CUDA by cp.async: no
// register holds the value, so every copy a thread issues is in flight at
// once, whatever the register budget; tri_stage_wait completes them
// (before the barrier that publishes them to the threadgroup).
template <typename T>
inline void tri_stage(threadgroup T* dst, const device T* src, bool in) {
#if KILN_BACKEND_CUDA
  uint d;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
      : "=r"(d)
      : "l"(dst));
  asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; "
               "cp.async.ca.shared.global [%0], [g], %2, %3; }"
               :
               : "r"(d), "l"(src), "n"((int)sizeof(T)),
                 "r"(in ? (int)sizeof(T) : 0)
               : "memory");
#else
  *dst = in ? *src : T(0);
#endif
}

inline void tri_stage_wait() {
#if KILN_BACKEND_CUDA
  asm volatile("cp.async.commit_group;\n\tcp.async.wait_group 0;" ::
                   : "memory");
#endif
}

// Element e (0 .. NB * NB - 1) of a tile as (row i, column p), the order
// in which 256 threads load and store tiles. Along the columns (M's rows
// contiguous in memory): 256 consecutive elements of a row-major walk.
// Otherwise (columns contiguous) each warp takes G = NB / 8 consecutive
// rows of 256 / NB columns: G elements are one 32-byte sector of a column
// in memory, and their stores into a tile with rows padded to NB + 256 /
// NB (trsm_stepinv's) fall on distinct banks, where a warp down one
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

// Stages the NB x NB tile of M at effective rows r0 .., columns q0 ..
// (rows from `rows` on and columns from `cols` on read as zeros) into
// threadgroup memory as tile[i * P + p], by tri_stage (all of a thread's
// NB * NB / 256 copies in flight at once; tri_stage_wait completes
// them). Coalesced either way (see tri_tile_index).
template <typename T, int NB, int P>
inline void tri_tile_stage(threadgroup T* tile, const device T* a, tri_eff m,
                           bool along_cols, int r0, int rows, int q0,
                           int cols, int tid) {
  // Element tid + 256 u sits at (i0 + di u, p0 + dp u) (tri_tile_index,
  // NB dividing 256): one pointer and one stride, not an address
  // computed per copy (registers).
  int i0, p0;
  tri_tile_index<NB>(tid, along_cols, i0, p0);
  const int di = along_cols ? 256 / NB : 0, dp = along_cols ? 0 : 256 / NB;
  const device T* src =
      a + (int64_t)(r0 + i0) * m.r + (int64_t)(q0 + p0) * m.c;
  const int64_t du = (int64_t)di * m.r + (int64_t)dp * m.c;
  for (int u = 0; u < NB * NB / 256; ++u) {
    const int i = i0 + di * u, p = p0 + dp * u;
    const bool in = i < rows && p < cols;
    tri_stage(tile + i * P + p, in ? src + u * du : a, in);
  }
}

// One reduce-scatter level of tri_rows_product: a lane keeps half of its
// 2 H partial sums (the upper half when its lane bit 2 H is set), adds
// the partner's same half, and the other half goes to the partner. After
// the levels H = 8, 4, 2, 1, lane l holds one output, numbered by the
// bits 16, 8, 4, 2 of l (see tri_rows_index), summed over 16 lanes.
template <typename T, int H>
inline void tri_rs_level(thread T* v, int lane) {
  const bool up = (lane & (2 * H)) != 0;
  for (int j = 0; j < H; ++j) {
    const T send = up ? v[j] : v[j + H];
    const T keep = up ? v[j + H] : v[j];
    v[j] = keep + simd_shuffle_xor(send, (ushort)(2 * H));
  }
}

// Which output of its warp's 4 x 4 block lane `lane` ends with in
// tri_rows_product: (row, column) within the block.
inline void tri_rows_index(int lane, thread int& r, thread int& q) {
  const int idx = ((lane >> 4) & 1) * 8 + ((lane >> 3) & 1) * 4 +
                  ((lane >> 2) & 1) * 2 + ((lane >> 1) & 1);
  r = idx / 4;
  q = idx % 4;
}

// The product of RB rows of a tile Ab (rows padded to S + 1) with the
// S x 16 block Xb (rows padded to 17), for trsm_step (both products):
// warp w owns the 4 x 4 outputs of rows 4 (w / 4) .., columns 4 (w % 4)
// .. (so RB / 4 * 4 warps), and its 32 lanes split the S products (p =
// lane + 32 u), reading 4 values of Ab (one row each, consecutive p:
// distinct banks) and 4 of Xb (stride 17: distinct banks) per 16 FMAs.
// The lanes' sums meet by a reduce-scatter (16 shuffles, not 80 of a
// plain butterfly of 16 values); the result: the full sum of output
// (4 (w / 4) + r, 4 (w % 4) + q), (r, q) by tri_rows_index, in the even
// lanes and their odd neighbours alike.
template <typename T, int S>
inline T tri_rows_product(const threadgroup T* Ab, const threadgroup T* Xb,
                          int warp, int lane) {
  const int rg = warp / 4, cg = warp % 4;
  T v[16];
  for (int j = 0; j < 16; ++j)
    v[j] = T(0);
  for (int u = 0; u < S / 32; ++u) {
    const int p = lane + 32 * u;
    T a[4], x[4];
    for (int r = 0; r < 4; ++r)
      a[r] = Ab[(rg * 4 + r) * (S + 1) + p];
    for (int q = 0; q < 4; ++q)
      x[q] = Xb[p * 17 + cg * 4 + q];
    for (int r = 0; r < 4; ++r)
      for (int q = 0; q < 4; ++q)
        v[r * 4 + q] = fma(a[r], x[q], v[r * 4 + q]);
  }
  tri_rs_level<T, 8>(v, lane);
  tri_rs_level<T, 4>(v, lane);
  tri_rs_level<T, 2>(v, lane);
  tri_rs_level<T, 1>(v, lane);
  return v[0] + simd_shuffle_xor(v[0], (ushort)1);
}

// Waits until flag f[i] reads `epoch` (nothing for i < 0), then fences
// (acquire): what its writer stored before raising it is visible after.
// Out of line on CUDA, the branch included: inlined, the loop cost
// trsm_step 8-16 registers per thread (ptxas), which took it from two
// threadgroups an SM to one.
#if KILN_BACKEND_CUDA
__noinline__
#endif
void tri_wait_flag(device atomic_int* f, int i, int epoch) {
  if (i < 0)
    return;
#if KILN_BACKEND_CUDA
  // A safety net, never reached while blocks start in order: after ~2^24
  // polls (seconds) the kernel traps, so that a broken assumption is a
  // launch error (kiln reports the device lost) and neither a hung
  // device nor a silently wrong result.
  int spin = 0;
  while (atomic_load_explicit(&f[i], memory_order_relaxed) != epoch)
    if (++spin >= (1 << 24))
      __trap();
#else
  while (atomic_load_explicit(&f[i], memory_order_relaxed) != epoch) {
  }
#endif
  (void)atomic_load_explicit(&f[i], memory_order_acquire);
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
// every load issued before any store: one memory latency, not NB * NB /
// 256 of them in a row (the stores could alias the loads otherwise)
T av[NB * NB / 256];
for (int u = 0; u < NB * NB / 256; ++u) {
  const int e = tid + 256 * u;
  const int i = along_cols ? e / NB : e % NB, j = along_cols ? e % NB : e / NB;
  const bool in = i < nb && j < nb && (j < i || (j == i && !UNIT));
  av[u] = in ? a[(int64_t)i * m.r + (int64_t)j * m.c] : T(0);
}
for (int u = 0; u < NB * NB / 256; ++u) {
  const int e = tid + 256 * u;
  const int i = along_cols ? e / NB : e % NB, j = along_cols ? e % NB : e / NB;
  // the unit diagonal, and the identity on the padding (it keeps the
  // block invertible)
  S[i * P + j] = i == j && (UNIT || i >= nb) ? T(1) : av[u];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
// The diagonal's reciprocals, one division a thread up front: in the
// substitution below a division per column and step (8 a step per warp,
// each an IEEE division subroutine on the chain) made this kernel
// instruction-latency bound (31.5 us measured at n = 8192); a multiply
// by the reciprocal costs one more rounding per step (x / d as x (1 /
// d)), well inside the solve's error bounds.
threadgroup T rdiag[NB];
if (tid < NB)
  rdiag[tid] = T(1) / S[tid * P + tid];
threadgroup_barrier(mem_flags::mem_threadgroup);
// Warp w inverts columns w, w + 8, ..., CW = NB / 8 of them, all at
// once: each step p of the substitution advances every column (one
// shuffle and one multiply by the pivot's reciprocal each, independent),
// so a warp waits on one chain of NB - w steps, not on CW chains one
// after another.
constexpr int CW = NB / 8;
T x[CW][R];
for (int q = 0; q < CW; ++q)
  for (int r = 0; r < R; ++r)
    x[q][r] = lane + 32 * r == warp + 8 * q ? T(1) : T(0);
for (int p = warp; p < NB; ++p) {
  const T rdp = rdiag[p];
  T sp[R]; // column p of the block, this lane's rows
  for (int r = 0; r < R; ++r)
    sp[r] = S[(lane + 32 * r) * P + p];
  for (int q = 0; q < CW; ++q) {
    if (p < warp + 8 * q)
      continue; // column c = warp + 8 q starts at p = c
    T xp = x[q][0];
    for (int r = 1; r < R; ++r)
      if (p / 32 == r)
        xp = x[q][r];
    xp = simd_shuffle(xp, (ushort)(p % 32));
    if (!UNIT)
      xp = xp * rdp;
    for (int r = 0; r < R; ++r) {
      const int i = lane + 32 * r;
      if (i > p)
        x[q][r] = fma(-sp[r], xp, x[q][r]);
      else if (i == p)
        x[q][r] = xp;
    }
  }
}
for (int q = 0; q < CW; ++q)
  for (int r = 0; r < R; ++r)
    Xi[(lane + 32 * r) * P + warp + 8 * q] = x[q][r];
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* w = W + ((int64_t)b * ((n + NB - 1) / NB) + blk) * (NB * NB);
for (int e = tid; e < NB * NB; e += 256) {
  int i = e / NB, j = e % NB;
  w[e] = i < nb && j < nb ? Xi[i * P + j] : T(0);
}

//@kernel trsm_stepinv
// V = the inverses of M's S x S diagonal blocks (S = SUB * NB: one block
// per step of path 2, effective rows e0 = step * S ..), each row-major S
// x S in V[entry][step], lower triangular. One threadgroup of 256 threads
// per KT columns of a block (grid.x = 256 * S / KT), A's batch entries
// along grid.y from batch0, the steps along grid.z: every step at once,
// in one launch. Columns c0 .. c0 + KT - 1 of inv(M_ss) solve M_ss V = I
// by blocks of NB: for each block s from the columns' block jb on, B_s =
// -M[s, t] V_t summed over jb <= t < s (B starts as those columns of the
// identity), then V_s = W_s B_s (W_s the inverted NB x NB block of
// trsm_diag_inv), so the chain of a threadgroup has at most SUB (SUB + 1)
// / 2 tile stages. The tiles (M[s, t] and W_s, NB x NB each) are staged
// into the two halves of Tl in turn (tri_stage: cp.async on CUDA), the
// next one's copies issued before the current one's products, and each
// solved block replaces its right-hand side in Bs. In a product, PQ =
// 256 / NB adjacent lanes share a block of KT / 4 rows x 4 columns of the
// output (every PQ-th column of the tile each); their partial sums meet
// by shuffles. Rows of Tl are padded to NB + PQ, which puts a warp's tile
// reads on distinct banks. Rows of V past the matrix's end and columns
// past its last block are left unwritten (trsm_step never reads them).
// Inputs A, W, batch0; output V. Template: T, NB, SUB, KT, UPPER, TRANS.
constexpr int PQ = 256 / NB; // lanes per output block of a product
constexpr int P = NB + PQ;   // Tl's row stride
constexpr int S = SUB * NB;
threadgroup T Tl[2 * NB * P]; // two tiles: one staged, one multiplied
// The right-hand sides block by block, each replaced by its solution once
// solved: a stage reads solved blocks t < s and block s only.
threadgroup T Bs[S * KT];
const int n = A_shape[A_ndim - 1];
const int nblk = (n + NB - 1) / NB, steps = (n + S - 1) / S;
const int step = (int)threadgroup_position_in_grid.z;
const int e0 = step * S;
const int nsub = min(SUB, (n - e0 + NB - 1) / NB); // blocks in this step
const int c0 = (int)threadgroup_position_in_grid.x * KT;
const int jb = c0 / NB; // the block of these columns
if (jb >= nsub)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
// a product's outputs: RR rows x CC columns a thread (rows rg RR .., columns
// cg CC ..), its part pq of the tile's columns
constexpr int CC = 4, RR = KT / CC, CG = KT / CC;
const int pq = tid % PQ, rg = tid / PQ / CG, cg = tid / PQ % CG;
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base;
const bool along_cols = abs(m.c) <= abs(m.r);
const device T* wa = W + (int64_t)b * nblk * (NB * NB) +
                     (int64_t)step * SUB * (NB * NB);
device T* vo = V + ((int64_t)b * steps + step) * (S * S);
tri_eff wm; // W_s as a tile: row-major NB x NB
wm.base = 0;
wm.r = NB;
wm.c = 1;
#if KILN_BACKEND_CUDA
// The step's diagonal block of M (its lower triangle) and its W blocks,
// asked into L2 at once by the step's threadgroups together (a line or
// two a thread): at one threadgroup an SM (registers) nothing hides a
// stage's tile loads but the previous stage's product, so they should
// wait on L2, not on HBM, which only the first touch of a tile would.
// Runs follow M's contiguous index.
{
  constexpr int L = 128 / (int)sizeof(T); // elements per line
  const int fs = min(S, n - e0);
  const int me = (int)threadgroup_position_in_grid.x * 256 + tid;
  const int all = (int)threadgroups_per_grid.x * 256;
  const int chunks = fs / L + 2; // lines a run can touch
  for (int e = me; e < fs * chunks; e += all) {
    // run o: row o's columns 0 .. o, or column o's rows o .. fs - 1
    const int o = e / chunks, ch = e % chunks;
    const int lo = along_cols ? 0 : o, hi = along_cols ? o : fs - 1;
    const int x = ch == chunks - 1 ? hi : lo + ch * L;
    if (x > hi)
      continue;
    const int i = along_cols ? o : x, p = along_cols ? x : o;
    tri_prefetch_l2(a + (int64_t)(e0 + i) * m.r + (int64_t)(e0 + p) * m.c);
  }
  for (int e = me * L; e < nsub * NB * NB; e += all * L)
    tri_prefetch_l2(wa + e);
}
#endif
for (int e = tid; e < S * KT; e += 256)
  Bs[e] = e / KT == c0 + e % KT ? T(1) : T(0);
// the blocks above jb: zero (the inverse is lower triangular)
for (int e = tid; e < jb * NB * KT; e += 256)
  vo[(int64_t)(e / KT) * S + c0 + e % KT] = T(0);
// Stage (s, t)'s tile is M[s, t] for t < s, else W_s. The first, W_jb,
// is staged now; each stage stages the next one's into the other half
// of Tl before its product, so a tile's loads overlap the product before
// it without holding registers (the old register prefetch cost 162
// registers a thread, one threadgroup an SM).
tri_tile_stage<T, NB, P>(Tl, wa + (int64_t)jb * (NB * NB), wm, true, 0, NB,
                         0, NB, tid);
int buf = 0;
for (int s = jb; s < nsub; ++s) {
  threadgroup T* bs = Bs + s * NB * KT; // block s of Bs
  for (int t = jb; t <= s; ++t) {
    // this stage's tile complete and visible; the other half free
    tri_stage_wait();
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const int ns = t < s ? s : s + 1, nt = t < s ? t + 1 : jb;
    threadgroup T* next = Tl + (1 - buf) * NB * P;
    if (ns < nsub) {
      if (nt < ns)
        tri_tile_stage<T, NB, P>(next, a, m, along_cols, e0 + ns * NB,
                                 min(NB, n - e0 - ns * NB), e0 + nt * NB, NB,
                                 tid);
      else
        tri_tile_stage<T, NB, P>(next, wa + (int64_t)ns * (NB * NB), wm, true,
                                 0, NB, 0, NB, tid);
    }
    const threadgroup T* tile = Tl + buf * NB * P;
    buf = 1 - buf;
    // acc = Tl[rows, :] times B_s (t == s) or V_t (t < s), over this
    // lane's columns of the tile, then summed over the PQ lanes. RR x CC
    // outputs a thread: RR + CC reads of threadgroup memory per RR CC
    // FMAs (2 + 4 per 8; one row x KT columns took 1 + 8 per 8)
    const threadgroup T* rhs = Bs + t * NB * KT; // V_t, or B_s (t == s)
    T acc[RR][CC];
    for (int r = 0; r < RR; ++r)
      for (int q = 0; q < CC; ++q)
        acc[r][q] = T(0);
    // unrolled by 2 on CUDA: fully unrolled, ptxas hoists every read of
    // the 16 rounds and takes 136 registers (one threadgroup an SM)
#if KILN_BACKEND_CUDA
#pragma unroll 2
#endif
    for (int pp = 0; pp < NB / PQ; ++pp) {
      const int p = pq + PQ * pp;
      T tv[RR], xv[CC];
      for (int r = 0; r < RR; ++r)
        tv[r] = tile[(rg * RR + r) * P + p];
      for (int q = 0; q < CC; ++q)
        xv[q] = rhs[p * KT + cg * CC + q];
      for (int r = 0; r < RR; ++r)
        for (int q = 0; q < CC; ++q)
          acc[r][q] = fma(tv[r], xv[q], acc[r][q]);
    }
    for (int o = 1; o < PQ; o <<= 1)
      for (int r = 0; r < RR; ++r)
        for (int q = 0; q < CC; ++q)
          acc[r][q] += simd_shuffle_xor(acc[r][q], (ushort)o);
    // V_s replaces B_s in place: every thread done reading B_s first
    if (t == s)
      threadgroup_barrier(mem_flags::mem_threadgroup);
    // lane pq keeps the outputs r CC + q equal to pq modulo PQ
    for (int r = 0; r < RR; ++r)
      for (int q = 0; q < CC; ++q) {
        if ((r * CC + q) % PQ != pq)
          continue;
        const int row = rg * RR + r, cc = cg * CC + q;
        if (t < s) { // B_s -= M[s, t] V_t
          bs[row * KT + cc] -= acc[r][q];
        } else { // V_s = W_s B_s, into Bs and V
          bs[row * KT + cc] = acc[r][q];
          vo[(int64_t)(s * NB + row) * S + c0 + cc] = acc[r][q];
        }
      }
  }
}

//@kernel trsm_step
// One step of path 2, fused: with X_s = inv(M_ss) B_s already in B's rows
// of step s (e0 = s S .. e1 - 1) and in XS (half s % 2), B[rest] = scale
// B[rest] - M[rest, s] X_s for the rows after the step (e1 .. n - 1), and
// the next step's solution X_{s+1} = V_{s+1} B_{s+1} written into its
// rows of B and into XS (half (s + 1) % 2), all in one launch. Launch j =
// s + 1 (0 .. steps - 1) has ceil((n - j S) / 16) threadgroups of 512
// threads along x (an exact multiple, so one CUDA launch region, in block
// order), each owning 16 rows (from e1 + 16 g) and 16 columns; grid.y =
// batch entries within a chunk of 65535, grid.z = chunks x column tiles.
// Launch 0 applies nothing: it scales B by `scale` and solves step 0's
// rows. Each threadgroup stages all of its loads at once (tri_stage: 16
// S / 512 values of M and as many of X_s a thread) into threadgroup
// memory and multiplies (tri_rows_product). The first `owners` groups
// hold the next step's rows (at most S / 16): group g writes its updated
// rows into the scratch R (not into B: the owners after it still read
// them), raises its flag F[g] to the launch's epoch (j + 1), stages its
// rows of V_{s+1} while waiting for the flags of the owners before it,
// then R's rows up to its own (V is lower triangular), and multiplies.
// An owner waits only on groups of lower index of its batch entry and
// column tile, which every backend starts first (CUDA dispatches a
// grid's blocks in order; the CPU pool hands groups out in increasing
// order, and a group waits only on others), so the wait always ends.
// CUDA does not document its in-order dispatch: with few owners waiting
// (batch x column tiles x (S / 16 - 1) below the resident groups, e.g.
// 15 for one matrix and k <= 16) order cannot matter, with many it does;
// if a wait ever lasts ~2^24 polls the kernel traps (a launch error, not
// a wrong result: tri_wait_flag). Like lu_strip_grid's grid barrier,
// this release/acquire exchange between threadgroups is outside the
// portable dialect (KERNEL-DIALECT.md: relaxed atomics only, no waits
// between threadgroups): a Metal backend would need another form (e.g.
// owner roles taken from an atomic ticket, or two launches a step). On
// the CPU a wait has no bound: a pool thread that fails to get its
// scratch skips its later groups (exec.c), and an owner waiting on one
// of them would spin forever (an out-of-memory case; not yet handled).
// The flags are zeroed once per solve (tri_zero) and epochs grow, so no
// reset sits between launches. Inputs A, V, Bin, scale (0-d T, read only after
// the loads); outputs B (Bin's memory), R (batch x S x k), XS (batch x 2
// x S x k), F (int, batch x column tiles x S / 16). Template: T, S,
// UPPER, TRANS, ABATCH (A, hence V, has batch entries).
constexpr int RB = 16, KC = 16, NT = 512, AP = S + 1, XP = KC + 1;
constexpr int APER = RB * S / NT, XPER = S * KC / NT, OWN = S / RB;
threadgroup T Ab[RB * AP];
threadgroup T Xb[S * XP];
const int n = Bin_shape[Bin_ndim - 2], k = Bin_shape[Bin_ndim - 1];
const int steps = (n + S - 1) / S;
// The launch's index j = s + 1 and the batch entry come from the grid,
// not from 0-d inputs: a scalar is a load from memory, and every address
// below would wait on it (one more memory round trip a launch). Launch
// j has ceil((n - j S) / 16) groups along x (S is a multiple of 16);
// grid.z is (batch chunk of 65535 entries) x column tiles.
const int step = ((n + RB - 1) / RB - (int)threadgroups_per_grid.x) / OWN;
const int ctiles = (k + KC - 1) / KC;
int64_t batch = 1;
for (int d = 0; d < Bin_ndim - 2; ++d)
  batch *= Bin_shape[d];
const int zc = (int)threadgroup_position_in_grid.z;
const int64_t b64 = (int64_t)(zc / ctiles) * 65535 +
                    (int64_t)threadgroup_position_in_grid.y;
if (b64 >= batch)
  return; // past the batch in the last chunk: the whole group
const uint b = (uint)b64;
const int s = step - 1; // the step applied (-1: none)
const int e0 = s * S, e1 = s < 0 ? 0 : min(n, e0 + S);
const int sw = s < 0 ? 0 : e1 - e0; // 0: nothing is loaded or applied
const int nw = min(S, n - e1);      // rows of the next step
const int owners = (nw + RB - 1) / RB;
const int g = (int)threadgroup_position_in_grid.x;
const int t0 = e1 + g * RB;
const int c0 = (zc % ctiles) * KC;
const int tid = (int)thread_index_in_threadgroup;
int64_t br = Bin_strides[Bin_ndim - 2];
const int64_t bc = Bin_strides[Bin_ndim - 1];
int64_t boff = tri_batch_offset(b, Bin_shape, Bin_strides, Bin_ndim);
if (UPPER != TRANS) {
  boff += (int64_t)(n - 1) * br;
  br = -br;
}
device T* bm = B + boff;
// X_s from its contiguous copy in XS (half s % 2)
const device T* xs = XS + ((int64_t)b * 2 + (s & 1)) * S * k;
tri_eff m = tri_effective(n, A_strides[A_ndim - 2], A_strides[A_ndim - 1],
                          UPPER, TRANS);
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim) +
                    m.base;
// threads run along whichever index of M is contiguous in memory
const bool along_cols = abs(m.c) <= abs(m.r);
const int warp = tid / 32, lane = tid % 32;
int r, q;
tri_rows_index(lane, r, q);
const int row = t0 + (warp / 4) * 4 + r, col = c0 + (warp % 4) * 4 + q;
const bool mine = (lane & 1) == 0 && row < n && col < k;
// every copy into threadgroup memory in flight at once (tri_stage)
for (int u = 0; u < APER; ++u) {
  const int e = tid + NT * u;
  const int i = along_cols ? e / S : e % RB, p = along_cols ? e % S : e / RB;
  const bool in = t0 + i < n && p < sw;
  tri_stage(Ab + i * AP + p,
            in ? a + (int64_t)(t0 + i) * m.r + (int64_t)(e0 + p) * m.c : A,
            in);
}
for (int u = 0; u < XPER; ++u) {
  const int e = tid + NT * u, p = e / KC, cc = e % KC;
  const bool in = p < sw && c0 + cc < k;
  tri_stage(Xb + p * XP + cc, in ? xs + (int64_t)p * k + c0 + cc : xs, in);
}
const T own = mine ? bm[(int64_t)row * br + (int64_t)col * bc] : T(0);
tri_stage_wait();
threadgroup_barrier(mem_flags::mem_threadgroup);
const T val = scale * own - tri_rows_product<T, S>(Ab, Xb, warp, lane);
device T* const out = bm + ((int64_t)row * br + (int64_t)col * bc);
if (g >= owners) { // a band group: its rows are done for this step
  if (mine)
    *out = val;
  return;
}
// An owner. Its rows go to R, the rows of V_{s+1} it needs to Ab, and
// once the owners before it have published theirs, R's rows up to its
// own to Xb; X = V R lands in B and in XS (half (s + 1) % 2).
const int v0 = g * RB, pend = min(nw, v0 + RB);
device T* const rs = R + (int64_t)b * S * k;
device T* const xout =
    XS + ((int64_t)b * 2 + ((s + 1) & 1)) * S * k + ((row - e1) * k + col);
if (mine)
  rs[(row - e1) * k + col] = val;
threadgroup_barrier(mem_flags::mem_device);
// Publish (the release fences the group's R stores, which the barrier
// ordered before it): F[g] = the launch's epoch.
device atomic_int* fl =
    (device atomic_int*)F + ((int64_t)b * ctiles + zc % ctiles) * OWN;
const int epoch = step + 1;
if (tid == 0)
  atomic_store_explicit(&fl[g], epoch, memory_order_release);
// V_{s+1}'s rows v0 .., columns up to pend (V is lower triangular), into
// Ab while the other owners' flags travel (the first product is over:
// every thread has passed the barrier above).
{
  const device T* vs =
      V + ((ABATCH ? (int64_t)b : 0) * steps + (s + 1)) * (S * S) + v0 * S;
  for (int u = 0; u < APER; ++u) {
    const int e = tid + NT * u, i = e / S, p = e % S;
    const bool in = v0 + i < nw && p < pend;
    tri_stage(Ab + i * AP + p, in ? vs + e : vs, in);
  }
}
// Wait for the owners before this one (thread i < g for owner i's flag).
tri_wait_flag(fl, tid < g ? tid : -1, epoch); // thread i: owner i's
threadgroup_barrier(mem_flags::mem_device);
{
  const int rp0 = tid / KC, rc = c0 + tid % KC;
  for (int u = 0; u < XPER; ++u) {
    const int p = rp0 + (NT / KC) * u;
    const bool in = p < pend && rc < k;
    tri_stage(Xb + p * XP + tid % KC, in ? rs + (p * k + rc) : rs, in);
  }
}
tri_stage_wait();
threadgroup_barrier(mem_flags::mem_threadgroup);
const T x = tri_rows_product<T, S>(Ab, Xb, warp, lane);
if (mine) {
  *out = x;
  *xout = x;
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
// (LAPACK's trtrs info). One threadgroup per matrix (grid.x = its
// threads, a multiple of 32 up to 1024; grid.y = A's batch entries from
// batch0): each thread loads up to 8 diagonal elements at once (one
// memory latency per 8 NT elements, not one per 32 as a single warp
// walking the diagonal had), keeps its first zero, and the threadgroup
// takes the minimum. Inputs A, batch0; output info. Template: T.
constexpr int U = 8;
threadgroup int low[32];
const int n = A_shape[A_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
const device T* a = A + tri_batch_offset(b, A_shape, A_strides, A_ndim);
const int64_t d = A_strides[A_ndim - 2] + A_strides[A_ndim - 1];
int first = n;
for (int i0 = 0; i0 < n && first == n; i0 += U * nt) {
  T v[U];
  for (int u = 0; u < U; ++u) {
    const int i = i0 + tid + nt * u;
    v[u] = i < n ? a[(int64_t)i * d] : T(1);
  }
  for (int u = U - 1; u >= 0; --u)
    if (v[u] == T(0))
      first = i0 + tid + nt * u;
}
first = simd_min(first);
if ((int)thread_index_in_simdgroup == 0)
  low[tid / 32] = first;
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid == 0) {
  for (int w = 1; w < (nt + 31) / 32; ++w)
    first = min(first, low[w]);
  info[b] = first < n ? first + 1 : 0;
}

//@kernel tri_zero
// Z[i] = 0 for i < grid.x: trsm_step's flags, once per solve. Output Z
// (int).
Z[thread_position_in_grid.x] = 0;

//@kernel tri_iota
// steps[i] = i: the block-step indices, passed to the step kernels as 0-d
// views (so no scalar needs filling per step). Grid.x = the length.
steps[thread_position_in_grid.x] = (int)thread_position_in_grid.x;
