"""The labeling hot path's SQL: the lease, the live-lease read, the lease's insert, the locked
assignment, the one-statement submit (PostgreSQL) and the day count, each with why it is written
so. Raw SQL because these run on every "next" and submit, where the ORM spent more time compiling
than the database spent answering; together, a reviewer reads all the queue asks of the database
in one place."""

# The lease is one UPDATE: pick the first comparison of a kind, lock it, take a slot, return its
# responses. On PostgreSQL the pick is ``FOR UPDATE SKIP LOCKED``: a comparison another request
# is leasing right now is passed over, not waited for; a comparison whose slot count a
# committed lease changed after our snapshot is re-read when locked (READ COMMITTED re-checks
# the row's WHERE against its newest version), so ``slots_taken < k`` holds at the moment the
# slot is taken. On SQLite writers are serialised (BEGIN IMMEDIATE) and the clause is empty.
# Raw SQL because this runs on every "next" and the ORM spent more time compiling the
# Exists/OuterRef version than PostgreSQL spent answering it.
LEASE_SQL = """
UPDATE annotation_comparison SET slots_taken = slots_taken + 1
WHERE id = (
    SELECT c.id FROM annotation_comparison c
    WHERE c.project_id = %(project)s AND c.is_gold = %(gold)s AND c.source <> %(imported)s AND c.source <> %(private)s
      AND c.slots_taken >= %(low)s AND c.slots_taken < %(high)s
      -- repeat_of_id IS NULL: the unique (comparison, labeler) index is partial (a swapped repeat
      -- is a second assignment), and only a query that says so is answered from it; a repeat
      -- exists only beside its original assignment, so the answer is the same.
      AND NOT EXISTS (
          SELECT 1 FROM annotation_assignment a WHERE a.comparison_id = c.id AND a.labeler_id = %(labeler)s AND a.repeat_of_id IS NULL
      )
    -- priority: the judge's ambiguous pairs first among equals (Project.ambiguous_first); the
    -- comparison_queue index is in this order, so the pick is still one index scan.
    ORDER BY c.slots_taken, c.priority DESC, c.id
    LIMIT 1{lock}
)
RETURNING id, response_a_id, response_b_id
"""


# A swapped repeat (``Project.repeat_rate`` of leases, a few percent): the labeler's newest
# judgment in the project that may come back, leased to them again with its sides swapped (the
# side that was on the right is now on the left), in one INSERT ... SELECT, atomic by itself on
# both databases. A judgment may come back when its comparison is regular work (not gold, not
# imported with its labels, not a live turn), it never came back before, and at least ``gap`` of
# the labeler's judgments in the project were submitted after it: it is strictly older than their
# gap-th newest, which a short backward scan of ``judgment_labeler_recent`` finds once per
# statement. The pick scans backward from there too (newest first), so its cost does not grow with
# the labeler's history, and a repeat comes about ``gap`` judgments after its original. No slot is
# taken: a repeat is no label toward k. Two tabs picking the same judgment at once: the unique
# ``repeat_of`` lets one through and fails the other, which leases normally.
REPEAT_LEASE_SQL = """
INSERT INTO annotation_assignment (comparison_id, labeler_id, left_response_id, state, leased_at, expires_at, skip_reason, repeat_of_id)
SELECT j.comparison_id, j.labeler_id,
       CASE WHEN j.left_response_id = j.chosen_response_id THEN j.rejected_response_id ELSE j.chosen_response_id END,
       'leased', %(now)s, %(expires)s, '', j.id
FROM annotation_judgment j JOIN annotation_comparison c ON c.id = j.comparison_id
WHERE j.labeler_id = %(labeler)s AND c.project_id = %(project)s AND c.is_gold = %(false)s
  AND c.source <> %(imported)s AND c.source <> %(live)s
  AND NOT EXISTS (SELECT 1 FROM annotation_assignment r WHERE r.repeat_of_id = j.id)
  AND j.submitted_at < (
      SELECT j2.submitted_at FROM annotation_judgment j2 JOIN annotation_comparison c2 ON c2.id = j2.comparison_id
      WHERE j2.labeler_id = %(labeler)s AND c2.project_id = %(project)s
      ORDER BY j2.submitted_at DESC LIMIT 1 OFFSET %(newer)s
  )
ORDER BY j.submitted_at DESC, j.id DESC
LIMIT 1
RETURNING id, comparison_id, left_response_id, repeat_of_id
"""


# A labeler's open leases of the normal queue. The lease of a live dialogue's turn is the live
# page's: it is neither served on the labeling page nor counted against the lease cap, so a tab
# closed mid-dialogue blocks nothing.
LIVE_LEASES_SQL = """
SELECT a.id, a.comparison_id, a.left_response_id, a.leased_at, a.expires_at, a.repeat_of_id
FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
WHERE a.labeler_id = %s AND a.state = 'leased' AND a.expires_at > %s AND c.project_id = %s AND c.source <> 'live'
ORDER BY a.leased_at, a.id
"""


