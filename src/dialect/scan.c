/*
 * The scan of a kernel's header and body (KERNEL-DIALECT.md §3, §5, §6).
 *
 * A small C++ lexer splits the text into identifiers and punctuation,
 * skipping comments and string/char literals, so that nothing inside them
 * is ever taken for code. On the token list the scan then
 *   - refuses a body that holds a whole `kernel void f(...)` function,
 *   - blanks `#include <metal_*>` lines (the prelude provides them),
 *   - rewrites `threadgroup` into KILN_THREADGROUP_DECL (storage) or
 *     KILN_THREADGROUP (a pointer/reference qualifier),
 *   - records which thread attributes the body names, whether barriers or
 *     SIMD-group functions appear, the body's identifier set, and which
 *     swizzle members (.xy, ->rgb) and which separable prelude sections
 *     (SIMD functions, atomics, math, numeric_limits) body and header
 *     name, so that the prelude declares only those.
 * Rewrites never add or remove a newline, so line numbers survive.
 */
#include <stdlib.h>
#include <string.h>

#include "dialect/dialect.h"

/* ---- attributes ---------------------------------------------------------- */

static const char *const attr_names[KILN__ATTR_COUNT] = {
#define KILN__ATTR_NAME_(id, name, type) name,
    KILN__ATTR_MAP(KILN__ATTR_NAME_)
#undef KILN__ATTR_NAME_
};

static const char *const attr_types[KILN__ATTR_COUNT] = {
#define KILN__ATTR_TYPE_(id, name, type) type,
    KILN__ATTR_MAP(KILN__ATTR_TYPE_)
#undef KILN__ATTR_TYPE_
};

/* The Metal name of an attribute ("thread_position_in_grid"), or NULL for
 * a value outside the enum. */
const char *kiln__attr_name(kiln__attr a) {
  return (unsigned)a < KILN__ATTR_COUNT ? attr_names[a] : NULL;
}

/* The attribute's parameter type: "uint3" or "uint" (NULL if invalid). */
const char *kiln__attr_type(kiln__attr a) {
  return (unsigned)a < KILN__ATTR_COUNT ? attr_types[a] : NULL;
}

/* Identifiers that make a kernel need fibers on the CPU: every function
 * that waits for other threads of the group or SIMD group. */
static const char *const fiber_idents[] = {
    "threadgroup_barrier",
    "simdgroup_barrier",
    "simd_sum",
    "simd_product",
    "simd_min",
    "simd_max",
    "simd_and",
    "simd_or",
    "simd_xor",
    "simd_prefix_inclusive_sum",
    "simd_prefix_exclusive_sum",
    "simd_prefix_inclusive_product",
    "simd_prefix_exclusive_product",
    "simd_shuffle",
    "simd_shuffle_xor",
    "simd_shuffle_up",
    "simd_shuffle_down",
    "simd_broadcast",
    "simd_broadcast_first",
    "simd_ballot",
    "simd_all",
    "simd_any",
    "simd_is_first",
};

/* ---- the lexer ----------------------------------------------------------- */

typedef enum tok_kind { TOK_IDENT, TOK_PUNCT } tok_kind;

typedef struct token {
  tok_kind kind;
  size_t off;
  size_t len;
  int directive; /* id of the preprocessor line holding it; 0 if none */
} token;

/* A replacement of text[off, off + len) by `repl`. */
typedef struct edit {
  size_t off;
  size_t len;
  const char *repl;
} edit;

typedef struct lexed {
  const char *text;
  size_t size;
  token *toks;
  size_t num_toks, toks_cap;
  edit *edits;
  size_t num_edits, edits_cap;
  bool failed;         /* an allocation failed */
  bool other_includes; /* an #include of something but <metal_*> */
} lexed;

static bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool is_ident_char(char c) {
  return is_ident_start(c) || is_digit(c);
}

static bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Grows an array to hold one more element; false on allocation failure. */
static bool grow(void **items, size_t *cap, size_t count, size_t elem) {
  if (count < *cap)
    return true;
  size_t new_cap = *cap ? *cap * 2 : 64;
  size_t bytes;
  if (!kiln__mul_size(new_cap, elem, &bytes))
    return false;
  void *p = kiln__realloc(*items, bytes);
  if (!p)
    return false;
  *items = p;
  *cap = new_cap;
  return true;
}

static void push_token(lexed *lx, tok_kind kind, size_t off, size_t len,
                       int directive) {
  if (lx->failed ||
      !grow((void **)&lx->toks, &lx->toks_cap, lx->num_toks, sizeof(token))) {
    lx->failed = true;
    return;
  }
  lx->toks[lx->num_toks++] = (token){kind, off, len, directive};
}

static void push_edit(lexed *lx, size_t off, size_t len, const char *repl) {
  if (lx->failed ||
      !grow((void **)&lx->edits, &lx->edits_cap, lx->num_edits, sizeof(edit))) {
    lx->failed = true;
    return;
  }
  lx->edits[lx->num_edits++] = (edit){off, len, repl};
}

/* Index just past a backslash-newline at i, or i if there is none. The
 * C preprocessor splices such lines before anything else. */
static size_t splice(const char *t, size_t n, size_t i) {
  if (i < n && t[i] == '\\') {
    if (i + 1 < n && t[i + 1] == '\n')
      return i + 2;
    if (i + 2 < n && t[i + 1] == '\r' && t[i + 2] == '\n')
      return i + 3;
  }
  return i;
}

/* Skips a // comment; stops at (not past) the newline that ends it. */
static size_t skip_line_comment(const char *t, size_t n, size_t i) {
  while (i < n && t[i] != '\n') {
    size_t j = splice(t, n, i);
    i = j != i ? j : i + 1;
  }
  return i;
}

/* Skips a block comment starting at i ("/ *"); an unterminated one runs to
 * the end, where the compiler will report it. */
static size_t skip_block_comment(const char *t, size_t n, size_t i) {
  for (i += 2; i + 1 < n; i++)
    if (t[i] == '*' && t[i + 1] == '/')
      return i + 2;
  return n;
}

/* Skips a quoted literal starting at the quote t[i]. Escapes are honoured;
 * a newline ends an unterminated literal so one stray quote (an apostrophe
 * in an #error line) cannot swallow the rest of the file. */
static size_t skip_quoted(const char *t, size_t n, size_t i) {
  char q = t[i++];
  while (i < n && t[i] != '\n') {
    if (t[i] == '\\' && i + 1 < n) {
      i += 2;
      continue;
    }
    if (t[i++] == q)
      return i;
  }
  return i;
}

/* Skips a raw string R"delim( ... )delim" whose quote is at t[i]. */
static size_t skip_raw_string(const char *t, size_t n, size_t i) {
  size_t d = i + 1, open = d;
  while (open < n && t[open] != '(' && open - d <= 16)
    open++;
  if (open >= n || t[open] != '(')
    return skip_quoted(t, n, i); /* not a valid raw string */
  size_t dlen = open - d;
  for (size_t k = open + 1; k < n; k++) {
    if (t[k] == ')' && k + 1 + dlen < n &&
        memcmp(t + k + 1, t + d, dlen) == 0 && t[k + 1 + dlen] == '"')
      return k + dlen + 2;
  }
  return n;
}

/* True if an identifier of length len at t is a string/char literal
 * prefix; *raw tells whether it makes a raw string. */
static bool literal_prefix(const char *t, size_t len, bool *raw) {
  static const char *const plain[] = {"u8", "u", "U", "L"};
  static const char *const raws[] = {"R", "u8R", "uR", "UR", "LR"};
  for (size_t k = 0; k < sizeof plain / sizeof plain[0]; k++)
    if (strlen(plain[k]) == len && memcmp(t, plain[k], len) == 0) {
      *raw = false;
      return true;
    }
  for (size_t k = 0; k < sizeof raws / sizeof raws[0]; k++)
    if (strlen(raws[k]) == len && memcmp(t, raws[k], len) == 0) {
      *raw = true;
      return true;
    }
  return false;
}

