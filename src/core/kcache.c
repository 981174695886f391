/*
 * The kernel cache, in memory and on disk.
 *
 * In memory, every module that was loaded stays loaded for the life of the
 * process, keyed by (device, cache key); kernel objects point into this
 * table, so destroying a kernel never unloads code that queued work may
 * still run.
 *
 * On disk, each cache key has one file, <64 hex digits>.kbin, in a
 * directory that only its owner can write. Files are written atomically
 * (temporary name, then rename) and every field is checked on the way
 * back in: a torn, foreign or corrupted file is rebuilt, never loaded.
 *
 * The miss path (generate, key, disk lookup, compile, write, load) feeds
 * the stage clock declared in kcache.h, so that a slow first launch can
 * be taken apart (bench_cuda prints it).
 */
#include "core/kcache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "dialect/dialect.h"

static const char kcache_magic[8] = {'K', 'I', 'L', 'N', 'K', 'B', 'I', 'N'};

/* Cache files larger than this are refused rather than read into memory. */
#define KCACHE_MAX_FILE_BYTES ((uint64_t)1 << 31)

/* ---- statistics ---------------------------------------------------------- */

static _Atomic uint64_t kcache_counters[4];

void kiln__kcache_count(kiln__kcache_counter which) {
  atomic_fetch_add_explicit(&kcache_counters[which], 1, memory_order_relaxed);
}

static uint64_t counter_get(kiln__kcache_counter which) {
  return atomic_load_explicit(&kcache_counters[which], memory_order_relaxed);
}

/*
 * Public: copies the process-wide counters. Only the first struct_size
 * bytes of *stats are written, so older callers keep working.
 */
kiln_status kiln_cache_get_stats(kiln_cache_stats *stats) {
  KILN_API_ENTER();
  if (stats == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "stats is NULL.");
  if (stats->struct_size < sizeof(size_t) + sizeof(uint64_t))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "stats->struct_size is %zu; set it to "
                       "sizeof(kiln_cache_stats).",
                       stats->struct_size);
  kiln_cache_stats full;
  memset(&full, 0, sizeof full);
  full.struct_size = stats->struct_size;
  full.compiles = counter_get(KILN__KCACHE_COMPILES);
  full.memory_hits = counter_get(KILN__KCACHE_MEMORY_HITS);
  full.disk_hits = counter_get(KILN__KCACHE_DISK_HITS);
  full.disk_rejects = counter_get(KILN__KCACHE_DISK_REJECTS);
  size_t n =
      stats->struct_size < sizeof full ? stats->struct_size : sizeof full;
  memcpy(stats, &full, n);
  return KILN_OK;
}

/* ---- the stage clock ----------------------------------------------------- */

/* Per thread, so that concurrent launches do not mix their stages and no
 * lock or atomic is needed. */
static _Thread_local uint64_t stage_ns[KILN__STAGE_COUNT];

static const char *const stage_names[KILN__STAGE_COUNT] = {
    "generate", "key",        "disk read", "compile",
    "nvrtc",    "disk write", "load",      "warm-up"};

void kiln__stage_add(kiln__stage stage, uint64_t ns) {
  if ((unsigned)stage < KILN__STAGE_COUNT)
    stage_ns[stage] += ns;
}

int kiln__stage_times(double *ms, int n, bool reset) {
  for (int i = 0; i < n; i++)
    ms[i] = i < KILN__STAGE_COUNT ? (double)stage_ns[i] * 1e-6 : 0.0;
  if (reset)
    memset(stage_ns, 0, sizeof stage_ns);
  return KILN__STAGE_COUNT;
}

const char *kiln__stage_name(int stage) {
  return stage >= 0 && stage < KILN__STAGE_COUNT ? stage_names[stage] : NULL;
}

/* Adds the time since `t0` (from kiln__now_ns) to `stage`. */
static void stage_since(kiln__stage stage, uint64_t t0) {
  kiln__stage_add(stage, kiln__now_ns() - t0);
}

/* ---- small helpers ------------------------------------------------------- */

