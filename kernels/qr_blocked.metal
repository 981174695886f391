// kiln's blocked Householder QR kernels (driver: src/linalg/qr_blocked.c).
//
// The driver keeps every matrix of the batch in contiguous workspaces:
//   W   batch x m x n    the working copy of A; R builds up on and above its
//                        diagonal (below it, panel columns keep scratch)
//   Y   batch x m x k    the Householder vectors V, explicit: unit diagonal,
//                        zeros above it, so GEMMs can read them as views
//   Tm  batch x (P*NB) x NB   the NB x NB triangular factor T of each of
//                        the P panels (compact WY: H_j0 ... H_j0+jb-1 =
//                        I - V T V^T), zeros outside the leading jb x jb
// with k = min(m, n). Kernels that read W bind it twice, as the input Win
// (for its shape) and as the output W (written in place), as the Cholesky
// kernels do.
//
// Order of work: qrb_copy (A into W), then per panel of NB columns
// qrb_panel or TSQR + qrb_recon (V, T and R's rows of the panel) and three
// GEMMs on the rest of its outer block (4 panels); per outer block
// qrb_tinit and GEMMs form its T (To), and three GEMMs update the trailing
// columns; then qrb_r (R with a non-negative diagonal) and, for Q,
// qrb_qinit (Q = E D, D the signs of R's diagonal) followed by the
// backward accumulation of the outer blocks with GEMMs. Starting the backward
// accumulation from E D instead of E flips exactly the columns of Q whose
// row of R is flipped, at no extra cost.
#include <metal_stdlib>
using namespace metal;

