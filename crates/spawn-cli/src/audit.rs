//! `spawn audit verify|export`: the local audit log of `$SPAWN_HOME` (or an export of it),
//! checked against its hash chain (`spawn_audit::chain`) or copied out as it is stored.

use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use spawn_audit::chain::{self, Verified};

/// The log file under `home`.
pub(crate) fn log_path(home: &Path) -> PathBuf {
    home.join("audit").join(spawn_audit::LOG_FILE_NAME)
}

/// `spawn audit verify [--file F]`: exit 0 if intact, 1 naming the first bad record, 2
/// (with the reason) if it cannot be read at all.
pub(crate) fn verify(home: &Path, file: Option<&Path>, json: bool) -> ExitCode {
    let (path, whole) = match file {
        // An export may be any range of the log: it is checked from where it starts.
        Some(f) => (f.to_owned(), false),
        None => (log_path(home), true),
    };
    let result = (|| -> anyhow::Result<Verified> {
        let (file, len) = spawn_audit::snapshot(&path)
            .with_context(|| format!("no audit log to verify at {}", path.display()))?;
        chain::verify(BufReader::new(file.take(len)), whole)
            .with_context(|| format!("read {}", path.display()))
    })();
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("spawn: {e:#}");
            return ExitCode::from(2);
        }
    };
    if json {
        let mut out = serde_json::to_value(&v).unwrap_or_default();
        out["path"] = serde_json::Value::String(path.display().to_string());
        out["intact"] = serde_json::Value::Bool(v.intact());
        println!("{out}");
    } else {
        match &v.broken {
            None => {
                let range = match (v.first_seq, v.last_seq) {
                    (Some(a), Some(b)) => format!("seq {a}–{b}"),
                    _ => "no records".into(),
                };
                let torn = match v.torn_lines {
                    0 => String::new(),
                    n => format!("; {n} torn line(s) left by a crash, which the chain runs across"),
                };
                println!(
                    "{}: intact: {} record(s), {range}{torn}; last hash {}",
                    path.display(),
                    v.records,
                    v.last_hash.as_deref().unwrap_or(chain::GENESIS)
                );
            }
            Some(b) => {
                println!(
                    "{}: broken at seq {} (line {}): {}; the {} record(s) before it are intact",
                    path.display(),
                    b.seq,
                    b.line,
                    b.reason,
                    v.records
                );
            }
        }
    }
    if v.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `spawn audit export`: the log as stored (JSON lines, chain fields included) on stdout,
/// up to where it stood when the command started; `spawn audit verify --file` checks it.
pub(crate) fn export(home: &Path) -> anyhow::Result<()> {
    let path = log_path(home);
    let (file, len) = spawn_audit::snapshot(&path)
        .with_context(|| format!("no audit log to export at {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    let copied = std::io::copy(&mut file.take(len), &mut stdout)
        .and_then(|n| stdout.flush().map(|()| n))
        .context("write the export to stdout")?;
    anyhow::ensure!(
        copied == len,
        "{} shrank while it was exported ({copied} of {len} bytes)",
        path.display()
    );
    Ok(())
}
