CREATE TABLE operators (
    name VARCHAR(64) PRIMARY KEY,
    pass_hash TEXT NOT NULL,
    role VARCHAR(16) NOT NULL,
    description TEXT,
    token_gen BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE sessions (
    id VARCHAR(64) PRIMARY KEY,
    owner VARCHAR(128) NOT NULL,
    owner_type VARCHAR(16) NOT NULL,
    name VARCHAR(255),
    state VARCHAR(16) NOT NULL,
    desired_state VARCHAR(16) NOT NULL,
    busy BIGINT NOT NULL DEFAULT 0,
    instructions TEXT,
    setup TEXT,
    metadata TEXT NOT NULL,
    secret_names TEXT NOT NULL,
    parent_id VARCHAR(64),
    error TEXT,
    message_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX sessions_owner ON sessions (owner, created_at);
CREATE INDEX sessions_state ON sessions (state);

CREATE TABLE session_secrets (
    session_id VARCHAR(64) NOT NULL,
    name VARCHAR(128) NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE messages (
    id VARCHAR(64) PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL,
    seq BIGINT NOT NULL,
    role VARCHAR(16) NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    principal VARCHAR(128) NOT NULL,
    principal_type VARCHAR(16),
    action VARCHAR(255) NOT NULL,
    target TEXT NOT NULL,
    session_id VARCHAR(64),
    outcome BIGINT NOT NULL,
    request_id VARCHAR(64) NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_principal ON audit (principal, at);
CREATE INDEX audit_session ON audit (session_id, at);
