//! The Flight SQL service: sign-in, statements, prepared statements, catalog metadata.
//!
//! Every call is made by a signed-in [`Principal`] (a bearer token from the handshake, or
//! basic credentials on the call itself), and every statement is planned in that principal's
//! session ([`rxcube_access::Snapshot::user_session`]), so the scope is part of the plan.
//! Results are planned once, at `GetFlightInfo`; the ticket names the planned statement, is
//! random, and is bound to the session that planned it.
//!
//! Plans are shown in full to administrators only ([`Principal::is_administrator`]). A
//! physical plan holds what a user's scope does not: the rows and bytes of every relation
//! before the scope's filter (`EXPLAIN ANALYZE` counts them, and a binary search on a filter's
//! bound reads other pharmacies' values off them), the warehouse's files, and whether the
//! result cache, shared by every session, held a result (what another user ran). Anyone else
//! is refused `EXPLAIN ANALYZE` (in any spelling) and gets, for `EXPLAIN` in any form, the
//! logical plan of the statement in its own session ([`plain_explain`]): built from the
//! statement, the names and types of its catalog and the optimizer's rewrites only, so it says
//! nothing of data, files, statistics, caches or other scopes; results' `served_by` metadata
//! leaves out the cache for them too.
//!
//! A token is bound to the account that signed in ([`Credential`]), checked against the
//! current directory on every call (one `HEAD` of the directory document tells whether it
//! changed), so a removed user, a name added again, or a changed password, scope or group
//! membership ends its sessions at once. Failed sign-ins are throttled ([`Throttle`]).
//!
//! Statements are bounded ([`Limits`]): measured before planning ([`limits::parse_checked`]),
//! planned on the planning runtime and run on the query runtime (threads with a large stack,
//! apart from the threads serving the network), each under a statement timeout and its own
//! memory pool drawing from the server's. Every operator of a plan yields to the scheduler
//! regularly ([`cooperative`]), so no query holds a thread for long. A result is computed by a
//! task of its own; the network side ([`Results`]) keeps the timeout and the audit entry, and
//! drops the task (stopping the plan's work) when the client goes away or time is up. Planned
//! results not fetched within the ticket lifetime are dropped.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::ParamValues;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use rxcube_access::audit::{AuditLog, Entry, Event};
use rxcube_access::directory::{Credential, DirectoryStore};
use rxcube_access::{Directory, Principal, Snapshot, Stored};
use rxcube_warehouse::Warehouse;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::limits::{self, Limits, Memory, Refused};
use crate::metadata;
use crate::throttle::Throttle;
use crate::wire;

/// A bearer token's session: one account as it signed in.
#[derive(Debug, Clone)]
struct Session {
    credential: Credential,
    created: Instant,
    expires: Instant,
}

/// A statement planned at `GetFlightInfo`, waiting for its `DoGet`.
struct Planned {
    /// The session token (or basic-auth identity) that planned it.
    owner: String,
    user: String,
    client: Option<String>,
    sql: String,
    plans: Vec<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    task: Arc<TaskContext>,
    created: Instant,
}

/// A prepared statement of one session.
#[derive(Debug, Clone)]
struct Prepared {
    owner: String,
    sql: String,
    parameters: Option<RecordBatch>,
    used: Instant,
}

/// A runtime statements are parsed and planned on (`rxcube-plan`), or run on
/// (`rxcube-query`): its threads have a stack of [`limits::QUERY_THREAD_STACK`], and the
/// network is served by other threads, so a busy query holds up neither sign-ins, metadata and
/// timeouts, nor the planning of other statements.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new(name: &str, workers: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .max_blocking_threads(64)
            .thread_stack_size(limits::QUERY_THREAD_STACK)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
    }

    /// Spawns `work`; dropping the returned task aborts it.
    fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<Task<T>, Status> {
        let rt = self
            .0
            .as_ref()
            .ok_or_else(|| Status::unavailable("the server is stopping"))?;
        Ok(Task(rt.spawn(work)))
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may not block in an async context.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A task on the query runtime, aborted when dropped (its caller went away).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Statements each user is planning or running now.
type Running = Arc<Mutex<HashMap<String, usize>>>;

/// One statement of a user being planned or run; counted until dropped.
struct RunningStatement {
    running: Running,
    user: String,
}

impl Drop for RunningStatement {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock()
            && let Some(n) = r.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.remove(&self.user);
            }
        }
    }
}

/// The users' directory as last read, and the stored version it was read from.
struct CurrentDirectory {
    directory: Arc<Directory>,
    tag: Option<String>,
}

pub struct Service {
    me: Weak<Service>,
    warehouse: Warehouse,
    snapshot: RwLock<Arc<Snapshot>>,
    directory: RwLock<CurrentDirectory>,
    /// One directory reload at a time.
    directory_reload: tokio::sync::Mutex<()>,
    access: DirectoryStore,
    sessions: Mutex<HashMap<String, Session>>,
    planned: Mutex<HashMap<String, Planned>>,
    prepared: Mutex<HashMap<String, Prepared>>,
    /// Each principal's session over the current snapshot, built on its first statement.
    user_sessions: Mutex<HashMap<String, (Arc<Snapshot>, SessionContext)>>,
    /// The pages' answers, per snapshot and principal ([`Service::collect_kept`]).
    kept: Mutex<crate::kept::Kept>,
    running: Running,
    throttle: Throttle,
    /// Password checks at once (each argon2 check takes tens of milliseconds and MiBs).
    sign_ins: tokio::sync::Semaphore,
    audit: Arc<AuditLog>,
    token_ttl: Duration,
    limits: Limits,
    memory: Memory,
    planner: QueryRuntime,
    executor: QueryRuntime,
    /// The spellings of the warehouse's location, removed from plans shown to users who are
    /// not administrators ([`plain_explain`]).
    locations: Arc<[String]>,
}

/// A unique, unguessable identifier (256 random bits).
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn flight_error(e: DataFusionError) -> FlightError {
    FlightError::ExternalError(Box::new(e))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn client<T>(r: &Request<T>) -> Option<String> {
    r.remote_addr().map(|a: SocketAddr| a.to_string())
}

/// The status of a failed plan or query, by the kind of failure ([`rxcube_cube::kind_of`]): a
/// statement the caller can fix is `INVALID_ARGUMENT`, a store that cannot be reached or read
/// `UNAVAILABLE` (worth retrying), running out of memory or spill space `RESOURCE_EXHAUSTED`,
/// a server set up wrong `FAILED_PRECONDITION`, anything else `INTERNAL`.
fn query_status(e: &DataFusionError) -> Status {
    use rxcube_cube::ErrorKind;
    match rxcube_cube::kind_of(e) {
        ErrorKind::ResourcesExhausted => match e.find_root() {
            DataFusionError::ResourcesExhausted(why) => {
                Status::resource_exhausted(format!("resources exhausted: {why}"))
            }
            _ => Status::resource_exhausted(e.to_string()),
        },
        ErrorKind::Invalid => Status::invalid_argument(e.to_string()),
        ErrorKind::Unavailable => {
            Status::unavailable(format!("the warehouse could not be read; try again: {e}"))
        }
        ErrorKind::Misconfigured => Status::failed_precondition(e.to_string()),
        ErrorKind::Internal => Status::internal(e.to_string()),
    }
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::ExternalError(b) => match b.downcast::<DataFusionError>() {
            Ok(df) => query_status(&df),
            Err(other) => Status::internal(other.to_string()),
        },
        other => Status::from(other),
    }
}

/// What a principal's session is built from: its name, scope and privileges.
fn session_key(principal: &Principal) -> String {
    format!(
        "{}\n{}\n{:?}",
        principal.name, principal.scope, principal.privileges
    )
}

/// The caller of a call: the key its tickets and handles are bound to (the token, or the
/// basic-auth account), and the principal.
type Caller = (String, Principal);

