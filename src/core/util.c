/*
 * Private helpers: the per-thread error message, host allocation through
 * the user's hooks, growable strings, overflow checks and a clock.
 */
#include "core/util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors -------------------------------------------------------------- */

#define KILN__ERROR_CAP 4096

/* Each host thread has its own message, so concurrent calls never mix
 * their errors (SQLite keeps one per connection; we have no connection). */
static _Thread_local char tl_error[KILN__ERROR_CAP];
static _Thread_local const char *tl_api;

/* Remembers the public function the user called, for the prefix. */
void kiln__api_enter(const char *api_name) { tl_api = api_name; }

const char *kiln__api_current(void) { return tl_api; }

/* Marks a message cut at the buffer's end so readers know text is missing. */
static void mark_truncated(void) {
  memcpy(tl_error + KILN__ERROR_CAP - 4, "...", 4);
}

/* Formats into tl_error starting at `pos`; truncates with "...". */
static void format_at(size_t pos, const char *fmt, va_list ap) {
  if (pos >= KILN__ERROR_CAP - 1) {
    mark_truncated();
    return;
  }
  int n = vsnprintf(tl_error + pos, KILN__ERROR_CAP - pos, fmt, ap);
  if (n < 0)
    tl_error[pos] = '\0';
  else if ((size_t)n >= KILN__ERROR_CAP - pos)
    mark_truncated();
}

/* Replaces the thread's message with "[api] " and the formatted text. */
kiln_status kiln__verror(kiln_status status, const char *fmt, va_list ap) {
  size_t pos = 0;
  tl_error[0] = '\0';
  /* Work on kiln's own threads (stream callbacks) has no public caller, so
   * its messages carry no prefix; the public call that reports them adds
   * its own when it re-raises them. */
  if (tl_api != NULL) {
    int n = snprintf(tl_error, KILN__ERROR_CAP, "[%s] ", tl_api);
    pos = n > 0 ? (size_t)n : 0;
  }
  format_at(pos, fmt, ap);
  return status;
}

/* printf-style kiln__verror; returns `status` for `return kiln__error`. */
kiln_status kiln__error(kiln_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln__verror(status, fmt, ap);
  va_end(ap);
  return status;
}

/* Adds a sentence, separated by a space, to the current message. */
void kiln__error_append(const char *fmt, ...) {
  size_t pos = strlen(tl_error);
  if (pos > 0 && pos < KILN__ERROR_CAP - 1) {
    tl_error[pos++] = ' ';
    tl_error[pos] = '\0';
  }
  va_list ap;
  va_start(ap, fmt);
  format_at(pos, fmt, ap);
  va_end(ap);
}

/* The thread's current message, prefix included. */
const char *kiln__error_message(void) { return tl_error; }

const char *kiln_last_error(void) { return tl_error; }

void kiln_clear_error(void) { tl_error[0] = '\0'; }

const char *kiln_status_string(kiln_status status) {
  switch (status) {
#define KILN_STATUS_CASE_(name, value, text)                                  \
  case KILN_##name:                                                           \
    return text;
    KILN_STATUS_MAP(KILN_STATUS_CASE_)
#undef KILN_STATUS_CASE_
  }
  return "unknown status";
}

const char *kiln_version(void) { return KILN_VERSION_STRING; }

/* ---- host memory --------------------------------------------------------- */

typedef void *(*kiln__malloc_fn)(size_t);
typedef void *(*kiln__realloc_fn)(void *, size_t);
typedef void (*kiln__free_fn)(void *);

/* Atomic so that a thread that allocates while tests swap hooks reads a
 * whole pointer; NULL means the C library's function. */
static _Atomic(kiln__malloc_fn) g_malloc_fn;
static _Atomic(kiln__realloc_fn) g_realloc_fn;
static _Atomic(kiln__free_fn) g_free_fn;

kiln_status kiln_set_alloc_hooks(const kiln_alloc_hooks *hooks) {
  KILN_API_ENTER();
  if (hooks == NULL) {
    atomic_store_explicit(&g_malloc_fn, NULL, memory_order_release);
    atomic_store_explicit(&g_realloc_fn, NULL, memory_order_release);
    atomic_store_explicit(&g_free_fn, NULL, memory_order_release);
    return KILN_OK;
  }
  /* A partial set would free blocks with a function that did not make
   * them, so all three are required together. */
  if (hooks->malloc_fn == NULL || hooks->realloc_fn == NULL ||
      hooks->free_fn == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "hooks must set malloc_fn, realloc_fn and free_fn "
                       "together (or pass NULL to restore the defaults).");
  atomic_store_explicit(&g_malloc_fn, hooks->malloc_fn, memory_order_release);
  atomic_store_explicit(&g_realloc_fn, hooks->realloc_fn,
                        memory_order_release);
  atomic_store_explicit(&g_free_fn, hooks->free_fn, memory_order_release);
  return KILN_OK;
}

/* malloc through the user's hook. */
void *kiln__malloc(size_t size) {
  kiln__malloc_fn fn =
      atomic_load_explicit(&g_malloc_fn, memory_order_acquire);
  /* A zero-byte request still gets a unique pointer, so NULL always means
   * failure. */
  if (size == 0)
    size = 1;
  return fn != NULL ? fn(size) : malloc(size);
}

