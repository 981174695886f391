/*
 * The `kiln` command-line tool (KILN_CLI_PATH): info, info --json, run end
 * to end with .npy files (written and read here by an independent writer
 * and reader, and by numpy when python3 has it), and every error case:
 * non-zero exit, one paragraph on stderr, no output file written.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#ifndef KILN_CLI_PATH
#define KILN_CLI_PATH "kiln"
#endif

/* ---- running the CLI ---------------------------------------------------------- */

static bool kt_have_python(const char *module) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "python3 -c 'import %s' >/dev/null 2>&1",
           module);
  return system(cmd) == 0;
}

static char *kt_write_text(const char *dir, const char *name,
                           const char *text) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CHECK(kt_write_file(path, text, strlen(text)), "write %s", path);
  return strdup(path);
}

/* ---- tests ---------------------------------------------------------------------- */

void test_cli_info(void) {
  kt_need_cli();
  kt_cli r = kt_kiln("info", NULL);
  CHECK(r.rc == 0, "kiln info exit %d, stderr: %s", r.rc, r.err);
  CHECK(strstr(r.out, kiln_version()) != NULL, "version in: %s", r.out);
  CHECK(strstr(r.out, "cpu") != NULL, "the cpu device is listed: %s", r.out);
  CHECK(strstr(r.out, "1024") != NULL, "max threadgroup size shown: %s",
        r.out);
  kt_cli_free(&r);
  r = kt_kiln("--version", NULL);
  CHECK(r.rc == 0 && strstr(r.out, kiln_version()), "kiln --version: %s",
        r.out);
  kt_cli_free(&r);
  r = kt_kiln("--help", NULL);
  CHECK(r.rc == 0 && strstr(r.out, "run"), "kiln --help lists run");
  kt_cli_free(&r);
  r = kt_kiln("frobnicate", NULL);
  CHECK(r.rc != 0 && strstr(r.err, "frobnicate"),
        "unknown subcommand: exit %d, stderr %s", r.rc, r.err);
  kt_cli_free(&r);
}

void test_cli_info_json(void) {
  kt_need_cli();
  kt_cli r = kt_kiln("info", "--json", NULL);
  CHECK(r.rc == 0, "kiln info --json exit %d: %s", r.rc, r.err);
  CHECK(r.out[0] == '{' || strchr(r.out, '{'), "looks like JSON: %s", r.out);
  if (!kt_have_python("json"))
    kt_skip("python3 is not available to validate the JSON");
  char *dir = kt_tempdir("json");
  char *path = kt_write_text(dir, "info.json", r.out);
  char cmd[4400];
  snprintf(cmd, sizeof cmd,
           "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
           "assert \"version\" in d and \"devices\" in d and "
           "\"cache_dir\" in d and \"gpu_unavailable_reason\" in d; "
           "assert any(x.get(\"backend\") == \"cpu\" or \"cpu\" in "
           "json.dumps(x) for x in d[\"devices\"])' %s",
           path);
  CHECK(system(cmd) == 0, "JSON invalid or incomplete:\n%s", r.out);
  kt_cli_free(&r);
  free(path);
  kt_rmtree(dir);
  free(dir);
}

