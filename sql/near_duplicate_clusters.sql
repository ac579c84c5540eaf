-- Near-duplicate clusters: each kept representative with the images rejected as its duplicates
-- (same bytes, or embeddings above the duplicate threshold), largest clusters first.
-- requires: scores
-- param min_size = 2 in 1..: only clusters with at least this many images (representative included)
-- param limit = 100 in 1..: rows to return
SELECT d.dup_of AS representative,
       any_value(r.identity) AS identity,
       count(*) + 1 AS size,
       count(DISTINCT d.identity) FILTER (WHERE d.identity IS DISTINCT FROM r.identity) AS other_identities,
       round(min(d.dup_sim), 4) AS min_sim,
       list(d.image_id ORDER BY d.dup_sim DESC) AS duplicates
FROM scores d JOIN scores r ON r.image_id = d.dup_of
WHERE d.dup_of IS NOT NULL
GROUP BY d.dup_of
HAVING count(*) + 1 >= $min_size
ORDER BY size DESC, representative
LIMIT $limit;
