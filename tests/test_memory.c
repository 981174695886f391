/*
 * The caching allocator seen through kiln_memory_*: statistics, peak,
 * reuse of cached blocks, clear_cache, and the memory limit.
 */
#include <string.h>

#include "check.h"

#define KT_MIB ((uint64_t)1 << 20)

static kiln_memory_stats kt_stats(void) {
  kiln_memory_stats s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK_OK(kiln_memory_get_stats(kt_device(), &s));
  CHECK(s.active_bytes + s.cached_bytes <= s.memory_limit,
        "active + cached <= limit");
  CHECK(s.cached_bytes <= s.cache_limit, "cached <= cache limit");
  CHECK(s.peak_bytes >= s.active_bytes, "peak >= active");
  return s;
}

static kiln_array *kt_bytes_array(uint64_t bytes) {
  int64_t n = (int64_t)bytes;
  kiln_array *a = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_UINT8, 1, &n, &a));
  return a;
}

void test_memory_stats(void) {
  kiln_memory_stats s0 = kt_stats();
  CHECK(s0.memory_limit > 0 && s0.cache_limit > 0, "limits are set");
  kiln_array *a = kt_bytes_array(3 * KT_MIB);
  kiln_memory_stats s1 = kt_stats();
  CHECK(s1.active_bytes >= s0.active_bytes + 3 * KT_MIB,
        "active grew by at least 3 MiB (%llu -> %llu)",
        (unsigned long long)s0.active_bytes,
        (unsigned long long)s1.active_bytes);
  CHECK(s1.active_bytes <= s0.active_bytes + 7 * KT_MIB,
        "rounding stays reasonable (%llu)",
        (unsigned long long)(s1.active_bytes - s0.active_bytes));
  CHECK(s1.peak_bytes >= s1.active_bytes, "peak");
  kiln_array *b = kt_bytes_array(1 * KT_MIB);
  kiln_memory_stats s2 = kt_stats();
  kiln_array_destroy(a);
  kiln_array_destroy(b);
  CHECK_OK(kiln_synchronize(kt_device()));
  kiln_memory_stats s3 = kt_stats();
  CHECK(s3.active_bytes == s0.active_bytes, "active back to %llu, is %llu",
        (unsigned long long)s0.active_bytes,
        (unsigned long long)s3.active_bytes);
  CHECK(s3.peak_bytes >= s2.active_bytes, "peak remembers the high point");
  CHECK(s3.cached_bytes >= s0.cached_bytes + 4 * KT_MIB,
        "freed blocks are cached (%llu)", (unsigned long long)s3.cached_bytes);
  CHECK_OK(kiln_memory_reset_peak(kt_device()));
  kiln_memory_stats s4 = kt_stats();
  CHECK(s4.peak_bytes == s4.active_bytes, "reset peak = active");
}

void test_memory_cache_reuse(void) {
  kiln_array *a = kt_bytes_array(2 * KT_MIB);
  kiln_array_destroy(a);
  CHECK_OK(kiln_synchronize(kt_device()));
  kiln_memory_stats s1 = kt_stats();
  CHECK(s1.cached_bytes >= 2 * KT_MIB, "cached after destroy");
  a = kt_bytes_array(2 * KT_MIB);
  kiln_memory_stats s2 = kt_stats();
  CHECK(s2.cached_bytes + 2 * KT_MIB <= s1.cached_bytes,
        "the cached block was reused (cached %llu -> %llu)",
        (unsigned long long)s1.cached_bytes,
        (unsigned long long)s2.cached_bytes);
  kiln_array_destroy(a);
  CHECK_OK(kiln_synchronize(kt_device()));
  CHECK_OK(kiln_memory_clear_cache(kt_device()));
  kiln_memory_stats s3 = kt_stats();
  CHECK(s3.cached_bytes == 0, "clear_cache empties the cache (%llu)",
        (unsigned long long)s3.cached_bytes);
  uint64_t prev = 0;
  CHECK_OK(kiln_memory_set_cache_limit(kt_device(), 0, &prev));
  CHECK(prev == s3.cache_limit, "previous cache limit returned");
  a = kt_bytes_array(KT_MIB);
  kiln_array_destroy(a);
  CHECK_OK(kiln_synchronize(kt_device()));
  CHECK(kt_stats().cached_bytes == 0, "cache limit 0 caches nothing");
  CHECK_OK(kiln_memory_set_cache_limit(kt_device(), prev, NULL));
}

void test_memory_limit(void) {
  kiln_memory_stats s0 = kt_stats();
  uint64_t prev = 0;
  CHECK_OK(kiln_memory_set_limit(kt_device(), s0.active_bytes + 4 * KT_MIB,
                                 &prev));
  CHECK(prev == s0.memory_limit, "previous limit returned");
  kiln_array *big = NULL;
  int64_t n = (int64_t)(8 * KT_MIB);
  kiln_clear_error();
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_UINT8, 1, &n, &big),
               KILN_ERROR_OUT_OF_MEMORY);
  CHECK(big == NULL, "no array");
  CHECK(strncmp(kiln_last_error(), "[kiln_array_create] ", 20) == 0,
        "the message names the call");
  CHECK_ERR_HAS("limit");
  /* Under the limit still works; a cached block gives way under pressure. */
  kiln_array *a = kt_bytes_array(2 * KT_MIB);
  kiln_array_destroy(a);
  CHECK_OK(kiln_synchronize(kt_device()));
  a = kt_bytes_array(3 * KT_MIB); /* 2 cached + 3 > 4: cache is emptied */
  kiln_memory_stats s1 = kt_stats();
  CHECK(s1.active_bytes + s1.cached_bytes <= s1.memory_limit, "limit kept");
  /* A kernel whose output does not fit is refused before it runs. */
  kiln_kernel *k = KT_KERNEL("big_output", "", "out", NULL,
                             "out[thread_position_in_grid.x] = 1.0f;\n", 0);
  kt_call c;
  kt_call_init(&c, 32, 1, 1, 32, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 2 * (int64_t)KT_MIB, 0, 0);
  kiln_array *out = (kiln_array *)&c;
  CHECK_STATUS(kt_try_run(k, &c, &out), KILN_ERROR_OUT_OF_MEMORY);
  CHECK(out == (kiln_array *)&c || out == NULL, "no output on failure");
  kiln_array_destroy(a);
  CHECK_OK(kiln_memory_set_limit(kt_device(), prev, NULL));
  CHECK_OK(kiln_array_create(kt_device(), KILN_UINT8, 1, &n, &big));
  kiln_array_destroy(big);
  /* The library is still usable: the same kernel runs now. */
  kiln_array *ok;
  kt_call_init(&c, 32, 1, 1, 32, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 32, 0, 0);
  KT_RUN(k, &c, &ok);
  float got[32];
  CHECK_OK(kiln_array_to_host(ok, got, sizeof got));
  for (int i = 0; i < 32; i++)
    CHECK(got[i] == 1.0f, "out[%d]", i);
  kiln_array_destroy(ok);
  kiln_kernel_destroy(k);
}
