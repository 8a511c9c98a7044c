//! Server mode (SPEC §2, §4): with `--server URL` or `SPAWN_SERVER`, and the API key in
//! `SPAWN_API_KEY` (only in the environment: never in argv, where other users of the host
//! can read it), the verbs talk to `spawnd`. `spawn run` streams the agent's output to
//! stdout and stderr as it comes and exits with the agent's code, as locally.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{RunArgs, EXIT_SPAWN_FAILED};

/// The API key's environment variable.
pub(crate) const KEY_ENV: &str = "SPAWN_API_KEY";

/// A connection to one daemon.
#[derive(Debug)]
pub(crate) struct Remote {
    base: String,
    key: String,
    agent: ureq::Agent,
    pub(crate) namespace: String,
}

/// What an API call failed with.
fn api_error(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(status, res) => {
            let body: Value = res.into_json().unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            let code = body["error"]["code"].as_str().unwrap_or("error");
            anyhow::anyhow!("{message} (HTTP {status} {code})")
        }
        ureq::Error::Transport(t) => anyhow::anyhow!("the server could not be reached: {t}"),
    }
}

impl Remote {
    pub(crate) fn new(server: &str, namespace: &str) -> anyhow::Result<Remote> {
        let key = std::env::var(KEY_ENV)
            .with_context(|| format!("server mode needs the API key in {KEY_ENV}"))?;
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// or https:// URL");
        }
        if base.starts_with("https://") {
            bail!("https:// servers are not supported by this build of spawn yet");
        }
        spawn_policy::check_dns_label(namespace)
            .map_err(|m| anyhow::anyhow!("--namespace: {m}"))?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        Ok(Remote {
            base,
            key,
            agent,
            namespace: namespace.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/namespaces/{}{path}", self.base, self.namespace)
    }

    fn req(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &self.url(path))
            .set("X-API-Key", &self.key)
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.req("GET", path)
            .call()
            .map_err(api_error)?
            .into_json()
            .context("the server's answer is not JSON")
    }

    fn send_json(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.req(method, path)
            .send_json(body)
            .map_err(api_error)?
            .into_json()
            .context("the server's answer is not JSON")
    }

    fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.req("DELETE", path).call().map_err(api_error).map(drop)
    }
}

/// `spawn run` against the daemon.
pub(crate) fn run(remote: &Remote, args: &RunArgs) -> ExitCode {
    match run_inner(remote, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spawn: {e:#}");
            ExitCode::from(EXIT_SPAWN_FAILED)
        }
    }
}

