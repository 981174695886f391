/*
 * The Metal conformance suite, part 3: every SIMD-group function against a
 * host model of Metal's rules. Threads that `return` early are inactive:
 * reductions, prefixes, ballots and votes cover the active lanes only;
 * simd_broadcast_first and simd_is_first use the lowest active lane;
 * simd_shuffle_up/down keep the lane's own value when the source lane is
 * outside [0, 32); a value read from an inactive lane is undefined and not
 * checked. The grid (200 threads, groups of 80) gives groups whose last
 * SIMD group is partial (16 and 8 lanes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define KT_SF 16
#define KT_SU 12
#define KT_POISON 12345.0

static const char kt_simd_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "if (act[i] == 0) return;\n"
    "uint lane = thread_index_in_simdgroup;\n"
    "float v = x[i];\n"
    "float pv = p[i];\n"
    "uint w = b[i];\n"
    "int iv = int(v);\n"
    "device float* fo = f + i * 16;\n"
    "device uint* uo = u + i * 12;\n"
    "fo[0] = simd_sum(v);\n"
    "fo[1] = simd_product(pv);\n"
    "fo[2] = simd_min(v);\n"
    "fo[3] = simd_max(v);\n"
    "fo[4] = simd_prefix_inclusive_sum(v);\n"
    "fo[5] = simd_prefix_exclusive_sum(v);\n"
    "fo[6] = simd_prefix_inclusive_product(pv);\n"
    "fo[7] = simd_prefix_exclusive_product(pv);\n"
    "fo[8] = simd_shuffle(v, ushort((lane * 7u + 3u) % 32u));\n"
    "fo[9] = simd_shuffle_xor(v, ushort(5));\n"
    "fo[10] = simd_shuffle_up(v, ushort(3));\n"
    "fo[11] = simd_shuffle_down(v, ushort(5));\n"
    "fo[12] = simd_broadcast(v, ushort(7));\n"
    "fo[13] = simd_broadcast_first(v);\n"
    "float2 v2 = simd_sum(float2(v, 2.0f * v));\n"
    "fo[14] = v2.y;\n"
    "fo[15] = float(simd_prefix_exclusive_sum(iv));\n"
    "uo[0] = simd_and(w);\n"
    "uo[1] = simd_or(w);\n"
    "uo[2] = simd_xor(w);\n"
    "simd_vote::vote_t vote =\n"
    "    static_cast<simd_vote::vote_t>(simd_ballot(v > 0.0f));\n"
    "uo[3] = uint(vote & 0xffffffffu);\n"
    "uo[4] = uint(vote >> 32);\n"
    "uo[5] = simd_all(v > -100.0f) ? 1u : 0u;\n"
    "uo[6] = simd_all(v > -6.0f) ? 1u : 0u;\n"
    "uo[7] = simd_any(v > 7.5f) ? 1u : 0u;\n"
    "uo[8] = simd_is_first() ? 1u : 0u;\n"
    "uo[9] = uint(simd_max(iv) + 100);\n"
    "uo[10] = simd_min(w);\n"
    "simdgroup_barrier(mem_flags::mem_none);\n"
    "uo[11] = simd_shuffle_down(w, ushort(31));\n";

typedef struct kt_simd_in {
  float x[256], p[256];
  uint32_t b[256];
  int32_t act[256];
} kt_simd_in;

/* Checks one SIMD group: lanes [base, base + count) of the grid. */
static void kt_check_simd_group(const kt_simd_in *in, const float *f,
                                const uint32_t *u, int base, int count,
                                const char *where) {
  bool A[32] = {false};
  int first = -1;
  for (int l = 0; l < count; l++) {
    A[l] = in->act[base + l] != 0;
    if (A[l] && first < 0)
      first = l;
  }
  double sum = 0, prod = 1, mn = INFINITY, mx = -INFINITY;
  uint32_t band = 0xffffffffu, bor = 0, bxor = 0, bmin = 0xffffffffu;
  uint64_t ballot = 0;
  bool all100 = true, all6 = true, any75 = false;
  int imax = -1000;
  for (int l = 0; l < count; l++) {
    if (!A[l])
      continue;
    float v = in->x[base + l];
    sum += v, prod *= in->p[base + l];
    mn = v < mn ? v : mn, mx = v > mx ? v : mx;
    uint32_t w = in->b[base + l];
    band &= w, bor |= w, bxor ^= w, bmin = w < bmin ? w : bmin;
    if (v > 0)
      ballot |= (uint64_t)1 << l;
    all100 = all100 && v > -100;
    all6 = all6 && v > -6;
    any75 = any75 || v > 7.5;
    imax = (int)v > imax ? (int)v : imax;
  }
  double isum = 0, iprod = 1;
  for (int l = 0; l < count; l++) {
    const float *fo = f + (size_t)(base + l) * KT_SF;
    const uint32_t *uo = u + (size_t)(base + l) * KT_SU;
    if (!A[l]) {
      for (int k = 0; k < KT_SF; k++)
        CHECK(fo[k] == KT_POISON, "%s lane %d returned early but f[%d] was "
              "written (%g)", where, l, k, fo[k]);
      for (int k = 0; k < KT_SU; k++)
        CHECK(uo[k] == (uint32_t)KT_POISON, "%s lane %d returned early but "
              "u[%d] was written (%u)", where, l, k, uo[k]);
      continue;
    }
    float v = in->x[base + l];
    double excl_sum = isum, excl_prod = iprod;
    isum += v;
    iprod *= in->p[base + l];
    /* NaN marks "undefined: source lane inactive" */
    double want[KT_SF];
    int src;
    want[0] = sum, want[1] = prod, want[2] = mn, want[3] = mx;
    want[4] = isum, want[5] = excl_sum, want[6] = iprod, want[7] = excl_prod;
    src = (l * 7 + 3) % 32;
    want[8] = src < count && A[src] ? in->x[base + src] : NAN;
    src = l ^ 5;
    want[9] = src < count && A[src] ? in->x[base + src] : NAN;
    src = l - 3;
    want[10] = src < 0 ? v : A[src] ? in->x[base + src] : NAN;
    src = l + 5;
    want[11] = src >= 32 ? v : (src < count && A[src]) ? in->x[base + src] : NAN;
    want[12] = 7 < count && A[7] ? in->x[base + 7] : NAN;
    want[13] = in->x[base + first];
    want[14] = 2 * sum;
    want[15] = excl_sum; /* the int prefix of integer-valued floats */
    static const char *fnames[KT_SF] = {
        "simd_sum", "simd_product", "simd_min", "simd_max",
        "simd_prefix_inclusive_sum", "simd_prefix_exclusive_sum",
        "simd_prefix_inclusive_product", "simd_prefix_exclusive_product",
        "simd_shuffle", "simd_shuffle_xor", "simd_shuffle_up",
        "simd_shuffle_down", "simd_broadcast", "simd_broadcast_first",
        "simd_sum(float2).y", "simd_prefix_exclusive_sum(int)"};
    for (int k = 0; k < KT_SF; k++)
      CHECK(want[k] != want[k] || fo[k] == want[k],
            "%s lane %d: %s = %g, expected %g", where, l, fnames[k], fo[k],
            want[k]);
    uint32_t wsrc = (l == 0) ? (31 < count && A[31] ? in->b[base + 31] : 0)
                             : in->b[base + l];
    bool check11 = l != 0 || (31 < count && A[31]);
    uint32_t uw[KT_SU] = {band,
                          bor,
                          bxor,
                          (uint32_t)ballot,
                          (uint32_t)(ballot >> 32),
                          all100,
                          all6,
                          any75,
                          l == first,
                          (uint32_t)(imax + 100),
                          bmin,
                          wsrc};
    static const char *unames[KT_SU] = {
        "simd_and", "simd_or", "simd_xor", "simd_ballot (low)",
        "simd_ballot (high)", "simd_all (true)", "simd_all", "simd_any",
        "simd_is_first", "simd_max(int)", "simd_min(uint)",
        "simd_shuffle_down(31)"};
    for (int k = 0; k < KT_SU; k++)
      CHECK((k == 11 && !check11) || uo[k] == uw[k],
            "%s lane %d: %s = %u (0x%08x), expected %u (0x%08x)", where, l,
            unames[k], uo[k], uo[k], uw[k], uw[k]);
  }
}

