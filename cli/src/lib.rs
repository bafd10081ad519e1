//! `tollgate admin`: a command-line client of the gateway's admin REST API
//! (docs/admin-api.md).
//!
//! ```sh
//! export TOLLGATE_ADMIN_TOKEN=tga_...
//! tollgate admin products create id=shop name=Shop apis:='["pets"]'
//! tollgate admin plans create id=gold product=shop name=Gold \
//!     rate_limits:='[{"requests":100,"per":"second"}]'
//! tollgate admin keys create app=web plan=gold      # prints the secret once
//! tollgate admin --json subscriptions list --state pending --all
//! ```
//!
//! Lists and objects print as tables; `--json` prints the API's answer. A
//! secret (a new token or key) is the only thing on stdout, so scripts can
//! capture it. Errors print `error: ...` on stderr and exit with 1.
//!
//! The crate does not depend on the gateway: the `tollgate` binary flattens
//! [`Options`] and [`Command`] into its `admin` subcommand (next to `init`,
//! which needs the gateway's store) and calls [`run`].
#![forbid(unsafe_code)]

mod analytics;
mod body;
mod chain;
mod client;
mod cmd;
mod error;
mod render;

pub use analytics::AnalyticsVerb;
pub use cmd::{
    ApiVerb, AppFilter, AuditVerb, ChainVerb, Command, Crud, Fields, Filter, KeyFilter, KeyVerb,
    NoFilter, OAuthClientVerb, OAuthKeyVerb, Page, PlanFilter, SubscriptionFilter,
    SubscriptionVerb, UserVerb,
};
pub use error::Error;

use render::Stream;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The whole `tollgate admin` client command line.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the admin API is, how to authenticate, how to print.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Admin API client options")]
pub struct Options {
    /// The admin API's URL: the `[admin] address` of the gateway file
    /// (`http://` is assumed for a bare host:port).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub url: String,
    /// An admin token (`tga_...`) from `tollgate admin init`, `users create`
    /// or `users token`.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// URL (such as
    /// the certificate of `[admin] tls` when it is self-signed).
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_CACERT", value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Print the API's JSON answer (pretty) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Run a client command: print its result, or the error on stderr.
/// Exit code 0 on success, 1 on any error.
pub fn run(args: AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&args)) {
        Ok(output) => {
            print(&output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", error::report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Plan, send and render one command.
async fn execute(args: &AdminArgs) -> Result<render::Output, Error> {
    let call = cmd::plan(&args.command)?;
    let ca =
        match &args.options.cacert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::Usage(format!("--cacert {}: cannot read: {e}", path.display()))
            })?),
            None => None,
        };
    let client = client::Client::new(&args.options.url, args.options.token.clone(), ca.as_deref())?;
    let answer = client.send(&call).await?;
    Ok(render::render(&call.show, &answer, args.options.json))
}

/// Print the parts in order. A closed pipe (`| head`) is not an error.
fn print(output: &render::Output) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for (stream, text) in &output.parts {
        let _ = match stream {
            Stream::Stdout => out.write_all(text.as_bytes()).and_then(|_| out.flush()),
            Stream::Stderr => err.write_all(text.as_bytes()).and_then(|_| err.flush()),
        };
    }
}

#[cfg(test)]
mod tests;
