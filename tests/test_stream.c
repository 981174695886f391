/*
 * Streams: in-order execution, host callbacks and the status they see,
 * automatic ordering between streams (read-after-write and
 * write-after-read), synchronize-all, destroying a busy stream, and the
 * per-thread default streams.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define KT_N 64
/* Iterations of the slow kernel's dependent fma chain per thread: tens of
 * milliseconds for the whole launch on a laptop core. */
#define KT_SLOW_ITERS 3000000

/* y = 2x + 1, after a long dependent loop; the index of the read of x
 * depends on the loop's result, so the read happens at the end. */
static const char kt_slow_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "float acc = 0.0f;\n"
    "for (int k = 0; k < iters; ++k)\n"
    "  acc = fma(acc, 0.5f, 1.0f);\n"
    "uint j = (acc > 1e30f) ? 0u : i;\n"
    "y[i] = x[j] * 2.0f + 1.0f;\n";

static kiln_kernel *kt_slow_kernel(void) {
  return KT_KERNEL("slow_affine", "x,iters", "y", NULL, kt_slow_body, 0);
}

static kiln_kernel *kt_minus_one_kernel(void) {
  return KT_KERNEL("minus_one", "y", "z", NULL,
                   "uint i = thread_position_in_grid.x;\n"
                   "z[i] = y[i] - 1.0f;\n",
                   0);
}

/* Launches the slow kernel on `stream` and returns y. */
static kiln_array *kt_slow(kiln_kernel *k, kiln_array *x, int iters,
                           kiln_stream *stream) {
  kt_call c;
  kt_call_init(&c, KT_N, 1, 1, 32, 1, 1);
  kiln_array *it = kt_scalar(KILN_INT32, iters);
  kt_call_in(&c, x);
  kt_call_in(&c, it);
  kt_call_out(&c, KILN_FLOAT32, 1, KT_N, 0, 0);
  c.launch.stream = stream;
  kiln_array *y;
  KT_RUN(k, &c, &y);
  kiln_array_destroy(it); /* kiln keeps it alive until the launch ran */
  return y;
}

static kiln_array *kt_minus_one(kiln_kernel *k, kiln_array *y,
                                kiln_stream *stream) {
  kt_call c;
  kt_call_init(&c, KT_N, 1, 1, 32, 1, 1);
  kt_call_in(&c, y);
  kt_call_out(&c, KILN_FLOAT32, 1, KT_N, 0, 0);
  c.launch.stream = stream;
  kiln_array *z;
  KT_RUN(k, &c, &z);
  return z;
}

static void kt_expect_affine(kiln_array *y, const float *x, float sub,
                             const char *what) {
  float got[KT_N];
  CHECK_OK(kiln_array_to_host(y, got, sizeof got));
  for (int i = 0; i < KT_N; i++) {
    float want = (x[i] * 2.0f + 1.0f) - sub;
    CHECK(got[i] == want, "%s[%d] = %g, expected %g", what, i, got[i], want);
  }
}

typedef struct kt_order {
  atomic_int next;
  int seen[8];
  kiln_status status[8];
} kt_order;

typedef struct kt_cb {
  kt_order *order;
  int id;
} kt_cb;

static void kt_record(void *user, kiln_status status) {
  kt_cb *cb = user;
  int slot = atomic_fetch_add(&cb->order->next, 1);
  if (slot < 8) {
    cb->order->seen[slot] = cb->id;
    cb->order->status[slot] = status;
  }
}

