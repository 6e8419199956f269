-- Identifiers compare byte-wise (utf8mb4_bin), as on the other databases; long text
-- columns keep a text collation so that drivers read them as text, not bytes.
CREATE TABLE operators (
    name VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY,
    pass_hash TEXT NOT NULL,
    role VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    description TEXT,
    token_gen BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE sessions (
    id VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY,
    owner VARCHAR(128) COLLATE utf8mb4_bin NOT NULL,
    owner_type VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    name VARCHAR(255) COLLATE utf8mb4_bin,
    state VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    desired_state VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    busy BIGINT NOT NULL DEFAULT 0,
    instructions LONGTEXT,
    setup LONGTEXT,
    metadata LONGTEXT NOT NULL,
    secret_names LONGTEXT NOT NULL,
    parent_id VARCHAR(64) COLLATE utf8mb4_bin,
    error TEXT,
    message_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    deleted_at BIGINT,
    INDEX sessions_owner (owner, created_at),
    INDEX sessions_state (state)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE session_secrets (
    session_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
    name VARCHAR(128) COLLATE utf8mb4_bin NOT NULL,
    sealed LONGTEXT NOT NULL,
    PRIMARY KEY (session_id, name)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE messages (
    id VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY,
    session_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
    seq BIGINT NOT NULL,
    role VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    content LONGTEXT NOT NULL,
    metadata LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE KEY messages_session_seq (session_id, seq)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE audit (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    at BIGINT NOT NULL,
    principal VARCHAR(128) COLLATE utf8mb4_bin NOT NULL,
    principal_type VARCHAR(16) COLLATE utf8mb4_bin,
    action VARCHAR(255) COLLATE utf8mb4_bin NOT NULL,
    target TEXT NOT NULL,
    session_id VARCHAR(64) COLLATE utf8mb4_bin,
    outcome BIGINT NOT NULL,
    request_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
    INDEX audit_at (at),
    INDEX audit_principal (principal, at),
    INDEX audit_session (session_id, at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