/* strerror is not thread-safe; _GNU_SOURCE gives the char* strerror_r. */
static const char *errno_text(int err, char *buf, size_t n) {
  return strerror_r(err, buf, n);
}

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* The backend name as stored in the header: 16 bytes, NUL-padded. */
static void backend_field(const char *backend, unsigned char out[16]) {
  memset(out, 0, 16);
  size_t n = strlen(backend);
  memcpy(out, backend, n < 16 ? n : 16);
}

/* Hashes a string with its NUL, so that adjacent fields cannot run into
 * each other ("ab"+"c" differs from "a"+"bc"). */
static void hash_field(kiln__sha256 *h, const char *s) {
  kiln__sha256_update(h, s, strlen(s) + 1);
}

/* ---- the cache key ------------------------------------------------------- */

/* A fast 128-bit fingerprint (four multiply-rotate lanes over 64-bit
 * words, then a murmur-style finaliser). Not cryptographic: it only tells
 * versions of kiln's own prelude apart. */
static uint64_t rotl64(uint64_t x, unsigned n) {
  return (x << n) | (x >> (64 - n));
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

static void fingerprint(const char *text, size_t len, unsigned char out[16]) {
  const uint64_t k1 = 0x9e3779b185ebca87ULL, k2 = 0xc2b2ae3d27d4eb4fULL;
  uint64_t lane[4] = {k1, k2, ~k1, ~k2};
  size_t i = 0;
  for (; i + 32 <= len; i += 32)
    for (int j = 0; j < 4; j++) {
      uint64_t w;
      memcpy(&w, text + i + 8 * (size_t)j, 8);
      lane[j] = rotl64(lane[j] ^ (w * k1), 31) * k2;
    }
  for (; i < len; i++)
    lane[i & 3] = rotl64(lane[i & 3] ^ ((uint64_t)(unsigned char)text[i] * k1),
                         29) *
                  k2;
  uint64_t a = mix64(lane[0] ^ rotl64(lane[2], 17) ^ (uint64_t)len);
  uint64_t b = mix64(lane[1] ^ rotl64(lane[3], 23) ^ a);
  put_u64(out, a);
  put_u64(out + 8, b);
}

/*
 * Hashes the generated source. The backend's prelude is most of it
 * (~100 KB on CUDA), and SHA-256 over it cost about a millisecond of every
 * kernel's first launch in a fresh process, a disk-cache hit included. So
 * the prelude, where found verbatim, enters as its fingerprint; the rest
 * of the source (the user's code and kiln's glue) enters whole.
 */
static void hash_source(kiln__sha256 *h, const char *source,
                        const char *prelude) {
  size_t len = strlen(source);
  size_t plen = prelude != NULL ? strlen(prelude) : 0;
  const char *at = plen > 0 ? memmem(source, len, prelude, plen) : NULL;
  if (at == NULL) {
    hash_field(h, "whole");
    hash_field(h, source);
    return;
  }
  unsigned char fp[16];
  fingerprint(prelude, plen, fp);
  hash_field(h, "split");
  unsigned char lengths[16];
  put_u64(lengths, (uint64_t)(at - source));
  put_u64(lengths + 8, (uint64_t)plen);
  kiln__sha256_update(h, lengths, sizeof lengths);
  kiln__sha256_update(h, source, (size_t)(at - source));
  kiln__sha256_update(h, fp, sizeof fp);
  hash_field(h, at + plen);
}

/*
 * Computes the cache key of `source` for `dev` (see kcache.h). The build
 * id carries the compiler's identity and the target, so a compiler upgrade
 * or another GPU architecture never reuses an old binary.
 */
kiln_status kiln__kcache_key(kiln_device *dev, const char *source,
                             kiln_math_mode math, uint8_t key[32]) {
  const char *build_id = NULL;
  kiln_status st = dev->ops->build_id(dev, &build_id);
  if (st != KILN_OK)
    return st;
  kiln__sha256 h;
  kiln__sha256_init(&h);
  hash_field(&h, "kiln-kcache-v2");
  hash_field(&h, KILN_VERSION_STRING);
  hash_field(&h, dev->ops->name);
  hash_field(&h, build_id != NULL ? build_id : "");
  hash_field(&h, math == KILN_MATH_FAST ? "fast" : "safe");
  hash_source(&h, source,
              dev->ops->prelude != NULL ? dev->ops->prelude(dev) : NULL);
  kiln__sha256_final(&h, key);
  return KILN_OK;
}

/* ---- the directory ------------------------------------------------------- */

/* Every directory path handed out, kept for the process so that the
 * pointers kiln_cache_dir returns stay valid. */
typedef struct interned_dir {
  char *path;
  struct interned_dir *next;
} interned_dir;

static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static interned_dir *dir_list;

static const char dir_advice[] =
    "Set KILN_CACHE_DIR to a directory of your own, or KILN_CACHE_DIR=off.";

static char *join_path(const char *a, const char *b) {
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  kiln__sb_append(&sb, a);
  if (sb.len == 0 || sb.data[sb.len - 1] != '/')
    kiln__sb_append(&sb, "/");
  kiln__sb_append(&sb, b);
  return kiln__sb_take(&sb);
}

/* Chooses the directory from the environment; *out is kiln__malloc'ed, or
 * NULL when the disk cache is off. */
static kiln_status choose_dir(char **out) {
  const char *env = getenv("KILN_CACHE_DIR");
  char *path = NULL;
  *out = NULL;
  if (env != NULL && strcmp(env, "off") == 0)
    return KILN_OK;
  if (env != NULL && env[0] != '\0') {
    path = kiln__strdup(env);
  } else {
    /* XDG says a relative XDG_CACHE_HOME is invalid and must be ignored. */
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (xdg != NULL && xdg[0] == '/')
      path = join_path(xdg, "kiln");
    else if (home != NULL && home[0] != '\0')
      path = join_path(home, ".cache/kiln");
    else
      return kiln__error(KILN_ERROR_IO,
                         "kiln cannot choose a kernel cache directory "
                         "because none of KILN_CACHE_DIR, XDG_CACHE_HOME "
                         "and HOME is set. %s",
                         dir_advice);
  }
  if (path == NULL)
    return kiln__oom("choosing the kernel cache directory");
  /* A trailing slash would make lstat follow a symbolic link. */
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/')
    path[--n] = '\0';
  *out = path;
  return KILN_OK;
}

/* mkdir -p with mode 0700. Errors on intermediate components are left to
 * the final mkdir and lstat, which report them for the path itself. */
static kiln_status make_dirs(char *path) {
  char err[128];
  for (char *p = path + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    (void)mkdir(path, 0700);
    *p = '/';
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return kiln__error(KILN_ERROR_IO,
                       "kiln cannot create the kernel cache directory '%s' "
                       "(%s). %s",
                       path, errno_text(errno, err, sizeof err), dir_advice);
  return KILN_OK;
}

/* Refuses a directory that someone else could have planted code in. */
static kiln_status check_dir(const char *path) {
  char err[128];
  struct stat st;
  if (lstat(path, &st) != 0)
    return kiln__error(KILN_ERROR_IO,
                       "kiln cannot inspect the kernel cache directory '%s' "
                       "(%s). %s",
                       path, errno_text(errno, err, sizeof err), dir_advice);
  if (S_ISLNK(st.st_mode))
    return kiln__error(KILN_ERROR_IO,
                       "kernel cache directory '%s' is a symbolic link; "
                       "kiln refuses to load code from it. %s",
                       path, dir_advice);
  if (!S_ISDIR(st.st_mode))
    return kiln__error(KILN_ERROR_IO,
                       "kernel cache directory '%s' is not a directory. %s",
                       path, dir_advice);
  if (st.st_uid != geteuid())
    return kiln__error(KILN_ERROR_IO,
                       "kernel cache directory '%s' is owned by uid %lu, not "
                       "by you (uid %lu); kiln refuses to load code from it. "
                       "%s",
                       path, (unsigned long)st.st_uid, (unsigned long)geteuid(),
                       dir_advice);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return kiln__error(KILN_ERROR_IO,
                       "kernel cache directory '%s' is writable by group or "
                       "others (mode 0%03o); kiln refuses to load code from "
                       "it. Run chmod 700 on it, or set KILN_CACHE_DIR to a "
                       "directory of your own, or KILN_CACHE_DIR=off.",
                       path, (unsigned)(st.st_mode & 0777));
  return KILN_OK;
}

/* Returns the process-lifetime copy of `path`, taking ownership of it. */
static kiln_status intern_dir(char *path, const char **out) {
  pthread_mutex_lock(&dir_lock);
  for (interned_dir *d = dir_list; d != NULL; d = d->next) {
    if (strcmp(d->path, path) == 0) {
      pthread_mutex_unlock(&dir_lock);
      kiln__free(path);
      *out = d->path;
      return KILN_OK;
    }
  }
  interned_dir *d = kiln__malloc(sizeof *d);
  if (d == NULL) {
    pthread_mutex_unlock(&dir_lock);
    kiln__free(path);
    return kiln__oom("recording the kernel cache directory");
  }
  d->path = path;
  d->next = dir_list;
  dir_list = d;
  pthread_mutex_unlock(&dir_lock);
  *out = path;
  return KILN_OK;
}

/*
 * Resolves, creates and checks the disk cache directory (see kcache.h).
 * The environment is read on every call, so a test may point
 * KILN_CACHE_DIR elsewhere between launches; the check is a few syscalls
 * and runs only when a kernel is missing from memory.
 */
kiln_status kiln__kcache_dir(const char **out) {
  char *path = NULL;
  kiln_status st = choose_dir(&path);
  if (st != KILN_OK)
    return st;
  if (path == NULL) {
    *out = NULL;
    return KILN_OK;
  }
  st = make_dirs(path);
  if (st == KILN_OK)
    st = check_dir(path);
  if (st != KILN_OK) {
    kiln__free(path);
    return st;
  }
  return intern_dir(path, out);
}

/* Public: the disk cache directory in use. KILN_CACHE_DIR=off answers
 * KILN_ERROR_NOT_FOUND, since no directory is in use. */
kiln_status kiln_cache_dir(const char **out) {
  KILN_API_ENTER();
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  const char *dir = NULL;
  kiln_status st = kiln__kcache_dir(&dir);
  if (st != KILN_OK)
    return st;
  if (dir == NULL)
    return kiln__error(KILN_ERROR_NOT_FOUND,
                       "the disk kernel cache is off (KILN_CACHE_DIR=off).");
  *out = dir;
  return KILN_OK;
}

/* ---- cache files --------------------------------------------------------- */

/* <dir>/<hex key><suffix>, kiln__malloc'ed. */
static char *file_path(const char *dir, const uint8_t key[32],
                       const char *suffix) {
  char hex[65];
  kiln__hex(key, 32, hex);
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  kiln__sb_append(&sb, dir);
  kiln__sb_append(&sb, "/");
  kiln__sb_append(&sb, hex);
  kiln__sb_append(&sb, suffix);
  return kiln__sb_take(&sb);
}

static bool read_all(int fd, unsigned char *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false; /* an error, or the file shrank under us */
    done += (size_t)r;
  }
  return true;
}

static bool write_all(int fd, const unsigned char *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, buf + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    done += (size_t)w;
  }
  return true;
}

