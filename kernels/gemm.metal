// kiln's GEMM kernels: C = alpha * op(A) @ op(B) + beta * C, written in
// place, for every device (driver: src/linalg/gemm.c).
//
// Every kernel reads its operands as strided views (A, B and Cin with their
// _shape/_strides), so transposes, slices and batches cost no copies. C is
// bound twice: as the input Cin (for its strides and, unless BETA0, its old
// values) and as the output C, the same memory, written in place. alpha and
// beta arrive as 0-d inputs in the accumulation type; batch0 is the first
// batch entry of this launch (batches beyond the grid's y limit are split
// over several launches).
//
// Kernels: gemm_simt (portable, every dtype, 32/64/128 tiles), gemm_f32
// (float32, 128 x 128, double-buffered float4 tiles), gemm_dmma (float64
// tensor cores), gemm_dmma2 (the same on sm_90's m16n8k8, 16-deep slices,
// 4 stages in dynamic shared memory: the float64 default, see its
// section), gemm_tc2 (float16/bfloat16 tensor cores, cp.async
// pipeline), gemm_tc (the first tensor-core kernel: TF32, bf16-rounded
// float32, unaligned operands), gemm_scale; gemm_f32_tri, gemm_dmma_tri
// and gemm_dmma2_tri, gemm_f32's, gemm_dmma's and gemm_dmma2's tiles over
// C's lower trapezoid only (gemm_tri_tile_of: the Cholesky's updates,
// one launch where the driver would cut the triangle into several
// GEMMs). The newer
// kernels get op(A) and op(B) as views (TA = TB = false); the driver does
// the same for the older ones, whose TA/TB template arguments stay for
// compatibility.
//
// Launch geometry (all kernels of one tile size alike): a one-dimensional
// threadgroup of NT threads; grid.x = NT * tiles_m * tiles_n (tiles are
// walked in bands of GEMM_BAND tile rows, so neighbouring groups share
// panels of A and B in the cache); grid.y = batch entries in this launch.
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define GEMM_UNROLL _Pragma("unroll")
#else
#define GEMM_UNROLL
#endif

// Warp-level mma.sync needs sm_80 or newer (bf16, tf32, m16n8k16).
#if KILN_BACKEND_CUDA && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GEMM_HAS_MMA 1
#else
#define GEMM_HAS_MMA 0
#endif

// Warpgroup MMA (wgmma) needs the architecture-specific sm_90a target.
#if KILN_BACKEND_CUDA && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GEMM_HAS_WGMMA 1
#else
#define GEMM_HAS_WGMMA 0
#endif

#define GEMM_BAND 8

// Sizes and element strides of op(A) (M x K), op(B) (K x N) and C (M x N),
// with the batch entry's base offsets already applied to the pointers.
struct gemm_geom {
  int M, N, K;
  int64_t sam, sak, sbk, sbn, scm, scn;
};

// Offset of batch entry `b` in an operand: its leading dimensions walk the
// batch in C order; a plain matrix (ndim 2) is shared by every entry.
inline int64_t gemm_batch_offset(uint b, const constant int* shape,
                                 const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// Reads the geometry from the views; TA/TB say whether A/B are stored
// transposed (K x M, N x K).
template <bool TA, bool TB>
inline gemm_geom gemm_read_geom(const constant int* as,
                                const constant int64_t* ast, int an,
                                const constant int* bs,
                                const constant int64_t* bst, int bn,
                                const constant int64_t* cst, int cn) {
  gemm_geom g;
  g.M = TA ? as[an - 1] : as[an - 2];
  g.K = TA ? as[an - 2] : as[an - 1];
  g.N = TB ? bs[bn - 2] : bs[bn - 1];
  g.sam = TA ? ast[an - 1] : ast[an - 2];
  g.sak = TA ? ast[an - 2] : ast[an - 1];
  g.sbk = TB ? bst[bn - 1] : bst[bn - 2];
  g.sbn = TB ? bst[bn - 2] : bst[bn - 1];
  g.scm = cst[cn - 2];
  g.scn = cst[cn - 1];
  return g;
}

// The tile (row, column) that threadgroup `pid` computes: bands of
// GEMM_BAND tile rows, column-major inside a band, for cache reuse.
inline int2 gemm_tile_of(uint pid, int tiles_m, int tiles_n) {
  int per_band = GEMM_BAND * tiles_n;
  int band = (int)pid / per_band;
  int first = band * GEMM_BAND;
  int rows = min(tiles_m - first, GEMM_BAND);
  int in_band = (int)pid % per_band;
  return int2(first + in_band % rows, in_band / rows);
}

// The tile (row, column) that threadgroup `pid` computes when only C's
// lower trapezoid is launched (gemm_f32_tri, gemm_dmma_tri): the tiles on
// or below the diagonal, tile row >= tile column, of a C with at least as
// many tile rows as tile columns (UPPER: the mirror, tile column >= tile
// row, for the transposed C of an upper Cholesky factor). The grid holds
// exactly those tiles, no empty groups: first the triangle of the leading
// square, row by row (row i has i + 1 tiles, so pid = i (i + 1) / 2 + j;
// i from a float square root, corrected by one where it rounds), then the
// rectangle below it in gemm_tile_of's bands. Diagonal tiles are computed
// whole: the Cholesky never reads above its diagonal.
inline int2 gemm_tri_tile_of(uint pid, int tiles_m, int tiles_n,
                             bool upper) {
  const int lg = upper ? tiles_n : tiles_m, sh = upper ? tiles_m : tiles_n;
  const int p = (int)pid, tri = sh * (sh + 1) / 2;
  // Both candidates, then a select: a branch here let NVVM duplicate the
  // whole tile into both arms (gemm_dmma_tri: 157 registers, not 128).
  // The float root of an integer below 2^24 is off by less than one row:
  // one correction each way.
  int i = (int)((sqrt(8.0f * (float)p + 1.0f) - 1.0f) * 0.5f);
  i -= i * (i + 1) / 2 > p ? 1 : 0;
  i += (i + 1) * (i + 2) / 2 <= p ? 1 : 0;
  int2 r = gemm_tile_of((uint)max(p - tri, 0), max(lg - sh, 1), sh);
  const bool in_tri = p < tri;
  const int ti = in_tri ? i : sh + r.x, tj = in_tri ? p - i * (i + 1) / 2
                                                    : r.y;
  return upper ? int2(tj, ti) : int2(ti, tj);
}

// The epilogue: C = alpha * acc + beta * C, rounded once to T. With BETA0
// the old C is never read, so NaN there cannot leak into the result.
template <typename T, typename ACC, bool BETA0>
inline void gemm_store(device T* C, const device T* Cin, int64_t off,
                       ACC acc, ACC alpha, ACC beta) {
  ACC r = alpha * acc;
  if (!BETA0)
    r = fma(beta, (ACC)Cin[off], r);
  C[off] = T(r);
}

// ---- the portable register-blocked SIMT tile ---------------------------
//
// NT = (BM/TM)*(BN/TN) threads compute a BM x BN tile of C; each thread
// owns TM x TN outputs in chunks of 4 consecutive rows/columns (chunks
// BM*4/TM apart), so the shared-memory reads of a warp are consecutive
// and may be vectorised. Each k-step stages a BK-deep slice of op(A) and
// op(B) in threadgroup memory (k-major, rows padded by 4), loaded through
// registers one step ahead, so global loads overlap the FMAs; two
// barriers per step. LA / LB: whether the operand's rows of the tile run
// along its contiguous dimension (m for A, n for B) rather than k, which
// keeps the global loads of neighbouring threads adjacent.
template <typename T, typename ACC, bool TA, bool TB, bool BETA0, int BM,
          int BN, int BK, int TM, int TN, bool LA, bool LB>
inline void gemm_simt_tile(const device T* A, const device T* B,
                           const device T* Cin, device T* C, gemm_geom g,
                           ACC alpha, ACC beta, int row0, int col0, uint tid,
                           threadgroup ACC* As, threadgroup ACC* Bs) {
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int PA = BM + 4, PB = BN + 4;
  constexpr int LOAD_A = BM * BK / NT, LOAD_B = BN * BK / NT;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are 4-chunks");
  static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0, "even loads");
  const int tx = (int)tid % (BN / TN), ty = (int)tid / (BN / TN);
  ACC acc[TM][TN];
  GEMM_UNROLL
  for (int i = 0; i < TM; ++i)
    GEMM_UNROLL
    for (int j = 0; j < TN; ++j)
      acc[i][j] = ACC(0);
  ACC ra[LOAD_A], rb[LOAD_B];

  // Element e of this thread's share of the slice starting at k0.
  auto load = [&](int k0) {
    GEMM_UNROLL
    for (int e = 0; e < LOAD_A; ++e) {
      int idx = e * NT + (int)tid;
      int m = LA ? idx % BM : idx / BK, k = LA ? idx / BM : idx % BK;
      int gm = row0 + m, gk = k0 + k;
      ra[e] = (gm < g.M && gk < g.K)
                  ? (ACC)A[(int64_t)gm * g.sam + (int64_t)gk * g.sak]
                  : ACC(0);
    }
    GEMM_UNROLL
    for (int e = 0; e < LOAD_B; ++e) {
      int idx = e * NT + (int)tid;
      int n = LB ? idx % BN : idx / BK, k = LB ? idx / BN : idx % BK;
      int gn = col0 + n, gk = k0 + k;
      rb[e] = (gn < g.N && gk < g.K)
                  ? (ACC)B[(int64_t)gk * g.sbk + (int64_t)gn * g.sbn]
                  : ACC(0);
    }
  };
  load(0);
  for (int k0 = 0; k0 < g.K; k0 += BK) {
    threadgroup_barrier(mem_flags::mem_threadgroup); // last step's reads done
    GEMM_UNROLL
    for (int e = 0; e < LOAD_A; ++e) {
      int idx = e * NT + (int)tid;
      int m = LA ? idx % BM : idx / BK, k = LA ? idx / BM : idx % BK;
      As[k * PA + m] = ra[e];
    }
    GEMM_UNROLL
    for (int e = 0; e < LOAD_B; ++e) {
      int idx = e * NT + (int)tid;
      int n = LB ? idx % BN : idx / BK, k = LB ? idx / BN : idx % BK;
      Bs[k * PB + n] = rb[e];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup); // the slice is complete
    if (k0 + BK < g.K)
      load(k0 + BK); // in flight while this slice is multiplied
    GEMM_UNROLL
    for (int k = 0; k < BK; ++k) {
      ACC a[TM], b[TN];
      GEMM_UNROLL
      for (int i = 0; i < TM; ++i)
        a[i] = As[k * PA + (i / 4) * (BM * 4 / TM) + ty * 4 + i % 4];
      GEMM_UNROLL
      for (int j = 0; j < TN; ++j)
        b[j] = Bs[k * PB + (j / 4) * (BN * 4 / TN) + tx * 4 + j % 4];
      GEMM_UNROLL
      for (int i = 0; i < TM; ++i)
        GEMM_UNROLL
        for (int j = 0; j < TN; ++j)
          acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
  }
  GEMM_UNROLL
  for (int i = 0; i < TM; ++i) {
    int m = row0 + (i / 4) * (BM * 4 / TM) + ty * 4 + i % 4;
    GEMM_UNROLL
    for (int j = 0; j < TN; ++j) {
      int n = col0 + (j / 4) * (BN * 4 / TN) + tx * 4 + j % 4;
      if (m < g.M && n < g.N)
        gemm_store<T, ACC, BETA0>(C, Cin, (int64_t)m * g.scm +
                                  (int64_t)n * g.scn, acc[i][j], alpha, beta);
    }
  }
}

// ---- float32 SIMT, 128 x 128 tiles -------------------------------------
//
// The main float32 path (every device; tuned for the H100). 256 threads
// as a 16 x 16 grid, each owning 8 x 8 of C as four 4 x 4 blocks (rows
// ty*4 and 64 + ty*4, columns tx*4 and 64 + tx*4): every shared-memory
// read is one float4, a warp's reads of B are 256 consecutive bytes (two
// wavefronts) and its reads of A two broadcasts, so 64 FMAs cost 4 loads.
// Both operands sit in shared memory k-major (As[k][m], Bs[k][n], rows
// padded by 4 floats so the transposing stores of k-contiguous operands
// hit 32 banks), double-buffered: the next BK = 8 slice is loaded from
// global memory into registers while the current one is multiplied, then
// stored into the other buffer, with one barrier per slice. 128
// registers (sm_90a), so two threadgroups (16 warps) share an SM. Where
// every tile is whole and k a multiple of 8 (EXACT), a second loop walks
// running pointers with no bounds tests: 22.9 ms = 47.9 TFLOP/s at
// 8192^3 on an H100, 0.93x cuBLAS (the general loop: 24.2 ms, 0.88x).
// Tried without gain (H100, 8192^3, within 0.5%): bands of 4, 16 or 32
// tile rows instead of 8, and a warp of 8 x 4 threads (4 shared-memory
// wavefronts per k instead of 6); unrolling the slice loop by two needs
// 155 registers (one group per SM). Layouts whose modes are
// both 1 or both 3 take 130-141 and so get one group per SM (A
// transposed ran at 38.9 TFLOP/s): the dialect cannot yet ask for two
// groups per SM. BK = 16 needs 155 registers (one group per SM) and ran
// at 41.8; running pointers instead of recomputing each slice's
// addresses need 139 (not timed, same problem).
//
// Operand modes (MA for A, MB for B; rows are m for A, n for B): 0 / 1,
// scalar loads with neighbouring threads along k (0) or along the rows
// (1), whichever dimension is contiguous; 2 / 3, the same as float4
// loads, where that dimension has stride 1 and the other stride, the
// start and the batch strides are multiples of 4 elements. Vector loads
// are used only where the whole slice is in range (interior tiles, whole
// k-slices); edge tiles and a ragged last slice take checked scalar
// loads, so the interior pays no bounds tests. The driver passes op(A)
// and op(B) as views, so the kernel needs no transpose flags.
#define GEMM_F32_BK 8
#define GEMM_F32_P 132

// This thread's four elements of a 128 x 8 operand slice at (r0, k0): one
// row and four k (modes 0, 2), or four rows and one k (modes 1, 3), into
// v[0..3]. Plain floats rather than a float4 variable: the dialect's vec
// copy *assignment* (CUDA) is a byte-blob copy, which NVVM splits into
// byte shuffles of the loaded registers; those shuffles consumed the
// prefetched values at once and so waited out the whole global-memory
// latency every slice (gemm_f32 ran at 30 TFLOP/s on an H100). A float4
// *initialised* from memory is one LDG.128 and stays untouched until the
// store after the FMAs.
template <int MODE>
inline void gemm_f32_fetch(const device float* X, int64_t sr, int64_t sk,
                           int r0, int rows, int k0, int K, uint tid,
                           bool check, thread float* v) {
  constexpr bool KV = MODE == 0 || MODE == 2;
  const int r = KV ? (int)tid / 2 : ((int)tid % 32) * 4;
  const int k = KV ? ((int)tid % 2) * 4 : (int)tid / 32;
  const device float* p =
      X + (int64_t)(r0 + r) * sr + (int64_t)(k0 + k) * sk;
  if (MODE >= 2 && !check) {
    const float4 t = *(const device float4*)p;
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
    return;
  }
  const int64_t step = KV ? sk : sr;
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i) {
    bool in = !check || (KV ? r0 + r < rows && k0 + k + i < K
                            : r0 + r + i < rows && k0 + k < K);
    v[i] = in ? p[i * step] : 0.0f;
  }
}

