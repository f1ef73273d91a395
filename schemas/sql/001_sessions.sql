-- Durable session storage of the agent path (Redis holds the hot copy; see
-- common/session/session_store.h). Applied once, in lexical file order, by ApplyMigrations
-- (common/pg/migrations.h), which records it in schema_migrations. Never edit an applied file:
-- add 002_... instead.

-- One row per conversation.
CREATE TABLE IF NOT EXISTS sessions (
  session_id  text        PRIMARY KEY,           -- client-chosen, 1-128 chars of [A-Za-z0-9._:-]
  user_id     text        NOT NULL DEFAULT '',   -- last non-empty user id seen, '' if none
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(), -- last stored turn
  turn_count  integer     NOT NULL DEFAULT 0     -- rows in runs for this session
);

-- One row per stored turn (flow or agent). run_id makes storing a turn idempotent.
CREATE TABLE IF NOT EXISTS runs (
  run_id            text        PRIMARY KEY,
  session_id        text        NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
  request_id        text        NOT NULL DEFAULT '',
  route             text        NOT NULL DEFAULT '',  -- 'flow' or 'agent'
  flow_id           text,                             -- route 'flow' only
  status            text        NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
  prompt_tokens     bigint      NOT NULL DEFAULT 0,
  completion_tokens bigint      NOT NULL DEFAULT 0,
  started_at        timestamptz,
  finished_at       timestamptz,
  error             text                              -- why it failed, when status = 'error'
);
CREATE INDEX IF NOT EXISTS runs_session_idx ON runs (session_id);

-- The conversation, one row per chat message, ordered by seq within the session.
CREATE TABLE IF NOT EXISTS messages (
  id            bigserial   PRIMARY KEY,
  session_id    text        NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
  run_id        text        NOT NULL,              -- the turn that added it
  seq           integer     NOT NULL,              -- 0, 1, 2, ... within the session
  role          text        NOT NULL,              -- user | assistant | tool | system
  content       text        NOT NULL DEFAULT '',
  name          text,                              -- role 'tool': the tool's name
  tool_call_id  text,                              -- role 'tool': the call it answers
  tool_calls    jsonb,                             -- role 'assistant': [{id,name,arguments_json,kind}]
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_session_seq_idx ON messages (session_id, seq);
