-- Per-session computer limits (JSON: memory_mb, pids, millicores; absent = the server's).
ALTER TABLE sessions ADD COLUMN limits VARCHAR(255) COLLATE utf8mb4_bin NOT NULL DEFAULT '{}';
