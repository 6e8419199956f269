-- A session's network: 'none' (loopback only) or 'egress' (outbound through NAT).
ALTER TABLE sessions ADD COLUMN network TEXT NOT NULL DEFAULT 'none';
