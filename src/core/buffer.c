/*
 * Buffers (refcounted device memory) and the cross-stream hazard records
 * that order work on different streams.
 *
 * Each buffer remembers the event of its last write and, per stream, the
 * event of its latest read since that write. Before new work is enqueued,
 * the stream is made to wait (on the device, not the host) for the events
 * of other streams it conflicts with: read-after-write, write-after-write
 * and write-after-read. Work on one stream is already in order, so events
 * of the same stream are never waited for.
 *
 * One global mutex guards every record: the critical sections are a few
 * pointer moves, and no backend wait ever happens while it is held.
 */
#include "core/core.h"

#include <string.h>

static pthread_mutex_t g_hazard_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- buffers ------------------------------------------------------------- */

/* A new buffer of `bytes` from the device's caching allocator, with one
 * reference owned by the caller. */
kiln_status kiln__buffer_new(kiln_device *dev, size_t bytes,
                             kiln__buffer **out) {
  kiln__buffer *buf = kiln__calloc(1, sizeof *buf);
  if (buf == NULL)
    return kiln__oom("creating an array's buffer");
  kiln_status st = kiln__device_alloc(dev, bytes, &buf->ptr, &buf->rounded);
  if (st != KILN_OK) {
    kiln__free(buf);
    return st;
  }
  atomic_init(&buf->refs, 1);
  buf->device = dev;
  buf->bytes = bytes;
  buf->owned = true;
  *out = buf;
  return KILN_OK;
}

/* A buffer over caller memory that kiln never frees. */
kiln_status kiln__buffer_wrap(kiln_device *dev, void *ptr, size_t bytes,
                              kiln__buffer **out) {
  kiln__buffer *buf = kiln__calloc(1, sizeof *buf);
  if (buf == NULL)
    return kiln__oom("wrapping caller memory");
  atomic_init(&buf->refs, 1);
  buf->device = dev;
  buf->ptr = ptr;
  buf->bytes = bytes;
  buf->rounded = 0;
  buf->owned = false;
  *out = buf;
  return KILN_OK;
}

/* Takes one more reference. */
void kiln__buffer_retain(kiln__buffer *buf) {
  atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
}

/* Drops the hazard record's events; no lock needed once nobody else can
 * reach the buffer. */
static void drop_events(kiln__buffer *buf) {
  const kiln__backend_ops *ops = buf->device->ops;
  if (buf->last_write != NULL)
    ops->event_release(buf->last_write);
  for (int i = 0; i < buf->num_reads; i++)
    ops->event_release(buf->reads[i]);
  buf->last_write = NULL;
  buf->num_reads = 0;
}

/* Drops one reference; the last one returns the memory to the device's
 * cache (unless it belongs to the caller) and frees the record. */
void kiln__buffer_release(kiln__buffer *buf) {
  if (buf == NULL)
    return;
  if (atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) != 1)
    return;
  drop_events(buf);
  if (buf->owned)
    kiln__device_free(buf->device, buf->ptr, buf->rounded);
  kiln__free(buf);
}

/* ---- collecting events to wait for --------------------------------------- */

/* A small set of retained events, deduplicated (one write is often the
 * hazard of several buffers). Spills to the heap past its inline space. */
typedef struct event_set {
  kiln__event *inline_events[16];
  kiln__event **events;
  int count;
  int cap;
  bool failed;
} event_set;

static void set_init(event_set *s) {
  s->events = s->inline_events;
  s->count = 0;
  s->cap = 16;
  s->failed = false;
}

/* Adds (and retains) `ev`. Hazard lock held. */
static void set_add(event_set *s, const kiln__backend_ops *ops,
                    kiln__event *ev) {
  for (int i = 0; i < s->count; i++)
    if (s->events[i] == ev)
      return;
  if (s->count == s->cap) {
    size_t bytes;
    if (!kiln__mul_size((size_t)s->cap * 2, sizeof(kiln__event *), &bytes)) {
      s->failed = true;
      return;
    }
    kiln__event **grown = kiln__malloc(bytes);
    if (grown == NULL) {
      s->failed = true;
      return;
    }
    memcpy(grown, s->events, (size_t)s->count * sizeof(kiln__event *));
    if (s->events != s->inline_events)
      kiln__free(s->events);
    s->events = grown;
    s->cap *= 2;
  }
  ops->event_retain(ev);
  s->events[s->count++] = ev;
}

