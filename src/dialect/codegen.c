/*
 * The signature and the generated translation unit (KERNEL-DIALECT.md §3).
 *
 * build_signature applies MLX's parameter rules to the kernel's names and
 * refuses names that would not compile or would collide. generate writes
 * the prelude, the user's header, the body wrapped in a function template
 * and the target's entry glue; #line directives name the user's parts
 * "header" and "body" so compiler messages point into them, and kiln's own
 * lines "kiln-generated". The parts every target shares are written once;
 * each target adds only its entry glue (the CPU's is here; CUDA's slots in
 * beside it).
 */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/kcache.h"
#include "dialect/dialect.h"

/* Longest user name: leaves room for the "_strides" suffix and the NUL in
 * kiln__param.name. */
#define MAX_NAME_LEN ((int)sizeof(((kiln__param *)0)->name) - 9)

/* ---- names --------------------------------------------------------------- */

/* Words a name may not be: C++ keywords and Metal's address spaces and
 * function qualifiers, which the generated code cannot bind as names. */
static const char *const reserved_words[] = {
    "alignas",       "alignof",     "and",
    "and_eq",        "asm",         "auto",
    "bitand",        "bitor",       "bool",
    "break",         "case",        "catch",
    "char",          "char8_t",     "char16_t",
    "char32_t",      "class",       "compl",
    "concept",       "const",       "consteval",
    "constexpr",     "constinit",   "const_cast",
    "continue",      "co_await",    "co_return",
    "co_yield",      "decltype",    "default",
    "delete",        "do",          "double",
    "dynamic_cast",  "else",        "enum",
    "explicit",      "export",      "extern",
    "false",         "float",       "for",
    "friend",        "goto",        "if",
    "inline",        "int",         "long",
    "mutable",       "namespace",   "new",
    "noexcept",      "not",         "not_eq",
    "nullptr",       "operator",    "or",
    "or_eq",         "private",     "protected",
    "public",        "register",    "reinterpret_cast",
    "requires",      "return",      "short",
    "signed",        "sizeof",      "static",
    "static_assert", "static_cast", "struct",
    "switch",        "template",    "this",
    "thread_local",  "throw",       "true",
    "try",           "typedef",     "typeid",
    "typename",      "union",       "unsigned",
    "using",         "virtual",     "void",
    "volatile",      "wchar_t",     "while",
    "xor",           "xor_eq",      "device",
    "constant",      "threadgroup", "thread",
    "kernel",        "vertex",      "fragment",
};

static bool is_c_identifier(const char *s) {
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

static bool is_reserved_word(const char *s) {
  for (size_t k = 0; k < sizeof reserved_words / sizeof reserved_words[0]; k++)
    if (strcmp(s, reserved_words[k]) == 0)
      return true;
  return false;
}

static bool is_attr_name(const char *s) {
  for (int a = 0; a < KILN__ATTR_COUNT; a++)
    if (strcmp(s, kiln__attr_name((kiln__attr)a)) == 0)
      return true;
  return false;
}

/*
 * Checks one name the user chose; `what` says what it names ("input",
 * "output", "template argument") for the message. Names starting with
 * kiln_/KILN_ are kept for the generated code.
 */
static kiln_status check_name(const char *kernel, const char *what, int index,
                              const char *name) {
  if (!name)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': the name of %s %d is NULL.", kernel, what,
                       index);
  if (!is_c_identifier(name))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s name '%s' is not a C identifier "
                       "(letters, digits and '_', not starting with a digit).",
                       kernel, what, name);
  if ((int)strlen(name) > MAX_NAME_LEN)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s name '%.20s...' is %zu characters "
                       "long; names may have at most %d.",
                       kernel, what, name, strlen(name), MAX_NAME_LEN);
  if (is_reserved_word(name))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s name '%s' is a C++ or Metal keyword; "
                       "choose another name.",
                       kernel, what, name);
  if (strncmp(name, "kiln_", 5) == 0 || strncmp(name, "KILN_", 5) == 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s name '%s' starts with '%.5s', which "
                       "is reserved for the code kiln generates.",
                       kernel, what, name, name);
  if (is_attr_name(name))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': %s name '%s' is the name of a Metal "
                       "thread attribute; choose another name.",
                       kernel, what, name);
  return KILN_OK;
}

static bool dtype_ok(kiln_dtype dtype) {
  return (unsigned)dtype < (unsigned)KILN_DTYPE_COUNT &&
         kiln__dtype_metal_name(dtype) != NULL;
}

/* ---- the signature ------------------------------------------------------- */

/* The user's input and output names, and the suffixes generated from them,
 * as one list so collisions are found in one place. */
typedef struct names_in {
  const char *const *input_names;
  int num_inputs;
  const char *const *output_names;
  int num_outputs;
} names_in;

static kiln_status check_io_names(const char *kernel, const names_in *n) {
  for (int i = 0; i < n->num_inputs; i++) {
    kiln_status st = check_name(kernel, "input", i, n->input_names[i]);
    if (st != KILN_OK)
      return st;
  }
  for (int i = 0; i < n->num_outputs; i++) {
    kiln_status st = check_name(kernel, "output", i, n->output_names[i]);
    if (st != KILN_OK)
      return st;
  }
  /* Every name against every later one, inputs first. */
  int total = n->num_inputs + n->num_outputs;
  for (int a = 0; a < total; a++) {
    const char *na = a < n->num_inputs ? n->input_names[a]
                                       : n->output_names[a - n->num_inputs];
    for (int b = a + 1; b < total; b++) {
      const char *nb = b < n->num_inputs ? n->input_names[b]
                                         : n->output_names[b - n->num_inputs];
      if (strcmp(na, nb) != 0)
        continue;
      return kiln__error(
          KILN_ERROR_INVALID_ARGUMENT,
          "kernel '%s': the name '%s' is given to %s %d and to %s %d; "
          "every input and output needs its own name.",
          kernel, na, a < n->num_inputs ? "input" : "output",
          a < n->num_inputs ? a : a - n->num_inputs,
          b < n->num_inputs ? "input" : "output",
          b < n->num_inputs ? b : b - n->num_inputs);
    }
  }
  return KILN_OK;
}

