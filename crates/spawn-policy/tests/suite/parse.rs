//! parse_agent / load_agent: the SPEC example, every validation rule, error positions.

use std::io::Write;

use pretty_assertions::assert_eq;
use spawn_policy::{
    load_agent, parse_agent, Agent, AgentSpec, Capabilities, ExecCapability, FsCapability, Limits,
    Metadata, Model, ModelProvider, Mount, MountMode, NetCapability, NetPolicy, PolicyError,
    RateLimit, ResourceLimits, RuntimeKind, Sandbox, SecretRef,
};

use super::{with_spec, MINIMAL, SPEC_EXAMPLE};

fn s(v: &str) -> String {
    v.to_owned()
}

fn err(text: &str) -> String {
    match parse_agent(text) {
        Ok(agent) => panic!("expected an error, parsed {agent:#?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(text: &str, want: &str) {
    let got = err(text);
    assert!(got.contains(want), "want {want:?} in {got:?}");
}

#[test]
fn spec_example_parses_to_the_expected_value() {
    let agent = parse_agent(SPEC_EXAMPLE).unwrap();
    let want = Agent {
        api_version: s("spawn.dev/v1"),
        kind: s("Agent"),
        metadata: Metadata {
            name: s("researcher"),
            namespace: Some(s("default")),
        },
        spec: AgentSpec {
            command: Some(vec![s("python3"), s("/workspace/main.py")]),
            model: Some(Model {
                provider: ModelProvider::Anthropic,
                name: s("claude-sonnet-4-5"),
                endpoint: Some(s("https://api.anthropic.com")),
                credential: Some(s("store://ANTHROPIC_API_KEY")),
            }),
            instructions: Some(s("...")),
            sandbox: Some(Sandbox {
                runtime: Some(RuntimeKind::Gvisor),
                image: Some(s("host")),
                resources: Some(ResourceLimits {
                    cpu: Some(s("1")),
                    memory: Some(s("512Mi")),
                    pids: Some(128),
                    disk: Some(s("1Gi")),
                }),
                timeout: Some(s("10m")),
            }),
            capabilities: Some(Capabilities {
                exec: Some(ExecCapability {
                    enabled: Some(true),
                    languages: vec![s("python"), s("bash")],
                    timeout: Some(s("5m")),
                    memory: Some(s("512Mi")),
                }),
                net: Some(NetCapability {
                    policy: Some(NetPolicy::Restricted),
                    allowlist: vec![s("*.wikipedia.org"), s("api.github.com")],
                    denylist: vec![s("*.internal.company.com"), s("10.0.0.0/8")],
                    rate_limit: Some(RateLimit {
                        requests: 60,
                        per: s("1m"),
                    }),
                    require_tls: Some(true),
                    max_connections: None,
                    max_dns_queries: None,
                }),
                fs: Some(FsCapability {
                    mounts: vec![
                        Mount {
                            source: Some(s("./data")),
                            name: None,
                            path: s("/data"),
                            mode: Some(MountMode::Ro),
                            quota: None,
                        },
                        Mount {
                            source: None,
                            name: Some(s("workspace")),
                            path: s("/workspace"),
                            mode: Some(MountMode::Rw),
                            quota: Some(s("1Gi")),
                        },
                    ],
                }),
                secrets: vec![SecretRef {
                    name: s("GITHUB_TOKEN"),
                    from: s("store://GITHUB_TOKEN"),
                    delivery: None,
                    hosts: vec![],
                }],
            }),
            limits: Some(Limits {
                max_steps: Some(50),
                max_tokens: Some(200_000),
                max_cost_usd: Some(2.0),
            }),
        },
    };
    assert_eq!(agent, want);
}

#[test]
fn agent_round_trips_through_serialize() {
    let agent = parse_agent(SPEC_EXAMPLE).unwrap();
    let yaml = serde_yaml_ng::to_string(&agent).unwrap();
    assert_eq!(parse_agent(&yaml).unwrap(), agent);
}

#[test]
fn minimal_manifest_and_defaults() {
    let agent = parse_agent(MINIMAL).unwrap();
    assert_eq!(agent.metadata.namespace, None);
    assert_eq!(agent.spec.command, Some(vec![s("true")]));
    assert_eq!(agent.spec.sandbox, None);
    // A built-in loop agent (no command) is a valid manifest.
    let builtin = "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  instructions: hello\n";
    assert_eq!(parse_agent(builtin).unwrap().spec.command, None);
    // All runtimes and policies parse.
    for runtime in ["gvisor", "firecracker", "container", "native"] {
        let text = with_spec(&format!("  sandbox: {{runtime: {runtime}}}\n"));
        let agent = parse_agent(&text).unwrap();
        let got = agent.spec.sandbox.unwrap().runtime.unwrap();
        assert_eq!(got.as_str(), runtime);
    }
    for policy in ["none", "restricted", "egress-only", "full"] {
        let text = with_spec(&format!("  capabilities: {{net: {{policy: {policy}}}}}\n"));
        let agent = parse_agent(&text).unwrap();
        let got = agent
            .spec
            .capabilities
            .unwrap()
            .net
            .unwrap()
            .policy
            .unwrap();
        assert_eq!(got.as_str(), policy);
    }
}

#[test]
fn unknown_fields_report_line_and_column_at_every_depth() {
    let cases = [
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {}\nstatus: {}\n",
            "line 5, column 1: unknown field `status`, expected one of `apiVersion`, `kind`, `metadata`, `spec`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata:\n  name: a\n  labels: {}\nspec: {}\n",
            "line 5, column 3: metadata: unknown field `labels`, expected `name` or `namespace`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: [x]\n  sandbox:\n    resources:\n      memroy: 512Mi\n",
            "line 8, column 7: spec.sandbox.resources: unknown field `memroy`, expected one of `cpu`, `memory`, `pids`, `disk`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  capabilities:\n    net:\n      rateLimit: {requests: 1, per: 1m, burst: 2}\n",
            "line 7, column 41: spec.capabilities.net.rateLimit: unknown field `burst`, expected `requests` or `per`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  capabilities:\n    fs:\n      mounts:\n        - path: /x\n          name: v\n          size: 1Gi\n",
            "line 10, column 11: spec.capabilities.fs.mounts[0]: unknown field `size`, expected one of `source`, `name`, `path`, `mode`, `quota`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  capabilities:\n    secrets:\n      - {name: A, from: \"store://A\", value: x}\n",
            "line 7, column 38: spec.capabilities.secrets[0]: unknown field `value`, expected one of `name`, `from`, `as`, `hosts`",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  env: {A: b}\n",
            "line 5, column 3: spec: unknown field `env`",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.starts_with(want), "want {want:?}\n got {got:?}");
        match parse_agent(text).unwrap_err() {
            PolicyError::Syntax { line, column, .. } => {
                assert!(line.is_some() && column.is_some(), "{got}");
            }
            other => panic!("not a Syntax error: {other:?}"),
        }
    }
}

#[test]
fn wrong_types_are_errors_with_positions() {
    let cases = [
        ("  sandbox: {resources: {pids: \"lots\"}}\n", "line 7, column 31: spec.sandbox.resources.pids: invalid type: string \"lots\", expected u64"),
        ("  sandbox: {resources: {pids: -1}}\n", "line 7, column 31: spec.sandbox.resources.pids: invalid type: integer `-1`, expected u64"),
        ("  sandbox: {resources: {pids: 99999999999999999999999}}\n", "spec.sandbox.resources.pids: invalid type"),
        ("  sandbox: {resources: {pids: 1.5}}\n", "spec.sandbox.resources.pids: invalid type: floating point"),
        ("  sandbox: {runtime: docker}\n", "spec.sandbox.runtime: unknown variant `docker`, expected one of `gvisor`, `firecracker`, `container`, `native`"),
        ("  capabilities: {net: {policy: open}}\n", "unknown variant `open`, expected one of `none`, `restricted`, `egress-only`, `full`"),
        ("  capabilities: {exec: {enabled: yes}}\n", "spec.capabilities.exec.enabled: invalid type: string \"yes\", expected a boolean"),
        ("  capabilities: {fs: {mounts: [{path: /x, name: v, mode: rx}]}}\n", "unknown variant `rx`, expected `ro` or `rw`"),
        ("  capabilities: {fs: {mounts: {path: /x}}}\n", "spec.capabilities.fs.mounts: invalid type: map, expected a list"),
        ("  model: {provider: gemini, name: x}\n", "unknown variant `gemini`, expected one of `anthropic`, `openai`, `scripted`"),
        ("  model: {provider: openai}\n", "spec.model: missing field `name`"),
        ("  limits: {maxSteps: many}\n", "spec.limits.maxSteps: invalid type: string \"many\", expected u64"),
        ("  sandbox: [gvisor]\n", "spec.sandbox: invalid type: sequence, expected struct Sandbox"),
    ];
    for (extra, want) in cases {
        assert_err(&with_spec(extra), want);
    }
    assert_err(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: python3 main.py\n",
        "spec.command: invalid type: string \"python3 main.py\", expected a list of strings",
    );
    assert_err(
        "apiVersion: spawn.dev/v1\nkind: Agent\nspec: {}\n",
        "missing field `metadata`",
    );
    assert_err(
        "- a\n- b\n",
        "invalid type: sequence, expected struct Agent",
    );
    assert_err("just a string\n", "invalid type: string \"just a string\"");
}

#[test]
fn header_is_checked_first() {
    assert_eq!(
        err("apiVersion: spawn.dev/v2\nkind: Agent\nmetadata: {name: a}\nspec: {}\n"),
        "apiVersion: \"spawn.dev/v2\" is not supported (use spawn.dev/v1)"
    );
    assert_eq!(
        err("apiVersion: spawn.dev/v1\nkind: Role\nrules: []\n"),
        "kind: \"Role\" is not an Agent (use kind: Agent)"
    );
    assert_err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n",
        "apiVersion: \"v1\" is not supported",
    );
    assert_err(
        "kind: Agent\nmetadata: {name: a}\nspec: {}\n",
        "missing field `apiVersion`",
    );
}