/* Checks every header field of a whole file; on success returns where the
 * payload starts and how long it is. */
static bool verify_file(const unsigned char *buf, size_t size,
                        const uint8_t key[32], const char *backend,
                        size_t *payload_size) {
  if (size < KILN__KCACHE_HEADER_BYTES)
    return false;
  const unsigned char *p = buf;
  if (memcmp(p, kcache_magic, 8) != 0)
    return false;
  p += 8;
  if (get_u32(p) != KILN__KCACHE_FORMAT_VERSION)
    return false;
  p += 4;
  if (memcmp(p, key, 32) != 0)
    return false;
  p += 32;
  unsigned char want_backend[16];
  backend_field(backend, want_backend);
  if (memcmp(p, want_backend, 16) != 0)
    return false;
  p += 16;
  uint64_t n = get_u64(p);
  p += 8;
  if (n != (uint64_t)(size - KILN__KCACHE_HEADER_BYTES))
    return false;
  uint8_t digest[32];
  kiln__sha256 h;
  kiln__sha256_init(&h);
  kiln__sha256_update(&h, buf + KILN__KCACHE_HEADER_BYTES, (size_t)n);
  kiln__sha256_final(&h, digest);
  if (memcmp(p, digest, 32) != 0)
    return false;
  *payload_size = (size_t)n;
  return true;
}

