// kiln's LU kernels (drivers: src/linalg/lu.c and lu_solve.c): LAPACK's
// getrf with partial pivoting, and what solve, inv, det and slogdet build
// on it.
//
// The factorization is built in W, the contiguous result (...×m×n), which
// the kernels take as their output W; a kernel that also needs W's shape
// binds it a second time as the input Win. piv (int32, ...×k, k = min(m,
// n)) receives the pivot rows (from 0, LAPACK's ipiv - 1). info (int32, one
// per matrix) receives the first failure: j + 1 for an exact zero pivot in
// column j (LAPACK's info), -(j + 1) for a pivot that is not finite, and
// LU_INFO_NONFINITE for a non-finite input value; the driver fills it with
// 0 first, and kernels only ever replace a 0 (the first failure wins). The
// factorization carries on past a failure, as getrf does, so that det can
// run the same code and report 0.
//
// Pivot choice: the largest |a| of the column, the first on ties (LAPACK's
// idamax), with NaN counted as the largest so that it becomes the pivot and
// is reported rather than skipped.
//
// Paths:
//   small    one threadgroup per matrix: lu_small, the matrix in
//            threadgroup memory (m, n <= NMAX <= 64), or lu_small_reg, the
//            matrix in registers, a row per thread of each column class
//            (m, n <= 128).
//   blocked  lu_copy (A into W, non-finite inputs noted), then per panel of
//            NB columns: lu_transpose copies the panel into PT transposed
//            (its columns contiguous); per strip of WS columns lu_panel (or
//            lu_panel_global when the rows do not fit in registers) and a
//            GEMM on the rest of the panel, both on PT; lu_transpose copies
//            it back; then lu_laswp_plan and lu_laswp (the panel's row
//            interchanges on every column outside it, composed into one
//            gather), the block row's solve (lu_linv_diag and lu_linv
//            form L11^-1, a GEMM multiplies, lu_rowfix substitutes where
//            L11^-1 is too large) and the trailing GEMM. On CUDA, for one
//            matrix with enough rows, lu_strip_grid factors strips of 64
//            (32) columns with the whole grid instead of lu_panel (lu.c).
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define LU_UNROLL _Pragma("unroll")
#define LU_NO_UNROLL _Pragma("unroll 1")
#else
#define LU_UNROLL
#define LU_NO_UNROLL
#endif

