-- Identities by image count, before and after curation, in power-of-two buckets
-- (1, 2-3, 4-7, ...). After curation, identities with no kept image fall in 'none kept'.
-- requires: scores
WITH per_id AS (
    SELECT identity, count(*) AS n, count(*) FILTER (WHERE keep) AS n_kept FROM scores GROUP BY identity
),
buckets AS (
    SELECT 'before' AS stage, floor(log2(n))::INTEGER AS k FROM per_id
    UNION ALL
    SELECT 'after', CASE WHEN n_kept = 0 THEN -1 ELSE floor(log2(n_kept))::INTEGER END FROM per_id
)
SELECT CASE WHEN k < 0 THEN 'none kept'
            WHEN k = 0 THEN '1'
            ELSE (2 ** k)::BIGINT || '-' || (2 ** (k + 1) - 1)::BIGINT END AS images,
       count(*) FILTER (WHERE stage = 'before') AS identities_before,
       count(*) FILTER (WHERE stage = 'after') AS identities_after
FROM buckets
GROUP BY k
ORDER BY k;