// Where this thread's share of the slice at k0 = 0 starts (see
// gemm_f32_fetch): the fast loop of gemm_f32_tile walks it along k.
template <int MODE>
inline const device float* gemm_f32_at(const device float* X, int64_t sr,
                                       int64_t sk, int r0, uint tid) {
  constexpr bool KV = MODE == 0 || MODE == 2;
  const int r = KV ? (int)tid / 2 : ((int)tid % 32) * 4;
  const int k = KV ? ((int)tid % 2) * 4 : (int)tid / 32;
  return X + (int64_t)(r0 + r) * sr + (int64_t)k * sk;
}

// gemm_f32_fetch of a slice known to be in range, from its start p.
template <int MODE>
inline void gemm_f32_fetch_in(const device float* p, int64_t sr, int64_t sk,
                              thread float* v) {
  if (MODE >= 2) {
    const float4 t = *(const device float4*)p;
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
    return;
  }
  const int64_t step = MODE == 0 ? sk : sr;
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    v[i] = p[i * step];
}

// Four consecutive floats into threadgroup memory (16-byte aligned): one
// st.shared.v4 on CUDA (see gemm_f32_fetch for why not a float4 store).
inline void gemm_f32_st4(threadgroup float* s, const thread float* v) {
#if KILN_BACKEND_CUDA
  uint a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
      : "=r"(a)
      : "l"(s));
  asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};"
               :
               : "r"(a), "f"(v[0]), "f"(v[1]), "f"(v[2]), "f"(v[3])
               : "memory");
#else
  for (int i = 0; i < 4; ++i)
    s[i] = v[i];
#endif
}

// Stores what gemm_f32_fetch loaded into the k-major slice `s`.
template <int MODE>
inline void gemm_f32_put(const thread float* v, uint tid,
                         threadgroup float* s) {
  constexpr bool KV = MODE == 0 || MODE == 2;
  const int r = KV ? (int)tid / 2 : ((int)tid % 32) * 4;
  const int k = KV ? ((int)tid % 2) * 4 : (int)tid / 32;
  if (KV) {
    GEMM_UNROLL
    for (int i = 0; i < 4; ++i)
      s[(k + i) * GEMM_F32_P + r] = v[i];
  } else {
    gemm_f32_st4(s + k * GEMM_F32_P + r, v);
  }
}

template <bool BETA0, int MA, int MB, bool EXACT>
inline void gemm_f32_tile(const device float* A, const device float* B,
                          const device float* Cin, device float* C,
                          gemm_geom g, float alpha, float beta, int row0,
                          int col0, uint tid, threadgroup float* As,
                          threadgroup float* Bs) {
  constexpr int BK = GEMM_F32_BK, P = GEMM_F32_P, SLICE = BK * P;
  const int tx = (int)tid % 16, ty = (int)tid / 16;
  const bool inner = row0 + 128 <= g.M && col0 + 128 <= g.N;
  const int slices = (g.K + BK - 1) / BK;
  float acc[8][8];
  GEMM_UNROLL
  for (int i = 0; i < 8; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 8; ++j)
      acc[i][j] = 0.0f;
  float ra[4], rb[4];
  // The FMAs of the slice at offset `cur` of As and Bs.
  auto multiply = [&](int cur) {
    // One base per operand, so each k's float4 reads are immediate offsets
    // (addresses recomputed per k cost 2 instructions each, 3% of the loop).
    const threadgroup float* as = As + cur + ty * 4;
    const threadgroup float* bs = Bs + cur + tx * 4;
    GEMM_UNROLL
    for (int k = 0; k < BK; ++k) {
      const threadgroup float* a = as + k * P;
      const threadgroup float* b = bs + k * P;
      float4 a0 = *(const threadgroup float4*)a;
      float4 a1 = *(const threadgroup float4*)(a + 64);
      float4 b0 = *(const threadgroup float4*)b;
      float4 b1 = *(const threadgroup float4*)(b + 64);
      float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
      GEMM_UNROLL
      for (int i = 0; i < 8; ++i)
        GEMM_UNROLL
        for (int j = 0; j < 8; ++j)
          acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
  };
  if (EXACT) {
    // Every tile inner and every slice whole (the driver's EXACT): running
    // pointers and no checks, where the general loop below spends a sixth
    // of its instructions on addresses and bounds. A template argument
    // rather than a test of the geometry: with both loops in one kernel
    // the registers rise from 127 to 130, one threadgroup per SM.
    const device float* pa = gemm_f32_at<MA>(A, g.sam, g.sak, row0, tid);
    const device float* pb = gemm_f32_at<MB>(B, g.sbn, g.sbk, col0, tid);
    const int64_t da = (MA == 2 ? 1 : g.sak) * BK;
    const int64_t db = (MB == 2 ? 1 : g.sbk) * BK;
    gemm_f32_fetch_in<MA>(pa, g.sam, g.sak, ra);
    gemm_f32_fetch_in<MB>(pb, g.sbn, g.sbk, rb);
    gemm_f32_put<MA>(ra, tid, As);
    gemm_f32_put<MB>(rb, tid, Bs);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int s = 0; s < slices; ++s) {
      const int cur = (s & 1) * SLICE;
      const bool more = s + 1 < slices;
      if (more) { // in flight while this slice is multiplied
        pa += da;
        pb += db;
        gemm_f32_fetch_in<MA>(pa, g.sam, g.sak, ra);
        gemm_f32_fetch_in<MB>(pb, g.sbn, g.sbk, rb);
      }
      multiply(cur);
      if (more) {
        gemm_f32_put<MA>(ra, tid, As + (SLICE - cur));
        gemm_f32_put<MB>(rb, tid, Bs + (SLICE - cur));
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
  } else {
    bool check = !inner || BK > g.K;
    gemm_f32_fetch<MA>(A, g.sam, g.sak, row0, g.M, 0, g.K, tid, check, ra);
    gemm_f32_fetch<MB>(B, g.sbn, g.sbk, col0, g.N, 0, g.K, tid, check, rb);
    gemm_f32_put<MA>(ra, tid, As);
    gemm_f32_put<MB>(rb, tid, Bs);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int s = 0; s < slices; ++s) {
      const int cur = (s & 1) * SLICE;
      const bool more = s + 1 < slices;
      if (more) { // in flight while this slice is multiplied
        int k0 = (s + 1) * BK;
        check = !inner || k0 + BK > g.K;
        gemm_f32_fetch<MA>(A, g.sam, g.sak, row0, g.M, k0, g.K, tid, check,
                           ra);
        gemm_f32_fetch<MB>(B, g.sbn, g.sbk, col0, g.N, k0, g.K, tid, check,
                           rb);
      }
      multiply(cur);
      if (more) { // the other buffer was last read before the last barrier
        gemm_f32_put<MA>(ra, tid, As + (SLICE - cur));
        gemm_f32_put<MB>(rb, tid, Bs + (SLICE - cur));
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
  }
  GEMM_UNROLL
  for (int i = 0; i < 8; ++i) {
    int m = row0 + (i / 4) * 64 + ty * 4 + i % 4;
    GEMM_UNROLL
    for (int j = 0; j < 8; ++j) {
      int n = col0 + (j / 4) * 64 + tx * 4 + j % 4;
      if (inner || (m < g.M && n < g.N))
        gemm_store<float, float, BETA0>(C, Cin, (int64_t)m * g.scm +
                                        (int64_t)n * g.scn, acc[i][j],
                                        alpha, beta);
    }
  }
}

// ---- the tensor-core tile (CUDA, sm_80+) -------------------------------
//
// 128 x 128 tiles, 256 threads = 8 warps in a 2 x 4 grid, each warp 64 x 32
// of C as 4 x 4 mma.sync tiles of 16 x 8, accumulated in float32. MMA
// selects the instruction: 0 float16 and 1 bfloat16 (m16n8k16; a float32
// input is rounded to bfloat16 for 1), 2 TF32 (m16n8k8, float32 input
// rounded to nearest TF32). Shared memory holds the BK = 32 slice as
// As[m][k] and Bs[n][k] (k contiguous, rows padded so that a warp's
// fragment reads hit 32 different banks), staged through registers one
// step ahead like the SIMT tile. VA / VB: 0, scalar loads; 1, 16-byte
// vectors along k; 2, 16-byte vectors along the operand's rows (m or n),
// where that dimension is contiguous and everything else 16-byte aligned.
#if GEMM_HAS_MMA
#define GEMM_TC_BM 128
#define GEMM_TC_BN 128
#define GEMM_TC_BK 32

// Shared-memory word of one element: 16-bit formats as ushort bits,
// TF32 as the float's 32 bits.
template <int MMA> struct gemm_tc_elem { typedef ushort type; };
template <> struct gemm_tc_elem<2> { typedef uint type; };

inline uint gemm_tc_tf32(float x) {
  uint r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

// One element of an operand, converted to the shared-memory format.
template <typename T, int MMA> struct gemm_tc_cvt;
template <> struct gemm_tc_cvt<half, 0> {
  static inline ushort f(half x) { return x.bits; }
};
template <> struct gemm_tc_cvt<bfloat, 1> {
  static inline ushort f(bfloat x) { return x.bits; }
};
template <> struct gemm_tc_cvt<float, 1> {
  static inline ushort f(float x) { return bfloat(x).bits; }
};
template <> struct gemm_tc_cvt<float, 2> {
  static inline uint f(float x) { return gemm_tc_tf32(x); }
};

template <int MMA>
inline void gemm_mma(float* d, const uint* a, const uint* b) {
  if (MMA == 0)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),
                   "r"(b[1]));
  else if (MMA == 1)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),
                   "r"(b[1]));
  else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),
                   "r"(b[1]));
}

