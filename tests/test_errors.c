/*
 * Status strings, the per-thread last-error message and its "[kiln_...]"
 * prefix.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

void test_errors_status_strings(void) {
#define KT_STATUS_(name, value, text)                                         \
  CHECK(strcmp(kiln_status_string(KILN_##name), text) == 0,                   \
        "status %d string is \"%s\"", value,                                  \
        kiln_status_string(KILN_##name));
  KILN_STATUS_MAP(KT_STATUS_)
#undef KT_STATUS_
  /* An unknown code still gives a string, never NULL. */
  const char *s = kiln_status_string((kiln_status)9999);
  CHECK(s != NULL && *s, "unknown status gives a non-empty string");
  s = kiln_status_string((kiln_status)-1);
  CHECK(s != NULL, "negative status gives a string");
  CHECK(kiln_version() != NULL && strchr(kiln_version(), '.') != NULL,
        "kiln_version() is \"MAJOR.MINOR.PATCH\"");
}

void test_errors_last_error_prefix(void) {
  kiln_clear_error();
  CHECK(strcmp(kiln_last_error(), "") == 0, "cleared error is \"\"");
  kiln_array *a = NULL;
  int64_t shape[2] = {4, -3};
  CHECK_STATUS(kiln_array_create(kt_device(), KILN_FLOAT32, 2, shape, &a),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(a == NULL, "no array on failure");
  CHECK(strncmp(kiln_last_error(), "[kiln_array_create] ", 20) == 0,
        "message starts with the function name: \"%s\"", kiln_last_error());
  CHECK_ERR_HAS("-3");
  /* A successful call does not clear the message. */
  int64_t ok_shape[1] = {4};
  CHECK_OK(kiln_array_create(kt_device(), KILN_FLOAT32, 1, ok_shape, &a));
  CHECK(strncmp(kiln_last_error(), "[kiln_array_create]", 19) == 0,
        "success keeps the old message");
  kiln_array_destroy(a);
  /* Another function names itself. */
  kiln_dtype dt;
  CHECK_STATUS(kiln_dtype_from_name("float33", &dt),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strncmp(kiln_last_error(), "[kiln_dtype_from_name] ", 23) == 0,
        "prefix of kiln_dtype_from_name: \"%s\"", kiln_last_error());
  CHECK_ERR_HAS("float33");
  kiln_clear_error();
  CHECK(strcmp(kiln_last_error(), "") == 0, "cleared again");
}

typedef struct kt_err_thread {
  pthread_barrier_t *barrier;
  int which;
  char seen[512];
} kt_err_thread;

/* Each thread fails differently, waits for the other to fail too, then
 * reads its own message. */
static void *kt_err_worker(void *arg) {
  kt_err_thread *t = arg;
  kiln_dtype dt;
  if (t->which == 0) {
    kiln_dtype_from_name("not_a_dtype_zero", &dt);
  } else {
    kiln_array *a = NULL;
    int64_t shape[1] = {-7};
    kiln_array_create(kt_device(), KILN_INT32, 1, shape, &a);
  }
  pthread_barrier_wait(t->barrier);
  snprintf(t->seen, sizeof t->seen, "%s", kiln_last_error());
  pthread_barrier_wait(t->barrier);
  return NULL;
}

void test_errors_thread_isolation(void) {
  kt_device(); /* initialise before threads race to */
  kiln_clear_error();
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, 2);
  kt_err_thread t[2] = {{&barrier, 0, ""}, {&barrier, 1, ""}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&th[i], NULL, kt_err_worker, &t[i]) == 0,
          "pthread_create");
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&barrier);
  CHECK(strstr(t[0].seen, "[kiln_dtype_from_name]") &&
            strstr(t[0].seen, "not_a_dtype_zero"),
        "thread 0 sees its own error, got \"%s\"", t[0].seen);
  CHECK(strstr(t[1].seen, "[kiln_array_create]") &&
            !strstr(t[1].seen, "not_a_dtype_zero"),
        "thread 1 sees its own error, got \"%s\"", t[1].seen);
  CHECK(strcmp(kiln_last_error(), "") == 0,
        "the main thread's message is untouched: \"%s\"", kiln_last_error());
}