static void set_release(event_set *s, const kiln__backend_ops *ops) {
  for (int i = 0; i < s->count; i++)
    ops->event_release(s->events[i]);
  if (s->events != s->inline_events)
    kiln__free(s->events);
  set_init(s);
}

/* Adds `ev` if it belongs to another stream (or any stream, when
 * `all_streams`) and has not finished. Hazard lock held. */
static void consider(event_set *s, const kiln__backend_ops *ops,
                     kiln__event *ev, kiln_stream *owner, kiln_stream *self,
                     bool all_streams) {
  if (ev == NULL || (!all_streams && owner == self) || ops->event_done(ev))
    return;
  set_add(s, ops, ev);
}

/* Collects the hazards of one buffer: its last write, and for a write (or
 * `and_reads`) also its reads. Hazard lock held. */
static void collect(event_set *s, kiln__buffer *buf, kiln_stream *self,
                    bool and_reads, bool all_streams) {
  const kiln__backend_ops *ops = buf->device->ops;
  consider(s, ops, buf->last_write, buf->write_stream, self, all_streams);
  if (!and_reads)
    return;
  for (int i = 0; i < buf->num_reads; i++)
    consider(s, ops, buf->reads[i], buf->read_streams[i], self, all_streams);
}

/* ---- hazards ------------------------------------------------------------- */

/* Makes `stream` wait for the conflicting work of other streams on the
 * buffers. If the backend cannot enqueue a wait, the host waits instead:
 * slower, never wrong. */
kiln_status kiln__hazards_before(kiln_stream *stream,
                                 kiln__buffer *const *reads, int num_reads,
                                 kiln__buffer *const *writes,
                                 int num_writes) {
  const kiln__backend_ops *ops = stream->device->ops;
  event_set s;
  set_init(&s);
  pthread_mutex_lock(&g_hazard_lock);
  for (int i = 0; i < num_reads; i++)
    collect(&s, reads[i], stream, false, false);
  for (int i = 0; i < num_writes; i++)
    collect(&s, writes[i], stream, true, false);
  pthread_mutex_unlock(&g_hazard_lock);
  if (s.failed) {
    set_release(&s, ops);
    return kiln__oom("ordering work between streams");
  }
  kiln_status st = KILN_OK;
  for (int i = 0; i < s.count && st == KILN_OK; i++) {
    if (ops->stream_wait_event(stream, s.events[i]) != KILN_OK)
      st = ops->event_synchronize(s.events[i]);
  }
  set_release(&s, ops);
  return st;
}

/* Records `ev` as the buffer's last write; earlier reads are implied (the
 * writer waited for them). Hazard lock held. */
static void note_write_locked(kiln__buffer *buf, kiln_stream *stream,
                              kiln__event *ev) {
  const kiln__backend_ops *ops = buf->device->ops;
  if (buf->last_write == ev)
    return;
  drop_events(buf);
  ops->event_retain(ev);
  buf->last_write = ev;
  buf->write_stream = stream;
}

/* Removes read entries whose work has finished. Hazard lock held. */
static void prune_reads_locked(kiln__buffer *buf) {
  const kiln__backend_ops *ops = buf->device->ops;
  int kept = 0;
  for (int i = 0; i < buf->num_reads; i++) {
    if (ops->event_done(buf->reads[i])) {
      ops->event_release(buf->reads[i]);
      continue;
    }
    buf->reads[kept] = buf->reads[i];
    buf->read_streams[kept] = buf->read_streams[i];
    kept++;
  }
  buf->num_reads = kept;
}

/* Removes the read entry holding `ev`, if any: a read the host already
 * waited for (even one that failed) orders nothing more. Hazard lock held. */
static void forget_read_locked(kiln__buffer *buf, kiln__event *ev) {
  for (int i = 0; i < buf->num_reads; i++) {
    if (buf->reads[i] != ev)
      continue;
    buf->device->ops->event_release(ev);
    buf->num_reads--;
    buf->reads[i] = buf->reads[buf->num_reads];
    buf->read_streams[i] = buf->read_streams[buf->num_reads];
    return;
  }
}

/*
 * Records `ev` as this stream's read of the buffer (replacing the stream's
 * older read: events of one stream complete in order). If every slot holds
 * a running read of another stream, returns the oldest one, retained, for
 * the caller to wait for outside the lock; else NULL. Hazard lock held.
 */