// This thread's share of a 128 x 32 operand slice (rows r = m or n, then
// k), staged in registers: V, whole 16-byte vectors along k in the
// input's own format (row stride and base aligned, K a multiple of the
// vector), converted only when stored; else one converted element each,
// neighbouring threads along the operand's contiguous dimension (KC: k).
template <typename T, int MMA, bool V> struct gemm_tc_stage {
  typedef typename gemm_tc_elem<MMA>::type S;
  static constexpr int EL = GEMM_TC_BM * GEMM_TC_BK / 256;
  static constexpr int VW = 16 / sizeof(T);
  static constexpr int NV = EL / VW;
  kiln_cuda::uint4 vec[V ? NV : 1];
  S one[V ? 1 : EL];
};

// Where vector v of this thread starts in the slice. VM 1: along k; VM 2:
// along rows (r..r+VW-1 at one k), lanes of a warp on different k so the
// transposing shared stores hit different banks.
template <int VM, int VW>
inline int2 gemm_tc_vec_at(int v, uint tid) {
  int c = v * 256 + (int)tid;
  if (VM == 1)
    return int2(c / (GEMM_TC_BK / VW), (c % (GEMM_TC_BK / VW)) * VW);
  return int2((c / GEMM_TC_BK) * VW, c % GEMM_TC_BK);
}

template <typename T, int MMA, int VM, bool KC>
inline void gemm_tc_fetch(const device T* X, int64_t sr, int64_t sk, int r0,
                          int rows, int k0, int K, uint tid,
                          thread gemm_tc_stage<T, MMA, VM != 0>& st) {
  typedef gemm_tc_stage<T, MMA, VM != 0> G;
  constexpr bool V = VM != 0;
  if (V) {
    GEMM_UNROLL
    for (int v = 0; v < G::NV; ++v) {
      int2 rk = gemm_tc_vec_at<VM, G::VW>(v, tid);
      st.vec[V ? v : 0] = make_uint4(0, 0, 0, 0);
      if (r0 + rk.x < rows && k0 + rk.y < K)
        st.vec[V ? v : 0] = *(const kiln_cuda::uint4*)(
            X + (int64_t)(r0 + rk.x) * sr + (int64_t)(k0 + rk.y) * sk);
    }
  } else {
    GEMM_UNROLL
    for (int e = 0; e < G::EL; ++e) {
      int idx = e * 256 + (int)tid;
      int r = KC ? idx / GEMM_TC_BK : idx % GEMM_TC_BM;
      int k = KC ? idx % GEMM_TC_BK : idx / GEMM_TC_BM;
      bool in = r0 + r < rows && k0 + k < K;
      st.one[V ? 0 : e] =
          in ? gemm_tc_cvt<T, MMA>::f(
                   X[(int64_t)(r0 + r) * sr + (int64_t)(k0 + k) * sk])
             : typename G::S(0);
    }
  }
}

// Stores the staged share into the [row][k] shared slice (row pitch
// `pitch` elements). Vectors whose format needs no conversion (16-bit
// inputs) go in as one 16-byte store; the slice's rows and vectors are
// 16-byte aligned.
template <typename T, int MMA, int VM, bool KC>
inline void gemm_tc_put(thread const gemm_tc_stage<T, MMA, VM != 0>& st,
                        uint tid, int pitch,
                        threadgroup typename gemm_tc_elem<MMA>::type* sm) {
  typedef gemm_tc_stage<T, MMA, VM != 0> G;
  typedef typename G::S S;
  constexpr bool V = VM != 0;
  if (VM == 2) { // transposing: one element per row
    GEMM_UNROLL
    for (int v = 0; v < G::NV; ++v) {
      int2 rk = gemm_tc_vec_at<VM, G::VW>(v, tid);
      kiln_cuda::uint4 w = st.vec[V ? v : 0];
      const T* e = (const T*)&w;
      GEMM_UNROLL
      for (int i = 0; i < G::VW; ++i)
        sm[(rk.x + i) * pitch + rk.y] = gemm_tc_cvt<T, MMA>::f(e[i]);
    }
  } else if (V) {
    GEMM_UNROLL
    for (int v = 0; v < G::NV; ++v) {
      int2 rk = gemm_tc_vec_at<VM, G::VW>(v, tid);
      kiln_cuda::uint4 w = st.vec[V ? v : 0];
      S* dst = sm + rk.x * pitch + rk.y;
      if (sizeof(T) == sizeof(S)) {
        if (MMA == 2) { // float -> TF32, 4 per vector
          const float* f = (const float*)&w;
          w = make_uint4(gemm_tc_tf32(f[0]), gemm_tc_tf32(f[1]),
                         gemm_tc_tf32(f[2]), gemm_tc_tf32(f[3]));
        }
        *(kiln_cuda::uint4*)dst = w;
      } else { // float -> bfloat16
        const T* e = (const T*)&w;
        GEMM_UNROLL
        for (int i = 0; i < G::VW; ++i)
          dst[i] = gemm_tc_cvt<T, MMA>::f(e[i]);
      }
    }
  } else {
    GEMM_UNROLL
    for (int e = 0; e < G::EL; ++e) {
      int idx = e * 256 + (int)tid;
      int r = KC ? idx / GEMM_TC_BK : idx % GEMM_TC_BM;
      int k = KC ? idx % GEMM_TC_BK : idx / GEMM_TC_BM;
      sm[r * pitch + k] = st.one[V ? 0 : e];
    }
  }
}

template <typename T, int MMA, bool TA, bool TB, bool BETA0, int VA, int VB,
          bool KA, bool KB>
inline void gemm_tc_tile(const device T* A, const device T* B,
                         const device T* Cin, device T* C, gemm_geom g,
                         float alpha, float beta, int row0, int col0,
                         uint tid, threadgroup void* smem) {
  typedef typename gemm_tc_elem<MMA>::type S;
  // Pitch in elements: 16-bit rows of 40 (20 words), TF32 rows of 36.
  constexpr int PITCH = GEMM_TC_BK + (sizeof(S) == 2 ? 8 : 4);
  constexpr int KSTEP = MMA == 2 ? 8 : 16;
  S* As = (S*)smem;
  S* Bs = As + GEMM_TC_BM * PITCH;
  const int lane = (int)tid % 32, warp = (int)tid / 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int gr = lane / 4, tq = lane % 4;
  float acc[4][4][4];
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int q = 0; q < 4; ++q)
        acc[i][j][q] = 0.0f;
  gemm_tc_stage<T, MMA, VA != 0> sa;
  gemm_tc_stage<T, MMA, VB != 0> sb;
  gemm_tc_fetch<T, MMA, VA, KA>(A, g.sam, g.sak, row0, g.M, 0, g.K, tid, sa);
  gemm_tc_fetch<T, MMA, VB, KB>(B, g.sbn, g.sbk, col0, g.N, 0, g.K, tid, sb);
  for (int k0 = 0; k0 < g.K; k0 += GEMM_TC_BK) {
    __syncthreads(); // the previous slice's fragments are read
    gemm_tc_put<T, MMA, VA, KA>(sa, tid, PITCH, As);
    gemm_tc_put<T, MMA, VB, KB>(sb, tid, PITCH, Bs);
    __syncthreads(); // the slice is complete
    if (k0 + GEMM_TC_BK < g.K) { // in flight during the mma loop
      gemm_tc_fetch<T, MMA, VA, KA>(A, g.sam, g.sak, row0, g.M,
                                    k0 + GEMM_TC_BK, g.K, tid, sa);
      gemm_tc_fetch<T, MMA, VB, KB>(B, g.sbn, g.sbk, col0, g.N,
                                    k0 + GEMM_TC_BK, g.K, tid, sb);
    }
    GEMM_UNROLL
    for (int kk = 0; kk < GEMM_TC_BK; kk += KSTEP) {
      uint af[4][4], bf[4][2];
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i) {
        const S* p = As + (wm + i * 16 + gr) * PITCH + kk;
        if (MMA == 2) {
          af[i][0] = p[tq];
          af[i][1] = p[8 * PITCH + tq];
          af[i][2] = p[tq + 4];
          af[i][3] = p[8 * PITCH + tq + 4];
        } else {
          af[i][0] = *(const uint*)(p + 2 * tq);
          af[i][1] = *(const uint*)(p + 8 * PITCH + 2 * tq);
          af[i][2] = *(const uint*)(p + 2 * tq + 8);
          af[i][3] = *(const uint*)(p + 8 * PITCH + 2 * tq + 8);
        }
      }
      GEMM_UNROLL
      for (int j = 0; j < 4; ++j) {
        const S* p = Bs + (wn + j * 8 + gr) * PITCH + kk;
        if (MMA == 2) {
          bf[j][0] = p[tq];
          bf[j][1] = p[tq + 4];
        } else {
          bf[j][0] = *(const uint*)(p + 2 * tq);
          bf[j][1] = *(const uint*)(p + 2 * tq + 8);
        }
      }
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i)
        GEMM_UNROLL
        for (int j = 0; j < 4; ++j)
          gemm_mma<MMA>(acc[i][j], af[i], bf[j]);
    }
  }
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int q = 0; q < 4; ++q) {
        int m = row0 + wm + i * 16 + gr + (q / 2) * 8;
        int n = col0 + wn + j * 8 + 2 * tq + q % 2;
        if (m < g.M && n < g.N)
          gemm_store<T, float, BETA0>(C, Cin, (int64_t)m * g.scm +
                                      (int64_t)n * g.scn, acc[i][j][q],
                                      alpha, beta);
      }
}