fn run_inner(remote: &Remote, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let local_only = [
        ("--net", args.net.is_some()),
        ("--allow", !args.allow.is_empty()),
        ("--deny", !args.deny.is_empty()),
        ("--memory", args.memory.is_some()),
        ("--pids", args.pids.is_some()),
        ("--cpu", args.cpu.is_some()),
        ("--mount", !args.mounts.is_empty()),
        ("--env", !args.env.is_empty()),
        ("--workdir", args.workdir.is_some()),
    ];
    if let Some((flag, _)) = local_only.iter().find(|(_, set)| *set) {
        bail!("{flag} is not available with --server yet: put it in the manifest");
    }
    let manifest = match &args.file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
            // Checked here first, for its line and column.
            spawn_policy::parse_agent(&text).with_context(|| f.display().to_string())?;
            Some(serde_yaml_ng::from_str::<Value>(&text).context("the manifest")?)
        }
        None => None,
    };
    // `--secret NAME`: the namespace's secret NAME as the variable NAME, added to the
    // manifest's grants (a manifest of the command alone when none is given).
    let manifest = match (manifest, args.secrets.is_empty()) {
        (m, true) => m,
        (m, false) => {
            let mut m = m.unwrap_or_else(|| {
                json!({"apiVersion": "spawn.dev/v1", "kind": "Agent",
                       "metadata": {"name": "run"}, "spec": {"command": args.command}})
            });
            let spec = m
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .context("the manifest has no spec")?;
            let caps = spec
                .entry("capabilities")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .context("spec.capabilities is not a mapping")?;
            let grants = caps
                .entry("secrets")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .context("spec.capabilities.secrets is not a list")?;
            for name in &args.secrets {
                let granted = grants.iter().any(|g| g["name"] == name.as_str());
                if !granted {
                    grants.push(json!({"name": name, "from": format!("store://{name}")}));
                }
            }
            Some(m)
        }
    };
    let mut body =
        json!({"command": args.command, "runtime": args.runtime, "timeout": args.timeout});
    if let Some(m) = manifest {
        body["manifest"] = m;
    }
    let run = remote.send_json("POST", "/runs", &body)?;
    let id = run["id"]
        .as_str()
        .context("the server gave no run id")?
        .to_owned();
    let end = stream_logs(remote, &id, true)?;
    let code = match end["state"].as_str() {
        Some("succeeded") => 0,
        Some("failed") => end["exitCode"]
            .as_i64()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(EXIT_SPAWN_FAILED),
        Some("cancelled") => 130,
        other => {
            eprintln!(
                "spawn: run {id} ended {}: {}",
                other.unwrap_or("unknown"),
                end["error"].as_str().unwrap_or("")
            );
            EXIT_SPAWN_FAILED
        }
    };
    if args.json {
        let run = remote.get(&format!("/runs/{id}"))?;
        println!(
            "{}",
            json!({"runId": id, "state": run["state"], "exitCode": run["exitCode"], "error": run["error"]})
        );
    }
    Ok(ExitCode::from(code))
}