// qrb_recon's loops have compile-time trip counts; unrolled, every index
// into its per-thread arrays is a constant and they stay in registers.
#if KILN_BACKEND_CUDA
#define QRB_UNROLL _Pragma("unroll")
#define QRB_ROLLED _Pragma("unroll 1")
#else
#define QRB_UNROLL
#define QRB_ROLLED
#endif

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order.
inline int64_t qrb_batch_offset(uint b, const constant int* shape,
                                const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

// The first row at or after `d` of those a warp owns: the panel's rows
// j0, j0+1, ... are dealt to warps in turn (row r to warp (r - j0) % nw),
// so every element keeps one owner through the whole panel.
inline int qrb_first_row(int d, int j0, int warp, int nw) {
  int off = (d - j0) % nw;
  return d + (warp - off + nw) % nw;
}

// The Householder reflector of LAPACK's larfg for the column whose head is
// alpha and whose tail has squared norm sigma: H = I - tau v v^T with v =
// (1, x / (alpha - beta)) maps the column to (beta, 0, ...). A zero tail
// gives H = I (tau = 0, beta = alpha); NaN propagates.
template <typename T>
inline void qrb_reflector(T alpha, T sigma, thread T& beta, thread T& tau,
                          thread T& scale) {
  if (sigma == T(0)) {
    beta = alpha;
    tau = T(0);
    scale = T(0);
    return;
  }
  T nrm = sqrt(fma(alpha, alpha, sigma));
  beta = alpha >= T(0) ? -nrm : nrm;
  tau = (beta - alpha) / beta;
  scale = T(1) / (alpha - beta);
}

//@kernel qrb_copy
// W = A (a strided view) for every matrix. Template: T. A grid-stride loop
// over the m * n elements of a matrix along x, batch entries along grid.y
// from batch0.
const int m = A_shape[A_ndim - 2], n = A_shape[A_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int64_t sr = A_strides[A_ndim - 2], sc = A_strides[A_ndim - 1];
const device T* a = A + qrb_batch_offset(b, A_shape, A_strides, A_ndim);
device T* w = W + (int64_t)b * m * n;
const int64_t total = (int64_t)m * n;
for (int64_t e = thread_position_in_grid.x; e < total;
     e += (int64_t)threads_per_grid.x) {
  int64_t i = e / n, j = e % n;
  w[e] = a[i * sr + j * sc];
}

//@kernel qrb_panel
// Factors the panel of W at columns j0 .. j0+jb-1 (jb = min(NB, k - j0)),
// rows j0 .. m-1, of every matrix: R's rows of the panel into W, the
// vectors into Y, the panel's T into Tm. Template: T, NB (32 or 64). One
// threadgroup per matrix (grid.x = threads, a multiple of 32 up to 1024;
// batch entries along grid.y from batch0).
//
// Layout: lane l of every warp owns panel columns l and l + 32 (NB = 64);
// the rows are dealt to the warps in turn, so a warp reads each of its
// rows as one coalesced segment and every element has a single owner.
// Column i of the panel, step by step (three barriers each):
//   1. every thread forms the reflector from alpha (the pivot) and sigma
//      (the tail's squared norm), both left in threadgroup memory by the
//      previous step;
//   2. one pass over the rows below the pivot: v^T W[:, c] for the later
//      columns c (the update's dot products) and for the earlier ones (the
//      Gram column V^T v that T needs, LAPACK's larft), reduced per warp
//      into `red`, then over warps into `tot`;
//   3. T's column i from T's earlier columns and the Gram column;
//   4. a second pass applies the reflector to the later columns and sums
//      the squares of the next column's tail (the next sigma).
// The pivot column itself is never written while it is the pivot (other
// lanes read it); its vector goes to Y, scaled, in a last pass.
// Threadgroup memory: NB * (2 * 32 + NB + 4) elements (25 KiB for float32
// NB 64, 25 KiB for float64 NB 32).
constexpr int P = NB + 1;
threadgroup T red[32 * NB];
threadgroup T tot[NB];
threadgroup T Ts[NB * P];
threadgroup T scal[NB];
threadgroup T bet[NB];
threadgroup T sig[32];
threadgroup T alph[1];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const int c0 = j0;
const int jb = min(NB, k - c0);
const int panels = (k + NB - 1) / NB;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
device T* w = W + (int64_t)b * m * n + c0;
device T* y = Y + (int64_t)b * m * k + c0;
device T* tm = Tm + ((int64_t)b * panels + c0 / NB) * NB * NB;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
const int lane = tid % 32, warp = tid / 32, nw = nt / 32;
const int ca = lane, cb = lane + 32; // this lane's columns (cb if NB 64)
const bool has_a = ca < jb, has_b = NB > 32 && cb < jb;

// Column 0's tail norm and pivot, for the first step.
if (lane == 0) {
  T part = T(0);
  for (int r = qrb_first_row(c0 + 1, c0, warp, nw); r < m; r += nw) {
    T x = w[(int64_t)r * n];
    part = fma(x, x, part);
  }
  sig[warp] = part;
}
if (tid == 0)
  alph[0] = w[(int64_t)c0 * n];
for (int e = tid; e < NB * P; e += nt)
  Ts[e] = T(0);

for (int i = 0; i < jb; ++i) {
  threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);
  const int d = c0 + i;
  T sigma = T(0);
  for (int q = 0; q < nw; ++q)
    sigma += sig[q];
  T beta, tau, scale;
  qrb_reflector(alph[0], sigma, beta, tau, scale);
  const int first = qrb_first_row(d, c0, warp, nw);

  // Pass 1: dot products of v with every other panel column.
  T acc_a = T(0), acc_b = T(0);
  for (int r = first; r < m; r += nw) {
    const device T* row = w + (int64_t)r * n;
    T vr = r == d ? T(1) : row[i] * scale;
    if (has_a && ca != i)
      acc_a = fma(vr, row[ca], acc_a);
    if (has_b && cb != i)
      acc_b = fma(vr, row[cb], acc_b);
  }
  red[warp * NB + ca] = acc_a;
  if (NB > 32)
    red[warp * NB + cb] = acc_b;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (tid < jb) {
    T s = T(0);
    for (int q = 0; q < nw; ++q)
      s += red[q * NB + tid];
    // Earlier columns hold unscaled tails: scale them into v_c^T v.
    tot[tid] = tid < i ? s * scal[tid] : s;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // T(0:i, i) = -tau T(0:i, 0:i) (V(:, 0:i)^T v), T(i, i) = tau.
  if (tid < i) {
    T s = T(0);
    for (int j = tid; j < i; ++j)
      s = fma(Ts[tid * P + j], tot[j], s);
    Ts[tid * P + i] = -tau * s;
  } else if (tid == i) {
    Ts[i * P + i] = tau;
    scal[i] = scale;
    bet[i] = beta;
  }

  // Pass 2: apply the reflector to the later columns; the next column's
  // new tail norm and pivot come along.
  const int nx = i + 1;
  T part = T(0);
  for (int r = first; r < m; r += nw) {
    device T* row = w + (int64_t)r * n;
    T vr = r == d ? T(1) : row[i] * scale;
    if (has_a && ca > i) {
      T x = fma(-tau * tot[ca], vr, row[ca]);
      row[ca] = x;
      if (ca == nx && r > d + 1)
        part = fma(x, x, part);
      else if (ca == nx && r == d + 1)
        alph[0] = x;
    }
    if (has_b && cb > i) {
      T x = fma(-tau * tot[cb], vr, row[cb]);
      row[cb] = x;
      if (cb == nx && r > d + 1)
        part = fma(x, x, part);
      else if (cb == nx && r == d + 1)
        alph[0] = x;
    }
  }
  if (nx < jb && lane == nx % 32)
    sig[warp] = part;
}
threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);

// The vectors into Y (unit diagonal, zeros above it), beta onto W's
// diagonal, and T out.
for (int r = c0 + warp; r < m; r += nw) {
  device T* row = w + (int64_t)r * n;
  device T* yrow = y + (int64_t)r * k;
  if (has_a) {
    int dc = c0 + ca;
    yrow[ca] = r > dc ? row[ca] * scal[ca] : (r == dc ? T(1) : T(0));
    if (r == dc)
      row[ca] = bet[ca];
  }
  if (has_b) {
    int dc = c0 + cb;
    yrow[cb] = r > dc ? row[cb] * scal[cb] : (r == dc ? T(1) : T(0));
    if (r == dc)
      row[cb] = bet[cb];
  }
}
for (int e = tid; e < NB * NB; e += nt)
  tm[e] = Ts[(e / NB) * P + e % NB];

//@kernel qrb_r
// R (rows x n, rows = k or m) from W: W's upper triangle with row i
// multiplied by the sign of W's diagonal element i (so R's diagonal is
// non-negative), zeros below the diagonal and in rows k and later.
// Template: T. Inputs: Win, rows, batch0. A grid-stride loop over R's
// elements along x, batch entries along grid.y from batch0.
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* w = Win + (int64_t)b * m * n;
device T* r = R + (int64_t)b * rows * n;
const int64_t total = (int64_t)rows * n;
for (int64_t e = thread_position_in_grid.x; e < total;
     e += (int64_t)threads_per_grid.x) {
  int64_t i = e / n, j = e % n;
  T v = T(0);
  if (i <= j && i < k) {
    v = w[i * n + j];
    if (w[i * n + i] < T(0))
      v = -v;
  }
  r[e] = v;
}

//@kernel qrb_qinit
// Q (m x cols, cols = k or m) = E D: zeros but for the diagonal, which
// holds the sign of W's diagonal element (1 beyond k and for a
// non-negative element). Template: T. Inputs: Win, cols, batch0. Grid as
// qrb_r.
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* w = Win + (int64_t)b * m * n;
device T* q = Q + (int64_t)b * m * cols;
const int64_t total = (int64_t)m * cols;
for (int64_t e = thread_position_in_grid.x; e < total;
     e += (int64_t)threads_per_grid.x) {
  int64_t i = e / cols, j = e % cols;
  T v = T(0);
  if (i == j)
    v = j < k && w[j * n + j] < T(0) ? T(-1) : T(1);
  q[e] = v;
}

//@kernel qrb_tinit
// The start of an outer block's T (To's NBO x NBO block at row j0, the
// block's first column): its panels' T's (NB x NB blocks of Tm) on the
// diagonal, zeros elsewhere; the driver fills the blocks above the
// diagonal with GEMMs. Template: T. Inputs: Tmin (Tm, batch x P*NB x NB),
// Toin (To, bound for its shape), j0, batch0. A grid-stride loop over the
// block along x, batch entries along grid.y from batch0.
const int nb = Tmin_shape[Tmin_ndim - 1], tp = Tmin_shape[Tmin_ndim - 2];
const int nbo = Toin_shape[Toin_ndim - 1];
const int tor = Toin_shape[Toin_ndim - 2];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* tm = Tmin + (int64_t)b * tp * nb;
device T* to = To + ((int64_t)b * tor + j0) * nbo;
const int64_t total = (int64_t)nbo * nbo;
for (int64_t e = thread_position_in_grid.x; e < total;
     e += (int64_t)threads_per_grid.x) {
  int i = (int)(e / nbo), j = (int)(e % nbo);
  T v = T(0);
  if (i / nb == j / nb && j0 + i < tp)
    v = tm[(int64_t)(j0 + i) * nb + j % nb];
  to[e] = v;
}

//@kernel qrb_sum
// The split-K reduction of V^T C: X's leading rows x cols block = the sum
// over s of P[b, s] (P a view: batch x S x rows x cols partial products).
// Xin is X, bound for its shape. Template: T. A grid-stride loop over the
// block along x (columns fastest, so reads and writes coalesce), batch
// entries along grid.y from batch0.
const int parts = P_shape[1], rows = P_shape[2], cols = P_shape[3];
const int xr = Xin_shape[Xin_ndim - 2], wide = Xin_shape[Xin_ndim - 1];
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const device T* pp = P + (int64_t)b * P_strides[0];
device T* x = X + (int64_t)b * xr * wide;
const int64_t total = (int64_t)rows * cols;
for (int64_t e = thread_position_in_grid.x; e < total;
     e += (int64_t)threads_per_grid.x) {
  int64_t i = e / cols, j = e % cols;
  const device T* src = pp + i * P_strides[2] + j * P_strides[3];
  T s = T(0);
  for (int t = 0; t < parts; ++t)
    s += src[(int64_t)t * P_strides[1]];
  x[i * wide + j] = s;
}

//@kernel qrb_recon
// Householder vectors and T from the panel's TSQR factors (Ballard et al.,
// "Reconstructing Householder vectors from Tall-Skinny QR"): with Qp the
// panel's orthonormal factor (rows x jb) and S = diag(+-1), the Householder
// form H E = Qp S satisfies E - Qp S = Y (T Y1^T), an LU factorization
// without pivoting (Y unit lower trapezoidal, T Y1^T upper). Choosing
// s_i = sign of the eliminated diagonal element of -Qp makes every pivot
// 1 + |.| >= 1, so the LU is stable. This kernel does the jb x jb top:
// the LU of E1 - Q1 S (rows of Y1 into Y), T = U Y1^-T (into Tm),
// Ui = S U^-1 (for the driver's GEMM Y2 = -Q2 Ui, the rows below) and
// R's rows of the panel, S Rp, into W (the Householder R of the panel).
// Template: T, NB. One threadgroup of exactly 4 NB threads per matrix
// (grid.x = 4 NB; batch entries along grid.y from batch0). Inputs: Qp,
// Rp (the TSQR results), Win, j0, batch0. Outputs: W, Y, Tm, Ui (batch x
// NB x NB).
//
// The elimination works on M = -Q1: column i's updates by earlier steps
// are proportional to s_i (E's column has zeros above row i), so
// U(i, c) = s_c M(i, c) right of the diagonal, U(i, i) = 1 + |M(i, i)|,
// and the multipliers are l_r = s_i M(r, i) / (1 + |M(i, i)|).
//
// Everything happens in ONE sweep of NB steps with one barrier each.
// Thread (r, q) (see below for the map) owns columns q QW .. q QW + QW - 1
// (QW = NB / 4) of row r, in registers: q is the same across a warp, so
// the branches on it below are uniform and a warp reads one pivot row
// chunk (a broadcast). The matrix is padded with zeros to NB x NB (an
// identity block in the LU), so every loop has a compile-time trip count
// and every register index is a constant (the steps are unrolled by QW:
// the column of step s = qb QW + ii is register ii of the threads with
// q = qb). At step s the pivot row s is in threadgroup memory (Z, written
// by its owners during step s - 1), with M(r, s) for every row (Mc) and
//   rows r > s  eliminate: M(r, :) -= l_r M(s, :); and, Gauss-Jordan
//               style, the same row operation on X = L^-1 S (X(r, c) for
//               c < s), which lives in the columns M no longer uses, so a
//               row's QW registers hold both (one FMA per element). Row
//               s + 1's threads then store their row into Z, and column
//               s + 1's their M(r, s + 1) into Mc.
//   row r = s   is final: its registers become U S (zero left of the
//               diagonal), T(s, s) = U(s, s), U^-1(s, s) = 1 / U(s, s).
//   rows r < s  form column s of T and of U^-1 from data already there:
//               T(r, s) = sum_j (U S)(r, j) X(s, j) (X's row s is the
//               pivot row's left part, X(s, s) = s_s), and by bordering
//               U^-1(r, s) = -(s_s / U(s, s)) sum_j U^-1(r, j) M(j, s)
//               (M(j, s) from the rows of Z, U^-1(r, :) in registers).
//               Each thread adds its chunk's terms (none when the chunk
//               lies right of s or left of r: uniform skips) into PT and
//               PD; the thread owning column s sums the 4 chunks' at the
//               start of step s + 1, after the barrier, before its own
//               dot of step s + 1 needs U^-1(r, s).
// Signs: T = U Y1^-T = (U S)(S Y1^-T) = (U S) X^T, so neither factor needs
// a sign that is not known yet when its row is formed.
//
// Counts, NB = 64 (from the code and its SASS; measured on an H100 only
// in total: QR 4096^2 30.4 -> 26.8 ms, 8192^2 89.4 -> 83.4 ms, i.e. ~58
// and ~47 us less a panel): the first
// version of this kernel did 64 steps of 2 barriers with ~rest^2 / 256
// elements per thread (each an integer division and 3 shared loads),
// then two serial substitutions of ~2000 dependent FMAs with 2 shared
// loads each (~4000 dependent shared loads): 92 us on an H100. Now 64
// steps of 1 barrier, each a chain of one shared load (pivot, Mc, Rc),
// one multiply and one FMA, then the pivot row's stores and one thread's
// division before the barrier (~110 cycles); what bounds a step is issue:
// per warp ~25 instructions common to all, ~35 to eliminate, ~55 for a
// chunk's two dots, so an SM sub-partition whose two warps straddle the
// step issues ~140-260 a step. Summing those by path, step and sub-
// partition gives ~12.7k cycles for the sweep, ~7 us at 1.75 GHz, plus
// ~1 us of loads, stores and 4 barriers around it: ~8 us, against 92.
constexpr int QW = NB / 4; // columns per thread
constexpr int NT = 4 * NB; // threads
// Loads and stores go through threadgroup memory so that global memory
// sees whole rows (a thread's own QW consecutive elements would make each
// warp instruction touch many lines): S stages, in rows of pitch SP (16
// bytes of padding, so the rows of a warp's vector accesses spread over
// the banks); Z, free after the sweep, stages too.
constexpr int SP = NB + 16 / (int)sizeof(T);
threadgroup T Z[NB * SP];
threadgroup T S[NB * SP];
threadgroup T Mc[2 * NB];
threadgroup T Rc[2]; // 1 / U(s, s), from the thread that made the pivot
threadgroup T PT[2 * 4 * NB];
threadgroup T PD[2 * 4 * NB];
threadgroup T sgs[NB];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const int jb = Rp_shape[Rp_ndim - 1];
const int c0 = j0;
const int panels = (k + NB - 1) / NB;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int64_t qrs = Qp_strides[Qp_ndim - 2], qcs = Qp_strides[Qp_ndim - 1];
const int64_t rrs = Rp_strides[Rp_ndim - 2], rcs = Rp_strides[Rp_ndim - 1];
const device T* qp = Qp + qrb_batch_offset(b, Qp_shape, Qp_strides, Qp_ndim);
const device T* rp = Rp + qrb_batch_offset(b, Rp_shape, Rp_strides, Rp_ndim);
device T* w = W + (int64_t)b * m * n;
device T* y = Y + (int64_t)b * m * k;
device T* tm = Tm + ((int64_t)b * panels + c0 / NB) * NB * NB;
device T* uo = Ui + (int64_t)b * NB * NB;
const int tid = (int)thread_index_in_threadgroup;
// Warp w holds quarter q = w % 4 of rows 32 (w / 4) .. 32 (w / 4) + 31:
// the two warps of one SM sub-partition (w, w + 4 for NB = 64) are one
// quarter's two row halves, which spreads the heavy warps (finished rows
// with dots to do) over the sub-partitions (a model of the sweep's issue:
// ~10% fewer cycles than with w = 2 q + h; not measured).
const int q = (tid >> 5) & 3, r = ((tid >> 7) << 5) | (tid & 31);
const int col0 = q * QW;
// z: M's row (columns > s), X's (columns < s), then U S once final;
// lo: L (the multipliers), tr: T's row, ui: U^-1's row; rv: R's (loaded
// now, stored at the end, so its latency hides behind the sweep).
T z[QW], lo[QW], tr[QW], ui[QW], rv[QW];
// -Q1 and R's rows, row by row over the threads (element e = t NT + tid
// of the zero-padded NB x NB top).
QRB_UNROLL
for (int t = 0; t < QW; ++t) {
  const int e = t * NT + tid, i = e / NB, j = e % NB;
  const bool in = i < jb && j < jb;
  S[i * SP + j] = in ? -qp[i * qrs + j * qcs] : T(0);
  rv[t] = in && j >= i ? rp[i * rrs + j * rcs] : T(0);
}
threadgroup_barrier(mem_flags::mem_threadgroup);
QRB_UNROLL
for (int cc = 0; cc < QW; ++cc) {
  z[cc] = S[r * SP + col0 + cc];
  lo[cc] = T(0);
  tr[cc] = T(0);
  ui[cc] = T(0);
  if (r == 0) // the first pivot row
    Z[col0 + cc] = z[cc];
}
if (q == 0) // M(r, 0), the first step's multipliers
  Mc[r] = z[0];
if (tid == 0)
  Rc[0] = T(1) / (T(1) + fabs(z[0]));
else if (q == 1) // read (and not used) by rows 0 and 1 at step 1
  Mc[NB + r] = T(0);
T my_s = T(1), inv_prev = T(0);
threadgroup_barrier(mem_flags::mem_threadgroup);
QRB_ROLLED
for (int qb = 0; qb < 4; ++qb) {
  const bool q_lt = q < qb, q_eq = q == qb;
  // Whether this chunk can hold a nonzero of (U S)(r, :) or U^-1(r, :).
  const bool reach = col0 + QW > r;
  QRB_UNROLL
  for (int ii = 0; ii < QW; ++ii) {
    const int s = qb * QW + ii;
    // Column s - 1 of T and U^-1, from the chunks' sums of step s - 1,
    // by its owner: register pi of the threads with q = pq.
    const int pi = ii > 0 ? ii - 1 : QW - 1;
    const int pq = ii > 0 ? qb : qb - 1;
    if (q == pq && r < s - 1) {
      const int o = ((s - 1) & 1) * 4 * NB + r;
      const T ts = (PT[o] + PT[o + NB]) + (PT[o + 2 * NB] + PT[o + 3 * NB]);
      const T ds = (PD[o] + PD[o + NB]) + (PD[o + 2 * NB] + PD[o + 3 * NB]);
      tr[pi] = ts;
      ui[pi] = -inv_prev * ds;
    }
    T zs[QW];
    QRB_UNROLL
    for (int cc = 0; cc < QW; ++cc)
      zs[cc] = Z[s * NB + col0 + cc];
    const T piv = Z[s * NB + s];
    // M(r, s), read by every thread so that the load issues with the
    // pivot's (only rows r > s use it).
    const T mrs = ((volatile threadgroup T*)Mc)[(s & 1) * NB + r];
    const T rcp = Rc[s & 1];
    const T sgn = piv >= T(0) ? T(1) : T(-1);
    const T upiv = T(1) + fabs(piv);
    const T inv = sgn * rcp;
    if (r > s) {
      const T l = mrs * inv;
      QRB_UNROLL
      for (int cc = 0; cc < QW; ++cc)
        z[cc] = fma(-l, zs[cc], z[cc]);
      if (q_eq) {
        z[ii] = -l * sgn; // X(r, s) = -l_r s_s: column s moves to X
        lo[ii] = l;
      }
      if (r == s + 1) {
        QRB_UNROLL
        for (int cc = 0; cc < QW; ++cc)
          Z[r * NB + col0 + cc] = z[cc];
      }
      // Column s + 1's multipliers: register ni of the threads with q = nq.
      const int ni = ii + 1 < QW ? ii + 1 : 0;
      const int nq = ii + 1 < QW ? qb : qb + 1;
      if (q == nq) {
        Mc[((s + 1) & 1) * NB + r] = z[ni];
        // The next pivot's reciprocal, by its one thread: the division
        // sits once on the step's chain, not after every thread's loads.
        if (r == s + 1)
          Rc[(s + 1) & 1] = T(1) / (T(1) + fabs(z[ni]));
      }
    } else if (r == s) {
      my_s = sgn;
      // Columns c > s keep M(s, c) = (U S)(s, c): all of a chunk right of
      // qb's, those after ii in qb's.
      QRB_UNROLL
      for (int cc = 0; cc < QW; ++cc)
        z[cc] = (cc > ii ? !q_lt : q > qb) ? z[cc] : T(0);
      if (q_eq) {
        z[ii] = sgn * upiv;
        tr[ii] = upiv;
        ui[ii] = rcp;
      }
    } else {
      // This chunk's terms of T(r, s) and of U^-1's dot: every column of
      // a chunk left of qb's is < s; in qb's, those before ii, and s.
      T tq[4] = {T(0), T(0), T(0), T(0)}, dq[4] = {T(0), T(0), T(0), T(0)};
      if (q_lt && reach) {
        QRB_UNROLL
        for (int cc = 0; cc < QW; ++cc) {
          tq[cc & 3] = fma(z[cc], zs[cc], tq[cc & 3]);
          dq[cc & 3] = fma(ui[cc], Z[(col0 + cc) * NB + s], dq[cc & 3]);
        }
      } else if (q_eq && reach) {
        QRB_UNROLL
        for (int cc = 0; cc < ii; ++cc) {
          tq[cc & 3] = fma(z[cc], zs[cc], tq[cc & 3]);
          dq[cc & 3] = fma(ui[cc], Z[(col0 + cc) * NB + s], dq[cc & 3]);
        }
        tq[ii & 3] = fma(z[ii], sgn, tq[ii & 3]); // X(s, s) = s_s
      }
      const int o = (s & 1) * 4 * NB + q * NB + r;
      PT[o] = (tq[0] + tq[1]) + (tq[2] + tq[3]);
      PD[o] = (dq[0] + dq[1]) + (dq[2] + dq[3]);
    }
    inv_prev = inv;
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
}
// The last column's T and U^-1 (step NB - 1's sums).
if (q == 3 && r < NB - 1) {
  const int o = ((NB - 1) & 1) * 4 * NB + r;
  tr[QW - 1] = (PT[o] + PT[o + NB]) + (PT[o + 2 * NB] + PT[o + 3 * NB]);
  ui[QW - 1] = -inv_prev * ((PD[o] + PD[o + NB]) +
                            (PD[o + 2 * NB] + PD[o + 3 * NB]));
}
// Tm and Ui: whole NB x NB tiles, zeros outside the upper jb x jb
// triangle; R's rows of the panel, S Rp, into W; then Y's top rows (Y1,
// unit lower). Each staged in threadgroup memory, stored row by row.
QRB_UNROLL
for (int cc = 0; cc < QW; ++cc) {
  Z[r * SP + col0 + cc] = tr[cc];
  S[r * SP + col0 + cc] = my_s * ui[cc];
}
if (q == 0)
  sgs[r] = my_s;
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* wt = w + (int64_t)c0 * n + c0;
QRB_UNROLL
for (int t = 0; t < QW; ++t) {
  const int e = t * NT + tid, i = e / NB, j = e % NB;
  const bool up = i < jb && j < jb && j >= i;
  tm[e] = up ? Z[i * SP + j] : T(0);
  uo[e] = up ? S[i * SP + j] : T(0);
  if (up)
    wt[(int64_t)i * n + j] = sgs[i] * rv[t];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
QRB_UNROLL
for (int cc = 0; cc < QW; ++cc) {
  const int c = col0 + cc;
  Z[r * SP + c] = c < r ? lo[cc] : (c == r ? T(1) : T(0));
}
threadgroup_barrier(mem_flags::mem_threadgroup);
device T* yt = y + (int64_t)c0 * k + c0;
QRB_UNROLL
for (int t = 0; t < QW; ++t) {
  const int e = t * NT + tid, i = e / NB, j = e % NB;
  if (i < jb && j < jb)
    yt[(int64_t)i * k + j] = Z[i * SP + j];
}
