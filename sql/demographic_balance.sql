-- Demographic balance before vs after curation, per attribute (gender, age group, crawl metadata):
-- images and identities in each group, its share with a Wilson confidence interval, and the
-- share of the group's images that curation kept. Images without a value count as '(none)'.
-- requires: scores, attributes
-- param z = 1.96 in 0.01..10: normal quantile of the confidence interval (1.96 = 95%)
WITH attrs AS (SELECT DISTINCT attribute FROM attributes),
rows AS (
    SELECT a.attribute, coalesce(v.value, '(none)') AS value, s.identity, s.keep
    FROM scores s CROSS JOIN attrs a
    LEFT JOIN attributes v ON v.image_id = s.image_id AND v.attribute = a.attribute
),
g AS (
    SELECT attribute, value,
           count(*) AS images_before, count(*) FILTER (WHERE keep) AS images_after,
           count(DISTINCT identity) AS identities_before,
           count(DISTINCT identity) FILTER (WHERE keep) AS identities_after
    FROM rows GROUP BY attribute, value
),
t AS (
    SELECT *, sum(images_before) OVER (PARTITION BY attribute) AS n_b,
              sum(images_after) OVER (PARTITION BY attribute) AS n_a
    FROM g
),
p AS (SELECT *, images_before / greatest(n_b, 1) AS pb, images_after / greatest(n_a, 1) AS pa FROM t)
SELECT attribute, value, images_before, images_after, identities_before, identities_after,
       round(100 * pb, 2) AS pct_before,
       round(100 * (pb + $z * $z / (2 * n_b) - $z * sqrt(pb * (1 - pb) / n_b + $z * $z / (4 * n_b * n_b))) / (1 + $z * $z / n_b), 2) AS pct_before_lo,
       round(100 * (pb + $z * $z / (2 * n_b) + $z * sqrt(pb * (1 - pb) / n_b + $z * $z / (4 * n_b * n_b))) / (1 + $z * $z / n_b), 2) AS pct_before_hi,
       round(100 * pa, 2) AS pct_after,
       round(100 * (pa + $z * $z / (2 * n_a) - $z * sqrt(pa * (1 - pa) / n_a + $z * $z / (4 * n_a * n_a))) / (1 + $z * $z / n_a), 2) AS pct_after_lo,
       round(100 * (pa + $z * $z / (2 * n_a) + $z * sqrt(pa * (1 - pa) / n_a + $z * $z / (4 * n_a * n_a))) / (1 + $z * $z / n_a), 2) AS pct_after_hi,
       round(100.0 * images_after / images_before, 2) AS pct_kept
FROM p
ORDER BY attribute, images_before DESC, value;