static kiln_status check_dtypes(const char *kernel, const names_in *n,
                                const kiln_dtype *in, const int *ndims,
                                const kiln_dtype *outd) {
  for (int i = 0; i < n->num_inputs; i++) {
    if (!dtype_ok(in[i]))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': input '%s' has an unknown dtype "
                         "(code %d).",
                         kernel, n->input_names[i], (int)in[i]);
    if (ndims[i] < 0 || ndims[i] > KILN_MAX_NDIM)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': input '%s' has %d dimensions; kiln "
                         "supports 0 to %d.",
                         kernel, n->input_names[i], ndims[i], KILN_MAX_NDIM);
  }
  for (int i = 0; i < n->num_outputs; i++)
    if (!dtype_ok(outd[i]))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': output '%s' has an unknown dtype "
                         "(code %d).",
                         kernel, n->output_names[i], (int)outd[i]);
  return KILN_OK;
}

static void set_param(kiln__param *p, kiln__param_kind kind, int io_index,
                      kiln_dtype dtype, const char *name, const char *suffix) {
  p->kind = kind;
  p->io_index = io_index;
  p->dtype = dtype;
  /* Lengths were checked against the buffer, so this never truncates. */
  snprintf(p->name, sizeof p->name, "%s%s", name, suffix);
}

/* Adds the params of input i by MLX's rules: the value of a 0-d input, or
 * its buffer and whichever of _shape/_strides/_ndim the body names. */
static int add_input_params(kiln__param *params, int np, const kiln__scan *scan,
                            const char *name, kiln_dtype dtype, int ndim,
                            int i) {
  static const struct {
    kiln__param_kind kind;
    const char *suffix;
  } extras[] = {{KILN__PARAM_SHAPE, "_shape"},
                {KILN__PARAM_STRIDES, "_strides"},
                {KILN__PARAM_NDIM, "_ndim"}};
  if (ndim == 0) {
    set_param(&params[np++], KILN__PARAM_SCALAR, i, dtype, name, "");
    return np;
  }
  set_param(&params[np++], KILN__PARAM_INPUT, i, dtype, name, "");
  for (size_t k = 0; k < sizeof extras / sizeof extras[0]; k++) {
    char full[sizeof params[0].name];
    snprintf(full, sizeof full, "%s%s", name, extras[k].suffix);
    if (kiln__scan_uses(scan, full))
      set_param(&params[np++], extras[k].kind, i, KILN_INT32, name,
                extras[k].suffix);
  }
  return np;
}

/* Refuses a generated _shape/_strides/_ndim name that equals a name the
 * user chose (input "a" and input "a_shape" when the body uses a_shape). */
static kiln_status check_param_collisions(const char *kernel,
                                          const kiln__param *params, int np) {
  for (int a = 0; a < np; a++)
    for (int b = a + 1; b < np; b++) {
      if (strcmp(params[a].name, params[b].name) != 0)
        continue;
      const kiln__param *gen = params[a].kind >= KILN__PARAM_SHAPE &&
                                       params[a].kind <= KILN__PARAM_NDIM
                                   ? &params[a]
                                   : &params[b];
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': the body uses '%s', which names both "
                         "a user input or output and the shape/strides/ndim "
                         "parameter kiln generates for input %d; rename one "
                         "of them.",
                         kernel, gen->name, gen->io_index);
    }
  return KILN_OK;
}

static kiln_status check_targs(const char *kernel,
                               const kiln_template_arg *targs, int num_targs,
                               const kiln__param *params, int np) {
  for (int t = 0; t < num_targs; t++) {
    const kiln_template_arg *ta = &targs[t];
    kiln_status st = check_name(kernel, "template argument", t, ta->name);
    if (st != KILN_OK)
      return st;
    for (int u = 0; u < t; u++)
      if (strcmp(targs[u].name, ta->name) == 0)
        return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                           "kernel '%s': template argument '%s' is given "
                           "twice.",
                           kernel, ta->name);
    for (int p = 0; p < np; p++)
      if (strcmp(params[p].name, ta->name) == 0)
        return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                           "kernel '%s': template argument '%s' has the same "
                           "name as a kernel parameter; rename one of them.",
                           kernel, ta->name);
    if (ta->kind == KILN_TEMPLATE_DTYPE && !dtype_ok(ta->dtype))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': template argument '%s' has an unknown "
                         "dtype (code %d).",
                         kernel, ta->name, (int)ta->dtype);
    if (ta->kind == KILN_TEMPLATE_INT &&
        (ta->value < INT32_MIN || ta->value > INT32_MAX))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': template argument '%s' is %lld, "
                         "outside the range of an int.",
                         kernel, ta->name, (long long)ta->value);
    if (ta->kind != KILN_TEMPLATE_DTYPE && ta->kind != KILN_TEMPLATE_INT &&
        ta->kind != KILN_TEMPLATE_BOOL)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': template argument '%s' has an unknown "
                         "kind (code %d).",
                         kernel, ta->name, (int)ta->kind);
  }
  return KILN_OK;
}

static kiln_status check_counts(const char *kernel, const names_in *n,
                                const kiln_dtype *in, const int *ndims,
                                const kiln_dtype *outd,
                                const kiln_template_arg *targs, int num_targs) {
  if (n->num_inputs < 0 ||
      (n->num_inputs > 0 && (!n->input_names || !in || !ndims)))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': the inputs are missing (a count of %d "
                       "with a NULL list).",
                       kernel, n->num_inputs);
  if (n->num_outputs < 1 || !n->output_names || !outd)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': a kernel needs at least one output.",
                       kernel);
  if (num_targs < 0 || (num_targs > 0 && !targs))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': the template arguments are missing (a "
                       "count of %d with a NULL list).",
                       kernel, num_targs);
  return KILN_OK;
}

