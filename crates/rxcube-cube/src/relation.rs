//! One table provider for every cube relation: a relation is SQL generated per query.
//!
//! A [`Relation`] declares its columns (with their documentation) and writes the SQL that
//! answers a query from the query's filters and projected columns; `cube.metrics` writes only
//! the slice the filters select, the wide views only the metrics projected. [`CubeTable`] plans
//! that SQL in the caller's session, applies the filters inside it (so DataFusion pushes them
//! on down to `cube.metrics` and the Delta scans), and casts the result to the declared schema.
//! Every filter is *inexact*: DataFusion re-applies it above the scan, so a relation that
//! ignores one is still answered right.
//!
//! The documentation is the relation's `CREATE` text, visible through
//! `information_schema.views` and `SHOW CREATE TABLE`.

use std::fmt::{Debug, Write};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column as ColumnRef, DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, cast, col};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionContext;

/// A column of a relation and what it means.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub doc: String,
}

impl Column {
    pub fn new(name: impl Into<String>, data_type: DataType, doc: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type,
            doc: doc.into(),
        }
    }
}

/// A relation of the cube, answered by SQL generated per query.
pub trait Relation: Debug + Send + Sync + 'static {
    /// What the relation holds, one paragraph.
    fn doc(&self) -> String;
    fn columns(&self) -> &[Column];
    /// The SQL answering a query that keeps the rows passing `filters` (ANDed; columns named
    /// without qualifier) and reads `projection`. The result must have at least the projected
    /// columns, by name; it may have more rows than the filters keep.
    fn sql(&self, filters: &[Expr], projection: &[&str]) -> Result<String>;
    /// The SQL for a query in `state`, with a note on what it reads (shown by `EXPLAIN` and
    /// carried to results, see [`served_by`]); by default [`Relation::sql`] with no note.
    fn plan_sql(
        &self,
        _state: &dyn Session,
        filters: &[Expr],
        projection: &[&str],
    ) -> Result<Planned> {
        Ok(Planned {
            sql: self.sql(filters, projection)?,
            note: None,
            filters: filters.to_vec(),
        })
    }
    /// The identity of the data the relation reads (every table's version), when its results
    /// may be cached ([`crate::cache`]): two queries with the same snapshot, SQL, filters and
    /// columns have the same answer.
    fn snapshot(&self) -> Option<&str> {
        None
    }
    /// How the relation is computed, for its `CREATE` text.
    fn body(&self) -> String {
        "-- generated per query from the cube definition".to_string()
    }
}

/// How a relation answers one query.
#[derive(Debug, Clone)]
pub struct Planned {
    pub sql: String,
    /// What it reads, for `EXPLAIN` and the result's metadata.
    pub note: Option<String>,
    /// The filters applied to the SQL's result inside the scan (and part of the cached
    /// result's key); DataFusion applies every filter above the scan again. By default all.
    pub filters: Vec<Expr>,
}

/// The table provider of a [`Relation`].
#[derive(Debug)]
pub struct CubeTable<R> {
    name: String,
    relation: R,
    schema: SchemaRef,
    definition: String,
}

