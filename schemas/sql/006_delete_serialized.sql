-- A DELETE and a store of the same session could still miss each other. The delete's
-- transaction records the tombstone and deletes the session row; a store that had checked the
-- tombstones before that commit, and whose new session row the delete could not see yet
-- (uncommitted), committed afterwards: DELETE answered 404 "no session" and the next GET showed
-- the turn (a flow turn recorded 5 ms after its answer, deleted at once: 9 of 20 runs).
--
-- Now every store takes a shared advisory lock per session it writes (transaction-scoped,
-- session ids in one order), and SessionStore::DeleteSession takes the same lock exclusively
-- before anything else. A delete therefore waits for the stores of that session in progress and
-- then sees (and deletes) what they stored; a store that comes after the delete waits for it
-- and then sees its tombstone. Stores do not wait for one another on these locks.
--
-- The functions of 004 and 005 are kept under new names and wrapped; the lock is taken before
-- their first statement, so everything they read is read after it.

-- The lock's keys: a namespace (first key of the two-key form; the migrations' lock uses the
-- one-key form), 'WFSS' = 1464226643, and the session id's hash. Sessions whose ids hash alike
-- only share a lock.
CREATE OR REPLACE FUNCTION wf_session_lock_key(p_session_id text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $fn$ SELECT hashtext(p_session_id) $fn$;

CREATE OR REPLACE FUNCTION wf_lock_sessions_shared(p_session_ids text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  v_id text;
BEGIN
  FOR v_id IN SELECT DISTINCT s FROM unnest(p_session_ids) AS s ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock_shared(1464226643, wf_session_lock_key(v_id));
  END LOOP;
END
$fn$;

-- What a delete takes first (SessionStore::DeleteSession).
CREATE OR REPLACE FUNCTION wf_lock_session_exclusive(p_session_id text) RETURNS void
LANGUAGE sql AS $fn$ SELECT pg_advisory_xact_lock(1464226643, wf_session_lock_key(p_session_id)) $fn$;

ALTER FUNCTION wf_append_turn(text, text, text, text, text, text, bigint, bigint, bigint, bigint,
                              jsonb, text)
  RENAME TO wf_append_turn_unlocked;

CREATE FUNCTION wf_append_turn(
    p_run_id text, p_session_id text, p_request_id text, p_route text, p_flow_id text,
    p_status text, p_prompt_tokens bigint, p_completion_tokens bigint, p_started_ms bigint,
    p_finished_ms bigint, p_messages jsonb, p_user_id text,
    OUT inserted boolean, OUT first_seq bigint, OUT owner text)
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM wf_lock_sessions_shared(ARRAY[p_session_id]);
  SELECT u.inserted, u.first_seq, u.owner INTO inserted, first_seq, owner
    FROM wf_append_turn_unlocked(p_run_id, p_session_id, p_request_id, p_route, p_flow_id,
                                 p_status, p_prompt_tokens, p_completion_tokens, p_started_ms,
                                 p_finished_ms, p_messages, p_user_id) AS u;
END
$fn$;

ALTER FUNCTION wf_append_turns(jsonb) RENAME TO wf_append_turns_unlocked;

CREATE FUNCTION wf_append_turns(p_turns jsonb)
RETURNS TABLE (inserted boolean, first_seq bigint, owner text)
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM wf_lock_sessions_shared(
    ARRAY(SELECT x.session_id FROM jsonb_to_recordset(p_turns) AS x(session_id text)));
  RETURN QUERY SELECT * FROM wf_append_turns_unlocked(p_turns);
END
$fn$;
