-- Turns were stored in the order they reached PostgreSQL, which is not the order they were
-- answered when some of them come late: turns answered during a PostgreSQL outage were handed to
-- WF_HISTORY and stored after the next turn of their session went straight in, and two heavy
-- workers taking a WF_HISTORY backlog stored one session's flow turns in whatever order they
-- finished (a black-box test: 1014 stored before 1011, two seconds apart). GET and the agent's
-- history read messages in seq order, so the order was wrong for good.
--
-- Now a turn is stored in the order of its start (runs.started_at, the clock of the worker that
-- took the query): one that started before a stored turn of its session goes before it, and the
-- messages after it move up. wf_append_turn looks for that place only when the turn started
-- before the session's latest stored turn ended (sessions.updated_at); wf_append_turns, whose
-- set-based path only appends, takes its one-turn-at-a-time path for a batch holding such a
-- turn, or two turns of a session out of that order. The Redis hot copy, appended at its end,
-- is dropped by the append script when a turn's first seq is not the copy's length (the next
-- read reloads it from here).
--
-- 004's and 005's functions (renamed *_unlocked by 006, which wraps them in the session locks)
-- are replaced; what they do otherwise is unchanged. wf_append_turn's sessions row lock (the
-- upsert) serialises the move with every other store of the session.

