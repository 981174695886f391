/*
 * Streams: in-order queues of work on one device. Each host thread gets its
 * own lazily created default stream per device (as MLX and CUDA's
 * per-thread default stream do), so threads never serialize on a shared
 * queue; a thread-exit destructor synchronizes and destroys them.
 */
#include "core/core.h"

/* ---- creation and destruction -------------------------------------------- */

/* Makes a stream on `dev` with the priority hint (see kiln_stream) and
 * lists it on the device (for synchronize). */
static kiln_status stream_make(kiln_device *dev, bool is_default,
                               int priority, kiln_stream **out) {
  kiln_stream *s = kiln__calloc(1, sizeof *s);
  if (s == NULL)
    return kiln__oom("creating a stream");
  s->device = dev;
  s->is_default = is_default;
  s->priority = priority;
  if (pthread_mutex_init(&s->submit_lock, NULL) != 0) {
    kiln__free(s);
    return kiln__error(KILN_ERROR_INTERNAL,
                       "could not create a stream's lock.");
  }
  kiln_status st = dev->ops->stream_create(s);
  if (st != KILN_OK) {
    pthread_mutex_destroy(&s->submit_lock);
    kiln__free(s);
    return st;
  }
  pthread_mutex_lock(&dev->streams_lock);
  s->next = dev->streams;
  dev->streams = s;
  pthread_mutex_unlock(&dev->streams_lock);
  *out = s;
  return KILN_OK;
}

/* Makes a stream of the default priority on `dev`. */
kiln_status kiln__stream_create(kiln_device *dev, bool is_default,
                                kiln_stream **out) {
  return stream_make(dev, is_default, 0, out);
}

/* See core.h. Never destroyed: it lives as long as its device (the whole
 * process), and kiln_synchronize finds it on the device's list. */
kiln_status kiln__device_side_stream(kiln_device *dev, kiln_stream **out) {
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&dev->side_lock);
  if (dev->side == NULL)
    st = stream_make(dev, false, 1, &dev->side);
  if (st == KILN_OK)
    *out = dev->side;
  pthread_mutex_unlock(&dev->side_lock);
  return st;
}

/* See core.h. The record and the wait each happen under their stream's
 * submit lock, as every stream callback does. */
kiln_status kiln__stream_wait_stream(kiln_stream *waiter,
                                     kiln_stream *signaller) {
  if (waiter == signaller)
    return KILN_OK;
  const kiln__backend_ops *ops = waiter->device->ops;
  kiln__event *ev = NULL;
  pthread_mutex_lock(&signaller->submit_lock);
  kiln_status st = ops->event_record(signaller, &ev);
  pthread_mutex_unlock(&signaller->submit_lock);
  if (st != KILN_OK)
    return ops->stream_synchronize(signaller);
  pthread_mutex_lock(&waiter->submit_lock);
  st = ops->stream_wait_event(waiter, ev);
  pthread_mutex_unlock(&waiter->submit_lock);
  if (st != KILN_OK)
    st = ops->event_synchronize(ev);
  ops->event_release(ev);
  return st;
}

/* Unlinks and destroys an idle stream; KILN_ERROR_BUSY if work is pending.
 * The idle check and the unlink happen under the device's list lock, so
 * kiln_synchronize never sees a half-destroyed stream. */
kiln_status kiln__stream_destroy(kiln_stream *stream) {
  if (stream == NULL)
    return KILN_OK;
  kiln_device *dev = stream->device;
  pthread_mutex_lock(&dev->streams_lock);
  pthread_mutex_lock(&stream->submit_lock);
  bool idle = dev->ops->stream_idle(stream);
  pthread_mutex_unlock(&stream->submit_lock);
  if (!idle) {
    pthread_mutex_unlock(&dev->streams_lock);
    return kiln__error(KILN_ERROR_BUSY,
                       "the stream has pending work; call "
                       "kiln_stream_synchronize first.");
  }
  for (kiln_stream **pp = &dev->streams; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == stream) {
      *pp = stream->next;
      break;
    }
  }
  pthread_mutex_unlock(&dev->streams_lock);
  dev->ops->stream_destroy(stream);
  pthread_mutex_destroy(&stream->submit_lock);
  kiln__free(stream);
  return KILN_OK;
}

/* Waits for everything enqueued so far; returns (and clears) the stream's
 * first asynchronous error. The submit lock is not held while waiting, so
 * host callbacks on this stream may still enqueue work. */