// ---- float16 / bfloat16 on tensor cores, pipelined (CUDA, sm_80+) -----
//
// The tiles of gemm_tc (128 x 128, 8 warps of 64 x 32, mma.sync m16n8k16,
// float32 accumulators), fed the way Ampere and Hopper want: BK = 32
// slices of both operands go global -> shared memory by cp.async in
// 16-byte chunks, three stages in flight (3 x 16 KiB = 48 KiB, the static
// limit), one barrier per slice, and the fragments come out of shared
// memory with ldmatrix (.trans where the operand is stored k-major). Each
// operand is staged in the layout its global memory is contiguous in:
// VA/VB 1, [row][k] (rows of 64 bytes); 2, [k][row] (rows of 256 bytes);
// 16-byte chunks are XOR-swizzled by row so that the eight rows one
// ldmatrix phase reads, and the chunks one cp.async phase writes, land
// in eight different bank groups. Needs 16-byte vectors on both operands
// (gemm.c's tc_vector_mode), so a chunk is either wholly inside the
// matrix or wholly outside (zero-filled by cp.async's src-size 0).
inline uint gemm_smem_addr(const void* p) {
  uint a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
      : "=r"(a)
      : "l"(p));
  return a;
}

// Copies one double, or writes 0 when !in (src-size 0 reads nothing).
inline void gemm_cp_async8(uint dst, const void* src, bool in) {
  asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; "
               "cp.async.ca.shared.global [%0], [g], 8, %2; }"
               :
               : "r"(dst), "l"(src), "r"(in ? 8 : 0)
               : "memory");
}
inline void gemm_cp_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> inline void gemm_cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

#define GEMM_TC2_BK 32
#define GEMM_TC2_STAGES 3
#define GEMM_TC2_SLICE (128 * GEMM_TC2_BK) // halves per operand slice

// Copies 16 bytes, or writes zeros when !in.
inline void gemm_cp_async16(uint dst, const void* src, bool in) {
  asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; "
               "cp.async.cg.shared.global [%0], [g], 16, %2; }"
               :
               : "r"(dst), "l"(src), "r"(in ? 16 : 0)
               : "memory");
}

// Byte offset of 16-byte chunk (row, c) of a slice: [row][k] when KC (4
// chunks a row), else [k][row] (16 chunks a row), swizzled.
template <bool KC> inline uint gemm_tc2_at(int row, int c) {
  return KC ? (uint)(row * 64 + ((c ^ ((row >> 1) & 3)) * 16))
            : (uint)(row * 256 + ((c ^ (row & 7)) * 16));
}

// One thread's two chunks of each slice of an operand (rows r = m or n).
template <bool KC> struct gemm_tc2_loader {
  const device ushort* base;
  const device ushort* src[2];
  uint at[2];
  int k[2];     // first k of the chunk, within the slice
  bool in_r[2]; // the chunk's rows are inside the matrix
  int64_t step;
  inline void init(const device ushort* X, int64_t sr, int64_t sk, int r0,
                   int rows, uint tid) {
    GEMM_UNROLL
    for (int i = 0; i < 2; ++i) {
      int e = i * 256 + (int)tid;
      int r = KC ? e / 4 : (e % 16) * 8;
      int kk = KC ? (e % 4) * 8 : e / 16;
      k[i] = kk;
      at[i] = KC ? gemm_tc2_at<true>(r, e % 4) : gemm_tc2_at<false>(kk, e % 16);
      in_r[i] = KC ? r0 + r < rows : r0 + r + 8 <= rows;
      src[i] = X + (int64_t)(in_r[i] ? r0 + r : 0) * sr + (int64_t)kk * sk;
    }
    base = X;
    step = (int64_t)GEMM_TC2_BK * sk;
  }
  inline void issue(int slice, int K, uint stage) {
    GEMM_UNROLL
    for (int i = 0; i < 2; ++i) {
      int k0 = slice * GEMM_TC2_BK + k[i];
      bool in = in_r[i] && (KC ? k0 + 8 <= K : k0 < K);
      const device ushort* p = in ? src[i] + (int64_t)slice * step : base;
      gemm_cp_async16(stage + at[i], p, in);
    }
  }
};

inline void gemm_ldsm4(uint* r, uint addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, "
               "[%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
inline void gemm_ldsm4_t(uint* r, uint addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
               "{%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The A fragment of rows m..m+15, k..k+15 (m16n8k16: a0 rows 0-7 k 0-7,
// a1 rows 8-15, a2 k 8-15, a3 both), lane l addressing one 16-byte row
// of matrix l / 8.
template <bool KC>
inline void gemm_tc2_frag_a(uint* a, uint slice, int m, int k, int lane) {
  int mat = lane / 8, i = lane % 8;
  if (KC)
    gemm_ldsm4(a, slice + gemm_tc2_at<true>(m + i + (mat % 2) * 8,
                                            k / 8 + mat / 2));
  else
    gemm_ldsm4_t(a, slice + gemm_tc2_at<false>(k + i + (mat / 2) * 8,
                                               m / 8 + mat % 2));
}

// The B fragments of columns n..n+7 (b[0], b[1]) and n+8..n+15 (b[2],
// b[3]), k..k+15.
template <bool KC>
inline void gemm_tc2_frag_b(uint* b, uint slice, int n, int k, int lane) {
  int mat = lane / 8, i = lane % 8;
  if (KC)
    gemm_ldsm4(b, slice + gemm_tc2_at<true>(n + i + (mat / 2) * 8,
                                            k / 8 + mat % 2));
  else
    gemm_ldsm4_t(b, slice + gemm_tc2_at<false>(k + i + (mat % 2) * 8,
                                               n / 8 + mat / 2));
}

template <typename T, int MMA, bool BETA0, int VA, int VB>
inline void gemm_tc2_tile(const device T* A, const device T* B,
                          const device T* Cin, device T* C, gemm_geom g,
                          float alpha, float beta, int row0, int col0,
                          uint tid, threadgroup void* smem) {
  constexpr int S = GEMM_TC2_STAGES, SLB = GEMM_TC2_SLICE * 2; // bytes
  constexpr bool KA = VA == 1, KB = VB == 1;
  const int lane = (int)tid % 32, warp = (int)tid / 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int gr = lane / 4, tq = lane % 4;
  const uint As = gemm_smem_addr(smem), Bs = As + S * SLB;
  gemm_tc2_loader<KA> la;
  gemm_tc2_loader<KB> lb;
  la.init((const device ushort*)A, g.sam, g.sak, row0, g.M, tid);
  lb.init((const device ushort*)B, g.sbn, g.sbk, col0, g.N, tid);
  const int slices = (g.K + GEMM_TC2_BK - 1) / GEMM_TC2_BK;
  float acc[4][4][4];
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int q = 0; q < 4; ++q)
        acc[i][j][q] = 0.0f;
  GEMM_UNROLL
  for (int s = 0; s < S - 1; ++s) {
    if (s < slices) {
      la.issue(s, g.K, As + s * SLB);
      lb.issue(s, g.K, Bs + s * SLB);
    }
    gemm_cp_commit();
  }
  for (int s = 0; s < slices; ++s) {
    gemm_cp_wait<S - 2>();
    __syncthreads();
    int next = s + S - 1;
    if (next < slices) {
      la.issue(next, g.K, As + (next % S) * SLB);
      lb.issue(next, g.K, Bs + (next % S) * SLB);
    }
    gemm_cp_commit();
    const uint as = As + (s % S) * SLB, bs = Bs + (s % S) * SLB;
    GEMM_UNROLL
    for (int kk = 0; kk < GEMM_TC2_BK; kk += 16) {
      uint af[4][4], bf[4][2];
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i)
        gemm_tc2_frag_a<KA>(af[i], as, wm + i * 16, kk, lane);
      GEMM_UNROLL
      for (int j = 0; j < 4; j += 2)
        gemm_tc2_frag_b<KB>(&bf[j][0], bs, wn + j * 8, kk, lane);
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i)
        GEMM_UNROLL
        for (int j = 0; j < 4; ++j)
          gemm_mma<MMA>(acc[i][j], af[i], bf[j]);
    }
  }
  gemm_cp_wait<0>();
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int q = 0; q < 4; ++q) {
        int m = row0 + wm + i * 16 + gr + (q / 2) * 8;
        int n = col0 + wn + j * 8 + 2 * tq + q % 2;
        if (m < g.M && n < g.N)
          gemm_store<T, float, BETA0>(C, Cin, (int64_t)m * g.scm +
                                      (int64_t)n * g.scn, acc[i][j][q],
                                      alpha, beta);
      }
}

// ---- float64 on tensor cores (CUDA, sm_80+: DMMA) ----------------------
//
// mma.sync m8n8k4 in float64, m16n8k4 on sm_90 (each product and sum an
// IEEE float64 operation, as a float64 FMA; only the order of the k-sum
// differs from the SIMT kernel). 8192^3 on an H100: 39 TFLOP/s, 0.67x
// cublasDgemm (25 with m8n8k4). 128 x 128 tiles, 512 threads = 16 warps
// in a 4 x 4 grid, each warp 32 x 32 of C as 4 x 4 tiles of 8 x 8 (32
// doubles of accumulator per thread, 128 registers: one threadgroup and
// 16 warps per SM). Slices of BK = 8 of both operands travel global ->
// shared memory by cp.async (8 bytes each, zero-filled out of range, so
// edges need no branches), three stages in flight, one barrier per slice:
// 3 x 2 x 128 x 8 doubles = 48 KiB, the static limit. Each operand sits
// in the layout its global loads are coalesced in: [row][k] where k is
// contiguous (KA / KB), else [k][row], with an XOR swizzle that makes a
// warp's fragment reads (8 rows x 4 k) hit every bank pair exactly twice
// (two wavefronts, the minimum for 32 doubles), and keeps the cp.async
// stores conflict-free.
#define GEMM_DMMA_BK 8
#define GEMM_DMMA_STAGES 3
#define GEMM_DMMA_SLICE (128 * GEMM_DMMA_BK)

