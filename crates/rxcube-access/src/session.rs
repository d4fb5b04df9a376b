//! A user's session: the warehouse's catalog as the user may see it, with the scope enforced
//! inside every plan.
//!
//! The *home* session is the full catalog ([`rxcube_cube::session`]). A user's session is a
//! new catalog holding, for each relation the user may read, a [`ScopedTable`] around the home
//! relation: its scan is planned in the home session (so the cube computes peer averages and
//! ranks over every pharmacy, and is served from rollups and the result cache exactly as for
//! an administrator), then filtered to the scope and masked. Nothing else is registered: no raw
//! table, rollup or system table a rule does not allow is reachable by any SQL, because it is
//! not in the user's catalog at all. Division users read the home relations directly.
//!
//! Below the level that may see employee data (pharmacy scopes), the scoped relations are
//! planned in the home session with small-cell protection on ([`protected_home`]): a cube cell
//! whose pay comes from fewer employees (or whose survey shares from fewer responses) than
//! `cube.toml`'s `[[small_cells]]` minimums shows NULL for those figures, and takes no part in
//! the peer averages, ranks and peer sizes these users see.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, Session,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, cast, lit, when};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext, col};

use crate::directory::{Principal, Privilege};
use crate::scope::{Grain, Level, Reach};

/// How a relation of the home catalog appears to a user.
enum Rule {
    /// Not at all.
    Hide,
    /// As it is.
    Direct,
    /// Through a [`ScopedTable`]: rows where `predicate` holds, `masked` columns hidden.
    Scoped {
        predicate: Option<Expr>,
        masked: Vec<&'static str>,
    },
}

/// The columns holding an employee's individual data.
const EMPLOYEE_DATA: [(&str, &str); 3] = [
    ("employees", "ssn"),
    ("employees", "hourly_rate"),
    ("payroll", "cost"),
];

fn in_list<T: Into<ScalarValue> + Clone>(
    column: &str,
    values: impl IntoIterator<Item = T>,
) -> Expr {
    let values: Vec<Expr> = values.into_iter().map(|v| lit(v.into())).collect();
    if values.is_empty() {
        return lit(false);
    }
    col(Column::new_unqualified(column)).in_list(values, false)
}