/* Skips a pp-number (1, 0x1F, 1.5e-3f, 1'000) starting at i. */
static size_t skip_number(const char *t, size_t n, size_t i) {
  while (i < n) {
    char c = t[i];
    if ((c == '+' || c == '-') && i > 0 &&
        (t[i - 1] == 'e' || t[i - 1] == 'E' || t[i - 1] == 'p' ||
         t[i - 1] == 'P'))
      i++;
    else if (c == '\'' && i + 1 < n && is_ident_char(t[i + 1]))
      i += 2; /* C++14 digit separator */
    else if (is_ident_char(c) || c == '.')
      i++;
    else
      break;
  }
  return i;
}

/* True if `word` is spelled at t[i] as a whole identifier. */
static bool word_at(const char *t, size_t n, size_t i, const char *word) {
  size_t len = strlen(word);
  return i + len <= n && memcmp(t + i, word, len) == 0 &&
         (i + len == n || !is_ident_char(t[i + len]));
}

/*
 * Handles a directive whose '#' is at t[hash]; returns where lexing goes
 * on. `#include <metal_*>` is blanked from the start of its line through
 * the '>' and any blanks after it, so the line stays but is empty. Any
 * other #include skips its <header-name>, which is not C++ tokens.
 */
static size_t lex_directive(lexed *lx, size_t line_begin, size_t hash) {
  const char *t = lx->text;
  size_t n = lx->size, i = hash + 1;
  while (i < n && is_blank(t[i]))
    i++;
  if (!word_at(t, n, i, "include"))
    return hash + 1;
  i += strlen("include");
  while (i < n && is_blank(t[i]))
    i++;
  size_t close = i;
  if (i < n && t[i] == '<')
    while (++close < n && t[close] != '>' && t[close] != '\n')
      ;
  bool bracketed = close > i && close < n && t[close] == '>';
  bool is_metal = bracketed && close - (i + 1) > 6 &&
                  memcmp(t + i + 1, "metal_", 6) == 0;
  if (!is_metal) /* "file.h", a macro, <other>: text the scan never sees */
    lx->other_includes = true;
  if (!bracketed)
    return i;
  size_t end = close + 1;
  if (is_metal) {
    while (end < n && is_blank(t[end]) && t[end] != '\r')
      end++;
    /* Take the indentation too, unless a comment that began on an earlier
     * line ends before the '#' (its newline must stay). */
    size_t from = hash;
    while (from > line_begin && is_blank(t[from - 1]))
      from--;
    if (from != line_begin)
      from = hash;
    push_edit(lx, from, end - from, "");
  }
  return end;
}

/* Lexes a whole text into tokens and the include edits. */
static void lex(lexed *lx) {
  const char *t = lx->text;
  size_t n = lx->size, i = 0, line_begin = 0;
  bool line_start = true;
  int directive = 0, next_directive = 1;
  while (i < n && !lx->failed) {
    char c = t[i];
    size_t j = splice(t, n, i);
    if (j != i) { /* a spliced line continues the same logical line */
      i = j;
      continue;
    }
    if (c == '\n') {
      line_start = true;
      directive = 0;
      line_begin = ++i;
      continue;
    }
    if (is_blank(c)) {
      i++;
      continue;
    }
    if (c == '/' && i + 1 < n && t[i + 1] == '/') {
      i = skip_line_comment(t, n, i);
      continue;
    }
    if (c == '/' && i + 1 < n && t[i + 1] == '*') {
      i = skip_block_comment(t, n, i);
      continue;
    }
    bool at_line_start = line_start;
    line_start = false;
    if (c == '#' && at_line_start) {
      directive = next_directive++;
      i = lex_directive(lx, line_begin, i);
    } else if (is_ident_start(c)) {
      size_t s = i;
      while (i < n && is_ident_char(t[i]))
        i++;
      bool raw;
      if (i < n && (t[i] == '"' || t[i] == '\'') &&
          literal_prefix(t + s, i - s, &raw))
        i = raw && t[i] == '"' ? skip_raw_string(t, n, i)
                               : skip_quoted(t, n, i);
      else
        push_token(lx, TOK_IDENT, s, i - s, directive);
    } else if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(t[i + 1]))) {
      i = skip_number(t, n, i);
    } else if (c == '"' || c == '\'') {
      i = skip_quoted(t, n, i);
    } else {
      push_token(lx, TOK_PUNCT, i, 1, directive);
      i++;
    }
  }
}