impl Service {
    pub async fn new(
        warehouse: Warehouse,
        token_ttl: Duration,
        limits: Limits,
    ) -> anyhow::Result<Arc<Self>> {
        let snapshot = Snapshot::load(&warehouse).await?;
        let access = DirectoryStore::new(rxcube_access::store(&warehouse)?);
        let stored = access.load().await?;
        let tag = stored.tag().map(str::to_string);
        let audit = AuditLog::new(warehouse.clone());
        let memory = Memory::new(&limits)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let planner = QueryRuntime::new("rxcube-plan", cores)?;
        // More threads than cores: a query busy in a long step holds one thread, not a core's
        // worth of every other client's work.
        let executor = QueryRuntime::new("rxcube-query", (2 * cores).max(4))?;
        let checks = cores;
        let locations: Arc<[String]> = location_spellings(&warehouse).into();
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            warehouse,
            snapshot: RwLock::new(Arc::new(snapshot)),
            directory: RwLock::new(CurrentDirectory {
                directory: Arc::new(stored.directory),
                tag,
            }),
            directory_reload: tokio::sync::Mutex::new(()),
            access,
            sessions: Mutex::default(),
            planned: Mutex::default(),
            prepared: Mutex::default(),
            user_sessions: Mutex::default(),
            kept: Mutex::default(),
            running: Running::default(),
            throttle: Throttle::new(
                limits.max_failed_logins,
                limits.max_failed_logins_per_address,
            ),
            sign_ins: tokio::sync::Semaphore::new(checks),
            audit,
            token_ttl,
            limits,
            memory,
            planner,
            executor,
            locations,
        }))
    }

    /// The warehouse served.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    pub fn audit(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn arc(&self) -> Result<Arc<Self>, Status> {
        self.me
            .upgrade()
            .ok_or_else(|| Status::unavailable("the server is stopping"))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn loaded_directory(&self) -> (Arc<Directory>, Option<String>) {
        let read = |d: &CurrentDirectory| (d.directory.clone(), d.tag.clone());
        self.directory
            .read()
            .map(|d| read(&d))
            .unwrap_or_else(|e| read(&e.into_inner()))
    }

    /// The directory as stored now: the loaded one if the document is unchanged (one `HEAD`),
    /// else read again (ending the sessions it no longer holds). Fails closed: a directory
    /// that cannot be checked signs nobody in.
    async fn current_directory(&self) -> Result<Arc<Directory>, Status> {
        let unavailable = |e: rxcube_access::AccessError| {
            tracing::warn!("cannot check the user directory: {e}");
            Status::unavailable(format!("cannot check the user directory: {e}"))
        };
        let now = self.access.current_tag().await.map_err(unavailable)?;
        let (directory, tag) = self.loaded_directory();
        if tag == now {
            return Ok(directory);
        }
        let _one = self.directory_reload.lock().await;
        let (directory, tag) = self.loaded_directory();
        if tag == now {
            return Ok(directory);
        }
        let stored = self.access.load().await.map_err(unavailable)?;
        Ok(self.install_directory(stored))
    }

    /// Makes `stored` the current directory; ends the sessions it no longer holds.
    fn install_directory(&self, stored: Stored) -> Arc<Directory> {
        let tag = stored.tag().map(str::to_string);
        let directory = Arc::new(stored.directory);
        if let Ok(mut d) = self.directory.write() {
            *d = CurrentDirectory {
                directory: directory.clone(),
                tag,
            };
        }
        let ended: Vec<String> = self
            .sessions
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, v)| directory.session_principal(&v.credential).is_none())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for token in &ended {
            self.end_session(token);
        }
        directory
    }

    /// Forgets a session with its tickets and prepared statements.
    fn end_session(&self, token: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(token);
        }
        if let Ok(mut p) = self.planned.lock() {
            p.retain(|_, v| v.owner != token);
        }
        if let Ok(mut p) = self.prepared.lock() {
            p.retain(|_, v| v.owner != token);
        }
    }

    /// Reloads the warehouse (new table and rollup versions) and the users. Run periodically.
    pub async fn reload(&self) -> Result<(), rxcube_access::AccessError> {
        let snapshot = Snapshot::load(&self.warehouse).await?;
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(snapshot);
        }
        let _one = self.directory_reload.lock().await;
        let stored = self.access.load().await?;
        self.install_directory(stored);
        Ok(())
    }

    /// The rollups of the snapshot served now, fresh or stale.
    pub fn rollups(&self) -> Arc<rxcube_cube::rollup::Rollups> {
        self.snapshot().rollups.clone()
    }

    /// Brings the rollups up to date (`rxcube rollup refresh`, one atomic commit per rollup)
    /// on the query runtime, with a memory pool of one query drawn from the server's, then
    /// serves the new snapshot: statements already planned finish on the old one.
    pub async fn refresh_rollups(&self) -> anyhow::Result<Vec<rxcube_cube::rollup::Report>> {
        let me = self.arc()?;
        let job = self.executor.spawn(async move {
            let def = Arc::new(rxcube_cube::definition_for(&me.warehouse)?);
            let runtime = me.memory.query_runtime(&Default::default())?;
            let ctx = rxcube_cube::base_session_in(runtime);
            let mut progress = |rollup: &str, what: &str| tracing::debug!(rollup, "{what}");
            let mode = rxcube_cube::rollup::Mode::Refresh;
            anyhow::Ok(
                rxcube_cube::rollup::run_in(ctx, &me.warehouse, def, mode, &mut progress).await?,
            )
        })?;
        let reports = job.await??;
        self.reload().await?;
        Ok(reports)
    }

    /// Forgets expired sessions, tickets not fetched in time, idle prepared statements and old
    /// sign-in failures. Run every second or so.
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .sessions
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, v)| v.expires <= now)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for token in &expired {
            self.end_session(token);
        }
        let stale: Vec<Planned> = match self.planned.lock() {
            Ok(mut p) => {
                let keys: Vec<String> = p
                    .iter()
                    .filter(|(_, v)| now.duration_since(v.created) >= self.limits.ticket_ttl)
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.iter().filter_map(|k| p.remove(k)).collect()
            }
            Err(_) => Vec::new(),
        };
        // Dropped outside the lock.
        drop(stale);
        if let Ok(mut p) = self.prepared.lock() {
            p.retain(|_, v| now.duration_since(v.used) < limits::PREPARED_IDLE_TTL);
        }
        self.throttle.sweep(now);
    }

    /// `principal`'s session over `snapshot`: built once per snapshot and principal (name,
    /// scope and privileges, so a changed user gets a new one), then shared by its statements.
    async fn user_session(
        &self,
        snapshot: &Arc<Snapshot>,
        principal: &Principal,
    ) -> Result<SessionContext, Status> {
        let key = session_key(principal);
        if let Ok(cache) = self.user_sessions.lock()
            && let Some((built_on, ctx)) = cache.get(&key)
            && Arc::ptr_eq(built_on, snapshot)
        {
            return Ok(ctx.clone());
        }
        let ctx = snapshot.user_session(principal).await.map_err(internal)?;
        if let Ok(mut cache) = self.user_sessions.lock() {
            cache.retain(|_, (built_on, _)| Arc::ptr_eq(built_on, snapshot));
            cache.insert(key, (snapshot.clone(), ctx.clone()));
        }
        Ok(ctx)
    }

    /// Checks `user:password`, recording the login or the failure; refuses at once (without
    /// checking) while the name or the address must wait after failed attempts.
    async fn sign_in<T>(
        &self,
        user: &str,
        password: &str,
        request: &Request<T>,
    ) -> Result<(Principal, Credential), Status> {
        self.sign_in_from(user, password, request.remote_addr())
            .await
    }

    /// Checks `user:password` for a client at `remote` (the web pages' sign-in, and the
    /// handshake's): the same throttle, directory and audit entries as every sign-in.
    pub async fn sign_in_from(
        &self,
        user: &str,
        password: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(Principal, Credential), Status> {
        let client = remote.map(|a| a.to_string());
        let address = remote.map(|a| a.ip());
        let _check = self
            .sign_ins
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is stopping"))?;
        if let Some(locked) = self.throttle.locked(user, address, Instant::now()) {
            let why = format!(
                "too many failed sign-ins for {}: retry in {} s",
                locked.who,
                locked.seconds()
            );
            let mut e = Entry::new(user, Event::Denied);
            e.client = client;
            e.detail = Some(why.clone());
            self.audit.record(e);
            return Err(Status::resource_exhausted(why));
        }
        let directory = self.current_directory().await?;
        let checked = {
            let directory = directory.clone();
            let (user, password) = (user.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || directory.authenticate(&user, &password))
                .await
                .map_err(internal)?
        };
        match checked.map(|p| (directory.credential(&p.name), p)) {
            Ok((Some(credential), principal)) => {
                self.throttle.succeeded(user);
                let mut e = Entry::new(user, Event::Login);
                e.client = client;
                self.audit.record(e);
                Ok((principal, credential))
            }
            Ok((None, _)) => Err(Status::unauthenticated("invalid user name or password")),
            Err(refusal) => {
                if refusal != rxcube_access::Refusal::NoQueryPrivilege {
                    self.throttle.failed(user, address, Instant::now());
                }
                let mut e = Entry::new(user, Event::LoginFailed);
                e.client = client;
                e.detail = Some(refusal.to_string());
                self.audit.record(e);
                Err(Status::unauthenticated("invalid user name or password"))
            }
        }
    }

    /// The principal a session bound to `credential` stands for now (the directory as stored
    /// now, one `HEAD`), or `None` when that session is over: the account was removed, added
    /// again, or changed its password, scope or groups, or may no longer query.
    pub async fn current_principal(
        &self,
        credential: &Credential,
    ) -> Result<Option<Principal>, Status> {
        Ok(self
            .current_directory()
            .await?
            .session_principal(credential))
    }

    /// What `principal`'s scope reaches in the org of the snapshot served now.
    pub fn reach(&self, principal: &Principal) -> rxcube_access::Reach {
        self.snapshot().org.reach(&principal.scope)
    }

    /// Runs the query `sql` for `principal` as a Flight SQL statement of its runs, and collects
    /// its result: in its scoped session, measured and checked before planning, planned on the
    /// planning runtime and run on the query runtime under the statement timeout with a memory
    /// pool of its own, counted against its running statements (the key `session` names the
    /// front end's session). Refusals and failures are audited as for Flight SQL; results are
    /// collected whole (for the web pages, whose queries are small), and not audited one by
    /// one.
    pub async fn collect(
        &self,
        principal: &Principal,
        session: &str,
        sql: &str,
        client: Option<String>,
    ) -> Result<Vec<RecordBatch>, Status> {
        let caller: Caller = (session.to_string(), principal.clone());
        let me = self.arc()?;
        let (c, s, cl) = (caller.clone(), sql.to_string(), client.clone());
        let (plan, task) = self
            .planning(&caller, sql, client.clone(), async move {
                let (ctx, logical) = me.logical(&c, &s, cl.clone()).await?;
                if matches!(logical, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
                    return Err(me.deny(&c, &s, cl, "plans are not collected"));
                }
                let plan = DataFrame::new(ctx.state(), logical)
                    .create_physical_plan()
                    .await
                    .map_err(|e| me.plan_failed(&c, &s, cl.clone(), &e))?;
                Ok((cooperative(plan).map_err(internal)?, ctx.task_ctx()))
            })
            .await?;
        let running = self.start_running(&caller, sql, client.clone())?;
        let task = self.query_context(&task)?;
        let work = self.executor.spawn(async move {
            let _running = running;
            datafusion::physical_plan::collect(plan, task).await
        })?;
        let timeout = self.limits.statement_timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(Ok(batches))) => Ok(batches),
            Ok(Ok(Err(e))) => {
                Err(self.refuse(&caller, sql, client, Event::Error, query_status(&e)))
            }
            Ok(Err(e)) => Err(self.refuse(&caller, sql, client, Event::Error, internal(e))),
            Err(_) => Err(self.refuse(
                &caller,
                sql,
                client,
                Event::Error,
                Status::deadline_exceeded(format!(
                    "statement timeout: the query took longer than {} s (--statement-timeout)",
                    timeout.as_secs_f64()
                )),
            )),
        }
    }

    /// [`Service::collect`] for a statement whose answer depends only on the snapshot and the
    /// principal's session (the pages' statements over the cube relations and the contract
    /// tables; not the system tables, `now()` or `random()`): its answer is kept for that
    /// snapshot and principal ([`crate::kept`]) and read back when the same principal asks
    /// again, without planning. Only answers computed wholly on one snapshot are kept.
    pub async fn collect_kept(
        &self,
        principal: &Principal,
        session: &str,
        sql: &str,
        client: Option<String>,
    ) -> Result<Arc<[RecordBatch]>, Status> {
        let key = format!("{}\n{sql}", session_key(principal));
        let before = self.snapshot().version.clone();
        if let Some(hit) = self.kept.lock().ok().and_then(|k| k.get(&before, &key)) {
            return Ok(hit);
        }
        let batches: Arc<[RecordBatch]> =
            self.collect(principal, session, sql, client).await?.into();
        // The statement is planned on the snapshot served at some moment in between; table
        // and rollup versions only grow, so the same version before and after is its own.
        let after = self.snapshot().version.clone();
        if before == after
            && let Ok(mut kept) = self.kept.lock()
        {
            kept.insert(&after, key, &batches);
        }
        Ok(batches)
    }

    /// Who is calling: a valid bearer token's account as it is now, or valid basic credentials.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("sign in first: no authorization header"))?;
        if let Some(token) = header.strip_prefix("Bearer ").map(str::trim) {
            let session = self
                .sessions
                .lock()
                .ok()
                .and_then(|s| s.get(token).cloned())
                .ok_or_else(|| {
                    Status::unauthenticated("unknown or expired token: sign in again")
                })?;
            if session.expires <= Instant::now() {
                self.end_session(token);
                return Err(Status::unauthenticated(
                    "the token has expired: sign in again",
                ));
            }
            let directory = self.current_directory().await?;
            let Some(principal) = directory.session_principal(&session.credential) else {
                self.end_session(token);
                return Err(Status::unauthenticated(format!(
                    "the account '{}' signed in to was removed or changed (password, scope \
                     or groups) since, or may no longer query: sign in again",
                    session.credential.name
                )));
            };
            return Ok((token.to_string(), principal));
        }
        if let Some((user, password)) = basic(header) {
            let (principal, credential) = self.sign_in(&user, &password, request).await?;
            return Ok((
                format!("basic:{user}:{:016x}", credential.fingerprint()),
                principal,
            ));
        }
        Err(Status::unauthenticated(
            "authorization must be Basic or Bearer",
        ))
    }

    /// Records a refused statement (`event`: denied, or error) and returns `status`.
    fn refuse(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
        event: Event,
        status: Status,
    ) -> Status {
        let mut e = Entry::new(&caller.1.name, event);
        e.sql = Some(sql.to_string());
        e.client = client;
        e.detail = Some(status.message().to_string());
        self.audit.record(e);
        self.as_told_to(&caller.1, status)
    }

    /// `status` as `principal` may read it: for a user who is not an administrator, with every
    /// spelling of the warehouse's location written `<warehouse>` (an error of the store names
    /// the files it failed on). The audit log keeps the full message.
    fn as_told_to(&self, principal: &Principal, status: Status) -> Status {
        if principal.is_administrator() {
            return status;
        }
        redacted(status, &self.locations)
    }

    fn deny(&self, caller: &Caller, sql: &str, client: Option<String>, why: &str) -> Status {
        self.refuse(
            caller,
            sql,
            client,
            Event::Denied,
            Status::permission_denied(why.to_string()),
        )
    }

    fn failed(&self, caller: &Caller, sql: &str, client: Option<String>, why: &str) -> Status {
        self.refuse(
            caller,
            sql,
            client,
            Event::Error,
            Status::invalid_argument(why.to_string()),
        )
    }

    /// Counts a statement of the caller as planning or running, refused beyond the limit.
    fn start_running(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
    ) -> Result<RunningStatement, Status> {
        let user = caller.1.name.clone();
        let limit = self.limits.max_running_per_user;
        let admitted = self.running.lock().map(|mut r| {
            let n = r.entry(user.clone()).or_default();
            if *n >= limit {
                false
            } else {
                *n += 1;
                true
            }
        });
        if admitted.unwrap_or(false) {
            return Ok(RunningStatement {
                running: self.running.clone(),
                user,
            });
        }
        Err(self.refuse(
            caller,
            sql,
            client,
            Event::Denied,
            Status::resource_exhausted(format!(
                "user '{user}' is already planning or running {limit} statements, the most \
                 the server allows at once (--max-running-per-user): wait for one to finish"
            )),
        ))
    }

    fn open_tickets(&self, owner: &str) -> usize {
        self.planned
            .lock()
            .map(|p| p.values().filter(|v| v.owner == owner).count())
            .unwrap_or(0)
    }

    fn too_many_tickets(&self, caller: &Caller, sql: &str, client: Option<String>) -> Status {
        self.refuse(
            caller,
            sql,
            client,
            Event::Denied,
            Status::resource_exhausted(format!(
                "this session already holds {} results planned and not fetched, the most the \
                 server allows (--max-open-tickets): fetch them (DoGet), or let them expire \
                 {} s after planning (--ticket-ttl)",
                self.limits.max_open_tickets,
                self.limits.ticket_ttl.as_secs()
            )),
        )
    }

    /// Runs `work` (parsing and planning a statement of `caller`) on the planning runtime,
    /// within the statement timeout (kept here, off the planning threads); abandoned if the
    /// call is (the client went away).
    async fn planning<T: Send + 'static>(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
        work: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        let _running = self.start_running(caller, sql, client.clone())?;
        let timeout = self.limits.statement_timeout;
        let task = self.planner.spawn(work)?;
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(done)) => done,
            Err(_) => Err(self.refuse(
                caller,
                sql,
                client,
                Event::Error,
                Status::deadline_exceeded(format!(
                    "statement timeout: planning took longer than {} s (--statement-timeout)",
                    timeout.as_secs_f64()
                )),
            )),
            Ok(Err(e)) => {
                tracing::error!(sql, "planning failed: {e}");
                Err(self.refuse(
                    caller,
                    sql,
                    client,
                    Event::Error,
                    Status::internal(format!("the statement could not be planned: {e}")),
                ))
            }
        }
    }

    /// The caller's session and the logical plan of `sql` in it, refused when it is over a
    /// limit, reads a relation outside the caller's view or is not a query. Run on the query
    /// runtime.
    async fn logical(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
    ) -> Result<(SessionContext, LogicalPlan), Status> {
        let snapshot = self.snapshot();
        let ctx = self.user_session(&snapshot, &caller.1).await?;
        let state = ctx.state();
        let parsed = {
            let dialect = &state.config().options().sql_parser.dialect;
            let dialect = datafusion::sql::sqlparser::dialect::dialect_from_str(dialect)
                .ok_or_else(|| Status::internal(format!("unknown SQL dialect {dialect}")))?;
            limits::parse_checked(sql, dialect.as_ref(), &self.limits)
        };
        let statement = parsed.map_err(|refused| match refused {
            Refused::Limit(why) => self.refuse(
                caller,
                sql,
                client.clone(),
                Event::Denied,
                Status::resource_exhausted(why),
            ),
            Refused::Invalid(why) => self.failed(caller, sql, client.clone(), &why),
        })?;
        if !reads(&statement) {
            return Err(self.deny(
                caller,
                sql,
                client,
                "rxcube serves queries only (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE): \
                 the server is read-only",
            ));
        }
        let administrator = caller.1.is_administrator();
        if !administrator && analyzes(&statement) {
            return Err(self.deny(caller, sql, client, ANALYZE_REFUSED));
        }
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?;
        for r in references {
            if !ctx.table_exist(r.clone()).unwrap_or(false)
                && snapshot.home.table_exist(r.clone()).unwrap_or(false)
            {
                return Err(self.deny(
                    caller,
                    sql,
                    client,
                    &format!(
                        "user '{}' (scope {}) may not read {r}",
                        caller.1.name, caller.1.scope
                    ),
                ));
            }
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| self.plan_failed(caller, sql, client.clone(), &e))?;
        // Whatever spelling planned to a measured plan, or to a plan shown some other way than
        // `plain_explain` shows it, is refused as well.
        if !administrator && !plainly_explained(&plan) {
            return Err(self.deny(caller, sql, client, ANALYZE_REFUSED));
        }
        Ok((ctx, plan))
    }

    fn plan_failed(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
        e: &DataFusionError,
    ) -> Status {
        self.refuse(caller, sql, client, Event::Error, query_status(e))
    }

    /// Plans `sql` (with each parameter set, if any) and keeps it for a `DoGet`. Run on the
    /// query runtime.
    async fn plan(
        &self,
        caller: &Caller,
        sql: &str,
        parameters: Option<&RecordBatch>,
        client: Option<String>,
    ) -> Result<(String, SchemaRef), Status> {
        let (ctx, logical) = self.logical(caller, sql, client.clone()).await?;
        let administrator = caller.1.is_administrator();
        let sets = match parameters {
            Some(batch) => {
                let types = logical.get_parameter_types().map_err(internal)?;
                wire::parameter_sets(batch, &types)
                    .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?
            }
            None => vec![ParamValues::List(vec![])],
        };
        let mut plans = Vec::new();
        for values in sets {
            let logical = if parameters.is_some() {
                logical.clone().with_param_values(values)
            } else {
                Ok(logical.clone())
            }
            .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?;
            let logical = if administrator {
                logical
            } else {
                plain_explain(&ctx, logical, &self.locations)
                    .map_err(|e| self.plan_failed(caller, sql, client.clone(), &e))?
            };
            let plan = DataFrame::new(ctx.state(), logical)
                .create_physical_plan()
                .await
                .map_err(|e| self.plan_failed(caller, sql, client.clone(), &e))?;
            plans.push(cooperative(plan).map_err(internal)?);
        }
        let first = plans
            .first()
            .ok_or_else(|| Status::invalid_argument("no parameter set was bound"))?;
        let mut schema = first.schema().as_ref().clone();
        let served = if administrator {
            rxcube_cube::relation::served_by(first)
        } else {
            rxcube_cube::relation::served_by_uncached(first)
        };
        if !served.is_empty() {
            let mut metadata = schema.metadata().clone();
            metadata.insert(rxcube_cube::SERVED_BY_KEY.to_string(), served.join("\n"));
            schema = schema.with_metadata(metadata);
        }
        let schema = wire::plain_schema(&schema);
        let handle = secret();
        let planned = Planned {
            owner: caller.0.clone(),
            user: caller.1.name.clone(),
            client: client.clone(),
            sql: sql.to_string(),
            plans,
            schema: schema.clone(),
            task: ctx.task_ctx(),
            created: Instant::now(),
        };
        let refused = match self.planned.lock() {
            Ok(mut p) => {
                let open = p.values().filter(|v| v.owner == caller.0).count();
                if open >= self.limits.max_open_tickets {
                    Some(planned)
                } else {
                    p.insert(handle.clone(), planned);
                    None
                }
            }
            Err(_) => return Err(Status::internal("the ticket table is unusable")),
        };
        if let Some(planned) = refused {
            drop(planned);
            return Err(self.too_many_tickets(caller, sql, client));
        }
        Ok((handle, schema))
    }

    /// Plans `sql` for a `GetFlightInfo`: refused at once when the session holds its most open
    /// tickets, else planned on the query runtime.
    async fn plan_statement(
        &self,
        caller: Caller,
        sql: String,
        parameters: Option<RecordBatch>,
        client: Option<String>,
    ) -> Result<(String, SchemaRef), Status> {
        if self.open_tickets(&caller.0) >= self.limits.max_open_tickets {
            return Err(self.too_many_tickets(&caller, &sql, client));
        }
        let me = self.arc()?;
        let (c, s, cl) = (caller.clone(), sql.clone(), client.clone());
        self.planning(&caller, &sql, client, async move {
            me.plan(&c, &s, parameters.as_ref(), cl).await
        })
        .await
    }

    /// The task context one query runs with: its session's, with a memory pool of its own.
    fn query_context(&self, planned: &TaskContext) -> Result<Arc<TaskContext>, Status> {
        let runtime = self
            .memory
            .query_runtime(&planned.runtime_env())
            .map_err(internal)?;
        Ok(Arc::new(TaskContext::new(
            planned.task_id(),
            planned.session_id(),
            planned.session_config().clone(),
            planned.scalar_functions().clone(),
            planned.higher_order_functions().clone(),
            planned.aggregate_functions().clone(),
            planned.window_functions().clone(),
            runtime,
        )))
    }

    fn flight_info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// A metadata result: its schema in the `FlightInfo`, the command itself as the ticket.
    fn metadata_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        self.flight_info(schema, command.as_any().encode_to_vec(), descriptor)
    }

    fn stream_batches(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Response<<Self as FlightService>::DoGetStream> {
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream)
            .map_err(Status::from);
        Response::new(Box::pin(encoded))
    }

    fn prepared(&self, caller: &Caller, handle: &[u8]) -> Result<Prepared, Status> {
        let key = String::from_utf8_lossy(handle).to_string();
        let mut prepared = self.prepared.lock().map_err(internal)?;
        match prepared.get_mut(&key) {
            Some(p) if p.owner == caller.0 => {
                p.used = Instant::now();
                Ok(p.clone())
            }
            _ => Err(Status::not_found(
                "unknown prepared statement handle (closed, expired, or another session's)",
            )),
        }
    }

    /// The relations of the caller's session: (schema, table, table type, arrow schema).
    async fn relations(
        &self,
        caller: &Caller,
    ) -> Result<(String, Vec<(String, String, &'static str, SchemaRef)>), Status> {
        let ctx = self.user_session(&self.snapshot(), &caller.1).await?;
        let (catalog_name, catalog) = rxcube_cube::default_catalog(&ctx)
            .map_err(|_| Status::internal("the catalog is missing"))?;
        let mut out = Vec::new();
        let mut schemas = catalog.schema_names();
        schemas.sort();
        for s in schemas {
            let Some(schema) = catalog.schema(&s) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for t in names {
                if let Ok(Some(table)) = schema.table(&t).await {
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::Base => "TABLE",
                        datafusion::datasource::TableType::View => "VIEW",
                        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    let kind = if s == rxcube_cube::CUBE_SCHEMA {
                        "VIEW"
                    } else {
                        kind
                    };
                    out.push((s.clone(), t, kind, wire::plain_schema(&table.schema())));
                }
            }
        }
        Ok((catalog_name, out))
    }
}