-- Whether a turn of p_turns started before its session's latest stored turn ended, or before a
-- turn of its session ahead of it in p_turns: wf_append_turns then stores the batch one turn at
-- a time (wf_append_turn_unlocked finds each one's place).
CREATE OR REPLACE FUNCTION wf_turns_out_of_order(p_turns jsonb) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
  SELECT EXISTS (SELECT 1 FROM jsonb_to_recordset(p_turns) AS x(session_id text, started_ms bigint)
                 JOIN sessions s USING (session_id)
                 WHERE x.started_ms > 0 AND s.turn_count > 0
                   AND s.updated_at > timestamptz 'epoch' + x.started_ms * interval '1 ms')
      OR EXISTS (SELECT 1
                 FROM (SELECT x.started_ms,
                              max(x.started_ms) OVER (PARTITION BY x.session_id ORDER BY x.ord
                                                      ROWS BETWEEN UNBOUNDED PRECEDING
                                                      AND 1 PRECEDING) AS ahead
                       FROM ROWS FROM (jsonb_to_recordset(p_turns) AS (session_id text,
                                                                       started_ms bigint))
                            WITH ORDINALITY AS x(session_id, started_ms, ord)) y
                 WHERE y.started_ms > 0 AND y.ahead > y.started_ms)
$fn$;

CREATE OR REPLACE FUNCTION wf_append_turn_unlocked(
    p_run_id text, p_session_id text, p_request_id text, p_route text, p_flow_id text,
    p_status text, p_prompt_tokens bigint, p_completion_tokens bigint, p_started_ms bigint,
    p_finished_ms bigint, p_messages jsonb, p_user_id text,
    OUT inserted boolean, OUT first_seq bigint, OUT owner text)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_first   timestamptz;  -- when the turn began: its start or its earliest message (else now)
  v_last    timestamptz;  -- when it ended: its end or its latest message (else now), >= v_first
  v_started timestamptz;  -- p_started_ms, NULL when the turn does not carry it
  v_count   integer;      -- the session's stored turns before this one
  v_latest  timestamptz;  -- when the latest of them ended (sessions.updated_at)
  v_before  bigint;       -- seq of the first message of a turn that started after this one
  v_size    integer;      -- this turn's messages
BEGIN
  inserted := false;
  first_seq := 0;
  SELECT r.session_id INTO owner FROM runs r WHERE r.run_id = p_run_id;
  IF FOUND THEN
    RETURN;
  END IF;
  IF p_started_ms > 0 AND EXISTS (SELECT 1 FROM session_deletions d
                                  WHERE d.session_id = p_session_id
                                    AND d.deleted_ms >= p_started_ms) THEN
    first_seq := -1;
    owner := p_session_id;
    RETURN;
  END IF;

  SELECT timestamptz 'epoch' + MIN(t.created_ms) * interval '1 ms',
         timestamptz 'epoch' + MAX(t.created_ms) * interval '1 ms'
    INTO v_first, v_last
    FROM jsonb_to_recordset(p_messages) AS t(created_ms bigint) WHERE t.created_ms > 0;
  -- LEAST / GREATEST skip NULLs: a time the turn does not carry plays no part.
  v_first := COALESCE(LEAST(v_first, CASE WHEN p_started_ms > 0
                                      THEN timestamptz 'epoch' + p_started_ms * interval '1 ms' END),
                      now());
  v_last := GREATEST(v_first,
                     COALESCE(GREATEST(v_last, CASE WHEN p_finished_ms > 0
                                       THEN timestamptz 'epoch' + p_finished_ms * interval '1 ms' END),
                              now()));
  INSERT INTO sessions (session_id, user_id, created_at, updated_at)
    VALUES (p_session_id, p_user_id, v_first, v_last)
    ON CONFLICT (session_id) DO UPDATE SET updated_at = sessions.updated_at;
  -- A delete that committed while this call waited for the session row's lock: check again
  -- (this statement's snapshot sees it) and drop the empty row the upsert just created.
  IF p_started_ms > 0 AND EXISTS (SELECT 1 FROM session_deletions d
                                  WHERE d.session_id = p_session_id
                                    AND d.deleted_ms >= p_started_ms) THEN
    DELETE FROM sessions WHERE session_id = p_session_id AND turn_count = 0;
    first_seq := -1;
    owner := p_session_id;
    RETURN;
  END IF;
  INSERT INTO runs (run_id, session_id, request_id, route, flow_id, status, prompt_tokens,
                    completion_tokens, started_at, finished_at)
    VALUES (p_run_id, p_session_id, p_request_id, p_route, NULLIF(p_flow_id, ''), p_status,
            p_prompt_tokens, p_completion_tokens,
            CASE WHEN p_started_ms > 0 THEN timestamptz 'epoch' + p_started_ms * interval '1 ms' END,
            CASE WHEN p_finished_ms > 0 THEN timestamptz 'epoch' + p_finished_ms * interval '1 ms' END)
    ON CONFLICT (run_id) DO NOTHING;
  IF NOT FOUND THEN
    -- Stored meanwhile by another transaction (a redelivered turn stored twice at once).
    SELECT r.session_id INTO owner FROM runs r WHERE r.run_id = p_run_id;
    IF owner IS DISTINCT FROM p_session_id THEN
      -- Roll back the session row this call may have created. The caller retries (a
      -- serialization failure), and the retry finds the run above and reports the refusal.
      RAISE EXCEPTION 'run_id % is stored for another session', p_run_id
        USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN;
  END IF;

  inserted := true;
  owner := p_session_id;
  SELECT COALESCE(MAX(m.seq) + 1, 0) INTO first_seq FROM messages m
    WHERE m.session_id = p_session_id;
  -- A turn that started before a stored turn of its session (stored late: held through a
  -- PostgreSQL outage, or taken from WF_HISTORY by another worker) goes before the first turn
  -- that started after it: the later messages move up by this turn's size. Only looked for
  -- when the turn started before the latest stored turn ended (the session row is locked).
  v_started := CASE WHEN p_started_ms > 0
                    THEN timestamptz 'epoch' + p_started_ms * interval '1 ms' END;
  SELECT s.turn_count, s.updated_at INTO v_count, v_latest FROM sessions s
    WHERE s.session_id = p_session_id;
  IF v_started IS NOT NULL AND v_count > 0 AND v_started < v_latest THEN
    SELECT MIN(m.seq) INTO v_before FROM messages m JOIN runs r ON r.run_id = m.run_id
      WHERE m.session_id = p_session_id AND r.started_at > v_started;
    IF v_before IS NOT NULL THEN
      v_size := jsonb_array_length(p_messages);
      -- Two steps, so that no two rows share a seq in between (its index is unique).
      UPDATE messages SET seq = -seq - 1 - v_size
        WHERE session_id = p_session_id AND seq >= v_before;
      UPDATE messages SET seq = -seq - 1 WHERE session_id = p_session_id AND seq < 0;
      first_seq := v_before;
    END IF;
  END IF;
  INSERT INTO messages (session_id, run_id, seq, role, content, name, tool_call_id, tool_calls,
                        created_at)
    SELECT p_session_id, p_run_id, first_seq + t.ord - 1, t.role, t.content, NULLIF(t.name, ''),
           NULLIF(t.tool_call_id, ''), NULLIF(t.tool_calls, '')::jsonb,
           timestamptz 'epoch' + t.created_ms * interval '1 ms'
    FROM ROWS FROM (jsonb_to_recordset(p_messages) AS (role text, content text, name text,
                                                       tool_call_id text, tool_calls text,
                                                       created_ms bigint))
         WITH ORDINALITY AS t(role, content, name, tool_call_id, tool_calls, created_ms, ord);
  UPDATE sessions SET turn_count = turn_count + 1,
                      created_at = LEAST(created_at, v_first),
                      updated_at = GREATEST(updated_at, v_last),
                      user_id = CASE WHEN p_user_id <> '' THEN p_user_id ELSE user_id END
    WHERE session_id = p_session_id;
END
$fn$;

CREATE OR REPLACE FUNCTION wf_append_turns_unlocked(p_turns jsonb)
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
  IF v_distinct <> v_count OR wf_turns_stored_or_deleted(p_turns)
     OR wf_turns_out_of_order(p_turns) THEN
    FOR v_turn IN SELECT * FROM ROWS FROM (jsonb_to_recordset(p_turns) AS (
                 run_id text, session_id text, request_id text, route text, flow_id text,
                 status text, prompt_tokens bigint, completion_tokens bigint, started_ms bigint,
                 finished_ms bigint, user_id text, messages jsonb))
               WITH ORDINALITY AS x(run_id, session_id, request_id, route, flow_id, status,
                                    prompt_tokens, completion_tokens, started_ms, finished_ms,
                                    user_id, messages, ord)
             ORDER BY x.ord LOOP
      SELECT * INTO v_one
        FROM wf_append_turn_unlocked(v_turn.run_id, v_turn.session_id, v_turn.request_id,
                                     v_turn.route, v_turn.flow_id, v_turn.status,
                                     v_turn.prompt_tokens, v_turn.completion_tokens,
                                     v_turn.started_ms, v_turn.finished_ms, v_turn.messages,
                                     v_turn.user_id);
      inserted := v_one.inserted;
      first_seq := v_one.first_seq;
      owner := v_one.owner;
      RETURN NEXT;
    END LOOP;
    RETURN;
  END IF;

  -- The sessions that exist, locked in session_id order (as the upsert below locks them), then
  -- the order checked again against everything committed before: a store of one of them that
  -- committed since the check above makes this batch late, and only the one-at-a-time path
  -- puts it in its place (the caller's retry takes it).
  PERFORM 1 FROM sessions s
    WHERE s.session_id IN (SELECT x.session_id FROM jsonb_to_recordset(p_turns) AS x(session_id text))
    ORDER BY s.session_id FOR UPDATE;
  IF wf_turns_out_of_order(p_turns) THEN
    RAISE EXCEPTION 'a later turn of a session of this batch was stored meanwhile'
      USING ERRCODE = 'serialization_failure';
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
