-- Drop rates by demographic group and reason: for each attribute value, the share of its images
-- rejected by each reason (and by any), against the rest of its attribute. People are the unit:
-- one person's photos are not independent samples (the same face, lighting and camera), so each
-- person counts once, with the share of their photos dropped, and the test is a Welch z on those
-- per-person shares (a cluster-robust comparison). A group is flagged when it is dropped
-- significantly MORE than the rest (one-sided z above z_crit); a group of fewer than min_people
-- people is listed as too few people, never flagged: which group does cleaning remove, by which rule?
-- requires: scores, attributes
-- param z_crit = 3.0 in 0..100: z above which a group is flagged (3.0: about p < 0.0015 one-sided)
-- param min_people = 5 in 1..: groups of fewer people are listed but never flagged
WITH rows AS (
    SELECT v.attribute, v.value, coalesce(s.identity, s.image_id) AS person, s.keep, s.reason
    FROM scores s JOIN attributes v ON v.image_id = s.image_id
),
reasons AS (
    SELECT DISTINCT reason FROM rows WHERE NOT keep
    UNION ALL SELECT 'any'
),
people AS (
    SELECT attribute, value, person, count(*) AS n FROM rows GROUP BY ALL
),
dropped AS (
    SELECT attribute, value, person, reason, count(*) AS k FROM rows WHERE NOT keep GROUP BY ALL
    UNION ALL
    SELECT attribute, value, person, 'any', count(*) FROM rows WHERE NOT keep GROUP BY ALL
),
u AS (  -- one row per person, group and reason: the share of the person's photos dropped
    SELECT p.attribute, p.value, p.person, r.reason, p.n, coalesce(d.k, 0) AS k, coalesce(d.k, 0) / p.n AS rate
    FROM people p CROSS JOIN reasons r
    LEFT JOIN dropped d ON d.attribute = p.attribute AND d.value = p.value AND d.person = p.person AND d.reason = r.reason
),
g AS (
    SELECT attribute, value, reason, count(*) AS m, sum(n) AS n, sum(k) AS k, avg(rate) AS p, var_samp(rate) AS v
    FROM u GROUP BY ALL
),
t AS (  -- the rest of the attribute, from sums over every group of it
    SELECT g.*, sum(m) OVER w - m AS m_rest, sum(n) OVER w - n AS n_rest, sum(k) OVER w - k AS k_rest,
           (sum(m * p) OVER w - m * p) / nullif(sum(m) OVER w - m, 0) AS p_rest,
           sum((m - 1) * coalesce(v, 0) + m * p * p) OVER w - ((m - 1) * coalesce(v, 0) + m * p * p) AS ss_rest
    FROM g WINDOW w AS (PARTITION BY attribute, reason)
),
c AS (
    SELECT *, (ss_rest - m_rest * p_rest * p_rest) / nullif(m_rest - 1, 0) AS v_rest
    FROM t
),
z AS (
    SELECT *, (p - p_rest) / nullif(sqrt(coalesce(v, 0) / m + coalesce(v_rest, 0) / nullif(m_rest, 0)), 0) AS zv,
           sqrt(coalesce(v, 0) / m) AS se
    FROM c
)
SELECT attribute, value, reason, m AS people, n AS images, k AS dropped,
       round(100 * k / n, 2) AS pct_dropped,
       round(100 * p, 2) AS pct_dropped_per_person,
       round(100 * greatest(0, p - 1.96 * se), 2) AS pct_lo,
       round(100 * least(1, p + 1.96 * se), 2) AS pct_hi,
       round(100 * p_rest, 2) AS pct_dropped_rest,
       round(zv, 2) AS z,
       m >= $min_people AND coalesce(zv, 0) > $z_crit AS flagged,
       CASE WHEN m < $min_people THEN 'too few people' END AS note
FROM z
ORDER BY attribute, reason = 'any' DESC, reason, n DESC, value;