/// `plan` with every operator's output passing through a [`CooperativeExec`]: each batch an
/// operator hands on spends the task's scheduling budget, so a task running a long pipeline
/// (a join feeding an aggregate, say) yields to the runtime regularly, instead of holding its
/// thread until the query ends. Other queries keep their share, and a query that is dropped
/// (timed out, its client gone) stops at its next yield.
///
/// [`CooperativeExec`]: datafusion::physical_plan::coop::CooperativeExec
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    use datafusion::physical_plan::execution_plan::SchedulingType;
    plan.transform_up(|node| {
        let any = node.as_ref() as &dyn std::any::Any;
        let operator = !node.children().is_empty()
            && node.properties().scheduling_type == SchedulingType::NonCooperative
            && !any.is::<CooperativeExec>()
            && !any.is::<datafusion::physical_plan::analyze::AnalyzeExec>();
        Ok(if operator {
            Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
        } else {
            Transformed::no(node)
        })
    })
    .map(|t| t.data)
}

/// The audit entry of one query: recorded as a query when its result was sent in full, as an
/// error when it failed or timed out, and as a cancelled error when the client went away first.
struct QueryAudit {
    audit: Arc<AuditLog>,
    entry: Option<Entry>,
    started: Instant,
    rows: Arc<AtomicI64>,
}