// Where element (r, k) of a 128 x 8 slice lives (in doubles): [r][k] when
// KC, else [k][r], swizzled (see above).
template <bool KC> inline int gemm_dmma_at(int r, int k) {
  return KC ? r * 8 + (k ^ (((r >> 1) & 1) << 2))
            : k * 128 + (r ^ ((k & 3) << 2));
}

// One thread's two elements of each slice of an operand: their position,
// the source of slice 0 and whether their row is inside the matrix.
template <bool KC> struct gemm_dmma_loader {
  const device double* base; // read by nothing: the address of a zero fill
  const device double* src[2];
  int k[2], at[2];
  bool row_in[2];
  int64_t step; // elements from one slice to the next
  inline void init(const device double* X, int64_t sr, int64_t sk, int r0,
                   int rows, uint tid) {
    GEMM_UNROLL
    for (int i = 0; i < 2; ++i) {
      int e = i * 512 + (int)tid;
      int r = KC ? e / 8 : e % 128, kk = KC ? e % 8 : e / 128;
      k[i] = kk;
      at[i] = gemm_dmma_at<KC>(r, kk);
      row_in[i] = r0 + r < rows;
      src[i] = X + (int64_t)(row_in[i] ? r0 + r : 0) * sr + (int64_t)kk * sk;
    }
    base = X;
    step = (int64_t)GEMM_DMMA_BK * sk;
  }
  inline void issue(int slice, int K, threadgroup double* stage) {
    GEMM_UNROLL
    for (int i = 0; i < 2; ++i) {
      int k0 = slice * GEMM_DMMA_BK;
      bool in = row_in[i] && k0 + k[i] < K;
      const device double* p = in ? src[i] + (int64_t)slice * step : base;
      gemm_cp_async8(gemm_smem_addr(stage + at[i]), p, in);
    }
  }
};

inline void gemm_dmma(thread double* c, double a, double b) {
  asm("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, "
      "{%3}, {%0,%1};"
      : "+d"(c[0]), "+d"(c[1])
      : "d"(a), "d"(b));
}

// sm_90's m16n8k4: the 8 x 8 tiles (i, j) and (i + 1, j) in one
// instruction. Its fragments are exactly those of the two m8n8k4 (A rows
// r and r + 8, the same B column, C rows r and r + 8), but the H100 runs
// the 8 x 8 shape at about half its float64 tensor rate (gemm_dmma gave
// 25 TFLOP/s at 8192^3 against cuBLAS's 56).
inline void gemm_dmma16(thread double* c0, thread double* c1, double a0,
                        double a1, double b) {
  asm("mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, "
      "{%4,%5}, {%6}, {%0,%1,%2,%3};"
      : "+d"(c0[0]), "+d"(c0[1]), "+d"(c1[0]), "+d"(c1[1])
      : "d"(a0), "d"(a1), "d"(b));
}

template <bool BETA0, bool KA, bool KB>
inline void gemm_dmma_tile(const device double* A, const device double* B,
                           const device double* Cin, device double* C,
                           gemm_geom g, double alpha, double beta, int row0,
                           int col0, uint tid, threadgroup double* smem) {
  constexpr int S = GEMM_DMMA_STAGES, SL = GEMM_DMMA_SLICE;
  const int lane = (int)tid % 32, warp = (int)tid / 32;
  const int wm = (warp / 4) * 32, wn = (warp % 4) * 32;
  const int r = lane / 4, q = lane % 4;
  threadgroup double* As = smem;          // S slices of A
  threadgroup double* Bs = smem + S * SL; // then S slices of B
  gemm_dmma_loader<KA> la;
  gemm_dmma_loader<KB> lb;
  la.init(A, g.sam, g.sak, row0, g.M, tid);
  lb.init(B, g.sbn, g.sbk, col0, g.N, tid);
  const int slices = (g.K + GEMM_DMMA_BK - 1) / GEMM_DMMA_BK;
  double acc[4][4][2];
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      acc[i][j][0] = acc[i][j][1] = 0.0;
  GEMM_UNROLL
  for (int s = 0; s < S - 1; ++s) {
    if (s < slices) {
      la.issue(s, g.K, As + s * SL);
      lb.issue(s, g.K, Bs + s * SL);
    }
    gemm_cp_commit(); // empty groups keep the count of groups uniform
  }
  for (int s = 0; s < slices; ++s) {
    gemm_cp_wait<S - 2>(); // this thread's copies of slice s landed
    __syncthreads();       // everyone's; and slice s - 1 is consumed
    int next = s + S - 1;
    if (next < slices) {
      la.issue(next, g.K, As + (next % S) * SL);
      lb.issue(next, g.K, Bs + (next % S) * SL);
    }
    gemm_cp_commit();
    const threadgroup double* as = As + (s % S) * SL;
    const threadgroup double* bs = Bs + (s % S) * SL;
    GEMM_UNROLL
    for (int kk = 0; kk < GEMM_DMMA_BK; kk += 4) {
      double a[4], b[4];
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i)
        a[i] = as[gemm_dmma_at<KA>(wm + 8 * i + r, kk + q)];
      GEMM_UNROLL
      for (int j = 0; j < 4; ++j)
        b[j] = bs[gemm_dmma_at<KB>(wn + 8 * j + r, kk + q)];
#if __CUDA_ARCH__ >= 900
      GEMM_UNROLL
      for (int i = 0; i < 4; i += 2)
        GEMM_UNROLL
        for (int j = 0; j < 4; ++j)
          gemm_dmma16(acc[i][j], acc[i + 1][j], a[i], a[i + 1], b[j]);
#else
      GEMM_UNROLL
      for (int i = 0; i < 4; ++i)
        GEMM_UNROLL
        for (int j = 0; j < 4; ++j)
          gemm_dmma(acc[i][j], a[i], b[j]);
#endif
    }
  }
  gemm_cp_wait<0>();
  GEMM_UNROLL
  for (int i = 0; i < 4; ++i) {
    int m = row0 + wm + 8 * i + r;
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int h = 0; h < 2; ++h) {
        int n = col0 + wn + 8 * j + 2 * q + h;
        if (m < g.M && n < g.N)
          gemm_store<double, double, BETA0>(C, Cin, (int64_t)m * g.scm +
                                            (int64_t)n * g.scn, acc[i][j][h],
                                            alpha, beta);
      }
  }
}

// ---- float64 on tensor cores, second generation (gemm_dmma2) -----------
//
// The same 128 x 128 tiles, 512 threads and 32 x 32 warp tiles as
// gemm_dmma (so the same 64 accumulator registers and epilogue), but the
// k loop reworked around sm_90's larger float64 shape m16n8k8:
//   - slices of BK = 16 (not 8) in FOUR stages of 32 KiB (128 KiB of
//     dynamic shared memory, beyond the 48 KiB static limit; one group
//     per SM either way: its 512 x 128 registers fill the SM);
//   - each slice is two steps of 8 k, each one m16n8k8 per 16 x 8 piece
//     of the warp tile, where gemm_dmma issues two m16n8k4 per 8 k.
// The count, per warp and per 16 of k (one slice here, two there), with
// the DMMA pipe at its peak (32 float64 FMA per cycle per SM quarter,
// four warps per quarter: 2048 pipe cycles per 16 of k per quarter):
//                          gemm_dmma   gemm_dmma2
//   mma.sync                   32          16
//   fragment LDS.64            32          32   (bytes unchanged)
//   cp.async (8 bytes)          8           8
//   barriers + waits            2           1
//   mma register operands     352         224   (doubles read + written
//                                                  per thread: C, D, A, B)
// and the copies run 3 slices = 48 k ahead (gemm_dmma: 2 x 8 = 16 k),
// about 6000 pipe cycles, to cover HBM latency under load. The bet: the
// gap to cuBLAS (39 vs 57.6 TFLOP/s at 8192^3) is the per-instruction
// cost of the small m16n8k4 and the refill bubble after each barrier,
// both halved here; shared-memory traffic per FMA is the same (0.5 bytes
// read, 0.125 written: 62% of the 128 bytes per cycle at the pipe's
// peak). Measured (H100, 2026-11-27, bench_linalg, one build,
// KILN_GEMM_DMMA=1 selecting gemm_dmma again): GEMM 8192^3 28.14 -> 27.03
// ms (39.1 -> 40.7 TFLOP/s; cuBLAS 19.2-19.4 ms), Cholesky 8192^2 float64
// 9.49 -> 8.75 ms: less than the bet, so the refill bubble and the
// instruction count were only part of the gap.
//
// Why not m16n8k16 (a quarter of gemm_dmma's mma count): its fragments
// for a 32 x 32 warp tile and 16 k are 32 doubles (64 registers) beside
// the 64 of the accumulators, so the kernel needs ~170 registers (ptxas
// 13, sm_90a), 40 bytes of spills under the 128 that 512 threads allow;
// loading B per 16 x 8 piece does not stop ptxas hoisting the loads. For
// the same reason the two 8-k steps of a slice are a loop that is not
// unrolled: unrolled, ptxas hoists the second step's loads (168
// registers); rolled, 124-126.
//
// Fragments of m16n8k8 .f64 (PTX ISA; g = lane / 4, t = lane % 4):
//   A (16 x 8, row): a[2 v + h] = A(g + 8 h, t + 4 v), v, h = 0, 1;
//   B (8 x 8, col):  b[v]       = B(t + 4 v, g);
//   C/D (16 x 8):    c[2 h + e] = C(g + 8 h, 2 t + e), e = 0, 1;
// i.e. exactly two m16n8k4 (a0 a1 | b0, then a2 a3 | b1) stacked along k,
// which is how the pre-sm_90 fallback below issues them (as m8n8k4).
//
// Shared memory: the 4 stages of A's slices, then the 4 of B's, each
// 128 rows x 16 k. An operand whose k is contiguous in memory (KC) sits
// [row][k] (rows of 128 bytes) with k's bits 2-3 XORed by row's bits
// 0-1; otherwise [k][row] (rows of 1 KiB) with row's bits 2-3 XORed by
// k's bits 0-1. A warp's fragment
// read (8 rows x 4 k, one double each) then hits every 8-byte bank pair
// exactly twice (two wavefronts, the minimum), and a warp's cp.async
// writes (2 rows x 16 k, or 32 rows x 1 k) fill whole 128-byte lines.
#define GEMM_DMMA2_BK 16
#define GEMM_DMMA2_STAGES 4
#define GEMM_DMMA2_SLICE (128 * GEMM_DMMA2_BK) // doubles per operand

// Where element (r, k) of a 128 x 16 slice lives (in doubles).
template <bool KC> inline int gemm_dmma2_at(int r, int k) {
  return KC ? r * 16 + (k ^ ((r & 3) << 2)) : k * 128 + (r ^ ((k & 3) << 2));
}