/*
 * Builds the parameter list by MLX's rules (see dialect.h) after checking
 * every name, dtype and template argument. On failure *out is zeroed and
 * owns nothing; on success free it with kiln__signature_free. The
 * signature points at `scan` and `targs`, which must outlive it.
 */
kiln_status kiln__dialect_build_signature(
    const char *kernel_name, const kiln__scan *scan,
    const char *const *input_names, const kiln_dtype *input_dtypes,
    const int *input_ndims, int num_inputs, const char *const *output_names,
    const kiln_dtype *output_dtypes, int num_outputs, bool atomic_outputs,
    const kiln_template_arg *targs, int num_targs, kiln__signature *out) {
  if (!out || !scan)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the scan or the signature pointer is NULL.");
  memset(out, 0, sizeof *out);
  const char *kernel = kernel_name ? kernel_name : "(unnamed)";
  names_in n = {input_names, num_inputs, output_names, num_outputs};
  kiln_status st = check_counts(kernel, &n, input_dtypes, input_ndims,
                                output_dtypes, targs, num_targs);
  if (st == KILN_OK)
    st = check_io_names(kernel, &n);
  if (st == KILN_OK)
    st = check_dtypes(kernel, &n, input_dtypes, input_ndims, output_dtypes);
  if (st != KILN_OK)
    return st;

  /* At most four params per input (buffer, shape, strides, ndim). */
  size_t max_params = 4 * (size_t)num_inputs + (size_t)num_outputs;
  kiln__param *params = kiln__calloc(max_params, sizeof(kiln__param));
  if (!params)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while building the signature of "
                       "kernel '%s'.",
                       kernel);
  int np = 0;
  for (int i = 0; i < num_inputs; i++)
    np = add_input_params(params, np, scan, input_names[i], input_dtypes[i],
                          input_ndims[i], i);
  for (int i = 0; i < num_outputs; i++)
    set_param(&params[np++], KILN__PARAM_OUTPUT, i, output_dtypes[i],
              output_names[i], "");
  st = check_param_collisions(kernel, params, np);
  if (st == KILN_OK)
    st = check_targs(kernel, targs, num_targs, params, np);
  if (st != KILN_OK) {
    kiln__free(params);
    return st;
  }
  out->kernel_name = kernel_name;
  out->scan = scan;
  out->params = params;
  out->num_params = np;
  out->atomic_outputs = atomic_outputs;
  out->targs = num_targs > 0 ? targs : NULL;
  out->num_targs = num_targs;
  return KILN_OK;
}

/* Frees the parameter list and zeroes the signature; NULL is fine. */
void kiln__signature_free(kiln__signature *sig) {
  if (!sig)
    return;
  kiln__free(sig->params);
  memset(sig, 0, sizeof *sig);
}

/* ---- the shared part of the generated source ----------------------------- */

/* Appends a newline unless the buffer is empty or already ends in one. */
static void end_line(kiln__strbuf *sb) {
  if (sb->failed || sb->len == 0)
    return;
  if (sb->data[sb->len - 1] != '\n')
    kiln__sb_append(sb, "\n");
  /* A user text ending in a backslash would splice kiln's next line onto
   * its last one; an empty line takes the splice instead. */
  if (!sb->failed && sb->len >= 2 && sb->data[sb->len - 2] == '\\')
    kiln__sb_append(sb, "\n");
}

/* Emits `#line N "kiln-generated"` with N the true line number of the line
 * after it, so a message about kiln's own code names the real line. */
static void line_generated(kiln__strbuf *sb) {
  end_line(sb);
  size_t newlines = 0;
  for (size_t i = 0; i < sb->len && !sb->failed; i++)
    newlines += sb->data[i] == '\n';
  kiln__sb_appendf(sb, "#line %zu \"kiln-generated\"\n", newlines + 2);
}

static const char *elem_type(kiln_dtype dtype) {
  return kiln__dtype_metal_name(dtype);
}

/* The parameter declaration in the body function's list. */
static void emit_param_decl(kiln__strbuf *sb, const kiln__param *p,
                            bool atomic_outputs) {
  const char *t = elem_type(p->dtype);
  switch (p->kind) {
  case KILN__PARAM_INPUT:
    kiln__sb_appendf(sb, "const device %s* %s", t, p->name);
    break;
  case KILN__PARAM_SCALAR:
    kiln__sb_appendf(sb, "const constant %s& %s", t, p->name);
    break;
  case KILN__PARAM_SHAPE:
    kiln__sb_appendf(sb, "const constant int* %s", p->name);
    break;
  case KILN__PARAM_STRIDES:
    kiln__sb_appendf(sb, "const constant int64_t* %s", p->name);
    break;
  case KILN__PARAM_NDIM:
    kiln__sb_appendf(sb, "const constant int& %s", p->name);
    break;
  case KILN__PARAM_OUTPUT:
    if (atomic_outputs)
      kiln__sb_appendf(sb, "device atomic<%s>* %s", t, p->name);
    else
      kiln__sb_appendf(sb, "device %s* %s", t, p->name);
    break;
  }
}

/* `template <typename T, int N, bool B>` from the template arguments. */
static void emit_template_line(kiln__strbuf *sb, const kiln__signature *sig) {
  if (sig->num_targs <= 0)
    return;
  kiln__sb_append(sb, "template <");
  for (int t = 0; t < sig->num_targs; t++) {
    const kiln_template_arg *ta = &sig->targs[t];
    const char *kind = ta->kind == KILN_TEMPLATE_DTYPE ? "typename"
                       : ta->kind == KILN_TEMPLATE_INT ? "int"
                                                       : "bool";
    kiln__sb_appendf(sb, "%s%s %s", t ? ", " : "", kind, ta->name);
  }
  kiln__sb_append(sb, ">\n");
}

