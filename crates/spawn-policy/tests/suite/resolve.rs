//! resolve(): defaults, precedence, mount sources and the "not supported yet" refusals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pretty_assertions::assert_eq;
use spawn_policy::net::NetRules;
use spawn_policy::{
    parse_agent, resolve, Agent, MountSource, MountSpec, NetPolicy, Overrides, PolicyError,
    Resources, RunSpec, RuntimeKind, SecretGrant, SecretSource,
};

use super::{with_spec, SPEC_EXAMPLE};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn command(v: &[&str]) -> Overrides {
    Overrides {
        command: strings(v),
        ..Overrides::default()
    }
}

fn agent(extra: &str) -> Agent {
    parse_agent(&with_spec(extra)).unwrap()
}

/// A temporary directory, canonicalized (the temp dir may sit behind a symlink).
fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

fn resolve_err(agent: Option<&Agent>, base: &Path, overrides: &Overrides) -> String {
    match resolve(agent, base, base, overrides, &[]) {
        Ok(spec) => panic!("expected an error, got {spec:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bare_command_gets_the_defaults() {
    let (_d, cwd) = tempdir();
    let spec = resolve(None, &cwd, &cwd, &command(&["echo", "hi"]), &[]).unwrap();
    assert_eq!(
        spec,
        RunSpec {
            name: "run".to_owned(),
            namespace: "default".to_owned(),
            runtime: RuntimeKind::Gvisor,
            command: strings(&["echo", "hi"]),
            env: vec![],
            workdir: None,
            resources: Resources::default(),
            timeout: None,
            net: NetRules::plain(NetPolicy::None),
            mounts: vec![],
            languages: vec![],
            secrets: vec![],
            model: None,
            agent_loop: None,
        }
    );
    // RunSpec::bare is exactly this resolution.
    assert_eq!(
        spec,
        RunSpec::bare(RuntimeKind::Gvisor, strings(&["echo", "hi"]))
    );
}

#[test]
fn no_command_anywhere() {
    let (_d, cwd) = tempdir();
    let e = resolve(None, &cwd, &cwd, &Overrides::default(), &[]).unwrap_err();
    assert!(matches!(e, PolicyError::NoCommand { .. }));
    assert_eq!(
        e.to_string(),
        "no command to run: give one after -- (spawn run -- COMMAND ARGS...), or a manifest with -f"
    );
    let builtin = parse_agent(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {sandbox: {timeout: 1m}}\n",
    )
    .unwrap();
    let e = resolve(Some(&builtin), &cwd, &cwd, &Overrides::default(), &[]).unwrap_err();
    assert!(matches!(e, PolicyError::Unsupported { .. }));
    assert_eq!(
        e.to_string(),
        "spec.command: an agent without a command (the built-in agent loop) is not supported yet (give spec.command, or a command after --)"
    );
    // A command on the command line runs such an agent.
    let spec = resolve(Some(&builtin), &cwd, &cwd, &command(&["true"]), &[]).unwrap();
    assert_eq!(spec.command, strings(&["true"]));
    assert_eq!(spec.timeout, Some(Duration::from_secs(60)));
}

#[test]
fn full_manifest_resolves() {
    let (_d, base) = tempdir();
    std::fs::create_dir(base.join("data")).unwrap();
    let agent = agent(
        "  sandbox:
    runtime: native
    image: host
    resources: { cpu: \"1.5\", memory: 1Gi, pids: 64, disk: 2Gi }
    timeout: 10m
  capabilities:
    exec: { enabled: true, languages: [python, bash], timeout: 5m, memory: 512Mi }
    net: { policy: none }
    fs:
      mounts:
        - { source: ./data, path: /data }
        - { name: workspace, path: /workspace/, mode: rw, quota: 1Gi }
        - { name: cache, path: /cache }
",
    );
    let spec = resolve(
        Some(&agent),
        &base,
        Path::new("/"),
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(
        spec,
        RunSpec {
            name: "demo".to_owned(),
            namespace: "default".to_owned(),
            runtime: RuntimeKind::Native,
            command: strings(&["true"]),
            env: vec![],
            workdir: None,
            resources: Resources {
                memory_bytes: Some(512 << 20),
                pids: Some(64),
                cpu_millis: Some(1500),
                disk_bytes: Some(2 << 30),
            },
            timeout: Some(Duration::from_secs(300)),
            net: NetRules::plain(NetPolicy::None),
            mounts: vec![
                MountSpec {
                    source: MountSource::Host(base.join("data")),
                    target: PathBuf::from("/data"),
                    writable: false,
                },
                MountSpec {
                    source: MountSource::Tmpfs {
                        name: "workspace".to_owned(),
                        quota_bytes: Some(1 << 30),
                    },
                    target: PathBuf::from("/workspace"),
                    writable: true,
                },
                MountSpec {
                    source: MountSource::Tmpfs {
                        name: "cache".to_owned(),
                        quota_bytes: None,
                    },
                    target: PathBuf::from("/cache"),
                    writable: false,
                },
            ],
            languages: strings(&["python", "bash"]),
            secrets: vec![],
            model: None,
            agent_loop: None,
        }
    );
}

#[test]
fn exec_limits_take_the_smaller_value() {
    let (_d, base) = tempdir();
    let cases = [
        ("sandbox: {timeout: 1m, resources: {memory: 256Mi}}\n  capabilities: {exec: {timeout: 5m, memory: 1Gi}}", Some(60), Some(256)),
        ("sandbox: {timeout: 10m, resources: {memory: 2Gi}}\n  capabilities: {exec: {timeout: 5m, memory: 1Gi}}", Some(300), Some(1024)),
        ("capabilities: {exec: {timeout: 5m, memory: 1Gi}}", Some(300), Some(1024)),
        ("sandbox: {timeout: 2m, resources: {memory: 64Mi}}", Some(120), Some(64)),
        ("capabilities: {exec: {languages: [sh]}}", None, None),
    ];
    for (body, timeout_s, memory_mi) in cases {
        let a = agent(&format!("  {body}\n"));
        let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
        assert_eq!(spec.timeout, timeout_s.map(Duration::from_secs), "{body}");
        assert_eq!(
            spec.resources.memory_bytes,
            memory_mi.map(|m: u64| m << 20),
            "{body}"
        );
    }
}

#[test]
fn flags_replace_manifest_values() {
    let (_d, base) = tempdir();
    std::fs::create_dir(base.join("src")).unwrap();
    let a = agent(
        "  sandbox: {runtime: gvisor, timeout: 10m, resources: {cpu: \"2\", memory: 1Gi, pids: 100}}
  capabilities: {exec: {timeout: 5m, memory: 512Mi}, net: {policy: none}}
",
    );
    let overrides = Overrides {
        runtime: Some(RuntimeKind::Container),
        net: Some(NetPolicy::None),
        memory: Some("2Gi".to_owned()),
        pids: Some(10),
        cpu: Some("250m".to_owned()),
        timeout: Some("30s".to_owned()),
        mounts: vec!["src:/src:rw".to_owned(), format!("{}:/abs", base.display())],
        env: strings(&["A=1", "PATH=/bin", "EMPTY=", "EQ=a=b"]),
        workdir: Some("/src/".to_owned()),
        command: strings(&["make", "test"]),
        ..Overrides::default()
    };
    let spec = resolve(
        Some(&a),
        Path::new("/nonexistent-manifest-dir"),
        &base,
        &overrides,
        &[],
    )
    .unwrap();
    assert_eq!(spec.runtime, RuntimeKind::Container);
    assert_eq!(spec.command, strings(&["make", "test"]));
    assert_eq!(
        spec.resources,
        Resources {
            memory_bytes: Some(2 << 30),
            pids: Some(10),
            cpu_millis: Some(250),
            disk_bytes: None,
        }
    );
    assert_eq!(spec.timeout, Some(Duration::from_secs(30)));
    assert_eq!(spec.workdir, Some(PathBuf::from("/src")));
    assert_eq!(
        spec.env,
        vec![
            ("A".to_owned(), "1".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("EQ".to_owned(), "a=b".to_owned()),
        ]
    );
    assert_eq!(
        spec.mounts,
        vec![
            MountSpec {
                source: MountSource::Host(base.join("src")),
                target: PathBuf::from("/src"),
                writable: true,
            },
            MountSpec {
                source: MountSource::Host(base.clone()),
                target: PathBuf::from("/abs"),
                writable: false,
            },
        ]
    );
}

#[test]
fn mount_flags_are_appended_after_manifest_mounts_and_checked() {
    let (_d, base) = tempdir();
    std::fs::create_dir(base.join("data")).unwrap();
    let a =
        agent("  capabilities: {fs: {mounts: [{name: workspace, path: /workspace, mode: rw}]}}\n");
    let mut o = command(&["true"]);
    o.mounts = vec!["data:/data:ro".to_owned()];
    let spec = resolve(Some(&a), &base, &base, &o, &[]).unwrap();
    let targets: Vec<_> = spec.mounts.iter().map(|m| m.target.clone()).collect();
    assert_eq!(
        targets,
        vec![PathBuf::from("/workspace"), PathBuf::from("/data")]
    );

    let cases = [
        (
            "data:/workspace",
            "--mount: /workspace is mounted more than once",
        ),
        ("data", "--mount: \"data\" is not SRC:DST[:ro|rw]"),
        (
            "data:/d:rx",
            "--mount: \"data:/d:rx\": the mode is ro or rw, not \"rx\"",
        ),
        ("a:b:c:d", "--mount: \"a:b:c:d\" is not SRC:DST[:ro|rw]"),
        (
            "data:relative",
            "--mount: \"relative\" is not an absolute path",
        ),
        ("data:/proc/x", "--mount: \"/proc/x\" is at or under /proc"),
        ("data:/x/../y", "--mount: \"/x/../y\" has a '..' component"),
        (":/x", "--mount: a mount source cannot be empty"),
        (
            "/:/host",
            "--mount: mount source \"/\" resolves to /, the host's root",
        ),
        (
            "/proc/self:/p",
            "--mount: mount source \"/proc/self\" goes through a symlink",
        ),
    ];
    for (entry, want) in cases {
        o.mounts = vec![entry.to_owned()];
        let got = resolve_err(Some(&a), &base, &o);
        assert!(got.starts_with(want), "{entry}\nwant {want}\n got {got}");
    }
    o.mounts = vec!["missing:/m".to_owned()];
    assert_eq!(
        resolve_err(Some(&a), &base, &o),
        format!(
            "--mount: mount source missing does not exist ({} is missing)",
            base.join("missing").display()
        )
    );
}

#[test]
fn manifest_mount_sources_resolve_against_the_manifest_directory() {
    let (_d, root) = tempdir();
    let base = root.join("project");
    let cwd = root.join("elsewhere");
    std::fs::create_dir_all(base.join("data")).unwrap();
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    let mount = |source: &str| {
        agent(&format!(
            "  capabilities: {{fs: {{mounts: [{{source: {source:?}, path: /m}}]}}}}\n"
        ))
    };
    let host = |spec: RunSpec| match &spec.mounts[0].source {
        MountSource::Host(p) => p.clone(),
        other => panic!("{other:?}"),
    };

    let spec = resolve(
        Some(&mount("./data")),
        &base,
        &cwd,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(host(spec), base.join("data"));
    let spec = resolve(
        Some(&mount("data/./")),
        &base,
        &cwd,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(host(spec), base.join("data"));
    // `..` that stays inside is fine.
    let spec = resolve(
        Some(&mount("data/../data")),
        &base,
        &cwd,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(host(spec), base.join("data"));
    // An absolute source is the author's explicit choice.
    let abs = root.join("secret");
    let spec = resolve(
        Some(&mount(abs.to_str().unwrap())),
        &base,
        &cwd,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(host(spec), abs);
    // A relative base (the CLI's `Path::new("agent.yaml").parent()` is "") is taken against cwd.
    let spec = resolve(
        Some(&mount("./data")),
        Path::new(""),
        &cwd,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(host(spec), cwd.join("data"));

    // Refused when the manifest is parsed already, so `spawn validate` agrees with `run`.
    for traversal in ["../secret", "../../etc", "data/../../secret", "./../secret"] {
        let manifest = with_spec(&format!(
            "  capabilities: {{fs: {{mounts: [{{source: {traversal:?}, path: /m}}]}}}}\n"
        ));
        let got = parse_agent(&manifest).unwrap_err().to_string();
        assert_eq!(
            got,
            format!("spec.capabilities.fs.mounts[0].source: mount source {traversal:?} escapes the manifest's directory"),
        );
    }
    std::os::unix::fs::symlink(root.join("secret"), base.join("innocent")).unwrap();
    let got = resolve_err(Some(&mount("innocent")), &base, &Overrides::default());
    assert!(got.contains("goes through a symlink"), "{got}");

    let got = resolve_err(Some(&mount("./nope")), &base, &Overrides::default());
    assert_eq!(
        got,
        format!(
            "spec.capabilities.fs.mounts[0].source: mount source ./nope does not exist ({} is missing)",
            base.join("nope").display()
        )
    );
    for forbidden in [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/boot",
        "/root",
        "/etc/shadow",
    ] {
        if !Path::new(forbidden).exists() {
            continue;
        }
        let got = resolve_err(Some(&mount(forbidden)), &base, &Overrides::default());
        assert!(
            got.starts_with("spec.capabilities.fs.mounts[0].source: mount source"),
            "{forbidden}: {got}"
        );
        assert!(
            got.contains("host's root")
                || got.contains("never mounted")
                || got.contains("holds host secrets"),
            "{forbidden}: {got}"
        );
    }
}

#[test]
fn spec_example_is_refused_for_what_is_not_implemented() {
    let (_d, base) = tempdir();
    std::fs::create_dir(base.join("data")).unwrap();
    let full = parse_agent(SPEC_EXAMPLE).unwrap();
    let got = resolve_err(Some(&full), &base, &Overrides::default());
    assert_eq!(
        got,
        "spec.instructions: are for the built-in loop (an agent without a command): remove spec.command or spec.instructions"
    );

    // Without its command, the example is the built-in loop: the instructions, the
    // exec capability's timeout per call (not the run's).
    let mut l = full.clone();
    l.spec.command = None;
    let spec = resolve(Some(&l), &base, &base, &Overrides::default(), &[]).unwrap();
    assert!(spec.command.is_empty());
    let lp = spec.agent_loop.unwrap();
    assert_eq!(lp.exec_timeout, std::time::Duration::from_secs(300));
    assert_eq!(lp.exec_memory, Some(512 << 20));
    assert_eq!(spec.timeout, Some(std::time::Duration::from_secs(600)));
    // With a command after --, the loop's instructions are refused, never ignored.
    let flagged = Overrides {
        command: strings(&["true"]),
        ..Overrides::default()
    };
    assert!(resolve_err(Some(&l), &base, &flagged)
        .starts_with("spec.instructions: are for the built-in loop"));
    let mut no_model = l.clone();
    no_model.spec.model = None;
    no_model.spec.limits = None;
    assert!(resolve_err(Some(&no_model), &base, &Overrides::default()).contains("needs spec.model"));

    // Without the built-in loop's instructions, the example is a command agent with a
    // model and its budget.
    let mut a = full.clone();
    a.spec.instructions = None;
    let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
    assert_eq!(
        spec.model,
        Some(spawn_policy::ModelSpec {
            provider: spawn_policy::ModelProvider::Anthropic,
            name: "claude-sonnet-4-5".into(),
            endpoint: Some("https://api.anthropic.com".into()),
            script: None,
            credential: Some(SecretSource::Store("ANTHROPIC_API_KEY".into())),
            max_steps: Some(50),
            max_tokens: Some(200_000),
            max_cost_micros: Some(2_000_000),
        })
    );
    a.spec.limits = None;
    a.spec.model = None;
    // --net none replaces the policy, and then the example's proxy settings are refused
    // as meaningless, not dropped.
    let net_none = Overrides {
        net: Some(NetPolicy::None),
        ..Overrides::default()
    };
    let got = resolve_err(Some(&a), &base, &net_none);
    assert!(got.contains("net.allowlist"), "{got}");
    let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
    assert_eq!(
        spec.secrets,
        vec![SecretGrant {
            env: "GITHUB_TOKEN".into(),
            source: SecretSource::Store("GITHUB_TOKEN".into()),
            delivery: spawn_policy::SecretDelivery::Env,
            hosts: vec![],
        }]
    );
    assert_eq!(spec.name, "researcher");
    assert_eq!(spec.command, strings(&["python3", "/workspace/main.py"]));
    assert_eq!(spec.mounts.len(), 2);
    // The example's network capability, as rules.
    assert_eq!(spec.net.policy, NetPolicy::Restricted);
    assert_eq!(spec.net.allow.len(), 2);
    assert_eq!(spec.net.deny.len(), 2);
    assert!(spec.net.require_tls);
    assert_eq!(spec.net.rate.map(|r| r.requests), Some(60));
}

#[test]
fn unsupported_manifest_fields() {
    let (_d, base) = tempdir();
    let cases = [
        (
            "  sandbox: {image: \"python:3.12\"}\n",
            "spec.sandbox.image: image \"python:3.12\" is not supported yet (only host for now)",
        ),
        (
            "  capabilities: {exec: {enabled: false}}\n",
            "spec.capabilities.exec.enabled: false is not supported yet",
        ),
    ];
    for (extra, want) in cases {
        let a = agent(extra);
        let e = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap_err();
        assert!(matches!(e, PolicyError::Unsupported { .. }), "{e:?}");
        let got = e.to_string();
        assert!(got.starts_with(want), "want {want}\n got {got}");
    }
    // With --net none the policy is replaced, and proxy settings would mean nothing.
    let net_none = Overrides {
        net: Some(NetPolicy::None),
        ..Overrides::default()
    };
    for (extra, want) in [
        (
            "  capabilities: {net: {policy: restricted, rateLimit: {requests: 5, per: 1s}}}\n",
            "spec.capabilities.net.rateLimit: only applies to policy restricted or egress-only",
        ),
        (
            "  capabilities: {net: {policy: egress-only, requireTls: true}}\n",
            "spec.capabilities.net.requireTls: only applies to policy restricted or egress-only",
        ),
    ] {
        let got = resolve_err(Some(&agent(extra)), &base, &net_none);
        assert!(got.starts_with(want), "want {want}\n got {got}");
    }
    // The supported values pass.
    for extra in [
        "  sandbox: {image: host}\n",
        "  capabilities: {exec: {enabled: true}, net: {policy: none}}\n",
        "  capabilities: {exec: {}, net: {}, fs: {}, secrets: []}\n",
        "  capabilities: {net: {policy: egress-only, denylist: [\"10.*\"], requireTls: true}}\n",
        "  capabilities: {net: {policy: restricted, allowlist: [\"*.example.com\"]}}\n",
    ] {
        assert!(
            resolve(
                Some(&agent(extra)),
                &base,
                &base,
                &Overrides::default(),
                &[]
            )
            .is_ok(),
            "{extra}"
        );
    }
}

#[test]
fn unsupported_flags() {
    let (_d, base) = tempdir();
    let o = Overrides {
        net: Some(NetPolicy::None),
        ..command(&["x"])
    };
    assert_eq!(
        resolve(None, &base, &base, &o, &[]).unwrap().net.policy,
        NetPolicy::None
    );
}

/// --net, --allow and --deny build the run's network rules; lists without a proxied
/// policy, or with bad entries, are errors.
#[test]
fn net_flags_build_the_rules() {
    let (_d, base) = tempdir();
    let o = Overrides {
        net: Some(NetPolicy::Restricted),
        allow: strings(&["*.Example.com.", "api.github.com"]),
        deny: strings(&["10.*", "secret.example.com"]),
        ..command(&["x"])
    };
    let net = resolve(None, &base, &base, &o, &[]).unwrap().net;
    assert_eq!(net.policy, NetPolicy::Restricted);
    let target = |h: &str| spawn_policy::net::parse_host(h).unwrap();
    assert_eq!(net.check(&target("a.example.com")), Ok(()));
    assert_eq!(
        net.check(&target("secret.example.com")).unwrap_err().code,
        "denylist"
    );
    assert_eq!(
        net.check(&target("example.com")).unwrap_err().code,
        "not-allowlisted"
    );
    for policy in [NetPolicy::EgressOnly, NetPolicy::Full] {
        let o = Overrides {
            net: Some(policy),
            ..command(&["x"])
        };
        assert_eq!(
            resolve(None, &base, &base, &o, &[]).unwrap().net.policy,
            policy
        );
    }
    // full takes no proxy settings: they would mean nothing.
    let o = Overrides {
        net: Some(NetPolicy::Full),
        deny: strings(&["10.*"]),
        ..command(&["x"])
    };
    assert!(
        resolve_err(None, &base, &o).contains("only applies to policy restricted or egress-only")
    );
    for (o, want) in [
        (
            Overrides {
                allow: strings(&["example.com"]),
                ..command(&["x"])
            },
            "the allowlist only applies to policy restricted, not none",
        ),
        (
            Overrides {
                net: Some(NetPolicy::EgressOnly),
                allow: strings(&["example.com"]),
                ..command(&["x"])
            },
            "the allowlist only applies to policy restricted, not egress-only",
        ),
        (
            Overrides {
                deny: strings(&["10.*"]),
                ..command(&["x"])
            },
            "only applies to policy restricted or egress-only",
        ),
        (
            Overrides {
                net: Some(NetPolicy::Restricted),
                allow: strings(&["10.0.0.1"]),
                ..command(&["x"])
            },
            "is an IP address or network",
        ),
        (
            Overrides {
                net: Some(NetPolicy::Restricted),
                deny: strings(&["10.0.0.1/8"]),
                ..command(&["x"])
            },
            "has host bits set",
        ),
    ] {
        let got = resolve_err(None, &base, &o);
        assert!(got.contains(want), "want {want}\n got {got}");
    }
}

#[test]
fn bad_flag_values() {
    let (_d, base) = tempdir();
    let with = |f: fn(&mut Overrides)| {
        let mut o = command(&["x"]);
        f(&mut o);
        resolve_err(None, &base, &o)
    };
    assert_eq!(
        with(|o| o.memory = Some("512Mx".into())),
        "--memory: \"512Mx\" is not a quantity (use e.g. 512Mi or 1Gi)"
    );
    assert_eq!(
        with(|o| o.memory = Some("1Mi".into())),
        "--memory: \"1Mi\" is below the minimum of 4Mi"
    );
    assert_eq!(
        with(|o| o.pids = Some(0)),
        "--pids: 0 is not between 1 and 100000"
    );
    assert_eq!(
        with(|o| o.cpu = Some("0".into())),
        "--cpu: \"0\" must be more than 0"
    );
    assert_eq!(
        with(|o| o.cpu = Some("5m".into())),
        "--cpu: \"5m\" is below the minimum of 10m"
    );
    assert_eq!(
        with(|o| o.timeout = Some("31d".into())),
        "--timeout: \"31d\" is above the maximum of 30d"
    );
    assert_eq!(
        with(|o| o.timeout = Some("0s".into())),
        "--timeout: \"0s\" must be more than 0"
    );
    assert_eq!(
        with(|o| o.workdir = Some("src".into())),
        "--workdir: \"src\" is not an absolute path"
    );
    assert_eq!(
        with(|o| o.workdir = Some("/a/../b".into())),
        "--workdir: \"/a/../b\" has a '..' component; write the path plainly"
    );
    assert_eq!(
        with(|o| o.env = vec!["NOEQUALS".into()]),
        "--env: \"NOEQUALS\" is not NAME=VALUE"
    );
    assert_eq!(
        with(|o| o.env = vec!["1A=b".into()]),
        "--env: \"1A\" is not a variable name (letters, digits and '_', not starting with a digit)"
    );
    assert_eq!(
        with(|o| o.env = vec!["=b".into()]),
        "--env: \"\" is not a variable name (letters, digits and '_', not starting with a digit)"
    );
    assert_eq!(with(|o| o.env = vec!["LD_PRELOAD=/x.so".into()]), "--env: LD_PRELOAD: names starting with LD_ cannot be set (they change what the dynamic loader loads)");
    assert_eq!(
        with(|o| o.env = vec!["SPAWN_HOME=/x".into()]),
        "--env: SPAWN_HOME: names starting with SPAWN_ cannot be set (they configure spawn itself)"
    );
    assert_eq!(
        with(|o| o.env = vec!["A=x\0y".into()]),
        "--env: the value of A contains a NUL byte"
    );
    assert_eq!(
        with(|o| o.env = vec!["A=1".into(), "A=2".into()]),
        "--env: A is given more than once"
    );
    assert_eq!(
        with(|o| o.env = vec!["A=1".into(); 257]),
        "--env: more than 256 variables"
    );
    assert_eq!(
        with(|o| o.command = vec![String::new()]),
        "command[0]: the program name cannot be empty"
    );
    assert_eq!(
        with(|o| o.command = vec!["sh".into(), "a\0".into()]),
        "command[1]: contains a NUL byte"
    );
    assert_eq!(
        with(|o| o.command = vec!["x".into(); 4097]),
        "command: has more than 4096 arguments"
    );
    assert_eq!(
        with(|o| o.command = vec!["x".repeat(128 * 1024 + 1)]),
        "command[0]: is longer than 131072 bytes"
    );
    assert_eq!(
        with(|o| o.command = vec!["x".repeat(100 * 1024); 11]),
        "command: adds up to more than 1048576 bytes"
    );
    assert_eq!(
        with(|o| o.mounts = vec!["a:/b".into(); 257]),
        "--mount: more than 256 mounts in all"
    );
}

#[test]
fn resolve_revalidates_hand_built_agents() {
    let (_d, base) = tempdir();
    let mut a = agent("");
    a.metadata.name = "Not A Label".to_owned();
    assert!(resolve_err(Some(&a), &base, &Overrides::default()).starts_with("metadata.name:"));
    let mut a = agent("");
    a.spec.command = Some(vec![]);
    assert_eq!(
        resolve_err(Some(&a), &base, &Overrides::default()),
        "spec.command: cannot be empty (give at least the program to run)"
    );
}

/// Secrets granted by the manifest and by `--secret`: in order, a flag naming a variable
/// the manifest grants adds nothing, and every bad name or reference is refused with its
/// field.
#[test]
fn secrets_are_granted_by_the_manifest_and_the_flag() {
    let (_d, base) = tempdir();
    let store = |env: &str, name: &str| SecretGrant {
        env: env.into(),
        source: SecretSource::Store(name.into()),
        delivery: spawn_policy::SecretDelivery::Env,
        hosts: vec![],
    };
    let a = agent("  capabilities: {secrets: [{name: GH, from: \"store://GITHUB_TOKEN\"}, {name: B, from: \"store://B\"}]}\n");
    let o = Overrides {
        secrets: strings(&["C", "GH", "C"]),
        ..Overrides::default()
    };
    let spec = resolve(Some(&a), &base, &base, &o, &[]).unwrap();
    assert_eq!(
        spec.secrets,
        vec![
            store("GH", "GITHUB_TOKEN"),
            store("B", "B"),
            store("C", "C")
        ]
    );
    assert_eq!(spec.secrets[0].source.to_string(), "store://GITHUB_TOKEN");
    // Bare command with flags only.
    let o = Overrides {
        secrets: strings(&["TOKEN"]),
        ..command(&["x"])
    };
    assert_eq!(
        resolve(None, &base, &base, &o, &[]).unwrap().secrets,
        vec![store("TOKEN", "TOKEN")]
    );
    // Refused: bad variable names, reserved variables, a name both --env and a secret, a
    // store name that is not a secret name.
    for (flag, want) in [
        ("1X", "--secret: \"1X\" is not a variable name"),
        ("A-B", "--secret: \"A-B\" is not a variable name"),
        ("", "--secret: "),
        (
            "LD_PRELOAD",
            "--secret: LD_PRELOAD: names starting with LD_",
        ),
        ("A=B", "--secret: \"A=B\" is not a variable name"),
        ("A\nB", "--secret: "),
    ] {
        let o = Overrides {
            secrets: strings(&[flag]),
            ..command(&["x"])
        };
        let got = resolve(None, &base, &base, &o, &[])
            .unwrap_err()
            .to_string();
        assert!(got.starts_with(want), "{flag:?}: {got}");
    }
    let o = Overrides {
        secrets: strings(&["T"]),
        env: strings(&["T=plain"]),
        ..command(&["x"])
    };
    let got = resolve(None, &base, &base, &o, &[])
        .unwrap_err()
        .to_string();
    assert!(got.contains("T is a granted secret's variable"), "{got}");
    for from in ["store://a.b", "store://1A", "store://a-b"] {
        let a = agent(&format!(
            "  capabilities: {{secrets: [{{name: T, from: \"{from}\"}}]}}\n"
        ));
        let got = resolve(Some(&a), &base, &base, &Overrides::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            got.starts_with("spec.capabilities.secrets[0].from: the store's secret name"),
            "{from}: {got}"
        );
    }
}

/// `as: file` and `hosts:` are carried into the grant; hostile values of each are refused
/// with the field named.
#[test]
fn secrets_choose_env_or_file_and_record_their_hosts() {
    let (_d, base) = tempdir();
    let a = agent(
        "  capabilities: {secrets: [{name: KEY_PEM, from: \"store://K\", as: file, hosts: [api.github.com, \"*.example.com\"]}, {name: T, from: \"store://T\", as: env}]}\n",
    );
    let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
    assert_eq!(spec.secrets[0].delivery, spawn_policy::SecretDelivery::File);
    assert_eq!(
        spec.secrets[0].hosts,
        strings(&["api.github.com", "*.example.com"])
    );
    assert_eq!(spec.secrets[1].delivery, spawn_policy::SecretDelivery::Env);
    assert!(spec.secrets[1].hosts.is_empty());
    // A Vault KV v2 reference: its API path and key.
    let a = agent("  capabilities: {secrets: [{name: T, from: \"vault://secret/data/t#k\"}]}\n");
    let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
    assert_eq!(
        spec.secrets[0].source,
        SecretSource::Vault {
            path: "secret/data/t".into(),
            key: "k".into()
        }
    );
    assert_eq!(
        spec.secrets[0].source.to_string(),
        "vault://secret/data/t#k"
    );
    for (entry, want) in [
        ("as: File", "spec.capabilities.secrets[0].as"),
        ("as: files", "spec.capabilities.secrets[0].as"),
        ("as: \"\"", "spec.capabilities.secrets[0].as"),
        ("as: 1", "spec.capabilities.secrets[0].as"),
        ("as: [file]", "spec.capabilities.secrets[0].as"),
        ("hosts: [\"\"]", "spec.capabilities.secrets[0].hosts[0]"),
        ("hosts: [\"a b\"]", "spec.capabilities.secrets[0].hosts[0]"),
        (
            "hosts: [\"http://x.com\"]",
            "spec.capabilities.secrets[0].hosts[0]",
        ),
        (
            "hosts: [\"x.com:443\"]",
            "spec.capabilities.secrets[0].hosts[0]",
        ),
        (
            "hosts: [\"**.x.com\"]",
            "spec.capabilities.secrets[0].hosts[0]",
        ),
        (
            "hosts: [\"x..com\"]",
            "spec.capabilities.secrets[0].hosts[0]",
        ),
        ("hosts: x.com", "spec.capabilities.secrets[0].hosts"),
        ("path: /etc/passwd", "spec.capabilities.secrets[0]"),
    ] {
        let text = format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: [x]\n  capabilities: {{secrets: [{{name: T, from: \"store://T\", {entry}}}]}}\n"
        );
        let got = match spawn_policy::parse_agent(&text) {
            Err(e) => e.to_string(),
            Ok(a) => resolve(Some(&a), &base, &base, &Overrides::default(), &[])
                .map(|_| "accepted".to_owned())
                .unwrap_or_else(|e| e.to_string()),
        };
        assert!(
            got.contains(want) || got.contains("unknown field") || got.contains("unknown variant"),
            "{entry}: {got}"
        );
        assert_ne!(got, "accepted", "{entry}");
    }
    // Too many hosts.
    let many: Vec<String> = (0..=spawn_policy::MAX_SECRET_HOSTS)
        .map(|i| format!("h{i}.com"))
        .collect();
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: [x]\n  capabilities: {{secrets: [{{name: T, from: \"store://T\", hosts: [{}]}}]}}\n",
        many.join(", ")
    );
    assert!(spawn_policy::parse_agent(&text).is_err());
}

/// `spec.model` and `spec.limits`, resolved: a scripted provider's file relative to the
/// manifest, the credential's source, the cost in micro-dollars; what cannot be is refused.
#[test]
fn model_and_limits_resolve() {
    let (_d, base) = tempdir();
    let a = agent("  model: {provider: scripted, name: m, endpoint: answers.yaml}\n  limits: {maxSteps: 3, maxCostUsd: 0.0000019}\n");
    let spec = resolve(Some(&a), &base, &base, &Overrides::default(), &[]).unwrap();
    let m = spec.model.unwrap();
    assert_eq!(m.script, Some(base.join("answers.yaml")));
    assert_eq!(m.endpoint, None);
    assert_eq!(
        (m.max_steps, m.max_tokens, m.max_cost_micros),
        (Some(3), None, Some(1))
    );
    let a = agent(
        "  model: {provider: openai, name: gpt-x, credential: \"vault://secret/data/oai#key\"}\n",
    );
    let m = resolve(Some(&a), &base, &base, &Overrides::default(), &[])
        .unwrap()
        .model
        .unwrap();
    assert_eq!(
        m.credential,
        Some(SecretSource::Vault {
            path: "secret/data/oai".into(),
            key: "key".into()
        })
    );
    for (extra, want) in [
        (
            "  limits: {maxSteps: 3}\n",
            "spec.limits: limits a model's use",
        ),
        (
            "  model: {provider: scripted, name: x}\n",
            "spec.model.endpoint: the scripted provider needs its file",
        ),
        (
            "  model: {provider: scripted, name: x, endpoint: a.yaml, credential: \"store://K\"}\n",
            "spec.model.credential: the scripted provider takes no credential",
        ),
    ] {
        let got = resolve_err(Some(&agent(extra)), &base, &Overrides::default());
        assert!(got.starts_with(want), "{extra}: want {want}\n got {got}");
    }
}