// One thread's four elements of each slice of an operand. Element i is
// slice element i * 512 + tid: with KC, row tid / 16 + 32 i at k tid %
// 16; else row tid % 128 at k tid / 128 + 4 i. Either way element i sits
// 512 i doubles after element 0 in the stage (the swizzle depends on
// bits that i does not change), and its source is `d` elements after
// the previous one's, so four pointers cost one. `src` is also the
// address of every zero fill (cp.async reads nothing there, but it is
// kept inside the matrix all the same: row and k clamped to 0 where they
// are outside, and such a k is outside for every slice). Registers are
// tight (see above): hence one pointer, no separate base.
template <bool KC> struct gemm_dmma2_loader {
  const device double* src; // element 0 of slice 0
  int64_t d, step;          // element to element, slice to slice
  int at, kt, rows_left;    // stage offset, k in the slice, rows to end
  inline void init(const device double* X, int64_t sr, int64_t sk, int r0,
                   int rows, int K, uint tid) {
    const int r = KC ? (int)tid / 16 : (int)tid % 128;
    kt = KC ? (int)tid % 16 : (int)tid / 128;
    at = gemm_dmma2_at<KC>(r, kt);
    rows_left = rows - r0 - r;
    src = X + (int64_t)(rows_left > 0 ? r0 + r : 0) * sr +
          (int64_t)(kt < K ? kt : 0) * sk;
    d = KC ? 32 * sr : 4 * sk;
    step = (int64_t)GEMM_DMMA2_BK * sk;
  }
  inline void issue(int slice, int K, uint stage) {
    const int k0 = slice * GEMM_DMMA2_BK + kt;
    const device double* p = src + (int64_t)slice * step;
    GEMM_UNROLL
    for (int i = 0; i < 4; ++i) {
      bool in = (KC ? 32 * i < rows_left : rows_left > 0) &&
                k0 + (KC ? 0 : 4 * i) < K;
      gemm_cp_async8(stage + 8u * (uint)(at + 512 * i), in ? p + i * d : src,
                     in);
    }
  }
};

// c (one 16 x 8 piece, 4 doubles) += a (16 x 8) b (8 x 8), fragments as
// above: one instruction on sm_90, two pairs of m8n8k4 before.
inline void gemm_dmma2_mma(thread double* c, const thread double* a,
                           const thread double* b) {
#if __CUDA_ARCH__ >= 900
  asm("mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
      : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]));
#else
  GEMM_UNROLL
  for (int v = 0; v < 2; ++v)
    GEMM_UNROLL
    for (int h = 0; h < 2; ++h)
      gemm_dmma(c + 2 * h, a[2 * v + h], b[v]);
#endif
}

// The tile: C[row0.., col0..] = alpha op(A) op(B) + beta C over 128 x 128;
// KA / KB: whether op(A)'s / op(B)'s k is the contiguous dimension.
// `smem`: GEMM_DMMA2_STAGES x (A slice, B slice), dynamic. alpha and beta
// by reference: read in the epilogue, not held in 4 registers across
// the loop (KA = KB = 1, the Cholesky's case, took 131 registers).
template <bool BETA0, bool KA, bool KB>
inline void gemm_dmma2_tile(const device double* A, const device double* B,
                            const device double* Cin, device double* C,
                            gemm_geom g, const device double& alpha,
                            const device double& beta, int row0, int col0,
                            uint tid, threadgroup double* smem) {
  constexpr int S = GEMM_DMMA2_STAGES, SL = GEMM_DMMA2_SLICE;
  const int lane = (int)tid % 32, warp = (int)tid / 32;
  const int wm = (warp / 4) * 32, wn = (warp % 4) * 32;
  const int r = lane / 4, q = lane % 4;
  const uint sA = gemm_smem_addr(smem), sB = sA + 8u * S * SL;
  gemm_dmma2_loader<KA> la;
  gemm_dmma2_loader<KB> lb;
  la.init(A, g.sam, g.sak, row0, g.M, g.K, tid);
  lb.init(B, g.sbn, g.sbk, col0, g.N, g.K, tid);
  const int slices = (g.K + GEMM_DMMA2_BK - 1) / GEMM_DMMA2_BK;
  double acc[2][4][4];
  GEMM_UNROLL
  for (int i = 0; i < 2; ++i)
    GEMM_UNROLL
    for (int j = 0; j < 4; ++j)
      GEMM_UNROLL
      for (int e = 0; e < 4; ++e)
        acc[i][j][e] = 0.0;
  GEMM_UNROLL
  for (int s = 0; s < S - 1; ++s) {
    if (s < slices) {
      la.issue(s, g.K, sA + 8u * s * SL);
      lb.issue(s, g.K, sB + 8u * s * SL);
    }
    gemm_cp_commit(); // empty groups keep the count of groups uniform
  }
  for (int s = 0; s < slices; ++s) {
    gemm_cp_wait<S - 2>(); // this thread's copies of slice s landed
    __syncthreads();       // everyone's; and slice s - 1 is consumed
    const int next = s + S - 1;
    if (next < slices) {
      la.issue(next, g.K, sA + 8u * (next % S) * SL);
      lb.issue(next, g.K, sB + 8u * (next % S) * SL);
    }
    gemm_cp_commit();
    const threadgroup double* as = smem + (s % S) * SL;
    const threadgroup double* bs = smem + (S + s % S) * SL;
#pragma unroll 1
    for (int kk = 0; kk < GEMM_DMMA2_BK; kk += 8) {
      double a[2][4], b[2];
      GEMM_UNROLL
      for (int i = 0; i < 2; ++i)
        GEMM_UNROLL
        for (int v = 0; v < 2; ++v)
          GEMM_UNROLL
          for (int h = 0; h < 2; ++h)
            a[i][2 * v + h] =
                as[gemm_dmma2_at<KA>(wm + 16 * i + 8 * h + r, kk + 4 * v + q)];
      GEMM_UNROLL
      for (int j = 0; j < 4; ++j) {
        GEMM_UNROLL
        for (int v = 0; v < 2; ++v)
          b[v] = bs[gemm_dmma2_at<KB>(wn + 8 * j + r, kk + 4 * v + q)];
        GEMM_UNROLL
        for (int i = 0; i < 2; ++i)
          gemm_dmma2_mma(acc[i][j], a[i], b);
      }
    }
  }
  gemm_cp_wait<0>();
  GEMM_UNROLL
  for (int i = 0; i < 2; ++i)
    GEMM_UNROLL
    for (int h = 0; h < 2; ++h) {
      int m = row0 + wm + 16 * i + 8 * h + r;
      GEMM_UNROLL
      for (int j = 0; j < 4; ++j)
        GEMM_UNROLL
        for (int e = 0; e < 2; ++e) {
          int n = col0 + wn + 8 * j + 2 * q + e;
          if (m < g.M && n < g.N)
            gemm_store<double, double, BETA0>(
                C, Cin, (int64_t)m * g.scm + (int64_t)n * g.scn,
                acc[i][j][2 * h + e], alpha, beta);
        }
    }
}

// ---- float16 / bfloat16 on Hopper's warpgroup MMA (CUDA sm_90a) -------
//
// gemm_wg: 128 x 256 tiles of C, 256 threads = two warpgroups (4
// consecutive warps each, the unit wgmma runs on), each computing 64 x
// 256 of C with wgmma.mma_async m64n256k16: one instruction multiplies a
// 64 x 16 slab of A by a 16 x 256 slab of B, both read by the tensor
// cores straight from shared memory, into 128 float32 accumulators per
// thread (registers). Against gemm_tc2 (mma.sync), no fragment goes
// through registers and one instruction does 32x the work, which is what
// lets an H100 get near its bf16 peak.
//
// Data flow. BK = 64 slices (128 bytes of k per row) of both operands go
// global -> shared memory by cp.async in 16-byte chunks, four stages in
// flight (4 x 48 KiB = 192 KiB: dynamic shared memory, see gemm.c's
// KILN__LIB_SHARED_KIB), prefetching two slices ahead while one slice's
// wgmma batch runs asynchronously behind the current one. Per slice: wait
// for this thread's copies of slice s (cp.async.wait_group), make them
// visible to the tensor cores (fence.proxy.async: cp.async writes through
// the ordinary "generic" path, wgmma reads through the "async proxy"), a
// barrier (everyone's copies landed; every warpgroup finished the wgmma
// of slice s - 2, whose stage the next copies overwrite), issue slice s +
// 2, issue slice s's four wgmma (k = 0, 16, 32, 48) as one group
// (wgmma.commit_group) and wait until at most that group is pending
// (wgmma.wait_group 1): slice s - 1's products are then done. H100,
// 8192^3 bf16: 1.77 ms, 621 TFLOP/s, 0.79x cuBLAS (1.84 ms before the
// epilogue stored pairs and the copies asked for whole L2 lines). Tried
// without gain: three slices of copies ahead, which needs a second
// barrier per slice (after the wait, before the copies into slice s -
// 1's stage) and 188 registers: 1.95 ms.
//
// Shared-memory layout: the 128-byte swizzle wgmma understands. An
// operand stored k-contiguous (VA/VB 1, "K-major") keeps each row's 64 k
// as one 128-byte line, 8 lines per 1024-byte atom, consecutive atoms
// along the rows; one stored row-contiguous (VA/VB 2, "MN-major") keeps
// 64 rows of one k as a 128-byte line, 8 k per atom, a column of BK / 8
// atoms per 64 rows. Within an atom, 16-byte chunk c of line l sits at
// chunk c ^ l: the hardware undoes that XOR from the address bits, and
// it makes both the cp.async writes of a warp and the tensor cores' reads
// hit every bank group. A matrix descriptor (64 bits) tells wgmma the
// start address, the swizzle and two strides: SBO, from one group of 8
// lines to the next (1024 bytes here); LBO, for MN-major only, from one
// 64-row block to the next (BK * 128 bytes). K steps of 16 move the start
// by 32 bytes inside a K-major line, or by two atoms (2048 bytes) for
// MN-major; the stage bases are 1024-byte aligned, as the swizzle needs.
//
// Edges: as gemm_tc2, the driver picks this kernel only where both
// operands allow 16-byte vectors, so each chunk is wholly inside or
// outside the matrix; cp.async writes zeros for chunks outside.
// Elsewhere the kernel runs gemm_tc2 (CUDA sm_80+) or the SIMT tile
// (the CPU) on the two 128 x 128 halves of its tile.

#define GEMM_WG_BK 64
#define GEMM_WG_STAGES 4
#define GEMM_WG_A_BYTES (128 * GEMM_WG_BK * 2)
#define GEMM_WG_STAGE_BYTES (384 * GEMM_WG_BK * 2)

#if GEMM_HAS_WGMMA
// The 128 accumulator operands of one m64n256k16 wgmma, in order.
#define GEMM_WG_D(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), \
  "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
  "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), \
  "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
  "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), \
  "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), \
  "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
  "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), \
  "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), \
  "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), \
  "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), \
  "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), \
  "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), \
  "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), \
  "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), \
  "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
#define GEMM_WG_REGS \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, " \
  "%14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, " \
  "%26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, " \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, " \
  "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, " \
  "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, " \
  "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, " \
  "%86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, " \
  "%98, %99, %100, %101, %102, %103, %104, %105, %106, %107, " \
  "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, " \
  "%118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "

// The matrix descriptor of a 128-byte-swizzled operand at shared address
// `addr`: bits 0-13 address / 16, 16-29 LBO / 16, 32-45 SBO / 16, 62-63
// the swizzle mode (1: 128 bytes).
inline uint64_t gemm_wg_desc(uint addr, uint lbo, uint sbo) {
  return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
         ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

// d += A * B for one m64n256k16 (float32 accumulators). TA / TB: the
// operand is MN-major (imm-trans 1). The scale-d predicate is true: the
// accumulators start at zero and always accumulate.
template <int MMA, bool TA, bool TB>
inline void gemm_wg_mma(float* d, uint64_t da, uint64_t db) {
  if (MMA == 0)
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %130, 0; "
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
                 GEMM_WG_REGS "%128, %129, p, 1, 1, %131, %132; }"
                 : GEMM_WG_D(d)
                 : "l"(da), "l"(db), "r"(1), "n"(TA ? 1 : 0),
                   "n"(TB ? 1 : 0));
  else
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %130, 0; "
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
                 GEMM_WG_REGS "%128, %129, p, 1, 1, %131, %132; }"
                 : GEMM_WG_D(d)
                 : "l"(da), "l"(db), "r"(1), "n"(TA ? 1 : 0),
                   "n"(TB ? 1 : 0));
}

// Ties the accumulators to this point of the program, so the compiler
// neither reads them before a wgmma.wait_group nor moves them across a
// wgmma (they are written asynchronously, which it cannot see).
inline void gemm_wg_pin(float* d) {
  GEMM_UNROLL
  for (int i = 0; i < 128; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
}

// wgmma.fence orders this warpgroup's earlier register and shared-memory
// accesses before the wgmma that follow; commit_group closes the wgmma
// issued so far into one group; wait_group N waits until at most N groups
// of this warpgroup are pending.
inline void gemm_wg_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
inline void gemm_wg_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N> inline void gemm_wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
inline void gemm_wg_proxy_fence() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// gemm_cp_async16 with a hint to fetch the whole 128-byte line into L2
// (the neighbouring chunks are other threads' next copies).
inline void gemm_wg_cp16(uint dst, const void* src, bool in) {
  asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; "
               "cp.async.cg.shared.global.L2::128B [%0], [g], 16, %2; }"
               :
               : "r"(dst), "l"(src), "r"(in ? 16 : 0)
               : "memory");
}

// One thread's chunks of each BK-slice of an operand with R rows (m or n)
// per tile: R / 32 chunks, a fixed stride apart both in global memory and
// in the stage. KC: K-major (k contiguous), chunk c = tid % 8 of rows
// tid / 8 + 32 i; else MN-major, chunk tid % (R / 8) of the rows, k =
// tid / (R / 8) + (2048 / R) i. Consecutive threads copy consecutive 16
// bytes of global memory either way.
template <bool KC, int R> struct gemm_wg_loader {
  static constexpr int NI = R / 32;
  static constexpr int KSTR = 2048 / R; // MN-major: k between chunks
  const device ushort* base; // read by nothing: the address of a zero fill
  const device ushort* src;  // chunk 0 of slice 0
  int64_t istep, kstep;      // elements between chunks, between slices
  uint dst, dstep;           // bytes into the stage, between chunks
  int rlim, kfirst;          // rows left below this thread's first row
  bool rok;                  // MN-major: the chunk's rows are inside
  inline void init(const device ushort* X, int64_t sr, int64_t sk, int r0,
                   int rows, uint tid) {
    base = X;
    kstep = (int64_t)GEMM_WG_BK * sk;
    if (KC) {
      int r = (int)tid / 8, c = (int)tid % 8;
      kfirst = c * 8;
      rlim = rows - (r0 + r);
      rok = true;
      src = X + (int64_t)(rlim > 0 ? r0 + r : 0) * sr + kfirst;
      istep = 32 * sr;
      dst = (uint)(r * 128 + ((c ^ (r & 7)) << 4));
      dstep = 32 * 128;
    } else {
      int nc = (int)tid % (R / 8), k = (int)tid / (R / 8);
      int nb = nc / 8, c = nc % 8;
      kfirst = k;
      rlim = 0;
      rok = r0 + nc * 8 < rows;
      src = X + (int64_t)k * sk + (rok ? r0 + nc * 8 : 0);
      istep = KSTR * sk;
      dst = (uint)(nb * GEMM_WG_BK * 128 + k * 128 + ((c ^ (k & 7)) << 4));
      dstep = KSTR * 128;
    }
  }
  inline void issue(int slice, int K, uint stage) {
    const int k0 = slice * GEMM_WG_BK + kfirst;
    GEMM_UNROLL
    for (int i = 0; i < NI; ++i) {
      bool in = KC ? 32 * i < rlim && k0 < K : rok && k0 + KSTR * i < K;
      const device ushort* p =
          in ? src + (int64_t)slice * kstep + (int64_t)i * istep : base;
      gemm_wg_cp16(stage + dst + (uint)i * dstep, p, in);
    }
  }
};

// Issues slice s's four k-steps for this warpgroup (rows 64 wg.. of the
// tile) from the stage at shared address `st`.
template <int MMA, bool KA, bool KB>
inline void gemm_wg_slice(float* acc, uint st, int wg) {
  const uint a = st + (uint)wg * 64 * 128, b = st + GEMM_WG_A_BYTES;
  constexpr uint LBO = GEMM_WG_BK * 128, SBO = 1024;
  constexpr uint ASTEP = KA ? 32 : 2048, BSTEP = KB ? 32 : 2048;
  gemm_wg_fence();
  GEMM_UNROLL
  for (int kk = 0; kk < GEMM_WG_BK / 16; ++kk)
    gemm_wg_mma<MMA, !KA, !KB>(
        acc, gemm_wg_desc(a + kk * ASTEP, KA ? 16 : LBO, SBO),
        gemm_wg_desc(b + kk * BSTEP, KB ? 16 : LBO, SBO));
  gemm_wg_commit();
}

// gemm_store of two neighbouring columns at `off` and `off + scn`: one
// 32-bit store of both rounded values where scn is 1 and the pair is
// 4-byte aligned, else two stores.
template <typename T, bool BETA0>
inline void gemm_wg_store2(device T* C, const device T* Cin, int64_t off,
                           int64_t scn, float a0, float a1, float alpha,
                           float beta) {
  if (scn != 1 || ((ulong)(C + off) & 3u) != 0) {
    gemm_store<T, float, BETA0>(C, Cin, off, a0, alpha, beta);
    gemm_store<T, float, BETA0>(C, Cin, off + scn, a1, alpha, beta);
    return;
  }
  float r0 = alpha * a0, r1 = alpha * a1;
  if (!BETA0) {
    r0 = fma(beta, (float)Cin[off], r0);
    r1 = fma(beta, (float)Cin[off + 1], r1);
  }
  *(device uint*)(C + off) = (uint)T(r0).bits | ((uint)T(r1).bits << 16);
}

template <typename T, int MMA, bool BETA0, int VA, int VB>
inline void gemm_wg_tile(const device T* A, const device T* B,
                         const device T* Cin, device T* C, gemm_geom g,
                         float alpha, float beta, int row0, int col0,
                         uint tid, uint smem) {
  constexpr int S = GEMM_WG_STAGES;
  constexpr uint SB = GEMM_WG_STAGE_BYTES;
  constexpr bool KA = VA == 1, KB = VB == 1;
  const int wg = (int)tid / 128, warp = ((int)tid / 32) % 4;
  const int lane = (int)tid % 32, gr = lane / 4, tq = lane % 4;
  gemm_wg_loader<KA, 128> la;
  gemm_wg_loader<KB, 256> lb;
  la.init((const device ushort*)A, g.sam, g.sak, row0, g.M, tid);
  lb.init((const device ushort*)B, g.sbn, g.sbk, col0, g.N, tid);
  const int slices = (g.K + GEMM_WG_BK - 1) / GEMM_WG_BK;
  float acc[128];
  GEMM_UNROLL
  for (int i = 0; i < 128; ++i)
    acc[i] = 0.0f;
  GEMM_UNROLL
  for (int s = 0; s < S - 2; ++s) {
    if (s < slices) {
      la.issue(s, g.K, smem + s * SB);
      lb.issue(s, g.K, smem + s * SB + GEMM_WG_A_BYTES);
    }
    gemm_cp_commit(); // empty groups keep the count of groups uniform
  }
  for (int s = 0; s < slices; ++s) {
    gemm_cp_wait<S - 3>();
    gemm_wg_proxy_fence();
    __syncthreads();
    int next = s + S - 2;
    if (next < slices) {
      uint st = smem + (uint)(next % S) * SB;
      la.issue(next, g.K, st);
      lb.issue(next, g.K, st + GEMM_WG_A_BYTES);
    }
    gemm_cp_commit();
    gemm_wg_pin(acc);
    gemm_wg_slice<MMA, KA, KB>(acc, smem + (uint)(s % S) * SB, wg);
    gemm_wg_wait<1>();
    gemm_wg_pin(acc);
  }
  gemm_wg_wait<0>();
  gemm_wg_pin(acc);
  gemm_cp_wait<0>();
  // Accumulator j of a thread: column 8 (j / 4) + 2 tq + j % 2, row gr +
  // 8 ((j / 2) % 2) of its warp's 16 rows (the mma.sync C layout, repeated
  // along n). Each pair (j, j + 1) is two neighbouring columns: one 4-byte
  // store where C's rows are contiguous and the pair is aligned.
  const int m0 = row0 + wg * 64 + warp * 16 + gr;
  GEMM_UNROLL
  for (int j = 0; j < 128; j += 2) {
    int m = m0 + ((j / 2) % 2) * 8, n = col0 + (j / 4) * 8 + 2 * tq;
    if (m >= g.M || n >= g.N)
      continue;
    int64_t off = (int64_t)m * g.scm + (int64_t)n * g.scn;
    if (n + 1 < g.N)
      gemm_wg_store2<T, BETA0>(C, Cin, off, g.scn, acc[j], acc[j + 1],
                               alpha, beta);
    else
      gemm_store<T, float, BETA0>(C, Cin, off, acc[j], alpha, beta);
  }
}
#endif // GEMM_HAS_WGMMA

#endif

//@kernel gemm_simt
// Template: T (element), ACC (accumulation: float or double), TA, TB,
// BETA0, BM, BN, BK, TM, TN, LA, LB (see gemm_simt_tile).
threadgroup ACC As[BK * (BM + 4)];
threadgroup ACC Bs[BK * (BN + 4)];
gemm_geom g = gemm_read_geom<TA, TB>(A_shape, A_strides, A_ndim, B_shape,
                                     B_strides, B_ndim, Cin_strides,
                                     Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + BM - 1) / BM, tiles_n = (g.N + BN - 1) / BN;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
gemm_simt_tile<T, ACC, TA, TB, BETA0, BM, BN, BK, TM, TN, LA, LB>(
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim),
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim), Cin + oc, C + oc,
    g, alpha, beta, t.x * BM, t.y * BN, thread_index_in_threadgroup, As, Bs);