void test_cli_run(void) {
  kt_need_cli();
  char *dir = kt_tempdir("clirun"), out_dir[4200], a_path[4200];
  snprintf(out_dir, sizeof out_dir, "%s/out", dir);
  CHECK(mkdir(out_dir, 0700) == 0, "mkdir");
  float a[12];
  kt_random_fill(KILN_FLOAT32, a, 12, -5, 5);
  int64_t shape[2] = {3, 4};
  snprintf(a_path, sizeof a_path, "%s/a.npy", dir);
  kt_npy_write(a_path, KILN_FLOAT32, 2, shape, a);
  char *body = kt_write_text(dir, "body.metal",
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i] = T(a[i] * alpha + float(N));\n"
                             "if (i == 0) total[0] = float(a_shape[0]);\n");
  char *header = kt_write_text(dir, "header.metal",
                               "#include <metal_stdlib>\n"
                               "using namespace metal;\n");
  char ain[4300];
  snprintf(ain, sizeof ain, "a=%s", a_path);
  kt_cli r = kt_kiln("run", "--name", "cli_affine", "--source", body,
                     "--header", header, "--input", ain, "--scalar",
                     "alpha=2.5:float32", "--output", "out:float64:3x4",
                     "--output", "total:float32:1", "--grid", "12",
                     "--threadgroup", "4,1,1", "--template", "T=float64",
                     "--template", "N=3", "--out-dir", out_dir, NULL);
  CHECK(r.rc == 0, "kiln run exit %d, stderr: %s", r.rc, r.err);
  CHECK(strlen(r.out) == 0, "success prints nothing, printed: %s", r.out);
  kt_cli_free(&r);
  char path[4300];
  snprintf(path, sizeof path, "%s/out.npy", out_dir);
  double *got = kt_npy_read(path, 0, KILN_FLOAT64, "(3, 4)", 12);
  for (int i = 0; i < 12; i++)
    CHECK(got[i] == (double)(a[i] * 2.5f + 3.0f), "out[%d] = %g", i, got[i]);
  free(got);
  snprintf(path, sizeof path, "%s/total.npy", out_dir);
  float *tot = kt_npy_read(path, 0, KILN_FLOAT32, "(1,)", 1);
  CHECK(tot[0] == 3.0f, "a_shape[0] = %g", tot[0]);
  free(tot);
  /* atomic outputs with an init value */
  int32_t bins[500];
  kt_random_fill(KILN_INT32, bins, 500, 0, 7);
  int64_t bn = 500;
  snprintf(a_path, sizeof a_path, "%s/bins.npy", dir);
  kt_npy_write(a_path, KILN_INT32, 1, &bn, bins);
  char *hbody = kt_write_text(
      dir, "hist.metal",
      "uint i = thread_position_in_grid.x;\n"
      "atomic_fetch_add_explicit(&hist[bins[i]], 1u, memory_order_relaxed);\n");
  snprintf(ain, sizeof ain, "bins=%s", a_path);
  r = kt_kiln("run", "--name", "cli_hist", "--source", hbody, "--input", ain,
              "--output", "hist:uint32:8", "--grid", "500,1,1",
              "--threadgroup", "64,1,1", "--atomic-outputs", "--init-value",
              "5", "--out-dir", out_dir, NULL);
  CHECK(r.rc == 0, "histogram run exit %d, stderr: %s", r.rc, r.err);
  kt_cli_free(&r);
  snprintf(path, sizeof path, "%s/hist.npy", out_dir);
  uint32_t *h = kt_npy_read(path, 0, KILN_UINT32, "(8,)", 8);
  uint32_t want[8] = {5, 5, 5, 5, 5, 5, 5, 5};
  for (int i = 0; i < 500; i++)
    want[bins[i]]++;
  for (int b = 0; b < 8; b++)
    CHECK(h[b] == want[b], "hist[%d] = %u, expected %u", b, h[b], want[b]);
  free(h);
  free(hbody);
  free(body);
  free(header);
  kt_rmtree(dir);
  free(dir);
}

