//! What the server tells clients about itself: `GetSqlInfo` (every standard key, so JDBC's
//! connect-time calls all get an answer), `GetXdbcTypeInfo`, and the primary keys of the
//! contract tables.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedSubqueries, SqlSupportedUnions, SqlSupportsConvert, XdbcDataType,
    XdbcDatetimeSubcode,
};
use rxcube_model::TableName;

fn bits<T: Into<i32>>(values: impl IntoIterator<Item = T>) -> i32 {
    values.into_iter().fold(0, |acc, v| acc | (1 << v.into()))
}

/// The answers to `GetSqlInfo`.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "rxcube");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerSubstraitMinVersion, "");
    b.append(SqlInfo::FlightSqlServerSubstraitMaxVersion, "");
    // SQL_SUPPORTED_TRANSACTION_NONE
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS.as_slice());
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS.as_slice());
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS.as_slice());
    b.append(
        SqlInfo::SqlSystemFunctions,
        ["current_user", "version"].as_slice(),
    );
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS.as_slice());
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    let convertible = [
        SqlSupportsConvert::SqlConvertBigint,
        SqlSupportsConvert::SqlConvertBit,
        SqlSupportsConvert::SqlConvertChar,
        SqlSupportsConvert::SqlConvertDate,
        SqlSupportsConvert::SqlConvertDecimal,
        SqlSupportsConvert::SqlConvertFloat,
        SqlSupportsConvert::SqlConvertInteger,
        SqlSupportsConvert::SqlConvertReal,
        SqlSupportsConvert::SqlConvertSmallint,
        SqlSupportsConvert::SqlConvertTimestamp,
        SqlSupportsConvert::SqlConvertTinyint,
        SqlSupportsConvert::SqlConvertVarchar,
    ];
    let convert: BTreeMap<i32, Vec<i32>> = convertible
        .iter()
        .map(|from| {
            (
                *from as i32,
                convertible.iter().map(|to| *to as i32).collect(),
            )
        })
        .collect();
    b.append(SqlInfo::SqlSupportsConvert, convert);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    // SQL_GROUP_BY_UNRELATED | SQL_GROUP_BY_BEYOND_SELECT
    b.append(SqlInfo::SqlSupportedGroupBy, bits([0, 1]));
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    // SQL_MINIMUM_GRAMMAR | SQL_CORE_GRAMMAR
    b.append(SqlInfo::SqlSupportedGrammar, bits([0, 1]));
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    // SQL_FULL_OUTER_JOINS
    b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits([
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits([
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    for key in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        // 0: no known limit.
        b.append(key, 0i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    // SQL_TRANSACTION_NONE
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    // SQL_RESULT_SET_TYPE_FORWARD_ONLY
    b.append(SqlInfo::SqlSupportedResultSetTypes, bits([1]));
    for key in [
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
    ] {
        // SQL_RESULT_SET_CONCURRENCY_READ_ONLY
        b.append(key, bits([1]));
    }
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    // Every key appended above is a constant of the spec: building cannot fail.
    b.build().unwrap_or_else(|e| panic!("GetSqlInfo data: {e}"))
});

const KEYWORDS: [&str; 12] = [
    "EXPLAIN", "ANALYZE", "VERBOSE", "QUALIFY", "UNNEST", "RANGE", "GROUPS", "ILIKE", "SIMILAR",
    "ARRAY", "STRUCT", "TRY_CAST",
];
const NUMERIC_FUNCTIONS: [&str; 14] = [
    "abs", "ceil", "floor", "round", "trunc", "power", "sqrt", "exp", "ln", "log", "log10", "sign",
    "greatest", "least",
];
const STRING_FUNCTIONS: [&str; 14] = [
    "length", "lower", "upper", "trim", "ltrim", "rtrim", "substr", "concat", "replace", "left",
    "right", "lpad", "rpad", "strpos",
];
const DATETIME_FUNCTIONS: [&str; 8] = [
    "now",
    "current_date",
    "date_trunc",
    "date_part",
    "date_bin",
    "to_timestamp",
    "extract",
    "make_date",
];

/// The answers to `GetXdbcTypeInfo`: the SQL types rxcube's relations use.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let t =
        |name: &str, data_type: XdbcDataType, size: Option<i32>, prefix: Option<&str>, subcode| {
            XdbcTypeInfo {
                type_name: name.into(),
                data_type,
                column_size: size,
                literal_prefix: prefix.map(str::to_string),
                literal_suffix: prefix.map(str::to_string),
                create_params: None,
                nullable: Nullable::NullabilityNullable,
                case_sensitive: data_type == XdbcDataType::XdbcVarchar,
                searchable: Searchable::Full,
                unsigned_attribute: Some(false),
                fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
                auto_increment: Some(false),
                local_type_name: Some(name.into()),
                minimum_scale: None,
                maximum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(38),
                sql_data_type: data_type,
                datetime_subcode: subcode,
                num_prec_radix: matches!(
                    data_type,
                    XdbcDataType::XdbcBigint
                        | XdbcDataType::XdbcInteger
                        | XdbcDataType::XdbcDouble
                        | XdbcDataType::XdbcDecimal
                )
                .then_some(10),
                interval_precision: None,
            }
        };
    let mut b = XdbcTypeInfoDataBuilder::new();
    // Ordered by data type, as the spec asks.
    b.append(t("BIGINT", XdbcDataType::XdbcBigint, Some(19), None, None));
    b.append(t("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, None));
    b.append(t(
        "DECIMAL",
        XdbcDataType::XdbcDecimal,
        Some(38),
        None,
        None,
    ));
    b.append(t(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(10),
        None,
        None,
    ));
    b.append(t("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None, None));
    b.append(t(
        "VARCHAR",
        XdbcDataType::XdbcVarchar,
        None,
        Some("'"),
        None,
    ));
    b.append(t("DATE", XdbcDataType::XdbcDate, Some(10), Some("'"), None));
    b.append(t(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(26),
        Some("'"),
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ));
    b.build()
        .unwrap_or_else(|e| panic!("GetXdbcTypeInfo data: {e}"))
});

/// The result schema of `GetPrimaryKeys`, as the Flight SQL spec gives it.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The primary key of the contract table `schema.table` (none for other relations), if
/// `visible` says the caller sees the table.
pub fn primary_keys(
    catalog: &str,
    schema: Option<&str>,
    table: &str,
    visible: impl Fn(&str, &str) -> bool,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let db_schema = rxcube_warehouse::catalog::DEFAULT_SCHEMA;
    let key: &[&str] = TableName::ALL
        .into_iter()
        .map(|t| t.def())
        .find(|d| d.name == table)
        .filter(|_| schema.is_none_or(|s| s == db_schema) && visible(db_schema, table))
        .map_or(&[], |d| d.key);
    let n = key.len();
    RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            Arc::new(StringArray::from(vec![catalog; n])),
            Arc::new(StringArray::from(vec![db_schema; n])),
            Arc::new(StringArray::from(vec![table; n])),
            Arc::new(StringArray::from(key.to_vec())),
            Arc::new(StringArray::from(vec![format!("{table}_pkey"); n])),
            Arc::new(Int32Array::from_iter_values(1..=n as i32)),
        ],
    )
}
