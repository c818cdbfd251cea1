/*
 * metrics.h - a Prometheus metrics registry. Counters, gauges and histograms
 * are defined once (any thread) and updated on the hot path by each worker in
 * its own slot without locks; dl_metrics_render() merges the slots into the
 * text exposition format 0.0.4 from any thread while the workers keep going.
 */
#ifndef DL_METRICS_H
#define DL_METRICS_H

#include <stdint.h>

#include "common/buf.h"

enum { DL_METRIC_COUNTER = 1, DL_METRIC_GAUGE, DL_METRIC_HISTOGRAM };

/* Limits. Definitions beyond DL_METRICS_MAX_DEFS fail with DL_ENOMEM. */
#define DL_METRICS_MAX_DEFS 1024
#define DL_METRICS_MAX_LABELS 16
#define DL_METRICS_MAX_BUCKETS 64
#define DL_METRICS_DEFAULT_SERIES_CAP 2000

typedef struct dl_metrics_s dl_metrics_t;

/**
 * Creates a registry for n_workers workers (>= 0). Values are kept per slot:
 * slot w (0..n_workers-1) belongs to worker w and is updated without locks;
 * slot n_workers is shared by every other thread and takes a mutex. Any other
 * w passed to the update functions also means the shared slot.
 * Returns NULL when out of memory.
 */
dl_metrics_t *dl_metrics_new(int n_workers);

/** Frees the registry and every series. No thread may use it any more. NULL is a no-op. */
void dl_metrics_free(dl_metrics_t *m);

/**
 * Sets the series cap per metric per slot (default 2000; values < 1 restore the
 * default). Call it before the workers start.
 */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
void dl_metrics_set_series_cap(dl_metrics_t *m, int cap);
#endif

/**
 * Defines a metric; any thread, before or while serving (takes a mutex).
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*; labels: n_labels distinct names matching
 * [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" ("le" is refused on
 * histograms). help may be NULL. buckets (histograms only): strictly ascending
 * finite upper bounds, +Inf implicit (a trailing +Inf is accepted and dropped);
 * NULL or n_buckets == 0 selects the Prometheus defaults (.005 .. 10).
 * Strings are copied. Redefining a name with the same type, labels and buckets
 * returns the same id (the first help text is kept); a conflicting redefinition
 * returns DL_EINVAL.
 * Returns the id (>= 0), DL_EINVAL or DL_ENOMEM.
 */
int dl_metric_define(dl_metrics_t *m, int type, const char *name, const char *help,
                     const char *const *labels, int n_labels, const double *buckets,
                     int n_buckets);

/*
 * Hot path. Worker w calls these for its own slot only: no lock, and no
 * allocation once the series exists (the first use of a label combination
 * allocates it). label_values: the metric's n_labels strings, in definition
 * order (NULL when it has none; a NULL value counts as ""); borrowed for the
 * call. Unknown ids, a wrong metric type, negative counter increments and NaN
 * are ignored. Past the series cap a new combination is not created and the
 * update only bumps dl_metrics_overflow() (so does a failed allocation).
 */

/** Adds v to a counter (v >= 0) or a gauge. */
void dl_metric_add(dl_metrics_t *m, int w, int id, const char *const *label_values, double v);
/** Sets a gauge in slot w. Gauges are rendered as the sum over the slots, so
 * a worker that owns a value sets it in its own slot; use a per-worker label
 * to expose per-worker gauges. */
void dl_metric_set(dl_metrics_t *m, int w, int id, const char *const *label_values, double v);
/** Records one observation in a histogram. */
void dl_metric_observe(dl_metrics_t *m, int w, int id, const char *const *label_values,
                       double v);

/** One gauge series of a worker's slot, found once for sets on a hot path. */
typedef struct dl_metric_series_s dl_metric_series_t;
/** The series of gauge id with label_values in slot w (0 <= w < n_workers),
 * made if new; NULL when the metric is unknown or not a gauge, w is out of
 * range, or the series cap is reached. Valid until dl_metrics_free(). */
dl_metric_series_t *dl_metric_gauge_series(dl_metrics_t *m, int w, int id,
                                           const char *const *label_values);
/** Sets a series of dl_metric_gauge_series() (by its worker only); NULL is
 * ignored, as dl_metric_set() ignores what it cannot set. */
void dl_metric_series_set(dl_metric_series_t *s, double v);

/**
 * Appends every metric in the text exposition format 0.0.4: "# HELP" (unless the
 * help text is empty), "# TYPE", then the samples; histograms as cumulative
 * name_bucket{le="..."}, name_sum and name_count (always equal to the +Inf bucket). The slots are merged: counters, histograms and gauges are summed.
 * Metrics are sorted by name and series by label values, so equal states render
 * equal bytes. A metric without labels always has a sample (0 before any update).
 * Any thread, concurrently with the updates (reads published series only).
 * Returns 0 or DL_ENOMEM.
 */
int dl_metrics_render(dl_metrics_t *m, dl_buf_t *out);

/**
 * Appends the standard process metrics read from /proc: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_max_fds and process_start_time_seconds. Returns 0, DL_EIO when /proc
 * cannot be read, or DL_ENOMEM.
 */
int dl_metrics_render_process(dl_buf_t *out);

/** Updates dropped because their series was over the cap (or failed to allocate). */
uint64_t dl_metrics_overflow(const dl_metrics_t *m);

/**
 * Reads one merged value (tests, /stats): a counter's or gauge's value, or a
 * histogram's count. -1 when the id is unknown or the label combination has no
 * series; a metric without labels reads 0 before its first update. Any thread.
 */
double dl_metric_value(dl_metrics_t *m, int id, const char *const *label_values);

#endif /* DL_METRICS_H */