void test_cli_run_numpy(void) {
  kt_need_cli();
  if (!kt_have_python("numpy"))
    kt_skip("python3 with numpy is not available");
  char *dir = kt_tempdir("clinp");
  char *body = kt_write_text(dir, "body.metal",
                             "uint i = thread_position_in_grid.x;\n"
                             "y[i] = half(float(x[i]) * s) + h[i];\n"
                             "z[i] = int(x[i]) * k;\n");
  char script[8192];
  snprintf(script, sizeof script,
           "import numpy as np, subprocess, sys, os\n"
           "d = sys.argv[1]\n"
           "rng = np.random.default_rng(%llu)\n"
           "x = rng.uniform(-50, 50, 333).astype(np.float32)\n"
           "h = rng.uniform(-2, 2, 333).astype(np.float16)\n"
           "np.save(os.path.join(d, 'x.npy'), x)\n"
           "np.save(os.path.join(d, 'h.npy'), h)\n"
           "od = os.path.join(d, 'out'); os.mkdir(od)\n"
           "r = subprocess.run(['%s', 'run', '--name', 'np_check',\n"
           "  '--source', os.path.join(d, 'body.metal'),\n"
           "  '--input', 'x=' + os.path.join(d, 'x.npy'),\n"
           "  '--scalar', 's=1.5:float32',\n"
           "  '--input', 'h=' + os.path.join(d, 'h.npy'),\n"
           "  '--scalar', 'k=-3:int32',\n"
           "  '--output', 'y:float16:333', '--output', 'z:int32:333',\n"
           "  '--grid', '333', '--threadgroup', '32', '--out-dir', od],\n"
           "  capture_output=True, text=True)\n"
           "assert r.returncode == 0, r.stderr\n"
           "y = np.load(os.path.join(od, 'y.npy'))\n"
           "z = np.load(os.path.join(od, 'z.npy'))\n"
           "assert y.dtype == np.float16 and y.shape == (333,), y.dtype\n"
           "assert z.dtype == np.int32 and z.shape == (333,), z.dtype\n"
           "ry = ((x.astype(np.float32) * np.float32(1.5)).astype(np.float16)"
           ".astype(np.float32) + h.astype(np.float32)).astype(np.float16)\n"
           "assert np.array_equal(y, ry), (y[:5], ry[:5])\n"
           "assert np.array_equal(z, x.astype(np.int32) * -3)\n",
           (unsigned long long)kt_seed, KILN_CLI_PATH);
  char *sp = kt_write_text(dir, "check.py", script);
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "python3 %s %s", sp, dir);
  CHECK(system(cmd) == 0, "the numpy check failed (see above)");
  free(sp);
  free(body);
  kt_rmtree(dir);
  free(dir);
}

/* Runs a failing command and checks the rules every error follows. */
static void kt_cli_expect_error(const char *what, const char *out_dir,
                                const char *mention, kt_cli r) {
  CHECK(r.rc != 0 && r.rc < 128, "%s: exit status %d (expected an error "
        "exit, not 0 or a crash); stderr: %s", what, r.rc, r.err);
  size_t len = strlen(r.err);
  while (len && r.err[len - 1] == '\n')
    r.err[--len] = '\0';
  CHECK(len > 0, "%s: stderr is empty", what);
  CHECK(strstr(r.err, "\n\n") == NULL, "%s: stderr is more than one "
        "paragraph:\n%s", what, r.err);
  CHECK(strncmp(r.err, "kiln", 4) == 0, "%s: stderr starts with kiln: %s",
        what, r.err);
  if (mention)
    CHECK(strstr(r.err, mention) != NULL, "%s: stderr should mention \"%s\": "
          "%s", what, mention, r.err);
  CHECK(kt_dir_count(out_dir) == 0, "%s: an output file was written", what);
  kt_cli_free(&r);
}

