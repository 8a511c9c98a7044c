mod hostile;
mod parse;
mod resolve;

/// The example manifest of SPEC §3, verbatim.
pub(crate) const SPEC_EXAMPLE: &str = r#"apiVersion: spawn.dev/v1
kind: Agent
metadata:
  name: researcher            # DNS-label
  namespace: default
spec:
  command: ["python3", "/workspace/main.py"]   # command agent; omit for the built-in loop
  model:                                       # provider the agent (or its command) may use
    provider: anthropic                        # anthropic | openai | scripted
    name: claude-sonnet-4-5                    # pinned: other models are refused
    endpoint: https://api.anthropic.com        # optional base URL (any compatible server)
    credential: store://ANTHROPIC_API_KEY      # optional; default: the provider's usual variable
                                               # (ANTHROPIC_API_KEY / OPENAI_API_KEY) in spawn's
                                               # own environment — never the sandbox's
  instructions: "..."                          # built-in loop only
  sandbox:
    runtime: gvisor                            # gvisor (default) | firecracker | container | native
    image: host                                # root filesystem source; `host` = read-only host system
    resources: { cpu: "1", memory: 512Mi, pids: 128, disk: 1Gi }
    timeout: 10m                               # wall clock for the whole run
  capabilities:                                # every capability is off unless listed
    exec:
      enabled: true
      languages: [python, bash]
      timeout: 5m
      memory: 512Mi
    net:
      policy: restricted                       # none (default) | restricted | egress-only | full
      allowlist: ["*.wikipedia.org", "api.github.com"]
      denylist: ["*.internal.company.com", "10.0.0.0/8"]
      rateLimit: { requests: 60, per: 1m }
      requireTls: true
    fs:
      mounts:
        - { source: ./data, path: /data, mode: ro }
        - { name: workspace, path: /workspace, mode: rw, quota: 1Gi }
    secrets:
      - { name: GITHUB_TOKEN, from: "store://GITHUB_TOKEN" }     # or vault://secret/data/gh#token
  limits: { maxSteps: 50, maxTokens: 200000, maxCostUsd: 2.00 }
"#;

/// A minimal valid command agent; tests append to its `spec:`.
pub(crate) const MINIMAL: &str = "apiVersion: spawn.dev/v1
kind: Agent
metadata:
  name: demo
spec:
  command: [\"true\"]
";

/// `MINIMAL` with `extra` appended (indented under `spec:` by the caller).
pub(crate) fn with_spec(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}
