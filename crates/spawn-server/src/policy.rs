//! What spawnd's policy forbids of a manifest that is otherwise valid (`policy.violation`).
//!
//! A manifest that does not parse or breaks the manifest contract (SPEC §3) is a 400
//! `invalid`: a mistake. One that parses but asks for what this daemon never grants is a
//! policy decision: refused with 403 `policy_violation`, naming the rule, and recorded as a
//! `policy.violation` event (outcome `denied`). The rules:
//!
//! - `host-mount`: a mount of a path of the daemon's host (`fs.mounts[].source`). Runs
//!   through the API see only their own volumes; a host path would also tell the caller
//!   whether it exists on the daemon's host.
//! - `blocked-destination`: an allowlist entry (under `restricted`) naming a destination
//!   SPEC §6 always blocks — a cloud metadata service, a private or local-only name
//!   (`metadata.google.internal`, `*.internal`, `localhost`). It could never be reached; a
//!   manifest asking for it asks for what the network policy forbids.
//! - `test-key-namespace`: a test key (`spawn_sk_test_…`) starting a run outside the
//!   `test` and `test-…` namespaces.
//! - `model-script`: the `scripted` model provider, whose answers are a file of the
//!   daemon's host (which it would read, and show pieces of in its errors).
//! - `model-endpoint`: a model `endpoint` of the caller's choice. The run's gateway would
//!   connect from the daemon's host to wherever it names (its private addresses and
//!   metadata services included), and send the daemon's provider key there when the
//!   manifest gives no `credential`. Through the API, runs use the providers' own APIs.

use spawn_policy::Agent;

/// A rule of this daemon's policy that a request broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The rule's name (`host-mount`, `blocked-destination`, `test-key-namespace`).
    pub(crate) rule: &'static str,
    /// The field that breaks it (`spec.capabilities.fs.mounts[0].source`), if any.
    pub(crate) field: Option<String>,
    /// What is wrong, as one sentence for the caller.
    pub(crate) message: String,
}

/// The first rule `agent` breaks, if any.
pub(crate) fn check_agent(agent: &Agent) -> Option<Violation> {
    if let Some(model) = &agent.spec.model {
        if model.provider == spawn_policy::ModelProvider::Scripted {
            return Some(Violation {
                rule: "model-script",
                field: Some("spec.model.provider".into()),
                message: "the scripted model provider reads a file of the daemon's host: not \
                          available through the API"
                    .into(),
            });
        }
        if model.endpoint.is_some() {
            return Some(Violation {
                rule: "model-endpoint",
                field: Some("spec.model.endpoint".into()),
                message: "a model endpoint of the caller's choice is not available through the \
                          API: runs reach the providers' own APIs only (the daemon's credentials \
                          go nowhere else)"
                    .into(),
            });
        }
    }
    let caps = agent.spec.capabilities.as_ref()?;
    if let Some(fs) = &caps.fs {
        if let Some(i) = fs.mounts.iter().position(|m| m.source.is_some()) {
            return Some(Violation {
                rule: "host-mount",
                field: Some(format!("spec.capabilities.fs.mounts[{i}].source")),
                message: "host mounts (fs.mounts[].source) are not available through the API"
                    .into(),
            });
        }
    }
    if let Some(net) = &caps.net {
        for (i, entry) in net.allowlist.iter().enumerate() {
            let name = entry
                .trim_end_matches('.')
                .trim_start_matches("*.")
                .to_ascii_lowercase();
            if let Some(why) = spawn_policy::net::blocked_name_reason(&name) {
                return Some(Violation {
                    rule: "blocked-destination",
                    field: Some(format!("spec.capabilities.net.allowlist[{i}]")),
                    message: format!(
                        "the allowlist names {entry:?}, a {why}: such destinations are always \
                         blocked (SPEC §6)"
                    ),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn agent(caps: &str) -> Agent {
        spawn_policy::parse_agent(&format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  \
             command: [\"true\"]\n  capabilities:\n{caps}"
        ))
        .unwrap()
    }

    #[test]
    fn policy_refusals_name_their_rule_and_field() {
        let table = [
            (
                "    fs:\n      mounts: [{source: /etc, path: /data, mode: ro}]\n",
                Some(("host-mount", "spec.capabilities.fs.mounts[0].source")),
            ),
            (
                "    net:\n      policy: restricted\n      allowlist: [example.com, metadata.google.internal]\n",
                Some(("blocked-destination", "spec.capabilities.net.allowlist[1]")),
            ),
            (
                "    net:\n      policy: restricted\n      allowlist: [\"*.internal\"]\n",
                Some(("blocked-destination", "spec.capabilities.net.allowlist[0]")),
            ),
            (
                "    net:\n      policy: restricted\n      allowlist: [LOCALHOST.]\n",
                Some(("blocked-destination", "spec.capabilities.net.allowlist[0]")),
            ),
            (
                "    net:\n      policy: restricted\n      allowlist: [\"*.wikipedia.org\", api.github.com]\n",
                None,
            ),
            (
                "    fs:\n      mounts: [{name: workspace, path: /workspace, mode: rw}]\n",
                None,
            ),
        ];
        for (caps, want) in table {
            let got = check_agent(&agent(caps));
            assert_eq!(
                got.as_ref().map(|v| (v.rule, v.field.as_deref().unwrap())),
                want,
                "{caps}"
            );
        }
    }

    /// The model half: a script of the host's, and an endpoint of the caller's, are
    /// refused; the providers' own APIs (with or without a namespace's credential) are not.
    #[test]
    fn model_endpoints_and_scripts_are_the_daemons_call() {
        let with_model = |model: &str| {
            spawn_policy::parse_agent(&format!(
                "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: [\"true\"]\n  model: {model}\n"
            ))
            .unwrap()
        };
        let table = [
            ("{provider: scripted, name: m, endpoint: /etc/shadow}", Some(("model-script", "spec.model.provider"))),
            ("{provider: scripted, name: m, endpoint: answers.yaml}", Some(("model-script", "spec.model.provider"))),
            ("{provider: openai, name: m, endpoint: \"http://169.254.169.254/v1\"}", Some(("model-endpoint", "spec.model.endpoint"))),
            ("{provider: anthropic, name: m, endpoint: \"https://evil.example\", credential: \"store://K\"}", Some(("model-endpoint", "spec.model.endpoint"))),
            ("{provider: anthropic, name: m}", None),
            ("{provider: openai, name: m, credential: \"store://OPENAI\"}", None),
        ];
        for (model, want) in table {
            let got = check_agent(&with_model(model));
            assert_eq!(
                got.as_ref().map(|v| (v.rule, v.field.as_deref().unwrap())),
                want,
                "{model}"
            );
        }
    }
}
