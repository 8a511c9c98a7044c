//! One forwarder task per sink: read past the cursor, deliver a batch, advance the cursor
//! once the sink acknowledged it; back off on failure.
//!
//! Nothing waits on a forwarder: writers append to the log as always, and a forwarder
//! reads the file on its own (polling it), so a slow or dead sink only grows its backlog.
//! File work (reading the log, the file sink, the cursor) runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Format, SinkPlan, Target};
use crate::cursor::{self, Cursor};
use crate::error::SinkError;
use crate::file::FileSink;
use crate::http::HttpPoster;
use crate::item::Item;
use crate::source::{self, LogReader};
use crate::syslog::SyslogSink;

/// Most checkpoints sent in one batch.
const MAX_CHECKPOINTS_PER_BATCH: usize = 16;
/// Largest checkpoint note read (a note is a few hundred bytes).
const MAX_NOTE_BYTES: u64 = 64 * 1024;

/// How often the log is looked at, and the first wait after a failure. The defaults are
/// what spawnd uses; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wait between looks at an idle log.
    pub poll: Duration,
    /// First wait after a failure; doubled on each failure up to the sink's `retryMax`,
    /// each wait drawn between its half and itself (jitter).
    pub retry_initial: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_millis(200),
            retry_initial: Duration::from_millis(250),
        }
    }
}

/// A sink's counters, shared with whoever shows them.
#[derive(Debug, Default)]
struct Stats {
    cursor: AtomicU64,
    delivered: AtomicU64,
    failures: AtomicU64,
    /// Milliseconds since the epoch of the last acknowledged batch (0: none).
    last_success_ms: AtomicU64,
}

/// A sink as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkStatus {
    pub name: String,
    /// Records in the log after the sink's cursor.
    pub backlog: u64,
    /// Records the sink acknowledged since the daemon started.
    pub delivered: u64,
    /// Failed deliveries (and failed reads of the log or cursor) since it started.
    pub failures: u64,
    /// When the sink last acknowledged a batch (seconds since the epoch).
    pub last_success: Option<f64>,
}

/// The running forwarders.
#[derive(Debug)]
pub struct Forwarders {
    monitor: SinkMonitor,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The sinks' counters, readable while the forwarders run (e.g. by `/metrics`).
#[derive(Debug, Clone)]
pub struct SinkMonitor {
    log_path: PathBuf,
    sinks: Vec<(String, Arc<Stats>)>,
}

impl SinkMonitor {
    /// Every sink's counters and backlog (read from the end of the log: a file read, so
    /// off the async threads where that matters).
    pub fn status(&self) -> Vec<SinkStatus> {
        let last = source::last_seq(&self.log_path).unwrap_or(0);
        self.sinks
            .iter()
            .map(|(name, s)| {
                let ms = s.last_success_ms.load(Ordering::Relaxed);
                SinkStatus {
                    name: name.clone(),
                    backlog: last.saturating_sub(s.cursor.load(Ordering::Relaxed)),
                    delivered: s.delivered.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    last_success: (ms > 0).then(|| ms as f64 / 1000.0),
                }
            })
            .collect()
    }
}

impl Forwarders {
    /// Starts a forwarder for each plan, for the log in `log_dir` (`audit.jsonl`, its
    /// `checkpoints/`, and the cursors in `sinks/`). Fails, before any starts, if a sink
    /// cannot be made: a header's environment variable unset, a CA file unusable. Needs a
    /// Tokio runtime.
    pub fn start(
        log_dir: &Path,
        plans: Vec<SinkPlan>,
        timing: Timing,
    ) -> Result<Forwarders, SinkError> {
        let mut made = Vec::with_capacity(plans.len());
        for plan in plans {
            let sink = Sink::new(&plan)?;
            made.push((plan, sink));
        }
        let log_path = log_dir.join(spawn_audit::LOG_FILE_NAME);
        let (stop, stopped) = watch::channel(false);
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for (plan, sink) in made {
            let stats = Arc::new(Stats::default());
            sinks.push((plan.name.clone(), stats.clone()));
            let f = Forwarder {
                cursor_path: cursor::path_of(log_dir, &plan.name),
                checkpoints: spawn_audit::checkpoint::dir_of(log_dir),
                log_path: log_path.clone(),
                name: plan.name,
                format: plan.format,
                batch_size: plan.batch_size,
                retry_max: plan.retry_max,
                timing,
                sink,
                stats,
            };
            tasks.push(tokio::spawn(f.run(stopped.clone())));
        }
        Ok(Forwarders {
            monitor: SinkMonitor { log_path, sinks },
            stop,
            tasks,
        })
    }