/* `<float, 4, true>` for the call, or nothing without template args. */
static void emit_template_values(kiln__strbuf *sb, const kiln__signature *sig) {
  if (sig->num_targs <= 0)
    return;
  kiln__sb_append(sb, "<");
  for (int t = 0; t < sig->num_targs; t++) {
    const kiln_template_arg *ta = &sig->targs[t];
    if (t)
      kiln__sb_append(sb, ", ");
    if (ta->kind == KILN_TEMPLATE_DTYPE)
      kiln__sb_append(sb, elem_type(ta->dtype));
    else if (ta->kind == KILN_TEMPLATE_INT)
      kiln__sb_appendf(sb, "%lld", (long long)ta->value);
    else
      kiln__sb_append(sb, ta->value ? "true" : "false");
  }
  kiln__sb_append(sb, ">");
}

/* The body function: params, then the attributes the body names. */
static void emit_body_function(kiln__strbuf *sb, const kiln__signature *sig,
                               const char *qualifiers) {
  emit_template_line(sb, sig);
  kiln__sb_appendf(sb, "%s void kiln_kernel_body(", qualifiers);
  for (int k = 0; k < sig->num_params; k++) {
    kiln__sb_append(sb, k ? ",\n    " : "\n    ");
    emit_param_decl(sb, &sig->params[k], sig->atomic_outputs);
  }
  bool first = sig->num_params == 0;
  for (int a = 0; a < KILN__ATTR_COUNT; a++) {
    if (!(sig->scan->attrs_used & (1u << a)))
      continue;
    kiln__sb_appendf(sb, "%sconst %s %s", first ? "\n    " : ",\n    ",
                     kiln__attr_type((kiln__attr)a),
                     kiln__attr_name((kiln__attr)a));
    first = false;
  }
  kiln__sb_append(sb, ") {\n#line 1 \"body\"\n");
  kiln__sb_append(sb, sig->scan->body ? sig->scan->body : "");
  end_line(sb);
  kiln__sb_append(sb, "}\n");
}

/* The highest component index of a swizzle, which must be below the size
 * of a vector that has it (.z is no member of a 2-vector). */
static int swizzle_max_comp(const int *comps, int len) {
  int hi = 0;
  for (int k = 0; k < len; k++)
    hi = comps[k] > hi ? comps[k] : hi;
  return hi;
}

/*
 * Lists the swizzle members the kernel names, per vector size, as the
 * macros KILN_SWIZZLES_USED_2/3/4 that metal_types.h declares its members
 * from: X(name, K, i...) for a K-letter name picking components i.... A
 * kernel with few swizzles then costs the compiler a few classes rather
 * than 481. Nothing is written when the scan could not see every member
 * name; the prelude then declares them all.
 */
static void emit_swizzle_lists(kiln__strbuf *sb, const kiln__scan *scan) {
  if (scan->swizzles_all)
    return;
  for (int size = 2; size <= 4; size++) {
    kiln__sb_appendf(sb, "#define KILN_SWIZZLES_USED_%d(X)", size);
    for (int idx = 0; idx < KILN__NUM_SWIZZLES; idx++) {
      char name[5];
      int comps[4];
      int len = kiln__swizzle_decode(idx, name, comps);
      if (!kiln__scan_uses_swizzle(scan, idx) ||
          swizzle_max_comp(comps, len) >= size)
        continue;
      kiln__sb_appendf(sb, " \\\n  X(%s, %d", name, len);
      for (int k = 0; k < len; k++)
        kiln__sb_appendf(sb, ", %d", comps[k]);
      kiln__sb_append(sb, ")");
    }
    kiln__sb_append(sb, "\n");
  }
}

static const char *const need_names[KILN__NEED_COUNT] = {
#define KILN__NEED_NAME_(id, name) name,
    KILN__NEED_MAP(KILN__NEED_NAME_)
#undef KILN__NEED_NAME_
};

/*
 * Tells the prelude which of its separable sections the kernel needs:
 * KILN_NEEDS_KNOWN, then KILN_NEED_<SECTION> for each one that the body
 * or header names (scan.c) or the signature needs (atomic outputs). The
 * prelude leaves the others out, which saves NVRTC and the C++ compiler
 * their parsing. Within MATH, KILN_MATH_SOME and KILN_USE_<name> name the
 * functions the kernel spells, and metal_math.h declares only those (and
 * what they use). Nothing is written when the scan could not see every
 * name; the prelude then declares every section.
 */
static void emit_need_defines(kiln__strbuf *sb, const kiln__signature *sig) {
  if (sig->scan->needs_all)
    return;
  unsigned needs = sig->scan->needs;
  if (sig->atomic_outputs)
    needs |= KILN__NEED(ATOMIC);
  /* simd_min/simd_max call min/max; CUDA's atomics use kiln_signed. */
  if (needs & (KILN__NEED(SIMD) | KILN__NEED(ATOMIC)))
    needs |= KILN__NEED(MATH);
  kiln__sb_append(sb, "#define KILN_NEEDS_KNOWN 1\n");
  for (int k = 0; k < KILN__NEED_COUNT; k++)
    if (needs & (1u << k))
      kiln__sb_appendf(sb, "#define KILN_NEED_%s 1\n", need_names[k]);
  if (needs & (KILN__NEED(SIMD) | KILN__NEED(ATOMIC)) ||
      !(needs & KILN__NEED(MATH)))
    return; /* SIMD and atomics use math functions of their own */
  kiln__sb_append(sb, "#define KILN_MATH_SOME 1\n");
  for (int k = 0; kiln__math_name(k) != NULL; k++)
    if (sig->scan->math_used & ((uint64_t)1 << k))
      kiln__sb_appendf(sb, "#define KILN_USE_%s 1\n", kiln__math_name(k));
}

/* Everything before the entry glue: the section and swizzle lists,
 * prelude, header, body function. */
static void emit_common(kiln__strbuf *sb, const kiln__signature *sig,
                        const char *prelude, const char *body_qualifiers) {
  emit_need_defines(sb, sig);
  emit_swizzle_lists(sb, sig->scan);
  kiln__sb_append(sb, prelude ? prelude : "");
  end_line(sb);
  kiln__sb_append(sb, "#line 1 \"header\"\n");
  kiln__sb_append(sb, sig->scan->header ? sig->scan->header : "");
  line_generated(sb);
  emit_body_function(sb, sig, body_qualifiers);
  line_generated(sb);
}