/// Writes a run's output to stdout and stderr as it comes (server-sent events, resumed
/// with `Last-Event-ID` if the connection drops); returns the `end` event's data. Without
/// `follow`, only what is stored already.
fn stream_logs(remote: &Remote, id: &str, follow: bool) -> anyhow::Result<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if !follow {
        let logs = remote.get(&format!("/runs/{id}/logs"))?;
        for item in logs["items"].as_array().into_iter().flatten() {
            let data = b64
                .decode(item["data"].as_str().unwrap_or(""))
                .context("the server sent output that is not base64")?;
            write_stream(item["stream"].as_str().unwrap_or("stdout"), &data)?;
        }
        return Ok(Value::Null);
    }
    let mut last: Option<String> = None;
    let mut attempts = 0;
    loop {
        let mut req = remote
            .req("GET", &format!("/runs/{id}/logs"))
            .set("Accept", "text/event-stream");
        if let Some(l) = &last {
            req = req.set("Last-Event-ID", l);
        }
        let res = req.call().map_err(api_error)?;
        let reader = BufReader::new(res.into_reader());
        let (mut event, mut data, mut ev_id) = (String::new(), String::new(), None::<String>);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.is_empty() {
                if event == "end" {
                    return serde_json::from_str(&data).context("the run's end");
                }
                if event == "stdout" || event == "stderr" {
                    let bytes = b64
                        .decode(data.trim())
                        .context("the server sent output that is not base64")?;
                    write_stream(&event, &bytes)?;
                    last = ev_id.take().or(last);
                }
                event.clear();
                data.clear();
                continue;
            }
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if let Some(v) = line.strip_prefix("id: ") {
                ev_id = Some(v.to_owned());
            }
        }
        attempts += 1;
        if attempts > 10 {
            bail!("the connection to the server kept dropping while streaming run {id}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_stream(stream: &str, data: &[u8]) -> anyhow::Result<()> {
    if stream == "stderr" {
        let mut e = std::io::stderr().lock();
        e.write_all(data)?;
        e.flush()?;
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(data)?;
        o.flush()?;
    }
    Ok(())
}

/// Prints a page of runs (the API's JSON, from a server or the local store).
pub(crate) fn print_runs(page: &Value, json_out: bool) {
    if json_out {
        println!("{page}");
    } else {
        println!("{:<32} {:<12} {:>5}", "ID", "STATE", "EXIT");
        for r in page["items"].as_array().into_iter().flatten() {
            println!(
                "{:<32} {:<12} {:>5}",
                r["id"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["exitCode"]
                    .as_i64()
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            );
        }
    }
}

/// `spawn runs …`.
pub(crate) fn runs(remote: &Remote, cmd: &crate::RunsCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        crate::RunsCmd::List => print_runs(&remote.get("/runs")?, json_out),
        crate::RunsCmd::Get { id } => println!("{}", remote.get(&format!("/runs/{id}"))?),
        crate::RunsCmd::Logs { id, follow } => {
            stream_logs(remote, id, *follow)?;
        }
        crate::RunsCmd::Cancel { id } => {
            let r = remote.send_json("POST", &format!("/runs/{id}/cancel"), &json!({}))?;
            if json_out {
                println!("{r}");
            } else {
                println!("run {id}: {}", r["state"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

/// `spawn agents …`.
pub(crate) fn agents(
    remote: &Remote,
    cmd: &crate::AgentsCmd,
    json_out: bool,
) -> anyhow::Result<()> {
    match cmd {
        crate::AgentsCmd::List => {
            let page = remote.get("/agents")?;
            if json_out {
                println!("{page}");
            } else {
                println!("{:<32} {:<32} {:>7}", "NAME", "ID", "VERSION");
                for a in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:<32} {:>7}",
                        a["name"].as_str().unwrap_or(""),
                        a["id"].as_str().unwrap_or(""),
                        a["version"].as_i64().unwrap_or(0)
                    );
                }
            }
        }
        crate::AgentsCmd::Get { name } => println!("{}", remote.get(&format!("/agents/{name}"))?),
        crate::AgentsCmd::Delete { name } => {
            remote.delete(&format!("/agents/{name}"))?;
            println!("agent/{name} deleted");
        }
        crate::AgentsCmd::Start { name } => {
            let r = remote.send_json("POST", &format!("/agents/{name}/start"), &json!({}))?;
            if json_out {
                println!("{r}");
            } else {
                println!("{}", r["id"].as_str().unwrap_or(""));
            }
        }
        crate::AgentsCmd::Stop { name } => {
            let r = remote.send_json("POST", &format!("/agents/{name}/stop"), &json!({}))?;
            if json_out {
                println!("{r}");
            } else {
                let stopped = r["stopped"].as_array().cloned().unwrap_or_default();
                if stopped.is_empty() {
                    println!("agent/{name}: no queued or running run to stop");
                }
                for run in stopped {
                    println!(
                        "{} {}",
                        run["id"].as_str().unwrap_or(""),
                        if run["state"] == "cancelled" {
                            "cancelled"
                        } else {
                            "stopping"
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// `spawn keys …`.
pub(crate) fn keys(remote: &Remote, cmd: &crate::KeysCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        crate::KeysCmd::Create { name, role, test } => {
            let r = remote.send_json(
                "POST",
                "/keys",
                &json!({"name": name, "role": role, "test": test}),
            )?;
            if json_out {
                println!("{r}");
            } else {
                eprintln!(
                    "spawn: key {} for ServiceAccount {name} ({role} in {}); shown once:",
                    r["id"].as_str().unwrap_or(""),
                    remote.namespace
                );
                println!("{}", r["key"].as_str().unwrap_or(""));
            }
        }
        crate::KeysCmd::List => {
            let page = remote.get("/keys")?;
            if json_out {
                println!("{page}");
            } else {
                for k in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{} {} {}/{}{}",
                        k["id"].as_str().unwrap_or(""),
                        k["hint"].as_str().unwrap_or(""),
                        k["principal"]["kind"].as_str().unwrap_or(""),
                        k["principal"]["name"].as_str().unwrap_or(""),
                        if k["revokedMs"].is_null() {
                            ""
                        } else {
                            " (revoked)"
                        }
                    );
                }
            }
        }
        crate::KeysCmd::Revoke { id } => {
            remote.delete(&format!("/keys/{id}"))?;
            println!("key {id} revoked");
        }
    }
    Ok(())
}

/// `spawn secrets …` through spawnd (the namespace's secrets; RBAC resource `secrets`):
/// the value goes in the request's body only, base64 in JSON, wiped once sent.
pub(crate) fn secrets(
    remote: &Remote,
    cmd: &crate::SecretsCmd,
    json_out: bool,
) -> anyhow::Result<()> {
    use crate::SecretsCmd;
    match cmd {
        SecretsCmd::Set {
            name,
            from_file,
            from_stdin,
        } => {
            spawn_secrets::check_name(name)?;
            crate::secrets::no_core_files()?;
            let value = crate::secrets::read_value(from_file.as_deref(), *from_stdin)?;
            let body = zeroize::Zeroizing::new(format!(
                "{{\"valueBase64\":\"{}\"}}",
                base64::engine::general_purpose::STANDARD.encode(value.as_slice())
            ));
            let r: Value = remote
                .req("PUT", &format!("/secrets/{name}"))
                .set("Content-Type", "application/json")
                .send_string(&body)
                .map_err(api_error)?
                .into_json()
                .context("the server's answer is not JSON")?;
            if json_out {
                println!("{r}");
            } else {
                println!(
                    "secret {name} set in namespace {} (version {})",
                    remote.namespace, r["version"]
                );
            }
        }
        SecretsCmd::List => {
            let list = remote.get("/secrets")?;
            for e in list.as_array().into_iter().flatten() {
                if json_out {
                    println!("{e}");
                } else {
                    println!(
                        "{:<32} {:>7}  {}",
                        e["name"].as_str().unwrap_or(""),
                        e["version"],
                        e["updatedBy"].as_str().unwrap_or("")
                    );
                }
            }
        }
        SecretsCmd::Delete { name } => {
            spawn_secrets::check_name(name)?;
            remote.delete(&format!("/secrets/{name}"))?;
            println!("secret {name} deleted from namespace {}", remote.namespace);
        }
        SecretsCmd::RotateMaster | SecretsCmd::RotateDataKey | SecretsCmd::Resolve => bail!(
            "key rotation is the daemon's: its data keys rotate in the background \
             (secrets.rotationDays); the master key with spawn secrets rotate-master on its \
             host, SPAWN_HOME set to its state directory"
        ),
    }
    Ok(())
}

/// `spawn apply -f FILE`: each document (Agent, Role, RoleBinding) created, or replaced at
/// the version just read.
pub(crate) fn apply(remote: &Remote, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let docs = spawn_auth::rbac::split_documents(&text);
    if docs.is_empty() {
        bail!("{}: no documents", file.display());
    }
    for (line, doc) in docs {
        let value: Value = serde_yaml_ng::from_str(&doc)
            .with_context(|| format!("{}: the document at line {line}", file.display()))?;
        let kind = value["kind"].as_str().unwrap_or("").to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&remote.namespace)
            .to_owned();
        let collection = match kind.as_str() {
            "Agent" => "agents",
            "Role" => "roles",
            "RoleBinding" => "rolebindings",
            other => bail!(
                "{}: the document at line {line} is a {other:?}, not an Agent, Role or RoleBinding",
                file.display()
            ),
        };
        let scoped = Remote {
            base: remote.base.clone(),
            key: remote.key.clone(),
            agent: remote.agent.clone(),
            namespace: ns.clone(),
        };
        let path = format!("/{collection}/{name}");
        let current = match scoped.req("GET", &path).call() {
            Ok(res) => res.header("ETag").map(str::to_owned),
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => return Err(api_error(e)),
        };
        let mut req = scoped.req("PUT", &path);
        if let Some(etag) = &current {
            req = req.set("If-Match", etag);
        }
        req.send_string(&doc)
            .map_err(api_error)
            .with_context(|| format!("{}: {kind} {ns}/{name}", file.display()))?;
        let what = if current.is_some() {
            "configured"
        } else {
            "created"
        };
        println!("{}/{name} {what}", kind.to_lowercase());
    }
    Ok(())
}