void test_stream_in_order(void) {
  kiln_kernel *slow = kt_slow_kernel(), *m1 = kt_minus_one_kernel();
  float x[KT_N];
  kt_random_fill(KILN_FLOAT32, x, KT_N, -10, 10);
  int64_t n = KT_N;
  kiln_array *xa = kt_array(KILN_FLOAT32, 1, &n, x);
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &s));
  CHECK(kiln_stream_device(s) == kt_device(), "stream device");
  kt_order order = {0};
  kt_cb cbs[4] = {{&order, 1}, {&order, 2}, {&order, 3}, {&order, 4}};
  CHECK_OK(kiln_stream_add_callback(s, kt_record, &cbs[0]));
  kiln_array *y = kt_slow(slow, xa, KT_SLOW_ITERS, s);
  CHECK_OK(kiln_stream_add_callback(s, kt_record, &cbs[1]));
  kiln_array *z = kt_minus_one(m1, y, s);
  CHECK_OK(kiln_stream_add_callback(s, kt_record, &cbs[2]));
  kiln_array *z2 = kt_minus_one(m1, z, s);
  CHECK_OK(kiln_stream_add_callback(s, kt_record, &cbs[3]));
  CHECK_OK(kiln_stream_synchronize(s));
  CHECK(atomic_load(&order.next) == 4, "4 callbacks ran");
  for (int i = 0; i < 4; i++) {
    CHECK(order.seen[i] == i + 1, "callback %d ran in position %d",
          order.seen[i], i);
    CHECK(order.status[i] == KILN_OK, "callback status OK");
  }
  kt_expect_affine(y, x, 0.0f, "y");
  kt_expect_affine(z, x, 1.0f, "z");
  float got[KT_N];
  CHECK_OK(kiln_array_to_host(z2, got, sizeof got));
  for (int i = 0; i < KT_N; i++)
    CHECK(got[i] == ((x[i] * 2.0f + 1.0f) - 1.0f) - 1.0f, "z2[%d]", i);
  kiln_array_destroy(z2);
  kiln_array_destroy(z);
  kiln_array_destroy(y);
  kiln_array_destroy(xa);
  CHECK_OK(kiln_stream_destroy(s));
  kiln_kernel_destroy(m1);
  kiln_kernel_destroy(slow);
}

/* On the CPU a barrier reached from a kernel that kiln runs as a plain
 * loop (the name is hidden from kiln's scan by token pasting) is an
 * asynchronous launch error: callbacks and synchronize must report it. */
void test_stream_callback_error(void) {
  if (strcmp(kt_device_name(), "cpu") != 0)
    kt_skip("the hidden-barrier error is specific to the CPU backend");
  kiln_kernel *k = KT_KERNEL(
      "hidden_barrier", "", "out", "#define KT_CAT(a, b) a##b\n",
      "uint i = thread_position_in_grid.x;\n"
      "KT_CAT(threadgroup_, barrier)(mem_flags::mem_none);\n"
      "out[i] = 1.0f;\n",
      0);
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &s));
  kt_call c;
  kt_call_init(&c, 64, 1, 1, 64, 1, 1);
  kt_call_out(&c, KILN_FLOAT32, 1, 64, 0, 0);
  c.launch.stream = s;
  kiln_array *out;
  KT_RUN(k, &c, &out);
  kt_order order = {0};
  kt_cb cb = {&order, 1};
  CHECK_OK(kiln_stream_add_callback(s, kt_record, &cb));
  kiln_clear_error();
  CHECK_STATUS(kiln_stream_synchronize(s), KILN_ERROR_LAUNCH);
  CHECK_ERR_HAS("hidden_barrier");
  CHECK(atomic_load(&order.next) == 1, "the callback ran");
  CHECK(order.status[0] == KILN_ERROR_LAUNCH,
        "the callback saw %s, expected the launch error",
        kiln_status_string(order.status[0]));
  CHECK_OK(kiln_stream_synchronize(s)); /* the error was cleared */
  kiln_array_destroy(out);
  /* The stream still works. */
  kiln_kernel *m1 = kt_minus_one_kernel();
  float y[KT_N];
  kt_random_fill(KILN_FLOAT32, y, KT_N, -4, 4);
  int64_t n = KT_N;
  kiln_array *ya = kt_array(KILN_FLOAT32, 1, &n, y);
  kiln_array *z = kt_minus_one(m1, ya, s);
  float got[KT_N];
  CHECK_OK(kiln_array_to_host(z, got, sizeof got));
  for (int i = 0; i < KT_N; i++)
    CHECK(got[i] == y[i] - 1.0f, "after the error, z[%d]", i);
  CHECK_OK(kiln_stream_synchronize(s));
  kiln_array_destroy(z);
  kiln_array_destroy(ya);
  CHECK_OK(kiln_stream_destroy(s));
  kiln_kernel_destroy(m1);
  kiln_kernel_destroy(k);
}