/* Opens a cache file without following links or blocking on a FIFO, and
 * checks it is a regular file of ours of a sane size. Returns -1 with
 * *exists false when there is no file. */
static int open_checked(const char *path, size_t *size, bool *exists) {
  *exists = true;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      *exists = false;
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      st.st_size < 0 || (uint64_t)st.st_size > KCACHE_MAX_FILE_BYTES) {
    close(fd);
    return -1;
  }
  *size = (size_t)st.st_size;
  return fd;
}

/*
 * Reads and verifies the cache file of `key` (see kcache.h). Only running
 * out of memory is an error; any other problem is a miss, and a file that
 * exists but fails a check is counted in disk_rejects.
 */
kiln_status kiln__kcache_read(const char *dir, const uint8_t key[32],
                              const char *backend, kiln__binary *out,
                              bool *found) {
  *found = false;
  char *path = file_path(dir, key, ".kbin");
  if (path == NULL)
    return kiln__oom("naming a kernel cache file");
  size_t size = 0;
  bool exists = false;
  int fd = open_checked(path, &size, &exists);
  kiln__free(path);
  if (fd < 0) {
    if (exists)
      kiln__kcache_count(KILN__KCACHE_DISK_REJECTS);
    return KILN_OK;
  }
  unsigned char *buf = kiln__malloc(size > 0 ? size : 1);
  if (buf == NULL) {
    close(fd);
    return kiln__oom("reading a kernel cache file");
  }
  bool ok = read_all(fd, buf, size);
  close(fd);
  size_t payload = 0;
  if (!ok || !verify_file(buf, size, key, backend, &payload)) {
    kiln__free(buf);
    kiln__kcache_count(KILN__KCACHE_DISK_REJECTS);
    return KILN_OK;
  }
  /* Hand the payload back in the same block; the header slack is small. */
  memmove(buf, buf + KILN__KCACHE_HEADER_BYTES, payload);
  out->data = buf;
  out->size = payload;
  *found = true;
  return KILN_OK;
}