static kiln__event *note_read_locked(kiln__buffer *buf, kiln_stream *stream,
                                     kiln__event *ev) {
  const kiln__backend_ops *ops = buf->device->ops;
  /* A read that follows this stream's own write needs no entry. */
  if (buf->last_write == ev)
    return NULL;
  for (int i = 0; i < buf->num_reads; i++) {
    if (buf->read_streams[i] == stream) {
      ops->event_retain(ev);
      ops->event_release(buf->reads[i]);
      buf->reads[i] = ev;
      return NULL;
    }
  }
  if (buf->num_reads == KILN__MAX_READERS)
    prune_reads_locked(buf);
  if (buf->num_reads == KILN__MAX_READERS) {
    ops->event_retain(buf->reads[0]);
    return buf->reads[0];
  }
  ops->event_retain(ev);
  buf->reads[buf->num_reads] = ev;
  buf->read_streams[buf->num_reads] = stream;
  buf->num_reads++;
  return NULL;
}

/* Records one event for everything just enqueued on the stream. If even
 * that fails, the host waits for the stream, after which there is nothing
 * left to order. */
kiln_status kiln__hazards_after(kiln_stream *stream,
                                kiln__buffer *const *reads, int num_reads,
                                kiln__buffer *const *writes,
                                int num_writes) {
  if (num_reads == 0 && num_writes == 0)
    return KILN_OK;
  const kiln__backend_ops *ops = stream->device->ops;
  kiln__event *ev = NULL;
  if (ops->event_record(stream, &ev) != KILN_OK)
    return ops->stream_synchronize(stream);
  pthread_mutex_lock(&g_hazard_lock);
  for (int i = 0; i < num_writes; i++)
    note_write_locked(writes[i], stream, ev);
  int i = 0;
  while (i < num_reads) {
    kiln__event *full = note_read_locked(reads[i], stream, ev);
    if (full == NULL) {
      i++;
      continue;
    }
    /* Eight other streams still reading one buffer: wait for the oldest
     * (rare, and never under the lock), then make room and try again. */
    pthread_mutex_unlock(&g_hazard_lock);
    (void)ops->event_synchronize(full);
    pthread_mutex_lock(&g_hazard_lock);
    prune_reads_locked(reads[i]);
    forget_read_locked(reads[i], full);
    ops->event_release(full);
  }
  pthread_mutex_unlock(&g_hazard_lock);
  ops->event_release(ev);
  return KILN_OK;
}

/* Host-waits for the buffer's pending writes (and reads), on every stream
 * including the caller's own. */
kiln_status kiln__buffer_wait(kiln__buffer *buf, bool and_reads) {
  const kiln__backend_ops *ops = buf->device->ops;
  event_set s;
  set_init(&s);
  pthread_mutex_lock(&g_hazard_lock);
  collect(&s, buf, NULL, and_reads, true);
  pthread_mutex_unlock(&g_hazard_lock);
  if (s.failed) {
    set_release(&s, ops);
    return kiln__oom("waiting for an array's pending work");
  }
  kiln_status st = KILN_OK;
  for (int i = 0; i < s.count; i++) {
    kiln_status wst = ops->event_synchronize(s.events[i]);
    if (wst != KILN_OK && st == KILN_OK)
      st = wst;
  }
  set_release(&s, ops);
  return st;
}

/* ---- keeping buffers alive for pending work ------------------------------ */

typedef struct hold {
  int count;
  kiln__buffer *bufs[];
} hold;

static void release_hold(void *user, kiln_status status) {
  (void)status;
  hold *h = user;
  for (int i = 0; i < h->count; i++)
    kiln__buffer_release(h->bufs[i]);
  kiln__free(h);
}

/* Takes a reference on each buffer and drops it once the stream reaches
 * this point. If that cannot be arranged, the host waits for the stream
 * instead, so the buffers are no longer in use when this returns. */
kiln_status kiln__hold_until_done(kiln_stream *stream,
                                  kiln__buffer *const *bufs, int num_bufs) {
  if (num_bufs <= 0)
    return KILN_OK;
  const kiln__backend_ops *ops = stream->device->ops;
  size_t bytes = sizeof(hold) + (size_t)num_bufs * sizeof(kiln__buffer *);
  hold *h = kiln__malloc(bytes);
  if (h == NULL)
    return ops->stream_synchronize(stream);
  h->count = num_bufs;
  for (int i = 0; i < num_bufs; i++) {
    h->bufs[i] = bufs[i];
    kiln__buffer_retain(bufs[i]);
  }
  if (ops->enqueue_release(stream, release_hold, h) != KILN_OK) {
    kiln_status st = ops->stream_synchronize(stream);
    release_hold(h, KILN_OK);
    return st;
  }
  return KILN_OK;
}
