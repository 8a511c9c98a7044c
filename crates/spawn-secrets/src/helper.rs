//! Resolution of a run's granted secrets in a helper process: the store's drivers run
//! threads, and the native runtime must make its sandbox from a single-threaded process, so
//! a front end (`spawn`, `spawnd supervise`) starts a helper of its own binary that opens the
//! store and the master key, and reads the values back through a pipe (never argv, a file or
//! an environment).
//!
//! The exchange: the sources on the helper's stdin, one a line (at most [`MAX_GRANTS`]):
//! `store://NAME` (the store's, in the namespace) or `vault://PATH#KEY` (HashiCorp Vault's
//! KV v2, see [`crate::vault`]); on its stdout, for each in order, `+LEN\n` and the value's
//! bytes, or `-REASON\n` (a reason that never holds a value).

use std::io::{BufRead, Read as _, Write};

use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use crate::{Secrets, SecretsError, MAX_VALUE};

/// Most secrets one run may be granted.
pub const MAX_GRANTS: usize = 256;

/// A value as the helper handed it over: wiped when dropped.
pub type Value = Zeroizing<Vec<u8>>;

/// The helper's side: answers the names on `input` from `namespace` of `secrets`;
/// `missing` says how to set a secret that is not there.
pub async fn serve(
    secrets: Option<&Secrets>,
    namespace: &str,
    input: impl BufRead,
    mut output: impl Write,
    missing: impl Fn(&str) -> String,
) -> Result<(), SecretsError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| SecretsError::Io { what, source }
    };
    let names: Vec<String> = input
        .lines()
        .take(MAX_GRANTS)
        .collect::<Result<_, _>>()
        .map_err(io("read the names to resolve"))?;
    let mut out = Zeroizing::new(Vec::new());
    // Connected at the first vault:// source, once.
    let mut vault: Option<Result<crate::vault::VaultClient, String>> = None;
    for source in &names {
        let got: Result<Zeroizing<Vec<u8>>, String> = if let Some(name) =
            source.strip_prefix("store://")
        {
            match secrets {
                None => Err(missing(name)),
                Some(secrets) => match secrets.get(namespace, name).await {
                    Ok(opened) => Ok(Zeroizing::new(opened.value.expose_secret().to_vec())),
                    Err(SecretsError::NotFound { .. }) => Err(missing(name)),
                    Err(e) => Err(e.to_string()),
                },
            }
        } else if let Some((path, key)) = source
            .strip_prefix("vault://")
            .and_then(|r| r.split_once('#'))
        {
            let client = vault.get_or_insert_with(|| {
                match crate::vault::VaultConfig::from_env() {
                    Ok(Some(c)) => crate::vault::VaultClient::connect(&c).map_err(|e| e.to_string()),
                    Ok(None) => Err("vault:// needs VAULT_ADDR (and VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID) in the environment".into()),
                    Err(e) => Err(e.to_string()),
                }
            });
            match client {
                Ok(c) => c.read_kv2(path, key).map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            }
        } else {
            Err("not a source this resolver knows (store:// or vault://)".into())
        };
        match got {
            Ok(v) => {
                out.extend_from_slice(format!("+{}\n", v.len()).as_bytes());
                out.extend_from_slice(&v);
            }
            Err(reason) => {
                out.extend_from_slice(format!("-{}\n", reason.replace('\n', " ")).as_bytes());
            }
        }
    }
    output
        .write_all(&out)
        .and_then(|()| output.flush())
        .map_err(io("hand the values over"))
}

/// The front end's side: runs `helper` (its stdin and stdout are taken here) with the
/// sources `names` and reads each value or reason back, in order.
pub fn resolve_with(
    mut helper: std::process::Command,
    names: &[&str],
) -> Result<Vec<Result<Value, String>>, SecretsError> {
    let failed = |what: &str, e: std::io::Error| SecretsError::Io {
        what: what.to_owned(),
        source: e,
    };
    let malformed = || SecretsError::Helper("its answer is malformed".into());
    let mut child = helper
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed("start the secrets' resolver", e))?;
    let mut list = String::new();
    for n in names {
        list.push_str(n);
        list.push('\n');
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(list.as_bytes())
            .map_err(|e| failed("give the resolver the names", e))?;
    }
    let mut out = Zeroizing::new(Vec::new());
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take((MAX_GRANTS * (MAX_VALUE + 32)) as u64)
            .read_to_end(&mut out)
            .map_err(|e| failed("read the resolver's answer", e))?;
    }
    let status = child
        .wait()
        .map_err(|e| failed("wait for the resolver", e))?;
    if !status.success() {
        return Err(SecretsError::Helper(format!("it failed ({status})")));
    }
    let mut rest: &[u8] = &out;
    let mut values = Vec::with_capacity(names.len());
    for _ in names {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| SecretsError::Helper("its answer is cut short".into()))?;
        let (head, tail) = (&rest[..nl], &rest[nl + 1..]);
        match head.split_first() {
            Some((b'+', len)) => {
                let len: usize = std::str::from_utf8(len)
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .filter(|l| *l <= tail.len() && *l <= MAX_VALUE)
                    .ok_or_else(malformed)?;
                values.push(Ok(Zeroizing::new(tail[..len].to_vec())));
                rest = &tail[len..];
            }
            Some((b'-', reason)) => {
                values.push(Err(String::from_utf8_lossy(reason).into_owned()));
                rest = tail;
            }
            _ => return Err(malformed()),
        }
    }
    Ok(values)
}
