//! The model gateway end to end (SPEC §6a, issue 12): command agents inside each runtime
//! talk to a fake provider on loopback (crates/spawn-gateway/tests/common/provider.rs,
//! written from the providers' published APIs) through the run's gateway, with the
//! official `anthropic` and `openai` Python SDKs, never seeing the real key; budgets stop
//! runs; every call is on record.

// Helpers fail the test by panicking; clippy exempts only #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;

use super::helpers::{tempdir, write_file, Home, Output};

#[path = "../../../spawn-gateway/tests/common/provider.rs"]
mod provider;

const REAL_KEY: &str = "sk-real-provider-key-7f3a9c2e1d5b8046-NEVER-IN-THE-SANDBOX";

/// Where `scripts/install-deps.sh` puts the SDKs.
const SDKS: &str = "/opt/spawn-tools/model-sdks/lib/python3.11/site-packages";

fn sdks() -> &'static str {
    assert!(
        Path::new(SDKS).join("anthropic").is_dir() && Path::new(SDKS).join("openai").is_dir(),
        "the official model SDKs are missing from {SDKS}: run scripts/install-deps.sh (make test does)"
    );
    SDKS
}

fn manifest(
    dir: &Path,
    provider: &str,
    endpoint: &str,
    net: &str,
    extra: &str,
) -> std::path::PathBuf {
    write_file(
        dir,
        "agent.yaml",
        &format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: modeltest}}\nspec:\n  command: [\"true\"]\n  model: {{provider: {provider}, name: fake-model-1, endpoint: \"{endpoint}\"}}\n  capabilities:\n    net: {net}\n{extra}"
        ),
    )
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn events(home: &Home, run: &str, kind: &str) -> Vec<Value> {
    home.audit_of(run)
        .into_iter()
        .filter(|e| e["eventType"] == kind)
        .collect()
}

/// Fails if `out` or anything spawn keeps holds the real key, or the marker that a
/// redaction of it would leave.
fn assert_no_key(home: &Home, out: &Output, what: &str) {
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(REAL_KEY),
            "{what}: the real key reached the output"
        );
        assert!(
            !text.contains("[REDACTED:MODEL_CREDENTIAL]"),
            "{what}: the sandbox saw the real key (redacted on its way out)"
        );
    }
    let mut stack = vec![home.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !bytes
                        .windows(REAL_KEY.len())
                        .any(|w| w == REAL_KEY.as_bytes()),
                    "{what}: {} holds the real key",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn command_agents_use_the_official_sdks_through_the_gateway_on_every_runtime() {
    super::helpers::require_root();
    let sdks = sdks();
    let fake = provider::start();
    let dir = tempdir("model");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/suite/model_agent.py"),
        dir.path().join("agent.py"),
    )
    .unwrap();
    for runtime in ["native", "container", "gvisor"] {
        // Anthropic on a run without a network (the gateway is its one destination);
        // OpenAI on a restricted one (through the proxy for the rest, the gateway direct).
        for (provider, endpoint, net) in [
            ("anthropic", fake.base(), "{policy: none}"),
            (
                "openai",
                format!("{}/v1", fake.base()),
                "{policy: restricted, allowlist: [example.com]}",
            ),
        ] {
            let what = format!("{runtime}/{provider}");
            let home = Home::new();
            let m = manifest(dir.path(), provider, &endpoint, net, "");
            let before = fake.seen().len();
            let out = home
                .cmd(["run", "--runtime", runtime, "--json", "-f"])
                .arg_path(&m)
                .env(
                    if provider == "anthropic" {
                        "ANTHROPIC_API_KEY"
                    } else {
                        "OPENAI_API_KEY"
                    },
                    REAL_KEY,
                )
                .arg_path("--mount")
                .arg_path(format!("{sdks}:/sdk:ro"))
                .arg_path("--mount")
                .arg_path(format!("{}:/agent:ro", dir.path().display()))
                .arg_path("--env")
                .arg_path("PYTHONPATH=/sdk")
                .arg_path("--")
                .arg_path("python3")
                .arg_path("/agent/agent.py")
                .arg_path(provider)
                .start()
                .wait();
            out.assert_code(0);
            let f = out.fields();
            let text = "Hello from the fake provider.";
            assert_eq!(f["json"], format!("{text} 11 5"), "{what}: {out}");
            assert_eq!(f["stream"], format!("{text} 5"), "{what}");
            assert_eq!(f["models"], "fake-model-1", "{what}");
            assert_eq!(f["key-is-placeholder"], "True True", "{what}");
            if provider == "anthropic" {
                assert_eq!(f["count"], "11", "{what}");
                assert_eq!(f["other-model"], "403 permission_error", "{what}");
            } else {
                assert_eq!(f["responses"], format!("{text} 5"), "{what}");
                assert_eq!(f["responses-stream"], format!("{text} 5"), "{what}");
                assert_eq!(f["other-model"], "403 model_not_allowed", "{what}");
            }
            assert_eq!(f["bad-key"], "401", "{what}");
            assert_no_key(&home, &out, &what);
            // What reached the provider carried the real key, never the placeholder.
            let seen = fake.seen();
            let calls = &seen[before..];
            assert!(!calls.is_empty(), "{what}");
            for c in calls {
                let key = if provider == "anthropic" {
                    c.header("x-api-key").join(",")
                } else {
                    c.header("authorization")
                        .join(",")
                        .trim_start_matches("Bearer ")
                        .to_owned()
                };
                assert_eq!(key, REAL_KEY, "{what}: {} {}", c.method, c.path);
            }
            // Each call is a trace step with GenAI fields and its content kept.
            let run = out.run_id();
            let calls = events(&home, &run, "agent.capability.invoke")
                .into_iter()
                .filter(|e| e["resource"]["type"] == "model")
                .collect::<Vec<_>>();
            let chats: Vec<&Value> = calls
                .iter()
                .filter(|e| e["details"]["gen_ai.usage.output_tokens"] == 5)
                .collect();
            assert!(chats.len() >= 2, "{what}: {calls:?}");
            for c in &chats {
                assert_eq!(c["details"]["gen_ai.provider.name"], provider);
                assert_eq!(c["details"]["gen_ai.request.model"], "fake-model-1");
                assert_eq!(c["details"]["gen_ai.usage.input_tokens"], 11);
                let digest = c["details"]["contentSha256"].as_str().unwrap();
                let file = home
                    .path()
                    .join("traces")
                    .join(&run)
                    .join("model")
                    .join(format!(
                        "{:06}.json",
                        c["details"]["call"].as_u64().unwrap()
                    ));
                let bytes = std::fs::read(&file).unwrap();
                assert_eq!(digest, format!("sha256:{}", hex_sha256(&bytes)), "{what}");
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(v["request"]["model"] == "fake-model-1", "{what}: {v}");
            }
            let denied = events(&home, &run, "agent.capability.denied")
                .into_iter()
                .filter(|e| e["resource"]["type"] == "model")
                .count();
            assert!(denied >= 2, "{what}: the other model and the bad key");
        }
    }
}

