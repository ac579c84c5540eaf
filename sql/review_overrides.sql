-- Review overrides: every face whose decision a reviewer made (curate review import), with the
-- automatic decision it replaced, who decided and when, and the label it is exported under.
-- requires: scores
-- param limit = 1000 in 1..: rows to return
SELECT image_id, identity, label, auto_keep, auto_reason, keep, reason, review
FROM scores
WHERE review IS NOT NULL
ORDER BY identity, image_id
LIMIT $limit;
