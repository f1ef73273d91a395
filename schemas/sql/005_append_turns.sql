-- Stores a batch of turns (the flow turns of a WF_HISTORY record) in one call instead of one
-- wf_append_turn call each: SessionStore::AppendTurns calls it inside its transaction.
-- wf_append_turn runs nine statements per turn; a batch of a hundred turns took a hundred round
-- trips and ~900 statements, and WF_HISTORY was stored at ~3,000 turns/s per heavy worker
-- against ~10,000 flow turns/s. Here the common case (every run new, no deleted session) takes
-- a handful of set-based statements for the whole batch.
--
-- p_turns: JSON array, one object per turn, in the order to store them (the caller sorts it by
-- session_id, keeping each session's turns in their order): {run_id, session_id, request_id,
-- route, flow_id, status, prompt_tokens, completion_tokens, started_ms, finished_ms, user_id,
-- messages}, messages as wf_append_turn's p_messages.
-- Returns one row per turn, in that order: (inserted, first_seq, owner) as wf_append_turn's.
--
-- Any run already stored, any turn of a session deleted at or after its start, or a run id
-- twice in the batch: every turn goes through wf_append_turn, one after the other, exactly as
-- before. A run or a delete committed by another transaction meanwhile (seen once the session
-- rows are locked): serialization_failure, and the caller's retry takes that path.
-- Whether a run of p_turns is stored already, or a turn's session was deleted at or after the
-- turn started (wf_append_turn refuses those): the batch then goes one turn at a time.
-- Evaluated by wf_append_turns before and again after it locks the sessions; each evaluation
-- sees what committed before it.
CREATE OR REPLACE FUNCTION wf_turns_stored_or_deleted(p_turns jsonb) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
  SELECT EXISTS (SELECT 1 FROM jsonb_to_recordset(p_turns) AS x(run_id text)
                 JOIN runs USING (run_id))
      OR EXISTS (SELECT 1 FROM jsonb_to_recordset(p_turns) AS x(session_id text, started_ms bigint)
                 JOIN session_deletions d USING (session_id)
                 WHERE x.started_ms > 0 AND d.deleted_ms >= x.started_ms)
$fn$;