void test_conf_simd_functions(void) {
  kiln_kernel *k = KT_KERNEL("simd_functions", "x,p,b,act", "f,u",
                             "#include <metal_simdgroup>\n"
                             "using namespace metal;\n",
                             kt_simd_body, 0);
  const int n = 200, tg = 80;
  static const float pvals[6] = {1, -1, 2, -2, 0.5f, -0.5f};
  for (int round = 0; round < 2; round++) {
    kt_simd_in in;
    for (int i = 0; i < n; i++) {
      in.x[i] = (float)kt_randint(-8, 8);
      in.p[i] = pvals[kt_randint(0, 5)];
      in.b[i] = (uint32_t)kt_rand() | (uint32_t)kt_rand();
      /* group 0 fully active in round 0; elsewhere about 3 lanes in 4 */
      in.act[i] = (round == 0 && i < tg) ? 1 : (kt_randint(0, 3) != 0);
    }
    int64_t nn = n;
    kiln_array *in_a[4] = {kt_array(KILN_FLOAT32, 1, &nn, in.x),
                           kt_array(KILN_FLOAT32, 1, &nn, in.p),
                           kt_array(KILN_UINT32, 1, &nn, in.b),
                           kt_array(KILN_INT32, 1, &nn, in.act)};
    kt_call c;
    kt_call_init(&c, (uint32_t)n, 1, 1, (uint32_t)tg, 1, 1);
    c.launch.init_value = KT_POISON;
    for (int j = 0; j < 4; j++)
      kt_call_in(&c, in_a[j]);
    kt_call_out(&c, KILN_FLOAT32, 1, n * KT_SF, 0, 0);
    kt_call_out(&c, KILN_UINT32, 1, n * KT_SU, 0, 0);
    kiln_array *o[2];
    KT_RUN(k, &c, o);
    float *f = kt_read(o[0]);
    uint32_t *u = kt_read(o[1]);
    for (int g = 0; g * tg < n; g++) {
      int gsize = n - g * tg < tg ? n - g * tg : tg;
      for (int sg = 0; sg * 32 < gsize; sg++) {
        int count = gsize - sg * 32 < 32 ? gsize - sg * 32 : 32;
        char where[96];
        snprintf(where, sizeof where, "round %d group %d SIMD group %d "
                 "(%d lanes)", round, g, sg, count);
        kt_check_simd_group(&in, f, u, g * tg + sg * 32, count, where);
      }
    }
    free(f);
    free(u);
    kt_destroy_all(o, 2);
    kt_destroy_all(in_a, 4);
  }
  kiln_kernel_destroy(k);
}