static void make_header(unsigned char *hdr, const uint8_t key[32],
                        const char *backend, const void *data, size_t size) {
  unsigned char *p = hdr;
  memcpy(p, kcache_magic, 8);
  p += 8;
  put_u32(p, KILN__KCACHE_FORMAT_VERSION);
  p += 4;
  memcpy(p, key, 32);
  p += 32;
  backend_field(backend, p);
  p += 16;
  put_u64(p, (uint64_t)size);
  p += 8;
  kiln__sha256 h;
  kiln__sha256_init(&h);
  kiln__sha256_update(&h, data, size);
  kiln__sha256_final(&h, p);
}

/*
 * Writes header and payload to a new file. There is no fsync: it cost
 * milliseconds of every cold launch (a journal commit), and bought
 * nothing, because a file that a crash left torn or empty fails
 * verify_file and is simply rebuilt. rename still gives running
 * processes all-or-nothing files.
 */
static bool write_file(int fd, const unsigned char *hdr, const void *data,
                       size_t size) {
  return write_all(fd, hdr, KILN__KCACHE_HEADER_BYTES) &&
         write_all(fd, data, size);
}

static atomic_uint tmp_counter;

/*
 * Writes the cache file of `key` (see kcache.h). Readers see either the
 * old file or the complete new one: the bytes go to a fresh temporary
 * name (O_EXCL, so nothing planted there is followed) and are renamed
 * over the final name only once complete.
 */
