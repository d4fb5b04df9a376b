"""Apache Superset engine spec for rxcube's Arrow Flight SQL server.

Superset finds it through the `superset.db_engine_specs` entry point (pyproject.toml) and uses it
for every database whose SQLAlchemy URI starts with `datafusion://`, the dialect flightsql-dbapi
registers as an entry point:

    datafusion://USER:PASSWORD@HOST:PORT?insecure=true     (plaintext; drop insecure for TLS)

(`datafusion+flightsql://` is registered only when `flightsql.sqlalchemy` is imported, which
Superset never does, so it fails with "Can't load plugin".)

What it gives Superset:
- time grains as rxcube computes them: hour, day, week (ISO, Monday first), month, quarter and
  year with DataFusion's `date_trunc`, and the pay period (14 days from the cube's anchor) with
  rxcube's own `rx_period_start('pay_period', ts, anchor)`. The pay period is the grain `P2W`;
  Superset knows only its built-in grains unless told, so superset_config.py must hold
  `TIME_GRAIN_ADDONS = rxcube_superset.TIME_GRAIN_ADDONS` (and
  `RXCUBE_PAY_PERIOD_ANCHOR = "YYYY-MM-DD"` for a warehouse whose cube.toml moves the anchor);
- time literals as DataFusion reads them (`TIMESTAMP '...'`, `DATE '...'`);
- type names of results: flightsql-dbapi describes result columns by SQLAlchemy type classes
  (`TIMESTAMP`, not `TIMESTAMP()`), which Superset's base spec cannot name, so SQL Lab would
  guess each column's type from the values it got back; the spec names them (`TIMESTAMP`,
  `FLOAT`, `BIGINT`, `TEXT`, ...). Table columns come from the server's Arrow schemas through
  the dialect (`period_start`: Arrow `Timestamp(µs)`, SQL TIMESTAMP, temporal);
- quoting and LIMIT: double-quoted identifiers (forced on aliases: DataFusion folds unquoted
  names to lower case), `LIMIT n` appended or lowered by Superset itself.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import types
from superset.db_engine_specs.base import BaseEngineSpec, LimitMethod

__all__ = ["RxcubeEngineSpec", "TIME_GRAIN_ADDONS", "PAY_PERIOD", "DEFAULT_PAY_PERIOD_ANCHOR"]

# The pay period's ISO 8601 duration: the grain Superset's charts ask for.
PAY_PERIOD = "P2W"
# For superset_config.py: `TIME_GRAIN_ADDONS = rxcube_superset.TIME_GRAIN_ADDONS`.
TIME_GRAIN_ADDONS = {PAY_PERIOD: "Pay period"}
# The cube's default `pay_period_anchor` (crates/rxcube-cube/cube.toml): a Sunday.
DEFAULT_PAY_PERIOD_ANCHOR = "2024-01-07"


def _type_instance(t: Any) -> Any:
    """A SQLAlchemy type instance for what flightsql-dbapi hands over (often the class)."""
    if isinstance(t, type) and issubclass(t, types.TypeEngine):
        return t()
    return t


class RxcubeEngineSpec(BaseEngineSpec):
    """rxcube over Arrow Flight SQL (flightsql-dbapi's `datafusion` SQLAlchemy dialect)."""

    engine = "datafusion"
    engine_name = "rxcube (Arrow Flight SQL)"
    default_driver = "flightsql"
    sqlalchemy_uri_placeholder = "datafusion://user:password@host:port?insecure=true"

    # rxcube is read-only: no uploads, no DML.
    supports_file_upload = False
    # Superset appends `LIMIT n` (or lowers a smaller one the query has).
    limit_method = LimitMethod.FORCE_LIMIT
    allows_joins = True
    allows_subqueries = True
    allows_alias_in_select = True
    allows_alias_in_orderby = True
    # DataFusion folds unquoted identifiers to lower case: quote every alias Superset makes.
    force_column_alias_quotes = True
    # Catalog `rxcube`, schemas `public`, `cube` (and `rollups`, `system` for division users).
    supports_catalog = False
    supports_dynamic_schema = False

    _time_grain_expressions = {
        None: "{col}",
        "PT1H": "date_trunc('hour', {col})",
        "P1D": "date_trunc('day', {col})",
        "P1W": "date_trunc('week', {col})",
        # A local time (TIMESTAMP of any precision) or a DATE, as the cube's period_start is.
        PAY_PERIOD: "rx_period_start('pay_period', {col}, DATE '{anchor}')",
        "P1M": "date_trunc('month', {col})",
        "P3M": "date_trunc('quarter', {col})",
        "P1Y": "date_trunc('year', {col})",
    }

    @classmethod
    def pay_period_anchor(cls) -> str:
        """The anchor of pay periods: Superset's `RXCUBE_PAY_PERIOD_ANCHOR`, else the cube's
        default."""
        anchor = DEFAULT_PAY_PERIOD_ANCHOR
        try:
            from flask import current_app

            anchor = current_app.config.get("RXCUBE_PAY_PERIOD_ANCHOR") or anchor
        except RuntimeError:  # outside an application context
            pass
        return datetime.date.fromisoformat(str(anchor)).isoformat()

    @classmethod
    def get_time_grain_expressions(cls) -> dict[str | None, str]:
        anchor = cls.pay_period_anchor()
        return {
            grain: expr.replace("{anchor}", anchor)
            for grain, expr in super().get_time_grain_expressions().items()
        }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        return "to_timestamp_seconds({col})"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "to_timestamp_millis({col})"

    @classmethod
    def convert_dttm(
        cls, target_type: str, dttm: datetime.datetime, db_extra: dict[str, Any] | None = None
    ) -> str | None:
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date) and not isinstance(sqla_type, types.DateTime):
            return f"DATE '{dttm.date().isoformat()}'"
        if isinstance(sqla_type, (types.DateTime, types.TIMESTAMP)):
            return f"TIMESTAMP '{dttm.isoformat(sep=' ', timespec='microseconds')}'"
        return None

    @classmethod
    def get_datatype(cls, type_code: Any) -> str | None:
        """The type name of a result column (flightsql-dbapi describes them by SQLAlchemy type
        classes)."""
        t = _type_instance(type_code)
        if isinstance(t, types.TypeEngine):
            return str(t.compile()).upper()
        return super().get_datatype(type_code)