# PostgreSQL: the slot and the assignment in one statement, atomic by itself (no BEGIN/COMMIT
# round trips): the UPDATE above as a data-modifying CTE feeding the INSERT. A unique violation
# (the same labeler leasing in two tabs) fails the whole statement, slot included.
LEASE_INSERT_SQL = """
WITH picked AS ({lease})
INSERT INTO annotation_assignment (comparison_id, labeler_id, left_response_id, state, leased_at, expires_at, skip_reason)
SELECT id, %(labeler)s, CASE WHEN %(left_is_a)s THEN response_a_id ELSE response_b_id END, 'leased', %(now)s, %(expires)s, ''
FROM picked
RETURNING id, comparison_id, left_response_id
"""


# The caller's own assignment with what a submit needs of its comparison and project (whether it
# asks the safety bin), row-locked, in a project where the caller still has a role (a superuser
# always has one). Raw SQL for the same reason as the lease: this runs on every submit.
LOCKED_ASSIGNMENT_SQL = """
SELECT a.id, a.comparison_id, a.labeler_id, a.left_response_id, a.state, a.leased_at, a.expires_at,
       a.ended_at, a.skip_reason, a.repeat_of_id, c.project_id, c.prompt_id, c.response_a_id, c.response_b_id, p.ask_safety
FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
     JOIN annotation_project p ON p.id = c.project_id
WHERE a.id = %(assignment)s AND a.labeler_id = %(labeler)s
  AND (%(superuser)s OR EXISTS (
      SELECT 1 FROM annotation_membership m WHERE m.project_id = c.project_id AND m.user_id = %(labeler)s
  )){lock}
"""


# PostgreSQL, a verdict without an edit (most submits): end the lease and write the judgment in
# one statement, atomic by itself. It matches only the caller's own live lease in a project they
# belong to, with a safety bin exactly when the project asks one; anything else (replay, expired,
# foreign, unknown, a bin missing or unasked) matches nothing and takes the locked path below,
# which says exactly why. So does a swapped repeat, whose verdict is a RepeatJudgment.
SUBMIT_SQL = """
WITH ended AS (
    UPDATE annotation_assignment AS a SET state = 'submitted', ended_at = %(now)s
    FROM annotation_comparison c JOIN annotation_project p ON p.id = c.project_id
    WHERE a.id = %(assignment)s AND a.labeler_id = %(labeler)s AND a.state = 'leased' AND a.expires_at > %(now)s
      AND a.repeat_of_id IS NULL AND c.id = a.comparison_id AND p.ask_safety = %(has_safety)s
      AND (%(superuser)s OR EXISTS (
          SELECT 1 FROM annotation_membership m WHERE m.project_id = c.project_id AND m.user_id = %(labeler)s
      ))
    RETURNING a.id, a.comparison_id, a.left_response_id, a.leased_at, c.project_id,
              CASE WHEN a.left_response_id = c.response_a_id THEN c.response_b_id ELSE c.response_a_id END AS right_id
), counted AS (  -- "done today" (LabelerDay), in the same statement as the judgment
    INSERT INTO annotation_labelerday (labeler_id, project_id, day, judgments)
    SELECT %(labeler)s, project_id, %(day)s, 1 FROM ended
    ON CONFLICT (labeler_id, project_id, day) DO UPDATE SET judgments = annotation_labelerday.judgments + 1
)
INSERT INTO annotation_judgment (
    assignment_id, comparison_id, labeler_id, chosen_response_id, rejected_response_id, strength,
    left_response_id, both_bad, safety, edited_response_id, attributes, flags, rationale, leased_at,
    submitted_at, time_on_task_ms, idempotency_key
)
SELECT id, comparison_id, %(labeler)s,
       CASE WHEN %(chosen_left)s THEN left_response_id ELSE right_id END,
       CASE WHEN %(chosen_left)s THEN right_id ELSE left_response_id END,
       %(strength)s, left_response_id, %(both_bad)s, %(safety)s, NULL,
       jsonb_strip_nulls(jsonb_build_object(left_response_id::text, %(attributes_left)s::jsonb, right_id::text, %(attributes_right)s::jsonb)),
       jsonb_strip_nulls(jsonb_build_object(left_response_id::text, %(flags_left)s::jsonb, right_id::text, %(flags_right)s::jsonb)),
       %(rationale)s, leased_at, %(now)s, floor(extract(epoch FROM (%(now)s - leased_at)) * 1000)::int, %(key)s
FROM ended
RETURNING id, assignment_id, comparison_id, chosen_response_id, rejected_response_id, left_response_id,
          attributes, flags, leased_at, time_on_task_ms, (SELECT project_id FROM ended)
"""


# The locked path's "done today" (LabelerDay), in the submit's transaction; SQLite and
# PostgreSQL both take ON CONFLICT ... DO UPDATE.
COUNT_SQL = """
INSERT INTO annotation_labelerday (labeler_id, project_id, day, judgments) VALUES (%s, %s, %s, 1)
ON CONFLICT (labeler_id, project_id, day) DO UPDATE SET judgments = annotation_labelerday.judgments + 1
"""