/* ---- SIMD-group functions in divergent code --------------------------------
 *
 * Metal runs a SIMD-group function with the lanes that reach that very
 * call together: lanes on the other path of a branch, lanes that left a
 * loop, and lanes still before the call are inactive for it. Each test
 * below runs 200 threads in groups of 80 (SIMD groups of 32, 32, 16 and
 * 32, 32, 16 and 32, 8 lanes), with lane-dependent branches, and checks
 * every output against a host model of that rule. All values are small
 * integers, so sums are exact whatever the order. */

#define KT_DIV_N 200
#define KT_DIV_TG 80

/* Calls check(base, count, where) for every SIMD group of the grid. */
typedef void (*kt_div_check_fn)(const void *ctx, int base, int count,
                                const char *where);
static void kt_div_each_group(const void *ctx, kt_div_check_fn check) {
  for (int g = 0; g * KT_DIV_TG < KT_DIV_N; g++) {
    int gsize = KT_DIV_N - g * KT_DIV_TG < KT_DIV_TG ? KT_DIV_N - g * KT_DIV_TG
                                                     : KT_DIV_TG;
    for (int sg = 0; sg * 32 < gsize; sg++) {
      int count = gsize - sg * 32 < 32 ? gsize - sg * 32 : 32;
      char where[64];
      snprintf(where, sizeof where, "group %d SIMD group %d (%d lanes)", g,
               sg, count);
      check(ctx, g * KT_DIV_TG + sg * 32, count, where);
    }
  }
}

/* Runs `k` over KT_DIV_N threads with the int32 inputs given and one
 * float output of `per_thread` values per thread; returns them
 * (malloc'ed). */