/// A Python agent that makes `n` Messages calls, `par` at a time, with the body it is
/// given, and prints the statuses; then waits to be stopped.
const CALLER: &str = r#"
import concurrent.futures, json, os, sys, time, urllib.request, urllib.error
url = os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages"
key = os.environ["ANTHROPIC_API_KEY"]
body = sys.argv[1].encode()
n, par = int(sys.argv[2]), int(sys.argv[3])
def call(_):
    req = urllib.request.Request(url, data=body, headers={"x-api-key": key, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return type(e).__name__
with concurrent.futures.ThreadPoolExecutor(par) as ex:
    results = list(ex.map(call, range(n)))
print("statuses", json.dumps(results), flush=True)
time.sleep(60)
"#;

/// The body every budget call sends; its worst case is its length and its 10 tokens.
const BODY: &str = r#"{"model": "fake-model-1", "max_tokens": 10, "messages": []}"#;

struct Budgeted {
    out: Output,
    home: Home,
    provider: provider::Provider,
}

fn budgeted(runtime: &str, limits: &str, n: u32, par: u32, prices: Option<&str>) -> Budgeted {
    let fake = provider::start();
    let dir = tempdir("budget");
    let home = Home::new();
    if let Some(p) = prices {
        std::fs::create_dir_all(home.path()).unwrap();
        std::fs::write(home.path().join("model-prices.yaml"), p).unwrap();
    }
    let m = manifest(
        dir.path(),
        "anthropic",
        &fake.base(),
        "{policy: none}",
        &format!("  limits: {limits}\n"),
    );
    let out = home
        .cmd(["run", "--runtime", runtime, "--json", "-f"])
        .arg_path(&m)
        .env("ANTHROPIC_API_KEY", REAL_KEY)
        .arg_path("--")
        .arg_path("python3")
        .arg_path("-c")
        .arg_path(CALLER)
        .arg_path(BODY)
        .arg_path(n.to_string())
        .arg_path(par.to_string())
        .start()
        .wait();
    Budgeted {
        out,
        home,
        provider: fake,
    }
}

impl Budgeted {
    /// The run was stopped for its budget: killed (SIGTERM, or SIGKILL after the grace
    /// when the agent does not end: gVisor's init passes no SIGTERM on), the reason in the
    /// result and on stderr, a `resource.exhausted` event naming the limit.
    fn assert_stopped(&self, limit: &str) -> (u64, u64) {
        let out = &self.out;
        assert!(matches!(out.code, Some(143 | 137)), "{out}");
        let v = out.json();
        assert_eq!(v["killReason"], "limit", "{out}");
        let reason = v["stopReason"]
            .as_str()
            .unwrap_or_else(|| panic!("no stopReason: {out}"));
        assert!(reason.contains(&format!("limits.{limit}")), "{reason}");
        assert!(out.stderr.contains("the run was stopped"), "{out}");
        let run = out.run_id();
        // (The audit limits may add their own, for the refusals they held back.)
        let ex: Vec<Value> = events(&self.home, &run, "resource.exhausted")
            .into_iter()
            .filter(|e| e["resource"]["type"] == "model")
            .collect();
        assert_eq!(ex.len(), 1, "{out}\n{ex:?}");
        assert_eq!(ex[0]["details"]["limit"], limit);
        assert_eq!(ex[0]["resource"]["type"], "model");
        let stop = events(&self.home, &run, "agent.stop");
        assert_eq!(stop[0]["details"]["killReason"], "limit");
        let ok: Vec<Value> = events(&self.home, &run, "agent.capability.invoke")
            .into_iter()
            .filter(|e| e["resource"]["type"] == "model" && e["outcome"] == "success")
            .collect();
        let tokens = ok
            .iter()
            .map(|e| e["details"]["countedTokens"].as_u64().unwrap())
            .sum();
        let refused = events(&self.home, &run, "agent.capability.denied")
            .into_iter()
            .filter(|e| e["details"]["error.type"] == "budget_exhausted")
            .count();
        assert!(refused >= 1, "{out}");
        (ok.len() as u64, tokens)
    }
}

/// Budgets stop runs exactly: the call that could pass a limit is refused (never
/// forwarded) and stops the run; what was used never passes it. Tokens (in sequence and 50
/// racing), steps and cost, on each runtime.
#[test]
fn a_run_is_stopped_at_its_token_step_and_cost_limits() {
    super::helpers::require_root();
    let worst = BODY.len() as u64 + 10;
    // Room for three calls of 16 tokens (each reserving its worst case first).
    let limit = 2 * 16 + worst;
    let b = budgeted("native", &format!("{{maxTokens: {limit}}}"), 10, 1, None);
    assert_eq!(b.assert_stopped("maxTokens"), (3, 48));

    // 50 racing for room for 7 worst cases at a time: never past the limit.
    let limit = 7 * worst;
    let b = budgeted("native", &format!("{{maxTokens: {limit}}}"), 50, 50, None);
    let (ok, tokens) = b.assert_stopped("maxTokens");
    // The first refusal stops the run, cutting off the calls still in flight (each held
    // its worst case while forwarded, and a completed one gives back what it did not use):
    // what completed is within the limit, and the calls cut off were in flight together,
    // so no more of them than the limit had room for at once (the least a call can hold is
    // its body and one output token: the gateway lowers a cap that does not fit). (How many
    // completed before the refusal cut the others off is the race's: none on a loaded
    // machine, 11 on a fast one.)
    assert!(tokens <= limit, "{ok} calls, {tokens} of {limit} tokens");
    assert_eq!(tokens, ok * 16);
    let forwarded = b.provider.seen().len() as u64;
    let at_once = limit / (BODY.len() as u64 + 1);
    assert!(
        forwarded >= ok && forwarded - ok <= at_once,
        "{forwarded} calls forwarded, {ok} completed, at most {at_once} at once"
    );

    let b = budgeted("gvisor", "{maxSteps: 2}", 10, 1, None);
    assert_eq!(b.assert_stopped("maxSteps"), (2, 32));

    // $1 a million tokens in and out: a micro-dollar a token; room for two calls.
    let prices = "prices:\n  - {provider: anthropic, model: fake-model-1, inputPerMTok: 1, outputPerMTok: 1}\n";
    let micros = 16 + worst;
    let usd = format!("{:.7}", micros as f64 / 1e6 + 0.000_000_5);
    let b = budgeted(
        "container",
        &format!("{{maxCostUsd: {usd}}}"),
        10,
        1,
        Some(prices),
    );
    assert_eq!(b.assert_stopped("maxCostUsd"), (2, 32));

    // A cost limit without a price for the model: the run does not start.
    let b = budgeted("native", "{maxCostUsd: 1}", 1, 1, None);
    b.out.assert_code(125);
    assert!(
        b.out.stderr.contains("needs the price of fake-model-1"),
        "{}",
        b.out
    );
}

/// The gateway's port is the only thing a `net: none` run with a model reaches, and a run
/// without a model never reaches that port on its host end, even with something of the
/// host's listening there.
#[test]
fn the_gateway_is_the_one_way_out_of_a_run_without_a_network() {
    super::helpers::require_root();
    let fake = provider::start();
    let dir = tempdir("gwwall");
    let shared = tempdir("gwwall-shared");
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // Waits for /shared/go (when there is a /shared), then probes.
    let probe = r#"
import os, socket, time, urllib.parse
base = os.environ.get("ANTHROPIC_BASE_URL") or os.environ["HTTP_PROXY"]
host = urllib.parse.urlparse(base).hostname
if os.path.isdir("/shared"):
    with open("/shared/host", "w") as f:
        f.write(host)
    while not os.path.exists("/shared/go"):
        time.sleep(0.05)
def tcp(h, p):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((h, p)); return "open"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()
print("gateway", tcp(host, 3100))
for p in (3128, 3180, 3443, 53, 22):
    print("host%d" % p, tcp(host, p))
print("outside", tcp("1.1.1.1", 80))
print("provider", tcp("127.0.0.1", int(os.environ["FAKE_PORT"])))
"#;
    for runtime in ["native", "container", "gvisor"] {
        let home = Home::new();
        let m = manifest(dir.path(), "anthropic", &fake.base(), "{policy: none}", "");
        let out = home
            .cmd(["run", "--runtime", runtime, "-f"])
            .arg_path(&m)
            .env("ANTHROPIC_API_KEY", REAL_KEY)
            .arg_path("--env")
            .arg_path(format!("FAKE_PORT={}", fake.addr.port()))
            .arg_path("--")
            .arg_path("python3")
            .arg_path("-c")
            .arg_path(probe)
            .start()
            .wait();
        out.assert_code(0);
        let f = out.fields();
        assert_eq!(f["gateway"], "open", "{runtime}: {out}");
        for k in [
            "host3128", "host3180", "host3443", "host53", "host22", "outside", "provider",
        ] {
            assert_ne!(f[k], "open", "{runtime} {k}: {out}");
        }
        // Without a model, a restricted run's host end: the test listens on its port 3100
        // once the run exists, and the agent still cannot connect.
        let _ = std::fs::remove_file(shared.path().join("host"));
        let _ = std::fs::remove_file(shared.path().join("go"));
        let running = home
            .cmd([
                "run",
                "--runtime",
                runtime,
                "--net",
                "restricted",
                "--allow",
                "example.com",
            ])
            .arg_path("--mount")
            .arg_path(format!("{}:/shared:rw", shared.path().display()))
            .arg_path("--env")
            .arg_path(format!("FAKE_PORT={}", fake.addr.port()))
            .arg_path("--")
            .arg_path("python3")
            .arg_path("-c")
            .arg_path(probe)
            .start();
        let host_file = shared.path().join("host");
        assert!(
            super::helpers::wait_until(std::time::Duration::from_secs(30), || {
                std::fs::read_to_string(&host_file).is_ok_and(|h| !h.is_empty())
            }),
            "{runtime}: the agent did not say its host end"
        );
        let host = std::fs::read_to_string(&host_file).unwrap();
        let squatter = std::net::TcpListener::bind((host.as_str(), 3100)).unwrap();
        std::fs::write(shared.path().join("go"), "").unwrap();
        let out = running.wait();
        drop(squatter);
        out.assert_code(0);
        assert_ne!(out.field("gateway"), "open", "{runtime}: {out}");
        assert_ne!(out.field("host22"), "open", "{runtime}: {out}");
    }
}

/// A built-in loop agent (scripted model) with `answers` and `extra` manifest lines.
fn loop_manifest(dir: &Path, answers: &str, extra: &str) -> std::path::PathBuf {
    write_file(dir, "answers.yaml", answers);
    write_file(
        dir,
        "loop.yaml",
        &format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: looper}}\nspec:\n  model: {{provider: scripted, name: scripted-1, endpoint: answers.yaml}}\n  instructions: \"do the task\"\n  capabilities:\n    exec: {{enabled: true, languages: [python], timeout: 20s}}\n{extra}  limits: {{maxSteps: 20}}\n"
        ),
    )
}

