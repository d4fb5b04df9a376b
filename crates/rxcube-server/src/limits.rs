//! What one statement, one session and one user may take from the server, and the checks and
//! pools that hold them to it.
//!
//! - [`Limits`]: every limit, with its default (`rxcube serve --help` and the README's "Limits"
//!   name the flags).
//! - [`parse_checked`]: a statement is tokenized, counted, parsed with a recursion limit and
//!   measured (expression and subquery depth) before anything plans it, so no statement can
//!   exhaust a thread's stack in the planner or the executor; a refusal names the limit.
//! - [`Memory`]: one memory pool for the server (`--memory-limit`), and for each query a pool of
//!   its own (`--query-memory-limit`) drawing from it, with spilling to a bounded temporary
//!   directory (`--spill-limit`): a runaway query fails alone with a clear error.

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Everything the server bounds, per statement, per session, per user and in all.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest nesting of expressions and subqueries in one statement (`a OR b OR c` nests 2
    /// deep; so does `f(g(x))`).
    pub max_expression_depth: usize,
    /// Most tokens (words, literals, operators) in one statement: its size.
    pub max_statement_tokens: usize,
    /// Memory all running queries may hold together (bytes).
    pub memory_limit: usize,
    /// Memory one query may hold (bytes); sorts, aggregations and joins that can spill do.
    pub query_memory_limit: usize,
    /// Disk space spilled queries may use together (bytes).
    pub spill_limit: u64,
    /// How long a statement may plan, and how long it may then run.
    pub statement_timeout: Duration,
    /// How long a planned result waits for its `DoGet` before it is dropped.
    pub ticket_ttl: Duration,
    /// Results planned but not yet fetched, per session.
    pub max_open_tickets: usize,
    /// Prepared statements open at once, per session.
    pub max_prepared_statements: usize,
    /// Sessions (tokens) per user; signing in again ends the oldest.
    pub max_sessions_per_user: usize,
    /// Statements a user may plan or run at once.
    pub max_running_per_user: usize,
    /// Failed sign-ins of one user name before further attempts wait.
    pub max_failed_logins: u32,
    /// Failed sign-ins from one client address before further attempts from it wait.
    pub max_failed_logins_per_address: u32,
}

/// Largest parameter batch one `DoPut` may bind (bytes).
pub const MAX_PARAMETER_BYTES: usize = 16 << 20;
/// Most parameter sets (rows) one `DoPut` may bind: each is planned as its own statement.
pub const MAX_PARAMETER_SETS: usize = 1024;
/// How long an unused prepared statement stays open.
pub const PREPARED_IDLE_TTL: Duration = Duration::from_secs(3600);
/// The stack of each thread that parses, plans and runs statements. Statements are measured
/// before planning, so this is headroom: DataFusion's planner and optimizer recurse over
/// expressions, and a refused statement's syntax tree (up to `max_statement_tokens` deep) is
/// dropped recursively.
pub const QUERY_THREAD_STACK: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        let memory = default_memory_limit();
        Self {
            max_expression_depth: 256,
            max_statement_tokens: 100_000,
            memory_limit: memory,
            query_memory_limit: memory / 4,
            spill_limit: 16 << 30,
            statement_timeout: Duration::from_secs(300),
            ticket_ttl: Duration::from_secs(60),
            max_open_tickets: 16,
            max_prepared_statements: 64,
            max_sessions_per_user: 32,
            max_running_per_user: 8,
            max_failed_logins: 10,
            max_failed_logins_per_address: 30,
        }
    }
}

/// Half of the machine's memory (`/proc/meminfo`), or 4 GiB where it cannot be read.
pub fn default_memory_limit() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    match total {
        Some(bytes) if bytes >= 256 << 20 => bytes / 2,
        _ => 4 << 30,
    }
}

/// A byte size as people write it: `512MiB`, `4GiB`, `2G` (binary), `1GB` (decimal), `1000`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512MiB, 4GiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{s}' is not a usable size"));
    }
    Ok(bytes as u64)
}

/// `bytes` as a short human size (`1.5 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Why a statement was not planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Over a limit (audited as `denied`); the text names the limit and its flag.
    Limit(String),
    /// Not valid SQL (audited as `error`).
    Invalid(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Limit(s) | Refused::Invalid(s) => f.write_str(s),
        }
    }
}