    /// Every sink's counters and backlog.
    pub fn status(&self) -> Vec<SinkStatus> {
        self.monitor.status()
    }

    /// A handle on the counters, for whoever shows them.
    pub fn monitor(&self) -> SinkMonitor {
        self.monitor.clone()
    }

    /// Stops the forwarders: each delivers what the log holds now (the last checkpoint
    /// included) if its sink takes it at once, and stops at its first failure. Waits at
    /// most `grace`; a forwarder still busy then is abandoned (its cursor says where the
    /// next start resumes).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + grace;
        for mut task in self.tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// A sink, ready to deliver.
#[derive(Debug)]
enum Sink {
    File(Arc<Mutex<FileSink>>),
    Syslog(SyslogSink),
    Webhook(HttpPoster, String),
    Otlp(HttpPoster),
}

impl Sink {
    fn new(plan: &SinkPlan) -> Result<Sink, SinkError> {
        Ok(match &plan.target {
            Target::File(o) => {
                Sink::File(Arc::new(Mutex::new(FileSink::new(o.clone(), plan.format))))
            }
            Target::Syslog(o) => Sink::Syslog(SyslogSink::new(o.clone(), plan.format)?),
            Target::Webhook(o) => Sink::Webhook(HttpPoster::new(&plan.name, o)?, o.source.clone()),
            Target::Otlp(o) => Sink::Otlp(HttpPoster::new(&plan.name, o)?),
        })
    }

    async fn deliver(&mut self, items: &[Item], format: Format) -> Result<(), SinkError> {
        match self {
            Sink::File(f) => {
                let (f, items) = (f.clone(), items.to_vec());
                blocking(move || match f.lock() {
                    Ok(mut f) => f.deliver(&items),
                    Err(_) => Err(SinkError::Task("a previous write panicked".into())),
                })
                .await
            }
            Sink::Syslog(s) => s.deliver(items).await,
            Sink::Webhook(p, source) => {
                p.post(
                    crate::webhook::batch(items, format, source),
                    crate::webhook::CONTENT_TYPE,
                )
                .await
            }
            Sink::Otlp(p) => {
                p.post(crate::otlp::logs(items, format), crate::otlp::CONTENT_TYPE)
                    .await
            }
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SinkError::Task(e.to_string())))
}

struct Forwarder {
    name: String,
    format: Format,
    batch_size: usize,
    retry_max: Duration,
    timing: Timing,
    log_path: PathBuf,
    checkpoints: PathBuf,
    cursor_path: PathBuf,
    sink: Sink,
    stats: Arc<Stats>,
}

impl Forwarder {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.timing.retry_initial, self.retry_max);
        let path = self.cursor_path.clone();
        // A cursor that cannot be read is not a start from zero (that would send the
        // whole log again) nor from the end (that would skip records): the sink waits.
        let mut cursor = loop {
            let p = path.clone();
            match blocking(move || cursor::load(&p)).await {
                Ok(c) => break c,
                Err(e) => {
                    self.failed(&e);
                    if wait(&mut stop, backoff.next()).await {
                        return;
                    }
                }
            }
        };
        self.stats.cursor.store(cursor.seq, Ordering::Relaxed);
        let reader = Arc::new(Mutex::new(LogReader::new(&self.log_path, cursor.seq)));
        let mut pending: Vec<Item> = Vec::new();
        let mut stopping = false;
        loop {
            stopping |= *stop.borrow();
            if pending.is_empty() {
                match self.next_batch(&reader, cursor).await {
                    Ok(items) => pending = items,
                    Err(e) => {
                        self.failed(&e);
                        if stopping || wait(&mut stop, backoff.next()).await {
                            stopping = true;
                        }
                        if stopping {
                            return;
                        }
                        continue;
                    }
                }
            }
            if pending.is_empty() {
                if stopping {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(self.timing.poll) => {}
                    r = stop.changed() => { if r.is_err() { stopping = true; } }
                }
                continue;
            }
            match self.sink.deliver(&pending, self.format).await {
                Ok(()) => {
                    let mut next = cursor;
                    let mut records = 0u64;
                    for item in &pending {
                        match item {
                            Item::Record(e) => {
                                next.seq = next.seq.max(e.seq);
                                records += 1;
                            }
                            Item::Checkpoint { size, .. } => {
                                next.checkpoint = next.checkpoint.max(*size);
                            }
                        }
                    }
                    pending.clear();
                    backoff.reset();
                    cursor = next;
                    self.stats.cursor.store(cursor.seq, Ordering::Relaxed);
                    self.stats.delivered.fetch_add(records, Ordering::Relaxed);
                    self.stats
                        .last_success_ms
                        .store(now_ms(), Ordering::Relaxed);
                    let p = self.cursor_path.clone();
                    if let Err(e) = blocking(move || cursor::store(&p, next)).await {
                        // Delivered, but a restart would send it again (at least once).
                        self.failed(&e);
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    if stopping {
                        return;
                    }
                    // Stopped while waiting: one more try, then out.
                    stopping = wait(&mut stop, backoff.next()).await;
                }
            }
        }
    }