const LOOP_ANSWERS: &str = r#"responses:
  - text: "Writing a file."
    tools:
      - {name: fs_write, input: {path: /workspace/a.txt, content: "hello"}}
      - {name: exec, input: {language: python, code: "import os; open('/tmp/marker', 'w').write(str(os.getppid())); print(open('/workspace/a.txt').read())"}}
  - tools:
      - {name: exec, input: {language: python, code: "import os; print('same sandbox', open('/tmp/marker').read() == str(os.getppid()), os.path.exists('/workspace/a.txt'))"}}
  - tools:
      - {name: fs_read, input: {path: /etc/passwd}}
      - {name: fs_read, input: {path: /workspace/../etc/shadow}}
      - {name: exec, input: {language: bash, code: "id"}}
      - {name: exec, input: {language: python, code: 7}}
      - {name: http_fetch, input: {url: "http://example.com/"}}
      - {name: fs_list, input: {path: /workspace}}
  - tools:
      - {name: finish, input: {summary: "all done"}}
"#;

/// Under a token limit, the loop goes on after a tool call that named a URL: the model's own
/// earlier call (a `tool_use` block the loop sends back) is input the body holds, not a URL
/// the provider fetches (the demo's loop was refused there once).
#[test]
fn a_loop_under_a_token_limit_goes_on_after_a_fetch() {
    super::helpers::require_root();
    let dir = tempdir("loop-limit");
    write_file(
        dir.path(),
        "answers.yaml",
        "responses:\n  - tools: [{name: http_fetch, input: {url: \"https://example.org/\"}}]\n  - tools: [{name: finish, input: {summary: fetched}}]\n",
    );
    let m = write_file(
        dir.path(),
        "loop.yaml",
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: fetcher}\nspec:\n  model: {provider: scripted, name: scripted-1, endpoint: answers.yaml}\n  instructions: \"fetch it\"\n  capabilities:\n    net: {policy: restricted, allowlist: [example.com]}\n  limits: {maxSteps: 5, maxTokens: 50000}\n",
    );
    let home = Home::new();
    let out = home
        .cmd(["run", "--runtime", "native", "--json", "-f"])
        .arg_path(&m)
        .start()
        .wait();
    out.assert_code(0);
    let body = out.body();
    assert!(body.contains("[1] tool http_fetch"), "{out}");
    assert!(body.contains("[2] finished: fetched"), "{out}");
    let refused = events(&home, &out.run_id(), "agent.capability.denied");
    assert!(refused.is_empty(), "{refused:?}");
}