static float *kt_div_run(kiln_kernel *k, int num_in, int32_t *const *in,
                         int per_thread) {
  int64_t n = KT_DIV_N;
  kiln_array *in_a[4] = {NULL, NULL, NULL, NULL};
  kt_call c;
  kt_call_init(&c, KT_DIV_N, 1, 1, KT_DIV_TG, 1, 1);
  c.launch.init_value = KT_POISON;
  for (int j = 0; j < num_in; j++) {
    in_a[j] = kt_array(KILN_INT32, 1, &n, in[j]);
    kt_call_in(&c, in_a[j]);
  }
  kt_call_out(&c, KILN_FLOAT32, 1, (int64_t)KT_DIV_N * per_thread, 0, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  float *f = kt_read(out);
  kiln_array_destroy(out);
  kt_destroy_all(in_a, num_in);
  return f;
}

#define KT_DIV_CHECK(got, want, where, lane, what)                            \
  CHECK((got) == (want), "%s lane %d: %s = %g, expected %g", where, lane,     \
        what, (double)(got), (double)(want))

/* -- 1. a call inside an if, then one after it ----------------------------- */

static const char kt_div_if_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "uint lane = thread_index_in_simdgroup;\n"
    "float a = 0.0f;\n"
    "if (lane < 8) a = simd_sum(1.0f);   // Metal: 8 in lanes 0-7\n"
    "float b = simd_max(float(lane));    // Metal: the last lane everywhere\n"
    "float c = -1.0f;\n"
    "if (m[i] != 0) c = simd_sum(float(v[i]));\n"
    "float d = simd_prefix_exclusive_sum(1.0f);\n"
    "out[i * 4 + 0] = a;\n"
    "out[i * 4 + 1] = b;\n"
    "out[i * 4 + 2] = c;\n"
    "out[i * 4 + 3] = d;\n";

typedef struct kt_div_ctx {
  const int32_t *m, *v, *t;
  const float *out;
} kt_div_ctx;

static void kt_div_if_check(const void *p, int base, int count,
                            const char *where) {
  const kt_div_ctx *x = p;
  double msum = 0;
  for (int l = 0; l < count; l++)
    if (x->m[base + l] != 0)
      msum += x->v[base + l];
  for (int l = 0; l < count; l++) {
    const float *o = x->out + (size_t)(base + l) * 4;
    KT_DIV_CHECK(o[0], l < 8 ? (count < 8 ? count : 8) : 0, where, l,
                 "simd_sum(1) under lane < 8");
    KT_DIV_CHECK(o[1], count - 1, where, l, "simd_max(lane) after the if");
    KT_DIV_CHECK(o[2], x->m[base + l] != 0 ? msum : -1, where, l,
                 "simd_sum(v) under m != 0");
    KT_DIV_CHECK(o[3], l, where, l, "simd_prefix_exclusive_sum(1) after");
  }
}

void test_conf_simd_divergent_if(void) {
  kiln_kernel *k = KT_KERNEL("simd_divergent_if", "m,v", "out", "",
                             kt_div_if_body, 0);
  int32_t m[KT_DIV_N], v[KT_DIV_N];
  for (int i = 0; i < KT_DIV_N; i++) {
    m[i] = kt_randint(0, 2) != 0;
    v[i] = (int32_t)kt_randint(-20, 20);
  }
  int32_t *in[2] = {m, v};
  float *out = kt_div_run(k, 2, in, 4);
  kt_div_ctx ctx = {m, v, NULL, out};
  kt_div_each_group(&ctx, kt_div_if_check);
  free(out);
  kiln_kernel_destroy(k);
}

/* -- 2. calls in both branches of an if/else ------------------------------- */

static const char kt_div_else_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "uint lane = thread_index_in_simdgroup;\n"
    "float x;\n"
    "if (lane < 16) x = simd_sum(1.0f); else x = simd_sum(100.0f);\n"
    "float y;\n"
    "if (m[i] != 0) {\n"
    "  y = simd_sum(float(v[i]));\n"
    "} else {\n"
    "  y = simd_max(float(v[i]));\n"
    "}\n"
    "float z = m[i] != 0 ? simd_broadcast_first(float(lane))\n"
    "                    : simd_product(2.0f);\n"
    "out[i * 3 + 0] = x;\n"
    "out[i * 3 + 1] = y;\n"
    "out[i * 3 + 2] = z;\n";

static void kt_div_else_check(const void *p, int base, int count,
                              const char *where) {
  const kt_div_ctx *x = p;
  double sum = 0, mx = -1e30, prod = 1;
  int first = -1;
  for (int l = 0; l < count; l++) {
    int32_t v = x->v[base + l];
    if (x->m[base + l] != 0) {
      sum += v;
      first = first < 0 ? l : first;
    } else {
      mx = v > mx ? v : mx;
      prod *= 2;
    }
  }
  int low = count < 16 ? count : 16, high = count - low;
  for (int l = 0; l < count; l++) {
    const float *o = x->out + (size_t)(base + l) * 3;
    bool on = x->m[base + l] != 0;
    KT_DIV_CHECK(o[0], l < 16 ? low : 100.0 * high, where, l,
                 "if (lane < 16) simd_sum(1) else simd_sum(100)");
    KT_DIV_CHECK(o[1], on ? sum : mx, where, l,
                 "if (m) simd_sum(v) else simd_max(v)");
    KT_DIV_CHECK(o[2], on ? first : prod, where, l,
                 "m ? simd_broadcast_first(lane) : simd_product(2)");
  }
}

void test_conf_simd_divergent_else(void) {
  kiln_kernel *k = KT_KERNEL("simd_divergent_else", "m,v", "out", "",
                             kt_div_else_body, 0);
  int32_t m[KT_DIV_N], v[KT_DIV_N];
  for (int i = 0; i < KT_DIV_N; i++) {
    m[i] = kt_randint(0, 1);
    v[i] = (int32_t)kt_randint(-20, 20);
  }
  int32_t *in[2] = {m, v};
  float *out = kt_div_run(k, 2, in, 3);
  kt_div_ctx ctx = {m, v, NULL, out};
  kt_div_each_group(&ctx, kt_div_else_check);
  free(out);
  kiln_kernel_destroy(k);
}

/* -- 3. a loop with a lane-dependent trip count ---------------------------- */

/* Iteration k of the loop runs with the lanes whose trip count t > k. */
static const char kt_div_loop_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float s = 0.0f, cnt = 0.0f, low = 0.0f;\n"
    "for (int k = 0; k < t[i]; ++k) {\n"
    "  s += simd_sum(float((k + 1) * v[i]));\n"
    "  cnt += float(popcount(uint(static_cast<simd_vote::vote_t>(\n"
    "      simd_ballot(true)))));\n"
    "  low += simd_min(float(v[i] + k));\n"
    "}\n"
    "float after = simd_sum(1.0f);\n"
    "out[i * 4 + 0] = s;\n"
    "out[i * 4 + 1] = cnt;\n"
    "out[i * 4 + 2] = low;\n"
    "out[i * 4 + 3] = after;\n";

static void kt_div_loop_check(const void *p, int base, int count,
                              const char *where) {
  const kt_div_ctx *x = p;
  double sum[8] = {0}, n[8] = {0}, mn[8];
  for (int k = 0; k < 8; k++) {
    mn[k] = 1e30;
    for (int l = 0; l < count; l++) {
      int32_t v = x->v[base + l];
      if (x->t[base + l] <= k)
        continue;
      sum[k] += (double)(k + 1) * v;
      n[k] += 1;
      mn[k] = v + k < mn[k] ? v + k : mn[k];
    }
  }
  for (int l = 0; l < count; l++) {
    const float *o = x->out + (size_t)(base + l) * 4;
    double s = 0, c = 0, low = 0;
    for (int k = 0; k < x->t[base + l]; k++)
      s += sum[k], c += n[k], low += mn[k];
    KT_DIV_CHECK(o[0], s, where, l, "sum of simd_sum((k+1)*v) in the loop");
    KT_DIV_CHECK(o[1], c, where, l, "sum of the ballots' popcounts");
    KT_DIV_CHECK(o[2], low, where, l, "sum of simd_min(v+k) in the loop");
    KT_DIV_CHECK(o[3], count, where, l, "simd_sum(1) after the loop");
  }
}

void test_conf_simd_divergent_loop(void) {
  kiln_kernel *k = KT_KERNEL("simd_divergent_loop", "t,v", "out", "",
                             kt_div_loop_body, 0);
  int32_t t[KT_DIV_N], v[KT_DIV_N];
  for (int i = 0; i < KT_DIV_N; i++) {
    t[i] = (int32_t)kt_randint(0, 6);
    v[i] = (int32_t)kt_randint(-9, 9);
  }
  int32_t *in[2] = {t, v};
  float *out = kt_div_run(k, 2, in, 4);
  kt_div_ctx ctx = {NULL, v, t, out};
  kt_div_each_group(&ctx, kt_div_loop_check);
  free(out);
  kiln_kernel_destroy(k);
}

/* -- 4. nested ifs --------------------------------------------------------- */

/* m holds three condition bits per thread. */
static const char kt_div_nested_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "int v = m[i] >> 3;\n"
    "float r0 = -1.0f, r1 = -1.0f, r2 = -1.0f, r3 = -1.0f, r4 = -1.0f;\n"
    "if (m[i] & 1) {\n"
    "  r0 = simd_sum(float(v));\n"
    "  if (m[i] & 2) {\n"
    "    r1 = simd_sum(float(v));\n"
    "    if (m[i] & 4)\n"
    "      r2 = simd_is_first() ? 1.0f : 0.0f;\n"
    "  } else {\n"
    "    r1 = simd_max(float(v));\n"
    "  }\n"
    "  simdgroup_barrier(mem_flags::mem_none);\n"
    "  r3 = simd_sum(1.0f);\n"
    "} else if (m[i] & 2) {\n"
    "  r1 = simd_min(float(v));\n"
    "} else {\n"
    "  r1 = simd_prefix_inclusive_sum(float(v));\n"
    "}\n"
    "r4 = simd_sum(float(v));\n"
    "out[i * 5 + 0] = r0;\n"
    "out[i * 5 + 1] = r1;\n"
    "out[i * 5 + 2] = r2;\n"
    "out[i * 5 + 3] = r3;\n"
    "out[i * 5 + 4] = r4;\n";

/* Which branch of the nest a thread takes, for r1. */
static int kt_div_nested_path(int32_t m) {
  return (m & 1) ? ((m & 2) ? 0 : 1) : ((m & 2) ? 2 : 3);
}

static void kt_div_nested_check(const void *p, int base, int count,
                                const char *where) {
  const kt_div_ctx *x = p;
  double outer = 0, all = 0, nouter = 0, r1[4] = {0, -1e30, 1e30, 0};
  int first4 = -1;
  for (int l = 0; l < count; l++) {
    int32_t m = x->m[base + l], v = m >> 3;
    int path = kt_div_nested_path(m);
    all += v;
    if (m & 1)
      outer += v, nouter += 1;
    if (path == 0)
      r1[0] += v;
    if (path == 0 && (m & 4) && first4 < 0)
      first4 = l;
    if (path == 1)
      r1[1] = v > r1[1] ? v : r1[1];
    if (path == 2)
      r1[2] = v < r1[2] ? v : r1[2];
  }
  double prefix = 0; /* the else-else branch's inclusive prefix so far */
  for (int l = 0; l < count; l++) {
    const float *o = x->out + (size_t)(base + l) * 5;
    int32_t m = x->m[base + l], v = m >> 3;
    int path = kt_div_nested_path(m);
    if (path == 3)
      prefix += v;
    KT_DIV_CHECK(o[0], (m & 1) ? outer : -1, where, l,
                 "simd_sum(v) in the outer if");
    KT_DIV_CHECK(o[1], path == 3 ? prefix : r1[path], where, l,
                 "r1 (sum / max / min / prefix by branch)");
    KT_DIV_CHECK(o[2], path == 0 && (m & 4) ? (l == first4 ? 1 : 0) : -1,
                 where, l, "simd_is_first() three ifs deep");
    KT_DIV_CHECK(o[3], (m & 1) ? nouter : -1, where, l,
                 "simd_sum(1) after the inner if/else");
    KT_DIV_CHECK(o[4], all, where, l, "simd_sum(v) after the nest");
  }
}

void test_conf_simd_divergent_nested(void) {
  kiln_kernel *k = KT_KERNEL("simd_divergent_nested", "m", "out", "",
                             kt_div_nested_body, 0);
  int32_t m[KT_DIV_N];
  for (int i = 0; i < KT_DIV_N; i++)
    m[i] = (int32_t)(kt_randint(0, 7) | kt_randint(-9, 9) * 8);
  int32_t *in[1] = {m};
  float *out = kt_div_run(k, 1, in, 5);
  kt_div_ctx ctx = {m, NULL, NULL, out};
  kt_div_each_group(&ctx, kt_div_nested_check);
  free(out);
  kiln_kernel_destroy(k);
}