void test_cli_errors(void) {
  kt_need_cli();
  char *dir = kt_tempdir("clierr"), od[4200], a_path[4200], ain[4300];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir");
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  int64_t n = 8;
  snprintf(a_path, sizeof a_path, "%s/a.npy", dir);
  kt_npy_write(a_path, KILN_FLOAT32, 1, &n, a);
  snprintf(ain, sizeof ain, "a=%s", a_path);
  char *ok = kt_write_text(dir, "ok.metal",
                           "uint i = thread_position_in_grid.x;\n"
                           "out[i] = a[i] + 1.0f;\n"
                           "out2[i] = 1.0f;\n");
  char *broken = kt_write_text(dir, "broken.metal",
                               "uint i = thread_position_in_grid.x;\n"
                               "out[i] = a[i] + missing_thing;\n"
                               "out2[i] = 1.0f;\n");
#define KT_RUN_ARGS(...)                                                      \
  kt_kiln("run", "--out-dir", od, __VA_ARGS__, NULL)
  kt_cli_expect_error("missing --name", od, "--name",
                      KT_RUN_ARGS("--source", ok, "--input", ain, "--output",
                                  "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("missing --output", od, "--output",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--grid", "8", "--threadgroup", "8"));
  kt_cli_expect_error("missing --grid", od, "--grid",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:8", "--output",
                                  "out2:float32:8", "--threadgroup", "8"));
  kt_cli_expect_error("bad dtype", od, "float33",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float33:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("bad shape", od, "4xq",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:4xq",
                                  "--output", "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("bad grid", od, "--grid",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8,x",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("negative grid", od, "--grid",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "-8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("unknown flag", od, "--frobnicate",
                      KT_RUN_ARGS("--name", "e", "--frobnicate", "--source",
                                  ok));
  kt_cli_expect_error("missing source file", od, "nope.metal",
                      KT_RUN_ARGS("--name", "e", "--source",
                                  "/nonexistent/nope.metal", "--input", ain,
                                  "--output", "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("missing input file", od, "missing.npy",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  "a=/nonexistent/missing.npy", "--output",
                                  "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("input given twice", od, NULL,
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--input", ain, "--output",
                                  "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("bad scalar", od, "abc",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--scalar", "s=abc:float32",
                                  "--output", "out:float32:8", "--output",
                                  "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("compile error", od, "body:2:",
                      KT_RUN_ARGS("--name", "e", "--source", broken,
                                  "--input", ain, "--output", "out:float32:8",
                                  "--output", "out2:float32:8", "--grid", "8",
                                  "--threadgroup", "8"));
  kt_cli_expect_error("threadgroup over 1024", od, "1024",
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:8",
                                  "--output", "out2:float32:8", "--grid",
                                  "4096", "--threadgroup", "2048"));
  /* The second output fails after the first could be made: nothing is
   * written at all. */
  kt_cli_expect_error("second output bad", od, NULL,
                      KT_RUN_ARGS("--name", "e", "--source", ok, "--input",
                                  ain, "--output", "out:float32:8",
                                  "--output", "out2:bfloat16:8", "--grid",
                                  "8", "--threadgroup", "8"));
#undef KT_RUN_ARGS
  free(ok);
  free(broken);
  kt_rmtree(dir);
  free(dir);
}

void test_cli_npy_errors(void) {
  kt_need_cli();
  char *dir = kt_tempdir("clinpy"), od[4200], p[4200], ain[4300];
  snprintf(od, sizeof od, "%s/out", dir);
  CHECK(mkdir(od, 0700) == 0, "mkdir");
  char *body = kt_write_text(dir, "ok.metal",
                             "uint i = thread_position_in_grid.x;\n"
                             "out[i] = float(a[i]);\n");
  float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  struct {
    const char *what, *mention, *dict;
    size_t bytes;
    bool garbage;
  } cases[] = {
      {"malformed file", "bad.npy", NULL, 0, true},
      {"Fortran order", "ortran",
       "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4), }", 32,
       false},
      {"big-endian", "endian",
       "{'descr': '>f4', 'fortran_order': False, 'shape': (8,), }", 32, false},
      {"truncated data", "bad.npy",
       "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", 20, false},
      {"malformed header", "bad.npy",
       "{'descr': '<f4', 'fortran_order': False, 'shape': (8,, }", 32, false},
      {"unknown descr", "bad.npy",
       "{'descr': '<c8', 'fortran_order': False, 'shape': (4,), }", 32, false},
  };
  snprintf(p, sizeof p, "%s/bad.npy", dir);
  snprintf(ain, sizeof ain, "a=%s", p);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].garbage)
      CHECK(kt_write_file(p, "this is not a numpy file at all\n", 32),
            "write");
    else
      kt_npy_write_dict(p, cases[i].dict, data, cases[i].bytes);
    kt_cli_expect_error(cases[i].what, od, cases[i].mention,
                        kt_kiln("run", "--out-dir", od, "--name", "npy_err",
                                "--source", body, "--input", ain, "--output",
                                "out:float32:8", "--grid", "8",
                                "--threadgroup", "8", NULL));
  }
  free(body);
  kt_rmtree(dir);
  free(dir);
}