#[test]
fn empty_and_multi_document_inputs() {
    for text in ["", "   \n\n", "# only a comment\n", "---\n", "---\n...\n"] {
        assert_eq!(err(text), "the manifest is empty", "{text:?}");
    }
    assert_eq!(
        err(&format!("{MINIMAL}---\n{MINIMAL}")),
        "the file holds more than one YAML document; give one Agent per file"
    );
    assert_err("apiVersion: [\n", "line ");
    assert_err("a: b\n\tc: d\n", "line ");
}

#[test]
fn metadata_rules() {
    let manifest = |name: &str, ns: &str| {
        format!("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: {name:?}, namespace: {ns:?}}}\nspec: {{command: [x]}}\n")
    };
    assert!(parse_agent(&manifest("a-1", "team-b")).is_ok());
    assert_eq!(
        err(&manifest("Researcher", "default")),
        "metadata.name: \"Researcher\" is not a DNS label (1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    );
    for bad in ["", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        assert_err(&manifest(bad, "default"), "metadata.name: ");
        assert_err(&manifest("a", bad), "metadata.namespace: ");
    }
}

#[test]
fn quantity_rules() {
    let cases = [
        (
            "memory: 512Mx",
            "spec.sandbox.resources.memory: \"512Mx\" is not a quantity (use e.g. 512Mi or 1Gi)",
        ),
        (
            "memory: 99999999999999999999Ei",
            "spec.sandbox.resources.memory: \"99999999999999999999Ei\" is too large",
        ),
        (
            "memory: -1Gi",
            "spec.sandbox.resources.memory: \"-1Gi\" is negative; a quantity must be positive",
        ),
        (
            "memory: 1.2.3Gi",
            "spec.sandbox.resources.memory: \"1.2.3Gi\" is not a quantity (use e.g. 512Mi or 1Gi)",
        ),
        (
            "memory: 3Mi",
            "spec.sandbox.resources.memory: \"3Mi\" is below the minimum of 4Mi",
        ),
        (
            "memory: 512",
            "spec.sandbox.resources.memory: \"512\" is below the minimum of 4Mi",
        ),
        (
            "memory: 2Ti",
            "spec.sandbox.resources.memory: \"2Ti\" is above the maximum of 1Ti",
        ),
        (
            "disk: 1000k",
            "spec.sandbox.resources.disk: \"1000k\" is below the minimum of 1Mi",
        ),
        (
            "disk: 1Pi",
            "spec.sandbox.resources.disk: \"1Pi\" is above the maximum of 1Ti",
        ),
        (
            "pids: 0",
            "spec.sandbox.resources.pids: 0 is not between 1 and 100000",
        ),
        (
            "pids: 100001",
            "spec.sandbox.resources.pids: 100001 is not between 1 and 100000",
        ),
        (
            "cpu: \"0\"",
            "spec.sandbox.resources.cpu: \"0\" must be more than 0",
        ),
        (
            "cpu: 0m",
            "spec.sandbox.resources.cpu: \"0m\" must be more than 0",
        ),
        (
            "cpu: 1m",
            "spec.sandbox.resources.cpu: \"1m\" is below the minimum of 10m",
        ),
        (
            "cpu: 9m",
            "spec.sandbox.resources.cpu: \"9m\" is below the minimum of 10m",
        ),
        (
            "cpu: 0.009",
            "spec.sandbox.resources.cpu: \"0.009\" is below the minimum of 10m",
        ),
        (
            "cpu: 1025",
            "spec.sandbox.resources.cpu: \"1025\" is above the maximum of 1024 CPUs",
        ),
        (
            "cpu: two",
            "spec.sandbox.resources.cpu: \"two\" is not a CPU amount (use e.g. 0.5, 2 or 500m)",
        ),
        (
            "cpu: -1",
            "spec.sandbox.resources.cpu: \"-1\" is negative; a CPU amount must be positive",
        ),
    ];
    for (field, want) in cases {
        let text = with_spec(&format!("  sandbox:\n    resources: {{{field}}}\n"));
        assert_eq!(err(&text), want, "{field}");
    }
    for ok in [
        "memory: 4Mi",
        "memory: 1Ti",
        "memory: 1073741824",
        "memory: 1.5Gi",
        "memory: 100M",
        "disk: 1Mi",
        "pids: 1",
        "pids: 100000",
        "cpu: 1",
        "cpu: 0.5",
        "cpu: 500m",
        "cpu: 1024",
    ] {
        let text = with_spec(&format!("  sandbox:\n    resources: {{{ok}}}\n"));
        assert!(parse_agent(&text).is_ok(), "{ok}: {:?}", parse_agent(&text));
    }
}

#[test]
fn duration_rules() {
    let cases = [
        (
            "timeout: 0s",
            "spec.sandbox.timeout: \"0s\" must be more than 0",
        ),
        (
            "timeout: 31d",
            "spec.sandbox.timeout: \"31d\" is above the maximum of 30d",
        ),
        (
            "timeout: 10",
            "spec.sandbox.timeout: \"10\" is not a duration (a unit is missing",
        ),
        (
            "timeout: 10 minutes",
            "spec.sandbox.timeout: \"10 minutes\" is not a duration",
        ),
        ("timeout: 1.5h", "whole numbers"),
        ("timeout: 30m1h", "largest first"),
        ("timeout: 99999999999999999999999d", "is too large"),
    ];
    for (field, want) in cases {
        let text = with_spec(&format!("  sandbox: {{{field}}}\n"));
        let got = err(&text);
        assert!(
            got.starts_with(want) || got.contains(want),
            "{field}: {got}"
        );
    }
    for ok in ["5m", "30s", "1h30m", "500ms", "2h", "30d", "720h"] {
        let text = with_spec(&format!("  sandbox: {{timeout: {ok}}}\n"));
        assert!(parse_agent(&text).is_ok(), "{ok}");
    }
    assert_err(
        &with_spec("  capabilities: {exec: {timeout: 0ms}}\n"),
        "spec.capabilities.exec.timeout: \"0ms\" must be more than 0",
    );
    assert_err(
        &with_spec("  capabilities: {exec: {memory: 1Ki}}\n"),
        "spec.capabilities.exec.memory: \"1Ki\" is below the minimum of 4Mi",
    );
}

#[test]
fn exec_rules() {
    assert!(parse_agent(&with_spec(
        "  capabilities: {exec: {languages: [python, bash, sh, node, javascript, typescript, ruby, go, rust, java, c, cpp]}}\n"
    ))
    .is_ok());
    assert_eq!(
        err(&with_spec("  capabilities: {exec: {languages: [python, cobol]}}\n")),
        "spec.capabilities.exec.languages[1]: \"cobol\" is not a known language (one of python, bash, sh, node, javascript, typescript, ruby, go, rust, java, c, cpp)"
    );
    assert_eq!(
        err(&with_spec(
            "  capabilities: {exec: {languages: [python, python]}}\n"
        )),
        "spec.capabilities.exec.languages[1]: \"python\" is listed twice"
    );
    assert_err(
        &with_spec("  capabilities: {exec: {languages: [Python]}}\n"),
        "is not a known language",
    );
}

#[test]
fn net_rules() {
    let net = |body: &str| with_spec(&format!("  capabilities:\n    net: {{{body}}}\n"));
    for ok in [
        "policy: none",
        "policy: restricted, allowlist: [\"*.example.com\", \"bücher.example\", \"xn--bcher-kva.example\", \"api.github.com.\"]",
        "policy: egress-only, denylist: [\"10.*\", \"172.16.*\", \"10.0.0.0/8\", \"::1\", \"fc00::/7\", \"169.254.169.254\", \"*.corp\"]",
        "policy: restricted, rateLimit: {requests: 1, per: 1s}, requireTls: false",
        "policy: full",
        "policy: restricted, maxConnections: 1, maxDnsQueries: 1",
        "policy: egress-only, maxConnections: 4096, maxDnsQueries: 1024",
    ] {
        assert!(parse_agent(&net(ok)).is_ok(), "{ok}: {:?}", parse_agent(&net(ok)));
    }
    let cases = [
        ("policy: restricted, allowlist: [\"exa mple.com\"]", "spec.capabilities.net.allowlist[0]: \"exa mple.com\": a label holds only letters, digits and '-'"),
        ("policy: restricted, allowlist: [ok.com, \"a.*.com\"]", "spec.capabilities.net.allowlist[1]: \"a.*.com\": '*' is only allowed as the whole first label, as in *.example.com"),
        ("policy: restricted, allowlist: [\"*\"]", "spec.capabilities.net.allowlist[0]: \"*\": '*' is only allowed as the whole first label"),
        ("policy: restricted, allowlist: [\"10.0.0.1\"]", "spec.capabilities.net.allowlist[0]: \"10.0.0.1\" is an IP address or network; the allowlist takes domain names"),
        ("policy: none, allowlist: [example.com]", "spec.capabilities.net.allowlist: the allowlist only applies to policy restricted, not none"),
        ("policy: egress-only, denylist: [\"10.0.0.1/8\"]", "spec.capabilities.net.denylist[0]: \"10.0.0.1/8\" has host bits set (did you mean 10.0.0.0/8?)"),
        ("policy: egress-only, denylist: [\"300.*\"]", "spec.capabilities.net.denylist[0]: \"300.*\" is not an IPv4 prefix glob"),
        ("policy: egress-only, denylist: [\"http://x\"]", "spec.capabilities.net.denylist[0]: \"http://x\" is not a domain pattern, IP address, CIDR or IPv4 prefix glob"),
        ("denylist: [\"10.*\"]", "spec.capabilities.net.denylist: only applies to policy restricted or egress-only"),
        ("policy: full, requireTls: true", "spec.capabilities.net.requireTls: only applies to policy restricted or egress-only"),
        ("policy: restricted, rateLimit: {requests: 0, per: 1m}", "spec.capabilities.net.rateLimit.requests: must be more than 0"),
        ("policy: restricted, rateLimit: {requests: 5, per: forever}", "spec.capabilities.net.rateLimit.per: \"forever\" is not a duration"),
        ("policy: restricted, rateLimit: {requests: 5}", "spec.capabilities.net.rateLimit: missing field `per`"),
    ];
    // Every way to write a count that is not one from 1 to the maximum.
    let mut caps = Vec::new();
    for (field, max) in [("maxConnections", 4096u64), ("maxDnsQueries", 1024)] {
        for bad in ["0", &(max + 1).to_string(), "4294967295"] {
            caps.push((
                format!("policy: egress-only, {field}: {bad}"),
                format!("spec.capabilities.net.{field}: must be from 1 to {max}, not {bad}"),
            ));
        }
        for bad in [
            "-1",
            "4294967296",
            "1.5",
            "\"10\"",
            "ten",
            "[]",
            "{}",
            "1e3",
            "true",
            "0b",
        ] {
            caps.push((
                format!("policy: egress-only, {field}: {bad}"),
                format!("spec.capabilities.net.{field}"),
            ));
        }
        for policy in ["none", "full"] {
            caps.push((
                format!("policy: {policy}, {field}: 8"),
                format!("spec.capabilities.net.{field}: only applies to policy restricted or egress-only"),
            ));
        }
    }
    for (body, want) in &caps {
        let got = err(&net(body));
        assert!(
            got.contains(want.as_str()),
            "{body}\nwant {want}\n got {got}"
        );
    }
    for (body, want) in cases {
        let got = err(&net(body));
        assert!(got.contains(want), "{body}\nwant {want}\n got {got}");
    }
    let label = "a".repeat(64);
    assert_err(
        &net(&format!("policy: restricted, allowlist: [\"{label}.com\"]")),
        "a label is longer than 63 characters",
    );
}

#[test]
fn mount_rules() {
    let mounts =
        |body: &str| with_spec(&format!("  capabilities:\n    fs:\n      mounts:\n{body}"));
    assert!(parse_agent(&mounts(
        "        - {source: ./data, path: /data}\n        - {source: /abs/dir, path: /abs/, mode: rw}\n        - {name: scratch, path: /scratch, quota: 1Mi}\n"
    ))
    .is_ok());
    let cases = [
        ("        - {source: ./d, path: /workspace/../proc}\n", "spec.capabilities.fs.mounts[0].path: \"/workspace/../proc\" has a '..' component; write the path plainly"),
        ("        - {source: ./d, path: data}\n", "spec.capabilities.fs.mounts[0].path: \"data\" is not an absolute path"),
        ("        - {source: ./d, path: /a/./b}\n", "has a '.' component"),
        ("        - {source: ./d, path: \"/a//b\"}\n", "has an empty component (//)"),
        ("        - {source: ./d, path: /}\n", "spec.capabilities.fs.mounts[0].path: cannot mount over / (the sandbox's root)"),
        ("        - {source: ./d, path: /proc}\n", "\"/proc\" is at or under /proc, which the sandbox provides itself"),
        ("        - {source: ./d, path: /sys/fs/cgroup}\n", "is at or under /sys"),
        ("        - {source: ./d, path: /dev/}\n", "is at or under /dev"),
        ("        - {source: ./a, path: /x}\n        - {name: v, path: /x/}\n", "spec.capabilities.fs.mounts[1].path: /x is mounted more than once"),
        ("        - {source: ./d, name: v, path: /x}\n", "spec.capabilities.fs.mounts[0]: give either source (a host path) or name (a per-run volume), not both"),
        ("        - {path: /x, mode: rw}\n", "spec.capabilities.fs.mounts[0]: needs source (a host path) or name (a per-run volume)"),
        ("        - {source: ./d, path: /x, quota: 1Gi}\n", "spec.capabilities.fs.mounts[0].quota: a quota only applies to a named volume"),
        ("        - {name: v, path: /x, quota: 1Ki}\n", "spec.capabilities.fs.mounts[0].quota: \"1Ki\" is below the minimum of 1Mi"),
        ("        - {name: v, path: /x, quota: 2Ti}\n", "is above the maximum of 1Ti"),
        ("        - {name: My_Volume, path: /x}\n", "spec.capabilities.fs.mounts[0].name: \"My_Volume\" is not a DNS label"),
        ("        - {source: \"\", path: /x}\n", "spec.capabilities.fs.mounts[0].source: cannot be empty"),
        ("        - {source: \"a\\0b\", path: /x}\n", "spec.capabilities.fs.mounts[0].source: contains a NUL byte"),
        ("        - {name: v}\n", "spec.capabilities.fs.mounts[0]: missing field `path`"),
    ];
    for (body, want) in cases {
        let got = err(&mounts(body));
        assert!(got.contains(want), "{body}\nwant {want}\n got {got}");
    }
}

#[test]
fn secret_model_and_limit_rules() {
    assert_eq!(
        err(&with_spec("  capabilities: {secrets: [{name: 1TOKEN, from: \"store://T\"}]}\n")),
        "spec.capabilities.secrets[0].name: \"1TOKEN\" is not a variable name (letters, digits and '_', not starting with a digit)"
    );
    assert_eq!(
        err(&with_spec("  capabilities: {secrets: [{name: LD_PRELOAD, from: \"store://T\"}]}\n")),
        "spec.capabilities.secrets[0].name: LD_PRELOAD: names starting with LD_ cannot be set (they change what the dynamic loader loads)"
    );
    assert_err(
        &with_spec("  capabilities: {secrets: [{name: T, from: \"env://T\"}]}\n"),
        "spec.capabilities.secrets[0].from: \"env://T\" is not a secret reference (use store://NAME or vault://path/to/secret#key)",
    );
    assert_err(
        &with_spec("  capabilities: {secrets: [{name: T, from: \"vault://secret/data/gh\"}]}\n"),
        "a vault reference names a key after '#'",
    );
    assert_err(
        &with_spec("  capabilities: {secrets: [{name: T, from: \"store://A\"}, {name: T, from: \"store://B\"}]}\n"),
        "spec.capabilities.secrets[1].name: \"T\" is listed twice",
    );
    assert!(parse_agent(&with_spec(
        "  capabilities: {secrets: [{name: T, from: \"vault://secret/data/gh#token\"}]}\n"
    ))
    .is_ok());

    assert_err(
        &with_spec("  model: {provider: openai, name: gpt, endpoint: \"ftp://x\"}\n"),
        "spec.model.endpoint: \"ftp://x\" is not an http(s) URL",
    );
    assert_err(
        &with_spec("  model: {provider: openai, name: gpt, endpoint: \"https://u:p@x.com\"}\n"),
        "credentials do not belong in the URL",
    );
    assert_err(
        &with_spec("  model: {provider: openai, name: gpt, credential: \"sk-123\"}\n"),
        "spec.model.credential: \"sk-123\" is not a secret reference",
    );
    assert_err(
        &with_spec("  model: {provider: openai, name: \"\"}\n"),
        "spec.model.name: a model name has 1 to 256 characters",
    );
    assert!(parse_agent(&with_spec(
        "  model: {provider: openai, name: test, endpoint: \"http://127.0.0.1:8080/v1\"}\n"
    ))
    .is_ok());
    assert!(parse_agent(&with_spec(
        "  model: {provider: scripted, name: test, endpoint: ./answers.yaml}\n"
    ))
    .is_ok());
    assert_err(
        &with_spec("  model: {provider: scripted, name: x, endpoint: \"https://x\"}\n"),
        "spec.model.endpoint: the scripted provider's endpoint is a file of answers (a path), not a URL",
    );

    let cases = [
        ("maxSteps: 0", "spec.limits.maxSteps: must be more than 0"),
        ("maxTokens: 0", "spec.limits.maxTokens: must be more than 0"),
        (
            "maxCostUsd: -1",
            "spec.limits.maxCostUsd: -1 is not a finite amount of at least 0",
        ),
        (
            "maxCostUsd: .inf",
            "spec.limits.maxCostUsd: inf is not a finite amount of at least 0",
        ),
        (
            "maxCostUsd: .nan",
            "spec.limits.maxCostUsd: NaN is not a finite amount of at least 0",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(err(&with_spec(&format!("  limits: {{{body}}}\n"))), want);
    }
    assert!(parse_agent(&with_spec("  limits: {maxCostUsd: 0}\n")).is_ok());
}

#[test]
fn command_and_text_rules() {
    assert_eq!(
        err("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {command: []}\n"),
        "spec.command: cannot be empty (give at least the program to run)"
    );
    assert_eq!(
        err(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {command: [\"\"]}\n"
        ),
        "spec.command[0]: the program name cannot be empty"
    );
    assert_eq!(
        err("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {command: [sh, \"a\\0b\"]}\n"),
        "spec.command[1]: contains a NUL byte"
    );
    assert_eq!(
        err(&with_spec("  instructions: \"\"\n")),
        "spec.instructions: cannot be empty"
    );
    assert_eq!(
        err(&with_spec("  sandbox: {image: \"my image\"}\n")),
        "spec.sandbox.image: \"my image\" contains whitespace"
    );
}

#[test]
fn load_agent_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("agent.yaml");
    std::fs::write(&good, MINIMAL).unwrap();
    assert_eq!(load_agent(&good).unwrap().metadata.name, "demo");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  comand: [x]\n",
    )
    .unwrap();
    let e = load_agent(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: line 5, column 3: spec: unknown field `comand`, expected one of `command`, `model`, `instructions`, `sandbox`, `capabilities`, `limits`",
            bad.display()
        )
    );
    assert!(matches!(
        e.inner(),
        PolicyError::Syntax {
            line: Some(5),
            column: Some(3),
            ..
        }
    ));

    let missing = dir.path().join("missing.yaml");
    let e = load_agent(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot read manifest {}", missing.display())
    );
    assert!(std::error::Error::source(&e).is_some());

    let e = load_agent(dir.path()).unwrap_err();
    assert!(e.to_string().starts_with("cannot read manifest"), "{e}");

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, b"apiVersion: \xff\xfe\n").unwrap();
    assert_eq!(
        load_agent(&binary).unwrap_err().to_string(),
        format!(
            "{}: the manifest is not UTF-8 text (invalid byte at offset 12)",
            binary.display()
        )
    );

    let big = dir.path().join("big.yaml");
    let mut f = std::fs::File::create(&big).unwrap();
    f.write_all(MINIMAL.as_bytes()).unwrap();
    let filler = format!("#{}\n", "x".repeat(1023));
    for _ in 0..(10 * 1024) {
        f.write_all(filler.as_bytes()).unwrap();
    }
    drop(f);
    assert_eq!(
        load_agent(&big).unwrap_err().to_string(),
        format!(
            "{}: the manifest is larger than the limit of 1048576 bytes",
            big.display()
        )
    );
}

#[test]
fn runtime_and_net_policy_from_str() {
    for kind in RuntimeKind::ALL {
        assert_eq!(kind.as_str().parse::<RuntimeKind>().unwrap(), kind);
    }
    for policy in NetPolicy::ALL {
        assert_eq!(policy.as_str().parse::<NetPolicy>().unwrap(), policy);
    }
    assert_eq!(
        "docker".parse::<RuntimeKind>().unwrap_err().to_string(),
        "unknown runtime \"docker\" (expected gvisor, firecracker, container or native)"
    );
    assert_eq!(
        "Gvisor".parse::<RuntimeKind>().unwrap_err().to_string(),
        "unknown runtime \"Gvisor\" (expected gvisor, firecracker, container or native)"
    );
    assert_eq!(
        "open".parse::<NetPolicy>().unwrap_err().to_string(),
        "unknown network policy \"open\" (expected none, restricted, egress-only or full)"
    );
}
