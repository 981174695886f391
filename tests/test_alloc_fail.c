/*
 * Allocation failure injection (SQLite's fault tests): a malloc hook fails
 * the k-th call, for k = 1, 2, ... until the operation succeeds. Every
 * failing call must return KILN_ERROR_OUT_OF_MEMORY with a message, leave
 * its out-parameter alone, and leak nothing (the hook counts live blocks;
 * ASan checks too when the suite is built with it).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static atomic_long kt_calls;
static atomic_long kt_fail_nth; /* 0: never fail */
static atomic_long kt_live;

/* Only allocations made by the test's own thread count, so the k-th call
 * is deterministic: kiln's stream and worker threads allocate on their own
 * schedule (their failures surface later as asynchronous errors). */
static _Thread_local bool kt_armed;

static bool kt_should_fail(void) {
  if (!kt_armed)
    return false;
  long c = atomic_fetch_add(&kt_calls, 1) + 1;
  return c == atomic_load(&kt_fail_nth);
}

static void *kt_hook_malloc(size_t n) {
  if (kt_should_fail())
    return NULL;
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&kt_live, 1);
  return p;
}

static void *kt_hook_realloc(void *p, size_t n) {
  if (kt_should_fail())
    return NULL;
  void *q = realloc(p, n);
  if (q && !p)
    atomic_fetch_add(&kt_live, 1);
  return q;
}

static void kt_hook_free(void *p) {
  if (p)
    atomic_fetch_sub(&kt_live, 1);
  free(p);
}

/* Must be the first kiln call of the process (each test is a fresh
 * child). */
static void kt_install_hooks(void) {
  kiln_alloc_hooks h = {kt_hook_malloc, kt_hook_realloc, kt_hook_free};
  CHECK_OK(kiln_set_alloc_hooks(&h));
}

/* Lets asynchronous releases finish and empties the allocator's cache so
 * live block counts compare. */
static long kt_settle(void) {
  CHECK_OK(kiln_synchronize(NULL));
  CHECK_OK(kiln_memory_clear_cache(kt_device()));
  return atomic_load(&kt_live);
}

typedef kiln_status (*kt_op_fn)(void *ctx, void **out);
typedef void (*kt_undo_fn)(void *obj);
/* Optional steps run around each attempt, outside the failure window
 * (e.g. a fresh kernel object, so its own cache of specialisations, kept
 * until it is destroyed, does not count as a leak). */
typedef void (*kt_step_fn)(void *ctx);
static kt_step_fn kt_before, kt_after;

/* Runs op with the k-th allocation failing for k = 1.. until it succeeds;
 * returns the number of allocations the operation needed. */
static long kt_fail_each(const char *what, kt_op_fn op, kt_undo_fn undo,
                         void *ctx, const char *api) {
  for (long k = 1; k < 100000; k++) {
    long live0 = kt_settle();
    if (kt_before)
      kt_before(ctx);
    void *obj = &kt_calls; /* sentinel: must be left alone on failure */
    kiln_clear_error();
    atomic_store(&kt_calls, 0);
    atomic_store(&kt_fail_nth, k);
    kt_armed = true;
    kiln_status s = op(ctx, &obj);
    kt_armed = false;
    atomic_store(&kt_fail_nth, 0);
    if (s == KILN_OK) {
      CHECK(obj != &kt_calls && obj != NULL, "%s: success gives an object",
            what);
      undo(obj);
      if (kt_after)
        kt_after(ctx);
      return k - 1;
    }
    CHECK(s == KILN_ERROR_OUT_OF_MEMORY,
          "%s with allocation %ld failing returned %s, expected out of "
          "memory",
          what, k, kiln_status_string(s));
    CHECK(strncmp(kiln_last_error(), api, strlen(api)) == 0,
          "%s, allocation %ld failing: the message names %s", what, k, api);
    CHECK(obj == &kt_calls || obj == NULL,
          "%s, allocation %ld failing: out-parameter changed", what, k);
    if (kt_after)
      kt_after(ctx);
    long live1 = kt_settle();
    CHECK(live1 == live0,
          "%s with allocation %ld failing leaked %ld host block(s)", what, k,
          live1 - live0);
  }
  kt_fail_at(__FILE__, __LINE__, "succeeded", "%s never succeeded", what);
}

static void kt_undo_array(void *obj) { kiln_array_destroy(obj); }
static void kt_undo_kernel(void *obj) { kiln_kernel_destroy(obj); }

static kiln_status kt_op_create(void *ctx, void **out) {
  (void)ctx;
  int64_t shape[3] = {4, 5, 6};
  return kiln_array_create(kt_device(), KILN_FLOAT32, 3, shape,
                           (kiln_array **)out);
}

void test_alloc_fail_array_create(void) {
  kt_install_hooks();
  void *warm;
  CHECK_OK(kt_op_create(NULL, &warm)); /* lazy initialisation first */
  kiln_array_destroy(warm);
  long n = kt_fail_each("kiln_array_create", kt_op_create, kt_undo_array,
                        NULL, "[kiln_array_create]");
  CHECK(n >= 1, "creating an array allocates (%ld)", n);
}

static kiln_status kt_op_view(void *ctx, void **out) {
  int64_t shape[2] = {5, 4}, strides[2] = {1, -5};
  return kiln_array_view(ctx, 2, shape, strides, 15, (kiln_array **)out);
}

