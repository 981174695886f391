/*
 * Private helpers shared by every part of kiln: errors, host allocation,
 * growable strings, hashing. Internal non-static names start with kiln__.
 */
#ifndef KILN_CORE_UTIL_H
#define KILN_CORE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* ---- errors ------------------------------------------------------------ */

/*
 * Public entry points call KILN_API_ENTER() first: it records the public
 * function's name so that every error raised below it, however deep, is
 * prefixed "[kiln_xxx] ". Internal code never calls public functions (it
 * calls their kiln__ twins), so the name is that of the user's call.
 */
void kiln__api_enter(const char *api_name);
#define KILN_API_ENTER() kiln__api_enter(__func__)
/* The name set by the last KILN_API_ENTER on this thread (internal code
 * that must call a public function restores it afterwards). */
const char *kiln__api_current(void);

/* Formats the thread's error message and returns `status`, so that code can
 * write `return kiln__error(KILN_ERROR_..., "...", ...);`. */
kiln_status kiln__error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
kiln_status kiln__verror(kiln_status status, const char *fmt, va_list ap);

/* Appends a sentence to the current message (used to add context such as
 * "while compiling kernel 'foo'"). */
void kiln__error_append(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The message without the "[api] " prefix handling; for internal reuse. */
const char *kiln__error_message(void);

/* ---- host memory -------------------------------------------------------- */

/* All host allocations go through the hooks of kiln_set_alloc_hooks. On
 * failure they return NULL and do not set an error: callers do, naming
 * what they were allocating, or use kiln__oom(). */
void *kiln__malloc(size_t size);
void *kiln__calloc(size_t count, size_t size);
void *kiln__realloc(void *ptr, size_t size);
void kiln__free(void *ptr);
char *kiln__strdup(const char *s);
char *kiln__strndup(const char *s, size_t n);
/* Sets "out of memory while <what>" and returns KILN_ERROR_OUT_OF_MEMORY. */
kiln_status kiln__oom(const char *what);

/* Overflow-checked arithmetic: false if the result does not fit. */
bool kiln__mul_size(size_t a, size_t b, size_t *out);
bool kiln__add_size(size_t a, size_t b, size_t *out);

/* ---- growable strings --------------------------------------------------- */

/* A string builder. After an allocation failure it keeps `failed` set and
 * ignores further appends, so callers check once at the end. */
typedef struct kiln__strbuf {
  char *data; /* always NUL-terminated once anything was appended */
  size_t len;
  size_t cap;
  bool failed;
} kiln__strbuf;

void kiln__sb_init(kiln__strbuf *sb);
void kiln__sb_free(kiln__strbuf *sb);
void kiln__sb_append(kiln__strbuf *sb, const char *s);
void kiln__sb_append_n(kiln__strbuf *sb, const char *s, size_t n);
void kiln__sb_appendf(kiln__strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Gives the buffer to the caller (free with kiln__free); NULL if failed. */
char *kiln__sb_take(kiln__strbuf *sb);
/* "" for an empty builder, never NULL. */
const char *kiln__sb_str(const kiln__strbuf *sb);

/* ---- hashing ------------------------------------------------------------ */

typedef struct kiln__sha256 {
  uint32_t state[8];
  uint64_t bytes;
  uint8_t block[64];
  size_t block_len;
} kiln__sha256;

void kiln__sha256_init(kiln__sha256 *h);
void kiln__sha256_update(kiln__sha256 *h, const void *data, size_t len);
void kiln__sha256_final(kiln__sha256 *h, uint8_t out[32]);
/* One-shot digest as 64 lowercase hex digits plus NUL. */
void kiln__sha256_hex(const void *data, size_t len, char out[65]);
void kiln__hex(const uint8_t *bytes, size_t n, char *out /* 2n+1 */);

/* ---- time --------------------------------------------------------------- */

/* Monotonic nanoseconds. */
uint64_t kiln__now_ns(void);

#endif /* KILN_CORE_UTIL_H */