/* ---- the body's call, shared by every target's glue ---------------------- */

/*
 * Appends `kiln_kernel_body<template values>(args)`: one argument per
 * parameter (emit_arg) and then one per attribute the body uses
 * (attr_value), each on its own line.
 */
static void emit_body_call(
    kiln__strbuf *sb, const kiln__signature *sig,
    void (*emit_arg)(kiln__strbuf *sb, const kiln__param *p, int k,
                     bool atomic_outputs),
    const char *(*attr_value)(kiln__attr a)) {
  kiln__sb_append(sb, "kiln_kernel_body");
  emit_template_values(sb, sig);
  kiln__sb_append(sb, "(");
  bool first = true;
  for (int k = 0; k < sig->num_params; k++) {
    kiln__sb_append(sb, first ? "\n      " : ",\n      ");
    emit_arg(sb, &sig->params[k], k, sig->atomic_outputs);
    first = false;
  }
  for (int a = 0; a < KILN__ATTR_COUNT; a++) {
    if (!(sig->scan->attrs_used & (1u << a)))
      continue;
    kiln__sb_appendf(sb, "%s%s", first ? "\n      " : ",\n      ",
                     attr_value((kiln__attr)a));
    first = false;
  }
  kiln__sb_append(sb, ")");
}

/* ---- the CPU entry glue (src/backend/cpu/cpu_abi.h) ---------------------- */

/* The C++ expression the CPU glue passes for an attribute, from L (the
 * launch), g (the group), lx/ly/lz (local position) and lin (its index). */
static const char *cpu_attr_value(kiln__attr a) {
  switch (a) {
  case KILN__ATTR_THREAD_POSITION_IN_GRID:
    return "uint3(g->group_pos[0] * L->tg[0] + lx, "
           "g->group_pos[1] * L->tg[1] + ly, g->group_pos[2] * L->tg[2] + lz)";
  case KILN__ATTR_THREAD_POSITION_IN_THREADGROUP:
    return "uint3(lx, ly, lz)";
  case KILN__ATTR_THREADGROUP_POSITION_IN_GRID:
    return "uint3(g->group_pos[0], g->group_pos[1], g->group_pos[2])";
  case KILN__ATTR_THREADS_PER_THREADGROUP:
    return "uint3(g->group_size[0], g->group_size[1], g->group_size[2])";
  case KILN__ATTR_THREADGROUPS_PER_GRID:
    return "uint3(L->groups[0], L->groups[1], L->groups[2])";
  case KILN__ATTR_THREADS_PER_GRID:
  case KILN__ATTR_GRID_SIZE:
    return "uint3(L->grid[0], L->grid[1], L->grid[2])";
  case KILN__ATTR_GRID_ORIGIN:
    return "uint3(0u, 0u, 0u)";
  case KILN__ATTR_DISPATCH_THREADS_PER_THREADGROUP:
    return "uint3(L->tg[0], L->tg[1], L->tg[2])";
  case KILN__ATTR_THREAD_INDEX_IN_THREADGROUP:
    return "lin";
  case KILN__ATTR_THREAD_INDEX_IN_SIMDGROUP:
    return "lin % 32u";
  case KILN__ATTR_SIMDGROUP_INDEX_IN_THREADGROUP:
    return "lin / 32u";
  case KILN__ATTR_THREADS_PER_SIMDGROUP:
  case KILN__ATTR_THREAD_EXECUTION_WIDTH:
    return "32u";
  case KILN__ATTR_SIMDGROUPS_PER_THREADGROUP:
    return "(g->num_threads + 31u) / 32u";
  case KILN__ATTR_DISPATCH_SIMDGROUPS_PER_THREADGROUP:
    return "(L->tg[0] * L->tg[1] * L->tg[2] + 31u) / 32u";
  case KILN__ATTR_QUADGROUP_INDEX_IN_THREADGROUP:
    return "lin / 4u";
  case KILN__ATTR_THREAD_INDEX_IN_QUADGROUP:
    return "lin % 4u";
  case KILN__ATTR_QUADGROUPS_PER_THREADGROUP:
    return "(g->num_threads + 3u) / 4u";
  case KILN__ATTR_DISPATCH_QUADGROUPS_PER_THREADGROUP:
    return "(L->tg[0] * L->tg[1] * L->tg[2] + 3u) / 4u";
  case KILN__ATTR_COUNT:
    break;
  }
  return "0u";
}

/* The argument for parameter k: L->args[k] cast to the parameter's type. */
static void emit_cpu_arg(kiln__strbuf *sb, const kiln__param *p, int k,
                         bool atomic_outputs) {
  const char *t = elem_type(p->dtype);
  switch (p->kind) {
  case KILN__PARAM_INPUT:
    kiln__sb_appendf(sb, "(const %s*)L->args[%d]", t, k);
    break;
  case KILN__PARAM_SCALAR:
    kiln__sb_appendf(sb, "*(const %s*)L->args[%d]", t, k);
    break;
  case KILN__PARAM_SHAPE:
    kiln__sb_appendf(sb, "(const int*)L->args[%d]", k);
    break;
  case KILN__PARAM_STRIDES:
    kiln__sb_appendf(sb, "(const int64_t*)L->args[%d]", k);
    break;
  case KILN__PARAM_NDIM:
    kiln__sb_appendf(sb, "*(const int*)L->args[%d]", k);
    break;
  case KILN__PARAM_OUTPUT:
    if (atomic_outputs)
      kiln__sb_appendf(sb, "(atomic<%s>*)L->args[%d]", t, k);
    else
      kiln__sb_appendf(sb, "(%s*)L->args[%d]", t, k);
    break;
  }
}