/// The built-in loop on every runtime: its tool calls run in the one sandbox of the run
/// (a file and a process of one call seen by the next), what the capabilities do not
/// grant or the schema does not allow goes back to the model as an error without running,
/// and each call is an `agent.tool.invoke` event with its content kept.
#[test]
fn the_built_in_loop_runs_every_tool_call_in_the_runs_one_sandbox() {
    super::helpers::require_root();
    let dir = tempdir("loop");
    let m = loop_manifest(dir.path(), LOOP_ANSWERS, "");
    for runtime in ["native", "container", "gvisor"] {
        let home = Home::new();
        let out = home
            .cmd(["run", "--runtime", runtime, "--json", "-f"])
            .arg_path(&m)
            .start()
            .wait();
        out.assert_code(0);
        let body = out.body();
        assert!(
            body.contains("[1] result: {\"exitCode\":0,\"stderr\":\"\",\"stdout\":\"hello\\n\"}"),
            "{runtime}: {out}"
        );
        assert!(body.contains("same sandbox True True"), "{runtime}: {out}");
        for refused in [
            "/etc/passwd is outside what this run may read",
            "/etc/shadow is outside what this run may read",
            "\\\"bash\\\" is not one of [\\\"python\\\"]",
            "7 is not of type \\\"string\\\"",
            "there is no tool \\\"http_fetch\\\" in this run",
        ] {
            assert!(body.contains(refused), "{runtime}: {refused}: {out}");
        }
        assert!(
            body.contains("{\"name\":\"a.txt\",\"size\":5,\"type\":\"file\"}"),
            "{runtime}: {out}"
        );
        assert!(body.contains("[4] finished: all done"), "{runtime}: {out}");
        let run = out.run_id();
        let tools = events(&home, &run, "agent.tool.invoke");
        assert_eq!(tools.len(), 10, "{runtime}: {tools:?}");
        let outcomes: Vec<&str> = tools
            .iter()
            .map(|e| e["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(
            outcomes,
            [
                "success", "success", "success", "denied", "denied", "denied", "denied", "denied",
                "success", "success"
            ],
            "{runtime}"
        );
        for (i, e) in tools.iter().enumerate() {
            let file = home
                .path()
                .join("traces")
                .join(&run)
                .join("tools")
                .join(format!("{:06}.json", i + 1));
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(
                e["details"]["contentSha256"],
                format!("sha256:{}", hex_sha256(&bytes))
            );
            assert_eq!(e["details"]["gen_ai.tool.name"], e["resource"]["name"]);
        }
        assert_eq!(tools[1]["details"]["language"], "python");
        // The loop's model calls and tool calls are the run's trace.
        let trace = home
            .cmd(["trace", "export"])
            .arg_path(&run)
            .arg_path("--format")
            .arg_path("json")
            .start()
            .wait();
        trace.assert_code(0);
        let t: Value = serde_json::from_str(&trace.stdout).unwrap();
        let kinds: Vec<&str> = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["eventType"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "agent.tool.invoke").count(),
            10,
            "{kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .filter(|k| **k == "agent.capability.invoke")
                .count()
                >= 5,
            "{kinds:?}"
        );
    }
}

