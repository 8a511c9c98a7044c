//! The daemon's own audit events, durable before the action they record is acknowledged
//! ("no audit, no action").
//!
//! One thread owns the daemon's [`AuditLog`]. Handlers hand it events and wait: it takes
//! every batch that is waiting, appends them with one write and makes them durable with
//! one `fdatasync` (group commit), then answers each handler. While one `fdatasync` is
//! under way the next requests' events gather, so under load a sync serves many requests
//! and the API's rate is kept; alone, a request waits for one write and one sync (~0.2 ms
//! on a local disk). A log that cannot take a batch (a full disk, an I/O error) fails every
//! handler of the batch, which then refuses its action (`503 audit_unavailable`); the next
//! batch tries again, so the daemon recovers by itself once the log can be written.

use std::sync::mpsc;

use spawn_audit::{AuditLog, Event};

/// Most events appended in one batch (one write, one sync).
const MAX_BATCH_EVENTS: usize = 4096;

/// The events of one request, and where to say whether they are durable.
#[derive(Debug)]
struct Job {
    events: Vec<Event>,
    done: tokio::sync::oneshot::Sender<Result<(), ()>>,
}

/// The log could not take the events (the reason is in the daemon's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

/// The handle handlers write through; the thread stops when it is dropped.
#[derive(Debug)]
pub(crate) struct AuditWriter {
    jobs: mpsc::Sender<Job>,
}

impl AuditWriter {
    /// Starts the thread that writes to `log`.
    pub(crate) fn start(log: AuditLog) -> Result<AuditWriter, std::io::Error> {
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spawnd-audit".into())
            .spawn(move || write_batches(log, &rx))?;
        Ok(AuditWriter { jobs })
    }

    /// Appends `events` and returns once they are durable, or `Unavailable` if they could
    /// not be written (nothing of them is then claimed written; see the module's note on
    /// a write cut short).
    pub(crate) async fn durable(&self, events: Vec<Event>) -> Result<(), Unavailable> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { events, done })
            .map_err(|_| Unavailable)?;
        answer
            .await
            .map_err(|_| Unavailable)?
            .map_err(|()| Unavailable)
    }
}

/// The writer thread: a batch of every job waiting, one append and one sync, answers.
fn write_batches(mut log: AuditLog, rx: &mpsc::Receiver<Job>) {
    let mut failed_before = false;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut count = jobs[0].events.len();
        while count < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(j) => {
                    count += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(count);
        let mut answers = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            events.append(&mut j.events);
            answers.push(j.done);
        }
        let written = log.append(&events).and_then(|_| log.sync());
        let answer = match &written {
            Ok(()) => {
                if failed_before {
                    tracing::warn!("the audit log is written again");
                    failed_before = false;
                }
                Ok(())
            }
            Err(e) => {
                // Every failure is reported; each refused action was asked for.
                tracing::error!(error = %e, events = events.len(),
                    "the audit log could not be written: the actions it would record are refused");
                failed_before = true;
                Err(())
            }
        };
        for a in answers {
            // A handler that stopped waiting (its client went away) needs no answer.
            let _ = a.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use spawn_audit::{EventType, Outcome, Principal, Resource};

    fn event(n: usize) -> Event {
        Event::new(
            EventType::AgentCreate,
            Principal {
                kind: "User".into(),
                id: "key_x".into(),
                name: None,
            },
            Resource {
                kind: "agent".into(),
                name: format!("ns/a{n}"),
            },
            "create",
            Outcome::Success,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_each_get_their_events_durable_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let w =
            std::sync::Arc::new(AuditWriter::start(AuditLog::open(dir.path()).unwrap()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let w = w.clone();
                tokio::spawn(async move { w.durable(vec![event(n), event(n + 1000)]).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        let path = dir.path().join(spawn_audit::LOG_FILE_NAME);
        let records = spawn_audit::read_records(&path).unwrap();
        assert_eq!(records.len(), 400);
        for n in 0..200 {
            let at = |name: String| records.iter().position(|r| r.event.resource.name == name);
            // A request's events are written together, in its order.
            assert_eq!(
                at(format!("ns/a{}", n + 1000)),
                at(format!("ns/a{n}")).map(|i| i + 1)
            );
        }
    }
}