/* kiln_cpu_call: one thread's call of the body with its attributes. */
static void emit_cpu_call(kiln__strbuf *sb, const kiln__signature *sig) {
  kiln__sb_append(sb,
                  "static inline void kiln_cpu_call(const kiln_cpu_launch *L, "
                  "kiln_cpu_group *g,\n"
                  "    uint lx, uint ly, uint lz, uint lin) {\n"
                  "  (void)L; (void)g; (void)lx; (void)ly; (void)lz; "
                  "(void)lin;\n"
                  "  ");
  emit_body_call(sb, sig, emit_cpu_arg, cpu_attr_value);
  kiln__sb_append(sb, ";\n}\n\n");
}

/* The exported functions of cpu_abi.h around kiln_cpu_call. */
static void emit_cpu_glue(kiln__strbuf *sb, const kiln__signature *sig) {
  kiln__sb_append(sb, "extern \"C\" KILN_CPU_EXPORT uint32_t "
                      "kiln_cpu_abi_version(void) {\n"
                      "  return KILN_CPU_ABI_VERSION;\n}\n\n");
  kiln__sb_appendf(sb,
                   "extern \"C\" KILN_CPU_EXPORT uint32_t "
                   "kiln_cpu_kernel_flags(void) {\n  return %s;\n}\n\n",
                   sig->scan->needs_fibers ? "KILN_CPU_NEEDS_FIBERS" : "0u");
  emit_cpu_call(sb, sig);
  /* Loop mode: the group's threads in order, x fastest. */
  kiln__sb_append(
      sb,
      "extern \"C\" KILN_CPU_EXPORT void kiln_cpu_run_group("
      "const kiln_cpu_launch *L,\n"
      "                                                   kiln_cpu_group *g) "
      "{\n"
      "  kiln_cpu_tls_group = g;\n"
      "  const uint sx = g->group_size[0], sy = g->group_size[1];\n"
      "  const uint sz = g->group_size[2];\n"
      "  for (uint z = 0; z < sz; ++z)\n"
      "    for (uint y = 0; y < sy; ++y)\n"
      "      for (uint x = 0; x < sx; ++x) {\n"
      "        const uint lin = x + y * sx + z * sx * sy;\n"
      "        g->current = lin;\n"
      "        kiln_cpu_call(L, g, x, y, z, lin);\n"
      "      }\n"
      "}\n\n");
  /* Fiber mode: one thread, its local position decomposed from lin. */
  kiln__sb_append(
      sb,
      "extern \"C\" KILN_CPU_EXPORT void kiln_cpu_run_thread("
      "const kiln_cpu_launch *L,\n"
      "                                                    kiln_cpu_group *g,"
      "\n"
      "                                                    uint32_t lin) {\n"
      "  kiln_cpu_tls_group = g;\n"
      "  const uint sx = g->group_size[0], sy = g->group_size[1];\n"
      "  kiln_cpu_call(L, g, lin % sx, (lin / sx) % sy, lin / (sx * sy), "
      "lin);\n"
      "}\n");
}

/* ---- the CUDA entry glue (src/backend/cuda/cuda_abi.h) ------------------ */

/*
 * The C++ expression the CUDA glue passes for an attribute. The glue has
 * kiln_dims (the launch), the local position kiln_lx/ly/lz, the group
 * kiln_gx/gy/gz, the group's real size kiln_sx/sy/sz and kiln_lin, the
 * linear local index (all kiln_ names: the user's header may define
 * macros). kiln_lin is CUDA's linear thread id over blockDim, the one
 * warps are cut from: kiln_lin % 32 is the hardware lane that the
 * SIMD-group functions use (%laneid). Metal's linear index is over the
 * group's real size (kiln_mlin). The backend makes the two equal for
 * every thread that runs the body: where they would differ (a partial
 * group in one dimension, a later dimension's tg above 1) it launches the
 * partial groups as separate regions whose blockDim is their real size
 * (cuda_abi.h), so SIMD groups are cut exactly as on Metal.
 */
static const char *cuda_attr_value(kiln__attr a) {
  switch (a) {
  case KILN__ATTR_THREAD_POSITION_IN_GRID:
    return "uint3(kiln_gx * kiln_dims.tg[0] + kiln_lx, "
           "kiln_gy * kiln_dims.tg[1] + kiln_ly, "
           "kiln_gz * kiln_dims.tg[2] + kiln_lz)";
  case KILN__ATTR_THREAD_POSITION_IN_THREADGROUP:
    return "uint3(kiln_lx, kiln_ly, kiln_lz)";
  case KILN__ATTR_THREADGROUP_POSITION_IN_GRID:
    return "uint3(kiln_gx, kiln_gy, kiln_gz)";
  case KILN__ATTR_THREADS_PER_THREADGROUP:
    return "uint3(kiln_sx, kiln_sy, kiln_sz)";
  case KILN__ATTR_THREADGROUPS_PER_GRID:
    /* Not gridDim: a region launch covers only part of the grid. */
    return "uint3((kiln_dims.grid[0] + kiln_dims.tg[0] - 1u) / "
           "kiln_dims.tg[0], (kiln_dims.grid[1] + kiln_dims.tg[1] - 1u) / "
           "kiln_dims.tg[1], (kiln_dims.grid[2] + kiln_dims.tg[2] - 1u) / "
           "kiln_dims.tg[2])";
  case KILN__ATTR_THREADS_PER_GRID:
  case KILN__ATTR_GRID_SIZE:
    return "uint3(kiln_dims.grid[0], kiln_dims.grid[1], kiln_dims.grid[2])";
  case KILN__ATTR_GRID_ORIGIN:
    return "uint3(0u, 0u, 0u)";
  case KILN__ATTR_DISPATCH_THREADS_PER_THREADGROUP:
    return "uint3(kiln_dims.tg[0], kiln_dims.tg[1], kiln_dims.tg[2])";
  case KILN__ATTR_THREAD_INDEX_IN_THREADGROUP:
    return "kiln_mlin";
  case KILN__ATTR_THREAD_INDEX_IN_SIMDGROUP:
    return "kiln_lin % 32u";
  case KILN__ATTR_SIMDGROUP_INDEX_IN_THREADGROUP:
    return "kiln_lin / 32u";
  case KILN__ATTR_THREADS_PER_SIMDGROUP:
  case KILN__ATTR_THREAD_EXECUTION_WIDTH:
    return "32u";
  case KILN__ATTR_SIMDGROUPS_PER_THREADGROUP:
    return "(kiln_sx * kiln_sy * kiln_sz + 31u) / 32u";
  case KILN__ATTR_DISPATCH_SIMDGROUPS_PER_THREADGROUP:
    return "(kiln_dims.tg[0] * kiln_dims.tg[1] * kiln_dims.tg[2] + 31u) / 32u";
  case KILN__ATTR_QUADGROUP_INDEX_IN_THREADGROUP:
    return "kiln_mlin / 4u";
  case KILN__ATTR_THREAD_INDEX_IN_QUADGROUP:
    return "kiln_mlin % 4u";
  case KILN__ATTR_QUADGROUPS_PER_THREADGROUP:
    return "(kiln_sx * kiln_sy * kiln_sz + 3u) / 4u";
  case KILN__ATTR_DISPATCH_QUADGROUPS_PER_THREADGROUP:
    return "(kiln_dims.tg[0] * kiln_dims.tg[1] * kiln_dims.tg[2] + 3u) / 4u";
  case KILN__ATTR_COUNT:
    break;
  }
  return "0u";
}

