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