/// Replay: a recorded loop run replays to the same calls and results (exit 0); when what a
/// tool sees has changed, the replay says at which step and which call (exit 1); with
/// --step-by-step it waits for Enter before each model call.
#[test]
fn replay_reproduces_a_run_and_reports_where_it_diverges() {
    super::helpers::require_root();
    let dir = tempdir("replay");
    let data = tempdir("replay-data");
    write_file(data.path(), "v", "one");
    let answers = r#"responses:
  - tools:
      - {name: exec, input: {language: python, code: "print(open('/data/v').read())"}}
  - tools:
      - {name: fs_list, input: {path: /data}}
  - tools:
      - {name: finish, input: {summary: "read it"}}
"#;
    let m = loop_manifest(
        dir.path(),
        answers,
        &format!(
            "    fs:\n      mounts:\n        - {{source: {}, path: /data, mode: ro}}\n",
            data.path().display()
        ),
    );
    let home = Home::new();
    let out = home
        .cmd(["run", "--runtime", "native", "--json", "-f"])
        .arg_path(&m)
        .start()
        .wait();
    out.assert_code(0);
    let recorded = out.run_id();
    let replay = |extra: &[&str], stdin: Option<&str>| -> Output {
        let mut cmd = home.cmd(["replay"]);
        cmd.arg_path(&recorded);
        for e in extra {
            cmd.arg_path(e);
        }
        match stdin {
            Some(text) => cmd.stdin_text(text).start().wait(),
            None => cmd.start().wait(),
        }
    };
    let same = replay(&[], None);
    same.assert_code(0);
    assert!(
        same.stdout.contains(&format!("is identical to {recorded}")),
        "{same}"
    );
    assert!(
        same.stdout
            .contains("[1] result: {\"exitCode\":0,\"stderr\":\"\",\"stdout\":\"one\\n\"}"),
        "{same}"
    );
    // On another runtime, too.
    let other = replay(&["--runtime", "gvisor"], None);
    other.assert_code(0);
    // Step by step: Enter before each model call after the first.
    let stepped = replay(&["--step-by-step"], Some("\n\n"));
    stepped.assert_code(0);
    assert_eq!(
        stepped.stderr.matches("press Enter for step").count(),
        2,
        "{stepped}"
    );

    // The tool's world changed: the replay diverges at step 1, call 1.
    write_file(data.path(), "v", "two");
    let diverged = replay(&[], None);
    diverged.assert_code(1);
    assert!(
        diverged.stdout.contains(&format!(
            "diverged from {recorded}: step 1: the result of exec (tool call 1) differs"
        )),
        "{diverged}"
    );
    let run = diverged
        .stdout
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let v: Vec<Value> = events(&home, &run, "policy.violation");
    assert_eq!(v.len(), 1, "{diverged}");
    // A run that is not recorded, or not a run id: 125 with the reason.
    for (id, says) in [("tr_nosuchrun", "run.json"), ("../../etc", "not a run id")] {
        let out = home.cmd(["replay", id]).start().wait();
        out.assert_code(125);
        assert!(out.stderr.contains(says), "{out}");
    }
}