/// The rule for `schema.table` (with columns `columns`) for a user reaching `reach`.
fn rule(
    schema: &str,
    table: &str,
    columns: &arrow::datatypes::Schema,
    reach: &Reach,
    principal: &Principal,
) -> Rule {
    let has = |c: &str| columns.field_with_name(c).is_ok();
    let type_of = |c: &str| {
        columns
            .field_with_name(c)
            .map_or(DataType::Null, |f| f.data_type().clone())
    };
    if schema == "system" && table == "audit_log" {
        // The audit log is for administrators, whatever their scope.
        return if principal.may(Privilege::Audit) {
            Rule::Direct
        } else {
            Rule::Hide
        };
    }
    if reach.is_everything() {
        return Rule::Direct;
    }
    let masked = || -> Vec<&'static str> {
        if reach.sees_employee_data() {
            return vec![];
        }
        EMPLOYEE_DATA
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, c)| *c)
            .collect()
    };
    // Facts are in scope "as was" (see `crate::scope`): by their event time, or by their
    // validity dates, or (the org itself) by the placement each row states.
    let event_time = rxcube_model::contract::TableName::ALL
        .into_iter()
        .map(|t| t.def())
        .find(|d| d.name == table)
        .and_then(|d| d.event_time);
    match schema {
        "public" => match table {
            "targets" => Rule::Direct,
            "employees" => Rule::Scoped {
                predicate: Some(in_list(
                    "home_pharmacy_id",
                    reach.current.iter().cloned().map(ScalarValue::from),
                )),
                masked: masked(),
            },
            "pharmacies" => Rule::Scoped {
                predicate: Some(match reach.scope.level {
                    Level::Pharmacy => col(Column::new_unqualified("pharmacy_id"))
                        .eq(lit(reach.scope.node.clone())),
                    level => col(Column::new_unqualified(level.as_str()))
                        .eq(lit(reach.scope.node.clone())),
                }),
                masked: masked(),
            },
            _ if has("pharmacy_id") => Rule::Scoped {
                predicate: Some(match event_time {
                    Some(t) if has(t) => reach.fact_filter("pharmacy_id", t, &type_of(t)),
                    _ if has("valid_from") && has("valid_to") => {
                        reach.dated_filter("pharmacy_id", "valid_from", "valid_to")
                    }
                    _ => in_list(
                        "pharmacy_id",
                        reach.pharmacies.iter().cloned().map(ScalarValue::from),
                    ),
                }),
                masked: masked(),
            },
            _ => Rule::Hide,
        },
        "cube" => {
            if table == "metric_definitions" {
                return Rule::Scoped {
                    predicate: None,
                    masked: vec![],
                };
            }
            let start = type_of("period_start");
            // Rows are periods of a node: in scope while the node is (see `crate::scope`).
            let periods = |level: Level| -> Expr {
                if !has("period_start") {
                    return in_list("node", reach.nodes(level).iter().cloned());
                }
                let grain = if has("grain") {
                    Grain::Column("grain")
                } else if table == "weekly_trend" {
                    Grain::Fixed("week")
                } else if table == "budget" {
                    Grain::Fixed("pay_period")
                } else {
                    Grain::Fixed(
                        table
                            .strip_prefix(level.as_str())
                            .and_then(|g| g.strip_prefix('_'))
                            .unwrap_or_default(),
                    )
                };
                reach.period_filter(level, grain, &start)
            };
            if has("level") && has("node") {
                let parts: Vec<Expr> = Level::ALL
                    .into_iter()
                    .filter(|l| !reach.nodes(*l).is_empty())
                    .map(|l| {
                        col(Column::new_unqualified("level"))
                            .eq(lit(l.as_str()))
                            .and(periods(l))
                    })
                    .collect();
                let predicate = parts.into_iter().reduce(Expr::or).unwrap_or(lit(false));
                return Rule::Scoped {
                    predicate: Some(predicate),
                    masked: vec![],
                };
            }
            // The wide relations `<level>_<grain>`; relations of pharmacies against their
            // peer group's targets (`attainment`, `budget`) are at the pharmacy level.
            let level = Level::ALL
                .into_iter()
                .filter(|l| table.starts_with(&format!("{}_", l.as_str())))
                .max_by_key(|l| l.as_str().len())
                .or_else(|| has("peer_group").then_some(Level::Pharmacy));
            match level {
                Some(l) if has("node") => Rule::Scoped {
                    predicate: Some(periods(l)),
                    masked: vec![],
                },
                _ => Rule::Hide,
            }
        }
        // Rollups and system tables hold every pharmacy: the division's.
        _ => Rule::Hide,
    }
}

/// `home` with small-cell protection on (`rxcube.small_cells`): the cube relations planned in
/// it suppress the figures of small cells ([`rxcube_cube::definition::SmallCells`]) and leave
/// them out of peer averages and ranks. The relations are the home's own.
pub fn protected_home(home: &SessionContext) -> Result<SessionContext> {
    let mut state = home.state();
    state
        .config_mut()
        .options_mut()
        .set("rxcube.small_cells", "true")?;
    Ok(SessionContext::new_with_state(state))
}

/// `ctx` with the result cache partitioned to `partition` (`rxcube.cache_partition`).
fn with_cache_partition(ctx: &SessionContext, partition: &str) -> Result<SessionContext> {
    let mut state = ctx.state();
    state
        .config_mut()
        .options_mut()
        .set("rxcube.cache_partition", partition)?;
    Ok(SessionContext::new_with_state(state))
}

