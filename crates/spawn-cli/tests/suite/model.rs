//! The model gateway end to end (SPEC §6a, issue 12): command agents inside each runtime
//! talk to a fake provider on loopback (crates/spawn-gateway/tests/common/provider.rs,
//! written from the providers' published APIs) through the run's gateway, with the
//! official `anthropic` and `openai` Python SDKs, never seeing the real key; budgets stop
//! runs; every call is on record.

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
