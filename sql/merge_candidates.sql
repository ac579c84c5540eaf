-- Identity merge candidates: identity pairs whose dominant centers are closer than the merge
-- threshold (likely the same person under two labels). The smaller is relabelled as the larger
-- (--merge relabel, the default), listed (flag) or rejected (reject).
-- requires: identities
-- param limit = 100 in 1..: rows to return
SELECT i.identity, i.faces, i.merge_into, t.faces AS merge_into_faces, round(i.merge_sim, 4) AS sim,
       round(i.dominant_share, 3) AS dominant_share
FROM identities i LEFT JOIN identities t ON t.identity = i.merge_into
WHERE i.merge_into IS NOT NULL
ORDER BY sim DESC, i.identity
LIMIT $limit;
