-- Stores one turn (a run and its messages) in one round trip; SessionStore::AppendTurn calls it
-- (in autocommit for one turn, inside a transaction for a batch). Idempotent by run_id.
--
-- Returns (inserted, first_seq, owner):
--   inserted = true:  the run and its messages were stored; first_seq is the seq of its first
--                     message (messages are numbered 0, 1, 2, ... within their session).
--   inserted = false: the run was stored before; owner is the session it belongs to, and
--                     nothing was written (not even the session row).
-- p_messages is a JSON array of {role, content, name, tool_call_id, tool_calls, created_ms}
-- in conversation order; '' stands for NULL in name, tool_call_id and tool_calls (a JSON text).
--
-- Appends to one session are serialised by the session row's lock (the upsert below). Each
-- statement of a PL/pgSQL function takes its own snapshot, so MAX(seq), read after the lock,
-- sees every turn committed before it: seq numbers stay gap-free and ordered.
CREATE OR REPLACE FUNCTION wf_append_turn(
    p_run_id text, p_session_id text, p_request_id text, p_route text, p_flow_id text,
    p_status text, p_prompt_tokens bigint, p_completion_tokens bigint, p_started_ms bigint,
    p_finished_ms bigint, p_messages jsonb, p_user_id text,
    OUT inserted boolean, OUT first_seq bigint, OUT owner text)
LANGUAGE plpgsql AS $fn$
BEGIN
  inserted := false;
  first_seq := 0;
  SELECT r.session_id INTO owner FROM runs r WHERE r.run_id = p_run_id;
  IF FOUND THEN
    RETURN;
  END IF;

  INSERT INTO sessions (session_id, user_id) VALUES (p_session_id, p_user_id)
    ON CONFLICT (session_id) DO UPDATE SET updated_at = sessions.updated_at;
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
  UPDATE sessions SET turn_count = turn_count + 1, updated_at = now(),
                      user_id = CASE WHEN p_user_id <> '' THEN p_user_id ELSE user_id END
    WHERE session_id = p_session_id;
END
$fn$;
