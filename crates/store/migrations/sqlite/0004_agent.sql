-- Events: every step of the agent and every lifecycle change, per session in `seq` order.
ALTER TABLE sessions ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
-- The `seq` of the last user message the agent has answered (exactly once).
ALTER TABLE sessions ADD COLUMN answered_seq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE events (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
-- The agent's durable progress on one user message: the model's turns (stored
-- before any tool runs) and each tool's result.
CREATE TABLE agent_steps (
    session_id TEXT NOT NULL,
    message_seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, message_seq, step)
);
-- Messages from before the agent existed are not its to answer.
UPDATE sessions SET answered_seq = message_seq;
