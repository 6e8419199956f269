-- Events: every step of the agent and every lifecycle change, per session in `seq` order.
ALTER TABLE sessions ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
-- The `seq` of the last user message the agent has answered (exactly once).
ALTER TABLE sessions ADD COLUMN answered_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE events (
    session_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
    seq BIGINT NOT NULL,
    type VARCHAR(32) COLLATE utf8mb4_bin NOT NULL,
    content LONGTEXT NOT NULL,
    metadata LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
-- The agent's durable progress on one user message: the model's turns (stored
-- before any tool runs) and each tool's result.
CREATE TABLE agent_steps (
    session_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
    message_seq BIGINT NOT NULL,
    step BIGINT NOT NULL,
    kind VARCHAR(32) COLLATE utf8mb4_bin NOT NULL,
    body LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, message_seq, step)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
-- Messages from before the agent existed are not its to answer.
UPDATE sessions SET answered_seq = message_seq;