void test_alloc_fail_array_view(void) {
  kt_install_hooks();
  int64_t shape[2] = {4, 5};
  kiln_array *base = NULL;
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT64, 2, shape, &base));
  kt_fail_each("kiln_array_view", kt_op_view, kt_undo_array, base,
               "[kiln_array_view]");
  kiln_array_destroy(base);
}

static kiln_status kt_op_from_host(void *ctx, void **out) {
  int64_t shape[2] = {8, 9};
  return kiln_array_from_host(kt_device(), KILN_INT32, 2, shape, ctx,
                              (kiln_array **)out);
}

void test_alloc_fail_array_from_host(void) {
  kt_install_hooks();
  int32_t data[72];
  kt_random_fill(KILN_INT32, data, 72, -1000, 1000);
  void *warm;
  CHECK_OK(kt_op_from_host(data, &warm));
  kiln_array_destroy(warm);
  kt_fail_each("kiln_array_from_host", kt_op_from_host, kt_undo_array, data,
               "[kiln_array_from_host]");
  /* And the data made it. */
  kiln_array *a;
  CHECK_OK(kt_op_from_host(data, (void **)&a));
  int32_t got[72];
  CHECK_OK(kiln_array_to_host(a, got, sizeof got));
  CHECK(memcmp(got, data, sizeof got) == 0, "contents");
  kiln_array_destroy(a);
}

static const char kt_af_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "threadgroup float t[64];\n"
    "t[thread_index_in_threadgroup] = a[i];\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "out[i] = t[63 - thread_index_in_threadgroup] * scale;\n";

static kiln_status kt_op_kernel(void *ctx, void **out) {
  (void)ctx;
  kiln_kernel_desc d;
  kt_names nm;
  kt_desc(&d, &nm, "alloc_fail_reverse", "a,scale", "out",
          "#include <metal_stdlib>\nusing namespace metal;\n", kt_af_body, 0);
  return kiln_kernel_create(&d, (kiln_kernel **)out);
}

void test_alloc_fail_kernel_create(void) {
  kt_install_hooks();
  kt_device();
  kt_fail_each("kiln_kernel_create", kt_op_kernel, kt_undo_kernel, NULL,
               "[kiln_kernel_create]");
}

typedef struct kt_launch_ctx {
  kiln_kernel *kernel;
  kiln_array *a, *scale;
} kt_launch_ctx;

static kiln_status kt_op_launch(void *ctx, void **out) {
  kt_launch_ctx *l = ctx;
  kt_call c;
  kt_call_init(&c, 128, 1, 1, 64, 1, 1);
  kt_call_in(&c, l->a);
  kt_call_in(&c, l->scale);
  kt_call_out(&c, KILN_FLOAT32, 1, 128, 0, 0);
  return kt_try_run(l->kernel, &c, (kiln_array **)out);
}

static void kt_new_kernel(void *ctx) {
  CHECK_OK(kt_op_kernel(NULL, (void **)&((kt_launch_ctx *)ctx)->kernel));
}

static void kt_drop_kernel(void *ctx) {
  kiln_kernel_destroy(((kt_launch_ctx *)ctx)->kernel);
  ((kt_launch_ctx *)ctx)->kernel = NULL;
}

/* Launches of a kernel that is already built (in kiln's memory cache, by a
 * fresh kernel object each time, so the whole launch path is exercised
 * short of the compiler). */
void test_alloc_fail_kernel_launch(void) {
  kt_install_hooks();
  float a[128];
  kt_random_fill(KILN_FLOAT32, a, 128, -3, 3);
  kt_launch_ctx l;
  l.a = kt_random_1d(KILN_FLOAT32, 128, -3, 3, NULL);
  CHECK_OK(kiln_array_copy_from_host(l.a, a, sizeof a));
  l.scale = kt_scalar(KILN_FLOAT32, 0.5);
  CHECK_OK(kt_op_kernel(NULL, (void **)&l.kernel));
  void *warm;
  CHECK_OK(kt_op_launch(&l, &warm)); /* compiles once */
  kiln_array_destroy(warm);
  kiln_kernel_destroy(l.kernel);
  for (int round = 0; round < 2; round++) {
    /* round 0: a fresh kernel object per attempt; round 1: one object
     * whose specialisation is already known */
    if (round == 0) {
      kt_before = kt_new_kernel;
      kt_after = kt_drop_kernel;
    }
    kt_fail_each("kiln_kernel_launch", kt_op_launch, kt_undo_array, &l,
                 "[kiln_kernel_launch]");
    kt_before = kt_after = NULL;
    if (round == 0) {
      CHECK_OK(kt_op_kernel(NULL, (void **)&l.kernel));
      void *w;
      CHECK_OK(kt_op_launch(&l, &w));
      kiln_array_destroy(w);
    }
    kiln_array *out;
    CHECK_OK(kt_op_launch(&l, (void **)&out));
    float got[128];
    CHECK_OK(kiln_array_to_host(out, got, sizeof got));
    for (int i = 0; i < 128; i++) {
      int j = (i / 64) * 64 + 63 - i % 64;
      CHECK(got[i] == a[j] * 0.5f, "out[%d] = %g, expected %g", i, got[i],
            a[j] * 0.5f);
    }
    kiln_array_destroy(out);
    if (round == 1)
      kiln_kernel_destroy(l.kernel);
  }
  kiln_array_destroy(l.scale);
  kiln_array_destroy(l.a);
  CHECK_OK(kiln_synchronize(NULL));
}