kiln_status kiln__stream_synchronize(kiln_stream *stream) {
  return stream->device->ops->stream_synchronize(stream);
}

/* ---- per-thread default streams ------------------------------------------ */

typedef struct thread_streams {
  int count;
  kiln_stream *streams[]; /* by device index, NULL until first use */
} thread_streams;

static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static int g_key_error;

/* Runs at thread exit: finishes the thread's work and destroys its streams.
 * Someone else may still be enqueuing on one (they were handed the
 * pointer), so synchronize until it is idle. */
static void destroy_thread_streams(void *p) {
  thread_streams *ts = p;
  for (int i = 0; i < ts->count; i++) {
    kiln_stream *s = ts->streams[i];
    if (s == NULL)
      continue;
    do {
      (void)kiln__stream_synchronize(s);
    } while (kiln__stream_destroy(s) == KILN_ERROR_BUSY);
  }
  kiln__free(ts);
}

static void make_key(void) {
  g_key_error = pthread_key_create(&g_key, destroy_thread_streams);
}

/* This thread's table of default streams, created on first use. */
static thread_streams *thread_table(void) {
  pthread_once(&g_key_once, make_key);
  if (g_key_error != 0) {
    kiln__error(KILN_ERROR_INTERNAL,
                "could not create the thread key for default streams.");
    return NULL;
  }
  thread_streams *ts = pthread_getspecific(g_key);
  if (ts != NULL)
    return ts;
  int count = kiln__device_count();
  ts = kiln__calloc(1, sizeof *ts + (size_t)count * sizeof(kiln_stream *));
  if (ts == NULL) {
    kiln__oom("creating the thread's default streams");
    return NULL;
  }
  ts->count = count;
  if (pthread_setspecific(g_key, ts) != 0) {
    kiln__free(ts);
    kiln__oom("creating the thread's default streams");
    return NULL;
  }
  return ts;
}

/* The calling thread's default stream on `dev` (NULL: the default device);
 * NULL with the error set if it could not be created. */
kiln_stream *kiln__default_stream(kiln_device *dev) {
  if (dev == NULL)
    dev = kiln__device_default();
  if (dev == NULL)
    return NULL;
  thread_streams *ts = thread_table();
  if (ts == NULL)
    return NULL;
  if (dev->index < 0 || dev->index >= ts->count) {
    kiln__error(KILN_ERROR_INVALID_ARGUMENT, "device is not a kiln device.");
    return NULL;
  }
  kiln_stream *s = ts->streams[dev->index];
  if (s == NULL && kiln__stream_create(dev, true, &s) == KILN_OK)
    ts->streams[dev->index] = s;
  return s;
}

/* ---- synchronizing a whole device ---------------------------------------- */

#define INLINE_EVENTS 64

/* Records an event on each busy stream of `dev` (retained; events outlive
 * their streams) into `events` (room for `cap`). A stream whose event
 * cannot be recorded is synchronized right here instead, under the list
 * lock: slower, but only when memory is short. Returns how many events
 * were recorded, or -1 if more than `cap` streams exist (*needed says how
 * many). */
static int snapshot_events(kiln_device *dev, kiln__event **events, int cap,
                           int *needed, kiln_status *first) {
  const kiln__backend_ops *ops = dev->ops;
  pthread_mutex_lock(&dev->streams_lock);
  int n = 0;
  for (kiln_stream *s = dev->streams; s != NULL; s = s->next)
    n++;
  if (n > cap) {
    pthread_mutex_unlock(&dev->streams_lock);
    *needed = n;
    return -1;
  }
  int k = 0;
  for (kiln_stream *s = dev->streams; s != NULL; s = s->next) {
    pthread_mutex_lock(&s->submit_lock);
    bool busy = !ops->stream_idle(s);
    kiln_status st = KILN_OK;
    if (busy && ops->event_record(s, &events[k]) == KILN_OK)
      k++;
    else if (busy)
      st = ops->stream_synchronize(s);
    pthread_mutex_unlock(&s->submit_lock);
    if (st != KILN_OK && *first == KILN_OK)
      *first = st;
  }
  pthread_mutex_unlock(&dev->streams_lock);
  return k;
}

/* Collects (and clears) the sticky errors of the device's idle streams;
 * busy ones got new work meanwhile and report it themselves later. */