#define LU_INFO_NONFINITE (-1073741824)
#define LU_NO_ROW 0x7fffffff
// lu_strip_grid's most threadgroups (its exchange slots per column parity,
// staged in threadgroup memory) and the offset of its counters in S (the
// rows before it are unused).
#define LU_GRID_PMAX 64
#define LU_GRID_CTR (2 * LU_GRID_PMAX)
// The pivots lu_perm stages in threadgroup memory at a time (32 KiB).
#define LU_PERM_CHUNK 8192
// lu_copy's elements a thread (LU_COPY_EW in lu.c)
#define LU_COPY_EW 8

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order; a plain matrix (ndim 2) is shared by every entry.
inline int64_t lu_batch_offset(uint b, const constant int* shape,
                               const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// lu_strip_grid's grid barrier after its columns (see there).
// lu_grid_arrive adds n to the counter, ordered after the calling
// thread's writes (and, after a threadgroup barrier, its group's): on CUDA
// a release reduction, cheaper than __threadfence (fence.sc) and then a
// relaxed add. lu_grid_wait holds the group until the counter reaches
// target: thread 0 polls it with acquire loads, the group's barrier
// passes that on (the pattern of CUTLASS's grid barrier). LU_LDCG loads
// from L2 (ld.cg: L1 is not coherent across SMs). The CPU backend runs
// the kernel only with one threadgroup, whose threads may run one after
// another up to a barrier: there the group's arrivals are all made before
// thread 0 looks.
#if KILN_BACKEND_CUDA
#define LU_LDCG(p) __ldcg(p)
#else
#define LU_LDCG(p) (*(p))
#endif
inline void lu_grid_arrive(device int* ctr, int n) {
#if KILN_BACKEND_CUDA
  asm volatile("red.release.gpu.add.s32 [%0], %1;" ::"l"(ctr), "r"(n)
               : "memory");
#else
  atomic_fetch_add_explicit((device atomic_int*)ctr, n, memory_order_relaxed);
#endif
}
inline void lu_grid_wait(device int* ctr, int target, int tid) {
#if KILN_BACKEND_CUDA
  if (tid == 0) {
    int seen = 0;
    do
      asm volatile("ld.acquire.gpu.s32 %0, [%1];"
                   : "=r"(seen)
                   : "l"(ctr)
                   : "memory");
    while (seen < target);
  }
#else
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (tid == 0)
    while (atomic_load_explicit((device atomic_int*)ctr,
                                memory_order_relaxed) < target) {
    }
#endif
  threadgroup_barrier(mem_flags::mem_threadgroup);
}

// lu_strip_grid's exchange words (see there): a 32-bit piece of a
// published value in the low half, the column's stamp in the high half,
// written and read as whole aligned 64-bit words, so that a reader sees
// either all of a word's old contents or all of its new ones (single-copy
// atomicity: PTX's memory model for morally strong accesses, here
// st.relaxed.gpu / ld.relaxed.gpu, which go to L2 past the SM's L1, not
// coherent across SMs). A word carrying column j's stamp therefore holds
// column j's piece, whatever the order in which the other words land: no
// fence, no counter, no acquire round trip. Vector accesses (v2) are two
// such words each.
inline ulong lu_word(uint piece, uint stamp) {
  return ((ulong)stamp << 32) | (ulong)piece;
}
inline bool lu_stamped(ulong w, uint stamp) { return (uint)(w >> 32) == stamp; }
// The pieces of a value, low half first, and back.
inline void lu_pieces(float x, thread uint* p) { p[0] = as_type<uint>(x); }
inline void lu_pieces(double x, thread uint* p) {
  const ulong b = as_type<ulong>(x);
  p[0] = (uint)b;
  p[1] = (uint)(b >> 32);
}
inline float lu_unpiece(const threadgroup uint* p, float) {
  return as_type<float>(p[0]);
}
inline double lu_unpiece(const threadgroup uint* p, double) {
  return as_type<double>(((ulong)p[1] << 32) | (ulong)p[0]);
}
// A key from its pieces in registers (the low one first).
inline float lu_key_of(uint lo, uint, float) { return as_type<float>(lo); }
inline double lu_key_of(uint lo, uint hi, double) {
  return as_type<double>(((ulong)hi << 32) | (ulong)lo);
}
// A staged row of W values (16-byte aligned pieces) into registers, 16
// bytes per load: a quarter of the shared-memory instructions of one
// piece at a time, which every thread of the group issues every column.
template <int W>
inline void lu_unstage(const threadgroup uint4* s, thread float* out) {
  LU_UNROLL
  for (int c = 0; c < W / 4; ++c) {
    const uint4 u = s[c];
    out[4 * c] = as_type<float>(u.x);
    out[4 * c + 1] = as_type<float>(u.y);
    out[4 * c + 2] = as_type<float>(u.z);
    out[4 * c + 3] = as_type<float>(u.w);
  }
}
template <int W>
inline void lu_unstage(const threadgroup uint4* s, thread double* out) {
  LU_UNROLL
  for (int c = 0; c < W / 2; ++c) {
    const uint4 u = s[c];
    out[2 * c] = as_type<double>(((ulong)u.y << 32) | (ulong)u.x);
    out[2 * c + 1] = as_type<double>(((ulong)u.w << 32) | (ulong)u.z);
  }
}
// Two adjacent words (16-byte aligned) stored and loaded as one access.
inline void lu_st_pair(device ulong* p, ulong a, ulong b) {
#if KILN_BACKEND_CUDA
  asm volatile("st.relaxed.gpu.v2.b64 [%0], {%1, %2};" ::"l"(p), "l"(a),
               "l"(b)
               : "memory");
#else
  p[0] = a;
  p[1] = b;
#endif
}
inline void lu_ld_pair(const device ulong* p, thread ulong& a,
                       thread ulong& b) {
#if KILN_BACKEND_CUDA
  asm volatile("ld.relaxed.gpu.v2.b64 {%0, %1}, [%2];"
               : "=l"(a), "=l"(b)
               : "l"(p)
               : "memory");
#else
  a = p[0];
  b = p[1];
#endif
}

// The key a pivot search maximises: |a|, NaN counted as infinite.
template <typename T>
inline T lu_key(T a) {
  return isnan(a) ? T(INFINITY) : fabs(a);
}

// (key, row) pairs: the larger key wins, the smaller row on ties.
template <typename T>
inline bool lu_better(T k1, int r1, T k2, int r2) {
  return k1 > k2 || (k1 == k2 && r1 < r2);
}

// The warp's best (key, row), in every lane.
template <typename T>
inline void lu_warp_argmax(thread T& key, thread int& row) {
  for (ushort off = 16; off > 0; off >>= 1) {
    T k2 = simd_shuffle_xor(key, off);
    int r2 = simd_shuffle_xor(row, off);
    if (lu_better(k2, r2, key, row)) {
      key = k2;
      row = r2;
    }
  }
}

// lu_strip_grid's (key, row) argmax over the warp, in every lane, with
// lu_better's order (the larger key, then the smaller row): a key >= 0's
// bits ordered as unsigned integers (a negative key, "no candidate",
// counts as 0 with its row LU_NO_ROW, behind every real row), reduced by
// simd_max and simd_min, which on sm_80+ are single warp-reduce
// instructions (redux.sync): 2 of them in float32, 3 in float64, against
// lu_warp_argmax's 5 dependent shuffle steps. (The key returned for a
// warp without candidates is 0 rather than -1, with row LU_NO_ROW.)
inline void lu_redux_argmax(thread float& key, thread int& row) {
  const uint kb = key > 0.0f ? as_type<uint>(key) : 0u;
  const uint mk = simd_max(kb);
  row = simd_min(kb == mk ? row : LU_NO_ROW);
  key = as_type<float>(mk);
}
inline void lu_redux_argmax(thread double& key, thread int& row) {
  const ulong kb = key > 0.0 ? as_type<ulong>(key) : (ulong)0;
  const uint hi = (uint)(kb >> 32), lo = (uint)kb;
  const uint mh = simd_max(hi);
  const uint ml = simd_max(hi == mh ? lo : 0u);
  row = simd_min(hi == mh && lo == ml ? row : LU_NO_ROW);
  key = as_type<double>(((ulong)mh << 32) | (ulong)ml);
}

// What a pivot does to info: 0 fine, j + 1 for an exact zero, -(j + 1)
// for a value that is not finite.
template <typename T>
inline int lu_pivot_status(T p, int j) {
  if (!isfinite(p))
    return -(j + 1);
  return p == T(0) ? j + 1 : 0;
}

// Element (i, c) of a panel held transposed (see lu_panel): column c is
// the contiguous row c - p0 of pt, indexed by the matrix row i.
#define LU_PT(i, c) pt[(int64_t)((c) - p0) * m + (i)]

// U12 = L11^-1 A12 for the rows r0 .. r0 + ws - 1 and the columns [c1, c2)
// of the transposed panel pt (columns from p0, length m), L11 the unit
// lower triangle of the ws x ws block at (r0, r0), staged in `l11` (WS x
// (WS + 1)). The block row goes through `tile` (WS x CT) CT columns at a
// time, a thread per column.
template <typename T, int WS, int CT>
inline void lu_block_row_solve(device T* pt, int m, int p0, int r0, int ws,
                               int c1, int c2, threadgroup T* l11,
                               threadgroup T* tile, int tid, int nt) {
  constexpr int P = WS + 1;
  for (int e = tid; e < ws * ws; e += nt) {
    int i = e / ws, j = e % ws;
    l11[i * P + j] = j < i ? LU_PT(r0 + i, r0 + j) : T(0);
  }
  for (int t0 = c1; t0 < c2; t0 += CT) {
    const int cols = min(CT, c2 - t0);
    for (int e = tid; e < ws * cols; e += nt) {
      int i = e % ws, c = e / ws;
      tile[i * CT + c] = LU_PT(r0 + i, t0 + c);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid < cols)
      for (int i = 1; i < ws; ++i) {
        T s = tile[i * CT + tid];
        for (int p = 0; p < i; ++p)
          s = fma(-l11[i * P + p], tile[p * CT + tid], s);
        tile[i * CT + tid] = s;
      }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int e = tid; e < ws * cols; e += nt) {
      int i = e % ws, c = e / ws;
      LU_PT(r0 + i, t0 + c) = tile[i * CT + c];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
}

// Applies the interchanges of rows j and pv[j], j = j0 .. j1 - 1 in order,
// to the columns [c1, c2) of the transposed panel pt except [x1, x2); a
// thread per column.
template <typename T>
inline void lu_swap_columns(device T* pt, int m, int p0,
                            const threadgroup int* pv, int j0, int j1, int c1,
                            int c2, int x1, int x2, int tid, int nt) {
  for (int c = c1 + tid; c < c2; c += nt) {
    if (c >= x1 && c < x2)
      continue;
    for (int j = j0; j < j1; ++j) {
      int p = pv[j - j0];
      if (p != j) {
        T t = LU_PT(j, c);
        LU_PT(j, c) = LU_PT(p, c);
        LU_PT(p, c) = t;
      }
    }
  }
}

// The first column whose update of the block row of the strip at s0 is
// still owed to column c (see lu.c, "recursive panel"): the strips of the
// panel [p0, pe), WS columns each, form an implicit binary tree, and the
// strips left of s0 in the left half of the node where s0's strip i and
// c's strip j part (the highest bit of i ^ j) have not updated column c
// yet: that node's GEMM comes after its whole left half. Rows at and below
// s0 of column c all lack exactly those strips, so interchanges among them
// stay consistent, and the strip's rows of c get them here, left-looking,
// just before the strip's block row is solved.
//
// Groups of G strips have no GEMM inside (the driver leaves their nodes'
// updates to the strip kernels, left-looking): a column of the strip's
// own group owes every strip of the group before s0.
inline int lu_owed_from(int p0, int WS, int G, int s0, int c) {
  const int si = (s0 - p0) / WS, sj = (c - p0) / WS;
  if (si / G == sj / G)
    return p0 + (si / G) * G * WS;
  int h = 0;
  while (((si ^ sj) >> (h + 1)) != 0)
    ++h;
  return p0 + ((si >> (h + 1)) << (h + 1)) * WS;
}

// The most such columns: half the widest panel (lu.c's panel_width), a
// node's left half less one strip.
#define LU_OWED_MAX 128

// Columns of the block row a warp of lu_panel takes at once: as many as
// keep CB * WS <= 32 owed sums (one per lane after lu_reduce_scatter),
// at most 8.
constexpr int lu_block_cols(int ws) { return 32 / ws < 8 ? 32 / ws : 8; }

constexpr int lu_log2(int n) { return n <= 1 ? 0 : 1 + lu_log2(n / 2); }

// Sums a[i] (N of them, N a power of two up to 32) over the warp's lanes
// and leaves sum i in lane i mod N: at each level a lane keeps the half of
// its values its lane bit selects and adds its partner's copy of that half
// (N - 1 shuffles in all, against 5 N for a butterfly per value); above N
// lanes a plain butterfly finishes. (Both loops have compile-time trip
// counts, so that NVRTC unrolls them fully and `a` stays in registers:
// with an inner bound of o, the offset of a shifted outer loop, `a` went
// to local memory.)
template <typename T, int N>
inline T lu_reduce_scatter(thread T* a, int lane) {
  LU_UNROLL
  for (int level = 0; level < lu_log2(N); ++level) {
    const int o = N >> (level + 1);
    const bool hi = (lane & o) != 0;
    LU_UNROLL
    for (int j = 0; j < N / 2; ++j)
      if (j < o) {
        const T send = hi ? a[j] : a[j + o];
        const T keep = hi ? a[j + o] : a[j];
        a[j] = keep + simd_shuffle_xor(send, (ushort)o);
      }
  }
  T x = a[0];
  LU_UNROLL
  for (int level = lu_log2(N); level < 5; ++level)
    x += simd_shuffle_xor(x, (ushort)(1 << level));
  return x;
}

//@kernel lu_small
// Factors each whole matrix (m, n <= NMAX) of the view A into W, piv and
// info. Template: T, NMAX. One threadgroup per matrix (grid.x = threads *
// matrices in this launch, batch0 the first), threads a multiple of 32.
//
// Right-looking, one column at a time in threadgroup memory (rows padded
// to NMAX + 1 so column reads fall in distinct banks): warp 0 finds the
// pivot, then the threads swap, scale and update the trailing block, a row
// per warp and columns across lanes.
threadgroup T S[NMAX * (NMAX + 1)];
threadgroup int pivot_row;
threadgroup int nonfinite;
constexpr int P = NMAX + 1;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
const int k = min(m, n);
const int64_t ar = A_strides[A_ndim - 2], ac = A_strides[A_ndim - 1];
const device T* a = A + lu_batch_offset(b, A_shape, A_strides, A_ndim);
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
const int lane = tid % 32, warp = tid / 32, warps = nt / 32;
if (tid == 0)
  nonfinite = 0;
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int e = tid; e < m * n; e += nt) {
  int i = e / n, j = e % n;
  T x = a[(int64_t)i * ar + (int64_t)j * ac];
  S[i * P + j] = x;
  if (!isfinite(x))
    nonfinite = 1; // every writer stores the same value
}
threadgroup_barrier(mem_flags::mem_threadgroup);
int bad = nonfinite != 0 ? LU_INFO_NONFINITE : 0;
for (int j = 0; j < k; ++j) {
  if (warp == 0) {
    T key = T(-1);
    int row = LU_NO_ROW;
    for (int i = j + lane; i < m; i += 32) {
      T x = lu_key(S[i * P + j]);
      if (lu_better(x, i, key, row)) {
        key = x;
        row = i;
      }
    }
    lu_warp_argmax(key, row);
    if (lane == 0)
      pivot_row = row;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const int p = pivot_row;
  if (tid == 0)
    piv[(int64_t)b * k + j] = p;
  if (p != j)
    for (int c = tid; c < n; c += nt) {
      T t = S[j * P + c];
      S[j * P + c] = S[p * P + c];
      S[p * P + c] = t;
    }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const T d = S[j * P + j];
  if (bad == 0)
    bad = lu_pivot_status(d, j);
  if (d != T(0))
    for (int i = j + 1 + tid; i < m; i += nt)
      S[i * P + j] = S[i * P + j] / d;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int i = j + 1 + warp; i < m; i += warps) {
    T l = S[i * P + j];
    for (int c = j + 1 + lane; c < n; c += 32)
      S[i * P + c] = fma(-l, S[j * P + c], S[i * P + c]);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
device T* w = W + (int64_t)b * m * n;
for (int e = tid; e < m * n; e += nt)
  w[e] = S[(e / n) * P + e % n];
if (tid == 0)
  info[b] = bad;

//@kernel lu_small_reg
// Factors each whole matrix (m <= NR, n <= NC) of the view A into W, piv
// and info, the matrix held in registers: the small path beyond what
// lu_small's threadgroup memory holds. Template: T, NR (row capacity, a
// multiple of 32), NC (column capacity, a multiple of CB), CB (column
// classes). One threadgroup of NR * CB threads per matrix (grid.x =
// threads * matrices in this launch, batch0 the first).
//
// Thread t holds row i = t % NR, the columns c = t / NR + CB q (q < NC /
// CB) of it: the rows stay with their threads for the whole
// factorization (an interchange swaps two threads' values), and the
// columns are dealt cyclically so that every class keeps its share of the
// shrinking trailing block. A warp is 32 rows of one class, so that the
// pivot search of column j runs in the NR / 32 warps of class j % CB:
// shuffles, then one candidate per warp in threadgroup memory. Per column
// two barriers: (1) after the candidates; every thread then picks the
// pivot row p, the rows p and j put their values out (urow, xrow) and the
// owners of column j their multipliers (lcol); (2) after that, rows j and
// p take each other's values, and every row below j updates its columns
// right of j in registers (urow read as a broadcast: a warp shares its
// columns). The loop over q is unrolled so that each register index is a
// constant (no local memory on CUDA); the semantics are lu_small's.
threadgroup T cand_key[NR / 32];
threadgroup int cand_row[NR / 32];
threadgroup T cand_val[NR / 32];
threadgroup T urow[NC];
threadgroup T xrow[NC];
threadgroup T lcol[NR];
threadgroup int pivots[NC]; // stored at the end: fewer live registers
threadgroup int nonfinite;
constexpr int R = NC / CB;
constexpr int NW = NR / 32;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
const int k = min(m, n);
const int64_t ar = A_strides[A_ndim - 2], ac = A_strides[A_ndim - 1];
const device T* a = A + lu_batch_offset(b, A_shape, A_strides, A_ndim);
const int tid = (int)thread_index_in_threadgroup;
const int i = tid % NR, cb = tid / NR, lane = tid % 32;
T x[R];
if (tid == 0)
  nonfinite = 0;
threadgroup_barrier(mem_flags::mem_threadgroup);
bool bad_in = false;
LU_UNROLL
for (int q = 0; q < R; ++q) {
  const int c = cb + CB * q;
  T v = T(0);
  if (i < m && c < n) {
    v = a[(int64_t)i * ar + (int64_t)c * ac];
    bad_in = bad_in || !isfinite(v);
  }
  x[q] = v;
}
if (bad_in)
  nonfinite = 1; // every writer stores the same value
threadgroup_barrier(mem_flags::mem_threadgroup);
int bad = nonfinite != 0 ? LU_INFO_NONFINITE : 0;
LU_UNROLL
for (int q = 0; q < R; ++q) {
  for (int cj = 0; cj < CB; ++cj) {
    const int j = cj + CB * q;
    if (j >= k) // the same for every thread
      break;
    if (cb == cj) { // whole warps: the owners of column j
      const bool live = i >= j && i < m;
      T key = live ? lu_key(x[q]) : T(-1);
      int row = live ? i : LU_NO_ROW;
      lu_warp_argmax(key, row);
      const T val = simd_shuffle(x[q], (ushort)(row & 31));
      if (lane == 0) {
        cand_key[i / 32] = key;
        cand_row[i / 32] = row;
        cand_val[i / 32] = val;
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    T pkey = cand_key[0];
    int p = cand_row[0];
    T d = cand_val[0];
    for (int w = 1; w < NW; ++w)
      if (lu_better(cand_key[w], cand_row[w], pkey, p)) {
        pkey = cand_key[w];
        p = cand_row[w];
        d = cand_val[w];
      }
    if (tid == 0) {
      pivots[j] = p;
      if (bad == 0)
        bad = lu_pivot_status(d, j);
    }
    if (i == p || (i == j && p != j)) {
      threadgroup T* out = i == p ? urow : xrow;
      LU_UNROLL
      for (int r = 0; r < R; ++r)
        out[cb + CB * r] = x[r];
    }
    // The multiplier of the row that sits at i after the interchange:
    // row p takes row j's value, which row j's thread hands over.
    if (cb == cj && i >= j && i < m && (i != p || p == j)) {
      const T l = d != T(0) ? x[q] / d : x[q];
      if (i == j) {
        if (p != j)
          lcol[p] = l;
      } else {
        lcol[i] = l;
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (p != j && (i == j || i == p)) {
      const threadgroup T* in = i == j ? urow : xrow;
      LU_UNROLL
      for (int r = 0; r < R; ++r)
        x[r] = in[cb + CB * r];
    }
    if (i > j && i < m) {
      const T l = lcol[i];
      LU_UNROLL
      for (int r = 0; r < R; ++r) {
        const int c = cb + CB * r;
        if (c == j)
          x[r] = l;
        else if (c > j)
          x[r] = fma(-l, urow[c], x[r]);
      }
    }
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* w = W + (int64_t)b * m * n;
LU_UNROLL
for (int q = 0; q < R; ++q) {
  const int c = cb + CB * q;
  if (i < m && c < n)
    w[(int64_t)i * n + c] = x[q];
}
for (int e = tid; e < k; e += NR * CB)
  piv[(int64_t)b * k + e] = pivots[e];
if (tid == 0)
  info[b] = bad;

//@kernel lu_copy
// W = A (the start of the blocked path), noting a non-finite input value
// in info. Template: T. LU_COPY_EW elements a thread, 32 apart (a warp
// covers 32 x LU_COPY_EW consecutive elements of W; grid.x >= m * n /
// LU_COPY_EW), batch entries along grid.y from batch0. One element a
// thread kept a single 4-byte load in flight per thread and moved ~0.8
// TB/s (0.32 ms at 8192^2 float32 on an H100); all of a thread's loads
// are issued before its stores (W might alias A as far as the compiler
// knows). The element's place is divided out once, then stepped.
const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
const uint mn = (uint)m * (uint)n;
const uint t = thread_position_in_grid.x;
const uint first = (t / 32u) * (32u * LU_COPY_EW) + t % 32u;
if (first >= mn)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* a = A + lu_batch_offset(b, A_shape, A_strides, A_ndim);
const int64_t sr = A_strides[A_ndim - 2], sc = A_strides[A_ndim - 1];
int i = (int)(first / (uint)n), j = (int)(first % (uint)n);
T x[LU_COPY_EW];
LU_UNROLL
for (int k = 0; k < LU_COPY_EW; ++k) {
  x[k] = first + 32u * (uint)k < mn ? a[(int64_t)i * sr + (int64_t)j * sc]
                                    : T(0);
  j += 32;
  while (j >= n) {
    j -= n;
    ++i;
  }
}
device T* w = W + (int64_t)b * m * n;
bool finite = true;
LU_UNROLL
for (int k = 0; k < LU_COPY_EW; ++k) {
  if (first + 32u * (uint)k < mn)
    w[first + 32u * (uint)k] = x[k];
  finite = finite && isfinite(x[k]);
}
if (!finite)
  info[b] = LU_INFO_NONFINITE; // every writer stores the same value

//@kernel lu_transpose
// Copies the panel [p0, pe) of each matrix of W, rows p0 .. m-1, into PT
// transposed (PT[b][c - p0][i] = W[b][i][c], PT ...×NB×m), or with BACK
// from PT back into W. Win is W (its shape only), nbp PT's NB. Template:
// T, BACK. 256 threads per threadgroup, a 32 x 32 tile each (grid.x = 256
// * tiles), batch entries along grid.y from batch0. Both sides are read
// and written a row of 32 at a time, through threadgroup memory (rows
// padded to 33 against bank conflicts).
threadgroup T tile[32 * 33];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
device T* w = W + (int64_t)b * m * n;
device T* pt = PT + (int64_t)b * nbp * m;
const int tcs = (pe - p0 + 31) / 32;
const int tg = (int)threadgroup_position_in_grid.x;
const int i0 = p0 + (tg / tcs) * 32, k0 = p0 + (tg % tcs) * 32;
const int tid = (int)thread_index_in_threadgroup;
const int tx = tid % 32, ty = tid / 32;
if (!BACK) {
  for (int y = ty; y < 32; y += 8)
    if (i0 + y < m && k0 + tx < pe)
      tile[y * 33 + tx] = w[(int64_t)(i0 + y) * n + k0 + tx];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int y = ty; y < 32; y += 8)
    if (k0 + y < pe && i0 + tx < m)
      LU_PT(i0 + tx, k0 + y) = tile[tx * 33 + y];
} else {
  for (int y = ty; y < 32; y += 8)
    if (k0 + y < pe && i0 + tx < m)
      tile[tx * 33 + y] = LU_PT(i0 + tx, k0 + y);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int y = ty; y < 32; y += 8)
    if (i0 + y < m && k0 + tx < pe)
      w[(int64_t)(i0 + y) * n + k0 + tx] = tile[y * 33 + tx];
}

//@kernel lu_panel
// Factors GL strips (1 or the group's G) from column c0 of each matrix,
// one after the other; per strip s0 (ws = min(WS, pe - s0) columns at
// (s0, s0), rows s0 .. m-1), applies its row interchanges to the other
// columns of the panel [p0, pe), and solves the strip's block row of the
// panel for the columns [s0 + ws, pe). The panel is held transposed in PT
// (...×NB×m, see lu_transpose), so that a column is contiguous; it is
// factored recursively (lu.c's run_panel): the strip first subtracts what
// its rows owe the earlier strips of its group of G, and its block row
// what it owes the strips before it (lu_owed_from); the driver's GEMMs on
// PT do the rest. Scalars: first = c0, pstart = p0, pend = pe, nrows =
// m, npiv = k = min(m, n), nbp PT's NB (not W's shape: the kernel
// touches only PT, piv and info, and so is not ordered after the work on
// W, which a look-ahead on a second stream would need). Template: T, NT
// (threads), R (rows per thread), WS (strip width), G (strips per group),
// GL (strips per launch). One threadgroup of NT threads per matrix
// (grid.x = NT * matrices, batch0 the first); needs m - c0 <= NT * R.
//
// The whole strip lives in registers (the driver picks R * WS to fit):
// thread t holds rows s0 + t + r NT, r < R, so a warp reads and writes
// 32 consecutive values of a column (one 128-byte line in float32); it
// is read once and written once. Row s0 + q, the diagonal row of column
// q, is thread q's register row 0. Each column costs one barrier: every
// warp publishes its best candidate row (key, index and the row's WS
// values) and thread q publishes row j, in slots alternating by column
// parity (a thread writing column q + 2 has passed barrier q + 1, so
// nobody still reads slot q); after the barrier every warp reduces the
// candidates by shuffles, so every thread knows the pivot, its row and
// the row it displaces, and swaps, scales and updates its own rows in
// registers.
//
// Then the panel's other columns: the strip's interchanges are composed
// into at most 2 WS moves (row src to row dst), all loaded before any is
// stored (one memory round trip instead of a chain of swaps). Left of the
// strip, a thread per column, that is all, and the rows of L it lands in
// the strip's rows (final now) are staged in threadgroup memory for the
// block row. Right of the strip, a warp per column, CB columns at once:
// the block row's owed updates are dot products along rows t < s0 of a
// column, contiguous in PT, so the lanes split t (one line per warp load,
// every load of the CB columns in flight together) and lu_reduce_scatter
// leaves one (column, row) sum per lane, which the lanes of a column then
// solve with L11 by shuffles. (A thread per column walking t, as before,
// read one line per element and waited an L2 round trip per owed
// column.) Every load of the kernel goes to a valid address, clamped,
// and its value is selected afterwards, and the scalars are copied to
// registers first, so that loads overlap (see lu.c's header).
constexpr int NW = NT / 32;
threadgroup T cand_key[2 * NW];
threadgroup int cand_row[2 * NW];
threadgroup T cand_val[2 * NW * WS];
threadgroup T row_j[2 * WS];
threadgroup T l11[WS * WS];
threadgroup int mv_src[2 * WS];
threadgroup int mv_dst[2 * WS];
threadgroup int mv_count;
// owed_l[q][t - o0]: row s0 + q of L in column t (< s0); own_u[t - t0][q]:
// the U rows of the strip's group (see below).
threadgroup T owed_l[WS * LU_OWED_MAX];
constexpr int GO = (G - 1) * WS > 0 ? (G - 1) * WS : 1;
threadgroup T own_u[GO * WS];
// The scalars arrive as 0-d arrays in device memory, which the compiler
// reads again after every store it cannot tell apart from them (and
// then waits on before it can form an address): copied once here.
const int c0 = first, p0 = pstart, pe = pend, m = nrows, k = npiv;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
device T* pt = PT + (int64_t)b * nbp * m;
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32, warp = tid / 32;
// GL strips from c0 one after the other (GL launches in one: the next
// strip's rows read this one's results after a barrier).
for (int gs = 0; gs < GL; ++gs) {
  const int s0 = c0 + gs * WS;
  if (s0 >= pe) // the same for every thread
    break;
  const int ws = min(WS, pe - s0);
  int bad = 0;
  T v[R][WS];
  int pv[WS];
  // Thread tid's rows are s0 + tid + r NT: column q of them at
  // mine[q * m + r * NT].
  device T* mine = pt + (int64_t)(s0 - p0) * m + s0 + tid;
  // (Every load here and below has a valid address, clamped, and its
  // value is selected afterwards: a load under a branch waits for the
  // branch, so that loads never overlap; clamped ones all go out at once.)
  LU_UNROLL
  for (int r = 0; r < R; ++r) {
    const bool live = s0 + tid + r * NT < m;
    const int rc = live ? r * NT : m - 1 - s0 - tid;
    LU_UNROLL
    for (int q = 0; q < WS; ++q) {
      const T x = mine[(int64_t)min(q, ws - 1) * m + rc];
      v[r][q] = live && q < ws ? x : T(0);
    }
  }
  // What the strip's rows owe to the strips before it in its group (their
  // L below s0 times their U rows of the strip's columns), left-looking:
  // at most (G - 1) WS columns, a compile-time bound, so that the loads of
  // all of them can be in flight together rather than one column per L2
  // round trip. The U rows go through threadgroup memory.
  const int t0 = lu_owed_from(p0, WS, G, s0, s0);
  if (t0 < s0) { // the same for every thread
    for (int e = tid; e < GO * WS; e += NT) {
      const int t = t0 + e / WS, q = e % WS;
      own_u[e] = q < ws && t < s0 ? LU_PT(t, s0 + q) : T(0);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // A column at a time, its R loads in flight together (all the columns'
    // at once would not fit in registers next to v).
    for (int t = t0; t < s0; ++t) {
      T l[R];
      LU_UNROLL
      for (int r = 0; r < R; ++r)
        l[r] = LU_PT(min(s0 + tid + r * NT, m - 1), t);
      LU_UNROLL
      for (int r = 0; r < R; ++r) {
        const T lr = s0 + tid + r * NT < m ? l[r] : T(0);
        LU_UNROLL
        for (int q = 0; q < WS; ++q)
          v[r][q] = fma(-lr, own_u[(t - t0) * WS + q], v[r][q]);
      }
    }
  }
  LU_UNROLL
  for (int q = 0; q < WS; ++q) {
    pv[q] = s0 + q;
    if (q >= ws)
      break;
    const int j = s0 + q, slot = q & 1;
    // This thread's best row for column j: rows >= j (only register row 0
    // can lie above j) and < m; rows rise with r, so the first wins ties.
    T key = T(-1);
    int best = LU_NO_ROW, best_r = 0;
    LU_UNROLL
    for (int r = 0; r < R; ++r) {
      const int row = s0 + tid + r * NT;
      if ((r > 0 || tid >= q) && row < m) {
        const T x = lu_key(v[r][q]);
        if (x > key) {
          key = x;
          best = row;
          best_r = r;
        }
      }
    }
    T wkey = key;
    int wrow = best;
    lu_warp_argmax(wkey, wrow);
    if (lane == 0) {
      cand_key[slot * NW + warp] = wkey;
      cand_row[slot * NW + warp] = wrow;
    }
    if (best == wrow && best != LU_NO_ROW)
      LU_UNROLL
      for (int r = 0; r < R; ++r)
        if (r == best_r)
          LU_UNROLL
          for (int q2 = 0; q2 < WS; ++q2)
            cand_val[(slot * NW + warp) * WS + q2] = v[r][q2];
    if (tid == q)
      LU_UNROLL
      for (int q2 = 0; q2 < WS; ++q2)
        row_j[slot * WS + q2] = v[0][q2];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // Every warp reduces the NW candidates by shuffles.
    T pkey = lane < NW ? cand_key[slot * NW + lane] : T(-1);
    int p = lane < NW ? cand_row[slot * NW + lane] : LU_NO_ROW;
    lu_warp_argmax(pkey, p);
    const int po = (p - s0) % NT, pr = (p - s0) / NT, pw = po / 32;
    T prow[WS];
    LU_UNROLL
    for (int q2 = 0; q2 < WS; ++q2)
      prow[q2] = cand_val[(slot * NW + pw) * WS + q2];
    const T d = prow[q];
    if (bad == 0)
      bad = lu_pivot_status(d, j);
    pv[q] = p;
    if (p != j) {
      LU_UNROLL
      for (int r = 0; r < R; ++r) {
        if (tid == q && r == 0)
          LU_UNROLL
          for (int q2 = 0; q2 < WS; ++q2)
            v[r][q2] = prow[q2];
        else if (tid == po && r == pr)
          LU_UNROLL
          for (int q2 = 0; q2 < WS; ++q2)
            v[r][q2] = row_j[slot * WS + q2];
      }
    }
    // Scale by the reciprocal (as LAPACK does where it is finite), else by
    // division; a zero pivot leaves the column as it is.
    const T rd = T(1) / d;
    const bool recip = isfinite(rd);
    if (d != T(0))
      LU_UNROLL
      for (int r = 0; r < R; ++r) {
        if (r > 0 || tid > q) {
          v[r][q] = recip ? v[r][q] * rd : v[r][q] / d;
          const T l = v[r][q];
          LU_UNROLL
          for (int q2 = q + 1; q2 < WS; ++q2)
            v[r][q2] = fma(-l, prow[q2], v[r][q2]);
        }
      }
  }
  LU_UNROLL
  for (int r = 0; r < R; ++r) {
    if (s0 + tid + r * NT < m)
      LU_UNROLL
      for (int q = 0; q < WS; ++q)
        if (q < ws)
          mine[(int64_t)q * m + r * NT] = v[r][q];
  }
  if (tid < ws)
    LU_UNROLL
    for (int q = 0; q < WS; ++q)
      l11[tid * WS + q] = v[0][q];
  // The strip's interchanges composed: mv_src[e] is the original row that
  // ends at row mv_dst[e]; entries < ws are the strip's rows.
  if (tid == 0) {
    int cnt = ws;
    for (int e = 0; e < ws; ++e)
      mv_src[e] = mv_dst[e] = s0 + e;
    LU_UNROLL
    for (int q = 0; q < WS; ++q) {
      const int p = pv[q];
      if (q < ws) {
        piv[(int64_t)b * k + s0 + q] = p;
        if (p != s0 + q) {
          int e = p - s0;
          if (e >= ws) {
            e = cnt;
            for (int f = ws; f < cnt; ++f)
              if (mv_dst[f] == p)
                e = f;
            if (e == cnt) {
              mv_src[cnt] = mv_dst[cnt] = p;
              ++cnt;
            }
          }
          const int t = mv_src[q];
          mv_src[q] = mv_src[e];
          mv_src[e] = t;
        }
      }
    }
    mv_count = cnt;
    for (int e = cnt; e < 2 * WS; ++e) // valid rows for unused slots
      mv_src[e] = mv_dst[e] = s0;
    if (bad != 0 && info[b] == 0)
      info[b] = bad;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const int cnt = mv_count;
  // Left of the strip: the interchanges; the rows they land in s0 .. s0 +
  // ws - 1 (L, final now) are what the block row owes.
  const int o0 = max(p0, s0 - LU_OWED_MAX);
  for (int c = p0 + tid; c < s0; c += NT) {
    T x[2 * WS];
    LU_UNROLL
    for (int e = 0; e < 2 * WS; ++e)
      x[e] = LU_PT(mv_src[e], c);
    LU_UNROLL
    for (int e = 0; e < 2 * WS; ++e)
      if (e < cnt)
        LU_PT(mv_dst[e], c) = x[e];
    if (c >= o0)
      LU_UNROLL
      for (int q = 0; q < WS; ++q)
        if (q < ws)
          owed_l[q * LU_OWED_MAX + c - o0] = x[q];
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Right of the strip, a warp per column, CB columns at a time: x (lane e
  // < cnt holds move e's value), the owed sums along t split over the lanes,
  // reduced to one per lane (column ci = lane / WS, row qi = lane % WS),
  // the solve with L11 among a column's WS lanes, the stores.
  constexpr int CB = lu_block_cols(WS);
  constexpr int N = CB * WS;
  const int ci = (lane % N) / WS, qi = lane % WS;
  constexpr int NH = LU_OWED_MAX / 32;
  const int src = mv_src[min(lane, 2 * WS - 1)];
  for (int cb = s0 + ws + warp * CB; cb < pe; cb += NW * CB) {
    // The columns' owed ranges first, then every load, then the sums.
    int from[CB];
    LU_UNROLL
    for (int i = 0; i < CB; ++i)
      from[i] = cb + i < pe ? lu_owed_from(p0, WS, G, s0, cb + i) : s0;
    T x[CB];
    T u[CB][NH];
    LU_UNROLL
    for (int i = 0; i < CB; ++i) {
      const int c = min(cb + i, pe - 1);
      x[i] = LU_PT(src, c);
      LU_UNROLL
      for (int h = 0; h < NH; ++h)
        u[i][h] = LU_PT(min(from[i] + h * 32 + lane, s0), c);
    }
    T acc[N];
    LU_UNROLL
    for (int i = 0; i < CB; ++i) {
      LU_UNROLL
      for (int q = 0; q < WS; ++q)
        acc[i * WS + q] = T(0);
      LU_UNROLL
      for (int h = 0; h < NH; ++h) {
        const int t = from[i] + h * 32 + lane;
        const int ti = min(max(t - o0, 0), LU_OWED_MAX - 1);
        LU_UNROLL
        for (int q = 0; q < WS; ++q) {
          const T y = fma(owed_l[q * LU_OWED_MAX + ti], u[i][h],
                          acc[i * WS + q]);
          acc[i * WS + q] = t < s0 ? y : acc[i * WS + q];
        }
      }
    }
    const T owed = lu_reduce_scatter<T, N>(acc, lane);
    T y = T(0);
    LU_UNROLL
    for (int i = 0; i < CB; ++i) {
      const T xi = simd_shuffle(x[i], (ushort)qi);
      if (i == ci)
        y = xi - owed;
    }
    // Forward substitution with the unit L11: y_p is final once the steps
    // before p are done, and every lane of the column takes it then.
    LU_UNROLL
    for (int p = 0; p + 1 < WS; ++p) {
      const T yp = simd_shuffle(y, (ushort)(lane - qi + p));
      if (qi > p)
        y = fma(-l11[qi * WS + p], yp, y);
    }
    if (lane < N && qi < ws && cb + ci < pe)
      LU_PT(s0 + qi, cb + ci) = y;
    // The strip's original rows that move below it owe nothing here.
    LU_UNROLL
    for (int i = 0; i < CB; ++i)
      if (cb + i < pe && lane >= ws && lane < cnt)
        LU_PT(mv_dst[lane], cb + i) = x[i];
  }
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
}

//@kernel lu_panel_global
// lu_panel for strips whose rows do not fit in registers (m - c0 > NT *
// R): the same work (GL strips from c0), a column at a time,
// right-looking on the transposed panel in device memory. Template: T,
// NT, WS, G, GL. Same inputs, outputs and launch.
threadgroup T cand_key[NT / 32];
threadgroup int cand_row[NT / 32];
threadgroup int pv_strip[WS];
threadgroup T l11[WS * (WS + 1)];
threadgroup T tile[WS * 64];
constexpr int NW = NT / 32;
const int c0 = first, p0 = pstart, pe = pend, m = nrows, k = npiv;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
device T* pt = PT + (int64_t)b * nbp * m;
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32, warp = tid / 32;
for (int gs = 0; gs < GL; ++gs) {
  const int s0 = c0 + gs * WS;
  if (s0 >= pe) // the same for every thread
    break;
  const int ws = min(WS, pe - s0);
  int bad = 0;
  // What the strip's rows owe to the strips before it in its group.
  for (int i = s0 + tid; i < m; i += NT)
    for (int t = lu_owed_from(p0, WS, G, s0, s0); t < s0; ++t)
      for (int c = s0; c < s0 + ws; ++c)
        LU_PT(i, c) = fma(-LU_PT(i, t), LU_PT(t, c), LU_PT(i, c));
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
  for (int j = s0; j < s0 + ws; ++j) {
    T key = T(-1);
    int row = LU_NO_ROW;
    for (int i = j + tid; i < m; i += NT) {
      T x = lu_key(LU_PT(i, j));
      if (x > key) {
        key = x;
        row = i;
      }
    }
    lu_warp_argmax(key, row);
    if (lane == 0) {
      cand_key[warp] = key;
      cand_row[warp] = row;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    T pkey = cand_key[0];
    int p = cand_row[0];
    for (int x = 1; x < NW; ++x)
      if (lu_better(cand_key[x], cand_row[x], pkey, p)) {
        pkey = cand_key[x];
        p = cand_row[x];
      }
    if (tid == 0)
      pv_strip[j - s0] = p;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // The interchange across the whole panel, this column included.
    lu_swap_columns(pt, m, p0, pv_strip + (j - s0), j, j + 1, p0, pe, 0, 0,
                    tid, NT);
    threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
    const T d = LU_PT(j, j);
    if (bad == 0)
      bad = lu_pivot_status(d, j);
    for (int i = j + 1 + tid; i < m; i += NT) {
      T l = LU_PT(i, j);
      if (d != T(0))
        l = l / d;
      LU_PT(i, j) = l;
      for (int c = j + 1; c < s0 + ws; ++c)
        LU_PT(i, c) = fma(-l, LU_PT(j, c), LU_PT(i, c));
    }
    threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
  }
  for (int j = tid; j < ws; j += NT)
    piv[(int64_t)b * k + s0 + j] = pv_strip[j];
  if (tid == 0 && bad != 0 && info[b] == 0)
    info[b] = bad;
  // The block row's owed updates (see lu_owed_from), then its solve.
  for (int c = s0 + ws + tid; c < pe; c += NT)
    for (int t = lu_owed_from(p0, WS, G, s0, c); t < s0; ++t)
      for (int q = 0; q < ws; ++q)
        LU_PT(s0 + q, c) =
            fma(-LU_PT(s0 + q, t), LU_PT(t, c), LU_PT(s0 + q, c));
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
  lu_block_row_solve<T, WS, 64>(pt, m, p0, s0, ws, s0 + ws, pe, l11, tile,
                                tid, NT);
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
}

//@kernel lu_strip_grid
// Factors the strip of ws = min(W, pe - s0) columns at (s0, s0) of one
// matrix (rows s0 .. m-1) held transposed in PT (see lu_panel), with the
// whole grid: P threadgroups of NT threads (grid.x = NT P, P <= the
// device's multiprocessors, one group per SM fits, so all are resident at
// once), row s0 + g NT + t loaded by thread t of group g, its W values in
// registers. Then the strip's interchanges on the panel's other columns
// [p0, s0) and [s0 + ws, pe) and the block row solve U12 = L11^-1 A12 for
// [s0 + ws, pe); the driver's GEMM updates the rest of the panel. Writes
// piv and info as lu_panel does. Scalars: first = s0, pstart = p0, pend =
// pe, nbp PT's NB, nrows = m, npiv = k. Outputs beside PT, piv and info:
// X (T, viewed as 64-bit words: 2 P slots of SW words, see below, zeroed
// by the driver once per factorization; the driver allocates 2 (P + 1))
// and S (int32: one arrival counter per strip at LU_GRID_CTR + s0 / W,
// zeroed by the driver). Template: T, W, NT. CUDA only: a grid-wide
// exchange needs every group resident, which a cooperative launch gives
// there and the CPU backend does not promise: the driver launches it
// there only with P = 1 (tests, lu.c's kiln__lu_grid_test).
//
// Row labels: rows are interchanged by relabelling, not by moving values.
// Each thread keeps the values it loaded and `lab`, the row of the matrix
// (as interchanged so far) that they are; the pivot's thread takes label
// j and is final, the thread labelled j takes the pivot's label and goes
// on as a candidate. Candidates, ties and piv are all in labels, which is
// LAPACK's order. At the end each thread stores its values in row `lab`.
//
// Per column j = s0 + q, one grid-wide exchange, with stamped words (see
// lu_word) in place of a barrier. Each group finds its best candidate (warp
// reductions, then the NW warps' bests through threadgroup memory: group
// barrier 1), and the thread holding it publishes its key and label, then its W
// values, in slot (q % 2, g); a group without a candidate (its few live rows
// all pivots already) publishes an empty one from thread 0 (key 0, label
// LU_NO_ROW, which every real row beats). It cannot happen with P = 1, so the
// CPU tests do not reach it. A value of a slot is 32-bit pieces (two per
// float64), each in its own 64-bit word with the stamp j + 1 (unique in the
// factorization: X starts zeroed, stamps start at 1). Only warp 0 of each
// group reads: it loads the P keys (lane c slot c, and c + 32; 16-byte relaxed
// loads from L2) and again each pair until both words carry the stamp, reduces
// the P candidates (lu_better: largest |a|, first row on ties, NaN largest, on
// label * LU_GRID_PMAX + slot, which orders as the label and names the slot),
// then loads only the winner's row (a 16-byte pair a lane, again until
// stamped) into threadgroup memory; the other warps skip every exchange load
// and wait at group barrier 2, after which every thread takes the pivot row
// from there, relabels, scales and updates its own row. Threads t < W also
// keep the pivot row's L part (L11's row q) in threadgroup memory, for the
// block row solve.
//
// Why a reader never takes a stale value: a word with column j's stamp
// was written for column j (stamps are unique, and a 64-bit word is read
// whole), and a reader keeps loading until every word it needs has it.
// Why it never waits forever: every group publishes its whole slot (key and
// row, an empty one if need be) every column, so whichever slot wins, its row
// comes. Why an overwrite is safe: slot (q % 2, h) is written again only for
// column q + 2, by group h's publisher after h's barrier 1 of column q + 2, so
// after h's warp 0 has seen every group's column q + 1 key with its stamp (h's
// barrier 2 of column q + 1 waits for that warp); group g published that key
// after g's barrier 1 of column q + 1, which g's warp 0 passes only after g's
// barrier 2 of column q, which that warp reaches only once its column q loads
// (the P keys and the winner's row: g's only reads of parity q % 2) have
// returned with the stamp (the loop exits depend on them). So the overwrite is
// causally after every read of column q (PTX's no-thin-air axiom, and in
// hardware the loads completed before the stores that follow them could be
// seen). Threadgroup memory is single-buffered across columns for the same
// reason: column q + 1 writes it only after its barrier 1, which every warp
// passes after its column q reads.
//
// The critical path of a column, counted (lu.c has it in time): the
// group's argmax (2 warp-reduce instructions, 3 in float64: see
// lu_redux_argmax), barrier 1, the NW warps' argmax (2 or 3), the
// publisher's 16-byte stores reaching L2 (~half a round trip; no fence:
// the stores need no order among themselves or with anything), the
// readers' loads seeing them (they poll, so on average about a round trip
// after they land), barrier 2, the pivot's slot from threadgroup memory
// (one broadcast load), the pivot row (16-byte loads) and one fma for
// the next column's key: about 1.5 L2 round trips and 2 group barriers.
// The P-way argmax was on that path, after barrier 2 in every warp (a
// key and a label loaded from threadgroup memory, a compare, 2 or 3
// reductions: ~70-90 cycles); it now runs in warp 0 before barrier 2,
// after the keys land, which the publisher stores first (its 32 row
// stores issue after them): ~40-60 cycles less a column by count, and
// warps now load whole rows (512 contiguous bytes; 8 pairs a thread
// instead of 9: 213 registers in float32, 232 in float64). Before the
// labels, row j travelled as one more slot: group 0's thread j stored its
// RW / 2 16-byte words before its own argmax (~32-64 issue cycles ahead
// of group 0's barrier 1, on every column's path, since every group waits
// for group 0's candidate), every group loaded and polled its 32 pairs
// too (P + 1 slots), and the pivot's thread unstaged it (16 shared loads)
// before its next key. By the count ~30-60 ns a column; measured with the
// rest of that series (lu.c): 42.7 -> 37.4 ms at 8192^2.
// Only the winner's row is read. Before, every warp of every group
// loaded and polled its share of all P slots' rows (P SW 8-byte words a group a
// column, ~17 KiB at P = 32, staged in threadgroup memory), with the pick in
// warp 0 while the rows landed; now a group loads P keys and one row (~1.5 KiB
// at P = 32), at the price of one more dependent L2 round trip a column (the
// row after the key: ~2.5 round trips on the path above). Measured (H100,
// 2026-11-27, one process): LU 8192^2 float32 29.2 ms here against 30.1 on
// a rolled variant of this kernel (one copy of the column's code, registers
// rotating a column a step; 4096^2: 11.6 / 12.0), so the rolled kernel was
// deleted (bench/RESULTS.md, sixth session). Static SASS (sm_90a): 34,368 ->
// 24,760 instructions in float32, 21,264 -> 16,472 in float64; registers
// 213 -> 177 and 232 -> 188, no spills; threadgroup memory 35,216 ->
// 18,064 bytes in float32.
//
// After the columns (the strip's tail), nothing reads the strip's columns
// from memory: L11 is in threadgroup memory, and the composed
// interchanges come from piv by tracing each moved row back through the
// swaps, a thread per row in parallel (~W dependent steps of a compare
// and a select), where before one thread replayed the W swaps in
// threadgroup memory (~65 cycles each, ~2.3 us a strip) after another
// W-step search, and L11 came from L2 after the grid barrier (1 round
// trip). The grid barrier is kept for one reason: a relabelled thread
// stores its row in another thread's row, possibly another group's,
// which that thread read at the start (a write after a read across
// groups); the rows that stayed in place are stored at once, the
// arrival made right after the columns, and the wait comes after the
// other columns' pass, when every group has long arrived.
constexpr int NW = NT / 32;
constexpr int WH = W / 32;
// Words per value, per row; a slot: the row's pieces, then the key's,
// then the label, padded to 16 bytes; pairs of words in a slot and per
// thread.
constexpr int KW = (int)sizeof(T) / 4;
constexpr int RW = W * KW;
constexpr int SW = RW + 4;
constexpr int NPR = RW / 2;
// (A warp loads a slot's row, a pair per lane.)
static_assert(NPR == 32, "lu_strip_grid: a row is 32 pairs of words");
constexpr int NK = (KW + 2) / 2;
threadgroup T cand_key[2 * NW];
threadgroup int cand_row[2 * NW];
threadgroup int pv_s[W];
threadgroup int sel_s[2];
threadgroup int src_s[2 * W];
threadgroup int dst_s[2 * W];
threadgroup T l11[W * W];
// Column q's pivot row, as published: RW pieces (declared as uint4 for
// 16-byte loads of it).
threadgroup uint4 stage4[RW / 4];
threadgroup uint* stage = (threadgroup uint*)stage4;
const int s0 = first, p0 = pstart, pe = pend, m = nrows;
const int P = (int)threadgroups_per_grid.x;
const int g = (int)threadgroup_position_in_grid.x;
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32, warp = tid / 32;
const int ws = min(W, pe - s0);
device T* pt = PT;
device int* ctr = S + LU_GRID_CTR + s0 / W;
device ulong* xw = (device ulong*)X;
const int row = s0 + g * NT + tid;
const bool live = row < m;
T v[W];
device T* strip = pt + (int64_t)(s0 - p0) * m;
LU_UNROLL
for (int q = 0; q < W; ++q) {
  const T x = strip[(int64_t)min(q, ws - 1) * m + min(row, m - 1)];
  v[q] = live && q < ws ? x : T(0);
}
// The row these values are, as interchanged so far (see above).
int lab = row;
// Warp 0's key pairs (slot lane + 32 u, pair RW / 2 + k at bit u NK +
// k).
uint kneed = 0;
LU_UNROLL
for (int u = 0; u < 2; ++u)
  if (warp == 0 && lane + 32 * u < P)
    kneed |= ((1u << NK) - 1) << (u * NK);
int bad = 0;
LU_UNROLL
for (int q = 0; q < W; ++q) {
  if (q >= ws)
    break;
  const int j = s0 + q, slot = q & 1;
  const uint stamp = (uint)(j + 1);
  device ulong* xs = xw + (int64_t)slot * P * SW;
  // The group's best candidate.
  const bool cand = live && lab >= j;
  T wk = cand ? lu_key(v[q]) : T(-1);
  int wr = cand ? lab : LU_NO_ROW;
  lu_redux_argmax(wk, wr);
  if (lane == 0) {
    cand_key[slot * NW + warp] = wk;
    cand_row[slot * NW + warp] = wr;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  T gk = cand_key[slot * NW + lane % NW];
  int gr = cand_row[slot * NW + lane % NW];
  lu_redux_argmax(gk, gr);
  // Publish it: its row's pieces, then the key's and the label (an
  // empty slot, key 0 and LU_NO_ROW, from thread 0 if there is none).
  // The key first: warp 0's readers reduce the keys while the rows are
  // still landing.
  if (lab == gr || (gr == LU_NO_ROW && tid == 0)) {
    device ulong* dst = xs + (int64_t)g * SW;
    uint kp[4] = {0, 0, 0, 0};
    lu_pieces(gk, kp);
    kp[KW] = (uint)gr;
    lu_st_pair(dst + RW, lu_word(kp[0], stamp), lu_word(kp[1], stamp));
    if (KW == 2)
      lu_st_pair(dst + RW + 2, lu_word(kp[2], stamp), lu_word(kp[3], stamp));
    LU_UNROLL
    for (int q2 = 0; q2 < W; q2 += 2 / KW) {
      uint pc[4]; // v[q2]'s pieces, then (float32) v[q2 + 1]'s
      lu_pieces(v[q2], pc);
      lu_pieces(v[min(q2 + 1, W - 1)], pc + KW);
      lu_st_pair(dst + q2 * KW, lu_word(pc[0], stamp), lu_word(pc[1], stamp));
    }
  }
#if !KILN_BACKEND_CUDA
  // One group, its threads run one after another up to a barrier: every
  // word is written before anyone reads.
  threadgroup_barrier(mem_flags::mem_device);
#endif
  // Warp 0 alone reads the exchange (see above): the P keys polled until
  // all are in, the pivot picked and left in sel_s, then the winner's
  // row only, polled until stamped, into threadgroup memory.
  if (warp == 0) {
    ulong ka[2 * NK], kb[2 * NK];
    uint kpending = kneed;
    LU_UNROLL
    for (int i = 0; i < 2 * NK; ++i) // (lanes past P read them unloaded)
      ka[i] = kb[i] = 0;
    device ulong* keys = xs + lane * SW + RW;
    do {
      LU_UNROLL
      for (int i = 0; i < 2 * NK; ++i)
        if ((kpending >> i) & 1u)
          lu_ld_pair(keys + (i / NK) * 32 * SW + 2 * (i % NK), ka[i], kb[i]);
      LU_UNROLL
      for (int i = 0; i < 2 * NK; ++i)
        if (((kpending >> i) & 1u) && lu_stamped(ka[i], stamp) &&
            lu_stamped(kb[i], stamp))
          kpending &= ~(1u << i);
#if !KILN_BACKEND_CUDA
      // Every word was written before the barrier above, so one pass
      // must do: an unstamped word here is a bug, which all-ones pieces
      // (NaN values, row -1) make the tests fail on rather than hang.
      LU_UNROLL
      for (int i = 0; i < 2 * NK; ++i)
        if ((kpending >> i) & 1u)
          ka[i] = kb[i] = ~(ulong)0;
      kpending = 0;
#endif
    } while (kpending != 0);
#if KILN_BACKEND_CUDA
    // The lanes leave the polling loop at different times, and the warp
    // reductions below act on __activemask(): reconverge the warp first,
    // or a part of it could pick its own pivot.
    asm volatile("bar.warp.sync -1;" ::: "memory");
#endif
    // The pivot among the P candidates, reduced on label * LU_GRID_PMAX
    // + slot (labels < 2^25: lu.c's use_grid), or LU_NO_ROW for an empty
    // slot.
    T pk = T(-1);
    int pi = LU_NO_ROW;
    LU_UNROLL
    for (int u = 0; u < 2; ++u) {
      const int c = lane + 32 * u, i = u * NK;
      const T k2 = lu_key_of((uint)ka[i], (uint)kb[i], T(0));
      const int r2 = (int)(uint)(KW == 1 ? kb[i] : ka[i + NK - 1]);
      const int i2 = r2 == LU_NO_ROW ? LU_NO_ROW : r2 * LU_GRID_PMAX + c;
      if (c < P && lu_better(k2, i2, pk, pi)) {
        pk = k2;
        pi = i2;
      }
    }
    lu_redux_argmax(pk, pi);
    if (lane == 0)
      sel_s[slot] = pi;
    // The winner's row, pair `lane` (clamped: only a broken exchange
    // could name a slot outside; every slot is published every column,
    // so the poll ends either way).
    device ulong* const src =
        xs + min(pi % LU_GRID_PMAX, P - 1) * SW + 2 * lane;
    ulong a, b;
    bool in = false;
    do {
      lu_ld_pair(src, a, b);
      in = lu_stamped(a, stamp) && lu_stamped(b, stamp);
#if !KILN_BACKEND_CUDA
      if (!in)
        a = b = ~(ulong)0;
      in = true;
#endif
    } while (!in);
    ((threadgroup uint2*)stage)[lane] = uint2((uint)a, (uint)b);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Every thread: the pivot and its row.
  const int p = sel_s[slot] / LU_GRID_PMAX;
  T prow[W];
  lu_unstage<W>(stage4, prow);
  if (tid == 0)
    pv_s[q] = p;
  if (lab == p)
    lab = j;
  else if (lab == j)
    lab = p;
  const T d = prow[q];
  if (bad == 0)
    bad = lu_pivot_status(d, j);
  // Scale by the reciprocal where it is finite (as LAPACK), else divide;
  // a zero pivot leaves the column as it is.
  const T rd = T(1) / d;
  const bool recip = isfinite(rd);
  if (d != T(0) && live && lab > j) {
    v[q] = recip ? v[q] * rd : v[q] / d;
    const T l = v[q];
    LU_UNROLL
    for (int q2 = q + 1; q2 < W; ++q2)
      v[q2] = fma(-l, prow[q2], v[q2]);
  }
  // L11's row q (zero from the diagonal on), after the next key's work.
  if (tid < W)
    l11[tid * W + q] =
        tid < q ? lu_unpiece(stage + tid * KW, T(0)) : T(0);
}
// Every thread's initial loads are before this barrier, and so (for the
// relabelled rows' stores below) before the arrival; pv_s and l11 are
// complete after it.
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid == 0)
  lu_grid_arrive(ctr, 1);
device T* mine = strip + (int64_t)min(lab, m - 1);
if (live && lab == row)
  LU_UNROLL
  for (int q = 0; q < W; ++q)
    if (q < ws)
      mine[(int64_t)q * m] = v[q];
if (g == 0 && tid < ws)
  piv[s0 + tid] = pv_s[tid];
if (g == 0 && tid == 0 && bad != 0 && info[0] == 0)
  info[0] = bad;
// The strip's interchanges composed (as lu_laswp): slot e < ws is row s0
// + e, slot W + f the pivot row of column s0 + f when outside the strip
// (twice if a row is pivot twice: both slots then move the same value to
// the same place); src_s[e] is the row whose value ends in dst_s[e],
// found by undoing the swaps from the last.
for (int e = tid; e < 2 * W; e += NT) {
  int dst = -1;
  if (e < ws)
    dst = s0 + e;
  else if (e >= W && e - W < ws && pv_s[e - W] >= s0 + ws)
    dst = pv_s[e - W];
  int pos = dst;
  if (dst >= 0)
    for (int q = ws - 1; q >= 0; --q) {
      const int jq = s0 + q, pq = pv_s[q];
      pos = pos == jq ? pq : pos == pq ? jq : pos;
    }
  dst_s[e] = dst;
  src_s[e] = pos;
}
threadgroup_barrier(mem_flags::mem_threadgroup);
const int nleft = s0 - p0, nright = pe - s0 - ws;
// A warp per column: the moves' sources loaded (lane e % 32 holds slot e),
// the rows outside the strip stored, then left of the strip the strip's
// rows as well, right of it those rows solved with L11 first.
bool valid[2 * WH];
int dstr[2 * WH], srcr[2 * WH];
LU_UNROLL
for (int h = 0; h < 2 * WH; ++h) {
  const int e = h * 32 + lane;
  valid[h] = dst_s[e] >= 0;
  dstr[h] = e < W ? s0 + e : valid[h] ? dst_s[e] : s0;
  srcr[h] = valid[h] ? src_s[e] : s0;
}
for (int ci = g * NW + warp; ci < nleft + nright; ci += P * NW) {
  const int c = ci < nleft ? p0 + ci : s0 + ws + (ci - nleft);
  device T* col = pt + (int64_t)(c - p0) * m;
  T x[2 * WH];
  LU_UNROLL
  for (int h = 0; h < 2 * WH; ++h)
    x[h] = LU_LDCG(col + srcr[h]);
  simdgroup_barrier(mem_flags::mem_device);
  const bool right = ci >= nleft;
  LU_UNROLL
  for (int h = 0; h < 2 * WH; ++h)
    if (valid[h] && (h >= WH || !right))
      col[dstr[h]] = x[h];
  if (right) {
    LU_UNROLL
    for (int q = 0; q + 1 < W; ++q) {
      if (q + 1 >= ws)
        break;
      const T yq = simd_shuffle(x[q / 32], (ushort)(q % 32));
      LU_UNROLL
      for (int h = 0; h < WH; ++h)
        x[h] = fma(-l11[q * W + h * 32 + lane], yq, x[h]);
    }
    LU_UNROLL
    for (int h = 0; h < WH; ++h)
      if (h * 32 + lane < ws)
        col[s0 + h * 32 + lane] = x[h];
  }
}
// The relabelled rows, into rows that other threads read at the start:
// after every group's arrival.
lu_grid_wait(ctr, P, tid);
if (live && lab != row)
  LU_UNROLL
  for (int q = 0; q < W; ++q)
    if (q < ws)
      mine[(int64_t)q * m] = v[q];

//@kernel lu_laswp_plan
// The panel's interchanges (pivots p0 .. pe-1, LAPACK's order) composed
// into one row permutation of the rows they touch, for lu_laswp: plan
// (int32, 4 NB per matrix) holds 2 NB destination rows, then their 2 NB
// source rows. Entry 2i is row p0 + i, entry 2i + 1 the pivot row pv[i]
// when it lies below the panel and is its first use (else -1: a row of
// the panel, or a repeat, is already another entry); the source of a
// destination q is where its final contents start, found by tracing q
// back through the swaps, last to first (a thread per entry, NB steps of a
// compare and a select, all entries at once). Also clears the matrix's
// flag for lu_linv (this panel's). Template: NB. One threadgroup of 2 NB
// threads per matrix (grid.x = 2 NB * matrices), batch0 the first.
threadgroup int pvs[NB];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const int np = pe - p0;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
const device int* pv = piv + (int64_t)b * k + p0;
device int* pl = plan + (int64_t)b * 4 * NB;
const int e = (int)thread_index_in_threadgroup;
if (e < np)
  pvs[e] = pv[e];
if (e == 0)
  flag[b] = 0;
threadgroup_barrier(mem_flags::mem_threadgroup);
const int i = e >> 1;
int dst = -1;
if (i < np) {
  dst = (e & 1) ? pvs[i] : p0 + i;
  if (e & 1) {
    bool dup = dst < pe;
    for (int j = 0; j < i; ++j)
      dup = dup || pvs[j] == dst;
    if (dup)
      dst = -1;
  }
}
int src = dst;
if (dst >= 0)
  for (int j = np - 1; j >= 0; --j) {
    const int a = p0 + j, v = pvs[j];
    src = src == a ? v : (src == v ? a : src);
  }
pl[e] = dst;
pl[2 * NB + e] = src;

//@kernel lu_laswp
// The panel's interchanges on every column outside the panel [p0, pe), as
// lu_laswp_plan composed them: a gather, every moved row copied from its
// source. Template: T, NB, NT (threads, a multiple of 32 dividing 64 NB),
// SB. Each threadgroup owns 32 columns (a warp's 32 lanes, one coalesced
// 128-byte (256-byte) row segment per load) of every moved row, and
// reads all of them into registers (E per thread) before a barrier and
// writes them after it: a column belongs to one group, so no source is
// overwritten before it is read, whatever the order of the rows. Entries
// that move nothing load row p0 (one cached line) and store nothing, so
// that every load is unconditional and issues at once. With SB, the
// panel's own rows of the block row (columns from pe) go, moved or not,
// into the scratch S (...×NB×ld, row d - p0, column c - pe; Sin binds it
// again for its shape) instead of W:
// the block-row solve then reads them from there (lu.c's block_row).
// grid.x = NT * ceil((n - np) / 32), batch entries along grid.y from
// batch0.
threadgroup int pd[2 * NB], ps[2 * NB];
constexpr int NW = NT / 32, E = 2 * NB / NW;
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int np = pe - p0;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
device T* w = W + (int64_t)b * m * n;
const device int* pl = plan + (int64_t)b * 4 * NB;
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid & 31, wp = tid >> 5;
for (int e = tid; e < 2 * NB; e += NT) {
  pd[e] = pl[e];
  ps[e] = pl[2 * NB + e];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
const int outside = n - np;
const int c = (int)threadgroup_position_in_grid.x * 32 + lane;
const bool live = c < outside;
const int cc = live ? c : outside - 1;
const int col = cc < p0 ? cc : cc + np;
const bool tos = SB && col >= pe;
const int ld = Sin_shape[Sin_ndim - 1];
const int64_t sbase = (int64_t)b * Sin_shape[Sin_ndim - 2] * ld;
T v[E];
LU_UNROLL
for (int q = 0; q < E; ++q) {
  const int d = pd[wp + q * NW], s = ps[wp + q * NW];
  const bool need = d >= 0 && (s != d || (tos && d < pe));
  v[q] = w[(int64_t)(need ? s : p0) * n + col];
}
threadgroup_barrier(mem_flags::mem_device);
if (live) {
  LU_UNROLL
  for (int q = 0; q < E; ++q) {
    const int d = pd[wp + q * NW], s = ps[wp + q * NW];
    if (d < 0)
      continue;
    if (tos && d < pe)
      S[sbase + (int64_t)(d - p0) * ld + (col - pe)] = v[q];
    else if (s != d)
      w[(int64_t)d * n + col] = v[q];
  }
}

//@kernel lu_linv_diag
// The inverses of the 32 x 32 diagonal blocks of the panel's unit lower
// L11 (W's rows and columns p0 .. pe-1, identity past pe), into the same
// blocks of Li (...×NB×NB, zeros above each block's diagonal): the first
// step of lu_linv. A warp per column of the block's inverse, a lane per
// row: column c is e_c carried forward through the block's 31 columns,
// one shuffle and one FMA a step, the block read once, coalesced, into
// threadgroup memory. Sets the matrix's flag (see lu_linv) on an entry
// that is not finite or larger than LMAX. Template: T, LMAX, NB.
// Threadgroups of 1024 threads, one per diagonal block of the np rows
// (grid.x = 1024 * ceil(np / 32)), batch entries along grid.y from
// batch0.
threadgroup T lb[32][33];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int np = pe - p0;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* w = Win + (int64_t)b * m * n;
const int nb = NB;
device T* li = Li + (int64_t)b * nb * nb;
const int tid = (int)thread_index_in_threadgroup;
const int r0 = (int)threadgroup_position_in_grid.x * 32;
const int lane = tid & 31, wc = tid >> 5;
{
  const int r = r0 + wc, cl = r0 + lane; // lb[row][column], coalesced
  lb[wc][lane] =
      r < np && cl < r ? w[(int64_t)(p0 + r) * n + p0 + cl] : T(0);
}
threadgroup_barrier(mem_flags::mem_threadgroup);
T x = lane == wc ? T(1) : T(0);
for (int kk = wc; kk < 31; ++kk) {
  const T xk = simd_shuffle(x, (ushort)kk);
  if (lane > kk)
    x = fma(-lb[lane][kk], xk, x);
}
li[(int64_t)(r0 + lane) * nb + r0 + wc] = x;
if (!(fabs(x) <= T(LMAX)))
  flag[b] = 1;

//@kernel lu_linv
// Li = L11^-1 (...×NB×NB, unit lower; only the leading np x np is used):
// the panel's block-row solve U12 = L11^-1 A12 then is one GEMM (lu.c's
// block_row). lu_linv_diag has put the 32 x 32 diagonal blocks' inverses
// D_I in place; here each threadgroup owns 8 columns of Li, those of its
// block column J, and walks down the blocks below by blocked forward
// substitution: X_I = -D_I (sum over J <= K < I of L_IK X_K), a thread
// per row and column of the block (32 x 8 = 256 threads), X kept in
// threadgroup memory, L and D read from L2. It also writes the zeros
// above the block J. The matrix's flag is set when an entry is not
// finite or larger than LMAX: then the product by Li could lose what
// forward substitution keeps (|L| <= 1 bounds the substitution's error,
// ||L11^-1|| the product's), and lu_rowfix redoes the block row by
// substitution. Template: T, LMAX, NB. Threadgroups of 256 threads, 4
// per diagonal block of the np rows (grid.x = 1024 * ceil(np / 32)),
// batch entries along grid.y from batch0.
threadgroup T xs[NB][8];
threadgroup T ts[32][8];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int np = pe - p0;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* w = Win + (int64_t)b * m * n + (int64_t)p0 * n + p0;
const int nb = NB;
device T* li = Li + (int64_t)b * nb * nb;
const int tid = (int)thread_index_in_threadgroup;
const int i = tid >> 3, cc = tid & 7;
const int g = (int)threadgroup_position_in_grid.x;
const int jb = g >> 2, col = 32 * jb + 8 * (g & 3) + cc;
const int nblk = (np + 31) / 32;
if (jb >= nblk)
  return;
for (int r = i; r < 32 * jb; r += 32)
  li[(int64_t)r * nb + col] = T(0);
xs[32 * jb + i][cc] = li[(int64_t)(32 * jb + i) * nb + col];
bool bad = false;
for (int ib = jb + 1; ib < nblk; ++ib) {
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const int row = 32 * ib + i;
  const device T* lr = w + (int64_t)min(row, np - 1) * n;
  // 32 columns of the row at a time, their loads issued together
  T t[4] = {T(0), T(0), T(0), T(0)};
  for (int kb = 32 * jb; kb < 32 * ib; kb += 32) {
    LU_UNROLL
    for (int q = 0; q < 32; ++q)
      t[q & 3] = fma(lr[kb + q], xs[kb + q][cc], t[q & 3]);
  }
  ts[i][cc] = row < np ? (t[0] + t[1]) + (t[2] + t[3]) : T(0);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const device T* dr = li + (int64_t)row * nb + 32 * ib;
  T x4[4] = {T(0), T(0), T(0), T(0)};
  LU_UNROLL
  for (int q = 0; q < 32; ++q)
    x4[q & 3] = fma(dr[q], ts[q][cc], x4[q & 3]);
  const T x = -((x4[0] + x4[1]) + (x4[2] + x4[3]));
  xs[row][cc] = x;
  li[(int64_t)row * nb + col] = x;
  bad = bad || !(fabs(x) <= T(LMAX));
}
if (bad)
  flag[b] = 1;

//@kernel lu_rowfix
// The block row by forward substitution, U12 = L11^-1 A12 with A12 from
// the scratch S (see lu_laswp), for the matrices whose flag lu_linv set:
// the safe path behind lu.c's block_row, a thread per column, slow (np^2
// / 2 FMAs each) but only for matrices whose L11^-1 is too large to
// trust. Template: T. grid.x >= n - pe (threadgroups of any size), batch
// entries along grid.y from batch0.
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int np = pe - p0;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
if (flag[b] == 0)
  return;
const int c = (int)thread_position_in_grid.x;
if (c >= n - pe)
  return;
device T* w = W + (int64_t)b * m * n;
const int ld = S_shape[S_ndim - 1];
const device T* sb = S + (int64_t)b * S_shape[S_ndim - 2] * ld + c;
for (int r = 0; r < np; ++r) {
  T acc = sb[(int64_t)r * ld];
  const device T* lr = w + (int64_t)(p0 + r) * n + p0;
  for (int j = 0; j < r; ++j)
    acc = fma(-lr[j], w[(int64_t)(p0 + j) * n + pe + c], acc);
  w[(int64_t)(p0 + r) * n + pe + c] = acc;
}

//@kernel lu_perm
// The row permutation of each factorization: perm[i] = the row of A that
// ends at row i, the pivots applied in order to 0 .. m-1. Each row i is
// traced back on its own thread through the swaps in reverse (pos = i;
// for j = k-1 .. 0: pos is pv[j] -> j, pos is j -> pv[j]), so no thread
// waits for another: k steps of a compare-and-select chain (~10 cycles
// each: a count, not profiled yet), where one thread applying the swaps
// in order waited ~70 cycles a swap for threadgroup memory (0.31 ms for
// 8192 at 8192^2 on an H100, measured). The
// pivots are staged through threadgroup memory CH at a time (every thread
// reads the same one: a broadcast). Template: CH (<= LU_PERM_CHUNK; the
// driver's LU_PERM_CHUNK, less in tests). Grid: grid.x >= m threads (one
// a row), batch entries along grid.y from batch0. W is the factored
// matrix (for its shape).
threadgroup int pvs[CH];
const int m = W_shape[W_ndim - 2], n = W_shape[W_ndim - 1];
const int k = min(m, n);
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device int* pv = piv + (int64_t)b * k;
const int i = (int)thread_position_in_grid.x;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
int pos = i;
for (int hi = k; hi > 0; hi -= CH) {
  const int lo = max(hi - CH, 0);
  threadgroup_barrier(mem_flags::mem_threadgroup); // the last chunk is read
  for (int e = tid; e < hi - lo; e += nt)
    pvs[e] = pv[lo + e];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int j = hi - 1; j >= lo; --j) {
    const int p = pvs[j - lo];
    pos = pos == p ? j : (pos == j ? p : pos);
  }
}
if (i < m)
  perm[(int64_t)b * m + i] = pos;

//@kernel lu_unpack
// L (unit lower, m x k) and U (upper, k x n) from the packed factors.
// Template: T. One thread per element of the larger of L and U (grid.x),
// batch entries along grid.y from batch0.
const int m = W_shape[W_ndim - 2], n = W_shape[W_ndim - 1];
const int k = min(m, n);
const uint e = thread_position_in_grid.x;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* w = W + (int64_t)b * m * n;
if (e < (uint)m * (uint)k) {
  int i = (int)(e / (uint)k), j = (int)(e % (uint)k);
  L[(int64_t)b * m * k + e] =
      i > j ? w[(int64_t)i * n + j] : (i == j ? T(1) : T(0));
}
if (e < (uint)k * (uint)n) {
  int i = (int)(e / (uint)n), j = (int)(e % (uint)n);
  U[(int64_t)b * k * n + e] = j >= i ? w[(int64_t)i * n + j] : T(0);
}

//@kernel lu_gather
// X = P B, the right-hand sides in pivot order: X[i][c] = B[perm[i]][c],
// or with IDENT the permuted identity, X[i][c] = (perm[i] == c). B is a
// view (...×n×kc, or n×kc shared by every batch entry; with IDENT any
// array of that shape, not read); perm is ...×n or n. Template: T, IDENT.
// One thread per element (grid.x >= n * kc), batch entries along grid.y
// from batch0; X is contiguous.
const int n = B_shape[B_ndim - 2], kc = B_shape[B_ndim - 1];
const uint e = thread_position_in_grid.x;
if (e >= (uint)n * (uint)kc)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int i = (int)(e / (uint)kc), c = (int)(e % (uint)kc);
const int src = perm[(perm_ndim > 1 ? (int64_t)b * n : 0) + i];
T x;
if (IDENT) {
  x = src == c ? T(1) : T(0);
} else {
  const device T* bb = B + lu_batch_offset(b, B_shape, B_strides, B_ndim);
  x = bb[(int64_t)src * B_strides[B_ndim - 2] +
         (int64_t)c * B_strides[B_ndim - 1]];
}
X[(int64_t)b * n * kc + e] = x;

//@kernel lu_det
// det = (-1)^(interchanges) * prod u_ii of each factorization, or with LOG
// the sign and log|det|: sign 0 and -inf for a zero pivot, NaN for NaN.
// Outputs: D (det, or log|det| with LOG) and S (the sign; not written
// without LOG). Template: T, LOG. One threadgroup per matrix (grid.x =
// threads * matrices, threads a power of two up to 1024), batch0 the
// first.
threadgroup T red_a[1024];
threadgroup int red_b[1024];
const int m = W_shape[W_ndim - 2], n = W_shape[W_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
const device T* w = W + (int64_t)b * m * n;
const device int* pv = piv + (int64_t)b * n;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
// a: the product (det) or the sum of log|u_ii|; flips: the parity of the
// interchanges and of the negative u_ii (bit 0), a zero (bit 1), NaN (2).
T acc = LOG ? T(0) : T(1);
int flags = 0;
for (int i = tid; i < n; i += nt) {
  T u = w[(int64_t)i * n + i];
  if (pv[i] != i)
    flags ^= 1;
  if (LOG) {
    if (u < T(0))
      flags ^= 1;
    if (u == T(0))
      flags |= 2;
    if (isnan(u))
      flags |= 4;
    acc += log(fabs(u));
  } else {
    acc *= u;
  }
}
red_a[tid] = acc;
red_b[tid] = flags;
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int s = nt / 2; s > 0; s >>= 1) {
  if (tid < s) {
    red_a[tid] = LOG ? red_a[tid] + red_a[tid + s]
                     : red_a[tid] * red_a[tid + s];
    int f1 = red_b[tid], f2 = red_b[tid + s];
    red_b[tid] = ((f1 ^ f2) & 1) | ((f1 | f2) & 6);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
if (tid == 0) {
  T a = red_a[0];
  int f = red_b[0];
  T sign = (f & 1) ? T(-1) : T(1);
  if (LOG) {
    if (f & 4) {
      S[b] = T(NAN);
      D[b] = T(NAN);
    } else if (f & 2) {
      S[b] = T(0);
      D[b] = -T(INFINITY);
    } else {
      S[b] = sign;
      D[b] = a;
    }
  } else {
    D[b] = sign * a;
  }
}

//@kernel lu_iota
// idx[i] = i for i < count: the storage of the drivers' scalar arguments
// (0-d views into it). grid.x >= count.
const uint i = thread_position_in_grid.x;
if (i < (uint)count)
  idx[i] = (int)i;
