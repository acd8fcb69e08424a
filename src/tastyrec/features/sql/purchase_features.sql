-- The seed's average weekly / monthly / yearly spend (total / (periods between first and last
-- order date + 1)), plus order count and recency; all from orders strictly before the snapshot.
-- Periods count calendar boundaries crossed, as Snowflake's TIMESTAMPDIFF does in the seed:
-- DuckDB's date_diff does that for years and months, but counts whole 7-day spans for weeks,
-- so weeks are counted between the Mondays that start them. Totals are summed per order (the
-- seed summed order_total over order lines, counting an order once per line).
SELECT s.ts AS event_timestamp, o.customer_id,
       round(sum(o.order_total) / (date_diff('year', min(o.order_ts)::DATE, max(o.order_ts)::DATE) + 1), 2)::DOUBLE
           AS avg_yearly_purchase_amount,
       round(sum(o.order_total) / (date_diff('month', min(o.order_ts)::DATE, max(o.order_ts)::DATE) + 1), 2)::DOUBLE
           AS avg_monthly_purchase_amount,
       round(sum(o.order_total) / ((date_trunc('week', max(o.order_ts))::DATE
                                    - date_trunc('week', min(o.order_ts))::DATE) // 7 + 1), 2)::DOUBLE
           AS avg_weekly_purchase_amount,
       count(*)::DOUBLE AS order_count,
       date_diff('day', max(o.order_ts), s.ts)::DOUBLE AS days_since_last_order
FROM snapshots s
JOIN raw_pos.order_header o ON o.order_ts < s.ts AND o.customer_id IS NOT NULL
GROUP BY s.ts, o.customer_id
ORDER BY s.ts, o.customer_id;
