-- A DELETE of a session while one of its turns runs must not bring the session back when that
-- turn (cancelled by the delete, or a flow turn recorded late through WF_HISTORY) is stored
-- afterwards: DELETE /api/v1/session/{id} answered "deleted" and the next GET showed the turn.
-- SessionStore::DeleteSession now records a tombstone (the deleting worker's clock, the same
-- clock turns carry in started_unix_ms) in the same transaction as the delete, and wf_append_turn
-- refuses a turn that started at or before the session's last deletion: it returns
-- inserted = false, first_seq = -1, owner = p_session_id and stores nothing. Otherwise exactly
-- as in 003_session_times.sql. Tombstones older than 7 days (the WF_HISTORY retention) are
-- removed by later deletes.
CREATE TABLE IF NOT EXISTS session_deletions (
  session_id  text    PRIMARY KEY,
  deleted_ms  bigint  NOT NULL   -- Unix epoch ms of the last delete, deleting worker's clock
);

CREATE OR REPLACE FUNCTION wf_append_turn(
    p_run_id text, p_session_id text, p_request_id text, p_route text, p_flow_id text,
    p_status text, p_prompt_tokens bigint, p_completion_tokens bigint, p_started_ms bigint,
    p_finished_ms bigint, p_messages jsonb, p_user_id text,
    OUT inserted boolean, OUT first_seq bigint, OUT owner text)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_first timestamptz;  -- when the turn began: its start or its earliest message (else now)
  v_last  timestamptz;  -- when it ended: its end or its latest message (else now), >= v_first
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