impl QueryAudit {
    fn finish(&mut self, failure: Option<&str>) {
        if let Some(mut e) = self.entry.take() {
            if let Some(why) = failure {
                e.event = Event::Error;
                e.detail = Some(why.to_string());
            }
            e.rows = Some(self.rows.load(Ordering::Relaxed));
            e.millis = Some(self.started.elapsed().as_secs_f64() * 1e3);
            self.audit.record(e);
        }
    }
}

impl Drop for QueryAudit {
    fn drop(&mut self) {
        if self.entry.is_some() {
            let why = format!(
                "cancelled: the client went away after {} rows",
                self.rows.load(Ordering::Relaxed)
            );
            self.finish(Some(&why));
        }
    }
}

/// Runs a planned statement on the query runtime, sending its encoded result into `tx` until
/// it ends, fails, or the receiver is gone; counts the rows into `rows`. Its outcome is the
/// stream's last word.
async fn produce(
    plans: Vec<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    task: Arc<TaskContext>,
    tx: tokio::sync::mpsc::Sender<Result<FlightData, Status>>,
    rows: Arc<AtomicI64>,
    running: RunningStatement,
) -> Result<(), Status> {
    let _running = running;
    let out_schema = schema.clone();
    let batches = futures::stream::iter(plans)
        .then(move |plan| {
            let task = task.clone();
            async move { datafusion::physical_plan::execute_stream(plan, task) }
        })
        .map_ok(|s| s.map_err(flight_error))
        .map_err(flight_error)
        .try_flatten()
        .and_then(move |b| {
            let schema = schema.clone();
            let rows = rows.clone();
            async move {
                rows.fetch_add(b.num_rows() as i64, Ordering::Relaxed);
                wire::plain_batch(b, &schema).map_err(flight_error)
            }
        });
    let mut encoded = FlightDataEncoderBuilder::new()
        .with_schema(out_schema)
        .build(batches);
    while let Some(item) = encoded.next().await {
        let data = item.map_err(flight_status)?;
        if tx.send(Ok(data)).await.is_err() {
            return Err(Status::cancelled("the client went away"));
        }
    }
    Ok(())
}