static void lexed_free(lexed *lx) {
  kiln__free(lx->toks);
  kiln__free(lx->edits);
  memset(lx, 0, sizeof *lx);
}

/* ---- token helpers ------------------------------------------------------- */

static bool tok_is(const lexed *lx, size_t k, const char *word) {
  if (k >= lx->num_toks)
    return false;
  const token *tk = &lx->toks[k];
  return strlen(word) == tk->len &&
         memcmp(lx->text + tk->off, word, tk->len) == 0;
}

static bool tok_punct(const lexed *lx, size_t k, char c) {
  return k < lx->num_toks && lx->toks[k].kind == TOK_PUNCT &&
         lx->text[lx->toks[k].off] == c;
}

static bool tok_ident(const lexed *lx, size_t k) {
  return k < lx->num_toks && lx->toks[k].kind == TOK_IDENT;
}

/* 1-based line of a byte offset. */
static int line_of(const char *t, size_t off) {
  int line = 1;
  for (size_t i = 0; i < off; i++)
    line += t[i] == '\n';
  return line;
}

/* ---- the kernel-signature check ------------------------------------------ */

/*
 * True if token k (`kernel`) starts a kernel function: `[[kernel]]`,
 * `kernel void`, or `kernel TYPE NAME (`. A variable named kernel or an
 * identifier like kernel_size is a different token and never matches.
 */
static bool starts_kernel_function(const lexed *lx, size_t k) {
  if (k >= 2 && tok_punct(lx, k - 1, '[') && tok_punct(lx, k - 2, '['))
    return true;
  if (tok_is(lx, k + 1, "void"))
    return true;
  return tok_ident(lx, k + 1) && tok_ident(lx, k + 2) &&
         tok_punct(lx, k + 3, '(');
}

/* Returns the 1-based body line of a kernel function, or 0 if none. Tokens
 * on preprocessor lines are left out: a macro may spell anything. */
static int find_kernel_function(const lexed *lx) {
  for (size_t k = 0; k < lx->num_toks; k++) {
    if (lx->toks[k].directive == 0 && tok_is(lx, k, "kernel") &&
        starts_kernel_function(lx, k))
      return line_of(lx->text, lx->toks[k].off);
  }
  return 0;
}

/* ---- the threadgroup rewrite --------------------------------------------- */

/*
 * Whether the `threadgroup` at token k qualifies a pointer or reference
 * (true) or declares storage (false). A parameter position, right after
 * '(' or ',', is a qualifier; otherwise a '*' or '&' before the end of the
 * declarator's type (; = , ) ( [ { }, a ',' inside template arguments not
 * counting) makes it one, and so does a '(' that opens `(&name)` or
 * `(*name)`. The lookahead stays on
 * the same preprocessor line, if any.
 */
