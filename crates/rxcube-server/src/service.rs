//! The Flight SQL service: sign-in, statements, prepared statements, catalog metadata.
//!
//! Every call is made by a signed-in [`Principal`] (a bearer token from the handshake, or
//! basic credentials on the call itself), and every statement is planned in that principal's
//! session ([`rxcube_access::Snapshot::user_session`]), so the scope is part of the plan.
//! Results are planned once, at `GetFlightInfo`; the ticket names the planned statement, is
//! random, and is bound to the session that planned it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
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
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::ParamValues;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use rxcube_access::audit::{AuditLog, Entry, Event};
use rxcube_access::{Directory, Principal, Snapshot};
use rxcube_warehouse::Warehouse;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::metadata;
use crate::wire;

/// A bearer token's session.
#[derive(Debug, Clone)]
struct Session {
    user: String,
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
    created: Instant,
}

/// What tickets and handles stay valid for when unused.
const PENDING_TTL: Duration = Duration::from_secs(3600);

pub struct Service {
    warehouse: Warehouse,
    snapshot: RwLock<Arc<Snapshot>>,
    directory: RwLock<Arc<Directory>>,
    sessions: Mutex<HashMap<String, Session>>,
    planned: Mutex<HashMap<String, Planned>>,
    prepared: Mutex<HashMap<String, Prepared>>,
    /// Each principal's session over the current snapshot, built on its first statement.
    user_sessions: Mutex<HashMap<String, (Arc<Snapshot>, SessionContext)>>,
    audit: Arc<AuditLog>,
    token_ttl: Duration,
}

