// kiln's Cholesky kernels (driver: src/linalg/cholesky.c). Every kernel
// works on the *logical lower* factor L (A = L L^T): with UPPER the same
// code reads and writes the mirrored element (j, i) for (i, j), which
// turns it into U = L^T (A = U^T U) reading A's upper triangle, as LAPACK's
// potrf does. Only the logical lower triangle of A is ever read.
//
// The factor is built in W, the contiguous result (...×n×n), which the
// kernels take as their output L; a kernel that also reads W binds it a
// second time as an input (for its shape). info holds, per matrix, 0 or
// the order of the first leading minor found not positive definite
// (LAPACK's info); the driver fills it with 0 first.
//
// Paths:
//   small    n <= 32: chol_warp, a warp per matrix (two per warp for
//            n <= 16), a row per lane in registers, columns eliminated by
//            shuffles; n <= 128: chol_small, a threadgroup per matrix with
//            the matrix in registers (chol_run below).
//   blocked  chol_copy (A's lower triangle into W); chol_panel on each
//            PW-column panel (factors the diagonal block and solves every
//            row below it), in the order of the driver's recursive column
//            splits, with its GEMM updates between them; chol_finish at
//            the end (the launches' scalars are views into an int32
//            array that lu_iota fills); chol_ksum ends a split-K update (the
//            driver's update_split); with FUSE chol_panel first applies
//            the update by the columns left of it (left-looking).
//
// The heart of both threadgroup kernels is chol_run: 256 threads hold a
// (PW + RCH) x PW block in registers, 16 x 16 threads each owning the
// elements (16a + tr, 16b + tc), a 16-cyclic layout in which a whole
// 16 x 16 tile lies above or below the diagonal, so tiles above it are
// skipped at compile time. Columns go 16 at a time (right-looking): the
// 16-column group is staged in threadgroup memory, every warp factors its
// 16 x 16 diagonal tile in registers by shuffles (redundantly, so no
// barrier is needed for the pivots) while its upper 16 lanes solve 16 of
// the rows below, and then every thread updates its own elements to the
// right with the 16 new columns (a rank-16 update from threadgroup memory).
// That is one launch per matrix with two barriers per 16 columns.
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define CHOL_UNROLL _Pragma("unroll")
#define CHOL_ROLLED _Pragma("unroll 1")
#define CHOL_UNROLL8 _Pragma("unroll 8")
// Every lane of the warp takes part in every shuffle below.
#define CHOL_SHFL(v, l) __shfl_sync(0xffffffffu, (v), (l))
#else
#define CHOL_UNROLL
#define CHOL_ROLLED
#define CHOL_UNROLL8
#define CHOL_SHFL(v, l) simd_shuffle((v), (ushort)(l))
#endif

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order.
inline int64_t chol_batch_offset(uint b, const constant int* shape,
                                 const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// chol_copy and chol_finish give each thread CHOL_EW elements of a matrix,
// 32 apart (a warp covers 32 x CHOL_EW consecutive elements, every access
// of one instruction consecutive across the warp), so that a thread has
// CHOL_EW loads or stores in flight: with one element a thread the two
// kernels moved ~0.8 TB/s (one 4-byte load per thread cannot cover HBM's
// latency; 0.32 ms each at 8192^2 float32 on an H200). The element's place
// (mi, mj) is divided out once, then stepped (chol_step_32).
#define CHOL_EW 8

// The element of a thread's k-th slot: first + 32 k.
inline uint chol_first_element(uint t) {
  return (t / 32u) * (32u * CHOL_EW) + t % 32u;
}

// (mi, mj) moved 32 elements on in a row-major n x n matrix.
inline void chol_step_32(thread int& mi, thread int& mj, int n) {
  mj += 32;
  while (mj >= n) {
    mj -= n;
    ++mi;
  }
}

// Factors W columns across a warp, in registers: lane `base + i` holds row
// i of the W x W diagonal block in x[0..W) (i < W), and any other lane a
// row below the block (its x: that row's W elements). On return the block
// lanes hold L's rows (zeros above the diagonal) and the other lanes their
// rows of L, x L^-T. Returns 0, or j + 1 for the first pivot j that is not
// positive (NaN included); the arithmetic then runs on (the result is
// refused), so every lane executes every shuffle.
template <typename T, int W>
inline int chol_warp_factor(thread T* x, int lane, int base) {
  const int row = lane - base; // >= W for the rows below the block
  int fail = 0;
  CHOL_UNROLL
  for (int j = 0; j < W; ++j) {
    T d = CHOL_SHFL(x[j], base + j);
    if (!(d > T(0)) && fail == 0)
      fail = j + 1;
    T s = sqrt(d);
    T r = T(1) / s;
    x[j] = row == j ? s : (row > j ? x[j] * r : T(0));
    CHOL_UNROLL
    for (int c = j + 1; c < W; ++c)
      x[c] = fma(-x[j], CHOL_SHFL(x[j], base + c), x[c]);
  }
  return fail;
}

// The threadgroup factorization (see the top of the file). The block's
// logical element (i, j) is src[i * sr + j * sc] (read) and dst[i * dr +
// j * dc] (written); its first PW rows are the diagonal block, of order
// pw (<= PW; padded with the identity), then RCH rows of the panel below,
// from row r0 (relative to the block's origin; rows beyond `rows` are
// padding). Lower triangles only are read.
//
// BLOCKED false (the small path): writes the factor with zeros above the
// diagonal. BLOCKED true (chol_panel): many threadgroups read the same
// diagonal block while the `writer` one factors it, so the writer stores
// L11 out of their way: its strict lower part transposed into the block's
// upper triangle (never read) and its diagonal into dg; chol_finish moves
// them home. Every group writes its rows of the panel in place.
//
// Threadgroup memory: Pn, 2 x (PW + RCH) x 17 (the staged column group,
// double-buffered so one barrier per group suffices between reuses), and
// Pd, 16 x 17 (the factored diagonal tile). 256 threads. Returns 0 or the
// order of the first failing pivot within the block.
//
// FUSE (chol_panel only): before factoring, the block is updated by the
// kw factored columns left of it (logical columns -kw .. -1 relative to
// the block's origin), X -= L[rows, -kw:0] L[cols, -kw:0]^T, so that the
// driver's GEMM launch for that update (kw x 64 columns, one tile column,
// a few us of work behind a launch) is not needed: left-looking, as the
// panel reads those columns anyway from L2. The columns are staged FC at
// a time in Pn (all NR rows, padded to FC + 1), each thread then
// accumulating its own elements in k order (deterministic).
template <typename T, int PW, int RCH, bool UPPER, bool BLOCKED, bool FUSE>
inline int chol_run(const device T* src, int64_t sr, int64_t sc,
                    device T* dst, int64_t dr, int64_t dc, int pw, int rows,
                    int r0, device T* dg, bool writer, int tid,
                    threadgroup T* Pn, threadgroup T* Pd, int kw) {
  constexpr int NBC = PW / 16, NA = (PW + RCH) / 16, NR = 16 * NA;
  constexpr int PP = 17, NW = 8;
  // Columns of the rank-16 update fetched per round: 4 floats or 2
  // doubles per tile column, as many as the registers allow.
  constexpr int JC = sizeof(T) == 4 ? 4 : 2;
  const int lane = tid % 32, warp = tid / 32;
  // Neighbouring lanes take neighbouring columns (rows for UPPER), which
  // are adjacent in memory either way.
  const int tr = UPPER ? tid % 16 : tid / 16;
  const int tc = UPPER ? tid / 16 : tid % 16;
  T X[NA][NBC];
  CHOL_UNROLL
  for (int a = 0; a < NA; ++a) {
    CHOL_UNROLL
    for (int b = 0; b < NBC; ++b) {
      if (a < NBC && a < b)
        continue; // a tile above the diagonal: never held
      const int c = 16 * b + tc;
      T v;
      if (a < NBC) {
        const int i = 16 * a + tr;
        if (i < pw && c < pw)
          v = c <= i ? src[(int64_t)i * sr + (int64_t)c * sc] : T(0);
        else
          v = i == c ? T(1) : T(0);
      } else {
        const int i = r0 + 16 * (a - NBC) + tr;
        v = i < rows && c < pw ? src[(int64_t)i * sr + (int64_t)c * sc]
                               : T(0);
      }
      X[a][b] = v;
    }
  }
  if (FUSE && kw > 0) {
    constexpr int FC = 32, FP = FC + 1;
    CHOL_ROLLED
    for (int f0 = 0; f0 < kw; f0 += FC) {
      // The previous chunk's readers are done with Pn.
      threadgroup_barrier(mem_flags::mem_threadgroup);
      // Stage rows 0 .. NR-1 (the diagonal block's, then this group's)
      // of the columns f0 .. f0+FC-1; neighbouring threads take
      // neighbouring addresses (columns, or rows for UPPER); 8 loads in
      // flight a thread, not 16 (sm_90a: 16 took 198 / 242 registers in
      // float32 / float64, 8 keep the unfused 116 / 154).
      CHOL_UNROLL8
      for (int j = 0; j < NR * FC / 256; ++j) {
        const int e = tid + 256 * j;
        const int row = UPPER ? e % NR : e / FC;
        const int k = UPPER ? e / NR : e % FC;
        const int i = row < PW ? row : r0 + row - PW;
        const bool real = (row < PW ? i < pw : i < rows) && f0 + k < kw;
        Pn[row * FP + k] =
            real ? src[(int64_t)i * sr + (int64_t)(f0 + k - kw) * sc]
                 : T(0);
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
      for (int k = 0; k < FC; ++k) {
        T cv[NBC];
        CHOL_UNROLL
        for (int b = 0; b < NBC; ++b)
          cv[b] = Pn[(16 * b + tc) * FP + k];
        CHOL_UNROLL
        for (int a = 0; a < NA; ++a) {
          const T rv = Pn[(16 * a + tr) * FP + k];
          CHOL_UNROLL
          for (int b = 0; b < NBC; ++b) {
            if (a < NBC && a < b)
              continue;
            X[a][b] = fma(-rv, cv[b], X[a][b]);
          }
        }
      }
    }
    // Before the column groups below stage into Pn.
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  int fail = 0;
  CHOL_UNROLL
  for (int kb = 0; kb < NBC; ++kb) {
    threadgroup T* P = Pn + (kb & 1) * NR * PP;
    // Stage column group kb, rows 16 kb and below.
    CHOL_UNROLL
    for (int a = kb; a < NA; ++a)
      P[(16 * a + tr) * PP + tc] = X[a][kb];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // Factor: every warp its copy of the diagonal tile (lanes 0-15) and
    // 16 rows below it per pass (lanes 16-31), written back in place.
    const int below = NR - 16 * (kb + 1);
    const int passes = below > 0 ? (below + 16 * NW - 1) / (16 * NW) : 1;
    CHOL_ROLLED
    for (int p = 0; p < passes; ++p) {
      const int row = lane < 16 ? 16 * kb + lane
                                : 16 * (kb + 1) + 16 * (p * NW + warp) +
                                      lane - 16;
      const bool has = row < NR;
      T x[16];
      CHOL_UNROLL
      for (int c = 0; c < 16; ++c)
        x[c] = has ? P[row * PP + c] : T(0);
      const int f = chol_warp_factor<T, 16>(x, lane, 0);
      if (fail == 0 && f != 0)
        fail = 16 * kb + f;
      if (lane >= 16 && has) {
        CHOL_UNROLL
        for (int c = 0; c < 16; ++c)
          P[row * PP + c] = x[c];
      } else if (lane < 16 && p == 0 && warp == 0) {
        CHOL_UNROLL
        for (int c = 0; c < 16; ++c)
          Pd[lane * PP + c] = x[c];
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // Column group kb is final: take this thread's elements back.
    X[kb][kb] = Pd[tr * PP + tc];
    CHOL_UNROLL
    for (int a = kb + 1; a < NA; ++a)
      X[a][kb] = P[(16 * a + tr) * PP + tc];
    // Rank-16 update of the tiles right of group kb (on or below the
    // diagonal): X[a][b] -= L[row a][group kb] . L[column b][group kb].
    // A rolled loop, so that the compiler does not hoist every round's
    // loads at once (that would take twice the registers).
    CHOL_ROLLED
    for (int j0 = 0; j0 < 16; j0 += JC) {
      T cv[NBC][JC];
      CHOL_UNROLL
      for (int b = kb + 1; b < NBC; ++b)
        CHOL_UNROLL
        for (int j = 0; j < JC; ++j)
          cv[b][j] = P[(16 * b + tc) * PP + j0 + j];
      CHOL_UNROLL
      for (int a = kb + 1; a < NA; ++a) {
        T rv[JC];
        CHOL_UNROLL
        for (int j = 0; j < JC; ++j)
          rv[j] = P[(16 * a + tr) * PP + j0 + j];
        CHOL_UNROLL
        for (int b = kb + 1; b < NBC; ++b) {
          if (a < NBC && a < b)
            continue;
          T acc = X[a][b];
          CHOL_UNROLL
          for (int j = 0; j < JC; ++j)
            acc = fma(-rv[j], cv[b][j], acc);
          X[a][b] = acc;
        }
      }
    }
  }
  // The result.
  CHOL_UNROLL
  for (int a = 0; a < NA; ++a) {
    CHOL_UNROLL
    for (int b = 0; b < NBC; ++b) {
      const int c = 16 * b + tc;
      if (a >= NBC) {
        const int i = r0 + 16 * (a - NBC) + tr;
        if (i < rows && c < pw)
          dst[(int64_t)i * dr + (int64_t)c * dc] = X[a][b];
        continue;
      }
      const int i = 16 * a + tr;
      if (i >= pw || c >= pw)
        continue;
      if (!BLOCKED) {
        const T v = a > b || (a == b && c <= i) ? X[a][b] : T(0);
        dst[(int64_t)i * dr + (int64_t)c * dc] = v;
      } else if (writer && a >= b && c <= i) {
        if (c == i)
          dg[i] = X[a][b];
        else
          dst[(int64_t)c * dr + (int64_t)i * dc] = X[a][b];
      }
    }
  }
  return fail;
}

//@kernel chol_warp
// The small path for n <= W (W = 16 or 32): each warp factors 32 / W
// matrices, lane base + i holding row i of its matrix (padded with the
// identity), and writes L with zeros above the diagonal. Template: T, W,
// UPPER. Threadgroups of 64 threads; grid.x = 64 * groups; batch0 is the
// first matrix of this launch, `count` how many it has.
const int n = A_shape[A_ndim - 1];
const int tid = (int)thread_index_in_threadgroup;
const int lane = tid % 32;
constexpr int MPW = 32 / W; // matrices per warp
const uint g = threadgroup_position_in_grid.x * 2u + (uint)(tid / 32);
const uint m = g * (uint)MPW + (uint)(lane / W);
const bool real = m < (uint)count;
const uint b = (uint)batch0 + m;
const int i = lane % W;
const int64_t ar = UPPER ? A_strides[A_ndim - 1] : A_strides[A_ndim - 2];
const int64_t ac = UPPER ? A_strides[A_ndim - 2] : A_strides[A_ndim - 1];
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
T x[W];
const device T* a =
    real ? A + chol_batch_offset(b, A_shape, A_strides, A_ndim) : A;
CHOL_UNROLL
for (int c = 0; c < W; ++c) {
  if (real && i < n && c < n)
    x[c] = c <= i ? a[(int64_t)i * ar + (int64_t)c * ac] : T(0);
  else
    x[c] = i == c ? T(1) : T(0);
}
const int fail = chol_warp_factor<T, W>(x, lane, lane - i);
if (!real)
  return;
if (fail != 0) {
  if (i == 0)
    info[b] = fail;
  return;
}
if (i < n) {
  device T* w = L + (int64_t)b * n * n;
  CHOL_UNROLL
  for (int c = 0; c < W; ++c)
    if (c < n)
      w[(int64_t)i * wr + (int64_t)c * wc] = x[c];
}

//@kernel chol_small
// The small path for 32 < n <= PW (PW = 64 or 128): one threadgroup of
// 256 threads per matrix (chol_run with no panel rows), reading the view A
// and writing L with zeros above the diagonal. Template: T, PW, UPPER.
// grid = (256, matrices in this launch), batch0 the first.
threadgroup T Pn[2 * PW * 17];
threadgroup T Pd[16 * 17];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int n = A_shape[A_ndim - 1];
const int64_t ar = UPPER ? A_strides[A_ndim - 1] : A_strides[A_ndim - 2];
const int64_t ac = UPPER ? A_strides[A_ndim - 2] : A_strides[A_ndim - 1];
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
const device T* a = A + chol_batch_offset(b, A_shape, A_strides, A_ndim);
device T* w = L + (int64_t)b * n * n;
const int fail = chol_run<T, PW, 0, UPPER, false, false>(
    a, ar, ac, w, wr, wc, n, n, 0, w, false,
    (int)thread_index_in_threadgroup, Pn, Pd, 0);
if (fail != 0 && thread_index_in_threadgroup == 0)
  info[b] = fail;

//@kernel chol_panel
// One panel of the blocked path, in place in W: the diagonal block at
// (k0, k0), of min(PW, n - k0) columns, and the rows below it, RCH rows per
// threadgroup (group x takes rows k0 + pw + x * RCH on; group 0 also
// stores the diagonal block, see chol_run). Template: T, PW, RCH, UPPER,
// FUSE (the update by the kw columns left of the panel first, in the
// kernel; kw is 0 without it).
// grid = (256 * groups, matrices in this launch), batch0 the first; Win is
// W, bound for its shape; Dg (...×n) receives the diagonal.
threadgroup T Pn[2 * (PW + RCH) * 17];
threadgroup T Pd[16 * 17];
threadgroup int failed;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
// An earlier panel of this matrix failed: leave it. One thread reads info
// and the group decides together: the other groups of this launch write
// info[b] when this panel fails (each factors the same diagonal block), so
// threads reading it themselves could see different values; warps that
// returned would then leave the rest of the group to run chol_run with
// holes in its staged columns, and to store a wrong order into info.
if (thread_index_in_threadgroup == 0)
  failed = info[b];
threadgroup_barrier(mem_flags::mem_threadgroup);
if (failed != 0)
  return;
const int n = Win_shape[Win_ndim - 1];
const int p0 = k0, pw = min(PW, n - p0);
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
device T* w = L + (int64_t)b * n * n + (int64_t)p0 * (wr + wc);
const int x = (int)threadgroup_position_in_grid.x;
const int fail = chol_run<T, PW, RCH, UPPER, true, FUSE>(
    w, wr, wc, w, wr, wc, pw, n - p0, pw + x * RCH, Dg + (int64_t)b * n + p0,
    x == 0, (int)thread_index_in_threadgroup, Pn, Pd, kw);
if (fail != 0 && thread_index_in_threadgroup == 0)
  info[b] = p0 + fail;

//@kernel chol_copy
// W = the logical lower triangle of A (the start of the blocked path; the
// rest of W is cleared by chol_finish). Template: T, UPPER. CHOL_EW
// elements a thread (chol_first_element; grid.x >= n * n / CHOL_EW),
// batch entries along grid.y from batch0. All of a thread's loads are
// issued before its stores (L might alias A as far as the compiler
// knows, so it would not hoist them).
const int n = A_shape[A_ndim - 1];
const uint nn = (uint)n * (uint)n;
const uint first = chol_first_element(thread_position_in_grid.x);
if (first >= nn)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int64_t ar = UPPER ? A_strides[A_ndim - 1] : A_strides[A_ndim - 2];
const int64_t ac = UPPER ? A_strides[A_ndim - 2] : A_strides[A_ndim - 1];
const device T* a = A + chol_batch_offset(b, A_shape, A_strides, A_ndim);
// (mi, mj): the element's place in memory, i.e. in W.
int mi = (int)(first / (uint)n), mj = (int)(first % (uint)n);
T v[CHOL_EW];
bool on[CHOL_EW];
CHOL_UNROLL
for (int k = 0; k < CHOL_EW; ++k) {
  const int i = UPPER ? mj : mi, j = UPPER ? mi : mj;
  on[k] = first + 32u * (uint)k < nn && j <= i;
  v[k] = on[k] ? a[(int64_t)i * ar + (int64_t)j * ac] : T(0);
  chol_step_32(mi, mj, n);
}
device T* w = L + (int64_t)b * n * n;
CHOL_UNROLL
for (int k = 0; k < CHOL_EW; ++k)
  if (on[k])
    w[first + 32u * (uint)k] = v[k];

//@kernel chol_finish
// The end of the blocked path: moves each panel's diagonal block home
// (its strict lower part from the transposed copy above the diagonal, the
// diagonal from Dg) and clears everything above the diagonal. Template:
// T, PW, UPPER. CHOL_EW elements a thread (as chol_copy), batch entries
// along grid.y from batch0. Win is W, bound for its shape. No two
// threads touch the same element: the thread of an element above the
// diagonal moves its transposed copy down; the lower triangle's own
// threads leave it alone.
const int n = Win_shape[Win_ndim - 1];
const uint nn = (uint)n * (uint)n;
const uint first = chol_first_element(thread_position_in_grid.x);
if (first >= nn)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
device T* w = L + (int64_t)b * n * n;
int mi = (int)(first / (uint)n), mj = (int)(first % (uint)n);
CHOL_UNROLL
for (int k = 0; k < CHOL_EW; ++k) {
  const uint e = first + 32u * (uint)k;
  const int i = UPPER ? mj : mi, j = UPPER ? mi : mj;
  chol_step_32(mi, mj, n);
  if (e >= nn || j < i)
    continue; // the logical lower triangle is final
  if (j == i) {
    w[e] = Dg[(int64_t)b * n + i];
    continue;
  }
  if (i / PW == j / PW) // the stored transpose of L's element (j, i)
    w[UPPER ? (int64_t)i * n + j : (int64_t)j * n + i] = w[e];
  w[e] = T(0);
}

//@kernel chol_ksum
// The end of a split-K update (cholesky.c, update_split): W's cnt blocks
// of R x C (memory coordinates; block q at row r0 + q dr, column c0 + q
// dc) minus the PIECES products in S (batch x cnt x PIECES x R x C,
// contiguous), subtracted in order (deterministic). Template: T, PIECES.
// One thread per element of the cnt blocks of one matrix (grid.x), batch
// entries along grid.y from batch0; Win is W, bound for its shape.
const int n = Win_shape[Win_ndim - 1];
const uint R = (uint)S_shape[S_ndim - 2], C = (uint)S_shape[S_ndim - 1];
const uint cnt = (uint)S_shape[S_ndim - 4];
const uint e = thread_position_in_grid.x;
const uint rc = R * C;
if (e >= cnt * rc)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const uint q = e / rc, rem = e % rc, i = rem / C, j = rem % C;
const int64_t row = (int64_t)r0 + (int64_t)q * dr + i;
const int64_t col = (int64_t)c0 + (int64_t)q * dc + j;
device T* w = L + (int64_t)b * n * n + row * n + col;
const device T* s = S + ((int64_t)b * cnt + q) * PIECES * (int64_t)rc + rem;
T acc = *w;
CHOL_UNROLL
for (int t = 0; t < PIECES; ++t)
  acc -= s[(int64_t)t * rc];
*w = acc;