/* Zeroed memory through the malloc hook (the hooks have no calloc);
 * NULL also when count * size overflows. */
void *kiln__calloc(size_t count, size_t size) {
  size_t bytes;
  if (!kiln__mul_size(count, size, &bytes))
    return NULL;
  void *p = kiln__malloc(bytes);
  if (p != NULL)
    memset(p, 0, bytes);
  return p;
}

/* realloc through the user's hook. */
void *kiln__realloc(void *ptr, size_t size) {
  kiln__realloc_fn fn =
      atomic_load_explicit(&g_realloc_fn, memory_order_acquire);
  if (size == 0)
    size = 1;
  return fn != NULL ? fn(ptr, size) : realloc(ptr, size);
}

/* free through the user's hook; NULL is a no-op. */
void kiln__free(void *ptr) {
  if (ptr == NULL)
    return;
  kiln__free_fn fn = atomic_load_explicit(&g_free_fn, memory_order_acquire);
  if (fn != NULL)
    fn(ptr);
  else
    free(ptr);
}

/* A copy of at most `n` bytes of `s`, NUL-terminated. */
char *kiln__strndup(const char *s, size_t n) {
  if (s == NULL)
    return NULL;
  size_t len = strnlen(s, n);
  char *copy = kiln__malloc(len + 1);
  if (copy == NULL)
    return NULL;
  memcpy(copy, s, len);
  copy[len] = '\0';
  return copy;
}

/* A copy of `s` (NULL for NULL). */
char *kiln__strdup(const char *s) {
  return s == NULL ? NULL : kiln__strndup(s, strlen(s));
}

/* The standard out-of-memory error, naming what was being done. */
kiln_status kiln__oom(const char *what) {
  return kiln__error(KILN_ERROR_OUT_OF_MEMORY, "out of memory while %s.",
                     what);
}

/* a * b, or false if it does not fit in size_t. */
bool kiln__mul_size(size_t a, size_t b, size_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}

/* a + b, or false if it does not fit in size_t. */
bool kiln__add_size(size_t a, size_t b, size_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

/* ---- growable strings ---------------------------------------------------- */

/* An empty builder; allocates nothing until the first append. */
void kiln__sb_init(kiln__strbuf *sb) {
  sb->data = NULL;
  sb->len = 0;
  sb->cap = 0;
  sb->failed = false;
}

/* Frees the text and leaves an empty builder. */
void kiln__sb_free(kiln__strbuf *sb) {
  kiln__free(sb->data);
  kiln__sb_init(sb);
}

/* Makes room for `extra` more bytes plus the NUL; doubles to keep appends
 * amortised O(1). */
static bool sb_reserve(kiln__strbuf *sb, size_t extra) {
  size_t need;
  if (!kiln__add_size(sb->len, extra, &need) ||
      !kiln__add_size(need, 1, &need)) {
    sb->failed = true;
    return false;
  }
  if (need <= sb->cap)
    return true;
  size_t cap = sb->cap < 64 ? 64 : sb->cap;
  while (cap < need) {
    if (!kiln__mul_size(cap, 2, &cap)) {
      cap = need;
      break;
    }
  }
  char *data = kiln__realloc(sb->data, cap);
  if (data == NULL) {
    sb->failed = true;
    return false;
  }
  sb->data = data;
  sb->cap = cap;
  return true;
}

/* Appends `n` bytes of `s`. */
void kiln__sb_append_n(kiln__strbuf *sb, const char *s, size_t n) {
  if (sb->failed || !sb_reserve(sb, n))
    return;
  memcpy(sb->data + sb->len, s, n);
  sb->len += n;
  sb->data[sb->len] = '\0';
}

/* Appends a NUL-terminated string. */
void kiln__sb_append(kiln__strbuf *sb, const char *s) {
  kiln__sb_append_n(sb, s, strlen(s));
}

/* Appends printf-style text (measured first, then formatted in place). */
void kiln__sb_appendf(kiln__strbuf *sb, const char *fmt, ...) {
  if (sb->failed)
    return;
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    sb->failed = true;
  } else if (sb_reserve(sb, (size_t)n)) {
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap2);
    sb->len += (size_t)n;
  }
  va_end(ap2);
}

/* Hands the text to the caller and resets the builder. */
char *kiln__sb_take(kiln__strbuf *sb) {
  if (sb->failed) {
    kiln__sb_free(sb);
    return NULL;
  }
  /* An empty builder still hands out a real string. */
  if (sb->data == NULL && !sb_reserve(sb, 0)) {
    kiln__sb_free(sb);
    return NULL;
  }
  if (sb->len == 0)
    sb->data[0] = '\0';
  char *s = sb->data;
  kiln__sb_init(sb);
  return s;
}

/* The text so far, "" when empty. */
const char *kiln__sb_str(const kiln__strbuf *sb) {
  return sb->data != NULL ? sb->data : "";
}

/* ---- time ---------------------------------------------------------------- */

/* Monotonic time in nanoseconds, for timeouts and benchmarks. */
uint64_t kiln__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
