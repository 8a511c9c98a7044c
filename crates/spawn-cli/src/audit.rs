//! `spawn audit verify|export`: the local audit log of `$SPAWN_HOME` (or an export of it),
//! checked against its hash chain (`spawn_audit::chain`) or copied out as it is stored.

use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use spawn_audit::chain::{self, Verified};
use spawn_audit::checkpoint;

/// The log file under `home`.
pub(crate) fn log_path(home: &Path) -> PathBuf {
    home.join("audit").join(spawn_audit::LOG_FILE_NAME)
}

/// Where the key that signs the local log's checkpoints is: `$SPAWN_AUDIT_KEY`, else
/// `$SPAWN_HOME/keys/audit-signing.key` (apart from the log and the database).
pub(crate) fn key_path(home: &Path) -> PathBuf {
    std::env::var_os("SPAWN_AUDIT_KEY")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join("keys").join("audit-signing.key"))
}

/// `spawn audit verify [--file F] [--key VKEY]`: exit 0 if intact, 1 naming the first bad
/// record, 2 (with the reason) if it cannot be read at all.
pub(crate) fn verify(
    home: &Path,
    file: Option<&Path>,
    checkpoints: Option<&Path>,
    key: Option<&str>,
    json: bool,
) -> ExitCode {
    let (path, whole) = match file {
        // An export may be any range of the log: it is checked from where it starts — or,
        // held to checkpoints, as a whole log.
        Some(f) => (f.to_owned(), checkpoints.is_some()),
        None => (log_path(home), true),
    };
    // Where the checkpoints are: given, or the local log's.
    let notes_dir = match (checkpoints, file) {
        (Some(dir), _) => Some(dir.to_owned()),
        (None, None) => Some(checkpoint::dir_of(&path.with_file_name(""))),
        (None, Some(_)) => None,
    };
    let result = (|| -> anyhow::Result<(Verified, usize)> {
        // The local log's checkpoints, opened with the verifier key given or the signing
        // key's; an export is checked by its chain alone.
        let notes = if let Some(dir) = &notes_dir {
            anyhow::ensure!(
                checkpoints.is_none() || dir.is_dir(),
                "{} is not a directory of checkpoints",
                dir.display()
            );
            let notes = checkpoint::notes_in(dir)?;
            let verifier = match (key, notes.is_empty()) {
                (_, true) => None,
                (Some(text), false) => Some(checkpoint::VerifierKey::parse(text)?),
                (None, false) => {
                    let key_path = key_path(home);
                    anyhow::ensure!(
                        key_path.exists(),
                        "{} holds checkpoints but there is no key to check them: give the verifier key with --key (spawn audit key prints it)",
                        path.display()
                    );
                    Some(checkpoint::load_or_create_key(&key_path)?.verifier())
                }
            };
            let mut opened = Vec::new();
            let mut cuts = Vec::new();
            if let Some(v) = &verifier {
                cuts = spawn_audit::cut::cuts_in(v, &notes);
                for (file, note) in notes {
                    opened.push((file, v.open(&note)));
                }
            }
            (opened, cuts)
        } else {
            (Vec::new(), Vec::new())
        };
        let (notes, cuts) = notes;
        let (file, len) = spawn_audit::snapshot(&path)
            .with_context(|| format!("no audit log to verify at {}", path.display()))?;
        let input = BufReader::new(file.take(len));
        // Held to checkpoints, a log may start after a signed cut (retention).
        let v = if whole {
            spawn_audit::cut::verify_log(input, &notes, &cuts)
        } else {
            checkpoint::verify_log(input, whole, &notes)
        }
        .with_context(|| format!("read {}", path.display()))?;
        Ok((v, notes.len()))
    })();
    let (v, checkpoints) = match result {
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
        out["checkpoints"] = serde_json::Value::from(checkpoints);
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
                    "{}: intact: {} record(s), {range}{torn}; {checkpoints} signed checkpoint(s) agree; last hash {}",
                    path.display(),
                    v.records,
                    v.last_hash.as_deref().unwrap_or(chain::GENESIS)
                );
            }
            Some(b) => {
                let line = match b.line {
                    0 => String::new(),
                    n => format!(" (line {n})"),
                };
                println!(
                    "{}: broken at seq {}{line}: {}; the {} record(s) before it are intact",
                    path.display(),
                    b.seq,
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

/// `spawn audit checkpoint`: signs the head of the local log's Merkle tree (after checking
/// its chain: a broken log is not signed) and keeps the note beside the log.
pub(crate) fn make_checkpoint(home: &Path) -> anyhow::Result<bool> {
    let path = log_path(home);
    let key = checkpoint::load_or_create_key(&key_path(home))?;
    match checkpoint::sign_log(&path, &key)
        .with_context(|| format!("checkpoint {}", path.display()))?
    {
        checkpoint::Signed::Kept { size, note, path } => {
            print!("{note}");
            eprintln!(
                "spawn: checkpoint of {size} record(s) kept in {}",
                path.display()
            );
            Ok(true)
        }
        checkpoint::Signed::Unchanged { size } => {
            eprintln!("spawn: the log already has a checkpoint of its {size} record(s)");
            Ok(true)
        }
        checkpoint::Signed::Broken(b) => {
            eprintln!(
                "spawn: not signed: {} is broken at seq {}: {}",
                path.display(),
                b.seq,
                b.reason
            );
            Ok(false)
        }
    }
}

/// `spawn audit key`: the verifier key of the local log's checkpoints (made if missing).
pub(crate) fn print_key(home: &Path) -> anyhow::Result<()> {
    let key = checkpoint::load_or_create_key(&key_path(home))?;
    println!("{}", key.verifier().to_text());
    Ok(())
}

/// `spawn audit prove SEQ`: an inclusion proof (RFC 9162) of record SEQ in the tree of the
/// latest checkpoint that holds it, with that checkpoint's note, as JSON.
pub(crate) fn prove(home: &Path, seq: u64) -> anyhow::Result<()> {
    use base64::Engine as _;
    let b64 = |h: &[u8]| base64::engine::general_purpose::STANDARD.encode(h);
    let path = log_path(home);
    let key = checkpoint::load_or_create_key(&key_path(home))?;
    let verifier = key.verifier();
    let mut latest = None;
    let notes = checkpoint::notes(&path.with_file_name(""))?;
    // A log cut by retention is proven from its cut on.
    let cuts = spawn_audit::cut::cuts_in(&verifier, &notes);
    for (file, note) in notes {
        let c = verifier
            .open(&note)
            .with_context(|| format!("checkpoint {}", file.display()))?;
        if c.size >= seq {
            latest = Some((c, note));
        }
    }
    let Some((c, note)) = latest else {
        anyhow::bail!("no checkpoint holds seq {seq} yet: run spawn audit checkpoint");
    };
    let (file, len) = spawn_audit::snapshot(&path)
        .with_context(|| format!("no audit log at {}", path.display()))?;
    let proven = checkpoint::prove(BufReader::new(file.take(len)), &c, seq, &cuts)
        .map_err(anyhow::Error::msg)?;
    let out = serde_json::json!({
        "seq": seq,
        "hash": proven.hash,
        "leafIndex": proven.leaf_index,
        "treeSize": c.size,
        "rootHash": b64(&c.root),
        "proof": proven.proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": note,
        "verifierKey": verifier.to_text(),
    });
    println!("{out}");
    Ok(())
}

/// What a filter of `spawn audit query|capabilities` is given on the command line.
pub(crate) struct QueryArgs<'a> {
    pub types: &'a [String],
    pub agent: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub since: Option<&'a str>,
    pub trace: Option<&'a str>,
    pub text: Option<&'a str>,
}

/// `24h`, `30m`, `7d` … before now, or a timestamp in the log's form
/// (`2026-01-15T10:30:00.000Z`).
fn since(text: &str) -> anyhow::Result<String> {
    if let Ok(d) = spawn_policy::parse_duration(text) {
        return Ok(spawn_audit::rfc3339_ago(d));
    }
    let ok = text.len() == 24
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .is_ok()
        && text.ends_with('Z');
    anyhow::ensure!(
        ok,
        "--since takes a duration (24h, 30m, 7d) or a UTC timestamp like 2026-01-15T10:30:00.000Z, not \"{}\"",
        printable(text)
    );
    Ok(text.to_owned())
}

fn filter(a: &QueryArgs<'_>) -> anyhow::Result<spawn_audit::query::Filter> {
    const OUTCOMES: [&str; 3] = ["success", "denied", "error"];
    if let Some(o) = a.outcome {
        anyhow::ensure!(
            OUTCOMES.contains(&o),
            "--outcome is success, denied or error, not \"{}\"",
            printable(o)
        );
    }
    for t in a.types {
        anyhow::ensure!(
            t.parse::<spawn_audit::EventType>().is_ok(),
            "--type \"{}\" is not an event type (SPEC §7: agent.start, auth.failure, …)",
            printable(t)
        );
    }
    Ok(spawn_audit::query::Filter {
        types: a.types.to_vec(),
        agent: a.agent.map(str::to_owned),
        principal: a.principal.map(str::to_owned),
        outcome: a.outcome.map(str::to_owned),
        since: a.since.map(since).transpose()?,
        until: None,
        trace: a.trace.map(str::to_owned),
        text: a.text.map(str::to_owned),
    })
}

/// Untrusted text for a terminal: control characters (C0, DEL, C1) and the bidirectional
/// overrides escaped, so that what an agent put in an event cannot move the cursor, clear
/// the screen or reorder a line.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Each record of the local log matching `f`: (the stored line, parsed).
fn matching(
    home: &Path,
    f: &spawn_audit::query::Filter,
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    use std::io::BufRead as _;
    let path = log_path(home);
    let (file, len) = spawn_audit::snapshot(&path)
        .with_context(|| format!("no audit log at {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(file.take(len)).lines() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if f.matches(&record, &line) {
            out.push((line, record));
        }
    }
    Ok(out)
}

/// `spawn audit query`: the matching records, as a table or (`--json`) as stored.
pub(crate) fn query(home: &Path, a: &QueryArgs<'_>, json: bool) -> anyhow::Result<()> {
    let f = filter(a)?;
    let mut out = std::io::stdout().lock();
    let records = matching(home, &f)?;
    if json {
        for (line, _) in &records {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<24}  {:<24}  {:<8}  {:<28}  RESOURCE ACTION  DETAILS",
        "SEQ", "TIME", "TYPE", "OUTCOME", "PRINCIPAL"
    )?;
    let s = |v: &serde_json::Value| printable(v.as_str().unwrap_or(""));
    for (_, r) in &records {
        let p = &r["principal"];
        let who = match p["name"].as_str() {
            Some(name) => format!("{}/{} ({})", s(&p["type"]), printable(name), s(&p["id"])),
            None => format!("{}/{}", s(&p["type"]), s(&p["id"])),
        };
        // The details as JSON (its strings escaped), cut to a line's worth.
        let details: String = printable(&r["details"].to_string())
            .chars()
            .take(160)
            .collect();
        writeln!(
            out,
            "{:>6}  {:<24}  {:<24}  {:<8}  {:<28}  {}/{} {}  {details}",
            r["seq"].as_u64().unwrap_or(0),
            s(&r["timestamp"]),
            s(&r["eventType"]),
            s(&r["outcome"]),
            who,
            s(&r["resource"]["type"]),
            s(&r["resource"]["name"]),
            s(&r["action"]),
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `spawn audit capabilities --agent ID [--since 24h]`: per capability the agent used,
/// how often, how often denied, and when last.
pub(crate) fn capabilities(home: &Path, a: &QueryArgs<'_>, json: bool) -> anyhow::Result<()> {
    let f = filter(a)?;
    let records = matching(home, &f)?;
    let uses = spawn_audit::query::capabilities(records.iter().map(|(_, r)| r));
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&uses)?)?;
    } else {
        writeln!(
            out,
            "{:<20} {:>8} {:>8}  LAST USE",
            "CAPABILITY", "COUNT", "DENIED"
        )?;
        for u in &uses {
            writeln!(
                out,
                "{:<20} {:>8} {:>8}  {}",
                printable(&u.capability),
                u.count,
                u.denied,
                printable(&u.last_use)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `spawn trace export TRACE_ID --format json|otlp`: the run's steps from the local log.
pub(crate) fn trace_export(home: &Path, trace_id: &str, format: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        spawn_audit::parse_id("tr", trace_id).is_some(),
        "\"{}\" is not a trace id (tr_ and 26 characters: a run's id)",
        printable(trace_id)
    );
    anyhow::ensure!(
        format == "json" || format == "otlp",
        "--format is json or otlp, not \"{}\"",
        printable(format)
    );
    let f = spawn_audit::query::Filter {
        trace: Some(trace_id.to_owned()),
        ..spawn_audit::query::Filter::default()
    };
    let records = matching(home, &f)?;
    let trace = spawn_audit::trace::of(trace_id, records.iter().map(|(_, r)| r))
        .with_context(|| format!("no record of trace {trace_id} in the local audit log"))?;
    let out = if format == "json" {
        serde_json::to_value(&trace)?
    } else {
        trace
            .to_otlp()
            .context("the trace has no OpenTelemetry form")?
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    stdout.flush()?;
    Ok(())
}
