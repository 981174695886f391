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
//            chol_panel2 (the default; cholesky.c, KILN_CHOL_PANEL) does
//            chol_panel's work in 8-column rounds with the pivots in
//            registers: see "chol_panel2's pieces" below.
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

// ---- chol_panel2's pieces ------------------------------------------------
//
// chol_panel2 factors the same (PW + RCH) x PW block as chol_panel, but 8
// columns a round instead of 16, with the pivots off the shuffles. Its
// 256 + NR threads (NR = PW + RCH) are two kinds of warps: 256 "updater"
// threads hold the block in registers (chol_run's layout), and NR
// "solver" threads each own one row of it. Shared memory holds S, the
// group of 8 columns being solved, as staged (NR x 8), and Q, the solved
// groups, one buffer for the even rounds and one for the odd ones. Round
// g (of PW / 8):
//   A_g  barrier: group g is staged in S. Each solver loads the 8 x 8
//        diagonal tile, factors it in its own registers (no shuffle, no
//        barrier: a pivot is an rsqrt, a multiply and an fma after the
//        one before) and solves its row by it into Q_g. Meanwhile the
//        updaters apply round g - 1's rank-8 update (from Q_g-1) to the
//        groups right of g + 1, off the critical path.
//   B_g  barrier: the updaters take group g's final values back from
//        Q_g, and the warps that hold group g + 1 apply its rank-8 update
//        to it and stage it into S.
// The chain of a round (counted from the sm_90a SASS, float32): the two
// barriers, the solver's ~240 instructions with the tile's 8 pivots on
// the chain (MUFU.RSQ, FMUL, FFMA: ~26 cycles each, see
// chol_rsqrt_fast; float64 ~85) and the ~110-instruction update of the
// next group: ~500-600 cycles. chol_panel's 16-column rounds ran a chain of
// shuffle, IEEE sqrt and division, shuffle and fma per column: ~240
// cycles a column by the ncu samples, ~15,600 a panel where these
// rounds take ~4,800.

