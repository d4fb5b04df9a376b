-- Diagnostic: volume and processing per day of one week at one pharmacy: local fills, on-time
-- share and the median processing minutes.
SELECT CAST(period_start AS DATE) AS day, day_of_week, local_fills,
       round(on_time_pct, 1) AS on_time_pct, round(median_processing_minutes, 1) AS median_minutes
FROM cube.volume
WHERE level = 'pharmacy' AND node = 'RX101' AND grain = 'day'
  AND period_start >= TIMESTAMP '2024-02-19 00:00:00' AND period_start < TIMESTAMP '2024-02-26 00:00:00'
ORDER BY day;