void test_stream_cross_read_after_write(void) {
  kiln_kernel *slow = kt_slow_kernel(), *m1 = kt_minus_one_kernel();
  kiln_stream *a = NULL, *b = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &a));
  CHECK_OK(kiln_stream_create(kt_device(), &b));
  float x[KT_N];
  int64_t n = KT_N;
  for (int round = 0; round < 3; round++) {
    kt_random_fill(KILN_FLOAT32, x, KT_N, -10, 10);
    kiln_array *xa = kt_array(KILN_FLOAT32, 1, &n, x);
    kiln_array *y = kt_slow(slow, xa, KT_SLOW_ITERS, a); /* slow write on A */
    kiln_array *z = kt_minus_one(m1, y, b);              /* read on B */
    kt_expect_affine(z, x, 1.0f, "z read on stream B");
    kiln_array_destroy(z);
    kiln_array_destroy(y);
    kiln_array_destroy(xa);
  }
  CHECK_OK(kiln_stream_synchronize(a));
  CHECK_OK(kiln_stream_synchronize(b));
  CHECK_OK(kiln_stream_destroy(a));
  CHECK_OK(kiln_stream_destroy(b));
  kiln_kernel_destroy(m1);
  kiln_kernel_destroy(slow);
}

void test_stream_cross_write_after_read(void) {
  kiln_kernel *slow = kt_slow_kernel();
  kiln_stream *a = NULL, *b = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &a));
  CHECK_OK(kiln_stream_create(kt_device(), &b));
  float x[KT_N];
  int64_t n = KT_N;
  for (int round = 0; round < 3; round++) {
    kt_random_fill(KILN_FLOAT32, x, KT_N, -10, 10);
    kiln_array *xa = kt_array(KILN_FLOAT32, 1, &n, x);
    kiln_array *y = kt_slow(slow, xa, KT_SLOW_ITERS, a); /* slow read on A */
    CHECK_OK(kiln_array_fill(xa, 100.0, b));             /* write on B */
    kt_expect_affine(y, x, 0.0f, "y (x overwritten on B too early?)");
    float after[KT_N];
    CHECK_OK(kiln_array_to_host(xa, after, sizeof after));
    for (int i = 0; i < KT_N; i++)
      CHECK(after[i] == 100.0f, "the fill on B happened, x[%d]", i);
    kiln_array_destroy(y);
    kiln_array_destroy(xa);
  }
  CHECK_OK(kiln_stream_synchronize(a));
  CHECK_OK(kiln_stream_synchronize(b));
  CHECK_OK(kiln_stream_destroy(a));
  CHECK_OK(kiln_stream_destroy(b));
  kiln_kernel_destroy(slow);
}

void test_stream_synchronize_all(void) {
  kiln_kernel *slow = kt_slow_kernel();
  kiln_stream *s[2] = {NULL, NULL};
  float x[KT_N];
  kt_random_fill(KILN_FLOAT32, x, KT_N, -1, 1);
  int64_t n = KT_N;
  kiln_array *xa = kt_array(KILN_FLOAT32, 1, &n, x);
  for (int pass = 0; pass < 2; pass++) {
    kt_order order = {0};
    kt_cb cbs[2] = {{&order, 1}, {&order, 2}};
    kiln_array *y[2];
    for (int i = 0; i < 2; i++) {
      CHECK_OK(kiln_stream_create(kt_device(), &s[i]));
      y[i] = kt_slow(slow, xa, KT_SLOW_ITERS, s[i]);
      CHECK_OK(kiln_stream_add_callback(s[i], kt_record, &cbs[i]));
    }
    CHECK_OK(kiln_synchronize(pass == 0 ? NULL : kt_device()));
    CHECK(atomic_load(&order.next) == 2,
          "after kiln_synchronize(%s) both streams finished (%d callbacks)",
          pass == 0 ? "NULL" : "device", atomic_load(&order.next));
    for (int i = 0; i < 2; i++) {
      CHECK_OK(kiln_stream_destroy(s[i])); /* idle now: no BUSY */
      kt_expect_affine(y[i], x, 0.0f, "y");
      kiln_array_destroy(y[i]);
    }
  }
  kiln_array_destroy(xa);
  kiln_kernel_destroy(slow);
}

