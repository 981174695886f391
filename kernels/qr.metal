// kiln's QR kernels (driver: src/linalg/qr.c): Householder QR of matrices
// or row blocks that fit one threadgroup, held in registers, the multiply
// that TSQR's way back applies to each level's Q, and CholeskyQR's
// fallback: TSQR's whole tree in one launch and its way back in another
// (qr_tree_g, qr_chain_g; see "TSQR's tree in one launch" below).
//
// qr_small / qr_small_r factor one matrix (or one row block of one, with
// BLOCKED) per threadgroup, LAPACK's geqr2 in exact arithmetic: for
// j = 0 .. K-1 a reflector H_j = I - tau_j v_j v_j^T (dlarfg, v_j(j) = 1)
// zeroes column j below the diagonal and is applied to the columns right
// of it. qr_small then forms Q = H_0 ... H_{K-1} [I; 0] by backward
// accumulation (dorg2r), in the same launch. Finally the rows i of R with
// a negative diagonal and the matching columns of Q change sign, so R's
// diagonal is non-negative (negation is exact: the factors stay as
// accurate as LAPACK's).
//
// Layout. The matrix (MMAX x NC capacity, zero-padded) lives in
// registers: thread t owns column c = t / SEGS and, with s = t % SEGS,
// the rows s, s + SEGS, s + 2 SEGS, ... (RPT = MMAX / SEGS of them, loops
// fully unrolled over compile-time counts so the arrays stay in
// registers). A column's SEGS owners are neighbouring lanes of one SIMD
// group, so every column reduction (v^T a) is a few lane shuffles, and a
// warp's global loads and stores touch SEGS rows x 32 / SEGS neighbouring
// columns. Threadgroup memory holds only the current Householder vector
// (double-buffered, so one barrier per step suffices), the taus and the
// signs. While Q is formed, the vectors wait in Q's own storage (its
// columns below the diagonal, which nobody else reads or writes) and the
// next one is fetched while the current one is applied.
//
// Outputs are contiguous: Q is batch x m x qc, R batch x (P kr) x n. With
// BLOCKED the rows of each matrix are cut into P blocks of MMAX rows (the
// last may be short; missing rows count as zeros), each factored on its
// own into its rows of Q (qc = n) and an n x n R stacked at rows p n: the
// first level of TSQR. Without it the whole m x n matrix (m, n <= MMAX) is
// factored: qc = kr = min(m, n) (reduced), or m (COMPLETE).
#include <metal_stdlib>
using namespace metal;

#if KILN_BACKEND_CUDA
#define QR_UNROLL _Pragma("unroll")
#else
#define QR_UNROLL
#endif

