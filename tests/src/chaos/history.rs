//! The history of a chaos run: one JSON object per line, each an [`Event`] with the time it was
//! recorded (milliseconds since the run started, local clock of the runner).
//!
//! Written as it happens (so a run that dies still leaves what it saw) and kept in memory too,
//! so the runner can check presence convergence while it settles without re-reading the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the start of the run.
    pub t_ms: u64,
    #[serde(flatten)]
    pub ev: Event,
}

/// What happened. `who` is a uid; `conn` numbers an observer's connections (0 = the first,
/// each reconnect adds one), so answers and pushes can be tied to the connection they came on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Declares an observer and the rooms it enters (and never leaves).
    Observer { who: String, rooms: Vec<String> },
    /// An observer connected to an edge (before its enter or resume on that connection).
    Connected {
        who: String,
        conn: u32,
        edge: String,
        session: String,
    },
    /// An observer's `connector.enter` answer.
    Enter {
        who: String,
        conn: u32,
        room: String,
        seq: u64,
        users: Vec<String>,
    },
    /// One room of an observer's `connector.resume` answer.
    Resume {
        who: String,
        conn: u32,
        room: String,
        seq: u64,
        users: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gap: Option<(u64, u64)>,
    },
    /// A room push an observer received, as it came off the wire (no client-side filtering).
    Push {
        who: String,
        conn: u32,
        room: String,
        route: String,
        seq: u64,
        /// `onChat`: the message and its sender.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// `onAdd` / `onLeave`: the member.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// `onGap`: the lost range.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gap: Option<(u64, u64)>,
    },
    /// An observer's connection ended (it then reconnects and resumes).
    Lost {
        who: String,
        conn: u32,
        reason: String,
    },
    /// An observer stopped trying to get back into its rooms: from then on it is not "in the
    /// room the whole time", and the checker skips it.
    GaveUp { who: String, reason: String },
    /// A sender's `chat.send` and its outcome: `code` 200 with a `seq` is an accepted send;
    /// `code` 0 means no answer (timeout, connection lost).
    Send {
        who: String,
        room: String,
        msg: String,
        code: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A fault injected into a process (`phase` is `begin` or `end`).
    Fault {
        kind: String,
        target: String,
        phase: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// The store's member list of a room, read after the run settled.
    Members { room: String, members: Vec<String> },
}

/// Appends records to the history file and keeps them in memory. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    file: Option<BufWriter<File>>,
    records: Vec<Record>,
    write_error: Option<String>,
}

impl Recorder {
    /// Records into `path` (created or truncated); `None` keeps the history in memory only.
    pub fn create(path: Option<&Path>) -> Result<Recorder> {
        let file = match path {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                file,
                records: Vec::new(),
                write_error: None,
            })),
            start: Instant::now(),
        })
    }

    pub fn record(&self, ev: Event) {
        let rec = Record {
            t_ms: self.start.elapsed().as_millis() as u64,
            ev,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = inner.file.as_mut() {
            let line = serde_json::to_string(&rec).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}") {
                // Remembered and reported by `finish`; the run itself goes on.
                inner.write_error.get_or_insert(e.to_string());
            }
        }
        inner.records.push(rec);
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .clone()
    }

    /// Flushes the file; fails if any write failed.
    pub fn finish(&self) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = inner.file.as_mut() {
            if let Err(e) = f.flush() {
                inner.write_error.get_or_insert(e.to_string());
            }
        }
        match &inner.write_error {
            Some(e) => anyhow::bail!("writing the history failed: {e}"),
            None => Ok(()),
        }
    }
}

/// Reads a history file; a line that is not a record is an error naming the line.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a history record", path.display(), i + 1))?;
        out.push(rec);
    }
    Ok(out)
}

/// Counts of faults by kind (each `begin`).
pub fn faults_by_kind(records: &[Record]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        if let Event::Fault { kind, phase, .. } = &r.ev {
            if phase == "begin" {
                *out.entry(kind.clone()).or_insert(0) += 1;
            }
        }
    }
    out
}
