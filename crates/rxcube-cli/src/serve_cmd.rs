//! `rxcube serve`: the Arrow Flight SQL server and the web pages (`rxcube_web`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::WarehouseArg;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Serves the warehouse over Arrow Flight SQL to dashboard tools, notebooks and BI tools (ADBC, \
flightsql-dbapi / SQLAlchemy, the Flight SQL JDBC driver). Clients sign in with a user of \
`rxcube users` (basic auth; the handshake returns a bearer token) and see the catalog of \
`rxcube sql` through their org scope. The server is read-only; strings go out as Utf8 (not \
Utf8View). It picks up new imports, rollups and user changes every --reload seconds, writes the \
audit log (system.audit_log) every second, and stops gracefully on Ctrl-C or SIGTERM (calls and page requests in flight get 10 s to finish).

Rollups: when an import or a reference change makes a rollup stale, the server refreshes the \
rollups itself in the background, as `rxcube rollup refresh` does, once --refresh-debounce \
seconds pass with no newer import (--no-auto-refresh: never); queries in flight finish on the \
snapshot they started on. system.rollups and `rxcube rollup status` show how far behind each is.

Limits: every statement is measured before it is planned (--max-statement-tokens, \
--max-expression-depth), runs under a timeout (--statement-timeout) with a memory pool of its \
own (--query-memory-limit) drawn from the server's (--memory-limit), spilling to at most \
--spill-limit of temporary files, and is stopped when its client goes away. A planned result \
not fetched within --ticket-ttl is dropped; a session holds at most --max-open-tickets of them \
and --max-prepared-statements; a user at most --max-sessions-per-user sessions (signing in \
again ends the oldest) and --max-running-per-user statements at once. Sign-ins are throttled: \
after --max-failed-logins failures for a name (--max-failed-logins-per-address from an address) \
every attempt waits, even with the right password, 1 s and doubling with each further failure \
(at most 5 min). Sizes are written like 512MiB, 4GiB, 2G.

Web pages: score cards and the reports behind them at http://127.0.0.1:8080/ (--http; \
--no-http for none), for the same users and scopes: sign in at /login, then \
/card/<level>/<node>?period=YYYY-MM-DD (e.g. /card/pharmacy/423, /card/region/West). With \
--tls-cert/--tls-key they are served over HTTPS too.

With no flags it serves the demo warehouse on 127.0.0.1:50051 (demo users: admin, dana, rita, \
sam, lena, pat; password demo).

Examples:
  rxcube serve
  rxcube serve -w s3://bucket/warehouse --flight 0.0.0.0:50051 --tls-cert cert.pem --tls-key key.pem
  python -c \"import adbc_driver_flightsql.dbapi as f; c = f.connect('grpc://127.0.0.1:50051', \
db_kwargs={'username': 'pat', 'password': 'demo'}); print(c.cursor().execute('SELECT 1').fetchall())\"")]
pub struct ServeArgs {
    #[command(flatten)]
    warehouse: WarehouseArg,
    /// Address to listen on (port 0: any free port; the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:50051")]
    flight: std::net::SocketAddr,
    /// Address of the web pages (score cards, reports; port 0: any free port; the second line
    /// on stdout says which). HTTPS with the Flight port's --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "no_http")]
    http: std::net::SocketAddr,
    /// Serve no web pages (Flight SQL only).
    #[arg(long)]
    no_http: bool,
    /// PEM certificate (chain) for TLS; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for TLS; needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Seconds a sign-in (bearer token) stays valid.
    #[arg(long, default_value_t = 8 * 3600)]
    token_ttl: u64,
    /// Seconds between reloads of the warehouse (new data, rollups, users).
    #[arg(long, default_value_t = 10)]
    reload: u64,
    /// Seconds without a newer import before the server refreshes stale rollups itself (in
    /// the background, one job at a time; at most 12 times this while imports keep landing).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 5,
        conflicts_with = "no_auto_refresh"
    )]
    refresh_debounce: u64,
    /// Never refresh rollups (run `rxcube rollup refresh` yourself; stale rollups are passed
    /// over and queries read the raw tables).
    #[arg(long)]
    no_auto_refresh: bool,
    /// Memory all running queries may hold together [default: half of the machine's memory].
    #[arg(long, value_parser = size, value_name = "SIZE")]
    memory_limit: Option<u64>,
    /// Memory one query may hold; sorts, aggregations and joins spill past it where they can,
    /// others fail [default: a quarter of --memory-limit].
    #[arg(long, value_parser = size, value_name = "SIZE")]
    query_memory_limit: Option<u64>,
    /// Temporary disk space spilled queries may use together.
    #[arg(long, value_parser = size, value_name = "SIZE", default_value = "16GiB")]
    spill_limit: u64,
    /// Seconds a statement may plan, and then run, before it is stopped.
    #[arg(long, value_name = "S", default_value_t = 300)]
    statement_timeout: u64,
    /// Seconds a planned result waits to be fetched (DoGet) before it is dropped.
    #[arg(long, value_name = "S", default_value_t = 60)]
    ticket_ttl: u64,
    /// Results planned and not yet fetched, per session.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_open_tickets: usize,
    /// Prepared statements open at once, per session.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_prepared_statements: usize,
    /// Sessions (sign-ins) per user; signing in again ends the oldest.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_sessions_per_user: usize,
    /// Statements a user may plan or run at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_running_per_user: usize,
    /// Deepest nesting of expressions and subqueries in a statement (`a OR b OR c` nests one
    /// level per term).
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_expression_depth: usize,
    /// Most tokens (words, literals, operators) in a statement.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_statement_tokens: usize,
    /// Failed sign-ins of a user name before every further attempt waits.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_failed_logins: u32,
    /// Failed sign-ins from one client address before every further attempt from it waits.
    #[arg(long, value_name = "N", default_value_t = 30)]
    max_failed_logins_per_address: u32,
}