static bool threadgroup_is_qualifier(const lexed *lx, size_t k) {
  int dir = lx->toks[k].directive;
  if (k > 0 && lx->toks[k - 1].directive == dir &&
      (tok_punct(lx, k - 1, '(') || tok_punct(lx, k - 1, ',')))
    return true;
  int angle = 0; /* inside template arguments, a ',' ends nothing */
  for (size_t j = k + 1; j < lx->num_toks && lx->toks[j].directive == dir;
       j++) {
    if (lx->toks[j].kind != TOK_PUNCT)
      continue;
    char c = lx->text[lx->toks[j].off];
    if (c == '<')
      angle++;
    else if (c == '>' && angle > 0)
      angle--;
    else if (c == '*' || c == '&')
      return true;
    else if (c == ',' && angle > 0)
      continue;
    /* A parenthesised declarator, `threadgroup float (&r)[64]` or
     * `(*p)`: the '(' starts a reference or pointer, not a call. */
    else if (c == '(' && j + 1 < lx->num_toks &&
             (tok_punct(lx, j + 1, '&') || tok_punct(lx, j + 1, '*')))
      return true;
    else if (strchr(";=,)([{}", c))
      return false;
  }
  return false;
}

static void add_threadgroup_edits(lexed *lx) {
  size_t count = lx->num_toks;
  for (size_t k = 0; k < count && !lx->failed; k++) {
    if (lx->toks[k].kind != TOK_IDENT || !tok_is(lx, k, "threadgroup"))
      continue;
    const char *repl = threadgroup_is_qualifier(lx, k)
                           ? "KILN_THREADGROUP"
                           : "KILN_THREADGROUP_DECL";
    push_edit(lx, lx->toks[k].off, lx->toks[k].len, repl);
  }
}

static int edit_cmp(const void *a, const void *b) {
  size_t x = ((const edit *)a)->off, y = ((const edit *)b)->off;
  return (x > y) - (x < y);
}

/* Applies the edits (sorted here) to the text; NULL on allocation
 * failure. Edits never span a newline, so the line structure stays. */
static char *apply_edits(lexed *lx) {
  if (lx->num_edits > 1)
    qsort(lx->edits, lx->num_edits, sizeof(edit), edit_cmp);
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  size_t pos = 0;
  for (size_t k = 0; k < lx->num_edits; k++) {
    const edit *e = &lx->edits[k];
    kiln__sb_append_n(&sb, lx->text + pos, e->off - pos);
    kiln__sb_append(&sb, e->repl);
    pos = e->off + e->len;
  }
  kiln__sb_append_n(&sb, lx->text + pos, lx->size - pos);
  bool failed = sb.failed;
  if (failed || !sb.data) { /* an empty text still needs a real string */
    kiln__sb_free(&sb);
    return failed ? NULL : kiln__strdup("");
  }
  return kiln__sb_take(&sb);
}

/* ---- identifier facts ---------------------------------------------------- */

static bool is_fiber_ident(const char *s, size_t len) {
  /* Cheap filter first: every such name starts with "simd" or "thre". */
  if (len < 8 || (memcmp(s, "simd", 4) != 0 && memcmp(s, "thre", 4) != 0))
    return false;
  for (size_t k = 0; k < sizeof fiber_idents / sizeof fiber_idents[0]; k++)
    if (strlen(fiber_idents[k]) == len && memcmp(s, fiber_idents[k], len) == 0)
      return true;
  return false;
}

static bool uses_fiber_functions(const lexed *lx) {
  for (size_t k = 0; k < lx->num_toks; k++) {
    const token *tk = &lx->toks[k];
    if (tk->kind == TOK_IDENT && is_fiber_ident(lx->text + tk->off, tk->len))
      return true;
  }
  return false;
}

static int str_ptr_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Builds the sorted, distinct identifier set of a lexed text into `scan`.
 * False on allocation failure (nothing is left allocated then). */
