CREATE TABLE operators (
    name TEXT PRIMARY KEY NOT NULL,
    pass_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    description TEXT,
    token_gen INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_login_at INTEGER
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    owner_type TEXT NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    busy INTEGER NOT NULL DEFAULT 0,
    instructions TEXT,
    setup TEXT,
    metadata TEXT NOT NULL,
    secret_names TEXT NOT NULL,
    parent_id TEXT,
    error TEXT,
    message_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX sessions_owner ON sessions (owner, created_at);
CREATE INDEX sessions_state ON sessions (state);

CREATE TABLE session_secrets (
    session_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    principal TEXT NOT NULL,
    principal_type TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    session_id TEXT,
    outcome INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_principal ON audit (principal, at);
CREATE INDEX audit_session ON audit (session_id, at);