void test_stream_destroy_busy(void) {
  kiln_kernel *slow = kt_slow_kernel();
  kiln_stream *s = NULL;
  CHECK_OK(kiln_stream_create(kt_device(), &s));
  float x[KT_N];
  kt_random_fill(KILN_FLOAT32, x, KT_N, -1, 1);
  int64_t n = KT_N;
  kiln_array *xa = kt_array(KILN_FLOAT32, 1, &n, x);
  kiln_array *warm = kt_slow(slow, xa, 0, s); /* compile outside the race */
  CHECK_OK(kiln_stream_synchronize(s));
  kiln_array *y = kt_slow(slow, xa, KT_SLOW_ITERS * 4, s);
  CHECK_STATUS(kiln_stream_destroy(s), KILN_ERROR_BUSY);
  CHECK_ERR_HAS("kiln_stream_synchronize");
  CHECK_OK(kiln_stream_synchronize(s));
  kt_expect_affine(y, x, 0.0f, "y");
  CHECK_OK(kiln_stream_destroy(s));
  CHECK_OK(kiln_stream_destroy(NULL));
  CHECK_STATUS(kiln_stream_destroy(kt_stream()), KILN_ERROR_INVALID_ARGUMENT);
  kiln_array_destroy(y);
  kiln_array_destroy(warm);
  kiln_array_destroy(xa);
  kiln_kernel_destroy(slow);
}

typedef struct kt_thread_stream {
  kiln_stream *first, *second;
  float result[KT_N];
  float input[KT_N];
} kt_thread_stream;

static void *kt_default_worker(void *arg) {
  kt_thread_stream *t = arg;
  t->first = kiln_default_stream(kt_device());
  t->second = kiln_default_stream(kt_device());
  int64_t n = KT_N;
  kiln_array *x = NULL, *y = NULL;
  if (kiln_array_from_host(kt_device(), KILN_FLOAT32, 1, &n, t->input, &x) !=
      KILN_OK)
    return NULL;
  kiln_array_fill(x, 5.0, NULL); /* on this thread's default stream */
  if (kiln_array_contiguous(x, NULL, &y) == KILN_OK)
    kiln_array_to_host(y, t->result, sizeof t->result);
  kiln_array_destroy(y);
  kiln_array_destroy(x);
  return NULL;
}

void test_stream_default_per_thread(void) {
  kiln_stream *mine = kiln_default_stream(kt_device());
  CHECK(mine != NULL, "default stream exists");
  CHECK(kiln_default_stream(kt_device()) == mine, "stable per thread");
  CHECK(kiln_stream_device(mine) == kt_device(), "device of the stream");
  if (kiln_device_default() == kt_device())
    CHECK(kiln_default_stream(NULL) == mine, "NULL means the default device");
  kt_thread_stream t[2];
  memset(t, 0, sizeof t);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&th[i], NULL, kt_default_worker, &t[i]) == 0,
          "pthread_create");
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL); /* the threads' default streams go away */
  for (int i = 0; i < 2; i++) {
    CHECK(t[i].first != NULL && t[i].first == t[i].second,
          "thread %d: one default stream", i);
    CHECK(t[i].first != mine, "thread %d has its own stream", i);
    for (int j = 0; j < KT_N; j++)
      CHECK(t[i].result[j] == 5.0f, "thread %d result[%d]", i, j);
  }
  CHECK_OK(kiln_stream_synchronize(mine));
}