static bool build_ident_set(const lexed *lx, kiln__scan *scan) {
  size_t text_bytes = 1, count = 0;
  for (size_t k = 0; k < lx->num_toks; k++)
    if (lx->toks[k].kind == TOK_IDENT) {
      text_bytes += lx->toks[k].len + 1;
      count++;
    }
  if (count > (size_t)INT32_MAX)
    return false;
  char *text = kiln__malloc(text_bytes);
  char **idents = kiln__malloc((count ? count : 1) * sizeof(char *));
  if (!text || !idents) {
    kiln__free(text);
    kiln__free(idents);
    return false;
  }
  size_t pos = 0, m = 0;
  for (size_t k = 0; k < lx->num_toks; k++) {
    const token *tk = &lx->toks[k];
    if (tk->kind != TOK_IDENT)
      continue;
    memcpy(text + pos, lx->text + tk->off, tk->len);
    text[pos + tk->len] = '\0';
    idents[m++] = text + pos;
    pos += tk->len + 1;
  }
  if (count > 1)
    qsort(idents, count, sizeof(char *), str_ptr_cmp);
  size_t distinct = 0;
  for (size_t k = 0; k < count; k++)
    if (distinct == 0 || strcmp(idents[distinct - 1], idents[k]) != 0)
      idents[distinct++] = idents[k];
  scan->idents = idents;
  scan->ident_text = text;
  scan->num_idents = (int)distinct;
  return true;
}

/* True if `ident` appears in the scanned body as a whole identifier (not
 * inside a comment or a string or char literal). */
bool kiln__scan_uses(const kiln__scan *scan, const char *ident) {
  if (!scan || !ident || !scan->idents || scan->num_idents <= 0)
    return false;
  return bsearch(&ident, scan->idents, (size_t)scan->num_idents, sizeof(char *),
                 str_ptr_cmp) != NULL;
}

static uint32_t attrs_in(const kiln__scan *scan) {
  uint32_t bits = 0;
  for (int a = 0; a < KILN__ATTR_COUNT; a++)
    if (kiln__scan_uses(scan, attr_names[a]))
      bits |= 1u << a;
  return bits;
}

/* ---- swizzles ----------------------------------------------------------- */

static const char *const swizzle_letters[2] = {"xyzw", "rgba"};

/* Where the names of each length start within one spelling's range. */
static int swizzle_base(size_t len) {
  return len == 2 ? 0 : len == 3 ? 16 : 80;
}

/* The kiln__swizzle_decode index of a name, or -1 if it is no swizzle. */
static int swizzle_index(const char *s, size_t len) {
  if (len < 2 || len > 4)
    return -1;
  for (int sp = 0; sp < 2; sp++) {
    int code = 0;
    size_t k = 0;
    for (; k < len; k++) {
      const char *p = memchr(swizzle_letters[sp], s[k], 4);
      if (!p)
        break;
      code = code * 4 + (int)(p - swizzle_letters[sp]);
    }
    if (k == len)
      return sp * KILN__SWIZZLES_PER_SPELLING + swizzle_base(len) + code;
  }
  return -1;
}

/* Writes swizzle `index` as its name and component indices; returns its
 * length, or 0 for an index out of range. */
int kiln__swizzle_decode(int index, char name[5], int comps[4]) {
  if (index < 0 || index >= KILN__NUM_SWIZZLES)
    return 0;
  const char *letters = swizzle_letters[index / KILN__SWIZZLES_PER_SPELLING];
  int rest = index % KILN__SWIZZLES_PER_SPELLING;
  int len = rest < swizzle_base(3) ? 2 : rest < swizzle_base(4) ? 3 : 4;
  int code = rest - swizzle_base((size_t)len);
  for (int k = len - 1; k >= 0; k--, code /= 4) {
    comps[k] = code % 4;
    name[k] = letters[code % 4];
  }
  name[len] = '\0';
  return len;
}

/* True if the scan saw swizzle `index`. */
bool kiln__scan_uses_swizzle(const kiln__scan *scan, int index) {
  return scan && index >= 0 && index < KILN__NUM_SWIZZLES &&
         (scan->swizzles_used[index / 8] >> (index % 8) & 1u);
}

/* True if token k is the member name of `.name` or `->name`. */
static bool is_member_name(const lexed *lx, size_t k) {
  return tok_ident(lx, k) && k > 0 &&
         (tok_punct(lx, k - 1, '.') ||
          (k > 1 && tok_punct(lx, k - 1, '>') && tok_punct(lx, k - 2, '-')));
}