fn size(s: &str) -> Result<u64, String> {
    rxcube_server::limits::parse_bytes(s)
}

fn positive(name: &str, n: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(n > 0, "--{name} must be at least 1");
    Ok(n)
}

impl ServeArgs {
    fn limits(&self) -> anyhow::Result<rxcube_server::Limits> {
        let defaults = rxcube_server::Limits::default();
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let memory_limit = self.memory_limit.map_or(defaults.memory_limit, bytes);
        let query_memory_limit = self.query_memory_limit.map_or(memory_limit / 4, bytes);
        anyhow::ensure!(
            query_memory_limit <= memory_limit,
            "--query-memory-limit ({}) is above --memory-limit ({})",
            rxcube_server::limits::human_bytes(query_memory_limit as u64),
            rxcube_server::limits::human_bytes(memory_limit as u64)
        );
        Ok(rxcube_server::Limits {
            max_expression_depth: positive(
                "max-expression-depth",
                self.max_expression_depth as u64,
            )? as usize,
            max_statement_tokens: positive(
                "max-statement-tokens",
                self.max_statement_tokens as u64,
            )? as usize,
            memory_limit,
            query_memory_limit,
            spill_limit: self.spill_limit,
            statement_timeout: Duration::from_secs(positive(
                "statement-timeout",
                self.statement_timeout,
            )?),
            ticket_ttl: Duration::from_secs(positive("ticket-ttl", self.ticket_ttl)?),
            max_open_tickets: positive("max-open-tickets", self.max_open_tickets as u64)? as usize,
            max_prepared_statements: positive(
                "max-prepared-statements",
                self.max_prepared_statements as u64,
            )? as usize,
            max_sessions_per_user: positive(
                "max-sessions-per-user",
                self.max_sessions_per_user as u64,
            )? as usize,
            max_running_per_user: positive(
                "max-running-per-user",
                self.max_running_per_user as u64,
            )? as usize,
            max_failed_logins: positive("max-failed-logins", u64::from(self.max_failed_logins))?
                as u32,
            max_failed_logins_per_address: positive(
                "max-failed-logins-per-address",
                u64::from(self.max_failed_logins_per_address),
            )? as u32,
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("rxcube serve: shutting down (finishing calls in flight)");
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let limits = args.limits()?;
    let demo = args.warehouse.is_default();
    let warehouse = args.warehouse.open().await?;
    if demo {
        crate::users_cmd::add_demo_users(&warehouse).await?;
    }
    let options = rxcube_server::Options {
        address: args.flight,
        tls: args.tls_cert.zip(args.tls_key),
        token_ttl: Duration::from_secs(args.token_ttl.max(1)),
        reload: Duration::from_secs(args.reload.max(1)),
        auto_refresh: (!args.no_auto_refresh).then(|| Duration::from_secs(args.refresh_debounce)),
        audit_flush: Duration::from_secs(1),
        limits,
    };
    if args.no_http {
        rxcube_server::serve(warehouse, options, shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // One service for both front ends: the same snapshot, directory, throttle and audit log.
    let service = rxcube_server::open(warehouse, &options).await?;
    let tls = match &options.tls {
        Some((cert, key)) => Some(rxcube_web::tls_config(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {} (--http)", args.http))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let web = rxcube_web::Web::new(service.clone(), options.token_ttl, tls.is_some());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let pages = tokio::spawn(rxcube_web::serve(
        web,
        listener,
        tls,
        until(stopped.clone()),
    ));
    let audit = service.audit();
    let flight = rxcube_server::serve_service(service, options, until(stopped), || {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{local}")?;
        out.flush()
    })
    .await;
    if flight.is_err() {
        pages.abort();
    }
    let pages = pages.await;
    // What the pages audited after the Flight side's last flush.
    audit.flush().await.context("cannot write the audit log")?;
    flight?;
    pages??;
    Ok(ExitCode::SUCCESS)
}