impl<R: Relation> CubeTable<R> {
    /// `name` is the qualified name shown in the relation's `CREATE` text.
    pub fn new(name: impl Into<String>, relation: R) -> Self {
        let schema = Arc::new(Schema::new(
            relation
                .columns()
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let name = name.into();
        let definition = create_text(&name, &relation);
        Self {
            name,
            relation,
            schema,
            definition,
        }
    }
}

/// A relation's documentation as a `CREATE VIEW` statement with column comments.
fn create_text(name: &str, relation: &dyn Relation) -> String {
    let mut text = String::new();
    for line in wrap(&relation.doc(), 96) {
        let _ = writeln!(text, "-- {line}");
    }
    let _ = writeln!(text, "CREATE VIEW {name} (");
    let columns = relation.columns();
    for (i, c) in columns.iter().enumerate() {
        let comma = if i + 1 < columns.len() { "," } else { "" };
        let _ = writeln!(
            text,
            "  {} {} COMMENT '{}'{comma}",
            c.name,
            sql_type(&c.data_type),
            c.doc.replace('\'', "''")
        );
    }
    let _ = write!(text, ") AS\n{}", relation.body());
    text
}

fn sql_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 => "VARCHAR",
        DataType::Float64 => "DOUBLE",
        DataType::Int64 => "BIGINT",
        DataType::Int32 => "INT",
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 => "DATE",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        _ => "OTHER",
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A filter that can be evaluated inside the relation's SQL: no volatile functions (their
/// results would differ) and no subqueries.
fn pushable(e: &Expr) -> bool {
    let mut ok = !e.is_volatile();
    let _ = e.apply(|n| {
        if matches!(
            n,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::OuterReferenceColumn(..)
        ) {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// The filter with its columns named without qualifier, as the relation's SQL names them.
fn unqualified(e: &Expr) -> Result<Expr> {
    e.clone()
        .transform(|n| match n {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(ColumnRef::new_unqualified(
                c.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

#[async_trait]
impl<R: Relation> TableProvider for CubeTable<R> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.definition)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if pushable(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filters = filters
            .iter()
            .map(unqualified)
            .collect::<Result<Vec<_>>>()?;
        let columns: Vec<&Column> = match projection {
            Some(p) => p.iter().map(|i| &self.relation.columns()[*i]).collect(),
            None => self.relation.columns().iter().collect(),
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let Planned { sql, note, filters } = self.relation.plan_sql(state, &filters, &names)?;
        tracing::debug!(relation = %self.name, %sql, ?note, "cube relation");
        let options = state
            .config_options()
            .extensions
            .get::<crate::CubeOptions>();
        let caching = options.is_none_or(|o| o.result_cache);
        let partition = options.map_or("", |o| o.cache_partition.as_str());
        // The settings that change what the relations inside a view answer, or what serves
        // them, though the view's SQL stays the same.
        let (protected, rollups) = options.map_or((false, true), |o| (o.small_cells, o.rollups));
        let key = self.relation.snapshot().filter(|_| caching).map(|s| {
            format!(
                "{partition}\nsmall_cells={protected} rollups={rollups}\n{s}\n{sql}\n{filters:?}\n{names:?}"
            )
        });
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        if let Some(key) = &key
            && let Some((hit, within)) = crate::cache::lookup(key, schema)?
        {
            return Ok(Arc::new(ServedExec::cached(
                self.name.clone(),
                note,
                hit,
                within,
            )));
        }
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("cube relations need a SessionState".into())
            })?;
        // The SQL is planned and optimized here, then embedded in the outer plan, whose
        // optimizer runs over it again: dynamic filters built now would be invalidated by the
        // outer join reordering, so the outer pass adds them instead.
        let mut state = state.clone();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        let ctx = SessionContext::new_with_state(state);
        let mut df = ctx.sql(&sql).await?;
        for f in filters {
            df = df.filter(f)?;
        }
        let plan = df
            .select(
                columns
                    .iter()
                    .map(|c| {
                        cast(
                            col(ColumnRef::new_unqualified(&c.name)),
                            c.data_type.clone(),
                        )
                        .alias(&c.name)
                    })
                    .collect::<Vec<_>>(),
            )?
            .create_physical_plan()
            .await?;
        let plan = match key {
            Some(key) => {
                let within = served_by_uncached(&plan);
                crate::cache::filling(plan, key, within)
            }
            None => plan,
        };
        Ok(match note {
            Some(note) => Arc::new(ServedExec::new(self.name.clone(), note, plan)),
            None => plan,
        })
    }
}

/// The plan of a cube relation, labelled with what serves it: `EXPLAIN` shows the label, and
/// [`served_by`] reads it off a plan for the result's metadata.
#[derive(Debug)]
pub struct ServedExec {
    relation: String,
    /// What it reads ([`Planned::note`]).
    note: Option<String>,
    /// Whether the result cache answers it.
    cached: bool,
    /// What served the relations the cached result was computed from (a view's
    /// `cube.metrics`), as [`served_by_uncached`] named them then.
    within: Vec<String>,
    input: Arc<dyn ExecutionPlan>,
}

impl ServedExec {
    pub fn new(relation: String, note: String, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            relation,
            note: Some(note),
            cached: false,
            within: Vec::new(),
            input,
        }
    }

    /// A relation answered from the result cache ([`crate::cache`]), `input` its result,
    /// `within` what served the relations it was computed from.
    pub fn cached(
        relation: String,
        note: Option<String>,
        input: Arc<dyn ExecutionPlan>,
        within: Vec<String>,
    ) -> Self {
        Self {
            relation,
            note,
            cached: true,
            within,
            input,
        }
    }

    /// What served it; with `cache`, whether the result cache did.
    fn what(&self, cache: bool) -> Option<String> {
        match (&self.note, cache && self.cached) {
            (Some(n), true) => Some(format!("{n}, cached result")),
            (None, true) => Some("a cached result".to_string()),
            (note, false) => note.clone(),
        }
    }

    /// `<relation>: <what served it>`.
    pub fn label(&self) -> String {
        format!("{}: {}", self.relation, self.what(true).unwrap_or_default())
    }
}

impl DisplayAs for ServedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let what = self.what(true).unwrap_or_default();
        write!(f, "CubeScanExec: {} served by {what}", self.relation)?;
        if matches!(t, DisplayFormatType::TreeRender) {
            return Ok(());
        }
        // The relation's own plan, which the outer plan does not see as children.
        let inner = datafusion::physical_plan::displayable(self.input.as_ref())
            .indent(matches!(t, DisplayFormatType::Verbose))
            .to_string();
        for line in inner.lines() {
            write!(f, "\n      | {line}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ServedExec {
    fn name(&self) -> &str {
        "CubeScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    /// None to the outer plan: the relation's plan was optimized when it was planned (in
    /// `scan`), and a second pass of the outer physical optimizer over it costs about a third
    /// of the planning time and changes nothing. `EXPLAIN` still shows it, under this node.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// What served each cube relation in `plan` (`<relation>: <rollup or raw, and why>`), in plan
/// order, without repeats.
pub fn served_by(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    served(plan, true)
}

/// [`served_by`] without a word on the result cache: what a user is told who may not learn
/// what other users ran (the cache is shared by every session, so a hit can be theirs).
pub fn served_by_uncached(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    served(plan, false)
}

fn served(plan: &Arc<dyn ExecutionPlan>, cache: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(p) = stack.pop() {
        if let Some(s) = (p.as_ref() as &dyn std::any::Any).downcast_ref::<ServedExec>() {
            if let Some(what) = s.what(cache) {
                let label = format!("{}: {what}", s.relation);
                if !out.contains(&label) {
                    out.push(label);
                }
            }
            for label in &s.within {
                if !out.contains(label) {
                    out.push(label.clone());
                }
            }
            // Its relation's plan is not among its children.
            stack.push(Arc::clone(&s.input));
        }
        stack.extend(p.children().into_iter().rev().cloned());
    }
    out
}
