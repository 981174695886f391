/*
 * Compiler logs, rewritten for the user (KERNEL-DIALECT.md §6).
 *
 * The generated source names the user's parts "header" and "body" with
 * #line, so gcc's and clang's messages about them already carry the
 * user's line:column. This file keeps those messages with the excerpt and
 * caret lines that follow them, and drops messages about kiln's own code
 * (the prelude, "kiln-generated") that would only confuse. A log that
 * says nothing about the user's code is kept whole: then the problem is
 * kiln's, and the full text is what helps.
 */
#include <stdio.h>
#include <string.h>

#include "dialect/dialect.h"

/* The most a rewritten log holds before it is cut short. */
#define LOG_CAP 8192

typedef enum line_class {
  LINE_USER,     /* a location in "header" or "body" */
  LINE_OTHER,    /* a location anywhere else */
  LINE_TOOL,     /* a compiler-driver line or summary: always kept */
  LINE_FOLLOWING /* excerpt, caret, continuation: goes with the one above */
} line_class;

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool starts_with(const char *s, size_t len, const char *prefix) {
  size_t n = strlen(prefix);
  return len >= n && memcmp(s, prefix, n) == 0;
}

/*
 * Finds the file a diagnostic line points into: "FILE:L:C: ...",
 * "FILE:L: ...", "FILE: In function ...", "In file included from FILE:L,"
 * and gcc's indented "from FILE:L:". Returns false if the line is none of
 * these; otherwise sets *file / *file_len.
 */
static bool line_location(const char *s, size_t len, const char **file,
                          size_t *file_len) {
  static const char included[] = "In file included from ";
  if (starts_with(s, len, included)) {
    s += sizeof included - 1;
    len -= sizeof included - 1;
  } else {
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
      i++;
    if (i > 0 && !starts_with(s + i, len - i, "from "))
      return false;
    if (i > 0) {
      s += i + 5;
      len -= i + 5;
    }
  }
  size_t colon = 0;
  while (colon < len && s[colon] != ':' && s[colon] != ' ')
    colon++;
  if (colon == 0 || colon >= len || s[colon] != ':')
    return false;
  const char *rest = s + colon + 1;
  size_t rlen = len - colon - 1;
  bool located = false;
  if (rlen > 0 && is_digit(rest[0])) {
    size_t d = 0;
    while (d < rlen && is_digit(rest[d]))
      d++;
    located = d == rlen || rest[d] == ':' || rest[d] == ',';
  } else {
    located = starts_with(rest, rlen, " In ") ||
              starts_with(rest, rlen, " At global scope");
  }
  if (located) {
    *file = s;
    *file_len = colon;
  }
  return located;
}

/* "1 error generated.", "2 warnings and 1 error generated." (clang) and
 * "compilation terminated." / "cc1plus: ..." / "g++: ..." (gcc). */
static bool is_tool_line(const char *s, size_t len) {
  static const char *const tools[] = {
      "cc1plus:", "g++:",      "c++:",         "gcc:", "clang:",
      "clang++:", "collect2:", "/usr/bin/ld:", "ld:"};
  if (len > 0 && is_digit(s[0]) && len >= 11 &&
      memcmp(s + len - 11, " generated.", 11) == 0)
    return true;
  if (starts_with(s, len, "compilation terminated."))
    return true;
  for (size_t k = 0; k < sizeof tools / sizeof tools[0]; k++)
    if (starts_with(s, len, tools[k]))
      return true;
  return false;
}

static line_class classify(const char *s, size_t len) {
  const char *file;
  size_t flen;
  if (line_location(s, len, &file, &flen)) {
    bool user = (flen == 4 && memcmp(file, "body", 4) == 0) ||
                (flen == 6 && memcmp(file, "header", 6) == 0);
    return user ? LINE_USER : LINE_OTHER;
  }
  return is_tool_line(s, len) ? LINE_TOOL : LINE_FOLLOWING;
}

/* Length of the line at s, without its newline. */
static size_t line_length(const char *s) {
  const char *nl = strchr(s, '\n');
  return nl ? (size_t)(nl - s) : strlen(s);
}

static bool log_mentions_user_code(const char *log) {
  for (const char *s = log; *s;) {
    size_t len = line_length(s);
    if (classify(s, len) == LINE_USER)
      return true;
    s += len + (s[len] == '\n');
  }
  return false;
}

/*
 * Keeps the user's diagnostics and what follows each (see the top of the
 * file), or every line when `keep_all`; the result is capped at LOG_CAP
 * bytes with a "... (N more lines)" note. NULL on allocation failure.
 */
static char *filter_log(const char *log, bool keep_all) {
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  bool keeping = true; /* lines before any location are the driver's */
  size_t more = 0;
  for (const char *s = log; *s;) {
    size_t len = line_length(s);
    line_class c = classify(s, len);
    if (c == LINE_USER || c == LINE_TOOL)
      keeping = true;
    else if (c == LINE_OTHER)
      keeping = false;
    if (keeping || keep_all) {
      if (more == 0 && sb.len + len + 1 <= LOG_CAP) {
        kiln__sb_append_n(&sb, s, len);
        kiln__sb_append(&sb, "\n");
      } else {
        more++;
      }
    }
    s += len + (s[len] == '\n');
  }
  if (more)
    kiln__sb_appendf(&sb, "... (%zu more lines)\n", more);
  if (sb.failed) {
    kiln__sb_free(&sb);
    return NULL;
  }
  if (!sb.data)
    return kiln__strdup("");
  return kiln__sb_take(&sb);
}

/*
 * Rewrites a compiler log for the user: the diagnostics that point into
 * "header" or "body", with their excerpt lines, and the compiler's own
 * summary lines; the whole log if none point there. Returns a
 * kiln__malloc'ed string, or NULL on allocation failure. NULL is "".
 */
char *kiln__dialect_map_log(const char *log) {
  if (!log)
    log = "";
  return filter_log(log, !log_mentions_user_code(log));
}
