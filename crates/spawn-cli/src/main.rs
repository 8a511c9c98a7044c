//! `spawn`: the command-line interface. Parses arguments and calls the libraries.
#![forbid(unsafe_code)]

mod audit;
mod doctor;
mod local;
mod remote;
mod run;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code of `spawn run` when spawn itself failed before the command ran (SPEC §4).
pub(crate) const EXIT_SPAWN_FAILED: u8 = 125;

#[derive(Debug, Parser)]
#[command(name = "spawn", version, about = "A secure runtime for AI agents")]
struct Cli {
    /// State directory (audit log, runs). Default: ~/.spawn
    #[arg(long, env = "SPAWN_HOME", global = true)]
    home: Option<PathBuf>,
    /// A spawnd to talk to (server mode); the API key is read from SPAWN_API_KEY.
    #[arg(long, env = "SPAWN_SERVER", global = true, value_name = "URL")]
    server: Option<String>,
    /// The namespace of server-mode commands.
    #[arg(
        long,
        env = "SPAWN_NAMESPACE",
        global = true,
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent (or a bare command) in a sandbox.
    Run(Box<RunArgs>),
    /// Check a manifest; exit 0 or print a precise error.
    Validate {
        /// The manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show which runtimes and kernel features are available, and why not.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Create or update Agents, Roles and RoleBindings (server mode).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Agents (server mode).
    Agents {
        #[command(subcommand)]
        cmd: AgentsCmd,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Runs: of the server with --server, else the local runs of $SPAWN_HOME.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
        #[arg(long, global = true)]
        json: bool,
    },
    /// The audit log of $SPAWN_HOME: verify its hash chain, export it.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Run a recorded agent again in a fresh sandbox, its model answering from the
    /// recording; print each decision and tool result and the first step where the new run
    /// differs (exit 0: identical, 1: diverged, 125: could not replay).
    Replay {
        /// The recorded run (`tr_…`; a run with spec.model).
        trace_id: String,
        /// Wait for Enter before each model call after the first.
        #[arg(long)]
        step_by_step: bool,
        /// Replay on this runtime instead of the recorded one.
        #[arg(long)]
        runtime: Option<String>,
    },
    /// A run's trace from the local audit log.
    Trace {
        #[command(subcommand)]
        cmd: TraceCmd,
    },
    /// API keys (server mode).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Secrets of $SPAWN_HOME, sealed at rest (values only from stdin or a file).
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
        #[arg(long, global = true)]
        json: bool,
    },
}

/// Secrets (SPEC §4): names, versions and dates are shown, never values.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCmd {
    /// Set a secret (a new version) from stdin or a file, never from an argument.
    Set {
        /// The name: letters, digits and _, not first a digit (it becomes an environment
        /// variable or a file name in the sandbox).
        name: String,
        /// Read the value from this file (its bytes exactly).
        #[arg(long, conflicts_with = "from_stdin")]
        from_file: Option<PathBuf>,
        /// Read the value from stdin (one trailing newline dropped).
        #[arg(long)]
        from_stdin: bool,
    },
    /// The secrets: name, latest version, when and by whom it was set.
    List,
    /// Delete a secret, every version.
    Delete { name: String },
    /// Rotate the master key: data keys are rewrapped under a new one, values untouched.
    RotateMaster,
    /// Rotate the data key: values are resealed under a new one (`spawn doctor` says when
    /// it is due: every 90 days, or SPAWN_SECRETS_ROTATION_DAYS).
    RotateDataKey,
    /// (Internal) resolve a local run's secrets: names on stdin, values on stdout.
    #[command(name = "__resolve", hide = true)]
    Resolve,
}