/// A command agent replays too: its model calls answered from the recording, and a
/// request unlike the recorded one named with where it differs.
#[test]
fn a_command_agent_replays_and_a_changed_request_is_reported() {
    super::helpers::require_root();
    let dir = tempdir("replay-cmd");
    let data = tempdir("replay-cmd-data");
    write_file(data.path(), "v", "one");
    write_file(
        dir.path(),
        "answers.yaml",
        "responses:\n  - text: \"the answer\"\n",
    );
    let m = write_file(
        dir.path(),
        "agent.yaml",
        &format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: asker}}\nspec:\n  command: [python3, -c, \"{}\"]\n  model: {{provider: scripted, name: scripted-1, endpoint: answers.yaml}}\n  capabilities:\n    fs:\n      mounts:\n        - {{source: {}, path: /data, mode: ro}}\n",
            "import json, os, urllib.request; q = open('/data/v').read(); body = json.dumps({'model': 'scripted-1', 'max_tokens': 10, 'messages': [{'role': 'user', 'content': q}]}).encode(); r = urllib.request.urlopen(urllib.request.Request(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', data=body, headers={'x-api-key': os.environ['ANTHROPIC_API_KEY'], 'content-type': 'application/json'})); print(json.load(r)['content'][0]['text'])",
            data.path().display()
        ),
    );
    let home = Home::new();
    let out = home
        .cmd(["run", "--runtime", "native", "--json", "-f"])
        .arg_path(&m)
        .start()
        .wait();
    out.assert_code(0);
    assert_eq!(out.body(), "the answer");
    let recorded = out.run_id();
    let same = home.cmd(["replay"]).arg_path(&recorded).start().wait();
    same.assert_code(0);
    assert!(same.stdout.starts_with("the answer\n"), "{same}");
    assert!(same.stdout.contains("is identical to"), "{same}");
    write_file(data.path(), "v", "two");
    let changed = home.cmd(["replay"]).arg_path(&recorded).start().wait();
    changed.assert_code(1);
    assert!(
        changed.stdout.contains("model call 1 (messages): the request differs from the recording's (first at /messages/0/content)"),
        "{changed}"
    );
}