static kiln_status collect_errors(kiln_device *dev) {
  kiln_status first = KILN_OK;
  pthread_mutex_lock(&dev->streams_lock);
  for (kiln_stream *s = dev->streams; s != NULL; s = s->next) {
    if (!dev->ops->stream_idle(s))
      continue;
    kiln_status st = dev->ops->stream_synchronize(s);
    if (st != KILN_OK && first == KILN_OK)
      first = st;
  }
  pthread_mutex_unlock(&dev->streams_lock);
  return first;
}

/* Waits for every stream of the device as it stands now. The waits happen
 * on events, outside every lock, so streams may come and go meanwhile. */
static kiln_status synchronize_device(kiln_device *dev) {
  kiln__event *inline_events[INLINE_EVENTS];
  kiln__event **events = inline_events;
  kiln_status first = KILN_OK;
  int needed = 0;
  int n = snapshot_events(dev, events, INLINE_EVENTS, &needed, &first);
  while (n < 0) {
    /* Many streams: retry with room for them (and a few more). */
    if (events != inline_events)
      kiln__free(events);
    int cap = needed + 16;
    events = kiln__calloc((size_t)cap, sizeof *events);
    if (events == NULL)
      return kiln__oom("synchronizing a device");
    n = snapshot_events(dev, events, cap, &needed, &first);
  }
  for (int i = 0; i < n; i++) {
    kiln_status st = dev->ops->event_synchronize(events[i]);
    if (st != KILN_OK && first == KILN_OK)
      first = st;
    dev->ops->event_release(events[i]);
  }
  if (events != inline_events)
    kiln__free(events);
  kiln_status st = collect_errors(dev);
  return first != KILN_OK ? first : st;
}

/* ---- public -------------------------------------------------------------- */

static kiln_status resolve_device(kiln_device **device) {
  if (*device == NULL) {
    *device = kiln__device_default();
    return *device != NULL ? KILN_OK : KILN_ERROR_INTERNAL;
  }
  if (!kiln__device_check(*device))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device is not a kiln device.");
  return KILN_OK;
}

kiln_status kiln_stream_create(kiln_device *device, kiln_stream **out) {
  KILN_API_ENTER();
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  kiln_status st = resolve_device(&device);
  if (st != KILN_OK)
    return st;
  return kiln__stream_create(device, false, out);
}

kiln_status kiln_stream_destroy(kiln_stream *stream) {
  KILN_API_ENTER();
  if (stream == NULL)
    return KILN_OK;
  if (stream->is_default)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "the stream is a thread's default stream, which kiln "
                       "owns and destroys when the thread exits.");
  return kiln__stream_destroy(stream);
}

kiln_stream *kiln_default_stream(kiln_device *device) {
  KILN_API_ENTER();
  if (device != NULL && !kiln__device_check(device)) {
    kiln__error(KILN_ERROR_INVALID_ARGUMENT, "device is not a kiln device.");
    return NULL;
  }
  return kiln__default_stream(device);
}

kiln_device *kiln_stream_device(kiln_stream *stream) {
  return stream != NULL ? stream->device : NULL;
}

/* NULL means the calling thread's default stream on the default device. */
static kiln_stream *resolve_stream(kiln_stream *stream) {
  return stream != NULL ? stream : kiln__default_stream(NULL);
}

kiln_status kiln_stream_synchronize(kiln_stream *stream) {
  KILN_API_ENTER();
  stream = resolve_stream(stream);
  if (stream == NULL)
    return KILN_ERROR_INTERNAL;
  return kiln__stream_synchronize(stream);
}

kiln_status kiln_synchronize(kiln_device *device) {
  KILN_API_ENTER();
  if (device != NULL) {
    if (!kiln__device_check(device))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "device is not a kiln device.");
    return synchronize_device(device);
  }
  kiln_status first = KILN_OK;
  int count = kiln__device_count();
  for (int i = 0; i < count; i++) {
    kiln_status st = synchronize_device(kiln__device_at(i));
    if (st != KILN_OK && first == KILN_OK)
      first = st;
  }
  return first;
}

kiln_status kiln_stream_add_callback(kiln_stream *stream, kiln_host_fn fn,
                                     void *user) {
  KILN_API_ENTER();
  if (fn == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "fn is NULL.");
  stream = resolve_stream(stream);
  if (stream == NULL)
    return KILN_ERROR_INTERNAL;
  pthread_mutex_lock(&stream->submit_lock);
  kiln_status st = stream->device->ops->enqueue_host(stream, fn, user);
  pthread_mutex_unlock(&stream->submit_lock);
  return st;
}