/* True if tokens k and k+1 spell `##`, which can paste a member name
 * together out of parts the scan would not recognise. */
static bool is_token_paste(const lexed *lx, size_t k) {
  return tok_punct(lx, k, '#') && tok_punct(lx, k + 1, '#') &&
         lx->toks[k + 1].off == lx->toks[k].off + 1;
}

/* Records in `scan` the swizzle members one lexed text names. A member
 * named in a macro definition counts too, whether or not it is used. */
static void collect_swizzles(const lexed *lx, kiln__scan *scan) {
  if (lx->other_includes)
    scan->swizzles_all = true;
  for (size_t k = 0; k < lx->num_toks && !scan->swizzles_all; k++) {
    if (is_token_paste(lx, k)) {
      scan->swizzles_all = true;
    } else if (is_member_name(lx, k)) {
      const token *tk = &lx->toks[k];
      int idx = swizzle_index(lx->text + tk->off, tk->len);
      if (idx >= 0)
        scan->swizzles_used[idx / 8] |= (unsigned char)(1u << (idx % 8));
    }
  }
}

/* ---- prelude sections ---------------------------------------------------- */

/* The names of metal_math.h's function templates (KILN_NEED_MATH), and
 * the namespaces that name them again. A kernel that spells none of them
 * gets no math library. */
static const char *const math_idents[] = {
    "abs",      "acos",     "asin",     "atan",       "atan2",
    "ceil",     "clamp",    "clz",      "copysign",   "cos",
    "cosh",     "cross",    "ctz",      "distance",   "divide",
    "dot",      "exp",      "exp10",    "exp2",       "fabs",
    "fast",     "floor",    "fma",      "fmax",       "fmin",
    "fmod",     "fract",    "isfinite", "isinf",      "isnan",
    "ldexp",    "length",   "length_squared",         "log",
    "log10",    "log2",     "mad",      "max",        "min",
    "mix",      "mulhi",    "normalize", "popcount",  "pow",
    "powr",     "precise",  "rint",     "round",      "rsqrt",
    "saturate", "sign",     "signbit",  "sin",        "sincos",
    "sinh",     "smoothstep", "sqrt",   "step",       "tan",
    "tanh",     "trunc",
};

static bool ident_is(const char *s, size_t len, const char *word) {
  return strlen(word) == len && memcmp(s, word, len) == 0;
}

static bool has_prefix(const char *s, size_t len, const char *prefix) {
  size_t n = strlen(prefix);
  return len >= n && memcmp(s, prefix, n) == 0;
}

static bool contains(const char *s, size_t len, const char *word) {
  size_t n = strlen(word);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(s + i, word, n) == 0)
      return true;
  return false;
}

#define NUM_MATH_IDENTS (sizeof math_idents / sizeof math_idents[0])
_Static_assert(NUM_MATH_IDENTS <= 64, "kiln__scan.math_used has 64 bits");

/* The math library's name number `k`, for codegen.c's KILN_USE_<name>
 * defines; NULL past the last. */
const char *kiln__math_name(int k) {
  return k >= 0 && (size_t)k < NUM_MATH_IDENTS ? math_idents[k] : NULL;
}

/* The KILN__NEED bits that one identifier asks for, and in *math the bit
 * of the math library name it is. Loose on purpose: a name that might
 * reach a section pulls it in. */
static unsigned needs_of(const char *s, size_t len, uint64_t *math) {
  unsigned bits = 0;
  if (has_prefix(s, len, "simd") || has_prefix(s, len, "quad"))
    bits |= KILN__NEED(SIMD);
  if (contains(s, len, "atomic") || has_prefix(s, len, "memory_order"))
    bits |= KILN__NEED(ATOMIC);
  if (ident_is(s, len, "numeric_limits"))
    bits |= KILN__NEED(LIMITS);
  for (size_t k = 0; k < NUM_MATH_IDENTS; k++)
    if (ident_is(s, len, math_idents[k])) {
      bits |= KILN__NEED(MATH);
      *math |= (uint64_t)1 << k;
      break;
    }
  return bits;
}