/// The model's credential from spawn's secret store (`credential: store://NAME`): resolved
/// for the gateway only (an `agent.secret.access` event saying so), sent to the provider,
/// never in the sandbox; a credential that cannot be had stops the run before it starts.
#[test]
fn the_credential_comes_from_the_store_and_stays_outside() {
    super::helpers::require_root();
    let fake = provider::start();
    let dir = tempdir("model-store");
    let home = Home::new();
    let value = tempdir("model-store-value");
    std::fs::write(value.path().join("v"), REAL_KEY).unwrap();
    home.cmd(["secrets", "set", "PROVIDER_KEY", "--from-file"])
        .arg_path(value.path().join("v"))
        .start()
        .wait()
        .assert_code(0);
    let m = write_file(
        dir.path(),
        "agent.yaml",
        &format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: stored}}\nspec:\n  command: [sh, -c, 'env; curl -s -H \"x-api-key: $ANTHROPIC_API_KEY\" -H content-type:application/json -d \"{{\\\"model\\\":\\\"fake-model-1\\\",\\\"max_tokens\\\":5,\\\"messages\\\":[]}}\" $ANTHROPIC_BASE_URL/v1/messages; echo']\n  model: {{provider: anthropic, name: fake-model-1, endpoint: \"{}\", credential: \"store://PROVIDER_KEY\"}}\n",
            fake.base()
        ),
    );
    let before = fake.seen().len();
    let out = home
        .cmd(["run", "--runtime", "native", "--json", "-f"])
        .arg_path(&m)
        .start()
        .wait();
    out.assert_code(0);
    assert!(
        out.stdout.contains("Hello from the fake provider."),
        "{out}"
    );
    assert_no_key(&home, &out, "store");
    let seen = fake.seen();
    assert_eq!(seen[before..].len(), 1);
    assert_eq!(seen[before].header("x-api-key"), [REAL_KEY]);
    let access = events(&home, &out.run_id(), "agent.secret.access");
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(access[0]["resource"]["name"], "PROVIDER_KEY");
    assert!(access[0]["details"]["for"]
        .as_str()
        .unwrap()
        .contains("model gateway"));

    // Not in the store: exit 125 before anything runs, and why.
    let m2 = write_file(
        dir.path(),
        "missing.yaml",
        &format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: stored}}\nspec:\n  command: [\"true\"]\n  model: {{provider: anthropic, name: fake-model-1, endpoint: \"{}\", credential: \"store://NOT_THERE\"}}\n",
            fake.base()
        ),
    );
    let out = home
        .cmd(["run", "--runtime", "native", "-f"])
        .arg_path(&m2)
        .start()
        .wait();
    out.assert_code(125);
    assert!(
        out.stderr
            .contains("the model's credential (store://NOT_THERE) could not be resolved"),
        "{out}"
    );
    // Neither there nor in spawn's environment: the same, saying where to put it.
    let m3 = manifest(dir.path(), "openai", &fake.base(), "{policy: none}", "");
    let out = home
        .cmd(["run", "--runtime", "native", "-f"])
        .arg_path(&m3)
        .env_remove("OPENAI_API_KEY")
        .start()
        .wait();
    out.assert_code(125);
    assert!(
        out.stderr
            .contains("set OPENAI_API_KEY in spawn's environment"),
        "{out}"
    );
}

