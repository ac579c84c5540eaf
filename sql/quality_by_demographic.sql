-- Quality and rejection rate by demographic group, each compared with the rest of its attribute.
-- People are the unit (one person's photos are not independent samples): each person counts once,
-- with the share of their photos rejected and their mean quality, and each comparison is a Welch z
-- over those per-person values (a cluster-robust test). A group is flagged when either |z| exceeds
-- z_crit (3.0 is about p < 0.003 two-sided, roughly a Bonferroni 0.05 over 15 groups); a group of
-- fewer than min_people people is listed as too few people, never flagged. This is the fairness
-- question the MagFace paper leaves open: does quality reject some groups more than others?
-- requires: scores, attributes
-- param z_crit = 3.0 in 0..100: |z| above which a group is flagged
-- param min_people = 5 in 1..: groups of fewer people are listed but never flagged
WITH rows AS (
    SELECT v.attribute, v.value, coalesce(s.identity, s.image_id) AS person, s.keep, s.quality
    FROM scores s JOIN attributes v ON v.image_id = s.image_id
),
u AS (  -- one row per person and group
    SELECT attribute, value, person, count(*) AS n, count(quality) AS nq,
           avg(CASE WHEN keep THEN 0.0 ELSE 1.0 END) AS rej, avg(quality) AS q
    FROM rows GROUP BY ALL
),
g AS (
    SELECT attribute, value, count(*) AS m, sum(n) AS n, sum(nq) AS nq,
           avg(rej) AS r, coalesce(var_samp(rej), 0) AS vr, count(q) AS mq, avg(q) AS q, coalesce(var_samp(q), 0) AS vq
    FROM u GROUP BY ALL
),
t AS (  -- the rest of the attribute, from sums over its groups
    SELECT g.*, sum(m) OVER w - m AS m_rest, sum(mq) OVER w - mq AS mq_rest,
           (sum(m * r) OVER w - m * r) / nullif(sum(m) OVER w - m, 0) AS r_rest,
           sum((m - 1) * vr + m * r * r) OVER w - ((m - 1) * vr + m * r * r) AS ssr_rest,
           (sum(mq * coalesce(q, 0)) OVER w - mq * coalesce(q, 0)) / nullif(sum(mq) OVER w - mq, 0) AS q_rest,
           sum(greatest(mq - 1, 0) * vq + mq * coalesce(q, 0) * coalesce(q, 0)) OVER w
               - (greatest(mq - 1, 0) * vq + mq * coalesce(q, 0) * coalesce(q, 0)) AS ssq_rest
    FROM g WINDOW w AS (PARTITION BY attribute)
),
c AS (
    SELECT *, (ssr_rest - m_rest * r_rest * r_rest) / nullif(m_rest - 1, 0) AS vr_rest,
           (ssq_rest - mq_rest * q_rest * q_rest) / nullif(mq_rest - 1, 0) AS vq_rest
    FROM t
),
z AS (
    SELECT *,
           (r - r_rest) / nullif(sqrt(vr / m + coalesce(vr_rest, 0) / nullif(m_rest, 0)), 0) AS z_rejection,
           (q - q_rest) / nullif(sqrt(vq / nullif(mq, 0) + coalesce(vq_rest, 0) / nullif(mq_rest, 0)), 0) AS z_quality
    FROM c
)
SELECT attribute, value, m AS people, n AS images, nq AS faces,
       round(100 * r, 2) AS pct_rejected, round(100 * r_rest, 2) AS pct_rejected_rest,
       round(z_rejection, 2) AS z_rejection,
       round(q, 2) AS mean_quality, round(q_rest, 2) AS mean_quality_rest,
       round(z_quality, 2) AS z_quality,
       m >= $min_people AND (abs(coalesce(z_rejection, 0)) > $z_crit OR abs(coalesce(z_quality, 0)) > $z_crit) AS flagged,
       CASE WHEN m < $min_people THEN 'too few people' END AS note
FROM z
ORDER BY attribute, n DESC, value;