    /// Records past the cursor; when there are none, the checkpoints not yet sent whose
    /// records all were.
    async fn next_batch(
        &self,
        reader: &Arc<Mutex<LogReader>>,
        cursor: Cursor,
    ) -> Result<Vec<Item>, SinkError> {
        let (reader, max, dir) = (reader.clone(), self.batch_size, self.checkpoints.clone());
        blocking(move || {
            let records = match reader.lock() {
                Ok(mut r) => r.next_batch(max)?,
                Err(_) => Vec::new(),
            };
            if !records.is_empty() {
                return Ok(records.into_iter().map(Item::Record).collect());
            }
            new_checkpoints(&dir, cursor)
        })
        .await
    }

    fn failed(&self, e: &SinkError) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = %self.name, error = %chain(e), "audit sink");
    }
}

/// Checkpoints in `dir` larger than the cursor's and no larger than its seq, smallest
/// first. Notes are `<size, 20 digits>.note`; anything else is ignored.
fn new_checkpoints(dir: &Path, cursor: Cursor) -> Result<Vec<Item>, SinkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SinkError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut sizes: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let digits = name.strip_suffix(".note")?;
            if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        })
        .filter(|&size| size > cursor.checkpoint && size <= cursor.seq)
        .collect();
    sizes.sort_unstable();
    sizes.truncate(MAX_CHECKPOINTS_PER_BATCH);
    let mut out = Vec::with_capacity(sizes.len());
    for size in sizes {
        let path = dir.join(format!("{size:020}.note"));
        let mut note = String::new();
        let read = std::fs::File::open(&path).and_then(|f| {
            std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_NOTE_BYTES), &mut note)
        });
        read.map_err(|source| SinkError::Read { path, source })?;
        out.push(Item::Checkpoint { size, note });
    }
    Ok(out)
}

/// Waits `d`, or until a stop is asked for; true when stopped.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

/// An error and its sources, for the log (none of them holds a secret).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with a cap and jitter: waits `initial`, `2·initial`, … up to `max`,
/// each drawn between its half and itself.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    pub(crate) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let mut b = [0u8; 8];
        // Without randomness the wait is still bounded; only the spread is lost.
        let r = getrandom::fill(&mut b).map_or(u64::MAX, |()| u64::from_le_bytes(b));
        let half = d / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(r % span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        for (w, nominal) in waits
            .iter()
            .zip([100, 200, 400, 800, 1000, 1000, 1000, 1000])
        {
            let nominal = Duration::from_millis(nominal);
            assert!(*w >= nominal / 2 && *w <= nominal, "{w:?} for {nominal:?}");
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }

    #[test]
    fn checkpoints_follow_their_records() {
        let dir = tempfile::tempdir().unwrap();
        for size in [3u64, 5, 9] {
            std::fs::write(
                dir.path().join(format!("{size:020}.note")),
                format!("n{size}"),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(".00000000000000000004.note.1"), "tmp").unwrap();
        let sizes = |c: Cursor| -> Vec<u64> {
            new_checkpoints(dir.path(), c)
                .unwrap()
                .into_iter()
                .map(|i| match i {
                    Item::Checkpoint { size, .. } => size,
                    Item::Record(_) => 0,
                })
                .collect()
        };
        assert_eq!(
            sizes(Cursor {
                seq: 2,
                checkpoint: 0
            }),
            Vec::<u64>::new()
        );
        assert_eq!(
            sizes(Cursor {
                seq: 5,
                checkpoint: 0
            }),
            [3, 5]
        );
        assert_eq!(
            sizes(Cursor {
                seq: 9,
                checkpoint: 3
            }),
            [5, 9]
        );
        assert_eq!(
            sizes(Cursor {
                seq: 20,
                checkpoint: 9
            }),
            Vec::<u64>::new()
        );
    }
}