/// The audit log (SPEC §4, §7).
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the hash chain of the local log, or of an export (--file): exit 0 if intact,
    /// else 1 naming the first bad record's seq.
    Verify {
        /// An export (`spawn audit export`) instead of the local log.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The verifier key of the checkpoints (as `spawn audit key` prints it); default:
        /// the signing key's.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// With --file: hold the export, as a whole log, to the checkpoints in this
        /// directory (a copy of $SPAWN_HOME/audit/checkpoints).
        #[arg(long, value_name = "DIR", requires = "file")]
        checkpoints: Option<PathBuf>,
    },
    /// The local log as stored (JSON lines, chain included) on stdout.
    Export,
    /// Sign a checkpoint of the local log's Merkle tree (RFC 6962) as it stands.
    Checkpoint,
    /// An inclusion proof of record SEQ against the latest checkpoint holding it (JSON).
    Prove { seq: u64 },
    /// The verifier key of the checkpoints, to publish.
    Key,
    /// Records of the local log matching every condition given (a table, or --json lines as
    /// stored).
    Query(QueryFlags),
    /// Per capability an agent used: how often, how often denied, when last.
    Capabilities(QueryFlags),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TraceCmd {
    /// The run's steps in order with their timings: JSON, or OTLP/JSON for OpenTelemetry
    /// collectors.
    Export {
        /// The run's id (tr_…).
        trace_id: String,
        /// json (default) or otlp.
        #[arg(long, default_value = "json")]
        format: String,
    },
}

/// Conditions on audit records.
#[derive(Debug, Args)]
pub(crate) struct QueryFlags {
    /// Event type (repeatable), e.g. agent.capability.denied.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// The agent (its ag_… id or name).
    #[arg(long)]
    agent: Option<String>,
    /// The principal: TYPE/NAME (User/alice), or an id or a name.
    #[arg(long)]
    principal: Option<String>,
    /// success, denied or error.
    #[arg(long)]
    outcome: Option<String>,
    /// Since a while ago (24h, 30m, 7d) or a UTC timestamp (2026-01-15T10:30:00.000Z).
    #[arg(long)]
    since: Option<String>,
    /// The run (trace) tr_….
    #[arg(long)]
    trace: Option<String>,
    /// Text found anywhere in the record (case-insensitive).
    #[arg(long)]
    text: Option<String>,
}

