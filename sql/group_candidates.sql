-- Faces in group photos that match another identity: someone else's face in a photo filed under one
-- label (one of the people beside the labelled person) that matches that other identity's template
-- at the card's same-person threshold (a stranger comes this close 1 time in 1,000). Listed for a
-- reviewer, never added to that identity on its own.
-- requires: group_faces, curated
-- param limit = 100 in 1..: rows to return
SELECT g.candidate_for, g.identity AS filed_under, g.face_idx, g.role, round(g.other_sim, 4) AS sim, c.source,
       g.image_id
FROM group_faces g LEFT JOIN curated c USING (image_id)
WHERE g.candidate_for IS NOT NULL
ORDER BY g.candidate_for, sim DESC, g.image_id
LIMIT $limit;