// Rows per threadgroup of qr_apply (a thread per row).
#define QR_APPLY_ROWS 128

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order.
inline int64_t qr_batch_offset(uint b, const constant int* shape,
                               const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// Sum over the SEGS owners of a column (aligned groups of SEGS lanes).
// The butterfly gives every lane the bitwise same sum, so every owner
// takes the same decisions. Callers keep whole warps converged.
template <typename T, int SEGS>
inline T qr_seg_sum(T x) {
  QR_UNROLL
  for (int o = 1; o < SEGS; o <<= 1) {
#if KILN_BACKEND_CUDA
    x += __shfl_xor_sync(0xffffffffu, x, o);
#else
    x += simd_shuffle_xor(x, (ushort)o);
#endif
  }
  return x;
}

// Whether `p` holds in every lane of the warp. On CUDA a full-mask vote,
// like the full-mask shuffles of qr_seg_sum: simd_all votes among the lanes
// of __activemask(), which only promises the lanes that happen to be
// converged at that instant. Were some lanes of the warp not yet there,
// each part would decide on its own, and a part that went on to the
// second pass would wait in its full-mask shuffles for lanes that had
// returned: the per-column hang of qr_col_norm again, in another guise.
// Callers keep whole warps converged (the warp that owns a column takes
// the branch as a whole), so the full mask is always right.
#if KILN_BACKEND_CUDA
#define QR_WARP_ALL(p) (__all_sync(0xffffffffu, (p)) != 0)
#else
#define QR_WARP_ALL(p) simd_all(p)
#endif

template <typename T, int SEGS>
inline T qr_seg_max(T x) {
  QR_UNROLL
  for (int o = 1; o < SEGS; o <<= 1) {
#if KILN_BACKEND_CUDA
    x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
#else
    x = fmax(x, simd_shuffle_xor(x, (ushort)o));
#endif
  }
  return x;
}

// The 2-norm of the owners' rows below `j` of their column, without
// overflow or loss to underflow: the plain sum of squares, and only when
// that left the safe range, a second pass scaled by the largest magnitude.
// js = j - s: row s + SEGS i is below j when SEGS i > js (a compile-time
// constant against one value).
//
// A warp holds 32 / SEGS columns and runs the column sums with full-mask
// shuffles, which every lane must reach: so the choice of the second pass
// is made for the whole warp (QR_WARP_ALL, a full-mask vote on CUDA), and
// no lane returns between shuffles. (Deciding per column hung the GPU when
// one column of a warp underflowed and its neighbours did not: a rank-1
// float32 matrix.)
template <typename T, int SEGS, int RPT>
inline T qr_col_norm(thread const T* x, int js) {
  T ss = T(0);
  QR_UNROLL
  for (int i = 0; i < RPT; ++i)
    if (SEGS * i > js)
      ss = fma(x[i], x[i], ss);
  ss = qr_seg_sum<T, SEGS>(ss);
  const T tiny = numeric_limits<T>::min() / numeric_limits<T>::epsilon();
  const bool plain =
      ss < numeric_limits<T>::max() && (ss >= tiny || ss == T(0));
  if (QR_WARP_ALL(plain))
    return sqrt(ss);
  T mx = T(0);
  QR_UNROLL
  for (int i = 0; i < RPT; ++i)
    if (SEGS * i > js)
      mx = fmax(mx, fabs(x[i]));
  mx = qr_seg_max<T, SEGS>(mx);
  const bool degenerate = mx == T(0) || isinf(mx);
  T ss2 = T(0);
  QR_UNROLL
  for (int i = 0; i < RPT; ++i)
    if (SEGS * i > js && !degenerate) {
      T y = x[i] / mx;
      ss2 = fma(y, y, ss2);
    }
  ss2 = qr_seg_sum<T, SEGS>(ss2);
  if (plain)
    return sqrt(ss);
  return degenerate ? mx : mx * sqrt(ss2);
}

// x -= tau (v^T x) v over a column (the owners' rows), v the thread's
// view of the Householder vector (v[SEGS i] is its row of v). Every thread
// computes the sum, keeping warps converged; `apply` says whether it
// updates its column. v is read twice rather than kept in registers.
template <typename T, int SEGS, int RPT>
inline void qr_reflect(thread T* x, const threadgroup T* v, T tau,
                       bool apply) {
  T w = T(0);
  QR_UNROLL
  for (int i = 0; i < RPT; ++i)
    w = fma(v[SEGS * i], x[i], w);
  w = qr_seg_sum<T, SEGS>(w);
  if (apply) {
    T tw = tau * w;
    const volatile threadgroup T* vv = v;
    QR_UNROLL
    for (int i = 0; i < RPT; ++i)
      x[i] = fma(-tw, T(vv[SEGS * i]), x[i]);
  }
}

// One threadgroup's QR of one block (see the top of the file): the mb x n
// block at `a` (row stride rs, column stride cs), mb <= MMAX, into its kr
// rows of R at `R` (row stride n) and, with WANT_Q, its mb x kr Q at `Q`
// (row stride kr). vbuf: 2 * MMAX, taus: NC, sgn: MMAX + NC elements of
// threadgroup memory, dims: 2 ints. The block of qr_house below, and a
// node of TSQR's one-launch tree (qr_tree).
//
// Row tests are written as SEGS * i against (bound - s), with i a
// compile-time constant after unrolling: the compiler then keeps no
// per-row values alive across the loops, only x[] itself.
template <typename T, int MMAX, int NC, int SEGS, bool WANT_Q>
inline void qr_house_block(const device T* a, int64_t rs, int64_t cs,
                           int mb, int n, int kr, device T* Q, device T* R,
                           uint tid, threadgroup T* vbuf,
                           threadgroup T* taus, threadgroup T* sgn,
                           threadgroup int* dims) {
  constexpr int RPT = MMAX / SEGS;
  static_assert(RPT * SEGS == MMAX, "SEGS must divide MMAX");
  static_assert(NC * SEGS >= MMAX, "a thread per Householder vector row");
  static_assert(32 % SEGS == 0, "a column's owners share a warp");
  const int K = min(mb, n); // reflectors
  const int qc = kr;        // Q columns = R rows
  const int c = (int)tid / SEGS, s = (int)tid % SEGS;
  const int warp = (int)tid / 32;
  // The output strides again after the long loops, read back from
  // threadgroup memory: the compiler cannot then keep every thread's
  // RPT store addresses alive across the loops (which spilled).
  if (tid == 0) {
    dims[0] = n;
    dims[1] = qc;
  }

  T x[RPT];
  {
    const device T* ap = a + s * rs + c * cs;
    const int64_t step = SEGS * rs;
    QR_UNROLL
    for (int i = 0; i < RPT; ++i)
      x[i] = SEGS * i < mb - s && c < n ? ap[i * step] : T(0);
  }

  // ---- factorization: one reflector per step, one barrier per step
  for (int j = 0; j < K; ++j) {
    threadgroup T* v = vbuf + (j & 1) * MMAX;
    const int js = j - s;
    if (warp == j * SEGS / 32) { // the warp that owns column j
      T xnorm = qr_col_norm<T, SEGS, RPT>(x, js);
      T alpha = T(0);
      QR_UNROLL
      for (int i = 0; i < RPT; ++i)
        if (SEGS * i == js)
          alpha = x[i];
      alpha = qr_seg_sum<T, SEGS>(alpha); // one owner holds it
      if (c == j) {
        T beta = alpha, tau = T(0), div = T(1);
        if (xnorm != T(0)) { // else H_j = I (LAPACK's dlarfg)
          T big = max(fabs(alpha), xnorm), sml = min(fabs(alpha), xnorm);
          T q2 = sml / big;
          beta = -copysign(big * sqrt(fma(q2, q2, T(1))), alpha);
          tau = (beta - alpha) / beta;
          div = alpha - beta;
        }
        const T rdiv = T(1) / div;
        QR_UNROLL
        for (int i = 0; i < RPT; ++i) {
          T vi = SEGS * i > js ? x[i] * rdiv
                               : (SEGS * i == js ? T(1) : T(0));
          v[s + SEGS * i] = vi;
          x[i] = SEGS * i > js ? vi : (SEGS * i == js ? beta : x[i]);
        }
        if (s == 0) {
          taus[j] = tau;
          sgn[j] = beta < T(0) ? T(-1) : T(1);
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // the columns right of j take the reflection
    qr_reflect<T, SEGS, RPT>(x, v + s, taus[j], c > j);
  }

  // ---- R: the upper triangle, row i times sgn[i]
  threadgroup_barrier(mem_flags::mem_threadgroup);
  {
    const int rn = dims[0];
    device T* rp = R + s * rn + c;
    QR_UNROLL
    for (int i = 0; i < RPT; ++i) {
      if (SEGS * i < kr - s && c < n) {
        T val = SEGS * i <= c - s ? x[i] : T(0);
        rp[i * SEGS * rn] =
            SEGS * i < K - s ? val * sgn[s + SEGS * i] : val;
      }
    }
  }
  if (!WANT_Q)
    return;

  // ---- Q: park the vectors in Q's columns (below the diagonal)
  device T* q = Q;
  {
    device T* qp = q + s * qc + c;
    QR_UNROLL
    for (int i = 0; i < RPT; ++i)
      if (c < K && SEGS * i > c - s && SEGS * i < mb - s)
        qp[i * SEGS * qc] = x[i];
  }
  QR_UNROLL
  for (int i = 0; i < RPT; ++i)
    x[i] = SEGS * i == c - s && c < qc ? T(1) : T(0);
  threadgroup_barrier(mem_flags::mem_device);
  const int t = (int)tid;
  if (K > 0 && t < MMAX)
    vbuf[t] = t < K - 1 ? T(0)
              : t == K - 1 ? T(1)
              : t < mb    ? q[(int64_t)t * qc + K - 1]
                          : T(0);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Q = H_j Q for j = K-1 .. 0; H_j only changes rows >= j of columns >= j
  for (int j = K - 1; j >= 0; --j) {
    const int cur = (K - 1 - j) & 1;
    T next = T(0); // v_{j-1}, fetched while v_j is applied
    if (j > 0 && t >= j && t < mb)
      next = q[(int64_t)t * qc + j - 1];
    else if (j > 0 && t == j - 1)
      next = T(1);
    qr_reflect<T, SEGS, RPT>(x, vbuf + cur * MMAX + s, taus[j], c >= j);
    if (j > 0 && t < MMAX)
      vbuf[(cur ^ 1) * MMAX + t] = next;
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  {
    const int qs = dims[1];
    device T* qp = Q + s * qs + c;
    const T sg = c < K ? sgn[c] : T(1);
    QR_UNROLL
    for (int i = 0; i < RPT; ++i)
      if (SEGS * i < mb - s && c < qc)
        qp[i * SEGS * qs] = x[i] * sg;
  }
}

// One threadgroup's QR (see the top of the file): matrix (or, with
// BLOCKED, row block) `group` of A into Q and R, laid out as the top of
// the file says.
template <typename T, int MMAX, int NC, int SEGS, bool BLOCKED, bool COMPLETE,
          bool WANT_Q>
inline void qr_house(const device T* A, const constant int* A_shape,
                     const constant int64_t* A_strides, int A_ndim,
                     device T* Q, device T* R, uint group, uint tid,
                     threadgroup T* vbuf, threadgroup T* taus,
                     threadgroup T* sgn, threadgroup int* dims) {
  const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
  const int64_t rs = A_strides[A_ndim - 2], cs = A_strides[A_ndim - 1];
  const int P = BLOCKED ? (m + MMAX - 1) / MMAX : 1;
  const uint bi = group / (uint)P, pi = group % (uint)P;
  const int row0 = (int)pi * MMAX;
  const int mb = BLOCKED ? min(MMAX, m - row0) : m; // rows of this block
  const int K = min(mb, n);
  const int kr = BLOCKED ? n : (COMPLETE ? m : K); // R rows = Q columns
  const device T* a =
      A + qr_batch_offset(bi, A_shape, A_strides, A_ndim) + row0 * rs;
  qr_house_block<T, MMAX, NC, SEGS, WANT_Q>(
      a, rs, cs, mb, n, kr, Q + ((int64_t)bi * m + row0) * kr,
      R + ((int64_t)bi * P + pi) * kr * n, tid, vbuf, taus, sgn, dims);
}

// Matrices in a batch: the product of the leading dimensions.
inline uint qr_batch_count(const constant int* shape, int ndim) {
  uint b = 1;
  for (int d = 0; d < ndim - 2; ++d)
    b *= (uint)shape[d];
  return b;
}

// Columns of S per tile of qr_apply (all of them while NB x NB fits 32 KB).
template <typename T, int NB>
constexpr int qr_apply_tc() {
  return NB * NB * (int)sizeof(T) <= 32768 ? NB
                                           : 32768 / (NB * (int)sizeof(T));
}

// x (one row of n <= NB values, in place; `live` false for a thread past
// the last row, which only takes part in the barriers) = x S, S n x n at
// `sp` (row stride n). The thread holds its row in registers, so it may
// overwrite it in place, and S passes through threadgroup memory (St) in
// column tiles that every lane reads at one address (broadcast). Every
// thread of the group (NT of them) must call it.
template <typename T, int NB, int NT>
inline void qr_row_times(device T* x, bool live, int n, const device T* sp,
                         int tid, threadgroup T* St) {
  constexpr int TC = qr_apply_tc<T, NB>();
  T xr[NB];
  QR_UNROLL
  for (int k = 0; k < NB; ++k)
    xr[k] = live && k < n ? x[k] : T(0);
  for (int c0 = 0; c0 < n; c0 += TC) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int e = tid; e < NB * TC; e += NT) {
      int k = e / TC, cc = c0 + e % TC;
      St[e] = k < n && cc < n ? sp[(int64_t)k * n + cc] : T(0);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (live) {
      for (int cc = 0; cc < TC && c0 + cc < n; cc += 4) {
        T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
        QR_UNROLL
        for (int k = 0; k < NB; ++k) {
          a0 = fma(xr[k], St[k * TC + cc], a0);
          a1 = fma(xr[k], St[k * TC + cc + 1], a1);
          a2 = fma(xr[k], St[k * TC + cc + 2], a2);
          a3 = fma(xr[k], St[k * TC + cc + 3], a3);
        }
        int c = c0 + cc;
        x[c] = a0;
        if (c + 1 < n)
          x[c + 1] = a1;
        if (c + 2 < n)
          x[c + 2] = a2;
        if (c + 3 < n)
          x[c + 3] = a3;
      }
    }
  }
}

// qr_apply for threadgroup g (see the kernel): its QR_APPLY_ROWS rows of X
// times their block's piece of S (qr_row_times).
template <typename T, int NB, int BR>
inline void qr_apply_rows(device T* X, const constant int* Xin_shape,
                          int Xin_ndim, const device T* S,
                          const constant int* S_shape, int S_ndim, uint g,
                          int tid, threadgroup T* St) {
  const int m = Xin_shape[Xin_ndim - 2], n = Xin_shape[Xin_ndim - 1];
  const int mu = S_shape[S_ndim - 2];
  const int groups = (m + QR_APPLY_ROWS - 1) / QR_APPLY_ROWS;
  const uint bi = g / (uint)groups;
  const int first = (int)(g % (uint)groups) * QR_APPLY_ROWS;
  const int row = first + tid;
  const int blk = first / BR;
  device T* x = X + ((int64_t)bi * m + min(row, m - 1)) * n;
  const device T* sp = S + ((int64_t)bi * mu + (int64_t)blk * n) * n;
  qr_row_times<T, NB, QR_APPLY_ROWS>(x, row < m, n, sp, tid, St);
}

// ---- TSQR's tree in one launch (CholeskyQR's fallback) -------------------
//
// Level 0 of the tree is the matrix's N_0 = ceil(m / MMAX) row blocks (the
// leaves); level l + 1 has N_{l+1} = ceil(N_l / F) nodes, F = MMAX / n,
// node k factoring the stack of the R's of its children kF .. kF + F - 1
// (at most F n <= MMAX rows); the level with one node (the root) writes R.
// The stacks of levels 1, 2, ... lie one after another in S (batch x Srows
// x n: the level-l stack is N_{l-1} n rows, child i's R at its rows i n),
// each node's Q at the same rows of QS, and each node above the leaves has
// a counter in Cnt (batch x C, level after level, zero before the launch).
// A group that has written a node's R adds one to its parent's counter;
// the group that completes the count factors the parent (the "last group
// to arrive" pattern), so the whole tree runs in one launch without any
// group ever waiting for another: safe on a GPU whatever runs at once, and
// on the CPU backend, which runs a launch's groups one after another. The
// way back is one more launch (qr_chain): every row of a leaf's Q times the
// n x n pieces of the Q's of its ancestors, from level 1 up.

// What a loop over i, i + G, ... adds to i (besides its own G) to reach
// its first value >= next: a walk over the blocks of all matrices skips a
// matrix whose flag is 0 in one step rather than block by block.
inline uint qr_skip(uint i, uint next, uint G) {
  return i >= next ? 0u : (next - i + G - 1) / G * G - G;
}

// Whether this group completed the count of counter `cnt` (of `total`
// children). Every thread's writes are made visible device-wide before the
// count (a fence per thread, then the barrier), and the group that
// completes it fences again before it reads what the others wrote.
inline bool qr_tree_last(device int* cnt, int total, uint tid,
                         threadgroup int* last) {
#if KILN_BACKEND_CUDA
  __threadfence();
#endif
  threadgroup_barrier(mem_flags::mem_device);
  if (tid == 0) {
    const int old = atomic_fetch_add_explicit((device atomic_int*)cnt, 1,
                                              memory_order_acq_rel);
    *last = old == total - 1 ? 1 : 0;
  }
  threadgroup_barrier(mem_flags::mem_device);
  const bool done = *last != 0;
#if KILN_BACKEND_CUDA
  if (done)
    __threadfence();
#endif
  return done;
}

// The whole tree for the matrices whose flag is non-zero (see above): the
// groups walk the leaves of all matrices, grp = their index, + the grid's
// G groups, ...; after a leaf, a group climbs as long as it completes the
// parent's count. A matrix of one leaf writes Q and R directly. Q (batch x
// m x n) receives the leaves' Q, R (batch x n x n) the root's R.
template <typename T, int MMAX, int NC, int SEGS, bool WANT_Q>
inline void qr_tree(const device T* A, const constant int* A_shape,
                    const constant int64_t* A_strides, int A_ndim,
                    const device int* flag, device T* Q, device T* R,
                    device T* S, device T* QS, device int* Cnt, int Srows,
                    int C, uint tid, uint g0, uint G, threadgroup T* vbuf,
                    threadgroup T* taus, threadgroup T* sgn,
                    threadgroup int* dims, threadgroup int* last) {
  const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
  const int64_t rs = A_strides[A_ndim - 2], cs = A_strides[A_ndim - 1];
  const int N0 = (m + MMAX - 1) / MMAX, F = MMAX / n;
  const uint total = qr_batch_count(A_shape, A_ndim) * (uint)N0;
  for (uint grp = g0; grp < total; grp += G) {
    const uint b = grp / (uint)N0;
    if (flag[b] == 0) { // on to this group's first leaf of matrix b + 1
      grp += qr_skip(grp, (b + 1) * (uint)N0, G);
      continue;
    }
    const int leaf = (int)(grp % (uint)N0);
    const int row0 = leaf * MMAX;
    device T* s = S + (int64_t)b * Srows * n;
    device T* qs = WANT_Q ? QS + (int64_t)b * Srows * n : QS;
    device T* rb = R + (int64_t)b * n * n;
    device T* ql = WANT_Q ? Q + ((int64_t)b * m + row0) * n : Q;
    threadgroup_barrier(mem_flags::mem_threadgroup); // buffers free again
    qr_house_block<T, MMAX, NC, SEGS, WANT_Q>(
        A + qr_batch_offset(b, A_shape, A_strides, A_ndim) + row0 * rs, rs,
        cs, min(MMAX, m - row0), n, n, ql,
        N0 == 1 ? rb : s + (int64_t)leaf * n * n, tid, vbuf, taus, sgn,
        dims);
    // climb: N the level's node count, k this node, off the row of the
    // level's R stack in S, coff the next level's first counter
    int N = N0, k = leaf, off = 0, coff = 0;
    while (N > 1) {
      const int parent = k / F, Nn = (N + F - 1) / F;
      const int kids = min(F, N - parent * F);
      if (!qr_tree_last(Cnt + (int64_t)b * C + coff + parent, kids, tid,
                        last))
        break;
      const int in0 = off + parent * F * n, next = off + N * n;
      threadgroup_barrier(mem_flags::mem_threadgroup);
      qr_house_block<T, MMAX, NC, SEGS, WANT_Q>(
          s + (int64_t)in0 * n, n, 1, kids * n, n, n,
          WANT_Q ? qs + (int64_t)in0 * n : qs,
          Nn == 1 ? rb : s + ((int64_t)next + parent * n) * n, tid, vbuf,
          taus, sgn, dims);
      coff += Nn;
      off = next;
      N = Nn;
      k = parent;
    }
  }
}

// The way back of qr_tree for the rows of the matrices whose flag is non-
// zero: each row of X (the leaves' Q, in place) times the n x n piece of QS
// of its leaf's ancestor at every level from 1 to the root (the piece of
// node i of a level is the rows i n .. i n + n - 1 of the level above's
// stack of Q's). QR_APPLY_ROWS threads (rows) a group; the groups walk
// their row blocks as qr_tree walks its leaves.
template <typename T, int NB, int MMAX>
inline void qr_chain(device T* X, const constant int* Xin_shape, int Xin_ndim,
                     const device T* QS, int Srows, const device int* flag,
                     int tid, uint g0, uint G, threadgroup T* St) {
  static_assert(MMAX % QR_APPLY_ROWS == 0, "a group's rows in one leaf");
  const int m = Xin_shape[Xin_ndim - 2], n = Xin_shape[Xin_ndim - 1];
  const int N0 = (m + MMAX - 1) / MMAX, F = MMAX / n;
  const int groups = (m + QR_APPLY_ROWS - 1) / QR_APPLY_ROWS;
  const uint total = qr_batch_count(Xin_shape, Xin_ndim) * (uint)groups;
  for (uint g = g0; g < total; g += G) {
    const uint b = g / (uint)groups;
    if (flag[b] == 0 || N0 == 1) { // on to matrix b + 1
      g += qr_skip(g, (b + 1) * (uint)groups, G);
      continue;
    }
    const int first = (int)(g % (uint)groups) * QR_APPLY_ROWS;
    const int row = first + tid;
    device T* x = X + ((int64_t)b * m + min(row, m - 1)) * n;
    int N = N0, i = first / MMAX;
    int64_t off = 0;
    while (N > 1) {
      const device T* sp = QS + ((int64_t)b * Srows + off + (int64_t)i * n) * n;
      qr_row_times<T, NB, QR_APPLY_ROWS>(x, row < m, n, sp, tid, St);
      off += (int64_t)N * n;
      N = (N + F - 1) / F;
      i /= F;
    }
  }
}

//@kernel qr_small
// Q and R of one matrix (or, with BLOCKED, one row block) per threadgroup.
// Inputs: A (a strided view), g0 (the first group of this launch).
// Template: T, MMAX, NC, SEGS, BLOCKED, COMPLETE. Threadgroups of
// NC * SEGS threads, grid.x = threads * groups.
threadgroup T vbuf[2 * MMAX];
threadgroup T taus[NC];
threadgroup T sgn[MMAX + NC];
threadgroup int dims[2];
qr_house<T, MMAX, NC, SEGS, BLOCKED, COMPLETE, true>(
    A, A_shape, A_strides, A_ndim, Q, R,
    (uint)g0 + threadgroup_position_in_grid.x, thread_index_in_threadgroup,
    vbuf, taus, sgn, dims);

//@kernel qr_small_r
// R only, as qr_small without Q.
threadgroup T vbuf[2 * MMAX];
threadgroup T taus[NC];
threadgroup T sgn[MMAX + NC];
threadgroup int dims[2];
qr_house<T, MMAX, NC, SEGS, BLOCKED, COMPLETE, false>(
    A, A_shape, A_strides, A_ndim, R, R,
    (uint)g0 + threadgroup_position_in_grid.x, thread_index_in_threadgroup,
    vbuf, taus, sgn, dims);

//@kernel qr_apply
// TSQR's way back: X (batch x m x n, contiguous, in place) is a stack of
// row blocks of BR rows, block p an explicit Q_p; each becomes Q_p S_p,
// S_p the n x n rows p n .. p n + n - 1 of S (the level above's Q, batch x
// mu x n). Template: T, NB (n's capacity), BR. A thread per row of X
// (QR_APPLY_ROWS per threadgroup, grid.x = QR_APPLY_ROWS * groups); see
// qr_apply_rows. Xin is X, bound for its shape.
threadgroup T St[NB * qr_apply_tc<T, NB>()];
qr_apply_rows<T, NB, BR>(X, Xin_shape, Xin_ndim, S, S_shape, S_ndim,
                         (uint)g0 + threadgroup_position_in_grid.x,
                         (int)thread_index_in_threadgroup, St);

//@kernel qr_tree_g
// TSQR's whole tree (qr_tree) behind a per-matrix flag: CholeskyQR's
// fallback (src/linalg/qr.c, cholqr_with_fallback). Only the matrices
// whose flag is non-zero are factored, so when nothing broke down the
// launch costs a few flag reads. Inputs: A (a strided view), flag (int32
// per matrix), Ssh (S, for its shape), Csh (Cnt, for its shape); outputs Q
// (batch x m x n), R (batch x n x n), S and QS (the stacks and their Q's,
// batch x Srows x n), Cnt (int32 counters, batch x C, zero). Template: T,
// MMAX, NC, SEGS. Threadgroups of NC * SEGS threads on a small fixed grid.
threadgroup T vbuf[2 * MMAX];
threadgroup T taus[NC];
threadgroup T sgn[MMAX + NC];
threadgroup int dims[2];
threadgroup int last;
qr_tree<T, MMAX, NC, SEGS, true>(
    A, A_shape, A_strides, A_ndim, flag, Q, R, S, QS, Cnt,
    Ssh_shape[Ssh_ndim - 2], Csh_shape[Csh_ndim - 1],
    thread_index_in_threadgroup, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, vbuf, taus, sgn, dims, &last);

//@kernel qr_tree_rg
// R only, as qr_tree_g without Q and QS (outputs R, S, Cnt).
threadgroup T vbuf[2 * MMAX];
threadgroup T taus[NC];
threadgroup T sgn[MMAX + NC];
threadgroup int dims[2];
threadgroup int last;
qr_tree<T, MMAX, NC, SEGS, false>(
    A, A_shape, A_strides, A_ndim, flag, R, R, S, S, Cnt,
    Ssh_shape[Ssh_ndim - 2], Csh_shape[Csh_ndim - 1],
    thread_index_in_threadgroup, threadgroup_position_in_grid.x,
    threadgroups_per_grid.x, vbuf, taus, sgn, dims, &last);

//@kernel qr_chain_g
// qr_tree_g's way back (qr_chain), behind the same flag: X (batch x m x n,
// the leaves' Q, in place; Xin is X, bound for its shape) times its
// ancestors' pieces of QS (batch x Srows x n). Template: T, NB (n's
// capacity), MMAX. QR_APPLY_ROWS threads a group, on a small fixed grid.
threadgroup T St[NB * qr_apply_tc<T, NB>()];
qr_chain<T, NB, MMAX>(X, Xin_shape, Xin_ndim, QS, QS_shape[QS_ndim - 2],
                      flag, (int)thread_index_in_threadgroup,
                      threadgroup_position_in_grid.x,
                      threadgroups_per_grid.x, St);

//@kernel qr_eye
// The diagonal of Q = I for every matrix of Q (batch x m x m, already
// zero): complete Q of an m x 0 matrix. A thread per diagonal element
// (grid.x = m), batch entries along grid.y from g0. Qin is Q, bound for
// its shape.
const int m = Qin_shape[Qin_ndim - 1];
const uint e = thread_position_in_grid.x;
const uint b = (uint)g0 + threadgroup_position_in_grid.y;
Q[((int64_t)b * m + e) * m + e] = T(1);
