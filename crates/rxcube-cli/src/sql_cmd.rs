//! `rxcube sql`: DataFusion SQL over the warehouse catalog, one-shot or interactive.

use std::path::PathBuf;
use std::process::ExitCode;

use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;

use crate::WarehouseArg;
use crate::output::{Format, print_batches};

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Tables: pharmacies, peer_groups, targets, employees, payroll, pos, rx_fills, surveys (as they \
stand after every replacement), and system.import_log, system.import_errors. \
SHOW TABLES and information_schema list them.

Examples:
  rxcube sql \"SELECT channel, count(*) FROM rx_fills GROUP BY channel\"
  rxcube sql --format csv -f queries/report.sql > report.csv
  rxcube sql                      (interactive; statements end with ';', \\q quits)")]
pub struct SqlArgs {
    #[command(flatten)]
    warehouse: WarehouseArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Read the SQL from a file (statements separated by ';').
    #[arg(short = 'f', long = "file", conflicts_with = "query", value_parser = crate::existing_file)]
    file: Option<PathBuf>,
    /// After each statement, print its row count, wall time (planning and execution, not
    /// printing) and what served its cube relations (which rollup, built from which table
    /// versions, or the raw tables and why) to stderr.
    #[arg(long)]
    timing: bool,
    /// Answer cube queries from the raw tables, never from rollups (the session setting
    /// `SET rxcube.rollups = false` does the same from within SQL).
    #[arg(long)]
    no_rollups: bool,
    /// The SQL to run. With neither a query nor -f, an interactive prompt opens.
    query: Option<String>,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let warehouse = args.warehouse.open().await?;
    let ctx = rxcube_cube::session(&warehouse, rxcube_cube::definition_for(&warehouse)?).await?;
    if args.no_rollups {
        ctx.sql("SET rxcube.rollups = false").await?;
    }
    let sql = match (&args.query, &args.file) {
        (Some(q), _) => q.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
        (None, None) => return repl(&ctx, args.format, args.timing).await,
    };
    let mut failed = false;
    for statement in split_statements(&sql) {
        if let Err(e) = run_statement(&ctx, &statement, args.format, args.timing).await {
            eprintln!("error: {e:#}");
            failed = true;
            break;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_statement(
    ctx: &SessionContext,
    sql: &str,
    format: Format,
    timing: bool,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let (batches, served) = rxcube_cube::run_statement(ctx, sql).await?;
    let elapsed = start.elapsed();
    let mut out = std::io::stdout().lock();
    match print_batches(&mut out, &batches, format) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if is_broken_pipe(&e) => std::process::exit(0),
        other => other?,
    }
    if timing {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        eprintln!("({rows} rows, {:.4} s)", elapsed.as_secs_f64());
        for line in served {
            eprintln!("(served by {line})");
        }
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<arrow::error::ArrowError>()
                .is_some_and(|a| matches!(a, arrow::error::ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

/// Splits a script on `;` outside string literals, quoted identifiers and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rxcube_history"))
}

async fn repl(ctx: &SessionContext, format: Format, timing: bool) -> anyhow::Result<ExitCode> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("rxcube SQL. Statements end with ';'. \\d lists tables, \\q quits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "rxcube> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() {
                    match trimmed {
                        "" => continue,
                        "\\q" | "quit" | "exit" => break,
                        "\\d" => {
                            editor.add_history_entry(trimmed)?;
                            if let Err(e) = run_statement(ctx, "SHOW TABLES", format, false).await {
                                eprintln!("error: {e:#}");
                            }
                            continue;
                        }
                        _ => {}
                    }
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    editor.add_history_entry(buffer.trim())?;
                    for statement in split_statements(&buffer) {
                        if let Err(e) = run_statement(ctx, &statement, format, timing).await {
                            eprintln!("error: {e:#}");
                        }
                    }
                    buffer.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let s = split_statements("SELECT ';'; -- a comment; here\nSELECT \"a;b\" FROM t;\n\n");
        assert_eq!(
            s,
            vec![
                "SELECT ';'".to_string(),
                "SELECT \"a;b\" FROM t".to_string()
            ]
        );
    }
}
