//! `spawnd`: `spawnd init` creates the state and prints the first admin API key once;
//! `spawnd [--config F] [--listen ADDR]` serves (SPEC §2).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use spawn_server::config::LogFormat;
use spawn_server::Config;

#[derive(Debug, Parser)]
#[command(
    name = "spawnd",
    version,
    about = "spawn's daemon: the multi-tenant API"
)]
struct Cli {
    /// The configuration file (spawn.yaml); default: built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve on (overrides the configuration's `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the state and print the first admin API key (once).
    Init,
    /// (internal) Run a claimed run (its input on stdin) and supervise it to its end.
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        run: String,
        #[arg(long)]
        holder: String,
        #[arg(long)]
        agent: Option<String>,
        /// The run's namespace: its secrets are resolved there.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// (internal) Resolve a run's secrets for its supervisor: names on stdin, values on
    /// stdout.
    #[command(hide = true)]
    ResolveSecrets {
        #[arg(long)]
        namespace: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawnd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    harden();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(Command::Supervise {
        run,
        holder,
        agent,
        namespace,
    }) = &cli.command
    {
        // No thread before the sandbox exists: a native sandbox starts from a
        // single-threaded process. The run's output is what this process writes to its
        // stdout and stderr from here on; its log goes where its stderr went.
        let (captured, log) =
            spawn_server::runs::capture_stdio().context("capture the run's output")?;
        logging(config.log.format, std::sync::Mutex::new(log));
        let secrets = match (namespace, std::env::current_exe()) {
            (Some(ns), Ok(exe)) => {
                let mut args: Vec<std::ffi::OsString> = Vec::new();
                if let Some(c) = &cli.config {
                    args.extend(["--config".into(), c.clone().into_os_string()]);
                }
                args.extend(["resolve-secrets".into(), "--namespace".into(), ns.into()]);
                Some(spawn_server::runs::HelperResolver { exe, args })
            }
            _ => None,
        };
        let code = spawn_server::runs::supervise(
            &config,
            run,
            holder,
            agent.as_deref(),
            captured,
            secrets,
        );
        std::process::exit(i32::from(code));
    }
    if let Some(Command::ResolveSecrets { namespace }) = &cli.command {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        return rt
            .block_on(spawn_server::runs::resolve_secrets(&config, namespace))
            .map_err(Into::into);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match cli.command {
        Some(Command::Init) => {
            let key = rt.block_on(spawn_server::init(&config))?;
            eprintln!(
                "spawnd: state created in {}; the first admin API key (shown once, keep it secret):",
                config.home().display()
            );
            println!("{}", key.expose());
            Ok(())
        }
        Some(Command::Supervise { .. } | Command::ResolveSecrets { .. }) => Ok(()),
        None => {
            logging(config.log.format, std::io::stderr);
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("listen on {}", config.listen))?;
                let addr = listener.local_addr().context("listen address")?;
                // Once ready, the address on a line of its own (tests and scripts read it).
                let ready = move || {
                    tracing::info!(%addr, "spawnd listening");
                    println!("listening on {addr}");
                };
                spawn_server::serve(&config, listener, ready, shutdown()).await?;
                tracing::info!("spawnd stopped");
                Ok(())
            })
        }
    }
}

/// Not dumpable (no core file, no ptrace by unprivileged peers, /proc/self not readable
/// by others) and no core files: the process holds keys' hashes and, later, secrets.
fn harden() {
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}

fn logging<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPAWND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