/// The session `principal` reaching `reach` gets over `home`: the relations it may read, each
/// scoped and masked, and nothing else (see the module docs). A scope that does not see
/// employee data reads every relation through [`protected_home`]: small cells are suppressed
/// inside the plan, below anything the user's SQL can change.
pub async fn user_session(
    home: &SessionContext,
    principal: &Principal,
    reach: &Reach,
) -> Result<SessionContext> {
    let planning = if reach.is_everything() || reach.sees_employee_data() {
        home.clone()
    } else {
        protected_home(home)?
    };
    // Cached results are reused within a scope only: a cache hit (its speed) tells a user
    // nothing of what users of other scopes ran.
    let partition = reach.scope.to_string();
    let planning = with_cache_partition(&planning, &partition)?;
    let state = with_cache_partition(home, &partition)?.state();
    let (catalog_name, home_catalog) = rxcube_cube::default_catalog(home)?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    for schema_name in home_catalog.schema_names() {
        if schema_name == "information_schema" {
            continue;
        }
        let Some(home_schema) = home_catalog.schema(&schema_name) else {
            continue;
        };
        let schema = Arc::new(MemorySchemaProvider::new());
        for name in home_schema.table_names() {
            let Some(table) = home_schema.table(&name).await? else {
                continue;
            };
            let columns = table.schema();
            match rule(&schema_name, &name, &columns, reach, principal) {
                Rule::Hide => continue,
                Rule::Direct => {
                    schema.register_table(name, table)?;
                }
                Rule::Scoped { predicate, masked } => {
                    let scoped = ScopedTable::new(planning.clone(), table, predicate, &masked)?;
                    schema.register_table(name, Arc::new(scoped))?;
                }
            }
        }
        if !schema.table_names().is_empty() {
            catalog.register_schema(&schema_name, schema)?;
        }
    }
    let list = Arc::new(MemoryCatalogProviderList::new());
    list.register_catalog(catalog_name, catalog);
    let state = SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(list as Arc<dyn CatalogProviderList>)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// A home relation seen through a scope: planned in the home session, filtered by the scope's
/// predicate, its masked columns replaced by NULL (or a fixed mask for text), then the
/// query's own filters (after the mask, so a filter on a masked column sees the mask).
pub struct ScopedTable {
    home: SessionContext,
    /// The scoped and masked relation, as a logical plan in `home`.
    plan: LogicalPlan,
    schema: SchemaRef,
    table_type: TableType,
}

impl ScopedTable {
    pub fn new(
        home: SessionContext,
        inner: Arc<dyn TableProvider>,
        predicate: Option<Expr>,
        masked: &[&str],
    ) -> Result<Self> {
        let table_type = inner.table_type();
        let mut df = home.read_table(inner)?;
        if let Some(p) = predicate {
            df = df.filter(p)?;
        }
        if !masked.is_empty() {
            let exprs = df
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let c = col(Column::new_unqualified(f.name()));
                    if !masked.contains(&f.name().as_str()) {
                        return Ok(c);
                    }
                    let null = lit(ScalarValue::try_from(f.data_type())?);
                    let shown = match f.data_type() {
                        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                            cast(lit("***-**-****"), f.data_type().clone())
                        }
                        _ => null.clone(),
                    };
                    Ok(when(c.is_null(), null).otherwise(shown)?.alias(f.name()))
                })
                .collect::<Result<Vec<_>>>()?;
            df = df.select(exprs)?;
        }
        let plan = df.into_unoptimized_plan();
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(Self {
            home,
            plan,
            schema,
            table_type,
        })
    }
}

/// Whether `e` can be evaluated on rows outside the scope without telling anything: it
/// cannot fail (no arithmetic, no function, no cast that may reject a value), so pushing it
/// below the scope's filter is safe. Other filters stay above the scoped relation.
fn harmless(e: &Expr) -> bool {
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(b) => {
            use datafusion::logical_expr::Operator::*;
            matches!(
                b.op,
                Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom
            ) && harmless(&b.left)
                && harmless(&b.right)
        }
        Expr::Not(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => harmless(e),
        Expr::Between(b) => harmless(&b.expr) && harmless(&b.low) && harmless(&b.high),
        Expr::InList(l) => harmless(&l.expr) && l.list.iter().all(harmless),
        Expr::Like(l) => l.escape_char.is_none() && harmless(&l.expr) && harmless(&l.pattern),
        Expr::TryCast(c) => harmless(&c.expr),
        Expr::Cast(c) => {
            matches!(c.expr.as_ref(), Expr::Literal(..))
                || matches!(
                    c.field.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                ) && harmless(&c.expr)
        }
        _ => false,
    }
}

impl std::fmt::Debug for ScopedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedTable")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if harmless(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut df = DataFrame::new(self.home.state(), self.plan.clone());
        for f in filters {
            // The query's qualifier (its name or alias for this table) means nothing here.
            let f = f
                .clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => {
                            Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                        }
                        e => Transformed::no(e),
                    })
                })?
                .data;
            df = df.filter(f)?;
        }
        if let Some(p) = projection {
            let exprs: Vec<Expr> = p
                .iter()
                .map(|i| col(Column::new_unqualified(self.schema.field(*i).name())))
                .collect();
            df = df.select(exprs)?;
        }
        if let Some(n) = limit {
            df = df.limit(0, Some(n))?;
        }
        df.create_physical_plan().await
    }
}