/// A result as the client reads it: the data [`produce`] sends, then its outcome. Polled on the
/// network side, so it keeps the statement timeout and the audit entry even while the query's
/// threads are busy. Dropping it (the client went away) or a timeout drops the task, which
/// drops the plan's streams and stops their work.
struct Results {
    rx: tokio::sync::mpsc::Receiver<Result<FlightData, Status>>,
    task: Option<Task<Result<(), Status>>>,
    audited: QueryAudit,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// For a reader who is not an administrator, the spellings of the warehouse's location
    /// removed from a failure's message (the audit log keeps it whole).
    redact: Option<Arc<[String]>>,
}

impl Results {
    fn end(&mut self, failure: Option<Status>) -> Poll<Option<Result<FlightData, Status>>> {
        self.task = None;
        self.rx.close();
        self.audited.finish(failure.as_ref().map(|s| s.message()));
        let failure = match &self.redact {
            Some(locations) => failure.map(|s| redacted(s, locations)),
            None => failure,
        };
        Poll::Ready(failure.map(Err))
    }
}

impl Stream for Results {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.task.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.rx.poll_recv(cx) {
            if let Some(item) = item {
                return Poll::Ready(Some(item));
            }
            if let Some(task) = self.task.as_mut()
                && let Poll::Ready(outcome) = Pin::new(task).poll(cx)
            {
                return self.end(match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(status)) => Some(status),
                    Err(e) => Some(Status::internal(format!("the query failed: {e}"))),
                });
            }
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let status = Status::deadline_exceeded(format!(
                "statement timeout: the query ran longer than {} s (--statement-timeout) and \
                 was stopped",
                self.timeout.as_secs_f64()
            ));
            return self.end(Some(status));
        }
        Poll::Pending
    }
}

