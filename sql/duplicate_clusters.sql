-- Duplicate clusters: each kept representative with the copies rejected as its duplicates (same
-- bytes, or perceptual hashes of a copy), and each group of near-identical shots (bursts, lab
-- sittings: embeddings above the duplicate threshold; kept unless --drop-near-identical), largest first.
-- requires: scores
-- param min_size = 2 in 1..: only clusters with at least this many images (representative included)
-- param limit = 100 in 1..: rows to return
WITH groups AS (
    SELECT 'duplicate' AS kind, d.dup_of AS representative, any_value(r.identity) AS identity, count(*) + 1 AS size,
           count(DISTINCT d.identity) FILTER (WHERE d.identity IS DISTINCT FROM r.identity) AS other_identities,
           round(min(d.dup_sim), 4) AS min_sim, list(d.image_id ORDER BY d.dup_sim DESC) AS duplicates
    FROM scores d JOIN scores r ON r.image_id = d.dup_of
    WHERE d.dup_of IS NOT NULL
    GROUP BY d.dup_of
    UNION ALL
    SELECT 'near_identical', d.near_identical_of, any_value(r.identity), count(*) + 1,
           count(DISTINCT d.identity) FILTER (WHERE d.identity IS DISTINCT FROM r.identity),
           round(min(d.near_sim), 4), list(d.image_id ORDER BY d.near_sim DESC)
    FROM scores d JOIN scores r ON r.image_id = d.near_identical_of
    WHERE d.near_identical_of IS NOT NULL
    GROUP BY d.near_identical_of
)
SELECT * FROM groups
WHERE size >= $min_size
ORDER BY size DESC, kind, representative
LIMIT $limit;