kiln_status kiln__kcache_write(const char *dir, const uint8_t key[32],
                               const char *backend, const void *data,
                               size_t size) {
  char suffix[64];
  snprintf(suffix, sizeof suffix, ".kbin.tmp.%ld.%u", (long)getpid(),
           atomic_fetch_add(&tmp_counter, 1));
  char *tmp = file_path(dir, key, suffix);
  char *path = file_path(dir, key, ".kbin");
  if (tmp == NULL || path == NULL) {
    kiln__free(tmp);
    kiln__free(path);
    return kiln__oom("naming a kernel cache file");
  }
  unsigned char hdr[KILN__KCACHE_HEADER_BYTES];
  make_header(hdr, key, backend, data, size);
  kiln_status st = KILN_OK;
  char err[128];
  int fd =
      open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    st = kiln__error(KILN_ERROR_IO, "kiln cannot create '%s' (%s).", tmp,
                     errno_text(errno, err, sizeof err));
  } else {
    bool ok = write_file(fd, hdr, data, size);
    int saved = errno;
    if (close(fd) != 0 && ok) {
      ok = false;
      saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
      ok = false;
      saved = errno;
    }
    if (!ok) {
      unlink(tmp);
      st = kiln__error(KILN_ERROR_IO,
                       "kiln cannot write the kernel cache file '%s' (%s).",
                       path, errno_text(saved, err, sizeof err));
    }
  }
  kiln__free(tmp);
  kiln__free(path);
  return st;
}

/* ---- the in-memory table ------------------------------------------------- */

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static kiln__kmodule *modules;

static kiln__kmodule *find_locked(kiln_device *dev, const uint8_t key[32]) {
  for (kiln__kmodule *m = modules; m != NULL; m = m->next)
    if (m->device == dev && memcmp(m->key, key, 32) == 0)
      return m;
  return NULL;
}

static kiln__kmodule *memory_find(kiln_device *dev, const uint8_t key[32]) {
  pthread_mutex_lock(&modules_lock);
  kiln__kmodule *m = find_locked(dev, key);
  pthread_mutex_unlock(&modules_lock);
  return m;
}

/* Adds a freshly loaded module. If another thread added the same key
 * meanwhile, ours is unloaded and theirs is used, so each key has one
 * module per device. */
static kiln_status memory_insert(kiln_device *dev, const uint8_t key[32],
                                 void *module, const kiln__module_info *info,
                                 kiln__kmodule **out) {
  kiln__kmodule *m = kiln__calloc(1, sizeof *m);
  if (m == NULL) {
    dev->ops->unload(dev, module);
    return kiln__oom("recording a loaded kernel");
  }
  m->device = dev;
  memcpy(m->key, key, 32);
  m->module = module;
  m->info = *info;
  pthread_mutex_lock(&modules_lock);
  kiln__kmodule *existing = find_locked(dev, key);
  if (existing == NULL) {
    m->next = modules;
    modules = m;
  }
  pthread_mutex_unlock(&modules_lock);
  if (existing != NULL) {
    dev->ops->unload(dev, module);
    kiln__free(m);
    m = existing;
  }
  *out = m;
  return KILN_OK;
}

/* ---- obtaining a module -------------------------------------------------- */

/* Tries the disk cache. A file that verifies but that the backend refuses
 * to load is a reject too: it gets rebuilt. */
static kiln_status load_from_disk(kiln_device *dev, const char *dir,
                                  const uint8_t key[32], void **module,
                                  kiln__module_info *info, bool *loaded) {
  kiln__binary bin = {NULL, 0};
  bool found = false;
  *loaded = false;
  uint64_t t0 = kiln__now_ns();
  kiln_status st = kiln__kcache_read(dir, key, dev->ops->name, &bin, &found);
  stage_since(KILN__STAGE_DISK_READ, t0);
  if (st != KILN_OK || !found)
    return st;
  t0 = kiln__now_ns();
  st = dev->ops->load(dev, bin.data, bin.size, module, info);
  stage_since(KILN__STAGE_LOAD, t0);
  kiln__free(bin.data);
  if (st == KILN_ERROR_OUT_OF_MEMORY)
    return st;
  if (st != KILN_OK) {
    kiln__kcache_count(KILN__KCACHE_DISK_REJECTS);
    return KILN_OK;
  }
  kiln__kcache_count(KILN__KCACHE_DISK_HITS);
  *loaded = true;
  return KILN_OK;
}

