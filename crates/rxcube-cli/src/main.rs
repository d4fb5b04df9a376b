//! `rxcube`: the command line of the rxcube OLAP engine. Thin by design: it parses arguments,
//! calls the libraries (`rxcube-gen`, `rxcube-ingest`, `rxcube-warehouse`) and prints.

mod demo;
mod follow_cmd;
mod generate_cmd;
mod import_cmd;
mod output;
mod rollup_cmd;
mod serve_cmd;
mod sql_cmd;
mod users_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc returns freed memory to the system promptly; with glibc's allocator the pages
/// that DataFusion's batches and spills freed stayed resident, so an import's resident memory
/// stood far above its budget.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rxcube_warehouse::Warehouse;

/// rxcube: pharmacy performance analytics on Apache DataFusion.
///
/// Land payroll, point-of-sale, Rx-fill and survey events as Delta tables, then query them with
/// SQL. Commands that need data default to the embedded demo chain, landed on first use in
/// `.rxcube/demo` (or $RXCUBE_WAREHOUSE).
#[derive(Debug, Parser)]
#[command(name = "rxcube", version, about, long_about, propagate_version = true)]
struct Cli {
    /// Show what happens inside (import, commit and query phases); repeat for more.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbosity: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, clap::Args)]
struct WarehouseArg {
    /// Warehouse root: a directory or an object-store URL (s3://bucket/prefix, memory:///).
    /// Default: the demo warehouse `.rxcube/demo`, landed from the embedded demo chain if empty.
    #[arg(long, short = 'w', env = "RXCUBE_WAREHOUSE")]
    warehouse: Option<String>,
}

impl WarehouseArg {
    /// Opens the named warehouse, or the demo warehouse (landing the demo chain if needed).
    /// Whether no warehouse was named (the demo warehouse).
    fn is_default(&self) -> bool {
        self.warehouse.is_none()
    }

    async fn open(&self) -> anyhow::Result<Warehouse> {
        match &self.warehouse {
            Some(w) => Ok(Warehouse::open(w)?),
            None => demo::open_demo_warehouse().await,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Land the embedded demo chain in a fresh warehouse and show what landed.
    Demo(demo::DemoArgs),
    /// Generate a deterministic synthetic pharmacy chain as CSV or Parquet files.
    Generate(generate_cmd::GenerateArgs),
    /// Import CSV or Parquet files into a table: validate every record, then post all or nothing.
    Import(import_cmd::ImportArgs),
    /// Run SQL over the warehouse; with no query, an interactive prompt.
    Sql(sql_cmd::SqlArgs),
    /// Build, refresh or inspect the cube's materialized rollups.
    Rollup(rollup_cmd::RollupArgs),
    /// Serve the warehouse over Arrow Flight SQL to signed-in users, each within its org scope.
    Serve(serve_cmd::ServeArgs),
    /// Manage the users and groups who may sign in to the server, and their scopes.
    Users(users_cmd::UsersArgs),
}

fn init_tracing(verbosity: u8) {
    // deltalake logs expected conditions (probing a table that does not exist yet) as errors
    // and warnings; its real failures reach the user as results, so it stays quiet unless asked.
    let default = match verbosity {
        0 => "warn,deltalake_core=off,buoyant_kernel=off,buoyant_kernel_engine=off",
        1 => "info,deltalake_core=warn,buoyant_kernel=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RXCUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Exit status: 0 done, 1 records rejected or query failed, 2 bad usage or an operational error.
fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => demo::run(a).await,
            Command::Generate(a) => generate_cmd::run(a),
            Command::Import(a) => import_cmd::run(a, cli.verbosity).await,
            Command::Sql(a) => sql_cmd::run(a).await,
            Command::Rollup(a) => rollup_cmd::run(a).await,
            Command::Serve(a) => serve_cmd::run(a).await,
            Command::Users(a) => users_cmd::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A path argument that must name an existing file (not a directory).
fn existing_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(m) if m.is_dir() => Err(format!("{s} is a directory; name the files in it")),
        Ok(_) => Err(format!("{s} is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("no such file: {s}")),
        Err(e) => Err(format!("cannot read {s}: {e}")),
    }
}