/// Whether a statement only reads.
fn reads(s: &Statement) -> bool {
    match s {
        Statement::Statement(s) => is_query(s),
        Statement::Explain(e) => reads(&e.statement),
        _ => false,
    }
}

/// Whether a SQL statement only reads.
fn is_query(s: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement as S;
    match s {
        S::Query(_) | S::ShowTables { .. } | S::ShowColumns { .. } | S::ExplainTable { .. } => true,
        S::Explain { statement, .. } => is_query(statement),
        _ => false,
    }
}

/// Why users who are not administrators may not run `EXPLAIN ANALYZE`.
const ANALYZE_REFUSED: &str = "EXPLAIN ANALYZE is for administrators: its row counts and timings \
     describe rows outside your scope and what other users ran; use EXPLAIN, which shows the \
     plan of your statement";

/// Whether a statement runs its plan to measure it (`EXPLAIN ANALYZE`, in any spelling, at any
/// depth).
fn analyzes(s: &Statement) -> bool {
    match s {
        Statement::Explain(e) => e.options.analyze || analyzes(&e.statement),
        Statement::Statement(s) => sql_analyzes(s),
        _ => false,
    }
}

fn sql_analyzes(s: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement as S;
    match s {
        S::Explain {
            analyze, statement, ..
        } => *analyze || sql_analyzes(statement),
        _ => false,
    }
}

