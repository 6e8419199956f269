-- Per-session computer limits (JSON: memory_mb, pids, millicores; absent = the server's).
ALTER TABLE sessions ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
