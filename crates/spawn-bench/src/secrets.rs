//! Secrets (issue 11), in one run: seals and opens per second on one core
//! (`spawn_secrets::crypto`, a 40-byte value under its associated data); secrets resolved per
//! second as a run's start resolves them (`Secrets::get`: the sealed row read from SQLite,
//! the namespace's data key unwrapped, the value opened); and the redaction filter's
//! throughput on 1 GiB of output with 20 secrets, written in 64 KiB chunks as the relay gets
//! them, against a plain copy of the same chunks into the same buffer.

use std::time::Instant;

use anyhow::{Context as _, Result};
use spawn_secrets::crypto::{value_aad, Key};
use spawn_secrets::master::LocalMasterKeys;
use spawn_secrets::redact::{forms, Redactor};
use spawn_secrets::Secrets;

/// What one run measured.
pub struct Figures {
    pub seals_per_s: f64,
    pub opens_per_s: f64,
    pub resolved_per_s: f64,
    /// MiB/s through the redaction filter and through a plain copy.
    pub redact_mib_s: f64,
    pub copy_mib_s: f64,
}

const CRYPTO_ROUNDS: usize = 200_000;
const RESOLVE_ROUNDS: usize = 5_000;
const SECRETS: usize = 20;
const STREAM: usize = 1 << 30;
const CHUNK: usize = 64 << 10;
/// The stream is this buffer, written again and again.
const BUFFER: usize = 64 << 20;

/// A deterministic token for secret `i` (the shape of an API key).
fn token(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = String::from("sk-");
    for _ in 0..32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 62) as usize];
        s.push(char::from(c));
    }
    s
}

/// Text lines like an agent's log, with a form of one of the secrets every ~256 KiB.
fn stream_buffer(secrets: &[String]) -> Vec<u8> {
    let words = [
        "GET",
        "/api/v1/items",
        "200",
        "ok",
        "fetching",
        "page",
        "retry",
        "the",
        "result",
        "json",
        "{\"id\":",
        "42}",
        "INFO",
        "DEBUG",
        "took",
        "12ms",
        "user",
        "request",
    ];
    let mut out = Vec::with_capacity(BUFFER + 4096);
    let (mut i, mut n) = (0usize, 0usize);
    while out.len() < BUFFER {
        for _ in 0..12 {
            out.extend_from_slice(words[i % words.len()].as_bytes());
            out.push(b' ');
            i = i.wrapping_mul(31).wrapping_add(7) % 1_000_003;
        }
        out.push(b'\n');
        if out.len() / (256 << 10) > n {
            let s = &secrets[n % secrets.len()];
            let f = forms(s.as_bytes());
            out.extend_from_slice(b"token: ");
            out.extend_from_slice(&f[n % f.len()]);
            out.push(b'\n');
            n += 1;
        }
    }
    out.truncate(BUFFER);
    out
}

/// MiB/s of `each` over [`STREAM`] bytes of `buf` in [`CHUNK`]s.
fn throughput(buf: &[u8], mut each: impl FnMut(&[u8])) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    while done < STREAM {
        for chunk in buf.chunks(CHUNK) {
            each(chunk);
        }
        done += buf.len();
    }
    (done as f64 / f64::from(1u32 << 20)) / start.elapsed().as_secs_f64()
}

pub fn run() -> Result<Figures> {
    // Seals and opens on one core.
    let key = Key::generate()?;
    let aad = value_aad("bench", "API_KEY", 1, 1);
    let value = token(0);
    let start = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..CRYPTO_ROUNDS {
        sealed = key.seal(&aad, value.as_bytes())?;
    }
    let seals_per_s = CRYPTO_ROUNDS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..CRYPTO_ROUNDS {
        let opened = key
            .open(&aad, &sealed)
            .context("a sealed value does not open")?;
        std::hint::black_box(&opened);
    }
    let opens_per_s = CRYPTO_ROUNDS as f64 / start.elapsed().as_secs_f64();

    // Resolved as a run's start resolves them, from a SQLite store.
    let dir = tempfile::tempdir().context("a directory for the secrets bench")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let secrets: Vec<String> = (0..SECRETS).map(token).collect();
    let resolved_per_s = rt.block_on(async {
        let store =
            spawn_store::Store::open(&dir.path().join("spawn.db").display().to_string()).await?;
        let master = LocalMasterKeys::load_or_create(&dir.path().join("master.key"))?;
        let s = Secrets::new(store, master);
        for (i, v) in secrets.iter().enumerate() {
            s.set("bench", &format!("S{i}"), v.as_bytes(), "bench")
                .await?;
        }
        let start = Instant::now();
        for i in 0..RESOLVE_ROUNDS {
            let opened = s.get("bench", &format!("S{}", i % SECRETS)).await?;
            std::hint::black_box(&opened);
        }
        let per_s = RESOLVE_ROUNDS as f64 / start.elapsed().as_secs_f64();
        s.store().close().await;
        anyhow::Ok(per_s)
    })?;

    // Redaction against a plain copy, interleaved, the better of two rounds each.
    let buf = stream_buffer(&secrets);
    let names: Vec<String> = (0..SECRETS).map(|i| format!("S{i}")).collect();
    let redactor = Redactor::new(
        names
            .iter()
            .zip(&secrets)
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    )?;
    let mut out = Vec::with_capacity(2 * CHUNK);
    let (mut copy_mib_s, mut redact_mib_s) = (0f64, 0f64);
    for _ in 0..2 {
        copy_mib_s = copy_mib_s.max(throughput(&buf, |chunk| {
            out.clear();
            out.extend_from_slice(chunk);
            std::hint::black_box(&out);
        }));
        let mut stream = redactor.stream();
        redact_mib_s = redact_mib_s.max(throughput(&buf, |chunk| {
            out.clear();
            stream.push(chunk, &mut out);
            std::hint::black_box(&out);
        }));
    }
    // What was measured did redact: every planted form, and no value is left.
    let once = redactor.redact(&buf);
    let markers = once.windows(10).filter(|w| *w == b"[REDACTED:").count();
    anyhow::ensure!(
        markers >= BUFFER / (256 << 10) - 1,
        "the redaction of the bench's stream left {markers} markers"
    );
    for v in &secrets {
        anyhow::ensure!(
            !once.windows(v.len()).any(|w| w == v.as_bytes()),
            "a value passed the redaction"
        );
    }
    Ok(Figures {
        seals_per_s,
        opens_per_s,
        resolved_per_s,
        redact_mib_s,
        copy_mib_s,
    })
}
