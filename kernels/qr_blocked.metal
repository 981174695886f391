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
// Template: T, NB. One threadgroup per matrix (grid.x = threads; batch
// entries along grid.y from batch0). Inputs: Qp, Rp (the TSQR results,
// contiguous), Win, j0, batch0. Outputs: W, Y, Tm, Ui (batch x NB x NB).
//
// The elimination works on M = -Q1: column i's updates by earlier steps
// are proportional to s_i (E's column has zeros above row i), so the
// entries of U right of the diagonal are s_c M[i][c], fixed after the loop
// when every s_c is known.
constexpr int P = NB + 1;
threadgroup T M[NB * P];
threadgroup T S[NB * P];
threadgroup T sg[NB];
const int m = Win_shape[Win_ndim - 2], n = Win_shape[Win_ndim - 1];
const int k = min(m, n);
const int jb = Rp_shape[Rp_ndim - 1];
const int c0 = j0;
const int panels = (k + NB - 1) / NB;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int64_t qrs = Qp_strides[Qp_ndim - 2], qcs = Qp_strides[Qp_ndim - 1];
const int64_t rrs = Rp_strides[Rp_ndim - 2], rcs = Rp_strides[Rp_ndim - 1];
const device T* q = Qp + qrb_batch_offset(b, Qp_shape, Qp_strides, Qp_ndim);
const device T* rp = Rp + qrb_batch_offset(b, Rp_shape, Rp_strides, Rp_ndim);
device T* w = W + (int64_t)b * m * n;
device T* y = Y + (int64_t)b * m * k;
device T* tm = Tm + ((int64_t)b * panels + c0 / NB) * NB * NB;
device T* ui = Ui + (int64_t)b * NB * NB;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
for (int e = tid; e < jb * jb; e += nt) {
  int i = e / jb, j = e % jb;
  M[i * P + j] = -q[i * qrs + j * qcs];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int i = 0; i < jb; ++i) {
  T piv = M[i * P + i];
  T s = piv >= T(0) ? T(1) : T(-1);
  T inv = s / (T(1) + fabs(piv));
  for (int r = i + 1 + tid; r < jb; r += nt)
    M[r * P + i] *= inv;
  if (tid == 0)
    sg[i] = s;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  const int rest = jb - i - 1;
  for (int e = tid; e < rest * rest; e += nt) {
    int r = i + 1 + e / rest, c = i + 1 + e % rest;
    M[r * P + c] = fma(-M[r * P + i], M[i * P + c], M[r * P + c]);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
// U on and above the diagonal: 1 + |m_ii|, and s_c m_ic.
for (int e = tid; e < jb * jb; e += nt) {
  int i = e / jb, c = e % jb;
  if (c == i)
    M[i * P + i] = T(1) + fabs(M[i * P + i]);
  else if (c > i)
    M[i * P + c] *= sg[c];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
// T and Ui at once, in threadgroup memory (each substitution is a chain
// of dependent steps, so its operands must be near): thread i < NB forms
// T's row i, thread NB + c Ui's column c. They share S, T in its upper
// triangle, Ui transposed in the rest: Ui(r, c) at S[c][r - 1] (r >= 1)
// and S[c][NB] (r = 0).
// T's row i: T(i, :) Y1^T = U(i, :), forward substitution with the unit
// lower Y1 (zero left of the diagonal).
if (tid < jb) {
  const int i = tid;
  for (int c = i; c < jb; ++c) {
    T x = M[i * P + c], x2 = T(0);
    int j = i;
    for (; j + 1 < c; j += 2) {
      x = fma(-M[c * P + j], S[i * P + j], x);
      x2 = fma(-M[c * P + j + 1], S[i * P + j + 1], x2);
    }
    if (j < c)
      x = fma(-M[c * P + j], S[i * P + j], x);
    S[i * P + c] = x + x2;
  }
} else if (tid >= NB && tid < NB + jb) {
  // Ui's column c: U x = e_c by back substitution, stored as s_r x_r.
  const int c = tid - NB;
  for (int r = c; r >= 0; --r) {
    T x = r == c ? T(1) : T(0);
    for (int j = r + 1; j <= c; ++j)
      x = fma(-M[r * P + j], S[c * P + j - 1], x);
    x /= M[r * P + r];
    S[c * P + (r == 0 ? NB : r - 1)] = x;
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int e = tid; e < NB * NB; e += nt) {
  int i = e / NB, c = e % NB;
  bool in = i < jb && c < jb && c >= i;
  tm[e] = in ? S[i * P + c] : T(0);
  ui[e] = in ? sg[i] * S[c * P + (i == 0 ? NB : i - 1)] : T(0);
}
// Y's top rows (Y1, unit lower) and R's rows of the panel, S Rp.
for (int e = tid; e < jb * jb; e += nt) {
  int i = e / jb, c = e % jb;
  y[(int64_t)(c0 + i) * k + c0 + c] =
      c < i ? M[i * P + c] : (c == i ? T(1) : T(0));
  if (c >= i)
    w[(int64_t)(c0 + i) * n + c0 + c] = sg[i] * rp[i * rrs + c * rcs];
}
