-- rxcube's copy: keyed by (pharmacy_id, UTC hour), as pharmacy ids are text; the original packed an
-- integer pharmacy id and the hour into one BIGINT.
-- Q3: the score card of pharmacy 7 for the pay period starting 2024-02-18 (local), with peer
-- average and rank (every pharmacy of the period is computed: ranks are among all peers).
-- Facts are read only in [period start - 15 h, period end + 15 h) UTC (every zone's offset is
-- within 15 h), then kept exactly by the local date of their UTC hour.
WITH
tz AS (      -- each pharmacy's zone: its latest org row's (default America/Los_Angeles)
  SELECT pharmacy_id, coalesce(timezone, 'America/Los_Angeles') AS tz FROM pharmacies
  QUALIFY row_number() OVER (PARTITION BY pharmacy_id ORDER BY valid_from DESC) = 1),
rng AS (     -- hours of the window; a fill's received_at can be earlier: the earliest in the
             -- row groups whose filled_at overlaps the window (Parquet footers, no data read)
  SELECT CAST(epoch(least(TIMESTAMPTZ '2024-02-17 09:00:00+00', min(CAST(r.stats_min_value AS TIMESTAMPTZ)))) // 3600 AS BIGINT) AS h0,
         CAST(epoch(TIMESTAMPTZ '2024-03-03 15:00:00+00') // 3600 AS BIGINT) AS h1
  FROM rx_fills_meta r JOIN rx_fills_meta f USING (file_name, row_group_id)
  WHERE r.path_in_schema = 'received_at' AND f.path_in_schema = 'filled_at'
    AND CAST(f.stats_max_value AS TIMESTAMPTZ) >= TIMESTAMPTZ '2024-02-17 09:00:00+00'
    AND CAST(f.stats_min_value AS TIMESTAMPTZ) < TIMESTAMPTZ '2024-03-03 15:00:00+00'),
zh AS (      -- (zone, UTC hour) -> local date: one ICU call per zone and hour
  SELECT z.tz, h, CAST(timezone(z.tz, to_timestamp(h * 3600)) AS DATE) AS ld
  FROM (SELECT DISTINCT tz FROM tz) z, (SELECT unnest(range(h0, h1 + 1)) AS h FROM rng)),
ph AS (      -- (pharmacy, UTC hour) -> on-time target that local date; whether the hour is in the
             -- period (local date within it, an org row in effect)
  SELECT t.pharmacy_id, zh.h,
         coalesce(g.rx_target_minutes, 15) * 60000000 AS target_us,
         zh.ld >= DATE '2024-02-18' AND zh.ld < DATE '2024-03-03' AND o.pharmacy_id IS NOT NULL AS in_period
  FROM tz t JOIN zh USING (tz)
  LEFT JOIN peer_groups g ON g.pharmacy_id = t.pharmacy_id AND g.valid_from <= zh.ld
                          AND (g.valid_to IS NULL OR zh.ld < g.valid_to)
  LEFT JOIN pharmacies o ON o.pharmacy_id = t.pharmacy_id AND o.valid_from <= zh.ld
                         AND (o.valid_to IS NULL OR zh.ld < o.valid_to)),
fills AS (   -- per pharmacy and UTC hour of filled_at
  SELECT f.pharmacy_id, epoch_us(f.filled_at) // 3600000000 AS h,
         count(*) FILTER (WHERE f.channel = 'local') AS local_fills,
         count(*) FILTER (WHERE f.channel = 'local' AND epoch_us(f.filled_at) - epoch_us(f.received_at) < r.target_us) AS on_time,
         count(*) FILTER (WHERE f.fill_no >= 1) AS refills,
         count(*) FILTER (WHERE f.fill_no >= 1 AND f.channel = 'crp') AS crp_refills
  FROM rx_fills f
  JOIN ph r ON r.pharmacy_id = f.pharmacy_id AND r.h = epoch_us(f.received_at) // 3600000000
  WHERE f.filled_at >= TIMESTAMPTZ '2024-02-17 09:00:00+00' AND f.filled_at < TIMESTAMPTZ '2024-03-03 15:00:00+00'
  GROUP BY 1, 2),
sales AS (
  SELECT pharmacy_id, epoch_us(sold_at) // 3600000000 AS h,
         sum(quantity) FILTER (WHERE kind = 'rx') AS rx_sold, sum(amount) FILTER (WHERE kind = 'otc') AS otc_sales
  FROM pos
  WHERE sold_at >= TIMESTAMPTZ '2024-02-17 09:00:00+00' AND sold_at < TIMESTAMPTZ '2024-03-03 15:00:00+00'
  GROUP BY 1, 2),
survey AS (
  SELECT pharmacy_id, epoch_us(responded_at) // 3600000000 AS h,
         count(*) AS responses, count(*) FILTER (WHERE rating IN ('very_satisfied', 'satisfied')) AS happy
  FROM surveys
  WHERE responded_at >= TIMESTAMPTZ '2024-02-17 09:00:00+00' AND responded_at < TIMESTAMPTZ '2024-03-03 15:00:00+00'
  GROUP BY 1, 2),
labor AS (   -- shifts touching the window, spread over their UTC hours pro rata by time worked
  SELECT pharmacy_id, h,
         sum(cost * (least(e, (h + 1) * 3600000000) - greatest(s, h * 3600000000)) / (e - s)) AS labor_cost
  FROM (SELECT pharmacy_id, CAST(cost AS DOUBLE) AS cost, epoch_us(shift_start) AS s, epoch_us(shift_end) AS e,
               unnest(range(epoch_us(shift_start) // 3600000000, (epoch_us(shift_end) - 1) // 3600000000 + 1)) AS h
        FROM payroll
        WHERE shift_end >= TIMESTAMPTZ '2024-02-17 09:00:00+00' AND shift_start < TIMESTAMPTZ '2024-03-03 15:00:00+00')
  GROUP BY 1, 2),
facts AS (
  SELECT pharmacy_id, h, local_fills, on_time, refills, crp_refills, 0 AS rx_sold, 0 AS otc_sales, 0 AS responses, 0 AS happy, 0.0 AS labor_cost FROM fills
  UNION ALL SELECT pharmacy_id, h, 0, 0, 0, 0, rx_sold, otc_sales, 0, 0, 0.0 FROM sales
  UNION ALL SELECT pharmacy_id, h, 0, 0, 0, 0, 0, 0, responses, happy, 0.0 FROM survey
  UNION ALL SELECT pharmacy_id, h, 0, 0, 0, 0, 0, 0, 0, 0, labor_cost FROM labor),
cells AS (   -- per pharmacy: the period's components
  SELECT f.pharmacy_id,
         CAST(sum(local_fills) AS DOUBLE) AS local_fills, CAST(sum(on_time) AS DOUBLE) AS on_time,
         CAST(sum(refills) AS DOUBLE) AS refills, CAST(sum(crp_refills) AS DOUBLE) AS crp_refills,
         CAST(coalesce(sum(rx_sold), 0) AS DOUBLE) AS rx_sold, CAST(coalesce(sum(otc_sales), 0) AS DOUBLE) AS otc_sales,
         CAST(sum(responses) AS DOUBLE) AS responses, CAST(sum(happy) AS DOUBLE) AS happy,
         CAST(coalesce(sum(labor_cost), 0) AS DOUBLE) AS labor_cost
  FROM facts f JOIN ph p ON p.pharmacy_id = f.pharmacy_id AND p.h = f.h WHERE p.in_period GROUP BY 1),
peered AS (  -- peer group in effect on the period's last local day
  SELECT c.*, g.peer_group FROM cells c
  LEFT JOIN peer_groups g ON g.pharmacy_id = c.pharmacy_id AND g.valid_from <= DATE '2024-03-02'
                          AND (g.valid_to IS NULL OR DATE '2024-03-02' < g.valid_to)),
long AS (
  SELECT pharmacy_id, peer_group, m.metric, m.sign, m.num, m.den, CASE WHEN m.den > 0 THEN m.num / m.den END AS value
  FROM peered, LATERAL (VALUES
      ('labor_cost_per_rx', 1, labor_cost, rx_sold),
      ('csat_pct', -1, 100.0::DOUBLE * happy, responses),
      ('on_time_pct', -1, 100.0::DOUBLE * on_time, local_fills),
      ('otc_sales_per_rx', -1, otc_sales, rx_sold),
      ('crp_usage_pct', -1, 100.0::DOUBLE * crp_refills, refills)) AS m(metric, sign, num, den)),
ranked AS (
  SELECT pharmacy_id, metric, value,
         CASE WHEN peer_group IS NOT NULL AND sum(den) OVER w > 0 THEN sum(num) OVER w / sum(den) OVER w END AS peer_avg,
         CASE WHEN peer_group IS NOT NULL AND value IS NOT NULL THEN
           rank() OVER (PARTITION BY metric, peer_group, value IS NULL ORDER BY value * sign) END AS peer_rank
  FROM long WINDOW w AS (PARTITION BY metric, peer_group))
SELECT metric, value, peer_avg, peer_rank FROM ranked WHERE CAST(pharmacy_id AS VARCHAR) = '@NODE@'
