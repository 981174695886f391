/*
 * The disk cache across processes: each probe is this test binary run
 * again (`--child cache_probe VARIANT`) with its own KILN_CACHE_DIR, so
 * its in-memory cache starts empty. The first process compiles, the next
 * loads from disk; corrupted, truncated and foreign files are rebuilt;
 * unsafe directories are refused; KILN_CACHE_DIR=off works.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "runner.h"

/* In the child: runs kernel variant argv[1], prints the cache stats. */
int child_cache_probe(int argc, char **argv) {
  const char *variant = argc > 1 ? argv[1] : "a";
  float mul = strcmp(variant, "a") == 0 ? 3.0f : 5.0f;
  char body[256];
  snprintf(body, sizeof body,
           "uint i = thread_position_in_grid.x;\n"
           "out[i] = float(i) * %.1ff + 1.0f;\n",
           (double)mul);
  kiln_kernel_desc d;
  kt_names nm;
  kt_desc(&d, &nm, "cache_probe", "", "out", NULL, body, 0);
  kiln_kernel *k = NULL;
  kiln_array *out = NULL;
  kiln_status s = kiln_kernel_create(&d, &k);
  int correct = 0;
  if (s == KILN_OK) {
    kt_call c;
    kt_call_init(&c, 100, 1, 1, 32, 1, 1);
    kt_call_out(&c, KILN_FLOAT32, 1, 100, 0, 0);
    s = kt_try_run(k, &c, &out);
  }
  if (s == KILN_OK) {
    float got[100];
    s = kiln_array_to_host(out, got, sizeof got);
    correct = s == KILN_OK;
    for (int i = 0; i < 100; i++)
      correct = correct && got[i] == (float)i * mul + 1.0f;
  }
  kiln_cache_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  char err[2048];
  snprintf(err, sizeof err, "%s", kiln_last_error());
  kiln_cache_get_stats(&st);
  printf("status=%d compiles=%llu memory_hits=%llu disk_hits=%llu "
         "disk_rejects=%llu correct=%d\nerror=%s\n",
         (int)s, (unsigned long long)st.compiles,
         (unsigned long long)st.memory_hits,
         (unsigned long long)st.disk_hits,
         (unsigned long long)st.disk_rejects, correct, err);
  kiln_array_destroy(out);
  kiln_kernel_destroy(k);
  return 0;
}

typedef struct kt_probe {
  int status, correct;
  unsigned long long compiles, memory_hits, disk_hits, disk_rejects;
  char error[2048];
} kt_probe;

static kt_probe kt_run_probe(const char *cache_dir, const char *variant) {
  char env[4200];
  snprintf(env, sizeof env, "KILN_CACHE_DIR=%s", cache_dir);
  char *envs[2] = {env, NULL};
  char *argv[5] = {(char *)kt_self_exe(), "--child", "cache_probe",
                   (char *)variant, NULL};
  char *out = NULL, *err = NULL;
  int rc = kt_spawn(argv, envs, &out, &err, 120);
  kt_probe p;
  memset(&p, 0, sizeof p);
  p.status = -1;
  int n = sscanf(out, "status=%d compiles=%llu memory_hits=%llu disk_hits=%llu "
                      "disk_rejects=%llu correct=%d",
                 &p.status, &p.compiles, &p.memory_hits, &p.disk_hits,
                 &p.disk_rejects, &p.correct);
  CHECK(rc == 0 && n == 6, "probe process failed (exit %d)\nstdout: %s\n"
        "stderr: %s", rc, out, err);
  const char *e = strstr(out, "error=");
  if (e)
    snprintf(p.error, sizeof p.error, "%s", e + 6);
  free(out);
  free(err);
  return p;
}

/* Checks a probe's status and cache statistics. */
static void kt_check_probe_at(const char *file, int line, kt_probe p,
                              int status, unsigned long long compiles,
                              unsigned long long disk_hits,
                              unsigned long long disk_rejects) {
  if (p.status == status && p.compiles == compiles &&
      p.disk_hits == disk_hits && p.disk_rejects == disk_rejects &&
      (status != 0 || p.correct))
    return;
  kt_fail_at(file, line, "probe",
             "status %d compiles %llu disk_hits %llu disk_rejects %llu "
             "correct %d; expected status %d compiles %llu disk_hits %llu "
             "disk_rejects %llu; error: %s",
             p.status, p.compiles, p.disk_hits, p.disk_rejects, p.correct,
             status, compiles, disk_hits, disk_rejects, p.error);
}
#define CHECK_PROBE(p, status, compiles, disk_hits, disk_rejects)             \
  kt_check_probe_at(__FILE__, __LINE__, p, status, compiles, disk_hits,      \
                    disk_rejects)

/* The one cache file (*.kbin or any regular file) in dir, other than
 * `except`; malloc'ed path or NULL. */
static char *kt_cache_file(const char *dir, const char *except) {
  DIR *d = opendir(dir);
  CHECK(d != NULL, "cannot open cache dir %s", dir);
  struct dirent *e;
  char *found = NULL;
  while ((e = readdir(d)) != NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
      continue;
    if (except && strcmp(path, except) == 0)
      continue;
    CHECK(found == NULL, "more than one cache file in %s", dir);
    found = strdup(path);
  }
  closedir(d);
  return found;
}

