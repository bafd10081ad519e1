//! The `tollgate` command.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate::app::{self, Gateway};

/// mimalloc: the request path allocates small, short-lived buffers on every
/// call; glibc's malloc was ~10% of a 0-step gateway's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "API gateway with WebAssembly policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: bind the listeners and proxy calls through the policy chains.
    Run {
        /// The gateway file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Validate a gateway file and every manifest, plugin and step config it
    /// names, without serving. Exits non-zero on any error.
    Check {
        /// The gateway file.
        file: PathBuf,
    },
    /// Print the SHA-256 of an API key, as `[[consumer]] keys` expect it.
    HashKey {
        /// The key (reads one line from standard input when absent).
        key: Option<String>,
    },
    /// Serve the demo upstream (a JSON echo server).
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
    },
    /// For policy authors: create a policy crate, build it, rebuild it on
    /// every change (docs/writing-a-policy.md).
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Turn the recording of one API's calls on (or off with --off): edits
    /// the API's `[api.record]` in its manifest, checked by a full build
    /// first; a running gateway picks it up. Replay the trace with
    /// `tollgate policy replay`.
    Record {
        /// The gateway file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// The API to record.
        #[arg(long)]
        api: String,
        /// Stop recording (remove `[api.record]`).
        #[arg(long)]
        off: bool,
        /// The trace file, relative to the manifest's folder (default: the
        /// current one, else API.trace.jsonl).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Size at which recording stops (default 16MiB).
        #[arg(long)]
        max_bytes: Option<String>,
        /// Longest body recorded; longer ones as their length (default 64KiB).
        #[arg(long)]
        max_body: Option<String>,
        /// Fraction of the calls recorded, 0.0 to 1.0 (default 1.0).
        #[arg(long)]
        sample: Option<f64>,
    },
    /// Write a policy manifest from an API description (docs/configuration.md,
    /// "OpenAPI").
    Import {
        #[command(subcommand)]
        what: ImportCmd,
    },
    /// The developer portal (docs/portal.md).
    Portal {
        #[command(subcommand)]
        cmd: PortalCmd,
    },
    /// The admin API: create the first administrator (`init`), or manage
    /// users, products, plans, consumers, apps, subscriptions and keys of a
    /// running gateway (docs/admin-api.md).
    Admin {
        #[command(flatten)]
        options: tollgate_admin_cli::Options,
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Create a policy crate: typed config, native and .wasm tests, a README,
    /// and a gateway file that serves it.
    New {
        /// The policy's name (lower case, digits, `-`).
        name: String,
        /// Where to create it (default: ./NAME). Must be new or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The gateway checkout's `plugins/` folder, holding the SDK and the
        /// test runner (default: the checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the crate's release .wasm for wasm32-wasip2 (adding the target
    /// with rustup when missing); prints the .wasm's path.
    Build {
        /// The crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Keep function names, so a trap's log line names guest functions.
        #[arg(long)]
        names: bool,
    },
    /// Build, then rebuild on every change to the crate's sources; a
    /// gateway serving the .wasm reloads it after each good build.
    Watch {
        /// The crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Keep function names (as for `build`).
        #[arg(long)]
        names: bool,
    },
    /// Run a built policy for `tollgate-policy-test` (JSON lines on standard
    /// input and output). Started by the test runner, not by hand.
    #[command(hide = true)]
    TestHost {
        /// The component.
        wasm: PathBuf,
        /// Where compiled code is cached between runs.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Run a new version of a policy and the version it replaces over
    /// recorded calls (`[api.record]`) and report every call on which they
    /// decide differently: exit 1 when any does, 2 on a usage error.
    Replay(tollgate::replay::Args),
}

#[derive(Subcommand)]
enum PortalCmd {
    /// For the README demo: a published product over the demo API with a
    /// self-service and a moderated plan, and an active consumer account
    /// (its email and password printed). Offline: run it with the gateway
    /// stopped; what exists already is left as it is.
    DemoSeed {
        /// The gateway file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create the first administrator in the gateway's store and print its
    /// token once. Run it with the gateway stopped; it never replaces one.
    Init {
        /// The gateway file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// The administrator's id.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// When every administrator token is lost: issue a new token for the
    /// administrator `--user` (or create that administrator when no user
    /// has the id) and print it once. Offline: run it with the gateway
    /// stopped. Audited as `recover`.
    Recover {
        /// The gateway file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// The administrator's id.
        #[arg(long)]
        user: String,
    },
    #[command(flatten)]
    Client(tollgate_admin_cli::Command),
}

fn init_logging() {
    init_logging_with(false);
}

/// Logs to standard error at `TOLLGATE_LOG` (default `info`). `plain`: no
/// colours whatever the terminal (a log file another program reads);
/// otherwise the subscriber's own choice.
fn init_logging_with(plain: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if plain {
        logs.with_ansi(false).init();
    } else {
        logs.init();
    }
}

/// `tollgate import ...`.
#[derive(Subcommand)]
enum ImportCmd {
    /// A manifest from an OpenAPI 3.0 or 3.1 document (YAML or JSON): a
    /// route per operation, named by its operationId, the upstream from
    /// --upstream or the document's first server. With --reference the
    /// manifest names the document instead, and the gateway reads the
    /// routes from it at every load.
    Openapi {
        /// The OpenAPI document.
        file: PathBuf,
        /// The API's name.
        #[arg(long)]
        api: String,
        /// The upstream's base URL (default: the document's first server).
        #[arg(long)]
        upstream: Option<String>,
        /// Name the document in the manifest (`openapi = FILE`) instead
        /// of writing its routes.
        #[arg(long)]
        reference: bool,
        /// Add a `validate` step (with --reference).
        #[arg(long)]
        validate: bool,
        /// Add a `mock-response` step answering from the document's
        /// examples (with --reference).
        #[arg(long)]
        mock: bool,
        /// Where to write the manifest (default: standard output). An
        /// existing file is not overwritten.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tollgate::net::workers::no_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(file),
        Command::HashKey { key } => hash_key(key),
        Command::Run { config } => {
            init_logging();
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DemoUpstream { listen } => {
            init_logging();
            demo_upstream(listen)
        }
        Command::Policy { cmd } => policy(cmd),
        Command::Portal {
            cmd: PortalCmd::DemoSeed { config },
        } => match tollgate::portal::demo::seed(&config) {
            Ok(()) => {
                println!(
                    "email: {}\npassword: {}",
                    tollgate::portal::demo::DEMO_EMAIL,
                    tollgate::portal::demo::DEMO_PASSWORD
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Import { what } => import(what),
        Command::Record {
            config,
            api,
            off,
            file,
            max_bytes,
            max_body,
            sample,
        } => {
            let edit = tollgate::control::record_edit::RecordEdit {
                api,
                off,
                file,
                max_bytes,
                max_body,
                sample,
            };
            match tollgate::control::record_edit::apply(&config, &edit) {
                Ok(done) => {
                    match &done.trace {
                        Some(t) => println!(
                            "api `{}` records to {} ({} edited; a running gateway reloads it)",
                            edit.api,
                            t.display(),
                            done.manifest.display()
                        ),
                        None => println!(
                            "api `{}` no longer records ({} edited)",
                            edit.api,
                            done.manifest.display()
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { options, cmd } => match cmd {
            AdminCmd::Init { config, user } => admin_init(&config, &user),
            AdminCmd::Recover { config, user } => admin_recover(&config, &user),
            AdminCmd::Client(command) => {
                tollgate_admin_cli::run(tollgate_admin_cli::AdminArgs { options, command })
            }
        },
    }
}

/// `tollgate policy ...`.
fn policy(cmd: PolicyCmd) -> ExitCode {
    use tollgate::author::{build, scaffold, test_host};
    let r = match cmd {
        PolicyCmd::New { name, dir, sdk } => (|| {
            let plugins = match sdk.or_else(scaffold::default_plugins_dir) {
                Some(p) => p,
                None => anyhow::bail!(
                    "where is the SDK? pass --sdk with the gateway checkout's plugins/ folder"
                ),
            };
            let plugins = plugins.canonicalize().unwrap_or(plugins);
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let tollgate = std::env::current_exe().context("this binary's path")?;
            scaffold::create(&scaffold::NewPolicy {
                name: name.clone(),
                dir: dir.clone(),
                plugins,
                tollgate,
            })?;
            println!("created {}", dir.display());
            eprintln!(
                "next:\n  cd {}\n  cargo test              # native and .wasm\n  \
                 tollgate policy build   # the .wasm\n  \
                 tollgate run -c gateway.toml",
                dir.display()
            );
            Ok(())
        })(),
        PolicyCmd::Build { dir, names } => {
            build::build(&build::BuildOptions { dir, names }).map(|b| {
                println!("{}", b.wasm.display());
                eprintln!("built {} bytes", b.bytes);
            })
        }
        PolicyCmd::Watch { dir, names } => build::watch(
            &build::BuildOptions { dir, names },
            std::time::Duration::from_millis(500),
            || false,
        ),
        PolicyCmd::Replay(args) => return tollgate::replay::main(args),
        PolicyCmd::TestHost { wasm, cache_dir } => {
            // Its log is a file the test runner shows on failure.
            init_logging_with(true);
            test_host::serve(&wasm, cache_dir)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tollgate hash-key`: the key's SHA-256, from the argument or one line of
/// standard input.
/// `tollgate import openapi`.
fn import(what: ImportCmd) -> ExitCode {
    let ImportCmd::Openapi {
        file,
        api,
        upstream,
        reference,
        validate,
        mock,
        output,
    } = what;
    let spec = match tollgate::openapi::load(&file) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // The document as the manifest names it: relative to the manifest's
    // folder when it is below it, else absolute.
    let reference = reference.then(|| {
        let abs = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        let out_dir = output
            .as_deref()
            .and_then(|o| o.parent())
            .map(|d| {
                if d.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    d
                }
            })
            .unwrap_or(std::path::Path::new("."));
        let out_dir = std::fs::canonicalize(out_dir).unwrap_or_else(|_| out_dir.to_path_buf());
        abs.strip_prefix(&out_dir)
            .map(std::path::Path::to_path_buf)
            .unwrap_or(abs)
            .display()
            .to_string()
    });
    let opts = tollgate::openapi::import::ImportOptions {
        api,
        upstream,
        reference,
        validate,
        mock,
    };
    for n in tollgate::openapi::import::notes(&spec) {
        eprintln!("note: {n}");
    }
    let text = match tollgate::openapi::import::manifest(&spec, &opts) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(out) => {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
            match written {
                Ok(()) => {
                    eprintln!(
                        "wrote {} ({} operations of {})",
                        out.display(),
                        spec.operations.len(),
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(k) => k,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the key from standard input");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    println!(
        "{}",
        tollgate::policy::host::consumers::key_digest_hex(&key)
    );
    ExitCode::SUCCESS
}

/// `tollgate demo-upstream`: serve the JSON echo server until stopped.
fn demo_upstream(listen: std::net::SocketAddr) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(tollgate::demo::serve(listen, |a| {
        tracing::info!("demo upstream listening on http://{a}")
    })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn admin_init(config: &std::path::Path, user: &str) -> ExitCode {
    match tollgate::control::admin::init(config, user) {
        Ok(token) => {
            println!("{token}");
            eprintln!(
                "Administrator `{user}` created. Its token (above) is shown only this once: \
                 only its SHA-256 is stored.\n\
                 Use it with the gateway running:\n  \
                 export TOLLGATE_ADMIN_TOKEN={token}\n  \
                 tollgate admin whoami"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn admin_recover(config: &std::path::Path, user: &str) -> ExitCode {
    match tollgate::control::admin::recover(config, user) {
        Ok((token, created)) => {
            println!("{token}");
            eprintln!(
                "{} `{user}`: a new token (above), shown only this once; {}\
                 The audit log records this as `recover`. Start the gateway, then:\n  \
                 export TOLLGATE_ADMIN_TOKEN={token}\n  \
                 tollgate admin whoami",
                if created {
                    "Administrator created"
                } else {
                    "Administrator recovered"
                },
                if created {
                    "no user had this id.\n"
                } else {
                    "its old token no longer works.\n"
                },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: PathBuf) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let path = file
            .canonicalize()
            .map_err(|e| format!("error: {}: cannot read: {e}", file.display()))?;
        let gw = tollgate::loader::read_gateway_file(&path).map_err(|e| e.to_string())?;
        // A throwaway runtime without a cache: checking writes nothing.
        let runtime = tollgate::policy::Runtime::new(
            tollgate::policy::EngineLimits { max_instances: 64 },
            None,
            std::sync::Arc::new(tollgate::policy::host::Services::for_check()),
        )
        .map_err(|e| format!("error: {e:#}"))?;
        let g = tollgate::loader::build(&path, &gw, &runtime).map_err(|e| e.to_string())?;
        let steps: usize = g.apis.iter().map(|a| a.steps.len()).sum();
        let mut out = format!(
            "ok: {} api(s), {} step(s), {} listener(s)",
            g.apis.len(),
            steps,
            gw.listeners.len()
        );
        for a in &g.apis {
            for s in &a.steps {
                let iso = s.isolation().as_str();
                let phases = match (s.has_request(), s.has_response()) {
                    (true, true) => "request and response phases",
                    (true, false) => "request phase",
                    (false, true) => "response phase",
                    (false, false) => "no phase",
                };
                out.push_str(&format!(
                    "\n  api `{}`, step `{}`: {iso} isolation, {phases}, tollgate:policy@{}",
                    a.name,
                    s.name,
                    s.plugin.abi()
                ));
                if let Some(c) = &s.canary {
                    out.push_str(&format!(
                        "; canary `{}` for {}.{:02}% of consumers, tollgate:policy@{}",
                        c.step.plugin.name,
                        c.share / 100,
                        c.share % 100,
                        c.step.plugin.abi()
                    ));
                }
            }
        }
        out.push_str("\neffective chains:");
        for line in g.effective_chains() {
            out.push_str(&format!("\n  {line}"));
        }
        Ok(out)
    })();
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads serving the listeners: one per core unless
/// `TOLLGATE_WORKERS` says otherwise (1–1024).
fn worker_count() -> Result<usize> {
    match std::env::var("TOLLGATE_WORKERS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => anyhow::bail!("TOLLGATE_WORKERS={v:?}: must be a number from 1 to 1024"),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// One single-threaded runtime per worker thread, each running until its
/// stop signal: connections are accepted, served and proxied on one
/// thread, with no hand-offs between threads.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(n: usize) -> Result<Self> {
        let mut w = Workers {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a worker runtime")?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop_tx);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("tollgate-w{i}"))
                    .spawn(move || {
                        tollgate::net::workers::enter(i);
                        rt.block_on(async {
                            let tick = tokio::spawn(tollgate::net::workers::keep_timer_near());
                            let _ = stop_rx.await;
                            tick.abort();
                        });
                        // Tasks still there (connections past the drain
                        // time) are dropped with the runtime.
                        rt.shutdown_timeout(std::time::Duration::from_millis(100));
                    })
                    .context("starting a worker thread")?,
            );
        }
        Ok(w)
    }

    fn stop(self) {
        drop(self.stops);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run(config: PathBuf) -> Result<()> {
    app::tune_allocator();
    let n = worker_count()?;
    tollgate::net::workers::set_count(n);
    let workers = Workers::start(n)?;
    // The control runtime: loading, reloads, signals, the admin API.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tollgate-control")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let handles = workers.handles.clone();
    let result = rt.block_on(async move {
        let (gateway, gw) = tokio::task::spawn_blocking(move || Gateway::load(&config)).await??;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (bound, tasks) = app::serve_on(gateway.clone(), &gw, rx, &handles).await?;
        gateway.spawn_reloaders(gw.reload.watch, gw.reload.debounce.0);
        tracing::info!(
            "tollgate serving on {} worker thread(s): {}",
            handles.len(),
            tollgate::gateway::describe(&bound)
        );
        wait_for_shutdown().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        // Give connections a moment to drain.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Access-log lines wait up to 50 ms to be written in a batch.
        gateway.runtime.flush_logs();
        // And every recorded call ([api.record]) still queued.
        tollgate::record::flush_all(std::time::Duration::from_secs(2));
        // And the calls the analytics writer holds (a SIGKILL loses at most
        // one `[analytics] flush-interval` of them).
        if let Some(a) = &gateway.data.observe.analytics {
            if !a.flush(std::time::Duration::from_secs(5)) {
                tracing::warn!(
                    "analytics: not flushed at shutdown; up to one flush interval of calls is lost"
                );
            }
        }
        Ok(())
    });
    workers.stop();
    result
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
