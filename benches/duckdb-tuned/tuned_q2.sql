-- Q2 (rxcube's copy: keyed by (pharmacy_id, UTC hour), as pharmacy ids are text; the original
-- packed an integer pharmacy id and the hour into one BIGINT): labor_cost_per_rx per region per month, as was, over the whole chain.
WITH
tz AS (      -- each pharmacy's zone: its latest org row's (default America/Los_Angeles)
  SELECT pharmacy_id, coalesce(timezone, 'America/Los_Angeles') AS tz FROM pharmacies
  QUALIFY row_number() OVER (PARTITION BY pharmacy_id ORDER BY valid_from DESC) = 1),
rng AS (     -- UTC hours spanned by POS lines and shifts, from the Parquet footers (no data read)
  SELECT CAST(epoch(min(lo)) // 3600 AS BIGINT) AS h0, CAST(epoch(max(hi)) // 3600 AS BIGINT) AS h1 FROM (
    SELECT CAST(stats_min_value AS TIMESTAMPTZ) AS lo, CAST(stats_max_value AS TIMESTAMPTZ) AS hi
    FROM pos_meta WHERE path_in_schema = 'sold_at'
    UNION ALL
    SELECT CAST(stats_min_value AS TIMESTAMPTZ), CAST(stats_max_value AS TIMESTAMPTZ)
    FROM payroll_meta WHERE path_in_schema IN ('shift_start', 'shift_end'))),
zh AS (      -- (zone, UTC hour) -> local date: one ICU call per zone and hour
  SELECT z.tz, h, CAST(timezone(z.tz, to_timestamp(h * 3600)) AS DATE) AS ld
  FROM (SELECT DISTINCT tz FROM tz) z, (SELECT unnest(range(h0, h1 + 1)) AS h FROM rng)),
ph AS (      -- (pharmacy, UTC hour) -> region of the org row in effect on that local date, local month
  SELECT t.pharmacy_id, zh.h, o.region,
         CAST(date_trunc('month', zh.ld) AS TIMESTAMP) AS month
  FROM tz t JOIN zh USING (tz)
  JOIN pharmacies o ON o.pharmacy_id = t.pharmacy_id AND o.valid_from <= zh.ld
                   AND (o.valid_to IS NULL OR zh.ld < o.valid_to)),
sales AS (   -- Rx sold per pharmacy and UTC hour
  SELECT pharmacy_id, epoch_us(sold_at) // 3600000000 AS h,
         sum(quantity) FILTER (WHERE kind = 'rx') AS rx_sold
  FROM pos GROUP BY 1, 2),
labor AS (   -- each shift's cost spread over the UTC hours it touches, pro rata by time worked
  SELECT pharmacy_id, h,
         sum(cost * (least(e, (h + 1) * 3600000000) - greatest(s, h * 3600000000)) / (e - s)) AS labor_cost
  FROM (SELECT pharmacy_id, CAST(cost AS DOUBLE) AS cost, epoch_us(shift_start) AS s, epoch_us(shift_end) AS e,
               unnest(range(epoch_us(shift_start) // 3600000000, (epoch_us(shift_end) - 1) // 3600000000 + 1)) AS h
        FROM payroll)
  GROUP BY 1, 2),
cells AS (
  SELECT p.region, p.month, coalesce(sum(l.labor_cost), 0) AS labor_cost,
         CAST(coalesce(sum(s.rx_sold), 0) AS DOUBLE) AS rx_sold
  FROM labor l FULL JOIN sales s ON s.pharmacy_id = l.pharmacy_id AND s.h = l.h
  JOIN ph p ON p.pharmacy_id = coalesce(l.pharmacy_id, s.pharmacy_id) AND p.h = coalesce(l.h, s.h)
  GROUP BY 1, 2)
SELECT region AS node, month AS period_start, CASE WHEN rx_sold > 0 THEN labor_cost / rx_sold END AS value,
       labor_cost AS numerator, rx_sold AS denominator
FROM cells