impl QueryFlags {
    fn args(&self) -> audit::QueryArgs<'_> {
        audit::QueryArgs {
            types: &self.types,
            agent: self.agent.as_deref(),
            principal: self.principal.as_deref(),
            outcome: self.outcome.as_deref(),
            since: self.since.as_deref(),
            trace: self.trace.as_deref(),
            text: self.text.as_deref(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCmd {
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Start a run of the agent; prints its id.
    Start {
        name: String,
    },
    /// Stop the agent: cancel its queued and running runs.
    Stop {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCmd {
    List,
    Get {
        id: String,
    },
    Logs {
        id: String,
        /// Follow the output until the run ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    Cancel {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCmd {
    /// Make a key for a new ServiceAccount holding ROLE in the namespace; printed once.
    Create {
        #[arg(long)]
        role: String,
        /// The ServiceAccount's name.
        #[arg(long)]
        name: String,
        /// A spawn_sk_test_ key (runs only in test namespaces).
        #[arg(long)]
        test: bool,
    },
    List,
    Revoke {
        id: String,
    },
}

/// Flags of `spawn run` (SPEC §4); they override the manifest.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Agent manifest.
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<PathBuf>,
    /// Runtime: gvisor | firecracker | container | native.
    #[arg(long)]
    pub(crate) runtime: Option<String>,
    /// Network policy: none | restricted | egress-only | full.
    #[arg(long)]
    pub(crate) net: Option<String>,
    /// Allow a domain (restricted policy).
    #[arg(long = "allow", value_name = "DOMAIN")]
    pub(crate) allow: Vec<String>,
    /// Deny a domain, IP or CIDR.
    #[arg(long = "deny", value_name = "PATTERN")]
    pub(crate) deny: Vec<String>,
    /// Memory limit, e.g. 512Mi.
    #[arg(long)]
    pub(crate) memory: Option<String>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub(crate) pids: Option<u64>,
    /// CPU limit, e.g. 1 or 500m.
    #[arg(long)]
    pub(crate) cpu: Option<String>,
    /// Wall-clock timeout, e.g. 30s or 5m.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// SRC:DST[:ro|rw] (default ro).
    #[arg(long = "mount", value_name = "SRC:DST[:MODE]")]
    pub(crate) mounts: Vec<String>,
    /// Inject a secret by name.
    #[arg(long = "secret", value_name = "NAME")]
    pub(crate) secrets: Vec<String>,
    /// Set an environment variable inside the sandbox.
    #[arg(long = "env", value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub(crate) workdir: Option<String>,
    /// Print a machine-readable result on stdout at the end.
    #[arg(long)]
    pub(crate) json: bool,
    /// The command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();

    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let is_run = std::env::args().nth(1).as_deref() == Some("run");
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if is_run => ExitCode::from(EXIT_SPAWN_FAILED),
                _ => ExitCode::from(2),
            };
        }
    };
    let home = cli.home.clone().unwrap_or_else(default_home);
    // Only a local run relays output (and handles a reader that went away itself).
    if !matches!(cli.command, Command::Run(_)) || cli.server.is_some() {
        spawn_sandbox::default_sigpipe();
    }
    let remote = || -> anyhow::Result<remote::Remote> {
        match &cli.server {
            Some(url) => remote::Remote::new(url, &cli.namespace),
            None => anyhow::bail!(
                "this command talks to spawnd: give --server URL (or SPAWN_SERVER) and the key in {}",
                remote::KEY_ENV
            ),
        }
    };
    let server_mode = |f: &dyn Fn(&remote::Remote) -> anyhow::Result<()>| -> ExitCode {
        match remote().and_then(|r| f(&r)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spawn: {e:#}");
                ExitCode::FAILURE
            }
        }
    };
    match &cli.command {
        Command::Run(args) => match &cli.server {
            Some(_) => match remote() {
                Ok(r) => remote::run(&r, args),
                Err(e) => {
                    eprintln!("spawn: {e:#}");
                    ExitCode::from(EXIT_SPAWN_FAILED)
                }
            },
            None => run::main(args, &home),
        },
        Command::Validate { file } => validate(file),
        Command::Doctor { json } => doctor::main(*json, &home),
        Command::Apply { file } => server_mode(&|r| remote::apply(r, file)),
        Command::Agents { cmd, json } => server_mode(&|r| remote::agents(r, cmd, *json)),
        Command::Runs { cmd, json } => match &cli.server {
            Some(_) => server_mode(&|r| remote::runs(r, cmd, *json)),
            None => match local::runs(&home, cmd, *json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spawn: {e:#}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::Keys { cmd, json } => server_mode(&|r| remote::keys(r, cmd, *json)),
        Command::Secrets { cmd, json } if cli.server.is_some() => {
            server_mode(&|r| remote::secrets(r, cmd, *json))
        }
        Command::Secrets { cmd, json } => done(secrets::run(&home, cmd, *json)),
        Command::Replay {
            trace_id,
            step_by_step,
            runtime,
        } => run::replay(&home, trace_id, *step_by_step, runtime.as_deref()),
        Command::Trace {
            cmd: TraceCmd::Export { trace_id, format },
        } => done(audit::trace_export(&home, trace_id, format)),
        Command::Audit { .. } if cli.server.is_some() => {
            eprintln!(
                "spawn: spawn audit reads the local log of $SPAWN_HOME; through spawnd it is not available yet: run it on the daemon's host with SPAWN_HOME set to the daemon's state directory"
            );
            ExitCode::from(2)
        }
        Command::Audit { cmd, json } => match cmd {
            AuditCmd::Verify {
                file,
                key,
                checkpoints,
            } => audit::verify(
                &home,
                file.as_deref(),
                checkpoints.as_deref(),
                key.as_deref(),
                *json,
            ),
            AuditCmd::Checkpoint => match audit::make_checkpoint(&home) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("spawn: {e:#}");
                    ExitCode::from(2)
                }
            },
            AuditCmd::Export => done(audit::export(&home)),
            AuditCmd::Prove { seq } => done(audit::prove(&home, *seq)),
            AuditCmd::Key => done(audit::print_key(&home)),
            AuditCmd::Query(q) => done(audit::query(&home, &q.args(), *json)),
            AuditCmd::Capabilities(q) => {
                if q.agent.is_none() {
                    eprintln!("spawn: spawn audit capabilities needs --agent ID");
                    return ExitCode::from(2);
                }
                done(audit::capabilities(&home, &q.args(), *json))
            }
        },
    }
}

/// 0, or 2 with the error on stderr.
fn done(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawn: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".spawn")
}

fn validate(file: &std::path::Path) -> ExitCode {
    match spawn_policy::load_agent(file) {
        Ok(agent) => {
            println!(
                "{}: valid Agent {}/{}",
                file.display(),
                agent.metadata.namespace.as_deref().unwrap_or("default"),
                agent.metadata.name
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spawn: {e}");
            ExitCode::from(1)
        }
    }
}