/* Parameter k of the entry point, by cuda_abi.h: buffers as pointers, a 0-d
 * input as a pointer to its value, shapes and strides by value. */
static void emit_cuda_param(kiln__strbuf *sb, const kiln__param *p, int k) {
  const char *t = elem_type(p->dtype);
  switch (p->kind) {
  case KILN__PARAM_INPUT:
  case KILN__PARAM_SCALAR:
    kiln__sb_appendf(sb, "const %s* kiln_a%d", t, k);
    break;
  /* __grid_constant__: the body takes the parameter's address (a
   * `const constant int*`); without it the compiler copies the 64/128-byte
   * struct into every thread's local memory. */
  case KILN__PARAM_SHAPE:
    kiln__sb_appendf(sb, "const __grid_constant__ kiln_cuda_shape kiln_a%d",
                     k);
    break;
  case KILN__PARAM_STRIDES:
    kiln__sb_appendf(sb,
                     "const __grid_constant__ kiln_cuda_strides kiln_a%d", k);
    break;
  case KILN__PARAM_NDIM:
    kiln__sb_appendf(sb, "int kiln_a%d", k);
    break;
  case KILN__PARAM_OUTPUT:
    kiln__sb_appendf(sb, "%s* kiln_a%d", t, k);
    break;
  }
}

/* The body's argument for parameter k. The strides arrive as long long
 * and the body takes int64_t (long): same bits, a different C++ type. */
static void emit_cuda_arg(kiln__strbuf *sb, const kiln__param *p, int k,
                          bool atomic_outputs) {
  const char *t = elem_type(p->dtype);
  switch (p->kind) {
  case KILN__PARAM_INPUT:
  case KILN__PARAM_NDIM:
    kiln__sb_appendf(sb, "kiln_a%d", k);
    break;
  case KILN__PARAM_SCALAR:
    kiln__sb_appendf(sb, "*kiln_a%d", k);
    break;
  case KILN__PARAM_SHAPE:
    kiln__sb_appendf(sb, "kiln_a%d.v", k);
    break;
  case KILN__PARAM_STRIDES:
    kiln__sb_appendf(sb, "(const int64_t*)kiln_a%d.v", k);
    break;
  case KILN__PARAM_OUTPUT:
    if (atomic_outputs)
      kiln__sb_appendf(sb, "(atomic<%s>*)kiln_a%d", t, k);
    else
      kiln__sb_appendf(sb, "kiln_a%d", k);
    break;
  }
}

/*
 * The kernel: extern "C" kiln_k_NAME(params..., kiln_dims) (the name:
 * kiln__dialect_entry_name). Threads past the
 * grid in a ragged last block return before the body, so exactly `grid`
 * threads run it (Metal's dispatchThreads). That is safe with barriers in
 * the body: the PTX ISA says bar.sync (__syncthreads) waits for the
 * non-exited threads only, and that when exiting threads are all a
 * barrier still waits for, the barrier is released (`exit` and
 * `barrier{.cta}` in the PTX ISA). Nothing may follow the body's call, so
 * a `return` in the body also ends the thread. The test `l >= grid - g *
 * tg` cannot overflow, since g * tg < grid for every launched group. In a
 * region launch (cuda_abi.h) blockDim is the region's real group size, so
 * no thread is past the grid and kiln_lin == kiln_mlin.
 *
 * On sm_90+ every thread first executes griddepcontrol.wait, then
 * griddepcontrol.launch_dependents (PTX ISA 7.8). The backend launches
 * kernels with programmatic stream serialization there (cuda_backend.c:
 * the next kernel's groups may start before this grid has finished), so
 * the wait, before any access to memory, is what keeps a kernel from
 * reading what the grid before it has not yet written (or overwriting
 * what it still reads): it returns once every earlier grid of the stream
 * has completed with its memory visible, and at once for a launch without
 * the attribute. The trigger right after it lets the next launch place
 * its groups on free SMs as soon as every group of this grid has started,
 * where they wait in turn: the launch latency between two kernels of a
 * stream (microseconds a launch, a large share of a small kernel's time)
 * then overlaps this grid's run rather than following its end.
 */
/* See dialect.h. */
void kiln__dialect_entry_name(const char *kernel_name, char *out, size_t cap) {
  if (kernel_name == NULL || kernel_name[0] == '\0') {
    snprintf(out, cap, "%s", "kiln_entry");
    return;
  }
  size_t n = (size_t)snprintf(out, cap, "kiln_k_");
  for (const char *c = kernel_name; *c != '\0' && n + 1 < cap; c++, n++) {
    bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '_';
    out[n] = ok ? *c : '_';
  }
  out[n] = '\0';
}