/// Parses one statement, refusing it before any planning when it is larger than
/// `max_statement_tokens` or nests deeper than `max_expression_depth`.
///
/// The tokenizer is iterative and the parser's recursion is bounded by the depth limit, so
/// this cannot exhaust the stack; a left-deep chain (`1+1+...+1`) is built by a loop, though,
/// and as deep as it is long, so its depth is measured on the tree (stopping at the limit)
/// before anything else walks it. Run it on a [`QUERY_THREAD_STACK`] thread: dropping a refused
/// tree recurses through it.
pub fn parse_checked(
    sql: &str,
    dialect: &dyn Dialect,
    limits: &Limits,
) -> Result<Statement, Refused> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| Refused::Invalid(format!("SQL error: {e}")))?;
    let size = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .count();
    if size > limits.max_statement_tokens {
        return Err(Refused::Limit(format!(
            "the statement is too large: {size} tokens, more than the server's limit of {} \
             (--max-statement-tokens); use fewer terms (an IN list of values is one term each) \
             or a smaller statement",
            limits.max_statement_tokens
        )));
    }
    let depth_limit = limits.max_expression_depth.max(1);
    let too_deep = || {
        Refused::Limit(format!(
            "the statement nests too deeply: more than the server's limit of {depth_limit} \
             levels of expressions or subqueries (--max-expression-depth); a chain such as \
             `a OR b OR ...` nests one level per term: write `x IN (...)`, or split the statement"
        ))
    };
    let mut statements = DFParserBuilder::new(tokens)
        .with_dialect(dialect)
        .with_recursion_limit(depth_limit)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("RecursionLimitExceeded") || text.contains("recursion limit exceeded")
            {
                too_deep()
            } else {
                Refused::Invalid(e.to_string())
            }
        })?;
    if statements.len() > 1 {
        return Err(Refused::Invalid(
            "one statement at a time: the text holds several".into(),
        ));
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| Refused::Invalid("no SQL statement was given".into()))?;
    if depth(&statement, depth_limit).is_break() {
        return Err(too_deep());
    }
    Ok(statement)
}

/// Breaks as soon as `statement` nests deeper than `limit` (so the walk itself never goes much
/// deeper than the limit).
fn depth(statement: &Statement, limit: usize) -> ControlFlow<()> {
    match statement {
        Statement::Statement(s) => s.visit(&mut Depth::new(limit)),
        Statement::Explain(e) => depth(&e.statement, limit),
        // Never planned by the server (refused as not reading).
        _ => ControlFlow::Continue(()),
    }
}

struct Depth {
    depth: usize,
    limit: usize,
    /// The depth entered by each query being walked (its own level plus its set operations').
    queries: Vec<usize>,
}

impl Depth {
    fn new(limit: usize) -> Self {
        Self {
            depth: 0,
            limit,
            queries: Vec::new(),
        }
    }