/// A unique, unguessable identifier (256 random bits).
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn flight_error(e: datafusion::error::DataFusionError) -> FlightError {
    FlightError::ExternalError(Box::new(e))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn client<T>(r: &Request<T>) -> Option<String> {
    r.remote_addr().map(|a: SocketAddr| a.to_string())
}

type Caller = (String, Principal);

impl Service {
    pub async fn new(
        warehouse: Warehouse,
        token_ttl: Duration,
    ) -> Result<Arc<Self>, rxcube_access::AccessError> {
        let snapshot = Snapshot::load(&warehouse).await?;
        let directory = rxcube_access::load_directory(&warehouse).await?.directory;
        let audit = AuditLog::new(warehouse.clone());
        Ok(Arc::new(Self {
            warehouse,
            snapshot: RwLock::new(Arc::new(snapshot)),
            directory: RwLock::new(Arc::new(directory)),
            sessions: Mutex::default(),
            planned: Mutex::default(),
            prepared: Mutex::default(),
            user_sessions: Mutex::default(),
            audit,
            token_ttl,
        }))
    }

    pub fn audit(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reloads the warehouse (new table and rollup versions) and the users; forgets expired
    /// sessions, tickets and handles. Run periodically.
    pub async fn reload(&self) -> Result<(), rxcube_access::AccessError> {
        let snapshot = Snapshot::load(&self.warehouse).await?;
        let directory = rxcube_access::load_directory(&self.warehouse)
            .await?
            .directory;
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(snapshot);
        }
        if let Ok(mut d) = self.directory.write() {
            *d = Arc::new(directory);
        }
        let now = Instant::now();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, v| v.expires > now);
        }
        if let Ok(mut p) = self.planned.lock() {
            p.retain(|_, v| now.duration_since(v.created) < PENDING_TTL);
        }
        if let Ok(mut p) = self.prepared.lock() {
            p.retain(|_, v| now.duration_since(v.created) < PENDING_TTL);
        }
        Ok(())
    }

    /// `principal`'s session over `snapshot`: built once per snapshot and principal (name,
    /// scope and privileges, so a changed user gets a new one), then shared by its statements.
    async fn user_session(
        &self,
        snapshot: &Arc<Snapshot>,
        principal: &Principal,
    ) -> Result<SessionContext, Status> {
        let key = format!(
            "{}\n{}\n{:?}",
            principal.name, principal.scope, principal.privileges
        );
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

    /// Checks `user:password`, recording the login or the failure.
    fn sign_in(
        &self,
        user: &str,
        password: &str,
        client: Option<String>,
    ) -> Result<Principal, Status> {
        match self.directory().authenticate(user, password) {
            Ok(p) => {
                let mut e = Entry::new(user, Event::Login);
                e.client = client;
                self.audit.record(e);
                Ok(p)
            }
            Err(refusal) => {
                let mut e = Entry::new(user, Event::LoginFailed);
                e.client = client;
                e.detail = Some(refusal.to_string());
                self.audit.record(e);
                Err(Status::unauthenticated("invalid user name or password"))
            }
        }
    }

    /// Who is calling: a valid bearer token's user, or valid basic credentials.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
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
                if let Ok(mut s) = self.sessions.lock() {
                    s.remove(token);
                }
                return Err(Status::unauthenticated(
                    "the token has expired: sign in again",
                ));
            }
            let principal = self
                .directory()
                .principal(&session.user)
                .filter(|p| p.may(rxcube_access::Privilege::Query))
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "user '{}' may no longer sign in",
                        session.user
                    ))
                })?;
            return Ok((token.to_string(), principal));
        }
        if let Some((user, password)) = basic(header) {
            let principal = self.sign_in(&user, &password, client(request))?;
            return Ok((format!("basic:{user}"), principal));
        }
        Err(Status::unauthenticated(
            "authorization must be Basic or Bearer",
        ))
    }

    fn deny(&self, caller: &Caller, sql: &str, client: Option<String>, why: &str) -> Status {
        let mut e = Entry::new(&caller.1.name, Event::Denied);
        e.sql = Some(sql.to_string());
        e.client = client;
        e.detail = Some(why.to_string());
        self.audit.record(e);
        Status::permission_denied(why.to_string())
    }

    fn failed(&self, caller: &Caller, sql: &str, client: Option<String>, why: &str) -> Status {
        let mut e = Entry::new(&caller.1.name, Event::Error);
        e.sql = Some(sql.to_string());
        e.client = client;
        e.detail = Some(why.to_string());
        self.audit.record(e);
        Status::invalid_argument(why.to_string())
    }

    /// The caller's session and the logical plan of `sql` in it, refused when it reads a
    /// relation outside the caller's view or is not a query.
    async fn logical(
        &self,
        caller: &Caller,
        sql: &str,
        client: Option<String>,
    ) -> Result<(SessionContext, LogicalPlan), Status> {
        let snapshot = self.snapshot();
        let ctx = self.user_session(&snapshot, &caller.1).await?;
        let state = ctx.state();
        let statement = state
            .sql_to_statement(sql, &state.config().options().sql_parser.dialect)
            .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?;
        if !reads(&statement) {
            return Err(self.deny(
                caller,
                sql,
                client,
                "rxcube serves queries only (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE): \
                 the server is read-only",
            ));
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
            .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?;
        Ok((ctx, plan))
    }

    /// Plans `sql` (with each parameter set, if any) and keeps it for a `DoGet`.
    async fn plan(
        &self,
        caller: &Caller,
        sql: &str,
        parameters: Option<&RecordBatch>,
        client: Option<String>,
    ) -> Result<(String, SchemaRef), Status> {
        let (ctx, logical) = self.logical(caller, sql, client.clone()).await?;
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
            let plan = DataFrame::new(ctx.state(), logical)
                .create_physical_plan()
                .await
                .map_err(|e| self.failed(caller, sql, client.clone(), &e.to_string()))?;
            plans.push(plan);
        }
        let first = plans
            .first()
            .ok_or_else(|| Status::invalid_argument("no parameter set was bound"))?;
        let mut schema = first.schema().as_ref().clone();
        let served = rxcube_cube::relation::served_by(first);
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
            client,
            sql: sql.to_string(),
            plans,
            schema: schema.clone(),
            task: ctx.task_ctx(),
            created: Instant::now(),
        };
        if let Ok(mut p) = self.planned.lock() {
            p.insert(handle.clone(), planned);
        }
        Ok((handle, schema))
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
        self.prepared
            .lock()
            .ok()
            .and_then(|p| p.get(&key).cloned())
            .filter(|p| p.owner == caller.0)
            .ok_or_else(|| {
                Status::not_found(
                    "unknown prepared statement handle (closed, expired, or another session's)",
                )
            })
    }

    /// The relations of the caller's session: (schema, table, table type, arrow schema).
    async fn relations(
        &self,
        caller: &Caller,
    ) -> Result<(String, Vec<(String, String, &'static str, SchemaRef)>), Status> {
        let ctx = self.user_session(&self.snapshot(), &caller.1).await?;
        let catalog_name = ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let catalog = ctx
            .catalog(&catalog_name)
            .ok_or_else(|| Status::internal("the catalog is missing"))?;
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

/// The audit entry of one query, recorded when its result stream ends (or is dropped by a
/// client that went away).
struct QueryAudit {
    audit: Arc<AuditLog>,
    entry: Option<Entry>,
    started: Instant,
    rows: i64,
}

impl QueryAudit {
    fn saw(&mut self, item: &Result<RecordBatch, FlightError>) {
        match item {
            Ok(b) => self.rows += b.num_rows() as i64,
            Err(e) => {
                if let Some(entry) = &mut self.entry {
                    entry.event = Event::Error;
                    entry.detail = Some(e.to_string());
                }
            }
        }
    }
}

impl Drop for QueryAudit {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.rows = Some(self.rows);
            e.millis = Some(self.started.elapsed().as_secs_f64() * 1e3);
            self.audit.record(e);
        }
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
        let principal = self.sign_in(&user, &password, client(&request))?;
        let token = secret();
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(
                token.clone(),
                Session {
                    user: principal.name.clone(),
                    expires: Instant::now() + self.token_ttl,
                },
            );
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
        let caller = self.caller(&request)?;
        let (handle, schema) = self
            .plan(&caller, &query.query, None, client(&request))
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
        let caller = self.caller(&request)?;
        let prepared = self.prepared(&caller, &query.prepared_statement_handle)?;
        let (handle, schema) = self
            .plan(
                &caller,
                &prepared.sql,
                prepared.parameters.as_ref(),
                client(&request),
            )
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
        let caller = self.caller(&request)?;
        let key = String::from_utf8_lossy(&ticket.statement_handle).to_string();
        let planned = {
            let mut pending = self.planned.lock().map_err(internal)?;
            match pending.get(&key) {
                Some(p) if p.owner == caller.0 => pending.remove(&key),
                _ => None,
            }
        }
        .ok_or_else(|| {
            Status::not_found("unknown ticket (already read, expired, or another session's)")
        })?;
        let Planned {
            user,
            client,
            sql,
            plans,
            schema,
            task,
            ..
        } = planned;
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
                async move { wire::plain_batch(b, &schema).map_err(flight_error) }
            });
        // Counts the rows as they go; audits the query when the stream ends or is dropped.
        let mut entry = Entry::new(&user, Event::Query);
        entry.client = client;
        entry.sql = Some(sql);
        let mut audited = QueryAudit {
            audit: self.audit.clone(),
            entry: Some(entry),
            started: Instant::now(),
            rows: 0,
        };
        let finished = batches.inspect(move |item| audited.saw(item));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(out_schema)
            .build(finished)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let sql =
            wire::positional(&query.query).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (_, logical) = self.logical(&caller, &sql, client(&request)).await?;
        let dataset = wire::plain_schema(logical.schema().as_arrow());
        let types = logical.get_parameter_types().map_err(internal)?;
        let parameters = wire::parameter_schema(&types);
        let handle = secret();
        if let Ok(mut p) = self.prepared.lock() {
            p.insert(
                handle.clone(),
                Prepared {
                    owner: caller.0.clone(),
                    sql,
                    parameters: None,
                    created: Instant::now(),
                },
            );
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
        let caller = self.caller(&request)?;
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
        let caller = self.caller(&request)?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
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
        let caller = self.caller(&request)?;
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
        let caller = self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.clone().into_builder(&metadata::SQL_INFO).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
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
        self.caller(&request)?;
        let schema = query.into_builder(&metadata::XDBC_TYPES).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
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
        self.caller(&request)?;
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
        let caller = self.caller(&request)?;
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

use arrow_flight::Action;

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
}