#if KILN_BACKEND_CUDA
// The hardware reciprocal square root (CUDA: 2 ulp in float32, 1 ulp in
// float64), not 1 / sqrt: two correctly rounded operations on the
// critical path of every pivot.
inline float chol_rsqrt(float x) { return ::rsqrtf(x); }
inline double chol_rsqrt(double x) { return ::rsqrt(x); }
// FAST: float32's MUFU.RSQ alone (flushing a subnormal x to 0, so +inf):
// rsqrtf wraps it in a test and two multiplies for subnormal x, three
// dependent instructions more on each pivot's chain (~12 cycles).
// chol_solve8 detects subnormal pivots itself and then runs again with
// chol_rsqrt.
#define CHOL_FTZ_RSQRT 1
inline float chol_rsqrt_fast(float x) {
  float r;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
inline double chol_rsqrt_fast(double x) { return ::rsqrt(x); }
#else
#define CHOL_FTZ_RSQRT 0
template <typename T> inline T chol_rsqrt(T x) { return T(1) / sqrt(x); }
template <typename T> inline T chol_rsqrt_fast(T x) { return chol_rsqrt(x); }
#endif

// 4 consecutive elements of threadgroup memory (16-byte aligned) into
// x[0..3], and back: one 16-byte access for float, two for double.
inline void chol_ld4(const threadgroup float* p, thread float* x) {
  const float4 v = *(const threadgroup float4*)p;
  x[0] = v.x;
  x[1] = v.y;
  x[2] = v.z;
  x[3] = v.w;
}
inline void chol_ld4(const threadgroup double* p, thread double* x) {
  const double2 u = *(const threadgroup double2*)p;
  const double2 v = *(const threadgroup double2*)(p + 2);
  x[0] = u.x;
  x[1] = u.y;
  x[2] = v.x;
  x[3] = v.y;
}
// 16 bytes of threadgroup memory (16-byte aligned) into x: 4 floats or 2
// doubles, one access.
inline void chol_ldv(const threadgroup float* p, thread float* x) {
  chol_ld4(p, x);
}
inline void chol_ldv(const threadgroup double* p, thread double* x) {
  const double2 u = *(const threadgroup double2*)p;
  x[0] = u.x;
  x[1] = u.y;
}
inline void chol_st4(threadgroup float* p, const thread float* x) {
  *(threadgroup float4*)p = float4(x[0], x[1], x[2], x[3]);
}
inline void chol_st4(threadgroup double* p, const thread double* x) {
  *(threadgroup double2*)p = double2(x[0], x[1]);
  *(threadgroup double2*)(p + 2) = double2(x[2], x[3]);
}

// p[off] where `real`, else `other`: a predicated load into the register
// that holds `other`, with nothing waiting for it (a select after the
// load made the warp wait for each load before issuing the next ones).
template <typename T>
inline T chol_ld(const device T* p, int64_t off, bool real, T other) {
  T v = other;
  if (real)
    v = p[off];
  return v;
}

// The row stride of a staged 8-column group (P_g): 16-byte aligned rows,
// and the 8 rows that one 16-byte access serves at a time fall on
// distinct banks (12 floats: 48 B; 10 doubles: 80 B).
template <typename T> constexpr int chol_ps() {
  return sizeof(T) == 4 ? 12 : 10;
}

// One solver thread's round: factors the 8 x 8 diagonal tile of the
// group staged at S (rows g8 .. g8+7), in registers, and solves its own
// row r (>= g8) by it into Q: L[r, g8 + j] for j < 8 (for a row of the
// tile: its row of the tile's factor, the diagonal included; the rest of
// the row above the diagonal is not used). Not in place: the other
// solvers may still be reading the tile's rows. Returns 0 or j + 1 for
// the first pivot j that is not positive (NaN included). FAST (float32 on
// CUDA): pivots by chol_rsqrt_fast, and -1 for a tile with a subnormal
// positive pivot (whose results are then wrong: the caller runs again
// without FAST).
template <typename T, bool FAST>
inline int chol_solve8(const threadgroup T* S, threadgroup T* Q, int g8,
                       int r) {
  constexpr bool FTZ = FAST && CHOL_FTZ_RSQRT && sizeof(T) == 4;
  constexpr int PS = chol_ps<T>();
  T t[8][8];
  CHOL_UNROLL
  for (int i = 0; i < 8; ++i) {
    chol_ld4(S + (g8 + i) * PS, t[i]);
    if (i >= 4)
      chol_ld4(S + (g8 + i) * PS + 4, t[i] + 4);
  }
  T x[8];
  chol_ld4(S + r * PS, x);
  chol_ld4(S + r * PS + 4, x + 4);
  int fail = 0;
  bool tiny = false; // a subnormal positive pivot (FTZ)
  CHOL_UNROLL
  for (int j = 0; j < 8; ++j) {
    const T d = t[j][j];
    if (!(d > T(0)) && fail == 0)
      fail = j + 1;
    if (FTZ)
      tiny = tiny || (d > T(0) && d < T(FLT_MIN));
    const T rs = FTZ ? chol_rsqrt_fast(d) : chol_rsqrt(d);
    CHOL_UNROLL
    for (int i = j + 1; i < 8; ++i)
      t[i][j] *= rs;
    CHOL_UNROLL
    for (int i = j + 1; i < 8; ++i)
      CHOL_UNROLL
      for (int c = j + 1; c <= i; ++c)
        t[i][c] = fma(-t[i][j], t[c][j], t[i][c]);
    // The own row: its element j scaled, the rest of it updated by it.
    x[j] *= rs;
    CHOL_UNROLL
    for (int c = j + 1; c < 8; ++c)
      x[c] = fma(-x[j], t[c][j], x[c]);
  }
  chol_st4(Q + r * PS, x);
  chol_st4(Q + r * PS + 4, x + 4);
  return tiny ? -1 : fail;
}

// An updater thread's rank-8 update by the group staged (and solved) at
// P, of its elements in the column groups [glo, ghi): X[a][b] -= L[row,
// group] . L[col, group] (X is chol_run's NA x NBC layout, tr / tc the
// thread's row and column within a 16 x 16 tile; the group of column 16 b
// + tc is 2 b + tc / 8). Elements above the diagonal are updated too
// (they are never stored). Rounds of KC of the 8 columns (16 bytes: 4
// floats, 2 doubles), to keep the operands' registers few.
//
// The thread's rows are at R = P + tr PS and its columns at C = P + tc PS
// (hi = tc / 8): every address below is one of these two plus a constant
// (an immediate offset; from P, tr and tc the compiler kept an index
// register per row and column instead).
template <typename T, int NA, int NBC>
inline void chol_update8(thread T* X, const threadgroup T* R,
                         const threadgroup T* C, int hi, int glo, int ghi) {
  constexpr int PS = chol_ps<T>(), KC = 16 / (int)sizeof(T);
  CHOL_UNROLL
  for (int h = 0; h < 8; h += KC) {
    T cv[NBC][KC];
    CHOL_UNROLL
    for (int b = 0; b < NBC; ++b)
      if (2 * b + 1 >= glo && 2 * b < ghi)
        chol_ldv(C + 16 * b * PS + h, cv[b]);
    CHOL_UNROLL
    for (int a = 0; a < NA; ++a) {
      if (2 * a + 1 < glo)
        continue; // no column of these groups is at or left of row a's
      T rv[KC];
      chol_ldv(R + 16 * a * PS + h, rv);
      CHOL_UNROLL
      for (int b = 0; b < NBC; ++b) {
        if ((a < NBC && a < b) || 2 * b + 1 < glo || 2 * b >= ghi)
          continue;
        const int grp = 2 * b + hi;
        if (grp < glo || grp >= ghi)
          continue;
        T acc = X[a * NBC + b];
        CHOL_UNROLL
        for (int k = 0; k < KC; ++k)
          acc = fma(-rv[k], cv[b][k], acc);
        X[a * NBC + b] = acc;
      }
    }
  }
}

// An updater thread's elements of column group g: into a staged group P
// (from X, rows of tiles b .. NA-1, b = g / 2) or back out of it; E = P +
// tr PS + tc % 8, its first element (hi = tc / 8).
template <typename T, int NA, int NBC>
inline void chol_stage8(thread T* X, threadgroup T* E, int hi, int g,
                        bool store) {
  constexpr int PS = chol_ps<T>();
  const int b = g / 2;
  if (hi != (g & 1))
    return;
  CHOL_UNROLL
  for (int a = 0; a < NA; ++a) {
    if (a < b)
      continue;
    threadgroup T* e = E + 16 * a * PS;
    if (store)
      *e = X[a * NBC + b];
    else
      X[a * NBC + b] = *e;
  }
}

// FUSE's columns staged at a time: 64 floats (float32's 64-deep update
// in one staging round, its loads all in flight at once), 16 doubles (32
// took 171 registers, 16 take 138).
template <typename T> constexpr int chol_fc() {
  return sizeof(T) == 4 ? 64 : 16;
}

// chol_panel2's FUSE: chol_run's left-looking update, X -= L[rows,
// -kw:0] L[cols, -kw:0]^T (kw <= PW), with the columns staged FC at a time
// for all NR rows by all THREADS threads (chol_fc; rows padded by 16
// bytes: 34 / 18 KiB) and read back as 16-byte vectors in
// bank-free rows: per 16 bytes of columns (4 floats, 2 doubles), 12
// 16-byte accesses a thread, where chol_run's FUSE makes 48 (float32) or
// 24 (float64) smaller ones, a loop bound by shared-memory wavefronts.
// Only the threads that hold the block (`holds`) update; every thread
// stages and meets the barriers. Ends with a barrier: F may be reused at
// once.
template <typename T, int PW, int RCH, bool UPPER, int THREADS>
inline void chol_fuse2(const device T* src, int64_t sr, int64_t sc, int pw,
                       int rows, int r0, int tid, threadgroup T* F, int kw,
                       thread T* X, bool holds, int tr, int tc) {
  constexpr int NBC = PW / 16, NA = (PW + RCH) / 16, NR = 16 * NA;
  constexpr int FC = chol_fc<T>(), FS = FC + 16 / (int)sizeof(T);
  constexpr int PER = (NR * FC + THREADS - 1) / THREADS;
  // Element e = tid + THREADS j of the chunk is (row, k) = (e / FC, e %
  // FC), or (e % NR, e / NR) for UPPER, so that neighbouring threads take
  // neighbouring addresses (columns, or rows for UPPER); THREADS is a
  // multiple of FC and of NR, so a thread's k (row for UPPER) is the same
  // for every j.
  static_assert(THREADS % FC == 0 && THREADS % NR == 0, "chol_fuse2");
  const int fixed = UPPER ? tid % NR : tid % FC;
  const int first = UPPER ? tid / NR : tid / FC;
  constexpr int STEP = UPPER ? THREADS / NR : THREADS / FC;
  // kw <= PW (the driver fuses a panel's update by the one panel left
  // of it), so the chunks are unrolled: in a rolled loop the compiler
  // kept every element's offset and predicate in registers across it.
  CHOL_UNROLL
  for (int f0 = 0; f0 < PW; f0 += FC) {
    if (f0 >= kw)
      break;
    // The offsets walk linearly in j (lower: plus a shift for the rows
    // past the diagonal block), so that each costs an add or two: the
    // offsets written out per element took ~500 instructions.
    const int i0 = UPPER ? (fixed < PW ? fixed : r0 + fixed - PW) : first;
    const int64_t base = (int64_t)i0 * sr +
                         (int64_t)(f0 - kw + (UPPER ? first : fixed)) * sc;
    const int64_t step = (int64_t)STEP * (UPPER ? sc : sr);
    const int64_t shift = (int64_t)(r0 - PW) * sr;
    T v[PER];
    CHOL_UNROLL
    for (int j = 0; j < PER; ++j) {
      const int row = UPPER ? fixed : first + STEP * j;
      const int k = UPPER ? first + STEP * j : fixed;
      const int i = row < PW ? row : r0 + row - PW;
      const bool real = (UPPER ? k < FC : row < NR) &&
                        (row < PW ? i < pw : i < rows) && f0 + k < kw;
      const int64_t off =
          base + j * step + (!UPPER && row >= PW ? shift : (int64_t)0);
      v[j] = chol_ld(src, off, real, T(0));
    }
    // The previous chunk's readers are done with F.
    threadgroup_barrier(mem_flags::mem_threadgroup);
    CHOL_UNROLL
    for (int j = 0; j < PER; ++j) {
      const int row = UPPER ? fixed : first + STEP * j;
      const int k = UPPER ? first + STEP * j : fixed;
      if (UPPER ? k < FC : row < NR)
        F[row * FS + k] = v[j];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (!holds)
      continue;
    constexpr int KC = 16 / (int)sizeof(T);
    const threadgroup T* Rf = F + tr * FS; // as chol_update8's R and C
    const threadgroup T* Cf = F + tc * FS;
    CHOL_ROLLED
    for (int k = 0; k < FC; k += KC) {
      T cv[NBC][KC];
      CHOL_UNROLL
      for (int b = 0; b < NBC; ++b)
        chol_ldv(Cf + 16 * b * FS + k, cv[b]);
      CHOL_UNROLL
      for (int a = 0; a < NA; ++a) {
        T rv[KC];
        chol_ldv(Rf + 16 * a * FS + k, rv);
        CHOL_UNROLL
        for (int b = 0; b < NBC; ++b) {
          if (a < NBC && a < b)
            continue;
          T acc = X[a * NBC + b];
          CHOL_UNROLL
          for (int q = 0; q < KC; ++q)
            acc = fma(-rv[q], cv[b][q], acc);
          X[a * NBC + b] = acc;
        }
      }
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
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

//@kernel chol_panel2
// chol_panel's work (the same inputs, outputs, template and groups) in
// 8-column rounds (see "chol_panel2's pieces" above), with threadgroups
// of 256 + PW + RCH threads: the first 256 hold the block, the others
// solve a row each. Template: T, PW, RCH, UPPER, FUSE. grid = ((256 + PW
// + RCH) * groups, matrices in this launch), batch0 the first; Win is W,
// bound for its shape; Dg (...×n) receives the diagonal.
constexpr int NBC = PW / 16, NA = (PW + RCH) / 16, NR = 16 * NA;
constexpr int NG = PW / 8, PS = chol_ps<T>();
constexpr int PWORDS = 3 * NR * PS; // S, then Q for even and odd rounds
constexpr int FWORDS = FUSE ? NR * (chol_fc<T>() + 16 / (int)sizeof(T)) : 0;
constexpr int WORDS = PWORDS > FWORDS ? PWORDS : FWORDS;
constexpr int VECS = (WORDS * (int)sizeof(T) + 15) / 16;
threadgroup float4 Pbuf[VECS]; // float4: 16-byte aligned, whatever T is
threadgroup int failed;
threadgroup T* P = (threadgroup T*)Pbuf;
const int tid = (int)thread_index_in_threadgroup;
// The three scalars first, together: each is a load from memory, and
// chol_panel's chain of them (batch0, then info, then k0) was three round
// trips before the first load of the block.
const int p0 = k0, kwv = kw;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int n = Win_shape[Win_ndim - 1];
const int pw = min(PW, n - p0), rows = n - p0;
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
device T* w = L + (int64_t)b * n * n + (int64_t)p0 * (wr + wc);
const int x = (int)threadgroup_position_in_grid.x;
const int r0 = pw + x * RCH;
const bool holds = tid < 256;
// An updater's place (tr, tc) in the 16 x 16 tiles: neighbouring lanes
// take neighbouring addresses (8 columns of a row, or 16 rows of a column
// for UPPER: whole 32-byte sectors either way), and the column half tc / 8
// is the same across a warp, warps 0-3 the left half and 4-7 the right
// one, a warp of each on every scheduler: a round's update of the next
// group's 8 columns then runs in 4 warps, one a scheduler, not in all 8
// with half of each warp's lanes idle.
const int lane = tid % 32, wp = (tid / 32) % 8;
const int tr = UPPER ? tid % 16 : 4 * (wp % 4) + lane / 8;
const int tc = UPPER ? (tid / 16) % 16 : 8 * (wp / 4) + lane % 8;
// The thread's element (i, c) = (rb + tr, 16 bb + tc), rb = 16 a for the
// diagonal block's tiles and r0 + 16 (a - NBC) below, is at o + rb wr +
// 16 bb wc: a 64-bit product per tile row (lower) or column (UPPER), the
// rest immediate offsets (each element's offset written out took ~200
// instructions before the first barrier and as many after the last).
const device T* o = w + (int64_t)tr * wr + (int64_t)tc * wc;
T X[NA * NBC];
if (holds) {
  CHOL_UNROLL
  for (int a = 0; a < NA; ++a) {
    const int rb = a < NBC ? 16 * a : r0 + 16 * (a - NBC);
    CHOL_UNROLL
    for (int bb = 0; bb < NBC; ++bb) {
      if (a < NBC && a < bb)
        continue; // a tile above the diagonal: never held
      // Zeros above the diagonal, the identity past the block's order,
      // zeros in the rows past the matrix.
      const int c = 16 * bb + tc, i = rb + tr;
      const bool real = a < NBC ? i < pw && c < pw && c <= i
                                : i < rows && c < pw;
      X[a * NBC + bb] =
          chol_ld(o, (int64_t)rb * wr + (int64_t)(16 * bb) * wc, real,
                  i == c ? T(1) : T(0));
    }
  }
}
// An earlier panel of this matrix failed: leave it. One thread reads info
// (its load in flight with the block's) and the group decides together
// after the first barrier of the rounds (see chol_panel).
const int info_b = tid == 0 ? info[b] : 0;
if (FUSE && kwv > 0)
  chol_fuse2<T, PW, RCH, UPPER, 256 + NR>(w, wr, wc, pw, rows, r0, tid, P,
                                          kwv, X, holds, tr, tc);
if (tid == 0)
  failed = info_b;
// S: the group being solved, as staged; Q: the solved groups, the
// even rounds' and the odd rounds' (a round's solvers write one while
// the updaters still apply the other).
threadgroup T* S = P;
if (!holds) {
  // The solvers: one rolled loop (the same code every round, a few
  // hundred instructions where the unrolled rounds took thousands),
  // meeting the updaters' two barriers a round. The two kinds of warps
  // reach them at different places in the code: each warp passes every
  // barrier as a whole (this branch is uniform per warp), as CUDA's and
  // the CPU backend's counting barriers need.
  const int r = tid - 256;
  int fail = 0;
  CHOL_ROLLED
  for (int g = 0; g < NG; ++g) {
    threadgroup_barrier(mem_flags::mem_threadgroup); // A_g: group g staged
    if (g == 0 && failed != 0)
      return;
    if (r >= 8 * g) {
      threadgroup T* Q = P + (1 + (g & 1)) * NR * PS;
      int f = chol_solve8<T, true>(S, Q, 8 * g, r);
      if (CHOL_FTZ_RSQRT && sizeof(T) == 4 && f < 0) // rare: see FAST
        f = chol_solve8<T, false>(S, Q, 8 * g, r);
      if (fail == 0 && f != 0)
        fail = 8 * g + f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup); // B_g: group g solved
  }
  // The last row's solver saw every pivot (it solves in every round).
  if (r == NR - 1 && fail != 0)
    info[b] = p0 + fail;
  return;
}
// The thread's rows and columns in S (Q: + NR PS, + 2 NR PS).
const int hi = tc >> 3;
threadgroup T* Rs = P + tr * PS;
threadgroup T* Cs = P + tc * PS;
threadgroup T* Es = Rs + (tc & 7);
chol_stage8<T, NA, NBC>(X, Es, hi, 0, true);
CHOL_UNROLL
for (int g = 0; g < NG; ++g) {
  const int qg = (1 + (g & 1)) * NR * PS; // group g, solved
  const int qo = (2 - (g & 1)) * NR * PS; // group g - 1
  threadgroup_barrier(mem_flags::mem_threadgroup); // A_g: group g staged
  if (g == 0 && failed != 0)
    return;
  // Round g - 1's update of the groups right of g + 1, off the chain.
  if (g > 0)
    chol_update8<T, NA, NBC>(X, Rs + qo, Cs + qo, hi, g + 1, NG);
  threadgroup_barrier(mem_flags::mem_threadgroup); // B_g: group g solved
  chol_stage8<T, NA, NBC>(X, Es + qg, hi, g, false);
  if (g + 1 < NG && hi == ((g + 1) & 1)) { // the warps that hold it
    chol_update8<T, NA, NBC>(X, Rs + qg, Cs + qg, hi, g + 1, g + 2);
    chol_stage8<T, NA, NBC>(X, Es, hi, g + 1, true);
  }
}
// The result, as chol_run's BLOCKED: the rows below in place, the
// diagonal block's factor out of the other groups' way (transposed into
// its upper triangle, the diagonal into Dg) by group 0 only.
// (Addresses as for the loads; the diagonal block's transposed element
// (c, i) from ot.)
device T* dg = Dg + (int64_t)b * n + p0;
device T* ow = w + (int64_t)tr * wr + (int64_t)tc * wc;
device T* ot = w + (int64_t)tc * wr + (int64_t)tr * wc;
CHOL_UNROLL
for (int a = 0; a < NA; ++a) {
  const int rb = a < NBC ? 16 * a : r0 + 16 * (a - NBC);
  CHOL_UNROLL
  for (int bb = 0; bb < NBC; ++bb) {
    if (a < NBC && a < bb)
      continue;
    const int c = 16 * bb + tc, i = rb + tr;
    if (a >= NBC) {
      if (i < rows && c < pw)
        ow[(int64_t)rb * wr + (int64_t)(16 * bb) * wc] = X[a * NBC + bb];
      continue;
    }
    if (x != 0 || i >= pw || c >= pw || c > i)
      continue;
    if (c == i)
      dg[i] = X[a * NBC + bb];
    else
      ot[(int64_t)(16 * bb) * wr + (int64_t)rb * wc] = X[a * NBC + bb];
  }
}

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