    fn enter(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth += levels;
        if self.depth > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// How deep the set operations of `body` nest (`a UNION b UNION c` is a chain, as deep as it
/// is long, built by a loop), measured without recursion and stopping past `limit`.
fn set_depth(body: &SetExpr, limit: usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(body, 0usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        if deepest > limit {
            break;
        }
        if let SetExpr::SetOperation { left, right, .. } = e {
            stack.push((left, d + 1));
            stack.push((right, d + 1));
        }
    }
    deepest
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let levels = 1 + set_depth(&query.body, self.limit);
        self.queries.push(levels);
        self.enter(levels)
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        let levels = self.queries.pop().unwrap_or(1);
        self.depth = self.depth.saturating_sub(levels);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

/// The server's memory: a pool every query's own pool draws from, and the spill directory.
#[derive(Debug)]
pub struct Memory {
    server: Arc<dyn MemoryPool>,
    disk: Arc<DiskManager>,
    server_limit: usize,
    query_limit: usize,
}

impl Memory {
    pub fn new(limits: &Limits) -> Result<Self> {
        let server_limit = limits.memory_limit.max(1);
        let query_limit = limits.query_memory_limit.clamp(1, server_limit);
        let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        let server: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(server_limit),
            top,
        ));
        let disk = Arc::new(
            DiskManagerBuilder::default()
                .with_max_temp_directory_size(limits.spill_limit)
                .build()?,
        );
        Ok(Self {
            server,
            disk,
            server_limit,
            query_limit,
        })
    }

    /// Memory all running queries hold now.
    pub fn reserved(&self) -> usize {
        self.server.reserved()
    }

    /// The runtime of one query: `base` (its session's object stores and caches) with a pool
    /// of its own, bounded by the query limit, drawing from the server's pool; spills go to the
    /// server's bounded temporary directory.
    pub fn query_runtime(&self, base: &RuntimeEnv) -> Result<Arc<RuntimeEnv>> {
        let pool = Arc::new(QueryPool {
            server: self.server.clone(),
            server_limit: self.server_limit,
            limit: self.query_limit,
            used: AtomicUsize::new(0),
        });
        let mut builder = RuntimeEnvBuilder::from_runtime_env(base);
        builder.memory_pool = Some(pool);
        builder.disk_manager = Some(self.disk.clone());
        builder.disk_manager_builder = None;
        builder.build_arc()
    }
}

/// One query's memory: at most `limit`, every byte also reserved in the server's pool.
#[derive(Debug)]
struct QueryPool {
    server: Arc<dyn MemoryPool>,
    server_limit: usize,
    limit: usize,
    used: AtomicUsize,
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool ({} of {} used)",
            human_bytes(self.used.load(Ordering::Relaxed) as u64),
            human_bytes(self.limit as u64)
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "rxcube-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.server.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.server.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional)
                    .filter(|total| *total <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more memory than its limit of {} (--query-memory-limit): \
                     {} asked for {} more with {} held by the query",
                    human_bytes(self.limit as u64),
                    reservation.consumer().name(),
                    human_bytes(additional as u64),
                    human_bytes(used as u64),
                ))
            })?;
        if let Err(e) = self.server.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the server's memory limit of {} (--memory-limit) is held by the queries \
                 running now; try again later ({})",
                human_bytes(self.server_limit as u64),
                e.find_root()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    fn limits() -> Limits {
        Limits {
            max_expression_depth: 64,
            max_statement_tokens: 20_000,
            ..Limits::default()
        }
    }

    fn chain(op: &str, n: usize) -> String {
        let terms: Vec<String> = (0..n).map(|i| format!("x = {i}")).collect();
        format!("SELECT 1 FROM t WHERE {}", terms.join(&format!(" {op} ")))
    }

    fn check(sql: &str) -> Result<(), Refused> {
        parse_checked(sql, &GenericDialect {}, &limits()).map(|_| ())
    }

    fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(QUERY_THREAD_STACK)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    #[test]
    fn statements_within_the_limits_parse() {
        assert_eq!(check("SELECT 1"), Ok(()));
        assert_eq!(check(&chain("OR", 60)), Ok(()));
        let list: Vec<String> = (0..5000).map(|i| format!("'{i}'")).collect();
        assert_eq!(
            check(&format!(
                "SELECT * FROM t WHERE id IN ({})",
                list.join(", ")
            )),
            Ok(())
        );
        assert!(matches!(check("SELEC 1"), Err(Refused::Invalid(_))));
        assert!(matches!(
            check("SELECT 1; SELECT 2"),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn deep_and_large_statements_are_refused_naming_the_limit() {
        let refused = |sql: String| {
            on_big_stack(move || match check(&sql) {
                Err(Refused::Limit(why)) => why,
                other => panic!("not refused: {other:?}"),
            })
        };
        for op in ["OR", "AND"] {
            let why = refused(chain(op, 200));
            assert!(why.contains("--max-expression-depth"), "{why}");
        }
        let ones = vec!["1"; 15_000].join("+");
        assert!(refused(format!("SELECT {ones}")).contains("--max-statement-tokens"));
        let ones = vec!["1"; 2000].join("+");
        assert!(refused(format!("SELECT {ones}")).contains("--max-expression-depth"));
        let cat = vec!["'a'"; 2000].join(" || ");
        assert!(refused(format!("SELECT {cat}")).contains("--max-expression-depth"));
        let nested = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        assert!(refused(nested).contains("--max-expression-depth"));
        let unions = vec!["SELECT 1"; 2000].join(" UNION ALL ");
        assert!(refused(unions).contains("--max-expression-depth"));
        let subqueries = format!(
            "{}SELECT 1{}",
            "SELECT * FROM (".repeat(300),
            ") s".repeat(300)
        );
        assert!(refused(subqueries).contains("--max-expression-depth"));
        let explained = format!("EXPLAIN {}", chain("OR", 200));
        assert!(refused(explained).contains("--max-expression-depth"));
    }

    #[test]
    fn the_largest_refused_tree_is_dropped_within_a_query_thread_stack() {
        // As deep as the token limit lets a statement be: one `+` per two tokens.
        let limits = Limits::default();
        let n = limits.max_statement_tokens / 2 - 2;
        let sql = format!("SELECT {}", vec!["1"; n].join("+"));
        let why =
            on_big_stack(move || parse_checked(&sql, &GenericDialect {}, &limits).map(|_| ()));
        assert!(matches!(why, Err(Refused::Limit(_))), "{why:?}");
    }

    #[test]
    fn sizes_read_and_print() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(human_bytes(4 << 30), "4 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 B");
    }

    #[test]
    fn a_query_fails_alone_at_its_limit_and_all_queries_at_the_server_limit() {
        let memory = Memory::new(&Limits {
            memory_limit: 1000,
            query_memory_limit: 600,
            ..Limits::default()
        })
        .expect("memory");
        let base = RuntimeEnv::default();
        let a = memory.query_runtime(&base).expect("runtime");
        let b = memory.query_runtime(&base).expect("runtime");
        let ra = MemoryConsumer::new("a").register(&a.memory_pool);
        let rb = MemoryConsumer::new("b").register(&b.memory_pool);
        ra.try_grow(500).expect("within the query limit");
        let err = ra.try_grow(200).expect_err("over the query limit");
        assert!(err.to_string().contains("--query-memory-limit"), "{err}");
        let err = rb.try_grow(600).expect_err("over the server limit");
        assert!(err.to_string().contains("--memory-limit"), "{err}");
        assert_eq!(memory.reserved(), 500);
        rb.try_grow(400).expect("what is left");
        drop(ra);
        assert_eq!(memory.reserved(), 400);
        rb.try_grow(200).expect("freed by the other query");
        drop(rb);
        assert_eq!(memory.reserved(), 0);
    }
}