CREATE OR REPLACE FUNCTION wf_append_turns(p_turns jsonb)
RETURNS TABLE (inserted boolean, first_seq bigint, owner text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_count    bigint;
  v_distinct bigint;
  v_stored   bigint;
  v_turn     record;
  v_one      record;
BEGIN
  SELECT count(*), count(DISTINCT x.run_id) INTO v_count, v_distinct
    FROM jsonb_to_recordset(p_turns) AS x(run_id text);
  IF v_count = 0 THEN
    RETURN;
  END IF;
  IF v_distinct <> v_count OR wf_turns_stored_or_deleted(p_turns) THEN
    FOR v_turn IN SELECT * FROM ROWS FROM (jsonb_to_recordset(p_turns) AS (
                 run_id text, session_id text, request_id text, route text, flow_id text,
                 status text, prompt_tokens bigint, completion_tokens bigint, started_ms bigint,
                 finished_ms bigint, user_id text, messages jsonb))
               WITH ORDINALITY AS x(run_id, session_id, request_id, route, flow_id, status,
                                    prompt_tokens, completion_tokens, started_ms, finished_ms,
                                    user_id, messages, ord)
             ORDER BY x.ord LOOP
      SELECT * INTO v_one
        FROM wf_append_turn(v_turn.run_id, v_turn.session_id, v_turn.request_id, v_turn.route,
                            v_turn.flow_id, v_turn.status, v_turn.prompt_tokens,
                            v_turn.completion_tokens, v_turn.started_ms, v_turn.finished_ms,
                            v_turn.messages, v_turn.user_id);
      inserted := v_one.inserted;
      first_seq := v_one.first_seq;
      owner := v_one.owner;
      RETURN NEXT;
    END LOOP;
    RETURN;
  END IF;

  -- Each session's row, created or locked, in session_id order (as every batch locks them, so
  -- two batches never deadlock), with its counters, times and last non-empty user id as
  -- wf_append_turn would leave them after these turns: a turn begins at its start or its
  -- earliest message (else now) and ends at its end or its latest message (else now). Anything
  -- that fails below rolls all of it back.
  INSERT INTO sessions AS s (session_id, user_id, created_at, updated_at, turn_count)
    SELECT t.session_id,
           COALESCE((array_agg(t.user_id ORDER BY t.ord DESC) FILTER (WHERE t.user_id <> ''))[1],
                    ''),
           min(t.v_first), max(t.v_last), count(*)
    FROM (SELECT x.session_id, x.user_id, x.ord, tt.v_first,
                 GREATEST(tt.v_first, tt.v_last) AS v_last
          FROM ROWS FROM (jsonb_to_recordset(p_turns) AS (session_id text, started_ms bigint,
                                                          finished_ms bigint, user_id text,
                                                          messages jsonb))
               WITH ORDINALITY AS x(session_id, started_ms, finished_ms, user_id, messages, ord),
          LATERAL (SELECT
            COALESCE(LEAST(timestamptz 'epoch' + min(m.created_ms) * interval '1 ms',
                           CASE WHEN x.started_ms > 0
                                THEN timestamptz 'epoch' + x.started_ms * interval '1 ms' END),
                     now()) AS v_first,
            COALESCE(GREATEST(timestamptz 'epoch' + max(m.created_ms) * interval '1 ms',
                              CASE WHEN x.finished_ms > 0
                                   THEN timestamptz 'epoch' + x.finished_ms * interval '1 ms' END),
                     now()) AS v_last
            FROM jsonb_to_recordset(x.messages) AS m(created_ms bigint)
            WHERE m.created_ms > 0) tt) t
    GROUP BY t.session_id
    ORDER BY t.session_id
    ON CONFLICT (session_id) DO UPDATE
      SET turn_count = s.turn_count + EXCLUDED.turn_count,
          created_at = LEAST(s.created_at, EXCLUDED.created_at),
          updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at),
          user_id = CASE WHEN EXCLUDED.user_id <> '' THEN EXCLUDED.user_id ELSE s.user_id END;
  -- What committed while this waited for those locks (this statement's snapshot sees it).
  IF wf_turns_stored_or_deleted(p_turns) THEN
    RAISE EXCEPTION 'a turn of this batch was stored or its session deleted meanwhile'
      USING ERRCODE = 'serialization_failure';
  END IF;

  INSERT INTO runs (run_id, session_id, request_id, route, flow_id, status, prompt_tokens,
                    completion_tokens, started_at, finished_at)
    SELECT x.run_id, x.session_id, x.request_id, x.route, NULLIF(x.flow_id, ''), x.status,
           x.prompt_tokens, x.completion_tokens,
           CASE WHEN x.started_ms > 0 THEN timestamptz 'epoch' + x.started_ms * interval '1 ms' END,
           CASE WHEN x.finished_ms > 0 THEN timestamptz 'epoch' + x.finished_ms * interval '1 ms' END
    FROM jsonb_to_recordset(p_turns) AS x(run_id text, session_id text, request_id text,
                                          route text, flow_id text, status text,
                                          prompt_tokens bigint, completion_tokens bigint,
                                          started_ms bigint, finished_ms bigint)
    ON CONFLICT (run_id) DO NOTHING;
  GET DIAGNOSTICS v_stored = ROW_COUNT;
  IF v_stored <> v_count THEN
    -- A run id stored meanwhile for a session this batch does not lock (another session's).
    RAISE EXCEPTION 'a run of this batch was stored meanwhile'
      USING ERRCODE = 'serialization_failure';
  END IF;

  -- Messages numbered on from each session's last seq, turn after turn in batch order (the
  -- session rows are locked: MAX(seq) sees every turn committed before).
  RETURN QUERY
  WITH turns AS (
    SELECT x.run_id, x.session_id, x.messages, x.ord,
           COALESCE(sum(jsonb_array_length(x.messages))
                      OVER (PARTITION BY x.session_id ORDER BY x.ord
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM ROWS FROM (jsonb_to_recordset(p_turns) AS (run_id text, session_id text,
                                                    messages jsonb))
         WITH ORDINALITY AS x(run_id, session_id, messages, ord)),
  bases AS (
    SELECT s.session_id,
           (SELECT COALESCE(max(m.seq) + 1, 0) FROM messages m
            WHERE m.session_id = s.session_id) AS base
    FROM (SELECT DISTINCT session_id FROM turns) s),
  numbered AS (
    SELECT u.run_id, u.session_id, u.messages, u.ord, b.base + u.before AS seq0
    FROM turns u JOIN bases b USING (session_id)),
  stored AS (
    INSERT INTO messages (session_id, run_id, seq, role, content, name, tool_call_id,
                          tool_calls, created_at)
      SELECT n.session_id, n.run_id, n.seq0 + m.ord - 1, m.role, m.content,
             NULLIF(m.name, ''), NULLIF(m.tool_call_id, ''), NULLIF(m.tool_calls, '')::jsonb,
             timestamptz 'epoch' + m.created_ms * interval '1 ms'
      FROM numbered n,
           ROWS FROM (jsonb_to_recordset(n.messages) AS (role text, content text, name text,
                                                         tool_call_id text, tool_calls text,
                                                         created_ms bigint))
           WITH ORDINALITY AS m(role, content, name, tool_call_id, tool_calls, created_ms, ord)
      ORDER BY n.ord, m.ord
      RETURNING 1)
  SELECT true, n.seq0::bigint, n.session_id FROM numbered n ORDER BY n.ord;

END
$fn$;