static void emit_cuda_glue(kiln__strbuf *sb, const kiln__signature *sig) {
  /* The launch's block size as the bound: a fixed 1024 would cap every
   * kernel at 64 registers per thread (32 with the default min blocks),
   * spilling register-tiled kernels such as a GEMM. */
  kiln__sb_append(sb, "extern \"C\" __global__ void ");
  if (sig->max_threads > 0)
    kiln__sb_appendf(sb, "__launch_bounds__(%u) ", sig->max_threads);
  char entry[KILN__ENTRY_NAME_CAP];
  kiln__dialect_entry_name(sig->kernel_name, entry, sizeof entry);
  kiln__sb_appendf(sb, "%s(", entry);
  for (int k = 0; k < sig->num_params; k++) {
    kiln__sb_append(sb, "\n    ");
    emit_cuda_param(sb, &sig->params[k], k);
    kiln__sb_append(sb, ",");
  }
  kiln__sb_append(
      sb,
      "\n    kiln_cuda_dims kiln_dims) {\n"
      "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n"
      "  /* programmatic dependent launch: wait for the grids before this\n"
      "   * one in the stream (their memory visible), then let the next\n"
      "   * launch start its groups (cuda_backend.c) */\n"
      "  asm volatile(\"griddepcontrol.wait;\" ::: \"memory\");\n"
      "  asm volatile(\"griddepcontrol.launch_dependents;\" ::: \"memory\");\n"
      "#endif\n"
      "  const uint kiln_lx = threadIdx.x, kiln_ly = threadIdx.y;\n"
      "  const uint kiln_lz = threadIdx.z;\n"
      "  const uint kiln_gx = blockIdx.x + kiln_dims.group_offset[0];\n"
      "  const uint kiln_gy = blockIdx.y + kiln_dims.group_offset[1];\n"
      "  const uint kiln_gz = blockIdx.z + kiln_dims.group_offset[2];\n"
      "  const uint kiln_rx = kiln_dims.grid[0] - kiln_gx * kiln_dims.tg[0];\n"
      "  const uint kiln_ry = kiln_dims.grid[1] - kiln_gy * kiln_dims.tg[1];\n"
      "  const uint kiln_rz = kiln_dims.grid[2] - kiln_gz * kiln_dims.tg[2];\n"
      "  if (kiln_lx >= kiln_rx || kiln_ly >= kiln_ry || kiln_lz >= kiln_rz)\n"
      "    return; /* past the grid: not a thread of the dispatch */\n"
      "  const uint kiln_sx = kiln_rx < kiln_dims.tg[0] ? kiln_rx "
      ": kiln_dims.tg[0];\n"
      "  const uint kiln_sy = kiln_ry < kiln_dims.tg[1] ? kiln_ry "
      ": kiln_dims.tg[1];\n"
      "  const uint kiln_sz = kiln_rz < kiln_dims.tg[2] ? kiln_rz "
      ": kiln_dims.tg[2];\n"
      "  const uint kiln_lin =\n"
      "      kiln_lx + blockDim.x * (kiln_ly + blockDim.y * kiln_lz);\n"
      "  const uint kiln_mlin = kiln_lx + kiln_sx * (kiln_ly + kiln_sy * "
      "kiln_lz);\n"
      "  (void)kiln_sx; (void)kiln_sy; (void)kiln_sz; (void)kiln_lin;\n"
      "  (void)kiln_mlin;\n"
      "  ");
  emit_body_call(sb, sig, emit_cuda_arg, cuda_attr_value);
  kiln__sb_append(sb, ";\n}\n");
}

/* ---- targets ------------------------------------------------------------- */

/* What differs per target: the body function's qualifiers and the entry
 * glue. A target without glue is not built yet. */
typedef struct codegen_target {
  const char *name;
  const char *body_qualifiers;
  void (*emit_glue)(kiln__strbuf *sb, const kiln__signature *sig);
} codegen_target;

static const codegen_target targets[] = {
    [KILN__TARGET_CPU] = {"cpu", "static inline", emit_cpu_glue},
    [KILN__TARGET_CUDA] = {"cuda", "static __device__ __forceinline__",
                          emit_cuda_glue},
};

/*
 * Appends the whole translation unit for `target` to `out` (initialized by
 * the caller, usually empty). Fails with
 * KILN_ERROR_UNSUPPORTED for a target whose glue is not built and
 * KILN_ERROR_OUT_OF_MEMORY.
 */
kiln_status kiln__dialect_generate(const kiln__signature *sig,
                                   kiln__codegen_target target,
                                   const char *prelude, kiln__strbuf *out) {
  if (!sig || !sig->scan || !out)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the signature or the output buffer is NULL.");
  const char *kernel = sig->kernel_name ? sig->kernel_name : "(unnamed)";
  if ((unsigned)target >= sizeof targets / sizeof targets[0])
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s': unknown code generation target %d.",
                       kernel, (int)target);
  const codegen_target *tg = &targets[target];
  if (!tg->emit_glue)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "kernel '%s': the %s backend is not built yet.", kernel,
                       target == KILN__TARGET_CUDA ? "CUDA" : tg->name);
  uint64_t t0 = kiln__now_ns(); /* for the stage clock (kcache.h) */
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  emit_common(&sb, sig, prelude, tg->body_qualifiers);
  tg->emit_glue(&sb, sig);
  kiln__stage_add(KILN__STAGE_GENERATE, kiln__now_ns() - t0);
  if (sb.failed) {
    kiln__sb_free(&sb);
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while generating the source of kernel "
                       "'%s'.",
                       kernel);
  }
  if (!out->data && !out->failed) { /* the usual case: hand it over */
    *out = sb;
    return KILN_OK;
  }
  kiln__sb_append_n(out, sb.data, sb.len);
  kiln__sb_free(&sb);
  if (out->failed)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while generating the source of kernel "
                       "'%s'.",
                       kernel);
  return KILN_OK;
}