/* Positions point into the body or header thanks to #line, and
 * generated-code noise is dropped. */
kiln_status kiln__kcache_compile_error(const char *kernel_name,
                                       const char *log) {
  char *mapped = kiln__dialect_map_log(log != NULL ? log : "");
  const char *text = mapped != NULL ? mapped : (log != NULL ? log : "");
  if (text[0] == '\0')
    text = "(the compiler printed nothing)";
  kiln_status st =
      kiln__error(KILN_ERROR_COMPILE, "kernel '%s' failed to compile:\n%s",
                  kernel_name, text);
  kiln__free(mapped);
  return st;
}

/* Compiles, stores the binary on disk (a failed write only costs a later
 * recompile, so it does not fail the launch) and loads it. */
static kiln_status build(kiln_device *dev, const char *dir,
                         const uint8_t key[32], const char *source,
                         kiln_math_mode math, const char *kernel_name,
                         void **module, kiln__module_info *info) {
  kiln__binary bin = {NULL, 0};
  char *log = NULL;
  uint64_t t0 = kiln__now_ns();
  kiln_status st =
      dev->ops->compile(dev, source, math, kernel_name, &bin, &log);
  stage_since(KILN__STAGE_COMPILE, t0);
  if (st == KILN_ERROR_COMPILE)
    st = kiln__kcache_compile_error(kernel_name, log);
  kiln__free(log);
  if (st != KILN_OK) {
    kiln__free(bin.data);
    return st;
  }
  kiln__kcache_count(KILN__KCACHE_COMPILES);
  t0 = kiln__now_ns();
  if (dir != NULL)
    (void)kiln__kcache_write(dir, key, dev->ops->name, bin.data, bin.size);
  stage_since(KILN__STAGE_DISK_WRITE, t0);
  t0 = kiln__now_ns();
  st = dev->ops->load(dev, bin.data, bin.size, module, info);
  stage_since(KILN__STAGE_LOAD, t0);
  kiln__free(bin.data);
  return st;
}

/*
 * Finds or builds the module for `source` on `dev` (see kcache.h). The
 * disk directory is checked only on a memory miss, and its refusal (wrong
 * owner, open permissions) fails the launch rather than silently
 * compiling, so that the user learns their cache is unsafe.
 */
kiln_status kiln__kcache_obtain(kiln_device *dev, const char *source,
                                kiln_math_mode math, const char *kernel_name,
                                kiln__kmodule **out) {
  uint8_t key[32];
  uint64_t t0 = kiln__now_ns();
  kiln_status st = kiln__kcache_key(dev, source, math, key);
  stage_since(KILN__STAGE_KEY, t0);
  if (st != KILN_OK)
    return st;
  kiln__kmodule *m = memory_find(dev, key);
  if (m != NULL) {
    kiln__kcache_count(KILN__KCACHE_MEMORY_HITS);
    *out = m;
    return KILN_OK;
  }
  t0 = kiln__now_ns();
  const char *dir = NULL;
  st = kiln__kcache_dir(&dir);
  stage_since(KILN__STAGE_DISK_READ, t0);
  if (st != KILN_OK)
    return st;
  void *module = NULL;
  kiln__module_info info;
  memset(&info, 0, sizeof info);
  bool loaded = false;
  if (dir != NULL)
    st = load_from_disk(dev, dir, key, &module, &info, &loaded);
  if (st == KILN_OK && !loaded)
    st = build(dev, dir, key, source, math, kernel_name, &module, &info);
  if (st != KILN_OK)
    return st;
  return memory_insert(dev, key, module, &info, out);
}