/// Whether `plan` is one [`plain_explain`] shows as users who are not administrators may see
/// it: no `EXPLAIN ANALYZE` anywhere, and `EXPLAIN` only at the top.
fn plainly_explained(plan: &LogicalPlan) -> bool {
    let inner = match plan {
        LogicalPlan::Explain(e) => e.plan.as_ref(),
        other => other,
    };
    let mut plain = true;
    let _ = inner.apply_with_subqueries(|p| {
        if matches!(p, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
            plain = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    plain
}

/// What a user who is not an administrator gets for `plan`: an `EXPLAIN` becomes a result of
/// DataFusion's shape (`plan_type`, `plan`) holding only the logical plan of the explained
/// statement in the user's session: optimized (`logical_plan`; with `VERBOSE` also the
/// `initial_logical_plan`, both with their schemas), as text, JSON (`FORMAT pgjson`) or
/// Graphviz (`FORMAT graphviz`), every spelling of the warehouse's location (`locations`)
/// written `<warehouse>`. No physical plan is shown: its operators name the warehouse's files,
/// carry statistics (rows and bytes before the scope's filter) and say which results the cache
/// held. A logical plan is built from the statement, the catalog's names and types and the
/// optimizer's rewrites, never from data (scopes are applied inside the relations, so the
/// user's scope is not shown either). Any other plan is returned unchanged.
fn plain_explain(
    ctx: &SessionContext,
    plan: LogicalPlan,
    locations: &[String],
) -> datafusion::error::Result<LogicalPlan> {
    let LogicalPlan::Explain(e) = plan else {
        return Ok(plan);
    };
    let state: SessionState = ctx.state();
    let optimized = state.optimize(&e.plan)?;
    let mut rows: Vec<(&str, String)> = Vec::new();
    if e.verbose {
        rows.push((
            "initial_logical_plan",
            e.plan.display_indent_schema().to_string(),
        ));
        rows.push((
            "logical_plan",
            optimized.display_indent_schema().to_string(),
        ));
    } else {
        let text = match e.explain_format {
            ExplainFormat::PostgresJSON => optimized.display_pg_json().to_string(),
            ExplainFormat::Graphviz => optimized.display_graphviz().to_string(),
            ExplainFormat::Indent | ExplainFormat::Tree => optimized.display_indent().to_string(),
        };
        rows.push(("logical_plan", text));
    }
    let schema = LogicalPlan::explain_schema();
    let plan_types = arrow::array::StringArray::from_iter_values(rows.iter().map(|r| r.0));
    let plans = arrow::array::StringArray::from_iter_values(
        rows.iter()
            .map(|(_, text)| without_locations(text, locations)),
    );
    let batch = RecordBatch::try_new(schema, vec![Arc::new(plan_types), Arc::new(plans)])?;
    Ok(ctx.read_batch(batch)?.into_unoptimized_plan())
}

/// The ways a plan may spell the location of `warehouse`: its URL, and its path (local:
/// absolute, without the leading `/` as object stores print it, and decoded; remote: the
/// bucket and prefix), longest first.
fn location_spellings(warehouse: &Warehouse) -> Vec<String> {
    let root = warehouse.root();
    let path = root.path().trim_end_matches('/');
    let mut out = vec![root.as_str().trim_end_matches('/').to_string()];
    if root.scheme() == "file" {
        out.push(path.to_string());
        out.push(path.trim_start_matches('/').to_string());
        if let Ok(local) = root.to_file_path() {
            let local = local.to_string_lossy().trim_end_matches('/').to_string();
            out.push(local.trim_start_matches('/').to_string());
            out.push(local);
        }
    } else if let Some(host) = root.host_str() {
        out.push(format!("{host}{path}"));
        // Object store errors name a file by its key: the prefix, then the table's folder.
        let prefix = path.trim_start_matches('/');
        if !prefix.is_empty() {
            out.push(format!("{prefix}/"));
        }
    }
    // Too short to name anything (a root of `/`, or of a bucket).
    out.retain(|s| s.len() > 1 && s.contains('/'));
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `status` with every one of `locations` written `<warehouse>` in its message.
fn redacted(status: Status, locations: &[String]) -> Status {
    let message = without_locations(status.message(), locations);
    if message == status.message() {
        return status;
    }
    Status::new(status.code(), message)
}

/// `text` with every one of `locations` written `<warehouse>` (`<warehouse>/` for one that
/// ends with a `/`), where it starts a word: `data/` is a location in `data/rx_fills`, not in
/// `metadata/`.
fn without_locations(text: &str, locations: &[String]) -> String {
    let starts_word = |t: &str, at: usize| {
        !t[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || "_.-".contains(c))
    };
    locations.iter().fold(text.to_string(), |t, l| {
        let with = if l.ends_with('/') {
            "<warehouse>/"
        } else {
            "<warehouse>"
        };
        let mut out = String::with_capacity(t.len());
        let mut rest = 0;
        for (at, _) in t.match_indices(l.as_str()) {
            if at >= rest && starts_word(&t, at) {
                out.push_str(&t[rest..at]);
                out.push_str(with);
                rest = at + l.len();
            }
        }
        out.push_str(&t[rest..]);
        out
    })
}

/// `user:password` from a basic authorization header (padded or not).
fn basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('='))
        })
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("the handshake needs basic credentials"))?;
        let (user, password) = basic(header).ok_or_else(|| {
            Status::unauthenticated("authorization must be Basic base64(user:password)")
        })?;
        let (principal, credential) = self.sign_in(&user, &password, &request).await?;
        let token = secret();
        let now = Instant::now();
        let evicted: Vec<String> = match self.sessions.lock() {
            Ok(mut s) => {
                let mut own: Vec<(Instant, String)> = s
                    .iter()
                    .filter(|(_, v)| v.credential.name == principal.name)
                    .map(|(k, v)| (v.created, k.clone()))
                    .collect();
                own.sort();
                let keep = self.limits.max_sessions_per_user.max(1) - 1;
                let evicted: Vec<String> =
                    own.into_iter().rev().skip(keep).map(|(_, k)| k).collect();
                s.insert(
                    token.clone(),
                    Session {
                        credential,
                        created: now,
                        expires: now + self.token_ttl,
                    },
                );
                evicted
            }
            Err(_) => Vec::new(),
        };
        for old in &evicted {
            self.end_session(old);
        }
        let result = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream = futures::stream::iter(vec![Ok(result)]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(stream));
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(internal)?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let (handle, schema) = self
            .plan_statement(caller, query.query, None, client(&request))
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        self.flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let prepared = self.prepared(&caller, &query.prepared_statement_handle)?;
        let (handle, schema) = self
            .plan_statement(caller, prepared.sql, prepared.parameters, client(&request))
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        self.flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let key = String::from_utf8_lossy(&ticket.statement_handle).to_string();
        let not_found = || {
            Status::not_found(format!(
                "unknown ticket (already read, expired {} s after planning (--ticket-ttl), or \
                 another session's)",
                self.limits.ticket_ttl.as_secs()
            ))
        };
        let sql = self
            .planned
            .lock()
            .map_err(internal)?
            .get(&key)
            .filter(|p| p.owner == caller.0)
            .map(|p| p.sql.clone())
            .ok_or_else(not_found)?;
        // Refused before the ticket is taken, so it can be fetched once another finishes.
        let running = self.start_running(&caller, &sql, client(&request))?;
        let planned = {
            let mut pending = self.planned.lock().map_err(internal)?;
            match pending.get(&key) {
                Some(p) if p.owner == caller.0 && p.created.elapsed() < self.limits.ticket_ttl => {
                    pending.remove(&key)
                }
                _ => None,
            }
        }
        .ok_or_else(not_found)?;
        let task = self.query_context(&planned.task)?;
        let Planned {
            user,
            client,
            sql,
            plans,
            schema,
            ..
        } = planned;
        let mut entry = Entry::new(&user, Event::Query);
        entry.client = client;
        entry.sql = Some(sql);
        let rows = Arc::<AtomicI64>::default();
        let audited = QueryAudit {
            audit: self.audit.clone(),
            entry: Some(entry),
            started: Instant::now(),
            rows: rows.clone(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let producer = self
            .executor
            .spawn(produce(plans, schema, task, tx, rows, running))?;
        let timeout = self.limits.statement_timeout;
        Ok(Response::new(Box::pin(Results {
            rx,
            task: Some(producer),
            audited,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            redact: (!caller.1.is_administrator()).then(|| self.locations.clone()),
        })))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        let client = client(&request);
        let sql =
            wire::positional(&query.query).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let open = self
            .prepared
            .lock()
            .map(|p| p.values().filter(|v| v.owner == caller.0).count())
            .unwrap_or(0);
        let too_many = || {
            Status::resource_exhausted(format!(
                "this session already holds {} prepared statements, the most the server allows \
                 (--max-prepared-statements): close some first",
                self.limits.max_prepared_statements
            ))
        };
        if open >= self.limits.max_prepared_statements {
            return Err(self.refuse(&caller, &sql, client, Event::Denied, too_many()));
        }
        let me = self.arc()?;
        let (c, s, cl) = (caller.clone(), sql.clone(), client.clone());
        let (dataset, parameters) = self
            .planning(&caller, &sql, client.clone(), async move {
                let (_, logical) = me.logical(&c, &s, cl).await?;
                let dataset = wire::plain_schema(logical.schema().as_arrow());
                let types = logical.get_parameter_types().map_err(internal)?;
                Ok((dataset, wire::parameter_schema(&types)))
            })
            .await?;
        let handle = secret();
        let admitted = self.prepared.lock().map(|mut p| {
            let open = p.values().filter(|v| v.owner == caller.0).count();
            if open >= self.limits.max_prepared_statements {
                return false;
            }
            p.insert(
                handle.clone(),
                Prepared {
                    owner: caller.0.clone(),
                    sql: sql.clone(),
                    parameters: None,
                    used: Instant::now(),
                },
            );
            true
        });
        if !admitted.unwrap_or(false) {
            return Err(self.refuse(&caller, &sql, client, Event::Denied, too_many()));
        }
        let ipc = |s: &Schema| -> Result<bytes::Bytes, Status> {
            let options = arrow::ipc::writer::IpcWriteOptions::default();
            let IpcMessage(bytes) = SchemaAsIpc::new(s, &options).try_into().map_err(internal)?;
            Ok(bytes)
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc(&dataset)?,
            parameter_schema: ipc(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request).await?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        if let Ok(mut p) = self.prepared.lock()
            && p.get(&key).is_some_and(|p| p.owner == caller.0)
        {
            p.remove(&key);
        }
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        let mut stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut batches: Vec<RecordBatch> = Vec::new();
        let (mut bytes, mut sets) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| {
                Status::invalid_argument(format!("cannot read the parameters: {e}"))
            })?;
            bytes += batch.get_array_memory_size();
            sets += batch.num_rows();
            if bytes > limits::MAX_PARAMETER_BYTES || sets > limits::MAX_PARAMETER_SETS {
                return Err(Status::resource_exhausted(format!(
                    "too many parameters: one binding holds at most {} parameter sets and {} \
                     (each set is planned as a statement of its own)",
                    limits::MAX_PARAMETER_SETS,
                    limits::human_bytes(limits::MAX_PARAMETER_BYTES as u64)
                )));
            }
            batches.push(batch);
        }
        let parameters = match batches.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(
                arrow::compute::concat_batches(&many[0].schema(), many).map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?,
            ),
        };
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        if let Ok(mut p) = self.prepared.lock()
            && let Some(p) = p.get_mut(&key)
        {
            p.parameters = parameters;
            p.used = Instant::now();
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_statement_update(
        &self,
        query: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request).await?;
        Err(self.deny(
            &caller,
            &query.query,
            client(&request),
            "the server is read-only: updates are refused",
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request).await?;
        let sql = self
            .prepared(&caller, &query.prepared_statement_handle)
            .map(|p| p.sql)
            .unwrap_or_default();
        Err(self.deny(
            &caller,
            &sql,
            client(&request),
            "the server is read-only: updates are refused",
        ))
    }

    // ---- catalog metadata -------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let (catalog, _) = self.relations(&caller).await?;
        let mut builder: GetCatalogsBuilder = query.into_builder();
        builder.append(catalog);
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let (catalog, relations) = self.relations(&caller).await?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        let mut schemas: Vec<&String> = relations.iter().map(|r| &r.0).collect();
        schemas.dedup();
        for s in schemas {
            builder.append(&catalog, s);
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let (catalog, relations) = self.relations(&caller).await?;
        let mut builder: GetTablesBuilder = query.into_builder();
        for (schema, table, kind, arrow_schema) in &relations {
            builder
                .append(&catalog, schema, table, *kind, arrow_schema)
                .map_err(internal)?;
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder(&metadata::SQL_INFO).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&metadata::SQL_INFO);
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder(&metadata::XDBC_TYPES).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&metadata::XDBC_TYPES);
        let schema = builder.schema();
        let batch = builder.build().map_err(internal)?;
        Ok(Self::stream_batches(schema, vec![batch]))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        self.metadata_info(
            &metadata::primary_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request).await?;
        let (catalog, relations) = self.relations(&caller).await?;
        let batch = metadata::primary_keys(
            &catalog,
            query.db_schema.as_deref(),
            &query.table,
            |s, t| relations.iter().any(|r| r.0 == s && r.1 == t),
        )
        .map_err(internal)?;
        Ok(Self::stream_batches(
            metadata::primary_keys_schema(),
            vec![batch],
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_padded_or_not() {
        let padded = base64::engine::general_purpose::STANDARD.encode("pat:demo");
        assert_eq!(
            basic(&format!("Basic {padded}")),
            Some(("pat".into(), "demo".into()))
        );
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("pat:demo");
        assert_ne!(padded, unpadded);
        assert_eq!(
            basic(&format!("Basic {unpadded}")),
            Some(("pat".into(), "demo".into()))
        );
        assert_eq!(basic("Basic !!!"), None);
        assert_eq!(basic("Bearer x"), None);
    }

    #[test]
    fn only_reading_statements_are_queries() {
        let state = datafusion::execution::SessionStateBuilder::new().build();
        let dialect = datafusion::config::Dialect::Generic;
        let read = |sql: &str| reads(&state.sql_to_statement(sql, &dialect).expect("parses"));
        assert!(read("SELECT 1"));
        assert!(read("EXPLAIN SELECT 1"));
        assert!(read("WITH a AS (SELECT 1) SELECT * FROM a"));
        assert!(read("SHOW TABLES"));
        assert!(!read("SET datafusion.execution.batch_size = 1"));
        assert!(!read("CREATE TABLE t AS SELECT 1"));
        assert!(!read("COPY (SELECT 1) TO '/tmp/x.csv'"));
        assert!(!read("INSERT INTO t VALUES (1)"));
        assert!(!read("EXPLAIN CREATE TABLE t AS SELECT 1"));
        let external = state
            .sql_to_statement(
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp/x'",
                &dialect,
            )
            .expect("parses");
        assert!(!reads(&external));
    }

    #[test]
    fn explain_analyze_is_found_in_every_spelling() {
        let state = datafusion::execution::SessionStateBuilder::new().build();
        for dialect in [
            datafusion::config::Dialect::Generic,
            datafusion::config::Dialect::PostgreSQL,
        ] {
            let analyzes = |sql: &str| {
                analyzes(
                    &state
                        .sql_to_statement(sql, &dialect)
                        .unwrap_or_else(|e| panic!("{sql}: {e}")),
                )
            };
            for sql in [
                "EXPLAIN ANALYZE SELECT 1",
                "explain analyze verbose SELECT 1",
                "EXPLAIN ANALYZE FORMAT indent SELECT 1",
                "EXPLAIN (ANALYZE) SELECT 1",
                "EXPLAIN (VERBOSE, ANALYZE true) SELECT 1",
                "EXPLAIN EXPLAIN ANALYZE SELECT 1",
            ] {
                assert!(analyzes(sql), "{dialect:?}: {sql}");
            }
            for sql in [
                "SELECT 1",
                "EXPLAIN SELECT 1",
                "EXPLAIN VERBOSE SELECT 1",
                "EXPLAIN FORMAT tree SELECT 1",
                "EXPLAIN (ANALYZE false) SELECT 1",
                "SELECT 'EXPLAIN ANALYZE' AS analyze",
            ] {
                assert!(!analyzes(sql), "{dialect:?}: {sql}");
            }
        }
    }

    #[tokio::test]
    async fn users_who_are_not_administrators_see_the_logical_plan_only() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b')")
            .await
            .expect("create")
            .collect()
            .await
            .expect("created");
        let locations = vec!["/srv/warehouse".to_string(), "srv/warehouse".to_string()];
        let shown = |sql: &'static str| {
            let ctx = ctx.clone();
            let locations = locations.clone();
            async move {
                let plan = ctx.state().create_logical_plan(sql).await.expect("plans");
                assert!(plainly_explained(&plan), "{sql}");
                let plan = plain_explain(&ctx, plan, &locations).expect("explained");
                let batches = DataFrame::new(ctx.state(), plan)
                    .collect()
                    .await
                    .expect("runs");
                let mut out = Vec::new();
                for b in &batches {
                    assert_eq!(b.schema(), LogicalPlan::explain_schema());
                    let column = |i: usize| {
                        let c = b.column(i).as_any();
                        c.downcast_ref::<arrow::array::StringArray>()
                            .expect("text")
                            .clone()
                    };
                    let (types, plans) = (column(0), column(1));
                    for r in 0..b.num_rows() {
                        out.push((types.value(r).to_string(), plans.value(r).to_string()));
                    }
                }
                out
            }
        };
        let plain = shown("EXPLAIN SELECT column2 FROM t WHERE column1 > 1").await;
        assert_eq!(
            plain,
            vec![(
                "logical_plan".to_string(),
                "Projection: t.column2\n  Filter: t.column1 > Int64(1)\n    TableScan: t \
                 projection=[column1, column2]"
                    .to_string()
            )]
        );
        let verbose = shown("EXPLAIN VERBOSE SELECT column2 FROM t").await;
        let types: Vec<&str> = verbose.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["initial_logical_plan", "logical_plan"]);
        for sql in [
            "EXPLAIN FORMAT tree SELECT * FROM t",
            "EXPLAIN FORMAT pgjson SELECT * FROM t",
            "EXPLAIN FORMAT graphviz SELECT * FROM t",
        ] {
            let rows = shown(sql).await;
            assert_eq!(rows.len(), 1, "{sql}");
            assert_eq!(rows[0].0, "logical_plan", "{sql}");
            assert!(!rows[0].1.contains("Exec"), "{sql}: {}", rows[0].1);
        }
        // The warehouse's location is written <warehouse>, however it got into the plan.
        let literal =
            shown("EXPLAIN SELECT 'file:///srv/warehouse/t' AS a, 'srv/warehouse/u' AS b").await;
        assert!(
            literal[0].1.contains("file://<warehouse>/t"),
            "{}",
            literal[0].1
        );
        assert!(literal[0].1.contains("<warehouse>/u"), "{}", literal[0].1);
        assert!(!literal[0].1.contains("srv/warehouse"), "{}", literal[0].1);
        // Any other plan is left as it is; a measured one is not plain.
        let plan = ctx
            .state()
            .create_logical_plan("SELECT 1")
            .await
            .expect("plans");
        let same = plain_explain(&ctx, plan.clone(), &locations).expect("same");
        assert_eq!(same, plan);
        let analyzed = ctx
            .state()
            .create_logical_plan("EXPLAIN ANALYZE SELECT 1")
            .await
            .expect("plans");
        assert!(!plainly_explained(&analyzed));
    }

    #[test]
    fn the_warehouse_location_is_spelled_every_way_plans_print_it() {
        let dir = std::env::temp_dir().join(format!("rxcube-locations-{}", uuid::Uuid::new_v4()));
        let warehouse = Warehouse::open(dir.to_str().expect("utf-8")).expect("opens");
        let real = std::fs::canonicalize(&dir).expect("exists");
        let real = real.to_str().expect("utf-8");
        let spellings = location_spellings(&warehouse);
        for s in [
            format!("file://{real}"),
            real.to_string(),
            real.trim_start_matches('/').to_string(),
        ] {
            assert!(spellings.contains(&s), "{s} not in {spellings:?}");
        }
        assert!(spellings.windows(2).all(|w| w[0].len() >= w[1].len()));
        let text = format!(
            "DataSourceExec: file_groups={{[[{}/t/part-0.parquet]]}}",
            &real[1..]
        );
        assert_eq!(
            without_locations(&text, &spellings),
            "DataSourceExec: file_groups={[[<warehouse>/t/part-0.parquet]]}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_remote_warehouse_is_spelled_by_url_bucket_and_key_prefix_where_a_word_starts() {
        let warehouse = Warehouse::open("s3://chain/data").expect("opens");
        let spellings = location_spellings(&warehouse);
        let text = "Object at location data/rx_fills/part-0.parquet not found; GET \
                    http://127.0.0.1:9000/chain/data/rx_fills/p.parquet; see metadata/x; \
                    s3://chain/data/pos";
        assert_eq!(
            without_locations(text, &spellings),
            "Object at location <warehouse>/rx_fills/part-0.parquet not found; GET \
             http://127.0.0.1:9000/<warehouse>/rx_fills/p.parquet; see metadata/x; \
             <warehouse>/pos"
        );
        // A message that names no location is the same status.
        let status = Status::unavailable("try again");
        assert_eq!(redacted(status, &spellings).message(), "try again");
        let status = Status::unavailable("GET chain/data/pos/part-1.parquet failed");
        let status = redacted(status, &spellings);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "GET <warehouse>/pos/part-1.parquet failed"
        );
    }
}