/// An `exec` call that passes its timeout is ended with everything it started, and the
/// loop goes on (the next call sees none of it left).
#[test]
fn an_exec_past_its_timeout_ends_with_what_it_started() {
    super::helpers::require_root();
    let dir = tempdir("loop-timeout");
    let answers = r#"responses:
  - tools:
      - {name: exec, input: {language: python, code: "import subprocess, time; subprocess.Popen(['sleep', '300']); print('started', flush=True); time.sleep(300)"}}
  - tools:
      - {name: exec, input: {language: python, code: "import os; print('sleepers', sum(1 for p in os.listdir('/proc') if p.isdigit() and open('/proc/%s/cmdline' % p, 'rb').read().startswith(b'sleep')))"}}
  - tools:
      - {name: finish, input: {summary: "done"}}
"#;
    write_file(dir.path(), "answers.yaml", answers);
    let m = write_file(
        dir.path(),
        "loop.yaml",
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: looper}\nspec:\n  model: {provider: scripted, name: scripted-1, endpoint: answers.yaml}\n  instructions: \"do the task\"\n  capabilities:\n    exec: {enabled: true, languages: [python], timeout: 2s}\n",
    );
    for runtime in ["native", "gvisor"] {
        let home = Home::new();
        let out = home
            .cmd(["run", "--runtime", runtime, "-f"])
            .arg_path(&m)
            .start()
            .wait();
        out.assert_code(0);
        assert!(
            out.stdout.contains("\"error\":\"timed out after 2.0s\""),
            "{runtime}: {out}"
        );
        assert!(
            out.stdout.contains("\"stdout\":\"started\\n\""),
            "{runtime}: {out}"
        );
        assert!(out.stdout.contains("sleepers 0"), "{runtime}: {out}");
    }
}

/// The scripted provider answers in the API the client speaks: the OpenAI SDK's Chat
/// Completions and Responses (streamed too) and the Anthropic SDK's Messages, one script.
#[test]
fn the_scripted_provider_answers_either_sdk() {
    super::helpers::require_root();
    let sdks = sdks();
    let dir = tempdir("scripted-sdk");
    write_file(
        dir.path(),
        "answers.yaml",
        "responses:\n  - text: one\n  - text: two\n  - text: three\n  - text: four\n",
    );
    let m = write_file(
        dir.path(),
        "agent.yaml",
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: scripted}\nspec:\n  command: [\"true\"]\n  model: {provider: scripted, name: s-1, endpoint: answers.yaml}\n",
    );
    let script = "import anthropic, openai\n\
        o = openai.OpenAI(max_retries=0)\n\
        print('chat', o.chat.completions.create(model='s-1', messages=[{'role': 'user', 'content': 'x'}]).choices[0].message.content)\n\
        print('responses', o.responses.create(model='s-1', input='x').output_text)\n\
        with o.responses.stream(model='s-1', input='x') as s:\n    print('stream', s.get_final_response().output_text)\n\
        a = anthropic.Anthropic(max_retries=0)\n\
        print('messages', a.messages.create(model='s-1', max_tokens=5, messages=[{'role': 'user', 'content': 'x'}]).content[0].text)\n";
    let home = Home::new();
    let out = home
        .cmd(["run", "--runtime", "native", "-f"])
        .arg_path(&m)
        .arg_path("--mount")
        .arg_path(format!("{sdks}:/sdk:ro"))
        .arg_path("--env")
        .arg_path("PYTHONPATH=/sdk")
        .arg_path("--")
        .arg_path("python3")
        .arg_path("-c")
        .arg_path(script)
        .start()
        .wait();
    out.assert_code(0);
    let f = out.fields();
    assert_eq!(
        (
            f["chat"].as_str(),
            f["responses"].as_str(),
            f["stream"].as_str(),
            f["messages"].as_str()
        ),
        ("one", "two", "three", "four"),
        "{out}"
    );
}
