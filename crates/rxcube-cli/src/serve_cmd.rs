//! `rxcube serve`: the Arrow Flight SQL server.

use std::process::ExitCode;
use std::time::Duration;

use crate::WarehouseArg;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Serves the warehouse over Arrow Flight SQL to dashboard tools, notebooks and BI tools (ADBC, \
flightsql-dbapi / SQLAlchemy, the Flight SQL JDBC driver). Clients sign in with a user of \
`rxcube users` (basic auth; the handshake returns a bearer token) and see the catalog of \
`rxcube sql` through their org scope. The server is read-only; strings go out as Utf8 (not \
Utf8View). It picks up new imports, rollups and user changes every --reload seconds, writes the \
audit log (system.audit_log) every second, and stops gracefully on Ctrl-C or SIGTERM.

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
        audit_flush: Duration::from_secs(1),
    };
    rxcube_server::serve(warehouse, options, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