//@kernel gemm_f32
// Template: BETA0, MA, MB, EXACT (see gemm_f32_tile); float32 operands,
// op(A) and op(B) passed as views (no transposes). 128 x 128 tiles, 256
// threads. EXACT: m and n multiples of 128 and k a positive multiple of 8.
threadgroup float As[2 * GEMM_F32_BK * GEMM_F32_P];
threadgroup float Bs[2 * GEMM_F32_BK * GEMM_F32_P];
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
gemm_f32_tile<BETA0, MA, MB, EXACT>(
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim),
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim), Cin + oc, C + oc,
    g, alpha, beta, t.x * 128, t.y * 128, thread_index_in_threadgroup, As,
    Bs);

//@kernel gemm_f32_tri
// gemm_f32 on C's lower trapezoid only (gemm_tri_tile_of; UPPER: its
// upper mirror), for the Cholesky's updates: template BETA0, MA, MB,
// EXACT as gemm_f32, and UPPER. grid.x = 256 threads x the trapezoid's
// tiles; M >= N (UPPER: N >= M). Tiles above the diagonal are not
// written.
threadgroup float As[2 * GEMM_F32_BK * GEMM_F32_P];
threadgroup float Bs[2 * GEMM_F32_BK * GEMM_F32_P];
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tri_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n,
                          UPPER);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
gemm_f32_tile<BETA0, MA, MB, EXACT>(
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim),
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim), Cin + oc, C + oc,
    g, alpha, beta, t.x * 128, t.y * 128, thread_index_in_threadgroup, As,
    Bs);

//@kernel gemm_dmma
// Template: BETA0, KA, KB (see gemm_dmma_tile); float64 operands, op(A)
// and op(B) passed as views. 128 x 128 tiles, 512 threads. Without
// tensor cores (the CPU, pre-sm_80) the same tiles run on the SIMT code.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device double* a0 =
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device double* b0 =
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
threadgroup double smem[2 * GEMM_DMMA_STAGES * GEMM_DMMA_SLICE];
gemm_dmma_tile<BETA0, KA, KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta,
                              t.x * 128, t.y * 128,
                              thread_index_in_threadgroup, smem);
#else
threadgroup double As[8 * 132];
threadgroup double Bs[8 * 132];
gemm_simt_tile<double, double, false, false, BETA0, 128, 128, 8, 8, 4, !KA,
               !KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128,
                    t.y * 128, thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_dmma_tri
// gemm_dmma on C's lower trapezoid only (gemm_tri_tile_of; UPPER: its
// upper mirror), for the Cholesky's updates: template BETA0, KA, KB as
// gemm_dmma, and UPPER. grid.x = 512 threads x the trapezoid's tiles;
// M >= N (UPPER: N >= M). Tiles above the diagonal are not written.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tri_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n,
                          UPPER);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device double* a0 =
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device double* b0 =
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
threadgroup double smem[2 * GEMM_DMMA_STAGES * GEMM_DMMA_SLICE];
gemm_dmma_tile<BETA0, KA, KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta,
                              t.x * 128, t.y * 128,
                              thread_index_in_threadgroup, smem);
#else
threadgroup double As[8 * 132];
threadgroup double Bs[8 * 132];
gemm_simt_tile<double, double, false, false, BETA0, 128, 128, 8, 8, 4, !KA,
               !KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128,
                    t.y * 128, thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_dmma2
// Template: BETA0, KA, KB (see gemm_dmma_tile); float64 operands, op(A)
// and op(B) passed as views. 128 x 128 tiles, 512 threads, 128 KiB of
// dynamic shared memory on CUDA (GEMM_DMMA2_STAGES x 2 slices; gemm.c's
// GEMM_DMMA2_SHARED_KIB). Without tensor cores (the CPU, pre-sm_80) the
// same tiles run on the SIMT code.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device double* a0 =
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device double* b0 =
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
extern __shared__ __align__(16) double gemm_dmma2_dyn[];
gemm_dmma2_tile<BETA0, KA, KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta,
                               t.x * 128, t.y * 128,
                               thread_index_in_threadgroup, gemm_dmma2_dyn);
#else
threadgroup double As[8 * 132];
threadgroup double Bs[8 * 132];
gemm_simt_tile<double, double, false, false, BETA0, 128, 128, 8, 8, 4, !KA,
               !KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128,
                    t.y * 128, thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_dmma2_tri
// gemm_dmma2 on C's lower trapezoid only (gemm_tri_tile_of; UPPER: its
// upper mirror), for the Cholesky's updates: template BETA0, KA, KB as
// gemm_dmma2, and UPPER. grid.x = 512 threads x the trapezoid's
// tiles; M >= N (UPPER: N >= M). Tiles above the diagonal are not
// written.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tri_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n,
                          UPPER);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device double* a0 =
    A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device double* b0 =
    B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
extern __shared__ __align__(16) double gemm_dmma2_dyn[];
gemm_dmma2_tile<BETA0, KA, KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta,
                               t.x * 128, t.y * 128,
                               thread_index_in_threadgroup, gemm_dmma2_dyn);
#else
threadgroup double As[8 * 132];
threadgroup double Bs[8 * 132];
gemm_simt_tile<double, double, false, false, BETA0, 128, 128, 8, 8, 4, !KA,
               !KB>(a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128,
                    t.y * 128, thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_tc2
// Template: T (float16 or bfloat16), MMA (0 or 1, as T), BETA0, VA, VB (1
// or 2; see gemm_tc2_tile); op(A) and op(B) passed as views. 128 x 128
// tiles, 256 threads. Without tensor cores, the SIMT code in float32.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device T* a0 = A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device T* b0 = B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
threadgroup uint smem[2 * GEMM_TC2_STAGES * GEMM_TC2_SLICE / 2];
gemm_tc2_tile<T, MMA, BETA0, VA, VB>(a0, b0, Cin + oc, C + oc, g, alpha,
                                     beta, t.x * 128, t.y * 128,
                                     thread_index_in_threadgroup, smem);
#else
threadgroup float As[16 * 132];
threadgroup float Bs[16 * 132];
gemm_simt_tile<T, float, false, false, BETA0, 128, 128, 16, 8, 8, VA == 2,
               VB == 2>(a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128,
                        t.y * 128, thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_wg
// Template: T (float16 or bfloat16), MMA (0 or 1, as T), BETA0, VA, VB (1
// or 2; see gemm_wg_tile); op(A) and op(B) passed as views. 128 x 256
// tiles, 256 threads, GEMM_WG_STAGES * GEMM_WG_STAGE_BYTES (+ 1 KiB for
// alignment) of dynamic shared memory on CUDA. Without wgmma, the two
// 128 x 128 halves of the tile one after the other on gemm_tc2's code
// (CUDA sm_80+) or the SIMT code in float32.
gemm_geom g = gemm_read_geom<false, false>(A_shape, A_strides, A_ndim,
                                           B_shape, B_strides, B_ndim,
                                           Cin_strides, Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 255) / 256;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device T* a0 = A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device T* b0 = B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
const uint tid = thread_index_in_threadgroup;
#if GEMM_HAS_MMA
extern __shared__ __align__(1024) uint gemm_wg_dyn[];
#endif
#if GEMM_HAS_WGMMA
// The dynamic block's start is not promised 1024-byte alignment: round.
uint sbase = (gemm_smem_addr(gemm_wg_dyn) + 1023u) & ~1023u;
gemm_wg_tile<T, MMA, BETA0, VA, VB>(a0, b0, Cin + oc, C + oc, g, alpha,
                                    beta, t.x * 128, t.y * 256, tid, sbase);
#elif GEMM_HAS_MMA
for (int h = 0; h < 2; ++h) {
  __syncthreads(); // the first half's last reads of the stages are done
  gemm_tc2_tile<T, MMA, BETA0, VA, VB>(a0, b0, Cin + oc, C + oc, g, alpha,
                                       beta, t.x * 128, t.y * 256 + h * 128,
                                       tid, gemm_wg_dyn);
}
#else
threadgroup float As[16 * 132];
threadgroup float Bs[16 * 132];
for (int h = 0; h < 2; ++h) {
  threadgroup_barrier(mem_flags::mem_threadgroup);
  gemm_simt_tile<T, float, false, false, BETA0, 128, 128, 16, 8, 8,
                 VA == 2, VB == 2>(a0, b0, Cin + oc, C + oc, g, alpha, beta,
                                   t.x * 128, t.y * 256 + h * 128, tid, As,
                                   Bs);
}
#endif

//@kernel gemm_tc
// Template: T, MMA (0 float16, 1 bfloat16, 2 TF32), TA, TB, BETA0, VA, VB
// (ints), KA, KB (see gemm_tc_tile). 128 x 128 tiles, 256 threads. Without
// tensor cores (the CPU, pre-sm_80) the same tiles run on the SIMT code in
// float32.
gemm_geom g = gemm_read_geom<TA, TB>(A_shape, A_strides, A_ndim, B_shape,
                                     B_strides, B_ndim, Cin_strides,
                                     Cin_ndim);
uint b = (uint)batch0 + threadgroup_position_in_grid.y;
int tiles_m = (g.M + 127) / 128, tiles_n = (g.N + 127) / 128;
int2 t = gemm_tile_of(threadgroup_position_in_grid.x, tiles_m, tiles_n);
int64_t oc = gemm_batch_offset(b, Cin_shape, Cin_strides, Cin_ndim);
const device T* a0 = A + gemm_batch_offset(b, A_shape, A_strides, A_ndim);
const device T* b0 = B + gemm_batch_offset(b, B_shape, B_strides, B_ndim);
#if GEMM_HAS_MMA
// Two slices of 128 rows; 16-bit: 2 x 128 x 40 x 2 bytes, TF32: 2 x 128 x
// 36 x 4 bytes (36 KiB), under the 48 KiB of static shared memory.
threadgroup uint smem[2 * 128 * (MMA == 2 ? 36 : 20)];
gemm_tc_tile<T, MMA, TA, TB, BETA0, VA, VB, KA, KB>(
    a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128, t.y * 128,
    thread_index_in_threadgroup, smem);
#else
threadgroup float As[16 * 132];
threadgroup float Bs[16 * 132];
gemm_simt_tile<T, float, TA, TB, BETA0, 128, 128, 16, 8, 8, !KA, !KB>(
    a0, b0, Cin + oc, C + oc, g, alpha, beta, t.x * 128, t.y * 128,
    thread_index_in_threadgroup, As, Bs);
#endif

//@kernel gemm_scale
// C = beta * C (k == 0 or alpha == 0); with BETA0, C = 0 without reading
// it. Template: T, ACC, BETA0. One thread per element of C.
uint i = thread_position_in_grid.x;
if (i >= (uint)count)
  return;
int64_t loc = 0;
uint r = i;
for (int d = Cin_ndim - 1; d >= 0; --d) {
  loc += (int64_t)(r % (uint)Cin_shape[d]) * Cin_strides[d];
  r /= (uint)Cin_shape[d];
}
C[loc] = BETA0 ? T(0) : T(beta * (ACC)Cin[loc]);