/* Records in `scan` the prelude sections one lexed text names; what the
 * scan cannot see through (## or a non-Metal #include) needs them all. */
static void collect_needs(const lexed *lx, kiln__scan *scan) {
  if (lx->other_includes)
    scan->needs_all = true;
  for (size_t k = 0; k < lx->num_toks && !scan->needs_all; k++) {
    const token *tk = &lx->toks[k];
    if (is_token_paste(lx, k))
      scan->needs_all = true;
    else if (tk->kind == TOK_IDENT)
      scan->needs |= needs_of(lx->text + tk->off, tk->len, &scan->math_used);
  }
}

/* ---- the scan ------------------------------------------------------------ */

/* Lexes one text and rewrites it; *out is NULL and false is returned on
 * allocation failure. The lexed tokens stay in *lx for further checks. */
static bool lex_and_rewrite(const char *text, lexed *lx, char **out) {
  memset(lx, 0, sizeof *lx);
  lx->text = text;
  lx->size = strlen(text);
  lex(lx);
  add_threadgroup_edits(lx);
  *out = lx->failed ? NULL : apply_edits(lx);
  return *out != NULL;
}

/*
 * Scans a kernel's header and body (either may be NULL: empty), recording
 * attributes, barriers, identifiers and swizzle members. Fails with
 * KILN_ERROR_INVALID_ARGUMENT when the body is a whole kernel function
 * rather than its statements, and KILN_ERROR_OUT_OF_MEMORY; on failure
 * *out is zeroed and owns nothing. Free a successful scan with
 * kiln__scan_free.
 */
kiln_status kiln__dialect_scan(const char *kernel_name, const char *header,
                               const char *body, kiln__scan *out) {
  if (!out)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the scan result pointer is NULL.");
  memset(out, 0, sizeof *out);
  const char *name = kernel_name ? kernel_name : "(unnamed)";
  lexed hl, bl;
  memset(&hl, 0, sizeof hl);
  memset(&bl, 0, sizeof bl);
  kiln__scan scan;
  memset(&scan, 0, sizeof scan);
  kiln_status status = KILN_OK;

  if (!lex_and_rewrite(body ? body : "", &bl, &scan.body) ||
      !lex_and_rewrite(header ? header : "", &hl, &scan.header)) {
    status = kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                         "out of memory while scanning kernel '%s'.", name);
    goto done;
  }
  int line = find_kernel_function(&bl);
  if (line > 0) {
    status = kiln__error(
        KILN_ERROR_INVALID_ARGUMENT,
        "kernel '%s': the source must be the body of the kernel only (its "
        "statements), but line %d of the body starts a full kernel "
        "function; kiln generates the signature from the input and output "
        "names. Remove the `kernel void ...(...)` line and the braces "
        "around the body.",
        name, line);
    goto done;
  }
  if (!build_ident_set(&bl, &scan)) {
    status = kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                         "out of memory while scanning kernel '%s'.", name);
    goto done;
  }
  scan.needs_fibers = uses_fiber_functions(&bl) || uses_fiber_functions(&hl);
  scan.attrs_used = attrs_in(&scan);
  collect_swizzles(&bl, &scan);
  collect_swizzles(&hl, &scan);
  collect_needs(&bl, &scan);
  collect_needs(&hl, &scan);
  *out = scan;

done:
  if (status != KILN_OK)
    kiln__scan_free(&scan);
  lexed_free(&hl);
  lexed_free(&bl);
  return status;
}

/* Frees what a scan holds and zeroes it; a zeroed or NULL scan is fine. */
void kiln__scan_free(kiln__scan *scan) {
  if (!scan)
    return;
  kiln__free(scan->header);
  kiln__free(scan->body);
  kiln__free(scan->idents);
  kiln__free(scan->ident_text);
  memset(scan, 0, sizeof *scan);
}
