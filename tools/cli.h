/*
 * What the parts of the `kiln` command-line tool share: kiln_cli.c holds
 * the command table, `kiln run`, `kiln compile`, `kiln info` and these
 * helpers; cli_linalg.c holds `kiln linalg`. Messages follow one rule:
 * one paragraph on stderr starting "kiln <command>: ".
 */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "kiln.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Prints a usage error with a pointer to the help; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a runtime error; returns EXIT_RUNTIME. */
int runtime_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* Prints "<what>: <kiln's message>" for a failed kiln call; returns
 * EXIT_RUNTIME. */
int library_error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A floating-point number as strtod reads it, with nothing around it. */
bool parse_double(const char *s, double *out);
/* The closest of `names` to `word` (within two edits), or NULL. */
const char *closest(const char *word, const char *const *names,
                    size_t count);
/* Sets a flag that may be given once; returns 0 or EXIT_USAGE. */
int set_once(const char **slot, const char *flag, const char *value);
/* cpu, gpu or gpu:N. */
bool valid_device_spec(const char *s);
/* The --device SPEC, or the default device when SPEC is NULL; prints the
 * error and returns its exit status on failure. */
int open_device(const char *spec, kiln_device **device);

/* --out-dir exists, is a directory and is writable. */
int check_out_dir(const char *dir);
/* "DIR/PREFIXNAME.npySUFFIX", malloc'ed (NULL when out of memory). */
char *join_path(const char *dir, const char *prefix, const char *name,
                const char *suffix);
/* Writes an array to a fresh temporary next to DIR/NAME.npy (so that a
 * rename puts it in place atomically); *tmp_out receives its path. */
int write_temp(const char *dir, const char *name, kiln_dtype dtype, int ndim,
               const int64_t *shape, const void *data, char **tmp_out);
/* "2x3x4" ("()" for 0-d). */
void format_shape(char *out, size_t cap, const kiln_output_spec *sp);

/* `kiln linalg` (cli_linalg.c). */
int cmd_linalg(int argc, char **argv);
void print_linalg_help(FILE *f);

#endif /* KILN_TOOLS_CLI_H */
