-- A session's network: 'none' (loopback only) or 'egress' (outbound through NAT).
ALTER TABLE sessions ADD COLUMN network VARCHAR(16) COLLATE utf8mb4_bin NOT NULL DEFAULT 'none';