void test_cache_disk_roundtrip(void) {
  char *dir = kt_tempdir("cache");
  kt_probe p1 = kt_run_probe(dir, "a");
  CHECK_PROBE(p1, 0, 1, 0, 0);
  char *file = kt_cache_file(dir, NULL);
  CHECK(file != NULL, "the first process left a cache file");
  struct stat st;
  CHECK(stat(dir, &st) == 0 && (st.st_mode & 077) == 0,
        "cache dir mode %o: only its owner may use it", st.st_mode & 0777);
  kt_probe p2 = kt_run_probe(dir, "a");
  CHECK_PROBE(p2, 0, 0, 1, 0);
  /* A cache directory that does not exist yet is created (0700). */
  char sub[4200];
  snprintf(sub, sizeof sub, "%s/new/deeper", dir);
  kt_probe p3 = kt_run_probe(sub, "a");
  CHECK_PROBE(p3, 0, 1, 0, 0);
  CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode) &&
            (st.st_mode & 0777) == 0700,
        "created cache dir has mode %o", st.st_mode & 0777);
  free(file);
  kt_rmtree(dir);
  free(dir);
}

void test_cache_corrupt_files(void) {
  char *dir = kt_tempdir("cache");
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 0);
  char *fa = kt_cache_file(dir, NULL);
  CHECK(fa != NULL, "cache file of kernel a");
  size_t size = 0;
  unsigned char *good = kt_read_file(fa, &size);
  CHECK(good && size > 64, "cache file readable (%zu bytes)", size);
  /* flip one byte in the middle of the payload */
  unsigned char *bad = malloc(size);
  memcpy(bad, good, size);
  bad[size / 2] ^= 0x5a;
  CHECK(kt_write_file(fa, bad, size), "rewrite %s", fa);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 1);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 0, 1, 0); /* rebuilt file is good */
  /* flip a header byte */
  memcpy(bad, good, size);
  bad[3] ^= 0x01;
  CHECK(kt_write_file(fa, bad, size), "rewrite %s", fa);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 1);
  /* truncate */
  CHECK(kt_write_file(fa, good, size - 100), "truncate %s", fa);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 1);
  CHECK(kt_write_file(fa, good, 10), "truncate %s", fa);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 1);
  /* another kernel's (valid) file under a's name */
  CHECK_PROBE(kt_run_probe(dir, "b"), 0, 1, 0, 0);
  char *fb = kt_cache_file(dir, fa);
  CHECK(fb != NULL, "cache file of kernel b");
  size_t bsize = 0;
  unsigned char *other = kt_read_file(fb, &bsize);
  CHECK(other && kt_write_file(fa, other, bsize), "copy b over a");
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 1, 0, 1);
  CHECK_PROBE(kt_run_probe(dir, "a"), 0, 0, 1, 0);
  CHECK_PROBE(kt_run_probe(dir, "b"), 0, 0, 1, 0);
  free(other);
  free(bad);
  free(good);
  free(fa);
  free(fb);
  kt_rmtree(dir);
  free(dir);
}

void test_cache_dir_refused(void) {
  char *dir = kt_tempdir("cache");
  CHECK(chmod(dir, 0777) == 0, "chmod");
  kt_probe p = kt_run_probe(dir, "a");
  CHECK(p.status == KILN_ERROR_IO, "world-writable cache dir gave status %d "
        "(%s)", p.status, p.error);
  CHECK(strstr(p.error, dir) != NULL, "the message names the directory: %s",
        p.error);
  CHECK(kt_dir_count(dir) == 0, "nothing written to the refused dir");
  CHECK(chmod(dir, 0770) == 0, "chmod");
  p = kt_run_probe(dir, "a");
  CHECK(p.status == KILN_ERROR_IO, "group-writable cache dir gave status %d "
        "(%s)", p.status, p.error);
  CHECK(chmod(dir, 0700) == 0, "chmod");
  if (geteuid() == 0) {
    CHECK(chown(dir, 12345, 12345) == 0, "chown");
    p = kt_run_probe(dir, "a");
    CHECK(p.status == KILN_ERROR_IO, "cache dir owned by uid 12345 gave "
          "status %d (%s)", p.status, p.error);
    CHECK(strstr(p.error, "12345") != NULL, "the message names the owner: %s",
          p.error);
    CHECK(kt_dir_count(dir) == 0, "nothing written to the refused dir");
    CHECK(chown(dir, 0, 0) == 0, "chown back");
  }
  /* A symlink to a good directory is refused too. */
  char link[4200], target[4200];
  snprintf(target, sizeof target, "%s/real", dir);
  snprintf(link, sizeof link, "%s/link", dir);
  CHECK(mkdir(target, 0700) == 0 && symlink(target, link) == 0, "symlink");
  p = kt_run_probe(link, "a");
  CHECK(p.status == KILN_ERROR_IO, "symlinked cache dir gave status %d (%s)",
        p.status, p.error);
  kt_rmtree(dir);
  free(dir);
}

void test_cache_off(void) {
  char *dir = kt_tempdir("cacheoff");
  CHECK_PROBE(kt_run_probe("off", "a"), 0, 1, 0, 0);
  CHECK_PROBE(kt_run_probe("off", "a"), 0, 1, 0, 0); /* nothing on disk */
  kt_rmtree(dir);
  free(dir);
}
